package ai.onestep.cli;

import ai.onestep.backend.Ops;
import ai.onestep.data.Datasets;
import ai.onestep.data.ImageDataset;
import ai.onestep.diffusion.ConsistencyDistiller;
import ai.onestep.diffusion.EdmDenoiser;
import ai.onestep.diffusion.TeacherSamples;
import ai.onestep.diffusion.TrainingStopped;
import ai.onestep.eval.FeatureNet;
import ai.onestep.eval.FidStats;
import ai.onestep.eval.Frechet;
import ai.onestep.model.Init;
import ai.onestep.model.StudentInit;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetCheckpoint;
import ai.onestep.model.UNetConfig;
import ai.onestep.tensor.Workspace;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "distill", mixinStandardHelpOptions = true,
        description = "Consistency distillation (Song et al. 2023, Algorithm 2) of a teacher into a 1/2/4-step student.")
final class Distill implements Callable<Integer> {
    @Mixin
    Common common;

    @Option(names = "--teacher", description = "Teacher checkpoint (default: models/fmnist-teacher.safetensors).") Path teacher;
    @Option(names = "--data", description = "fashion-mnist or a folder; omitted: data-free (the teacher's own samples).") String data;
    @Option(names = "--steps", defaultValue = "2000", description = "Optimizer steps (default: ${DEFAULT-VALUE}).") long steps;
    @Option(names = "--out", required = true, description = "Student checkpoint to write (.safetensors): the best validation so far.") Path out;
    @Option(names = "--student-width", description = "Channel multiplier of the student (default 1.0).") Double width;
    @Option(names = "--student-layers", description = "Res blocks per level (default: the teacher's).") Integer layers;
    @Option(names = "--force", description = "Replace --out if it exists (without --init of it).") boolean force;
    @Option(names = "--init", description = "Start from this student checkpoint (continue a distillation) instead of the teacher's weights.") Path init;
    @Option(names = "--guide", description = "A trained consistency student to distill from as well (e.g. the full-width "
            + "one for a smaller student): the target mixes its output at the student's input with Algorithm 2's target.") Path guide;
    @Option(names = "--guide-weight", description = "Weight of the guide's output in the target, in (0, 1]; "
            + "1 skips the teacher's Heun step (default: 1 with --guide).") Double guideWeightOption;
    double guideWeight = 1.0;
    @Option(names = "--feature-weight", description = "Weight of the feature distillation of the teacher's block outputs "
            + "through 1x1 projections (default: 0.5 for smaller students, 0 for a student of the teacher's size).") Double featureWeight;
    @Option(names = "--feature-decay", defaultValue = "linear", description = "none, linear or cosine decay of that weight to 0 at --steps.") String featureDecay;
    @Option(names = "--ema", defaultValue = "0.999", description = "Rate of the student's evaluation EMA, which validation scores and checkpoints hold (0: off).") double ema;
    @Option(names = "--denoiser-warmup", description = "Steps that first regress the teacher's denoiser (default: a quarter "
            + "of --steps for smaller students, 0 for a student of the teacher's size, which starts as the teacher).") Long warmup;
    @Option(names = "--lr-schedule", defaultValue = "constant", description = "constant, or cosine (decay to 0 at --steps).") String lrSchedule;
    @Option(names = "--loss", defaultValue = "pseudo-huber", description = "l2, pseudo-huber or feature.") String loss;
    @Option(names = "--weighting", defaultValue = "uniform", description = "uniform or inverse-step (1/(t_{n+1}-t_n)).") String weighting;
    @Option(names = "--optimizer", defaultValue = "radam", description = "radam or adam.") String optimizer;
    @Option(names = "--lr", defaultValue = "1e-4", description = "Learning rate (default: ${DEFAULT-VALUE}).") double lr;
    @Option(names = "--batch", defaultValue = "16", description = "Batch size (default: ${DEFAULT-VALUE}).") int batch;
    @Option(names = "--N", defaultValue = "18", description = "Discretization steps of the consistency grid.") int gridN;
    @Option(names = "--mu", defaultValue = "0.95", description = "EMA rate of the target (0 allowed).") double mu;
    @Option(names = "--clip", defaultValue = "1.0", description = "Gradient-norm clipping threshold (default: ${DEFAULT-VALUE}).") double clip;
    @Option(names = "--seed", defaultValue = "1", description = "Seed of the data order, noise and time steps (default: ${DEFAULT-VALUE}).") long seed;
    @Option(names = "--validate-every", defaultValue = "200", description = "Steps between validation FIDs; 0 turns validation off and keeps the last checkpoint (default: ${DEFAULT-VALUE}).") long validateEvery;
    @Option(names = "--patience", defaultValue = "4", description = "Stop after this many validations without improvement (default: ${DEFAULT-VALUE}).") int patience;
    @Option(names = "--val-n", defaultValue = "256", description = "Samples per validation FID.") int valN;
    @Option(names = "--teacher-samples", defaultValue = "512", description = "Data-free: teacher samples to cache.") int teacherSamples;
    @Option(names = "--teacher-steps", defaultValue = "18", description = "Data-free: Heun steps for those samples.") int teacherSteps;

    @Override
    public Integer call() {
        Common.requireNotInput("--out", out, "--teacher", teacher == null ? Common.model("fmnist-teacher.safetensors") : teacher,
                "--guide", guide);
        Common.requireNewOrForced(out, init, force, "--init it to continue that distillation");
        var dist = switch (loss) {
            case "l2" -> ConsistencyDistiller.Distance.L2;
            case "pseudo-huber" -> ConsistencyDistiller.Distance.PSEUDO_HUBER;
            case "feature" -> ConsistencyDistiller.Distance.FEATURE;
            default -> throw new IllegalArgumentException("--loss " + loss + ": choose l2, pseudo-huber or feature");
        };
        var weight = switch (weighting) {
            case "uniform" -> ConsistencyDistiller.Weighting.UNIFORM;
            case "inverse-step" -> ConsistencyDistiller.Weighting.INVERSE_STEP;
            default -> throw new IllegalArgumentException("--weighting " + weighting + ": choose uniform or inverse-step");
        };
        if (!optimizer.equals("radam") && !optimizer.equals("adam")) {
            throw new IllegalArgumentException("--optimizer " + optimizer + ": choose radam or adam");
        }
        if (!(mu >= 0 && mu < 1)) {
            throw new IllegalArgumentException("--mu must lie in [0, 1), got " + mu);
        }
        if (!(ema >= 0 && ema < 1)) {
            throw new IllegalArgumentException("--ema must lie in [0, 1), got " + ema);
        }
        if (featureWeight != null && (!(featureWeight >= 0) || !Double.isFinite(featureWeight))) {
            throw new IllegalArgumentException("--feature-weight must be a finite number >= 0, got " + featureWeight);
        }
        var decay = switch (featureDecay) {
            case "none" -> ConsistencyDistiller.Decay.NONE;
            case "linear" -> ConsistencyDistiller.Decay.LINEAR;
            case "cosine" -> ConsistencyDistiller.Decay.COSINE;
            default -> throw new IllegalArgumentException("--feature-decay " + featureDecay + ": choose none, linear or cosine");
        };
        if (!lrSchedule.equals("constant") && !lrSchedule.equals("cosine")) {
            throw new IllegalArgumentException("--lr-schedule " + lrSchedule + ": choose constant or cosine");
        }
        if (guideWeightOption != null) {
            if (guide == null) {
                throw new IllegalArgumentException("--guide-weight needs --guide (the trained student whose output it weighs)");
            }
            if (!(guideWeightOption > 0 && guideWeightOption <= 1)) {
                throw new IllegalArgumentException("--guide-weight must lie in (0, 1], got " + guideWeightOption);
            }
            guideWeight = guideWeightOption;
        }
        if (init != null && (width != null || layers != null)) {
            throw new IllegalArgumentException("--init takes the student's shape from its checkpoint: drop --student-width/--student-layers");
        }
        UNetCheckpoint.Loaded initial = null;
        if (init != null) {
            initial = UNetCheckpoint.load(Common.requireFile(init, "--init"), false);
            if (!initial.role().equals("student")) {
                String role = initial.role();
                initial.close();
                throw new IllegalArgumentException(init + " is a " + role + " checkpoint; --init needs a student");
            }
        }
        try (UNetCheckpoint.Loaded ini = initial; UNetCheckpoint.Loaded g = loadGuide()) {
            return run(ini, g, dist, weight, decay);
        }
    }

    private UNetCheckpoint.Loaded loadGuide() {
        if (guide == null) {
            return null;
        }
        UNetCheckpoint.Loaded g = UNetCheckpoint.load(Common.requireFile(guide, "--guide"), false);
        if (!g.role().equals("student")) {
            String role = g.role();
            g.close();
            throw new IllegalArgumentException(guide + " is a " + role + " checkpoint; --guide needs a consistency student");
        }
        return g;
    }

    private int run(UNetCheckpoint.Loaded initial, UNetCheckpoint.Loaded guideModel, ConsistencyDistiller.Distance dist,
                    ConsistencyDistiller.Weighting weight, ConsistencyDistiller.Decay decay) {
        Ops ops = common.ops();
        Path tpath = Common.requireFile(teacher != null ? teacher : Common.model("fmnist-teacher.safetensors"), "teacher");
        try (UNetCheckpoint.Loaded t = UNetCheckpoint.load(tpath, false)) {
            if (!t.role().equals("teacher")) {
                throw new IllegalArgumentException(tpath + " is a " + t.role()
                        + " checkpoint; distill needs a teacher (onestep.role = teacher)");
            }
            UNetConfig tc = t.net().config();
            UNetConfig sc = initial != null ? initial.net().config()
                    : StudentInit.config(tc, width == null ? 1.0 : width, layers == null ? tc.layersPerBlock() : layers);
            if (initial != null && (sc.inChannels() != tc.inChannels() || sc.sampleSize() != tc.sampleSize())) {
                throw new IllegalArgumentException(init + " makes " + sc.sampleSize() + "x" + sc.sampleSize() + "x"
                        + sc.inChannels() + " images but the teacher " + tpath + " makes " + tc.sampleSize() + "x"
                        + tc.sampleSize() + "x" + tc.inChannels());
            }
            // Feature distillation is for students smaller than the teacher; a same-size student starts as the
            // teacher itself, where the term starts at zero, so by default it is off there.
            boolean smaller = !java.util.Arrays.equals(sc.blockOutChannels(), tc.blockOutChannels())
                    || sc.layersPerBlock() != tc.layersPerBlock();
            double fw = featureWeight != null ? featureWeight : smaller ? 0.5 : 0;
            // A guide is a consistency function from the first step, so it needs no denoiser warm-up.
            long warm = warmup != null ? warmup : smaller && initial == null && guideModel == null ? steps / 4 : 0;
            Path classifierPath = Common.model("fmnist-classifier.safetensors");
            Path statsPath = Common.model("fmnist-fid-stats.safetensors");
            boolean canScore = Files.exists(classifierPath) && Files.exists(statsPath) && tc.inChannels() == 1
                    && tc.sampleSize() == 28;
            ImageDataset ds;
            if (data != null) {
                ds = Datasets.load(data, true);
            } else {
                System.err.printf(Locale.ROOT, "distill: data-free: %d teacher samples with %d Heun steps (cached)%n",
                        teacherSamples, teacherSteps);
                try (Progress p = new Progress("teacher samples", teacherSamples, 0, "samples")) {
                    ds = TeacherSamples.load(ops, t.net(), tpath, out.toAbsolutePath().getParent().resolve(".onestep-cache"),
                            teacherSamples, teacherSteps, seed, k -> p.step(k, Double.NaN, null));
                }
            }
            FeatureNet fnet = canScore ? FeatureNet.load(classifierPath, ops) : null;
            if (dist == ConsistencyDistiller.Distance.FEATURE && fnet == null) {
                throw new IllegalArgumentException("--loss feature needs " + classifierPath + " (28x28 grayscale models only)");
            }
            Frechet.Stats ref = canScore ? FidStats.load(statsPath) : null;
            if (!canScore) {
                System.err.println("distill: no FID-FMNIST for this model (classifier/statistics missing or not 28x28x1): "
                        + "validation off, the last checkpoint is kept");
            }
            var opts = new ConsistencyDistiller.Options(steps, batch, gridN, mu, dist, weight, optimizer.equals("radam"),
                    lr, clip, seed, validateEvery, patience, valN, fw, decay, ema, lrSchedule.equals("cosine"), warm);
            Map<String, String> meta = new LinkedHashMap<>();
            meta.put("onestep.distill.teacher", tpath.toString());
            if (guideModel != null) {
                meta.put("onestep.distill.guide", guide + " (weight " + guideWeight + ")");
            }
            long t0 = System.nanoTime();
            try (UNet student = new UNet(sc, true); UNet target = new UNet(sc, false); Workspace tws = new Workspace()) {
                Init.pytorchDefault(student, seed);
                int copied;
                if (initial != null) {
                    student.parameters().copyValuesFrom(initial.net().parameters());
                    initial.net().buffers().forEach((k, v) -> student.buffers().get(k).copyFrom(v));
                    copied = 0;
                    meta.put("onestep.distill.init", init.toString());
                } else {
                    copied = StudentInit.sliceFrom(t.net(), student);
                }
                target.parameters().copyValuesFrom(student.parameters());
                student.buffers().forEach((k, v) -> target.buffers().get(k).copyFrom(v));
                System.err.printf(Locale.ROOT, "distill: student %s, %,d parameters (teacher %,d), %s; "
                                + "FLOPs per step %.2f G (teacher %.2f G)%s%n", "channels " + java.util.Arrays.toString(sc.blockOutChannels())
                                + ", layers " + sc.layersPerBlock(), student.parameters().count(), t.net().parameters().count(),
                        initial != null ? "weights from " + init : copied + " tensors from the teacher",
                        student.flops(1, sc.sampleSize(), sc.sampleSize()) / 1e9, t.net().flops(1, tc.sampleSize(), tc.sampleSize()) / 1e9,
                        (fw > 0 ? String.format(Locale.ROOT, "; feature distillation weight %.3g (%s decay)", fw, featureDecay) : "")
                                + (warm > 0 ? "; denoiser warm-up " + warm + " steps" : "")
                                + (guideModel != null ? "; guide " + guide + " (weight " + guideWeight + ")" : ""));
                var d = new ConsistencyDistiller(ops, student, target, new EdmDenoiser(t.net(), ops, tws), ds,
                        fnet == null ? null : fnet.net(), opts, out, meta);
                if (guideModel != null) {
                    d.guide(guideModel.net(), guideWeight);
                }
                ConsistencyDistiller.Validation best;
                try (Progress p = new Progress("distill", steps, 0)) {
                    best = d.run(canScore ? x -> Frechet.distance(Frechet.stats(fnet.features(x)), ref) : null, p);
                } catch (TrainingStopped e) {
                    System.err.println("distill: " + e.getMessage());
                    return 3;
                } finally {
                    if (fnet != null) {
                        fnet.close();
                    }
                }
                System.out.printf(Locale.ROOT, "distilled in %.1f s; %s; wrote %s%n", (System.nanoTime() - t0) / 1e9,
                        best == null ? "no validation" : String.format(Locale.ROOT, "best at step %d: FID-FMNIST 1-step %.3f, 2-step %.3f",
                                best.step(), best.fid1(), best.fid2()), out);
            }
        }
        return 0;
    }
}
