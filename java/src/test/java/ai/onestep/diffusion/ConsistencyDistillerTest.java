package ai.onestep.diffusion;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.OpsTesting;
import ai.onestep.model.Classifier;
import ai.onestep.model.Context;
import ai.onestep.model.Init;
import ai.onestep.model.StudentInit;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetCheckpoint;
import ai.onestep.model.UNetConfig;
import ai.onestep.nn.Parameter;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ConsistencyDistillerTest {
    @TempDir
    Path dir;

    static ConsistencyDistiller.Options opts(long steps, double mu, ConsistencyDistiller.Distance d, long every, int patience) {
        return new ConsistencyDistiller.Options(steps, 2, 6, mu, d, ConsistencyDistiller.Weighting.INVERSE_STEP, true, 1e-3,
                1.0, 3, every, patience, 4);
    }

    private List<Double> distill(ConsistencyDistiller.Options o, ConsistencyDistiller.Validator fid, Classifier c,
                                 UNet[] keep) {
        UNetConfig cfg = TeacherTrainerTest.cfg();
        List<Double> losses = new ArrayList<>();
        try (UNet teacher = new UNet(cfg, false); UNet student = new UNet(cfg, true); UNet target = new UNet(cfg, false);
             Workspace tws = new Workspace()) {
            DistillationNets.randomTeacherSlicedStudent(teacher, student, target);
            var d = new ConsistencyDistiller(OpsTesting.CPU, student, target, new EdmDenoiser(teacher, OpsTesting.CPU, tws),
                    TeacherTrainerTest.data(), c, o, dir.resolve("s.safetensors"), Map.of());
            d.run(fid, (s, l, n) -> losses.add(l));
            if (keep != null) {
                for (Parameter p : target.parameters()) {
                    assertArrayEquals(student.parameters().get(p.name()).value().toArray(), p.value().toArray(),
                            "mu = 0: the target equals the student after every step (" + p.name() + ")");
                }
            }
        }
        return losses;
    }

    @Test
    void muZeroTargetIsTheStudentAndLossesAreFinite() {
        for (var dist : new ConsistencyDistiller.Distance[] {ConsistencyDistiller.Distance.L2,
                ConsistencyDistiller.Distance.PSEUDO_HUBER}) {
            List<Double> l = distill(opts(3, 0.0, dist, 0, 1), null, null, new UNet[0]);
            assertEquals(3, l.size());
            l.forEach(v -> assertTrue(Double.isFinite(v) && v >= 0, dist + " loss " + v));
        }
    }

    @Test
    void featureDistanceRunsThroughTheClassifier() {
        try (Classifier c = new Classifier(1, 8, 10, true)) {
            Init.pytorchDefault(c.parameters(), c.torchLayouts(), 4);
            List<Double> l = distill(opts(2, 0.95, ConsistencyDistiller.Distance.FEATURE, 0, 1), null, c, null);
            l.forEach(v -> assertTrue(Double.isFinite(v) && v > 0, "feature loss " + v));
        }
    }

    @Test
    void bestValidationIsKeptAndTrainingStopsEarly() {
        Iterator<Double> scores = List.of(5.0, 5.0, 3.0, 3.0, 4.0, 4.0, 4.0, 4.0, 9.0, 9.0).iterator();
        List<Double> l = distill(opts(20, 0.95, ConsistencyDistiller.Distance.L2, 1, 2), x -> scores.next(), null, null);
        assertEquals(4, l.size(), "validations at steps 1..4; no improvement at 3 and 4 with patience 2 stops at 4");
        try (var s = UNetCheckpoint.load(dir.resolve("s.safetensors"), false)) {
            assertEquals("student", s.role());
            assertEquals("2", s.metadata().get("onestep.train.step"), "the best validation (step 2) is the checkpoint");
        }
    }

    /** --validate-every 0 with a scorer: no validation, and the last step's student is the checkpoint (none was written). */
    @Test
    void validationOffKeepsTheLastStudent() {
        distill(opts(3, 0.95, ConsistencyDistiller.Distance.L2, 0, 2), x -> {
            throw new AssertionError("validation is off");
        }, null, null);
        try (var s = UNetCheckpoint.load(dir.resolve("s.safetensors"), false)) {
            assertEquals("3", s.metadata().get("onestep.train.step"));
        }
    }

    @Test
    void boundaryConditionHoldsForAnyNetwork() {
        try (UNet net = new UNet(TeacherTrainerTest.cfg(), false); TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
            Init.pytorchDefault(net, 9);
            Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 1);
            Noise.gaussian(x, 1, 0);
            Tensor out = a.allocate(Layout.NHWC, 2, 8, 8, 1);
            new ConsistencyDenoiser(net, OpsTesting.CPU, ws).denoise(x, new double[] {0.002, 0.002}, null, out);
            assertArrayEquals(x.toArray(), out.toArray(), "f(x, eps) = x exactly");
        }
    }

    @Test
    void studentAndTargetShareDropoutMasks() {
        UNetConfig cfg = TeacherTrainerTest.cfg();
        try (UNet a = new UNet(cfg, false); UNet b = new UNet(cfg, false); TensorArena ar = new TensorArena();
             Workspace w1 = new Workspace(); Workspace w2 = new Workspace()) {
            Init.pytorchDefault(a, 1);
            b.parameters().copyValuesFrom(a.parameters());
            Tensor x = ar.allocate(Layout.NHWC, 2, 8, 8, 1);
            Noise.gaussian(x, 2, 0);
            double[] t = {10, 20};
            float[] ya = a.forward(new Context(OpsTesting.CPU, w1, true, 77), x, t, null).toArray();
            float[] yb = b.forward(new Context(OpsTesting.CPU, w2, true, 77), x, t, null).toArray();
            float[] yc = b.forward(new Context(OpsTesting.CPU, w2, true, 78), x, t, null).toArray();
            assertArrayEquals(ya, yb, "same dropout seed: same masks");
            assertTrue(!java.util.Arrays.equals(ya, yc), "another seed: other masks (dropout is on)");
        }
    }

    @Test
    void smallerStudentConfigAndSlicedInit() throws java.io.IOException {
        UNetConfig t = TeacherTrainerTest.cfg();
        UNetConfig s = StudentInit.config(t, 0.5, 1);
        assertArrayEquals(new int[] {4, 4}, s.blockOutChannels());
        try (UNet teacher = new UNet(t, false); UNet student = new UNet(s, false)) {
            Init.pytorchDefault(teacher, 1);
            int copied = StudentInit.sliceFrom(teacher, student);
            assertEquals(student.parameters().size(), copied);
            Tensor tw = teacher.parameters().get("conv_in.weight").value();
            Tensor sw = student.parameters().get("conv_in.weight").value();
            assertEquals(tw.at(1, 2, 0, 3), sw.at(1, 2, 0, 3));
        }
        assertThrows(IllegalArgumentException.class, () -> StudentInit.config(t, 1.5, 1));
        // The committed teacher's config: level 0 has no attention, so it halves too (with half the groups), and
        // the student needs >= 3x fewer FLOPs (issue: the 0.5-width student).
        UNetConfig small;
        try (var in = UNetConfig.class.getResourceAsStream("/ai/onestep/configs/fmnist-small.json")) {
            small = UNetConfig.parse(new String(in.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8), "fmnist-small");
        }
        UNetConfig half = StudentInit.config(small, 0.5, 1);
        assertArrayEquals(new int[] {16, 32, 64}, half.blockOutChannels());
        assertEquals(4, half.normNumGroups());
        try (UNet teacher = new UNet(small, false); UNet student = new UNet(half, false)) {
            double ratio = (double) teacher.flops(1, 28, 28) / student.flops(1, 28, 28);
            assertTrue(ratio >= 3, "FLOPs ratio " + ratio);
        }
    }

    @Test
    void timepointSpecsMergeByStepCount() {
        assertEquals("2:1.5;3:8.4,1.9;4:8.4,1.9,0.06",
                ConsistencySampler.mergeTimepoints("2:8.4;3:8.4,1.9;4:8.4,1.9,0.06", "2:1.5"));
        assertEquals("2:1.5", ConsistencySampler.mergeTimepoints(null, "2:1.5"));
        assertThrows(IllegalArgumentException.class, () -> ConsistencySampler.mergeTimepoints("2-1.5", "2:1"));
    }
}
