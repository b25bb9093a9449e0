package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Where a timed choice applies, on the emulated device: a verdict serves only the case it was timed for (the bias
 * term is part of a convolution's key), never a candidate switched off since, and a choices file only a device that
 * times the same way. Each rule came from a review of the choices after the 2026-11-27 H200 run.
 */
class ChoiceRulesTest {

    private static void zero(Device d, long p, long bytes) {
        Device.check(ai.onestep.kernels.OnestepKernels.onestep_memset(p, 0, bytes, d.stream()), "memset", () -> "");
    }

    /** Every candidate is kept where it agrees (forceChoice), so the verdicts are the candidates'. */
    private static EmulatedDevice device() {
        EmulatedDevice d = new EmulatedDevice(CudaBackend.emulatedLibrary().toString(), false, false,
                EmulatedDevice.Candidates.TIMED);
        d.forceChoice = Boolean.TRUE;
        return d;
    }

    @Test
    void aConvolutionWithABiasIsTimedApartFromOneWithout() {
        EmulatedDeviceTest.require();
        int n = 1, h = 4, w = 4, cin = 16, cout = 16;
        try (EmulatedDevice d = device(); DeviceArena a = new DeviceArena(d, "choice rules", 1 << 22)) {
            long x = a.allocate(2L * n * h * w * cin, "x"), wt = a.allocate(2L * 9 * cin * cout, "w");
            long wk = a.allocate(2L * 9 * cin * cout, "w krsc"), b = a.allocate(2L * cout, "bias");
            long y = a.allocate(2L * n * h * w * cout, "y");
            zero(d, x, 2L * n * h * w * cin);
            zero(d, wt, 2L * 9 * cin * cout);
            zero(d, wk, 2L * 9 * cin * cout);
            zero(d, b, 2L * cout);
            d.conv2d(x, wt, wk, 0, y, n, h, w, cin, 3, 3, cout, 1, 1, Precision.FP16, a::allocate, () -> "no bias");
            d.conv2d(x, wt, wk, b, y, n, h, w, cin, 3, 3, cout, 1, 1, Precision.FP16, a::allocate, () -> "bias");
            // On cuDNN the bias is a kernel of its own and in our epilogue it is free: two verdicts, not one.
            List<String> keys = d.timedChoices().stream().map(Device.Choice::shape).toList();
            assertEquals(2, keys.size(), keys.toString());
            assertTrue(keys.get(0).startsWith("conv,") && !keys.get(0).endsWith(",bias"), keys.toString());
            assertEquals(keys.get(0) + ",bias", keys.get(1));
        }
    }

    /**
     * The verdict by time alone (no forceChoice), with the choice timer scripted: a run that launched our implicit
     * GEMM takes {@code oursMs}, anything else (the library route) 1 ms. Returns {config, timings, verdict's margin}.
     */
    private static Object[] convVerdict(double oursMs) {
        int n = 1, h = 4, w = 4, cin = 16, cout = 16;
        try (EmulatedDevice d = new EmulatedDevice(CudaBackend.emulatedLibrary().toString(), false, false,
                EmulatedDevice.Candidates.TIMED); DeviceArena a = new DeviceArena(d, "choice rules", 1 << 22)) {
            long x = a.allocate(2L * n * h * w * cin, "x"), wt = a.allocate(2L * 9 * cin * cout, "w");
            long wk = a.allocate(2L * 9 * cin * cout, "w krsc"), y = a.allocate(2L * n * h * w * cout, "y");
            for (long p : new long[] {x, wt, wk}) {  // 0x3C3C: fp16 1.06 everywhere, so the results agree
                Device.check(ai.onestep.kernels.OnestepKernels.onestep_memset(p, 0x3C,
                        p == x ? 2L * n * h * w * cin : 2L * 9 * cin * cout, d.stream()), "memset", () -> "");
            }
            int[] timings = {0};
            d.choiceTimer = work -> {
                timings[0]++;
                long before = d.igemmLaunches();
                work.run();
                return d.igemmLaunches() > before ? oursMs : 1.0;
            };
            d.conv2d(x, wt, wk, 0, y, n, h, w, cin, 3, 3, cout, 1, 1, Precision.FP16, a::allocate, () -> "margin");
            Device.Choice c = d.timedChoices().get(0);
            return new Object[] {c.config(), timings[0], c.verdict()};
        }
    }

    @Test
    void aCandidateFasterByLessThanTheMarginLeavesTheIncumbent() {
        EmulatedDeviceTest.require();
        Object[] slower = convVerdict(1.02), close = convVerdict(0.99), clear = convVerdict(0.9);
        assertEquals(0, slower[0], "a slower candidate: " + slower[2]);
        assertEquals(0, close[0], "1% faster, inside the 3% margin: " + close[2]);
        assertTrue(((String) close[2]).contains("margin"), (String) close[2]);
        assertTrue((int) clear[0] > 0, "10% faster: " + clear[2]);
        // Where the candidate looks faster both sides are timed again; where it looks slower, not.
        assertEquals((int) slower[1] + 2, (int) close[1]);
        assertEquals((int) close[1], (int) clear[1]);
    }

    @Test
    void aCandidateSwitchedOffAfterItsVerdictNoLongerRuns() {
        EmulatedDeviceTest.require();
        int n = 1, heads = 2, t = 16, hd = 32;
        long elems = (long) n * t * 3 * heads * hd, outs = (long) n * t * heads * hd;
        try (EmulatedDevice d = device(); DeviceArena a = new DeviceArena(d, "choice rules", 1 << 22)) {
            long qkv = a.allocate(2 * elems, "qkv"), o = a.allocate(2 * outs, "o");
            long lse = a.allocate(4L * n * heads * t, "lse");
            zero(d, qkv, 2 * elems);
            d.pipelinedAttention(false);  // split keys the only candidate: its verdict
            assertEquals(1, d.attentionKernel(qkv, 0, o, lse, n, heads, t, hd, Precision.FP16, () -> "t"));
            d.splitKeys(false);  // as -Donestep.cuda.splitKeys=false would, with the pipelined kernel back on
            d.pipelinedAttention(true);
            assertNotEquals(1, d.attentionKernel(qkv, 0, o, lse, n, heads, t, hd, Precision.FP16, () -> "t"),
                    "split keys ran although switched off");
            d.splitKeys(true);  // and back: the verdict holds again
            assertEquals(1, d.attentionKernel(qkv, 0, o, lse, n, heads, t, hd, Precision.FP16, () -> "t"));
        }
    }

    @Test
    void aChoicesFileTimedAnotherWayIsNotLoaded(@TempDir Path dir) throws Exception {
        EmulatedDeviceTest.require();
        Path f = dir.resolve("choices.tsv");
        int n = 1, heads = 2, t = 16, hd = 32;
        try (EmulatedDevice d = device(); DeviceArena a = new DeviceArena(d, "choice rules", 1 << 22)) {
            d.graphTiming(false);  // timed as launches, host time included
            long qkv = a.allocate(2L * n * t * 3 * heads * hd, "qkv"), o = a.allocate(2L * n * t * heads * hd, "o");
            long lse = a.allocate(4L * n * heads * t, "lse");
            zero(d, qkv, 2L * n * t * 3 * heads * hd);
            d.attentionKernel(qkv, 0, o, lse, n, heads, t, hd, Precision.FP16, () -> "t");
            d.saveChoices(f);
        }
        try (EmulatedDevice d = device()) {  // times graph replays: the launch-timed verdicts are not its own
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> d.loadChoices(f));
            assertTrue(e.getMessage().contains(f.getFileName().toString()), e.getMessage());
        }
        try (EmulatedDevice d = device()) {  // the same method loads it
            d.graphTiming(false);
            assertEquals(1, d.loadChoices(f));
        }
    }
}
