package ai.onestep.backend.cpu;

import ai.onestep.tensor.Tensor;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Group norm (Wu & He 2018) with the ResnetBlock2D fusions (affine, time-embedding scale/shift, SiLU) and SiLU on
 * the CPU; the elementwise ops, losses and embeddings live in {@link PointwiseKernels}.
 *
 * <p>Layout of the work: a sample's NHWC data is one contiguous run of pixels, each pixel C contiguous channels.
 * The kernels walk it in fixed chunks of {@link #CHUNK} pixels (at most 32 KB for C = 128, so a chunk stays in L1)
 * and, inside a chunk, one vector of channels at a time down the chunk's pixels, so every channel vector keeps its
 * sums and its per-channel coefficients in registers and main memory sees one sequential stream. The forward pass
 * is one statistics pass and one fused normalize / affine / scale-shift / SiLU pass (as in TensorRT's group-norm
 * plugin); the backward pass is one reduction pass and one dx pass. With at least {@link #SAMPLES_PER_THREAD}
 * samples per thread a task is a whole sample, both passes back to back while the sample (at most 200 KB at the
 * teacher's shapes) is still in L2; a smaller batch (sampling runs batch 1) is cut into slabs of {@link #SLAB}
 * chunks so that every thread gets work, with the two passes as two parallel sweeps.
 *
 * <p>Determinism: every reduction is cut at the same chunk boundaries whatever the schedule: a chunk's sums run in
 * float vector registers (so no float accumulator ever holds more than CHUNK terms), are stored per chunk, and
 * are then added in double in chunk order. Which thread ran a chunk, and whether the sample was one task or many,
 * does not change a bit, so the results are identical for any thread count.
 *
 * <p>Statistics in one pass: the sums are of {@code d = x - K} and {@code d^2} with a per-channel shift K, the mean
 * of the sample's first chunk (the "shifted data" algorithm; Chan, Golub & LeVeque 1983). With K near the mean the
 * sum of squares does not cancel catastrophically ({@code x = 10000 + N(0,1)} loses nothing: d is formed exactly),
 * unlike the textbook {@code E[x^2] - E[x]^2}; the per-channel (mean, M2) pairs are merged into the group's in
 * double with Chan's pairwise update. The normalization subtracts the mean split into two floats (hi + lo), so
 * inputs with a large mean lose nothing to the rounding of the mean to float either.
 */
final class CpuNorm {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    /** Pixels per partial sum (and per unit of work): bounds float round-off, and a chunk's data fits L1. */
    private static final int CHUNK = 64;
    /**
     * Chunks per task when the batch is split below whole samples: 128 pixels, so a 14x14 map still gives two tasks
     * and a 28x28 map seven (balanced within one chunk on two threads).
     */
    private static final int SLAB = 2;
    /** Samples per thread from which a task is a whole sample (both passes while it is in L2). */
    private static final int SAMPLES_PER_THREAD = 4;

    private final CpuPool pool;

    CpuNorm(CpuPool pool) {
        this.pool = pool;
    }

    /**
     * One group-norm call split into the three steps the schedule runs: {@code reduce} adds up a range of a
     * sample's chunks (into per-chunk slots), {@code finish} turns a sample's sums into per-channel coefficients, and
     * {@code apply} writes a range of a sample's chunks. {@code prepare} runs before any reduce of the sample.
     */
    private interface Passes {
        void prepare(int nb);

        void reduce(int nb, int chunk0, int chunk1);

        void finish(int nb);

        /** Writes chunks [chunk0, chunk1) of sample nb, channels [c0, c1) (c0 a multiple of L). */
        void apply(int nb, int chunk0, int chunk1, int c0, int c1);

        /** Channels. */
        int channels();
    }

    /**
     * Runs the passes for {@code n} samples of {@code chunks} chunks: whole samples per task when there are enough
     * of them, else slabs of SLAB chunks in two parallel sweeps (the second also split over channels where slabs
     * are fewer than threads). Either way each chunk is reduced and each element applied by the same code with the
     * same inputs, so the schedule (chosen from the thread count) does not change the result.
     */
    private void schedule(int n, int chunks, Passes p) {
        if (n >= SAMPLES_PER_THREAD * pool.threads()) {
            pool.parallelFor(n, nb -> {
                p.prepare(nb);
                p.reduce(nb, 0, chunks);
                p.finish(nb);
                p.apply(nb, 0, chunks, 0, p.channels());
            });
            return;
        }
        int slabs = (chunks + SLAB - 1) / SLAB;
        for (int nb = 0; nb < n; nb++) {
            p.prepare(nb);
        }
        pool.parallelFor(n * slabs, t -> {
            int s = t % slabs;
            p.reduce(t / slabs, s * SLAB, Math.min(chunks, s * SLAB + SLAB));
        });
        for (int nb = 0; nb < n; nb++) {
            p.finish(nb);
        }
        // The normalization is elementwise once the statistics are known: where there are fewer slabs than
        // threads (a 7x7 map at batch 1 is one chunk), each slab's channels are split too, in whole vectors.
        int c = p.channels(), vectors = (c + L - 1) / L;
        int parts = Math.min(vectors, Math.ceilDiv(pool.threads(), n * slabs));
        int perPart = Math.ceilDiv(vectors, parts) * L;
        pool.parallelFor(n * slabs * parts, t -> {
            int part = t % parts, s = t / parts % slabs;
            p.apply(t / parts / slabs, s * SLAB, Math.min(chunks, s * SLAB + SLAB), part * perPart,
                    Math.min(c, part * perPart + perPart));
        });
    }

    // ------------------------------------------------------------------------------------------------
    // Forward
    // ------------------------------------------------------------------------------------------------

    void groupNorm(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, float eps,
                   boolean silu, Tensor y, Tensor mean, Tensor rstd) {
        Forward f = new Forward(x, gamma, beta, scale, shift, groups, eps, silu, y, mean, rstd);
        schedule(f.n, f.chunks, f);
    }

    /** The forward pass's per-call state; per-channel arrays are indexed (sample, channel). */
    private static final class Forward implements Passes {
        final int n, hw, c, groups, chunks;
        final float eps;
        final boolean silu;
        final MemorySegment xs, ys, ms, rs;
        final float[] gamma, beta, scale, shift;
        /** Per (sample, channel): the shift K, then the normalization's mHi, mLo, a and b. */
        final float[] k, mHi, mLo, a, b;
        /**
         * Per sample, per chunk: C sums of d, then C sums of d^2. Allocated by prepare, so that with whole samples
         * per task each task allocates (and the JVM zeroes) its own small slice in parallel.
         */
        final float[][] part;

        Forward(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, float eps, boolean silu,
                Tensor y, Tensor mean, Tensor rstd) {
            n = x.dim(0);
            hw = x.dim(1) * x.dim(2);
            c = x.dim(3);
            this.groups = groups;
            this.eps = eps;
            this.silu = silu;
            chunks = (hw + CHUNK - 1) / CHUNK;
            xs = x.segment();
            ys = y.segment();
            ms = mean.segment();
            rs = rstd.segment();
            this.gamma = gamma.toArray();
            this.beta = beta.toArray();
            this.scale = scale == null ? null : scale.toArray();
            this.shift = shift == null ? null : shift.toArray();
            k = new float[n * c];
            mHi = new float[n * c];
            mLo = new float[n * c];
            a = new float[n * c];
            b = new float[n * c];
            part = new float[n][];
        }

        @Override
        public int channels() {
            return c;
        }

        /** K = the mean of the first chunk's pixels, per channel (any value near the mean will do). */
        @Override
        public void prepare(int nb) {
            part[nb] = new float[chunks * 2 * c];
            int pixels = Math.min(hw, CHUNK);
            for (int kc = 0; kc < c; kc += L) {
                columnMean(xs, (long) nb * hw * c, c, kc, pixels, k, nb * c);
            }
        }

        @Override
        public void reduce(int nb, int chunk0, int chunk1) {
            for (int ch = chunk0; ch < chunk1; ch++) {
                int p0 = ch * CHUNK;
                int pixels = Math.min(hw, p0 + CHUNK) - p0;
                long base = ((long) nb * hw + p0) * c;
                int o = ch * 2 * c;
                for (int kc = 0; kc < c; kc += L) {
                    shiftedSums(xs, base, c, kc, pixels, k, nb * c, part[nb], o);
                }
            }
        }

        @Override
        public void finish(int nb) {
            // Per channel: the chunk sums in double, in chunk order.
            double[] s1 = new double[c];
            double[] s2 = new double[c];
            float[] sums = part[nb];
            for (int ch = 0; ch < chunks; ch++) {
                int o = ch * 2 * c;
                for (int i = 0; i < c; i++) {
                    s1[i] += sums[o + i];
                    s2[i] += sums[o + c + i];
                }
            }
            // Per group: mean and M2 (sum of squared deviations) merged from its channels' (Chan et al.).
            int cg = c / groups;
            double[] rstdCh = new double[c];
            double[] meanCh = new double[c];
            for (int j = 0; j < groups; j++) {
                double mu = 0;
                for (int i = j * cg; i < (j + 1) * cg; i++) {
                    meanCh[i] = k[nb * c + i] + s1[i] / hw;
                    mu += meanCh[i];
                }
                mu /= cg;
                double m2 = 0;
                for (int i = j * cg; i < (j + 1) * cg; i++) {
                    double dm = meanCh[i] - mu;
                    m2 += (s2[i] - s1[i] * s1[i] / hw) + hw * dm * dm;
                }
                double var = Math.max(0, m2 / ((double) hw * cg));
                double r = 1.0 / Math.sqrt(var + eps);
                ms.setAtIndex(Tensor.F32, nb * groups + j, (float) mu);
                rs.setAtIndex(Tensor.F32, nb * groups + j, (float) r);
                for (int i = j * cg; i < (j + 1) * cg; i++) {
                    meanCh[i] = mu;
                    rstdCh[i] = r;
                }
            }
            // y = act(((x - mean) rstd gamma + beta)(1 + scale) + shift) = act((x - mHi - mLo) a + b) per channel.
            for (int i = 0; i < c; i++) {
                int o = nb * c + i;
                double onePlusScale = scale == null ? 1 : 1 + (double) scale[o];
                double sh = shift == null ? 0 : shift[o];
                mHi[o] = (float) meanCh[i];
                mLo[o] = (float) (meanCh[i] - mHi[o]);
                a[o] = (float) (rstdCh[i] * gamma[i] * onePlusScale);
                b[o] = (float) (beta[i] * onePlusScale + sh);
            }
        }

        @Override
        public void apply(int nb, int chunk0, int chunk1, int c0, int c1) {
            for (int ch = chunk0; ch < chunk1; ch++) {
                int p0 = ch * CHUNK;
                int pixels = Math.min(hw, p0 + CHUNK) - p0;
                long base = ((long) nb * hw + p0) * c;
                for (int kc = c0; kc < c1; kc += L) {
                    if (silu) {
                        normalizeSilu(xs, ys, base, c, kc, pixels, mHi, mLo, a, b, nb * c);
                    } else {
                        normalize(xs, ys, base, c, kc, pixels, mHi, mLo, a, b, nb * c);
                    }
                }
            }
        }
    }

    /*
     * The loops below each handle one vector of channels [kc, kc + L) down {@code pixels} pixels that start at
     * element {@code base}; per-channel vectors come from arrays at {@code co + kc}. A whole vector uses plain loads
     * and stores; only the last vector of a C that is not a multiple of L uses masked ones, in a loop of its own:
     * a masked MemorySegment access inside the loop made the loop 6x slower here (JDK 25, AVX-512), while masked
     * array loads before the loop cost nothing. Each is a small method that takes and returns no vectors: a vector
     * crossing a call that C2 does not inline is boxed, and C1 gave up on larger methods ("out of virtual
     * registers", -XX:+PrintCompilation), which left them in the interpreter, ~40 ns per element, until C2 caught
     * up seconds later.
     */

    /** {@code out[o + kc..] = mean of x over the pixels}, per channel, in float. */
    private static void columnMean(MemorySegment xs, long base, int c, int kc, int pixels, float[] out, int o) {
        VectorMask<Float> m = S.indexInRange(kc, c);
        long step = (long) c * Float.BYTES;
        long off = (base + kc) * Float.BYTES;
        FloatVector s = FloatVector.zero(S);
        for (int p = 0; p < pixels; p++, off += step) {
            s = s.add(FloatVector.fromMemorySegment(S, xs, off, NATIVE, m));
        }
        s.div(pixels).intoArray(out, o + kc, m);
    }

    /**
     * {@code part[o + kc..] = sum_p d} and {@code part[o + c + kc..] = sum_p d^2} with {@code d = x - K}, per
     * channel. Even and odd pixels go to separate accumulators (four independent chains hide the add and FMA
     * latencies) that are added once at the end.
     */
    private static void shiftedSums(MemorySegment xs, long base, int c, int kc, int pixels, float[] k, int co,
                                    float[] part, int o) {
        VectorMask<Float> m = S.indexInRange(kc, c);
        FloatVector kv = FloatVector.fromArray(S, k, co + kc, m);
        long step = (long) c * Float.BYTES;
        long off = (base + kc) * Float.BYTES;
        FloatVector s1a = FloatVector.zero(S);
        FloatVector s1b = s1a;
        FloatVector s2a = s1a;
        FloatVector s2b = s1a;
        int p = 0;
        if (kc + L <= c) {
            for (; p + 2 <= pixels; p += 2, off += 2 * step) {
                FloatVector d0 = FloatVector.fromMemorySegment(S, xs, off, NATIVE).sub(kv);
                FloatVector d1 = FloatVector.fromMemorySegment(S, xs, off + step, NATIVE).sub(kv);
                s1a = s1a.add(d0);
                s2a = d0.fma(d0, s2a);
                s1b = s1b.add(d1);
                s2b = d1.fma(d1, s2b);
            }
        } else {
            for (; p + 2 <= pixels; p += 2, off += 2 * step) {
                FloatVector d0 = FloatVector.fromMemorySegment(S, xs, off, NATIVE, m).sub(kv);
                FloatVector d1 = FloatVector.fromMemorySegment(S, xs, off + step, NATIVE, m).sub(kv);
                s1a = s1a.add(d0);
                s2a = d0.fma(d0, s2a);
                s1b = s1b.add(d1);
                s2b = d1.fma(d1, s2b);
            }
        }
        if (p < pixels) {
            FloatVector d0 = FloatVector.fromMemorySegment(S, xs, off, NATIVE, m).sub(kv);
            s1a = s1a.add(d0);
            s2a = d0.fma(d0, s2a);
        }
        s1a.add(s1b).intoArray(part, o + kc, m);
        s2a.add(s2b).intoArray(part, o + c + kc, m);
    }

    /** {@code y = silu(h) = h / (1 + exp(-h))} with {@code h = (x - mHi - mLo) a + b}. */
    private static void normalizeSilu(MemorySegment xs, MemorySegment ys, long base, int c, int kc, int pixels,
                                      float[] mHi, float[] mLo, float[] a, float[] b, int co) {
        VectorMask<Float> m = S.indexInRange(kc, c);
        FloatVector hi = FloatVector.fromArray(S, mHi, co + kc, m);
        FloatVector lo = FloatVector.fromArray(S, mLo, co + kc, m);
        FloatVector av = FloatVector.fromArray(S, a, co + kc, m);
        FloatVector bv = FloatVector.fromArray(S, b, co + kc, m);
        long step = (long) c * Float.BYTES;
        long off = (base + kc) * Float.BYTES;
        if (kc + L <= c) {
            for (int p = 0; p < pixels; p++, off += step) {
                FloatVector h = FloatVector.fromMemorySegment(S, xs, off, NATIVE).sub(hi).sub(lo).fma(av, bv);
                h.div(VectorMath.expClamped(h.neg()).add(1f)).intoMemorySegment(ys, off, NATIVE);
            }
        } else {
            for (int p = 0; p < pixels; p++, off += step) {
                FloatVector h = FloatVector.fromMemorySegment(S, xs, off, NATIVE, m).sub(hi).sub(lo).fma(av, bv);
                h.div(VectorMath.expClamped(h.neg()).add(1f)).intoMemorySegment(ys, off, NATIVE, m);
            }
        }
    }

    /** {@code y = (x - mHi - mLo) a + b}. */
    private static void normalize(MemorySegment xs, MemorySegment ys, long base, int c, int kc, int pixels,
                                  float[] mHi, float[] mLo, float[] a, float[] b, int co) {
        VectorMask<Float> m = S.indexInRange(kc, c);
        FloatVector hi = FloatVector.fromArray(S, mHi, co + kc, m);
        FloatVector lo = FloatVector.fromArray(S, mLo, co + kc, m);
        FloatVector av = FloatVector.fromArray(S, a, co + kc, m);
        FloatVector bv = FloatVector.fromArray(S, b, co + kc, m);
        long step = (long) c * Float.BYTES;
        long off = (base + kc) * Float.BYTES;
        if (kc + L <= c) {
            for (int p = 0; p < pixels; p++, off += step) {
                FloatVector.fromMemorySegment(S, xs, off, NATIVE).sub(hi).sub(lo).fma(av, bv)
                        .intoMemorySegment(ys, off, NATIVE);
            }
        } else {
            for (int p = 0; p < pixels; p++, off += step) {
                FloatVector.fromMemorySegment(S, xs, off, NATIVE, m).sub(hi).sub(lo).fma(av, bv)
                        .intoMemorySegment(ys, off, NATIVE, m);
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Backward
    // ------------------------------------------------------------------------------------------------

    void groupNormBackward(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, boolean silu,
                           Tensor mean, Tensor rstd, Tensor dy, Tensor dx, Tensor dgamma, Tensor dbeta,
                           Tensor dscale, Tensor dshift) {
        Backward bw = new Backward(x, gamma, beta, scale, shift, groups, silu, mean, rstd, dy, dx);
        schedule(bw.n, bw.chunks, bw);
        int n = bw.n, c = bw.c;
        float[] g = bw.gamma;
        float[] b = beta.toArray();
        float[] sc = bw.scale;
        double[] sumDh2 = bw.sumDh2, sumDh2Xhat = bw.sumDh2Xhat;
        if (dscale != null || dshift != null) {
            MemorySegment dss = dscale == null ? null : dscale.segment();
            MemorySegment dhs = dshift == null ? null : dshift.segment();
            for (int i = 0; i < n * c; i++) {
                int ch = i % c;
                if (dhs != null) {
                    dhs.setAtIndex(Tensor.F32, i, (float) sumDh2[i]);
                }
                if (dss != null) {
                    // dscale = sum dL/dh2 * h1 with h1 = gamma xhat + beta.
                    dss.setAtIndex(Tensor.F32, i, (float) (g[ch] * sumDh2Xhat[i] + b[ch] * sumDh2[i]));
                }
            }
        }
        // Parameter gradients: sum over the batch in a fixed order (sample 0, 1, ...), then add once.
        if (dgamma != null || dbeta != null) {
            double[] dg = new double[c];
            double[] db = new double[c];
            for (int nb = 0; nb < n; nb++) {
                for (int ch = 0; ch < c; ch++) {
                    double onePlusScale = sc == null ? 1 : 1 + (double) sc[nb * c + ch];
                    dg[ch] += onePlusScale * sumDh2Xhat[nb * c + ch];
                    db[ch] += onePlusScale * sumDh2[nb * c + ch];
                }
            }
            accumulate(dgamma, dg);
            accumulate(dbeta, db);
        }
    }

    private static void accumulate(Tensor t, double[] add) {
        if (t == null) {
            return;
        }
        MemorySegment s = t.segment();
        for (int i = 0; i < add.length; i++) {
            s.setAtIndex(Tensor.F32, i, (float) (s.getAtIndex(Tensor.F32, i) + add[i]));
        }
    }

    /**
     * The backward pass's per-call state. Pass A (reduce) sums, per (sample, channel), {@code dL/dh2} and
     * {@code dL/dh2 xhat}; everything else (dshift, dscale, dbeta, dgamma and dx's group means) is a per-channel
     * combination of these two. With SiLU, pass A also stores dL/dh2 into dx (outputs never alias inputs), so pass B
     * (apply) reads it back instead of recomputing the sigmoid.
     */
    private static final class Backward implements Passes {
        final int n, hw, c, groups, chunks;
        final boolean silu;
        final MemorySegment xs, dys, dxs;
        final float[] gamma, scale;
        /** Per (sample, channel): mean, rstd, h2 = xhat ga + ba; then dx = dh2 kf - (q + xhat u). */
        final float[] m, r, ga, ba, kf, q, u;
        /** Per sample, per chunk: C sums of dL/dh2, then C sums of dL/dh2 xhat (allocated by prepare). */
        final float[][] part;
        final double[] sumDh2, sumDh2Xhat;

        Backward(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, boolean silu,
                 Tensor mean, Tensor rstd, Tensor dy, Tensor dx) {
            n = x.dim(0);
            hw = x.dim(1) * x.dim(2);
            c = x.dim(3);
            this.groups = groups;
            this.silu = silu;
            chunks = (hw + CHUNK - 1) / CHUNK;
            xs = x.segment();
            dys = dy.segment();
            dxs = dx == null ? null : dx.segment();
            this.gamma = gamma.toArray();
            float[] bt = beta.toArray();
            this.scale = scale == null ? null : scale.toArray();
            float[] sh = shift == null ? null : shift.toArray();
            float[] mv = mean.toArray();
            float[] rv = rstd.toArray();
            int cg = c / groups;
            m = new float[n * c];
            r = new float[n * c];
            ga = new float[n * c];
            ba = new float[n * c];
            kf = new float[n * c];
            q = new float[n * c];
            u = new float[n * c];
            for (int nb = 0; nb < n; nb++) {
                for (int ch = 0; ch < c; ch++) {
                    int o = nb * c + ch;
                    m[o] = mv[nb * groups + ch / cg];
                    r[o] = rv[nb * groups + ch / cg];
                    float ops = this.scale == null ? 1f : 1f + this.scale[o];
                    double s = sh == null ? 0 : sh[o];
                    ga[o] = (float) ((double) this.gamma[ch] * ops);
                    ba[o] = (float) ((double) bt[ch] * ops + s);
                }
            }
            part = new float[n][];
            sumDh2 = new double[n * c];
            sumDh2Xhat = new double[n * c];
        }

        @Override
        public int channels() {
            return c;
        }

        @Override
        public void prepare(int nb) {
            part[nb] = new float[chunks * 2 * c];
        }

        @Override
        public void reduce(int nb, int chunk0, int chunk1) {
            for (int ch = chunk0; ch < chunk1; ch++) {
                int p0 = ch * CHUNK;
                int pixels = Math.min(hw, p0 + CHUNK) - p0;
                long base = ((long) nb * hw + p0) * c;
                int o = ch * 2 * c;
                for (int kc = 0; kc < c; kc += L) {
                    if (!silu) {
                        gradientSums(xs, dys, base, c, kc, pixels, m, r, nb * c, part[nb], o);
                    } else {
                        gradientSumsSilu(xs, dys, dxs, base, c, kc, pixels, m, r, ga, ba, nb * c, part[nb], o);
                    }
                }
            }
        }

        @Override
        public void finish(int nb) {
            int o0 = nb * c;
            float[] sums = part[nb];
            for (int ch = 0; ch < chunks; ch++) {
                int o = ch * 2 * c;
                for (int i = 0; i < c; i++) {
                    sumDh2[o0 + i] += sums[o + i];
                    sumDh2Xhat[o0 + i] += sums[o + c + i];
                }
            }
            if (dxs == null) {
                return;
            }
            // Group means of gamma g and gamma g xhat, with g = dL/dh1 = dL/dh2 (1 + scale).
            int cg = c / groups;
            double count = (double) hw * cg;
            double[] meanGg = new double[groups];
            double[] meanGgx = new double[groups];
            for (int i = 0; i < c; i++) {
                double ops = scale == null ? 1f : 1f + scale[o0 + i];
                meanGg[i / cg] += (double) gamma[i] * ops * sumDh2[o0 + i] / count;
                meanGgx[i / cg] += (double) gamma[i] * ops * sumDh2Xhat[o0 + i] / count;
            }
            // dx = rstd (gamma (1 + scale) dL/dh2 - meanGg - xhat meanGgx) = dh2 kf - (q + xhat u).
            for (int i = 0; i < c; i++) {
                float ops = scale == null ? 1f : 1f + scale[o0 + i];
                kf[o0 + i] = (float) ((double) r[o0 + i] * gamma[i] * ops);
                q[o0 + i] = (float) (r[o0 + i] * meanGg[i / cg]);
                u[o0 + i] = (float) (r[o0 + i] * meanGgx[i / cg]);
            }
        }

        @Override
        public void apply(int nb, int chunk0, int chunk1, int c0, int c1) {
            if (dxs == null) {
                return;
            }
            // With SiLU, dx holds dL/dh2 from pass A; without, dL/dh2 is dy.
            MemorySegment dh2 = silu ? dxs : dys;
            for (int ch = chunk0; ch < chunk1; ch++) {
                int p0 = ch * CHUNK;
                int pixels = Math.min(hw, p0 + CHUNK) - p0;
                long base = ((long) nb * hw + p0) * c;
                for (int kc = c0; kc < c1; kc += L) {
                    dx(xs, dh2, dxs, base, c, kc, pixels, m, r, kf, q, u, nb * c);
                }
            }
        }
    }

    /**
     * Pass A with SiLU: sums of dL/dh2 and dL/dh2 xhat; with {@code dhs} (dx) given, dL/dh2 is also stored there for
     * pass B. The store's condition does not change inside the loop (C2 unswitches it).
     */
    private static void gradientSumsSilu(MemorySegment xs, MemorySegment dys, MemorySegment dhs, long base, int c,
                                         int kc, int pixels, float[] m, float[] r, float[] ga, float[] ba, int co,
                                         float[] part, int o) {
        // Two small loop methods rather than one with both loops: as one 457-byte method it was too large for C2 to
        // inline and C1 ran out of registers compiling it, so it stayed in C1's tier-2 code (no Vector API
        // intrinsics) and the backward ran 8x slower (bench/README.md, second run).
        VectorMask<Float> mk = S.indexInRange(kc, c);
        FloatVector mv = FloatVector.fromArray(S, m, co + kc, mk);
        FloatVector rv = FloatVector.fromArray(S, r, co + kc, mk);
        FloatVector gv = FloatVector.fromArray(S, ga, co + kc, mk);
        FloatVector bv = FloatVector.fromArray(S, ba, co + kc, mk);
        long off = (base + kc) * Float.BYTES;
        if (kc + L <= c) {
            siluSumsFull(xs, dys, dhs, off, (long) c * Float.BYTES, pixels, mv, rv, gv, bv, part, o + kc, o + c + kc);
        } else {
            siluSumsMasked(xs, dys, dhs, off, (long) c * Float.BYTES, pixels, mv, rv, gv, bv, mk, part, o + kc,
                    o + c + kc);
        }
    }

    /** The full-vector loop of {@link #gradientSumsSilu}; dL/dh2 = dy silu'(h2), silu'(h) = s (1 + h (1 - s)). */
    private static void siluSumsFull(MemorySegment xs, MemorySegment dys, MemorySegment dhs, long off, long step,
                                     int pixels, FloatVector mv, FloatVector rv, FloatVector gv, FloatVector bv,
                                     float[] part, int o1, int o2) {
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = a1;
        boolean store = dhs != null;
        for (int p = 0; p < pixels; p++, off += step) {
            FloatVector xhat = FloatVector.fromMemorySegment(S, xs, off, NATIVE).sub(mv).mul(rv);
            FloatVector h2 = xhat.fma(gv, bv);
            FloatVector sg = sigmoid(h2);
            FloatVector dh2 = FloatVector.fromMemorySegment(S, dys, off, NATIVE).mul(sg.mul(h2.mul(ONE.sub(sg)).add(1f)));
            if (store) {
                dh2.intoMemorySegment(dhs, off, NATIVE);
            }
            a1 = a1.add(dh2);
            a2 = dh2.fma(xhat, a2);
        }
        a1.intoArray(part, o1);
        a2.intoArray(part, o2);
    }

    /** The masked loop of {@link #gradientSumsSilu}, for a last channel vector that is not full. */
    private static void siluSumsMasked(MemorySegment xs, MemorySegment dys, MemorySegment dhs, long off, long step,
                                       int pixels, FloatVector mv, FloatVector rv, FloatVector gv, FloatVector bv,
                                       VectorMask<Float> mk, float[] part, int o1, int o2) {
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = a1;
        boolean store = dhs != null;
        for (int p = 0; p < pixels; p++, off += step) {
            FloatVector xhat = FloatVector.fromMemorySegment(S, xs, off, NATIVE, mk).sub(mv).mul(rv);
            FloatVector h2 = xhat.fma(gv, bv);
            FloatVector sg = sigmoid(h2);
            FloatVector dh2 = FloatVector.fromMemorySegment(S, dys, off, NATIVE, mk)
                    .mul(sg.mul(h2.mul(ONE.sub(sg)).add(1f)));
            if (store) {
                dh2.intoMemorySegment(dhs, off, NATIVE, mk);
            }
            a1 = a1.add(dh2);
            a2 = dh2.fma(xhat, a2);
        }
        a1.intoArray(part, o1, mk);
        a2.intoArray(part, o2, mk);
    }

    /** Pass A without SiLU: dL/dh2 is dy. */
    private static void gradientSums(MemorySegment xs, MemorySegment dys, long base, int c, int kc, int pixels,
                                     float[] m, float[] r, int co, float[] part, int o) {
        VectorMask<Float> mk = S.indexInRange(kc, c);
        FloatVector mv = FloatVector.fromArray(S, m, co + kc, mk);
        FloatVector rv = FloatVector.fromArray(S, r, co + kc, mk);
        long step = (long) c * Float.BYTES;
        long off = (base + kc) * Float.BYTES;
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = a1;
        if (kc + L <= c) {
            for (int p = 0; p < pixels; p++, off += step) {
                FloatVector xhat = FloatVector.fromMemorySegment(S, xs, off, NATIVE).sub(mv).mul(rv);
                FloatVector dh2 = FloatVector.fromMemorySegment(S, dys, off, NATIVE);
                a1 = a1.add(dh2);
                a2 = dh2.fma(xhat, a2);
            }
        } else {
            for (int p = 0; p < pixels; p++, off += step) {
                FloatVector xhat = FloatVector.fromMemorySegment(S, xs, off, NATIVE, mk).sub(mv).mul(rv);
                FloatVector dh2 = FloatVector.fromMemorySegment(S, dys, off, NATIVE, mk);
                a1 = a1.add(dh2);
                a2 = dh2.fma(xhat, a2);
            }
        }
        a1.intoArray(part, o + kc, mk);
        a2.intoArray(part, o + c + kc, mk);
    }

    /** Pass B: {@code dx = dL/dh2 kf - (q + xhat u)}, dL/dh2 read from {@code dhs} (dx itself, or dy). */
    private static void dx(MemorySegment xs, MemorySegment dhs, MemorySegment dxs, long base, int c, int kc,
                           int pixels, float[] m, float[] r, float[] kf, float[] q, float[] u, int co) {
        VectorMask<Float> mk = S.indexInRange(kc, c);
        FloatVector mv = FloatVector.fromArray(S, m, co + kc, mk);
        FloatVector rv = FloatVector.fromArray(S, r, co + kc, mk);
        FloatVector kv = FloatVector.fromArray(S, kf, co + kc, mk);
        FloatVector qv = FloatVector.fromArray(S, q, co + kc, mk);
        FloatVector uv = FloatVector.fromArray(S, u, co + kc, mk);
        long step = (long) c * Float.BYTES;
        long off = (base + kc) * Float.BYTES;
        if (kc + L <= c) {
            for (int p = 0; p < pixels; p++, off += step) {
                FloatVector xhat = FloatVector.fromMemorySegment(S, xs, off, NATIVE).sub(mv).mul(rv);
                FloatVector.fromMemorySegment(S, dhs, off, NATIVE).fma(kv, xhat.fma(uv, qv).neg())
                        .intoMemorySegment(dxs, off, NATIVE);
            }
        } else {
            for (int p = 0; p < pixels; p++, off += step) {
                FloatVector xhat = FloatVector.fromMemorySegment(S, xs, off, NATIVE, mk).sub(mv).mul(rv);
                FloatVector.fromMemorySegment(S, dhs, off, NATIVE, mk).fma(kv, xhat.fma(uv, qv).neg())
                        .intoMemorySegment(dxs, off, NATIVE, mk);
            }
        }
    }
    // ------------------------------------------------------------------------------------------------
    // SiLU (Elfwing et al. 2018)
    // ------------------------------------------------------------------------------------------------

    /*
     * exp is VectorMath's, not VectorOperators.EXP: the library's result differs between the interpreter and C2
     * in the last bit, which made the same training step give different bits before and after JIT compilation.
     */

    private static final FloatVector ONE = FloatVector.broadcast(S, 1f);

    /**
     * {@code 1 / (1 + exp(-h))}, kept small so it inlines into every loop. The exp clamps its argument to
     * [-87.3, 88], so for h < -88 the sigmoid is about 6e-39 (silu about -0, silu' about 0), never NaN; it skips
     * exp's flush to 0 below -87.3, which cannot change 1 + exp(-h).
     */
    static FloatVector sigmoid(FloatVector h) {
        return ONE.div(VectorMath.expClamped(h.neg()).add(1f));
    }

    void silu(Tensor x, Tensor y) {
        MemorySegment xs = x.segment();
        MemorySegment ys = y.segment();
        pool.parallelRange(x.size(), 1 << 14, (from, to) -> {
            long i = from;
            for (; i + L <= to; i += L) {
                FloatVector h = FloatVector.fromMemorySegment(S, xs, i * Float.BYTES, NATIVE);
                h.mul(sigmoid(h)).intoMemorySegment(ys, i * Float.BYTES, NATIVE);
            }
            if (i < to) {
                VectorMask<Float> m = S.indexInRange(0, (int) (to - i));
                FloatVector h = FloatVector.fromMemorySegment(S, xs, i * Float.BYTES, NATIVE, m);
                h.mul(sigmoid(h)).intoMemorySegment(ys, i * Float.BYTES, NATIVE, m);
            }
        });
    }

    /** {@code dx = dy silu'(x)} with {@code silu'(x) = s (1 + x (1 - s))}, {@code s = sigmoid(x)}. */
    void siluBackward(Tensor x, Tensor dy, Tensor dx) {
        MemorySegment xs = x.segment();
        MemorySegment dys = dy.segment();
        MemorySegment dxs = dx.segment();
        pool.parallelRange(x.size(), 1 << 14, (from, to) -> {
            long i = from;
            for (; i + L <= to; i += L) {
                long off = i * Float.BYTES;
                FloatVector h = FloatVector.fromMemorySegment(S, xs, off, NATIVE);
                FloatVector sg = sigmoid(h);
                FloatVector.fromMemorySegment(S, dys, off, NATIVE).mul(sg.mul(h.mul(ONE.sub(sg)).add(1f)))
                        .intoMemorySegment(dxs, off, NATIVE);
            }
            if (i < to) {
                long off = i * Float.BYTES;
                VectorMask<Float> m = S.indexInRange(0, (int) (to - i));
                FloatVector h = FloatVector.fromMemorySegment(S, xs, off, NATIVE, m);
                FloatVector sg = sigmoid(h);
                FloatVector.fromMemorySegment(S, dys, off, NATIVE, m).mul(sg.mul(h.mul(ONE.sub(sg)).add(1f)))
                        .intoMemorySegment(dxs, off, NATIVE, m);
            }
        });
    }

    // ------------------------------------------------------------------------------------------------
    // The rest of the group's ops (elementwise, data movement, losses, embeddings)
    // ------------------------------------------------------------------------------------------------

    void add(Tensor a, Tensor b, Tensor y) {
        PointwiseKernels.add(pool, a, b, y);
    }

    void mul(Tensor a, Tensor b, Tensor y) {
        PointwiseKernels.mul(pool, a, b, y);
    }

    void axpy(float alpha, Tensor x, Tensor y) {
        PointwiseKernels.axpy(pool, alpha, x, y);
    }

    void scale(Tensor x, float alpha, Tensor y) {
        PointwiseKernels.scale(pool, x, alpha, y);
    }

    void addPerChannel(Tensor x, Tensor v, Tensor y) {
        PointwiseKernels.addPerChannel(pool, x, v, y);
    }

    void sumPerChannel(Tensor dy, Tensor dv) {
        PointwiseKernels.sumPerChannel(pool, dy, dv);
    }

    void concatChannels(Tensor a, Tensor b, Tensor y) {
        PointwiseKernels.concatChannels(pool, a, b, y);
    }

    void splitChannels(Tensor dy, Tensor da, Tensor db) {
        PointwiseKernels.splitChannels(pool, dy, da, db);
    }

    void upsample(Tensor x, Tensor y) {
        PointwiseKernels.upsample(pool, x, y);
    }

    void upsampleBackward(Tensor dy, Tensor dx) {
        PointwiseKernels.upsampleBackward(pool, dy, dx);
    }

    double mseLoss(Tensor pred, Tensor target, Tensor weights, Tensor dpred) {
        return PointwiseKernels.mseLoss(pool, pred, target, weights, dpred);
    }

    double pseudoHuberLoss(Tensor pred, Tensor target, Tensor weights, float c, Tensor dpred) {
        return PointwiseKernels.pseudoHuberLoss(pool, pred, target, weights, c, dpred);
    }

    void sinusoidalEmbedding(Tensor t, boolean flipSinToCos, float downscaleFreqShift, float scale, float maxPeriod,
                             Tensor y) {
        PointwiseKernels.sinusoidalEmbedding(pool, t, flipSinToCos, downscaleFreqShift, scale, maxPeriod, y);
    }

    void fourierEmbedding(Tensor t, Tensor weight, boolean log, boolean flipSinToCos, Tensor y) {
        PointwiseKernels.fourierEmbedding(pool, t, weight, log, flipSinToCos, y);
    }
}
