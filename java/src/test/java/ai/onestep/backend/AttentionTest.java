package ai.onestep.backend;

import static ai.onestep.backend.OpsTesting.CPU;
import static ai.onestep.backend.OpsTesting.CPU_VS_NAIVE;
import static ai.onestep.backend.OpsTesting.NAIVE;
import static ai.onestep.backend.OpsTesting.assertClose;
import static ai.onestep.backend.OpsTesting.randn;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.backend.naive.NaiveAttention;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Multi-head attention: cpu against the float64 naive oracle (forward o and lse, and dq, dk, dv), the naive backward
 * against central finite differences, thread-count determinism, assign semantics, the all -inf row, and argument
 * validation.
 */
class AttentionTest {

    /** q, k, v, dO of one shape, random from a seed. */
    private record Inputs(Tensor q, Tensor k, Tensor v, Tensor dO) {
        static Inputs of(TensorArena arena, long seed, int n, int t, int c) {
            return new Inputs(randn(arena, seed, n, t, c), randn(arena, seed + 1, n, t, c),
                    randn(arena, seed + 2, n, t, c), randn(arena, seed + 3, n, t, c));
        }
    }

    /** Shapes: ragged T (1, 5, 17, 49, 70, 130), headDim 8, 24, 32, 64, the U-Net's T = 49 and 196, batch 1 and >1. */
    @ParameterizedTest(name = "n={0} t={1} c={2} heads={3}")
    @CsvSource({
        "1, 1, 8, 1",
        "2, 5, 48, 2",
        "1, 17, 32, 4",
        "3, 17, 24, 1",
        "2, 49, 128, 4",
        "1, 49, 128, 2",
        "2, 70, 64, 2",
        "1, 130, 16, 2",
        "1, 196, 128, 4",
        "1, 196, 128, 2",
    })
    void cpuMatchesNaiveForwardAndBackward(int n, int t, int c, int heads) {
        try (TensorArena arena = new TensorArena()) {
            Inputs in = Inputs.of(arena, 10L * t + c + heads, n, t, c);
            Tensor oRef = arena.allocate(n, t, c), lseRef = arena.allocate(n, heads, t);
            Tensor o = arena.allocate(n, t, c), lse = arena.allocate(n, heads, t);
            NAIVE.attention(in.q, in.k, in.v, heads, oRef, lseRef);
            CPU.attention(in.q, in.k, in.v, heads, o, lse);
            assertClose("attention o", o, oRef, CPU_VS_NAIVE);
            assertClose("attention lse", lse, lseRef, CPU_VS_NAIVE);

            // Both backward passes get the same (naive) o and lse, so only the backward kernels are compared.
            Tensor[] ref = grads(arena, in);
            Tensor[] got = grads(arena, in);
            NAIVE.attentionBackward(in.q, in.k, in.v, oRef, lseRef, in.dO, heads, ref[0], ref[1], ref[2]);
            CPU.attentionBackward(in.q, in.k, in.v, oRef, lseRef, in.dO, heads, got[0], got[1], got[2]);
            assertClose("attentionBackward dq", got[0], ref[0], CPU_VS_NAIVE);
            assertClose("attentionBackward dk", got[1], ref[1], CPU_VS_NAIVE);
            assertClose("attentionBackward dv", got[2], ref[2], CPU_VS_NAIVE);
        }
    }

    private static Tensor[] grads(TensorArena arena, Inputs in) {
        int[] shape = in.q.shape();
        return new Tensor[] {arena.allocate(shape), arena.allocate(shape), arena.allocate(shape)};
    }

    /** The naive backward against float64 central differences of {@code f = sum(o * r)} (so dO = r). */
    @ParameterizedTest(name = "n={0} t={1} c={2} heads={3}")
    @CsvSource({
        "1, 1, 4, 1",
        "2, 4, 6, 2",
        "1, 7, 12, 3",
    })
    void naiveBackwardMatchesFiniteDifferences(int n, int t, int c, int heads) {
        int size = n * t * c;
        double[] q = randn(1, size), k = randn(2, size), v = randn(3, size), r = randn(4, size);
        double[] o = new double[size], lse = new double[n * heads * t];
        NaiveAttention.attention(q, k, v, n, t, c, heads, o, lse);
        double[] dq = new double[size], dk = new double[size], dv = new double[size];
        NaiveAttention.attentionBackward(q, k, v, o, lse, r, n, t, c, heads, dq, dk, dv);

        double h = 1e-6;
        double[] fdq = OpsTesting.finiteDifference(q, x -> objective(x, k, v, r, n, t, c, heads), h);
        double[] fdk = OpsTesting.finiteDifference(k, x -> objective(q, x, v, r, n, t, c, heads), h);
        double[] fdv = OpsTesting.finiteDifference(v, x -> objective(q, k, x, r, n, t, c, heads), h);
        assertClose("dq vs finite differences", dq, fdq, 1e-6);
        assertClose("dk vs finite differences", dk, fdk, 1e-6);
        assertClose("dv vs finite differences", dv, fdv, 1e-6);
    }

    private static double objective(double[] q, double[] k, double[] v, double[] r, int n, int t, int c, int heads) {
        double[] o = new double[q.length];
        NaiveAttention.attention(q, k, v, n, t, c, heads, o, new double[n * heads * t]);
        return OpsTesting.dot(o, r);
    }

    /** With one token the softmax is 1: o = v and lse is the single scaled score (checks lse's scale and log base). */
    @Test
    void singleTokenGivesValueAndScaledScore() {
        int c = 6, heads = 2, hd = 3;
        double[] q = randn(5, c), k = randn(6, c), v = randn(7, c);
        double[] o = new double[c], lse = new double[heads];
        NaiveAttention.attention(q, k, v, 1, 1, c, heads, o, lse);
        assertArrayEquals(v, o, 1e-12);
        for (int h = 0; h < heads; h++) {
            double dot = 0;
            for (int d = 0; d < hd; d++) {
                dot += q[h * hd + d] * k[h * hd + d];
            }
            assertEquals(dot / Math.sqrt(hd), lse[h], 1e-12);
        }
    }

    /** Work is split over (sample, head, query tile) and (sample, head) tasks only: any thread count, same bits. */
    @ParameterizedTest(name = "n={0} t={1} c={2} heads={3}")
    @CsvSource({
        "2, 70, 64, 2",
        "3, 49, 96, 3",
    })
    void cpuIsBitIdenticalForOneTwoThreeThreads(int n, int t, int c, int heads) {
        try (TensorArena arena = new TensorArena()) {
            Inputs in = Inputs.of(arena, 77, n, t, c);
            float[][] first = null;
            for (int threads = 1; threads <= 3; threads++) {
                CpuOps ops = new CpuOps(threads);
                Tensor o = arena.allocate(n, t, c), lse = arena.allocate(n, heads, t);
                ops.attention(in.q, in.k, in.v, heads, o, lse);
                Tensor[] g = grads(arena, in);
                ops.attentionBackward(in.q, in.k, in.v, o, lse, in.dO, heads, g[0], g[1], g[2]);
                float[][] out = {o.toArray(), lse.toArray(), g[0].toArray(), g[1].toArray(), g[2].toArray()};
                if (first == null) {
                    first = out;
                } else {
                    for (int i = 0; i < out.length; i++) {
                        assertArrayEquals(first[i], out[i], "output " + i + " with " + threads + " threads");
                    }
                }
            }
        }
    }

    /** dq, dk, dv are activation gradients: assigned, whatever they held before (Ops.attentionBackward). */
    @Test
    void gradientsAreAssignedNotAccumulated() {
        int n = 2, t = 9, c = 16, heads = 2;
        for (Ops ops : new Ops[] {NAIVE, CPU}) {
            try (TensorArena arena = new TensorArena()) {
                Inputs in = Inputs.of(arena, 31, n, t, c);
                Tensor o = arena.allocate(n, t, c), lse = arena.allocate(n, heads, t);
                ops.attention(in.q, in.k, in.v, heads, o, lse);
                Tensor[] clean = grads(arena, in);
                ops.attentionBackward(in.q, in.k, in.v, o, lse, in.dO, heads, clean[0], clean[1], clean[2]);
                Tensor[] dirty = grads(arena, in);
                for (Tensor g : dirty) {
                    g.fill(1e3f);
                }
                ops.attentionBackward(in.q, in.k, in.v, o, lse, in.dO, heads, dirty[0], dirty[1], dirty[2]);
                for (int i = 0; i < 3; i++) {
                    assertArrayEquals(clean[i].toArray(), dirty[i].toArray(), ops + " gradient " + i);
                }
            }
        }
    }

    /**
     * A row whose scores are all -inf (q = +inf against keys that are all negative in that channel) has no
     * distribution: o = 0 and lse = -inf, never NaN, in both backends; the other rows and heads are unaffected.
     */
    @Test
    void rowOfMinusInfinityScoresGivesZeroNotNaN() {
        int n = 1, t = 20, c = 16, heads = 2, badRow = 3;
        try (TensorArena arena = new TensorArena()) {
            Inputs in = Inputs.of(arena, 41, n, t, c);
            for (int j = 0; j < t; j++) {
                in.k.set((long) j * c, -Math.abs(in.k.get((long) j * c)));
            }
            in.q.set((long) badRow * c, Float.POSITIVE_INFINITY);
            Tensor oRef = arena.allocate(n, t, c), lseRef = arena.allocate(n, heads, t);
            Tensor o = arena.allocate(n, t, c), lse = arena.allocate(n, heads, t);
            NAIVE.attention(in.q, in.k, in.v, heads, oRef, lseRef);
            CPU.attention(in.q, in.k, in.v, heads, o, lse);
            assertTrue(o.allFinite(), "cpu attention o has NaN or inf");
            assertEquals(Float.NEGATIVE_INFINITY, lse.at(0, 0, badRow));
            assertEquals(Float.NEGATIVE_INFINITY, lseRef.at(0, 0, badRow));
            for (int d = 0; d < c / heads; d++) {
                assertEquals(0f, o.at(0, badRow, d), "o of the -inf row");
            }
            assertClose("o with a -inf row", o, oRef, CPU_VS_NAIVE);
            // The lse row of -inf cannot enter a relative error; compare every other entry.
            lse.set(badRow, 0f);
            lseRef.set(badRow, 0f);
            assertClose("lse with a -inf row", lse, lseRef, CPU_VS_NAIVE);
        }
    }

    /** The backward pass gives a row saved with lse = -inf (and o = 0) zero probability, not NaN, in both backends. */
    @Test
    void backwardOfMinusInfinityRowIsFinite() {
        int n = 1, t = 20, c = 16, heads = 2, badRow = 5;
        try (TensorArena arena = new TensorArena()) {
            Inputs in = Inputs.of(arena, 43, n, t, c);
            Tensor o = arena.allocate(n, t, c), lse = arena.allocate(n, heads, t);
            NAIVE.attention(in.q, in.k, in.v, heads, o, lse);
            lse.set(badRow, Float.NEGATIVE_INFINITY);
            for (int d = 0; d < c / heads; d++) {
                o.set((long) badRow * c + d, 0f);
            }
            Tensor[] ref = grads(arena, in), got = grads(arena, in);
            NAIVE.attentionBackward(in.q, in.k, in.v, o, lse, in.dO, heads, ref[0], ref[1], ref[2]);
            CPU.attentionBackward(in.q, in.k, in.v, o, lse, in.dO, heads, got[0], got[1], got[2]);
            for (int i = 0; i < 3; i++) {
                assertTrue(got[i].allFinite() && ref[i].allFinite(), "gradient " + i + " has NaN or inf");
                assertClose("gradient " + i + " with a -inf row", got[i], ref[i], CPU_VS_NAIVE);
            }
            assertEquals(0f, got[0].at(0, badRow, 0), "dq of the -inf row");
        }
    }

    /** One packed (N, T, 3C) projection gives the bits of attention on its three thirds (naive and cpu). */
    @Test
    void packedProjectionMatchesTheThirds() {
        try (TensorArena arena = new TensorArena()) {
            int n = 2, t = 17, c = 48, heads = 2;
            Tensor qkv = randn(arena, 71, n, t, 3 * c);
            Tensor[] parts = {arena.allocate(n, t, c), arena.allocate(n, t, c), arena.allocate(n, t, c)};
            for (int b = 0; b < n; b++) {
                for (int i = 0; i < t; i++) {
                    for (int j = 0; j < 3 * c; j++) {
                        parts[j / c].set(((long) b * t + i) * c + j % c, qkv.at(b, i, j));
                    }
                }
            }
            for (Ops ops : new Ops[] {NAIVE, CPU}) {
                Tensor oRef = arena.allocate(n, t, c), lseRef = arena.allocate(n, heads, t);
                Tensor o = arena.allocate(n, t, c), lse = arena.allocate(n, heads, t);
                ops.attention(parts[0], parts[1], parts[2], heads, oRef, lseRef);
                ops.attentionPacked(qkv, heads, o, lse);
                assertArrayEquals(oRef.toArray(), o.toArray(), ops.name() + ": o");
                assertArrayEquals(lseRef.toArray(), lse.toArray(), ops.name() + ": lse");
            }
            TensorException e = assertThrows(TensorException.class, () -> CPU.attentionPacked(
                    arena.allocate(1, 4, 13), 1, arena.allocate(1, 4, 4), arena.allocate(1, 1, 4)));
            assertTrue(e.getMessage().startsWith("attentionPacked:") && e.getMessage().contains("3 x"),
                    e.getMessage());
            assertTrue(!CPU.packsQkv(32) && !NAIVE.packsQkv(32), "host backends project q, k, v apart");
        }
    }

    @Test
    void badArgumentsNameTheOp() {
        try (TensorArena arena = new TensorArena()) {
            Tensor q = arena.allocate(1, 4, 12), o = arena.allocate(1, 4, 12);
            TensorException e = assertThrows(TensorException.class,
                    () -> CPU.attention(q, q, q, 5, o, arena.allocate(1, 5, 4)));
            assertTrue(e.getMessage().startsWith("attention:") && e.getMessage().contains("5 heads"), e.getMessage());
            Tensor wrongLse = arena.allocate(1, 3, 4);
            e = assertThrows(TensorException.class,
                    () -> NAIVE.attentionBackward(q, q, q, o, wrongLse, o, 2, q, q, q));
            assertTrue(e.getMessage().startsWith("attentionBackward:") && e.getMessage().contains("lse"),
                    e.getMessage());
        }
    }
}
