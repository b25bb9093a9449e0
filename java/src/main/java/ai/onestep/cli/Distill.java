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
    @Option(names = "--steps", defaultValue = "2000") long steps;
    @Option(names = "--out", required = true) Path out;
    @Option(names = "--student-width", defaultValue = "1.0", description = "Channel multiplier of the student.") double width;
    @Option(names = "--student-layers", description = "Res blocks per level (default: the teacher's).") Integer layers;
    @Option(names = "--loss", defaultValue = "pseudo-huber", description = "l2, pseudo-huber or feature.") String loss;
    @Option(names = "--weighting", defaultValue = "uniform", description = "uniform or inverse-step (1/(t_{n+1}-t_n)).") String weighting;
    @Option(names = "--optimizer", defaultValue = "radam", description = "radam or adam.") String optimizer;
    @Option(names = "--lr", defaultValue = "1e-4") double lr;
    @Option(names = "--batch", defaultValue = "16") int batch;
    @Option(names = "--N", defaultValue = "18", description = "Discretization steps of the consistency grid.") int gridN;
    @Option(names = "--mu", defaultValue = "0.95", description = "EMA rate of the target (0 allowed).") double mu;
    @Option(names = "--clip", defaultValue = "1.0") double clip;
    @Option(names = "--seed", defaultValue = "1") long seed;
    @Option(names = "--validate-every", defaultValue = "200") long validateEvery;
    @Option(names = "--patience", defaultValue = "4") int patience;
    @Option(names = "--val-n", defaultValue = "256", description = "Samples per validation FID.") int valN;
    @Option(names = "--teacher-samples", defaultValue = "512", description = "Data-free: teacher samples to cache.") int teacherSamples;
    @Option(names = "--teacher-steps", defaultValue = "18", description = "Data-free: Heun steps for those samples.") int teacherSteps;

    @Override
    public Integer call() {
        Path tpath = Common.requireFile(teacher != null ? teacher : Common.model("fmnist-teacher.safetensors"), "teacher");
        Ops ops = common.ops();
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
        try (UNetCheckpoint.Loaded t = UNetCheckpoint.load(tpath, false)) {
            if (!t.role().equals("teacher")) {
                throw new IllegalArgumentException(tpath + " is a " + t.role()
                        + " checkpoint; distill needs a teacher (onestep.role = teacher)");
            }
            UNetConfig tc = t.net().config();
            UNetConfig sc = StudentInit.config(tc, width, layers == null ? tc.layersPerBlock() : layers);
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
                try (Progress p = new Progress("teacher samples", teacherSamples, 0)) {
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
                    lr, clip, seed, validateEvery, patience, valN);
            Map<String, String> meta = new LinkedHashMap<>();
            meta.put("onestep.distill.teacher", tpath.toString());
            long t0 = System.nanoTime();
            try (UNet student = new UNet(sc, true); UNet target = new UNet(sc, false); Workspace tws = new Workspace()) {
                Init.pytorchDefault(student, seed);
                int copied = StudentInit.sliceFrom(t.net(), student);
                target.parameters().copyValuesFrom(student.parameters());
                student.buffers().forEach((k, v) -> target.buffers().get(k).copyFrom(v));
                System.err.printf(Locale.ROOT, "distill: student %s, %,d parameters (teacher %,d), %d tensors from the teacher; "
                                + "FLOPs per step %.2f G (teacher %.2f G)%n", "width " + width + ", layers " + sc.layersPerBlock(),
                        student.parameters().count(), t.net().parameters().count(), copied,
                        student.flops(1, sc.sampleSize(), sc.sampleSize()) / 1e9, t.net().flops(1, tc.sampleSize(), tc.sampleSize()) / 1e9);
                var d = new ConsistencyDistiller(ops, student, target, new EdmDenoiser(t.net(), ops, tws), ds,
                        fnet == null ? null : fnet.net(), opts, out, meta);
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
