package ai.onestep.backend.cpu;

import static ai.onestep.backend.cpu.GemmKernels.L;
import static ai.onestep.backend.cpu.GemmKernels.MR;
import static ai.onestep.backend.cpu.GemmKernels.NR;
import static ai.onestep.backend.cpu.GemmKernels.S;

import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;

/**
 * GEMM, linear layers and 2-D convolution on the shared {@link GemmKernels} micro-kernels.
 *
 * <p>Convolution is an implicit GEMM in NHWC (no im2col buffer): M = output pixels (N Ho Wo), N = Cout,
 * K = KH KW Cin. The input is copied once into a zero-padded NHWC buffer, so that every tap (kh, kw) of every
 * output pixel is an in-bounds, contiguous run of Cin floats and the micro-kernel needs no bounds branch; the HWIO
 * weights already are the (K, Cout) matrix and are packed once per call into NR-column panels.
 *
 * <p>3x3 stride-1 forwards with 8 or more channels in and out (all but the first of the U-Net's) go through
 * {@link CpuWinograd} instead, 2.25x fewer FMAs; so do their dx, a forward with the rotated filters, and their dw
 * (F(3x3, 2x2), the same saving). The choice depends on the weight's shape only, never on the batch or on whether
 * the weights are registered, so a sample has the same bits alone or in a batch. {@code -Donestep.cpu.winograd=false}
 * (or {@code new CpuOps(threads, false)}) keeps the direct path, the slow twin the tests compare with.
 *
 * <p>Backward: dx is, per stride phase of its pixels, a stride-1 correlation of dy with that phase's taps of the
 * in/out-transposed weights (the adjoint of the forward sum); dw = im2col(x)^T dy is a
 * reduction over pixels that runs in fixed chunks of {@link #CHUNK} pixels, summed in order.
 *
 * <p>Determinism: work is split over tiles of the output only; every output element is reduced by one task in a
 * fixed order, so results are bit-identical for any thread count.
 */
final class CpuConv {
    /**
     * Pixels per partial sum of a weight gradient: float32 sums of at most this many terms, then summed in order.
     * 128 pixels of one dy panel are 16 KB, small enough to stay in L1 while the row tiles of a task sweep them.
     */
    private static final int CHUNK = 128;
    /** Micro-tiles of rows per forward task: a task reuses one packed B panel (L2-resident) over MB tiles. */
    private static final int MB = 8;
    /** Floats per task of a copy (the padded input, a linear's input): 32 KB, a few microseconds. */
    private static final long COPY_GRAIN = 1 << 13;
    /** Fewest input and output channels for which a 3x3 forward goes through {@link CpuWinograd}. */
    static final int WINOGRAD_MIN_CHANNELS = 8;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    /**
     * Grow-only scratch buffers of the calling thread, reused across calls so that a training step does not
     * allocate (and zero) megabytes per convolution; the workers only read them during the call. Slot 0 holds the
     * padded input (or the padded dy of a Winograd dx), slot 1 the margined or panel-packed dy or the per-call
     * Winograd filters, slot 2 the rotated filters of a Winograd dx.
     */
    private static final ThreadLocal<float[][]> SCRATCH = ThreadLocal.withInitial(() -> new float[3][]);

    private final CpuPool pool;
    private final PackedWeights cache;
    /** The Winograd path for 3x3 stride-1 convolutions (forward, dx, dw), or null where it is switched off. */
    private final CpuWinograd winograd;

    CpuConv(CpuPool pool, PackedWeights cache, boolean winograd) {
        this.pool = pool;
        this.cache = cache;
        this.winograd = winograd ? new CpuWinograd(pool) : null;
    }

    /**
     * 3x3, stride 1, with enough channels that the transforms are small next to the GEMMs (the first layer's
     * Cin = 1 gains nothing: its direct convolution is bound by the output writes).
     */
    private static boolean useWinograd(Geometry g) {
        // The transformed filters (16 Cin x padded Cout floats, and Cout x Cin for dx) and the dw sums must fit a
        // Java array; beyond that (thousands of channels) the direct path reports its own limits.
        int c = Math.max(g.cin, g.cout);
        long filters = 16L * (c + MR) * GemmKernels.paddedCols(c);
        return g.kh == 3 && g.kw == 3 && g.stride == 1 && g.cin >= WINOGRAD_MIN_CHANNELS
                && g.cout >= WINOGRAD_MIN_CHANNELS && filters < Integer.MAX_VALUE / 2;
    }

    // ------------------------------------------------------------------------------------------------
    // GEMM and linear
    // ------------------------------------------------------------------------------------------------

    void matmul(Tensor a, boolean transA, Tensor b, boolean transB, Tensor c, int m, int n, int k, float alpha,
                float beta) {
        float[] av = a.toArray();
        float[] ar;
        if (transA) {
            ar = new float[m * k];
            for (int p = 0; p < k; p++) {
                for (int i = 0; i < m; i++) {
                    ar[i * k + p] = av[p * m + i];
                }
            }
        } else {
            ar = av;
        }
        float[] bp;
        if (transB) {
            float[] bv = b.toArray();
            bp = GemmKernels.packB(k, n, (p, j) -> bv[j * k + p]);
        } else {
            bp = GemmKernels.packRows(b.segment(), k, n);
        }
        gemm(m, n, ar, stridedRows(m, k), new int[] {0}, 1, k, bp, new float[GemmKernels.paddedCols(n)],
                c.segment(), alpha, beta);
    }

    void linear(Tensor x, Tensor w, Tensor b, Tensor y, int rows, int in, int out) {
        float[] bp = cache.panels(w, in, out);
        if (bp == null) {
            bp = GemmKernels.packRows(w.segment(), in, out);
        }
        gemm(rows, out, rowsOf(x, 0), stridedRows(rows, in), new int[] {0}, 1, in, bp, paddedBias(b, out),
                y.segment(), 1f, 0f);
    }

    void linearBackward(Tensor x, Tensor w, Tensor dy, Tensor dx, Tensor dw, Tensor db, int rows, int in, int out) {
        float[] dyv = dy.toArray();
        if (dx != null) {
            float[] wv = w.toArray();
            // dx = dy w^T: B = w^T, (out, in).
            float[] bp = GemmKernels.packB(out, in, (p, j) -> wv[j * out + p]);
            gemm(rows, in, dyv, stridedRows(rows, out), new int[] {0}, 1, out, bp,
                    new float[GemmKernels.paddedCols(in)], dx.segment(), 1f, 0f);
        }
        if (dw != null) {
            float[] dyp = packPanels(dyv, rows, out, 0);
            int[] rowOff = new int[in];
            for (int i = 0; i < in; i++) {
                rowOff[i] = i;
            }
            weightGrad(x.toArray(), stridedRows(rows, in), rows, rowOff, dyp, out, dw.segment());
        }
        if (db != null) {
            biasGrad(dy.segment(), rows, out, db.segment());
        }
    }

    /**
     * x's floats in the calling thread's scratch slot (its tail stale), copied in parallel: the micro-kernel reads a
     * heap array, and {@code toArray} would allocate and zero one per call (a batch-1 attention block's q, k and v
     * projections each copied their 196 x 64 tokens on one thread).
     */
    private float[] rowsOf(Tensor x, int slot) {
        long size = x.size();
        checkIndexable(size, "linear");
        float[] a = scratch(slot, (int) size);
        MemorySegment xs = x.segment();
        pool.parallelRange(size, COPY_GRAIN, (from, to) ->
                MemorySegment.copy(xs, Tensor.F32, from * Float.BYTES, a, (int) from, (int) (to - from)));
        return a;
    }

    private static int[] stridedRows(int rows, int stride) {
        int[] r = new int[rows];
        for (int i = 0; i < rows; i++) {
            r[i] = i * stride;
        }
        return r;
    }

    private static float[] paddedBias(Tensor b, int n) {
        float[] init = new float[GemmKernels.paddedCols(n)];
        if (b != null) {
            MemorySegment.copy(b.segment(), Tensor.F32, 0, init, 0, n);
        }
        return init;
    }

    // ------------------------------------------------------------------------------------------------
    // Convolution
    // ------------------------------------------------------------------------------------------------

    void conv(Tensor x, Tensor w, Tensor b, int stride, int padding, Tensor y) {
        Geometry g = new Geometry(x, w, stride, padding);
        float[] u = null;
        if (winograd != null && useWinograd(g)) {
            u = cache.packed(w, "winograd F(2x2,3x3)", s -> CpuWinograd.transformWeights(s, g.cin, g.cout,
                    null, pool));
            if (u == null) {
                // Weights that move (training): transformed on every call, into scratch. Not skipped for small
                // batches, although the direct path would be faster there: the choice of algorithm depends on the
                // weight's shape only, so a sample has the same bits alone or in a batch, registered or not.
                u = CpuWinograd.transformWeights(w.segment(), g.cin, g.cout,
                        scratch(1, CpuWinograd.transformedSize(g.cin, g.cout)), pool);
            }
        }
        if (u != null) {
            winogradForward(x, g, u, paddedBias(b, g.cout), y.segment());
            return;
        }
        float[] xp = padInput(x, g, 0);
        int k = g.kh * g.kw * g.cin;
        float[] bp = cache.panels(w, k, g.cout);
        if (bp == null) {
            bp = GemmKernels.packRows(w.segment(), k, g.cout);
        }
        // The KW taps of one kernel row are adjacent pixels of the padded input, so (kw, ci) is one contiguous run
        // of KW Cin floats, in the HWIO weights' K order too: the GEMM sees KH "taps" of KW Cin channels each. Its
        // inner loop then runs 3x longer per tap (192 iterations instead of 64 at Cin = 64: less loop entry and
        // exit per FMA) over the same K order, so the result has the same bits.
        gemm(g.n * g.ho * g.wo, g.cout, xp, g.outputPixelBases(), g.rowTapOffsets(), g.kh, g.kw * g.cin, bp,
                paddedBias(b, g.cout), y.segment(), 1f, 0f);
    }

    /** {@link CpuWinograd#forward} of x, with filters u already transformed. */
    private void winogradForward(Tensor x, Geometry g, float[] u, float[] bias, MemorySegment y) {
        // Every 2x2 output tile reads a 4x4 patch: an odd output size needs one more zero row (column).
        int hp = g.hp() + (g.ho & 1), wp = g.wp() + (g.wo & 1);
        float[] xp = padInput(x, g, hp, wp, 0);
        winograd.forward(xp, g.n, hp, wp, g.cin, u, bias, g.cout, g.ho, g.wo, y);
    }

    void convBackward(Tensor x, Tensor w, Tensor dy, int stride, int padding, Tensor dx, Tensor dw, Tensor db) {
        Geometry g = new Geometry(x, w, stride, padding);
        if (dx != null) {
            inputGrad(g, w, dy, dx);
        }
        if (dw != null && winograd != null && useWinograd(g)) {
            int hp = g.hp() + (g.ho & 1), wp = g.wp() + (g.wo & 1);
            winograd.weightGradient(padInput(x, g, hp, wp, 0), g.n, hp, wp, g.cin, dy.segment(), g.cout, g.ho, g.wo,
                    dw.segment());
        } else if (dw != null) {
            float[] xp = padInput(x, g, 0);
            int pixels = g.n * g.ho * g.wo;
            float[] dyp = packPanels(dy.toArray(), pixels, g.cout, 1);
            int[] taps = g.tapOffsets();
            int[] rowOff = new int[taps.length * g.cin];
            for (int t = 0; t < taps.length; t++) {
                for (int ci = 0; ci < g.cin; ci++) {
                    rowOff[t * g.cin + ci] = taps[t] + ci;
                }
            }
            weightGrad(xp, g.outputPixelBases(), pixels, rowOff, dyp, g.cout, dw.segment());
        }
        if (db != null) {
            biasGrad(dy.segment(), g.n * g.ho * g.wo, g.cout, db.segment());
        }
    }

    /**
     * {@code dx[n,ih,iw,ci] = sum_{kh,kw,co} dy[n,oh,ow,co] w[kh,kw,ci,co]} over the taps with
     * {@code oh s + kh - p = ih} (the adjoint of the forward sum). Split dx by stride phase
     * {@code (ih mod s, iw mod s)}: within a phase only the taps with {@code kh = ih + p (mod s)} contribute, and
     * they read {@code oh = ih / s + (ph + p - kh) / s}, a stride-1 correlation of dy with that phase's taps. So
     * each phase is one implicit GEMM (rows: its dx pixels, K: its taps x Cout, N: Cin) over dy copied into a
     * zero-margined buffer, and a stride-2 backward does no multiply by the zeros a dilated dy would hold.
     */
    private void inputGrad(Geometry g, Tensor w, Tensor dy, Tensor dx) {
        if (winograd != null && useWinograd(g) && g.padding <= 2) {
            // With stride 1, dx is the correlation of dy (padded by 2 - p) with the filters rotated by 180 degrees
            // and transposed, w'[kh, kw, co, ci] = w[2 - kh, 2 - kw, ci, co]: a 3x3 forward from Cout to Cin channels,
            // as fast as the forward through Winograd.
            float[] wv = w.toArray(), rot = scratch(2, wv.length);
            for (int kh = 0; kh < 3; kh++) {
                for (int kw = 0; kw < 3; kw++) {
                    for (int ci = 0; ci < g.cin; ci++) {
                        int src = ((kh * 3 + kw) * g.cin + ci) * g.cout, dst = ((8 - kh * 3 - kw) * g.cout) * g.cin + ci;
                        for (int co = 0; co < g.cout; co++) {
                            rot[dst + co * g.cin] = wv[src + co];
                        }
                    }
                }
            }
            Geometry t = new Geometry(g.n, g.ho, g.wo, g.cout, 3, 3, g.cin, 1, 2 - g.padding);
            float[] u = CpuWinograd.transformWeights(MemorySegment.ofArray(rot), g.cout, g.cin,
                    scratch(1, CpuWinograd.transformedSize(g.cout, g.cin)), pool);
            winogradForward(dy, t, u, new float[GemmKernels.paddedCols(g.cin)], dx.segment());
            return;
        }
        int s = g.stride;
        // Margins of the dy buffer: the lowest and highest oh (and ow) any phase's tap reads.
        int lo = 0, hi = g.ho - 1, loW = 0, hiW = g.wo - 1;
        for (int ph = 0; ph < s; ph++) {
            int rows = phaseCount(g.h, ph, s), cols = phaseCount(g.w, ph, s);
            for (int k = 0; k < g.kh; k++) {
                if (Math.floorMod(ph + g.padding - k, s) == 0 && rows > 0) {
                    int d = Math.floorDiv(ph + g.padding - k, s);
                    lo = Math.min(lo, d);
                    hi = Math.max(hi, rows - 1 + d);
                }
            }
            for (int k = 0; k < g.kw; k++) {
                if (Math.floorMod(ph + g.padding - k, s) == 0 && cols > 0) {
                    int d = Math.floorDiv(ph + g.padding - k, s);
                    loW = Math.min(loW, d);
                    hiW = Math.max(hiW, cols - 1 + d);
                }
            }
        }
        int mh = -lo, mw = -loW, hq = hi - lo + 1, wq = hiW - loW + 1;
        long size = (long) g.n * hq * wq * g.cout;
        checkIndexable(size, "conv2dBackward");
        float[] dp = scratch(1, (int) size);
        MemorySegment dys = dy.segment();
        int rowLen = g.wo * g.cout;
        pool.parallelFor(g.n, n -> {
            int base = n * hq * wq * g.cout;
            Arrays.fill(dp, base, base + hq * wq * g.cout, 0f);
            for (int oh = 0; oh < g.ho; oh++) {
                long src = ((long) n * g.ho + oh) * rowLen * Float.BYTES;
                MemorySegment.copy(dys, Tensor.F32, src, dp, base + ((oh + mh) * wq + mw) * g.cout, rowLen);
            }
        });
        float[] wv = w.toArray();
        MemorySegment dxs = dx.segment();
        for (int ph = 0; ph < s; ph++) {
            for (int pw = 0; pw < s; pw++) {
                int rows = phaseCount(g.h, ph, s), cols = phaseCount(g.w, pw, s);
                if (rows == 0 || cols == 0) {
                    continue;
                }
                int[] khs = phaseTaps(g.kh, ph, g.padding, s), kws = phaseTaps(g.kw, pw, g.padding, s);
                int m = g.n * rows * cols;
                int[] rowBase = new int[m], outRow = new int[m];
                for (int n = 0, i = 0; n < g.n; n++) {
                    for (int r = 0; r < rows; r++) {
                        for (int c = 0; c < cols; c++, i++) {
                            rowBase[i] = ((n * hq + r + mh) * wq + c + mw) * g.cout;
                            outRow[i] = ((n * g.h + ph + r * s) * g.w + pw + c * s) * g.cin;
                        }
                    }
                }
                int taps = khs.length * kws.length;
                if (taps == 0) {
                    // No tap reaches these pixels (a 1x1 kernel with stride 2 skips odd rows): their dx is 0.
                    for (int o : outRow) {
                        MemorySegment.copy(new float[g.cin], 0, dxs, Tensor.F32, (long) o * Float.BYTES, g.cin);
                    }
                    continue;
                }
                int[] tapOff = new int[taps];
                for (int a = 0; a < khs.length; a++) {
                    for (int b = 0; b < kws.length; b++) {
                        int dh = Math.floorDiv(ph + g.padding - khs[a], s);
                        int dw = Math.floorDiv(pw + g.padding - kws[b], s);
                        tapOff[a * kws.length + b] = (dh * wq + dw) * g.cout;
                    }
                }
                float[] bp = GemmKernels.packB(taps * g.cout, g.cin, (k, j) -> {
                    int t = k / g.cout, co = k % g.cout;
                    int kh = khs[t / kws.length], kw = kws[t % kws.length];
                    return wv[((kh * g.kw + kw) * g.cin + j) * g.cout + co];
                });
                // With stride 1 the single phase is all of dx in order: rows are contiguous.
                gemm(m, g.cin, dp, rowBase, tapOff, taps, g.cout, bp, new float[GemmKernels.paddedCols(g.cin)], dxs,
                        s == 1 ? null : outRow, 1f, 0f);
            }
        }
    }

    /** How many of {@code 0..size-1} are congruent to {@code phase} modulo {@code s}. */
    private static int phaseCount(int size, int phase, int s) {
        return phase >= size ? 0 : (size - phase + s - 1) / s;
    }

    /** The kernel taps {@code k} that reach input positions of this phase: {@code k = phase + p (mod s)}. */
    private static int[] phaseTaps(int kernel, int phase, int padding, int s) {
        return java.util.stream.IntStream.range(0, kernel)
                .filter(k -> Math.floorMod(phase + padding - k, s) == 0).toArray();
    }

    /** The input copied into a zero-padded (N, H + 2p, W + 2p, Cin) buffer: every tap of the kernel is in bounds. */
    private float[] padInput(Tensor x, Geometry g, int slot) {
        return padInput(x, g, g.hp(), g.wp(), slot);
    }

    /** As above into (N, hp, wp, Cin), hp >= H + 2p and wp >= W + 2p: the rows and columns beyond are zeros too. */
    private float[] padInput(Tensor x, Geometry g, int hp, int wp, int slot) {
        long size = (long) g.n * hp * wp * g.cin;
        checkIndexable(size, "conv2d");
        float[] xp = scratch(slot, (int) size);
        MemorySegment xs = x.segment();
        int row = g.w * g.cin, pad = g.padding * g.cin, prow = wp * g.cin;
        // Split over padded rows, not samples: at batch 1 (a sampler's case) a per-sample split left this copy,
        // 5-10 us before each of a step's 36 convolutions, to one thread while the others waited.
        pool.parallelRange((long) g.n * hp, Math.max(1, COPY_GRAIN / prow), (r0, r1) -> {
            for (int r = (int) r0; r < r1; r++) {
                int dst = r * prow;
                int n = r / hp, ih = r % hp - g.padding;
                if (ih < 0 || ih >= g.h) {
                    Arrays.fill(xp, dst, dst + prow, 0f);
                    continue;
                }
                Arrays.fill(xp, dst, dst + pad, 0f);
                MemorySegment.copy(xs, Tensor.F32, ((long) n * g.h + ih) * row * Float.BYTES, xp, dst + pad, row);
                // The right margin: p columns, plus any extra ones.
                Arrays.fill(xp, dst + pad + row, dst + prow, 0f);
            }
        });
        return xp;
    }

    /**
     * A (rows, cols) matrix repacked as panels of NR columns, each panel (rows, NR) contiguous, zeros beyond
     * column cols: {@code r[(q rows + i) NR + j] = v[i cols + q NR + j]}.
     */
    private static float[] packPanels(float[] v, int rows, int cols, int slot) {
        int panels = GemmKernels.paddedCols(cols) / NR;
        float[] r = scratch(slot, panels * rows * NR);
        for (int q = 0; q < panels; q++) {
            int w = Math.min(NR, cols - q * NR);
            for (int i = 0; i < rows; i++) {
                int d = (q * rows + i) * NR;
                System.arraycopy(v, i * cols + q * NR, r, d, w);
                Arrays.fill(r, d + w, d + NR, 0f);
            }
        }
        return r;
    }

    private static float[] scratch(int slot, int size) {
        return CpuWinograd.buffer(SCRATCH.get(), slot, size);
    }

    private static void checkIndexable(long size, String op) {
        if (size > Integer.MAX_VALUE - 2L * NR) {
            throw new TensorException(op + ": the padded buffer of " + size
                    + " floats is too large for the cpu backend's int indexing; split the batch");
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Drivers
    // ------------------------------------------------------------------------------------------------

    /**
     * {@code C[i, j] = alpha (init[j] + sum_t sum_c a[rowBase[i] + tapOff[t] + c] bp[...]) + beta C[i, j]} for
     * i < m, j < n, C row-major (m, n) in {@code cs}. Tasks are (block of MB micro-tiles of rows, panel of NR
     * columns); each computes its outputs over the full K, so no reduction is split.
     */
    private void gemm(int m, int n, float[] a, int[] rowBase, int[] tapOff, int taps, int cin, float[] bp,
                      float[] init, MemorySegment cs, float alpha, float beta) {
        gemm(m, n, a, rowBase, tapOff, taps, cin, bp, init, cs, null, alpha, beta);
    }

    /** As above, with row i of the result written at element {@code outRow[i]} of {@code cs} (null: {@code i n}). */
    private void gemm(int m, int n, float[] a, int[] rowBase, int[] tapOff, int taps, int cin, float[] bp,
                      float[] init, MemorySegment cs, int[] outRow, float alpha, float beta) {
        int panels = GemmKernels.paddedCols(n) / NR;
        int tiles = (m + MR - 1) / MR;
        int blocks = (tiles + MB - 1) / MB;
        int kdim = taps * cin;
        pool.parallelFor(blocks * panels, task -> {
            int blk = task / panels, q = task % panels;
            float[] acc = new float[MR * NR];
            float[] in0 = Arrays.copyOfRange(init, q * NR, q * NR + NR);
            int[] rb = new int[MR];
            int cols = Math.min(NR, n - q * NR);
            for (int tIdx = blk * MB; tIdx < Math.min(tiles, blk * MB + MB); tIdx++) {
                int i0 = tIdx * MR;
                int rows = Math.min(MR, m - i0);
                for (int r = 0; r < MR; r++) {
                    rb[r] = rowBase[i0 + (r < rows ? r : 0)];
                }
                GemmKernels.tile(a, rb, tapOff, taps, cin, bp, q * kdim * NR, in0, acc);
                if (outRow == null) {
                    store(acc, rows, cols, cs, (long) i0 * n + (long) q * NR, n, alpha, beta);
                } else {
                    for (int r = 0; r < rows; r++) {
                        store(Arrays.copyOfRange(acc, r * NR, r * NR + NR), 1, cols, cs,
                                (long) outRow[i0 + r] + (long) q * NR, n, alpha, beta);
                    }
                }
            }
        });
    }

    /** Writes {@code rows x cols} of a micro-tile into C at element {@code off} (row stride {@code ldc}). */
    private static void store(float[] acc, int rows, int cols, MemorySegment cs, long off, int ldc, float alpha,
                              float beta) {
        if (cols == NR && alpha == 1f && beta == 0f) {
            // The common case (a whole tile of a convolution or linear layer): plain unmasked stores.
            for (int r = 0; r < rows; r++) {
                long byteOff = (off + (long) r * ldc) * Float.BYTES;
                FloatVector.fromArray(S, acc, r * NR).intoMemorySegment(cs, byteOff, NATIVE);
                FloatVector.fromArray(S, acc, r * NR + L).intoMemorySegment(cs, byteOff + (long) L * Float.BYTES,
                        NATIVE);
            }
            return;
        }
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c += L) {
                VectorMask<Float> mask = S.indexInRange(c, cols);
                long byteOff = (off + (long) r * ldc + c) * Float.BYTES;
                FloatVector v = FloatVector.fromArray(S, acc, r * NR + c);
                if (alpha != 1f) {
                    v = v.mul(alpha);
                }
                if (beta != 0f) {
                    v = v.add(FloatVector.fromMemorySegment(S, cs, byteOff, NATIVE, mask).mul(beta));
                }
                v.intoMemorySegment(cs, byteOff, NATIVE, mask);
            }
        }
    }

    /**
     * {@code dw[k, j] += sum_p a[pixBase[p] + rowOff[k]] dy[p, j]} for k < rowOff.length, j < ncols (dy packed
     * in panels by {@link #packPanels}): the
     * weight gradient im2col(x)^T dy. Each micro-tile sums fixed chunks of CHUNK pixels in registers and adds the
     * chunks in order (two-level summation keeps the float32 error near CHUNK + P/CHUNK terms instead of P).
     * Tasks are (group of row tiles, panel); a task walks the pixels once, so its dy chunk stays in cache while
     * every row tile of the group uses it.
     */
    private void weightGrad(float[] a, int[] pixBase, int pixels, int[] rowOff, float[] dyp, int ncols,
                            MemorySegment dw) {
        int rowsK = rowOff.length;
        int panels = GemmKernels.paddedCols(ncols) / NR;
        int tiles = (rowsK + MR - 1) / MR;
        int groups = Math.min(tiles, Math.max(1, (4 * pool.threads() + panels - 1) / panels));
        int perGroup = (tiles + groups - 1) / groups;
        int tasks = ((tiles + perGroup - 1) / perGroup) * panels;
        pool.parallelFor(tasks, task -> {
            int grp = task / panels, q = task % panels;
            int t0 = grp * perGroup, t1 = Math.min(tiles, t0 + perGroup);
            float[] sums = new float[(t1 - t0) * MR * NR];
            float[] part = new float[MR * NR];
            int[][] offs = new int[t1 - t0][MR];
            for (int t = t0; t < t1; t++) {
                for (int r = 0; r < MR; r++) {
                    int k = t * MR + r;
                    offs[t - t0][r] = rowOff[k < rowsK ? k : t * MR];
                }
            }
            for (int p0 = 0; p0 < pixels; p0 += CHUNK) {
                int p1 = Math.min(pixels, p0 + CHUNK);
                for (int t = t0; t < t1; t++) {
                    GemmKernels.tileT(a, pixBase, p0, p1, offs[t - t0], dyp, q * pixels * NR, part);
                    int so = (t - t0) * MR * NR;
                    for (int e = 0; e < MR * NR; e += L) {
                        FloatVector.fromArray(S, sums, so + e).add(FloatVector.fromArray(S, part, e))
                                .intoArray(sums, so + e);
                    }
                }
            }
            int cols = Math.min(NR, ncols - q * NR);
            for (int t = t0; t < t1; t++) {
                int rows = Math.min(MR, rowsK - t * MR);
                store(Arrays.copyOfRange(sums, (t - t0) * MR * NR, (t - t0 + 1) * MR * NR), rows, cols, dw,
                        (long) t * MR * ncols + (long) q * NR, ncols, 1f, 1f);
            }
        });
    }

    /** {@code db[j] += sum_p dy[p, j]}, in fixed chunks of CHUNK pixels summed in order; tasks own column vectors. */
    private void biasGrad(MemorySegment dy, int pixels, int cols, MemorySegment db) {
        int vecs = (cols + L - 1) / L;
        pool.parallelFor(vecs, vi -> {
            int c = vi * L;
            VectorMask<Float> mask = S.indexInRange(c, cols);
            FloatVector total = FloatVector.zero(S);
            for (int p0 = 0; p0 < pixels; p0 += CHUNK) {
                FloatVector part = FloatVector.zero(S);
                for (int p = p0; p < Math.min(pixels, p0 + CHUNK); p++) {
                    part = part.add(FloatVector.fromMemorySegment(S, dy, ((long) p * cols + c) * Float.BYTES,
                            NATIVE, mask));
                }
                total = total.add(part);
            }
            long off = (long) c * Float.BYTES;
            total.add(FloatVector.fromMemorySegment(S, db, off, NATIVE, mask)).intoMemorySegment(db, off, NATIVE,
                    mask);
        });
    }

    /** Sizes of one convolution and the offsets of its implicit GEMM in the padded input. */
    private static final class Geometry {
        final int n, h, w, cin, kh, kw, cout, stride, padding, ho, wo;

        Geometry(Tensor x, Tensor wt, int stride, int padding) {
            this(x.dim(0), x.dim(1), x.dim(2), x.dim(3), wt.dim(0), wt.dim(1), wt.dim(3), stride, padding);
        }

        Geometry(int n, int h, int w, int cin, int kh, int kw, int cout, int stride, int padding) {
            this.n = n;
            this.h = h;
            this.w = w;
            this.cin = cin;
            this.kh = kh;
            this.kw = kw;
            this.cout = cout;
            this.stride = stride;
            this.padding = padding;
            ho = (h + 2 * padding - kh) / stride + 1;
            wo = (w + 2 * padding - kw) / stride + 1;
        }

        int hp() {
            return h + 2 * padding;
        }

        int wp() {
            return w + 2 * padding;
        }

        /** Offset in the padded input of tap (0, 0) of each output pixel (n, oh, ow), in GEMM row order. */
        int[] outputPixelBases() {
            int[] r = new int[n * ho * wo];
            for (int b = 0, i = 0; b < n; b++) {
                for (int oh = 0; oh < ho; oh++) {
                    for (int ow = 0; ow < wo; ow++, i++) {
                        r[i] = ((b * hp() + oh * stride) * wp() + ow * stride) * cin;
                    }
                }
            }
            return r;
        }

        /** Offset of tap row (kh, 0) relative to tap (0, 0): the start of its run of KW Cin contiguous floats. */
        int[] rowTapOffsets() {
            int[] t = new int[kh];
            for (int a = 0; a < kh; a++) {
                t[a] = a * wp() * cin;
            }
            return t;
        }

        /** Offset of tap (kh, kw) relative to tap (0, 0), in the order of the HWIO weight rows. */
        int[] tapOffsets() {
            int[] t = new int[kh * kw];
            for (int a = 0; a < kh; a++) {
                for (int c = 0; c < kw; c++) {
                    t[a * kw + c] = (a * wp() + c) * cin;
                }
            }
            return t;
        }
    }
}
