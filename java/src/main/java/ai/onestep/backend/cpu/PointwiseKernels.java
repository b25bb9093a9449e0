package ai.onestep.backend.cpu;

import ai.onestep.tensor.Tensor;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * The CPU's elementwise and data-movement ops, the losses and the time embeddings (called through
 * {@link CpuNorm}). All of them are memory-bound: one vector loop per row or range, a masked tail, and work split
 * over output elements. The two reductions (sumPerChannel, the losses) sum fixed pieces and combine them in a
 * fixed order, so they are bit-identical for any thread count. Each elementwise op spells out its own loop rather
 * than passing an operator lambda to a shared one: that shared call site would go megamorphic, and a vector passed
 * through a call C2 does not inline is boxed.
 */
final class PointwiseKernels {
    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    /**
     * Elements per parallel range of a pure elementwise op (16 KiB of each operand, 1-3 us of work, against the
     * pool's ~0.5 us per job). 16K left every add, time-embedding add and upsampling of a batch-1 step at 7x7 and
     * 14x14 (6K-12K elements) on one thread; large tensors are cut into 4 ranges a thread whatever this is.
     */
    private static final long GRAIN = 1 << 12;
    /** Elements per piece of a loss reduction: fixed, so the summation order never depends on the thread count. */
    private static final int PIECE = 4096;
    /** Positions summed in float before sumPerChannel moves a partial sum to double. */
    private static final int CHUNK = 64;

    private PointwiseKernels() {
    }

    /** {@code y = a + b}; y may alias a or b (each element is read before it is written). */
    static void add(CpuPool pool, Tensor a, Tensor b, Tensor y) {
        MemorySegment xs = a.segment();
        MemorySegment bs = b.segment();
        MemorySegment ys = y.segment();
        pool.parallelRange(a.size(), GRAIN, (from, to) -> {
            long i = from;
            for (; i + L <= to; i += L) {
                long off = i * Float.BYTES;
                FloatVector xv = FloatVector.fromMemorySegment(S, xs, off, NATIVE);
                FloatVector bv = FloatVector.fromMemorySegment(S, bs, off, NATIVE);
                xv.add(bv).intoMemorySegment(ys, off, NATIVE);
            }
            if (i < to) {
                long off = i * Float.BYTES;
                VectorMask<Float> m = S.indexInRange(0, (int) (to - i));
                FloatVector xv = FloatVector.fromMemorySegment(S, xs, off, NATIVE, m);
                FloatVector bv = FloatVector.fromMemorySegment(S, bs, off, NATIVE, m);
                xv.add(bv).intoMemorySegment(ys, off, NATIVE, m);
            }
        });
    }

    /** {@code y = a * b}; y may alias a or b (each element is read before it is written). */
    static void mul(CpuPool pool, Tensor a, Tensor b, Tensor y) {
        MemorySegment xs = a.segment();
        MemorySegment bs = b.segment();
        MemorySegment ys = y.segment();
        pool.parallelRange(a.size(), GRAIN, (from, to) -> {
            long i = from;
            for (; i + L <= to; i += L) {
                long off = i * Float.BYTES;
                FloatVector xv = FloatVector.fromMemorySegment(S, xs, off, NATIVE);
                FloatVector bv = FloatVector.fromMemorySegment(S, bs, off, NATIVE);
                xv.mul(bv).intoMemorySegment(ys, off, NATIVE);
            }
            if (i < to) {
                long off = i * Float.BYTES;
                VectorMask<Float> m = S.indexInRange(0, (int) (to - i));
                FloatVector xv = FloatVector.fromMemorySegment(S, xs, off, NATIVE, m);
                FloatVector bv = FloatVector.fromMemorySegment(S, bs, off, NATIVE, m);
                xv.mul(bv).intoMemorySegment(ys, off, NATIVE, m);
            }
        });
    }

    /** {@code y = alpha x + y, one fused multiply-add per element}; y may alias x (each element is read before it is written). */
    static void axpy(CpuPool pool, float alpha, Tensor x, Tensor y) {
        MemorySegment xs = x.segment();
        MemorySegment bs = y.segment();
        MemorySegment ys = y.segment();
        pool.parallelRange(x.size(), GRAIN, (from, to) -> {
            long i = from;
            for (; i + L <= to; i += L) {
                long off = i * Float.BYTES;
                FloatVector xv = FloatVector.fromMemorySegment(S, xs, off, NATIVE);
                FloatVector bv = FloatVector.fromMemorySegment(S, bs, off, NATIVE);
                xv.fma(FloatVector.broadcast(S, alpha), bv).intoMemorySegment(ys, off, NATIVE);
            }
            if (i < to) {
                long off = i * Float.BYTES;
                VectorMask<Float> m = S.indexInRange(0, (int) (to - i));
                FloatVector xv = FloatVector.fromMemorySegment(S, xs, off, NATIVE, m);
                FloatVector bv = FloatVector.fromMemorySegment(S, bs, off, NATIVE, m);
                xv.fma(FloatVector.broadcast(S, alpha), bv).intoMemorySegment(ys, off, NATIVE, m);
            }
        });
    }

    /** {@code y = fma(b, z, a x)}; y may alias x or z. */
    static void axpby(CpuPool pool, float a, Tensor x, float b, Tensor z, Tensor y) {
        MemorySegment xs = x.segment();
        MemorySegment zs = z.segment();
        MemorySegment ys = y.segment();
        pool.parallelRange(x.size(), GRAIN, (from, to) -> {
            long i = from;
            for (; i + L <= to; i += L) {
                long off = i * Float.BYTES;
                FloatVector ax = FloatVector.fromMemorySegment(S, xs, off, NATIVE).mul(a);
                FloatVector.fromMemorySegment(S, zs, off, NATIVE).fma(FloatVector.broadcast(S, b), ax)
                        .intoMemorySegment(ys, off, NATIVE);
            }
            if (i < to) {
                long off = i * Float.BYTES;
                VectorMask<Float> m = S.indexInRange(0, (int) (to - i));
                FloatVector ax = FloatVector.fromMemorySegment(S, xs, off, NATIVE, m).mul(a);
                FloatVector.fromMemorySegment(S, zs, off, NATIVE, m).fma(FloatVector.broadcast(S, b), ax)
                        .intoMemorySegment(ys, off, NATIVE, m);
            }
        });
    }

    /** {@code y = alpha x}; y may alias x. */
    static void scale(CpuPool pool, Tensor x, float alpha, Tensor y) {
        MemorySegment xs = x.segment();
        MemorySegment ys = y.segment();
        pool.parallelRange(x.size(), GRAIN, (from, to) -> {
            long i = from;
            for (; i + L <= to; i += L) {
                long off = i * Float.BYTES;
                FloatVector.fromMemorySegment(S, xs, off, NATIVE).mul(alpha).intoMemorySegment(ys, off, NATIVE);
            }
            if (i < to) {
                long off = i * Float.BYTES;
                VectorMask<Float> m = S.indexInRange(0, (int) (to - i));
                FloatVector.fromMemorySegment(S, xs, off, NATIVE, m).mul(alpha).intoMemorySegment(ys, off, NATIVE, m);
            }
        });
    }

    /** One task per range of rows (sample, position): {@code y[row, :] = x[row, :] + v[row / positions, :]}. */
    static void addPerChannel(CpuPool pool, Tensor x, Tensor v, Tensor y) {
        int n = x.dim(0);
        int c = x.dim(-1);
        long positions = x.size() / ((long) n * c);
        MemorySegment xs = x.segment();
        MemorySegment vs = v.segment();
        MemorySegment ys = y.segment();
        pool.parallelRange((long) n * positions, Math.max(1, GRAIN / c), (from, to) -> {
            for (long row = from; row < to; row++) {
                long vOff = (row / positions) * c * Float.BYTES;
                long off = row * c * Float.BYTES;
                for (int k = 0; k < c; k += L) {
                    VectorMask<Float> m = S.indexInRange(k, c);
                    long kb = (long) k * Float.BYTES;
                    FloatVector.fromMemorySegment(S, xs, off + kb, NATIVE, m)
                            .add(FloatVector.fromMemorySegment(S, vs, vOff + kb, NATIVE, m))
                            .intoMemorySegment(ys, off + kb, NATIVE, m);
                }
            }
        });
    }

    /**
     * {@code dv[b, k] = sum_p dy[b, p, k]}: one task per (sample, vector of channels), each summing its positions
     * in order, in float over CHUNK positions and then in double.
     */
    static void sumPerChannel(CpuPool pool, Tensor dy, Tensor dv) {
        int n = dy.dim(0);
        int c = dy.dim(-1);
        int positions = (int) (dy.size() / ((long) n * c));
        int blocks = (c + L - 1) / L;
        MemorySegment ds = dy.segment();
        MemorySegment vs = dv.segment();
        pool.parallelFor(n * blocks, task -> {
            int b = task / blocks;
            int k = (task % blocks) * L;
            int used = Math.min(L, c - k);
            VectorMask<Float> m = S.indexInRange(k, c);
            double[] sum = new double[used];
            float[] lanes = new float[L];
            long step = (long) c * Float.BYTES;
            for (int p0 = 0; p0 < positions; p0 += CHUNK) {
                int p1 = Math.min(positions, p0 + CHUNK);
                FloatVector acc = FloatVector.zero(S);
                long off = (((long) b * positions + p0) * c + k) * Float.BYTES;
                for (int p = p0; p < p1; p++, off += step) {
                    acc = acc.add(FloatVector.fromMemorySegment(S, ds, off, NATIVE, m));
                }
                acc.intoArray(lanes, 0);
                for (int l = 0; l < used; l++) {
                    sum[l] += lanes[l];
                }
            }
            for (int l = 0; l < used; l++) {
                vs.setAtIndex(Tensor.F32, (long) b * c + k + l, (float) sum[l]);
            }
        });
    }

    /** Pixel by pixel: the first ca channels of y come from a, the next cb from b. */
    static void concatChannels(CpuPool pool, Tensor a, Tensor b, Tensor y) {
        int ca = a.dim(3);
        int cb = b.dim(3);
        MemorySegment as = a.segment();
        MemorySegment bs = b.segment();
        MemorySegment ys = y.segment();
        long pixels = a.size() / ca;
        pool.parallelRange(pixels, Math.max(1, GRAIN / (ca + cb)), (from, to) -> {
            for (long p = from; p < to; p++) {
                MemorySegment.copy(as, p * ca * Float.BYTES, ys, p * (ca + cb) * Float.BYTES, (long) ca * Float.BYTES);
                MemorySegment.copy(bs, p * cb * Float.BYTES, ys, (p * (ca + cb) + ca) * Float.BYTES,
                        (long) cb * Float.BYTES);
            }
        });
    }

    static void splitChannels(CpuPool pool, Tensor dy, Tensor da, Tensor db) {
        int ca = da.dim(3);
        int cb = db.dim(3);
        MemorySegment ys = dy.segment();
        MemorySegment as = da.segment();
        MemorySegment bs = db.segment();
        long pixels = da.size() / ca;
        pool.parallelRange(pixels, Math.max(1, GRAIN / (ca + cb)), (from, to) -> {
            for (long p = from; p < to; p++) {
                MemorySegment.copy(ys, p * (ca + cb) * Float.BYTES, as, p * ca * Float.BYTES, (long) ca * Float.BYTES);
                MemorySegment.copy(ys, (p * (ca + cb) + ca) * Float.BYTES, bs, p * cb * Float.BYTES,
                        (long) cb * Float.BYTES);
            }
        });
    }

    /** One task per range of input rows (sample, i): each input pixel's channels go to its 2x2 output block. */
    static void upsample(CpuPool pool, Tensor x, Tensor y) {
        int h = x.dim(1);
        int w = x.dim(2);
        int c = x.dim(3);
        MemorySegment xs = x.segment();
        MemorySegment ys = y.segment();
        long bytes = (long) c * Float.BYTES;
        pool.parallelRange((long) x.dim(0) * h, Math.max(1, GRAIN / ((long) w * c)), (from, to) -> {
            for (long row = from; row < to; row++) {
                for (int j = 0; j < w; j++) {
                    long src = (row * w + j) * bytes;
                    long top = ((2 * row) * 2 * w + 2 * j) * bytes;
                    long bottom = top + 2 * w * bytes;
                    MemorySegment.copy(xs, src, ys, top, bytes);
                    MemorySegment.copy(xs, src, ys, top + bytes, bytes);
                    MemorySegment.copy(xs, src, ys, bottom, bytes);
                    MemorySegment.copy(xs, src, ys, bottom + bytes, bytes);
                }
            }
        });
    }

    /** {@code dx = (dy[2i, 2j] + dy[2i, 2j+1]) + (dy[2i+1, 2j] + dy[2i+1, 2j+1])}, per output element. */
    static void upsampleBackward(CpuPool pool, Tensor dy, Tensor dx) {
        int h = dx.dim(1);
        int w = dx.dim(2);
        int c = dx.dim(3);
        MemorySegment ys = dy.segment();
        MemorySegment xs = dx.segment();
        long bytes = (long) c * Float.BYTES;
        pool.parallelRange((long) dx.dim(0) * h, Math.max(1, GRAIN / ((long) w * c)), (from, to) -> {
            for (long row = from; row < to; row++) {
                for (int j = 0; j < w; j++) {
                    long dst = (row * w + j) * bytes;
                    long top = ((2 * row) * 2 * w + 2 * j) * bytes;
                    long bottom = top + 2 * w * bytes;
                    for (int k = 0; k < c; k += L) {
                        VectorMask<Float> m = S.indexInRange(k, c);
                        long kb = (long) k * Float.BYTES;
                        FloatVector t = FloatVector.fromMemorySegment(S, ys, top + kb, NATIVE, m)
                                .add(FloatVector.fromMemorySegment(S, ys, top + bytes + kb, NATIVE, m));
                        FloatVector u = FloatVector.fromMemorySegment(S, ys, bottom + kb, NATIVE, m)
                                .add(FloatVector.fromMemorySegment(S, ys, bottom + bytes + kb, NATIVE, m));
                        t.add(u).intoMemorySegment(xs, dst + kb, NATIVE, m);
                    }
                }
            }
        });
    }

    // ------------------------------------------------------------------------------------------------
    // Losses
    // ------------------------------------------------------------------------------------------------

    /**
     * {@code sum (pred - target)^2} over each fixed piece of each sample, and {@code dpred = coef[b] (pred - target)}
     * in the same pass when {@code dpred} and {@code coef} are given. Returns the per-piece sums, piece
     * {@code b * piecesPerSample + q}.
     */
    private static double[] squaredPieces(CpuPool pool, Tensor pred, Tensor target, Tensor dpred, float[] coef) {
        int n = pred.dim(0);
        long d = pred.size() / n;
        int pps = (int) ((d + PIECE - 1) / PIECE);
        MemorySegment ps = pred.segment();
        MemorySegment ts = target.segment();
        MemorySegment gs = dpred == null ? null : dpred.segment();
        double[] pieces = new double[n * pps];
        pool.parallelFor(n * pps, task -> {
            int b = task / pps;
            long from = b * d + (long) (task % pps) * PIECE;
            long to = Math.min((b + 1) * d, from + PIECE);
            pieces[task] = gs == null ? sumSquares(ps, ts, from, to) : sumSquaresAndScale(ps, ts, gs, coef[b], from, to);
        });
        return pieces;
    }

    /** {@code sum (p - t)^2} over [from, to). */
    private static double sumSquares(MemorySegment ps, MemorySegment ts, long from, long to) {
        FloatVector acc = FloatVector.zero(S);
        long i = from;
        for (; i + L <= to; i += L) {
            long off = i * Float.BYTES;
            FloatVector diff = FloatVector.fromMemorySegment(S, ps, off, NATIVE)
                    .sub(FloatVector.fromMemorySegment(S, ts, off, NATIVE));
            acc = diff.fma(diff, acc);
        }
        if (i < to) {
            long off = i * Float.BYTES;
            VectorMask<Float> m = S.indexInRange(0, (int) (to - i));
            FloatVector diff = FloatVector.fromMemorySegment(S, ps, off, NATIVE, m)
                    .sub(FloatVector.fromMemorySegment(S, ts, off, NATIVE, m));
            acc = diff.fma(diff, acc);
        }
        return acc.reduceLanes(VectorOperators.ADD);
    }

    /** {@link #sumSquares}, also writing {@code g = coef (p - t)} over [from, to). */
    private static double sumSquaresAndScale(MemorySegment ps, MemorySegment ts, MemorySegment gs, float coef,
                                             long from, long to) {
        FloatVector acc = FloatVector.zero(S);
        long i = from;
        for (; i + L <= to; i += L) {
            long off = i * Float.BYTES;
            FloatVector diff = FloatVector.fromMemorySegment(S, ps, off, NATIVE)
                    .sub(FloatVector.fromMemorySegment(S, ts, off, NATIVE));
            acc = diff.fma(diff, acc);
            diff.mul(coef).intoMemorySegment(gs, off, NATIVE);
        }
        if (i < to) {
            long off = i * Float.BYTES;
            VectorMask<Float> m = S.indexInRange(0, (int) (to - i));
            FloatVector diff = FloatVector.fromMemorySegment(S, ps, off, NATIVE, m)
                    .sub(FloatVector.fromMemorySegment(S, ts, off, NATIVE, m));
            acc = diff.fma(diff, acc);
            diff.mul(coef).intoMemorySegment(gs, off, NATIVE, m);
        }
        return acc.reduceLanes(VectorOperators.ADD);
    }

    /** Sums each sample's pieces in order. */
    private static double[] perSample(double[] pieces, int n) {
        int pps = pieces.length / n;
        double[] s = new double[n];
        for (int b = 0; b < n; b++) {
            for (int q = 0; q < pps; q++) {
                s[b] += pieces[b * pps + q];
            }
        }
        return s;
    }

    private static double weight(Tensor weights, int b) {
        return weights == null ? 1 : weights.get(b);
    }

    /** Weighted MSE (Ops.mseLoss): the gradient {@code 2 w[b] (pred - target) / (N D)} needs no loss value. */
    static double mseLoss(CpuPool pool, Tensor pred, Tensor target, Tensor weights, Tensor dpred) {
        int n = pred.dim(0);
        double d = (double) pred.size() / n;
        float[] coef = new float[n];
        for (int b = 0; b < n; b++) {
            coef[b] = (float) (2 * weight(weights, b) / (n * d));
        }
        double[] s = perSample(squaredPieces(pool, pred, target, dpred, coef), n);
        double loss = 0;
        for (int b = 0; b < n; b++) {
            loss += weight(weights, b) * s[b] / d;
        }
        return loss / n;
    }

    /**
     * Weighted pseudo-Huber (Song & Dhariwal 2023, eq. 10): one pass for the per-sample squared norms, then
     * {@code dpred = w[b] (pred - target) / (N sqrt(s_b + c^2))}. {@code d_b = s_b / (sqrt(s_b + c^2) + c)} avoids
     * the cancellation of {@code sqrt(s + c^2) - c} when the error is small against c.
     */
    static double pseudoHuberLoss(CpuPool pool, Tensor pred, Tensor target, Tensor weights, float c, Tensor dpred) {
        int n = pred.dim(0);
        double[] s = perSample(squaredPieces(pool, pred, target, null, null), n);
        double loss = 0;
        float[] coef = new float[n];
        for (int b = 0; b < n; b++) {
            double norm = Math.sqrt(s[b] + (double) c * c);
            loss += weight(weights, b) * s[b] / (norm + c);
            coef[b] = (float) (weight(weights, b) / (n * norm));
        }
        if (dpred != null) {
            squaredPieces(pool, pred, target, dpred, coef);
        }
        return loss / n;
    }

    // ------------------------------------------------------------------------------------------------
    // Time embeddings
    // ------------------------------------------------------------------------------------------------

    /*
     * The embeddings are N x D transcendental calls (D ~ 256), negligible next to one U-Net layer, and their
     * arguments reach scale * t ~ 1e3 where float32 rounding of the argument alone moves sin by ~6e-5; so the
     * arguments and sin/cos are evaluated in double and rounded once, which keeps them within the 1e-5 test bound
     * of the float64 oracle. Vectorizing them would buy nothing measurable.
     */

    static void sinusoidalEmbedding(CpuPool pool, Tensor t, boolean flipSinToCos, float downscaleFreqShift,
                                    float scale, float maxPeriod, Tensor y) {
        int dim = y.dim(1);
        int half = dim / 2;
        double[] freq = new double[half];
        for (int j = 0; j < half; j++) {
            freq[j] = Math.exp(-Math.log(maxPeriod) * j / (half - (double) downscaleFreqShift));
        }
        MemorySegment ts = t.segment();
        MemorySegment ys = y.segment();
        pool.parallelFor(t.dim(0), b -> {
            double tb = (double) scale * ts.getAtIndex(Tensor.F32, b);
            long row = (long) b * dim;
            for (int j = 0; j < half; j++) {
                double arg = tb * freq[j];
                ys.setAtIndex(Tensor.F32, row + j, (float) (flipSinToCos ? Math.cos(arg) : Math.sin(arg)));
                ys.setAtIndex(Tensor.F32, row + half + j, (float) (flipSinToCos ? Math.sin(arg) : Math.cos(arg)));
            }
            if (dim % 2 == 1) {
                ys.setAtIndex(Tensor.F32, row + dim - 1, 0f);
            }
        });
    }

    static void fourierEmbedding(CpuPool pool, Tensor t, Tensor weight, boolean log, boolean flipSinToCos,
                                 Tensor y) {
        int half = weight.dim(0);
        float[] w = weight.toArray();
        MemorySegment ts = t.segment();
        MemorySegment ys = y.segment();
        pool.parallelFor(t.dim(0), b -> {
            double tb = ts.getAtIndex(Tensor.F32, b);
            double x = 2 * Math.PI * (log ? Math.log(tb) : tb);
            long row = (long) b * 2 * half;
            for (int j = 0; j < half; j++) {
                double arg = x * w[j];
                ys.setAtIndex(Tensor.F32, row + j, (float) (flipSinToCos ? Math.cos(arg) : Math.sin(arg)));
                ys.setAtIndex(Tensor.F32, row + half + j, (float) (flipSinToCos ? Math.sin(arg) : Math.cos(arg)));
            }
        });
    }
}
