// attention_backward.cu: backward of the fused attention (Dao 2023, FlashAttention-2, Algorithm 2), for the
// storage types of dtype.cuh (fp32, fp16, bf16): tiles are widened to fp32 in shared memory, every sum is fp32,
// and dq, dk, dv are rounded to the storage type once when stored; lse and Delta are always fp32.
// With S = scale * Q K^T, P = softmax(S) recomputed from the saved lse (P = exp(S - lse), no Tq x Tk
// matrix is ever stored) and O = P V:
//   dV = P^T dO,  dP = dO V^T,  dS = P o (dP - Delta),  Delta_i = sum_j P_ij dP_ij = rowsum(dO o O),
//   dQ = scale * dS K,  dK = scale * dS^T Q.
// Three kernels:
//   1. delta: Delta = rowsum(dO o O), one warp per query row (FA2's preprocessing step).
//   2. dk_dv: one block per (32-key tile, batch*head), looping over all query tiles, accumulating the
//      tile's dK and dV in registers (FA2's outer loop over K/V blocks).
//   3. dq: one block per (32-query tile, batch*head), looping over the key tiles. FA2 instead adds dQ with
//      atomics from kernel 2; recomputing P here costs one more Q K^T but makes dQ deterministic and
//      needs no zero-initialized accumulator.
// Thread layout in both main kernels is the forward's: 4 warps, warp w owns 8 rows of the 32x32 score
// tile (lane = the other index), and for the accumulation lane c owns columns c, c+32, ... of D.
// Keys at or beyond kv_len[b] have P = 0: their dK and dV are written as 0, and rows without any key
// (lse = -inf) get dQ = 0.
#include "attention.cuh"
#include "dtype.cuh"
#include "onestep_kernels.h"
#include "reduce.cuh"
#include "status.cuh"

#include <cmath>
#include <cstdio>

namespace onestep {
namespace attention {

constexpr int kTile = 32;  // rows of Q and of K per tile (both 32: one per lane)
constexpr int kRowsPerWarpB = kTile / kWarps;

__device__ __forceinline__ int key_end(const int* kv_len, int b, int Tk) {
    if (!kv_len) return Tk;
    const int len = kv_len[b];
    return len < 0 ? 0 : (len < Tk ? len : Tk);
}

template <typename T>
__global__ void delta_kernel(const T* __restrict__ o, const T* __restrict__ dout, float* __restrict__ delta,
                             long long rows, int D) {
    await_predecessors();
    const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;  // whole warps exit together: no shuffle is left waiting on them
    float s = 0.0f;
    for (int d = threadIdx.x % 32; d < D; d += 32) s += to_f32(o[row * D + d]) * to_f32(dout[row * D + d]);
    s = warp_sum(s);
    if (threadIdx.x % 32 == 0) delta[row] = s;
}

size_t backward_shared_bytes(int D) {
    // K, V (padded pitch), Q, dO (for dk_dv) or K (padded), V (padded), Q, dO (for dq): the same sizes;
    // plus P and dS tiles and lse/Delta of the query tile.
    return sizeof(float) * (2 * size_t(kTile) * (D + 1) + 2 * size_t(kTile) * D + 2 * size_t(kTile) * kTile + 2 * kTile);
}

// Loads rows [r0, r0 + 32) of a (T, D) matrix into a tile with row pitch `pitch`; rows >= end become 0.
template <int D, typename T>
__device__ __forceinline__ void load_tile(float* tile, int pitch, const T* src, int r0, int end) {
    for (int i = threadIdx.x; i < kTile * D / 4; i += blockDim.x) {
        const int r = i / (D / 4), c = (i % (D / 4)) * 4;
        float4 val = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r0 + r < end) val = load4(src + (long long)(r0 + r) * D + c);
        float* t = tile + r * pitch + c;
        t[0] = val.x, t[1] = val.y, t[2] = val.z, t[3] = val.w;
    }
}

// P and dS for the 32x32 tile (query rows of this warp x key `lane`), written to shared memory.
// Qs/dOs have pitch D, Ks/Vs pitch D + 1 (lane = key reads a column: padded to spread the banks).
template <int D>
__device__ __forceinline__ void scores_and_ds(const float* Qs, const float* dOs, const float* Ks, const float* Vs,
                                              const float* lse_s, const float* delta_s, float* Ps, float* dSs,
                                              bool pair_valid_key, int q0, int Tq, float scale_log2) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    #pragma unroll
    for (int r = 0; r < kRowsPerWarpB; r++) {
        const int i = warp * kRowsPerWarpB + r;
        float s = 0.0f, dp = 0.0f;
        for (int d = 0; d < D; d++) {
            s += Qs[i * D + d] * Ks[lane * (D + 1) + d];
            dp += dOs[i * D + d] * Vs[lane * (D + 1) + d];
        }
        const float l = lse_s[i];
        // exp2 units as in the forward: P = 2^(S log2 e - lse log2 e); rows without keys have lse = -inf.
        const bool valid = pair_valid_key && q0 + i < Tq && l != -INFINITY;
        const float p = valid ? exp2f(s * scale_log2 - l * 1.4426950408889634f) : 0.0f;
        Ps[i * kTile + lane] = p;
        dSs[i * kTile + lane] = p * (dp - delta_s[i]);
    }
}

template <typename T, int D>
__global__ void __launch_bounds__(kWarps * 32)
    dk_dv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                 const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                 T* __restrict__ dk, T* __restrict__ dv, int Tq, int Tk, const int* __restrict__ kv_len, int H,
                 float scale, float scale_log2) {
    await_predecessors();
    constexpr int kCols = D / 32;
    ONESTEP_DYNAMIC_SHARED(float, smem);
    float* Ks = smem;
    float* Vs = Ks + kTile * (D + 1);
    float* Qs = Vs + kTile * (D + 1);
    float* dOs = Qs + kTile * D;
    float* Ps = dOs + kTile * D;
    float* dSs = Ps + kTile * kTile;
    float* lse_s = dSs + kTile * kTile;
    float* delta_s = lse_s + kTile;

    const int bh = blockIdx.y, b = bh / H, k0 = blockIdx.x * kTile;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const long long head_q = (long long)bh * Tq * D, head_k = (long long)bh * Tk * D;
    const int kv_end = key_end(kv_len, b, Tk);

    float adk[kRowsPerWarpB][kCols], adv[kRowsPerWarpB][kCols];
    #pragma unroll
    for (int r = 0; r < kRowsPerWarpB; r++)
        #pragma unroll
        for (int c = 0; c < kCols; c++) adk[r][c] = adv[r][c] = 0.0f;

    if (k0 < kv_end) {
        load_tile<D>(Ks, D + 1, k + head_k, k0, kv_end);
        load_tile<D>(Vs, D + 1, v + head_k, k0, kv_end);
        const bool key_valid = k0 + lane < kv_end;
        for (int q0 = 0; q0 < Tq; q0 += kTile) {
            __syncthreads();  // the previous query tile's readers are done
            load_tile<D>(Qs, D, q + head_q, q0, Tq);
            load_tile<D>(dOs, D, dout + head_q, q0, Tq);
            if (threadIdx.x < kTile) {
                const bool in = q0 + int(threadIdx.x) < Tq;
                lse_s[threadIdx.x] = in ? lse[(long long)bh * Tq + q0 + threadIdx.x] : -INFINITY;
                delta_s[threadIdx.x] = in ? delta[(long long)bh * Tq + q0 + threadIdx.x] : 0.0f;
            }
            __syncthreads();
            scores_and_ds<D>(Qs, dOs, Ks, Vs, lse_s, delta_s, Ps, dSs, key_valid, q0, Tq, scale_log2);
            __syncthreads();
            // dV[j] += sum_i P[i][j] dO[i];  dK[j] += scale * sum_i dS[i][j] Q[i]  (this warp's 8 keys j)
            #pragma unroll
            for (int r = 0; r < kRowsPerWarpB; r++) {
                const int j = warp * kRowsPerWarpB + r;
                for (int i = 0; i < kTile; i++) {
                    const float p = Ps[i * kTile + j], ds = dSs[i * kTile + j];
                    #pragma unroll
                    for (int c = 0; c < kCols; c++) {
                        adv[r][c] += p * dOs[i * D + lane + 32 * c];
                        adk[r][c] += ds * Qs[i * D + lane + 32 * c];
                    }
                }
            }
        }
    }
    #pragma unroll
    for (int r = 0; r < kRowsPerWarpB; r++) {
        const int j = k0 + warp * kRowsPerWarpB + r;
        if (j >= Tk) continue;
        #pragma unroll
        for (int c = 0; c < kCols; c++) {
            dk[head_k + (long long)j * D + lane + 32 * c] = from_f32<T>(adk[r][c] * scale);
            dv[head_k + (long long)j * D + lane + 32 * c] = from_f32<T>(adv[r][c]);
        }
    }
}

template <typename T, int D>
__global__ void __launch_bounds__(kWarps * 32)
    dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
              const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
              T* __restrict__ dq, int Tq, int Tk, const int* __restrict__ kv_len, int H, float scale,
              float scale_log2) {
    await_predecessors();
    constexpr int kCols = D / 32;
    ONESTEP_DYNAMIC_SHARED(float, smem);
    float* Ks = smem;
    float* Vs = Ks + kTile * (D + 1);
    float* Qs = Vs + kTile * (D + 1);
    float* dOs = Qs + kTile * D;
    float* Ps = dOs + kTile * D;
    float* dSs = Ps + kTile * kTile;
    float* lse_s = dSs + kTile * kTile;
    float* delta_s = lse_s + kTile;

    const int bh = blockIdx.y, b = bh / H, q0 = blockIdx.x * kTile;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const long long head_q = (long long)bh * Tq * D, head_k = (long long)bh * Tk * D;
    const int kv_end = key_end(kv_len, b, Tk);

    load_tile<D>(Qs, D, q + head_q, q0, Tq);
    load_tile<D>(dOs, D, dout + head_q, q0, Tq);
    if (threadIdx.x < kTile) {
        const bool in = q0 + int(threadIdx.x) < Tq;
        lse_s[threadIdx.x] = in ? lse[(long long)bh * Tq + q0 + threadIdx.x] : -INFINITY;
        delta_s[threadIdx.x] = in ? delta[(long long)bh * Tq + q0 + threadIdx.x] : 0.0f;
    }
    float adq[kRowsPerWarpB][kCols];
    #pragma unroll
    for (int r = 0; r < kRowsPerWarpB; r++)
        #pragma unroll
        for (int c = 0; c < kCols; c++) adq[r][c] = 0.0f;

    for (int k0 = 0; k0 < kv_end; k0 += kTile) {
        __syncthreads();  // previous key tile's readers (and the Q/dO loads) are done
        load_tile<D>(Ks, D + 1, k + head_k, k0, kv_end);
        load_tile<D>(Vs, D + 1, v + head_k, k0, kv_end);
        __syncthreads();
        scores_and_ds<D>(Qs, dOs, Ks, Vs, lse_s, delta_s, Ps, dSs, k0 + lane < kv_end, q0, Tq, scale_log2);
        __syncwarp();  // each warp reads only its own dS rows
        #pragma unroll
        for (int r = 0; r < kRowsPerWarpB; r++) {
            const int i = warp * kRowsPerWarpB + r;
            for (int j = 0; j < kTile; j++) {
                const float ds = dSs[i * kTile + j];
                #pragma unroll
                for (int c = 0; c < kCols; c++) adq[r][c] += ds * Ks[j * (D + 1) + lane + 32 * c];
            }
        }
    }
    #pragma unroll
    for (int r = 0; r < kRowsPerWarpB; r++) {
        const int i = q0 + warp * kRowsPerWarpB + r;
        if (i >= Tq) continue;
        #pragma unroll
        for (int c = 0; c < kCols; c++) dq[head_q + (long long)i * D + lane + 32 * c] = from_f32<T>(adq[r][c] * scale);
    }
}

template <typename T, int D>
static cudaError_t launch_backward_d(const T* q, const T* k, const T* v, const T* o, const T* dout,
                                     const float* lse, float* delta, T* dq, T* dk, T* dv, int B, int H,
                                     int Tq, int Tk, const int* kv_len, float scale, cudaStream_t stream) {
    const long long rows = (long long)B * H * Tq;
    cudaError_t e = launch_dependent(delta_kernel<T>, dim3(ceil_div(rows, 8)), dim3(256), 0, stream, o, dout, delta, rows, D);
    if (e != cudaSuccess) return e;
    const size_t smem = backward_shared_bytes(D);
    if (smem > 48 * 1024) {
        if ((e = cudaFuncSetAttribute(dk_dv_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem))) != cudaSuccess) return e;
        if ((e = cudaFuncSetAttribute(dq_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem))) != cudaSuccess) return e;
    }
    const float scale_log2 = scale * 1.4426950408889634f;
    e = launch_dependent(dk_dv_kernel<T, D>, dim3(ceil_div(Tk, kTile), unsigned(B * H)), dim3(kWarps * 32), smem, stream, q, k, v,
                         dout, lse, delta, dk, dv, Tq, Tk, kv_len, H, scale, scale_log2);
    if (e != cudaSuccess) return e;
    return launch_dependent(dq_kernel<T, D>, dim3(ceil_div(Tq, kTile), unsigned(B * H)), dim3(kWarps * 32), smem, stream, q, k, v,
                            dout, lse, delta, dq, Tq, Tk, kv_len, H, scale, scale_log2);
}

template <typename T>
static cudaError_t launch_backward(const void* q, const void* k, const void* v, const void* o, const void* dout,
                                   const float* lse, float* delta, void* dq, void* dk, void* dv, int B, int H, int Tq,
                                   int Tk, int D, const int* kv_len, float scale, cudaStream_t stream) {
    const T *tq = static_cast<const T*>(q), *tk = static_cast<const T*>(k), *tv = static_cast<const T*>(v);
    const T *to = static_cast<const T*>(o), *tdo = static_cast<const T*>(dout);
    T *tdq = static_cast<T*>(dq), *tdk = static_cast<T*>(dk), *tdv = static_cast<T*>(dv);
    switch (D) {
        case 32: return launch_backward_d<T, 32>(tq, tk, tv, to, tdo, lse, delta, tdq, tdk, tdv, B, H, Tq, Tk, kv_len, scale, stream);
        case 64: return launch_backward_d<T, 64>(tq, tk, tv, to, tdo, lse, delta, tdq, tdk, tdv, B, H, Tq, Tk, kv_len, scale, stream);
        case 128: return launch_backward_d<T, 128>(tq, tk, tv, to, tdo, lse, delta, tdq, tdk, tdv, B, H, Tq, Tk, kv_len, scale, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace attention
}  // namespace onestep

using namespace onestep;

extern "C" onestep_status onestep_attention_backward_typed(const void* q, const void* k, const void* v,
                                                           const void* o, const void* dout, const float* lse,
                                                           float* delta, void* dq, void* dk, void* dv, int B, int H,
                                                           int Tq, int Tk, int D, const int* kv_len,
                                                           float softmax_scale, onestep_dtype dtype,
                                                           cudaStream_t stream) {
    const char* fn = dtype == ONESTEP_FLOAT32 ? "onestep_attention_backward" : "onestep_attention_backward_typed";
    char shapes[160];
    attention::describe(shapes, sizeof shapes, B, H, Tq, Tk, D, dtype);
    if (const onestep_status s = attention::check_shapes(fn, shapes, B, H, Tq, Tk, D, dtype)) return s;
    if (!q || !k || !v || !o || !dout || !lse || !delta || !dq || !dk || !dv)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "every tensor and the delta workspace must be non-null");
    const auto misaligned = [](const void* p) { return (reinterpret_cast<unsigned long long>(p) & 15u) != 0; };
    if (misaligned(q) || misaligned(k) || misaligned(v) || misaligned(dout))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "q, k, v and dout must be 16-byte aligned (vector loads)");
    if (!std::isfinite(softmax_scale))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "softmax_scale must be finite");
    const float scale = attention::resolve_scale(softmax_scale, D);
    cudaError_t e = cudaErrorInvalidValue;
    switch (dtype) {
        case ONESTEP_FLOAT32:
            e = attention::launch_backward<float>(q, k, v, o, dout, lse, delta, dq, dk, dv, B, H, Tq, Tk, D, kv_len, scale, stream);
            break;
        case ONESTEP_FLOAT16:
            e = attention::launch_backward<__half>(q, k, v, o, dout, lse, delta, dq, dk, dv, B, H, Tq, Tk, D, kv_len, scale, stream);
            break;
        case ONESTEP_BFLOAT16:
            e = attention::launch_backward<__nv_bfloat16>(q, k, v, o, dout, lse, delta, dq, dk, dv, B, H, Tq, Tk, D, kv_len, scale, stream);
            break;
    }
    return check_launch(e, fn, shapes);
}

extern "C" onestep_status onestep_attention_backward(const float* q, const float* k, const float* v, const float* o,
                                                     const float* dout, const float* lse, float* delta, float* dq,
                                                     float* dk, float* dv, int B, int H, int Tq, int Tk, int D,
                                                     const int* kv_len, float softmax_scale, cudaStream_t stream) {
    return onestep_attention_backward_typed(q, k, v, o, dout, lse, delta, dq, dk, dv, B, H, Tq, Tk, D, kv_len,
                                            softmax_scale, ONESTEP_FLOAT32, stream);
}
