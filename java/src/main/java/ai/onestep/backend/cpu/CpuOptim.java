package ai.onestep.backend.cpu;

import ai.onestep.backend.AdamUpdate;
import ai.onestep.tensor.Tensor;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * Optimizer steps, the sum of squares and the EMA on the CPU: one streaming pass over the tensors, vectorized
 * with the Vector API, parallel over fixed blocks.
 *
 * <p>These ops move 4 to 28 bytes per element for a handful of flops, so memory bandwidth sets their speed;
 * the kernels read every stream once, keep all per-step scalars (bias corrections, rectification) out of the
 * loop, and run the whole update in registers.
 *
 * <p>Determinism: the tensors are cut into blocks of {@link #BLOCK} elements whatever the thread count, so the
 * same elements always go through the same vector lanes or the same scalar tail; the sum of squares adds one
 * double partial per block, in block order.
 */
final class CpuOptim {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    /** Doubles of the preferred width, and floats with as many lanes, for a lane-for-lane float-to-double cast. */
    private static final VectorSpecies<Double> D = DoubleVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Float> FD = VectorSpecies.of(float.class,
            VectorShape.forBitSize(D.length() * Float.SIZE));
    private static final ByteOrder ORDER = ByteOrder.nativeOrder();
    /** Elements per task: 64 KiB per stream, large enough to amortize a task, small enough to balance. */
    static final int BLOCK = 16384;

    private final CpuPool pool;

    CpuOptim(CpuPool pool) {
        this.pool = pool;
    }

    private static int blocks(long n) {
        return (int) ((n + BLOCK - 1) / BLOCK);
    }

    /** One Adam or RAdam step with the scalars of {@link AdamUpdate}. */
    void step(Tensor p, Tensor g, Tensor m, Tensor v, float beta1, float beta2, float eps, AdamUpdate u) {
        if (u.adaptive()) {
            adaptive(p, g, m, v, beta1, beta2, u.vScale(), eps, u.step(), u.l2(), u.decay());
        } else {
            momentum(p, g, m, v, beta1, beta2, u.step(), u.l2(), u.decay());
        }
    }

    /**
     * The shared Adam/RAdam update, per element:
     * <pre>
     *   g' = g + l2 p;  m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'^2
     *   p  = decay p - step m / (sqrt(v) vScale + eps)
     * </pre>
     * {@code l2 = wd, decay = 1} for L2 decay; {@code l2 = 0, decay = 1 - lr wd} for decoupled decay.
     */
    private void adaptive(Tensor p, Tensor g, Tensor m, Tensor v, float b1, float b2, float vScale, float eps,
                          float step, float l2, float decay) {
        MemorySegment ps = p.segment();
        MemorySegment gs = g.segment();
        MemorySegment ms = m.segment();
        MemorySegment vs = v.segment();
        long n = p.size();
        float c1 = 1 - b1;
        float c2 = 1 - b2;
        pool.parallelFor(blocks(n), blk -> {
            FloatVector l2v = FloatVector.broadcast(F, l2);
            FloatVector b1v = FloatVector.broadcast(F, b1);
            FloatVector b2v = FloatVector.broadcast(F, b2);
            FloatVector vScalev = FloatVector.broadcast(F, vScale);
            FloatVector epsv = FloatVector.broadcast(F, eps);
            long from = (long) blk * BLOCK;
            long to = Math.min(n, from + BLOCK);
            long i = from;
            for (long upper = from + F.loopBound(to - from); i < upper; i += F.length()) {
                long off = i * Float.BYTES;
                FloatVector pv = FloatVector.fromMemorySegment(F, ps, off, ORDER);
                FloatVector gv = FloatVector.fromMemorySegment(F, gs, off, ORDER);
                FloatVector mv = FloatVector.fromMemorySegment(F, ms, off, ORDER);
                FloatVector vv = FloatVector.fromMemorySegment(F, vs, off, ORDER);
                gv = pv.fma(l2v, gv);
                mv = mv.fma(b1v, gv.mul(c1));
                vv = vv.fma(b2v, gv.mul(gv).mul(c2));
                FloatVector denom = vv.sqrt().fma(vScalev, epsv);
                pv = pv.mul(decay).sub(mv.mul(step).div(denom));
                pv.intoMemorySegment(ps, off, ORDER);
                mv.intoMemorySegment(ms, off, ORDER);
                vv.intoMemorySegment(vs, off, ORDER);
            }
            for (; i < to; i++) {
                float pi = ps.getAtIndex(Tensor.F32, i);
                float gi = Math.fma(pi, l2, gs.getAtIndex(Tensor.F32, i));
                float mi = Math.fma(ms.getAtIndex(Tensor.F32, i), b1, gi * c1);
                float vi = Math.fma(vs.getAtIndex(Tensor.F32, i), b2, gi * gi * c2);
                float denom = Math.fma((float) Math.sqrt(vi), vScale, eps);
                ps.setAtIndex(Tensor.F32, i, pi * decay - mi * step / denom);
                ms.setAtIndex(Tensor.F32, i, mi);
                vs.setAtIndex(Tensor.F32, i, vi);
            }
        });
    }

    /** RAdam's un-rectified steps: the moments as in {@link #adaptive}, then {@code p = decay p - step m}. */
    private void momentum(Tensor p, Tensor g, Tensor m, Tensor v, float b1, float b2, float step, float l2,
                          float decay) {
        MemorySegment ps = p.segment();
        MemorySegment gs = g.segment();
        MemorySegment ms = m.segment();
        MemorySegment vs = v.segment();
        long n = p.size();
        float c1 = 1 - b1;
        float c2 = 1 - b2;
        pool.parallelFor(blocks(n), blk -> {
            FloatVector l2v = FloatVector.broadcast(F, l2);
            FloatVector b1v = FloatVector.broadcast(F, b1);
            FloatVector b2v = FloatVector.broadcast(F, b2);
            long from = (long) blk * BLOCK;
            long to = Math.min(n, from + BLOCK);
            long i = from;
            for (long upper = from + F.loopBound(to - from); i < upper; i += F.length()) {
                long off = i * Float.BYTES;
                FloatVector pv = FloatVector.fromMemorySegment(F, ps, off, ORDER);
                FloatVector gv = FloatVector.fromMemorySegment(F, gs, off, ORDER);
                FloatVector mv = FloatVector.fromMemorySegment(F, ms, off, ORDER);
                FloatVector vv = FloatVector.fromMemorySegment(F, vs, off, ORDER);
                gv = pv.fma(l2v, gv);
                mv = mv.fma(b1v, gv.mul(c1));
                vv = vv.fma(b2v, gv.mul(gv).mul(c2));
                pv = pv.mul(decay).sub(mv.mul(step));
                pv.intoMemorySegment(ps, off, ORDER);
                mv.intoMemorySegment(ms, off, ORDER);
                vv.intoMemorySegment(vs, off, ORDER);
            }
            for (; i < to; i++) {
                float pi = ps.getAtIndex(Tensor.F32, i);
                float gi = Math.fma(pi, l2, gs.getAtIndex(Tensor.F32, i));
                float mi = Math.fma(ms.getAtIndex(Tensor.F32, i), b1, gi * c1);
                float vi = Math.fma(vs.getAtIndex(Tensor.F32, i), b2, gi * gi * c2);
                ps.setAtIndex(Tensor.F32, i, pi * decay - mi * step);
                ms.setAtIndex(Tensor.F32, i, mi);
                vs.setAtIndex(Tensor.F32, i, vi);
            }
        });
    }

    /**
     * {@code sum x^2} in double: each float is widened lane for lane (a float's square is exact in double), four
     * independent accumulators per block hide the FMA latency, and the block partials are added in block order.
     */
    double sumOfSquares(Tensor x) {
        MemorySegment xs = x.segment();
        long n = x.size();
        int blocks = blocks(n);
        double[] partial = new double[blocks];
        int w = D.length();
        pool.parallelFor(blocks, blk -> {
            long from = (long) blk * BLOCK;
            long to = Math.min(n, from + BLOCK);
            DoubleVector a0 = DoubleVector.zero(D);
            DoubleVector a1 = DoubleVector.zero(D);
            DoubleVector a2 = DoubleVector.zero(D);
            DoubleVector a3 = DoubleVector.zero(D);
            long i = from;
            for (long upper = from + (to - from) / (4L * w) * (4L * w); i < upper; i += 4L * w) {
                long off = i * Float.BYTES;
                DoubleVector d0 = widen(xs, off);
                DoubleVector d1 = widen(xs, off + (long) w * Float.BYTES);
                DoubleVector d2 = widen(xs, off + 2L * w * Float.BYTES);
                DoubleVector d3 = widen(xs, off + 3L * w * Float.BYTES);
                a0 = d0.fma(d0, a0);
                a1 = d1.fma(d1, a1);
                a2 = d2.fma(d2, a2);
                a3 = d3.fma(d3, a3);
            }
            double s = a0.add(a1).add(a2.add(a3)).reduceLanes(VectorOperators.ADD);
            for (; i < to; i++) {
                double xi = xs.getAtIndex(Tensor.F32, i);
                s += xi * xi;
            }
            partial[blk] = s;
        });
        double total = 0;
        for (double s : partial) {
            total += s;
        }
        return total;
    }

    private static DoubleVector widen(MemorySegment s, long byteOffset) {
        return (DoubleVector) FloatVector.fromMemorySegment(FD, s, byteOffset, ORDER).castShape(D, 0);
    }

    /** {@code target = mu target + (1 - mu) source}; mu = 1 keeps target and mu = 0 copies source exactly. */
    void ema(Tensor target, Tensor source, float mu) {
        MemorySegment ts = target.segment();
        MemorySegment ss = source.segment();
        long n = target.size();
        float omu = 1 - mu;
        pool.parallelFor(blocks(n), blk -> {
            FloatVector muv = FloatVector.broadcast(F, mu);
            long from = (long) blk * BLOCK;
            long to = Math.min(n, from + BLOCK);
            long i = from;
            for (long upper = from + F.loopBound(to - from); i < upper; i += F.length()) {
                long off = i * Float.BYTES;
                FloatVector tv = FloatVector.fromMemorySegment(F, ts, off, ORDER);
                FloatVector sv = FloatVector.fromMemorySegment(F, ss, off, ORDER);
                tv.fma(muv, sv.mul(omu)).intoMemorySegment(ts, off, ORDER);
            }
            for (; i < to; i++) {
                float ti = ts.getAtIndex(Tensor.F32, i);
                ts.setAtIndex(Tensor.F32, i, Math.fma(ti, mu, ss.getAtIndex(Tensor.F32, i) * omu));
            }
        });
    }
}
