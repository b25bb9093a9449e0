package ai.onestep.cli;

import ai.onestep.backend.Backends;
import ai.onestep.backend.Ops;
import ai.onestep.backend.cpu.FmaPeak;
import java.util.concurrent.Callable;
import jdk.incubator.vector.FloatVector;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code onestep system}: what this machine gives the engine (JDK, vector width, threads, its measured FP32 FMA peak,
 * backends).
 */
@Command(name = "system", mixinStandardHelpOptions = true,
        description = "Print the JDK, the SIMD width the Vector API uses, the thread count, this machine's FP32 FMA "
                + "peak (measured, about a second) and the backends.")
final class SystemInfo implements Callable<Integer> {
    @Option(names = "--threads", description = "Threads for the cpu backend (default: all ${DEFAULT-VALUE}).")
    int threads = Runtime.getRuntime().availableProcessors();

    @Option(names = "--no-peak", description = "Skip the FMA peak's measurement.")
    boolean noPeak;

    @Option(names = "--verbose", description = "Print stack traces on errors.")
    boolean verbose;

    @Override
    public Integer call() {
        Ops ops = Backends.byName("cpu", threads);
        System.out.println("java      " + Runtime.version() + " at " + System.getProperty("java.home"));
        System.out.println("cpus      " + Runtime.getRuntime().availableProcessors());
        System.out.println("simd      " + FloatVector.SPECIES_PREFERRED.vectorBitSize() + "-bit ("
                + FloatVector.SPECIES_PREFERRED.length() + " floats)");
        if (!noPeak) {
            System.out.println("fp32 peak " + FmaPeak.measure(threads, 100) + ", measured (the floor bench/ divides by)");
        }
        System.out.println("backend   " + ops.name() + " with " + threads + " thread(s); naive (oracle) available");
        System.out.println("cuda      " + Backends.cudaStatus());
        return 0;
    }
}
