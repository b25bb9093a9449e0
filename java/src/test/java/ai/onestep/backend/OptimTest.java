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
import ai.onestep.backend.naive.NaiveOptim;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Optimizer steps, sum of squares and EMA: cpu against naive, thread-count determinism, and the first steps
 * against values computed by hand from the papers' formulas.
 */
class OptimTest {
    /** Ragged sizes: below one vector, not a multiple of 16, and across several 16384-element cpu blocks. */
    private static final List<int[]> SHAPES = List.of(new int[] {1}, new int[] {17}, new int[] {3, 5, 7},
            new int[] {320, 3}, new int[] {2, 16411});

    @FunctionalInterface
    interface Step {
        void apply(Ops ops, Tensor p, Tensor g, Tensor m, Tensor v, int t);
    }

    private static final Step ADAMW =
            (o, p, g, m, v, t) -> o.adamStep(p, g, m, v, t, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.05f, true);
    private static final Step ADAM_L2 =
            (o, p, g, m, v, t) -> o.adamStep(p, g, m, v, t, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.05f, false);
    private static final Step RADAMW =
            (o, p, g, m, v, t) -> o.radamStep(p, g, m, v, t, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.05f, true);
    private static final Step RADAM_L2 =
            (o, p, g, m, v, t) -> o.radamStep(p, g, m, v, t, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.05f, false);

    /** Runs {@code steps} steps with fresh gradients on both backends and compares p, m and v after each run. */
    private static void cpuMatchesNaive(String what, Step step, int steps) {
        for (int[] shape : SHAPES) {
            try (TensorArena a = new TensorArena()) {
                Tensor pRef = randn(a, 1, shape);
                Tensor p = a.copyOf(pRef);
                Tensor mRef = a.allocate(shape);
                Tensor vRef = a.allocate(shape);
                Tensor m = a.allocate(shape);
                Tensor v = a.allocate(shape);
                for (int t = 1; t <= steps; t++) {
                    Tensor g = randn(a, 100 + t, shape);
                    step.apply(NAIVE, pRef, g, mRef, vRef, t);
                    step.apply(CPU, p, g, m, v, t);
                }
                String s = what + " " + Arrays.toString(shape) + " after " + steps + " steps";
                assertClose(s + " p", p, pRef, CPU_VS_NAIVE);
                assertClose(s + " m", m, mRef, CPU_VS_NAIVE);
                assertClose(s + " v", v, vRef, CPU_VS_NAIVE);
            }
        }
    }

    @Test
    void adamStepsMatchNaive() {
        cpuMatchesNaive("adamW", ADAMW, 10);
        cpuMatchesNaive("adam+L2", ADAM_L2, 10);
    }

    @Test
    void radamStepsMatchNaiveThroughTheRectificationSwitch() {
        // 10 steps with beta2 = 0.999 cover both the momentum phase (t <= 5) and the rectified one.
        assertTrue(NaiveOptim.radamRho(5, 0.999) <= 5 && NaiveOptim.radamRho(6, 0.999) > 5);
        cpuMatchesNaive("radamW", RADAMW, 10);
        cpuMatchesNaive("radam+L2", RADAM_L2, 10);
    }

    @Test
    void sumOfSquaresAndEmaMatchNaive() {
        for (int[] shape : SHAPES) {
            try (TensorArena a = new TensorArena()) {
                Tensor x = randn(a, 7, shape);
                double ref = NAIVE.sumOfSquares(x);
                double got = CPU.sumOfSquares(x);
                assertEquals(ref, got, 1e-12 * ref, "sumOfSquares " + x.describe());

                Tensor target = randn(a, 8, shape);
                Tensor targetRef = a.copyOf(target);
                Tensor source = randn(a, 9, shape);
                for (float mu : new float[] {0.999f, 0.5f, 0.95f}) {
                    NAIVE.ema(targetRef, source, mu);
                    CPU.ema(target, source, mu);
                }
                assertClose("ema " + x.describe(), target, targetRef, CPU_VS_NAIVE);
            }
        }
    }

    @Test
    void emaEndpointsKeepOrCopyExactly() {
        try (TensorArena a = new TensorArena()) {
            Tensor target = randn(a, 1, 1000);
            Tensor source = randn(a, 2, 1000);
            float[] before = target.toArray();
            CPU.ema(target, source, 1f);
            assertArrayEquals(before, target.toArray());
            CPU.ema(target, source, 0f);
            assertArrayEquals(source.toArray(), target.toArray());
        }
    }

    @Test
    void cpuIsBitIdenticalForOneTwoAndThreeThreads() {
        int n = 3 * 16384 + 5;
        float[][] ref = null;
        for (int threads = 1; threads <= 3; threads++) {
            CpuOps ops = new CpuOps(threads);
            try (TensorArena a = new TensorArena()) {
                Tensor p1 = randn(a, 1, n);
                Tensor p2 = a.copyOf(p1);
                Tensor[] state = {a.allocate(n), a.allocate(n), a.allocate(n), a.allocate(n)};
                for (int t = 1; t <= 7; t++) {
                    Tensor g = randn(a, 10 + t, n);
                    ops.adamStep(p1, g, state[0], state[1], t, 1e-3f, 0.9f, 0.99f, 1e-8f, 0.1f, true);
                    ops.radamStep(p2, g, state[2], state[3], t, 1e-3f, 0.9f, 0.99f, 1e-8f, 0.1f, false);
                }
                Tensor target = randn(a, 3, n);
                ops.ema(target, p1, 0.9f);
                double ss = ops.sumOfSquares(p2);
                float[][] got = {p1.toArray(), p2.toArray(), state[1].toArray(), state[2].toArray(),
                        target.toArray(), {(float) ss, (float) (ss - (float) ss)}};
                if (ref == null) {
                    ref = got;
                } else {
                    for (int k = 0; k < ref.length; k++) {
                        assertArrayEquals(ref[k], got[k], "output " + k + " with " + threads + " threads");
                    }
                }
            }
        }
    }

    private static final double LR = 0.1, B1 = 0.9, B2 = 0.999, WD = 0.2;

    /**
     * p after each step from p = 1, worked out here from Kingma &amp; Ba 2015 Algorithm 1 (with the decoupled or
     * the L2 weight decay) and nothing shared with the implementations.
     */
    private static double[] handAdam(double[] grads, double eps, boolean decoupled) {
        double p = 1, m = 0, v = 0;
        double[] out = new double[grads.length];
        for (int t = 1; t <= grads.length; t++) {
            double g = decoupled ? grads[t - 1] : grads[t - 1] + WD * p;
            if (decoupled) {
                p = p * (1 - LR * WD);
            }
            m = B1 * m + (1 - B1) * g;
            v = B2 * v + (1 - B2) * g * g;
            p = p - LR * (m / (1 - Math.pow(B1, t))) / (Math.sqrt(v / (1 - Math.pow(B2, t))) + eps);
            out[t - 1] = p;
        }
        return out;
    }

    /**
     * The same for RAdam (Liu et al. 2020, Algorithm 2, as in torch.optim.RAdam): with beta2 = 0.999 the first
     * five steps are plain bias-corrected momentum and step 6 is the first rectified one.
     */
    private static double[] handRadam(double[] grads, double eps, boolean decoupled) {
        double rhoInf = 2 / (1 - B2) - 1;
        double p = 1, m = 0, v = 0;
        double[] out = new double[grads.length];
        for (int t = 1; t <= grads.length; t++) {
            double g = decoupled ? grads[t - 1] : grads[t - 1] + WD * p;
            if (decoupled) {
                p = p * (1 - LR * WD);
            }
            m = B1 * m + (1 - B1) * g;
            v = B2 * v + (1 - B2) * g * g;
            double mHat = m / (1 - Math.pow(B1, t));
            double rho = rhoInf - 2 * t * Math.pow(B2, t) / (1 - Math.pow(B2, t));
            assertEquals(t > 5, rho > 5, "rho_" + t + " = " + rho);
            if (rho > 5) {
                double l = Math.sqrt(1 - Math.pow(B2, t)) / (Math.sqrt(v) + eps);
                double r = Math.sqrt((rho - 4) * (rho - 2) * rhoInf / ((rhoInf - 4) * (rhoInf - 2) * rho));
                p = p - LR * mHat * r * l;
            } else {
                p = p - LR * mHat;
            }
            out[t - 1] = p;
        }
        return out;
    }

    /** A tiny eps as in training, and a large one that pins where eps is added (it differs between the two). */
    private static final double[] EPS = {1e-8, 0.25};

    @Test
    void adamFirstStepsMatchHandComputedValues() {
        double[] grads = {0.5, -2, 0.25};
        for (double eps : EPS) {
            for (boolean decoupled : new boolean[] {true, false}) {
                double[] expected = handAdam(grads, eps, decoupled);
                // Step 1 moves p by lr g / (|g| + eps) (m_hat = g, v_hat = g^2): lr sign(g) for a tiny eps.
                double g1 = decoupled ? 0.5 : 0.5 + WD;
                assertEquals((decoupled ? 1 - LR * WD : 1) - LR * g1 / (g1 + eps), expected[0], 1e-12);
                for (Ops ops : new Ops[] {NAIVE, CPU}) {
                    assertArrayEquals(expected, run(ops, grads, false, eps, decoupled), 2e-6,
                            ops.name() + " adam eps=" + eps + " decoupled=" + decoupled);
                }
            }
        }
    }

    @Test
    void radamFirstStepsMatchHandComputedValues() {
        double[] grads = {0.5, -2, 0.25, 1, 0.75, -0.5, 0.3};
        for (double eps : EPS) {
            for (boolean decoupled : new boolean[] {true, false}) {
                double[] expected = handRadam(grads, eps, decoupled);
                double g1 = decoupled ? 0.5 : 0.5 + WD;
                assertEquals((decoupled ? 1 - LR * WD : 1) - LR * g1, expected[0], 1e-12, "momentum step 1");
                for (Ops ops : new Ops[] {NAIVE, CPU}) {
                    assertArrayEquals(expected, run(ops, grads, true, eps, decoupled), 2e-6,
                            ops.name() + " radam eps=" + eps + " decoupled=" + decoupled);
                }
            }
        }
    }

    /** Runs the given gradients through one element (p0 = 1) and returns p after each step. */
    private static double[] run(Ops ops, double[] grads, boolean radam, double eps, boolean decoupled) {
        try (TensorArena a = new TensorArena()) {
            Tensor p = a.of(Layout.ROWS, new float[] {1}, 1);
            Tensor g = a.allocate(1);
            Tensor m = a.allocate(1);
            Tensor v = a.allocate(1);
            double[] out = new double[grads.length];
            for (int t = 1; t <= grads.length; t++) {
                g.set(0, (float) grads[t - 1]);
                if (radam) {
                    ops.radamStep(p, g, m, v, t, (float) LR, (float) B1, (float) B2, (float) eps, (float) WD,
                            decoupled);
                } else {
                    ops.adamStep(p, g, m, v, t, (float) LR, (float) B1, (float) B2, (float) eps, (float) WD,
                            decoupled);
                }
                out[t - 1] = p.get(0);
            }
            return out;
        }
    }

    @Test
    void stepsLeaveTheGradientUntouched() {
        for (Ops ops : new Ops[] {NAIVE, CPU}) {
            try (TensorArena a = new TensorArena()) {
                Tensor p = randn(a, 1, 100);
                Tensor g = randn(a, 2, 100);
                float[] before = g.toArray();
                ops.adamStep(p, g, a.allocate(100), a.allocate(100), 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.5f, false);
                ops.radamStep(p, g, a.allocate(100), a.allocate(100), 9, 0.1f, 0.9f, 0.999f, 1e-8f, 0.5f, false);
                assertArrayEquals(before, g.toArray(), ops.name());
            }
        }
    }

    @Test
    void badArgumentsNameTheOp() {
        try (TensorArena a = new TensorArena()) {
            Tensor p = a.allocate(4, 5);
            Tensor wrong = a.allocate(5, 4);
            Tensor ok = a.allocate(4, 5);
            TensorException e = assertThrows(TensorException.class,
                    () -> CPU.adamStep(p, ok, wrong, ok, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0, true));
            assertTrue(e.getMessage().startsWith("adamStep: m [5, 4]"), e.getMessage());
            e = assertThrows(TensorException.class,
                    () -> CPU.radamStep(p, ok, ok, ok, 0, 0.1f, 0.9f, 0.999f, 1e-8f, 0, true));
            assertTrue(e.getMessage().startsWith("radamStep: step must be >= 1"), e.getMessage());
            e = assertThrows(TensorException.class, () -> CPU.ema(p, ok, 1.5f));
            assertTrue(e.getMessage().startsWith("ema: rate mu"), e.getMessage());
        }
    }
}
