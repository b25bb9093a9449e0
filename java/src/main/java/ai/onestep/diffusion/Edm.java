package ai.onestep.diffusion;

/**
 * EDM preconditioning (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
 * Table 1 and eq. 7): the denoiser is {@code D(x; s) = c_skip(s) x + c_out(s) F(c_in(s) x; c_noise(s))}, where F
 * is the raw network. Kept apart from the network itself, as in NVlabs/edm, so the same U-Net serves the teacher
 * (this wrapper) and the consistency student ({@link ConsistencyParameterization}).
 *
 * <p>The network's timestep input: diffusers' {@code UNet2DModel} embeds a scalar timestep, and EDM's
 * {@code c_noise = ln(s) / 4} spans only about [-1.6, 1.1] over s in [0.002, 80]. We feed
 * {@link #timestep(double) 1000 c_noise = 250 ln(s)}, which spreads the noise levels over a range like DDPM's
 * 0..1000 steps that the sinusoidal embedding's frequencies were designed for. This mapping is part of the
 * checkpoint contract (docs/CHECKPOINTS.md).
 */
public final class Edm {
    /** The standard deviation of the data (pixels in [-1, 1]); EDM's default. */
    public static final double SIGMA_DATA = 0.5;
    /** Training noise distribution: ln s ~ N(P_MEAN, P_STD^2) (Karras et al. 2022, Table 1). */
    public static final double P_MEAN = -1.2;
    public static final double P_STD = 1.2;
    /** The factor from c_noise to the U-Net's timestep input. */
    public static final double TIMESTEP_SCALE = 1000.0;

    private Edm() {
    }

    public static double cSkip(double s) {
        return SIGMA_DATA * SIGMA_DATA / (s * s + SIGMA_DATA * SIGMA_DATA);
    }

    public static double cOut(double s) {
        return s * SIGMA_DATA / Math.sqrt(s * s + SIGMA_DATA * SIGMA_DATA);
    }

    public static double cIn(double s) {
        return 1.0 / Math.sqrt(s * s + SIGMA_DATA * SIGMA_DATA);
    }

    public static double cNoise(double s) {
        return Math.log(s) / 4.0;
    }

    /** The U-Net's timestep input for noise level s: {@code 1000 c_noise(s)}. */
    public static double timestep(double s) {
        return TIMESTEP_SCALE * cNoise(s);
    }

    /** The loss weight lambda(s) = (s^2 + sd^2) / (s sd)^2 (Karras et al. 2022, Table 1), which makes the effective target unit-variance. */
    public static double lossWeight(double s) {
        return (s * s + SIGMA_DATA * SIGMA_DATA) / (s * SIGMA_DATA * s * SIGMA_DATA);
    }
}
