// test_attention.cpp: the fused attention forward and backward (kernels/src/attention*.cu), through the CUDA emulation,
// against a double-precision softmax(Q K^T * scale) V on random shapes: every supported head dim, token
// counts that are not multiples of the 32-row / 32-key tiles, cross attention (Tq != Tk), per-batch key
// lengths including 0 (a fully masked row must give o = 0 and lse = -inf, not NaN), and scores large
// enough that a softmax without the running max would overflow. The backward reference is checked against
// finite differences of the forward reference first.
#include "onestep_kernels.h"
#include "onestep_runtime.h"
#include "layout_ref.h"
#include "test_common.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

using ktest::expect;
using ktest::expect_close;
using ktest::Buf16;
using ktest::narrow;
using ktest::widen;
using std::vector;

namespace {

struct Case {
    int B, H, Tq, Tk, D;
    double qk_std;  // spread of q and k: large values give large scores
    bool use_kv_len;
};

void reference(const Case& c, const vector<float>& q, const vector<float>& k, const vector<float>& v,
               const vector<int>& kv_len, double scale, vector<double>& o, vector<double>& lse) {
    o.assign(size_t(c.B) * c.H * c.Tq * c.D, 0.0);
    lse.assign(size_t(c.B) * c.H * c.Tq, -INFINITY);
    vector<double> s(c.Tk);
    for (int b = 0; b < c.B; b++)
        for (int h = 0; h < c.H; h++) {
            const size_t bh = size_t(b) * c.H + h;
            const int len = c.use_kv_len ? std::max(0, std::min(kv_len[b], c.Tk)) : c.Tk;
            for (int i = 0; i < c.Tq; i++) {
                if (len == 0) continue;  // o = 0, lse = -inf
                double mx = -INFINITY;
                for (int j = 0; j < len; j++) {
                    double dot = 0;
                    for (int d = 0; d < c.D; d++)
                        dot += double(q[(bh * c.Tq + i) * c.D + d]) * double(k[(bh * c.Tk + j) * c.D + d]);
                    s[j] = dot * scale;
                    mx = std::max(mx, s[j]);
                }
                double sum = 0;
                for (int j = 0; j < len; j++) sum += std::exp(s[j] - mx);
                for (int j = 0; j < len; j++) {
                    const double p = std::exp(s[j] - mx) / sum;
                    for (int d = 0; d < c.D; d++) o[(bh * c.Tq + i) * c.D + d] += p * double(v[(bh * c.Tk + j) * c.D + d]);
                }
                lse[bh * c.Tq + i] = mx + std::log(sum);
            }
        }
}

// Backward reference: P recomputed in double, then dV = P^T dO, dP = dO V^T, dS = P o (dP - rowsum(P o dP)),
// dQ = scale dS K, dK = scale dS^T Q.
void reference_backward(const Case& c, const vector<float>& q, const vector<float>& k, const vector<float>& v,
                        const vector<float>& dout, const vector<int>& kv_len, double scale, vector<double>& dq,
                        vector<double>& dk, vector<double>& dv, const vector<float>* o_given = nullptr) {
    dq.assign(q.size(), 0.0);
    dk.assign(k.size(), 0.0);
    dv.assign(v.size(), 0.0);
    const int D = c.D;
    vector<double> p(c.Tk), dp(c.Tk);
    for (int b = 0; b < c.B; b++)
        for (int h = 0; h < c.H; h++) {
            const size_t bh = size_t(b) * c.H + h;
            const int len = c.use_kv_len ? std::max(0, std::min(kv_len[b], c.Tk)) : c.Tk;
            for (int i = 0; i < c.Tq && len > 0; i++) {
                const float* qi = &q[(bh * c.Tq + i) * D];
                const float* gi = &dout[(bh * c.Tq + i) * D];
                double mx = -INFINITY, sum = 0, delta = 0;
                for (int j = 0; j < len; j++) {
                    double dot = 0;
                    for (int d = 0; d < D; d++) dot += double(qi[d]) * k[(bh * c.Tk + j) * D + d];
                    p[j] = dot * scale;
                    mx = std::max(mx, p[j]);
                }
                for (int j = 0; j < len; j++) sum += (p[j] = std::exp(p[j] - mx));
                for (int j = 0; j < len; j++) {
                    p[j] /= sum;
                    double g = 0;
                    for (int d = 0; d < D; d++) g += double(gi[d]) * v[(bh * c.Tk + j) * D + d];
                    dp[j] = g;
                    delta += p[j] * g;
                }
                if (o_given) {
                    // Delta as the kernel forms it, rowsum(dO o O) of the O it is given (FA2, Alg. 2 line 4): the
                    // same value as rowsum(P o dP) when O is exact; with a rounded (16-bit) O it differs by O's
                    // rounding, which the kernel cannot undo.
                    delta = 0;
                    for (int d = 0; d < D; d++) delta += double(gi[d]) * (*o_given)[(bh * c.Tq + i) * D + d];
                }
                for (int j = 0; j < len; j++) {
                    const double ds = p[j] * (dp[j] - delta);
                    for (int d = 0; d < D; d++) {
                        dv[(bh * c.Tk + j) * D + d] += p[j] * gi[d];
                        dq[(bh * c.Tq + i) * D + d] += scale * ds * k[(bh * c.Tk + j) * D + d];
                        dk[(bh * c.Tk + j) * D + d] += scale * ds * qi[d];
                    }
                }
            }
        }
}

using ktest::ok;

// cudaMalloc-like 256-byte-aligned copies, as the kernel's float4 loads require.
struct Buf {
    float* p;
    size_t n;
    explicit Buf(const vector<float>& v) : p(static_cast<float*>(std::aligned_alloc(256, (v.size() * 4 + 255) / 256 * 256))), n(v.size()) {
        std::memcpy(p, v.data(), v.size() * 4);
    }
    explicit Buf(size_t count, float fill) : p(static_cast<float*>(std::aligned_alloc(256, (count * 4 + 255) / 256 * 256))), n(count) {
        for (size_t i = 0; i < count; i++) p[i] = fill;
    }
    ~Buf() { std::free(p); }
};

// Random q, k (spread qk_std), v and key lengths: batch 0 sees no key at all when lengths are used; the others
// see random prefixes, some past Tk.
void make_inputs(const Case& c, ktest::Rng& rng, vector<float>& q, vector<float>& k, vector<float>& v,
                 vector<int>& kv_len) {
    q = rng.normals(size_t(c.B) * c.H * c.Tq * c.D, 0, c.qk_std);
    k = rng.normals(size_t(c.B) * c.H * c.Tk * c.D, 0, c.qk_std);
    v = rng.normals(size_t(c.B) * c.H * c.Tk * c.D);
    kv_len.assign(c.B, 0);
    for (int b = 1; b < c.B; b++) kv_len[b] = rng.range(1, c.Tk + 40);
}

// lse: equal infinities (rows without keys) compare equal; finite values by tolerance.
void expect_lse(const char* what, const Buf& got_buf, const vector<double>& lse) {
    vector<double> want(lse);
    vector<float> got(got_buf.p, got_buf.p + got_buf.n);
    for (size_t i = 0; i < lse.size(); i++)
        if (std::isinf(lse[i]) && got[i] == float(lse[i])) want[i] = 0, got[i] = 0;
    expect_close(what, got.data(), want.data(), got.size(), 2e-5, 2e-5);
}

void check_case(const Case& c, uint64_t seed) {
    std::printf("  B=%d H=%d Tq=%d Tk=%d D=%d qk_std=%g kv_len=%d\n", c.B, c.H, c.Tq, c.Tk, c.D, c.qk_std, c.use_kv_len);
    ktest::Rng rng(seed);
    vector<float> q, k, v;
    vector<int> kv_len;
    make_inputs(c, rng, q, k, v, kv_len);
    Buf bq(q), bk(k), bv(v), bo(q.size(), NAN), blse(size_t(c.B) * c.H * c.Tq, NAN);
    const double scale = 1.0 / std::sqrt(double(c.D));
    const onestep_status st = onestep_attention_forward(bq.p, bk.p, bv.p, bo.p, blse.p, c.B, c.H, c.Tq, c.Tk, c.D,
                                                        c.use_kv_len ? kv_len.data() : nullptr, 0.0f, nullptr);
    if (!expect(st == ONESTEP_OK, "attention returned an error: %s", onestep_last_error_message()) || !ktest::sync()) return;
    vector<double> o, lse;
    reference(c, q, k, v, kv_len, scale, o, lse);
    expect_close("o", bo.p, o.data(), o.size(), 2e-5, 2e-4);
    expect_lse("lse", blse, lse);

    vector<float> dout = rng.normals(q.size());
    Buf ddout(dout), ddq(q.size(), NAN), ddk(k.size(), NAN), ddv(v.size(), NAN), ddelta(blse.n, NAN);
    const onestep_status sb = onestep_attention_backward(bq.p, bk.p, bv.p, bo.p, ddout.p, blse.p, ddelta.p, ddq.p,
                                                         ddk.p, ddv.p, c.B, c.H, c.Tq, c.Tk, c.D,
                                                         c.use_kv_len ? kv_len.data() : nullptr, 0.0f, nullptr);
    if (!expect(sb == ONESTEP_OK, "attention backward returned an error: %s", onestep_last_error_message()) || !ktest::sync()) return;
    vector<double> gq, gk, gv;
    reference_backward(c, q, k, v, dout, kv_len, scale, gq, gk, gv);
    const double tol = 5e-5 * std::sqrt(double(c.Tq > c.Tk ? c.Tq : c.Tk)) * c.qk_std * c.qk_std;
    expect_close("dq", ddq.p, gq.data(), gq.size(), tol, 1e-3);
    expect_close("dk", ddk.p, gk.data(), gk.size(), tol, 1e-3);
    expect_close("dv", ddv.p, gv.data(), gv.size(), tol, 1e-3);
}

// The fp16 / bf16 instantiations: inputs are rounded to the format first, so the double reference computes on
// exactly what the kernel reads. The backward's arithmetic is fp32, so its only extra error is the final rounding
// of dq, dk, dv (one unit roundoff u relative, on top of the fp32 tolerances). The forward runs on tensor cores
// (attention.cu's tc path), which also round P to the format before P V, as FlashAttention-2 does: that adds at
// most u * sum_j p_j |v_j| / l <= u * max |v| to each element of o (absolute), and o's own rounding adds u relative.
void check_case_typed(const Case& c, onestep_dtype dtype, uint64_t seed) {
    const ktest::Format16& f = dtype == ONESTEP_FLOAT16 ? ktest::kHalf : ktest::kBf16;
    const char* name = dtype == ONESTEP_FLOAT16 ? "fp16" : "bf16";
    std::printf("  %s B=%d H=%d Tq=%d Tk=%d D=%d qk_std=%g kv_len=%d\n", name, c.B, c.H, c.Tq, c.Tk, c.D, c.qk_std,
                c.use_kv_len);
    ktest::Rng rng(seed);
    vector<float> q, k, v;
    vector<int> kv_len;
    make_inputs(c, rng, q, k, v, kv_len);
    Buf16 bq(narrow(f, q)), bk(narrow(f, k)), bv(narrow(f, v)), bo(q.size());
    Buf blse(size_t(c.B) * c.H * c.Tq, NAN);
    const double scale = 1.0 / std::sqrt(double(c.D)), u = ktest::unit_roundoff(f);
    const int* lens = c.use_kv_len ? kv_len.data() : nullptr;
    const onestep_status st = onestep_attention_forward_typed(bq.p, bk.p, bv.p, bo.p, blse.p, c.B, c.H, c.Tq, c.Tk,
                                                              c.D, lens, 0.0f, dtype, nullptr);
    if (!expect(st == ONESTEP_OK, "typed attention returned an error: %s", onestep_last_error_message()) || !ktest::sync()) return;
    vector<double> o, lse;
    reference(c, q, k, v, kv_len, scale, o, lse);
    vector<float> got_o = widen(f, bo.p, bo.n);
    double vmax = 0;
    for (float x : widen(f, bv.p, bv.n)) vmax = std::max(vmax, double(std::fabs(x)));
    expect_close(dtype == ONESTEP_FLOAT16 ? "fp16 o" : "bf16 o", got_o.data(), o.data(), o.size(), 2e-5 + u * vmax,
                 2e-4 + u);
    expect_lse(dtype == ONESTEP_FLOAT16 ? "fp16 lse" : "bf16 lse", blse, lse);

    vector<float> dout = rng.normals(q.size());
    Buf16 ddout(narrow(f, dout)), ddq(q.size()), ddk(k.size()), ddv(v.size());
    Buf ddelta(blse.n, NAN);
    const onestep_status sb = onestep_attention_backward_typed(bq.p, bk.p, bv.p, bo.p, ddout.p, blse.p, ddelta.p,
                                                               ddq.p, ddk.p, ddv.p, c.B, c.H, c.Tq, c.Tk, c.D, lens,
                                                               0.0f, dtype, nullptr);
    if (!expect(sb == ONESTEP_OK, "typed attention backward returned an error: %s", onestep_last_error_message()) ||
        !ktest::sync())
        return;
    vector<double> gq, gk, gv;
    reference_backward(c, q, k, v, dout, kv_len, scale, gq, gk, gv, &got_o);
    const double tol = 5e-5 * std::sqrt(double(c.Tq > c.Tk ? c.Tq : c.Tk)) * c.qk_std * c.qk_std;
    vector<float> wq = widen(f, ddq.p, ddq.n), wk = widen(f, ddk.p, ddk.n), wv = widen(f, ddv.p, ddv.n);
    expect_close(dtype == ONESTEP_FLOAT16 ? "fp16 dq" : "bf16 dq", wq.data(), gq.data(), gq.size(), tol, 1e-3 + u);
    expect_close(dtype == ONESTEP_FLOAT16 ? "fp16 dk" : "bf16 dk", wk.data(), gk.data(), gk.size(), tol, 1e-3 + u);
    expect_close(dtype == ONESTEP_FLOAT16 ? "fp16 dv" : "bf16 dv", wv.data(), gv.data(), gv.size(), tol, 1e-3 + u);
}

// The backward reference against central differences of L = sum(dout * o) on a tiny case.
void check_backward_reference_by_finite_differences() {
    const Case c{1, 1, 3, 5, 32, 1.0, false};
    ktest::Rng rng(9);
    vector<float> q = rng.normals(3 * 32), k = rng.normals(5 * 32), v = rng.normals(5 * 32), dout = rng.normals(3 * 32);
    const double scale = 1.0 / std::sqrt(32.0);
    vector<double> gq, gk, gv;
    vector<int> none;
    reference_backward(c, q, k, v, dout, none, scale, gq, gk, gv);
    auto loss = [&]() {
        vector<double> o, lse;
        reference(c, q, k, v, none, scale, o, lse);
        double l = 0;
        for (size_t i = 0; i < o.size(); i++) l += dout[i] * o[i];
        return l;
    };
    auto fd = [&](vector<float>& x, const vector<double>& g, const char* name) {
        vector<float> got;
        vector<double> want;
        for (size_t i = 0; i < x.size(); i += 7) {  // a sample of the entries
            const float keep = x[i], h = 1e-2f;
            x[i] = keep + h;
            const double lp = loss();
            x[i] = keep - h;
            const double lm = loss();
            x[i] = keep;
            want.push_back((lp - lm) / (2.0 * h));
            got.push_back(float(g[i]));
        }
        expect_close(name, got.data(), want.data(), got.size(), 2e-4, 1e-3);
    };
    fd(q, gq, "reference dq vs finite differences");
    fd(k, gk, "reference dk vs finite differences");
    fd(v, gv, "reference dv vs finite differences");
}

void check_argument_errors() {
    Buf b(4096, 0.0f);
    expect(onestep_attention_forward(b.p, b.p, b.p, b.p, b.p, 1, 1, 4, 4, 96, nullptr, 0.f, nullptr) == ONESTEP_ERROR_UNSUPPORTED,
           "head dim 96 was accepted%s");
    expect(std::strstr(onestep_last_error_message(), "onestep_attention_forward(B=1, H=1, Tq=4, Tk=4, D=96)") != nullptr,
           "message does not name the kernel and shapes: %s", onestep_last_error_message());
    expect(onestep_attention_forward(b.p + 1, b.p, b.p, b.p, b.p, 1, 1, 4, 4, 32, nullptr, 0.f, nullptr) ==
               ONESTEP_ERROR_INVALID_ARGUMENT,
           "a misaligned q was accepted%s");
    expect(onestep_attention_forward(b.p, b.p, b.p, b.p, b.p, 1, 1, 0, 4, 32, nullptr, 0.f, nullptr) ==
               ONESTEP_ERROR_INVALID_ARGUMENT,
           "Tq = 0 was accepted%s");
    expect(onestep_attention_forward_typed(b.p, b.p, b.p, b.p, b.p, 1, 1, 4, 4, 32, nullptr, 0.f, onestep_dtype(7),
                                           nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "an unknown dtype was accepted%s");
    expect(onestep_attention_forward_typed(b.p, b.p, b.p, b.p, b.p, 1, 1, 4, 4, 96, nullptr, 0.f, ONESTEP_BFLOAT16,
                                           nullptr) == ONESTEP_ERROR_UNSUPPORTED,
           "bf16 head dim 96 was accepted%s");
    expect(std::strstr(onestep_last_error_message(),
                       "onestep_attention_forward_typed(B=1, H=1, Tq=4, Tk=4, D=96, dtype=bfloat16)") != nullptr,
           "message does not name the kernel, shapes and dtype: %s", onestep_last_error_message());
    expect(onestep_attention_forward_qkv_typed(nullptr, nullptr, b.p, b.p, 1, 1, 4, 32, nullptr, 0.f, ONESTEP_FLOAT32,
                                               nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "a null packed qkv was accepted%s");
    expect(std::strstr(onestep_last_error_message(), "onestep_attention_forward_qkv_typed(B=1, H=1, Tq=4, Tk=4, D=32)")
               != nullptr, "message does not name the packed kernel and shapes: %s", onestep_last_error_message());
    expect(onestep_attention_forward_qkv_typed(b.p + 1, nullptr, b.p, b.p, 1, 1, 4, 32, nullptr, 0.f, ONESTEP_FLOAT32,
                                               nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT,
           "a misaligned packed qkv was accepted%s");
}

}  // namespace

// A head dim the kernels lack (D = 8, 40, 100) through zero-padded heads: onestep_split_heads_padded_typed to
// (B, H, T, Dp), the Dp kernels with softmax_scale 1/sqrt(D), onestep_merge_heads_padded_typed back to tokens; forward
// and backward against the double reference at D. This is how the Java backend runs such heads on the device.
void check_padded(int D, uint64_t seed) {
    const Case c{2, 3, 29, 29, D, 1.0, false};
    const int Dp = D <= 32 ? 32 : D <= 64 ? 64 : 128, T = c.Tq, N = c.B, H = c.H;
    std::printf("  padded D=%d -> Dp=%d\n", D, Dp);
    ktest::Rng rng(seed);
    vector<float> q, k, v;
    vector<int> kv_len;
    make_inputs(c, rng, q, k, v, kv_len);
    vector<float> dout = rng.normals(q.size());
    // The engine's token layout (N, T, H*D) of the reference's (B, H, T, D) tensors (to_tokens), and back.
    auto relayout = [&](const float* src, bool to_tokens) {
        vector<float> out(size_t(N) * H * T * D);
        for (int n = 0; n < N; n++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < T; i++)
                    for (int d = 0; d < D; d++) {
                        size_t tok = ((size_t(n) * T + i) * H + h) * D + d, hd = ((size_t(n) * H + h) * T + i) * D + d;
                        if (to_tokens) out[tok] = src[hd]; else out[hd] = src[tok];
                    }
        return out;
    };
    auto tokens = [&](const vector<float>& heads) { return relayout(heads.data(), true); };
    auto heads_of = [&](const float* tok) { return relayout(tok, false); };
    const size_t padded = size_t(N) * H * T * Dp;
    Buf tq(tokens(q)), tk(tokens(k)), tv(tokens(v)), tdo(tokens(dout));
    Buf pq(padded, NAN), pk(padded, NAN), pv(padded, NAN), po(padded, NAN), pdo(padded, NAN), lse(size_t(N) * H * T, NAN);
    Buf pdq(padded, NAN), pdk(padded, NAN), pdv(padded, NAN), delta(lse.n, NAN), to(q.size(), NAN);
    Buf tdq(q.size(), NAN), tdk(q.size(), NAN), tdv(q.size(), NAN);
    const float scale = float(1.0 / std::sqrt(double(D)));
    bool fine = true;
    auto split = [&](const Buf& from, Buf& to_) {
        fine &= ok(onestep_split_heads_padded_typed(from.p, to_.p, N, T, H, D, Dp, ONESTEP_FLOAT32, nullptr), "split: %s");
    };
    auto merge = [&](const Buf& from, Buf& to_) {
        fine &= ok(onestep_merge_heads_padded_typed(from.p, to_.p, N, T, H, D, Dp, ONESTEP_FLOAT32, nullptr), "merge: %s");
    };
    split(tq, pq);
    split(tk, pk);
    split(tv, pv);
    split(tdo, pdo);
    fine &= ok(onestep_attention_forward(pq.p, pk.p, pv.p, po.p, lse.p, N, H, T, T, Dp, nullptr, scale, nullptr),
               "padded forward: %s");
    merge(po, to);
    fine &= ok(onestep_attention_backward(pq.p, pk.p, pv.p, po.p, pdo.p, lse.p, delta.p, pdq.p, pdk.p, pdv.p, N, H, T, T,
                                          Dp, nullptr, scale, nullptr),
               "padded backward: %s");
    merge(pdq, tdq);
    merge(pdk, tdk);
    merge(pdv, tdv);
    if (!fine || !ktest::sync()) return;
    vector<double> o, l, gq, gk, gv;
    reference(c, q, k, v, kv_len, 1.0 / std::sqrt(double(D)), o, l);
    reference_backward(c, q, k, v, dout, kv_len, 1.0 / std::sqrt(double(D)), gq, gk, gv);
    expect_close("padded o", heads_of(to.p).data(), o.data(), o.size(), 2e-5, 2e-4);
    expect_lse("padded lse", lse, l);
    const double tol = 5e-5 * std::sqrt(double(T));
    expect_close("padded dq", heads_of(tdq.p).data(), gq.data(), gq.size(), tol, 1e-3);
    expect_close("padded dk", heads_of(tdk.p).data(), gk.data(), gk.size(), tol, 1e-3);
    expect_close("padded dv", heads_of(tdv.p).data(), gv.data(), gv.size(), tol, 1e-3);
}

// The token-layout forward (onestep_attention_forward_tokens_typed) against the head layout: the same inputs relaid
// to (B, T, H*D) must give the same bits (o relaid back, lse as is) in every dtype, on ragged tiles, cross attention
// and key lengths. The head layout is itself checked against the double reference above.
using layout_ref::relaid;

// A 256-byte-aligned device-like copy of elements E (a float's bits, or a 16-bit value): the kernels' vector loads
// need 16 bytes.
template <typename E>
struct Bits {
    E* p;
    size_t n;
    explicit Bits(const vector<E>& from)
        : p(static_cast<E*>(std::aligned_alloc(256, (from.size() * sizeof(E) + 255) / 256 * 256))), n(from.size()) {
        std::memcpy(p, from.data(), n * sizeof(E));
    }
    Bits(const Bits&) = delete;
    Bits& operator=(const Bits&) = delete;
    ~Bits() { std::free(p); }
};

// Both layouts on the same elements E: o must match bit for bit, lse too.
template <typename E>
void compare_layouts(const Case& c, onestep_dtype dtype, const vector<E>& q, const vector<E>& k, const vector<E>& v,
                     const int* lens) {
    using Bits = ::Bits<E>;
    Bits bq(q), bk(k), bv(v), bo(vector<E>(q.size(), E(~E(0))));  // all-ones: NaN in every format
    Bits tq(relaid(q, c.B, c.H, c.Tq, c.D, true)), tk(relaid(k, c.B, c.H, c.Tk, c.D, true));
    Bits tv(relaid(v, c.B, c.H, c.Tk, c.D, true)), to(vector<E>(q.size(), E(~E(0))));
    Buf lse_heads(size_t(c.B) * c.H * c.Tq, NAN), lse_tokens(lse_heads.n, NAN);
    if (!ok(onestep_attention_forward_typed(bq.p, bk.p, bv.p, bo.p, lse_heads.p, c.B, c.H, c.Tq, c.Tk, c.D, lens, 0.f,
                                            dtype, nullptr), "heads: %s") ||
        !ok(onestep_attention_forward_tokens_typed(tq.p, tk.p, tv.p, to.p, lse_tokens.p, c.B, c.H, c.Tq, c.Tk, c.D,
                                                   lens, 0.f, dtype, nullptr), "tokens: %s") ||
        !ktest::sync())
        return;
    const vector<E> back = relaid(vector<E>(to.p, to.p + to.n), c.B, c.H, c.Tq, c.D, false);
    expect(vector<E>(bo.p, bo.p + bo.n) == back, "tokens layout: o differs from the head layout's%s", "");
    expect(std::memcmp(lse_heads.p, lse_tokens.p, lse_heads.n * 4) == 0, "tokens layout: lse differs%s", "");
}

// A case's inputs in the dtype's elements (a float's bits, or 16-bit values): body(as, q, k, v, lens, rng), where
// as(x) converts further vectors the same way and rng has drawn the inputs.
template <class Body>
void in_dtype(const char* what, const Case& c, onestep_dtype dtype, uint64_t seed, Body&& body) {
    std::printf("  %s %s B=%d H=%d Tq=%d Tk=%d D=%d kv_len=%d\n", what, dtype == ONESTEP_FLOAT32 ? "fp32"
                : dtype == ONESTEP_FLOAT16 ? "fp16" : "bf16", c.B, c.H, c.Tq, c.Tk, c.D, c.use_kv_len);
    ktest::Rng rng(seed);
    vector<float> q, k, v;
    vector<int> kv_len;
    make_inputs(c, rng, q, k, v, kv_len);
    const int* lens = c.use_kv_len ? kv_len.data() : nullptr;
    if (dtype == ONESTEP_FLOAT32) {
        auto as = [](vector<float>& x) {
            vector<uint32_t> out(x.size());
            std::memcpy(out.data(), x.data(), x.size() * 4);
            return out;
        };
        body(as, as(q), as(k), as(v), lens, rng);
    } else {
        const ktest::Format16& f = dtype == ONESTEP_FLOAT16 ? ktest::kHalf : ktest::kBf16;
        auto as = [&f](vector<float>& x) { return narrow(f, x); };
        body(as, as(q), as(k), as(v), lens, rng);
    }
}

void check_tokens(const Case& c, onestep_dtype dtype, uint64_t seed) {
    in_dtype("tokens", c, dtype, seed, [&](auto, const auto& q, const auto& k, const auto& v, const int* lens,
                                           ktest::Rng&) { compare_layouts(c, dtype, q, k, v, lens); });
}

// The attention that takes q, k, v's pending biases (onestep_attention_forward_tokens_biased_typed) against adding
// them first with onestep_add_per_channel_typed and attending on the sums: the same bits of o and lse, in every
// dtype (fp32 on the portable kernel, fp16/bf16 on tensor cores), for every subset of the three biases.
template <typename E>
void compare_biased(const Case& c, onestep_dtype dtype, const vector<E>& q, const vector<E>& k, const vector<E>& v,
                    const vector<E> (&bias)[3], const int* lens) {
    const int HD = c.H * c.D;
    const long long rows[3] = {(long long)c.B * c.Tq, (long long)c.B * c.Tk, (long long)c.B * c.Tk};
    for (int subset = 1; subset < 8; subset++) {
        Bits<E> x[3] = {Bits<E>(q), Bits<E>(k), Bits<E>(v)}, summed[3] = {Bits<E>(q), Bits<E>(k), Bits<E>(v)};
        Bits<E> b[3] = {Bits<E>(bias[0]), Bits<E>(bias[1]), Bits<E>(bias[2])};
        for (int i = 0; i < 3; i++)
            if (subset >> i & 1)
                ok(onestep_add_per_channel_typed(x[i].p, b[i].p, summed[i].p, 1, rows[i], HD, dtype, nullptr),
                   "add_per_channel: %s");
        Bits<E> o_ref(vector<E>(q.size(), E(~E(0)))), o(vector<E>(q.size(), E(~E(0))));
        Buf lse_ref(size_t(c.B) * c.H * c.Tq, NAN), lse(lse_ref.n, NAN);
        const void* bp[3];
        for (int i = 0; i < 3; i++) bp[i] = subset >> i & 1 ? b[i].p : nullptr;
        if (!ok(onestep_attention_forward_tokens_typed(summed[0].p, summed[1].p, summed[2].p, o_ref.p, lse_ref.p, c.B,
                                                       c.H, c.Tq, c.Tk, c.D, lens, 0.f, dtype, nullptr), "unfused: %s") ||
            !ok(onestep_attention_forward_tokens_biased_typed(x[0].p, bp[0], x[1].p, bp[1], x[2].p, bp[2], o.p, lse.p,
                                                              c.B, c.H, c.Tq, c.Tk, c.D, lens, 0.f, dtype, nullptr),
                "biased: %s") ||
            !ktest::sync())
            return;
        const char* which[8] = {"", "q", "k", "q, k", "v", "q, v", "k, v", "q, k, v"};
        expect(std::memcmp(o.p, o_ref.p, q.size() * sizeof(E)) == 0, "biased attention (biases of %s): o differs",
               which[subset]);
        expect(std::memcmp(lse.p, lse_ref.p, lse.n * 4) == 0, "biased attention (biases of %s): lse differs",
               which[subset]);
    }
}

// A case's inputs (in_dtype) with three random per-feature biases of H*D values each, in the same elements:
// compare(q, k, v, bias, lens).
template <class Compare>
void with_biases(const char* what, const Case& c, onestep_dtype dtype, uint64_t seed, Compare&& compare) {
    in_dtype(what, c, dtype, seed, [&](auto as, const auto& q, const auto& k, const auto& v, const int* lens,
                                       ktest::Rng& rng) {
        vector<float> b[3];
        for (auto& x : b) x = rng.normals(size_t(c.H) * c.D);
        using Elems = std::decay_t<decltype(q)>;
        const Elems bias[3] = {as(b[0]), as(b[1]), as(b[2])};
        compare(q, k, v, bias, lens);
    });
}

void check_biased(const Case& c, onestep_dtype dtype, uint64_t seed) {
    with_biases("biased", c, dtype, seed, [&](const auto& q, const auto& k, const auto& v, const auto& bias,
                                              const int* lens) { compare_biased(c, dtype, q, k, v, bias, lens); });
}

// The attention on one packed (B, T, 3*H*D) projection (onestep_attention_forward_qkv_typed) against the
// three-tensor entry on its thirds (and the packed bias's thirds): the same bits of o and lse, with and without the
// bias. Self-attention only (Tq = Tk), as one projection gives all three.
template <typename E>
void compare_packed(const Case& c, onestep_dtype dtype, const vector<E>& q, const vector<E>& k, const vector<E>& v,
                    const vector<E> (&bias)[3], const int* lens) {
    const size_t HD = size_t(c.H) * c.D, rows = size_t(c.B) * c.Tq;
    vector<E> packed(3 * rows * HD), packed_bias(3 * HD);
    for (size_t r = 0; r < rows; r++)
        for (size_t f = 0; f < HD; f++) {
            packed[(3 * r + 0) * HD + f] = q[r * HD + f];
            packed[(3 * r + 1) * HD + f] = k[r * HD + f];
            packed[(3 * r + 2) * HD + f] = v[r * HD + f];
        }
    for (int i = 0; i < 3; i++) std::copy(bias[i].begin(), bias[i].end(), packed_bias.begin() + i * HD);
    for (bool with_bias : {false, true}) {
        Bits<E> x[3] = {Bits<E>(q), Bits<E>(k), Bits<E>(v)}, b[3] = {Bits<E>(bias[0]), Bits<E>(bias[1]), Bits<E>(bias[2])};
        Bits<E> qkv(packed), qkv_b(packed_bias);
        Bits<E> o_ref(vector<E>(q.size(), E(~E(0)))), o(vector<E>(q.size(), E(~E(0))));
        Buf lse_ref(size_t(c.B) * c.H * c.Tq, NAN), lse(lse_ref.n, NAN);
        if (!ok(onestep_attention_forward_tokens_biased_typed(x[0].p, with_bias ? b[0].p : nullptr, x[1].p,
                                                              with_bias ? b[1].p : nullptr, x[2].p,
                                                              with_bias ? b[2].p : nullptr, o_ref.p, lse_ref.p, c.B,
                                                              c.H, c.Tq, c.Tk, c.D, lens, 0.f, dtype, nullptr),
                "three tensors: %s") ||
            !ok(onestep_attention_forward_qkv_typed(qkv.p, with_bias ? qkv_b.p : nullptr, o.p, lse.p, c.B, c.H, c.Tq,
                                                    c.D, lens, 0.f, dtype, nullptr),
                "packed: %s") ||
            !ktest::sync())
            return;
        expect(std::memcmp(o.p, o_ref.p, q.size() * sizeof(E)) == 0, "packed qkv attention (%s): o differs",
               with_bias ? "with bias" : "no bias");
        expect(std::memcmp(lse.p, lse_ref.p, lse.n * 4) == 0, "packed qkv attention (%s): lse differs",
               with_bias ? "with bias" : "no bias");
    }
}

void check_packed(const Case& c, onestep_dtype dtype, uint64_t seed) {
    with_biases("packed qkv", c, dtype, seed, [&](const auto& q, const auto& k, const auto& v, const auto& bias,
                                                  const int* lens) { compare_packed(c, dtype, q, k, v, bias, lens); });
}

// q, k, v as (B, H, T, D) blocks packed into one (B, T, 3*H*D) projection: each token's H*D q features, then its k
// and its v features (onestep_attention_forward_qkv_typed's layout). Self-attention: c.Tq tokens.
vector<float> pack_qkv(const Case& c, const vector<float> (&x)[3]) {
    const int HD = c.H * c.D, T = c.Tq;
    vector<float> packed(size_t(c.B) * T * 3 * HD);
    for (int j = 0; j < 3; j++)
        for (int b = 0; b < c.B; b++)
            for (int h = 0; h < c.H; h++)
                for (int t = 0; t < T; t++)
                    for (int d = 0; d < c.D; d++)
                        packed[(size_t(b) * T + t) * 3 * HD + j * HD + h * c.D + d] =
                            x[j][((size_t(b) * c.H + h) * T + t) * c.D + d];
    return packed;
}

// A case's q, k, v (B, H, T, D) rounded to the format and packed into one (B, T, 3*H*D) projection, with a packed
// bias (spread 0.5, rounded); x[j] then holds what the kernels read: each value plus its bias, rounded once.
struct PackedInputs {
    vector<float> x[3], packed, bias;
    vector<int> kv_len;
};
PackedInputs packed_inputs(const Case& c, const ktest::Format16& f, ktest::Rng& rng) {
    PackedInputs in;
    make_inputs(c, rng, in.x[0], in.x[1], in.x[2], in.kv_len);
    const int HD = c.H * c.D, T = c.Tq;
    in.bias = rng.normals(3 * size_t(HD), 0, 0.5);
    narrow(f, in.bias);
    for (vector<float>& xj : in.x) narrow(f, xj);
    in.packed = pack_qkv(c, in.x);
    for (int j = 0; j < 3; j++)
        for (size_t i = 0; i < in.x[j].size(); i++) {
            const int h = int(i / (size_t(T) * c.D)) % c.H, d = int(i % c.D);
            in.x[j][i] = float(ktest::round_to(f, double(in.x[j][i]) + in.bias[j * HD + h * c.D + d]));
        }
    return in;
}

// The split-keys kernel (onestep_attention_forward_qkv_kernel_typed, kernel 1: 16 query rows a block, the key tiles
// dealt to 4 warps and merged in shared memory) on a packed (B, T, 3*H*D) projection with its bias, against the double
// reference on the biased inputs rounded to the format as the kernel rounds them (q + b in fp32, then once to T): the
// typed forward's bound (P rounded before P V: u * max|v| absolute, o's rounding u relative). Also kernel 0 through
// the same entry: the bits of onestep_attention_forward_qkv_typed.
void check_split(const Case& c, onestep_dtype dtype, uint64_t seed) {
    const ktest::Format16& f = dtype == ONESTEP_FLOAT16 ? ktest::kHalf : ktest::kBf16;
    std::printf("  split keys %s B=%d H=%d T=%d D=%d qk_std=%g kv_len=%d\n", dtype == ONESTEP_FLOAT16 ? "fp16" : "bf16",
                c.B, c.H, c.Tq, c.D, c.qk_std, c.use_kv_len);
    ktest::Rng rng(seed);
    PackedInputs in = packed_inputs(c, f, rng);
    vector<float>(&x)[3] = in.x;
    const vector<int>& kv_len = in.kv_len;
    const int HD = c.H * c.D, T = c.Tq;
    Buf16 qkv(narrow(f, in.packed)), qkv_b(narrow(f, in.bias)), o(size_t(c.B) * T * HD), o0(o.n);
    Buf lse(size_t(c.B) * c.H * T, NAN), lse0(lse.n, NAN);
    const int* lens = c.use_kv_len ? kv_len.data() : nullptr;
    if (!ok(onestep_attention_forward_qkv_kernel_typed(qkv.p, qkv_b.p, o.p, lse.p, c.B, c.H, T, c.D, lens, 0.f, 1,
                                                       dtype, nullptr), "split keys: %s") ||
        !ok(onestep_attention_forward_qkv_kernel_typed(qkv.p, qkv_b.p, o0.p, lse0.p, c.B, c.H, T, c.D, lens, 0.f, 0,
                                                       dtype, nullptr), "kernel 0: %s") ||
        !ktest::sync())
        return;
    vector<double> want_o, want_lse;
    reference(c, x[0], x[1], x[2], kv_len, 1.0 / std::sqrt(double(c.D)), want_o, want_lse);
    vector<float> got = widen(f, o.p, o.n), heads(got.size());
    for (int b = 0; b < c.B; b++)
        for (int h = 0; h < c.H; h++)
            for (int t = 0; t < T; t++)
                for (int d = 0; d < c.D; d++)
                    heads[((size_t(b) * c.H + h) * T + t) * c.D + d] = got[(size_t(b) * T + t) * HD + h * c.D + d];
    double vmax = 0;
    for (float e : x[2]) vmax = std::max(vmax, double(std::fabs(e)));
    const double u = ktest::unit_roundoff(f);
    expect_close("split keys o", heads.data(), want_o.data(), heads.size(), 2e-5 + u * vmax, 2e-4 + u);
    expect_lse("split keys lse", lse, want_lse);
    Buf16 o_ref(o.n);
    Buf lse_ref(lse.n, NAN);
    ok(onestep_attention_forward_qkv_typed(qkv.p, qkv_b.p, o_ref.p, lse_ref.p, c.B, c.H, T, c.D, lens, 0.f, dtype,
                                           nullptr), "packed: %s");
    ktest::sync();
    expect(std::memcmp(o0.p, o_ref.p, o.n * 2) == 0 && std::memcmp(lse0.p, lse_ref.p, lse.n * 4) == 0,
           "kernel 0 gives the bits of onestep_attention_forward_qkv_typed%s");
}

// The pipelined kernel (kernel 2: K/V tiles double-buffered by cp.async, B fragments by ldmatrix) and the wide one
// (kernel 3: the same with two 16-row m-tiles a warp, 128-row blocks) must give kernel 0's bits, o and lse, with the
// packed projection's bias and without it (the two staging paths: the copies as they land, or each thread's chunks
// biased after its wait). The emulation keeps every cp.async in flight until its wait_group and poisons its
// destination, so a tile read before its barrier, or refilled while still read, shows up here; for the wide kernel,
// a second m-tile given the first one's rows or state does too.
void check_pipelined(const Case& c, onestep_dtype dtype, int kernel, uint64_t seed) {
    const ktest::Format16& f = dtype == ONESTEP_FLOAT16 ? ktest::kHalf : ktest::kBf16;
    const char* name = kernel == 3 ? "wide" : "pipelined";
    std::printf("  %s %s B=%d H=%d T=%d D=%d qk_std=%g kv_len=%d\n", name, dtype == ONESTEP_FLOAT16 ? "fp16" : "bf16",
                c.B, c.H, c.Tq, c.D, c.qk_std, c.use_kv_len);
    ktest::Rng rng(seed);
    vector<float> x[3];
    vector<int> kv_len;
    make_inputs(c, rng, x[0], x[1], x[2], kv_len);
    const int HD = c.H * c.D, T = c.Tq;
    vector<float> packed = pack_qkv(c, x);
    vector<float> bias_values = rng.normals(3 * size_t(HD), 0, 0.5);
    Buf16 qkv(narrow(f, packed)), qkv_b(narrow(f, bias_values));
    const int* lens = c.use_kv_len ? kv_len.data() : nullptr;
    for (const void* bias : {static_cast<const void*>(nullptr), static_cast<const void*>(qkv_b.p)}) {
        Buf16 o(size_t(c.B) * T * HD), o0(o.n);
        Buf lse(size_t(c.B) * c.H * T, NAN), lse0(lse.n, NAN);
        if (!ok(onestep_attention_forward_qkv_kernel_typed(qkv.p, bias, o.p, lse.p, c.B, c.H, T, c.D, lens, 0.f, kernel,
                                                           dtype, nullptr), "kernel 2 or 3: %s") ||
            !ok(onestep_attention_forward_qkv_kernel_typed(qkv.p, bias, o0.p, lse0.p, c.B, c.H, T, c.D, lens, 0.f, 0,
                                                           dtype, nullptr), "kernel 0: %s") ||
            !ktest::sync())
            return;
        size_t differ = 0;
        for (size_t i = 0; i < o.n; i++) differ += std::memcmp(o.p + i, o0.p + i, 2) != 0;
        for (size_t i = 0; i < lse.n; i++) differ += std::memcmp(lse.p + i, lse0.p + i, 4) != 0;
        size_t nans = 0;
        for (size_t i = 0; i < lse.n; i++) nans += std::isnan(lse.p[i]);
        char what[160];
        std::snprintf(what, sizeof what, "%s %s bias: %zu of %zu values differ from kernel 0's bits, %zu lse NaN",
                      name, bias ? "with" : "without", differ, o.n + lse.n, nans);
        expect(differ == 0 && nans == 0, "%s", what);
    }
}

void check_split_refusals() {
    Buf16 b(3 * 4 * 128);
    Buf l(16, 0.f);
    // Kernels 1-3 take fp16/bf16 with D 32 or 64: D = 128 is refused naming the kernel, and fp32.
    const struct {
        int kernel;
        const char* name;
        onestep_dtype dtype;  // of the D = 128 call
    } kernels[] = {{1, "split", ONESTEP_FLOAT16}, {2, "pipelined", ONESTEP_BFLOAT16}, {3, "wide", ONESTEP_FLOAT16}};
    for (const auto& k : kernels) {
        char what[96];
        std::snprintf(what, sizeof what, "kernel %d (%s) refuses D = 128 by name: %%s", k.kernel, k.name);
        expect(onestep_attention_forward_qkv_kernel_typed(b.p, nullptr, b.p, l.p, 1, 1, 4, 128, nullptr, 0.f, k.kernel,
                                                          k.dtype, nullptr) == ONESTEP_ERROR_UNSUPPORTED &&
                   std::strstr(onestep_last_error_message(), "D=128") &&
                   std::strstr(onestep_last_error_message(), k.name),
               what, onestep_last_error_message());
        std::snprintf(what, sizeof what, "kernel %d (%s) refuses fp32: %%s", k.kernel, k.name);
        expect(onestep_attention_forward_qkv_kernel_typed(b.p, nullptr, b.p, l.p, 1, 1, 4, 32, nullptr, 0.f, k.kernel,
                                                          ONESTEP_FLOAT32, nullptr) == ONESTEP_ERROR_UNSUPPORTED,
               what, onestep_last_error_message());
    }
    // The tensor-core kernels store o in 32-bit pairs: an o 2 bytes off is refused by name (it came back as a bare
    // cudaErrorInvalidValue), for each kernel asked for by number.
    Buf16 q(3 * 16 * 32), o(16 * 32 + 2);
    for (int kernel : {1, 2, 3}) {
        char what[64];
        std::snprintf(what, sizeof what, "kernel %d refuses an o 2 bytes off: %%s", kernel);
        expect(onestep_attention_forward_qkv_kernel_typed(q.p, nullptr, o.p + 1, l.p, 1, 1, 16, 32, nullptr, 0.f,
                                                          kernel, ONESTEP_FLOAT16, nullptr) ==
                       ONESTEP_ERROR_INVALID_ARGUMENT &&
                   std::strstr(onestep_last_error_message(), "o must be 4-byte aligned"),
               what, onestep_last_error_message());
    }
    expect(onestep_attention_forward_qkv_kernel_typed(b.p, nullptr, b.p, l.p, 1, 1, 4, 32, nullptr, 0.f, 4,
                                                      ONESTEP_FLOAT16, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "not 4"),
           "an unknown kernel is refused: %s", onestep_last_error_message());
}

// The attention with its output projection and residual in one launch (onestep_attention_residual_qkv_typed) against
// the double reference: the attention on the biased inputs as the kernel reads them (check_split's rounding), O rounded
// to the format as the kernel stores it in shared memory, then O W + out_bias + z. Bound per element: O's error (the
// typed forward's 2e-5 + u max|v| absolute, u |o| relative for the P and O roundings) through |W|'s column sums, plus
// y's own rounding (u relative). And the L2 error of the projection's part, y - z - bias, at most 2u times the scale
// of O's rounding errors carried through W (sqrt of the sum over y of sum_ci w^2 (o^2 + mean v^2): O's own rounding
// and P's), which a wrong head, column or row (errors the size of O W itself) cannot meet. Variants: z = y in place, no z, no bias, no qkv bias.
void check_residual(const Case& c, onestep_dtype dtype, uint64_t seed) {
    const ktest::Format16& f = dtype == ONESTEP_FLOAT16 ? ktest::kHalf : ktest::kBf16;
    std::printf("  attention + to_out %s B=%d H=%d T=%d D=%d qk_std=%g\n", dtype == ONESTEP_FLOAT16 ? "fp16" : "bf16",
                c.B, c.H, c.Tq, c.D, c.qk_std);
    ktest::Rng rng(seed);
    PackedInputs in = packed_inputs(c, f, rng);  // no key lengths in this case
    vector<float>(&x)[3] = in.x;
    vector<float>&packed = in.packed, &bias = in.bias;
    const vector<int>& kv_len = in.kv_len;
    const int HD = c.H * c.D, T = c.Tq;
    const size_t rows = size_t(c.B) * T, C = size_t(HD);
    vector<float> w = rng.normals(C * C, 0, 1 / std::sqrt(double(C)));
    vector<float> out_bias = rng.normals(C, 0, 0.5), z = rng.normals(rows * C);
    narrow(f, w);
    vector<float> w_krsc(C * C);  // w is to_out's (in, out) weight; the kernel reads it as [out][in]
    for (size_t ci = 0; ci < C; ci++)
        for (size_t co = 0; co < C; co++) w_krsc[co * C + ci] = w[ci * C + co];
    Buf16 qkv(narrow(f, packed)), qkv_b(narrow(f, bias)), w_out(narrow(f, w_krsc)), ob(narrow(f, out_bias));
    Buf16 zb(narrow(f, z));
    vector<double> o, lse;
    reference(c, x[0], x[1], x[2], kv_len, 1.0 / std::sqrt(double(c.D)), o, lse);
    double vmax = 0, omax = 0, wsum = 0;
    for (float e : x[2]) vmax = std::max(vmax, double(std::fabs(e)));
    for (double e : o) omax = std::max(omax, std::fabs(e));
    for (size_t co = 0; co < C; co++) {
        double s = 0;
        for (size_t ci = 0; ci < C; ci++) s += std::fabs(w[ci * C + co]);
        wsum = std::max(wsum, s);
    }
    const double u = ktest::unit_roundoff(f), o_err = 2e-5 + u * vmax + u * omax;
    double vrms2 = 0;
    for (float e : x[2]) vrms2 += double(e) * e / double(x[2].size());
    // variant 0: everything; 1: z = y (in place); 2: no z; 3: no out bias; 4: no qkv bias (the reference then reads
    // the unbiased values). Variant 0 on each kernel (1, 2 and 4 warps a head: 0, 5, 6), the others on one each.
    for (int run = 0; run < 7; run++) {
        static const int kWarpsOf[7] = {1, 2, 4, 1, 2, 2, 4};
        const int variant = run < 5 ? run : 0, warps = kWarpsOf[run];
        const bool has_z = variant != 2, has_b = variant != 3, has_qb = variant != 4;
        vector<double> want(rows * C, 0.0), proj(rows * C, 0.0);
        double spread2 = 0;  // sum over y of sum_ci w^2 (o^2 + mean v^2): the scale of O's rounding errors through W
        vector<double> oh = o;
        if (!has_qb) {
            vector<float> raw[3];
            for (int j = 0; j < 3; j++) raw[j] = vector<float>(x[j].size());
            for (int j = 0; j < 3; j++)  // the packed values without their bias (already in the format)
                for (int b = 0; b < c.B; b++)
                    for (int h = 0; h < c.H; h++)
                        for (int t = 0; t < T; t++)
                            for (int d = 0; d < c.D; d++)
                                raw[j][((size_t(b) * c.H + h) * T + t) * c.D + d] =
                                    packed[(size_t(b) * T + t) * 3 * C + j * C + h * c.D + d];
            reference(c, raw[0], raw[1], raw[2], kv_len, 1.0 / std::sqrt(double(c.D)), oh, lse);
        }
        for (int b = 0; b < c.B; b++)
            for (int t = 0; t < T; t++) {
                const size_t r = size_t(b) * T + t;
                for (size_t co = 0; co < C; co++) {
                    double s = 0;
                    for (int h = 0; h < c.H; h++)
                        for (int d = 0; d < c.D; d++) {
                            const double oe = ktest::round_to(f, oh[((size_t(b) * c.H + h) * T + t) * c.D + d]);
                            const double we = w[(size_t(h) * c.D + d) * C + co];
                            s += oe * we;
                            spread2 += we * we * (oe * oe + vrms2);
                        }
                    proj[r * C + co] = s;
                    want[r * C + co] = s + (has_b ? out_bias[co] : 0.0) + (has_z ? z[r * C + co] : 0.0);
                }
            }
        Buf16 y(rows * C);
        if (variant == 1) std::memcpy(y.p, zb.p, rows * C * 2);
        const void* zp = variant == 1 ? static_cast<const void*>(y.p) : has_z ? zb.p : nullptr;
        if (!ok(onestep_attention_residual_qkv_typed(qkv.p, has_qb ? qkv_b.p : nullptr, w_out.p, has_b ? ob.p : nullptr,
                                                     zp, y.p, c.B, c.H, T, c.D, 0.f, warps, dtype, nullptr),
                "attention + to_out: %s") ||
            !ktest::sync())
            return;
        vector<float> got = widen(f, y.p, y.n);
        char what[96];
        std::snprintf(what, sizeof what, "attention + to_out y (variant %d, %d warps a head)", variant, warps);
        expect_close(what, got.data(), want.data(), want.size(), wsum * o_err + 1e-5, u + 1e-6);
        double err2 = 0, ref2 = 0;
        for (size_t i = 0; i < want.size(); i++) {
            const double part = got[i] - (want[i] - proj[i]);  // the kernel's projection, bias and z taken off
            err2 += (part - proj[i]) * (part - proj[i]);
            ref2 += proj[i] * proj[i];
        }
        const double rel = std::sqrt(err2 / spread2);
        char line[160];
        std::snprintf(line, sizeof line, "attention + to_out (variant %d, %d warps a head): L2 error of O W %.3g of "
                      "its scale, at most 2u = %.3g", variant, warps, rel, 2 * u);
        expect(rel <= 2 * u, "%s", line);
        if (variant == 0)
            std::printf("    %d warps a head: L2 error of O W %.3g of its rounding scale, %.3g relative (u = %.3g)\n",
                        warps, rel, std::sqrt(err2 / ref2), u);
    }
}

// The weight prefetch: the attention with to_out gives the same bits with it off; with it on, the first sample's
// blocks ask for W.
void check_residual_prefetch() {
    const ktest::Type16 t{ktest::kHalf, ONESTEP_FLOAT16, "fp16"};
    ktest::Rng rng(28);
    const int B = 1, H = 2, T = 40, D = 32, C = H * D;
    ktest::Input16 qkv(t, rng, size_t(B) * T * 3 * C), w(t, rng, size_t(C) * C, 0.1);
    Buf16 y_on(size_t(B) * T * C), y_off(size_t(B) * T * C);
    ktest::check_prefetch_switch("attention + to_out", y_on.p, y_off.p, y_on.n * 2, [&](void* y) {
        return onestep_attention_residual_qkv_typed(qkv.b.p, nullptr, w.b.p, nullptr, nullptr, y, B, H, T, D,
                                                    1.0f / std::sqrt(float(D)), 1, t.dt, nullptr);
    });
}

void check_residual_refusals() {
    Buf16 qkv(3 * 4 * 128), y(4 * 128), w(128 * 128);
    expect(onestep_attention_residual_qkv_typed(qkv.p, nullptr, w.p, nullptr, nullptr, y.p, 1, 1, 4, 128, 0.f, 1,
                                                ONESTEP_FLOAT16, nullptr) == ONESTEP_ERROR_UNSUPPORTED &&
               std::strstr(onestep_last_error_message(), "D=128"),
           "attention + to_out refuses D = 128 by name: %s", onestep_last_error_message());
    expect(onestep_attention_residual_qkv_typed(qkv.p, nullptr, w.p, nullptr, nullptr, y.p, 1, 1, 4, 32, 0.f, 1,
                                                ONESTEP_FLOAT32, nullptr) == ONESTEP_ERROR_UNSUPPORTED,
           "attention + to_out refuses fp32: %s", onestep_last_error_message());
    expect(onestep_attention_residual_qkv_typed(qkv.p, nullptr, nullptr, nullptr, nullptr, y.p, 1, 1, 4, 32, 0.f, 1,
                                                ONESTEP_FLOAT16, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "w_krsc"),
           "attention + to_out refuses a null w_krsc by name: %s", onestep_last_error_message());
    expect(onestep_attention_residual_qkv_typed(qkv.p, nullptr, w.p, nullptr, nullptr, qkv.p + 64, 1, 1, 4, 32, 0.f,
                                                2, ONESTEP_BFLOAT16, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "overlap"),
           "attention + to_out refuses y over qkv: %s", onestep_last_error_message());
    expect(onestep_attention_residual_qkv_typed(qkv.p, nullptr, w.p, nullptr, nullptr, y.p + 1, 1, 1, 4, 32, 0.f, 4,
                                                ONESTEP_FLOAT16, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "aligned"),
           "attention + to_out refuses a misaligned y: %s", onestep_last_error_message());
    expect(onestep_attention_residual_qkv_typed(qkv.p, nullptr, w.p, nullptr, nullptr, y.p, 1, 1, 4, 32, 0.f, 3,
                                                ONESTEP_FLOAT16, nullptr) == ONESTEP_ERROR_INVALID_ARGUMENT &&
               std::strstr(onestep_last_error_message(), "not 3"),
           "attention + to_out refuses 3 warps a head by name: %s", onestep_last_error_message());
}

// A card with less shared memory than the H100 (the emulated device's opt-in limit lowered to 64 KiB through
// ONESTEP_EMU_MAX_SHARED_KB). The attention with its output projection at 4 warps a head needs more: refused by name
// as unsupported, not a CUDA error. The fp32 backward at D = 128 (74 KiB) fails in cudaFuncSetAttribute: that error is
// named, and the next call, which does nothing wrong, succeeds (it used to be handed the stale error).
void check_smaller_card() {
    setenv("ONESTEP_EMU_MAX_SHARED_KB", "64", 1);
    Buf16 qkv(3 * 16 * 64), w(64 * 64), y(16 * 64);
    expect(onestep_attention_residual_qkv_typed(qkv.p, nullptr, w.p, nullptr, nullptr, y.p, 1, 1, 16, 64, 0.f, 4,
                                                ONESTEP_FLOAT16, nullptr) == ONESTEP_ERROR_UNSUPPORTED &&
               std::strstr(onestep_last_error_message(), "4 warps a head needs") &&
               std::strstr(onestep_last_error_message(), "allows 65536"),
           "a 64 KiB card refuses attention + to_out at 4 warps a head by name: %s", onestep_last_error_message());
    const int n = 16 * 128;
    Buf q(n, 0.1f), k(n, 0.2f), v(n, 0.3f), o(n, 0.f), dout(n, 1.f), lse(16, 0.f), delta(16, 0.f), dq(n, 0.f),
        dk(n, 0.f), dv(n, 0.f);
    expect(onestep_attention_backward(q.p, k.p, v.p, o.p, dout.p, lse.p, delta.p, dq.p, dk.p, dv.p, 1, 1, 16, 16, 128,
                                      nullptr, 0.f, nullptr) == ONESTEP_ERROR_CUDA &&
               std::strstr(onestep_last_error_message(), "onestep_attention_backward("),
           "a 64 KiB card fails the D = 128 backward, naming it: %s", onestep_last_error_message());
    expect(onestep_scale(2.f, q.p, o.p, n, nullptr) == ONESTEP_OK,
           "the call after a failed one is not handed its error: %s", onestep_last_error_message());
    ktest::sync();
    expect(o.p[n - 1] == 0.2f, "and it ran (2 x 0.1)%s", "");
    unsetenv("ONESTEP_EMU_MAX_SHARED_KB");
}

int main() {
    const auto start = std::chrono::steady_clock::now();
    check_argument_errors();
    check_smaller_card();
    check_backward_reference_by_finite_differences();
    const Case cases[] = {
        {1, 1, 1, 1, 32, 1.0, false},      // one token
        {2, 3, 17, 45, 32, 1.0, false},    // ragged query and key tiles, cross attention
        {1, 2, 64, 64, 64, 1.0, false},    // whole tiles
        {1, 1, 33, 100, 128, 1.0, false},  // D = 128 (above 48 KiB of shared memory)
        {3, 2, 50, 70, 64, 1.0, true},     // per-batch key lengths, batch 0 fully masked
        {2, 1, 40, 33, 32, 4.0, true},     // scores of order +-100: overflows without the running max
        {1, 1, 20, 1100, 32, 1.0, false},  // many key tiles
        {1, 1, 16, 4096, 64, 1.0, false},  // the longest sequence the U-Net uses (64x64 tokens)
    };
    uint64_t seed = 100;
    for (const Case& c : cases) check_case(c, seed++);
    ktest::Rng rng(77);
    const int dims[] = {32, 64, 128};
    for (int i = 0; i < 4; i++)
        check_case(Case{rng.range(1, 2), rng.range(1, 3), rng.range(1, 90), rng.range(1, 90), dims[rng.range(0, 2)], 1.0,
                        rng.range(0, 1) == 1},
                   seed++);
    // fp16 and bf16 storage: ragged tiles, masks (a fully masked batch), large scores, every head dim.
    const Case typed[] = {
        {2, 3, 17, 45, 32, 1.0, false},
        {3, 2, 50, 70, 64, 1.0, true},
        {2, 1, 40, 33, 32, 4.0, true},
        {1, 1, 33, 100, 128, 1.0, false},
    };
    for (const Case& c : typed) {
        check_case_typed(c, ONESTEP_FLOAT16, seed++);
        check_case_typed(c, ONESTEP_BFLOAT16, seed++);
    }
    for (int D : {8, 40, 100}) check_padded(D, seed++);
    const Case tokens[] = {
        {2, 3, 17, 45, 32, 1.0, false},   // ragged tiles, cross attention
        {3, 2, 50, 70, 64, 1.0, true},    // key lengths, batch 0 fully masked
        {1, 4, 64, 64, 64, 1.0, false},   // the CIFAR config's heads (4 x 64 at 16x16 tokens, here 8x8)
        {2, 2, 33, 100, 128, 1.0, false},
    };
    for (const Case& c : tokens)
        for (onestep_dtype t : {ONESTEP_FLOAT32, ONESTEP_FLOAT16, ONESTEP_BFLOAT16}) check_tokens(c, t, seed++);
    for (const Case& c : {tokens[0], tokens[1], tokens[3]})
        for (onestep_dtype t : {ONESTEP_FLOAT32, ONESTEP_FLOAT16, ONESTEP_BFLOAT16}) check_biased(c, t, seed++);
    const Case packed[] = {
        {2, 3, 45, 45, 32, 1.0, false},   // ragged tiles
        {3, 2, 50, 50, 64, 1.0, true},    // key lengths, batch 0 fully masked
        {1, 4, 64, 64, 64, 1.0, false},   // the CIFAR config's heads
        {2, 2, 33, 33, 128, 1.0, false},
    };
    for (const Case& c : packed)
        for (onestep_dtype t : {ONESTEP_FLOAT32, ONESTEP_FLOAT16, ONESTEP_BFLOAT16}) check_packed(c, t, seed++);
    const Case split[] = {
        {1, 1, 1, 1, 32, 1.0, false},      // one token: three warps see no key
        {2, 3, 45, 45, 32, 1.0, false},    // ragged: the last tile partial, rows past T
        {3, 2, 50, 50, 64, 1.0, true},     // key lengths, batch 0 fully masked
        {2, 1, 70, 70, 32, 4.0, false},    // scores of order +-100: the merge's running max matters
        {1, 4, 256, 256, 64, 1.0, false},  // the CIFAR U-Net's 16x16 level at batch 1
    };
    for (const Case& c : split)
        for (onestep_dtype t : {ONESTEP_FLOAT16, ONESTEP_BFLOAT16}) check_split(c, t, seed++);
    const Case pipelined[] = {
        {1, 1, 1, 1, 32, 1.0, false},      // one token, one partial tile
        {2, 3, 45, 45, 32, 1.0, false},    // ragged: rows past T, a partial tile
        {3, 2, 150, 150, 64, 1.0, true},   // three tiles, key lengths ending mid-tile, batch 0 with no key
        {2, 1, 130, 130, 32, 4.0, false},  // scores of order +-100 over three tiles: the running max
        {1, 4, 256, 256, 64, 1.0, false},  // the CIFAR U-Net's 16x16 level: four whole tiles
        {1, 2, 200, 200, 32, 1.0, true},   // the wide kernel's second block partly past T (rows 128-199 of 256)
    };
    for (const Case& c : pipelined)
        for (onestep_dtype t : {ONESTEP_FLOAT16, ONESTEP_BFLOAT16})
            for (int kernel : {2, 3}) check_pipelined(c, t, kernel, seed++);
    check_split_refusals();
    const Case residual[] = {
        {1, 1, 1, 1, 32, 1.0, false},      // one token, one head: three warps idle
        {2, 3, 45, 45, 32, 1.0, false},    // ragged: rows past T, a partial key tile, three heads
        {2, 2, 70, 70, 32, 4.0, false},    // scores of order +-100 over three tiles: the running max
        {1, 5, 40, 40, 64, 1.0, false},    // five heads: warp 0 takes two
        {1, 8, 33, 33, 64, 1.0, false},    // C = 512: above 48 KiB of shared memory (the opt-in)
        {1, 4, 256, 256, 64, 1.0, false},  // the CIFAR U-Net's 16x16 level at batch 1
    };
    for (const Case& c : residual)
        for (onestep_dtype t : {ONESTEP_FLOAT16, ONESTEP_BFLOAT16}) check_residual(c, t, seed++);
    check_residual_refusals();
    check_residual_prefetch();
    return ktest::finish("test_attention", start);
}
