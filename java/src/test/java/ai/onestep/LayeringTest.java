package ai.onestep;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * docs/ARCHITECTURE.md's layers, checked on the sources: a package imports only packages of its own or a lower
 * rank (io and data share one). {@code ai.onestep.kernels} is the JavaCPP bindings, below everything here.
 */
class LayeringTest {
    private static final Map<String, Integer> RANK = Map.ofEntries(
            Map.entry("cli", 9), Map.entry("eval", 8), Map.entry("api", 7), Map.entry("diffusion", 6),
            Map.entry("model", 5), Map.entry("nn", 4), Map.entry("backend", 3), Map.entry("io", 2),
            Map.entry("data", 2), Map.entry("tensor", 1), Map.entry("kernels", 0));
    /** The one documented exception: the GPU machine's check program drives whole models. */
    private static final String EXCEPTION = "backend/cuda/DeviceCheck.java";
    private static final Pattern IMPORT = Pattern.compile("^import (?:static )?ai\\.onestep\\.([a-z]+)\\.", Pattern.MULTILINE);

    @Test
    void everyImportPointsDownTheLayers() throws IOException {
        Path root = Path.of("src/main/java/ai/onestep");
        List<String> upward = new ArrayList<>();
        int files = 0;
        try (Stream<Path> all = Files.walk(root)) {
            for (Path f : all.filter(p -> p.toString().endsWith(".java")).toList()) {
                String rel = root.relativize(f).toString().replace('\\', '/');
                String pkg = rel.substring(0, rel.indexOf('/'));
                Integer own = RANK.get(pkg);
                assertTrue(own != null, "package ai.onestep." + pkg + " (" + rel + ") has no layer in docs/ARCHITECTURE.md");
                files++;
                if (rel.equals(EXCEPTION)) {
                    continue;
                }
                Matcher m = IMPORT.matcher(Files.readString(f));
                while (m.find()) {
                    Integer used = RANK.get(m.group(1));
                    if (used == null || used > own) {
                        upward.add(rel + " imports ai.onestep." + m.group(1));
                    }
                }
            }
        }
        assertTrue(files > 100, "found only " + files + " sources under " + root.toAbsolutePath());
        assertEquals(List.of(), upward);
    }
}
