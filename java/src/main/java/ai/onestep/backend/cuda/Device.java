package ai.onestep.backend.cuda;

import static ai.onestep.kernels.OnestepKernels.*;

import ai.onestep.kernels.OnestepKernels;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.function.IntConsumer;
import java.util.function.LongConsumer;
import java.util.function.Supplier;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.LongPointer;

/**
 * One device as the CUDA backend sees it: memory, a stream, graph capture, and the dense layers (GEMM, linear,
 * convolution). Everything except the dense layers goes through our library ({@code onestep_runtime.h} and the
 * kernels), so the backend's logic is the same on both implementations:
 * <ul>
 *   <li>{@link CudaDevice}: the nvcc-built library on a GPU; GEMM through cuBLAS and convolution through cuDNN
 *       when those load, our portable kernels otherwise;</li>
 *   <li>{@link EmulatedDevice}: the emulated library (kernels/emu): device memory is host memory, launches run at
 *       once on the calling thread, a captured stream records its launches and a graph replays them.</li>
 * </ul>
 * Pointers and handles are raw addresses ({@code long}). Every failed call becomes a {@link CudaException} that
 * names the Java op, the C function and the shapes.
 */
public abstract class Device implements AutoCloseable {
    private final String library;
    private long stream;
    private boolean capturing;

    Device(String library) {
        this.library = library;
        LongPointer p = new LongPointer(1);
        check(onestep_stream_create(p), "stream", () -> "");
        this.stream = p.get();
        p.close();
    }

    /** "cuda" or "emulated". */
    public abstract String kind();

    /** One line for logs: the kind, the library file, and how GEMM and convolution run. */
    public String describe() {
        return kind() + " (" + library + "; GEMM and convolution: " + denseRoute() + ")";
    }

    abstract String denseRoute();

    /** The library file this device's kernels come from. */
    String library() {
        return library;
    }

    /** The stream every launch of this device goes to. */
    public long stream() {
        return stream;
    }

    // ---- dense layers: device-specific -------------------------------------------------------------------

    /**
     * Row-major {@code c (m, n) = alpha op(a) op(b) + beta c} on device pointers holding {@code type} elements
     * (accumulation in fp32 for every type).
     */
    public abstract void gemm(long a, boolean transA, long b, boolean transB, long c, int m, int n, int k, float alpha,
                              float beta, Precision type, Supplier<String> what);

    /** {@link #gemm} on fp32 data. */
    public final void gemm(long a, boolean transA, long b, boolean transB, long c, int m, int n, int k, float alpha,
                           float beta, Supplier<String> what) {
        gemm(a, transA, b, transB, c, m, n, k, alpha, beta, Precision.FP32, what);
    }

    /** {@code y (rows, out) = x (rows, in) w (in, out) + bias}; bias may be 0 (none); all {@code type}. */
    public abstract void linear(long x, long w, long bias, long y, long rows, int in, int out, Precision type,
                                Supplier<String> what);

    /**
     * NHWC x, HWIO w, bias or 0, NHWC y, all {@code type}; {@code scratch} lends device memory for the current op.
     * {@code wKrsc}: the same weights already transposed to cuDNN's KRSC layout ({@link #transpose}; a registered
     * parameter's copy kept by the backend), or 0 to let the device transpose w itself if it needs to. Our implicit
     * GEMM where the shape's timed choice took it ({@link #ownConv}), else the device's {@link #libraryConv2d}.
     */
    public final void conv2d(long x, long w, long wKrsc, long bias, long y, int n, int h, int wd, int cin, int kh,
                             int kw, int cout, int stride, int padding, Precision type, Scratch scratch,
                             Supplier<String> what) {
        if (!ownConv("conv," + shapeKey(n, h, wd, cin, kh, kw, cout, stride, padding, type) + biasKey(bias),
                igemmTakes(x, wKrsc, cin, type), y, outElems(n, h, wd, kh, kw, cout, stride, padding), type, what,
                c -> igemmConv(x, wKrsc, bias, 0, y, n, h, wd, cin, kh, kw, cout, stride, padding, c, type, what),
                s -> libraryConv2d(x, w, wKrsc, bias, y, n, h, wd, cin, kh, kw, cout, stride, padding, type, s, what),
                ref -> portableConv(x, w, bias, 0, ref, n, h, wd, cin, kh, kw, cout, stride, padding, type, what))) {
            libraryConv2d(x, w, wKrsc, bias, y, n, h, wd, cin, kh, kw, cout, stride, padding, type, scratch, what);
        }
    }

    /** {@link #conv2d} by the device's own route (cuDNN, or the portable kernel): the incumbent of {@link #ownConv}. */
    protected abstract void libraryConv2d(long x, long w, long wKrsc, long bias, long y, int n, int h, int wd, int cin,
                                          int kh, int kw, int cout, int stride, int padding, Precision type,
                                          Scratch scratch, Supplier<String> what);

    /** The portable kernel on HWIO w, with the residual z (or 0) summed before its one rounding. */
    protected final void portableConv(long x, long w, long bias, long z, long y, int n, int h, int wd, int cin, int kh,
                                      int kw, int cout, int stride, int padding, Precision type, Supplier<String> what) {
        check(z == 0 ? onestep_conv2d_nhwc_typed(x, w, bias, y, n, h, wd, cin, kh, kw, cout, stride, padding,
                type.code, stream) : onestep_conv2d_nhwc_residual_typed(x, w, bias, z, y, n, h, wd, cin, kh, kw, cout,
                stride, padding, type.code, stream), z == 0 ? "conv2d" : "conv2dResidual", what);
    }

    /**
     * {@code y = conv2d(x, w) + bias + z} with z a residual of y's shape, never y itself (ResnetBlock2D's conv2 and its
     * shortcut); z = 0: none, the bias applied by the convolution itself (a result a residual op reads next). Our
     * implicit GEMM where the shape's timed choice took it ({@link #ownConv}), else {@link #libraryConv2dResidual}:
     * here the convolution, then the add (two launches; {@link #conv2d} itself where z = 0, which on cuDNN adds the
     * bias with a kernel of its own); {@link EmulatedDevice} runs our portable kernel that sums z in its epilogue, and
     * {@link CudaDevice} cuDNN's conv + bias + z fusion, one launch each ({@link #convFusesResidual}).
     */
    public final void conv2dResidual(long x, long w, long wKrsc, long bias, long z, long y, int n, int h, int wd,
                                     int cin, int kh, int kw, int cout, int stride, int padding, Precision type,
                                     Scratch scratch, Supplier<String> what) {
        if (!ownConv((z == 0 ? "biased," : "residual,") + shapeKey(n, h, wd, cin, kh, kw, cout, stride, padding, type)
                + biasKey(bias),
                igemmTakes(x, wKrsc, cin, type), y, outElems(n, h, wd, kh, kw, cout, stride, padding), type, what,
                c -> igemmConv(x, wKrsc, bias, z, y, n, h, wd, cin, kh, kw, cout, stride, padding, c, type, what),
                s -> libraryConv2dResidual(x, w, wKrsc, bias, z, y, n, h, wd, cin, kh, kw, cout, stride, padding, type,
                        s, what),
                ref -> portableConv(x, w, bias, z, ref, n, h, wd, cin, kh, kw, cout, stride, padding, type, what))) {
            libraryConv2dResidual(x, w, wKrsc, bias, z, y, n, h, wd, cin, kh, kw, cout, stride, padding, type, scratch,
                    what);
        }
    }

    /** {@link #conv2dResidual} by the device's own route; here {@link #conv2d}, then the add. */
    protected void libraryConv2dResidual(long x, long w, long wKrsc, long bias, long z, long y, int n, int h, int wd,
                                         int cin, int kh, int kw, int cout, int stride, int padding, Precision type,
                                         Scratch scratch, Supplier<String> what) {
        residualsUnfused++;
        conv2d(x, w, wKrsc, bias, y, n, h, wd, cin, kh, kw, cout, stride, padding, type, scratch, what);
        if (z == 0) {
            return;
        }
        long elems = (long) n * ((h + 2 * padding - kh) / stride + 1) * ((wd + 2 * padding - kw) / stride + 1) * cout;
        check(onestep_add_typed(y, z, y, elems, type.code, stream()), "conv2dResidual", what);
    }

    /**
     * {@code k} (cin, 4, 4, cout) = the stride-2 transposed-convolution kernel equal to a nearest 2x upsampling
     * followed by the 3x3 convolution with {@code w} (3, 3, cin, cout) HWIO ({@code onestep_subpixel_weights_typed});
     * also cuDNN's KRSC filter for that transposed convolution. Queued.
     */
    public void subpixelWeights(long w, long k, int cin, int cout, Precision type, Supplier<String> what) {
        check(onestep_subpixel_weights_typed(w, k, cin, cout, type.code, stream), "subpixelWeights", what);
    }

    /**
     * {@code y} (n, 2h, 2wd, cout) = conv3x3(upsample2x(x), w) + bias (bias may be 0) from {@code k} =
     * {@link #subpixelWeights}(w): the transposed convolution in one launch. Our implicit GEMM with the upsampling in
     * its gather where the shape's timed choice took it ({@link #ownConv}), else {@link #libraryUpsampleConv}: here
     * our portable kernel, with the bias in its epilogue; {@link CudaDevice} runs cuDNN's backward-data convolution,
     * then the bias kernel, and where cuDNN refuses the shape {@link #upsampleThenConv} with w (HWIO; wKrsc as for
     * {@link #conv2d}).
     */
    public final void upsampleConv(long x, long w, long wKrsc, long k, long bias, long y, int n, int h, int wd,
                                   int cin, int cout, Precision type, Scratch scratch, Supplier<String> what) {
        if (!ownConv("upsample," + shapeKey(n, h, wd, cin, 3, 3, cout, 1, 1, type) + biasKey(bias),
                igemmTakes(x, wKrsc, cin, type), y, 4L * n * h * wd * cout, type, what,
                c -> igemmUpsampleConv(x, wKrsc, bias, y, n, h, wd, cin, cout, c, type, what),
                s -> libraryUpsampleConv(x, w, wKrsc, k, bias, y, n, h, wd, cin, cout, type, s, what),
                ref -> portableUpsampleConv(x, k, bias, ref, n, h, wd, cin, cout, type, what))) {
            libraryUpsampleConv(x, w, wKrsc, k, bias, y, n, h, wd, cin, cout, type, scratch, what);
        }
    }

    /** {@link #upsampleConv} by the device's own route; here {@link #portableUpsampleConv}. */
    protected void libraryUpsampleConv(long x, long w, long wKrsc, long k, long bias, long y, int n, int h, int wd,
                                       int cin, int cout, Precision type, Scratch scratch, Supplier<String> what) {
        portableUpsampleConv(x, k, bias, y, n, h, wd, cin, cout, type, what);
    }

    /** The portable transposed convolution on the sub-pixel kernel k, with the bias in its epilogue. */
    protected final void portableUpsampleConv(long x, long k, long bias, long y, int n, int h, int wd, int cin, int cout,
                                              Precision type, Supplier<String> what) {
        check(onestep_upsample_conv_typed(x, k, bias, y, n, h, wd, cin, cout, type.code, stream), "upsampleConv2d",
                what);
    }

    /** The same as two launches: the upsampling into scratch, then {@link #conv2d} (3x3, padding 1) with w. */
    public final void upsampleThenConv(long x, long w, long wKrsc, long bias, long y, int n, int h, int wd, int cin,
                                       int cout, Precision type, Scratch scratch, Supplier<String> what) {
        long up = scratch.allocate(4L * n * h * wd * cin * type.bytes, "upsampleConv2d upsampled input");
        check(onestep_upsample_nearest2x_typed(x, up, n, h, wd, cin, type.code, stream), "upsampleConv2d", what);
        conv2d(up, w, wKrsc, bias, y, n, 2 * h, 2 * wd, cin, 3, 3, cout, 1, 1, type, scratch, what);
    }

    /**
     * {@code y (rows, out) = x (rows, in) w (in, out) + bias + z} with z a residual of y's shape, never y itself (an
     * attention block's output projection and its residual). Here the linear, then the add: two launches.
     * {@link EmulatedDevice} runs our portable kernel that sums z before its store, {@link CudaDevice} cuBLASLt's
     * bias epilogue with C = z, one launch each ({@link #linearFusesResidual}).
     */
    public void linearResidual(long x, long w, long bias, long z, long y, long rows, int in, int out, Precision type,
                               Supplier<String> what) {
        residualsUnfused++;
        linear(x, w, bias, y, rows, in, out, type, what);
        check(onestep_add_typed(y, z, y, rows * out, type.code, stream()), "linearResidual", what);
    }

    /** True when {@link #linearResidual} is one launch. */
    public boolean linearFusesResidual() {
        return false;
    }

    long residualsUnfused;  // package-private: CudaDevice keeps it out of its timing runs

    /**
     * Calls of {@link #conv2dResidual} and {@link #linearResidual} that ran as two launches: on a device that fuses,
     * those cuDNN or cuBLASLt refused or disagreed on, or found slower, or a shape's first use inside a capture;
     * DeviceCheck reports them.
     */
    public long residualsUnfused() {
        return residualsUnfused;
    }

    /** True when {@link #conv2dResidual} is one launch, so a model gains by calling it instead of conv2d and add. */
    public boolean convFusesResidual() {
        return false;
    }

    /**
     * True when {@link #conv2d}'s bias would be a kernel of its own (cuDNN's convolution has no bias epilogue outside
     * IMPLICIT_PRECOMP_GEMM), so the backend had better leave the bias to the op that reads the result.
     */
    public boolean convBiasSeparate() {
        return false;
    }

    /** The same for {@link #linear} over {@code rows} rows (a cuBLAS GEMM, then the bias). */
    public boolean linearBiasSeparate(long rows) {
        return false;
    }

    /** True when {@link #conv2d} would use weights in KRSC layout (cuDNN), so a kept transposed copy saves work. */
    public boolean convUsesKrsc() {
        return false;
    }

    /** {@code dst} (cols, rows) = {@code src} (rows, cols) transposed, {@code type} elements, queued. */
    public void transpose(long src, long dst, long rows, int cols, Precision type, Supplier<String> what) {
        check(onestep_split_heads_typed(src, dst, 1, Math.toIntExact(rows), cols, 1, type.code, stream), "transpose",
                what);
    }

    /**
     * Backward of {@link #conv2d} (bias excluded): {@code dx} assigned, {@code dw} accumulated; either may be 0
     * (not wanted). Here our portable kernels (onestep_conv2d_nhwc_backward); {@link CudaDevice} uses cuDNN.
     */
    public void conv2dBackward(long x, long w, long dy, long dx, long dw, int n, int h, int wd, int cin, int kh, int kw,
                               int cout, int stride, int padding, Scratch scratch, Supplier<String> what) {
        check(onestep_conv2d_nhwc_backward(x, w, dy, dx, dw, n, h, wd, cin, kh, kw,
                cout, stride, padding, stream()), "conv2dBackward", what);
    }

    /** Device memory that lives until the end of the current op (eager) or pass. */
    @FunctionalInterface
    public interface Scratch {
        long allocate(long bytes, String what);
    }

    // ---- memory ----------------------------------------------------------------------------------------------

    public long malloc(long bytes, Supplier<String> what) {
        LongPointer p = new LongPointer(1);
        try {
            check(onestep_malloc(p, bytes), "malloc", what);
            return p.get();
        } finally {
            p.close();
        }
    }

    public void free(long ptr) {
        check(onestep_free(ptr), "free", () -> "");
    }

    /** Host to device, waits. */
    public void upload(long dst, MemorySegment src, long bytes, Supplier<String> what) {
        upload(dst, src, bytes, what, true);
    }

    /** Device to host, waits. */
    public void download(MemorySegment dst, long src, long bytes, Supplier<String> what) {
        download(dst, src, bytes, what, true);
    }

    /**
     * Host to device, queued on the stream without a wait (the host memory may be reused when this returns); for
     * a graph replay's inputs, which the replay's one {@link #synchronize} follows.
     */
    public void uploadQueued(long dst, MemorySegment src, long bytes, Supplier<String> what) {
        upload(dst, src, bytes, what, false);
    }

    /**
     * Device to host in stream order without a separate wait (to pageable memory CUDA returns once it is done); a
     * graph replay's outputs, then one {@link #synchronize}.
     */
    public void downloadQueued(MemorySegment dst, long src, long bytes, Supplier<String> what) {
        download(dst, src, bytes, what, false);
    }

    private void upload(long dst, MemorySegment src, long bytes, Supplier<String> what, boolean wait) {
        check(wait ? onestep_memcpy_htod(dst, src.address(), bytes, stream)
                : onestep_memcpy_htod_async(dst, src.address(), bytes, stream), "upload", what);
        uploads++;
        uploadedBytes += bytes;
    }

    private void download(MemorySegment dst, long src, long bytes, Supplier<String> what, boolean wait) {
        check(wait ? onestep_memcpy_dtoh(dst.address(), src, bytes, stream)
                : onestep_memcpy_dtoh_async(dst.address(), src, bytes, stream), "download", what);
        downloads++;
        downloadedBytes += bytes;
    }

    private long uploads;
    private long uploadedBytes;
    private long downloads;
    private long downloadedBytes;
    private long synchronizations;

    /**
     * Host-device traffic so far: each copy across the bus waits for the stream, so on a GPU these counts, not the
     * kernels, bound an op-by-op training step. A snapshot; subtract two to measure a stretch of work.
     */
    public Traffic traffic() {
        return new Traffic(uploads, uploadedBytes, downloads, downloadedBytes, synchronizations);
    }

    /** Copies to the device and their bytes, copies back and theirs, and explicit stream synchronizations. */
    public record Traffic(long uploads, long uploadedBytes, long downloads, long downloadedBytes,
                          long synchronizations) {
        public Traffic minus(Traffic before) {
            return new Traffic(uploads - before.uploads, uploadedBytes - before.uploadedBytes,
                    downloads - before.downloads, downloadedBytes - before.downloadedBytes,
                    synchronizations - before.synchronizations);
        }

        /** Host waits for the device: copies across the bus (each waits) and synchronizations. */
        public long waits() {
            return uploads + downloads + synchronizations;
        }

        public long bytes() {
            return uploadedBytes + downloadedBytes;
        }
    }

    /** Device to device, queued (captured under capture). */
    public void copy(long dst, long src, long bytes, Supplier<String> what) {
        check(onestep_memcpy_dtod(dst, src, bytes, stream), "copy", what);
    }

    /** {@code elems} elements from {@code from} (type {@code fromType}) to {@code to} as {@code toType}, queued. */
    public void convert(long from, Precision fromType, long to, Precision toType, long elems, String op,
                        Supplier<String> what) {
        check(onestep_convert(from, fromType.code, to, toType.code, elems, stream), op,
                () -> fromType.label() + " -> " + toType.label() + " " + what.get());
    }

    public void synchronize() {
        check(onestep_synchronize(stream), "synchronize", () -> "");
        synchronizations++;
    }

    // ---- graphs ----------------------------------------------------------------------------------------------

    public void beginCapture() {
        check(onestep_graph_begin_capture(stream), "beginCapture", () -> "");
        capturing = true;
    }

    /** True between {@link #beginCapture} and {@link #endCapture}: launches are recorded, not run. */
    public boolean capturing() {
        return capturing;
    }

    /** Ends the capture and returns the instantiated graph's handle. */
    public long endCapture() {
        LongPointer p = new LongPointer(1);
        capturing = false;
        try {
            check(onestep_graph_end_capture(stream, p), "endCapture", () -> "");
            return p.get();
        } finally {
            p.close();
        }
    }

    public void launchGraph(long graph) {
        check(onestep_graph_launch(graph, stream), "launchGraph", () -> "");
    }

    public long graphNodes(long graph) {
        LongPointer p = new LongPointer(1);
        try {
            check(onestep_graph_node_count(graph, p), "graphNodes", () -> "");
            return p.get();
        } finally {
            p.close();
        }
    }

    public void destroyGraph(long graph) {
        check(onestep_graph_destroy(graph), "destroyGraph", () -> "");
    }

    @Override
    public void close() {
        for (long b : statsBuffers.values()) {
            free(b);
        }
        statsBuffers.clear();
        if (choicesFile != null) {
            try {
                saveChoices(choicesFile);
            } catch (java.io.IOException | RuntimeException e) {
                System.err.println("cuda: could not write the timed choices to " + choicesFile + ": " + e.getMessage());
            }
            choicesFile = null;
        }
        if (stream != 0) {
            onestep_stream_destroy(stream);
            stream = 0;
        }
    }

    private java.nio.file.Path choicesFile;

    /**
     * {@code -Donestep.cuda.choices=FILE}: this device starts with the timed choices in FILE, if it exists and was
     * made under this device's identity (else one log line, and it times as usual), and writes its choices back on
     * close ({@link #loadChoices}, {@link #saveChoices}). For a process that should skip the first pass's timing, and
     * for a profiler, whose overhead would skew the timing, to run what an unprofiled process chose. Called at the end
     * of a device's constructor.
     */
    protected final void useChoicesFile() {
        String f = System.getProperty("onestep.cuda.choices");
        if (f == null || f.isBlank()) {
            return;
        }
        choicesFile = java.nio.file.Path.of(f);
        if (java.nio.file.Files.exists(choicesFile)) {
            try {
                loadChoices(choicesFile);
            } catch (java.io.IOException | IllegalArgumentException e) {
                System.err.println("cuda: timed choices not loaded: " + e.getMessage());
            }
        }
    }

    // ---- our tensor-core convolution and the timer that chooses it ------------------------------------------

    /**
     * Milliseconds per run of {@code work} (queued on this device's stream): {@link #timingWarmups} runs to warm up,
     * then {@code reps} between a pair of device events ({@code onestep_timer_*}; the emulation's host clock). The
     * {@code reps} runs are captured into a CUDA graph and the timer brackets its replay ({@link #graphTiming}), as a
     * pass runs them: timed as launches, a route whose host side costs more than its kernels (cuDNN's calls at batch 1:
     * ~50 us a call on the seventeenth session's H100, against ~10 us of kernel) would be charged for that host time,
     * which a captured pass never pays, and lose choices its kernels win. Work that cannot be captured (or that times
     * something itself, a timed choice whose library route makes another choice on its first run) is timed as launches.
     * Not while capturing. Each call has its own timer.
     */
    public float timeMs(Runnable work, int reps) {
        if (capturing) {
            throw new IllegalStateException("timeMs: the stream is capturing");
        }
        for (int i = 0; i < timingWarmups; i++) {
            work.run();
        }
        long graph = graphTiming ? captureRuns(work, reps) : 0;
        LongPointer p = new LongPointer(1);
        FloatPointer ms = new FloatPointer(1);
        long timer = 0;
        try {
            if (graph != 0) {
                // Once untimed: a new graph's first launch uploads it and pays one-time costs, and the device sits
                // idle after the capture (host work), so a timer started now would also count the host's launch
                // latency. Replayed first, the graph is still running when the timer starts and the timed replay is
                // queued behind it. (On the H200, 2026-11-27, the first timing of a process read 24.4 us for a
                // group norm kernel that took 7.4 moments later.)
                launchGraph(graph);
                timingReplays++;
            }
            check(onestep_timer_create(p), "timer", () -> "");
            timer = p.get();
            check(onestep_timer_start(timer, stream), "timer", () -> "");
            if (graph != 0) {
                launchGraph(graph);
                timingReplays++;
            } else {
                for (int i = 0; i < reps; i++) {
                    work.run();
                }
            }
            check(onestep_timer_stop(timer, stream, ms), "timer", () -> "");
            return ms.get() / reps;
        } finally {
            if (timer != 0) {
                onestep_timer_destroy(timer);
            }
            if (graph != 0) {
                destroyGraph(graph);
            }
            p.close();
            ms.close();
        }
    }

    /** {@code reps} runs of {@code work} as a graph, or 0 where the capture failed (the stream is usable again). */
    private long captureRuns(Runnable work, int reps) {
        beginCapture();
        try {
            for (int i = 0; i < reps; i++) {
                work.run();
            }
        } catch (RuntimeException e) {
            try {
                destroyGraph(endCapture());
            } catch (RuntimeException ended) {
                // the capture was already invalidated and is over
            }
            uncapturedTimings++;
            return 0;
        }
        try {
            return endCapture();
        } catch (CudaException e) {
            uncapturedTimings++;
            return 0;
        }
    }

    /**
     * Whether {@link #timeMs} times the runs as a replayed graph (the default); {@code -Donestep.cuda.graphTiming=false}
     * in {@link CudaDevice}: as launches on the stream, host time included.
     */
    public void graphTiming(boolean on) {
        graphTiming = on;
    }

    private boolean graphTiming = true;
    private long uncapturedTimings;
    /** Graph replays made by {@link #timeMs}, the untimed first one included (tests count them). */
    long timingReplays;

    /** Timings {@link #timeMs} made as launches because their work could not be captured. */
    public long uncapturedTimings() {
        return uncapturedTimings;
    }

    /**
     * Programmatic dependent launch of the library's kernels ({@code onestep_set_programmatic_launch}, sm_90+): each
     * may start while the kernel ahead of it on the stream is still running, and waits at its first statement for
     * that kernel's writes, so launch latency hides behind the predecessor's tail (in captured graphs as well). It
     * is aimed at batch 1, where the graph is ~140 kernels of a few microseconds each. One flag per process (the
     * library's); off by default ({@code -Donestep.cuda.pdl=true} turns it on in {@link CudaDevice}). Takes effect
     * for launches and captures from now on.
     *
     * @throws CudaException naming the device's compute capability where it has no such launch
     */
    public static void programmaticLaunch(boolean on) {
        check(onestep_set_programmatic_launch(on ? 1 : 0), "programmaticLaunch", () -> "enabled=" + on);
    }

    public static boolean programmaticLaunch() {
        return onestep_programmatic_launch() != 0;
    }

    /**
     * Whether the library's weight-reading kernels (our implicit-GEMM convolution, the one-launch resnet blocks, the
     * attention with to_out.0) ask L2 for their weights before they wait for their predecessor ({@code
     * onestep_set_weight_prefetch}): with {@link #programmaticLaunch} on, the weights then come from HBM under the
     * preceding kernel's tail. A hint: the same bits either way. One flag per process (the library's); on by default
     * ({@code -Donestep.cuda.prefetchWeights=false} turns it off in {@link CudaDevice}). Takes effect for launches and
     * captures from now on.
     */
    public static void weightPrefetch(boolean on) {
        check(onestep_set_weight_prefetch(on ? 1 : 0), "weightPrefetch", () -> "enabled=" + on);
    }

    public static boolean weightPrefetch() {
        return onestep_weight_prefetch() != 0;
    }

    /** The implicit-GEMM convolution's tile configurations, 1 .. this ({@code onestep_conv2d_igemm_configs}). */
    public static int igemmConfigs() {
        return onestep_conv2d_igemm_configs();
    }

    /** The thread block cluster a tile's depth is split over: 1 for the plain tiles, 2-8 for those needing sm_90. */
    public static int igemmConfigCluster(int config) {
        return onestep_conv2d_igemm_config_cluster(config);
    }

    /** Whether a timed convolution choice times tile {@code config}; {@link EmulatedDevice}: three of the plain ones. */
    protected boolean timesTile(int config) {
        return true;
    }

    /** "auto" for 0, else the tile configuration's description. */
    public static String igemmConfigName(int config) {
        BytePointer name = onestep_conv2d_igemm_config_name(config);
        return name == null || name.isNull() ? "config " + config : name.getString();
    }

    /**
     * Whether {@link #igemmConv} takes this convolution: fp16/bf16 ({@code type}), Cin a multiple of 16, a kept KRSC
     * copy of the weights, and 16-byte-aligned x and weights (its cp.async moves).
     */
    public static boolean igemmTakes(long x, long wKrsc, int cin, Precision type) {
        return type != Precision.FP32 && cin % 16 == 0 && wKrsc != 0 && x % 16 == 0 && wKrsc % 16 == 0;
    }

    /**
     * {@code y = conv2d(x, w) + bias + z} by our tensor-core implicit GEMM ({@code onestep_conv2d_igemm_typed},
     * kernels/src/conv.cu) on the KRSC weights, bias and z optional (0); one launch. {@code config} 0 lets the library
     * pick the tile; the devices that time it pass the fastest ({@link CudaDevice}).
     */
    public final void igemmConv(long x, long wKrsc, long bias, long z, long y, int n, int h, int wd, int cin, int kh,
                                int kw, int cout, int stride, int padding, int config, Precision type,
                                Supplier<String> what) {
        check(onestep_conv2d_igemm_typed(x, wKrsc, bias, z, y, n, h, wd, cin, kh, kw, cout, stride, padding, config,
                type.code, stream), z == 0 ? "conv2d" : "conv2dResidual", what);
        igemmLaunches++;
    }

    /**
     * {@code y} (n, 2h, 2wd, cout) = conv3x3(upsample2x(x), w) + bias (0: none) by the same kernel, gathering the
     * upsampled pixels from x ({@code onestep_upsample_conv_igemm_typed}) on the 3x3 weights' KRSC copy; one launch.
     */
    public final void igemmUpsampleConv(long x, long wKrsc, long bias, long y, int n, int h, int wd, int cin, int cout,
                                        int config, Precision type, Supplier<String> what) {
        check(onestep_upsample_conv_igemm_typed(x, wKrsc, bias, y, n, h, wd, cin, cout, config, type.code, stream),
                "upsampleConv2d", what);
        igemmLaunches++;
    }

    private long igemmLaunches;

    /**
     * Self-attention on one packed (n, t, 3 heads d) projection with its pending bias (0: none), o (n, t, heads d),
     * lse (n, heads, t) fp32: {@code onestep_attention_forward_qkv_kernel_typed} with {@code kernel} 0 (the default
     * tensor-core kernel, 64 query rows a block), 1 (split keys: 16 rows a block, the keys over its 4 warps), 2
     * (pipelined: kernel 0 with its key/value tiles double-buffered by cp.async and read by ldmatrix; its bits) or 3
     * (wide: kernel 2 with 32 rows a warp and 128 a block; its bits too), 1 to 3 fp16/bf16 with d 32 or 64, as
     * {@link #attentionKernel} chose for the shape (0 unless this device times them).
     */
    public final void attentionQkv(long qkv, long bias, long o, long lse, int n, int heads, int t, int d,
                                   Precision type, Supplier<String> what) {
        attentionQkv(qkv, bias, o, lse, n, heads, t, d, attentionKernel(qkv, bias, o, lse, n, heads, t, d, type, what),
                type, what);
    }

    /** {@link #attentionQkv} with the kernel given. */
    public final void attentionQkv(long qkv, long bias, long o, long lse, int n, int heads, int t, int d, int kernel,
                                   Precision type, Supplier<String> what) {
        check(onestep_attention_forward_qkv_kernel_typed(qkv, bias, o, lse, n, heads, t, d, 0L, 0f, kernel, type.code,
                stream), "attention", what);
    }

    /**
     * An attention block's attention, output projection and residual at inference: {@code y = attention(qkv) w +
     * bias + z} on one packed (n, t, 3 heads d) projection with its pending bias (0: none), w (heads d, heads d) the
     * projection's weights and wKrsc their [out][in] copy, z and y (n, t, heads d). Where the shape's timed choice
     * ({@link #attentionResidualKernel}) took it, one launch ({@code onestep_attention_residual_qkv_typed}), which
     * writes neither o nor lse; else {@link #attentionQkv} into o and lse, then {@link #linearResidual}.
     */
    public final void attentionResidual(long qkv, long qkvBias, long o, long lse, long w, long wKrsc, long bias, long z,
                                        long y, int n, int heads, int t, int d, Precision type, Supplier<String> what) {
        int kernel = attentionResidualKernel(qkv, qkvBias, o, lse, w, wKrsc, bias, z, y, n, heads, t, d, type, what);
        if (kernel == 0) {
            attentionResidualsApart++;
        }
        attentionResidual(qkv, qkvBias, o, lse, w, wKrsc, bias, z, y, n, heads, t, d, kernel, type, what);
    }

    private long attentionResidualsApart;

    /** Calls of {@link #attentionResidual} that ran as the two ops (timing runs not counted); DeviceCheck reports them. */
    public long attentionResidualsApart() {
        return attentionResidualsApart;
    }

    /**
     * {@link #attentionResidual} with the route given: 0 the two ops, else the one launch with that many warps
     * attending each head (1, 2 or 4; they split its keys).
     */
    public final void attentionResidual(long qkv, long qkvBias, long o, long lse, long w, long wKrsc, long bias, long z,
                                        long y, int n, int heads, int t, int d, int kernel, Precision type,
                                        Supplier<String> what) {
        if (kernel == 0) {
            attentionQkv(qkv, qkvBias, o, lse, n, heads, t, d, type, what);
            linearResidual(o, w, bias, z, y, (long) n * t, heads * d, heads * d, type, what);
        } else {
            check(onestep_attention_residual_qkv_typed(qkv, qkvBias, wKrsc, bias, z, y, n, heads, t, d, 0f, kernel,
                    type.code, stream), "attentionResidual", what);
        }
    }

    /**
     * The route {@link #attentionResidual} runs a shape with: the one launch with 1, 2 or 4 warps a head, the fastest
     * of the three where, timed against the two ops on the shape's first use outside a capture (their own choices made
     * in the timing's warm-up runs), it was faster and its y agreed; else 0. Off with {@link #fuseAttentionResidual};
     * only on fp16/bf16 with d 32 or 64, the KRSC copy of the weights, and y apart from qkv and z. Neither route asks
     * for the pass's scratch.
     */
    protected final int attentionResidualKernel(long qkv, long qkvBias, long o, long lse, long w, long wKrsc, long bias,
                                                long z, long y, int n, int heads, int t, int d, Precision type,
                                                Supplier<String> what) {
        if (!fuseAttentionResidual || wKrsc == 0 || type == Precision.FP32 || (d != 32 && d != 64) || y == qkv
                || y == z) {
            return 0;
        }
        String key = "attnres,n=" + n + ",heads=" + heads + ",t=" + t + ",d=" + d + (qkvBias != 0 ? ",biased" : "")
                + "," + type.label();
        long unfused = residualsUnfused;  // the timing runs are not the pass's launches
        try {
            return timedChoice(key, "attention and to_out apart", ONE_LAUNCH,
                    kernel -> attentionResidual(qkv, qkvBias, o, lse, w, wKrsc, bias, z, y, n, heads, t, d, kernel,
                            type, what), (kernel, tmp) -> {
                        long elems = (long) n * t * heads * d;
                        long ref = tmp.allocate(elems * type.bytes, "attention and to_out check");
                        attentionResidual(qkv, qkvBias, o, lse, w, wKrsc, bias, z, ref, n, heads, t, d, 0, type, what);
                        // y: the candidate's, last
                        attentionResidual(qkv, qkvBias, o, lse, w, wKrsc, bias, z, y, n, heads, t, d, kernel, type,
                                what);
                        return agrees(y, ref, elems, type, tmp, what, "the attention with to_out in one launch " + key,
                                "the attention and to_out apart for this shape");
                    });
        } finally {
            residualsUnfused = unfused;
        }
    }

    /**
     * A whole ResnetBlock2D at inference (diffusers' default time_embedding_norm, no conv_shortcut, output scale 1) on
     * x (n, h, w, c) with no pending bias: {@code y = x + conv2(g2) + b2}, {@code g2 = silu(norm2(hh + add + addBias))},
     * {@code hh = conv1(g1) + b1}, {@code g1 = silu(norm1(x))}, 3x3 'same' convolutions (w1, w2 HWIO and their KRSC
     * copies). Where the shape's timed choice ({@link #resnetBlockKernel}) took it, one launch
     * ({@code onestep_resnet_block_typed}: a cluster of 8 blocks a sample), which writes none of g1, hh, g2 and the
     * norms' statistics; else the two {@link #groupNormConv} calls the pass ran before this op existed, conv1's bias
     * left to norm2 where this device runs biases apart ({@link #convBiasSeparate}), each call its own op for the
     * statistics chain.
     */
    public final void resnetBlock(long x, long add, long addBias, long gamma1, long beta1, long w1, long w1Krsc, long b1,
                                  long gamma2, long beta2, long w2, long w2Krsc, long b2, long g1, long mean1,
                                  long rstd1, long hh, long g2, long mean2, long rstd2, long y, int n, int h, int wd,
                                  int c, int groups, float eps, Precision type, Scratch scratch,
                                  Supplier<String> what) {
        ResnetOp op = new ResnetOp(x, add, addBias, gamma1, beta1, w1, w1Krsc, b1, gamma2, beta2, w2, w2Krsc, b2, g1,
                mean1, rstd1, hh, g2, mean2, rstd2, y, n, h, wd, c, groups, eps, type, scratch, what);
        runWholeBlock(resnetBlockKernel(op), () -> resnetApart(op, y), kernel -> resnetFused(op, y, kernel));
    }

    /**
     * A whole block by the route its choice gave: the two calls (kernel 0), or the one launch. The statistics chain
     * then: the call before this op left statistics for a reader that is not launched now, and the two calls'
     * positions stay taken, so later calls keep theirs whichever route a block takes.
     */
    private void runWholeBlock(int kernel, Runnable apart, IntConsumer fused) {
        if (kernel == 0) {
            resnetBlocksApart++;
            apart.run();
            return;
        }
        resnetBlocksFused++;
        if (last != null) {
            wanted.remove(last.at());
        }
        last = null;
        normConvsInPass += 2;
        fused.accept(kernel);
    }

    /** {@link #resnetBlock}'s operands. */
    private record ResnetOp(long x, long add, long addBias, long gamma1, long beta1, long w1, long w1Krsc, long b1,
                            long gamma2, long beta2, long w2, long w2Krsc, long b2, long g1, long mean1, long rstd1,
                            long hh, long g2, long mean2, long rstd2, long y, int n, int h, int wd, int c, int groups,
                            float eps, Precision type, Scratch scratch, Supplier<String> what) {
    }

    private void resnetApart(ResnetOp o, long y) {
        boolean defer = convBiasSeparate();  // as CudaOps defers a convolution's bias to its reader
        groupNormConv(o.x(), 0, 0, 0, o.gamma1(), o.beta1(), o.groups(), o.eps(), true, o.g1(), o.mean1(), o.rstd1(),
                o.w1(), o.w1Krsc(), defer ? 0 : o.b1(), 0, o.hh(), o.n(), o.h(), o.wd(), o.c(), 3, 3, o.c(), 1, 1,
                o.type(), o.scratch(), o.what());
        opBoundary();  // norm2's call is the next op, as when the model issued the two
        groupNormConv(o.hh(), defer ? o.b1() : 0, o.add(), o.addBias(), o.gamma2(), o.beta2(), o.groups(), o.eps(),
                true, o.g2(), o.mean2(), o.rstd2(), o.w2(), o.w2Krsc(), o.b2(), o.x(), y, o.n(), o.h(), o.wd(), o.c(),
                3, 3, o.c(), 1, 1, o.type(), o.scratch(), o.what());
    }

    /** The one launch: kernel 1 a cluster of 8 blocks a sample, 2 a cluster of 16. */
    private void resnetFused(ResnetOp o, long y, int kernel) {
        check(onestep_resnet_block_typed(o.x(), 0, o.add(), o.addBias(), o.gamma1(), o.beta1(), o.w1Krsc(), o.b1(),
                o.gamma2(), o.beta2(), o.w2Krsc(), o.b2(), y, o.n(), o.h(), o.wd(), o.c(), o.groups(), o.eps(),
                clusterOf(kernel), o.type().code, stream), "resnetBlock2d", o.what());
    }

    /**
     * An up block's whole ResnetBlock2D at inference on x = cat(a + aBias, b + bBias) (a (n, h, wd, ca), b (n, h, wd,
     * cb)) with its 1x1 shortcut ws (its bias folded into b2): {@code y = sc + conv2(g2) + b2}, {@code sc = ws x},
     * {@code g2 = silu(norm2(hh + add + addBias))}, {@code hh = conv1(g1) + b1}, {@code g1 = silu(norm1(x))}, 3x3 'same'
     * convolutions (weights HWIO with their KRSC copies). Where the shape's timed choice ({@link
     * #resnetConcatBlockKernel}) took it, one launch ({@code onestep_resnet_block_concat_typed}), which writes none of
     * cat, g1, hh, sc, g2 and the statistics; else the {@link #groupNormConcatConv} and {@link #groupNormConv} calls the
     * pass ran before this op existed, as {@link #resnetBlock}'s two.
     */
    public final void resnetConcatBlock(ConcatResnetOp op) {
        runWholeBlock(resnetConcatBlockKernel(op), () -> resnetConcatApart(op, op.y()),
                kernel -> resnetConcatFused(op, op.y(), kernel));
    }

    /** {@link #resnetConcatBlock}'s operands: device pointers (0 where absent), then the shape. */
    record ConcatResnetOp(long a, long aBias, long b, long bBias, long add, long addBias, long gamma1, long beta1,
                          long w1, long w1Krsc, long b1, long ws, long wsKrsc, long gamma2, long beta2, long w2,
                          long w2Krsc, long b2, long cat, long g1, long mean1, long rstd1, long hh, long sc, long g2,
                          long mean2, long rstd2, long y, int n, int h, int wd, int ca, int cb, int c, int groups,
                          float eps, Precision type, Scratch scratch, Supplier<String> what) {
    }

    private void resnetConcatApart(ConcatResnetOp o, long y) {
        boolean defer = convBiasSeparate();  // as resnetApart
        groupNormConcatConv(o.a(), o.aBias(), o.b(), o.bBias(), o.gamma1(), o.beta1(), o.groups(), o.eps(), true,
                o.cat(), o.g1(), o.mean1(), o.rstd1(), o.w1(), o.w1Krsc(), defer ? 0 : o.b1(), o.ws(), o.wsKrsc(),
                o.hh(), o.sc(), o.n(), o.h(), o.wd(), o.ca(), o.cb(), 3, 3, o.c(), 1, 1, o.type(), o.scratch(),
                o.what());
        opBoundary();  // norm2's call is the next op, as when the model issued the two
        groupNormConv(o.hh(), defer ? o.b1() : 0, o.add(), o.addBias(), o.gamma2(), o.beta2(), o.groups(), o.eps(),
                true, o.g2(), o.mean2(), o.rstd2(), o.w2(), o.w2Krsc(), o.b2(), o.sc(), y, o.n(), o.h(), o.wd(), o.c(),
                3, 3, o.c(), 1, 1, o.type(), o.scratch(), o.what());
    }

    private void resnetConcatFused(ConcatResnetOp o, long y, int kernel) {
        check(onestep_resnet_block_concat_typed(o.a(), o.aBias(), o.b(), o.bBias(), o.add(), o.addBias(), o.gamma1(),
                o.beta1(), o.w1Krsc(), o.b1(), o.gamma2(), o.beta2(), o.w2Krsc(), o.b2(), o.wsKrsc(), y, o.n(), o.h(),
                o.wd(), o.ca(), o.cb(), o.c(), o.groups(), o.eps(), clusterOf(kernel), o.type().code, stream),
                "resnetBlock2dConcat", o.what());
    }

    /**
     * {@link #resnetBlockKernel}'s choice for {@link #resnetConcatBlock} (key {@code resnetcat,...}): 1 or 2, the one
     * launch on 8 or 16 blocks a sample, where it was faster than the two calls and its y agreed; else 0. Only where
     * the kernel has an instance ({@link #resnetConcatBlockFits}) and the three weights have their KRSC copies.
     */
    private int resnetConcatBlockKernel(ConcatResnetOp o) {
        if (!fuseResnetBlocks || o.w1Krsc() == 0 || o.w2Krsc() == 0 || o.wsKrsc() == 0
                || !resnetConcatBlockFits(o.h(), o.wd(), o.ca(), o.cb(), o.c(), o.groups(), o.type())) {
            return 0;
        }
        String key = "resnetcat,n=" + o.n() + ",hw=" + o.h() + "x" + o.wd() + ",cin=" + o.ca() + "+" + o.cb() + ",c="
                + o.c() + ",g=" + o.groups() + (o.aBias() != 0 || o.bBias() != 0 ? ",cat-biased" : "")
                + (o.add() != 0 ? ",add" : "") + (o.b1() != 0 || o.b2() != 0 ? ",biased" : "") + ","
                + o.type().label();
        return chooseWithChainReset(key, resnetCandidates(o.c(), o.groups()), () -> resnetConcatApart(o, o.y()),
                kernel -> resnetConcatFused(o, o.y(), kernel),
                ref -> resnetConcatApart(o, ref), o.y(), (long) o.n() * o.h() * o.wd() * o.c(), o.type(), o.what());
    }

    /**
     * Whether {@code onestep_resnet_block_concat_typed} has an instance for the shape: fp16 or bf16, ca and cb
     * multiples of 8 with ca + cb 128, 256 or 512, c 128 or 256, h wd 16 or 64, groups dividing ca + cb and c,
     * c / groups a multiple of 8 dividing c / 8, (ca + cb) / groups a multiple of 8.
     */
    public static boolean resnetConcatBlockFits(int h, int wd, int ca, int cb, int c, int groups, Precision type) {
        int cin = ca + cb;
        return ca > 0 && cb > 0 && ca % 8 == 0 && cb % 8 == 0 && (cin == 128 || cin == 256 || cin == 512)
                && groups > 0 && cin % groups == 0 && (cin / groups) % 8 == 0
                && resnetBlockFits(h, wd, c, groups, type);
    }

    private long resnetBlocksApart;
    private long resnetBlocksFused;

    /** Calls of {@link #resnetBlock} that ran as one launch, and as the two ops (timing runs not counted). */
    public long resnetBlocksFused() {
        return resnetBlocksFused;
    }

    /** See {@link #resnetBlocksFused}. */
    public long resnetBlocksApart() {
        return resnetBlocksApart;
    }

    /**
     * The route {@link #resnetBlock} runs a shape with: 1 or 2, the one launch (a cluster of 8 or 16 blocks a sample:
     * {@link #resnetCandidates}), where, timed against the two ops on the
     * shape's first use outside a capture (their own choices, the statistics chain's included, made in the timing's
     * warm-up runs), it was faster and its y agreed; else 0. Off with {@link #fuseResnetBlocks}; only where the kernel
     * has an instance (fp16/bf16, c 128 or 256, h w 16 or 64, c / groups a multiple of 8 dividing c / 8) and both
     * weights have their KRSC copies. Each of the timing's runs of the two ops starts from this op's state of the
     * chain (its calls' positions, the link before it), so every run is the one the pass would make.
     */
    private int resnetBlockKernel(ResnetOp o) {
        if (!fuseResnetBlocks || o.w1Krsc() == 0 || o.w2Krsc() == 0
                || !resnetBlockFits(o.h(), o.wd(), o.c(), o.groups(), o.type())) {
            return 0;
        }
        String key = "resnet,n=" + o.n() + ",hw=" + o.h() + "x" + o.wd() + ",c=" + o.c() + ",g=" + o.groups()
                + (o.add() != 0 ? ",add" : "") + (o.b1() != 0 || o.b2() != 0 ? ",biased" : "") + "," + o.type().label();
        return chooseWithChainReset(key, resnetCandidates(o.c(), o.groups()), () -> resnetApart(o, o.y()),
                kernel -> resnetFused(o, o.y(), kernel),
                ref -> resnetApart(o, ref), o.y(), (long) o.n() * o.h() * o.wd() * o.c(), o.type(), o.what());
    }

    /**
     * A whole resnet block's timed choice: the one launch ({@code fused}, writing y) against the two calls the pass
     * would make ({@code apart}; {@code apartInto} writes the check's reference instead of y), y's {@code elems}
     * values compared at y. Each of the two calls' runs starts from the block's state of the statistics chain (its
     * calls' positions, the link before it), so every run is the one the pass would make; the state is restored after.
     */
    private int chooseWithChainReset(String key, List<Candidate> candidates, Runnable apart, IntConsumer fused,
                                     LongConsumer apartInto, long y, long elems, Precision type,
                                     Supplier<String> what) {
        if (candidates.isEmpty()) {
            return 0;
        }
        Link before = last;
        int position = normConvsInPass;
        long seq = opSeq, given = normConvsGiven, left = normConvStatsLeft, unfused = normConvsUnfused;
        Runnable reset = () -> {
            last = before;
            normConvsInPass = position;
            opSeq = seq;
        };
        try {
            return timedChoice(key, "norms and convolutions apart", candidates, kernel -> {
                if (kernel == 0) {
                    reset.run();
                    apart.run();
                } else {
                    fused.accept(kernel);
                }
            }, (kernel, tmp) -> {
                long ref = tmp.allocate(elems * type.bytes, "resnet block check");
                reset.run();
                apartInto.accept(ref);
                fused.accept(kernel);  // y: the candidate's, last
                return agrees(y, ref, elems, type, tmp, what, "the resnet block in one launch " + key,
                        "the norms and convolutions apart for this shape");
            });
        } finally {
            reset.run();
            normConvsGiven = given;
            normConvStatsLeft = left;
            normConvsUnfused = unfused;
        }
    }

    /**
     * The one-launch candidates for a block of c channels in the given groups: a cluster of 8 blocks a sample (kernel
     * 1), and of 16 (kernel 2: non-portable, half the weights and work a block; the library refuses it where no such
     * cluster fits the device, and the choice records that) where its blocks' c / 16 channels are whole groups. Only
     * the sizes {@link #resnetClusters} lists.
     */
    private List<Candidate> resnetCandidates(int c, int groups) {
        List<Candidate> list = new ArrayList<>();
        for (int size : resnetClusters) {
            if (size == 8) {
                list.add(new Candidate(1, "one launch"));
            } else if (size == 16 && (c / 16) % (c / groups) == 0) {
                list.add(new Candidate(2, "one launch, 16 blocks"));
            }
        }
        return list;
    }

    private static int clusterOf(int kernel) {
        return kernel == 2 ? 16 : 8;
    }

    /** The cluster sizes the resnet blocks' choices time (tests narrow it to one). */
    int[] resnetClusters = {8, 16};

    /**
     * Whether {@code onestep_resnet_block_typed} has an instance for the shape: fp16 or bf16, c 128 or 256, h w 16 or
     * 64, c / groups a multiple of 8 that divides c / 8 (a block's channels are whole groups of norm2).
     */
    public static boolean resnetBlockFits(int h, int wd, int c, int groups, Precision type) {
        int cg = groups > 0 && c % groups == 0 ? c / groups : 0;
        return type != Precision.FP32 && (c == 128 || c == 256) && (h * wd == 16 || h * wd == 64) && cg != 0
                && cg % 8 == 0 && (c / 8) % cg == 0;
    }

    /**
     * Whether {@link #resnetBlock} may run as one launch where {@link #resnetBlockKernel} chose it. Off here;
     * {@link CudaDevice} turns it on (unless {@code -Donestep.cuda.fuseResnet=false}), {@link EmulatedDevice} with its
     * candidates.
     */
    public void fuseResnetBlocks(boolean on) {
        fuseResnetBlocks = on;
    }

    /** Whether {@link #resnetBlock} may run as one launch (its timed choice decides per shape). */
    public boolean fusesResnetBlocks() {
        return fuseResnetBlocks;
    }

    private boolean fuseResnetBlocks;

    /**
     * Group norm (+ SiLU, the time modulation scale/shift, and the pre-add x' = (x + xBias) + (add + addBias); each of
     * those pointers may be 0) by {@code onestep_groupnorm_forward_add_kernel_typed}, mean and rstd fp32: kernel 0 (a
     * statistics kernel and a normalize kernel above 2^20 values, one kernel below) or 1 (the slab kernel, x read once),
     * as {@link #groupNormKernel} chose for the shape.
     */
    public final void groupNorm(long x, long xBias, long add, long addBias, long gamma, long beta, long scale,
                                long shift, long y, long mean, long rstd, int n, int hw, int c, int groups, float eps,
                                boolean silu, Precision type, Supplier<String> what) {
        int kernel = groupNormKernel(x, xBias, add, addBias, gamma, beta, scale, shift, y, mean, rstd, n, hw, c, groups,
                eps, silu, type, what);
        groupNorm(x, xBias, add, addBias, gamma, beta, scale, shift, y, mean, rstd, n, hw, c, groups, eps, silu, kernel,
                type, what);
    }

    /** {@link #groupNorm} with the kernel given. */
    public final void groupNorm(long x, long xBias, long add, long addBias, long gamma, long beta, long scale,
                                long shift, long y, long mean, long rstd, int n, int hw, int c, int groups, float eps,
                                boolean silu, int kernel, Precision type, Supplier<String> what) {
        check(onestep_groupnorm_forward_add_kernel_typed(x, xBias, add, addBias, gamma, beta, scale, shift, y, mean, rstd,
                n, hw, c, groups, eps, silu ? 1 : 0, kernel, type.code, stream), "groupNorm", what);
    }

    /**
     * Group norm (+ SiLU) of the channel concatenation [a + aBias, b + bBias] (either bias 0), which it also writes to
     * cat, by {@code onestep_groupnorm_concat_kernel_typed}, mean and rstd fp32: kernel 0 (the default) or 2 (the
     * cluster kernel), as {@link #groupNormConcatKernel} chose for the shape.
     */
    public final void groupNormConcat(long a, long aBias, long b, long bBias, long gamma, long beta, long cat, long y,
                                      long mean, long rstd, int n, int hw, int ca, int cb, int groups, float eps,
                                      boolean silu, Precision type, Supplier<String> what) {
        int kernel = groupNormConcatKernel(a, aBias, b, bBias, gamma, beta, cat, y, mean, rstd, n, hw, ca, cb, groups,
                eps, silu, type, what);
        groupNormConcat(a, aBias, b, bBias, gamma, beta, cat, y, mean, rstd, n, hw, ca, cb, groups, eps, silu, kernel,
                type, what);
    }

    /** {@link #groupNormConcat} with the kernel given. */
    public final void groupNormConcat(long a, long aBias, long b, long bBias, long gamma, long beta, long cat, long y,
                                      long mean, long rstd, int n, int hw, int ca, int cb, int groups, float eps,
                                      boolean silu, int kernel, Precision type, Supplier<String> what) {
        check(onestep_groupnorm_concat_kernel_typed(a, aBias, b, bBias, gamma, beta, cat, y, mean, rstd, n, hw, ca, cb,
                groups, eps, silu ? 1 : 0, kernel, type.code, stream), silu ? "groupNormSiluConcat" : "groupNormConcat",
                what);
    }

    /**
     * {@code y = conv2d(silu(groupNorm(x')), w) + bias + z} with {@code x' = (x + xBias) + (add + addBias)} (each term
     * 0 for none; z 0 for none): a ResnetBlock2D's norm1 and conv1, or norm2 and conv2 with its residual, at inference.
     * Where the shape's timed choice ({@link #normConvConfig}) took it, one launch of our implicit GEMM with the group
     * norm as its prologue ({@code onestep_groupnorm_conv2d_igemm_typed}: the normalized tensor is never stored, and
     * g, mean and rstd are left as they were); else the two ops, {@link #groupNorm} into g (with mean and rstd) and
     * {@link #conv2d} or {@link #conv2dResidual} from it, each with its own timed choices.
     */
    public final void groupNormConv(long x, long xBias, long add, long addBias, long gamma, long beta, int groups,
                                    float eps, boolean silu, long g, long mean, long rstd, long w, long wKrsc,
                                    long bias, long z, long y, int n, int h, int wd, int cin, int kh, int kw, int cout,
                                    int stride, int padding, Precision type, Scratch scratch, Supplier<String> what) {
        NormConv op = new NormConv(x, xBias, add, addBias, gamma, beta, groups, eps, silu, g, mean, rstd, w, wKrsc,
                bias, z, y, n, h, wd, cin, kh, kw, cout, stride, padding, type, what);
        Link prev = last;
        last = null;
        String at = (normConvsInPass++) + "|" + normConvKey(op);
        boolean chains = chainsNormConvs();
        // This call as the reader of the last one's statistics, where it reads that one's y right after it.
        int given = 0;
        long statsIn = 0;
        if (chains && prev != null && prev.seq() == opSeq - 1 && prev.y() == x && readsStats(op)) {
            boolean fresh = !choices.containsKey(normConvKey(op) + ",given");
            given = givenConfig(op, prev);
            if (given != 0) {
                wanted.add(prev.at());
                statsIn = prev.stats() != 0 ? prev.stats() : restat(prev);
                if (statsIn == 0) {
                    given = 0;  // inside a capture, where the producer did not leave them: the own route
                }
            } else {
                wanted.remove(prev.at());
                if (fresh && !capturing) {
                    prev.asRan().accept(scratch);  // the timing's last producer run may have left other bits in x
                }
            }
        }
        // This call as a producer of statistics for the next, where a reader took them in an earlier run.
        long statsBytes = statsBytes(op.n(), op.h(), op.wd(), op.kh(), op.kw(), op.cout(), op.stride(), op.padding());
        long statsOut = chains && leavesStats(op) && wanted.contains(at) ? statsBuffer(at, statsBytes) : 0;
        Route route;
        if (given != 0) {
            normConvsGiven++;
            long in = statsIn;
            int cfg = given;
            route = new Route(s -> givenNormConv(op, in, cfg, 0), buf -> givenNormConv(op, in, cfg, buf));
        } else {
            int config = normConvConfig(op);
            if (config == 0) {
                normConvsUnfused++;
                route = new Route(s -> unfusedNormConv(op, s), buf -> unfusedNormConvStats(op, buf));
            } else {
                route = new Route(s -> fusedNormConv(op, config), buf -> givenNormConv(op, 0, config, buf));
            }
        }
        produce(route, statsOut, scratch, chains && leavesStats(op), y, at, statsBytes);
    }

    /**
     * Runs a call's route, leaving its output's statistics in statsOut where that is not 0, and, where the call can
     * leave them ({@code leaves}), makes it the link the next call may read.
     */
    private void produce(Route route, long statsOut, Scratch scratch, boolean leaves, long y, String at,
                         long statsBytes) {
        if (statsOut != 0) {
            normConvStatsLeft++;
            route.withStats().accept(statsOut);
        } else {
            route.asRan().accept(scratch);
        }
        if (leaves) {
            last = new Link(y, opSeq, at, statsBytes,
                    statsOut != 0 ? s -> route.withStats().accept(statsOut) : route.asRan(), route.withStats(),
                    statsOut);
        }
    }

    // ---- group norm statistics left by the producer (twenty-fourth session) ---------------------------------
    //
    // A pass's ResnetBlock2Ds chain their groupNormConv calls: conv1's output is norm2's input, conv2's the next
    // block's norm1's (or an attention block's norm's). Each reader's group norm needs statistics of its whole sample,
    // which the group norm prologue recomputed in every block of its launch (it lost every timed choice on an H200).
    // Here the producing call leaves per-channel statistics of its output in its epilogue
    // (onestep_conv2d_igemm_stats_typed, onestep_groupnorm_conv2d_igemm_stats_typed), and the reader merges them,
    // shifted by its own pre-add terms, instead of launching a group norm or reading its sample in every block.
    //
    // A reader takes them only from the call right before it in the pass (no op in between, so nothing else wrote its
    // x) whose y is its x. Whether it does is a timed choice per reader shape (key ",given"), made on its first use
    // outside a capture: the producer re-run as it ran and the reader's own route, against the producer re-run leaving
    // statistics and the reader on them (so the epilogue's cost is counted), and kept if faster and in agreement. A
    // producer leaves statistics where a reader took them in an earlier run of the pass: it cannot know its reader, so
    // it learns it by its position among the pass's groupNormConv calls (the same in the pass's measuring run and its
    // capture, whose addresses differ). A wrong guess costs only time: a reader uses statistics only from its
    // producer's launch in this run.

    /** A groupNormConv launch's routes: as it ran (its scratch), and leaving its output's statistics in a buffer. */
    private record Route(java.util.function.Consumer<Scratch> asRan, java.util.function.LongConsumer withStats) {
    }

    /**
     * The last groupNormConv (or groupNormConcatConv) launched in a pass: its output, the op it ran in
     * ({@link #opBoundary}), its position in the pass, its statistics' size, how to run it again (as it ran; leaving
     * statistics), and the statistics it left (0: none).
     */
    private record Link(long y, long seq, String at, long statsBytes, java.util.function.Consumer<Scratch> asRan,
                        java.util.function.LongConsumer withStats, long stats) {
    }

    private Link last;
    private long opSeq;
    private int normConvsInPass;
    private boolean inPass;
    private boolean chainNormConvs = !"false".equalsIgnoreCase(System.getProperty("onestep.cuda.chainNormStats"));
    /** Producers (by position in their pass) whose reader took their statistics. */
    private final java.util.Set<String> wanted = new java.util.HashSet<>();
    /** Each producer position's statistics buffer, allocated outside captures and kept while the device lives. */
    private final java.util.Map<String, Long> statsBuffers = new java.util.HashMap<>();
    private long normConvsGiven;
    private long normConvStatsLeft;

    /** An op of the backend begins (CudaOps runs every op through this): a reader chains only to the op before it. */
    public void opBoundary() {
        opSeq++;
    }

    /** A pass's run begins (true) or ends: its groupNormConv calls count from 0 again, and may chain. */
    public void pass(boolean started) {
        inPass = started;
        normConvsInPass = 0;
        last = null;
    }

    /**
     * Turns the statistics chain on or off ({@code -Donestep.cuda.chainNormStats=false}: never; for timing it against
     * the group norm launches).
     */
    public void chainNormConvs(boolean on) {
        chainNormConvs = on;
    }

    /** groupNormConv calls that read their statistics from the call before them (timing runs not counted). */
    public long normConvsGiven() {
        return normConvsGiven;
    }

    /** groupNormConv calls that left their output's statistics for the call after them. */
    public long normConvStatsLeft() {
        return normConvStatsLeft;
    }

    private boolean chainsNormConvs() {
        return chainNormConvs && inPass && ownConvolutions;
    }

    /**
     * Whether op can leave its output's statistics: our implicit GEMM takes it (fp16/bf16, KRSC weights), its output
     * comes in runs of 16 pixels, and it can run again with the same result (its y is none of its inputs).
     */
    private boolean leavesStats(NormConv o) {
        long hw = outElems(1, o.h(), o.wd(), o.kh(), o.kw(), 1, o.stride(), o.padding());
        return igemmTakes(o.x(), o.wKrsc(), o.cin(), o.type()) && o.g() % 16 == 0 && hw % 16 == 0
                && o.y() != o.x() && o.y() != o.z() && o.y() != o.add() && o.y() != o.xBias() && o.y() != o.g();
    }

    /** Whether op can read given statistics: its input in runs of 16 pixels, y apart from its operands. */
    private boolean readsStats(NormConv o) {
        return igemmTakes(o.x(), o.wKrsc(), o.cin(), o.type()) && (long) o.h() * o.wd() % 16 == 0 && o.y() != o.x()
                && o.y() != o.add() && o.y() != o.z();
    }

    /** Bytes of a convolution output's per-channel statistics: (n, Ho Wo / 16, cout) pairs of floats. */
    private static long statsBytes(int n, int h, int wd, int kh, int kw, int cout, int stride, int padding) {
        return outElems(n, h, wd, kh, kw, cout, stride, padding) / 16 * 8;
    }

    /** Producer position {@code at}'s statistics buffer, allocated on first use outside a capture; 0 inside one. */
    private long statsBuffer(String at, long bytes) {
        Long b = statsBuffers.get(at);
        if (b == null) {
            if (capturing) {
                return 0;
            }
            b = malloc(bytes, () -> "group norm statistics left at " + at);
            statsBuffers.put(at, b);
        }
        return b;
    }

    /**
     * prev run again leaving its statistics, their buffer: outside a capture only (a pass's first run, before its
     * producers learn that their readers take them). Inside one, 0: a second launch of the producer would cost the
     * graph a node, so the reader runs its own route.
     */
    private long restat(Link prev) {
        if (capturing) {
            return 0;
        }
        long buf = statsBuffer(prev.at(), prev.statsBytes());
        prev.withStats().accept(buf);
        return buf;
    }

    /** The tile a plain convolution of op's shape was timed to (its choice key), or 0 (the library's pick). */
    private int convTile(NormConv o) {
        return convTile((o.z() == 0 ? "conv," : "residual,") + shapeKey(o.n(), o.h(), o.wd(), o.cin(), o.kh(), o.kw(),
                o.cout(), o.stride(), o.padding(), o.type()) + biasKey(o.bias()));
    }

    private int convTile(String key) {
        Choice c = choices.get(key);
        return c != null ? c.config() : 0;
    }

    /** The two ops, the convolution by our implicit GEMM leaving its output's per-channel statistics in buf. */
    private void unfusedNormConvStats(NormConv o, long buf) {
        groupNorm(o.x(), o.xBias(), o.add(), o.addBias(), o.gamma(), o.beta(), 0, 0, o.g(), o.mean(), o.rstd(), o.n(),
                o.h() * o.wd(), o.cin(), o.groups(), o.eps(), o.silu(), o.type(), o.what());
        check(onestep_conv2d_igemm_stats_typed(o.g(), o.wKrsc(), o.bias(), o.z(), o.y(), o.n(), o.h(), o.wd(), o.cin(),
                o.kh(), o.kw(), o.cout(), o.stride(), o.padding(), convTile(o), buf, o.cout(), o.type().code, stream),
                o.z() == 0 ? "conv2d" : "conv2dResidual", o.what());
        igemmLaunches++;
    }

    /**
     * Tile config with the group norm prologue on x's statistics {@code in} (0: its own, from x), leaving y's in
     * {@code out} (0: none).
     */
    private void givenNormConv(NormConv o, long in, int config, long out) {
        check(onestep_groupnorm_conv2d_igemm_stats_typed(o.x(), o.xBias(), o.add(), o.addBias(), o.gamma(), o.beta(),
                o.groups(), o.eps(), o.silu() ? 1 : 0, in, o.wKrsc(), o.bias(), o.z(), o.y(), o.n(), o.h(), o.wd(),
                o.cin(), o.kh(), o.kw(), o.cout(), o.stride(), o.padding(), config, out, out != 0 ? o.cout() : 0,
                o.type().code, stream), o.silu() ? "groupNormSiluConv2d" : "groupNormConv2d", o.what());
        igemmLaunches++;
    }

    /** The reader's own route (as {@link #groupNormConv} runs it without given statistics). */
    private void ownNormConv(NormConv o, Scratch scratch) {
        int config = normConvConfig(o);
        if (config == 0) {
            unfusedNormConv(o, scratch);
        } else {
            fusedNormConv(o, config);
        }
    }

    /**
     * The tile op reads prev's statistics with, or 0 for its own route: timed on the shape's first use outside a
     * capture ({@link #chooseTile}), each route with the producer re-run before it (as it ran, or leaving its
     * statistics), so the epilogue's cost counts.
     */
    private int givenConfig(NormConv op, Link prev) {
        String key = normConvKey(op) + ",given";
        return tileChoice(key, "own route", (config, tmp) -> givenAgrees(op, prev, config, tmp), () -> {
            long buf = statsBuffer(prev.at(), prev.statsBytes());
            return chooseTile(key, "group norm on the producer's statistics", "given", "own route",
                    "own route faster", s -> {
                        prev.asRan().accept(s);
                        ownNormConv(op, s);
                    }, config -> {
                        prev.withStats().accept(buf);
                        givenNormConv(op, buf, config, 0);
                    }, (config, tmp) -> givenAgrees(op, prev, config, tmp), true);
        });
    }

    /** Tile config on prev's statistics into y, and whether y agrees with the own route's ({@link #agrees}). */
    private boolean givenAgrees(NormConv op, Link prev, int config, Temporary tmp) {
        long elems = outElems(op.n(), op.h(), op.wd(), op.kh(), op.kw(), op.cout(), op.stride(), op.padding());
        long ref = tmp.allocate(elems * op.type().bytes, "group norm statistics check");
        prev.asRan().accept(tmp);
        ownNormConv(op.into(ref), tmp);
        long buf = statsBuffer(prev.at(), prev.statsBytes());
        prev.withStats().accept(buf);
        givenNormConv(op, buf, config, 0);  // y: the candidate's, last
        return agrees(op.y(), ref, elems, op.type(), tmp, op.what(),
                "the group norm on the producer's statistics " + normConvKey(op),
                "the group norm and the convolution for this shape");
    }

    private long normConvsUnfused;

    /**
     * Calls of {@link #groupNormConv} that ran as the two ops (two launches or more): shapes our convolution does not
     * take, the fused route slower or disagreeing, or a shape's first use inside a capture. Timing runs not counted.
     */
    public long normConvsUnfused() {
        return normConvsUnfused;
    }

    /** The operands of one {@link #groupNormConv} (device pointers; 0 for an absent term). */
    private record NormConv(long x, long xBias, long add, long addBias, long gamma, long beta, int groups, float eps,
                            boolean silu, long g, long mean, long rstd, long w, long wKrsc, long bias, long z, long y,
                            int n, int h, int wd, int cin, int kh, int kw, int cout, int stride, int padding,
                            Precision type, Supplier<String> what) {
        /** The same operands with the result into {@code y2}. */
        NormConv into(long y2) {
            return new NormConv(x, xBias, add, addBias, gamma, beta, groups, eps, silu, g, mean, rstd, w, wKrsc, bias,
                    z, y2, n, h, wd, cin, kh, kw, cout, stride, padding, type, what);
        }
    }

    /** The choices' key of a {@link #groupNormConv}: the convolution's shape, the groups and the terms present. */
    private String normConvKey(NormConv o) {
        return "normconv," + shapeKey(o.n(), o.h(), o.wd(), o.cin(), o.kh(), o.kw(), o.cout(), o.stride(), o.padding(),
                o.type()) + ",g=" + o.groups() + (o.silu() ? ",silu" : "") + (o.xBias() != 0 || o.add() != 0
                ? ",pre-add" : "") + (o.z() != 0 ? ",residual" : "") + biasKey(o.bias());
    }

    /**
     * A convolution choice's bias term: on cuDNN a bias is a kernel of its own, in our implicit GEMM's epilogue it is
     * free, so a choice timed without one does not carry over to a call with one (the residual fallback's conv2d
     * with its bias shared conv1's key, timed with the bias deferred to its reader).
     */
    static String biasKey(long bias) {
        return bias != 0 ? ",bias" : "";
    }

    /** The two ops: the group norm into g, then the convolution from it. */
    private void unfusedNormConv(NormConv o, Scratch scratch) {
        groupNorm(o.x(), o.xBias(), o.add(), o.addBias(), o.gamma(), o.beta(), 0, 0, o.g(), o.mean(), o.rstd(), o.n(),
                o.h() * o.wd(), o.cin(), o.groups(), o.eps(), o.silu(), o.type(), o.what());
        if (o.z() == 0) {
            conv2d(o.g(), o.w(), o.wKrsc(), o.bias(), o.y(), o.n(), o.h(), o.wd(), o.cin(), o.kh(), o.kw(), o.cout(),
                    o.stride(), o.padding(), o.type(), scratch, o.what());
        } else {
            conv2dResidual(o.g(), o.w(), o.wKrsc(), o.bias(), o.z(), o.y(), o.n(), o.h(), o.wd(), o.cin(), o.kh(),
                    o.kw(), o.cout(), o.stride(), o.padding(), o.type(), scratch, o.what());
        }
    }

    /** One launch: tile {@code config} with the group norm as its prologue. */
    private void fusedNormConv(NormConv o, int config) {
        check(onestep_groupnorm_conv2d_igemm_typed(o.x(), o.xBias(), o.add(), o.addBias(), o.gamma(), o.beta(),
                o.groups(), o.eps(), o.silu() ? 1 : 0, o.wKrsc(), o.bias(), o.z(), o.y(), o.n(), o.h(), o.wd(), o.cin(),
                o.kh(), o.kw(), o.cout(), o.stride(), o.padding(), config, o.type().code, stream), "groupNormConv2d",
                o.what());
        igemmLaunches++;
    }

    /**
     * The tile {@link #groupNormConv} runs a shape's fused route with, or 0 for the two ops. On the shape's first use
     * outside a capture the two ops (whose timing's warm-up runs make their own choices) and each tile that takes the
     * shape are timed back to back ({@link #timeMs}; the ops' scratch lent by a temporary, so a pass's runs make
     * the same allocations every time), and the fastest tile is kept if it is faster by {@link #CHOICE_MARGIN} (or
     * {@link #forceChoice} says so) and its y agrees with the two ops'. Only with our convolutions on
     * ({@link #ownConvolutions}), on fp16/bf16 and the KRSC weights our implicit GEMM reads, and y apart from x, add
     * and z; the library refuses the tiles whose rows do not fit one sample and the cluster tiles below sm_90.
     */
    private int normConvConfig(NormConv op) {
        if (!ownConvolutions || !igemmTakes(op.x(), op.wKrsc(), op.cin(), op.type()) || op.y() == op.x()
                || op.y() == op.add() || op.y() == op.z()) {
            return 0;
        }
        String key = normConvKey(op);
        return tileChoice(key, "group norm and convolution", (config, tmp) -> normConvAgrees(op, config, tmp),
                () -> chooseNormConv(op, key));
    }

    private Choice chooseNormConv(NormConv op, String key) {
        return chooseFused(key, "group norm prologue", "group norm and convolution", "two ops faster",
                scratch -> unfusedNormConv(op, scratch), config -> fusedNormConv(op, config),
                (config, tmp) -> normConvAgrees(op, config, tmp));
    }

    /** A fused launch's choice against the ops it replaces ({@code apart}): {@link #chooseTile}, "fused faster". */
    private Choice chooseFused(String key, String candidateName, String incumbent, String slower,
                               java.util.function.Consumer<Scratch> apart, java.util.function.IntConsumer fused,
                               java.util.function.BiPredicate<Integer, Temporary> agrees) {
        return chooseTile(key, candidateName, "fused", incumbent, slower, apart, fused, agrees, true);
    }

    /** Runs tile {@code config} fused into y and whether y agrees with the two ops' result ({@link #agrees}). */
    private boolean normConvAgrees(NormConv op, int config, Temporary tmp) {
        long elems = outElems(op.n(), op.h(), op.wd(), op.kh(), op.kw(), op.cout(), op.stride(), op.padding());
        long ref = tmp.allocate(elems * op.type().bytes, "group norm convolution check");
        unfusedNormConv(op.into(ref), tmp);
        fusedNormConv(op, config);  // y: the candidate's, last
        return agrees(op.y(), ref, elems, op.type(), tmp, op.what(), "the group norm prologue convolution " + normConvKey(op),
                "the group norm and the convolution for this shape");
    }

    /**
     * A down block's ResnetBlock2D entry at inference where it has a conv_shortcut: {@code y = conv2d(silu(groupNorm(x)),
     * w) + bias} (conv1) and {@code sc = conv2d(x, wSc)} (the 1x1 shortcut without its bias). Where the shape's timed
     * choice took it, one launch of our implicit GEMM ({@code onestep_groupnorm_conv2d_shortcut_igemm_typed}: conv1
     * with the group norm as its prologue, the shortcut by the launch's other blocks); g, mean and rstd are then left
     * as they were. Else {@link #groupNormConv}'s two ops and the shortcut's {@link #conv2d}. x carries no pending
     * bias here (with one, the caller runs the ops itself, each taking it its own way).
     */
    public final void groupNormConvShortcut(long x, long gamma, long beta, int groups, float eps,
                                            boolean silu, long g, long mean, long rstd, long w, long wKrsc, long bias,
                                            long wSc, long wScKrsc, long y, long sc, int n, int h, int wd, int cin,
                                            int kh, int kw, int cout, int stride, int padding, Precision type,
                                            Scratch scratch, Supplier<String> what) {
        NormConvShortcut op = new NormConvShortcut(new NormConv(x, 0, 0, 0, gamma, beta, groups, eps, silu, g, mean,
                rstd, w, wKrsc, bias, 0, y, n, h, wd, cin, kh, kw, cout, stride, padding, type, what), wSc, wScKrsc,
                sc);
        int config = normConvShortcutConfig(op);
        if (config == 0) {
            normConvsUnfused++;
            unfusedNormConvShortcut(op, scratch);
        } else {
            fusedNormConvShortcut(op, config);
        }
    }

    /** The operands of one {@link #groupNormConvShortcut}: conv1's as a {@link NormConv}, and the shortcut's. */
    private record NormConvShortcut(NormConv conv1, long wSc, long wScKrsc, long sc) {
        NormConvShortcut into(long y2, long sc2) {
            return new NormConvShortcut(conv1.into(y2), wSc, wScKrsc, sc2);
        }
    }

    /** The group norm and conv1 ({@link #unfusedNormConv}), then the shortcut of x. */
    private void unfusedNormConvShortcut(NormConvShortcut op, Scratch scratch) {
        NormConv o = op.conv1();
        unfusedNormConv(o, scratch);
        conv2d(o.x(), op.wSc(), op.wScKrsc(), 0, op.sc(), o.n(), o.h(), o.wd(), o.cin(), 1, 1, o.cout(), 1, 0, o.type(),
                scratch, o.what());
    }

    /** One launch, tile {@code config}: conv1 with the prologue, and the shortcut. */
    private void fusedNormConvShortcut(NormConvShortcut op, int config) {
        NormConv o = op.conv1();
        check(onestep_groupnorm_conv2d_shortcut_igemm_typed(o.x(), o.xBias(), o.gamma(), o.beta(), o.groups(), o.eps(),
                o.silu() ? 1 : 0, o.wKrsc(), o.bias(), o.y(), op.wScKrsc(), op.sc(), o.n(), o.h(), o.wd(), o.cin(),
                o.kh(), o.kw(), o.cout(), o.stride(), o.padding(), config, o.type().code, stream),
                o.silu() ? "groupNormSiluConvShortcut2d" : "groupNormConvShortcut2d", o.what());
        igemmLaunches++;
    }

    /**
     * The tile {@link #groupNormConvShortcut} runs its fused launch with, or 0 for the ops apart: timed like
     * {@link #normConvConfig}. Only where our implicit GEMM takes conv1 and the shortcut (fp16/bf16, their KRSC
     * weights), conv1 keeps x's size (the launch's two convolutions share their output pixels), and y and sc lie apart
     * from x.
     */
    private int normConvShortcutConfig(NormConvShortcut op) {
        NormConv o = op.conv1();
        if (!ownConvolutions || !igemmTakes(o.x(), o.wKrsc(), o.cin(), o.type()) || op.wScKrsc() == 0
                || op.wScKrsc() % 16 != 0 || o.stride() != 1 || o.kh() != 2 * o.padding() + 1
                || o.kw() != 2 * o.padding() + 1 || o.y() == o.x() || op.sc() == o.x() || op.sc() == o.y()) {
            return 0;
        }
        String key = normConvKey(o) + ",shortcut";
        return tileChoice(key, "group norm and convolutions", (config, tmp) -> normConvShortcutAgrees(op, config, tmp),
                () -> chooseFused(key, "group norm prologue with the shortcut", "group norm and convolutions",
                        "ops apart faster", scratch -> unfusedNormConvShortcut(op, scratch),
                        config -> fusedNormConvShortcut(op, config),
                        (config, tmp) -> normConvShortcutAgrees(op, config, tmp)));
    }

    /** Runs tile {@code config} into y and sc and whether both agree with the ops apart ({@link #agrees}). */
    private boolean normConvShortcutAgrees(NormConvShortcut op, int config, Temporary tmp) {
        NormConv o = op.conv1();
        long elems = outElems(o.n(), o.h(), o.wd(), o.kh(), o.kw(), o.cout(), o.stride(), o.padding());
        long ref = tmp.allocate(elems * o.type().bytes, "group norm convolution with shortcut check");
        long scRef = tmp.allocate(elems * o.type().bytes, "its shortcut's check");
        unfusedNormConvShortcut(op.into(ref, scRef), lender(tmp));
        fusedNormConvShortcut(op, config);  // y and sc: the candidate's, last
        String what = "the group norm prologue convolution with its shortcut " + normConvKey(o);
        return agrees(o.y(), ref, elems, o.type(), tmp, o.what(), what, "the ops apart for this shape")
                && agrees(op.sc(), scRef, elems, o.type(), tmp, o.what(), what + " (shortcut)",
                "the shortcut's convolution for this shape");
    }

    /**
     * An up block's ResnetBlock2D entry at inference: {@code y = conv2d(silu(groupNorm(cat)), w) + bias} (conv1) and
     * {@code sc = conv2d(cat, wSc)} (the 1x1 conv_shortcut without its bias; wSc 0: none) with {@code cat = [a + aBias,
     * b + bBias]} along channels (either bias 0). Where the shape's timed choice ({@link #normConcatConvConfig}) took
     * it, one launch of our implicit GEMM gathering cat from a and b ({@code
     * onestep_groupnorm_concat_conv2d_igemm_typed}): conv1 with the group norm as its prologue, and the shortcut by
     * the launch's other blocks. Neither cat nor the normalized tensor is stored, and cat, g, mean and rstd are left as
     * they were. Else the three ops: {@link #groupNormConcat} into cat and g, {@link #conv2d} of g and of cat, each
     * with its own timed choices.
     */
    public final void groupNormConcatConv(long a, long aBias, long b, long bBias, long gamma, long beta, int groups,
                                          float eps, boolean silu, long cat, long g, long mean, long rstd, long w,
                                          long wKrsc, long bias, long wSc, long wScKrsc, long y, long sc, int n, int h,
                                          int wd, int ca, int cb, int kh, int kw, int cout, int stride, int padding,
                                          Precision type, Scratch scratch, Supplier<String> what) {
        NormConcatConv op = new NormConcatConv(a, aBias, b, bBias, gamma, beta, groups, eps, silu, cat, g, mean, rstd,
                w, wKrsc, bias, wSc, wScKrsc, y, sc, n, h, wd, ca, cb, kh, kw, cout, stride, padding, type, what);
        last = null;  // a reader of a and b: no statistics given (its statistics are of the concatenation)
        // An up block's conv1, whose output norm2 reads next: a producer of statistics as groupNormConv's are.
        String at = (normConvsInPass++) + "|" + normConcatConvKey(op);
        boolean leaves = chainsNormConvs() && concatLeavesStats(op);
        long statsBytes = statsBytes(n, h, wd, kh, kw, cout, stride, padding);
        long statsOut = leaves && wanted.contains(at) ? statsBuffer(at, statsBytes) : 0;
        int config = normConcatConvConfig(op);
        Route route;
        if (config == 0) {
            normConvsUnfused++;
            route = new Route(s -> unfusedNormConcatConv(op, s), buf -> unfusedNormConcatConvStats(op, buf, scratch));
        } else {
            route = new Route(s -> fusedNormConcatConv(op, config), buf -> fusedNormConcatConvStats(op, config, buf));
        }
        produce(route, statsOut, scratch, leaves, y, at, statsBytes);
    }

    /**
     * Whether an up block's entry can leave conv1's output statistics ({@link #leavesStats}): our implicit GEMM takes
     * conv1 (of g apart, of a and b fused), its output comes in runs of 16 pixels, and it can run again with the same
     * results (its outputs are none of its inputs).
     */
    private boolean concatLeavesStats(NormConcatConv o) {
        long hw = outElems(1, o.h(), o.wd(), o.kh(), o.kw(), 1, o.stride(), o.padding());
        long[] outs = {o.y(), o.sc(), o.cat(), o.g()};
        for (long out : outs) {
            if (out != 0 && (out == o.a() || out == o.b())) {
                return false;
            }
        }
        return igemmTakes(o.g(), o.wKrsc(), o.cin(), o.type()) && hw % 16 == 0 && o.y() != o.cat()
                && o.y() != o.g();
    }

    /** The three ops, conv1 by our implicit GEMM leaving its output's per-channel statistics in buf. */
    private void unfusedNormConcatConvStats(NormConcatConv o, long buf, Scratch scratch) {
        groupNormConcat(o.a(), o.aBias(), o.b(), o.bBias(), o.gamma(), o.beta(), o.cat(), o.g(), o.mean(), o.rstd(),
                o.n(), o.h() * o.wd(), o.ca(), o.cb(), o.groups(), o.eps(), o.silu(), o.type(), o.what());
        check(onestep_conv2d_igemm_stats_typed(o.g(), o.wKrsc(), o.bias(), 0, o.y(), o.n(), o.h(), o.wd(), o.cin(),
                o.kh(), o.kw(), o.cout(), o.stride(), o.padding(), convTile("conv," + shapeKey(o.n(), o.h(), o.wd(),
                o.cin(), o.kh(), o.kw(), o.cout(), o.stride(), o.padding(), o.type()) + biasKey(o.bias())), buf,
                o.cout(), o.type().code, stream), "conv2d", o.what());
        igemmLaunches++;
        if (o.wSc() != 0) {
            conv2d(o.cat(), o.wSc(), o.wScKrsc(), 0, o.sc(), o.n(), o.h(), o.wd(), o.cin(), 1, 1, o.cout(), 1, 0,
                    o.type(), scratch, o.what());
        }
    }

    /** One launch, tile config, leaving conv1's output statistics in buf. */
    private void fusedNormConcatConvStats(NormConcatConv o, int config, long buf) {
        check(onestep_groupnorm_concat_conv2d_igemm_stats_typed(o.a(), o.aBias(), o.b(), o.bBias(), o.gamma(),
                o.beta(), o.groups(), o.eps(), o.silu() ? 1 : 0, o.wKrsc(), o.bias(), 0, o.y(), o.wScKrsc(), o.sc(),
                o.n(), o.h(), o.wd(), o.ca(), o.cb(), o.kh(), o.kw(), o.cout(), o.stride(), o.padding(), config, buf,
                o.cout(), o.type().code, stream), o.silu() ? "groupNormSiluConcatConv2d" : "groupNormConcatConv2d",
                o.what());
        igemmLaunches++;
    }

    /** The operands of one {@link #groupNormConcatConv} (device pointers; 0 for an absent term). */
    private record NormConcatConv(long a, long aBias, long b, long bBias, long gamma, long beta, int groups, float eps,
                                 boolean silu, long cat, long g, long mean, long rstd, long w, long wKrsc, long bias,
                                 long wSc, long wScKrsc, long y, long sc, int n, int h, int wd, int ca, int cb, int kh,
                                 int kw, int cout, int stride, int padding, Precision type, Supplier<String> what) {
        /** The same operands with the results into {@code y2} and {@code sc2}. */
        NormConcatConv into(long y2, long sc2) {
            return new NormConcatConv(a, aBias, b, bBias, gamma, beta, groups, eps, silu, cat, g, mean, rstd, w, wKrsc,
                    bias, wSc, wScKrsc, y2, sc2, n, h, wd, ca, cb, kh, kw, cout, stride, padding, type, what);
        }

        int cin() {
            return ca + cb;
        }
    }

    /** The choices' key of a {@link #groupNormConcatConv}: conv1's shape, the split, the groups and the terms present. */
    private String normConcatConvKey(NormConcatConv o) {
        return "normcatconv," + shapeKey(o.n(), o.h(), o.wd(), o.cin(), o.kh(), o.kw(), o.cout(), o.stride(),
                o.padding(), o.type()) + ",ca=" + o.ca() + ",g=" + o.groups() + (o.silu() ? ",silu" : "")
                + (o.aBias() != 0 || o.bBias() != 0 ? ",biased" : "") + (o.wSc() != 0 ? ",shortcut" : "");
    }

    /** The three ops: the concatenating group norm into cat and g, conv1 of g, the shortcut of cat. */
    private void unfusedNormConcatConv(NormConcatConv o, Scratch scratch) {
        groupNormConcat(o.a(), o.aBias(), o.b(), o.bBias(), o.gamma(), o.beta(), o.cat(), o.g(), o.mean(), o.rstd(),
                o.n(), o.h() * o.wd(), o.ca(), o.cb(), o.groups(), o.eps(), o.silu(), o.type(), o.what());
        conv2d(o.g(), o.w(), o.wKrsc(), o.bias(), o.y(), o.n(), o.h(), o.wd(), o.cin(), o.kh(), o.kw(), o.cout(),
                o.stride(), o.padding(), o.type(), scratch, o.what());
        if (o.wSc() != 0) {
            conv2d(o.cat(), o.wSc(), o.wScKrsc(), 0, o.sc(), o.n(), o.h(), o.wd(), o.cin(), 1, 1, o.cout(), 1, 0,
                    o.type(), scratch, o.what());
        }
    }

    /** One launch, tile {@code config}: conv1 with the prologue and the shortcut, both gathering from a and b. */
    private void fusedNormConcatConv(NormConcatConv o, int config) {
        check(onestep_groupnorm_concat_conv2d_igemm_typed(o.a(), o.aBias(), o.b(), o.bBias(), o.gamma(), o.beta(),
                o.groups(), o.eps(), o.silu() ? 1 : 0, o.wKrsc(), o.bias(), 0, o.y(), o.wScKrsc(), o.sc(), o.n(),
                o.h(), o.wd(), o.ca(), o.cb(), o.kh(), o.kw(), o.cout(), o.stride(), o.padding(), config,
                o.type().code, stream), o.silu() ? "groupNormSiluConcatConv2d" : "groupNormConcatConv2d", o.what());
        igemmLaunches++;
    }

    /**
     * The tile {@link #groupNormConcatConv} runs its fused launch with, or 0 for the three ops: timed like
     * {@link #normConvConfig}, against the three ops. Only where our implicit GEMM reads both sources (fp16/bf16, the
     * KRSC weights of both convolutions, a, b and each source's width aligned to a 16-deep step), conv1 keeps its
     * input's size where there is a shortcut (the launch's two convolutions share their output pixels), and y and sc
     * lie apart from a and b.
     */
    private int normConcatConvConfig(NormConcatConv op) {
        boolean shortcutFits = op.wSc() == 0 || (op.wScKrsc() != 0 && op.wScKrsc() % 16 == 0 && op.stride() == 1
                && op.kh() == 2 * op.padding() + 1 && op.kw() == 2 * op.padding() + 1);
        if (!ownConvolutions || !igemmTakes(op.a(), op.wKrsc(), op.cin(), op.type()) || !concatGathers(op.b(),
                op.ca(), op.cb()) || !shortcutFits || op.y() == op.a() || op.y() == op.b()
                || (op.sc() != 0 && (op.sc() == op.a() || op.sc() == op.b()))) {
            return 0;
        }
        String key = normConcatConvKey(op);
        return tileChoice(key, "concatenating group norm and convolutions",
                (config, tmp) -> normConcatConvAgrees(op, config, tmp), () -> chooseNormConcatConv(op, key));
    }

    /** Whether our implicit GEMM can gather a concatenation's second source b (cb channels after ca). */
    private static boolean concatGathers(long b, int ca, int cb) {
        return b % 16 == 0 && ca % 16 == 0 && cb % 16 == 0 && ca > 0 && cb > 0;
    }

    private Choice chooseNormConcatConv(NormConcatConv op, String key) {
        return chooseFused(key, "group norm prologue over a and b", "concatenating group norm and convolutions",
                "ops apart faster", scratch -> unfusedNormConcatConv(op, scratch),
                config -> fusedNormConcatConv(op, config), (config, tmp) -> normConcatConvAgrees(op, config, tmp));
    }

    /** Runs tile {@code config} into y and sc and whether both agree with the three ops' ({@link #agrees}). */
    private boolean normConcatConvAgrees(NormConcatConv op, int config, Temporary tmp) {
        long elems = outElems(op.n(), op.h(), op.wd(), op.kh(), op.kw(), op.cout(), op.stride(), op.padding());
        long scElems = op.wSc() == 0 ? 0 : outElems(op.n(), op.h(), op.wd(), 1, 1, op.cout(), 1, 0);
        long ref = tmp.allocate(elems * op.type().bytes, "concatenating group norm convolution check");
        long scRef = scElems == 0 ? 0 : tmp.allocate(scElems * op.type().bytes, "its shortcut's check");
        unfusedNormConcatConv(op.into(ref, scRef), lender(tmp));
        fusedNormConcatConv(op, config);  // y and sc: the candidate's, last
        String what = "the group norm prologue convolution over a and b " + normConcatConvKey(op);
        String incumbent = "the concatenating group norm and the convolutions for this shape";
        return agrees(op.y(), ref, elems, op.type(), tmp, op.what(), what, incumbent)
                && (scElems == 0 || agrees(op.sc(), scRef, scElems, op.type(), tmp, op.what(), what + " (shortcut)",
                incumbent));
    }

    /** Launches of {@link #igemmConv} so far (timing runs included). */
    public long igemmLaunches() {
        return igemmLaunches;
    }

    // ---- timed choices between our candidate kernels and the routes they would replace ---------------------------

    /**
     * Whether convolutions may run our implicit GEMM ({@link #igemmConv}) where {@link #ownConv} chose it, and
     * attention the split-keys or the pipelined kernel where {@link #attentionKernel} did. Off here; {@link CudaDevice}
     * turns them on (unless {@code -Donestep.cuda.igemm=false} / {@code -Donestep.cuda.splitKeys=false} /
     * {@code -Donestep.cuda.pipelinedAttention=false}), {@link EmulatedDevice} in its timed mode. Shapes already timed
     * keep their verdicts and run the incumbent while this is off; it takes effect for passes captured from now on.
     */
    private boolean ownConvolutions;
    private boolean splitKeys;
    private boolean pipelinedAttention;
    private boolean slabGroupNorm;
    private boolean clusterGroupNorm;

    public void ownConvolutions(boolean on) {
        ownConvolutions = on;
    }

    public boolean ownsConvolutions() {
        return ownConvolutions;
    }

    public void splitKeys(boolean on) {
        splitKeys = on;
    }

    public void pipelinedAttention(boolean on) {
        pipelinedAttention = on;
    }

    /**
     * Whether group norms above 2^20 values may run the slab kernel where {@link #groupNormKernel} chose it. Off
     * here; {@link CudaDevice} turns it on (unless {@code -Donestep.cuda.slabGroupNorm=false}), {@link EmulatedDevice}
     * in its timed mode.
     */
    public void slabGroupNorm(boolean on) {
        slabGroupNorm = on;
    }

    /**
     * Whether group norms may run the cluster kernel (each group split over a thread block cluster; sm_90) where
     * {@link #groupNormKernel} chose it. Off here; {@link CudaDevice} turns it on (unless {@code
     * -Donestep.cuda.clusterGroupNorm=false}), {@link EmulatedDevice} in its timed mode.
     */
    public void clusterGroupNorm(boolean on) {
        clusterGroupNorm = on;
    }

    /**
     * Whether an attention block's attention, output projection and residual may run as one launch where
     * {@link #attentionResidualKernel} chose it. Off here; {@link CudaDevice} turns it on (unless {@code
     * -Donestep.cuda.fuseAttentionOut=false}), {@link EmulatedDevice} with its candidates.
     */
    public void fuseAttentionResidual(boolean on) {
        fuseAttentionResidual = on;
    }

    /** Whether {@link #attentionResidual} may run as one launch (its timed choice decides per shape). */
    public boolean fusesAttentionResidual() {
        return fuseAttentionResidual;
    }

    private boolean fuseAttentionResidual;

    /** Runs per timing in a choice (after the warm-up runs); the emulated device, whose clock says nothing, uses 1. */
    int choiceReps = 10;

    /**
     * Untimed runs before {@link #timeMs} times (at least one: it makes the scratch a route asks for outside the
     * capture); two on a GPU, where the second also finds the caches and clocks warm; one on the emulated device.
     */
    int timingWarmups = 2;

    /**
     * For tests: null decides each choice by time; TRUE takes the candidate wherever it agrees with the reference,
     * FALSE never takes it (both still time, check and record as usual).
     */
    Boolean forceChoice;

    /**
     * A candidate replaces its incumbent only if it is this much faster (3%) in the better of two rounds: one timing
     * of each side picked coin flips (on the H200, 2026-11-27, 12 of 720 verdicts were within 6%, and one shape's
     * verdict flipped between two devices of one process), and the incumbent (cuDNN, the ops apart, the default
     * kernel) is the route with the longer record.
     */
    static final float CHOICE_MARGIN = 0.03f;

    /** For tests: times a choice's work instead of {@link #timeMs} (null: timeMs with {@link #choiceReps}). */
    java.util.function.ToDoubleFunction<Runnable> choiceTimer;

    /** Milliseconds per run of one side of a timed choice. */
    private float timeChoice(Runnable work) {
        return choiceTimer != null ? (float) choiceTimer.applyAsDouble(work) : timeMs(work, choiceReps);
    }

    /**
     * The two sides' times after a second round, {candidate, incumbent}, where the first round has the candidate
     * faster (else the first round's): each side timed again, in the other order (incumbent first, as most first
     * rounds time it last), and each keeps the better of its two times.
     */
    private float[] confirmed(Runnable candidate, float candidateMs, Runnable incumbent, float incumbentMs) {
        if (forceChoice != null || !(candidateMs < incumbentMs)) {
            return new float[] {candidateMs, incumbentMs};
        }
        float i2 = timeChoice(incumbent), c2 = timeChoice(candidate);
        return new float[] {Math.min(candidateMs, c2), Math.min(incumbentMs, i2)};
    }

    /**
     * The verdict where the candidate was faster, but not by the margin. It names the incumbent first, so the summaries
     * that count "fused faster" or "one launch ... faster" verdicts do not count it.
     */
    private static String withinMargin(String incumbent, String candidate) {
        return incumbent + " kept (" + candidate + " faster by less than the " + Math.round(CHOICE_MARGIN * 100)
                + "% margin)";
    }

    /** Whether a candidate timed at {@code candidateMs} replaces an incumbent at {@code incumbentMs}. */
    private boolean takes(float candidateMs, float incumbentMs) {
        return forceChoice != null ? forceChoice : candidateMs < incumbentMs * (1 - CHOICE_MARGIN);
    }

    /**
     * Per shape, in first-use order: the timed choices between one of our kernels and the route it would replace
     * (convolutions: "conv," / "biased," / "residual," / "upsample," + the shape; attention: "attention," + it; group
     * norm: "groupnorm," / "groupnormconcat," + it; a group norm and the convolution it feeds: "normconv," + both).
     */
    private final java.util.Map<String, Choice> choices = new java.util.LinkedHashMap<>();

    /**
     * A shape's verdict between a candidate kernel of ours and the incumbent route: {@code config} >= 1 runs the
     * candidate (for convolutions, our implicit GEMM's tile {@code config}, with the group norm as its prologue for a
     * norm and convolution; for attention, the split-keys kernel 1 or the pipelined kernel 2; for group norm, the slab
     * kernel 1 or the cluster kernel 2), 0 keeps the incumbent (cuDNN, the portable kernel where cuDNN refuses the
     * shape or there is none, the default attention kernel, the default group-norm kernels, the group norm and the
     * convolution as two ops). Times are per run, of runs replayed as a graph ({@link #timeMs}); candidate and
     * candidateMs are the fastest candidate's (the verdict names the others' times where there were several).
     */
    public record Choice(String shape, int config, String candidate, float candidateMs, String incumbent,
                         float incumbentMs, String verdict) {
        @Override
        public String toString() {
            return String.format(java.util.Locale.ROOT, "%s: %s %.1f us, %s %.1f us: %s", shape, candidate,
                    candidateMs * 1e3, incumbent, incumbentMs * 1e3, verdict);
        }
    }

    /** The timed choices made so far, in first-use order (DeviceCheck and the benchmarks print them). */
    public java.util.List<Choice> timedChoices() {
        return java.util.List.copyOf(choices.values());
    }

    /** Loaded choices that run a candidate and have not yet been checked against the incumbent on this device. */
    private final java.util.Set<String> unverified = new java.util.HashSet<>();

    private static final String CHOICES_HEADER = "# onestep timed choices 1";

    /**
     * What a timed choice depends on, beyond the shape: the device kind, the library file (its path, size and
     * modification time), and how the timings were taken ({@link #TIMING_METHOD}, graph replays or launches,
     * programmatic dependent launch on or off, weight prefetch off, the runs timed); {@link CudaDevice} adds the GPU,
     * the driver and cuDNN.
     * A choices file made under another identity is not used ({@link #loadChoices}): verdicts timed by an older or
     * another method stay out.
     */
    protected String choiceIdentity() {
        java.io.File f = new java.io.File(library);
        return kind() + "; library " + library + " (" + f.length() + " bytes, modified " + f.lastModified() + ")"
                + "; timing method " + TIMING_METHOD + ", " + (graphTiming ? "graph replays" : "launches")
                + (programmaticLaunch() ? ", programmatic dependent launch" : "")
                + (weightPrefetch() ? "" : ", no weight prefetch") + ", " + timingWarmups
                + " warm-ups, " + choiceReps + " runs";
    }

    /**
     * The version of how {@link #timeMs} and the choices time their routes, part of a choices file's identity: bumped
     * when a change could move verdicts. 2 (2026-11-27): each route's scratch lent to all its runs (the library
     * route had allocated in every run, so on a GPU it was timed as launches with a cudaMalloc each), and the graph
     * replayed once untimed before the timed replay. 3 (the same day): a candidate must be {@link #CHOICE_MARGIN}
     * faster in the better of two rounds.
     */
    static final int TIMING_METHOD = 3;

    /**
     * Writes the timed choices made so far to {@code file}, with those already in it under the same identity (this
     * device's take precedence), atomically (a temporary file in the same folder, then a rename): a process can then
     * start with them ({@link #loadChoices}) instead of timing every shape again on its first pass, as cuDNN's and
     * PyTorch's tuning caches do. One line a choice, tab-separated.
     */
    public void saveChoices(java.nio.file.Path file) throws java.io.IOException {
        java.util.Map<String, Choice> all = new java.util.LinkedHashMap<>();
        if (java.nio.file.Files.exists(file)) {
            try {
                for (Choice c : readChoices(file)) {
                    all.put(c.shape(), c);
                }
            } catch (java.io.IOException | IllegalArgumentException e) {
                // another identity, or unreadable: replaced by this device's choices
            }
        }
        all.putAll(choices);
        StringBuilder out = new StringBuilder(CHOICES_HEADER).append('\n').append("# ").append(choiceIdentity())
                .append('\n');
        for (Choice c : all.values()) {
            out.append(String.join("\t", c.shape(), Integer.toString(c.config()), c.candidate(),
                    Float.toString(c.candidateMs()), c.incumbent(), Float.toString(c.incumbentMs()),
                    c.verdict().replace('\t', ' ').replace('\n', ' '))).append('\n');
        }
        ai.onestep.io.AtomicFile.writeString(file, out);
    }

    /**
     * Takes the choices {@link #saveChoices} wrote to {@code file}, so their shapes are not timed again. A loaded
     * choice that runs a candidate is checked against the incumbent on its shape's first use outside a capture (and
     * the incumbent runs until then); one that disagrees, or that the library refuses here, falls back to the
     * incumbent. Returns how many were loaded.
     *
     * @throws IllegalArgumentException naming the file (and the line) if it is not a choices file, or was made under
     *                                  another identity (another GPU, driver, cuDNN or library build)
     */
    public int loadChoices(java.nio.file.Path file) throws java.io.IOException {
        List<Choice> loaded = readChoices(file);
        for (Choice c : loaded) {
            if (!choices.containsKey(c.shape())) {
                choices.put(c.shape(), c);
                if (c.config() != 0) {
                    unverified.add(c.shape());
                }
            }
        }
        return loaded.size();
    }

    private List<Choice> readChoices(java.nio.file.Path file) throws java.io.IOException {
        List<String> lines = java.nio.file.Files.readAllLines(file);
        if (lines.size() < 2 || !lines.get(0).equals(CHOICES_HEADER)) {
            throw new IllegalArgumentException(file + ": not a timed-choices file (its first line is not \""
                    + CHOICES_HEADER + "\")");
        }
        if (!lines.get(1).equals("# " + choiceIdentity())) {
            throw new IllegalArgumentException(file + ": made for " + lines.get(1).substring(Math.min(2,
                    lines.get(1).length())) + ", not this device (" + choiceIdentity() + ")");
        }
        List<Choice> out = new java.util.ArrayList<>();
        for (int i = 2; i < lines.size(); i++) {
            String[] f = lines.get(i).split("\t", -1);
            try {
                if (f.length != 7) {
                    throw new IllegalArgumentException("7 tab-separated fields expected, got " + f.length);
                }
                int config = Integer.parseInt(f[1]);
                if (config < 0) {
                    throw new IllegalArgumentException("config " + config + " is negative");
                }
                out.add(new Choice(f[0], config, f[2], Float.parseFloat(f[3]), f[4], Float.parseFloat(f[5]),
                        f[6].endsWith(" (loaded)") ? f[6] : f[6] + " (loaded)"));
            } catch (IllegalArgumentException e) {  // NumberFormatException too
                throw new IllegalArgumentException(file + " line " + (i + 1) + ": " + e.getMessage());
            }
        }
        return out;
    }

    /** A convolution's shape for a choice's key, after {@link #incumbentTag}. */
    final String shapeKey(int n, int h, int wd, int cin, int kh, int kw, int cout, int stride, int padding,
                          Precision type) {
        return incumbentTag() + n + "," + h + "," + wd + "," + cin + "," + kh + "," + kw + "," + cout + "," + stride
                + "," + padding + "," + type.label();
    }

    /** Tells apart the choices made against different incumbents of a shape (CudaDevice: cuDNN's heuristics). */
    protected String incumbentTag() {
        return "";
    }

    /** Elements of a convolution's output. */
    static long outElems(int n, int h, int wd, int kh, int kw, int cout, int stride, int padding) {
        return (long) n * ((h + 2 * padding - kh) / stride + 1) * ((wd + 2 * padding - kw) / stride + 1) * cout;
    }

    /**
     * Runs a convolution by our implicit GEMM ({@code ours}, given the tile) and returns true where that shape's timed
     * choice went to it; false: the caller runs the incumbent ({@code library}). The choice is made on the shape's
     * first use outside a capture, before the library route's own first run, so a pass's runs make the same scratch
     * allocations every time: each tile ({@link #igemmConfigs}) and the library route (its scratch lent by a
     * temporary) are timed back to back ({@link #timeMs}), both again if ours looks faster; ours is kept only if its
     * fastest tile is faster by {@link #CHOICE_MARGIN} in the better round and its
     * result y (outElems values) agrees with the portable kernel's ({@code reference} writes that into its argument).
     */
    protected final boolean ownConv(String key, boolean takes, long y, long outElems, Precision type,
                                    Supplier<String> what, java.util.function.IntConsumer ours,
                                    java.util.function.Consumer<Scratch> library,
                                    java.util.function.LongConsumer reference) {
        if (!ownConvolutions || !takes) {
            return false;
        }
        int config = tileChoice(key, "library route",
                (c, tmp) -> ownAgrees(c, key, y, outElems, type, what, ours, reference, tmp),
                () -> chooseOwn(key, y, outElems, type, what, ours, library, reference));
        if (config == 0) {
            return false;
        }
        ours.accept(config);
        return true;
    }

    /**
     * The tile of our implicit GEMM that a choice against an incumbent route runs for {@code key}, or 0 for the
     * incumbent. A choice loaded from a file is checked once ({@link #checkedLoaded}: {@code agrees} runs the tile into
     * the op's output and compares it with the incumbent's); a new one is made by {@code choose} on the key's first use
     * outside a capture (inside one, the incumbent runs until then). Neither counts as the pass's launches.
     */
    private int tileChoice(String key, String incumbent, java.util.function.BiPredicate<Integer, Temporary> agrees,
                           Supplier<Choice> choose) {
        Choice own = choices.get(key);
        if (own != null && unverified.contains(key)) {
            Choice loaded = own;
            own = checkedLoaded(key, own, incumbent, tmp -> {
                long unfused = residualsUnfused;  // the check's runs are not the pass's launches
                try {
                    return agrees.test(loaded.config(), tmp);
                } finally {
                    residualsUnfused = unfused;
                }
            });
            if (own == null) {
                return 0;
            }
        }
        if (own == null) {
            if (capturing) {
                return 0;
            }
            own = choose.get();
            choices.put(key, own);
        }
        return own.config();
    }

    /** Runs tile {@code config} into y and whether y agrees with the portable kernel's result ({@link #agrees}). */
    private boolean ownAgrees(int config, String key, long y, long outElems, Precision type, Supplier<String> what,
                              java.util.function.IntConsumer ours, java.util.function.LongConsumer reference,
                              Temporary tmp) {
        ours.accept(config);
        long ref = tmp.allocate(outElems * type.bytes, "implicit-GEMM convolution check");
        reference.accept(ref);
        return agrees(y, ref, outElems, type, tmp, what, "our implicit-GEMM convolution " + key,
                "the library route for this shape");
    }

    /**
     * The choice to run for key now. A choice loaded from a file ({@link #loadChoices}) that runs a candidate is
     * checked first, once, on its shape's first use outside a capture: {@code agrees} runs the candidate and compares
     * it with the incumbent; one that disagrees or that the library refuses here becomes an incumbent verdict. Null
     * while a capture defers that check: the incumbent runs.
     */
    private Choice checkedLoaded(String key, Choice c, String incumbent,
                                 java.util.function.Predicate<Temporary> agrees) {
        if (capturing) {
            return null;
        }
        unverified.remove(key);
        boolean ok;
        try (Temporary tmp = new Temporary()) {
            ok = agrees.test(tmp);
        } catch (CudaException e) {
            System.err.println("cuda: the loaded choice for " + key + " did not run (" + e.getMessage() + "): the "
                    + incumbent + " instead");
            ok = false;
        }
        if (ok) {
            return c;
        }
        Choice kept = new Choice(key, 0, c.candidate(), c.candidateMs(), c.incumbent(), c.incumbentMs(),
                "loaded, but disagreed or did not run here: " + incumbent + " instead");
        choices.put(key, kept);
        return kept;
    }

    private Choice chooseOwn(String key, long y, long outElems, Precision type, Supplier<String> what,
                             java.util.function.IntConsumer ours, java.util.function.Consumer<Scratch> library,
                             java.util.function.LongConsumer reference) {
        return chooseTile(key, "implicit GEMM", "ours", "library route", "library faster", library, ours,
                (config, tmp) -> ownAgrees(config, key, y, outElems, type, what, ours, reference, tmp), false);
    }

    /**
     * A choice between an incumbent route and our implicit GEMM's tiles: a plain convolution against the library's
     * ({@link #chooseOwn}), a fused launch against the ops it replaces ({@link #chooseFused}). The incumbent (its
     * scratch lent by a temporary; timeMs's warm-up runs, before its capture, make its own choices) and each tile are
     * timed back to back, both again where the fastest tile looks faster ({@link #confirmed}); the tile is kept if it
     * is faster by {@link #CHOICE_MARGIN} in the better round (or {@link #forceChoice} says so) and {@code agrees}.
     * The verdict reads {@code slower} where the incumbent wins, "{@code word} faster" or "{@code word} disagreed"
     * otherwise. {@code collectRefusals}: tiles that failed to run are named in the verdict (else on stderr).
     */
    private Choice chooseTile(String key, String candidateName, String word, String incumbent, String slower,
                              java.util.function.Consumer<Scratch> incumbentRoute, java.util.function.IntConsumer tile,
                              java.util.function.BiPredicate<Integer, Temporary> agrees, boolean collectRefusals) {
        long unfused = residualsUnfused;  // the timing runs are not the pass's launches
        try (Temporary tmp = new Temporary()) {
            // One lender for every run: its blocks are allocated by the warm-up runs and lent again to the captured
            // ones. A lender per run allocated inside the capture, which CUDA refuses (and invalidates the capture),
            // so the library route was timed as launches with a cudaMalloc and cuDNN's host calls each: charged
            // 50-300 us where its kernels take 5-20 (2026-11-27 H200 run), it lost choices it should have won.
            Scratch lent = lender(tmp);
            Runnable incumbentRun = () -> incumbentRoute.accept(lent);
            float incumbentMs = timeChoice(incumbentRun);
            java.util.List<String> refused = collectRefusals ? new java.util.ArrayList<>() : null;
            TileTime best = fastestTile(key, tile, refused);
            String also = refused == null || refused.isEmpty() ? "" : " (" + String.join("; ", refused) + ")";
            String candidate = best.config() == 0 ? candidateName + " (no tile ran)"
                    : candidateName + ", " + igemmConfigName(best.config());
            if (best.config() == 0) {
                return new Choice(key, 0, candidate, best.ms(), incumbent, incumbentMs, slower + also);
            }
            float[] t = confirmed(() -> tile.accept(best.config()), best.ms(), incumbentRun, incumbentMs);
            if (!takes(t[0], t[1])) {
                return new Choice(key, 0, candidate, t[0], incumbent, t[1],
                        (forceChoice == null && t[0] < t[1] ? withinMargin(incumbent, word) : slower) + also);
            }
            boolean ok = agrees.test(best.config(), tmp);
            return new Choice(key, ok ? best.config() : 0, candidate, t[0], incumbent, t[1],
                    word + (ok ? " faster" : " disagreed") + also);
        } finally {
            residualsUnfused = unfused;
        }
    }

    /**
     * Device memory from {@code tmp} for a route's timed runs, which ask for the same scratch (KRSC weights, cuDNN's
     * workspace) every run: one block per request label, lent again instead of a new one per run.
     */
    private static Scratch lender(Temporary tmp) {
        java.util.Map<String, long[]> lent = new java.util.HashMap<>();
        return (bytes, label) -> {
            long[] b = lent.get(label);
            if (b == null || b[1] < bytes) {
                b = new long[] {tmp.allocate(bytes, label), bytes};
                lent.put(label, b);
            }
            return b[0];
        };
    }

    /** A tile of our implicit GEMM ({@link #igemmConfigs}; 0: none ran) and its time per run. */
    private record TileTime(int config, float ms) {
    }

    /**
     * Times {@code run} on each tile of our implicit GEMM that {@link #timesTile} allows ({@link #timeMs}) and returns
     * the fastest. A tile the library refuses for the shape (UNSUPPORTED: a cluster
     * tile below sm_90, rows that do not fit) is left out silently; one that fails otherwise (registers, shared memory)
     * too, with a line naming it, logged (null) or added to {@code refusals}.
     */
    private TileTime fastestTile(String key, java.util.function.IntConsumer run, java.util.List<String> refusals) {
        int best = 0;
        float bestMs = Float.POSITIVE_INFINITY;
        for (int c = 1; c <= igemmConfigs(); c++) {
            if (!timesTile(c)) {
                continue;
            }
            int config = c;
            float ms;
            try {
                ms = timeChoice(() -> run.accept(config));
            } catch (CudaException e) {
                if (e.status() != OnestepKernels.ERROR_UNSUPPORTED) {
                    String line = "implicit-GEMM tile " + igemmConfigName(config) + " on " + key + " did not run ("
                            + e.getMessage() + ")";
                    if (refusals == null) {
                        System.err.println("cuda: " + line);
                    } else {
                        refusals.add(line);
                    }
                }
                continue;
            }
            if (ms < bestMs) {
                best = c;
                bestMs = ms;
            }
        }
        return new TileTime(best, bestMs);
    }

    /**
     * The kernel {@link #attentionQkv} runs a shape with: 1 (split keys), 2 (pipelined) or 3 (wide: the pipelined
     * kernel with 32 query rows a warp, 128 a block), whichever was fastest when timed against the default kernel on
     * the shape's first use outside a capture, if it was faster than the default and its result agreed with the
     * default's; else 0. None asks for scratch, so the choice can be made inside a pass's first run.
     * {@link #pipelinedAttention} switches 2 and 3 together, {@link #splitKeys} 1; both off, fp32 or a head dim other
     * than 32 and 64: 0.
     */
    protected final int attentionKernel(long qkv, long bias, long o, long lse, int n, int heads, int t, int d,
                                        Precision type, Supplier<String> what) {
        if (!(splitKeys || pipelinedAttention) || type == Precision.FP32 || (d != 32 && d != 64)) {
            return 0;
        }
        List<Candidate> candidates = new ArrayList<>();
        if (splitKeys) {
            candidates.add(SPLIT_KEYS);
        }
        if (pipelinedAttention) {
            candidates.add(PIPELINED);
            candidates.add(WIDE);
        }
        String key = "attention,n=" + n + ",heads=" + heads + ",t=" + t + ",d=" + d + "," + type.label();
        return timedChoice(key, "default kernel", candidates,
                kernel -> attentionQkv(qkv, bias, o, lse, n, heads, t, d, kernel, type, what), (kernel, tmp) -> {
                    long elems = (long) n * t * heads * d;
                    long ref = tmp.allocate(elems * type.bytes, "attention check");
                    long refLse = tmp.allocate((long) n * heads * t * Float.BYTES, "attention check lse");
                    attentionQkv(qkv, bias, ref, refLse, n, heads, t, d, 0, type, what);
                    attentionQkv(qkv, bias, o, lse, n, heads, t, d, kernel, type, what);  // o: the candidate's, last
                    return agrees(o, ref, elems, type, tmp, what, "the " + (kernel == 1 ? "split-keys"
                            : kernel == 2 ? "pipelined" : "wide") + " attention " + key,
                            "the default kernel for this shape");
                });
    }

    /**
     * The kernel {@link #groupNormConcat} runs a shape with: 2 (the cluster kernel on the concatenation) where, timed
     * against kernel 0 on the shape's first use outside a capture, it was faster and its y agreed (cat is the same bits
     * either way); else 0. Off with {@link #clusterGroupNorm}; the library refuses what the cluster kernel has no
     * instance for (ca or cb not a multiple of 4, groups not a multiple of 4 channels, a device below sm_90).
     */
    protected final int groupNormConcatKernel(long a, long aBias, long b, long bBias, long gamma, long beta, long cat,
                                              long y, long mean, long rstd, int n, int hw, int ca, int cb, int groups,
                                              float eps, boolean silu, Precision type, Supplier<String> what) {
        if (!clusterGroupNorm) {
            return 0;
        }
        String key = "groupnormconcat,n=" + n + ",hw=" + hw + ",ca=" + ca + ",cb=" + cb + ",g=" + groups
                + (silu ? ",silu" : "") + (aBias != 0 || bBias != 0 ? ",biased" : "") + "," + type.label();
        return timedChoice(key, "default kernel", List.of(CLUSTER),
                kernel -> groupNormConcat(a, aBias, b, bBias, gamma, beta, cat, y, mean, rstd, n, hw, ca, cb, groups,
                        eps, silu, kernel, type, what), (kernel, tmp) -> {
                    long elems = (long) n * hw * (ca + cb);
                    long refCat = tmp.allocate(elems * type.bytes, "group norm concat check cat");
                    long ref = tmp.allocate(elems * type.bytes, "group norm concat check");
                    long refStats = tmp.allocate(2L * n * groups * Float.BYTES, "group norm concat check stats");
                    groupNormConcat(a, aBias, b, bBias, gamma, beta, refCat, ref, refStats,
                            refStats + (long) n * groups * Float.BYTES, n, hw, ca, cb, groups, eps, silu, 0, type,
                            what);
                    groupNormConcat(a, aBias, b, bBias, gamma, beta, cat, y, mean, rstd, n, hw, ca, cb, groups, eps,
                            silu, kernel, type, what);  // cat and y: the candidate's, last
                    return agrees(y, ref, elems, type, tmp, what, "the cluster group norm of a concatenation " + key,
                            "the default kernel for this shape");
                });
    }

    /** A candidate kernel of a timed choice: the number the library's entry takes for it, and its name. */
    private record Candidate(int kernel, String name) {
    }

    private static final Candidate SPLIT_KEYS = new Candidate(1, "split keys");
    private static final Candidate PIPELINED = new Candidate(2, "pipelined");
    private static final Candidate WIDE = new Candidate(3, "wide");
    private static final Candidate SLAB = new Candidate(1, "slab kernel");
    private static final Candidate CLUSTER = new Candidate(2, "cluster kernel");
    private static final List<Candidate> ONE_LAUNCH = List.of(new Candidate(1, "one launch, a warp a head"),
            new Candidate(2, "one launch, 2 warps a head"), new Candidate(4, "one launch, 4 warps a head"));

    /**
     * A timed choice between an incumbent kernel (0) and candidates that ask for no scratch, so it can be made inside a
     * pass's first run: on the key's first use outside a capture, each candidate and then the incumbent are timed back
     * to back ({@link #timeMs}; a candidate the library refuses is left out, and with none left the incumbent runs
     * untimed), both sides again where the candidate looks faster, and the fastest candidate is kept if it is faster
     * than the incumbent by {@link #CHOICE_MARGIN} in the better round (or {@link #forceChoice} says so)
     * and {@code check} finds it agrees with the incumbent (it runs both, the candidate last, into the op's outputs).
     * Returns the kernel to run.
     */
    private int timedChoice(String key, String incumbent, List<Candidate> candidates,
                            java.util.function.IntConsumer launch,
                            java.util.function.BiPredicate<Integer, Temporary> check) {
        Choice c = choices.get(key);
        if (c != null && unverified.contains(key)) {
            int config = c.config();
            c = checkedLoaded(key, c, incumbent, tmp -> check.test(config, tmp));
            if (c == null) {
                return 0;
            }
        }
        if (c == null && !capturing) {
            // Each candidate's time, or why the library refused it (a shape it has no instance for, an address it
            // cannot align to): the others still compete.
            java.util.Map<Candidate, Float> ms = new java.util.LinkedHashMap<>();
            java.util.List<String> others = new java.util.ArrayList<>();
            for (Candidate candidate : candidates) {
                try {
                    ms.put(candidate, timeChoice(() -> launch.accept(candidate.kernel())));
                } catch (CudaException e) {
                    others.add(candidate.name() + " refused (" + e.getMessage() + ")");
                }
            }
            Candidate best = ms.keySet().stream().min(java.util.Comparator.comparing(ms::get)).orElse(null);
            ms.forEach((candidate, t) -> {
                if (candidate != best) {
                    others.add(String.format(java.util.Locale.ROOT, "%s %.1f us", candidate.name(), t * 1e3));
                }
            });
            String also = others.isEmpty() ? "" : " (" + String.join("; ", others) + ")";
            if (best == null) {
                String names = String.join(", ", candidates.stream().map(Candidate::name).toList());
                c = new Choice(key, 0, names, Float.NaN, incumbent, Float.NaN, "none ran" + also);
                choices.put(key, c);
                return 0;
            }
            Runnable incumbentRun = () -> launch.accept(0);
            float[] t = confirmed(() -> launch.accept(best.kernel()), ms.get(best), incumbentRun,
                    timeChoice(incumbentRun));
            float bestMs = t[0], incumbentMs = t[1];
            String verdict = bestMs < incumbentMs && forceChoice == null
                    ? withinMargin(incumbent, best.name()) : incumbent + " faster";
            int kernel = 0;
            if (takes(bestMs, incumbentMs)) {
                try (Temporary tmp = new Temporary()) {
                    boolean ok = check.test(best.kernel(), tmp);
                    kernel = ok ? best.kernel() : 0;
                    verdict = best.name() + (ok ? " faster" : " disagreed");
                }
            }
            c = new Choice(key, kernel, best.name(), bestMs, incumbent, incumbentMs, verdict + also);
            choices.put(key, c);
        }
        if (c == null) {
            return 0;
        }
        // A verdict (made earlier, or loaded from a file) for a candidate switched off since runs the incumbent: the
        // switches (-Donestep.cuda.splitKeys=false, ...) hold whatever was timed before.
        int config = c.config();
        return candidates.stream().anyMatch(k -> k.kernel() == config) ? config : 0;
    }

    /**
     * The kernel {@link #groupNorm} runs a shape with: 1 (the slab kernel: a block per sample and 16 channels, x read
     * once and held in registers) or 2 (the cluster kernel: each group split over a thread block cluster whose blocks
     * meet in distributed shared memory, x read once), whichever was fastest when timed against kernel 0 on the shape's
     * first use outside a capture, if it was faster and its result agreed; else 0. The slab kernel competes only where
     * kernel 0 takes two kernels (above 2^20 values: batch 64, and training); the cluster kernel everywhere, above all
     * at batch 1, where kernel 0 has only N x G = 32 blocks. Only where y is apart from x and add (each timed run
     * rewrites y from the inputs). The library refuses the shapes a candidate has no instance for (the slab kernel:
     * groups other than 4, 8 or 16 channels, more than 2048 pixels; the cluster kernel: groups not a multiple of 4
     * channels, a device below sm_90), and the choice records that. Neither asks for scratch.
     */
    protected final int groupNormKernel(long x, long xBias, long add, long addBias, long gamma, long beta, long scale,
                                        long shift, long y, long mean, long rstd, int n, int hw, int c, int groups,
                                        float eps, boolean silu, Precision type, Supplier<String> what) {
        boolean slab = slabGroupNorm && (long) n * hw * c > 1L << 20;
        if (!(slab || clusterGroupNorm) || y == x || y == add) {
            return 0;
        }
        List<Candidate> candidates = slab && clusterGroupNorm ? List.of(SLAB, CLUSTER)
                : List.of(slab ? SLAB : CLUSTER);
        String key = "groupnorm,n=" + n + ",hw=" + hw + ",c=" + c + ",g=" + groups + (silu ? ",silu" : "")
                + (scale != 0 ? ",modulated" : "") + (xBias != 0 || add != 0 ? ",pre-add" : "") + "," + type.label();
        return timedChoice(key, "default kernels", candidates,
                kernel -> groupNorm(x, xBias, add, addBias, gamma, beta, scale, shift, y, mean, rstd, n, hw, c, groups,
                        eps, silu, kernel, type, what), (kernel, tmp) -> {
                    long elems = (long) n * hw * c;
                    long ref = tmp.allocate(elems * type.bytes, "group norm check");
                    long refStats = tmp.allocate(2L * n * groups * Float.BYTES, "group norm check stats");
                    groupNorm(x, xBias, add, addBias, gamma, beta, scale, shift, ref, refStats,
                            refStats + (long) n * groups * Float.BYTES, n, hw, c, groups, eps, silu, 0, type, what);
                    groupNorm(x, xBias, add, addBias, gamma, beta, scale, shift, y, mean, rstd, n, hw, c, groups, eps,
                            silu, kernel, type, what);  // y: the candidate's, last
                    return agrees(y, ref, elems, type, tmp, what, "the " + (kernel == 1 ? "slab" : "cluster")
                            + " group norm " + key,
                            "the default kernels for this shape");
                });
    }

    /**
     * A route's first result on a shape, y, against the portable kernel's (or the incumbent's), ref: true if they
     * agree (a layout mistake shows as an O(1) error; TF32 and 16-bit rounding stay below the 2e-2 bound); else one
     * log line naming the route and what runs instead, and y takes ref's values.
     */
    protected final boolean agrees(long y, long ref, long elems, Precision type, Temporary tmp, Supplier<String> what,
                                   String route, String instead) {
        double err = relativeError(y, ref, elems, type, tmp, what);
        if (err <= 2e-2) {
            return true;
        }
        System.err.println("cuda: " + route + " disagrees with the portable kernel (relative error " + err + "): "
                + instead);
        copy(y, ref, elems * type.bytes, what);
        return false;
    }

    /** Device memory for one check, freed (after the device is done with it) on close. */
    protected final class Temporary implements Scratch, AutoCloseable {
        private final java.util.List<Long> blocks = new java.util.ArrayList<>();

        @Override
        public long allocate(long bytes, String what) {
            long p = malloc(Math.max(bytes, 1), () -> what);
            blocks.add(p);
            return p;
        }

        @Override
        public void close() {
            synchronize();
            for (long p : blocks) {
                free(p);
            }
        }
    }

    /** ||a - b|| / ||b|| of two device vectors of {@code type} (widened to fp32 in scratch; waits for the stream). */
    protected final double relativeError(long a, long b, long elems, Precision type, Scratch scratch,
                                         Supplier<String> what) {
        if (type != Precision.FP32) {
            long fa = scratch.allocate(elems * Float.BYTES, "check fp32 copy"), fb = scratch.allocate(elems * Float.BYTES,
                    "check fp32 copy");
            convert(a, type, fa, Precision.FP32, elems, "conv2d check", what);
            convert(b, type, fb, Precision.FP32, elems, "conv2d check", what);
            a = fa;
            b = fb;
        }
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            MemorySegment ha = arena.allocate(elems * Float.BYTES), hb = arena.allocate(elems * Float.BYTES);
            download(ha, a, elems * Float.BYTES, what);
            download(hb, b, elems * Float.BYTES, what);
            double num = 0, den = 0;
            for (long i = 0; i < elems; i++) {
                double va = ha.getAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT, i);
                double vb = hb.getAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT, i);
                num += (va - vb) * (va - vb);
                den += vb * vb;
            }
            return Math.sqrt(num / Math.max(den, 1e-30));
        }
    }

    // ---- errors ----------------------------------------------------------------------------------------------

    /**
     * Throws a {@link CudaException} unless {@code status} is OK: "{op}: {the library's message} [{what}]", where
     * the library's message names the C function and its shapes.
     */
    public static void check(int status, String op, Supplier<String> what) {
        if (status != OnestepKernels.OK) {
            String msg = onestep_last_error_message().getString();
            String extra = what.get();
            throw new CudaException(op + ": " + msg + (extra.isEmpty() ? "" : " [" + extra + "]"), status);
        }
    }

    /** Devices the loaded library sees (throws with the driver's message when there is none). */
    static int deviceCount() {
        IntPointer p = new IntPointer(1);
        try {
            check(onestep_device_count(p), "deviceCount", () -> "");
            return p.get();
        } finally {
            p.close();
        }
    }
}
