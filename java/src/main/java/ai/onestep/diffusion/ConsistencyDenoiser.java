package ai.onestep.diffusion;

import ai.onestep.backend.Ops;
import ai.onestep.model.Context;
import ai.onestep.model.UNet;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.Workspace;

/**
 * A consistency model's function {@code f(x, t) = c_skip(t) x + c_out(t) F(c_in(t) x; c_noise(t))}
 * (Song et al. 2023, eq. 3 and Appendix C) with the boundary-condition scalings of
 * {@link ConsistencyParameterization} and the teacher's network F (EDM's c_in and timestep input).
 */
public final class ConsistencyDenoiser implements Denoiser {
    private final UNet net;
    private final Ops ops;
    private final Workspace ws;
    private final EdmDenoiser inner;
    private final boolean devicePasses;

    public ConsistencyDenoiser(UNet net, Ops ops, Workspace ws) {
        this(net, ops, ws, false);
    }

    /** With {@code devicePasses}, each {@link #denoise} call is one {@link Ops#runPass}; see {@link EdmDenoiser}. */
    public ConsistencyDenoiser(UNet net, Ops ops, Workspace ws, boolean devicePasses) {
        this.net = net;
        this.ops = ops;
        this.ws = ws;
        this.inner = new EdmDenoiser(net, ops, ws);
        this.devicePasses = devicePasses;
    }

    @Override
    public void denoise(Tensor x, double[] t, int[] classLabels, Tensor out) {
        Runnable pass = () -> {
            ws.reset();
            Tensor f = inner.forward(Context.inference(ops, ws), x, t, classLabels);
            combine(ops, x, f, t, out);
        };
        if (!devicePasses) {
            pass.run();
        } else {
            // One device pass (a CUDA graph on the cuda backend) per time point and labels: both are baked into its
            // launches.
            ops.runPass("consistency t=" + java.util.Arrays.toString(t) + EdmDenoiser.labelsKey(classLabels),
                    new Tensor[] {x}, new Tensor[] {out}, pass);
        }
    }

    /**
     * out = c_skip(t) x + c_out(t) F, with the consistency scalings (Song et al. 2023, eq. 5 and App. C): one
     * {@link Ops#axpby} per run of samples at the same t, so a sampler's batch is one op.
     */
    public static void combine(Ops ops, Tensor x, Tensor f, double[] t, Tensor out) {
        for (int i = 0, j; i < x.dim(0); i = j) {
            j = EdmDenoiser.runEnd(t, i);
            ops.axpby((float) ConsistencyParameterization.cSkip(t[i]), x.slice(i, j),
                    (float) ConsistencyParameterization.cOut(t[i]), f.slice(i, j), out.slice(i, j));
        }
    }

    public EdmDenoiser network() {
        return inner;
    }

    public UNet net() {
        return net;
    }
}
