package ai.onestep.bench;

import ai.onestep.backend.cpu.FmaPeak;
import java.io.IOException;
import java.lang.reflect.Method;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.RunnerException;
import org.openjdk.jmh.runner.options.CommandLineOptions;
import org.openjdk.jmh.util.Statistics;

/**
 * Runs JMH benchmarks and prints what a performance engineer reads first: median and p99 microseconds per
 * invocation, achieved GFLOP/s and GB/s, and the percentage of this machine's floor (its FP32 FMA peak, or its
 * memory bandwidth for memory-bound ops). Writes the same rows as JSON lines (shared/BENCHMARKING.md).
 *
 * <pre>
 *   java ... -jar bench/target/benchmarks.jar ...            plain JMH
 *   java ... -cp bench/target/benchmarks.jar ai.onestep.bench.BenchMain [JMH options] [regex]
 * </pre>
 * System properties: {@code onestep.peak.gflops} (default: measured by {@link FmaPeak} on all cores before the
 * benchmarks run, since the project's "2-core AVX-512" machines have been a Zen 5 at 522 GFLOP/s and a Xeon at ~270),
 * {@code onestep.peak.gbs} (default 0: unknown, no percentage), {@code onestep.bench.json} (output file). The peak
 * used goes into every JSON row ({@code peak_gflops}, {@code peak_source}).
 */
public final class BenchMain {
    private BenchMain() {
    }

    public static void main(String[] args) throws RunnerException, IOException {
        CommandLineOptions options;
        try {
            options = new CommandLineOptions(args);
        } catch (Exception e) {
            System.err.println("bench: " + e.getMessage());
            System.exit(2);
            return;
        }
        // Measured before the benchmarks, with the cores otherwise idle (JMH's forks have not started).
        String given = System.getProperty("onestep.peak.gflops");
        double peakGflops;
        String peakSource;
        if (given != null) {
            peakGflops = Double.parseDouble(given);
            peakSource = "given";
        } else {
            FmaPeak.Result peak = FmaPeak.measure(Runtime.getRuntime().availableProcessors(), 200);
            peakGflops = peak.gflops();
            peakSource = "measured";
            System.out.println("bench: FP32 FMA peak " + peak + " (the %floor of compute-bound rows; "
                    + "-Donestep.peak.gflops=N to give one)");
        }
        Collection<RunResult> results = new Runner(options).run();
        double peakGbs = Double.parseDouble(System.getProperty("onestep.peak.gbs", "0"));
        List<String> json = new ArrayList<>();
        System.out.println();
        System.out.printf(Locale.ROOT, "%%floor: of the FP32 FMA peak, %.0f GFLOP/s (%s), for compute-bound rows%n",
                peakGflops, peakSource);
        System.out.printf(Locale.ROOT, "%-44s %-34s %10s %10s %9s %8s %8s%n", "benchmark", "params", "median_us",
                "p99_us", "GFLOP/s", "GB/s", "%floor");
        for (RunResult r : results) {
            var params = r.getParams();
            String bench = params.getBenchmark();
            int dot = bench.lastIndexOf('.');
            String cls = bench.substring(0, dot);
            String method = bench.substring(dot + 1);
            Map<String, String> p = new TreeMap<>();
            for (String key : params.getParamsKeys()) {
                p.put(key, params.getParam(key));
            }
            Statistics s = r.getPrimaryResult().getStatistics();
            double unitToUs = toMicros(r.getPrimaryResult().getScoreUnit());
            double median = s.getPercentile(50) * unitToUs;
            double p99 = s.getPercentile(99) * unitToUs;
            Work w = work(cls, method, p);
            double gflops = w == null ? Double.NaN : w.flops() / (median * 1e3);
            double gbs = w == null ? Double.NaN : w.bytes() / (median * 1e3);
            double pct = w == null ? Double.NaN
                    : w.memoryBound() ? (peakGbs > 0 ? 100 * gbs / peakGbs : Double.NaN) : 100 * gflops / peakGflops;
            String shortName = cls.substring(cls.lastIndexOf('.') + 1) + "." + method;
            System.out.printf(Locale.ROOT, "%-44s %-34s %10.1f %10.1f %9.1f %8.2f %8s%n", shortName, p, median, p99,
                    gflops, gbs, Double.isNaN(pct) ? "-" : String.format(Locale.ROOT, "%.1f", pct));
            json.add(String.format(Locale.ROOT,
                    "{\"date\":\"%s\",\"machine\":\"%s\",\"jdk\":\"%s\",\"benchmark\":\"%s\",\"params\":\"%s\","
                            + "\"threads\":%d,\"median_us\":%.3f,\"p99_us\":%.3f,\"gflops\":%.2f,\"gbs\":%.2f,"
                            + "\"pct_floor\":%.2f,\"peak_gflops\":%.1f,\"peak_source\":\"%s\"}",
                    LocalDate.now(), machine(), Runtime.version(), shortName, p, Runtime.getRuntime().availableProcessors(),
                    median, p99, nan0(gflops), nan0(gbs), nan0(pct), peakGflops, peakSource));
        }
        String out = System.getProperty("onestep.bench.json");
        if (out != null) {
            Files.write(Path.of(out), json);
            System.out.println("wrote " + out);
        }
    }

    private static double nan0(double v) {
        return Double.isNaN(v) ? -1 : v;
    }

    private static double toMicros(String unit) {
        return switch (unit.substring(0, unit.indexOf('/'))) {
            case "ns" -> 1e-3;
            case "us" -> 1;
            case "ms" -> 1e3;
            case "s" -> 1e6;
            default -> throw new IllegalStateException("bench: unexpected unit " + unit
                    + " (use @BenchmarkMode(SampleTime) with a time unit)");
        };
    }

    private static Work work(String cls, String method, Map<String, String> params) {
        try {
            Method m = Class.forName(cls).getMethod("work", String.class, Map.class);
            return (Work) m.invoke(null, method, params);
        } catch (ReflectiveOperationException e) {
            System.err.println("bench: " + cls + " declares no work(String, Map): no GFLOP/s for it");
            return null;
        }
    }

    private static String machine() {
        String cpu = "unknown cpu";
        try {
            for (String line : Files.readAllLines(Path.of("/proc/cpuinfo"))) {
                if (line.startsWith("model name")) {
                    cpu = line.substring(line.indexOf(':') + 1).trim();
                    break;
                }
            }
        } catch (IOException e) {
            // Not Linux: the model name is only a label.
        }
        return cpu.replace("\"", "") + ", " + Runtime.getRuntime().availableProcessors() + " cpus";
    }
}
