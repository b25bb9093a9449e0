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
#include <thread>
#include <vector>

namespace emu {
// Stream capture, emulated: while a stream is under capture (onestep_graph_begin_capture), every launch,
// device copy and memset queued on it is appended to its list instead of running; the graph made from the
// list replays it in order. The legacy stream (NULL) is never under capture, as on the GPU.
// As cudaStreamCaptureModeThreadLocal (the mode the CUDA build captures in), the thread that began a capture may not
// allocate or free device memory until it ends: CUDA refuses such a call with cudaErrorStreamCaptureUnsupported and
// invalidates the capture, so end_capture fails (a route that allocates per run cannot be captured on a GPU, and the
// emulation must not let it).
struct CaptureList {
    std::vector<std::function<cudaError_t()>> ops;
    std::thread::id owner = std::this_thread::get_id();
    bool invalidated = false;
};
inline std::mutex& capture_mutex() {
    static std::mutex m;
    return m;
}
inline std::map<cudaStream_t, CaptureList*>& captures() {
    static std::map<cudaStream_t, CaptureList*> m;
    return m;
}
// Whether the calling thread has a capture under way; if so, each such capture is invalidated (an unsafe call).
inline bool invalidate_own_captures() {
    std::lock_guard<std::mutex> lock(capture_mutex());
    bool any = false;
    for (auto& [stream, list] : captures())
        if (list->owner == std::this_thread::get_id()) list->invalidated = any = true;
    return any;
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

#ifdef ONESTEP_EMULATION
// An emulated launch's status as a <<<>>> launch followed by cudaGetLastError gives it: the thread's last error, which
// a failed call before the launch may have left, comes back with it (check_launch takes such errors, so the tests
// catch a path that forgets to).
inline cudaError_t with_last_error(cudaError_t launched) {
    const cudaError_t last = cudaGetLastError();
    return launched != cudaSuccess ? launched : last;
}
#endif

// Launches kernel<<<grid, block, shared_bytes, stream>>>(args...) and returns the launch error.
template <typename... KArgs, typename... Args>
inline cudaError_t launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                          Args... args) {
#ifdef ONESTEP_EMULATION
    if (emu::CaptureList* capture = emu::capture_of(stream)) {
        capture->ops.push_back([=]() { return emu::launch(kernel, grid, block, shared_bytes, static_cast<KArgs>(args)...); });
        return cudaSuccess;
    }
    return with_last_error(emu::launch(kernel, grid, block, shared_bytes, static_cast<KArgs>(args)...));
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

// Whether the library's weight-reading kernels ask L2 for their weights before await_predecessors() (prefetch_l2
// below); read at launch and passed as a kernel argument, so a captured graph keeps the value it was captured with.
// On by default; onestep_set_weight_prefetch (onestep_runtime.h) turns it off, to time what it gives.
inline std::atomic<bool>& weight_prefetch_flag() {
    static std::atomic<bool> on{true};
    return on;
}
inline int weight_prefetch() { return weight_prefetch_flag().load(std::memory_order_relaxed) ? 1 : 0; }

__device__ __forceinline__ void await_predecessors() {
#ifdef ONESTEP_EMULATION
    emu::await_predecessors();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// A vector load or store of `bytes` at p (dtype.cuh's load4/store4, tensor_core.cuh's load_as/store_as): the
// emulation stops on a misaligned address, as a GPU faults (emu::require_aligned); nothing under nvcc.
__device__ __forceinline__ void require_aligned(const void* p, size_t bytes, const char* what) {
#ifdef ONESTEP_EMULATION
    emu::require_aligned(p, bytes, what);
#else
    (void)p, (void)bytes, (void)what;
#endif
}

// Asks L2 for part `part` of `parts` of [p, p + bytes), one prefetch.global.L2 a 128-byte line, strided over the
// block's threads. For the weights a kernel will read, issued before await_predecessors(): weights are no
// predecessor's output, and a prefetch is only a hint that writes nothing (L2 is the point of coherence, so a line
// fetched early still sees a later write), so it is safe before the wait whatever runs before. With programmatic
// launch the kernel starts while its predecessor still runs, and its weights come from HBM under that kernel's tail
// instead of after it. The CIFAR-size U-Net's fp16 weights (71 MB) exceed the H200's 50 MB of L2, so a graph replay
// finds most of them in HBM: at batch 1 each convolution's first loads wait ~1 us for them. The emulation checks
// only that it runs inside a kernel.
__device__ __forceinline__ void prefetch_l2(const void* p, size_t bytes, unsigned part, unsigned parts) {
#ifdef ONESTEP_EMULATION
    emu::prefetch_l2(p, bytes, part, parts);
#elif defined(__CUDA_ARCH__)
    const char* c = static_cast<const char*>(p);
    const size_t lines = (bytes + 127) / 128;  // line i holds c + 128 i: the last one holds c + bytes - 1
    for (size_t i = size_t(part) * blockDim.x + threadIdx.x; i < lines; i += size_t(parts) * blockDim.x)
        asm volatile("prefetch.global.L2 [%0];\n" ::"l"(c + i * 128));
#endif
}

#ifndef ONESTEP_EMULATION
// cudaLaunchKernelEx with the first n of these attributes.
template <typename... KArgs, typename... Args>
inline cudaError_t launch_ex(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                             cudaLaunchAttribute* attributes, unsigned n, Args... args) {
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shared_bytes;
    config.stream = stream;
    config.attrs = attributes;
    config.numAttrs = n;
    return cudaLaunchKernelEx(&config, kernel, static_cast<KArgs>(args)...);
}
// Sets attributes[i] to programmatic stream serialization (PDL); returns the count with it, i + 1.
inline unsigned with_programmatic(cudaLaunchAttribute* attributes, unsigned i) {
    attributes[i].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[i].val.programmaticStreamSerializationAllowed = 1;
    return i + 1;
}
#endif

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
    return with_last_error(emu::launch_as(true, kernel, grid, block, shared_bytes, static_cast<KArgs>(args)...));
#else
    if (!programmatic_launch_flag().load(std::memory_order_relaxed))
        return launch(kernel, grid, block, shared_bytes, stream, args...);
    cudaLaunchAttribute attribute[1];
    return launch_ex(kernel, grid, block, shared_bytes, stream, attribute, with_programmatic(attribute, 0), args...);
#endif
}

// ---- thread block clusters (sm_90; CUDA programming guide, "Thread Block Clusters", "Distributed Shared Memory") ----
// launch_dependent with clusters of cluster_x blocks along x (grid.x a multiple of it, at most 8): the blocks of a
// cluster are scheduled together on one GPC, can wait for each other (cluster_sync) and read each other's shared
// memory (cluster_map). The kernel must begin with await_predecessors(), and must not end while a peer may still
// read its shared memory (a cluster_sync after the last remote read). Below sm_90 the launch fails.
template <typename... KArgs, typename... Args>
inline cudaError_t launch_cluster(void (*kernel)(KArgs...), dim3 grid, dim3 block, unsigned cluster_x,
                                  size_t shared_bytes, cudaStream_t stream, Args... args) {
#ifdef ONESTEP_EMULATION
    if (emu::CaptureList* capture = emu::capture_of(stream)) {
        capture->ops.push_back([=]() {
            return emu::launch_cluster_as(true, cluster_x, kernel, grid, block, shared_bytes, static_cast<KArgs>(args)...);
        });
        return cudaSuccess;
    }
    return emu::launch_cluster_as(true, cluster_x, kernel, grid, block, shared_bytes, static_cast<KArgs>(args)...);
#else
    cudaLaunchAttribute attribute[2];
    attribute[0].id = cudaLaunchAttributeClusterDimension;
    attribute[0].val.clusterDim.x = cluster_x;
    attribute[0].val.clusterDim.y = 1;
    attribute[0].val.clusterDim.z = 1;
    const unsigned n = programmatic_launch_flag().load(std::memory_order_relaxed) ? with_programmatic(attribute, 1) : 1;
    return launch_ex(kernel, grid, block, shared_bytes, stream, attribute, n, args...);
#endif
}

// %cluster_ctarank: this block's rank in its cluster (0 .. cluster size - 1).
__device__ __forceinline__ unsigned cluster_rank() {
#ifdef ONESTEP_EMULATION
    return emu::cluster_rank();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
#else
    return 0;  // never launched below sm_90 (launch_cluster fails there)
#endif
}

// Every thread of every block of the cluster arrives, then waits for all (release/acquire: shared-memory writes
// before it are visible to the cluster's reads after it).
__device__ __forceinline__ void cluster_sync() {
#ifdef ONESTEP_EMULATION
    emu::cluster_sync();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}

// The generic address, in block `rank`'s shared memory, of what p (this block's dynamic shared memory) addresses
// here (mapa): loads through it read the peer's shared memory. The emulation maps dynamic shared memory only.
template <typename T>
__device__ __forceinline__ const T* cluster_map(const T* p, unsigned rank) {
#ifdef ONESTEP_EMULATION
    return static_cast<const T*>(emu::cluster_map(p, rank));
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    unsigned long long out;
    asm volatile("mapa.u64 %0, %1, %2;\n" : "=l"(out) : "l"(p), "r"(rank));
    return reinterpret_cast<const T*>(out);
#else
    return p;
#endif
}

inline unsigned ceil_div(long long a, long long b) { return unsigned((a + b - 1) / b); }

}  // namespace onestep
