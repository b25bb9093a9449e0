package ai.onestep.nn;

import ai.onestep.backend.Ops;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What Adam-type optimizers share: a first and a second moment per parameter (in the optimizer's own arena),
 * the step counter, and one backend op per parameter tensor per step. Subclasses choose the op.
 */
public abstract sealed class AdamFamily implements Optimizer permits AdamW, RAdam {
    protected final Ops ops;
    protected final AdamSettings settings;
    private final ParameterSet params;
    private final List<Parameter> order;
    private final TensorArena stateArena = new TensorArena();
    private final Tensor[] m;
    private final Tensor[] v;
    private int steps;

    AdamFamily(Ops ops, ParameterSet params, AdamSettings settings) {
        if (!params.hasGradients()) {
            throw new IllegalArgumentException(getClass().getSimpleName()
                    + ": the parameter set keeps no gradients, so it cannot be trained");
        }
        this.ops = ops;
        this.params = params;
        this.settings = settings;
        this.order = params.list();
        this.m = new Tensor[order.size()];
        this.v = new Tensor[order.size()];
        for (int i = 0; i < order.size(); i++) {
            Tensor value = order.get(i).value();
            m[i] = stateArena.allocate(value.layout(), value.shape());
            v[i] = stateArena.allocate(value.layout(), value.shape());
        }
    }

    /** One step of this optimizer on one parameter tensor (an {@link Ops} call). */
    abstract void update(Parameter p, Tensor m, Tensor v, int t, float lr);

    @Override
    public final void step(float lr) {
        if (!(lr >= 0) || !Float.isFinite(lr)) {
            throw new IllegalArgumentException(getClass().getSimpleName()
                    + ": learning rate must be a finite number >= 0, got " + lr);
        }
        if (params.size() != order.size()) {
            throw new IllegalStateException(getClass().getSimpleName() + ": the parameter set grew from "
                    + order.size() + " to " + params.size() + " tensors after the optimizer was made");
        }
        int t = steps + 1;
        for (int i = 0; i < order.size(); i++) {
            update(order.get(i), m[i], v[i], t, lr);
        }
        steps = t;
    }

    @Override
    public final int steps() {
        return steps;
    }

    @Override
    public final void resume(int stepCount) {
        if (stepCount < 0) {
            throw new IllegalArgumentException("step count must be >= 0, got " + stepCount);
        }
        this.steps = stepCount;
    }

    @Override
    public final ParameterSet parameters() {
        return params;
    }

    public final AdamSettings settings() {
        return settings;
    }

    @Override
    public final Map<String, Tensor> state() {
        Map<String, Tensor> s = new LinkedHashMap<>();
        for (int i = 0; i < order.size(); i++) {
            s.put(order.get(i).name() + ".exp_avg", m[i]);
            s.put(order.get(i).name() + ".exp_avg_sq", v[i]);
        }
        return Collections.unmodifiableMap(s);
    }

    @Override
    public final void close() {
        stateArena.close();
    }
}
