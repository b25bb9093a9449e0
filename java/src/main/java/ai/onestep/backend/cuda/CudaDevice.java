package ai.onestep.backend.cuda;

import static ai.onestep.kernels.OnestepKernels.*;

import java.util.function.Supplier;
import org.bytedeco.cuda.cublas.cublasContext;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.global.cublas;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;

/**
 * A real GPU through the nvcc-built {@code libonestep_kernels.so}. GEMM and linear layers go through cuBLAS
 * (org.bytedeco:cuda) when its native library loads, on this device's stream; otherwise, and for convolution, the
 * library's portable kernels run (correct, not fast). Why cuBLAS did not load is said once, in
 * {@link #describe()}.
 *
 * <p>Never run on this project's development machines (no GPU there); it compiles and shares every line except
 * the cuBLAS calls with the emulated device's path, which the tests run.
 */
public final class CudaDevice extends Device {
    private final cublasContext cublasHandle;
    private final String cublasMissing;
    private final FloatPointer alphaHost = new FloatPointer(1);
    private final FloatPointer betaHost = new FloatPointer(1);

    CudaDevice(String library) {
        super(library);
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
    }

    @Override
    public String kind() {
        return "cuda";
    }

    @Override
    String denseRoute() {
        return cublasHandle != null ? "cuBLAS GEMM, portable convolution kernel"
                : "portable kernels: " + cublasMissing;
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
                     Supplier<String> what) {
        if (cublasHandle == null) {
            check(onestep_gemm(a, transA ? 1 : 0, b, transB ? 1 : 0, c, m, n, k, alpha, beta, stream()), "matmul", what);
            return;
        }
        // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands, keep the flags.
        alphaHost.put(0, alpha);
        betaHost.put(0, beta);
        int s = cublas.cublasSgemm_v2(cublasHandle, transB ? cublas.CUBLAS_OP_T : cublas.CUBLAS_OP_N,
                transA ? cublas.CUBLAS_OP_T : cublas.CUBLAS_OP_N, n, m, k, alphaHost, floats(b),
                transB ? k : n, floats(a), transA ? m : k, betaHost, floats(c), n);
        if (s != 0) {
            throw new CudaException("matmul: cublasSgemm failed with status " + s + " (m=" + m + ", n=" + n + ", k="
                    + k + ") [" + what.get() + "]", ERROR_CUDA);
        }
    }

    @Override
    public void linear(long x, long w, long bias, long y, long rows, int in, int out, Supplier<String> what) {
        if (cublasHandle == null || rows > Integer.MAX_VALUE) {
            check(onestep_linear(x, w, bias, y, rows, in, out, stream()), "linear", what);
            return;
        }
        gemm(x, false, w, false, y, (int) rows, out, in, 1f, 0f, what);
        if (bias != 0) {
            check(onestep_add_per_channel(y, bias, y, 1, rows, out, stream()), "linear", what);
        }
    }

    @Override
    public void conv2d(long x, long w, long bias, long y, int n, int h, int wd, int cin, int kh, int kw, int cout,
                       int stride, int padding, Supplier<String> what) {
        check(onestep_conv2d_nhwc(x, w, bias, y, n, h, wd, cin, kh, kw, cout, stride, padding, stream()), "conv2d",
                what);
    }

    @Override
    public void close() {
        if (cublasHandle != null) {
            cublas.cublasDestroy_v2(cublasHandle);
        }
        alphaHost.close();
        betaHost.close();
        super.close();
    }
}
