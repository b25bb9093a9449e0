package ai.onestep.diffusion;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.OpsTesting;
import ai.onestep.data.ImageDataset;
import ai.onestep.model.Init;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetCheckpoint;
import ai.onestep.model.UNetConfig;
import ai.onestep.nn.Parameter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class TeacherTrainerTest {
    @TempDir
    Path dir;

    static UNetConfig cfg() {
        return UNetConfig.parse("{\"sample_size\": 8, \"in_channels\": 1, \"out_channels\": 1,"
                + "\"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"], \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"],"
                + "\"block_out_channels\": [8, 8], \"layers_per_block\": 1, \"attention_head_dim\": 4, \"norm_num_groups\": 4,"
                + "\"dropout\": 0.1}", "test");
    }

    static ImageDataset data() {
        byte[] px = new byte[20 * 64];
        SplittableRandom r = new SplittableRandom(1);
        for (int i = 0; i < px.length; i++) {
            px[i] = (byte) r.nextInt(256);
        }
        return new ImageDataset("synthetic", px, 20, 8, 8, 1, null, 0);
    }

    static TeacherTrainer.Options opts(long steps, double lr) {
        return new TeacherTrainer.Options(steps, 4, lr, 2, 0.9, 1.0, 0.01, 2, 5, true, true);
    }

    private List<Double> losses(Path out, long steps, Path resume) {
        List<Double> l = new ArrayList<>();
        try (UNet net = new UNet(cfg(), true)) {
            Init.pytorchDefault(net, 1);
            new TeacherTrainer(OpsTesting.CPU, net, data(), opts(steps, 1e-3), out, dir.resolve("m.jsonl"))
                    .run(resume, (s, loss, note) -> l.add(loss));
        }
        return l;
    }

    @Test
    void resumeFollowsTheSameLossCurveAsAnUninterruptedRun() {
        Path straight = dir.resolve("straight.safetensors");
        List<Double> all = losses(straight, 6, null);
        Path half = dir.resolve("half.safetensors");
        List<Double> first = losses(half, 4, null);
        List<Double> rest = losses(half, 6, half);
        List<Double> joined = new ArrayList<>(first);
        joined.addAll(rest);
        assertEquals(all, joined, "same seed, resumed at step 4");
        try (var a = UNetCheckpoint.load(straight, false); var b = UNetCheckpoint.load(half, false)) {
            for (Parameter p : a.net().parameters()) {
                assertArrayEquals(p.value().toArray(), b.net().parameters().get(p.name()).value().toArray(), p.name());
            }
        }
    }

    @Test
    void nonFiniteLossStopsAndKeepsTheLastGoodCheckpoint() throws Exception {
        Path out = dir.resolve("t.safetensors");
        try (UNet net = new UNet(cfg(), true)) {
            Init.pytorchDefault(net, 1);
            // An absurd learning rate with no warm-up and no clipping blows the weights up at once.
            var o = new TeacherTrainer.Options(50, 4, 1e30, 0, 0.9, 1e30, 0, 1, 5, false, true);
            TrainingStopped e = assertThrows(TrainingStopped.class,
                    () -> new TeacherTrainer(OpsTesting.CPU, net, data(), o, out, null).run(null, TrainingProgress.NONE));
            assertTrue(e.getMessage().contains("not finite") && e.getMessage().contains("no checkpoint was written yet"),
                    e.getMessage());
            assertTrue(!Files.exists(out), "a checkpoint of exploded weights was written");
        }
    }

    /**
     * The update of a step whose loss and (clipped) gradient are finite can still leave weights so large that the next
     * forward pass overflows: the checkpoint of that step would only ever sample NaN, so it is not written, and the
     * one before it stays as it was.
     */
    @Test
    void anUpdateThatOverflowsTheNetworkDoesNotReplaceTheLastGoodCheckpoint() throws Exception {
        Path out = dir.resolve("g.safetensors");
        try (UNet net = new UNet(cfg(), true)) {
            Init.pytorchDefault(net, 1);
            new TeacherTrainer(OpsTesting.CPU, net, data(), new TeacherTrainer.Options(2, 4, 1e-3, 0, 0.9, 1.0, 0, 1, 5,
                    false, true), out, null).run(null, TrainingProgress.NONE);
        }
        byte[] good = Files.readAllBytes(out);
        try (UNet net = new UNet(cfg(), true)) {
            var absurd = new TeacherTrainer.Options(50, 4, 1e30, 0, 0.9, 1.0, 0, 1, 5, false, true);
            TrainingStopped e = assertThrows(TrainingStopped.class,
                    () -> new TeacherTrainer(OpsTesting.CPU, net, data(), absurd, out, null).run(out, TrainingProgress.NONE));
            assertTrue(e.getMessage().contains("not finite") && e.getMessage().contains("was not overwritten"),
                    e.getMessage());
        }
        assertArrayEquals(good, Files.readAllBytes(out));
        try (var l = UNetCheckpoint.load(out, false)) {
            assertEquals(null, WeightsProbe.nonFinite(l.net()));
        }
    }

    @Test
    void settingsOutsideTheirRangeNameTheirFlag() {
        var ema = assertThrows(IllegalArgumentException.class,
                () -> new TeacherTrainer.Options(10, 4, 1e-3, 0, 2.0, 1.0, 0, 5, 1, false, true));
        assertTrue(ema.getMessage().contains("--ema must lie in [0, 1), got 2.0"), ema.getMessage());
        var warmup = assertThrows(IllegalArgumentException.class,
                () -> new TeacherTrainer.Options(10, 4, 1e-3, -5, 0.9, 1.0, 0, 5, 1, false, true));
        assertTrue(warmup.getMessage().contains("--warmup must be >= 0, got -5"), warmup.getMessage());
        var clip = assertThrows(IllegalArgumentException.class,
                () -> new TeacherTrainer.Options(10, 4, 1e-3, 0, 0.9, 0, 0, 5, 1, false, true));
        assertTrue(clip.getMessage().contains("--clip must be > 0"), clip.getMessage());
    }

    @Test
    void emaRateRampsUpToItsTarget() {
        assertEquals(2.0 / 11, TeacherTrainer.emaRate(0.999, 1), 1e-15);
        assertEquals(0.5, TeacherTrainer.emaRate(0.999, 8), 1e-15);
        assertEquals(0.999, TeacherTrainer.emaRate(0.999, 1_000_000), 1e-15);
        // After 1,000 updates the initial weights keep prod(rate) of their share: negligible with the ramp.
        double keep = 1;
        for (int k = 1; k <= 1000; k++) {
            keep *= TeacherTrainer.emaRate(0.999, k);
        }
        assertTrue(keep < 1e-6, "share of the random init left in the EMA: " + keep);
    }

    @Test
    void dataThatDoesNotFitTheConfigIsRejected() {
        ImageDataset rgb = new ImageDataset("rgb", new byte[2 * 64 * 3], 2, 8, 8, 3, null, 0);
        try (UNet net = new UNet(cfg(), true)) {
            var e = assertThrows(IllegalArgumentException.class,
                    () -> new TeacherTrainer(OpsTesting.CPU, net, rgb, opts(1, 1e-3), dir.resolve("x"), null));
            assertTrue(e.getMessage().contains("3-channel"), e.getMessage());
        }
    }

    @Test
    void resumeFromAWeightsOnlyCheckpointIsAClearError() {
        Path out = dir.resolve("w.safetensors");
        try (UNet net = new UNet(cfg(), true)) {
            UNetCheckpoint.save(out, net, Map.of(), null);
            var e = assertThrows(RuntimeException.class, () -> new TeacherTrainer(OpsTesting.CPU, net, data(),
                    opts(2, 1e-3), dir.resolve("o.safetensors"), null).run(out, TrainingProgress.NONE));
            assertTrue(e.getMessage().contains("no training state") && e.getMessage().contains("--no-train-state"), e.getMessage());
        }
    }
}
