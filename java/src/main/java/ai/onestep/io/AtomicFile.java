package ai.onestep.io;

import java.io.IOException;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Atomic writes: the file is written in full to a hidden temporary file beside the target, then renamed over it, so
 * a reader (or a crash mid-write) sees the old file or the new one, never a torn one. Every writer of checkpoints,
 * images and the backend's choices file goes through {@link #write}. The temporary file gets the target's
 * permissions, or rw-r--r-- for a new file (createTempFile's rw------- made every checkpoint private, and an
 * overwrite turned a shared model private); one still open when the JVM is stopped (Ctrl-C, SIGTERM during a save)
 * is deleted by a shutdown hook instead of being left beside the target.
 */
public final class AtomicFile {
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

    private AtomicFile() {
    }

    /** What writes the new contents into the temporary file it is given. */
    @FunctionalInterface
    public interface Body {
        void write(Path tmp) throws IOException;
    }

    /**
     * Replaces {@code target} with what {@code body} writes: atomically where the file system can rename so, else by a
     * plain replacing move. On failure the target is as it was and the temporary file is gone.
     */
    public static void write(Path target, Body body) throws IOException {
        Path tmp = beside(target);
        try {
            body.write(tmp);
            try {
                Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
            }
        } finally {
            release(tmp);  // after the move, nothing is there to delete
        }
    }

    /** {@link #write} of a UTF-8 text. */
    public static void writeString(Path target, CharSequence text) throws IOException {
        write(target, tmp -> Files.writeString(tmp, text));
    }

    /** A new hidden temporary file beside {@code target}, registered until {@link #release}. */
    private static Path beside(Path target) throws IOException {
        Path dir = target.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        Path tmp = Files.createTempFile(dir, "." + target.getFileName(), ".tmp");
        OPEN.add(tmp);
        try {
            Files.setPosixFilePermissions(tmp, Files.exists(target) ? Files.getPosixFilePermissions(target) : NEW_FILE);
        } catch (UnsupportedOperationException | IOException e) {
            // Not a POSIX file system (its default permissions stand), or the target's are unreadable (then the new
            // file is private, rw-------, which loses no data; the write itself goes on).
        }
        return tmp;
    }

    /** Deletes {@code tmp} if it is still there (a failed write) and forgets it. */
    private static void release(Path tmp) {
        try {
            Files.deleteIfExists(tmp);
        } catch (IOException ignored) {
            // The temporary file is hidden and harmless; the target was not touched.
        } finally {
            OPEN.remove(tmp);
        }
    }

    /** Why a write failed, in words: a FileSystemException's message is often only the file's name. */
    public static String reason(IOException e) {
        if (e instanceof FileSystemException f && f.getReason() != null) {
            return f.getReason();
        }
        return e.getMessage() != null ? e.getMessage() : e.getClass().getSimpleName();
    }
}
