// resnet.cu: a whole ResnetBlock2D in one launch, at the U-Net's small levels, for inference at small batches.
// diffusers' ResnetBlock2D (Ho et al. 2020's residual block) with the default time_embedding_norm, no conv_shortcut
// and output_scale_factor 1, on x' = x + x_bias (a bias its producer left pending):
//   h  = conv1(SiLU(norm1(x')))                       norm: group norm (Wu & He 2018, Eq. 1-4), 3x3 'same' convs
//   y  = x' + conv2(SiLU(norm2(h + b1 + t))) + b2      t = add[n] + add_bias: time_emb_proj(silu(temb))
//
// Why: the H200 profile of the batch-1 CIFAR-size sample (bench/README.md, 2026-11-27) is 137 kernels of ~6.5 us
// each, and at the 8x8 and 4x4 levels (256 channels) every one of them is latency: a group norm over 8-32 KB takes
// 4-5 us, a convolution 6-7 us, so a resnet block's four launches take ~21 us for ~10 MFLOP and 2.4 MB of weights.
// "300 us needs fewer, larger kernels." Here the four are one launch:
//   - a cluster of cl = 8 blocks a sample (sm_90 thread block clusters), or 16 (non-portable; H100 and H200 have it);
//     block r computes output channels [r BN, (r + 1) BN), BN = C / cl, of both convolutions;
//   - every block loads the whole sample x' (at most 64 pixels x 256 channels: 32 KB) and computes norm1's statistics
//     itself (two exact passes over registers, the sums in a fixed order), so the first convolution needs nothing from
//     its peers; its weights (BN rows of the KRSC tensor: one contiguous span, 147 KB at C = 256 with 8 blocks) are
//     copied into shared memory by cp.async from the first instruction on, under x's loads and the statistics;
//   - conv1 and conv2 are implicit GEMMs on mma.sync m16n8k16 (M = the pixels, N = BN, K = 9 C), the K range split
//     over the warps that the pixel rows leave (8 warps: 4 m-tiles x 2 at 8x8, 1 x 8 at 4x4), the parts summed in a
//     fixed order through shared memory;
//   - a block's BN channels are whole groups of norm2, so norm2's statistics are the block's own too; its normalized
//     slice is written into its shared memory, and after a cluster barrier each block copies the cl - 1 other slices
//     from its peers' shared memory (distributed shared memory), the whole conv2 input, while conv2's weights are
//     already in flight into the buffer conv1's weights left;
//   - conv2's epilogue adds b2 and the residual x' before y's one rounding.
// Roundings as the unfused ops store their tensors (so its results agree with them to T's rounding, not bits): norm1's
// output, conv1's output h (its bias b1 pending, added by norm2 in fp32 as onestep_groupnorm_forward_add_typed does:
// (h + b1) + (add + add_bias)), norm2's output, and y. Statistics, products and sums are fp32.
//
// Conditions (the C entry names each): fp16 or bf16; C 128 or 256; H * W 16 or 64 (4x4, 8x8, 2x8, ...); C / G a
// multiple of 8 that divides BN; at 16 blocks, room for such a cluster (the occupancy API asked first); x, the weights
// and y 16-byte aligned, y apart from x; compute capability 9.0. The emulation runs it (clusters, distributed shared
// memory, cp.async and mma.sync are in its subset), so CTest checks it against a double reference
// (kernels/test/test_resnet.cpp); dev/resnet_forward.cu times it against the four launches it replaces. Not yet timed
// on a GPU (twenty-fifth session).
//
// The second kernel (concat_block_kernel, after the first's launch) is an up block's: the block on cat(h, skip) with a
// 1x1 conv_shortcut, whose conv1 weights (295 KB a block at 512 -> 256 channels) do not fit shared memory whole, so
// they stream through a ring of slots a tap at a time (twenty-sixth session; not yet timed on a GPU either).
#include "cuda_compat.cuh"
#include "dtype.cuh"
#include "onestep_kernels.h"
#include "reduce.cuh"
#include "status.cuh"
#include "tensor_core.cuh"

#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

namespace onestep {
namespace resnet {

using tensor_core::cp_async16;
using tensor_core::cp_async_commit;
using tensor_core::cp_async_wait;
using tensor_core::load_as;
using tensor_core::mma;
using tensor_core::store_as;

// A sample's cluster is 8 blocks (the portable size) or 16 (H100/H200 allow it with the kernel's non-portable
// attribute): the launch's `cl`, which halves each block's channels, weights and GEMM work at 16.
constexpr int kThreads = 256, kWarps = kThreads / 32;

__device__ __forceinline__ float silu(float u) { return u / (1.0f + __expf(-u)); }

// The layout of a block's dynamic shared memory for C channels (BN = C / cl of them this block's) and HW pixels:
//   W:    BN rows of K = 9 C weights, pitch K + 8 (conv1's, then conv2's): the 8 rows a B fragment reads fall in 8
//         different 4-bank groups, so its 32 lanes hit 32 banks;
//   W2:   where a second such buffer fits (`both`: everything but the C = 256, 8-block case), conv2's weights, copied
//         from the first instruction too instead of after conv1;
//   A1:   conv1's input, HW rows of C, pitch C + 8 (the same reason); then norm2's input (fp32, HW x BN); then conv2's
//         K-part sums (fp32, KP x HW x BN);
//   A2:   conv1's K-part sums; then conv2's input, HW rows of C, pitch C + 8;
//   part: one float a thread, stat: mean and rstd of up to 32 groups.
// A1 and A2 are each the larger of their uses.
constexpr size_t kMaxShared = 227 * 1024;  // sm_90's opt-in dynamic shared memory a block

struct Layout {
    int C, HW, BN, K, KP, pitch_w, pitch_a;
    size_t w_bytes, a_bytes;
    bool both;
    __host__ __device__ Layout(int C_, int HW_, int elem, int cl) : C(C_), HW(HW_) {
        BN = C / cl, K = 9 * C, KP = kWarps / (HW / 16), pitch_w = K + 8, pitch_a = C + 8;
        w_bytes = size_t(BN) * pitch_w * elem;  // a multiple of 16 (BN a multiple of 8)
        const size_t act = size_t(HW) * pitch_a * elem, sums = size_t(KP) * HW * BN * 4;
        a_bytes = (act > sums ? act : sums + 15) / 16 * 16;
        both = one() + w_bytes <= kMaxShared;
    }
    __host__ __device__ size_t one() const { return w_bytes + 2 * a_bytes + (kThreads + 64) * 4; }
    __host__ __device__ size_t total() const { return one() + (both ? w_bytes : 0); }
};

// Copies this block's BN weight rows (contiguous in the KRSC tensor) into W by cp.async, one commit group.
template <typename T>
__device__ __forceinline__ void issue_weights(T* W, const T* w, const Layout& L, int co0) {
    const T* src = w + (long long)co0 * L.K;
    const int per_row = L.K / 8;  // 16-byte chunks a row
    for (int i = threadIdx.x; i < L.BN * per_row; i += kThreads) {
        const int r = i / per_row, k = (i - r * per_row) * 8;
        cp_async16(W + r * L.pitch_w + k, src + (long long)r * L.K + k, true);
    }
    cp_async_commit();
}

// Before await_predecessors(): this block's rows of the weights (out channels [r C / cl, (r + 1) C / cl) of w1 and
// w2, KRSC rows of k1 and k2 values, and of the 1x1 shortcut ws, k_s values a row, where there is one) asked of L2 by
// prefetch_l2, for the copies the kernel starts after the wait; only the first sample's cluster asks (the rows are
// the same for every sample). Block r of a cluster is rank r (clusters run along x).
template <typename T>
__device__ __forceinline__ void prefetch_rows(const T* w1, const T* w2, const T* ws, int k1, int k2, int k_s, int C,
                                              int cl) {
    if (blockIdx.x >= unsigned(cl)) return;
    const long long co0 = (long long)(blockIdx.x % unsigned(cl)) * (C / cl);
    const size_t rows = size_t(C / cl) * sizeof(T);
    prefetch_l2(w1 + co0 * k1, rows * k1, 0, 1);
    prefetch_l2(w2 + co0 * k2, rows * k2, 0, 1);
    if (ws) prefetch_l2(ws + co0 * k_s, rows * k_s, 0, 1);
}

// The output pixels of m-tile mt whose A rows this lane loads (m16n8k16: rows g and g + 8), as (row, column).
struct Rows {
    int h_lo, w_lo, h_hi, w_hi;
};
__device__ __forceinline__ Rows rows_of(int mt, int Wd) {
    const int g = threadIdx.x % 32 / 4, p_lo = mt * 16 + g, p_hi = p_lo + 8;
    return Rows{p_lo / Wd, p_lo % Wd, p_hi / Wd, p_hi % Wd};
}

// This lane's A fragment of a 16-deep k step at channel c0 of A (pixels x channels, pitch elements a row): the rows'
// pixels moved by (dr, ds), zero outside the H x Wd image (a 3x3 'same' convolution's tap; (0, 0) for a 1x1).
template <typename T>
__device__ __forceinline__ void a_fragment(uint32_t (&a)[4], const T* A, int pitch, const Rows& r, int H, int Wd,
                                           int dr, int ds, int c0) {
    const int t = threadIdx.x % 4;
    const int hl = r.h_lo + dr, wl = r.w_lo + ds, hh = r.h_hi + dr, wh = r.w_hi + ds;
    const bool in_lo = hl >= 0 && hl < H && wl >= 0 && wl < Wd, in_hi = hh >= 0 && hh < H && wh >= 0 && wh < Wd;
    const T* a_lo = A + (in_lo ? hl * Wd + wl : 0) * pitch + c0 + 2 * t;
    const T* a_hi = A + (in_hi ? hh * Wd + wh : 0) * pitch + c0 + 2 * t;
    a[0] = in_lo ? load_as<uint32_t>(a_lo) : 0u;
    a[1] = in_hi ? load_as<uint32_t>(a_hi) : 0u;
    a[2] = in_lo ? load_as<uint32_t>(a_lo + 8) : 0u;
    a[3] = in_hi ? load_as<uint32_t>(a_hi + 8) : 0u;
}

template <int NT>
__device__ __forceinline__ void zero(float (&acc)[NT][4]) {
#pragma unroll
    for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
}

// This warp's share of a 3x3 'same' convolution of A (HW x C, pitch_a) with W (BN x K): m-tile mt (pixels 16 mt ..
// 16 mt + 15) over the K range of part kp, all BN / 8 n-tiles, into acc. A k step of 16 lies in one tap (C is a
// multiple of 16): its input pixel is the output pixel moved by (r - 1, s - 1), zero outside the image.
template <typename T, int NT>
__device__ __forceinline__ void conv_part(float (&acc)[NT][4], const T* A, const T* W, const Layout& L, int H, int Wd,
                                          int mt, int kp) {
    const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    const Rows rw = rows_of(mt, Wd);
    zero(acc);
    const int span = L.K / L.KP, k_begin = kp * span;
    // Unrolled so that the next steps' shared loads issue under this step's mma (span is at least 9 steps).
#pragma unroll 4
    for (int k0 = k_begin; k0 < k_begin + span; k0 += 16) {
        const int tap = k0 / L.C, c0 = k0 - tap * L.C;
        uint32_t a[4];
        a_fragment(a, A, L.pitch_a, rw, H, Wd, tap / 3 - 1, tap % 3 - 1, c0);
#pragma unroll
        for (int j = 0; j < NT; j++) {
            const T* b = W + (j * 8 + g) * L.pitch_w + k0 + 2 * t;  // B = W^T: column g of n-tile j is channel 8j + g
            mma<T>(acc[j], a, load_as<uint32_t>(b), load_as<uint32_t>(b + 8));
        }
    }
}

// The warps' parts (m-tile mt, K part kp of KP) summed: each warp's acc into sums (fp32, [kp][pixel][n]), then every
// thread's share of the HW x BN outputs summed over the parts in order: out(p, n, s) is called with the sum (one call
// per output). Begins with a barrier (every warp is done with its operands, so sums may alias them), so every thread
// calls it; ends without one.
template <int NT, typename Out>
__device__ __forceinline__ void reduce_parts(const float (&acc)[NT][4], float* sums, int HW, int BN, int KP, int mt,
                                             int kp, Out out) {
    const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4, p_lo = mt * 16 + g;
    __syncthreads();
    float* s = sums + (long long)kp * HW * BN;
#pragma unroll
    for (int j = 0; j < NT; j++) {
        const int n = j * 8 + 2 * t;
        s[p_lo * BN + n] = acc[j][0], s[p_lo * BN + n + 1] = acc[j][1];
        s[(p_lo + 8) * BN + n] = acc[j][2], s[(p_lo + 8) * BN + n + 1] = acc[j][3];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < HW * BN; e += kThreads) {
        float v = 0.0f;
        for (int q = 0; q < KP; q++) v += sums[(long long)q * HW * BN + e];
        out(e / BN, e % BN, v);
    }
}

// The block's conv: each warp's part, summed by reduce_parts.
template <typename T, int NT, typename Out>
__device__ __forceinline__ void conv(const T* A, const T* W, float* sums, const Layout& L, int H, int Wd, Out out) {
    const int warp = threadIdx.x / 32, MT = L.HW / 16, mt = warp % MT, kp = warp / MT;
    float acc[NT][4];
    conv_part<T, NT>(acc, A, W, L, H, Wd, mt, kp);
    reduce_parts<NT>(acc, sums, L.HW, L.BN, L.KP, mt, kp, out);
}

// norm2's input at channel co of sample n from conv1's sum s: h rounded to T as stored, then (h + b1) + t in fp32, as
// onestep_groupnorm_forward_add_typed adds them (t = add[n] + add_bias: the time projection).
template <typename T>
__device__ __forceinline__ float norm2_input(float s, int co, int n, int C, const T* add, const T* add_bias,
                                             const T* b1) {
    const float h = to_f32(from_f32<T>(s));
    float tv = 0.0f;
    if (add) {
        tv = to_f32(add[(long long)n * C + co]);
        if (add_bias) tv += to_f32(add_bias[co]);
    }
    return (h + (b1 ? to_f32(b1[co]) : 0.0f)) + tv;
}

// norm2 of v2 (HW x BN fp32: this block's channels co0 .., whole groups of Cg, so the statistics are its own) + SiLU
// into its slice of A2 (HW rows of C, pitch_a), then the cl - 1 other slices from the peers' A2 through distributed
// shared memory: A2 is conv2's whole input after it. v2[e] must have been written by thread e % kThreads (reduce_parts'
// stride) or be complete past a barrier; ends at a cluster barrier after the last remote read.
template <typename T>
__device__ __forceinline__ void norm2_exchange(const float* v2, T* A2, float* part, float* stat, int HW, int BN,
                                               int pitch_a, int Cg, int co0, unsigned rank, int cl,
                                               const T* gamma2, const T* beta2, float eps) {
    // Thread i's channel is i % BN (kThreads is a multiple of BN), its pixels i / BN + j kThreads / BN.
    const int nn = threadIdx.x % BN, g2 = nn / Cg;
    const float count2 = float(HW) * float(Cg);
    float s2 = 0.0f;
    for (int e = threadIdx.x; e < HW * BN; e += kThreads) s2 += v2[e];
    group_totals(s2, part, stat, BN, Cg, BN / Cg);
    const float mu2 = stat[g2] / count2;
    float ss2 = 0.0f;
    for (int e = threadIdx.x; e < HW * BN; e += kThreads) ss2 += (v2[e] - mu2) * (v2[e] - mu2);
    __syncthreads();
    group_totals(ss2, part, stat, BN, Cg, BN / Cg);
    const float rs2 = rsqrtf(stat[g2] / count2 + eps);
    {
        const int co = co0 + nn;
        const float ga = to_f32(gamma2[co]), be = to_f32(beta2[co]);
        for (int e = threadIdx.x; e < HW * BN; e += kThreads)
            A2[(e / BN) * pitch_a + co] = from_f32<T>(silu((v2[e] - mu2) * rs2 * ga + be));
    }
    cluster_sync();  // every block's slice is written
    // The cl - 1 other slices from the peers' A2 (16 bytes at a time: BN / 8 a pixel and peer).
    const int chunks = BN / 8;
    for (int i = threadIdx.x; i < (cl - 1) * HW * chunks; i += kThreads) {
        const int k = i / (HW * chunks), rest = i - k * HW * chunks, p = rest / chunks, ch = rest - p * chunks;
        const unsigned peer = (rank + 1 + unsigned(k)) % unsigned(cl);
        const int at = p * pitch_a + int(peer) * BN + ch * 8;
        store_as<int4>(A2 + at, load_as<int4>(cluster_map(A2, peer) + at));
    }
    cluster_sync();  // A2 complete here; the peers are done reading this block's slice (no remote read follows)
}

template <typename T, int NT>
__global__ void __launch_bounds__(kThreads, 1)
    block_kernel(const T* __restrict__ x, const T* __restrict__ x_bias, const T* __restrict__ add,
                 const T* __restrict__ add_bias, const T* __restrict__ gamma1, const T* __restrict__ beta1,
                 const T* __restrict__ w1, const T* __restrict__ b1, const T* __restrict__ gamma2,
                 const T* __restrict__ beta2, const T* __restrict__ w2, const T* __restrict__ b2, T* __restrict__ y,
                 int H, int Wd, int C, int G, float eps, int cl, int prefetch) {
    if (prefetch) prefetch_rows<T>(w1, w2, nullptr, 9 * C, 9 * C, 0, C, cl);
    await_predecessors();
    const Layout L(C, H * Wd, int(sizeof(T)), cl);
    ONESTEP_DYNAMIC_SHARED(unsigned char, smem);
    T* const W = reinterpret_cast<T*>(smem);
    T* const W2 = L.both ? reinterpret_cast<T*>(smem + L.w_bytes) : W;
    unsigned char* const a1 = smem + (L.both ? 2 : 1) * L.w_bytes;
    unsigned char* const a2 = a1 + L.a_bytes;
    float* const part = reinterpret_cast<float*>(a2 + L.a_bytes);
    float* const stat = part + kThreads;  // [0, 32): mean, [32, 64): rstd
    const unsigned rank = cluster_rank();
    const int n = blockIdx.x / cl, co0 = int(rank) * L.BN, HW = L.HW, Cg = C / G;
    const T* xs = x + (long long)n * HW * C;

    issue_weights(W, w1, L, co0);  // conv1's weights land under everything up to conv1
    if (L.both) issue_weights(W2, w2, L, co0);  // and conv2's, a second group, under everything up to conv2

    // ---- norm1 on x' = x + x_bias, every channel (each block the whole sample) -------------------------------------
    // Thread i holds the 8-channel vectors i, i + kThreads, ...: its channels c8 .. c8 + 7 are fixed (kThreads is a
    // multiple of C / 8) and lie in one group (Cg a multiple of 8).
    constexpr int kMaxVec = 64 * 256 / 8 / kThreads;  // vectors a thread at the largest shape
    const int vecs = HW * C / 8 / kThreads, cols = C / 8, c8 = (threadIdx.x % cols) * 8;
    float xv[kMaxVec][8];
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxVec; i++) {
        if (i < vecs) {
            const int p = (threadIdx.x + i * kThreads) / cols;
            const int4 raw = load_as<int4>(xs + (long long)p * C + c8);
            T e[8];
            memcpy(e, &raw, sizeof raw);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                xv[i][k] = to_f32(e[k]) + (x_bias ? to_f32(x_bias[c8 + k]) : 0.0f);
                sum += xv[i][k];
            }
        }
    }
    const int g1 = c8 / Cg, per_group1 = Cg / 8;
    const float count1 = float(HW) * float(Cg);
    group_totals(sum, part, stat, cols, per_group1, G);
    const float mu1 = stat[g1] / count1;
    float ss = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxVec; i++)
        if (i < vecs)
#pragma unroll
            for (int k = 0; k < 8; k++) ss += (xv[i][k] - mu1) * (xv[i][k] - mu1);
    __syncthreads();  // every thread has read its mean before stat is rewritten
    group_totals(ss, part, stat, cols, per_group1, G);
    const float rs1 = rsqrtf(stat[g1] / count1 + eps);
    {
        float ga[8], be[8];
#pragma unroll
        for (int k = 0; k < 8; k++) ga[k] = to_f32(gamma1[c8 + k]), be[k] = to_f32(beta1[c8 + k]);
        T* A1 = reinterpret_cast<T*>(a1);
#pragma unroll
        for (int i = 0; i < kMaxVec; i++) {
            if (i < vecs) {
                const int p = (threadIdx.x + i * kThreads) / cols;
                T e[8];
#pragma unroll
                for (int k = 0; k < 8; k++) e[k] = from_f32<T>(silu((xv[i][k] - mu1) * rs1 * ga[k] + be[k]));
                int4 raw;
                memcpy(&raw, e, sizeof raw);
                store_as<int4>(A1 + p * L.pitch_a + c8, raw);
            }
        }
    }
    if (L.both)
        cp_async_wait<1>();  // conv1's group; conv2's may still fly
    else
        cp_async_wait<0>();
    __syncthreads();  // A1 and conv1's weights complete

    // ---- conv1, then h + b1 + t (fp32, h rounded to T as stored) into a1 as norm2's input ----------------------------
    float* const v2 = reinterpret_cast<float*>(a1);  // HW x BN, once conv1 has read A1
    conv<T, NT>(reinterpret_cast<const T*>(a1), W, reinterpret_cast<float*>(a2), L, H, Wd, [&](int p, int nn, float s) {
        v2[p * L.BN + nn] = norm2_input(s, co0 + nn, n, C, add, add_bias, b1);
    });
    __syncthreads();  // conv1 is done with W: conv2's weights may land there
    if (!L.both) issue_weights(W, w2, L, co0);

    // ---- norm2 on this block's BN channels (whole groups), the slices exchanged: conv2's input in A2 -----------------
    T* const A2 = reinterpret_cast<T*>(a2);
    norm2_exchange(v2, A2, part, stat, HW, L.BN, L.pitch_a, Cg, co0, rank, cl, gamma2, beta2, eps);
    cp_async_wait<0>();
    __syncthreads();  // conv2's weights complete

    // ---- conv2 + b2 + x' -> y --------------------------------------------------------------------------------------
    T* ys = y + (long long)n * HW * C;
    conv<T, NT>(A2, W2, reinterpret_cast<float*>(a1), L, H, Wd, [&](int p, int m, float s) {
        const int co = co0 + m;
        const float r = to_f32(xs[(long long)p * C + co]) + (x_bias ? to_f32(x_bias[co]) : 0.0f);
        ys[(long long)p * C + co] = from_f32<T>(s + (b2 ? to_f32(b2[co]) : 0.0f) + r);
    });
}

// Sets a kernel instance's attributes and launches it, a cluster of cl blocks a sample. Its dynamic shared memory
// limit is set for the largest shape the instance takes (`most`), not this launch's: a smaller value set by a smaller
// launch would refuse the replay of a larger one captured in a graph (the Java pass found that; test_resnet checks
// it). Above the portable 8 blocks the kernel needs the non-portable cluster attribute, and room for one cluster of cl
// blocks of `smem` bytes on one GPC (a GPC has 16-18 SMs, some fewer after floorsweeping): the occupancy API is asked
// first, and *no_room set (nothing launched) where it finds none.
template <typename... KArgs, typename... Args>
static cudaError_t launch_block(void (*kernel)(KArgs...), size_t most, size_t smem, int N, int cl,
                                cudaStream_t stream, bool* no_room, Args... args) {
    (void)no_room;  // only the GPU asks the occupancy API (the emulation runs clusters of 16 anywhere)
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(most));
    if (e != cudaSuccess) return e;
    const dim3 grid(unsigned(N) * unsigned(cl)), block(kThreads);
    if (cl > 8) {
        e = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
        if (e != cudaSuccess) return e;
#ifndef ONESTEP_EMULATION
        // Asked once per instance and shared-memory size, on the first launch: the backend's timing runs come before
        // a graph capture, so a captured launch only reads the answer.
        static std::mutex mutex;
        static std::map<std::pair<const void*, size_t>, int> answers;
        std::lock_guard<std::mutex> lock(mutex);
        const auto known = answers.find({reinterpret_cast<const void*>(kernel), smem});
        if (known != answers.end()) {
            *no_room = known->second < 1;
            return *no_room ? cudaSuccess : launch_cluster(kernel, grid, block, unsigned(cl), smem, stream, args...);
        }
        cudaLaunchAttribute attribute;
        attribute.id = cudaLaunchAttributeClusterDimension;
        attribute.val.clusterDim.x = unsigned(cl);
        attribute.val.clusterDim.y = 1;
        attribute.val.clusterDim.z = 1;
        cudaLaunchConfig_t config = {};
        config.gridDim = grid;
        config.blockDim = block;
        config.dynamicSmemBytes = smem;
        config.stream = stream;
        config.attrs = &attribute;
        config.numAttrs = 1;
        int clusters = 0;
        e = cudaOccupancyMaxActiveClusters(&clusters, kernel, &config);
        if (e != cudaSuccess) return e;
        answers[{reinterpret_cast<const void*>(kernel), smem}] = clusters;
        if (clusters < 1) {
            *no_room = true;
            return cudaSuccess;
        }
#endif
    }
    return launch_cluster(kernel, grid, block, unsigned(cl), smem, stream, args...);
}

// The n-tiles a block's BN = C / cl channels make: the kernels' NT.
inline int n_tiles(int C, int cl) { return C / cl / 8; }

// The most shared memory a kernel instance (its NT, that of C channels on cl blocks) takes: total(c, k) over the
// channel counts c and cluster sizes k that give that NT.
template <typename Total>
inline size_t instance_most(int C, int cl, Total total) {
    size_t most = 0;
    for (int c : {128, 256})
        for (int k : {8, 16})
            if (n_tiles(c, k) == n_tiles(C, cl)) {
                const size_t t = total(c, k);
                most = t > most ? t : most;
            }
    return most;
}

// The resident kernel's (at 64 pixels).
inline size_t resident_most(int C, int cl, int elem) {
    return instance_most(C, cl, [&](int c, int k) { return Layout(c, 64, elem, k).total(); });
}

template <typename T>
static cudaError_t launch(const T* x, const T* x_bias, const T* add, const T* add_bias, const T* gamma1,
                          const T* beta1, const T* w1, const T* b1, const T* gamma2, const T* beta2, const T* w2,
                          const T* b2, T* y, int N, int H, int W, int C, int G, float eps, int cl, cudaStream_t stream,
                          bool* no_room) {
    const size_t smem = Layout(C, H * W, int(sizeof(T)), cl).total(), most = resident_most(C, cl, int(sizeof(T)));
    const auto run = [&](auto kernel) {
        return launch_block(kernel, most, smem, N, cl, stream, no_room, x, x_bias, add, add_bias, gamma1, beta1, w1,
                            b1, gamma2, beta2, w2, b2, y, H, W, C, G, eps, cl, weight_prefetch());
    };
    // NT = BN / 8 n-tiles: BN 32 (C = 256, 8 blocks), 16 (C = 128 with 8, C = 256 with 16) or 8 (C = 128, 16 blocks).
    const int nt = n_tiles(C, cl);
    return nt == 4 ? run(block_kernel<T, 4>) : nt == 2 ? run(block_kernel<T, 2>) : run(block_kernel<T, 1>);
}

// ---- An up block's ResnetBlock2D: the concatenation, a 1x1 conv_shortcut, conv1's weights streamed -------------------
// The same block on x = cat(a + a_bias, b + b_bias) (an up block's [h, skip], each source's sum rounded to T as the
// concatenation stores it), Cin = Ca + Cb channels in, C out, with the 1x1 conv_shortcut ws (C x Cin, its bias folded
// into b2 by the caller, as the unfused ops run it):
//   y = round(ws x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x))) + b1 + t))) + b2
// At Cin = 512, C = 256 a block's conv1 rows are 295 KB, past shared memory, so the weights do not sit there whole:
// they stream through a ring of slots, one stage a tap (BN rows of Cin, or of C for conv2), the 19 stages (the
// shortcut, conv1's 9 taps, conv2's 9) in the order they are used. A slot is refilled as soon as every warp is done
// with it (one barrier a stage), so all slots but one are in flight under the work between the GEMMs (norm1's
// statistics, norm2 and the exchange) as under the GEMMs. The ring has as many slots as shared memory leaves, 3 to
// kMaxStages: the bytes in flight bound a block's streaming rate (Little's law: at an assumed ~1.5 us of memory
// latency, 100 GB/s into one SM wants ~150 KB in flight). 8 blocks at 8x8 get 3 slots of 33 KB (66 KB in flight), 16
// blocks 7 of 17 KB (100 KB). x itself sits in shared memory (64 pixels x 512 channels: 65 KB): norm1's statistics are
// two exact passes over it, the shortcut reads it, and norm1 + SiLU then overwrites it in place as conv1's input. Every
// warp keeps its accumulators across a GEMM's stages, over its m-tile and its share of each stage's columns, so a stage
// is one k range of the same split as the resident kernel's.
constexpr int kMinStages = 3, kMaxStages = 8, kShortcutStage = 0, kConv1Stage = 1, kConv2Stage = 10, kStageCount = 19;

// cp.async.wait_group takes an immediate: this thread's groups but the newest n landed, n in [1, kMaxStages - 2].
__device__ __forceinline__ void cp_async_wait_all_but(int n) {
    switch (n) {
        case 1: cp_async_wait<1>(); break;
        case 2: cp_async_wait<2>(); break;
        case 3: cp_async_wait<3>(); break;
        case 4: cp_async_wait<4>(); break;
        case 5: cp_async_wait<5>(); break;
        default: cp_async_wait<6>(); break;
    }
}
static_assert(kMaxStages - 2 == 6, "cp_async_wait_all_but covers 1 .. kMaxStages - 2");

// Dynamic shared memory of the streamed kernel:
//   X:    x (HW rows of Cin, pitch Cin + 8), then conv1's input in place; then v2 (fp32 HW x BN) and conv2's sums;
//   A2:   the shortcut's and conv1's sums (fp32, KP x HW x BN); then conv2's input (HW rows of C, pitch C + 8);
//   SC:   the shortcut's output (fp32 HW x BN, rounded to T);
//   ring: `stages` slots of BN rows, pitch max(Cin, C) + 8 (the bank reason of Layout): as many as fit, 3 to 8;
//   part, stat: as Layout.
struct ConcatLayout {
    int Cin, C, HW, BN, KP, pitch_x, pitch_a, pitch_s, stages;
    size_t x_bytes, a_bytes, sc_bytes, slot_bytes;
    __host__ __device__ static size_t up16(size_t b) { return (b + 15) / 16 * 16; }
    __host__ __device__ ConcatLayout(int Cin_, int C_, int HW_, int elem, int cl) : Cin(Cin_), C(C_), HW(HW_) {
        BN = C / cl, KP = kWarps / (HW / 16), pitch_x = Cin + 8, pitch_a = C + 8;
        pitch_s = (Cin > C ? Cin : C) + 8;
        const size_t sums = size_t(KP) * HW * BN * 4, x = size_t(HW) * pitch_x * elem, a = size_t(HW) * pitch_a * elem;
        x_bytes = up16(x > sums ? x : sums);
        a_bytes = up16(a > sums ? a : sums);
        sc_bytes = size_t(HW) * BN * 4;
        slot_bytes = up16(size_t(BN) * pitch_s * elem);
        const size_t fixed = x_bytes + a_bytes + sc_bytes + (kThreads + 64) * 4;
        const size_t fit = fixed < kMaxShared ? (kMaxShared - fixed) / slot_bytes : 0;
        stages = fit < size_t(kMinStages) ? kMinStages : fit > size_t(kMaxStages) ? kMaxStages : int(fit);
    }
    __host__ __device__ size_t total() const {
        return x_bytes + a_bytes + sc_bytes + stages * slot_bytes + (kThreads + 64) * 4;
    }
};

// This warp's share of one stage: its m-tile's rows against the stage's weights Ws (BN rows, pitch_w) over part kp
// of the stage's `cols` columns (a tap's channels), A read at the tap's shift (dr, ds), accumulated into acc.
template <typename T, int NT>
__device__ __forceinline__ void stage_part(float (&acc)[NT][4], const T* A, int pitch_a, const T* Ws, int pitch_w,
                                           int cols, int kp, int KP, const Rows& rw, int H, int Wd, int dr, int ds) {
    const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4, span = cols / KP, k_begin = kp * span;
#pragma unroll 4
    for (int k0 = k_begin; k0 < k_begin + span; k0 += 16) {
        uint32_t a[4];
        a_fragment(a, A, pitch_a, rw, H, Wd, dr, ds, k0);
#pragma unroll
        for (int j = 0; j < NT; j++) {
            const T* b = Ws + (j * 8 + g) * pitch_w + k0 + 2 * t;
            mma<T>(acc[j], a, load_as<uint32_t>(b), load_as<uint32_t>(b + 8));
        }
    }
}

template <typename T, int NT>
__global__ void __launch_bounds__(kThreads, 1)
    concat_block_kernel(const T* __restrict__ a, const T* __restrict__ a_bias, const T* __restrict__ b,
                        const T* __restrict__ b_bias, const T* __restrict__ add, const T* __restrict__ add_bias,
                        const T* __restrict__ gamma1, const T* __restrict__ beta1, const T* __restrict__ w1,
                        const T* __restrict__ b1, const T* __restrict__ gamma2, const T* __restrict__ beta2,
                        const T* __restrict__ w2, const T* __restrict__ b2, const T* __restrict__ ws,
                        T* __restrict__ y, int H, int Wd, int Ca, int Cb, int C, int G, float eps, int cl,
                        int prefetch) {
    if (prefetch) prefetch_rows(w1, w2, ws, 9 * (Ca + Cb), 9 * C, Ca + Cb, C, cl);
    await_predecessors();
    const int Cin = Ca + Cb;
    const ConcatLayout L(Cin, C, H * Wd, int(sizeof(T)), cl);
    ONESTEP_DYNAMIC_SHARED(unsigned char, smem);
    T* const X = reinterpret_cast<T*>(smem);
    unsigned char* const a2 = smem + L.x_bytes;
    float* const SC = reinterpret_cast<float*>(a2 + L.a_bytes);
    T* const ring = reinterpret_cast<T*>(reinterpret_cast<unsigned char*>(SC) + L.sc_bytes);
    float* const part = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(ring) + L.stages * L.slot_bytes);
    float* const stat = part + kThreads;
    const unsigned rank = cluster_rank();
    const int n = blockIdx.x / cl, co0 = int(rank) * L.BN, HW = L.HW, BN = L.BN;
    const int slot_elems = int(L.slot_bytes / sizeof(T));

    // The weight stages, issued in order into the ring's slots (an empty commit group past the last, so that every
    // wait counts the same groups).
    int issued = 0;
    const auto issue = [&]() {
        const int s = issued++;
        if (s < kStageCount) {
            const T* src;
            int cols;
            long long row;
            if (s == kShortcutStage) src = ws + (long long)co0 * Cin, cols = Cin, row = Cin;
            else if (s < kConv2Stage)
                src = w1 + (long long)co0 * 9 * Cin + (s - kConv1Stage) * Cin, cols = Cin, row = 9LL * Cin;
            else src = w2 + (long long)co0 * 9 * C + (s - kConv2Stage) * C, cols = C, row = 9LL * C;
            T* slot = ring + (s % L.stages) * slot_elems;
            const int per_row = cols / 8;
            for (int i = threadIdx.x; i < BN * per_row; i += kThreads) {
                const int r = i / per_row, k = (i - r * per_row) * 8;
                cp_async16(slot + r * L.pitch_s + k, src + r * row + k, true);
            }
        }
        cp_async_commit();
    };
    // Stage s's slot once its copies have landed for every thread; refills the slot of stage s - 1, which every warp
    // is done with past the barrier.
    const auto stage = [&](int s) -> const T* {
        cp_async_wait_all_but(L.stages - 2);
        __syncthreads();
        issue();
        return ring + (s % L.stages) * slot_elems;
    };
    for (int i = 0; i < L.stages - 1; i++) issue();

    // ---- x = cat(a + a_bias, b + b_bias), rounded per source as stored, into X; norm1's statistics over it --------
    // Thread i holds the 8-channel vectors i, i + kThreads, ...: its channels c8 .. c8 + 7 are fixed (Cin / 8 divides
    // kThreads), in one source (Ca a multiple of 8) and one group (Cin / G a multiple of 8).
    const int cols = Cin / 8, vecs = HW * cols / kThreads, c8 = (threadIdx.x % cols) * 8, Cg1 = Cin / G;
    const bool in_a = c8 < Ca;
    const T* src = in_a ? a + (long long)n * HW * Ca + c8 : b + (long long)n * HW * Cb + (c8 - Ca);
    const T* sbias = in_a ? (a_bias ? a_bias + c8 : nullptr) : (b_bias ? b_bias + (c8 - Ca) : nullptr);
    const int spitch = in_a ? Ca : Cb;
    float sum = 0.0f;
    for (int i = 0; i < vecs; i++) {
        const int p = (threadIdx.x + i * kThreads) / cols;
        int4 raw = load_as<int4>(src + (long long)p * spitch);
        T e[8];
        memcpy(e, &raw, sizeof raw);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            if (sbias) e[k] = from_f32<T>(to_f32(e[k]) + to_f32(sbias[k]));
            sum += to_f32(e[k]);
        }
        memcpy(&raw, e, sizeof raw);
        store_as<int4>(X + p * L.pitch_x + c8, raw);
    }
    const int g1 = c8 / Cg1, per_group1 = Cg1 / 8;
    const float count1 = float(HW) * float(Cg1);
    group_totals(sum, part, stat, cols, per_group1, G);
    const float mu1 = stat[g1] / count1;
    float ss = 0.0f;
    for (int i = 0; i < vecs; i++) {  // this thread's own vectors: no barrier needed to read them back
        const int p = (threadIdx.x + i * kThreads) / cols;
        const int4 raw = load_as<int4>(X + p * L.pitch_x + c8);
        T e[8];
        memcpy(e, &raw, sizeof raw);
#pragma unroll
        for (int k = 0; k < 8; k++) ss += (to_f32(e[k]) - mu1) * (to_f32(e[k]) - mu1);
    }
    __syncthreads();  // every thread has read its mean before stat is rewritten
    group_totals(ss, part, stat, cols, per_group1, G);
    const float rs1 = rsqrtf(stat[g1] / count1 + eps);

    const int warp = threadIdx.x / 32, MT = HW / 16, mt = warp % MT, kp = warp / MT;
    const Rows rw = rows_of(mt, Wd);
    float acc[NT][4];

    // ---- the shortcut: ws x, rounded as the unfused op stores it, into SC --------------------------------------------
    zero(acc);
    stage_part<T, NT>(acc, X, L.pitch_x, stage(kShortcutStage), L.pitch_s, Cin, kp, L.KP, rw, H, Wd, 0, 0);
    reduce_parts<NT>(acc, reinterpret_cast<float*>(a2), HW, BN, L.KP, mt, kp,
                     [&](int p, int nn, float v) { SC[p * BN + nn] = to_f32(from_f32<T>(v)); });

    // ---- norm1 + SiLU in place: X becomes conv1's input (every warp is done reading x: reduce_parts' barrier) -------
    {
        float ga[8], be[8];
#pragma unroll
        for (int k = 0; k < 8; k++) ga[k] = to_f32(gamma1[c8 + k]), be[k] = to_f32(beta1[c8 + k]);
        for (int i = 0; i < vecs; i++) {
            const int p = (threadIdx.x + i * kThreads) / cols;
            int4 raw = load_as<int4>(X + p * L.pitch_x + c8);
            T e[8];
            memcpy(e, &raw, sizeof raw);
#pragma unroll
            for (int k = 0; k < 8; k++) e[k] = from_f32<T>(silu((to_f32(e[k]) - mu1) * rs1 * ga[k] + be[k]));
            memcpy(&raw, e, sizeof raw);
            store_as<int4>(X + p * L.pitch_x + c8, raw);
        }
    }

    // ---- conv1 over its 9 tap stages, then h + b1 + t (fp32, h rounded to T as stored) into X as norm2's input -------
    zero(acc);
    for (int tap = 0; tap < 9; tap++)
        stage_part<T, NT>(acc, X, L.pitch_x, stage(kConv1Stage + tap), L.pitch_s, Cin, kp, L.KP, rw, H, Wd,
                          tap / 3 - 1, tap % 3 - 1);
    float* const v2 = reinterpret_cast<float*>(X);  // HW x BN, once conv1 has read X (reduce_parts' barrier)
    reduce_parts<NT>(acc, reinterpret_cast<float*>(a2), HW, BN, L.KP, mt, kp, [&](int p, int nn, float s) {
        v2[p * BN + nn] = norm2_input(s, co0 + nn, n, C, add, add_bias, b1);
    });
    // No barrier: a thread reads back only the v2 elements it wrote (reduce_parts and norm2_exchange stride the same
    // way), and norm2_exchange's first reduction is a barrier before anything overwrites conv1's sums in A2.

    // ---- norm2 and the exchange: conv2's input in A2 ------------------------------------------------------------------
    T* const A2 = reinterpret_cast<T*>(a2);
    norm2_exchange(v2, A2, part, stat, HW, BN, L.pitch_a, C / G, co0, rank, cl, gamma2, beta2, eps);

    // ---- conv2 over its 9 tap stages, + b2 + the shortcut -> y -----------------------------------------------------
    zero(acc);
    for (int tap = 0; tap < 9; tap++)
        stage_part<T, NT>(acc, A2, L.pitch_a, stage(kConv2Stage + tap), L.pitch_s, C, kp, L.KP, rw, H, Wd,
                          tap / 3 - 1, tap % 3 - 1);
    T* ys = y + (long long)n * HW * C;
    reduce_parts<NT>(acc, reinterpret_cast<float*>(X), HW, BN, L.KP, mt, kp, [&](int p, int m, float s) {
        const int co = co0 + m;
        ys[(long long)p * C + co] = from_f32<T>(s + (b2 ? to_f32(b2[co]) : 0.0f) + SC[p * BN + m]);
    });
}

// The streamed kernel's (at 64 pixels and its largest input, 512 channels).
inline size_t concat_most(int C, int cl, int elem) {
    return instance_most(C, cl, [&](int c, int k) { return ConcatLayout(512, c, 64, elem, k).total(); });
}

template <typename T>
static cudaError_t launch_concat(const T* a, const T* a_bias, const T* b, const T* b_bias, const T* add,
                                 const T* add_bias, const T* gamma1, const T* beta1, const T* w1, const T* b1,
                                 const T* gamma2, const T* beta2, const T* w2, const T* b2, const T* ws, T* y, int N,
                                 int H, int W, int Ca, int Cb, int C, int G, float eps, int cl, cudaStream_t stream,
                                 bool* no_room) {
    const size_t smem = ConcatLayout(Ca + Cb, C, H * W, int(sizeof(T)), cl).total();
    const size_t most = concat_most(C, cl, int(sizeof(T)));
    const auto run = [&](auto kernel) {
        return launch_block(kernel, most, smem, N, cl, stream, no_room, a, a_bias, b, b_bias, add, add_bias, gamma1,
                            beta1, w1, b1, gamma2, beta2, w2, b2, ws, y, H, W, Ca, Cb, C, G, eps, cl,
                            weight_prefetch());
    };
    const int nt = n_tiles(C, cl);
    return nt == 4 ? run(concat_block_kernel<T, 4>) : nt == 2 ? run(concat_block_kernel<T, 2>)
                                                               : run(concat_block_kernel<T, 1>);
}

// The conditions both C entries share, each refused by name: the type, positive sizes, C, the pixels, groups dividing
// C, the cluster size and a block's channels as whole groups of norm2, N's range, eps, add_bias only with add. *cl
// gets the cluster size.
static onestep_status check_block(const char* fn, const char* shapes, onestep_dtype dtype, int N, int H, int W, int C,
                                  int groups, float eps, int cluster, const void* add, const void* add_bias, int* cl) {
    if (dtype != ONESTEP_FLOAT16 && dtype != ONESTEP_BFLOAT16)
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "the fused resnet block takes fp16 or bf16 (tensor cores)");
    if (N <= 0 || H <= 0 || W <= 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "N, H and W must be positive");
    if (C != 128 && C != 256) return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "C must be 128 or 256");
    if (H * W != 16 && H * W != 64) return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "H*W must be 16 or 64");
    if (groups <= 0 || C % groups != 0)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "groups must divide C");
    if (cluster != 0 && cluster != 8 && cluster != 16)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "cluster must be 0 (8), 8 or 16");
    *cl = cluster == 0 ? 8 : cluster;
    const int Cg = C / groups, BN = C / *cl;
    if (Cg % 8 != 0 || BN % Cg != 0)
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                    "C/groups (%d) must be a multiple of 8 that divides a block's %d channels (C/%d)", Cg, BN, *cl);
    if (N > (1 << 27)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "N is too large for one launch");
    if (!(eps > 0.0f)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "eps must be positive");
    if (add_bias && !add) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "add_bias needs add");
    return ONESTEP_OK;
}

static bool misaligned16(const void* p) { return (reinterpret_cast<unsigned long long>(p) & 15u) != 0; }

// A launch's status: where the occupancy API found no room for a cluster of cl blocks of smem bytes, that, by name.
static onestep_status launched(const char* fn, const char* shapes, cudaError_t e, bool no_room, int cl, size_t smem) {
    if (e == cudaSuccess && no_room)
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                    "no cluster of %d blocks of %zu bytes of shared memory fits this device (cudaOccupancyMaxActiveClusters)",
                    cl, smem);
    return check_launch(e, fn, shapes);
}

}  // namespace resnet
}  // namespace onestep

using namespace onestep;

extern "C" onestep_status onestep_resnet_block_typed(const void* x, const void* x_bias, const void* add,
                                                     const void* add_bias, const void* gamma1, const void* beta1,
                                                     const void* w1_krsc, const void* b1, const void* gamma2,
                                                     const void* beta2, const void* w2_krsc, const void* b2, void* y,
                                                     int N, int H, int W, int C, int groups, float eps, int cluster,
                                                     onestep_dtype dtype, cudaStream_t stream) {
    const char* fn = "onestep_resnet_block_typed";
    char shapes[176];
    std::snprintf(shapes, sizeof shapes, "N=%d, H=%d, W=%d, C=%d, groups=%d, cluster=%d, dtype=%s", N, H, W, C, groups,
                  cluster, dtype_bytes(dtype) ? dtype_name(dtype) : "unknown");
    int cl = 8;
    if (onestep_status s = resnet::check_block(fn, shapes, dtype, N, H, W, C, groups, eps, cluster, add, add_bias, &cl))
        return s;
    if (!x || !gamma1 || !beta1 || !w1_krsc || !gamma2 || !beta2 || !w2_krsc || !y)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    "x, gamma1, beta1, w1_krsc, gamma2, beta2, w2_krsc and y must be non-null");
    using resnet::misaligned16;
    if (misaligned16(x) || misaligned16(w1_krsc) || misaligned16(w2_krsc) || misaligned16(y))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    "x, w1_krsc, w2_krsc and y must be 16-byte aligned (vector loads and cp.async)");
    const size_t bytes = size_t(N) * H * W * C * dtype_bytes(dtype);
    const char *xb = static_cast<const char*>(x), *yb = static_cast<const char*>(y);
    if (xb < yb + bytes && yb < xb + bytes)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "y must not overlap x");
    // The launch sets the instance's attribute for its largest shape (see resnet::launch): that must fit.
    if (onestep_status s = require_shared(fn, shapes, resnet::resident_most(C, cl, int(dtype_bytes(dtype))),
                                          "the fused resnet block")) return s;
    if (onestep_status s = require_sm90(fn, shapes, "the fused resnet block (thread block clusters)")) return s;
    bool no_room = false;
    const auto go = [&](auto tag) {  // tensor cores: the 16-bit types only
        using T = decltype(tag);
        return resnet::launch<T>(static_cast<const T*>(x), static_cast<const T*>(x_bias), static_cast<const T*>(add),
                                 static_cast<const T*>(add_bias), static_cast<const T*>(gamma1),
                                 static_cast<const T*>(beta1), static_cast<const T*>(w1_krsc),
                                 static_cast<const T*>(b1), static_cast<const T*>(gamma2), static_cast<const T*>(beta2),
                                 static_cast<const T*>(w2_krsc), static_cast<const T*>(b2), static_cast<T*>(y), N, H,
                                 W, C, groups, eps, cl, stream, &no_room);
    };
    const cudaError_t e = dtype == ONESTEP_FLOAT16 ? go(__half()) : go(__nv_bfloat16());
    return resnet::launched(fn, shapes, e, no_room, cl, resnet::Layout(C, H * W, int(dtype_bytes(dtype)), cl).total());
}

extern "C" onestep_status onestep_resnet_block_concat_typed(
    const void* a, const void* a_bias, const void* b, const void* b_bias, const void* add, const void* add_bias,
    const void* gamma1, const void* beta1, const void* w1_krsc, const void* b1, const void* gamma2, const void* beta2,
    const void* w2_krsc, const void* b2, const void* ws_krsc, void* y, int N, int H, int W, int Ca, int Cb, int C,
    int groups, float eps, int cluster, onestep_dtype dtype, cudaStream_t stream) {
    const char* fn = "onestep_resnet_block_concat_typed";
    char shapes[208];
    std::snprintf(shapes, sizeof shapes, "N=%d, H=%d, W=%d, Ca=%d, Cb=%d, C=%d, groups=%d, cluster=%d, dtype=%s", N, H,
                  W, Ca, Cb, C, groups, cluster, dtype_bytes(dtype) ? dtype_name(dtype) : "unknown");
    int cl = 8;
    if (onestep_status s = resnet::check_block(fn, shapes, dtype, N, H, W, C, groups, eps, cluster, add, add_bias, &cl))
        return s;
    const int Cin = Ca + Cb;
    if (Ca <= 0 || Cb <= 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "Ca and Cb must be positive");
    if (Ca % 8 != 0 || Cb % 8 != 0 || (Cin != 128 && Cin != 256 && Cin != 512))
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                    "Ca and Cb must be multiples of 8 and Ca+Cb (%d) one of 128, 256 and 512", Cin);
    if (Cin % groups != 0 || (Cin / groups) % 8 != 0)
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "(Ca+Cb)/groups (%d/%d) must be a whole multiple of 8", Cin,
                    groups);
    if (!a || !b || !gamma1 || !beta1 || !w1_krsc || !gamma2 || !beta2 || !w2_krsc || !ws_krsc || !y)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    "a, b, gamma1, beta1, w1_krsc, gamma2, beta2, w2_krsc, ws_krsc and y must be non-null");
    using resnet::misaligned16;
    if (misaligned16(a) || misaligned16(b) || misaligned16(w1_krsc) || misaligned16(w2_krsc) || misaligned16(ws_krsc) ||
        misaligned16(y))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    "a, b, w1_krsc, w2_krsc, ws_krsc and y must be 16-byte aligned (vector loads and cp.async)");
    const size_t elem = dtype_bytes(dtype), pixels = size_t(N) * H * W;
    const auto overlaps = [&](const void* p, size_t bytes) {
        const char *pb = static_cast<const char*>(p), *yb = static_cast<const char*>(y);
        return pb < yb + pixels * C * elem && yb < pb + bytes;
    };
    if (overlaps(a, pixels * Ca * elem) || overlaps(b, pixels * Cb * elem))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "y must overlap neither a nor b");
    if (onestep_status s = require_shared(fn, shapes, resnet::concat_most(C, cl, int(elem)), "the fused resnet block"))
        return s;
    if (onestep_status s = require_sm90(fn, shapes, "the fused resnet block (thread block clusters)")) return s;
    bool no_room = false;
    const auto go = [&](auto tag) {
        using T = decltype(tag);
        const auto c = [](const void* p) { return static_cast<const T*>(p); };
        return resnet::launch_concat<T>(c(a), c(a_bias), c(b), c(b_bias), c(add), c(add_bias), c(gamma1), c(beta1),
                                        c(w1_krsc), c(b1), c(gamma2), c(beta2), c(w2_krsc), c(b2), c(ws_krsc),
                                        static_cast<T*>(y), N, H, W, Ca, Cb, C, groups, eps, cl, stream, &no_room);
    };
    const cudaError_t e = dtype == ONESTEP_FLOAT16 ? go(__half()) : go(__nv_bfloat16());
    return resnet::launched(fn, shapes, e, no_room, cl, resnet::ConcatLayout(Cin, C, H * W, int(elem), cl).total());
}
