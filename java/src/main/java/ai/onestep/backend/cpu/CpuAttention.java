package ai.onestep.backend.cpu;

import ai.onestep.tensor.Tensor;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Multi-head self-attention on the CPU, structured like FlashAttention-2 (Dao 2023): the T x T attention matrix is
 * never stored; scores exist only one (key tile x query tile) block at a time.
 *
 * <p>Forward (Algorithm 1): tasks over (sample, head, query tiles). A task copies its head's strided slices of K and
 * V into packed rows once, then for each query tile walks the key tiles keeping each query's running max {@code m}
 * and running sum {@code l} (online softmax, Milakov and Gimelshein 2018); the output accumulator is rescaled by
 * {@code exp(m_old - m_new)} whenever the max grows and divided by {@code l} once at the end, and
 * {@code lse = m + log l} is kept for the backward pass. The tile is held transposed (queries on the vector lanes),
 * so the softmax statistics are plain vector operations.
 *
 * <p>Backward (Algorithm 2): one task per (sample, head). It walks key tiles and, inside, query tiles, recomputing
 * {@code P = exp(S - lse)}, and accumulates dV, dK (per key tile) and dQ (per query row) in its own buffers. Putting
 * a whole head in one task does each of the five matrix products once (no recompute of S and dP for dQ) and keeps
 * every accumulation on one thread, in a fixed order, so the result is bit-identical for any thread count; N*heads
 * tasks (at least 2 for every U-Net shape) keep the cores busy.
 *
 * <p>All products go through one register-blocked kernel family, {@link #gemm}, whose A operand is read with
 * arbitrary row and column strides (so transposed operands cost nothing). Packing pads with zeros to the kernels'
 * multiples (rows of 4 or 8, columns of the vector length); padded keys get a score of -inf so their probability
 * is exactly 0, and padded query rows get {@code lse = +inf} in the backward pass for the same reason. No edge case
 * needs a branch in a micro-kernel.
 */
final class CpuAttention {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final int L = F.length();
    /** Key tile: in the backward pass the widest micro-kernel (4 vectors); in the forward pass 64 key rows. */
    private static final int BK = 4 * L;
    /** Query tile in the forward pass, on the vector lanes: the widest micro-kernel, 4 vectors. */
    private static final int BQ_FWD = 4 * L;
    /** Query tile height in the backward pass. */
    private static final int BQ = 64;
    private static final float NEG_INF = Float.NEGATIVE_INFINITY;

    private final CpuPool pool;

    CpuAttention(CpuPool pool) {
        this.pool = pool;
    }

    /** Per-thread packed tiles, grown on demand and reused across calls (padding is rewritten on every pack). */
    private static final class Scratch {
        float[] q, kt, ks, vt, v, dO, s, dp, acc, dq, dk, dv, m, l, lse, negD, row;
    }

    private static final ThreadLocal<Scratch> SCRATCH = ThreadLocal.withInitial(Scratch::new);

    private static float[] grow(float[] a, int n) {
        return a != null && a.length >= n ? a : new float[n];
    }

    private static int roundUp(int x, int m) {
        return (x + m - 1) / m * m;
    }

    void attention(Tensor q, Tensor k, Tensor v, int heads, Tensor o, Tensor lse) {
        int n = q.dim(0), t = q.dim(1), c = q.dim(2), hd = c / heads;
        int tq = roundUp(t, L), qTiles = (tq + BQ_FWD - 1) / BQ_FWD;
        // A task packs its head's K and V once for all of its query tiles, so a head is split over several tasks
        // only as far as needed to give every thread two tasks. The tiles themselves are fixed, and each query's
        // result depends only on its tile, so the split does not change a bit of the output.
        int perTask = Math.max(1, qTiles * n * heads / (2 * pool.threads()));
        int groups = (qTiles + perTask - 1) / perTask;
        float scale = (float) (1.0 / Math.sqrt(hd));
        MemorySegment qs = q.segment(), ks = k.segment(), vs = v.segment(), os = o.segment(), ls = lse.segment();
        pool.parallelFor(n * heads * groups, task -> {
            int g = task % groups, bh = task / groups;
            forwardTask(qs, ks, vs, os, ls, bh / heads, bh % heads, heads, t, c, hd, g * perTask,
                    Math.min(qTiles, (g + 1) * perTask), scale);
        });
    }

    /**
     * Query tiles {@code [qt0, qt1)} (of BQ_FWD queries each) of head h of sample b. Each tile is computed
     * transposed, queries along the vector lanes: {@code S^T = K (Q/sqrt(hd))^T} and {@code O^T += V^T P^T}. Then
     * each query's running max and sum are vectors, the online softmax needs no horizontal reductions, and only the
     * small query tile is transposed when packing (K and V are copied row by row).
     */
    private static void forwardTask(MemorySegment qSeg, MemorySegment kSeg, MemorySegment vSeg, MemorySegment oSeg,
                                    MemorySegment lseSeg, int b, int h, int heads, int t, int c, int hd, int qt0,
                                    int qt1, float scale) {
        int tk = roundUp(t, 4), hd4 = roundUp(hd, 4), tq = roundUp(t, L);
        Scratch sc = SCRATCH.get();
        float[] qT = sc.q = grow(sc.q, hd * BQ_FWD);
        float[] k = sc.ks = grow(sc.ks, tk * hd);
        float[] v = sc.v = grow(sc.v, tk * hd4);
        float[] s = sc.s = grow(sc.s, BK * BQ_FWD);
        float[] acc = sc.acc = grow(sc.acc, hd4 * BQ_FWD);
        float[] m = sc.m = grow(sc.m, BQ_FWD);
        float[] l = sc.l = grow(sc.l, BQ_FWD);
        float[] row = sc.row = grow(sc.row, hd4);
        int col0 = h * hd;
        packRows(kSeg, b, t, c, col0, hd, 0, tk, 1f, k, hd);
        packRows(vSeg, b, t, c, col0, hd, 0, tk, 1f, v, hd4);
        for (int qt = qt0; qt < qt1; qt++) {
            int i0 = qt * BQ_FWD;
            forwardTile(qSeg, oSeg, lseSeg, b, h, heads, t, c, hd, hd4, tk, i0, Math.min(BQ_FWD, tq - i0), scale,
                    qT, k, v, s, acc, m, l, row);
        }
    }

    private static void forwardTile(MemorySegment qSeg, MemorySegment oSeg, MemorySegment lseSeg, int b, int h,
                                    int heads, int t, int c, int hd, int hd4, int tk, int i0, int qw, float scale,
                                    float[] qT, float[] k, float[] v, float[] s, float[] acc, float[] m, float[] l,
                                    float[] row) {
        int col0 = h * hd;
        // The scale goes into Q once instead of into every score.
        packTransposed(qSeg, b, t, c, col0, hd, i0, qw, scale, qT, qw, row);
        Arrays.fill(m, 0, qw, NEG_INF);
        Arrays.fill(l, 0, qw, 0f);
        Arrays.fill(acc, 0, hd4 * qw, 0f);
        for (int j0 = 0; j0 < tk; j0 += BK) {
            int kw = Math.min(BK, tk - j0);
            Arrays.fill(s, 0, kw * qw, 0f);
            gemm(k, j0 * hd, hd, 1, qT, 0, qw, s, 0, qw, kw, qw, hd);
            // Padded keys get -inf, so probability 0. Set after the product: 0 * an infinite query would be NaN.
            if (j0 + kw > t) {
                Arrays.fill(s, (t - j0) * qw, kw * qw, NEG_INF);
            }
            onlineSoftmaxColumns(s, kw, qw, m, l, acc, hd4);
            gemm(v, j0 * hd4, 1, hd4, s, 0, qw, acc, 0, qw, hd4, qw, kw);
        }
        int rows = Math.min(qw, t - i0);
        for (int i = 0; i < rows; i++) {
            float inv = l[i] == 0f ? 0f : 1f / l[i];
            for (int d = 0; d < hd; d++) {
                row[d] = acc[d * qw + i] * inv;
            }
            MemorySegment.copy(row, 0, oSeg, Tensor.F32, ((long) (b * t + i0 + i) * c + col0) * Float.BYTES, hd);
            float lse = l[i] == 0f ? NEG_INF : (float) (m[i] + Math.log(l[i]));
            lseSeg.setAtIndex(Tensor.F32, (long) (b * heads + h) * t + i0 + i, lse);
        }
    }

    /**
     * The online-softmax step (FlashAttention-2, Algorithm 1, lines 8-10) for a transposed score tile
     * {@code s[key * qw + query]}, L queries at a time: {@code m_new = max(m_old, max_j s_j)}, the scores become
     * {@code exp(s - m_new)}, and the running sum and the output columns are rescaled by {@code exp(m_old - m_new)}.
     * While every score a query has seen is -inf, exponents are taken relative to 0 instead of the max, so the
     * query's weights stay 0 rather than becoming {@code exp(-inf + inf) = NaN}.
     */
    private static void onlineSoftmaxColumns(float[] s, int kw, int qw, float[] m, float[] l, float[] acc, int hd4) {
        for (int g = 0; g < qw; g += L) {
            FloatVector mOld = FloatVector.fromArray(F, m, g);
            FloatVector mNew = mOld;
            for (int j = 0; j < kw; j++) {
                mNew = mNew.max(FloatVector.fromArray(F, s, j * qw + g));
            }
            FloatVector base = mNew.blend(0f, mNew.eq(NEG_INF));
            FloatVector sum = FloatVector.zero(F);
            for (int j = 0; j < kw; j++) {
                FloatVector p = VectorMath.exp(FloatVector.fromArray(F, s, j * qw + g).sub(base));
                p.intoArray(s, j * qw + g);
                sum = sum.add(p);
            }
            FloatVector alpha = VectorMath.exp(mOld.sub(base));
            alpha.fma(FloatVector.fromArray(F, l, g), sum).intoArray(l, g);
            mNew.intoArray(m, g);
            for (int d = 0; d < hd4; d++) {
                FloatVector.fromArray(F, acc, d * qw + g).mul(alpha).intoArray(acc, d * qw + g);
            }
        }
    }

    void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dO, int heads,
                           Tensor dq, Tensor dk, Tensor dv) {
        int n = q.dim(0), t = q.dim(1), c = q.dim(2), hd = c / heads;
        // Query rows padded to a multiple of 8, so that dQ = dS K also gets the 8-row kernels.
        int tq = roundUp(t, 8), tk = roundUp(t, L), hdp = roundUp(hd, L);
        float scale = (float) (1.0 / Math.sqrt(hd));
        MemorySegment qs = q.segment(), ks = k.segment(), vs = v.segment(), os = o.segment(), ls = lse.segment();
        MemorySegment dos = dO.segment(), dqs = dq.segment(), dks = dk.segment(), dvs = dv.segment();
        pool.parallelFor(n * heads, bh -> backwardHead(qs, ks, vs, os, ls, dos, dqs, dks, dvs,
                bh / heads, bh % heads, heads, t, c, hd, hdp, tq, tk, scale));
    }

    private static void backwardHead(MemorySegment qSeg, MemorySegment kSeg, MemorySegment vSeg, MemorySegment oSeg,
                                     MemorySegment lseSeg, MemorySegment dOSeg, MemorySegment dqSeg,
                                     MemorySegment dkSeg, MemorySegment dvSeg, int b, int h, int heads, int t, int c,
                                     int hd, int hdp, int tq, int tk, float scale) {
        Scratch sc = SCRATCH.get();
        float[] q = sc.q = grow(sc.q, tq * hdp);
        float[] kt = sc.kt = grow(sc.kt, hd * tk);
        float[] ks = sc.ks = grow(sc.ks, tk * hdp);
        float[] vt = sc.vt = grow(sc.vt, hd * tk);
        float[] dOp = sc.dO = grow(sc.dO, tq * hdp);
        float[] s = sc.s = grow(sc.s, BQ * BK);
        float[] dp = sc.dp = grow(sc.dp, BQ * BK);
        float[] dqa = sc.dq = grow(sc.dq, tq * hdp);
        float[] dka = sc.dk = grow(sc.dk, tk * hdp);
        float[] dva = sc.dv = grow(sc.dv, tk * hdp);
        float[] lr = sc.lse = grow(sc.lse, tq);
        float[] negD = sc.negD = grow(sc.negD, tq);
        float[] row = sc.row = grow(sc.row, hdp);
        int col0 = h * hd;
        // Q and K enter dK and dQ scaled (dK = dS^T Q / sqrt(hd), dQ = dS K / sqrt(hd)), and S = (Q / sqrt(hd)) K^T.
        packRows(qSeg, b, t, c, col0, hd, 0, tq, scale, q, hdp);
        packTransposed(kSeg, b, t, c, col0, hd, 0, tk, 1f, kt, tk, row);
        packRows(kSeg, b, t, c, col0, hd, 0, tk, scale, ks, hdp);
        packTransposed(vSeg, b, t, c, col0, hd, 0, tk, 1f, vt, tk, row);
        packRows(dOSeg, b, t, c, col0, hd, 0, tq, 1f, dOp, hdp);
        // D_i = rowsum(dO_i * O_i) (FlashAttention-2, Algorithm 2, line 4), stored negated so that dP starts at -D.
        for (int i = 0; i < t; i++) {
            MemorySegment.copy(oSeg, Tensor.F32, ((long) (b * t + i) * c + col0) * Float.BYTES, row, 0, hd);
            double d = 0;
            for (int x = 0; x < hd; x++) {
                d += (double) row[x] * dOp[i * hdp + x];
            }
            negD[i] = (float) -d;
            lr[i] = lseSeg.getAtIndex(Tensor.F32, (long) (b * heads + h) * t + i);
        }
        Arrays.fill(negD, t, tq, 0f);
        Arrays.fill(lr, t, tq, Float.POSITIVE_INFINITY);
        Arrays.fill(dqa, 0, tq * hdp, 0f);
        Arrays.fill(dka, 0, tk * hdp, 0f);
        Arrays.fill(dva, 0, tk * hdp, 0f);
        for (int j0 = 0; j0 < tk; j0 += BK) {
            int kw = Math.min(BK, tk - j0);
            for (int i0 = 0; i0 < tq; i0 += BQ) {
                int qr = Math.min(BQ, tq - i0);
                scoreTile(q, i0 * hdp, hdp, kt, j0, tk, s, qr, kw, hd, t);
                for (int r = 0; r < qr; r++) {
                    Arrays.fill(dp, r * BK, r * BK + kw, negD[i0 + r]);
                }
                for (int r = 0; r < qr; r++) {
                    probabilities(s, r * BK, kw, lr[i0 + r]);
                }
                // dV += P^T dO: P^T is read in place by swapping P's strides.
                gemm(s, 0, 1, BK, dOp, i0 * hdp, hdp, dva, j0 * hdp, hdp, kw, hdp, qr);
                // dP - D = dO V^T - D, then dS = P * (dP - D).
                gemm(dOp, i0 * hdp, hdp, 1, vt, j0, tk, dp, 0, BK, qr, kw, hd);
                for (int r = 0; r < qr; r++) {
                    for (int j = 0; j < kw; j += L) {
                        int at = r * BK + j;
                        FloatVector.fromArray(F, s, at).mul(FloatVector.fromArray(F, dp, at)).intoArray(dp, at);
                    }
                }
                gemm(dp, 0, 1, BK, q, i0 * hdp, hdp, dka, j0 * hdp, hdp, kw, hdp, qr);
                gemm(dp, 0, BK, 1, ks, j0 * hdp, hdp, dqa, i0 * hdp, hdp, qr, hdp, kw);
            }
        }
        for (int i = 0; i < t; i++) {
            long at = ((long) (b * t + i) * c + col0) * Float.BYTES;
            MemorySegment.copy(dqa, i * hdp, dqSeg, Tensor.F32, at, hd);
            MemorySegment.copy(dka, i * hdp, dkSeg, Tensor.F32, at, hd);
            MemorySegment.copy(dva, i * hdp, dvSeg, Tensor.F32, at, hd);
        }
    }

    /**
     * Backward pass: the score tile {@code S = Qs K^T} for key columns {@code [j0, j0 + kw)} into {@code s} (leading
     * dimension BK). Padded keys (index >= t) are set to -inf afterwards, not by the product: a zero-padded key
     * times an infinite query would be NaN.
     */
    private static void scoreTile(float[] q, int qOff, int hdp, float[] kt, int j0, int tk, float[] s, int qr,
                                  int kw, int hd, int t) {
        for (int r = 0; r < qr; r++) {
            Arrays.fill(s, r * BK, r * BK + kw, 0f);
        }
        gemm(q, qOff, hdp, 1, kt, j0, tk, s, 0, BK, qr, kw, hd);
        if (j0 + kw > t) {
            for (int r = 0; r < qr; r++) {
                Arrays.fill(s, r * BK + t - j0, r * BK + kw, NEG_INF);
            }
        }
    }

    /**
     * {@code P = exp(S - lse)} for one row of a score tile, in place. A row with {@code lse = -inf} had every score
     * -inf (its output is 0), so it gets P = 0 rather than {@code exp(-inf + inf) = NaN}.
     */
    private static void probabilities(float[] s, int off, int kw, float lse) {
        if (lse == NEG_INF) {
            Arrays.fill(s, off, off + kw, 0f);
            return;
        }
        FloatVector lv = FloatVector.broadcast(F, lse);
        for (int j = 0; j < kw; j += L) {
            VectorMath.exp(FloatVector.fromArray(F, s, off + j).sub(lv)).intoArray(s, off + j);
        }
    }

    /**
     * Gathers rows {@code [r0, r0 + rows)} of head columns {@code [col0, col0 + hd)} of sample b into
     * {@code dst[r * ld + d]}, times {@code scale}; rows past T and columns past hd are zero.
     */
    private static void packRows(MemorySegment seg, int b, int t, int c, int col0, int hd, int r0, int rows,
                                 float scale, float[] dst, int ld) {
        int real = Math.max(0, Math.min(rows, t - r0));
        for (int r = 0; r < real; r++) {
            long at = ((long) (b * t + r0 + r) * c + col0) * Float.BYTES;
            MemorySegment.copy(seg, Tensor.F32, at, dst, r * ld, hd);
            if (scale != 1f) {
                for (int d = 0; d < hd; d++) {
                    dst[r * ld + d] *= scale;
                }
            }
            Arrays.fill(dst, r * ld + hd, r * ld + ld, 0f);
        }
        Arrays.fill(dst, real * ld, rows * ld, 0f);
    }

    /**
     * Gathers rows {@code [r0, r0 + rows)} of the head transposed and times {@code scale}:
     * {@code dst[d * ld + r] = scale * x[b, r0 + r, col0 + d]}, columns past T zero.
     */
    private static void packTransposed(MemorySegment seg, int b, int t, int c, int col0, int hd, int r0, int rows,
                                       float scale, float[] dst, int ld, float[] row) {
        int real = Math.max(0, Math.min(rows, t - r0));
        for (int r = 0; r < real; r++) {
            MemorySegment.copy(seg, Tensor.F32, ((long) (b * t + r0 + r) * c + col0) * Float.BYTES, row, 0, hd);
            for (int d = 0; d < hd; d++) {
                dst[d * ld + r] = row[d] * scale;
            }
        }
        for (int d = 0; d < hd; d++) {
            Arrays.fill(dst, d * ld + real, d * ld + rows, 0f);
        }
    }

    /**
     * {@code C[rows x width] += A[rows x kc] B[kc x width]} with {@code A(r, k) = a[aOff + r*ars + k*aks]} (so a
     * transposed A costs nothing: its elements are broadcast one at a time), B and C row-major with leading
     * dimensions ldb and ldc. rows is a multiple of 4 and width of L; the column edge is covered by narrower
     * kernels, never by branches inside one.
     */
    static void gemm(float[] a, int aOff, int ars, int aks, float[] b, int bOff, int ldb,
                     float[] c, int cOff, int ldc, int rows, int width, int kc) {
        int r = 0;
        for (; r + 8 <= rows; r += 8) {
            int ar = aOff + r * ars, cr = cOff + r * ldc;
            int w = 0;
            for (; w + 4 * L <= width; w += 4 * L) {
                kernel4x4(a, ar, ars, aks, b, bOff + w, ldb, c, cr + w, ldc, kc);
                kernel4x4(a, ar + 4 * ars, ars, aks, b, bOff + w, ldb, c, cr + 4 * ldc + w, ldc, kc);
            }
            if (w + 2 * L <= width) {
                kernel8x2(a, ar, ars, aks, b, bOff + w, ldb, c, cr + w, ldc, kc);
                w += 2 * L;
            }
            if (w + L <= width) {
                kernel4x1(a, ar, ars, aks, b, bOff + w, ldb, c, cr + w, ldc, kc);
                kernel4x1(a, ar + 4 * ars, ars, aks, b, bOff + w, ldb, c, cr + 4 * ldc + w, ldc, kc);
            }
        }
        for (; r < rows; r += 4) {
            int ar = aOff + r * ars, cr = cOff + r * ldc;
            int w = 0;
            for (; w + 4 * L <= width; w += 4 * L) {
                kernel4x4(a, ar, ars, aks, b, bOff + w, ldb, c, cr + w, ldc, kc);
            }
            if (w + 2 * L <= width) {
                kernel4x2(a, ar, ars, aks, b, bOff + w, ldb, c, cr + w, ldc, kc);
                w += 2 * L;
            }
            if (w + L <= width) {
                kernel4x1(a, ar, ars, aks, b, bOff + w, ldb, c, cr + w, ldc, kc);
            }
        }
    }

    /** 4 rows x 4 vectors: 16 accumulators, 8 loads per 16 FMAs (Zen 5 sustains 2 FMAs and 2 512-bit loads a cycle). */
    private static void kernel4x4(float[] a, int aOff, int ars, int aks, float[] b, int bOff, int ldb,
                                  float[] c, int cOff, int ldc, int kc) {
        int c0 = cOff, c1 = cOff + ldc, c2 = cOff + 2 * ldc, c3 = cOff + 3 * ldc;
        FloatVector x00 = FloatVector.fromArray(F, c, c0), x01 = FloatVector.fromArray(F, c, c0 + L);
        FloatVector x02 = FloatVector.fromArray(F, c, c0 + 2 * L), x03 = FloatVector.fromArray(F, c, c0 + 3 * L);
        FloatVector x10 = FloatVector.fromArray(F, c, c1), x11 = FloatVector.fromArray(F, c, c1 + L);
        FloatVector x12 = FloatVector.fromArray(F, c, c1 + 2 * L), x13 = FloatVector.fromArray(F, c, c1 + 3 * L);
        FloatVector x20 = FloatVector.fromArray(F, c, c2), x21 = FloatVector.fromArray(F, c, c2 + L);
        FloatVector x22 = FloatVector.fromArray(F, c, c2 + 2 * L), x23 = FloatVector.fromArray(F, c, c2 + 3 * L);
        FloatVector x30 = FloatVector.fromArray(F, c, c3), x31 = FloatVector.fromArray(F, c, c3 + L);
        FloatVector x32 = FloatVector.fromArray(F, c, c3 + 2 * L), x33 = FloatVector.fromArray(F, c, c3 + 3 * L);
        for (int k = 0; k < kc; k++) {
            int bo = bOff + k * ldb, ao = aOff + k * aks;
            FloatVector b0 = FloatVector.fromArray(F, b, bo), b1 = FloatVector.fromArray(F, b, bo + L);
            FloatVector b2 = FloatVector.fromArray(F, b, bo + 2 * L), b3 = FloatVector.fromArray(F, b, bo + 3 * L);
            FloatVector a0 = FloatVector.broadcast(F, a[ao]);
            x00 = a0.fma(b0, x00);
            x01 = a0.fma(b1, x01);
            x02 = a0.fma(b2, x02);
            x03 = a0.fma(b3, x03);
            FloatVector a1 = FloatVector.broadcast(F, a[ao + ars]);
            x10 = a1.fma(b0, x10);
            x11 = a1.fma(b1, x11);
            x12 = a1.fma(b2, x12);
            x13 = a1.fma(b3, x13);
            FloatVector a2 = FloatVector.broadcast(F, a[ao + 2 * ars]);
            x20 = a2.fma(b0, x20);
            x21 = a2.fma(b1, x21);
            x22 = a2.fma(b2, x22);
            x23 = a2.fma(b3, x23);
            FloatVector a3 = FloatVector.broadcast(F, a[ao + 3 * ars]);
            x30 = a3.fma(b0, x30);
            x31 = a3.fma(b1, x31);
            x32 = a3.fma(b2, x32);
            x33 = a3.fma(b3, x33);
        }
        x00.intoArray(c, c0);
        x01.intoArray(c, c0 + L);
        x02.intoArray(c, c0 + 2 * L);
        x03.intoArray(c, c0 + 3 * L);
        x10.intoArray(c, c1);
        x11.intoArray(c, c1 + L);
        x12.intoArray(c, c1 + 2 * L);
        x13.intoArray(c, c1 + 3 * L);
        x20.intoArray(c, c2);
        x21.intoArray(c, c2 + L);
        x22.intoArray(c, c2 + 2 * L);
        x23.intoArray(c, c2 + 3 * L);
        x30.intoArray(c, c3);
        x31.intoArray(c, c3 + L);
        x32.intoArray(c, c3 + 2 * L);
        x33.intoArray(c, c3 + 3 * L);
    }

    /**
     * 8 rows x 2 vectors, for 2L-wide products (headDim 32 with 16 lanes): 16 accumulators and 10 loads per 16 FMAs,
     * where 4 x 2 has only 8 accumulators, too few to cover the FMA latency on two pipes.
     */
    private static void kernel8x2(float[] a, int aOff, int ars, int aks, float[] b, int bOff, int ldb,
                                  float[] c, int cOff, int ldc, int kc) {
        int c0 = cOff, c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc, c4 = c3 + ldc, c5 = c4 + ldc, c6 = c5 + ldc;
        int c7 = c6 + ldc;
        FloatVector x00 = FloatVector.fromArray(F, c, c0), x01 = FloatVector.fromArray(F, c, c0 + L);
        FloatVector x10 = FloatVector.fromArray(F, c, c1), x11 = FloatVector.fromArray(F, c, c1 + L);
        FloatVector x20 = FloatVector.fromArray(F, c, c2), x21 = FloatVector.fromArray(F, c, c2 + L);
        FloatVector x30 = FloatVector.fromArray(F, c, c3), x31 = FloatVector.fromArray(F, c, c3 + L);
        FloatVector x40 = FloatVector.fromArray(F, c, c4), x41 = FloatVector.fromArray(F, c, c4 + L);
        FloatVector x50 = FloatVector.fromArray(F, c, c5), x51 = FloatVector.fromArray(F, c, c5 + L);
        FloatVector x60 = FloatVector.fromArray(F, c, c6), x61 = FloatVector.fromArray(F, c, c6 + L);
        FloatVector x70 = FloatVector.fromArray(F, c, c7), x71 = FloatVector.fromArray(F, c, c7 + L);
        for (int k = 0; k < kc; k++) {
            int bo = bOff + k * ldb, ao = aOff + k * aks;
            FloatVector b0 = FloatVector.fromArray(F, b, bo), b1 = FloatVector.fromArray(F, b, bo + L);
            FloatVector a0 = FloatVector.broadcast(F, a[ao]);
            x00 = a0.fma(b0, x00);
            x01 = a0.fma(b1, x01);
            FloatVector a1 = FloatVector.broadcast(F, a[ao + ars]);
            x10 = a1.fma(b0, x10);
            x11 = a1.fma(b1, x11);
            FloatVector a2 = FloatVector.broadcast(F, a[ao + 2 * ars]);
            x20 = a2.fma(b0, x20);
            x21 = a2.fma(b1, x21);
            FloatVector a3 = FloatVector.broadcast(F, a[ao + 3 * ars]);
            x30 = a3.fma(b0, x30);
            x31 = a3.fma(b1, x31);
            FloatVector a4 = FloatVector.broadcast(F, a[ao + 4 * ars]);
            x40 = a4.fma(b0, x40);
            x41 = a4.fma(b1, x41);
            FloatVector a5 = FloatVector.broadcast(F, a[ao + 5 * ars]);
            x50 = a5.fma(b0, x50);
            x51 = a5.fma(b1, x51);
            FloatVector a6 = FloatVector.broadcast(F, a[ao + 6 * ars]);
            x60 = a6.fma(b0, x60);
            x61 = a6.fma(b1, x61);
            FloatVector a7 = FloatVector.broadcast(F, a[ao + 7 * ars]);
            x70 = a7.fma(b0, x70);
            x71 = a7.fma(b1, x71);
        }
        x00.intoArray(c, c0);
        x01.intoArray(c, c0 + L);
        x10.intoArray(c, c1);
        x11.intoArray(c, c1 + L);
        x20.intoArray(c, c2);
        x21.intoArray(c, c2 + L);
        x30.intoArray(c, c3);
        x31.intoArray(c, c3 + L);
        x40.intoArray(c, c4);
        x41.intoArray(c, c4 + L);
        x50.intoArray(c, c5);
        x51.intoArray(c, c5 + L);
        x60.intoArray(c, c6);
        x61.intoArray(c, c6 + L);
        x70.intoArray(c, c7);
        x71.intoArray(c, c7 + L);
    }

    private static void kernel4x2(float[] a, int aOff, int ars, int aks, float[] b, int bOff, int ldb,
                                  float[] c, int cOff, int ldc, int kc) {
        int c0 = cOff, c1 = cOff + ldc, c2 = cOff + 2 * ldc, c3 = cOff + 3 * ldc;
        FloatVector x00 = FloatVector.fromArray(F, c, c0), x01 = FloatVector.fromArray(F, c, c0 + L);
        FloatVector x10 = FloatVector.fromArray(F, c, c1), x11 = FloatVector.fromArray(F, c, c1 + L);
        FloatVector x20 = FloatVector.fromArray(F, c, c2), x21 = FloatVector.fromArray(F, c, c2 + L);
        FloatVector x30 = FloatVector.fromArray(F, c, c3), x31 = FloatVector.fromArray(F, c, c3 + L);
        for (int k = 0; k < kc; k++) {
            int bo = bOff + k * ldb, ao = aOff + k * aks;
            FloatVector b0 = FloatVector.fromArray(F, b, bo), b1 = FloatVector.fromArray(F, b, bo + L);
            FloatVector a0 = FloatVector.broadcast(F, a[ao]);
            x00 = a0.fma(b0, x00);
            x01 = a0.fma(b1, x01);
            FloatVector a1 = FloatVector.broadcast(F, a[ao + ars]);
            x10 = a1.fma(b0, x10);
            x11 = a1.fma(b1, x11);
            FloatVector a2 = FloatVector.broadcast(F, a[ao + 2 * ars]);
            x20 = a2.fma(b0, x20);
            x21 = a2.fma(b1, x21);
            FloatVector a3 = FloatVector.broadcast(F, a[ao + 3 * ars]);
            x30 = a3.fma(b0, x30);
            x31 = a3.fma(b1, x31);
        }
        x00.intoArray(c, c0);
        x01.intoArray(c, c0 + L);
        x10.intoArray(c, c1);
        x11.intoArray(c, c1 + L);
        x20.intoArray(c, c2);
        x21.intoArray(c, c2 + L);
        x30.intoArray(c, c3);
        x31.intoArray(c, c3 + L);
    }

    private static void kernel4x1(float[] a, int aOff, int ars, int aks, float[] b, int bOff, int ldb,
                                  float[] c, int cOff, int ldc, int kc) {
        int c0 = cOff, c1 = cOff + ldc, c2 = cOff + 2 * ldc, c3 = cOff + 3 * ldc;
        FloatVector x0 = FloatVector.fromArray(F, c, c0), x1 = FloatVector.fromArray(F, c, c1);
        FloatVector x2 = FloatVector.fromArray(F, c, c2), x3 = FloatVector.fromArray(F, c, c3);
        for (int k = 0; k < kc; k++) {
            int ao = aOff + k * aks;
            FloatVector b0 = FloatVector.fromArray(F, b, bOff + k * ldb);
            x0 = FloatVector.broadcast(F, a[ao]).fma(b0, x0);
            x1 = FloatVector.broadcast(F, a[ao + ars]).fma(b0, x1);
            x2 = FloatVector.broadcast(F, a[ao + 2 * ars]).fma(b0, x2);
            x3 = FloatVector.broadcast(F, a[ao + 3 * ars]).fma(b0, x3);
        }
        x0.intoArray(c, c0);
        x1.intoArray(c, c1);
        x2.intoArray(c, c2);
        x3.intoArray(c, c3);
    }
}
