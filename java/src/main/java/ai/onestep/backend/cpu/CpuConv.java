package ai.onestep.backend.cpu;

import ai.onestep.tensor.Tensor;

/** PLACEHOLDER: filled by the Conv work. */
final class CpuConv {
    private final CpuPool pool;

    CpuConv(CpuPool pool) {
        this.pool = pool;
    }

    void matmul(Tensor a, boolean transA, Tensor b, boolean transB, Tensor c, int m, int n, int k, float alpha, float beta) {
        throw new UnsupportedOperationException("cpu matmul: not implemented yet");
    }

    void linear(Tensor x, Tensor w, Tensor b, Tensor y, int rows, int in, int out) {
        throw new UnsupportedOperationException("cpu linear: not implemented yet");
    }

    void linearBackward(Tensor x, Tensor w, Tensor dy, Tensor dx, Tensor dw, Tensor db, int rows, int in, int out) {
        throw new UnsupportedOperationException("cpu linearBackward: not implemented yet");
    }

    void conv(Tensor x, Tensor w, Tensor b, int stride, int padding, Tensor y) {
        throw new UnsupportedOperationException("cpu conv: not implemented yet");
    }

    void convBackward(Tensor x, Tensor w, Tensor dy, int stride, int padding, Tensor dx, Tensor dw, Tensor db) {
        throw new UnsupportedOperationException("cpu convBackward: not implemented yet");
    }
}
