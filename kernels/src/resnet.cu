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
//   - a cluster of kCluster = 8 blocks a sample (sm_90 thread block clusters); block r computes output channels
//     [r BN, (r + 1) BN), BN = C / 8, of both convolutions;
//   - every block loads the whole sample x' (at most 64 pixels x 256 channels: 32 KB) and computes norm1's statistics
//     itself (two exact passes over registers, the sums in a fixed order), so the first convolution needs nothing from
//     its peers; its weights (BN rows of the KRSC tensor: one contiguous span, 147 KB at C = 256) are copied into
//     shared memory by cp.async from the first instruction on, under x's loads and the statistics;
//   - conv1 and conv2 are implicit GEMMs on mma.sync m16n8k16 (M = the pixels, N = BN, K = 9 C), the K range split
//     over the warps that the pixel rows leave (8 warps: 4 m-tiles x 2 at 8x8, 1 x 8 at 4x4), the parts summed in a
//     fixed order through shared memory;
//   - a block's BN channels are whole groups of norm2, so norm2's statistics are the block's own too; its normalized
//     slice is written into its shared memory, and after a cluster barrier each block copies the 7 other slices from
//     its peers' shared memory (distributed shared memory), the whole conv2 input, while conv2's weights are already
//     in flight into the buffer conv1's weights left;
//   - conv2's epilogue adds b2 and the residual x' before y's one rounding.
// Roundings as the unfused ops store their tensors (so its results agree with them to T's rounding, not bits): norm1's
// output, conv1's output h (its bias b1 pending, added by norm2 in fp32 as onestep_groupnorm_forward_add_typed does:
// (h + b1) + (add + add_bias)), norm2's output, and y. Statistics, products and sums are fp32.
//
// Conditions (the C entry names each): fp16 or bf16; C 128 or 256; H * W 16 or 64 (4x4, 8x8, 2x8, ...); C / G a
// multiple of 8 that divides BN; x, the weights and y 16-byte aligned, y apart from x; compute capability 9.0.
// The emulation runs it (clusters, distributed shared memory, cp.async and mma.sync are in its subset), so CTest
// checks it against a double reference (kernels/test/test_resnet.cpp); dev/resnet_forward.cu times it against the
// four launches it replaces. Not yet timed on a GPU (twenty-fifth session).
#include "cuda_compat.cuh"
#include "dtype.cuh"
#include "onestep_kernels.h"
#include "reduce.cuh"
#include "status.cuh"
#include "tensor_core.cuh"

#include <cstdio>
#include <cstring>

namespace onestep {
namespace resnet {

using tensor_core::cp_async16;
using tensor_core::cp_async_commit;
using tensor_core::cp_async_wait;
using tensor_core::load_as;
using tensor_core::mma;
using tensor_core::store_as;

constexpr int kCluster = 8, kThreads = 256, kWarps = kThreads / 32;

__device__ __forceinline__ float silu(float u) { return u / (1.0f + __expf(-u)); }

// The layout of a block's dynamic shared memory for C channels (BN = C / 8 of them this block's) and HW pixels:
//   W:    BN rows of K = 9 C weights, pitch K + 8 (conv1's, then conv2's): the 8 rows a B fragment reads fall in 8
//         different 4-bank groups, so its 32 lanes hit 32 banks;
//   A1:   conv1's input, HW rows of C, pitch C + 8 (the same reason); then norm2's input (fp32, HW x BN); then conv2's
//         K-part sums (fp32, KP x HW x BN);
//   A2:   conv1's K-part sums; then conv2's input, HW rows of C, pitch C + 8;
//   part: one float a thread, stat: mean and rstd of up to 32 groups.
// A1 and A2 are each the larger of their uses.
struct Layout {
    int C, HW, BN, K, KP, pitch_w, pitch_a;
    size_t w_bytes, a_bytes;
    __host__ __device__ Layout(int C_, int HW_, int elem) : C(C_), HW(HW_) {
        BN = C / kCluster, K = 9 * C, KP = kWarps / (HW / 16), pitch_w = K + 8, pitch_a = C + 8;
        w_bytes = size_t(BN) * pitch_w * elem;
        const size_t act = size_t(HW) * pitch_a * elem, sums = size_t(KP) * HW * BN * 4;
        a_bytes = (act > sums ? act : sums + 15) / 16 * 16;
    }
    __host__ __device__ size_t total() const { return w_bytes + 2 * a_bytes + (kThreads + 64) * 4; }
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

// This warp's share of a 3x3 'same' convolution of A (HW x C, pitch_a) with W (BN x K): m-tile mt (pixels 16 mt ..
// 16 mt + 15) over the K range of part kp, all BN / 8 n-tiles, into acc. A k step of 16 lies in one tap (C is a
// multiple of 16): its input pixel is the output pixel moved by (r - 1, s - 1), zero outside the image.
template <typename T, int NT>
__device__ __forceinline__ void conv_part(float (&acc)[NT][4], const T* A, const T* W, const Layout& L, int H, int Wd,
                                          int mt, int kp) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int p_lo = mt * 16 + g, p_hi = p_lo + 8;
    const int h_lo = p_lo / Wd, w_lo = p_lo - h_lo * Wd, h_hi = p_hi / Wd, w_hi = p_hi - h_hi * Wd;
#pragma unroll
    for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    const int span = L.K / L.KP, k_begin = kp * span;
    // Unrolled so that the next steps' shared loads issue under this step's mma (span is at least 9 steps).
#pragma unroll 4
    for (int k0 = k_begin; k0 < k_begin + span; k0 += 16) {
        const int tap = k0 / L.C, c0 = k0 - tap * L.C, dr = tap / 3 - 1, ds = tap % 3 - 1;
        const int hl = h_lo + dr, wl = w_lo + ds, hh = h_hi + dr, wh = w_hi + ds;
        const bool in_lo = hl >= 0 && hl < H && wl >= 0 && wl < Wd, in_hi = hh >= 0 && hh < H && wh >= 0 && wh < Wd;
        const T* a_lo = A + (in_lo ? hl * Wd + wl : 0) * L.pitch_a + c0 + 2 * t;
        const T* a_hi = A + (in_hi ? hh * Wd + wh : 0) * L.pitch_a + c0 + 2 * t;
        uint32_t a[4];
        a[0] = in_lo ? load_as<uint32_t>(a_lo) : 0u;
        a[1] = in_hi ? load_as<uint32_t>(a_hi) : 0u;
        a[2] = in_lo ? load_as<uint32_t>(a_lo + 8) : 0u;
        a[3] = in_hi ? load_as<uint32_t>(a_hi + 8) : 0u;
#pragma unroll
        for (int j = 0; j < NT; j++) {
            const T* b = W + (j * 8 + g) * L.pitch_w + k0 + 2 * t;  // B = W^T: column g of n-tile j is channel 8j + g
            mma<T>(acc[j], a, load_as<uint32_t>(b), load_as<uint32_t>(b + 8));
        }
    }
}

// The block's conv: each warp's part into sums (fp32, [kp][pixel][n]), then every thread's share of the HW x BN
// outputs summed over the parts in order: out(p, n, s) is called with the sum (one call per output).
template <typename T, int NT, typename Out>
__device__ __forceinline__ void conv(const T* A, const T* W, float* sums, const Layout& L, int H, int Wd, Out out) {
    const int warp = threadIdx.x / 32, MT = L.HW / 16, mt = warp % MT, kp = warp / MT;
    float acc[NT][4];
    conv_part<T, NT>(acc, A, W, L, H, Wd, mt, kp);
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4, p_lo = mt * 16 + g;
    __syncthreads();  // every warp is done with A and W (sums may alias the other activation buffer only)
    float* s = sums + (long long)kp * L.HW * L.BN;
#pragma unroll
    for (int j = 0; j < NT; j++) {
        const int n = j * 8 + 2 * t;
        s[p_lo * L.BN + n] = acc[j][0], s[p_lo * L.BN + n + 1] = acc[j][1];
        s[(p_lo + 8) * L.BN + n] = acc[j][2], s[(p_lo + 8) * L.BN + n + 1] = acc[j][3];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < L.HW * L.BN; e += kThreads) {
        float v = 0.0f;
        for (int q = 0; q < L.KP; q++) v += sums[(long long)q * L.HW * L.BN + e];
        out(e / L.BN, e % L.BN, v);
    }
}

template <typename T, int NT>
__global__ void __launch_bounds__(kThreads, 1)
    block_kernel(const T* __restrict__ x, const T* __restrict__ x_bias, const T* __restrict__ add,
                 const T* __restrict__ add_bias, const T* __restrict__ gamma1, const T* __restrict__ beta1,
                 const T* __restrict__ w1, const T* __restrict__ b1, const T* __restrict__ gamma2,
                 const T* __restrict__ beta2, const T* __restrict__ w2, const T* __restrict__ b2, T* __restrict__ y,
                 int H, int Wd, int C, int G, float eps) {
    await_predecessors();
    const Layout L(C, H * Wd, int(sizeof(T)));
    ONESTEP_DYNAMIC_SHARED(unsigned char, smem);
    T* const W = reinterpret_cast<T*>(smem);
    unsigned char* const a1 = smem + L.w_bytes;
    unsigned char* const a2 = a1 + L.a_bytes;
    float* const part = reinterpret_cast<float*>(a2 + L.a_bytes);
    float* const stat = part + kThreads;  // [0, 32): mean, [32, 64): rstd
    const unsigned rank = cluster_rank();
    const int n = blockIdx.x / kCluster, co0 = int(rank) * L.BN, HW = L.HW, Cg = C / G;
    const T* xs = x + (long long)n * HW * C;

    issue_weights(W, w1, L, co0);  // conv1's weights land under everything up to conv1

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
    cp_async_wait<0>();
    __syncthreads();  // A1 and conv1's weights complete

    // ---- conv1, then h + b1 + t (fp32, h rounded to T as stored) into a1 as norm2's input ----------------------------
    float* const v2 = reinterpret_cast<float*>(a1);  // HW x BN, once conv1 has read A1
    conv<T, NT>(reinterpret_cast<const T*>(a1), W, reinterpret_cast<float*>(a2), L, H, Wd, [&](int p, int nn, float s) {
        const int co = co0 + nn;
        const float h = to_f32(from_f32<T>(s));
        float tv = 0.0f;
        if (add) {
            tv = to_f32(add[(long long)n * C + co]);
            if (add_bias) tv += to_f32(add_bias[co]);
        }
        v2[p * L.BN + nn] = (h + (b1 ? to_f32(b1[co]) : 0.0f)) + tv;
    });
    __syncthreads();  // conv1 is done with W: conv2's weights may land there
    issue_weights(W, w2, L, co0);

    // ---- norm2 on this block's BN channels (whole groups), its slice of conv2's input into A2 ------------------------
    // Thread i's channel is i % BN (kThreads is a multiple of BN), its pixels i / BN + j kThreads / BN.
    const int nn = threadIdx.x % L.BN, g2 = nn / Cg;
    const float count2 = float(HW) * float(Cg);
    float s2 = 0.0f;
    for (int e = threadIdx.x; e < HW * L.BN; e += kThreads) s2 += v2[e];
    group_totals(s2, part, stat, L.BN, Cg, L.BN / Cg);
    const float mu2 = stat[g2] / count2;
    float ss2 = 0.0f;
    for (int e = threadIdx.x; e < HW * L.BN; e += kThreads) ss2 += (v2[e] - mu2) * (v2[e] - mu2);
    __syncthreads();
    group_totals(ss2, part, stat, L.BN, Cg, L.BN / Cg);
    const float rs2 = rsqrtf(stat[g2] / count2 + eps);
    T* const A2 = reinterpret_cast<T*>(a2);
    {
        const int co = co0 + nn;
        const float ga = to_f32(gamma2[co]), be = to_f32(beta2[co]);
        for (int e = threadIdx.x; e < HW * L.BN; e += kThreads)
            A2[(e / L.BN) * L.pitch_a + co] = from_f32<T>(silu((v2[e] - mu2) * rs2 * ga + be));
    }
    cluster_sync();  // every block's slice is written
    // The 7 other slices from the peers' A2 (16 bytes at a time: BN / 8 a pixel and peer).
    const int chunks = L.BN / 8;
    for (int i = threadIdx.x; i < (kCluster - 1) * HW * chunks; i += kThreads) {
        const int k = i / (HW * chunks), rest = i - k * HW * chunks, p = rest / chunks, ch = rest - p * chunks;
        const unsigned peer = (rank + 1 + k) % kCluster;
        const int at = p * L.pitch_a + int(peer) * L.BN + ch * 8;
        store_as<int4>(A2 + at, load_as<int4>(cluster_map(A2, peer) + at));
    }
    cluster_sync();  // A2 complete here; the peers are done reading this block's slice (no remote read follows)
    cp_async_wait<0>();
    __syncthreads();  // conv2's weights complete

    // ---- conv2 + b2 + x' -> y --------------------------------------------------------------------------------------
    T* ys = y + (long long)n * HW * C;
    conv<T, NT>(A2, W, reinterpret_cast<float*>(a1), L, H, Wd, [&](int p, int m, float s) {
        const int co = co0 + m;
        const float r = to_f32(xs[(long long)p * C + co]) + (x_bias ? to_f32(x_bias[co]) : 0.0f);
        ys[(long long)p * C + co] = from_f32<T>(s + (b2 ? to_f32(b2[co]) : 0.0f) + r);
    });
}

template <typename T>
static cudaError_t launch(const T* x, const T* x_bias, const T* add, const T* add_bias, const T* gamma1,
                          const T* beta1, const T* w1, const T* b1, const T* gamma2, const T* beta2, const T* w2,
                          const T* b2, T* y, int N, int H, int W, int C, int G, float eps, cudaStream_t stream) {
    const Layout L(C, H * W, int(sizeof(T)));
    const size_t smem = L.total();
    const auto run = [&](auto kernel) {
        // The attribute is the instance's, not the launch's: set for its largest shape (64 pixels), so that a launch
        // at 64 pixels captured in a graph stays valid after one at 16 (a smaller value would refuse its replay).
        const size_t most = Layout(C, 64, int(sizeof(T))).total();
        const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(most));
        if (e != cudaSuccess) return e;
        return launch_cluster(kernel, dim3(unsigned(N) * kCluster), dim3(kThreads), kCluster, smem, stream, x, x_bias,
                              add, add_bias, gamma1, beta1, w1, b1, gamma2, beta2, w2, b2, y, H, W, C, G, eps);
    };
    // NT = BN / 8 n-tiles: BN 32 at C = 256, 16 at C = 128.
    return C == 256 ? run(block_kernel<T, 4>) : run(block_kernel<T, 2>);
}

}  // namespace resnet
}  // namespace onestep

using namespace onestep;

extern "C" onestep_status onestep_resnet_block_typed(const void* x, const void* x_bias, const void* add,
                                                     const void* add_bias, const void* gamma1, const void* beta1,
                                                     const void* w1_krsc, const void* b1, const void* gamma2,
                                                     const void* beta2, const void* w2_krsc, const void* b2, void* y,
                                                     int N, int H, int W, int C, int groups, float eps,
                                                     onestep_dtype dtype, cudaStream_t stream) {
    const char* fn = "onestep_resnet_block_typed";
    char shapes[160];
    std::snprintf(shapes, sizeof shapes, "N=%d, H=%d, W=%d, C=%d, groups=%d, dtype=%s", N, H, W, C, groups,
                  dtype_bytes(dtype) ? dtype_name(dtype) : "unknown");
    if (dtype != ONESTEP_FLOAT16 && dtype != ONESTEP_BFLOAT16)
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "the fused resnet block takes fp16 or bf16 (tensor cores)");
    if (N <= 0 || H <= 0 || W <= 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "N, H and W must be positive");
    if (C != 128 && C != 256) return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "C must be 128 or 256");
    if (H * W != 16 && H * W != 64) return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "H*W must be 16 or 64");
    if (groups <= 0 || C % groups != 0)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "groups must divide C");
    const int Cg = C / groups, BN = C / resnet::kCluster;
    if (Cg % 8 != 0 || BN % Cg != 0)
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                    "C/groups (%d) must be a multiple of 8 that divides a block's %d channels (C/8)", Cg, BN);
    if (N > (1 << 27)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "N is too large for one launch");
    if (!(eps > 0.0f)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "eps must be positive");
    if (!x || !gamma1 || !beta1 || !w1_krsc || !gamma2 || !beta2 || !w2_krsc || !y)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    "x, gamma1, beta1, w1_krsc, gamma2, beta2, w2_krsc and y must be non-null");
    if (add_bias && !add) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "add_bias needs add");
    const auto misaligned = [](const void* p) { return (reinterpret_cast<unsigned long long>(p) & 15u) != 0; };
    if (misaligned(x) || misaligned(w1_krsc) || misaligned(w2_krsc) || misaligned(y))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    "x, w1_krsc, w2_krsc and y must be 16-byte aligned (vector loads and cp.async)");
    const size_t bytes = size_t(N) * H * W * C * dtype_bytes(dtype);
    const char *xb = static_cast<const char*>(x), *yb = static_cast<const char*>(y);
    if (xb < yb + bytes && yb < xb + bytes)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "y must not overlap x");
    // The launch sets the instance's attribute for its largest shape (see resnet::launch): that must fit.
    if (onestep_status s = require_shared(fn, shapes, resnet::Layout(C, 64, int(dtype_bytes(dtype))).total(),
                                          "the fused resnet block")) return s;
    if (onestep_status s = require_sm90(fn, shapes, "the fused resnet block (thread block clusters)")) return s;
    const auto go = [&](auto tag) {  // tensor cores: the 16-bit types only
        using T = decltype(tag);
        return resnet::launch<T>(static_cast<const T*>(x), static_cast<const T*>(x_bias), static_cast<const T*>(add),
                                 static_cast<const T*>(add_bias), static_cast<const T*>(gamma1),
                                 static_cast<const T*>(beta1), static_cast<const T*>(w1_krsc),
                                 static_cast<const T*>(b1), static_cast<const T*>(gamma2), static_cast<const T*>(beta2),
                                 static_cast<const T*>(w2_krsc), static_cast<const T*>(b2), static_cast<T*>(y), N, H,
                                 W, C, groups, eps, stream);
    };
    return check_launch(dtype == ONESTEP_FLOAT16 ? go(__half()) : go(__nv_bfloat16()), fn, shapes);
}
