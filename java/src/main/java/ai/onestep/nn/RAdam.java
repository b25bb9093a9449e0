package ai.onestep.nn;

import ai.onestep.backend.Ops;
import ai.onestep.tensor.Tensor;

/**
 * Rectified Adam (Liu et al. 2020, Algorithm 2) with torch.optim.RAdam's semantics: plain bias-corrected
 * momentum while {@code rho_t <= 5}, then Adam's adaptive step scaled by the variance rectification
 * {@code r_t}. Each step is one {@link Ops#radamStep} per parameter tensor. Consistency distillation and
 * training (Song et al. 2023) use it.
 */
public final class RAdam extends AdamFamily {
    public RAdam(Ops ops, ParameterSet params, AdamSettings settings) {
        super(ops, params, settings);
    }

    /** torch.optim.RAdam's defaults: betas (0.9, 0.999), eps 1e-8, no weight decay. */
    public RAdam(Ops ops, ParameterSet params) {
        this(ops, params, AdamSettings.adam(0f));
    }

    @Override
    void update(Parameter p, Tensor m, Tensor v, int t, float lr) {
        ops.radamStep(p.value(), p.grad(), m, v, t, lr, settings.beta1(), settings.beta2(), settings.eps(),
                settings.weightDecay(), settings.decoupled());
    }
}
