package ai.onestep.backend.cpu;

import ai.onestep.backend.AdamUpdate;
import ai.onestep.backend.Ops;
import ai.onestep.tensor.Tensor;

/**
 * The fast CPU backend: Vector API kernels over off-heap tensors, register-blocked GEMM and convolution, and a
 * worker pool sized to the machine. Work is split over output elements only, and every reduction runs in a fixed
 * order, so results are bit-identical for any thread count.
 */
public final class CpuOps extends Ops {
    private final CpuPool pool;
    private final CpuConv conv;
    private final CpuNorm norm;
    private final CpuAttention attention;
    private final CpuOptim optim;
    private final PackedWeights packed = new PackedWeights();

    /** A backend on all available processors. */
    public CpuOps() {
        this(Runtime.getRuntime().availableProcessors());
    }

    public CpuOps(int threads) {
        this(threads, !"false".equals(System.getProperty("onestep.cpu.winograd")));
    }

    /**
     * A backend on {@code threads} threads; {@code winograd} false runs every 3x3 stride-1 convolution forward
     * as a direct implicit GEMM instead of Winograd's F(2x2, 3x3) (the default; {@code -Donestep.cpu.winograd=false}
     * switches it off for the no-argument constructors).
     */
    public CpuOps(int threads, boolean winograd) {
        this.pool = CpuPool.of(threads);
        this.conv = new CpuConv(pool, packed, winograd);
        this.norm = new CpuNorm(pool);
        this.attention = new CpuAttention(pool);
        this.optim = new CpuOptim(pool);
    }

    @Override
    public String name() {
        return "cpu";
    }

    /**
     * Keeps the repacked GEMM panels (or the Winograd-transformed filters) of these weights from their first conv2d
     * or linear use on ({@link PackedWeights}): a sampler's weights never change, so each evaluation skips that work.
     * Updates through {@link #adamStep}, {@link #radamStep} and {@link #ema} drop the forms of the tensors they
     * change.
     */
    @Override
    public void registerParameters(java.util.List<Tensor> tensors) {
        packed.register(tensors);
    }

    /** Registered weights whose packed form (panels or Winograd filters) is cached now. */
    public int cachedWeightPanels() {
        return packed.packedCount();
    }

    public int threads() {
        return pool.threads();
    }

    @Override
    protected void matmulKernel(Tensor a, boolean transA, Tensor b, boolean transB, Tensor c, int m, int n, int k, float alpha, float beta) {
        conv.matmul(a, transA, b, transB, c, m, n, k, alpha, beta);
    }

    @Override
    protected void linearKernel(Tensor x, Tensor w, Tensor b, Tensor y, int rows, int in, int out) {
        conv.linear(x, w, b, y, rows, in, out);
    }

    @Override
    protected void linearBackwardKernel(Tensor x, Tensor w, Tensor dy, Tensor dx, Tensor dw, Tensor db, int rows, int in, int out) {
        conv.linearBackward(x, w, dy, dx, dw, db, rows, in, out);
    }

    @Override
    protected void convKernel(Tensor x, Tensor w, Tensor b, int stride, int padding, Tensor y) {
        conv.conv(x, w, b, stride, padding, y);
    }

    @Override
    protected void convBackwardKernel(Tensor x, Tensor w, Tensor dy, int stride, int padding, Tensor dx, Tensor dw, Tensor db) {
        conv.convBackward(x, w, dy, stride, padding, dx, dw, db);
    }

    @Override
    protected void groupNormKernel(Tensor x, Tensor add, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, float eps, boolean silu, Tensor y, Tensor mean, Tensor rstd) {
        if (add != null) {
            // x + add goes through y (normalized in place there): the same two passes over memory as the unfused ops
            // and no temporary. (The CUDA kernel never stores the sum; here the add is a cheap streaming pass.)
            norm.addPerChannel(x, add, y);
            x = y;
        }
        norm.groupNorm(x, gamma, beta, scale, shift, groups, eps, silu, y, mean, rstd);
    }

    @Override
    protected void groupNormBackwardKernel(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, boolean silu, Tensor mean, Tensor rstd, Tensor dy, Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dscale, Tensor dshift) {
        norm.groupNormBackward(x, gamma, beta, scale, shift, groups, silu, mean, rstd, dy, dx, dgamma, dbeta, dscale, dshift);
    }

    @Override
    protected void siluKernel(Tensor x, Tensor y) {
        norm.silu(x, y);
    }

    @Override
    protected void siluBackwardKernel(Tensor x, Tensor dy, Tensor dx) {
        norm.siluBackward(x, dy, dx);
    }

    @Override
    protected void attentionKernel(Tensor q, Tensor k, Tensor v, int heads, Tensor o, Tensor lse) {
        attention.attention(q, k, v, heads, o, lse);
    }

    @Override
    protected void attentionBackwardKernel(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dO, int heads, Tensor dq, Tensor dk, Tensor dv) {
        attention.attentionBackward(q, k, v, o, lse, dO, heads, dq, dk, dv);
    }

    @Override
    protected void addKernel(Tensor a, Tensor b, Tensor y) {
        norm.add(a, b, y);
    }

    @Override
    protected void mulKernel(Tensor a, Tensor b, Tensor y) {
        norm.mul(a, b, y);
    }

    @Override
    protected void axpyKernel(float alpha, Tensor x, Tensor y) {
        norm.axpy(alpha, x, y);
    }

    @Override
    protected void axpbyKernel(float a, Tensor x, float b, Tensor z, Tensor y) {
        PointwiseKernels.axpby(pool, a, x, b, z, y);
    }

    @Override
    protected void scaleKernel(Tensor x, float alpha, Tensor y) {
        norm.scale(x, alpha, y);
    }

    @Override
    protected void addPerChannelKernel(Tensor x, Tensor v, Tensor y) {
        norm.addPerChannel(x, v, y);
    }

    @Override
    protected void sumPerChannelKernel(Tensor dy, Tensor dv) {
        norm.sumPerChannel(dy, dv);
    }

    @Override
    protected void concatChannelsKernel(Tensor a, Tensor b, Tensor y) {
        norm.concatChannels(a, b, y);
    }

    @Override
    protected void splitChannelsKernel(Tensor dy, Tensor da, Tensor db) {
        norm.splitChannels(dy, da, db);
    }

    @Override
    protected void upsampleKernel(Tensor x, Tensor y) {
        norm.upsample(x, y);
    }

    @Override
    protected void upsampleBackwardKernel(Tensor dy, Tensor dx) {
        norm.upsampleBackward(dy, dx);
    }

    @Override
    protected double mseLossKernel(Tensor pred, Tensor target, Tensor weights, Tensor dpred) {
        return norm.mseLoss(pred, target, weights, dpred);
    }

    @Override
    protected double pseudoHuberLossKernel(Tensor pred, Tensor target, Tensor weights, float c, Tensor dpred) {
        return norm.pseudoHuberLoss(pred, target, weights, c, dpred);
    }

    @Override
    protected void sinusoidalEmbeddingKernel(Tensor t, boolean flipSinToCos, float downscaleFreqShift, float scale, float maxPeriod, Tensor y) {
        norm.sinusoidalEmbedding(t, flipSinToCos, downscaleFreqShift, scale, maxPeriod, y);
    }

    @Override
    protected void fourierEmbeddingKernel(Tensor t, Tensor weight, boolean log, boolean flipSinToCos, Tensor y) {
        norm.fourierEmbedding(t, weight, log, flipSinToCos, y);
    }

    @Override
    protected void adamStepKernel(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2, float eps, float weightDecay, boolean decoupled) {
        optim.step(p, g, m, v, beta1, beta2, eps, AdamUpdate.adam(t, lr, beta1, beta2, weightDecay, decoupled));
        packed.updated(p);
    }

    @Override
    protected void radamStepKernel(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2, float eps, float weightDecay, boolean decoupled) {
        optim.step(p, g, m, v, beta1, beta2, eps, AdamUpdate.radam(t, lr, beta1, beta2, weightDecay, decoupled));
        packed.updated(p);
    }

    @Override
    protected double sumOfSquaresKernel(Tensor x) {
        return optim.sumOfSquares(x);
    }

    @Override
    protected void emaKernel(Tensor target, Tensor source, float mu) {
        optim.ema(target, source, mu);
        packed.updated(target);
    }
}
