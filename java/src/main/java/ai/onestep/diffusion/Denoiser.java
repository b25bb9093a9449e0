package ai.onestep.diffusion;

import ai.onestep.tensor.Tensor;

/** A denoiser D(x; sigma): the teacher's preconditioned network, or a consistency function f(x, t). */
@FunctionalInterface
public interface Denoiser {
    /**
     * Writes {@code out = D(x; sigma[n])} for each sample n of x (N, H, W, C).
     *
     * @param classLabels one class per sample, or null for an unconditional model
     */
    void denoise(Tensor x, double[] sigma, int[] classLabels, Tensor out);
}
