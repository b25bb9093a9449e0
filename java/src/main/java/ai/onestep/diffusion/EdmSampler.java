package ai.onestep.diffusion;

import ai.onestep.backend.Ops;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.Arrays;
import java.util.function.IntConsumer;

/**
 * EDM's deterministic samplers (Karras et al. 2022, Algorithm 1): Heun's second-order method, which costs
 * 2N - 1 network evaluations for N noise levels (the last step, to s_N = 0, is Euler only), and plain Euler
 * (N evaluations). Samplers are plain functions of (denoiser, x, sigmas), as in k-diffusion and
 * stable-diffusion.cpp.
 */
public final class EdmSampler {
    public enum Method { HEUN, EULER }

    private EdmSampler() {
    }

    /** The number of network evaluations for N noise levels. */
    public static int nfe(Method m, int steps) {
        return m == Method.HEUN ? 2 * steps - 1 : steps;
    }

    /**
     * Integrates the probability-flow ODE from {@code sigmas[0]} to 0 in place: {@code x} holds x_0 ~ N(0, s_0^2 I)
     * on entry and the sample on return. {@code onStep} (may be null) is told each finished step index.
     */
    public static void sample(Ops ops, Denoiser d, Method method, Tensor x, double[] sigmas, int[] classLabels,
                              IntConsumer onStep) {
        int n = x.dim(0);
        try (TensorArena scratch = new TensorArena()) {
            Tensor den = scratch.allocate(x.layout(), x.shape());
            Tensor dir = scratch.allocate(x.layout(), x.shape());
            Tensor xNext = scratch.allocate(x.layout(), x.shape());
            double[] sig = new double[n];
            for (int i = 0; i + 1 < sigmas.length; i++) {
                double s = sigmas[i], sNext = sigmas[i + 1], h = sNext - s;
                Arrays.fill(sig, s);
                d.denoise(x, sig, classLabels, den);
                // d_i = (x - D(x; s)) / s  (eq. 3 of Karras et al. 2022 with sigma(t) = t).
                ops.scale(x, (float) (1 / s), dir);
                ops.axpy((float) (-1 / s), den, dir);
                // Euler: x' = x + (s_next - s) d_i.
                xNext.copyFrom(x);
                ops.axpy((float) h, dir, xNext);
                if (method == Method.HEUN && sNext != 0) {
                    // Heun's correction: average d_i with the slope at (x', s_next).
                    Arrays.fill(sig, sNext);
                    d.denoise(xNext, sig, classLabels, den);
                    // x <- x + h/2 (d_i + d'), d' = (x' - D(x'; s_next)) / s_next.
                    ops.axpy((float) (h / 2), dir, x);
                    ops.axpy((float) (h / 2 / sNext), xNext, x);
                    ops.axpy((float) (-h / 2 / sNext), den, x);
                } else {
                    x.copyFrom(xNext);
                }
                if (onStep != null) {
                    onStep.accept(i);
                }
            }
        }
    }
}
