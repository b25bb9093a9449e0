package ai.onestep.diffusion;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.OpsTesting;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * The samplers on a problem with a closed-form answer: for data ~ N(0, sd^2 I) the ideal denoiser is
 * D(x; s) = sd^2 / (s^2 + sd^2) x, and the probability-flow ODE dx/ds = (x - D)/s = s x / (s^2 + sd^2) has the
 * solution x(s) = x(s0) sqrt((s^2 + sd^2) / (s0^2 + sd^2)).
 */
class EdmSamplerTest {
    private static final double SD = Edm.SIGMA_DATA;

    private static Denoiser gaussianData(AtomicInteger calls) {
        return (x, sigma, labels, out) -> {
            calls.incrementAndGet();
            int per = (int) (x.size() / x.dim(0));
            for (int n = 0; n < x.dim(0); n++) {
                float c = (float) (SD * SD / (sigma[n] * sigma[n] + SD * SD));
                for (int i = 0; i < per; i++) {
                    out.set((long) n * per + i, c * x.get((long) n * per + i));
                }
            }
        };
    }

    private static double error(EdmSampler.Method m, int steps, AtomicInteger calls) {
        try (TensorArena a = new TensorArena()) {
            Tensor x = a.allocate(Layout.NHWC, 2, 3, 3, 1);
            Noise.gaussian(x, 7, 0);
            double[] sig = KarrasSchedule.sigmas(steps);
            OpsTesting.NAIVE.scale(x, (float) sig[0], x);
            float[] x0 = x.toArray();
            EdmSampler.sample(OpsTesting.NAIVE, gaussianData(calls), m, x, sig, null, null);
            double scale = Math.sqrt(SD * SD / (sig[0] * sig[0] + SD * SD));
            double err = 0, ref = 0;
            for (int i = 0; i < x0.length; i++) {
                err = Math.max(err, Math.abs(x.get(i) - x0[i] * scale));
                ref = Math.max(ref, Math.abs(x0[i] * scale));
            }
            return err / ref;
        }
    }

    @Test
    void heunCostsTwoNMinusOneEvaluationsAndConvergesAtSecondOrder() {
        AtomicInteger calls = new AtomicInteger();
        double e18 = error(EdmSampler.Method.HEUN, 18, calls);
        assertEquals(35, calls.get(), "18 Heun steps = 35 NFE (Karras et al. 2022)");
        assertEquals(35, EdmSampler.nfe(EdmSampler.Method.HEUN, 18));
        double e36 = error(EdmSampler.Method.HEUN, 36, new AtomicInteger());
        // A float64 run of the same recursion gives 0.5276 against the exact 0.5000 for x_T = 80: 5.5 %.
        assertTrue(e18 < 0.06, "Heun relative error at 18 steps " + e18);
        assertTrue(e36 < e18 / 3, "second order: halving the step should cut the error ~4x: " + e18 + " -> " + e36);
    }

    @Test
    void eulerIsFirstOrderAndCostsNEvaluations() {
        AtomicInteger calls = new AtomicInteger();
        double e18 = error(EdmSampler.Method.EULER, 18, calls);
        assertEquals(18, calls.get());
        double e36 = error(EdmSampler.Method.EULER, 36, new AtomicInteger());
        double heun = error(EdmSampler.Method.HEUN, 18, new AtomicInteger());
        assertTrue(e18 > heun, "Euler is less accurate than Heun at equal steps");
        assertTrue(e36 < e18 * 0.7 && e36 > e18 / 3, "first order: " + e18 + " -> " + e36);
    }

    @Test
    void scheduleMatchesTheFormulaInFloat64() {
        double[] s = KarrasSchedule.sigmas(18);
        assertEquals(19, s.length);
        assertEquals(80.0, s[0], 1e-12);
        assertEquals(0.002, s[17], 1e-15);
        assertEquals(0.0, s[18]);
        double a = Math.pow(80, 1 / 7.0), b = Math.pow(0.002, 1 / 7.0);
        assertEquals(Math.pow(a + 5 / 17.0 * (b - a), 7), s[5], 1e-12);
        double[] t = KarrasSchedule.consistencyGrid(18);
        assertEquals(0.002, t[0], 1e-15);
        assertEquals(80.0, t[17], 1e-12);
    }

    @Test
    void noiseDependsOnlyOnSeedAndSampleIndex() {
        try (TensorArena a = new TensorArena()) {
            Tensor batch = a.allocate(Layout.NHWC, 3, 4, 4, 1);
            Tensor single = a.allocate(Layout.NHWC, 1, 4, 4, 1);
            Noise.gaussian(batch, 42, 0);
            Noise.gaussian(single, 42, 2);
            assertArrayEquals(single.toArray(), batch.slice(2, 3).toArray());
            Noise.gaussian(single, 43, 2);
            assertTrue(single.get(0) != batch.get(32));
            double sum = 0, sq = 0;
            Tensor big = a.allocate(Layout.NHWC, 4, 64, 64, 1);
            Noise.gaussian(big, 1, 0);
            for (float v : big.toArray()) {
                sum += v;
                sq += v * v;
            }
            int n = (int) big.size();
            assertEquals(0, sum / n, 0.03);
            assertEquals(1, sq / n, 0.03);
        }
    }

    @Test
    void boundaryConditionHoldsExactly() {
        assertEquals(1.0, ConsistencyParameterization.cSkip(ConsistencyParameterization.EPS));
        assertEquals(0.0, ConsistencyParameterization.cOut(ConsistencyParameterization.EPS));
        assertEquals(0.5, Edm.cSkip(Edm.SIGMA_DATA), 1e-15);
        assertEquals(0.0, Edm.timestep(1.0));
        for (double s : new double[] {0.002, 0.3, 1.3, 80}) {
            // EDM's conditions (Karras et al. 2022, Appendix B.6): unit-variance network input, and a loss weight
            // that makes the effective weight lambda c_out^2 equal to 1 at every noise level.
            assertEquals(1.0, Edm.cIn(s) * Edm.cIn(s) * (s * s + Edm.SIGMA_DATA * Edm.SIGMA_DATA), 1e-12);
            assertEquals(1.0, Edm.lossWeight(s) * Edm.cOut(s) * Edm.cOut(s), 1e-12);
        }
    }
}
