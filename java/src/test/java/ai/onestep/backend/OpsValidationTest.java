package ai.onestep.backend;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;
import java.util.stream.Stream;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Bad input to any op gives a TensorException whose message names the op and the shapes, on every backend, and
 * never reaches a kernel (so no native memory is touched with a wrong shape).
 */
class OpsValidationTest {
    static Stream<Ops> backends() {
        return Stream.of(OpsTesting.NAIVE, OpsTesting.CPU);
    }

    private static void assertError(Executable call, String... fragments) {
        TensorException e = assertThrows(TensorException.class, call);
        for (String f : fragments) {
            assertTrue(e.getMessage().contains(f), "message '" + e.getMessage() + "' lacks '" + f + "'");
        }
    }

    @ParameterizedTest
    @MethodSource("backends")
    void convRejectsChannelMismatchAndPyTorchLayout(Ops ops) {
        try (TensorArena a = new TensorArena()) {
            Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 8);
            Tensor w = a.allocate(Layout.HWIO, 3, 3, 16, 32);
            Tensor y = a.allocate(Layout.NHWC, 2, 8, 8, 32);
            assertError(() -> ops.conv2d(x, w, null, 1, 1, y), "conv2d", "[3, 3, 16, 32] HWIO", "[2, 8, 8, 8] NHWC");
            Tensor oihw = a.allocate(Layout.OIHW, 3, 3, 8, 32);
            assertError(() -> ops.conv2d(x, oihw, null, 1, 1, y), "conv2d", "OIHW", "converted once at load");
            Tensor w2 = a.allocate(Layout.HWIO, 3, 3, 8, 32);
            Tensor wrongY = a.allocate(Layout.NHWC, 2, 4, 4, 32);
            assertError(() -> ops.conv2d(x, w2, null, 1, 1, wrongY), "conv2d", "y", "[2, 4, 4, 32]", "[2, 8, 8, 32]");
            Tensor badBias = a.allocate(31);
            assertError(() -> ops.conv2d(x, w2, badBias, 1, 1, y), "conv2d", "bias", "[31]");
            assertError(() -> ops.conv2d(x, w2, null, 0, 1, y), "stride 0");
        }
    }

    @ParameterizedTest
    @MethodSource("backends")
    void closedTensorIsRejectedByName(Ops ops) {
        TensorArena a = new TensorArena();
        Tensor x = a.allocate(Layout.NHWC, 1, 4, 4, 4);
        try (TensorArena b = new TensorArena()) {
            Tensor y = b.allocate(Layout.NHWC, 1, 4, 4, 4);
            a.close();
            assertError(() -> ops.silu(x, y), "silu", "[1, 4, 4, 4] NHWC", "closed");
        }
    }

    @ParameterizedTest
    @MethodSource("backends")
    void lossRejectsNaN(Ops ops) {
        try (TensorArena a = new TensorArena()) {
            Tensor p = a.allocate(2, 3);
            Tensor t = a.allocate(2, 3);
            p.set(4, Float.NaN);
            assertError(() -> ops.mseLoss(p, t, null, null), "mseLoss", "pred", "NaN");
            p.set(4, 0f);
            t.set(0, Float.POSITIVE_INFINITY);
            assertError(() -> ops.pseudoHuberLoss(p, t, null, 0.01f, null), "pseudoHuberLoss", "target");
            assertError(() -> ops.pseudoHuberLoss(p, p, null, 0f, null), "c must be");
            Tensor w = a.allocate(3);
            assertError(() -> ops.mseLoss(p, p, w, null), "weights", "[3]", "[2]");
        }
    }

    @ParameterizedTest
    @MethodSource("backends")
    void groupNormRejectsIndivisibleGroupsAndHalfGivenScaleShift(Ops ops) {
        try (TensorArena a = new TensorArena()) {
            Tensor x = a.allocate(Layout.NHWC, 2, 4, 4, 12);
            Tensor g = a.allocate(12);
            Tensor mean = a.allocate(2, 5);
            assertError(() -> ops.groupNorm(x, g, g, null, null, 5, 1e-5f, true, x, mean, mean),
                    "groupNormSilu", "12 channels", "5 groups");
            Tensor m4 = a.allocate(2, 4);
            Tensor sc = a.allocate(2, 12);
            assertError(() -> ops.groupNorm(x, g, g, sc, null, 4, 1e-5f, false, x, m4, m4), "both scale and shift");
            Tensor nchw = a.allocate(Layout.NCHW, 2, 12, 4, 4);
            assertError(() -> ops.groupNorm(nchw, g, g, null, null, 4, 1e-5f, false, nchw, m4, m4), "NHWC");
        }
    }

    @ParameterizedTest
    @MethodSource("backends")
    void matmulLinearAttentionAndConcatNameTheShapes(Ops ops) {
        try (TensorArena a = new TensorArena()) {
            Tensor m = a.allocate(3, 4);
            Tensor n = a.allocate(5, 6);
            Tensor c = a.allocate(3, 6);
            assertError(() -> ops.matmul(m, false, n, false, c, 1, 0), "matmul", "3x4", "5x6");
            Tensor w = a.allocate(5, 7);
            Tensor y = a.allocate(3, 7);
            assertError(() -> ops.linear(m, w, null, y), "linear", "[3, 4]", "[5, 7]");
            Tensor q = a.allocate(1, 9, 10);
            Tensor lse = a.allocate(1, 3, 9);
            assertError(() -> ops.attention(q, q, q, 3, q, lse), "attention", "10 channels", "3 heads");
            Tensor f1 = a.allocate(Layout.NHWC, 1, 4, 4, 2);
            Tensor f2 = a.allocate(Layout.NHWC, 1, 4, 5, 2);
            Tensor f3 = a.allocate(Layout.NHWC, 1, 4, 4, 4);
            assertError(() -> ops.concatChannels(f1, f2, f3), "concatChannels", "[1, 4, 5, 2]");
            assertError(() -> ops.upsampleNearest2x(f1, f3), "upsampleNearest2x", "[1, 8, 8, 2]");
        }
    }

    @ParameterizedTest
    @MethodSource("backends")
    void optimizerStepRejectsMismatchedState(Ops ops) {
        try (TensorArena a = new TensorArena()) {
            Tensor p = a.allocate(10);
            Tensor g = a.allocate(11);
            assertError(() -> ops.adamStep(p, g, p, p, 1, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, true), "adamStep", "grad");
            Tensor g2 = a.allocate(10);
            assertError(() -> ops.radamStep(p, g2, g2, g2, 0, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, true), "step must be >= 1");
            assertError(() -> ops.ema(p, g2, 1.5f), "ema", "mu");
        }
    }
}
