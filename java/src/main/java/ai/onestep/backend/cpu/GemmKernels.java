package ai.onestep.backend.cpu;

import ai.onestep.tensor.Tensor;
import java.lang.foreign.MemorySegment;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * The register-blocked micro-kernels that GEMM, linear and convolution share: an {@link #MR} x {@link #NR} tile of
 * C kept in 2 * MR vector registers (8 x 32 floats on AVX-512, 16 accumulators), fed by one broadcast of A and two
 * vector loads of packed B per step of K: 16 FMAs per 10 loads, the shape ENVIRONMENT.md measured at 224 GFLOP/s
 * on one core. The inner loops have no branches (a branch that reassigns a vector cost 7x there); edges are
 * handled by the callers: missing rows point at a valid row and are not stored, missing columns are zeros in the
 * packed B and are not stored.
 */
final class GemmKernels {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int L = S.length();
    /** Rows of C per micro-tile. */
    static final int MR = 8;
    /** Columns of C per micro-tile (two vectors). */
    static final int NR = 2 * L;

    private GemmKernels() {
    }

    /**
     * Implicit-GEMM tile: for rows r < MR and columns j < NR,
     * {@code out[r NR + j] = init[j] + sum_t sum_c a[rowBase[r] + tapOff[t] + c] * bp[bOff + (t cin + c) NR + j]}.
     * With one tap at offset 0 this is a plain GEMM over row-major A (row r at {@code rowBase[r]}); for a
     * convolution each tap (kh, kw) is a contiguous run of {@code cin} channels in the padded NHWC input, so
     * K = taps x cin needs no im2col buffer.
     */
    static void tile(float[] a, int[] rowBase, int[] tapOff, int taps, int cin, float[] bp, int bOff, float[] init,
                     float[] out) {
        tile(a, rowBase, tapOff, taps, cin, bp, bOff, init, out, 0);
    }

    /** {@link #tile} with the MR x NR result written at {@code out[outOff...]}. */
    static void tile(float[] a, int[] rowBase, int[] tapOff, int taps, int cin, float[] bp, int bOff, float[] init,
                     float[] out, int outOff) {
        FloatVector i0 = FloatVector.fromArray(S, init, 0);
        FloatVector i1 = FloatVector.fromArray(S, init, L);
        FloatVector c00 = i0, c01 = i1, c10 = i0, c11 = i1, c20 = i0, c21 = i1, c30 = i0, c31 = i1;
        FloatVector c40 = i0, c41 = i1, c50 = i0, c51 = i1, c60 = i0, c61 = i1, c70 = i0, c71 = i1;
        int r0 = rowBase[0], r1 = rowBase[1], r2 = rowBase[2], r3 = rowBase[3];
        int r4 = rowBase[4], r5 = rowBase[5], r6 = rowBase[6], r7 = rowBase[7];
        int kb = bOff;
        for (int t = 0; t < taps; t++) {
            int o = tapOff[t];
            int a0 = r0 + o, a1 = r1 + o, a2 = r2 + o, a3 = r3 + o;
            int a4 = r4 + o, a5 = r5 + o, a6 = r6 + o, a7 = r7 + o;
            for (int c = 0; c < cin; c++, kb += NR) {
                FloatVector b0 = FloatVector.fromArray(S, bp, kb);
                FloatVector b1 = FloatVector.fromArray(S, bp, kb + L);
                FloatVector v = FloatVector.broadcast(S, a[a0 + c]);
                c00 = v.fma(b0, c00);
                c01 = v.fma(b1, c01);
                v = FloatVector.broadcast(S, a[a1 + c]);
                c10 = v.fma(b0, c10);
                c11 = v.fma(b1, c11);
                v = FloatVector.broadcast(S, a[a2 + c]);
                c20 = v.fma(b0, c20);
                c21 = v.fma(b1, c21);
                v = FloatVector.broadcast(S, a[a3 + c]);
                c30 = v.fma(b0, c30);
                c31 = v.fma(b1, c31);
                v = FloatVector.broadcast(S, a[a4 + c]);
                c40 = v.fma(b0, c40);
                c41 = v.fma(b1, c41);
                v = FloatVector.broadcast(S, a[a5 + c]);
                c50 = v.fma(b0, c50);
                c51 = v.fma(b1, c51);
                v = FloatVector.broadcast(S, a[a6 + c]);
                c60 = v.fma(b0, c60);
                c61 = v.fma(b1, c61);
                v = FloatVector.broadcast(S, a[a7 + c]);
                c70 = v.fma(b0, c70);
                c71 = v.fma(b1, c71);
            }
        }
        c00.intoArray(out, outOff);
        c01.intoArray(out, outOff + L);
        c10.intoArray(out, outOff + NR);
        c11.intoArray(out, outOff + NR + L);
        c20.intoArray(out, outOff + 2 * NR);
        c21.intoArray(out, outOff + 2 * NR + L);
        c30.intoArray(out, outOff + 3 * NR);
        c31.intoArray(out, outOff + 3 * NR + L);
        c40.intoArray(out, outOff + 4 * NR);
        c41.intoArray(out, outOff + 4 * NR + L);
        c50.intoArray(out, outOff + 5 * NR);
        c51.intoArray(out, outOff + 5 * NR + L);
        c60.intoArray(out, outOff + 6 * NR);
        c61.intoArray(out, outOff + 6 * NR + L);
        c70.intoArray(out, outOff + 7 * NR);
        c71.intoArray(out, outOff + 7 * NR + L);
    }

    /**
     * Transposed-A tile for weight gradients, a reduction over positions p in [p0, p1):
     * {@code out[r NR + j] = sum_p a[pixBase[p] + rowOff[r]] * b[bOff + p NR + j]}. Rows r are weight rows
     * (a tap and an input channel, or an input feature); B is one NR-column panel of dy, packed contiguously
     * (a chunk of CpuConv.CHUNK pixels is then one unit-stride 16 KB block, and Cout need not be a multiple of NR).
     */
    static void tileT(float[] a, int[] pixBase, int p0, int p1, int[] rowOff, float[] b, int bOff, float[] out) {
        FloatVector z = FloatVector.zero(S);
        FloatVector c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
        FloatVector c40 = z, c41 = z, c50 = z, c51 = z, c60 = z, c61 = z, c70 = z, c71 = z;
        int o0 = rowOff[0], o1 = rowOff[1], o2 = rowOff[2], o3 = rowOff[3];
        int o4 = rowOff[4], o5 = rowOff[5], o6 = rowOff[6], o7 = rowOff[7];
        for (int p = p0; p < p1; p++) {
            int kb = bOff + p * NR;
            int base = pixBase[p];
            FloatVector b0 = FloatVector.fromArray(S, b, kb);
            FloatVector b1 = FloatVector.fromArray(S, b, kb + L);
            FloatVector v = FloatVector.broadcast(S, a[base + o0]);
            c00 = v.fma(b0, c00);
            c01 = v.fma(b1, c01);
            v = FloatVector.broadcast(S, a[base + o1]);
            c10 = v.fma(b0, c10);
            c11 = v.fma(b1, c11);
            v = FloatVector.broadcast(S, a[base + o2]);
            c20 = v.fma(b0, c20);
            c21 = v.fma(b1, c21);
            v = FloatVector.broadcast(S, a[base + o3]);
            c30 = v.fma(b0, c30);
            c31 = v.fma(b1, c31);
            v = FloatVector.broadcast(S, a[base + o4]);
            c40 = v.fma(b0, c40);
            c41 = v.fma(b1, c41);
            v = FloatVector.broadcast(S, a[base + o5]);
            c50 = v.fma(b0, c50);
            c51 = v.fma(b1, c51);
            v = FloatVector.broadcast(S, a[base + o6]);
            c60 = v.fma(b0, c60);
            c61 = v.fma(b1, c61);
            v = FloatVector.broadcast(S, a[base + o7]);
            c70 = v.fma(b0, c70);
            c71 = v.fma(b1, c71);
        }
        c00.intoArray(out, 0);
        c01.intoArray(out, L);
        c10.intoArray(out, NR);
        c11.intoArray(out, NR + L);
        c20.intoArray(out, 2 * NR);
        c21.intoArray(out, 2 * NR + L);
        c30.intoArray(out, 3 * NR);
        c31.intoArray(out, 3 * NR + L);
        c40.intoArray(out, 4 * NR);
        c41.intoArray(out, 4 * NR + L);
        c50.intoArray(out, 5 * NR);
        c51.intoArray(out, 5 * NR + L);
        c60.intoArray(out, 6 * NR);
        c61.intoArray(out, 6 * NR + L);
        c70.intoArray(out, 7 * NR);
        c71.intoArray(out, 7 * NR + L);
    }

    /** Columns of B rounded up to whole micro-tiles. */
    static int paddedCols(int n) {
        return (n + NR - 1) / NR * NR;
    }

    /**
     * Packs op(B) (k, n) into panels of NR columns, K-major inside a panel, zero beyond column n: panel q holds
     * {@code bp[q k NR + p NR + j] = op(B)[p, q NR + j]}. {@code get(p, j)} reads op(B).
     */
    static float[] packB(int k, int n, MatrixReader get) {
        int panels = paddedCols(n) / NR;
        float[] bp = new float[panels * k * NR];
        for (int q = 0; q < panels; q++) {
            int cols = Math.min(NR, n - q * NR);
            for (int p = 0; p < k; p++) {
                int o = (q * k + p) * NR;
                for (int j = 0; j < cols; j++) {
                    bp[o + j] = get.at(p, q * NR + j);
                }
            }
        }
        return bp;
    }

    /**
     * {@link #packB} for a row-major (k, n) matrix in a segment, by whole runs of NR floats: the common case
     * (conv and linear weights, an untransposed B), cheap enough to redo on every call even at batch 1.
     */
    static float[] packRows(MemorySegment seg, int k, int n) {
        int panels = paddedCols(n) / NR;
        float[] bp = new float[panels * k * NR];
        for (int q = 0; q < panels; q++) {
            int cols = Math.min(NR, n - q * NR);
            for (int p = 0; p < k; p++) {
                MemorySegment.copy(seg, Tensor.F32, ((long) p * n + (long) q * NR) * Float.BYTES, bp,
                        (q * k + p) * NR, cols);
            }
        }
        return bp;
    }

    @FunctionalInterface
    interface MatrixReader {
        float at(int row, int col);
    }
}
