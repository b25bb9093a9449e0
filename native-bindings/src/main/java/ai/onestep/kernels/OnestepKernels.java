package ai.onestep.kernels;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * JavaCPP binding of {@code kernels/include/onestep_kernels.h} and {@code onestep_runtime.h}: one static native
 * method per C function, same name, same argument order.
 *
 * <p>Device pointers and stream/graph handles travel as {@code long} addresses (cast back to their C type in the
 * generated JNI code), so the Java backend can sub-allocate an arena by plain arithmetic. Every function returns
 * an {@code onestep_status} ({@link #OK} ... {@link #ERROR_CUDA}); {@link #onestep_last_error_message()} names
 * the function and shapes of the last failure on the calling thread.
 *
 * <p>Loading: call {@link KernelLibrary#load} rather than {@code Loader.load} directly. It loads the chosen
 * {@code libonestep_kernels.so} (CUDA or emulated build, same SONAME) by absolute path first, so the JNI library,
 * which was linked against that SONAME, binds to it wherever the jar lives (native-bindings/README.md).
 */
@Platform(include = {"onestep_kernels.h", "onestep_runtime.h"}, link = "onestep_kernels")
public final class OnestepKernels {
    public static final int OK = 0;
    public static final int ERROR_INVALID_ARGUMENT = 1;
    public static final int ERROR_UNSUPPORTED = 2;
    public static final int ERROR_CUDA = 3;

    /** {@code onestep_dtype}: the element types of the {@code *_typed} functions and {@link #onestep_convert}. */
    public static final int FLOAT32 = 0;
    public static final int FLOAT16 = 1;
    public static final int BFLOAT16 = 2;

    private OnestepKernels() {
    }

    // ---- status ----
    public static native @Cast("const char*") BytePointer onestep_last_error_message();

    public static native int onestep_synchronize(@Cast("cudaStream_t") long stream);

    // ---- runtime (onestep_runtime.h) ----
    public static native @Cast("const char*") BytePointer onestep_runtime_kind();

    public static native int onestep_device_count(IntPointer count);

    public static native int onestep_malloc(@Cast("void**") LongPointer ptr, @Cast("size_t") long bytes);

    public static native int onestep_free(@Cast("void*") long ptr);

    public static native int onestep_memcpy_htod(@Cast("void*") long dst, @Cast("const void*") long src,
                                                 @Cast("size_t") long bytes, @Cast("cudaStream_t") long stream);

    public static native int onestep_memcpy_dtoh(@Cast("void*") long dst, @Cast("const void*") long src,
                                                 @Cast("size_t") long bytes, @Cast("cudaStream_t") long stream);

    /** The two above without their wait (a graph replay's copies; one wait after all of them). */
    public static native int onestep_memcpy_htod_async(@Cast("void*") long dst, @Cast("const void*") long src,
                                                       @Cast("size_t") long bytes, @Cast("cudaStream_t") long stream);

    public static native int onestep_memcpy_dtoh_async(@Cast("void*") long dst, @Cast("const void*") long src,
                                                       @Cast("size_t") long bytes, @Cast("cudaStream_t") long stream);

    public static native int onestep_memcpy_dtod(@Cast("void*") long dst, @Cast("const void*") long src,
                                                 @Cast("size_t") long bytes, @Cast("cudaStream_t") long stream);

    public static native int onestep_memset(@Cast("void*") long dst, int value, @Cast("size_t") long bytes,
                                            @Cast("cudaStream_t") long stream);

    public static native int onestep_stream_create(@Cast("cudaStream_t*") LongPointer stream);

    public static native int onestep_stream_destroy(@Cast("cudaStream_t") long stream);

    public static native int onestep_graph_begin_capture(@Cast("cudaStream_t") long stream);

    public static native int onestep_graph_end_capture(@Cast("cudaStream_t") long stream,
                                                       @Cast("onestep_graph*") LongPointer graph);

    public static native int onestep_graph_launch(@Cast("onestep_graph") long graph, @Cast("cudaStream_t") long stream);

    public static native int onestep_graph_destroy(@Cast("onestep_graph") long graph);

    public static native int onestep_graph_node_count(@Cast("onestep_graph") long graph,
                                                      @Cast("long long*") LongPointer count);

    // Device timer (CUDA events; the emulated build: the host clock).
    public static native int onestep_timer_create(@Cast("onestep_timer*") LongPointer timer);

    public static native int onestep_timer_start(@Cast("onestep_timer") long timer, @Cast("cudaStream_t") long stream);

    public static native int onestep_timer_stop(@Cast("onestep_timer") long timer, @Cast("cudaStream_t") long stream,
                                                FloatPointer ms);

    public static native int onestep_timer_destroy(@Cast("onestep_timer") long timer);

    // Programmatic dependent launch of the library's kernels (sm_90+; off by default).
    public static native int onestep_set_programmatic_launch(int enabled);

    public static native int onestep_programmatic_launch();

    // Weight prefetch before griddepcontrol.wait in the weight-reading kernels (on by default; a hint, same bits).
    public static native int onestep_set_weight_prefetch(int enabled);

    public static native int onestep_weight_prefetch();

    // ---- group norm ----
    public static native int onestep_groupnorm_forward(@Cast("const float*") long x, @Cast("const float*") long gamma,
                                                       @Cast("const float*") long beta, @Cast("const float*") long scale,
                                                       @Cast("const float*") long shift, @Cast("float*") long y,
                                                       @Cast("float*") long mean, @Cast("float*") long rstd, int n,
                                                       int hw, int c, int g, float eps, int applySilu,
                                                       @Cast("cudaStream_t") long stream);

    public static native int onestep_groupnorm_backward(@Cast("const float*") long dy, @Cast("const float*") long x,
                                                        @Cast("const float*") long mean, @Cast("const float*") long rstd,
                                                        @Cast("const float*") long gamma, @Cast("const float*") long beta,
                                                        @Cast("const float*") long scale,
                                                        @Cast("const float*") long shift, @Cast("float*") long dx,
                                                        @Cast("float*") long dgamma, @Cast("float*") long dbeta,
                                                        @Cast("float*") long dscale, @Cast("float*") long dshift,
                                                        int n, int hw, int c, int g, int applySilu,
                                                        @Cast("cudaStream_t") long stream);

    // ---- denoising updates ----
    public static native int onestep_edm_euler_step(@Cast("const float*") long x, @Cast("const float*") long denoised,
                                                    @Cast("float*") long xNext, @Cast("float*") long dOut, long n,
                                                    double sigma, double sigmaNext, @Cast("cudaStream_t") long stream);

    public static native int onestep_edm_heun_step(@Cast("const float*") long x, @Cast("const float*") long d,
                                                   @Cast("const float*") long xEuler,
                                                   @Cast("const float*") long denoisedNext, @Cast("float*") long xNext,
                                                   long n, double sigma, double sigmaNext,
                                                   @Cast("cudaStream_t") long stream);

    public static native int onestep_consistency_output(@Cast("const float*") long x, @Cast("const float*") long f,
                                                        @Cast("float*") long out, long n, double t, double eps,
                                                        double sigmaData, @Cast("cudaStream_t") long stream);

    public static native int onestep_consistency_renoise(@Cast("const float*") long x, @Cast("const float*") long z,
                                                         @Cast("float*") long out, long n, double tau, double eps,
                                                         @Cast("cudaStream_t") long stream);

    // ---- elementwise ----
    public static native int onestep_add(@Cast("const float*") long a, @Cast("const float*") long b,
                                         @Cast("float*") long out, long n, @Cast("cudaStream_t") long stream);

    public static native int onestep_axpy(float alpha, @Cast("const float*") long x, @Cast("float*") long y, long n,
                                          @Cast("cudaStream_t") long stream);

    /** y = a x + b z, as fmaf(b, z, a x). */
    public static native int onestep_axpby(float a, @Cast("const float*") long x, float b, @Cast("const float*") long z,
                                           @Cast("float*") long y, long n, @Cast("cudaStream_t") long stream);

    public static native int onestep_scale(float alpha, @Cast("const float*") long x, @Cast("float*") long out, long n,
                                           @Cast("cudaStream_t") long stream);

    public static native int onestep_silu_forward(@Cast("const float*") long x, @Cast("float*") long out, long n,
                                                  @Cast("cudaStream_t") long stream);

    public static native int onestep_silu_backward(@Cast("const float*") long x, @Cast("const float*") long dout,
                                                   @Cast("float*") long dx, long n, @Cast("cudaStream_t") long stream);

    // ---- attention ----
    public static native int onestep_attention_forward(@Cast("const float*") long q, @Cast("const float*") long k,
                                                       @Cast("const float*") long v, @Cast("float*") long o,
                                                       @Cast("float*") long lse, int b, int h, int tq, int tk, int d,
                                                       @Cast("const int*") long kvLen, float softmaxScale,
                                                       @Cast("cudaStream_t") long stream);

    public static native int onestep_attention_backward(@Cast("const float*") long q, @Cast("const float*") long k,
                                                        @Cast("const float*") long v, @Cast("const float*") long o,
                                                        @Cast("const float*") long dout, @Cast("const float*") long lse,
                                                        @Cast("float*") long delta, @Cast("float*") long dq,
                                                        @Cast("float*") long dk, @Cast("float*") long dv, int b, int h,
                                                        int tq, int tk, int d, @Cast("const int*") long kvLen,
                                                        float softmaxScale, @Cast("cudaStream_t") long stream);

    /** q, k, v, o in {@code dtype} ({@link #FLOAT32}, {@link #FLOAT16}, {@link #BFLOAT16}); lse fp32. */
    public static native int onestep_attention_forward_typed(@Cast("const void*") long q, @Cast("const void*") long k,
                                                             @Cast("const void*") long v, @Cast("void*") long o,
                                                             @Cast("float*") long lse, int b, int h, int tq, int tk,
                                                             int d, @Cast("const int*") long kvLen, float softmaxScale,
                                                             @Cast("onestep_dtype") int dtype,
                                                             @Cast("cudaStream_t") long stream);

    /**
     * The same on the engine's token layout: q, o (B, Tq, H*D) and k, v (B, Tk, H*D); lse (B, H, Tq). Same bits as
     * splitting the heads first, without the split and merge kernels.
     */
    public static native int onestep_attention_forward_tokens_typed(@Cast("const void*") long q,
                                                                    @Cast("const void*") long k,
                                                                    @Cast("const void*") long v, @Cast("void*") long o,
                                                                    @Cast("float*") long lse, int b, int h, int tq,
                                                                    int tk, int d, @Cast("const int*") long kvLen,
                                                                    float softmaxScale,
                                                                    @Cast("onestep_dtype") int dtype,
                                                                    @Cast("cudaStream_t") long stream);

    /**
     * The token-layout forward on q + qBias, k + kBias, v + vBias (per-feature biases of H*D elements, each 0 for
     * none; each sum rounded once, so the bits of adding them first): the attention that takes the q/k/v projections'
     * pending biases.
     */
    public static native int onestep_attention_forward_tokens_biased_typed(@Cast("const void*") long q,
                                                                           @Cast("const void*") long qBias,
                                                                           @Cast("const void*") long k,
                                                                           @Cast("const void*") long kBias,
                                                                           @Cast("const void*") long v,
                                                                           @Cast("const void*") long vBias,
                                                                           @Cast("void*") long o,
                                                                           @Cast("float*") long lse, int b, int h,
                                                                           int tq, int tk, int d,
                                                                           @Cast("const int*") long kvLen,
                                                                           float softmaxScale,
                                                                           @Cast("onestep_dtype") int dtype,
                                                                           @Cast("cudaStream_t") long stream);

    /**
     * The token-layout forward on one packed (B, T, 3*H*D) projection (each token's q, then k, then v features) plus
     * its pending bias (3*H*D elements in the same order; 0 for none); o (B, T, H*D).
     */
    public static native int onestep_attention_forward_qkv_typed(@Cast("const void*") long qkv,
                                                                 @Cast("const void*") long qkvBias,
                                                                 @Cast("void*") long o, @Cast("float*") long lse,
                                                                 int b, int h, int t, int d,
                                                                 @Cast("const int*") long kvLen, float softmaxScale,
                                                                 @Cast("onestep_dtype") int dtype,
                                                                 @Cast("cudaStream_t") long stream);

    public static native int onestep_attention_forward_qkv_kernel_typed(@Cast("const void*") long qkv,
                                                                        @Cast("const void*") long qkvBias,
                                                                        @Cast("void*") long o, @Cast("float*") long lse,
                                                                        int b, int h, int t, int d,
                                                                        @Cast("const int*") long kvLen,
                                                                        float softmaxScale, int kernel,
                                                                        @Cast("onestep_dtype") int dtype,
                                                                        @Cast("cudaStream_t") long stream);

    /**
     * The attention on one packed projection, to_out's projection and the residual in one launch (fp16/bf16, d 32 or
     * 64): y (B, T, H*D) = attention(qkv) w + outBias + z, with {@code wKrsc} the projection's weight as [out][in];
     * outBias and z may be 0, z may be y. No o or lse is written. warpsPerHead (1, 2, 4): the kernel.
     */
    public static native int onestep_attention_residual_qkv_typed(@Cast("const void*") long qkv,
                                                                  @Cast("const void*") long qkvBias,
                                                                  @Cast("const void*") long wKrsc,
                                                                  @Cast("const void*") long outBias,
                                                                  @Cast("const void*") long z, @Cast("void*") long y,
                                                                  int b, int h, int t, int d, float softmaxScale,
                                                                  int warpsPerHead, @Cast("onestep_dtype") int dtype,
                                                                  @Cast("cudaStream_t") long stream);

    /**
     * A whole ResnetBlock2D in one launch (kernels/src/resnet.cu; fp16/bf16, C 128 or 256, H*W 16 or 64, compute
     * capability 9.0): y = x' + conv2(silu(norm2(conv1(silu(norm1(x'))) + b1 + add + addBias))) + b2, x' = x + xBias,
     * weights KRSC (C, 3, 3, C); xBias, add (N, C), addBias, b1 and b2 may be 0. cluster: the blocks a sample, 0 or 8
     * (portable), or 16 (non-portable; refused where no such cluster fits the device).
     */
    public static native int onestep_resnet_block_typed(@Cast("const void*") long x, @Cast("const void*") long xBias,
                                                        @Cast("const void*") long add,
                                                        @Cast("const void*") long addBias,
                                                        @Cast("const void*") long gamma1,
                                                        @Cast("const void*") long beta1,
                                                        @Cast("const void*") long w1Krsc,
                                                        @Cast("const void*") long b1,
                                                        @Cast("const void*") long gamma2,
                                                        @Cast("const void*") long beta2,
                                                        @Cast("const void*") long w2Krsc,
                                                        @Cast("const void*") long b2, @Cast("void*") long y, int n,
                                                        int h, int w, int c, int groups, float eps, int cluster,
                                                        @Cast("onestep_dtype") int dtype,
                                                        @Cast("cudaStream_t") long stream);

    /**
     * An up block's ResnetBlock2D in one launch (kernels/src/resnet.cu): the same block on x = cat(a + aBias, b + bBias)
     * (Ca + Cb = 128, 256 or 512 channels in, C out) with the 1x1 shortcut wsKrsc (C, 1, 1, Ca + Cb) in place of the
     * identity, its bias folded into b2; w1Krsc (C, 3, 3, Ca + Cb), w2Krsc (C, 3, 3, C).
     */
    public static native int onestep_resnet_block_concat_typed(@Cast("const void*") long a,
                                                               @Cast("const void*") long aBias,
                                                               @Cast("const void*") long b,
                                                               @Cast("const void*") long bBias,
                                                               @Cast("const void*") long add,
                                                               @Cast("const void*") long addBias,
                                                               @Cast("const void*") long gamma1,
                                                               @Cast("const void*") long beta1,
                                                               @Cast("const void*") long w1Krsc,
                                                               @Cast("const void*") long b1,
                                                               @Cast("const void*") long gamma2,
                                                               @Cast("const void*") long beta2,
                                                               @Cast("const void*") long w2Krsc,
                                                               @Cast("const void*") long b2,
                                                               @Cast("const void*") long wsKrsc,
                                                               @Cast("void*") long y, int n, int h, int w, int ca,
                                                               int cb, int c, int groups, float eps, int cluster,
                                                               @Cast("onestep_dtype") int dtype,
                                                               @Cast("cudaStream_t") long stream);

    public static native int onestep_attention_backward_typed(@Cast("const void*") long q, @Cast("const void*") long k,
                                                              @Cast("const void*") long v, @Cast("const void*") long o,
                                                              @Cast("const void*") long dout,
                                                              @Cast("const float*") long lse,
                                                              @Cast("float*") long delta, @Cast("void*") long dq,
                                                              @Cast("void*") long dk, @Cast("void*") long dv, int b,
                                                              int h, int tq, int tk, int d,
                                                              @Cast("const int*") long kvLen, float softmaxScale,
                                                              @Cast("onestep_dtype") int dtype,
                                                              @Cast("cudaStream_t") long stream);

    /** y (n elements of type {@code to}) = x (n elements of type {@code from}), rounding to nearest even. */
    public static native int onestep_convert(@Cast("const void*") long x, @Cast("onestep_dtype") int from,
                                             @Cast("void*") long y, @Cast("onestep_dtype") int to, long n,
                                             @Cast("cudaStream_t") long stream);

    /** y = alpha x, the product in fp32 and rounded once to {@code to} (scale, then convert, in one launch). */
    public static native int onestep_convert_scaled(float alpha, @Cast("const void*") long x,
                                                    @Cast("onestep_dtype") int from, @Cast("void*") long y,
                                                    @Cast("onestep_dtype") int to, long n,
                                                    @Cast("cudaStream_t") long stream);

    // ---- layers (portable kernels) ----
    public static native int onestep_gemm(@Cast("const float*") long a, int transA, @Cast("const float*") long b,
                                          int transB, @Cast("float*") long c, int m, int n, int k, float alpha,
                                          float beta, @Cast("cudaStream_t") long stream);

    public static native int onestep_linear(@Cast("const float*") long x, @Cast("const float*") long w,
                                            @Cast("const float*") long bias, @Cast("float*") long y, long rows, int in,
                                            int out, @Cast("cudaStream_t") long stream);

    public static native int onestep_conv2d_nhwc(@Cast("const float*") long x, @Cast("const float*") long w,
                                                 @Cast("const float*") long bias, @Cast("float*") long y, int n, int h,
                                                 int wd, int cin, int kh, int kw, int cout, int stride, int padding,
                                                 @Cast("cudaStream_t") long stream);

    public static native int onestep_mul(@Cast("const float*") long a, @Cast("const float*") long b,
                                         @Cast("float*") long out, long n, @Cast("cudaStream_t") long stream);

    public static native int onestep_add_per_channel(@Cast("const float*") long x, @Cast("const float*") long v,
                                                     @Cast("float*") long y, int n, long p, int c,
                                                     @Cast("cudaStream_t") long stream);

    public static native int onestep_concat_channels(@Cast("const float*") long a, @Cast("const float*") long b,
                                                     @Cast("float*") long y, long rows, int ca, int cb,
                                                     @Cast("cudaStream_t") long stream);

    public static native int onestep_split_channels(@Cast("const float*") long y, @Cast("float*") long a,
                                                    @Cast("float*") long b, long rows, int ca, int cb,
                                                    @Cast("cudaStream_t") long stream);

    public static native int onestep_sum_per_channel(@Cast("const float*") long x, @Cast("float*") long v, int n, long p,
                                                     int c, @Cast("cudaStream_t") long stream);

    public static native int onestep_upsample_nearest2x(@Cast("const float*") long x, @Cast("float*") long y, int n,
                                                        int h, int w, int c, @Cast("cudaStream_t") long stream);

    /** Backward of onestep_conv2d_nhwc: dx assigned (0: not wanted), dw accumulated (0: not wanted). */
    public static native int onestep_conv2d_nhwc_backward(@Cast("const float*") long x, @Cast("const float*") long w,
                                                          @Cast("const float*") long dy, @Cast("float*") long dx,
                                                          @Cast("float*") long dw, int n, int h, int wd, int cin, int kh,
                                                          int kw, int cout, int stride, int padding,
                                                          @Cast("cudaStream_t") long stream);

    /** The adjoint of onestep_upsample_nearest2x: dx (n, h, w, c) = the sum of each 2x2 block of dy. */
    public static native int onestep_upsample_nearest2x_backward(@Cast("const float*") long dy, @Cast("float*") long dx,
                                                                 int n, int h, int w, int c,
                                                                 @Cast("cudaStream_t") long stream);

    // ---- the forward ops for any onestep_dtype (the half-precision inference path; t and mean/rstd stay fp32) ----
    public static native int onestep_gemm_typed(@Cast("const void*") long a, int transA, @Cast("const void*") long b, int transB, @Cast("void*") long c, int m, int n,
                                                int k, float alpha, float beta, @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    public static native int onestep_linear_typed(@Cast("const void*") long x, @Cast("const void*") long w, @Cast("const void*") long bias, @Cast("void*") long y, long rows, int in, int out,
                                                  @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    /** y = x w + bias + z, summed in fp32 and rounded once; z (rows, out) may be y itself. */
    public static native int onestep_linear_residual_typed(@Cast("const void*") long x, @Cast("const void*") long w,
                                                           @Cast("const void*") long bias, @Cast("const void*") long z,
                                                           @Cast("void*") long y, long rows, int in, int out,
                                                           @Cast("onestep_dtype") int dtype,
                                                           @Cast("cudaStream_t") long stream);

    public static native int onestep_conv2d_nhwc_typed(@Cast("const void*") long x, @Cast("const void*") long w, @Cast("const void*") long bias, @Cast("void*") long y, int n, int h, int wd,
                                                       int cin, int kh, int kw, int cout, int stride, int padding,
                                                       @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    /** y = conv2d(x, w) + bias + z, summed in fp32 and rounded once; z (N, Ho, Wo, Cout) may be y itself. */
    public static native int onestep_conv2d_nhwc_residual_typed(@Cast("const void*") long x,
                                                                @Cast("const void*") long w,
                                                                @Cast("const void*") long bias,
                                                                @Cast("const void*") long z, @Cast("void*") long y,
                                                                int n, int h, int wd, int cin, int kh, int kw, int cout,
                                                                int stride, int padding,
                                                                @Cast("onestep_dtype") int dtype,
                                                                @Cast("cudaStream_t") long stream);

    public static native int onestep_groupnorm_forward_typed(@Cast("const void*") long x, @Cast("const void*") long gamma, @Cast("const void*") long beta, @Cast("const void*") long scale, @Cast("const void*") long shift,
                                                             @Cast("void*") long y, @Cast("float*") long mean,
                                                             @Cast("float*") long rstd, int n, int hw, int c, int g,
                                                             float eps, int applySilu, @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    /** Group norm of (x + xBias[c]) + (add[n,c] + addBias[c]), never stored; each term may be 0 (NULL). */
    public static native int onestep_groupnorm_forward_add_typed(@Cast("const void*") long x, @Cast("const void*") long xBias,
                                                                 @Cast("const void*") long add, @Cast("const void*") long addBias,
                                                                 @Cast("const void*") long gamma, @Cast("const void*") long beta,
                                                                 @Cast("const void*") long scale, @Cast("const void*") long shift,
                                                                 @Cast("void*") long y, @Cast("float*") long mean,
                                                                 @Cast("float*") long rstd, int n, int hw, int c, int g,
                                                                 float eps, int applySilu, @Cast("onestep_dtype") int dtype,
                                                                 @Cast("cudaStream_t") long stream);

    // kernel 0: as onestep_groupnorm_forward_add_typed; 1: the slab kernel (x read once; large tensors).
    public static native int onestep_groupnorm_forward_add_kernel_typed(@Cast("const void*") long x,
                                                                        @Cast("const void*") long xBias,
                                                                        @Cast("const void*") long add,
                                                                        @Cast("const void*") long addBias,
                                                                        @Cast("const void*") long gamma,
                                                                        @Cast("const void*") long beta,
                                                                        @Cast("const void*") long scale,
                                                                        @Cast("const void*") long shift,
                                                                        @Cast("void*") long y, @Cast("float*") long mean,
                                                                        @Cast("float*") long rstd, int n, int hw, int c,
                                                                        int g, float eps, int applySilu, int kernel,
                                                                        @Cast("onestep_dtype") int dtype,
                                                                        @Cast("cudaStream_t") long stream);

    /**
     * Group norm (+ SiLU) of the channel concatenation [a + aBias, b + bBias] (either bias 0), which it also writes to
     * cat: the concat's and the group norm's bits in one pass.
     */
    public static native int onestep_groupnorm_concat_typed(@Cast("const void*") long a, @Cast("const void*") long aBias,
                                                            @Cast("const void*") long b, @Cast("const void*") long bBias,
                                                            @Cast("const void*") long gamma, @Cast("const void*") long beta,
                                                            @Cast("void*") long cat, @Cast("void*") long y,
                                                            @Cast("float*") long mean, @Cast("float*") long rstd, int n,
                                                            int hw, int ca, int cb, int g, float eps, int applySilu,
                                                            @Cast("onestep_dtype") int dtype,
                                                            @Cast("cudaStream_t") long stream);

    /**
     * {@link #onestep_groupnorm_concat_typed} with a choice of kernel: 0 the default, 2 the cluster kernel (each group
     * over a thread block cluster; sm_90, ca and cb multiples of 4).
     */
    public static native int onestep_groupnorm_concat_kernel_typed(@Cast("const void*") long a,
                                                                   @Cast("const void*") long aBias,
                                                                   @Cast("const void*") long b,
                                                                   @Cast("const void*") long bBias,
                                                                   @Cast("const void*") long gamma,
                                                                   @Cast("const void*") long beta,
                                                                   @Cast("void*") long cat, @Cast("void*") long y,
                                                                   @Cast("float*") long mean, @Cast("float*") long rstd,
                                                                   int n, int hw, int ca, int cb, int g, float eps,
                                                                   int applySilu, int kernel,
                                                                   @Cast("onestep_dtype") int dtype,
                                                                   @Cast("cudaStream_t") long stream);

    /** k (cin, 4, 4, cout): the stride-2 transposed-convolution kernel of an upsampling 3x3 convolution's w. */
    public static native int onestep_subpixel_weights_typed(@Cast("const void*") long w, @Cast("void*") long k, int cin,
                                                            int cout, @Cast("onestep_dtype") int dtype,
                                                            @Cast("cudaStream_t") long stream);

    /** y = conv2d(x, w) + bias + z on tensor cores, w in KRSC (see the header). */
    public static native int onestep_conv2d_igemm_typed(@Cast("const void*") long x, @Cast("const void*") long wKrsc,
                                                        @Cast("const void*") long bias, @Cast("const void*") long z,
                                                        @Cast("void*") long y, int n, int h, int wd, int cin, int kh,
                                                        int kw, int cout, int stride, int padding, int config,
                                                        @Cast("onestep_dtype") int dtype,
                                                        @Cast("cudaStream_t") long stream);

    /** y = conv2d(cat(a + aBias, b + bBias), w) + bias + z, the concatenation never stored (see the header). */
    public static native int onestep_concat_conv2d_igemm_typed(@Cast("const void*") long a,
                                                               @Cast("const void*") long aBias,
                                                               @Cast("const void*") long b,
                                                               @Cast("const void*") long bBias,
                                                               @Cast("const void*") long wKrsc,
                                                               @Cast("const void*") long bias,
                                                               @Cast("const void*") long z, @Cast("void*") long y,
                                                               int n, int h, int wd, int ca, int cb, int kh, int kw,
                                                               int cout, int stride, int padding, int config,
                                                               @Cast("onestep_dtype") int dtype,
                                                               @Cast("cudaStream_t") long stream);

    /**
     * A down block's conv2d(silu(group_norm(x + xBias)), w) + bias and the 1x1 conv2d(x + xBias, wSc) (no bias) in one
     * launch (see the header); conv1 at stride 1 with 'same' padding.
     */
    public static native int onestep_groupnorm_conv2d_shortcut_igemm_typed(@Cast("const void*") long x,
                                                                           @Cast("const void*") long xBias,
                                                                           @Cast("const void*") long gamma,
                                                                           @Cast("const void*") long beta, int groups,
                                                                           float eps, int silu,
                                                                           @Cast("const void*") long wKrsc,
                                                                           @Cast("const void*") long bias,
                                                                           @Cast("void*") long y,
                                                                           @Cast("const void*") long wScKrsc,
                                                                           @Cast("void*") long ySc, int n, int h,
                                                                           int w, int cin, int kh, int kw, int cout,
                                                                           int stride, int padding, int config,
                                                                           @Cast("onestep_dtype") int dtype,
                                                                           @Cast("cudaStream_t") long stream);

    /**
     * conv2d(silu(group_norm(cat(a + aBias, b + bBias))), w) + bias + z, and (wScKrsc, ySc non-zero) the 1x1
     * conv2d(cat, wSc), in one launch (see the header).
     */
    public static native int onestep_groupnorm_concat_conv2d_igemm_typed(@Cast("const void*") long a,
                                                                         @Cast("const void*") long aBias,
                                                                         @Cast("const void*") long b,
                                                                         @Cast("const void*") long bBias,
                                                                         @Cast("const void*") long gamma,
                                                                         @Cast("const void*") long beta, int groups,
                                                                         float eps, int silu,
                                                                         @Cast("const void*") long wKrsc,
                                                                         @Cast("const void*") long bias,
                                                                         @Cast("const void*") long z,
                                                                         @Cast("void*") long y,
                                                                         @Cast("const void*") long wScKrsc,
                                                                         @Cast("void*") long ySc, int n, int h, int wd,
                                                                         int ca, int cb, int kh, int kw, int cout,
                                                                         int stride, int padding, int config,
                                                                         @Cast("onestep_dtype") int dtype,
                                                                         @Cast("cudaStream_t") long stream);

    /** y (n, 2h, 2w, cout) = conv3x3(upsample2x(x), w) + bias, the upsampled tensor never stored (see the header). */
    public static native int onestep_upsample_conv_igemm_typed(@Cast("const void*") long x,
                                                               @Cast("const void*") long wKrsc,
                                                               @Cast("const void*") long bias, @Cast("void*") long y,
                                                               int n, int h, int w, int cin, int cout, int config,
                                                               @Cast("onestep_dtype") int dtype,
                                                               @Cast("cudaStream_t") long stream);

    /** conv2d(silu(group_norm((x + xBias) + (add + addBias))), w) + bias + z in one launch (see the header). */
    public static native int onestep_groupnorm_conv2d_igemm_typed(@Cast("const void*") long x,
                                                                  @Cast("const void*") long xBias,
                                                                  @Cast("const void*") long add,
                                                                  @Cast("const void*") long addBias,
                                                                  @Cast("const void*") long gamma,
                                                                  @Cast("const void*") long beta, int groups,
                                                                  float eps, int silu,
                                                                  @Cast("const void*") long wKrsc,
                                                                  @Cast("const void*") long bias,
                                                                  @Cast("const void*") long z, @Cast("void*") long y,
                                                                  int n, int h, int wd, int cin, int kh, int kw,
                                                                  int cout, int stride, int padding, int config,
                                                                  @Cast("onestep_dtype") int dtype,
                                                                  @Cast("cudaStream_t") long stream);

    /**
     * {@code onestep_conv2d_igemm_typed} leaving, in its epilogue, y's statistics for a later group norm: (n, ho*wo/16,
     * outGroups) pairs of fp32 (mean, M2) per run of 16 pixels (see the header).
     */
    public static native int onestep_conv2d_igemm_stats_typed(@Cast("const void*") long x,
                                                              @Cast("const void*") long wKrsc,
                                                              @Cast("const void*") long bias,
                                                              @Cast("const void*") long z, @Cast("void*") long y, int n,
                                                              int h, int wd, int cin, int kh, int kw, int cout,
                                                              int stride, int padding, int config,
                                                              @Cast("float*") long statsOut, int outGroups,
                                                              @Cast("onestep_dtype") int dtype,
                                                              @Cast("cudaStream_t") long stream);

    /**
     * {@code onestep_groupnorm_conv2d_igemm_typed} on x's per-channel statistics {@code stats} as a producer left them
     * (0: computed from x), leaving y's in {@code statsOut} (0: none; see the header).
     */
    public static native int onestep_groupnorm_conv2d_igemm_stats_typed(@Cast("const void*") long x,
                                                                        @Cast("const void*") long xBias,
                                                                        @Cast("const void*") long add,
                                                                        @Cast("const void*") long addBias,
                                                                        @Cast("const void*") long gamma,
                                                                        @Cast("const void*") long beta, int groups,
                                                                        float eps, int silu,
                                                                        @Cast("const float*") long stats,
                                                                        @Cast("const void*") long wKrsc,
                                                                        @Cast("const void*") long bias,
                                                                        @Cast("const void*") long z,
                                                                        @Cast("void*") long y, int n, int h, int wd,
                                                                        int cin, int kh, int kw, int cout, int stride,
                                                                        int padding, int config,
                                                                        @Cast("float*") long statsOut, int outGroups,
                                                                        @Cast("onestep_dtype") int dtype,
                                                                        @Cast("cudaStream_t") long stream);

    /**
     * {@code onestep_groupnorm_concat_conv2d_igemm_typed} leaving conv1's output statistics in {@code statsOut} (see
     * the header).
     */
    public static native int onestep_groupnorm_concat_conv2d_igemm_stats_typed(@Cast("const void*") long a,
                                                                               @Cast("const void*") long aBias,
                                                                               @Cast("const void*") long b,
                                                                               @Cast("const void*") long bBias,
                                                                               @Cast("const void*") long gamma,
                                                                               @Cast("const void*") long beta,
                                                                               int groups, float eps, int silu,
                                                                               @Cast("const void*") long wKrsc,
                                                                               @Cast("const void*") long bias,
                                                                               @Cast("const void*") long z,
                                                                               @Cast("void*") long y,
                                                                               @Cast("const void*") long wScKrsc,
                                                                               @Cast("void*") long ySc, int n, int h,
                                                                               int wd, int ca, int cb, int kh, int kw,
                                                                               int cout, int stride, int padding,
                                                                               int config,
                                                                               @Cast("float*") long statsOut,
                                                                               int outGroups,
                                                                               @Cast("onestep_dtype") int dtype,
                                                                               @Cast("cudaStream_t") long stream);

    public static native int onestep_conv2d_igemm_configs();

    public static native @Cast("const char*") BytePointer onestep_conv2d_igemm_config_name(int config);

    public static native int onestep_conv2d_igemm_config_cluster(int config);

    public static native int onestep_conv2d_igemm_choice(int n, int h, int wd, int cin, int kh, int kw, int cout,
                                                         int stride, int padding);

    public static native int onestep_upsample_conv_typed(@Cast("const void*") long x, @Cast("const void*") long k,
                                                         @Cast("const void*") long bias, @Cast("void*") long y, int n,
                                                         int h, int w, int cin, int cout,
                                                         @Cast("onestep_dtype") int dtype,
                                                         @Cast("cudaStream_t") long stream);

    public static native int onestep_add_typed(@Cast("const void*") long a, @Cast("const void*") long b, @Cast("void*") long out, long n, @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    public static native int onestep_axpy_typed(float alpha, @Cast("const void*") long x, @Cast("void*") long y, long n, @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    public static native int onestep_axpby_typed(float a, @Cast("const void*") long x, float b, @Cast("const void*") long z, @Cast("void*") long y, long n, @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    /** y (fp32) = a x (fp32) + b (f + fBias[c] rounded once to fDtype, or f), in one launch; y may alias x. */
    public static native int onestep_axpby_mixed_typed(float a, @Cast("const float*") long x, float b,
                                                       @Cast("const void*") long f, @Cast("const void*") long fBias,
                                                       int c, @Cast("float*") long y, long n,
                                                       @Cast("onestep_dtype") int fDtype,
                                                       @Cast("cudaStream_t") long stream);

    public static native int onestep_scale_typed(float alpha, @Cast("const void*") long x, @Cast("void*") long out, long n, @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    public static native int onestep_mul_typed(@Cast("const void*") long a, @Cast("const void*") long b, @Cast("void*") long out, long n, @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    public static native int onestep_silu_forward_typed(@Cast("const void*") long x, @Cast("void*") long out, long n, @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    public static native int onestep_add_per_channel_typed(@Cast("const void*") long x, @Cast("const void*") long v, @Cast("void*") long y, int n, long p, int c, @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    /** out = (a + aBias[c]) + (b + bBias[c]) over (rows, c); either bias may be 0 (NULL). */
    public static native int onestep_add_biased_typed(@Cast("const void*") long a, @Cast("const void*") long aBias, @Cast("const void*") long b,
                                                      @Cast("const void*") long bBias, @Cast("void*") long out, long rows, int c,
                                                      @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    /** concat of (a + aBias[c]) and (b + bBias[c]); either bias may be 0 (NULL). */
    public static native int onestep_concat_channels_biased_typed(@Cast("const void*") long a, @Cast("const void*") long aBias,
                                                                  @Cast("const void*") long b, @Cast("const void*") long bBias,
                                                                  @Cast("void*") long y, long rows, int ca, int cb,
                                                                  @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    public static native int onestep_concat_channels_typed(@Cast("const void*") long a, @Cast("const void*") long b, @Cast("void*") long y, long rows, int ca, int cb, @Cast("onestep_dtype") int dtype,
                                                           @Cast("cudaStream_t") long stream);

    public static native int onestep_upsample_nearest2x_typed(@Cast("const void*") long x, @Cast("void*") long y, int n, int h, int w, int c, @Cast("onestep_dtype") int dtype,
                                                              @Cast("cudaStream_t") long stream);

    public static native int onestep_split_heads_typed(@Cast("const void*") long x, @Cast("void*") long y, int n, int t, int h, int d, @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    public static native int onestep_merge_heads_typed(@Cast("const void*") long x, @Cast("void*") long y, int n, int t, int h, int d, @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    /** (n, t, h*d) to (n, h, t, dp) with each head zero-padded to dp >= d features. */
    public static native int onestep_split_heads_padded_typed(@Cast("const void*") long x, @Cast("void*") long y, int n,
                                                              int t, int h, int d, int dp,
                                                              @Cast("onestep_dtype") int dtype,
                                                              @Cast("cudaStream_t") long stream);

    /** (n, h, t, dp) to (n, t, h*d): the first d features of each padded head. */
    public static native int onestep_merge_heads_padded_typed(@Cast("const void*") long x, @Cast("void*") long y, int n,
                                                              int t, int h, int d, int dp,
                                                              @Cast("onestep_dtype") int dtype,
                                                              @Cast("cudaStream_t") long stream);

    /** Gaussian Fourier features: t (n) and weight (half) fp32, y (n, 2 half) in {@code dtype}. */
    public static native int onestep_fourier_embedding_typed(@Cast("const float*") long t,
                                                             @Cast("const float*") long weight, @Cast("void*") long y,
                                                             int n, int half, int useLog, int flipSinToCos,
                                                             @Cast("onestep_dtype") int dtype,
                                                             @Cast("cudaStream_t") long stream);

    public static native int onestep_sinusoidal_embedding_typed(@Cast("const float*") long t, @Cast("void*") long y, int n, int d,
                                                                int flipSinToCos, float downscaleFreqShift,
                                                                float scale, float maxPeriod, @Cast("onestep_dtype") int dtype, @Cast("cudaStream_t") long stream);

    /** out[n] (doubles) = sum over d of (pred - target)^2 per row of d floats (kernels/src/loss.cu). */
    public static native int onestep_row_sq_dist(@Cast("const float*") long pred, @Cast("const float*") long target,
                                                 @Cast("double*") long out, int n, long d,
                                                 @Cast("cudaStream_t") long stream);

    /** out[n, d] = coef[n] (pred - target). */
    public static native int onestep_row_scaled_diff(@Cast("const float*") long pred, @Cast("const float*") long target,
                                                     @Cast("const float*") long coef, @Cast("float*") long out, int n,
                                                     long d, @Cast("cudaStream_t") long stream);

    /** partials[b] (doubles) = sum of x^2 over chunk b. */
    public static native int onestep_sum_squares(@Cast("const float*") long x, long n, long chunk,
                                                 @Cast("double*") long partials, @Cast("cudaStream_t") long stream);

    /** One Adam/RAdam step in place (kernels/include/onestep_kernels.h; the scalars of ai.onestep.backend.AdamUpdate). */
    public static native int onestep_adam_step(@Cast("float*") long p, @Cast("const float*") long g, @Cast("float*") long m,
                                               @Cast("float*") long v, long n, float beta1, float beta2, float vScale,
                                               float eps, float step, float l2, float decay, int adaptive,
                                               @Cast("cudaStream_t") long stream);

    public static native int onestep_split_heads(@Cast("const float*") long x, @Cast("float*") long y, int n, int t,
                                                 int h, int d, @Cast("cudaStream_t") long stream);

    public static native int onestep_merge_heads(@Cast("const float*") long x, @Cast("float*") long y, int n, int t,
                                                 int h, int d, @Cast("cudaStream_t") long stream);

    public static native int onestep_sinusoidal_embedding(@Cast("const float*") long t, @Cast("float*") long y, int n,
                                                          int d, int flipSinToCos, float downscaleFreqShift,
                                                          float scale, float maxPeriod,
                                                          @Cast("cudaStream_t") long stream);
}
