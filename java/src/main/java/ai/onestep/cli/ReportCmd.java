package ai.onestep.cli;

import ai.onestep.api.Sampler;
import ai.onestep.eval.FeatureNet;
import ai.onestep.eval.FidStats;
import ai.onestep.eval.Frechet;
import ai.onestep.eval.Report;
import ai.onestep.model.UNetCheckpoint;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "report", mixinStandardHelpOptions = true,
        description = "FID-FMNIST against latency per sample and NFE for the teacher (35, 17, 9 NFE) and each student "
                + "(1, 2, 4 steps): report.md, report.json and report.png (the Pareto plot) in --out.")
final class ReportCmd implements Callable<Integer> {
    @Mixin
    Common common;

    @Option(names = "--teacher", description = "Default: models/fmnist-teacher.safetensors.") Path teacher;
    @Option(names = "--student", description = "Student checkpoint(s); repeat for several.") List<Path> students = new ArrayList<>();
    @Option(names = "--out", defaultValue = "report", description = "Output folder (default: ${DEFAULT-VALUE}).") Path out;
    @Option(names = "--n", defaultValue = "1000", description = "Samples per FID (default: ${DEFAULT-VALUE}).") int n;
    @Option(names = "--reps", defaultValue = "5", description = "Single-sample timings per row (default: ${DEFAULT-VALUE}).") int reps;

    @Override
    public Integer call() {
        Result r = run(common, teacher, students, out, n, reps);
        System.out.print(Report.markdown(r.rows(), r.machine()));
        System.out.println("wrote " + out.resolve("report.md") + ", report.json, report.png");
        return 0;
    }

    /** The report's rows and its machine line (which names the backend that ran them). */
    record Result(List<Report.Row> rows, String machine) {
    }

    static Result run(Common common, Path teacher, List<Path> students, Path out, int n, int reps) {
        Path t = Common.requireFile(teacher != null ? teacher : Common.model("fmnist-teacher.safetensors"), "teacher");
        Path c = Common.requireFile(Common.model("fmnist-classifier.safetensors"), "classifier");
        Frechet.Stats ref = FidStats.load(Common.requireFile(Common.model("fmnist-fid-stats.safetensors"), "FID statistics"));
        // Every student is checked before the teacher's rows, which take minutes at the default --n.
        for (Path sp : students) {
            try (UNetCheckpoint.Loaded l = UNetCheckpoint.load(Common.requireFile(sp, "student"), false)) {
                if (!l.role().equals("student")) {
                    throw new IllegalArgumentException(sp + " is a " + l.role() + "; --student needs a consistency student");
                }
            }
        }
        List<Report.Row> rows = new ArrayList<>();
        String backend;
        try (Sampler s = common.sampler(t); FeatureNet f = FeatureNet.load(c, s.ops())) {
            backend = Common.describe(s.ops());
            if (s.isStudent()) {
                throw new IllegalArgumentException(t + " is a student; --teacher needs a teacher checkpoint");
            }
            rows.addAll(Report.measure(s, "teacher " + t.getFileName(), new int[] {18, 9, 5}, f, ref, n, reps, System.err::println));
            for (Path sp : students) {
                try (Sampler st = common.sampler(Common.requireFile(sp, "student"))) {
                    if (!st.isStudent()) {
                        throw new IllegalArgumentException(sp + " is a teacher; --student needs a consistency student");
                    }
                    rows.addAll(Report.measure(st, "student " + sp.getFileName(), new int[] {1, 2, 4}, f, ref, n, reps,
                            System.err::println));
                }
            }
        }
        String machine = machine(backend);
        Report.write(rows, out, machine);
        return new Result(rows, machine);
    }

    static String machine(String backend) {
        String cpu = "unknown cpu";
        try {
            for (String line : java.nio.file.Files.readAllLines(Path.of("/proc/cpuinfo"))) {
                if (line.startsWith("model name")) {
                    cpu = line.substring(line.indexOf(':') + 1).trim();
                    break;
                }
            }
        } catch (java.io.IOException e) {
            // Only a label.
        }
        return cpu + ", " + Runtime.getRuntime().availableProcessors() + " cpus, Java " + Runtime.version().feature()
                + ", " + backend + " backend, " + java.time.LocalDate.now();
    }
}
