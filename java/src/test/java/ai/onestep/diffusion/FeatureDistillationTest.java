package ai.onestep.diffusion;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.OpsTesting;
import ai.onestep.model.Context;
import ai.onestep.model.FeatureProjections;
import ai.onestep.model.Init;
import ai.onestep.model.StudentInit;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetCheckpoint;
import ai.onestep.model.UNetConfig;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Feature distillation of smaller students, the evaluation EMA and the learning-rate decay of the distiller. */
class FeatureDistillationTest {
    @TempDir
    Path dir;

    /** The distiller test's U-Net without dropout, so the student's training pass equals an inference pass. */
    static UNetConfig cfg() {
        return UNetConfig.parse("{\"sample_size\": 8, \"in_channels\": 1, \"out_channels\": 1,"
                + "\"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"], \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"],"
                + "\"block_out_channels\": [8, 8], \"layers_per_block\": 1, \"attention_head_dim\": 4, \"norm_num_groups\": 4}", "test");
    }

    static ConsistencyDistiller.Options opts(long steps, double featureWeight, ConsistencyDistiller.Decay decay,
                                             double ema, boolean cosine) {
        return opts(steps, featureWeight, decay, ema, cosine, 0, 0);
    }

    static ConsistencyDistiller.Options opts(long steps, double featureWeight, ConsistencyDistiller.Decay decay,
                                             double ema, boolean cosine, long warmup, long validateEvery) {
        return new ConsistencyDistiller.Options(steps, 2, 6, 0.95, ConsistencyDistiller.Distance.L2,
                ConsistencyDistiller.Weighting.UNIFORM, false, 1e-2, 1.0, 3, validateEvery, 10, 4, featureWeight, decay,
                ema, cosine, warmup);
    }

    /** Distills a student of this width from a random teacher; returns the distiller (its histories) after the run. */
    private ConsistencyDistiller run(double width, ConsistencyDistiller.Options o, float[][] liveOut) {
        return run(width, o, liveOut, null, (s, l, n) -> assertTrue(Double.isFinite(l), "loss at step " + s + ": " + l));
    }

    private ConsistencyDistiller run(double width, ConsistencyDistiller.Options o, float[][] liveOut,
                                     ConsistencyDistiller.Validator fid, TrainingProgress progress) {
        UNetConfig tc = cfg();
        UNetConfig sc = StudentInit.config(tc, width, 1);
        try (UNet teacher = new UNet(tc, false); UNet student = new UNet(sc, true); UNet target = new UNet(sc, false);
             Workspace tws = new Workspace()) {
            DistillationNets.randomTeacherSlicedStudent(teacher, student, target);
            var d = new ConsistencyDistiller(OpsTesting.CPU, student, target, new EdmDenoiser(teacher, OpsTesting.CPU, tws),
                    TeacherTrainerTest.data(), null, o, dir.resolve("s.safetensors"), Map.of());
            d.run(fid, progress);
            if (liveOut != null) {
                liveOut[0] = student.parameters().get("conv_in.weight").value().toArray();
            }
            return d;
        }
    }

    @Test
    void projectionsStartAsTheSlicingEmbedding() {
        UNetConfig tc = cfg();
        try (UNet teacher = new UNet(tc, false); UNet student = new UNet(StudentInit.config(tc, 0.5, 1), false);
             FeatureProjections p = new FeatureProjections(student, teacher); TensorArena a = new TensorArena();
             Workspace ws = new Workspace()) {
            assertEquals(10, p.parameters().size(), "a 1x1 convolution (weight, bias) for each of the 5 taps");
            assertTrue(p.parameters().contains("proj.mid_block.weight"));
            Tensor x = a.allocate(Layout.NHWC, 1, 2, 2, 4);
            Noise.gaussian(x, 3, 0);
            List<Tensor> taps = List.of(x, x, x, x, x);
            Tensor y = p.forward(Context.inference(OpsTesting.CPU, ws), taps).get(0);
            assertArrayEquals(new int[] {1, 2, 2, 8}, y.shape(), "4 student channels -> 8 teacher channels");
            for (int px = 0; px < 4; px++) {
                for (int c = 0; c < 8; c++) {
                    assertEquals(c < 4 ? x.get(px * 4L + c) : 0f, y.get(px * 8L + c), "pixel " + px + " channel " + c);
                }
            }
        }
    }

    @Test
    void anIdenticalStudentHasNoFeatureLossAtTheStart() {
        // Width 1: the student is the teacher, the projections are identities, and the teacher's first Heun
        // evaluation sees exactly the student's input, so the first feature loss is exactly 0.
        ConsistencyDistiller d = run(1.0, opts(2, 1.0, ConsistencyDistiller.Decay.NONE, 0, false), null);
        assertEquals(2, d.featureLosses().size());
        assertEquals(0.0, d.featureLosses().get(0), 1e-12, "taps captured from the teacher's first evaluation");
        assertTrue(d.featureLosses().get(1) > 0, "after one update the student differs: " + d.featureLosses().get(1));
    }

    @Test
    void aHalfWidthStudentLearnsTheTeachersFeatures() {
        // With a weight that dominates the consistency term, the relative feature error must fall clearly.
        int n = 30;
        ConsistencyDistiller d = run(0.5, opts(n, 20.0, ConsistencyDistiller.Decay.NONE, 0, false), null);
        List<Double> f = d.featureLosses();
        assertEquals(n, f.size());
        assertTrue(f.getFirst() > 0.05, "slicing drops half the channels: relative feature error " + f.getFirst());
        double first = 0, last = 0;
        for (int i = 0; i < 5; i++) {
            first += f.get(i);
            last += f.get(n - 1 - i);
        }
        assertTrue(last < 0.7 * first, "the feature error falls: " + f);
    }

    @Test
    void noFeatureTermWhenTheWeightIsZero() {
        assertTrue(run(0.5, opts(2, 0, ConsistencyDistiller.Decay.NONE, 0, false), null).featureLosses().isEmpty());
    }

    @Test
    void featureWeightDecays() {
        var lin = opts(100, 2.0, ConsistencyDistiller.Decay.LINEAR, 0, false);
        var cos = opts(100, 2.0, ConsistencyDistiller.Decay.COSINE, 0, false);
        var none = opts(100, 2.0, ConsistencyDistiller.Decay.NONE, 0, false);
        assertEquals(2.0, lin.featureWeightAt(0), 1e-12);
        assertEquals(1.0, lin.featureWeightAt(50), 1e-12);
        assertEquals(0.0, lin.featureWeightAt(100), 1e-12);
        assertEquals(1.0, cos.featureWeightAt(50), 1e-12);
        assertEquals(2.0 * 0.5 * (1 + Math.cos(Math.PI * 0.25)), cos.featureWeightAt(25), 1e-12);
        assertEquals(2.0, none.featureWeightAt(99), 1e-12);
        assertThrows(IllegalArgumentException.class, () -> opts(1, -1, ConsistencyDistiller.Decay.NONE, 0, false));
        assertThrows(IllegalArgumentException.class, () -> opts(1, 0, ConsistencyDistiller.Decay.NONE, 1.0, false));
    }

    @Test
    void theCheckpointHoldsTheEvaluationEma() {
        // One update with rate 0.5: the warm-up gives min(0.5, 1/10) = 0.1, so the saved weights are
        // 0.1 init + 0.9 live, not the live student.
        float[] init;
        try (UNet teacher = new UNet(cfg(), false)) {
            Init.pytorchDefault(teacher, 1);
            init = teacher.parameters().get("conv_in.weight").value().toArray();
        }
        float[][] live = new float[1][];
        run(1.0, opts(1, 0, ConsistencyDistiller.Decay.NONE, 0.5, false), live);
        try (var s = UNetCheckpoint.load(dir.resolve("s.safetensors"), false)) {
            float[] saved = s.net().parameters().get("conv_in.weight").value().toArray();
            boolean moved = false;
            for (int i = 0; i < saved.length; i++) {
                assertEquals(0.1f * init[i] + 0.9f * live[0][i], saved[i], 1e-6, "element " + i);
                moved |= init[i] != live[0][i];
            }
            assertTrue(moved, "the update changed the weights");
        }
    }

    @Test
    void denoiserWarmupRegressesTheTeacherAndDefersValidation() {
        // A half-width student regressing the teacher's denoiser: the loss (no consistency target yet) falls clearly.
        List<Double> losses = new java.util.ArrayList<>();
        {
            List<Long> validatedAt = new java.util.ArrayList<>();
            long[] step = {0};
            List<String> notes = new java.util.ArrayList<>();
            run(0.5, opts(32, 0, ConsistencyDistiller.Decay.NONE, 0, false, 30, 1), null, x -> {
                validatedAt.add(step[0] + 1);
                return 1.0;
            }, (s, l, n) -> {
                step[0] = s;
                losses.add(l);
                notes.add(n);
            });
            assertEquals(List.of(31L, 32L), validatedAt.stream().distinct().toList(), "no validation during the warm-up");
            assertEquals("denoiser warm-up", notes.get(0));
            double first = losses.get(0) + losses.get(1) + losses.get(2), last = losses.get(27) + losses.get(28) + losses.get(29);
            assertTrue(last < 0.5 * first, "the denoiser regression converges: " + losses.subList(0, 30));
        }
        assertThrows(IllegalArgumentException.class, () -> opts(4, 0, ConsistencyDistiller.Decay.NONE, 0, false, 4, 0),
                "a warm-up as long as the run leaves no distillation");
    }
}
