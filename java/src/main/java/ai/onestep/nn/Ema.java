package ai.onestep.nn;

import ai.onestep.backend.Ops;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;

/**
 * An exponential moving average of a model's parameters: a shadow {@link ParameterSet} (values only, same
 * names) updated by {@code shadow = mu shadow + (1 - mu) value} with {@link Ops#ema}. It is both the EMA model
 * that diffusion training samples with (Ho et al. 2020, Karras et al. 2022) and the target network
 * {@code theta^-} of consistency training (Song et al. 2023, Algorithm 2/3): the shadow set can be handed to a
 * model as its weights.
 */
public final class Ema implements AutoCloseable {
    private final Ops ops;
    private final ParameterSet source;
    private final ParameterSet shadow;
    /** One scratch buffer as large as the largest parameter, for {@link #swap()}. */
    private final TensorArena scratchArena = new TensorArena();
    private final Tensor scratch;
    private long updates;

    /** Starts the shadow as an exact copy of {@code source}'s current values. */
    public Ema(Ops ops, ParameterSet source) {
        this.ops = ops;
        this.source = source;
        this.shadow = source.mirror(false);
        shadow.copyValuesFrom(source);
        long largest = 0;
        for (Parameter p : source) {
            largest = Math.max(largest, p.size());
        }
        this.scratch = scratchArena.allocate(Math.toIntExact(largest));
    }

    /**
     * {@code shadow = mu shadow + (1 - mu) value} for every parameter; {@code mu} in [0, 1] (0.9999 for EDM-style
     * EMA; consistency training's {@code mu(k)} schedule comes from the caller).
     */
    public void update(float mu) {
        for (Parameter p : shadow) {
            ops.ema(p.value(), source.get(p.name()).value(), mu);
        }
        updates++;
    }

    /** The averaged weights (values only; same names and shapes as the source). */
    public ParameterSet shadow() {
        return shadow;
    }

    /** The buffer {@link #swap} moves each parameter through (training state, like the shadow). */
    Tensor swapBuffer() {
        return scratch;
    }

    /** Number of {@link #update} calls so far. */
    public long updates() {
        return updates;
    }

    /** Writes the averaged weights into {@code target} (same names and shapes), e.g. for export or evaluation. */
    public void copyTo(ParameterSet target) {
        target.copyValuesFrom(shadow);
    }

    /**
     * Exchanges the averaged and the live weights, so the model (which reads the source set) runs with the EMA
     * weights; a second swap restores both exactly. Through the backend (copies as {@code scale} by 1, which is
     * exact), so it also swaps them where a device owns them ({@link TrainingState}).
     */
    public void swap() {
        for (Parameter p : shadow) {
            Tensor live = source.get(p.name()).value();
            Tensor tmp = scratch.slice(0, (int) p.size());
            ops.scale(live, 1f, tmp);
            ops.scale(p.value(), 1f, live);
            ops.scale(tmp, 1f, p.value());
        }
    }

    @Override
    public void close() {
        shadow.close();
        scratchArena.close();
    }
}
