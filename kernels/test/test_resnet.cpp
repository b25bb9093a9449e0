// test_resnet: onestep_resnet_block_typed and onestep_resnet_block_concat_typed (src/resnet.cu), a whole ResnetBlock2D
// in one launch (a down or mid block's; an up block's on cat(h, skip) with its 1x1 shortcut), against a double
// reference that rounds where the kernel (and the unfused ops) store a tensor: norm1's output, conv1's output, norm2's
// output and y (resnet_ref.h, shared with dev/resnet_forward.cu). Runs in the emulation (clusters, distributed shared
// memory, cp.async and mma.sync) and, built as test_resnet_gpu, against the real library (run_gpu_checks.sh).
#include "onestep_runtime.h"
#include "resnet_ref.h"
#include "test_common.h"

using std::vector;

namespace {

using Type = ktest::Type16;

struct Case {
    int N, H, W, C, G;
    bool x_bias, add, add_bias, b1, b2;
    double offset;  // x's mean: the statistics' conditioning
};

// Whether a cluster of cl blocks takes C channels in groups of G: each block's C / cl channels whole groups.
bool fits(int C, int G, int cl) { return (C / cl) % (C / G) == 0; }

void check_case(const Type& t, ktest::Rng& rng, const Case& k, int cl) {
    std::printf("  %s N=%d %dx%d C=%d G=%d x_bias=%d add=%d add_bias=%d b1=%d b2=%d offset=%g, %d blocks\n", t.name,
                k.N, k.H, k.W, k.C, k.G, k.x_bias, k.add, k.add_bias, k.b1, k.b2, k.offset, cl);
    const int HW = k.H * k.W, C = k.C;
    const size_t nx = size_t(k.N) * HW * C, nw = size_t(C) * 9 * C;
    const float eps = 1e-5f;
    vector<float> xv = rng.normals(nx, k.offset, 1.0);
    ktest::Buf16 x(ktest::narrow(t.f, xv));
    vector<float> g1 = rng.normals(C, 1.0, 0.2), be1 = rng.normals(C, 0.0, 0.2), g2 = rng.normals(C, 1.0, 0.2),
                  be2 = rng.normals(C, 0.0, 0.2), xb = rng.normals(C, 0.0, 0.5), ad = rng.normals(size_t(k.N) * C, 0, 1),
                  adb = rng.normals(C, 0.0, 0.5), b1 = rng.normals(C, 0.0, 0.5), b2 = rng.normals(C, 0.0, 0.5),
                  w1 = rng.normals(nw, 0.0, 1.0 / std::sqrt(9.0 * C)), w2 = rng.normals(nw, 0.0, 1.0 / std::sqrt(9.0 * C));
    ktest::Buf16 G1(ktest::narrow(t.f, g1)), BE1(ktest::narrow(t.f, be1)), G2(ktest::narrow(t.f, g2)),
        BE2(ktest::narrow(t.f, be2)), XB(ktest::narrow(t.f, xb)), AD(ktest::narrow(t.f, ad)),
        ADB(ktest::narrow(t.f, adb)), B1(ktest::narrow(t.f, b1)), B2(ktest::narrow(t.f, b2)),
        W1(ktest::narrow(t.f, w1)), W2(ktest::narrow(t.f, w2));
    ktest::Buf16 y(nx);
    if (!ktest::ok(onestep_resnet_block_typed(x.p, k.x_bias ? XB.p : nullptr, k.add ? AD.p : nullptr,
                                       k.add_bias ? ADB.p : nullptr, G1.p, BE1.p, W1.p, k.b1 ? B1.p : nullptr, G2.p,
                                       BE2.p, W2.p, k.b2 ? B2.p : nullptr, y.p, k.N, k.H, k.W, C, k.G, eps, cl,
                                       t.dt, nullptr),
            "onestep_resnet_block_typed: %s") ||
        !ktest::sync())
        return;
    const vector<double> ref = resnet_ref::block(
        xv, k.x_bias ? xb.data() : nullptr, k.add ? ad.data() : nullptr, k.add_bias ? adb.data() : nullptr, g1, be1, w1,
        k.b1 ? b1.data() : nullptr, g2, be2, w2, k.b2 ? b2.data() : nullptr, k.N, k.H, k.W, C, k.G, eps,
        [&](double v) { return ktest::round_to(t.f, v); });
    const vector<float> got = ktest::widen(t.f, y.p, nx);
    // fp32 sums against double ones, and a stored intermediate that rounds the other way now and then: y within a
    // few units of its own rounding.
    const double u = ktest::unit_roundoff(t.f);
    char what[96];
    std::snprintf(what, sizeof what, "%s resnet block y (N=%d %dx%d C=%d, %d blocks)", t.name, k.N, k.H, k.W, C, cl);
    ktest::expect_close(what, got.data(), ref.data(), nx, 4 * u, 4 * u);
}

struct ConcatCase {
    int N, H, W, Ca, Cb, C, G;
    bool a_bias, b_bias, add, b1, b2;
    double offset;
};

// onestep_resnet_block_concat_typed: an up block's resnet on cat(a + a_bias, b + b_bias) with its 1x1 shortcut.
void check_concat_case(const Type& t, ktest::Rng& rng, const ConcatCase& k, int cl) {
    std::printf("  %s concat N=%d %dx%d Ca=%d Cb=%d C=%d G=%d a_bias=%d b_bias=%d add=%d b1=%d b2=%d offset=%g, %d blocks\n",
                t.name, k.N, k.H, k.W, k.Ca, k.Cb, k.C, k.G, k.a_bias, k.b_bias, k.add, k.b1, k.b2, k.offset, cl);
    const int HW = k.H * k.W, C = k.C, Cin = k.Ca + k.Cb;
    const size_t na = size_t(k.N) * HW * k.Ca, nb = size_t(k.N) * HW * k.Cb, ny = size_t(k.N) * HW * C;
    const float eps = 1e-5f;
    vector<float> av = rng.normals(na, k.offset, 1.0), bv = rng.normals(nb, -k.offset, 1.0);
    vector<float> g1 = rng.normals(Cin, 1.0, 0.2), be1 = rng.normals(Cin, 0.0, 0.2), g2 = rng.normals(C, 1.0, 0.2),
                  be2 = rng.normals(C, 0.0, 0.2), ab = rng.normals(k.Ca, 0.0, 0.5), bb = rng.normals(k.Cb, 0.0, 0.5),
                  ad = rng.normals(size_t(k.N) * C, 0, 1), adb = rng.normals(C, 0.0, 0.5), b1 = rng.normals(C, 0.0, 0.5),
                  b2 = rng.normals(C, 0.0, 0.5), w1 = rng.normals(size_t(C) * 9 * Cin, 0.0, 1.0 / std::sqrt(9.0 * Cin)),
                  w2 = rng.normals(size_t(C) * 9 * C, 0.0, 1.0 / std::sqrt(9.0 * C)),
                  ws = rng.normals(size_t(C) * Cin, 0.0, 1.0 / std::sqrt(double(Cin)));
    ktest::Buf16 A(ktest::narrow(t.f, av)), B(ktest::narrow(t.f, bv)), G1(ktest::narrow(t.f, g1)),
        BE1(ktest::narrow(t.f, be1)), G2(ktest::narrow(t.f, g2)), BE2(ktest::narrow(t.f, be2)),
        AB(ktest::narrow(t.f, ab)), BB(ktest::narrow(t.f, bb)), AD(ktest::narrow(t.f, ad)),
        ADB(ktest::narrow(t.f, adb)), B1(ktest::narrow(t.f, b1)), B2(ktest::narrow(t.f, b2)),
        W1(ktest::narrow(t.f, w1)), W2(ktest::narrow(t.f, w2)), WS(ktest::narrow(t.f, ws));
    ktest::Buf16 y(ny);
    if (!ktest::ok(onestep_resnet_block_concat_typed(A.p, k.a_bias ? AB.p : nullptr, B.p, k.b_bias ? BB.p : nullptr,
                                                     k.add ? AD.p : nullptr, k.add ? ADB.p : nullptr, G1.p, BE1.p,
                                                     W1.p, k.b1 ? B1.p : nullptr, G2.p, BE2.p, W2.p,
                                                     k.b2 ? B2.p : nullptr, WS.p, y.p, k.N, k.H, k.W, k.Ca, k.Cb, C,
                                                     k.G, eps, cl, t.dt, nullptr),
                   "onestep_resnet_block_concat_typed: %s") ||
        !ktest::sync())
        return;
    const vector<double> ref = resnet_ref::concat_block(
        av, k.a_bias ? ab.data() : nullptr, bv, k.b_bias ? bb.data() : nullptr, k.add ? ad.data() : nullptr,
        k.add ? adb.data() : nullptr, g1, be1, w1, k.b1 ? b1.data() : nullptr, g2, be2, w2, k.b2 ? b2.data() : nullptr,
        ws, k.N, k.H, k.W, k.Ca, k.Cb, C, k.G, eps, [&](double v) { return ktest::round_to(t.f, v); });
    const vector<float> got = ktest::widen(t.f, y.p, ny);
    const double u = ktest::unit_roundoff(t.f);
    char what[128];
    std::snprintf(what, sizeof what, "%s concat resnet block y (N=%d %dx%d Ca=%d Cb=%d C=%d, %d blocks)", t.name, k.N,
                  k.H, k.W, k.Ca, k.Cb, C, cl);
    ktest::expect_close(what, got.data(), ref.data(), ny, 4 * u, 4 * u);
}

// A launch at 64 pixels captured in a graph, then a smaller one of the same kernel instance (the same n-tiles a
// block: C = 128 with 8 blocks as C = 256 with 16): the graph's replay must still run. The instance's shared-memory
// attribute was once set per launch, so the smaller launch lowered it below what the captured one needs and the
// replay was refused (the Java backend's pass hit it: cudaErrorInvalidValue at a graph node).
void check_capture(const Type& t, ktest::Rng& rng, int C8, int cl8, int C4, int cl4) {
    std::printf("  %s a captured 8x8 launch (C=%d, %d blocks) replayed after a 4x4 one (C=%d, %d blocks)\n", t.name, C8,
                cl8, C4, cl4);
    const int G = 16, Cmax = C8 > C4 ? C8 : C4;  // 8- or 16-channel groups: whole groups in every block either way
    const size_t nw = size_t(Cmax) * 9 * Cmax;
    ktest::Input16 x8(t, rng, 64 * C8), x4(t, rng, 16 * C4), w(t, rng, nw, 0.03), g(t, rng, Cmax, 0.2),
        b(t, rng, Cmax, 0.2);
    ktest::Buf16 y8(64 * C8), y8again(64 * C8), y4(16 * C4);
    auto run = [&](const ktest::Input16& x, ktest::Buf16& y, int H, int W, int C, int cl, cudaStream_t s) {
        return onestep_resnet_block_typed(x.b.p, nullptr, nullptr, nullptr, g.b.p, b.b.p, w.b.p, nullptr, g.b.p, b.b.p,
                                          w.b.p, nullptr, y.p, 1, H, W, C, G, 1e-5f, cl, t.dt, s);
    };
    cudaStream_t s = nullptr;
    onestep_graph graph = nullptr;
    if (!ktest::ok(onestep_stream_create(&s), "stream: %s") ||
        !ktest::ok(run(x8, y8, 8, 8, C8, cl8, nullptr), "8x8: %s") ||
        !ktest::ok(onestep_graph_begin_capture(s), "begin capture: %s") ||
        !ktest::ok(run(x8, y8again, 8, 8, C8, cl8, s), "8x8 captured: %s") ||
        !ktest::ok(onestep_graph_end_capture(s, &graph), "end capture: %s") ||
        !ktest::ok(run(x4, y4, 4, 4, C4, cl4, nullptr), "4x4: %s") || !ktest::sync())
        return;
    ktest::ok(onestep_graph_launch(graph, s), "the 8x8 replay after a 4x4 launch: %s");
    ktest::ok(onestep_synchronize(s), "the replay: %s");
    ktest::expect(std::memcmp(y8.p, y8again.p, y8.n * 2) == 0, "the replay gives the eager launch's bits%s");
    onestep_graph_destroy(graph);
    onestep_stream_destroy(s);
}

// The weight prefetch: both kernels give the same bits with it off. With it on, the first sample's cluster of 8 blocks
// of 256 threads asks for 2 spans of rows (the block) or 3 (the concat block, with its shortcut).
void check_prefetch(const Type& t, ktest::Rng& rng) {
    const int C = 128, G = 16, Cin = 256;
    ktest::Input16 x(t, rng, 64 * Cin), w1(t, rng, size_t(C) * 9 * Cin, 0.03), w2(t, rng, size_t(C) * 9 * C, 0.03),
        ws(t, rng, size_t(C) * Cin, 0.05), g(t, rng, Cin, 0.2), b(t, rng, Cin, 0.2);
    ktest::Buf16 y_on(64 * C), y_off(64 * C), c_on(16 * C), c_off(16 * C);
    char what[64];
    std::snprintf(what, sizeof what, "%s resnet block", t.name);
    ktest::check_prefetch_switch(what, y_on.p, y_off.p, y_on.n * 2, [&](void* y) {
        return onestep_resnet_block_typed(x.b.p, nullptr, nullptr, nullptr, g.b.p, b.b.p, w2.b.p, nullptr, g.b.p,
                                          b.b.p, w2.b.p, nullptr, y, 1, 8, 8, C, G, 1e-5f, 8, t.dt, nullptr);
    }, 8 * 256 * 2);
    std::snprintf(what, sizeof what, "%s concat resnet block", t.name);
    ktest::check_prefetch_switch(what, c_on.p, c_off.p, c_on.n * 2, [&](void* y) {  // 4x4: two 16 x 128 slices of x
        return onestep_resnet_block_concat_typed(x.b.p, nullptr, x.b.p + 16 * 128, nullptr, nullptr, nullptr, g.b.p,
                                                 b.b.p, w1.b.p, nullptr, g.b.p, b.b.p, w2.b.p, nullptr, ws.b.p, y, 1,
                                                 4, 4, 128, 128, C, G, 1e-5f, 8, t.dt, nullptr);
    }, 8 * 256 * 3);
}

void check_errors() {
    std::printf("  refusals\n");
    ktest::Buf16 a(2 * 64 * 256 + 8), w(9 * 256 * 256 + 8), v(256), y(2 * 64 * 256);
    int cluster = 8;
    auto call = [&](const void* x, const void* add, const void* add_bias, void* out, int N, int H, int W, int C, int G,
                    onestep_dtype dt) {
        return onestep_resnet_block_typed(x, nullptr, add, add_bias, v.p, v.p, w.p, nullptr, v.p, v.p, w.p, nullptr,
                                          out, N, H, W, C, G, 1e-5f, cluster, dt, nullptr);
    };
    auto refused = [&](onestep_status got, onestep_status want, const char* needle, const char* what) {
        const bool named = std::strstr(onestep_last_error_message(), needle) != nullptr &&
                           std::strstr(onestep_last_error_message(), "onestep_resnet_block_typed") != nullptr;
        ktest::expect(got == want && named, what, onestep_last_error_message());
    };
    refused(call(a.p, nullptr, nullptr, y.p, 1, 4, 4, 256, 32, ONESTEP_FLOAT32), ONESTEP_ERROR_UNSUPPORTED, "fp16 or bf16",
            "fp32 is refused by name: %s");
    refused(call(a.p, nullptr, nullptr, y.p, 1, 4, 4, 64, 8, ONESTEP_FLOAT16), ONESTEP_ERROR_UNSUPPORTED, "C must be",
            "C = 64 is refused by name: %s");
    refused(call(a.p, nullptr, nullptr, y.p, 1, 4, 8, 256, 32, ONESTEP_FLOAT16), ONESTEP_ERROR_UNSUPPORTED, "H*W",
            "H*W = 32 is refused by name: %s");
    refused(call(a.p, nullptr, nullptr, y.p, 1, 4, 4, 128, 32, ONESTEP_BFLOAT16), ONESTEP_ERROR_UNSUPPORTED,
            "C/groups (4)", "4-channel groups are refused by name: %s");
    refused(call(a.p + 1, nullptr, nullptr, y.p, 1, 4, 4, 256, 32, ONESTEP_FLOAT16), ONESTEP_ERROR_INVALID_ARGUMENT,
            "16-byte aligned", "a misaligned x is refused by name: %s");
    refused(call(a.p, nullptr, nullptr, a.p + 8, 1, 4, 4, 256, 32, ONESTEP_FLOAT16), ONESTEP_ERROR_INVALID_ARGUMENT,
            "overlap", "y overlapping x is refused by name: %s");
    refused(call(a.p, nullptr, v.p, y.p, 1, 4, 4, 256, 32, ONESTEP_FLOAT16), ONESTEP_ERROR_INVALID_ARGUMENT,
            "add_bias needs add", "add_bias without add is refused by name: %s");
    refused(call(a.p, nullptr, nullptr, y.p, 0, 4, 4, 256, 32, ONESTEP_FLOAT16), ONESTEP_ERROR_INVALID_ARGUMENT,
            "positive", "N = 0 is refused by name: %s");
    cluster = 12;
    refused(call(a.p, nullptr, nullptr, y.p, 1, 4, 4, 256, 32, ONESTEP_FLOAT16), ONESTEP_ERROR_INVALID_ARGUMENT,
            "cluster must be", "a cluster of 12 is refused by name: %s");
    cluster = 16;  // 16-channel groups do not divide a block's 8 channels (C = 128 over 16 blocks)
    refused(call(a.p, nullptr, nullptr, y.p, 1, 4, 4, 128, 8, ONESTEP_FLOAT16), ONESTEP_ERROR_UNSUPPORTED,
            "8 channels (C/16)", "16-channel groups over 16 blocks are refused by name: %s");
}

void check_concat_errors() {
    std::printf("  concat refusals\n");
    ktest::Buf16 a(64 * 256 + 8), w(9 * 512 * 256 + 8), v(512), y(64 * 256);
    auto call = [&](const void* pa, const void* ws, void* out, int H, int W, int Ca, int Cb, int C, int G,
                    onestep_dtype dt) {
        return onestep_resnet_block_concat_typed(pa, nullptr, a.p, nullptr, nullptr, nullptr, v.p, v.p, w.p, nullptr,
                                                 v.p, v.p, w.p, nullptr, ws, out, 1, H, W, Ca, Cb, C, G, 1e-5f, 8,
                                                 dt, nullptr);
    };
    auto refused = [&](onestep_status got, onestep_status want, const char* needle, const char* what) {
        const bool named = std::strstr(onestep_last_error_message(), needle) != nullptr &&
                           std::strstr(onestep_last_error_message(), "onestep_resnet_block_concat_typed") != nullptr;
        ktest::expect(got == want && named, what, onestep_last_error_message());
    };
    refused(call(a.p, w.p, y.p, 4, 4, 256, 256, 256, 32, ONESTEP_FLOAT32), ONESTEP_ERROR_UNSUPPORTED, "fp16 or bf16",
            "fp32 is refused by name: %s");
    refused(call(a.p, w.p, y.p, 4, 4, 256, 128, 256, 32, ONESTEP_FLOAT16), ONESTEP_ERROR_UNSUPPORTED, "(384)",
            "384 channels in are refused by name: %s");
    refused(call(a.p, w.p, y.p, 4, 4, 252, 4, 256, 32, ONESTEP_FLOAT16), ONESTEP_ERROR_UNSUPPORTED, "multiples of 8",
            "a 4-channel source is refused by name: %s");
    refused(call(a.p, nullptr, y.p, 4, 4, 256, 256, 256, 32, ONESTEP_FLOAT16), ONESTEP_ERROR_INVALID_ARGUMENT,
            "ws_krsc", "a missing shortcut is refused by name: %s");
    refused(call(a.p, w.p + 1, y.p, 4, 4, 256, 256, 256, 32, ONESTEP_BFLOAT16), ONESTEP_ERROR_INVALID_ARGUMENT,
            "16-byte aligned", "a misaligned shortcut is refused by name: %s");
    refused(call(a.p, w.p, a.p + 8, 4, 4, 128, 128, 128, 16, ONESTEP_FLOAT16), ONESTEP_ERROR_INVALID_ARGUMENT,
            "overlap", "y overlapping b is refused by name: %s");
    refused(call(a.p, w.p, y.p, 4, 8, 256, 256, 256, 32, ONESTEP_FLOAT16), ONESTEP_ERROR_UNSUPPORTED, "H*W",
            "H*W = 32 is refused by name: %s");
    refused(call(a.p, w.p, y.p, 4, 4, 64, 64, 128, 32, ONESTEP_FLOAT16), ONESTEP_ERROR_UNSUPPORTED, "C/groups (4)",
            "4-channel groups are refused by name: %s");
}

}  // namespace

int main() {
    const auto start = std::chrono::steady_clock::now();
    ktest::Rng rng(20261128);
    const Type types[] = {{ktest::kHalf, ONESTEP_FLOAT16, "fp16"}, {ktest::kBf16, ONESTEP_BFLOAT16, "bf16"}};
    const Case cases[] = {
        {1, 4, 4, 256, 32, true, true, true, true, true, 0.0},       // the CIFAR U-Net's 4x4 level, every term
        {2, 8, 8, 256, 32, false, true, false, false, false, 0.0},   // its 8x8 level at batch 2: two clusters
        {1, 2, 8, 128, 16, true, true, true, true, true, 0.0},       // not square; 16-channel blocks, 8-channel groups
        {1, 8, 8, 128, 8, true, false, false, true, true, 100.0},    // a group per block; x around 100
    };
    const ConcatCase concat_cases[] = {
        {1, 4, 4, 256, 256, 256, 32, true, true, true, true, true, 0.0},      // the CIFAR up block at 4x4, every term
        {1, 8, 8, 256, 256, 256, 32, false, true, true, false, true, 0.0},    // at 8x8: 64 pixels, 4 m-tiles
        {2, 2, 8, 96, 32, 128, 16, true, false, false, true, false, 0.0},     // a source split inside a group, batch 2
        {1, 8, 8, 128, 128, 128, 8, true, true, true, true, true, 100.0},     // a group per block; x around +-100
    };
    for (const Type& t : types) {
        for (int cl : {8, 16}) {  // the portable cluster and the non-portable one, where its blocks hold whole groups
            for (const Case& c : cases)
                if (fits(c.C, c.G, cl)) check_case(t, rng, c, cl);
            for (const ConcatCase& c : concat_cases)
                if (fits(c.C, c.G, cl)) check_concat_case(t, rng, c, cl);
        }
        check_capture(t, rng, 128, 8, 128, 8);
        check_capture(t, rng, 256, 16, 128, 8);  // one instance (2 n-tiles a block), the larger shape captured
        check_prefetch(t, rng);
    }
    check_errors();
    check_concat_errors();
    return ktest::finish("test_resnet", start);
}
