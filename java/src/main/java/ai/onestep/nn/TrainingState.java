package ai.onestep.nn;

import ai.onestep.backend.Ops;
import ai.onestep.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/**
 * Everything a training loop updates every step (parameters, gradients, optimizer moments, EMA copies) handed to
 * the backend for the run ({@link Ops#adopt}): on the cuda backend it lives on the device, so the optimizer, the
 * EMA and the gradients' zeroing move no data across the bus. Host reads of it (a checkpoint) must come after
 * {@link #syncToHost}; closing gives it back to the host, synced. On the cpu backend all three are no-ops.
 */
public final class TrainingState implements AutoCloseable {
    private final Ops ops;
    private final List<Tensor> tensors = new ArrayList<>();

    private TrainingState(Ops ops) {
        this.ops = ops;
    }

    /** A builder-style start: add the run's parameter sets, optimizers and EMAs, then {@link #adopt}. */
    public static TrainingState of(Ops ops) {
        return new TrainingState(ops);
    }

    /** The set's values and, when it keeps them, its gradients. */
    public TrainingState add(ParameterSet set) {
        for (Parameter p : set) {
            tensors.add(p.value());
            if (set.hasGradients()) {
                tensors.add(p.grad());
            }
        }
        return this;
    }

    /** The optimizer's state (first and second moments). */
    public TrainingState add(Optimizer opt) {
        tensors.addAll(opt.state().values());
        return this;
    }

    /** The EMA's averaged weights (and the buffer its swap goes through, so a swap stays where they are). */
    public TrainingState add(Ema ema) {
        tensors.add(ema.swapBuffer());
        return add(ema.shadow());
    }

    /** Hands the tensors to the backend; call once, after the state is initialized (resumed) on the host. */
    public TrainingState adopt() {
        ops.adopt(tensors);
        return this;
    }

    /** Brings the current values to the host (before anything reads them there: a checkpoint). */
    public void syncToHost() {
        ops.syncToHost(tensors);
    }

    public List<Tensor> tensors() {
        return List.copyOf(tensors);
    }

    /** Gives the tensors back to the host, synced. */
    @Override
    public void close() {
        ops.release(tensors);
    }
}
