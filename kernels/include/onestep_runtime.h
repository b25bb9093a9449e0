/* onestep_runtime.h: the small slice of the CUDA runtime that the Java CUDA backend needs, exported by
 * libonestep_kernels.so next to the kernels (onestep_kernels.h). Java binds this library only, so memory,
 * streams and graphs go through the same cudart as the kernels (the library links cudart statically).
 *
 * Two builds share this API:
 *  - the CUDA build (nvcc): thin wrappers of cudaMalloc, cudaMemcpy, cudaStreamCreate, stream capture,
 *    cudaGraphInstantiate / cudaGraphLaunch;
 *  - the emulated build (host compiler, kernels/emu): device memory is host memory, every launch runs at
 *    once on the calling thread, and a stream under capture RECORDS each launch, memset and device copy in
 *    order instead of running it; launching the graph replays that list. See kernels/README.md.
 *
 * Status codes and onestep_last_error_message() work as in onestep_kernels.h.
 */
#ifndef ONESTEP_RUNTIME_H
#define ONESTEP_RUNTIME_H

#include <stddef.h>
#include "onestep_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct onestep_graph_st* onestep_graph;
typedef struct onestep_timer_st* onestep_timer;

/* "cuda" or "emulated": which build of the library was loaded. */
const char* onestep_runtime_kind(void);

/* Number of usable devices. Without a driver the CUDA build returns ONESTEP_ERROR_CUDA (error 35, driver
 * insufficient) and the message says so; the emulated build reports one device. */
onestep_status onestep_device_count(int* count);

/* Device memory. onestep_malloc aligns to at least 256 bytes. */
onestep_status onestep_malloc(void** ptr, size_t bytes);
onestep_status onestep_free(void* ptr);

/* Copies between host (pageable) and device memory; these two wait for `stream` and are never captured. */
onestep_status onestep_memcpy_htod(void* dst, const void* src, size_t bytes, cudaStream_t stream);
onestep_status onestep_memcpy_dtoh(void* dst, const void* src, size_t bytes, cudaStream_t stream);
/* The same two queued on `stream` without the wait, for a graph replay's inputs and outputs (one wait after all).
 * With pageable host memory the copy from the host has taken the data when this returns, and the copy to the
 * host returns only once it is done (CUDA's rules for pageable memory); never captured either. */
onestep_status onestep_memcpy_htod_async(void* dst, const void* src, size_t bytes, cudaStream_t stream);
onestep_status onestep_memcpy_dtoh_async(void* dst, const void* src, size_t bytes, cudaStream_t stream);
/* Device-to-device copy and memset: asynchronous on `stream`, and captured into a graph like a kernel. The copy's
 * ranges must not overlap (ONESTEP_ERROR_INVALID_ARGUMENT; dst == src is a no-op). */
onestep_status onestep_memcpy_dtod(void* dst, const void* src, size_t bytes, cudaStream_t stream);
onestep_status onestep_memset(void* dst, int value, size_t bytes, cudaStream_t stream);

/* A non-blocking stream of its own (the legacy default stream cannot be captured). */
onestep_status onestep_stream_create(cudaStream_t* stream);
onestep_status onestep_stream_destroy(cudaStream_t stream);

/* Stream capture: between begin and end, work queued on `stream` is recorded, not run. end_capture
 * instantiates the recorded work as *graph; graph_launch replays it on `stream`. */
onestep_status onestep_graph_begin_capture(cudaStream_t stream);
onestep_status onestep_graph_end_capture(cudaStream_t stream, onestep_graph* graph);
onestep_status onestep_graph_launch(onestep_graph graph, cudaStream_t stream);
onestep_status onestep_graph_destroy(onestep_graph graph);
/* The number of nodes (kernels, copies, memsets) the graph holds. */
onestep_status onestep_graph_node_count(onestep_graph graph, long long* count);

/* Device time between two points of a stream's work: a pair of CUDA events (the emulated build, where work runs at
 * once on the calling thread, reads the host's steady clock instead). The backend's timed choices between its own
 * kernels and a library's (CudaDevice: our implicit-GEMM convolution against cuDNN's best algorithm) use it; it is
 * not for a capturing stream. stop waits for the stream and writes the milliseconds since start. */
onestep_status onestep_timer_create(onestep_timer* timer);
onestep_status onestep_timer_start(onestep_timer timer, cudaStream_t stream);
onestep_status onestep_timer_stop(onestep_timer timer, cudaStream_t stream, float* ms);
onestep_status onestep_timer_destroy(onestep_timer timer);

/* Programmatic dependent launch (sm_90+, CUDA programming guide "Programmatic Dependent Launch and
 * Synchronization"). While on, the library's kernels are launched with the programmatic-serialization attribute:
 * each may start while the kernel ahead of it on the stream is still running (its blocks wait at their first
 * statement, griddepcontrol.wait, until that kernel has finished and its writes are visible), so a launch's latency
 * hides behind its predecessor's tail, in captured graphs too. Off by default. Turning it on for a device below
 * compute capability 9.0 returns ONESTEP_ERROR_UNSUPPORTED and leaves it off. The emulated build accepts it; there
 * every kernel the library launches is checked to wait first whether it is on or not. */
onestep_status onestep_set_programmatic_launch(int enabled);
int onestep_programmatic_launch(void);

/* Weight prefetch: the kernels that read a layer's weights at small batches (the implicit-GEMM convolution, the
 * one-launch resnet blocks, the attention with to_out.0) ask L2 for them (prefetch.global.L2) before
 * griddepcontrol.wait, so that with programmatic dependent launch they come from HBM under the preceding kernel's
 * tail. A hint: results are the same bits either way. Read at each launch (a captured graph keeps the value it was
 * captured with). On by default; off to time what it gives. */
onestep_status onestep_set_weight_prefetch(int enabled);
int onestep_weight_prefetch(void);

#ifdef __cplusplus
}
#endif

#endif /* ONESTEP_RUNTIME_H */
