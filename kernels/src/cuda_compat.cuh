// cuda_compat.cuh: the one place where the kernel sources differ between nvcc and the host emulation.
// Kernels include this instead of <cuda_runtime.h>, declare dynamic shared memory with
// ONESTEP_DYNAMIC_SHARED and launch through onestep::launch_dependent (the library's kernels, which begin with
// await_predecessors()) or onestep::launch (the dev files' and tests' own); no <<<>>> in the sources, so g++ parses them.
#pragma once

#include <atomic>

#ifdef ONESTEP_EMULATION
#include "cuda_emu.h"

#include <functional>
#include <map>
#include <mutex>
#include <vector>

namespace emu {
// Stream capture, emulated: while a stream is under capture (onestep_graph_begin_capture), every launch,
// device copy and memset queued on it is appended to its list instead of running; the graph made from the
// list replays it in order. The legacy stream (NULL) is never under capture, as on the GPU.
struct CaptureList {
    std::vector<std::function<cudaError_t()>> ops;
};
inline std::mutex& capture_mutex() {
    static std::mutex m;
    return m;
}
inline std::map<cudaStream_t, CaptureList*>& captures() {
    static std::map<cudaStream_t, CaptureList*> m;
    return m;
}
inline CaptureList* capture_of(cudaStream_t stream) {
    if (!stream) return nullptr;
    std::lock_guard<std::mutex> lock(capture_mutex());
    auto it = captures().find(stream);
    return it == captures().end() ? nullptr : it->second;
}
}  // namespace emu
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
    if (emu::CaptureList* capture = emu::capture_of(stream)) {
        capture->ops.push_back([=]() { return emu::launch(kernel, grid, block, shared_bytes, static_cast<KArgs>(args)...); });
        return cudaSuccess;
    }
    return emu::launch(kernel, grid, block, shared_bytes, static_cast<KArgs>(args)...);
#else
    kernel<<<grid, block, shared_bytes, stream>>>(static_cast<KArgs>(args)...);
    return cudaGetLastError();
#endif
}

// Programmatic dependent launch (CUDA programming guide, "Programmatic Dependent Launch and Synchronization";
// sm_90+). With it on, launch_dependent lets a kernel start while the kernel before it on the stream is still
// running, so its launch latency and block scheduling overlap that kernel's tail (in a captured graph too, as a
// programmatic edge). Every kernel the library launches that way calls await_predecessors() first: the wait for
// the preceding grids' completion and memory, then the trigger that lets the next kernel start early in turn.
// Off by default; onestep_set_programmatic_launch (onestep_runtime.h) turns it on.
inline std::atomic<bool>& programmatic_launch_flag() {
    static std::atomic<bool> on{false};
    return on;
}

__device__ __forceinline__ void await_predecessors() {
#ifdef ONESTEP_EMULATION
    emu::await_predecessors();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// The library's launch: as launch, or with the programmatic-serialization attribute while
// programmatic_launch_flag() is on. The kernel must begin with await_predecessors() (the emulation checks it).
template <typename... KArgs, typename... Args>
inline cudaError_t launch_dependent(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t shared_bytes,
                                    cudaStream_t stream, Args... args) {
#ifdef ONESTEP_EMULATION
    if (emu::CaptureList* capture = emu::capture_of(stream)) {
        capture->ops.push_back(
            [=]() { return emu::launch_as(true, kernel, grid, block, shared_bytes, static_cast<KArgs>(args)...); });
        return cudaSuccess;
    }
    return emu::launch_as(true, kernel, grid, block, shared_bytes, static_cast<KArgs>(args)...);
#else
    if (!programmatic_launch_flag().load(std::memory_order_relaxed))
        return launch(kernel, grid, block, shared_bytes, stream, args...);
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shared_bytes;
    config.stream = stream;
    config.attrs = attribute;
    config.numAttrs = 1;
    return cudaLaunchKernelEx(&config, kernel, static_cast<KArgs>(args)...);
#endif
}

inline unsigned ceil_div(long long a, long long b) { return unsigned((a + b - 1) / b); }

}  // namespace onestep
