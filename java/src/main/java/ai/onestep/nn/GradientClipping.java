package ai.onestep.nn;

import ai.onestep.backend.Ops;

/** Gradient clipping over a whole model, as {@code torch.nn.utils.clip_grad_norm_}. */
public final class GradientClipping {
    /** Added to the norm before dividing, as PyTorch does, so the clipped norm lands just under maxNorm. */
    static final double NORM_EPS = 1e-6;

    private GradientClipping() {
    }

    /**
     * The L2 norm of all gradients together, {@code sqrt(sum over parameters of sum(g^2))}, summed in double in
     * the set's name order (so it is deterministic).
     */
    public static double globalNorm(ParameterSet params, Ops ops) {
        java.util.List<ai.onestep.tensor.Tensor> grads = new java.util.ArrayList<>();
        for (Parameter p : params) {
            grads.add(p.grad());
        }
        return Math.sqrt(ops.sumOfSquares(grads));
    }

    /**
     * Scales every gradient by {@code maxNorm / (norm + 1e-6)} when the global norm exceeds {@code maxNorm}
     * (Pascanu et al. 2013, "On the difficulty of training recurrent neural networks", Algorithm 1), and returns
     * the norm before clipping. A NaN or infinite norm leaves the gradients untouched and is returned as it is:
     * the caller decides (skip the step, lower the loss scale), because scaling would spread the NaN into every
     * gradient and hide where it came from.
     *
     * @throws IllegalArgumentException if maxNorm is not a finite number > 0
     * @throws IllegalStateException if the set keeps no gradients
     */
    public static double clipByGlobalNorm(ParameterSet params, double maxNorm, Ops ops) {
        if (!(maxNorm > 0) || !Double.isFinite(maxNorm)) {
            throw new IllegalArgumentException("clipByGlobalNorm: maxNorm must be a finite number > 0, got "
                    + maxNorm);
        }
        if (!params.hasGradients()) {
            throw new IllegalStateException("clipByGlobalNorm: the parameter set keeps no gradients");
        }
        double norm = globalNorm(params, ops);
        if (!Double.isFinite(norm)) {
            return norm;
        }
        double coef = maxNorm / (norm + NORM_EPS);
        if (coef < 1) {
            for (Parameter p : params) {
                ops.scale(p.grad(), (float) coef, p.grad());
            }
        }
        return norm;
    }
}
