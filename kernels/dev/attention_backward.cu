// attention_backward.cu: development record of the fused attention backward (Dao 2023, FlashAttention-2,
// Alg. 2), fp32: from q, k, v, o, lse and dO compute dQ, dK, dV with P = exp(scale Q K^T - lse) recomputed.
//   dV = P^T dO,  dP = dO V^T,  dS = P o (dP - Delta),  Delta = rowsum(dO o O),  dQ = scale dS K,  dK = scale dS^T Q
//
//   nvcc build:  cmake target dev_attention_backward;  run: ./dev_attention_backward [version] [B H T D]
//   emulated:    cmake target dev_attention_backward_emu (validation only, small shape; a CTest test)
//
// TFLOP/s counts the five matrix products of the textbook backward, 10 * B * H * T^2 * D flops (version 2
// recomputes Q K^T and dO V^T once more for dQ: that work is not counted).
#include "../src/status.cu"
#include "../src/attention.cu"
#include "../src/attention_backward.cu"
#include "dev_common.cuh"

#include <cstdlib>
#include <vector>

using namespace onestep;

// ---- CPU reference (double) -----------------------------------------------------------------------------
static void attention_backward_cpu(std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv,
                                   const std::vector<float>& q, const std::vector<float>& k,
                                   const std::vector<float>& v, const std::vector<float>& dout, int BH, int T, int D,
                                   double scale) {
    std::vector<double> p(T), dp(T);
    for (long long bh = 0; bh < BH; bh++)
        for (int i = 0; i < T; i++) {
            const float* qi = &q[(bh * T + i) * D];
            const float* gi = &dout[(bh * T + i) * D];
            double mx = -INFINITY, sum = 0, delta = 0;
            for (int j = 0; j < T; j++) {
                double dot = 0;
                for (int d = 0; d < D; d++) dot += double(qi[d]) * k[(bh * T + j) * D + d];
                p[j] = dot * scale;
                mx = std::max(mx, p[j]);
            }
            for (int j = 0; j < T; j++) sum += (p[j] = std::exp(p[j] - mx));
            for (int j = 0; j < T; j++) {
                p[j] /= sum;
                double g = 0;
                for (int d = 0; d < D; d++) g += double(gi[d]) * v[(bh * T + j) * D + d];
                dp[j] = g;
                delta += p[j] * g;
            }
            for (int j = 0; j < T; j++) {
                const double ds = p[j] * (dp[j] - delta);
                for (int d = 0; d < D; d++) {
                    dv[(bh * T + j) * D + d] += p[j] * gi[d];
                    dq[(bh * T + i) * D + d] += scale * ds * k[(bh * T + j) * D + d];
                    dk[(bh * T + j) * D + d] += scale * ds * qi[d];
                }
            }
        }
}

// ---- version 1: one thread per query row for dQ and one thread per key row for dK and dV, each looping
// over the other sequence straight from global memory (P recomputed from lse, Delta from the preprocessing
// kernel of version 2). Simple and exact; every thread re-reads whole matrices.
__global__ void attention_backward_dq_kernel1(const float* q, const float* k, const float* v, const float* dout,
                                              const float* lse, const float* delta, float* dq, int BH, int T, int D,
                                              float scale) {
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)BH * T) return;
    const long long bh = t / T;
    for (int d = 0; d < D; d++) dq[t * D + d] = 0.0f;
    for (int j = 0; j < T; j++) {
        const float* kj = k + (bh * T + j) * D;
        const float* vj = v + (bh * T + j) * D;
        float s = 0, dp = 0;
        for (int d = 0; d < D; d++) s += q[t * D + d] * kj[d], dp += dout[t * D + d] * vj[d];
        const float ds = __expf(s * scale - lse[t]) * (dp - delta[t]);
        for (int d = 0; d < D; d++) dq[t * D + d] += scale * ds * kj[d];
    }
}

__global__ void attention_backward_dkdv_kernel1(const float* q, const float* k, const float* v, const float* dout,
                                                const float* lse, const float* delta, float* dk, float* dv, int BH,
                                                int T, int D, float scale) {
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;  // key row
    if (t >= (long long)BH * T) return;
    const long long bh = t / T;
    for (int d = 0; d < D; d++) dk[t * D + d] = dv[t * D + d] = 0.0f;
    for (int i = 0; i < T; i++) {
        const long long qi = bh * T + i;
        float s = 0, dp = 0;
        for (int d = 0; d < D; d++) s += q[qi * D + d] * k[t * D + d], dp += dout[qi * D + d] * v[t * D + d];
        const float p = __expf(s * scale - lse[qi]);
        const float ds = p * (dp - delta[qi]);
        for (int d = 0; d < D; d++) {
            dv[t * D + d] += p * dout[qi * D + d];
            dk[t * D + d] += scale * ds * q[qi * D + d];
        }
    }
}

// ---- version 2 (production, src/attention_backward.cu): Delta preprocessing; dK/dV with one block per 32-key
// tile looping over query tiles through shared memory; dQ with one block per 32-query tile (no atomics).

struct Args {
    const float *q, *k, *v, *o, *dout, *lse;
    float *delta, *dq, *dk, *dv;
    int B, H, T, D;
    float scale;
};

static cudaError_t run_version(int version, const Args& a, int block) {
    const int BH = a.B * a.H;
    switch (version) {
        case 1: {
            const long long rows = (long long)BH * a.T;
            cudaError_t e = launch(attention::delta_kernel<float>, dim3(ceil_div(rows, 8)), dim3(256), 0, nullptr, a.o, a.dout,
                                   a.delta, rows, a.D);
            if (e != cudaSuccess) return e;
            e = launch(attention_backward_dq_kernel1, dim3(ceil_div(rows, block)), dim3(block), 0, nullptr, a.q, a.k,
                       a.v, a.dout, a.lse, a.delta, a.dq, BH, a.T, a.D, a.scale);
            if (e != cudaSuccess) return e;
            return launch(attention_backward_dkdv_kernel1, dim3(ceil_div(rows, block)), dim3(block), 0, nullptr, a.q,
                          a.k, a.v, a.dout, a.lse, a.delta, a.dk, a.dv, BH, a.T, a.D, a.scale);
        }
        case 2: {
            const onestep_status s = onestep_attention_backward(a.q, a.k, a.v, a.o, a.dout, a.lse, a.delta, a.dq, a.dk,
                                                                a.dv, a.B, a.H, a.T, a.T, a.D, nullptr, a.scale, nullptr);
            if (s != ONESTEP_OK) std::fprintf(stderr, "%s\n", onestep_last_error_message());
            return s == ONESTEP_OK ? cudaSuccess : cudaErrorInvalidValue;
        }
    }
    std::fprintf(stderr, "unknown version %d\n", version);
    std::exit(2);
}

int main(int argc, char** argv) {
#ifdef ONESTEP_EMULATION
    int B = 1, H = 2, T = 45, D = 32;  // T not a multiple of the 32-token tiles
#else
    int B = 8, H = 8, T = 1024, D = 64;
#endif
    int only = 0;
    if (argc > 1) only = std::atoi(argv[1]);
    if (argc > 5) B = std::atoi(argv[2]), H = std::atoi(argv[3]), T = std::atoi(argv[4]), D = std::atoi(argv[5]);
    std::printf("attention backward fp32, B=%d H=%d T=%d D=%d\n", B, H, T, D);
    const size_t nq = size_t(B) * H * T * D, nl = size_t(B) * H * T;
    const float scale = 1.0f / std::sqrt(float(D));
    std::vector<float> q = dev::random_normal(nq, 1), k = dev::random_normal(nq, 2), v = dev::random_normal(nq, 3),
                       dout = dev::random_normal(nq, 4);
    std::vector<double> dq_ref(nq, 0.0), dk_ref(nq, 0.0), dv_ref(nq, 0.0);
    attention_backward_cpu(dq_ref, dk_ref, dv_ref, q, k, v, dout, B * H, T, D, scale);

    Args a{dev::to_device(q), dev::to_device(k), dev::to_device(v), dev::device_filled(nq, 0.0f), dev::to_device(dout),
           dev::device_filled(nl, 0.0f), dev::device_filled(nl, 0.0f), dev::device_filled(nq, 0.0f),
           dev::device_filled(nq, 0.0f), dev::device_filled(nq, 0.0f), B, H, T, D, scale};
    // o and lse from the production forward: the backward consumes exactly what the forward saves.
    dev_check(attention::launch_forward(a.q, a.k, a.v, const_cast<float*>(a.o), const_cast<float*>(a.lse), B, H, T, T,
                                        D, nullptr, scale, nullptr));
    const double tol = 5e-5 * std::sqrt(double(T));
    bool all_ok = true;
    for (int version = 1; version <= 2; version++) {
        if (only && version != only) continue;
        std::vector<int> blocks = version == 1 ? std::vector<int>{32, 64, 128, 256} : std::vector<int>{128};
        for (int block : blocks) {
            dev_check(cudaMemset(a.dq, 0xFF, nq * 4));
            dev_check(cudaMemset(a.dk, 0xFF, nq * 4));
            dev_check(cudaMemset(a.dv, 0xFF, nq * 4));
            dev_check(run_version(version, a, block));
            dev_check(cudaDeviceSynchronize());
            bool ok = dev::validate("dq", a.dq, dq_ref, tol, 1e-3);
            ok &= dev::validate("dk", a.dk, dk_ref, tol, 1e-3);
            ok &= dev::validate("dv", a.dv, dv_ref, tol, 1e-3);
            all_ok &= ok;
#ifdef ONESTEP_EMULATION
            std::printf("version %d block %4d: %s\n", version, block, ok ? "ok" : "MISMATCH");
#else
            const float ms = dev::time_ms([&] { dev_check(run_version(version, a, block)); }, version == 1 ? 3 : 20);
            const double tflops = 10.0 * B * H * double(T) * T * D / (ms * 1e-3) / 1e12;
            std::printf("version %d block %4d: %s  %9.4f ms  %6.2f TFLOP/s\n", version, block, ok ? "ok      " : "MISMATCH", ms, tflops);
#endif
        }
    }
    std::printf(all_ok ? "all versions match the CPU reference\n" : "SOME VERSIONS DO NOT MATCH the CPU reference\n");
    return all_ok ? 0 : 1;
}
