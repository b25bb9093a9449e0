package ai.onestep.diffusion;

/**
 * EDM's time discretization (Karras et al. 2022, eq. 5), computed in float64 as NVlabs/edm does:
 * {@code s_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho} for i = 0..N-1, and {@code s_N = 0}.
 */
public final class KarrasSchedule {
    public static final double SIGMA_MIN = 0.002;
    public static final double SIGMA_MAX = 80.0;
    public static final double RHO = 7.0;

    private KarrasSchedule() {
    }

    /** The N noise levels s_0 > ... > s_{N-1} followed by s_N = 0 (N + 1 values). */
    public static double[] sigmas(int n, double sigmaMin, double sigmaMax, double rho) {
        if (n < 1) {
            throw new IllegalArgumentException("schedule: need at least 1 step, got " + n);
        }
        if (!(sigmaMin > 0 && sigmaMax > sigmaMin && rho > 0)) {
            throw new IllegalArgumentException("schedule: need 0 < sigma_min < sigma_max and rho > 0, got "
                    + sigmaMin + ", " + sigmaMax + ", " + rho);
        }
        double[] s = new double[n + 1];
        double a = Math.pow(sigmaMax, 1 / rho), b = Math.pow(sigmaMin, 1 / rho);
        for (int i = 0; i < n; i++) {
            double frac = n == 1 ? 0 : (double) i / (n - 1);
            s[i] = Math.pow(a + frac * (b - a), rho);
        }
        s[n] = 0;
        return s;
    }

    public static double[] sigmas(int n) {
        return sigmas(n, SIGMA_MIN, SIGMA_MAX, RHO);
    }

    /**
     * The consistency-distillation grid t_1 = eps < ... < t_N = T (Song et al. 2023, Section 4 / Appendix C): the
     * same Karras formula in increasing order, without the final 0. Index 0 here is t_1.
     */
    public static double[] consistencyGrid(int n) {
        double[] desc = sigmas(n, ConsistencyParameterization.EPS, ConsistencyParameterization.T_MAX, RHO);
        double[] t = new double[n];
        for (int i = 0; i < n; i++) {
            t[i] = desc[n - 1 - i];
        }
        return t;
    }
}
