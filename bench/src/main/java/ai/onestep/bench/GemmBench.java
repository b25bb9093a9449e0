package ai.onestep.bench;

import ai.onestep.backend.Ops;
import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The cpu backend's matmul (square M = N = K, the ENVIRONMENT.md reference point at 512) and linear forward and
 * backward at the U-Net's attention-projection shape ({@code rows} tokens x 128 features -> 128).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class GemmBench {
    @Param({"512"})
    public int size;

    /** Rows of the linear layer: batch 64 x 7 x 7 tokens. */
    @Param({"3136"})
    public int rows;

    @Param({"128"})
    public int features;

    @Param({"2"})
    public int threads;

    private TensorArena arena;
    private Ops ops;
    private Tensor a, b, c, x, w, bias, y, dy, dx, dw, db;

    @Setup(Level.Trial)
    public void setUp() {
        arena = new TensorArena();
        ops = new CpuOps(threads);
        SplittableRandom r = new SplittableRandom(7);
        a = ConvBench.random(arena.allocate(size, size), r);
        b = ConvBench.random(arena.allocate(size, size), r);
        c = arena.allocate(size, size);
        x = ConvBench.random(arena.allocate(rows, features), r);
        w = ConvBench.random(arena.allocate(features, features), r);
        bias = ConvBench.random(arena.allocate(features), r);
        y = arena.allocate(rows, features);
        dy = ConvBench.random(arena.allocate(rows, features), r);
        dx = arena.allocate(rows, features);
        dw = arena.allocate(features, features);
        db = arena.allocate(features);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        arena.close();
    }

    @Benchmark
    public Tensor matmul() {
        ops.matmul(a, false, b, false, c, 1f, 0f);
        return c;
    }

    @Benchmark
    public Tensor linear() {
        ops.linear(x, w, bias, y);
        return y;
    }

    @Benchmark
    public Tensor linearBackward() {
        ops.linearBackward(x, w, dy, dx, dw, db);
        return dw;
    }

    public static Work work(String method, Map<String, String> params) {
        double n = Double.parseDouble(params.get("size"));
        double rows = Double.parseDouble(params.get("rows"));
        double f = Double.parseDouble(params.get("features"));
        return switch (method) {
            case "matmul" -> Work.compute(2 * n * n * n, 3 * 4 * n * n);
            case "linear" -> Work.compute(2 * rows * f * f, 4 * (2 * rows * f + f * f + f));
            case "linearBackward" -> Work.compute(4 * rows * f * f, 4 * (3 * rows * f + 2 * f * f + 2 * f));
            default -> throw new IllegalArgumentException("GemmBench: no work model for " + method);
        };
    }
}
