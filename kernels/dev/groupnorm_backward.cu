// groupnorm_backward.cu: development record of the backward of the fused NHWC group norm
//   u = (xhat * gamma + beta) * (1 + scale[n,c]) + shift[n,c],  y = SiLU(u),  xhat = (x - mean) * rstd.
// Gradient conventions (llm.c's): parameter grads dgamma, dbeta ACCUMULATE (+=); activation grads dx,
// dscale, dshift are ASSIGNED. With dxhat = dyp * gamma, Wu & He's normalization differentiated gives
//   dx = rstd * (dxhat - mean_g(dxhat) - xhat * mean_g(dxhat * xhat)).
//
//   nvcc build:  cmake target dev_groupnorm_backward;  run: ./dev_groupnorm_backward [version] [N HW C G]
//   emulated:    cmake target dev_groupnorm_backward_emu (validation only, small shape; a CTest test)
//
// GB/s counts the bytes the op must move at least once: read x and dy, write dx.
#include "../src/status.cu"
#include "../src/groupnorm.cu"
#include "dev_common.cuh"

#include <cstdlib>
#include <vector>

using namespace onestep;
using namespace onestep::groupnorm;

// ---- CPU reference (double) -----------------------------------------------------------------------------
static void groupnorm_backward_cpu(std::vector<double>& dx, std::vector<double>& dgamma, std::vector<double>& dbeta,
                                   std::vector<double>& dscale, std::vector<double>& dshift,
                                   const std::vector<float>& dy, const std::vector<float>& x,
                                   const std::vector<float>& mean, const std::vector<float>& rstd,
                                   const std::vector<float>& gamma, const std::vector<float>& beta,
                                   const std::vector<float>& scale, const std::vector<float>& shift, int N, int HW,
                                   int C, int G) {
    const int Cg = C / G;
    std::vector<double> xhat(x.size()), dxhat(x.size());
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            const double mu = mean[n * G + g], rs = rstd[n * G + g];
            double a = 0, b = 0;
            for (int p = 0; p < HW; p++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                    const size_t i = (size_t(n) * HW + p) * C + c;
                    xhat[i] = (x[i] - mu) * rs;
                    const double yp = xhat[i] * gamma[c] + beta[c];
                    const double u = yp * (1.0 + scale[n * C + c]) + shift[n * C + c];
                    const double sg = 1.0 / (1.0 + std::exp(-u));
                    const double du = dy[i] * sg * (1.0 + u * (1.0 - sg));
                    const double dyp = du * (1.0 + scale[n * C + c]);
                    dshift[n * C + c] += du;
                    dscale[n * C + c] += du * yp;
                    dbeta[c] += dyp;
                    dgamma[c] += dyp * xhat[i];
                    dxhat[i] = dyp * gamma[c];
                    a += dxhat[i];
                    b += dxhat[i] * xhat[i];
                }
            const double m = double(HW) * Cg;
            for (int p = 0; p < HW; p++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                    const size_t i = (size_t(n) * HW + p) * C + c;
                    dx[i] = rs * (dxhat[i] - a / m - xhat[i] * b / m);
                }
        }
}

// ---- version 1: one thread per (n, g), serial over the group: one pass for the per-channel sums (looping
// channels outside, pixels inside) and the group sums, one pass for dx. dgamma/dbeta by atomicAdd.
__global__ void groupnorm_backward_kernel1(const float* dy, const float* x, const float* mean, const float* rstd,
                                           const float* gamma, const float* beta, const float* scale,
                                           const float* shift, float* dx, float* dgamma, float* dbeta, float* dscale,
                                           float* dshift, int N, int HW, int C, int G) {
    const int ng = blockIdx.x * blockDim.x + threadIdx.x;
    if (ng >= N * G) return;
    const int n = ng / G, g = ng % G, Cg = C / G;
    const long long base = (long long)n * HW * C + (long long)g * Cg;
    const float mu = mean[ng], rs = rstd[ng];
    float a = 0.0f, b = 0.0f;
    for (int c = 0; c < Cg; c++) {
        const int cc = g * Cg + c;
        const float s = scale[n * C + cc], sh = shift[n * C + cc];
        float r0 = 0, r1 = 0, r2 = 0, r3 = 0;
        for (int p = 0; p < HW; p++) {
            const long long i = base + (long long)p * C + c;
            const float xhat = (x[i] - mu) * rs;
            float du, dyp, yp;
            backward_one<true, true>(dy[i], xhat, gamma[cc], beta[cc], s, sh, du, dyp, yp);
            r0 += du, r1 += du * yp, r2 += dyp, r3 += dyp * xhat;
            a += dyp * gamma[cc];
            b += dyp * gamma[cc] * xhat;
        }
        dshift[n * C + cc] = r0;
        dscale[n * C + cc] = r1;
        atomicAdd(dbeta + cc, r2);
        atomicAdd(dgamma + cc, r3);
    }
    const float inv_m = 1.0f / (float(HW) * Cg);
    for (int c = 0; c < Cg; c++) {
        const int cc = g * Cg + c;
        const float s = scale[n * C + cc], sh = shift[n * C + cc];
        for (int p = 0; p < HW; p++) {
            const long long i = base + (long long)p * C + c;
            const float xhat = (x[i] - mu) * rs;
            float du, dyp, yp;
            backward_one<true, true>(dy[i], xhat, gamma[cc], beta[cc], s, sh, du, dyp, yp);
            dx[i] = rs * (dyp * gamma[cc] - a * inv_m - xhat * b * inv_m);
        }
    }
}

// ---- version 2 (production, src/groupnorm.cu): one block per (n, g), threads as a (channel, pixel-row)
// grid: per-channel partial sums stay in registers, are reduced across rows through shared memory, and the
// group sums by a block reduction; channels are coalesced across lanes when the group is >= 32 wide.

struct Args {
    const float *dy, *x, *mean, *rstd, *gamma, *beta, *scale, *shift;
    float *dx, *dgamma, *dbeta, *dscale, *dshift;
    int N, HW, C, G;
};

static cudaError_t run_version(int version, const Args& a, int block) {
    switch (version) {
        case 1:
            return launch(groupnorm_backward_kernel1, dim3(ceil_div(a.N * a.G, block)), dim3(block), 0, nullptr, a.dy,
                          a.x, a.mean, a.rstd, a.gamma, a.beta, a.scale, a.shift, a.dx, a.dgamma, a.dbeta, a.dscale,
                          a.dshift, a.N, a.HW, a.C, a.G);
        case 2:
            return launch_backward(a.dy, a.x, a.mean, a.rstd, a.gamma, a.beta, a.scale, a.shift, a.dx, a.dgamma,
                                   a.dbeta, a.dscale, a.dshift, a.N, a.HW, a.C, a.G, true, block, nullptr);
    }
    std::fprintf(stderr, "unknown version %d\n", version);
    std::exit(2);
}

int main(int argc, char** argv) {
#ifdef ONESTEP_EMULATION
    int N = 2, HW = 36, C = 80, G = 8;  // groups of 10: not a multiple of anything convenient
#else
    int N = 8, HW = 32 * 32, C = 256, G = 32;
#endif
    int only = 0;
    if (argc > 1) only = std::atoi(argv[1]);
    if (argc > 5) N = std::atoi(argv[2]), HW = std::atoi(argv[3]), C = std::atoi(argv[4]), G = std::atoi(argv[5]);
    std::printf("group norm backward (+scale/shift, +SiLU), N=%d HW=%d C=%d G=%d\n", N, HW, C, G);
    const size_t nx = size_t(N) * HW * C, nc = size_t(N) * C, ng = size_t(N) * G;
    std::vector<float> x = dev::random_normal(nx, 1, 0.5f), dy = dev::random_normal(nx, 6),
                       gamma = dev::random_normal(C, 2, 1.0f, 0.3f), beta = dev::random_normal(C, 3, 0.0f, 0.3f),
                       scale = dev::random_normal(nc, 4, 0.0f, 0.3f), shift = dev::random_normal(nc, 5, 0.0f, 0.3f);
    // Statistics from the production forward, so the backward is checked on exactly what it will receive.
    float *d_x = dev::to_device(x), *d_mean = dev::device_filled(ng, 0.0f), *d_rstd = dev::device_filled(ng, 0.0f);
    float *d_gamma = dev::to_device(gamma), *d_beta = dev::to_device(beta), *d_scale = dev::to_device(scale),
          *d_shift = dev::to_device(shift), *d_y = dev::device_filled(nx, 0.0f);
    dev_check(launch_forward(d_x, d_gamma, d_beta, d_scale, d_shift, d_y, d_mean, d_rstd, N, HW, C, G, 1e-5f, true,
                             kStatsBlock, kApplyBlock, nullptr));
    std::vector<float> mean(ng), rstd(ng);
    dev_check(cudaMemcpy(mean.data(), d_mean, ng * 4, cudaMemcpyDeviceToHost));
    dev_check(cudaMemcpy(rstd.data(), d_rstd, ng * 4, cudaMemcpyDeviceToHost));
    std::vector<double> dx_ref(nx), dgamma_ref(C), dbeta_ref(C), dscale_ref(nc), dshift_ref(nc);
    groupnorm_backward_cpu(dx_ref, dgamma_ref, dbeta_ref, dscale_ref, dshift_ref, dy, x, mean, rstd, gamma, beta, scale,
                           shift, N, HW, C, G);

    Args a{dev::to_device(dy), d_x, d_mean, d_rstd, d_gamma, d_beta, d_scale, d_shift,
           dev::device_filled(nx, 0.0f), dev::device_filled(C, 0.0f), dev::device_filled(C, 0.0f),
           dev::device_filled(nc, 0.0f), dev::device_filled(nc, 0.0f), N, HW, C, G};
    const int block_sizes[] = {32, 64, 128, 256, 512, 1024};
    const double sum_tol = 1e-4 * std::sqrt(double(N) * HW);
    bool all_ok = true;
    for (int version = 1; version <= 2; version++) {
        if (only && version != only) continue;
        for (int block : block_sizes) {
            dev_check(cudaMemset(a.dx, 0xFF, nx * 4));
            dev_check(cudaMemset(a.dgamma, 0, C * 4));  // accumulated: start from zero for the check
            dev_check(cudaMemset(a.dbeta, 0, C * 4));
            dev_check(run_version(version, a, block));
            dev_check(cudaDeviceSynchronize());
            bool ok = dev::validate("dx", a.dx, dx_ref, 1e-4, 1e-3);
            ok &= dev::validate("dgamma", a.dgamma, dgamma_ref, sum_tol, 1e-3);
            ok &= dev::validate("dbeta", a.dbeta, dbeta_ref, sum_tol, 1e-3);
            ok &= dev::validate("dscale", a.dscale, dscale_ref, sum_tol, 1e-3);
            ok &= dev::validate("dshift", a.dshift, dshift_ref, sum_tol, 1e-3);
            all_ok &= ok;
#ifdef ONESTEP_EMULATION
            std::printf("version %d block %4d: %s\n", version, block, ok ? "ok" : "MISMATCH");
#else
            const float ms = dev::time_ms([&] { dev_check(run_version(version, a, block)); });
            const double gbs = 3.0 * nx * sizeof(float) / (ms * 1e-3) / 1e9;
            std::printf("version %d block %4d: %s  %8.4f ms  %7.1f GB/s\n", version, block, ok ? "ok      " : "MISMATCH", ms, gbs);
#endif
        }
    }
    std::printf(all_ok ? "all versions match the CPU reference\n" : "SOME VERSIONS DO NOT MATCH the CPU reference\n");
    return all_ok ? 0 : 1;
}
