package ai.onestep.model;

import ai.onestep.backend.Ops;
import ai.onestep.nn.Parameter;
import ai.onestep.nn.ParameterSet;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The raw network F of EDM (no preconditioning): diffusers' {@code UNet2DModel} with the same forward semantics
 * and state-dict names, on NHWC tensors, with an explicit backward pass.
 * <pre>
 *   temb  = time_embedding(time_proj(t)) [+ class_embedding(label)]        (N, 4 C0)
 *   h     = conv_in(x);             skips = [h]
 *   down  : h = down_blocks[i](h, silu(temb)); skips += their outputs
 *   mid   : h = mid_block(h, silu(temb))
 *   up    : h = up_blocks[i](h, skips popped from the end, silu(temb))
 *   y     = conv_out(silu(conv_norm_out(h)))          and, for fourier time embeddings, y / t
 * </pre>
 * One forward is in flight at a time per instance: each module keeps what its backward needs from the last
 * forward (no autograd tape).
 */
public final class UNet implements AutoCloseable {
    private final UNetConfig config;
    private final ParameterSet params;
    private final Map<String, TorchLayout> layouts;
    private final TensorArena bufferArena = new TensorArena();
    /** Non-trainable state in the state dict: the fixed random Fourier frequencies. */
    private final Map<String, Tensor> buffers = new LinkedHashMap<>();

    private final Tensor fourierWeight;
    private final Linear linear1;
    private final Linear linear2;
    private final Parameter classEmbedding;
    private final Conv2d convIn;
    private final List<DownBlock> down = new ArrayList<>();
    private final MidBlock mid;
    private final List<UpBlock> up = new ArrayList<>();
    private final GroupNorm convNormOut;
    private final Conv2d convOut;

    /**
     * Inference's host time conditioning, one per distinct list of timesteps and labels, never rewritten with other
     * values: the timestep tensor and, where the backend folds the time path ({@link Ops#passConstants}),
     * everything computed from it. A device pass (a CUDA graph) reads the values it was captured with, and one pass
     * may evaluate the network at several time points (a whole multistep sample). In a workspace they would share
     * one address and the later values would overwrite the earlier ones on the host after a device op had read
     * them. At most 64 are kept, the least recently used one freed first (a graph that read it is then captured
     * again: CudaOps checks its host data is alive).
     */
    private final java.util.LinkedHashMap<String, Conditioning> conditionings = new java.util.LinkedHashMap<>(16,
            0.75f, true) {
        @Override
        protected boolean removeEldestEntry(java.util.Map.Entry<String, Conditioning> eldest) {
            if (size() > 64) {
                eldest.getValue().close();
                return true;
            }
            return false;
        }
    };

    /** The timesteps (in {@code arena}) and the memory of the folded time path computed from them ({@code folded}). */
    private record Conditioning(TensorArena arena, Tensor t, Workspace folded) implements AutoCloseable {
        @Override
        public void close() {
            arena.close();
            folded.close();
        }
    }

    private Conditioning inferenceConditioning(double[] timesteps, int[] classLabels) {
        String key = java.util.Arrays.toString(timesteps) + " " + java.util.Arrays.toString(classLabels);
        Conditioning h = conditionings.get(key);
        if (h == null) {
            TensorArena a = new TensorArena();
            Tensor t = a.allocate(Layout.ROWS, timesteps.length);
            for (int i = 0; i < timesteps.length; i++) {
                t.set(i, (float) timesteps[i]);
            }
            h = new Conditioning(a, t, new Workspace(64 << 10));
            conditionings.put(key, h);
        }
        return h;
    }

    /** What the time path reads: the time embedding's weights, the class embedding and every time_emb_proj. */
    private final List<Tensor> timeWeights = new ArrayList<>();
    /** Every resnet block, in forward order. */
    private final List<ResnetBlock2D> resnets = new ArrayList<>();
    /** Every attention block (each may keep its packed projection). */
    private final List<AttentionBlock> attentions = new ArrayList<>();

    // Saved by forward for backward.
    private Tensor tIn, h1, emb, tembAct, yRaw;
    /** One-hot class labels (N, classes) of the last forward, for the class embedding's backward. */
    private Tensor oneHot;
    private double[] timesteps;
    private final List<Integer> upLast = new ArrayList<>();
    /** The outputs of every down block, the mid block and every up block, in that order (see {@link #taps}). */
    private final List<Tensor> taps = new ArrayList<>();

    /** Builds the network with zeroed parameters (load a checkpoint or call {@link Init}); {@code withGradients} for training. */
    public UNet(UNetConfig cfg, boolean withGradients) {
        this.config = cfg;
        this.params = withGradients ? new ParameterSet() : ParameterSet.withoutGradients();
        ParamBuilder pb = new ParamBuilder(params);
        int c0 = cfg.blockOutChannels()[0];
        int tembDim = cfg.timeEmbedDim();
        if (cfg.fourier()) {
            fourierWeight = bufferArena.allocate(Layout.ROWS, c0);
            buffers.put("time_proj.weight", fourierWeight);
        } else {
            fourierWeight = null;
        }
        int tInDim = cfg.fourier() ? 2 * c0 : c0;
        linear1 = new Linear(pb, "time_embedding.linear_1", tInDim, tembDim);
        linear2 = new Linear(pb, "time_embedding.linear_2", tembDim, tembDim);
        classEmbedding = cfg.numClassEmbeds() != null ? pb.plain("class_embedding.weight", cfg.numClassEmbeds(), tembDim) : null;
        convIn = new Conv2d(pb, "conv_in", cfg.inChannels(), c0, 3, 1, 1);
        int[] ch = cfg.blockOutChannels();
        int levels = ch.length;
        long[] ids = {0};
        int out = c0;
        for (int i = 0; i < levels; i++) {
            int in = out;
            out = ch[i];
            down.add(new DownBlock(pb, "down_blocks." + i, cfg, in, out, cfg.downBlockTypes().get(i).startsWith("Attn"),
                    i < levels - 1, ids));
        }
        mid = new MidBlock(pb, cfg, ch[levels - 1], ids);
        out = ch[levels - 1];
        for (int i = 0; i < levels; i++) {
            int prev = out;
            out = ch[levels - 1 - i];
            int in = ch[Math.max(0, levels - 2 - i)];
            up.add(new UpBlock(pb, "up_blocks." + i, cfg, in, prev, out, cfg.upBlockTypes().get(i).startsWith("Attn"),
                    i < levels - 1, ids));
        }
        convNormOut = new GroupNorm(pb, "conv_norm_out", c0, cfg.normNumGroups(), (float) cfg.normEps(), true);
        convOut = new Conv2d(pb, "conv_out", c0, cfg.outChannels(), 3, 1, 1);
        this.layouts = Collections.unmodifiableMap(pb.layouts);
        down.forEach(b -> resnets.addAll(b.resnets));
        resnets.add(mid.resnet0);
        resnets.add(mid.resnet1);
        up.forEach(b -> resnets.addAll(b.resnets));
        down.forEach(b -> attentions.addAll(b.attentions));
        if (mid.attention != null) {
            attentions.add(mid.attention);
        }
        up.forEach(b -> attentions.addAll(b.attentions));
        for (Linear l : List.of(linear1, linear2)) {
            timeWeights.add(l.weight.value());
            timeWeights.add(l.bias.value());
        }
        for (ResnetBlock2D r : resnets) {
            timeWeights.add(r.timeEmbProj.weight.value());
            timeWeights.add(r.timeEmbProj.bias.value());
        }
        if (classEmbedding != null) {
            timeWeights.add(classEmbedding.value());
        }
        if (fourierWeight != null) {
            timeWeights.add(fourierWeight);
        }
    }

    public UNetConfig config() {
        return config;
    }

    public ParameterSet parameters() {
        return params;
    }

    /** Each trainable parameter's PyTorch layout, by state-dict name. */
    public Map<String, TorchLayout> torchLayouts() {
        return layouts;
    }

    /** Non-trainable tensors of the state dict (by name). */
    public Map<String, Tensor> buffers() {
        return Collections.unmodifiableMap(buffers);
    }

    /**
     * Every tensor the network reads but never writes while sampling: the parameters' values and the buffers. What
     * a sampler registers as constants with its backend ({@code Ops.registerParameters}).
     */
    public List<Tensor> weightTensors() {
        List<Tensor> all = new ArrayList<>();
        parameters().forEach(p -> all.add(p.value()));
        all.addAll(buffers().values());
        return all;
    }

    /**
     * y = F(x; t, label): x (N, H, W, in_channels) NHWC, one timestep per sample, labels (N) or null.
     * The result lives in {@code c}'s workspace.
     */
    public Tensor forward(Context c, Tensor x, double[] timesteps, int[] classLabels) {
        int n = x.dim(0);
        checkInput(x, timesteps, classLabels);
        this.timesteps = timesteps.clone();
        int c0 = config.blockOutChannels()[0];
        // The time path: everything below up to the blocks' time_emb_proj depends on the timesteps and labels
        // alone. Inference runs it in tc, which a backend that folds it (Ops#passConstants: the cuda backend inside
        // a captured pass) points at host ops and memory kept per timesteps and labels; the pass then reads the
        // results as constants and its graph launches none of it.
        Tensor t;
        Context tc = c;
        if (c.training) {
            t = c.alloc(Layout.ROWS, n);
            for (int i = 0; i < n; i++) {
                t.set(i, (float) timesteps[i]);
            }
        } else {
            Conditioning cond = inferenceConditioning(timesteps, classLabels);
            t = cond.t();
            Ops k = c.ops.passConstants(timeWeights);
            if (k != c.ops) {
                cond.folded().reset();
                tc = Context.inference(k, cond.folded());
            }
        }
        if (config.fourier()) {
            tIn = tc.alloc(Layout.ROWS, n, 2 * c0);
            // UNet2DModel builds GaussianFourierProjection(embedding_size=C0, scale=16) with log=True and
            // flip_sin_to_cos=False.
            tc.ops.fourierEmbedding(t, fourierWeight, true, false, tIn);
        } else {
            tIn = tc.alloc(Layout.ROWS, n, c0);
            tc.ops.sinusoidalEmbedding(t, config.flipSinToCos(), (float) config.freqShift(), 1f, 10000f, tIn);
        }
        h1 = linear1.forward(tc, tIn);
        Tensor a1 = tc.like(h1);
        tc.ops.silu(h1, a1);
        emb = linear2.forward(tc, a1);
        if (classEmbedding != null) {
            // emb += onehot(labels) W, the embedding lookup as a GEMM with beta = 1: each output is emb + W[label]
            // rounded once, as a host loop would add them, but through the backend, so a device keeps emb where
            // it is (a host loop would read and write a stale host copy inside a device pass or resident block).
            oneHot = tc.ws.allocateZeroed(Layout.ROWS, n, classEmbedding.value().dim(0));
            for (int i = 0; i < n; i++) {
                oneHot.set((long) i * oneHot.dim(1) + classLabels[i], 1f);
            }
            tc.ops.matmul(oneHot, false, classEmbedding.value(), false, emb, 1f, 1f);
        }
        tembAct = tc.like(emb);
        tc.ops.silu(emb, tembAct);
        for (ResnetBlock2D r : resnets) {
            r.condition(tc, tembAct);
        }

        // Where residual adds fuse into the next ops (Ops#fusesResidual), conv_in and the downsamplers apply their
        // biases themselves: their outputs are the next resnet block's residual, which a pending bias would keep
        // from fusing.
        Tensor h = convIn.forward(c, x, !c.training && c.ops.fusesResidual());
        List<Tensor> skips = new ArrayList<>();
        skips.add(h);
        taps.clear();
        for (DownBlock b : down) {
            h = b.forward(c, h, skips);
            taps.add(h);
        }
        h = mid.forward(c, h);
        taps.add(h);
        upLast.clear();
        for (UpBlock b : up) {
            upLast.add(skips.size() - 1);
            h = b.forward(c, h, skips);
            taps.add(h);
        }
        // At inference where the backend fuses a norm into the convolution it feeds (Ops.fusesNormConv), one op.
        Tensor y = !c.training && c.ops.fusesNormConv()
                ? convNormOut.forwardConv(c, h, null, convOut, convOut.bias.value(), null)
                : convOut.forward(c, convNormOut.forward(c, h));
        if (config.fourier()) {
            // diffusers divides the output by the timesteps for Fourier embeddings (score-SDE's NCSN++ convention).
            yRaw = y;
            Tensor scaled = c.like(y);
            int per = (int) (y.size() / n);
            for (int i = 0; i < n; i++) {
                c.ops.scale(y.slice(i, i + 1), (float) (1 / timesteps[i]), scaled.slice(i, i + 1));
            }
            y = scaled;
            assert per > 0;
        }
        return y;
    }

    /** Backward of the last {@link #forward}: returns dL/dx and accumulates every parameter's gradient. */
    public Tensor backward(Context c, Tensor dy) {
        return backward(c, dy, true);
    }

    /** As {@link #backward(Context, Tensor)}; training passes {@code needDx = false} and skips the input gradient. */
    public Tensor backward(Context c, Tensor dy, boolean needDx) {
        return backward(c, dy, needDx, null);
    }

    /**
     * The intermediate activations of the last forward, for feature distillation: the output of each down block,
     * of the mid block and of each up block, in that order, named by {@link #tapNames()}. They live in the
     * forward's workspace, so they are valid until it is reset.
     */
    public List<Tensor> taps() {
        return Collections.unmodifiableList(taps);
    }

    /** The names of {@link #taps()}: {@code down_blocks.i}, {@code mid_block}, {@code up_blocks.i}. */
    public List<String> tapNames() {
        List<String> names = new ArrayList<>();
        for (int i = 0; i < down.size(); i++) {
            names.add("down_blocks." + i);
        }
        names.add("mid_block");
        for (int i = 0; i < up.size(); i++) {
            names.add("up_blocks." + i);
        }
        return names;
    }

    /**
     * As {@link #backward(Context, Tensor, boolean)}, with extra loss gradients on the {@link #taps()} of the last
     * forward ({@code dTaps} parallel to them; null entries, or a null list, add nothing). Each is added to the
     * gradient that reaches that block's output from above before the block's own backward runs: a tap is one more
     * consumer of the activation, so its gradient sums with the others (the convention of nn/: input gradients
     * from several consumers add).
     */
    public Tensor backward(Context c, Tensor dy, boolean needDx, List<Tensor> dTaps) {
        int n = dy.dim(0);
        if (dTaps != null && dTaps.size() != taps.size()) {
            throw new IllegalArgumentException("unet: " + dTaps.size() + " tap gradients for " + taps.size() + " taps "
                    + tapNames());
        }
        if (params.list().get(0).grad() == null) {
            throw new IllegalStateException("unet: this instance was built without gradients (inference only)");
        }
        Tensor g = dy;
        if (config.fourier()) {
            g = c.like(dy);
            for (int i = 0; i < n; i++) {
                c.ops.scale(dy.slice(i, i + 1), (float) (1 / timesteps[i]), g.slice(i, i + 1));
            }
        }
        Tensor dTembAct = c.ws.allocateZeroed(Layout.ROWS, tembAct.shape());
        g = convNormOut.backward(c, convOut.backward(c, g));
        int totalSkips = 1;
        for (DownBlock b : down) {
            totalSkips += b.skips();
        }
        Tensor[] dSkips = new Tensor[totalSkips];
        int midTap = down.size();
        for (int i = up.size() - 1; i >= 0; i--) {
            g = addTap(c, g, dTaps, midTap + 1 + i);
            g = up.get(i).backward(c, g, dSkips, upLast.get(i), dTembAct);
        }
        g = addTap(c, g, dTaps, midTap);
        g = mid.backward(c, g, dTembAct);
        int first = totalSkips;
        for (int i = down.size() - 1; i >= 0; i--) {
            first -= down.get(i).skips();
            g = addTap(c, g, dTaps, i);
            g = down.get(i).backward(c, g, dSkips, first, dTembAct);
        }
        g = DownBlock.merge(c, g, dSkips[0]);
        Tensor dx = convIn.backward(c, g, needDx);

        Tensor dEmb = c.like(emb);
        c.ops.siluBackward(emb, dTembAct, dEmb);
        if (classEmbedding != null) {
            // dW += onehot^T dEmb: each class's rows of dEmb summed into its row (accumulated, as parameter grads are).
            c.ops.matmul(oneHot, true, dEmb, false, classEmbedding.grad(), 1f, 1f);
        }
        Tensor dA1 = linear2.backward(c, dEmb);
        Tensor dH1 = c.like(h1);
        c.ops.siluBackward(h1, dA1, dH1);
        linear1.backward(c, dH1);
        return dx;
    }

    /** g + dTaps[i] in a new tensor (g may be a module's saved state), or g itself when there is no tap gradient. */
    private Tensor addTap(Context c, Tensor g, List<Tensor> dTaps, int i) {
        Tensor d = dTaps == null ? null : dTaps.get(i);
        if (d == null) {
            return g;
        }
        if (!java.util.Arrays.equals(d.shape(), g.shape())) {
            throw new IllegalArgumentException("unet: the gradient of tap " + tapNames().get(i) + " is " + d.describe()
                    + " but the activation is " + java.util.Arrays.toString(g.shape()));
        }
        Tensor sum = c.like(g);
        c.ops.add(g, d, sum);
        return sum;
    }

    private void checkInput(Tensor x, double[] timesteps, int[] classLabels) {
        int n = x.dim(0);
        if (x.rank() != 4 || x.dim(3) != config.inChannels()) {
            throw new IllegalArgumentException("unet: input " + x.describe() + " must be (N, H, W, " + config.inChannels()
                    + ") NHWC");
        }
        int div = 1 << (config.blockOutChannels().length - 1);
        if (x.dim(1) % div != 0 || x.dim(2) % div != 0) {
            throw new IllegalArgumentException("unet: input " + x.describe() + " height and width must be divisible by "
                    + div + " (one halving per down block but the last)");
        }
        if (timesteps.length != n) {
            throw new IllegalArgumentException("unet: " + timesteps.length + " timesteps for a batch of " + n);
        }
        if (config.fourier()) {
            for (double t : timesteps) {
                if (!(t > 0)) {
                    throw new IllegalArgumentException("unet: Fourier time embeddings take log(t): timestep " + t
                            + " must be > 0");
                }
            }
        }
        if (classEmbedding == null && classLabels != null) {
            throw new IllegalArgumentException("unet: class labels given but the model has no class embedding"
                    + " (num_class_embeds is null)");
        }
        if (classEmbedding != null) {
            if (classLabels == null || classLabels.length != n) {
                throw new IllegalArgumentException("unet: the model is class-conditional (num_class_embeds = "
                        + config.numClassEmbeds() + "): give one class label per sample");
            }
            for (int l : classLabels) {
                if (l < 0 || l >= config.numClassEmbeds()) {
                    throw new IllegalArgumentException("unet: class label " + l + " is outside [0, "
                            + config.numClassEmbeds() + ")");
                }
            }
        }
    }

    /** FLOPs of one forward pass for a batch of n at h x w (convolutions, linears and attention; a multiply-add counts 2). */
    public long flops(int n, int h, int w) {
        long f = convIn.flops(n, h, w) + convOut.flops(n, h, w) + linear1.flops(n) + linear2.flops(n);
        int hh = h, ww = w;
        for (DownBlock b : down) {
            f += b.flops(n, hh, ww);
            if (b.downsampler != null) {
                hh /= 2;
                ww /= 2;
            }
        }
        f += mid.flops(n, hh, ww);
        for (UpBlock b : up) {
            f += b.flops(n, hh, ww);
            if (b.upsampler != null) {
                hh *= 2;
                ww *= 2;
            }
        }
        return f;
    }

    @Override
    public void close() {
        params.close();
        bufferArena.close();
        conditionings.values().forEach(Conditioning::close);
        conditionings.clear();
        attentions.forEach(AttentionBlock::close);
        resnets.forEach(ResnetBlock2D::close);
    }
}
