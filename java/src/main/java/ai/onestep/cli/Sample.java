package ai.onestep.cli;

import ai.onestep.api.Sampler;
import ai.onestep.io.Png;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "sample", mixinStandardHelpOptions = true,
        description = "Draw samples from a teacher (EDM Heun) or a consistency student and write a PNG grid.")
final class Sample implements Callable<Integer> {
    @Mixin
    Common common;

    @Option(names = "--model", description = "Checkpoint (default: models/fmnist-teacher.safetensors).")
    Path model;

    @Option(names = "--steps", description = "Teacher: Heun noise levels (default 18 = 35 NFE). Student: 1, or a count whose time points the checkpoint stores (info lists them; default 1).")
    Integer steps;

    @Option(names = "--n", defaultValue = "16", description = "Number of samples (default: ${DEFAULT-VALUE}).")
    int n;

    @Option(names = "--seed", defaultValue = "0", description = "Noise seed; sample i uses its own stream, so it does not depend on --n (default: ${DEFAULT-VALUE}).") long seed;

    @Option(names = "--out", defaultValue = "samples.png", description = "PNG grid to write (default: ${DEFAULT-VALUE}).")
    Path out;

    @Option(names = "--cols", description = "Images per row (default: about sqrt(n)).") Integer cols;

    @Override
    public Integer call() {
        Path m = Common.requireFile(model != null ? model : Common.model("fmnist-teacher.safetensors"), "model");
        if (n < 1) {
            throw new IllegalArgumentException("--n must be >= 1, got " + n);
        }
        try (Sampler s = common.sampler(m); TensorArena a = new TensorArena()) {
            int st = steps != null ? steps : s.isStudent() ? 1 : 18;
            long t0 = System.nanoTime();
            Tensor x = Common.sample(s, m, n, st, seed, a);
            double secs = (System.nanoTime() - t0) / 1e9;
            Png.writeGrid(x, cols != null ? cols : (int) Math.ceil(Math.sqrt(n)), out);
            System.out.printf(Locale.ROOT, "%d samples, %d steps (%d NFE) in %.2f s on %s; wrote %s%n", n, st, s.nfe(st),
                    secs, Common.describe(s.ops()), out);
        }
        return 0;
    }
}
