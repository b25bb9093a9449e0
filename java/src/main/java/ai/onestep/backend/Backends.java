package ai.onestep.backend;

import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.backend.cuda.CudaBackend;
import ai.onestep.backend.cuda.CudaOps;
import ai.onestep.backend.cuda.Precision;
import ai.onestep.backend.naive.NaiveOps;
import java.util.function.Consumer;

/**
 * Chooses a backend by name: {@code cpu} (the default), {@code naive} (the oracle; slow), {@code cuda} (a GPU
 * through our kernels; an error when there is none) or {@code auto} (CUDA when a device and the libraries load,
 * otherwise cpu, saying why in one log line). {@code cuda-emulated} runs the CUDA backend on the emulated kernel
 * library (build/kernels/emu), to check the device path without a GPU.
 */
public final class Backends {
    private static String autoDecision;

    private Backends() {
    }

    public static Ops byName(String name, int threads) {
        return byName(name, threads, System.err::println);
    }

    /** As {@link #byName(String, int)}, with {@code auto}'s one line going to {@code log}. */
    public static Ops byName(String name, int threads, Consumer<String> log) {
        return byName(name, threads, log, null);
    }

    /**
     * As above; a cuda backend runs its passes in {@code precision} (null: the system property
     * {@code onestep.cuda.precision}, else fp16 on a GPU and fp32 on the emulated library). Host backends ignore it.
     */
    public static Ops byName(String name, int threads, Consumer<String> log, Precision precision) {
        return switch (name) {
            case "cpu" -> new CpuOps(threads);
            case "naive" -> new NaiveOps();
            case "cuda" -> {
                try {
                    yield CudaBackend.open(threads, precision);
                } catch (CudaBackend.Unavailable e) {
                    throw new IllegalArgumentException("backend cuda: " + e.getMessage());
                }
            }
            case "auto" -> auto(threads, log, precision);
            case "cuda-emulated" -> {
                // The CUDA backend on the emulated kernel library: for checking the device path end to end on a
                // machine without a GPU (slow: every GPU thread is a fiber on one core).
                try {
                    yield CudaBackend.openEmulated(CudaBackend.emulatedLibrary(), CudaOps.DEFAULT_ARENA_BYTES, threads,
                            precision);
                } catch (CudaBackend.Unavailable e) {
                    throw new IllegalArgumentException("backend cuda-emulated: " + e.getMessage());
                }
            }
            default -> throw new IllegalArgumentException("unknown backend '" + name
                    + "': choose cpu, cuda, auto, naive or cuda-emulated");
        };
    }

    private static Ops auto(int threads, Consumer<String> log, Precision precision) {
        String[] reason = new String[1];
        CudaOps c = tryCuda(threads, precision, reason);
        if (c != null) {
            sayOnce(log, "backend auto: using cuda (" + c.device().describe() + "; sampling passes in "
                    + c.precision().label() + ")");
            return c;
        }
        sayOnce(log, "backend auto: " + reason[0] + ": using cpu");
        return new CpuOps(threads);
    }

    /**
     * What {@code --backend cuda} would get here, in one line: the device it opens, or why it cannot (no kernel
     * library, no driver, no device). The device is closed again.
     */
    public static String cudaStatus() {
        String[] reason = new String[1];
        CudaOps c = tryCuda(1, null, reason);
        if (c == null) {
            return "unavailable: " + reason[0];
        }
        try {
            return "available: " + c.device().describe();
        } finally {
            c.close();
        }
    }

    /** The cuda backend, or null with {@code reason[0]} saying why not. */
    private static CudaOps tryCuda(int threads, Precision precision, String[] reason) {
        try {
            return (CudaOps) CudaBackend.open(threads, precision);
        } catch (CudaBackend.Unavailable e) {
            reason[0] = e.getMessage();
        } catch (UnsatisfiedLinkError | NoClassDefFoundError e) {
            reason[0] = "the CUDA bindings did not load (" + e.getMessage() + ")";
        }
        return null;
    }

    /** auto reports its choice once per process, however many models a command loads. */
    private static synchronized void sayOnce(Consumer<String> log, String line) {
        if (!line.equals(autoDecision)) {
            autoDecision = line;
            log.accept(line);
        }
    }
}
