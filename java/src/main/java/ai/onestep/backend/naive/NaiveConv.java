package ai.onestep.backend.naive;

import ai.onestep.tensor.Tensor;

/**
 * The oracle for GEMM, linear layers and 2-D convolution: float64 loops over row-major {@code double[]} that read
 * like the formulas, forward and backward. The Tensor-level wrappers convert to double, call them, and convert
 * back. The public static functions are what the finite-difference tests differentiate.
 *
 * <p>Layouts: matrices row-major; feature maps NHWC (N, H, W, C); conv weights HWIO (KH, KW, Cin, Cout); linear
 * weights (in, out). Backward: input gradients are assigned, parameter gradients accumulate (Ops' conventions).
 */
public final class NaiveConv {
    private NaiveConv() {
    }

    /** The shape of one convolution: input (n, h, w, cin), kernel (kh, kw, cin, cout), output (n, ho, wo, cout). */
    public record ConvShape(int n, int h, int w, int cin, int kh, int kw, int cout, int stride, int padding) {
        public int ho() {
            return Math.floorDiv(h + 2 * padding - kh, stride) + 1;
        }

        public int wo() {
            return Math.floorDiv(w + 2 * padding - kw, stride) + 1;
        }

        static ConvShape of(Tensor x, Tensor w, int stride, int padding) {
            return new ConvShape(x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(1), w.dim(3), stride,
                    padding);
        }
    }

    // ------------------------------------------------------------------------------------------------
    // float64 formulas
    // ------------------------------------------------------------------------------------------------

    /**
     * {@code c = alpha op(a) op(b) + beta c} with op(a) (m, k) and op(b) (k, n); {@code a} is stored (k, m) when
     * {@code transA}, {@code b} (n, k) when {@code transB}. With {@code beta == 0} the old c is not read.
     */
    public static void matmul(double[] a, boolean transA, double[] b, boolean transB, double[] c, int m, int n,
                              int k, double alpha, double beta) {
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int p = 0; p < k; p++) {
                    double aip = transA ? a[p * m + i] : a[i * k + p];
                    double bpj = transB ? b[j * k + p] : b[p * n + j];
                    s += aip * bpj;
                }
                c[i * n + j] = alpha * s + (beta == 0 ? 0 : beta * c[i * n + j]);
            }
        }
    }

    /** {@code y[r, o] = sum_i x[r, i] w[i, o] + b[o]}; b may be null. */
    public static double[] linear(double[] x, double[] w, double[] b, int rows, int in, int out) {
        double[] y = new double[rows * out];
        for (int r = 0; r < rows; r++) {
            for (int o = 0; o < out; o++) {
                double s = b == null ? 0 : b[o];
                for (int i = 0; i < in; i++) {
                    s += x[r * in + i] * w[i * out + o];
                }
                y[r * out + o] = s;
            }
        }
        return y;
    }

    /**
     * Backward of {@link #linear}: {@code dx = dy w^T} (assigned), {@code dw += x^T dy}, {@code db += sum_r dy};
     * any of dx, dw, db may be null.
     */
    public static void linearBackward(double[] x, double[] w, double[] dy, int rows, int in, int out, double[] dx,
                                      double[] dw, double[] db) {
        if (dx != null) {
            for (int r = 0; r < rows; r++) {
                for (int i = 0; i < in; i++) {
                    double s = 0;
                    for (int o = 0; o < out; o++) {
                        s += dy[r * out + o] * w[i * out + o];
                    }
                    dx[r * in + i] = s;
                }
            }
        }
        if (dw != null) {
            for (int i = 0; i < in; i++) {
                for (int o = 0; o < out; o++) {
                    double s = 0;
                    for (int r = 0; r < rows; r++) {
                        s += x[r * in + i] * dy[r * out + o];
                    }
                    dw[i * out + o] += s;
                }
            }
        }
        if (db != null) {
            for (int o = 0; o < out; o++) {
                double s = 0;
                for (int r = 0; r < rows; r++) {
                    s += dy[r * out + o];
                }
                db[o] += s;
            }
        }
    }

    /**
     * Cross-correlation with zero padding, as PyTorch's conv2d:
     * {@code y[n,oh,ow,co] = b[co] + sum_{kh,kw,ci} x[n, oh s + kh - p, ow s + kw - p, ci] w[kh,kw,ci,co]},
     * taps outside the input contributing zero. b may be null.
     */
    public static double[] conv2d(double[] x, double[] w, double[] b, ConvShape s) {
        int ho = s.ho(), wo = s.wo();
        double[] y = new double[s.n() * ho * wo * s.cout()];
        for (int n = 0; n < s.n(); n++) {
            for (int oh = 0; oh < ho; oh++) {
                for (int ow = 0; ow < wo; ow++) {
                    int yo = ((n * ho + oh) * wo + ow) * s.cout();
                    for (int co = 0; co < s.cout(); co++) {
                        double acc = b == null ? 0 : b[co];
                        for (int kh = 0; kh < s.kh(); kh++) {
                            int ih = oh * s.stride() + kh - s.padding();
                            if (ih < 0 || ih >= s.h()) {
                                continue;
                            }
                            for (int kw = 0; kw < s.kw(); kw++) {
                                int iw = ow * s.stride() + kw - s.padding();
                                if (iw < 0 || iw >= s.w()) {
                                    continue;
                                }
                                int xo = ((n * s.h() + ih) * s.w() + iw) * s.cin();
                                int wo0 = (kh * s.kw() + kw) * s.cin() * s.cout() + co;
                                for (int ci = 0; ci < s.cin(); ci++) {
                                    acc += x[xo + ci] * w[wo0 + ci * s.cout()];
                                }
                            }
                        }
                        y[yo + co] = acc;
                    }
                }
            }
        }
        return y;
    }

    /**
     * Backward of {@link #conv2d}, each gradient the adjoint of the forward sum: for every output element and
     * tap, {@code dx[in] += dy[out] w[tap]} and {@code dw[tap] += x[in] dy[out]}; {@code db[co] += sum dy}.
     * dx is assigned (zeroed first), dw and db accumulate; any of them may be null.
     */
    public static void conv2dBackward(double[] x, double[] w, double[] dy, ConvShape s, double[] dx, double[] dw,
                                      double[] db) {
        int ho = s.ho(), wo = s.wo();
        if (dx != null) {
            java.util.Arrays.fill(dx, 0);
        }
        for (int n = 0; n < s.n(); n++) {
            for (int oh = 0; oh < ho; oh++) {
                for (int ow = 0; ow < wo; ow++) {
                    int yo = ((n * ho + oh) * wo + ow) * s.cout();
                    for (int kh = 0; kh < s.kh(); kh++) {
                        int ih = oh * s.stride() + kh - s.padding();
                        if (ih < 0 || ih >= s.h()) {
                            continue;
                        }
                        for (int kw = 0; kw < s.kw(); kw++) {
                            int iw = ow * s.stride() + kw - s.padding();
                            if (iw < 0 || iw >= s.w()) {
                                continue;
                            }
                            int xo = ((n * s.h() + ih) * s.w() + iw) * s.cin();
                            int wt = (kh * s.kw() + kw) * s.cin() * s.cout();
                            for (int ci = 0; ci < s.cin(); ci++) {
                                for (int co = 0; co < s.cout(); co++) {
                                    double g = dy[yo + co];
                                    if (dx != null) {
                                        dx[xo + ci] += g * w[wt + ci * s.cout() + co];
                                    }
                                    if (dw != null) {
                                        dw[wt + ci * s.cout() + co] += x[xo + ci] * g;
                                    }
                                }
                            }
                        }
                    }
                    if (db != null) {
                        for (int co = 0; co < s.cout(); co++) {
                            db[co] += dy[yo + co];
                        }
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Tensor wrappers (called by NaiveOps)
    // ------------------------------------------------------------------------------------------------

    static void matmul(Tensor a, boolean transA, Tensor b, boolean transB, Tensor c, int m, int n, int k, float alpha,
                       float beta) {
        double[] cd = beta == 0 ? new double[m * n] : c.toDoubleArray();
        matmul(a.toDoubleArray(), transA, b.toDoubleArray(), transB, cd, m, n, k, alpha, beta);
        c.copyFrom(cd);
    }

    static void linear(Tensor x, Tensor w, Tensor b, Tensor y, int rows, int in, int out) {
        y.copyFrom(linear(x.toDoubleArray(), w.toDoubleArray(), b == null ? null : b.toDoubleArray(), rows, in, out));
    }

    static void linearBackward(Tensor x, Tensor w, Tensor dy, Tensor dx, Tensor dw, Tensor db, int rows, int in,
                               int out) {
        double[] dxd = dx == null ? null : new double[rows * in];
        double[] dwd = dw == null ? null : dw.toDoubleArray();
        double[] dbd = db == null ? null : db.toDoubleArray();
        linearBackward(x.toDoubleArray(), w.toDoubleArray(), dy.toDoubleArray(), rows, in, out, dxd, dwd, dbd);
        copyBack(dx, dxd);
        copyBack(dw, dwd);
        copyBack(db, dbd);
    }

    static void conv(Tensor x, Tensor w, Tensor b, int stride, int padding, Tensor y) {
        y.copyFrom(conv2d(x.toDoubleArray(), w.toDoubleArray(), b == null ? null : b.toDoubleArray(),
                ConvShape.of(x, w, stride, padding)));
    }

    static void convBackward(Tensor x, Tensor w, Tensor dy, int stride, int padding, Tensor dx, Tensor dw,
                             Tensor db) {
        double[] dxd = dx == null ? null : new double[(int) x.size()];
        double[] dwd = dw == null ? null : dw.toDoubleArray();
        double[] dbd = db == null ? null : db.toDoubleArray();
        conv2dBackward(x.toDoubleArray(), w.toDoubleArray(), dy.toDoubleArray(), ConvShape.of(x, w, stride, padding),
                dxd, dwd, dbd);
        copyBack(dx, dxd);
        copyBack(dw, dwd);
        copyBack(db, dbd);
    }

    private static void copyBack(Tensor t, double[] v) {
        if (t != null) {
            t.copyFrom(v);
        }
    }
}
