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
// This is the portable path, and fp32's. fp16 and bf16 take the tensor-core path (namespace tc below) unless a caller
// asks for the portable one; both run in the CPU emulation. The tc namespace also holds the attention fused with the
// block's output projection and residual (tc::out_forward_kernel, onestep_attention_residual_qkv_typed).
#include "attention.cuh"
#include "dtype.cuh"
#include "onestep_kernels.h"
#include "reduce.cuh"
#include "status.cuh"
#include "tensor_core.cuh"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>

namespace onestep {
namespace attention {

constexpr int kRowsPerWarp = kRowsPerBlock / kWarps;

// This block's head (blockIdx.y = b * H + h): where its rows of q and of k/v start and the stride between those
// rows, in elements (see Layouts above), and how many of its keys it attends to (kv_len[b], clamped; Tk without).
// tokens: 0 for the (B, H, T, D) blocks; m >= 1 for the token layout with q, k, v rows m * H * D apart: 1 for three
// tensors, 3 for one packed (B, T, 3 H D) projection (each token's q, k and v features in turn). o's rows are
// H * D apart whatever m is: out_base/out_ld give them at the store, so the main loop keeps no more live registers
// than the three-tensor layout (the portable kernel at D = 64 spilled with two more 64-bit values in Head).
struct Head {
    int h, kv_end;
    long long q, k, ld;
};
__device__ __forceinline__ Head head(int H, int D, int Tq, int Tk, const int* kv_len, int tokens) {
    const int bh = blockIdx.y, b = bh / H, h = bh - b * H;
    int kv_end = Tk;
    if (kv_len) {
        const int len = kv_len[b];
        kv_end = len < 0 ? 0 : (len < Tk ? len : Tk);
    }
    const long long ld = tokens ? (long long)tokens * H * D : D;
    return {h, kv_end, tokens ? (long long)b * Tq * ld + (long long)h * D : (long long)bh * Tq * D,
            tokens ? (long long)b * Tk * ld + (long long)h * D : (long long)bh * Tk * D, ld};
}
// Where this block's rows of o start and their stride, recomputed from the block index at the store (kernel
// parameters and special registers: nothing extra stays live through the main loop).
__device__ __forceinline__ long long out_base(int H, int D, int Tq, int tokens) {
    const int bh = blockIdx.y, b = bh / H, h = bh - b * H;
    return tokens ? (long long)b * Tq * H * D + (long long)h * D : (long long)bh * Tq * D;
}
__device__ __forceinline__ long long out_ld(int H, int D, int tokens) { return tokens ? (long long)H * D : D; }

// Four values at features f .. f + 3 with their biases added, each rounded to T once (the bits the unfused bias add,
// onestep_add_per_channel_typed, would have stored); no bias: the values as they are.
template <typename T>
__device__ __forceinline__ float4 biased(float4 v, const T* b, int f) {
    if (!b) return v;
    const float4 c = load4(b + f);
    return make_float4(to_f32(from_f32<T>(v.x + c.x)), to_f32(from_f32<T>(v.y + c.y)), to_f32(from_f32<T>(v.z + c.z)),
                       to_f32(from_f32<T>(v.w + c.w)));
}

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
                   int H, float scale_log2, int tokens, Biases<T> bias) {
    await_predecessors();
    static_assert(D % 32 == 0, "head dim must be a multiple of the warp size");
    constexpr int kCols = D / 32;  // output columns per lane
    ONESTEP_DYNAMIC_SHARED(float, smem);
    float* Qs = smem;                                 // [kRowsPerBlock][D]
    float* Ks = Qs + kRowsPerBlock * D;               // [kKeysPerTile][D + 1]
    float* Vs = Ks + kKeysPerTile * (D + 1);          // [kKeysPerTile][D]
    float* Ps = Vs + kKeysPerTile * D;                // [kRowsPerBlock][kKeysPerTile]

    const int q0 = blockIdx.x * kRowsPerBlock;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const Head hd = head(H, D, Tq, Tk, kv_len, tokens);
    const int h = hd.h, bh = blockIdx.y, kv_end = hd.kv_end;
    const long long head_q = hd.q, head_k = hd.k, ld = hd.ld;

    // Q tile, scaled into base-2 score units; rows past Tq are zeros (computed, never stored).
    for (int i = threadIdx.x; i < kRowsPerBlock * D / 4; i += blockDim.x) {
        const int r = i / (D / 4), c = (i % (D / 4)) * 4;
        float4 val = make_float4(0.f, 0.f, 0.f, 0.f);
        if (q0 + r < Tq) val = biased<T>(load4(q + head_q + (q0 + r) * ld + c), bias.q, h * D + c);
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
                kk = biased<T>(load4(k + head_k + (k0 + j) * ld + c), bias.k, h * D + c);
                vv = biased<T>(load4(v + head_k + (k0 + j) * ld + c), bias.v, h * D + c);
            }
            float* kr = Ks + j * (D + 1) + c;
            kr[0] = kk.x, kr[1] = kk.y, kr[2] = kk.z, kr[3] = kk.w;
            store4(Vs + j * D + c, vv);
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
        T* orow = o + out_base(H, D, Tq, tokens) + row * out_ld(H, D, tokens);
        #pragma unroll
        for (int c = 0; c < kCols; c++) orow[lane + 32 * c] = from_f32<T>(acc[r][c] * inv_l);
        if (lane == 0) lse[(long long)bh * Tq + row] = l[r] > 0.0f ? 0.69314718056f * (m[r] + log2f(l[r])) : -INFINITY;
    }
}

// ---- the tensor-core path (16-bit storage; sm_80+) -------------------------------------------------------------
// FlashAttention-2 (Dao 2023, Alg. 1 and Sec. 3.3's split of the query rows over warps) with both products on
// mma.sync.m16n8k16 (fp16 or bf16 operands, fp32 accumulation). The PTX ISA ("Matrix Fragments for mma.m16n8k16
// with floating point type") fixes the fragment layouts (lane = 4 g + t: A and C rows g and g + 8, columns 2t, 2t + 1,
// and + 8 for A's second half; B rows 2t, 2t + 1 (+ 8) of column g), so a 64-key tile stays in registers, as in FA2:
//   - each warp keeps its 16 query rows of Q as A fragments for the whole kernel (loaded once);
//   - S = Q K^T for 64 keys is 8 accumulator tiles (16 x 8), 4 floats a lane: two rows, two keys each;
//   - a row's max and sum need only the 4 lanes of its group (two xor shuffles);
//   - P's accumulators are the A fragments of P V once pairs are packed to 16 bits (tiles 2j, 2j + 1 -> keys 16j..);
//   - O (16 x D) lives in D / 8 accumulator tiles, rescaled by alpha in registers.
// Shared memory holds only the K tile ([key][d], pitch D + 8: a B fragment's 8 rows x 4 words hit 32 banks) and V
// transposed ([d][key], pitch 72), so every B fragment is one 32-bit load. 4 warps, 64 query rows a block.
// Differences from the portable path: P is rounded to T before P V (FA2 does the same), so results agree with it to
// T's rounding, not bits. Development record, timings and the WMMA attempt it replaces: kernels/dev/attention_forward.cu
// versions 3, 4, 8-10 (H100, 2026-11-26: 114.5 TFLOP/s at B=8 H=8 T=1024 D=64, 7.9x the portable kernel; 47 us at
// the CIFAR U-Net's B=64 H=4 T=256 D=64). The emulation runs it through emu::mma_m16n8k16, so CTest covers its
// indexing, masking and softmax on machines without a GPU; run_gpu_checks.sh checks the layouts against the hardware.
namespace tc {
constexpr int kWarps = 4, kRows = 16 * kWarps, kKeys = 64, kVec = 8;  // kVec: 16-bit elements per 16-byte move

// The tensor-core primitives (mma.sync m16n8k16, fragment packing, 16-bit moves) shared with conv.cu.
using tensor_core::cp_async16;
using tensor_core::cp_async_commit;
using tensor_core::cp_async_wait;
using tensor_core::ldmatrix_x4;
using tensor_core::load_as;
using tensor_core::mma;
using tensor_core::pack;
using tensor_core::store_as;

// The 16-bit value with these bits (the inverse of __half_as_ushort / __bfloat16_as_ushort).
template <typename T>
__device__ __forceinline__ T from_bits(unsigned short u) {
    if constexpr (std::is_same_v<T, __half>) return __ushort_as_half(u);
    else return __ushort_as_bfloat16(u);
}

// A packed pair of T at features f, f + 1 with their biases added and rounded to T once (as the unfused bias add
// would have stored them); no bias: the pair as it is.
template <typename T>
__device__ __forceinline__ uint32_t biased_pair(uint32_t w, const T* b, int f) {
    if (!b) return w;
    return pack<T>(to_f32(from_bits<T>(static_cast<unsigned short>(w & 0xffffu))) + to_f32(b[f]),
                   to_f32(from_bits<T>(static_cast<unsigned short>(w >> 16))) + to_f32(b[f + 1]));
}

// The same for 8 consecutive values (one 16-byte move) at features f .. f + 7.
template <typename T>
__device__ __forceinline__ int4 biased8(int4 v, const T* b, int f) {
    if (!b) return v;
    uint32_t w[4];
    std::memcpy(w, &v, 16);
#pragma unroll
    for (int j = 0; j < 4; j++) w[j] = biased_pair<T>(w[j], b, f + 2 * j);
    std::memcpy(&v, w, 16);
    return v;
}

// Eight values of V (one 16-byte move: features cv .. cv + 7 of key rv) into column rv of V^T (row pitch `pitch`).
template <typename T>
__device__ __forceinline__ void store_column8(T* Vt, int pitch, int cv, int rv, int4 vv) {
#ifdef ONESTEP_EMULATION
    T ve[kVec];
    std::memcpy(ve, &vv, 16);
#else
    const T* ve = reinterpret_cast<const T*>(&vv);
#endif
#pragma unroll
    for (int j = 0; j < kVec; j++) Vt[(cv + j) * pitch + rv] = ve[j];
}

// The A fragments of 16 query rows of a head (r_lo = first row + g, r_hi = r_lo + 8 in this lane), one per 16-wide
// step over d, with the q bias added (rows past Tq: zeros); and the zeroed O accumulator.
template <typename T, int D>
__device__ __forceinline__ void load_q(uint32_t (&qa)[D / 16][4], float (&oacc)[D / 8][4], const T* q, long long head_q,
                                       long long ld, int r_lo, int r_hi, int Tq, int t, int h, const T* q_bias) {
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        const int c = 16 * kk + 2 * t;
        const int f = h * D + c;  // the feature within the token, for the bias
        qa[kk][0] = r_lo < Tq ? biased_pair<T>(load_as<uint32_t>(q + head_q + r_lo * ld + c), q_bias, f) : 0u;
        qa[kk][1] = r_hi < Tq ? biased_pair<T>(load_as<uint32_t>(q + head_q + r_hi * ld + c), q_bias, f) : 0u;
        qa[kk][2] = r_lo < Tq ? biased_pair<T>(load_as<uint32_t>(q + head_q + r_lo * ld + c + 8), q_bias, f + 8) : 0u;
        qa[kk][3] = r_hi < Tq ? biased_pair<T>(load_as<uint32_t>(q + head_q + r_hi * ld + c + 8), q_bias, f + 8) : 0u;
    }
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++) oacc[dn][0] = oacc[dn][1] = oacc[dn][2] = oacc[dn][3] = 0.0f;
}

// Stages the NK-key tile at k0 into shared memory, biases added: K as [key][d] (pitch PK), V transposed as [d][key]
// (pitch PV); keys >= kv_end are zero. Threads first, first + stride, ... share the work (a block, or one warp). K is
// read a whole row at a time (coalesced); V one 16-byte column chunk of consecutive keys per thread, so the
// transposed 16-bit stores of a warp fall in consecutive words (no bank conflicts).
template <typename T, int D, int NK, int PK, int PV>
__device__ __forceinline__ void stage_kv(T* Ks, T* Vt, const T* k, const T* v, long long head_k, long long ld, int k0,
                                         int kv_end, int h, const Biases<T>& bias, int first, int stride) {
    for (int i = first; i < NK * D / kVec; i += stride) {
        const int r = i / (D / kVec), c = (i % (D / kVec)) * kVec;
        int4 kv = make_int4(0, 0, 0, 0), vv = kv;
        if (k0 + r < kv_end) kv = biased8<T>(load_as<int4>(k + head_k + (k0 + r) * ld + c), bias.k, h * D + c);
        store_as<int4>(Ks + r * PK + c, kv);
        const int rv = i % NK, cv = (i / NK) * kVec;
        if (k0 + rv < kv_end) vv = biased8<T>(load_as<int4>(v + head_k + (k0 + rv) * ld + cv), bias.v, h * D + cv);
        store_column8<T>(Vt, PV, cv, rv, vv);
    }
}

// stage_kv with V stored as it is read, [key][d] like K (pitch P for both), for tile_step's LDM path: one 16-byte
// store each, no transposition.
template <typename T, int D, int NK, int P>
__device__ __forceinline__ void stage_kv_rows(T* Ks, T* Vs, const T* k, const T* v, long long head_k, long long ld,
                                              int k0, int kv_end, int h, const Biases<T>& bias, int first, int stride) {
    for (int i = first; i < NK * D / kVec; i += stride) {
        const int r = i / (D / kVec), c = (i % (D / kVec)) * kVec;
        int4 kv = make_int4(0, 0, 0, 0), vv = kv;
        if (k0 + r < kv_end) {
            kv = biased8<T>(load_as<int4>(k + head_k + (k0 + r) * ld + c), bias.k, h * D + c);
            vv = biased8<T>(load_as<int4>(v + head_k + (k0 + r) * ld + c), bias.v, h * D + c);
        }
        store_as<int4>(Ks + r * P + c, kv);
        store_as<int4>(Vs + r * P + c, vv);
    }
}

// A row's sum over the 4 lanes of its quad (lanes 4g .. 4g + 3 hold parts of rows g and g + 8).
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// The end of a warp's 16 rows (r_lo, r_hi in this lane): l summed over each row's quad, O divided by it and stored in
// T (a row without keys: 0), and lse = ln 2 (m + log2 l) in natural-log units (-inf without keys). Rows past Tq are
// not stored. Shared by the default and the pipelined kernel.
template <typename T, int D>
__device__ __forceinline__ void finish_rows(T* o, float* lse, const float (&oacc)[D / 8][4], float m_lo, float m_hi,
                                            float l_lo, float l_hi, int r_lo, int r_hi, int Tq, int H, int tokens,
                                            int t) {
    const int bh = blockIdx.y;
    l_lo = quad_sum(l_lo), l_hi = quad_sum(l_hi);
    const float inv_lo = l_lo > 0.0f ? 1.0f / l_lo : 0.0f, inv_hi = l_hi > 0.0f ? 1.0f / l_hi : 0.0f;
    const long long head_o = out_base(H, D, Tq, tokens), ld_o = out_ld(H, D, tokens);
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++) {
        const int c = dn * 8 + 2 * t;
        if (r_lo < Tq) store_as<uint32_t>(o + head_o + r_lo * ld_o + c, pack<T>(oacc[dn][0] * inv_lo, oacc[dn][1] * inv_lo));
        if (r_hi < Tq) store_as<uint32_t>(o + head_o + r_hi * ld_o + c, pack<T>(oacc[dn][2] * inv_hi, oacc[dn][3] * inv_hi));
    }
    if (t == 0) {
        if (r_lo < Tq) lse[(long long)bh * Tq + r_lo] = l_lo > 0.0f ? 0.69314718056f * (m_lo + log2f(l_lo)) : -INFINITY;
        if (r_hi < Tq) lse[(long long)bh * Tq + r_hi] = l_hi > 0.0f ? 0.69314718056f * (m_hi + log2f(l_hi)) : -INFINITY;
    }
}

// One tile of NK keys (its first key k0) for MT m-tiles of 16 query rows a warp (m-tile i: rows g and g + 8 of its
// 16 in this lane): S = Q K^T from the Q fragments qa[i] and the tile's K (Ks, [key][d] with pitch PK) on tensor
// cores, masked past kv_end and scaled (base 2), the online softmax update of m[i] = (m_lo, m_hi), l[i] and the O
// accumulator (FA2, Alg. 1, lines 8-10), and O += P V with V^T in Vt ([d][key], pitch PV). Each B fragment of K and V
// is loaded once and multiplies all MT m-tiles: with MT = 2 a warp's shared-memory reads per mma.sync halve (FA2's
// 128-row blocks, 32 rows a warp, for head dim 64). Shared by every tensor-core kernel here (tile_step below is MT 1).
// LDM (the pipelined kernels): the B fragments come from ldmatrix.x4, two mma steps' worth an instruction, and V is
// stored [key][d] like K (pitch PV) and read with .trans. The fragments hold the same values and the mma.sync calls
// run in the same order as the 32-bit loads', so both give the same bits; so does every MT, since each accumulator
// sees the same mma sequence whatever the other m-tiles do.
template <typename T, int D, int NK, int PK, int PV, bool LDM, int MT>
__device__ __forceinline__ void tile_step_m(const uint32_t (&qa)[MT][D / 16][4], const T* Ks, const T* Vt, int k0,
                                            int kv_end, float scale_log2, int g, int t, float (&m)[MT][2],
                                            float (&l)[MT][2], float (&oacc)[MT][D / 8][4]) {
    static_assert(!LDM || (D % 32 == 0 && NK % 32 == 0), "ldmatrix.x4 loads two 16-wide steps at a time");
    const int lane = 4 * g + t;
    float s[MT][NK / 8][4];  // S tile n of m-tile i: keys n*8 + 2t, +1 of rows r_lo (0, 1) and r_hi (2, 3)
#pragma unroll
    for (int n = 0; n < NK / 8; n++) {
#pragma unroll
        for (int i = 0; i < MT; i++) s[i][n][0] = s[i][n][1] = s[i][n][2] = s[i][n][3] = 0.0f;
        if constexpr (LDM) {
            // Matrix m of one ldmatrix: keys n*8 .. n*8 + 7 (lane & 7 gives the row) at d 16 kk + 8 m: the b0, b1 of
            // steps kk and kk + 1.
            const T* kr = Ks + (n * 8 + (lane & 7)) * PK + 8 * (lane >> 3);
#pragma unroll
            for (int kk = 0; kk < D / 16; kk += 2) {
                uint32_t b[4];
                ldmatrix_x4<false>(b, kr + 16 * kk);
#pragma unroll
                for (int i = 0; i < MT; i++) {
                    mma<T>(s[i][n], qa[i][kk], b[0], b[1]);
                    mma<T>(s[i][n], qa[i][kk + 1], b[2], b[3]);
                }
            }
        } else {
            const T* kr = Ks + (n * 8 + g) * PK + 2 * t;  // B = K^T: column g of the tile is key n*8 + g
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                const uint32_t b0 = load_as<uint32_t>(kr + 16 * kk), b1 = load_as<uint32_t>(kr + 16 * kk + 8);
#pragma unroll
                for (int i = 0; i < MT; i++) mma<T>(s[i][n], qa[i][kk], b0, b1);
            }
        }
    }
    uint32_t pa[MT][NK / 16][4];  // P as A fragments: tiles 2j and 2j + 1 are keys [16j, 16j + 16)
#pragma unroll
    for (int i = 0; i < MT; i++) {
        float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
        for (int n = 0; n < NK / 8; n++)
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const bool in = k0 + n * 8 + 2 * t + j < kv_end;
                s[i][n][j] = in ? s[i][n][j] * scale_log2 : -INFINITY;
                s[i][n][2 + j] = in ? s[i][n][2 + j] * scale_log2 : -INFINITY;
                mx_lo = fmaxf(mx_lo, s[i][n][j]);
                mx_hi = fmaxf(mx_hi, s[i][n][2 + j]);
            }
        mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 1));
        mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 2));
        mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 1));
        mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 2));
        const float new_lo = fmaxf(m[i][0], mx_lo), new_hi = fmaxf(m[i][1], mx_hi);
        // All keys masked so far: 0 as the reference, so exp2(-inf - 0) = 0 instead of NaN (as the portable path).
        const float ref_lo = new_lo == -INFINITY ? 0.0f : new_lo, ref_hi = new_hi == -INFINITY ? 0.0f : new_hi;
        const float alpha_lo = exp2f(m[i][0] - ref_lo), alpha_hi = exp2f(m[i][1] - ref_hi);
        m[i][0] = new_lo, m[i][1] = new_hi;
        l[i][0] *= alpha_lo, l[i][1] *= alpha_hi;
#pragma unroll
        for (int dn = 0; dn < D / 8; dn++) {
            oacc[i][dn][0] *= alpha_lo, oacc[i][dn][1] *= alpha_lo;
            oacc[i][dn][2] *= alpha_hi, oacc[i][dn][3] *= alpha_hi;
        }
#pragma unroll
        for (int n = 0; n < NK / 8; n++) {
            const float p0 = exp2f(s[i][n][0] - ref_lo), p1 = exp2f(s[i][n][1] - ref_lo);
            const float p2 = exp2f(s[i][n][2] - ref_hi), p3 = exp2f(s[i][n][3] - ref_hi);
            l[i][0] += p0 + p1, l[i][1] += p2 + p3;
            pa[i][n / 2][(n % 2) * 2 + 0] = pack<T>(p0, p1);  // row g: registers 0 (keys 2t..) and 2 (keys 8 + 2t..)
            pa[i][n / 2][(n % 2) * 2 + 1] = pack<T>(p2, p3);  // row g + 8: registers 1 and 3
        }
    }
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++) {
        if constexpr (LDM) {
            // Matrix m of one ldmatrix.trans: keys 16 j + 8 m .. + 7 (lane & 7 the row) at d dn*8 .. dn*8 + 7: the b0,
            // b1 of key steps j and j + 1.
            const T* vr = Vt + lane * PV + dn * 8;
#pragma unroll
            for (int j = 0; j < NK / 16; j += 2) {
                uint32_t b[4];
                ldmatrix_x4<true>(b, vr + 16 * j * PV);
#pragma unroll
                for (int i = 0; i < MT; i++) {
                    mma<T>(oacc[i][dn], pa[i][j], b[0], b[1]);
                    mma<T>(oacc[i][dn], pa[i][j + 1], b[2], b[3]);
                }
            }
        } else {
            const T* vr = Vt + (dn * 8 + g) * PV + 2 * t;  // B = V: column g of the tile is d = dn*8 + g
#pragma unroll
            for (int j = 0; j < NK / 16; j++) {
                const uint32_t b0 = load_as<uint32_t>(vr + 16 * j), b1 = load_as<uint32_t>(vr + 16 * j + 8);
#pragma unroll
                for (int i = 0; i < MT; i++) mma<T>(oacc[i][dn], pa[i][j], b0, b1);
            }
        }
    }
}

// tile_step_m for one m-tile (a warp's 16 rows), its state as scalars: the default, split-keys and output-projection
// kernels' step.
template <typename T, int D, int NK, int PK, int PV, bool LDM = false>
__device__ __forceinline__ void tile_step(const uint32_t (&qa)[D / 16][4], const T* Ks, const T* Vt, int k0,
                                          int kv_end, float scale_log2, int g, int t, float& m_lo, float& m_hi,
                                          float& l_lo, float& l_hi, float (&oacc)[D / 8][4]) {
    float m[1][2] = {{m_lo, m_hi}}, l[1][2] = {{l_lo, l_hi}};
    tile_step_m<T, D, NK, PK, PV, LDM, 1>(reinterpret_cast<const uint32_t(&)[1][D / 16][4]>(qa), Ks, Vt, k0, kv_end,
                                          scale_log2, g, t, m, l, reinterpret_cast<float(&)[1][D / 8][4]>(oacc));
    m_lo = m[0][0], m_hi = m[0][1], l_lo = l[0][0], l_hi = l[0][1];
}

// One warp's walk over the NK-key tiles first, first + step, ... below kv_end, each staged by the warp itself into
// its own Ks and Vs ([key][d], pitch P) and then taken by tile_step's ldmatrix path: the loop of the split-keys
// kernel's warps and of the attention with its output projection.
template <typename T, int D, int NK, int P>
__device__ __forceinline__ void warp_tiles(const uint32_t (&qa)[D / 16][4], T* Ks, T* Vs, const T* k, const T* v,
                                           long long head_k, long long ld, int first, int step, int kv_end, int h,
                                           const Biases<T>& bias, float scale_log2, int lane, float& m_lo, float& m_hi,
                                           float& l_lo, float& l_hi, float (&oacc)[D / 8][4]) {
    for (int k0 = first; k0 < kv_end; k0 += step) {
        __syncwarp();  // this warp's previous tile is read
        stage_kv_rows<T, D, NK, P>(Ks, Vs, k, v, head_k, ld, k0, kv_end, h, bias, lane, 32);
        __syncwarp();
        tile_step<T, D, NK, P, P, true>(qa, Ks, Vs, k0, kv_end, scale_log2, lane >> 2, lane & 3, m_lo, m_hi, l_lo,
                                        l_hi, oacc);
    }
}

template <typename T, int D>
__global__ void __launch_bounds__(kWarps * 32)
    forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o,
                   float* __restrict__ lse, int Tq, int Tk, const int* __restrict__ kv_len, int H, float scale_log2,
                   int tokens, Biases<T> bias) {
    await_predecessors();
    constexpr int kPitchK = D + 8, kPitchV = kKeys + 8;
    __shared__ __align__(16) T Ks[kKeys * kPitchK];
    __shared__ __align__(16) T Vt[D * kPitchV];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int r_lo = blockIdx.x * kRows + warp * 16 + g, r_hi = r_lo + 8;
    const Head hd = head(H, D, Tq, Tk, kv_len, tokens);
    const int h = hd.h, kv_end = hd.kv_end;
    const long long head_q = hd.q, head_k = hd.k, ld = hd.ld;

    uint32_t qa[D / 16][4];  // A fragments of this warp's 16 rows of Q, one per 16-wide step over d
    float oacc[D / 8][4];
    load_q<T, D>(qa, oacc, q, head_q, ld, r_lo, r_hi, Tq, t, h, bias.q);
    // Running max (base-2 units) and this lane's part of the running sum, for rows r_lo and r_hi.
    float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;

    for (int k0 = 0; k0 < kv_end; k0 += kKeys) {
        __syncthreads();  // the previous tile's readers are done
        stage_kv<T, D, kKeys, kPitchK, kPitchV>(Ks, Vt, k, v, head_k, ld, k0, kv_end, h, bias, threadIdx.x, blockDim.x);
        __syncthreads();

        tile_step<T, D, kKeys, kPitchK, kPitchV>(qa, Ks, Vt, k0, kv_end, scale_log2, g, t, m_lo, m_hi, l_lo, l_hi, oacc);
    }
    finish_rows<T, D>(o, lse, oacc, m_lo, m_hi, l_lo, l_hi, r_lo, r_hi, Tq, H, tokens, t);
}

// ---- pipelined: the kernel above with its K/V tiles double-buffered by cp.async and read by ldmatrix (dev version 12)
// The kernel above stages each tile through registers (a load, then stores, with V transposed one 16-bit element at a
// time: 8 stores per 16 bytes) between two barriers, so every tile's global latency is exposed and the stores cost
// more issue slots than the tile's 64 mma.sync a warp. Here (FA2's own pipeline, Dao 2023, Sec. 3.3):
//   - K and V are both stored [key][d] (pitch D + 8: ldmatrix's 8 row addresses fall in 8 different 16-byte bank
//     groups) and copied with cp.async, 16 bytes a copy, into one of two stages;
//   - tile i + 1's copies are issued right after the barrier that publishes tile i, so they are in flight while
//     tile i is computed; one __syncthreads a tile (it also tells every thread that the stage it is about to fill
//     was read by all in the previous iteration);
//   - the B fragments come from ldmatrix.x4 (K) and ldmatrix.x4.trans (V): 4 registers an instruction instead of 1;
//   - with q/k/v biases (the engine's pending projection biases) each thread adds them to its own 16-byte chunks once
//     its copies have landed, before that barrier: the same rounding as stage_kv's, so the same bits.
// The Q fragments, the tile step's arithmetic and its mma order are the kernel above's, so the results are its bits
// (test_attention compares them; DeviceCheck and dev_attention_forward do so on a GPU). D 32 and 64 (two stages at
// D = 128 would need 69 KB of dynamic shared memory; the U-Net's heads are 32 or 64). Registers (ptxas, sm_90a): 158
// at D = 64 unbounded, which would leave 3 blocks an SM where the kernel above has 4; __launch_bounds__(128, 4) holds
// it to 128, as the kernel above, with 36 bytes spilled, so the timing compares the pipeline at the same occupancy.
//
// MT = 2 (the wide kernel, dev versions 18-20, kernel 3 of onestep_attention_forward_qkv_kernel_typed): each warp owns
// two m-tiles of 16 rows (rows 16 w + g (+ 8) and 64 + 16 w + g (+ 8) of a 128-row block), FA2's own shape for head dim
// 64 (kBlockM = 128 with 4 warps). Every K and V fragment a warp reads from shared memory feeds two mma.sync instead
// of one, each staged tile serves 128 query rows instead of 64 (half the L2-to-shared traffic and cp.async issue per
// row), and a warp has two independent mma chains to interleave. At 4 blocks an SM the kernel above keeps 16 warps
// resident; here 2 blocks (__launch_bounds__(128, 2): up to 255 registers, for twice the Q, S and O fragments) keep 8
// warps with twice the work each in flight. The H200 run put version 13 at 52% of cuDNN's SDPA at B=64 H=4 T=256
// D=64 (32.3 against 16.7 us) with its mma pipes far from busy: the aim is more independent work per warp. Same
// per-row arithmetic and mma order, so kernel 0's bits (test_attention compares them).
template <typename T, int D>
struct PipeSmem {
    static constexpr int kPitch = D + 8;
    static constexpr int kStage = 2 * kKeys * kPitch;  // K then V, elements
    static_assert(2 * kStage * int(sizeof(T)) <= 48 * 1024, "static shared memory");
};

// Issues this thread's cp.async of the kKeys-key tile at k0 (K and V, [key][d], pitch P; keys >= kv_end zero-filled)
// and commits them as one group.
template <typename T, int D>
__device__ __forceinline__ void issue_kv(T* Ks, T* Vs, const T* k, const T* v, long long head_k, long long ld, int k0,
                                         int kv_end) {
    constexpr int P = PipeSmem<T, D>::kPitch;
    for (int i = threadIdx.x; i < kKeys * D / kVec; i += blockDim.x) {
        const int r = i / (D / kVec), c = (i % (D / kVec)) * kVec;
        const bool in = k0 + r < kv_end;
        const long long at = in ? head_k + (k0 + r) * ld + c : 0;  // a zero-fill still needs a valid address
        cp_async16(Ks + r * P + c, k + at, in);
        cp_async16(Vs + r * P + c, v + at, in);
    }
    cp_async_commit();
}

// Adds the k and v biases to the chunks this thread copied (issue_kv's loop): after its own wait_group, before the
// barrier that publishes the tile. Keys past kv_end stay zero, as stage_kv leaves them.
template <typename T, int D>
__device__ __forceinline__ void bias_kv(T* Ks, T* Vs, int k0, int kv_end, int h, const Biases<T>& bias) {
    constexpr int P = PipeSmem<T, D>::kPitch;
    if (!bias.k && !bias.v) return;
    for (int i = threadIdx.x; i < kKeys * D / kVec; i += blockDim.x) {
        const int r = i / (D / kVec), c = (i % (D / kVec)) * kVec;
        if (k0 + r >= kv_end) continue;
        if (bias.k) store_as<int4>(Ks + r * P + c, biased8<T>(load_as<int4>(Ks + r * P + c), bias.k, h * D + c));
        if (bias.v) store_as<int4>(Vs + r * P + c, biased8<T>(load_as<int4>(Vs + r * P + c), bias.v, h * D + c));
    }
}

template <typename T, int D, int MT>
__global__ void __launch_bounds__(kWarps * 32, MT == 1 ? 4 : 2)
    pipelined_forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                             T* __restrict__ o, float* __restrict__ lse, int Tq, int Tk,
                             const int* __restrict__ kv_len, int H, float scale_log2, int tokens, Biases<T> bias) {
    await_predecessors();
    using S = PipeSmem<T, D>;
    __shared__ __align__(16) T smem[2 * S::kStage];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int r0 = blockIdx.x * kRows * MT + warp * 16 + g;  // m-tile i: rows r0 + i * kRows and + 8
    const Head hd = head(H, D, Tq, Tk, kv_len, tokens);
    const int h = hd.h, kv_end = hd.kv_end;
    const long long head_q = hd.q, head_k = hd.k, ld = hd.ld;

    if (kv_end > 0) issue_kv<T, D>(smem, smem + kKeys * S::kPitch, k, v, head_k, ld, 0, kv_end);  // lands under Q's loads
    uint32_t qa[MT][D / 16][4];
    float oacc[MT][D / 8][4], m[MT][2], l[MT][2];
#pragma unroll
    for (int i = 0; i < MT; i++) {
        load_q<T, D>(qa[i], oacc[i], q, head_q, ld, r0 + i * kRows, r0 + i * kRows + 8, Tq, t, h, bias.q);
        m[i][0] = m[i][1] = -INFINITY, l[i][0] = l[i][1] = 0.0f;
    }

    for (int k0 = 0, stage = 0; k0 < kv_end; k0 += kKeys, stage ^= 1) {
        T* Ks = smem + stage * S::kStage;
        T* Vs = Ks + kKeys * S::kPitch;
        cp_async_wait<0>();  // this thread's copies of tile k0 (the only group in flight)
        bias_kv<T, D>(Ks, Vs, k0, kv_end, h, bias);
        __syncthreads();  // tile k0 complete for all; everyone is past the previous tile, so its stage may be refilled
        if (k0 + kKeys < kv_end) {
            T* next = smem + (stage ^ 1) * S::kStage;
            issue_kv<T, D>(next, next + kKeys * S::kPitch, k, v, head_k, ld, k0 + kKeys, kv_end);
        }
        tile_step_m<T, D, kKeys, S::kPitch, S::kPitch, true, MT>(qa, Ks, Vs, k0, kv_end, scale_log2, g, t, m, l, oacc);
    }
#pragma unroll
    for (int i = 0; i < MT; i++)
        finish_rows<T, D>(o, lse, oacc[i], m[i][0], m[i][1], l[i][0], l[i][1], r0 + i * kRows, r0 + i * kRows + 8, Tq,
                          H, tokens, t);
}

// ---- split keys: 16 query rows a block, the key tiles dealt to its warps (dev/attention_forward.cu version 11) ----
// At batch 1 the kernel above makes ceil(T / 64) x B x H blocks (16 at the CIFAR U-Net's 16x16 level: B=1, H=4,
// T=256) for 132 SMs, and each warp walks every key in turn. Here a block owns 16 rows and its 4 warps take every 4th
// 32-key tile each, keeping their own (m, l, O); the four are merged through shared memory at the end (the split-KV
// of flash-decoding, Dao et al. 2023, inside one block, so no second kernel). Same tile step, so the same arithmetic
// per tile; the merge changes only the order of the sums.
constexpr int kSplitWarps = 4, kSplitKeys = 32;

// Each warp's K and V tiles are stored [key][d] (pitch D + 8, as the pipelined kernel's) and read by ldmatrix
// (tile_step's LDM): the values and mma order of V^T read by 32-bit loads, so the same bits, with no transposed
// 16-bit stores of V and a quarter of the shared-load instructions (sixteenth session).
template <typename T, int D>
struct SplitSmem {
    static constexpr int kPitch = D + 8;
    static constexpr int kTileBytes = 2 * kSplitKeys * kPitch * int(sizeof(T));  // one warp's K and V
    static constexpr int kMergeBytes = (kSplitWarps * 16 * D + 2 * kSplitWarps * 16) * 4;      // O, m, l per warp
    static constexpr int kBytes = kSplitWarps * kTileBytes > kMergeBytes ? kSplitWarps * kTileBytes : kMergeBytes;
    static_assert(kBytes <= 48 * 1024, "static shared memory");
};

template <typename T, int D>
__global__ void __launch_bounds__(kSplitWarps * 32)
    split_forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o,
                         float* __restrict__ lse, int Tq, int Tk, const int* __restrict__ kv_len, int H,
                         float scale_log2, int tokens, Biases<T> bias) {
    await_predecessors();
    using S = SplitSmem<T, D>;
    __shared__ __align__(16) unsigned char smem[S::kBytes];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    T* Ks = reinterpret_cast<T*>(smem + warp * S::kTileBytes);
    T* Vs = Ks + kSplitKeys * S::kPitch;
    const int r_lo = blockIdx.x * 16 + g, r_hi = r_lo + 8;
    const Head hd = head(H, D, Tq, Tk, kv_len, tokens);
    const int h = hd.h, kv_end = hd.kv_end;
    const long long head_q = hd.q, head_k = hd.k, ld = hd.ld;

    uint32_t qa[D / 16][4];  // every warp holds the block's 16 rows of Q
    float oacc[D / 8][4];
    load_q<T, D>(qa, oacc, q, head_q, ld, r_lo, r_hi, Tq, t, h, bias.q);
    float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;

    warp_tiles<T, D, kSplitKeys, S::kPitch>(qa, Ks, Vs, k, v, head_k, ld, warp * kSplitKeys, kSplitWarps * kSplitKeys,
                                            kv_end, h, bias, scale_log2, lane, m_lo, m_hi, l_lo, l_hi, oacc);
    l_lo = quad_sum(l_lo), l_hi = quad_sum(l_hi);

    // The merge: every warp's (m, l, O) for the block's 16 rows into shared memory (over the tiles, now read), then
    // each thread combines the warps' values of some (row, feature pairs); a warp that saw no key has m = -inf and
    // weighs exp2(-inf) = 0.
    __syncthreads();
    float* Om = reinterpret_cast<float*>(smem);  // [warp][row][d]
    float* Mw = Om + kSplitWarps * 16 * D;       // [warp][row]
    float* Lw = Mw + kSplitWarps * 16;           // [warp][row]
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++) {
        const int c = dn * 8 + 2 * t;
        Om[(warp * 16 + g) * D + c] = oacc[dn][0];
        Om[(warp * 16 + g) * D + c + 1] = oacc[dn][1];
        Om[(warp * 16 + g + 8) * D + c] = oacc[dn][2];
        Om[(warp * 16 + g + 8) * D + c + 1] = oacc[dn][3];
    }
    if (t == 0) {
        Mw[warp * 16 + g] = m_lo, Mw[warp * 16 + g + 8] = m_hi;
        Lw[warp * 16 + g] = l_lo, Lw[warp * 16 + g + 8] = l_hi;
    }
    __syncthreads();
    const long long head_o = out_base(H, D, Tq, tokens), ld_o = out_ld(H, D, tokens);
    for (int i = threadIdx.x; i < 16 * D / 2; i += blockDim.x) {
        const int row = i / (D / 2), c = (i % (D / 2)) * 2, r = blockIdx.x * 16 + row;
        float m = -INFINITY;
#pragma unroll
        for (int w = 0; w < kSplitWarps; w++) m = fmaxf(m, Mw[w * 16 + row]);
        const float ref = m == -INFINITY ? 0.0f : m;
        float l = 0.0f, o0 = 0.0f, o1 = 0.0f;
#pragma unroll
        for (int w = 0; w < kSplitWarps; w++) {
            const float a = exp2f(Mw[w * 16 + row] - ref);
            l += a * Lw[w * 16 + row];
            o0 += a * Om[(w * 16 + row) * D + c];
            o1 += a * Om[(w * 16 + row) * D + c + 1];
        }
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        if (r < Tq) {
            store_as<uint32_t>(o + head_o + r * ld_o + c, pack<T>(o0 * inv, o1 * inv));
            if (c == 0) lse[(long long)blockIdx.y * Tq + r] = l > 0.0f ? 0.69314718056f * (m + log2f(l)) : -INFINITY;
        }
    }
}

template <typename T>
static cudaError_t split_launch(const T* q, const T* k, const T* v, T* o, float* lse, int B, int H, int Tq, int Tk,
                                int D, const int* kv_len, float scale, cudaStream_t stream, int tokens,
                                Biases<T> bias) {
    const dim3 grid(ceil_div(Tq, 16), unsigned(B * H)), block(kSplitWarps * 32);
    const float scale_log2 = scale * 1.4426950408889634f;  // log2(e)
    if (D == 32)
        return ::onestep::launch_dependent(split_forward_kernel<T, 32>, grid, block, 0, stream, q, k, v, o, lse, Tq, Tk, kv_len,
                                           H, scale_log2, tokens, bias);
    if (D == 64)
        return ::onestep::launch_dependent(split_forward_kernel<T, 64>, grid, block, 0, stream, q, k, v, o, lse, Tq, Tk, kv_len,
                                           H, scale_log2, tokens, bias);
    return cudaErrorInvalidValue;  // D = 128: four warps' K and V^T tiles would not fit 48 KB
}

// ---- the attention with its output projection and residual in one launch (twentieth session) -------------------
// An attention block at inference is the attention, then to_out.0 with the residual (y = O W + b + x, cuBLASLt's bias
// epilogue): two graph nodes, at batch 1 ~12 us of attention and ~5 us of GEMM launch for 16 MFLOP (the seventeenth
// session's profile), with O stored and read back between them. Here a block owns 16 query rows of one sample, every
// head of them, and then their output rows:
//   1. S warps per head (S = 1, 2 or 4; 4 S warps a block): heads hw, hw + 4, ... go to the warps with warp % 4 = hw,
//      and warp s = warp / 4 of them takes key tiles s, s + S, ... (the split-keys kernel's 32-key tile step, K and V
//      staged [key][d] by the warp itself and read by ldmatrix). S = 1 divides by l and rounds O to T into a shared
//      16 x C tile; S > 1 merges the S warps' (m, l, O) through shared memory first, as the split-keys kernel does.
//      Either way the tile holds O rounded as the attention kernel would store it (not its bits: 32-key tiles and
//      the split change the order of the online softmax's sums, as they do in the split-keys kernel). Why S > 1: at
//      batch 1 the grid is ceil(T / 16) blocks (16 at the CIFAR U-Net's T = 256), and with S = 1 every warp walks all
//      256 keys, 8 tiles whose loads wait in series; S = 4 makes that 2, the split-keys kernel's chain.
//   2. after a barrier, the warps take output columns in chunks (32 columns for S = 1, 16 otherwise, so that 4 S
//      warps have work at C = 256) for the 16 rows on tensor cores: A fragments from the O tile, B fragments straight
//      from W's KRSC copy (w[co][ci], to_out's weight transposed: two consecutive input channels of one output
//      channel are one 32-bit load; the depth loop unrolled by 4 so that four steps' loads are in flight at once),
//      fp32 accumulation; the bias and the residual z are added in fp32 and y is rounded once, as the unfused
//      GEMM's epilogue does.
// So the two nodes are one, O never reaches memory, and each block reads all of W (C^2 values, from L2). That should
// pay at batch 1 and lose at batch 64 (1024 blocks each reading W); the CUDA backend times S = 1, 2 and 4 against
// the two ops per shape and keeps the fastest.
constexpr int kOutWarps = 4, kOutKeys = 32;  // kOutWarps: the warps of one key share, one per head of a round

template <typename T, int D>
struct OutSmem {
    static constexpr int kPitch = D + 8;                                         // a K or V row, elements
    static constexpr int kTileBytes = 2 * kOutKeys * kPitch * int(sizeof(T));  // one warp's K and V
    // S > 1: after a round's tiles, each warp's slot holds its partial O [16][D], m [16] and l [16] in fp32 (in its
    // own tile's bytes, which it no longer reads).
    static constexpr int kSlotBytes = (16 * D + 32) * 4;
    static_assert(kSlotBytes <= kTileBytes, "a warp's merge slot fits in its tile");
    // The warps' tiles, then O's 16 rows of C + 8 elements: a row is C / 2 + 4 words, so the A fragments' 8 rows x 4
    // words fall in 32 different banks.
    static size_t bytes(int C, int S) { return size_t(kOutWarps) * S * kTileBytes + 16 * size_t(C + 8) * sizeof(T); }
};

template <typename T, int D, int S>
__global__ void __launch_bounds__(kOutWarps * S * 32)
    out_forward_kernel(const T* __restrict__ qkv, Biases<T> bias, const T* __restrict__ w,
                       const T* __restrict__ out_bias, const T* z, T* y, int Tn, int H, float scale_log2,
                       int prefetch) {
    static_assert(S == 1 || S == 2 || S == 4, "1, 2 or 4 warps a head");
    // to_out's weights (C x C, every block reads all of them, last) asked of L2 before the wait (prefetch_l2), each
    // block of the first sample its share.
    if (prefetch && blockIdx.y == 0) {
        const long long C = (long long)H * D;
        prefetch_l2(w, size_t(C * C) * sizeof(T), blockIdx.x, gridDim.x);
    }
    await_predecessors();
    using M = OutSmem<T, D>;
    ONESTEP_DYNAMIC_SHARED(unsigned char, smem);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int hw = warp % kOutWarps, s = warp / kOutWarps;  // this warp's head in a round, its share of the keys
    const int C = H * D, P = C + 8;
    T* Ks = reinterpret_cast<T*>(smem + warp * M::kTileBytes);
    T* Vs = Ks + kOutKeys * M::kPitch;
    T* Os = reinterpret_cast<T*>(smem + kOutWarps * S * M::kTileBytes);
    const int r_lo = blockIdx.x * 16 + g, r_hi = r_lo + 8;
    const long long ld = 3LL * C, sample = (long long)blockIdx.y * Tn * ld;  // packed rows: q, k, v features
    const T *q = qkv, *k = qkv + C, *v = qkv + 2 * C;

    // The same number of rounds in every warp: with S > 1 each round has block barriers.
    const int rounds = (H + kOutWarps - 1) / kOutWarps;
    for (int round = 0; round < rounds; round++) {
        const int h = round * kOutWarps + hw;
        const bool active = h < H;
        const long long head = sample + (long long)h * D;
        uint32_t qa[D / 16][4];
        float oacc[D / 8][4];
        float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;
        if (active) {
            load_q<T, D>(qa, oacc, q, head, ld, r_lo, r_hi, Tn, t, h, bias.q);
            warp_tiles<T, D, kOutKeys, M::kPitch>(qa, Ks, Vs, k, v, head, ld, s * kOutKeys, S * kOutKeys, Tn, h, bias,
                                                  scale_log2, lane, m_lo, m_hi, l_lo, l_hi, oacc);
        }
        l_lo = quad_sum(l_lo), l_hi = quad_sum(l_hi);
        if constexpr (S == 1) {
            // Every row sees all Tn >= 1 keys (rows past Tn too, with q = 0: computed, never stored), so l >= 1.
            if (active) {
                const float inv_lo = 1.0f / l_lo, inv_hi = 1.0f / l_hi;
#pragma unroll
                for (int dn = 0; dn < D / 8; dn++) {
                    const int c = h * D + dn * 8 + 2 * t;
                    store_as<uint32_t>(Os + g * P + c, pack<T>(oacc[dn][0] * inv_lo, oacc[dn][1] * inv_lo));
                    store_as<uint32_t>(Os + (g + 8) * P + c, pack<T>(oacc[dn][2] * inv_hi, oacc[dn][3] * inv_hi));
                }
            }
        } else {
            // The merge (split_forward_kernel's): each warp's (m, l, O) into its slot, then the head's S warps
            // combine them, O = sum_j 2^(m_j - m) O_j / sum_j 2^(m_j - m) l_j; a warp that saw no key has m = -inf
            // and weighs 0 (warp s = 0 always sees one, Tn >= 1).
            __syncthreads();  // every warp's tiles are read: the slots may overwrite them
            float* Om = reinterpret_cast<float*>(smem + warp * M::kTileBytes);
            if (active) {
#pragma unroll
                for (int dn = 0; dn < D / 8; dn++) {
                    const int c = dn * 8 + 2 * t;
                    Om[g * D + c] = oacc[dn][0], Om[g * D + c + 1] = oacc[dn][1];
                    Om[(g + 8) * D + c] = oacc[dn][2], Om[(g + 8) * D + c + 1] = oacc[dn][3];
                }
                if (t == 0) {
                    Om[16 * D + g] = m_lo, Om[16 * D + g + 8] = m_hi;
                    Om[16 * D + 16 + g] = l_lo, Om[16 * D + 16 + g + 8] = l_hi;
                }
            }
            __syncthreads();
            if (active) {
                for (int i = s * 32 + lane; i < 16 * D / 2; i += S * 32) {
                    const int row = i / (D / 2), c = (i % (D / 2)) * 2;
                    const float* slot[S];
#pragma unroll
                    for (int j = 0; j < S; j++)
                        slot[j] = reinterpret_cast<const float*>(smem + (hw + kOutWarps * j) * M::kTileBytes);
                    float m = -INFINITY;
#pragma unroll
                    for (int j = 0; j < S; j++) m = fmaxf(m, slot[j][16 * D + row]);
                    float l = 0.0f, o0 = 0.0f, o1 = 0.0f;
#pragma unroll
                    for (int j = 0; j < S; j++) {
                        const float a = exp2f(slot[j][16 * D + row] - m);
                        l += a * slot[j][16 * D + 16 + row];
                        o0 += a * slot[j][row * D + c];
                        o1 += a * slot[j][row * D + c + 1];
                    }
                    const float inv = 1.0f / l;
                    store_as<uint32_t>(Os + row * P + h * D + c, pack<T>(o0 * inv, o1 * inv));
                }
            }
            __syncthreads();  // the slots are read before the next round's tiles overwrite them
        }
    }
    if constexpr (S == 1) __syncthreads();  // the 16 x C tile of O is complete (S > 1: the last round's barrier)

    constexpr int NJ = S == 1 ? 4 : 2;  // n-tiles (8 columns each) a chunk
    for (int c0 = warp * 8 * NJ; c0 < C; c0 += kOutWarps * S * 8 * NJ) {
        float acc[NJ][4];
#pragma unroll
        for (int j = 0; j < NJ; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
#pragma unroll 4
        for (int kk = 0; kk < C; kk += 16) {
            const uint32_t a[4] = {load_as<uint32_t>(Os + g * P + kk + 2 * t),
                                   load_as<uint32_t>(Os + (g + 8) * P + kk + 2 * t),
                                   load_as<uint32_t>(Os + g * P + kk + 8 + 2 * t),
                                   load_as<uint32_t>(Os + (g + 8) * P + kk + 8 + 2 * t)};
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                const T* wr = w + (long long)(c0 + 8 * j + g) * C + kk + 2 * t;  // B column g: output channel
                mma<T>(acc[j], a, load_as<uint32_t>(wr), load_as<uint32_t>(wr + 8));
            }
        }
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            const int col = c0 + 8 * j + 2 * t;
            const float b0 = out_bias ? to_f32(out_bias[col]) : 0.0f, b1 = out_bias ? to_f32(out_bias[col + 1]) : 0.0f;
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int r = half ? r_hi : r_lo;
                if (r >= Tn) continue;
                const long long at = ((long long)blockIdx.y * Tn + r) * C + col;
                float z0 = 0.0f, z1 = 0.0f;
                if (z) z0 = to_f32(z[at]), z1 = to_f32(z[at + 1]);
                store_as<uint32_t>(y + at, pack<T>(acc[j][2 * half] + b0 + z0, acc[j][2 * half + 1] + b1 + z1));
            }
        }
    }
}

// S warps a head (1, 2 or 4); anything else is refused by the C entry.
template <typename T>
static cudaError_t out_launch(const T* qkv, Biases<T> bias, const T* w, const T* out_bias, const T* z, T* y, int B,
                              int H, int Tn, int D, float scale, int S, cudaStream_t stream) {
    const dim3 grid(ceil_div(Tn, 16), unsigned(B)), block(kOutWarps * S * 32);
    const float scale_log2 = scale * 1.4426950408889634f;  // log2(e)
    const auto run = [&](auto kernel, size_t smem) {
        if (smem > 48 * 1024) {
            // Above 48 KiB a kernel must opt in (sm_80: up to 163 KiB, sm_90: 227 KiB).
            const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
            if (e != cudaSuccess) return e;
        }
        return ::onestep::launch_dependent(kernel, grid, block, smem, stream, qkv, bias, w, out_bias, z, y, Tn, H,
                                           scale_log2, weight_prefetch());
    };
#define ONESTEP_OUT_CASE(DD, SS) \
    if (D == DD && S == SS) return run(out_forward_kernel<T, DD, SS>, OutSmem<T, DD>::bytes(H * D, SS));
    ONESTEP_OUT_CASE(32, 1)
    ONESTEP_OUT_CASE(32, 2)
    ONESTEP_OUT_CASE(32, 4)
    ONESTEP_OUT_CASE(64, 1)
    ONESTEP_OUT_CASE(64, 2)
    ONESTEP_OUT_CASE(64, 4)
#undef ONESTEP_OUT_CASE
    return cudaErrorInvalidValue;
}

// The pipelined kernel with MT m-tiles a warp: 1 (kernel 2, 64-row blocks) or 2 (kernel 3, the wide kernel's 128).
template <typename T, int MT>
static cudaError_t pipelined_launch(const T* q, const T* k, const T* v, T* o, float* lse, int B, int H, int Tq, int Tk,
                                   int D, const int* kv_len, float scale, cudaStream_t stream, int tokens,
                                   Biases<T> bias) {
    const dim3 grid(ceil_div(Tq, kRows * MT), unsigned(B * H)), block(kWarps * 32);
    const float scale_log2 = scale * 1.4426950408889634f;  // log2(e)
    if (D == 32)
        return ::onestep::launch_dependent(pipelined_forward_kernel<T, 32, MT>, grid, block, 0, stream, q, k, v, o, lse,
                                           Tq, Tk, kv_len, H, scale_log2, tokens, bias);
    if (D == 64)
        return ::onestep::launch_dependent(pipelined_forward_kernel<T, 64, MT>, grid, block, 0, stream, q, k, v, o, lse,
                                           Tq, Tk, kv_len, H, scale_log2, tokens, bias);
    return cudaErrorInvalidValue;  // D = 128: two stages would not fit 48 KB of static shared memory
}

template <typename T>
static cudaError_t launch(const T* q, const T* k, const T* v, T* o, float* lse, int B, int H, int Tq, int Tk, int D,
                          const int* kv_len, float scale, cudaStream_t stream, int tokens, Biases<T> bias) {
    const dim3 grid(ceil_div(Tq, kRows), unsigned(B * H)), block(kWarps * 32);
    const float scale_log2 = scale * 1.4426950408889634f;  // log2(e)
    switch (D) {
#define ONESTEP_TC_CASE(DD)                                                                                         \
    case DD:                                                                                                        \
        return ::onestep::launch_dependent(forward_kernel<T, DD>, grid, block, 0, stream, q, k, v, o, lse, Tq, Tk, kv_len, H, \
                                           scale_log2, tokens, bias);
        ONESTEP_TC_CASE(32)
        ONESTEP_TC_CASE(64)
        ONESTEP_TC_CASE(128)
#undef ONESTEP_TC_CASE
    }
    return cudaErrorInvalidValue;
}
}  // namespace tc

template <typename T, int D>
static cudaError_t launch_d(const T* q, const T* k, const T* v, T* o, float* lse, int B, int H, int Tq,
                            int Tk, const int* kv_len, float scale, cudaStream_t stream, int tokens, Biases<T> bias) {
    const size_t smem = shared_bytes(D);
    if (smem > 48 * 1024) {
        // Above 48 KiB a kernel must opt in (sm_80: up to 163 KiB, sm_90: 227 KiB).
        cudaError_t e = cudaFuncSetAttribute(forward_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
        if (e != cudaSuccess) return e;
    }
    const dim3 grid(ceil_div(Tq, kRowsPerBlock), unsigned(B * H));
    const float scale_log2 = scale * 1.4426950408889634f;  // log2(e)
    return launch_dependent(forward_kernel<T, D>, grid, dim3(kWarps * 32), smem, stream, q, k, v, o, lse, Tq, Tk, kv_len, H,
                            scale_log2, tokens, bias);
}

template <typename T>
cudaError_t launch_forward(const T* q, const T* k, const T* v, T* o, float* lse, int B, int H, int Tq, int Tk, int D,
                           const int* kv_len, float scale, cudaStream_t stream, int tokens, Path path,
                           Biases<T> bias) {
    if constexpr (!std::is_same_v<T, float>) {
        // The tensor-core path stores o as 32-bit pairs; q, k, v need 16 bytes, which the C entry points check.
        const bool o_pairs = (reinterpret_cast<unsigned long long>(o) & 3u) == 0;
        if (path == Path::SplitKeys)
            return o_pairs ? tc::split_launch(q, k, v, o, lse, B, H, Tq, Tk, D, kv_len, scale, stream, tokens, bias)
                           : cudaErrorInvalidValue;
        if (path == Path::Pipelined || path == Path::Wide)
            return !o_pairs ? cudaErrorInvalidValue
                   : path == Path::Wide
                       ? tc::pipelined_launch<T, 2>(q, k, v, o, lse, B, H, Tq, Tk, D, kv_len, scale, stream, tokens, bias)
                       : tc::pipelined_launch<T, 1>(q, k, v, o, lse, B, H, Tq, Tk, D, kv_len, scale, stream, tokens, bias);
        if (path == Path::TensorCores || (path == Path::Auto && o_pairs))
            return o_pairs ? tc::launch(q, k, v, o, lse, B, H, Tq, Tk, D, kv_len, scale, stream, tokens, bias)
                           : cudaErrorInvalidValue;
    } else if (path != Path::Auto && path != Path::Portable) {
        return cudaErrorInvalidValue;  // fp32 has no tensor-core path here (the portable kernel is exact fp32)
    }
    switch (D) {
        case 32: return launch_d<T, 32>(q, k, v, o, lse, B, H, Tq, Tk, kv_len, scale, stream, tokens, bias);
        case 64: return launch_d<T, 64>(q, k, v, o, lse, B, H, Tq, Tk, kv_len, scale, stream, tokens, bias);
        case 128: return launch_d<T, 128>(q, k, v, o, lse, B, H, Tq, Tk, kv_len, scale, stream, tokens, bias);
    }
    return cudaErrorInvalidValue;
}
template cudaError_t launch_forward<float>(const float*, const float*, const float*, float*, float*, int, int, int, int,
                                           int, const int*, float, cudaStream_t, int, Path, Biases<float>);
template cudaError_t launch_forward<__half>(const __half*, const __half*, const __half*, __half*, float*, int, int, int,
                                            int, int, const int*, float, cudaStream_t, int, Path, Biases<__half>);
template cudaError_t launch_forward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                                                   __nv_bfloat16*, float*, int, int, int, int, int, const int*, float,
                                                   cudaStream_t, int, Path, Biases<__nv_bfloat16>);

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

template <typename T>
static attention::Biases<T> biases(const void* q, const void* k, const void* v) {
    return {static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v)};
}

// The forward's C entry points: heads as (B, H, T, D) blocks, or (tokens) the engine's (B, T, H*D) rows.
static onestep_status forward(const char* fn, const void* q, const void* k, const void* v, void* o, float* lse, int B,
                              int H, int Tq, int Tk, int D, const int* kv_len, float softmax_scale,
                              onestep_dtype dtype, cudaStream_t stream, int tokens, const void* q_bias = nullptr,
                              const void* k_bias = nullptr, const void* v_bias = nullptr,
                              attention::Path path = attention::Path::Auto) {
    char shapes[160];
    attention::describe(shapes, sizeof shapes, B, H, Tq, Tk, D, dtype);
    if (const onestep_status s = attention::check_shapes(fn, shapes, B, H, Tq, Tk, D, dtype)) return s;
    if (!q || !k || !v || !o || !lse) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "q, k, v, o and lse must be non-null");
    const auto misaligned = [](const void* p) { return (reinterpret_cast<unsigned long long>(p) & 15u) != 0; };
    if (misaligned(q) || misaligned(k) || misaligned(v))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "q, k and v must be 16-byte aligned (vector loads)");
    if (misaligned(q_bias) || misaligned(k_bias) || misaligned(v_bias))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "q_bias, k_bias and v_bias must be 16-byte aligned");
    if (!std::isfinite(softmax_scale))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "softmax_scale must be finite");
    if (path == attention::Path::SplitKeys && (dtype == ONESTEP_FLOAT32 || D > 64))
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "the split-keys kernel takes fp16 or bf16 with D 32 or 64");
    if (path == attention::Path::Pipelined && (dtype == ONESTEP_FLOAT32 || D > 64))
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "the pipelined kernel takes fp16 or bf16 with D 32 or 64");
    if (path == attention::Path::Wide && (dtype == ONESTEP_FLOAT32 || D > 64))
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "the wide kernel takes fp16 or bf16 with D 32 or 64");
    // The tensor-core kernels store o as 32-bit pairs; the default path falls back to the portable kernel instead.
    if (path != attention::Path::Auto && (reinterpret_cast<unsigned long long>(o) & 3u))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    "o must be 4-byte aligned for the %s kernel (it stores pairs)",
                    path == attention::Path::SplitKeys   ? "split-keys"
                    : path == attention::Path::Pipelined ? "pipelined"
                    : path == attention::Path::Wide      ? "wide"
                                                         : "tensor-core");
    const float scale = attention::resolve_scale(softmax_scale, D);
    cudaError_t e = cudaErrorInvalidValue;
    switch (dtype) {
        case ONESTEP_FLOAT32:
            e = attention::launch_forward(static_cast<const float*>(q), static_cast<const float*>(k),
                                          static_cast<const float*>(v), static_cast<float*>(o), lse, B, H, Tq, Tk, D,
                                          kv_len, scale, stream, tokens, attention::Path::Auto,
                                          biases<float>(q_bias, k_bias, v_bias));
            break;
        case ONESTEP_FLOAT16:
            e = attention::launch_forward(static_cast<const __half*>(q), static_cast<const __half*>(k),
                                          static_cast<const __half*>(v), static_cast<__half*>(o), lse, B, H, Tq, Tk, D,
                                          kv_len, scale, stream, tokens, path,
                                          biases<__half>(q_bias, k_bias, v_bias));
            break;
        case ONESTEP_BFLOAT16:
            e = attention::launch_forward(static_cast<const __nv_bfloat16*>(q), static_cast<const __nv_bfloat16*>(k),
                                          static_cast<const __nv_bfloat16*>(v), static_cast<__nv_bfloat16*>(o), lse, B,
                                          H, Tq, Tk, D, kv_len, scale, stream, tokens, path,
                                          biases<__nv_bfloat16>(q_bias, k_bias, v_bias));
            break;
    }
    return check_launch(e, fn, shapes);
}

extern "C" onestep_status onestep_attention_forward_typed(const void* q, const void* k, const void* v, void* o,
                                                          float* lse, int B, int H, int Tq, int Tk, int D,
                                                          const int* kv_len, float softmax_scale, onestep_dtype dtype,
                                                          cudaStream_t stream) {
    return forward(dtype == ONESTEP_FLOAT32 ? "onestep_attention_forward" : "onestep_attention_forward_typed", q, k, v,
                   o, lse, B, H, Tq, Tk, D, kv_len, softmax_scale, dtype, stream, 0);
}

extern "C" onestep_status onestep_attention_forward_tokens_typed(const void* q, const void* k, const void* v, void* o,
                                                                 float* lse, int B, int H, int Tq, int Tk, int D,
                                                                 const int* kv_len, float softmax_scale,
                                                                 onestep_dtype dtype, cudaStream_t stream) {
    return forward("onestep_attention_forward_tokens_typed", q, k, v, o, lse, B, H, Tq, Tk, D, kv_len, softmax_scale,
                   dtype, stream, 1);
}

extern "C" onestep_status onestep_attention_forward_tokens_biased_typed(
    const void* q, const void* q_bias, const void* k, const void* k_bias, const void* v, const void* v_bias, void* o,
    float* lse, int B, int H, int Tq, int Tk, int D, const int* kv_len, float softmax_scale, onestep_dtype dtype,
    cudaStream_t stream) {
    return forward("onestep_attention_forward_tokens_biased_typed", q, k, v, o, lse, B, H, Tq, Tk, D, kv_len,
                   softmax_scale, dtype, stream, 1, q_bias, k_bias, v_bias);
}

extern "C" onestep_status onestep_attention_forward_qkv_typed(const void* qkv, const void* qkv_bias, void* o,
                                                              float* lse, int B, int H, int T, int D,
                                                              const int* kv_len, float softmax_scale,
                                                              onestep_dtype dtype, cudaStream_t stream) {
    // q, k and v are the three (H*D)-feature thirds of each packed row; so are the bias's thirds.
    const size_t third = (size_t)H * D * dtype_bytes(dtype);
    const char* p = static_cast<const char*>(qkv);
    const char* b = static_cast<const char*>(qkv_bias);
    return forward("onestep_attention_forward_qkv_typed", p, p ? p + third : nullptr, p ? p + 2 * third : nullptr, o,
                   lse, B, H, T, T, D, kv_len, softmax_scale, dtype, stream, 3, b, b ? b + third : nullptr,
                   b ? b + 2 * third : nullptr);
}

extern "C" onestep_status onestep_attention_forward_qkv_kernel_typed(const void* qkv, const void* qkv_bias, void* o,
                                                                     float* lse, int B, int H, int T, int D,
                                                                     const int* kv_len, float softmax_scale, int kernel,
                                                                     onestep_dtype dtype, cudaStream_t stream) {
    const char* fn = "onestep_attention_forward_qkv_kernel_typed";
    if (kernel < 0 || kernel > 3) {
        char shapes[160];
        attention::describe(shapes, sizeof shapes, B, H, T, T, D, dtype);
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    "kernel must be 0 (default), 1 (split keys), 2 (pipelined) or 3 (wide), not %d", kernel);
    }
    const size_t third = (size_t)H * D * dtype_bytes(dtype);
    const char* p = static_cast<const char*>(qkv);
    const char* b = static_cast<const char*>(qkv_bias);
    return forward(fn, p, p ? p + third : nullptr, p ? p + 2 * third : nullptr, o, lse, B, H, T, T, D, kv_len,
                   softmax_scale, dtype, stream, 3, b, b ? b + third : nullptr, b ? b + 2 * third : nullptr,
                   kernel == 1   ? attention::Path::SplitKeys
                   : kernel == 2 ? attention::Path::Pipelined
                   : kernel == 3 ? attention::Path::Wide
                                 : attention::Path::Auto);
}

extern "C" onestep_status onestep_attention_residual_qkv_typed(const void* qkv, const void* qkv_bias,
                                                               const void* w_krsc, const void* out_bias, const void* z,
                                                               void* y, int B, int H, int T, int D,
                                                               float softmax_scale, int warps_per_head,
                                                               onestep_dtype dtype, cudaStream_t stream) {
    const char* fn = "onestep_attention_residual_qkv_typed";
    char shapes[160];
    attention::describe(shapes, sizeof shapes, B, H, T, T, D, dtype);
    if (warps_per_head != 1 && warps_per_head != 2 && warps_per_head != 4)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "warps_per_head must be 1, 2 or 4, not %d",
                    warps_per_head);
    if (const onestep_status s = attention::check_shapes(fn, shapes, B, H, T, T, D, dtype)) return s;
    if (dtype == ONESTEP_FLOAT32 || D > 64)
        return fail(ONESTEP_ERROR_UNSUPPORTED, fn, shapes, "the attention with its output projection takes fp16 or "
                    "bf16 with D 32 or 64");
    if (!qkv || !w_krsc || !y) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "qkv, w_krsc and y must be non-null");
    const auto misaligned = [](const void* p, unsigned bytes) {
        return (reinterpret_cast<unsigned long long>(p) & (bytes - 1)) != 0;
    };
    if (misaligned(qkv, 16) || misaligned(qkv_bias, 16))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "qkv and qkv_bias must be 16-byte aligned (vector loads)");
    if (misaligned(w_krsc, 4) || misaligned(out_bias, 4) || misaligned(z, 4) || misaligned(y, 4))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "w_krsc, out_bias, z and y must be 4-byte aligned");
    if (!std::isfinite(softmax_scale))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "softmax_scale must be finite");
    const size_t C = size_t(H) * D, elem = dtype_bytes(dtype);
    const size_t smem = D == 32 ? attention::tc::OutSmem<__half, 32>::bytes(int(C), warps_per_head)
                                : attention::tc::OutSmem<__half, 64>::bytes(int(C), warps_per_head);
    char what[96];
    std::snprintf(what, sizeof what, "H * D = %zu channels with %d warps a head", C, warps_per_head);
    if (const onestep_status s = require_shared(fn, shapes, smem, what)) return s;
    // Every block reads all of qkv's keys and values while others write their rows of y: they must not overlap.
    const auto overlap = [](const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
        const auto pa = reinterpret_cast<unsigned long long>(a), pb = reinterpret_cast<unsigned long long>(b);
        return pa < pb + b_bytes && pb < pa + a_bytes;
    };
    const size_t rows = size_t(B) * T;
    if (overlap(y, rows * C * elem, qkv, rows * 3 * C * elem) || overlap(y, rows * C * elem, w_krsc, C * C * elem))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "y must not overlap qkv or w_krsc");
    const float scale = attention::resolve_scale(softmax_scale, D);
    cudaError_t e = cudaErrorInvalidValue;
    const auto go = [&](auto tag) {
        using E = decltype(tag);
        const E* b = static_cast<const E*>(qkv_bias);
        return attention::tc::out_launch(static_cast<const E*>(qkv),
                                         attention::Biases<E>{b, b ? b + C : nullptr, b ? b + 2 * C : nullptr},
                                         static_cast<const E*>(w_krsc), static_cast<const E*>(out_bias),
                                         static_cast<const E*>(z), static_cast<E*>(y), B, H, T, D, scale,
                                         warps_per_head, stream);
    };
    if (dtype == ONESTEP_FLOAT16) e = go(__half{});
    else e = go(__nv_bfloat16{});
    return check_launch(e, fn, shapes);
}

extern "C" onestep_status onestep_attention_forward(const float* q, const float* k, const float* v, float* o,
                                                    float* lse, int B, int H, int Tq, int Tk, int D,
                                                    const int* kv_len, float softmax_scale, cudaStream_t stream) {
    return onestep_attention_forward_typed(q, k, v, o, lse, B, H, Tq, Tk, D, kv_len, softmax_scale, ONESTEP_FLOAT32,
                                           stream);
}
