package ai.onestep.backend.naive;

import ai.onestep.tensor.Tensor;

/**
 * The oracle for group norm, SiLU, the elementwise and data-movement ops, the losses and the time embeddings:
 * plain float64 loops over row-major {@code double[]} that read like the formulas in {@link ai.onestep.backend.Ops}.
 * The Tensor-level wrappers (package-private, called by {@link NaiveOps}) convert to double, call these and
 * convert back; the finite-difference tests call the double functions directly.
 *
 * <p>Gradient convention (Ops): parameter gradients (dgamma, dbeta) accumulate, input gradients (dx, dscale,
 * dshift, dpred, da, db, dv) are assigned; a null gradient array is not computed.
 */
public final class NaiveNorm {
    private NaiveNorm() {
    }

    // ------------------------------------------------------------------------------------------------
    // Group norm (Wu & He 2018) with the ResnetBlock2D fusions
    // ------------------------------------------------------------------------------------------------

    /**
     * Group norm over x (n, hw, c) (NHWC with the two spatial dimensions merged), statistics over the hw pixels
     * and the group's c/groups channels, then the affine gamma/beta, then {@code h (1 + scale) + shift} when
     * scale/shift (n, c) are given, then SiLU when {@code silu}. Writes y and the statistics mean, rstd (n, groups),
     * with the biased variance and {@code rstd = 1 / sqrt(var + eps)} as in PyTorch.
     */
    public static void groupNorm(double[] x, int n, int hw, int c, double[] gamma, double[] beta, double[] scale,
                                 double[] shift, int groups, double eps, boolean silu, double[] y, double[] mean,
                                 double[] rstd) {
        int cg = c / groups;
        double count = (double) hw * cg;
        for (int b = 0; b < n; b++) {
            for (int g = 0; g < groups; g++) {
                // Two passes: the mean first, then the mean of squared deviations (no E[x^2] - E[x]^2).
                double s = 0;
                for (int p = 0; p < hw; p++) {
                    for (int k = g * cg; k < (g + 1) * cg; k++) {
                        s += x[(b * hw + p) * c + k];
                    }
                }
                double m = s / count;
                double ss = 0;
                for (int p = 0; p < hw; p++) {
                    for (int k = g * cg; k < (g + 1) * cg; k++) {
                        double d = x[(b * hw + p) * c + k] - m;
                        ss += d * d;
                    }
                }
                double r = 1.0 / Math.sqrt(ss / count + eps);
                mean[b * groups + g] = m;
                rstd[b * groups + g] = r;
                for (int p = 0; p < hw; p++) {
                    for (int k = g * cg; k < (g + 1) * cg; k++) {
                        int i = (b * hw + p) * c + k;
                        double h = (x[i] - m) * r * gamma[k] + beta[k];
                        if (scale != null) {
                            h = h * (1 + scale[b * c + k]) + shift[b * c + k];
                        }
                        y[i] = silu ? silu(h) : h;
                    }
                }
            }
        }
    }

    /**
     * Backward of {@link #groupNorm} from the saved mean and rstd. With {@code xhat = (x - mean) rstd},
     * {@code h1 = gamma xhat + beta}, {@code h2 = h1 (1 + scale) + shift}, {@code y = silu(h2)}:
     * {@code dL/dh2 = dy silu'(h2)}, {@code dshift = sum_hw dL/dh2}, {@code dscale = sum_hw dL/dh2 h1} (assigned),
     * {@code g = dL/dh1 = dL/dh2 (1 + scale)}, {@code dgamma += sum g xhat}, {@code dbeta += sum g}, and the
     * standard normalization backward
     * {@code dx = rstd (gamma g - mean_group(gamma g) - xhat mean_group(gamma g xhat))} (assigned).
     */
    public static void groupNormBackward(double[] x, int n, int hw, int c, double[] gamma, double[] beta,
                                         double[] scale, double[] shift, int groups, boolean silu, double[] mean,
                                         double[] rstd, double[] dy, double[] dx, double[] dgamma, double[] dbeta,
                                         double[] dscale, double[] dshift) {
        int cg = c / groups;
        double count = (double) hw * cg;
        double[] dh1 = new double[x.length];
        if (dscale != null) {
            java.util.Arrays.fill(dscale, 0);
            java.util.Arrays.fill(dshift, 0);
        }
        for (int b = 0; b < n; b++) {
            for (int g = 0; g < groups; g++) {
                double m = mean[b * groups + g];
                double r = rstd[b * groups + g];
                double meanGg = 0;
                double meanGgx = 0;
                for (int p = 0; p < hw; p++) {
                    for (int k = g * cg; k < (g + 1) * cg; k++) {
                        int i = (b * hw + p) * c + k;
                        double xhat = (x[i] - m) * r;
                        double h1 = gamma[k] * xhat + beta[k];
                        double onePlusScale = scale != null ? 1 + scale[b * c + k] : 1;
                        double h2 = scale != null ? h1 * onePlusScale + shift[b * c + k] : h1;
                        double dh2 = silu ? dy[i] * siluGrad(h2) : dy[i];
                        if (dscale != null) {
                            dscale[b * c + k] += dh2 * h1;
                            dshift[b * c + k] += dh2;
                        }
                        dh1[i] = dh2 * onePlusScale;
                        if (dgamma != null) {
                            dgamma[k] += dh1[i] * xhat;
                        }
                        if (dbeta != null) {
                            dbeta[k] += dh1[i];
                        }
                        meanGg += gamma[k] * dh1[i] / count;
                        meanGgx += gamma[k] * dh1[i] * xhat / count;
                    }
                }
                if (dx != null) {
                    for (int p = 0; p < hw; p++) {
                        for (int k = g * cg; k < (g + 1) * cg; k++) {
                            int i = (b * hw + p) * c + k;
                            double xhat = (x[i] - m) * r;
                            dx[i] = r * (gamma[k] * dh1[i] - meanGg - xhat * meanGgx);
                        }
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // SiLU (Elfwing et al. 2018)
    // ------------------------------------------------------------------------------------------------

    public static double sigmoid(double v) {
        return 1.0 / (1.0 + Math.exp(-v));
    }

    /** {@code silu(v) = v sigmoid(v)}. */
    public static double silu(double v) {
        return v * sigmoid(v);
    }

    /** {@code silu'(v) = s + v s (1 - s)} with {@code s = sigmoid(v)}. */
    public static double siluGrad(double v) {
        double s = sigmoid(v);
        return s * (1 + v * (1 - s));
    }

    public static void silu(double[] x, double[] y) {
        for (int i = 0; i < x.length; i++) {
            y[i] = silu(x[i]);
        }
    }

    public static void siluBackward(double[] x, double[] dy, double[] dx) {
        for (int i = 0; i < x.length; i++) {
            dx[i] = dy[i] * siluGrad(x[i]);
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Elementwise and data movement
    // ------------------------------------------------------------------------------------------------

    public static void add(double[] a, double[] b, double[] y) {
        for (int i = 0; i < a.length; i++) {
            y[i] = a[i] + b[i];
        }
    }

    public static void mul(double[] a, double[] b, double[] y) {
        for (int i = 0; i < a.length; i++) {
            y[i] = a[i] * b[i];
        }
    }

    public static void axpy(double alpha, double[] x, double[] y) {
        for (int i = 0; i < x.length; i++) {
            y[i] += alpha * x[i];
        }
    }

    public static void scale(double[] x, double alpha, double[] y) {
        for (int i = 0; i < x.length; i++) {
            y[i] = alpha * x[i];
        }
    }

    /** {@code y[b, p, k] = x[b, p, k] + v[b, k]} for x (n, positions, c). */
    public static void addPerChannel(double[] x, int n, int c, double[] v, double[] y) {
        int positions = x.length / (n * c);
        for (int b = 0; b < n; b++) {
            for (int p = 0; p < positions; p++) {
                for (int k = 0; k < c; k++) {
                    int i = (b * positions + p) * c + k;
                    y[i] = x[i] + v[b * c + k];
                }
            }
        }
    }

    /** {@code dv[b, k] = sum_p dy[b, p, k]} (assigned). */
    public static void sumPerChannel(double[] dy, int n, int c, double[] dv) {
        int positions = dy.length / (n * c);
        java.util.Arrays.fill(dv, 0);
        for (int b = 0; b < n; b++) {
            for (int p = 0; p < positions; p++) {
                for (int k = 0; k < c; k++) {
                    dv[b * c + k] += dy[(b * positions + p) * c + k];
                }
            }
        }
    }

    /** y (pixels, ca + cb) = [a (pixels, ca), b (pixels, cb)] along channels. */
    public static void concatChannels(double[] a, int ca, double[] b, int cb, double[] y) {
        int pixels = a.length / ca;
        for (int p = 0; p < pixels; p++) {
            for (int k = 0; k < ca; k++) {
                y[p * (ca + cb) + k] = a[p * ca + k];
            }
            for (int k = 0; k < cb; k++) {
                y[p * (ca + cb) + ca + k] = b[p * cb + k];
            }
        }
    }

    public static void splitChannels(double[] dy, int ca, int cb, double[] da, double[] db) {
        int pixels = dy.length / (ca + cb);
        for (int p = 0; p < pixels; p++) {
            for (int k = 0; k < ca; k++) {
                da[p * ca + k] = dy[p * (ca + cb) + k];
            }
            for (int k = 0; k < cb; k++) {
                db[p * cb + k] = dy[p * (ca + cb) + ca + k];
            }
        }
    }

    /** {@code y[b, i, j, k] = x[b, i / 2, j / 2, k]}: x (n, h, w, c), y (n, 2h, 2w, c). */
    public static void upsampleNearest2x(double[] x, int n, int h, int w, int c, double[] y) {
        for (int b = 0; b < n; b++) {
            for (int i = 0; i < 2 * h; i++) {
                for (int j = 0; j < 2 * w; j++) {
                    for (int k = 0; k < c; k++) {
                        y[((b * 2 * h + i) * 2 * w + j) * c + k] = x[((b * h + i / 2) * w + j / 2) * c + k];
                    }
                }
            }
        }
    }

    /** {@code dx[b, i, j, k] = sum of the 2x2 block dy[b, 2i..2i+1, 2j..2j+1, k]}: dx (n, h, w, c). */
    public static void upsampleNearest2xBackward(double[] dy, int n, int h, int w, int c, double[] dx) {
        java.util.Arrays.fill(dx, 0);
        for (int b = 0; b < n; b++) {
            for (int i = 0; i < 2 * h; i++) {
                for (int j = 0; j < 2 * w; j++) {
                    for (int k = 0; k < c; k++) {
                        dx[((b * h + i / 2) * w + j / 2) * c + k] += dy[((b * 2 * h + i) * 2 * w + j) * c + k];
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Losses
    // ------------------------------------------------------------------------------------------------

    /**
     * {@code L = (1/N) sum_b w[b] (1/D) sum_i (pred - target)^2} over N samples of D elements; weights null
     * means all ones (EDM's lambda(sigma), Karras et al. 2022 eq. 8). {@code dpred = 2 w[b] (pred - target) / (N D)}.
     */
    public static double mseLoss(double[] pred, double[] target, double[] weights, int n, double[] dpred) {
        int d = pred.length / n;
        double loss = 0;
        for (int b = 0; b < n; b++) {
            double w = weights != null ? weights[b] : 1;
            double s = 0;
            for (int i = b * d; i < (b + 1) * d; i++) {
                double diff = pred[i] - target[i];
                s += diff * diff;
                if (dpred != null) {
                    dpred[i] = 2 * w * diff / ((double) n * d);
                }
            }
            loss += w * s / d;
        }
        return loss / n;
    }

    /**
     * Pseudo-Huber (Song & Dhariwal 2023, eq. 10): {@code d_b = sqrt(||pred_b - target_b||^2 + c^2) - c},
     * {@code L = (1/N) sum_b w[b] d_b}, {@code dpred = w[b] (pred - target) / (N sqrt(||.||^2 + c^2))}.
     * {@code d_b} is evaluated as {@code s / (sqrt(s + c^2) + c)}: the same value without the cancellation of
     * the difference form when {@code s << c^2}.
     */
    public static double pseudoHuberLoss(double[] pred, double[] target, double[] weights, int n, double c,
                                         double[] dpred) {
        int d = pred.length / n;
        double loss = 0;
        for (int b = 0; b < n; b++) {
            double w = weights != null ? weights[b] : 1;
            double s = 0;
            for (int i = b * d; i < (b + 1) * d; i++) {
                double diff = pred[i] - target[i];
                s += diff * diff;
            }
            double norm = Math.sqrt(s + c * c);
            loss += w * s / (norm + c);
            if (dpred != null) {
                for (int i = b * d; i < (b + 1) * d; i++) {
                    dpred[i] = w * (pred[i] - target[i]) / (n * norm);
                }
            }
        }
        return loss / n;
    }

    // ------------------------------------------------------------------------------------------------
    // Time embeddings
    // ------------------------------------------------------------------------------------------------

    /**
     * diffusers' {@code get_timestep_embedding}: {@code half = D / 2},
     * {@code freq_j = exp(-ln(maxPeriod) j / (half - downscaleFreqShift))}, {@code arg = scale t[b] freq_j},
     * {@code y[b] = [sin(arg), cos(arg)]} (or {@code [cos, sin]} when flipped), an odd D padded with one zero.
     */
    public static void sinusoidalEmbedding(double[] t, int dim, boolean flipSinToCos, double downscaleFreqShift,
                                           double scale, double maxPeriod, double[] y) {
        int half = dim / 2;
        for (int b = 0; b < t.length; b++) {
            for (int j = 0; j < half; j++) {
                double freq = Math.exp(-Math.log(maxPeriod) * j / (half - downscaleFreqShift));
                double arg = scale * t[b] * freq;
                y[b * dim + j] = flipSinToCos ? Math.cos(arg) : Math.sin(arg);
                y[b * dim + half + j] = flipSinToCos ? Math.sin(arg) : Math.cos(arg);
            }
            if (dim % 2 == 1) {
                y[b * dim + dim - 1] = 0;
            }
        }
    }

    /**
     * diffusers' {@code GaussianFourierProjection}: {@code arg = 2 pi (log ? ln t[b] : t[b]) weight[j]},
     * {@code y[b] = [sin(arg), cos(arg)]} (or {@code [cos, sin]} when flipped); y (N, 2 weight.length).
     */
    public static void fourierEmbedding(double[] t, double[] weight, boolean log, boolean flipSinToCos,
                                        double[] y) {
        int half = weight.length;
        for (int b = 0; b < t.length; b++) {
            double tb = log ? Math.log(t[b]) : t[b];
            for (int j = 0; j < half; j++) {
                double arg = 2 * Math.PI * tb * weight[j];
                y[b * 2 * half + j] = flipSinToCos ? Math.cos(arg) : Math.sin(arg);
                y[b * 2 * half + half + j] = flipSinToCos ? Math.sin(arg) : Math.cos(arg);
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Tensor wrappers (called by NaiveOps after Ops validated the arguments)
    // ------------------------------------------------------------------------------------------------

    private static double[] d(Tensor t) {
        return t == null ? null : t.toDoubleArray();
    }

    private static void put(Tensor t, double[] v) {
        if (t != null) {
            t.copyFrom(v);
        }
    }

    /** add (N, C) or null: normalizes x + add[n, c], the sum formed in double. */
    static void groupNorm(Tensor x, Tensor add, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups,
                          float eps, boolean silu, Tensor y, Tensor mean, Tensor rstd) {
        double[] yd = new double[(int) x.size()];
        double[] md = new double[x.dim(0) * groups];
        double[] rd = new double[x.dim(0) * groups];
        double[] xd = d(x);
        if (add != null) {
            double[] ad = d(add);
            int c = x.dim(3), perSample = x.dim(1) * x.dim(2) * c;
            for (int i = 0; i < xd.length; i++) {
                xd[i] += ad[i / perSample * c + i % c];
            }
        }
        groupNorm(xd, x.dim(0), x.dim(1) * x.dim(2), x.dim(3), d(gamma), d(beta), d(scale), d(shift), groups, eps,
                silu, yd, md, rd);
        put(y, yd);
        put(mean, md);
        put(rstd, rd);
    }

    static void groupNormBackward(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups,
                                  boolean silu, Tensor mean, Tensor rstd, Tensor dy, Tensor dx, Tensor dgamma,
                                  Tensor dbeta, Tensor dscale, Tensor dshift) {
        double[] dxd = dx == null ? null : new double[(int) x.size()];
        double[] dgd = d(dgamma);
        double[] dbd = d(dbeta);
        double[] dsd = dscale == null ? null : new double[(int) scale.size()];
        double[] dhd = dshift == null ? null : new double[(int) shift.size()];
        // The double function fills dscale and dshift together; a caller may want only one of them.
        double[] dsWork = dsd == null && dhd != null ? new double[(int) shift.size()] : dsd;
        double[] dhWork = dhd == null && dsd != null ? new double[(int) scale.size()] : dhd;
        groupNormBackward(d(x), x.dim(0), x.dim(1) * x.dim(2), x.dim(3), d(gamma), d(beta), d(scale), d(shift),
                groups, silu, d(mean), d(rstd), d(dy), dxd, dgd, dbd, dsWork, dhWork);
        put(dx, dxd);
        put(dgamma, dgd);
        put(dbeta, dbd);
        put(dscale, dsd);
        put(dshift, dhd);
    }

    static void silu(Tensor x, Tensor y) {
        double[] yd = new double[(int) x.size()];
        silu(d(x), yd);
        put(y, yd);
    }

    static void siluBackward(Tensor x, Tensor dy, Tensor dx) {
        double[] dxd = new double[(int) x.size()];
        siluBackward(d(x), d(dy), dxd);
        put(dx, dxd);
    }

    static void add(Tensor a, Tensor b, Tensor y) {
        double[] yd = new double[(int) a.size()];
        add(d(a), d(b), yd);
        put(y, yd);
    }

    static void mul(Tensor a, Tensor b, Tensor y) {
        double[] yd = new double[(int) a.size()];
        mul(d(a), d(b), yd);
        put(y, yd);
    }

    static void axpy(float alpha, Tensor x, Tensor y) {
        double[] yd = d(y);
        axpy(alpha, d(x), yd);
        put(y, yd);
    }

    /** {@code y = a x + b z} in double, rounded once. */
    static void axpby(float a, Tensor x, float b, Tensor z, Tensor y) {
        double[] xd = d(x);
        double[] zd = d(z);
        double[] yd = new double[xd.length];
        for (int i = 0; i < xd.length; i++) {
            yd[i] = (double) a * xd[i] + (double) b * zd[i];
        }
        put(y, yd);
    }

    static void scale(Tensor x, float alpha, Tensor y) {
        double[] yd = new double[(int) x.size()];
        scale(d(x), alpha, yd);
        put(y, yd);
    }

    static void addPerChannel(Tensor x, Tensor v, Tensor y) {
        double[] yd = new double[(int) x.size()];
        addPerChannel(d(x), x.dim(0), x.dim(-1), d(v), yd);
        put(y, yd);
    }

    static void sumPerChannel(Tensor dy, Tensor dv) {
        double[] dvd = new double[(int) dv.size()];
        sumPerChannel(d(dy), dy.dim(0), dy.dim(-1), dvd);
        put(dv, dvd);
    }

    static void concatChannels(Tensor a, Tensor b, Tensor y) {
        double[] yd = new double[(int) y.size()];
        concatChannels(d(a), a.dim(3), d(b), b.dim(3), yd);
        put(y, yd);
    }

    static void splitChannels(Tensor dy, Tensor da, Tensor db) {
        double[] dad = new double[(int) da.size()];
        double[] dbd = new double[(int) db.size()];
        splitChannels(d(dy), da.dim(3), db.dim(3), dad, dbd);
        put(da, dad);
        put(db, dbd);
    }

    static void upsample(Tensor x, Tensor y) {
        double[] yd = new double[(int) y.size()];
        upsampleNearest2x(d(x), x.dim(0), x.dim(1), x.dim(2), x.dim(3), yd);
        put(y, yd);
    }

    static void upsampleBackward(Tensor dy, Tensor dx) {
        double[] dxd = new double[(int) dx.size()];
        upsampleNearest2xBackward(d(dy), dx.dim(0), dx.dim(1), dx.dim(2), dx.dim(3), dxd);
        put(dx, dxd);
    }

    static double mseLoss(Tensor pred, Tensor target, Tensor weights, Tensor dpred) {
        double[] dp = dpred == null ? null : new double[(int) pred.size()];
        double loss = mseLoss(d(pred), d(target), d(weights), pred.dim(0), dp);
        put(dpred, dp);
        return loss;
    }

    static double pseudoHuberLoss(Tensor pred, Tensor target, Tensor weights, float c, Tensor dpred) {
        double[] dp = dpred == null ? null : new double[(int) pred.size()];
        double loss = pseudoHuberLoss(d(pred), d(target), d(weights), pred.dim(0), c, dp);
        put(dpred, dp);
        return loss;
    }

    static void sinusoidalEmbedding(Tensor t, boolean flipSinToCos, float downscaleFreqShift, float scale,
                                    float maxPeriod, Tensor y) {
        double[] yd = new double[(int) y.size()];
        sinusoidalEmbedding(d(t), y.dim(1), flipSinToCos, downscaleFreqShift, scale, maxPeriod, yd);
        put(y, yd);
    }

    static void fourierEmbedding(Tensor t, Tensor weight, boolean log, boolean flipSinToCos, Tensor y) {
        double[] yd = new double[(int) y.size()];
        fourierEmbedding(d(t), d(weight), log, flipSinToCos, yd);
        put(y, yd);
    }
}
