package ai.onestep.cli;

import java.io.IOException;
import java.io.InputStream;
import java.util.Properties;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** The {@code onestep} command line. Each subcommand is one class in this package. */
@Command(name = "onestep", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = "Distil diffusion models into consistency models and sample them with minimal latency.",
        subcommands = {Demo.class, TrainTeacher.class, Distill.class, Timepoints.class, Sample.class, Eval.class, ReportCmd.class,
            Info.class, Denoise.class, Export.class, TrainClassifier.class,
            SystemInfo.class, CommandLine.HelpCommand.class})
public final class Main implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    public static void main(String[] args) {
        System.exit(run(args));
    }

    /** Runs the CLI and returns its exit code (for tests). */
    public static int run(String... args) {
        CommandLine cl = new CommandLine(new Main());
        cl.setExecutionExceptionHandler(new Errors());
        try {
            return cl.execute(args);
        } catch (OutOfMemoryError e) {
            // picocli hands only Exceptions to the handler; an allocation too large for the heap or for off-heap
            // memory (a huge --batch or --n) is bad input too, and gets one line like the rest.
            boolean verbose = java.util.Arrays.asList(args).contains("--verbose");
            System.err.println("onestep: out of memory (" + e.getMessage() + "): ask for less (--batch, --n), or give the "
                    + "JVM more (ONESTEP_JAVA_OPTS=-Xmx...)");
            if (verbose) {
                e.printStackTrace();
            }
            return 2;
        }
    }

    @Override
    public void run() {
        spec.commandLine().usage(System.out);
    }

    /** Reads the version Maven filtered into version.properties. */
    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() throws IOException {
            Properties p = new Properties();
            try (InputStream in = Main.class.getResourceAsStream("/ai/onestep/version.properties")) {
                if (in != null) {
                    p.load(in);
                }
            }
            return new String[] {"onestep " + p.getProperty("version", "unknown"),
                "Java " + Runtime.version() + " (" + System.getProperty("java.vm.name") + ")"};
        }
    }

    /**
     * Bad input gives one clear line and exit code 2; the stack trace only with {@code --verbose} (or
     * ONESTEP_VERBOSE=1).
     */
    static final class Errors implements CommandLine.IExecutionExceptionHandler {
        @Override
        public int handleExecutionException(Exception e, CommandLine cl, CommandLine.ParseResult parsed) {
            boolean verbose = parsed.originalArgs().contains("--verbose") || "1".equals(System.getenv("ONESTEP_VERBOSE"));
            cl.getErr().println("onestep " + cl.getCommandName() + ": " + (e.getMessage() == null ? e : e.getMessage()));
            if (verbose) {
                e.printStackTrace(cl.getErr());
            }
            return 2;
        }
    }
}
