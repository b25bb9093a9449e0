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
 * A whole ResnetBlock2D as one op ({@link ai.onestep.backend.Ops#resnetBlock2d}), which the cuda backend runs as one
 * launch ({@code onestep_resnet_block_typed}, a thread block cluster a sample) at its small levels where the shape's
 * timed choice took it: whole fp16/bf16 U-Net passes against the cpu backend and against the same device with the
 * fusion off, the timed choice's two verdicts (declined: the two ops' bits), and the host backends' two ops. The
 * kernel's own checks against a double reference are in kernels/test/test_resnet.cpp.
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
        return CudaGraphTest.randomNet(UNetConfig.fromMap(cfg), seed);
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
                Tensor x = input(a);
                float[] fused = ConstantFoldingTest.denoise(ops, net, x);
                Map<String, Long> counts = ops.capturedOpCounts().values().iterator().next();
                long blocks = counts.getOrDefault("resnetBlock2d", 0L);
                assertTrue(blocks >= 2, p.label() + ": the mid block's two resnets at least: " + counts);
                assertTrue(ops.device().resnetBlocksFused() >= 2 * blocks, "both runs of the pass: "
                        + ops.device().resnetBlocksFused() + " launches for " + blocks + " blocks");
                assertEquals(0, ops.device().resnetBlocksApart());
                long[] graph = ops.capturedPasses().values().iterator().next();
                for (Device.Choice c : NormConvTest.choices(ops, "resnet,")) {
                    assertTrue(c.config() == 1 && c.verdict().startsWith("one launch faster") && c.shape().contains(
                            ",c=128,g=16,add,biased,"), c.toString());
                }

                float[] cpu = ConstantFoldingTest.denoise(new CpuOps(2), net, x);
                // Measured (emulated): fp16 vs cpu 1.7e-3 and vs the two ops 1.2e-3 (the kernel sums conv1's depth over
                // its warps in another order, and its statistics too); bounds ~2x, as NormConvTest's.
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
                assertFalse(apartCounts.containsKey("resnetBlock2d"), apartCounts.toString());
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
            for (Device.Choice c : NormConvTest.choices(ops, "resnet,")) {
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
}
