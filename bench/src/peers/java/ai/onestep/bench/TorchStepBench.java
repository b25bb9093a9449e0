package ai.onestep.bench;

import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.diffusion.ConsistencyDenoiser;
import ai.onestep.diffusion.ConsistencyParameterization;
import ai.onestep.diffusion.Edm;
import ai.onestep.diffusion.EdmDenoiser;
import ai.onestep.io.Safetensors;
import ai.onestep.model.UNetCheckpoint;
import ai.onestep.model.UNetConfig;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The peer of {@link StepBench}: the same consistency step, {@code c_skip x + c_out F(c_in x; t)} at t = T, of the same
 * committed student with the same weights, run by libtorch (NCHW, fp32, its own intra-op threads set to
 * {@code threads}) as diffusers' {@code UNet2DModel} computes it: conv2d, group_norm, silu, linear,
 * scaled_dot_product_attention, nearest 2x upsampling and cat, one ATen call each, no autograd
 * (bench/gpu/torch_peers.py's module, written against the C++ API). Setup compares one step with the cpu backend's on
 * the same input and refuses to time a peer that disagrees (relative L2 difference above 1e-4), so the ratio is of
 * the same computation.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
public class TorchStepBench {
    static {
        TorchConvBench.javacppCache();
    }

    @Param({"fmnist-student", "fmnist-student-half"})
    public String model;

    @Param({"1", "64"})
    public int batch;

    @Param({"2"})
    public int threads;

    private PointerScope scope;
    private Net net;
    private Tensor x;
    private double cIn, cSkip, cOut, t;

    @Setup(Level.Trial)
    public void setUp() {
        scope = new PointerScope();
        torch.set_num_threads(threads);
        Path path = StepBench.modelPath(model);
        double sigma = ConsistencyParameterization.T_MAX;  // the 1-step sample's only evaluation, as StepBench's
        cIn = Edm.cIn(sigma);
        cSkip = ConsistencyParameterization.cSkip(sigma);
        cOut = ConsistencyParameterization.cOut(sigma);
        try (UNetCheckpoint.Loaded loaded = UNetCheckpoint.load(path, false);
             TensorArena arena = new TensorArena(); Workspace ws = new Workspace()) {
            UNetConfig cfg = loaded.net().config();
            t = EdmDenoiser.timestep(loaded.net(), sigma);
            net = new Net(cfg, weights(path));
            int s = cfg.sampleSize(), c = cfg.inChannels();
            ai.onestep.tensor.Tensor ox = arena.allocate(Layout.NHWC, batch, s, s, c);
            ai.onestep.tensor.Tensor oy = arena.allocate(Layout.NHWC, batch, s, s, c);
            Noise.gaussian(ox, 1, 0);
            double[] ts = new double[batch];
            java.util.Arrays.fill(ts, sigma);
            new ConsistencyDenoiser(loaded.net(), new CpuOps(threads), ws).denoise(ox, ts, null, oy);
            x = fromNhwc(ox.toArray(), batch, s, s, c);
            float[] ours = oy.toArray();
            float[] theirs;
            try (PointerScope call = new PointerScope()) {
                theirs = toNhwc(consistencyStep(), batch, s, s, c);
            }
            double num = 0, den = 0;
            for (int i = 0; i < ours.length; i++) {
                num += (theirs[i] - ours[i]) * (double) (theirs[i] - ours[i]);
                den += ours[i] * (double) ours[i];
            }
            double rel = Math.sqrt(num / den);
            System.out.printf("TorchStepBench: %s batch %d: libtorch vs the cpu backend, relative L2 %.2e%n", model,
                    batch, rel);
            if (!(rel < 1e-4)) {
                throw new IllegalStateException("TorchStepBench: libtorch's step differs from the cpu backend's on "
                        + model + " (relative L2 " + rel + "): not the same network, not timed");
            }
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        scope.close();
    }

    @Benchmark
    public long step() {
        try (PointerScope call = new PointerScope()) {
            return consistencyStep().numel();
        }
    }

    /** c_skip x + c_out F(c_in x; t). */
    private Tensor consistencyStep() {
        Tensor f = net.forward(x.mul(new Scalar(cIn)), t, batch);
        return x.mul(new Scalar(cSkip)).add(f.mul(new Scalar(cOut)));
    }

    public static Work work(String method, Map<String, String> params) {
        return StepBench.work(method, params);
    }

    // ---- weights and layouts -------------------------------------------------------------------------------------

    /** Every tensor of the checkpoint but the training state, in the file's (PyTorch's) layout. */
    private static Map<String, Tensor> weights(Path path) {
        Map<String, Tensor> w = new HashMap<>();
        try (Safetensors.Reader r = Safetensors.open(path); TensorArena a = new TensorArena()) {
            for (Safetensors.Entry e : r.entries().values()) {
                if (e.name().startsWith("train/")) {
                    continue;
                }
                long[] shape = new long[e.shape().length];
                for (int i = 0; i < shape.length; i++) {
                    shape[i] = e.shape()[i];
                }
                Tensor t = torch.empty(shape);
                t.data_ptr_float().put(r.read(e.name(), a, Layout.ROWS).toArray());
                w.put(e.name(), t);
            }
        }
        return w;
    }

    private static Tensor fromNhwc(float[] v, int n, int h, int w, int c) {
        Tensor t = torch.empty(n, h, w, c);
        t.data_ptr_float().put(v);
        return t.permute(0, 3, 1, 2).contiguous();
    }

    private static float[] toNhwc(Tensor nchw, int n, int h, int w, int c) {
        float[] out = new float[n * h * w * c];
        nchw.permute(0, 2, 3, 1).contiguous().data_ptr_float().get(out);
        return out;
    }

    // ---- the network (diffusers UNet2DModel; bench/gpu/torch_peers.py's UNet2D) --------------------------------

    private static final class Net {
        private final UNetConfig cfg;
        private final Map<String, Tensor> w;
        private final long[] one = {1, 1}, two = {2, 2}, zero = {0, 0};

        Net(UNetConfig cfg, Map<String, Tensor> w) {
            if (cfg.fourier() || cfg.numClassEmbeds() != null) {
                throw new IllegalStateException("TorchStepBench: the peer implements positional time embeddings "
                        + "without class labels, as the committed students have");
            }
            this.cfg = cfg;
            this.w = w;
        }

        private Tensor p(String name) {
            Tensor t = w.get(name);
            if (t == null) {
                throw new IllegalStateException("TorchStepBench: the checkpoint has no tensor '" + name + "'");
            }
            return t;
        }

        private Tensor conv(String name, Tensor x, long[] stride) {
            return torch.conv2d(x, p(name + ".weight"), new TensorOptional(p(name + ".bias")), stride,
                    p(name + ".weight").size(2) == 3 ? one : zero, one, 1);
        }

        private Tensor norm(String name, Tensor x) {
            return torch.group_norm(x, cfg.normNumGroups(), new TensorOptional(p(name + ".weight")),
                    new TensorOptional(p(name + ".bias")), cfg.normEps(), false);
        }

        private Tensor linear(String name, Tensor x) {
            return torch.linear(x, p(name + ".weight"), new TensorOptional(p(name + ".bias")));
        }

        /** diffusers' get_timestep_embedding (positional), computed in fp32 as diffusers does. */
        private Tensor timeFeatures(double t, int n) {
            int c0 = cfg.blockOutChannels()[0], half = c0 / 2;
            float[] e = new float[n * c0];
            for (int k = 0; k < half; k++) {
                float freq = (float) Math.exp((float) (-Math.log(10000) * k) / (float) (half - cfg.freqShift()));
                float arg = (float) t * freq;
                float sin = (float) Math.sin(arg), cos = (float) Math.cos(arg);
                for (int i = 0; i < n; i++) {
                    e[i * c0 + k] = cfg.flipSinToCos() ? cos : sin;
                    e[i * c0 + half + k] = cfg.flipSinToCos() ? sin : cos;
                }
            }
            Tensor f = torch.empty(n, c0);
            f.data_ptr_float().put(e);
            return f;
        }

        private Tensor resnet(String name, Tensor x, Tensor semb, double outScale) {
            Tensor h = conv(name + ".conv1", torch.silu(norm(name + ".norm1", x)), one);
            Tensor e = linear(name + ".time_emb_proj", semb).unsqueeze(2).unsqueeze(3);
            if (cfg.resnetTimeScaleShift().equals("scale_shift")) {
                TensorVector ss = e.chunk(2, 1);
                h = norm(name + ".norm2", h).mul(ss.get(0).add(new Scalar(1.0))).add(ss.get(1));
            } else {
                h = norm(name + ".norm2", h.add(e));
            }
            h = conv(name + ".conv2", torch.silu(h), one);
            Tensor skip = w.containsKey(name + ".conv_shortcut.weight") ? conv(name + ".conv_shortcut", x, one) : x;
            Tensor y = skip.add(h);
            return outScale != 1 ? y.div(new Scalar(outScale)) : y;
        }

        private Tensor attention(String name, Tensor x, double rescale) {
            long n = x.size(0), c = x.size(1), hh = x.size(2), ww = x.size(3), tokens = hh * ww;
            Integer hd = cfg.attentionHeadDim();
            long headDim = hd == null ? c : hd, heads = c / headDim;
            Tensor h = w.containsKey(name + ".group_norm.weight") ? norm(name + ".group_norm", x) : x;
            Tensor tok = h.reshape(n, c, tokens).transpose(1, 2);
            Tensor q = linear(name + ".to_q", tok).reshape(n, tokens, heads, headDim).transpose(1, 2);
            Tensor k = linear(name + ".to_k", tok).reshape(n, tokens, heads, headDim).transpose(1, 2);
            Tensor v = linear(name + ".to_v", tok).reshape(n, tokens, heads, headDim).transpose(1, 2);
            Tensor o = torch.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, tokens, heads * headDim);
            o = linear(name + ".to_out.0", o).transpose(1, 2).reshape(n, c, hh, ww);
            Tensor y = o.add(x);
            return rescale != 1 ? y.div(new Scalar(rescale)) : y;
        }

        /** Nearest-neighbour 2x upsampling (F.interpolate(scale_factor=2, mode="nearest")): a broadcast copy. */
        private static Tensor upsample(Tensor x) {
            long n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
            return x.reshape(n, c, h, 1, w, 1).expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w);
        }

        Tensor forward(Tensor x, double t, int n) {
            Tensor emb = linear("time_embedding.linear_2",
                    torch.silu(linear("time_embedding.linear_1", timeFeatures(t, n))));
            Tensor semb = torch.silu(emb);
            Tensor h = conv("conv_in", x, one);
            Deque<Tensor> skips = new ArrayDeque<>();
            skips.push(h);
            int levels = cfg.blockOutChannels().length, layers = cfg.layersPerBlock();
            for (int i = 0; i < levels; i++) {
                boolean attn = cfg.downBlockTypes().get(i).equals("AttnDownBlock2D");
                for (int j = 0; j < layers; j++) {
                    h = resnet("down_blocks." + i + ".resnets." + j, h, semb, 1);
                    if (attn) {
                        h = attention("down_blocks." + i + ".attentions." + j, h, 1);
                    }
                    skips.push(h);
                }
                if (i < levels - 1) {
                    h = conv("down_blocks." + i + ".downsamplers.0.conv", h, two);
                    skips.push(h);
                }
            }
            double msf = cfg.midBlockScaleFactor();
            h = resnet("mid_block.resnets.0", h, semb, msf);
            if (cfg.addAttention()) {
                h = attention("mid_block.attentions.0", h, msf);
            }
            h = resnet("mid_block.resnets.1", h, semb, msf);
            for (int i = 0; i < levels; i++) {
                boolean attn = cfg.upBlockTypes().get(i).equals("AttnUpBlock2D");
                for (int j = 0; j <= layers; j++) {
                    h = resnet("up_blocks." + i + ".resnets." + j, torch.cat(new TensorVector(h, skips.pop()), 1), semb,
                            1);
                    if (attn) {
                        h = attention("up_blocks." + i + ".attentions." + j, h, 1);
                    }
                }
                if (i < levels - 1) {
                    h = conv("up_blocks." + i + ".upsamplers.0.conv", upsample(h), one);
                }
            }
            return conv("conv_out", torch.silu(norm("conv_norm_out", h)), one);
        }
    }
}
