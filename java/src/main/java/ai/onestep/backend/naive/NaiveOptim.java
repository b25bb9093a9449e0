package ai.onestep.backend.naive;

import ai.onestep.tensor.Tensor;

/**
 * The oracle for the optimizer steps, the sum of squares and the EMA: float64 loops over {@code double[]} that
 * read like the formulas of the papers (and of {@code torch.optim}), plus the Tensor wrappers {@link NaiveOps}
 * calls. The wrappers round the updated state back to float32, as the fast backends keep it.
 *
 * <p>All steps update {@code p}, {@code m} and {@code v} in place and leave the gradient {@code g} untouched
 * (classic L2 decay adds {@code wd p} to a copy of the gradient, as PyTorch does).
 */
public final class NaiveOptim {
    private NaiveOptim() {
    }

    /**
     * One Adam step (Kingma &amp; Ba 2015, Algorithm 1), step {@code t >= 1}; {@code decoupled} is AdamW
     * (Loshchilov &amp; Hutter 2019, Algorithm 2: {@code p *= 1 - lr wd} before the step), otherwise L2 decay
     * ({@code g + wd p}).
     */
    public static void adamStep(double[] p, double[] g, double[] m, double[] v, int t, double lr, double beta1,
                                double beta2, double eps, double weightDecay, boolean decoupled) {
        double bc1 = 1 - Math.pow(beta1, t);
        double bc2 = 1 - Math.pow(beta2, t);
        for (int i = 0; i < p.length; i++) {
            double gi = decoupled ? g[i] : g[i] + weightDecay * p[i];
            if (decoupled) {
                p[i] *= 1 - lr * weightDecay;
            }
            m[i] = beta1 * m[i] + (1 - beta1) * gi;
            v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
            double mHat = m[i] / bc1;
            double vHat = v[i] / bc2;
            p[i] -= lr * mHat / (Math.sqrt(vHat) + eps);
        }
    }

    /**
     * The length of the approximated simple moving average at step t (Liu et al. 2020, Algorithm 2):
     * {@code rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)} with {@code rho_inf = 2 / (1 - beta2) - 1}.
     */
    public static double radamRho(int t, double beta2) {
        double rhoInf = 2 / (1 - beta2) - 1;
        double b2t = Math.pow(beta2, t);
        return rhoInf - 2 * t * b2t / (1 - b2t);
    }

    /**
     * The variance rectification term of RAdam (Liu et al. 2020, eq. 6 and Algorithm 2):
     * {@code r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))}; meaningful only
     * when {@code rho_t > 5}.
     */
    public static double radamRectification(int t, double beta2) {
        double rhoInf = 2 / (1 - beta2) - 1;
        double rho = radamRho(t, beta2);
        return Math.sqrt((rho - 4) * (rho - 2) * rhoInf / ((rhoInf - 4) * (rhoInf - 2) * rho));
    }

    /**
     * One RAdam step with torch.optim.RAdam's semantics: the moments as in Adam; while {@code rho_t <= 5} the
     * variance of the adaptive rate is intractable and the step is the bias-corrected momentum
     * {@code p -= lr m_hat}; afterwards {@code p -= lr m_hat r_t l_t} with
     * {@code l_t = sqrt(1 - beta2^t) / (sqrt(v) + eps)} (PyTorch adds eps to the uncorrected sqrt(v)).
     * Weight decay as in {@link #adamStep}.
     */
    public static void radamStep(double[] p, double[] g, double[] m, double[] v, int t, double lr, double beta1,
                                 double beta2, double eps, double weightDecay, boolean decoupled) {
        double bc1 = 1 - Math.pow(beta1, t);
        double bc2 = 1 - Math.pow(beta2, t);
        boolean rectified = radamRho(t, beta2) > 5;
        double r = rectified ? radamRectification(t, beta2) : 0;
        for (int i = 0; i < p.length; i++) {
            double gi = decoupled ? g[i] : g[i] + weightDecay * p[i];
            if (decoupled) {
                p[i] *= 1 - lr * weightDecay;
            }
            m[i] = beta1 * m[i] + (1 - beta1) * gi;
            v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
            double mHat = m[i] / bc1;
            if (rectified) {
                double l = Math.sqrt(bc2) / (Math.sqrt(v[i]) + eps);
                p[i] -= lr * mHat * r * l;
            } else {
                p[i] -= lr * mHat;
            }
        }
    }

    /** {@code sum x_i^2}, left to right. */
    public static double sumOfSquares(double[] x) {
        double s = 0;
        for (double xi : x) {
            s += xi * xi;
        }
        return s;
    }

    /** {@code target = mu target + (1 - mu) source}. */
    public static void ema(double[] target, double[] source, double mu) {
        for (int i = 0; i < target.length; i++) {
            target[i] = mu * target[i] + (1 - mu) * source[i];
        }
    }

    // ---- Tensor wrappers (called by NaiveOps; arguments already validated by Ops) ----

    static void adamStep(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2,
                         float eps, float weightDecay, boolean decoupled) {
        double[] pd = p.toDoubleArray();
        double[] md = m.toDoubleArray();
        double[] vd = v.toDoubleArray();
        adamStep(pd, g.toDoubleArray(), md, vd, t, lr, beta1, beta2, eps, weightDecay, decoupled);
        p.copyFrom(pd);
        m.copyFrom(md);
        v.copyFrom(vd);
    }

    static void radamStep(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2,
                          float eps, float weightDecay, boolean decoupled) {
        double[] pd = p.toDoubleArray();
        double[] md = m.toDoubleArray();
        double[] vd = v.toDoubleArray();
        radamStep(pd, g.toDoubleArray(), md, vd, t, lr, beta1, beta2, eps, weightDecay, decoupled);
        p.copyFrom(pd);
        m.copyFrom(md);
        v.copyFrom(vd);
    }

    static double sumOfSquares(Tensor x) {
        return sumOfSquares(x.toDoubleArray());
    }

    static void ema(Tensor target, Tensor source, float mu) {
        double[] td = target.toDoubleArray();
        ema(td, source.toDoubleArray(), mu);
        target.copyFrom(td);
    }
}
