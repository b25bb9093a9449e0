package ai.onestep.backend.naive;

import ai.onestep.tensor.Tensor;

/** PLACEHOLDER: filled by the Norm work. */
final class NaiveNorm {
    private NaiveNorm() {
    }

    static void groupNorm(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, float eps, boolean silu, Tensor y, Tensor mean, Tensor rstd) {
        throw new UnsupportedOperationException("naive groupNorm: not implemented yet");
    }

    static void groupNormBackward(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, boolean silu, Tensor mean, Tensor rstd, Tensor dy, Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dscale, Tensor dshift) {
        throw new UnsupportedOperationException("naive groupNormBackward: not implemented yet");
    }

    static void silu(Tensor x, Tensor y) {
        throw new UnsupportedOperationException("naive silu: not implemented yet");
    }

    static void siluBackward(Tensor x, Tensor dy, Tensor dx) {
        throw new UnsupportedOperationException("naive siluBackward: not implemented yet");
    }

    static void add(Tensor a, Tensor b, Tensor y) {
        throw new UnsupportedOperationException("naive add: not implemented yet");
    }

    static void mul(Tensor a, Tensor b, Tensor y) {
        throw new UnsupportedOperationException("naive mul: not implemented yet");
    }

    static void axpy(float alpha, Tensor x, Tensor y) {
        throw new UnsupportedOperationException("naive axpy: not implemented yet");
    }

    static void scale(Tensor x, float alpha, Tensor y) {
        throw new UnsupportedOperationException("naive scale: not implemented yet");
    }

    static void addPerChannel(Tensor x, Tensor v, Tensor y) {
        throw new UnsupportedOperationException("naive addPerChannel: not implemented yet");
    }

    static void sumPerChannel(Tensor dy, Tensor dv) {
        throw new UnsupportedOperationException("naive sumPerChannel: not implemented yet");
    }

    static void concatChannels(Tensor a, Tensor b, Tensor y) {
        throw new UnsupportedOperationException("naive concatChannels: not implemented yet");
    }

    static void splitChannels(Tensor dy, Tensor da, Tensor db) {
        throw new UnsupportedOperationException("naive splitChannels: not implemented yet");
    }

    static void upsample(Tensor x, Tensor y) {
        throw new UnsupportedOperationException("naive upsample: not implemented yet");
    }

    static void upsampleBackward(Tensor dy, Tensor dx) {
        throw new UnsupportedOperationException("naive upsampleBackward: not implemented yet");
    }

    static double mseLoss(Tensor pred, Tensor target, Tensor weights, Tensor dpred) {
        throw new UnsupportedOperationException("naive mseLoss: not implemented yet");
    }

    static double pseudoHuberLoss(Tensor pred, Tensor target, Tensor weights, float c, Tensor dpred) {
        throw new UnsupportedOperationException("naive pseudoHuberLoss: not implemented yet");
    }

    static void sinusoidalEmbedding(Tensor t, boolean flipSinToCos, float downscaleFreqShift, float scale, float maxPeriod, Tensor y) {
        throw new UnsupportedOperationException("naive sinusoidalEmbedding: not implemented yet");
    }

    static void fourierEmbedding(Tensor t, Tensor weight, boolean log, boolean flipSinToCos, Tensor y) {
        throw new UnsupportedOperationException("naive fourierEmbedding: not implemented yet");
    }
}
