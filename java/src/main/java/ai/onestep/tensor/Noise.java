package ai.onestep.tensor;

import java.lang.foreign.MemorySegment;
import java.util.SplittableRandom;

/**
 * Reproducible Gaussian noise. Sample n of a batch draws from its own stream, seeded by (seed, first + n), so a
 * given seed gives the same image whatever the batch size, the batch split or the thread count.
 */
public final class Noise {
    private Noise() {
    }

    /** Fills {@code out} (N, ...) with N(0, 1) values; row n uses stream (seed, first + n). */
    public static void gaussian(Tensor out, long seed, long first) {
        int n = out.dim(0);
        long per = out.size() / Math.max(1, n);
        MemorySegment s = out.segment();
        for (int b = 0; b < n; b++) {
            SplittableRandom r = stream(seed, first + b);
            long base = b * per;
            for (long i = 0; i < per; i += 2) {
                // Box-Muller in float64: two independent normals per pair of uniforms.
                double u1 = 1.0 - r.nextDouble();
                double u2 = r.nextDouble();
                double rad = Math.sqrt(-2.0 * Math.log(u1));
                s.setAtIndex(Tensor.F32, base + i, (float) (rad * Math.cos(2 * Math.PI * u2)));
                if (i + 1 < per) {
                    s.setAtIndex(Tensor.F32, base + i + 1, (float) (rad * Math.sin(2 * Math.PI * u2)));
                }
            }
        }
    }

    /** An independent stream for (seed, index): SplittableRandom's mixing makes neighbouring seeds unrelated. */
    public static SplittableRandom stream(long seed, long index) {
        return new SplittableRandom(new SplittableRandom(seed).split().nextLong() ^ (index * 0x9E3779B97F4A7C15L));
    }
}
