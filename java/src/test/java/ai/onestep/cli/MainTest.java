package ai.onestep.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

class MainTest {
    private static String[] capture(String... args) {
        PrintStream out = System.out;
        PrintStream err = System.err;
        ByteArrayOutputStream o = new ByteArrayOutputStream();
        ByteArrayOutputStream e = new ByteArrayOutputStream();
        int code;
        try {
            System.setOut(new PrintStream(o, true, StandardCharsets.UTF_8));
            System.setErr(new PrintStream(e, true, StandardCharsets.UTF_8));
            code = Main.run(args);
        } finally {
            System.setOut(out);
            System.setErr(err);
        }
        return new String[] {String.valueOf(code), o.toString(StandardCharsets.UTF_8), e.toString(StandardCharsets.UTF_8)};
    }

    @Test
    void versionNamesTheProjectAndTheJdk() {
        String[] r = capture("--version");
        assertEquals("0", r[0]);
        assertTrue(r[1].startsWith("onestep "), r[1]);
        assertTrue(r[1].contains("Java " + Runtime.version().feature()), r[1]);
    }

    /** Every option of every command says what it does in --help (an empty description shows a bare flag). */
    @Test
    void everyOptionHasADescription() {
        picocli.CommandLine root = new picocli.CommandLine(new Main());
        java.util.List<String> bare = new java.util.ArrayList<>();
        for (picocli.CommandLine sub : root.getSubcommands().values()) {
            for (picocli.CommandLine.Model.OptionSpec o : sub.getCommandSpec().options()) {
                String d = String.join(" ", o.description()).trim();
                if (d.isEmpty()) {
                    bare.add(sub.getCommandName() + " " + o.longestName());
                }
            }
        }
        assertTrue(root.getSubcommands().size() >= 10, "commands: " + root.getSubcommands().keySet());
        assertTrue(bare.isEmpty(), "options without a description: " + bare);
    }

    @Test
    void helpListsTheCommands() {
        String[] r = capture("--help");
        assertEquals("0", r[0]);
        assertTrue(r[1].contains("system"), r[1]);
    }

    /** The cuda line says what --backend cuda would get here (it said "not built" long after it was built). */
    @Test
    void systemSaysWhetherCudaIsAvailableAndWhy() {
        String[] r = capture("system");
        assertEquals("0", r[0], r[2]);
        String cuda = r[1].lines().filter(l -> l.startsWith("cuda ")).findFirst().orElse("");
        assertTrue(cuda.matches("cuda +(available: .+|unavailable: .+)"), r[1]);
        // The floor bench/ divides by: measured here, so a positive rate on all threads and on one.
        String peak = r[1].lines().filter(l -> l.startsWith("fp32 peak ")).findFirst().orElse("");
        assertTrue(peak.matches("fp32 peak [1-9][0-9]* GFLOP/s on [0-9]+ thread\\(s\\) \\([1-9][0-9]* on one; "
                + "[0-9]+-bit FMA\\), measured .*"), r[1]);
        assertTrue(capture("system", "--no-peak")[1].lines().noneMatch(l -> l.startsWith("fp32 peak")));
    }

    @Test
    void badOptionGivesOneLineAndExitCode2() {
        String[] r = capture("system", "--threads", "0");
        assertEquals("2", r[0]);
        assertTrue(r[2].contains("thread count must be in 1..1024"), r[2]);
        assertTrue(!r[2].contains("\tat "), "no stack trace without --verbose: " + r[2]);
    }
}
