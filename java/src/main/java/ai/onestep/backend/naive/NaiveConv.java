package ai.onestep.backend.naive;

import ai.onestep.tensor.Tensor;

/** PLACEHOLDER: filled by the Conv work. */
final class NaiveConv {
    private NaiveConv() {
    }

    static void matmul(Tensor a, boolean transA, Tensor b, boolean transB, Tensor c, int m, int n, int k, float alpha, float beta) {
        throw new UnsupportedOperationException("naive matmul: not implemented yet");
    }

    static void linear(Tensor x, Tensor w, Tensor b, Tensor y, int rows, int in, int out) {
        throw new UnsupportedOperationException("naive linear: not implemented yet");
    }

    static void linearBackward(Tensor x, Tensor w, Tensor dy, Tensor dx, Tensor dw, Tensor db, int rows, int in, int out) {
        throw new UnsupportedOperationException("naive linearBackward: not implemented yet");
    }

    static void conv(Tensor x, Tensor w, Tensor b, int stride, int padding, Tensor y) {
        throw new UnsupportedOperationException("naive conv: not implemented yet");
    }

    static void convBackward(Tensor x, Tensor w, Tensor dy, int stride, int padding, Tensor dx, Tensor dw, Tensor db) {
        throw new UnsupportedOperationException("naive convBackward: not implemented yet");
    }
}
