package ai.onestep.backend.cuda;

import static ai.onestep.kernels.OnestepKernels.onestep_groupnorm_forward;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import ai.onestep.backend.OpsTesting;
import ai.onestep.kernels.OnestepKernels;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The CUDA backend's own logic against the emulated kernel library (kernels/emu, built by cmake): device arena,
 * each op's launch sequence against the CPU backend, errors. {@link CudaGraphTest} covers passes and graphs.
 * Skips (with the reason) when the emulated library or the JNI bindings were not built, unless
 * {@code -Donestep.cuda.requireEmulated=true} (bin/test sets it when it built them) makes that a failure.
 */
class EmulatedDeviceTest {
    static CudaOps ops;
    static String unavailable;

    static CudaOps open() {
        if (ops == null && unavailable == null) {
            try {
                ops = CudaBackend.openEmulated(CudaBackend.emulatedLibrary(), 64L << 20, 2);
            } catch (CudaBackend.Unavailable e) {
                unavailable = e.getMessage();
            }
        }
        return ops;
    }

    /** Skips the calling test when the emulated backend is not there (fails instead when it is required). */
    static CudaOps require() {
        CudaOps o = open();
        if (o == null && Boolean.getBoolean("onestep.cuda.requireEmulated")) {
            fail("the emulated CUDA backend is required but did not open: " + unavailable);
        }
        assumeTrue(o != null, "emulated CUDA backend not available: " + unavailable);
        return o;
    }

    /**
     * Runs a hand-written pass three times, as repeated calls of one key do (measured, then captured, then replayed),
     * each time with {@code ws} rewound before the body.
     */
    static void runPassThrice(CudaOps ops, String key, Tensor[] inputs, Tensor[] outputs, Workspace ws,
                              Runnable body) {
        for (int call = 0; call < 3; call++) {
            ops.runPass(key, inputs, outputs, () -> {
                ws.reset();
                body.run();
            });
        }
    }

    @BeforeAll
    static void openOnce() {
        open();
    }

    @AfterAll
    static void closeDown() {
        // The backend stays open for CudaGraphTest in the same JVM; the JVM's exit frees it.
    }

    @BeforeEach
    void needsBackend() {
        require();
    }

    @Test
    void arenaAlignsRewindsAndReportsOutOfMemory() {
        try (DeviceArena a = new DeviceArena(ops.device(), "test", 4096)) {
            long p1 = a.allocate(4, "one float");
            long p2 = a.allocate(300, "300 bytes");
            long p3 = a.allocate(1, "one byte");
            assertEquals(0, p1 % DeviceArena.ALIGN);
            assertEquals(p1 + 256, p2);
            assertEquals(p2 + 512, p3);
            assertEquals(1024, a.used());
            a.reset();
            assertEquals(p1, a.allocate(8, "again"), "after reset the first slice is handed out again");
            CudaException e = assertThrows(CudaException.class, () -> a.allocate(8000, "conv2d output [1, 40, 50, 1]"));
            assertTrue(e.getMessage().contains("out of memory") && e.getMessage().contains("conv2d output [1, 40, 50, 1]")
                    && e.getMessage().contains("256 of 4096"), e.getMessage());
            assertEquals(4096, a.capacity());
        }
    }

    @Test
    void dataRoundTripsThroughDeviceMemory() {
        try (TensorArena h = new TensorArena(); DeviceArena a = new DeviceArena(ops.device(), "copy", 1 << 16)) {
            Tensor x = OpsTesting.randn(h, 1, 1000);
            Tensor y = h.allocate(1000);
            long d1 = a.allocate(4000, "x"), d2 = a.allocate(4000, "y");
            ops.device().upload(d1, x.segment(), 4000, () -> "x");
            ops.device().copy(d2, d1, 4000, () -> "x");
            ops.device().download(y.segment(), d2, 4000, () -> "y");
            assertArrayEquals(x.toArray(), y.toArray());
        }
    }

    private static void close(String what, Tensor got, Tensor want) {
        OpsTesting.assertClose(what + " on " + ops.name() + " vs cpu", got, want, 1e-5);
    }

    @Test
    void denseLayersMatchTheCpuBackend() {
        try (TensorArena h = new TensorArena()) {
            // matmul in all four transpose combinations, with beta = 0 over NaN and beta != 0.
            for (int f = 0; f < 4; f++) {
                boolean ta = (f & 1) != 0, tb = (f & 2) != 0;
                int m = 13, n = 7, k = 19;
                Tensor a = ta ? OpsTesting.randn(h, 2 + f, k, m) : OpsTesting.randn(h, 2 + f, m, k);
                Tensor b = tb ? OpsTesting.randn(h, 9 + f, n, k) : OpsTesting.randn(h, 9 + f, k, n);
                Tensor c0 = OpsTesting.randn(h, 20 + f, m, n);
                Tensor c1 = h.copyOf(c0), c2 = h.copyOf(c0);
                ops.matmul(a, ta, b, tb, c1, 0.5f, 0.25f);
                OpsTesting.CPU.matmul(a, ta, b, tb, c2, 0.5f, 0.25f);
                close("matmul trans " + ta + "/" + tb, c1, c2);
                c1.fill(Float.NaN);
                ops.matmul(a, ta, b, tb, c1, 1f, 0f);
                OpsTesting.CPU.matmul(a, ta, b, tb, c2, 1f, 0f);
                close("matmul beta 0", c1, c2);
            }
            Tensor x = OpsTesting.randn(h, 3, 2, 5, 24);
            Tensor w = OpsTesting.randn(h, 4, 24, 33);
            Tensor bias = OpsTesting.randn(h, 5, 33);
            Tensor y1 = h.allocate(2, 5, 33), y2 = h.allocate(2, 5, 33);
            ops.linear(x, w, bias, y1);
            OpsTesting.CPU.linear(x, w, bias, y2);
            close("linear", y1, y2);
            // conv2d: 3x3 pad 1, stride 2 pad 1 (downsample), 1x1 without bias; ragged sizes.
            int[][] cases = {{3, 1, 1, 1}, {3, 2, 1, 1}, {1, 1, 0, 0}};
            for (int[] cs : cases) {
                int kk = cs[0], stride = cs[1], pad = cs[2];
                Tensor xi = OpsTesting.randn(h, 6, Layout.NHWC, 2, 9, 7, 5);
                Tensor wi = OpsTesting.randn(h, 7, Layout.HWIO, kk, kk, 5, 6);
                Tensor bi = cs[3] == 1 ? OpsTesting.randn(h, 8, 6) : null;
                int[] os = ai.onestep.backend.Ops.convOutputShape(xi, wi, stride, pad);
                Tensor o1 = h.allocate(Layout.NHWC, os), o2 = h.allocate(Layout.NHWC, os);
                ops.conv2d(xi, wi, bi, stride, pad, o1);
                OpsTesting.CPU.conv2d(xi, wi, bi, stride, pad, o2);
                close("conv2d " + kk + "x" + kk + " stride " + stride, o1, o2);
            }
        }
    }

    @Test
    void normAttentionAndElementwiseOpsMatchTheCpuBackend() {
        try (TensorArena h = new TensorArena()) {
            Tensor x = OpsTesting.randn(h, 11, Layout.NHWC, 2, 5, 3, 16);
            Tensor g = OpsTesting.randn(h, 12, 16), b = OpsTesting.randn(h, 13, 16);
            Tensor sc = OpsTesting.randn(h, 14, 2, 16), sh = OpsTesting.randn(h, 15, 2, 16);
            for (boolean silu : new boolean[] {false, true}) {
                Tensor y1 = h.allocate(Layout.NHWC, 2, 5, 3, 16), y2 = h.allocate(Layout.NHWC, 2, 5, 3, 16);
                Tensor m1 = h.allocate(2, 4), r1 = h.allocate(2, 4), m2 = h.allocate(2, 4), r2 = h.allocate(2, 4);
                ops.groupNorm(x, g, b, silu ? sc : null, silu ? sh : null, 4, 1e-5f, silu, y1, m1, r1);
                OpsTesting.CPU.groupNorm(x, g, b, silu ? sc : null, silu ? sh : null, 4, 1e-5f, silu, y2, m2, r2);
                close("groupNorm silu=" + silu, y1, y2);
                close("groupNorm mean", m1, m2);
                close("groupNorm rstd", r1, r2);
            }
            // attention: 2 heads of 32 (the fused kernel), 13 tokens.
            Tensor q = OpsTesting.randn(h, 21, 2, 13, 64), k = OpsTesting.randn(h, 22, 2, 13, 64);
            Tensor v = OpsTesting.randn(h, 23, 2, 13, 64);
            Tensor o1 = h.allocate(2, 13, 64), o2 = h.allocate(2, 13, 64);
            Tensor l1 = h.allocate(2, 2, 13), l2 = h.allocate(2, 2, 13);
            ops.attention(q, k, v, 2, o1, l1);
            OpsTesting.CPU.attention(q, k, v, 2, o2, l2);
            close("attention", o1, o2);
            close("attention lse", l1, l2);
            // the same from one packed projection (N, T, 3C): its kernel reads the thirds in place
            Tensor qkv = h.allocate(2, 13, 192);
            for (int i = 0; i < 2 * 13; i++) {
                for (int j = 0; j < 64; j++) {
                    qkv.set(i * 192L + j, q.get(i * 64L + j));
                    qkv.set(i * 192L + 64 + j, k.get(i * 64L + j));
                    qkv.set(i * 192L + 128 + j, v.get(i * 64L + j));
                }
            }
            assertTrue(ops.packsQkv(32) && !ops.packsQkv(40), "packs heads of 32, 64, 128");
            long packedBefore = ops.deviceOps();
            ops.attentionPacked(qkv, 2, o1, l1);
            assertEquals(packedBefore + 1, ops.deviceOps(), "attentionPacked runs on the device");
            close("attentionPacked", o1, o2);
            close("attentionPacked lse", l1, l2);

            Tensor a = OpsTesting.randn(h, 31, 3, 7), c = OpsTesting.randn(h, 32, 3, 7);
            Tensor r1 = h.allocate(3, 7), r2 = h.allocate(3, 7);
            ops.add(a, c, r1);
            OpsTesting.CPU.add(a, c, r2);
            close("add", r1, r2);
            ops.mul(a, c, r1);
            OpsTesting.CPU.mul(a, c, r2);
            close("mul", r1, r2);
            ops.scale(a, -1.5f, r1);
            OpsTesting.CPU.scale(a, -1.5f, r2);
            close("scale", r1, r2);
            ops.axpy(0.3f, c, r1);
            OpsTesting.CPU.axpy(0.3f, c, r2);
            close("axpy", r1, r2);
            ops.axpby(0.3f, a, -1.7f, c, r1);
            OpsTesting.CPU.axpby(0.3f, a, -1.7f, c, r2);
            assertArrayEquals(r2.toArray(), r1.toArray(), "axpby rounds as fma(b, z, a x) on both backends");
            ops.silu(a, r1);
            OpsTesting.CPU.silu(a, r2);
            close("silu", r1, r2);
            ops.siluBackward(a, c, r1);
            OpsTesting.CPU.siluBackward(a, c, r2);
            close("siluBackward", r1, r2);
            ops.scale(r1, 2f, r1);  // in place
            OpsTesting.CPU.scale(r2, 2f, r2);
            close("scale in place", r1, r2);

            Tensor pv = OpsTesting.randn(h, 33, 2, 16);
            Tensor p1 = h.allocate(Layout.NHWC, 2, 5, 3, 16), p2 = h.allocate(Layout.NHWC, 2, 5, 3, 16);
            ops.addPerChannel(x, pv, p1);
            OpsTesting.CPU.addPerChannel(x, pv, p2);
            close("addPerChannel", p1, p2);
            Tensor x2 = OpsTesting.randn(h, 34, Layout.NHWC, 2, 5, 3, 7);
            Tensor cc1 = h.allocate(Layout.NHWC, 2, 5, 3, 23), cc2 = h.allocate(Layout.NHWC, 2, 5, 3, 23);
            ops.concatChannels(x, x2, cc1);
            OpsTesting.CPU.concatChannels(x, x2, cc2);
            close("concatChannels", cc1, cc2);
            Tensor cg = OpsTesting.randn(h, 35, 23), cbe = OpsTesting.randn(h, 36, 23);
            Tensor cy1 = h.allocate(Layout.NHWC, 2, 5, 3, 23), cy2 = h.allocate(Layout.NHWC, 2, 5, 3, 23);
            Tensor cm1 = h.allocate(2, 1), cm2 = h.allocate(2, 1), cr1 = h.allocate(2, 1), cr2 = h.allocate(2, 1);
            Tensor cc3 = h.allocate(Layout.NHWC, 2, 5, 3, 23);
            ops.groupNormConcat(x, x2, cg, cbe, 1, 1e-5f, true, cc3, cy1, cm1, cr1);
            OpsTesting.CPU.groupNormConcat(x, x2, cg, cbe, 1, 1e-5f, true, cc2, cy2, cm2, cr2);
            assertArrayEquals(cc2.toArray(), cc3.toArray(), "groupNormConcat's concatenation");
            close("groupNormConcat", cy1, cy2);
            close("groupNormConcat mean", cm1, cm2);
            close("groupNormConcat rstd", cr1, cr2);
            Tensor u1 = h.allocate(Layout.NHWC, 2, 10, 6, 16), u2 = h.allocate(Layout.NHWC, 2, 10, 6, 16);
            Tensor sa1 = h.allocate(Layout.NHWC, 2, 5, 3, 16), sb1 = h.allocate(Layout.NHWC, 2, 5, 3, 7);
            Tensor sa2 = h.allocate(Layout.NHWC, 2, 5, 3, 16), sb2 = h.allocate(Layout.NHWC, 2, 5, 3, 7);
            ops.splitChannels(cc1, sa1, sb1);
            OpsTesting.CPU.splitChannels(cc2, sa2, sb2);
            close("splitChannels a", sa1, sa2);
            close("splitChannels b", sb1, sb2);
            Tensor s1 = h.allocate(2, 16), s2 = h.allocate(2, 16);
            ops.sumPerChannel(x, s1);
            OpsTesting.CPU.sumPerChannel(x, s2);
            close("sumPerChannel", s1, s2);
            ops.upsampleNearest2x(x, u1);
            OpsTesting.CPU.upsampleNearest2x(x, u2);
            close("upsample", u1, u2);
            Tensor t = h.of(Layout.ROWS, new float[] {-3f, 0.5f, 700f}, 3);
            Tensor e1 = h.allocate(3, 33), e2 = h.allocate(3, 33);
            ops.sinusoidalEmbedding(t, true, 1f, 1f, 10000f, e1);
            OpsTesting.NAIVE.sinusoidalEmbedding(t, true, 1f, 1f, 10000f, e2);
            close("sinusoidalEmbedding", e1, e2);
        }
    }

    @Test
    void trainingOpsMatchTheCpuBackend() {
        try (TensorArena h = new TensorArena()) {
            // linear backward: dx assigned, dw and db accumulated onto what they held.
            Tensor x = OpsTesting.randn(h, 51, 2, 5, 24), w = OpsTesting.randn(h, 52, 24, 33);
            Tensor dy = OpsTesting.randn(h, 53, 2, 5, 33);
            Tensor dx1 = h.allocate(2, 5, 24), dx2 = h.allocate(2, 5, 24);
            Tensor dw1 = OpsTesting.randn(h, 54, 24, 33), dw2 = h.copyOf(dw1);
            Tensor db1 = OpsTesting.randn(h, 55, 33), db2 = h.copyOf(db1);
            dx1.fill(Float.NaN);
            long before = ops.deviceOps();
            ops.linearBackward(x, w, dy, dx1, dw1, db1);
            assertEquals(before + 1, ops.deviceOps(), "linearBackward runs on the device");
            OpsTesting.CPU.linearBackward(x, w, dy, dx2, dw2, db2);
            close("linearBackward dx", dx1, dx2);
            close("linearBackward dw", dw1, dw2);
            close("linearBackward db", db1, db2);
            ops.linearBackward(x, w, dy, dx1, dw1, null);
            OpsTesting.CPU.linearBackward(x, w, dy, dx2, dw2, null);
            close("linearBackward without bias dw", dw1, dw2);

            // conv2d backward: 3x3 pad 1, stride 2 (odd and even input), 1x1 without bias; dx assigned, dw/db accumulated.
            int[][] cases = {{3, 1, 1, 9}, {3, 2, 1, 9}, {3, 2, 1, 8}, {1, 1, 0, 9}};
            for (int[] cs : cases) {
                int kk = cs[0], stride = cs[1], pad = cs[2];
                Tensor xi = OpsTesting.randn(h, 56, Layout.NHWC, 2, cs[3], 7, 5);
                Tensor wi = OpsTesting.randn(h, 57, Layout.HWIO, kk, kk, 5, 6);
                int[] os = ai.onestep.backend.Ops.convOutputShape(xi, wi, stride, pad);
                Tensor gy = OpsTesting.randn(h, 58, Layout.NHWC, os);
                Tensor gx1 = h.allocate(Layout.NHWC, 2, cs[3], 7, 5), gx2 = h.allocate(Layout.NHWC, 2, cs[3], 7, 5);
                Tensor gw1 = OpsTesting.randn(h, 59, Layout.HWIO, kk, kk, 5, 6), gw2 = h.copyOf(gw1);
                Tensor gb1 = OpsTesting.randn(h, 60, 6), gb2 = h.copyOf(gb1);
                gx1.fill(Float.NaN);
                before = ops.deviceOps();
                ops.conv2dBackward(xi, wi, gy, stride, pad, gx1, gw1, kk == 3 ? gb1 : null);
                assertEquals(before + 1, ops.deviceOps(), "conv2dBackward runs on the device");
                OpsTesting.CPU.conv2dBackward(xi, wi, gy, stride, pad, gx2, gw2, kk == 3 ? gb2 : null);
                String c = kk + "x" + kk + " stride " + stride + " height " + cs[3];
                close("conv2dBackward dx " + c, gx1, gx2);
                close("conv2dBackward dw " + c, gw1, gw2);
                close("conv2dBackward db " + c, gb1, gb2);
            }

            // attention backward: 2 heads of 32 and 1 head of 64, a ragged 13 tokens, from the forward's o and lse.
            for (int heads : new int[] {2, 1}) {
                Tensor q = OpsTesting.randn(h, 61, 2, 13, 64), k = OpsTesting.randn(h, 62, 2, 13, 64);
                Tensor v = OpsTesting.randn(h, 63, 2, 13, 64), dO = OpsTesting.randn(h, 64, 2, 13, 64);
                Tensor o = h.allocate(2, 13, 64), lse = h.allocate(2, heads, 13);
                OpsTesting.CPU.attention(q, k, v, heads, o, lse);
                Tensor[] g1 = {h.allocate(2, 13, 64), h.allocate(2, 13, 64), h.allocate(2, 13, 64)};
                Tensor[] g2 = {h.allocate(2, 13, 64), h.allocate(2, 13, 64), h.allocate(2, 13, 64)};
                before = ops.deviceOps();
                ops.attentionBackward(q, k, v, o, lse, dO, heads, g1[0], g1[1], g1[2]);
                assertEquals(before + 1, ops.deviceOps(), "attentionBackward runs on the device");
                OpsTesting.CPU.attentionBackward(q, k, v, o, lse, dO, heads, g2[0], g2[1], g2[2]);
                String[] names = {"dq", "dk", "dv"};
                for (int i = 0; i < 3; i++) {
                    OpsTesting.assertClose("attentionBackward " + names[i] + " (" + heads + " heads)", g1[i], g2[i], 1e-4);
                }
            }

            // upsampling's backward: the sum of each 2x2 block, added in the CPU's order (same bits).
            Tensor gu = OpsTesting.randn(h, 71, Layout.NHWC, 2, 10, 6, 19);
            Tensor u1 = h.allocate(Layout.NHWC, 2, 5, 3, 19), u2 = h.allocate(Layout.NHWC, 2, 5, 3, 19);
            ops.upsampleNearest2xBackward(gu, u1);
            OpsTesting.CPU.upsampleNearest2xBackward(gu, u2);
            assertArrayEquals(u2.toArray(), u1.toArray(), "upsampleNearest2xBackward");

            // EMA: fma(mu, target, (1 - mu) source) on both backends, so the same bits.
            Tensor t1 = OpsTesting.randn(h, 81, 1000), src = OpsTesting.randn(h, 82, 1000), t2 = h.copyOf(t1);
            ops.ema(t1, src, 0.95f);
            OpsTesting.CPU.ema(t2, src, 0.95f);
            assertArrayEquals(t2.toArray(), t1.toArray(), "ema");

            // Losses (with and without weights) and the sum of squares of a gradient norm: their sums on the device.
            Tensor pr = OpsTesting.randn(h, 111, 4, 7, 7, 3), tg = OpsTesting.randn(h, 112, 4, 7, 7, 3);
            Tensor wts = h.of(Layout.ROWS, new float[] {0.5f, 1f, 2f, 0.25f}, 4);
            for (Tensor weights : new Tensor[] {null, wts}) {
                Tensor dp1 = h.allocate(4, 7, 7, 3), dp2 = h.allocate(4, 7, 7, 3);
                long hostBefore = ops.hostOps();
                double l1 = ops.mseLoss(pr, tg, weights, dp1), l2 = OpsTesting.CPU.mseLoss(pr, tg, weights, dp2);
                assertEquals(l2, l1, 1e-6 * l2, "mseLoss");
                close("mseLoss gradient", dp1, dp2);
                double h1 = ops.pseudoHuberLoss(pr, tg, weights, 0.03f, dp1);
                double h2 = OpsTesting.CPU.pseudoHuberLoss(pr, tg, weights, 0.03f, dp2);
                assertEquals(h2, h1, 1e-6 * h2, "pseudoHuberLoss");
                close("pseudoHuberLoss gradient", dp1, dp2);
                assertEquals(hostBefore, ops.hostOps(), "the losses ran on the device");
            }
            assertEquals(ops.mseLoss(pr, tg, null, null), OpsTesting.CPU.mseLoss(pr, tg, null, null), 1e-6);
            Tensor big = OpsTesting.randn(h, 113, 40_000);
            double ss = OpsTesting.CPU.sumOfSquares(big);
            assertEquals(ss, ops.sumOfSquares(big), 1e-9 * ss, "sumOfSquares over three chunks");

            // Adam, AdamW and RAdam (its momentum steps, t <= 5 for beta2 = 0.999, then rectified ones) over seven
            // steps against the CPU backend, which runs the same float operations (AdamUpdate).
            for (int variant = 0; variant < 3; variant++) {
                Tensor p1 = OpsTesting.randn(h, 91, 1031), p2 = h.copyOf(p1);
                Tensor m1 = h.allocate(1031), m2 = h.allocate(1031);
                Tensor v1 = h.allocate(1031), v2 = h.allocate(1031);
                for (int t = 1; t <= 7; t++) {
                    Tensor g = OpsTesting.randn(h, 100 + t, 1031);
                    if (variant < 2) {
                        ops.adamStep(p1, g, m1, v1, t, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, variant == 1);
                        OpsTesting.CPU.adamStep(p2, g, m2, v2, t, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, variant == 1);
                    } else {
                        ops.radamStep(p1, g, m1, v1, t, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, true);
                        OpsTesting.CPU.radamStep(p2, g, m2, v2, t, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, true);
                    }
                }
                String name = new String[] {"adam", "adamw", "radam"}[variant];
                close(name + " p", p1, p2);
                close(name + " m", m1, m2);
                close(name + " v", v1, v2);
                assertNotEquals(0f, m1.get(0), name + " moved the moments");
            }
        }
    }

    @Test
    void theGpuMachinesDeviceCheckPassesOnTheEmulatedLibrary() {
        // bench/gpu runs DeviceCheck on a lent GPU; here the same checks run against the emulated library, so a
        // check that is wrong in itself (not the GPU's fault) fails in CI first.
        java.util.List<String> rows = new java.util.ArrayList<>();
        int failures = DeviceCheck.checkAll(ops, rows);
        assertEquals(0, failures, String.join("\n", rows));
        assertTrue(rows.size() > 30, rows.size() + " checks");
    }

    @Test
    void opsWithoutADeviceKernelRunOnTheHostInEagerMode() {
        try (TensorArena h = new TensorArena()) {
            // Heads of 136 features are beyond the fused kernels: eager mode gives the CPU backend's answer.
            Tensor q = OpsTesting.randn(h, 41, 1, 9, 136), k = OpsTesting.randn(h, 42, 1, 9, 136);
            Tensor v = OpsTesting.randn(h, 43, 1, 9, 136);
            Tensor o1 = h.allocate(1, 9, 136), o2 = h.allocate(1, 9, 136), l1 = h.allocate(1, 1, 9);
            Tensor l2 = h.allocate(1, 1, 9);
            long before = ops.deviceOps();
            ops.attention(q, k, v, 1, o1, l1);
            assertEquals(before, ops.deviceOps(), "head dim 136 must not reach the device");
            OpsTesting.CPU.attention(q, k, v, 1, o2, l2);
            assertArrayEquals(o2.toArray(), o1.toArray());
        }
    }

    @Test
    void headsOfOtherSizesRunPaddedOnTheDevice() {
        // 4, 40 and 100 features per head: zero-padded to the fused kernels' 32, 64 and 128, forward and backward
        // on the device, against the CPU backend.
        int[][] cases = {{2, 4}, {3, 40}, {1, 100}};  // heads, head dim
        try (TensorArena h = new TensorArena()) {
            for (int[] c : cases) {
                int heads = c[0], width = c[0] * c[1];
                Tensor q = OpsTesting.randn(h, 51, 2, 11, width), k = OpsTesting.randn(h, 52, 2, 11, width);
                Tensor v = OpsTesting.randn(h, 53, 2, 11, width), dO = OpsTesting.randn(h, 54, 2, 11, width);
                Tensor[] dev = {h.allocate(2, 11, width), h.allocate(2, heads, 11), h.allocate(2, 11, width),
                    h.allocate(2, 11, width), h.allocate(2, 11, width)};
                Tensor[] cpu = {h.allocate(2, 11, width), h.allocate(2, heads, 11), h.allocate(2, 11, width),
                    h.allocate(2, 11, width), h.allocate(2, 11, width)};
                long hostBefore = ops.hostOps();
                ops.attention(q, k, v, heads, dev[0], dev[1]);
                ops.attentionBackward(q, k, v, dev[0], dev[1], dO, heads, dev[2], dev[3], dev[4]);
                assertEquals(hostBefore, ops.hostOps(), "head dim " + c[1] + " ran on the host");
                OpsTesting.CPU.attention(q, k, v, heads, cpu[0], cpu[1]);
                OpsTesting.CPU.attentionBackward(q, k, v, cpu[0], cpu[1], dO, heads, cpu[2], cpu[3], cpu[4]);
                String[] names = {"o", "lse", "dq", "dk", "dv"};
                for (int i = 0; i < names.length; i++) {
                    OpsTesting.assertClose("head dim " + c[1] + " " + names[i], dev[i], cpu[i], 1e-5);
                }
            }
        }
    }

    @Test
    void libraryErrorsBecomeExceptionsNamingKernelAndShapes() {
        try (DeviceArena a = new DeviceArena(ops.device(), "errors", 1 << 12)) {
            long p = a.allocate(1024, "buffer");
            CudaException e = assertThrows(CudaException.class, () -> Device.check(onestep_groupnorm_forward(p, p, p, 0,
                    0, p, p, p, 1, 2, 12, 5, 1e-5f, 0, ops.device().stream()), "groupNorm", () -> "x [1, 1, 2, 12] NHWC"));
            assertEquals(1, e.status());
            assertTrue(e.getMessage().startsWith("groupNorm: onestep_groupnorm_forward(N=1, HW=2, C=12, G=5)")
                    && e.getMessage().contains("[x [1, 1, 2, 12] NHWC]"), e.getMessage());

            CudaException c = assertThrows(CudaException.class, () -> ops.device().conv2d(p, p, 0, 0, p, 1, 2, 2, 1, 5, 5,
                    1, 1, 0, Precision.FP32, a::allocate, () -> "x [1, 2, 2, 1] NHWC"));
            assertTrue(c.getMessage().contains("onestep_conv2d_nhwc_typed(N=1, H=2, W=2, Cin=1, KH=5, KW=5, Cout=1")
                    && c.getMessage().contains("does not fit"), c.getMessage());

            // A host copy while capturing would make a graph read host memory that later changes: refused.
            try (TensorArena h = new TensorArena()) {
                Tensor t = h.allocate(4);
                ops.device().beginCapture();
                CudaException u = assertThrows(CudaException.class,
                        () -> ops.device().upload(p, t.segment(), 16, () -> "t [4]"));
                ops.device().destroyGraph(ops.device().endCapture());
                assertTrue(u.getMessage().contains("onestep_memcpy_htod") && u.getMessage().contains("under capture"),
                        u.getMessage());
                // The queued copies a replay makes are refused the same way.
                ops.device().beginCapture();
                CudaException q = assertThrows(CudaException.class,
                        () -> ops.device().uploadQueued(p, t.segment(), 16, () -> "t [4]"));
                CudaException d = assertThrows(CudaException.class,
                        () -> ops.device().downloadQueued(t.segment(), p, 16, () -> "t [4]"));
                ops.device().destroyGraph(ops.device().endCapture());
                assertTrue(q.getMessage().contains("onestep_memcpy_htod_async") && q.getMessage().contains("under capture")
                        && d.getMessage().contains("onestep_memcpy_dtoh_async"), q.getMessage() + " / " + d.getMessage());
            }
        }
    }

    /**
     * The fp16 and bf16 attention through the bindings: q, k, v uploaded in fp32, narrowed on the device with
     * {@code onestep_convert}, attended in 16-bit storage, widened back, and compared with a float64 softmax over
     * the narrowed inputs (read back too, so the reference sees exactly what the kernel read). The kernels' own
     * exhaustive checks are kernels/test; this covers the Java signatures, the dtype constants and the casts.
     */
    @Test
    void halfPrecisionAttentionThroughTheBindings() {
        int b = 1, h = 2, t = 40, d = 32;
        int n = b * h * t * d;
        java.util.SplittableRandom r = new java.util.SplittableRandom(5);
        for (int dtype : new int[] {OnestepKernels.FLOAT16, OnestepKernels.BFLOAT16}) {
            try (DeviceArena a = new DeviceArena(ops.device(), "typed attention", 1 << 20);
                 TensorArena host = new TensorArena()) {
                long stream = ops.device().stream();
                Tensor hq = host.allocate(n), hk = host.allocate(n), hv = host.allocate(n), ho = host.allocate(n);
                for (Tensor x : new Tensor[] {hq, hk, hv}) {
                    for (int i = 0; i < n; i++) {
                        x.segment().setAtIndex(Tensor.F32, i, (float) r.nextGaussian());
                    }
                }
                long[] wide = new long[3], narrow = new long[3];
                Tensor[] in = {hq, hk, hv};
                for (int i = 0; i < 3; i++) {
                    wide[i] = a.allocate(4L * n, "fp32 input");
                    narrow[i] = a.allocate(2L * n, "16-bit input");
                    ops.device().upload(wide[i], in[i].segment(), 4L * n, () -> "input");
                    Device.check(OnestepKernels.onestep_convert(wide[i], OnestepKernels.FLOAT32, narrow[i], dtype, n,
                            stream), "convert", () -> "input");
                    Device.check(OnestepKernels.onestep_convert(narrow[i], dtype, wide[i], OnestepKernels.FLOAT32, n,
                            stream), "convert", () -> "input");
                    ops.device().download(in[i].segment(), wide[i], 4L * n, () -> "rounded input");
                }
                long o = a.allocate(2L * n, "o"), lse = a.allocate(4L * b * h * t, "lse"), o32 = a.allocate(4L * n, "o32");
                Device.check(OnestepKernels.onestep_attention_forward_typed(narrow[0], narrow[1], narrow[2], o, lse, b,
                        h, t, t, d, 0, 0f, dtype, stream), "attention", () -> "typed");
                Device.check(OnestepKernels.onestep_convert(o, dtype, o32, OnestepKernels.FLOAT32, n, stream),
                        "convert", () -> "o");
                ops.device().download(ho.segment(), o32, 4L * n, () -> "o");
                float[] q = hq.toArray(), k = hk.toArray(), v = hv.toArray(), got = ho.toArray();
                double u = dtype == OnestepKernels.FLOAT16 ? 0x1p-11 : 0x1p-8;
                double scale = 1 / Math.sqrt(d);
                // The tensor-core kernel rounds P to the 16-bit type before P V (as FlashAttention-2 does): at most
                // u * max|v| absolute on each output, on top of o's own rounding (u relative).
                double vmax = 0;
                for (float x : v) {
                    vmax = Math.max(vmax, Math.abs(x));
                }
                for (int bh = 0; bh < b * h; bh++) {
                    for (int i = 0; i < t; i++) {
                        double[] p = new double[t];
                        double max = Double.NEGATIVE_INFINITY, sum = 0;
                        for (int j = 0; j < t; j++) {
                            double dot = 0;
                            for (int c = 0; c < d; c++) {
                                dot += (double) q[(bh * t + i) * d + c] * k[(bh * t + j) * d + c];
                            }
                            p[j] = dot * scale;
                            max = Math.max(max, p[j]);
                        }
                        for (int j = 0; j < t; j++) {
                            sum += p[j] = Math.exp(p[j] - max);
                        }
                        for (int c = 0; c < d; c++) {
                            double want = 0;
                            for (int j = 0; j < t; j++) {
                                want += p[j] / sum * v[(bh * t + j) * d + c];
                            }
                            float g = got[(bh * t + i) * d + c];
                            assertTrue(Math.abs(g - want) <= 2e-5 + u * vmax + (2e-4 + u) * Math.abs(want),
                                    "dtype " + dtype + " o[" + bh + "," + i + "," + c + "] = " + g + ", want " + want);
                        }
                    }
                }
            }
        }
    }

    @Test
    void describesItself() {
        assertEquals("cuda-emulated", ops.name());
        assertEquals("emulated", ops.device().kind());
        assertTrue(ops.device().describe().contains("portable kernels"), ops.device().describe());
        assertNotEquals(0, ops.device().stream());
    }
}
