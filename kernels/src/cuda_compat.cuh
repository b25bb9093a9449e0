// cuda_compat.cuh: the one place where the kernel sources differ between nvcc and the host emulation.
// Kernels include this instead of <cuda_runtime.h>, declare dynamic shared memory with
// ONESTEP_DYNAMIC_SHARED and launch through onestep::launch (no <<<>>> in the sources, so g++ parses them).
#pragma once

#ifdef ONESTEP_EMULATION
#include "cuda_emu.h"
#else
#include <cuda_runtime.h>
#define ONESTEP_DYNAMIC_SHARED(T, name)                                  \
    extern __shared__ __align__(16) unsigned char onestep_dynamic_smem_[]; \
    T* name = reinterpret_cast<T*>(onestep_dynamic_smem_)
#endif

namespace onestep {

// Launches kernel<<<grid, block, shared_bytes, stream>>>(args...) and returns the launch error.
template <typename... KArgs, typename... Args>
inline cudaError_t launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                          Args... args) {
#ifdef ONESTEP_EMULATION
    (void)stream;
    return emu::launch(kernel, grid, block, shared_bytes, static_cast<KArgs>(args)...);
#else
    kernel<<<grid, block, shared_bytes, stream>>>(static_cast<KArgs>(args)...);
    return cudaGetLastError();
#endif
}

inline unsigned ceil_div(long long a, long long b) { return unsigned((a + b - 1) / b); }

}  // namespace onestep
