package ai.onestep.kernels;

import java.nio.file.Files;
import java.nio.file.Path;
import org.bytedeco.javacpp.Loader;

/**
 * Loads {@code libonestep_kernels.so} and the JNI bindings of {@link OnestepKernels}, once per JVM.
 *
 * <p>The CUDA build and the emulated build of the library share one file name and SONAME. The JNI library was
 * linked against that SONAME; loading the chosen file by absolute path first makes the dynamic linker bind the JNI
 * library to it (a NEEDED entry is satisfied by an already-loaded object with that SONAME), whatever rpath JavaCPP
 * baked in and wherever the jar was unpacked. Only one build can be loaded per JVM.
 */
public final class KernelLibrary {
    private static Path loaded;
    private static String kind;

    private KernelLibrary() {
    }

    /**
     * Loads {@code library} (an absolute path to a libonestep_kernels.so) and the bindings. Returns the runtime kind
     * the library reports, {@code "cuda"} or {@code "emulated"}.
     *
     * @throws UnsatisfiedLinkError when the file is missing, does not load, the JNI bindings were not built, or a
     *                              different library was loaded before in this JVM
     */
    public static synchronized String load(Path library) {
        Path abs = library.toAbsolutePath().normalize();
        if (loaded != null) {
            if (!loaded.equals(abs)) {
                throw new UnsatisfiedLinkError("libonestep_kernels already loaded from " + loaded
                        + "; cannot load " + abs + " as well in one JVM");
            }
            return kind;
        }
        if (!Files.isRegularFile(abs)) {
            throw new UnsatisfiedLinkError("no kernel library at " + abs);
        }
        System.load(abs.toString());
        Loader.load(OnestepKernels.class);
        loaded = abs;
        kind = OnestepKernels.onestep_runtime_kind().getString();
        return kind;
    }

    /** The path loaded so far, or null. */
    public static synchronized Path loaded() {
        return loaded;
    }
}
