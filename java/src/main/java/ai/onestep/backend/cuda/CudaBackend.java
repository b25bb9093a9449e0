package ai.onestep.backend.cuda;

import ai.onestep.kernels.KernelLibrary;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Finds and opens the CUDA backend.
 *
 * <p>The kernel library is looked up in this order: the system property {@code onestep.kernels.library}, the
 * environment variable {@code ONESTEP_KERNELS_LIBRARY}, then {@code build/kernels/libonestep_kernels.so} under the
 * installation ({@code onestep.home}, which bin/onestep sets) or the working directory. The emulated build
 * ({@code build/kernels/emu/libonestep_kernels.so}, or {@code onestep.kernels.emulated}) is only ever opened on
 * purpose, by {@link #openEmulated} (tests): it is far too slow to be picked by {@code auto}.
 */
public final class CudaBackend {
    private CudaBackend() {
    }

    /** Why the CUDA backend cannot be opened: one line, fit for a log or an error message. */
    public static final class Unavailable extends Exception {
        public Unavailable(String reason) {
            super(reason);
        }
    }

    /** The CUDA build of the kernel library this process would load. */
    public static Path cudaLibrary() {
        String p = System.getProperty("onestep.kernels.library");
        if (p == null || p.isBlank()) {
            p = System.getenv("ONESTEP_KERNELS_LIBRARY");
        }
        if (p != null && !p.isBlank()) {
            return Path.of(p);
        }
        return home().resolve("build/kernels/libonestep_kernels.so");
    }

    /** The emulated build of the kernel library (for tests). */
    public static Path emulatedLibrary() {
        String p = System.getProperty("onestep.kernels.emulated");
        return p != null && !p.isBlank() ? Path.of(p) : home().resolve("build/kernels/emu/libonestep_kernels.so");
    }

    private static Path home() {
        String h = System.getProperty("onestep.home");
        return Path.of(h != null ? h : ".").toAbsolutePath().normalize();
    }

    /**
     * Opens the GPU backend: loads the CUDA build of the library and its JNI bindings, and checks that a device is
     * there. Every reason it cannot (no library built, JNI bindings missing, no driver, no device, the emulated
     * build in its place) comes back as {@link Unavailable} with one line saying which.
     */
    public static CudaOps open(int hostThreads) throws Unavailable {
        return open(hostThreads, null);
    }

    /** As {@link #open(int)}, its passes in {@code precision} (null: {@code onestep.cuda.precision}, else fp16). */
    public static CudaOps open(int hostThreads, Precision precision) throws Unavailable {
        Path lib = cudaLibrary();
        if (!Files.isRegularFile(lib)) {
            throw new Unavailable("no CUDA kernel library at " + lib + " (built by cmake where nvcc exists)");
        }
        String kind = load(lib);
        if (!kind.equals("cuda")) {
            throw new Unavailable(lib + " is the " + kind + " build, not the CUDA one");
        }
        int devices;
        try {
            devices = Device.deviceCount();
        } catch (CudaException e) {
            throw new Unavailable("no CUDA driver or device (" + e.getMessage() + ")");
        }
        if (devices < 1) {
            throw new Unavailable("the CUDA driver reports no device");
        }
        return new CudaOps(new CudaDevice(lib.toString()), CudaOps.DEFAULT_ARENA_BYTES, hostThreads,
                precision != null ? precision : Precision.fromProperty(Precision.FP16));
    }

    /**
     * Opens the backend on the emulated library (kernels/emu): the backend's whole logic, on the CPU. Its passes run
     * in fp32 unless {@code onestep.cuda.precision} says otherwise (on a GPU, {@link #open} defaults to fp16).
     */
    public static CudaOps openEmulated(Path library, long arenaBytes, int hostThreads) throws Unavailable {
        return openEmulated(library, arenaBytes, hostThreads, null);
    }

    /** As above, its passes in {@code precision} (null: {@code onestep.cuda.precision}, else fp32). */
    public static CudaOps openEmulated(Path library, long arenaBytes, int hostThreads, Precision precision)
            throws Unavailable {
        if (!Files.isRegularFile(library)) {
            throw new Unavailable("no emulated kernel library at " + library
                    + " (cmake builds it: cmake -S cmake -B build/kernels && cmake --build build/kernels)");
        }
        String kind = load(library);
        if (!kind.equals("emulated")) {
            throw new Unavailable(library + " is the " + kind + " build, not the emulated one");
        }
        // onestep.cuda.emulateCudnnBias: the emulated device reports its convolutions' and linears' biases as
        // kernels of their own, as cuDNN's and cuBLAS's routes on a GPU do, so the backend leaves them to their
        // readers as it would there; then a pass's graph counts (capturedPasses, StepTiming's "(graphs)" rows) show
        // the bias kernels a GPU graph leaves out. (Its portable kernels still add any bias they are given.)
        boolean cudnnBias = Boolean.getBoolean("onestep.cuda.emulateCudnnBias");
        // onestep.cuda.emulateIgemm: fp16/bf16 convolutions run our tensor-core implicit GEMM (kernels/src/conv.cu)
        // wherever it takes the shape, as a GPU does where it timed faster than cuDNN (the emulated mma.sync: slow).
        boolean igemm = Boolean.getBoolean("onestep.cuda.emulateIgemm");
        return new CudaOps(new EmulatedDevice(library.toString(), false, cudnnBias, igemm), arenaBytes, hostThreads,
                precision != null ? precision : Precision.fromProperty(Precision.FP32));
    }

    private static String load(Path lib) throws Unavailable {
        try {
            return KernelLibrary.load(lib);
        } catch (UnsatisfiedLinkError | NoClassDefFoundError e) {
            throw new Unavailable("the kernel library or its JNI bindings did not load (" + e.getMessage() + ")");
        }
    }
}
