// convert.cu: onestep_convert, the element-type conversion between fp32, fp16 and bf16 that a mixed-precision
// caller needs around the *_typed kernels (weights and activations narrowed once, results widened). One
// grid-stride pass, one element per step: it is bandwidth-bound and called outside the hot loop.
#include "cuda_compat.cuh"
#include "dtype.cuh"
#include "onestep_kernels.h"
#include "status.cuh"

#include <cstdio>

namespace onestep {
namespace convert {

// alpha scales in fp32 before the one rounding; 1 (a plain conversion) leaves every value's bits as they were
// (1 * v is v exactly, signed zeros, infinities and NaN included).
template <typename From, typename To>
__global__ void convert_kernel(float alpha, const From* __restrict__ x, To* __restrict__ y, long long n) {
    await_predecessors();
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = from_f32<To>(alpha * to_f32(x[i]));  // fp16 and bf16 widen to fp32 exactly, so one rounding at most
}

template <typename From, typename To>
static cudaError_t run(float alpha, const void* x, void* y, long long n, cudaStream_t stream) {
    const long long blocks = (n + 255) / 256;
    return launch_dependent(convert_kernel<From, To>, dim3(unsigned(blocks < 4096 ? blocks : 4096)), dim3(256), 0, stream,
                            alpha, static_cast<const From*>(x), static_cast<To*>(y), n);
}

template <typename From>
static cudaError_t run_from(float alpha, const void* x, void* y, onestep_dtype to, long long n, cudaStream_t stream) {
    switch (to) {
        case ONESTEP_FLOAT32: return run<From, float>(alpha, x, y, n, stream);
        case ONESTEP_FLOAT16: return run<From, __half>(alpha, x, y, n, stream);
        case ONESTEP_BFLOAT16: return run<From, __nv_bfloat16>(alpha, x, y, n, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace convert
}  // namespace onestep

using namespace onestep;

static onestep_status convert_impl(const char* fn, float alpha, const void* x, onestep_dtype from, void* y,
                                   onestep_dtype to, long long n, cudaStream_t stream, bool scaled) {
    ONESTEP_SHAPES(scaled ? "n=%lld, %s -> %s, alpha=%g" : "n=%lld, %s -> %s", n, dtype_name(from), dtype_name(to),
                   alpha);
    if (dtype_bytes(from) == 0 || dtype_bytes(to) == 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (n < 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "n must be >= 0");
    if (n == 0) return ONESTEP_OK;
    if (!x || !y) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "x and y must be non-null");
    cudaError_t e = cudaErrorInvalidValue;
    switch (from) {
        case ONESTEP_FLOAT32: e = convert::run_from<float>(alpha, x, y, to, n, stream); break;
        case ONESTEP_FLOAT16: e = convert::run_from<__half>(alpha, x, y, to, n, stream); break;
        case ONESTEP_BFLOAT16: e = convert::run_from<__nv_bfloat16>(alpha, x, y, to, n, stream); break;
    }
    return check_launch(e, fn, shapes);
}

extern "C" onestep_status onestep_convert(const void* x, onestep_dtype from, void* y, onestep_dtype to, long long n,
                                          cudaStream_t stream) {
    return convert_impl("onestep_convert", 1.0f, x, from, y, to, n, stream, false);
}

extern "C" onestep_status onestep_convert_scaled(float alpha, const void* x, onestep_dtype from, void* y,
                                                 onestep_dtype to, long long n, cudaStream_t stream) {
    return convert_impl("onestep_convert_scaled", alpha, x, from, y, to, n, stream, true);
}
