package ai.onestep.backend.cpu;

import static ai.onestep.backend.OpsTesting.CPU_VS_NAIVE;
import static ai.onestep.backend.OpsTesting.NAIVE;
import static ai.onestep.backend.OpsTesting.assertClose;
import static ai.onestep.backend.OpsTesting.randn;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import ai.onestep.backend.Ops;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The cpu backend's Winograd convolutions (CpuWinograd: F(2x2, 3x3) forward and dx, F(3x3, 2x2) dw) against their
 * slow twins: the float64 naive backend and the direct implicit GEMM of the same backend
 * ({@code new CpuOps(threads, false)}).
 */
class WinogradTest {

    private static Tensor conv(Ops ops, TensorArena a, Tensor x, Tensor w, Tensor b, int pad) {
        int ho = x.dim(1) + 2 * pad - 2, wo = x.dim(2) + 2 * pad - 2;
        Tensor y = a.allocate(Layout.NHWC, x.dim(0), ho, wo, w.dim(3)).fill(Float.NaN);
        ops.conv2d(x, w, b, 1, pad, y);
        return y;
    }

    // Ragged on purpose: odd and even output sides (a partial last tile row or column), H != W, channel counts
    // that are not multiples of the 16-lane vector or the 32-column panel, 8 channels (the smallest that takes
    // this path), padding 0, 1 and 2, batches whose tiles do not fill a block of 8 rows, and Cin = 160 for
    // the accumulated error of a long sum.
    @ParameterizedTest
    @CsvSource({
            "1, 4, 4, 8, 8, 1",
            "2, 7, 7, 17, 33, 1",
            "3, 9, 6, 40, 19, 1",
            "1, 8, 11, 24, 70, 0",
            "2, 5, 8, 20, 9, 2",
            "1, 14, 14, 160, 32, 1",
            "5, 3, 3, 16, 16, 1",
    })
    void matchesNaiveAndDirect(int n, int h, int w, int cin, int cout, int pad) {
        CpuOps wino = new CpuOps(2, true), direct = new CpuOps(2, false), registered = new CpuOps(2, true);
        try (TensorArena a = new TensorArena()) {
            Tensor x = randn(a, 1, Layout.NHWC, n, h, w, cin);
            Tensor wt = randn(a, 2, Layout.HWIO, 3, 3, cin, cout);
            Tensor b = randn(a, 3, cout);
            registered.registerParameters(List.of(wt, b));
            for (Tensor bias : new Tensor[] {b, null}) {
                Tensor want = conv(NAIVE, a, x, wt, bias, pad);
                Tensor got = conv(wino, a, x, wt, bias, pad);
                assertClose("winograd vs naive", got, want, CPU_VS_NAIVE);
                assertClose("winograd vs direct", got, conv(direct, a, x, wt, bias, pad), CPU_VS_NAIVE);
                // Registered weights keep their transformed filters; the result must not change by a bit.
                assertArrayEquals(got.toArray(), conv(registered, a, x, wt, bias, pad).toArray(),
                        "registered weights give the same bits");
                assertArrayEquals(got.toArray(), conv(registered, a, x, wt, bias, pad).toArray(),
                        "and again from the cache");
            }
            // dx of a stride-1 3x3 convolution is a forward with the rotated, transposed filters: Winograd too.
            Tensor dy = randn(a, 4, Layout.NHWC, n, h + 2 * pad - 2, w + 2 * pad - 2, cout);
            Tensor want = inputGradient(NAIVE, a, x, wt, dy, pad);
            Tensor got = inputGradient(wino, a, x, wt, dy, pad);
            assertClose("winograd dx vs naive", got, want, CPU_VS_NAIVE);
            assertClose("winograd dx vs direct", got, inputGradient(direct, a, x, wt, dy, pad), CPU_VS_NAIVE);
            // dw by F(3x3, 2x2), accumulated onto what dw held (a parameter gradient adds up over calls).
            Tensor dwWant = weightGradient(NAIVE, a, x, wt, dy, pad), dwGot = weightGradient(wino, a, x, wt, dy, pad);
            assertClose("winograd dw vs naive", dwGot, dwWant, CPU_VS_NAIVE);
            assertClose("winograd dw vs direct", dwGot, weightGradient(direct, a, x, wt, dy, pad), CPU_VS_NAIVE);
        }
    }

    /** dw of a backward into a dw that starts at 1 (so a result that overwrote instead of adding would fail). */
    private static Tensor weightGradient(Ops ops, TensorArena a, Tensor x, Tensor w, Tensor dy, int pad) {
        Tensor dw = a.allocate(Layout.HWIO, w.shape()).fill(1f);
        ops.conv2dBackward(x, w, dy, 1, pad, null, dw, null);
        return dw;
    }

    @Test
    void weightGradientOverSeveralRoundsOfTiles() {
        // 3 x 20 x 20 = 1,200 tiles: two rounds of ROUND_TILES, the second partial, and a partial last tile sum.
        try (TensorArena a = new TensorArena()) {
            Tensor x = randn(a, 14, Layout.NHWC, 3, 39, 40, 8), w = randn(a, 15, Layout.HWIO, 3, 3, 8, 9);
            Tensor dy = randn(a, 16, Layout.NHWC, 3, 39, 40, 9);
            Tensor got = weightGradient(new CpuOps(2, true), a, x, w, dy, 1);
            assertClose("dw vs naive", got, weightGradient(NAIVE, a, x, w, dy, 1), CPU_VS_NAIVE);
            assertArrayEquals(got.toArray(), weightGradient(new CpuOps(1, true), a, x, w, dy, 1).toArray(),
                    "one thread");
            assertArrayEquals(got.toArray(), weightGradient(new CpuOps(3, true), a, x, w, dy, 1).toArray(),
                    "three threads");
        }
    }

    private static Tensor inputGradient(Ops ops, TensorArena a, Tensor x, Tensor w, Tensor dy, int pad) {
        Tensor dx = a.allocate(Layout.NHWC, x.shape()).fill(Float.NaN);
        ops.conv2dBackward(x, w, dy, 1, pad, dx, null, null);
        return dx;
    }

    @Test
    void theFastPathRuns() {
        // Winograd rounds differently from the direct sum: equal bits would mean the direct path ran.
        try (TensorArena a = new TensorArena()) {
            Tensor x = randn(a, 4, Layout.NHWC, 2, 8, 8, 64), w = randn(a, 5, Layout.HWIO, 3, 3, 64, 64);
            float[] fast = conv(new CpuOps(2, true), a, x, w, null, 1).toArray();
            float[] slow = conv(new CpuOps(2, false), a, x, w, null, 1).toArray();
            assertFalse(Arrays.equals(fast, slow), "the Winograd path gave the direct path's bits");
            Tensor dy = randn(a, 6, Layout.NHWC, 2, 8, 8, 64);
            assertFalse(Arrays.equals(inputGradient(new CpuOps(2, true), a, x, w, dy, 1).toArray(),
                    inputGradient(new CpuOps(2, false), a, x, w, dy, 1).toArray()), "dx gave the direct path's bits");
            assertFalse(Arrays.equals(weightGradient(new CpuOps(2, true), a, x, w, dy, 1).toArray(),
                    weightGradient(new CpuOps(2, false), a, x, w, dy, 1).toArray()), "dw gave the direct path's bits");
        }
    }

    @Test
    void sameBitsForAnyThreadCountAndAloneOrInABatch() {
        try (TensorArena a = new TensorArena()) {
            Tensor x = randn(a, 6, Layout.NHWC, 3, 10, 9, 24), w = randn(a, 7, Layout.HWIO, 3, 3, 24, 40);
            Tensor b = randn(a, 8, 40);
            float[] ref = conv(new CpuOps(1, true), a, x, w, b, 1).toArray();
            for (int threads = 2; threads <= 3; threads++) {
                assertArrayEquals(ref, conv(new CpuOps(threads, true), a, x, w, b, 1).toArray(), threads + " threads");
            }
            // The second image alone: the tiles of a batch never mix, so its outputs are the same floats.
            Tensor one = a.allocate(Layout.NHWC, 1, 10, 9, 24).copyFrom(
                    Arrays.copyOfRange(x.toArray(), 10 * 9 * 24, 2 * 10 * 9 * 24));
            assertArrayEquals(Arrays.copyOfRange(ref, 10 * 9 * 40, 2 * 10 * 9 * 40),
                    conv(new CpuOps(2, true), a, one, w, b, 1).toArray(), "image 2 alone");
        }
    }

    @Test
    void perCallFiltersIgnoreWhatTheScratchHeldBefore() {
        // A backward fills the thread's scratch, which the per-call filters reuse, with huge values: the columns of
        // a 19-channel filter's last panel past channel 19 keep them, and no output may see them.
        CpuOps ops = new CpuOps(2, true);
        try (TensorArena a = new TensorArena()) {
            Tensor x = randn(a, 9, Layout.NHWC, 2, 9, 9, 64), w = randn(a, 10, Layout.HWIO, 3, 3, 64, 64);
            Tensor dy = a.allocate(Layout.NHWC, 2, 9, 9, 64).fill(1e30f);
            ops.conv2dBackward(x, w, dy, 1, 1, a.allocate(Layout.NHWC, 2, 9, 9, 64), null, null);
            Tensor xs = randn(a, 12, Layout.NHWC, 1, 6, 6, 12), ws = randn(a, 13, Layout.HWIO, 3, 3, 12, 19);
            assertClose("after a backward", conv(ops, a, xs, ws, null, 1), conv(NAIVE, a, xs, ws, null, 1),
                    CPU_VS_NAIVE);
        }
    }
}
