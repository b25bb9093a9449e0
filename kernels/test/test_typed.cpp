// test_typed.cpp: the fp16 and bf16 instantiations of the forward kernels, the *_typed entry points of the
// half-precision inference path (gemm, linear, conv2d, group norm, the elementwise and layout ops, the time
// embedding).
//
// The oracle: a typed kernel widens its inputs exactly and runs its fp32 twin's arithmetic in the same order,
// so on inputs already representable in the format its output must be exactly the fp32 twin's output rounded
// once to nearest even. The fp32 twins are checked against double references in test_layers, test_groupnorm
// and test_denoise; the rounding oracle (test_common.h) is written by value, independently of the library.
// So each check here is bit for bit, on ragged shapes, and again on pointers that are not 4-element aligned
// (the kernels' scalar paths). A kernel that rounded twice, read the wrong type or skipped an element fails.
#include "onestep_kernels.h"
#include "test_common.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

using ktest::Buf16;
using ktest::expect;
using ktest::Format16;
using ktest::narrow;
using std::vector;

namespace {

using Type = ktest::Type16;

using ktest::ok;

// got (16-bit bits) must equal want32 (the fp32 twin's output) rounded to the format, element for element.
void expect_rounded(const char* what, const Type& t, const uint16_t* got, const float* want32, size_t n) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        const uint16_t want = ktest::encode16(t.f, ktest::round_to(t.f, want32[i]));
        const bool both_nan = std::isnan(want32[i]) && std::isnan(ktest::decode16(t.f, got[i]));
        if (got[i] != want && !both_nan) {
            if (bad++ == 0) first = i;
        }
    }
    char msg[400];
    std::snprintf(msg, sizeof msg, "%s %s: %zu of %zu elements differ from the fp32 result rounded once (first at %zu:"
                  " got %.8g, want %.8g)", t.name, what, bad, n, first,
                  bad ? ktest::decode16(t.f, got[first]) : 0.0,
                  bad ? ktest::round_to(t.f, want32[first]) : 0.0);
    expect(bad == 0, "%s", msg);
}

using Input = ktest::Input16;

void check_gemm(const Type& t, ktest::Rng& rng) {
    const int M = 9, N = 13, K = 21;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (float beta : {0.0f, 0.25f}) {
                Input a(t, rng, size_t(M) * K), b(t, rng, size_t(K) * N), c(t, rng, size_t(M) * N);
                vector<float> c32 = c.v;
                ok(onestep_gemm(a.v.data(), ta, b.v.data(), tb, c32.data(), M, N, K, 0.5f, beta, nullptr), "gemm: %s");
                ok(onestep_gemm_typed(a.b.p, ta, b.b.p, tb, c.b.p, M, N, K, 0.5f, beta, t.dt, nullptr), "gemm_typed: %s");
                ktest::sync();
                expect_rounded("gemm", t, c.b.p, c32.data(), c32.size());
            }
}

void check_linear(const Type& t, ktest::Rng& rng) {
    const long long rows = 7;
    const int in = 19, out = 10;
    for (int bias = 0; bias < 2; bias++) {
        Input x(t, rng, size_t(rows) * in), w(t, rng, size_t(in) * out), b(t, rng, out);
        vector<float> y32(size_t(rows) * out);
        Buf16 y(y32.size());
        ok(onestep_linear(x.v.data(), w.v.data(), bias ? b.v.data() : nullptr, y32.data(), rows, in, out, nullptr),
           "linear: %s");
        ok(onestep_linear_typed(x.b.p, w.b.p, bias ? b.b.p : nullptr, y.p, rows, in, out, t.dt, nullptr),
           "linear_typed: %s");
        ktest::sync();
        expect_rounded("linear", t, y.p, y32.data(), y32.size());
        // The residual twin: x w + b + z in fp32, rounded once.
        Input z(t, rng, y32.size());
        vector<float> yz32(y32.size());
        Buf16 yz(y32.size());
        ok(onestep_linear_residual_typed(x.v.data(), w.v.data(), bias ? b.v.data() : nullptr, z.v.data(), yz32.data(),
                                         rows, in, out, ONESTEP_FLOAT32, nullptr),
           "linear residual: %s");
        ok(onestep_linear_residual_typed(x.b.p, w.b.p, bias ? b.b.p : nullptr, z.b.p, yz.p, rows, in, out, t.dt,
                                         nullptr),
           "linear residual typed: %s");
        ktest::sync();
        expect_rounded("linear residual", t, yz.p, yz32.data(), yz32.size());
    }
}

void check_conv(const Type& t, ktest::Rng& rng) {
    const int cases[][4] = {{3, 1, 1, 1}, {3, 2, 1, 0}, {1, 1, 0, 1}};  // kernel, stride, padding, bias
    for (const auto& cs : cases) {
        const int KH = cs[0], stride = cs[1], pad = cs[2], N = 2, H = 7, W = 5, Ci = 6, Co = 5;
        const int Ho = (H + 2 * pad - KH) / stride + 1, Wo = (W + 2 * pad - KH) / stride + 1;
        Input x(t, rng, size_t(N) * H * W * Ci), w(t, rng, size_t(KH) * KH * Ci * Co), b(t, rng, Co);
        vector<float> y32(size_t(N) * Ho * Wo * Co);
        Buf16 y(y32.size());
        ok(onestep_conv2d_nhwc(x.v.data(), w.v.data(), cs[3] ? b.v.data() : nullptr, y32.data(), N, H, W, Ci, KH, KH, Co,
                               stride, pad, nullptr),
           "conv2d: %s");
        ok(onestep_conv2d_nhwc_typed(x.b.p, w.b.p, cs[3] ? b.b.p : nullptr, y.p, N, H, W, Ci, KH, KH, Co, stride, pad,
                                     t.dt, nullptr),
           "conv2d_typed: %s");
        ktest::sync();
        expect_rounded("conv2d", t, y.p, y32.data(), y32.size());
        // The residual entry: conv + bias + z in fp32, rounded once (into y, and in place into z's own buffer).
        Input z(t, rng, y32.size());
        vector<float> yz32(y32.size());
        Buf16 yz(y32.size());
        ok(onestep_conv2d_nhwc_residual_typed(x.v.data(), w.v.data(), cs[3] ? b.v.data() : nullptr, z.v.data(),
                                              yz32.data(), N, H, W, Ci, KH, KH, Co, stride, pad, ONESTEP_FLOAT32,
                                              nullptr),
           "conv2d residual: %s");
        ok(onestep_conv2d_nhwc_residual_typed(x.b.p, w.b.p, cs[3] ? b.b.p : nullptr, z.b.p, yz.p, N, H, W, Ci, KH, KH,
                                              Co, stride, pad, t.dt, nullptr),
           "conv2d residual typed: %s");
        ok(onestep_conv2d_nhwc_residual_typed(x.b.p, w.b.p, cs[3] ? b.b.p : nullptr, z.b.p, z.b.p, N, H, W, Ci, KH, KH,
                                              Co, stride, pad, t.dt, nullptr),
           "conv2d residual typed in place: %s");
        ktest::sync();
        expect_rounded("conv2d residual", t, yz.p, yz32.data(), yz32.size());
        expect_rounded("conv2d residual in place", t, z.b.p, yz32.data(), yz32.size());
    }
}

// Group norm with every fused variant, C divisible by 4 and not, at an aligned and a misaligned x / y.
void check_groupnorm(const Type& t, ktest::Rng& rng) {
    const int shapes[][4] = {{2, 5, 16, 4}, {3, 7, 12, 3}, {1, 9, 10, 5}};  // N, HW, C, G
    for (const auto& sh : shapes)
        for (int emb = 0; emb < 2; emb++)
            for (int silu = 0; silu < 2; silu++)
                for (int off = 0; off < 2; off++) {
                    const int N = sh[0], HW = sh[1], C = sh[2], G = sh[3];
                    const size_t n = size_t(N) * HW * C;
                    // Offset means, so the statistics are not trivially centred.
                    Input x(t, rng, n + off, 2.0), g(t, rng, C), be(t, rng, C), sc(t, rng, size_t(N) * C, 0.3),
                        sf(t, rng, size_t(N) * C);
                    vector<float> y32(n), m32(size_t(N) * G), r32(size_t(N) * G), mt(m32.size()), rt(r32.size());
                    Buf16 y(n + off);
                    ok(onestep_groupnorm_forward(x.v.data() + off, g.v.data(), be.v.data(), emb ? sc.v.data() : nullptr,
                                                 emb ? sf.v.data() : nullptr, y32.data(), m32.data(), r32.data(), N, HW,
                                                 C, G, 1e-5f, silu, nullptr),
                       "groupnorm: %s");
                    ok(onestep_groupnorm_forward_typed(x.b.p + off, g.b.p, be.b.p, emb ? sc.b.p : nullptr,
                                                       emb ? sf.b.p : nullptr, y.p + off, mt.data(), rt.data(), N, HW, C,
                                                       G, 1e-5f, silu, t.dt, nullptr),
                       "groupnorm_typed: %s");
                    ktest::sync();
                    char what[96];
                    std::snprintf(what, sizeof what, "groupnorm N=%d HW=%d C=%d G=%d emb=%d silu=%d offset=%d", N, HW,
                                  C, G, emb, silu, off);
                    expect_rounded(what, t, y.p + off, y32.data(), n);
                    expect(std::memcmp(m32.data(), mt.data(), m32.size() * 4) == 0 &&
                               std::memcmp(r32.data(), rt.data(), r32.size() * 4) == 0,
                           "%s", (std::string(t.name) + " " + what + ": fp32 mean/rstd differ from the fp32 kernel's").c_str());
                }
}

// The pre-add group norm and the biased residual add: each typed result is its fp32 twin's rounded once (the
// pre-add terms are widened and summed in fp32, never rounded to the format on the way).
void check_pre_add(const Type& t, ktest::Rng& rng) {
    const int shapes[][4] = {{2, 5, 16, 4}, {1, 9, 10, 5}};  // N, HW, C, G
    for (const auto& sh : shapes)
        for (int off = 0; off < 2; off++) {
            const int N = sh[0], HW = sh[1], C = sh[2], G = sh[3];
            const size_t n = size_t(N) * HW * C;
            Input x(t, rng, n + off, 2.0), g(t, rng, C), be(t, rng, C), xb(t, rng, C), ad(t, rng, size_t(N) * C),
                ab(t, rng, C);
            vector<float> y32(n), m32(size_t(N) * G), r32(size_t(N) * G), mt(m32.size()), rt(r32.size());
            Buf16 y(n + off);
            ok(onestep_groupnorm_forward_add_typed(x.v.data() + off, xb.v.data(), ad.v.data(), ab.v.data(), g.v.data(),
                                                   be.v.data(), nullptr, nullptr, y32.data(), m32.data(), r32.data(), N,
                                                   HW, C, G, 1e-5f, 1, ONESTEP_FLOAT32, nullptr),
               "groupnorm_add fp32: %s");
            ok(onestep_groupnorm_forward_add_typed(x.b.p + off, xb.b.p, ad.b.p, ab.b.p, g.b.p, be.b.p, nullptr, nullptr,
                                                   y.p + off, mt.data(), rt.data(), N, HW, C, G, 1e-5f, 1, t.dt, nullptr),
               "groupnorm_add typed: %s");
            ktest::sync();
            char what[96];
            std::snprintf(what, sizeof what, "groupnorm pre-add N=%d HW=%d C=%d G=%d offset=%d", N, HW, C, G, off);
            expect_rounded(what, t, y.p + off, y32.data(), n);

            const long long rows = (long long)N * HW;
            Input a(t, rng, n + off), b(t, rng, n + off);
            vector<float> s32(n);
            Buf16 s(n + off);
            for (int which = 0; which < 3; which++) {  // a's bias, b's bias, both
                const float* a32b = which != 1 ? xb.v.data() : nullptr;
                const float* b32b = which != 0 ? ab.v.data() : nullptr;
                ok(onestep_add_biased_typed(a.v.data() + off, a32b, b.v.data() + off, b32b, s32.data(), rows, C,
                                            ONESTEP_FLOAT32, nullptr),
                   "add_biased fp32: %s");
                ok(onestep_add_biased_typed(a.b.p + off, which != 1 ? xb.b.p : nullptr, b.b.p + off,
                                            which != 0 ? ab.b.p : nullptr, s.p + off, rows, C, t.dt, nullptr),
                   "add_biased typed: %s");
                ktest::sync();
                std::snprintf(what, sizeof what, "add_biased rows=%lld C=%d biases=%d offset=%d", rows, C, which, off);
                expect_rounded(what, t, s.p + off, s32.data(), n);
                // The fp32 twin against its definition, summed in the same order.
                size_t bad = 0;
                for (long long r = 0; r < rows; r++)
                    for (int c = 0; c < C; c++) {
                        const size_t i = size_t(r) * C + c;
                        float u = a.v[off + i], v = b.v[off + i];
                        if (a32b) u += a32b[c];
                        if (b32b) v += b32b[c];
                        if (s32[i] != u + v) bad++;
                    }
                std::snprintf(what, sizeof what, "add_biased fp32: %zu elements differ from (a + a_bias) + (b + b_bias)",
                              bad);
                expect(bad == 0, "%s", what);
            }
        }
}

// The concat that takes its inputs' biases: bit for bit the unfused route in every storage type (the bias added
// into the input by add_per_channel, rounded once, then the plain concat).
void check_concat_biased(const Type& t, ktest::Rng& rng) {
    const long long rows = 13;
    const int ca = 6, cb = 5;
    Input a(t, rng, size_t(rows) * ca), b(t, rng, size_t(rows) * cb), ab(t, rng, ca), bb(t, rng, cb);
    for (int which = 0; which < 3; which++) {
        const void* pab = which != 1 ? ab.b.p : nullptr;
        const void* pbb = which != 0 ? bb.b.p : nullptr;
        Buf16 got(size_t(rows) * (ca + cb)), want(size_t(rows) * (ca + cb)), a2(size_t(rows) * ca), b2(size_t(rows) * cb);
        std::memcpy(a2.p, a.b.p, size_t(rows) * ca * 2);
        std::memcpy(b2.p, b.b.p, size_t(rows) * cb * 2);
        if (pab) ok(onestep_add_per_channel_typed(a.b.p, pab, a2.p, 1, rows, ca, t.dt, nullptr), "add_per_channel: %s");
        if (pbb) ok(onestep_add_per_channel_typed(b.b.p, pbb, b2.p, 1, rows, cb, t.dt, nullptr), "add_per_channel: %s");
        ok(onestep_concat_channels_typed(a2.p, b2.p, want.p, rows, ca, cb, t.dt, nullptr), "concat: %s");
        ok(onestep_concat_channels_biased_typed(a.b.p, pab, b.b.p, pbb, got.p, rows, ca, cb, t.dt, nullptr),
           "concat_biased: %s");
        ktest::sync();
        char what[96];
        std::snprintf(what, sizeof what, "%s concat_biased biases=%d: differs from add_per_channel + concat", t.name,
                      which);
        expect(std::memcmp(got.p, want.p, size_t(rows) * (ca + cb) * 2) == 0, "%s", what);
    }
}

// The concatenating group norm in 16 bits: the same bits as the concat (taking the pending biases) and then the
// typed group norm, on aligned and misaligned operands, with groups straddling the a|b boundary.
void check_groupnorm_concat(const Type& t, ktest::Rng& rng) {
    const int shapes[][5] = {{2, 5, 8, 8, 4}, {1, 9, 6, 4, 5}, {1, 7, 6, 10, 4}};  // N, HW, Ca, Cb, G
    for (const auto& sh : shapes)
        for (int off = 0; off < 2; off++)
            for (int biases = 0; biases < 4; biases++) {
                const int N = sh[0], HW = sh[1], Ca = sh[2], Cb = sh[3], G = sh[4], C = Ca + Cb;
                const long long rows = (long long)N * HW;
                const size_t n = size_t(rows) * C;
                Input a(t, rng, size_t(rows) * Ca + off, 2.0), b(t, rng, size_t(rows) * Cb + off), ab(t, rng, Ca),
                    bb(t, rng, Cb), g(t, rng, C), be(t, rng, C);
                const void* pab = biases & 1 ? ab.b.p : nullptr;
                const void* pbb = biases & 2 ? bb.b.p : nullptr;
                Buf16 cat(n + off), y(n + off), cat0(n + off), y0(n + off);
                vector<float> m(size_t(N) * G), r(m.size()), m0(m.size()), r0(m.size());
                ok(onestep_groupnorm_concat_typed(a.b.p + off, pab, b.b.p + off, pbb, g.b.p, be.b.p, cat.p + off,
                                                  y.p + off, m.data(), r.data(), N, HW, Ca, Cb, G, 1e-5f, 1, t.dt,
                                                  nullptr),
                   "groupnorm_concat: %s");
                ok(onestep_concat_channels_biased_typed(a.b.p + off, pab, b.b.p + off, pbb, cat0.p + off, rows, Ca, Cb,
                                                        t.dt, nullptr),
                   "concat_biased: %s");
                ok(onestep_groupnorm_forward_typed(cat0.p + off, g.b.p, be.b.p, nullptr, nullptr, y0.p + off, m0.data(),
                                                   r0.data(), N, HW, C, G, 1e-5f, 1, t.dt, nullptr),
                   "groupnorm_typed: %s");
                ktest::sync();
                char what[112];
                std::snprintf(what, sizeof what, "%s groupnorm_concat N=%d HW=%d Ca=%d Cb=%d G=%d offset=%d biases=%d",
                              t.name, N, HW, Ca, Cb, G, off, biases);
                expect(std::memcmp(cat.p + off, cat0.p + off, n * 2) == 0 &&
                           std::memcmp(y.p + off, y0.p + off, n * 2) == 0 &&
                           std::memcmp(m.data(), m0.data(), m.size() * 4) == 0 &&
                           std::memcmp(r.data(), r0.data(), r.size() * 4) == 0,
                       "%s: differs from concat + group norm", what);
            }
}

// The upsampling convolution in 16 bits: k is the fp32 twin's k rounded once, and y, computed from k, is the fp32
// kernel's output on the widened k rounded once.
void check_upsample_conv(const Type& t, ktest::Rng& rng) {
    const int N = 2, H = 3, W = 5, Ci = 6, Co = 7;
    for (int off = 0; off < 2; off++) {
        Input x(t, rng, size_t(N) * H * W * Ci + off), w(t, rng, size_t(9) * Ci * Co), b(t, rng, Co);
        const size_t nk = size_t(Ci) * 16 * Co, ny = size_t(N) * 4 * H * W * Co;
        vector<float> k32(nk), y32(ny);
        Buf16 k(nk), y(ny + off);
        ok(onestep_subpixel_weights_typed(w.v.data(), k32.data(), Ci, Co, ONESTEP_FLOAT32, nullptr), "subpixel fp32: %s");
        ok(onestep_subpixel_weights_typed(w.b.p, k.p, Ci, Co, t.dt, nullptr), "subpixel typed: %s");
        ktest::sync();
        expect_rounded("subpixel weights", t, k.p, k32.data(), nk);
        vector<float> kw(nk);
        for (size_t i = 0; i < nk; i++) kw[i] = float(ktest::decode16(t.f, k.p[i]));
        ok(onestep_upsample_conv_typed(x.v.data() + off, kw.data(), b.v.data(), y32.data(), N, H, W, Ci, Co,
                                       ONESTEP_FLOAT32, nullptr),
           "upsample conv fp32: %s");
        ok(onestep_upsample_conv_typed(x.b.p + off, k.p, b.b.p, y.p + off, N, H, W, Ci, Co, t.dt, nullptr),
           "upsample conv typed: %s");
        ktest::sync();
        char what[48];
        std::snprintf(what, sizeof what, "upsample conv offset=%d", off);
        expect_rounded(what, t, y.p + off, y32.data(), ny);
    }
}

// The elementwise ops at n = 1031 (a ragged tail after the 4-wide bulk), aligned and one element off.
void check_elementwise(const Type& t, ktest::Rng& rng) {
    for (int off = 0; off < 2; off++) {
        const long long n = 1031;
        Input a(t, rng, n + off), b(t, rng, n + off);
        vector<float> y32(n + off);
        Buf16 y(n + off);
        const float* a32 = a.v.data() + off;
        const float* b32 = b.v.data() + off;
        const uint16_t* a16 = a.b.p + off;
        const uint16_t* b16 = b.b.p + off;
        char what[64];
        auto done = [&](const char* op) {
            ktest::sync();
            std::snprintf(what, sizeof what, "%s offset=%d", op, off);
            expect_rounded(what, t, y.p + off, y32.data() + off, n);
        };
        ok(onestep_add(a32, b32, y32.data() + off, n, nullptr), "add: %s");
        ok(onestep_add_typed(a16, b16, y.p + off, n, t.dt, nullptr), "add_typed: %s");
        done("add");
        ok(onestep_mul(a32, b32, y32.data() + off, n, nullptr), "mul: %s");
        ok(onestep_mul_typed(a16, b16, y.p + off, n, t.dt, nullptr), "mul_typed: %s");
        done("mul");
        ok(onestep_axpby(0.375f, a32, -1.25f, b32, y32.data() + off, n, nullptr), "axpby: %s");
        ok(onestep_axpby_typed(0.375f, a16, -1.25f, b16, y.p + off, n, t.dt, nullptr), "axpby_typed: %s");
        done("axpby");
        ok(onestep_scale(0.7f, a32, y32.data() + off, n, nullptr), "scale: %s");
        ok(onestep_scale_typed(0.7f, a16, y.p + off, n, t.dt, nullptr), "scale_typed: %s");
        done("scale");
        ok(onestep_silu_forward(a32, y32.data() + off, n, nullptr), "silu: %s");
        ok(onestep_silu_forward_typed(a16, y.p + off, n, t.dt, nullptr), "silu_typed: %s");
        done("silu");
        // axpy updates y in place: start both from b.
        std::memcpy(y32.data() + off, b32, n * 4);
        std::memcpy(y.p + off, b16, n * 2);
        ok(onestep_axpy(-0.5f, a32, y32.data() + off, n, nullptr), "axpy: %s");
        ok(onestep_axpy_typed(-0.5f, a16, y.p + off, n, t.dt, nullptr), "axpy_typed: %s");
        done("axpy");
    }
}

// The denoiser output on a 16-bit network output: axpby_mixed_typed must give, bit for bit, what the three-launch
// route gives (the pending bias added in place in the format, the conversion to fp32, the fp32 axpby), with and
// without the bias, into a separate y and in place over x.
void check_axpby_mixed(const Type& t, ktest::Rng& rng) {
    const int C = 3;
    const long long n = 37 * C;
    Input f(t, rng, n), bias(t, rng, C);
    vector<float> x = rng.normals(n, 0.0, 3.0);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        Buf16 tmp(n);
        std::memcpy(tmp.p, f.b.p, n * 2);
        vector<float> wide(n), want(n), got(n, NAN), inplace = x;
        if (with_bias)
            ok(onestep_add_per_channel_typed(tmp.p, bias.b.p, tmp.p, 1, n / C, C, t.dt, nullptr), "bias: %s");
        ok(onestep_convert(tmp.p, t.dt, wide.data(), ONESTEP_FLOAT32, n, nullptr), "convert: %s");
        ok(onestep_axpby(0.625f, x.data(), -1.75f, wide.data(), want.data(), n, nullptr), "axpby: %s");
        const void* b = with_bias ? bias.b.p : nullptr;
        ok(onestep_axpby_mixed_typed(0.625f, x.data(), -1.75f, f.b.p, b, C, got.data(), n, t.dt, nullptr),
           "axpby_mixed: %s");
        ok(onestep_axpby_mixed_typed(0.625f, inplace.data(), -1.75f, f.b.p, b, C, inplace.data(), n, t.dt, nullptr),
           "axpby_mixed in place: %s");
        ktest::sync();
        size_t bad = 0, bad_inplace = 0;
        for (long long i = 0; i < n; i++) {
            bad += std::memcmp(&got[i], &want[i], 4) != 0;
            bad_inplace += std::memcmp(&inplace[i], &want[i], 4) != 0;
        }
        char msg[160];
        std::snprintf(msg, sizeof msg, "%s axpby_mixed (bias %d): %zu and %zu (in place) of %lld elements differ from "
                      "the three-launch route", t.name, with_bias, bad, bad_inplace, n);
        expect(bad == 0 && bad_inplace == 0, "%s", msg);
    }
    float one[4] = {0, 0, 0, 0};
    expect(onestep_axpby_mixed_typed(1, one, 1, one, one, 3, one, 4, t.dt, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "C >= 1 must divide n"),
           "axpby_mixed refuses a bias whose C does not divide n: %s", onestep_last_error_message());
}

// Layout ops and the embedding: moves are exact, so these are equalities with the rounded inputs.
void check_layout(const Type& t, ktest::Rng& rng) {
    const int N = 2, H = 3, W = 5, C = 6, ca = 6, cb = 3;
    {
        Input x(t, rng, size_t(N) * H * W * C), v(t, rng, size_t(N) * C);
        vector<float> y32(x.v.size());
        Buf16 y(y32.size());
        ok(onestep_add_per_channel(x.v.data(), v.v.data(), y32.data(), N, (long long)H * W, C, nullptr), "apc: %s");
        ok(onestep_add_per_channel_typed(x.b.p, v.b.p, y.p, N, (long long)H * W, C, t.dt, nullptr), "apc_typed: %s");
        ktest::sync();
        expect_rounded("add_per_channel", t, y.p, y32.data(), y32.size());
    }
    {
        const long long rows = 17;
        Input a(t, rng, size_t(rows) * ca), b(t, rng, size_t(rows) * cb);
        vector<float> y32(size_t(rows) * (ca + cb));
        Buf16 y(y32.size());
        ok(onestep_concat_channels(a.v.data(), b.v.data(), y32.data(), rows, ca, cb, nullptr), "concat: %s");
        ok(onestep_concat_channels_typed(a.b.p, b.b.p, y.p, rows, ca, cb, t.dt, nullptr), "concat_typed: %s");
        ktest::sync();
        expect_rounded("concat_channels", t, y.p, y32.data(), y32.size());
    }
    {
        Input x(t, rng, size_t(N) * H * W * C);
        vector<float> y32(x.v.size() * 4);
        Buf16 y(y32.size());
        ok(onestep_upsample_nearest2x(x.v.data(), y32.data(), N, H, W, C, nullptr), "upsample: %s");
        ok(onestep_upsample_nearest2x_typed(x.b.p, y.p, N, H, W, C, t.dt, nullptr), "upsample_typed: %s");
        ktest::sync();
        expect_rounded("upsample_nearest2x", t, y.p, y32.data(), y32.size());
    }
    {
        const int T = 7, Hd = 3, D = 5;
        Input x(t, rng, size_t(N) * T * Hd * D);
        vector<float> y32(x.v.size());
        Buf16 y(y32.size());
        ok(onestep_split_heads(x.v.data(), y32.data(), N, T, Hd, D, nullptr), "split: %s");
        ok(onestep_split_heads_typed(x.b.p, y.p, N, T, Hd, D, t.dt, nullptr), "split_typed: %s");
        ktest::sync();
        expect_rounded("split_heads", t, y.p, y32.data(), y32.size());
        ok(onestep_merge_heads(x.v.data(), y32.data(), N, T, Hd, D, nullptr), "merge: %s");
        ok(onestep_merge_heads_typed(x.b.p, y.p, N, T, Hd, D, t.dt, nullptr), "merge_typed: %s");
        ktest::sync();
        expect_rounded("merge_heads", t, y.p, y32.data(), y32.size());
    }
    {
        // t stays fp32: noise levels from 0.002 to 80, as the EDM schedule spans.
        const int n = 5, D = 33;
        const float ts[n] = {0.002f, 0.37f, 1.0f, 11.5f, 80.0f};
        vector<float> y32(size_t(n) * D);
        Buf16 y(y32.size());
        ok(onestep_sinusoidal_embedding(ts, y32.data(), n, D, 1, 1.0f, 1000.0f, 10000.0f, nullptr), "sin: %s");
        ok(onestep_sinusoidal_embedding_typed(ts, y.p, n, D, 1, 1.0f, 1000.0f, 10000.0f, t.dt, nullptr),
           "sin_typed: %s");
        ktest::sync();
        expect_rounded("sinusoidal_embedding", t, y.p, y32.data(), y32.size());
    }
}

// The Fourier features: fp32 against a double reference (sin/cos of an argument formed in double), and the
// 16-bit instantiations as the fp32 result rounded once. Frequencies ~ N(0, 16^2) as in NCSN++.
void check_fourier(const Type& t, ktest::Rng& rng) {
    const int n = 4, half = 24;
    const float ts[n] = {0.002f, 0.5f, 3.0f, 80.0f};
    vector<float> w = rng.normals(half, 0.0, 16.0);
    for (int use_log = 0; use_log < 2; use_log++)
        for (int flip = 0; flip < 2; flip++) {
            vector<float> y32(size_t(n) * 2 * half);
            Buf16 y(y32.size());
            ok(onestep_fourier_embedding_typed(ts, w.data(), y32.data(), n, half, use_log, flip, ONESTEP_FLOAT32,
                                               nullptr),
               "fourier fp32: %s");
            ok(onestep_fourier_embedding_typed(ts, w.data(), y.p, n, half, use_log, flip, t.dt, nullptr),
               "fourier typed: %s");
            ktest::sync();
            vector<double> want(y32.size());
            for (int b = 0; b < n; b++)
                for (int j = 0; j < half; j++) {
                    const double x = 2 * M_PI * (use_log ? std::log(double(ts[b])) : double(ts[b]));
                    const double arg = x * double(w[j]);
                    want[size_t(b) * 2 * half + j] = flip ? std::cos(arg) : std::sin(arg);
                    want[size_t(b) * 2 * half + half + j] = flip ? std::sin(arg) : std::cos(arg);
                }
            ktest::expect_close("fourier fp32 vs double", y32.data(), want.data(), want.size(), 1e-6, 1e-6);
            expect_rounded("fourier_embedding", t, y.p, y32.data(), y32.size());
        }
}

void check_errors() {
    float x[4] = {0, 0, 0, 0};
    expect(onestep_add_typed(x, x, x, 4, onestep_dtype(7), nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "onestep_add_typed") != nullptr,
           "an unknown dtype is refused and named: %s", onestep_last_error_message());
    expect(onestep_conv2d_nhwc_typed(x, x, nullptr, x, 1, 2, 2, 1, 5, 5, 1, 1, 0, ONESTEP_FLOAT16, nullptr) ==
                   ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "onestep_conv2d_nhwc_typed(N=1, H=2, W=2, Cin=1, KH=5") &&
               std::strstr(onestep_last_error_message(), "float16"),
           "conv2d_typed names its shapes and dtype: %s", onestep_last_error_message());
    expect(onestep_groupnorm_forward_typed(x, x, x, nullptr, nullptr, x, x, x, 1, 2, 12, 5, 1e-5f, 0,
                                           ONESTEP_BFLOAT16, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "onestep_groupnorm_forward_typed(N=1, HW=2, C=12, G=5, bfloat16)"),
           "groupnorm_typed names its shapes and dtype: %s", onestep_last_error_message());
}

}  // namespace

int main() {
    const auto start = std::chrono::steady_clock::now();
    const Type types[] = {{ktest::kHalf, ONESTEP_FLOAT16, "fp16"}, {ktest::kBf16, ONESTEP_BFLOAT16, "bf16"}};
    for (const Type& t : types) {
        ktest::Rng rng(t.dt == ONESTEP_FLOAT16 ? 11 : 12);
        check_gemm(t, rng);
        check_linear(t, rng);
        check_conv(t, rng);
        check_groupnorm(t, rng);
        check_pre_add(t, rng);
        check_concat_biased(t, rng);
        check_groupnorm_concat(t, rng);
        check_upsample_conv(t, rng);
        check_elementwise(t, rng);
        check_axpby_mixed(t, rng);
        check_layout(t, rng);
        check_fourier(t, rng);
    }
    check_errors();
    return ktest::finish("test_typed", start);
}
