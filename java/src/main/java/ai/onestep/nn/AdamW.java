package ai.onestep.nn;

import ai.onestep.backend.Ops;
import ai.onestep.tensor.Tensor;

/**
 * Adam (Kingma &amp; Ba 2015) with decoupled weight decay (AdamW, Loshchilov &amp; Hutter 2019) when
 * {@link AdamSettings#decoupled()}, or with classic L2 decay otherwise, which makes it plain Adam. Each step is
 * one {@link Ops#adamStep} per parameter tensor, so it behaves exactly like torch.optim.AdamW / Adam.
 */
public final class AdamW extends AdamFamily {
    public AdamW(Ops ops, ParameterSet params, AdamSettings settings) {
        super(ops, params, settings);
    }

    /** Classic Adam: {@code settings} with L2 weight decay (decoupled = false). */
    public static AdamW adam(Ops ops, ParameterSet params, float weightDecay) {
        return new AdamW(ops, params, AdamSettings.adam(weightDecay));
    }

    @Override
    void update(Parameter p, Tensor m, Tensor v, int t, float lr) {
        ops.adamStep(p.value(), p.grad(), m, v, t, lr, settings.beta1(), settings.beta2(), settings.eps(),
                settings.weightDecay(), settings.decoupled());
    }
}
