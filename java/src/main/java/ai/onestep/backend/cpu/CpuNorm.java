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
 * <p>NHWC puts a group's channels next to each other inside every pixel, and the teacher's groups are narrow (2 or
 * 4 channels), so the kernels vectorize across a block of whole groups (about one 16-lane vector of channels) and
 * walk the pixels of one sample. One task is one (sample, channel block): its statistics and its outputs belong to
 * it alone, so the result does not depend on the number of threads. The forward pass is statistics (two reading
 * passes, below) and one fused normalize / affine / scale-shift / SiLU pass, as in TensorRT's group-norm plugin; the
 * backward pass is a reduction pass and one fused dx pass. A task's slice of one sample (its channels at every
 * pixel) is small enough to stay in L2 between the passes, so main memory sees about one read of x and one write.
 *
 * <p>Statistics: per-channel sums run in float vector registers over chunks of {@link #CHUNK} pixels and are
 * flushed into double, so no float accumulator ever holds more than CHUNK terms. The variance uses the corrected
 * two-pass algorithm (Chan, Golub & LeVeque 1983): {@code var = mean(d^2) - mean(d)^2} with {@code d = x - mean1}
 * where mean1 is the first-pass mean; the correction term also refines the mean. The deviations are formed against
 * the mean split into two floats (hi + lo), so inputs with a large mean (x = 100 + N(0,1)) lose nothing to the
 * rounding of the mean to float.
 */
final class CpuNorm {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    /** Pixels summed in float before the partial sums move to double: bounds float round-off at CHUNK terms. */
    private static final int CHUNK = 64;

    private final CpuPool pool;

    CpuNorm(CpuPool pool) {
        this.pool = pool;
    }

    /** Channels per task: whole groups, about one vector's worth (a group wider than a vector is one block). */
    private static int blockChannels(int c, int groups) {
        int cg = c / groups;
        return Math.max(1, L / cg) * cg;
    }

    // ------------------------------------------------------------------------------------------------
    // Forward
    // ------------------------------------------------------------------------------------------------

    void groupNorm(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, float eps,
                   boolean silu, Tensor y, Tensor mean, Tensor rstd) {
        int n = x.dim(0);
        int hw = x.dim(1) * x.dim(2);
        int c = x.dim(3);
        int bc = blockChannels(c, groups);
        int blocks = (c + bc - 1) / bc;
        MemorySegment xs = x.segment();
        MemorySegment ys = y.segment();
        MemorySegment ms = mean.segment();
        MemorySegment rs = rstd.segment();
        float[] g = gamma.toArray();
        float[] b = beta.toArray();
        float[] sc = scale == null ? null : scale.toArray();
        float[] sh = shift == null ? null : shift.toArray();
        pool.parallelFor(n * blocks, task -> {
            int nb = task / blocks;
            int c0 = (task % blocks) * bc;
            int width = Math.min(bc, c - c0);
            forwardBlock(xs, ys, ms, rs, g, b, sc, sh, groups, eps, silu, nb, hw, c, c0, width);
        });
    }

    private static void forwardBlock(MemorySegment xs, MemorySegment ys, MemorySegment ms, MemorySegment rs,
                                     float[] gamma, float[] beta, float[] scale, float[] shift, int groups, float eps,
                                     boolean silu, int nb, int hw, int c, int c0, int width) {
        int cg = c / groups;
        double count = (double) hw * cg;
        long base = (long) nb * hw * c;
        int firstGroup = c0 / cg;
        int blockGroups = width / cg;

        // Pass 1: the mean of each group.
        double[] sum = channelSums(xs, base, c, c0, width, hw);
        double[] groupMean = new double[blockGroups];
        for (int j = 0; j < blockGroups; j++) {
            double s = 0;
            for (int k = j * cg; k < (j + 1) * cg; k++) {
                s += sum[k];
            }
            groupMean[j] = s / count;
        }

        // Pass 2: deviations from that mean; their mean corrects the first-pass mean, their square the variance.
        float[] mHi = new float[width];
        float[] mLo = new float[width];
        splitMean(groupMean, cg, mHi, mLo);
        double[] dev = new double[width];
        double[] dev2 = new double[width];
        deviationSums(xs, base, c, c0, width, hw, mHi, mLo, dev, dev2);
        double[] groupRstd = new double[blockGroups];
        for (int j = 0; j < blockGroups; j++) {
            double s1 = 0;
            double s2 = 0;
            for (int k = j * cg; k < (j + 1) * cg; k++) {
                s1 += dev[k];
                s2 += dev2[k];
            }
            double d1 = s1 / count;
            double var = Math.max(0, s2 / count - d1 * d1);
            groupMean[j] += d1;
            groupRstd[j] = 1.0 / Math.sqrt(var + eps);
            int gi = nb * groups + firstGroup + j;
            ms.setAtIndex(Tensor.F32, gi, (float) groupMean[j]);
            rs.setAtIndex(Tensor.F32, gi, (float) groupRstd[j]);
        }

        // Pass 3: y = act(((x - mean) rstd gamma + beta)(1 + scale) + shift) = act((x - mean) a + b) per channel.
        splitMean(groupMean, cg, mHi, mLo);
        float[] a = new float[width];
        float[] bb = new float[width];
        for (int k = 0; k < width; k++) {
            int ch = c0 + k;
            double onePlusScale = scale == null ? 1 : 1 + (double) scale[nb * c + ch];
            double sh = shift == null ? 0 : shift[nb * c + ch];
            a[k] = (float) (groupRstd[k / cg] * gamma[ch] * onePlusScale);
            bb[k] = (float) (beta[ch] * onePlusScale + sh);
        }
        if (silu) {
            normalizeSilu(xs, ys, base, c, c0, width, hw, mHi, mLo, a, bb);
        } else {
            normalize(xs, ys, base, c, c0, width, hw, mHi, mLo, a, bb);
        }
    }

    /** {@code y = silu((x - mHi - mLo) a + b)} for the block's channels at every pixel. */
    private static void normalizeSilu(MemorySegment xs, MemorySegment ys, long base, int c, int c0, int width, int hw,
                                      float[] mHi, float[] mLo, float[] a, float[] b) {
        long step = (long) c * Float.BYTES;
        for (int k = 0; k < width; k += L) {
            VectorMask<Float> m = S.indexInRange(k, width);
            FloatVector hi = FloatVector.fromArray(S, mHi, k, m);
            FloatVector lo = FloatVector.fromArray(S, mLo, k, m);
            FloatVector av = FloatVector.fromArray(S, a, k, m);
            FloatVector bv = FloatVector.fromArray(S, b, k, m);
            long off = (base + c0 + k) * Float.BYTES;
            for (int p = 0; p < hw; p++, off += step) {
                FloatVector h = FloatVector.fromMemorySegment(S, xs, off, NATIVE, m).sub(hi).sub(lo).fma(av, bv);
                h.mul(sigmoid(h)).intoMemorySegment(ys, off, NATIVE, m);
            }
        }
    }

    /** {@code y = (x - mHi - mLo) a + b} for the block's channels at every pixel. */
    private static void normalize(MemorySegment xs, MemorySegment ys, long base, int c, int c0, int width, int hw,
                                  float[] mHi, float[] mLo, float[] a, float[] b) {
        long step = (long) c * Float.BYTES;
        for (int k = 0; k < width; k += L) {
            VectorMask<Float> m = S.indexInRange(k, width);
            FloatVector hi = FloatVector.fromArray(S, mHi, k, m);
            FloatVector lo = FloatVector.fromArray(S, mLo, k, m);
            FloatVector av = FloatVector.fromArray(S, a, k, m);
            FloatVector bv = FloatVector.fromArray(S, b, k, m);
            long off = (base + c0 + k) * Float.BYTES;
            for (int p = 0; p < hw; p++, off += step) {
                FloatVector.fromMemorySegment(S, xs, off, NATIVE, m).sub(hi).sub(lo).fma(av, bv)
                        .intoMemorySegment(ys, off, NATIVE, m);
            }
        }
    }

    /**
     * Adds the first {@code used} lanes of a float partial sum (already stored into {@code lanes}) into
     * {@code s[k..]}, in double. It takes no vector, so it costs no boxing when C2 does not inline it.
     */
    private static void flush(float[] lanes, double[] s, int k, int used) {
        for (int l = 0; l < used; l++) {
            s[k + l] += lanes[l];
        }
    }

    /** Per-channel {@code mHi + mLo ~= groupMean[k / cg]} with the low part holding what float rounding lost. */
    private static void splitMean(double[] groupMean, int cg, float[] mHi, float[] mLo) {
        for (int k = 0; k < mHi.length; k++) {
            double m = groupMean[k / cg];
            mHi[k] = (float) m;
            mLo[k] = (float) (m - mHi[k]);
        }
    }

    /** For each channel k of the block, {@code sum_p x}, in float over CHUNK pixels at a time and then in double. */
    private static double[] channelSums(MemorySegment xs, long base, int c, int c0, int width, int hw) {
        double[] s = new double[width];
        float[] lanes = new float[L];
        long step = (long) c * Float.BYTES;
        for (int k = 0; k < width; k += L) {
            VectorMask<Float> m = S.indexInRange(k, width);
            int used = Math.min(L, width - k);
            for (int p0 = 0; p0 < hw; p0 += CHUNK) {
                int p1 = Math.min(hw, p0 + CHUNK);
                FloatVector acc = FloatVector.zero(S);
                long off = (base + (long) p0 * c + c0 + k) * Float.BYTES;
                for (int p = p0; p < p1; p++, off += step) {
                    acc = acc.add(FloatVector.fromMemorySegment(S, xs, off, NATIVE, m));
                }
                acc.intoArray(lanes, 0);
                flush(lanes, s, k, used);
            }
        }
        return s;
    }

    /**
     * For each channel k of the block, {@code s1[k] = sum_p d} and {@code s2[k] = sum_p d^2} with
     * {@code d = (x - mHi[k]) - mLo[k]}, summed in float over CHUNK pixels at a time and then in double.
     */
    private static void deviationSums(MemorySegment xs, long base, int c, int c0, int width, int hw, float[] mHi,
                                      float[] mLo, double[] s1, double[] s2) {
        float[] lanes = new float[L];
        long step = (long) c * Float.BYTES;
        for (int k = 0; k < width; k += L) {
            VectorMask<Float> m = S.indexInRange(k, width);
            FloatVector hi = FloatVector.fromArray(S, mHi, k, m);
            FloatVector lo = FloatVector.fromArray(S, mLo, k, m);
            int used = Math.min(L, width - k);
            for (int p0 = 0; p0 < hw; p0 += CHUNK) {
                int p1 = Math.min(hw, p0 + CHUNK);
                FloatVector a1 = FloatVector.zero(S);
                FloatVector a2 = FloatVector.zero(S);
                long off = (base + (long) p0 * c + c0 + k) * Float.BYTES;
                for (int p = p0; p < p1; p++, off += step) {
                    FloatVector d = FloatVector.fromMemorySegment(S, xs, off, NATIVE, m).sub(hi).sub(lo);
                    a1 = a1.add(d);
                    a2 = d.fma(d, a2);
                }
                a1.intoArray(lanes, 0);
                flush(lanes, s1, k, used);
                a2.intoArray(lanes, 0);
                flush(lanes, s2, k, used);
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Backward
    // ------------------------------------------------------------------------------------------------

    void groupNormBackward(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups, boolean silu,
                           Tensor mean, Tensor rstd, Tensor dy, Tensor dx, Tensor dgamma, Tensor dbeta,
                           Tensor dscale, Tensor dshift) {
        int n = x.dim(0);
        int hw = x.dim(1) * x.dim(2);
        int c = x.dim(3);
        int bc = blockChannels(c, groups);
        int blocks = (c + bc - 1) / bc;
        MemorySegment xs = x.segment();
        MemorySegment dys = dy.segment();
        MemorySegment dxs = dx == null ? null : dx.segment();
        float[] g = gamma.toArray();
        float[] b = beta.toArray();
        float[] sc = scale == null ? null : scale.toArray();
        float[] sh = shift == null ? null : shift.toArray();
        float[] m = mean.toArray();
        float[] r = rstd.toArray();
        // Per (sample, channel): sumDh2 = sum_hw dL/dh2, sumDh2Xhat = sum_hw dL/dh2 xhat. Everything else
        // (dshift, dscale, dbeta, dgamma and dx's group means) is a per-channel combination of these two.
        double[] sumDh2 = new double[n * c];
        double[] sumDh2Xhat = new double[n * c];
        pool.parallelFor(n * blocks, task -> {
            int nb = task / blocks;
            int c0 = (task % blocks) * bc;
            int width = Math.min(bc, c - c0);
            backwardBlock(xs, dys, dxs, g, b, sc, sh, m, r, groups, silu, nb, hw, c, c0, width, sumDh2, sumDh2Xhat);
        });
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

    private static void backwardBlock(MemorySegment xs, MemorySegment dys, MemorySegment dxs, float[] gamma,
                                      float[] beta, float[] scale, float[] shift, float[] mean, float[] rstd,
                                      int groups, boolean silu, int nb, int hw, int c, int c0, int width,
                                      double[] sumDh2, double[] sumDh2Xhat) {
        int cg = c / groups;
        double count = (double) hw * cg;
        long base = (long) nb * hw * c;
        int firstGroup = c0 / cg;
        // Per channel: the saved statistics, and h2 = (gamma xhat + beta)(1 + scale) + shift = xhat ga + ba.
        float[] m = new float[width];
        float[] r = new float[width];
        float[] gm = new float[width];
        float[] ops = new float[width];
        float[] ga = new float[width];
        float[] ba = new float[width];
        for (int k = 0; k < width; k++) {
            int ch = c0 + k;
            m[k] = mean[nb * groups + firstGroup + k / cg];
            r[k] = rstd[nb * groups + firstGroup + k / cg];
            gm[k] = gamma[ch];
            ops[k] = scale == null ? 1f : 1f + scale[nb * c + ch];
            double sh = shift == null ? 0 : shift[nb * c + ch];
            ga[k] = (float) ((double) gamma[ch] * ops[k]);
            ba[k] = (float) ((double) beta[ch] * ops[k] + sh);
        }
        double[] s1 = new double[width];
        double[] s2 = new double[width];
        if (silu) {
            gradientSumsSilu(xs, dys, base, c, c0, width, hw, m, r, ga, ba, s1, s2);
        } else {
            gradientSums(xs, dys, base, c, c0, width, hw, m, r, s1, s2);
        }
        System.arraycopy(s1, 0, sumDh2, nb * c + c0, width);
        System.arraycopy(s2, 0, sumDh2Xhat, nb * c + c0, width);
        if (dxs == null) {
            return;
        }
        // Group means of gamma g and gamma g xhat, with g = dL/dh1 = dL/dh2 (1 + scale).
        int blockGroups = width / cg;
        double[] meanGg = new double[blockGroups];
        double[] meanGgx = new double[blockGroups];
        for (int k = 0; k < width; k++) {
            meanGg[k / cg] += (double) gm[k] * ops[k] * s1[k] / count;
            meanGgx[k / cg] += (double) gm[k] * ops[k] * s2[k] / count;
        }
        // dx = rstd (gamma (1 + scale) dL/dh2 - meanGg - xhat meanGgx) = dh2 kf - (q + xhat u).
        float[] kf = new float[width];
        float[] q = new float[width];
        float[] u = new float[width];
        for (int k = 0; k < width; k++) {
            kf[k] = (float) ((double) r[k] * gm[k] * ops[k]);
            q[k] = (float) (r[k] * meanGg[k / cg]);
            u[k] = (float) (r[k] * meanGgx[k / cg]);
        }
        if (silu) {
            dxSilu(xs, dys, dxs, base, c, c0, width, hw, m, r, ga, ba, kf, q, u);
        } else {
            dx(xs, dys, dxs, base, c, c0, width, hw, m, r, kf, q, u);
        }
    }

    /*
     * Each pass, with and without SiLU, is a small method of its own that takes and returns no vectors. A vector
     * crossing a call that C2 does not inline is boxed; and C1 gave up on the larger two-variant methods ("out of
     * virtual registers", -XX:+PrintCompilation), which left them in the interpreter, ~40 ns per element, until C2
     * caught up seconds later.
     */

    /** Pass A with SiLU: {@code s1[k] += sum_p dL/dh2}, {@code s2[k] += sum_p dL/dh2 xhat}. */
    private static void gradientSumsSilu(MemorySegment xs, MemorySegment dys, long base, int c, int c0, int width,
                                         int hw, float[] m, float[] r, float[] ga, float[] ba, double[] s1,
                                         double[] s2) {
        float[] lanes = new float[L];
        long step = (long) c * Float.BYTES;
        for (int k = 0; k < width; k += L) {
            VectorMask<Float> mk = S.indexInRange(k, width);
            FloatVector mv = FloatVector.fromArray(S, m, k, mk);
            FloatVector rv = FloatVector.fromArray(S, r, k, mk);
            FloatVector gv = FloatVector.fromArray(S, ga, k, mk);
            FloatVector bv = FloatVector.fromArray(S, ba, k, mk);
            int used = Math.min(L, width - k);
            for (int p0 = 0; p0 < hw; p0 += CHUNK) {
                int p1 = Math.min(hw, p0 + CHUNK);
                long off = (base + (long) p0 * c + c0 + k) * Float.BYTES;
                FloatVector a1 = FloatVector.zero(S);
                FloatVector a2 = FloatVector.zero(S);
                for (int p = p0; p < p1; p++, off += step) {
                    FloatVector xhat = FloatVector.fromMemorySegment(S, xs, off, NATIVE, mk).sub(mv).mul(rv);
                    FloatVector h2 = xhat.fma(gv, bv);
                    FloatVector sg = sigmoid(h2);
                    // dL/dh2 = dy silu'(h2), silu'(h) = s (1 + h (1 - s)) with s = sigmoid(h).
                    FloatVector dh2 = FloatVector.fromMemorySegment(S, dys, off, NATIVE, mk)
                            .mul(sg.mul(h2.mul(ONE.sub(sg)).add(1f)));
                    a1 = a1.add(dh2);
                    a2 = dh2.fma(xhat, a2);
                }
                a1.intoArray(lanes, 0);
                flush(lanes, s1, k, used);
                a2.intoArray(lanes, 0);
                flush(lanes, s2, k, used);
            }
        }
    }

    /** Pass A without SiLU: dL/dh2 is dy. */
    private static void gradientSums(MemorySegment xs, MemorySegment dys, long base, int c, int c0, int width,
                                     int hw, float[] m, float[] r, double[] s1, double[] s2) {
        float[] lanes = new float[L];
        long step = (long) c * Float.BYTES;
        for (int k = 0; k < width; k += L) {
            VectorMask<Float> mk = S.indexInRange(k, width);
            FloatVector mv = FloatVector.fromArray(S, m, k, mk);
            FloatVector rv = FloatVector.fromArray(S, r, k, mk);
            int used = Math.min(L, width - k);
            for (int p0 = 0; p0 < hw; p0 += CHUNK) {
                int p1 = Math.min(hw, p0 + CHUNK);
                long off = (base + (long) p0 * c + c0 + k) * Float.BYTES;
                FloatVector a1 = FloatVector.zero(S);
                FloatVector a2 = FloatVector.zero(S);
                for (int p = p0; p < p1; p++, off += step) {
                    FloatVector xhat = FloatVector.fromMemorySegment(S, xs, off, NATIVE, mk).sub(mv).mul(rv);
                    FloatVector dh2 = FloatVector.fromMemorySegment(S, dys, off, NATIVE, mk);
                    a1 = a1.add(dh2);
                    a2 = dh2.fma(xhat, a2);
                }
                a1.intoArray(lanes, 0);
                flush(lanes, s1, k, used);
                a2.intoArray(lanes, 0);
                flush(lanes, s2, k, used);
            }
        }
    }

    /** Pass B with SiLU: {@code dx = dL/dh2 kf - (q + xhat u)}, recomputing dL/dh2 as pass A does. */
    private static void dxSilu(MemorySegment xs, MemorySegment dys, MemorySegment dxs, long base, int c, int c0,
                               int width, int hw, float[] m, float[] r, float[] ga, float[] ba, float[] kf,
                               float[] q, float[] u) {
        long step = (long) c * Float.BYTES;
        for (int k = 0; k < width; k += L) {
            VectorMask<Float> mk = S.indexInRange(k, width);
            FloatVector mv = FloatVector.fromArray(S, m, k, mk);
            FloatVector rv = FloatVector.fromArray(S, r, k, mk);
            FloatVector gv = FloatVector.fromArray(S, ga, k, mk);
            FloatVector bv = FloatVector.fromArray(S, ba, k, mk);
            FloatVector kv = FloatVector.fromArray(S, kf, k, mk);
            FloatVector qv = FloatVector.fromArray(S, q, k, mk);
            FloatVector uv = FloatVector.fromArray(S, u, k, mk);
            long off = (base + c0 + k) * Float.BYTES;
            for (int p = 0; p < hw; p++, off += step) {
                FloatVector xhat = FloatVector.fromMemorySegment(S, xs, off, NATIVE, mk).sub(mv).mul(rv);
                FloatVector h2 = xhat.fma(gv, bv);
                FloatVector sg = sigmoid(h2);
                FloatVector dh2 = FloatVector.fromMemorySegment(S, dys, off, NATIVE, mk)
                        .mul(sg.mul(h2.mul(ONE.sub(sg)).add(1f)));
                dh2.fma(kv, xhat.fma(uv, qv).neg()).intoMemorySegment(dxs, off, NATIVE, mk);
            }
        }
    }

    /** Pass B without SiLU. */
    private static void dx(MemorySegment xs, MemorySegment dys, MemorySegment dxs, long base, int c, int c0,
                           int width, int hw, float[] m, float[] r, float[] kf, float[] q, float[] u) {
        long step = (long) c * Float.BYTES;
        for (int k = 0; k < width; k += L) {
            VectorMask<Float> mk = S.indexInRange(k, width);
            FloatVector mv = FloatVector.fromArray(S, m, k, mk);
            FloatVector rv = FloatVector.fromArray(S, r, k, mk);
            FloatVector kv = FloatVector.fromArray(S, kf, k, mk);
            FloatVector qv = FloatVector.fromArray(S, q, k, mk);
            FloatVector uv = FloatVector.fromArray(S, u, k, mk);
            long off = (base + c0 + k) * Float.BYTES;
            for (int p = 0; p < hw; p++, off += step) {
                FloatVector xhat = FloatVector.fromMemorySegment(S, xs, off, NATIVE, mk).sub(mv).mul(rv);
                FloatVector.fromMemorySegment(S, dys, off, NATIVE, mk).fma(kv, xhat.fma(uv, qv).neg())
                        .intoMemorySegment(dxs, off, NATIVE, mk);
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // SiLU (Elfwing et al. 2018)
    // ------------------------------------------------------------------------------------------------

    /*
     * exp is VectorMath.exp, not VectorOperators.EXP: the library's result differs between the interpreter and C2
     * in the last bit, which made the same training step give different bits before and after JIT compilation.
     */

    private static final FloatVector ONE = FloatVector.broadcast(S, 1f);

    /**
     * {@code 1 / (1 + exp(-h))}, kept small so it inlines into every loop. VectorMath.exp clamps its argument to
     * [-87.3, 88], so for h < -88 the sigmoid is about 6e-39 (silu about -0, silu' about 0), never NaN.
     */
    static FloatVector sigmoid(FloatVector h) {
        return ONE.div(VectorMath.exp(h.neg()).add(1f));
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
