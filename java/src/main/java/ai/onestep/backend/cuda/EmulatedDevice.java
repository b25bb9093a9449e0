package ai.onestep.backend.cuda;

import static ai.onestep.kernels.OnestepKernels.*;

import java.util.function.Supplier;

/**
 * The device of the emulated library (kernels/emu, built by cmake with the host compiler): the same kernel sources
 * as the GPU build, run on the CPU. GEMM, linear and convolution use the library's portable kernels (cuBLAS and
 * cuDNN cannot be emulated). Slow, and meant for tests: it checks the backend's logic (arena, launch sequence,
 * graph capture, errors) and our kernels' numerics without a GPU.
 */
public final class EmulatedDevice extends Device {
    EmulatedDevice(String library) {
        super(library);
    }

    @Override
    public String kind() {
        return "emulated";
    }

    @Override
    String denseRoute() {
        return "portable kernels";
    }

    @Override
    public void gemm(long a, boolean transA, long b, boolean transB, long c, int m, int n, int k, float alpha, float beta,
                     Precision type, Supplier<String> what) {
        check(onestep_gemm_typed(a, transA ? 1 : 0, b, transB ? 1 : 0, c, m, n, k, alpha, beta, type.code, stream()),
                "matmul", what);
    }

    @Override
    public void linear(long x, long w, long bias, long y, long rows, int in, int out, Precision type,
                       Supplier<String> what) {
        check(onestep_linear_typed(x, w, bias, y, rows, in, out, type.code, stream()), "linear", what);
    }

    @Override
    public void conv2d(long x, long w, long bias, long y, int n, int h, int wd, int cin, int kh, int kw, int cout,
                       int stride, int padding, Precision type, Scratch scratch, Supplier<String> what) {
        check(onestep_conv2d_nhwc_typed(x, w, bias, y, n, h, wd, cin, kh, kw, cout, stride, padding, type.code,
                stream()), "conv2d", what);
    }
}
