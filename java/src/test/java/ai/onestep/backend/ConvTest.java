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
import ai.onestep.backend.naive.NaiveConv.ConvShape;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** conv2d and conv2dBackward: cpu against naive, naive against float64 finite differences, determinism. */
class ConvTest {

    /** Tensors of one convolution problem, with random inputs. */
    private record Problem(ConvShape s, Tensor x, Tensor w, Tensor b, Tensor dy) {
        static Problem of(TensorArena arena, ConvShape s, long seed) {
            Tensor x = randn(arena, seed, Layout.NHWC, s.n(), s.h(), s.w(), s.cin());
            Tensor w = randn(arena, seed + 1, Layout.HWIO, s.kh(), s.kw(), s.cin(), s.cout());
            Tensor b = randn(arena, seed + 2, s.cout());
            Tensor dy = randn(arena, seed + 3, Layout.NHWC, s.n(), s.ho(), s.wo(), s.cout());
            return new Problem(s, x, w, b, dy);
        }

        Tensor y(TensorArena arena) {
            return arena.allocate(Layout.NHWC, s.n(), s.ho(), s.wo(), s.cout());
        }
    }

    private static ConvShape shape(int n, int h, int w, int cin, int k, int cout, int stride, int pad) {
        return new ConvShape(n, h, w, cin, k, k, cout, stride, pad);
    }

    // Ragged on purpose: channel counts that are not multiples of 16 or 32 (the micro-tile), pixel counts that
    // are not multiples of 8 (its rows), batch 1 and > 1, 3x3 and 1x1, stride 1 and 2, with and without padding.
    @ParameterizedTest
    @CsvSource({
            "1, 5, 7, 3, 3, 5, 1, 1",
            "2, 9, 6, 17, 3, 33, 2, 1",
            "2, 8, 8, 16, 1, 40, 1, 0",
            "3, 7, 7, 8, 3, 70, 2, 0",
            "1, 28, 28, 1, 3, 64, 1, 1",
            "2, 6, 5, 20, 1, 7, 2, 0",
            "1, 4, 4, 64, 3, 64, 1, 1",
            "2, 7, 9, 5, 3, 19, 1, 2",
            "1, 11, 10, 6, 5, 9, 3, 2",
            "2, 7, 8, 4, 2, 6, 2, 0",
    })
    void cpuMatchesNaive(int n, int h, int w, int cin, int k, int cout, int stride, int pad) {
        try (TensorArena arena = new TensorArena()) {
            Problem p = Problem.of(arena, shape(n, h, w, cin, k, cout, stride, pad), 11 * n + h + cin + cout);
            for (Tensor bias : new Tensor[] {p.b(), null}) {
                Tensor yc = p.y(arena), yn = p.y(arena);
                CPU.conv2d(p.x(), p.w(), bias, stride, pad, yc);
                NAIVE.conv2d(p.x(), p.w(), bias, stride, pad, yn);
                assertClose("conv2d y", yc, yn, CPU_VS_NAIVE);
            }
            Tensor[] gc = backward(CPU, p, arena), gn = backward(NAIVE, p, arena);
            assertClose("conv2d dx", gc[0], gn[0], CPU_VS_NAIVE);
            assertClose("conv2d dw", gc[1], gn[1], CPU_VS_NAIVE);
            assertClose("conv2d db", gc[2], gn[2], CPU_VS_NAIVE);
        }
    }

    /** conv2dResidual on a host backend: conv2d and then the add, bit for bit; a residual of a wrong shape refused. */
    @Test
    void residualIsTheConvolutionThenTheAdd() {
        try (TensorArena arena = new TensorArena()) {
            Problem p = Problem.of(arena, shape(2, 7, 6, 5, 3, 9, 1, 1), 71);
            Tensor z = randn(arena, 72, Layout.NHWC, 2, 7, 6, 9);
            for (Ops ops : new Ops[] {CPU, NAIVE}) {
                Tensor fused = p.y(arena), want = p.y(arena);
                ops.conv2dResidual(p.x(), p.w(), p.b(), z, 1, 1, fused);
                ops.conv2d(p.x(), p.w(), p.b(), 1, 1, want);
                ops.add(z, want, want);
                assertArrayEquals(want.toArray(), fused.toArray(), ops.name());
            }
            Tensor wrong = arena.allocate(Layout.NHWC, 2, 7, 6, 8);
            TensorException e = assertThrows(TensorException.class,
                    () -> CPU.conv2dResidual(p.x(), p.w(), p.b(), wrong, 1, 1, p.y(arena)));
            assertTrue(e.getMessage().contains("residual z"), e.getMessage());
            e = assertThrows(TensorException.class, () -> CPU.conv2dResidual(p.x(), p.w(), p.b(), null, 1, 1,
                    p.y(arena)));
            assertTrue(e.getMessage().contains("residual z is null"), e.getMessage());
        }
    }

    /** dx into a buffer of NaN (must be overwritten); dw and db into fresh zeros. */
    private static Tensor[] backward(Ops ops, Problem p, TensorArena arena) {
        Tensor dx = arena.allocate(Layout.NHWC, p.x().shape()).fill(Float.NaN);
        Tensor dw = arena.allocate(Layout.HWIO, p.w().shape());
        Tensor db = arena.allocate(p.s().cout());
        ops.conv2dBackward(p.x(), p.w(), p.dy(), p.s().stride(), p.s().padding(), dx, dw, db);
        return new Tensor[] {dx, dw, db};
    }

    @ParameterizedTest
    @CsvSource({
            "1, 4, 5, 2, 3, 3, 1, 1",
            "2, 5, 5, 2, 3, 2, 2, 1",
            "1, 4, 3, 3, 1, 2, 2, 0",
            "1, 5, 4, 2, 3, 2, 2, 0",
    })
    void naiveBackwardMatchesFiniteDifferences(int n, int h, int w, int cin, int k, int cout, int stride, int pad) {
        ConvShape s = shape(n, h, w, cin, k, cout, stride, pad);
        double[] x = OpsTesting.randn(1, n * h * w * cin);
        double[] wt = OpsTesting.randn(2, k * k * cin * cout);
        double[] b = OpsTesting.randn(3, cout);
        // L = sum(y * r) for a fixed random r, so dL/dy = r.
        double[] r = OpsTesting.randn(4, n * s.ho() * s.wo() * cout);
        double[] dx = new double[x.length], dw = new double[wt.length], db = new double[cout];
        NaiveConv.conv2dBackward(x, wt, r, s, dx, dw, db);
        double hstep = 1e-6;
        assertClose("fd dx", dx, OpsTesting.finiteDifference(x, v -> OpsTesting.dot(NaiveConv.conv2d(v, wt, b, s), r),
                hstep), 1e-6);
        assertClose("fd dw", dw, OpsTesting.finiteDifference(wt, v -> OpsTesting.dot(NaiveConv.conv2d(x, v, b, s), r),
                hstep), 1e-6);
        assertClose("fd db", db, OpsTesting.finiteDifference(b, v -> OpsTesting.dot(NaiveConv.conv2d(x, wt, v, s), r),
                hstep), 1e-6);
    }

    @Test
    void cpuIsBitIdenticalForOneTwoThreeThreads() {
        try (TensorArena arena = new TensorArena()) {
            Problem p = Problem.of(arena, shape(3, 10, 9, 12, 3, 40, 1, 1), 5);
            Problem q = Problem.of(arena, shape(2, 9, 9, 24, 3, 16, 2, 1), 6);
            float[][] ref = null;
            for (int threads = 1; threads <= 3; threads++) {
                CpuOps ops = new CpuOps(threads);
                float[][] got = new float[8][];
                int i = 0;
                for (Problem pr : new Problem[] {p, q}) {
                    Tensor y = pr.y(arena);
                    ops.conv2d(pr.x(), pr.w(), pr.b(), pr.s().stride(), pr.s().padding(), y);
                    got[i++] = y.toArray();
                    for (Tensor g : backward(ops, pr, arena)) {
                        got[i++] = g.toArray();
                    }
                }
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
    void parameterGradientsAccumulateAndInputGradientIsAssigned() {
        try (TensorArena arena = new TensorArena()) {
            Problem p = Problem.of(arena, shape(2, 6, 7, 5, 3, 9, 1, 1), 21);
            for (Ops ops : new Ops[] {CPU, NAIVE}) {
                Tensor[] fresh = backward(ops, p, arena);
                Tensor dx = randn(arena, 31, Layout.NHWC, p.x().shape());
                Tensor dw = randn(arena, 32, Layout.HWIO, p.w().shape());
                Tensor db = randn(arena, 33, p.s().cout());
                float[] dw0 = dw.toArray(), db0 = db.toArray();
                ops.conv2dBackward(p.x(), p.w(), p.dy(), 1, 1, dx, dw, db);
                assertClose(ops.name() + " dx assigned", dx, fresh[0], 1e-7);
                assertClose(ops.name() + " dw accumulated", dw, sum(arena, fresh[1], dw0), 1e-6);
                assertClose(ops.name() + " db accumulated", db, sum(arena, fresh[2], db0), 1e-6);
            }
        }
    }

    @Test
    void nullGradientsAreSkipped() {
        try (TensorArena arena = new TensorArena()) {
            Problem p = Problem.of(arena, shape(1, 5, 5, 4, 3, 6, 2, 1), 41);
            Tensor dw = arena.allocate(Layout.HWIO, p.w().shape());
            CPU.conv2dBackward(p.x(), p.w(), p.dy(), 2, 1, null, dw, null);
            assertClose("dw alone", dw, backward(NAIVE, p, arena)[1], CPU_VS_NAIVE);
        }
    }

    private static Tensor sum(TensorArena arena, Tensor a, float[] b) {
        float[] v = a.toArray();
        for (int i = 0; i < v.length; i++) {
            v[i] += b[i];
        }
        return arena.allocate(a.layout(), a.shape()).copyFrom(v);
    }

    @Test
    void badInputNamesTheOp() {
        try (TensorArena arena = new TensorArena()) {
            Tensor x = randn(arena, 1, Layout.NHWC, 1, 5, 5, 3);
            Tensor w = randn(arena, 2, Layout.HWIO, 3, 3, 4, 8);
            Tensor y = arena.allocate(Layout.NHWC, 1, 5, 5, 8);
            TensorException e = assertThrows(TensorException.class, () -> CPU.conv2d(x, w, null, 1, 1, y));
            assertTrue(e.getMessage().startsWith("conv2d:"), e.getMessage());
            Tensor w3 = randn(arena, 3, Layout.HWIO, 3, 3, 3, 8);
            Tensor dy = arena.allocate(Layout.NHWC, 1, 4, 4, 8);
            e = assertThrows(TensorException.class,
                    () -> CPU.conv2dBackward(x, w3, dy, 1, 1, null, null, null));
            assertTrue(e.getMessage().startsWith("conv2dBackward:"), e.getMessage());
        }
    }
}
