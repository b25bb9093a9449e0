package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.OpsTesting;
import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetConfig;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * A whole ResnetBlock2D as one op ({@link ai.onestep.backend.Ops#resnetBlock2d}, and an up block's on cat(h, skip) with
 * its 1x1 shortcut, {@link ai.onestep.backend.Ops#resnetBlock2dConcat}), which the cuda backend runs as one launch
 * ({@code onestep_resnet_block_typed}, {@code onestep_resnet_block_concat_typed}: a thread block cluster a sample) at
 * its small levels where the shape's timed choice took it: whole fp16/bf16 U-Net passes against the cpu backend and
 * against the same device with the fusion off, the timed choice's two verdicts (declined: the two ops' bits), and the
 * host backends' two ops. The kernel's own checks against a double reference are in kernels/test/test_resnet.cpp.
 */
class ResnetBlockTest {

    /**
     * A U-Net whose levels are ones the kernel has instances for: 128 channels at 8x8 and 4x4, 16 groups (8 channels
     * each), the default time mode (norm2 adds the time projection).
     */
    private static UNet net(long seed) {
        Map<String, Object> cfg = CudaGraphTest.configMap(32, 128, "positional");
        cfg.put("block_out_channels", List.of(128L, 128L));
        cfg.put("norm_num_groups", 16L);
        cfg.put("resnet_time_scale_shift", "default");
        UNet net = CudaGraphTest.randomNet(UNetConfig.fromMap(cfg), seed);
        // The biases the backend leaves pending into an up block's concatenation (conv_in's, the upsampler's) scaled up
        // 10x from randomNet's +-0.3: at that size a fused launch that dropped them moves the sample well past the
        // bounds below (at +-0.3 it moved it by 2e-4).
        for (ai.onestep.nn.Parameter q : net.parameters()) {
            if (q.name().equals("conv_in.bias") || q.name().contains("upsamplers") && q.name().endsWith("bias")) {
                for (long i = 0; i < q.value().size(); i++) {
                    q.value().set(i, 10 * q.value().get(i));
                }
            }
        }
        return net;
    }

    private static CudaOps open(EmulatedDevice.Candidates candidates, Precision p) {
        return NormConvTest.open(candidates, p);
    }

    /** Batch 1 (the sampling latency case; the kernel's batch 2 is test_resnet's): the emulated passes cost half. */
    private static Tensor input(TensorArena a) {
        return NormConvTest.input(a, 37, 1);
    }

    /**
     * The blocks the op takes (no conv_shortcut, an input without a pending bias: at least the mid block's two) are
     * one op and one graph node each, where apart they are at least two; the sample stays within the 16-bit type's
     * rounding of the cpu backend's and of the pass with the fusion off.
     */
    @Test
    void aHalfPassRunsItsSmallResnetBlocksAsOneLaunch() {
        EmulatedDeviceTest.require();
        for (Precision p : new Precision[] {Precision.FP16, Precision.BF16}) {
            try (UNet net = net(87); TensorArena a = new TensorArena();
                 CudaOps ops = open(EmulatedDevice.Candidates.ALWAYS, p)) {
                // fp16 the non-portable cluster of 16 blocks a sample (kernel 2), bf16 the portable 8 (kernel 1): each
                // pass one size, so both run whole passes whichever the emulated timing would favour.
                boolean sixteen = p == Precision.FP16;
                ops.device().resnetClusters = new int[] {sixteen ? 16 : 8};
                int kernel = sixteen ? 2 : 1;
                String won = sixteen ? "one launch, 16 blocks faster" : "one launch faster";
                Tensor x = input(a);
                float[] fused = ConstantFoldingTest.denoise(ops, net, x);
                Map<String, Long> counts = ops.capturedOpCounts().values().iterator().next();
                long down = counts.getOrDefault("resnetBlock2d", 0L);
                long up = counts.getOrDefault("resnetBlock2dConcat", 0L);
                assertTrue(down >= 2, p.label() + ": the mid block's two resnets at least: " + counts);
                // Both up blocks' resnets (cat(h, skip) of 256 channels to 128, a 1x1 shortcut): two each.
                assertEquals(4, up, p.label() + ": the up blocks' resnets: " + counts);
                long blocks = down + up;
                assertTrue(ops.device().resnetBlocksFused() >= 2 * blocks, "both runs of the pass: "
                        + ops.device().resnetBlocksFused() + " launches for " + blocks + " blocks");
                assertEquals(0, ops.device().resnetBlocksApart());
                long[] graph = ops.capturedPasses().values().iterator().next();
                for (Device.Choice c : NormConvTest.choices(ops, "resnet,")) {
                    assertTrue(c.config() == kernel && c.verdict().startsWith(won) && c.shape().contains(
                            ",c=128,g=16,add,biased,"), c.toString());
                }
                List<Device.Choice> cat = NormConvTest.choices(ops, "resnetcat,");
                // The device runs convolution biases apart, so the upsampler's output reaches the 8x8 up block with its
                // bias pending: the kernel takes it as a_bias (key ",cat-biased").
                assertTrue(cat.stream().anyMatch(c -> c.shape().contains(",cat-biased,")), cat.toString());
                assertFalse(cat.isEmpty(), "the up blocks' shapes were timed");
                for (Device.Choice c : cat) {
                    assertTrue(c.config() == kernel && c.verdict().startsWith(won) && c.shape().contains(
                            ",cin=128+128,c=128,g=16,"), c.toString());
                }

                float[] cpu = ConstantFoldingTest.denoise(new CpuOps(2), net, x);
                // Measured (emulated): fp16 (16-block clusters) vs cpu 2.2e-3 and vs the two ops 1.6e-3, bf16 (8) vs
                // cpu 1.5e-2 (the kernel sums conv1's depth over its warps in another order, and its statistics too);
                // bounds ~2x, as NormConvTest's. Dropping the concatenation's pending biases gives 5.4e-3.
                double bound = p == Precision.FP16 ? 4e-3 : 3e-2;
                double vsCpu = IgemmConvTest.relL2(fused, cpu);
                assertTrue(vsCpu < bound, p.label() + ": fused vs cpu " + vsCpu);
                System.out.printf("resnet block test %s: fused vs cpu %.2e%n", p.label(), vsCpu);
                if (p != Precision.FP16) {
                    continue;  // the pass without the fusion once (fp16): an emulated pass costs tens of seconds
                }
                ops.device().fuseResnetBlocks(false);
                ops.forgetCapturedPasses();
                float[] apart = ConstantFoldingTest.denoise(ops, net, x);
                Map<String, Long> apartCounts = ops.capturedOpCounts().values().iterator().next();
                assertFalse(apartCounts.containsKey("resnetBlock2d") || apartCounts.containsKey("resnetBlock2dConcat"),
                        apartCounts.toString());
                long[] twoOps = ops.capturedPasses().values().iterator().next();
                assertTrue(twoOps[0] - graph[0] >= blocks, p.label() + ": nodes " + twoOps[0] + " -> " + graph[0]
                        + " for " + blocks + " blocks");
                double vsApart = IgemmConvTest.relL2(fused, apart);
                assertTrue(vsApart < bound, p.label() + ": fused vs the two ops " + vsApart);
                System.out.printf("resnet block test %s: fused vs the two ops %.2e%n", p.label(), vsApart);
            }
        }
    }

    /**
     * The timed choice declined (forced against every candidate): each block runs the two norm-convolution calls inside
     * the op, with the bits and the graph of a pass that never took the op. (Forced for the one launch, each shape's
     * verdict names it: {@link #aHalfPassRunsItsSmallResnetBlocksAsOneLaunch}.) The other candidate families are the
     * ALWAYS device's, whose choices are fewer than a TIMED one's: this test's cost is the emulated timing runs.
     */
    @Test
    void theTimedChoiceDeclinedKeepsTheTwoOpsBits() {
        EmulatedDeviceTest.require();
        float[] apart;
        long apartNodes;
        try (UNet net = net(89); TensorArena a = new TensorArena();
             CudaOps ops = open(EmulatedDevice.Candidates.ALWAYS, Precision.FP16)) {
            ops.device().forceChoice = Boolean.FALSE;
            ops.device().fuseResnetBlocks(false);
            apart = ConstantFoldingTest.denoise(ops, net, input(a));
            apartNodes = ops.capturedPasses().values().iterator().next()[0];
        }
        try (UNet net = net(89); TensorArena a = new TensorArena();
             CudaOps ops = open(EmulatedDevice.Candidates.ALWAYS, Precision.FP16)) {
            ops.device().forceChoice = Boolean.FALSE;
            float[] declined = ConstantFoldingTest.denoise(ops, net, input(a));
            assertArrayEquals(apart, declined, "the two ops inside the op: the bits of the pass without it");
            assertEquals(apartNodes, ops.capturedPasses().values().iterator().next()[0], "the same launches");
            assertTrue(ops.device().resnetBlocksApart() > 0 && ops.device().resnetBlocksFused() == 0);
            List<Device.Choice> choices = new java.util.ArrayList<>(NormConvTest.choices(ops, "resnet,"));
            choices.addAll(NormConvTest.choices(ops, "resnetcat,"));
            assertTrue(choices.size() >= 2, "both kinds of block were timed: " + choices);
            for (Device.Choice c : choices) {
                assertTrue(c.config() == 0 && c.incumbent().equals("norms and convolutions apart")
                        && c.verdict().startsWith("norms and convolutions apart faster"), c.toString());
            }
        }
    }

    /** Host backends run the two norm-convolution ops (their bits); bad operands are refused by name. */
    @Test
    void hostBackendsRunTheTwoOpsAndRefuseBadOperands() {
        try (TensorArena a = new TensorArena()) {
            int n = 2, hw = 4, c = 8, groups = 2;
            Tensor x = OpsTesting.randn(a, 1, Layout.NHWC, n, hw, hw, c);
            Tensor add = OpsTesting.randn(a, 2, Layout.ROWS, n, c);
            Tensor g1 = OpsTesting.randn(a, 3, c), be1 = OpsTesting.randn(a, 4, c), g2 = OpsTesting.randn(a, 5, c);
            Tensor be2 = OpsTesting.randn(a, 6, c), b1 = OpsTesting.randn(a, 7, c), b2 = OpsTesting.randn(a, 8, c);
            Tensor w1 = OpsTesting.randn(a, 9, Layout.HWIO, 3, 3, c, c), w2 = OpsTesting.randn(a, 10, Layout.HWIO, 3, 3, c, c);
            Tensor s1 = a.allocate(Layout.NHWC, n, hw, hw, c), s2 = a.allocate(Layout.NHWC, n, hw, hw, c);
            Tensor m1 = a.allocate(Layout.ROWS, n, groups), r1 = a.allocate(Layout.ROWS, n, groups);
            Tensor m2 = a.allocate(Layout.ROWS, n, groups), r2 = a.allocate(Layout.ROWS, n, groups);
            Tensor h = a.allocate(Layout.NHWC, n, hw, hw, c), y = a.allocate(Layout.NHWC, n, hw, hw, c);
            CpuOps cpu = new CpuOps(2);
            cpu.resnetBlock2d(x, add, g1, be1, s1, m1, r1, w1, b1, h, g2, be2, s2, m2, r2, w2, b2, groups, 1e-5f, y);
            Tensor h2 = a.allocate(Layout.NHWC, n, hw, hw, c), y2 = a.allocate(Layout.NHWC, n, hw, hw, c);
            cpu.groupNormConv2d(x, null, g1, be1, groups, 1e-5f, true, s1, m1, r1, w1, b1, null, 1, 1, h2);
            cpu.groupNormConv2d(h2, add, g2, be2, groups, 1e-5f, true, s2, m2, r2, w2, b2, x, 1, 1, y2);
            assertArrayEquals(y2.toArray(), y.toArray(), "the two ops' bits");
            TensorException e = assertThrows(TensorException.class, () -> cpu.resnetBlock2d(x, add, g1, be1, s1, m1,
                    r1, w1, b1, h, g2, be2, s2, m2, r2, w2, b2, groups, 1e-5f, x));
            assertTrue(e.getMessage().startsWith("resnetBlock2d: ") && e.getMessage().contains("y"), e.getMessage());
            Tensor w5 = OpsTesting.randn(a, 11, Layout.HWIO, 1, 1, c, c);
            TensorException e2 = assertThrows(TensorException.class, () -> cpu.resnetBlock2d(x, add, g1, be1, s1, m1,
                    r1, w5, b1, h, g2, be2, s2, m2, r2, w2, b2, groups, 1e-5f, y));
            assertTrue(e2.getMessage().startsWith("resnetBlock2d: "), e2.getMessage());
        }
    }

    /** The up block's op: host backends run its two ops (their bits); bad operands are refused by name. */
    @Test
    void hostBackendsRunTheUpBlocksTwoOpsAndRefuseBadOperands() {
        try (TensorArena a = new TensorArena()) {
            int n = 2, hw = 4, ca = 8, cb = 4, cin = ca + cb, c = 8, groups = 2;
            Tensor xa = OpsTesting.randn(a, 1, Layout.NHWC, n, hw, hw, ca);
            Tensor xb = OpsTesting.randn(a, 2, Layout.NHWC, n, hw, hw, cb);
            Tensor add = OpsTesting.randn(a, 3, Layout.ROWS, n, c);
            Tensor g1 = OpsTesting.randn(a, 4, cin), be1 = OpsTesting.randn(a, 5, cin), g2 = OpsTesting.randn(a, 6, c);
            Tensor be2 = OpsTesting.randn(a, 7, c), b1 = OpsTesting.randn(a, 8, c), b2 = OpsTesting.randn(a, 9, c);
            Tensor w1 = OpsTesting.randn(a, 10, Layout.HWIO, 3, 3, cin, c);
            Tensor ws = OpsTesting.randn(a, 11, Layout.HWIO, 1, 1, cin, c);
            Tensor w2 = OpsTesting.randn(a, 12, Layout.HWIO, 3, 3, c, c);
            Tensor[] one = upOutputs(a, n, hw, cin, c, groups), two = upOutputs(a, n, hw, cin, c, groups);
            CpuOps cpu = new CpuOps(2);
            cpu.resnetBlock2dConcat(xa, xb, add, g1, be1, one[0], one[1], one[2], one[3], w1, b1, one[4], ws, one[5], g2,
                    be2, one[6], one[7], one[8], w2, b2, groups, 1e-5f, one[9]);
            cpu.groupNormConcatConv2d(xa, xb, g1, be1, groups, 1e-5f, true, two[0], two[1], two[2], two[3], w1, b1, 1, 1,
                    two[4], ws, two[5]);
            cpu.groupNormConv2d(two[4], add, g2, be2, groups, 1e-5f, true, two[6], two[7], two[8], w2, b2, two[5], 1, 1,
                    two[9]);
            assertArrayEquals(two[9].toArray(), one[9].toArray(), "the two ops' bits");
            TensorException e = assertThrows(TensorException.class, () -> cpu.resnetBlock2dConcat(xa, xb, add, g1, be1,
                    one[0], one[1], one[2], one[3], w1, b1, one[4], ws, one[5], g2, be2, one[6], one[7], one[8], w2, b2,
                    groups, 1e-5f, one[5]));
            assertTrue(e.getMessage().startsWith("resnetBlock2dConcat: ") && e.getMessage().contains("sc"),
                    e.getMessage());
            TensorException e2 = assertThrows(TensorException.class, () -> cpu.resnetBlock2dConcat(xa, xb, add, g1,
                    be1, one[0], one[1], one[2], one[3], w1, b1, one[4], null, one[5], g2, be2, one[6], one[7], one[8],
                    w2, b2, groups, 1e-5f, one[9]));
            assertTrue(e2.getMessage().startsWith("resnetBlock2dConcat: ") && e2.getMessage().contains("shortcut"),
                    e2.getMessage());
            Tensor wrongW1 = OpsTesting.randn(a, 13, Layout.HWIO, 3, 3, ca, c);  // cat has ca + cb channels
            TensorException e3 = assertThrows(TensorException.class, () -> cpu.resnetBlock2dConcat(xa, xb, add, g1,
                    be1, one[0], one[1], one[2], one[3], wrongW1, b1, one[4], ws, one[5], g2, be2, one[6], one[7],
                    one[8], w2, b2, groups, 1e-5f, one[9]));
            assertTrue(e3.getMessage().startsWith("resnetBlock2dConcat: "), e3.getMessage());
        }
    }

    /** cat, g1, mean1, rstd1, h, sc, g2, mean2, rstd2, y of an up block's op. */
    private static Tensor[] upOutputs(TensorArena a, int n, int hw, int cin, int c, int groups) {
        return new Tensor[] {a.allocate(Layout.NHWC, n, hw, hw, cin), a.allocate(Layout.NHWC, n, hw, hw, cin),
            a.allocate(Layout.ROWS, n, groups), a.allocate(Layout.ROWS, n, groups),
            a.allocate(Layout.NHWC, n, hw, hw, c), a.allocate(Layout.NHWC, n, hw, hw, c),
            a.allocate(Layout.NHWC, n, hw, hw, c), a.allocate(Layout.ROWS, n, groups),
            a.allocate(Layout.ROWS, n, groups), a.allocate(Layout.NHWC, n, hw, hw, c)};
    }
}
