// conv.cu: 2D convolution (NHWC activations, KRSC weights) as an implicit GEMM on tensor cores, fp16 and bf16 with
// fp32 accumulation; bias and a residual z summed in fp32 in the epilogue and y rounded once.
//
// Why our own when cuDNN is there: at batch 1 the CIFAR-size U-Net's convolutions are a few hundred MFLOP each, and
// cuDNN's kernels for them take ~10 us each on an H100 (bench/results/2026-11-26-h100-run3.txt: 41 x 10.2 us
// sm90_xmma_fprop_implicit_gemm; 30% of the 1-step sample), far above what their FLOPs and bytes need: too few blocks
// for 132 SMs, each with a long serial K loop. This kernel is built for that regime: small output tiles, and the
// GEMM's depth split over a block's warps (each warp its own K slice and its own cp.async pipeline; the partial sums
// meet in shared memory once, in the same kernel), so a 32x32x128 convolution at batch 1 runs on 128 blocks x 4
// warps instead of a few dozen. The CUDA backend (CudaDevice) times it against cuDNN's best algorithm on each shape's
// first use and keeps the faster, so it can only replace cuDNN where it wins.
//
// The GEMM (Chetlur et al. 2014, "cuDNN", Sec. 3: convolution as a matrix product over implicitly gathered patches):
//   rows  m = (n, oy, ox), M = N Ho Wo output pixels;   columns co, Cout;   depth k = (r, s, ci), K = KH KW Cin.
//   A[m][k] = x[n][oy*stride - pad + r][ox*stride - pad + s][ci] (0 outside the image), B[k][co] = w[co][r][s][ci].
// With Cin a multiple of 16, each 16-deep step of k lies inside one tap (r, s): its A rows are 16 contiguous
// channels of one input pixel (two 16-byte moves) and its B columns 16 contiguous values of a KRSC filter row, so the
// gather needs no im2col buffer and no per-element index math.
//
// Per warp and 16-deep step: cp.async moves the A tile (BM x 16) and B tile (BN x 16) into this warp's ring of STAGES
// shared-memory buffers (rows of 32 bytes; the two 16-byte halves of rows 4..7 mod 8 swapped, so a fragment's 8 rows x
// 4 words hit 32 distinct banks), then every four fragment registers are one ldmatrix.x4 (the same values as four
// 32-bit shared loads; sixteenth session) and (BM/16)(BN/8) mma.sync.m16n8k16.
// Steps are dealt to the KSPLIT warps round robin. Development record and timings: kernels/dev/conv_forward.cu.
//
// Split over a cluster (CS > 1; sm_90, seventeenth session): the seventeenth session's H100 profile put a batch-1
// sample's convolutions at 73% of its kernel time, 5.5-50 us each, where their FLOPs need well under 1 us: the 4x4 and
// 8x8 levels have 8-32 output tiles for 132 SMs, and every warp walks 18-36 steps of 16 in series. A tile with CS > 1
// is computed by a thread block cluster of CS blocks, each taking every CS-th group of KSPLIT steps, so the serial
// walk is CS times shorter on CS times the SMs. Each block sums its warps' partials in its own shared memory; after a
// cluster barrier, block `rank` adds the CS blocks' sums (distributed shared memory, rank order, so every run gives
// the same bits) for its 1/CS of the tile's outputs, and a last barrier keeps each block's sums alive for its peers.
//
// Group norm (+ SiLU) as the convolution's prologue (NORM; eighteenth session): a ResnetBlock2D's norm1 -> conv1 and
// norm2 -> conv2 are a group norm kernel, then the convolution reading its output. At batch 1 the group norm is ~5 us
// of pure latency (the seventeenth session's profile: 51 of them, 17% of the sample's kernel time) for a few KB, and
// one of the ~140 graph nodes whose count bounds the sample's latency. With NORM the convolution normalizes its own
// input: each block first computes the group statistics of its sample (the tile's rows lie in one sample) from x,
// which is small and hot in L2 where this pays, in one pass of 16-byte loads (norm_prologue: shifted sums merged per
// group in a fixed order; rstd = 1 / sqrt(var + eps), the biased variance, Wu & He 2018, Eq. 3-4); then every lane,
// once its own cp.async moves of a step's A tile have landed, rewrites them in shared memory with groupnorm.cu's
// formula, u = ((x + x_bias) + (add + add_bias) - mean) rstd gamma + beta, SiLU(u), rounded to T as the group norm
// kernel would have stored it. Chunks outside the image keep the zeros cp.async filled them with: the convolution
// pads its (normalized) input with zeros, never normalizes them. The normalized tensor is never stored.
//
// Two sources (x2; nineteenth session): an up block's resnet reads cat(h, skip) along channels, which its norm1 ->
// conv1 and its 1x1 conv_shortcut both consume; stored, it is one more kernel and graph node per such block (12 in
// the CIFAR-size sample). Here the input is [x, x2] with x's Ca channels first: every 16-deep step of the GEMM lies in
// one source (Ca a multiple of 16), so a step's gather just takes that source's base and row length, and the
// prologue's 8-channel columns do the same. The producers' pending biases are added and the sum rounded to T, as the
// concatenation kernel stores it, before anything else reads the value: the statistics and the products see the
// bits the stored concatenation would hold. The shortcut without a group norm runs the prologue's instance with
// stats = 0 where there are biases to add (the A tiles get only x + bias, rounded), else the plain instance; and the
// up block's own shortcut can ride in conv1's launch (Pair: the blocks past conv1's column tiles take the 1x1 weights,
// stats off), so norm1, conv1 and the shortcut are one graph node where they were three.
//
// Statistics computed once (StatsOut, NormIn::given; twenty-fourth session): on an H200 the prologue above lost every
// timed choice, because each block read its whole sample for the statistics (L2 traffic blocks x sample: 33-37 us
// against 7.7 for the plain tile at 16x16x256 -> 768). So the convolution that writes a tensor a group norm reads next
// leaves, in its epilogue, (mean, M2) per run of 16 output pixels and channel, and the reader's prologue merges its
// sample's pairs per group (each channel shifted by the reader's pre-add terms) instead of reading x.
#include "cuda_compat.cuh"
#include "dtype.cuh"
#include "onestep_kernels.h"
#include "reduce.cuh"
#include "status.cuh"
#include "tensor_core.cuh"

#include <climits>
#include <cstdio>

namespace onestep {
namespace igemm {

using tensor_core::cp_async16;
using tensor_core::cp_async_commit;
using tensor_core::cp_async_wait;
using tensor_core::ldmatrix_x4;
using tensor_core::mma;

struct Shape {
    int N, H, W, Cin, KH, KW, Cout, stride, padding, Ho, Wo;
    int M;      // N Ho Wo: the GEMM's rows
    int K;      // KH KW Cin: its depth
    int steps;  // K / 16
    int up;     // 1: the input is x upsampled 2x (nearest), never stored: H, W are the upsampled sizes, and pixel
                // (iy, ix) reads x's (iy / 2, ix / 2) (diffusers' Upsample2D, then its 3x3 convolution, in one launch)
    int Ca;     // channels 0 .. Ca - 1 come from x (N, H, W, Ca), the rest from x2 (N, H, W, Cin - Ca): the input is
                // their concatenation, never stored (an up block's cat(h, skip)); Ca = Cin where there is one source
    int prefetch;  // 1: the tile's weight rows are asked of L2 before the wait (weight_prefetch(), at launch)
};

// The group norm (+ SiLU) applied to x as it is loaded (NORM): x' = (x + x_bias[c]) + (add[n, c] + add_bias[c]) (each
// term optional), normalized over its groups of Cin / groups channels, times gamma plus beta, then SiLU if silu.
// With two sources (x2), x_bias is x's (Ca channels) and x2_bias x2's, and each source's x + bias is rounded to T
// first, as the concatenation kernel stores it (groupnorm.cu's ConcatSrc). stats = 0: no group norm, only the pending
// biases added (and rounded) as the A tiles land: a convolution of the concatenation of two biased inputs.
template <typename T>
struct NormIn {
    const T *gamma, *beta, *x_bias, *add, *add_bias, *x2_bias;
    int groups;
    float eps;
    int silu;
    int stats;
    const float2* given;  // non-null: x's per-channel statistics as a producer's epilogue left them (StatsOut)
};

// A second convolution in the same launch (NORM only; first_tiles > 0): an up block's 1x1 conv_shortcut of the same
// concatenation as its norm1 -> conv1, with the same output pixels (stride 1, Ho Wo = H W) and channels. The blocks
// with blockIdx.y >= first_tiles (conv1's column tiles) compute it: KRSC weights w (Cout, KH, KW, Cin), no bias and
// no residual, on the input with only its pending biases added (stats off), into y. One graph node instead of two.
template <typename T>
struct Pair {
    const T* w;
    T* y;
    int KH, KW, padding, first_tiles;
};

// Statistics of y left by the epilogue for the convolution that normalizes y next (its NormIn's `given`; twenty-fourth
// session). part (N, Ho Wo / 16, groups) gets, for each run of 16 output pixels and each group of Cout / groups
// channels, the mean and the sum of squared deviations about it (M2) of y as stored (rounded to T). The reader takes
// them per channel (groups = Cout), so it can add its own pre-add terms, which are constant over a run's pixels.
// part null: none.
struct StatsOut {
    float2* part;
    int groups;
};

// The prologue's shared memory after the tile's: per channel {x_bias, add + add_bias, gamma, beta}, per group
// {mean, rstd}, per channel the statistics' shift.
inline int norm_shared_bytes(int Cin, int groups) { return 16 * Cin + 8 * groups + 4 * Cin; }

// A tile shape: BM output pixels x BN output channels a block, the depth split over KSPLIT warps, each with a ring of
// STAGES cp.async buffers. The shared memory serves the pipeline, then the KSPLIT partial sums (fp32) for the epilogue.
template <int BM_, int BN_, int KSPLIT_, int STAGES_, int CS_ = 1>
struct Tile {
    static constexpr int BM = BM_, BN = BN_, KSPLIT = KSPLIT_, STAGES = STAGES_, CS = CS_;
    static_assert(CS == 1 || CS == 2 || CS == 4 || CS == 8, "a portable cluster size");
    static_assert(BM % 16 == 0 && BN % 16 == 0 && STAGES >= 2, "m16n8k16 fragments (B two at a time); a ring of two+");
    static constexpr int kThreads = 32 * KSPLIT;
    static constexpr int kAChunks = BM * 2 / 32, kBChunks = BN * 2 / 32;  // 16-byte moves per lane and step
    static constexpr int kStageBytes = (BM + BN) * 32;
    static constexpr int kPipeBytes = KSPLIT * STAGES * kStageBytes;
    static constexpr int kReduceBytes = KSPLIT * BM * BN * 4;
    static constexpr int kSharedBytes = kPipeBytes > kReduceBytes ? kPipeBytes : kReduceBytes;
    static_assert(kSharedBytes <= 48 * 1024, "within the default dynamic shared memory (no opt-in attribute)");
};

// The configurations the API offers (onestep_conv2d_igemm_config_name); 0 is the heuristic's pick among them.
using Tile1 = Tile<16, 32, 4, 4>;  // tiny M (the 4x4 and 8x8 levels at batch 1)
using Tile2 = Tile<32, 32, 4, 4>;
using Tile3 = Tile<32, 64, 4, 3>;
using Tile4 = Tile<64, 32, 4, 3>;
using Tile5 = Tile<32, 32, 8, 3>;  // deep K (Cin 256-512, 3x3)
using Tile6 = Tile<64, 64, 2, 3>;  // large M (batch 64): fewer, fuller blocks
using Tile7 = Tile<16, 32, 8, 3>;
using Tile8 = Tile<16, 32, 4, 4, 2>;   // the depth over a cluster of 2 blocks (sm_90): the 16x16 level
using Tile9 = Tile<16, 32, 4, 4, 4>;   // ... of 4: the 8x8 level
using Tile10 = Tile<16, 32, 4, 4, 8>;  // ... of 8: the 4x4 level (8 tiles: 64 blocks)
using Tile11 = Tile<32, 32, 4, 4, 2>;  // the 32x32 level
constexpr int kConfigs = 11;
constexpr int kFirstClusterConfig = 8;  // configs from here on need thread block clusters

// Byte offset of 16-byte half `chunk` (0 or 1) of tile row `row` (rows of 32 bytes, halves swapped on rows 4..7 mod 8).
__device__ __forceinline__ int swizzled(int row, int chunk) { return row * 32 + ((chunk ^ ((row >> 2) & 1)) << 4); }

__device__ __forceinline__ float sigmoid(float u) { return 1.0f / (1.0f + __expf(-u)); }  // groupnorm.cu's

// NORM: sample n's normalization constants into shared memory (chan, gstat, shift: norm_shared_bytes), ending at a
// barrier; `red` (64 bytes a thread, or a chunk where Cin / 8 is more: the tile's pipeline memory, not yet in use)
// holds the partial sums. One pass over x with as many loads in flight as a thread can hold: the sample is Cin / 8
// columns of 16-byte chunks (8 channels) by HW pixels; item (j, r) sums column j over pixels r, r + rows, ..., each
// channel's values shifted by its first pixel's, K_c (sums of x' - K_c and of its square: a shift keeps the squares
// from cancelling; Chan et al. 1979). Then one thread per group merges its channels' items in a fixed order (every
// run gives the same bits): mean = sum_c (HW K_c + S1_c) / (HW Cg), and the squared deviations about it
// sum_c [S2_c - S1_c^2 / HW + HW (m_c - mean)^2] with m_c = K_c + S1_c / HW, the biased variance their mean.
// x' of one input value of channel c (its constants k = chan[c]): groupnorm.cu's pre_add, and with two sources the
// concatenation's rounding of x + bias to T first (x2 non-null).
template <typename T>
__device__ __forceinline__ float pre_added(float v, const float4& k, const T* x2) {
    float t = v + k.x;
    if (x2) t = to_f32(from_f32<T>(t));
    return t + k.y;
}

// NORM with stats = 0 (a concatenation's pending biases alone): only chan's x_bias terms, then the barrier.
template <int THREADS, typename T>
__device__ __forceinline__ void norm_prologue(const T* __restrict__ x, const T* __restrict__ x2, const Shape& s,
                                              const NormIn<T>& nm, int n, float4* chan, float2* gstat, float* red) {
    for (int c = threadIdx.x; c < s.Cin; c += THREADS) {
        float ab = 0.f;
        if (nm.add) {
            ab = to_f32(nm.add[(long long)n * s.Cin + c]);
            if (nm.add_bias) ab += to_f32(nm.add_bias[c]);
        }
        const T* xb = c < s.Ca ? nm.x_bias : nm.x2_bias;
        chan[c] = make_float4(xb ? to_f32(xb[c < s.Ca ? c : c - s.Ca]) : 0.f, ab, nm.stats ? to_f32(nm.gamma[c]) : 1.f,
                              nm.stats ? to_f32(nm.beta[c]) : 0.f);
    }
    __syncthreads();
    if (!nm.stats) return;
    if (nm.given) {
        // A producer's epilogue left (mean, M2) per run of 16 pixels and channel of x as stored (StatsOut with groups
        // = Cin). The pre-add terms shift a channel's values by s_c = x_bias[c] + (add[n, c] + add_bias[c]), the same
        // at every pixel, so group g's statistics of x' are the pairs' merge (Chan et al. 1979, equal counts of 16):
        // mean = the mean of m_tc + s_c over the group's runs t and channels c, M2 = sum_tc [M2_tc + 16 (m_tc + s_c -
        // mean)^2]. `lanes` threads share a group (a power of two: the block's threads over the groups), each summing
        // a strided share of the pairs, then a fixed butterfly (the same bits every run); every thread takes part in
        // the shuffles (idle ones add zeros). x itself is not read: a few KB a block, where the pass below reads the
        // whole sample in every block.
        const int runs = s.H * s.W / 16, Cg = s.Cin / nm.groups, pairs = runs * Cg;
        int lanes = 1;
        while (lanes < 32 && 2 * lanes * nm.groups <= THREADS) lanes *= 2;
        const int lane = threadIdx.x % lanes;
        const float2* base = nm.given + (long long)n * runs * s.Cin;
        for (int first = 0; first < nm.groups * lanes; first += THREADS) {
            const int g = (first + int(threadIdx.x)) / lanes;
            const bool mine = g < nm.groups;
            auto pair = [&](int i, float& m) {  // pair i of group g: run i / Cg, channel g Cg + i % Cg, shifted
                const int c = g * Cg + i % Cg;
                const float2 q = base[(long long)(i / Cg) * s.Cin + c];
                m = q.x + (chan[c].x + chan[c].y);
                return q.y;
            };
            float sum = 0.f;
            for (int i = lane; mine && i < pairs; i += lanes) {
                float m;
                pair(i, m);
                sum += m;
            }
            for (int o = lanes / 2; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            const float mean = sum / float(pairs);
            float m2 = 0.f;
            for (int i = lane; mine && i < pairs; i += lanes) {
                float m;
                const float q2 = pair(i, m);
                m2 += q2 + 16.f * (m - mean) * (m - mean);
            }
            for (int o = lanes / 2; o > 0; o /= 2) m2 += __shfl_xor_sync(0xffffffffu, m2, o);
            if (mine && lane == 0)
                gstat[g] = make_float2(mean, 1.0f / sqrtf(fmaxf(m2, 0.f) / (float(s.H * s.W) * float(Cg)) + nm.eps));
        }
        __syncthreads();
        return;
    }
    float* shift = reinterpret_cast<float*>(gstat + nm.groups);
    const int cols = s.Cin / 8, HW = s.H * s.W, rows = cols >= THREADS ? 1 : THREADS / cols;
    const long long pix0 = (long long)n * HW;  // the sample's first pixel
    // Column j's chunk at pixel p (8 values of T; Ca is a multiple of 16, so a column lies in one source), and its x'
    // in fp32.
    struct alignas(16) Chunk {  // T itself, not words: read as T (no aliasing of other types)
        T v[8];
    };
    auto load = [&](int p, int j) {
        const T* src = 8 * j < s.Ca ? x + (pix0 + p) * s.Ca + 8 * j : x2 + (pix0 + p) * (s.Cin - s.Ca) + 8 * j - s.Ca;
        return *reinterpret_cast<const Chunk*>(src);
    };
    auto widen = [&](const Chunk& q, int j, float (&v)[8]) {
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] = pre_added(to_f32(q.v[e]), chan[8 * j + e], x2);
    };
    for (int i = threadIdx.x; i < cols * rows; i += THREADS) {
        const int j = i % cols, r = i / cols;
        float k[8], s1[8] = {}, s2[8] = {};
        widen(load(0, j), j, k);
        if (r == 0)
#pragma unroll
            for (int e = 0; e < 8; e++) shift[8 * j + e] = k[e];
        auto accumulate = [&](const Chunk& q) {
            float v[8];
            widen(q, j, v);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                const float d = v[e] - k[e];
                s1[e] += d, s2[e] += d * d;
            }
        };
        int p = r;
        for (; p + 7 * rows < HW; p += 8 * rows) {  // eight 16-byte loads in flight (as 4 registers each)
            Chunk q[8];
#pragma unroll
            for (int u = 0; u < 8; u++) q[u] = load(p + u * rows, j);
#pragma unroll
            for (int u = 0; u < 8; u++) accumulate(q[u]);
        }
        for (; p < HW; p += rows) accumulate(load(p, j));
#pragma unroll
        for (int e = 0; e < 8; e++) red[16 * i + e] = s1[e], red[16 * i + 8 + e] = s2[e];
    }
    __syncthreads();
    const int Cg = s.Cin / nm.groups;
    const float hw = float(HW);
    for (int g = threadIdx.x; g < nm.groups; g += THREADS) {
        // Channel c's sums over its items (rows in order), and its shift.
        auto sums = [&](int c, float& kc, float& s1, float& s2) {
            kc = shift[c], s1 = 0.f, s2 = 0.f;
            for (int r = 0; r < rows; r++) {
                const float* it = red + 16 * (r * cols + c / 8);
                s1 += it[c % 8], s2 += it[8 + c % 8];
            }
        };
        float total = 0.f;
        for (int c = g * Cg; c < (g + 1) * Cg; c++) {
            float kc, s1, s2;
            sums(c, kc, s1, s2);
            total += hw * kc + s1;
        }
        const float mean = total / (hw * float(Cg));
        float m2 = 0.f;
        for (int c = g * Cg; c < (g + 1) * Cg; c++) {
            float kc, s1, s2;
            sums(c, kc, s1, s2);
            const float dm = kc + s1 / hw - mean;
            m2 += (s2 - s1 * s1 / hw) + hw * dm * dm;
        }
        gstat[g] = make_float2(mean, 1.0f / sqrtf(fmaxf(m2, 0.f) / (hw * float(Cg)) + nm.eps));
    }
    __syncthreads();
}

// StatsOut: the tile's (mean, M2) per run of 16 output pixels and group, from the values the epilogue left in
// `kept` (the whole tile's in one block; with a cluster each output's in the block that finished it, CS-th runs of kThreads
// outputs, read through distributed shared memory). Two passes over values in shared memory (the mean, then the
// squared deviations about it: no cancellation), in a fixed order (the same bits every run). Per channel (the
// reader's layout), one thread an item, its 16 values in order; for wider groups one warp an item, lane-strided sums
// then a butterfly across the warp. Not inlined: inlined, its code changed the register allocation of the plain
// kernels, which never run it (sm_90a: a 4-byte spill in the 32x32 tile); as a call, no instance spills (the 32x64
// prologue instance's 28 bytes before it are gone too).
template <class C>
__device__ __noinline__ void tile_stats(const float* kept, const Shape& s, const StatsOut& so, int m0, int n0,
                                           int wid, int lane) {
    static_assert(C::KSPLIT >= 2, "kept values live in the second warp's slice");
    const int Cg = s.Cout / so.groups, per_tile = C::BN / Cg, items = (C::BM / 16) * per_tile, cnt = 16 * Cg;
    auto value = [&](int row0, int col0, int i) {
        const int e = (row0 + i / Cg) * C::BN + col0 + i % Cg;
        if constexpr (C::CS == 1) return kept[e];
        else return cluster_map(kept, unsigned((e / C::kThreads) % C::CS))[e];
    };
    auto out = [&](int row0, int col0) -> float2& {
        return so.part[(long long)((m0 + row0) / 16) * so.groups + (n0 + col0) / Cg];
    };
    if (Cg == 1) {
        for (int it = wid * 32 + lane; it < items; it += C::CS * C::kThreads) {
            const int row0 = (it / per_tile) * 16, col0 = it % per_tile;
            if (m0 + row0 >= s.M || n0 + col0 >= s.Cout) continue;  // a run lies in one sample (HW % 16)
            float sum = 0.f, m2 = 0.f;
            for (int i = 0; i < 16; i++) sum += value(row0, col0, i);
            const float mean = sum / 16.f;
            for (int i = 0; i < 16; i++) {
                const float d = value(row0, col0, i) - mean;
                m2 += d * d;
            }
            out(row0, col0) = make_float2(mean, m2);
        }
        return;
    }
    for (int it = wid; it < items; it += C::CS * C::KSPLIT) {
        const int row0 = (it / per_tile) * 16, col0 = (it % per_tile) * Cg;
        if (m0 + row0 >= s.M || n0 + col0 >= s.Cout) continue;  // warp-uniform
        float sum = 0.f;
        for (int i = lane; i < cnt; i += 32) sum += value(row0, col0, i);
        const float mean = warp_sum(sum) / float(cnt);
        float m2 = 0.f;
        for (int i = lane; i < cnt; i += 32) {
            const float d = value(row0, col0, i) - mean;
            m2 += d * d;
        }
        m2 = warp_sum(m2);
        if (lane == 0) out(row0, col0) = make_float2(mean, m2);
    }
}

template <typename T, class C, bool NORM = false>
__global__ void __launch_bounds__(C::kThreads)
    conv_kernel(const T* __restrict__ x, const T* __restrict__ x2, const T* __restrict__ w, const T* __restrict__ bias,
                const T* z, T* y, Shape s, NormIn<T> nm, Pair<T> pair, StatsOut so) {
    int tile_y = blockIdx.y;
    if constexpr (NORM) {
        if (pair.first_tiles > 0 && tile_y >= pair.first_tiles) {  // this block computes the second convolution
            tile_y -= pair.first_tiles;
            s.KH = pair.KH, s.KW = pair.KW, s.padding = pair.padding, s.K = s.KH * s.KW * s.Cin, s.steps = s.K / 16;
            w = pair.w, y = pair.y, bias = nullptr, z = nullptr, nm.stats = 0, so.part = nullptr;
        }
    }
    const int m0 = (blockIdx.x / C::CS) * C::BM, n0 = tile_y * C::BN;
    // The tile's weight rows (KRSC: out channels n0 .. n0 + BN - 1, one contiguous span) asked of L2 before the wait
    // (prefetch_l2): the ring's later steps then find them there. Only the first row of tiles asks (the others read
    // the same rows), each block of a cluster its 1/CS of the span (block r of a cluster is rank r along x).
    if (s.prefetch && m0 == 0) {
        const int rows = s.Cout - n0 < C::BN ? s.Cout - n0 : C::BN;
        prefetch_l2(w + (long long)n0 * s.K, size_t(rows) * s.K * sizeof(T), blockIdx.x % C::CS, C::CS);
    }
    await_predecessors();
    ONESTEP_DYNAMIC_SHARED(unsigned char, smem);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const unsigned rank = C::CS > 1 ? cluster_rank() : 0u;
    unsigned char* ring = smem + warp * C::STAGES * C::kStageBytes;
    // This warp among the cluster's CS x KSPLIT, which deal the steps round robin.
    const int wid = int(rank) * C::KSPLIT + warp, warps = C::CS * C::KSPLIT;

    // The output pixels of this lane's A moves (move i: tile row (lane + 32 i) / 2, half (lane + 32 i) % 2): the
    // sample's first pixel and the top-left input coordinate of the window; rows past M get a coordinate no tap
    // brings inside the image, so they load zeros.
    long long a_pix[C::kAChunks];
    int a_iy[C::kAChunks], a_ix[C::kAChunks];
#pragma unroll
    for (int i = 0; i < C::kAChunks; i++) {
        const int m = m0 + (lane + 32 * i) / 2;
        a_pix[i] = 0, a_iy[i] = INT_MIN / 2, a_ix[i] = 0;
        if (m < s.M) {
            const int hw = s.Ho * s.Wo, n = m / hw, rem = m - n * hw, oy = rem / s.Wo, ox = rem - oy * s.Wo;
            a_pix[i] = (long long)n * (s.H >> s.up) * (s.W >> s.up);
            a_iy[i] = oy * s.stride - s.padding, a_ix[i] = ox * s.stride - s.padding;
        }
    }

    // Queues step `step` (depth k0 = 16 step) into ring buffer `buf`.
    auto load = [&](int step, int buf) {
        unsigned char* a_tile = ring + buf * C::kStageBytes;
        unsigned char* b_tile = a_tile + C::BM * 32;
        const int k0 = step * 16, tap = k0 / s.Cin, c0 = k0 - tap * s.Cin, r = tap / s.KW, q = tap - r * s.KW;
        // The step's 16 channels lie in one source (Ca is a multiple of 16): its base and row length, warp-uniform.
        const bool first = c0 < s.Ca;
        const T* base = first ? x + c0 : x2 + (c0 - s.Ca);
        const int row = first ? s.Ca : s.Cin - s.Ca;
#pragma unroll
        for (int i = 0; i < C::kAChunks; i++) {
            const int id = lane + 32 * i, iy = a_iy[i] + r, ix = a_ix[i] + q;
            const bool valid = unsigned(iy) < unsigned(s.H) && unsigned(ix) < unsigned(s.W);
            const long long pix = a_pix[i] + (long long)(iy >> s.up) * (s.W >> s.up) + (ix >> s.up);
            const T* src = valid ? base + pix * row + (id % 2) * 8 : x;
            cp_async16(a_tile + swizzled(id / 2, id % 2), src, valid);
        }
#pragma unroll
        for (int i = 0; i < C::kBChunks; i++) {
            const int id = lane + 32 * i, co = n0 + id / 2;
            const bool valid = co < s.Cout;
            const T* src = valid ? w + (long long)co * s.K + k0 + (id % 2) * 8 : w;
            cp_async16(b_tile + swizzled(id / 2, id % 2), src, valid);
        }
    };

    // NORM: the statistics first, their partial sums in the pipeline's memory (the constants sit past it).
    float4* chan = reinterpret_cast<float4*>(smem + C::kSharedBytes);
    float2* gstat = reinterpret_cast<float2*>(chan + s.Cin);
    if constexpr (NORM)
        norm_prologue<C::kThreads>(x, x2, s, nm, m0 / (s.Ho * s.Wo), chan, gstat, reinterpret_cast<float*>(smem));

    float acc[C::BM / 16][C::BN / 8][4] = {};
    const int mine = wid < s.steps ? (s.steps - wid + warps - 1) / warps : 0;  // warp-uniform
#pragma unroll
    for (int j = 0; j < C::STAGES - 1; j++) {
        if (j < mine) load(wid + j * warps, j);
        cp_async_commit();  // empty groups too: the wait below counts groups
    }
    for (int i = 0; i < mine; i++) {
        cp_async_wait<C::STAGES - 2>();  // this lane's moves of step i have landed...
        if constexpr (NORM) {
            // ...so it normalizes them in place (its own moves: visible to it after the wait, to the warp after the
            // __syncwarp below), leaving the zero padding as it is.
            const int k0 = (wid + i * warps) * 16, tap = k0 / s.Cin, c0 = k0 - tap * s.Cin, r = tap / s.KW,
                      q = tap - r * s.KW, Cg = nm.stats ? s.Cin / nm.groups : 1;
            unsigned char* a_tile = ring + (i % C::STAGES) * C::kStageBytes;
#pragma unroll
            for (int j = 0; j < C::kAChunks; j++) {
                const int id = lane + 32 * j, iy = a_iy[j] + r, ix = a_ix[j] + q;
                if (!(unsigned(iy) < unsigned(s.H) && unsigned(ix) < unsigned(s.W))) continue;
                T* v = reinterpret_cast<T*>(a_tile + swizzled(id / 2, id % 2));
                const int c = c0 + (id % 2) * 8;
#pragma unroll
                for (int e = 0; e < 8; e += 4) {
                    const float4 raw = load4(v + e);
                    const float vs[4] = {raw.x, raw.y, raw.z, raw.w};
                    float o[4];
                    // c + e is a multiple of 4 and so is Cg: the four share one group (one division, not four).
                    const float2 st = nm.stats ? gstat[(c + e) / Cg] : make_float2(0.f, 1.f);
#pragma unroll
                    for (int f = 0; f < 4; f++) {
                        const float4 k = chan[c + e + f];
                        float u = pre_added(vs[f], k, x2);
                        if (nm.stats) {
                            u = (u - st.x) * st.y * k.z + k.w;
                            if (nm.silu) u = u * sigmoid(u);
                        }
                        o[f] = u;
                    }
                    store4(v + e, make_float4(o[0], o[1], o[2], o[3]));
                }
            }
        }
        __syncwarp();                    // ...and everyone's; also, every lane is done reading step i - 1's buffer
        const int next = i + C::STAGES - 1;
        if (next < mine) load(wid + next * warps, next % C::STAGES);
        cp_async_commit();
        const unsigned char* a_tile = ring + (i % C::STAGES) * C::kStageBytes;
        const unsigned char* b_tile = a_tile + C::BM * 32;
        // Fragments by ldmatrix.x4, lane L giving the row address of matrix L / 8 (row L % 8 of it): B's matrices are
        // (channels ni*8.., depth 0-7), (ni*8.., 8-15), ((ni+1)*8.., 0-7), ((ni+1)*8.., 8-15), i.e. b[ni][0..1] and
        // b[ni+1][0..1]; A's are (rows 0-7, depth 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15) of the 16-row slice,
        // i.e. a[0..3]. The same values as one 32-bit load per register (lane 4g + t: row g, elements 2t, 2t + 1),
        // four registers an instruction; each phase's 8 rows still hit 8 distinct 16-byte bank groups (the swizzle).
        uint32_t b[C::BN / 8][2];
#pragma unroll
        for (int ni = 0; ni < C::BN / 8; ni += 2) {
            const int m = lane >> 3;
            uint32_t r[4];
            ldmatrix_x4<false>(r, b_tile + swizzled((ni + (m >> 1)) * 8 + (lane & 7), m & 1));
            b[ni][0] = r[0], b[ni][1] = r[1], b[ni + 1][0] = r[2], b[ni + 1][1] = r[3];
        }
#pragma unroll
        for (int mi = 0; mi < C::BM / 16; mi++) {
            const int m = lane >> 3;
            uint32_t a[4];
            ldmatrix_x4<false>(a, a_tile + swizzled(mi * 16 + 8 * (m & 1) + (lane & 7), m >> 1));
#pragma unroll
            for (int ni = 0; ni < C::BN / 8; ni++) mma<T>(acc[mi][ni], a, b[ni][0], b[ni][1]);
        }
    }
    cp_async_wait<0>();
    __syncthreads();  // every warp is out of its ring: the shared memory now holds the partial sums

    float* part = reinterpret_cast<float*>(smem);
    // StatsOut: each output's value as stored, kept in the second warp's slice of the partial sums (KSPLIT >= 2; only
    // the thread finishing output e reads that slice's e, and the cluster's peers read the first slice only).
    float* kept = part + C::BM * C::BN;
#pragma unroll
    for (int mi = 0; mi < C::BM / 16; mi++)
#pragma unroll
        for (int ni = 0; ni < C::BN / 8; ni++) {
            float* p = part + ((long long)warp * C::BM + mi * 16 + g) * C::BN + ni * 8 + 2 * t;
            p[0] = acc[mi][ni][0], p[1] = acc[mi][ni][1];
            p[8 * C::BN] = acc[mi][ni][2], p[8 * C::BN + 1] = acc[mi][ni][3];
        }
    __syncthreads();
    if constexpr (C::CS == 1) {
        // Epilogue: a block-wide pass over the tile, consecutive threads on consecutive output channels (coalesced).
        for (int e = threadIdx.x; e < C::BM * C::BN; e += C::kThreads) {
            const int row = e / C::BN, col = e - row * C::BN, m = m0 + row, co = n0 + col;
            if (m >= s.M || co >= s.Cout) continue;
            float v = 0.f;
#pragma unroll
            for (int k = 0; k < C::KSPLIT; k++) v += part[k * C::BM * C::BN + e];
            const long long o = (long long)m * s.Cout + co;
            if (bias) v += to_f32(bias[co]);
            if (z) v += to_f32(z[o]);  // z may be y itself: read before the write, by the same thread
            const T stored = from_f32<T>(v);
            y[o] = stored;
            if (so.part) kept[e] = to_f32(stored);
        }
        if (so.part) {
            __syncthreads();
            tile_stats<C>(kept, s, so, m0, n0, wid, lane);
        }
    } else {
        // This block's sum over its warps, in place (each e read and written by one thread).
        for (int e = threadIdx.x; e < C::BM * C::BN; e += C::kThreads) {
            float v = 0.f;
#pragma unroll
            for (int k = 0; k < C::KSPLIT; k++) v += part[k * C::BM * C::BN + e];
            part[e] = v;
        }
        cluster_sync();  // every block's sum is written
        // Block `rank` finishes every CS-th run of kThreads outputs: the CS sums in rank order, then the epilogue.
        for (int e = threadIdx.x + int(rank) * C::kThreads; e < C::BM * C::BN; e += C::kThreads * C::CS) {
            const int row = e / C::BN, col = e - row * C::BN, m = m0 + row, co = n0 + col;
            if (m >= s.M || co >= s.Cout) continue;
            float v = 0.f;
            for (int r = 0; r < C::CS; r++) v += cluster_map(part, unsigned(r))[e];
            const long long o = (long long)m * s.Cout + co;
            if (bias) v += to_f32(bias[co]);
            if (z) v += to_f32(z[o]);
            const T stored = from_f32<T>(v);
            y[o] = stored;
            if (so.part) kept[e] = to_f32(stored);
        }
        if (so.part) {
            cluster_sync();  // every block's kept values are written
            tile_stats<C>(kept, s, so, m0, n0, wid, lane);
        }
        cluster_sync();  // the peers have read this block's sum: its shared memory may go
    }
}

template <class C>
long long blocks_of(const Shape& s) {
    return (long long)((s.M + C::BM - 1) / C::BM) * ((s.Cout + C::BN - 1) / C::BN) * C::CS;
}

// A cost model for config 0, in units of one warp's mma step: waves of warps (assuming ~132 SMs x 8 resident warps)
// times each warp's serial steps and mmas per step, plus the epilogue's pass. Rough on purpose: the backend times the
// configurations on the device and keeps the fastest; this only serves callers that do not.
template <class C>
double modeled_cost(const Shape& s) {
    const double warps = double(blocks_of<C>(s)) * C::KSPLIT, waves = warps / 1056.0 < 1 ? 1 : warps / 1056.0;
    const double steps = (s.steps + C::KSPLIT - 1) / C::KSPLIT;
    return waves * (steps * (C::BM / 16) * (C::BN / 8) + 4.0 * C::BM * C::BN / C::kThreads);
}

// Among the tiles every device runs (not the cluster ones, which need sm_90); groups > 0: among those that take the
// group norm prologue for this shape (norm_fits; stats false: the prologue of pending biases alone).
int pick(const Shape& s, int groups = 0, bool stats = true);

// nm null: the plain convolution; else the group norm prologue (NORM), with its constants' shared memory.
template <typename T, class C>
cudaError_t run(const void* x, const void* x2, const void* w, const void* bias, const void* z, void* y, const Shape& s,
                const NormIn<T>* nm, const Pair<T>& pair, const StatsOut& so, cudaStream_t stream) {
    const unsigned tiles_y = unsigned((s.Cout + C::BN - 1) / C::BN);
    Pair<T> pr = pair;
    if (pr.w) pr.first_tiles = int(tiles_y);
    const dim3 grid(unsigned((s.M + C::BM - 1) / C::BM * C::CS), pr.w ? 2 * tiles_y : tiles_y);
    const size_t shared = size_t(C::kSharedBytes) + (nm ? size_t(norm_shared_bytes(s.Cin, nm->groups)) : 0);
    const NormIn<T> args = nm ? *nm : NormIn<T>{};
    auto kernel = nm ? conv_kernel<T, C, true> : conv_kernel<T, C, false>;
    if (shared > 48 * 1024)  // the constants past a large tile's 48 KB (norm_fits bounds it)
        if (const cudaError_t e =
                cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)))
            return e;
    if constexpr (C::CS > 1)
        return launch_cluster(kernel, grid, dim3(C::kThreads), unsigned(C::CS), shared, stream,
                              static_cast<const T*>(x), static_cast<const T*>(x2), static_cast<const T*>(w),
                              static_cast<const T*>(bias), static_cast<const T*>(z), static_cast<T*>(y), s, args, pr, so);
    return launch_dependent(kernel, grid, dim3(C::kThreads), shared, stream, static_cast<const T*>(x),
                            static_cast<const T*>(x2), static_cast<const T*>(w), static_cast<const T*>(bias),
                            static_cast<const T*>(z), static_cast<T*>(y), s, args, pr, so);
}

template <typename T>
cudaError_t dispatch(int config, const void* x, const void* x2, const void* w, const void* bias, const void* z, void* y,
                     const Shape& s, const NormIn<T>* nm, const Pair<T>& pair, const StatsOut& so,
                     cudaStream_t stream) {
    switch (config) {
        case 1: return run<T, Tile1>(x, x2, w, bias, z, y, s, nm, pair, so, stream);
        case 2: return run<T, Tile2>(x, x2, w, bias, z, y, s, nm, pair, so, stream);
        case 3: return run<T, Tile3>(x, x2, w, bias, z, y, s, nm, pair, so, stream);
        case 4: return run<T, Tile4>(x, x2, w, bias, z, y, s, nm, pair, so, stream);
        case 5: return run<T, Tile5>(x, x2, w, bias, z, y, s, nm, pair, so, stream);
        case 6: return run<T, Tile6>(x, x2, w, bias, z, y, s, nm, pair, so, stream);
        case 7: return run<T, Tile7>(x, x2, w, bias, z, y, s, nm, pair, so, stream);
        case 8: return run<T, Tile8>(x, x2, w, bias, z, y, s, nm, pair, so, stream);
        case 9: return run<T, Tile9>(x, x2, w, bias, z, y, s, nm, pair, so, stream);
        case 10: return run<T, Tile10>(x, x2, w, bias, z, y, s, nm, pair, so, stream);
        default: return run<T, Tile11>(x, x2, w, bias, z, y, s, nm, pair, so, stream);
    }
}

// Per config (0 .. kConfigs): what the checks need of its tile (config 0: none, a cluster of 1).
struct TileInfo {
    int rows, threads, shared, cluster;
};
template <class C>
constexpr TileInfo info() {
    return TileInfo{C::BM, C::kThreads, C::kSharedBytes, C::CS};
}
constexpr TileInfo kTiles[kConfigs + 1] = {{0, 0, 0, 1},   info<Tile1>(), info<Tile2>(),  info<Tile3>(),
                                           info<Tile4>(),  info<Tile5>(), info<Tile6>(),  info<Tile7>(),
                                           info<Tile8>(),  info<Tile9>(), info<Tile10>(), info<Tile11>()};

// grid.y is Cout's column tiles (twice that with the paired shortcut), at most 65535, and a tile is at least 16 wide.
constexpr int kMaxCout = 65535 / 2 * 16;

// Shapes past the 32-bit index arithmetic (M = N Ho Wo and K = KH KW Cin, with headroom) or grid.y: refused by the
// entry points, and given no tile by the choice.
inline bool too_large(int N, int Ho, int Wo, int KH, int KW, int Cin, int Cout) {
    return (long long)N * Ho * Wo > INT_MAX / 2 || (long long)KH * KW * Cin > INT_MAX / 2 || Cout > kMaxCout;
}

// Whether tile `config` can run the group norm prologue on s: its rows lie in one sample (Ho Wo a multiple of BM; the
// statistics are the sample's) and its shared memory with the constants' stays within 99 KB (what every sm_80+
// device lets a block opt in to; Cin up to 3000 or so). Without statistics (stats false: pending biases alone), only
// the constants must fit.
constexpr int kNormSharedLimit = 99 * 1024;
inline bool norm_fits(int config, const Shape& s, int groups, bool stats = true) {
    const TileInfo& t = kTiles[config];
    if (!stats) return t.shared + norm_shared_bytes(s.Cin, 1) <= kNormSharedLimit;
    return (s.Ho * s.Wo) % t.rows == 0 && t.shared + norm_shared_bytes(s.Cin, groups) <= kNormSharedLimit &&
           t.shared >= 64 * (s.Cin / 8 > t.threads ? s.Cin / 8 : t.threads);
}

int pick(const Shape& s, int groups, bool stats) {
    const double cost[] = {modeled_cost<Tile1>(s), modeled_cost<Tile2>(s), modeled_cost<Tile3>(s),
                           modeled_cost<Tile4>(s), modeled_cost<Tile5>(s), modeled_cost<Tile6>(s),
                           modeled_cost<Tile7>(s)};
    static_assert(sizeof cost / sizeof cost[0] == kFirstClusterConfig - 1, "one cost a portable tile");
    int best = 0;
    for (int c = 1; c < kFirstClusterConfig; c++)
        if ((groups == 0 || norm_fits(c, s, groups, stats)) && (best == 0 || cost[c - 1] < cost[best - 1])) best = c;
    return best;
}

}  // namespace igemm
}  // namespace onestep

using namespace onestep;

extern "C" int onestep_conv2d_igemm_configs(void) { return igemm::kConfigs; }

extern "C" const char* onestep_conv2d_igemm_config_name(int config) {
    static const char* const names[igemm::kConfigs + 1] = {
        "auto", "16x32 tile, 4 warps, 4 stages", "32x32 tile, 4 warps, 4 stages", "32x64 tile, 4 warps, 3 stages",
        "64x32 tile, 4 warps, 3 stages", "32x32 tile, 8 warps, 3 stages", "64x64 tile, 2 warps, 3 stages",
        "16x32 tile, 8 warps, 3 stages", "16x32 tile, 4 warps, 4 stages, depth over 2 blocks",
        "16x32 tile, 4 warps, 4 stages, depth over 4 blocks", "16x32 tile, 4 warps, 4 stages, depth over 8 blocks",
        "32x32 tile, 4 warps, 4 stages, depth over 2 blocks"};
    return config >= 0 && config <= igemm::kConfigs ? names[config] : nullptr;
}

extern "C" int onestep_conv2d_igemm_config_cluster(int config) {
    return config >= 0 && config <= igemm::kConfigs ? igemm::kTiles[config].cluster : 0;
}

extern "C" int onestep_conv2d_igemm_choice(int N, int H, int W, int Cin, int KH, int KW, int Cout, int stride,
                                           int padding) {
    if (N < 1 || H < 1 || W < 1 || Cin < 16 || Cin % 16 || KH < 1 || KW < 1 || Cout < 1 || stride < 1 || padding < 0 ||
        H + 2 * padding < KH || W + 2 * padding < KW)
        return 0;
    const int Ho = (H + 2 * padding - KH) / stride + 1, Wo = (W + 2 * padding - KW) / stride + 1;
    if (igemm::too_large(N, Ho, Wo, KH, KW, Cin, Cout)) return 0;
    const igemm::Shape s{N, H, W, Cin, KH, KW, Cout, stride, padding, Ho, Wo, N * Ho * Wo, KH * KW * Cin,
                         KH * KW * Cin / 16, 0, Cin, 0};
    return igemm::pick(s);
}

// The group norm prologue's operands as the API takes them (untyped); stats 0: the pending biases of a concatenation
// alone (gamma, beta, groups, eps and silu unused).
struct NormArgs {
    const void *gamma, *beta, *x_bias, *add, *add_bias, *x2_bias;
    int groups;
    float eps;
    int silu;
    int stats;
    const float* given = nullptr;  // x's per-channel statistics a producer left (N, H W / 16, Cin) float2, or null
};

// The statistics the epilogue leaves for the next group norm (igemm::StatsOut); part null: none.
using igemm::StatsOut;

template <typename T>
static igemm::NormIn<T> typed(const NormArgs& a) {
    return igemm::NormIn<T>{static_cast<const T*>(a.gamma),    static_cast<const T*>(a.beta),
                            static_cast<const T*>(a.x_bias),   static_cast<const T*>(a.add),
                            static_cast<const T*>(a.add_bias), static_cast<const T*>(a.x2_bias),
                            a.groups,                          a.eps,
                            a.silu,                            a.stats,
                            reinterpret_cast<const float2*>(a.given)};
}

// The checks and launch of the entry points; `up`: x is (N, H / 2, W / 2, Cin), upsampled 2x on the fly; concat: the
// input is [x, x2] along channels (x2 may not be null), x with Ca of the Cin; norm: the prologue's operands, or null.
static onestep_status igemm_impl(const char* fn, const void* x, const void* w_krsc, const void* bias, const void* z,
                                 void* y, int N, int H, int W, int Cin, int KH, int KW, int Cout, int stride,
                                 int padding, int up, int config, onestep_dtype dtype, cudaStream_t stream,
                                 const NormArgs* norm = nullptr, bool concat = false, const void* x2 = nullptr,
                                 int Ca = 0, const void* pair_w = nullptr, void* pair_y = nullptr,
                                 const StatsOut* stats_out = nullptr) {
    char cat[48] = "";
    if (concat) std::snprintf(cat, sizeof cat, " (Ca=%d, Cb=%d)", Ca, Cin - Ca);
    ONESTEP_SHAPES("N=%d, H=%d, W=%d, Cin=%d%s, KH=%d, KW=%d, Cout=%d, stride=%d, padding=%d, config=%d, %s", N,
                   H >> up, W >> up, Cin, cat, KH, KW, Cout, stride, padding, config, onestep::dtype_name(dtype));
    if (dtype != ONESTEP_FLOAT16 && dtype != ONESTEP_BFLOAT16)
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "fp16 or bf16 only (tensor cores)");
    if (N < 1 || H < 1 || W < 1 || Cin < 1 || KH < 1 || KW < 1 || Cout < 1 || stride < 1 || padding < 0)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "sizes must be >= 1, padding >= 0");
    if (H + 2 * padding < KH || W + 2 * padding < KW)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "the kernel does not fit the input");
    if (config < 0 || config > igemm::kConfigs)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "config must be 0 (auto) to %d", igemm::kConfigs);
    if (Cin % 16) return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "Cin must be a multiple of 16");
    if (!x || !w_krsc || !y || (concat && !x2))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "NULL pointer");
    if (y == x)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, concat ? "y must not alias a" : "y must not alias x");
    if ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w_krsc)) % 16)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    concat ? "a and w must be 16-byte aligned (cp.async)" : "x and w must be 16-byte aligned (cp.async)");
    if (concat) {
        // Each 16-deep step's channels in one source: both widths multiples of 16.
        if (Ca < 16 || Ca % 16 || Cin - Ca < 16)
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "Ca and Cb must be multiples of 16 (at least 16)");
        if (y == x2) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "y must not alias b");
        if (z && (z == x || z == x2))
            return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "z must not alias a or b");
        if (reinterpret_cast<uintptr_t>(x2) % 16)
            return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "b must be 16-byte aligned (cp.async)");
    } else {
        Ca = Cin;
    }
    const int Ho = (H + 2 * padding - KH) / stride + 1, Wo = (W + 2 * padding - KW) / stride + 1;
    if (igemm::too_large(N, Ho, Wo, KH, KW, Cin, Cout))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "too large (N*Ho*Wo and KH*KW*Cin at most %d, Cout at most %d)",
                    INT_MAX / 2, igemm::kMaxCout);
    const igemm::Shape s{N, H, W, Cin, KH, KW, Cout, stride, padding, Ho, Wo, N * Ho * Wo, KH * KW * Cin,
                         KH * KW * Cin / 16, up, Ca, weight_prefetch()};
    if (pair_w || pair_y) {  // the 1x1 shortcut in the same launch (the prologue's blocks past conv1's)
        if (!pair_w || !pair_y || !norm || !norm->stats)
            return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "w_sc and y_sc come together, with the group norm");
        if (stride != 1 || Ho != H || Wo != W)
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                        "the shortcut needs conv1's output the size of its input (stride 1, 'same' padding)");
        if (reinterpret_cast<uintptr_t>(pair_w) % 16)
            return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "w_sc must be 16-byte aligned (cp.async)");
        for (const void* p : {x, x2, static_cast<const void*>(y), z, norm->gamma, norm->beta, norm->x_bias,
                              norm->x2_bias, pair_w})
            if (p && p == pair_y)
                return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                            "y_sc must not alias a, b, y, z, gamma, beta, a_bias, b_bias or w_sc");
    }
    if (norm && norm->given) {
        if ((H * W) % 16)
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                        "H*W=%d: given statistics come in runs of 16 pixels (H*W a multiple of 16)", H * W);
        if (reinterpret_cast<uintptr_t>(norm->given) % 8)
            return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "stats must be 8-byte aligned (float2)");
        if (static_cast<const void*>(norm->given) == y ||
            (stats_out && static_cast<const void*>(stats_out->part) == static_cast<const void*>(norm->given)))
            return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "stats must not alias y or stats_out");
    }
    if (norm && !norm->stats) {
        for (const void* p : {norm->x_bias, norm->x2_bias})
            if (p && p == y)
                return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "y must not alias a_bias or b_bias");
        if (config == 0) config = igemm::pick(s, 1, false);
        if (config == 0 || !igemm::norm_fits(config, s, 1, false))
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                        "no tile holds the biases' %d bytes of constants past its own (at most %d KB in all)",
                        igemm::norm_shared_bytes(Cin, 1), igemm::kNormSharedLimit / 1024);
    } else if (norm) {
        if (norm->groups < 1 || Cin % norm->groups || (Cin / norm->groups) % 4)
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                        "groups=%d: the group norm prologue needs groups dividing Cin into multiples of 4 channels",
                        norm->groups);
        if (!(norm->eps > 0.f)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "eps must be > 0");
        if (!norm->gamma || !norm->beta) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "NULL gamma or beta");
        // add_bias is a term of add (time_emb_proj's bias), read only with it: alone it would be dropped silently.
        if (norm->add_bias && !norm->add)
            return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "add_bias is given without add");
        // Every block reads these while others may already write y.
        for (const void* p : {norm->gamma, norm->beta, norm->x_bias, norm->add, norm->add_bias, norm->x2_bias})
            if (p && p == y)
                return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                            concat ? "y must not alias gamma, beta, a_bias or b_bias"
                               : "y must not alias gamma, beta, x_bias, add or add_bias");
        if (config == 0 && (config = igemm::pick(s, norm->groups)) == 0)
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "no tile takes the group norm prologue here");
        if ((Ho * Wo) % igemm::kTiles[config].rows)
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                        "Ho*Wo=%d is not a multiple of tile %d's %d rows (with the group norm prologue a tile's rows "
                        "must lie in one sample)",
                        Ho * Wo, config, igemm::kTiles[config].rows);
        if (!igemm::norm_fits(config, s, norm->groups))
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                        "tile %d cannot hold the prologue: %d bytes of constants past its %d (at most %d KB in all), "
                        "and 64 bytes of partial sums for each of max(%d threads, Cin / 8) items in its own",
                        config, igemm::norm_shared_bytes(Cin, norm->groups), igemm::kTiles[config].shared,
                        igemm::kNormSharedLimit / 1024, igemm::kTiles[config].threads);
    }
    if (stats_out && stats_out->part) {
        const StatsOut& so = *stats_out;
        if (so.groups < 1 || Cout % so.groups || 32 % (Cout / so.groups))
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                        "out_groups=%d: the statistics' groups must divide Cout into 1, 2, 4, 8, 16 or 32 channels "
                        "(a tile's columns hold whole groups)",
                        so.groups);
        if ((Ho * Wo) % 16)
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                        "Ho*Wo=%d: the statistics come in runs of 16 pixels (Ho*Wo a multiple of 16)", Ho * Wo);
        if (reinterpret_cast<uintptr_t>(so.part) % 8)
            return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "stats_out must be 8-byte aligned (float2)");
        for (const void* p : {x, x2, w_krsc, bias, z, static_cast<const void*>(y)})
            if (p && p == so.part)
                return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "stats_out must not alias another operand");
    }
    if (onestep_conv2d_igemm_config_cluster(config) > 1)
        if (onestep_status st = require_sm90(fn, shapes, "a tile whose depth is split over a cluster")) return st;
    if (config == 0) config = igemm::pick(s);
    cudaError_t e;
    if (dtype == ONESTEP_FLOAT16) {
        const igemm::NormIn<__half> nm = norm ? typed<__half>(*norm) : igemm::NormIn<__half>{};
        const igemm::Pair<__half> pair{static_cast<const __half*>(pair_w), static_cast<__half*>(pair_y), 1, 1, 0, 0};
        e = igemm::dispatch<__half>(config, x, x2, w_krsc, bias, z, y, s, norm ? &nm : nullptr, pair,
                                    stats_out ? *stats_out : StatsOut{}, stream);
    } else {
        const igemm::NormIn<__nv_bfloat16> nm = norm ? typed<__nv_bfloat16>(*norm) : igemm::NormIn<__nv_bfloat16>{};
        const igemm::Pair<__nv_bfloat16> pair{static_cast<const __nv_bfloat16*>(pair_w),
                                              static_cast<__nv_bfloat16*>(pair_y), 1, 1, 0, 0};
        e = igemm::dispatch<__nv_bfloat16>(config, x, x2, w_krsc, bias, z, y, s, norm ? &nm : nullptr, pair,
                                           stats_out ? *stats_out : StatsOut{}, stream);
    }
    return check_launch(e, fn, shapes);
}

extern "C" onestep_status onestep_conv2d_igemm_typed(const void* x, const void* w_krsc, const void* bias, const void* z,
                                                     void* y, int N, int H, int W, int Cin, int KH, int KW, int Cout,
                                                     int stride, int padding, int config, onestep_dtype dtype,
                                                     cudaStream_t stream) {
    return igemm_impl("onestep_conv2d_igemm_typed", x, w_krsc, bias, z, y, N, H, W, Cin, KH, KW, Cout, stride,
                      padding, 0, config, dtype, stream);
}

extern "C" onestep_status onestep_groupnorm_conv2d_igemm_typed(
    const void* x, const void* x_bias, const void* add, const void* add_bias, const void* gamma, const void* beta,
    int groups, float eps, int silu, const void* w_krsc, const void* bias, const void* z, void* y, int N, int H, int W,
    int Cin, int KH, int KW, int Cout, int stride, int padding, int config, onestep_dtype dtype, cudaStream_t stream) {
    const NormArgs norm{gamma, beta, x_bias, add, add_bias, nullptr, groups, eps, silu, 1};
    return igemm_impl("onestep_groupnorm_conv2d_igemm_typed", x, w_krsc, bias, z, y, N, H, W, Cin, KH, KW, Cout,
                      stride, padding, 0, config, dtype, stream, &norm);
}

extern "C" onestep_status onestep_conv2d_igemm_stats_typed(const void* x, const void* w_krsc, const void* bias,
                                                           const void* z, void* y, int N, int H, int W, int Cin,
                                                           int KH, int KW, int Cout, int stride, int padding,
                                                           int config, float* stats_out, int out_groups,
                                                           onestep_dtype dtype, cudaStream_t stream) {
    const StatsOut so{reinterpret_cast<float2*>(stats_out), out_groups};
    if (!stats_out) {
        ONESTEP_SHAPES("N=%d, H=%d, W=%d, Cin=%d, Cout=%d", N, H, W, Cin, Cout);
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_conv2d_igemm_stats_typed", shapes, "NULL stats_out");
    }
    return igemm_impl("onestep_conv2d_igemm_stats_typed", x, w_krsc, bias, z, y, N, H, W, Cin, KH, KW, Cout, stride,
                      padding, 0, config, dtype, stream, nullptr, false, nullptr, 0, nullptr, nullptr, &so);
}

extern "C" onestep_status onestep_groupnorm_conv2d_igemm_stats_typed(
    const void* x, const void* x_bias, const void* add, const void* add_bias, const void* gamma, const void* beta,
    int groups, float eps, int silu, const float* stats, const void* w_krsc, const void* bias, const void* z, void* y,
    int N, int H, int W, int Cin, int KH, int KW, int Cout, int stride, int padding, int config, float* stats_out,
    int out_groups, onestep_dtype dtype, cudaStream_t stream) {
    NormArgs norm{gamma, beta, x_bias, add, add_bias, nullptr, groups, eps, silu, 1};
    norm.given = stats;
    const StatsOut so{reinterpret_cast<float2*>(stats_out), out_groups};
    return igemm_impl("onestep_groupnorm_conv2d_igemm_stats_typed", x, w_krsc, bias, z, y, N, H, W, Cin, KH, KW, Cout,
                      stride, padding, 0, config, dtype, stream, &norm, false, nullptr, 0, nullptr, nullptr, &so);
}

extern "C" onestep_status onestep_groupnorm_conv2d_shortcut_igemm_typed(
    const void* x, const void* x_bias, const void* gamma, const void* beta, int groups, float eps, int silu,
    const void* w_krsc, const void* bias, void* y, const void* w_sc_krsc, void* y_sc, int N, int H, int W, int Cin,
    int KH, int KW, int Cout, int stride, int padding, int config, onestep_dtype dtype, cudaStream_t stream) {
    // A down block's norm1 -> conv1 with its 1x1 conv_shortcut of x (+ x_bias, rounded) in the blocks past conv1's
    // column tiles: the up blocks' Pair on one source.
    const NormArgs norm{gamma, beta, x_bias, nullptr, nullptr, nullptr, groups, eps, silu, 1};
    return igemm_impl("onestep_groupnorm_conv2d_shortcut_igemm_typed", x, w_krsc, bias, nullptr, y, N, H, W, Cin, KH,
                      KW, Cout, stride, padding, 0, config, dtype, stream, &norm, false, nullptr, 0, w_sc_krsc, y_sc);
}

extern "C" onestep_status onestep_concat_conv2d_igemm_typed(const void* a, const void* a_bias, const void* b,
                                                            const void* b_bias, const void* w_krsc, const void* bias,
                                                            const void* z, void* y, int N, int H, int W, int Ca,
                                                            int Cb, int KH, int KW, int Cout, int stride, int padding,
                                                            int config, onestep_dtype dtype, cudaStream_t stream) {
    // Without pending biases the tiles read the two sources as they are (the plain kernel); with them, the biases
    // are added and rounded as the tiles land (the prologue's instance, without statistics).
    const NormArgs biases{nullptr, nullptr, a_bias, nullptr, nullptr, b_bias, 1, 1.f, 0, 0};
    const bool biased = a_bias || b_bias;
    return igemm_impl("onestep_concat_conv2d_igemm_typed", a, w_krsc, bias, z, y, N, H, W, Ca + Cb, KH, KW, Cout,
                      stride, padding, 0, config, dtype, stream, biased ? &biases : nullptr, true, b, Ca);
}

extern "C" onestep_status onestep_groupnorm_concat_conv2d_igemm_typed(
    const void* a, const void* a_bias, const void* b, const void* b_bias, const void* gamma, const void* beta,
    int groups, float eps, int silu, const void* w_krsc, const void* bias, const void* z, void* y,
    const void* w_sc_krsc, void* y_sc, int N, int H, int W, int Ca, int Cb, int KH, int KW, int Cout, int stride,
    int padding, int config, onestep_dtype dtype, cudaStream_t stream) {
    const NormArgs norm{gamma, beta, a_bias, nullptr, nullptr, b_bias, groups, eps, silu, 1};
    return igemm_impl("onestep_groupnorm_concat_conv2d_igemm_typed", a, w_krsc, bias, z, y, N, H, W, Ca + Cb, KH, KW,
                      Cout, stride, padding, 0, config, dtype, stream, &norm, true, b, Ca, w_sc_krsc, y_sc);
}

extern "C" onestep_status onestep_groupnorm_concat_conv2d_igemm_stats_typed(
    const void* a, const void* a_bias, const void* b, const void* b_bias, const void* gamma, const void* beta,
    int groups, float eps, int silu, const void* w_krsc, const void* bias, const void* z, void* y,
    const void* w_sc_krsc, void* y_sc, int N, int H, int W, int Ca, int Cb, int KH, int KW, int Cout, int stride,
    int padding, int config, float* stats_out, int out_groups, onestep_dtype dtype, cudaStream_t stream) {
    // conv1's blocks leave y's statistics; the shortcut's (Pair) leave none.
    const NormArgs norm{gamma, beta, a_bias, nullptr, nullptr, b_bias, groups, eps, silu, 1};
    const StatsOut so{reinterpret_cast<float2*>(stats_out), out_groups};
    return igemm_impl("onestep_groupnorm_concat_conv2d_igemm_stats_typed", a, w_krsc, bias, z, y, N, H, W, Ca + Cb, KH,
                      KW, Cout, stride, padding, 0, config, dtype, stream, &norm, true, b, Ca, w_sc_krsc, y_sc, &so);
}

extern "C" onestep_status onestep_upsample_conv_igemm_typed(const void* x, const void* w_krsc, const void* bias,
                                                            void* y, int N, int H, int W, int Cin, int Cout, int config,
                                                            onestep_dtype dtype, cudaStream_t stream) {
    if (H > INT_MAX / 4 || W > INT_MAX / 4) {
        ONESTEP_SHAPES("N=%d, H=%d, W=%d, Cin=%d, Cout=%d", N, H, W, Cin, Cout);
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_upsample_conv_igemm_typed", shapes, "too large");
    }
    return igemm_impl("onestep_upsample_conv_igemm_typed", x, w_krsc, bias, nullptr, y, N, 2 * H, 2 * W, Cin, 3, 3,
                      Cout, 1, 1, 1, config, dtype, stream);
}
