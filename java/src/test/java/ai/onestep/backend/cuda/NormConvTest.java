package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.Ops;
import ai.onestep.backend.OpsTesting;
import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetConfig;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * A ResnetBlock2D's group norm and the convolution after it as one op ({@link Ops#groupNormConv2d}), which the cuda
 * backend runs as our implicit-GEMM convolution with the group norm as its prologue
 * ({@code onestep_groupnorm_conv2d_igemm_typed}) where the shape's timed choice took it: whole fp16/bf16 U-Net passes
 * against the cpu backend and against the same device with the fusion off, the timed choice's two verdicts, and the
 * host backends' two ops. The kernel's own checks against a double reference are in kernels/test/test_conv.cpp.
 */
class NormConvTest {

    /** The CIFAR-like test config with the default time mode, whose norm2 adds the time projection (fusable). */
    private static UNet net(long seed) {
        Map<String, Object> cfg = CudaGraphTest.configMap(32);
        cfg.put("resnet_time_scale_shift", "default");
        return CudaGraphTest.randomNet(UNetConfig.fromMap(cfg), seed);
    }

    /** The timed choices so far whose key starts with {@code prefix}; at least one. */
    static List<Device.Choice> choices(CudaOps ops, String prefix) {
        List<Device.Choice> c = ops.device().timedChoices().stream().filter(x -> x.shape().startsWith(prefix)).toList();
        assertFalse(c.isEmpty(), "no " + prefix + " choice among " + ops.device().timedChoices());
        return c;
    }

    private static long count(UNet net, String suffix) {
        return net.parameters().list().stream().filter(p -> p.name().endsWith(suffix)).count();
    }

    /**
     * A folding backend on an emulated device with KRSC weights and biases left to their readers, as on cuDNN (conv1's
     * bias reaches the fused norm2 pending): the fusion tests' device (AttentionResidualTest, ResnetBlockTest too).
     */
    static CudaOps open(EmulatedDevice.Candidates candidates, Precision p) {
        CudaOps ops = new CudaOps(new EmulatedDevice(CudaBackend.emulatedLibrary().toString(), true, true, candidates),
                64L << 20, 2, p);
        ops.foldConstants(true);
        return ops;
    }

    private static Tensor input(TensorArena a) {
        return input(a, 29);
    }

    /** A (2, 8, 8, 2) sample of the test U-Nets, Gaussian with the seed. */
    static Tensor input(TensorArena a, long seed) {
        return input(a, seed, 2);
    }

    /** A (n, 8, 8, 2) sample of the test U-Nets, Gaussian with the seed. */
    static Tensor input(TensorArena a, long seed, int n) {
        Tensor x = a.allocate(Layout.NHWC, n, 8, 8, 2);
        Noise.gaussian(x, seed, 0);
        return x;
    }

    /**
     * Every norm1 that is not over a concatenation, every norm2, and conv_norm_out are one op with the convolution
     * they feed (conv2's residual included), each norm1 over a concatenation one op with conv1 and the shortcut, and
     * each attention block's norm one with its packed q/k/v projection; the graph has one node fewer per such op (each
     * took the prologue; two per concatenating op), and
     * the sample stays within the 16-bit type's rounding of the cpu backend's and of the same device's with the fusion
     * off.
     */
    @Test
    void aHalfPassRunsEachBlocksNormsInsideItsConvolutions() {
        EmulatedDeviceTest.require();
        for (Precision p : new Precision[] {Precision.FP16, Precision.BF16}) {
            try (UNet net = net(71); TensorArena a = new TensorArena();
                 CudaOps ops = open(EmulatedDevice.Candidates.ALWAYS, p)) {
                Tensor x = input(a);
                float[] fused = ConstantFoldingTest.denoise(ops, net, x);
                Map<String, Long> counts = ops.capturedOpCounts().values().iterator().next();
                long resnets = count(net, "conv2.weight");
                long concats = counts.getOrDefault("groupNormSiluConcatConv2d", 0L);
                assertTrue(concats > 0, "the up blocks' norm1 over cat(h, skip) is one op with conv1 and the shortcut: "
                        + counts);
                assertFalse(counts.containsKey("groupNormSiluConcat"), "no concatenation made: " + counts);
                // norm1 unless over a concatenation, norm2, and conv_norm_out with conv_out.
                long fusable = 2 * resnets - concats + 1;
                assertEquals(fusable, (long) counts.getOrDefault("groupNormSiluConv2d", 0L),
                        p.label() + ": one op per fusable norm: " + counts);
                assertEquals(0, (long) counts.getOrDefault("conv2dResidual", 0L), "conv2 runs inside it: " + counts);
                // Each attention block's group norm and its packed q/k/v projection, a 1x1 convolution.
                long attentions = count(net, "group_norm.weight");
                assertTrue(attentions > 0);
                assertEquals(attentions, (long) counts.getOrDefault("groupNormConv2d", 0L), counts.toString());
                assertFalse(counts.containsKey("groupNorm") || counts.containsKey("linear"), counts.toString());
                long[] graph = ops.capturedPasses().values().iterator().next();
                assertEquals(0, ops.device().normConvsUnfused(), "every call took the prologue");

                float[] cpu = ConstantFoldingTest.denoise(new CpuOps(2), net, x);
                ops.fuseNormConvs(false);
                ops.forgetCapturedPasses();
                float[] apart = ConstantFoldingTest.denoise(ops, net, x);
                Map<String, Long> apartCounts = ops.capturedOpCounts().values().iterator().next();
                assertFalse(apartCounts.containsKey("groupNormSiluConv2d"));
                assertEquals(concats, (long) apartCounts.getOrDefault("groupNormSiluConcat", 0L), apartCounts.toString());
                assertEquals(attentions, (long) apartCounts.getOrDefault("linear", 0L), apartCounts.toString());
                // One graph node fewer per fused op (the group norm's, in the attention blocks the GEMM's), two per
                // concatenating one (conv1 and the shortcut gather from h and skip in one launch, where the
                // concatenating norm, conv1 and the shortcut took three), and no other launch added or lost (the
                // emulated KRSC route's transposition for conv_in, which our convolution does not take, is in both).
                long[] twoOps = ops.capturedPasses().values().iterator().next();
                assertEquals(fusable + 2 * concats + attentions, twoOps[0] - graph[0],
                        p.label() + ": nodes " + twoOps[0] + " -> " + graph[0]);
                assertEquals(twoOps[0] - twoOps[1], graph[0] - graph[1], "launches beyond one per op: the same");
                // The fused route rounds the normalized values to the type as the group norm kernel stores them, but
                // its statistics sum in another order: a few units of the type's rounding through the network.
                // Measured (emulated): fp16 vs cpu 1.8e-3, bf16 1.6e-2 (bounds ~2x); against the two ops 9.2e-4 in
                // fp16 (two units of its rounding: the fused convolutions run on other tiles than the ops apart, so
                // they sum in another order) and 0 in bf16. A gamma 1% off in the prologue gives 1e-2 against both.
                double vsCpu = IgemmConvTest.relL2(fused, cpu), vsApart = IgemmConvTest.relL2(fused, apart);
                double bound = p == Precision.FP16 ? 4e-3 : 3e-2;
                assertTrue(vsCpu < bound, p.label() + ": fused vs cpu " + vsCpu);
                assertTrue(vsApart < bound, p.label() + ": fused vs the two ops " + vsApart);
            }
        }
    }

    /**
     * The statistics chain (twenty-fourth session): each groupNormConv whose input is the output of the groupNormConv
     * (or an up block's groupNormConcatConv) right before it reads per-channel statistics that one left in its
     * epilogue, instead of its group norm computing them. In the pass's
     * measuring run every reader times and takes them (the producer re-run leaving them); in the captured run each
     * producer leaves them because its reader took them in the measuring run (so as many readers read them as
     * producers left them, and each reader read them in both runs), and the sample stays within the 16-bit type's
     * rounding of the cpu backend's and of the same device's with the chain off, whose graph has as many nodes.
     */
    @Test
    void eachReaderTakesTheStatisticsItsProducerLeft() {
        EmulatedDeviceTest.require();
        for (Precision p : new Precision[] {Precision.FP16, Precision.BF16}) {
            try (UNet net = net(77); TensorArena a = new TensorArena();
                 CudaOps ops = open(EmulatedDevice.Candidates.ALWAYS, p)) {
                Tensor x = input(a);
                float[] chained = ConstantFoldingTest.denoise(ops, net, x);
                long given = ops.device().normConvsGiven(), left = ops.device().normConvStatsLeft();
                // The first run's readers had no statistics left for them (each producer re-ran to leave them); in
                // every later run each producer left them and its reader read them: as many readers as producers.
                long links = given - left;
                assertTrue(links > 0 && left >= links && left % links == 0, p.label() + ": " + given
                        + " readers took the statistics, " + left + " producers left them");
                // At least norm2 after conv1 in every resnet (the test net keeps its channels, so no entry carries a
                // shortcut; an up block's conv1 gathers cat(h, skip) and leaves its output's statistics too), and
                // more: the norms after a resnet's conv2.
                long resnets = count(net, "conv2.weight");
                assertTrue(links > resnets, p.label() + ": " + links + " readers a run, " + resnets + " resnets");
                List<Device.Choice> verdicts = choices(ops, "normconv,").stream()
                        .filter(c -> c.shape().endsWith(",given")).toList();
                for (Device.Choice c : verdicts) {
                    assertTrue(c.config() >= 1 && c.candidate().startsWith("group norm on the producer's statistics, ")
                            && c.verdict().startsWith("given faster"), c.toString());
                }
                long[] graph = ops.capturedPasses().values().iterator().next();

                float[] cpu = ConstantFoldingTest.denoise(new CpuOps(2), net, x);
                ops.device().chainNormConvs(false);
                ops.forgetCapturedPasses();
                float[] own = ConstantFoldingTest.denoise(ops, net, x);
                assertEquals(given, ops.device().normConvsGiven(), "the chain off: no reader reads them");
                long[] ownGraph = ops.capturedPasses().values().iterator().next();
                assertEquals(ownGraph[0], graph[0], "the same launches: each reader's group norm was already inside it");
                // Measured (emulated): vs cpu fp16 1.3e-3, bf16 1.3e-2; vs the chain off 5.7e-4 and 0 (the
                // statistics merge in another order). A reader that leaves out its pre-add terms' shift disagrees
                // with its own route when its choice is checked, and the verdict goes to the own route.
                double vsCpu = IgemmConvTest.relL2(chained, cpu), vsOwn = IgemmConvTest.relL2(chained, own);
                double bound = p == Precision.FP16 ? 4e-3 : 3e-2;
                assertTrue(vsCpu < bound, p.label() + ": chained vs cpu " + vsCpu);
                assertTrue(vsOwn < bound, p.label() + ": chained vs the chain off " + vsOwn);
            }
        }
    }

    /**
     * A reader takes the statistics only from the call right before it: with an op between that writes the producer's
     * output (here an in-place add, which moves the statistics), it computes its own, and the pass still matches the
     * cpu backend's; with nothing between, the same pass reads them. Each pass runs three times (measured, captured,
     * replayed). A reader that trusted the producer's statistics across the add would normalize with the wrong mean
     * (Device without its adjacency rule: 1.07 against the cpu backend here).
     */
    @Test
    void aReaderTakesNoStatisticsAcrossAnOpThatWroteItsInput() {
        EmulatedDeviceTest.require();
        for (boolean between : new boolean[] {false, true}) {
            try (TensorArena a = new TensorArena(); CudaOps ops = open(EmulatedDevice.Candidates.ALWAYS,
                    Precision.FP16)) {
                Tensor x = OpsTesting.randn(a, 11, Layout.NHWC, 1, 4, 8, 32);
                Tensor shift = OpsTesting.randn(a, 12, Layout.NHWC, 1, 4, 8, 32);
                for (long i = 0; i < shift.size(); i++) {
                    shift.set(i, shift.get(i) + 3f);  // moves every channel's mean
                }
                Tensor w1 = OpsTesting.randn(a, 13, Layout.HWIO, 3, 3, 32, 32), b1 = OpsTesting.randn(a, 14, 32);
                Tensor w2 = OpsTesting.randn(a, 15, Layout.HWIO, 3, 3, 32, 16), b2 = OpsTesting.randn(a, 16, 16);
                Tensor gamma = OpsTesting.randn(a, 17, 32), beta = OpsTesting.randn(a, 18, 32);
                for (Tensor w : new Tensor[] {w1, w2}) {
                    for (long i = 0; i < w.size(); i++) {
                        w.set(i, w.get(i) * 0.1f);  // outputs of order 1
                    }
                }
                ops.registerParameters(List.of(w1, b1, w2, b2, gamma, beta));
                float[] got = chainedPass(ops, a, x, shift, w1, b1, w2, b2, gamma, beta, between);
                float[] want = chainedPass(new CpuOps(2), a, x, shift, w1, b1, w2, b2, gamma, beta, between);
                String what = between ? "an in-place add between" : "nothing between";
                if (between) {
                    assertEquals(0, ops.device().normConvsGiven(), what + ": the reader computes its own");
                } else {
                    assertTrue(ops.device().normConvsGiven() > 0, what + ": the reader takes the producer's");
                }
                // Measured (emulated): 4.1e-4 with nothing between, 4.6e-4 with the add.
                double err = IgemmConvTest.relL2(got, want);
                assertTrue(err < 4e-3, what + ": vs cpu " + err);
            }
        }
    }

    /** Two group norm + convolution ops, the second reading the first's output (with an in-place add between). */
    private static float[] chainedPass(Ops ops, TensorArena a, Tensor x, Tensor shift, Tensor w1, Tensor b1, Tensor w2,
                                       Tensor b2, Tensor gamma, Tensor beta, boolean between) {
        Tensor y1 = a.allocate(Layout.NHWC, 1, 4, 8, 32), y2 = a.allocate(Layout.NHWC, 1, 4, 8, 16);
        Tensor g1 = a.allocate(Layout.NHWC, 1, 4, 8, 32), g2 = a.allocate(Layout.NHWC, 1, 4, 8, 32);
        Tensor m1 = a.allocate(Layout.ROWS, 1, 8), r1 = a.allocate(Layout.ROWS, 1, 8);
        Tensor m2 = a.allocate(Layout.ROWS, 1, 8), r2 = a.allocate(Layout.ROWS, 1, 8);
        for (int run = 0; run < 3; run++) {
            ops.runPass("chain " + between, new Tensor[] {x, shift}, new Tensor[] {y2}, () -> {
                ops.groupNormConv2d(x, null, gamma, beta, 8, 1e-5f, true, g1, m1, r1, w1, b1, null, 1, 1, y1);
                if (between) {
                    ops.add(y1, shift, y1);
                }
                ops.groupNormConv2d(y1, null, gamma, beta, 8, 1e-5f, true, g2, m2, r2, w2, b2, null, 1, 1, y2);
            });
        }
        return y2.toArray();
    }

    /**
     * A down block's resnet with a conv_shortcut (the test U-Net's 32 -> 64 channels): norm1, conv1 and the 1x1
     * shortcut are one op and one graph node (three fewer nodes apart: the group norm, conv1 and the shortcut), and
     * the sample stays within the 16-bit type's rounding of the cpu backend's and of the ops apart.
     */
    @Test
    void aDownBlocksShortcutRidesInConv1sLaunch() {
        EmulatedDeviceTest.require();
        Map<String, Object> cfg = CudaGraphTest.configMap(32, 64, "positional");
        cfg.put("resnet_time_scale_shift", "default");
        for (Precision p : new Precision[] {Precision.FP16, Precision.BF16}) {
            try (UNet net = CudaGraphTest.randomNet(UNetConfig.fromMap(cfg), 91); TensorArena a = new TensorArena();
                 CudaOps ops = open(EmulatedDevice.Candidates.ALWAYS, p)) {
                Tensor x = input(a);
                long downShortcuts = net.parameters().list().stream().filter(q -> q.name().startsWith("down_blocks.")
                        && q.name().endsWith(".conv_shortcut.weight")).count();
                assertTrue(downShortcuts > 0);
                float[] fused = ConstantFoldingTest.denoise(ops, net, x);
                Map<String, Long> counts = ops.capturedOpCounts().values().iterator().next();
                assertEquals(downShortcuts, (long) counts.getOrDefault("groupNormSiluConvShortcut2d", 0L),
                        counts.toString());
                long[] graph = ops.capturedPasses().values().iterator().next();
                assertEquals(0, ops.device().normConvsUnfused(), "every call took the prologue");
                List<Device.Choice> verdicts = choices(ops, "normconv,").stream()
                        .filter(c -> c.shape().endsWith(",shortcut")).toList();
                assertFalse(verdicts.isEmpty());
                for (Device.Choice c : verdicts) {
                    assertTrue(c.config() >= 1 && c.candidate().startsWith("group norm prologue with the shortcut, ")
                            && c.verdict().startsWith("fused faster"), c.toString());
                }

                float[] cpu = ConstantFoldingTest.denoise(new CpuOps(2), net, x);
                ops.fuseNormConvs(false);
                ops.forgetCapturedPasses();
                float[] apart = ConstantFoldingTest.denoise(ops, net, x);
                Map<String, Long> apartCounts = ops.capturedOpCounts().values().iterator().next();
                assertFalse(apartCounts.containsKey("groupNormSiluConvShortcut2d"), apartCounts.toString());
                long[] twoOps = ops.capturedPasses().values().iterator().next();
                long saved = counts.getOrDefault("groupNormSiluConv2d", 0L) + counts.getOrDefault("groupNormConv2d", 0L)
                        + 2 * counts.getOrDefault("groupNormSiluConcatConv2d", 0L) + 2 * downShortcuts;
                assertEquals(saved, twoOps[0] - graph[0], p.label() + ": nodes " + twoOps[0] + " -> " + graph[0]);
                // Measured (emulated): vs cpu fp16 1.7e-3, bf16 1.4e-2; vs the ops apart 9.2e-4 and 0 (bounds as the
                // test above). conv_shortcut's bias left out of conv2's gives 4.7e-2 against the cpu backend.
                double vsCpu = IgemmConvTest.relL2(fused, cpu), vsApart = IgemmConvTest.relL2(fused, apart);
                double bound = p == Precision.FP16 ? 4e-3 : 3e-2;
                assertTrue(vsCpu < bound, p.label() + ": fused vs cpu " + vsCpu);
                assertTrue(vsApart < bound, p.label() + ": fused vs the ops apart " + vsApart);
            }
        }
    }

    /**
     * The timed choice: forced against the prologue, every call runs the two ops inside the op, with the bits of a
     * pass that never fused (the same kernels in the same order), one node per launch; forced for it, each shape's
     * verdict names the tile, and nothing runs as two ops.
     */
    @Test
    void theTimedChoiceKeepsTheTwoOpsBitsOrTakesATile() {
        EmulatedDeviceTest.require();
        float[] apart;
        try (UNet net = net(73); TensorArena a = new TensorArena();
             CudaOps ops = open(EmulatedDevice.Candidates.TIMED, Precision.FP16)) {
            ops.device().forceChoice = Boolean.FALSE;
            ops.fuseNormConvs(false);
            apart = ConstantFoldingTest.denoise(ops, net, input(a));
        }
        try (UNet net = net(73); TensorArena a = new TensorArena();
             CudaOps ops = open(EmulatedDevice.Candidates.TIMED, Precision.FP16)) {
            ops.device().forceChoice = Boolean.FALSE;
            float[] declined = ConstantFoldingTest.denoise(ops, net, input(a));
            assertArrayEquals(apart, declined, "the two ops inside the op: the unfused pass's bits");
            Map<String, Long> counts = ops.capturedOpCounts().values().iterator().next();
            long normConvs = counts.getOrDefault("groupNormSiluConv2d", 0L);
            assertTrue(normConvs > 0, counts.toString());
            assertTrue(ops.device().normConvsUnfused() >= normConvs, "each ran as the two ops");
            long[] graph = ops.capturedPasses().values().iterator().next();
            assertTrue(graph[0] >= graph[1] + normConvs, "at least one more node per declined op: " + graph[0] + " for "
                    + graph[1]);
            List<Device.Choice> verdicts = NormConvTest.choices(ops, "normconv,");
            for (Device.Choice c : verdicts) {
                assertEquals(0, c.config(), c.toString());
                // A reader of its producer's statistics (",given") declines them for its own route: the two ops.
                assertTrue(c.shape().endsWith(",given")
                        ? c.incumbent().equals("own route") && c.verdict().startsWith("own route faster")
                        : c.incumbent().equals("group norm and convolution") && c.verdict().startsWith("two ops"),
                        c.toString());
            }
            assertTrue(verdicts.stream().anyMatch(c -> c.shape().endsWith(",given")), verdicts.toString());
            assertEquals(0, ops.device().normConvsGiven(), "no reader read a producer's statistics");
            List<Device.Choice> concatVerdicts = NormConvTest.choices(ops, "normcatconv,");
            for (Device.Choice c : concatVerdicts) {
                assertTrue(c.config() == 0 && c.incumbent().equals("concatenating group norm and convolutions")
                        && c.verdict().startsWith("ops apart faster"), c.toString());
            }
        }
        try (UNet net = net(73); TensorArena a = new TensorArena();
             CudaOps ops = open(EmulatedDevice.Candidates.TIMED, Precision.FP16)) {
            ops.device().forceChoice = Boolean.TRUE;
            float[] taken = ConstantFoldingTest.denoise(ops, net, input(a));
            // Every other choice forced too (our convolutions, attention and group norm kernels): 9.5e-4 measured.
            assertTrue(IgemmConvTest.relL2(taken, apart) < 4e-3, "fused vs apart " + IgemmConvTest.relL2(taken, apart));
            List<Device.Choice> verdicts = NormConvTest.choices(ops, "normconv,");
            for (Device.Choice c : verdicts) {
                assertTrue(c.shape().endsWith(",given")
                        ? c.config() >= 1 && c.verdict().startsWith("given faster")
                                && c.candidate().startsWith("group norm on the producer's statistics, ")
                        : c.config() >= 1 && c.verdict().startsWith("fused faster")
                                && c.candidate().startsWith("group norm prologue, "), c.toString());
            }
            // Over a concatenation: conv1 with the prologue and the shortcut in one launch, gathering from h and skip.
            List<Device.Choice> concatVerdicts = NormConvTest.choices(ops, "normcatconv,");
            for (Device.Choice c : concatVerdicts) {
                assertTrue(c.config() >= 1 && c.verdict().startsWith("fused faster") && c.shape().endsWith(",shortcut")
                        && c.candidate().startsWith("group norm prologue over a and b, "), c.toString());
            }
            // The 4x4 levels' outputs (16 pixels) take only the 16-row tiles: the others were refused, not chosen.
            assertTrue(verdicts.stream().anyMatch(c -> c.shape().contains(",4,4,") && c.candidate().contains("16x")),
                    verdicts.toString());
            assertEquals(0, ops.device().normConvsUnfused());
        }
    }

    /**
     * An up block's entry ({@link Ops#groupNormConcatConv2d}) on host backends: the concatenating group norm, conv1 of
     * its output and the shortcut of the concatenation, with those ops' results; bad operands refused by name.
     */
    @Test
    void hostBackendsRunTheConcatenatingEntryAsItsOps() {
        try (TensorArena a = new TensorArena()) {
            Tensor h = OpsTesting.randn(a, 11, Layout.NHWC, 2, 4, 4, 8), skip = OpsTesting.randn(a, 12, Layout.NHWC,
                    2, 4, 4, 4);
            Tensor gamma = OpsTesting.randn(a, 13, 12), beta = OpsTesting.randn(a, 14, 12);
            Tensor w = OpsTesting.randn(a, 15, Layout.HWIO, 3, 3, 12, 6), b1 = OpsTesting.randn(a, 16, 6);
            Tensor ws = OpsTesting.randn(a, 17, Layout.HWIO, 1, 1, 12, 6);
            Tensor cat0 = a.allocate(Layout.NHWC, 2, 4, 4, 12), g0 = a.allocate(Layout.NHWC, 2, 4, 4, 12);
            Tensor m0 = a.allocate(Layout.ROWS, 2, 3), r0 = a.allocate(Layout.ROWS, 2, 3);
            Tensor y0 = a.allocate(Layout.NHWC, 2, 4, 4, 6), sc0 = a.allocate(Layout.NHWC, 2, 4, 4, 6);
            OpsTesting.CPU.groupNormConcat(h, skip, gamma, beta, 3, 1e-5f, true, cat0, g0, m0, r0);
            OpsTesting.CPU.conv2d(g0, w, b1, 1, 1, y0);
            OpsTesting.CPU.conv2d(cat0, ws, null, 1, 0, sc0);
            for (Ops ops : new Ops[] {new CpuOps(2), OpsTesting.NAIVE}) {
                Tensor cat = a.allocate(Layout.NHWC, 2, 4, 4, 12), g = a.allocate(Layout.NHWC, 2, 4, 4, 12);
                Tensor mean = a.allocate(Layout.ROWS, 2, 3), rstd = a.allocate(Layout.ROWS, 2, 3);
                Tensor y = a.allocate(Layout.NHWC, 2, 4, 4, 6), sc = a.allocate(Layout.NHWC, 2, 4, 4, 6);
                ops.groupNormConcatConv2d(h, skip, gamma, beta, 3, 1e-5f, true, cat, g, mean, rstd, w, b1, 1, 1, y, ws,
                        sc);
                String name = ops.getClass().getSimpleName();
                assertTrue(OpsTesting.relErr(y.toArray(), y0.toArray()) < 1e-5, name + " conv1");
                assertTrue(OpsTesting.relErr(sc.toArray(), sc0.toArray()) < 1e-5, name + " shortcut");
                assertTrue(OpsTesting.relErr(cat.toArray(), cat0.toArray()) == 0, name + " cat");
            }
            Tensor cat = a.allocate(Layout.NHWC, 2, 4, 4, 12), g = a.allocate(Layout.NHWC, 2, 4, 4, 12);
            Tensor mean = a.allocate(Layout.ROWS, 2, 3), rstd = a.allocate(Layout.ROWS, 2, 3);
            Tensor y = a.allocate(Layout.NHWC, 2, 4, 4, 6), sc = a.allocate(Layout.NHWC, 2, 4, 4, 6);
            TensorException e = assertThrows(TensorException.class, () -> OpsTesting.CPU.groupNormConcatConv2d(h, skip,
                    gamma, beta, 3, 1e-5f, true, cat, g, mean, rstd, w, b1, 1, 1, y, ws, null));
            assertTrue(e.getMessage().startsWith("groupNormSiluConcatConv2d: the shortcut's weights and output"),
                    e.getMessage());
            Tensor scBad = a.allocate(Layout.NHWC, 2, 4, 4, 5);
            e = assertThrows(TensorException.class, () -> OpsTesting.CPU.groupNormConcatConv2d(h, skip, gamma, beta, 3,
                    1e-5f, false, cat, g, mean, rstd, w, b1, 1, 1, y, ws, scBad));
            assertTrue(e.getMessage().startsWith("groupNormConcatConv2d: shortcut output sc has shape [2, 4, 4, 5]"),
                    e.getMessage());
            e = assertThrows(TensorException.class, () -> OpsTesting.CPU.groupNormConcatConv2d(h, skip, gamma, beta, 3,
                    1e-5f, true, cat, g, mean, rstd, w, b1, 1, 1, y, ws, y));
            assertTrue(e.getMessage().contains("sc") && e.getMessage().contains("y"), e.getMessage());
        }
    }

    /**
     * A down block's entry ({@link Ops#groupNormConvShortcut2d}) on host backends: the group norm, conv1 of its output
     * and the 1x1 shortcut of x, with those ops' results; bad operands refused by name.
     */
    @Test
    void hostBackendsRunTheShortcutEntryAsItsOps() {
        try (TensorArena a = new TensorArena()) {
            Tensor x = OpsTesting.randn(a, 21, Layout.NHWC, 2, 4, 4, 8), gamma = OpsTesting.randn(a, 22, 8);
            Tensor beta = OpsTesting.randn(a, 23, 8), w = OpsTesting.randn(a, 24, Layout.HWIO, 3, 3, 8, 12);
            Tensor b1 = OpsTesting.randn(a, 25, 12), ws = OpsTesting.randn(a, 26, Layout.HWIO, 1, 1, 8, 12);
            Tensor g0 = a.allocate(Layout.NHWC, x.shape()), m0 = a.allocate(Layout.ROWS, 2, 4);
            Tensor r0 = a.allocate(Layout.ROWS, 2, 4), y0 = a.allocate(Layout.NHWC, 2, 4, 4, 12);
            Tensor sc0 = a.allocate(Layout.NHWC, 2, 4, 4, 12);
            OpsTesting.CPU.groupNorm(x, null, gamma, beta, null, null, 4, 1e-5f, true, g0, m0, r0);
            OpsTesting.CPU.conv2d(g0, w, b1, 1, 1, y0);
            OpsTesting.CPU.conv2d(x, ws, null, 1, 0, sc0);
            for (Ops ops : new Ops[] {new CpuOps(2), OpsTesting.NAIVE}) {
                Tensor g = a.allocate(Layout.NHWC, x.shape()), mean = a.allocate(Layout.ROWS, 2, 4);
                Tensor rstd = a.allocate(Layout.ROWS, 2, 4), y = a.allocate(Layout.NHWC, 2, 4, 4, 12);
                Tensor sc = a.allocate(Layout.NHWC, 2, 4, 4, 12);
                ops.groupNormConvShortcut2d(x, gamma, beta, 4, 1e-5f, true, g, mean, rstd, w, b1, 1, y, ws, sc);
                String name = ops.getClass().getSimpleName();
                assertTrue(OpsTesting.relErr(y.toArray(), y0.toArray()) < 1e-5, name + " conv1");
                assertTrue(OpsTesting.relErr(sc.toArray(), sc0.toArray()) < 1e-5, name + " shortcut");
            }
            Tensor g = a.allocate(Layout.NHWC, x.shape()), mean = a.allocate(Layout.ROWS, 2, 4);
            Tensor rstd = a.allocate(Layout.ROWS, 2, 4), y = a.allocate(Layout.NHWC, 2, 4, 4, 12);
            Tensor sc = a.allocate(Layout.NHWC, 2, 4, 4, 12);
            TensorException e = assertThrows(TensorException.class, () -> OpsTesting.CPU.groupNormConvShortcut2d(x,
                    gamma, beta, 4, 1e-5f, true, g, mean, rstd, w, b1, 1, y, ws, null));
            assertTrue(e.getMessage().startsWith("groupNormSiluConvShortcut2d: the shortcut's weights and output"),
                    e.getMessage());
            Tensor y2 = a.allocate(Layout.NHWC, 2, 2, 2, 12);
            e = assertThrows(TensorException.class, () -> OpsTesting.CPU.groupNormConvShortcut2d(x, gamma, beta, 4,
                    1e-5f, false, g, mean, rstd, w, b1, 0, y2, ws, sc));
            assertTrue(e.getMessage().startsWith("groupNormConvShortcut2d: conv1's output y [2, 2, 2, 12]"),
                    e.getMessage());
            e = assertThrows(TensorException.class, () -> OpsTesting.CPU.groupNormConvShortcut2d(x, gamma, beta, 4,
                    1e-5f, true, g, mean, rstd, w, b1, 1, y, ws, y));
            assertTrue(e.getMessage().contains("sc") && e.getMessage().contains("y"), e.getMessage());
        }
    }

    /**
     * Host backends run the group norm into g and then the convolution (their bits), never fusing in models; bad
     * operands are refused by name.
     */
    @Test
    void hostBackendsRunTheTwoOpsAndRefuseBadShapes() {
        try (TensorArena a = new TensorArena()) {
            Tensor x = OpsTesting.randn(a, 1, Layout.NHWC, 2, 4, 4, 8), add = OpsTesting.randn(a, 2, Layout.ROWS, 2, 8);
            Tensor gamma = OpsTesting.randn(a, 3, 8), beta = OpsTesting.randn(a, 4, 8);
            Tensor w = OpsTesting.randn(a, 5, Layout.HWIO, 3, 3, 8, 6), b = OpsTesting.randn(a, 6, 6);
            Tensor z = OpsTesting.randn(a, 7, Layout.NHWC, 2, 4, 4, 6);
            Tensor want = a.allocate(Layout.NHWC, 2, 4, 4, 6), g0 = a.allocate(Layout.NHWC, x.shape());
            Tensor m0 = a.allocate(Layout.ROWS, 2, 4), r0 = a.allocate(Layout.ROWS, 2, 4);
            OpsTesting.CPU.groupNorm(x, add, gamma, beta, null, null, 4, 1e-5f, true, g0, m0, r0);
            OpsTesting.CPU.conv2dResidual(g0, w, b, z, 1, 1, want);
            for (Ops ops : new Ops[] {new CpuOps(2), OpsTesting.NAIVE}) {
                assertFalse(ops.fusesNormConv(), "host backends keep the two ops in models");
                Tensor y = a.allocate(Layout.NHWC, want.shape()), g = a.allocate(Layout.NHWC, x.shape());
                Tensor mean = a.allocate(Layout.ROWS, 2, 4), rstd = a.allocate(Layout.ROWS, 2, 4);
                ops.groupNormConv2d(x, add, gamma, beta, 4, 1e-5f, true, g, mean, rstd, w, b, z, 1, 1, y);
                assertTrue(OpsTesting.relErr(y.toArray(), want.toArray()) < 1e-5, ops.getClass().getSimpleName());
            }
            Tensor y = a.allocate(Layout.NHWC, want.shape()), g = a.allocate(Layout.NHWC, x.shape());
            Tensor mean = a.allocate(Layout.ROWS, 2, 4), rstd = a.allocate(Layout.ROWS, 2, 4);
            Tensor w5 = OpsTesting.randn(a, 8, Layout.HWIO, 3, 3, 5, 6), gSmall = a.allocate(Layout.NHWC, 2, 4, 4, 5);
            TensorException e = assertThrows(TensorException.class, () -> OpsTesting.CPU.groupNormConv2d(x, add, gamma,
                    beta, 4, 1e-5f, true, gSmall, mean, rstd, w, b, z, 1, 1, y));
            assertTrue(e.getMessage().startsWith("groupNormSiluConv2d: g [2, 4, 4, 5]")
                    && e.getMessage().contains("must have the shape of x"), e.getMessage());
            e = assertThrows(TensorException.class, () -> OpsTesting.CPU.groupNormConv2d(x, add, gamma, beta, 4, 1e-5f,
                    false, g, mean, rstd, w5, b, z, 1, 1, y));
            assertTrue(e.getMessage().startsWith("groupNormConv2d: weight w [3, 3, 5, 6]"),
                    e.getMessage());
            e = assertThrows(TensorException.class, () -> OpsTesting.CPU.groupNormConv2d(x, add, gamma, beta, 4, 1e-5f,
                    true, g, mean, rstd, w, b, z, 1, 1, z));
            assertTrue(e.getMessage().contains("residual z"), e.getMessage());
        }
    }
}
