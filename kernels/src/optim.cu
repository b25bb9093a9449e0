// optim.cu: the optimizer update (Adam, Kingma & Ba 2015, Algorithm 1; RAdam, Liu et al. 2020, Algorithm 2),
// one thread per parameter in a grid-stride loop. It is memory-bound (4 reads, 3 writes per element), so it is
// written for clarity; what is per-step (bias corrections, the rectification term, decoupled decay) is computed
// once by the caller, exactly as the Java CPU backend does (ai.onestep.backend.AdamUpdate), and the per-element
// arithmetic is the CPU backend's, operation for operation.
#include "cuda_compat.cuh"
#include "onestep_kernels.h"
#include "status.cuh"

#include <cmath>
#include <cstdio>

namespace onestep {
namespace optim {

constexpr int kBlock = 256;

__global__ void adam_kernel(float* p, const float* g, float* m, float* v, long long n, float b1, float b2,
                            float v_scale, float eps, float step, float l2, float decay, int adaptive) {
    await_predecessors();
    const float c1 = 1.f - b1, c2 = 1.f - b2;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float pi = p[i];
        float gi = fmaf(pi, l2, g[i]);  // g + l2 p (L2 decay; l2 = 0 when decay is decoupled)
        float mi = fmaf(m[i], b1, __fmul_rn(gi, c1));
        float vi = fmaf(v[i], b2, __fmul_rn(__fmul_rn(gi, gi), c2));
        float upd = adaptive ? __fdiv_rn(__fmul_rn(mi, step), fmaf(sqrtf(vi), v_scale, eps)) : __fmul_rn(mi, step);
        p[i] = __fsub_rn(__fmul_rn(pi, decay), upd);
        m[i] = mi;
        v[i] = vi;
    }
}

}  // namespace optim
}  // namespace onestep

namespace O = onestep::optim;
using onestep::check_launch;
using onestep::fail;
using onestep::launch_dependent;

extern "C" onestep_status onestep_adam_step(float* p, const float* g, float* m, float* v, long long n, float beta1,
                                            float beta2, float v_scale, float eps, float step, float l2, float decay,
                                            int adaptive, cudaStream_t stream) {
    ONESTEP_SHAPES("n=%lld, beta1=%g, beta2=%g, step=%g, adaptive=%d", n, beta1, beta2, step, adaptive);
    if (n < 0 || !p || !g || !m || !v)
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_adam_step", shapes, "bad size or NULL pointer");
    if (!(beta1 >= 0.f && beta1 < 1.f) || !(beta2 >= 0.f && beta2 < 1.f) || !(eps >= 0.f))
        return fail(ONESTEP_ERROR_INVALID_ARGUMENT, "onestep_adam_step", shapes, "betas must lie in [0, 1), eps >= 0");
    if (n == 0) return ONESTEP_OK;
    long long blocks = (n + O::kBlock - 1) / O::kBlock;
    if (blocks > (1 << 16)) blocks = 1 << 16;
    return check_launch(launch_dependent(O::adam_kernel, dim3(unsigned(blocks)), dim3(O::kBlock), 0, stream, p, g, m, v, n, beta1,
                                         beta2, v_scale, eps, step, l2, decay, adaptive),
                        "onestep_adam_step", shapes);
}
