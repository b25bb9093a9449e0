// resnet_ref.h: a whole ResnetBlock2D (onestep_resnet_block_typed's function) written out in double on the host,
// rounded where the unfused ops store a tensor; shared by the kernel's test (test_resnet.cpp) and its development
// record (dev/resnet_forward.cu), so both check it against the same oracle.
#pragma once
#include <cmath>
#include <cstddef>
#include <vector>

namespace resnet_ref {

inline double silu(double u) { return u / (1.0 + std::exp(-u)); }

// Group norm + SiLU of v (HW x C of one sample) into out, each value passed through round (the storage type's).
template <typename Round>
void norm_silu(const std::vector<double>& v, std::vector<double>& out, int HW, int C, int G,
               const std::vector<float>& gamma, const std::vector<float>& beta, double eps, Round round) {
    const int Cg = C / G;
    for (int g = 0; g < G; g++) {
        double s = 0, ss = 0;
        for (int p = 0; p < HW; p++)
            for (int c = g * Cg; c < (g + 1) * Cg; c++) s += v[size_t(p) * C + c];
        const double mu = s / (double(HW) * Cg);
        for (int p = 0; p < HW; p++)
            for (int c = g * Cg; c < (g + 1) * Cg; c++) ss += (v[size_t(p) * C + c] - mu) * (v[size_t(p) * C + c] - mu);
        const double rs = 1.0 / std::sqrt(ss / (double(HW) * Cg) + eps);
        for (int p = 0; p < HW; p++)
            for (int c = g * Cg; c < (g + 1) * Cg; c++)
                out[size_t(p) * C + c] = round(silu((v[size_t(p) * C + c] - mu) * rs * gamma[c] + beta[c]));
    }
}

// A 3x3 'same' convolution of a (H x W x Cin) with w (Cout, 3, 3, Cin) KRSC.
inline void conv3(const std::vector<double>& a, const std::vector<float>& w, std::vector<double>& out, int H, int W,
                  int Cin, int Cout) {
    for (int h = 0; h < H; h++)
        for (int x = 0; x < W; x++)
            for (int co = 0; co < Cout; co++) {
                double s = 0;
                for (int r = 0; r < 3; r++)
                    for (int q = 0; q < 3; q++) {
                        const int hh = h + r - 1, ww = x + q - 1;
                        if (hh < 0 || hh >= H || ww < 0 || ww >= W) continue;
                        const double* ap = &a[(size_t(hh) * W + ww) * Cin];
                        const float* wp = &w[((size_t(co) * 3 + r) * 3 + q) * Cin];
                        for (int ci = 0; ci < Cin; ci++) s += ap[ci] * wp[ci];
                    }
                out[(size_t(h) * W + x) * Cout + co] = s;
            }
}

// A block's second half on conv1's output h (HW x C, before rounding) for sample n: out (HW x C) =
// round(res + conv2(SiLU(norm2(round(h) + b1 + t))) + b2), t = add[n] + add_bias, res the residual.
template <typename Round>
void second_half(const std::vector<double>& h, const std::vector<double>& res, double* out, int n, const float* add,
                 const float* add_bias, const float* b1, const std::vector<float>& g2, const std::vector<float>& be2,
                 const std::vector<float>& w2, const float* b2, int H, int W, int C, int G, double eps, Round round) {
    const size_t per = size_t(H) * W * C;
    std::vector<double> v2(per), a2(per), o(per);
    for (size_t i = 0; i < per; i++) {
        const int c = int(i % C);
        const double t = add ? double(add[size_t(n) * C + c]) + (add_bias ? add_bias[c] : 0.0) : 0.0;
        v2[i] = (round(h[i]) + (b1 ? b1[c] : 0.0)) + t;
    }
    norm_silu(v2, a2, H * W, C, G, g2, be2, eps, round);
    conv3(a2, w2, o, H, W, C, C);
    for (size_t i = 0; i < per; i++) out[i] = round(o[i] + (b2 ? b2[i % C] : 0.0) + res[i]);
}

// y (N, H, W, C) = x' + conv2(SiLU(norm2(round(conv1(SiLU(norm1(x')))) + b1 + t))) + b2, rounded, with x' = x + x_bias
// and t = add[n] + add_bias. x_bias, add (N x C), add_bias, b1, b2: null where absent. Rounded as the unfused ops
// store: norm1's and norm2's outputs, conv1's output (before b1, which norm2 adds), y.
template <typename Round>
std::vector<double> block(const std::vector<float>& x, const float* x_bias, const float* add, const float* add_bias,
                          const std::vector<float>& g1, const std::vector<float>& be1, const std::vector<float>& w1,
                          const float* b1, const std::vector<float>& g2, const std::vector<float>& be2,
                          const std::vector<float>& w2, const float* b2, int N, int H, int W, int C, int G, double eps,
                          Round round) {
    const int HW = H * W;
    const size_t per = size_t(HW) * C;
    std::vector<double> y(size_t(N) * per);
    for (int n = 0; n < N; n++) {
        std::vector<double> xp(per), a1(per), h(per);
        for (size_t i = 0; i < per; i++) xp[i] = double(x[n * per + i]) + (x_bias ? x_bias[i % C] : 0.0);
        norm_silu(xp, a1, HW, C, G, g1, be1, eps, round);
        conv3(a1, w1, h, H, W, C, C);
        second_half(h, xp, &y[n * per], n, add, add_bias, b1, g2, be2, w2, b2, H, W, C, G, eps, round);
    }
    return y;
}

// The up block's (onestep_resnet_block_concat_typed's): x = cat(round(a + a_bias), round(b + b_bias)) of Cin = Ca + Cb
// channels, ws (C, 1, 1, Cin) the 1x1 shortcut, its output rounded as stored:
// y = round(ws x) + conv2(SiLU(norm2(round(conv1(SiLU(norm1(x)))) + b1 + t))) + b2, rounded.
template <typename Round>
std::vector<double> concat_block(const std::vector<float>& a, const float* a_bias, const std::vector<float>& b,
                                 const float* b_bias, const float* add, const float* add_bias,
                                 const std::vector<float>& g1, const std::vector<float>& be1,
                                 const std::vector<float>& w1, const float* b1, const std::vector<float>& g2,
                                 const std::vector<float>& be2, const std::vector<float>& w2, const float* b2,
                                 const std::vector<float>& ws, int N, int H, int W, int Ca, int Cb, int C, int G,
                                 double eps, Round round) {
    const int HW = H * W, Cin = Ca + Cb;
    std::vector<double> y(size_t(N) * HW * C);
    for (int n = 0; n < N; n++) {
        std::vector<double> x(size_t(HW) * Cin), a1(x.size()), h(size_t(HW) * C), sc(h.size());
        for (int p = 0; p < HW; p++) {
            for (int c = 0; c < Ca; c++) {
                const double v = a[(size_t(n) * HW + p) * Ca + c];
                x[size_t(p) * Cin + c] = a_bias ? round(v + a_bias[c]) : v;
            }
            for (int c = 0; c < Cb; c++) {
                const double v = b[(size_t(n) * HW + p) * Cb + c];
                x[size_t(p) * Cin + Ca + c] = b_bias ? round(v + b_bias[c]) : v;
            }
        }
        for (int p = 0; p < HW; p++)
            for (int co = 0; co < C; co++) {
                double s = 0;
                for (int ci = 0; ci < Cin; ci++) s += x[size_t(p) * Cin + ci] * ws[size_t(co) * Cin + ci];
                sc[size_t(p) * C + co] = round(s);
            }
        norm_silu(x, a1, HW, Cin, G, g1, be1, eps, round);
        conv3(a1, w1, h, H, W, Cin, C);
        second_half(h, sc, &y[size_t(n) * HW * C], n, add, add_bias, b1, g2, be2, w2, b2, H, W, C, G, eps, round);
    }
    return y;
}

}  // namespace resnet_ref
