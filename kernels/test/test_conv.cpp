// test_conv.cpp: the tensor-core implicit-GEMM convolution (src/conv.cu, onestep_conv2d_igemm_typed) against a
// double reference, in fp16 and bf16, for every tile configuration.
//
// The oracle: the inputs are drawn already representable in the format, so the reference sum
//   ref = sum_{r,s,ci} x[..] w[..] + bias + z
// is exact in double. The kernel accumulates in fp32 in its own order (per warp, then across warps) and rounds once,
// so each output must lie within u |ref| (the one rounding) + 2^-22 K S of it, where S is the sum of the terms'
// magnitudes and K the number of fp32 additions (a forward-error bound far below any indexing mistake: a wrong tap,
// channel or swizzle moves an output by O(S / K)). Shapes are ragged: M and Cout not multiples of any tile,
// strides 1 and 2, 1x1, 3x3 and 1x3 kernels, padding 0 and 1, depths from 1 to many steps per warp.
#include "onestep_kernels.h"
#include "onestep_runtime.h"
#include "stats_ref.h"
#include "test_common.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

using ktest::Buf16;
using ktest::expect;
using ktest::Format16;
using std::vector;

namespace {

using Type = ktest::Type16;

struct Case {
    int N, H, W, Cin, KH, KW, Cout, stride, padding;
};

using ktest::ok;

using Input = ktest::Input16;

// The convolution written out in double on the input `in` (N, H, W, Cin) and the KRSC weights w: each output's sum
// (ref) and the sum of its terms' magnitudes (mag), zero padding outside the image.
template <typename In>
void conv_reference(const Case& c, const vector<In>& in, const vector<float>& w, vector<double>& ref,
                    vector<double>& mag) {
    const int Ho = (c.H + 2 * c.padding - c.KH) / c.stride + 1, Wo = (c.W + 2 * c.padding - c.KW) / c.stride + 1;
    ref.assign(size_t(c.N) * Ho * Wo * c.Cout, 0.0), mag.assign(ref.size(), 0.0);
    for (int n = 0; n < c.N; n++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++)
                for (int co = 0; co < c.Cout; co++) {
                    double acc = 0, m = 0;
                    for (int r = 0; r < c.KH; r++)
                        for (int s = 0; s < c.KW; s++) {
                            const int iy = oy * c.stride - c.padding + r, ix = ox * c.stride - c.padding + s;
                            if (iy < 0 || iy >= c.H || ix < 0 || ix >= c.W) continue;
                            for (int ci = 0; ci < c.Cin; ci++) {
                                const double p = double(in[((size_t(n) * c.H + iy) * c.W + ix) * c.Cin + ci]) *
                                                 w[((size_t(co) * c.KH + r) * c.KW + s) * c.Cin + ci];
                                acc += p, m += std::fabs(p);
                            }
                        }
                    const size_t o = ((size_t(n) * Ho + oy) * Wo + ox) * c.Cout + co;
                    ref[o] = acc, mag[o] = m;
                }
}

void check_case(const Type& t, ktest::Rng& rng, const Case& c) {
    const int Ho = (c.H + 2 * c.padding - c.KH) / c.stride + 1, Wo = (c.W + 2 * c.padding - c.KW) / c.stride + 1;
    const size_t nx = size_t(c.N) * c.H * c.W * c.Cin, nw = size_t(c.Cout) * c.KH * c.KW * c.Cin,
                 ny = size_t(c.N) * Ho * Wo * c.Cout;
    Input x(t, rng, nx), w(t, rng, nw), b(t, rng, c.Cout), z(t, rng, ny);
    // The reference without bias and z, and each output's error bound.
    vector<double> ref, mag;
    conv_reference(c, x.v, w.v, ref, mag);
    const double u = ktest::unit_roundoff(t.f), K = double(c.KH) * c.KW * c.Cin + 2;
    for (int config = 0; config <= onestep_conv2d_igemm_configs(); config++)
        for (int variant = 0; variant < 3; variant++) {  // plain; + bias + z; + bias + z in place (z is y)
            Buf16 y(ny), zy(ny);
            std::memcpy(zy.p, z.b.p, ny * 2);
            uint16_t* out = variant == 2 ? zy.p : y.p;
            ok(onestep_conv2d_igemm_typed(x.b.p, w.b.p, variant ? b.b.p : nullptr, variant == 0 ? nullptr
                                          : variant == 1 ? z.b.p : zy.p, out, c.N, c.H, c.W, c.Cin, c.KH, c.KW, c.Cout,
                                          c.stride, c.padding, config, t.dt, nullptr),
               "conv2d_igemm: %s");
            ktest::sync();
            size_t bad = 0, first = 0;
            double want_first = 0;
            for (size_t o = 0; o < ny; o++) {
                const int co = int(o % c.Cout);
                double want = ref[o], m = mag[o];
                if (variant) want += double(b.v[co]) + z.v[o], m += std::fabs(b.v[co]) + std::fabs(z.v[o]);
                const double got = ktest::decode16(t.f, out[o]);
                if (!(std::fabs(got - want) <= u * std::fabs(want) + std::ldexp(K * m, -22))) {
                    if (bad++ == 0) first = o, want_first = want;
                }
            }
            char msg[300];
            std::snprintf(msg, sizeof msg,
                          "%s igemm N=%d H=%d W=%d Cin=%d %dx%d Cout=%d stride=%d pad=%d config=%d (%s) variant=%d: "
                          "%zu of %zu outputs off (first at %zu: got %.6g, want %.6g)",
                          t.name, c.N, c.H, c.W, c.Cin, c.KH, c.KW, c.Cout, c.stride, c.padding, config,
                          onestep_conv2d_igemm_config_name(config), variant, bad, ny, first,
                          bad ? ktest::decode16(t.f, out[first]) : 0.0, want_first);
            expect(bad == 0, "%s", msg);
        }
}

// gamma (x - mean) rstd + beta (then SiLU if silu) over each sample's groups of x (N, H, W, Cin) in double: the biased
// variance about the exact mean, eps 1e-5 (Wu & He 2018, Eq. 3-4).
vector<double> group_norm_reference(const Case& c, const vector<double>& x, const vector<float>& gamma,
                                    const vector<float>& beta, int groups, bool silu) {
    vector<double> g(x.size());
    const int Cg = c.Cin / groups, HW = c.H * c.W;
    const double count = double(HW) * Cg;
    for (int n = 0; n < c.N; n++)
        for (int gr = 0; gr < groups; gr++) {
            auto at = [&](int p, int ch) { return (size_t(n) * HW + p) * c.Cin + ch; };
            double sum = 0, ssd = 0;
            for (int p = 0; p < HW; p++)
                for (int ch = gr * Cg; ch < (gr + 1) * Cg; ch++) sum += x[at(p, ch)];
            const double mean = sum / count;
            for (int p = 0; p < HW; p++)
                for (int ch = gr * Cg; ch < (gr + 1) * Cg; ch++) ssd += (x[at(p, ch)] - mean) * (x[at(p, ch)] - mean);
            const double rstd = 1.0 / std::sqrt(ssd / count + 1e-5);
            for (int p = 0; p < HW; p++)
                for (int ch = gr * Cg; ch < (gr + 1) * Cg; ch++) {
                    double u = (x[at(p, ch)] - mean) * rstd * gamma[ch] + beta[ch];
                    if (silu) u = u / (1.0 + std::exp(-u));
                    g[at(p, ch)] = u;
                }
        }
    return g;
}

// The upsampling convolution (onestep_upsample_conv_igemm_typed): conv3x3(upsample2x(x)) + bias against the double
// reference written out on the upsampled tensor, every tile, odd and 1-pixel inputs, with and without the bias.
void check_upsample(const Type& t, ktest::Rng& rng, int N, int H, int W, int Cin, int Cout) {
    const int Ho = 2 * H, Wo = 2 * W;
    const size_t ny = size_t(N) * Ho * Wo * Cout;
    Input x(t, rng, size_t(N) * H * W * Cin), w(t, rng, size_t(Cout) * 9 * Cin), b(t, rng, Cout);
    vector<double> ref(ny), mag(ny);
    for (int n = 0; n < N; n++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++)
                for (int co = 0; co < Cout; co++) {
                    double acc = 0, m = 0;
                    for (int r = 0; r < 3; r++)
                        for (int q = 0; q < 3; q++) {
                            const int uy = oy - 1 + r, ux = ox - 1 + q;  // in the upsampled image
                            if (uy < 0 || uy >= Ho || ux < 0 || ux >= Wo) continue;
                            for (int ci = 0; ci < Cin; ci++) {
                                const double p = double(x.v[((size_t(n) * H + uy / 2) * W + ux / 2) * Cin + ci]) *
                                                 w.v[((size_t(co) * 3 + r) * 3 + q) * Cin + ci];
                                acc += p, m += std::fabs(p);
                            }
                        }
                    const size_t o = ((size_t(n) * Ho + oy) * Wo + ox) * Cout + co;
                    ref[o] = acc, mag[o] = m;
                }
    const double u = ktest::unit_roundoff(t.f), K = 9.0 * Cin + 1;
    for (int config = 0; config <= onestep_conv2d_igemm_configs(); config++)
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            Buf16 y(ny);
            ok(onestep_upsample_conv_igemm_typed(x.b.p, w.b.p, with_bias ? b.b.p : nullptr, y.p, N, H, W, Cin, Cout,
                                                 config, t.dt, nullptr),
               "upsample_conv_igemm: %s");
            ktest::sync();
            size_t bad = 0, first = 0;
            for (size_t o = 0; o < ny; o++) {
                const double want = ref[o] + (with_bias ? double(b.v[o % Cout]) : 0.0);
                const double m = mag[o] + (with_bias ? std::fabs(b.v[o % Cout]) : 0.0);
                const double got = ktest::decode16(t.f, y.p[o]);
                if (!(std::fabs(got - want) <= u * std::fabs(want) + std::ldexp(K * m, -22)) && bad++ == 0) first = o;
            }
            char msg[200];
            std::snprintf(msg, sizeof msg, "%s upsample igemm N=%d %dx%dx%d -> %d config=%d bias=%d: %zu of %zu off "
                          "(first at %zu)", t.name, N, H, W, Cin, Cout, config, with_bias, bad, ny, first);
            expect(bad == 0, "%s", msg);
        }
}

// The portable kernel on the same inputs (HWIO weights) must agree with the tensor-core one to the same bound: the
// pair the CUDA backend compares on a shape's first use.
void check_against_portable(const Type& t, ktest::Rng& rng) {
    const Case c{1, 6, 5, 32, 3, 3, 24, 1, 1};
    const int Ho = 6, Wo = 5;
    const size_t nx = size_t(c.N) * c.H * c.W * c.Cin, nw = size_t(c.Cout) * 9 * c.Cin, ny = size_t(Ho) * Wo * c.Cout;
    Input x(t, rng, nx), w(t, rng, nw), b(t, rng, c.Cout);
    Buf16 hwio(nw), y1(ny), y2(ny);
    for (int co = 0; co < c.Cout; co++)
        for (int k = 0; k < 9 * c.Cin; k++) hwio.p[size_t(k) * c.Cout + co] = w.b.p[size_t(co) * 9 * c.Cin + k];
    ok(onestep_conv2d_igemm_typed(x.b.p, w.b.p, b.b.p, nullptr, y1.p, 1, 6, 5, 32, 3, 3, 24, 1, 1, 0, t.dt, nullptr),
       "conv2d_igemm: %s");
    ok(onestep_conv2d_nhwc_typed(x.b.p, hwio.p, b.b.p, y2.p, 1, 6, 5, 32, 3, 3, 24, 1, 1, t.dt, nullptr),
       "conv2d_nhwc_typed: %s");
    ktest::sync();
    double worst = 0, scale = 0;
    for (size_t o = 0; o < ny; o++) {
        const double a = ktest::decode16(t.f, y1.p[o]), p = ktest::decode16(t.f, y2.p[o]);
        worst = std::max(worst, std::fabs(a - p)), scale = std::max(scale, std::fabs(p));
    }
    char msg[160];
    std::snprintf(msg, sizeof msg, "%s igemm vs portable conv: max difference %.3g of max |y| %.3g", t.name, worst,
                  scale);
    expect(worst <= 4 * ktest::unit_roundoff(t.f) * scale, "%s", msg);
}

// The group norm prologue (onestep_groupnorm_conv2d_igemm_typed): conv2d(silu(group_norm(x')), w) + bias + z against
// the same double reference written on a normalized tensor computed in double, x' = (x + x_bias) + (add + add_bias).
// The kernel rounds the normalized values to the storage format (as the group norm kernel stores them) before the
// products, so each output may move by up to (u + 2^-16) sum |w g| besides the convolution's own bound (2^-16 for the
// fp32 statistics); a normalized zero-padding tap, a wrong group's statistics or a missed pre-add term moves it by
// O(sqrt(K)) times that. Every tile: those whose rows do not fit one sample (Ho Wo % BM) must refuse, the rest agree.
// given: the statistics come from stats_ref::run_stats of x per channel, as a producer leaves them
// (onestep_groupnorm_conv2d_igemm_stats_typed), the kernel shifting them by the pre-add terms instead of its own pass
// over x; the same oracle and bound must hold (H W a multiple of 16).
void check_norm(const Type& t, ktest::Rng& rng, const Case& c, int groups, int variant, double offset = 0,
                bool given = false) {
    const int Ho = (c.H + 2 * c.padding - c.KH) / c.stride + 1, Wo = (c.W + 2 * c.padding - c.KW) / c.stride + 1;
    const size_t nx = size_t(c.N) * c.H * c.W * c.Cin, nw = size_t(c.Cout) * c.KH * c.KW * c.Cin,
                 ny = size_t(c.N) * Ho * Wo * c.Cout;
    // Every operand drawn in T; x_bias spreads the channels' means, and `offset` moves x's whole distribution (a
    // variance from plain sums of squares would cancel away: the statistics must shift their sums).
    Input x(t, rng, nx), w(t, rng, nw), b(t, rng, c.Cout), z(t, rng, ny), gamma(t, rng, c.Cin),
        beta(t, rng, c.Cin), xb(t, rng, c.Cin, 4.0), add(t, rng, size_t(c.N) * c.Cin), ab(t, rng, c.Cin);
    if (offset != 0) {
        for (float& v : x.v) v += float(offset);
        const std::vector<uint16_t> bits = ktest::narrow(t.f, x.v);  // x.v now the values T holds
        std::memcpy(x.b.p, bits.data(), nx * 2);
    }
    const bool silu = variant != 1, pre = variant != 1, resid = variant != 1, with_ab = variant == 0;
    vector<double> xs(nx);  // x' = x + x_bias + (add + add_bias), in double
    for (size_t i = 0; i < nx; i++) {
        const int ch = int(i % c.Cin);
        const size_t n = i / (size_t(c.H) * c.W * c.Cin);
        xs[i] = x.v[i];
        if (pre) xs[i] += double(xb.v[ch]) + (double(add.v[n * c.Cin + ch]) + (with_ab ? ab.v[ch] : 0.0));
    }
    const vector<double> g = group_norm_reference(c, xs, gamma.v, beta.v, groups, silu);
    const vector<float> stats =
        given ? stats_ref::run_stats(x.v, c.N, c.H * c.W, c.Cin, c.Cin)
              : vector<float>();
    vector<double> ref, mag;
    conv_reference(c, g, w.v, ref, mag);
    if (resid)
        for (size_t o = 0; o < ny; o++) ref[o] += double(b.v[o % c.Cout]) + z.v[o];
    const double u = ktest::unit_roundoff(t.f), K = double(c.KH) * c.KW * c.Cin + 2;
    for (int config = 0; config <= onestep_conv2d_igemm_configs(); config++) {
        int bm = 0, bn = 0;
        if (config) std::sscanf(onestep_conv2d_igemm_config_name(config), "%dx%d", &bm, &bn);
        const bool fits = config == 0 || (Ho * Wo) % bm == 0;
        Buf16 y(ny);
        const onestep_status st =
            given ? onestep_groupnorm_conv2d_igemm_stats_typed(
                        x.b.p, pre ? xb.b.p : nullptr, pre ? add.b.p : nullptr, with_ab ? ab.b.p : nullptr, gamma.b.p,
                        beta.b.p, groups, 1e-5f, silu, stats.data(), w.b.p, resid ? b.b.p : nullptr,
                        resid ? z.b.p : nullptr, y.p, c.N, c.H, c.W, c.Cin, c.KH, c.KW, c.Cout, c.stride, c.padding,
                        config, nullptr, 0, t.dt, nullptr)
                  : onestep_groupnorm_conv2d_igemm_typed(
                        x.b.p, pre ? xb.b.p : nullptr, pre ? add.b.p : nullptr, with_ab ? ab.b.p : nullptr, gamma.b.p,
                        beta.b.p, groups, 1e-5f, silu, w.b.p, resid ? b.b.p : nullptr, resid ? z.b.p : nullptr, y.p,
                        c.N, c.H, c.W, c.Cin, c.KH, c.KW, c.Cout, c.stride, c.padding, config, t.dt, nullptr);
        char msg[400];
        if (!fits) {
            std::snprintf(msg, sizeof msg, "%s norm conv config=%d (BM %d) on Ho*Wo=%d is refused, naming why: %s",
                          t.name, config, bm, Ho * Wo, onestep_last_error_message());
            expect(st == ONESTEP_ERROR_UNSUPPORTED && std::strstr(onestep_last_error_message(), "multiple of"), "%s",
                   msg);
            continue;
        }
        ok(st, "groupnorm_conv2d_igemm: %s");
        ktest::sync();
        size_t bad = 0, first = 0;
        for (size_t o = 0; o < ny; o++) {
            const int co = int(o % c.Cout);
            const double m = mag[o] + (resid ? std::fabs(b.v[co]) + std::fabs(z.v[o]) : 0.0);
            const double got = ktest::decode16(t.f, y.p[o]);
            if (!(std::fabs(got - ref[o]) <= u * std::fabs(ref[o]) + std::ldexp(K * m, -22) +
                                                 (u + std::ldexp(1.0, -16)) * mag[o]) &&
                bad++ == 0)
                first = o;
        }
        std::snprintf(msg, sizeof msg,
               "%s norm conv%s N=%d %dx%dx%d %dx%d s%d p%d -> %d groups=%d variant=%d config=%d (%s): %zu of %zu off "
               "(first at %zu: got %.6g, want %.6g)",
               t.name, given ? " (statistics given)" : "", c.N, c.H, c.W, c.Cin, c.KH, c.KW, c.stride, c.padding, c.Cout,
               groups, variant, config,
               onestep_conv2d_igemm_config_name(config), bad, ny, first, bad ? ktest::decode16(t.f, y.p[first]) : 0.0,
               ref[first]);
        expect(bad == 0, "%s", msg);
    }
}

// y as a launch stored it, in double for stats_ref::run_stats.
vector<double> stored_values(const Type& t, const Buf16& y) {
    vector<double> u(y.n);
    for (size_t i = 0; i < u.size(); i++) u[i] = ktest::decode16(t.f, y.p[i]);
    return u;
}

// An epilogue's statistics (got, the kernel's) against stats_ref::run_stats of the values u it summarized: the mean
// within 2^-17 of u's root mean square and M2 within 2^-13 of itself plus 2^-17 of the run's sum of squares (fp32 sums
// of 16 Cg values, where the reference is exact and rounded once). A wrong run, group or channel is off by O(1) of
// those.
bool check_run_stats(const char* what, const vector<float>& got, const vector<double>& u, int N, int HW, int C,
                     int groups) {
    const vector<float> want = stats_ref::run_stats(u, N, HW, C, groups);
    const int Cg = C / groups;
    size_t bad = 0, first = 0;
    for (size_t item = 0; item < want.size() / 2; item++) {
        const int g = int(item % groups);
        const size_t nr = item / groups;  // n * runs + r
        double ss = 0;
        for (int p = 0; p < 16; p++)
            for (int ch = 0; ch < Cg; ch++) {
                const double v = u[(nr * 16 + p) * C + g * Cg + ch];
                ss += v * v;
            }
        const double rms = std::sqrt(ss / (16.0 * Cg));
        const bool fine = std::fabs(got[2 * item] - want[2 * item]) <= std::ldexp(rms, -17) &&
                          std::fabs(got[2 * item + 1] - want[2 * item + 1]) <=
                              std::ldexp(double(want[2 * item + 1]), -13) + std::ldexp(ss, -17);
        if (!fine && bad++ == 0) first = item;
    }
    char msg[600];
    std::snprintf(msg, sizeof msg,
                  "%s: %zu of %zu (run, group) statistics off (first: item %zu, got mean %.7g M2 %.7g, want %.7g %.7g)",
                  what, bad, want.size() / 2, first, bad ? got[2 * first] : 0.f, bad ? got[2 * first + 1] : 0.f,
                  bad ? want[2 * first] : 0.f, bad ? want[2 * first + 1] : 0.f);
    return expect(bad == 0, "%s", msg);
}

// The statistics for the next group norm left by a convolution's epilogue (onestep_conv2d_igemm_stats_typed), for
// every tile: y bit for bit the plain convolution's, and the (run, group) statistics those of y as stored (variant 0:
// bias and a residual z shifted by `offset`, where plain sums of squares would cancel; 1: bias alone; 2: neither).
// Then the chain they serve, where the reader takes y (Cout a multiple of 16): the producer leaves per-channel
// statistics (out_groups = Cout) and onestep_groupnorm_conv2d_igemm_stats_typed normalizes y in `groups` groups
// with them, plus x_bias, add and add_bias (which shift each channel's mean), for every tile that takes it; its
// output must agree with the same call computing the statistics from y (4 u of the largest output: a statistic of
// the wrong run, group or channel, or a missed shift, moves outputs by O(1)), and it leaves its own output's
// per-channel statistics, checked as above.
void check_stats(const Type& t, ktest::Rng& rng, const Case& c, int groups, int variant, double offset = 0) {
    const int Ho = (c.H + 2 * c.padding - c.KH) / c.stride + 1, Wo = (c.W + 2 * c.padding - c.KW) / c.stride + 1;
    const size_t nx = size_t(c.N) * c.H * c.W * c.Cin, nw = size_t(c.Cout) * c.KH * c.KW * c.Cin,
                 ny = size_t(c.N) * Ho * Wo * c.Cout;
    Input x(t, rng, nx), w(t, rng, nw), b(t, rng, c.Cout), z(t, rng, ny);
    if (offset != 0) {
        for (float& v : z.v) v += float(offset);
        const std::vector<uint16_t> bits = ktest::narrow(t.f, z.v);
        std::memcpy(z.b.p, bits.data(), ny * 2);
    }
    const bool biased = variant != 2, resid = variant == 0;
    char what[240];
    vector<float> stats;
    Buf16 y(ny);
    auto produce = [&](int config, int out_groups) {
        stats.assign(size_t(c.N) * (Ho * Wo / 16) * out_groups * 2, std::nanf(""));
        return onestep_conv2d_igemm_stats_typed(x.b.p, w.b.p, biased ? b.b.p : nullptr, resid ? z.b.p : nullptr, y.p,
                                                c.N, c.H, c.W, c.Cin, c.KH, c.KW, c.Cout, c.stride, c.padding, config,
                                                stats.data(), out_groups, t.dt, nullptr);
    };
    for (int config = 0; config <= onestep_conv2d_igemm_configs(); config++) {
        Buf16 plain(ny);
        std::memset(y.p, 0xFF, ny * 2);
        ok(onestep_conv2d_igemm_typed(x.b.p, w.b.p, biased ? b.b.p : nullptr, resid ? z.b.p : nullptr, plain.p, c.N,
                                      c.H, c.W, c.Cin, c.KH, c.KW, c.Cout, c.stride, c.padding, config, t.dt, nullptr),
           "conv2d_igemm (the stats' twin): %s");
        ok(produce(config, groups), "conv2d_igemm_stats: %s");
        ktest::sync();
        std::snprintf(what, sizeof what,
                      "%s conv stats N=%d %dx%dx%d %dx%d s%d -> %d groups=%d variant=%d config=%d (%s)", t.name, c.N, c.H, c.W, c.Cin, c.KH, c.KW, c.stride, c.Cout, groups, variant, config,
                      onestep_conv2d_igemm_config_name(config));
        expect(std::memcmp(y.p, plain.p, ny * 2) == 0, "%s: y bit for bit the plain convolution's", what);
        check_run_stats(what, stats, stored_values(t, y), c.N, Ho * Wo, c.Cout, groups);
    }
    if (c.Cout % 16) return;
    // The chain: config 0's y and its per-channel statistics, normalized in 4-channel groups.
    ok(produce(0, c.Cout), "conv2d_igemm_stats: %s");
    ktest::sync();
    const int norm_groups = c.Cout / 4;
    const Case c2{c.N, Ho, Wo, c.Cout, 3, 3, 32, 1, 1};
    const size_t ny2 = size_t(c.N) * Ho * Wo * c2.Cout;
    Input w2(t, rng, size_t(c2.Cout) * 9 * c.Cout), gamma(t, rng, c.Cout), beta(t, rng, c.Cout),
        xb(t, rng, c.Cout, 4.0), add(t, rng, size_t(c.N) * c.Cout), ab(t, rng, c.Cout);
    const bool pre = variant != 2;  // variant 2 reads y as it is
    const void *pxb = pre ? xb.b.p : nullptr, *padd = pre ? add.b.p : nullptr, *pab = pre ? ab.b.p : nullptr;
    Buf16 self(ny2);
    ok(onestep_groupnorm_conv2d_igemm_typed(y.p, pxb, padd, pab, gamma.b.p, beta.b.p, norm_groups, 1e-5f, 1, w2.b.p,
                                            nullptr, nullptr, self.p, c2.N, c2.H, c2.W, c2.Cin, 3, 3, c2.Cout, 1, 1, 0,
                                            t.dt, nullptr),
       "groupnorm_conv2d_igemm (statistics from x): %s");
    ktest::sync();
    double scale = 0;
    for (size_t o = 0; o < ny2; o++) scale = std::max(scale, std::fabs(ktest::decode16(t.f, self.p[o])));
    vector<float> stats2;
    for (int config = 0; config <= onestep_conv2d_igemm_configs(); config++) {
        Buf16 y2(ny2);
        stats2.assign(size_t(c.N) * (Ho * Wo / 16) * c2.Cout * 2, std::nanf(""));
        const onestep_status st = onestep_groupnorm_conv2d_igemm_stats_typed(
            y.p, pxb, padd, pab, gamma.b.p, beta.b.p, norm_groups, 1e-5f, 1, stats.data(), w2.b.p, nullptr, nullptr,
            y2.p, c2.N, c2.H, c2.W, c2.Cin, 3, 3, c2.Cout, 1, 1, config, stats2.data(), c2.Cout, t.dt, nullptr);
        int bm = 0, bn = 0;
        if (config) std::sscanf(onestep_conv2d_igemm_config_name(config), "%dx%d", &bm, &bn);
        std::snprintf(what, sizeof what, "%s norm conv on given statistics%s, %dx%dx%d -> %d, config=%d (%s)", t.name,
                      pre ? " with pre-add terms" : "", Ho, Wo, c.Cout, c2.Cout, config,
                      onestep_conv2d_igemm_config_name(config));
        if (config && (Ho * Wo) % bm) {  // the prologue's own rule: a tile's rows in one sample
            expect(st == ONESTEP_ERROR_UNSUPPORTED, "%s: refused", what);
            continue;
        }
        if (!ok(st, "groupnorm_conv2d_igemm_stats: %s")) continue;
        ktest::sync();
        double worst = 0;
        for (size_t o = 0; o < ny2; o++)
            worst = std::max(worst, std::fabs(ktest::decode16(t.f, y2.p[o]) - ktest::decode16(t.f, self.p[o])));
        char msg[400];
        std::snprintf(msg, sizeof msg, "%s: agrees with the statistics computed from x (max difference %.3g of %.3g)",
                      what, worst, scale);
        expect(worst <= 4 * ktest::unit_roundoff(t.f) * scale, "%s", msg);
        check_run_stats(what, stats2, stored_values(t, y2), c.N, Ho * Wo, c2.Cout, c2.Cout);
    }
}

// The refusals of the statistics' entry points, each naming the rule.
void check_stats_errors() {
    Buf16 buf(8192);
    vector<float> st(4096);
    char msg[400];
    auto refused = [&](onestep_status s, onestep_status want, const char* needle) {
        std::snprintf(msg, sizeof msg, "%s", onestep_last_error_message());
        return s == want && std::strstr(onestep_last_error_message(), needle);
    };
    expect(refused(onestep_conv2d_igemm_stats_typed(buf.p, buf.p + 1024, nullptr, nullptr, buf.p + 4096, 1, 4, 4, 16,
                                                    3, 3, 48, 1, 1, 0, st.data(), 1, ONESTEP_FLOAT16, nullptr),
                   ONESTEP_ERROR_UNSUPPORTED, "out_groups=1"),
           "48-channel groups are refused: %s", msg);
    expect(refused(onestep_conv2d_igemm_stats_typed(buf.p, buf.p + 1024, nullptr, nullptr, buf.p + 4096, 1, 4, 4, 16,
                                                    3, 3, 48, 1, 1, 0, st.data(), 5, ONESTEP_FLOAT16, nullptr),
                   ONESTEP_ERROR_UNSUPPORTED, "out_groups=5"),
           "groups not dividing Cout are refused: %s", msg);
    expect(refused(onestep_conv2d_igemm_stats_typed(buf.p, buf.p + 1024, nullptr, nullptr, buf.p + 4096, 1, 3, 3, 16,
                                                    3, 3, 16, 1, 1, 0, st.data(), 4, ONESTEP_FLOAT16, nullptr),
                   ONESTEP_ERROR_UNSUPPORTED, "Ho*Wo=9"),
           "an output of 9 pixels is refused (runs of 16): %s", msg);
    expect(refused(onestep_conv2d_igemm_stats_typed(buf.p, buf.p + 1024, nullptr, nullptr, buf.p + 4096, 1, 4, 4, 16,
                                                    3, 3, 16, 1, 1, 0, nullptr, 4, ONESTEP_FLOAT16, nullptr),
                   ONESTEP_ERROR_INVALID_ARGUMENT, "NULL stats_out"),
           "a NULL stats_out is refused: %s", msg);
    expect(refused(onestep_conv2d_igemm_stats_typed(buf.p, buf.p + 1024, nullptr, nullptr, buf.p + 4096, 1, 4, 4, 16,
                                                    3, 3, 16, 1, 1, 0, reinterpret_cast<float*>(buf.p + 1024), 4,
                                                    ONESTEP_FLOAT16, nullptr),
                   ONESTEP_ERROR_INVALID_ARGUMENT, "stats_out must not alias"),
           "stats_out aliasing w is refused: %s", msg);
    expect(refused(onestep_conv2d_igemm_stats_typed(buf.p, buf.p + 1024, nullptr, nullptr, buf.p + 4096, 1, 4, 4, 16,
                                                    3, 3, 16, 1, 1, 0, st.data() + 1, 4, ONESTEP_FLOAT16, nullptr),
                   ONESTEP_ERROR_INVALID_ARGUMENT, "8-byte aligned"),
           "a misaligned stats_out is refused: %s", msg);
    // The reader: given statistics need H*W in runs of 16, and must not be its own stats_out.
    expect(refused(onestep_groupnorm_conv2d_igemm_stats_typed(
                       buf.p, nullptr, nullptr, nullptr, buf.p + 6000, buf.p + 6100, 4, 1e-5f, 1, st.data(),
                       buf.p + 1024, nullptr, nullptr, buf.p + 4096, 1, 2, 2, 16, 1, 1, 16, 1, 0, 1, nullptr, 0,
                       ONESTEP_FLOAT16, nullptr),
                   ONESTEP_ERROR_UNSUPPORTED, "H*W=4"),
           "given statistics on 4 pixels are refused: %s", msg);
    expect(refused(onestep_groupnorm_conv2d_igemm_stats_typed(
                       buf.p, nullptr, nullptr, nullptr, buf.p + 6000, buf.p + 6100, 4, 1e-5f, 1, st.data(),
                       buf.p + 1024, nullptr, nullptr, buf.p + 4096, 1, 4, 4, 16, 1, 1, 16, 1, 0, 1, st.data(), 4,
                       ONESTEP_FLOAT16, nullptr),
                   ONESTEP_ERROR_INVALID_ARGUMENT, "must not alias y or stats_out"),
           "stats aliasing stats_out is refused: %s", msg);
}

// A down block's norm1 -> conv1 with its 1x1 conv_shortcut in the same launch (onestep_groupnorm_conv2d_shortcut_igemm_
// typed): conv1 against check_norm's oracle (the group norm of x + x_bias in double, then the convolution), the
// shortcut against the 1x1 convolution of x + x_bias as the launch's other blocks read it: the fp32 sum rounded to T,
// as a stored tensor holds it. Every tile; those whose rows do not fit one sample must refuse.
void check_norm_shortcut(const Type& t, ktest::Rng& rng, const Case& c, int groups, bool x_biased) {
    const size_t nx = size_t(c.N) * c.H * c.W * c.Cin, nw = size_t(c.Cout) * c.KH * c.KW * c.Cin,
                 ny = size_t(c.N) * c.H * c.W * c.Cout;  // stride 1, 'same' padding
    Input x(t, rng, nx), xb(t, rng, c.Cin, 4.0), w(t, rng, nw), b(t, rng, c.Cout), gamma(t, rng, c.Cin),
        beta(t, rng, c.Cin), wsc(t, rng, size_t(c.Cout) * c.Cin);
    vector<double> xs(nx), xr(nx);  // x + x_bias in double (the normalized path), and rounded (the shortcut's)
    for (size_t i = 0; i < nx; i++) {
        const float bias = x_biased ? xb.v[i % c.Cin] : 0.f;
        xs[i] = double(x.v[i]) + bias;
        xr[i] = ktest::round_to(t.f, double(x.v[i] + bias));  // the sum in fp32, as the kernel adds
    }
    const vector<double> g = group_norm_reference(c, xs, gamma.v, beta.v, groups, true);
    vector<double> ref, mag, sc_ref, sc_mag;
    conv_reference(c, g, w.v, ref, mag);
    for (size_t o = 0; o < ny; o++) ref[o] += double(b.v[o % c.Cout]);
    conv_reference(Case{c.N, c.H, c.W, c.Cin, 1, 1, c.Cout, 1, 0}, xr, wsc.v, sc_ref, sc_mag);
    const double u = ktest::unit_roundoff(t.f), K = double(c.KH) * c.KW * c.Cin + 2, K1 = double(c.Cin) + 2;
    for (int config = 0; config <= onestep_conv2d_igemm_configs(); config++) {
        int bm = 0, bn = 0;
        if (config) std::sscanf(onestep_conv2d_igemm_config_name(config), "%dx%d", &bm, &bn);
        Buf16 y(ny), ysc(ny);
        const onestep_status st = onestep_groupnorm_conv2d_shortcut_igemm_typed(
            x.b.p, x_biased ? xb.b.p : nullptr, gamma.b.p, beta.b.p, groups, 1e-5f, 1, w.b.p, b.b.p, y.p, wsc.b.p,
            ysc.p, c.N, c.H, c.W, c.Cin, c.KH, c.KW, c.Cout, 1, c.padding, config, t.dt, nullptr);
        char msg[400];
        if (config != 0 && (c.H * c.W) % bm != 0) {
            std::snprintf(msg, sizeof msg, "%s norm conv + shortcut config=%d (BM %d) on H*W=%d is refused: %s",
                          t.name, config, bm, c.H * c.W, onestep_last_error_message());
            expect(st == ONESTEP_ERROR_UNSUPPORTED && std::strstr(onestep_last_error_message(), "multiple of"), "%s",
                   msg);
            continue;
        }
        ok(st, "groupnorm_conv2d_shortcut_igemm: %s");
        ktest::sync();
        size_t bad = 0, bad_sc = 0, first = 0, first_sc = 0;
        for (size_t o = 0; o < ny; o++) {
            const double m = mag[o] + std::fabs(b.v[o % c.Cout]);
            const double got = ktest::decode16(t.f, y.p[o]), got_sc = ktest::decode16(t.f, ysc.p[o]);
            if (!(std::fabs(got - ref[o]) <= u * std::fabs(ref[o]) + std::ldexp(K * m, -22) +
                                                 (u + std::ldexp(1.0, -16)) * mag[o]) &&
                bad++ == 0)
                first = o;
            if (!(std::fabs(got_sc - sc_ref[o]) <= u * std::fabs(sc_ref[o]) + std::ldexp(K1 * sc_mag[o], -22)) &&
                bad_sc++ == 0)
                first_sc = o;
        }
        std::snprintf(msg, sizeof msg,
                      "%s norm conv + shortcut N=%d %dx%dx%d %dx%d -> %d groups=%d x_bias=%d config=%d (%s): conv1 %zu "
                      "of %zu off (first at %zu), shortcut %zu off (first at %zu: got %.6g, want %.6g)",
                      t.name, c.N, c.H, c.W, c.Cin, c.KH, c.KW, c.Cout, groups, x_biased, config,
                      onestep_conv2d_igemm_config_name(config), bad, ny, first, bad_sc, first_sc,
                      bad_sc ? ktest::decode16(t.f, ysc.p[first_sc]) : 0.0, sc_ref[first_sc]);
        expect(bad == 0 && bad_sc == 0, "%s", msg);
    }
}

// The concatenation gathered by the convolution (onestep_concat_conv2d_igemm_typed) and under the group norm prologue
// (onestep_groupnorm_concat_conv2d_igemm_typed): x = cat(round(a + a_bias), round(b + b_bias)) is built here as the
// concatenation kernel stores it (the sum in fp32, rounded to T), then the oracles above on it: check_case's bound for
// the plain convolution, check_norm's for the normalized one (its statistics over x's channels of every group,
// groups straddling a and b included). variant 0: no biases, plain; 1: both biases, plain (the biases' prologue);
// 2: a's bias only, normalized with SiLU, conv bias and z; 3: no biases, normalized without SiLU. `offset` moves a's
// bias: around 1000, a + a_bias keeps only 1 (bf16: 3) of a's fraction bits once rounded, so a kernel that skipped the
// rounding (normalizing the fp32 sum) would be far off. shortcut (normalized variants): the 1x1 shortcut of the same
// concatenation in the same launch (y_sc), against the 1x1 convolution of x written out in double.
void check_concat(const Type& t, ktest::Rng& rng, const Case& c, int Ca, int groups, int variant, double offset = 0,
                  bool shortcut = false) {
    const int Cb = c.Cin - Ca;
    const int Ho = (c.H + 2 * c.padding - c.KH) / c.stride + 1, Wo = (c.W + 2 * c.padding - c.KW) / c.stride + 1;
    const size_t px = size_t(c.N) * c.H * c.W, nx = px * c.Cin, nw = size_t(c.Cout) * c.KH * c.KW * c.Cin,
                 ny = size_t(c.N) * Ho * Wo * c.Cout;
    Input a(t, rng, px * Ca), b(t, rng, px * Cb), ab(t, rng, Ca, 4.0), bb(t, rng, Cb, 4.0), w(t, rng, nw),
        bias(t, rng, c.Cout), z(t, rng, ny), gamma(t, rng, c.Cin), beta(t, rng, c.Cin);
    if (offset != 0) {
        for (float& v : ab.v) v += float(offset);
        const std::vector<uint16_t> bits = ktest::narrow(t.f, ab.v);  // ab.v now the values T holds
        std::memcpy(ab.b.p, bits.data(), size_t(Ca) * 2);
    }
    const bool norm = variant >= 2, a_biased = variant == 1 || variant == 2, b_biased = variant == 1,
               silu = variant == 2, resid = variant == 2;
    vector<double> x(nx);
    for (size_t p = 0; p < px; p++)
        for (int ch = 0; ch < c.Cin; ch++) {
            const bool from_a = ch < Ca;
            const float v = from_a ? a.v[p * Ca + ch] : b.v[p * Cb + ch - Ca];
            const bool biased = from_a ? a_biased : b_biased;
            const float sum = biased ? v + (from_a ? ab.v[ch] : bb.v[ch - Ca]) : v;  // fp32, as the kernel adds
            x[p * c.Cin + ch] = ktest::round_to(t.f, double(sum));
        }
    const vector<double> g = norm ? group_norm_reference(c, x, gamma.v, beta.v, groups, silu) : x;
    vector<double> ref, mag;
    conv_reference(c, g, w.v, ref, mag);
    if (resid)
        for (size_t o = 0; o < ny; o++) ref[o] += double(bias.v[o % c.Cout]) + z.v[o];
    const Case c1{c.N, c.H, c.W, c.Cin, 1, 1, c.Cout, 1, 0};  // the shortcut
    const size_t nsc = size_t(c.N) * c.H * c.W * c.Cout;
    Input wsc(t, rng, size_t(c.Cout) * c.Cin);
    vector<double> sc_ref, sc_mag;
    if (shortcut) conv_reference(c1, x, wsc.v, sc_ref, sc_mag);
    const double u = ktest::unit_roundoff(t.f), K = double(c.KH) * c.KW * c.Cin + 2;
    for (int config = 0; config <= onestep_conv2d_igemm_configs(); config++) {
        int bm = 0, bn = 0;
        if (config) std::sscanf(onestep_conv2d_igemm_config_name(config), "%dx%d", &bm, &bn);
        const bool fits = !norm || config == 0 || (Ho * Wo) % bm == 0;
        Buf16 y(ny), ysc(nsc);
        const void* pab = a_biased ? ab.b.p : nullptr;
        const void* pbb = b_biased ? bb.b.p : nullptr;
        const onestep_status st =
            norm ? onestep_groupnorm_concat_conv2d_igemm_typed(
                       a.b.p, pab, b.b.p, pbb, gamma.b.p, beta.b.p, groups, 1e-5f, silu, w.b.p,
                       resid ? bias.b.p : nullptr, resid ? z.b.p : nullptr, y.p, shortcut ? wsc.b.p : nullptr,
                       shortcut ? ysc.p : nullptr, c.N, c.H, c.W, Ca, Cb, c.KH, c.KW, c.Cout, c.stride, c.padding,
                       config, t.dt, nullptr)
                 : onestep_concat_conv2d_igemm_typed(a.b.p, pab, b.b.p, pbb, w.b.p, nullptr, nullptr, y.p, c.N, c.H,
                                                     c.W, Ca, Cb, c.KH, c.KW, c.Cout, c.stride, c.padding, config,
                                                     t.dt, nullptr);
        char msg[400];
        if (!fits) {
            std::snprintf(msg, sizeof msg, "%s norm concat conv config=%d (BM %d) on Ho*Wo=%d is refused: %s", t.name,
                          config, bm, Ho * Wo, onestep_last_error_message());
            expect(st == ONESTEP_ERROR_UNSUPPORTED && std::strstr(onestep_last_error_message(), "multiple of"), "%s",
                   msg);
            continue;
        }
        ok(st, "concat_conv2d_igemm: %s");
        ktest::sync();
        size_t bad = 0, first = 0;
        for (size_t o = 0; o < ny; o++) {
            const int co = int(o % c.Cout);
            const double m = mag[o] + (resid ? std::fabs(bias.v[co]) + std::fabs(z.v[o]) : 0.0);
            const double slack = norm ? (u + std::ldexp(1.0, -16)) * mag[o] : 0.0;
            const double got = ktest::decode16(t.f, y.p[o]);
            if (!(std::fabs(got - ref[o]) <= u * std::fabs(ref[o]) + std::ldexp(K * m, -22) + slack) && bad++ == 0)
                first = o;
        }
        std::snprintf(msg, sizeof msg,
                      "%s concat conv N=%d %dx%dx(%d+%d) %dx%d s%d p%d -> %d groups=%d variant=%d config=%d (%s): %zu "
                      "of %zu off (first at %zu: got %.6g, want %.6g)",
                      t.name, c.N, c.H, c.W, Ca, Cb, c.KH, c.KW, c.stride, c.padding, c.Cout, groups, variant, config,
                      onestep_conv2d_igemm_config_name(config), bad, ny, first,
                      bad ? ktest::decode16(t.f, y.p[first]) : 0.0, ref[first]);
        expect(bad == 0, "%s", msg);
        if (norm && (Ho * Wo) % 16 == 0) {
            // The same launch leaving y's per-channel statistics (an up block's conv1 leaving norm2's): y bit for bit
            // the same, y_sc too, and the pairs those of y as stored; the shortcut's blocks leave none.
            Buf16 y3(ny), ysc3(nsc);
            vector<float> stats(size_t(c.N) * (Ho * Wo / 16) * c.Cout * 2, std::nanf(""));
            ok(onestep_groupnorm_concat_conv2d_igemm_stats_typed(
                   a.b.p, pab, b.b.p, pbb, gamma.b.p, beta.b.p, groups, 1e-5f, silu, w.b.p, resid ? bias.b.p : nullptr,
                   resid ? z.b.p : nullptr, y3.p, shortcut ? wsc.b.p : nullptr, shortcut ? ysc3.p : nullptr, c.N, c.H,
                   c.W, Ca, Cb, c.KH, c.KW, c.Cout, c.stride, c.padding, config, stats.data(), c.Cout, t.dt, nullptr),
               "groupnorm_concat_conv2d_igemm_stats: %s");
            ktest::sync();
            std::snprintf(msg, sizeof msg, "%s concat conv leaving statistics variant=%d config=%d", t.name, variant,
                          config);
            expect(std::memcmp(y3.p, y.p, ny * 2) == 0 && (!shortcut || std::memcmp(ysc3.p, ysc.p, nsc * 2) == 0),
                   "%s: y and y_sc bit for bit the launch's without", msg);
            check_run_stats(msg, stats, stored_values(t, y3), c.N, Ho * Wo, c.Cout, c.Cout);
        }
        if (!shortcut) continue;
        bad = 0, first = 0;
        const double K1 = double(c.Cin) + 2;
        for (size_t o = 0; o < nsc; o++) {
            const double got = ktest::decode16(t.f, ysc.p[o]);
            if (!(std::fabs(got - sc_ref[o]) <= u * std::fabs(sc_ref[o]) + std::ldexp(K1 * sc_mag[o], -22)) &&
                bad++ == 0)
                first = o;
        }
        std::snprintf(msg, sizeof msg,
                      "%s concat conv's shortcut N=%d %dx%dx(%d+%d) -> %d variant=%d config=%d (%s): %zu of %zu off "
                      "(first at %zu: got %.6g, want %.6g)",
                      t.name, c.N, c.H, c.W, Ca, Cb, c.Cout, variant, config, onestep_conv2d_igemm_config_name(config),
                      bad, nsc, first, bad ? ktest::decode16(t.f, ysc.p[first]) : 0.0, sc_ref[first]);
        expect(bad == 0, "%s", msg);
    }
}

// The concatenation's refusals: widths that split a 16-deep step between the sources, y over b, a missing b.
void check_concat_errors() {
    alignas(16) uint16_t buf[4096] = {};
    auto refused = [&](onestep_status want, onestep_status got, const char* fn, const char* needle) {
        return got == want && std::strstr(onestep_last_error_message(), fn) &&
               std::strstr(onestep_last_error_message(), needle);
    };
    expect(refused(ONESTEP_ERROR_UNSUPPORTED,
                   onestep_concat_conv2d_igemm_typed(buf, nullptr, buf + 512, nullptr, buf + 1024, nullptr, nullptr,
                                                     buf + 2048, 1, 4, 4, 24, 8, 1, 1, 16, 1, 0, 0, ONESTEP_FLOAT16,
                                                     nullptr),
                   "onestep_concat_conv2d_igemm_typed(", "Ca=24, Cb=8"),
           "Ca = 24 (not a multiple of 16) is refused, naming both widths: %s", onestep_last_error_message());
    expect(refused(ONESTEP_ERROR_INVALID_ARGUMENT,
                   onestep_groupnorm_concat_conv2d_igemm_typed(buf, nullptr, buf + 512, nullptr, buf + 1024,
                                                               buf + 1024, 8, 1e-5f, 1, buf + 1024, nullptr, nullptr,
                                                               buf + 512, nullptr, nullptr, 1, 4, 4, 16, 16, 1, 1, 16,
                                                               1, 0, 0, ONESTEP_FLOAT16, nullptr),
                   "onestep_groupnorm_concat_conv2d_igemm_typed(", "must not alias b"),
           "y over b is refused: %s", onestep_last_error_message());
    expect(refused(ONESTEP_ERROR_INVALID_ARGUMENT,
                   onestep_concat_conv2d_igemm_typed(buf, buf + 64, buf + 512, nullptr, buf + 1024, nullptr, nullptr,
                                                     buf + 64, 1, 1, 1, 16, 16, 1, 1, 16, 1, 0, 0, ONESTEP_FLOAT16,
                                                     nullptr),
                   "onestep_concat_conv2d_igemm_typed(", "must not alias a_bias"),
           "y over a_bias is refused: %s", onestep_last_error_message());
    expect(refused(ONESTEP_ERROR_INVALID_ARGUMENT,
                   onestep_concat_conv2d_igemm_typed(buf, nullptr, nullptr, nullptr, buf + 1024, nullptr, nullptr,
                                                     buf + 2048, 1, 4, 4, 16, 16, 1, 1, 16, 1, 0, 0, ONESTEP_FLOAT16,
                                                     nullptr),
                   "onestep_concat_conv2d_igemm_typed(", "NULL"),
           "a missing b is refused: %s", onestep_last_error_message());
    // The shortcut in conv1's launch: only where conv1 keeps the input's size, and y_sc over nothing it reads.
    expect(refused(ONESTEP_ERROR_UNSUPPORTED,
                   onestep_groupnorm_concat_conv2d_igemm_typed(buf, nullptr, buf + 512, nullptr, buf + 1024,
                                                               buf + 1024, 8, 1e-5f, 1, buf + 1024, nullptr, nullptr,
                                                               buf + 2048, buf + 1024, buf + 3072, 1, 4, 4, 16, 16, 3,
                                                               3, 16, 2, 1, 0, ONESTEP_FLOAT16, nullptr),
                   "onestep_groupnorm_concat_conv2d_igemm_typed(", "the size of its input"),
           "a shortcut next to a stride-2 conv1 is refused: %s", onestep_last_error_message());
    expect(refused(ONESTEP_ERROR_INVALID_ARGUMENT,
                   onestep_groupnorm_concat_conv2d_igemm_typed(buf, nullptr, buf + 512, nullptr, buf + 1024,
                                                               buf + 1024, 8, 1e-5f, 1, buf + 1024, nullptr, nullptr,
                                                               buf + 2048, buf + 1024, buf + 2048, 1, 4, 4, 16, 16, 3,
                                                               3, 16, 1, 1, 0, ONESTEP_FLOAT16, nullptr),
                   "onestep_groupnorm_concat_conv2d_igemm_typed(", "y_sc must not alias"),
           "y_sc over y is refused: %s", onestep_last_error_message());
}

// The prologue's refusals, by name: groups not dividing Cin into multiples of 4, no tile fitting the output, y over
// an operand the blocks still read.
void check_norm_errors() {
    alignas(16) uint16_t buf[4096] = {};
    auto refused = [&](onestep_status got, const char* needle) {
        return got == ONESTEP_ERROR_UNSUPPORTED &&
               std::strstr(onestep_last_error_message(), "onestep_groupnorm_conv2d_igemm_typed(") &&
               std::strstr(onestep_last_error_message(), needle);
    };
    expect(refused(onestep_groupnorm_conv2d_igemm_typed(buf, nullptr, nullptr, nullptr, buf, buf, 8, 1e-5f, 1, buf,
                                                        nullptr, nullptr, buf + 2048, 1, 4, 4, 16, 3, 3, 16, 1, 1, 0,
                                                        ONESTEP_FLOAT16, nullptr),
                   "groups=8"),
           "2-channel groups are refused: %s", onestep_last_error_message());
    expect(refused(onestep_groupnorm_conv2d_igemm_typed(buf, nullptr, nullptr, nullptr, buf, buf, 4, 1e-5f, 1, buf,
                                                        nullptr, nullptr, buf + 2048, 1, 3, 3, 16, 3, 3, 16, 1, 1, 0,
                                                        ONESTEP_FLOAT16, nullptr),
                   "no tile"),
           "a 3x3 output no tile's rows divide is refused: %s", onestep_last_error_message());
    // y over gamma: other blocks may still read gamma while one writes y.
    const onestep_status st = onestep_groupnorm_conv2d_igemm_typed(
        buf, nullptr, nullptr, nullptr, buf + 2048, buf + 1024, 4, 1e-5f, 1, buf, nullptr, nullptr, buf + 2048, 1, 4,
        4, 16, 3, 3, 16, 1, 1, 0, ONESTEP_FLOAT16, nullptr);
    expect(st == ONESTEP_ERROR_INVALID_ARGUMENT && std::strstr(onestep_last_error_message(), "must not alias gamma"),
           "y aliasing gamma is refused: %s", onestep_last_error_message());
    // add_bias without add: refused by name, as the group norm kernel refuses it (it used to be dropped silently).
    const onestep_status lone = onestep_groupnorm_conv2d_igemm_typed(
        buf, nullptr, nullptr, buf + 1024, buf, buf, 4, 1e-5f, 1, buf, nullptr, nullptr, buf + 2048, 1, 4, 4, 16, 3,
        3, 16, 1, 1, 0, ONESTEP_FLOAT16, nullptr);
    expect(lone == ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "add_bias is given without add"),
           "add_bias without add is refused: %s", onestep_last_error_message());
    // The shortcut beside a stride-2 conv1 (other output pixels), and y_sc over x.
    expect(onestep_groupnorm_conv2d_shortcut_igemm_typed(buf, nullptr, buf, buf, 4, 1e-5f, 1, buf, nullptr,
                                                         buf + 2048, buf, buf + 3072, 1, 4, 4, 16, 3, 3, 16, 2, 1, 0,
                                                         ONESTEP_FLOAT16, nullptr) == ONESTEP_ERROR_UNSUPPORTED &&
               std::strstr(onestep_last_error_message(), "onestep_groupnorm_conv2d_shortcut_igemm_typed(") &&
               std::strstr(onestep_last_error_message(), "stride 1"),
           "a shortcut beside a stride-2 conv1 is refused: %s", onestep_last_error_message());
    expect(onestep_groupnorm_conv2d_shortcut_igemm_typed(buf, nullptr, buf + 1024, buf + 1024, 4, 1e-5f, 1, buf,
                                                         nullptr, buf + 2048, buf, buf, 1, 4, 4, 16, 3, 3, 16, 1, 1,
                                                         0, ONESTEP_FLOAT16, nullptr) ==
                   ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "y_sc must not alias"),
           "y_sc over x is refused: %s", onestep_last_error_message());
}

void check_errors() {
    alignas(16) uint16_t buf[4096] = {};
    const char* msg = nullptr;
    auto refused = [&](onestep_status want, onestep_status got, const char* needle) {
        msg = onestep_last_error_message();
        return got == want && std::strstr(msg, "onestep_conv2d_igemm_typed(") && std::strstr(msg, needle);
    };
    expect(refused(ONESTEP_ERROR_UNSUPPORTED,
                   onestep_conv2d_igemm_typed(buf, buf, nullptr, nullptr, buf, 1, 4, 4, 16, 3, 3, 16, 1, 1, 0,
                                              ONESTEP_FLOAT32, nullptr),
                   "fp16 or bf16"),
           "fp32 is refused by name: %s", msg);
    expect(refused(ONESTEP_ERROR_UNSUPPORTED,
                   onestep_conv2d_igemm_typed(buf, buf, nullptr, nullptr, buf, 1, 4, 4, 8, 3, 3, 16, 1, 1, 0,
                                              ONESTEP_FLOAT16, nullptr),
                   "Cin=8"),
           "Cin = 8 is refused, naming the shape: %s", msg);
    // A Cout whose column tiles overflow grid.y is refused by name (it came back as a bare launch error), and the
    // choice says no tile, as for every shape the entry points refuse.
    expect(refused(ONESTEP_ERROR_INVALID_ARGUMENT,
                   onestep_conv2d_igemm_typed(buf, buf, nullptr, nullptr, buf + 1024, 1, 4, 4, 16, 3, 3, 1 << 20, 1,
                                              1, 0, ONESTEP_FLOAT16, nullptr),
                   "Cout at most"),
           "Cout = 2^20 is refused as too large: %s", msg);
    expect(onestep_conv2d_igemm_choice(1, 4, 4, 16, 3, 3, 1 << 20, 1, 1) == 0 &&
               onestep_conv2d_igemm_choice(1 << 20, 64, 64, 16, 3, 3, 16, 1, 1) == 0,
           "the choice refuses Cout = 2^20 and N*Ho*Wo past INT_MAX / 2%s", "");
    expect(refused(ONESTEP_ERROR_INVALID_ARGUMENT,
                   onestep_conv2d_igemm_typed(buf + 1, buf, nullptr, nullptr, buf, 1, 4, 4, 16, 3, 3, 16, 1, 1, 0,
                                              ONESTEP_FLOAT16, nullptr),
                   "16-byte aligned"),
           "a misaligned x is refused: %s", msg);
    expect(refused(ONESTEP_ERROR_INVALID_ARGUMENT,
                   onestep_conv2d_igemm_typed(buf, buf, nullptr, nullptr, buf, 1, 4, 4, 16, 3, 3, 16, 1, 1, 99,
                                              ONESTEP_BFLOAT16, nullptr),
                   "config=99"),
           "an unknown config is refused: %s", msg);
    expect(refused(ONESTEP_ERROR_INVALID_ARGUMENT,
                   onestep_conv2d_igemm_typed(buf, buf, nullptr, nullptr, buf, 1, 2, 2, 16, 5, 5, 16, 1, 0, 0,
                                              ONESTEP_FLOAT16, nullptr),
                   "does not fit"),
           "a kernel larger than the input is refused: %s", msg);
    expect(refused(ONESTEP_ERROR_INVALID_ARGUMENT,
                   onestep_conv2d_igemm_typed(buf, buf + 512, nullptr, nullptr, buf, 1, 4, 4, 16, 3, 3, 16, 1, 1, 0,
                                              ONESTEP_FLOAT16, nullptr),
                   "alias"),
           "y aliasing x is refused: %s", msg);
    expect(onestep_conv2d_igemm_choice(1, 32, 32, 128, 3, 3, 128, 1, 1) >= 1 &&
               onestep_conv2d_igemm_choice(1, 32, 32, 3, 3, 3, 128, 1, 1) == 0 &&
               onestep_conv2d_igemm_config_name(onestep_conv2d_igemm_configs()) != nullptr &&
               onestep_conv2d_igemm_config_name(onestep_conv2d_igemm_configs() + 1) == nullptr,
           "the choice and the config names: %s", "");
}

}  // namespace

// The weight prefetch: the same bits with it off; with it on, the first row of tiles asks for its weight rows.
void check_prefetch(const Type& t, ktest::Rng& rng) {
    const int N = 1, H = 8, W = 8, Cin = 64, Cout = 40;  // 40 out channels: a ragged last column tile
    ktest::Input16 x(t, rng, size_t(N) * H * W * Cin), w(t, rng, size_t(Cout) * 9 * Cin, 0.05);
    ktest::Buf16 y_on(size_t(N) * H * W * Cout), y_off(size_t(N) * H * W * Cout);
    char what[48];
    std::snprintf(what, sizeof what, "%s implicit GEMM", t.name);
    ktest::check_prefetch_switch(what, y_on.p, y_off.p, y_on.n * 2, [&](void* y) {
        return onestep_conv2d_igemm_typed(x.b.p, w.b.p, nullptr, nullptr, y, N, H, W, Cin, 3, 3, Cout, 1, 1, 0, t.dt,
                                          nullptr);
    });
}

int main() {
    const auto start = std::chrono::steady_clock::now();
    ktest::Rng rng(20261127);
    const Type types[] = {{ktest::kHalf, ONESTEP_FLOAT16, "fp16"}, {ktest::kBf16, ONESTEP_BFLOAT16, "bf16"}};
    const Case cases[] = {
        {1, 5, 7, 16, 3, 3, 24, 1, 1},   // one step per tap; M = 35, Cout = 24: ragged for every tile
        {2, 6, 5, 48, 3, 3, 40, 2, 1},   // the downsampler's stride 2, three steps per tap
        {1, 4, 4, 64, 1, 1, 72, 1, 0},   // a 1x1 shortcut
        {1, 3, 9, 32, 1, 3, 8, 1, 1},    // a non-square kernel, padding past the rows
        {1, 8, 8, 128, 3, 3, 16, 1, 1},  // deep: 72 steps, several per warp for every split
        {3, 2, 2, 16, 2, 2, 20, 1, 0},   // padding 0, a 2x2 window as large as the image: one output pixel each
    };
    check_norm_errors();
    check_concat_errors();
    check_stats_errors();
    for (const Type& t : types) {
        for (const Case& c : cases) check_case(t, rng, c);
        check_against_portable(t, rng);
        check_prefetch(t, rng);
        check_upsample(t, rng, 2, 3, 5, 32, 24);  // odd sizes: every parity of the gather
        check_upsample(t, rng, 1, 1, 1, 16, 8);   // one pixel: a 2x2 output, every tap at an edge
        // The group norm prologue: 4-channel groups at batch 2 (only 16-row tiles fit 4x4), 16-channel groups with
        // every tile, 12-channel groups that a 16-deep step straddles (48 channels: 6 columns of 8, 21 pixel rows of
        // them for 128 threads), on a 1x1 convolution.
        check_norm(t, rng, {2, 4, 4, 32, 3, 3, 24, 1, 1}, 8, 0);
        check_norm(t, rng, {1, 8, 8, 64, 3, 3, 40, 1, 1}, 4, 1);
        check_norm(t, rng, {1, 4, 4, 48, 1, 1, 16, 1, 0}, 4, 2);
        // 80 columns of 8 channels: more than the 64-thread tile's threads, so some sum two columns each.
        check_norm(t, rng, {1, 8, 8, 640, 1, 1, 16, 1, 0}, 32, 0);
        // Outputs smaller than the input (stride 2; padding 0): the statistics are over x's H W pixels, not Ho Wo. With
        // x around 1000, where a variance from plain sums of squares loses its digits in fp32.
        check_norm(t, rng, {2, 8, 8, 32, 3, 3, 16, 2, 1}, 8, 0, 1000.0);
        check_norm(t, rng, {2, 6, 6, 32, 3, 3, 16, 1, 0}, 8, 2, 1000.0);
        // The concatenation [a, b]: an up block's 1x1 shortcut (ragged M, Cout), its 3x3 conv1 under the prologue
        // with 12-channel groups straddling a (16) and b (32), batch 2, and 16 + 16 at stride 2.
        check_concat(t, rng, {1, 5, 3, 48, 1, 1, 24, 1, 0}, 32, 0, 0);
        check_concat(t, rng, {2, 3, 5, 48, 1, 1, 24, 1, 0}, 16, 0, 1);
        check_concat(t, rng, {2, 4, 4, 48, 3, 3, 24, 1, 1}, 16, 4, 2, 0, true);
        check_concat(t, rng, {1, 8, 8, 32, 3, 3, 16, 2, 1}, 16, 8, 3);
        check_concat(t, rng, {1, 4, 4, 64, 3, 3, 40, 1, 1}, 32, 4, 2, 1000.0, true);
        check_concat(t, rng, {1, 8, 8, 32, 3, 3, 16, 1, 1}, 16, 8, 3, 0, true);
        // A down block's entry: norm1, a 3x3 conv1 and the 1x1 shortcut in one launch (ragged Cout, batch 2; and
        // with x's pending bias, which the shortcut's blocks add and round).
        check_norm_shortcut(t, rng, {2, 4, 4, 32, 3, 3, 40, 1, 1}, 8, false);
        check_norm_shortcut(t, rng, {1, 8, 8, 48, 3, 3, 24, 1, 1}, 4, true);
        // The statistics computed once, by the producer. The reader on given per-channel statistics, against
        // check_norm's oracle: batch 2 with every pre-add term, and a 1x1 with x around 1000.
        check_norm(t, rng, {2, 4, 4, 32, 3, 3, 24, 1, 1}, 8, 0, 0, true);
        check_norm(t, rng, {1, 8, 8, 48, 1, 1, 16, 1, 0}, 4, 1, 1000.0, true);
        // The producer: Cout 40 in 4-channel groups (ragged for every tile's columns) over 3 samples of one run each
        // (ragged rows for the 32- and 64-row tiles), z around 1000; per channel with a bias (and the chain, with
        // pre-add terms); a stride-2 output of 16 pixels in one 32-channel group (and the chain without terms);
        // 2-channel groups.
        check_stats(t, rng, {3, 4, 4, 32, 3, 3, 40, 1, 1}, 10, 0, 1000.0);
        check_stats(t, rng, {1, 8, 8, 48, 3, 3, 64, 1, 1}, 64, 1);
        check_stats(t, rng, {2, 8, 8, 32, 3, 3, 32, 2, 1}, 1, 2);
        check_stats(t, rng, {1, 4, 8, 16, 1, 1, 16, 1, 0}, 8, 0);
    }
    check_errors();
    return ktest::finish("test_conv", start);
}
