// status.cuh: error reporting shared by the API functions. Each function checks its arguments first
// (so a bad shape is reported by name, not as an illegal address later) and turns a launch error into
// ONESTEP_ERROR_CUDA with the CUDA error's name in the message.
#pragma once
#include "onestep_kernels.h"
#include "cuda_compat.cuh"

#include <cstdio>

// Declares `char shapes[]` holding the printf-formatted arguments of an API call, for its error messages.
#define ONESTEP_SHAPES(...)                \
    char shapes[160];                      \
    std::snprintf(shapes, sizeof shapes, __VA_ARGS__)

namespace onestep {

// Records "<function>(<shapes>): <reason>" as this thread's last error and returns `code`.
onestep_status fail(onestep_status code, const char* function, const char* shapes, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));

// A failed runtime call (cudaFuncSetAttribute, cudaLaunchKernelEx, ...) also leaves its error as the thread's last
// CUDA error, which the next launch's cudaGetLastError would report against a kernel that did nothing wrong; so it is
// taken here, once this call's failure has been named. (A sticky error, a fault on the device, stays and is named by
// every later call, as it should be.)
inline onestep_status check_launch(cudaError_t e, const char* function, const char* shapes) {
    if (e == cudaSuccess) return ONESTEP_OK;
    (void)cudaGetLastError();
    return fail(ONESTEP_ERROR_CUDA, function, shapes, "%s: %s", cudaGetErrorName(e), cudaGetErrorString(e));
}

// ONESTEP_OK where the current device has compute capability 9.0 or newer (and always in the emulation); else the
// failure "<function>(<shapes>): <feature> needs compute capability 9.0 or newer; this device is X.x", or the CUDA
// error of asking. For the sm_90 features: programmatic dependent launch, thread block clusters.
onestep_status require_sm90(const char* function, const char* shapes, const char* feature);

// ONESTEP_OK where the current device lets one block opt in to `bytes` of dynamic shared memory (sm_90: 227 KiB,
// sm_80: 163, sm_86/89: 99; the emulation: 227 or ONESTEP_EMU_MAX_SHARED_KB); else the failure "<function>(<shapes>):
// <what> needs N bytes of shared memory; this device allows M". A kernel sized past the smaller cards is refused by
// name there instead of failing in cudaFuncSetAttribute.
onestep_status require_shared(const char* function, const char* shapes, size_t bytes, const char* what);

}  // namespace onestep
