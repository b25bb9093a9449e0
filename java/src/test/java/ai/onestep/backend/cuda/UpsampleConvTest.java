package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.Ops;
import ai.onestep.backend.OpsTesting;
import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.model.UNet;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;
import ai.onestep.tensor.Workspace;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * The upsampling convolution (diffusers' Upsample2D) as one transposed convolution ({@link Ops#upsampleConv2d}):
 * against the cpu backend's upsampling and convolution, from the sub-pixel kernel kept with a registered parameter
 * (made once, refreshed when the weights change) and from weights that are not registered (the two launches inside
 * the op), and in a U-Net pass, where it replaces the upsampling's graph node.
 */
class UpsampleConvTest {

    /** The cpu backend's upsampling then convolution: the definition. */
    private static Tensor reference(TensorArena a, Tensor x, Tensor w, Tensor b) {
        Tensor up = a.allocate(Layout.NHWC, x.dim(0), 2 * x.dim(1), 2 * x.dim(2), x.dim(3));
        Tensor y = a.allocate(Layout.NHWC, x.dim(0), 2 * x.dim(1), 2 * x.dim(2), w.dim(3));
        OpsTesting.CPU.upsampleNearest2x(x, up);
        OpsTesting.CPU.conv2d(up, w, b, 1, 1, y);
        return y;
    }

    /** upsampleConv2d(x, w, b) inside a pass of {@code ops}, then doubled by a reader (which takes a pending bias). */
    private static Tensor inPass(CudaOps ops, TensorArena a, Tensor x, Tensor w, Tensor b) {
        Tensor out = a.allocate(Layout.NHWC, x.dim(0), 2 * x.dim(1), 2 * x.dim(2), w.dim(3));
        try (Workspace ws = new Workspace()) {
            EmulatedDeviceTest.runPassThrice(ops, "upsample", new Tensor[] {x}, new Tensor[] {out}, ws, () -> {
                Tensor y = ws.allocate(Layout.NHWC, out.shape());
                assertTrue(ops.fusesUpsampleConv(), "a pass fuses the upsampling convolution");
                ops.upsampleConv2d(x, w, b, y);
                ops.add(y, y, out);
            });
        }
        return out;
    }

    private static void assertRelativelyClose(String what, Tensor want, Tensor got, double tol) {
        assertRelativelyClose(what, want.toArray(), got.toArray(), tol);
    }

    private static void assertRelativelyClose(String what, float[] want, float[] got, double tol) {
        double err = OpsTesting.relErr(got, want);
        assertTrue(err <= tol, what + ": relative L2 error " + err + " > " + tol);
    }

    @Test
    void registeredWeightsRunAsOneOpAndFollowUpdates() {
        EmulatedDeviceTest.require();
        String lib = CudaBackend.emulatedLibrary().toString();
        // fp32 (to fp32 rounding of the summed weights) and fp16 (its rounding of them and of activations), on a
        // device that convolves with kept KRSC copies and leaves biases to readers, as cuDNN's route does.
        for (Precision p : new Precision[] {Precision.FP32, Precision.FP16}) {
            double tol = p == Precision.FP32 ? 1e-6 : 3e-3;
            try (CudaOps ops = new CudaOps(new EmulatedDevice(lib, true, true), 64L << 20, 2, p);
                 TensorArena a = new TensorArena()) {
                Tensor x = OpsTesting.randn(a, 1, Layout.NHWC, 2, 3, 5, 6);
                Tensor w = OpsTesting.randn(a, 2, Layout.HWIO, 3, 3, 6, 7), b = OpsTesting.randn(a, 3, 7);
                ops.registerParameters(List.of(w, b));
                for (int round = 0; round < 2; round++) {
                    Tensor want = reference(a, x, w, b);
                    OpsTesting.CPU.add(want, want, want);
                    assertRelativelyClose(p.label() + " round " + round, want, inPass(ops, a, x, w, b), tol);
                    Map<String, Long> counts = ops.capturedOpCounts().values().iterator().next();
                    assertEquals(Map.of("upsampleConv2d", 1L, "add", 1L), counts, "one op for the upsampling convolution");
                    assertTrue(ops.biasDeferrals()[0] > 0, "the bias was left to the add");
                    // An eager update refreshes the registered copies and the sub-pixel kernel; the graph, which
                    // reads them where they are, is kept, and the next round's replay must see the new weights.
                    ops.scale(w, -0.75f, w);
                }
            }
        }
    }

    @Test
    void unregisteredWeightsAndEagerCallsGiveTheSameResult() {
        EmulatedDeviceTest.require();
        try (CudaOps ops = new CudaOps(new EmulatedDevice(CudaBackend.emulatedLibrary().toString()), 64L << 20, 2);
             TensorArena a = new TensorArena()) {
            Tensor x = OpsTesting.randn(a, 4, Layout.NHWC, 1, 4, 2, 3);
            Tensor w = OpsTesting.randn(a, 5, Layout.HWIO, 3, 3, 3, 5), b = OpsTesting.randn(a, 6, 5);
            Tensor want = reference(a, x, w, b);
            Tensor eager = a.allocate(Layout.NHWC, want.shape());
            ops.upsampleConv2d(x, w, b, eager);  // no pass: the two launches inside the op
            assertRelativelyClose("eager", want, eager, 1e-6);
            OpsTesting.CPU.add(want, want, want);
            assertRelativelyClose("in a pass, not registered", want, inPass(ops, a, x, w, b), 1e-6);
        }
    }

    @Test
    void hostBackendsRunTheTwoOpsAndRefuseBadShapes() {
        try (TensorArena a = new TensorArena()) {
            Tensor x = OpsTesting.randn(a, 7, Layout.NHWC, 2, 3, 3, 4);
            Tensor w = OpsTesting.randn(a, 8, Layout.HWIO, 3, 3, 4, 2), b = OpsTesting.randn(a, 9, 2);
            Tensor want = reference(a, x, w, b);
            for (Ops ops : new Ops[] {new CpuOps(2), OpsTesting.NAIVE}) {
                assertTrue(!ops.fusesUpsampleConv(), "host backends keep the two ops in models");
                Tensor y = a.allocate(Layout.NHWC, want.shape());
                ops.upsampleConv2d(x, w, b, y);
                assertRelativelyClose(ops.getClass().getSimpleName(), want, y, 1e-6);
            }
            Tensor w1 = OpsTesting.randn(a, 10, Layout.HWIO, 1, 1, 4, 2);
            Tensor y = a.allocate(Layout.NHWC, want.shape());
            TensorException e = assertThrows(TensorException.class, () -> OpsTesting.CPU.upsampleConv2d(x, w1, b, y));
            assertTrue(e.getMessage().startsWith("upsampleConv2d: weight w [1, 1, 4, 2]") && e.getMessage()
                    .contains("3x3"), e.getMessage());
            Tensor small = a.allocate(Layout.NHWC, 2, 3, 3, 2);
            e = assertThrows(TensorException.class, () -> OpsTesting.CPU.upsampleConv2d(x, w, b, small));
            assertTrue(e.getMessage().startsWith("upsampleConv2d: y has shape [2, 3, 3, 2]"), e.getMessage());
        }
    }

    /**
     * A U-Net pass: the upsampler is one op, no upsampling node is left, and the 1-step result stays within fp32
     * rounding of the cpu backend's (the summed weights round differently from the nine products).
     */
    @Test
    void aUNetPassHasNoUpsamplingNode() {
        EmulatedDeviceTest.require();
        try (UNet net = CudaGraphTest.randomNet(CudaGraphTest.config(32), 23);
             CudaOps ops = new CudaOps(new EmulatedDevice(CudaBackend.emulatedLibrary().toString(), true, true),
                     64L << 20, 2, Precision.FP32);
             TensorArena a = new TensorArena()) {
            Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Noise.gaussian(x, 8, 0);
            float[] cuda = ConstantFoldingTest.denoise(ops, net, x), cpu = ConstantFoldingTest.denoise(new CpuOps(2), net, x);
            assertRelativelyClose("1-step pass", cpu, cuda, 1e-5);
            Map<String, Long> counts = ops.capturedOpCounts().values().iterator().next();
            assertTrue(counts.getOrDefault("upsampleConv2d", 0L) > 0 && !counts.containsKey("upsampleNearest2x"),
                    counts.toString());
            ops.fuseUpsampling(false);
            ops.forgetCapturedPasses();
            float[] unfused = ConstantFoldingTest.denoise(ops, net, x);
            counts = ops.capturedOpCounts().values().iterator().next();
            assertTrue(!counts.containsKey("upsampleConv2d") && counts.containsKey("upsampleNearest2x"),
                    counts.toString());
            assertRelativelyClose("1-step pass, upsampling unfused", cpu, unfused, 1e-5);
        }
    }
}
