package ai.onestep.cli;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Properties;
import java.util.Set;
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
        // A mistyped flag or value: one line naming it, not the command's whole usage.
        cl.setParameterExceptionHandler((e, argv) -> {
            CommandLine at = e.getCommandLine();
            String name = at.getCommandSpec().qualifiedName();
            at.getErr().println(name + ": " + e.getMessage() + " (" + name + " --help lists the options)");
            return 2;
        });
        cl.setExecutionStrategy(parsed -> {
            boolean help = parsed.asCommandLineList().stream().anyMatch(c -> c.isUsageHelpRequested()
                    || c.isVersionHelpRequested());
            String bad = help ? null : nonPositiveCount(parsed);
            if (bad == null && !help) {
                bad = unwritableOutput(parsed);
            }
            if (bad != null) {
                CommandLine last = commandRun(parsed).commandSpec().commandLine();
                last.getErr().println("onestep " + last.getCommandName() + ": " + bad);
                return 2;
            }
            return new CommandLine.RunLast().execute(parsed);
        });
        try {
            return cl.execute(args);
        } catch (OutOfMemoryError e) {
            // picocli hands only Exceptions to the handler; an allocation too large for the heap or for off-heap
            // memory (a huge --batch or --n) is bad input too, and gets one line like the rest.
            boolean verbose = verbose(Arrays.asList(args));
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

    /**
     * Counts that must be at least 1 wherever a command takes them (a batch of 0 divided by zero deep in a loop, a
     * negative one made a tensor with a negative dimension; the message named neither flag).
     */
    static final Set<String> COUNTS = Set.of("--batch", "--steps", "--n", "--checkpoint-every",
            "--val-n", "--width", "--reps", "--limit", "--teacher-samples", "--teacher-steps", "--max-steps", "--cols",
            "--patience");

    /** The parse result of the subcommand that runs (the last of the chain). */
    private static CommandLine.ParseResult commandRun(CommandLine.ParseResult parsed) {
        CommandLine.ParseResult last = parsed;
        while (last.subcommand() != null) {
            last = last.subcommand();
        }
        return last;
    }

    /** "--batch must be >= 1, got 0" for the first count given below 1, else null. */
    static String nonPositiveCount(CommandLine.ParseResult parsed) {
        CommandLine.ParseResult last = commandRun(parsed);
        for (CommandLine.Model.OptionSpec o : last.matchedOptions()) {
            if (COUNTS.contains(o.longestName()) && o.getValue() instanceof Number v && v.longValue() < 1) {
                return o.longestName() + " must be >= 1, got " + v;
            }
        }
        return null;
    }

    /** The options that name a folder to write into; every other --out and --stats-out names a file. */
    static final Set<String> FOLDER_OUTPUTS = Set.of("demo --out", "report --out", "export --diffusers");

    /**
     * "--out x.png: folder /a/b does not exist" for the first output that cannot be written, else null: checked before
     * the work, so a typo costs seconds, not the minutes of sampling or training that used to come first.
     */
    static String unwritableOutput(CommandLine.ParseResult parsed) {
        CommandLine.ParseResult last = commandRun(parsed);
        for (String flag : new String[] {"--out", "--stats-out", "--diffusers"}) {
            CommandLine.Model.OptionSpec o = last.commandSpec().findOption(flag);
            if (o == null || !(o.getValue() instanceof Path p)) {
                continue;
            }
            boolean folder = FOLDER_OUTPUTS.contains(last.commandSpec().name() + " " + flag);
            Path abs = p.toAbsolutePath().normalize();
            if (folder ? Files.exists(abs) && !Files.isDirectory(abs)
                    : Files.isDirectory(abs)) {
                return flag + " " + p + " is a " + (folder ? "file; name a folder" : "folder; name a file");
            }
            // The nearest folder that exists must let us write (a file's own folder must exist).
            Path dir = folder ? abs : abs.getParent();
            if (!folder && (dir == null || !Files.isDirectory(dir))) {
                return flag + " " + p + ": folder " + dir + " does not exist";
            }
            while (dir != null && !Files.exists(dir)) {
                dir = dir.getParent();
            }
            if (dir != null && !Files.isWritable(dir)) {
                return flag + " " + p + ": folder " + dir + " is not writable";
            }
        }
        return null;
    }

    /** Whether a failure prints its stack trace too: --verbose on the command line, or ONESTEP_VERBOSE=1. */
    static boolean verbose(java.util.List<String> args) {
        return args.contains("--verbose") || "1".equals(System.getenv("ONESTEP_VERBOSE"));
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
            boolean verbose = verbose(parsed.originalArgs());
            String message = e.getMessage() == null ? e.toString() : e.getMessage();
            String prefix = cl.getCommandName() + ": ";  // the engine's messages often name the command already
            if (message.startsWith(prefix)) {
                message = message.substring(prefix.length());
            }
            cl.getErr().println("onestep " + prefix + message);
            if (verbose) {
                e.printStackTrace(cl.getErr());
            }
            return 2;
        }
    }
}
