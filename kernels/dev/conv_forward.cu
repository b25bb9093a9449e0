// conv_forward.cu: development record of the fp16 convolution forward (NHWC, 3x3 and 1x1), the U-Net's hot op at
// batch 1 (bench/results/2026-11-26-h100-run3.txt: cuDNN's sm90_xmma_fprop_implicit_gemm kernels at 10.2 us each, 30%
// of the CIFAR-size 1-step sample). llm.c's dev/cuda pattern: a CPU reference in double, numbered versions, each
// validated against the reference, then (nvcc only) timed with an L2 flush, in us and TFLOP/s.
//   version 1: the portable direct convolution (src/layers.cu, onestep_conv2d_nhwc_typed): one thread per output,
//              fp32 FMAs on CUDA cores; the correctness twin.
//   versions 2-12: the tensor-core implicit GEMM (src/conv.cu, onestep_conv2d_igemm_typed) with tile configurations
//              1-11 (onestep_conv2d_igemm_config_name): output tiles of 16-64 pixels x 32-64 channels, the GEMM
//              depth split over 2-8 warps of a block, each with its own cp.async ring of 3-4 stages; configs 8-11
//              (versions 9-12, sm_90) also split it over a thread block cluster of 2-8 blocks.
//   version 13: the same with config 0, the cost model's pick.
//   versions 14-25 (the shapes a ResnetBlock2D's group norm feeds; eighteenth session): the same convolution with the
//              group norm (32 groups) + SiLU as its prologue (onestep_groupnorm_conv2d_igemm_typed), config 0 (v14)
//              and configs 1-11: every block computes its sample's statistics from x, then normalizes its A tiles in
//              shared memory as they land. Against versions 2-13 of the same shape, the difference is what the
//              prologue costs; against that plus dev_groupnorm_forward's time at the shape, what the fusion saves.
//              Tiles whose rows do not fit one sample (Ho Wo % BM) are refused, and print so. Where the input is an
//              up block's cat(h, skip) (nineteenth session), versions 14-25 gather it from h and skip instead, never
//              stored: conv1 with the prologue (onestep_groupnorm_concat_conv2d_igemm_typed), the 1x1 shortcut
//              without it (onestep_concat_conv2d_igemm_typed); against versions 2-13, what the gather costs.
//   versions 26-37 (twenty-fourth session; configs 0-11): the plain convolution that also leaves, in its epilogue,
//              the statistics a later group norm of its output reads (onestep_conv2d_igemm_stats_typed, per channel as
//              the CUDA backend asks): a (mean, M2) pair per run of 16 output pixels and channel. Against versions
//              2-13, what the epilogue costs.
//   versions 38-49 (configs 0-11, the shapes a ResnetBlock2D's group norm feeds): the group norm prologue on given
//              statistics (onestep_groupnorm_conv2d_igemm_stats_typed, the pairs of versions 26-37 for x, here
//              computed on the host): each block merges its sample's pairs instead of reading the whole sample.
//              Against versions 2-13, what normalizing the tiles costs; with 26-37, what replaces the group norm's
//              launch (dev_groupnorm_forward at the shape) and versions 14-25.
// The upsamplers (nearest 2x, then the 3x3 convolution) run versions 2-13 as onestep_upsample_conv_igemm_typed, the
// upsampled pixels gathered from x on the fly.
// The CUDA backend times these tiles against cuDNN on each shape's first use (Device#ownConv); this file is where
// to see which tile wins where, and how far from the tensor cores' peak each runs.
//
//   nvcc build:  cmake target dev_conv_forward;  run: ./dev_conv_forward [version]
//   emulated:    cmake target dev_conv_forward_emu (validation only, small shapes; a CTest test)
//
// TFLOP/s counts 2 N Ho Wo Cout KH KW Cin (every multiply-add of the convolution, padding taps included).
#include "../src/status.cu"
#include "../src/layers.cu"
#include "../src/conv.cu"
#include "../src/convert.cu"
#include "dev_common.cuh"
#include "../test/stats_ref.h"  // the statistics oracle, shared with test_conv

#include <cstdlib>
#include <vector>

using namespace onestep;

// up: an upsampler (diffusers' Upsample2D: nearest 2x, then the 3x3 convolution); H, W are then the upsampled sizes
// and x holds (H / 2, W / 2) pixels. Version 1 has no such entry (it runs as two launches in the backend); versions
// 2-9 run onestep_upsample_conv_igemm_typed.
struct ConvShape {
    const char* name;
    int N, H, W, Cin, KH, KW, Cout, stride, padding, up = 0;
    int norm = 0;  // also the group norm prologue's versions (a convolution a ResnetBlock2D's group norm feeds)
    int ca = 0;    // > 0: x is an up block's cat(h, skip), h's ca channels first; versions 14-25 then gather it from
                   // the two (onestep_groupnorm_concat_conv2d_igemm_typed where norm, else onestep_concat_conv2d_...)
    int ho() const { return (H + 2 * padding - KH) / stride + 1; }
    int wo() const { return (W + 2 * padding - KW) / stride + 1; }
    size_t x_elems() const { return size_t(N) * (H >> up) * (W >> up) * Cin; }
    double flops() const { return 2.0 * N * ho() * wo() * Cout * KH * KW * Cin; }
};

// ---- CPU reference (double, on the fp16-rounded inputs, KRSC weights) ----------------------------------------------
static std::vector<double> conv_cpu(const ConvShape& s, const std::vector<float>& x, const std::vector<float>& w_krsc,
                                    const std::vector<float>& bias) {
    std::vector<double> y(size_t(s.N) * s.ho() * s.wo() * s.Cout);
    for (int n = 0; n < s.N; n++)
        for (int oy = 0; oy < s.ho(); oy++)
            for (int ox = 0; ox < s.wo(); ox++)
                for (int co = 0; co < s.Cout; co++) {
                    double acc = bias[co];
                    for (int r = 0; r < s.KH; r++)
                        for (int q = 0; q < s.KW; q++) {
                            const int iy = oy * s.stride - s.padding + r, ix = ox * s.stride - s.padding + q;
                            if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W) continue;
                            const float* xp =
                                &x[((size_t(n) * (s.H >> s.up) + (iy >> s.up)) * (s.W >> s.up) + (ix >> s.up)) * s.Cin];
                            const float* wp = &w_krsc[((size_t(co) * s.KH + r) * s.KW + q) * s.Cin];
                            for (int ci = 0; ci < s.Cin; ci++) acc += double(xp[ci]) * wp[ci];
                        }
                    y[((size_t(n) * s.ho() + oy) * s.wo() + ox) * s.Cout + co] = acc;
                }
    return y;
}

// silu(group_norm(x)) in double (the biased variance, eps 1e-5), the input of the prologue versions' reference.
static std::vector<float> group_norm_silu_cpu(const ConvShape& s, const std::vector<float>& x,
                                              const std::vector<float>& gamma, const std::vector<float>& beta,
                                              int groups) {
    std::vector<float> g(x.size());
    const int HW = s.H * s.W, Cg = s.Cin / groups;
    for (int n = 0; n < s.N; n++)
        for (int gr = 0; gr < groups; gr++) {
            double sum = 0, ssd = 0;
            auto at = [&](int p, int c) { return double(x[(size_t(n) * HW + p) * s.Cin + c]); };
            for (int p = 0; p < HW; p++)
                for (int c = gr * Cg; c < (gr + 1) * Cg; c++) sum += at(p, c);
            const double mean = sum / (double(HW) * Cg);
            for (int p = 0; p < HW; p++)
                for (int c = gr * Cg; c < (gr + 1) * Cg; c++) ssd += (at(p, c) - mean) * (at(p, c) - mean);
            const double rstd = 1.0 / std::sqrt(ssd / (double(HW) * Cg) + 1e-5);
            for (int p = 0; p < HW; p++)
                for (int c = gr * Cg; c < (gr + 1) * Cg; c++) {
                    const double u = (at(p, c) - mean) * rstd * gamma[c] + beta[c];
                    g[(size_t(n) * HW + p) * s.Cin + c] = float(u / (1.0 + std::exp(-u)));
                }
        }
    return g;
}

static std::vector<float> rounded_half(std::vector<float> v) {
    for (auto& x : v) x = __half2float(__float2half_rn(x));
    return v;
}

static std::vector<__half> as_half(const std::vector<float>& v) {
    std::vector<__half> h(v.size());
    for (size_t i = 0; i < v.size(); i++) h[i] = __float2half_rn(v[i]);
    return h;
}

// 1 + the library's configurations + config 0.
static const int kVersions = onestep_conv2d_igemm_configs() + 2;
// ... then the group norm prologue's: config 0, then 1 .. the configurations.
static const int kNormVersions = onestep_conv2d_igemm_configs() + 1;
static constexpr int kNormGroups = 32;

// Versions 26-37 (the statistics epilogue) and 38-49 (the prologue on given statistics): configs 0-11 each.
static bool is_norm_version(int v) { return v > kVersions && v <= kVersions + kNormVersions; }
static bool is_stats_version(int v) { return v > kVersions + kNormVersions && v <= kVersions + 2 * kNormVersions; }
static bool is_given_version(int v) { return v > kVersions + 2 * kNormVersions && v <= kVersions + 3 * kNormVersions; }
static int last_version() { return kVersions + 3 * kNormVersions; }
// The config of a version past kVersions: 0 .. configs within its group of kNormVersions.
static int config_of(int v) { return (v - kVersions - 1) % kNormVersions; }

// The group norm prologue's operands (gamma, beta) for the versions past kVersions, and x split into its two sources
// where the shape's input is a concatenation (a: ca channels, b: the rest).
struct NormOperands {
    const __half *gamma, *beta, *a, *b;
    float* stats_out;     // versions 26-37: the epilogue's statistics of y
    const float* given;   // versions 38-49: the statistics of x (the host's)
};

static bool has_concat_versions(const ConvShape& s) { return s.norm || s.ca; }
static bool applies(const ConvShape& s, int v) {
    if (is_norm_version(v)) return has_concat_versions(s);
    // Where the pairs' runs fit (the library refuses the rest): outputs and the readers' inputs in runs of 16 pixels;
    // not the upsamplers and the concatenations (no such entry).
    if (is_stats_version(v)) return !s.up && !s.ca && (s.ho() * s.wo()) % 16 == 0;
    if (is_given_version(v)) return s.norm && !s.ca && (s.H * s.W) % 16 == 0;
    return true;
}

// Runs version v (1: portable on HWIO weights; 2 .. kVersions - 1: igemm config v - 1; kVersions: igemm config 0).
static onestep_status run_version(int v, const ConvShape& s, const __half* x, const __half* w_krsc,
                                  const __half* w_hwio, const __half* bias, __half* y, const NormOperands& nm) {
    if (is_stats_version(v))
        return onestep_conv2d_igemm_stats_typed(x, w_krsc, bias, nullptr, y, s.N, s.H, s.W, s.Cin, s.KH, s.KW, s.Cout,
                                                s.stride, s.padding, config_of(v), nm.stats_out, s.Cout,
                                                ONESTEP_FLOAT16, nullptr);
    if (is_given_version(v))
        return onestep_groupnorm_conv2d_igemm_stats_typed(x, nullptr, nullptr, nullptr, nm.gamma, nm.beta, kNormGroups,
                                                          1e-5f, 1, nm.given, w_krsc, bias, nullptr, y, s.N, s.H, s.W,
                                                          s.Cin, s.KH, s.KW, s.Cout, s.stride, s.padding,
                                                          config_of(v), nullptr, 0, ONESTEP_FLOAT16, nullptr);
    if (is_norm_version(v) && s.ca && s.norm)
        return onestep_groupnorm_concat_conv2d_igemm_typed(nm.a, nullptr, nm.b, nullptr, nm.gamma, nm.beta, kNormGroups,
                                                           1e-5f, 1, w_krsc, bias, nullptr, y, nullptr, nullptr, s.N,
                                                           s.H, s.W, s.ca,
                                                           s.Cin - s.ca, s.KH, s.KW, s.Cout, s.stride, s.padding,
                                                           config_of(v), ONESTEP_FLOAT16, nullptr);
    if (is_norm_version(v) && s.ca)
        return onestep_concat_conv2d_igemm_typed(nm.a, nullptr, nm.b, nullptr, w_krsc, bias, nullptr, y, s.N, s.H, s.W,
                                                 s.ca, s.Cin - s.ca, s.KH, s.KW, s.Cout, s.stride, s.padding,
                                                 config_of(v), ONESTEP_FLOAT16, nullptr);
    if (is_norm_version(v))
        return onestep_groupnorm_conv2d_igemm_typed(x, nullptr, nullptr, nullptr, nm.gamma, nm.beta, kNormGroups, 1e-5f,
                                                    1, w_krsc, bias, nullptr, y, s.N, s.H, s.W, s.Cin, s.KH, s.KW,
                                                    s.Cout, s.stride, s.padding, config_of(v), ONESTEP_FLOAT16,
                                                    nullptr);
    if (s.up)
        return v == 1 ? ONESTEP_ERROR_UNSUPPORTED
                      : onestep_upsample_conv_igemm_typed(x, w_krsc, bias, y, s.N, s.H / 2, s.W / 2, s.Cin, s.Cout,
                                                          v == kVersions ? 0 : v - 1, ONESTEP_FLOAT16, nullptr);
    if (v == 1)
        return onestep_conv2d_nhwc_typed(x, w_hwio, bias, y, s.N, s.H, s.W, s.Cin, s.KH, s.KW, s.Cout, s.stride,
                                         s.padding, ONESTEP_FLOAT16, nullptr);
    return onestep_conv2d_igemm_typed(x, w_krsc, bias, nullptr, y, s.N, s.H, s.W, s.Cin, s.KH, s.KW, s.Cout, s.stride,
                                      s.padding, v == kVersions ? 0 : v - 1, ONESTEP_FLOAT16, nullptr);
}

static const char* version_name(const ConvShape& s, int v) {
    static char buf[96];
    if (v == 1) return "portable direct (CUDA cores)";
    if (is_norm_version(v) || is_stats_version(v) || is_given_version(v)) {
        const char* kind = is_stats_version(v)   ? "stats epilogue"
                           : is_given_version(v) ? "norm on given stats"
                           : s.ca                ? (s.norm ? "norm prologue over a, b" : "gathered from a, b")
                                                 : "norm prologue";
        std::snprintf(buf, sizeof buf, "%s, %s", kind, onestep_conv2d_igemm_config_name(config_of(v)));
        return buf;
    }
    std::snprintf(buf, sizeof buf, "igemm %s", onestep_conv2d_igemm_config_name(v == kVersions ? 0 : v - 1));
    return buf;
}

// Validates every selected version on shape s; under nvcc also times them. Returns whether all passed.
static bool run_shape(const ConvShape& s, int only, bool timing) {
    const size_t nx = s.x_elems(), nw = size_t(s.Cout) * s.KH * s.KW * s.Cin,
                 ny = size_t(s.N) * s.ho() * s.wo() * s.Cout;
    const float wscale = 1.0f / std::sqrt(float(s.KH * s.KW * s.Cin));  // outputs of order 1, as in a trained net
    std::vector<float> x = rounded_half(dev::random_normal(nx, 1)), w = rounded_half(dev::random_normal(nw, 2, 0, wscale)),
                       b = rounded_half(dev::random_normal(s.Cout, 3, 0, 0.1f));
    std::vector<float> w_hwio(nw);
    const int K = s.KH * s.KW * s.Cin;
    for (int co = 0; co < s.Cout; co++)
        for (int k = 0; k < K; k++) w_hwio[size_t(k) * s.Cout + co] = w[size_t(co) * K + k];
    const std::vector<double> ref = conv_cpu(s, x, w, b);
    // The prologue's: gamma around 1, beta around 0, as a trained norm's; its input is x itself.
    const std::vector<float> gamma = rounded_half(dev::random_normal(s.Cin, 4, 1.0f, 0.2f)),
                             beta = rounded_half(dev::random_normal(s.Cin, 5, 0.0f, 0.2f));
    const std::vector<double> norm_ref =
        s.norm ? conv_cpu(s, group_norm_silu_cpu(s, x, gamma, beta, kNormGroups), w, b) : std::vector<double>();
    __half *dx = dev::to_device(as_half(x)), *dw = dev::to_device(as_half(w)), *dwh = dev::to_device(as_half(w_hwio)),
           *db = dev::to_device(as_half(b)), *dy = nullptr;
    // x's channels split between the two sources: the same values, so the same references.
    std::vector<float> xa, xb;
    for (size_t p = 0; s.ca && p < nx / s.Cin; p++)
        for (int c = 0; c < s.Cin; c++) (c < s.ca ? xa : xb).push_back(x[p * s.Cin + c]);
    // Versions 26-37 write (N, Ho Wo / 16, Cout) pairs; 38-49 read x's (N, H W / 16, Cin), where the runs fit.
    const bool runs_out = (s.ho() * s.wo()) % 16 == 0, runs_in = (s.H * s.W) % 16 == 0 && !s.up;
    const size_t n_stats = runs_out ? size_t(s.N) * (s.ho() * s.wo() / 16) * s.Cout * 2 : 2;
    const std::vector<float> x_stats =
        runs_in && s.norm && !s.ca ? stats_ref::run_stats(x, s.N, s.H * s.W, s.Cin, s.Cin) : std::vector<float>(2);
    const NormOperands nm{dev::to_device(as_half(gamma)), dev::to_device(as_half(beta)),
                          s.ca ? dev::to_device(as_half(xa)) : nullptr, s.ca ? dev::to_device(as_half(xb)) : nullptr,
                          dev::to_device(std::vector<float>(n_stats)), dev::to_device(x_stats)};
    float* dy32 = nullptr;
    dev_check(cudaMalloc(&dy, ny * sizeof(__half)));
    dev_check(cudaMalloc(&dy32, ny * sizeof(float)));
    std::printf("%s: N=%d %dx%dx%d -> %d, %dx%d stride %d (%.1f MFLOP)\n", s.name, s.N, s.H, s.W, s.Cin, s.Cout, s.KH,
                s.KW, s.stride, s.flops() / 1e6);
    bool all = true;
    for (int v = 1; v <= last_version(); v++) {
        if ((only && v != only) || !applies(s, v)) continue;
        if (s.up && v == 1) {
            std::printf("  v%d %-40s n/a (an upsampler)\n", v, version_name(s, v));
            continue;
        }
        dev_check(cudaMemset(dy, 0xFF, ny * sizeof(__half)));
        const onestep_status st = run_version(v, s, dx, dw, dwh, db, dy, nm);
        if (st == ONESTEP_ERROR_UNSUPPORTED && v > kVersions) {
            // The library names why (a tile's rows must lie in one sample): after the shapes, the message's tail.
            const char* why = std::strstr(onestep_last_error_message(), "): ");
            std::printf("  v%d %-40s n/a (refused%s)\n", v, version_name(s, v), why ? why + 1 : "");
            continue;
        }
        if (st != ONESTEP_OK) {
            std::printf("  v%d %-40s FAILED to launch: %s\n", v, version_name(s, v), onestep_last_error_message());
            all = false;
            continue;
        }
        dev_check(cudaDeviceSynchronize());
        onestep_convert(dy, ONESTEP_FLOAT16, dy32, ONESTEP_FLOAT32, (long long)ny, nullptr);
        dev_check(cudaDeviceSynchronize());
        // fp16 output: one rounding (2^-11 relative) on top of fp32 accumulation over K terms of order 1/sqrt(K);
        // with the prologue also each normalized input's rounding to fp16, as the group norm kernel stores it.
        bool ok = (is_norm_version(v) && s.norm) || is_given_version(v)
                      ? dev::validate(version_name(s, v), dy32, norm_ref, 4e-3, 4e-3)
                      : dev::validate(version_name(s, v), dy32, ref, 2e-3, 2e-3);
        if (ok && is_stats_version(v)) {
            // The pairs against those of the y this launch stored: the mean within 2^-16 of the run's largest
            // magnitude, M2 within 2^-12 of itself plus 2^-16 of the run's sum of squares (fp32 sums of 16 Cg values).
            std::vector<float> got(n_stats), yv(ny);
            dev_check(cudaMemcpy(got.data(), nm.stats_out, n_stats * sizeof(float), cudaMemcpyDeviceToHost));
            dev_check(cudaMemcpy(yv.data(), dy32, ny * sizeof(float), cudaMemcpyDeviceToHost));
            const std::vector<float> want = stats_ref::run_stats(yv, s.N, s.ho() * s.wo(), s.Cout, s.Cout);
            for (size_t i = 0; ok && i < want.size() / 2; i++) {
                const size_t nr = i / s.Cout, c = i % s.Cout;
                double ss = 0;
                for (int p = 0; p < 16; p++) {
                    const double v = yv[(nr * 16 + p) * s.Cout + c];
                    ss += v * v;
                }
                ok = std::fabs(got[2 * i] - want[2 * i]) <= std::ldexp(std::sqrt(ss), -16) &&
                     std::fabs(got[2 * i + 1] - want[2 * i + 1]) <= std::ldexp(double(want[2 * i + 1]), -12) +
                                                                     std::ldexp(ss, -16);
                if (!ok)
                    std::printf("  %s: statistics of run-channel %zu: got (%g, %g), want (%g, %g)\n",
                                version_name(s, v), i,
                                got[2 * i], got[2 * i + 1], want[2 * i], want[2 * i + 1]);
            }
        }
        all = all && ok;
#ifndef ONESTEP_EMULATION
        if (timing && ok) {
            const float ms = dev::time_ms([&] { run_version(v, s, dx, dw, dwh, db, dy, nm); });
            std::printf("  v%d %-40s %9.2f us  %7.2f TFLOP/s\n", v, version_name(s, v), ms * 1e3,
                        s.flops() / (ms * 1e-3) / 1e12);
        } else
#endif
            std::printf("  v%d %-40s %s\n", v, version_name(s, v), ok ? "ok" : "MISMATCH");
    }
    (void)timing;
    cudaFree(dx), cudaFree(dw), cudaFree(dwh), cudaFree(db), cudaFree(dy), cudaFree(dy32);
    cudaFree(const_cast<__half*>(nm.gamma)), cudaFree(const_cast<__half*>(nm.beta));
    if (s.ca) cudaFree(const_cast<__half*>(nm.a)), cudaFree(const_cast<__half*>(nm.b));
    cudaFree(nm.stats_out), cudaFree(const_cast<float*>(nm.given));
    return all;
}

int main(int argc, char** argv) {
    const int only = argc > 1 ? std::atoi(argv[1]) : 0;
#ifdef ONESTEP_EMULATION
    // Small ragged shapes: the emulation runs every mma lane by lane.
    const ConvShape shapes[] = {{"ragged 3x3", 1, 6, 5, 32, 3, 3, 24, 1, 1},
                                {"norm prologue 4x4, 4-channel groups", 2, 4, 4, 128, 3, 3, 40, 1, 1, 0, 1},
                                {"norm prologue and statistics 4x8", 1, 4, 8, 128, 3, 3, 128, 1, 1, 0, 1},
                                {"norm prologue over cat(a, b), 64 + 64", 1, 4, 4, 128, 3, 3, 24, 1, 1, 0, 1, 64},
                                {"1x1 of cat(a, b), 48 + 16", 1, 4, 3, 64, 1, 1, 40, 1, 0, 0, 0, 48},
                                {"ragged stride 2", 2, 5, 4, 48, 3, 3, 40, 2, 1},
                                {"1x1 shortcut", 1, 4, 4, 64, 1, 1, 72, 1, 0},
                                {"upsampler 3x5 -> 6x10", 1, 6, 10, 32, 3, 3, 24, 1, 1, 1}};
    const bool timing = false;
#else
    // The CIFAR-size U-Net's convolutions (block_out_channels 128/256/256/256, two layers per block) at batch 1, in
    // the order of a pass, then its busiest one at batch 64.
    // norm = 1: a ResnetBlock2D's group norm feeds it, or an attention block's its packed q/k/v projection (also
    // versions 14-25, with SiLU: the attention's norm has none, which costs the same); ca > 0: an up block's
    // cat(h, skip), h with ca channels (versions 14-25 gather it).
    const ConvShape shapes[] = {{"down 32x32 conv", 1, 32, 32, 128, 3, 3, 128, 1, 1, 0, 1},
                                {"downsample 32->16", 1, 32, 32, 128, 3, 3, 128, 2, 1},
                                {"down 16x16 conv", 1, 16, 16, 256, 3, 3, 256, 1, 1, 0, 1},
                                {"down 8x8 conv", 1, 8, 8, 256, 3, 3, 256, 1, 1, 0, 1},
                                {"mid 4x4 conv", 1, 4, 4, 256, 3, 3, 256, 1, 1, 0, 1},
                                {"attention 16x16 norm -> q/k/v (1x1)", 1, 16, 16, 256, 1, 1, 768, 1, 0, 0, 1},
                                {"up 4x4 conv, concat in", 1, 4, 4, 512, 3, 3, 256, 1, 1, 0, 1, 256},
                                {"up 4x4 shortcut 1x1", 1, 4, 4, 512, 1, 1, 256, 1, 0, 0, 0, 256},
                                {"up 16x16 conv, concat in", 1, 16, 16, 512, 3, 3, 256, 1, 1, 0, 1, 256},
                                {"up 32x32 conv, concat in", 1, 32, 32, 384, 3, 3, 128, 1, 1, 0, 1, 256},
                                {"up 32x32 shortcut 1x1", 1, 32, 32, 256, 1, 1, 128, 1, 0, 0, 0, 128},
                                {"upsampler 8x8 -> 16x16", 1, 16, 16, 256, 3, 3, 256, 1, 1, 1},
                                {"upsampler 16x16 -> 32x32", 1, 32, 32, 256, 3, 3, 256, 1, 1, 1},
                                {"down 32x32 conv, batch 64", 64, 32, 32, 128, 3, 3, 128, 1, 1, 0, 1}};
    const bool timing = true;
#endif
    bool all = true;
    for (const ConvShape& s : shapes) all = run_shape(s, only, timing) && all;
    std::printf(all ? "all versions match the reference\n" : "SOME VERSIONS FAILED\n");
    return all ? 0 : 1;
}
