package ai.onestep.nn;

import static ai.onestep.backend.OpsTesting.CPU;
import static ai.onestep.backend.OpsTesting.NAIVE;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.Ops;
import ai.onestep.backend.OpsTesting;
import org.junit.jupiter.api.Test;

class GradientClippingTest {
    /** Gradients with a known global norm: random values, norm computed here in double. */
    private static ParameterSet withGradients(double[] normOut) {
        ParameterSet ps = new ParameterSet();
        int[] sizes = {37, 5, 16411};
        double sum = 0;
        for (int i = 0; i < sizes.length; i++) {
            double[] g = OpsTesting.randn(10 + i, sizes[i]);
            ps.add("block_" + i + ".weight", sizes[i]).grad().copyFrom(g);
            for (float x : ps.get("block_" + i + ".weight").grad().toArray()) {
                sum += (double) x * x;
            }
        }
        normOut[0] = Math.sqrt(sum);
        return ps;
    }

    @Test
    void aLargeNormIsScaledDownToMaxNorm() {
        for (Ops ops : new Ops[] {NAIVE, CPU}) {
            double[] norm = new double[1];
            try (ParameterSet ps = withGradients(norm)) {
                float[][] before = ps.list().stream().map(p -> p.grad().toArray()).toArray(float[][]::new);
                double maxNorm = norm[0] / 4;
                double returned = GradientClipping.clipByGlobalNorm(ps, maxNorm, ops);
                assertEquals(norm[0], returned, 1e-12 * norm[0], "the norm before clipping");
                assertEquals(maxNorm, GradientClipping.globalNorm(ps, ops), 1e-6 * maxNorm, "norm after clipping");
                double coef = maxNorm / (norm[0] + 1e-6);
                for (int i = 0; i < before.length; i++) {
                    float[] after = ps.list().get(i).grad().toArray();
                    for (int j = 0; j < after.length; j++) {
                        assertEquals(before[i][j] * coef, after[j], 1e-6 * Math.abs(before[i][j]), ops.name());
                    }
                }
            }
        }
    }

    @Test
    void aSmallNormLeavesTheGradientsUntouched() {
        double[] norm = new double[1];
        try (ParameterSet ps = withGradients(norm)) {
            float[] before = ps.get("block_2.weight").grad().toArray();
            assertEquals(norm[0], GradientClipping.clipByGlobalNorm(ps, 2 * norm[0], CPU), 1e-12 * norm[0]);
            assertArrayEquals(before, ps.get("block_2.weight").grad().toArray());
        }
    }

    @Test
    void aNonFiniteNormIsReportedAndNothingIsScaled() {
        double[] norm = new double[1];
        try (ParameterSet ps = withGradients(norm)) {
            float[] other = ps.get("block_2.weight").grad().toArray();
            ps.get("block_0.weight").grad().set(3, Float.NaN);
            assertTrue(Double.isNaN(GradientClipping.clipByGlobalNorm(ps, 1.0, CPU)));
            assertArrayEquals(other, ps.get("block_2.weight").grad().toArray());
            ps.get("block_0.weight").grad().set(3, Float.POSITIVE_INFINITY);
            assertEquals(Double.POSITIVE_INFINITY, GradientClipping.clipByGlobalNorm(ps, 1.0, CPU));
            assertArrayEquals(other, ps.get("block_2.weight").grad().toArray());
        }
    }

    @Test
    void maxNormMustBePositive() {
        double[] norm = new double[1];
        try (ParameterSet ps = withGradients(norm)) {
            assertThrows(IllegalArgumentException.class, () -> GradientClipping.clipByGlobalNorm(ps, 0, CPU));
            assertThrows(IllegalArgumentException.class,
                    () -> GradientClipping.clipByGlobalNorm(ps, Double.NaN, CPU));
        }
    }
}
