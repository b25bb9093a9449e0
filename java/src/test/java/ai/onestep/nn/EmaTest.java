package ai.onestep.nn;

import static ai.onestep.backend.OpsTesting.CPU;
import static ai.onestep.backend.OpsTesting.NAIVE;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import ai.onestep.backend.Ops;
import ai.onestep.backend.OpsTesting;
import org.junit.jupiter.api.Test;

class EmaTest {
    private static ParameterSet model() {
        ParameterSet ps = new ParameterSet();
        ps.add("a.weight", 3, 7).value().copyFrom(OpsTesting.randn(1, 21));
        ps.add("b.bias", 40).value().copyFrom(OpsTesting.randn(2, 40));
        return ps;
    }

    @Test
    void updateAveragesTowardsTheLiveWeights() {
        for (Ops ops : new Ops[] {NAIVE, CPU}) {
            try (ParameterSet ps = model(); Ema ema = new Ema(ops, ps)) {
                float[] start = ps.get("a.weight").value().toArray();
                assertArrayEquals(start, ema.shadow().get("a.weight").value().toArray(), "starts as a copy");
                float[] live = toFloat(OpsTesting.randn(3, 21));
                ps.get("a.weight").value().copyFrom(live);
                float mu = 0.9f;
                ema.update(mu);
                float[] got = ema.shadow().get("a.weight").value().toArray();
                for (int i = 0; i < got.length; i++) {
                    assertEquals(0.9 * start[i] + 0.1 * live[i], got[i], 1e-6, ops.name() + " after one update");
                }
                // k updates against fixed live weights: shadow = live + mu^k (start - live).
                for (int k = 2; k <= 20; k++) {
                    ema.update(mu);
                }
                got = ema.shadow().get("a.weight").value().toArray();
                double decay = Math.pow(mu, 20);
                for (int i = 0; i < got.length; i++) {
                    assertEquals(live[i] + decay * (start[i] - live[i]), got[i], 1e-5, ops.name() + " after 20");
                }
                assertEquals(20, ema.updates());
            }
        }
    }

    private static float[] toFloat(double[] d) {
        float[] f = new float[d.length];
        for (int i = 0; i < d.length; i++) {
            f[i] = (float) d[i];
        }
        return f;
    }

    @Test
    void swapExchangesExactlyAndCopyToWritesTheAverage() {
        try (ParameterSet ps = model(); Ema ema = new Ema(CPU, ps)) {
            ps.get("b.bias").value().copyFrom(OpsTesting.randn(9, 40));
            ema.update(0.5f);
            float[] live = ps.get("b.bias").value().toArray();
            float[] avg = ema.shadow().get("b.bias").value().toArray();
            ema.swap();
            assertArrayEquals(avg, ps.get("b.bias").value().toArray());
            assertArrayEquals(live, ema.shadow().get("b.bias").value().toArray());
            ema.swap();
            assertArrayEquals(live, ps.get("b.bias").value().toArray());
            assertArrayEquals(avg, ema.shadow().get("b.bias").value().toArray());
            try (ParameterSet export = ps.mirror(false)) {
                ema.copyTo(export);
                assertArrayEquals(avg, export.get("b.bias").value().toArray());
            }
        }
    }
}
