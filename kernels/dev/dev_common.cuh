// dev_common.cuh: helpers of the kernel development files (llm.c's dev/cuda pattern): error checks,
// device buffers, validation of a kernel version against the CPU reference, and, under nvcc only,
// timing with CUDA events after flushing L2.
#pragma once
#include "cuda_compat.cuh"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define dev_check(call)                                                                                   \
    do {                                                                                                  \
        cudaError_t e_ = (call);                                                                          \
        if (e_ != cudaSuccess) {                                                                          \
            std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, cudaGetErrorName(e_), cudaGetErrorString(e_)); \
            std::exit(2);                                                                                 \
        }                                                                                                 \
    } while (0)

namespace dev {

// Deterministic pseudo-normal values (xorshift + Box-Muller), the same under nvcc and the emulation.
inline std::vector<float> random_normal(size_t n, unsigned long long seed, float mean = 0.0f, float stdev = 1.0f) {
    std::vector<float> v(n);
    unsigned long long s = seed * 0x9E3779B97F4A7C15ull + 1;
    auto next = [&]() {
        s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
        return ((s * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
    };
    for (auto& x : v) {
        const double u1 = next() + 1e-300, u2 = next();
        x = float(mean + stdev * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    }
    return v;
}

template <typename T>
T* to_device(const std::vector<T>& h) {
    T* d = nullptr;
    dev_check(cudaMalloc(&d, h.size() * sizeof(T)));
    dev_check(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

inline float* device_filled(size_t n, float value) {
    std::vector<float> h(n, value);
    return to_device(h);
}

// Compares the device result with the reference: |got - ref| <= tol + |ref| * rel (NaN fails), prints
// the first mismatches, returns whether it passed.
inline bool validate(const char* name, const float* d_got, const std::vector<double>& ref, double tol, double rel) {
    std::vector<float> got(ref.size());
    dev_check(cudaMemcpy(got.data(), d_got, got.size() * sizeof(float), cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        const bool both_inf = std::isinf(ref[i]) && double(got[i]) == ref[i];
        if (both_inf || std::fabs(double(got[i]) - ref[i]) <= tol + std::fabs(ref[i]) * rel) continue;
        if (bad < 5) std::printf("    mismatch %s[%zu]: got %.8g, want %.8g\n", name, i, got[i], ref[i]);
        bad++;
    }
    if (bad) std::printf("    %s: %zu of %zu values off\n", name, bad, ref.size());
    return bad == 0;
}

#ifndef ONESTEP_EMULATION
// Mean time of `launch` in ms over `repeats` runs, each after overwriting a buffer larger than L2 so that
// every run reads its inputs from DRAM (the regime the U-Net's activations live in).
template <class F>
float time_ms(F launch, int repeats = 20) {
    int dev_id = 0, l2 = 0;
    dev_check(cudaGetDevice(&dev_id));
    dev_check(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev_id));
    void* flush = nullptr;
    const size_t flush_bytes = size_t(l2) * 2;
    dev_check(cudaMalloc(&flush, flush_bytes));
    cudaEvent_t start, stop;
    dev_check(cudaEventCreate(&start));
    dev_check(cudaEventCreate(&stop));
    float total = 0.0f;
    launch();  // warm-up (module load, first-touch)
    for (int i = 0; i < repeats; i++) {
        dev_check(cudaMemset(flush, i, flush_bytes));
        dev_check(cudaEventRecord(start));
        launch();
        dev_check(cudaEventRecord(stop));
        dev_check(cudaEventSynchronize(stop));
        float ms = 0.0f;
        dev_check(cudaEventElapsedTime(&ms, start, stop));
        total += ms;
    }
    dev_check(cudaGetLastError());
    dev_check(cudaEventDestroy(start));
    dev_check(cudaEventDestroy(stop));
    dev_check(cudaFree(flush));
    return total / repeats;
}

// Mean time of `launch` in ms over `repeats` runs queued back to back between one pair of events, after a warm-up:
// no L2 flush and no gap, the way a captured pass (or PyTorch's peers replayed in a CUDA graph, bench/gpu/
// torch_peers.py) runs a kernel. With kernels longer than a launch (a few us), the host's launch time hides behind
// the device's work. time_ms's single launches on a flushed L2 are the conservative number; this one is the number
// to set next to a graph-timed peer.
template <class F>
float time_ms_back_to_back(F launch, int repeats = 20) {
    cudaEvent_t start, stop;
    dev_check(cudaEventCreate(&start));
    dev_check(cudaEventCreate(&stop));
    launch();
    dev_check(cudaDeviceSynchronize());
    dev_check(cudaEventRecord(start));
    for (int i = 0; i < repeats; i++) launch();
    dev_check(cudaEventRecord(stop));
    dev_check(cudaEventSynchronize(stop));
    float ms = 0.0f;
    dev_check(cudaEventElapsedTime(&ms, start, stop));
    dev_check(cudaGetLastError());
    dev_check(cudaEventDestroy(start));
    dev_check(cudaEventDestroy(stop));
    return ms / repeats;
}
#endif

}  // namespace dev
