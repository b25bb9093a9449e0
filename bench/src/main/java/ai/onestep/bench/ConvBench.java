package ai.onestep.bench;

import ai.onestep.backend.Ops;
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
 * conv2d forward and backward of the cpu backend at the teacher U-Net's shapes (NHWC, 3x3, padding 1):
 * {@code shape} is {@code "HxW:Cin->Cout/stride"}. TorchConvBench (profile peers) times libtorch on the same
 * shapes; both report GFLOP/s through {@link #work}.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class ConvBench {
    @Param({"28x28:64->64/1", "14x14:128->128/1", "7x7:128->128/1", "28x28:1->64/1", "28x28:64->64/2"})
    public String shape;

    @Param({"1", "64"})
    public int batch;

    @Param({"2"})
    public int threads;

    private TensorArena arena;
    private Ops ops;
    /** A second backend to which w and b are registered constants, as a sampler's weights are. */
    private Ops constOps;
    /** As constOps, with Winograd's F(2x2, 3x3) switched off: every forward is the direct implicit GEMM. */
    private Ops directOps;
    private Tensor x, w, b, y, dy, dx, dw, db;
    private int stride;

    /** The parsed {@code shape} parameter: input side, channels, stride; the kernel is 3x3 with padding 1. */
    public record ConvShape(int h, int w, int cin, int cout, int stride) {
        public static ConvShape parse(String s) {
            String[] hw = s.substring(0, s.indexOf(':')).split("x");
            String[] io = s.substring(s.indexOf(':') + 1, s.indexOf('/')).split("->");
            return new ConvShape(Integer.parseInt(hw[0]), Integer.parseInt(hw[1]), Integer.parseInt(io[0]),
                    Integer.parseInt(io[1]), Integer.parseInt(s.substring(s.indexOf('/') + 1)));
        }

        public int ho() {
            return (h + 2 - 3) / stride + 1;
        }

        public int wo() {
            return (w + 2 - 3) / stride + 1;
        }

        /** 2 N Ho Wo Cout KH KW Cin: one multiply-add per weight per output pixel. */
        public double forwardFlops(int n) {
            return 2.0 * n * ho() * wo() * cout * 9 * cin;
        }
    }

    @Setup(Level.Trial)
    public void setUp() {
        ConvShape s = ConvShape.parse(shape);
        stride = s.stride();
        arena = new TensorArena();
        ops = new CpuOps(threads);
        SplittableRandom r = new SplittableRandom(42);
        x = random(arena.allocate(Layout.NHWC, batch, s.h(), s.w(), s.cin()), r);
        w = random(arena.allocate(Layout.HWIO, 3, 3, s.cin(), s.cout()), r);
        b = random(arena.allocate(s.cout()), r);
        y = arena.allocate(Layout.NHWC, batch, s.ho(), s.wo(), s.cout());
        dy = random(arena.allocate(Layout.NHWC, batch, s.ho(), s.wo(), s.cout()), r);
        dx = arena.allocate(Layout.NHWC, batch, s.h(), s.w(), s.cin());
        dw = arena.allocate(Layout.HWIO, 3, 3, s.cin(), s.cout());
        db = arena.allocate(s.cout());
        constOps = new CpuOps(threads);
        constOps.registerParameters(java.util.List.of(w, b));
        directOps = new CpuOps(threads, false);
        directOps.registerParameters(java.util.List.of(w, b));
    }

    static Tensor random(Tensor t, SplittableRandom r) {
        float[] v = new float[(int) t.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (2 * r.nextDouble() - 1);
        }
        return t.copyFrom(v);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        arena.close();
    }

    @Benchmark
    public Tensor forward() {
        ops.conv2d(x, w, b, stride, 1, y);
        return y;
    }

    /**
     * The forward with registered (constant) weights: the sampling case, where the cpu backend keeps the repacked
     * weights from the first call (training, {@link #forward}, repacks them on every call).
     */
    @Benchmark
    public Tensor forwardConstantWeights() {
        constOps.conv2d(x, w, b, stride, 1, y);
        return y;
    }

    /**
     * {@link #forwardConstantWeights} through the direct implicit GEMM: what a 3x3 stride-1 forward costs without
     * Winograd's F(2x2, 3x3) (the other shapes run the same code in both). GFLOP/s are of the direct
     * convolution's FLOPs for all three methods, so Winograd's are "effective" rates.
     */
    @Benchmark
    public Tensor forwardDirect() {
        directOps.conv2d(x, w, b, stride, 1, y);
        return y;
    }

    /** dx, dw and db: about twice the forward's FLOPs (dx and dw are each one forward-sized GEMM). */
    @Benchmark
    public Tensor backward() {
        ops.conv2dBackward(x, w, dy, stride, 1, dx, dw, db);
        return dw;
    }

    public static Work work(String method, Map<String, String> params) {
        ConvShape s = ConvShape.parse(params.get("shape"));
        int n = Integer.parseInt(params.get("batch"));
        double xb = 4.0 * n * s.h() * s.w() * s.cin();
        double yb = 4.0 * n * s.ho() * s.wo() * s.cout();
        double wb = 4.0 * 9 * s.cin() * s.cout();
        return method.equals("backward")
                ? Work.compute(2 * s.forwardFlops(n), xb + yb + 2 * wb + xb + wb)
                : Work.compute(s.forwardFlops(n), xb + wb + yb);
    }
}
