package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.OpsTesting;
import ai.onestep.diffusion.ConsistencyDenoiser;
import ai.onestep.diffusion.EdmDenoiser;
import ai.onestep.model.UNet;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Passes in fp16 and bf16 on the emulated CUDA backend ({@link Precision}): where the rounding happens (each
 * half-precision op's output rounded once, fp32 kept for an elementwise op with an fp32 operand, outputs converted
 * back into fp32 pass buffers), and whole denoiser passes against the fp32 CPU backend: close, yet really rounded,
 * bf16 coarser than fp16, captured replays bit for bit.
 */
class HalfPrecisionTest {
    private static CudaOps fp16;
    private static CudaOps bf16;

    @BeforeEach
    void needsBackend() {
        EmulatedDeviceTest.require();  // loads the emulated library (or skips / fails with the reason)
        if (fp16 == null) {
            String lib = CudaBackend.emulatedLibrary().toString();
            fp16 = new CudaOps(new EmulatedDevice(lib), 64L << 20, 2, Precision.FP16);
            bf16 = new CudaOps(new EmulatedDevice(lib), 64L << 20, 2, Precision.BF16);
        }
    }

    @AfterAll
    static void close() {
        if (fp16 != null) {
            fp16.close();
            bf16.close();
        }
    }

    private static float h(float v) {
        return Float.float16ToFloat(Float.floatToFloat16(v));  // IEEE binary16, round to nearest even
    }

    private static Tensor filled(TensorArena a, long seed, int n) {
        Tensor t = a.allocate(Layout.ROWS, n);
        Noise.gaussian(t, seed, 0);
        return t;
    }

    @Test
    void eachOpRoundsOnceAndFp32OperandsKeepAnOpInFp32() {
        int n = 301;  // ragged: the kernels' 4-wide bulk and a tail
        try (TensorArena a = new TensorArena()) {
            Tensor p = filled(a, 1, n), q = filled(a, 2, n), x = filled(a, 3, n);
            Tensor y1 = a.allocate(Layout.ROWS, n), y2 = a.allocate(Layout.ROWS, n);
            Tensor out = a.allocate(Layout.ROWS, n), out2 = a.allocate(Layout.ROWS, n), out3 = a.allocate(Layout.ROWS, n);
            fp16.runPass("mixed", new Tensor[] {x}, new Tensor[] {out, out2, out3}, () -> {
                fp16.add(p, q, y1);                  // host constants: fp16 in, fp16 out
                fp16.silu(y1, y2);                   // fp16
                fp16.axpby(0.5f, x, 2f, y1, out);    // x is an fp32 pass input: the op runs in fp32
                fp16.add(y2, x, out2);               // likewise
                fp16.scale(y2, 3f, out3);            // fp16 op into an fp32 pass output: converted back after it
            });
            float[] pp = p.toArray(), qq = q.toArray(), xx = x.toArray();
            float[] o1 = out.toArray(), o2 = out2.toArray(), o3 = out3.toArray();
            for (int i = 0; i < n; i++) {
                float s1 = h(h(pp[i]) + h(qq[i]));
                float s2 = h(s1 * (1f / (1f + (float) Math.exp(-s1))));  // the kernel's float expression
                assertEquals(Math.fma(2f, s1, 0.5f * xx[i]), o1[i], 0f, "axpby at " + i);
                assertEquals(s2 + xx[i], o2[i], 0f, "add at " + i);
                assertEquals(h(3f * s2), o3[i], 0f, "scale at " + i);
            }
        }
    }

    @Test
    void consistencyPassesInFp16AndBf16AreCloseToFp32AndReplayBitForBit() {
        // PyTorch's default initialization (weights ~ 1/sqrt(fan_in)): a trained net's scale. Larger random weights
        // amplify every layer's rounding far beyond what a real model sees (DeviceCheck's comment has numbers).
        try (UNet net = new UNet(CudaGraphTest.config(32), false); TensorArena a = new TensorArena();
             Workspace w16 = new Workspace(); Workspace wbf = new Workspace(); Workspace wcpu = new Workspace()) {
            ai.onestep.model.Init.pytorchDefault(net, 7);
            Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Noise.gaussian(x, 9, 0);
            double[] t = {2.5, 2.5};
            Tensor cpu = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            new ConsistencyDenoiser(net, OpsTesting.CPU, wcpu).denoise(x, t, null, cpu);

            long fp32Bytes;
            fp16.registerParameters(net.weightTensors());
            bf16.registerParameters(net.weightTensors());
            fp32Bytes = net.weightTensors().stream().mapToLong(w -> w.size() * 4).sum();
            double[] err = new double[2];
            CudaOps[] backends = {fp16, bf16};
            Workspace[] ws = {w16, wbf};
            for (int b = 0; b < 2; b++) {
                CudaOps o = backends[b];
                long hostOps = o.hostOps();
                ConsistencyDenoiser f = new ConsistencyDenoiser(net, o, ws[b], true);
                Tensor first = a.allocate(Layout.NHWC, 2, 8, 8, 2), captured = a.allocate(Layout.NHWC, 2, 8, 8, 2);
                Tensor replay = a.allocate(Layout.NHWC, 2, 8, 8, 2);
                f.denoise(x, t, null, first);
                f.denoise(x, t, null, captured);
                f.denoise(x, t, null, replay);
                assertEquals(1, o.capturedPasses().size(), o.precision() + ": the pass became a graph");
                assertTrue(o.eagerOnlyPasses().isEmpty(), o.precision() + ": no op fell back to op by op");
                assertEquals(hostOps, o.hostOps(), o.precision() + ": no op ran on the host");
                assertArrayEquals(first.toArray(), captured.toArray(), o.precision() + ": warm-up vs first run");
                assertArrayEquals(first.toArray(), replay.toArray(), o.precision() + ": replay vs first run");
                err[b] = OpsTesting.relErr(replay.toArray(), cpu.toArray());
                // The 16-bit copies of the registered weights were made once, next to the fp32 ones.
                long[] reg = o.registeredParameters();
                assertTrue(reg[1] >= fp32Bytes + fp32Bytes / 2, o.precision() + ": device bytes " + reg[1]
                        + " hold fp32 and 16-bit weights (" + fp32Bytes + " fp32)");
            }
            // Measured on this net: fp16 1.4e-3, bf16 1.2e-2 relative to fp32 (the trained Fashion-MNIST student:
            // 5.5e-4 and 7.7e-3); the bounds are about 3x.
            // The lower bounds show the passes really ran in 16 bits (fp32 on the device differs from the CPU by
            // ~1e-6), the upper ones that nothing else went wrong (a wrong index or type gives errors of order 1).
            assertTrue(err[0] > 1e-5 && err[0] < 4e-3, "fp16 vs fp32: relative error " + err[0]);
            assertTrue(err[1] > err[0] && err[1] < 3.5e-2, "bf16 vs fp32: relative error " + err[1] + " (fp16 " + err[0]
                    + ")");
        }
    }

    @Test
    void edmDenoiserPassInFp16MatchesItsEagerFp32RunClosely() {
        // The teacher's preconditioned denoiser, as the Heun sampler calls it: through a pass in fp16 (the sample x
        // in and D out stay fp32), against the same backend's fp32 eager ops.
        try (UNet net = new UNet(CudaGraphTest.config(32), false); TensorArena a = new TensorArena();
             Workspace ws = new Workspace(); Workspace we = new Workspace()) {
            ai.onestep.model.Init.pytorchDefault(net, 8);
            Tensor x = a.allocate(Layout.NHWC, 1, 8, 8, 2);
            Noise.gaussian(x, 4, 0);
            OpsTesting.CPU.scale(x, 20f, x);  // a noisy sample at sigma = 20
            double[] sigma = {20};
            Tensor pass = a.allocate(Layout.NHWC, 1, 8, 8, 2), eager = a.allocate(Layout.NHWC, 1, 8, 8, 2);
            new EdmDenoiser(net, fp16, ws, true).denoise(x, sigma, null, pass);
            new EdmDenoiser(net, OpsTesting.CPU, we).denoise(x, sigma, null, eager);
            double e = OpsTesting.relErr(pass.toArray(), eager.toArray());
            // Measured 9.5e-4: at sigma = 20, D is almost all c_out F, the network's rounded output.
            assertTrue(e > 1e-5 && e < 3e-3, "fp16 EDM denoiser vs fp32: relative error " + e);
        }
    }

    @Test
    void backendsOpenInTheRequestedPrecision() {
        // The embedding API's path (Sampler.load(path, backend, precision) -> Backends.byName): explicit, else the
        // system property (--precision), else fp32 on the emulated library.
        try (CudaOps b = (CudaOps) ai.onestep.backend.Backends.byName("cuda-emulated", 1, s -> { }, Precision.BF16);
             CudaOps d = (CudaOps) ai.onestep.backend.Backends.byName("cuda-emulated", 1, s -> { }, null)) {
            assertEquals(Precision.BF16, b.precision());
            assertEquals(Precision.FP32, d.precision());
        }
        String saved = System.getProperty("onestep.cuda.precision");
        System.setProperty("onestep.cuda.precision", "fp16");
        try (CudaOps p = (CudaOps) ai.onestep.backend.Backends.byName("cuda-emulated", 1)) {
            assertEquals(Precision.FP16, p.precision());
        } finally {
            if (saved == null) {
                System.clearProperty("onestep.cuda.precision");
            } else {
                System.setProperty("onestep.cuda.precision", saved);
            }
        }
    }

    @Test
    void precisionNamesParseAndBadOnesSayWhatIsAccepted() {
        assertEquals(Precision.FP16, Precision.parse("fp16"));
        assertEquals(Precision.BF16, Precision.parse(" BF16 "));
        assertEquals(Precision.FP32, Precision.parse("float32"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Precision.parse("int8"));
        assertTrue(e.getMessage().contains("fp32, fp16 or bf16") && e.getMessage().contains("int8"), e.getMessage());
    }
}
