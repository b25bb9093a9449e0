package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.OpsTesting;
import ai.onestep.diffusion.ConsistencyDenoiser;
import ai.onestep.diffusion.EdmDenoiser;
import ai.onestep.model.Context;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetConfig;
import ai.onestep.nn.AdamSettings;
import ai.onestep.nn.AdamW;
import ai.onestep.nn.Parameter;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Whole-network runs on the emulated CUDA backend: one U-Net forward's launch sequence against the CPU backend,
 * and the denoisers' passes captured as graphs (replay bit-identical to the uncaptured run, inputs re-read on
 * every replay, a new capture for a new shape or time point, op-by-op fallback when a pass cannot be captured).
 */
class CudaGraphTest {
    private CudaOps ops;

    @BeforeEach
    void needsBackend() {
        ops = EmulatedDeviceTest.require();
        // These tests hold captured passes to the eager ops' bits. Folding computes the time path on the host, a
        // rounding apart from the device's (ConstantFoldingTest checks it).
        folding = ops.foldsConstants();
        ops.foldConstants(false);
    }

    private boolean folding;

    @org.junit.jupiter.api.AfterEach
    void restoreFolding() {
        if (ops != null) {
            ops.foldConstants(folding);  // the backend is shared with the other test classes
        }
    }

    /**
     * A small U-Net whose attention (32 channels) has heads of {@code headDim}: 32 uses the fused kernel as is, a
     * smaller one pads each head to 32.
     */
    static UNetConfig config(long headDim) {
        return config(headDim, 32, "positional");
    }

    /** The same with {@code attnChannels} channels in the attention level and a time embedding of {@code time}. */
    static UNetConfig config(long headDim, long attnChannels, String time) {
        return UNetConfig.fromMap(configMap(headDim, attnChannels, time));
    }

    static Map<String, Object> configMap(long headDim) {
        return configMap(headDim, 32, "positional");
    }

    static Map<String, Object> configMap(long headDim, long attnChannels, String time) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("sample_size", 8L);
        m.put("in_channels", 2L);
        m.put("out_channels", 2L);
        m.put("time_embedding_type", time);
        m.put("down_block_types", List.of("DownBlock2D", "AttnDownBlock2D"));
        m.put("up_block_types", List.of("AttnUpBlock2D", "UpBlock2D"));
        m.put("block_out_channels", List.of(32L, attnChannels));
        m.put("layers_per_block", 1L);
        m.put("attention_head_dim", headDim);
        m.put("norm_num_groups", 8L);
        m.put("resnet_time_scale_shift", "scale_shift");
        return m;
    }

    static UNet randomNet(UNetConfig cfg, long seed) {
        UNet net = new UNet(cfg, false);
        SplittableRandom r = new SplittableRandom(seed);
        for (Parameter p : net.parameters()) {
            boolean gain = p.name().contains("norm") && p.name().endsWith("weight");
            for (long i = 0; i < p.value().size(); i++) {
                p.value().set(i, (float) ((r.nextDouble() * 2 - 1) * 0.3 + (gain ? 1 : 0)));
            }
        }
        return net;
    }

    private static Tensor noise(TensorArena a, int n, long seed) {
        Tensor x = a.allocate(Layout.NHWC, n, 8, 8, 2);
        Noise.gaussian(x, seed, 0);
        return x;
    }

    @Test
    void unetForwardMatchesTheCpuBackend() {
        try (UNet net = randomNet(config(32), 1); TensorArena a = new TensorArena(); Workspace w1 = new Workspace();
             Workspace w2 = new Workspace()) {
            Tensor x = noise(a, 2, 3);
            double[] t = {10, 900};
            long before = ops.deviceOps();
            Tensor yc = net.forward(Context.inference(ops, w1), x, t, null);
            long launched = ops.deviceOps() - before;
            Tensor yr = net.forward(Context.inference(OpsTesting.CPU, w2), x, t, null);
            OpsTesting.assertClose("unet forward cuda-emulated vs cpu", yc, yr, 1e-4);
            assertTrue(launched > 20, "the forward ran " + launched + " device ops");
        }
    }

    @Test
    void unetTrainingStepRunsOnTheDeviceAndMatchesTheCpuBackend() {
        // Forward, backward through every layer kind (conv 3x3/1x1/stride 2, linear, group norm with scale/shift and
        // SiLU, attention with heads of 32, upsampling, concatenation) and an AdamW step: no op falls back to the
        // host, and the input gradient, the parameter gradients and the updated weights agree with the CPU backend.
        UNetConfig cfg = config(32);
        try (UNet src = randomNet(cfg, 5); UNet dev = new UNet(cfg, true); UNet cpu = new UNet(cfg, true);
             TensorArena a = new TensorArena(); Workspace w1 = new Workspace(); Workspace w2 = new Workspace();
             AdamW optDev = new AdamW(ops, dev.parameters(), AdamSettings.adam(0.01f));
             AdamW optCpu = new AdamW(OpsTesting.CPU, cpu.parameters(), AdamSettings.adam(0.01f))) {
            dev.parameters().copyValuesFrom(src.parameters());
            cpu.parameters().copyValuesFrom(src.parameters());
            Tensor x = noise(a, 2, 11), dy = noise(a, 2, 12);
            double[] t = {3, 700};
            long host = ops.hostOps(), device = ops.deviceOps();
            Context cd = new Context(ops, w1, true, 1);
            dev.forward(cd, x, t, null);
            Tensor dxDev = dev.backward(cd, dy, true);
            assertEquals(host, ops.hostOps(), "an op of the forward or backward ran on the host");
            assertTrue(ops.deviceOps() - device > 60, "device ops " + (ops.deviceOps() - device));
            Context cc = new Context(OpsTesting.CPU, w2, true, 1);
            cpu.forward(cc, x, t, null);
            Tensor dxCpu = cpu.backward(cc, dy, true);
            // 1e-3: a fp32 backward through some 30 layers of random weights, summed in other orders than the CPU's
            // blocked kernels (measured 1.05e-4 on dx); a wrong index or a missing term gives errors of order 1.
            OpsTesting.assertClose("dx", dxDev, dxCpu, 1e-3);
            // Each gradient relative to its norm, with a floor of 1e-6 of the whole gradient's norm: the key bias's
            // gradient is exactly 0 (softmax ignores a shift shared by all keys), so both backends hold rounding
            // noise there.
            double total = 0;
            for (Parameter p : cpu.parameters()) {
                total += OpsTesting.CPU.sumOfSquares(p.grad());
            }
            for (Parameter p : dev.parameters()) {
                float[] got = p.grad().toArray(), want = cpu.parameters().get(p.name()).grad().toArray();
                double err = 0, ref = 0;
                for (int i = 0; i < got.length; i++) {
                    err += (got[i] - (double) want[i]) * (got[i] - (double) want[i]);
                    ref += (double) want[i] * want[i];
                }
                assertTrue(Math.sqrt(err) <= 1e-3 * Math.sqrt(ref) + 1e-6 * Math.sqrt(total), "gradient of "
                        + p.name() + ": error " + Math.sqrt(err) + ", norm " + Math.sqrt(ref));
            }
            // The AdamW step from the same gradients (Adam's first step is about lr sign(g), so it would turn the
            // rounding noise of the zero key-bias gradient into differences of 2 lr).
            for (Parameter p : dev.parameters()) {
                p.grad().copyFrom(cpu.parameters().get(p.name()).grad());
            }
            // Global-norm clipping (sumOfSquares, scale) and a loss on the device as well.
            double norm = ai.onestep.nn.GradientClipping.clipByGlobalNorm(dev.parameters(), 1e-3, ops);
            double normCpu = ai.onestep.nn.GradientClipping.clipByGlobalNorm(cpu.parameters(), 1e-3, OpsTesting.CPU);
            assertEquals(normCpu, norm, 1e-9 * normCpu, "gradient norm");
            Tensor dl = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            double loss = ops.pseudoHuberLoss(dxDev, dxCpu, null, 0.01f, dl);
            assertTrue(Double.isFinite(loss) && loss >= 0, "loss " + loss);
            optDev.step(1e-3f);
            optCpu.step(1e-3f);
            assertEquals(host, ops.hostOps(), "the loss, the clipping or the AdamW step ran on the host");
            for (Parameter p : dev.parameters()) {
                OpsTesting.assertClose("updated " + p.name(), p.value(), cpu.parameters().get(p.name()).value(), 1e-6);
            }
        }
    }

    /** The consistency denoiser without a pass: the same ops, each one eager. */
    private void eagerConsistency(UNet net, Workspace ws, Tensor x, double[] t, Tensor out) {
        ws.reset();
        Tensor f = new EdmDenoiser(net, ops, ws).forward(Context.inference(ops, ws), x, t, null);
        ConsistencyDenoiser.combine(ops, x, f, t, out);
    }

    @Test
    void programmaticDependentLaunchIsOffByDefaultAndReplaysTheSameBits() {
        // Device#programmaticLaunch: the library's one flag. The emulated library takes it (its kernels are checked
        // to await their predecessors whether it is on or not); the pass captured with it on replays the bits of
        // the one captured without it. On a GPU, DeviceCheck and test_layers check the same with real overlap.
        assertFalse(Device.programmaticLaunch(), "off by default");
        capturedWithAndWithout(on -> {
            Device.programmaticLaunch(on);
            assertEquals(on, Device.programmaticLaunch());
        }, "programmatic launch");
        assertFalse(Device.programmaticLaunch());
    }

    @Test
    void weightPrefetchIsOnByDefaultAndOffGivesTheSameBits() {
        // Device#weightPrefetch: the library's flag (its kernels take it as an argument at launch; test_resnet,
        // test_conv and test_attention count the emulated prefetches). A hint: the pass captured with it off replays
        // the bits of the one captured with it on.
        assertTrue(Device.weightPrefetch(), "on by default");
        capturedWithAndWithout(off -> {
            Device.weightPrefetch(!off);
            assertEquals(!off, Device.weightPrefetch());
        }, "the weight prefetch off");
        assertTrue(Device.weightPrefetch());
    }

    /**
     * A consistency pass captured and replayed as the process runs it, then again with {@code flip.accept(true)} (a
     * library switch turned from its default), which must give the same bits; {@code flip.accept(false)} restores
     * the default.
     */
    private void capturedWithAndWithout(java.util.function.Consumer<Boolean> flip, String what) {
        try (UNet net = randomNet(config(32), 3); TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
            double[] t = {1.5, 1.5};
            Tensor x = noise(a, 2, 8);
            Tensor plain = a.allocate(Layout.NHWC, 2, 8, 8, 2), flipped = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            ops.forgetCapturedPasses();
            for (int i = 0; i < 3; i++) {
                f.denoise(x, t, null, plain);
            }
            try {
                flip.accept(true);
                ops.forgetCapturedPasses();
                for (int i = 0; i < 3; i++) {
                    f.denoise(x, t, null, flipped);
                }
                assertEquals(1, ops.capturedPasses().size(), "captured with " + what);
            } finally {
                flip.accept(false);
                ops.forgetCapturedPasses();
            }
            assertArrayEquals(plain.toArray(), flipped.toArray(), "replay with " + what + " vs without");
        }
    }

    @Test
    void capturedPassReplaysBitForBitAndRecapturesOnANewShapeOrTimePoint() {
        try (UNet net = randomNet(config(32), 2); TensorArena a = new TensorArena(); Workspace ws = new Workspace();
             Workspace wsCpu = new Workspace()) {
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
            double[] t = {2.5, 2.5};
            Tensor x = noise(a, 2, 5);
            Tensor eager = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Tensor first = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Tensor replay = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            eagerConsistency(net, ws, x, t, eager);

            int graphs = ops.capturedPasses().size();
            f.denoise(x, t, null, first);  // first use: on the device, not captured
            assertEquals(graphs, ops.capturedPasses().size(), "a key seen once is not captured");
            Tensor captured = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            f.denoise(x, t, null, captured);  // second use: warm-up in exact arenas, then capture
            assertEquals(graphs + 1, ops.capturedPasses().size());
            long opsBefore = ops.deviceOps();
            f.denoise(x, t, null, replay);  // replay: no op is issued from Java
            assertEquals(opsBefore, ops.deviceOps(), "a replay issues no op from Java");
            assertArrayEquals(eager.toArray(), first.toArray(), "pass vs eager");
            assertArrayEquals(first.toArray(), captured.toArray(), "warm-up vs first run");
            assertArrayEquals(first.toArray(), replay.toArray(), "replay vs first run");

            Tensor cpu = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            new ConsistencyDenoiser(net, OpsTesting.CPU, wsCpu).denoise(x, t, null, cpu);
            OpsTesting.assertClose("consistency denoiser cuda-emulated graph vs cpu", replay, cpu, 1e-4);

            // New noise in a new tensor: the replay reads the input again.
            Tensor x2 = noise(a, 2, 6);
            Tensor eager2 = a.allocate(Layout.NHWC, 2, 8, 8, 2), replay2 = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            f.denoise(x2, t, null, replay2);
            eagerConsistency(net, ws, x2, t, eager2);
            assertArrayEquals(eager2.toArray(), replay2.toArray(), "replay on new input vs eager");
            assertFalse(java.util.Arrays.equals(replay.toArray(), replay2.toArray()));
            assertEquals(graphs + 1, ops.capturedPasses().size(), "same key and shapes: no new capture");

            String key = "consistency t=[2.5, 2.5] ([2, 8, 8, 2]) -> ([2, 8, 8, 2])";
            long[] stats = ops.capturedPasses().get(key);
            assertTrue(stats != null, "captured keys: " + ops.capturedPasses().keySet());
            assertTrue(stats[1] > 20 && stats[0] >= stats[1], "graph nodes " + stats[0] + ", ops " + stats[1]);

            // A new batch size and a new time point each get a graph of their own (on their second use).
            Tensor x1 = noise(a, 1, 7), y1 = a.allocate(Layout.NHWC, 1, 8, 8, 2);
            for (int i = 0; i < 3; i++) {
                f.denoise(x1, new double[] {2.5}, null, y1);
                f.denoise(x, new double[] {0.8, 0.8}, null, replay);
            }
            assertEquals(graphs + 3, ops.capturedPasses().size());
            Tensor e1 = a.allocate(Layout.NHWC, 1, 8, 8, 2);
            eagerConsistency(net, ws, x1, new double[] {2.5}, e1);
            assertArrayEquals(e1.toArray(), y1.toArray(), "batch-1 graph vs eager");

            // A parameter update through the backend drops every graph (they hold the old weights).
            try (TensorArena p = new TensorArena()) {
                Tensor target = p.allocate(3), source = p.allocate(3);
                ops.ema(target, source, 0.5f);
            }
            assertEquals(0, ops.capturedPasses().size());
        }
    }

    @Test
    void registeredParametersAreSharedAndRefreshedInPlaceUnderGraphs() {
        try (UNet net = randomNet(config(32), 5); TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
            List<Tensor> params = new java.util.ArrayList<>();
            net.parameters().forEach(p -> params.add(p.value()));
            ops.registerParameters(params);
            long[] reg = ops.registeredParameters();
            assertTrue(reg[0] >= params.size() && reg[1] > 0, java.util.Arrays.toString(reg));
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
            double[] t = {3.5};
            Tensor x = noise(a, 1, 11), y = a.allocate(Layout.NHWC, 1, 8, 8, 2), e = a.allocate(Layout.NHWC, 1, 8, 8, 2);
            for (int i = 0; i < 3; i++) {
                f.denoise(x, t, null, y);  // run, capture, replay
            }
            int graphs = ops.capturedPasses().size();
            // An EMA update of a registered parameter (through the backend) refreshes its one device copy: the
            // graph stays and its replay sees the new weights.
            Tensor w = net.parameters().list().get(0).value();
            try (TensorArena s = new TensorArena()) {
                Tensor src = s.allocate(w.shape());
                src.fill(0.5f);
                ops.ema(w, src, 0.25f);
            }
            assertEquals(graphs, ops.capturedPasses().size(), "a registered parameter's update keeps the graphs");
            f.denoise(x, t, null, y);
            eagerConsistency(net, ws, x, t, e);
            assertArrayEquals(e.toArray(), y.toArray(), "replay after the update vs eager with the new weights");
        }
    }

    @Test
    void aClosedModelsGraphIsNeverReplayedForTheNextOne() {
        // Graphs and registered parameters are found by host address; once a model is closed, a new model may sit
        // at the same addresses and must get its own results.
        double[] t = {4.5};
        try (TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
            Tensor x = noise(a, 1, 12), y = a.allocate(Layout.NHWC, 1, 8, 8, 2), e = a.allocate(Layout.NHWC, 1, 8, 8, 2);
            for (long seed : new long[] {6, 7}) {
                try (UNet net = randomNet(config(32), seed)) {
                    List<Tensor> params = new java.util.ArrayList<>();
                    net.parameters().forEach(p -> params.add(p.value()));
                    ops.registerParameters(params);
                    ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
                    for (int i = 0; i < 3; i++) {
                        f.denoise(x, t, null, y);
                    }
                    eagerConsistency(net, ws, x, t, e);
                    assertArrayEquals(e.toArray(), y.toArray(), "model " + seed + ": replay vs eager");
                }
            }
        }
    }

    @Test
    void labelledPassesAreCapturedPerLabelSet() {
        // The class embedding is a one-hot GEMM through the backend, so a class-conditional denoiser's pass stays on
        // the device; its graph bakes in the labels, so the key carries them and other labels get another graph.
        Map<String, Object> m = new LinkedHashMap<>(configMap(32));
        m.put("num_class_embeds", 3L);
        UNetConfig cfg = UNetConfig.fromMap(m);
        try (UNet net = randomNet(cfg, 21); TensorArena a = new TensorArena(); Workspace ws = new Workspace();
             Workspace wc = new Workspace()) {
            ConsistencyDenoiser dev = new ConsistencyDenoiser(net, ops, ws, true);
            ConsistencyDenoiser cpu = new ConsistencyDenoiser(net, OpsTesting.CPU, wc);
            Tensor x = noise(a, 2, 17);
            double[] t = {0.7, 0.7};
            long hostBefore = ops.hostOps();
            float[][] first = new float[2][];
            int[][] labelSets = {{0, 2}, {1, 1}};
            for (int k = 0; k < 2; k++) {
                Tensor want = a.allocate(Layout.NHWC, 2, 8, 8, 2);
                cpu.denoise(x, t, labelSets[k], want);
                for (int call = 0; call < 3; call++) {  // measured, captured, replayed
                    Tensor y = a.allocate(Layout.NHWC, 2, 8, 8, 2);
                    dev.denoise(x, t, labelSets[k], y);
                    OpsTesting.assertClose("labels " + java.util.Arrays.toString(labelSets[k]) + " call " + call, y,
                            want, 1e-4);
                    if (call == 0) {
                        first[k] = y.toArray();
                    } else {
                        assertArrayEquals(first[k], y.toArray(), "replay of labels " + k + " call " + call);
                    }
                }
            }
            assertFalse(java.util.Arrays.equals(first[0], first[1]), "other labels, another output");
            assertEquals(hostBefore, ops.hostOps(), "no op ran on the host");
            assertTrue(ops.capturedPasses().keySet().stream().anyMatch(key -> key.contains("labels=[0, 2]"))
                    && ops.capturedPasses().keySet().stream().anyMatch(key -> key.contains("labels=[1, 1]")),
                    "a graph per label set: " + ops.capturedPasses().keySet());
        }
    }

    @Test
    void denoisersRunOpByOpUnlessAskedForDevicePasses() {
        // Training may read the network's intermediate tensors after a denoiser call, so only samplers (api.Sampler)
        // ask for device passes; a plain denoiser runs op by op and keeps every tensor current on the host.
        try (UNet net = randomNet(config(32), 8); TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
            EdmDenoiser d = new EdmDenoiser(net, ops, ws);
            Tensor x = noise(a, 1, 13), y = a.allocate(Layout.NHWC, 1, 8, 8, 2);
            int graphs = ops.capturedPasses().size();
            long[] issued = new long[3];
            for (int i = 0; i < 3; i++) {
                long before = ops.deviceOps();
                d.denoise(x, new double[] {0.9}, null, y);
                issued[i] = ops.deviceOps() - before;
            }
            assertEquals(graphs, ops.capturedPasses().size());
            assertTrue(issued[0] > 20 && issued[1] == issued[0] && issued[2] == issued[0],
                    "every call runs its ops: " + java.util.Arrays.toString(issued));
        }
    }

    @Test
    void edmPassJoinsPerSampleSlicesOnTheDevice() {
        // The EDM denoiser scales each sample into its own slice of c_in x, then the U-Net reads the whole batch:
        // the residency joins the slices by device copies, inside the graph.
        try (UNet net = randomNet(config(32), 3); TensorArena a = new TensorArena(); Workspace ws = new Workspace();
             Workspace wsCpu = new Workspace()) {
            EdmDenoiser d = new EdmDenoiser(net, ops, ws, true);
            double[] sigma = {0.5, 7.0};
            Tensor x = noise(a, 2, 8);
            Tensor first = a.allocate(Layout.NHWC, 2, 8, 8, 2), replay = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            d.denoise(x, sigma, null, first);
            d.denoise(x, sigma, null, replay);  // captured
            d.denoise(x, sigma, null, replay);  // replayed
            assertArrayEquals(first.toArray(), replay.toArray());
            Tensor cpu = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            new EdmDenoiser(net, OpsTesting.CPU, wsCpu).denoise(x, sigma, null, cpu);
            OpsTesting.assertClose("edm denoiser cuda-emulated graph vs cpu", replay, cpu, 1e-4);
        }
    }

    @Test
    void aWholeTwoStepSampleIsOneGraphWithTheSameBits() {
        // ConsistencySampler with onePass (what api.Sampler uses): both network evaluations and the re-noising in one
        // graph, the noises as its inputs. Same bits as a graph per evaluation, a new seed replays the same graph.
        try (UNet net = randomNet(config(32), 21); TensorArena a = new TensorArena(); Workspace ws = new Workspace();
             Workspace wsCpu = new Workspace()) {
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
            double[] taus = {1.5};
            for (long seed : new long[] {1, 2, 3}) {
                Tensor whole = noise(a, 2, seed), perCall = a.allocate(Layout.NHWC, 2, 8, 8, 2);
                Tensor cpu = a.allocate(Layout.NHWC, 2, 8, 8, 2);
                OpsTesting.CPU.scale(whole, 80f, whole);
                perCall.copyFrom(whole);
                cpu.copyFrom(whole);
                ai.onestep.diffusion.ConsistencySampler.sample(ops, f, whole, taus, null, seed, 0, true);
                ai.onestep.diffusion.ConsistencySampler.sample(ops, f, perCall, taus, null, seed, 0, false);
                ai.onestep.diffusion.ConsistencySampler.sample(OpsTesting.CPU, new ConsistencyDenoiser(net,
                        OpsTesting.CPU, wsCpu), cpu, taus, null, seed, 0);
                assertArrayEquals(perCall.toArray(), whole.toArray(), "seed " + seed + ": one graph vs one per call");
                OpsTesting.assertClose("seed " + seed + ": one graph vs cpu", whole, cpu, 1e-4);
            }
            long sampleGraphs = ops.capturedPasses().keySet().stream()
                    .filter(k -> k.startsWith("consistency sample taus=[1.5]")).count();
            assertEquals(1, sampleGraphs, ops.capturedPasses().keySet().toString());
        }
    }

    @Test
    void aWholeHeunSampleIsOneGraphWithTheSameBits() {
        // EdmSampler with onePass (what api.Sampler uses on cuda): 5 network evaluations and every update in one
        // graph. Same bits as a graph per evaluation with eager updates; a second call replays it; close to the CPU.
        try (UNet net = randomNet(config(32), 41); TensorArena a = new TensorArena(); Workspace ws = new Workspace();
             Workspace wsCpu = new Workspace()) {
            EdmDenoiser d = new EdmDenoiser(net, ops, ws, true);
            double[] sigmas = ai.onestep.diffusion.KarrasSchedule.sigmas(3);
            java.util.List<Integer> steps = new java.util.ArrayList<>();
            for (long seed : new long[] {1, 2}) {
                Tensor whole = noise(a, 2, seed), perCall = a.allocate(Layout.NHWC, 2, 8, 8, 2);
                Tensor cpu = a.allocate(Layout.NHWC, 2, 8, 8, 2);
                OpsTesting.CPU.scale(whole, (float) sigmas[0], whole);
                perCall.copyFrom(whole);
                cpu.copyFrom(whole);
                steps.clear();
                ai.onestep.diffusion.EdmSampler.sample(ops, d, ai.onestep.diffusion.EdmSampler.Method.HEUN, whole, sigmas,
                        null, steps::add, true);
                assertEquals(List.of(0, 1, 2), steps, "every step reported, after the pass");
                ai.onestep.diffusion.EdmSampler.sample(ops, d, ai.onestep.diffusion.EdmSampler.Method.HEUN, perCall,
                        sigmas, null, null, false);
                ai.onestep.diffusion.EdmSampler.sample(OpsTesting.CPU, new EdmDenoiser(net, OpsTesting.CPU, wsCpu),
                        ai.onestep.diffusion.EdmSampler.Method.HEUN, cpu, sigmas, null, null);
                assertArrayEquals(perCall.toArray(), whole.toArray(), "seed " + seed + ": one graph vs one per call");
                OpsTesting.assertClose("seed " + seed + ": one graph vs cpu", whole, cpu, 1e-4);
            }
            assertEquals(1, ops.capturedPasses().keySet().stream().filter(k -> k.startsWith("edm HEUN sigmas=")).count(),
                    ops.capturedPasses().keySet().toString());
        }
    }

    @Test
    void aPassLargerThanTheArenasGrowsThemAndIsCaptured() {
        // Arenas of 64 KiB, far below one pass's activations (a big batch on a real model is the same story): the
        // first run doubles the measuring arenas until the pass fits, then the pass is captured at its exact size.
        try (CudaOps small = new CudaOps(new EmulatedDevice(CudaBackend.emulatedLibrary().toString()), 64L << 10, 2);
             UNet net = randomNet(config(32), 31); TensorArena a = new TensorArena(); Workspace ws = new Workspace();
             Workspace wsCpu = new Workspace()) {
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, small, ws, true);
            double[] t = {4.0, 4.0};
            Tensor x = noise(a, 2, 32), y = a.allocate(Layout.NHWC, 2, 8, 8, 2), cpu = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            f.denoise(x, t, null, y);
            f.denoise(x, t, null, y);
            f.denoise(x, t, null, y);
            assertEquals(1, small.capturedPasses().size(), "captured after the arenas grew");
            new ConsistencyDenoiser(net, OpsTesting.CPU, wsCpu).denoise(x, t, null, cpu);
            OpsTesting.assertClose("grown pass vs cpu", y, cpu, 1e-4);
        }
    }

    @Test
    void paddedHeadsAndFourierFeaturesStayOnTheDevice() {
        // Heads of 4 features run on the 32-feature kernel, zero-padded; NCSN++'s Fourier time embedding has its own
        // kernel: both passes become graphs with nothing on the host, and agree with the CPU backend.
        List<UNetConfig> configs = List.of(config(4), config(32, 32, "fourier"));
        for (int c = 0; c < configs.size(); c++) {
            UNetConfig cfg = configs.get(c);
            try (UNet net = randomNet(cfg, 12); TensorArena a = new TensorArena(); Workspace ws = new Workspace();
                 Workspace wsCpu = new Workspace()) {
                ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
                double[] t = {0.75 + c, 3.5};  // a key of its own (the same key with a new model replaces a graph)
                Tensor x = noise(a, 2, 13), y = a.allocate(Layout.NHWC, 2, 8, 8, 2);
                Tensor cpu = a.allocate(Layout.NHWC, 2, 8, 8, 2);
                int graphs = ops.capturedPasses().size();
                long host = ops.hostOps();
                f.denoise(x, t, null, y);
                f.denoise(x, t, null, y);
                f.denoise(x, t, null, y);
                assertEquals(graphs + 1, ops.capturedPasses().size(), cfg.timeEmbeddingType() + ": captured");
                assertEquals(host, ops.hostOps(), "nothing ran on the host");
                new ConsistencyDenoiser(net, OpsTesting.CPU, wsCpu).denoise(x, t, null, cpu);
                OpsTesting.assertClose("graph vs cpu (" + cfg.timeEmbeddingType() + ")", y, cpu, 1e-4);
            }
        }
    }

    @Test
    void aPassWithAHostOnlyOpRunsOpByOp() {
        // A head of 160 features is beyond the fused kernels (128 at most): the pass cannot stay on the device, so it
        // runs op by op (attention on the host) and still gives the CPU backend's answer.
        try (UNet net = randomNet(config(160, 160, "positional"), 4); TensorArena a = new TensorArena();
             Workspace ws = new Workspace(); Workspace wsCpu = new Workspace()) {
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
            double[] t = {1.25};
            Tensor x = noise(a, 1, 9), y = a.allocate(Layout.NHWC, 1, 8, 8, 2), cpu = a.allocate(Layout.NHWC, 1, 8, 8, 2);
            int graphs = ops.capturedPasses().size();
            f.denoise(x, t, null, y);
            f.denoise(x, t, null, y);
            assertEquals(graphs, ops.capturedPasses().size());
            assertTrue(ops.eagerOnlyPasses().stream().anyMatch(k -> k.startsWith("consistency t=[1.25]")),
                    ops.eagerOnlyPasses().toString());
            new ConsistencyDenoiser(net, OpsTesting.CPU, wsCpu).denoise(x, t, null, cpu);
            OpsTesting.assertClose("op-by-op pass vs cpu", y, cpu, 1e-4);
        }
    }
}
