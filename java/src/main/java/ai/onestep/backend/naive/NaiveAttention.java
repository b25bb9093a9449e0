package ai.onestep.backend.naive;

import ai.onestep.tensor.Tensor;

/** PLACEHOLDER: filled by the Attention work. */
final class NaiveAttention {
    private NaiveAttention() {
    }

    static void attention(Tensor q, Tensor k, Tensor v, int heads, Tensor o, Tensor lse) {
        throw new UnsupportedOperationException("naive attention: not implemented yet");
    }

    static void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dO, int heads, Tensor dq, Tensor dk, Tensor dv) {
        throw new UnsupportedOperationException("naive attentionBackward: not implemented yet");
    }
}
