package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.kernels.OnestepKernels;
import ai.onestep.model.UNet;
import org.junit.jupiter.api.Test;

/**
 * Our tensor-core implicit-GEMM convolution ({@code onestep_conv2d_igemm_typed}, kernels/src/conv.cu) as the Java CUDA
 * backend runs it: whole captured fp16/bf16 passes on an emulated device that convolves with it (on the kept KRSC
 * weights, refreshed when the weights change) agree with the portable route, and the device timer and the refusals
 * behave. The kernel's own checks against a double reference are kernels/test/test_conv.cpp.
 */
class IgemmConvTest {

    /** ||got - want|| / ||want||, in double (shared by TimedChoiceTest and AttentionKernelsTest). */
    /** values, narrowed to fp16 on the device. */
    private static long upload16(Device d, DeviceArena a, float[] values, String name) {
        try (ai.onestep.tensor.TensorArena host = new ai.onestep.tensor.TensorArena()) {
            ai.onestep.tensor.Tensor h = host.allocate(values.length);
            for (int i = 0; i < values.length; i++) {
                h.set(i, values[i]);
            }
            long wide = a.allocate(4L * values.length, name + " fp32"), half = a.allocate(2L * values.length, name);
            d.upload(wide, h.segment(), 4L * values.length, () -> name);
            d.convert(wide, Precision.FP32, half, Precision.FP16, values.length, name, () -> "test");
            return half;
        }
    }

    /** n fp16 values from the device, widened. */
    private static float[] download16(Device d, DeviceArena a, long y, int n) {
        try (ai.onestep.tensor.TensorArena host = new ai.onestep.tensor.TensorArena()) {
            long wide = a.allocate(4L * n, "y fp32");
            d.convert(y, Precision.FP16, wide, Precision.FP32, n, "y", () -> "test");
            ai.onestep.tensor.Tensor h = host.allocate(n);
            d.download(h.segment(), wide, 4L * n, () -> "y");
            return h.toArray();
        }
    }

    static double relL2(float[] got, float[] want) {
        double num = 0, den = 0;
        for (int i = 0; i < want.length; i++) {
            num += (got[i] - (double) want[i]) * (got[i] - (double) want[i]);
            den += (double) want[i] * want[i];
        }
        return Math.sqrt(num / den);
    }

    @Test
    void passesOnOurImplicitGemmAgreeWithThePortableRoute() {
        EmulatedDeviceTest.require();
        String lib = CudaBackend.emulatedLibrary().toString();
        for (Precision p : new Precision[] {Precision.FP16, Precision.BF16}) {
            float[] portable, ours;
            long launches;
            try (UNet net = CudaGraphTest.randomNet(CudaGraphTest.config(32), 23);
                 CudaOps ops = new CudaOps(new EmulatedDevice(lib, false), 64L << 20, 2, p)) {
                portable = KrscWeightsTest.run(ops, net);
                assertEquals(0, ops.device().igemmLaunches(), "the portable device never runs it");
            }
            try (UNet net = CudaGraphTest.randomNet(CudaGraphTest.config(32), 23);
                 CudaOps ops = new CudaOps(new EmulatedDevice(lib, false, false, true), 64L << 20, 2, p)) {
                ours = KrscWeightsTest.run(ops, net);
                launches = ops.device().igemmLaunches();
            }
            // Every convolution but the first (Cin = 2) takes it, the upsampler's too: some in each of the eager,
            // captured and replayed calls (the graph replays count once each, at capture).
            assertTrue(launches > 0, p.label() + ": no convolution ran on the implicit GEMM");
            // Both round to the 16-bit type after each op, in different summation orders: the difference is a few
            // units of the type's rounding through the network, and the same after the weights changed (a stale
            // KRSC copy would give O(1)). Measured (emulated, the upsampler on it too): fp16 1.4e-3, bf16 8.6e-3; the
            // bounds are ~3.5x.
            double err = relL2(ours, portable), bound = p == Precision.FP16 ? 5e-3 : 3e-2;
            assertTrue(err < bound, p.label() + ": relative L2 difference " + err + " >= " + bound);
            int half = portable.length / 2;  // the second round ran on the scaled weights
            assertTrue(relL2(java.util.Arrays.copyOfRange(ours, half, ours.length),
                    java.util.Arrays.copyOfRange(portable, half, portable.length)) < bound, p.label() + " after the update");
        }
    }

    @Test
    void timerAndRefusals() {
        EmulatedDeviceTest.require();
        try (EmulatedDevice d = new EmulatedDevice(CudaBackend.emulatedLibrary().toString());
             DeviceArena a = new DeviceArena(d, "igemm test", 1 << 20)) {
            long x = a.allocate(2L * 4 * 4 * 16, "x"), w = a.allocate(2L * 9 * 16 * 16, "w"),
                    y = a.allocate(4L * 4 * 4 * 16, "y");
            float ms = d.timeMs(() -> d.igemmConv(x, w, 0, 0, y, 1, 4, 4, 16, 3, 3, 16, 1, 1, 0, Precision.FP16,
                    () -> "test"), 3);
            assertTrue(ms >= 0 && Float.isFinite(ms), "time " + ms);
            // The emulated device warms up once (a GPU twice): the runs are counted, so the count follows it.
            int warm = d.timingWarmups, one = warm + 3;
            assertTrue(warm >= 1, "at least one warm-up run, outside the capture");
            assertEquals(one, d.igemmLaunches(), "the warm-up runs and three captured, timed as one graph replay");
            assertEquals(0, d.uncapturedTimings(), "the three timed runs were captured");
            assertEquals(2, d.timingReplays, "the graph replayed once untimed (its first launch), then timed");
            // A timing whose work times something itself (a choice made inside another's library route): the inner
            // timings capture their runs, the outer one cannot (no timing inside a capture) and times launches.
            float outer = d.timeMs(() -> d.timeMs(() -> d.igemmConv(x, w, 0, 0, y, 1, 4, 4, 16, 3, 3, 16, 1, 1, 0,
                    Precision.FP16, () -> "test"), 1), 2);
            assertTrue(outer >= 0 && Float.isFinite(outer), "nested time " + outer);
            // The outer work ran warm + 2 times (its reps as launches), each the inner timing's warm + 1 launches.
            int nested = (warm + 2) * (warm + 1);
            assertEquals(one + nested, d.igemmLaunches(), "the outer work's runs, each the inner timing's launches");
            assertEquals(1, d.uncapturedTimings(), "the outer timing, as launches");
            // As launches on the stream (-Donestep.cuda.graphTiming=false): the same runs, none captured.
            d.graphTiming(false);
            float launched = d.timeMs(() -> d.igemmConv(x, w, 0, 0, y, 1, 4, 4, 16, 3, 3, 16, 1, 1, 0,
                    Precision.FP16, () -> "test"), 3);
            assertTrue(launched >= 0 && Float.isFinite(launched), "time " + launched);
            assertEquals(one + nested + one, d.igemmLaunches());
            assertEquals(1, d.uncapturedTimings());
            d.graphTiming(true);
            assertTrue(Device.igemmConfigs() >= 1 && Device.igemmConfigName(0).equals("auto"));
            // The tiles split over a thread block cluster (sm_90; the emulated device's choices leave them out, so
            // they run here through the same entry): each gives the plain tile's result to the sums' rounding.
            long y0 = a.allocate(2L * 4 * 4 * 48, "y0"), y1 = a.allocate(2L * 4 * 4 * 48, "y1");
            java.util.SplittableRandom r = new java.util.SplittableRandom(3);
            float[] hx = new float[4 * 4 * 32], hw = new float[9 * 32 * 48];
            for (int i = 0; i < hx.length; i++) {
                hx[i] = (float) r.nextGaussian();
            }
            for (int i = 0; i < hw.length; i++) {
                hw[i] = (float) (r.nextGaussian() / 17);
            }
            long x2 = upload16(d, a, hx, "x2"), w2 = upload16(d, a, hw, "w2");
            d.igemmConv(x2, w2, 0, 0, y0, 1, 4, 4, 32, 3, 3, 48, 1, 1, 1, Precision.FP16, () -> "test");
            float[] plain = download16(d, a, y0, 4 * 4 * 48);
            int clustered = 0;
            for (int c = 1; c <= Device.igemmConfigs(); c++) {
                int cs = Device.igemmConfigCluster(c);
                assertTrue(cs == 1 || cs == 2 || cs == 4 || cs == 8, "config " + c + ": cluster " + cs);
                if (cs > 1) {
                    clustered++;
                    d.igemmConv(x2, w2, 0, 0, y1, 1, 4, 4, 32, 3, 3, 48, 1, 1, c, Precision.FP16, () -> "test");
                    float[] got = download16(d, a, y1, 4 * 4 * 48);
                    assertTrue(relL2(got, plain) < 2e-3, Device.igemmConfigName(c) + ": " + relL2(got, plain));
                }
            }
            assertTrue(clustered > 0, "the library offers cluster tiles");
            assertEquals(1, Device.igemmConfigCluster(0));
            assertEquals(0, Device.igemmConfigCluster(Device.igemmConfigs() + 1));
            assertTrue(Device.igemmTakes(x, w, 16, Precision.BF16));
            assertFalse(Device.igemmTakes(x, w, 16, Precision.FP32), "fp32");
            assertFalse(Device.igemmTakes(x, w, 24, Precision.FP16), "Cin not a multiple of 16");
            assertFalse(Device.igemmTakes(x + 2, w, 16, Precision.FP16), "misaligned x");
            assertFalse(Device.igemmTakes(x, 0, 16, Precision.FP16), "no KRSC copy");
            CudaException e = assertThrows(CudaException.class, () -> d.igemmConv(x, w, 0, 0, y, 1, 4, 4, 16, 3, 3, 16,
                    1, 1, 0, Precision.FP32, () -> "layer conv_in"));
            assertTrue(e.getMessage().contains("onestep_conv2d_igemm_typed(N=1, H=4, W=4, Cin=16")
                    && e.getMessage().contains("fp16 or bf16") && e.getMessage().contains("layer conv_in"),
                    e.getMessage());
            assertEquals(OnestepKernels.ERROR_UNSUPPORTED, e.status());
            d.beginCapture();
            try {
                assertThrows(IllegalStateException.class, () -> d.timeMs(() -> { }, 1));
            } finally {
                OnestepKernels.onestep_graph_destroy(d.endCapture());
            }
        }
    }
}
