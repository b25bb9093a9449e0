// test_common.h: what every emulated kernel test shares: a seeded RNG, the comparison that prints the
// first mismatches (llm.c's tol + |ref| * rel rule), and a pass/fail tally whose closing line CTest shows.
#pragma once
#include "onestep_kernels.h"
#include "onestep_runtime.h"
#ifdef ONESTEP_EMULATION
#include "cuda_emu.h"  // emu::prefetch_calls
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

// How many times the kernels have called prefetch_l2 (the emulation counts them), or -1 on a GPU, which does not.
inline long long prefetch_calls() {
#ifdef ONESTEP_EMULATION
    return emu::prefetch_calls().load();
#else
    return -1;
#endif
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

// A library call that must succeed: on failure the check fails with `what` formatted with the library's message.
inline bool ok(onestep_status s, const char* what) { return expect(s == ONESTEP_OK, what, onestep_last_error_message()); }

// Waits for the kernels just queued (a no-op in the emulation, where launches are synchronous; needed
// when these tests run against the real library on a GPU).
inline bool sync() {
    const onestep_status s = onestep_synchronize(nullptr);
    return expect(s == ONESTEP_OK, "onestep_synchronize: %s", onestep_last_error_message());
}

// The weight prefetch (onestep_set_weight_prefetch, on by default) changes no bit: run(out) queues the kernels under
// test, writing `bytes` at out; once with it on into `on`, once with it off into `off`, and the two must match. In
// the emulation, which counts prefetch_l2's calls (one a thread), only the first run may prefetch: exactly `calls`
// times where that is given, else at least once.
template <typename Run>
inline void check_prefetch_switch(const char* what, void* on, void* off, size_t bytes, Run run,
                                  long long calls = -1) {
    std::printf("  %s: weight prefetch on and off\n", what);
    expect(onestep_weight_prefetch() == 1, "weight prefetch is on by default%s");
    const long long before = prefetch_calls();
    if (!ok(run(on), "prefetch on: %s") || !sync()) return;
    const long long with = prefetch_calls();
    ok(onestep_set_weight_prefetch(0), "weight prefetch off: %s");
    expect(onestep_weight_prefetch() == 0, "the switch reads back as off%s");
    const bool ran = ok(run(off), "prefetch off: %s") && sync();
    const long long without = prefetch_calls();
    ok(onestep_set_weight_prefetch(1), "weight prefetch back on: %s");
    if (!ran) return;
    char line[160];
    std::snprintf(line, sizeof line, "%s: the same bits with or without the prefetch%%s", what);
    expect(std::memcmp(on, off, bytes) == 0, line);
    if (before >= 0) {
        std::snprintf(line, sizeof line, "%s: with it on, %lld prefetch calls (%lld wanted)%%s", what, with - before,
                      calls);
        expect(calls >= 0 ? with - before == calls : with > before, line);
        std::snprintf(line, sizeof line, "%s: with it off, nothing is prefetched%%s", what);
        expect(without == with, line);
    }
}

inline std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// ---- 16-bit oracles, in double, written independently of the library's conversions (by value, not by bit
// tricks): the nearest representable value with ties to the even significand, for IEEE binary16 (11-bit
// significand, normal exponents -14..15, subnormal unit 2^-24) and bfloat16 (8-bit significand, float's exponent
// range, subnormal unit 2^-133). Overflow: a value at or past the midpoint above the largest finite rounds to inf.
struct Format16 {
    int mant_bits, min_exp, max_exp, bias;  // significand bits after the point; normal exponent range
};
constexpr Format16 kHalf{10, -14, 15, 15};
constexpr Format16 kBf16{7, -126, 127, 127};

inline double round_to(const Format16& f, double x) {
    if (std::isnan(x) || std::isinf(x) || x == 0) return x;
    int e;
    std::frexp(std::fabs(x), &e);  // |x| = m 2^e, m in [0.5, 1): the leading bit has weight 2^(e-1)
    const int lead = std::max(e - 1, f.min_exp);
    const double unit = std::ldexp(1.0, lead - f.mant_bits);
    const double r = std::nearbyint(x / unit) * unit;  // x / unit is exact; nearbyint rounds ties to even
    const double largest = std::ldexp(2.0 - std::ldexp(1.0, -f.mant_bits), f.max_exp);
    if (std::fabs(r) > largest) return std::copysign(INFINITY, x);
    return r;
}

inline double decode16(const Format16& f, uint16_t bits) {
    const int exp_bits = f.mant_bits == 10 ? 5 : 8;
    const int sign = bits >> 15, exp = (bits >> f.mant_bits) & ((1 << exp_bits) - 1);
    const int mant = bits & ((1 << f.mant_bits) - 1);
    double v;
    if (exp == (1 << exp_bits) - 1) v = mant ? NAN : INFINITY;
    else if (exp == 0) v = std::ldexp(double(mant), f.min_exp - f.mant_bits);
    else v = std::ldexp(1.0 + std::ldexp(double(mant), -f.mant_bits), exp - f.bias);
    return sign ? -v : v;
}

// Bits of a value already representable in the format (as round_to returns it).
inline uint16_t encode16(const Format16& f, double v) {
    const int exp_bits = f.mant_bits == 10 ? 5 : 8;
    const uint16_t sign = std::signbit(v) ? 0x8000 : 0;
    v = std::fabs(v);
    if (std::isnan(v)) return uint16_t(sign | (((1 << exp_bits) - 1) << f.mant_bits) | (1 << (f.mant_bits - 1)));
    if (std::isinf(v)) return uint16_t(sign | (((1 << exp_bits) - 1) << f.mant_bits));
    int e;
    std::frexp(v, &e);
    if (v == 0 || e - 1 < f.min_exp) return uint16_t(sign | uint16_t(v / std::ldexp(1.0, f.min_exp - f.mant_bits)));
    const int mant = int((std::ldexp(v, -(e - 1)) - 1.0) * (1 << f.mant_bits));
    return uint16_t(sign | ((e - 1 + f.bias) << f.mant_bits) | mant);
}

// The format's unit roundoff (half an ulp relative): 2^-11 for binary16, 2^-8 for bfloat16.
inline double unit_roundoff(const Format16& f) { return std::ldexp(1.0, -f.mant_bits - 1); }

// 256-byte-aligned 16-bit buffers (fp16 or bf16 bits).
struct Buf16 {
    uint16_t* p;
    size_t n;
    explicit Buf16(const std::vector<uint16_t>& v)
        : p(static_cast<uint16_t*>(std::aligned_alloc(256, (v.size() * 2 + 255) / 256 * 256))), n(v.size()) {
        std::memcpy(p, v.data(), v.size() * 2);
    }
    explicit Buf16(size_t count) : p(static_cast<uint16_t*>(std::aligned_alloc(256, (count * 2 + 255) / 256 * 256))), n(count) {
        std::memset(p, 0xFF, count * 2);  // NaN in both formats: an unwritten element shows
    }
    ~Buf16() { std::free(p); }
};

// Rounds v to the 16-bit format in place (so the double reference sees exactly the kernel's inputs) and returns
// the bits.
inline std::vector<uint16_t> narrow(const Format16& f, std::vector<float>& v) {
    std::vector<uint16_t> bits(v.size());
    for (size_t i = 0; i < v.size(); i++) {
        const double r = round_to(f, v[i]);
        v[i] = float(r);
        bits[i] = encode16(f, r);
    }
    return bits;
}

// A 16-bit format as the typed tests name it: its oracle, its dtype and its name in messages.
struct Type16 {
    const Format16& f;
    onestep_dtype dt;
    const char* name;
};

// Random normal values already representable in the format: v holds them as floats, b their bits.
struct Input16 {
    std::vector<float> v;
    Buf16 b;
    Input16(const Type16& t, Rng& rng, size_t n, double stdev = 1.0) : v(rng.normals(n, 0.0, stdev)), b(narrow(t.f, v)) {}
};

inline std::vector<float> widen(const Format16& f, const uint16_t* bits, size_t n) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) v[i] = float(decode16(f, bits[i]));
    return v;
}

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
