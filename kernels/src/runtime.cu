// runtime.cu: onestep_runtime.h, the memory/stream/graph slice of the CUDA runtime that Java uses.
// Under nvcc these wrap cudart (the same static cudart as the kernels). Under ONESTEP_EMULATION device
// memory is host memory and a captured stream records its work as a list of closures (cuda_compat.cuh).
#include "onestep_runtime.h"
#include "cuda_compat.cuh"
#include "status.cuh"

#include <chrono>
#include <cstdio>
#include <cstring>

namespace {
thread_local char g_shapes[96];
const char* bytes_shape(size_t bytes) {
    std::snprintf(g_shapes, sizeof g_shapes, "bytes=%zu", bytes);
    return g_shapes;
}
}  // namespace

#ifdef ONESTEP_EMULATION
struct onestep_graph_st {
    std::vector<std::function<cudaError_t()>> ops;
};
#else
struct onestep_graph_st {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
};
#endif

using onestep::check_launch;
using onestep::fail;
using onestep::require_sm90;

extern "C" const char* onestep_runtime_kind(void) {
#ifdef ONESTEP_EMULATION
    return "emulated";
#else
    return "cuda";
#endif
}

extern "C" onestep_status onestep_device_count(int* count) {
    if (!count) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_device_count", "", "count is NULL");
#ifdef ONESTEP_EMULATION
    *count = 1;
    return ONESTEP_OK;
#else
    *count = 0;
    return check_launch(cudaGetDeviceCount(count), "onestep_device_count", "");
#endif
}

extern "C" onestep_status onestep_malloc(void** ptr, size_t bytes) {
    if (!ptr) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_malloc", bytes_shape(bytes), "ptr is NULL");
    *ptr = nullptr;
#ifdef ONESTEP_EMULATION
    if (emu::invalidate_own_captures())
        return fail(ONESTEP_ERROR_CUDA, "onestep_malloc", bytes_shape(bytes),
                    "cudaErrorStreamCaptureUnsupported: this thread is capturing a stream (allocate before the capture; "
                    "the capture is now invalidated)");
#endif
    return check_launch(cudaMalloc(ptr, bytes), "onestep_malloc", bytes_shape(bytes));
}

extern "C" onestep_status onestep_free(void* ptr) {
#ifdef ONESTEP_EMULATION
    if (ptr && emu::invalidate_own_captures())
        return fail(ONESTEP_ERROR_CUDA, "onestep_free", "",
                    "cudaErrorStreamCaptureUnsupported: this thread is capturing a stream (free after the capture; the "
                    "capture is now invalidated)");
#endif
    return check_launch(cudaFree(ptr), "onestep_free", "");
}

static onestep_status copy_host(const char* name, void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                cudaStream_t stream, bool wait) {
    if (bytes && (!dst || !src)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, name, bytes_shape(bytes), "NULL pointer");
#ifdef ONESTEP_EMULATION
    if (emu::capture_of(stream))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, name, bytes_shape(bytes),
                    "host copy on a stream under capture (copy inputs in before capture, results out after)");
#else
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    if (stream && cudaStreamIsCapturing(stream, &st) == cudaSuccess && st != cudaStreamCaptureStatusNone)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, name, bytes_shape(bytes),
                    "host copy on a stream under capture (copy inputs in before capture, results out after)");
#endif
    onestep_status s = check_launch(cudaMemcpyAsync(dst, src, bytes, kind, stream), name, bytes_shape(bytes));
    if (s != ONESTEP_OK || !wait) return s;
    return check_launch(cudaStreamSynchronize(stream), name, bytes_shape(bytes));
}

extern "C" onestep_status onestep_memcpy_htod(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
    return copy_host("onestep_memcpy_htod", dst, src, bytes, cudaMemcpyHostToDevice, stream, true);
}

extern "C" onestep_status onestep_memcpy_dtoh(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
    return copy_host("onestep_memcpy_dtoh", dst, src, bytes, cudaMemcpyDeviceToHost, stream, true);
}

extern "C" onestep_status onestep_memcpy_htod_async(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
    return copy_host("onestep_memcpy_htod_async", dst, src, bytes, cudaMemcpyHostToDevice, stream, false);
}

extern "C" onestep_status onestep_memcpy_dtoh_async(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
    return copy_host("onestep_memcpy_dtoh_async", dst, src, bytes, cudaMemcpyDeviceToHost, stream, false);
}

extern "C" onestep_status onestep_memcpy_dtod(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
    if (bytes && (!dst || !src))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_memcpy_dtod", bytes_shape(bytes), "NULL pointer");
    if (dst == src) return ONESTEP_OK;  // nothing to move
    // cudaMemcpy's result is undefined for overlapping ranges (the emulation's memmove would hide it).
    const auto d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
    if (bytes && d < s + bytes && s < d + bytes)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_memcpy_dtod", bytes_shape(bytes),
                    "dst and src overlap (%td bytes apart): a device copy needs disjoint ranges",
                    static_cast<ptrdiff_t>(d - s));
#ifdef ONESTEP_EMULATION
    if (emu::CaptureList* c = emu::capture_of(stream)) {
        c->ops.push_back([=]() { return cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice); });
        return ONESTEP_OK;
    }
#endif
    return check_launch(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream), "onestep_memcpy_dtod",
                        bytes_shape(bytes));
}

extern "C" onestep_status onestep_memset(void* dst, int value, size_t bytes, cudaStream_t stream) {
    if (bytes && !dst) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_memset", bytes_shape(bytes), "NULL pointer");
#ifdef ONESTEP_EMULATION
    if (emu::CaptureList* c = emu::capture_of(stream)) {
        c->ops.push_back([=]() { return cudaMemset(dst, value, bytes); });
        return ONESTEP_OK;
    }
#endif
    return check_launch(cudaMemsetAsync(dst, value, bytes, stream), "onestep_memset", bytes_shape(bytes));
}

extern "C" onestep_status onestep_stream_create(cudaStream_t* stream) {
    if (!stream) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_stream_create", "", "stream is NULL");
#ifdef ONESTEP_EMULATION
    *stream = reinterpret_cast<cudaStream_t>(new char);  // a distinct handle; work still runs at once
    return ONESTEP_OK;
#else
    return check_launch(cudaStreamCreateWithFlags(stream, cudaStreamNonBlocking), "onestep_stream_create", "");
#endif
}

extern "C" onestep_status onestep_stream_destroy(cudaStream_t stream) {
    if (!stream) return ONESTEP_OK;
#ifdef ONESTEP_EMULATION
    {
        std::lock_guard<std::mutex> lock(emu::capture_mutex());
        auto it = emu::captures().find(stream);
        if (it != emu::captures().end()) {
            delete it->second;
            emu::captures().erase(it);
        }
    }
    delete reinterpret_cast<char*>(stream);
    return ONESTEP_OK;
#else
    return check_launch(cudaStreamDestroy(stream), "onestep_stream_destroy", "");
#endif
}

extern "C" onestep_status onestep_graph_begin_capture(cudaStream_t stream) {
    if (!stream)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_graph_begin_capture", "",
                    "the legacy default stream (NULL) cannot be captured");
#ifdef ONESTEP_EMULATION
    std::lock_guard<std::mutex> lock(emu::capture_mutex());
    if (emu::captures().count(stream))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_graph_begin_capture", "", "stream is already capturing");
    emu::captures()[stream] = new emu::CaptureList();
    return ONESTEP_OK;
#else
    return check_launch(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal),
                        "onestep_graph_begin_capture", "");
#endif
}

extern "C" onestep_status onestep_graph_end_capture(cudaStream_t stream, onestep_graph* graph) {
    if (!graph) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_graph_end_capture", "", "graph is NULL");
    *graph = nullptr;
#ifdef ONESTEP_EMULATION
    emu::CaptureList* list = nullptr;
    {
        std::lock_guard<std::mutex> lock(emu::capture_mutex());
        auto it = emu::captures().find(stream);
        if (it == emu::captures().end())
            return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_graph_end_capture", "", "stream is not capturing");
        list = it->second;
        emu::captures().erase(it);
    }
    if (list->invalidated) {
        delete list;
        return fail(ONESTEP_ERROR_CUDA, "onestep_graph_end_capture", "",
                    "cudaErrorStreamCaptureInvalidated: an allocation or free on the capturing thread invalidated it");
    }
    onestep_graph g = new onestep_graph_st();
    g->ops = std::move(list->ops);
    delete list;
    *graph = g;
    return ONESTEP_OK;
#else
    cudaGraph_t cg = nullptr;
    onestep_status s = check_launch(cudaStreamEndCapture(stream, &cg), "onestep_graph_end_capture", "");
    if (s != ONESTEP_OK) return s;
    cudaGraphExec_t exec = nullptr;
    s = check_launch(cudaGraphInstantiate(&exec, cg, 0), "onestep_graph_end_capture", "instantiate");
    if (s != ONESTEP_OK) {
        cudaGraphDestroy(cg);
        return s;
    }
    *graph = new onestep_graph_st{cg, exec};
    return ONESTEP_OK;
#endif
}

extern "C" onestep_status onestep_graph_launch(onestep_graph graph, cudaStream_t stream) {
    if (!graph) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_graph_launch", "", "graph is NULL");
#ifdef ONESTEP_EMULATION
    if (emu::capture_of(stream))
        return fail(ONESTEP_ERROR_UNSUPPORTED, "onestep_graph_launch", "", "graph launched into a capturing stream");
    for (size_t i = 0; i < graph->ops.size(); i++) {
        cudaError_t e = graph->ops[i]();
        if (e != cudaSuccess) {
            char where[64];
            std::snprintf(where, sizeof where, "node=%zu", i);
            return check_launch(e, "onestep_graph_launch", where);
        }
    }
    return ONESTEP_OK;
#else
    return check_launch(cudaGraphLaunch(graph->exec, stream), "onestep_graph_launch", "");
#endif
}

extern "C" onestep_status onestep_graph_destroy(onestep_graph graph) {
    if (!graph) return ONESTEP_OK;
#ifndef ONESTEP_EMULATION
    cudaGraphExecDestroy(graph->exec);
    cudaGraphDestroy(graph->graph);
#endif
    delete graph;
    return ONESTEP_OK;
}

extern "C" onestep_status onestep_graph_node_count(onestep_graph graph, long long* count) {
    if (!graph || !count)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_graph_node_count", "", "graph or count is NULL");
#ifdef ONESTEP_EMULATION
    *count = (long long)graph->ops.size();
    return ONESTEP_OK;
#else
    size_t n = 0;
    onestep_status s = check_launch(cudaGraphGetNodes(graph->graph, nullptr, &n), "onestep_graph_node_count", "");
    *count = (long long)n;
    return s;
#endif
}

extern "C" onestep_status onestep_set_programmatic_launch(int enabled) {
    if (enabled) {
        const onestep_status s = require_sm90("onestep_set_programmatic_launch", "", "programmatic dependent launch");
        if (s != ONESTEP_OK) return s;
    }
    onestep::programmatic_launch_flag().store(enabled != 0);
    return ONESTEP_OK;
}

extern "C" int onestep_programmatic_launch(void) { return onestep::programmatic_launch_flag().load() ? 1 : 0; }

extern "C" onestep_status onestep_set_weight_prefetch(int enabled) {
    onestep::weight_prefetch_flag().store(enabled != 0);
    return ONESTEP_OK;
}

extern "C" int onestep_weight_prefetch(void) { return onestep::weight_prefetch(); }

#ifdef ONESTEP_EMULATION
struct onestep_timer_st {
    std::chrono::steady_clock::time_point start;
    bool started = false;
};
#else
struct onestep_timer_st {
    cudaEvent_t start, stop;
    bool started;
};
#endif

extern "C" onestep_status onestep_timer_create(onestep_timer* timer) {
    if (!timer) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_timer_create", "", "timer is NULL");
    *timer = nullptr;
#ifdef ONESTEP_EMULATION
    *timer = new onestep_timer_st();
    return ONESTEP_OK;
#else
    cudaEvent_t a = nullptr, b = nullptr;
    onestep_status s = check_launch(cudaEventCreate(&a), "onestep_timer_create", "");
    if (s == ONESTEP_OK) s = check_launch(cudaEventCreate(&b), "onestep_timer_create", "");
    if (s != ONESTEP_OK) {
        if (a) cudaEventDestroy(a);
        return s;
    }
    *timer = new onestep_timer_st{a, b, false};
    return ONESTEP_OK;
#endif
}

extern "C" onestep_status onestep_timer_start(onestep_timer timer, cudaStream_t stream) {
    if (!timer) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_timer_start", "", "timer is NULL");
#ifdef ONESTEP_EMULATION
    if (emu::capture_of(stream))
        return fail(ONESTEP_ERROR_UNSUPPORTED, "onestep_timer_start", "", "the stream is capturing");
    timer->start = std::chrono::steady_clock::now();
    timer->started = true;
    return ONESTEP_OK;
#else
    const onestep_status s = check_launch(cudaEventRecord(timer->start, stream), "onestep_timer_start", "");
    timer->started = s == ONESTEP_OK;
    return s;
#endif
}

extern "C" onestep_status onestep_timer_stop(onestep_timer timer, cudaStream_t stream, float* ms) {
    if (!timer || !ms) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_timer_stop", "", "timer or ms is NULL");
    if (!timer->started) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_timer_stop", "", "timer not started");
    timer->started = false;
#ifdef ONESTEP_EMULATION
    (void)stream;
    *ms = std::chrono::duration<float, std::milli>(std::chrono::steady_clock::now() - timer->start).count();
    return ONESTEP_OK;
#else
    onestep_status s = check_launch(cudaEventRecord(timer->stop, stream), "onestep_timer_stop", "");
    if (s == ONESTEP_OK) s = check_launch(cudaEventSynchronize(timer->stop), "onestep_timer_stop", "synchronize");
    if (s == ONESTEP_OK) s = check_launch(cudaEventElapsedTime(ms, timer->start, timer->stop), "onestep_timer_stop", "");
    return s;
#endif
}

extern "C" onestep_status onestep_timer_destroy(onestep_timer timer) {
    if (!timer) return ONESTEP_OK;
#ifndef ONESTEP_EMULATION
    cudaEventDestroy(timer->start);
    cudaEventDestroy(timer->stop);
#endif
    delete timer;
    return ONESTEP_OK;
}
