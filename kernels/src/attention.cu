// attention.cu: fused multi-head attention forward in fp32 with the structure of FlashAttention-2
// (Dao 2023, "FlashAttention-2", Algorithm 1): one block per (query tile, batch*head), a loop over key/value
// tiles staged in shared memory, and the online softmax of Milakov & Gimelshein 2018 (running row max m and
// running denominator l kept in registers, the output accumulator rescaled by exp(m_old - m_new) whenever
// the max grows), with the output divided by l once at the end, never per tile (FA2's first tweak).
//
// exp2 instead of exp: the softmax scale and log2(e) are folded into Q when it is loaded, so every score
// is already in base-2 units and each probability is one exp2f (FA2, Sec. 3.1; one FMUL fewer per score).
// The log-sum-exp saved for the backward pass is converted back to natural log: lse = ln2 * (m + log2 l).
//
// Masking: keys at or beyond kv_len[b] get score -inf. A row with no key (kv_len[b] = 0) never enters the
// tile loop and keeps l = 0: it writes o = 0 and lse = -inf instead of 0/0. Inside the loop, a row whose
// keys so far are all masked would have m = -inf; the kernel then uses 0 as the reference max so that
// exp2(-inf - 0) = 0 instead of exp2(-inf + inf) = NaN. With prefix masks every visited tile holds a valid
// key, so that guard only matters for masks that are not prefixes; it costs one select per row and tile.
//
// Work split inside a block (4 warps, 32 query rows, 32-key tiles): warp w owns rows 8w..8w+7. Scoring:
// lane j computes the 8 dot products of its rows with key j (K staged with a padded row pitch D+1 so the
// 32 lanes hit 32 different banks); the row max and row sum are warp shuffles. Accumulating P V: lane j
// owns output columns j, j+32, ... of its 8 rows, reading P from shared memory as a broadcast.
// Storage type T: float, __half or __nv_bfloat16 (dtype.cuh). Q, K, V are widened to fp32 as they are staged
// in shared memory and O is rounded to T once at the end, so the 16-bit instantiations do all arithmetic in
// fp32 and differ from the fp32 kernel only by the rounding of their inputs and of O.
// Layouts: the heads as (B, H, T, D) blocks, or the engine's tokens (B, T, H*D), where head h of a token is the D
// features at h*D and a row's stride is H*D. Only the two base offsets and the row stride differ, so both give the
// same bits; the token layout saves the four head split/merge kernels (and their memory traffic) around each call.
// This is the portable path (it runs in the CPU emulation too); tensor-core versions are not here.
#include "attention.cuh"
#include "dtype.cuh"
#include "onestep_kernels.h"
#include "reduce.cuh"
#include "status.cuh"

#include <cmath>
#include <cstdio>

namespace onestep {
namespace attention {

constexpr int kRowsPerWarp = kRowsPerBlock / kWarps;

size_t shared_bytes(int D) {
    return sizeof(float) * (size_t(kRowsPerBlock) * D            // Q tile, pre-scaled
                            + size_t(kKeysPerTile) * (D + 1)     // K tile, padded pitch
                            + size_t(kKeysPerTile) * D           // V tile
                            + size_t(kRowsPerBlock) * kKeysPerTile);  // P tile
}

template <typename T, int D>
__global__ void __launch_bounds__(kWarps * 32)
    forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                   T* __restrict__ o, float* __restrict__ lse, int Tq, int Tk, const int* __restrict__ kv_len,
                   int H, float scale_log2, bool tokens) {
    static_assert(D % 32 == 0, "head dim must be a multiple of the warp size");
    constexpr int kCols = D / 32;  // output columns per lane
    ONESTEP_DYNAMIC_SHARED(float, smem);
    float* Qs = smem;                                 // [kRowsPerBlock][D]
    float* Ks = Qs + kRowsPerBlock * D;               // [kKeysPerTile][D + 1]
    float* Vs = Ks + kKeysPerTile * (D + 1);          // [kKeysPerTile][D]
    float* Ps = Vs + kKeysPerTile * D;                // [kRowsPerBlock][kKeysPerTile]

    const int bh = blockIdx.y, b = bh / H;
    const int q0 = blockIdx.x * kRowsPerBlock;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int h = bh - b * H;
    // Where head (b, h) starts and the stride between its rows, in elements (see Layouts above).
    const long long head_q = tokens ? (long long)b * Tq * H * D + (long long)h * D : (long long)bh * Tq * D;
    const long long head_k = tokens ? (long long)b * Tk * H * D + (long long)h * D : (long long)bh * Tk * D;
    const long long ld = tokens ? (long long)H * D : D;
    int kv_end = Tk;
    if (kv_len) {
        const int len = kv_len[b];
        kv_end = len < 0 ? 0 : (len < Tk ? len : Tk);
    }

    // Q tile, scaled into base-2 score units; rows past Tq are zeros (computed, never stored).
    for (int i = threadIdx.x; i < kRowsPerBlock * D / 4; i += blockDim.x) {
        const int r = i / (D / 4), c = (i % (D / 4)) * 4;
        float4 val = make_float4(0.f, 0.f, 0.f, 0.f);
        if (q0 + r < Tq) val = load4(q + head_q + (q0 + r) * ld + c);
        Qs[r * D + c + 0] = val.x * scale_log2;
        Qs[r * D + c + 1] = val.y * scale_log2;
        Qs[r * D + c + 2] = val.z * scale_log2;
        Qs[r * D + c + 3] = val.w * scale_log2;
    }

    float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kCols];
    #pragma unroll
    for (int r = 0; r < kRowsPerWarp; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        #pragma unroll
        for (int c = 0; c < kCols; c++) acc[r][c] = 0.0f;
    }

    for (int k0 = 0; k0 < kv_end; k0 += kKeysPerTile) {
        __syncthreads();  // the previous tile's readers (and the Q tile's writers) are done
        for (int i = threadIdx.x; i < kKeysPerTile * D / 4; i += blockDim.x) {
            const int j = i / (D / 4), c = (i % (D / 4)) * 4;
            float4 kk = make_float4(0.f, 0.f, 0.f, 0.f), vv = kk;
            if (k0 + j < kv_end) {
                kk = load4(k + head_k + (k0 + j) * ld + c);
                vv = load4(v + head_k + (k0 + j) * ld + c);
            }
            float* kr = Ks + j * (D + 1) + c;
            kr[0] = kk.x, kr[1] = kk.y, kr[2] = kk.z, kr[3] = kk.w;
            *reinterpret_cast<float4*>(Vs + j * D + c) = vv;
        }
        __syncthreads();

        const bool key_valid = k0 + lane < kv_end;
        #pragma unroll
        for (int r = 0; r < kRowsPerWarp; r++) {
            const int row = warp * kRowsPerWarp + r;
            const float* qr = Qs + row * D;
            const float* kr = Ks + lane * (D + 1);
            float s = 0.0f;
#pragma unroll 8
            for (int d = 0; d < D; d++) s += qr[d] * kr[d];
            s = key_valid ? s : -INFINITY;
            const float m_new = fmaxf(m[r], warp_max(s));
            const float m_ref = m_new == -INFINITY ? 0.0f : m_new;  // all masked so far: avoid inf - inf
            const float p = exp2f(s - m_ref);
            const float alpha = exp2f(m[r] - m_ref);
            l[r] = l[r] * alpha + warp_sum(p);
            m[r] = m_new;
            #pragma unroll
            for (int c = 0; c < kCols; c++) acc[r][c] *= alpha;
            Ps[row * kKeysPerTile + lane] = p;
        }
        __syncwarp();  // this warp's P rows are written before its lanes read them
        #pragma unroll
        for (int r = 0; r < kRowsPerWarp; r++) {
            const float* pr = Ps + (warp * kRowsPerWarp + r) * kKeysPerTile;
            for (int j = 0; j < kKeysPerTile; j++) {
                const float pj = pr[j];
                #pragma unroll
                for (int c = 0; c < kCols; c++) acc[r][c] += pj * Vs[j * D + lane + 32 * c];
            }
        }
    }

    #pragma unroll
    for (int r = 0; r < kRowsPerWarp; r++) {
        const int row = q0 + warp * kRowsPerWarp + r;
        if (row >= Tq) continue;
        const float inv_l = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        T* orow = o + head_q + row * ld;
        #pragma unroll
        for (int c = 0; c < kCols; c++) orow[lane + 32 * c] = from_f32<T>(acc[r][c] * inv_l);
        if (lane == 0) lse[(long long)bh * Tq + row] = l[r] > 0.0f ? 0.69314718056f * (m[r] + log2f(l[r])) : -INFINITY;
    }
}

template <typename T, int D>
static cudaError_t launch_d(const T* q, const T* k, const T* v, T* o, float* lse, int B, int H, int Tq,
                            int Tk, const int* kv_len, float scale, cudaStream_t stream, bool tokens) {
    const size_t smem = shared_bytes(D);
    if (smem > 48 * 1024) {
        // Above 48 KiB a kernel must opt in (sm_80: up to 163 KiB, sm_90: 227 KiB).
        cudaError_t e = cudaFuncSetAttribute(forward_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
        if (e != cudaSuccess) return e;
    }
    const dim3 grid(ceil_div(Tq, kRowsPerBlock), unsigned(B * H));
    const float scale_log2 = scale * 1.4426950408889634f;  // log2(e)
    return launch(forward_kernel<T, D>, grid, dim3(kWarps * 32), smem, stream, q, k, v, o, lse, Tq, Tk, kv_len, H,
                  scale_log2, tokens);
}

template <typename T>
cudaError_t launch_forward(const T* q, const T* k, const T* v, T* o, float* lse, int B, int H, int Tq, int Tk, int D,
                           const int* kv_len, float scale, cudaStream_t stream, bool tokens) {
    switch (D) {
        case 32: return launch_d<T, 32>(q, k, v, o, lse, B, H, Tq, Tk, kv_len, scale, stream, tokens);
        case 64: return launch_d<T, 64>(q, k, v, o, lse, B, H, Tq, Tk, kv_len, scale, stream, tokens);
        case 128: return launch_d<T, 128>(q, k, v, o, lse, B, H, Tq, Tk, kv_len, scale, stream, tokens);
    }
    return cudaErrorInvalidValue;
}
template cudaError_t launch_forward<float>(const float*, const float*, const float*, float*, float*, int, int, int, int,
                                           int, const int*, float, cudaStream_t, bool);
template cudaError_t launch_forward<__half>(const __half*, const __half*, const __half*, __half*, float*, int, int, int,
                                            int, int, const int*, float, cudaStream_t, bool);
template cudaError_t launch_forward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                                                   __nv_bfloat16*, float*, int, int, int, int, int, const int*, float,
                                                   cudaStream_t, bool);

void describe(char* out, size_t size, int B, int H, int Tq, int Tk, int D, onestep_dtype dtype) {
    if (dtype == ONESTEP_FLOAT32)
        std::snprintf(out, size, "B=%d, H=%d, Tq=%d, Tk=%d, D=%d", B, H, Tq, Tk, D);
    else
        std::snprintf(out, size, "B=%d, H=%d, Tq=%d, Tk=%d, D=%d, dtype=%s", B, H, Tq, Tk, D, dtype_name(dtype));
}

onestep_status check_shapes(const char* fn, const char* shapes, int B, int H, int Tq, int Tk, int D, onestep_dtype dtype) {
    if (dtype_bytes(dtype) == 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (B <= 0 || H <= 0 || Tq <= 0 || Tk <= 0)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "B, H, Tq and Tk must be positive");
    if (D != 32 && D != 64 && D != 128)
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "head dim must be 32, 64 or 128");
    if ((long long)B * H > 65535) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "B * H exceeds 65535");
    return ONESTEP_OK;
}

float resolve_scale(float softmax_scale, int D) {
    return softmax_scale > 0.0f ? softmax_scale : 1.0f / std::sqrt(float(D));
}

}  // namespace attention
}  // namespace onestep

using namespace onestep;

// The forward's C entry points: heads as (B, H, T, D) blocks, or (tokens) the engine's (B, T, H*D) rows.
static onestep_status forward(const char* fn, const void* q, const void* k, const void* v, void* o, float* lse, int B,
                              int H, int Tq, int Tk, int D, const int* kv_len, float softmax_scale,
                              onestep_dtype dtype, cudaStream_t stream, bool tokens) {
    char shapes[160];
    attention::describe(shapes, sizeof shapes, B, H, Tq, Tk, D, dtype);
    if (const onestep_status s = attention::check_shapes(fn, shapes, B, H, Tq, Tk, D, dtype)) return s;
    if (!q || !k || !v || !o || !lse) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "q, k, v, o and lse must be non-null");
    const auto misaligned = [](const void* p) { return (reinterpret_cast<unsigned long long>(p) & 15u) != 0; };
    if (misaligned(q) || misaligned(k) || misaligned(v))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "q, k and v must be 16-byte aligned (vector loads)");
    if (!std::isfinite(softmax_scale))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "softmax_scale must be finite");
    const float scale = attention::resolve_scale(softmax_scale, D);
    cudaError_t e = cudaErrorInvalidValue;
    switch (dtype) {
        case ONESTEP_FLOAT32:
            e = attention::launch_forward(static_cast<const float*>(q), static_cast<const float*>(k),
                                          static_cast<const float*>(v), static_cast<float*>(o), lse, B, H, Tq, Tk, D,
                                          kv_len, scale, stream, tokens);
            break;
        case ONESTEP_FLOAT16:
            e = attention::launch_forward(static_cast<const __half*>(q), static_cast<const __half*>(k),
                                          static_cast<const __half*>(v), static_cast<__half*>(o), lse, B, H, Tq, Tk, D,
                                          kv_len, scale, stream, tokens);
            break;
        case ONESTEP_BFLOAT16:
            e = attention::launch_forward(static_cast<const __nv_bfloat16*>(q), static_cast<const __nv_bfloat16*>(k),
                                          static_cast<const __nv_bfloat16*>(v), static_cast<__nv_bfloat16*>(o), lse, B,
                                          H, Tq, Tk, D, kv_len, scale, stream, tokens);
            break;
    }
    return check_launch(e, fn, shapes);
}

extern "C" onestep_status onestep_attention_forward_typed(const void* q, const void* k, const void* v, void* o,
                                                          float* lse, int B, int H, int Tq, int Tk, int D,
                                                          const int* kv_len, float softmax_scale, onestep_dtype dtype,
                                                          cudaStream_t stream) {
    return forward(dtype == ONESTEP_FLOAT32 ? "onestep_attention_forward" : "onestep_attention_forward_typed", q, k, v,
                   o, lse, B, H, Tq, Tk, D, kv_len, softmax_scale, dtype, stream, false);
}

extern "C" onestep_status onestep_attention_forward_tokens_typed(const void* q, const void* k, const void* v, void* o,
                                                                 float* lse, int B, int H, int Tq, int Tk, int D,
                                                                 const int* kv_len, float softmax_scale,
                                                                 onestep_dtype dtype, cudaStream_t stream) {
    return forward("onestep_attention_forward_tokens_typed", q, k, v, o, lse, B, H, Tq, Tk, D, kv_len, softmax_scale,
                   dtype, stream, true);
}

extern "C" onestep_status onestep_attention_forward(const float* q, const float* k, const float* v, float* o,
                                                    float* lse, int B, int H, int Tq, int Tk, int D,
                                                    const int* kv_len, float softmax_scale, cudaStream_t stream) {
    return onestep_attention_forward_typed(q, k, v, o, lse, B, H, Tq, Tk, D, kv_len, softmax_scale, ONESTEP_FLOAT32,
                                           stream);
}
