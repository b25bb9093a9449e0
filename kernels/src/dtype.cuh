// dtype.cuh: the storage types a kernel may be instantiated for (float, __half, __nv_bfloat16) and the few
// operations the kernels need on them. The 16-bit types are storage only: values are widened to float as they
// are loaded and rounded once (to nearest even) when a result is stored, so every sum, max and exp runs in
// fp32 (FlashAttention-2's "fp16/bf16 inputs, fp32 accumulation"). The emulation supplies the same two types
// and conversions (emu/cuda_emu.h), so the 16-bit instantiations are tested on machines without a GPU.
#pragma once
#include "cuda_compat.cuh"
#include "onestep_kernels.h"

#ifndef ONESTEP_EMULATION
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace onestep {

// __host__ too: the dev files' host code narrows and widens its inputs and references with these. (A plain
// __device__ function called from host code compiles under nvcc, but cudafe replaces its host body with exit(1):
// dev_groupnorm_forward printed its header and exited 1 on the first GPU run, 2026-11-26, for that reason.)
__host__ __device__ __forceinline__ float to_f32(float x) { return x; }
__host__ __device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__host__ __device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__host__ __device__ __forceinline__ T from_f32(float x);
template <>
__host__ __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__host__ __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <>
__host__ __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Four consecutive elements widened to float: one 16-byte load for float, one 8-byte load for 16-bit types.
// p must be aligned to 4 elements.
template <typename T>
struct alignas(4 * sizeof(T)) Pack4 {
    T v[4];
};
// The emulation checks the alignment a GPU needs (require_aligned): x86 would load anyway.
__device__ __forceinline__ float4 load4(const float* p) {
    require_aligned(p, 16, "a vector load (load4)");
    return *reinterpret_cast<const float4*>(p);
}
template <typename T>
__device__ __forceinline__ float4 load4(const T* p) {
    require_aligned(p, sizeof(Pack4<T>), "a vector load (load4)");
    const Pack4<T> pk = *reinterpret_cast<const Pack4<T>*>(p);
    return make_float4(to_f32(pk.v[0]), to_f32(pk.v[1]), to_f32(pk.v[2]), to_f32(pk.v[3]));
}

// Four consecutive elements narrowed from float and stored at once (the partner of load4).
__device__ __forceinline__ void store4(float* p, float4 v) {
    require_aligned(p, 16, "a vector store (store4)");
    *reinterpret_cast<float4*>(p) = v;
}
template <typename T>
__device__ __forceinline__ void store4(T* p, float4 v) {
    require_aligned(p, sizeof(Pack4<T>), "a vector store (store4)");
    Pack4<T> pk;
    pk.v[0] = from_f32<T>(v.x);
    pk.v[1] = from_f32<T>(v.y);
    pk.v[2] = from_f32<T>(v.z);
    pk.v[3] = from_f32<T>(v.w);
    *reinterpret_cast<Pack4<T>*>(p) = pk;
}

// Runs the expression after the dtype with T bound to the dtype's storage type; it must yield a cudaError_t.
// The caller has already rejected an unknown dtype (dtype_bytes(dtype) == 0).
#define ONESTEP_DISPATCH_DTYPE(dtype, T, ...)                    \
    [&]() -> cudaError_t {                                       \
        switch (dtype) {                                         \
            case ONESTEP_FLOAT16: {                              \
                using T = __half;                                \
                return __VA_ARGS__;                              \
            }                                                    \
            case ONESTEP_BFLOAT16: {                             \
                using T = __nv_bfloat16;                         \
                return __VA_ARGS__;                              \
            }                                                    \
            default: {                                           \
                using T = float;                                 \
                return __VA_ARGS__;                              \
            }                                                    \
        }                                                        \
    }()

// Bytes per element of a C API dtype (0 for a value outside the enum).
inline size_t dtype_bytes(onestep_dtype t) {
    switch (t) {
        case ONESTEP_FLOAT32: return 4;
        case ONESTEP_FLOAT16:
        case ONESTEP_BFLOAT16: return 2;
    }
    return 0;
}

inline const char* dtype_name(onestep_dtype t) {
    switch (t) {
        case ONESTEP_FLOAT32: return "float32";
        case ONESTEP_FLOAT16: return "float16";
        case ONESTEP_BFLOAT16: return "bfloat16";
    }
    return "unknown";
}

}  // namespace onestep
