package ai.onestep.backend.naive;

import ai.onestep.tensor.Tensor;

/**
 * Multi-head scaled-dot-product self-attention (Vaswani et al. 2017, eq. 1), the oracle: every head's full
 * T x T score matrix is materialized in double, exactly as the formulas read.
 *
 * <p>Layouts: q, k, v, o are (N, T, C) row-major with {@code C = heads * headDim}; head h owns channels
 * {@code [h*headDim, (h+1)*headDim)}; lse is (N, heads, T). Scores are {@code S = q k^T / sqrt(headDim)}.
 *
 * <p>A row whose scores are all -inf (possible only with infinite inputs, as there is no mask) has no
 * distribution to normalize: it gets {@code o = 0} and {@code lse = -inf}, and contributes no gradient
 * (the FlashAttention convention for fully masked rows).
 */
public final class NaiveAttention {
    private NaiveAttention() {
    }

    static void attention(Tensor q, Tensor k, Tensor v, int heads, Tensor o, Tensor lse) {
        int n = q.dim(0), t = q.dim(1), c = q.dim(2);
        double[] od = new double[(int) o.size()];
        double[] lsed = new double[(int) lse.size()];
        attention(q.toDoubleArray(), k.toDoubleArray(), v.toDoubleArray(), n, t, c, heads, od, lsed);
        o.copyFrom(od);
        lse.copyFrom(lsed);
    }

    static void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dO, int heads,
                                  Tensor dq, Tensor dk, Tensor dv) {
        int n = q.dim(0), t = q.dim(1), c = q.dim(2);
        double[] dqd = new double[(int) dq.size()];
        double[] dkd = new double[(int) dk.size()];
        double[] dvd = new double[(int) dv.size()];
        attentionBackward(q.toDoubleArray(), k.toDoubleArray(), v.toDoubleArray(), o.toDoubleArray(),
                lse.toDoubleArray(), dO.toDoubleArray(), n, t, c, heads, dqd, dkd, dvd);
        dq.copyFrom(dqd);
        dk.copyFrom(dkd);
        dv.copyFrom(dvd);
    }

    /** The scaled scores {@code S[i][j] = q_i . k_j / sqrt(hd)} of head h of sample b, a T x T matrix. */
    static double[][] scores(double[] q, double[] k, int b, int h, int t, int c, int hd) {
        double scale = 1.0 / Math.sqrt(hd);
        double[][] s = new double[t][t];
        for (int i = 0; i < t; i++) {
            int qi = (b * t + i) * c + h * hd;
            for (int j = 0; j < t; j++) {
                int kj = (b * t + j) * c + h * hd;
                double dot = 0;
                for (int d = 0; d < hd; d++) {
                    dot += q[qi + d] * k[kj + d];
                }
                s[i][j] = dot * scale;
            }
        }
        return s;
    }

    /**
     * {@code o = softmax(S) v} per head and {@code lse[b][h][i] = log sum_j exp(S[i][j])}; o and lse are
     * assigned.
     */
    public static void attention(double[] q, double[] k, double[] v, int n, int t, int c, int heads,
                                 double[] o, double[] lse) {
        int hd = c / heads;
        for (int b = 0; b < n; b++) {
            for (int h = 0; h < heads; h++) {
                double[][] s = scores(q, k, b, h, t, c, hd);
                for (int i = 0; i < t; i++) {
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < t; j++) {
                        max = Math.max(max, s[i][j]);
                    }
                    int oi = (b * t + i) * c + h * hd;
                    int li = (b * heads + h) * t + i;
                    if (max == Double.NEGATIVE_INFINITY) {
                        for (int d = 0; d < hd; d++) {
                            o[oi + d] = 0;
                        }
                        lse[li] = Double.NEGATIVE_INFINITY;
                        continue;
                    }
                    // Subtracting the row max keeps exp from overflowing; it cancels in the softmax.
                    double sum = 0;
                    double[] p = new double[t];
                    for (int j = 0; j < t; j++) {
                        p[j] = Math.exp(s[i][j] - max);
                        sum += p[j];
                    }
                    for (int d = 0; d < hd; d++) {
                        double acc = 0;
                        for (int j = 0; j < t; j++) {
                            acc += p[j] * v[(b * t + j) * c + h * hd + d];
                        }
                        o[oi + d] = acc / sum;
                    }
                    lse[li] = max + Math.log(sum);
                }
            }
        }
    }

    /**
     * Gradients of attention given {@code dO}, from the saved {@code o} and {@code lse} (FlashAttention-2, Dao 2023,
     * Algorithm 2): {@code P = exp(S - lse)}, {@code dV = P^T dO}, {@code dP = dO V^T},
     * {@code D_i = rowsum(dO_i * O_i)}, {@code dS = P * (dP - D)}, {@code dQ = dS K / sqrt(hd)},
     * {@code dK = dS^T Q / sqrt(hd)}. dq, dk, dv are assigned.
     */
    public static void attentionBackward(double[] q, double[] k, double[] v, double[] o, double[] lse,
                                         double[] dO, int n, int t, int c, int heads,
                                         double[] dq, double[] dk, double[] dv) {
        int hd = c / heads;
        double scale = 1.0 / Math.sqrt(hd);
        for (int b = 0; b < n; b++) {
            for (int h = 0; h < heads; h++) {
                double[][] s = scores(q, k, b, h, t, c, hd);
                double[][] p = new double[t][t];
                double[][] ds = new double[t][t];
                for (int i = 0; i < t; i++) {
                    double l = lse[(b * heads + h) * t + i];
                    int oi = (b * t + i) * c + h * hd;
                    double rowD = 0;
                    for (int d = 0; d < hd; d++) {
                        rowD += dO[oi + d] * o[oi + d];
                    }
                    for (int j = 0; j < t; j++) {
                        // A row with lse = -inf had no distribution (o = 0): it passes no gradient.
                        p[i][j] = l == Double.NEGATIVE_INFINITY ? 0 : Math.exp(s[i][j] - l);
                        double dp = 0;
                        int vj = (b * t + j) * c + h * hd;
                        for (int d = 0; d < hd; d++) {
                            dp += dO[oi + d] * v[vj + d];
                        }
                        ds[i][j] = p[i][j] * (dp - rowD);
                    }
                }
                for (int i = 0; i < t; i++) {
                    int ri = (b * t + i) * c + h * hd;
                    for (int d = 0; d < hd; d++) {
                        double aq = 0, ak = 0, av = 0;
                        for (int j = 0; j < t; j++) {
                            int rj = (b * t + j) * c + h * hd;
                            aq += ds[i][j] * k[rj + d];
                            ak += ds[j][i] * q[rj + d];
                            av += p[j][i] * dO[rj + d];
                        }
                        dq[ri + d] = aq * scale;
                        dk[ri + d] = ak * scale;
                        dv[ri + d] = av;
                    }
                }
            }
        }
    }
}
