package ai.onestep.nn;

/**
 * The hyperparameters shared by {@link AdamW} and {@link RAdam}.
 *
 * @param beta1       decay of the first moment (momentum), in [0, 1)
 * @param beta2       decay of the second moment, in [0, 1)
 * @param eps         added to the denominator, >= 0
 * @param weightDecay >= 0; how it acts depends on {@code decoupled}
 * @param decoupled   true: decoupled decay {@code p *= 1 - lr wd} (AdamW, Loshchilov &amp; Hutter 2019); false:
 *                    L2 decay {@code g += wd p} (classic Adam)
 */
public record AdamSettings(float beta1, float beta2, float eps, float weightDecay, boolean decoupled) {
    public AdamSettings {
        if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) {
            throw new IllegalArgumentException("betas must lie in [0, 1), got " + beta1 + ", " + beta2);
        }
        if (!(eps >= 0) || !Float.isFinite(eps)) {
            throw new IllegalArgumentException("eps must be a finite number >= 0, got " + eps);
        }
        if (!(weightDecay >= 0) || !Float.isFinite(weightDecay)) {
            throw new IllegalArgumentException("weight decay must be a finite number >= 0, got " + weightDecay);
        }
    }

    /** torch.optim.AdamW's defaults with the given decoupled weight decay: betas (0.9, 0.999), eps 1e-8. */
    public static AdamSettings adamW(float weightDecay) {
        return new AdamSettings(0.9f, 0.999f, 1e-8f, weightDecay, true);
    }

    /** torch.optim.Adam's defaults with the given L2 weight decay: betas (0.9, 0.999), eps 1e-8. */
    public static AdamSettings adam(float weightDecay) {
        return new AdamSettings(0.9f, 0.999f, 1e-8f, weightDecay, false);
    }

    public AdamSettings withBetas(float b1, float b2) {
        return new AdamSettings(b1, b2, eps, weightDecay, decoupled);
    }

    public AdamSettings withEps(float e) {
        return new AdamSettings(beta1, beta2, e, weightDecay, decoupled);
    }
}
