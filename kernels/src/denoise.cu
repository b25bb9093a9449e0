// denoise.cu: the per-element updates of the samplers and the consistency model, plus small elementwise
// ops. Each is one memory-bound pass; the scalar coefficients are formed on the host in double (the way
// NVlabs/edm builds its time grid in float64) so that, e.g., 1 + h/sigma near sigma_min = 0.002 does not
// lose digits in fp32, and the kernel only does fused multiply-adds.
//
// All kernels share one grid-stride "map" skeleton: float4 loads/stores for the bulk when every pointer
// is 16-byte aligned, then a scalar tail for the n % 4 leftovers (or the whole range when a pointer is not
// aligned). Outputs may alias inputs: every element is read before it is written, by the same thread.
#include "cuda_compat.cuh"
#include "dtype.cuh"
#include "onestep_kernels.h"
#include "status.cuh"

#include <cmath>
#include <cstdint>
#include <cstdio>

namespace onestep {
namespace denoise {

// T: the storage type (dtype.cuh). The samplers' updates are fp32 only; the small elementwise ops also have
// fp16/bf16 instantiations for the half-precision inference path (every op still computes in fp32).
template <int N, typename T = float>
struct Ptrs {
    const T* p[N > 0 ? N : 1];
};
template <int N, typename T = float>
struct OutPtrs {
    T* p[N > 0 ? N : 1];
};

__device__ __forceinline__ float lane(const float4& v, int k) { return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w; }
__device__ __forceinline__ void set_lane(float4& v, int k, float f) {
    if (k == 0) v.x = f;
    else if (k == 1) v.y = f;
    else if (k == 2) v.z = f;
    else v.w = f;
}

// op(in[NIN], out[NOUT]) computes one element.
template <int NIN, int NOUT, class Op, typename T>
__global__ void map_kernel(Op op, Ptrs<NIN, T> in, OutPtrs<NOUT, T> out, long long n, int vec4) {
    await_predecessors();
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long nvec = vec4 ? n / 4 : 0;
    for (long long i = tid; i < nvec; i += stride) {
        float4 a[NIN > 0 ? NIN : 1], r[NOUT] = {};
        for (int j = 0; j < NIN; j++) a[j] = load4(in.p[j] + 4 * i);
        for (int k = 0; k < 4; k++) {
            float xi[NIN > 0 ? NIN : 1], yo[NOUT];
            for (int j = 0; j < NIN; j++) xi[j] = lane(a[j], k);
            op(xi, yo);
            for (int j = 0; j < NOUT; j++) set_lane(r[j], k, yo[j]);
        }
        for (int j = 0; j < NOUT; j++) store4(out.p[j] + 4 * i, r[j]);
    }
    for (long long i = nvec * 4 + tid; i < n; i += stride) {
        float xi[NIN > 0 ? NIN : 1], yo[NOUT];
        for (int j = 0; j < NIN; j++) xi[j] = to_f32(in.p[j][i]);
        op(xi, yo);
        for (int j = 0; j < NOUT; j++) out.p[j][i] = from_f32<T>(yo[j]);
    }
}

constexpr int kBlock = 256;

// Aligned for a 4-element vector of T (16 bytes for float, 8 for the 16-bit types).
template <typename T>
inline bool aligned4(const T* p) { return (reinterpret_cast<uintptr_t>(p) & (4 * sizeof(T) - 1)) == 0; }

template <int NIN, int NOUT, class Op, typename T>
cudaError_t run_map(const Op& op, Ptrs<NIN, T> in, OutPtrs<NOUT, T> out, long long n, cudaStream_t stream) {
    if (n == 0) return cudaSuccess;
    bool vec4 = true;
    for (int j = 0; j < NIN; j++) vec4 &= aligned4(in.p[j]);
    for (int j = 0; j < NOUT; j++) vec4 &= aligned4(out.p[j]);
    const long long work = vec4 ? n / 4 + 3 : n;  // + 3: the tail threads
    long long blocks = (work + kBlock - 1) / kBlock;
    if (blocks > (1 << 16)) blocks = 1 << 16;  // grid-stride beyond that
    return launch_dependent(map_kernel<NIN, NOUT, Op, T>, dim3(unsigned(blocks)), dim3(kBlock), 0, stream, op, in, out, n,
                            int(vec4));
}

// One elementwise op on `dtype` storage: NIN inputs, one output, all of the same type.
template <int NIN, class Op>
cudaError_t run_map_typed(const Op& op, const void* const (&in)[NIN], void* out, long long n, onestep_dtype dtype,
                          cudaStream_t stream) {
    return ONESTEP_DISPATCH_DTYPE(dtype, T, [&]() {
        Ptrs<NIN, T> p;
        for (int j = 0; j < NIN; j++) p.p[j] = static_cast<const T*>(in[j]);
        return run_map(op, p, OutPtrs<1, T>{{static_cast<T*>(out)}}, n, stream);
    }());
}

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }

// EDM Euler step (Karras et al. 2022, Alg. 1 lines 4-6 with the ODE derivative of Eq. 3 for sigma(t) = t):
// d = (x - D) / sigma;  x_next = x + (sigma_next - sigma) d = a x - b D,  a = 1 + h/sigma, b = h/sigma.
struct EulerOp {
    float a, b, inv_sigma;
    __device__ void operator()(const float* in, float* out) const {
        out[0] = a * in[0] - b * in[1];
        out[1] = (in[0] - in[1]) * inv_sigma;
    }
};
struct EulerNoDOp {
    float a, b;
    __device__ void operator()(const float* in, float* out) const { out[0] = a * in[0] - b * in[1]; }
};
// Heun's second-order correction (Alg. 1 lines 7-8): d' = (x_euler - D') / sigma_next,
// x_next = x + h (d + d') / 2 = x + c1 d + c2 (x_euler - D'),  c1 = h/2, c2 = h / (2 sigma_next).
struct HeunOp {
    float c1, c2;
    __device__ void operator()(const float* in, float* out) const {
        out[0] = in[0] + c1 * in[1] + c2 * (in[2] - in[3]);
    }
};
// Two-term linear combination: consistency output c_skip x + c_out F (Song et al. 2023, Eq. 5) and the
// multistep re-noising x + sqrt(tau^2 - eps^2) z (Alg. 1), and add (1, 1), axpy (alpha, 1).
struct LinComb2Op {
    float a, b;
    __device__ void operator()(const float* in, float* out) const { out[0] = a * in[0] + b * in[1]; }
};
// out = a x + b z as fmaf(b, z, a x): spelled out so that nvcc, the emulation and the Java CPU backend (scale, then
// a fused axpy) round identically. The denoisers' output c_skip x + c_out F for a whole batch at one noise level.
struct AxpbyOp {
    float a, b;
    __device__ void operator()(const float* in, float* out) const { out[0] = fmaf(b, in[1], a * in[0]); }
};
struct ScaleOp {
    float a;
    __device__ void operator()(const float* in, float* out) const { out[0] = a * in[0]; }
};
struct SiluOp {
    __device__ void operator()(const float* in, float* out) const { out[0] = in[0] * sigmoid(in[0]); }
};
// d/dx [x sigmoid(x)] = sigmoid(x) (1 + x (1 - sigmoid(x)))
struct SiluBackwardOp {
    __device__ void operator()(const float* in, float* out) const {
        const float s = sigmoid(in[0]);
        out[0] = in[1] * s * (1.0f + in[0] * (1.0f - s));
    }
};

// y = a x + b F' with x and y fp32 and F in the network's storage type T, F' = F + bias[c] rounded to T once (the
// bias its last convolution left pending; none: F itself) and widened exactly. The bits of adding that bias in
// place, converting F to fp32 and running AxpbyOp, in one launch instead of three: the denoiser output
// c_skip x + c_out F at the end of a half-precision network (Karras et al. 2022, Eq. 7; Song et al. 2023, Eq. 5).
// Element-wise over n (n/4 could go vectorised, but at a sample's 3 K to 200 K elements the launch dominates).
template <typename T>
__global__ void axpby_mixed_kernel(float a, const float* x, float b, const T* f, const T* bias, int C, float* y,
                                   long long n) {
    await_predecessors();
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float fi = to_f32(f[i]);
        if (bias) fi = to_f32(from_f32<T>(fi + to_f32(bias[i % C])));
        y[i] = fmaf(b, fi, a * x[i]);
    }
}

}  // namespace denoise
}  // namespace onestep

using namespace onestep;
using namespace onestep::denoise;

static onestep_status check_n(const char* fn, const char* shapes, long long n) {
    if (n < 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "n must be >= 0");
    return ONESTEP_OK;
}

extern "C" onestep_status onestep_edm_euler_step(const float* x, const float* denoised, float* x_next, float* d_out,
                                                 long long n, double sigma, double sigma_next, cudaStream_t stream) {
    const char* fn = "onestep_edm_euler_step";
    ONESTEP_SHAPES("n=%lld, sigma=%g, sigma_next=%g", n, sigma, sigma_next);
    if (onestep_status s = check_n(fn, shapes, n)) return s;
    if (!x || !denoised || !x_next) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "x, denoised and x_next must be non-null");
    if (!(sigma > 0.0) || !(sigma_next >= 0.0) || !std::isfinite(sigma) || !std::isfinite(sigma_next))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "need finite sigma > 0 and sigma_next >= 0");
    const double h_over_s = (sigma_next - sigma) / sigma;
    if (d_out)
        return check_launch(run_map(EulerOp{float(1.0 + h_over_s), float(h_over_s), float(1.0 / sigma)},
                                    Ptrs<2>{{x, denoised}}, OutPtrs<2>{{x_next, d_out}}, n, stream),
                            fn, shapes);
    return check_launch(run_map(EulerNoDOp{float(1.0 + h_over_s), float(h_over_s)}, Ptrs<2>{{x, denoised}},
                                OutPtrs<1>{{x_next}}, n, stream),
                        fn, shapes);
}

extern "C" onestep_status onestep_edm_heun_step(const float* x, const float* d, const float* x_euler,
                                                const float* denoised_next, float* x_next, long long n, double sigma,
                                                double sigma_next, cudaStream_t stream) {
    const char* fn = "onestep_edm_heun_step";
    ONESTEP_SHAPES("n=%lld, sigma=%g, sigma_next=%g", n, sigma, sigma_next);
    if (onestep_status s = check_n(fn, shapes, n)) return s;
    if (!x || !d || !x_euler || !denoised_next || !x_next)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "every tensor must be non-null");
    if (!(sigma > 0.0) || !(sigma_next > 0.0) || !std::isfinite(sigma) || !std::isfinite(sigma_next))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes,
                    "need finite sigma > 0 and sigma_next > 0 (the step to sigma = 0 is Euler only)");
    const double h = sigma_next - sigma;
    return check_launch(run_map(HeunOp{float(h / 2.0), float(h / (2.0 * sigma_next))},
                                Ptrs<4>{{x, d, x_euler, denoised_next}}, OutPtrs<1>{{x_next}}, n, stream),
                        fn, shapes);
}

extern "C" onestep_status onestep_consistency_output(const float* x, const float* F, float* out, long long n, double t,
                                                     double eps, double sigma_data, cudaStream_t stream) {
    const char* fn = "onestep_consistency_output";
    ONESTEP_SHAPES("n=%lld, t=%g, eps=%g, sigma_data=%g", n, t, eps, sigma_data);
    if (onestep_status s = check_n(fn, shapes, n)) return s;
    if (!x || !F || !out) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "x, F and out must be non-null");
    if (!(t >= eps) || !(eps >= 0.0) || !(sigma_data > 0.0))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "need t >= eps >= 0 and sigma_data > 0");
    // Song et al. 2023, App. C: c_skip(eps) = 1 and c_out(eps) = 0 give the boundary condition f(x, eps) = x.
    const double sd2 = sigma_data * sigma_data, te = t - eps;
    const double c_skip = sd2 / (te * te + sd2);
    const double c_out = sigma_data * te / std::sqrt(sd2 + t * t);
    return check_launch(run_map(LinComb2Op{float(c_skip), float(c_out)}, Ptrs<2>{{x, F}}, OutPtrs<1>{{out}}, n, stream),
                        fn, shapes);
}

extern "C" onestep_status onestep_consistency_renoise(const float* x, const float* z, float* out, long long n,
                                                      double tau, double eps, cudaStream_t stream) {
    const char* fn = "onestep_consistency_renoise";
    ONESTEP_SHAPES("n=%lld, tau=%g, eps=%g", n, tau, eps);
    if (onestep_status s = check_n(fn, shapes, n)) return s;
    if (!x || !z || !out) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "x, z and out must be non-null");
    if (!(tau >= eps) || !(eps >= 0.0)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "need tau >= eps >= 0");
    const double k = std::sqrt(tau * tau - eps * eps);  // Song et al. 2023, Alg. 1 line 5
    return check_launch(run_map(LinComb2Op{1.0f, float(k)}, Ptrs<2>{{x, z}}, OutPtrs<1>{{out}}, n, stream), fn, shapes);
}

// The small elementwise ops, fp32 and typed, share one implementation; `fn` names the entry point called.
static onestep_status add_impl(const char* fn, const void* a, const void* b, void* out, long long n,
                               onestep_dtype dtype, cudaStream_t stream) {
    ONESTEP_SHAPES("n=%lld", n);
    if (dtype_bytes(dtype) == 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (onestep_status s = check_n(fn, shapes, n)) return s;
    if (!a || !b || !out) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "a, b and out must be non-null");
    const void* in[2] = {a, b};
    return check_launch(run_map_typed(LinComb2Op{1.0f, 1.0f}, in, out, n, dtype, stream), fn, shapes);
}

extern "C" onestep_status onestep_add(const float* a, const float* b, float* out, long long n, cudaStream_t stream) {
    return add_impl("onestep_add", a, b, out, n, ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_add_typed(const void* a, const void* b, void* out, long long n, onestep_dtype dtype,
                                            cudaStream_t stream) {
    return add_impl("onestep_add_typed", a, b, out, n, dtype, stream);
}

static onestep_status axpy_impl(const char* fn, float alpha, const void* x, void* y, long long n, onestep_dtype dtype,
                                cudaStream_t stream) {
    ONESTEP_SHAPES("n=%lld, alpha=%g", n, alpha);
    if (dtype_bytes(dtype) == 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (onestep_status s = check_n(fn, shapes, n)) return s;
    if (!x || !y) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "x and y must be non-null");
    const void* in[2] = {x, y};
    return check_launch(run_map_typed(LinComb2Op{alpha, 1.0f}, in, y, n, dtype, stream), fn, shapes);
}

extern "C" onestep_status onestep_axpy(float alpha, const float* x, float* y, long long n, cudaStream_t stream) {
    return axpy_impl("onestep_axpy", alpha, x, y, n, ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_axpy_typed(float alpha, const void* x, void* y, long long n, onestep_dtype dtype,
                                             cudaStream_t stream) {
    return axpy_impl("onestep_axpy_typed", alpha, x, y, n, dtype, stream);
}

static onestep_status axpby_impl(const char* fn, float a, const void* x, float b, const void* z, void* y, long long n,
                                 onestep_dtype dtype, cudaStream_t stream) {
    ONESTEP_SHAPES("n=%lld, a=%g, b=%g", n, a, b);
    if (dtype_bytes(dtype) == 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (onestep_status s = check_n(fn, shapes, n)) return s;
    if (!x || !z || !y) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "x, z and y must be non-null");
    const void* in[2] = {x, z};
    return check_launch(run_map_typed(AxpbyOp{a, b}, in, y, n, dtype, stream), fn, shapes);
}

extern "C" onestep_status onestep_axpby(float a, const float* x, float b, const float* z, float* y, long long n,
                                        cudaStream_t stream) {
    return axpby_impl("onestep_axpby", a, x, b, z, y, n, ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_axpby_typed(float a, const void* x, float b, const void* z, void* y, long long n,
                                              onestep_dtype dtype, cudaStream_t stream) {
    return axpby_impl("onestep_axpby_typed", a, x, b, z, y, n, dtype, stream);
}

extern "C" onestep_status onestep_axpby_mixed_typed(float a, const float* x, float b, const void* f,
                                                    const void* f_bias, int C, float* y, long long n,
                                                    onestep_dtype f_dtype, cudaStream_t stream) {
    const char* fn = "onestep_axpby_mixed_typed";
    ONESTEP_SHAPES("n=%lld, C=%d, a=%g, b=%g, f %s", n, C, a, b, dtype_name(f_dtype));
    if (dtype_bytes(f_dtype) == 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (onestep_status s = check_n(fn, shapes, n)) return s;
    if (!x || !f || !y) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "x, f and y must be non-null");
    if (f_bias && (C < 1 || n % C != 0))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "with a bias, C >= 1 must divide n");
    if (n == 0) return ONESTEP_OK;
    long long blocks = (n + denoise::kBlock - 1) / denoise::kBlock;
    if (blocks > (1 << 16)) blocks = 1 << 16;
    return check_launch(ONESTEP_DISPATCH_DTYPE(f_dtype, T,
                                               launch_dependent(denoise::axpby_mixed_kernel<T>, dim3(unsigned(blocks)),
                                                                dim3(denoise::kBlock), 0, stream, a, x, b,
                                                                static_cast<const T*>(f), static_cast<const T*>(f_bias), C, y,
                                                                n)),
                        fn, shapes);
}

static onestep_status scale_impl(const char* fn, float alpha, const void* x, void* out, long long n,
                                 onestep_dtype dtype, cudaStream_t stream) {
    ONESTEP_SHAPES("n=%lld, alpha=%g", n, alpha);
    if (dtype_bytes(dtype) == 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (onestep_status s = check_n(fn, shapes, n)) return s;
    if (!x || !out) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "x and out must be non-null");
    const void* in[1] = {x};
    return check_launch(run_map_typed(ScaleOp{alpha}, in, out, n, dtype, stream), fn, shapes);
}

extern "C" onestep_status onestep_scale(float alpha, const float* x, float* out, long long n, cudaStream_t stream) {
    return scale_impl("onestep_scale", alpha, x, out, n, ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_scale_typed(float alpha, const void* x, void* out, long long n, onestep_dtype dtype,
                                              cudaStream_t stream) {
    return scale_impl("onestep_scale_typed", alpha, x, out, n, dtype, stream);
}

static onestep_status silu_impl(const char* fn, const void* x, void* out, long long n, onestep_dtype dtype,
                                cudaStream_t stream) {
    ONESTEP_SHAPES("n=%lld", n);
    if (dtype_bytes(dtype) == 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (onestep_status s = check_n(fn, shapes, n)) return s;
    if (!x || !out) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "x and out must be non-null");
    const void* in[1] = {x};
    return check_launch(run_map_typed(SiluOp{}, in, out, n, dtype, stream), fn, shapes);
}

extern "C" onestep_status onestep_silu_forward(const float* x, float* out, long long n, cudaStream_t stream) {
    return silu_impl("onestep_silu_forward", x, out, n, ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_silu_forward_typed(const void* x, void* out, long long n, onestep_dtype dtype,
                                                     cudaStream_t stream) {
    return silu_impl("onestep_silu_forward_typed", x, out, n, dtype, stream);
}

extern "C" onestep_status onestep_silu_backward(const float* x, const float* dout, float* dx, long long n,
                                                cudaStream_t stream) {
    const char* fn = "onestep_silu_backward";
    ONESTEP_SHAPES("n=%lld", n);
    if (onestep_status s = check_n(fn, shapes, n)) return s;
    if (!x || !dout || !dx) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "x, dout and dx must be non-null");
    return check_launch(run_map(SiluBackwardOp{}, Ptrs<2>{{x, dout}}, OutPtrs<1>{{dx}}, n, stream), fn, shapes);
}
