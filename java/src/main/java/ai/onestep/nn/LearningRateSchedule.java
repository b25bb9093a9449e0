package ai.onestep.nn;

/**
 * The learning rate as a pure function of the step: {@code lr(step)} is the rate for the update that follows
 * {@code step} completed updates ({@code step = optimizer.steps()}), so the first update uses {@code lr(0)}.
 * That is the convention of diffusers' schedulers ({@code get_*_schedule_with_warmup}, whose formulas these
 * follow) and of EDM's ramp-up; a warm-up therefore starts at exactly 0. Values are computed in double.
 */
@FunctionalInterface
public interface LearningRateSchedule {

    /** The learning rate for the update after {@code step} completed updates ({@code step >= 0}). */
    float lr(long step);

    /** {@code base} at every step. */
    static LearningRateSchedule constant(double base) {
        checkBase(base);
        return step -> (float) base;
    }

    /**
     * Linear warm-up, then constant (diffusers' {@code get_constant_schedule_with_warmup}):
     * {@code base * step / warmup} for {@code step < warmup}, then {@code base}. Warm-up keeps Adam's first,
     * noisy second-moment estimates from taking full-size steps (Liu et al. 2020, sec. 3).
     */
    static LearningRateSchedule linearWarmup(double base, long warmupSteps) {
        checkBase(base);
        checkSteps(warmupSteps, Long.MAX_VALUE);
        return step -> (float) (base * warmup(step, warmupSteps));
    }

    /**
     * Linear warm-up, then linear decay to 0 at {@code totalSteps} (diffusers'
     * {@code get_linear_schedule_with_warmup}); 0 after.
     */
    static LearningRateSchedule warmupLinearDecay(double base, long warmupSteps, long totalSteps) {
        checkBase(base);
        checkSteps(warmupSteps, totalSteps);
        return step -> {
            if (step < warmupSteps) {
                return (float) (base * warmup(step, warmupSteps));
            }
            return (float) (base * Math.max(0.0, (double) (totalSteps - step) / Math.max(1, totalSteps - warmupSteps)));
        };
    }

    /**
     * Linear warm-up, then a half cosine from base to 0 at {@code totalSteps} (diffusers'
     * {@code get_cosine_schedule_with_warmup} with {@code num_cycles = 0.5}; Loshchilov &amp; Hutter 2017,
     * SGDR, eq. 5 without restarts); 0 after.
     */
    static LearningRateSchedule warmupCosine(double base, long warmupSteps, long totalSteps) {
        checkBase(base);
        checkSteps(warmupSteps, totalSteps);
        return step -> {
            if (step < warmupSteps) {
                return (float) (base * warmup(step, warmupSteps));
            }
            double progress = Math.min(1.0, (double) (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps));
            return (float) (base * 0.5 * (1 + Math.cos(Math.PI * progress)));
        };
    }

    private static double warmup(long step, long warmupSteps) {
        if (step < 0) {
            throw new IllegalArgumentException("learning-rate schedule: step must be >= 0, got " + step);
        }
        return step < warmupSteps ? (double) step / warmupSteps : 1.0;
    }

    private static void checkBase(double base) {
        if (!(base >= 0) || !Double.isFinite(base)) {
            throw new IllegalArgumentException("learning rate must be a finite number >= 0, got " + base);
        }
    }

    private static void checkSteps(long warmupSteps, long totalSteps) {
        if (warmupSteps < 0 || totalSteps < warmupSteps) {
            throw new IllegalArgumentException("need 0 <= warmupSteps <= totalSteps, got " + warmupSteps + " and "
                    + totalSteps);
        }
    }
}
