package ai.onestep.diffusion;

/**
 * The consistency model's output scaling (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", eq. 3 and
 * Appendix C): {@code f(x, t) = c_skip(t) x + c_out(t) F(x, t)} with
 * {@code c_skip(t) = sd^2 / ((t - eps)^2 + sd^2)} and {@code c_out(t) = sd (t - eps) / sqrt(sd^2 + t^2)}, so that
 * {@code c_skip(eps) = 1} and {@code c_out(eps) = 0}: the boundary condition {@code f(x, eps) = x} holds exactly,
 * for any network output. F is the teacher's network with its EDM c_in and c_noise.
 */
public final class ConsistencyParameterization {
    /** The smallest time (noise level) of the consistency model; T = 80 is the largest. */
    public static final double EPS = 0.002;
    public static final double T_MAX = 80.0;

    private ConsistencyParameterization() {
    }

    public static double cSkip(double t) {
        double sd2 = Edm.SIGMA_DATA * Edm.SIGMA_DATA;
        return sd2 / ((t - EPS) * (t - EPS) + sd2);
    }

    public static double cOut(double t) {
        return Edm.SIGMA_DATA * (t - EPS) / Math.sqrt(Edm.SIGMA_DATA * Edm.SIGMA_DATA + t * t);
    }
}
