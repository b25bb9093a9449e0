package ai.onestep.backend.cpu;

import ai.onestep.tensor.Tensor;

/** PLACEHOLDER: filled by the Attention work. */
final class CpuAttention {
    private final CpuPool pool;

    CpuAttention(CpuPool pool) {
        this.pool = pool;
    }

    void attention(Tensor q, Tensor k, Tensor v, int heads, Tensor o, Tensor lse) {
        throw new UnsupportedOperationException("cpu attention: not implemented yet");
    }

    void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dO, int heads, Tensor dq, Tensor dk, Tensor dv) {
        throw new UnsupportedOperationException("cpu attentionBackward: not implemented yet");
    }
}
