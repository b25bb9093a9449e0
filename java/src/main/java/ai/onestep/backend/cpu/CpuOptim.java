package ai.onestep.backend.cpu;

import ai.onestep.tensor.Tensor;

/** PLACEHOLDER: filled by the Optim work. */
final class CpuOptim {
    private final CpuPool pool;

    CpuOptim(CpuPool pool) {
        this.pool = pool;
    }

    void adamStep(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2, float eps, float weightDecay, boolean decoupled) {
        throw new UnsupportedOperationException("cpu adamStep: not implemented yet");
    }

    void radamStep(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2, float eps, float weightDecay, boolean decoupled) {
        throw new UnsupportedOperationException("cpu radamStep: not implemented yet");
    }

    double sumOfSquares(Tensor x) {
        throw new UnsupportedOperationException("cpu sumOfSquares: not implemented yet");
    }

    void ema(Tensor target, Tensor source, float mu) {
        throw new UnsupportedOperationException("cpu ema: not implemented yet");
    }
}
