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
import ai.onestep.backend.naive.NaiveNorm;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Weighted MSE and pseudo-Huber losses: value and dpred, cpu against the float64 oracle and finite differences. */
class LossTest {

    private interface Loss {
        double apply(Ops ops, Tensor pred, Tensor target, Tensor weights, Tensor dpred);
    }

    private static final Loss MSE = (ops, p, t, w, g) -> ops.mseLoss(p, t, w, g);
    /** c = 0.00054 sqrt(D) as in Song & Dhariwal 2023; the tests use a larger c too, where the loss is quadratic. */
    private static Loss huber(float c) {
        return (ops, p, t, w, g) -> ops.pseudoHuberLoss(p, t, w, c, g);
    }

    @ParameterizedTest(name = "n={0} d={1} weighted={2} huberC={3}")
    @CsvSource({
        "1, 5, false, 0.01",
        "3, 189, true, 0.5",      // (3, 7, 9, 3) flattened: a ragged tail
        "2, 9001, true, 0.05",    // several fixed reduction pieces per sample
        "4, 16, false, 100",      // c >> error: the small-error regime of pseudo-Huber
    })
    void cpuMatchesNaive(int n, int d, boolean weighted, float huberC) {
        try (TensorArena a = new TensorArena()) {
            Tensor pred = randn(a, 1, n, d);
            Tensor target = randn(a, 2, n, d);
            Tensor w = weighted ? positive(randn(a, 3, n)) : null;
            for (Loss loss : new Loss[] {MSE, huber(huberC)}) {
                String what = loss == MSE ? "mseLoss" : "pseudoHuberLoss";
                Tensor gRef = a.allocate(n, d).fill(Float.NaN);
                Tensor gCpu = a.allocate(n, d).fill(Float.NaN);
                double ref = loss.apply(NAIVE, pred, target, w, gRef);
                double cpu = loss.apply(CPU, pred, target, w, gCpu);
                assertTrue(Math.abs(cpu - ref) <= CPU_VS_NAIVE * Math.abs(ref), what + ": cpu " + cpu + " vs naive "
                        + ref);
                assertTrue(gCpu.allFinite(), what + ": dpred not assigned everywhere");
                assertClose(what + " dpred cpu vs naive", gCpu, gRef, CPU_VS_NAIVE);
                // The loss without a gradient is the same number.
                assertEquals(cpu, loss.apply(CPU, pred, target, w, null), 0.0, what + " without dpred");
            }
        }
    }

    private static Tensor positive(Tensor t) {
        float[] v = t.toArray();
        for (int i = 0; i < v.length; i++) {
            v[i] = 0.5f + Math.abs(v[i]);
        }
        return t.copyFrom(v);
    }

    /** Hand-computed values: pred - target = (3, 4) for one sample, (0, 0) for the other, weights (2, 5). */
    @Test
    void knownValues() {
        try (TensorArena a = new TensorArena()) {
            Tensor pred = a.of(ai.onestep.tensor.Layout.ROWS, new float[] {4, 6, 1, 1}, 2, 2);
            Tensor target = a.of(ai.onestep.tensor.Layout.ROWS, new float[] {1, 2, 1, 1}, 2, 2);
            Tensor w = a.of(ai.onestep.tensor.Layout.ROWS, new float[] {2, 5}, 2);
            for (Ops ops : new Ops[] {NAIVE, CPU}) {
                // mse: (1/2) (2 * 25/2 + 5 * 0) = 12.5
                assertEquals(12.5, ops.mseLoss(pred, target, w, null), 1e-6, ops.name() + " mse");
                // pseudo-Huber with c = 1: (1/2) (2 (sqrt(26) - 1) + 0)
                assertEquals(Math.sqrt(26) - 1, ops.pseudoHuberLoss(pred, target, w, 1f, null), 1e-6,
                        ops.name() + " pseudo-Huber");
            }
        }
    }

    @Test
    void naiveGradientsMatchFiniteDifferences() {
        int n = 3, d = 5;
        double[] pred = OpsTesting.randn(1, n * d);
        double[] target = OpsTesting.randn(2, n * d);
        double[] w = {0.7, 1.3, 2.1};
        double[] g = new double[n * d];
        NaiveNorm.mseLoss(pred, target, w, n, g);
        assertClose("mseLoss dpred vs finite differences", g,
                OpsTesting.finiteDifference(pred, p -> NaiveNorm.mseLoss(p, target, w, n, null), 1e-6), 1e-6);
        for (double c : new double[] {0.01, 3.0}) {
            NaiveNorm.pseudoHuberLoss(pred, target, w, n, c, g);
            assertClose("pseudoHuberLoss dpred vs finite differences, c = " + c, g,
                    OpsTesting.finiteDifference(pred, p -> NaiveNorm.pseudoHuberLoss(p, target, w, n, c, null), 1e-6),
                    1e-6);
        }
    }

    @Test
    void bitIdenticalForAnyThreadCount() {
        try (TensorArena a = new TensorArena()) {
            Tensor pred = randn(a, 4, 3, 9001);
            Tensor target = randn(a, 5, 3, 9001);
            Tensor w = positive(randn(a, 6, 3));
            double[] ref = null;
            float[][] refGrad = null;
            for (int threads = 1; threads <= 3; threads++) {
                Ops ops = new CpuOps(threads);
                Tensor g1 = a.allocate(3, 9001);
                Tensor g2 = a.allocate(3, 9001);
                double[] got = {ops.mseLoss(pred, target, w, g1), ops.pseudoHuberLoss(pred, target, w, 0.05f, g2)};
                float[][] grads = {g1.toArray(), g2.toArray()};
                if (ref == null) {
                    ref = got;
                    refGrad = grads;
                }
                assertArrayEquals(ref, got, 0.0, "losses with " + threads + " threads");
                assertArrayEquals(refGrad[0], grads[0], "mse dpred with " + threads + " threads");
                assertArrayEquals(refGrad[1], grads[1], "pseudo-Huber dpred with " + threads + " threads");
            }
        }
    }

    @Test
    void badInputNamesTheOp() {
        try (TensorArena a = new TensorArena()) {
            Tensor pred = randn(a, 1, 2, 3);
            Tensor target = randn(a, 2, 2, 3);
            target.set(4, Float.NaN);
            TensorException e = assertThrows(TensorException.class, () -> CPU.mseLoss(pred, target, null, null));
            assertTrue(e.getMessage().startsWith("mseLoss:") && e.getMessage().contains("NaN"), e.getMessage());
            TensorException e2 = assertThrows(TensorException.class,
                    () -> CPU.pseudoHuberLoss(pred, pred, null, 0f, null));
            assertTrue(e2.getMessage().startsWith("pseudoHuberLoss:"), e2.getMessage());
        }
    }
}
