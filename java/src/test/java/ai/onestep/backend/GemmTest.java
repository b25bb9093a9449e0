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
import ai.onestep.backend.naive.NaiveConv;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** matmul: cpu against naive for every transpose combination, alpha/beta semantics, determinism. */
class GemmTest {

    private static Tensor operand(TensorArena arena, long seed, boolean trans, int rows, int cols) {
        return trans ? randn(arena, seed, cols, rows) : randn(arena, seed, rows, cols);
    }

    // Sizes around the micro-tile (8 rows x 32 columns) and below/above it, K odd and even.
    @ParameterizedTest
    @CsvSource({
            "1, 1, 1", "7, 33, 19", "17, 40, 65", "8, 32, 16", "33, 5, 130", "64, 96, 48",
    })
    void cpuMatchesNaiveForAllTransposes(int m, int n, int k) {
        try (TensorArena arena = new TensorArena()) {
            for (int t = 0; t < 4; t++) {
                boolean ta = (t & 1) != 0, tb = (t & 2) != 0;
                Tensor a = operand(arena, m + t, ta, m, k);
                Tensor b = operand(arena, n + t + 100, tb, k, n);
                Tensor c0 = randn(arena, 7, m, n);
                Tensor cc = arena.copyOf(c0), cn = arena.copyOf(c0);
                CPU.matmul(a, ta, b, tb, cc, 0.75f, -0.5f);
                NAIVE.matmul(a, ta, b, tb, cn, 0.75f, -0.5f);
                assertClose("matmul transA=" + ta + " transB=" + tb, cc, cn, CPU_VS_NAIVE);
            }
        }
    }

    @Test
    void betaZeroIgnoresNaNInC() {
        try (TensorArena arena = new TensorArena()) {
            Tensor a = randn(arena, 1, 9, 11), b = randn(arena, 2, 11, 35);
            Tensor cc = arena.allocate(9, 35).fill(Float.NaN), cn = arena.allocate(9, 35).fill(Float.NaN);
            CPU.matmul(a, false, b, false, cc, 1f, 0f);
            NAIVE.matmul(a, false, b, false, cn, 1f, 0f);
            assertTrue(cc.allFinite());
            assertClose("matmul beta=0", cc, cn, CPU_VS_NAIVE);
        }
    }

    @Test
    void naiveMatmulIsTheDefinition() {
        // 2x3 times 3x2 worked by hand: [[1,2,3],[4,5,6]] [[7,8],[9,10],[11,12]] = [[58,64],[139,154]].
        double[] c = {1, 1, 1, 1};
        NaiveConv.matmul(new double[] {1, 2, 3, 4, 5, 6}, false, new double[] {7, 8, 9, 10, 11, 12}, false, c, 2, 2,
                3, 2, 1);
        assertArrayEquals(new double[] {117, 129, 279, 309}, c);
    }

    @Test
    void cpuIsBitIdenticalForOneTwoThreeThreads() {
        try (TensorArena arena = new TensorArena()) {
            Tensor a = randn(arena, 1, 70, 53), b = randn(arena, 2, 53, 100);
            float[] ref = null;
            for (int threads = 1; threads <= 3; threads++) {
                Tensor c = arena.allocate(70, 100);
                new CpuOps(threads).matmul(a, false, b, false, c, 1f, 0f);
                if (ref == null) {
                    ref = c.toArray();
                } else {
                    assertArrayEquals(ref, c.toArray(), threads + " threads");
                }
            }
        }
    }

    @Test
    void badInputNamesTheOp() {
        try (TensorArena arena = new TensorArena()) {
            Tensor a = randn(arena, 1, 4, 5), b = randn(arena, 2, 6, 3), c = arena.allocate(4, 3);
            TensorException e = assertThrows(TensorException.class,
                    () -> CPU.matmul(a, false, b, false, c, 1f, 0f));
            assertEquals("matmul:", e.getMessage().substring(0, 7));
        }
    }
}
