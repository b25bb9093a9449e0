package ai.onestep.backend;

import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;

/**
 * The operations the U-Net and its training loops need, forward and backward, on one backend.
 *
 * <p>Every public method validates its arguments (ranks, shapes, layouts, open arenas) and then calls the
 * backend's kernel, so every backend rejects bad input with the same message, naming the op and the shapes.
 * Kernels may assume valid arguments.
 *
 * <h2>Conventions (written once, followed everywhere)</h2>
 * <ul>
 *   <li>Feature maps are NHWC: (batch, height, width, channels). Conv weights are HWIO: (kh, kw, in, out).
 *       Linear weights are (in, out). Token sequences are (batch, tokens, channels).</li>
 *   <li>Backward: gradients of <b>parameters</b> (weights, biases, gamma, beta) ACCUMULATE ({@code +=}), so a
 *       parameter used twice, or several micro-batches, sum naturally. Gradients of <b>inputs</b> (activations)
 *       are ASSIGNED ({@code =}); a caller that needs to add into an existing gradient (a skip connection) uses
 *       {@link #axpy}. Any gradient argument may be {@code null} when the caller does not need it.</li>
 *   <li>Outputs never alias inputs unless the method says so.</li>
 *   <li>For a given input, results are bit-identical whatever the number of threads.</li>
 * </ul>
 */
public abstract class Ops {

    /** {@code naive}, {@code cpu}, {@code cuda} (or {@code cuda-emulated}). */
    public abstract String name();

    /**
     * Runs {@code body}, one pass that reads {@code inputs} and leaves its results in {@code outputs} (for example
     * one denoiser call). A host backend just runs it. The CUDA backend keeps every tensor on the device for the
     * whole pass and captures it as a CUDA graph once per key and shapes, then replays the graph; so {@code key}
     * must carry every scalar that the body bakes into its ops (time points, for example), and the body must issue
     * the same ops for the same key and shapes, read no host tensor written by an op, and write no tensor on the
     * host after an op used it.
     */
    public void runPass(String key, Tensor[] inputs, Tensor[] outputs, Runnable body) {
        body.run();
    }

    /**
     * The backend for work inside a pass that depends only on what the pass's key fixes and on {@code reads}, the
     * weights it reads (a U-Net's time path: the timestep embedding and every block's time projection, functions
     * of the time points and labels; an attention block's concatenated q/k/v weights, a function of the weights
     * alone). A host backend answers itself. The cuda backend, inside a captured pass
     * ({@link #runPass}, not {@link #runResident}) and while none of {@code reads} is training state it owns
     * ({@link #adopt}), answers with a host backend: the work then runs on the host each time the pass body runs
     * (its measuring run, its warm-up and its capture; never on a replay), and its results enter the pass as
     * constants, uploaded once, so the graph launches none of it (constant folding). The caller must keep those
     * results in host memory that no other values overwrite while the pass may be replayed (the same memory for
     * the same key), as a pass reads host data once.
     */
    public Ops passConstants(java.util.List<Tensor> reads) {
        return this;
    }

    /**
     * Runs {@code body}, a block of ops whose only results the host needs afterwards are {@code results} (a
     * training step's forward, loss and backward, whose results are the parameters' gradients). A host backend
     * just runs it. The CUDA backend keeps every tensor the block touches on the device until its end and copies
     * back only those {@code results} it does not own ({@link #adopt}): an op-by-op step copies every op's inputs
     * to the device and its outputs back. Ops
     * that return a host value (the losses, sumOfSquares) work inside. The body must read no tensor that an op of
     * the block wrote except through ops (or {@code results}, after the block), must write no tensor on the host
     * after an op of the block read it, and must change no host state except through ops' outputs (it may be
     * started over op by op when it meets an op the device lacks). Parameter updates do not belong inside.
     */
    public void runResident(String key, Tensor[] results, Runnable body) {
        body.run();
    }

    /**
     * Training state (parameters, gradients, optimizer moments, EMA copies): from now on only this backend's ops
     * read and write these tensors, until {@link #release}. A device backend keeps them on the device, so an
     * optimizer step moves no data; their host copies are then stale until {@link #syncToHost}. Host backends
     * ignore this. Use {@code nn.TrainingState}, which pairs it with the release.
     */
    public void adopt(java.util.List<Tensor> tensors) {
    }

    /** Makes the host copies of adopted tensors current (before a checkpoint reads them). */
    public void syncToHost(java.util.List<Tensor> tensors) {
    }

    /** Syncs adopted tensors to the host and gives them back to it. */
    public void release(java.util.List<Tensor> tensors) {
    }

    /**
     * True where {@link #runPass} records a pass and replays it without running the body again (the cuda
     * backend): a caller then gets no callback from inside a replayed pass, so a progress report has to come after.
     */
    public boolean capturesPasses() {
        return false;
    }

    /**
     * Declares {@code tensors} as a model's parameters: they change only through this backend's optimizer and EMA
     * ops (or before registration). A device backend keeps one copy of them on the device, shared by every pass;
     * host backends ignore this.
     */
    public void registerParameters(java.util.List<Tensor> tensors) {
    }

    // ------------------------------------------------------------------------------------------------
    // GEMM, linear, convolution
    // ------------------------------------------------------------------------------------------------

    /**
     * {@code c = alpha * op(a) * op(b) + beta * c}, where {@code op(a)} is (M, K): {@code a} is (M, K), or (K, M)
     * when {@code transA}; {@code op(b)} is (K, N): {@code b} is (K, N), or (N, K) when {@code transB}. All rank 2.
     * With {@code beta == 0} the old contents of {@code c} are ignored (even NaN).
     */
    public final void matmul(Tensor a, boolean transA, Tensor b, boolean transB, Tensor c, float alpha, float beta) {
        String op = "matmul";
        alive(op, a, b, c);
        rank(op, "a", a, 2);
        rank(op, "b", b, 2);
        rank(op, "c", c, 2);
        int m = transA ? a.dim(1) : a.dim(0);
        int k = transA ? a.dim(0) : a.dim(1);
        int kb = transB ? b.dim(1) : b.dim(0);
        int n = transB ? b.dim(0) : b.dim(1);
        if (k != kb || c.dim(0) != m || c.dim(1) != n) {
            throw new TensorException(op + ": op(a) is " + m + "x" + k + ", op(b) is " + kb + "x" + n + ", c is "
                    + c.dim(0) + "x" + c.dim(1) + " (a " + a.describe() + (transA ? " transposed" : "") + ", b "
                    + b.describe() + (transB ? " transposed" : "") + ", c " + c.describe() + ")");
        }
        matmulKernel(a, transA, b, transB, c, m, n, k, alpha, beta);
    }

    protected abstract void matmulKernel(Tensor a, boolean transA, Tensor b, boolean transB, Tensor c,
                                         int m, int n, int k, float alpha, float beta);

    /**
     * {@code y = x w + b}: x is (..., K) (any rank >= 1; leading dimensions are rows), w is (K, N), b is (N) or
     * null, y is (..., N) with the same leading dimensions.
     */
    public final void linear(Tensor x, Tensor w, Tensor b, Tensor y) {
        String op = "linear";
        alive(op, x, w, b, y);
        int rows = linearRows(op, x, w, y);
        if (b != null) {
            shape(op, "bias b", b, w.dim(1));
        }
        linearKernel(x, w, b, y, rows, w.dim(0), w.dim(1));
    }

    protected abstract void linearKernel(Tensor x, Tensor w, Tensor b, Tensor y, int rows, int in, int out);

    /**
     * {@code y = x w + b + z}: a linear and a residual z of y's shape (an attention block's output projection and its
     * residual); y must not alias z. Meant for inference graphs where {@link #fusesResidual} holds.
     */
    public final void linearResidual(Tensor x, Tensor w, Tensor b, Tensor z, Tensor y) {
        String op = "linearResidual";
        if (z == null) {
            throw new TensorException(op + ": residual z is null");
        }
        alive(op, x, w, b, z, y);
        int rows = linearRows(op, x, w, y);
        sameShape(op, "residual z", z, "y", y);
        if (b != null) {
            shape(op, "bias b", b, w.dim(1));
        }
        linearResidualKernel(x, w, b, z, y, rows, w.dim(0), w.dim(1));
    }

    /** Host backends: {@link #linearKernel}, then {@link #addKernel} of z (linear and then add's bits). */
    protected void linearResidualKernel(Tensor x, Tensor w, Tensor b, Tensor z, Tensor y, int rows, int in, int out) {
        linearKernel(x, w, b, y, rows, in, out);
        addKernel(z, y, y);
    }

    /** Backward of {@link #linear}: {@code dx = dy w^T} (assigned), {@code dw += x^T dy}, {@code db += sum(dy)}. */
    public final void linearBackward(Tensor x, Tensor w, Tensor dy, Tensor dx, Tensor dw, Tensor db) {
        String op = "linearBackward";
        alive(op, x, w, dy, dx, dw, db);
        int rows = linearRows(op, x, w, dy);
        sameShape(op, "dx", dx, "x", x);
        sameShape(op, "dw", dw, "w", w);
        if (db != null) {
            shape(op, "db", db, w.dim(1));
        }
        linearBackwardKernel(x, w, dy, dx, dw, db, rows, w.dim(0), w.dim(1));
    }

    protected abstract void linearBackwardKernel(Tensor x, Tensor w, Tensor dy, Tensor dx, Tensor dw, Tensor db,
                                                 int rows, int in, int out);

    private static int linearRows(String op, Tensor x, Tensor w, Tensor y) {
        rank(op, "weight w", w, 2);
        if (x.rank() < 1 || x.dim(-1) != w.dim(0)) {
            throw new TensorException(op + ": x " + x.describe() + " must end in " + w.dim(0)
                    + " features to match w " + w.describe() + " (in, out)");
        }
        int[] ys = x.shape();
        ys[ys.length - 1] = w.dim(1);
        shape(op, "y", y, ys);
        return (int) (x.size() / w.dim(0));
    }

    /**
     * 2-D convolution (cross-correlation, as in PyTorch): x (N, H, W, Cin) NHWC, w (KH, KW, Cin, Cout) HWIO,
     * b (Cout) or null, y (N, Ho, Wo, Cout) NHWC with {@code Ho = (H + 2 padding - KH) / stride + 1}.
     * Zero padding on all four sides.
     */
    public final void conv2d(Tensor x, Tensor w, Tensor b, int stride, int padding, Tensor y) {
        checkConv("conv2d", x, w, b, null, stride, padding, y);
        convKernel(x, w, b, stride, padding, y);
    }

    /** A convolution's operands, and a residual z of y's shape unless null. */
    private static void checkConv(String op, Tensor x, Tensor w, Tensor b, Tensor z, int stride, int padding,
                                  Tensor y) {
        checkConv(op, x, w, b, z, stride, padding, "y", y);
    }

    /** {@link #checkConv(String, Tensor, Tensor, Tensor, Tensor, int, int, Tensor)} with the output named yName. */
    private static void checkConv(String op, Tensor x, Tensor w, Tensor b, Tensor z, int stride, int padding,
                                  String yName, Tensor y) {
        alive(op, x, w, b, z, y);
        int[] o = convShapes(op, x, w, stride, padding);
        shape(op, yName, y, o);
        if (z != null) {
            shape(op, "residual z", z, o);
        }
        if (b != null) {
            shape(op, "bias b", b, w.dim(3));
        }
    }

    protected abstract void convKernel(Tensor x, Tensor w, Tensor b, int stride, int padding, Tensor y);

    /**
     * {@link #conv2d} whose bias the convolution applies itself, never left for the result's readers to add: for
     * results that a residual op reads, where a bias left pending would cost a kernel ({@link #fusesResidual}: the
     * U-Net's conv_in and downsamplers, whose outputs are the next block's residual). Host backends: conv2d.
     */
    public final void conv2dBiased(Tensor x, Tensor w, Tensor b, int stride, int padding, Tensor y) {
        checkConv("conv2d", x, w, b, null, stride, padding, y);
        convBiasedKernel(x, w, b, stride, padding, y);
    }

    /** Host backends: {@link #convKernel} (they add a bias as they compute anyway). */
    protected void convBiasedKernel(Tensor x, Tensor w, Tensor b, int stride, int padding, Tensor y) {
        convKernel(x, w, b, stride, padding, y);
    }

    /**
     * {@code y = conv2d(x, w, b) + z}: a convolution and a residual z of y's shape (ResnetBlock2D's conv2 and its
     * shortcut); y must not alias z. Meant for inference graphs where {@link #fusesResidual} holds.
     */
    public final void conv2dResidual(Tensor x, Tensor w, Tensor b, Tensor z, int stride, int padding, Tensor y) {
        if (z == null) {
            throw new TensorException("conv2dResidual: residual z is null");
        }
        checkConv("conv2dResidual", x, w, b, z, stride, padding, y);
        convResidualKernel(x, w, b, z, stride, padding, y);
    }

    /** Host backends: {@link #convKernel}, then {@link #addKernel} of z (conv2d and then add's bits). */
    protected void convResidualKernel(Tensor x, Tensor w, Tensor b, Tensor z, int stride, int padding, Tensor y) {
        convKernel(x, w, b, stride, padding, y);
        addKernel(z, y, y);
    }

    /**
     * True where {@link #conv2dResidual} and {@link #linearResidual} run as one launch each in the work being recorded
     * now, so a model should call them instead of the op then add (folding a shortcut convolution's bias into the
     * convolution's with {@link #passConstants}): the cuda backend inside a captured pass that folds constants
     * (cuDNN's conv + bias + z, cuBLASLt's bias epilogue with C = z). Host backends answer false: there the add is a
     * small part of the op's time.
     */
    public boolean fusesResidual() {
        return false;
    }

    /**
     * {@code y = conv2d(upsampleNearest2x(x), w, b, 1, 1)} for 3x3 weights w (HWIO, Cin = x's channels): diffusers'
     * Upsample2D as one op. x (N, H, W, Cin), b (Cout) or null, y (N, 2H, 2W, Cout), not overlapping x. The cuda
     * backend runs it as the equivalent stride-2 transposed convolution (4 multiply-adds per output instead of 9, no
     * upsampled tensor; kernels/src/layers.cu derives it), where {@link #fusesUpsampleConv} holds; results then
     * differ from the two ops by the rounding of the summed weights.
     */
    public final void upsampleConv2d(Tensor x, Tensor w, Tensor b, Tensor y) {
        String op = "upsampleConv2d";
        alive(op, x, w, b, y);
        int[] o = convShapes(op, x, w, 1, 1);
        if (w.dim(0) != 3 || w.dim(1) != 3) {
            throw new TensorException(op + ": weight w " + w.describe() + " must be 3x3");
        }
        shape(op, "y", y, o[0], 2 * o[1], 2 * o[2], o[3]);
        if (b != null) {
            shape(op, "bias b", b, w.dim(3));
        }
        disjoint(op, "y", y, "x", x);
        upsampleConvKernel(x, w, b, y);
    }

    /** Host backends: {@link #upsampleKernel} into a temporary, then {@link #convKernel}. */
    protected void upsampleConvKernel(Tensor x, Tensor w, Tensor b, Tensor y) {
        try (TensorArena tmp = new TensorArena()) {
            Tensor up = tmp.allocate(Layout.NHWC, x.dim(0), 2 * x.dim(1), 2 * x.dim(2), x.dim(3));
            upsampleKernel(x, up);
            convKernel(up, w, b, 1, 1, y);
        }
    }

    /**
     * True where {@link #upsampleConv2d} is one launch in the work being recorded now, so a model should call it
     * instead of the upsampling and the convolution: the cuda backend inside a pass. Host backends answer false.
     */
    public boolean fusesUpsampleConv() {
        return false;
    }

    /** Backward of {@link #conv2d}: dx assigned; dw and db accumulate. */
    public final void conv2dBackward(Tensor x, Tensor w, Tensor dy, int stride, int padding,
                                     Tensor dx, Tensor dw, Tensor db) {
        String op = "conv2dBackward";
        alive(op, x, w, dy, dx, dw, db);
        int[] o = convShapes(op, x, w, stride, padding);
        shape(op, "dy", dy, o);
        sameShape(op, "dx", dx, "x", x);
        sameShape(op, "dw", dw, "w", w);
        if (db != null) {
            shape(op, "db", db, w.dim(3));
        }
        convBackwardKernel(x, w, dy, stride, padding, dx, dw, db);
    }

    protected abstract void convBackwardKernel(Tensor x, Tensor w, Tensor dy, int stride, int padding,
                                               Tensor dx, Tensor dw, Tensor db);

    /** The output shape of a convolution, after checking its inputs. */
    public static int[] convOutputShape(Tensor x, Tensor w, int stride, int padding) {
        return convShapes("conv2d", x, w, stride, padding);
    }

    private static int[] convShapes(String op, Tensor x, Tensor w, int stride, int padding) {
        featureMap(op, "x", x);
        rank(op, "weight w", w, 4);
        layout(op, "weight w", w, Layout.HWIO);
        if (w.dim(2) != x.dim(3)) {
            throw new TensorException(op + ": weight w " + w.describe() + " expects " + w.dim(2)
                    + " input channels but x " + x.describe() + " has " + x.dim(3));
        }
        if (stride < 1 || padding < 0) {
            throw new TensorException(op + ": stride " + stride + " and padding " + padding
                    + " must be >= 1 and >= 0");
        }
        int ho = Math.floorDiv(x.dim(1) + 2 * padding - w.dim(0), stride) + 1;
        int wo = Math.floorDiv(x.dim(2) + 2 * padding - w.dim(1), stride) + 1;
        if (ho < 1 || wo < 1) {
            throw new TensorException(op + ": kernel " + w.dim(0) + "x" + w.dim(1) + " with padding " + padding
                    + " does not fit x " + x.describe());
        }
        return new int[] {x.dim(0), ho, wo, w.dim(3)};
    }

    // ------------------------------------------------------------------------------------------------
    // Normalization and activations
    // ------------------------------------------------------------------------------------------------

    /**
     * Group norm (Wu & He 2018) over NHWC, with the fusions the U-Net's ResnetBlock2D uses:
     * <pre>
     *   h = (x - mean[n,g]) * rstd[n,g] * gamma[c] + beta[c]          (statistics over H, W and the group's channels)
     *   h = h * (1 + scale[n,c]) + shift[n,c]                          (only when scale/shift are given)
     *   y = silu ? h * sigmoid(h) : h
     * </pre>
     * x and y are (N, H, W, C), C divisible by {@code groups}; gamma and beta are (C); scale and shift are both
     * (N, C) or both null. {@code mean} and {@code rstd} (N, groups) receive the statistics for the backward pass;
     * {@code rstd = 1 / sqrt(var + eps)} with the biased variance, as in PyTorch. y may alias x.
     */
    public final void groupNorm(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups,
                                float eps, boolean silu, Tensor y, Tensor mean, Tensor rstd) {
        groupNorm(x, null, gamma, beta, scale, shift, groups, eps, silu, y, mean, rstd);
    }

    /**
     * {@link #groupNorm} of {@code x + add[n, c]}, with {@code add} (N, C) or null: ResnetBlock2D's
     * {@code norm2(h + time_emb_proj(temb))} (Ho et al. 2020's time conditioning, diffusers' default
     * time_embedding_norm) in one op, where a backend can fuse it (CUDA adds it on the fly and never stores the sum).
     * A forward-only fusion: mean and rstd are those of x + add, and {@link #groupNormBackward} wants the sum itself,
     * so a training pass materializes it ({@link #addPerChannel}) and normalizes that.
     */
    public final void groupNorm(Tensor x, Tensor add, Tensor gamma, Tensor beta, Tensor scale, Tensor shift,
                                int groups, float eps, boolean silu, Tensor y, Tensor mean, Tensor rstd) {
        String op = silu ? "groupNormSilu" : "groupNorm";
        alive(op, x, add, gamma, beta, scale, shift, y, mean, rstd);
        checkNormOf(op, x, add, gamma, beta, scale, shift, groups, eps, "y", y, mean, rstd);
        groupNormKernel(x, add, gamma, beta, scale, shift, groups, eps, silu, y, mean, rstd);
    }

    /**
     * {@code y = conv2d(g, w, b) (+ z)} with {@code g} = {@link #groupNorm} (+ SiLU) of {@code x + add[n, c]}, as one
     * op: a ResnetBlock2D's norm1 and conv1, or norm2 and conv2 with its residual z (y must not alias z), or the
     * U-Net's conv_norm_out and conv_out, at inference where {@link #fusesNormConv} holds. g (x's shape), mean and
     * rstd (N, groups) are the norm's outputs, which a backend that fuses the two (the cuda backend's convolution with
     * the group norm as its prologue) may leave unwritten: read y only. Host backends run the two ops, with their bits.
     */
    public final void groupNormConv2d(Tensor x, Tensor add, Tensor gamma, Tensor beta, int groups, float eps,
                                      boolean silu, Tensor g, Tensor mean, Tensor rstd, Tensor w, Tensor b, Tensor z,
                                      int stride, int padding, Tensor y) {
        String op = silu ? "groupNormSiluConv2d" : "groupNormConv2d";
        alive(op, x, add, gamma, beta, g, mean, rstd);
        checkNormOf(op, x, add, gamma, beta, null, null, groups, eps, "g", g, mean, rstd);
        checkConv(op, g, w, b, z, stride, padding, y);
        disjoint(op, "y", y, "x", x);
        disjoint(op, "y", y, "g", g);
        if (z != null) {
            disjoint(op, "y", y, "residual z", z);
        }
        groupNormConvKernel(x, add, gamma, beta, groups, eps, silu, g, mean, rstd, w, b, z, stride, padding, y);
    }

    /**
     * A whole ResnetBlock2D at inference where {@link #fusesNormConv} and {@link #fusesResidual} hold (diffusers'
     * default time_embedding_norm, no conv_shortcut, output scale 1), as one op:
     * {@code h = conv2d(g1, w1, b1)} with {@code g1} = {@link #groupNorm} + SiLU of x, then
     * {@code y = conv2d(g2, w2, b2) + x} with {@code g2} = {@link #groupNorm} + SiLU of {@code h + add[n, c]} (add, the
     * block's time projection (N, C), or null); 3x3 'same' convolutions of C channels, norm1 and norm2 both of
     * {@code groups} groups with eps. g1, h, g2 and the norms' mean and rstd are the ops' outputs, which a backend that
     * fuses the block (the cuda backend's one launch for its small levels) may leave unwritten: read y only. Host
     * backends run {@link #groupNormConv2d} twice, with its bits.
     */
    public final void resnetBlock2d(Tensor x, Tensor add, Tensor gamma1, Tensor beta1, Tensor g1, Tensor mean1,
                                    Tensor rstd1, Tensor w1, Tensor b1, Tensor h, Tensor gamma2, Tensor beta2,
                                    Tensor g2, Tensor mean2, Tensor rstd2, Tensor w2, Tensor b2, int groups, float eps,
                                    Tensor y) {
        String op = "resnetBlock2d";
        alive(op, x, add, gamma1, beta1, g1, mean1, rstd1, w1, b1, h, gamma2, beta2, g2, mean2, rstd2, w2, b2, y);
        checkNormOf(op, x, null, gamma1, beta1, null, null, groups, eps, "g1", g1, mean1, rstd1);
        checkConv(op, g1, w1, b1, null, 1, 1, h);
        checkNormOf(op, h, add, gamma2, beta2, null, null, groups, eps, "g2", g2, mean2, rstd2);
        checkConv(op, g2, w2, b2, x, 1, 1, y);
        if (w1.dim(0) != 3 || w1.dim(1) != 3 || w2.dim(0) != 3 || w2.dim(1) != 3 || h.dim(3) != x.dim(3)) {
            throw new TensorException(op + ": 3x3 convolutions that keep x's " + x.dim(3) + " channels are required "
                    + "(w1 " + w1.describe() + ", w2 " + w2.describe() + ", h " + h.describe() + ")");
        }
        disjoint(op, "y", y, "x", x);
        disjoint(op, "y", y, "h", h);
        disjoint(op, "h", h, "x", x);
        resnetBlockKernel(x, add, gamma1, beta1, g1, mean1, rstd1, w1, b1, h, gamma2, beta2, g2, mean2, rstd2, w2, b2,
                groups, eps, y);
    }

    /** {@link #resnetBlock2d}'s work, its arguments checked: the two fused norm-convolution ops. */
    protected void resnetBlockKernel(Tensor x, Tensor add, Tensor gamma1, Tensor beta1, Tensor g1, Tensor mean1,
                                     Tensor rstd1, Tensor w1, Tensor b1, Tensor h, Tensor gamma2, Tensor beta2,
                                     Tensor g2, Tensor mean2, Tensor rstd2, Tensor w2, Tensor b2, int groups, float eps,
                                     Tensor y) {
        groupNormConv2d(x, null, gamma1, beta1, groups, eps, true, g1, mean1, rstd1, w1, b1, null, 1, 1, h);
        groupNormConv2d(h, add, gamma2, beta2, groups, eps, true, g2, mean2, rstd2, w2, b2, x, 1, 1, y);
    }

    /**
     * An up block's ResnetBlock2D as one op, at inference where {@link #fusesNormConv} and {@link #fusesResidual} hold
     * (diffusers' default time_embedding_norm, output scale 1): {@code x = cat(a, b)} along channels into cat, then
     * {@code h = conv2d(g1, w1, b1)} with {@code g1} = {@link #groupNorm} + SiLU of x, {@code sc = conv2d(x, wShortcut)}
     * (the 1x1 conv_shortcut without its bias: b2 is conv2's bias plus the shortcut's, which the caller folds), and
     * {@code y = conv2d(g2, w2, b2) + sc} with {@code g2} = {@link #groupNorm} + SiLU of {@code h + add[n, c]};
     * 3x3 'same' convolutions, norm1 and norm2 both of {@code groups} groups with eps. cat, g1, h, sc, g2 and the
     * norms' statistics are the ops' outputs, which a backend that fuses the block (the cuda backend's one launch at its
     * small levels) may leave unwritten: read y only. Host backends run {@link #groupNormConcatConv2d} and
     * {@link #groupNormConv2d}, with their bits.
     */
    public final void resnetBlock2dConcat(Tensor a, Tensor b, Tensor add, Tensor gamma1, Tensor beta1, Tensor cat,
                                          Tensor g1, Tensor mean1, Tensor rstd1, Tensor w1, Tensor b1, Tensor h,
                                          Tensor wShortcut, Tensor sc, Tensor gamma2, Tensor beta2, Tensor g2,
                                          Tensor mean2, Tensor rstd2, Tensor w2, Tensor b2, int groups, float eps,
                                          Tensor y) {
        String op = "resnetBlock2dConcat";
        alive(op, a, b, add, gamma1, beta1, cat, g1, mean1, rstd1, w1, b1, h, wShortcut, sc, gamma2, beta2, g2, mean2,
                rstd2, w2, b2, y);
        if (wShortcut == null || sc == null) {
            throw new TensorException(op + ": the shortcut's weights and output are required (wShortcut "
                    + (wShortcut == null ? "null" : "given") + ", sc " + (sc == null ? "null" : "given") + ")");
        }
        checkConcat(op, a, b, cat, "cat");
        checkNormOf(op, cat, null, gamma1, beta1, null, null, groups, eps, "g1", g1, mean1, rstd1);
        checkConv(op, g1, w1, b1, null, 1, 1, h);
        checkConv(op, cat, wShortcut, null, null, 1, 0, "shortcut output sc", sc);
        checkNormOf(op, h, add, gamma2, beta2, null, null, groups, eps, "g2", g2, mean2, rstd2);
        checkConv(op, g2, w2, b2, sc, 1, 1, y);
        if (w1.dim(0) != 3 || w1.dim(1) != 3 || w2.dim(0) != 3 || w2.dim(1) != 3) {
            throw new TensorException(op + ": 3x3 convolutions are required (w1 " + w1.describe() + ", w2 "
                    + w2.describe() + ")");
        }
        Tensor[] outs = {cat, g1, h, sc, y};
        String[] names = {"cat", "g1", "h", "sc", "y"};
        for (int i = 0; i < outs.length; i++) {
            disjoint(op, names[i], outs[i], "a", a);
            disjoint(op, names[i], outs[i], "b", b);
            for (int j = i + 1; j < outs.length; j++) {
                disjoint(op, names[i], outs[i], names[j], outs[j]);
            }
        }
        resnetBlockConcatKernel(a, b, add, gamma1, beta1, cat, g1, mean1, rstd1, w1, b1, h, wShortcut, sc, gamma2, beta2,
                g2, mean2, rstd2, w2, b2, groups, eps, y);
    }

    /** {@link #resnetBlock2dConcat}'s work, its arguments checked: the two fused norm-convolution ops. */
    protected void resnetBlockConcatKernel(Tensor a, Tensor b, Tensor add, Tensor gamma1, Tensor beta1, Tensor cat,
                                           Tensor g1, Tensor mean1, Tensor rstd1, Tensor w1, Tensor b1, Tensor h,
                                           Tensor wShortcut, Tensor sc, Tensor gamma2, Tensor beta2, Tensor g2,
                                           Tensor mean2, Tensor rstd2, Tensor w2, Tensor b2, int groups, float eps,
                                           Tensor y) {
        groupNormConcatConv2d(a, b, gamma1, beta1, groups, eps, true, cat, g1, mean1, rstd1, w1, b1, 1, 1, h, wShortcut,
                sc);
        groupNormConv2d(h, add, gamma2, beta2, groups, eps, true, g2, mean2, rstd2, w2, b2, sc, 1, 1, y);
    }

    /**
     * A down block's ResnetBlock2D entry where it has a conv_shortcut, as one op: {@code y = conv2d(g, w, b)} with
     * {@code g} = {@link #groupNorm} (+ SiLU) of x (norm1 and conv1), and {@code sc = conv2d(x, wShortcut)}, the 1x1
     * shortcut without its bias (the caller folds it into conv2's), for inference where {@link #fusesNormConv} holds.
     * conv1 keeps x's size (stride 1, 'same' padding), so sc and y share their pixels. g, mean and rstd are the norm's
     * outputs, which a backend that fuses the three may leave unwritten. Host backends run the three ops.
     */
    public final void groupNormConvShortcut2d(Tensor x, Tensor gamma, Tensor beta, int groups, float eps, boolean silu,
                                              Tensor g, Tensor mean, Tensor rstd, Tensor w, Tensor b, int padding,
                                              Tensor y, Tensor wShortcut, Tensor sc) {
        String op = silu ? "groupNormSiluConvShortcut2d" : "groupNormConvShortcut2d";
        alive(op, x, gamma, beta, g, mean, rstd, w, b, y, wShortcut, sc);
        if (wShortcut == null || sc == null) {
            throw new TensorException(op + ": the shortcut's weights and output are required (wShortcut "
                    + (wShortcut == null ? "null" : "given") + ", sc " + (sc == null ? "null" : "given") + ")");
        }
        checkNormOf(op, x, null, gamma, beta, null, null, groups, eps, "g", g, mean, rstd);
        checkConv(op, g, w, b, null, 1, padding, y);
        if (y.dim(1) != x.dim(1) || y.dim(2) != x.dim(2)) {
            throw new TensorException(op + ": conv1's output y " + y.describe() + " must keep x's " + x.dim(1) + "x"
                    + x.dim(2) + " pixels, as the shortcut's does ('same' padding)");
        }
        checkConv(op, x, wShortcut, null, null, 1, 0, "shortcut output sc", sc);
        disjoint(op, "y", y, "x", x);
        disjoint(op, "y", y, "g", g);
        disjoint(op, "sc", sc, "x", x);
        disjoint(op, "sc", sc, "g", g);
        disjoint(op, "sc", sc, "y", y);
        groupNormConvShortcutKernel(x, gamma, beta, groups, eps, silu, g, mean, rstd, w, b, padding, y, wShortcut, sc);
    }

    /** Host backends: {@link #groupNormKernel} into g, then {@link #convKernel} of g and of x. */
    protected void groupNormConvShortcutKernel(Tensor x, Tensor gamma, Tensor beta, int groups, float eps,
                                               boolean silu, Tensor g, Tensor mean, Tensor rstd, Tensor w, Tensor b,
                                               int padding, Tensor y, Tensor wShortcut, Tensor sc) {
        groupNormKernel(x, null, gamma, beta, null, null, groups, eps, silu, g, mean, rstd);
        convKernel(g, w, b, 1, padding, y);
        convKernel(x, wShortcut, null, 1, 0, sc);
    }

    /** The operands of a group norm of {@code x + add[n, c]} (add (N, C) or null) into {@code out} ({@code name}). */
    private static void checkNormOf(String op, Tensor x, Tensor add, Tensor gamma, Tensor beta, Tensor scale,
                                    Tensor shift, int groups, float eps, String name, Tensor out, Tensor mean,
                                    Tensor rstd) {
        checkGroupNorm(op, x, gamma, beta, scale, shift, groups, mean, rstd);
        if (add != null) {
            shape(op, "add", add, x.dim(0), x.dim(3));
        }
        sameShape(op, name, out, "x", x);
        if (!(eps > 0)) {
            throw new TensorException(op + ": eps must be > 0, got " + eps);
        }
    }

    /** Host backends: {@link #groupNormKernel} into g, then {@link #convKernel} or {@link #convResidualKernel}. */
    protected void groupNormConvKernel(Tensor x, Tensor add, Tensor gamma, Tensor beta, int groups, float eps,
                                       boolean silu, Tensor g, Tensor mean, Tensor rstd, Tensor w, Tensor b, Tensor z,
                                       int stride, int padding, Tensor y) {
        groupNormKernel(x, add, gamma, beta, null, null, groups, eps, silu, g, mean, rstd);
        if (z == null) {
            convKernel(g, w, b, stride, padding, y);
        } else {
            convResidualKernel(g, w, b, z, stride, padding, y);
        }
    }

    /**
     * True where {@link #groupNormConv2d} may run as one launch in the work being recorded now, so a model should call
     * it instead of the norm and then the convolution: the cuda backend inside a pass that fuses residuals
     * ({@link #fusesResidual}) on a device that runs its own convolutions. Host backends answer false.
     */
    public boolean fusesNormConv() {
        return false;
    }

    /**
     * {@link #concatChannels concat(a, b)} into {@code cat} and {@link #groupNorm} (+ SiLU) of it into {@code y}, as
     * one op: a U-Net up block's {@code norm1(cat(h, skip))}, whose concatenation stays for the conv_shortcut. a is
     * (N, H, W, Ca), b (N, H, W, Cb), cat and y (N, H, W, Ca + Cb), mean and rstd (N, groups); cat and y must not
     * alias a, b or each other. The results are those of the two ops (the cuda backend runs one kernel that reads a
     * and b once per pass and gives the same bits), so a training pass can save cat for the backward as usual.
     */
    public final void groupNormConcat(Tensor a, Tensor b, Tensor gamma, Tensor beta, int groups, float eps,
                                      boolean silu, Tensor cat, Tensor y, Tensor mean, Tensor rstd) {
        String op = silu ? "groupNormSiluConcat" : "groupNormConcat";
        alive(op, a, b, gamma, beta, cat, y, mean, rstd);
        checkConcat(op, a, b, cat, "cat");
        checkGroupNorm(op, cat, gamma, beta, null, null, groups, mean, rstd);
        sameShape(op, "y", y, "cat", cat);
        if (!(eps > 0)) {
            throw new TensorException(op + ": eps must be > 0, got " + eps);
        }
        disjoint(op, "cat", cat, "a", a);
        disjoint(op, "cat", cat, "b", b);
        disjoint(op, "y", y, "a", a);
        disjoint(op, "y", y, "b", b);
        disjoint(op, "y", y, "cat", cat);
        groupNormConcatKernel(a, b, gamma, beta, groups, eps, silu, cat, y, mean, rstd);
    }

    /**
     * An up block's ResnetBlock2D entry at inference, as one op where {@link #fusesNormConv} holds:
     * {@code cat = concat(a, b)}, {@code g = groupNorm(cat)} (+ SiLU), {@code y = conv2d(g, w, b1)} (conv1) and
     * {@code sc = conv2d(cat, wShortcut)} without a bias (the 1x1 conv_shortcut, whose bias the caller folds into
     * conv2's; wShortcut and sc both null: none). cat, g, mean and rstd are the two first ops' outputs, which a
     * backend that fuses (the cuda backend's convolutions gathering from a and b, the group norm as conv1's prologue)
     * may leave unwritten: read y and sc only. Host backends run {@link #groupNormConcat} and the convolutions, with
     * their bits.
     */
    public final void groupNormConcatConv2d(Tensor a, Tensor b, Tensor gamma, Tensor beta, int groups, float eps,
                                            boolean silu, Tensor cat, Tensor g, Tensor mean, Tensor rstd, Tensor w,
                                            Tensor b1, int stride, int padding, Tensor y, Tensor wShortcut,
                                            Tensor sc) {
        String op = silu ? "groupNormSiluConcatConv2d" : "groupNormConcatConv2d";
        alive(op, a, b, gamma, beta, cat, g, mean, rstd, w, b1, y, wShortcut, sc);
        checkConcat(op, a, b, cat, "cat");
        checkNormOf(op, cat, null, gamma, beta, null, null, groups, eps, "g", g, mean, rstd);
        checkConv(op, g, w, b1, null, stride, padding, y);
        if ((wShortcut == null) != (sc == null)) {
            throw new TensorException(op + ": the shortcut's weights and output come together (wShortcut "
                    + (wShortcut == null ? "null" : "given") + ", sc " + (sc == null ? "null" : "given") + ")");
        }
        if (wShortcut != null) {
            checkConv(op, cat, wShortcut, null, null, 1, 0, "shortcut output sc", sc);
        }
        disjoint(op, "cat", cat, "a", a);
        disjoint(op, "cat", cat, "b", b);
        disjoint(op, "g", g, "a", a);
        disjoint(op, "g", g, "b", b);
        disjoint(op, "y", y, "a", a);
        disjoint(op, "y", y, "b", b);
        disjoint(op, "g", g, "cat", cat);
        disjoint(op, "y", y, "cat", cat);
        disjoint(op, "y", y, "g", g);
        if (sc != null) {
            disjoint(op, "sc", sc, "a", a);
            disjoint(op, "sc", sc, "b", b);
            disjoint(op, "sc", sc, "cat", cat);
            disjoint(op, "sc", sc, "y", y);
        }
        groupNormConcatConvKernel(a, b, gamma, beta, groups, eps, silu, cat, g, mean, rstd, w, b1, stride, padding, y,
                wShortcut, sc);
    }

    /** Host backends: {@link #groupNormConcatKernel}, then {@link #convKernel} of g and (with a shortcut) of cat. */
    protected void groupNormConcatConvKernel(Tensor a, Tensor b, Tensor gamma, Tensor beta, int groups, float eps,
                                             boolean silu, Tensor cat, Tensor g, Tensor mean, Tensor rstd, Tensor w,
                                             Tensor b1, int stride, int padding, Tensor y, Tensor wShortcut,
                                             Tensor sc) {
        groupNormConcatKernel(a, b, gamma, beta, groups, eps, silu, cat, g, mean, rstd);
        convKernel(g, w, b1, stride, padding, y);
        if (wShortcut != null) {
            convKernel(cat, wShortcut, null, 1, 0, sc);
        }
    }

    /** Host backends: {@link #concatChannelsKernel}, then {@link #groupNormKernel} on cat. */
    protected void groupNormConcatKernel(Tensor a, Tensor b, Tensor gamma, Tensor beta, int groups, float eps,
                                         boolean silu, Tensor cat, Tensor y, Tensor mean, Tensor rstd) {
        concatChannelsKernel(a, b, cat);
        groupNormKernel(cat, null, gamma, beta, null, null, groups, eps, silu, y, mean, rstd);
    }

    /** add: (N, C) or null (see {@link #groupNorm(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, int, float,
     * boolean, Tensor, Tensor, Tensor)}). */
    protected abstract void groupNormKernel(Tensor x, Tensor add, Tensor gamma, Tensor beta, Tensor scale,
                                            Tensor shift, int groups, float eps, boolean silu, Tensor y, Tensor mean,
                                            Tensor rstd);

    /**
     * Backward of {@link #groupNorm} from the saved {@code mean} and {@code rstd}. dx, dscale and dshift are
     * assigned (inputs); dgamma and dbeta accumulate (parameters).
     */
    public final void groupNormBackward(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups,
                                        boolean silu, Tensor mean, Tensor rstd, Tensor dy,
                                        Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dscale, Tensor dshift) {
        String op = silu ? "groupNormSiluBackward" : "groupNormBackward";
        alive(op, x, gamma, beta, scale, shift, mean, rstd, dy, dx, dgamma, dbeta, dscale, dshift);
        checkGroupNorm(op, x, gamma, beta, scale, shift, groups, mean, rstd);
        sameShape(op, "dy", dy, "x", x);
        sameShape(op, "dx", dx, "x", x);
        sameShape(op, "dgamma", dgamma, "gamma", gamma);
        sameShape(op, "dbeta", dbeta, "beta", beta);
        if (scale == null && (dscale != null || dshift != null)) {
            throw new TensorException(op + ": dscale/dshift given but the forward had no scale/shift");
        }
        if (scale != null) {
            sameShape(op, "dscale", dscale, "scale", scale);
            sameShape(op, "dshift", dshift, "shift", shift);
        }
        groupNormBackwardKernel(x, gamma, beta, scale, shift, groups, silu, mean, rstd, dy, dx, dgamma, dbeta,
                dscale, dshift);
    }

    protected abstract void groupNormBackwardKernel(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift,
                                                    int groups, boolean silu, Tensor mean, Tensor rstd, Tensor dy,
                                                    Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dscale,
                                                    Tensor dshift);

    private static void checkGroupNorm(String op, Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift,
                                       int groups, Tensor mean, Tensor rstd) {
        featureMap(op, "x", x);
        int c = x.dim(3);
        if (groups < 1 || c % groups != 0) {
            throw new TensorException(op + ": " + c + " channels of x " + x.describe()
                    + " do not divide into " + groups + " groups");
        }
        shape(op, "gamma", gamma, c);
        shape(op, "beta", beta, c);
        if ((scale == null) != (shift == null)) {
            throw new TensorException(op + ": give both scale and shift or neither");
        }
        if (scale != null) {
            shape(op, "scale", scale, x.dim(0), c);
            shape(op, "shift", shift, x.dim(0), c);
        }
        shape(op, "mean", mean, x.dim(0), groups);
        shape(op, "rstd", rstd, x.dim(0), groups);
    }

    /** {@code y = x * sigmoid(x)} elementwise (SiLU, Elfwing et al. 2018); any shape. y may alias x. */
    public final void silu(Tensor x, Tensor y) {
        alive("silu", x, y);
        sameSize("silu", "y", y, "x", x);
        siluKernel(x, y);
    }

    protected abstract void siluKernel(Tensor x, Tensor y);

    /** {@code dx = dy * silu'(x)} (assigned). */
    public final void siluBackward(Tensor x, Tensor dy, Tensor dx) {
        alive("siluBackward", x, dy, dx);
        sameSize("siluBackward", "dy", dy, "x", x);
        sameSize("siluBackward", "dx", dx, "x", x);
        siluBackwardKernel(x, dy, dx);
    }

    protected abstract void siluBackwardKernel(Tensor x, Tensor dy, Tensor dx);

    // ------------------------------------------------------------------------------------------------
    // Attention
    // ------------------------------------------------------------------------------------------------

    /**
     * Multi-head scaled-dot-product self-attention (Vaswani et al. 2017) over token sequences:
     * q, k, v and o are (N, T, C) with {@code C = heads * headDim}; head h uses channels
     * [h*headDim, (h+1)*headDim). {@code o = softmax(q k^T / sqrt(headDim)) v} per head. {@code lse} (N, heads, T)
     * receives each row's log-sum-exp of the scaled scores, which is all the backward pass needs
     * (FlashAttention, Dao et al. 2022): the attention matrix is never stored.
     */
    public final void attention(Tensor q, Tensor k, Tensor v, int heads, Tensor o, Tensor lse) {
        String op = "attention";
        alive(op, q, k, v, o, lse);
        checkAttention(op, q, k, v, heads, lse);
        sameShape(op, "o", o, "q", q);
        attentionKernel(q, k, v, heads, o, lse);
    }

    protected abstract void attentionKernel(Tensor q, Tensor k, Tensor v, int heads, Tensor o, Tensor lse);

    /**
     * {@link #attention} on one packed projection: {@code qkv} is (N, T, 3C), each token's C query features, then its
     * C key and its C value features (one linear against the concatenated to_q, to_k, to_v weights); o is (N, T, C),
     * lse (N, heads, T). The same results as attention on the three thirds.
     */
    public final void attentionPacked(Tensor qkv, int heads, Tensor o, Tensor lse) {
        String op = "attentionPacked";
        alive(op, qkv, o, lse);
        checkPacked(op, qkv, heads, o, lse);
        attentionPackedKernel(qkv, heads, o, lse);
    }

    private static void checkPacked(String op, Tensor qkv, int heads, Tensor o, Tensor lse) {
        rank(op, "qkv", qkv, 3);
        if (qkv.dim(2) % 3 != 0) {
            throw new TensorException(op + ": qkv " + qkv.describe() + " has " + qkv.dim(2)
                    + " channels, not 3 x the attention's");
        }
        int c = qkv.dim(2) / 3;
        if (heads < 1 || c % heads != 0) {
            throw new TensorException(op + ": " + c + " channels per projection of qkv " + qkv.describe()
                    + " do not divide into " + heads + " heads");
        }
        shape(op, "o", o, qkv.dim(0), qkv.dim(1), c);
        shape(op, "lse", lse, qkv.dim(0), heads, qkv.dim(1));
    }

    /**
     * Host backends: the thirds split out with this backend's {@link #splitChannelsKernel} (the inverse of the
     * concatenation that packed the weights), then {@link #attentionKernel}.
     */
    protected void attentionPackedKernel(Tensor qkv, int heads, Tensor o, Tensor lse) {
        int n = qkv.dim(0), t = qkv.dim(1), c = qkv.dim(2) / 3;
        try (TensorArena a = new TensorArena()) {
            Tensor q = a.allocate(Layout.NHWC, n, t, 1, c), kv = a.allocate(Layout.NHWC, n, t, 1, 2 * c);
            Tensor k = a.allocate(Layout.NHWC, n, t, 1, c), v = a.allocate(Layout.NHWC, n, t, 1, c);
            splitChannelsKernel(qkv.reshape(Layout.NHWC, n, t, 1, 3 * c), q, kv);
            splitChannelsKernel(kv, k, v);
            attentionKernel(q.reshape(Layout.ROWS, n, t, c), k.reshape(Layout.ROWS, n, t, c),
                    v.reshape(Layout.ROWS, n, t, c), heads, o, lse);
        }
    }

    /**
     * {@code y = attentionPacked(qkv) w + b + z}: an attention block's attention, its output projection (w (C, C), b
     * (C)) and its residual z, y and z (N, T, C), for inference graphs where {@link #fusesResidual} holds. o and lse
     * are {@link #attentionPacked}'s outputs where the backend runs the ops apart; one that runs them as one launch
     * leaves them as they were. y must not alias z or qkv.
     */
    public final void attentionResidual(Tensor qkv, int heads, Tensor o, Tensor lse, Tensor w, Tensor b, Tensor z,
                                        Tensor y) {
        String op = "attentionResidual";
        if (z == null) {
            throw new TensorException(op + ": residual z is null");
        }
        alive(op, qkv, o, lse, w, b, z, y);
        checkPacked(op, qkv, heads, o, lse);
        int rows = linearRows(op, o, w, y);
        sameShape(op, "residual z", z, "y", y);
        if (b != null) {
            shape(op, "bias b", b, w.dim(1));
        }
        attentionResidualKernel(qkv, heads, o, lse, w, b, z, y, rows, w.dim(0), w.dim(1));
    }

    /** Host backends: {@link #attentionPackedKernel}, then {@link #linearResidualKernel} (those ops' bits). */
    protected void attentionResidualKernel(Tensor qkv, int heads, Tensor o, Tensor lse, Tensor w, Tensor b, Tensor z,
                                           Tensor y, int rows, int in, int out) {
        attentionPackedKernel(qkv, heads, o, lse);
        linearResidualKernel(o, w, b, z, y, rows, in, out);
    }

    /**
     * True where {@link #attentionPacked} runs as one kernel on the packed tensor, for heads of {@code headDim}
     * features (the cuda backend's fused attention: 32, 64, 128), so a model may project q, k and v with one GEMM;
     * host backends answer false (they would copy the thirds out).
     */
    public boolean packsQkv(int headDim) {
        return false;
    }

    /** Backward of {@link #attention} from its output {@code o} and {@code lse}; dq, dk, dv are assigned. */
    public final void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dO, int heads,
                                        Tensor dq, Tensor dk, Tensor dv) {
        String op = "attentionBackward";
        alive(op, q, k, v, o, lse, dO, dq, dk, dv);
        checkAttention(op, q, k, v, heads, lse);
        sameShape(op, "o", o, "q", q);
        sameShape(op, "dO", dO, "q", q);
        sameShape(op, "dq", dq, "q", q);
        sameShape(op, "dk", dk, "k", k);
        sameShape(op, "dv", dv, "v", v);
        attentionBackwardKernel(q, k, v, o, lse, dO, heads, dq, dk, dv);
    }

    protected abstract void attentionBackwardKernel(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dO,
                                                    int heads, Tensor dq, Tensor dk, Tensor dv);

    private static void checkAttention(String op, Tensor q, Tensor k, Tensor v, int heads, Tensor lse) {
        rank(op, "q", q, 3);
        sameShape(op, "k", k, "q", q);
        sameShape(op, "v", v, "q", q);
        if (heads < 1 || q.dim(2) % heads != 0) {
            throw new TensorException(op + ": " + q.dim(2) + " channels of q " + q.describe()
                    + " do not divide into " + heads + " heads");
        }
        shape(op, "lse", lse, q.dim(0), heads, q.dim(1));
    }

    // ------------------------------------------------------------------------------------------------
    // Elementwise and data movement
    // ------------------------------------------------------------------------------------------------

    /** {@code y = a + b}, same sizes; y may alias a or b. */
    public final void add(Tensor a, Tensor b, Tensor y) {
        alive("add", a, b, y);
        sameSize("add", "b", b, "a", a);
        sameSize("add", "y", y, "a", a);
        addKernel(a, b, y);
    }

    protected abstract void addKernel(Tensor a, Tensor b, Tensor y);

    /** {@code y = a * b} elementwise, same sizes; y may alias a or b. */
    public final void mul(Tensor a, Tensor b, Tensor y) {
        alive("mul", a, b, y);
        sameSize("mul", "b", b, "a", a);
        sameSize("mul", "y", y, "a", a);
        mulKernel(a, b, y);
    }

    protected abstract void mulKernel(Tensor a, Tensor b, Tensor y);

    /** {@code y += alpha * x}, same sizes. Used to add a gradient into one that is already there. */
    public final void axpy(float alpha, Tensor x, Tensor y) {
        alive("axpy", x, y);
        sameSize("axpy", "y", y, "x", x);
        axpyKernel(alpha, x, y);
    }

    protected abstract void axpyKernel(float alpha, Tensor x, Tensor y);

    /**
     * {@code y = a x + b z}, rounded as {@code fma(b, z, a x)} by every backend (the same bits as {@link #scale}
     * then {@link #axpy}); y may alias x or z. The denoisers' {@code c_skip x + c_out F} in one pass.
     */
    public final void axpby(float a, Tensor x, float b, Tensor z, Tensor y) {
        alive("axpby", x, z, y);
        sameSize("axpby", "z", z, "x", x);
        sameSize("axpby", "y", y, "x", x);
        axpbyKernel(a, x, b, z, y);
    }

    protected abstract void axpbyKernel(float a, Tensor x, float b, Tensor z, Tensor y);

    /** {@code y = alpha * x}; y may alias x. */
    public final void scale(Tensor x, float alpha, Tensor y) {
        alive("scale", x, y);
        sameSize("scale", "y", y, "x", x);
        scaleKernel(x, alpha, y);
    }

    protected abstract void scaleKernel(Tensor x, float alpha, Tensor y);

    /**
     * {@link #scale} of a network's input ({@code c_in x}): y is read only by the network, so a backend may store it
     * in the precision it runs the network in (the cuda backend's 16-bit passes: the product rounded once, in the
     * launch that computes it, where scale and the network's first read took two). Host backends: scale.
     */
    public final void scaleNetworkInput(Tensor x, float alpha, Tensor y) {
        alive("scale", x, y);
        sameSize("scale", "y", y, "x", x);
        scaleNetworkInputKernel(x, alpha, y);
    }

    protected void scaleNetworkInputKernel(Tensor x, float alpha, Tensor y) {
        scaleKernel(x, alpha, y);
    }

    /**
     * {@code y[n, ..., c] = x[n, ..., c] + v[n, c]}: adds one vector per sample to every position (the
     * ResnetBlock2D time-embedding add). x and y (N, ..., C), v (N, C); y may alias x.
     */
    public final void addPerChannel(Tensor x, Tensor v, Tensor y) {
        String op = "addPerChannel";
        alive(op, x, v, y);
        perChannel(op, x, v);
        sameShape(op, "y", y, "x", x);
        addPerChannelKernel(x, v, y);
    }

    protected abstract void addPerChannelKernel(Tensor x, Tensor v, Tensor y);

    /** Backward of {@link #addPerChannel} for v: {@code dv[n, c] = sum over positions of dy[n, ..., c]} (assigned). */
    public final void sumPerChannel(Tensor dy, Tensor dv) {
        String op = "sumPerChannel";
        alive(op, dy, dv);
        perChannel(op, dy, dv);
        sumPerChannelKernel(dy, dv);
    }

    protected abstract void sumPerChannelKernel(Tensor dy, Tensor dv);

    private static void perChannel(String op, Tensor x, Tensor v) {
        if (x.rank() < 2) {
            throw new TensorException(op + ": x " + x.describe() + " must have rank >= 2 (N, ..., C)");
        }
        shape(op, "v", v, x.dim(0), x.dim(-1));
    }

    /** {@code y = concat(a, b)} along channels: a (N, H, W, Ca), b (N, H, W, Cb), y (N, H, W, Ca + Cb). */
    public final void concatChannels(Tensor a, Tensor b, Tensor y) {
        String op = "concatChannels";
        alive(op, a, b, y);
        checkConcat(op, a, b, y, "y");
        concatChannelsKernel(a, b, y);
    }

    protected abstract void concatChannelsKernel(Tensor a, Tensor b, Tensor y);

    /** Backward of {@link #concatChannels}: splits dy into da and db (assigned; either may be null). */
    public final void splitChannels(Tensor dy, Tensor da, Tensor db) {
        String op = "splitChannels";
        alive(op, dy, da, db);
        if (da == null || db == null) {
            throw new TensorException(op + ": da and db are both required (they give the split point)");
        }
        checkConcat(op, da, db, dy, "dy");
        splitChannelsKernel(dy, da, db);
    }

    protected abstract void splitChannelsKernel(Tensor dy, Tensor da, Tensor db);

    private static void checkConcat(String op, Tensor a, Tensor b, Tensor y, String yName) {
        featureMap(op, "a", a);
        featureMap(op, "b", b);
        if (a.dim(0) != b.dim(0) || a.dim(1) != b.dim(1) || a.dim(2) != b.dim(2)) {
            throw new TensorException(op + ": a " + a.describe() + " and b " + b.describe()
                    + " differ outside the channel dimension");
        }
        shape(op, yName, y, a.dim(0), a.dim(1), a.dim(2), a.dim(3) + b.dim(3));
    }

    /** Nearest-neighbour 2x upsampling: x (N, H, W, C) to y (N, 2H, 2W, C). */
    public final void upsampleNearest2x(Tensor x, Tensor y) {
        String op = "upsampleNearest2x";
        alive(op, x, y);
        featureMap(op, "x", x);
        shape(op, "y", y, x.dim(0), 2 * x.dim(1), 2 * x.dim(2), x.dim(3));
        upsampleKernel(x, y);
    }

    protected abstract void upsampleKernel(Tensor x, Tensor y);

    /** Backward of {@link #upsampleNearest2x}: each dx is the sum of its 2x2 block of dy (assigned). */
    public final void upsampleNearest2xBackward(Tensor dy, Tensor dx) {
        String op = "upsampleNearest2xBackward";
        alive(op, dy, dx);
        featureMap(op, "dx", dx);
        shape(op, "dy", dy, dx.dim(0), 2 * dx.dim(1), 2 * dx.dim(2), dx.dim(3));
        upsampleBackwardKernel(dy, dx);
    }

    protected abstract void upsampleBackwardKernel(Tensor dy, Tensor dx);

    // ------------------------------------------------------------------------------------------------
    // Losses (they return the loss and write its gradient; a NaN or infinity in the input is an error)
    // ------------------------------------------------------------------------------------------------

    /**
     * Weighted mean squared error over a batch: with D elements per sample,
     * {@code L = (1/N) sum_n w[n] (1/D) sum_i (pred - target)^2}. {@code weights} (N) or null for all ones
     * (EDM's lambda(sigma), Karras et al. 2022 eq. 8). {@code dpred = dL/dpred} (assigned) unless null.
     */
    public final double mseLoss(Tensor pred, Tensor target, Tensor weights, Tensor dpred) {
        String op = "mseLoss";
        checkLoss(op, pred, target, weights, dpred);
        return mseLossKernel(pred, target, weights, dpred);
    }

    protected abstract double mseLossKernel(Tensor pred, Tensor target, Tensor weights, Tensor dpred);

    /**
     * Weighted pseudo-Huber loss (Song & Dhariwal 2023, "Improved Techniques for Training Consistency Models",
     * eq. 10): per sample {@code d_n = sqrt(||pred_n - target_n||^2 + c^2) - c}, and
     * {@code L = (1/N) sum_n w[n] d_n}. {@code c > 0}; the paper uses {@code c = 0.00054 sqrt(D)}.
     */
    public final double pseudoHuberLoss(Tensor pred, Tensor target, Tensor weights, float c, Tensor dpred) {
        String op = "pseudoHuberLoss";
        checkLoss(op, pred, target, weights, dpred);
        if (!(c > 0) || !Float.isFinite(c)) {
            throw new TensorException(op + ": c must be a finite number > 0, got " + c);
        }
        return pseudoHuberLossKernel(pred, target, weights, c, dpred);
    }

    protected abstract double pseudoHuberLossKernel(Tensor pred, Tensor target, Tensor weights, float c,
                                                    Tensor dpred);

    private void checkLoss(String op, Tensor pred, Tensor target, Tensor weights, Tensor dpred) {
        alive(op, pred, target, weights, dpred);
        if (pred.rank() < 1) {
            throw new TensorException(op + ": pred " + pred.describe() + " needs a batch dimension");
        }
        sameShape(op, "target", target, "pred", pred);
        sameShape(op, "dpred", dpred, "pred", pred);
        if (weights != null) {
            shape(op, "weights", weights, pred.dim(0));
        }
        finite(op, "pred", pred);
        finite(op, "target", target);
        if (weights != null) {
            finite(op, "weights", weights);
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Time embeddings (forward only: their inputs are noise levels, which need no gradient)
    // ------------------------------------------------------------------------------------------------

    /**
     * The sinusoidal timestep embedding of diffusers' {@code get_timestep_embedding} (Vaswani et al. 2017, sec.
     * 3.5, as used by DDPM): for {@code half = D / 2}, {@code freq_j = exp(-ln(maxPeriod) j / (half - shift))},
     * {@code arg = scale * t[n] freq_j}, {@code y[n] = [sin(arg), cos(arg)]}, or {@code [cos, sin]} when
     * {@code flipSinToCos}; an odd D gets one trailing zero. t (N), y (N, D).
     */
    public final void sinusoidalEmbedding(Tensor t, boolean flipSinToCos, float downscaleFreqShift, float scale,
                                          float maxPeriod, Tensor y) {
        String op = "sinusoidalEmbedding";
        alive(op, t, y);
        rank(op, "t", t, 1);
        rank(op, "y", y, 2);
        if (y.dim(0) != t.dim(0) || y.dim(1) < 2) {
            throw new TensorException(op + ": y " + y.describe() + " must be (N, D>=2) for t " + t.describe());
        }
        if (y.dim(1) / 2 - downscaleFreqShift == 0) {
            throw new TensorException(op + ": half the embedding size minus downscale_freq_shift is 0 (D = "
                    + y.dim(1) + ")");
        }
        sinusoidalEmbeddingKernel(t, flipSinToCos, downscaleFreqShift, scale, maxPeriod, y);
    }

    protected abstract void sinusoidalEmbeddingKernel(Tensor t, boolean flipSinToCos, float downscaleFreqShift,
                                                      float scale, float maxPeriod, Tensor y);

    /**
     * Random Fourier features (Tancik et al. 2020; diffusers' {@code GaussianFourierProjection}, used by
     * score-SDE/NCSN++): {@code arg = 2 pi (log ? ln t[n] : t[n]) weight[j]},
     * {@code y[n] = [sin(arg), cos(arg)]}, or {@code [cos, sin]} when {@code flipSinToCos}. t (N), weight (D/2),
     * y (N, D).
     */
    public final void fourierEmbedding(Tensor t, Tensor weight, boolean log, boolean flipSinToCos, Tensor y) {
        String op = "fourierEmbedding";
        alive(op, t, weight, y);
        rank(op, "t", t, 1);
        rank(op, "weight", weight, 1);
        shape(op, "y", y, t.dim(0), 2 * weight.dim(0));
        fourierEmbeddingKernel(t, weight, log, flipSinToCos, y);
    }

    protected abstract void fourierEmbeddingKernel(Tensor t, Tensor weight, boolean log, boolean flipSinToCos,
                                                   Tensor y);

    // ------------------------------------------------------------------------------------------------
    // Optimizer steps and reductions (elementwise over a parameter tensor)
    // ------------------------------------------------------------------------------------------------

    /**
     * One Adam step (Kingma & Ba 2015, Algorithm 1) on one parameter tensor, step {@code t >= 1}:
     * {@code m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)}.
     * Weight decay: {@code decoupled} (AdamW, Loshchilov & Hutter 2019) multiplies p by {@code 1 - lr wd} first;
     * otherwise (L2, classic Adam) adds {@code wd p} to g.
     */
    public final void adamStep(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2,
                               float eps, float weightDecay, boolean decoupled) {
        checkOptim("adamStep", p, g, m, v, t);
        adamStepKernel(p, g, m, v, t, lr, beta1, beta2, eps, weightDecay, decoupled);
    }

    protected abstract void adamStepKernel(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1,
                                           float beta2, float eps, float weightDecay, boolean decoupled);

    /**
     * One RAdam step (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond", Algorithm 2):
     * Adam's moments, but while the variance of the adaptive rate is intractable ({@code rho_t <= 5}) the step is
     * plain bias-corrected momentum; afterwards it is rectified by {@code r_t}. Weight decay as in
     * {@link #adamStep}. Used by consistency distillation (Song et al. 2023).
     */
    public final void radamStep(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2,
                                float eps, float weightDecay, boolean decoupled) {
        checkOptim("radamStep", p, g, m, v, t);
        radamStepKernel(p, g, m, v, t, lr, beta1, beta2, eps, weightDecay, decoupled);
    }

    protected abstract void radamStepKernel(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1,
                                            float beta2, float eps, float weightDecay, boolean decoupled);

    private static void checkOptim(String op, Tensor p, Tensor g, Tensor m, Tensor v, int t) {
        alive(op, p, g, m, v);
        sameShape(op, "grad", g, "param", p);
        sameShape(op, "m", m, "param", p);
        sameShape(op, "v", v, "param", p);
        if (t < 1) {
            throw new TensorException(op + ": step must be >= 1, got " + t);
        }
    }

    /** Sets every element of {@code t} to +0 (a gradient before a new accumulation). */
    public final void zero(Tensor t) {
        alive("zero", t);
        zeroKernel(t);
    }

    protected void zeroKernel(Tensor t) {
        t.fill(0f);
    }

    /** {@code sum(x^2)} accumulated in double (for gradient-norm clipping). */
    public final double sumOfSquares(Tensor x) {
        alive("sumOfSquares", x);
        return sumOfSquaresKernel(x);
    }

    protected abstract double sumOfSquaresKernel(Tensor x);

    /**
     * The sums of squares of every tensor of {@code xs} added in order, each as {@link #sumOfSquares(Tensor)}
     * gives it (so the same double as that loop): a gradient's global norm. A device backend answers it with one
     * wait for the device instead of one per tensor.
     */
    public final double sumOfSquares(java.util.List<Tensor> xs) {
        for (Tensor x : xs) {
            alive("sumOfSquares", x);
        }
        return sumOfSquaresKernel(xs);
    }

    protected double sumOfSquaresKernel(java.util.List<Tensor> xs) {
        double sum = 0;
        for (Tensor x : xs) {
            sum += sumOfSquaresKernel(x);
        }
        return sum;
    }

    /** Exponential moving average {@code target = mu target + (1 - mu) source} (the EMA / consistency target). */
    public final void ema(Tensor target, Tensor source, float mu) {
        alive("ema", target, source);
        sameShape("ema", "source", source, "target", target);
        if (!(mu >= 0 && mu <= 1)) {
            throw new TensorException("ema: rate mu must lie in [0, 1], got " + mu);
        }
        emaKernel(target, source, mu);
    }

    protected abstract void emaKernel(Tensor target, Tensor source, float mu);

    // ------------------------------------------------------------------------------------------------
    // Validation helpers: every message names the op, the argument and the shapes.
    // ------------------------------------------------------------------------------------------------

    protected static void alive(String op, Tensor... ts) {
        for (Tensor t : ts) {
            if (t != null && !t.isAlive()) {
                throw new TensorException(op + ": tensor " + t.describe()
                        + " is closed (its arena was closed before this call)");
            }
        }
    }

    protected static void rank(String op, String name, Tensor t, int rank) {
        if (t == null) {
            throw new TensorException(op + ": " + name + " is required");
        }
        if (t.rank() != rank) {
            throw new TensorException(op + ": " + name + " " + t.describe() + " must have rank " + rank);
        }
    }

    protected static void shape(String op, String name, Tensor t, int... expected) {
        if (t == null) {
            throw new TensorException(op + ": " + name + " is required");
        }
        if (!t.hasShape(expected)) {
            throw new TensorException(op + ": " + name + " has shape " + t.describe() + ", expected "
                    + java.util.Arrays.toString(expected));
        }
    }

    /** Refuses an output whose memory overlaps an operand's (a kernel that reads one while writing the other). */
    private static void disjoint(String op, String name, Tensor t, String otherName, Tensor other) {
        long p = t.segment().address(), q = other.segment().address();
        if (p < q + other.segment().byteSize() && q < p + t.segment().byteSize()) {
            throw new TensorException(op + ": " + name + " " + t.describe() + " overlaps " + otherName + " "
                    + other.describe());
        }
    }

    /** Checks {@code t} (if given) has the shape of {@code ref}. */
    protected static void sameShape(String op, String name, Tensor t, String refName, Tensor ref) {
        if (t != null && !t.hasShape(ref.shape())) {
            throw new TensorException(op + ": " + name + " " + t.describe() + " must have the shape of "
                    + refName + " " + ref.describe());
        }
    }

    protected static void sameSize(String op, String name, Tensor t, String refName, Tensor ref) {
        if (t.size() != ref.size()) {
            throw new TensorException(op + ": " + name + " " + t.describe() + " must have as many elements as "
                    + refName + " " + ref.describe());
        }
    }

    protected static void layout(String op, String name, Tensor t, Layout l) {
        if (t.layout() != l) {
            throw new TensorException(op + ": " + name + " " + t.describe() + " must be in layout " + l
                    + (l == Layout.HWIO && t.layout() == Layout.OIHW
                    ? " (PyTorch's OIHW weights are converted once at load)" : ""));
        }
    }

    /** Rank 4 and NHWC (ROWS is accepted too: a reshaped view of NHWC data keeps its meaning). */
    protected static void featureMap(String op, String name, Tensor t) {
        rank(op, name, t, 4);
        if (t.layout() != Layout.NHWC && t.layout() != Layout.ROWS) {
            throw new TensorException(op + ": " + name + " " + t.describe()
                    + " must be an NHWC feature map (batch, height, width, channels)");
        }
    }

    /**
     * True when no element of {@code t} is NaN or infinite. A device backend overrides it to look where the values
     * are: inside a resident block the host copy of an op's output is stale.
     */
    protected boolean allFinite(Tensor t) {
        return t.allFinite();
    }

    protected final void finite(String op, String name, Tensor t) {
        if (!allFinite(t)) {
            throw new ai.onestep.tensor.NonFiniteException(op + ": " + name + " " + t.describe()
                    + " contains NaN or infinity");
        }
    }
}
