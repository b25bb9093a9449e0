package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.OpsTesting;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetConfig;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * Biases left to their readers ({@link Residency#deferBias}): where a device spends a kernel of its own on a
 * convolution's or linear's bias (cuDNN, cuBLAS), a pass writes the result without it, a group norm or residual
 * add that reads the result adds it on the fly, and any other reader adds it in place first. Checked on an
 * emulated device that reports its biases as separate (its portable kernels then run without them, so a bias lost
 * on the way shows): every result has the plain route's bits in fp32 and stays close in fp16, where the fused ops
 * round once fewer.
 */
class PendingBiasTest {

    /** CudaGraphTest's small U-Net (attention, skip concatenations, samplers) in diffusers' default time mode. */
    static UNetConfig defaultTimeMode() {
        Map<String, Object> m = CudaGraphTest.configMap(16);
        m.put("resnet_time_scale_shift", "default");
        return UNetConfig.fromMap(m);
    }

    private static CudaOps open(boolean separateBias, Precision p) {
        CudaOps ops = new CudaOps(new EmulatedDevice(CudaBackend.emulatedLibrary().toString(), false, separateBias),
                64L << 20, 2, p);
        // Unfolded: the eager weight update after the last round would drop a folded graph (ConstantFoldingTest),
        // and these tests read what the last graph left out.
        ops.foldConstants(false);
        return ops;
    }

    /** Three calls of a captured consistency pass, weights changed by an eager op between (KrscWeightsTest's). */
    private static float[] run(CudaOps ops, UNet net) {
        return KrscWeightsTest.run(ops, net);
    }

    @Test
    void uNetPassesTakingBiasesGiveThePlainBits() {
        EmulatedDeviceTest.require();
        float[] plain, taking;
        long[] plainCounts, counts;
        long saved = 0;
        try (UNet net = CudaGraphTest.randomNet(defaultTimeMode(), 23); CudaOps ops = open(false, Precision.FP32)) {
            plain = run(ops, net);
            plainCounts = ops.biasDeferrals();
        }
        try (UNet net = CudaGraphTest.randomNet(defaultTimeMode(), 23); CudaOps ops = open(true, Precision.FP32)) {
            taking = run(ops, net);
            counts = ops.biasDeferrals();
            for (long[] g : ops.capturedPasses().values()) {
                saved += g[2];
            }
            assertEquals(1, ops.capturedPasses().size(), ops.capturedPasses().keySet().toString());
        }
        assertArrayEquals(plain, taking, "fp32: the same bits with biases left to readers");
        assertArrayEquals(new long[] {0, 0}, plainCounts, "a device that adds its biases itself defers none");
        assertTrue(counts[0] > counts[1] && counts[1] > 0, "deferred " + counts[0] + ", added in place " + counts[1]
                + ": readers took some and added others (skip connections, the time embedding's SiLU)");
        assertTrue(saved > 0, "the captured graph left out bias kernels: " + saved);
    }

    @Test
    void halfPrecisionStaysClose() {
        EmulatedDeviceTest.require();
        float[] plain, taking;
        try (UNet net = CudaGraphTest.randomNet(defaultTimeMode(), 29); CudaOps ops = open(false, Precision.FP16)) {
            plain = run(ops, net);
        }
        try (UNet net = CudaGraphTest.randomNet(defaultTimeMode(), 29); CudaOps ops = open(true, Precision.FP16)) {
            taking = run(ops, net);
        }
        double maxDiff = 0, maxAbs = 0;
        for (int i = 0; i < plain.length; i++) {
            maxDiff = Math.max(maxDiff, Math.abs(plain[i] - taking[i]));
            maxAbs = Math.max(maxAbs, Math.abs(plain[i]));
        }
        // One fp16 rounding fewer per fused op (the biased sum stays fp32 inside the kernel): differences of a few
        // fp16 ulps of the activations, far below what a lost bias (an O(0.3) shift per channel here) would make.
        assertTrue(maxDiff <= 1e-2 * maxAbs, "fp16: max difference " + maxDiff + " of max |value| " + maxAbs);
    }

    /**
     * Every kind of reader on a hand-written pass: a group norm takes the conv's bias, and the linear's through its
     * add operand; a residual add takes it from both operands (the same tensor twice), a concat from its second
     * input and a concatenating group norm from its first; a scale adds it in place
     * first; a tensor overwritten whole drops it; and the conv that writes a pass output never defers (outputs are
     * copied out after the pass).
     */
    @Test
    void everyReaderSeesTheBias() {
        EmulatedDeviceTest.require();
        float[][] got = new float[2][];
        long[][] counts = new long[2][];
        for (int k = 0; k < 2; k++) {
            try (CudaOps ops = open(k == 1, Precision.FP32); TensorArena a = new TensorArena();
                 Workspace ws = new Workspace()) {
                Tensor x = a.allocate(Layout.NHWC, 2, 4, 4, 8), t = a.allocate(Layout.ROWS, 2, 6);
                Noise.gaussian(x, 3, 0);
                Noise.gaussian(t, 4, 0);
                Tensor w = OpsTesting.randn(a, 5, Layout.HWIO, 3, 3, 8, 8), b = OpsTesting.randn(a, 6, 8);
                Tensor lw = OpsTesting.randn(a, 7, 6, 8), lb = OpsTesting.randn(a, 8, 8);
                Tensor gamma = OpsTesting.randn(a, 9, 8), beta = OpsTesting.randn(a, 10, 8);
                Tensor o1 = a.allocate(Layout.NHWC, 2, 4, 4, 8), o2 = a.allocate(Layout.NHWC, 2, 4, 4, 8);
                Tensor o3 = a.allocate(Layout.NHWC, 2, 4, 4, 8), o4 = a.allocate(Layout.NHWC, 2, 4, 4, 8);
                Tensor o5 = a.allocate(Layout.NHWC, 2, 4, 4, 8), o6 = a.allocate(Layout.NHWC, 2, 4, 4, 16);
                Tensor o7 = a.allocate(Layout.NHWC, 2, 4, 4, 16), o8 = a.allocate(Layout.NHWC, 2, 4, 4, 16);
                Tensor gamma2 = OpsTesting.randn(a, 11, 16), beta2 = OpsTesting.randn(a, 12, 16);
                float[] all = new float[0];
                for (int call = 0; call < 3; call++) {
                    ops.runPass("readers", new Tensor[] {x, t}, new Tensor[] {o1, o2, o3, o4, o5, o6, o7, o8}, () -> {
                        ws.reset();
                        Tensor h = ws.allocate(Layout.NHWC, 2, 4, 4, 8), p = ws.allocate(Layout.ROWS, 2, 8);
                        ops.conv2d(x, w, b, 1, 1, h);
                        ops.linear(t, lw, lb, p);
                        Tensor mean = ws.allocate(Layout.ROWS, 2, 4), rstd = ws.allocate(Layout.ROWS, 2, 4);
                        ops.groupNorm(h, p, gamma, beta, null, null, 4, 1e-5f, true, o1, mean, rstd);
                        ops.add(h, h, o2);
                        ops.concatChannels(x, h, o6);   // a skip connection takes it too
                        Tensor m2 = ws.allocate(Layout.ROWS, 2, 4), r2 = ws.allocate(Layout.ROWS, 2, 4);
                        ops.groupNormConcat(h, x, gamma2, beta2, 4, 1e-5f, true, o7, o8, m2, r2);  // and an up block's norm1
                        ops.scale(h, 0.5f, o3);
                        Tensor dead = ws.allocate(Layout.NHWC, 2, 4, 4, 8);
                        ops.conv2d(o1, w, b, 1, 1, dead);
                        ops.silu(x, dead);            // overwritten whole: its pending bias must not reach o4
                        ops.add(dead, o3, o4);
                        ops.conv2d(x, w, b, 1, 1, o5);  // a pass output
                    });
                    float[] v = concat(o1.toArray(), o2.toArray(), o3.toArray(), o4.toArray(), o5.toArray(),
                            o6.toArray(), o7.toArray(), o8.toArray());
                    all = concat(all, v);
                }
                got[k] = all;
                counts[k] = ops.biasDeferrals();
            }
        }
        assertArrayEquals(got[0], got[1], "every reader, with and without pending biases");
        // Each run: conv h, linear p and conv dead deferred (the output conv not); only the scale's read of h added
        // one in place (o1 and o2 took theirs, dead's died).
        assertTrue(counts[1][1] > 0 && counts[1][0] == 3 * counts[1][1], "deferred " + counts[1][0]
                + ", added in place " + counts[1][1]);
        assertArrayEquals(new long[] {0, 0}, counts[0], "the plain device defers nothing");
    }

    /**
     * The attention reader: the q, k and v projections (cuBLAS GEMMs on a GPU) leave their biases pending and the
     * fused attention adds them as it reads its inputs. The same bits as adding them first in fp32, close in fp16,
     * and none of the three added in place.
     */
    @Test
    void attentionTakesTheProjectionsBiases() {
        EmulatedDeviceTest.require();
        for (Precision p : new Precision[] {Precision.FP32, Precision.FP16}) {
            float[][] got = new float[2][];
            long[][] counts = new long[2][];
            for (int k = 0; k < 2; k++) {
                try (CudaOps ops = open(k == 1, p); TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
                    Tensor x = OpsTesting.randn(a, 11, 2, 13, 64), o = a.allocate(2, 13, 64);
                    Tensor[] w = new Tensor[3], b = new Tensor[3];
                    for (int i = 0; i < 3; i++) {
                        w[i] = OpsTesting.randn(a, 12 + i, 64, 64);
                        b[i] = OpsTesting.randn(a, 15 + i, 64);
                    }
                    float[] all = new float[0];
                    for (int call = 0; call < 3; call++) {
                        ops.runPass("attention", new Tensor[] {x}, new Tensor[] {o}, () -> {
                            ws.reset();
                            Tensor[] qkv = new Tensor[3];
                            for (int i = 0; i < 3; i++) {
                                qkv[i] = ws.allocate(Layout.ROWS, 2, 13, 64);
                                ops.linear(x, w[i], b[i], qkv[i]);
                            }
                            ops.attention(qkv[0], qkv[1], qkv[2], 2, o, ws.allocate(Layout.ROWS, 2, 2, 13));
                        });
                        all = concat(all, o.toArray());
                    }
                    got[k] = all;
                    counts[k] = ops.biasDeferrals();
                }
            }
            if (p == Precision.FP32) {
                assertArrayEquals(got[0], got[1], "fp32: the attention's biased reads give the plain bits");
            } else {
                double maxDiff = 0, maxAbs = 0;
                for (int i = 0; i < got[0].length; i++) {
                    maxDiff = Math.max(maxDiff, Math.abs(got[0][i] - got[1][i]));
                    maxAbs = Math.max(maxAbs, Math.abs(got[0][i]));
                }
                // The fused reads round each sum to fp16 once, as the bias add did: only the run-to-run
                // differences of the rest of the pass remain.
                assertTrue(maxDiff <= 1e-2 * maxAbs, "fp16: max difference " + maxDiff + " of " + maxAbs);
            }
            assertArrayEquals(new long[] {9, 0}, counts[1], p + ": three projections deferred per call, none added "
                    + "in place");
        }
    }

    /**
     * The denoiser output c_skip x + c_out F at the end of a 16-bit pass: x is fp32 and F the last convolution's
     * 16-bit output, its bias pending on a cuDNN-like device. One launch reads both (onestep_axpby_mixed_typed, the
     * bits of the bias add, the conversion and the fp32 axpby; test_typed checks those bits), so the graph holds
     * the input's conversion, the convolution and the axpby, where it held two kernels more; and the result
     * matches the cpu backend to fp16's precision.
     */
    @Test
    void theDenoiserOutputReadsTheHalfOutputAndItsBias() {
        EmulatedDeviceTest.require();
        for (boolean separate : new boolean[] {false, true}) {
            try (CudaOps ops = open(separate, Precision.FP16); TensorArena a = new TensorArena();
                 Workspace ws = new Workspace()) {
                Tensor in = OpsTesting.randn(a, 31, Layout.NHWC, 2, 5, 5, 8);
                Tensor x = OpsTesting.randn(a, 32, Layout.NHWC, 2, 5, 5, 3), y = a.allocate(Layout.NHWC, 2, 5, 5, 3);
                Tensor w = OpsTesting.randn(a, 33, Layout.HWIO, 3, 3, 8, 3), b = OpsTesting.randn(a, 34, 3);
                EmulatedDeviceTest.runPassThrice(ops, "denoiser output", new Tensor[] {in, x}, new Tensor[] {y}, ws,
                        () -> {
                            Tensor f = ws.allocate(Layout.NHWC, 2, 5, 5, 3);
                            ops.conv2d(in, w, b, 1, 1, f);
                            ops.axpby(0.5f, x, 2f, f, y);
                        });
                long[] graph = ops.capturedPasses().values().iterator().next();
                assertEquals(3, graph[0], (separate ? "bias pending: " : "") + "in's conversion, conv and axpby");
                Tensor f = a.allocate(Layout.NHWC, 2, 5, 5, 3), want = a.allocate(Layout.NHWC, 2, 5, 5, 3);
                OpsTesting.CPU.conv2d(in, w, b, 1, 1, f);
                OpsTesting.CPU.axpby(0.5f, x, 2f, f, want);
                double err = OpsTesting.relErr(y.toArray(), want.toArray());
                assertTrue(err < 2e-3, "fp16 pass vs cpu: " + err);
            }
        }
    }

    /**
     * A residual that arrives with a bias pending (a convolution's result on a cuDNN-like device) keeps the
     * convolution and the add, which takes the bias, instead of fusing: the same values as the cpu backend, and
     * no conv2dResidual in the graph. A convolution through conv2dBiased leaves nothing pending, and the residual
     * op that reads its result fuses.
     */
    @Test
    void aResidualWithAPendingBiasKeepsTheAdd() {
        EmulatedDeviceTest.require();
        for (boolean biased : new boolean[] {false, true}) {
            try (CudaOps ops = open(true, Precision.FP32); TensorArena a = new TensorArena();
                 Workspace ws = new Workspace()) {
                ops.foldConstants(true);  // (fusesResidual is the folding passes')
                Tensor x = OpsTesting.randn(a, 41, Layout.NHWC, 2, 5, 5, 8), y = a.allocate(Layout.NHWC, 2, 5, 5, 8);
                Tensor w1 = OpsTesting.randn(a, 42, Layout.HWIO, 3, 3, 8, 8), b1 = OpsTesting.randn(a, 43, 8);
                Tensor w2 = OpsTesting.randn(a, 44, Layout.HWIO, 3, 3, 8, 8), b2 = OpsTesting.randn(a, 45, 8);
                boolean[] fuses = new boolean[1];
                EmulatedDeviceTest.runPassThrice(ops, "residual", new Tensor[] {x}, new Tensor[] {y}, ws, () -> {
                    fuses[0] = ops.fusesResidual();
                    Tensor h = ws.allocate(Layout.NHWC, 2, 5, 5, 8);
                    if (biased) {
                        ops.conv2dBiased(x, w1, b1, 1, 1, h);
                    } else {
                        ops.conv2d(x, w1, b1, 1, 1, h);
                    }
                    ops.conv2dResidual(x, w2, b2, h, 1, 1, y);
                });
                assertTrue(fuses[0], "a folding pass on a fusing device");
                var counts = ops.capturedOpCounts().values().iterator().next();
                assertEquals(biased ? 1L : 0L, (long) counts.getOrDefault("conv2dResidual", 0L), counts.toString());
                assertEquals(biased ? 0L : 1L, (long) counts.getOrDefault("add", 0L), counts.toString());
                Tensor h = a.allocate(Layout.NHWC, 2, 5, 5, 8), want = a.allocate(Layout.NHWC, 2, 5, 5, 8);
                OpsTesting.CPU.conv2d(x, w1, b1, 1, 1, h);
                OpsTesting.CPU.conv2d(x, w2, b2, 1, 1, want);
                OpsTesting.CPU.add(h, want, want);
                double err = OpsTesting.relErr(y.toArray(), want.toArray());
                assertTrue(err < 1e-5, (biased ? "biased" : "pending") + " residual vs cpu: " + err);
            }
        }
    }

    private static float[] concat(float[]... parts) {
        int n = 0;
        for (float[] p : parts) {
            n += p.length;
        }
        float[] out = new float[n];
        int at = 0;
        for (float[] p : parts) {
            System.arraycopy(p, 0, out, at, p.length);
            at += p.length;
        }
        return out;
    }
}
