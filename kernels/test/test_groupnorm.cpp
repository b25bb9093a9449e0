// test_groupnorm.cpp: the production group norm kernels (kernels/src/groupnorm.cu), run through the CUDA
// emulation, against a plain double-precision reference on random shapes, including ragged ones (groups
// of 1, 3, 5 channels; C not a multiple of 4; odd pixel counts; groups wider than a warp). The reference's
// backward is itself checked against central finite differences first, so the two cannot agree on a
// wrong formula.
#include "onestep_kernels.h"
#include "test_common.h"

#include <cmath>
#include <cstring>
#include <vector>

using ktest::expect;
using ktest::expect_close;
using std::vector;

namespace {

struct Shape {
    int N, HW, C, G;
};

double sigmoid(double u) { return 1.0 / (1.0 + std::exp(-u)); }

// Forward reference (Wu & He 2018, Eq. 1-4, biased variance) with the optional modulation and SiLU.
void forward_ref(const Shape& s, const vector<double>& x, const vector<double>& gamma, const vector<double>& beta,
                 const double* scale, const double* shift, bool silu, double eps, vector<double>& y,
                 vector<double>& mean, vector<double>& rstd) {
    const int Cg = s.C / s.G;
    y.assign(x.size(), 0.0);
    mean.assign(size_t(s.N) * s.G, 0.0);
    rstd.assign(size_t(s.N) * s.G, 0.0);
    for (int n = 0; n < s.N; n++)
        for (int g = 0; g < s.G; g++) {
            double sum = 0.0, sq = 0.0;
            for (int p = 0; p < s.HW; p++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) sum += x[(size_t(n) * s.HW + p) * s.C + c];
            const double mu = sum / (double(s.HW) * Cg);
            for (int p = 0; p < s.HW; p++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                    const double d = x[(size_t(n) * s.HW + p) * s.C + c] - mu;
                    sq += d * d;
                }
            const double rs = 1.0 / std::sqrt(sq / (double(s.HW) * Cg) + eps);
            mean[n * s.G + g] = mu;
            rstd[n * s.G + g] = rs;
            for (int p = 0; p < s.HW; p++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                    const size_t i = (size_t(n) * s.HW + p) * s.C + c;
                    double u = (x[i] - mu) * rs * gamma[c] + beta[c];
                    if (scale) u = u * (1.0 + scale[n * s.C + c]) + shift[n * s.C + c];
                    y[i] = silu ? u * sigmoid(u) : u;
                }
        }
}

// Backward reference: the chain rule written out element by element in double.
void backward_ref(const Shape& s, const vector<double>& dy, const vector<double>& x, const vector<double>& gamma,
                  const vector<double>& beta, const double* scale, const double* shift, bool silu, double eps,
                  vector<double>& dx, vector<double>& dgamma, vector<double>& dbeta, vector<double>& dscale,
                  vector<double>& dshift) {
    vector<double> y, mean, rstd;
    forward_ref(s, x, gamma, beta, scale, shift, silu, eps, y, mean, rstd);
    const int Cg = s.C / s.G;
    dx.assign(x.size(), 0.0);
    dgamma.assign(s.C, 0.0);
    dbeta.assign(s.C, 0.0);
    dscale.assign(size_t(s.N) * s.C, 0.0);
    dshift.assign(size_t(s.N) * s.C, 0.0);
    vector<double> dxhat(x.size()), xhat(x.size());
    for (int n = 0; n < s.N; n++)
        for (int g = 0; g < s.G; g++) {
            const double mu = mean[n * s.G + g], rs = rstd[n * s.G + g];
            double a = 0.0, b = 0.0;
            for (int p = 0; p < s.HW; p++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                    const size_t i = (size_t(n) * s.HW + p) * s.C + c;
                    xhat[i] = (x[i] - mu) * rs;
                    const double yp = xhat[i] * gamma[c] + beta[c];
                    const double sc = scale ? scale[n * s.C + c] : 0.0;
                    const double u = scale ? yp * (1.0 + sc) + shift[n * s.C + c] : yp;
                    const double du = silu ? dy[i] * (sigmoid(u) * (1.0 + u * (1.0 - sigmoid(u)))) : dy[i];
                    const double dyp = du * (1.0 + sc);
                    dshift[n * s.C + c] += du;
                    dscale[n * s.C + c] += du * yp;
                    dbeta[c] += dyp;
                    dgamma[c] += dyp * xhat[i];
                    dxhat[i] = dyp * gamma[c];
                    a += dxhat[i];
                    b += dxhat[i] * xhat[i];
                }
            const double m = double(s.HW) * Cg;
            for (int p = 0; p < s.HW; p++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                    const size_t i = (size_t(n) * s.HW + p) * s.C + c;
                    dx[i] = rs * (dxhat[i] - a / m - xhat[i] * b / m);
                }
        }
}

// Checks backward_ref against central differences of L = sum(dy * y) on a tiny case.
void check_reference_by_finite_differences() {
    const Shape s{2, 5, 6, 2};
    ktest::Rng rng(7);
    auto r = [&](size_t n, double m, double sd) { return ktest::to_double(rng.normals(n, m, sd)); };
    vector<double> x = r(size_t(s.N) * s.HW * s.C, 0.3, 1.0), gamma = r(s.C, 1.0, 0.3), beta = r(s.C, 0.0, 0.3);
    vector<double> scale = r(size_t(s.N) * s.C, 0.0, 0.3), shift = r(size_t(s.N) * s.C, 0.0, 0.3);
    vector<double> dy = r(x.size(), 0.0, 1.0);
    const double eps = 1e-5;
    vector<double> dx, dgamma, dbeta, dscale, dshift;
    backward_ref(s, dy, x, gamma, beta, scale.data(), shift.data(), true, eps, dx, dgamma, dbeta, dscale, dshift);
    auto loss = [&]() {
        vector<double> y, mean, rstd;
        forward_ref(s, x, gamma, beta, scale.data(), shift.data(), true, eps, y, mean, rstd);
        double l = 0.0;
        for (size_t i = 0; i < y.size(); i++) l += dy[i] * y[i];
        return l;
    };
    auto fd = [&](vector<double>& v, const vector<double>& grad, const char* name) {
        vector<float> got;
        vector<double> want;
        for (size_t i = 0; i < v.size(); i++) {
            const double keep = v[i], h = 1e-5;
            v[i] = keep + h;
            const double lp = loss();
            v[i] = keep - h;
            const double lm = loss();
            v[i] = keep;
            want.push_back((lp - lm) / (2 * h));
            got.push_back(float(grad[i]));
        }
        expect_close(name, got.data(), want.data(), got.size(), 1e-5, 1e-4);
    };
    fd(x, dx, "reference dx vs finite differences");
    fd(gamma, dgamma, "reference dgamma vs finite differences");
    fd(beta, dbeta, "reference dbeta vs finite differences");
    fd(scale, dscale, "reference dscale vs finite differences");
    fd(shift, dshift, "reference dshift vs finite differences");
}

void check_case(const Shape& s, bool emb, bool silu, double x_mean, uint64_t seed) {
    std::printf("  N=%d HW=%d C=%d G=%d emb=%d silu=%d x_mean=%g\n", s.N, s.HW, s.C, s.G, emb, silu, x_mean);
    ktest::Rng rng(seed);
    const size_t nx = size_t(s.N) * s.HW * s.C, nc = size_t(s.N) * s.C;
    vector<float> x = rng.normals(nx, x_mean, 1.0), gamma = rng.normals(s.C, 1.0, 0.3), beta = rng.normals(s.C, 0, 0.3);
    vector<float> scale = rng.normals(nc, 0, 0.3), shift = rng.normals(nc, 0, 0.3), dy = rng.normals(nx);
    const float eps = 1e-5f;
    const float* sc = emb ? scale.data() : nullptr;
    const float* sh = emb ? shift.data() : nullptr;

    vector<float> y(nx, NAN), mean(size_t(s.N) * s.G, NAN), rstd(size_t(s.N) * s.G, NAN);
    onestep_status st = onestep_groupnorm_forward(x.data(), gamma.data(), beta.data(), sc, sh, y.data(), mean.data(),
                                                  rstd.data(), s.N, s.HW, s.C, s.G, eps, silu, nullptr);
    if (!expect(st == ONESTEP_OK, "forward returned an error: %s", onestep_last_error_message()) || !ktest::sync()) return;

    vector<double> xd = ktest::to_double(x), gd = ktest::to_double(gamma), bd = ktest::to_double(beta);
    vector<double> scd = ktest::to_double(scale), shd = ktest::to_double(shift), dyd = ktest::to_double(dy);
    vector<double> yr, mr, rr;
    forward_ref(s, xd, gd, bd, emb ? scd.data() : nullptr, emb ? shd.data() : nullptr, silu, eps, yr, mr, rr);
    expect_close("mean", mean.data(), mr.data(), mr.size(), 1e-5, 1e-5);
    expect_close("rstd", rstd.data(), rr.data(), rr.size(), 1e-5, 2e-4);
    expect_close("y", y.data(), yr.data(), yr.size(), 2e-4, 2e-4);

    // Parameter grads accumulate: start them at 0.25 and expect 0.25 + the gradient. Activation grads
    // are assigned: start them at NaN so a value the kernel skips fails.
    vector<float> dx(nx, NAN), dgamma(s.C, 0.25f), dbeta(s.C, 0.25f), dscale(nc, NAN), dshift(nc, NAN);
    st = onestep_groupnorm_backward(dy.data(), x.data(), mean.data(), rstd.data(), gamma.data(), beta.data(), sc, sh,
                                    dx.data(), dgamma.data(), dbeta.data(), emb ? dscale.data() : nullptr,
                                    emb ? dshift.data() : nullptr, s.N, s.HW, s.C, s.G, silu, nullptr);
    if (!expect(st == ONESTEP_OK, "backward returned an error: %s", onestep_last_error_message()) || !ktest::sync()) return;
    vector<double> dxr, dgr, dbr, dscr, dshr;
    backward_ref(s, dyd, xd, gd, bd, emb ? scd.data() : nullptr, emb ? shd.data() : nullptr, silu, eps, dxr, dgr, dbr,
                 dscr, dshr);
    for (auto& v : dgr) v += 0.25;
    for (auto& v : dbr) v += 0.25;
    const double m = double(s.HW) * (s.C / s.G);
    expect_close("dx", dx.data(), dxr.data(), dxr.size(), 2e-4, 2e-3);
    expect_close("dgamma", dgamma.data(), dgr.data(), dgr.size(), 1e-4 * std::sqrt(m * s.N), 1e-3);
    expect_close("dbeta", dbeta.data(), dbr.data(), dbr.size(), 1e-4 * std::sqrt(m * s.N), 1e-3);
    if (emb) {
        expect_close("dscale", dscale.data(), dscr.data(), dscr.size(), 1e-4 * std::sqrt(m), 1e-3);
        expect_close("dshift", dshift.data(), dshr.data(), dshr.size(), 1e-4 * std::sqrt(m), 1e-3);
    }
}

// x' = (x + x_bias[c]) + (add[n,c] + add_bias[c]) materialized as the kernels form it on the fly: fp32 adds of the
// stored values, in that order (a null term is left out).
vector<float> pre_added(const Shape& s, const vector<float>& x, const vector<float>* xb, const vector<float>* add,
                        const vector<float>* ab) {
    vector<float> xp(x.size());
    for (int n = 0; n < s.N; n++)
        for (int p = 0; p < s.HW; p++)
            for (int c = 0; c < s.C; c++) {
                const size_t i = (size_t(n) * s.HW + p) * s.C + c;
                float v = x[i];
                if (xb) v += (*xb)[c];
                if (add) {
                    float a = (*add)[size_t(n) * s.C + c];
                    if (ab) a += (*ab)[c];
                    v += a;
                }
                xp[i] = v;
            }
    return xp;
}

// The pre-add variant (onestep_groupnorm_forward_add_typed): x' = (x + x_bias[c]) + (add[n,c] + add_bias[c]) is
// never stored, yet the result must be exactly the plain kernel's on x' materialized in fp32 in that order (the
// unfused ops' bits), and close to the double reference on x'. Every subset of the three terms, on both paths.
void check_pre_add(const Shape& s, bool emb, bool silu, uint64_t seed) {
    ktest::Rng rng(seed);
    const size_t nx = size_t(s.N) * s.HW * s.C, nc = size_t(s.N) * s.C;
    vector<float> x = rng.normals(nx, 0.5, 1.0), gamma = rng.normals(s.C, 1.0, 0.3), beta = rng.normals(s.C, 0, 0.3);
    vector<float> scale = rng.normals(nc, 0, 0.3), shift = rng.normals(nc, 0, 0.3);
    vector<float> xb = rng.normals(s.C, 0, 0.5), add = rng.normals(nc, 0, 1.0), ab = rng.normals(s.C, 0, 0.5);
    const float* sc = emb ? scale.data() : nullptr;
    const float* sh = emb ? shift.data() : nullptr;
    for (int terms = 1; terms < 8; terms++) {
        const bool use_xb = terms & 1, use_add = terms & 2, use_ab = (terms & 4) && use_add;
        if ((terms & 4) && !use_add) continue;
        const vector<float> xp = pre_added(s, x, use_xb ? &xb : nullptr, use_add ? &add : nullptr, use_ab ? &ab : nullptr);
        vector<float> y(nx, NAN), mean(size_t(s.N) * s.G, NAN), rstd(size_t(s.N) * s.G, NAN);
        vector<float> y0(nx, NAN), mean0(mean.size(), NAN), rstd0(rstd.size(), NAN);
        onestep_status st = onestep_groupnorm_forward_add_typed(
            x.data(), use_xb ? xb.data() : nullptr, use_add ? add.data() : nullptr, use_ab ? ab.data() : nullptr,
            gamma.data(), beta.data(), sc, sh, y.data(), mean.data(), rstd.data(), s.N, s.HW, s.C, s.G, 1e-5f, silu,
            ONESTEP_FLOAT32, nullptr);
        if (!expect(st == ONESTEP_OK, "pre-add forward returned an error: %s", onestep_last_error_message())) return;
        st = onestep_groupnorm_forward(xp.data(), gamma.data(), beta.data(), sc, sh, y0.data(), mean0.data(),
                                       rstd0.data(), s.N, s.HW, s.C, s.G, 1e-5f, silu, nullptr);
        if (!expect(st == ONESTEP_OK, "forward returned an error: %s", onestep_last_error_message()) || !ktest::sync())
            return;
        char what[160];
        std::snprintf(what, sizeof what, "N=%d HW=%d C=%d G=%d emb=%d silu=%d terms=%d", s.N, s.HW, s.C, s.G, emb, silu,
                      terms);
        expect(std::memcmp(y.data(), y0.data(), nx * 4) == 0 && std::memcmp(mean.data(), mean0.data(), mean.size() * 4) == 0 &&
                   std::memcmp(rstd.data(), rstd0.data(), rstd.size() * 4) == 0,
               "%s: pre-add result is not the plain kernel's on x' materialized", what);
        vector<double> yr, mr, rr, scd = ktest::to_double(scale), shd = ktest::to_double(shift);
        forward_ref(s, ktest::to_double(xp), ktest::to_double(gamma), ktest::to_double(beta),
                    emb ? scd.data() : nullptr, emb ? shd.data() : nullptr, silu, 1e-5, yr, mr, rr);
        expect_close("pre-add y", y.data(), yr.data(), yr.size(), 2e-4, 2e-4);
    }
}

// A candidate kernel of onestep_groupnorm_forward_add_kernel_typed against the double reference on x' = (x + x_bias) +
// (add + add_bias), for the given pre-add terms, in fp32 and on fp16 and bf16 storage (inputs already representable,
// so the reference sees the kernel's inputs; y rounded once more), with its mean and rstd; and against kernel 0.
// Kernel 1, the slab kernel: a block per sample and 16-channel slab, x held in registers, two exact passes for the
// statistics. Kernel 2, the cluster kernel: each group split over a thread block cluster, the same two passes with
// the blocks' totals met in distributed shared memory.
void check_candidate(int candidate, const Shape& s, bool emb, bool silu, int terms, uint64_t seed) {
    const char* name = candidate == 1 ? "slab" : "cluster";
    const bool use_xb = terms & 1, use_add = terms & 2, use_ab = (terms & 4) && use_add;
    const size_t nx = size_t(s.N) * s.HW * s.C, nc = size_t(s.N) * s.C, ng = size_t(s.N) * s.G;
    const ktest::Type16 fp32{ktest::kHalf, ONESTEP_FLOAT32, "fp32"};
    const ktest::Type16 types[] = {fp32, {ktest::kHalf, ONESTEP_FLOAT16, "fp16"}, {ktest::kBf16, ONESTEP_BFLOAT16, "bf16"}};
    for (const ktest::Type16& t : types) {
        ktest::Rng rng(seed);
        const bool half = t.dt != ONESTEP_FLOAT32;
        vector<float> x = rng.normals(nx, 0.5, 1.0), gamma = rng.normals(s.C, 1.0, 0.3), beta = rng.normals(s.C, 0, 0.3);
        vector<float> scale = rng.normals(nc, 0, 0.3), shift = rng.normals(nc, 0, 0.3);
        vector<float> xb = rng.normals(s.C, 0, 0.5), add = rng.normals(nc, 0, 1.0), ab = rng.normals(s.C, 0, 0.5);
        vector<float>* all[] = {&x, &gamma, &beta, &scale, &shift, &xb, &add, &ab};
        vector<ktest::Buf16*> bufs;
        for (vector<float>* v : all) bufs.push_back(half ? new ktest::Buf16(ktest::narrow(t.f, *v)) : nullptr);
        auto ptr = [&](int i, bool use) -> const void* {
            if (!use) return nullptr;
            return half ? static_cast<const void*>(bufs[i]->p) : static_cast<const void*>(all[i]->data());
        };
        const vector<float> xp = pre_added(s, x, use_xb ? &xb : nullptr, use_add ? &add : nullptr, use_ab ? &ab : nullptr);
        vector<double> yr, mr, rr, scd = ktest::to_double(scale), shd = ktest::to_double(shift);
        forward_ref(s, ktest::to_double(xp), ktest::to_double(gamma), ktest::to_double(beta), emb ? scd.data() : nullptr,
                    emb ? shd.data() : nullptr, silu, 1e-5, yr, mr, rr);
        char what[200];
        std::snprintf(what, sizeof what, "%s %s N=%d HW=%d C=%d G=%d emb=%d silu=%d terms=%d", name, t.name, s.N, s.HW,
                      s.C, s.G, emb, silu, terms);
        vector<float> y32[2], mean[2], rstd[2];
        for (int k = 0; k < 2; k++) {
            const int kernel = k == 0 ? 0 : candidate;
            vector<float> yf(half ? 0 : nx, NAN);
            ktest::Buf16 y16(half ? nx : 1);
            mean[k].assign(ng, NAN), rstd[k].assign(ng, NAN);
            void* y = half ? static_cast<void*>(y16.p) : static_cast<void*>(yf.data());
            const onestep_status st = onestep_groupnorm_forward_add_kernel_typed(
                ptr(0, true), ptr(5, use_xb), ptr(6, use_add), ptr(7, use_ab), ptr(1, true), ptr(2, true),
                ptr(3, emb), ptr(4, emb), y, mean[k].data(), rstd[k].data(), s.N, s.HW, s.C, s.G, 1e-5f, silu,
                kernel, t.dt, nullptr);
            if (!expect(st == ONESTEP_OK, "candidate test: a kernel returned an error: %s", onestep_last_error_message()) ||
                !ktest::sync())
                break;
            y32[k] = half ? ktest::widen(t.f, y16.p, nx) : yf;
        }
        for (ktest::Buf16* b : bufs) delete b;
        if (y32[1].size() != nx) return;
        // fp32: the reference to ~1e-4 (the sums' rounding); 16-bit: plus y's one rounding (half an ulp, relative).
        const double rel = half ? 2 * ktest::unit_roundoff(t.f) : 2e-4;
        expect_close(what, y32[1].data(), yr.data(), nx, 2e-4, rel);
        expect_close((std::string(name) + " mean").c_str(), mean[1].data(), mr.data(), ng, 1e-5, 1e-5);
        expect_close((std::string(name) + " rstd").c_str(), rstd[1].data(), rr.data(), ng, 1e-5, 1e-4);
        vector<double> y0 = ktest::to_double(y32[0]);
        expect_close((std::string(name) + " vs kernel 0").c_str(), y32[1].data(), y0.data(), nx, 2e-4,
                     half ? 2 * rel : 2e-4);
    }
}

// The cluster kernel on a concatenation (onestep_groupnorm_concat_kernel_typed, kernel 2) against kernel 0 of the same
// entry, in fp32, fp16 and bf16, with both producer biases or none: cat must be kernel 0's bits (the values the concat
// kernel stores), y, mean and rstd kernel 0's to the sums' rounding (y: plus one rounding in 16 bits).
void check_concat_cluster(const Shape& s, int Ca, bool silu, uint64_t seed) {
    const int Cb = s.C - Ca;
    const size_t rows = size_t(s.N) * s.HW, nx = rows * s.C, ng = size_t(s.N) * s.G;
    const ktest::Type16 types[] = {{ktest::kHalf, ONESTEP_FLOAT32, "fp32"}, {ktest::kHalf, ONESTEP_FLOAT16, "fp16"},
                                   {ktest::kBf16, ONESTEP_BFLOAT16, "bf16"}};
    for (const ktest::Type16& t : types)
        for (int biased = 0; biased < 2; biased++) {
            std::printf("  concat cluster %s N=%d HW=%d Ca=%d Cb=%d G=%d silu=%d biases=%d\n", t.name, s.N, s.HW, Ca, Cb,
                        s.G, silu, biased);
            ktest::Rng rng(seed);
            const bool half = t.dt != ONESTEP_FLOAT32;
            vector<float> in[6] = {rng.normals(rows * Ca, 0.5, 1.0), rng.normals(rows * Cb, -0.3, 2.0),
                                   rng.normals(Ca, 0, 0.5),          rng.normals(Cb, 0, 0.5),
                                   rng.normals(s.C, 1.0, 0.3),       rng.normals(s.C, 0, 0.3)};
            vector<ktest::Buf16*> bufs;
            for (vector<float>& v : in) bufs.push_back(half ? new ktest::Buf16(ktest::narrow(t.f, v)) : nullptr);
            auto ptr = [&](int i) -> const void* {
                if ((i == 2 || i == 3) && !biased) return nullptr;
                return half ? static_cast<const void*>(bufs[i]->p) : static_cast<const void*>(in[i].data());
            };
            const size_t bytes = half ? 2 : 4;
            vector<unsigned char> cat[2], y[2];
            vector<float> mean[2], rstd[2];
            bool ran = true;
            for (int k = 0; k < 2 && ran; k++) {
                ktest::Buf16 cat16(half ? nx : 1), y16(half ? nx : 1);
                vector<float> cat32(half ? 1 : nx, NAN), y32(half ? 1 : nx, NAN);
                mean[k].assign(ng, NAN), rstd[k].assign(ng, NAN);
                void* pc = half ? static_cast<void*>(cat16.p) : static_cast<void*>(cat32.data());
                void* py = half ? static_cast<void*>(y16.p) : static_cast<void*>(y32.data());
                const onestep_status st = onestep_groupnorm_concat_kernel_typed(
                    ptr(0), ptr(2), ptr(1), ptr(3), ptr(4), ptr(5), pc, py, mean[k].data(), rstd[k].data(), s.N, s.HW,
                    Ca, Cb, s.G, 1e-5f, silu, k == 0 ? 0 : 2, t.dt, nullptr);
                ran = expect(st == ONESTEP_OK, "concat cluster: a kernel returned an error: %s",
                             onestep_last_error_message()) && ktest::sync();
                cat[k].assign(static_cast<unsigned char*>(pc), static_cast<unsigned char*>(pc) + nx * bytes);
                y[k].assign(static_cast<unsigned char*>(py), static_cast<unsigned char*>(py) + nx * bytes);
            }
            for (ktest::Buf16* b : bufs) delete b;
            if (!ran) return;
            expect(cat[0] == cat[1], "concat cluster: cat differs from kernel 0's bits%s");
            auto widened = [&](const vector<unsigned char>& raw) {
                if (half) return ktest::widen(t.f, reinterpret_cast<const uint16_t*>(raw.data()), nx);
                vector<float> v(nx);
                std::memcpy(v.data(), raw.data(), nx * 4);
                return v;
            };
            const vector<float> y1 = widened(y[1]);
            const vector<double> y0 = ktest::to_double(widened(y[0])), m0 = ktest::to_double(mean[0]),
                                 r0 = ktest::to_double(rstd[0]);
            const double rel = half ? 4 * ktest::unit_roundoff(t.f) : 2e-4;
            expect_close("concat cluster y vs kernel 0", y1.data(), y0.data(), nx, 2e-4, rel);
            expect_close("concat cluster mean", mean[1].data(), m0.data(), ng, 1e-5, 1e-5);
            expect_close("concat cluster rstd", rstd[1].data(), r0.data(), ng, 1e-5, 1e-4);
        }
}

// The concatenating forward (onestep_groupnorm_concat_typed): cat must be onestep_concat_channels_biased_typed's
// result and y, mean, rstd the group norm's of it, bit for bit, and y close to the double reference. Groups that
// straddle the a|b boundary, 4-channel groups whose vectors straddle it, both Welford orders and both paths.
void check_concat(const Shape& s, int Ca, bool silu, uint64_t seed) {
    const int Cb = s.C - Ca;
    std::printf("  concat N=%d HW=%d Ca=%d Cb=%d G=%d silu=%d\n", s.N, s.HW, Ca, Cb, s.G, silu);
    ktest::Rng rng(seed);
    const long long rows = (long long)s.N * s.HW;
    const size_t nx = size_t(rows) * s.C;
    vector<float> a = rng.normals(size_t(rows) * Ca, 0.5, 1.0), b = rng.normals(size_t(rows) * Cb, -0.3, 2.0);
    vector<float> ab = rng.normals(Ca, 0, 0.5), bb = rng.normals(Cb, 0, 0.5);
    vector<float> gamma = rng.normals(s.C, 1.0, 0.3), beta = rng.normals(s.C, 0, 0.3);
    for (int biases = 0; biases < 4; biases++) {
        const float* pab = biases & 1 ? ab.data() : nullptr;
        const float* pbb = biases & 2 ? bb.data() : nullptr;
        vector<float> cat(nx, NAN), y(nx, NAN), mean(size_t(s.N) * s.G, NAN), rstd(mean.size(), NAN);
        vector<float> cat0(nx, NAN), y0(nx, NAN), mean0(mean.size(), NAN), rstd0(mean.size(), NAN);
        onestep_status st = onestep_groupnorm_concat_typed(a.data(), pab, b.data(), pbb, gamma.data(), beta.data(),
                                                           cat.data(), y.data(), mean.data(), rstd.data(), s.N, s.HW,
                                                           Ca, Cb, s.G, 1e-5f, silu, ONESTEP_FLOAT32, nullptr);
        if (!expect(st == ONESTEP_OK, "concat forward returned an error: %s", onestep_last_error_message())) return;
        st = onestep_concat_channels_biased_typed(a.data(), pab, b.data(), pbb, cat0.data(), rows, Ca, Cb,
                                                  ONESTEP_FLOAT32, nullptr);
        if (!expect(st == ONESTEP_OK, "concat returned an error: %s", onestep_last_error_message())) return;
        st = onestep_groupnorm_forward(cat0.data(), gamma.data(), beta.data(), nullptr, nullptr, y0.data(),
                                       mean0.data(), rstd0.data(), s.N, s.HW, s.C, s.G, 1e-5f, silu, nullptr);
        if (!expect(st == ONESTEP_OK, "forward returned an error: %s", onestep_last_error_message()) || !ktest::sync())
            return;
        char what[64];
        std::snprintf(what, sizeof what, "biases=%d", biases);
        expect(std::memcmp(cat.data(), cat0.data(), nx * 4) == 0, "%s: cat differs from the concat's", what);
        expect(std::memcmp(y.data(), y0.data(), nx * 4) == 0 &&
                   std::memcmp(mean.data(), mean0.data(), mean.size() * 4) == 0 &&
                   std::memcmp(rstd.data(), rstd0.data(), rstd.size() * 4) == 0,
               "%s: y, mean or rstd differ from the group norm of the concatenation", what);
        // The reference on the concatenation written out here (each biased value an fp32 sum).
        vector<double> xd(nx);
        for (long long r = 0; r < rows; r++)
            for (int c = 0; c < s.C; c++)
                xd[size_t(r) * s.C + c] = c < Ca ? double(a[size_t(r) * Ca + c] + (pab ? pab[c] : 0.0f))
                                                 : double(b[size_t(r) * Cb + c - Ca] + (pbb ? pbb[c - Ca] : 0.0f));
        vector<double> yr, mr, rr;
        forward_ref(s, xd, ktest::to_double(gamma), ktest::to_double(beta), nullptr, nullptr, silu, 1e-5, yr, mr, rr);
        expect_close("concat cat", cat.data(), xd.data(), nx, 0.0, 0.0);
        expect_close("concat y", y.data(), yr.data(), yr.size(), 2e-4, 2e-4);
        expect_close("concat rstd", rstd.data(), rr.data(), rr.size(), 1e-5, 2e-4);
    }
}

void check_argument_errors() {
    float buf[64] = {};
    onestep_status st =
        onestep_groupnorm_forward(buf, buf, buf, nullptr, nullptr, buf, buf, buf, 1, 2, 12, 5, 1e-5f, 0, nullptr);
    expect(st == ONESTEP_ERROR_INVALID_ARGUMENT, "C %% G != 0 was accepted%s");
    const char* msg = onestep_last_error_message();
    expect(std::strstr(msg, "onestep_groupnorm_forward(N=1, HW=2, C=12, G=5)") != nullptr,
           "message does not name the kernel and shapes: %s", msg);
    st = onestep_groupnorm_forward(buf, buf, buf, nullptr, nullptr, buf, buf, buf, 1, 1 << 20, 2048, 32, 1e-5f, 0, nullptr);
    expect(st == ONESTEP_ERROR_INVALID_ARGUMENT, "HW * C > 2^30 was accepted%s");
    st = onestep_groupnorm_forward(buf, buf, buf, buf, nullptr, buf, buf, buf, 1, 2, 4, 2, 1e-5f, 0, nullptr);
    expect(st == ONESTEP_ERROR_INVALID_ARGUMENT, "scale without shift was accepted%s");
    st = onestep_groupnorm_forward_add_typed(buf, nullptr, nullptr, buf, buf, buf, nullptr, nullptr, buf, buf, buf, 1, 2,
                                             4, 2, 1e-5f, 0, ONESTEP_FLOAT32, nullptr);
    expect(st == ONESTEP_ERROR_INVALID_ARGUMENT, "add_bias without add was accepted%s");
    expect(std::strstr(onestep_last_error_message(), "onestep_groupnorm_forward_add_typed(N=1, HW=2, C=4, G=2)") != nullptr,
           "pre-add message does not name the kernel and shapes: %s", onestep_last_error_message());
    st = onestep_groupnorm_concat_typed(buf, nullptr, buf + 8, nullptr, buf, buf, buf + 16, buf + 16, buf, buf, 1, 2, 4,
                                        4, 2, 1e-5f, 1, ONESTEP_FLOAT32, nullptr);
    expect(st == ONESTEP_ERROR_INVALID_ARGUMENT, "concat with cat aliasing y was accepted%s");
    expect(std::strstr(onestep_last_error_message(), "onestep_groupnorm_concat_typed(N=1, HW=2, Ca=4, Cb=4, G=2") != nullptr,
           "concat message does not name the kernel and shapes: %s", onestep_last_error_message());
    st = onestep_groupnorm_concat_typed(buf, nullptr, buf + 8, nullptr, buf, buf, buf + 16, buf + 32, buf, buf, 1, 2, 4,
                                        3, 2, 1e-5f, 1, ONESTEP_FLOAT32, nullptr);
    expect(st == ONESTEP_ERROR_INVALID_ARGUMENT, "concat with Ca + Cb not divisible by G was accepted%s");
    st = onestep_groupnorm_concat_typed(buf, nullptr, buf + 8, nullptr, buf, buf, buf + 16, buf + 32, buf, buf, 1, 2, 0,
                                        4, 2, 1e-5f, 1, ONESTEP_FLOAT32, nullptr);
    expect(st == ONESTEP_ERROR_INVALID_ARGUMENT, "concat with Ca = 0 was accepted%s");
    // The slab kernel's conditions: C/G of 4, 8 or 16 (here 2), y apart from x, a kernel number it knows.
    alignas(16) float abuf[256] = {};
    st = onestep_groupnorm_forward_add_kernel_typed(abuf, nullptr, nullptr, nullptr, abuf, abuf, nullptr, nullptr,
                                                    abuf + 64, abuf, abuf, 1, 2, 64, 32, 1e-5f, 0, 1, ONESTEP_FLOAT32,
                                                    nullptr);
    expect(st == ONESTEP_ERROR_UNSUPPORTED && std::strstr(onestep_last_error_message(), "C/G of 4, 8 or 16") != nullptr,
           "the slab kernel took groups of 2: %s", onestep_last_error_message());
    st = onestep_groupnorm_forward_add_kernel_typed(abuf, nullptr, nullptr, nullptr, abuf, abuf, nullptr, nullptr,
                                                    abuf, abuf, abuf, 1, 2, 64, 16, 1e-5f, 0, 1, ONESTEP_FLOAT32, nullptr);
    expect(st == ONESTEP_ERROR_INVALID_ARGUMENT, "the slab kernel took y == x%s");
    st = onestep_groupnorm_forward_add_kernel_typed(abuf, nullptr, nullptr, nullptr, abuf, abuf, nullptr, nullptr,
                                                    abuf + 1, abuf, abuf, 1, 2, 64, 16, 1e-5f, 0, 1, ONESTEP_FLOAT32,
                                                    nullptr);
    expect(st == ONESTEP_ERROR_UNSUPPORTED && std::strstr(onestep_last_error_message(), "aligned") != nullptr,
           "the slab kernel took a misaligned y: %s", onestep_last_error_message());
    st = onestep_groupnorm_forward_add_kernel_typed(abuf, nullptr, nullptr, nullptr, abuf, abuf, nullptr, nullptr,
                                                    abuf + 64, abuf, abuf, 1, 2, 64, 16, 1e-5f, 0, 3, ONESTEP_FLOAT32,
                                                    nullptr);
    expect(st == ONESTEP_ERROR_INVALID_ARGUMENT && std::strstr(onestep_last_error_message(),
                                                               "onestep_groupnorm_forward_add_kernel_typed(N=1") != nullptr,
           "kernel 3 was accepted, or the message does not name the function: %s", onestep_last_error_message());
    // The cluster kernel's: C/G a multiple of 4 (here 2), y apart from x, x and y aligned.
    st = onestep_groupnorm_forward_add_kernel_typed(abuf, nullptr, nullptr, nullptr, abuf, abuf, nullptr, nullptr,
                                                    abuf + 64, abuf, abuf, 1, 2, 64, 32, 1e-5f, 0, 2, ONESTEP_FLOAT32,
                                                    nullptr);
    expect(st == ONESTEP_ERROR_UNSUPPORTED && std::strstr(onestep_last_error_message(), "cluster") != nullptr,
           "the cluster kernel took groups of 2: %s", onestep_last_error_message());
    // A group too large for 1024 threads x 4 4-vectors (a 128x128 level at 256 channels: clusters of 4 x 8192
    // 4-vectors), which 1024 threads x 8 would take with 80 registers a thread, past a block's 64K: refused by name
    // before any launch (on a GPU that launch failed; the emulation, without registers, ran it).
    {
        const int hw = 16384, c = 256, g = 32;  // real sizes: a kernel that takes the shape runs (and this check fails)
        std::vector<float> bx(size_t(hw) * c, 0.5f), by(bx.size()), bgamma(c, 1.0f), bbeta(c, 0.0f), bm(g), br(g);
        st = onestep_groupnorm_forward_add_kernel_typed(bx.data(), nullptr, nullptr, nullptr, bgamma.data(),
                                                        bbeta.data(), nullptr, nullptr, by.data(), bm.data(), br.data(),
                                                        1, hw, c, g, 1e-5f, 0, 2, ONESTEP_FLOAT32, nullptr);
        expect(st == ONESTEP_ERROR_UNSUPPORTED && std::strstr(onestep_last_error_message(), "register") != nullptr,
               "the cluster kernel took 8192 4-vectors a block: %s", onestep_last_error_message());
    }
    st = onestep_groupnorm_forward_add_kernel_typed(abuf, nullptr, nullptr, nullptr, abuf, abuf, nullptr, nullptr,
                                                    abuf, abuf, abuf, 1, 2, 64, 16, 1e-5f, 0, 2, ONESTEP_FLOAT32, nullptr);
    expect(st == ONESTEP_ERROR_INVALID_ARGUMENT, "the cluster kernel took y == x%s");
    st = onestep_groupnorm_forward_add_kernel_typed(abuf, nullptr, nullptr, nullptr, abuf, abuf, nullptr, nullptr,
                                                    abuf + 2, abuf, abuf, 1, 2, 64, 16, 1e-5f, 0, 2, ONESTEP_FLOAT32,
                                                    nullptr);
    expect(st == ONESTEP_ERROR_UNSUPPORTED && std::strstr(onestep_last_error_message(), "aligned") != nullptr,
           "the cluster kernel took a misaligned y: %s", onestep_last_error_message());
    st = onestep_groupnorm_forward_add_kernel_typed(abuf, nullptr, nullptr, nullptr, abuf, abuf, nullptr, nullptr,
                                                    abuf + 64, abuf, abuf, 1, 3000, 64, 16, 1e-5f, 0, 1,
                                                    ONESTEP_FLOAT32, nullptr);
    expect(st == ONESTEP_ERROR_UNSUPPORTED, "the slab kernel took HW = 3000 (more than its registers hold)%s");
    st = onestep_groupnorm_backward(buf, buf, buf, buf, buf, buf, nullptr, nullptr, buf, buf, buf, nullptr, nullptr, 0,
                                    2, 4, 2, 0, nullptr);
    expect(st == ONESTEP_ERROR_INVALID_ARGUMENT, "N = 0 was accepted%s");
    expect(std::strstr(onestep_last_error_message(), "onestep_groupnorm_backward(N=0") != nullptr,
           "backward message does not name the kernel: %s", onestep_last_error_message());
}

}  // namespace

int main() {
    const auto start = std::chrono::steady_clock::now();
    std::printf("reference backward vs finite differences\n");
    check_reference_by_finite_differences();
    std::printf("argument checks\n");
    check_argument_errors();
    std::printf("kernels vs reference\n");
    const Shape fixed[] = {
        {2, 7, 12, 4},     // groups of 3 channels, C % 4 == 0 but Cg % 4 != 0
        {3, 33, 40, 8},    // groups of 5
        {2, 64, 64, 32},   // groups of 2, the U-Net's 32 groups
        {1, 50, 96, 1},    // one group wider than a warp (chunks of 32 + 32 + 32)
        {2, 16, 128, 32},  // float4 statistics path
        {1, 9, 330, 33},   // C not a multiple of 4: scalar apply path, groups of 10
        {1, 1, 8, 8},      // one value per group: variance 0
    };
    uint64_t seed = 1;
    for (const Shape& s : fixed)
        for (int emb = 0; emb < 2; emb++)
            for (int silu = 0; silu < 2; silu++) check_case(s, emb, silu, 0.5, seed++);
    // A large mean with a unit spread: the case where E[x^2] - E[x]^2 loses the variance in fp32.
    check_case(Shape{2, 100, 32, 4}, false, false, 300.0, seed++);
    // Above kFusedMaxElems (2^20 values) the forward is two kernels, below it one: both paths, each with the
    // float4 (Cg % 4 == 0) and the scalar statistics.
    check_case(Shape{2, 4100, 128, 32}, true, true, 0.5, seed++);   // 1,049,600 values: two kernels
    check_case(Shape{1, 8200, 130, 13}, false, true, 0.5, seed++);  // 1,066,000, groups of 10: two kernels, scalar
    check_case(Shape{1, 1024, 128, 32}, true, true, 0.5, seed++);   // the CIFAR config's 32x32 level at batch 1
    std::printf("pre-add variant vs the plain kernel on x' and the reference\n");
    const Shape pre_shapes[] = {{2, 7, 12, 4}, {1, 9, 330, 33}, {2, 16, 128, 32}, {3, 33, 40, 8}};
    for (const Shape& s : pre_shapes)
        for (int emb = 0; emb < 2; emb++) check_pre_add(s, emb, true, seed++);
    check_pre_add(Shape{1, 64, 256, 32}, false, false, seed++);
    check_pre_add(Shape{2, 4100, 128, 32}, false, true, seed++);  // above kFusedMaxElems: the two-kernel path
    std::printf("slab kernel (kernel 1) vs the reference and kernel 0, fp32/fp16/bf16\n");
    check_candidate(1, Shape{2, 37, 128, 32}, true, true, 0, seed++);    // Cg 4, ragged HW (37 of 64 rows: ITERS 1)
    check_candidate(1, Shape{1, 300, 64, 8}, false, true, 3, seed++);    // Cg 8, x_bias and add; ITERS 8
    check_candidate(1, Shape{3, 129, 32, 2}, true, false, 7, seed++);    // Cg 16, every pre-add term; one past 128 rows
    check_candidate(1, Shape{1, 1024, 256, 32}, false, false, 1, seed++); // the CIFAR 32x32 level at the width of 256
    check_candidate(1, Shape{2, 2048, 16, 4}, true, true, 6, seed++);    // HW at the limit (256 threads x 32 4-vectors)
    std::printf("cluster kernel (kernel 2) vs the reference and kernel 0, fp32/fp16/bf16\n");
    check_candidate(2, Shape{1, 1024, 128, 32}, true, true, 3, seed++);   // CIFAR batch 1, 32x32: clusters of 4 x 256
    check_candidate(2, Shape{1, 256, 256, 32}, false, true, 1, seed++);   // 16x16, Cg 8: clusters of 4 x 128
    check_candidate(2, Shape{1, 64, 256, 32}, true, false, 7, seed++);    // 8x8: clusters of 2
    check_candidate(2, Shape{1, 300, 48, 4}, true, true, 6, seed++);      // Cg 12, clusters of 8 x 113 (the last 109)
    check_candidate(2, Shape{3, 49, 64, 16}, false, true, 0, seed++);     // batch 3, 7x7: one block a group
    check_candidate(2, Shape{1, 16384, 8, 2}, false, false, 0, seed++);   // 2048 4-vectors a block: 256 x 8 (ITERS 8)
    std::printf("cluster kernel on a concatenation (kernel 2) vs kernel 0\n");
    check_concat_cluster(Shape{1, 256, 384, 32}, 256, true, seed++);   // an up block at 16x16, batch 1: clusters of 4
    check_concat_cluster(Shape{1, 64, 512, 32}, 256, true, seed++);    // 8x8, groups of 16
    check_concat_cluster(Shape{2, 9, 24, 6}, 16, false, seed++);       // groups of 4, one straddling nothing: Ca 16
    {
        alignas(16) float cbuf[512] = {};
        const onestep_status st = onestep_groupnorm_concat_kernel_typed(
            cbuf, nullptr, cbuf + 64, nullptr, cbuf, cbuf, cbuf + 128, cbuf + 256, cbuf, cbuf, 1, 4, 6, 10, 4, 1e-5f, 1,
            2, ONESTEP_FLOAT32, nullptr);
        expect(st == ONESTEP_ERROR_UNSUPPORTED && std::strstr(onestep_last_error_message(), "multiples of 4"),
               "the cluster concat took Ca = 6: %s", onestep_last_error_message());
        expect(onestep_groupnorm_concat_kernel_typed(cbuf, nullptr, cbuf + 64, nullptr, cbuf, cbuf, cbuf + 128,
                                                     cbuf + 256, cbuf, cbuf, 1, 4, 8, 8, 4, 1e-5f, 1, 1,
                                                     ONESTEP_FLOAT32, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
               "the concat entry took kernel 1%s");
    }
    std::printf("concatenating forward vs concat + group norm and the reference\n");
    for (int silu = 0; silu < 2; silu++) {
        check_concat(Shape{2, 7, 12, 4}, 8, silu, seed++);    // groups of 3 straddle channel 8
        check_concat(Shape{1, 16, 128, 32}, 64, silu, seed++);  // groups of 4: the float4 order
    }
    check_concat(Shape{3, 9, 16, 4}, 6, true, seed++);        // groups of 4, Ca = 6: a 4-group straddles a|b
    check_concat(Shape{1, 9, 200, 20}, 130, true, seed++);    // groups of 10
    check_concat(Shape{1, 256, 256, 32}, 64, true, seed++);   // batch 1, 2048 values a group: blocks of 512
    check_concat(Shape{1, 1024, 384, 32}, 256, true, seed++); // the CIFAR up block's 32x32 shape: blocks of 1024
    check_concat(Shape{1, 4100, 256, 32}, 128, true, seed++); // 1,049,600 values: the two-kernel path
    check_concat(Shape{1, 8200, 130, 13}, 65, false, seed++); // two kernels, groups of 10: scalar order
    ktest::Rng rng(2024);
    for (int k = 0; k < 6; k++) {
        const int G = rng.range(1, 8), Cg = rng.range(1, 40);
        check_case(Shape{rng.range(1, 3), rng.range(1, 70), G * Cg, G}, rng.range(0, 1), rng.range(0, 1), 0.0, seed++);
    }
    return ktest::finish("test_groupnorm", start);
}
