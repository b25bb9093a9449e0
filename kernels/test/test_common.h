// test_common.h: what every emulated kernel test shares: a seeded RNG, the comparison that prints the
// first mismatches (llm.c's tol + |ref| * rel rule), and a pass/fail tally whose closing line CTest shows.
#pragma once
#include "onestep_kernels.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace ktest {

// xorshift64* : reproducible across compilers and platforms, unlike std:: distributions.
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
    uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545F4914F6CDD1Dull;
    }
    double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
    double uniform(double a, double b) { return a + (b - a) * uniform(); }
    int range(int lo, int hi) { return lo + int(next() % uint64_t(hi - lo + 1)); }  // [lo, hi]
    double normal() {
        double u1 = uniform(), u2 = uniform();
        if (u1 < 1e-300) u1 = 1e-300;
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
    std::vector<float> normals(size_t n, double mean = 0.0, double stdev = 1.0) {
        std::vector<float> v(n);
        for (auto& x : v) x = float(mean + stdev * normal());
        return v;
    }
};

struct Tally {
    int checks = 0, failures = 0;
};
inline Tally& tally() {
    static Tally t;
    return t;
}

// Compares got against ref elementwise: |got - ref| <= tol + |ref| * rel, NaN never passes.
// Prints the first mismatches and the worst error; returns whether all passed.
inline bool expect_close(const char* what, const float* got, const double* ref, size_t n, double tol, double rel) {
    tally().checks++;
    int shown = 0;
    size_t bad = 0;
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double err = std::fabs(double(got[i]) - ref[i]);
        const bool ok = err <= tol + std::fabs(ref[i]) * rel;  // false for NaN
        if (!ok) {
            if (shown < 5) {
                std::printf("    MISMATCH %s[%zu]: got %.8g, want %.8g\n", what, i, got[i], ref[i]);
                shown++;
            }
            bad++;
        }
        if (!(err <= worst)) worst = err;
    }
    if (bad) {
        tally().failures++;
        std::printf("  FAIL %s: %zu of %zu values off (max abs error %.3g)\n", what, bad, n, worst);
        return false;
    }
    return true;
}

inline bool expect(bool cond, const char* fmt, const char* detail = "") {
    tally().checks++;
    if (!cond) {
        tally().failures++;
        std::printf("  FAIL ");
        std::printf(fmt, detail);
        std::printf("\n");
    }
    return cond;
}

// Waits for the kernels just queued (a no-op in the emulation, where launches are synchronous; needed
// when these tests run against the real library on a GPU).
inline bool sync() {
    const onestep_status s = onestep_synchronize(nullptr);
    return expect(s == ONESTEP_OK, "onestep_synchronize: %s", onestep_last_error_message());
}

inline std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// The closing line, and the exit status CTest reads.
inline int finish(const char* name, std::chrono::steady_clock::time_point start) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (tally().failures)
        std::printf("%s: FAILED %d of %d checks (%.1f s)\n", name, tally().failures, tally().checks, s);
    else
        std::printf("%s: all %d checks passed (%.1f s)\n", name, tally().checks, s);
    return tally().failures ? 1 : 0;
}

}  // namespace ktest
