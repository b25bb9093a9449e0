package ai.onestep.backend.cuda;

import static ai.onestep.kernels.OnestepKernels.*;

import java.util.function.Supplier;

/**
 * The device of the emulated library (kernels/emu, built by cmake with the host compiler): the same kernel sources
 * as the GPU build, run on the CPU. GEMM, linear and convolution use the library's portable kernels (cuBLAS and
 * cuDNN cannot be emulated). Slow, and meant for tests: it checks the backend's logic (arena, launch sequence,
 * graph capture, errors) and our kernels' numerics without a GPU.
 */
public final class EmulatedDevice extends Device {
    private final boolean krsc;

    EmulatedDevice(String library) {
        this(library, false);
    }

    /**
     * With {@code krsc}, a device whose convolutions take cuDNN's KRSC weights, as {@link CudaDevice}'s do: each
     * conv2d given a KRSC copy transposes it back into scratch and runs the portable kernel on that, so a stale or
     * wrong copy shows in the result (for tests of the backend's kept copies).
     */
    EmulatedDevice(String library, boolean krsc) {
        this(library, krsc, false);
    }

    /**
     * With {@code separateBias} also, one whose convolutions and linears report their bias as a kernel of its own, as
     * cuDNN's and cuBLAS's routes do, so the backend leaves biases to the ops that read the results (for tests of
     * the pending-bias bookkeeping: the portable kernels then run without the bias, and a lost bias shows).
     */
    EmulatedDevice(String library, boolean krsc, boolean separateBias) {
        this(library, krsc, separateBias, Candidates.NONE);
    }

    /** {@code igemm}: {@link Candidates#ALWAYS}, else {@link Candidates#NONE}. */
    EmulatedDevice(String library, boolean krsc, boolean separateBias, boolean igemm) {
        this(library, krsc, separateBias, igemm ? Candidates.ALWAYS : Candidates.NONE);
    }

    /** Whether this device's convolutions and attention run our candidate kernels (the ones a GPU times). */
    enum Candidates {
        /** The portable kernels and the default attention kernel only. */
        NONE,
        /**
         * Our tensor-core implicit GEMM ({@link #igemmConv}, its tile picked by the library) wherever it takes the
         * shape, on the kept KRSC weights, as {@link CudaDevice} does where it timed faster than cuDNN: the Java side
         * of that route under the emulated mma.sync (slow; for tests and {@code -Donestep.cuda.emulateIgemm=true}).
         */
        ALWAYS,
        /**
         * The timed choices of {@link CudaDevice} itself ({@link #ownConv}, {@link #attentionKernel}), with the
         * portable kernels as the incumbents and the emulation's host clock as the timer: the same bookkeeping
         * (first use outside a capture, scratch that repeats, the reference check, the recorded verdicts) that a GPU
         * runs. {@code forceChoice} decides them in tests, where the clock says nothing.
         */
        TIMED
    }

    EmulatedDevice(String library, boolean krsc, boolean separateBias, Candidates candidates) {
        super(library);
        this.krsc = krsc;
        this.separateBias = separateBias;
        this.igemm = candidates == Candidates.ALWAYS;
        this.timed = candidates == Candidates.TIMED;
        ownConvolutions(timed);
        splitKeys(timed);
        choiceReps = 1;  // the emulation's times decide nothing: run each candidate 3 times, not 12
    }

    private final boolean separateBias;
    private final boolean igemm;
    private final boolean timed;

    @Override
    public boolean convUsesKrsc() {
        return krsc || igemm || timed;
    }

    @Override
    public void attentionQkv(long qkv, long bias, long o, long lse, int n, int heads, int t, int d, Precision type,
                             Supplier<String> what) {
        attentionQkv(qkv, bias, o, lse, n, heads, t, d, attentionKernel(qkv, bias, o, lse, n, heads, t, d, type, what),
                type, what);
    }

    @Override
    public boolean convBiasSeparate() {
        return separateBias;
    }

    @Override
    public boolean linearBiasSeparate(long rows) {
        return separateBias;
    }

    @Override
    public String kind() {
        return "emulated";
    }

    @Override
    String denseRoute() {
        return "portable kernels";
    }

    @Override
    public void gemm(long a, boolean transA, long b, boolean transB, long c, int m, int n, int k, float alpha, float beta,
                     Precision type, Supplier<String> what) {
        check(onestep_gemm_typed(a, transA ? 1 : 0, b, transB ? 1 : 0, c, m, n, k, alpha, beta, type.code, stream()),
                "matmul", what);
    }

    @Override
    public void linear(long x, long w, long bias, long y, long rows, int in, int out, Precision type,
                       Supplier<String> what) {
        check(onestep_linear_typed(x, w, bias, y, rows, in, out, type.code, stream()), "linear", what);
    }

    @Override
    public void conv2d(long x, long w, long wKrsc, long bias, long y, int n, int h, int wd, int cin, int kh, int kw,
                       int cout, int stride, int padding, Precision type, Scratch scratch, Supplier<String> what) {
        if (igemm && igemmTakes(x, wKrsc, cin, type)) {
            igemmConv(x, wKrsc, bias, 0, y, n, h, wd, cin, kh, kw, cout, stride, padding, 0, type, what);
            return;
        }
        if (ownConv("conv," + shapeKey(n, h, wd, cin, kh, kw, cout, stride, padding, type),
                igemmTakes(x, wKrsc, cin, type), y, outElems(n, h, wd, kh, kw, cout, stride, padding), type, what,
                c -> igemmConv(x, wKrsc, bias, 0, y, n, h, wd, cin, kh, kw, cout, stride, padding, c, type, what),
                s -> portableConv(x, w, wKrsc, bias, 0, y, n, h, wd, cin, kh, kw, cout, stride, padding, type, s, what),
                ref -> portableConv(x, w, 0, bias, 0, ref, n, h, wd, cin, kh, kw, cout, stride, padding, type, null,
                        what))) {
            return;
        }
        portableConv(x, w, wKrsc, bias, 0, y, n, h, wd, cin, kh, kw, cout, stride, padding, type, scratch, what);
    }

    /** The portable kernel, with the residual z (or 0) in its epilogue; on w, or the KRSC copy transposed back. */
    private void portableConv(long x, long w, long wKrsc, long bias, long z, long y, int n, int h, int wd, int cin,
                              int kh, int kw, int cout, int stride, int padding, Precision type, Scratch scratch,
                              Supplier<String> what) {
        long weights = hwio(w, wKrsc, (long) kh * kw * cin, cout, type, scratch, what);
        check(z == 0 ? onestep_conv2d_nhwc_typed(x, weights, bias, y, n, h, wd, cin, kh, kw, cout, stride, padding,
                type.code, stream()) : onestep_conv2d_nhwc_residual_typed(x, weights, bias, z, y, n, h, wd, cin, kh, kw,
                cout, stride, padding, type.code, stream()), z == 0 ? "conv2d" : "conv2dResidual", what);
    }

    @Override
    public boolean convFusesResidual() {
        return true;
    }

    @Override
    public boolean linearFusesResidual() {
        return true;
    }

    /** The portable linear with the residual summed before its store: one launch, as cuBLASLt's is on a GPU. */
    @Override
    public void linearResidual(long x, long w, long bias, long z, long y, long rows, int in, int out, Precision type,
                               Supplier<String> what) {
        check(onestep_linear_residual_typed(x, w, bias, z, y, rows, in, out, type.code, stream()), "linearResidual",
                what);
    }

    /** The portable kernel with the residual (or just the bias) in its epilogue: one launch, as cuDNN's is. */
    @Override
    public void conv2dResidual(long x, long w, long wKrsc, long bias, long z, long y, int n, int h, int wd, int cin,
                               int kh, int kw, int cout, int stride, int padding, Precision type, Scratch scratch,
                               Supplier<String> what) {
        if (igemm && igemmTakes(x, wKrsc, cin, type)) {
            igemmConv(x, wKrsc, bias, z, y, n, h, wd, cin, kh, kw, cout, stride, padding, 0, type, what);
            return;
        }
        if (ownConv((z == 0 ? "biased," : "residual,") + shapeKey(n, h, wd, cin, kh, kw, cout, stride, padding, type),
                igemmTakes(x, wKrsc, cin, type), y, outElems(n, h, wd, kh, kw, cout, stride, padding), type, what,
                c -> igemmConv(x, wKrsc, bias, z, y, n, h, wd, cin, kh, kw, cout, stride, padding, c, type, what),
                s -> portableConv(x, w, wKrsc, bias, z, y, n, h, wd, cin, kh, kw, cout, stride, padding, type, s, what),
                ref -> portableConv(x, w, 0, bias, z, ref, n, h, wd, cin, kh, kw, cout, stride, padding, type, null,
                        what))) {
            return;
        }
        portableConv(x, w, wKrsc, bias, z, y, n, h, wd, cin, kh, kw, cout, stride, padding, type, scratch, what);
    }

    /** The portable transposed convolution, or (an igemm device) our implicit GEMM on the 3x3 KRSC weights. */
    @Override
    public void upsampleConv(long x, long w, long wKrsc, long k, long bias, long y, int n, int h, int wd, int cin,
                             int cout, Precision type, Scratch scratch, Supplier<String> what) {
        if (igemm && igemmTakes(x, wKrsc, cin, type)) {
            igemmUpsampleConv(x, wKrsc, bias, y, n, h, wd, cin, cout, 0, type, what);
            return;
        }
        if (ownConv("upsample," + shapeKey(n, h, wd, cin, 3, 3, cout, 1, 1, type), igemmTakes(x, wKrsc, cin, type), y,
                4L * n * h * wd * cout, type, what,
                c -> igemmUpsampleConv(x, wKrsc, bias, y, n, h, wd, cin, cout, c, type, what),
                s -> super.upsampleConv(x, w, wKrsc, k, bias, y, n, h, wd, cin, cout, type, s, what),
                ref -> super.upsampleConv(x, w, wKrsc, k, bias, ref, n, h, wd, cin, cout, type, null, what))) {
            return;
        }
        super.upsampleConv(x, w, wKrsc, k, bias, y, n, h, wd, cin, cout, type, scratch, what);
    }

    /** The weights the portable kernels read: w, or (a KRSC device) the kept KRSC copy transposed back. */
    private long hwio(long w, long wKrsc, long rows, int cout, Precision type, Scratch scratch, Supplier<String> what) {
        if (!krsc || wKrsc == 0) {
            return w;  // (an igemm-only device keeps KRSC copies for igemmConv; its other convolutions read w)
        }
        long weights = scratch.allocate(rows * cout * type.bytes, "conv2d HWIO weights from KRSC");
        transpose(wKrsc, weights, cout, Math.toIntExact(rows), type, what);
        return weights;
    }
}
