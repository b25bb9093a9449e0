// test_denoise.cpp: the sampler updates and elementwise ops of kernels/src/denoise.cu, through the CUDA
// emulation, against double references: every op on lengths that exercise the float4 body, the scalar
// tail and the unaligned path, in place and out of place; then a whole EDM Heun sampler (Karras et al.
// 2022, Alg. 1) and a multistep consistency sampler (Song et al. 2023, Alg. 1) driven by the kernels,
// with a denoiser known in closed form, against the same samplers in double.
#include "onestep_kernels.h"
#include "test_common.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <functional>
#include <vector>

using ktest::expect;
using ktest::expect_close;
using std::vector;

namespace {

const long long kLengths[] = {1, 3, 4, 5, 8, 1023, 4099, 70001};

// Runs `kernel` on views starting `offset` floats into fresh buffers (offset 1 breaks 16-byte alignment
// and forces the scalar path) and compares the output with `ref`.
void check_op(const char* name, int nin, const std::function<onestep_status(const vector<const float*>&, float*, long long)>& kernel,
              const std::function<double(const vector<double>&)>& ref, bool in_place_on_first) {
    ktest::Rng rng(std::hash<std::string>{}(name));
    for (long long n : kLengths)
        for (int offset = 0; offset < 2; offset++) {
            vector<vector<float>> in(nin);
            for (auto& v : in) v = rng.normals(size_t(n + offset), 0.0, 2.0);
            vector<float> out(size_t(n + offset), NAN);
            vector<double> want(static_cast<size_t>(n));
            for (long long i = 0; i < n; i++) {
                vector<double> args(nin);
                for (int j = 0; j < nin; j++) args[j] = in[j][offset + i];
                want[i] = ref(args);
            }
            vector<const float*> ptrs;
            for (auto& v : in) ptrs.push_back(v.data() + offset);
            float* dst = in_place_on_first ? in[0].data() + offset : out.data() + offset;
            const onestep_status st = kernel(ptrs, dst, n);
            char what[96];
            std::snprintf(what, sizeof what, "%s n=%lld offset=%d%s", name, n, offset, in_place_on_first ? " in place" : "");
            if (!expect(st == ONESTEP_OK, "%s returned an error", what) || !ktest::sync()) continue;
            expect_close(what, dst, want.data(), size_t(n), 1e-6, 1e-5);
        }
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

void check_ops() {
    const double s = 1.7, sn = 0.9, t = 3.1, eps = 0.002, sd = 0.5;
    for (int inplace = 0; inplace < 2; inplace++) {
        check_op("euler x_next", 2, [&](auto& p, float* o, long long n) {
            return onestep_edm_euler_step(p[0], p[1], o, nullptr, n, s, sn, nullptr);
        }, [&](auto& a) { return a[0] + (sn - s) * (a[0] - a[1]) / s; }, inplace);
        check_op("heun x_next", 4, [&](auto& p, float* o, long long n) {
            return onestep_edm_heun_step(p[0], p[1], p[2], p[3], o, n, s, sn, nullptr);
        }, [&](auto& a) { return a[0] + (sn - s) * (a[1] + (a[2] - a[3]) / sn) / 2; }, inplace);
        check_op("consistency output", 2, [&](auto& p, float* o, long long n) {
            return onestep_consistency_output(p[0], p[1], o, n, t, eps, sd, nullptr);
        }, [&](auto& a) {
            return sd * sd / ((t - eps) * (t - eps) + sd * sd) * a[0] + sd * (t - eps) / std::sqrt(sd * sd + t * t) * a[1];
        }, inplace);
        check_op("renoise", 2, [&](auto& p, float* o, long long n) {
            return onestep_consistency_renoise(p[0], p[1], o, n, t, eps, nullptr);
        }, [&](auto& a) { return a[0] + std::sqrt(t * t - eps * eps) * a[1]; }, inplace);
        check_op("add", 2, [&](auto& p, float* o, long long n) { return onestep_add(p[0], p[1], o, n, nullptr); },
                 [&](auto& a) { return a[0] + a[1]; }, inplace);
        check_op("scale", 1, [&](auto& p, float* o, long long n) { return onestep_scale(-0.3f, p[0], o, n, nullptr); },
                 [&](auto& a) { return double(-0.3f) * a[0]; }, inplace);
        check_op("axpby", 2, [&](auto& p, float* o, long long n) {
            return onestep_axpby(0.8f, p[0], -1.3f, p[1], o, n, nullptr);
        }, [&](auto& a) { return double(0.8f) * a[0] + double(-1.3f) * a[1]; }, inplace);
        check_op("silu", 1, [&](auto& p, float* o, long long n) { return onestep_silu_forward(p[0], o, n, nullptr); },
                 [&](auto& a) { return a[0] * sigmoid(a[0]); }, inplace);
        check_op("silu backward", 2, [&](auto& p, float* o, long long n) {
            return onestep_silu_backward(p[0], p[1], o, n, nullptr);
        }, [&](auto& a) { return a[1] * sigmoid(a[0]) * (1 + a[0] * (1 - sigmoid(a[0]))); }, inplace);
    }
    // axpy updates y in place by definition: y = alpha x + y.
    check_op("axpy", 2, [&](auto& p, float* o, long long n) {
        std::memcpy(o, p[1], size_t(n) * sizeof(float));  // y starts as the second input
        return onestep_axpy(0.75f, p[0], o, n, nullptr);
    }, [&](auto& a) { return 0.75 * a[0] + a[1]; }, false);
    // axpby's rounding is part of its contract (fmaf(b, z, a x), as the Java CPU backend computes c_skip x + c_out F):
    // bit-exact, not just close.
    ktest::Rng rng(5);
    {
        vector<float> ax = rng.normals(4099), az = rng.normals(4099), ay(4099, NAN);
        expect(onestep_axpby(0.3f, ax.data(), 1.7f, az.data(), ay.data(), 4099, nullptr) == ONESTEP_OK, "axpby: %s",
               onestep_last_error_message());
        ktest::sync();
        int bad = 0;
        for (int i = 0; i < 4099; i++) bad += ay[i] != std::fmaf(1.7f, az[i], 0.3f * ax[i]);
        expect(bad == 0, "axpby is not fmaf(b, z, a x) bit for bit%s");
    }
    // The euler d output, checked on its own.
    vector<float> x = rng.normals(1001), D = rng.normals(1001), xn(1001), d(1001, NAN);
    vector<double> want(1001);
    for (int i = 0; i < 1001; i++) want[i] = (double(x[i]) - D[i]) / s;
    expect(onestep_edm_euler_step(x.data(), D.data(), xn.data(), d.data(), 1001, s, sn, nullptr) == ONESTEP_OK,
           "euler with d returned an error%s");
    ktest::sync();
    expect_close("euler d", d.data(), want.data(), 1001, 1e-6, 1e-5);
}

void check_argument_errors() {
    float b[8] = {};
    expect(onestep_edm_euler_step(b, b, b, nullptr, 8, 0.0, 0.0, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "euler with sigma = 0 was accepted%s");
    expect(std::strstr(onestep_last_error_message(), "onestep_edm_euler_step(n=8, sigma=0") != nullptr,
           "message does not name the kernel: %s", onestep_last_error_message());
    expect(onestep_edm_heun_step(b, b, b, b, b, 8, 1.0, 0.0, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "heun to sigma_next = 0 was accepted%s");
    const double inf = std::numeric_limits<double>::infinity();
    expect(onestep_edm_heun_step(b, b, b, b, b, 8, 1.0, inf, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "heun to sigma_next = inf was accepted%s");
    expect(onestep_edm_heun_step(b, b, b, b, b, 8, inf, 1.0, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "heun from sigma = inf was accepted%s");
    expect(onestep_edm_euler_step(b, b, b, nullptr, 8, 1.0, inf, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "euler to sigma_next = inf was accepted%s");
    expect(onestep_consistency_renoise(b, b, b, 8, 0.001, 0.002, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "renoise with tau < eps was accepted%s");
    expect(onestep_add(b, b, b, -1, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT, "n = -1 was accepted%s");
    expect(onestep_add(b, b, b, 0, nullptr) == ONESTEP_OK, "n = 0 was rejected%s");
}

// For data ~ N(0, sd^2 I) the ideal denoiser is D(x; s) = x sd^2 / (s^2 + sd^2) (the posterior mean).
double ideal_denoiser_gain(double s, double sd) { return sd * sd / (s * s + sd * sd); }

void check_edm_heun_sampler() {
    const int N = 18, n = 2053;
    const double smin = 0.002, smax = 80, rho = 7, sd = 0.5;
    vector<double> sig(N + 1);
    for (int i = 0; i < N; i++)
        sig[i] = std::pow(std::pow(smax, 1 / rho) + double(i) / (N - 1) * (std::pow(smin, 1 / rho) - std::pow(smax, 1 / rho)), rho);
    sig[N] = 0;
    ktest::Rng rng(11);
    vector<float> x = rng.normals(n, 0.0, smax), D(n), d(n), xe(n), De(n);
    vector<double> xr(x.begin(), x.end());
    bool ok = true;
    for (int i = 0; i < N; i++) {
        const double g = ideal_denoiser_gain(sig[i], sd);
        for (int k = 0; k < n; k++) D[k] = float(g * x[k]);
        ok &= onestep_edm_euler_step(x.data(), D.data(), xe.data(), d.data(), n, sig[i], sig[i + 1], nullptr) == ONESTEP_OK;
        ok &= ktest::sync();
        if (sig[i + 1] > 0) {
            const double g2 = ideal_denoiser_gain(sig[i + 1], sd);
            for (int k = 0; k < n; k++) De[k] = float(g2 * xe[k]);
            ok &= onestep_edm_heun_step(x.data(), d.data(), xe.data(), De.data(), x.data(), n, sig[i], sig[i + 1], nullptr) == ONESTEP_OK;
            ok &= ktest::sync();
        } else {
            x = xe;
        }
        // double reference of the same step
        for (int k = 0; k < n; k++) {
            const double dr = (xr[k] - g * xr[k]) / sig[i];
            double xn = xr[k] + (sig[i + 1] - sig[i]) * dr;
            if (sig[i + 1] > 0) {
                const double d2 = (xn - ideal_denoiser_gain(sig[i + 1], sd) * xn) / sig[i + 1];
                xn = xr[k] + (sig[i + 1] - sig[i]) * (dr + d2) / 2;
            }
            xr[k] = xn;
        }
    }
    expect(ok, "a sampler step returned an error%s");
    expect_close("EDM Heun sampler, 18 steps", x.data(), xr.data(), n, 1e-4, 1e-3);
    // The exact ODE solution maps x_T = smax z to x_0 = sd z * smax / sqrt(smax^2 + sd^2): std about sd.
    double sq = 0;
    for (int k = 0; k < n; k++) sq += xr[k] * xr[k];
    const double sample_std = std::sqrt(sq / n);
    char detail[96];
    std::snprintf(detail, sizeof detail, "sample std %.4f, want about 0.5", sample_std);
    expect(std::fabs(sample_std - 0.5) < 0.05, "EDM Heun sampler: %s", detail);
}

void check_multistep_consistency() {
    // With F chosen so that f(x, t) is the ideal denoiser (f(x,t) = g(t) x), two steps: x = f(T z, T), then
    // x <- f(x + sqrt(tau^2 - eps^2) z', tau). F = (g x - c_skip x) / c_out.
    const double T = 80, eps = 0.002, sd = 0.5, tau = 0.8;
    const int n = 777;
    ktest::Rng rng(13);
    vector<float> z = rng.normals(n), z2 = rng.normals(n), x(n), F(n), out(n);
    auto cskip = [&](double t) { return sd * sd / ((t - eps) * (t - eps) + sd * sd); };
    auto cout_ = [&](double t) { return sd * (t - eps) / std::sqrt(sd * sd + t * t); };
    vector<double> xr(n);
    for (int k = 0; k < n; k++) x[k] = float(T * z[k]);
    for (double t : {T, tau}) {
        if (t != T) {
            expect(onestep_consistency_renoise(x.data(), z2.data(), x.data(), n, t, eps, nullptr) == ONESTEP_OK, "renoise failed%s");
            ktest::sync();
        }
        const double g = ideal_denoiser_gain(t, sd);
        for (int k = 0; k < n; k++) F[k] = float((g - cskip(t)) * x[k] / cout_(t));
        expect(onestep_consistency_output(x.data(), F.data(), x.data(), n, t, eps, sd, nullptr) == ONESTEP_OK, "output failed%s");
        ktest::sync();
    }
    for (int k = 0; k < n; k++) {
        double v = ideal_denoiser_gain(T, sd) * T * double(z[k]);
        v = v + std::sqrt(tau * tau - eps * eps) * double(z2[k]);
        xr[k] = ideal_denoiser_gain(tau, sd) * v;
    }
    expect_close("2-step consistency sampler", x.data(), xr.data(), n, 1e-5, 1e-4);
    // Boundary condition f(x, eps) = x whatever F is.
    vector<float> y(n);
    expect(onestep_consistency_output(z.data(), z2.data(), y.data(), n, eps, eps, sd, nullptr) == ONESTEP_OK, "boundary call failed%s");
    ktest::sync();
    vector<double> zd(z.begin(), z.end());
    expect_close("consistency boundary f(x, eps) = x", y.data(), zd.data(), n, 0.0, 0.0);
}

// onestep_convert against the by-value oracles of test_common.h: every one of the 65,536 bit patterns of each
// 16-bit format widened to fp32 (exact), and fp32 values narrowed: exact ties (which must go to the even
// significand), the overflow edge, subnormal and underflow edges, signed zeros, infinities, NaN, and random
// values spread over every exponent. Then one chained fp16 -> bf16 conversion and the argument errors.
void check_convert() {
    const struct {
        onestep_dtype t;
        const ktest::Format16* f;
        const char* name;
    } formats[] = {{ONESTEP_FLOAT16, &ktest::kHalf, "fp16"}, {ONESTEP_BFLOAT16, &ktest::kBf16, "bf16"}};
    for (const auto& fm : formats) {
        const ktest::Format16& f = *fm.f;
        char what[64];
        // widen: all bit patterns
        uint16_t* bits = static_cast<uint16_t*>(std::aligned_alloc(256, 65536 * 2));
        float* wide = static_cast<float*>(std::aligned_alloc(256, 65536 * 4));
        for (int i = 0; i < 65536; i++) bits[i] = uint16_t(i);
        expect(onestep_convert(bits, fm.t, wide, ONESTEP_FLOAT32, 65536, nullptr) == ONESTEP_OK, "convert: %s",
               onestep_last_error_message());
        ktest::sync();
        int bad = 0;
        for (int i = 0; i < 65536; i++) {
            const double want = ktest::decode16(f, uint16_t(i));
            const bool ok = std::isnan(want) ? std::isnan(wide[i]) : (double(wide[i]) == want &&
                                                                      std::signbit(wide[i]) == std::signbit(want));
            if (!ok && bad++ < 5) std::printf("    MISMATCH %s widen 0x%04x: got %.9g, want %.9g\n", fm.name, i, wide[i], want);
        }
        std::snprintf(what, sizeof what, "%s widened exactly (%%s)", fm.name);
        expect(bad == 0, what, bad ? "mismatches" : "");

        // narrow: edge cases and random values
        vector<float> x;
        const double largest = std::ldexp(2.0 - std::ldexp(1.0, -f.mant_bits), f.max_exp);
        const double ulp_top = std::ldexp(1.0, f.max_exp - f.mant_bits);
        const double sub_unit = std::ldexp(1.0, f.min_exp - f.mant_bits);
        for (double v : {0.0, -0.0, 1.0, -1.0, largest, largest + ulp_top / 2, largest + ulp_top / 4,
                         largest + ulp_top / 2 * 0.999, sub_unit, sub_unit / 2, sub_unit / 2 * 1.001, sub_unit * 1.5,
                         sub_unit * 2.5, std::ldexp(1.0, f.min_exp), std::ldexp(1.0, f.min_exp) * (1 - 1e-3),
                         double(INFINITY), double(-INFINITY)}) {
            x.push_back(float(v));
            x.push_back(float(-v));
        }
        // exact ties between neighbours in several binades: 1 + (k + 1/2) ulp for odd and even k
        for (int e : {-10, 0, 3, 9})
            for (int k = 0; k < 4; k++) x.push_back(float(std::ldexp(1.0 + (k + 0.5) * std::ldexp(1.0, -f.mant_bits), e)));
        ktest::Rng rng(2026);
        for (int i = 0; i < 20000; i++) {
            const int e = rng.range(f.min_exp - f.mant_bits - 2, f.max_exp + 1);
            x.push_back(float(std::ldexp(rng.uniform(-2.0, 2.0), e)));
        }
        x.push_back(NAN);
        const size_t n = x.size();
        float* dx = static_cast<float*>(std::aligned_alloc(256, (n * 4 + 255) / 256 * 256));
        uint16_t* dy = static_cast<uint16_t*>(std::aligned_alloc(256, (n * 2 + 255) / 256 * 256));
        std::memcpy(dx, x.data(), n * 4);
        expect(onestep_convert(dx, ONESTEP_FLOAT32, dy, fm.t, (long long)n, nullptr) == ONESTEP_OK, "convert: %s",
               onestep_last_error_message());
        ktest::sync();
        bad = 0;
        for (size_t i = 0; i < n; i++) {
            const double want = ktest::round_to(f, x[i]), got = ktest::decode16(f, dy[i]);
            const bool ok = std::isnan(want) ? std::isnan(got) : (got == want && std::signbit(got) == std::signbit(want));
            if (!ok && bad++ < 5)
                std::printf("    MISMATCH %s narrow %.9g: got %.9g (0x%04x), want %.9g\n", fm.name, x[i], got, dy[i], want);
        }
        std::snprintf(what, sizeof what, "%s narrowed to nearest even (%%s)", fm.name);
        expect(bad == 0, what, bad ? "mismatches" : "");
        // Scaled on the way (a denoiser's c_in x): the fp32 product, rounded once, as scale then convert give it.
        const float alpha = 0.3712f;
        expect(onestep_convert_scaled(alpha, dx, ONESTEP_FLOAT32, dy, fm.t, (long long)n, nullptr) == ONESTEP_OK,
               "convert_scaled: %s", onestep_last_error_message());
        ktest::sync();
        bad = 0;
        for (size_t i = 0; i < n; i++) {
            const float product = alpha * x[i];
            const double want = ktest::round_to(f, product), got = ktest::decode16(f, dy[i]);
            const bool ok = std::isnan(want) ? std::isnan(got) : (got == want && std::signbit(got) == std::signbit(want));
            if (!ok && bad++ < 5)
                std::printf("    MISMATCH %s scaled %.9g: got %.9g (0x%04x), want %.9g\n", fm.name, x[i], got, dy[i],
                            want);
        }
        std::snprintf(what, sizeof what, "%s scaled, then narrowed once (%%s)", fm.name);
        expect(bad == 0, what, bad ? "mismatches" : "");
        std::free(dx), std::free(dy), std::free(bits), std::free(wide);
    }

    // fp16 -> bf16: one rounding of the (exact) widened value
    uint16_t* h = static_cast<uint16_t*>(std::aligned_alloc(256, 65536 * 2));
    uint16_t* b = static_cast<uint16_t*>(std::aligned_alloc(256, 65536 * 2));
    for (int i = 0; i < 65536; i++) h[i] = uint16_t(i);
    expect(onestep_convert(h, ONESTEP_FLOAT16, b, ONESTEP_BFLOAT16, 65536, nullptr) == ONESTEP_OK, "convert: %s",
           onestep_last_error_message());
    ktest::sync();
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        const double want = ktest::round_to(ktest::kBf16, ktest::decode16(ktest::kHalf, uint16_t(i)));
        const double got = ktest::decode16(ktest::kBf16, b[i]);
        if (!(std::isnan(want) ? std::isnan(got) : got == want) && bad++ < 5)
            std::printf("    MISMATCH fp16 0x%04x -> bf16: got %.9g, want %.9g\n", i, got, want);
    }
    expect(bad == 0, "fp16 -> bf16 (%s)", bad ? "mismatches" : "");
    std::free(h), std::free(b);

    float one = 1.0f;
    expect(onestep_convert(&one, onestep_dtype(9), &one, ONESTEP_FLOAT32, 1, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "an unknown dtype was accepted%s");
    expect(std::strstr(onestep_last_error_message(), "onestep_convert(n=1, unknown -> float32)") != nullptr,
           "message does not name the function and types: %s", onestep_last_error_message());
    expect(onestep_convert(nullptr, ONESTEP_FLOAT32, &one, ONESTEP_FLOAT16, 1, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "a null x was accepted%s");
}

}  // namespace

int main() {
    const auto start = std::chrono::steady_clock::now();
    check_ops();
    check_argument_errors();
    check_edm_heun_sampler();
    check_multistep_consistency();
    check_convert();
    return ktest::finish("test_denoise", start);
}
