package ai.onestep.diffusion;

import ai.onestep.backend.Ops;
import ai.onestep.model.Context;
import ai.onestep.model.UNet;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.Workspace;

/**
 * The teacher's denoiser: EDM preconditioning ({@link Edm}) around the raw U-Net,
 * {@code D(x; s) = c_skip(s) x + c_out(s) F(c_in(s) x; 1000 c_noise(s))} (Karras et al. 2022, eq. 7).
 * For a Fourier-embedding U-Net the timestep input is s itself (diffusers takes its log), see {@link #timestep}.
 */
public final class EdmDenoiser implements Denoiser {
    private final UNet net;
    private final Ops ops;
    private final Workspace ws;
    private final boolean devicePasses;

    public EdmDenoiser(UNet net, Ops ops, Workspace ws) {
        this(net, ops, ws, false);
    }

    /**
     * With {@code devicePasses}, each {@link #denoise} call is one {@link Ops#runPass} (a CUDA graph on the cuda
     * backend): only {@code out} comes back to the host, so use it for sampling, never where the caller reads the
     * network's intermediate tensors afterwards (training's feature taps).
     */
    public EdmDenoiser(UNet net, Ops ops, Workspace ws, boolean devicePasses) {
        this.net = net;
        this.ops = ops;
        this.ws = ws;
        this.devicePasses = devicePasses;
    }

    /** The U-Net timestep input for noise level s: 1000 c_noise(s) = 250 ln s (positional), or s (Fourier). */
    public static double timestep(UNet net, double s) {
        return net.config().fourier() ? s : Edm.timestep(s);
    }

    @Override
    public void denoise(Tensor x, double[] sigma, int[] classLabels, Tensor out) {
        Runnable pass = () -> {
            ws.reset();
            Tensor f = forward(Context.inference(ops, ws), x, sigma, classLabels);
            combine(ops, x, f, sigma, out);
        };
        if (!devicePasses) {
            pass.run();
        } else {
            // One device pass (a CUDA graph on the cuda backend) per noise level and labels: both are baked into its
            // launches (the labels as the class embedding's one-hot matrix).
            ops.runPass("edm sigma=" + java.util.Arrays.toString(sigma) + labelsKey(classLabels), new Tensor[] {x},
                    new Tensor[] {out}, pass);
        }
    }

    /** The part of a pass's key that names its class labels ("" without labels). */
    static String labelsKey(int[] classLabels) {
        return classLabels == null ? "" : " labels=" + java.util.Arrays.toString(classLabels);
    }

    /** F(c_in x; t(s)) in {@code c}'s workspace (kept for a later {@link #backward}). */
    public Tensor forward(Context c, Tensor x, double[] sigma, int[] classLabels) {
        int n = x.dim(0);
        Tensor xin = c.ws.allocate(x.layout(), x.shape());
        double[] t = new double[n];
        for (int i = 0; i < n; i++) {
            check(sigma[i]);
            t[i] = timestep(net, sigma[i]);
        }
        for (int i = 0, j; i < n; i = j) {
            j = runEnd(sigma, i);
            if (c.training) {
                c.ops.scale(x.slice(i, j), (float) Edm.cIn(sigma[i]), xin.slice(i, j));
            } else {
                c.ops.scaleNetworkInput(x.slice(i, j), (float) Edm.cIn(sigma[i]), xin.slice(i, j));
            }
        }
        return net.forward(c, xin, t, classLabels);
    }

    /**
     * out = c_skip(s) x + c_out(s) F, one {@link Ops#axpby} per run of samples at the same noise level: a sampler's
     * whole batch is one op (one kernel, or one graph node, instead of two per sample); training's per-sample
     * levels are one op each.
     */
    public static void combine(Ops ops, Tensor x, Tensor f, double[] sigma, Tensor out) {
        for (int i = 0, j; i < x.dim(0); i = j) {
            j = runEnd(sigma, i);
            ops.axpby((float) Edm.cSkip(sigma[i]), x.slice(i, j), (float) Edm.cOut(sigma[i]), f.slice(i, j),
                    out.slice(i, j));
        }
    }

    /** The end (exclusive) of the run of samples from {@code i} that share the noise level {@code s[i]}. */
    static int runEnd(double[] s, int i) {
        int j = i + 1;
        while (j < s.length && s[j] == s[i]) {
            j++;
        }
        return j;
    }

    /** Given dL/dD, runs the network's backward (dL/dF = c_out dL/dD) and accumulates parameter gradients. */
    public void backward(Context c, Tensor dD, double[] sigma) {
        Tensor dF = c.ws.allocate(dD.layout(), dD.shape());
        for (int i = 0; i < dD.dim(0); i++) {
            c.ops.scale(dD.slice(i, i + 1), (float) Edm.cOut(sigma[i]), dF.slice(i, i + 1));
        }
        net.backward(c, dF, false);
    }

    public UNet net() {
        return net;
    }

    private static void check(double s) {
        if (!(s > 0) || !Double.isFinite(s)) {
            throw new IllegalArgumentException("denoiser: noise level sigma must be a finite number > 0, got " + s);
        }
    }
}
