package ai.onestep.backend;

import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.backend.naive.NaiveOps;

/** Chooses a backend by name: {@code cpu} (the default), {@code naive} (the oracle; slow). */
public final class Backends {
    private Backends() {
    }

    public static Ops byName(String name, int threads) {
        return switch (name) {
            case "cpu", "auto" -> new CpuOps(threads);
            case "naive" -> new NaiveOps();
            default -> throw new IllegalArgumentException("unknown backend '" + name
                    + "': choose cpu or naive (cuda arrives with the CUDA backend)");
        };
    }
}
