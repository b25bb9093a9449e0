package ai.onestep.cli;

import ai.onestep.api.Sampler;
import ai.onestep.eval.FeatureNet;
import ai.onestep.eval.FidStats;
import ai.onestep.eval.Frechet;
import ai.onestep.io.Json;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "eval", mixinStandardHelpOptions = true,
        description = "FID-FMNIST of a model's samples: Frechet distance of the in-domain classifier's features "
                + "to those of the 10,000 Fashion-MNIST test images.")
final class Eval implements Callable<Integer> {
    @Mixin
    Common common;

    @Option(names = "--model", description = "Checkpoint (default: models/fmnist-teacher.safetensors).") Path model;
    @Option(names = "--steps", description = "As for sample (teacher default 18, student default 1).") Integer steps;
    @Option(names = "--n", defaultValue = "1000", description = "Samples (default: ${DEFAULT-VALUE}).") int n;
    @Option(names = "--seed", defaultValue = "0", description = "Noise seed of the samples (default: ${DEFAULT-VALUE}).") long seed;
    @Option(names = "--json", description = "Print one JSON object.") boolean json;
    @Option(names = "--classifier", description = "Default: models/fmnist-classifier.safetensors.") Path classifier;
    @Option(names = "--stats", description = "Reference statistics (default: models/fmnist-fid-stats.safetensors).") Path stats;

    @Override
    public Integer call() {
        Path m = Common.requireFile(model != null ? model : Common.model("fmnist-teacher.safetensors"), "model");
        Path c = Common.requireFile(classifier != null ? classifier : Common.model("fmnist-classifier.safetensors"), "classifier");
        Path st = Common.requireFile(stats != null ? stats : Common.model("fmnist-fid-stats.safetensors"), "FID statistics");
        if (n < 2) {
            throw new IllegalArgumentException("--n must be >= 2 for a covariance, got " + n);
        }
        Frechet.Stats ref = FidStats.load(st);
        try (Sampler s = common.sampler(m); FeatureNet f = FeatureNet.load(c, s.ops());
             TensorArena a = new TensorArena()) {
            int stp = steps != null ? steps : s.isStudent() ? 1 : 18;
            long t0 = System.nanoTime();
            Tensor x = Common.sample(s, m, n, stp, seed, a);
            double secs = (System.nanoTime() - t0) / 1e9;
            double fid = Frechet.distance(Frechet.stats(f.features(x)), ref);
            if (json) {
                Map<String, Object> o = new LinkedHashMap<>();
                o.put("model", m.toString());
                o.put("role", s.isStudent() ? "student" : "teacher");
                o.put("fid", fid);
                o.put("nfe", (long) s.nfe(stp));
                o.put("steps", (long) stp);
                o.put("n", (long) n);
                o.put("seconds", secs);
                o.put("backend", s.ops().name());
                if (s.ops() instanceof ai.onestep.backend.cuda.CudaOps cuda) {
                    o.put("precision", cuda.precision().label());  // of the sampling passes
                }
                System.out.println(Json.write(o));
            } else {
                System.out.printf(Locale.ROOT, "FID-FMNIST %.3f  (%d samples, %d steps = %d NFE, %.2f s sampling on %s)%n",
                        fid, n, stp, s.nfe(stp), secs, Common.describe(s.ops()));
            }
        }
        return 0;
    }
}
