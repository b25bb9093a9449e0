// groupnorm.cu: group normalization over NHWC activations (Wu & He 2018, "Group Normalization", Eq. 1-4),
// fused with the U-Net's time-embedding modulation and SiLU, forward and backward.
//
// Forward (the winner of kernels/dev/groupnorm_forward.cu, version 3): two kernels; for a small tensor (at most
// kFusedMaxElems values: batch-1 inference) one (version 6, below).
// A small tensor's two passes move a few hundred KB, far less than a kernel launch costs in time, so
// there one block per (n, g) computes its group's statistics and then normalizes the group itself (version 2's
// structure with version 3's vector loads): one launch instead of two, i.e. one graph node fewer per group norm
// of a sampling pass. The same Welford loop and the same per-element formula give the two-kernel path's bits at
// the same block size; production gives the one-kernel path's few blocks more threads
// (groupnorm.cuh: production_stats_block).
//   1. statistics: one block per (n, g) streams the group's HW * C/G values once, each thread keeping a
//      Welford accumulator, merged across the warp by shuffles and across warps through shared memory
//      (Chan et al. pairwise merge); writes mean and rstd = 1/sqrt(var + eps), var the biased variance
//      as in the paper's Eq. 3-4. fp32 throughout: Welford keeps it accurate where E[x^2] - E[x]^2 cancels.
//   2. normalize + affine (+ scale/shift, + SiLU): one grid-stride elementwise pass over all N*HW*C values
//      (grid.y = sample, so the only per-element index math is a 32-bit i % C), float4 loads when C % 4 == 0
//      and the pointers are 16-byte aligned. A separate pass parallelizes over
//      the whole tensor instead of over the N*G groups, which on small batches leaves most SMs idle.
//   u = (xhat * gamma + beta) * (1 + scale[n,c]) + shift[n,c];  y = SiLU(u) or u.
// Pre-add (onestep_groupnorm_forward_add_typed; inference only): the values normalized are
//   x'[n,p,c] = (x + x_bias[c]) + (add[n,c] + add_bias[c])                       (each term optional)
// ResnetBlock2D's "h + time_emb_proj(temb)" (Ho et al. 2020's time conditioning; diffusers' default
// time_embedding_norm) and the biases the CUDA backend leaves to the consumer of a cuDNN convolution or a cuBLAS
// GEMM (CudaOps defers them). x' is never stored: statistics and normalization both add it on the fly, in fp32, in
// the order the unfused ops use, so fp32 results are the unfused ops' bits. Both paths (one kernel, two) take it.
//
// Backward (the winner of kernels/dev/groupnorm_backward.cu, version 2): one block per (n, g); threads form
// a (channel, pixel-row) grid so each thread keeps per-channel partial sums in registers. With
// dxhat = dyp * gamma, the input gradient is (Wu & He's normalization differentiated):
//   dx = rstd * (dxhat - mean_g(dxhat) - xhat * mean_g(dxhat * xhat)),
// and the parameter/modulation gradients are sums over pixels:
//   du = dy * SiLU'(u),  dshift[n,c] = sum_p du,  dscale[n,c] = sum_p du * yp,  dyp = du * (1 + scale[n,c]),
//   dbeta[c] += sum_{n,p} dyp,  dgamma[c] += sum_{n,p} dyp * xhat     (yp = xhat * gamma + beta).
// dgamma/dbeta accumulate across the N blocks of a group with atomicAdd (summation order therefore varies
// run to run within fp32 rounding); dx, dscale, dshift are assigned.
#include "dtype.cuh"
#include "groupnorm.cuh"
#include "reduce.cuh"
#include "status.cuh"

#include <cstdint>
#include <cstdio>
#include <initializer_list>

namespace onestep {
namespace groupnorm {

__device__ __forceinline__ float sigmoid(float u) { return 1.0f / (1.0f + __expf(-u)); }

// The pre-add terms of one sample (add already offset to it): x' = (x + x_bias[c]) + (add[c] + add_bias[c]). PRE
// false compiles every use away (the plain group norm); with PRE each pointer may still be null.
template <typename T>
struct PreAdd {
    const T* x_bias;
    const T* add;
    const T* add_bias;

    __device__ __forceinline__ PreAdd sample(int n, int C) const {
        return PreAdd{x_bias, add ? add + (long long)n * C : nullptr, add_bias};
    }
};

template <bool PRE, typename T>
__device__ __forceinline__ float pre_add(const PreAdd<T>& p, float x, int c) {
    if (!PRE) return x;
    if (p.x_bias) x += to_f32(p.x_bias[c]);
    if (p.add) {
        float a = to_f32(p.add[c]);
        if (p.add_bias) a += to_f32(p.add_bias[c]);
        x += a;
    }
    return x;
}

// ---- forward, pass 1: statistics ---------------------------------------------------------------------
// T: the storage type of x (and of y, gamma, beta, scale, shift below; dtype.cuh). Statistics are fp32 for
// every T: fp16/bf16 storage changes only how values are loaded and stored.
// This thread's Welford accumulator over its share of one group (base: the group's first channel of the sample's
// first pixel), in the order both forward paths use. VEC4: Cg % 4 == 0 and base aligned for 4-element loads.
// 32-bit index math: the API guarantees HW * C <= 2^30, and a 64-bit division per element would cost more than
// the load in this memory-bound loop.
// pre: the sample's pre-add terms; c0: the group's first channel (pre's channel index of base's first value).
template <bool VEC4, bool PRE = false, typename T>
__device__ __forceinline__ Welford group_welford(const T* base, int HW, int C, int Cg, PreAdd<T> pre = {},
                                                 int c0 = 0) {
    Welford w{0.0f, 0.0f, 0.0f};
    if (VEC4) {
        const int cv = Cg / 4;
        const int m = HW * cv;
        for (int i = threadIdx.x; i < m; i += blockDim.x) {
            const int p = i / cv;
            const int c = (i - p * cv) * 4;
            const float4 v = load4(base + (long long)p * C + c);
            welford_add(w, pre_add<PRE>(pre, v.x, c0 + c + 0));
            welford_add(w, pre_add<PRE>(pre, v.y, c0 + c + 1));
            welford_add(w, pre_add<PRE>(pre, v.z, c0 + c + 2));
            welford_add(w, pre_add<PRE>(pre, v.w, c0 + c + 3));
        }
    } else {
        const int m = HW * Cg;
        for (int i = threadIdx.x; i < m; i += blockDim.x) {
            const int p = i / Cg, c = i - p * Cg;
            welford_add(w, pre_add<PRE>(pre, to_f32(base[(long long)p * C + c]), c0 + c));
        }
    }
    return w;
}

template <bool VEC4, bool PRE = false, typename T = float>
__global__ void stats_kernel(const T* __restrict__ x, float* __restrict__ mean, float* __restrict__ rstd, int HW, int C,
                             int G, float eps, PreAdd<T> pre = {}) {
    await_predecessors();
    __shared__ Welford scratch[32];
    const int n = blockIdx.x / G, g = blockIdx.x % G, Cg = C / G;
    const T* base = x + (long long)n * HW * C + (long long)g * Cg;
    const Welford w = block_welford(group_welford<VEC4, PRE>(base, HW, C, Cg, pre.sample(n, C), g * Cg), scratch);
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = w.mean;
        rstd[blockIdx.x] = rsqrtf(w.m2 / w.n + eps);
    }
}

// ---- forward, pass 2: normalize, affine, modulation, activation --------------------------------------
// One value of channel c given its group's statistics; scale_n and shift_n are offset to the sample.
template <bool EMB, bool SILU, typename T>
__device__ __forceinline__ float apply_v(float x, int c, float mean, float rstd, const T* gamma, const T* beta,
                                         const T* scale_n, const T* shift_n) {
    float u = (x - mean) * rstd * to_f32(gamma[c]) + to_f32(beta[c]);
    if (EMB) u = u * (1.0f + to_f32(scale_n[c])) + to_f32(shift_n[c]);
    if (SILU) u = u * sigmoid(u);
    return u;
}

// One value of channel c of sample n; the pointers are already offset to sample n.
template <bool EMB, bool SILU, typename T>
__device__ __forceinline__ float apply_c(float x, int c, int Cg, const float* mean_n, const float* rstd_n,
                                         const T* gamma, const T* beta, const T* scale_n, const T* shift_n) {
    const int g = c / Cg;
    return apply_v<EMB, SILU>(x, c, mean_n[g], rstd_n[g], gamma, beta, scale_n, shift_n);
}

// The same with (n, c) indexing, for the dev file's earlier versions.
template <bool EMB, bool SILU>
__device__ __forceinline__ float apply_one(float x, int n, int c, int C, int G, int Cg, const float* mean,
                                           const float* rstd, const float* gamma, const float* beta,
                                           const float* scale, const float* shift) {
    return apply_c<EMB, SILU>(x, c, Cg, mean + n * G, rstd + n * G, gamma, beta, EMB ? scale + (long long)n * C : nullptr,
                              EMB ? shift + (long long)n * C : nullptr);
}

// grid.y = sample n; grid-stride over the sample's HW*C values (<= 2^30, so int indices).
template <bool EMB, bool SILU, bool VEC4, bool PRE = false, typename T = float>
__global__ void apply_kernel(const T* __restrict__ x, const float* __restrict__ mean, const float* __restrict__ rstd,
                             const T* __restrict__ gamma, const T* __restrict__ beta, const T* __restrict__ scale,
                             const T* __restrict__ shift, T* __restrict__ y, int HW, int C, int G,
                             PreAdd<T> pre_all = {}) {
    await_predecessors();
    const int n = blockIdx.y, Cg = C / G;
    const int per_sample = HW * C;
    const long long offset = (long long)n * per_sample;
    const T* xs = x + offset;
    T* ys = y + offset;
    const float* mean_n = mean + n * G;
    const float* rstd_n = rstd + n * G;
    const T* scale_n = EMB ? scale + (long long)n * C : nullptr;
    const T* shift_n = EMB ? shift + (long long)n * C : nullptr;
    const PreAdd<T> pre = pre_all.sample(n, C);
    const int stride = gridDim.x * blockDim.x;
    if (VEC4) {
        for (int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4; i < per_sample; i += stride * 4) {
            const int c = i % C;  // C % 4 == 0: the 4 values share n and have channels c..c+3
            const float4 v = load4(xs + i);
            float4 r;
            r.x = apply_c<EMB, SILU>(pre_add<PRE>(pre, v.x, c + 0), c + 0, Cg, mean_n, rstd_n, gamma, beta, scale_n, shift_n);
            r.y = apply_c<EMB, SILU>(pre_add<PRE>(pre, v.y, c + 1), c + 1, Cg, mean_n, rstd_n, gamma, beta, scale_n, shift_n);
            r.z = apply_c<EMB, SILU>(pre_add<PRE>(pre, v.z, c + 2), c + 2, Cg, mean_n, rstd_n, gamma, beta, scale_n, shift_n);
            r.w = apply_c<EMB, SILU>(pre_add<PRE>(pre, v.w, c + 3), c + 3, Cg, mean_n, rstd_n, gamma, beta, scale_n, shift_n);
            store4(ys + i, r);
        }
    } else {
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < per_sample; i += stride) {
            const int c = i % C;
            ys[i] = from_f32<T>(apply_c<EMB, SILU>(pre_add<PRE>(pre, to_f32(xs[i]), c), c, Cg, mean_n, rstd_n, gamma,
                                                   beta, scale_n, shift_n));
        }
    }
}

// A one-kernel forward's statistics: thread 0's merged group total (the values stats_kernel stores) into mean and
// rstd at blockIdx.x, and into the block's shared stats[2] for every thread to normalize with.
__device__ __forceinline__ void publish_stats(const Welford& w, float eps, float* mean, float* rstd, float* stats) {
    if (threadIdx.x == 0) {
        stats[0] = w.mean;
        stats[1] = rsqrtf(w.m2 / w.n + eps);
        mean[blockIdx.x] = stats[0];
        rstd[blockIdx.x] = stats[1];
    }
    __syncthreads();
}

// ---- forward in one kernel (version 6), for small tensors --------------------------------------------
// One block per (n, g): the statistics exactly as stats_kernel computes them, then the block normalizes its own
// group with apply_v. STATS4: stats_kernel's float4 loop (Cg % 4 == 0, x aligned), so the Welford order is its
// order; VEC4: also y aligned, so the normalize pass moves whole 4-vectors. Every thread normalizes with thread
// 0's statistics, broadcast through shared memory: the butterfly merge of block_welford leaves each thread a
// total that may differ from thread 0's in the last bit (the pairwise merge is not symmetric in floating point),
// and thread 0's is what stats_kernel stores.
template <bool EMB, bool SILU, bool STATS4, bool VEC4, bool PRE = false, typename T = float>
__global__ void fused_kernel(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                             const T* __restrict__ scale, const T* __restrict__ shift, T* __restrict__ y,
                             float* __restrict__ mean, float* __restrict__ rstd, int HW, int C, int G, float eps,
                             PreAdd<T> pre_all = {}) {
    await_predecessors();
    __shared__ Welford scratch[32];
    __shared__ float stats[2];
    const int n = blockIdx.x / G, g = blockIdx.x % G, Cg = C / G;
    const long long offset = (long long)n * HW * C + (long long)g * Cg;
    const T* base = x + offset;
    T* out = y + offset;
    const int cv = Cg / 4;
    const int c0 = g * Cg;
    const PreAdd<T> pre = pre_all.sample(n, C);
    publish_stats(block_welford(group_welford<STATS4, PRE>(base, HW, C, Cg, pre, c0), scratch), eps, mean, rstd,
                  stats);
    const float mu = stats[0], rs = stats[1];
    const T* scale_n = EMB ? scale + (long long)n * C : nullptr;
    const T* shift_n = EMB ? shift + (long long)n * C : nullptr;
    if (VEC4) {
        const int m = HW * cv;
        for (int i = threadIdx.x; i < m; i += blockDim.x) {
            const int p = i / cv;
            const int c = (i - p * cv) * 4;
            const float4 v = load4(base + (long long)p * C + c);
            float4 r;
            r.x = apply_v<EMB, SILU>(pre_add<PRE>(pre, v.x, c0 + c + 0), c0 + c + 0, mu, rs, gamma, beta, scale_n, shift_n);
            r.y = apply_v<EMB, SILU>(pre_add<PRE>(pre, v.y, c0 + c + 1), c0 + c + 1, mu, rs, gamma, beta, scale_n, shift_n);
            r.z = apply_v<EMB, SILU>(pre_add<PRE>(pre, v.z, c0 + c + 2), c0 + c + 2, mu, rs, gamma, beta, scale_n, shift_n);
            r.w = apply_v<EMB, SILU>(pre_add<PRE>(pre, v.w, c0 + c + 3), c0 + c + 3, mu, rs, gamma, beta, scale_n, shift_n);
            store4(out + (long long)p * C + c, r);
        }
    } else {
        const int m = HW * Cg;
        for (int i = threadIdx.x; i < m; i += blockDim.x) {
            const int p = i / Cg, c = i - p * Cg;
            const long long at = (long long)p * C + c;
            out[at] = from_f32<T>(apply_v<EMB, SILU>(pre_add<PRE>(pre, to_f32(base[at]), c0 + c), c0 + c, mu, rs, gamma,
                                                     beta, scale_n, shift_n));
        }
    }
}

// The slab kernel's pieces (the dev file's persistent slab kernel, versions 15-17, shares them). A thread holds ITERS
// 4-vectors of its quad q's four channels (c = c0 + 4q), pixels threadIdx.x / Q + i * rows; v[i] is zero past HW.

// The pre-add terms of this thread's four channels, read once (pre_add's arithmetic, element by element: the same
// values in the same order, so the same bits).
template <typename T>
struct QuadPreAdd {
    bool xb_on = false, add_on = false;
    float xb[4] = {0.f, 0.f, 0.f, 0.f}, ad[4] = {0.f, 0.f, 0.f, 0.f};

    __device__ __forceinline__ QuadPreAdd(const PreAdd<T>& p, int c) {
        xb_on = p.x_bias != nullptr, add_on = p.add != nullptr;
        for (int k = 0; k < 4; k++) {
            if (xb_on) xb[k] = to_f32(p.x_bias[c + k]);
            if (add_on) {
                ad[k] = to_f32(p.add[c + k]);
                if (p.add_bias) ad[k] += to_f32(p.add_bias[c + k]);
            }
        }
    }
    __device__ __forceinline__ float4 operator()(float4 r) const {
        float e[4] = {r.x, r.y, r.z, r.w};
        for (int k = 0; k < 4; k++) {
            if (xb_on) e[k] += xb[k];
            if (add_on) e[k] += ad[k];
        }
        return make_float4(e[0], e[1], e[2], e[3]);
    }
};

// The sum over the block of each quad's per-thread partials, then over the quads of each group, into group_stat[q]
// for every quad q of the group (ending at a barrier, so the caller may read it).
template <int Q>
__device__ __forceinline__ void slab_group_total(float t, float (&part)[32][Q], float (&group_stat)[Q],
                                                 int quads_per_group) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int o = Q; o < 32; o *= 2) t += __shfl_xor_sync(0xffffffffu, t, o);  // the lanes of the same quad
    if (lane < Q) part[warp][lane] = t;
    __syncthreads();
    if (threadIdx.x < Q) {
        float quad = 0.f;
        for (int w = 0; w < int(blockDim.x / 32); w++) quad += part[w][threadIdx.x];
        part[0][threadIdx.x] = quad;  // each reader's own slot: no other thread reads it before the barrier
    }
    __syncthreads();
    if (threadIdx.x < Q) {
        const int first = threadIdx.x / quads_per_group * quads_per_group;
        float g = 0.f;
        for (int j = 0; j < quads_per_group; j++) g += part[0][first + j];
        group_stat[threadIdx.x] = g;
    }
    __syncthreads();
}

// A slab's statistics from the registers, two exact passes (the group's mean, then its squared deviations: no
// Welford merge, no E[x^2] - E[x]^2 cancellation), and its normalization stored to y (sample base y_sample, this
// thread's channel c). Writes mean and rstd of the slab's groups (index n * G + g).
template <int ITERS, int Q, typename T>
__device__ __forceinline__ void slab_normalize(const float4 (&v)[ITERS], float (&part)[32][Q], float (&group_stat)[Q],
                                               const T* __restrict__ gamma, const T* __restrict__ beta,
                                               const T* __restrict__ scale, const T* __restrict__ shift,
                                               T* __restrict__ y_sample, float* __restrict__ mean,
                                               float* __restrict__ rstd, int n, int c0, int HW, int C, int G,
                                               float eps, bool silu) {
    const int q = threadIdx.x % Q, rows = blockDim.x / Q;
    const int Cg = C / G, quads_per_group = Cg / 4, c = c0 + 4 * q;
    const float count = float(HW) * float(Cg);
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < ITERS; i++) s += (v[i].x + v[i].y) + (v[i].z + v[i].w);
    slab_group_total<Q>(s, part, group_stat, quads_per_group);
    const float mu = group_stat[q] / count;
    __syncthreads();  // every thread has its mean before group_stat is reused
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < ITERS; i++) {
        if (int(threadIdx.x) / Q + i * rows < HW) {  // the padding holds zeros, not x - mu
            const float a = v[i].x - mu, b = v[i].y - mu, d = v[i].z - mu, e = v[i].w - mu;
            ss += (a * a + b * b) + (d * d + e * e);
        }
    }
    slab_group_total<Q>(ss, part, group_stat, quads_per_group);
    const float rs = rsqrtf(group_stat[q] / count + eps);
    if (threadIdx.x < Q && threadIdx.x % quads_per_group == 0) {
        const int g = (c0 + 4 * threadIdx.x) / Cg;
        mean[n * G + g] = mu;
        rstd[n * G + g] = rs;
    }
    // This thread's four channels' affine terms, once: apply_v's arithmetic with its flags read at run time.
    float ga[4], be[4], sc[4] = {0.f, 0.f, 0.f, 0.f}, sh[4] = {0.f, 0.f, 0.f, 0.f};
    for (int k = 0; k < 4; k++) {
        ga[k] = to_f32(gamma[c + k]), be[k] = to_f32(beta[c + k]);
        if (scale) sc[k] = to_f32(scale[(long long)n * C + c + k]), sh[k] = to_f32(shift[(long long)n * C + c + k]);
    }
    auto apply = [&](float xv, int k) {
        float u = (xv - mu) * rs * ga[k] + be[k];
        if (scale) u = u * (1.0f + sc[k]) + sh[k];
        if (silu) u = u * sigmoid(u);
        return u;
    };
#pragma unroll
    for (int i = 0; i < ITERS; i++) {
        const int p = threadIdx.x / Q + i * rows;
        if (p < HW) store4(y_sample + (long long)p * C + c,
                           make_float4(apply(v[i].x, 0), apply(v[i].y, 1), apply(v[i].z, 2), apply(v[i].w, 3)));
    }
}

// ---- forward in one kernel that reads x once (version 8 of dev/groupnorm_forward.cu), for large tensors -----
// The two-kernel path reads each group twice (statistics, then normalize), and its blocks of one (n, g) read 4 of a
// pixel's channels at Cg = 4: 16 bytes of each 32-byte sector, so half of what DRAM moves is wasted (the tenth
// session measured it at 36% of the H100's bandwidth, 64x32x32x128 fp32). Here a block takes one sample's slab of
// kSlab = 16 channels (64 bytes a pixel in fp32: whole sectors) over every pixel and keeps it in registers: ITERS
// 4-vectors a thread, the thread's four channels fixed (quad q = thread % 4), its pixels strided by blockDim / 4.
// The statistics are two exact passes over the registers (the group's mean, then its squared deviations: no
// Welford merge, no E[x^2] - E[x]^2 cancellation), each reduced per quad by warp shuffles over the pixel lanes and
// across warps through shared memory, then summed over the quads of a group. Normalization reads the registers, so
// x crosses the bus once and y once. The pre-add terms are added, as the other paths add them, once every load is
// in flight. Added as each vector arrived, with a branch on each term's pointer between one load and the next, they
// left ptxas no block to schedule the loads together in (the PTX shows it; there is no SASS disassembler here).
// Issuing the loads first took the kernel from 45.2 to 37.6 us at 64x32x32x128 fp32 (1.48 to 1.79 TB/s of the
// H100's 2.97), and fp16 from 42.4 to 31.7 us (seventeenth session).
// Needs Cg % 4 == 0 and kSlab % Cg == 0 (Cg 4, 8 or 16: the U-Net's 128 to 512 channels in 32 groups),
// C % kSlab == 0, x and y aligned for 4-vectors, and HW <= (blockDim / 4) * ITERS (at most 2048 pixels). Its sums
// run in another order than Welford's, so its bits differ from the other paths' in the last places: the CUDA backend
// runs it only where a timed choice found it faster and its result agreed (Device.groupNormKernel).
// The modulation (scale/shift non-null), SiLU and the pre-add terms are runtime flags here, uniform across the grid:
// the kernel is bound by memory, and one instance per (ITERS, T) instead of one per flag combination keeps nvcc's
// time for this file in check (the unrolled register arrays make each instance large).
template <int ITERS, typename T>
__global__ void slab_kernel(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                            const T* __restrict__ scale, const T* __restrict__ shift, T* __restrict__ y,
                            float* __restrict__ mean, float* __restrict__ rstd, int HW, int C, int G, float eps,
                            bool silu, PreAdd<T> pre_all) {
    await_predecessors();
    constexpr int Q = kSlab / 4;     // quads per pixel of the slab
    __shared__ float part[32][Q];    // per warp, per quad
    __shared__ float group_stat[Q];  // per quad: its group's sum
    const int slabs = C / kSlab, n = blockIdx.x / slabs, c0 = (blockIdx.x - n * slabs) * kSlab;
    const int q = threadIdx.x % Q, rows = blockDim.x / Q, c = c0 + 4 * q;
    const long long offset = (long long)n * HW * C + c;

    // Every load is issued before the first use of any: the pre-add terms are added in a second loop, since adding
    // them as each vector arrives made each load wait for the one before it (one memory latency a 4-vector).
    float4 v[ITERS];
#pragma unroll
    for (int i = 0; i < ITERS; i++) {
        const int p = threadIdx.x / Q + i * rows;
        v[i] = p < HW ? load4(x + offset + (long long)p * C) : make_float4(0.f, 0.f, 0.f, 0.f);  // padding adds 0
    }
    const PreAdd<T> pre = pre_all.sample(n, C);
    if (pre.x_bias || pre.add) {
        const QuadPreAdd<T> terms(pre, c);
#pragma unroll
        for (int i = 0; i < ITERS; i++)
            if (int(threadIdx.x) / Q + i * rows < HW) v[i] = terms(v[i]);
    }
    slab_normalize<ITERS, Q, T>(v, part, group_stat, gamma, beta, scale, shift, y + (long long)n * HW * C, mean, rstd,
                                n, c0, HW, C, G, eps, silu);
}

// The sources of a channel concatenation [a + a_bias, b + b_bias] (onestep_groupnorm_concat_typed's, below; the
// cluster kernel reads them too).
template <typename T>
struct ConcatSrc {
    const T* a;       // (N*HW, Ca)
    const T* a_bias;  // (Ca) or null
    const T* b;       // (N*HW, Cb)
    const T* b_bias;  // (Cb) or null
    int Ca, Cb;

    // Channel c of the concatenation at pixel p (counted over the whole batch), as concat_biased_kernel stores it.
    __device__ __forceinline__ T at(long long p, int c) const {
        if (c < Ca) {
            const T v = a[p * Ca + c];
            return a_bias ? from_f32<T>(to_f32(v) + to_f32(a_bias[c])) : v;
        }
        c -= Ca;
        const T v = b[p * Cb + c];
        return b_bias ? from_f32<T>(to_f32(v) + to_f32(b_bias[c])) : v;
    }
};

// ---- the cluster kernel (versions 12-14 of the dev file): one group over a thread block cluster, x read once ------
// At batch 1 the U-Net's group norms have N*G = 32 groups, so the one-kernel path (version 6) runs 32 blocks on 132
// SMs, each streaming its group twice; the tenth session's profile timed them at ~7 us each, 51 of them per CIFAR
// sample. Here a group is split over a cluster of CS blocks (sm_90 thread block clusters, CS up to 8): block `rank`
// holds a contiguous 1/CS of the group's 4-vectors (one pixel's 4 channels of the group each) in registers, and the
// group's two sums meet in distributed shared memory: each block's total goes to its own shared memory, a cluster
// barrier, then every block adds the CS totals in rank order (so all get the same mean and rstd). As in the slab
// kernel, the statistics are two exact passes (the sum, then the sum of squared deviations from the mean) over the
// registers, so x crosses the bus once and y once. A last cluster barrier keeps each block's shared memory alive until
// its peers have read it. Needs Cg % 4 == 0 and x, y aligned for 4-vectors; its sums run in another order than
// Welford's, so the CUDA backend runs it only where a timed choice found it faster and its result agreed.
// Flags at run time as in the slab kernel (one instance per (ITERS, T, CONCAT)).
// CONCAT: the values normalized are the concatenation [a + a_bias, b + b_bias] of src (onestep_groupnorm_concat_typed),
// each rounded to T as concat_biased_kernel stores it, and the kernel writes that concatenation to cat as well (x,
// pre_all, scale and shift unused); it needs Ca and Cb multiples of 4, so a 4-vector lies in a or in b.
template <int ITERS, typename T, bool CONCAT = false>
__global__ void __launch_bounds__(cluster_max_block(ITERS), 1)
    cluster_kernel(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                   const T* __restrict__ scale, const T* __restrict__ shift, T* __restrict__ y,
                   float* __restrict__ mean, float* __restrict__ rstd, int HW, int C, int G, float eps, bool silu,
                   int cs, PreAdd<T> pre_all, ConcatSrc<T> src, T* __restrict__ cat) {
    await_predecessors();
    ONESTEP_DYNAMIC_SHARED(float, totals);  // [0]: this block's sum, [1]: its squared deviations (the peers read both)
    __shared__ float warp_part[32];
    __shared__ float stat[2];  // the group's two totals (sum, squared deviations), for this block's threads
    const unsigned rank = cluster_rank();
    const int group = blockIdx.x / cs, n = group / G, g = group - n * G, Cg = C / G, qg = Cg / 4;
    const int quads = HW * qg, per = (quads + cs - 1) / cs, first = int(rank) * per;
    const int end = first + per < quads ? first + per : quads;
    const long long base = (long long)n * HW * C + (long long)g * Cg;
    const float count = float(HW) * float(Cg);
    const PreAdd<T> pre = pre_all.sample(n, C);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;

    float4 v[ITERS];
#pragma unroll
    for (int i = 0; i < ITERS; i++) {
        const int j = first + int(threadIdx.x) + i * int(blockDim.x);
        v[i] = make_float4(0.f, 0.f, 0.f, 0.f);  // past this block's share: zeros, which add nothing to the sum
        if (j < end) {
            const int p = j / qg, c = g * Cg + 4 * (j - p * qg);
            if constexpr (CONCAT) {
                const long long pix = (long long)n * HW + p;
                const bool in_a = c < src.Ca;
                const T* bias = in_a ? src.a_bias : src.b_bias;
                const int cc = in_a ? c : c - src.Ca;
                float4 r = load4(in_a ? src.a + pix * src.Ca + cc : src.b + pix * src.Cb + cc);
                if (bias)  // added in fp32 and rounded once to T, as concat_biased_kernel stores the value
                    r = make_float4(to_f32(from_f32<T>(r.x + to_f32(bias[cc + 0]))),
                                    to_f32(from_f32<T>(r.y + to_f32(bias[cc + 1]))),
                                    to_f32(from_f32<T>(r.z + to_f32(bias[cc + 2]))),
                                    to_f32(from_f32<T>(r.w + to_f32(bias[cc + 3]))));
                store4(cat + base + (long long)p * C + 4 * (j - p * qg), r);
                v[i] = r;
            } else {
                const float4 r = load4(x + base + (long long)p * C + 4 * (j - p * qg));
                v[i] = make_float4(pre_add<true>(pre, r.x, c + 0), pre_add<true>(pre, r.y, c + 1),
                                   pre_add<true>(pre, r.z, c + 2), pre_add<true>(pre, r.w, c + 3));
            }
        }
    }
    // The group's total of t: the block's (warps, then the warp totals in order, into totals[k]), then the cluster's
    // (every block sums the CS block totals in rank order). Ends at a barrier, with the total in stat[k].
    auto group_total = [&](float t, int k) {
        for (int o = 16; o > 0; o /= 2) t += __shfl_xor_sync(0xffffffffu, t, o);
        if (lane == 0) warp_part[warp] = t;
        __syncthreads();
        if (threadIdx.x == 0) {
            float b = 0.f;
            for (int w = 0; w < warps; w++) b += warp_part[w];
            totals[k] = b;
        }
        cluster_sync();  // every block's totals[k] is written (and warp_part read)
        if (threadIdx.x == 0) {
            float sum = 0.f;
            for (int r = 0; r < cs; r++) sum += cluster_map(totals, unsigned(r))[k];
            stat[k] = sum;
        }
        __syncthreads();
    };
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < ITERS; i++) s += (v[i].x + v[i].y) + (v[i].z + v[i].w);
    group_total(s, 0);
    const float mu = stat[0] / count;
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < ITERS; i++) {
        if (first + int(threadIdx.x) + i * int(blockDim.x) < end) {  // the padding holds zeros, not x - mu
            const float a = v[i].x - mu, b = v[i].y - mu, d = v[i].z - mu, e = v[i].w - mu;
            ss += (a * a + b * b) + (d * d + e * e);
        }
    }
    group_total(ss, 1);
    const float rs = rsqrtf(stat[1] / count + eps);
    if (rank == 0 && threadIdx.x == 0) mean[n * G + g] = mu, rstd[n * G + g] = rs;
#pragma unroll
    for (int i = 0; i < ITERS; i++) {
        const int j = first + int(threadIdx.x) + i * int(blockDim.x);
        if (j >= end) continue;
        const int p = j / qg, c = g * Cg + 4 * (j - p * qg);
        float o[4] = {v[i].x, v[i].y, v[i].z, v[i].w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float u = (o[k] - mu) * rs * to_f32(gamma[c + k]) + to_f32(beta[c + k]);
            if (scale) u = u * (1.0f + to_f32(scale[(long long)n * C + c + k])) + to_f32(shift[(long long)n * C + c + k]);
            if (silu) u = u * sigmoid(u);
            o[k] = u;
        }
        store4(y + base + (long long)p * C + 4 * (j - p * qg), make_float4(o[0], o[1], o[2], o[3]));
    }
    cluster_sync();  // the peers have read this block's totals: its shared memory may go
}

// The cluster kernel's launch shape for a tensor: blocks per group (cs: 1, 2, 4 or 8), threads a block and 4-vectors
// a thread (iters); false where it has no instance (Cg % 4 != 0, or more than 4096 4-vectors a block: 1024 threads
// hold at most 4 each, cluster_max_block).
bool cluster_shape(int N, int HW, int C, int G, int& cs, int& block, int& iters) {
    const int Cg = C / G;
    if (Cg % 4 != 0) return false;
    const long long quads = (long long)HW * (Cg / 4);
    // Enough blocks to fill an H100's 132 SMs, each with at least 64 4-vectors (below that a block is mostly its
    // barriers).
    cs = 1;
    while (cs < 8 && (long long)N * G * cs < 128 && quads / (2 * cs) >= 64) cs *= 2;
    const long long per = (quads + cs - 1) / cs;
    if (per <= 256) {  // one 4-vector a thread
        block = int((per + 31) / 32 * 32), iters = 1;
        return true;
    }
    for (block = 256; block <= 1024; block *= 4) {  // 256 threads with up to 8 4-vectors each, then 1024 with up to 4
        iters = 1;
        while ((long long)iters * block < per) iters *= 2;
        if (iters <= 8 && block <= cluster_max_block(iters)) return true;
    }
    return false;
}

int slab_iters(int HW, int C, int G, int block) {
    const int Cg = C / G, rows = block / (kSlab / 4);
    if (Cg % 4 != 0 || kSlab % Cg != 0 || C % kSlab != 0 || block % 32 != 0 || block < 32 || block > 1024) return 0;
    // ITERS 4-vectors are 4 * ITERS registers a thread, plus up to 64 (ptxas, sm_90a: 32 at ITERS 1, 60 at 4, 126
    // at 16); a block must stay within the SM's 64K registers, or the launch fails (a device that needs more refuses
    // the launch, and the backend's timed choice then keeps the default). ITERS stops at 16: 32 would allow 2048
    // pixels at 256 threads, which 512 threads at 16 already do, for an instance twice as large to compile.
    for (int it = 1; it <= 16; it *= 2)
        if (HW <= rows * it && (4 * it + 64) * block <= 65536) return it;
    return 0;
}

int slab_block(int HW, int C, int G) {
    for (int block = 256; block <= 1024; block *= 2)
        if (slab_iters(HW, C, G, block) > 0) return block;
    return 256;
}

int production_stats_block(int N, int HW, int C, int G) {
    if ((long long)N * HW * C > kFusedMaxElems) return kStatsBlock;
    const long long per_group = (long long)HW * (C / G);
    int block = kStatsBlock;
    while (block < 1024 && 4LL * block < per_group) block *= 2;
    return block;
}

// Aligned for a 4-element vector of T (16 bytes for float, 8 for the 16-bit types).
template <typename T>
static bool aligned4(const T* p) { return p == nullptr || (reinterpret_cast<uintptr_t>(p) & (4 * sizeof(T) - 1)) == 0; }

static unsigned grid_for(long long work, int block) {
    // Enough blocks to fill any current GPU several times over; the grid-stride loop covers the rest.
    const long long blocks = (work + block - 1) / block;
    return unsigned(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

template <bool EMB, bool SILU, bool PRE, typename T>
static cudaError_t launch_apply(const T* x, const float* mean, const float* rstd, const T* gamma, const T* beta,
                                const T* scale, const T* shift, T* y, int N, int HW, int C, int G, int block,
                                PreAdd<T> pre, cudaStream_t stream) {
    const long long per_sample = (long long)HW * C;
    // (the pre-add vectors are read per element: the float4 path needs only x and y aligned)
    const bool vec4 = C % 4 == 0 && aligned4(x) && aligned4(y);
    const dim3 grid(grid_for(vec4 ? per_sample / 4 : per_sample, block), unsigned(N));
    if (vec4)
        return launch_dependent(apply_kernel<EMB, SILU, true, PRE, T>, grid, dim3(block), 0, stream, x, mean, rstd, gamma, beta,
                                scale, shift, y, HW, C, G, pre);
    return launch_dependent(apply_kernel<EMB, SILU, false, PRE, T>, grid, dim3(block), 0, stream, x, mean, rstd, gamma, beta,
                            scale, shift, y, HW, C, G, pre);
}

template <bool EMB, bool SILU, bool PRE, typename T>
static cudaError_t launch_fused(const T* x, const T* gamma, const T* beta, const T* scale, const T* shift, T* y,
                                float* mean, float* rstd, int N, int HW, int C, int G, float eps, int block,
                                PreAdd<T> pre, cudaStream_t stream) {
    const bool stats4 = (C / G) % 4 == 0 && aligned4(x);  // as launch_forward_t chooses stats_kernel's loop
    if (stats4 && aligned4(y))
        return launch_dependent(fused_kernel<EMB, SILU, true, true, PRE, T>, dim3(N * G), dim3(block), 0, stream, x, gamma,
                                beta, scale, shift, y, mean, rstd, HW, C, G, eps, pre);
    if (stats4)
        return launch_dependent(fused_kernel<EMB, SILU, true, false, PRE, T>, dim3(N * G), dim3(block), 0, stream, x, gamma,
                                beta, scale, shift, y, mean, rstd, HW, C, G, eps, pre);
    return launch_dependent(fused_kernel<EMB, SILU, false, false, PRE, T>, dim3(N * G), dim3(block), 0, stream, x, gamma, beta,
                            scale, shift, y, mean, rstd, HW, C, G, eps, pre);
}

// The slab kernel where its conditions hold (slab_iters > 0, x and y aligned), else cudaErrorNotSupported. block 0: the smallest of
// 256, 512 and 1024 threads whose ITERS holds the sample within the register budget.
template <typename T>
static cudaError_t launch_slab(const T* x, const T* gamma, const T* beta, const T* scale, const T* shift, T* y,
                               float* mean, float* rstd, int N, int HW, int C, int G, float eps, bool silu, int block,
                               PreAdd<T> pre, cudaStream_t stream) {
    if (!aligned4(x) || !aligned4(y)) return cudaErrorNotSupported;
    const int b = block > 0 ? block : slab_block(HW, C, G);
    const int iters = slab_iters(HW, C, G, b);
    if (iters == 0) return cudaErrorNotSupported;
    const dim3 grid(unsigned(N * (C / kSlab)));
#define ONESTEP_SLAB(IT)                                                                                            \
    if (iters == IT)                                                                                                \
        return launch_dependent(slab_kernel<IT, T>, grid, dim3(b), 0, stream, x, gamma, beta, scale, shift, y, mean, \
                                rstd, HW, C, G, eps, silu, pre);
    ONESTEP_SLAB(1) ONESTEP_SLAB(2) ONESTEP_SLAB(4) ONESTEP_SLAB(8) ONESTEP_SLAB(16)
#undef ONESTEP_SLAB
    return cudaErrorNotSupported;
}

// The cluster kernel where its conditions hold (cluster_shape, x and y aligned), else cudaErrorNotSupported. With a
// concatenation (cat non-null): src's a and b instead of x and the pre-add terms, Ca and Cb multiples of 4, a, b and
// cat aligned too.
template <typename T>
static cudaError_t launch_cluster_gn(const T* x, const T* gamma, const T* beta, const T* scale, const T* shift, T* y,
                                     float* mean, float* rstd, int N, int HW, int C, int G, float eps, bool silu,
                                     PreAdd<T> pre, cudaStream_t stream, ConcatSrc<T> src = {}, T* cat = nullptr) {
    int cs = 0, block = 0, iters = 0;
    if (!aligned4(y) || !cluster_shape(N, HW, C, G, cs, block, iters)) return cudaErrorNotSupported;
    if (cat ? (src.Ca % 4 != 0 || src.Cb % 4 != 0 || !aligned4(src.a) || !aligned4(src.b) || !aligned4(cat))
            : !aligned4(x))
        return cudaErrorNotSupported;
    const dim3 grid(unsigned(N * G * cs));
#define ONESTEP_CLUSTER_GN(IT)                                                                                    \
    if (iters == IT)                                                                                              \
        return launch_cluster(cat ? cluster_kernel<IT, T, true> : cluster_kernel<IT, T, false>, grid, dim3(block), \
                              unsigned(cs), 2 * sizeof(float), stream, x, gamma, beta, scale, shift, y, mean, rstd, \
                              HW, C, G, eps, silu, cs, pre, src, cat);
    ONESTEP_CLUSTER_GN(1) ONESTEP_CLUSTER_GN(2) ONESTEP_CLUSTER_GN(4) ONESTEP_CLUSTER_GN(8)
#undef ONESTEP_CLUSTER_GN
    return cudaErrorNotSupported;
}

// One variant's launch: version 6 (one kernel) up to kFusedMaxElems values (fused = -1), else version 3; fused = 2:
// the slab kernel (version 8; stats_block is its block, 0 to pick), which may answer cudaErrorNotSupported; fused = 3:
// the cluster kernel (versions 12-14), likewise.
template <bool EMB, bool SILU, bool PRE, typename T>
static cudaError_t launch_variant(const T* x, const T* gamma, const T* beta, const T* scale, const T* shift, T* y,
                                  float* mean, float* rstd, int N, int HW, int C, int G, float eps, int stats_block,
                                  int apply_block, PreAdd<T> pre, cudaStream_t stream, int fused) {
    if (fused == 2)
        return launch_slab<T>(x, gamma, beta, EMB ? scale : nullptr, EMB ? shift : nullptr, y, mean, rstd, N, HW, C,
                              G, eps, SILU, stats_block, PRE ? pre : PreAdd<T>{}, stream);
    if (fused == 3)
        return launch_cluster_gn<T>(x, gamma, beta, EMB ? scale : nullptr, EMB ? shift : nullptr, y, mean, rstd, N, HW,
                                    C, G, eps, SILU, PRE ? pre : PreAdd<T>{}, stream);
    if (fused > 0 || (fused < 0 && (long long)N * HW * C <= kFusedMaxElems))
        // The block size of the statistics, so they are the two-kernel path's bits.
        return launch_fused<EMB, SILU, PRE>(x, gamma, beta, scale, shift, y, mean, rstd, N, HW, C, G, eps,
                                            stats_block, pre, stream);
    const bool vec4 = (C / G) % 4 == 0 && aligned4(x);
    cudaError_t e = vec4 ? launch_dependent(stats_kernel<true, PRE, T>, dim3(N * G), dim3(stats_block), 0, stream, x, mean,
                                            rstd, HW, C, G, eps, pre)
                         : launch_dependent(stats_kernel<false, PRE, T>, dim3(N * G), dim3(stats_block), 0, stream, x, mean,
                                            rstd, HW, C, G, eps, pre);
    if (e != cudaSuccess) return e;
    return launch_apply<EMB, SILU, PRE>(x, mean, rstd, gamma, beta, scale, shift, y, N, HW, C, G, apply_block, pre,
                                        stream);
}

// pre: x_bias, add, add_bias (any may be null; all null is the plain group norm, which compiles without them).
template <typename T>
cudaError_t launch_forward_t(const T* x, const T* gamma, const T* beta, const T* scale, const T* shift, T* y,
                             float* mean, float* rstd, int N, int HW, int C, int G, float eps, bool silu,
                             int stats_block, int apply_block, cudaStream_t stream, int fused = -1,
                             PreAdd<T> pre = {}) {
    const bool emb = scale != nullptr;
    const bool pa = pre.x_bias || pre.add;
#define ONESTEP_GN_VARIANT(E, S, P)                                                                              \
    return launch_variant<E, S, P>(x, gamma, beta, scale, shift, y, mean, rstd, N, HW, C, G, eps, stats_block, \
                                   apply_block, pre, stream, fused)
    if (pa) {
        if (emb && silu) ONESTEP_GN_VARIANT(true, true, true);
        if (emb) ONESTEP_GN_VARIANT(true, false, true);
        if (silu) ONESTEP_GN_VARIANT(false, true, true);
        ONESTEP_GN_VARIANT(false, false, true);
    }
    if (emb && silu) ONESTEP_GN_VARIANT(true, true, false);
    if (emb) ONESTEP_GN_VARIANT(true, false, false);
    if (silu) ONESTEP_GN_VARIANT(false, true, false);
    ONESTEP_GN_VARIANT(false, false, false);
#undef ONESTEP_GN_VARIANT
}

cudaError_t launch_forward(const float* x, const float* gamma, const float* beta, const float* scale,
                           const float* shift, float* y, float* mean, float* rstd, int N, int HW, int C, int G,
                           float eps, bool silu, int stats_block, int apply_block, cudaStream_t stream, int fused) {
    return launch_forward_t<float>(x, gamma, beta, scale, shift, y, mean, rstd, N, HW, C, G, eps, silu, stats_block,
                                   apply_block, stream, fused);
}

// ---- forward of a channel concatenation (onestep_groupnorm_concat_typed) -----------------------------
// Each up block of the U-Net normalizes cat(h, skip) along channels (diffusers' UpBlock2D: torch.cat, then
// ResnetBlock2D.norm1 + SiLU) and keeps the concatenation for its 1x1 conv_shortcut. These kernels read h and skip
// and write both the concatenation and its norm: the concat's own launch (a graph node per up-block resnet, 12 in
// the CIFAR config) is gone, and so is one read of the concatenation.
// Bits: a value of the concatenation is what concat_biased_kernel stores (a pending producer bias added in fp32
// and rounded once to T), and the statistics and the normalization read that stored value, in group_welford's
// order and with apply_v, so cat, y, mean and rstd are exactly those of the concat followed by the group norm.

// This thread's Welford accumulator over one group of one sample in group_welford's order: ORDER4 is its float4
// loop (4 consecutive channels per step), taken where the group norm of the stored concatenation would take it.
// p0: the sample's first pixel; c0: the group's first channel.
template <bool ORDER4, typename T>
__device__ __forceinline__ Welford concat_welford(const ConcatSrc<T>& s, long long p0, int HW, int Cg, int c0) {
    constexpr int k = ORDER4 ? 4 : 1;
    Welford w{0.0f, 0.0f, 0.0f};
    const int cv = Cg / k, m = HW * cv;
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const int p = i / cv, c = c0 + (i - p * cv) * k;
        for (int j = 0; j < k; j++) welford_add(w, to_f32(s.at(p0 + p, c + j)));
    }
    return w;
}

// One block per (n, g): statistics, then the block writes its group of cat and y (fused_kernel's structure).
template <bool SILU, bool ORDER4, typename T>
__global__ void concat_fused_kernel(ConcatSrc<T> s, const T* __restrict__ gamma, const T* __restrict__ beta,
                                    T* __restrict__ cat, T* __restrict__ y, float* __restrict__ mean,
                                    float* __restrict__ rstd, int HW, int G, float eps) {
    await_predecessors();
    __shared__ Welford scratch[32];
    __shared__ float stats[2];
    const int C = s.Ca + s.Cb, n = blockIdx.x / G, g = blockIdx.x % G, Cg = C / G, c0 = g * Cg;
    const long long p0 = (long long)n * HW;
    publish_stats(block_welford(concat_welford<ORDER4>(s, p0, HW, Cg, c0), scratch), eps, mean, rstd, stats);
    const float mu = stats[0], rs = stats[1];
    const int m = HW * Cg;
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const int p = i / Cg, c = c0 + i - p * Cg;
        const T v = s.at(p0 + p, c);
        const long long at = (p0 + p) * C + c;
        cat[at] = v;
        y[at] = from_f32<T>(apply_v<false, SILU, T>(to_f32(v), c, mu, rs, gamma, beta, nullptr, nullptr));
    }
}

// Large tensors: stats_kernel's and apply_kernel's structure (one block per (n, g), then a grid-stride pass with
// grid.y = sample).
template <bool ORDER4, typename T>
__global__ void concat_stats_kernel(ConcatSrc<T> s, float* __restrict__ mean, float* __restrict__ rstd, int HW,
                                    int G, float eps) {
    await_predecessors();
    __shared__ Welford scratch[32];
    const int C = s.Ca + s.Cb, n = blockIdx.x / G, g = blockIdx.x % G, Cg = C / G;
    const Welford w = block_welford(concat_welford<ORDER4>(s, (long long)n * HW, HW, Cg, g * Cg), scratch);
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = w.mean;
        rstd[blockIdx.x] = rsqrtf(w.m2 / w.n + eps);
    }
}

template <bool SILU, typename T>
__global__ void concat_apply_kernel(ConcatSrc<T> s, const float* __restrict__ mean, const float* __restrict__ rstd,
                                    const T* __restrict__ gamma, const T* __restrict__ beta, T* __restrict__ cat,
                                    T* __restrict__ y, int HW, int G) {
    await_predecessors();
    const int n = blockIdx.y, C = s.Ca + s.Cb, Cg = C / G;
    const int per_sample = HW * C;
    const long long p0 = (long long)n * HW;
    const float* mean_n = mean + n * G;
    const float* rstd_n = rstd + n * G;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < per_sample; i += gridDim.x * blockDim.x) {
        const int p = i / C, c = i - p * C;
        const T v = s.at(p0 + p, c);
        const long long at = (long long)n * per_sample + i;
        cat[at] = v;
        y[at] = from_f32<T>(apply_c<false, SILU, T>(to_f32(v), c, Cg, mean_n, rstd_n, gamma, beta, nullptr, nullptr));
    }
}

// The one-kernel path up to kFusedMaxElems values, as launch_variant chooses for the plain group norm; the
// Welford order is the one the group norm of cat would take (launch_variant: Cg % 4 == 0 and cat aligned).
template <bool SILU, typename T>
static cudaError_t launch_concat_silu(ConcatSrc<T> s, const T* gamma, const T* beta, T* cat, T* y, float* mean,
                                      float* rstd, int N, int HW, int G, float eps, int block, cudaStream_t stream) {
    const int C = s.Ca + s.Cb;
    const bool order4 = (C / G) % 4 == 0 && aligned4(cat);
    if ((long long)N * HW * C <= kFusedMaxElems) {
        if (order4)
            return launch_dependent(concat_fused_kernel<SILU, true, T>, dim3(N * G), dim3(block), 0, stream, s, gamma, beta, cat,
                                    y, mean, rstd, HW, G, eps);
        return launch_dependent(concat_fused_kernel<SILU, false, T>, dim3(N * G), dim3(block), 0, stream, s, gamma, beta, cat, y,
                                mean, rstd, HW, G, eps);
    }
    cudaError_t e = order4 ? launch_dependent(concat_stats_kernel<true, T>, dim3(N * G), dim3(block), 0, stream, s, mean, rstd,
                                              HW, G, eps)
                           : launch_dependent(concat_stats_kernel<false, T>, dim3(N * G), dim3(block), 0, stream, s, mean, rstd,
                                              HW, G, eps);
    if (e != cudaSuccess) return e;
    const dim3 grid(grid_for((long long)HW * C, kApplyBlock), unsigned(N));
    return launch_dependent(concat_apply_kernel<SILU, T>, grid, dim3(kApplyBlock), 0, stream, s, mean, rstd, gamma, beta, cat, y,
                            HW, G);
}

// kernel 2: the cluster kernel on the concatenation (cudaErrorNotSupported outside its conditions); else the
// default.
template <typename T>
cudaError_t launch_concat_t(ConcatSrc<T> s, const T* gamma, const T* beta, T* cat, T* y, float* mean, float* rstd,
                            int N, int HW, int G, float eps, bool silu, cudaStream_t stream, int kernel = 0) {
    if (kernel == 2)
        return launch_cluster_gn<T>(nullptr, gamma, beta, nullptr, nullptr, y, mean, rstd, N, HW, s.Ca + s.Cb, G, eps,
                                    silu, PreAdd<T>{}, stream, s, cat);
    // The plain group norm's block for this shape, so the Welford order (and the bits) are its.
    const int block = production_stats_block(N, HW, s.Ca + s.Cb, G);
    if (silu) return launch_concat_silu<true>(s, gamma, beta, cat, y, mean, rstd, N, HW, G, eps, block, stream);
    return launch_concat_silu<false>(s, gamma, beta, cat, y, mean, rstd, N, HW, G, eps, block, stream);
}

// ---- backward ----------------------------------------------------------------------------------------
constexpr int kBackwardMaxBlock = 1024;

// Recomputes the forward's intermediates for one element and returns dyp (gradient of yp = xhat*gamma+beta)
// and du (gradient of u, the pre-activation).
template <bool EMB, bool SILU>
__device__ __forceinline__ void backward_one(float dy, float xhat, float gm, float bt, float s, float sh, float& du,
                                             float& dyp, float& yp) {
    yp = xhat * gm + bt;
    du = dy;
    if (SILU) {
        const float u = EMB ? yp * (1.0f + s) + sh : yp;
        const float sg = sigmoid(u);
        du = dy * sg * (1.0f + u * (1.0f - sg));
    }
    dyp = EMB ? du * (1.0f + s) : du;
}

template <bool EMB, bool SILU>
__global__ void backward_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                const float* __restrict__ mean, const float* __restrict__ rstd,
                                const float* __restrict__ gamma, const float* __restrict__ beta,
                                const float* __restrict__ scale, const float* __restrict__ shift,
                                float* __restrict__ dx, float* __restrict__ dgamma, float* __restrict__ dbeta,
                                float* __restrict__ dscale, float* __restrict__ dshift, int HW, int C, int G) {
    await_predecessors();
    __shared__ float part[4][kBackwardMaxBlock];
    __shared__ float scratch[32];
    const int n = blockIdx.x / G, g = blockIdx.x % G, Cg = C / G;
    const int bx = Cg < 32 ? Cg : 32;  // threads across channels: coalesced when the group is wide
    const int rows = blockDim.x / bx;  // threads across pixels
    const int tx = threadIdx.x % bx, ty = threadIdx.x / bx;
    const bool row_active = ty < rows;
    const long long base = (long long)n * HW * C + (long long)g * Cg;
    const float mu = mean[blockIdx.x], rs = rstd[blockIdx.x];

    float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
    for (int c0 = 0; c0 < Cg; c0 += bx) {
        const int c = c0 + tx;
        const int cc = g * Cg + c;
        float a_dshift = 0.0f, a_dscale = 0.0f, a_dbeta = 0.0f, a_dgamma = 0.0f;
        if (row_active && c < Cg) {
            const float gm = gamma[cc], bt = beta[cc];
            const float s = EMB ? scale[(long long)n * C + cc] : 0.0f;
            const float sh = EMB ? shift[(long long)n * C + cc] : 0.0f;
            for (int p = ty; p < HW; p += rows) {
                const long long i = base + (long long)p * C + c;
                const float xhat = (x[i] - mu) * rs;
                float du, dyp, yp;
                backward_one<EMB, SILU>(dy[i], xhat, gm, bt, s, sh, du, dyp, yp);
                a_dshift += du;
                a_dscale += du * yp;
                a_dbeta += dyp;
                a_dgamma += dyp * xhat;
                const float dxhat = dyp * gm;
                sum_dxhat += dxhat;
                sum_dxhat_xhat += dxhat * xhat;
            }
        }
        __syncthreads();  // the previous chunk's readers are done with part[]
        part[0][threadIdx.x] = a_dshift;
        part[1][threadIdx.x] = a_dscale;
        part[2][threadIdx.x] = a_dbeta;
        part[3][threadIdx.x] = a_dgamma;
        __syncthreads();
        if (ty == 0 && c < Cg) {
            float r0 = 0.0f, r1 = 0.0f, r2 = 0.0f, r3 = 0.0f;
            for (int r = 0; r < rows; r++) {
                r0 += part[0][r * bx + tx];
                r1 += part[1][r * bx + tx];
                r2 += part[2][r * bx + tx];
                r3 += part[3][r * bx + tx];
            }
            if (EMB) {
                dshift[(long long)n * C + cc] = r0;
                dscale[(long long)n * C + cc] = r1;
            }
            atomicAdd(dbeta + cc, r2);
            atomicAdd(dgamma + cc, r3);
        }
    }
    const float inv_m = 1.0f / ((float)HW * (float)Cg);
    const float mean_dxhat = block_sum(sum_dxhat, scratch) * inv_m;
    const float mean_dxhat_xhat = block_sum(sum_dxhat_xhat, scratch) * inv_m;

    for (int c0 = 0; c0 < Cg; c0 += bx) {
        const int c = c0 + tx;
        if (!row_active || c >= Cg) continue;
        const int cc = g * Cg + c;
        const float gm = gamma[cc], bt = beta[cc];
        const float s = EMB ? scale[(long long)n * C + cc] : 0.0f;
        const float sh = EMB ? shift[(long long)n * C + cc] : 0.0f;
        for (int p = ty; p < HW; p += rows) {
            const long long i = base + (long long)p * C + c;
            const float xhat = (x[i] - mu) * rs;
            float du, dyp, yp;
            backward_one<EMB, SILU>(dy[i], xhat, gm, bt, s, sh, du, dyp, yp);
            dx[i] = rs * (dyp * gm - mean_dxhat - xhat * mean_dxhat_xhat);
        }
    }
}

cudaError_t launch_backward(const float* dy, const float* x, const float* mean, const float* rstd,
                            const float* gamma, const float* beta, const float* scale, const float* shift, float* dx,
                            float* dgamma, float* dbeta, float* dscale, float* dshift, int N, int HW, int C, int G,
                            bool silu, int block, cudaStream_t stream) {
    const dim3 grid(N * G), threads(block);
    const bool emb = scale != nullptr;
    if (emb && silu)
        return launch_dependent(backward_kernel<true, true>, grid, threads, 0, stream, dy, x, mean, rstd, gamma, beta, scale,
                                shift, dx, dgamma, dbeta, dscale, dshift, HW, C, G);
    if (emb)
        return launch_dependent(backward_kernel<true, false>, grid, threads, 0, stream, dy, x, mean, rstd, gamma, beta, scale,
                                shift, dx, dgamma, dbeta, dscale, dshift, HW, C, G);
    if (silu)
        return launch_dependent(backward_kernel<false, true>, grid, threads, 0, stream, dy, x, mean, rstd, gamma, beta, scale,
                                shift, dx, dgamma, dbeta, dscale, dshift, HW, C, G);
    return launch_dependent(backward_kernel<false, false>, grid, threads, 0, stream, dy, x, mean, rstd, gamma, beta, scale,
                            shift, dx, dgamma, dbeta, dscale, dshift, HW, C, G);
}

// Common shape checks of forward and backward; returns ONESTEP_OK or records the error.
static onestep_status check_shape(const char* fn, const char* shapes, int N, int HW, int C, int G) {
    if (N <= 0 || HW <= 0 || C <= 0 || G <= 0)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "every dimension must be positive");
    if (C % G != 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "C must be a multiple of G");
    if ((long long)N * G > 0x7fffffffLL || N > 65535)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "N * G or N exceeds the grid limits");
    if ((long long)HW * C > (1LL << 30))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "HW * C exceeds 2^30 (32-bit indexing within a sample)");
    return ONESTEP_OK;
}

}  // namespace groupnorm
}  // namespace onestep

using namespace onestep;

// The cluster kernel's conditions, said by name (its launcher answers cudaErrorNotSupported past them, without saying
// why): a launch shape for the tensor, the given tensors aligned to 4 elements, compute capability 9.0.
static onestep_status check_cluster(const char* fn, const char* shapes, int N, int HW, int C, int G,
                                    onestep_dtype dtype, std::initializer_list<const void*> aligned) {
    int cs, block, iters;
    if (!groupnorm::cluster_shape(N, HW, C, G, cs, block, iters))
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                    "the cluster kernel needs C/G a multiple of 4 and at most 4096 4-vectors a block (1024 "
                    "threads x 4: the register budget)");
    const int align = 4 * dtype_bytes(dtype) - 1;
    for (const void* p : aligned)
        if (reinterpret_cast<uintptr_t>(p) & align)
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "the cluster kernel needs its tensors aligned to %d bytes",
                        align + 1);
    return require_sm90(fn, shapes, "the cluster kernel (thread block clusters)");
}

static onestep_status groupnorm_forward_impl(const char* fn, const void* x, const void* x_bias, const void* add,
                                             const void* add_bias, const void* gamma, const void* beta,
                                             const void* scale, const void* shift, void* y, float* mean, float* rstd,
                                             int N, int HW, int C, int G, float eps, int apply_silu,
                                             onestep_dtype dtype, cudaStream_t stream, int kernel = 0) {
    char shapes[160];
    if (dtype == ONESTEP_FLOAT32)
        std::snprintf(shapes, sizeof shapes, "N=%d, HW=%d, C=%d, G=%d", N, HW, C, G);
    else
        std::snprintf(shapes, sizeof shapes, "N=%d, HW=%d, C=%d, G=%d, %s", N, HW, C, G, dtype_name(dtype));
    if (dtype_bytes(dtype) == 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (onestep_status s = groupnorm::check_shape(fn, shapes, N, HW, C, G)) return s;
    if (!x || !gamma || !beta || !y || !mean || !rstd)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "x, gamma, beta, y, mean and rstd must be non-null");
    if ((scale == nullptr) != (shift == nullptr))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "scale and shift must both be given or both be NULL");
    if (add_bias && !add) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "add_bias is given without add");
    if (!(eps > 0.0f)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "eps must be positive (got %g)", eps);
    if (kernel < 0 || kernel > 2)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    "kernel must be 0 (default), 1 (slab) or 2 (cluster), got %d", kernel);
    if (kernel == 2) {
        if (y == x || (add && y == add))
            return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "the cluster kernel needs y apart from x and add");
        if (onestep_status s = check_cluster(fn, shapes, N, HW, C, G, dtype, {x, y})) return s;
    }
    if (kernel == 1) {
        if (y == x || (add && y == add))
            return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "the slab kernel needs y apart from x and add");
        if (groupnorm::slab_iters(HW, C, G, groupnorm::slab_block(HW, C, G)) == 0)
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes,
                        "the slab kernel needs C/G of 4, 8 or 16, C a multiple of %d and HW at most %d",
                        groupnorm::kSlab, groupnorm::kSlabMaxHW);
        const int align = 4 * dtype_bytes(dtype) - 1;
        if ((reinterpret_cast<uintptr_t>(x) & align) || (reinterpret_cast<uintptr_t>(y) & align))
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "the slab kernel needs x and y aligned to %d bytes",
                        align + 1);
    }
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               groupnorm::launch_forward_t<T>(
                                                   static_cast<const T*>(x), static_cast<const T*>(gamma),
                                                   static_cast<const T*>(beta), static_cast<const T*>(scale),
                                                   static_cast<const T*>(shift), static_cast<T*>(y), mean, rstd, N, HW,
                                                   C, G, eps, apply_silu != 0,
                                                   kernel >= 1 ? 0 : groupnorm::production_stats_block(N, HW, C, G),
                                                   groupnorm::kApplyBlock, stream,
                                                   kernel == 1 ? 2 : kernel == 2 ? 3 : -1,
                                                   groupnorm::PreAdd<T>{static_cast<const T*>(x_bias),
                                                                        static_cast<const T*>(add),
                                                                        static_cast<const T*>(add_bias)})),
                        fn, shapes);
}

extern "C" onestep_status onestep_groupnorm_forward(const float* x, const float* gamma, const float* beta,
                                                    const float* scale, const float* shift, float* y, float* mean,
                                                    float* rstd, int N, int HW, int C, int G, float eps,
                                                    int apply_silu, cudaStream_t stream) {
    return groupnorm_forward_impl("onestep_groupnorm_forward", x, nullptr, nullptr, nullptr, gamma, beta, scale, shift, y, mean, rstd, N, HW, C,
                                  G, eps, apply_silu, ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_groupnorm_forward_typed(const void* x, const void* gamma, const void* beta,
                                                          const void* scale, const void* shift, void* y, float* mean,
                                                          float* rstd, int N, int HW, int C, int G, float eps,
                                                          int apply_silu, onestep_dtype dtype, cudaStream_t stream) {
    return groupnorm_forward_impl("onestep_groupnorm_forward_typed", x, nullptr, nullptr, nullptr, gamma, beta, scale,
                                  shift, y, mean, rstd, N, HW, C, G, eps, apply_silu, dtype, stream);
}

extern "C" onestep_status onestep_groupnorm_forward_add_typed(const void* x, const void* x_bias, const void* add,
                                                              const void* add_bias, const void* gamma, const void* beta,
                                                              const void* scale, const void* shift, void* y,
                                                              float* mean, float* rstd, int N, int HW, int C, int G,
                                                              float eps, int apply_silu, onestep_dtype dtype,
                                                              cudaStream_t stream) {
    return groupnorm_forward_impl("onestep_groupnorm_forward_add_typed", x, x_bias, add, add_bias, gamma, beta, scale,
                                  shift, y, mean, rstd, N, HW, C, G, eps, apply_silu, dtype, stream);
}

extern "C" onestep_status onestep_groupnorm_forward_add_kernel_typed(
    const void* x, const void* x_bias, const void* add, const void* add_bias, const void* gamma, const void* beta,
    const void* scale, const void* shift, void* y, float* mean, float* rstd, int N, int HW, int C, int G, float eps,
    int apply_silu, int kernel, onestep_dtype dtype, cudaStream_t stream) {
    return groupnorm_forward_impl("onestep_groupnorm_forward_add_kernel_typed", x, x_bias, add, add_bias, gamma, beta,
                                  scale, shift, y, mean, rstd, N, HW, C, G, eps, apply_silu, dtype, stream, kernel);
}

static onestep_status groupnorm_concat_impl(const char* fn, const void* a, const void* a_bias, const void* b,
                                            const void* b_bias, const void* gamma, const void* beta, void* cat,
                                            void* y, float* mean, float* rstd, int N, int HW, int Ca, int Cb, int G,
                                            float eps, int apply_silu, int kernel, onestep_dtype dtype,
                                            cudaStream_t stream) {
    char shapes[160];
    std::snprintf(shapes, sizeof shapes, "N=%d, HW=%d, Ca=%d, Cb=%d, G=%d, %s", N, HW, Ca, Cb, G, dtype_name(dtype));
    if (dtype_bytes(dtype) == 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (Ca <= 0 || Cb <= 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "Ca and Cb must be positive");
    if (onestep_status s = groupnorm::check_shape(fn, shapes, N, HW, Ca + Cb, G)) return s;
    if (!a || !b || !gamma || !beta || !cat || !y || !mean || !rstd)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    "a, b, gamma, beta, cat, y, mean and rstd must be non-null");
    if (cat == y || cat == a || cat == b || y == a || y == b)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "cat and y must not alias each other, a or b");
    if (!(eps > 0.0f)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "eps must be positive (got %g)", eps);
    if (kernel != 0 && kernel != 2)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "kernel must be 0 (default) or 2 (cluster), got %d",
                    kernel);
    if (kernel == 2) {
        if (Ca % 4 != 0 || Cb % 4 != 0)
            return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "the cluster kernel needs Ca and Cb multiples of 4");
        if (onestep_status s = check_cluster(fn, shapes, N, HW, Ca + Cb, G, dtype, {a, b, cat, y})) return s;
    }
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               groupnorm::launch_concat_t<T>(
                                                   groupnorm::ConcatSrc<T>{static_cast<const T*>(a),
                                                                           static_cast<const T*>(a_bias),
                                                                           static_cast<const T*>(b),
                                                                           static_cast<const T*>(b_bias), Ca, Cb},
                                                   static_cast<const T*>(gamma), static_cast<const T*>(beta),
                                                   static_cast<T*>(cat), static_cast<T*>(y), mean, rstd, N, HW, G, eps,
                                                   apply_silu != 0, stream, kernel)),
                        fn, shapes);
}

extern "C" onestep_status onestep_groupnorm_concat_typed(const void* a, const void* a_bias, const void* b,
                                                           const void* b_bias, const void* gamma, const void* beta,
                                                           void* cat, void* y, float* mean, float* rstd, int N, int HW,
                                                           int Ca, int Cb, int G, float eps, int apply_silu,
                                                           onestep_dtype dtype, cudaStream_t stream) {
    return groupnorm_concat_impl("onestep_groupnorm_concat_typed", a, a_bias, b, b_bias, gamma, beta, cat, y, mean,
                                 rstd, N, HW, Ca, Cb, G, eps, apply_silu, 0, dtype, stream);
}

extern "C" onestep_status onestep_groupnorm_concat_kernel_typed(const void* a, const void* a_bias, const void* b,
                                                                  const void* b_bias, const void* gamma,
                                                                  const void* beta, void* cat, void* y, float* mean,
                                                                  float* rstd, int N, int HW, int Ca, int Cb, int G,
                                                                  float eps, int apply_silu, int kernel,
                                                                  onestep_dtype dtype, cudaStream_t stream) {
    return groupnorm_concat_impl("onestep_groupnorm_concat_kernel_typed", a, a_bias, b, b_bias, gamma, beta, cat, y,
                                 mean, rstd, N, HW, Ca, Cb, G, eps, apply_silu, kernel, dtype, stream);
}

extern "C" onestep_status onestep_groupnorm_backward(const float* dy, const float* x, const float* mean,
                                                     const float* rstd, const float* gamma, const float* beta,
                                                     const float* scale, const float* shift, float* dx, float* dgamma,
                                                     float* dbeta, float* dscale, float* dshift, int N, int HW, int C,
                                                     int G, int apply_silu, cudaStream_t stream) {
    const char* fn = "onestep_groupnorm_backward";
    ONESTEP_SHAPES("N=%d, HW=%d, C=%d, G=%d", N, HW, C, G);
    if (onestep_status s = groupnorm::check_shape(fn, shapes, N, HW, C, G)) return s;
    if (!dy || !x || !mean || !rstd || !gamma || !beta || !dx || !dgamma || !dbeta)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    "dy, x, mean, rstd, gamma, beta, dx, dgamma and dbeta must be non-null");
    const bool emb = scale != nullptr;
    if (emb != (shift != nullptr) || emb != (dscale != nullptr) || emb != (dshift != nullptr))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    "scale, shift, dscale and dshift must all be given or all be NULL");
    return check_launch(groupnorm::launch_backward(dy, x, mean, rstd, gamma, beta, scale, shift, dx, dgamma, dbeta,
                                                   dscale, dshift, N, HW, C, G, apply_silu != 0,
                                                   groupnorm::kBackwardBlock, stream),
                        fn, shapes);
}
