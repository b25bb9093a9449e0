// layers.cu: the portable kernels around the fused ones (GEMM, linear, direct convolution, layout and
// elementwise ops, the sinusoidal time embedding). One thread per output element in a grid-stride loop:
// simple and obviously correct, because their job is to let the emulated build run a whole U-Net and to be
// the fallback when cuBLAS/cuDNN do not load. Accumulation is fp32 FMA in a fixed order (k, or ky/kx/ci).
// The forward kernels are templated on the storage type (dtype.cuh: float, __half, __nv_bfloat16) for the
// *_typed entry points of the half-precision inference path: values widen to fp32 as they are loaded and
// round once when stored, so fp16/bf16 differ from fp32 only by the rounding of inputs and outputs.
#include "cuda_compat.cuh"
#include "dtype.cuh"
#include "onestep_kernels.h"
#include "status.cuh"

#include <cmath>
#include <cstdio>

namespace onestep {
namespace layers {

constexpr int kBlock = 256;

inline dim3 grid_for(long long n) {
    long long blocks = (n + kBlock - 1) / kBlock;
    if (blocks > (1 << 16)) blocks = 1 << 16;  // grid-stride beyond that
    return dim3(unsigned(blocks < 1 ? 1 : blocks));
}

#define ONESTEP_GRID_STRIDE(i, n)                                                        \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)gridDim.x * blockDim.x)

template <typename T>
__global__ void gemm_kernel(const T* a, int ta, const T* b, int tb, T* c, int M, int N, int K, float alpha,
                            float beta) {
    await_predecessors();
    ONESTEP_GRID_STRIDE(idx, (long long)M * N) {
        int i = int(idx / N), j = int(idx % N);
        float acc = 0.f;
        for (int k = 0; k < K; k++) {
            float av = to_f32(ta ? a[(long long)k * M + i] : a[(long long)i * K + k]);
            float bv = to_f32(tb ? b[(long long)j * K + k] : b[(long long)k * N + j]);
            acc = fmaf(av, bv, acc);
        }
        c[idx] = from_f32<T>(beta == 0.f ? alpha * acc : alpha * acc + beta * to_f32(c[idx]));
    }
}

template <typename T>
__global__ void linear_kernel(const T* x, const T* w, const T* bias, const T* z, T* y, long long rows, int in,
                              int out) {
    await_predecessors();
    ONESTEP_GRID_STRIDE(idx, rows * out) {
        long long r = idx / out;
        int j = int(idx % out);
        float acc = 0.f;
        for (int k = 0; k < in; k++) acc = fmaf(to_f32(x[r * in + k]), to_f32(w[(long long)k * out + j]), acc);
        if (bias) acc += to_f32(bias[j]);
        if (z) acc += to_f32(z[idx]);  // a residual, before the one rounding (cuBLASLt's C with beta = 1)
        y[idx] = from_f32<T>(acc);
    }
}

template <typename T>
__global__ void conv_kernel(const T* x, const T* w, const T* bias, const T* z, T* y, int N, int H, int W, int Cin,
                            int KH, int KW, int Cout, int stride, int pad, int Ho, int Wo) {
    await_predecessors();
    ONESTEP_GRID_STRIDE(idx, (long long)N * Ho * Wo * Cout) {
        int co = int(idx % Cout);
        long long p = idx / Cout;
        int ox = int(p % Wo);
        int oy = int((p / Wo) % Ho);
        int n = int(p / ((long long)Wo * Ho));
        float acc = 0.f;
        for (int ky = 0; ky < KH; ky++) {
            int iy = oy * stride - pad + ky;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < KW; kx++) {
                int ix = ox * stride - pad + kx;
                if (ix < 0 || ix >= W) continue;
                const T* xp = x + (((long long)n * H + iy) * W + ix) * Cin;
                const T* wp = w + ((long long)ky * KW + kx) * Cin * Cout + co;
                for (int ci = 0; ci < Cin; ci++) acc = fmaf(to_f32(xp[ci]), to_f32(wp[(long long)ci * Cout]), acc);
            }
        }
        if (bias) acc += to_f32(bias[co]);
        // The residual z (same shape as y) joins the fp32 sum before the one rounding, as cuDNN's
        // conv + bias + z epilogue does (cudnnConvolutionBiasActivationForward, identity activation).
        if (z) acc += to_f32(z[idx]);
        y[idx] = from_f32<T>(acc);
    }
}

// ---- nearest 2x upsampling followed by a 3x3, padding-1 convolution (diffusers' Upsample2D) as one transposed
// convolution. With U the upsampled x, y[o] = sum_d w[d] U[o - 1 + d] (rows; columns alike). For an even output
// row o = 2i, U[2i-1] = x[i-1] and U[2i] = U[2i+1] = x[i]; for o = 2i + 1, U[2i] = U[2i+1] = x[i] and U[2i+2] =
// x[i+1]. So each output parity is a 2-tap filter on x whose taps are sums of w's, which is exactly the transposed
// convolution (stride 2, padding 1) with a 4-tap kernel k: y[o] = sum_{i, r: o = 2i - 1 + r} x[i] k[r], where
//   k[0] = w[2],  k[1] = w[1] + w[2],  k[2] = w[0] + w[1],  k[3] = w[0]        (and the same in the other axis)
// (Shi et al. 2016's sub-pixel view of an upsampling convolution). 4 multiply-adds per output where the upsampled
// convolution does 9, and the upsampled tensor is never written. The 4x4 kernel is laid out (Cin, 4, 4, Cout):
// cuDNN's KRSC filter of the forward convolution whose data gradient this is (K = our Cin, C = our Cout), so the
// same copy serves cuDNN's cudnnConvolutionBackwardData and the portable kernel below.
__host__ __device__ inline int subpixel_first_tap(int r) { return r == 0 ? 2 : r == 1 ? 1 : 0; }  // k[r] sums w[first..last]
__host__ __device__ inline int subpixel_last_tap(int r) { return r == 3 ? 0 : r == 2 ? 1 : 2; }

// k (Cin, 4, 4, Cout) from w (3, 3, Cin, Cout) HWIO: each tap's sum in fp32 (in ky, kx order), rounded once.
template <typename T>
__global__ void subpixel_weights_kernel(const T* w, T* k, int Cin, int Cout) {
    await_predecessors();
    ONESTEP_GRID_STRIDE(idx, (long long)Cin * 16 * Cout) {
        const int co = int(idx % Cout);
        const long long q = idx / Cout;
        const int s = int(q % 4), r = int((q / 4) % 4), ci = int(q / 16);
        float acc = 0.f;
        for (int ky = subpixel_first_tap(r); ky <= subpixel_last_tap(r); ky++)
            for (int kx = subpixel_first_tap(s); kx <= subpixel_last_tap(s); kx++)
                acc += to_f32(w[(((long long)ky * 3 + kx) * Cin + ci) * Cout + co]);
        k[idx] = from_f32<T>(acc);
    }
}

// y (N, 2H, 2W, Cout) = the transposed convolution of x (N, H, W, Cin) with k (Cin, 4, 4, Cout), stride 2,
// padding 1, + bias: the two input rows (and columns) under output row oy are i = (oy + 1 - r) / 2 for the two
// taps r of oy's parity, the r with oy + 1 - r even.
template <typename T>
__global__ void upsample_conv_kernel(const T* x, const T* k, const T* bias, T* y, int N, int H, int W, int Cin,
                                     int Cout) {
    await_predecessors();
    const int Ho = 2 * H, Wo = 2 * W;
    ONESTEP_GRID_STRIDE(idx, (long long)N * Ho * Wo * Cout) {
        const int co = int(idx % Cout);
        const long long p = idx / Cout;
        const int ox = int(p % Wo), oy = int((p / Wo) % Ho), n = int(p / ((long long)Wo * Ho));
        float acc = 0.f;
        for (int r = (oy + 1) % 2; r < 4; r += 2) {
            const int iy = (oy + 1 - r) / 2;
            if (iy < 0 || iy >= H) continue;
            for (int s = (ox + 1) % 2; s < 4; s += 2) {
                const int ix = (ox + 1 - s) / 2;
                if (ix < 0 || ix >= W) continue;
                const T* xp = x + (((long long)n * H + iy) * W + ix) * Cin;
                const T* kp = k + ((long long)r * 4 + s) * Cout + co;
                for (int ci = 0; ci < Cin; ci++) acc = fmaf(to_f32(xp[ci]), to_f32(kp[(long long)ci * 16 * Cout]), acc);
            }
        }
        if (bias) acc += to_f32(bias[co]);
        y[idx] = from_f32<T>(acc);
    }
}

// The convolution's input gradient (the transposed convolution of dy): one thread per dx element gathers every
// (ky, kx, co) whose output position oy = (iy + pad - ky) / stride lands exactly on the grid. Assigned.
__global__ void conv_backward_data_kernel(const float* w, const float* dy, float* dx, int N, int H, int W, int Cin,
                                          int KH, int KW, int Cout, int stride, int pad, int Ho, int Wo) {
    await_predecessors();
    ONESTEP_GRID_STRIDE(idx, (long long)N * H * W * Cin) {
        int ci = int(idx % Cin);
        long long p = idx / Cin;
        int ix = int(p % W);
        int iy = int((p / W) % H);
        int n = int(p / ((long long)W * H));
        float acc = 0.f;
        for (int ky = 0; ky < KH; ky++) {
            int ty = iy + pad - ky;
            if (ty < 0 || ty % stride != 0 || ty / stride >= Ho) continue;
            int oy = ty / stride;
            for (int kx = 0; kx < KW; kx++) {
                int tx = ix + pad - kx;
                if (tx < 0 || tx % stride != 0 || tx / stride >= Wo) continue;
                int ox = tx / stride;
                const float* dyp = dy + (((long long)n * Ho + oy) * Wo + ox) * Cout;
                const float* wp = w + (((long long)ky * KW + kx) * Cin + ci) * Cout;
                for (int co = 0; co < Cout; co++) acc = fmaf(dyp[co], wp[co], acc);
            }
        }
        dx[idx] = acc;
    }
}

// The convolution's weight gradient: one thread per dw (ky, kx, ci, co) element sums x * dy over every sample and
// output position, then adds the sum to dw (parameter gradients accumulate).
__global__ void conv_backward_filter_kernel(const float* x, const float* dy, float* dw, int N, int H, int W, int Cin,
                                            int KH, int KW, int Cout, int stride, int pad, int Ho, int Wo) {
    await_predecessors();
    ONESTEP_GRID_STRIDE(idx, (long long)KH * KW * Cin * Cout) {
        int co = int(idx % Cout);
        int ci = int((idx / Cout) % Cin);
        int kx = int((idx / ((long long)Cout * Cin)) % KW);
        int ky = int(idx / ((long long)Cout * Cin * KW));
        float acc = 0.f;
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < Ho; oy++) {
                int iy = oy * stride - pad + ky;
                if (iy < 0 || iy >= H) continue;
                for (int ox = 0; ox < Wo; ox++) {
                    int ix = ox * stride - pad + kx;
                    if (ix < 0 || ix >= W) continue;
                    acc = fmaf(x[(((long long)n * H + iy) * W + ix) * Cin + ci],
                               dy[(((long long)n * Ho + oy) * Wo + ox) * Cout + co], acc);
                }
            }
        dw[idx] += acc;
    }
}

template <typename T>
__global__ void mul_kernel(const T* a, const T* b, T* out, long long n) {
    await_predecessors();
    ONESTEP_GRID_STRIDE(i, n) { out[i] = from_f32<T>(to_f32(a[i]) * to_f32(b[i])); }
}

template <typename T>
__global__ void add_per_channel_kernel(const T* x, const T* v, T* y, long long P, int C, long long total) {
    await_predecessors();
    ONESTEP_GRID_STRIDE(i, total) {
        long long n = i / (P * C);
        int c = int(i % C);
        y[i] = from_f32<T>(to_f32(x[i]) + to_f32(v[n * C + c]));
    }
}

// out = (a + a_bias[c]) + (b + b_bias[c]): a residual add that also adds the biases CudaOps left pending on its
// operands (a cuDNN convolution's or a cuBLAS GEMM's, whose bias is otherwise a kernel of its own). fp32 sums in
// the order of the unfused ops, so fp32 results are their bits.
template <typename T>
__global__ void add_biased_kernel(const T* a, const T* a_bias, const T* b, const T* b_bias, T* out, int C,
                                  long long total) {
    await_predecessors();
    ONESTEP_GRID_STRIDE(i, total) {
        const int c = int(i % C);
        float x = to_f32(a[i]), y = to_f32(b[i]);
        if (a_bias) x += to_f32(a_bias[c]);
        if (b_bias) y += to_f32(b_bias[c]);
        out[i] = from_f32<T>(x + y);
    }
}

// Concatenation, upsampling and the head layout only move elements, so one template serves every storage type.
template <typename T>
__global__ void concat_kernel(const T* a, const T* b, T* y, long long rows, int ca, int cb) {
    await_predecessors();
    const int ct = ca + cb;
    ONESTEP_GRID_STRIDE(i, rows * ct) {
        long long r = i / ct;
        int c = int(i % ct);
        y[i] = c < ca ? a[r * ca + c] : b[r * cb + (c - ca)];
    }
}

// The same taking per-channel biases its inputs' producers left out (a skip connection's conv output): a biased
// value is widened, added in fp32 and rounded once, the very rounding the producer's own bias add would have done,
// so every storage type gives the unfused bits.
template <typename T>
__global__ void concat_biased_kernel(const T* a, const T* a_bias, const T* b, const T* b_bias, T* y, long long rows,
                                     int ca, int cb) {
    await_predecessors();
    const int ct = ca + cb;
    ONESTEP_GRID_STRIDE(i, rows * ct) {
        long long r = i / ct;
        int c = int(i % ct);
        if (c < ca)
            y[i] = a_bias ? from_f32<T>(to_f32(a[r * ca + c]) + to_f32(a_bias[c])) : a[r * ca + c];
        else
            y[i] = b_bias ? from_f32<T>(to_f32(b[r * cb + (c - ca)]) + to_f32(b_bias[c - ca])) : b[r * cb + (c - ca)];
    }
}

__global__ void split_kernel(const float* y, float* a, float* b, long long rows, int ca, int cb) {
    await_predecessors();
    const int ct = ca + cb;
    ONESTEP_GRID_STRIDE(i, rows * ct) {
        long long r = i / ct;
        int c = int(i % ct);
        if (c < ca) a[r * ca + c] = y[i];
        else b[r * cb + (c - ca)] = y[i];
    }
}

__global__ void sum_per_channel_kernel(const float* x, float* v, int N, long long P, int C) {
    await_predecessors();
    ONESTEP_GRID_STRIDE(i, (long long)N * C) {
        long long n = i / C;
        int c = int(i % C);
        float acc = 0.f;
        for (long long p = 0; p < P; p++) acc += x[(n * P + p) * C + c];
        v[i] = acc;
    }
}

template <typename T>
__global__ void upsample_kernel(const T* x, T* y, int N, int H, int W, int C) {
    await_predecessors();
    const int H2 = 2 * H, W2 = 2 * W;
    ONESTEP_GRID_STRIDE(i, (long long)N * H2 * W2 * C) {
        int c = int(i % C);
        long long p = i / C;
        int ox = int(p % W2);
        int oy = int((p / W2) % H2);
        long long n = p / ((long long)W2 * H2);
        y[i] = x[((n * H + oy / 2) * W + ox / 2) * C + c];
    }
}

// The adjoint of upsample_kernel: each input pixel receives the sum of its 2x2 block of output gradients,
// added as (top left + top right) + (bottom left + bottom right), the CPU backend's order, so both round alike.
__global__ void upsample_backward_kernel(const float* dy, float* dx, int N, int H, int W, int C) {
    await_predecessors();
    const int W2 = 2 * W;
    ONESTEP_GRID_STRIDE(i, (long long)N * H * W * C) {
        int c = int(i % C);
        long long p = i / C;
        int x = int(p % W);
        int y = int((p / W) % H);
        long long n = p / ((long long)W * H);
        const float* d = dy + ((n * 2 * H + 2 * y) * W2 + 2 * x) * C + c;
        const float* e = d + (long long)W2 * C;
        float top = d[0] + d[C], bottom = e[0] + e[C];
        dx[i] = top + bottom;
    }
}

// (N, T, H, D) <-> (N, H, T, Dp): `to_heads` chooses the direction; i indexes the destination. Dp >= D pads
// each head with zeros (to_heads) or drops the padding (merge): a head dim the fused attention kernels lack runs
// on the next one they have, since zero features add nothing to q.k and give zero output columns.
template <typename E>
__global__ void heads_kernel(const E* x, E* y, int N, int T, int H, int D, int Dp, int to_heads) {
    await_predecessors();
    if (to_heads) {  // destination (n, h, t, dp)
        ONESTEP_GRID_STRIDE(i, (long long)N * H * T * Dp) {
            int d = int(i % Dp);
            int t = int((i / Dp) % T);
            int h = int((i / ((long long)Dp * T)) % H);
            long long n = i / ((long long)Dp * T * H);
            y[i] = d < D ? x[((n * T + t) * H + h) * D + d] : from_f32<E>(0.f);
        }
    } else {  // destination (n, t, h, d)
        ONESTEP_GRID_STRIDE(i, (long long)N * T * H * D) {
            int d = int(i % D);
            int h = int((i / D) % H);
            int t = int((i / ((long long)D * H)) % T);
            long long n = i / ((long long)D * H * T);
            y[i] = x[((n * H + h) * T + t) * Dp + d];
        }
    }
}

// t stays fp32 in every instantiation: a noise level rounded to fp16 would move the embedding by more than
// the rounding of its output.
template <typename T>
__global__ void sinusoidal_kernel(const float* t, T* y, int N, int D, int flip, float shift, float scale,
                                  float max_period) {
    await_predecessors();
    const int half = D / 2;
    ONESTEP_GRID_STRIDE(i, (long long)N * D) {
        int n = int(i / D), j = int(i % D);
        if (j >= 2 * half) {
            y[i] = from_f32<T>(0.f);  // the odd D's trailing zero
            continue;
        }
        int f = j < half ? j : j - half;
        // Formed in double like the Java oracle, then rounded once: keeps high frequencies within fp32 rounding.
        double freq = exp(-log((double)max_period) * f / (half - (double)shift));
        double arg = (double)scale * (double)t[n] * freq;
        bool first = j < half;
        y[i] = from_f32<T>(float((first != (flip != 0)) ? sin(arg) : cos(arg)));
    }
}

// Gaussian Fourier features (NCSN++, Song et al. 2021; diffusers' GaussianFourierProjection): x = 2 pi t[n] (or
// 2 pi ln t[n]), y[n] = [sin(x w_j), cos(x w_j)] (or [cos, sin] if flip). The weights w are large random
// frequencies (scale 16), so the argument is formed and reduced in double, as the Java backends do, and the result
// rounded once.
template <typename T>
__global__ void fourier_kernel(const float* t, const float* w, T* y, int N, int half, int use_log, int flip) {
    await_predecessors();
    const int D = 2 * half;
    ONESTEP_GRID_STRIDE(i, (long long)N * D) {
        int n = int(i / D), j = int(i % D);
        int f = j < half ? j : j - half;
        double tn = (double)t[n];
        double x = 6.283185307179586 * (use_log ? log(tn) : tn);
        double arg = x * (double)w[f];
        bool first = j < half;
        y[i] = from_f32<T>(float((first != (flip != 0)) ? sin(arg) : cos(arg)));
    }
}

}  // namespace layers
}  // namespace onestep

using onestep::fail;
using onestep::check_launch;
using onestep::launch_dependent;
namespace L = onestep::layers;

// Each typed entry point and its fp32 twin share one implementation; `fn` names the one the caller used.
static bool bad_dtype(onestep_dtype dtype) { return onestep::dtype_bytes(dtype) == 0; }

static onestep_status gemm_impl(const char* fn, const void* a, int trans_a, const void* b, int trans_b, void* c, int M,
                                int N, int K, float alpha, float beta, onestep_dtype dtype, cudaStream_t stream) {
    ONESTEP_SHAPES("M=%d, N=%d, K=%d, trans_a=%d, trans_b=%d, %s", M, N, K, trans_a, trans_b,
                   onestep::dtype_name(dtype));
    if (bad_dtype(dtype)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (M < 0 || N < 0 || K < 0) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "negative size");
    // c is read and written whenever the product has elements (K = 0 leaves c = beta c); a and b only when K > 0.
    if ((long long)M * N > 0 && (!c || (K > 0 && (!a || !b))))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "NULL pointer");
    if ((long long)M * N == 0) return ONESTEP_OK;
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               launch_dependent(L::gemm_kernel<T>, L::grid_for((long long)M * N), dim3(L::kBlock),
                                                                0, stream, static_cast<const T*>(a), trans_a,
                                                                static_cast<const T*>(b), trans_b, static_cast<T*>(c), M, N, K,
                                                                alpha, beta)),
                        fn, shapes);
}

extern "C" onestep_status onestep_gemm(const float* a, int trans_a, const float* b, int trans_b, float* c, int M,
                                       int N, int K, float alpha, float beta, cudaStream_t stream) {
    return gemm_impl("onestep_gemm", a, trans_a, b, trans_b, c, M, N, K, alpha, beta, ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_gemm_typed(const void* a, int trans_a, const void* b, int trans_b, void* c, int M,
                                             int N, int K, float alpha, float beta, onestep_dtype dtype,
                                             cudaStream_t stream) {
    return gemm_impl("onestep_gemm_typed", a, trans_a, b, trans_b, c, M, N, K, alpha, beta, dtype, stream);
}

static onestep_status linear_impl(const char* fn, const void* x, const void* w, const void* bias, const void* z,
                                  void* y, long long rows, int in, int out, onestep_dtype dtype, cudaStream_t stream) {
    ONESTEP_SHAPES("rows=%lld, in=%d, out=%d, %s", rows, in, out, onestep::dtype_name(dtype));
    if (bad_dtype(dtype)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (rows < 0 || in < 1 || out < 1)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "rows >= 0, in >= 1 and out >= 1 needed");
    if (rows > 0 && (!x || !w || !y)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "NULL pointer");
    if (rows == 0) return ONESTEP_OK;
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               launch_dependent(L::linear_kernel<T>, L::grid_for(rows * out), dim3(L::kBlock), 0,
                                                                stream, static_cast<const T*>(x), static_cast<const T*>(w),
                                                                static_cast<const T*>(bias), static_cast<const T*>(z),
                                                                static_cast<T*>(y), rows, in, out)),
                        fn, shapes);
}

extern "C" onestep_status onestep_linear(const float* x, const float* w, const float* bias, float* y, long long rows,
                                         int in, int out, cudaStream_t stream) {
    return linear_impl("onestep_linear", x, w, bias, nullptr, y, rows, in, out, ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_linear_typed(const void* x, const void* w, const void* bias, void* y, long long rows,
                                               int in, int out, onestep_dtype dtype, cudaStream_t stream) {
    return linear_impl("onestep_linear_typed", x, w, bias, nullptr, y, rows, in, out, dtype, stream);
}

extern "C" onestep_status onestep_linear_residual_typed(const void* x, const void* w, const void* bias, const void* z,
                                                        void* y, long long rows, int in, int out, onestep_dtype dtype,
                                                        cudaStream_t stream) {
    const char* fn = "onestep_linear_residual_typed";
    if (!z && rows > 0) {
        ONESTEP_SHAPES("rows=%lld, in=%d, out=%d, %s", rows, in, out, onestep::dtype_name(dtype));
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "NULL residual z");
    }
    return linear_impl(fn, x, w, bias, z, y, rows, in, out, dtype, stream);
}

static onestep_status conv_impl(const char* fn, const void* x, const void* w, const void* bias, const void* z, void* y,
                                int N, int H, int W, int Cin, int KH, int KW, int Cout, int stride, int padding,
                                onestep_dtype dtype, cudaStream_t stream) {
    ONESTEP_SHAPES("N=%d, H=%d, W=%d, Cin=%d, KH=%d, KW=%d, Cout=%d, stride=%d, padding=%d, %s", N, H, W, Cin, KH, KW,
                   Cout, stride, padding, onestep::dtype_name(dtype));
    if (bad_dtype(dtype)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (N < 1 || H < 1 || W < 1 || Cin < 1 || KH < 1 || KW < 1 || Cout < 1 || stride < 1 || padding < 0)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "sizes must be >= 1, padding >= 0");
    int Ho = (H + 2 * padding - KH) / stride + 1, Wo = (W + 2 * padding - KW) / stride + 1;
    if (H + 2 * padding < KH || W + 2 * padding < KW)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "the kernel does not fit the input");
    if (!x || !w || !y) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "NULL pointer");
    long long total = (long long)N * Ho * Wo * Cout;
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               launch_dependent(L::conv_kernel<T>, L::grid_for(total), dim3(L::kBlock), 0, stream,
                                                                static_cast<const T*>(x), static_cast<const T*>(w),
                                                                static_cast<const T*>(bias), static_cast<const T*>(z),
                                                                static_cast<T*>(y), N, H, W, Cin,
                                                                KH, KW, Cout, stride, padding, Ho, Wo)),
                        fn, shapes);
}

extern "C" onestep_status onestep_conv2d_nhwc(const float* x, const float* w, const float* bias, float* y, int N,
                                              int H, int W, int Cin, int KH, int KW, int Cout, int stride, int padding,
                                              cudaStream_t stream) {
    return conv_impl("onestep_conv2d_nhwc", x, w, bias, nullptr, y, N, H, W, Cin, KH, KW, Cout, stride, padding,
                     ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_conv2d_nhwc_typed(const void* x, const void* w, const void* bias, void* y, int N,
                                                    int H, int W, int Cin, int KH, int KW, int Cout, int stride,
                                                    int padding, onestep_dtype dtype, cudaStream_t stream) {
    return conv_impl("onestep_conv2d_nhwc_typed", x, w, bias, nullptr, y, N, H, W, Cin, KH, KW, Cout, stride, padding,
                     dtype, stream);
}

extern "C" onestep_status onestep_conv2d_nhwc_residual_typed(const void* x, const void* w, const void* bias,
                                                             const void* z, void* y, int N, int H, int W, int Cin,
                                                             int KH, int KW, int Cout, int stride, int padding,
                                                             onestep_dtype dtype, cudaStream_t stream) {
    const char* fn = "onestep_conv2d_nhwc_residual_typed";
    if (!z) {
        ONESTEP_SHAPES("N=%d, H=%d, W=%d, Cin=%d, KH=%d, KW=%d, Cout=%d, stride=%d, padding=%d, %s", N, H, W, Cin, KH,
                       KW, Cout, stride, padding, onestep::dtype_name(dtype));
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "NULL residual z");
    }
    return conv_impl(fn, x, w, bias, z, y, N, H, W, Cin, KH, KW, Cout, stride, padding, dtype, stream);
}

extern "C" onestep_status onestep_subpixel_weights_typed(const void* w, void* k, int Cin, int Cout, onestep_dtype dtype,
                                                         cudaStream_t stream) {
    const char* fn = "onestep_subpixel_weights_typed";
    ONESTEP_SHAPES("Cin=%d, Cout=%d, %s", Cin, Cout, onestep::dtype_name(dtype));
    if (bad_dtype(dtype)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (Cin < 1 || Cout < 1 || !w || !k) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "bad size or NULL pointer");
    if (w == k) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "k must not alias w");
    const long long total = (long long)Cin * 16 * Cout;
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               launch_dependent(L::subpixel_weights_kernel<T>, L::grid_for(total), dim3(L::kBlock),
                                                                0, stream, static_cast<const T*>(w), static_cast<T*>(k), Cin,
                                                                Cout)),
                        fn, shapes);
}

extern "C" onestep_status onestep_upsample_conv_typed(const void* x, const void* k, const void* bias, void* y, int N,
                                                      int H, int W, int Cin, int Cout, onestep_dtype dtype,
                                                      cudaStream_t stream) {
    const char* fn = "onestep_upsample_conv_typed";
    ONESTEP_SHAPES("N=%d, H=%d, W=%d, Cin=%d, Cout=%d, %s", N, H, W, Cin, Cout, onestep::dtype_name(dtype));
    if (bad_dtype(dtype)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (N < 1 || H < 1 || W < 1 || Cin < 1 || Cout < 1 || !x || !k || !y)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "bad size or NULL pointer");
    if (y == x) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "y must not alias x");
    const long long total = (long long)N * 4 * H * W * Cout;
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               launch_dependent(L::upsample_conv_kernel<T>, L::grid_for(total), dim3(L::kBlock),
                                                                0, stream, static_cast<const T*>(x), static_cast<const T*>(k),
                                                                static_cast<const T*>(bias), static_cast<T*>(y), N, H, W, Cin,
                                                                Cout)),
                        fn, shapes);
}

extern "C" onestep_status onestep_conv2d_nhwc_backward(const float* x, const float* w, const float* dy, float* dx,
                                                      float* dw, int N, int H, int W, int Cin, int KH, int KW, int Cout,
                                                      int stride, int padding, cudaStream_t stream) {
    ONESTEP_SHAPES("N=%d, H=%d, W=%d, Cin=%d, KH=%d, KW=%d, Cout=%d, stride=%d, padding=%d", N, H, W, Cin, KH, KW, Cout,
                   stride, padding);
    const char* fn = "onestep_conv2d_nhwc_backward";
    if (N < 1 || H < 1 || W < 1 || Cin < 1 || KH < 1 || KW < 1 || Cout < 1 || stride < 1 || padding < 0)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "bad size");
    const int Ho = (H + 2 * padding - KH) / stride + 1, Wo = (W + 2 * padding - KW) / stride + 1;
    if (H + 2 * padding < KH || W + 2 * padding < KW)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "the kernel is larger than the padded input");
    if (!dy || (dx && !w) || (dw && !x))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "dy, and w for dx or x for dw, must be non-null");
    if (dx) {
        onestep_status s = check_launch(launch_dependent(L::conv_backward_data_kernel, L::grid_for((long long)N * H * W * Cin),
                                                         dim3(L::kBlock), 0, stream, w, dy, dx, N, H, W, Cin, KH, KW, Cout, stride,
                                                         padding, Ho, Wo),
                                        fn, shapes);
        if (s) return s;
    }
    if (dw)
        return check_launch(launch_dependent(L::conv_backward_filter_kernel, L::grid_for((long long)KH * KW * Cin * Cout),
                                             dim3(L::kBlock), 0, stream, x, dy, dw, N, H, W, Cin, KH, KW, Cout, stride, padding, Ho,
                                             Wo),
                            fn, shapes);
    return ONESTEP_OK;
}

static onestep_status mul_impl(const char* fn, const void* a, const void* b, void* out, long long n,
                               onestep_dtype dtype, cudaStream_t stream) {
    ONESTEP_SHAPES("n=%lld, %s", n, onestep::dtype_name(dtype));
    if (bad_dtype(dtype)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (n < 0 || (n > 0 && (!a || !b || !out)))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "negative n or NULL pointer");
    if (n == 0) return ONESTEP_OK;
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               launch_dependent(L::mul_kernel<T>, L::grid_for(n), dim3(L::kBlock), 0, stream,
                                                                static_cast<const T*>(a), static_cast<const T*>(b),
                                                                static_cast<T*>(out), n)),
                        fn, shapes);
}

extern "C" onestep_status onestep_mul(const float* a, const float* b, float* out, long long n, cudaStream_t stream) {
    return mul_impl("onestep_mul", a, b, out, n, ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_mul_typed(const void* a, const void* b, void* out, long long n, onestep_dtype dtype,
                                            cudaStream_t stream) {
    return mul_impl("onestep_mul_typed", a, b, out, n, dtype, stream);
}

static onestep_status add_per_channel_impl(const char* fn, const void* x, const void* v, void* y, int N, long long P,
                                           int C, onestep_dtype dtype, cudaStream_t stream) {
    ONESTEP_SHAPES("N=%d, P=%lld, C=%d, %s", N, P, C, onestep::dtype_name(dtype));
    if (bad_dtype(dtype)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (N < 0 || P < 0 || C < 1 || !x || !v || !y)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "bad size or NULL pointer");
    long long total = (long long)N * P * C;
    if (total == 0) return ONESTEP_OK;
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               launch_dependent(L::add_per_channel_kernel<T>, L::grid_for(total), dim3(L::kBlock),
                                                                0, stream, static_cast<const T*>(x), static_cast<const T*>(v),
                                                                static_cast<T*>(y), P, C, total)),
                        fn, shapes);
}

extern "C" onestep_status onestep_add_per_channel(const float* x, const float* v, float* y, int N, long long P, int C,
                                                  cudaStream_t stream) {
    return add_per_channel_impl("onestep_add_per_channel", x, v, y, N, P, C, ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_add_per_channel_typed(const void* x, const void* v, void* y, int N, long long P, int C,
                                                        onestep_dtype dtype, cudaStream_t stream) {
    return add_per_channel_impl("onestep_add_per_channel_typed", x, v, y, N, P, C, dtype, stream);
}

extern "C" onestep_status onestep_add_biased_typed(const void* a, const void* a_bias, const void* b,
                                                   const void* b_bias, void* out, long long rows, int C,
                                                   onestep_dtype dtype, cudaStream_t stream) {
    const char* fn = "onestep_add_biased_typed";
    ONESTEP_SHAPES("rows=%lld, C=%d, %s", rows, C, onestep::dtype_name(dtype));
    if (bad_dtype(dtype)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (rows < 0 || C < 1 || !a || !b || !out) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "bad size or NULL pointer");
    const long long total = rows * C;
    if (total == 0) return ONESTEP_OK;
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               launch_dependent(L::add_biased_kernel<T>, L::grid_for(total), dim3(L::kBlock), 0,
                                                                stream, static_cast<const T*>(a), static_cast<const T*>(a_bias),
                                                                static_cast<const T*>(b), static_cast<const T*>(b_bias),
                                                                static_cast<T*>(out), C, total)),
                        fn, shapes);
}

// a_bias / b_bias: NULL, or the per-channel bias the input's producer left out (the biased kernel).
static onestep_status concat_impl(const char* fn, const void* a, const void* a_bias, const void* b, const void* b_bias,
                                  void* y, long long rows, int ca, int cb, onestep_dtype dtype, cudaStream_t stream) {
    ONESTEP_SHAPES("rows=%lld, ca=%d, cb=%d, %s", rows, ca, cb, onestep::dtype_name(dtype));
    if (bad_dtype(dtype)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (rows < 0 || ca < 1 || cb < 1 || !a || !b || !y)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "bad size or NULL pointer");
    if (rows == 0) return ONESTEP_OK;
    const dim3 grid = L::grid_for(rows * (ca + cb)), block(L::kBlock);
    if (!a_bias && !b_bias)
        return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                                   launch_dependent(L::concat_kernel<T>, grid, block, 0, stream,
                                                                    static_cast<const T*>(a), static_cast<const T*>(b),
                                                                    static_cast<T*>(y), rows, ca, cb)),
                            fn, shapes);
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               launch_dependent(L::concat_biased_kernel<T>, grid, block, 0, stream,
                                                                static_cast<const T*>(a), static_cast<const T*>(a_bias),
                                                                static_cast<const T*>(b), static_cast<const T*>(b_bias),
                                                                static_cast<T*>(y), rows, ca, cb)),
                        fn, shapes);
}

extern "C" onestep_status onestep_concat_channels(const float* a, const float* b, float* y, long long rows, int ca,
                                                  int cb, cudaStream_t stream) {
    return concat_impl("onestep_concat_channels", a, nullptr, b, nullptr, y, rows, ca, cb, ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_concat_channels_typed(const void* a, const void* b, void* y, long long rows, int ca,
                                                        int cb, onestep_dtype dtype, cudaStream_t stream) {
    return concat_impl("onestep_concat_channels_typed", a, nullptr, b, nullptr, y, rows, ca, cb, dtype, stream);
}

extern "C" onestep_status onestep_concat_channels_biased_typed(const void* a, const void* a_bias, const void* b,
                                                               const void* b_bias, void* y, long long rows, int ca,
                                                               int cb, onestep_dtype dtype, cudaStream_t stream) {
    return concat_impl("onestep_concat_channels_biased_typed", a, a_bias, b, b_bias, y, rows, ca, cb, dtype, stream);
}

extern "C" onestep_status onestep_split_channels(const float* y, float* a, float* b, long long rows, int ca, int cb,
                                                 cudaStream_t stream) {
    ONESTEP_SHAPES("rows=%lld, ca=%d, cb=%d", rows, ca, cb);
    if (rows < 0 || ca < 1 || cb < 1 || !a || !b || !y)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_split_channels", shapes, "bad size or NULL pointer");
    if (rows == 0) return ONESTEP_OK;
    return check_launch(launch_dependent(L::split_kernel, L::grid_for(rows * (ca + cb)), dim3(L::kBlock), 0, stream, y, a, b,
                                         rows, ca, cb),
                        "onestep_split_channels", shapes);
}

extern "C" onestep_status onestep_sum_per_channel(const float* x, float* v, int N, long long P, int C,
                                                  cudaStream_t stream) {
    ONESTEP_SHAPES("N=%d, P=%lld, C=%d", N, P, C);
    if (N < 0 || P < 0 || C < 1 || !x || !v)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_sum_per_channel", shapes, "bad size or NULL pointer");
    if ((long long)N * C == 0) return ONESTEP_OK;
    return check_launch(launch_dependent(L::sum_per_channel_kernel, L::grid_for((long long)N * C), dim3(L::kBlock), 0, stream, x,
                                         v, N, P, C),
                        "onestep_sum_per_channel", shapes);
}

static onestep_status upsample_impl(const char* fn, const void* x, void* y, int N, int H, int W, int C,
                                    onestep_dtype dtype, cudaStream_t stream) {
    ONESTEP_SHAPES("N=%d, H=%d, W=%d, C=%d, %s", N, H, W, C, onestep::dtype_name(dtype));
    if (bad_dtype(dtype)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (N < 1 || H < 1 || W < 1 || C < 1 || !x || !y)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "bad size or NULL pointer");
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               launch_dependent(L::upsample_kernel<T>, L::grid_for(4LL * N * H * W * C),
                                                                dim3(L::kBlock), 0, stream, static_cast<const T*>(x),
                                                                static_cast<T*>(y), N, H, W, C)),
                        fn, shapes);
}

extern "C" onestep_status onestep_upsample_nearest2x(const float* x, float* y, int N, int H, int W, int C,
                                                     cudaStream_t stream) {
    return upsample_impl("onestep_upsample_nearest2x", x, y, N, H, W, C, ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_upsample_nearest2x_typed(const void* x, void* y, int N, int H, int W, int C,
                                                           onestep_dtype dtype, cudaStream_t stream) {
    return upsample_impl("onestep_upsample_nearest2x_typed", x, y, N, H, W, C, dtype, stream);
}

extern "C" onestep_status onestep_upsample_nearest2x_backward(const float* dy, float* dx, int N, int H, int W, int C,
                                                              cudaStream_t stream) {
    ONESTEP_SHAPES("N=%d, H=%d, W=%d, C=%d", N, H, W, C);
    if (N < 1 || H < 1 || W < 1 || C < 1 || !dy || !dx)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_upsample_nearest2x_backward", shapes,
                    "bad size or NULL pointer");
    return check_launch(launch_dependent(L::upsample_backward_kernel, L::grid_for((long long)N * H * W * C), dim3(L::kBlock), 0,
                                         stream, dy, dx, N, H, W, C),
                        "onestep_upsample_nearest2x_backward", shapes);
}

static onestep_status heads(const char* name, const void* x, void* y, int N, int T, int H, int D, int Dp,
                            int to_heads, onestep_dtype dtype, cudaStream_t stream) {
    ONESTEP_SHAPES("N=%d, T=%d, H=%d, D=%d, Dp=%d, %s", N, T, H, D, Dp, onestep::dtype_name(dtype));
    if (bad_dtype(dtype)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, name, shapes, "unknown dtype");
    if (N < 1 || T < 1 || H < 1 || D < 1 || Dp < D || !x || !y)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, name, shapes, "bad size (Dp >= D >= 1) or NULL pointer");
    const long long total = (long long)N * T * H * (to_heads ? Dp : D);
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, E,
                                               launch_dependent(L::heads_kernel<E>, L::grid_for(total), dim3(L::kBlock), 0,
                                                                stream, static_cast<const E*>(x), static_cast<E*>(y), N, T, H,
                                                                D, Dp, to_heads)),
                        name, shapes);
}

extern "C" onestep_status onestep_split_heads(const float* x, float* y, int N, int T, int H, int D, cudaStream_t s) {
    return heads("onestep_split_heads", x, y, N, T, H, D, D, 1, ONESTEP_FLOAT32, s);
}

extern "C" onestep_status onestep_merge_heads(const float* x, float* y, int N, int T, int H, int D, cudaStream_t s) {
    return heads("onestep_merge_heads", x, y, N, T, H, D, D, 0, ONESTEP_FLOAT32, s);
}

extern "C" onestep_status onestep_split_heads_typed(const void* x, void* y, int N, int T, int H, int D,
                                                    onestep_dtype dtype, cudaStream_t s) {
    return heads("onestep_split_heads_typed", x, y, N, T, H, D, D, 1, dtype, s);
}

extern "C" onestep_status onestep_merge_heads_typed(const void* x, void* y, int N, int T, int H, int D,
                                                    onestep_dtype dtype, cudaStream_t s) {
    return heads("onestep_merge_heads_typed", x, y, N, T, H, D, D, 0, dtype, s);
}

extern "C" onestep_status onestep_split_heads_padded_typed(const void* x, void* y, int N, int T, int H, int D, int Dp,
                                                           onestep_dtype dtype, cudaStream_t s) {
    return heads("onestep_split_heads_padded_typed", x, y, N, T, H, D, Dp, 1, dtype, s);
}

extern "C" onestep_status onestep_merge_heads_padded_typed(const void* x, void* y, int N, int T, int H, int D, int Dp,
                                                           onestep_dtype dtype, cudaStream_t s) {
    return heads("onestep_merge_heads_padded_typed", x, y, N, T, H, D, Dp, 0, dtype, s);
}

static onestep_status sinusoidal_impl(const char* fn, const float* t, void* y, int N, int D, int flip_sin_to_cos,
                                      float downscale_freq_shift, float scale, float max_period, onestep_dtype dtype,
                                      cudaStream_t stream) {
    ONESTEP_SHAPES("N=%d, D=%d, %s", N, D, onestep::dtype_name(dtype));
    if (bad_dtype(dtype)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (N < 1 || D < 2 || !t || !y) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "bad size or NULL pointer");
    if (D / 2 - downscale_freq_shift == 0.f)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "half the size minus downscale_freq_shift is 0");
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               launch_dependent(L::sinusoidal_kernel<T>, L::grid_for((long long)N * D),
                                                                dim3(L::kBlock), 0, stream, t, static_cast<T*>(y), N, D,
                                                                flip_sin_to_cos, downscale_freq_shift, scale, max_period)),
                        fn, shapes);
}

extern "C" onestep_status onestep_sinusoidal_embedding(const float* t, float* y, int N, int D, int flip_sin_to_cos,
                                                       float downscale_freq_shift, float scale, float max_period,
                                                       cudaStream_t stream) {
    return sinusoidal_impl("onestep_sinusoidal_embedding", t, y, N, D, flip_sin_to_cos, downscale_freq_shift, scale,
                           max_period, ONESTEP_FLOAT32, stream);
}

extern "C" onestep_status onestep_sinusoidal_embedding_typed(const float* t, void* y, int N, int D,
                                                             int flip_sin_to_cos, float downscale_freq_shift,
                                                             float scale, float max_period, onestep_dtype dtype,
                                                             cudaStream_t stream) {
    return sinusoidal_impl("onestep_sinusoidal_embedding_typed", t, y, N, D, flip_sin_to_cos, downscale_freq_shift,
                           scale, max_period, dtype, stream);
}

extern "C" onestep_status onestep_fourier_embedding_typed(const float* t, const float* weight, void* y, int N, int half,
                                                          int use_log, int flip_sin_to_cos, onestep_dtype dtype,
                                                          cudaStream_t stream) {
    const char* fn = "onestep_fourier_embedding_typed";
    ONESTEP_SHAPES("N=%d, half=%d, %s", N, half, onestep::dtype_name(dtype));
    if (bad_dtype(dtype)) return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "unknown dtype");
    if (N < 1 || half < 1 || !t || !weight || !y)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, fn, shapes, "bad size or NULL pointer");
    return check_launch(ONESTEP_DISPATCH_DTYPE(dtype, T,
                                               launch_dependent(L::fourier_kernel<T>, L::grid_for(2LL * N * half),
                                                                dim3(L::kBlock), 0, stream, t, weight, static_cast<T*>(y), N,
                                                                half, use_log, flip_sin_to_cos)),
                        fn, shapes);
}
