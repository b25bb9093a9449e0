package ai.onestep.cli;

import ai.onestep.api.Sampler;
import ai.onestep.eval.Report;
import ai.onestep.io.Png;
import ai.onestep.tensor.TensorArena;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "demo", mixinStandardHelpOptions = true,
        description = "The whole pipeline on the committed Fashion-MNIST teacher, in a few minutes on a laptop CPU: "
                + "data-free consistency distillation, teacher-versus-student sample grids, and the FID/latency report.")
final class Demo implements Callable<Integer> {
    @Mixin
    Common common;

    @Option(names = "--out", defaultValue = "demo-out", description = "Output folder (default: ${DEFAULT-VALUE}).") Path out;
    @Option(names = "--steps", defaultValue = "300", description = "Distillation steps (default: ${DEFAULT-VALUE}).") long steps;
    @Option(names = "--n", defaultValue = "200", description = "Samples per FID in the report (default: ${DEFAULT-VALUE}).") int n;

    @Override
    public Integer call() {
        long t0 = System.nanoTime();
        Path teacher = Common.requireFile(Common.model("fmnist-teacher.safetensors"), "the committed teacher");
        Path student = out.resolve("student.safetensors");
        System.err.println("demo 1/3: data-free consistency distillation of " + teacher.getFileName() + " (" + steps + " steps)");
        // --force: the demo's own folder, whose student each run replaces.
        java.util.List<String> args = new java.util.ArrayList<>(java.util.List.of("--force", "--teacher", teacher.toString(),
                "--out", student.toString(), "--steps", Long.toString(steps), "--batch", "8", "--validate-every",
                Long.toString(steps), "--val-n", "128", "--teacher-samples", "256", "--teacher-steps", "9", "--lr", "2e-4"));
        args.addAll(common.forwarded());  // the same backend, precision and threads
        // The nested command reports its errors as every command does: one line, exit code 2.
        int rc = new CommandLine(new Distill()).setExecutionExceptionHandler(new Main.Errors())
                .execute(args.toArray(String[]::new));
        if (rc != 0) {
            return rc;
        }
        System.err.println("demo 2/3: 2- and 4-step time points by FID (greedy over the grid), then sample grids");
        Timepoints.search(common, student, 18, 64, 4);
        try (Sampler t = common.sampler(teacher); Sampler s = common.sampler(student);
             TensorArena a = new TensorArena()) {
            Png.writeGrid(t.sample(16, 18, 7, a), 4, out.resolve("teacher-35nfe.png"));
            Png.writeGrid(s.sample(16, 1, 7, a), 4, out.resolve("student-1step.png"));
            Png.writeGrid(s.sample(16, 2, 7, a), 4, out.resolve("student-2step.png"));
        }
        System.err.println("demo 3/3: the report (FID-FMNIST over " + n + " samples, latency at batch 1)");
        ReportCmd.Result report = ReportCmd.run(common, teacher, List.of(student), out, n, 3);
        System.out.print(Report.markdown(report.rows(), report.machine()));
        System.out.printf(Locale.ROOT, "demo finished in %.0f s; grids, student and report in %s%n",
                (System.nanoTime() - t0) / 1e9, out.toAbsolutePath());
        return 0;
    }
}
