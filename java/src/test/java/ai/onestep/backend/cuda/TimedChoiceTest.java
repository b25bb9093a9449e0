package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.diffusion.ConsistencyDenoiser;
import ai.onestep.diffusion.Noise;
import ai.onestep.model.UNet;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The timed choices a GPU makes between our candidate kernels and the routes they would replace ({@link
 * Device#ownConv}: the implicit-GEMM convolutions against cuDNN; {@link Device#attentionKernel}: the split-keys
 * attention against the default kernel), run here by an emulated device in {@link EmulatedDevice.Candidates#TIMED}
 * mode with the portable kernels as the incumbents. The emulation's clock says nothing, so {@code forceChoice}
 * decides; everything else is the GPU's code: the choice on a shape's first use outside a capture, inside a pass's
 * first call (after which the pass still captures and replays that call's bits), the check against the reference,
 * and the recorded verdicts; and a candidate that loses leaves the incumbent's bits.
 */
class TimedChoiceTest {

    private static float[] run(Precision p, EmulatedDevice.Candidates candidates, Boolean force,
                               List<Device.Choice> choices, long[] launches) {
        String lib = CudaBackend.emulatedLibrary().toString();
        // krsc: the incumbent (the portable kernel on the KRSC copy transposed back) asks for scratch, as cuDNN does.
        EmulatedDevice d = new EmulatedDevice(lib, true, false, candidates);
        d.forceChoice = force;
        try (UNet net = CudaGraphTest.randomNet(CudaGraphTest.config(32), 29);
             CudaOps ops = new CudaOps(d, 64L << 20, 2, p)) {
            float[] out = KrscWeightsTest.run(ops, net);  // ends with a weight update, which drops the graph
            // Three more calls on the same weights: measured, captured, replayed; the pass must still capture (the
            // choices made in the first call left its scratch sequence as the later calls make it).
            try (TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
                ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
                Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 2), y = a.allocate(Layout.NHWC, 2, 8, 8, 2);
                Noise.gaussian(x, 9, 0);
                for (int call = 0; call < 3; call++) {
                    f.denoise(x, new double[] {1.5, 1.5}, null, y);
                }
            }
            assertEquals(1, ops.capturedPasses().size(), p.label() + ": the pass was captured");
            assertTrue(ops.eagerOnlyPasses().isEmpty(), p.label() + ": no pass fell back to op by op");
            choices.addAll(d.timedChoices());
            launches[0] = d.igemmLaunches();
            return out;
        }
    }

    /** The three calls of each round: eager (where the choices are made), captured, replayed. */
    private static void assertCallsAgree(float[] all, String what) {
        int call = all.length / 6;
        for (int round = 0; round < 2; round++) {
            float[] first = Arrays.copyOfRange(all, (3 * round) * call, (3 * round + 1) * call);
            float[] replay = Arrays.copyOfRange(all, (3 * round + 2) * call, (3 * round + 3) * call);
            assertArrayEquals(first, replay, what + ", round " + round + ": the replay gives the first call's bits");
        }
    }

    @Test
    void candidatesTakenWhereTheyWinRunInTheCapturedPass() {
        EmulatedDeviceTest.require();
        for (Precision p : new Precision[] {Precision.FP16, Precision.BF16}) {
            List<Device.Choice> none = new java.util.ArrayList<>(), taken = new java.util.ArrayList<>();
            long[] launches = new long[1];
            float[] plain = run(p, EmulatedDevice.Candidates.NONE, null, none, launches);
            assertTrue(none.isEmpty(), "a device without candidates makes no choice");
            float[] ours = run(p, EmulatedDevice.Candidates.TIMED, Boolean.TRUE, taken, launches);
            assertCallsAgree(ours, p.label());
            // Every convolution shape whose Cin is a multiple of 16, the upsampler's, and the attention's: each chosen
            // once, on its first use, for our kernel.
            assertTrue(taken.stream().anyMatch(c -> c.shape().startsWith("conv,")), taken.toString());
            assertTrue(taken.stream().anyMatch(c -> c.shape().startsWith("upsample,")), taken.toString());
            assertTrue(taken.stream().anyMatch(c -> c.shape().startsWith("attention,")), taken.toString());
            assertEquals(taken.size(), taken.stream().map(Device.Choice::shape).distinct().count(), "once per shape");
            for (Device.Choice c : taken) {
                assertTrue(c.config() >= 1, c.toString());
                assertTrue(c.verdict().endsWith("faster"), c.toString());
            }
            assertTrue(launches[0] > 0);
            double err = IgemmConvTest.relL2(ours, plain), bound = p == Precision.FP16 ? 5e-3 : 3e-2;  // as IgemmConvTest
            assertTrue(err < bound, p.label() + ": candidates vs portable, relative L2 " + err);
        }
    }

    @Test
    void candidatesThatLoseLeaveTheIncumbentsBits() {
        EmulatedDeviceTest.require();
        Precision p = Precision.FP16;
        List<Device.Choice> none = new java.util.ArrayList<>(), lost = new java.util.ArrayList<>();
        long[] launches = new long[1];
        float[] plain = run(p, EmulatedDevice.Candidates.NONE, null, none, launches);
        float[] timed = run(p, EmulatedDevice.Candidates.TIMED, Boolean.FALSE, lost, launches);
        // Timed (so the candidates ran, into the same outputs), then never used: the incumbents' bits, every call.
        assertTrue(launches[0] > 0, "the candidates were timed");
        assertFalse(lost.isEmpty());
        for (Device.Choice c : lost) {
            assertEquals(0, c.config(), c.toString());
        }
        assertArrayEquals(plain, timed, "the same bits as a device without candidates");
    }
}
