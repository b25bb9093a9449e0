package ai.onestep.backend.cpu;

import static ai.onestep.backend.cpu.GemmKernels.L;
import static ai.onestep.backend.cpu.GemmKernels.MR;
import static ai.onestep.backend.cpu.GemmKernels.NR;
import static ai.onestep.backend.cpu.GemmKernels.S;

import ai.onestep.tensor.Tensor;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;

/**
 * 3x3, stride-1 convolution forward by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms
 * for Convolutional Neural Networks", CVPR 2016, eq. 8): every 2x2 block of outputs ("tile") is
 * {@code Y = A^T [ sum_ci (G g G^T) . (B^T d B) ] A} with d the 4x4 input patch under the tile and g one 3x3 filter.
 * The sum over input channels at each of the 16 positions (xi, nu) of the transformed tile is a GEMM of
 * (tiles, Cin) by (Cin, Cout): the 36 multiplies that a 2x2 tile costs per (input, output) channel pair in the
 * direct convolution become 16, 2.25x fewer FMAs, run on the same {@link GemmKernels#tile} micro-kernel. The
 * transforms are adds (and halves, in G) over vectors of channels, small next to the GEMMs once Cin and Cout are
 * tens.
 *
 * <p>Accuracy: F(2x2, 3x3)'s transform coefficients are 0, +-1 and +-1/2, exact in binary, so it adds only a few
 * roundings per output to the direct sum's (WinogradTest holds it to 1e-5 of the float64 naive backend, Cin = 160
 * included). Larger tiles such as F(4x4, 3x3) save more multiplies but have coefficients like 1/6 and 4 and lose
 * digits; we stay with the small one.
 *
 * <p>Work is split over blocks of tiles; each block is transformed, multiplied and transformed back by one task in
 * thread-local buffers that stay in L2, so no (16, tiles, C) array ever goes to memory. Every output is computed
 * by one task in a fixed order: bits do not depend on the thread count or the block size.
 */
final class CpuWinograd {
    /** Transformed positions per tile: the 4x4 input patch. */
    private static final int POS = 16;
    /** Largest block of tiles per task: 4 micro-tiles of rows, 32 tiles, (16, 32, 128) floats = 256 KB of V. */
    private static final int MAX_BLOCK = 4 * MR;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    private static final int[] ONE_TAP = {0};
    /** Per thread: slot 0 the transformed inputs V, slot 1 the GEMM results M of its current block. */
    private static final ThreadLocal<float[][]> LOCAL = ThreadLocal.withInitial(() -> new float[2][]);
    /** Per calling thread: the transformed inputs V and dy tiles E of a weight gradient's round of tiles. */
    private static final ThreadLocal<float[][]> GRADIENT = ThreadLocal.withInitial(() -> new float[2][]);

    private final CpuPool pool;

    CpuWinograd(CpuPool pool) {
        this.pool = pool;
    }

    /**
     * Transformed filters {@code U = G g G^T} of HWIO (3, 3, cin, cout) weights, packed for the micro-kernel:
     * position p's (cin, cout) matrix in NR-column panels at {@code u[((p panels + q) cin + ci) NR + j]}; columns
     * past cout are zeros in a new array and left as they were in {@code into} (a scratch array, used when it is
     * large enough). In parallel over the input channels. G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2],
     * [0, 0, 1]].
     */
    static float[] transformWeights(MemorySegment w, int cin, int cout, float[] into, CpuPool pool) {
        int size = transformedSize(cin, cout);
        float[] u = into != null && into.length >= size ? into : new float[size];
        int panels = GemmKernels.paddedCols(cout) / NR, chunk = 16;
        pool.parallelFor((cin + chunk - 1) / chunk, task -> {
            // Plain float loops over the output channels (C2 vectorizes them): the Vector API version of this
            // transform boxed its vectors whenever the JIT chose not to inline a helper, and ran 10x slower.
            float[] g = new float[9 * cout], t = new float[12 * cout];
            for (int ci = task * chunk; ci < Math.min(cin, task * chunk + chunk); ci++) {
                for (int k = 0; k < 9; k++) {
                    MemorySegment.copy(w, Tensor.F32, ((long) k * cin + ci) * cout * Float.BYTES, g, k * cout, cout);
                }
                // t = G g: column b of t from column b of g (rows kh = 0, 1, 2 of the filter).
                for (int b = 0; b < 3; b++) {
                    applyG(g, b * cout, (3 + b) * cout, (6 + b) * cout, t, b * cout, (3 + b) * cout,
                            (6 + b) * cout, (9 + b) * cout, cout);
                }
                // U = t G^T: row a of U (positions 4a .. 4a + 3) from row a of t, straight into each panel.
                for (int a = 0; a < 4; a++) {
                    for (int q = 0; q < panels; q++) {
                        int cols = Math.min(NR, cout - q * NR), src = 3 * a * cout + q * NR;
                        int at = ((4 * a * panels + q) * cin + ci) * NR, step = panels * cin * NR;
                        // Columns past cout keep whatever the array held: their GEMM results are never stored.
                        applyG(t, src, src + cout, src + 2 * cout, u, at, at + step, at + 2 * step, at + 3 * step,
                                cols);
                    }
                }
            }
        });
        return u;
    }

    /**
     * One application of G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]] to rows (x0, x1, x2) of n
     * floats: y0 = x0, y1 = (x0 + x1 + x2) / 2, y2 = (x0 - x1 + x2) / 2, y3 = x2.
     */
    private static void applyG(float[] x, int x0, int x1, int x2, float[] y, int y0, int y1, int y2, int y3, int n) {
        for (int j = 0; j < n; j++) {
            float a = x[x0 + j], b = x[x1 + j], c = x[x2 + j];
            y[y0 + j] = a;
            y[y1 + j] = (a + b + c) * 0.5f;
            y[y2 + j] = (a - b + c) * 0.5f;
            y[y3 + j] = c;
        }
    }

    /** Floats of {@link #transformWeights}'s result. */
    static int transformedSize(int cin, int cout) {
        return POS * GemmKernels.paddedCols(cout) * cin;
    }

    /**
     * {@code y = conv3x3(x) + bias}, stride 1, from {@code xp}: the input zero-padded to (n, hp, wp, cin) with
     * {@code hp >= 2 ceil(ho / 2) + 2} and {@code wp >= 2 ceil(wo / 2) + 2} (every tile's 4x4 patch in bounds).
     */
    void forward(float[] xp, int n, int hp, int wp, int cin, float[] u, float[] bias, int cout, int ho, int wo,
                 MemorySegment y) {
        int th = (ho + 1) / 2, tw = (wo + 1) / 2;
        int tiles = n * th * tw;
        int panels = GemmKernels.paddedCols(cout) / NR;
        // Small problems (batch 1) still need a task per thread: shrink the block rather than idle a core.
        int perTask = (tiles + 2 * pool.threads() - 1) / (2 * pool.threads());
        int block = Math.min(MAX_BLOCK, Math.max(MR, roundUp(perTask)));
        int blocks = (tiles + block - 1) / block;
        pool.parallelFor(blocks, blk -> {
            int t0 = blk * block, count = Math.min(block, tiles - t0);
            int rowsPad = roundUp(count);
            float[][] local = LOCAL.get();
            // Positions lie vStep (mStep) floats apart: a multiple of 4 KB would put all 16 accesses of one tile
            // transform in the same L1 set; one vector more moves each to the next set.
            int vStep = rowsPad * cin + L, mStep = panels * rowsPad * NR + L;
            float[] v = buffer(local, 0, POS * vStep);
            float[] m = buffer(local, 1, POS * mStep);
            for (int i = 0; i < count; i++) {
                int t = t0 + i, b = t / (th * tw), r = t % (th * tw);
                int base = ((b * hp + 2 * (r / tw)) * wp + 2 * (r % tw)) * cin;
                inputTile(xp, base, wp * cin, cin, v, i * cin, vStep);
            }
            int[] rb = new int[MR];
            float[] zero = new float[NR];
            for (int p = 0; p < POS; p++) {
                for (int q = 0; q < panels; q++) {
                    for (int i0 = 0; i0 < count; i0 += MR) {
                        for (int k = 0; k < MR; k++) {
                            // Rows past the block's last tile read a valid row; their results are never used.
                            rb[k] = p * vStep + (i0 + k < count ? i0 + k : i0) * cin;
                        }
                        GemmKernels.tile(v, rb, ONE_TAP, 1, cin, u, (p * panels + q) * cin * NR, zero, m,
                                p * mStep + (q * rowsPad + i0) * NR);
                    }
                }
            }
            for (int i = 0; i < count; i++) {
                int t = t0 + i, b = t / (th * tw), r = t % (th * tw);
                outputTile(m, i, rowsPad, mStep, bias, cout, y, b, 2 * (r / tw), 2 * (r % tw), ho, wo);
            }
        });
    }

    /**
     * {@code V = B^T d B} of the 4x4 patch at {@code base} (row stride {@code rowStride}), stored at element
     * {@code row} of each position's (rows, cin) matrix, the positions {@code step} floats apart.
     * B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
     */
    private static void inputTile(float[] xp, int base, int rowStride, int cin, float[] v, int row, int step) {
        int c = 0;
        // Whole vectors of channels, then the channels past the last one (Cin need not be a multiple of L) one by one.
        for (; c + L <= cin; c += L) {
            int o = base + c, r1 = o + rowStride, r2 = o + 2 * rowStride, r3 = o + 3 * rowStride;
            FloatVector d00 = FloatVector.fromArray(S, xp, o);
            FloatVector d01 = FloatVector.fromArray(S, xp, o + cin);
            FloatVector d02 = FloatVector.fromArray(S, xp, o + 2 * cin);
            FloatVector d03 = FloatVector.fromArray(S, xp, o + 3 * cin);
            FloatVector d10 = FloatVector.fromArray(S, xp, r1);
            FloatVector d11 = FloatVector.fromArray(S, xp, r1 + cin);
            FloatVector d12 = FloatVector.fromArray(S, xp, r1 + 2 * cin);
            FloatVector d13 = FloatVector.fromArray(S, xp, r1 + 3 * cin);
            FloatVector d20 = FloatVector.fromArray(S, xp, r2);
            FloatVector d21 = FloatVector.fromArray(S, xp, r2 + cin);
            FloatVector d22 = FloatVector.fromArray(S, xp, r2 + 2 * cin);
            FloatVector d23 = FloatVector.fromArray(S, xp, r2 + 3 * cin);
            FloatVector d30 = FloatVector.fromArray(S, xp, r3);
            FloatVector d31 = FloatVector.fromArray(S, xp, r3 + cin);
            FloatVector d32 = FloatVector.fromArray(S, xp, r3 + 2 * cin);
            FloatVector d33 = FloatVector.fromArray(S, xp, r3 + 3 * cin);
            // Row r of B^T d (a combination of the patch's rows), then that row times B: positions 4r .. 4r + 3.
            // Written out in full: vectors handed to a helper that the JIT does not inline are boxed (measured:
            // 30 MB of garbage per 28x28x64 batch-64 call and 20% slower).
            int at = row + c;
            FloatVector t0 = d00.sub(d20), t1 = d01.sub(d21), t2 = d02.sub(d22), t3 = d03.sub(d23);
            t0.sub(t2).intoArray(v, at);
            t1.add(t2).intoArray(v, at + step);
            t2.sub(t1).intoArray(v, at + 2 * step);
            t1.sub(t3).intoArray(v, at + 3 * step);
            at += 4 * step;
            t0 = d10.add(d20);
            t1 = d11.add(d21);
            t2 = d12.add(d22);
            t3 = d13.add(d23);
            t0.sub(t2).intoArray(v, at);
            t1.add(t2).intoArray(v, at + step);
            t2.sub(t1).intoArray(v, at + 2 * step);
            t1.sub(t3).intoArray(v, at + 3 * step);
            at += 4 * step;
            t0 = d20.sub(d10);
            t1 = d21.sub(d11);
            t2 = d22.sub(d12);
            t3 = d23.sub(d13);
            t0.sub(t2).intoArray(v, at);
            t1.add(t2).intoArray(v, at + step);
            t2.sub(t1).intoArray(v, at + 2 * step);
            t1.sub(t3).intoArray(v, at + 3 * step);
            at += 4 * step;
            t0 = d10.sub(d30);
            t1 = d11.sub(d31);
            t2 = d12.sub(d32);
            t3 = d13.sub(d33);
            t0.sub(t2).intoArray(v, at);
            t1.add(t2).intoArray(v, at + step);
            t2.sub(t1).intoArray(v, at + 2 * step);
            t1.sub(t3).intoArray(v, at + 3 * step);
        }
        float[] d = c < cin ? new float[16] : null;
        for (; c < cin; c++) {
            for (int k = 0; k < 16; k++) {
                d[k] = xp[base + (k / 4) * rowStride + (k % 4) * cin + c];
            }
            for (int r = 0; r < 4; r++) {
                // Row r of B^T d, column by column.
                float t0 = bt(r, d, 0), t1 = bt(r, d, 1), t2 = bt(r, d, 2), t3 = bt(r, d, 3);
                int at = 4 * r * step + row + c;
                v[at] = t0 - t2;
                v[at + step] = t1 + t2;
                v[at + 2 * step] = t2 - t1;
                v[at + 3 * step] = t1 - t3;
            }
        }
    }

    /** Row r of B^T d at column col, for the scalar tail of {@link #inputTile}. */
    private static float bt(int r, float[] d, int col) {
        return switch (r) {
            case 0 -> d[col] - d[8 + col];
            case 1 -> d[4 + col] + d[8 + col];
            case 2 -> d[8 + col] - d[4 + col];
            default -> d[4 + col] - d[12 + col];
        };
    }

    /**
     * {@code Y = A^T M A + bias} for block row {@code i} (panels of rowsPad rows, positions {@code step} floats
     * apart), written to the in-bounds outputs of the tile whose top-left output is (b, oh, ow).
     * A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].
     */
    private static void outputTile(float[] m, int i, int rowsPad, int step, float[] bias, int cout, MemorySegment y, int b,
                           int oh, int ow, int ho, int wo) {
        boolean down = oh + 1 < ho, right = ow + 1 < wo;
        long pix = ((long) b * ho + oh) * wo + ow;
        for (int c = 0; c < cout; c += L) {
            VectorMask<Float> mask = S.indexInRange(c, cout);
            int o = ((c / NR) * rowsPad + i) * NR + c % NR;
            // Column nu of A^T M: (M[0][nu] + M[1][nu] + M[2][nu], M[1][nu] - M[2][nu] - M[3][nu]).
            FloatVector m0 = FloatVector.fromArray(S, m, o), m1 = FloatVector.fromArray(S, m, o + 4 * step);
            FloatVector m2 = FloatVector.fromArray(S, m, o + 8 * step), m3 = FloatVector.fromArray(S, m, o + 12 * step);
            FloatVector s00 = m0.add(m1).add(m2), s10 = m1.sub(m2).sub(m3);
            m0 = FloatVector.fromArray(S, m, o + step);
            m1 = FloatVector.fromArray(S, m, o + 5 * step);
            m2 = FloatVector.fromArray(S, m, o + 9 * step);
            m3 = FloatVector.fromArray(S, m, o + 13 * step);
            FloatVector s01 = m0.add(m1).add(m2), s11 = m1.sub(m2).sub(m3);
            m0 = FloatVector.fromArray(S, m, o + 2 * step);
            m1 = FloatVector.fromArray(S, m, o + 6 * step);
            m2 = FloatVector.fromArray(S, m, o + 10 * step);
            m3 = FloatVector.fromArray(S, m, o + 14 * step);
            FloatVector s02 = m0.add(m1).add(m2), s12 = m1.sub(m2).sub(m3);
            m0 = FloatVector.fromArray(S, m, o + 3 * step);
            m1 = FloatVector.fromArray(S, m, o + 7 * step);
            m2 = FloatVector.fromArray(S, m, o + 11 * step);
            m3 = FloatVector.fromArray(S, m, o + 15 * step);
            FloatVector s03 = m0.add(m1).add(m2), s13 = m1.sub(m2).sub(m3);
            // Then (A^T M) A over the columns, plus the bias; stored in place (not through a helper: see inputTile).
            FloatVector bv = FloatVector.fromArray(S, bias, c);
            long off = (pix * cout + c) * Float.BYTES, col = (long) cout * Float.BYTES, row = wo * col;
            s00.add(s01).add(s02).add(bv).intoMemorySegment(y, off, NATIVE, mask);
            if (right) {
                s01.sub(s02).sub(s03).add(bv).intoMemorySegment(y, off + col, NATIVE, mask);
            }
            if (down) {
                s10.add(s11).add(s12).add(bv).intoMemorySegment(y, off + row, NATIVE, mask);
                if (right) {
                    s11.sub(s12).sub(s13).add(bv).intoMemorySegment(y, off + row + col, NATIVE, mask);
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Weight gradient: F(3x3, 2x2)
    // ------------------------------------------------------------------------------------------------

    /** Tiles per round of the weight gradient: bounds V and E to 16 x 1024 x C floats (8 MB at C = 128). */
    private static final int ROUND_TILES = 1024;
    /** Tiles per float partial sum of the weight gradient's GEMMs, which are then added in order (as CpuConv's). */
    private static final int SUM_TILES = 128;

    /**
     * {@code dw[kh, kw, ci, co] += sum_{n, oh, ow} xp[n, oh + kh, ow + kw, ci] dy[n, oh, ow, co]} for a 3x3 stride-1
     * convolution, by F(3x3, 2x2): over one 2x2 tile e of dy and the 4x4 patch d of the padded input under it, the
     * 3x3 correlation of d with e is {@code A^T [(G e G^T) . (B^T d B)] A} with the same B as the forward and
     * G = [[1, 0], [1/2, 1/2], [1/2, -1/2], [0, -1]], A^T = [[1, 1, 1, 0], [0, 1, -1, 0], [0, 1, 1, 1]] (Lavin and
     * Gray's F(3, 2) with its last row of B^T negated, which G's last row undoes). Summed over tiles and kept in
     * the transformed domain, it is 16 GEMMs M_p = V_p^T E_p reducing over tiles; one inverse transform per
     * (ci, co) at the end. Tiles go in rounds of ROUND_TILES; inside a round each product sums SUM_TILES tiles in
     * registers and adds the partial sums in order, so every float is reduced in the same order for any thread
     * count. {@code xp} as for {@link #forward}; dy (n, ho, wo, cout); tiles past ho or wo read zeros of dy.
     */
    void weightGradient(float[] xp, int n, int hp, int wp, int cin, MemorySegment dy, int cout, int ho, int wo,
                        MemorySegment dw) {
        int th = (ho + 1) / 2, tw = (wo + 1) / 2, tiles = n * th * tw;
        int panels = GemmKernels.paddedCols(cout) / NR, ciTiles = (cin + MR - 1) / MR;
        int round = Math.min(ROUND_TILES, (tiles + SUM_TILES - 1) / SUM_TILES * SUM_TILES);
        int vStep = round * cin + L, eStep = panels * round * NR + L;
        float[][] local = GRADIENT.get();
        float[] v = buffer(local, 0, POS * vStep), e = buffer(local, 1, POS * eStep);
        // M_p in (ci, column) micro-tile order: sums[((p panels + q) ciTiles + r) MR NR + k NR + j].
        float[] sums = new float[POS * panels * ciTiles * MR * NR];
        int[] tileBase = new int[round];
        for (int t = 0; t < round; t++) {
            tileBase[t] = t * cin;
        }
        for (int t0 = 0; t0 < tiles; t0 += round) {
            int first = t0, count = Math.min(round, tiles - t0);
            pool.parallelFor((count + MR - 1) / MR, blk -> {
                float[] rows = new float[4 * cout + L];
                for (int i = blk * MR; i < Math.min(count, blk * MR + MR); i++) {
                    int t = first + i, b = t / (th * tw), r = t % (th * tw);
                    int oh = 2 * (r / tw), ow = 2 * (r % tw);
                    inputTile(xp, ((b * hp + oh) * wp + ow) * cin, wp * cin, cin, v, i * cin, vStep);
                    gradientTile(dy, b, oh, ow, ho, wo, cout, rows, e, i, round, eStep);
                }
            });
            pool.parallelFor(POS * panels, task -> {
                int p = task / panels, q = task % panels;
                float[] part = new float[MR * NR];
                int[] rowOff = new int[MR];
                for (int s0 = 0; s0 < count; s0 += SUM_TILES) {
                    int s1 = Math.min(count, s0 + SUM_TILES);
                    for (int rt = 0; rt < ciTiles; rt++) {
                        for (int k = 0; k < MR; k++) {
                            // Rows past cin read row 0 of the tile; their sums are never stored.
                            rowOff[k] = p * vStep + rt * MR + (rt * MR + k < cin ? k : 0);
                        }
                        GemmKernels.tileT(v, tileBase, s0, s1, rowOff, e, p * eStep + q * round * NR, part);
                        int at = ((p * panels + q) * ciTiles + rt) * MR * NR;
                        for (int x = 0; x < MR * NR; x += L) {
                            FloatVector.fromArray(S, sums, at + x).add(FloatVector.fromArray(S, part, x))
                                    .intoArray(sums, at + x);
                        }
                    }
                }
            });
        }
        pool.parallelFor(ciTiles, rt -> inverseWeightTile(sums, rt, ciTiles, panels, cin, cout, dw));
    }

    /**
     * {@code E = G e G^T} of dy's 2x2 tile at (b, oh, ow) for every output channel (zeros past ho, wo), stored as
     * row i of each position's panels: {@code e[p eStep + (q round + i) NR + j]}. {@code rows} (4 cout + L floats)
     * holds the tile's four pixels; whole vectors are loaded from it, so panel columns past cout get whatever
     * follows (their sums are never read).
     */
    private static void gradientTile(MemorySegment dy, int b, int oh, int ow, int ho, int wo, int cout, float[] rows,
                                     float[] e, int i, int round, int eStep) {
        for (int a = 0; a < 2; a++) {
            for (int c = 0; c < 2; c++) {
                int off = (2 * a + c) * cout;
                if (oh + a < ho && ow + c < wo) {
                    long src = (((long) b * ho + oh + a) * wo + ow + c) * cout * Float.BYTES;
                    MemorySegment.copy(dy, Tensor.F32, src, rows, off, cout);
                } else {
                    java.util.Arrays.fill(rows, off, off + cout, 0f);
                }
            }
        }
        for (int co = 0; co < cout; co += L) {
            FloatVector e00 = FloatVector.fromArray(S, rows, co), e01 = FloatVector.fromArray(S, rows, cout + co);
            FloatVector e10 = FloatVector.fromArray(S, rows, 2 * cout + co);
            FloatVector e11 = FloatVector.fromArray(S, rows, 3 * cout + co);
            // Rows of G e: (e0., (e0. + e1.) / 2, (e0. - e1.) / 2, -e1.), then each row (x0, x1) times G^T:
            // x0, (x0 + x1) / 2, (x0 - x1) / 2, -x1. Written out (see inputTile on helpers and boxing).
            int o = ((co / NR) * round + i) * NR + co % NR;
            FloatVector x0 = e00, x1 = e01;
            x0.intoArray(e, o);
            x0.add(x1).mul(0.5f).intoArray(e, o + eStep);
            x0.sub(x1).mul(0.5f).intoArray(e, o + 2 * eStep);
            x1.neg().intoArray(e, o + 3 * eStep);
            o += 4 * eStep;
            x0 = e00.add(e10).mul(0.5f);
            x1 = e01.add(e11).mul(0.5f);
            x0.intoArray(e, o);
            x0.add(x1).mul(0.5f).intoArray(e, o + eStep);
            x0.sub(x1).mul(0.5f).intoArray(e, o + 2 * eStep);
            x1.neg().intoArray(e, o + 3 * eStep);
            o += 4 * eStep;
            x0 = e00.sub(e10).mul(0.5f);
            x1 = e01.sub(e11).mul(0.5f);
            x0.intoArray(e, o);
            x0.add(x1).mul(0.5f).intoArray(e, o + eStep);
            x0.sub(x1).mul(0.5f).intoArray(e, o + 2 * eStep);
            x1.neg().intoArray(e, o + 3 * eStep);
            o += 4 * eStep;
            x0 = e10.neg();
            x1 = e11.neg();
            x0.intoArray(e, o);
            x0.add(x1).mul(0.5f).intoArray(e, o + eStep);
            x0.sub(x1).mul(0.5f).intoArray(e, o + 2 * eStep);
            x1.neg().intoArray(e, o + 3 * eStep);
        }
    }

    /** {@code dw[kh, kw, ci, co] += (A^T M A)[kh, kw]} for the input channels of row tile rt. */
    private static void inverseWeightTile(float[] sums, int rt, int ciTiles, int panels, int cin, int cout,
                                          MemorySegment dw) {
        int step = panels * ciTiles * MR * NR;
        float[] m = new float[POS], y = new float[9];
        for (int k = 0; k < MR && rt * MR + k < cin; k++) {
            int ci = rt * MR + k;
            for (int co = 0; co < cout; co++) {
                int at = (((co / NR) * ciTiles + rt) * MR + k) * NR + co % NR;
                for (int p = 0; p < POS; p++) {
                    m[p] = sums[p * step + at];
                }
                // s = A^T M over xi, then (A^T M) A over nu.
                for (int nu = 0; nu < 4; nu++) {
                    float m0 = m[nu], m1 = m[4 + nu], m2 = m[8 + nu], m3 = m[12 + nu];
                    m[nu] = m0 + m1 + m2;
                    m[4 + nu] = m1 - m2;
                    m[8 + nu] = m1 + m2 + m3;
                }
                for (int kh = 0; kh < 3; kh++) {
                    float s0 = m[4 * kh], s1 = m[4 * kh + 1], s2 = m[4 * kh + 2], s3 = m[4 * kh + 3];
                    y[3 * kh] = s0 + s1 + s2;
                    y[3 * kh + 1] = s1 - s2;
                    y[3 * kh + 2] = s1 + s2 + s3;
                }
                for (int tap = 0; tap < 9; tap++) {
                    long off = (((long) tap * cin + ci) * cout + co) * Float.BYTES;
                    dw.set(Tensor.F32, off, dw.get(Tensor.F32, off) + y[tap]);
                }
            }
        }
    }

    /** Slot {@code slot} of a thread's grow-only scratch arrays, at least {@code size} floats (contents stale). */
    static float[] buffer(float[][] local, int slot, int size) {
        if (local[slot] == null || local[slot].length < size) {
            local[slot] = new float[size];
        }
        return local[slot];
    }

    private static int roundUp(int rows) {
        return (rows + MR - 1) / MR * MR;
    }
}
