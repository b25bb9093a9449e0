package ai.onestep.backend.cpu;

import ai.onestep.tensor.Tensor;

/** PLACEHOLDER: filled by the Norm work. */
final class CpuNorm {
    private final CpuPool pool;

    CpuNorm(CpuPool pool) {
        this.pool = pool;
    }

    void groupNorm(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, float eps, boolean silu, Tensor y, Tensor mean, Tensor rstd) {
        throw new UnsupportedOperationException("cpu groupNorm: not implemented yet");
    }

    void groupNormBackward(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, boolean silu, Tensor mean, Tensor rstd, Tensor dy, Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dscale, Tensor dshift) {
        throw new UnsupportedOperationException("cpu groupNormBackward: not implemented yet");
    }

    void silu(Tensor x, Tensor y) {
        throw new UnsupportedOperationException("cpu silu: not implemented yet");
    }

    void siluBackward(Tensor x, Tensor dy, Tensor dx) {
        throw new UnsupportedOperationException("cpu siluBackward: not implemented yet");
    }

    void add(Tensor a, Tensor b, Tensor y) {
        throw new UnsupportedOperationException("cpu add: not implemented yet");
    }

    void mul(Tensor a, Tensor b, Tensor y) {
        throw new UnsupportedOperationException("cpu mul: not implemented yet");
    }

    void axpy(float alpha, Tensor x, Tensor y) {
        throw new UnsupportedOperationException("cpu axpy: not implemented yet");
    }

    void scale(Tensor x, float alpha, Tensor y) {
        throw new UnsupportedOperationException("cpu scale: not implemented yet");
    }

    void addPerChannel(Tensor x, Tensor v, Tensor y) {
        throw new UnsupportedOperationException("cpu addPerChannel: not implemented yet");
    }

    void sumPerChannel(Tensor dy, Tensor dv) {
        throw new UnsupportedOperationException("cpu sumPerChannel: not implemented yet");
    }

    void concatChannels(Tensor a, Tensor b, Tensor y) {
        throw new UnsupportedOperationException("cpu concatChannels: not implemented yet");
    }

    void splitChannels(Tensor dy, Tensor da, Tensor db) {
        throw new UnsupportedOperationException("cpu splitChannels: not implemented yet");
    }

    void upsample(Tensor x, Tensor y) {
        throw new UnsupportedOperationException("cpu upsample: not implemented yet");
    }

    void upsampleBackward(Tensor dy, Tensor dx) {
        throw new UnsupportedOperationException("cpu upsampleBackward: not implemented yet");
    }

    double mseLoss(Tensor pred, Tensor target, Tensor weights, Tensor dpred) {
        throw new UnsupportedOperationException("cpu mseLoss: not implemented yet");
    }

    double pseudoHuberLoss(Tensor pred, Tensor target, Tensor weights, float c, Tensor dpred) {
        throw new UnsupportedOperationException("cpu pseudoHuberLoss: not implemented yet");
    }

    void sinusoidalEmbedding(Tensor t, boolean flipSinToCos, float downscaleFreqShift, float scale, float maxPeriod, Tensor y) {
        throw new UnsupportedOperationException("cpu sinusoidalEmbedding: not implemented yet");
    }

    void fourierEmbedding(Tensor t, Tensor weight, boolean log, boolean flipSinToCos, Tensor y) {
        throw new UnsupportedOperationException("cpu fourierEmbedding: not implemented yet");
    }
}
