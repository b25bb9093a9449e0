package ai.onestep.bench;

import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.diffusion.ConsistencyDenoiser;
import ai.onestep.model.UNetCheckpoint;
import ai.onestep.model.UNetConfig;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
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
 * One consistency step of a committed student on the cpu backend: the whole network evaluation plus the
 * c_skip/c_out combination, as {@code api.Sampler} runs it (a 1-step sample is one of these). {@code constantWeights}
 * registers the weights with the backend, as the Sampler does, so conv and linear layers reuse their repacked
 * panels; false repacks them on every call, as training does. Run from the repository root (models/), or set
 * {@code -Donestep.home}.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
public class StepBench {
    @Param({"fmnist-student", "fmnist-student-half"})
    public String model;

    @Param({"1", "64"})
    public int batch;

    @Param({"true", "false"})
    public boolean constantWeights;

    @Param({"2"})
    public int threads;

    private UNetCheckpoint.Loaded loaded;
    private TensorArena arena;
    private Workspace ws;
    private ConsistencyDenoiser denoiser;
    private Tensor x, y;
    private double[] t;

    static Path modelPath(String name) {
        Path home = Path.of(System.getProperty("onestep.home", "."));
        Path p = home.resolve("models").resolve(name + ".safetensors");
        if (!Files.exists(p)) {
            throw new IllegalStateException("StepBench: " + p.toAbsolutePath() + " not found; run from the repository"
                    + " root or pass -Donestep.home=<repository>");
        }
        return p;
    }

    @Setup(Level.Trial)
    public void setUp() {
        loaded = UNetCheckpoint.load(modelPath(model), false);
        CpuOps ops = new CpuOps(threads);
        if (constantWeights) {
            ops.registerParameters(loaded.net().weightTensors());
        }
        arena = new TensorArena();
        ws = new Workspace();
        UNetConfig cfg = loaded.net().config();
        int s = cfg.sampleSize();
        x = arena.allocate(Layout.NHWC, batch, s, s, cfg.inChannels());
        y = arena.allocate(Layout.NHWC, batch, s, s, cfg.inChannels());
        Noise.gaussian(x, 1, 0);
        t = new double[batch];
        Arrays.fill(t, 80.0);  // the 1-step sample's only evaluation, at T
        denoiser = new ConsistencyDenoiser(loaded.net(), ops, ws);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        ws.close();
        arena.close();
        loaded.close();
    }

    @Benchmark
    public Tensor step() {
        denoiser.denoise(x, t, null, y);
        return y;
    }

    /** The U-Net's FLOPs at this batch; bytes: the weights read once plus the input and output images. */
    public static Work work(String method, Map<String, String> params) {
        int n = Integer.parseInt(params.get("batch"));
        try (UNetCheckpoint.Loaded m = UNetCheckpoint.load(modelPath(params.get("model")), false)) {
            UNetConfig cfg = m.net().config();
            int s = cfg.sampleSize();
            double images = 2.0 * 4 * n * s * s * cfg.inChannels();
            return Work.compute(m.net().flops(n, s, s), 4.0 * m.net().parameters().count() + images);
        }
    }
}
