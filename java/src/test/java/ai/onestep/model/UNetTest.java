package ai.onestep.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.Ops;
import ai.onestep.backend.OpsTesting;
import ai.onestep.io.CheckpointException;
import ai.onestep.io.Safetensors;
import ai.onestep.nn.Parameter;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class UNetTest {
    @TempDir
    Path dir;

    /** Every block type, attention with and without group norm, scale_shift, class labels, dropout off. */
    static UNetConfig tiny(String timeEmbedding, String scaleShift, Integer classes) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("sample_size", 8L);
        m.put("in_channels", 2L);
        m.put("out_channels", 2L);
        m.put("time_embedding_type", timeEmbedding);
        m.put("down_block_types", java.util.List.of("DownBlock2D", "AttnDownBlock2D"));
        m.put("up_block_types", java.util.List.of("AttnUpBlock2D", "UpBlock2D"));
        m.put("block_out_channels", java.util.List.of(8L, 12L));
        m.put("layers_per_block", 1L);
        m.put("attention_head_dim", 4L);
        m.put("norm_num_groups", 4L);
        m.put("resnet_time_scale_shift", scaleShift);
        m.put("mid_block_scale_factor", 1.5);
        m.put("num_class_embeds", classes == null ? null : (long) classes);
        return UNetConfig.fromMap(m);
    }

    private static void randomize(UNet net, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        for (Parameter p : net.parameters()) {
            for (long i = 0; i < p.value().size(); i++) {
                p.value().set(i, (float) ((r.nextDouble() * 2 - 1) * 0.3 + (p.name().contains("norm") && p.name().endsWith("weight") ? 1 : 0)));
            }
        }
        for (Tensor b : net.buffers().values()) {
            for (long i = 0; i < b.size(); i++) {
                b.set(i, (float) (r.nextDouble() * 2));
            }
        }
    }

    /** L = sum(F(x) * r) for a fixed direction r, in double. */
    private static double loss(Ops ops, UNet net, Tensor x, double[] t, int[] labels, float[] dir) {
        try (Workspace ws = new Workspace()) {
            Tensor y = net.forward(Context.inference(ops, ws), x, t, labels);
            float[] v = y.toArray();
            double s = 0;
            for (int i = 0; i < v.length; i++) {
                s += (double) v[i] * dir[i];
            }
            return s;
        }
    }

    /**
     * The whole U-Net's backward against central finite differences along random directions of the parameters and
     * of the input (float32 forward, so the tolerance is loose; every op's backward is checked in float64 elsewhere).
     */
    private void checkGradients(UNetConfig cfg, int[] labels) {
        Ops ops = OpsTesting.NAIVE;
        try (UNet net = new UNet(cfg, true); TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
            randomize(net, 3);
            Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Noise.gaussian(x, 5, 0);
            double[] t = {0.7, 3.0};
            float[] dir = new float[(int) x.size()];
            Tensor dirT = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Noise.gaussian(dirT, 9, 0);
            dir = dirT.toArray();
            net.parameters().zeroGrad();
            net.forward(new Context(ops, ws, true, 0), x, t, labels);
            Tensor dx = net.backward(new Context(ops, ws, true, 0), dirT);
            float[] dxv = dx.toArray();
            SplittableRandom r = new SplittableRandom(11);
            double h = 1e-3;
            for (int trial = 0; trial < 3; trial++) {
                // Random direction over all parameters: analytic <grad, v> vs (L(p + h v) - L(p - h v)) / 2h.
                // A unit-norm direction: the step h moves the parameters by h in total, keeping the difference
                // quotient in the region where float32 rounding and curvature are both small.
                double analytic = 0, norm = 0;
                Map<Parameter, float[]> v = new LinkedHashMap<>();
                for (Parameter p : net.parameters()) {
                    float[] d = new float[(int) p.value().size()];
                    for (int i = 0; i < d.length; i++) {
                        d[i] = (float) (r.nextDouble() * 2 - 1);
                        norm += (double) d[i] * d[i];
                    }
                    v.put(p, d);
                }
                for (var e : v.entrySet()) {
                    float[] d = e.getValue();
                    for (int i = 0; i < d.length; i++) {
                        d[i] = (float) (d[i] / Math.sqrt(norm));
                        analytic += d[i] * (double) e.getKey().grad().get(i);
                    }
                }
                double lp = shifted(ops, net, v, h, x, t, labels, dir);
                double lm = shifted(ops, net, v, -h, x, t, labels, dir);
                double fd = (lp - lm) / (2 * h);
                assertEquals(fd, analytic, 2e-2 * Math.max(1, Math.abs(fd)), "parameter direction " + trial);
            }
            // Input gradient along a random direction.
            float[] xv = x.toArray();
            float[] d = new float[xv.length];
            double analytic = 0;
            for (int i = 0; i < d.length; i++) {
                d[i] = (float) (r.nextDouble() * 2 - 1);
                analytic += d[i] * (double) dxv[i];
            }
            Tensor xp = a.allocate(Layout.NHWC, x.shape()), xm = a.allocate(Layout.NHWC, x.shape());
            for (int i = 0; i < d.length; i++) {
                xp.set(i, (float) (xv[i] + h * d[i]));
                xm.set(i, (float) (xv[i] - h * d[i]));
            }
            double fd = (loss(ops, net, xp, t, labels, dir) - loss(ops, net, xm, t, labels, dir)) / (2 * h);
            assertTrue(Math.abs(analytic) > 1e-3, "a direction with a measurable derivative: " + analytic);
            assertEquals(fd, analytic, 2e-2 * Math.max(1, Math.abs(fd)), "input direction");
        }
    }

    private static double shifted(Ops ops, UNet net, Map<Parameter, float[]> v, double h, Tensor x, double[] t,
                                  int[] labels, float[] dir) {
        Map<Parameter, float[]> saved = new LinkedHashMap<>();
        for (var e : v.entrySet()) {
            float[] old = e.getKey().value().toArray();
            saved.put(e.getKey(), old);
            float[] nw = new float[old.length];
            for (int i = 0; i < old.length; i++) {
                nw[i] = (float) (old[i] + h * e.getValue()[i]);
            }
            e.getKey().value().copyFrom(nw);
        }
        double l = loss(ops, net, x, t, labels, dir);
        saved.forEach((p, old) -> p.value().copyFrom(old));
        return l;
    }

    /** L = sum_k sum(tap_k(x) * r_k): the feature-distillation taps alone, in double. */
    private static double tapLoss(Ops ops, UNet net, Tensor x, double[] t, java.util.List<float[]> dirs) {
        try (Workspace ws = new Workspace()) {
            net.forward(Context.inference(ops, ws), x, t, null);
            double s = 0;
            for (int k = 0; k < dirs.size(); k++) {
                float[] v = net.taps().get(k).toArray();
                for (int i = 0; i < v.length; i++) {
                    s += (double) v[i] * dirs.get(k)[i];
                }
            }
            return s;
        }
    }

    /**
     * Gradients given on the taps (every block's output) flow back to the input as central finite differences of
     * L = sum_k <tap_k, r_k> say, with a zero output gradient: each tap's gradient enters at its own block.
     */
    @Test
    void tapGradientsMatchFiniteDifferences() {
        Ops ops = OpsTesting.NAIVE;
        try (UNet net = new UNet(tiny("positional", "default", null), true); TensorArena a = new TensorArena();
             Workspace ws = new Workspace()) {
            randomize(net, 4);
            Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Noise.gaussian(x, 6, 0);
            double[] t = {0.7, 3.0};
            Context c = new Context(ops, ws, true, 0);
            Tensor y = net.forward(c, x, t, null);
            assertEquals(java.util.List.of("down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.0", "up_blocks.1"),
                    net.tapNames());
            java.util.List<Tensor> dTaps = new java.util.ArrayList<>();
            java.util.List<float[]> dirs = new java.util.ArrayList<>();
            for (int k = 0; k < net.taps().size(); k++) {
                Tensor d = a.allocate(Layout.NHWC, net.taps().get(k).shape());
                Noise.gaussian(d, 20 + k, 0);
                dTaps.add(d);
                dirs.add(d.toArray());
            }
            assertArrayEquals(new int[] {2, 4, 4, 8}, net.taps().get(0).shape(), "down block 0 ends with its downsampler");
            assertArrayEquals(new int[] {2, 8, 8, 8}, net.taps().get(4).shape(), "the last up block is at full size");
            Tensor dy = a.allocate(Layout.NHWC, y.shape()); // zero: only the taps carry a loss
            net.parameters().zeroGrad();
            float[] dx = net.backward(c, dy, true, dTaps).toArray();
            SplittableRandom r = new SplittableRandom(12);
            float[] xv = x.toArray();
            double analytic = 0, h = 1e-3;
            Tensor xp = a.allocate(Layout.NHWC, x.shape()), xm = a.allocate(Layout.NHWC, x.shape());
            for (int i = 0; i < xv.length; i++) {
                double d = r.nextDouble() * 2 - 1;
                analytic += d * dx[i];
                xp.set(i, (float) (xv[i] + h * d));
                xm.set(i, (float) (xv[i] - h * d));
            }
            double fd = (tapLoss(ops, net, xp, t, dirs) - tapLoss(ops, net, xm, t, dirs)) / (2 * h);
            assertTrue(Math.abs(analytic) > 1e-2, "a direction with a measurable derivative: " + analytic);
            assertEquals(fd, analytic, 2e-2 * Math.max(1, Math.abs(fd)), "input direction");
            // A tap list of the wrong length is refused by name.
            var e = assertThrows(IllegalArgumentException.class, () -> net.backward(c, dy, true, dTaps.subList(0, 2)));
            assertTrue(e.getMessage().contains("2 tap gradients for 5 taps"), e.getMessage());
        }
    }

    @Test
    void backwardMatchesFiniteDifferencesPositionalDefault() {
        checkGradients(tiny("positional", "default", null), null);
    }

    @Test
    void backwardMatchesFiniteDifferencesFourierScaleShiftClasses() {
        checkGradients(tiny("fourier", "scale_shift", 3), new int[] {2, 0});
    }

    @Test
    void cpuAndNaiveAgreeOnTheWholeNetwork() {
        UNetConfig cfg = tiny("positional", "scale_shift", null);
        try (UNet net = new UNet(cfg, false); TensorArena a = new TensorArena(); Workspace w1 = new Workspace();
             Workspace w2 = new Workspace()) {
            randomize(net, 4);
            Tensor x = a.allocate(Layout.NHWC, 3, 8, 8, 2);
            Noise.gaussian(x, 1, 0);
            double[] t = {-500, 10, 900};
            Tensor yn = net.forward(Context.inference(OpsTesting.NAIVE, w1), x, t, null);
            Tensor yc = net.forward(Context.inference(OpsTesting.CPU, w2), x, t, null);
            OpsTesting.assertClose("unet forward cpu vs naive", yc, yn, 1e-4);
        }
    }

    @Test
    void checkpointRoundTripsThroughPyTorchLayouts() {
        UNetConfig cfg = tiny("fourier", "default", 2);
        Path p = dir.resolve("m.safetensors");
        try (UNet a = new UNet(cfg, false)) {
            randomize(a, 7);
            UNetCheckpoint.save(p, a, Map.of(UNetCheckpoint.ROLE, "teacher"), null);
            UNetCheckpoint.Loaded l = UNetCheckpoint.load(p, false);
            try (UNet b = l.net()) {
                assertEquals(cfg, b.config());
                assertEquals("teacher", l.role());
                for (Parameter q : a.parameters()) {
                    assertArrayEquals(q.value().toArray(), b.parameters().get(q.name()).value().toArray(), q.name());
                }
                assertArrayEquals(a.buffers().get("time_proj.weight").toArray(), b.buffers().get("time_proj.weight").toArray());
            }
            // The file holds PyTorch layouts: conv_in.weight is (out, in, kh, kw).
            try (Safetensors.Reader r = Safetensors.open(p)) {
                assertArrayEquals(new int[] {8, 2, 3, 3}, r.entry("conv_in.weight").shape());
                assertArrayEquals(new int[] {32, 16}, r.entry("time_embedding.linear_1.weight").shape());
            }
        }
    }

    @Test
    void checkpointForAnotherConfigIsRejectedByName() {
        Path p = dir.resolve("m.safetensors");
        try (UNet a = new UNet(tiny("positional", "default", null), false)) {
            UNetCheckpoint.save(p, a, Map.of(), null);
        }
        // Claim the file is for a class-conditional config: the class embedding is missing.
        try (Safetensors.Reader r = Safetensors.open(p); UNet b = new UNet(tiny("positional", "default", 4), false)) {
            CheckpointException e = assertThrows(CheckpointException.class, () -> UNetCheckpoint.read(r, b));
            assertTrue(e.getMessage().contains("class_embedding.weight"), e.getMessage());
        }
    }

    @Test
    void configsOutsideTheSupportedSubsetNameTheKey() {
        var e = assertThrows(UNetConfig.ConfigException.class,
                () -> UNetConfig.parse("{\"cross_attention_dim\": 768}", "config.json"));
        assertTrue(e.getMessage().startsWith("config.json: config key 'cross_attention_dim' is not supported"), e.getMessage());
        e = assertThrows(UNetConfig.ConfigException.class,
                () -> UNetConfig.parse("{\"act_fn\": \"gelu\"}", "c.json"));
        assertTrue(e.getMessage().contains("act_fn"), e.getMessage());
        e = assertThrows(UNetConfig.ConfigException.class,
                () -> UNetConfig.parse("{\"down_block_types\": [\"CrossAttnDownBlock2D\"], \"up_block_types\": [\"UpBlock2D\"],"
                        + " \"block_out_channels\": [32]}", "c.json"));
        assertTrue(e.getMessage().contains("CrossAttnDownBlock2D"), e.getMessage());
        e = assertThrows(UNetConfig.ConfigException.class, () -> UNetConfig.parse("{\"block_out_channels\": [30, 64],"
                + "\"down_block_types\": [\"DownBlock2D\",\"DownBlock2D\"], \"up_block_types\": [\"UpBlock2D\",\"UpBlock2D\"]}", "c.json"));
        assertTrue(e.getMessage().contains("norm_num_groups"), e.getMessage());
    }

    @Test
    void diffusersFolderLoads() throws Exception {
        UNetConfig cfg = tiny("positional", "default", null);
        Path folder = Files.createDirectory(dir.resolve("unet"));
        try (UNet a = new UNet(cfg, false)) {
            randomize(a, 2);
            UNetCheckpoint.save(folder.resolve("diffusion_pytorch_model.safetensors"), a, Map.of(), null);
        }
        Files.writeString(folder.resolve("config.json"), cfg.toJson());
        try (UNet b = UNetCheckpoint.load(folder, false).net()) {
            assertEquals(cfg, b.config());
        }
    }

    @Test
    void flopsCountTheConvolutions() {
        try (UNet net = new UNet(tiny("positional", "default", null), false)) {
            // conv_in alone: 2 * 8*8 pixels * 8 out * 9 taps * 2 in.
            assertTrue(net.flops(1, 8, 8) > 2L * 64 * 8 * 9 * 2);
            assertEquals(2 * net.flops(1, 8, 8), net.flops(2, 8, 8));
        }
    }
}
