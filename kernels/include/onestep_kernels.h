/* onestep_kernels.h: the C API of libonestep_kernels.so (hand-written CUDA kernels for the U-Net and
 * the samplers). Plain C so that Java (FFM / JavaCPP) can bind it without a C++ layer.
 *
 * Conventions, once for every function:
 *  - All tensors are fp32, contiguous, on the device; images are NHWC, (N, HW, C) with HW = H * W. The
 *    exceptions take an onestep_dtype: the *_typed variants (fp16/bf16 storage, fp32 arithmetic: values widen
 *    as they are loaded and round to nearest even once when stored; statistics, lse and t stay fp32) and
 *    onestep_convert. Each *_typed function with ONESTEP_FLOAT32 is its fp32 twin, bit for bit.
 *  - Every call is asynchronous on `stream` (NULL = the legacy default stream) and returns an
 *    onestep_status. On failure, onestep_last_error_message() names the function, the shapes and the
 *    reason (argument check or the CUDA error); the message is per calling thread.
 *  - Gradients: parameter gradients (dgamma, dbeta) ACCUMULATE (+=) so a caller can sum over several
 *    uses of a parameter; activation gradients (dx, dscale, dshift, ...) are ASSIGNED (llm.c's rule).
 *  - Scalars of the samplers (sigmas, t, tau, eps) are double: the coefficients are formed on the host
 *    in double (as NVlabs/edm builds its time grid in float64) and passed to the kernels as fp32.
 */
#ifndef ONESTEP_KERNELS_H
#define ONESTEP_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The CUDA runtime's own spelling of a stream handle, so this header needs no CUDA include. */
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

typedef enum onestep_status {
    ONESTEP_OK = 0,
    ONESTEP_ERROR_INVALID_ARGUMENT = 1, /* a shape, pointer or scalar the kernel cannot accept */
    ONESTEP_ERROR_UNSUPPORTED = 2,      /* a valid request this library has no kernel for (e.g. head dim 96) */
    ONESTEP_ERROR_CUDA = 3              /* the launch failed; the message carries cudaGetErrorName/String */
} onestep_status;

/* Element types of the *_typed entry points. 16-bit values are storage only: kernels widen them to fp32 as they
 * load and round to nearest even once as they store (FlashAttention-2's fp16/bf16 inputs, fp32 accumulation). */
typedef enum onestep_dtype {
    ONESTEP_FLOAT32 = 0,
    ONESTEP_FLOAT16 = 1, /* IEEE binary16 (__half) */
    ONESTEP_BFLOAT16 = 2 /* bfloat16 (__nv_bfloat16) */
} onestep_dtype;

/* The message of the last failed call on this thread ("" if none failed yet). */
const char* onestep_last_error_message(void);

/* Waits for the work queued on `stream`; an asynchronous kernel fault surfaces here as ONESTEP_ERROR_CUDA. */
onestep_status onestep_synchronize(cudaStream_t stream);

/* ---- group norm over NHWC (Wu & He 2018), fused with the U-Net's time-embedding modulation -----------
 * y = act( (xhat * gamma[c] + beta[c]) * (1 + scale[n,c]) + shift[n,c] ),  xhat = (x - mean[n,g]) * rstd[n,g]
 * over groups of C/G consecutive channels; mean/rstd (N, G) are written for the backward pass.
 * scale/shift (N, C) are both NULL (no modulation) or both given; act is SiLU if apply_silu, else identity. */
onestep_status onestep_groupnorm_forward(const float* x, const float* gamma, const float* beta,
                                         const float* scale, const float* shift, float* y, float* mean,
                                         float* rstd, int N, int HW, int C, int G, float eps, int apply_silu,
                                         cudaStream_t stream);

/* Backward of onestep_groupnorm_forward with the same flags. dx (N,HW,C) is assigned; dgamma, dbeta (C)
 * accumulate; dscale, dshift (N,C) are assigned and must be given iff scale/shift were. */
onestep_status onestep_groupnorm_backward(const float* dy, const float* x, const float* mean, const float* rstd,
                                          const float* gamma, const float* beta, const float* scale,
                                          const float* shift, float* dx, float* dgamma, float* dbeta,
                                          float* dscale, float* dshift, int N, int HW, int C, int G,
                                          int apply_silu, cudaStream_t stream);

/* ---- denoising updates (Karras et al. 2022, Alg. 1; Song et al. 2023, Alg. 1) ------------------------
 * n is the element count of every tensor. In-place use (out == an input) is allowed. */

/* Euler step of the EDM ODE from sigma to sigma_next: d = (x - denoised) / sigma, x_next = x + h d,
 * h = sigma_next - sigma. d_out may be NULL; keep it for the Heun correction. */
onestep_status onestep_edm_euler_step(const float* x, const float* denoised, float* x_next, float* d_out, long long n,
                                      double sigma, double sigma_next, cudaStream_t stream);

/* Heun's second stage: d' = (x_euler - denoised_next) / sigma_next, x_next = x + h (d + d') / 2.
 * sigma_next must be > 0 (the last step to 0 is Euler only). */
onestep_status onestep_edm_heun_step(const float* x, const float* d, const float* x_euler, const float* denoised_next,
                                     float* x_next, long long n, double sigma, double sigma_next, cudaStream_t stream);

/* Consistency-model output f = c_skip(t) x + c_out(t) F with c_skip = sd^2 / ((t - eps)^2 + sd^2),
 * c_out = sd (t - eps) / sqrt(sd^2 + t^2) (Song et al. 2023, Sec. 3 and App. C); f(x, eps) = x. */
onestep_status onestep_consistency_output(const float* x, const float* F, float* out, long long n, double t,
                                          double eps, double sigma_data, cudaStream_t stream);

/* Multistep consistency sampling re-noising (Song et al. 2023, Alg. 1): out = x + sqrt(tau^2 - eps^2) z.
 * Requires tau >= eps. */
onestep_status onestep_consistency_renoise(const float* x, const float* z, float* out, long long n, double tau,
                                           double eps, cudaStream_t stream);

/* ---- small elementwise ops ---------------------------------------------------------------------------- */
onestep_status onestep_add(const float* a, const float* b, float* out, long long n, cudaStream_t stream);
/* y = alpha * x + y */
onestep_status onestep_axpy(float alpha, const float* x, float* y, long long n, cudaStream_t stream);
/* y = a * x + b * z, computed as fmaf(b, z, a * x) (the Java CPU backend rounds the same way); y may alias x or
 * z. The denoiser output c_skip x + c_out F of a whole batch at one noise level in one pass. */
onestep_status onestep_axpby(float a, const float* x, float b, const float* z, float* y, long long n,
                             cudaStream_t stream);
/* out = alpha * x */
onestep_status onestep_scale(float alpha, const float* x, float* out, long long n, cudaStream_t stream);
/* out = x * sigmoid(x) */
onestep_status onestep_silu_forward(const float* x, float* out, long long n, cudaStream_t stream);
/* dx = dout * sigmoid(x) * (1 + x (1 - sigmoid(x))) (assigned) */
onestep_status onestep_silu_backward(const float* x, const float* dout, float* dx, long long n, cudaStream_t stream);

/* The same for any onestep_dtype (the half-precision inference path): x, gamma, beta, scale, shift and y hold
 * `dtype` elements; mean and rstd are fp32. */
onestep_status onestep_groupnorm_forward_typed(const void* x, const void* gamma, const void* beta, const void* scale,
                                               const void* shift, void* y, float* mean, float* rstd, int N, int HW,
                                               int C, int G, float eps, int apply_silu, onestep_dtype dtype,
                                               cudaStream_t stream);
/* The same on x' = (x + x_bias[c]) + (add[n,c] + add_bias[c]) instead of x, without storing x' (each term may be
 * NULL; add_bias only with add; all in `dtype`, added in fp32 in that order). ResnetBlock2D's h + time_emb_proj(temb)
 * at inference, and the biases the CUDA backend leaves to the consumer of a cuDNN convolution or cuBLAS GEMM. */
onestep_status onestep_groupnorm_forward_add_typed(const void* x, const void* x_bias, const void* add,
                                                   const void* add_bias, const void* gamma, const void* beta,
                                                   const void* scale, const void* shift, void* y, float* mean,
                                                   float* rstd, int N, int HW, int C, int G, float eps, int apply_silu,
                                                   onestep_dtype dtype, cudaStream_t stream);
/* The same with a choice of kernel: 0 as onestep_groupnorm_forward_add_typed; 1 the slab kernel, which reads x once
 * (a block per sample and 16 channels, held in registers; two exact passes for the statistics) for large tensors,
 * where the default runs a statistics kernel and a normalize kernel. It needs C/G of 4, 8 or 16, C a multiple of 16,
 * HW <= 2048, x and y aligned to 4 elements and y apart from x and add (else ONESTEP_ERROR_UNSUPPORTED or
 * INVALID_ARGUMENT). 2 the cluster kernel, for few groups (batch 1): each group split over a thread block cluster of
 * up to 8 blocks that meet in distributed shared memory, x read once; it needs compute capability 9.0, C/G a
 * multiple of 4, x and y aligned to 4 elements and y apart from x and add (else the same errors). Both sum in another
 * order than kernel 0, so their results differ from its by rounding. The CUDA backend times them per shape and runs
 * the fastest where they agree. */
onestep_status onestep_groupnorm_forward_add_kernel_typed(const void* x, const void* x_bias, const void* add,
                                                          const void* add_bias, const void* gamma, const void* beta,
                                                          const void* scale, const void* shift, void* y, float* mean,
                                                          float* rstd, int N, int HW, int C, int G, float eps,
                                                          int apply_silu, int kernel, onestep_dtype dtype,
                                                          cudaStream_t stream);
/* Group norm (+ SiLU) of the channel concatenation x = [a + a_bias, b + b_bias] (a (N,HW,Ca), b (N,HW,Cb); either
 * bias may be NULL), which it also writes to cat (N,HW,Ca+Cb): cat is onestep_concat_channels_biased_typed's
 * result and y, mean, rstd are onestep_groupnorm_forward_typed's on it, bit for bit, in one pass over a and b. A
 * U-Net up block's cat(h, skip) and norm1 (cat stays for the conv_shortcut). cat and y must not alias a, b or each
 * other. */
onestep_status onestep_groupnorm_concat_typed(const void* a, const void* a_bias, const void* b, const void* b_bias,
                                              const void* gamma, const void* beta, void* cat, void* y, float* mean,
                                              float* rstd, int N, int HW, int Ca, int Cb, int G, float eps,
                                              int apply_silu, onestep_dtype dtype, cudaStream_t stream);
/* onestep_groupnorm_concat_typed with a choice of kernel: 0 the default (the same call), 2 the cluster kernel of
 * onestep_groupnorm_forward_add_kernel_typed on the concatenation (each group over a thread block cluster; compute
 * capability 9.0, Ca and Cb multiples of 4, C/G a multiple of 4, a, b, cat and y aligned to 4 elements, else
 * ONESTEP_ERROR_UNSUPPORTED). cat is the same bits; y, mean and rstd agree with kernel 0's to the sums' rounding. */
onestep_status onestep_groupnorm_concat_kernel_typed(const void* a, const void* a_bias, const void* b,
                                                     const void* b_bias, const void* gamma, const void* beta, void* cat,
                                                     void* y, float* mean, float* rstd, int N, int HW, int Ca, int Cb,
                                                     int G, float eps, int apply_silu, int kernel, onestep_dtype dtype,
                                                     cudaStream_t stream);
onestep_status onestep_add_typed(const void* a, const void* b, void* out, long long n, onestep_dtype dtype,
                                 cudaStream_t stream);
onestep_status onestep_axpy_typed(float alpha, const void* x, void* y, long long n, onestep_dtype dtype,
                                  cudaStream_t stream);
onestep_status onestep_axpby_typed(float a, const void* x, float b, const void* z, void* y, long long n,
                                   onestep_dtype dtype, cudaStream_t stream);
onestep_status onestep_scale_typed(float alpha, const void* x, void* out, long long n, onestep_dtype dtype,
                                   cudaStream_t stream);
/* y (fp32) = a x (fp32) + b f', f' = f + f_bias[i % C] rounded once to f_dtype (f_bias NULL: f itself), widened:
 * the bits of onestep_add_per_channel_typed in place, onestep_convert to fp32 and onestep_axpby, in one launch. The
 * denoiser output c_skip x + c_out F on a half-precision network's output and its last convolution's pending bias.
 * y may alias x. */
onestep_status onestep_axpby_mixed_typed(float a, const float* x, float b, const void* f, const void* f_bias, int C,
                                         float* y, long long n, onestep_dtype f_dtype, cudaStream_t stream);
onestep_status onestep_silu_forward_typed(const void* x, void* out, long long n, onestep_dtype dtype,
                                          cudaStream_t stream);

/* ---- fused attention forward (Dao 2023, FlashAttention-2, Alg. 1), fp32 -------------------------------
 * q (B, H, Tq, D), k and v (B, H, Tk, D), o (B, H, Tq, D), lse (B, H, Tq) natural-log log-sum-exp of the
 * scaled scores (for the backward pass; -inf for a fully masked row). D in {32, 64, 128}.
 * kv_len: NULL, or B ints on the device: batch b attends to keys [0, kv_len[b]) only; a row with no key
 * gives o = 0 and lse = -inf. softmax_scale <= 0 means 1 / sqrt(D). */
onestep_status onestep_attention_forward(const float* q, const float* k, const float* v, float* o, float* lse,
                                         int B, int H, int Tq, int Tk, int D, const int* kv_len,
                                         float softmax_scale, cudaStream_t stream);

/* Backward of onestep_attention_forward (Dao 2023, FlashAttention-2, Alg. 2) with the same shapes, kv_len and
 * softmax_scale; o and lse are the forward's outputs, dout the gradient of o. dq, dk, dv are assigned (keys
 * beyond kv_len[b] get dk = dv = 0). delta: a (B, H, Tq) fp32 workspace (it receives rowsum(dout * o)). */
onestep_status onestep_attention_backward(const float* q, const float* k, const float* v, const float* o,
                                          const float* dout, const float* lse, float* delta, float* dq, float* dk,
                                          float* dv, int B, int H, int Tq, int Tk, int D, const int* kv_len,
                                          float softmax_scale, cudaStream_t stream);

/* The same two kernels for any onestep_dtype: q, k, v, o (and dout, dq, dk, dv) hold `dtype` elements; lse and
 * delta stay fp32. Every product, sum, max and exp runs in fp32; o, dq, dk, dv are rounded once when stored.
 * onestep_attention_forward/_backward are these with ONESTEP_FLOAT32. */
onestep_status onestep_attention_forward_typed(const void* q, const void* k, const void* v, void* o, float* lse, int B,
                                               int H, int Tq, int Tk, int D, const int* kv_len, float softmax_scale,
                                               onestep_dtype dtype, cudaStream_t stream);
onestep_status onestep_attention_backward_typed(const void* q, const void* k, const void* v, const void* o,
                                                const void* dout, const float* lse, float* delta, void* dq, void* dk,
                                                void* dv, int B, int H, int Tq, int Tk, int D, const int* kv_len,
                                                float softmax_scale, onestep_dtype dtype, cudaStream_t stream);

/* onestep_attention_forward_typed on the engine's token layout: q and o are (B, Tq, H*D), k and v (B, Tk, H*D),
 * head h of a token being its D features from h*D (lse stays (B, H, Tq)). The same arithmetic, hence the same
 * bits, as splitting the heads into (B, H, T, D) first, without the split and merge kernels. */
onestep_status onestep_attention_forward_tokens_typed(const void* q, const void* k, const void* v, void* o, float* lse,
                                                      int B, int H, int Tq, int Tk, int D, const int* kv_len,
                                                      float softmax_scale, onestep_dtype dtype, cudaStream_t stream);
/* onestep_attention_forward_tokens_typed on q + q_bias, k + k_bias, v + v_bias: per-feature biases of H*D `dtype`
 * elements (each may be NULL; 16-byte aligned), added as the values are read and rounded to dtype once, so the bits
 * are those of adding them first with onestep_add_per_channel_typed, without that kernel and its traffic. The
 * attention that takes the biases the CUDA backend leaves pending on the q, k, v projections (cuBLAS GEMMs). */
onestep_status onestep_attention_forward_tokens_biased_typed(const void* q, const void* q_bias, const void* k,
                                                             const void* k_bias, const void* v, const void* v_bias,
                                                             void* o, float* lse, int B, int H, int Tq, int Tk, int D,
                                                             const int* kv_len, float softmax_scale,
                                                             onestep_dtype dtype, cudaStream_t stream);
/* onestep_attention_forward_tokens_biased_typed with q, k and v packed in one (B, T, 3*H*D) tensor: each token's H*D
 * q features, then its k and its v features (one GEMM's output against the concatenated to_q, to_k, to_v weights),
 * and qkv_bias 3*H*D elements in the same order, or NULL. o is (B, T, H*D), lse (B, H, T). The same bits as the
 * three-tensor entry on the thirds copied out, without the copies: the attention of CudaOps' packed projection. */
onestep_status onestep_attention_forward_qkv_typed(const void* qkv, const void* qkv_bias, void* o, float* lse, int B,
                                                   int H, int T, int D, const int* kv_len, float softmax_scale,
                                                   onestep_dtype dtype, cudaStream_t stream);
/* onestep_attention_forward_qkv_typed with a choice of kernel: 0 the default (the same call), 1 the split-keys
 * tensor-core kernel (fp16/bf16, D 32 or 64, else ONESTEP_ERROR_UNSUPPORTED): 16 query rows a block and the key tiles
 * dealt to its 4 warps, merged in shared memory, for shapes with few query blocks (batch 1). Its results agree with
 * kernel 0's to the 16-bit rounding, not bit for bit (the sums run in another order). 2 the pipelined tensor-core
 * kernel (fp16/bf16, D 32 or 64, else ONESTEP_ERROR_UNSUPPORTED): kernel 0's arithmetic with the key/value tiles
 * double-buffered by cp.async and read by ldmatrix, so kernel 0's bits. 3 the wide kernel (fp16/bf16, D 32 or 64, else
 * ONESTEP_ERROR_UNSUPPORTED): kernel 2 with 32 query rows a warp and 128 a block, each key/value fragment read once for
 * both 16-row halves, so kernel 0's bits too. The CUDA backend times them per shape and keeps the fastest. */
onestep_status onestep_attention_forward_qkv_kernel_typed(const void* qkv, const void* qkv_bias, void* o, float* lse,
                                                          int B, int H, int T, int D, const int* kv_len,
                                                          float softmax_scale, int kernel, onestep_dtype dtype,
                                                          cudaStream_t stream);

/* An attention block's attention, output projection and residual in one launch (fp16/bf16, D 32 or 64, else
 * ONESTEP_ERROR_UNSUPPORTED): y (B, T, H*D) = attention(qkv) w + out_bias + z, where attention(qkv) is
 * onestep_attention_forward_qkv_typed's o on the packed projection and its bias (no key lengths), rounded to dtype as
 * that kernel stores it (not its bits: the softmax runs over 32-key tiles), and w_krsc is the projection's (H*D, H*D)
 * weight transposed, [out][in] (a 1x1 convolution's KRSC weights; to_out.0's (in, out) weight transposed). out_bias
 * (H*D) and z (B, T, H*D) may be NULL; the product is accumulated in fp32, the bias and z added in fp32 and y rounded
 * once, as onestep_linear_residual_typed does. z may be y itself; y must not overlap qkv or w_krsc. No o and no lse
 * are written: an inference graph's node where there were two. warps_per_head (1, 2 or 4) picks the kernel: that
 * many warps attend each head of a block's 16 query rows, splitting its keys (the CUDA backend times the three; they
 * agree to the rounding of O). */
onestep_status onestep_attention_residual_qkv_typed(const void* qkv, const void* qkv_bias, const void* w_krsc,
                                                    const void* out_bias, const void* z, void* y, int B, int H, int T,
                                                    int D, float softmax_scale, int warps_per_head,
                                                    onestep_dtype dtype, cudaStream_t stream);

/* y (n elements of type `to`) = x (n elements of type `from`), rounding to nearest even when narrowing
 * (NaN stays NaN, overflow gives inf); from == to copies. */
onestep_status onestep_convert(const void* x, onestep_dtype from, void* y, onestep_dtype to, long long n,
                               cudaStream_t stream);
/* y = alpha x, the product in fp32 and rounded once to `to`: the bits of onestep_scale_typed in `from` (fp32)
 * followed by onestep_convert, in one launch. A denoiser's c_in x, x fp32, stored in a 16-bit network's type. */
onestep_status onestep_convert_scaled(float alpha, const void* x, onestep_dtype from, void* y, onestep_dtype to,
                                      long long n, cudaStream_t stream);

/* ---- the layers around the fused kernels: portable fp32 kernels (one thread per output, grid-stride) ------
 * The emulated build runs the whole U-Net with these; on a GPU the Java backend uses cuBLAS and cuDNN for
 * GEMM and convolution when they load, and these otherwise. Row-major, NHWC, HWIO as in the Java engine. */

/* c (M, N) = alpha op(a) op(b) + beta c; op(a) is (M, K): a is (M, K), or (K, M) if trans_a; likewise b.
 * beta == 0 ignores the old c (even NaN). */
onestep_status onestep_gemm(const float* a, int trans_a, const float* b, int trans_b, float* c, int M, int N, int K,
                            float alpha, float beta, cudaStream_t stream);
/* y (rows, out) = x (rows, in) w (in, out) + bias (out, or NULL). */
onestep_status onestep_linear(const float* x, const float* w, const float* bias, float* y, long long rows, int in,
                              int out, cudaStream_t stream);
/* Cross-correlation with zero padding: x (N, H, W, Cin), w (KH, KW, Cin, Cout), bias (Cout) or NULL,
 * y (N, Ho, Wo, Cout) with Ho = (H + 2 padding - KH) / stride + 1 (Wo likewise). */
onestep_status onestep_conv2d_nhwc(const float* x, const float* w, const float* bias, float* y, int N, int H, int W,
                                   int Cin, int KH, int KW, int Cout, int stride, int padding, cudaStream_t stream);
/* Backward of onestep_conv2d_nhwc for dy (N, Ho, Wo, Cout): dx (N, H, W, Cin) is assigned (NULL: not wanted),
 * dw (KH, KW, Cin, Cout) accumulates (+=; NULL: not wanted). The bias gradient is onestep_sum_per_channel of dy. */
onestep_status onestep_conv2d_nhwc_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                                            int N, int H, int W, int Cin, int KH, int KW, int Cout, int stride,
                                            int padding, cudaStream_t stream);
/* out = a * b elementwise. */
onestep_status onestep_mul(const float* a, const float* b, float* out, long long n, cudaStream_t stream);
/* y[n, p, c] = x[n, p, c] + v[n, c] for P positions per sample (y may alias x). */
onestep_status onestep_add_per_channel(const float* x, const float* v, float* y, int N, long long P, int C,
                                       cudaStream_t stream);
/* y (rows, ca + cb) = [a (rows, ca), b (rows, cb)] along the last dimension. */
onestep_status onestep_concat_channels(const float* a, const float* b, float* y, long long rows, int ca, int cb,
                                       cudaStream_t stream);
/* The inverse: a (rows, ca) and b (rows, cb) from y (rows, ca + cb). */
onestep_status onestep_split_channels(const float* y, float* a, float* b, long long rows, int ca, int cb,
                                      cudaStream_t stream);
/* v[n, c] = sum over P positions of x[n, p, c] (assigned; one thread per (n, c), positions in order). */
onestep_status onestep_sum_per_channel(const float* x, float* v, int N, long long P, int C, cudaStream_t stream);
/* Nearest-neighbour 2x: x (N, H, W, C) to y (N, 2H, 2W, C). */
onestep_status onestep_upsample_nearest2x(const float* x, float* y, int N, int H, int W, int C, cudaStream_t stream);
/* The adjoint of onestep_upsample_nearest2x: dx (N, H, W, C) = the sum of each 2x2 block of dy (N, 2H, 2W, C). */
onestep_status onestep_upsample_nearest2x_backward(const float* dy, float* dx, int N, int H, int W, int C,
                                                   cudaStream_t stream);
/* Attention layouts: split (N, T, H*D) into (N, H, T, D), and merge back. */
onestep_status onestep_split_heads(const float* x, float* y, int N, int T, int H, int D, cudaStream_t stream);
onestep_status onestep_merge_heads(const float* x, float* y, int N, int T, int H, int D, cudaStream_t stream);
/* diffusers' get_timestep_embedding: half = D / 2, freq_j = exp(-ln(max_period) j / (half - shift)),
 * arg = scale t[n] freq_j, y[n] = [sin, cos] (or [cos, sin] if flip); an odd D gets a trailing 0. t (N), y (N, D). */
onestep_status onestep_sinusoidal_embedding(const float* t, float* y, int N, int D, int flip_sin_to_cos,
                                            float downscale_freq_shift, float scale, float max_period,
                                            cudaStream_t stream);

/* The forward layers for any onestep_dtype: every tensor argument holds `dtype` elements, except t (fp32). */
onestep_status onestep_gemm_typed(const void* a, int trans_a, const void* b, int trans_b, void* c, int M, int N, int K,
                                  float alpha, float beta, onestep_dtype dtype, cudaStream_t stream);
onestep_status onestep_linear_typed(const void* x, const void* w, const void* bias, void* y, long long rows, int in,
                                    int out, onestep_dtype dtype, cudaStream_t stream);
/* y = x w + bias + z, z (rows, out) a residual summed in fp32 before y's one rounding (z may be y itself): an
 * attention block's output projection and residual in one launch, the portable twin of cuBLASLt's bias epilogue
 * with C = z. */
onestep_status onestep_linear_residual_typed(const void* x, const void* w, const void* bias, const void* z, void* y,
                                             long long rows, int in, int out, onestep_dtype dtype, cudaStream_t stream);
onestep_status onestep_conv2d_nhwc_typed(const void* x, const void* w, const void* bias, void* y, int N, int H, int W,
                                         int Cin, int KH, int KW, int Cout, int stride, int padding,
                                         onestep_dtype dtype, cudaStream_t stream);
/* y = conv2d(x, w) + bias + z, z (N, Ho, Wo, Cout) a residual summed in fp32 before y's one rounding (z may be y
 * itself, and bias NULL): the ResnetBlock2D's conv2 and its shortcut sum in one launch, the portable twin of cuDNN's
 * conv + bias + z fusion. */
onestep_status onestep_conv2d_nhwc_residual_typed(const void* x, const void* w, const void* bias, const void* z,
                                                  void* y, int N, int H, int W, int Cin, int KH, int KW, int Cout,
                                                  int stride, int padding, onestep_dtype dtype, cudaStream_t stream);
/* y = conv2d(x, w) + bias + z on tensor cores (src/conv.cu: an implicit GEMM, mma.sync m16n8k16, fp32 accumulation,
 * y rounded once), for fp16 and bf16 only (else ONESTEP_ERROR_UNSUPPORTED). x (N, H, W, Cin) NHWC; w_krsc
 * (Cout, KH, KW, Cin): cuDNN's KRSC layout, NOT the HWIO of onestep_conv2d_nhwc_typed; bias (Cout) and z
 * (N, Ho, Wo, Cout) may be NULL, and z may be y itself. Cin must be a multiple of 16 (ONESTEP_ERROR_UNSUPPORTED
 * otherwise: the network's first convolution, Cin = 3, stays on cuDNN or the portable kernel); x and w_krsc 16-byte
 * aligned; y must not alias x. config: 0 picks a tile by a cost model, 1 .. onestep_conv2d_igemm_configs() a fixed
 * one (onestep_conv2d_igemm_config_name), for callers that time them (the CUDA backend does, against cuDNN). */
onestep_status onestep_conv2d_igemm_typed(const void* x, const void* w_krsc, const void* bias, const void* z, void* y,
                                          int N, int H, int W, int Cin, int KH, int KW, int Cout, int stride,
                                          int padding, int config, onestep_dtype dtype, cudaStream_t stream);
/* y = conv2d(silu(group_norm(x')), w) + bias + z with x' = (x + x_bias[c]) + (add[n, c] + add_bias[c]): a
 * ResnetBlock2D's norm1 -> conv1 or norm2 (of h + time_emb_proj(temb)) -> conv2 + shortcut in one launch, the
 * normalized tensor never stored. The convolution is onestep_conv2d_igemm_typed's (same operands, dtypes, tiles and
 * checks); each block first computes the group statistics of its sample from x (fp32, one pass of shifted sums merged
 * in a fixed order; rstd = 1 / sqrt(var + eps), the biased variance) and normalizes its A tiles in shared memory
 * as they land, with group norm's formula ((x' - mean) rstd gamma + beta, then SiLU where silu != 0) and its rounding
 * to the storage type; the zero padding stays zero. x_bias, add (N, Cin) and add_bias may each be NULL; gamma and beta
 * (Cin) may not; y may alias none of them, nor x (z may be y itself, not x). groups must divide Cin into multiples of 4 channels, and a tile takes the prologue only where Ho*Wo is
 * a multiple of its rows (a tile's statistics are one sample's) and its shared memory stays within 99 KB
 * (ONESTEP_ERROR_UNSUPPORTED otherwise; config 0 picks among those). Meant for small inputs (batch 1), where x stays
 * in L2 and every block reading its sample costs less than a group norm launch: callers time it against the two ops. */
onestep_status onestep_groupnorm_conv2d_igemm_typed(const void* x, const void* x_bias, const void* add,
                                                    const void* add_bias, const void* gamma, const void* beta,
                                                    int groups, float eps, int silu, const void* w_krsc,
                                                    const void* bias, const void* z, void* y, int N, int H, int W,
                                                    int Cin, int KH, int KW, int Cout, int stride, int padding,
                                                    int config, onestep_dtype dtype, cudaStream_t stream);
/* The group norm's statistics computed once, by the producer (twenty-fourth session). The prologue above has every
 * block read its whole sample of x, which lost its timed choices on the H200 (bench/README.md, twenty-third session:
 * 33-37 us where the plain tile takes 7.7 us at 16x16x256 -> 768). Here the convolution that writes the tensor a group
 * norm will read also writes statistics of it, and the convolution that normalizes it merges those (a few KB) instead
 * of reading x: the group norm's launch is gone and no block reads more than its tiles.
 *
 * onestep_conv2d_igemm_stats_typed: onestep_conv2d_igemm_typed, and in its epilogue stats_out (N, Ho*Wo / 16,
 * out_groups) pairs of floats: for each run of 16 output pixels and each group of Cout / out_groups channels, the mean
 * and the sum of squared deviations about it (M2, fp32, two passes) of y as stored (rounded to dtype). A reader takes
 * them per channel (out_groups = Cout). Cout / out_groups must divide 32 and Ho*Wo be a multiple of 16
 * (ONESTEP_ERROR_UNSUPPORTED otherwise); stats_out 8-byte aligned, aliasing no operand. Every tile takes it; the rest
 * as onestep_conv2d_igemm_typed. */
onestep_status onestep_conv2d_igemm_stats_typed(const void* x, const void* w_krsc, const void* bias, const void* z,
                                                void* y, int N, int H, int W, int Cin, int KH, int KW, int Cout,
                                                int stride, int padding, int config, float* stats_out, int out_groups,
                                                onestep_dtype dtype, cudaStream_t stream);
/* onestep_groupnorm_conv2d_igemm_typed with x's statistics given: stats (N, H*W / 16, Cin) as
 * onestep_conv2d_igemm_stats_typed left them for x with out_groups = Cin (per channel, of x as stored; NULL: computed
 * from x as that function does). Each block merges its sample's pairs per group (Chan et al. 1979), each channel's
 * mean shifted by its pre-add terms x_bias[c] + (add[n, c] + add_bias[c]), which are constant over the pixels; x is
 * read only by the tiles. H*W must be a multiple of 16. stats_out and out_groups: as onestep_conv2d_igemm_stats_typed,
 * for y (NULL: none), so conv1 can leave norm2's statistics. stats must not alias y or stats_out. The rest as
 * onestep_groupnorm_conv2d_igemm_typed. */
onestep_status onestep_groupnorm_conv2d_igemm_stats_typed(
    const void* x, const void* x_bias, const void* add, const void* add_bias, const void* gamma, const void* beta,
    int groups, float eps, int silu, const float* stats, const void* w_krsc, const void* bias, const void* z, void* y,
    int N, int H, int W, int Cin, int KH, int KW, int Cout, int stride, int padding, int config, float* stats_out,
    int out_groups, onestep_dtype dtype, cudaStream_t stream);
/* y = conv2d(cat(a + a_bias, b + b_bias), w) + bias + z, the concatenation along channels never stored: a (N, H, W,
 * Ca) and b (N, H, W, Cb), each source's sum rounded to the storage type as onestep_concat_channels_biased_typed would
 * store it (a_bias (Ca) and b_bias (Cb) may be NULL: the sources read as they are); Cin = Ca + Cb. An up block's 1x1
 * conv_shortcut of cat(h, skip) without the concatenation. Ca and Cb must be multiples of 16 (each 16-deep step of
 * the GEMM in one source), b 16-byte aligned like a; y may alias neither, nor the biases; z neither a nor b. The
 * rest as onestep_conv2d_igemm_typed (config 0 picks among the tiles that hold the biases' constants). */
onestep_status onestep_concat_conv2d_igemm_typed(const void* a, const void* a_bias, const void* b, const void* b_bias,
                                                 const void* w_krsc, const void* bias, const void* z, void* y, int N,
                                                 int H, int W, int Ca, int Cb, int KH, int KW, int Cout, int stride,
                                                 int padding, int config, onestep_dtype dtype, cudaStream_t stream);
/* onestep_groupnorm_conv2d_igemm_typed without the pre-add and the residual, and with a down block's 1x1
 * conv_shortcut of x in the same launch: y_sc (N, H, W, Cout) = conv2d(x + x_bias, w_sc_krsc) (Cout, 1, 1, Cin), no bias,
 * each x + x_bias rounded to dtype as a stored tensor holds it, computed by the launch's blocks past conv1's column
 * tiles. conv1 must keep the input's size (stride 1, 'same' padding); y_sc must not alias x, y or the other operands.
 * One graph node where the group norm, conv1 and the shortcut were three. */
onestep_status onestep_groupnorm_conv2d_shortcut_igemm_typed(const void* x, const void* x_bias, const void* gamma,
                                                             const void* beta, int groups, float eps, int silu,
                                                             const void* w_krsc, const void* bias, void* y,
                                                             const void* w_sc_krsc, void* y_sc, int N, int H, int W,
                                                             int Cin, int KH, int KW, int Cout, int stride,
                                                             int padding, int config, onestep_dtype dtype,
                                                             cudaStream_t stream);
/* onestep_groupnorm_conv2d_igemm_typed on x = cat(a + a_bias, b + b_bias) (as onestep_concat_conv2d_igemm_typed
 * reads it; no add term): an up block's norm1(cat(h, skip)) -> conv1 in one launch, neither the concatenation nor the
 * normalized tensor stored. The statistics are those of the rounded concatenation, as
 * onestep_groupnorm_concat_kernel_typed computes them from the cat it writes; groups may straddle a and b.
 * w_sc_krsc (Cout, 1, 1, Ca + Cb) and y_sc (N, H, W, Cout), both NULL or both given: the block's 1x1 conv_shortcut of
 * the same concatenation (not normalized, no bias) in the same launch, by the blocks past conv1's; it needs conv1's
 * output the size of its input (stride 1, 'same' padding), and y_sc may alias no other operand. */
onestep_status onestep_groupnorm_concat_conv2d_igemm_typed(const void* a, const void* a_bias, const void* b,
                                                           const void* b_bias, const void* gamma, const void* beta,
                                                           int groups, float eps, int silu, const void* w_krsc,
                                                           const void* bias, const void* z, void* y,
                                                           const void* w_sc_krsc, void* y_sc, int N, int H, int W,
                                                           int Ca, int Cb, int KH, int KW, int Cout, int stride,
                                                           int padding, int config, onestep_dtype dtype,
                                                           cudaStream_t stream);
/* onestep_groupnorm_concat_conv2d_igemm_typed leaving y's statistics in stats_out (N, Ho*Wo / 16, out_groups) as
 * onestep_conv2d_igemm_stats_typed does (NULL: none; the shortcut's y_sc gets none): an up block's conv1 leaving
 * norm2's statistics. */
onestep_status onestep_groupnorm_concat_conv2d_igemm_stats_typed(
    const void* a, const void* a_bias, const void* b, const void* b_bias, const void* gamma, const void* beta,
    int groups, float eps, int silu, const void* w_krsc, const void* bias, const void* z, void* y,
    const void* w_sc_krsc, void* y_sc, int N, int H, int W, int Ca, int Cb, int KH, int KW, int Cout, int stride,
    int padding, int config, float* stats_out, int out_groups, onestep_dtype dtype, cudaStream_t stream);
/* y (N, 2H, 2W, Cout) = conv3x3(upsample_nearest2x(x), w, padding 1) + bias for x (N, H, W, Cin): the same kernel
 * gathering each upsampled pixel from x (the upsampled tensor is never stored), on the 3x3 weights' KRSC layout (Cout,
 * 3, 3, Cin): diffusers' Upsample2D in one launch, the tensor-core twin of onestep_upsample_conv_typed. bias may be
 * NULL; the rest as onestep_conv2d_igemm_typed. */
onestep_status onestep_upsample_conv_igemm_typed(const void* x, const void* w_krsc, const void* bias, void* y, int N,
                                                 int H, int W, int Cin, int Cout, int config, onestep_dtype dtype,
                                                 cudaStream_t stream);
int onestep_conv2d_igemm_configs(void);
/* "auto" for 0, a tile's description for 1 .. onestep_conv2d_igemm_configs(), NULL otherwise. */
const char* onestep_conv2d_igemm_config_name(int config);
/* The thread block cluster a tile's depth is split over: 1 for 0 and the plain tiles, 2, 4 or 8 for the tiles that
 * need sm_90 (ONESTEP_ERROR_UNSUPPORTED below it), 0 for a config out of range. */
int onestep_conv2d_igemm_config_cluster(int config);
/* The config that 0 runs for this shape, or 0 where onestep_conv2d_igemm_typed refuses the shape. */
int onestep_conv2d_igemm_choice(int N, int H, int W, int Cin, int KH, int KW, int Cout, int stride, int padding);
/* k (Cin, 4, 4, Cout) from 3x3 weights w (3, 3, Cin, Cout) HWIO: the kernel of the stride-2 transposed convolution
 * that equals a nearest 2x upsampling followed by the 3x3, padding-1 convolution with w (each of k's taps a sum of
 * w's, in fp32, rounded once). k is also cuDNN's KRSC filter for cudnnConvolutionBackwardData with stride 2 and
 * padding 1 (K = Cin, C = Cout). */
onestep_status onestep_subpixel_weights_typed(const void* w, void* k, int Cin, int Cout, onestep_dtype dtype,
                                              cudaStream_t stream);
/* y (N, 2H, 2W, Cout) = conv2d(upsample_nearest2x(x), w, bias, stride 1, padding 1) for x (N, H, W, Cin), given k =
 * onestep_subpixel_weights_typed(w): the transposed convolution, 4 multiply-adds per output instead of 9 and no
 * upsampled tensor. bias may be NULL; y must not alias x. diffusers' Upsample2D in one launch. */
onestep_status onestep_upsample_conv_typed(const void* x, const void* k, const void* bias, void* y, int N, int H,
                                           int W, int Cin, int Cout, onestep_dtype dtype, cudaStream_t stream);
onestep_status onestep_mul_typed(const void* a, const void* b, void* out, long long n, onestep_dtype dtype,
                                 cudaStream_t stream);
onestep_status onestep_add_per_channel_typed(const void* x, const void* v, void* y, int N, long long P, int C,
                                             onestep_dtype dtype, cudaStream_t stream);
/* out = (a + a_bias[c]) + (b + b_bias[c]) over (rows, C); either bias may be NULL; in-place use allowed. The residual
 * add that takes the biases the CUDA backend left pending on its operands. */
onestep_status onestep_add_biased_typed(const void* a, const void* a_bias, const void* b, const void* b_bias, void* out,
                                        long long rows, int C, onestep_dtype dtype, cudaStream_t stream);
/* concat_channels_typed of (a + a_bias[c]) and (b + b_bias[c]) (either bias NULL): a biased value is rounded once,
 * as its producer's bias add would have rounded it. The skip connection that takes a conv's pending bias. */
onestep_status onestep_concat_channels_biased_typed(const void* a, const void* a_bias, const void* b,
                                                    const void* b_bias, void* y, long long rows, int ca, int cb,
                                                    onestep_dtype dtype, cudaStream_t stream);
onestep_status onestep_concat_channels_typed(const void* a, const void* b, void* y, long long rows, int ca, int cb,
                                             onestep_dtype dtype, cudaStream_t stream);
onestep_status onestep_upsample_nearest2x_typed(const void* x, void* y, int N, int H, int W, int C,
                                                onestep_dtype dtype, cudaStream_t stream);
onestep_status onestep_split_heads_typed(const void* x, void* y, int N, int T, int H, int D, onestep_dtype dtype,
                                         cudaStream_t stream);
onestep_status onestep_merge_heads_typed(const void* x, void* y, int N, int T, int H, int D, onestep_dtype dtype,
                                         cudaStream_t stream);
/* Gaussian Fourier features (diffusers' GaussianFourierProjection): x = 2 pi t[n] (2 pi ln t[n] if use_log),
 * y[n] = [sin(x weight), cos(x weight)] ([cos, sin] if flip); t (N) and weight (half) fp32, y (N, 2 half) `dtype`.
 * The argument is formed in double (the weights are large frequencies). */
onestep_status onestep_fourier_embedding_typed(const float* t, const float* weight, void* y, int N, int half,
                                               int use_log, int flip_sin_to_cos, onestep_dtype dtype,
                                               cudaStream_t stream);
/* The same with each head padded to Dp >= D features: split writes (N, H, T, Dp) with zeros in [D, Dp), merge reads
 * only the first D. A head dim the fused attention kernels lack runs on the next one they have (zero features
 * change no score and give zero output columns; pass softmax_scale = 1 / sqrt(D)). */
onestep_status onestep_split_heads_padded_typed(const void* x, void* y, int N, int T, int H, int D, int Dp,
                                                onestep_dtype dtype, cudaStream_t stream);
onestep_status onestep_merge_heads_padded_typed(const void* x, void* y, int N, int T, int H, int D, int Dp,
                                                onestep_dtype dtype, cudaStream_t stream);
onestep_status onestep_sinusoidal_embedding_typed(const float* t, void* y, int N, int D, int flip_sin_to_cos,
                                                  float downscale_freq_shift, float scale, float max_period,
                                                  onestep_dtype dtype, cudaStream_t stream);

/* ---- a whole ResnetBlock2D in one launch (kernels/src/resnet.cu), inference at small levels -------------
 * y = x' + conv2(silu(norm2(conv1(silu(norm1(x'))) + b1 + t))) + b2 with x' = x + x_bias[c] and
 * t = add[n, c] + add_bias[c] (time_emb_proj(silu(temb)) and its bias): diffusers' ResnetBlock2D with the default
 * time_embedding_norm, no conv_shortcut and output_scale_factor 1. x and y (N, H, W, C) NHWC; w1_krsc and w2_krsc
 * (C, 3, 3, C) KRSC, 'same' padding, stride 1; norm1/norm2 group norms of `groups` groups with gamma/beta (C) and
 * eps; x_bias, add (N, C), add_bias, b1 and b2 may be NULL (add_bias only with add). All tensors `dtype`, fp16 or
 * bf16; statistics, products and sums in fp32, and the tensors the unfused ops would store (norm1's and norm2's
 * outputs, conv1's output before b1, y) rounded to dtype as they would be. One thread block cluster a sample
 * (compute capability 9.0), each block computing C / cluster output channels of both convolutions; norm2's input
 * exchanged through distributed shared memory. cluster: 0 or 8 (the portable size), or 16 (non-portable, as H100
 * and H200 allow: half the weights and the work a block; ONESTEP_ERROR_UNSUPPORTED where the occupancy API finds no
 * room for such a cluster). Needs C 128 or 256, H*W 16 or 64, C/groups a multiple of 8 that divides C/cluster, x,
 * the weights and y 16-byte aligned and y apart from x (else ONESTEP_ERROR_UNSUPPORTED or
 * ONESTEP_ERROR_INVALID_ARGUMENT, naming the condition). */
onestep_status onestep_resnet_block_typed(const void* x, const void* x_bias, const void* add, const void* add_bias,
                                          const void* gamma1, const void* beta1, const void* w1_krsc, const void* b1,
                                          const void* gamma2, const void* beta2, const void* w2_krsc, const void* b2,
                                          void* y, int N, int H, int W, int C, int groups, float eps,
                                          int cluster, onestep_dtype dtype, cudaStream_t stream);
/* An up block's ResnetBlock2D in one launch: the same block on x = cat(a + a_bias, b + b_bias) (a (N, H, W, Ca) and
 * b (N, H, W, Cb), each source's sum rounded to dtype as onestep_concat_channels_biased_typed stores it; either bias
 * may be NULL), Cin = Ca + Cb channels in and C out, with a 1x1 conv_shortcut ws_krsc (C, 1, 1, Cin) in place of the
 * identity: y = round(ws x) + conv2(silu(norm2(conv1(silu(norm1(x))) + b1 + t))) + b2, the shortcut's bias folded
 * into b2 by the caller (as the unfused ops run it). w1_krsc (C, 3, 3, Cin), w2_krsc (C, 3, 3, C). The weights
 * stream through shared memory a tap at a time, so Cin may be 512 (an up block's [h, skip] at 256 channels).
 * Needs Ca and Cb multiples of 8, Cin 128, 256 or 512, C 128 or 256, H*W 16 or 64, C/groups a multiple of 8 that
 * divides C/cluster and Cin/groups a multiple of 8, a, b, the weights and y 16-byte aligned, y apart from a and b;
 * the rest (cluster too) as onestep_resnet_block_typed. */
onestep_status onestep_resnet_block_concat_typed(const void* a, const void* a_bias, const void* b, const void* b_bias,
                                                 const void* add, const void* add_bias, const void* gamma1,
                                                 const void* beta1, const void* w1_krsc, const void* b1,
                                                 const void* gamma2, const void* beta2, const void* w2_krsc,
                                                 const void* b2, const void* ws_krsc, void* y, int N, int H, int W,
                                                 int Ca, int Cb, int C, int groups, float eps, int cluster,
                                                 onestep_dtype dtype, cudaStream_t stream);

/* ---- losses and norms (kernels/src/loss.cu): sums in double, in a fixed order ---------------------------
 * onestep_row_sq_dist: out[n] (N doubles) = sum over d of (pred[n, d] - target[n, d])^2, rows of D floats.
 * onestep_row_scaled_diff: out[n, d] = coef[n] (pred[n, d] - target[n, d]) (the losses' gradients; coef has N floats).
 * onestep_sum_squares: partials[b] = sum of x[i]^2 over chunk b, i in [b chunk, min(n, (b + 1) chunk)); the caller
 * adds the ceil(n / chunk) doubles in order. */
onestep_status onestep_row_sq_dist(const float* pred, const float* target, double* out, int N, long long D,
                                   cudaStream_t stream);
onestep_status onestep_row_scaled_diff(const float* pred, const float* target, const float* coef, float* out, int N,
                                       long long D, cudaStream_t stream);
onestep_status onestep_sum_squares(const float* x, long long n, long long chunk, double* partials, cudaStream_t stream);

/* ---- the optimizer update (kernels/src/optim.cu) ---------------------------------------------------------
 * One Adam (Kingma & Ba 2015) or RAdam (Liu et al. 2020) step over n fp32 parameters, in place; g is read only.
 * Per element:  g' = g + l2 p;  m = beta1 m + (1 - beta1) g';  v = beta2 v + (1 - beta2) g'^2;
 *   adaptive != 0:  p = decay p - step m / (sqrt(v) v_scale + eps)
 *   adaptive == 0:  p = decay p - step m          (RAdam's steps before the variance is tractable)
 * The per-step scalars come from the caller: Adam has v_scale = 1 / sqrt(1 - beta2^t), step = lr / (1 - beta1^t);
 * decoupled weight decay (AdamW) is l2 = 0, decay = 1 - lr wd; L2 decay is l2 = wd, decay = 1. */
onestep_status onestep_adam_step(float* p, const float* g, float* m, float* v, long long n, float beta1, float beta2,
                                 float v_scale, float eps, float step, float l2, float decay, int adaptive,
                                 cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* ONESTEP_KERNELS_H */
