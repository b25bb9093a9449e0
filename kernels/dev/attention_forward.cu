// attention_forward.cu: development record of the fused attention forward O = softmax(Q K^T * scale) V,
// q (B,H,Tq,D), k/v (B,H,Tk,D), fp32, with the log-sum-exp per row saved for a backward pass.
//
//   nvcc build:  cmake target dev_attention_forward;  run: ./dev_attention_forward [version] [B H T D]
//   emulated:    cmake target dev_attention_forward_emu (validation only, small shape; a CTest test)
//
// TFLOP/s counts the two matrix products, 4 * B * H * Tq * Tk * D flops (softmax not counted).
#include "../src/status.cu"
#include "../src/attention.cu"
#include "dev_common.cuh"

#include <cstdlib>
#include <vector>

using namespace onestep;

// ---- CPU reference (double) -----------------------------------------------------------------------------
static void attention_forward_cpu(std::vector<double>& o, std::vector<double>& lse, const std::vector<float>& q,
                                  const std::vector<float>& k, const std::vector<float>& v, int B, int H, int Tq,
                                  int Tk, int D, double scale) {
    std::vector<double> s(Tk);
    for (long long bh = 0; bh < (long long)B * H; bh++)
        for (int i = 0; i < Tq; i++) {
            double mx = -INFINITY;
            for (int j = 0; j < Tk; j++) {
                double dot = 0;
                for (int d = 0; d < D; d++) dot += double(q[(bh * Tq + i) * D + d]) * k[(bh * Tk + j) * D + d];
                s[j] = dot * scale;
                mx = std::max(mx, s[j]);
            }
            double sum = 0;
            for (int j = 0; j < Tk; j++) sum += (s[j] = std::exp(s[j] - mx));
            for (int d = 0; d < D; d++) o[(bh * Tq + i) * D + d] = 0;
            for (int j = 0; j < Tk; j++)
                for (int d = 0; d < D; d++) o[(bh * Tq + i) * D + d] += s[j] / sum * v[(bh * Tk + j) * D + d];
            lse[bh * Tq + i] = mx + std::log(sum);
        }
}

// ---- version 1: one thread per query row, three passes over all keys straight from global memory
// (row max, denominator, weighted sum of V). Exact and simple; every thread re-reads all of K and V.
__global__ void attention_forward_kernel1(const float* q, const float* k, const float* v, float* o, float* lse,
                                          int BH, int Tq, int Tk, int D, float scale) {
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)BH * Tq) return;
    const long long bh = t / Tq;
    const float* qr = q + t * D;
    const float* kh = k + bh * Tk * D;
    const float* vh = v + bh * Tk * D;
    float mx = -INFINITY;
    for (int j = 0; j < Tk; j++) {
        float s = 0;
        for (int d = 0; d < D; d++) s += qr[d] * kh[(long long)j * D + d];
        mx = fmaxf(mx, s * scale);
    }
    float sum = 0;
    for (int j = 0; j < Tk; j++) {
        float s = 0;
        for (int d = 0; d < D; d++) s += qr[d] * kh[(long long)j * D + d];
        sum += __expf(s * scale - mx);
    }
    for (int d = 0; d < D; d++) o[t * D + d] = 0.0f;
    for (int j = 0; j < Tk; j++) {
        float s = 0;
        for (int d = 0; d < D; d++) s += qr[d] * kh[(long long)j * D + d];
        const float p = __expf(s * scale - mx) / sum;
        for (int d = 0; d < D; d++) o[t * D + d] += p * vh[(long long)j * D + d];
    }
    lse[t] = mx + logf(sum);
}

// ---- version 2 (production, src/attention.cu): FlashAttention-2 structure. One block of 4 warps per 32
// query rows; K/V in 32-key tiles through shared memory (K with a padded pitch); online softmax with the
// running max and sum in registers, exp2 with scale*log2(e) folded into Q; one normalization at the end.

static cudaError_t run_version(int version, const float* q, const float* k, const float* v, float* o, float* lse,
                               int B, int H, int T, int D, float scale, int block) {
    switch (version) {
        case 1:
            return launch(attention_forward_kernel1, dim3(ceil_div((long long)B * H * T, block)), dim3(block), 0,
                          nullptr, q, k, v, o, lse, B * H, T, T, D, scale);
        case 2:
            return attention::launch_forward(q, k, v, o, lse, B, H, T, T, D, nullptr, scale, nullptr);
    }
    std::fprintf(stderr, "unknown version %d\n", version);
    std::exit(2);
}

int main(int argc, char** argv) {
#ifdef ONESTEP_EMULATION
    int B = 1, H = 2, T = 70, D = 64;  // T not a multiple of the 32-token tiles
#else
    int B = 8, H = 8, T = 1024, D = 64;  // self-attention at a 32x32 U-Net level
#endif
    int only = 0;
    if (argc > 1) only = std::atoi(argv[1]);
    if (argc > 5) B = std::atoi(argv[2]), H = std::atoi(argv[3]), T = std::atoi(argv[4]), D = std::atoi(argv[5]);
    std::printf("attention forward fp32, B=%d H=%d T=%d D=%d\n", B, H, T, D);
    const size_t nq = size_t(B) * H * T * D, nl = size_t(B) * H * T;
    const float scale = 1.0f / std::sqrt(float(D));
    std::vector<float> q = dev::random_normal(nq, 1), k = dev::random_normal(nq, 2), v = dev::random_normal(nq, 3);
    std::vector<double> o_ref(nq), lse_ref(nl);
    attention_forward_cpu(o_ref, lse_ref, q, k, v, B, H, T, T, D, scale);
    float *d_q = dev::to_device(q), *d_k = dev::to_device(k), *d_v = dev::to_device(v);
    float *d_o = dev::device_filled(nq, 0.0f), *d_lse = dev::device_filled(nl, 0.0f);
    bool all_ok = true;
    for (int version = 1; version <= 2; version++) {
        if (only && version != only) continue;
        // Version 2's block shape is part of its design (4 warps x 8 rows); only version 1 is swept.
        std::vector<int> blocks = version == 1 ? std::vector<int>{32, 64, 128, 256} : std::vector<int>{128};
        for (int block : blocks) {
            dev_check(cudaMemset(d_o, 0xFF, nq * 4));
            dev_check(run_version(version, d_q, d_k, d_v, d_o, d_lse, B, H, T, D, scale, block));
            dev_check(cudaDeviceSynchronize());
            bool ok = dev::validate("o", d_o, o_ref, 2e-5, 2e-4);
            ok &= dev::validate("lse", d_lse, lse_ref, 2e-5, 2e-5);
            all_ok &= ok;
#ifdef ONESTEP_EMULATION
            std::printf("version %d block %4d: %s\n", version, block, ok ? "ok" : "MISMATCH");
#else
            const float ms = dev::time_ms([&] {
                dev_check(run_version(version, d_q, d_k, d_v, d_o, d_lse, B, H, T, D, scale, block));
            }, version == 1 ? 3 : 20);
            const double tflops = 4.0 * B * H * double(T) * T * D / (ms * 1e-3) / 1e12;
            std::printf("version %d block %4d: %s  %9.4f ms  %6.2f TFLOP/s\n", version, block, ok ? "ok      " : "MISMATCH", ms, tflops);
#endif
        }
    }
    std::printf(all_ok ? "all versions match the CPU reference\n" : "SOME VERSIONS DO NOT MATCH the CPU reference\n");
    return all_ok ? 0 : 1;
}
