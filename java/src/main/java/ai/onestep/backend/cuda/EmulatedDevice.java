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
         * Our tensor-core implicit GEMM ({@link #igemmConv}) for every convolution it takes, on the kept KRSC weights,
         * as {@link CudaDevice} runs it where it timed faster than cuDNN: {@link #TIMED}'s choices for convolutions
         * only, each decided for ours (the emulated mma.sync is slow; for tests and
         * {@code -Donestep.cuda.emulateIgemm=true}).
         */
        ALWAYS,
        /**
         * The timed choices a GPU makes ({@link #ownConv}, {@link #attentionKernel}), with the portable kernels as
         * the incumbents and the emulation's host clock as the timer: the same bookkeeping (first use outside a
         * capture, the reference check, the recorded verdicts). {@code forceChoice} decides them in tests, where the
         * clock says nothing.
         */
        TIMED
    }

    EmulatedDevice(String library, boolean krsc, boolean separateBias, Candidates candidates) {
        super(library);
        this.krsc = krsc;
        this.separateBias = separateBias;
        this.candidates = candidates != Candidates.NONE;
        ownConvolutions(this.candidates);
        splitKeys(candidates == Candidates.TIMED);
        pipelinedAttention(candidates == Candidates.TIMED);
        slabGroupNorm(candidates == Candidates.TIMED);
        clusterGroupNorm(candidates == Candidates.TIMED);
        fuseAttentionResidual(this.candidates);
        fuseResnetBlocks(this.candidates);
        if (candidates == Candidates.ALWAYS) {
            forceChoice = Boolean.TRUE;
        }
        choiceReps = 1;  // the emulation's times decide nothing: run each candidate twice, not 12 times
        timingWarmups = 1;
        useChoicesFile();
    }

    private final boolean separateBias;
    private final boolean candidates;

    /**
     * Three of the plain tiles, one each of 16, 32 and 64 rows (configs 1, 2 and 4): its clock decides nothing, so the
     * choices need only the bookkeeping a GPU's go through (the fastest of several, the tiles a shape refuses, the
     * agreement check), and each emulated tile run costs seconds (EmulatedDeviceTest's DeviceCheck pass went from
     * 270 to 383 s in CI once the up blocks' and the attention's norms were timed on all seven; 255 s with these
     * three). Not the cluster tiles: an emulated cluster runs
     * each of its blocks on an OS thread of its own (the same pass took 200 s longer when they were timed). test_conv
     * checks every tile's kernels, and IgemmConvTest runs the cluster tiles through {@link #igemmConv}.
     */
    @Override
    protected boolean timesTile(int config) {
        return config == 1 || config == 2 || config == 4;
    }

    @Override
    public boolean convUsesKrsc() {
        return krsc || candidates;
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

    /** The portable kernel on w, or (a KRSC device) on the kept KRSC copy transposed back. */
    @Override
    protected void libraryConv2d(long x, long w, long wKrsc, long bias, long y, int n, int h, int wd, int cin, int kh,
                                 int kw, int cout, int stride, int padding, Precision type, Scratch scratch,
                                 Supplier<String> what) {
        portableConv(x, hwio(w, wKrsc, (long) kh * kw * cin, cout, type, scratch, what), bias, 0, y, n, h, wd, cin, kh,
                kw, cout, stride, padding, type, what);
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
    protected void libraryConv2dResidual(long x, long w, long wKrsc, long bias, long z, long y, int n, int h, int wd,
                                         int cin, int kh, int kw, int cout, int stride, int padding, Precision type,
                                         Scratch scratch, Supplier<String> what) {
        portableConv(x, hwio(w, wKrsc, (long) kh * kw * cin, cout, type, scratch, what), bias, z, y, n, h, wd, cin, kh,
                kw, cout, stride, padding, type, what);
    }

    /** The weights the portable kernels read: w, or (a KRSC device) the kept KRSC copy transposed back. */
    private long hwio(long w, long wKrsc, long rows, int cout, Precision type, Scratch scratch, Supplier<String> what) {
        if (!krsc || wKrsc == 0) {
            return w;  // (a device with candidates keeps KRSC copies for igemmConv; the portable kernels read w)
        }
        long weights = scratch.allocate(rows * cout * type.bytes, "conv2d HWIO weights from KRSC");
        transpose(wKrsc, weights, cout, Math.toIntExact(rows), type, what);
        return weights;
    }
}
