package ai.onestep.bench;

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
 * The cpu backend's multi-head self-attention at the U-Net's shapes: the 7x7 and 14x14 feature maps as T = 49 and
 * 196 tokens of C = 128 channels, heads of 32 or 64 channels, batch 1 (sampling) and 64 (training).
 */
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 5, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@State(Scope.Benchmark)
public class AttentionBench {
    @Param({"1", "64"})
    public int batch;

    @Param({"49", "196"})
    public int tokens;

    @Param({"128"})
    public int channels;

    @Param({"32", "64"})
    public int headDim;

    @Param({"2"})
    public int threads;

    private TensorArena arena;
    private CpuOps ops;
    private int heads;
    private Tensor q, k, v, o, lse, dO, dq, dk, dv;

    @Setup(Level.Trial)
    public void setup() {
        heads = channels / headDim;
        arena = new TensorArena();
        ops = new CpuOps(threads);
        SplittableRandom r = new SplittableRandom(20261125);
        q = random(r);
        k = random(r);
        v = random(r);
        dO = random(r);
        o = arena.allocate(batch, tokens, channels);
        lse = arena.allocate(batch, heads, tokens);
        dq = arena.allocate(batch, tokens, channels);
        dk = arena.allocate(batch, tokens, channels);
        dv = arena.allocate(batch, tokens, channels);
        ops.attention(q, k, v, heads, o, lse);
    }

    private Tensor random(SplittableRandom r) {
        Tensor t = arena.allocate(batch, tokens, channels);
        float[] x = new float[(int) t.size()];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return t.copyFrom(x);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        arena.close();
    }

    @Benchmark
    public Tensor forward() {
        ops.attention(q, k, v, heads, o, lse);
        return o;
    }

    @Benchmark
    public Tensor backward() {
        ops.attentionBackward(q, k, v, o, lse, dO, heads, dq, dk, dv);
        return dq;
    }

    /**
     * Forward: the two matrix products {@code Q K^T} and {@code P V}, {@code 2 * 2 * T * T * headDim} per sample and
     * head; backward: five products ({@code S, dV, dP, dK, dQ}), 2.5 times that (FlashAttention-2, Dao 2023).
     * Bytes: forward reads q, k, v and writes o and lse; backward reads q, k, v, o, dO, lse and writes dq, dk, dv.
     */
    public static Work work(String method, Map<String, String> params) {
        double n = Double.parseDouble(params.get("batch"));
        double t = Double.parseDouble(params.get("tokens"));
        double c = Double.parseDouble(params.get("channels"));
        double hd = Double.parseDouble(params.get("headDim"));
        double heads = c / hd;
        double forwardFlops = 4 * n * heads * t * t * hd;
        double tensor = n * t * c * Float.BYTES;
        double lseBytes = n * heads * t * Float.BYTES;
        return switch (method) {
            case "forward" -> Work.compute(forwardFlops, 4 * tensor + lseBytes);
            case "backward" -> Work.compute(2.5 * forwardFlops, 8 * tensor + lseBytes);
            default -> throw new IllegalArgumentException("AttentionBench has no method " + method);
        };
    }
}
