package ai.onestep.backend.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** The peak's loop computes what its FLOP count says it does: every chain and lane, every round. */
class FmaPeakTest {
    @Test
    void chainsMatchTheScalarFmaRecurrenceBitForBit() {
        for (long rounds : new long[] {0, 1, 7, 1000}) {
            assertArrayEquals(FmaPeak.chainsReference(rounds), FmaPeak.chains(rounds), "rounds " + rounds);
        }
        // Once compiled too (the tier that is timed): enough calls for C2.
        float[] last = null;
        for (int i = 0; i < 20_000; i++) {
            last = FmaPeak.chains(64);
        }
        assertArrayEquals(FmaPeak.chainsReference(64), last);
    }

    @Test
    void everyChainAndLaneStartsApart() {
        // A loop that dropped a chain, or a lane, and copied another's result would still match a reference with
        // equal starting values; distinct ones make it fail.
        float[] start = FmaPeak.chainsReference(0);
        assertEquals(FmaPeak.ACCUMULATORS * FmaPeak.S.length(), start.length);
        assertEquals(start.length, java.util.Arrays.stream(box(start)).distinct().count());
    }

    @Test
    void measuresAPositiveRateAndCountsFlops() {
        FmaPeak.Result r = FmaPeak.measure(2, 5);
        assertEquals(2, r.threads());
        assertTrue(r.gflops() > 0 && Double.isFinite(r.gflops()), r.toString());
        assertTrue(r.perThreadGflops() > 0 && Double.isFinite(r.perThreadGflops()), r.toString());
        assertEquals(2.0 * 10 * FmaPeak.ACCUMULATORS * FmaPeak.S.length(), FmaPeak.flops(10));
        assertThrows(IllegalArgumentException.class, () -> FmaPeak.measure(0, 5));
    }

    private static Float[] box(float[] v) {
        Float[] out = new Float[v.length];
        for (int i = 0; i < v.length; i++) {
            out[i] = v[i];
        }
        return out;
    }
}
