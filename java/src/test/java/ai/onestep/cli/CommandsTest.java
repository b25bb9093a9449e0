package ai.onestep.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.api.Sampler;
import ai.onestep.backend.OpsTesting;
import ai.onestep.diffusion.EdmDenoiser;
import ai.onestep.eval.FeatureNet;
import ai.onestep.eval.FidStats;
import ai.onestep.eval.Frechet;
import ai.onestep.io.Json;
import ai.onestep.io.Safetensors;
import ai.onestep.model.Classifier;
import ai.onestep.model.Init;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetCheckpoint;
import ai.onestep.model.UNetConfig;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The CLI as a user runs it: exit codes, one-line errors, and the files each command writes. */
class CommandsTest {
    @TempDir
    Path home;
    Path teacher;

    static final String CFG = "{\"sample_size\": 28, \"in_channels\": 1, \"out_channels\": 1,"
            + "\"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"], \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"],"
            + "\"block_out_channels\": [8, 8], \"layers_per_block\": 1, \"attention_head_dim\": 4, \"norm_num_groups\": 4}";

    record Run(int code, String out, String err) {
    }

    static Run run(String... args) {
        PrintStream o = System.out, e = System.err;
        ByteArrayOutputStream bo = new ByteArrayOutputStream(), be = new ByteArrayOutputStream();
        int code;
        try {
            System.setOut(new PrintStream(bo, true, StandardCharsets.UTF_8));
            System.setErr(new PrintStream(be, true, StandardCharsets.UTF_8));
            code = Main.run(args);
        } finally {
            System.setOut(o);
            System.setErr(e);
        }
        return new Run(code, bo.toString(StandardCharsets.UTF_8), be.toString(StandardCharsets.UTF_8));
    }

    @BeforeEach
    void models() throws Exception {
        System.setProperty("onestep.home", home.toString());
        Path models = Files.createDirectories(home.resolve("models"));
        teacher = models.resolve("fmnist-teacher.safetensors");
        try (UNet net = new UNet(UNetConfig.parse(CFG, "test"), false)) {
            Init.pytorchDefault(net, 1);
            UNetCheckpoint.save(teacher, net, Map.of(UNetCheckpoint.ROLE, "teacher"), null);
        }
        try (Classifier c = new Classifier(1, 8, 10, false); TensorArena a = new TensorArena()) {
            Init.pytorchDefault(c.parameters(), c.torchLayouts(), 2);
            FeatureNet.save(c, models.resolve("fmnist-classifier.safetensors"), Map.of());
            FeatureNet f = new FeatureNet(c, OpsTesting.CPU);
            Tensor x = a.allocate(Layout.NHWC, 40, 28, 28, 1);
            Noise.gaussian(x, 3, 0);
            FidStats.save(Frechet.stats(f.features(x)), models.resolve("fmnist-fid-stats.safetensors"), Map.of());
        }
    }

    @Test
    void precisionReachesTheSamplingBackend() {
        // --precision travels to the backend that samples (it once stopped at Common.ops(), which eval, sample and
        // report never called). The emulated library is the repository's build; its absence skips this test unless
        // the build said it is there (bin/test sets onestep.cuda.requireEmulated).
        Path lib = Path.of("..", "build", "kernels", "emu", "libonestep_kernels.so").toAbsolutePath().normalize();
        if (!Boolean.getBoolean("onestep.cuda.requireEmulated")) {
            org.junit.jupiter.api.Assumptions.assumeTrue(Files.isRegularFile(lib), "no emulated library at " + lib);
        }
        String saved = System.getProperty("onestep.kernels.emulated");
        System.setProperty("onestep.kernels.emulated", lib.toString());
        try {
            Run eval = run("eval", "--backend", "cuda-emulated", "--precision", "bf16", "--steps", "2", "--n", "4",
                    "--json");
            assertEquals(0, eval.code(), eval.err());
            var m = Json.parseObject(eval.out().trim());
            assertEquals("cuda-emulated", m.get("backend"), eval.out());
            assertEquals("bf16", m.get("precision"), eval.out());
            Run bad = run("sample", "--precision", "fp8", "--n", "1", "--out", home.resolve("x.png").toString());
            assertEquals(2, bad.code(), bad.err());
            assertTrue(bad.err().contains("precision must be fp32, fp16 or bf16, got 'fp8'"), bad.err());
        } finally {
            if (saved == null) {
                System.clearProperty("onestep.kernels.emulated");
            } else {
                System.setProperty("onestep.kernels.emulated", saved);
            }
        }
    }

    @Test
    void anOutputOverAnInputIsRefusedBeforeAnyWork() throws Exception {
        byte[] before = Files.readAllBytes(teacher);
        Run distill = run("distill", "--teacher", teacher.toString(), "--out", teacher.toString(), "--steps", "1");
        assertEquals(2, distill.code(), distill.err());
        assertTrue(distill.err().contains("--out " + teacher + " is also the --teacher file"), distill.err());
        Run export = run("export", "--model", teacher.toString(), "--out", teacher.toString());
        assertEquals(2, export.code(), export.err());
        assertTrue(export.err().contains("is also the --model file"), export.err());
        assertArrayEquals(before, Files.readAllBytes(teacher));
    }

    @Test
    void aCountBelowOneNamesItsFlag() {
        Run batch = run("distill", "--batch", "0", "--out", home.resolve("s.safetensors").toString());
        assertEquals(2, batch.code(), batch.err());
        assertEquals("onestep distill: --batch must be >= 1, got 0", batch.err().strip());
        Run n = run("timepoints", "--model", teacher.toString(), "--n", "-3");
        assertEquals(2, n.code(), n.err());
        assertTrue(n.err().contains("--n must be >= 1, got -3"), n.err());
        Run help = run("sample", "--n", "0", "--help");  // help wins over the checks
        assertEquals(0, help.code(), help.err());
    }

    @Test
    void aStudentExportedForDiffusersLoadsBackAsAStudent() throws Exception {
        Path student = Path.of("../models/fmnist-student-half.safetensors");
        Path folder = home.resolve("diffusers-student");
        Run export = run("export", "--model", student.toString(), "--out", home.resolve("e.safetensors").toString(),
                "--diffusers", folder.toString());
        assertEquals(0, export.code(), export.err());
        Run info = run("info", folder.toString());
        assertEquals(0, info.code(), info.err());
        assertTrue(info.out().contains("role        student") && info.out().contains(Sampler.TIMEPOINTS), info.out());
        // A role the engine does not know is refused, not read as a teacher.
        try (UNetCheckpoint.Loaded l = UNetCheckpoint.load(teacher, false)) {
            UNetCheckpoint.save(home.resolve("b.safetensors"), l.net(), Map.of(UNetCheckpoint.ROLE, "banana"), null);
        }
        Run banana = run("sample", "--model", home.resolve("b.safetensors").toString(), "--n", "1",
                "--out", home.resolve("b.png").toString());
        assertEquals(2, banana.code(), banana.err());
        assertTrue(banana.err().contains("holds a banana, not a U-Net checkpoint"), banana.err());
    }

    @Test
    void anOutputThatCannotBeWrittenIsRefusedBeforeTheWork() throws Exception {
        Run missing = run("sample", "--n", "1", "--out", home.resolve("no/such/g.png").toString());
        assertEquals(2, missing.code(), missing.err());
        assertTrue(missing.err().contains("folder " + home.resolve("no/such").toAbsolutePath() + " does not exist"),
                missing.err());
        Run folder = run("distill", "--out", home.toString(), "--steps", "1");
        assertEquals(2, folder.code(), folder.err());
        assertTrue(folder.err().contains("is a folder; name a file"), folder.err());
        Path file = Files.writeString(home.resolve("a-file"), "x");
        Run report = run("report", "--out", file.toString());
        assertEquals(2, report.code(), report.err());
        assertTrue(report.err().contains("is a file; name a folder"), report.err());
        Run typo = run("sample", "--nn", "3");
        assertEquals(2, typo.code(), typo.err());
        assertEquals(1, typo.err().strip().lines().count(), typo.err());
    }

    @Test
    void aNewRunDoesNotReplaceAnExistingCheckpointUnlessForced() throws Exception {
        Path trained = home.resolve("trained.safetensors");
        Files.copy(teacher, trained);
        byte[] before = Files.readAllBytes(trained);
        Run teach = run("train-teacher", "--data", home.toString(), "--out", trained.toString(), "--steps", "1");
        assertEquals(2, teach.code(), teach.err());
        assertTrue(teach.err().contains("exists; --resume it to continue its training, or pass --force"), teach.err());
        Run distill = run("distill", "--out", trained.toString(), "--steps", "1");
        assertEquals(2, distill.code(), distill.err());
        assertTrue(distill.err().contains("exists; --init it to continue that distillation, or pass --force"),
                distill.err());
        assertArrayEquals(before, Files.readAllBytes(trained));
    }

    @Test
    void wrongInputsAreNamedBeforeTheLongWork() throws Exception {
        Run report = run("report", "--student", teacher.toString(), "--n", "8", "--out", home.resolve("r").toString());
        assertEquals(2, report.code(), report.err());
        assertTrue(report.err().contains("is a teacher; --student needs a consistency student"), report.err());
        assertTrue(!report.err().contains("teacher fmnist"), "no teacher rows were measured first: " + report.err());
        Run config = run("train-teacher", "--config", home.toString(), "--data", home.toString(), "--out",
                home.resolve("c.safetensors").toString());
        assertEquals(2, config.code(), config.err());
        assertTrue(config.err().contains("is a folder; give a config.json file"), config.err());
        Run data = run("train-teacher", "--data", teacher.toString(), "--out", home.resolve("d.safetensors").toString());
        assertEquals(2, data.code(), data.err());
        assertTrue(data.err().contains("a file, not a folder"), data.err());
    }

    @Test
    void trainClassifierChecksItsFloorBeforeTraining() {
        Run r = run("train-classifier", "--floor-n", "1", "--steps", "1", "--out", home.resolve("c.safetensors").toString(),
                "--stats-out", home.resolve("s.safetensors").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("--floor-n must lie in [2, 60000]"), r.err());
    }

    @Test
    void timepointsCanWriteItsResultElsewhere() throws Exception {
        Path student = Files.copy(Path.of("../models/fmnist-student-half.safetensors"), home.resolve("st.safetensors"));
        byte[] before = Files.readAllBytes(student);
        Path searched = home.resolve("searched.safetensors");
        Run r = run("timepoints", "--model", student.toString(), "--out", searched.toString(), "--N", "4", "--n", "4",
                "--max-steps", "2");
        assertEquals(0, r.code(), r.err());
        assertArrayEquals(before, Files.readAllBytes(student), "--model is left as it was");
        try (UNetCheckpoint.Loaded l = UNetCheckpoint.load(searched, false)) {
            assertEquals("student", l.role());
            assertTrue(l.metadata().get(Sampler.TIMEPOINTS).startsWith("2:"), l.metadata().toString());
        }
        Run same = run("timepoints", "--model", student.toString(), "--out", student.toString());
        assertEquals(2, same.code(), same.err());
        assertTrue(same.err().contains("is also the --model file"), same.err());
    }

    @Test
    void tooLargeARequestIsOneLineNotAStackTrace() {
        Run huge = run("sample", "--n", "2000000000", "--steps", "1", "--out", home.resolve("h.png").toString());
        assertEquals(2, huge.code(), huge.err());
        assertTrue(huge.err().startsWith("onestep: out of memory") && huge.err().strip().lines().count() == 1, huge.err());
        Run threads = run("sample", "--threads", "100000", "--n", "1", "--out", home.resolve("t.png").toString());
        assertEquals(2, threads.code(), threads.err());
        assertTrue(threads.err().contains("thread count must be in 1..1024"), threads.err());
    }

    @Test
    void infoDescribesTheCommittedFilesThatAreNotUNets() {
        Run stats = run("info", Path.of("../models/fmnist-fid-stats.safetensors").toString());
        assertEquals(0, stats.code(), stats.err());
        assertTrue(stats.out().contains("role        fid-stats") && stats.out().contains("sigma F32 [192, 192]"),
                stats.out());
        Run classifier = run("info", Path.of("../models/fmnist-classifier.safetensors").toString());
        assertEquals(0, classifier.code(), classifier.err());
        assertTrue(classifier.out().contains("role        classifier")
                && classifier.out().contains("meta        test_accuracy = 0.9036"), classifier.out());
    }

    @Test
    void infoSampleAndEvalWork() throws Exception {
        Run info = run("info", teacher.toString());
        assertEquals(0, info.code(), info.err());
        assertTrue(info.out().contains("role        teacher") && info.out().contains("flops"), info.out());
        Path png = home.resolve("g.png");
        Run sample = run("sample", "--steps", "2", "--n", "3", "--out", png.toString());
        assertEquals(0, sample.code(), sample.err());
        assertTrue(Files.size(png) > 100);
        assertTrue(sample.out().contains("3 NFE"), sample.out());
        Run eval = run("eval", "--steps", "2", "--n", "8", "--json");
        assertEquals(0, eval.code(), eval.err());
        var m = Json.parseObject(eval.out().trim());
        for (String k : new String[] {"fid", "nfe", "n", "seconds"}) {
            assertTrue(m.containsKey(k), k + " in " + eval.out());
        }
        assertEquals(3L, m.get("nfe"));
        assertTrue(((Double) m.get("fid")) > 0);
    }

    @Test
    void denoiseMatchesTheDenoiserInPyTorchLayout() throws Exception {
        Path in = home.resolve("x.safetensors"), out = home.resolve("y.safetensors");
        try (TensorArena a = new TensorArena()) {
            Tensor nchw = a.allocate(Layout.NCHW, 2, 1, 28, 28);
            SplittableRandom r = new SplittableRandom(4);
            for (long i = 0; i < nchw.size(); i++) {
                nchw.set(i, (float) r.nextGaussian());
            }
            Safetensors.write(in, Map.of("x", nchw), Map.of());
            Run d = run("denoise", "--model", teacher.toString(), "--input", in.toString(), "--sigma", "1.5", "--out", out.toString());
            assertEquals(0, d.code(), d.err());
            try (Safetensors.Reader rd = Safetensors.open(out); UNetCheckpoint.Loaded l = UNetCheckpoint.load(teacher, false);
                 Workspace ws = new Workspace()) {
                Tensor y = rd.read("y", a, Layout.NCHW, 2, 1, 28, 28);
                // One channel: NCHW and NHWC hold the same numbers, so the denoiser can run on a view.
                Tensor x = nchw.reshape(Layout.NHWC, 2, 28, 28, 1);
                Tensor ref = a.allocate(Layout.NHWC, 2, 28, 28, 1);
                new EdmDenoiser(l.net(), OpsTesting.CPU, ws).denoise(x, new double[] {1.5, 1.5}, null, ref);
                OpsTesting.assertClose("denoise CLI vs API", y.reshape(Layout.NHWC, 2, 28, 28, 1), ref, 1e-6);
            }
        }
    }

    @Test
    void badInputGivesOneLineAndExitCode2() throws Exception {
        Path corrupt = home.resolve("bad.safetensors");
        Files.write(corrupt, new byte[] {9, 9, 9, 9, 9, 9, 9, 9, 1});
        Run[] runs = {
            run("info", home.resolve("missing.safetensors").toString()),
            run("sample", "--model", corrupt.toString()),
            run("train-teacher", "--data", home.resolve("nodata").toString(), "--out", home.resolve("t.safetensors").toString()),
            run("train-teacher", "--data", home.toString(), "--config", "nope.json", "--out", home.resolve("t.safetensors").toString()),
            run("denoise", "--model", teacher.toString(), "--input", teacher.toString(), "--sigma", "1", "--out", home.resolve("y").toString()),
        };
        String[] expect = {"missing.safetensors", "bad.safetensors", "nodata", "nope.json", "'x'"};
        for (int i = 0; i < runs.length; i++) {
            assertEquals(2, runs[i].code(), runs[i].err());
            String err = runs[i].err().strip();
            assertTrue(err.contains(expect[i]), err);
            assertTrue(!err.contains("\tat ") && err.lines().count() == 1, "one line, no stack trace: " + err);
        }
    }

    @Test
    void distillRefusesAStudentAsTeacher() throws Exception {
        Path student = home.resolve("s.safetensors");
        try (UNetCheckpoint.Loaded l = UNetCheckpoint.load(teacher, false)) {
            UNetCheckpoint.save(student, l.net(), Map.of(UNetCheckpoint.ROLE, "student"), null);
        }
        Run r = run("distill", "--teacher", student.toString(), "--out", home.resolve("o.safetensors").toString(), "--steps", "1");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("is a student checkpoint; distill needs a teacher"), r.err());
    }

    @Test
    void dataFreeDistillationWritesAStudentThatSamples() throws Exception {
        Path student = home.resolve("s.safetensors");
        Run r = run("distill", "--out", student.toString(), "--steps", "2", "--batch", "2", "--validate-every", "2",
                "--val-n", "4", "--teacher-samples", "4", "--teacher-steps", "2");
        assertEquals(0, r.code(), r.err());
        Run s = run("sample", "--model", student.toString(), "--steps", "2", "--n", "2", "--out", home.resolve("s.png").toString());
        assertEquals(0, s.code(), s.err());
        assertTrue(s.out().contains("2 NFE"), s.out());
    }

    @Test
    void halfWidthStudentWithFeatureDistillationThenContinuedWithInit() throws Exception {
        Path half = home.resolve("half.safetensors"), more = home.resolve("more.safetensors");
        Run r = run("distill", "--out", half.toString(), "--student-width", "0.5", "--feature-weight", "0.5",
                "--steps", "2", "--batch", "2", "--validate-every", "2", "--val-n", "4", "--teacher-samples", "4",
                "--teacher-steps", "2");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("feature distillation weight 0.500 (linear decay)"), r.err());
        Run c = run("distill", "--init", half.toString(), "--out", more.toString(), "--steps", "2", "--batch", "2",
                "--validate-every", "2", "--val-n", "4", "--teacher-samples", "4", "--teacher-steps", "2");
        assertEquals(0, c.code(), c.err());
        assertTrue(c.err().contains("weights from " + half), c.err());
        try (UNetCheckpoint.Loaded h = UNetCheckpoint.load(half, false); UNetCheckpoint.Loaded m = UNetCheckpoint.load(more, false)) {
            assertArrayEquals(h.net().config().blockOutChannels(), m.net().config().blockOutChannels(),
                    "--init keeps the student's shape");
            try (UNetCheckpoint.Loaded t = UNetCheckpoint.load(teacher, false)) {
                int[] tc = t.net().config().blockOutChannels(), sc = m.net().config().blockOutChannels();
                for (int i = 0; i < tc.length; i++) {
                    assertEquals(tc[i] / 2, sc[i], "half the teacher's channels at level " + i);
                }
            }
            assertEquals(half.toString(), m.metadata().get("onestep.distill.init"));
        }
        Run wrongRole = run("distill", "--force", "--init", teacher.toString(), "--out", more.toString(), "--steps", "1");
        assertEquals(2, wrongRole.code());
        assertTrue(wrongRole.err().contains("--init needs a student"), wrongRole.err());
        Run both = run("distill", "--force", "--init", half.toString(), "--student-width", "0.5", "--out", more.toString());
        assertEquals(2, both.code());
        assertTrue(both.err().contains("drop --student-width"), both.err());
    }

    @Test
    void aHalfWidthStudentDistilledFromAGuideStudent() throws Exception {
        // The guide: a (2-step) full-size student; the half-width student learns its outputs (no warm-up needed).
        Path guide = home.resolve("guide.safetensors"), half = home.resolve("half.safetensors");
        Run g = run("distill", "--out", guide.toString(), "--steps", "2", "--batch", "2", "--validate-every", "2",
                "--val-n", "4", "--teacher-samples", "4", "--teacher-steps", "2");
        assertEquals(0, g.code(), g.err());
        Run r = run("distill", "--out", half.toString(), "--student-width", "0.5", "--guide", guide.toString(),
                "--steps", "2", "--batch", "2", "--validate-every", "2", "--val-n", "4", "--teacher-samples", "4",
                "--teacher-steps", "2");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("guide " + guide + " (weight 1.0)"), r.err());
        assertFalse(r.err().contains("denoiser warm-up"), "a guided student needs no warm-up: " + r.err());
        try (UNetCheckpoint.Loaded h = UNetCheckpoint.load(half, false)) {
            assertEquals(guide + " (weight 1.0)", h.metadata().get("onestep.distill.guide"));
        }
        Run wrongRole = run("distill", "--force", "--guide", teacher.toString(), "--out", half.toString(), "--steps", "1");
        assertEquals(2, wrongRole.code());
        assertTrue(wrongRole.err().contains("--guide needs a consistency student"), wrongRole.err());
        Run badWeight = run("distill", "--force", "--guide", guide.toString(), "--guide-weight", "0", "--out", half.toString());
        assertEquals(2, badWeight.code());
        assertTrue(badWeight.err().contains("--guide-weight must lie in (0, 1]"), badWeight.err());
        Run noGuide = run("distill", "--force", "--guide-weight", "0.5", "--out", half.toString());
        assertEquals(2, noGuide.code());
        assertTrue(noGuide.err().contains("--guide-weight needs --guide"), noGuide.err());
    }
}
