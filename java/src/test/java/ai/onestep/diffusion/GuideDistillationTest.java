package ai.onestep.diffusion;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.OpsTesting;
import ai.onestep.model.Init;
import ai.onestep.model.StudentInit;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetConfig;
import ai.onestep.tensor.Workspace;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Distillation from a trained consistency model (ConsistencyDistiller#guide). */
class GuideDistillationTest {
    @TempDir
    Path dir;

    record Run(List<Double> losses, ConsistencyDistiller distiller) {
    }

    /**
     * Distills a student of this width from a random teacher (init seed 1); the guide has the teacher's config and
     * init seed {@code guideSeed} (1: the same weights as the teacher, hence as a width-1 student sliced from it).
     * A guide weight of 0 means no guide.
     */
    private Run run(double width, ConsistencyDistiller.Options o, long guideSeed, double guideWeight) {
        UNetConfig tc = FeatureDistillationTest.cfg();
        UNetConfig sc = StudentInit.config(tc, width, 1);
        try (UNet teacher = new UNet(tc, false); UNet guide = new UNet(tc, false); UNet student = new UNet(sc, true);
             UNet target = new UNet(sc, false); Workspace tws = new Workspace()) {
            DistillationNets.randomTeacherSlicedStudent(teacher, student, target);
            Init.pytorchDefault(guide, guideSeed);
            var d = new ConsistencyDistiller(OpsTesting.CPU, student, target, new EdmDenoiser(teacher, OpsTesting.CPU, tws),
                    TeacherTrainerTest.data(), null, o, dir.resolve("s.safetensors"), Map.of());
            if (guideWeight > 0) {
                d.guide(guide, guideWeight);
            }
            List<Double> losses = new ArrayList<>();
            d.run(null, (s, l, n) -> losses.add(l));
            return new Run(losses, d);
        }
    }

    private static ConsistencyDistiller.Options opts(long steps, double featureWeight) {
        return FeatureDistillationTest.opts(steps, featureWeight, ConsistencyDistiller.Decay.NONE, 0, false);
    }

    @Test
    void aStudentEqualToItsGuideHasNoLossAtTheStart() {
        // Width 1, guide = teacher's weights = the student's: with w = 1 the target is the student's own output at
        // the same input, so the first loss is exactly 0 (no dropout in this config); a different guide gives > 0.
        assertEquals(0.0, run(1.0, opts(1, 0), 1, 1.0).losses().getFirst(), 1e-12);
        assertTrue(run(1.0, opts(1, 0), 7, 1.0).losses().getFirst() > 1e-4, "a guide with other weights");
    }

    @Test
    void theTargetMixesGuideAndConsistencyTargetsByTheWeight() {
        // With the guide equal to the student, f_s - (w f_s + (1 - w) f_target) = (1 - w)(f_s - f_target): the
        // l2 loss at the first step is (1 - w)^2 times Algorithm 2's loss (same data, noise and times).
        double plain = run(1.0, opts(1, 0), 1, 0).losses().getFirst();
        double mixed = run(1.0, opts(1, 0), 1, 0.5).losses().getFirst();
        assertTrue(plain > 1e-6, "Algorithm 2's first loss " + plain);
        assertEquals(0.25 * plain, mixed, 1e-5 * plain);
        double mostlyGuide = run(1.0, opts(1, 0), 1, 0.9).losses().getFirst();
        assertEquals(0.01 * plain, mostlyGuide, 1e-4 * plain);
    }

    @Test
    void featuresComeFromTheGuide() {
        // The student is sliced from the teacher (seed 1). A guide with the teacher's weights gives a first feature
        // loss of 0; a guide with other weights (seed 5) does not, although the student still equals the teacher:
        // the block outputs regressed are the guide's, not the teacher's.
        assertEquals(0.0, run(1.0, opts(1, 1.0), 1, 1.0).distiller().featureLosses().getFirst(), 1e-12);
        assertTrue(run(1.0, opts(1, 1.0), 5, 1.0).distiller().featureLosses().getFirst() > 1e-3,
                "with another guide the student's blocks differ from the guide's");
    }

    @Test
    void aHalfWidthStudentConvergesToItsGuide() {
        int n = 40;
        List<Double> l = run(0.5, opts(n, 0), 5, 1.0).losses();
        double first = l.get(0) + l.get(1) + l.get(2), last = l.get(n - 1) + l.get(n - 2) + l.get(n - 3);
        assertTrue(last < 0.5 * first, "the output regression converges: " + l);
    }

    @Test
    void badGuidesAreRejected() {
        assertThrows(IllegalArgumentException.class, () -> run(1.0, opts(1, 0), 1, 1.5));
        UNetConfig other = UNetConfig.parse("{\"sample_size\": 16, \"in_channels\": 1, \"out_channels\": 1,"
                + "\"down_block_types\": [\"DownBlock2D\", \"DownBlock2D\"], \"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\"],"
                + "\"block_out_channels\": [8, 8], \"layers_per_block\": 1, \"norm_num_groups\": 4}", "test");
        UNetConfig tc = FeatureDistillationTest.cfg();
        try (UNet teacher = new UNet(tc, false); UNet guide = new UNet(other, false); UNet student = new UNet(tc, true);
             UNet target = new UNet(tc, false); Workspace tws = new Workspace()) {
            var d = new ConsistencyDistiller(OpsTesting.CPU, student, target, new EdmDenoiser(teacher, OpsTesting.CPU, tws),
                    TeacherTrainerTest.data(), null, opts(1, 0), dir.resolve("s.safetensors"), Map.of());
            var e = assertThrows(IllegalArgumentException.class, () -> d.guide(guide, 1.0));
            assertTrue(e.getMessage().contains("size 16"), e.getMessage());
        }
    }
}
