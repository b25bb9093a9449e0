package ai.onestep.backend;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.backend.naive.NaiveOps;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.SplittableRandom;
import java.util.function.DoubleUnaryOperator;
import java.util.function.Function;

/**
 * Shared test harness for the op tests: random tensors, the relative-error criterion, and float64 central
 * finite differences. Every cpu op is compared with naive by {@code ||out - ref|| / ||ref|| < 1e-5}; every
 * naive backward is compared with finite differences of its float64 forward.
 */
public final class OpsTesting {
    public static final double CPU_VS_NAIVE = 1e-5;

    public static final NaiveOps NAIVE = new NaiveOps();
    public static final CpuOps CPU = new CpuOps(2);

    private OpsTesting() {
    }

    /** Gaussian N(0, 1) values from a fixed seed (never zeros: shared/BENCHMARKING.md). */
    public static Tensor randn(TensorArena arena, long seed, Layout layout, int... shape) {
        Tensor t = arena.allocate(layout, shape);
        SplittableRandom r = new SplittableRandom(seed);
        float[] v = new float[(int) t.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) gaussian(r);
        }
        return t.copyFrom(v);
    }

    public static Tensor randn(TensorArena arena, long seed, int... shape) {
        return randn(arena, seed, Layout.ROWS, shape);
    }

    public static double[] randn(long seed, int n) {
        SplittableRandom r = new SplittableRandom(seed);
        double[] v = new double[n];
        for (int i = 0; i < n; i++) {
            v[i] = gaussian(r);
        }
        return v;
    }

    static double gaussian(SplittableRandom r) {
        // Box-Muller; deterministic for a seed.
        double u1 = 1.0 - r.nextDouble();
        double u2 = r.nextDouble();
        return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    }

    /** {@code ||a - ref|| / ||ref||} in double (0 when both are 0). */
    public static double relErr(float[] a, float[] ref) {
        if (a.length != ref.length) {
            fail("length " + a.length + " vs reference " + ref.length);
        }
        double num = 0, den = 0;
        for (int i = 0; i < a.length; i++) {
            double d = (double) a[i] - ref[i];
            num += d * d;
            den += (double) ref[i] * ref[i];
        }
        return den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    }

    public static double relErr(double[] a, double[] ref) {
        double num = 0, den = 0;
        for (int i = 0; i < a.length; i++) {
            double d = a[i] - ref[i];
            num += d * d;
            den += ref[i] * ref[i];
        }
        return den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    }

    /** Asserts {@code relErr(actual, expected) < tol}, naming what was compared. */
    public static void assertClose(String what, Tensor actual, Tensor expected, double tol) {
        double e = relErr(actual.toArray(), expected.toArray());
        assertTrue(e < tol, what + ": relative error " + e + " >= " + tol + " (" + actual.describe() + ")");
    }

    public static void assertClose(String what, double[] actual, double[] expected, double tol) {
        double e = relErr(actual, expected);
        assertTrue(e < tol, what + ": relative error " + e + " >= " + tol);
    }

    /**
     * The gradient of the scalar {@code f} at {@code x} by float64 central differences,
     * {@code (f(x + h e_i) - f(x - h e_i)) / 2h}. {@code x} is restored afterwards.
     */
    public static double[] finiteDifference(double[] x, Function<double[], Double> f, double h) {
        double[] g = new double[x.length];
        for (int i = 0; i < x.length; i++) {
            double old = x[i];
            x[i] = old + h;
            double fp = f.apply(x);
            x[i] = old - h;
            double fm = f.apply(x);
            x[i] = old;
            g[i] = (fp - fm) / (2 * h);
        }
        return g;
    }

    /** {@code sum(a * b)}: projects an output onto a fixed random direction to make a scalar for FD checks. */
    public static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            s += a[i] * b[i];
        }
        return s;
    }

    public static double[] map(double[] a, DoubleUnaryOperator f) {
        double[] r = new double[a.length];
        for (int i = 0; i < a.length; i++) {
            r[i] = f.applyAsDouble(a[i]);
        }
        return r;
    }
}
