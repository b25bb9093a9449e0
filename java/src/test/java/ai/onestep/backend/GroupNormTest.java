package ai.onestep.backend;

import static ai.onestep.backend.OpsTesting.CPU;
import static ai.onestep.backend.OpsTesting.CPU_VS_NAIVE;
import static ai.onestep.backend.OpsTesting.NAIVE;
import static ai.onestep.backend.OpsTesting.assertClose;
import static ai.onestep.backend.OpsTesting.randn;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.backend.naive.NaiveNorm;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;
import java.util.function.Function;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Group norm (+ scale/shift, + SiLU): cpu against the float64 oracle, the oracle against finite differences. */
class GroupNormTest {

    /** Everything one forward + backward call touches, with random inputs from one seed. */
    private static final class Case {
        final Tensor x, gamma, beta, scale, shift, dy;
        final int groups;
        final boolean silu;

        Case(TensorArena a, long seed, int n, int h, int w, int c, int groups, boolean scaleShift, boolean silu,
             float offset) {
            this.x = randn(a, seed, Layout.NHWC, n, h, w, c);
            if (offset != 0) {
                float[] v = x.toArray();
                for (int i = 0; i < v.length; i++) {
                    v[i] += offset;
                }
                x.copyFrom(v);
            }
            this.gamma = randn(a, seed + 1, c);
            this.beta = randn(a, seed + 2, c);
            this.scale = scaleShift ? randn(a, seed + 3, n, c) : null;
            this.shift = scaleShift ? randn(a, seed + 4, n, c) : null;
            this.dy = randn(a, seed + 5, Layout.NHWC, n, h, w, c);
            this.groups = groups;
            this.silu = silu;
        }

        int n() {
            return x.dim(0);
        }

        int c() {
            return x.dim(3);
        }
    }

    /** The outputs of one backend: forward y, mean, rstd; backward dx, dgamma, dbeta, dscale, dshift. */
    private record Result(Tensor y, Tensor mean, Tensor rstd, Tensor dx, Tensor dgamma, Tensor dbeta, Tensor dscale,
                          Tensor dshift) {
    }

    /**
     * Runs forward then backward on {@code ops}; the backward uses {@code statsFrom}'s statistics when given (so two
     * backends' backward passes see identical inputs). dgamma/dbeta start from {@code 0.5} to exercise accumulation.
     */
    private static Result run(Ops ops, TensorArena a, Case k, Result statsFrom) {
        float eps = 1e-5f;
        Tensor y = a.allocate(Layout.NHWC, k.x.shape());
        Tensor mean = a.allocate(k.n(), k.groups);
        Tensor rstd = a.allocate(k.n(), k.groups);
        ops.groupNorm(k.x, k.gamma, k.beta, k.scale, k.shift, k.groups, eps, k.silu, y, mean, rstd);
        Tensor m = statsFrom == null ? mean : statsFrom.mean;
        Tensor r = statsFrom == null ? rstd : statsFrom.rstd;
        Tensor dx = a.allocate(Layout.NHWC, k.x.shape()).fill(Float.NaN);
        Tensor dgamma = a.allocate(k.c()).fill(0.5f);
        Tensor dbeta = a.allocate(k.c()).fill(0.5f);
        Tensor dscale = k.scale == null ? null : a.allocate(k.n(), k.c()).fill(Float.NaN);
        Tensor dshift = k.scale == null ? null : a.allocate(k.n(), k.c()).fill(Float.NaN);
        ops.groupNormBackward(k.x, k.gamma, k.beta, k.scale, k.shift, k.groups, k.silu, m, r, k.dy, dx, dgamma, dbeta,
                dscale, dshift);
        return new Result(y, mean, rstd, dx, dgamma, dbeta, dscale, dshift);
    }

    private static void assertResultsClose(String what, Result cpu, Result ref, double tol) {
        assertClose(what + " y", cpu.y, ref.y, tol);
        assertClose(what + " mean", cpu.mean, ref.mean, tol);
        assertClose(what + " rstd", cpu.rstd, ref.rstd, tol);
        assertClose(what + " dx", cpu.dx, ref.dx, tol);
        // dgamma and dbeta started at 0.5: compare what the backward added, not the offset that hides errors.
        assertClose(what + " dgamma", minus(cpu.dgamma, 0.5f), minus(ref.dgamma, 0.5f), tol);
        assertClose(what + " dbeta", minus(cpu.dbeta, 0.5f), minus(ref.dbeta, 0.5f), tol);
        if (ref.dscale != null) {
            assertClose(what + " dscale", cpu.dscale, ref.dscale, tol);
            assertClose(what + " dshift", cpu.dshift, ref.dshift, tol);
        }
    }

    private static double[] minus(Tensor t, float v) {
        double[] d = t.toDoubleArray();
        for (int i = 0; i < d.length; i++) {
            d[i] -= v;
        }
        return d;
    }

    private static void assertClose(String what, Tensor actual, Tensor expected, double tol) {
        OpsTesting.assertClose(what, actual, expected, tol);
    }

    private static void assertClose(String what, double[] actual, double[] expected, double tol) {
        OpsTesting.assertClose(what, actual, expected, tol);
    }

    @ParameterizedTest(name = "n={0} {1}x{2}x{3} groups={4} scaleShift={5} silu={6}")
    @CsvSource({
        "1, 5, 7, 12, 3, false, false",     // ragged: 4 channels per group, 12 channels in one masked vector
        "2, 4, 4, 8, 4, true, true",
        "3, 3, 5, 48, 6, true, false",      // 8 channels per group, blocks of 16
        "2, 6, 6, 64, 32, false, true",     // the teacher's narrow groups (2 channels)
        "1, 7, 7, 128, 32, true, true",     // 4 channels per group, batch 1
        "2, 3, 3, 40, 2, true, true",       // a group (20) wider than a vector: masked tail inside a group
        "2, 9, 10, 6, 3, false, true",      // 90 pixels: more than one 64-pixel chunk, 2 channels
        "1, 20, 21, 40, 4, true, true",     // batch 1 split into slabs of chunks, the last ragged; a channel tail
        "5, 17, 17, 32, 8, false, false",   // 289 pixels, a batch of 5: whole samples or slabs by thread count
    })
    void cpuMatchesNaive(int n, int h, int w, int c, int groups, boolean scaleShift, boolean silu) {
        try (TensorArena a = new TensorArena()) {
            Case k = new Case(a, 11 * c + h, n, h, w, c, groups, scaleShift, silu, 0f);
            Result ref = run(NAIVE, a, k, null);
            Result cpu = run(CPU, a, k, ref);
            assertResultsClose("groupNorm cpu vs naive", cpu, ref, CPU_VS_NAIVE);
        }
    }

    /**
     * The concatenating norm (an up block's cat(h, skip) and norm1) on each host backend: cat is exactly the
     * naive concatenation, and y, mean and rstd are the naive group norm's of it, with groups that straddle the
     * a|b boundary.
     */
    @ParameterizedTest(name = "n={0} {1}x{2} ca={3} cb={4} groups={5}")
    @CsvSource({
        "2, 3, 5, 8, 4, 4",       // groups of 3 channels straddle channel 8
        "1, 4, 4, 64, 64, 32",    // the U-Net's 32 groups of 4
        "3, 2, 7, 6, 10, 4",      // groups of 4, one straddling
    })
    void concatenatingNormIsTheNormOfTheConcatenation(int n, int h, int w, int ca, int cb, int groups) {
        try (TensorArena ar = new TensorArena()) {
            Tensor a = randn(ar, 41, Layout.NHWC, n, h, w, ca), b = randn(ar, 42, Layout.NHWC, n, h, w, cb);
            Tensor gamma = randn(ar, 43, ca + cb), beta = randn(ar, 44, ca + cb);
            Tensor catRef = ar.allocate(Layout.NHWC, n, h, w, ca + cb);
            NAIVE.concatChannels(a, b, catRef);
            Tensor yRef = ar.allocate(Layout.NHWC, catRef.shape());
            Tensor mRef = ar.allocate(n, groups), rRef = ar.allocate(n, groups);
            NAIVE.groupNorm(catRef, gamma, beta, null, null, groups, 1e-5f, true, yRef, mRef, rRef);
            for (Ops ops : new Ops[] {CPU, NAIVE}) {
                Tensor cat = ar.allocate(Layout.NHWC, catRef.shape()).fill(Float.NaN);
                Tensor y = ar.allocate(Layout.NHWC, catRef.shape()).fill(Float.NaN);
                Tensor m = ar.allocate(n, groups), r = ar.allocate(n, groups);
                ops.groupNormConcat(a, b, gamma, beta, groups, 1e-5f, true, cat, y, m, r);
                String what = ops.getClass().getSimpleName() + " groupNormConcat";
                assertArrayEquals(catRef.toArray(), cat.toArray(), what + ": cat is the concatenation");
                assertClose(what + " y", y, yRef, CPU_VS_NAIVE);
                assertClose(what + " mean", m, mRef, CPU_VS_NAIVE);
                assertClose(what + " rstd", r, rRef, CPU_VS_NAIVE);
            }
        }
    }

    @Test
    void concatenatingNormRefusesOverlapsAndMismatchedShapes() {
        try (TensorArena ar = new TensorArena()) {
            Tensor a = randn(ar, 1, Layout.NHWC, 1, 2, 2, 4), b = randn(ar, 2, Layout.NHWC, 1, 2, 2, 4);
            Tensor g = randn(ar, 3, 8), be = randn(ar, 4, 8), m = ar.allocate(1, 2), r = ar.allocate(1, 2);
            Tensor cat = ar.allocate(Layout.NHWC, 1, 2, 2, 8), y = ar.allocate(Layout.NHWC, 1, 2, 2, 8);
            TensorException e = assertThrows(TensorException.class,
                    () -> CPU.groupNormConcat(a, b, g, be, 2, 1e-5f, true, cat, cat, m, r));
            assertTrue(e.getMessage().contains("groupNormSiluConcat: y [1, 2, 2, 8]") && e.getMessage().contains("overlaps cat"),
                    e.getMessage());
            Tensor b3 = randn(ar, 5, Layout.NHWC, 1, 2, 3, 4);
            e = assertThrows(TensorException.class, () -> CPU.groupNormConcat(a, b3, g, be, 2, 1e-5f, false, cat, y, m, r));
            assertTrue(e.getMessage().startsWith("groupNormConcat:") && e.getMessage().contains("[1, 2, 3, 4]"),
                    e.getMessage());
        }
    }

    /** A large mean against a unit spread: E[x^2] - E[x]^2 in float would lose every digit of the variance. */
    @ParameterizedTest(name = "offset {0}")
    @CsvSource({"100", "10000"})
    void largeMeanIsStable(float offset) {
        try (TensorArena a = new TensorArena()) {
            Case k = new Case(a, 5, 2, 8, 8, 32, 8, true, true, offset);
            Result ref = run(NAIVE, a, k, null);
            Result cpu = run(CPU, a, k, ref);
            assertResultsClose("groupNorm x = " + offset + " + N(0,1)", cpu, ref, CPU_VS_NAIVE);
            float[] r = cpu.rstd.toArray();
            for (float v : r) {
                // var ~ 1 so rstd ~ 1; a catastrophic cancellation gives 0 variance (rstd ~ 316) or NaN.
                assertTrue(v > 0.5f && v < 2f, "rstd " + v + " for x = " + offset + " + N(0,1)");
            }
        }
    }

    @Test
    void bitIdenticalForAnyThreadCount() {
        try (TensorArena a = new TensorArena()) {
            Case k = new Case(a, 21, 3, 5, 7, 64, 32, true, true, 0f);
            Result one = run(new CpuOps(1), a, k, null);
            for (int threads : new int[] {2, 3}) {
                Result r = run(new CpuOps(threads), a, k, null);
                String t = threads + " threads";
                assertArrayEquals(one.y.toArray(), r.y.toArray(), "y, " + t);
                assertArrayEquals(one.mean.toArray(), r.mean.toArray(), "mean, " + t);
                assertArrayEquals(one.rstd.toArray(), r.rstd.toArray(), "rstd, " + t);
                assertArrayEquals(one.dx.toArray(), r.dx.toArray(), "dx, " + t);
                assertArrayEquals(one.dgamma.toArray(), r.dgamma.toArray(), "dgamma, " + t);
                assertArrayEquals(one.dbeta.toArray(), r.dbeta.toArray(), "dbeta, " + t);
                assertArrayEquals(one.dscale.toArray(), r.dscale.toArray(), "dscale, " + t);
                assertArrayEquals(one.dshift.toArray(), r.dshift.toArray(), "dshift, " + t);
            }
        }
    }

    /**
     * The schedule depends on the thread count (whole samples per task for a large enough batch, else slabs of
     * pixels of one sample, the passes as parallel sweeps, the second split over channels too where slabs are fewer
     * than threads); the bits must not. Batch 1 and 5 with 1 to 3 threads cover both schedules, several slabs per
     * sample, a ragged last chunk, a masked channel tail, and one slab split over channels (9x9, and 7x7 with the
     * masked tail in a part of its own).
     */
    @ParameterizedTest(name = "n={0} {1}x{2}x{3} groups={4}")
    @CsvSource({"1, 20, 21, 40, 4", "5, 17, 17, 64, 32", "1, 9, 9, 128, 32", "1, 7, 7, 40, 4"})
    void bitIdenticalAcrossSchedules(int n, int h, int w, int c, int groups) {
        try (TensorArena a = new TensorArena()) {
            for (boolean silu : new boolean[] {true, false}) {
                Case k = new Case(a, 31 + c, n, h, w, c, groups, true, silu, 0f);
                Result one = run(new CpuOps(1), a, k, null);
                for (int threads : new int[] {2, 3}) {
                    Result r = run(new CpuOps(threads), a, k, null);
                    String t = threads + " threads, silu " + silu;
                    assertArrayEquals(one.y.toArray(), r.y.toArray(), "y, " + t);
                    assertArrayEquals(one.mean.toArray(), r.mean.toArray(), "mean, " + t);
                    assertArrayEquals(one.rstd.toArray(), r.rstd.toArray(), "rstd, " + t);
                    assertArrayEquals(one.dx.toArray(), r.dx.toArray(), "dx, " + t);
                    assertArrayEquals(one.dgamma.toArray(), r.dgamma.toArray(), "dgamma, " + t);
                    assertArrayEquals(one.dbeta.toArray(), r.dbeta.toArray(), "dbeta, " + t);
                    assertArrayEquals(one.dscale.toArray(), r.dscale.toArray(), "dscale, " + t);
                }
            }
        }
    }

    /**
     * A sample whose first 64 pixels (the chunk the shift K is taken from) sit 50 sigma away from the rest, so K is
     * far from the group mean. The shifted sums stay well conditioned: K can be at most sqrt(pixels / 64) standard
     * deviations from the mean (Cauchy-Schwarz over that chunk), here 1.5.
     */
    @Test
    void shiftFarFromTheMeanIsStable() {
        try (TensorArena a = new TensorArena()) {
            Case k = new Case(a, 7, 2, 12, 12, 32, 8, false, true, 0f);
            float[] v = k.x.toArray();
            for (int i = 0; i < 64 * 32; i++) {
                v[i] += 50f;        // the first 64 pixels of sample 0 (its first chunk) shifted by 50 sigma
            }
            k.x.copyFrom(v);
            Result ref = run(NAIVE, a, k, null);
            Result cpu = run(CPU, a, k, ref);
            assertResultsClose("groupNorm with an outlying first chunk", cpu, ref, CPU_VS_NAIVE);
        }
    }

    /** dgamma/dbeta accumulate (parameters); dx, dscale, dshift are assigned (they started as NaN in run()). */
    @Test
    void parameterGradientsAccumulateInputGradientsAreAssigned() {
        for (Ops ops : new Ops[] {NAIVE, CPU}) {
            try (TensorArena a = new TensorArena()) {
                Case k = new Case(a, 31, 2, 4, 4, 16, 4, true, true, 0f);
                Result r = run(ops, a, k, null);
                assertTrue(r.dx.allFinite() && r.dscale.allFinite() && r.dshift.allFinite(),
                        ops.name() + ": NaN in dx/dscale/dshift was not overwritten");
                // The same call again adds the same increment once more: 0.5 + 2 inc = 2 (0.5 + inc) - 0.5.
                Tensor dg2 = a.copyOf(r.dgamma);
                Tensor db2 = a.copyOf(r.dbeta);
                ops.groupNormBackward(k.x, k.gamma, k.beta, k.scale, k.shift, k.groups, k.silu, r.mean, r.rstd, k.dy,
                        null, dg2, db2, null, null);
                double[] expectG = minus(r.dgamma, 0.5f);
                double[] expectB = minus(r.dbeta, 0.5f);
                for (int i = 0; i < expectG.length; i++) {
                    expectG[i] = 2 * expectG[i];
                    expectB[i] = 2 * expectB[i];
                }
                assertClose(ops.name() + " dgamma accumulates", minus(dg2, 0.5f), expectG, 1e-6);
                assertClose(ops.name() + " dbeta accumulates", minus(db2, 0.5f), expectB, 1e-6);
            }
        }
    }

    /** Requesting only some gradients (the rest null) gives the same values as requesting all. */
    @Test
    void nullGradientsAreSkipped() {
        try (TensorArena a = new TensorArena()) {
            Case k = new Case(a, 41, 2, 3, 3, 8, 2, true, true, 0f);
            Result full = run(CPU, a, k, null);
            Tensor dx = a.allocate(Layout.NHWC, k.x.shape());
            Tensor dshift = a.allocate(k.n(), k.c());
            CPU.groupNormBackward(k.x, k.gamma, k.beta, k.scale, k.shift, k.groups, k.silu, full.mean, full.rstd, k.dy,
                    dx, null, null, null, dshift);
            assertArrayEquals(full.dx.toArray(), dx.toArray(), "dx alone");
            assertArrayEquals(full.dshift.toArray(), dshift.toArray(), "dshift alone");
        }
    }

    /**
     * The time-embedding add fused in front (ResnetBlock2D's norm2(h + time_emb_proj(temb)) at inference): the CPU
     * against the oracle (the sum formed in double), and exactly the unfused ops (addPerChannel, then groupNorm).
     * In place too (y = x), as the CPU path normalizes the sum where it stored it.
     */
    @ParameterizedTest(name = "n={0} {1}x{2}x{3} groups={4} silu={5}")
    @CsvSource({
        "1, 5, 7, 12, 3, true",
        "2, 4, 4, 64, 32, true",
        "3, 3, 5, 40, 4, false",
    })
    void addedInFrontMatchesNaiveAndTheUnfusedOps(int n, int h, int w, int c, int groups, boolean silu) {
        try (TensorArena a = new TensorArena()) {
            Case k = new Case(a, 7 * c + h, n, h, w, c, groups, false, silu, 0f);
            Tensor add = randn(a, 99, n, c);
            Tensor[] ref = groupNormAdded(NAIVE, a, k, add, false);
            Tensor[] cpu = groupNormAdded(CPU, a, k, add, false);
            for (int i = 0; i < 3; i++) {
                assertClose("groupNorm(x + add) cpu vs naive, output " + i, cpu[i], ref[i], CPU_VS_NAIVE);
            }
            Tensor sum = a.allocate(Layout.NHWC, k.x.shape());
            CPU.addPerChannel(k.x, add, sum);
            Tensor y = a.allocate(Layout.NHWC, k.x.shape()), mean = a.allocate(n, groups), rstd = a.allocate(n, groups);
            CPU.groupNorm(sum, k.gamma, k.beta, null, null, groups, 1e-5f, silu, y, mean, rstd);
            assertArrayEquals(y.toArray(), cpu[0].toArray(), "the unfused ops' bits");
            assertArrayEquals(rstd.toArray(), cpu[2].toArray(), "the unfused ops' rstd");
            Tensor[] inPlace = groupNormAdded(CPU, a, k, add, true);
            assertArrayEquals(y.toArray(), inPlace[0].toArray(), "y = x");
            // The oracle's sum really is added: without it the statistics differ.
            CPU.groupNorm(k.x, k.gamma, k.beta, null, null, groups, 1e-5f, silu, y, mean, rstd);
            assertTrue(!java.util.Arrays.equals(y.toArray(), cpu[0].toArray()), "add changed nothing");
            TensorException e = assertThrows(TensorException.class, () -> CPU.groupNorm(k.x, randn(a, 5, n, c + 1),
                    k.gamma, k.beta, null, null, groups, 1e-5f, silu, y, mean, rstd));
            assertTrue(e.getMessage().contains("add"), e.getMessage());
        }
    }

    /** y, mean, rstd of groupNorm(x + add); with {@code inPlace}, y is a copy of x normalized where it lies. */
    private static Tensor[] groupNormAdded(Ops ops, TensorArena a, Case k, Tensor add, boolean inPlace) {
        Tensor x = k.x;
        Tensor y = a.allocate(Layout.NHWC, x.shape());
        if (inPlace) {
            y.copyFrom(x.toArray());
            x = y;
        }
        Tensor mean = a.allocate(k.n(), k.groups), rstd = a.allocate(k.n(), k.groups);
        ops.groupNorm(x, add, k.gamma, k.beta, null, null, k.groups, 1e-5f, k.silu, y, mean, rstd);
        return new Tensor[] {y, mean, rstd};
    }

    @Test
    void badInputNamesTheOp() {
        try (TensorArena a = new TensorArena()) {
            Tensor x = randn(a, 1, Layout.NHWC, 1, 2, 2, 6);
            Tensor g = randn(a, 2, 6);
            Tensor y = a.allocate(Layout.NHWC, 1, 2, 2, 6);
            TensorException e = assertThrows(TensorException.class, () -> CPU.groupNorm(x, g, g, null, null, 4,
                    1e-5f, true, y, a.allocate(1, 4), a.allocate(1, 4)));
            assertTrue(e.getMessage().startsWith("groupNormSilu:") && e.getMessage().contains("4 groups"),
                    e.getMessage());
            Tensor s = randn(a, 3, 1, 6);
            TensorException e2 = assertThrows(TensorException.class, () -> CPU.groupNorm(x, g, g, s, null, 2,
                    1e-5f, false, y, a.allocate(1, 2), a.allocate(1, 2)));
            assertTrue(e2.getMessage().startsWith("groupNorm:"), e2.getMessage());
        }
    }

    // ------------------------------------------------------------------------------------------------
    // The oracle's backward against float64 central finite differences
    // ------------------------------------------------------------------------------------------------

    @ParameterizedTest(name = "scaleShift={0} silu={1}")
    @CsvSource({"false, false", "false, true", "true, false", "true, true"})
    void naiveBackwardMatchesFiniteDifferences(boolean scaleShift, boolean silu) {
        int n = 2, hw = 6, c = 6, groups = 3;
        double eps = 1e-5;
        double[] x = OpsTesting.randn(1, n * hw * c);
        double[] gamma = OpsTesting.randn(2, c);
        double[] beta = OpsTesting.randn(3, c);
        double[] scale = scaleShift ? OpsTesting.randn(4, n * c) : null;
        double[] shift = scaleShift ? OpsTesting.randn(5, n * c) : null;
        double[] dir = OpsTesting.randn(6, n * hw * c);
        // L = sum(y * dir): its gradient with respect to y is dir.
        Function<double[][], Double> loss = p -> {
            double[] y = new double[x.length];
            NaiveNorm.groupNorm(p[0], n, hw, c, p[1], p[2], p[3], p[4], groups, eps, silu, y, new double[n * groups],
                    new double[n * groups]);
            return OpsTesting.dot(y, dir);
        };
        double[][] params = {x, gamma, beta, scale, shift};
        double[] mean = new double[n * groups];
        double[] rstd = new double[n * groups];
        NaiveNorm.groupNorm(x, n, hw, c, gamma, beta, scale, shift, groups, eps, silu, new double[x.length], mean,
                rstd);
        double[] dx = new double[x.length];
        double[] dgamma = new double[c];
        double[] dbeta = new double[c];
        double[] dscale = scaleShift ? new double[n * c] : null;
        double[] dshift = scaleShift ? new double[n * c] : null;
        NaiveNorm.groupNormBackward(x, n, hw, c, gamma, beta, scale, shift, groups, silu, mean, rstd, dir, dx, dgamma,
                dbeta, dscale, dshift);
        double[][] analytic = {dx, dgamma, dbeta, dscale, dshift};
        String[] names = {"dx", "dgamma", "dbeta", "dscale", "dshift"};
        for (int i = 0; i < params.length; i++) {
            if (params[i] == null) {
                continue;
            }
            int which = i;
            double[] fd = OpsTesting.finiteDifference(params[i], v -> {
                double[][] q = params.clone();
                q[which] = v;
                return loss.apply(q);
            }, 1e-6);
            assertClose("groupNorm " + names[i] + " vs finite differences", analytic[i], fd, 1e-6);
        }
    }
}
