// status.cu: the per-thread last-error message behind onestep_last_error_message().
#include "status.cuh"

#include <cstdarg>
#include <cstdio>

namespace {
thread_local char g_message[512] = "";
}

namespace onestep {

onestep_status fail(onestep_status code, const char* function, const char* shapes, const char* fmt, ...) {
    int n = std::snprintf(g_message, sizeof g_message, "%s(%s): ", function, shapes);
    if (n < 0 || n >= (int)sizeof g_message) return code;
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(g_message + n, sizeof g_message - n, fmt, ap);
    va_end(ap);
    return code;
}

onestep_status require_sm90(const char* function, const char* shapes, const char* feature) {
#ifdef ONESTEP_EMULATION
    (void)function, (void)shapes, (void)feature;
    return ONESTEP_OK;
#else
    int device = 0, major = 0;
    onestep_status s = check_launch(cudaGetDevice(&device), function, shapes);
    if (s == ONESTEP_OK)
        s = check_launch(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), function, shapes);
    if (s != ONESTEP_OK) return s;
    if (major < 9)
        return fail(ONESTEP_ERROR_UNSUPPORTED, function, shapes,
                    "%s needs compute capability 9.0 or newer; this device is %d.x", feature, major);
    return ONESTEP_OK;
#endif
}

onestep_status require_shared(const char* function, const char* shapes, size_t bytes, const char* what) {
    int device = 0, limit = 0;
    onestep_status s = check_launch(cudaGetDevice(&device), function, shapes);
    if (s == ONESTEP_OK)
        s = check_launch(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), function,
                         shapes);
    if (s != ONESTEP_OK) return s;
    if (bytes > size_t(limit))
        return fail(ONESTEP_ERROR_UNSUPPORTED, function, shapes,
                    "%s needs %zu bytes of shared memory; this device allows %d a block", what, bytes, limit);
    return ONESTEP_OK;
}

}  // namespace onestep

extern "C" const char* onestep_last_error_message(void) { return g_message; }

extern "C" onestep_status onestep_synchronize(cudaStream_t stream) {
    // A wait on a stream under capture is an error in CUDA that also invalidates the capture; refused here with a
    // message that says so, in both builds, so the emulated device fails where the GPU would.
#ifdef ONESTEP_EMULATION
    const bool capturing = emu::capture_of(stream) != nullptr;
#else
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    const bool capturing = stream && cudaStreamIsCapturing(stream, &st) == cudaSuccess &&
                           st != cudaStreamCaptureStatusNone;
#endif
    if (capturing)
        return onestep::fail(ONESTEP_ERROR_UNSUPPORTED, "onestep_synchronize", "",
                             "the stream is under capture (a wait there would invalidate the capture)");
    return onestep::check_launch(cudaStreamSynchronize(stream), "onestep_synchronize", "");
}
