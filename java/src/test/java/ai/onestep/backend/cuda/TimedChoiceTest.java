package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.diffusion.ConsistencyDenoiser;
import ai.onestep.model.UNet;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The timed choices a GPU makes between our candidate kernels and the routes they would replace ({@link
 * Device#ownConv}: the implicit-GEMM convolutions against cuDNN; {@link Device#attentionKernel}: the split-keys
 * pipelined and wide attention against the default kernel), run here by an emulated device in {@link EmulatedDevice.Candidates#TIMED}
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
            // Each candidate and incumbent was timed as a captured graph's replay (Device.timeMs), as the pass runs
            // it: the library routes, their scratch included, capture.
            assertEquals(0, d.uncapturedTimings(), p.label() + ": timings made as launches");
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
            // Every convolution shape whose Cin is a multiple of 16, the upsampler's, the attention's and the group
            // norms': each chosen once, on its first use, for our kernel.
            assertTrue(taken.stream().anyMatch(c -> c.shape().startsWith("conv,")), taken.toString());
            assertTrue(taken.stream().anyMatch(c -> c.shape().startsWith("upsample,")), taken.toString());
            assertTrue(taken.stream().anyMatch(c -> c.shape().startsWith("attention,")), taken.toString());
            // The group norms (cluster kernel at this batch of 2), the up blocks' concatenating ones too.
            assertTrue(taken.stream().anyMatch(c -> c.shape().startsWith("groupnorm,")), taken.toString());
            assertTrue(taken.stream().anyMatch(c -> c.shape().startsWith("groupnormconcat,")), taken.toString());
            assertEquals(taken.size(), taken.stream().map(Device.Choice::shape).distinct().count(), "once per shape");
            for (Device.Choice c : taken) {
                assertTrue(c.config() >= 1, c.toString());
                assertTrue(c.verdict().split(" \\(")[0].endsWith("faster"), c.toString());  // before the others' times
            }
            // Attention has three candidates, split keys, pipelined and wide: all timed, the slower two named in the
            // verdict.
            for (Device.Choice c : taken) {
                if (c.shape().startsWith("attention,")) {
                    for (String other : List.of("split keys", "pipelined", "wide")) {
                        if (!other.equals(c.candidate())) {
                            assertTrue(c.verdict().contains(other + " ") && c.verdict().contains(" us"),
                                    other + " timed: " + c);
                        }
                    }
                }
            }
            assertTrue(launches[0] > 0);
            double err = IgemmConvTest.relL2(ours, plain), bound = p == Precision.FP16 ? 5e-3 : 3e-2;  // as IgemmConvTest
            assertTrue(err < bound, p.label() + ": candidates vs portable, relative L2 " + err);
        }
    }

    @Test
    void groupNormAboveTwoToTheTwentyChoosesTheSlabKernelWhereItAgrees() {
        // 1 x 2048 pixels x 528 channels in 33 groups of 16: 1,081,344 values, where kernel 0 runs two kernels. The
        // slab kernel (the cluster kernel left out), forced to win, runs from then on and agrees with kernel 0 to the
        // sums' rounding; forced to lose, kernel 0's bits stay. A shape below 2^20 values, or one y == x, is not
        // timed at all.
        groupNormChoice(1, 1, 2048, 528, 33);
    }

    @Test
    void groupNormAtBatchOneChoosesTheClusterKernelWhereItAgrees() {
        // The CIFAR U-Net's 32x32 level at batch 1: 1 x 1024 pixels x 128 channels in 32 groups, where kernel 0 runs
        // one block a group; the cluster kernel (clusters of 4 blocks a group), likewise forced to win or lose.
        groupNormChoice(2, 1, 1024, 128, 32);
    }

    private static void groupNormChoice(int candidate, int n, int hw, int c, int g) {
        EmulatedDeviceTest.require();
        int elems = n * hw * c;
        String name = candidate == 1 ? "slab" : "cluster";
        for (Boolean force : new Boolean[] {Boolean.TRUE, Boolean.FALSE}) {
            for (Precision p : new Precision[] {Precision.FP32, Precision.FP16}) {
                try (EmulatedDevice d = new EmulatedDevice(CudaBackend.emulatedLibrary().toString(), false, false,
                        EmulatedDevice.Candidates.TIMED);
                     DeviceArena a = new DeviceArena(d, "group norm choice test", 64L << 20);
                     TensorArena host = new TensorArena()) {
                    d.forceChoice = force;
                    d.slabGroupNorm(candidate == 1);
                    d.clusterGroupNorm(candidate == 2);
                    java.util.SplittableRandom r = new java.util.SplittableRandom(5);
                    Tensor hx = host.allocate(elems), hgb = host.allocate(2 * c);
                    for (long i = 0; i < elems; i++) {
                        hx.set(i, (float) (0.5 + r.nextGaussian()));
                    }
                    for (long i = 0; i < 2L * c; i++) {
                        hgb.set(i, (float) (i < c ? 1 + 0.3 * r.nextGaussian() : 0.3 * r.nextGaussian()));
                    }
                    long wide = a.allocate(4L * elems, "fp32 x"), wgb = a.allocate(8L * c, "fp32 gamma beta");
                    d.upload(wide, hx.segment(), 4L * elems, () -> "x");
                    d.upload(wgb, hgb.segment(), 8L * c, () -> "gamma beta");
                    long x = wide, gb = wgb;
                    if (p != Precision.FP32) {
                        x = a.allocate(p.bytes * elems, "x");
                        gb = a.allocate(p.bytes * 2L * c, "gamma beta");
                        d.convert(wide, Precision.FP32, x, p, elems, "x", () -> "test");
                        d.convert(wgb, Precision.FP32, gb, p, 2L * c, "gamma beta", () -> "test");
                    }
                    long gamma = gb, beta = gb + (long) p.bytes * c;
                    long[] y = {a.allocate(p.bytes * elems, "y0"), a.allocate(p.bytes * elems, "y")};
                    long stats = a.allocate(8L * n * g, "mean rstd");
                    d.groupNorm(x, 0, 0, 0, gamma, beta, 0, 0, y[0], stats, stats + 4L * n * g, n, hw, c, g, 1e-5f, true,
                            0, p, () -> "test");
                    d.groupNorm(x, 0, 0, 0, gamma, beta, 0, 0, y[1], stats, stats + 4L * n * g, n, hw, c, g, 1e-5f, true,
                            p, () -> "test");
                    List<Device.Choice> made = d.timedChoices();
                    assertEquals(1, made.size(), made.toString());
                    Device.Choice choice = made.get(0);
                    assertTrue(choice.shape().startsWith("groupnorm,n=" + n + ",hw=" + hw + ",c=" + c + ",g=" + g
                            + ",silu"), choice.toString());
                    assertEquals(force ? candidate : 0, choice.config(), choice.toString());
                    float[][] got = new float[2][];
                    for (int k = 0; k < 2; k++) {
                        long y32 = y[k];
                        if (p != Precision.FP32) {
                            y32 = a.allocate(4L * elems, "y32");
                            d.convert(y[k], p, y32, Precision.FP32, elems, "y", () -> "test");
                        }
                        Tensor h = host.allocate(elems);
                        d.download(h.segment(), y32, 4L * elems, () -> "y");
                        got[k] = h.toArray();
                    }
                    if (force) {
                        double err = IgemmConvTest.relL2(got[1], got[0]), bound = p == Precision.FP32 ? 1e-5 : 1e-3;
                        assertTrue(err < bound, p.label() + ": " + name + " vs default, relative L2 " + err);
                        // ...and it is the candidate's result: its sums run in another order than Welford's.
                        assertFalse(Arrays.equals(got[0], got[1]), p.label() + ": the " + name + " kernel did not run");
                    } else {
                        assertArrayEquals(got[0], got[1], p.label() + ": the default's bits where the " + name + " lost");
                    }
                    // With y == x no choice is made; nor, for the slab kernel, below 2^20 values (one sample of 1024
                    // pixels).
                    if (candidate == 1) {
                        d.groupNorm(x, 0, 0, 0, gamma, beta, 0, 0, y[1], stats, stats + 4L * n * g, n, 1024, c, g,
                                1e-5f, true, p, () -> "test");
                    }
                    d.groupNorm(y[1], 0, 0, 0, gamma, beta, 0, 0, y[1], stats, stats + 4L * n * g, n, hw, c, g, 1e-5f,
                            false, p, () -> "test");
                    assertEquals(1, d.timedChoices().size(), d.timedChoices().toString());
                }
            }
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
