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
