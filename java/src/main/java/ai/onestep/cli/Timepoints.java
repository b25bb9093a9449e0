package ai.onestep.cli;

import ai.onestep.diffusion.ConsistencySampler;
import ai.onestep.eval.FeatureNet;
import ai.onestep.eval.FidStats;
import ai.onestep.eval.Frechet;
import ai.onestep.eval.TimepointSearch;
import ai.onestep.model.UNetCheckpoint;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "timepoints", mixinStandardHelpOptions = true,
        description = "Greedy search of a student's 2- and 4-step re-noising times by validation FID-FMNIST; stores them "
                + "in the checkpoint's metadata (used by default by sample, eval and report).")
final class Timepoints implements Callable<Integer> {
    @Mixin
    Common common;

    @Option(names = "--model", required = true, description = "Student checkpoint; the time points are written into its metadata (unless --out).") Path model;
    @Option(names = "--out", description = "Write the student with its new time points here instead of into --model (to compare searches before keeping one).") Path out;
    @Option(names = "--N", defaultValue = "18", description = "The grid the candidates come from.") int gridN;
    @Option(names = "--n", defaultValue = "256", description = "Samples per candidate FID.") int n;
    @Option(names = "--max-steps", defaultValue = "4", description = "Search 2-step points, and 3 and 4 up to this (2 or more; default: ${DEFAULT-VALUE}); stored points for more steps are kept.") int maxSteps;

    @Override
    public Integer call() {
        if (maxSteps < 2) {
            throw new IllegalArgumentException("--max-steps must be >= 2 (one step has no time points to search), got "
                    + maxSteps);
        }
        if (out != null) {
            Common.requireNotInput("--out", out, "--model", model);  // to write into --model, leave --out out
        }
        System.out.println(search(common, model, gridN, n, maxSteps, out != null ? out : model));
        return 0;
    }

    static String search(Common common, Path model, int gridN, int n, int maxSteps) {
        return search(common, model, gridN, n, maxSteps, model);
    }

    /** The search on {@code model}; the student with the merged time points is written to {@code out}. */
    static String search(Common common, Path model, int gridN, int n, int maxSteps, Path out) {
        Common.requireFile(model, "student");
        var ops = common.ops();
        Frechet.Stats ref = FidStats.load(Common.requireFile(Common.model("fmnist-fid-stats.safetensors"), "FID statistics"));
        try (UNetCheckpoint.Loaded l = UNetCheckpoint.load(model, false);
             FeatureNet f = FeatureNet.load(Common.requireFile(Common.model("fmnist-classifier.safetensors"), "classifier"), ops)) {
            if (!l.role().equals("student")) {
                throw new IllegalArgumentException(model + " is a " + l.role() + "; time points belong to students");
            }
            String spec = TimepointSearch.search(ops, l.net(), gridN, maxSteps, n, 777,
                    x -> Frechet.distance(Frechet.stats(f.features(x)), ref), System.err::println);
            var meta = new LinkedHashMap<>(l.metadata());
            // Keep stored points for step counts beyond this search (e.g. --max-steps 2 with more samples).
            String merged = ConsistencySampler.mergeTimepoints(meta.get(ConsistencySampler.TIMEPOINTS), spec);
            meta.put(ConsistencySampler.TIMEPOINTS, merged);
            UNetCheckpoint.save(out, l.net(), meta, null);
            return merged;
        }
    }
}
