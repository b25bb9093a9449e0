package ai.onestep.backend.naive;

import ai.onestep.backend.Ops;
import ai.onestep.tensor.Tensor;

/**
 * The oracle backend: plain loops that read like the formulas, accumulating in double. It is slow on purpose
 * and exists so that every fast kernel has an obviously correct twin to be tested against. The kernels live in
 * {@link NaiveConv}, {@link NaiveNorm}, {@link NaiveAttention} and {@link NaiveOptim}, each a set of
 * static float64 functions over {@code double[]} (so finite-difference checks run in float64) plus the
 * wrappers that this class calls.
 */
public final class NaiveOps extends Ops {
    @Override
    public String name() {
        return "naive";
    }

    @Override
    protected void matmulKernel(Tensor a, boolean transA, Tensor b, boolean transB, Tensor c, int m, int n, int k, float alpha, float beta) {
        NaiveConv.matmul(a, transA, b, transB, c, m, n, k, alpha, beta);
    }

    @Override
    protected void linearKernel(Tensor x, Tensor w, Tensor b, Tensor y, int rows, int in, int out) {
        NaiveConv.linear(x, w, b, y, rows, in, out);
    }

    @Override
    protected void linearBackwardKernel(Tensor x, Tensor w, Tensor dy, Tensor dx, Tensor dw, Tensor db, int rows, int in, int out) {
        NaiveConv.linearBackward(x, w, dy, dx, dw, db, rows, in, out);
    }

    @Override
    protected void convKernel(Tensor x, Tensor w, Tensor b, int stride, int padding, Tensor y) {
        NaiveConv.conv(x, w, b, stride, padding, y);
    }

    @Override
    protected void convBackwardKernel(Tensor x, Tensor w, Tensor dy, int stride, int padding, Tensor dx, Tensor dw, Tensor db) {
        NaiveConv.convBackward(x, w, dy, stride, padding, dx, dw, db);
    }

    @Override
    protected void groupNormKernel(Tensor x, Tensor add, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, float eps, boolean silu, Tensor y, Tensor mean, Tensor rstd) {
        NaiveNorm.groupNorm(x, add, gamma, beta, scale, shift, groups, eps, silu, y, mean, rstd);
    }

    @Override
    protected void groupNormBackwardKernel(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, boolean silu, Tensor mean, Tensor rstd, Tensor dy, Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dscale, Tensor dshift) {
        NaiveNorm.groupNormBackward(x, gamma, beta, scale, shift, groups, silu, mean, rstd, dy, dx, dgamma, dbeta, dscale, dshift);
    }

    @Override
    protected void siluKernel(Tensor x, Tensor y) {
        NaiveNorm.silu(x, y);
    }

    @Override
    protected void siluBackwardKernel(Tensor x, Tensor dy, Tensor dx) {
        NaiveNorm.siluBackward(x, dy, dx);
    }

    @Override
    protected void attentionKernel(Tensor q, Tensor k, Tensor v, int heads, Tensor o, Tensor lse) {
        NaiveAttention.attention(q, k, v, heads, o, lse);
    }

    @Override
    protected void attentionBackwardKernel(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dO, int heads, Tensor dq, Tensor dk, Tensor dv) {
        NaiveAttention.attentionBackward(q, k, v, o, lse, dO, heads, dq, dk, dv);
    }

    @Override
    protected void addKernel(Tensor a, Tensor b, Tensor y) {
        NaiveNorm.add(a, b, y);
    }

    @Override
    protected void mulKernel(Tensor a, Tensor b, Tensor y) {
        NaiveNorm.mul(a, b, y);
    }

    @Override
    protected void axpyKernel(float alpha, Tensor x, Tensor y) {
        NaiveNorm.axpy(alpha, x, y);
    }

    @Override
    protected void axpbyKernel(float a, Tensor x, float b, Tensor z, Tensor y) {
        NaiveNorm.axpby(a, x, b, z, y);
    }

    @Override
    protected void scaleKernel(Tensor x, float alpha, Tensor y) {
        NaiveNorm.scale(x, alpha, y);
    }

    @Override
    protected void addPerChannelKernel(Tensor x, Tensor v, Tensor y) {
        NaiveNorm.addPerChannel(x, v, y);
    }

    @Override
    protected void sumPerChannelKernel(Tensor dy, Tensor dv) {
        NaiveNorm.sumPerChannel(dy, dv);
    }

    @Override
    protected void concatChannelsKernel(Tensor a, Tensor b, Tensor y) {
        NaiveNorm.concatChannels(a, b, y);
    }

    @Override
    protected void splitChannelsKernel(Tensor dy, Tensor da, Tensor db) {
        NaiveNorm.splitChannels(dy, da, db);
    }

    @Override
    protected void upsampleKernel(Tensor x, Tensor y) {
        NaiveNorm.upsample(x, y);
    }

    @Override
    protected void upsampleBackwardKernel(Tensor dy, Tensor dx) {
        NaiveNorm.upsampleBackward(dy, dx);
    }

    @Override
    protected double mseLossKernel(Tensor pred, Tensor target, Tensor weights, Tensor dpred) {
        return NaiveNorm.mseLoss(pred, target, weights, dpred);
    }

    @Override
    protected double pseudoHuberLossKernel(Tensor pred, Tensor target, Tensor weights, float c, Tensor dpred) {
        return NaiveNorm.pseudoHuberLoss(pred, target, weights, c, dpred);
    }

    @Override
    protected void sinusoidalEmbeddingKernel(Tensor t, boolean flipSinToCos, float downscaleFreqShift, float scale, float maxPeriod, Tensor y) {
        NaiveNorm.sinusoidalEmbedding(t, flipSinToCos, downscaleFreqShift, scale, maxPeriod, y);
    }

    @Override
    protected void fourierEmbeddingKernel(Tensor t, Tensor weight, boolean log, boolean flipSinToCos, Tensor y) {
        NaiveNorm.fourierEmbedding(t, weight, log, flipSinToCos, y);
    }

    @Override
    protected void adamStepKernel(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2, float eps, float weightDecay, boolean decoupled) {
        NaiveOptim.adamStep(p, g, m, v, t, lr, beta1, beta2, eps, weightDecay, decoupled);
    }

    @Override
    protected void radamStepKernel(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2, float eps, float weightDecay, boolean decoupled) {
        NaiveOptim.radamStep(p, g, m, v, t, lr, beta1, beta2, eps, weightDecay, decoupled);
    }

    @Override
    protected double sumOfSquaresKernel(Tensor x) {
        return NaiveOptim.sumOfSquares(x);
    }

    @Override
    protected void emaKernel(Tensor target, Tensor source, float mu) {
        NaiveOptim.ema(target, source, mu);
    }
}
