// attention_forward.cu: development record of the fused attention forward O = softmax(Q K^T * scale) V,
// q (B,H,Tq,D), k/v (B,H,Tk,D), fp32, with the log-sum-exp per row saved for a backward pass.
//
//   nvcc build:  cmake target dev_attention_forward;  run: ./dev_attention_forward [version] [B H T D]
//   versions: 1 naive, 2 production fp32, 3/4 WMMA fp16/bf16 (nvcc only), 5/6 production fp16/bf16 storage,
//             7 production fp16 on the engine's token layout (B, T, H*D), what the Java backend launches,
//             8/9 production fp16/bf16 on tensor cores (mma.sync, FA2's register-resident tiles; emulated too),
//             10 version 8 on the token layout, 11 version 10 with the keys split over the block's warps (batch 1),
//             12/13 versions 8/9 pipelined (cp.async double buffering, ldmatrix), 14 version 10 pipelined,
//             15/16/17 the attention with to_out.0 and the residual in one launch (fp16, packed q/k/v) with 1, 2
//             and 4 warps a head, W = I here, 18/19/20 versions 12/13/14 with 32 query rows a warp (128 a block)
//   emulated:    cmake target dev_attention_forward_emu (validation only, small shape; a CTest test)
//
// TFLOP/s counts the two matrix products, 4 * B * H * Tq * Tk * D flops (softmax not counted).
#include "../src/status.cu"
#include "../src/attention.cu"
#include "../src/convert.cu"
#include "dev_common.cuh"
#include "../test/layout_ref.h"

#include <cstdlib>
#include <vector>
#ifndef ONESTEP_EMULATION
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#endif

using namespace onestep;

// ---- CPU reference (double) -----------------------------------------------------------------------------
static void attention_forward_cpu(std::vector<double>& o, std::vector<double>& lse, const std::vector<float>& q,
                                  const std::vector<float>& k, const std::vector<float>& v, int B, int H, int Tq,
                                  int Tk, int D, double scale) {
    std::vector<double> s(Tk);
    for (long long bh = 0; bh < (long long)B * H; bh++)
        for (int i = 0; i < Tq; i++) {
            double mx = -INFINITY;
            for (int j = 0; j < Tk; j++) {
                double dot = 0;
                for (int d = 0; d < D; d++) dot += double(q[(bh * Tq + i) * D + d]) * k[(bh * Tk + j) * D + d];
                s[j] = dot * scale;
                mx = std::max(mx, s[j]);
            }
            double sum = 0;
            for (int j = 0; j < Tk; j++) sum += (s[j] = std::exp(s[j] - mx));
            for (int d = 0; d < D; d++) o[(bh * Tq + i) * D + d] = 0;
            for (int j = 0; j < Tk; j++)
                for (int d = 0; d < D; d++) o[(bh * Tq + i) * D + d] += s[j] / sum * v[(bh * Tk + j) * D + d];
            lse[bh * Tq + i] = mx + std::log(sum);
        }
}

// ---- version 1: one thread per query row, three passes over all keys straight from global memory
// (row max, denominator, weighted sum of V). Exact and simple; every thread re-reads all of K and V.
__global__ void attention_forward_kernel1(const float* q, const float* k, const float* v, float* o, float* lse,
                                          int BH, int Tq, int Tk, int D, float scale) {
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)BH * Tq) return;
    const long long bh = t / Tq;
    const float* qr = q + t * D;
    const float* kh = k + bh * Tk * D;
    const float* vh = v + bh * Tk * D;
    float mx = -INFINITY;
    for (int j = 0; j < Tk; j++) {
        float s = 0;
        for (int d = 0; d < D; d++) s += qr[d] * kh[(long long)j * D + d];
        mx = fmaxf(mx, s * scale);
    }
    float sum = 0;
    for (int j = 0; j < Tk; j++) {
        float s = 0;
        for (int d = 0; d < D; d++) s += qr[d] * kh[(long long)j * D + d];
        sum += __expf(s * scale - mx);
    }
    for (int d = 0; d < D; d++) o[t * D + d] = 0.0f;
    for (int j = 0; j < Tk; j++) {
        float s = 0;
        for (int d = 0; d < D; d++) s += qr[d] * kh[(long long)j * D + d];
        const float p = __expf(s * scale - mx) / sum;
        for (int d = 0; d < D; d++) o[t * D + d] += p * vh[(long long)j * D + d];
    }
    lse[t] = mx + logf(sum);
}

// ---- version 2 (production, src/attention.cu): FlashAttention-2 structure. One block of 4 warps per 32
// query rows; K/V in 32-key tiles through shared memory (K with a padded pitch); online softmax with the
// running max and sum in registers, exp2 with scale*log2(e) folded into Q; one normalization at the end.

// ---- versions 3 and 4 (nvcc only, sm_80+; correct on an H100 but slower than version 2, 6.5 against 13.8
// TFLOP/s at B=8 H=8 T=1024 D=64, 2026-11-26: kept as the record of why versions 8-10 use mma.sync):
// version 2's FA2 structure with Q K^T and P V on tensor cores through WMMA 16x16x16 fragments, fp16
// (version 3) or bf16 (version 4) inputs and P, fp32 accumulation, softmax statistics and output.
// 4 warps x 16 query rows = 64 rows per block, 64-key tiles. WMMA accumulator fragments have no documented
// row layout, so the per-row rescaling by alpha = exp2(m_old - m_new) is done on an fp32 copy of the
// warp's output rows in shared memory: scale the rows, load them into the accumulator, P V on top, store.
#ifndef ONESTEP_EMULATION
namespace wmma_attention {
namespace wmma = nvcuda::wmma;
constexpr int kRows = 64, kKeys = 64, kWarps = 4;

template <typename T> __device__ __forceinline__ T from_float(float f);
template <> __device__ __forceinline__ __half from_float<__half>(float f) { return __float2half_rn(f); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float f) { return __float2bfloat16_rn(f); }

__host__ size_t shared_bytes(int D, size_t elem) {
    return 3 * size_t(kRows) * D * elem                      // Q, K, V tiles
           + size_t(kWarps) * 16 * kKeys * sizeof(float)     // S, per warp
           + size_t(kWarps) * 16 * kKeys * elem              // P, per warp
           + size_t(kWarps) * 16 * D * sizeof(float);        // O, per warp
}

// Rows [r0, r0 + 64) of a (T, D) matrix into shared memory, 16-byte loads; rows >= end become zero.
template <typename T, int D>
__device__ __forceinline__ void load_rows(T* dst, const T* src, int r0, int end) {
    constexpr int kVec = 16 / sizeof(T);  // elements per 16-byte load
    for (int i = threadIdx.x; i < kRows * D / kVec; i += blockDim.x) {
        const int r = i / (D / kVec), c = (i % (D / kVec)) * kVec;
        int4 val = make_int4(0, 0, 0, 0);
        if (r0 + r < end) val = *reinterpret_cast<const int4*>(src + (long long)(r0 + r) * D + c);
        *reinterpret_cast<int4*>(dst + r * D + c) = val;
    }
}

template <typename T, int D>
__global__ void __launch_bounds__(kWarps * 32)
    forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, float* __restrict__ o,
                   float* __restrict__ lse, int Tq, int Tk, float scale_log2) {
    extern __shared__ __align__(128) unsigned char wmma_smem[];
    T* Qs = reinterpret_cast<T*>(wmma_smem);
    T* Ks = Qs + kRows * D;
    T* Vs = Ks + kKeys * D;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float* Ss = reinterpret_cast<float*>(Vs + kKeys * D) + warp * 16 * kKeys;  // this warp's 16 x 64 scores
    T* Ps = reinterpret_cast<T*>(reinterpret_cast<float*>(Vs + kKeys * D) + kWarps * 16 * kKeys) + warp * 16 * kKeys;
    float* Os = reinterpret_cast<float*>(reinterpret_cast<T*>(reinterpret_cast<float*>(Vs + kKeys * D) + kWarps * 16 * kKeys) +
                                         kWarps * 16 * kKeys) + warp * 16 * D;
    const int bh = blockIdx.y, q0 = blockIdx.x * kRows;
    const long long head_q = (long long)bh * Tq * D, head_k = (long long)bh * Tk * D;

    load_rows<T, D>(Qs, q + head_q, q0, Tq);
    for (int i = lane; i < 16 * D; i += 32) Os[i] = 0.0f;
    // Two lanes per row: lane 2r and 2r+1 share row r, each owning 32 of the 64 key columns and D/2 outputs.
    const int r = lane / 2, half = lane % 2;
    float m_run = -INFINITY, l_run = 0.0f;

    for (int k0 = 0; k0 < Tk; k0 += kKeys) {
        __syncthreads();  // previous tile's readers (and the Q loads) are done
        load_rows<T, D>(Ks, k + head_k, k0, Tk);
        load_rows<T, D>(Vs, v + head_k, k0, Tk);
        __syncthreads();
        // S (16 x 64) = Q_warp (16 x D) K^T (D x 64): K stored [key][d] is B = K^T in column-major order.
        for (int n0 = 0; n0 < kKeys; n0 += 16) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> s_frag;
            wmma::fill_fragment(s_frag, 0.0f);
            for (int kk = 0; kk < D; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
                wmma::load_matrix_sync(a, Qs + warp * 16 * D + kk, D);
                wmma::load_matrix_sync(b, Ks + n0 * D + kk, D);
                wmma::mma_sync(s_frag, a, b, s_frag);
            }
            wmma::store_matrix_sync(Ss + n0, s_frag, kKeys, wmma::mem_row_major);
        }
        __syncwarp();
        // Online softmax for row r over this tile (base-2 units, as in version 2).
        float* srow = Ss + r * kKeys;
        float mx = -INFINITY;
        for (int c = half * 32; c < half * 32 + 32; c++) {
            const float sv = k0 + c < Tk ? srow[c] * scale_log2 : -INFINITY;
            srow[c] = sv;
            mx = fmaxf(mx, sv);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float m_new = fmaxf(m_run, mx);
        const float m_ref = m_new == -INFINITY ? 0.0f : m_new;
        float sum = 0.0f;
        for (int c = half * 32; c < half * 32 + 32; c++) {
            const float p = exp2f(srow[c] - m_ref);
            Ps[r * kKeys + c] = from_float<T>(p);
            sum += p;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        const float alpha = exp2f(m_run - m_ref);
        l_run = l_run * alpha + sum;
        m_run = m_new;
        for (int d = half * (D / 2); d < (half + 1) * (D / 2); d++) Os[r * D + d] *= alpha;
        __syncwarp();
        // O_warp (16 x D) += P (16 x 64) V (64 x D), V stored [key][d] = row-major B.
        for (int n0 = 0; n0 < D; n0 += 16) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> o_frag;
            wmma::load_matrix_sync(o_frag, Os + n0, D, wmma::mem_row_major);
            for (int kk = 0; kk < kKeys; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
                wmma::load_matrix_sync(a, Ps + kk, kKeys);
                wmma::load_matrix_sync(b, Vs + kk * D + n0, D);
                wmma::mma_sync(o_frag, a, b, o_frag);
            }
            wmma::store_matrix_sync(Os + n0, o_frag, D, wmma::mem_row_major);
        }
        __syncwarp();
    }
    const int row = q0 + warp * 16 + r;
    if (row < Tq) {
        const float inv_l = l_run > 0.0f ? 1.0f / l_run : 0.0f;
        for (int d = half * (D / 2); d < (half + 1) * (D / 2); d++) o[head_q + (long long)row * D + d] = Os[r * D + d] * inv_l;
        if (half == 0) lse[(long long)bh * Tq + row] = l_run > 0.0f ? 0.69314718056f * (m_run + log2f(l_run)) : -INFINITY;
    }
}

template <typename T>
cudaError_t launch_forward(const T* q, const T* k, const T* v, float* o, float* lse, int B, int H, int T_, int D,
                           float scale) {
    const size_t smem = shared_bytes(D, sizeof(T));
    const dim3 grid((T_ + kRows - 1) / kRows, unsigned(B * H)), block(kWarps * 32);
    const float scale_log2 = scale * 1.4426950408889634f;
    cudaError_t e = cudaErrorInvalidValue;
    switch (D) {
#define ONESTEP_WMMA_CASE(DD)                                                                                     \
    case DD:                                                                                                      \
        e = cudaFuncSetAttribute(forward_kernel<T, DD>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));  \
        if (e != cudaSuccess) return e;                                                                           \
        forward_kernel<T, DD><<<grid, block, smem>>>(q, k, v, o, lse, T_, T_, scale_log2);                        \
        return cudaGetLastError();
        ONESTEP_WMMA_CASE(32)
        ONESTEP_WMMA_CASE(64)
        ONESTEP_WMMA_CASE(128)
#undef ONESTEP_WMMA_CASE
    }
    return e;
}

// Device copies of q, k, v in T, made once.
template <typename T>
struct Inputs {
    T *q = nullptr, *k = nullptr, *v = nullptr;
    void make(const std::vector<float>& hq, const std::vector<float>& hk, const std::vector<float>& hv) {
        auto conv = [](const std::vector<float>& h) {
            std::vector<T> t(h.size());
            for (size_t i = 0; i < h.size(); i++) t[i] = T(h[i]);
            return dev::to_device(t);
        };
        q = conv(hq), k = conv(hk), v = conv(hv);
    }
};
Inputs<__half> f16;
Inputs<__nv_bfloat16> bf16;
}  // namespace wmma_attention
#endif

// ---- versions 8, 9 and 10 (production, src/attention.cu's tc namespace; sm_80+): the FA2 structure on
// mma.sync.m16n8k16 (inline PTX), fp16 (8) or bf16 (9) Q, K, V and P, fp32 accumulation, statistics and output,
// O rounded once; version 10 is version 8 on the engine's token layout, what the Java backend launches. Why versions
// 3 and 4 lost to version 2 on an H100 (2026-11-26: 6.5 against 13.8 TFLOP/s at B=8 H=8 T=1024 D=64): WMMA's
// accumulator layout is opaque, so every 64-key tile went S -> shared -> registers -> P -> shared, and O -> shared and
// back for the rescale. mma.sync's layouts are fixed by the PTX ISA, so the tile stays in registers (the kernel's
// comment has the details). First GPU run of these (H100, 2026-11-26): 114.5 TFLOP/s at B=8 H=8 T=1024 D=64, 8.3x
// version 5; 51.7 us at the CIFAR U-Net's B=64 H=4 T=256 D=64 against 36.6 us for PyTorch's fastest fp16 SDPA.
// The emulation runs them too (emu::mma_m16n8k16 models the instruction with the ISA's layouts), so CTest checks
// their indexing, masking and online softmax; this file on a GPU checks the layouts against the hardware.

// ---- versions 5 and 6 (production, src/attention.cu instantiated for __half / __nv_bfloat16): version 2 with
// 16-bit storage of Q, K, V and O (widened to fp32 in shared memory, fp32 arithmetic, O rounded once). Half the
// bytes of version 2 and the same FLOPs on the same CUDA cores: the baseline that versions 3 and 4 (tensor cores)
// must beat, and what onestep_attention_forward_typed runs. They run in the emulation too.
template <typename T>
struct Typed {
    T *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
    // Narrowed on the device by onestep_convert (tested exhaustively in kernels/test/test_denoise.cpp).
    void make(const float* dq, const float* dk, const float* dv, size_t n, onestep_dtype t) {
        for (T** p : {&q, &k, &v, &o}) dev_check(cudaMalloc(reinterpret_cast<void**>(p), n * sizeof(T)));
        const float* src[3] = {dq, dk, dv};
        T* dst[3] = {q, k, v};
        for (int i = 0; i < 3; i++)
            if (onestep_convert(src[i], ONESTEP_FLOAT32, dst[i], t, (long long)n, nullptr) != ONESTEP_OK) {
                std::fprintf(stderr, "%s\n", onestep_last_error_message());
                std::exit(1);
            }
    }
};
static Typed<__half> typed_f16;
static Typed<__nv_bfloat16> typed_bf16;

// ---- version 7 (production, onestep_attention_forward_tokens_typed): version 5 reading Q, K, V and writing O in
// the engine's token layout (B, T, H*D), rows H*D elements apart, instead of (B, H, T, D) blocks; the Java backend
// launches this (no split/merge kernels around it). It measures what the strided rows cost (a row of D halves is
// still one contiguous 2D-byte run). Validated by widening O, relaying it out to heads and comparing as the others.
using layout_ref::relaid;  // (kernels/test/layout_ref.h, shared with test_attention)

// fp16 (B, T, H*D) tokens widened to fp32 and relaid out to (B, H, T, D) in d_o, for dev::validate.
static void tokens_to_heads(const void* tokens, float* d_o, size_t n, int B, int H, int T, int D) {
    if (onestep_convert(tokens, ONESTEP_FLOAT16, d_o, ONESTEP_FLOAT32, (long long)n, nullptr) != ONESTEP_OK) std::exit(1);
    dev_check(cudaDeviceSynchronize());
    std::vector<float> host(n);
    dev_check(cudaMemcpy(host.data(), d_o, n * 4, cudaMemcpyDeviceToHost));
    std::vector<float> heads = relaid(host, B, H, T, D, false);
    dev_check(cudaMemcpy(d_o, heads.data(), n * 4, cudaMemcpyHostToDevice));
}

struct Tokens {
    Typed<__half> t;
    void make(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v, int B, int H, int T,
              int D) {
        float *dq = dev::to_device(relaid(q, B, H, T, D, true)), *dk = dev::to_device(relaid(k, B, H, T, D, true));
        float* dv = dev::to_device(relaid(v, B, H, T, D, true));
        t.make(dq, dk, dv, q.size(), ONESTEP_FLOAT16);
        dev_check(cudaDeviceSynchronize());
        dev_check(cudaFree(dq));
        dev_check(cudaFree(dk));
        dev_check(cudaFree(dv));
    }
    // O widened to fp32 and relaid out to (B, H, T, D) in d_o, for dev::validate.
    void heads_into(float* d_o, size_t n, int B, int H, int T, int D) { tokens_to_heads(t.o, d_o, n, B, H, T, D); }
};
static Tokens tokens_f16;

// ---- version 11: version 10 with the keys split over the block's warps (flash-decoding's split-KV, Dao et al.
// 2023, inside one block). At batch 1 the U-Net's attention has few query tiles: CIFAR's 16x16 level is B=1 H=4
// T=256, so version 10's 64-row blocks make 16 blocks for 132 SMs, and each warp walks all 256 keys in turn (the
// tenth session's profile: 13.8 us per attention, 6 per sample). Here a block owns 16 query rows, and its 4 warps
// each take every 4th 32-key tile with their own K/V tiles in shared memory (no block barrier in the loop): 4x
// the blocks and a quarter of the serial chain. The warps' partial results (m, l, O unnormalized, base-2 units)
// are then merged through shared memory, in the same block: O = sum_w 2^(m_w - m) O_w / sum_w 2^(m_w - m) l_w.
// It began here and is now production (src/attention.cu, tc::split_forward_kernel, attention::Path::SplitKeys; the
// C entry onestep_attention_forward_qkv_kernel_typed with kernel 1, which the CUDA backend times against version 10
// per shape); this version calls it on the token layout. D <= 64 (the shared memory of 4 warps' tiles).

// ---- versions 12, 13 and 14: versions 8, 9 and 10 pipelined (src/attention.cu, tc::pipelined_forward_kernel,
// attention::Path::Pipelined; kernel 2 of onestep_attention_forward_qkv_kernel_typed, which the CUDA backend times
// against version 10 per shape). Version 10 stages each 64-key tile through registers between two barriers: the
// loads' latency is exposed every tile, and V is transposed into shared memory one 16-bit store at a time (32 store
// instructions a thread a tile at D = 64, against 64 mma.sync a warp). Here K and V are copied as they are ([key][d])
// by cp.async into two stages, tile i + 1 in flight while tile i is computed, one barrier a tile, and the B fragments
// come from ldmatrix.x4 (.trans for V), 4 registers an instruction instead of one 32-bit load each. Same fragments,
// same mma order: version 8's bits (test_attention checks them). Aimed at version 9's 47.0 us at the CIFAR U-Net's
// B=64 H=4 T=256 D=64 (H100, 2026-11-26), 66% of PyTorch's fastest bf16 SDPA (30.9 us); not yet timed. D <= 64.

// ---- versions 18, 19 and 20: versions 12, 13 and 14 with two 16-row m-tiles a warp (src/attention.cu,
// tc::pipelined_forward_kernel with MT = 2, attention::Path::Wide; kernel 3 of onestep_attention_forward_qkv_kernel_typed,
// timed by the CUDA backend against the others per shape). FA2's block shape for head dim 64: 4 warps, 128 query rows,
// so each K and V fragment read from shared memory feeds two mma.sync and each staged tile serves twice the rows.
// Version 13 reached 133 TFLOP/s at B=64 H=4 T=256 D=64 on the H200 (2026-11-27), 52% of cuDNN's SDPA (16.7 us);
// 70% needs 23.9 us. Registers (ptxas, sm_90a): 254 at D = 64 with no spill, held to 2 blocks an SM. Same bits as
// version 8 (test_attention). Not yet timed on a GPU (twenty-fifth session).

// ---- versions 15, 16, 17 (production, onestep_attention_residual_qkv_typed with 1, 2 and 4 warps a head;
// twentieth session): an attention block's
// attention, to_out.0 and residual in one launch, on the packed (B, T, 3 H D) projection the engine's attention
// reads. A block owns 16 query rows and all their heads (1, 2 or 4 warps a head splitting its keys, 32-key tiles as
// version 11's warps), keeps O in shared memory, then multiplies it by to_out's [out][in] weights on tensor cores, adding the bias and z before
// y's one rounding: at batch 1 one node instead of the attention's and cuBLASLt's two (~12 + ~5 us in the
// seventeenth session's H100 profile). Here W is the identity and there is no bias or z, so y = O exactly (an fp16
// O times 1, summed in fp32, rounds back to itself) and validates against the same reference; the time is that of
// any W (mma.sync does not look at values). TFLOP/s counts the projection's 2 B T C^2 too. Against the attention plus
// cuBLASLt's GEMM in a graph, as a pass runs them: StepTiming's `(choice) attnres,` rows.
struct Packed {
    __half *qkv = nullptr, *w = nullptr, *y = nullptr;
    void make(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v, int B, int H,
              int T, int D) {
        const std::vector<float> tq = relaid(q, B, H, T, D, true), tk = relaid(k, B, H, T, D, true),
                                 tv = relaid(v, B, H, T, D, true);
        const size_t C = size_t(H) * D, rows = size_t(B) * T;
        std::vector<float> packed(rows * 3 * C), eye(C * C, 0.0f);
        for (size_t r = 0; r < rows; r++)
            for (size_t f = 0; f < C; f++) {
                packed[r * 3 * C + f] = tq[r * C + f];
                packed[r * 3 * C + C + f] = tk[r * C + f];
                packed[r * 3 * C + 2 * C + f] = tv[r * C + f];
            }
        for (size_t i = 0; i < C; i++) eye[i * C + i] = 1.0f;
        qkv = half_copy(packed), w = half_copy(eye);
        dev_check(cudaMalloc(&y, rows * C * sizeof(__half)));
    }
    // An fp16 device copy of h (rounded on the device, as the Java backend converts).
    static __half* half_copy(const std::vector<float>& h) {
        float* wide = dev::to_device(h);
        __half* out = nullptr;
        dev_check(cudaMalloc(&out, h.size() * sizeof(__half)));
        if (onestep_convert(wide, ONESTEP_FLOAT32, out, ONESTEP_FLOAT16, (long long)h.size(), nullptr) != ONESTEP_OK)
            std::exit(1);
        dev_check(cudaDeviceSynchronize());
        dev_check(cudaFree(wide));
        return out;
    }
    // y widened to fp32 and relaid out to (B, H, T, D) in d_o, for dev::validate.
    void heads_into(float* d_o, size_t n, int B, int H, int T, int D) { tokens_to_heads(y, d_o, n, B, H, T, D); }
};
static Packed packed_f16;

// Versions 5-7 are the portable kernel on 16-bit storage, 8-10 the same calls on the tensor-core path, 12-14 on the
// pipelined one, 18-20 on the wide one.
static attention::Path path(int version) {
    return version >= 18   ? attention::Path::Wide
           : version >= 12 ? attention::Path::Pipelined
           : version >= 8  ? attention::Path::TensorCores
                           : attention::Path::Portable;
}

static cudaError_t run_version(int version, const float* q, const float* k, const float* v, float* o, float* lse,
                               int B, int H, int T, int D, float scale, int block) {
    switch (version) {
        case 1:
            return launch(attention_forward_kernel1, dim3(ceil_div((long long)B * H * T, block)), dim3(block), 0,
                          nullptr, q, k, v, o, lse, B * H, T, T, D, scale);
        case 2:
            return attention::launch_forward(q, k, v, o, lse, B, H, T, T, D, nullptr, scale, nullptr);
        case 5:
        case 8:
        case 12:
        case 18:
            return attention::launch_forward<__half>(typed_f16.q, typed_f16.k, typed_f16.v, typed_f16.o, lse, B, H, T,
                                                     T, D, nullptr, scale, nullptr, false, path(version));
        case 6:
        case 9:
        case 13:
        case 19:
            return attention::launch_forward<__nv_bfloat16>(typed_bf16.q, typed_bf16.k, typed_bf16.v, typed_bf16.o,
                                                            lse, B, H, T, T, D, nullptr, scale, nullptr, false,
                                                            path(version));
        case 7:
        case 10:
        case 14:
        case 20:
            return attention::launch_forward<__half>(tokens_f16.t.q, tokens_f16.t.k, tokens_f16.t.v, tokens_f16.t.o,
                                                     lse, B, H, T, T, D, nullptr, scale, nullptr, true, path(version));
        case 11:
            return attention::launch_forward<__half>(tokens_f16.t.q, tokens_f16.t.k, tokens_f16.t.v, tokens_f16.t.o,
                                                     lse, B, H, T, T, D, nullptr, scale, nullptr, 1,
                                                     attention::Path::SplitKeys);
        case 15:
        case 16:
        case 17:
            if (onestep_attention_residual_qkv_typed(packed_f16.qkv, nullptr, packed_f16.w, nullptr, nullptr,
                                                     packed_f16.y, B, H, T, D, scale, version == 15 ? 1
                                                     : version == 16 ? 2 : 4, ONESTEP_FLOAT16,
                                                     nullptr) != ONESTEP_OK) {
                std::fprintf(stderr, "%s\n", onestep_last_error_message());
                return cudaErrorInvalidValue;
            }
            return cudaSuccess;
#ifndef ONESTEP_EMULATION
        case 3:
            return wmma_attention::launch_forward(wmma_attention::f16.q, wmma_attention::f16.k, wmma_attention::f16.v,
                                                  o, lse, B, H, T, D, scale);
        case 4:
            return wmma_attention::launch_forward(wmma_attention::bf16.q, wmma_attention::bf16.k, wmma_attention::bf16.v,
                                                  o, lse, B, H, T, D, scale);
#endif
    }
    std::fprintf(stderr, "unknown version %d\n", version);
    std::exit(2);
}

int main(int argc, char** argv) {
#ifdef ONESTEP_EMULATION
    int B = 1, H = 2, T = 70, D = 64;  // T not a multiple of the 32-token tiles
#else
    int B = 8, H = 8, T = 1024, D = 64;  // self-attention at a 32x32 U-Net level
#endif
    int only = 0;
    if (argc > 1) only = std::atoi(argv[1]);
    if (argc > 5) B = std::atoi(argv[2]), H = std::atoi(argv[3]), T = std::atoi(argv[4]), D = std::atoi(argv[5]);
    std::printf("attention forward, B=%d H=%d T=%d D=%d\n", B, H, T, D);
    const size_t nq = size_t(B) * H * T * D, nl = size_t(B) * H * T;
    const float scale = 1.0f / std::sqrt(float(D));
    std::vector<float> q = dev::random_normal(nq, 1), k = dev::random_normal(nq, 2), v = dev::random_normal(nq, 3);
    std::vector<double> o_ref(nq), lse_ref(nl);
    attention_forward_cpu(o_ref, lse_ref, q, k, v, B, H, T, T, D, scale);
    float *d_q = dev::to_device(q), *d_k = dev::to_device(k), *d_v = dev::to_device(v);
    float *d_o = dev::device_filled(nq, 0.0f), *d_lse = dev::device_filled(nl, 0.0f);
    bool all_ok = true;
    typed_f16.make(d_q, d_k, d_v, nq, ONESTEP_FLOAT16);
    typed_bf16.make(d_q, d_k, d_v, nq, ONESTEP_BFLOAT16);
    tokens_f16.make(q, k, v, B, H, T, D);
    if (D <= 64) packed_f16.make(q, k, v, B, H, T, D);
#ifdef ONESTEP_EMULATION
    const bool tensor_cores = false;  // versions 3 and 4
#else
    const bool tensor_cores = true;
    wmma_attention::f16.make(q, k, v);
    wmma_attention::bf16.make(q, k, v);
#endif
    for (int version = 1; version <= 20; version++) {
        if (only && version != only) continue;
        if (!tensor_cores && (version == 3 || version == 4)) continue;
        if (version >= 11 && D > 64) {
            std::printf("version %d: n/a (D > 64)\n", version);
            continue;
        }
        // The block shapes of versions 2-4 are part of their design (4 warps); only version 1 is swept.
        std::vector<int> blocks = version == 1 ? std::vector<int>{32, 64, 128, 256} : std::vector<int>{128};
        // fp16 keeps 11 significant bits, bf16 8: inputs and P are rounded to them, accumulation is fp32.
        const bool f16 = version == 3 || version == 5 || version == 7 || version == 8 || version == 10 || version == 11 ||
                         version == 12 || version == 14 || (version >= 15 && version != 19);
        const bool bf16 = version == 4 || version == 6 || version == 9 || version == 13 || version == 19;
        const double tol = f16 ? 4e-3 : bf16 ? 3e-2 : 2e-5;
        const double rel = f16 ? 1e-2 : bf16 ? 5e-2 : 2e-4;
        for (int block : blocks) {
            dev_check(cudaMemset(d_o, 0xFF, nq * 4));
            dev_check(run_version(version, d_q, d_k, d_v, d_o, d_lse, B, H, T, D, scale, block));
            dev_check(cudaDeviceSynchronize());
            if (version >= 15 && version <= 17) {
                packed_f16.heads_into(d_o, nq, B, H, T, D);
            } else if (version == 7 || version == 10 || version == 11 || version == 14 || version == 20) {
                tokens_f16.heads_into(d_o, nq, B, H, T, D);
            } else if (version >= 5) {  // O in 16 bits: widened into d_o for the comparison
                const void* o16 = f16 ? static_cast<const void*>(typed_f16.o) : typed_bf16.o;
                if (onestep_convert(o16, f16 ? ONESTEP_FLOAT16 : ONESTEP_BFLOAT16, d_o, ONESTEP_FLOAT32,
                                    (long long)nq, nullptr) != ONESTEP_OK)
                    std::exit(1);
                dev_check(cudaDeviceSynchronize());
            }
            bool ok = dev::validate("o", d_o, o_ref, tol, rel);
            if (version < 15 || version > 17) ok &= dev::validate("lse", d_lse, lse_ref, tol, rel);  // 15-17: no lse
            all_ok &= ok;
#ifdef ONESTEP_EMULATION
            std::printf("version %d block %4d: %s\n", version, block, ok ? "ok" : "MISMATCH");
#else
            const float ms = dev::time_ms([&] {
                dev_check(run_version(version, d_q, d_k, d_v, d_o, d_lse, B, H, T, D, scale, block));
            }, version == 1 ? 3 : 20);
            const double C = double(H) * D;
            const bool to_out = version >= 15 && version <= 17;
            const double tflops = (4.0 * B * H * double(T) * T * D + (to_out ? 2.0 * B * T * C * C : 0.0)) /
                                  (ms * 1e-3) / 1e12;
            // Also back to back on a warm L2 (what torch_peers.py's graph-replayed SDPA measures), tensor-core
            // versions only (the others take milliseconds).
            const float warm = version >= 8 ? dev::time_ms_back_to_back([&] {
                dev_check(run_version(version, d_q, d_k, d_v, d_o, d_lse, B, H, T, D, scale, block));
            }) : 0.0f;
            std::printf("version %d block %4d: %s  %9.4f ms  %6.2f TFLOP/s", version, block, ok ? "ok      " : "MISMATCH", ms, tflops);
            if (warm > 0) std::printf("  (back to back %.1f us)", warm * 1e3);
            std::printf("\n");
#endif
        }
    }
    std::printf(all_ok ? "all versions match the CPU reference\n" : "SOME VERSIONS DO NOT MATCH the CPU reference\n");
    return all_ok ? 0 : 1;
}

