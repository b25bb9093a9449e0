package ai.onestep.bench;

import ai.onestep.backend.Backends;
import ai.onestep.backend.Ops;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
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
 * The optimizer step, the gradient-norm reduction and the EMA over one parameter tensor. All are streaming,
 * memory-bound passes: the floor is the bytes in {@link #work}, at the machine's memory bandwidth. The naive
 * backend, run side by side, is the in-process reference for the ratio.
 *
 * <p>Sizes: 262144 floats (1 MiB a tensor; Adam's four streams fit the L2+L3 caches) and 4194304 floats
 * (16 MiB a tensor, 64 MiB for Adam: main memory), about a U-Net block's conv weight and a whole small U-Net.
 */
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@State(Scope.Benchmark)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 3, time = 1)
public class OptimBench {
    @Param({"cpu", "naive"})
    public String backend;

    @Param({"2"})
    public int threads;

    @Param({"262144", "4194304"})
    public int size;

    private TensorArena arena;
    private Ops ops;
    private Tensor p;
    private Tensor g;
    private Tensor m;
    private Tensor v;
    private Tensor target;

    @Setup
    public void setup() {
        arena = new TensorArena();
        ops = Backends.byName(backend, threads);
        SplittableRandom r = new SplittableRandom(42);
        p = random(r, 1.0);
        g = random(r, 1e-2);
        m = random(r, 1e-3);
        v = arena.allocate(size);
        float[] vv = new float[size];
        for (int i = 0; i < size; i++) {
            vv[i] = (float) (1e-4 * (0.5 + r.nextDouble()));
        }
        v.copyFrom(vv);
        target = random(r, 1.0);
    }

    private Tensor random(SplittableRandom r, double scale) {
        float[] a = new float[size];
        for (int i = 0; i < size; i++) {
            a[i] = (float) (scale * (2 * r.nextDouble() - 1));
        }
        return arena.allocate(size).copyFrom(a);
    }

    @TearDown
    public void tearDown() {
        arena.close();
    }

    /** AdamW at a mid-training step; a learning rate of 1e-6 keeps the tensors' magnitudes over millions of calls. */
    @Benchmark
    public void adamW() {
        ops.adamStep(p, g, m, v, 1000, 1e-6f, 0.9f, 0.999f, 1e-8f, 0.01f, true);
    }

    /** RAdam past the rectification threshold (the path consistency distillation runs almost always). */
    @Benchmark
    public void radam() {
        ops.radamStep(p, g, m, v, 1000, 1e-6f, 0.9f, 0.999f, 1e-8f, 0f, false);
    }

    @Benchmark
    public double sumOfSquares() {
        return ops.sumOfSquares(g);
    }

    @Benchmark
    public void ema() {
        ops.ema(target, p, 0.999f);
    }

    /**
     * Per element: Adam/RAdam read p, g, m, v and write p, m, v (28 bytes) for about 16 flops (decay, two moment
     * updates, sqrt, denominator, scaled step); the sum of squares reads 4 bytes for one FMA; the EMA reads two
     * floats and writes one (12 bytes) for a multiply and an FMA.
     */
    public static Work work(String method, Map<String, String> params) {
        double n = Double.parseDouble(params.getOrDefault("size", "262144"));
        return switch (method) {
            case "adamW", "radam" -> Work.memory(16 * n, 28 * n);
            case "sumOfSquares" -> Work.memory(2 * n, 4 * n);
            case "ema" -> Work.memory(3 * n, 12 * n);
            default -> throw new IllegalArgumentException("OptimBench has no method " + method);
        };
    }
}
