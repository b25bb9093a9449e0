package ai.onestep.io;

import java.io.IOException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The hidden temporary files behind atomic writes (written in full, then renamed over the target). Each gets the
 * target's permissions, or rw-r--r-- for a new file (createTempFile's rw------- made every checkpoint private, and an
 * overwrite turned a shared model private); one still open when the JVM is stopped (Ctrl-C, SIGTERM during a save) is
 * deleted by a shutdown hook instead of being left beside the target.
 */
final class TempFiles {
    private static final Set<Path> OPEN = ConcurrentHashMap.newKeySet();
    private static final Set<PosixFilePermission> NEW_FILE = PosixFilePermissions.fromString("rw-r--r--");

    static {
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            for (Path p : OPEN) {
                try {
                    Files.deleteIfExists(p);
                } catch (IOException ignored) {
                    // Shutting down: nothing left to tell.
                }
            }
        }, "onestep-temp-cleanup"));
    }

    private TempFiles() {
    }

    /** A new hidden temporary file beside {@code target}, registered until {@link #release}. */
    static Path beside(Path target) throws IOException {
        Path dir = target.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        Path tmp = Files.createTempFile(dir, "." + target.getFileName(), ".tmp");
        OPEN.add(tmp);
        try {
            Files.setPosixFilePermissions(tmp, Files.exists(target) ? Files.getPosixFilePermissions(target) : NEW_FILE);
        } catch (UnsupportedOperationException | IOException e) {
            // Not a POSIX file system, or the target's permissions are unreadable: keep the default.
        }
        return tmp;
    }

    /** Deletes {@code tmp} if it is still there (a failed write) and forgets it. */
    static void release(Path tmp) {
        try {
            Files.deleteIfExists(tmp);
        } catch (IOException ignored) {
            // The temporary file is hidden and harmless; the target was not touched.
        } finally {
            OPEN.remove(tmp);
        }
    }

    /** Why a write failed, in words: a FileSystemException's message is often only the file's name. */
    static String reason(IOException e) {
        if (e instanceof FileSystemException f && f.getReason() != null) {
            return f.getReason();
        }
        return e.getMessage() != null ? e.getMessage() : e.getClass().getSimpleName();
    }
}
