package ai.onestep.bench;

import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.bytedeco.javacpp.BoolPointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.T_TensorTensorTensor_T;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
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
 * The peer of {@link ConvBench}: libtorch's conv2d (NCHW, contiguous, random weights, padding 1) on the same
 * shapes, batches and thread count, timed the same way in the same harness. Backward is
 * {@code at::convolution_backward} for dx, dw and db, what autograd calls, without the graph bookkeeping.
 *
 * <p>Run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset in that command only (shared/ENVIRONMENT.md: with
 * them libtorch's BLAS runs its AVX2 kernel at half speed).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class TorchConvBench {
    static {
        javacppCache();
    }

    /**
     * JavaCPP unpacks libtorch (about 350 MB) into ~/.javacpp/cache unless told otherwise: keep it under bench/target,
     * next to benchmarks.jar (shared/ENVIRONMENT.md). Before the first libtorch class loads.
     */
    static void javacppCache() {
        if (System.getProperty("org.bytedeco.javacpp.cachedir") == null) {
            try {
                Path jar = Path.of(TorchConvBench.class.getProtectionDomain().getCodeSource().getLocation().toURI());
                System.setProperty("org.bytedeco.javacpp.cachedir", jar.resolveSibling("javacpp-cache").toString());
            } catch (java.net.URISyntaxException e) {
                throw new IllegalStateException("TorchConvBench: cannot locate benchmarks.jar for the JavaCPP cache", e);
            }
        }
    }

    @Param({"28x28:64->64/1", "14x14:128->128/1", "7x7:128->128/1", "28x28:1->64/1", "28x28:64->64/2"})
    public String shape;

    @Param({"1", "64"})
    public int batch;

    @Param({"2"})
    public int threads;

    private PointerScope scope;
    private Tensor x, w, b, dy;
    private TensorOptional bias;
    private long[] stride, padding, dilation, outputPadding, biasSizes;
    private BoolPointer mask;

    @Setup(Level.Trial)
    public void setUp() {
        ConvBench.ConvShape s = ConvBench.ConvShape.parse(shape);
        scope = new PointerScope();
        torch.set_num_threads(threads);
        torch.manual_seed(42);
        x = torch.randn(batch, s.cin(), s.h(), s.w()).contiguous();
        w = torch.randn(s.cout(), s.cin(), 3, 3).contiguous();
        b = torch.randn(s.cout());
        dy = torch.randn(batch, s.cout(), s.ho(), s.wo()).contiguous();
        bias = new TensorOptional(b);
        stride = new long[] {s.stride(), s.stride()};
        padding = new long[] {1, 1};
        dilation = new long[] {1, 1};
        outputPadding = new long[] {0, 0};
        biasSizes = new long[] {s.cout()};
        mask = new BoolPointer(3);
        for (int i = 0; i < 3; i++) {
            mask.put(i, true);
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        scope.close();
    }

    @Benchmark
    public long forward() {
        try (PointerScope call = new PointerScope()) {
            Tensor y = torch.conv2d(x, w, bias, stride, padding, dilation, 1);
            return y.numel();
        }
    }

    @Benchmark
    public long backward() {
        try (PointerScope call = new PointerScope()) {
            T_TensorTensorTensor_T g = torch.convolution_backward(dy, x, w, biasSizes, stride, padding, dilation,
                    false, outputPadding, 1, mask);
            return g.get1().numel() + g.get2().numel() + g.get0().numel();
        }
    }

    public static Work work(String method, Map<String, String> params) {
        return ConvBench.work(method, params);
    }
}
