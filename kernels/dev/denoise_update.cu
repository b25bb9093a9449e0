// denoise_update.cu: development record of the samplers' per-element updates (src/denoise.cu):
//   Heun's correction (Karras et al. 2022, Alg. 1 lines 7-8): x_next = x + c1 d + c2 (x_euler - D'),
//       c1 = h / 2, c2 = h / (2 sigma_next), h = sigma_next - sigma            (4 reads, 1 write per element)
//   the consistency output (Song et al. 2023, Eq. 5):       f = c_skip(t) x + c_out(t) F   (2 reads, 1 write)
//   the multistep re-noising (Song et al. 2023, Alg. 1):    x + sqrt(tau^2 - eps^2) z       (2 reads, 1 write)
// The coefficients are formed on the host in double; the kernels only multiply-add, so every version is purely
// memory-bound and the question is how close each gets to DRAM bandwidth. A CPU reference in double, numbered
// versions, validation of each against the reference for every block size of the sweep (on a ragged n, and on
// pointers one float off 16-byte alignment), and (nvcc only) timing with an L2 flush and achieved GB/s.
//
//   nvcc build:  cmake target dev_denoise_update;  run: ./dev_denoise_update [version] [n]
//   emulated:    cmake target dev_denoise_update_emu (validation only, small n; a CTest test)
//
// GB/s counts each element's reads and write once (the floor: nothing is re-read).
#include "../src/status.cu"
#include "../src/denoise.cu"
#include "dev_common.cuh"

#include <cstdlib>
#include <vector>

using namespace onestep;
using namespace onestep::denoise;

enum class Update { Heun, ConsistencyOutput, Renoise };

static const char* update_name(Update u) {
    return u == Update::Heun ? "heun step" : u == Update::ConsistencyOutput ? "consistency output" : "re-noising";
}

static int update_inputs(Update u) { return u == Update::Heun ? 4 : 2; }

// The two coefficients of each update, in double (as src/denoise.cu forms them).
struct Coefs {
    double a, b;
};

static Coefs coefs(Update u) {
    const double sigma = 2.5, sigma_next = 1.7, t = 2.5, eps = 0.002, sigma_data = 0.5, tau = 1.923;
    switch (u) {
        case Update::Heun: {
            const double h = sigma_next - sigma;
            return {h / 2.0, h / (2.0 * sigma_next)};
        }
        case Update::ConsistencyOutput: {
            const double sd2 = sigma_data * sigma_data, te = t - eps;
            return {sd2 / (te * te + sd2), sigma_data * te / std::sqrt(sd2 + t * t)};
        }
        case Update::Renoise:
            return {1.0, std::sqrt(tau * tau - eps * eps)};
    }
    return {0, 0};
}

// ---- CPU reference ---------------------------------------------------------------------------------------
static std::vector<double> update_cpu(Update u, const std::vector<std::vector<float>>& in, size_t n) {
    const Coefs c = coefs(u);
    std::vector<double> out(n);
    for (size_t i = 0; i < n; i++)
        out[i] = u == Update::Heun ? in[0][i] + c.a * in[1][i] + c.b * (double(in[2][i]) - in[3][i])
                                   : c.a * in[0][i] + c.b * in[1][i];
    return out;
}

// ---- version 1: one thread per element, a grid of ceil(n / block) blocks, scalar loads. Obviously correct;
// at large n the grid is huge and each thread moves 12-20 bytes, so the launch and scheduling overhead shows.
template <class Op, int NIN>
__global__ void update_kernel1(Op op, Ptrs<NIN> in, float* out, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float xi[NIN], yo[1];
    for (int j = 0; j < NIN; j++) xi[j] = in.p[j][i];
    op(xi, yo);
    out[i] = yo[0];
}

// ---- version 2: a grid-stride loop over a grid capped at 4 blocks per SM's worth (65,536 blocks at most):
// fewer, longer-lived threads, still scalar loads.
template <class Op, int NIN>
__global__ void update_kernel2(Op op, Ptrs<NIN> in, float* out, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float xi[NIN], yo[1];
        for (int j = 0; j < NIN; j++) xi[j] = in.p[j][i];
        op(xi, yo);
        out[i] = yo[0];
    }
}

// ---- version 3 (production, src/denoise.cu map_kernel): version 2 with float4 loads and stores for the bulk
// when every pointer is 16-byte aligned (one 16-byte transaction per stream per thread), a scalar tail for the
// n % 4 leftovers, and the scalar path for misaligned pointers. Run here with the sweep's block size.

template <class Op, int NIN>
static cudaError_t run_version(int version, const Op& op, Ptrs<NIN> in, float* out, long long n, int block) {
    long long blocks = (n + block - 1) / block;
    switch (version) {
        case 1:
            return launch(update_kernel1<Op, NIN>, dim3(unsigned(blocks)), dim3(block), 0, nullptr, op, in, out, n);
        case 2:
            if (blocks > (1 << 16)) blocks = 1 << 16;
            return launch(update_kernel2<Op, NIN>, dim3(unsigned(blocks)), dim3(block), 0, nullptr, op, in, out, n);
        case 3: {
            bool vec4 = aligned4(out);
            for (int j = 0; j < NIN; j++) vec4 &= aligned4(in.p[j]);
            const long long work = vec4 ? n / 4 + 3 : n;
            blocks = (work + block - 1) / block;
            if (blocks > (1 << 16)) blocks = 1 << 16;
            return launch(map_kernel<NIN, 1, Op, float>, dim3(unsigned(blocks)), dim3(block), 0, nullptr, op, in,
                          OutPtrs<1>{{out}}, n, int(vec4));
        }
    }
    std::fprintf(stderr, "unknown version %d\n", version);
    std::exit(2);
}

static cudaError_t run_update(Update u, int version, const std::vector<float*>& in, float* out, long long n, int block) {
    const Coefs c = coefs(u);
    if (u == Update::Heun)
        return run_version(version, HeunOp{float(c.a), float(c.b)}, Ptrs<4>{{in[0], in[1], in[2], in[3]}}, out, n, block);
    return run_version(version, LinComb2Op{float(c.a), float(c.b)}, Ptrs<2>{{in[0], in[1]}}, out, n, block);
}

int main(int argc, char** argv) {
#ifdef ONESTEP_EMULATION
    long long n = 4099;  // small and ragged: every GPU thread is a fiber on one CPU core
#else
    long long n = 64LL * 32 * 32 * 3 * 64;  // 64 CIFAR-size images, 64 times over: 12.6M floats, far beyond L2
#endif
    int only = 0;
    if (argc > 1) only = std::atoi(argv[1]);
    if (argc > 2) n = std::atoll(argv[2]);
    std::printf("denoising updates, n=%lld\n", n);
    const int block_sizes[] = {64, 128, 256, 512, 1024};
    bool all_ok = true;
    for (Update u : {Update::Heun, Update::ConsistencyOutput, Update::Renoise}) {
        const int nin = update_inputs(u);
        // One float of headroom in each buffer, so the same data can also be read one float off alignment.
        std::vector<std::vector<float>> h(nin);
        std::vector<float*> d(nin);
        for (int j = 0; j < nin; j++) {
            h[j] = dev::random_normal(size_t(n) + 1, 10 + j);
            d[j] = dev::to_device(h[j]);
        }
        float* out = dev::device_filled(size_t(n) + 1, 0.0f);
        for (int misaligned = 0; misaligned <= 1; misaligned++) {
            std::vector<std::vector<float>> view(nin);
            std::vector<float*> dv(nin);
            for (int j = 0; j < nin; j++) {
                view[j].assign(h[j].begin() + misaligned, h[j].begin() + misaligned + n);
                dv[j] = d[j] + misaligned;
            }
            const std::vector<double> ref = update_cpu(u, view, size_t(n));
            // A header per case, then the same "version V block B" lines as the other dev files (run_gpu_checks.sh's
            // summary keys its rows by the last "== " line).
            std::printf("== denoise update: %s, %s pointers\n", update_name(u), misaligned ? "misaligned" : "16-byte aligned");
            for (int version = 1; version <= 3; version++) {
                if (only && version != only) continue;
                for (int block : block_sizes) {
                    dev_check(cudaMemset(out, 0xFF, (size_t(n) + 1) * sizeof(float)));  // NaN: a skipped value fails
                    dev_check(run_update(u, version, dv, out + misaligned, n, block));
                    dev_check(cudaDeviceSynchronize());
                    const bool ok = dev::validate(update_name(u), out + misaligned, ref, 1e-6, 1e-6);
                    all_ok &= ok;
#ifdef ONESTEP_EMULATION
                    std::printf("version %d block %4d: %s\n", version, block, ok ? "ok" : "MISMATCH");
#else
                    const float ms = dev::time_ms([&] { dev_check(run_update(u, version, dv, out + misaligned, n, block)); });
                    const double gbs = double(nin + 1) * n * sizeof(float) / (ms * 1e-3) / 1e9;
                    std::printf("version %d block %4d: %s  %8.4f ms  %7.1f GB/s\n", version, block,
                                ok ? "ok      " : "MISMATCH", ms, gbs);
#endif
                }
            }
        }
        for (float* p : d) dev_check(cudaFree(p));
        dev_check(cudaFree(out));
    }
    std::printf(all_ok ? "all versions match the CPU reference\n" : "SOME VERSIONS DO NOT MATCH the CPU reference\n");
    return all_ok ? 0 : 1;
}
