// test_layers.cpp: the portable layer kernels of kernels/src/layers.cu against double references on ragged
// shapes, and the runtime of kernels/src/runtime.cu: memory, copies, and stream capture (recorded, not run,
// until the graph is launched; replayed in order; host copies refused while capturing).
#include "onestep_kernels.h"
#include "onestep_runtime.h"
#include "test_common.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

using ktest::expect;
using ktest::expect_close;
using std::vector;

namespace {

using ktest::ok;

void check_gemm() {
    ktest::Rng rng(1);
    const int M = 7, N = 13, K = 19;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            vector<float> a = rng.normals(size_t(M) * K), b = rng.normals(size_t(K) * N), c = rng.normals(size_t(M) * N);
            vector<double> want(size_t(M) * N);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double acc = 0;
                    for (int k = 0; k < K; k++)
                        acc += double(ta ? a[size_t(k) * M + i] : a[size_t(i) * K + k]) *
                               double(tb ? b[size_t(j) * K + k] : b[size_t(k) * N + j]);
                    want[size_t(i) * N + j] = 0.5 * acc + 0.25 * c[size_t(i) * N + j];
                }
            ok(onestep_gemm(a.data(), ta, b.data(), tb, c.data(), M, N, K, 0.5f, 0.25f, nullptr), "gemm: %s");
            ktest::sync();
            expect_close(ta ? (tb ? "gemm TT" : "gemm TN") : (tb ? "gemm NT" : "gemm NN"), c.data(), want.data(),
                         want.size(), 1e-5, 1e-5);
        }
    // K = 0: an empty sum, so c = beta c, with a and b never read; a NULL c is refused, not written through.
    vector<float> c = rng.normals(size_t(M) * N);
    vector<double> want(c.begin(), c.end());
    for (double& w : want) w *= 0.25;
    ok(onestep_gemm(nullptr, 0, nullptr, 0, c.data(), M, N, 0, 0.5f, 0.25f, nullptr), "gemm K=0: %s");
    ktest::sync();
    expect_close("gemm K=0", c.data(), want.data(), want.size(), 1e-6, 1e-6);
    expect(onestep_gemm(nullptr, 0, nullptr, 0, nullptr, M, N, 0, 0.5f, 0.25f, nullptr) ==
               ONESTEP_ERROR_INVALID_ARGUMENT,
           "gemm K=0 refuses a NULL c: %s", onestep_last_error_message());
}

// linear and its residual twin: y = x w + b (+ z), against double sums, with and without the bias, into a separate y
// and in place over z.
void check_linear() {
    ktest::Rng rng(5);
    const long long rows = 11;
    const int in = 17, out = 6;
    for (int bias = 0; bias < 2; bias++) {
        vector<float> x = rng.normals(size_t(rows) * in), w = rng.normals(size_t(in) * out), b = rng.normals(out),
                      z = rng.normals(size_t(rows) * out), y(z.size(), NAN), yz(z.size(), NAN), inplace = z;
        vector<double> want(y.size()), wantz(y.size());
        for (long long r = 0; r < rows; r++)
            for (int j = 0; j < out; j++) {
                double acc = bias ? b[j] : 0.0;
                for (int k = 0; k < in; k++) acc += double(x[r * in + k]) * double(w[size_t(k) * out + j]);
                want[r * out + j] = acc;
                wantz[r * out + j] = acc + z[r * out + j];
            }
        const float* pb = bias ? b.data() : nullptr;
        ok(onestep_linear(x.data(), w.data(), pb, y.data(), rows, in, out, nullptr), "linear: %s");
        ok(onestep_linear_residual_typed(x.data(), w.data(), pb, z.data(), yz.data(), rows, in, out, ONESTEP_FLOAT32,
                                         nullptr),
           "linear residual: %s");
        ok(onestep_linear_residual_typed(x.data(), w.data(), pb, inplace.data(), inplace.data(), rows, in, out,
                                         ONESTEP_FLOAT32, nullptr),
           "linear residual in place: %s");
        ktest::sync();
        expect_close("linear", y.data(), want.data(), want.size(), 1e-5, 1e-5);
        expect_close("linear residual", yz.data(), wantz.data(), wantz.size(), 1e-5, 1e-5);
        expect_close("linear residual in place", inplace.data(), wantz.data(), wantz.size(), 1e-5, 1e-5);
    }
    float one[4] = {0, 0, 0, 0};
    expect(onestep_linear_residual_typed(one, one, nullptr, nullptr, one, 1, 2, 2, ONESTEP_FLOAT32, nullptr) ==
                   ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "NULL residual z") != nullptr,
           "linear residual without z: %s", onestep_last_error_message());
}

void check_conv() {
    ktest::Rng rng(2);
    const int cases[][4] = {{3, 1, 1, 1}, {3, 2, 1, 1}, {1, 1, 0, 0}, {3, 2, 0, 1}};
    for (const auto& cs : cases) {
        const int KH = cs[0], stride = cs[1], pad = cs[2], N = 2, H = 9, W = 7, Ci = 5, Co = 6;
        const int Ho = (H + 2 * pad - KH) / stride + 1, Wo = (W + 2 * pad - KH) / stride + 1;
        vector<float> x = rng.normals(size_t(N) * H * W * Ci), w = rng.normals(size_t(KH) * KH * Ci * Co),
                      b = rng.normals(Co), y(size_t(N) * Ho * Wo * Co, NAN);
        vector<double> want(y.size());
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++)
                    for (int co = 0; co < Co; co++) {
                        double acc = cs[3] ? b[co] : 0.0;
                        for (int ky = 0; ky < KH; ky++)
                            for (int kx = 0; kx < KH; kx++) {
                                int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                for (int ci = 0; ci < Ci; ci++)
                                    acc += double(x[((size_t(n) * H + iy) * W + ix) * Ci + ci]) *
                                           double(w[((size_t(ky) * KH + kx) * Ci + ci) * Co + co]);
                            }
                        want[((size_t(n) * Ho + oy) * Wo + ox) * Co + co] = acc;
                    }
        ok(onestep_conv2d_nhwc(x.data(), w.data(), cs[3] ? b.data() : nullptr, y.data(), N, H, W, Ci, KH, KH, Co, stride,
                               pad, nullptr),
           "conv2d: %s");
        ktest::sync();
        expect_close("conv2d", y.data(), want.data(), want.size(), 1e-5, 1e-5);
        // The residual entry: + z summed before the store, once into a separate y and once in place (y is z).
        vector<float> z = rng.normals(y.size()), yz(y.size(), NAN), inplace = z;
        vector<double> wantz(want);
        for (size_t i = 0; i < wantz.size(); i++) wantz[i] += z[i];
        ok(onestep_conv2d_nhwc_residual_typed(x.data(), w.data(), cs[3] ? b.data() : nullptr, z.data(), yz.data(), N, H,
                                              W, Ci, KH, KH, Co, stride, pad, ONESTEP_FLOAT32, nullptr),
           "conv2d residual: %s");
        ok(onestep_conv2d_nhwc_residual_typed(x.data(), w.data(), cs[3] ? b.data() : nullptr, inplace.data(),
                                              inplace.data(), N, H, W, Ci, KH, KH, Co, stride, pad, ONESTEP_FLOAT32,
                                              nullptr),
           "conv2d residual in place: %s");
        ktest::sync();
        expect_close("conv2d residual", yz.data(), wantz.data(), wantz.size(), 1e-5, 1e-5);
        expect_close("conv2d residual in place", inplace.data(), wantz.data(), wantz.size(), 1e-5, 1e-5);
    }
    expect(onestep_conv2d_nhwc_residual_typed(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 3, 3, 1, 3, 3, 1, 1, 1,
                                              ONESTEP_FLOAT32, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "NULL residual z") != nullptr,
           "conv2d residual without z: %s", onestep_last_error_message());
    expect(onestep_conv2d_nhwc(nullptr, nullptr, nullptr, nullptr, 1, 2, 2, 1, 5, 5, 1, 1, 0, nullptr) ==
               ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "onestep_conv2d_nhwc(N=1, H=2, W=2, Cin=1, KH=5") != nullptr,
           "conv2d with a kernel larger than the input: %s", onestep_last_error_message());
}

// The upsampling convolution (onestep_subpixel_weights_typed + onestep_upsample_conv_typed) against its
// definition in double: the nearest 2x upsampling written out, then the 3x3 padding-1 convolution. Odd and even
// sizes and 1-pixel inputs, where every output sits on a border.
void check_upsample_conv() {
    ktest::Rng rng(7);
    const int cases[][5] = {{2, 5, 4, 3, 6}, {1, 1, 1, 4, 2}, {1, 3, 7, 8, 5}, {1, 2, 1, 1, 1}};  // N, H, W, Ci, Co
    for (const auto& cs : cases) {
        const int N = cs[0], H = cs[1], W = cs[2], Ci = cs[3], Co = cs[4], Ho = 2 * H, Wo = 2 * W;
        vector<float> x = rng.normals(size_t(N) * H * W * Ci), w = rng.normals(size_t(9) * Ci * Co),
                      b = rng.normals(Co), k(size_t(Ci) * 16 * Co, NAN), y(size_t(N) * Ho * Wo * Co, NAN);
        vector<double> up(size_t(N) * Ho * Wo * Ci), want(y.size());
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++)
                    for (int ci = 0; ci < Ci; ci++)
                        up[((size_t(n) * Ho + oy) * Wo + ox) * Ci + ci] = x[((size_t(n) * H + oy / 2) * W + ox / 2) * Ci + ci];
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++)
                    for (int co = 0; co < Co; co++) {
                        double acc = b[co];
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                const int iy = oy - 1 + ky, ix = ox - 1 + kx;
                                if (iy < 0 || iy >= Ho || ix < 0 || ix >= Wo) continue;
                                for (int ci = 0; ci < Ci; ci++)
                                    acc += up[((size_t(n) * Ho + iy) * Wo + ix) * Ci + ci] *
                                           double(w[((size_t(ky) * 3 + kx) * Ci + ci) * Co + co]);
                            }
                        want[((size_t(n) * Ho + oy) * Wo + ox) * Co + co] = acc;
                    }
        ok(onestep_subpixel_weights_typed(w.data(), k.data(), Ci, Co, ONESTEP_FLOAT32, nullptr), "subpixel weights: %s");
        ok(onestep_upsample_conv_typed(x.data(), k.data(), b.data(), y.data(), N, H, W, Ci, Co, ONESTEP_FLOAT32, nullptr),
           "upsample conv: %s");
        ktest::sync();
        char what[80];
        std::snprintf(what, sizeof what, "upsample conv N=%d H=%d W=%d Ci=%d Co=%d", N, H, W, Ci, Co);
        expect_close(what, y.data(), want.data(), want.size(), 1e-5, 1e-5);
        // Without a bias: the same less b.
        ok(onestep_upsample_conv_typed(x.data(), k.data(), nullptr, y.data(), N, H, W, Ci, Co, ONESTEP_FLOAT32, nullptr),
           "upsample conv without bias: %s");
        ktest::sync();
        for (size_t i = 0; i < want.size(); i++) want[i] -= b[i % Co];
        expect_close("upsample conv without bias", y.data(), want.data(), want.size(), 1e-5, 1e-5);
    }
    float buf[16] = {};
    expect(onestep_upsample_conv_typed(buf, buf, nullptr, buf, 1, 1, 1, 1, 1, ONESTEP_FLOAT32, nullptr) ==
                   ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "onestep_upsample_conv_typed(N=1, H=1, W=1, Cin=1, Cout=1") !=
                   nullptr,
           "upsample conv in place: %s", onestep_last_error_message());
    expect(onestep_subpixel_weights_typed(buf, nullptr, 2, 2, ONESTEP_FLOAT32, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "subpixel weights without k: %s", onestep_last_error_message());
}

// The convolution's backward against the scatter form of its definition in double: every (output, tap) pair
// adds dy * w to dx and x * dy to dw. Odd and even sizes with stride 2 leave rows that no output reads.
void check_conv_backward() {
    ktest::Rng rng(4);
    const int cases[][3] = {{3, 1, 1}, {3, 2, 1}, {1, 1, 0}, {3, 2, 0}, {1, 2, 0}};
    for (const auto& cs : cases)
        for (int H : {7, 8}) {
            const int KH = cs[0], stride = cs[1], pad = cs[2], N = 2, W = 5, Ci = 3, Co = 4;
            const int Ho = (H + 2 * pad - KH) / stride + 1, Wo = (W + 2 * pad - KH) / stride + 1;
            vector<float> x = rng.normals(size_t(N) * H * W * Ci), w = rng.normals(size_t(KH) * KH * Ci * Co),
                          dy = rng.normals(size_t(N) * Ho * Wo * Co), dx(x.size(), NAN), dw = rng.normals(w.size());
            vector<double> want_dx(x.size(), 0.0), want_dw(dw.begin(), dw.end());
            for (int n = 0; n < N; n++)
                for (int oy = 0; oy < Ho; oy++)
                    for (int ox = 0; ox < Wo; ox++)
                        for (int co = 0; co < Co; co++)
                            for (int ky = 0; ky < KH; ky++)
                                for (int kx = 0; kx < KH; kx++) {
                                    int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                    if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                    for (int ci = 0; ci < Ci; ci++) {
                                        size_t xi = ((size_t(n) * H + iy) * W + ix) * Ci + ci;
                                        size_t wi = ((size_t(ky) * KH + kx) * Ci + ci) * Co + co;
                                        double g = dy[((size_t(n) * Ho + oy) * Wo + ox) * Co + co];
                                        want_dx[xi] += g * w[wi];
                                        want_dw[wi] += g * x[xi];
                                    }
                                }
            ok(onestep_conv2d_nhwc_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), N, H, W, Ci, KH, KH, Co,
                                            stride, pad, nullptr),
               "conv2d backward: %s");
            ktest::sync();
            char what[64];
            std::snprintf(what, sizeof what, "conv2d backward dx (%dx%d, stride %d, pad %d, H %d)", KH, KH, stride, pad, H);
            expect_close(what, dx.data(), want_dx.data(), want_dx.size(), 1e-5, 1e-5);
            std::snprintf(what, sizeof what, "conv2d backward dw (%dx%d, stride %d, pad %d, H %d)", KH, KH, stride, pad, H);
            expect_close(what, dw.data(), want_dw.data(), want_dw.size(), 1e-5, 1e-5);
        }
    // dx alone (no weight gradient wanted) leaves dw untouched; a missing dy is refused by name.
    vector<float> x(2 * 4 * 4 * 2, 1.f), w(9 * 2 * 3, 1.f), dy(2 * 4 * 4 * 3, 1.f), dx(x.size());
    ok(onestep_conv2d_nhwc_backward(x.data(), w.data(), dy.data(), dx.data(), nullptr, 2, 4, 4, 2, 3, 3, 3, 1, 1, nullptr),
       "conv2d backward without dw: %s");
    ktest::sync();
    expect(dx[0] == 4 * 3.f, "corner dx of a 3x3 all-ones convolution sums 4 taps of 3 channels%s");
    expect(onestep_conv2d_nhwc_backward(x.data(), w.data(), nullptr, dx.data(), nullptr, 2, 4, 4, 2, 3, 3, 3, 1, 1,
                                        nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "onestep_conv2d_nhwc_backward(N=2") != nullptr,
           "conv2d backward without dy: %s", onestep_last_error_message());
}

void check_layout_ops() {
    ktest::Rng rng(3);
    const int N = 2, H = 3, W = 5, Ca = 7, Cb = 4;
    const long long rows = (long long)N * H * W;
    vector<float> a = rng.normals(size_t(rows) * Ca), b = rng.normals(size_t(rows) * Cb), y(size_t(rows) * (Ca + Cb));
    ok(onestep_concat_channels(a.data(), b.data(), y.data(), rows, Ca, Cb, nullptr), "concat: %s");
    vector<float> a2(a.size(), NAN), b2(b.size(), NAN);
    ok(onestep_split_channels(y.data(), a2.data(), b2.data(), rows, Ca, Cb, nullptr), "split: %s");
    ktest::sync();
    expect_close("concat then split (a)", a2.data(), ktest::to_double(a).data(), a.size(), 0, 0);
    expect_close("concat then split (b)", b2.data(), ktest::to_double(b).data(), b.size(), 0, 0);
    expect(y[size_t(Ca)] == b[0] && y[size_t(Ca + Cb)] == a[size_t(Ca)], "concat interleaves rows%s");

    vector<float> up(size_t(N) * 2 * H * 2 * W * Ca);
    ok(onestep_upsample_nearest2x(a.data(), up.data(), N, H, W, Ca, nullptr), "upsample: %s");
    vector<double> want(up.size());
    for (int n = 0; n < N; n++)
        for (int yy = 0; yy < 2 * H; yy++)
            for (int xx = 0; xx < 2 * W; xx++)
                for (int c = 0; c < Ca; c++)
                    want[((size_t(n) * 2 * H + yy) * 2 * W + xx) * Ca + c] = a[((size_t(n) * H + yy / 2) * W + xx / 2) * Ca + c];
    ktest::sync();
    expect_close("upsample", up.data(), want.data(), want.size(), 0, 0);

    // Its adjoint: <upsample(a), g> = <a, upsample_backward(g)> for any g, and each dx is its 2x2 block's sum.
    vector<float> g = rng.normals(up.size()), da(a.size(), NAN);
    ok(onestep_upsample_nearest2x_backward(g.data(), da.data(), N, H, W, Ca, nullptr), "upsample backward: %s");
    vector<double> dwant(da.size(), 0.0);
    for (int n = 0; n < N; n++)
        for (int yy = 0; yy < 2 * H; yy++)
            for (int xx = 0; xx < 2 * W; xx++)
                for (int c = 0; c < Ca; c++)
                    dwant[((size_t(n) * H + yy / 2) * W + xx / 2) * Ca + c] += g[((size_t(n) * 2 * H + yy) * 2 * W + xx) * Ca + c];
    ktest::sync();
    expect_close("upsample backward", da.data(), dwant.data(), dwant.size(), 1e-6, 1e-6);

    // Heads: (N, T, H*D) -> (N, H, T, D) -> back is the identity, and one element lands where it should.
    const int T = 5, Hh = 3, D = 4;
    vector<float> q = rng.normals(size_t(N) * T * Hh * D), qh(q.size()), back(q.size());
    ok(onestep_split_heads(q.data(), qh.data(), N, T, Hh, D, nullptr), "split heads: %s");
    ok(onestep_merge_heads(qh.data(), back.data(), N, T, Hh, D, nullptr), "merge heads: %s");
    ktest::sync();
    expect_close("split then merge heads", back.data(), ktest::to_double(q).data(), q.size(), 0, 0);
    expect(qh[((size_t(1) * Hh + 2) * T + 3) * D + 1] == q[((size_t(1) * T + 3) * Hh + 2) * D + 1], "split heads layout%s");

    vector<float> v(size_t(N) * Ca);
    ok(onestep_sum_per_channel(a.data(), v.data(), N, (long long)H * W, Ca, nullptr), "sum per channel: %s");
    vector<double> sums(v.size(), 0.0);
    for (int n = 0; n < N; n++)
        for (int p = 0; p < H * W; p++)
            for (int c = 0; c < Ca; c++) sums[size_t(n) * Ca + c] += a[(size_t(n) * H * W + p) * Ca + c];
    ktest::sync();
    expect_close("sum per channel", v.data(), sums.data(), sums.size(), 1e-5, 1e-5);
}

// The optimizer update against Kingma & Ba's Algorithm 1 (and RAdam's rectified / momentum forms) in double,
// over several steps so that the moments matter; an odd n leaves a ragged last block.
void check_adam() {
    ktest::Rng rng(7);
    const long long n = 1031;
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8, lr = 1e-2, wd = 0.1;
    for (int variant = 0; variant < 4; variant++) {  // Adam+L2, AdamW, RAdam rectified, RAdam momentum
        vector<float> p = rng.normals(n), m(n, 0.f), v(n, 0.f);
        vector<double> pd(p.begin(), p.end()), md(n, 0.0), vd(n, 0.0);
        const bool decoupled = variant == 1, adaptive = variant != 3;
        for (int t = 1; t <= 3; t++) {
            vector<float> g = rng.normals(n);
            const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
            // RAdam's rectified form: step = lr r sqrt(bc2) / bc1, v_scale = 1 (r = 0.5 stands in for r_t).
            const double r = 0.5;
            const double step = variant == 2 ? lr * r * std::sqrt(bc2) / bc1 : lr / bc1;
            const double v_scale = variant == 2 ? 1.0 : 1 / std::sqrt(bc2);
            const double l2 = decoupled ? 0 : wd, decay = decoupled ? 1 - lr * wd : 1;
            ok(onestep_adam_step(p.data(), g.data(), m.data(), v.data(), n, float(b1), float(b2), float(v_scale),
                                 float(eps), float(step), float(l2), float(decay), adaptive, nullptr),
               "adam step: %s");
            for (long long i = 0; i < n; i++) {
                double gi = g[i] + l2 * pd[i];
                md[i] = b1 * md[i] + (1 - b1) * gi;
                vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
                double upd = adaptive ? step * md[i] / (std::sqrt(vd[i]) * v_scale + eps) : step * md[i];
                pd[i] = decay * pd[i] - upd;
            }
        }
        ktest::sync();
        const char* names[] = {"adam (L2 decay)", "adamw", "radam (rectified)", "radam (momentum)"};
        expect_close(names[variant], p.data(), pd.data(), pd.size(), 1e-5, 1e-6);
        expect_close("adam first moment m", m.data(), md.data(), md.size(), 1e-5, 1e-6);
        expect_close("adam second moment v", v.data(), vd.data(), vd.size(), 1e-5, 1e-7);
    }
    float x = 0.f;
    expect(onestep_adam_step(&x, &x, &x, &x, 1, 1.f, 0.9f, 1.f, 1e-8f, 1.f, 0.f, 1.f, 1, nullptr) ==
               ONESTEP_ERROR_INVALID_ARGUMENT,
           "adam step refuses beta1 = 1%s", "");
    expect(onestep_adam_step(nullptr, &x, &x, &x, 1, 0.9f, 0.9f, 1.f, 1e-8f, 1.f, 0.f, 1.f, 1, nullptr) ==
               ONESTEP_ERROR_INVALID_ARGUMENT,
           "adam step refuses a NULL parameter pointer%s", "");
}

// The loss reductions against plain double loops: ragged rows (D not a multiple of the block), and a sum of
// squares whose last chunk is short.
void check_losses() {
    ktest::Rng rng(8);
    const int N = 3;
    const long long D = 1000;
    vector<float> p = rng.normals(size_t(N) * D), t = rng.normals(size_t(N) * D), coef = {0.5f, -2.f, 3.f};
    vector<double> dist(N, -1.0);
    ok(onestep_row_sq_dist(p.data(), t.data(), dist.data(), N, D, nullptr), "row_sq_dist: %s");
    vector<float> g(p.size(), NAN);
    ok(onestep_row_scaled_diff(p.data(), t.data(), coef.data(), g.data(), N, D, nullptr), "row_scaled_diff: %s");
    ktest::sync();
    vector<float> distf(N);
    vector<double> want(N, 0.0), gwant(g.size());
    for (int n = 0; n < N; n++)
        for (long long d = 0; d < D; d++) {
            double diff = double(p[n * D + d]) - t[n * D + d];
            want[n] += diff * diff;
            gwant[n * D + d] = coef[n] * diff;
        }
    for (int n = 0; n < N; n++) distf[n] = float(dist[n]);
    expect_close("row squared distances", distf.data(), want.data(), N, 0, 1e-7);
    expect_close("row scaled differences", g.data(), gwant.data(), gwant.size(), 1e-6, 1e-6);
    const long long n = 10007, chunk = 4096;
    vector<float> x = rng.normals(n);
    vector<double> parts(3, -1.0);
    ok(onestep_sum_squares(x.data(), n, chunk, parts.data(), nullptr), "sum_squares: %s");
    ktest::sync();
    double total = 0, ref = 0;
    for (double v : parts) total += v;
    for (float v : x) ref += double(v) * v;
    expect(std::fabs(total - ref) <= 1e-9 * ref, "sum of squares in double%s");
    double last = 0;
    for (long long i = 2 * chunk; i < n; i++) last += double(x[i]) * x[i];
    expect(std::fabs(parts[2] - last) <= 1e-9 * last, "the short last chunk%s");
    expect(onestep_sum_squares(x.data(), n, 0, parts.data(), nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "sum_squares refuses chunk 0%s");
}

void check_capture() {
    // Recorded while capturing, run only by the launch, and as often as launched.
    cudaStream_t s = nullptr;
    if (!ok(onestep_stream_create(&s), "stream: %s")) return;
    const long long n = 1000;
    float *x = nullptr, *y = nullptr;
    ok(onestep_malloc(reinterpret_cast<void**>(&x), n * sizeof(float)), "malloc: %s");
    ok(onestep_malloc(reinterpret_cast<void**>(&y), n * sizeof(float)), "malloc: %s");
    vector<float> host(n, 1.0f), out(n);
    ok(onestep_memcpy_htod(x, host.data(), n * sizeof(float), s), "htod: %s");
    ok(onestep_memset(y, 0, n * sizeof(float), s), "memset: %s");
    // Overlapping ranges are undefined for a device copy: refused by name (the emulation's memmove would hide it).
    expect(onestep_memcpy_dtod(x + 1, x, 10 * sizeof(float), s) == ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "overlap") != nullptr,
           "an overlapping device copy is refused: %s", onestep_last_error_message());
    ok(onestep_memcpy_dtod(x, x, n * sizeof(float), s), "a copy onto itself is a no-op: %s");
    ok(onestep_graph_begin_capture(s), "begin capture: %s");
    ok(onestep_axpy(2.0f, x, y, n, s), "axpy: %s");         // y += 2 x
    ok(onestep_memcpy_dtod(x, y, n * sizeof(float), s), "dtod: %s");  // x = y
    expect(onestep_memcpy_dtoh(out.data(), y, n * sizeof(float), s) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "a host copy while capturing is refused%s");
    expect(onestep_synchronize(s) == ONESTEP_ERROR_UNSUPPORTED &&
               std::strstr(onestep_last_error_message(), "under capture") != nullptr,
           "a wait while capturing is refused: %s", onestep_last_error_message());
    onestep_graph g = nullptr;
    ok(onestep_graph_end_capture(s, &g), "end capture: %s");
    long long nodes = 0;
    ok(onestep_graph_node_count(g, &nodes), "node count: %s");
    expect(nodes == 2, "the graph holds the kernel and the copy%s");
    ok(onestep_memcpy_dtoh(out.data(), y, n * sizeof(float), s), "dtoh: %s");
    expect(out[0] == 0.0f && out[n - 1] == 0.0f, "nothing ran during capture%s");
    ok(onestep_graph_launch(g, s), "launch: %s");
    ok(onestep_graph_launch(g, s), "launch again: %s");  // y = 2 + 2*2 = 6 after two replays
    ok(onestep_memcpy_dtoh(out.data(), y, n * sizeof(float), s), "dtoh: %s");
    vector<double> six(n, 6.0);
    expect_close("two replays of y += 2x; x = y", out.data(), six.data(), n, 0, 0);
    expect(onestep_graph_begin_capture(nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT, "the legacy stream cannot be captured%s");
    // An allocation or free by the capturing thread is refused and invalidates the capture (CUDA's thread-local
    // capture mode): a route that allocates per run cannot be timed or replayed as a graph, on the emulation either.
    {
        ok(onestep_graph_begin_capture(s), "begin capture (allocation): %s");
        ok(onestep_axpy(2.0f, x, y, n, s), "axpy: %s");
        void* extra = nullptr;
        expect(onestep_malloc(&extra, 256) == ONESTEP_ERROR_CUDA && extra == nullptr &&
                   std::strstr(onestep_last_error_message(), "StreamCaptureUnsupported") != nullptr,
               "an allocation while this thread captures is refused: %s", onestep_last_error_message());
        if (std::strcmp(onestep_runtime_kind(), "emulated") == 0) {
            // Another thread's allocation is not this capture's business (thread-local mode).
            onestep_status allocated = ONESTEP_ERROR_CUDA, freed = ONESTEP_ERROR_CUDA;
            std::thread t([&] {
                void* theirs = nullptr;
                allocated = onestep_malloc(&theirs, 256);
                freed = onestep_free(theirs);
            });
            t.join();
            expect(allocated == ONESTEP_OK && freed == ONESTEP_OK, "another thread allocates and frees meanwhile%s");
        }
        expect(onestep_free(x) == ONESTEP_ERROR_CUDA, "a free while this thread captures is refused%s");
        onestep_graph bad = nullptr;
        expect(onestep_graph_end_capture(s, &bad) == ONESTEP_ERROR_CUDA && bad == nullptr &&
                   std::strstr(onestep_last_error_message(), "Invalidated") != nullptr,
               "the capture is invalidated: %s", onestep_last_error_message());
        ok(onestep_memcpy_dtoh(out.data(), y, n * sizeof(float), s), "dtoh: %s");
        expect_close("the invalidated capture ran nothing", out.data(), six.data(), n, 0, 0);
        ok(onestep_malloc(&extra, 256), "after the capture, allocation works again: %s");
        ok(onestep_free(extra), "free: %s");
    }
    // Programmatic dependent launch: a chain of dependent kernels captured with it on replays to the chain's values
    // (on a GPU the second kernel of each pair waits at its first statement for the first one's writes); a device
    // below sm_90 refuses it and it stays off.
    expect(onestep_programmatic_launch() == 0, "programmatic dependent launch is off by default%s");
    const onestep_status pdl = onestep_set_programmatic_launch(1);
    expect(pdl == ONESTEP_OK || (pdl == ONESTEP_ERROR_UNSUPPORTED &&
                                 std::strstr(onestep_last_error_message(), "compute capability") != nullptr),
           "turning programmatic dependent launch on: %s", onestep_last_error_message());
    expect(onestep_programmatic_launch() == (pdl == ONESTEP_OK ? 1 : 0), "the flag reads back as set%s");
    if (pdl == ONESTEP_OK) {  // x = y = 6 here
        onestep_graph chain = nullptr;
        ok(onestep_graph_begin_capture(s), "begin capture (dependent launch): %s");
        for (int i = 0; i < 3; i++) {
            ok(onestep_axpy(1.0f, y, x, n, s), "x += y: %s");
            ok(onestep_axpy(2.0f, x, y, n, s), "y += 2 x: %s");
        }
        ok(onestep_graph_end_capture(s, &chain), "end capture (dependent launch): %s");
        ok(onestep_graph_launch(chain, s), "launch (dependent launch): %s");
        ok(onestep_graph_launch(chain, s), "launch again (dependent launch): %s");
        double xr = 6, yr = 6;
        for (int i = 0; i < 6; i++) xr += yr, yr += 2 * xr;
        vector<float> xo(n), yo(n);
        ok(onestep_memcpy_dtoh(xo.data(), x, n * sizeof(float), s), "dtoh: %s");
        ok(onestep_memcpy_dtoh(yo.data(), y, n * sizeof(float), s), "dtoh: %s");
        vector<double> xw(n, xr), yw(n, yr);
        expect_close("12 dependent axpys replayed with programmatic launch (x)", xo.data(), xw.data(), n, 0, 1e-6);
        expect_close("12 dependent axpys replayed with programmatic launch (y)", yo.data(), yw.data(), n, 0, 1e-6);
        ok(onestep_graph_destroy(chain), "destroy (dependent launch): %s");
        ok(onestep_set_programmatic_launch(0), "programmatic dependent launch off: %s");
        expect(onestep_programmatic_launch() == 0, "the flag reads back as off%s");
    }
    // The timer: a non-negative time around real work; stop without start, and a NULL timer, are refused.
    onestep_timer timer = nullptr;
    ok(onestep_timer_create(&timer), "timer create: %s");
    float ms = -1.0f;
    expect(onestep_timer_stop(timer, s, &ms) == ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "not started") != nullptr,
           "a timer stopped before it started is refused: %s", onestep_last_error_message());
    ok(onestep_timer_start(timer, s), "timer start: %s");
    ok(onestep_axpy(2.0f, x, y, n, s), "timed axpy: %s");
    ok(onestep_timer_stop(timer, s, &ms), "timer stop: %s");
    expect(ms >= 0.0f && std::isfinite(ms), "the timed span is finite and not negative%s");
    expect(onestep_timer_start(nullptr, s) == ONESTEP_ERROR_INVALID_ARGUMENT, "a NULL timer is refused%s");
    ok(onestep_timer_destroy(timer), "timer destroy: %s");
    ok(onestep_graph_destroy(g), "destroy: %s");
    ok(onestep_free(x), "free: %s");
    ok(onestep_free(y), "free: %s");
    ok(onestep_stream_destroy(s), "stream destroy: %s");
    int devices = 0;
    ok(onestep_device_count(&devices), "device count: %s");
    const bool emulated = std::strcmp(onestep_runtime_kind(), "emulated") == 0;
    expect(emulated ? devices == 1 : devices >= 1, "the emulation has one device, a GPU build at least one%s");
}

}  // namespace

int main() {
    const auto start = std::chrono::steady_clock::now();
    check_gemm();
    check_linear();
    check_conv();
    check_conv_backward();
    check_upsample_conv();
    check_layout_ops();
    check_adam();
    check_losses();
    check_capture();
    return ktest::finish("test_layers", start);
}
