package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.Ops;
import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.diffusion.ConsistencyDenoiser;
import ai.onestep.diffusion.ConsistencySampler;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetConfig;
import ai.onestep.nn.Parameter;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Constant folding in captured passes ({@link CudaOps#passConstants}): the U-Net's time path (timestep embedding,
 * its MLP, every block's time projection) depends on the pass's time points and the weights alone, so a captured
 * pass computes it on the host while it is recorded and its graph launches none of it. Checked on the emulated
 * device: the folded graph has exactly the time path's kernels fewer, its results match the unfolded pass and the
 * cpu backend, a multistep pass (two time points in one graph) keeps each point's conditioning apart, and weights
 * the device owns (training state, stale on the host) are never folded.
 */
class ConstantFoldingTest {

    private static CudaOps open(boolean fold) {
        CudaOps ops = new CudaOps(new EmulatedDevice(CudaBackend.emulatedLibrary().toString(), false), 64L << 20, 2,
                Precision.FP32);
        ops.foldConstants(fold);
        return ops;
    }

    /**
     * A folding backend on an emulated device that leaves convolution and GEMM biases to their readers, as cuDNN's and
     * cuBLAS's routes do (so its graphs count the nodes a GPU's would).
     */
    private static CudaOps openCudnnLike(Precision p) {
        CudaOps ops = new CudaOps(new EmulatedDevice(CudaBackend.emulatedLibrary().toString(), false, true), 64L << 20,
                2, p);
        ops.foldConstants(true);
        return ops;
    }

    /** The nodes of the only captured pass of {@code ops}. */
    private static long nodes(CudaOps ops) {
        assertEquals(1, ops.capturedPasses().size(), ops.capturedPasses().keySet().toString());
        return ops.capturedPasses().values().iterator().next()[0];
    }

    /** Three calls of a captured 1-step pass at t = 2.5 (the third a replay); the last result. Shared with UpsampleConvTest. */
    static float[] denoise(Ops ops, UNet net, Tensor x) {
        ops.registerParameters(net.weightTensors());
        try (TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
            Tensor y = a.allocate(Layout.NHWC, x.shape());
            double[] t = new double[x.dim(0)];
            java.util.Arrays.fill(t, 2.5);
            for (int call = 0; call < 3; call++) {
                f.denoise(x, t, null, y);
            }
            return y.toArray();
        }
    }

    private static double relErr(float[] got, float[] want) {
        double num = 0, den = 0;
        for (int i = 0; i < got.length; i++) {
            num += (double) (got[i] - want[i]) * (got[i] - want[i]);
            den += (double) want[i] * want[i];
        }
        return Math.sqrt(num / den);
    }

    @Test
    void theFoldedGraphLeavesOutTheTimePath() {
        EmulatedDeviceTest.require();
        UNetConfig cfg = CudaGraphTest.config(32);  // scale_shift: each block's projection is also split in two
        float[] folded, plain, cpu;
        long foldedNodes, plainNodes;
        int resnets, attentions, upsamplers;
        try (UNet net = CudaGraphTest.randomNet(cfg, 41); TensorArena a = new TensorArena()) {
            Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Noise.gaussian(x, 5, 0);
            resnets = (int) net.parameters().list().stream().filter(p -> p.name().endsWith("time_emb_proj.weight"))
                    .count();
            attentions = (int) net.parameters().list().stream().filter(p -> p.name().endsWith("to_q.weight")).count();
            upsamplers = (int) net.parameters().list().stream()
                    .filter(p -> p.name().endsWith("upsamplers.0.conv.weight")).count();
            try (CudaOps ops = open(true)) {
                folded = denoise(ops, net, x);
                foldedNodes = nodes(ops);
            }
            try (CudaOps ops = open(false)) {
                plain = denoise(ops, net, x);
                plainNodes = nodes(ops);
            }
            cpu = denoise(new CpuOps(2), net, x);
        }
        // The time path's kernels: the sinusoidal embedding, linear_1, SiLU, linear_2, SiLU, and per resnet block
        // its time_emb_proj and the split into scale and shift (the emulated device adds biases in its GEMMs); per
        // attention block two of the q, k, v GEMMs (one against the folded [W_q | W_k | W_v] instead) and the
        // residual add, which to_out.0 takes; and per resnet block the residual add, which conv2 takes (no bias is
        // left pending here, so every block fuses); per upsampler the upsampling, which its convolution takes
        // (one transposed convolution).
        long saved = 5 + 3L * resnets + 3L * attentions + upsamplers;
        assertTrue(attentions > 0 && upsamplers > 0, "the config has attention and an upsampler");
        assertEquals(plainNodes - saved, foldedNodes, "folded " + foldedNodes + " nodes, unfolded " + plainNodes
                + ", " + resnets + " resnet blocks, " + attentions + " attention blocks, " + upsamplers
                + " upsamplers");
        assertTrue(relErr(folded, plain) < 1e-5, "folded vs unfolded: " + relErr(folded, plain));
        assertTrue(relErr(folded, cpu) < 1e-5, "folded vs cpu backend: " + relErr(folded, cpu));
    }

    /**
     * On a device that adds GEMM biases with kernels of their own (cuBLAS), the packed q/k/v GEMM leaves its bias to
     * the attention that reads it (onestep_attention_forward_qkv_typed takes it): the folded pass still matches.
     */
    @Test
    void thePackedProjectionsBiasReachesTheAttention() {
        EmulatedDeviceTest.require();
        try (UNet net = CudaGraphTest.randomNet(CudaGraphTest.config(32), 59); TensorArena a = new TensorArena();
             CudaOps ops = openCudnnLike(Precision.FP32)) {
            Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Noise.gaussian(x, 17, 0);
            float[] folded = denoise(ops, net, x);
            var counts = ops.capturedOpCounts().values().iterator().next();
            long attention = counts.getOrDefault("attention", 0L);
            assertTrue(attention > 0 && counts.get("linear") == attention && counts.get("linearResidual") == attention,
                    "packed: one q/k/v GEMM, and to_out with the residual, per attention block: " + counts);
            assertTrue(ops.biasDeferrals()[0] > ops.biasDeferrals()[1], "biases left to readers");
            float[] cpu = denoise(new CpuOps(2), net, x);
            assertTrue(relErr(folded, cpu) < 1e-5, "folded, biases left to readers, vs cpu: " + relErr(folded, cpu));
        }
    }

    /**
     * The residual add inside conv2 (Ops#conv2dResidual) on a device that leaves biases pending, as cuDNN's route
     * does: blocks with a conv_shortcut run it without its bias and give conv2 the two biases' folded sum, and
     * conv_in and the downsamplers apply their biases themselves (Ops#conv2dBiased), so no residual arrives with a
     * bias pending and every block fuses; every attention block's to_out.0 takes its residual (Ops#linearResidual);
     * no residual add is left; and the sample matches the cpu backend (a lost shortcut bias would not).
     */
    @Test
    void residualAddsJoinConv2AndToOut() {
        EmulatedDeviceTest.require();
        try (UNet net = CudaGraphTest.randomNet(PendingBiasTest.defaultTimeMode(), 61);
             TensorArena a = new TensorArena();
             CudaOps ops = openCudnnLike(Precision.FP32)) {
            Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Noise.gaussian(x, 19, 0);
            long resnets = net.parameters().list().stream().filter(p -> p.name().endsWith("conv2.weight")).count();
            long shortcuts = net.parameters().list().stream().filter(p -> p.name().endsWith("conv_shortcut.weight"))
                    .count();
            long attentions = net.parameters().list().stream().filter(p -> p.name().endsWith("to_q.weight")).count();
            assertTrue(shortcuts > 0 && shortcuts < resnets, "the config has both kinds of shortcut");
            float[] fused = denoise(ops, net, x);
            var counts = ops.capturedOpCounts().values().iterator().next();
            long viaConv = counts.getOrDefault("conv2dResidual", 0L), adds = counts.getOrDefault("add", 0L);
            assertEquals(resnets, viaConv, "every resnet block fuses: " + counts);
            assertEquals(0, adds, "no residual add is left: " + counts);
            assertEquals(attentions, (long) counts.getOrDefault("linearResidual", 0L), "to_out.0 takes the residual: "
                    + counts);
            float[] cpu = denoise(new CpuOps(2), net, x);
            assertTrue(relErr(fused, cpu) < 1e-5, "conv2 with the residual vs cpu: " + relErr(fused, cpu));
        }
        try (CudaOps ops = open(false)) {
            assertTrue(!ops.fusesResidual(), "eager ops do not fuse");
            boolean[] seen = new boolean[1];
            try (TensorArena a = new TensorArena()) {
                Tensor x = a.allocate(Layout.ROWS, 4), y = a.allocate(Layout.ROWS, 4);
                ops.runPass("unfolded", new Tensor[] {x}, new Tensor[] {y}, () -> {
                    seen[0] = ops.fusesResidual();
                    ops.scale(x, 2f, y);
                });
            }
            assertTrue(!seen[0], "a pass that does not fold constants keeps the residual adds apart");
        }
    }

    /**
     * The whole folded fp16 pass on a device that leaves biases pending, as cuDNN's and cuBLAS's routes do: one graph
     * node per backend op. No bias is added in place and nothing is converted apart: c_in x is scaled straight into
     * fp16 (Ops#scaleNetworkInput), every residual joins its convolution or GEMM, and c_skip x + c_out F reads the
     * network's fp16 output with conv_out's bias (onestep_axpby_mixed_typed); the attention (heads of 32, which it
     * runs in the token layout) takes q, k and v's. The sample stays within fp16's precision of the cpu backend.
     */
    @Test
    void aFoldedHalfPassIsOneNodePerOp() {
        EmulatedDeviceTest.require();
        java.util.Map<String, Object> cfg = CudaGraphTest.configMap(32);
        cfg.put("resnet_time_scale_shift", "default");
        try (UNet net = CudaGraphTest.randomNet(UNetConfig.fromMap(cfg), 67);
             TensorArena a = new TensorArena();
             CudaOps ops = openCudnnLike(Precision.FP16)) {
            Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Noise.gaussian(x, 23, 0);
            float[] half = denoise(ops, net, x);
            long[] graph = ops.capturedPasses().values().iterator().next();
            assertEquals(graph[1], graph[0], "graph nodes = backend ops: " + ops.capturedOpCounts());
            float[] cpu = denoise(new CpuOps(2), net, x);
            assertTrue(relErr(half, cpu) < 3e-3, "fp16 folded pass vs cpu: " + relErr(half, cpu));
        }
    }

    @Test
    void aMultistepPassKeepsEachTimePointsConditioning() {
        EmulatedDeviceTest.require();
        double[] taus = {20, 0.8};  // with T = 80: three evaluations, three time points, one graph
        try (UNet net = CudaGraphTest.randomNet(PendingBiasTest.defaultTimeMode(), 43); CudaOps ops = open(true);
             TensorArena a = new TensorArena(); Workspace ws = new Workspace(); Workspace cws = new Workspace()) {
            ops.registerParameters(net.weightTensors());
            Tensor x0 = a.allocate(Layout.NHWC, 2, 8, 8, 2), x = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Noise.gaussian(x0, 9, 0);
            new CpuOps(1).scale(x0, 80f, x0);
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
            for (int call = 0; call < 3; call++) {  // measured, captured, replayed
                x.copyFrom(x0);
                ConsistencySampler.sample(ops, f, x, taus, null, 7, 0, true);
            }
            assertEquals(1, ops.capturedPasses().size(), ops.capturedPasses().keySet().toString());
            Tensor want = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            want.copyFrom(x0);
            CpuOps cpu = new CpuOps(2);
            ConsistencySampler.sample(cpu, new ConsistencyDenoiser(net, cpu, cws), want, taus, null, 7, 0);
            double err = relErr(x.toArray(), want.toArray());
            assertTrue(err < 1e-5, "2-step sample in one folded graph vs cpu backend: " + err);
        }
    }

    /**
     * Registered weights updated by an eager op: graphs read them in place and replay with the new values, but a
     * graph that folded work on them holds the old results, so it is dropped and the next calls capture anew.
     */
    @Test
    void anEagerWeightUpdateDropsTheGraphsThatFoldedIt() {
        EmulatedDeviceTest.require();
        try (UNet net = CudaGraphTest.randomNet(PendingBiasTest.defaultTimeMode(), 53); CudaOps ops = open(true);
             TensorArena a = new TensorArena(); Workspace ws = new Workspace(); Workspace cws = new Workspace()) {
            Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 2), y = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Noise.gaussian(x, 13, 0);
            ops.registerParameters(net.weightTensors());
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
            for (int call = 0; call < 3; call++) {
                f.denoise(x, new double[] {2.5, 2.5}, null, y);
            }
            assertEquals(1, ops.capturedPasses().size());
            for (Parameter p : net.parameters()) {
                // The time path's weights, and a shortcut's bias (folded into conv2's, where conv2 takes the residual).
                if (p.name().contains("time_emb") || p.name().endsWith("conv_shortcut.bias")) {
                    ops.scale(p.value(), 0.5f, p.value());  // eager: the registered copy is refreshed in place
                }
            }
            assertEquals(0, ops.capturedPasses().size(), "the folded graph is dropped");
            Tensor want = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            CpuOps cpu = new CpuOps(2);
            new ConsistencyDenoiser(net, cpu, cws).denoise(x, new double[] {2.5, 2.5}, null, want);
            for (int call = 0; call < 3; call++) {  // measured, captured again, replayed
                f.denoise(x, new double[] {2.5, 2.5}, null, y);
                double err = relErr(y.toArray(), want.toArray());
                assertTrue(err < 1e-5, "call " + call + " after the update vs cpu backend: " + err);
            }
            assertEquals(1, ops.capturedPasses().size());
        }
    }

    /**
     * Host data freed inside a pass and new data at the same addresses (the U-Net frees its least recently used
     * conditioning when a pass evaluates more than 64 time points): the pass reads the new values, not the
     * constant it uploaded from the old ones. The memory is kept by a backing arena, and each view of it has a
     * scope of its own, so the address reuse is certain.
     */
    @Test
    void aFreedConstantsAddressHoldsNewData() {
        EmulatedDeviceTest.require();
        try (CudaOps ops = open(true); java.lang.foreign.Arena backing = java.lang.foreign.Arena.ofConfined();
             TensorArena a = new TensorArena()) {
            java.lang.foreign.MemorySegment memory = backing.allocate(16 * Float.BYTES, 64);
            Tensor x = a.allocate(Layout.ROWS, 16), y1 = a.allocate(Layout.ROWS, 16), y2 = a.allocate(Layout.ROWS, 16);
            ops.runPass("reuse", new Tensor[] {x}, new Tensor[] {y1, y2}, () -> {
                java.lang.foreign.Arena first = java.lang.foreign.Arena.ofConfined();
                Tensor old = Tensor.wrap(memory.reinterpret(first, null), Layout.ROWS, 16);
                old.segment().fill((byte) 0);
                for (int i = 0; i < 16; i++) {
                    old.set(i, i);
                }
                ops.add(x, old, y1);
                first.close();  // freed: the next data at these addresses is new
                try (java.lang.foreign.Arena second = java.lang.foreign.Arena.ofConfined()) {
                    Tensor fresh = Tensor.wrap(memory.reinterpret(second, null), Layout.ROWS, 16);
                    for (int i = 0; i < 16; i++) {
                        fresh.set(i, 100 + i);
                    }
                    ops.add(x, fresh, y2);
                }
            });
            for (int i = 0; i < 16; i++) {
                assertEquals(i, y1.get(i), "the first data");
                assertEquals(100 + i, y2.get(i), "element " + i + ": the new data, not the freed constant");
            }
        }
    }

    @Test
    void foldsOnlyInCapturedPassesOnWeightsTheHostHolds() {
        EmulatedDeviceTest.require();
        try (CudaOps ops = open(true); TensorArena a = new TensorArena()) {
            Tensor w = a.allocate(Layout.ROWS, 4), x = a.allocate(Layout.ROWS, 4), y = a.allocate(Layout.ROWS, 4);
            List<Tensor> reads = List.of(w);
            Ops[] seen = new Ops[1];
            assertSame(ops, ops.passConstants(reads), "eager ops: no pass to fold into");
            ops.runPass("fold", new Tensor[] {x}, new Tensor[] {y}, () -> {
                seen[0] = ops.passConstants(reads);
                ops.scale(x, 2f, y);
            });
            assertNotSame(ops, seen[0], "inside a pass: the host backend");
            assertEquals("cpu", seen[0].name());
            ops.runResident("resident", new Tensor[] {y}, () -> {
                seen[0] = ops.passConstants(reads);
                ops.scale(x, 2f, y);
            });
            assertSame(ops, seen[0], "resident blocks (training) are not captured");
            ops.adopt(List.of(w));
            ops.runPass("owned", new Tensor[] {x}, new Tensor[] {y}, () -> {
                seen[0] = ops.passConstants(reads);
                ops.scale(x, 2f, y);
            });
            assertSame(ops, seen[0], "a weight the device owns is stale on the host");
            ops.release(List.of(w));
            ops.foldConstants(false);
            ops.runPass("off", new Tensor[] {x}, new Tensor[] {y}, () -> {
                seen[0] = ops.passConstants(reads);
                ops.scale(x, 2f, y);
            });
            assertSame(ops, seen[0], "folding turned off");
        }
    }

    /**
     * Weights adopted by the device and changed there (an optimizer step): a pass must see the device's values,
     * so their time path stays on the device (the host copies are stale until synced).
     */
    @Test
    void passesOnOwnedWeightsSeeTheDevicesValues() {
        EmulatedDeviceTest.require();
        try (UNet net = CudaGraphTest.randomNet(PendingBiasTest.defaultTimeMode(), 47); CudaOps ops = open(true);
             TensorArena a = new TensorArena(); Workspace ws = new Workspace(); Workspace cws = new Workspace()) {
            List<Tensor> values = net.parameters().list().stream().map(Parameter::value).toList();
            ops.adopt(values);
            for (Tensor v : values) {
                ops.scale(v, 1.5f, v);  // on the device only: the host keeps the old weights
            }
            Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 2), y = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Noise.gaussian(x, 11, 0);
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
            for (int call = 0; call < 3; call++) {
                f.denoise(x, new double[] {2.5, 2.5}, null, y);
            }
            ops.release(values);  // the device's weights back on the host
            Tensor want = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            CpuOps cpu = new CpuOps(2);
            new ConsistencyDenoiser(net, cpu, cws).denoise(x, new double[] {2.5, 2.5}, null, want);
            double err = relErr(y.toArray(), want.toArray());
            assertTrue(err < 1e-5, "pass on adopted, device-changed weights vs cpu backend on them: " + err);
        }
    }
}
