package ai.onestep.backend;

import static ai.onestep.backend.OpsTesting.CPU;
import static ai.onestep.backend.OpsTesting.CPU_VS_NAIVE;
import static ai.onestep.backend.OpsTesting.NAIVE;
import static ai.onestep.backend.OpsTesting.assertClose;
import static ai.onestep.backend.OpsTesting.randn;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.backend.naive.NaiveConv;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** linear and linearBackward: cpu against naive, naive against finite differences, semantics, determinism. */
class LinearTest {

    /** linearResidual on a host backend: linear and then the add, bit for bit; a residual of a wrong shape refused. */
    @Test
    void residualIsTheLinearThenTheAdd() {
        try (TensorArena arena = new TensorArena()) {
            Tensor x = randn(arena, 81, 2, 5, 7), w = randn(arena, 82, 7, 9), b = randn(arena, 83, 9);
            Tensor z = randn(arena, 84, 2, 5, 9);
            for (Ops ops : new Ops[] {CPU, NAIVE}) {
                Tensor fused = arena.allocate(2, 5, 9), want = arena.allocate(2, 5, 9);
                ops.linearResidual(x, w, b, z, fused);
                ops.linear(x, w, b, want);
                ops.add(z, want, want);
                assertArrayEquals(want.toArray(), fused.toArray(), ops.name());
            }
            TensorException e = assertThrows(TensorException.class,
                    () -> CPU.linearResidual(x, w, b, arena.allocate(2, 5, 8), arena.allocate(2, 5, 9)));
            assertTrue(e.getMessage().contains("residual z"), e.getMessage());
            e = assertThrows(TensorException.class, () -> CPU.linearResidual(x, w, b, null, arena.allocate(2, 5, 9)));
            assertTrue(e.getMessage().contains("residual z is null"), e.getMessage());
        }
    }

    // x is (batch, tokens, in): leading dimensions are rows. Ragged sizes around the 8 x 32 micro-tile.
    @ParameterizedTest
    @CsvSource({"1, 1, 3, 5", "2, 7, 33, 19", "3, 5, 64, 130", "1, 9, 17, 32"})
    void cpuMatchesNaive(int batch, int tokens, int in, int out) {
        try (TensorArena arena = new TensorArena()) {
            Tensor x = randn(arena, 1, batch, tokens, in);
            Tensor w = randn(arena, 2, in, out);
            Tensor b = randn(arena, 3, out);
            Tensor dy = randn(arena, 4, batch, tokens, out);
            for (Tensor bias : new Tensor[] {b, null}) {
                Tensor yc = arena.allocate(batch, tokens, out), yn = arena.allocate(batch, tokens, out);
                CPU.linear(x, w, bias, yc);
                NAIVE.linear(x, w, bias, yn);
                assertClose("linear y", yc, yn, CPU_VS_NAIVE);
            }
            Tensor[] gc = backward(CPU, arena, x, w, dy), gn = backward(NAIVE, arena, x, w, dy);
            assertClose("linear dx", gc[0], gn[0], CPU_VS_NAIVE);
            assertClose("linear dw", gc[1], gn[1], CPU_VS_NAIVE);
            assertClose("linear db", gc[2], gn[2], CPU_VS_NAIVE);
        }
    }

    /** dx into NaN (must be overwritten), dw and db into fresh zeros. */
    private static Tensor[] backward(Ops ops, TensorArena arena, Tensor x, Tensor w, Tensor dy) {
        Tensor dx = arena.allocate(x.shape()).fill(Float.NaN);
        Tensor dw = arena.allocate(w.shape());
        Tensor db = arena.allocate(w.dim(1));
        ops.linearBackward(x, w, dy, dx, dw, db);
        return new Tensor[] {dx, dw, db};
    }

    @Test
    void naiveBackwardMatchesFiniteDifferences() {
        int rows = 4, in = 5, out = 3;
        double[] x = OpsTesting.randn(1, rows * in), w = OpsTesting.randn(2, in * out), b = OpsTesting.randn(3, out);
        double[] r = OpsTesting.randn(4, rows * out);
        double[] dx = new double[x.length], dw = new double[w.length], db = new double[out];
        NaiveConv.linearBackward(x, w, r, rows, in, out, dx, dw, db);
        assertClose("fd dx", dx, OpsTesting.finiteDifference(x,
                v -> OpsTesting.dot(NaiveConv.linear(v, w, b, rows, in, out), r), 1e-6), 1e-6);
        assertClose("fd dw", dw, OpsTesting.finiteDifference(w,
                v -> OpsTesting.dot(NaiveConv.linear(x, v, b, rows, in, out), r), 1e-6), 1e-6);
        assertClose("fd db", db, OpsTesting.finiteDifference(b,
                v -> OpsTesting.dot(NaiveConv.linear(x, w, v, rows, in, out), r), 1e-6), 1e-6);
    }

    @Test
    void parameterGradientsAccumulateAndInputGradientIsAssigned() {
        try (TensorArena arena = new TensorArena()) {
            Tensor x = randn(arena, 1, 6, 10), w = randn(arena, 2, 10, 7), dy = randn(arena, 3, 6, 7);
            for (Ops ops : new Ops[] {CPU, NAIVE}) {
                Tensor[] fresh = backward(ops, arena, x, w, dy);
                Tensor dx = randn(arena, 4, 6, 10), dw = randn(arena, 5, 10, 7), db = randn(arena, 6, 7);
                float[] dw0 = dw.toArray(), db0 = db.toArray();
                ops.linearBackward(x, w, dy, dx, dw, db);
                assertClose(ops.name() + " dx assigned", dx, fresh[0], 1e-7);
                assertClose(ops.name() + " dw accumulated", dw, plus(arena, fresh[1], dw0), 1e-6);
                assertClose(ops.name() + " db accumulated", db, plus(arena, fresh[2], db0), 1e-6);
            }
        }
    }

    private static Tensor plus(TensorArena arena, Tensor a, float[] b) {
        float[] v = a.toArray();
        for (int i = 0; i < v.length; i++) {
            v[i] += b[i];
        }
        return arena.allocate(a.shape()).copyFrom(v);
    }

    @Test
    void cpuIsBitIdenticalForOneTwoThreeThreads() {
        try (TensorArena arena = new TensorArena()) {
            Tensor x = randn(arena, 1, 300, 40), w = randn(arena, 2, 40, 72), dy = randn(arena, 3, 300, 72);
            float[][] ref = null;
            for (int threads = 1; threads <= 3; threads++) {
                CpuOps ops = new CpuOps(threads);
                Tensor y = arena.allocate(300, 72);
                ops.linear(x, w, null, y);
                Tensor[] g = backward(ops, arena, x, w, dy);
                float[][] got = {y.toArray(), g[0].toArray(), g[1].toArray(), g[2].toArray()};
                if (ref == null) {
                    ref = got;
                } else {
                    for (int j = 0; j < ref.length; j++) {
                        assertArrayEquals(ref[j], got[j], "output " + j + " with " + threads + " threads");
                    }
                }
            }
        }
    }

    @Test
    void badInputNamesTheOp() {
        try (TensorArena arena = new TensorArena()) {
            Tensor x = randn(arena, 1, 4, 5), w = randn(arena, 2, 6, 3), y = arena.allocate(4, 3);
            TensorException e = assertThrows(TensorException.class, () -> CPU.linear(x, w, null, y));
            assertTrue(e.getMessage().startsWith("linear:"), e.getMessage());
        }
    }
}
