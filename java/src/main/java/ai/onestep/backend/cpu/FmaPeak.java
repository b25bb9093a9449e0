package ai.onestep.backend.cpu;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CyclicBarrier;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * This machine's FP32 fused multiply-add peak, measured: the floor that benchmarks divide by (shared/BENCHMARKING.md,
 * "always state the floor"). A constant would be wrong on the next machine: the project's machine was 2 Zen 5 cores
 * at 261 GFLOP/s each on 2026-11-25 (an AVX-512 FMA loop in C, shared/ENVIRONMENT.md), and 2 Xeon cores (family 6
 * model 207, KVM) on 2026-11-28, where the same kind of loop in C made 148-167 a core and this one 112-143 (one
 * thread) and 251-269 (two): both "2 cores, AVX-512". This is the peak a Java kernel can reach, a few percent under
 * the C loop's.
 *
 * <p>Each thread runs {@link #ACCUMULATORS} independent chains {@code a = a * m + c} on whole vectors of the preferred
 * species, with no loads or stores: enough chains in flight to cover the FMA latency on both ports (4 cycles x 2
 * ports needs 8), so the loop runs at the core's FMA issue rate. Threads start together at a barrier; the rate is
 * the FLOPs of all of them over the wall time of the slowest, the best of a few rounds.
 */
public final class FmaPeak {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    /** Independent chains a thread keeps in registers (32 vector registers on AVX-512, 16 on AVX2: 12 fit both). */
    public static final int ACCUMULATORS = 12;
    /** The chains' multiplier and addend: the chains converge to c / (1 - m) = 1, finite and normal throughout. */
    static final float M = 0.99951171875f, C = 1f - M;

    private FmaPeak() {
    }

    /** A measurement: the rate of all threads together and of one thread alone, GFLOP/s. */
    public record Result(int threads, double gflops, double perThreadGflops, int vectorBits) {
        @Override
        public String toString() {
            return String.format(java.util.Locale.ROOT, "%.0f GFLOP/s on %d thread(s) (%.0f on one; %d-bit FMA)",
                    gflops, threads, perThreadGflops, vectorBits);
        }
    }

    /** FLOPs of {@link #chains} with the given rounds: a multiply-add counts 2. */
    public static double flops(long rounds) {
        return 2.0 * rounds * ACCUMULATORS * S.length();
    }

    /**
     * Runs the chains for {@code rounds} rounds from their fixed starting values and returns the final values,
     * chain-major ({@code ACCUMULATORS x S.length()}); the result keeps the JIT from removing the loop, and the tests
     * check it against {@link #chainsReference}.
     */
    public static float[] chains(long rounds) {
        // The chains are twelve locals, written out, start to end: gathered into an array after the loop (to store
        // them in one loop) they escape, C2 boxes them inside the loop too, and it runs at ~2 GFLOP/s instead of
        // ~150 (measured on 2026-11-28).
        FloatVector lane = FloatVector.fromArray(S, LANES, 0);
        FloatVector a0 = lane.add(chainTerm(0)), a1 = lane.add(chainTerm(1)), a2 = lane.add(chainTerm(2));
        FloatVector a3 = lane.add(chainTerm(3)), a4 = lane.add(chainTerm(4)), a5 = lane.add(chainTerm(5));
        FloatVector a6 = lane.add(chainTerm(6)), a7 = lane.add(chainTerm(7)), a8 = lane.add(chainTerm(8));
        FloatVector a9 = lane.add(chainTerm(9)), a10 = lane.add(chainTerm(10));
        FloatVector a11 = lane.add(chainTerm(11));
        FloatVector m = FloatVector.broadcast(S, M), c = FloatVector.broadcast(S, C);
        for (long r = 0; r < rounds; r++) {
            a0 = a0.fma(m, c);
            a1 = a1.fma(m, c);
            a2 = a2.fma(m, c);
            a3 = a3.fma(m, c);
            a4 = a4.fma(m, c);
            a5 = a5.fma(m, c);
            a6 = a6.fma(m, c);
            a7 = a7.fma(m, c);
            a8 = a8.fma(m, c);
            a9 = a9.fma(m, c);
            a10 = a10.fma(m, c);
            a11 = a11.fma(m, c);
        }
        float[] out = new float[ACCUMULATORS * S.length()];
        int n = S.length();
        a0.intoArray(out, 0);
        a1.intoArray(out, n);
        a2.intoArray(out, 2 * n);
        a3.intoArray(out, 3 * n);
        a4.intoArray(out, 4 * n);
        a5.intoArray(out, 5 * n);
        a6.intoArray(out, 6 * n);
        a7.intoArray(out, 7 * n);
        a8.intoArray(out, 8 * n);
        a9.intoArray(out, 9 * n);
        a10.intoArray(out, 10 * n);
        a11.intoArray(out, 11 * n);
        return out;
    }

    /** {@link #chains} one lane at a time with {@link Math#fma(float, float, float)}: the same roundings. */
    public static float[] chainsReference(long rounds) {
        float[] out = new float[ACCUMULATORS * S.length()];
        for (int i = 0; i < out.length; i++) {
            float a = startValue(i / S.length(), i % S.length());
            for (long r = 0; r < rounds; r++) {
                a = Math.fma(a, M, C);
            }
            out[i] = a;
        }
        return out;
    }

    /**
     * Chain i's lane l starts at a distinct value in (0, 2), so the lanes and chains compute different things: a
     * lane's term plus a chain's, each a multiple of 2^-10, so the sum is exact whichever way it is formed.
     */
    static float startValue(int chain, int lane) {
        return LANES[lane] + chainTerm(chain);
    }

    private static float chainTerm(int chain) {
        return (chain + 1) / 16f;
    }

    private static final float[] LANES = new float[S.length()];

    static {
        for (int l = 0; l < LANES.length; l++) {
            LANES[l] = (l + 1) / 1024f;
        }
    }

    /**
     * Measures the peak on {@code threads} threads (and on one, for the per-core figure), taking about {@code millis}
     * milliseconds a measurement, best of three each.
     */
    public static Result measure(int threads, long millis) {
        if (threads < 1) {
            throw new IllegalArgumentException("FmaPeak: threads must be at least 1, got " + threads);
        }
        // Warm-up: enough short calls for C2 to compile chains as a whole method before anything is timed, then
        // rounds chosen so that a call takes ~millis.
        for (int i = 0; i < 20_000; i++) {
            sink(chains(64));
        }
        long rounds = 1 << 14;
        long took;
        do {
            rounds *= 2;
            long t0 = System.nanoTime();
            sink(chains(rounds));
            took = System.nanoTime() - t0;
        } while (took < 20_000_000L && rounds < (1L << 40));
        rounds = Math.max(1, (long) (rounds * (millis * 1e6 / took)));
        double one = best(1, rounds);
        double all = threads == 1 ? one : best(threads, rounds);
        return new Result(threads, all, one, S.vectorBitSize());
    }

    private static double best(int threads, long rounds) {
        double best = 0;
        for (int trial = 0; trial < 3; trial++) {
            best = Math.max(best, rate(threads, rounds));
        }
        return best;
    }

    /** GFLOP/s of {@code threads} threads each running {@code rounds} rounds, started together. */
    private static double rate(int threads, long rounds) {
        CyclicBarrier start = new CyclicBarrier(threads + 1);
        List<Thread> workers = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            Thread w = Thread.ofPlatform().daemon().name("fma-peak-" + t).unstarted(() -> {
                try {
                    start.await();
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
                sink(chains(rounds));
            });
            w.start();
            workers.add(w);
        }
        try {
            start.await();
            long t0 = System.nanoTime();
            for (Thread w : workers) {
                w.join();
            }
            long took = System.nanoTime() - t0;
            return threads * flops(rounds) / took;
        } catch (Exception e) {
            throw new IllegalStateException("FmaPeak: a measuring thread failed", e);
        }
    }

    private static volatile float sunk;

    private static void sink(float[] v) {
        sunk += v[0] + v[v.length - 1];
    }
}
