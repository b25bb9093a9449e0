package ai.onestep.model;

import ai.onestep.backend.Ops;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.Workspace;

/**
 * What a forward or backward pass runs with: the backend, the workspace its activations live in, whether it is a
 * training pass (dropout active, activations saved for backward), and the dropout seed. Two passes given the same
 * seed draw the same dropout masks: consistency distillation needs exactly that for the student and its EMA
 * target (Song et al. 2023, Section 4).
 */
public final class Context {
    public final Ops ops;
    public final Workspace ws;
    public final boolean training;
    public final long dropoutSeed;

    public Context(Ops ops, Workspace ws, boolean training, long dropoutSeed) {
        this.ops = ops;
        this.ws = ws;
        this.training = training;
        this.dropoutSeed = dropoutSeed;
    }

    /** An inference context (no dropout). */
    public static Context inference(Ops ops, Workspace ws) {
        return new Context(ops, ws, false, 0);
    }

    Tensor alloc(Layout layout, int... shape) {
        return ws.allocate(layout, shape);
    }

    Tensor like(Tensor t) {
        return ws.allocate(t.layout(), t.shape());
    }
}
