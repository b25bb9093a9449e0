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
        if (precision != null) {
            // Checked here so a typo fails before any work, whatever the backend.
            System.setProperty("onestep.cuda.precision", ai.onestep.backend.cuda.Precision.parse(precision).label());
        }
        return Backends.byName(backend, threads == null ? Runtime.getRuntime().availableProcessors() : threads);
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

    static Path requireFile(Path p, String what) {
        if (!Files.exists(p)) {
            throw new IllegalArgumentException(p + ": " + what + " not found");
        }
        return p;
    }
}
