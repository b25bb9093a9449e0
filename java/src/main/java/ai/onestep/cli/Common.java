package ai.onestep.cli;

import ai.onestep.backend.Backends;
import ai.onestep.backend.Ops;
import java.nio.file.Files;
import java.nio.file.Path;
import picocli.CommandLine.Option;

/** Options every command shares: the backend, its threads, and --verbose (stack traces on errors). */
final class Common {
    @Option(names = "--backend", defaultValue = "cpu",
            description = "cpu (default), cuda (a GPU; an error without one), auto (cuda when a GPU and its libraries load, else cpu), naive (the slow oracle), cuda-emulated (the CUDA path on the CPU, for checks).")
    String backend;

    @Option(names = "--threads", description = "Threads for the cpu backend (default: all cores).")
    Integer threads;

    @Option(names = "--precision",
            description = "Storage type of the cuda backend's sampling passes: fp16 (the default on a GPU), bf16 or fp32 "
                    + "(the default of cuda-emulated). Arithmetic stays fp32; training always runs in fp32; cpu ignores it.")
    String precision;

    @Option(names = "--verbose", description = "Print stack traces on errors.")
    boolean verbose;

    Ops ops() {
        return Backends.byName(backend, threads(), System.err::println, precision());
    }

    /** A sampler for {@code model} on this command's backend and precision. */
    ai.onestep.api.Sampler sampler(Path model) {
        return ai.onestep.api.Sampler.load(model, backend, precision, threads());
    }

    private int threads() {
        return threads == null ? Runtime.getRuntime().availableProcessors() : threads;
    }

    /** --precision parsed (a typo fails here, before any work, whatever the backend); null when not given. */
    ai.onestep.backend.cuda.Precision precision() {
        return precision == null ? null : ai.onestep.backend.cuda.Precision.parse(precision);
    }

    /** The options to hand a command run from this one (demo runs distill): the same backend and precision. */
    java.util.List<String> forwarded() {
        java.util.List<String> a = new java.util.ArrayList<>(java.util.List.of("--backend", backend));
        if (precision != null) {
            a.addAll(java.util.List.of("--precision", precision));
        }
        if (threads != null) {
            a.addAll(java.util.List.of("--threads", threads.toString()));
        }
        return a;
    }

    /** The backend's name, and the precision of its passes where it has one ("cuda fp16"). */
    static String describe(Ops ops) {
        return ops instanceof ai.onestep.backend.cuda.CudaOps c ? ops.name() + " " + c.precision().label() : ops.name();
    }

    /** The repository (or installation) root: bin/onestep passes it; otherwise the working directory. */
    static Path home() {
        String h = System.getProperty("onestep.home");
        return Path.of(h != null ? h : ".").toAbsolutePath().normalize();
    }

    /** A file under models/ of the installation (the committed teacher, student and classifier). */
    static Path model(String name) {
        return home().resolve("models").resolve(name);
    }

    /**
     * {@code n} samples of the model at {@code model} loaded as {@code s}; when they take more than one batch, in
     * batches of about a tenth of n (at least 32, at most the sampler's default) with a progress report on stderr: an
     * eval of the teacher at its default 1,000 samples ran for a quarter of an hour on 2 cores without a word. The
     * samples are the same bits either way. Non-finite samples are refused: a checkpoint whose weights overflow gives
     * NaN pixels, which a PNG shows as a black grid and an FID as NaN.
     */
    static ai.onestep.tensor.Tensor sample(ai.onestep.api.Sampler s, Path model, int n, int steps, long seed,
            ai.onestep.tensor.TensorArena into) {
        ai.onestep.tensor.Tensor x;
        if (n <= 64) {
            x = s.sample(n, steps, seed, null, into, null);
        } else {
            s.maxBatch(Math.min(ai.onestep.api.Sampler.DEFAULT_MAX_BATCH, Math.max(32, (n + 9) / 10)));
            try (Progress p = new Progress("sampling", n, 0, "samples")) {
                p.countFromZero();
                x = s.sample(n, steps, seed, null, into, null, done -> p.step(done, Double.NaN, null));
            }
        }
        if (!x.allFinite()) {
            throw new IllegalArgumentException(model + ": the samples are not finite (NaN or inf): its weights do not "
                    + "give a working network");
        }
        return x;
    }

    /**
     * Refuses an output that is one of the command's inputs (distill --out over its --teacher, denoise --out over its
     * --input): the run would replace the file it reads. {@code inputs} alternates flag names and paths (null: absent).
     */
    static void requireNotInput(String outFlag, Path out, Object... inputs) {
        for (int i = 0; i < inputs.length; i += 2) {
            Path in = (Path) inputs[i + 1];
            if (in != null && sameFile(out, in)) {
                throw new IllegalArgumentException(outFlag + " " + out + " is also the " + inputs[i]
                        + " file: the run would replace what it reads; write to another file");
            }
        }
    }

    private static boolean sameFile(Path a, Path b) {
        try {
            if (Files.exists(a) && Files.exists(b)) {
                return Files.isSameFile(a, b);
            }
        } catch (java.io.IOException e) {
            // Unreadable attributes: fall back to comparing the paths.
        }
        return a.toAbsolutePath().normalize().equals(b.toAbsolutePath().normalize());
    }

    /**
     * Refuses to replace an existing file that the run does not continue from: a new training run over a trained
     * checkpoint threw the checkpoint away. {@code continuing}: the file the run resumes or starts from (null: none).
     */
    static void requireNewOrForced(Path out, Path continuing, boolean force, String how) {
        if (!force && Files.exists(out) && (continuing == null || !sameFile(out, continuing))) {
            throw new IllegalArgumentException("--out " + out + " exists; " + how + ", or pass --force to replace it");
        }
    }

    static Path requireFile(Path p, String what) {
        if (!Files.exists(p)) {
            throw new IllegalArgumentException(p + ": " + what + " not found");
        }
        return p;
    }
}
