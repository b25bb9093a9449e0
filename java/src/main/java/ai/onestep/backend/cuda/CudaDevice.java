package ai.onestep.backend.cuda;

import static ai.onestep.kernels.OnestepKernels.*;

import java.util.HashMap;
import java.util.Map;
import java.util.function.Supplier;
import org.bytedeco.cuda.cublas.cublasContext;
import org.bytedeco.cuda.cublas.cublasLtContext;
import org.bytedeco.cuda.cublas.cublasLtMatmulDescOpaque_t;
import org.bytedeco.cuda.cublas.cublasLtMatmulHeuristicResult_t;
import org.bytedeco.cuda.cublas.cublasLtMatmulPreferenceOpaque_t;
import org.bytedeco.cuda.cublas.cublasLtMatrixLayoutOpaque_t;
import org.bytedeco.cuda.cudnn.cudnnActivationStruct;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.cudnn.cudnnContext;
import org.bytedeco.cuda.cudnn.cudnnConvolutionBwdDataAlgoPerf_t;
import org.bytedeco.cuda.cudnn.cudnnConvolutionBwdFilterAlgoPerf_t;
import org.bytedeco.cuda.cudnn.cudnnConvolutionFwdAlgoPerf_t;
import org.bytedeco.cuda.cudnn.cudnnConvolutionStruct;
import org.bytedeco.cuda.cudnn.cudnnFilterStruct;
import org.bytedeco.cuda.cudnn.cudnnTensorStruct;
import org.bytedeco.cuda.global.cublas;
import org.bytedeco.cuda.global.cudnn;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;
import org.bytedeco.javacpp.SizeTPointer;

/**
 * A real GPU through the nvcc-built {@code libonestep_kernels.so}. GEMM and linear layers go through cuBLAS and
 * convolution through cuDNN (NHWC; each shape's algorithm picked by cuDNN's timed search, or its heuristics with
 * {@code -Donestep.cuda.convSearch=false}), both from
 * org.bytedeco:cuda, on this device's stream; when one does not load, the library's portable kernels run instead
 * (correct, not fast), and {@link #describe()} says why.
 *
 * <p>fp32 passes are fp32: their convolutions ask cuDNN for {@code CUDNN_FMA_MATH}. cuDNN's default math lets an fp32
 * convolution run on TF32 tensor cores, which drop the operands' low 13 mantissa bits by truncation; the bias that
 * truncation gives every product adds up through a U-Net's ~40 convolutions (an H100, 2026-11-26: relative error
 * 1.0e-2 against the cpu backend for the fmnist student's consistency pass, against 9.3e-4 for an fp16 pass, whose
 * rounding is unbiased). {@code -Donestep.cuda.tf32=true} allows TF32, as PyTorch's
 * {@code torch.backends.cudnn.allow_tf32} does by default, for speed where that error is acceptable (training).
 *
 * <p>Each new convolution shape is checked once against the portable kernel before cuDNN is trusted with it (a
 * layout mistake shows as an O(1) error; TF32 rounding stays below the 2e-2 bound); on a mismatch cuDNN is
 * dropped for that shape with one log line. The check needs a normal (uncaptured) run, which every captured pass
 * has first.
 *
 * <p>A convolution with a residual ({@link #conv2dResidual}, ResnetBlock2D's conv2 and its shortcut) runs as cuDNN's
 * {@code cudnnConvolutionBiasActivationForward}, {@code y = conv(x) + z + bias} with the identity activation, which
 * cuDNN allows only with {@code IMPLICIT_PRECOMP_GEMM}: one launch where the convolution and the add were two. It has
 * plans of its own, checked on first use against our portable kernel with the residual; where cuDNN refuses the
 * fusion or disagrees, that shape runs as the convolution and then the add.
 *
 * <p>Half precision ({@link Precision#FP16}, {@link Precision#BF16}): GEMMs through {@code cublasGemmEx} with fp16/bf16
 * operands and {@code CUBLAS_COMPUTE_32F}; convolutions with fp16/bf16 tensor and filter descriptors, an fp32
 * compute type and tensor-op math; each shape checked against the portable {@code _typed} kernel on first use,
 * as in fp32.
 *
 * <p>The development machines have no GPU: there it compiles, and shares every line except the cuBLAS/cuDNN calls
 * with the emulated device's path, which the tests run. On a lent H100 (2026-11-26) DeviceCheck passes all its
 * checks through it (bench/gpu/run.sh; bench/README.md has the numbers).
 */
public final class CudaDevice extends Device {
    /** Whether fp32 convolutions may run on TF32 tensor cores (see the class comment). */
    static final boolean TF32 = Boolean.getBoolean("onestep.cuda.tf32");
    private final cublasContext cublasHandle;
    private final String cublasMissing;
    private final cudnnContext cudnnHandle;
    private final String cudnnMissing;
    /** Per convolution shape: its descriptors, algorithms and verdicts, or null where cuDNN refused the shape. */
    private final Map<String, ConvPlan> convPlans = new HashMap<>();
    private final FloatPointer alphaHost = new FloatPointer(1);
    private final FloatPointer betaHost = new FloatPointer(1);
    /** cuBLASLt, for a linear with its bias and a residual in one GEMM ({@link #linearResidual}); null: not loaded. */
    private final cublasLtContext ltHandle;
    private final CUstream_st ltStream;
    /** Per (rows, in, out, type): cuBLASLt's descriptors and algorithm, or null where it has none for the shape. */
    private final Map<String, LtPlan> ltPlans = new HashMap<>();
    /** The most workspace a cuBLASLt algorithm may ask for (its heuristics then pick among those that fit). */
    static final long LT_MAX_WORKSPACE = 32L << 20;
    /** Whether new convolution plans rank cuDNN's algorithms by a timed search ({@link #searchConvolutions}). */
    private boolean search = !"false".equalsIgnoreCase(System.getProperty("onestep.cuda.convSearch"));
    /** The timed search skips algorithms that need more workspace than this (FFT variants can ask for GiBs). */
    static final long SEARCH_MAX_WORKSPACE = 256L << 20;
    /**
     * How much slower than the fastest plain algorithm the residual fusion's IMPLICIT_PRECOMP_GEMM may be and still
     * be used, and the transposed upsampling convolution than the convolution after the upsampling: about one small
     * kernel at batch 1 (an H100, 2026-11-26: the residual adds took ~3.3 us each).
     */
    static final float FUSED_SLACK_MS = 0.003f;
    CudaDevice(String library) {
        super(library);
        ownConvolutions(!"false".equalsIgnoreCase(System.getProperty("onestep.cuda.igemm")));
        splitKeys(!"false".equalsIgnoreCase(System.getProperty("onestep.cuda.splitKeys")));
        pipelinedAttention(!"false".equalsIgnoreCase(System.getProperty("onestep.cuda.pipelinedAttention")));
        slabGroupNorm(!"false".equalsIgnoreCase(System.getProperty("onestep.cuda.slabGroupNorm")));
        graphTiming(!"false".equalsIgnoreCase(System.getProperty("onestep.cuda.graphTiming")));
        clusterGroupNorm(!"false".equalsIgnoreCase(System.getProperty("onestep.cuda.clusterGroupNorm")));
        fuseAttentionResidual(!"false".equalsIgnoreCase(System.getProperty("onestep.cuda.fuseAttentionOut")));
        fuseResnetBlocks(!"false".equalsIgnoreCase(System.getProperty("onestep.cuda.fuseResnet")));
        if ("false".equalsIgnoreCase(System.getProperty("onestep.cuda.prefetchWeights"))) {
            weightPrefetch(false);
        }
        if (Boolean.getBoolean("onestep.cuda.pdl")) {
            try {
                programmaticLaunch(true);
            } catch (CudaException e) {
                System.err.println("cuda: -Donestep.cuda.pdl=true ignored: " + e.getMessage());
            }
        }
        cublasContext handle = null;
        String missing = null;
        try {
            Loader.load(cublas.class);
            handle = new cublasContext();
            int s = cublas.cublasCreate_v2(handle);
            if (s != 0) {
                missing = "cublasCreate failed with status " + s;
                handle = null;
            } else {
                cublas.cublasSetStream_v2(handle, new CUstream_st(address(stream())));
            }
        } catch (UnsatisfiedLinkError | NoClassDefFoundError e) {
            missing = "cuBLAS did not load (" + e.getMessage() + ")";
            handle = null;
        }
        this.cublasHandle = handle;
        this.cublasMissing = missing;
        cudnnContext dnn = null;
        String dnnMissing = null;
        try {
            Loader.load(cudnn.class);
            dnn = new cudnnContext();
            int s = cudnn.cudnnCreate(dnn);
            if (s != 0) {
                dnnMissing = "cudnnCreate failed: " + cudnn.cudnnGetErrorString(s).getString();
                dnn = null;
            } else {
                cudnn.cudnnSetStream(dnn, new CUstream_st(address(stream())));
            }
        } catch (UnsatisfiedLinkError | NoClassDefFoundError e) {
            dnnMissing = "cuDNN did not load (" + e.getMessage() + ")";
            dnn = null;
        }
        this.cudnnHandle = dnn;
        this.cudnnMissing = dnnMissing;
        cublasLtContext lt = null;
        if (cublasHandle != null) {
            try {
                lt = new cublasLtContext();
                if (cublas.cublasLtCreate(lt) != 0) {
                    lt = null;
                }
            } catch (UnsatisfiedLinkError | NoClassDefFoundError e) {
                lt = null;
            }
        }
        this.ltHandle = lt;
        this.ltStream = new CUstream_st(address(stream()));
        useChoicesFile();
    }

    @Override
    public String kind() {
        return "cuda";
    }

    /** The GPU's name and compute capability, the driver, and cuDNN's version, besides the library. */
    @Override
    protected String choiceIdentity() {
        String gpu;
        try (org.bytedeco.cuda.cudart.cudaDeviceProp prop = new org.bytedeco.cuda.cudart.cudaDeviceProp();
             org.bytedeco.javacpp.IntPointer v = new org.bytedeco.javacpp.IntPointer(1)) {
            int[] dev = new int[1];
            org.bytedeco.cuda.global.cudart.cudaGetDevice(dev);
            org.bytedeco.cuda.global.cudart.cudaGetDeviceProperties(prop, dev[0]);
            org.bytedeco.cuda.global.cudart.cudaDriverGetVersion(v);
            gpu = prop.name().getString().trim() + " (sm_" + prop.major() + prop.minor() + "), driver " + v.get();
        } catch (RuntimeException | LinkageError e) {
            gpu = "an unidentified GPU";
        }
        String dnn = cudnnHandle != null ? "cuDNN " + org.bytedeco.cuda.global.cudnn.cudnnGetVersion() : "no cuDNN";
        return super.choiceIdentity() + "; " + gpu + "; " + dnn;
    }

    @Override
    String denseRoute() {
        return (cublasHandle != null ? "cuBLAS GEMM" : "portable GEMM: " + cublasMissing) + "; "
                + (cudnnHandle != null ? "cuDNN convolution" + (TF32 ? " (fp32 on TF32 tensor cores)" : "")
                : "portable convolution: " + cudnnMissing);
    }

    private static Pointer address(long a) {
        return new Pointer() {
            {
                address = a;
            }
        };
    }

    private static FloatPointer floats(long a) {
        return new FloatPointer(address(a));
    }

    @Override
    public void gemm(long a, boolean transA, long b, boolean transB, long c, int m, int n, int k, float alpha, float beta,
                     Precision type, Supplier<String> what) {
        if (cublasHandle == null) {
            check(onestep_gemm_typed(a, transA ? 1 : 0, b, transB ? 1 : 0, c, m, n, k, alpha, beta, type.code,
                    stream()), "matmul", what);
            return;
        }
        // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands, keep the flags.
        alphaHost.put(0, alpha);
        betaHost.put(0, beta);
        int opA = transA ? cublas.CUBLAS_OP_T : cublas.CUBLAS_OP_N, opB = transB ? cublas.CUBLAS_OP_T : cublas.CUBLAS_OP_N;
        int s;
        if (type == Precision.FP32) {
            s = cublas.cublasSgemm_v2(cublasHandle, opB, opA, n, m, k, alphaHost, floats(b), transB ? k : n, floats(a),
                    transA ? m : k, betaHost, floats(c), n);
        } else {
            // 16-bit operands and result, fp32 accumulation and scalars (tensor cores).
            int t = type == Precision.FP16 ? org.bytedeco.cuda.global.cudart.CUDA_R_16F
                    : org.bytedeco.cuda.global.cudart.CUDA_R_16BF;
            s = cublas.cublasGemmEx(cublasHandle, opB, opA, n, m, k, alphaHost, address(b), t, transB ? k : n,
                    address(a), t, transA ? m : k, betaHost, address(c), t, n, cublas.CUBLAS_COMPUTE_32F,
                    cublas.CUBLAS_GEMM_DEFAULT);
        }
        if (s != 0) {
            throw new CudaException("matmul: cuBLAS " + (type == Precision.FP32 ? "Sgemm" : "GemmEx " + type.label())
                    + " failed with status " + s + " (m=" + m + ", n=" + n + ", k=" + k + ") [" + what.get() + "]",
                    ERROR_CUDA);
        }
    }

    @Override
    public void linear(long x, long w, long bias, long y, long rows, int in, int out, Precision type,
                       Supplier<String> what) {
        if (cublasHandle == null || rows > Integer.MAX_VALUE) {
            check(onestep_linear_typed(x, w, bias, y, rows, in, out, type.code, stream()), "linear", what);
            return;
        }
        gemm(x, false, w, false, y, (int) rows, out, in, 1f, 0f, type, what);
        if (bias != 0) {
            check(onestep_add_per_channel_typed(y, bias, y, 1, rows, out, type.code, stream()), "linear", what);
        }
    }

    /** A convolution shape's plan key; plans made with and without the timed search are kept apart. */
    @Override
    protected String incumbentTag() {
        return search ? "" : "heuristic,";  // the timed choices made against cuDNN's heuristic algorithms, apart
    }

    private String convKey(int n, int h, int wd, int cin, int kh, int kw, int cout, int stride, int padding,
                           Precision type) {
        return (search ? "" : "heuristic,") + n + "," + h + "," + wd + "," + cin + "," + kh + "," + kw + "," + cout + "," + stride + "," + padding
                + "," + type.label();
    }

    /**
     * The shape's cuDNN plan, created on first use; null without cuDNN or where cuDNN refuses the shape (remembered,
     * so a refused shape is not asked again). The forward and the backward share it; each keeps its own verdict.
     */
    private ConvPlan plan(String key, int n, int h, int wd, int cin, int kh, int kw, int cout, int stride, int padding,
                          Precision type) {
        if (cudnnHandle == null) {
            return null;
        }
        if (!convPlans.containsKey(key)) {
            convPlans.put(key, ConvPlan.create(cudnnHandle, n, h, wd, cin, kh, kw, cout, stride, padding, type,
                    search && !capturing(), null));
        }
        return convPlans.get(key);
    }

    @Override
    public boolean convUsesKrsc() {
        return cudnnHandle != null || ownsConvolutions();  // both cuDNN and our implicit GEMM read KRSC weights
    }

    @Override
    public boolean convBiasSeparate() {
        return cudnnHandle != null;  // cudnnConv adds the bias with a kernel of its own
    }

    @Override
    public boolean linearBiasSeparate(long rows) {
        return cublasHandle != null && rows <= Integer.MAX_VALUE;  // the GEMM route of linear(), then the bias
    }

    /**
     * Whether convolution plans made from now on pick cuDNN's algorithm by a timed search of every algorithm on the
     * shape ({@code cudnnFindConvolutionForwardAlgorithm}, once per shape, the way PyTorch's
     * {@code cudnn.benchmark} does) rather than by its heuristics; on by default, {@code
     * -Donestep.cuda.convSearch=false} turns it off. The plans of both kinds are kept, so switching back and forth
     * searches each shape once; captured graphs keep the algorithms they recorded until they are captured again.
     */
    public void searchConvolutions(boolean on) {
        search = on;
    }

    public boolean searchesConvolutions() {
        return search;
    }

    @Override
    public boolean linearFusesResidual() {
        return ltHandle != null;
    }

    /**
     * cuBLASLt's matmul with the bias epilogue and C = z, beta = 1: {@code y = x w + bias + z} in one kernel (cuBLAS's
     * GEMM cannot take a C other than its output). Row-major y (rows, out) = x (rows, in) w (in, out) is, column-major,
     * y^T (out, rows) = w^T (out, in) x^T (in, rows), with no transposes; the bias runs along y^T's rows, the output
     * channels. Checked once per shape against the portable kernel, as the convolutions are; where cuBLASLt has no
     * algorithm or disagrees, the GEMM and then the add.
     */
    @Override
    public void linearResidual(long x, long w, long bias, long z, long y, long rows, int in, int out, Precision type,
                               Supplier<String> what) {
        LtPlan plan = null;
        String key = rows + "," + in + "," + out + "," + type.label();
        if (ltHandle != null && bias != 0 && rows <= Integer.MAX_VALUE) {
            if (!ltPlans.containsKey(key)) {
                ltPlans.put(key, LtPlan.create(ltHandle, rows, in, out, type));
            }
            plan = ltPlans.get(key);
        }
        boolean verify = plan != null && plan.ok && !plan.verified;
        if (plan == null || !plan.ok || (verify && capturing())) {
            super.linearResidual(x, w, bias, z, y, rows, in, out, type, what);
            return;
        }
        // The workspace is the device's own, not the pass's scratch: a graph keeps the address it recorded, so it is
        // allocated once per plan (on the shape's first, checking, call, never inside a capture) and kept.
        if (plan.workspaceBytes > 0 && plan.workspace == 0) {
            plan.workspace = malloc(plan.workspaceBytes, () -> "cuBLASLt workspace " + key);
        }
        plan.biasPointer.put(0, bias);
        int s = cublas.cublasLtMatmulDescSetAttribute(plan.desc, cublas.CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                plan.biasPointer, 8);
        alphaHost.put(0, 1f);
        betaHost.put(0, 1f);
        if (s == 0) {
            s = cublas.cublasLtMatmul(ltHandle, plan.desc, alphaHost, address(w), plan.a, address(x), plan.b, betaHost,
                    address(z), plan.c, address(y), plan.c, plan.heuristic.algo(), address(plan.workspace),
                    plan.workspaceBytes, ltStream);
        }
        if (s != 0) {
            System.err.println("cuda: cuBLASLt's bias + residual matmul " + key + " failed with status " + s
                    + ": a GEMM and an add for this shape");
            plan.ok = false;
            super.linearResidual(x, w, bias, z, y, rows, in, out, type, what);
            return;
        }
        if (verify) {
            // (a Temporary waits for the device when it closes: only here, outside captures)
            try (Temporary tmp = new Temporary()) {
                long elems = rows * out;
                long ref = tmp.allocate(elems * type.bytes, "linearResidual check");
                check(onestep_linear_residual_typed(x, w, bias, z, ref, rows, in, out, type.code, stream()),
                        "linearResidual", what);
                plan.ok = plan.verified = agrees(y, ref, elems, type, tmp, what,
                        "cuBLASLt's bias + residual matmul " + key, "a GEMM and an add for this shape");
            }
        }
    }

    /** cuBLASLt's descriptors and chosen algorithm for one linear-with-residual shape. */
    private static final class LtPlan {
        cublasLtMatmulDescOpaque_t desc;
        /** w^T (out, in), x^T (in, rows), and z^T = y^T (out, rows), column-major. */
        cublasLtMatrixLayoutOpaque_t a, b, c;
        cublasLtMatmulHeuristicResult_t heuristic;
        long workspaceBytes;
        long workspace;
        final LongPointer biasPointer = new LongPointer(1);
        boolean ok = true;
        boolean verified;

        static LtPlan create(cublasLtContext lt, long rows, int in, int out, Precision type) {
            int t = switch (type) {
                case FP32 -> org.bytedeco.cuda.global.cudart.CUDA_R_32F;
                case FP16 -> org.bytedeco.cuda.global.cudart.CUDA_R_16F;
                case BF16 -> org.bytedeco.cuda.global.cudart.CUDA_R_16BF;
            };
            LtPlan p = new LtPlan();
            PointerPointer<Pointer> pp = new PointerPointer<>(1);
            // fp32 compute and scale for every storage type (fp32 exact: no TF32, as the cuBLAS GEMMs).
            if (cublas.cublasLtMatmulDescCreate(pp, cublas.CUBLAS_COMPUTE_32F,
                    org.bytedeco.cuda.global.cudart.CUDA_R_32F) != 0) {
                return null;
            }
            p.desc = new cublasLtMatmulDescOpaque_t(pp.get(0));
            // The bias epilogue, its vector in the storage type (the pass's biases are), not left to the default.
            IntPointer epilogue = new IntPointer(1).put(0, cublas.CUBLASLT_EPILOGUE_BIAS);
            IntPointer biasType = new IntPointer(1).put(0, t);
            if (cublas.cublasLtMatmulDescSetAttribute(p.desc, cublas.CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue, 4) != 0
                    || cublas.cublasLtMatmulDescSetAttribute(p.desc, cublas.CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                    biasType, 4) != 0) {
                return null;
            }
            p.a = layout(pp, t, out, in);
            p.b = layout(pp, t, in, rows);
            p.c = layout(pp, t, out, rows);
            if (p.a == null || p.b == null || p.c == null || cublas.cublasLtMatmulPreferenceCreate(pp) != 0) {
                return null;
            }
            cublasLtMatmulPreferenceOpaque_t pref = new cublasLtMatmulPreferenceOpaque_t(pp.get(0));
            LongPointer max = new LongPointer(1).put(0, LT_MAX_WORKSPACE);
            IntPointer found = new IntPointer(1);
            p.heuristic = new cublasLtMatmulHeuristicResult_t(1);
            if (cublas.cublasLtMatmulPreferenceSetAttribute(pref, cublas.CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, max,
                    8) != 0 || cublas.cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.a, p.b, p.c, p.c, pref, 1,
                    p.heuristic, found) != 0 || found.get() == 0 || p.heuristic.state() != 0) {
                return null;
            }
            p.workspaceBytes = p.heuristic.workspaceSize();
            return p;
        }

        /** A column-major (rows, cols) matrix of {@code type}, leading dimension rows; null if refused. */
        private static cublasLtMatrixLayoutOpaque_t layout(PointerPointer<Pointer> pp, int type, long rows, long cols) {
            if (cublas.cublasLtMatrixLayoutCreate(pp, type, rows, cols, rows) != 0) {
                return null;
            }
            return new cublasLtMatrixLayoutOpaque_t(pp.get(0));
        }
    }

    @Override
    public boolean convFusesResidual() {
        return cudnnHandle != null;
    }

    /** conv2dResidual by cuDNN's conv + bias + z fusion where it holds, else as a convolution and an add. */
    @Override
    protected void libraryConv2dResidual(long x, long w, long wKrsc, long bias, long z, long y, int n, int h, int wd,
                                     int cin, int kh, int kw, int cout, int stride, int padding, Precision type,
                                     Scratch scratch, Supplier<String> what) {
        String plainKey = convKey(n, h, wd, cin, kh, kw, cout, stride, padding, type), key = "residual," + plainKey;
        ConvPlan plan = null;
        if (cudnnHandle != null && bias != 0) {
            if (!convPlans.containsKey(key)) {
                // Decided from the plain plan's ranking of the shape (searched once, for both).
                ConvPlan ranking = plan(plainKey, n, h, wd, cin, kh, kw, cout, stride, padding, type);
                convPlans.put(key, ranking == null ? null : ConvPlan.create(cudnnHandle, n, h, wd, cin, kh, kw, cout,
                        stride, padding, type, false, ranking));
            }
            plan = convPlans.get(key);
        }
        boolean verify = plan != null && plan.forwardOk && !plan.verified;
        if (plan == null || !plan.forwardOk || (verify && capturing())) {
            super.libraryConv2dResidual(x, w, wKrsc, bias, z, y, n, h, wd, cin, kh, kw, cout, stride, padding, type, scratch,
                    what);
            return;
        }
        long rows = (long) kh * kw * cin;
        long wt = wKrsc;
        if (wt == 0) {
            wt = scratch.allocate(rows * cout * type.bytes, "conv2dResidual KRSC weights");
            transpose(w, wt, rows, cout, type, what);
        }
        long ws = plan.workspaceBytes == 0 ? 0
                : scratch.allocate(plan.workspaceBytes, "conv2dResidual cuDNN workspace");
        alphaHost.put(0, 1f);
        betaHost.put(0, z == 0 ? 0f : 1f);  // alpha2, z's factor (no residual: 0, and z = y, which cuDNN allows)
        int s = cudnn.cudnnConvolutionBiasActivationForward(cudnnHandle, alphaHost, plan.x, address(x), plan.w,
                address(wt), plan.conv, plan.algo, address(ws), plan.workspaceBytes, betaHost, plan.y,
                address(z == 0 ? y : z), plan.bias, address(bias), plan.activation, plan.y, address(y));
        if (s != 0) {
            // Refused at the call (before any launch): this shape runs unfused from now on.
            System.err.println("cuda: cuDNN's conv + bias + residual fusion " + key + " failed ("
                    + cudnn.cudnnGetErrorString(s).getString() + "): a convolution and an add for this shape");
            plan.forwardOk = false;
            super.libraryConv2dResidual(x, w, wKrsc, bias, z, y, n, h, wd, cin, kh, kw, cout, stride, padding, type, scratch,
                    what);
            return;
        }
        if (verify) {
            try (Temporary tmp = new Temporary()) {
                long outElems = (long) n * plan.ho * plan.wo * cout;
                long ref = tmp.allocate(outElems * type.bytes, "conv2dResidual check");
                portableConv(x, w, bias, z, ref, n, h, wd, cin, kh, kw, cout, stride, padding, type, what);
                plan.forwardOk = plan.verified = agrees(y, ref, outElems, type, tmp, what,
                        "cuDNN's conv + bias + residual fusion " + key, "a convolution and an add for this shape");
            }
        }
    }

    /** conv2d by cuDNN's plan, or the portable kernel where cuDNN has none or disagreed (checked on first use). */
    @Override
    protected void libraryConv2d(long x, long w, long wKrsc, long bias, long y, int n, int h, int wd, int cin, int kh,
                                 int kw, int cout, int stride, int padding, Precision type, Scratch scratch,
                                 Supplier<String> what) {
        String key = convKey(n, h, wd, cin, kh, kw, cout, stride, padding, type);
        ConvPlan plan = plan(key, n, h, wd, cin, kh, kw, cout, stride, padding, type);
        boolean verify = plan != null && plan.forwardOk && !plan.verified;
        if (plan == null || !plan.forwardOk || (verify && capturing())) {
            portableConv(x, w, bias, 0, y, n, h, wd, cin, kh, kw, cout, stride, padding, type, what);
            return;
        }
        cudnnConv(plan, x, w, wKrsc, bias, y, n, h, wd, cin, kh, kw, cout, type, scratch, what);
        if (verify) {
            // The check's buffers are allocated here and freed, not taken from the pass's scratch: only a shape's
            // first use makes them, so a pass's later runs (its warm-up and capture) would not, and its
            // activation plan would not repeat.
            try (Temporary tmp = new Temporary()) {
                long outElems = (long) n * plan.ho * plan.wo * cout;
                long ref = tmp.allocate(outElems * type.bytes, "conv2d check");
                portableConv(x, w, bias, 0, ref, n, h, wd, cin, kh, kw, cout, stride, padding, type, what);
                plan.forwardOk = plan.verified = agrees(y, ref, outElems, type, tmp, what,
                        "cuDNN convolution " + key, "using the portable kernel for this shape");
            }
        }
    }

    /**
     * cuDNN's backward-data and backward-filter on the forward's descriptors. Our HWIO weights are cuDNN's KRSC
     * transposed: w goes in transposed, and the filter gradient comes out as KRSC, is transposed back and added to
     * dw (ours accumulates). The first use of a shape also runs the portable kernels and compares (as the forward
     * does); cuDNN is dropped for that shape if they disagree.
     */
    @Override
    public void conv2dBackward(long x, long w, long dy, long dx, long dw, int n, int h, int wd, int cin, int kh, int kw,
                               int cout, int stride, int padding, Scratch scratch, Supplier<String> what) {
        String key = convKey(n, h, wd, cin, kh, kw, cout, stride, padding, Precision.FP32);
        ConvPlan plan = plan(key, n, h, wd, cin, kh, kw, cout, stride, padding, Precision.FP32);
        if (plan != null && !plan.backwardPlanned) {
            plan.planBackward(cudnnHandle);
        }
        boolean verify = plan != null && plan.backwardOk && !plan.backwardVerified;
        if (plan == null || !plan.backwardOk || (verify && capturing())) {
            super.conv2dBackward(x, w, dy, dx, dw, n, h, wd, cin, kh, kw, cout, stride, padding, scratch, what);
            return;
        }
        long rows = (long) kh * kw * cin, wFloats = rows * cout, xFloats = (long) n * h * wd * cin;
        long ws = Math.max(plan.bwdDataBytes, plan.bwdFilterBytes);
        long work = ws == 0 ? 0 : scratch.allocate(ws, "conv2dBackward cuDNN workspace");
        alphaHost.put(0, 1f);
        betaHost.put(0, 0f);
        long dxOut = dx == 0 ? 0 : verify ? scratch.allocate(xFloats * Float.BYTES, "conv2dBackward cuDNN dx") : dx;
        if (dx != 0) {
            long wt = scratch.allocate(wFloats * Float.BYTES, "conv2dBackward KRSC weights");
            check(onestep_split_heads(w, wt, 1, (int) rows, cout, 1, stream()), "conv2dBackward", what);
            cudnnCheck(cudnn.cudnnConvolutionBackwardData(cudnnHandle, alphaHost, plan.w, address(wt), plan.y,
                    address(dy), plan.conv, plan.bwdDataAlgo, address(work), plan.bwdDataBytes, betaHost, plan.x,
                    address(dxOut)), "cudnnConvolutionBackwardData", what);
        }
        long dwPart = 0;
        if (dw != 0) {
            long krsc = scratch.allocate(wFloats * Float.BYTES, "conv2dBackward KRSC weight gradient");
            dwPart = scratch.allocate(wFloats * Float.BYTES, "conv2dBackward HWIO weight gradient");
            cudnnCheck(cudnn.cudnnConvolutionBackwardFilter(cudnnHandle, alphaHost, plan.x, address(x), plan.y,
                    address(dy), plan.conv, plan.bwdFilterAlgo, address(work), plan.bwdFilterBytes, betaHost, plan.w,
                    address(krsc)), "cudnnConvolutionBackwardFilter", what);
            check(onestep_split_heads(krsc, dwPart, 1, cout, (int) rows, 1, stream()), "conv2dBackward", what);
        }
        if (verify) {
            // The portable kernels' answers: dx assigned into its own buffer, dw accumulated onto zeros.
            long refDx = dx == 0 ? 0 : scratch.allocate(xFloats * Float.BYTES, "conv2dBackward check dx");
            long refDw = dw == 0 ? 0 : scratch.allocate(wFloats * Float.BYTES, "conv2dBackward check dw");
            if (refDw != 0) {
                check(onestep_memset(refDw, 0, wFloats * Float.BYTES, stream()), "conv2dBackward", what);
            }
            super.conv2dBackward(x, w, dy, refDx, refDw, n, h, wd, cin, kh, kw, cout, stride, padding, scratch, what);
            double err = Math.max(dx == 0 ? 0 : relativeError(dxOut, refDx, xFloats, Precision.FP32, scratch, what),
                    dw == 0 ? 0 : relativeError(dwPart, refDw, wFloats, Precision.FP32, scratch, what));
            if (err > 2e-2) {
                System.err.println("cuda: cuDNN convolution backward " + key + " disagrees with the portable kernels"
                        + " (relative error " + err + "): using the portable kernels for this shape");
                plan.backwardOk = false;
                dxOut = refDx;
                dwPart = refDw;
            } else {
                plan.backwardVerified = true;
            }
            if (dx != 0) {
                copy(dx, dxOut, xFloats * Float.BYTES, what);
            }
        }
        if (dw != 0) {
            check(onestep_axpy(1f, dwPart, dw, wFloats, stream()), "conv2dBackward", what);
        }
    }

    private static void cudnnCheck(int status, String call, Supplier<String> what) {
        if (status != 0) {
            throw new CudaException("conv2dBackward: " + call + " failed: " + cudnn.cudnnGetErrorString(status).getString()
                    + " [" + what.get() + "]", ERROR_CUDA);
        }
    }

    private void cudnnConv(ConvPlan p, long x, long w, long wKrsc, long bias, long y, int n, int h, int wd, int cin,
                           int kh, int kw, int cout, Precision type, Scratch scratch, Supplier<String> what) {
        // Our weights are HWIO, i.e. a (KH*KW*Cin, Cout) matrix; cuDNN's NHWC filter is KRSC = its transpose. A
        // registered parameter comes with its transposed copy, kept by the backend; anything else is transposed
        // here, into scratch (a kernel and a read and write of the weights per call).
        long rows = (long) kh * kw * cin;
        long wt = wKrsc;
        if (wt == 0) {
            wt = scratch.allocate(rows * cout * type.bytes, "conv2d KRSC weights");
            transpose(w, wt, rows, cout, type, what);
        }
        long ws = p.workspaceBytes == 0 ? 0 : scratch.allocate(p.workspaceBytes, "conv2d cuDNN workspace");
        alphaHost.put(0, 1f);
        betaHost.put(0, 0f);
        int s = cudnn.cudnnConvolutionForward(cudnnHandle, alphaHost, p.x, address(x), p.w, address(wt), p.conv, p.algo,
                address(ws), p.workspaceBytes, betaHost, p.y, address(y));
        if (s != 0) {
            throw new CudaException("conv2d: cudnnConvolutionForward failed: " + cudnn.cudnnGetErrorString(s).getString()
                    + " [" + what.get() + "]", ERROR_CUDA);
        }
        if (bias != 0) {
            check(onestep_add_per_channel_typed(y, bias, y, 1, (long) n * p.ho * p.wo, cout, type.code, stream()),
                    "conv2d", what);
        }
    }

    /** cuDNN descriptors and the chosen algorithm for one convolution shape. */
    private static final class ConvPlan {
        cudnnTensorStruct x;
        cudnnTensorStruct y;
        cudnnFilterStruct w;
        cudnnConvolutionStruct conv;
        /** The fused plans' (conv + bias + residual) bias descriptor (1, Cout, 1, 1) and identity activation. */
        cudnnTensorStruct bias;
        cudnnActivationStruct activation;
        int algo;
        long workspaceBytes;
        /** Its ranking: timed (else heuristic), and the fastest's and IMPLICIT_PRECOMP_GEMM's milliseconds. */
        boolean timed;
        float bestMs = Float.POSITIVE_INFINITY;
        float precompMs = Float.NaN;
        int ho;
        int wo;
        boolean verified;
        /** False once cuDNN's forward disagreed with the portable kernel for this shape. */
        boolean forwardOk = true;
        /** The backward algorithms (chosen on first use of the backward) and whether cuDNN may run it. */
        boolean backwardPlanned;
        boolean backwardOk;
        boolean backwardVerified;
        int bwdDataAlgo;
        long bwdDataBytes;
        int bwdFilterAlgo;
        long bwdFilterBytes;

        /** Picks cuDNN's first working backward-data and backward-filter algorithms; none: the portable kernels. */
        void planBackward(cudnnContext handle) {
            backwardPlanned = true;
            IntPointer count = new IntPointer(1);
            SizeTPointer bytes = new SizeTPointer(1);
            cudnnConvolutionBwdDataAlgoPerf_t dPerf = new cudnnConvolutionBwdDataAlgoPerf_t(8);
            if (cudnn.cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, w, y, conv, x, 8, count, dPerf) != 0) {
                return;
            }
            boolean found = false;
            for (int i = 0; i < count.get() && !found; i++) {
                cudnnConvolutionBwdDataAlgoPerf_t r = dPerf.getPointer(i);
                if (r.status() == 0 && cudnn.cudnnGetConvolutionBackwardDataWorkspaceSize(handle, w, y, conv, x,
                        r.algo(), bytes) == 0) {
                    bwdDataAlgo = r.algo();
                    bwdDataBytes = bytes.get();
                    found = true;
                }
            }
            if (!found) {
                return;
            }
            cudnnConvolutionBwdFilterAlgoPerf_t fPerf = new cudnnConvolutionBwdFilterAlgoPerf_t(8);
            if (cudnn.cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle, x, y, conv, w, 8, count, fPerf) != 0) {
                return;
            }
            for (int i = 0; i < count.get(); i++) {
                cudnnConvolutionBwdFilterAlgoPerf_t r = fPerf.getPointer(i);
                if (r.status() == 0 && cudnn.cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, x, y, conv, w,
                        r.algo(), bytes) == 0) {
                    bwdFilterAlgo = r.algo();
                    bwdFilterBytes = bytes.get();
                    backwardOk = true;
                    return;
                }
            }
        }

        /**
         * The plan, or null when cuDNN refuses the shape (the portable kernel runs it then). {@code search}: rank the
         * algorithms by cuDNN's timed search, not its heuristics (see {@link #searchConvolutions}). With
         * {@code ranking}, the same shape's plain plan: a plan for cudnnConvolutionBiasActivationForward with the
         * identity activation, whose only algorithm is IMPLICIT_PRECOMP_GEMM (cuDNN's rule for that activation),
         * decided from that plan's ranking rather than a search of its own.
         */
        static ConvPlan create(cudnnContext handle, int n, int h, int wd, int cin, int kh, int kw, int cout, int stride,
                               int padding, Precision type, boolean search, ConvPlan ranking) {
            ConvPlan p = describe(n, h, wd, cin, kh, kw, cout, stride, padding, type);
            if (p == null) {
                return null;
            }
            int nhwc = cudnn.CUDNN_TENSOR_NHWC, d = dataType(type);
            SizeTPointer bytes = new SizeTPointer(1);
            if (ranking != null) {
                // The fusion runs IMPLICIT_PRECOMP_GEMM. Timed, it must not cost more than the add it saves over the
                // fastest plain convolution; else null: the shape runs as that convolution and the add.
                if (ranking.timed && !(ranking.precompMs <= ranking.bestMs + FUSED_SLACK_MS)) {
                    return null;
                }
                p.bias = new cudnnTensorStruct();
                p.activation = new cudnnActivationStruct();
                p.algo = cudnn.CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
                if (cudnn.cudnnCreateTensorDescriptor(p.bias) != 0
                        || cudnn.cudnnSetTensor4dDescriptor(p.bias, nhwc, d, 1, cout, 1, 1) != 0
                        || cudnn.cudnnCreateActivationDescriptor(p.activation) != 0
                        || cudnn.cudnnSetActivationDescriptor(p.activation, cudnn.CUDNN_ACTIVATION_IDENTITY,
                                cudnn.CUDNN_NOT_PROPAGATE_NAN, 0.0) != 0
                        || cudnn.cudnnGetConvolutionForwardWorkspaceSize(handle, p.x, p.w, p.conv, p.y, p.algo,
                                bytes) != 0) {
                    return null;
                }
                p.workspaceBytes = bytes.get();
                return p;
            }
            // The candidates, best first: with search, cuDNN's timed search (each algorithm run once on this shape,
            // as PyTorch's cudnn.benchmark does; its heuristics' first pick is often not the fastest at batch 1);
            // without it, or where the search fails, its heuristics.
            cudnnConvolutionFwdAlgoPerf_t perf = new cudnnConvolutionFwdAlgoPerf_t(8);
            IntPointer count = new IntPointer(1);
            p.timed = search
                    && cudnn.cudnnFindConvolutionForwardAlgorithm(handle, p.x, p.w, p.conv, p.y, 8, count, perf) == 0;
            if (!p.timed && cudnn.cudnnGetConvolutionForwardAlgorithm_v7(handle, p.x, p.w, p.conv, p.y, 8, count, perf)
                    != 0) {
                return null;
            }
            boolean exact = type == Precision.FP32 && !TF32;
            int best = -1;
            for (int i = 0; i < count.get(); i++) {
                cudnnConvolutionFwdAlgoPerf_t r = perf.getPointer(i);
                boolean tensorOps = r.mathType() == cudnn.CUDNN_TENSOR_OP_MATH
                        || r.mathType() == cudnn.CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
                if (r.status() != 0 || (p.timed && r.memory() > SEARCH_MAX_WORKSPACE) || (exact && tensorOps)) {
                    continue;
                }
                if (best < 0) {
                    best = r.algo();
                    p.bestMs = r.time();
                }
                if (r.algo() == cudnn.CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM && Float.isNaN(p.precompMs)) {
                    p.precompMs = r.time();
                }
            }
            if (best < 0) {
                return null;
            }
            p.algo = best;
            if (cudnn.cudnnGetConvolutionForwardWorkspaceSize(handle, p.x, p.w, p.conv, p.y, p.algo, bytes) != 0) {
                return null;
            }
            p.workspaceBytes = bytes.get();
            return p;
        }
    }

    /**
     * The descriptors of the convolution x (n, cin, h, wd) * w (cout, cin, kh, kw) -> y, all NHWC in the storage type
     * with fp32 accumulation; no algorithm yet. Null when cuDNN refuses them.
     */
    private static ConvPlan describe(int n, int h, int wd, int cin, int kh, int kw, int cout, int stride, int padding,
                                     Precision type) {
        ConvPlan p = new ConvPlan();
        p.ho = (h + 2 * padding - kh) / stride + 1;
        p.wo = (wd + 2 * padding - kw) / stride + 1;
        p.x = new cudnnTensorStruct();
        p.y = new cudnnTensorStruct();
        p.w = new cudnnFilterStruct();
        p.conv = new cudnnConvolutionStruct();
        int nhwc = cudnn.CUDNN_TENSOR_NHWC, d = dataType(type);
        int s = cudnn.cudnnCreateTensorDescriptor(p.x);
        s |= cudnn.cudnnCreateTensorDescriptor(p.y);
        s |= cudnn.cudnnCreateFilterDescriptor(p.w);
        s |= cudnn.cudnnCreateConvolutionDescriptor(p.conv);
        s |= cudnn.cudnnSetTensor4dDescriptor(p.x, nhwc, d, n, cin, h, wd);
        s |= cudnn.cudnnSetTensor4dDescriptor(p.y, nhwc, d, n, cout, p.ho, p.wo);
        s |= cudnn.cudnnSetFilter4dDescriptor(p.w, d, nhwc, cout, cin, kh, kw);
        s |= cudnn.cudnnSetConvolution2dDescriptor(p.conv, padding, padding, stride, stride, 1, 1,
                cudnn.CUDNN_CROSS_CORRELATION, cudnn.CUDNN_DATA_FLOAT);
        s |= cudnn.cudnnSetConvolutionMathType(p.conv, type != Precision.FP32 ? cudnn.CUDNN_TENSOR_OP_MATH
                : TF32 ? cudnn.CUDNN_DEFAULT_MATH : cudnn.CUDNN_FMA_MATH);
        return s == 0 ? p : null;
    }

    /** Storage in the pass's type (accumulation is fp32, the convolutions' compute type, for every type). */
    private static int dataType(Precision type) {
        return switch (type) {
            case FP32 -> cudnn.CUDNN_DATA_FLOAT;
            case FP16 -> cudnn.CUDNN_DATA_HALF;
            case BF16 -> cudnn.CUDNN_DATA_BFLOAT16;
        };
    }

    /**
     * The plan of the upsampling convolution {@link #upsampleConv} of x (n, h, wd, cin) into (n, 2h, 2wd, cout): the
     * data gradient of the forward convolution (n, 2h, 2wd, cout) * (cin, cout, 4, 4), stride 2, padding 1 ->
     * (n, h, wd, cin), i.e. PyTorch's ConvTranspose2d route. Its algorithm is the first of cuDNN's timed search
     * (with {@code search}; else its heuristics) within the workspace bound. Null when cuDNN refuses the shape.
     */
    private static ConvPlan createTransposed(cudnnContext handle, int n, int h, int wd, int cin, int cout,
                                             Precision type, boolean search) {
        ConvPlan p = describe(n, 2 * h, 2 * wd, cout, 4, 4, cin, 2, 1, type);
        if (p == null || p.ho != h || p.wo != wd) {
            return null;
        }
        cudnnConvolutionBwdDataAlgoPerf_t perf = new cudnnConvolutionBwdDataAlgoPerf_t(8);
        IntPointer count = new IntPointer(1);
        p.timed = search && cudnn.cudnnFindConvolutionBackwardDataAlgorithm(handle, p.w, p.y, p.conv, p.x, 8, count,
                perf) == 0;
        if (!p.timed && cudnn.cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, p.w, p.y, p.conv, p.x, 8, count,
                perf) != 0) {
            return null;
        }
        boolean exact = type == Precision.FP32 && !TF32;
        SizeTPointer bytes = new SizeTPointer(1);
        for (int i = 0; i < count.get(); i++) {
            cudnnConvolutionBwdDataAlgoPerf_t r = perf.getPointer(i);
            boolean tensorOps = r.mathType() == cudnn.CUDNN_TENSOR_OP_MATH
                    || r.mathType() == cudnn.CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
            if (r.status() != 0 || r.memory() > SEARCH_MAX_WORKSPACE || (exact && tensorOps)
                    || cudnn.cudnnGetConvolutionBackwardDataWorkspaceSize(handle, p.w, p.y, p.conv, p.x, r.algo(),
                    bytes) != 0) {
                continue;
            }
            p.bwdDataAlgo = r.algo();
            p.bwdDataBytes = bytes.get();
            p.bestMs = r.time();
            return p;
        }
        return null;
    }

    /**
     * cuDNN's backward-data convolution with the sub-pixel kernel k (already cuDNN's KRSC filter), then the bias
     * kernel. Checked on a shape's first use against the portable kernel, as the convolutions are; a shape cuDNN
     * refuses, gets wrong, or (timed) runs slower than the upsampled convolution plus {@link #FUSED_SLACK_MS} runs
     * as the upsampling and cuDNN's forward convolution from then on, with one log line.
     * Without cuDNN: the portable kernel. This is the incumbent that our implicit GEMM, gathering the upsampled
     * pixels from x ({@link #igemmUpsampleConv}), competes with in {@link #upsampleConv}.
     */
    @Override
    protected void libraryUpsampleConv(long x, long w, long wKrsc, long k, long bias, long y, int n, int h, int wd,
                                     int cin, int cout, Precision type, Scratch scratch, Supplier<String> what) {
        if (cudnnHandle == null) {
            super.libraryUpsampleConv(x, w, wKrsc, k, bias, y, n, h, wd, cin, cout, type, scratch, what);
            return;
        }
        String key = "upsampling," + convKey(n, h, wd, cin, 3, 3, cout, 1, 1, type);
        if (!convPlans.containsKey(key)) {
            ConvPlan made = createTransposed(cudnnHandle, n, h, wd, cin, cout, type, search && !capturing());
            // Both routes timed: the transposed convolution must not cost more than the convolution of the upsampled
            // tensor plus about the upsampling kernel it saves, else the shape runs as those two.
            ConvPlan plain = plan(convKey(n, 2 * h, 2 * wd, cin, 3, 3, cout, 1, 1, type), n, 2 * h, 2 * wd, cin, 3, 3,
                    cout, 1, 1, type);
            if (made == null) {
                System.err.println("cuda: cuDNN has no transposed convolution for " + key
                        + ": the upsampling and a convolution for this shape");
            } else if (made.timed && plain != null && plain.timed && made.bestMs > plain.bestMs + FUSED_SLACK_MS) {
                System.err.printf(java.util.Locale.ROOT, "cuda: cuDNN's transposed convolution %s takes %.1f us, the "
                        + "convolution after the upsampling %.1f us: the upsampling and a convolution for this shape%n",
                        key, made.bestMs * 1e3, plain.bestMs * 1e3);
                made = null;
            }
            convPlans.put(key, made);
        }
        ConvPlan plan = convPlans.get(key);
        boolean verify = plan != null && plan.forwardOk && !plan.verified;
        if (plan == null || !plan.forwardOk || (verify && capturing())) {
            upsampleThenConv(x, w, wKrsc, bias, y, n, h, wd, cin, cout, type, scratch, what);
            return;
        }
        long ws = plan.bwdDataBytes == 0 ? 0 : scratch.allocate(plan.bwdDataBytes, "upsampleConv2d cuDNN workspace");
        alphaHost.put(0, 1f);
        betaHost.put(0, 0f);
        int s = cudnn.cudnnConvolutionBackwardData(cudnnHandle, alphaHost, plan.w, address(k), plan.y, address(x),
                plan.conv, plan.bwdDataAlgo, address(ws), plan.bwdDataBytes, betaHost, plan.x, address(y));
        long outElems = 4L * n * h * wd * cout;
        if (s != 0) {
            System.err.println("cuda: cuDNN's transposed convolution " + key + " failed ("
                    + cudnn.cudnnGetErrorString(s).getString() + "): the upsampling and a convolution for this shape");
            plan.forwardOk = false;
            upsampleThenConv(x, w, wKrsc, bias, y, n, h, wd, cin, cout, type, scratch, what);
            return;
        }
        if (bias != 0) {
            check(onestep_add_per_channel_typed(y, bias, y, 1, outElems / cout, cout, type.code, stream()),
                    "upsampleConv2d", what);
        }
        if (verify) {
            try (Temporary tmp = new Temporary()) {
                long ref = tmp.allocate(outElems * type.bytes, "upsampleConv2d check");
                super.libraryUpsampleConv(x, w, wKrsc, k, bias, ref, n, h, wd, cin, cout, type, tmp, what);
                plan.forwardOk = plan.verified = agrees(y, ref, outElems, type, tmp, what,
                        "cuDNN's transposed convolution " + key, "the upsampling and a convolution for this shape");
            }
        }
    }

    @Override
    public void close() {
        for (LtPlan p : ltPlans.values()) {
            if (p != null && p.workspace != 0) {
                free(p.workspace);
            }
        }
        if (ltHandle != null) {
            cublas.cublasLtDestroy(ltHandle);
        }
        if (cublasHandle != null) {
            cublas.cublasDestroy_v2(cublasHandle);
        }
        if (cudnnHandle != null) {
            cudnn.cudnnDestroy(cudnnHandle);
        }
        alphaHost.close();
        betaHost.close();
        super.close();
    }
}
