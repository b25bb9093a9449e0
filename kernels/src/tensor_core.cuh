// tensor_core.cuh: the warp-level tensor-core and asynchronous-copy primitives the 16-bit kernels share (attention.cu's
// tc path, conv.cu's implicit GEMM). Each is inline PTX under nvcc and an emulation under ONESTEP_EMULATION, so the
// kernels that use them run in CTest on machines without a GPU (kernels/README.md, "The emulated CUDA subset").
#pragma once
#include "cuda_compat.cuh"
#include "dtype.cuh"

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace onestep {
namespace tensor_core {

// D += A B with mma.sync.aligned.m16n8k16.row.col (PTX ISA, "Matrix fragments for mma.m16n8k16"): fp32 C/D, A and B as
// packed 16-bit pairs; T: __half or __nv_bfloat16. sm_80+.
template <typename T>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifdef ONESTEP_EMULATION
    emu::mma_m16n8k16<T>(c, a, b0, b1);
#else
    if constexpr (std::is_same_v<T, __half>)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16 (sm_75+): four 8x8 matrices of 16-bit values from shared memory
// into four registers of each lane. Lanes 8m .. 8m + 7 pass the addresses of matrix m's rows (16 contiguous, 16-byte
// aligned bytes each); register m of lane 4 g + t gets row g, elements 2t and 2t + 1 of matrix m, or with TRANS
// elements 2t and 2t + 1 of its column g. So one instruction loads the B fragments of two m16n8k16 steps: from K stored
// [key][d] (rows are keys) without TRANS, from V stored [key][d] with TRANS (what would otherwise need V transposed in
// shared memory, one 16-bit store per element).
template <bool TRANS>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
#ifdef ONESTEP_EMULATION
    emu::ldmatrix_x4(r, smem_row, TRANS);
#else
    const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
    if constexpr (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
#endif
}

// Two values rounded to T and packed as one fragment register, lo (the lower column) in the low 16 bits.
template <typename T>
__device__ __forceinline__ uint32_t pack(float lo, float hi) {
    if constexpr (std::is_same_v<T, __half>)
        return uint32_t(__half_as_ushort(__float2half_rn(lo))) | uint32_t(__half_as_ushort(__float2half_rn(hi))) << 16;
    else
        return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
               uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16;
}

// 32-bit (W = uint32_t) and 16-byte (W = int4) moves of 16-bit data: plain typed accesses under nvcc (one
// LDS/LDG/STG each); memcpy in the emulation, whose host compiler would take the typed ones as strict-aliasing
// violations and may reorder them.
template <typename W>
__device__ __forceinline__ W load_as(const void* p) {
    require_aligned(p, sizeof(W), "a vector load (load_as)");
#ifdef ONESTEP_EMULATION
    W w;
    std::memcpy(&w, p, sizeof(W));
    return w;
#else
    return *reinterpret_cast<const W*>(p);
#endif
}
template <typename W>
__device__ __forceinline__ void store_as(void* p, W w) {
    require_aligned(p, sizeof(W), "a vector store (store_as)");
#ifdef ONESTEP_EMULATION
    std::memcpy(p, &w, sizeof(W));
#else
    *reinterpret_cast<W*>(p) = w;
#endif
}

// cp.async.cg.shared.global (sm_80+): 16 bytes from global memory to shared memory without a register round trip,
// or 16 zero bytes when !valid (src-size 0: nothing is read; `src` must still be a valid address, so callers pass a
// tensor's base). Completion is per thread: cp_async_wait<N> waits for this thread's groups but the newest N, and
// a __syncwarp/__syncthreads after it publishes the data to the other threads. The emulation keeps the copy in
// flight until that wait (the destination reads as NaN bytes before it), so a missing or miscounted wait fails there.
__device__ __forceinline__ void cp_async16(void* smem, const void* src, bool valid) {
#ifdef ONESTEP_EMULATION
    emu::cp_async(smem, src, 16, valid);
#else
    const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef ONESTEP_EMULATION
    emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef ONESTEP_EMULATION
    emu::cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

}  // namespace tensor_core
}  // namespace onestep
