package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
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
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * Captured passes whose activations reuse dead ones' memory ({@link ActivationPlan}) and share one block across
 * passes ({@link SharedActivations}), on the emulated library: the same bits as passes without reuse, in checking
 * mode (each activation filled with NaN before the warm-up writes it, so a read of memory no op of the pass wrote
 * shows), with less memory; and a pass that does not repeat its first run is measured again, not replayed wrong.
 */
class PlannedPassTest {

    private static CudaOps open() {
        EmulatedDeviceTest.require();
        return new CudaOps(new EmulatedDevice(CudaBackend.emulatedLibrary().toString()), 64L << 20, 2);
    }

    private static Tensor noise(TensorArena a, int n, long seed) {
        Tensor x = a.allocate(Layout.NHWC, n, 8, 8, 2);
        Noise.gaussian(x, seed, 0);
        OpsTesting.CPU.scale(x, 20f, x);
        return x;
    }

    /** Three calls per key (measure, capture, replay) of two keys, interleaved; the outputs of every call. */
    private static float[][] run(CudaOps ops, UNet net, boolean student) {
        try (TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
            ai.onestep.diffusion.Denoiser d = student ? new ConsistencyDenoiser(net, ops, ws, true)
                    : new EdmDenoiser(net, ops, ws, true);
            double[][] levels = {{4.0, 4.0}, {0.5, 0.5}};
            float[][] out = new float[6][];
            for (int call = 0; call < 6; call++) {
                Tensor x = noise(a, 2, 10 + call), y = a.allocate(Layout.NHWC, 2, 8, 8, 2);
                d.denoise(x, levels[call % 2], null, y);
                out[call] = y.toArray();
            }
            return out;
        }
    }

    @Test
    void plannedPassesGiveTheSameBitsInLessMemory() {
        for (boolean student : new boolean[] {true, false}) {
            try (UNet net = CudaGraphTest.randomNet(CudaGraphTest.config(32), 5); CudaOps planned = open();
                 CudaOps bump = open()) {
                planned.checkHostAccess(true);  // NaN in every activation before the warm-up writes it
                bump.planActivations(false);
                float[][] p = run(planned, net, student), b = run(bump, net, student);
                for (int call = 0; call < p.length; call++) {
                    assertArrayEquals(b[call], p[call], (student ? "student" : "teacher") + " call " + call);
                }
                Map<String, long[]> mp = planned.passMemory(), mb = bump.passMemory();
                assertEquals(2, mp.size(), "both keys captured: " + mp.keySet());
                long peaks = 0, largest = 0, before = 0;
                for (Map.Entry<String, long[]> e : mp.entrySet()) {
                    long[] m = e.getValue(), u = mb.get(e.getKey());
                    assertEquals(u[1], m[2], "a bump arena's bytes, as the unplanned pass has them");
                    assertEquals(u[1], u[2]);
                    assertTrue(2 * m[1] < u[1], e.getKey() + ": planned " + m[1] + " bytes, unplanned " + u[1]);
                    peaks += m[1];
                    before += u[1];
                    largest = Math.max(largest, m[1]);
                }
                long block = planned.sharedActivationBytes();
                assertTrue(block >= largest && block <= ActivationPlan.aligned(largest + largest / 4),
                        "one block for both passes (" + block + " bytes), not " + peaks);
                System.out.printf("%s pass activations: %d bytes planned (shared by %d graphs), %d in one arena "
                        + "each without reuse%n", student ? "student" : "teacher", planned.sharedActivationBytes(),
                        mp.size(), before);
            }
        }
    }

    @Test
    void aMultiStepPassReusesOneEvaluationsMemoryForTheNext() {
        // The whole 2-step sample as one pass (what api.Sampler runs): its two network evaluations write the same
        // host workspace, and each whole overwrite starts a new lifetime, so the second evaluation reuses the first
        // one's memory: the pass needs about what one evaluation does, not twice. Same bits as a graph per call.
        try (UNet net = CudaGraphTest.randomNet(CudaGraphTest.config(32), 9); CudaOps ops = open();
             TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
            ops.checkHostAccess(true);
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
            double[] taus = {1.5};
            for (long seed = 1; seed <= 3; seed++) {
                Tensor whole = noise(a, 2, seed), perCall = a.allocate(Layout.NHWC, 2, 8, 8, 2);
                perCall.copyFrom(whole);
                ai.onestep.diffusion.ConsistencySampler.sample(ops, f, whole, taus, null, seed, 0, true);
                ai.onestep.diffusion.ConsistencySampler.sample(ops, f, perCall, taus, null, seed, 0, false);
                assertArrayEquals(perCall.toArray(), whole.toArray(), "seed " + seed + ": one graph vs one per call");
            }
            long one = 0, two = 0, bumpTwo = 0;
            for (Map.Entry<String, long[]> e : ops.passMemory().entrySet()) {
                if (e.getKey().startsWith("consistency sample")) {
                    two = e.getValue()[1];
                    bumpTwo = e.getValue()[2];
                } else {
                    one = Math.max(one, e.getValue()[1]);
                }
            }
            System.out.printf("2-step pass: %d bytes planned, one evaluation's pass %d, unplanned %d%n", two, one,
                    bumpTwo);
            assertTrue(one > 0 && two > 0, ops.passMemory().keySet().toString());
            assertTrue(two < 1.25 * one, "2 evaluations in " + two + " bytes, one in " + one);
            assertTrue(ops.sharedActivationBytes() <= ActivationPlan.aligned(Math.max(one, two) * 5 / 4),
                    "the 1-evaluation and the 2-step graphs share one block: " + ops.sharedActivationBytes() + " bytes");
        }
    }

    @Test
    void halfPrecisionPassesGiveTheSameBitsPlannedOrNot() {
        // fp16 passes: a tensor first written in fp16 and then wholly overwritten by an fp32 op (an elementwise op
        // with the fp32 pass input) stays fp16, planned or not; and the whole 2-step sample is the same bits.
        String lib = CudaBackend.emulatedLibrary().toString();
        EmulatedDeviceTest.require();
        try (CudaOps planned = new CudaOps(new EmulatedDevice(lib), 64L << 20, 2, Precision.FP16);
             CudaOps bump = new CudaOps(new EmulatedDevice(lib), 64L << 20, 2, Precision.FP16);
             UNet net = CudaGraphTest.randomNet(CudaGraphTest.config(32), 13)) {
            bump.planActivations(false);
            float[][] got = new float[2][];
            CudaOps[] both = {planned, bump};
            for (int k = 0; k < 2; k++) {
                CudaOps ops = both[k];
                try (TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
                    Tensor x = noise(a, 1, 4), y = a.allocate(Layout.NHWC, 1, 8, 8, 2);
                    EmulatedDeviceTest.runPassThrice(ops, "retyped", new Tensor[] {x}, new Tensor[] {y}, ws, () -> {
                        Tensor t = ws.allocate(Layout.NHWC, 1, 8, 8, 2);
                        ops.silu(x, t);       // fp16 (the pass's type)
                        ops.scale(t, 3.7f, t);
                        ops.add(x, t, t);     // fp32 (x is): converted into t's fp16
                        ops.scale(t, 0.3f, y);
                    });
                    got[k] = y.toArray();
                    Tensor z = noise(a, 2, 5);
                    ai.onestep.diffusion.ConsistencySampler.sample(ops, new ConsistencyDenoiser(net, ops, ws, true), z,
                            new double[] {1.5}, null, 5, 0, true);
                    ai.onestep.diffusion.ConsistencySampler.sample(ops, new ConsistencyDenoiser(net, ops, ws, true), z,
                            new double[] {1.5}, null, 6, 0, true);
                    float[] zs = z.toArray(), all = java.util.Arrays.copyOf(got[k], got[k].length + zs.length);
                    System.arraycopy(zs, 0, all, got[k].length, zs.length);
                    got[k] = all;
                }
            }
            assertArrayEquals(got[1], got[0], "fp16, planned vs unplanned");
            assertEquals(2, planned.passMemory().size(), planned.passMemory().keySet().toString());
        }
    }

    @Test
    void aFailedGrowthLeavesNoFreedBlockBehind() {
        EmulatedDeviceTest.require();
        try (EmulatedDevice d = new EmulatedDevice(CudaBackend.emulatedLibrary().toString());
             SharedActivations shared = new SharedActivations(d)) {
            shared.acquire(1 << 20, "small").close();  // kept as the current block, unused
            assertTrue(shared.bytes() > 0);
            org.junit.jupiter.api.Assertions.assertThrows(CudaException.class,
                    () -> shared.acquire(1L << 50, "too large for any device"));
            assertEquals(0, shared.bytes(), "the unused block was freed for the larger one, which failed");
            try (SharedActivations.Lease l = shared.acquire(1 << 20, "small again")) {
                assertEquals(ActivationPlan.aligned((1 << 20) * 5L / 4), shared.bytes(), "a new block");
                assertTrue(l.base() != 0);
            }
        }
    }

    @Test
    void aWholeHeunIntegrationIsMeasuredInOneEvaluationsMemory() {
        // 5 network evaluations in one pass: its measuring run (bump-allocated) renews each evaluation's tensors in
        // the memory they had, so it needs about one evaluation's bytes, not five; the plan about as much again.
        try (UNet net = CudaGraphTest.randomNet(CudaGraphTest.config(32), 23); CudaOps ops = open();
             TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
            EdmDenoiser d = new EdmDenoiser(net, ops, ws, true);
            double[] sigmas = ai.onestep.diffusion.KarrasSchedule.sigmas(3);
            float[] first = null;
            for (long call = 0; call < 3; call++) {
                Tensor x = noise(a, 2, 31);
                ai.onestep.diffusion.EdmSampler.sample(ops, d, ai.onestep.diffusion.EdmSampler.Method.HEUN, x, sigmas,
                        null, null, true);
                if (first == null) {
                    first = x.toArray();
                }
                assertArrayEquals(first, x.toArray(), "call " + call + " (measure, capture, replay)");
            }
            long[] m = ops.passMemory().values().iterator().next();
            System.out.printf("whole Heun pass (5 NFE): measured in %d bytes, bump %d, planned %d%n",
                    ops.measuringBytes(), m[2], m[1]);
            assertTrue(ops.measuringBytes() <= ActivationPlan.aligned(m[2]) + 64 * DeviceArena.ALIGN,
                    "measuring run used " + ops.measuringBytes() + " bytes, one evaluation's bump is " + m[2]);
            assertTrue(2 * m[1] < m[2], "planned " + m[1] + " of " + m[2]);
        }
    }

    @Test
    void aPassThatStraysFromItsFirstRunIsMeasuredAgain() {
        // Against the runPass contract, the body adds an op from its second call on: the planned warm-up meets an
        // allocation its plan lacks, and the pass is measured again (its result still right), then captured.
        try (CudaOps ops = open(); TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
            ops.checkHostAccess(true);
            Tensor x = a.allocate(Layout.NHWC, 1, 4, 4, 8), y = a.allocate(Layout.NHWC, 1, 4, 4, 8);
            Noise.gaussian(x, 3, 0);
            int[] calls = {0};
            float[] first = null;
            for (int call = 0; call < 4; call++) {
                ops.runPass("strays", new Tensor[] {x}, new Tensor[] {y}, () -> {
                    ws.reset();
                    Tensor h = x;
                    int extra = calls[0]++ > 0 ? 1 : 0;
                    for (int i = 0; i < 2 + extra; i++) {
                        Tensor next = ws.allocate(Layout.NHWC, 1, 4, 4, 8);
                        ops.scale(h, 1f, next);
                        h = next;
                    }
                    ops.silu(h, y);
                });
                if (first == null) {
                    Tensor want = a.allocate(Layout.NHWC, 1, 4, 4, 8);
                    OpsTesting.CPU.silu(x, want);
                    OpsTesting.assertClose("the first call vs cpu", y, want, 1e-6);
                    first = y.toArray();
                }
                assertArrayEquals(first, y.toArray(), "call " + call + ": the same bits as the first");
            }
            assertEquals(1, ops.capturedPasses().size(), "captured once it repeated itself");
        }
    }
}
