package ai.onestep.bench;

import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.tensor.Layout;
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
 * The cpu backend's fused group norm + SiLU (the ResnetBlock2D's norm1/act and norm2/act), forward and backward, at
 * the teacher's feature maps: 28x28x64, 14x14x128 and 7x7x128 with 32 groups, batch 1 (sampling) and 64
 * (training). {@code copy} moves the same tensor once (read x, write y): the in-process memory-bandwidth peer that
 * the forward pass, which moves the same bytes, is measured against.
 */
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@State(Scope.Benchmark)
public class GroupNormBench {
    @Param({"1", "64"})
    public int batch;

    /** height x width x channels of the feature map. */
    @Param({"28x28x64", "14x14x128", "7x7x128"})
    public String map;

    @Param({"32"})
    public int groups;

    /** The fused SiLU; false measures the normalization alone (and so what the vector exp costs). */
    @Param({"true"})
    public boolean silu;

    /** The diffusers "scale_shift" time-embedding path; the teacher uses the default (additive) one. */
    @Param({"false"})
    public boolean scaleShift;

    @Param({"2"})
    public int threads;

    private TensorArena arena;
    private CpuOps ops;
    private Tensor x, gamma, beta, scale, shift, y, mean, rstd, dy, dx, dgamma, dbeta, dscale, dshift;

    @Setup(Level.Trial)
    public void setup() {
        int[] hwc = parseMap(map);
        int c = hwc[2];
        arena = new TensorArena();
        ops = new CpuOps(threads);
        SplittableRandom r = new SplittableRandom(20261125);
        x = random(r, Layout.NHWC, batch, hwc[0], hwc[1], c);
        dy = random(r, Layout.NHWC, batch, hwc[0], hwc[1], c);
        gamma = random(r, Layout.ROWS, c);
        beta = random(r, Layout.ROWS, c);
        scale = scaleShift ? random(r, Layout.ROWS, batch, c) : null;
        shift = scaleShift ? random(r, Layout.ROWS, batch, c) : null;
        y = arena.allocate(Layout.NHWC, x.shape());
        dx = arena.allocate(Layout.NHWC, x.shape());
        mean = arena.allocate(batch, groups);
        rstd = arena.allocate(batch, groups);
        dgamma = arena.allocate(c);
        dbeta = arena.allocate(c);
        dscale = scaleShift ? arena.allocate(batch, c) : null;
        dshift = scaleShift ? arena.allocate(batch, c) : null;
        ops.groupNorm(x, gamma, beta, scale, shift, groups, 1e-5f, silu, y, mean, rstd);
    }

    static int[] parseMap(String map) {
        String[] p = map.split("x");
        return new int[] {Integer.parseInt(p[0]), Integer.parseInt(p[1]), Integer.parseInt(p[2])};
    }

    /** Uniform in [-2, 2): random, never zero, and reaching both saturated ends of the sigmoid. */
    private Tensor random(SplittableRandom r, Layout layout, int... shape) {
        Tensor t = arena.allocate(layout, shape);
        float[] v = new float[(int) t.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (r.nextDouble() * 4 - 2);
        }
        return t.copyFrom(v);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        arena.close();
    }

    @Benchmark
    public Tensor forward() {
        ops.groupNorm(x, gamma, beta, scale, shift, groups, 1e-5f, silu, y, mean, rstd);
        return y;
    }

    @Benchmark
    public Tensor backward() {
        ops.groupNormBackward(x, gamma, beta, scale, shift, groups, silu, mean, rstd, dy, dx, dgamma, dbeta, dscale,
                dshift);
        return dx;
    }

    @Benchmark
    public Tensor copy() {
        return y.copyFrom(x);
    }

    /**
     * Memory-bound: the floor is the bytes. Forward reads x and writes y; backward reads x and dy and writes dx;
     * copy reads x and writes y (the per-channel vectors and statistics are negligible). FLOPs per element, an exp
     * counted as one: forward 1 (mean) + 3 (variance) + 3 (normalize, affine) + 4 (SiLU); backward, in each of its
     * two passes, 2 (xhat) + 10 with SiLU (4 to recompute h, 6 for SiLU') + 3 (the sums, or dx).
     */
    public static Work work(String method, Map<String, String> params) {
        int[] hwc = parseMap(params.get("map"));
        boolean silu = Boolean.parseBoolean(params.getOrDefault("silu", "true"));
        double elements = Double.parseDouble(params.get("batch")) * hwc[0] * hwc[1] * hwc[2];
        double tensor = elements * Float.BYTES;
        double forwardFlops = (7 + (silu ? 4 : 0)) * elements;
        double backwardFlops = 2 * (2 + (silu ? 10 : 0) + 3) * elements;
        return switch (method) {
            case "forward" -> Work.memory(forwardFlops, 2 * tensor);
            case "backward" -> Work.memory(backwardFlops, 3 * tensor);
            case "copy" -> Work.memory(0, 2 * tensor);
            default -> throw new IllegalArgumentException("GroupNormBench has no method " + method);
        };
    }
}
