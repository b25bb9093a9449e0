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
import ai.onestep.backend.naive.NaiveNorm;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;
import java.util.function.BiConsumer;
import java.util.function.Function;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** SiLU and the elementwise / data-movement ops: cpu against the float64 oracle, backward against finite differences. */
class PointwiseTest {

    /** Sizes around the vector width and the parallel grain: 1, a ragged tail, several ranges with a tail. */
    @ParameterizedTest(name = "{0} elements")
    @ValueSource(ints = {1, 17, 1000, 40_003})
    void elementwiseCpuMatchesNaive(int size) {
        try (TensorArena a = new TensorArena()) {
            Tensor x = scaled(randn(a, size, size), 4f); // reach the saturated ends of the sigmoid
            Tensor b = randn(a, size + 1, size);
            compare(a, "silu", x, (ops, y) -> ops.silu(x, y));
            compare(a, "siluBackward", x, (ops, y) -> ops.siluBackward(x, b, y));
            compare(a, "add", x, (ops, y) -> ops.add(x, b, y));
            compare(a, "mul", x, (ops, y) -> ops.mul(x, b, y));
            compare(a, "scale", x, (ops, y) -> ops.scale(x, -1.7f, y));
            compare(a, "axpby", x, (ops, y) -> ops.axpby(0.6f, x, -1.3f, b, y));
            compare(a, "axpy", x, (ops, y) -> {
                y.copyFrom(b);
                ops.axpy(0.3f, x, y);
            });
        }
    }

    @ParameterizedTest(name = "shape #{0}")
    @ValueSource(ints = {0, 1, 2, 3})
    void dataMovementCpuMatchesNaive(int which) {
        int[][] shapes = {{1, 3, 5, 7}, {2, 4, 4, 16}, {3, 2, 3, 33}, {2, 7, 9, 64}};
        int[] s = shapes[which];
        int n = s[0], h = s[1], w = s[2], c = s[3];
        int cb = c / 2 + 3;
        try (TensorArena a = new TensorArena()) {
            Tensor x = randn(a, 1, Layout.NHWC, n, h, w, c);
            Tensor xb = randn(a, 2, Layout.NHWC, n, h, w, cb);
            Tensor v = randn(a, 3, n, c);
            Tensor big = randn(a, 4, Layout.NHWC, n, 2 * h, 2 * w, c);
            Tensor cat = randn(a, 5, Layout.NHWC, n, h, w, c + cb);
            compare(a, "addPerChannel", x, (ops, y) -> ops.addPerChannel(x, v, y));
            compare(a, "sumPerChannel", v, (ops, dv) -> ops.sumPerChannel(x, dv));
            compare(a, "concatChannels", cat, (ops, y) -> ops.concatChannels(x, xb, y));
            compare(a, "splitChannels da", x, (ops, da) -> ops.splitChannels(cat, da, a.allocate(Layout.NHWC, n, h, w,
                    cb)));
            compare(a, "splitChannels db", xb, (ops, db) -> ops.splitChannels(cat, a.allocate(Layout.NHWC, n, h, w, c),
                    db));
            compare(a, "upsampleNearest2x", big, (ops, y) -> ops.upsampleNearest2x(x, y));
            compare(a, "upsampleNearest2xBackward", x, (ops, dx) -> ops.upsampleNearest2xBackward(big, dx));
        }
    }

    /** Runs {@code op} on naive and cpu into fresh outputs shaped like {@code like}, pre-filled with NaN. */
    private static void compare(TensorArena a, String what, Tensor like, BiConsumer<Ops, Tensor> op) {
        Tensor ref = a.allocate(like.layout(), like.shape()).fill(Float.NaN);
        Tensor out = a.allocate(like.layout(), like.shape()).fill(Float.NaN);
        op.accept(NAIVE, ref);
        op.accept(CPU, out);
        // NaN pre-fill: an output element the op forgot to assign fails here (inputs gradients are assigned).
        assertTrue(ref.allFinite() && out.allFinite(), what + ": an output element was not written");
        assertClose(what + " cpu vs naive", out, ref, CPU_VS_NAIVE);
    }

    private static Tensor scaled(Tensor t, float s) {
        float[] v = t.toArray();
        for (int i = 0; i < v.length; i++) {
            v[i] *= s;
        }
        return t.copyFrom(v);
    }

    /**
     * The denoisers' output moved from scale-then-axpy to one axpby; its rounding is fma(b, z, a x), the same bits,
     * so samples did not change. Also in place (y is x, or y is z), as a sampler uses it.
     */
    @Test
    void axpbyHasTheBitsOfScaleThenAxpyAndMayAlias() {
        try (TensorArena a = new TensorArena()) {
            Tensor x = randn(a, 3, 40_003);
            Tensor z = randn(a, 4, 40_003);
            Tensor want = a.allocate(40_003);
            CPU.scale(x, 0.37f, want);
            CPU.axpy(-2.1f, z, want);
            Tensor got = a.allocate(40_003);
            CPU.axpby(0.37f, x, -2.1f, z, got);
            assertArrayEquals(want.toArray(), got.toArray());
            Tensor xi = a.allocate(40_003).copyFrom(x.toArray());
            CPU.axpby(0.37f, xi, -2.1f, z, xi);
            assertArrayEquals(want.toArray(), xi.toArray(), "y aliasing x");
            Tensor zi = a.allocate(40_003).copyFrom(z.toArray());
            CPU.axpby(0.37f, x, -2.1f, zi, zi);
            assertArrayEquals(want.toArray(), zi.toArray(), "y aliasing z");
        }
    }

    @Test
    void siluSaturatesWithoutNaN() {
        try (TensorArena a = new TensorArena()) {
            Tensor x = a.of(Layout.ROWS, new float[] {-200f, -89f, -20f, 0f, 20f, 89f, 200f}, 7);
            Tensor y = a.allocate(7);
            Tensor dx = a.allocate(7);
            CPU.silu(x, y);
            CPU.siluBackward(x, a.allocate(7).fill(1f), dx);
            float[] yv = y.toArray();
            float[] dv = dx.toArray();
            for (int i = 0; i < 7; i++) {
                double ref = NaiveNorm.silu(x.get(i));
                double refGrad = NaiveNorm.siluGrad(x.get(i));
                assertTrue(Math.abs(yv[i] - ref) <= 1e-6 * Math.max(1, Math.abs(ref)), "silu(" + x.get(i) + ") = "
                        + yv[i] + ", expected " + ref);
                assertTrue(Math.abs(dv[i] - refGrad) <= 1e-6, "silu'(" + x.get(i) + ") = " + dv[i] + ", expected "
                        + refGrad);
            }
        }
    }

    @Test
    void inPlaceWhereAllowed() {
        try (TensorArena a = new TensorArena()) {
            Tensor x = randn(a, 7, 3, 5, 37);
            Tensor b = randn(a, 8, 3, 5, 37);
            Tensor v = randn(a, 9, 3, 37);
            Tensor expect = a.allocate(3, 5, 37);
            CPU.add(x, b, expect);
            Tensor alias = a.copyOf(x);
            CPU.add(alias, b, alias);
            assertArrayEquals(expect.toArray(), alias.toArray(), "add with y = a");
            CPU.addPerChannel(x, v, expect);
            alias.copyFrom(x);
            CPU.addPerChannel(alias, v, alias);
            assertArrayEquals(expect.toArray(), alias.toArray(), "addPerChannel with y = x");
            CPU.silu(x, expect);
            alias.copyFrom(x);
            CPU.silu(alias, alias);
            assertArrayEquals(expect.toArray(), alias.toArray(), "silu with y = x");
        }
    }

    @Test
    void reductionsBitIdenticalForAnyThreadCount() {
        try (TensorArena a = new TensorArena()) {
            Tensor dy = randn(a, 3, Layout.NHWC, 3, 11, 13, 40);
            Tensor big = randn(a, 4, Layout.NHWC, 3, 22, 26, 40);
            float[][] ref = null;
            for (int threads = 1; threads <= 3; threads++) {
                Ops ops = new CpuOps(threads);
                Tensor dv = a.allocate(3, 40);
                Tensor dx = a.allocate(Layout.NHWC, 3, 11, 13, 40);
                Tensor y = a.allocate(Layout.NHWC, 3, 11, 13, 40);
                ops.sumPerChannel(dy, dv);
                ops.upsampleNearest2xBackward(big, dx);
                ops.silu(dy, y);
                float[][] got = {dv.toArray(), dx.toArray(), y.toArray()};
                if (ref == null) {
                    ref = got;
                }
                for (int i = 0; i < got.length; i++) {
                    assertArrayEquals(ref[i], got[i], "output " + i + " with " + threads + " threads");
                }
            }
        }
    }

    @Test
    void badInputNamesTheOp() {
        try (TensorArena a = new TensorArena()) {
            Tensor x = a.allocate(4, 5);
            TensorException e = assertThrows(TensorException.class, () -> CPU.add(x, a.allocate(21), a.allocate(20)));
            assertTrue(e.getMessage().startsWith("add:"), e.getMessage());
            TensorException e2 = assertThrows(TensorException.class,
                    () -> CPU.upsampleNearest2x(a.allocate(Layout.NHWC, 1, 2, 2, 3), a.allocate(Layout.NHWC, 1, 4, 3,
                            3)));
            assertTrue(e2.getMessage().startsWith("upsampleNearest2x:"), e2.getMessage());
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Oracle backward passes against float64 central finite differences of the oracle forward
    // ------------------------------------------------------------------------------------------------

    /** Checks {@code backward(dir)} = gradient of {@code sum(forward(x) * dir)} by finite differences. */
    private static void checkGradient(String what, double[] x, int outSize, Function<double[], double[]> forward,
                                      Function<double[], double[]> backward) {
        double[] dir = OpsTesting.randn(99, outSize);
        double[] fd = OpsTesting.finiteDifference(x, v -> OpsTesting.dot(forward.apply(v), dir), 1e-6);
        assertClose(what + " vs finite differences", backward.apply(dir), fd, 1e-6);
    }

    @Test
    void naiveBackwardsMatchFiniteDifferences() {
        int n = 2, h = 2, w = 3, c = 3, cb = 2;
        double[] x = OpsTesting.randn(1, n * h * w * c);
        double[] xs = OpsTesting.map(x, v -> 5 * v);
        checkGradient("siluBackward", xs, xs.length, v -> {
            double[] y = new double[v.length];
            NaiveNorm.silu(v, y);
            return y;
        }, dir -> {
            double[] dx = new double[xs.length];
            NaiveNorm.siluBackward(xs, dir, dx);
            return dx;
        });
        double[] vec = OpsTesting.randn(2, n * c);
        checkGradient("sumPerChannel (addPerChannel's backward for v)", vec, x.length, v -> {
            double[] y = new double[x.length];
            NaiveNorm.addPerChannel(x, n, c, v, y);
            return y;
        }, dir -> {
            double[] dv = new double[n * c];
            NaiveNorm.sumPerChannel(dir, n, c, dv);
            return dv;
        });
        checkGradient("upsampleNearest2xBackward", x, 4 * x.length, v -> {
            double[] y = new double[4 * x.length];
            NaiveNorm.upsampleNearest2x(v, n, h, w, c, y);
            return y;
        }, dir -> {
            double[] dx = new double[x.length];
            NaiveNorm.upsampleNearest2xBackward(dir, n, h, w, c, dx);
            return dx;
        });
        double[] other = OpsTesting.randn(3, n * h * w * cb);
        checkGradient("splitChannels (concatChannels' backward for a)", x, x.length + other.length, v -> {
            double[] y = new double[x.length + other.length];
            NaiveNorm.concatChannels(v, c, other, cb, y);
            return y;
        }, dir -> {
            double[] da = new double[x.length];
            NaiveNorm.splitChannels(dir, c, cb, da, new double[other.length]);
            return da;
        });
    }
}
