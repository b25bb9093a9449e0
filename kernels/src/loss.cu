// loss.cu: the reductions training needs besides the layers: per-sample squared distances (the MSE and
// pseudo-Huber losses, Song & Dhariwal 2023 eq. 10), the per-sample scaled difference that is their gradient, and
// the partial sums of squares of a gradient norm (global-norm clipping). Sums run in double, one block per row or
// per fixed chunk, combined in a fixed order (warp shuffles, then warps in order), so a result does not depend on
// timing; the host adds the few per-row or per-chunk values and forms the loss, as the Java backends do.
#include "cuda_compat.cuh"
#include "onestep_kernels.h"
#include "reduce.cuh"
#include "status.cuh"

namespace onestep {
namespace loss {

constexpr int kBlock = 256;

// out[n] = sum over d of (pred[n, d] - target[n, d])^2, in double; one block per row.
__global__ void row_sq_dist_kernel(const float* pred, const float* target, double* out, long long D) {
    await_predecessors();
    __shared__ double scratch[32];
    const long long row = (long long)blockIdx.x * D;
    double acc = 0.0;
    for (long long d = threadIdx.x; d < D; d += blockDim.x) {
        const double diff = double(pred[row + d]) - double(target[row + d]);
        acc += diff * diff;
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = acc;
}

// out[n, d] = coef[n] (pred[n, d] - target[n, d]).
__global__ void row_scaled_diff_kernel(const float* pred, const float* target, const float* coef, float* out, int N,
                                       long long D) {
    await_predecessors();
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)N * D;
         i += (long long)gridDim.x * blockDim.x)
        out[i] = coef[i / D] * (pred[i] - target[i]);
}

// partials[b] = sum of x^2 over chunk b = [b chunk, (b + 1) chunk), in double; one block per chunk.
__global__ void sum_squares_kernel(const float* x, long long n, long long chunk, double* partials) {
    await_predecessors();
    __shared__ double scratch[32];
    const long long lo = (long long)blockIdx.x * chunk;
    const long long hi = lo + chunk < n ? lo + chunk : n;
    double acc = 0.0;
    for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) acc += double(x[i]) * double(x[i]);
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

}  // namespace loss
}  // namespace onestep

namespace Ls = onestep::loss;
using onestep::check_launch;
using onestep::fail;
using onestep::launch_dependent;

extern "C" onestep_status onestep_row_sq_dist(const float* pred, const float* target, double* out, int N, long long D,
                                              cudaStream_t stream) {
    ONESTEP_SHAPES("N=%d, D=%lld", N, D);
    if (N < 1 || D < 1 || !pred || !target || !out)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_row_sq_dist", shapes, "bad size or NULL pointer");
    return check_launch(launch_dependent(Ls::row_sq_dist_kernel, dim3(unsigned(N)), dim3(Ls::kBlock), 0, stream, pred, target,
                                         out, D),
                        "onestep_row_sq_dist", shapes);
}

extern "C" onestep_status onestep_row_scaled_diff(const float* pred, const float* target, const float* coef,
                                                  float* out, int N, long long D, cudaStream_t stream) {
    ONESTEP_SHAPES("N=%d, D=%lld", N, D);
    if (N < 1 || D < 1 || !pred || !target || !coef || !out)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_row_scaled_diff", shapes, "bad size or NULL pointer");
    long long blocks = ((long long)N * D + Ls::kBlock - 1) / Ls::kBlock;
    if (blocks > (1 << 16)) blocks = 1 << 16;
    return check_launch(launch_dependent(Ls::row_scaled_diff_kernel, dim3(unsigned(blocks)), dim3(Ls::kBlock), 0, stream, pred,
                                         target, coef, out, N, D),
                        "onestep_row_scaled_diff", shapes);
}

extern "C" onestep_status onestep_sum_squares(const float* x, long long n, long long chunk, double* partials,
                                              cudaStream_t stream) {
    ONESTEP_SHAPES("n=%lld, chunk=%lld", n, chunk);
    if (n < 1 || chunk < 1 || !x || !partials)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_sum_squares", shapes, "bad size or NULL pointer");
    const long long parts = (n + chunk - 1) / chunk;
    if (parts > (1LL << 31) - 1)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_sum_squares", shapes, "too many chunks");
    return check_launch(launch_dependent(Ls::sum_squares_kernel, dim3(unsigned(parts)), dim3(Ls::kBlock), 0, stream, x, n, chunk,
                                         partials),
                        "onestep_sum_squares", shapes);
}
