package ai.onestep.backend.naive;

import ai.onestep.tensor.Tensor;

/** PLACEHOLDER: filled by the Optim work. */
final class NaiveOptim {
    private NaiveOptim() {
    }

    static void adamStep(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2, float eps, float weightDecay, boolean decoupled) {
        throw new UnsupportedOperationException("naive adamStep: not implemented yet");
    }

    static void radamStep(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2, float eps, float weightDecay, boolean decoupled) {
        throw new UnsupportedOperationException("naive radamStep: not implemented yet");
    }

    static double sumOfSquares(Tensor x) {
        throw new UnsupportedOperationException("naive sumOfSquares: not implemented yet");
    }

    static void ema(Tensor target, Tensor source, float mu) {
        throw new UnsupportedOperationException("naive ema: not implemented yet");
    }
}
