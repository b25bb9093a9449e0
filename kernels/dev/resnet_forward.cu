// resnet_forward.cu: development record of a whole ResnetBlock2D in one launch (src/resnet.cu) at the U-Net's small
// levels, batch 1, fp16:  y = x + conv2(SiLU(norm2(conv1(SiLU(norm1(x))) + b1 + t))) + b2.
//
//   nvcc build:  cmake target dev_resnet_forward;  run: ./dev_resnet_forward [version] [N H W C G]
//   versions:    1 the four launches the engine runs today at batch 1 (onestep_groupnorm_forward_add_typed, then
//                onestep_conv2d_igemm_typed with its cost-model tile, twice; the norms take the biases and the time
//                projection on the fly, conv2 the residual), 2 onestep_resnet_block_typed (one launch);
//                the up block's resnet at the same level, on cat(h, skip) of 2C channels with a 1x1 shortcut:
//                3 its five launches (onestep_groupnorm_concat_typed writing cat and norm1's output, conv1, the
//                shortcut on cat, norm2, conv2 + the shortcut's output), 4 onestep_resnet_block_concat_typed (one
//                launch, the weights streamed a tap at a time); 5 and 6 versions 2 and 4 with a cluster of 16 blocks
//                a sample (non-portable: half the weights and the work a block, twice the SMs at batch 1);
//                7 and 8 versions 4 and 6 with the weight prefetch off (onestep_set_weight_prefetch(0)): the streamed
//                kernel's ring holds 2-7 of its 19 weight stages in flight, so it is the one kernel where prefetching
//                the block's rows to L2 at its start should pay without programmatic launch
//   emulated:    cmake target dev_resnet_forward_emu (validation only; a CTest test)
//
// Version 1 is the ops the CUDA backend's batch-1 graph runs for a block (bench/results/2026-11-27-h200-run2.txt: at
// 4x4 a norm of 4.1-4.8 us and a convolution of 5.9-7.5 us, twice, ~21 us). Version 2 must beat their sum by enough
// to be worth a node; the backend would time the two per shape, as it times its other fusions. Both are checked
// against a double reference rounded where the tensors are stored (kernels/test/test_resnet.cpp's). Timed as single
// launches after an L2 flush, and back to back (what a graph replay of the pass sees).
//
// Unlike the other dev files, this one compiles no kernel source: it calls the library's C entries only, and links
// the library (libonestep_kernels.so under nvcc, the emulated static library here). Compiling conv.cu and
// groupnorm.cu into it made it the largest binary that travels to the GPU machine (3.5 MB compressed), past the
// device tool's 64 MiB with the rest.
#include "../src/dtype.cuh"
#include "dev_common.cuh"
#include "onestep_runtime.h"
#include "../test/resnet_ref.h"  // the block's oracle, shared with test_resnet

#include <cstdlib>
#include <vector>

using namespace onestep;

namespace {

// fp16 rounding of a double (through float: the same value as the device's __float2half_rn for these magnitudes).
double to_half(double v) { return double(__half2float(__float2half_rn(float(v)))); }

// Host values rounded to fp16 in place, and their device copy.
__half* half_device(std::vector<float>& v) {
    std::vector<__half> h(v.size());
    for (size_t i = 0; i < v.size(); i++) h[i] = __float2half_rn(v[i]), v[i] = __half2float(h[i]);
    return dev::to_device(h);
}

}  // namespace

int main(int argc, char** argv) {
    int N = 1, H = 4, W = 4, C = 256, G = 32;  // the CIFAR U-Net's 4x4 level at batch 1
    int only = 0;
    if (argc > 1) only = std::atoi(argv[1]);
    if (argc > 6) N = std::atoi(argv[2]), H = std::atoi(argv[3]), W = std::atoi(argv[4]), C = std::atoi(argv[5]),
                  G = std::atoi(argv[6]);
    std::printf("resnet block forward (fp16), N=%d H=%d W=%d C=%d G=%d\n", N, H, W, C, G);
    const int HW = H * W;
    const size_t nx = size_t(N) * HW * C, nw = size_t(C) * 9 * C;
    const float eps = 1e-5f;
    std::vector<float> x = dev::random_normal(nx, 1), g1 = dev::random_normal(C, 2, 1.0f, 0.2f),
                       be1 = dev::random_normal(C, 3, 0.0f, 0.2f), g2 = dev::random_normal(C, 4, 1.0f, 0.2f),
                       be2 = dev::random_normal(C, 5, 0.0f, 0.2f), add = dev::random_normal(size_t(N) * C, 6),
                       addb = dev::random_normal(C, 7, 0.0f, 0.5f), b1 = dev::random_normal(C, 8, 0.0f, 0.5f),
                       b2 = dev::random_normal(C, 9, 0.0f, 0.5f),
                       w1 = dev::random_normal(nw, 10, 0.0f, float(1.0 / std::sqrt(9.0 * C))),
                       w2 = dev::random_normal(nw, 11, 0.0f, float(1.0 / std::sqrt(9.0 * C)));
    __half *dx = half_device(x), *dg1 = half_device(g1), *dbe1 = half_device(be1), *dg2 = half_device(g2),
           *dbe2 = half_device(be2), *dadd = half_device(add), *daddb = half_device(addb), *db1 = half_device(b1),
           *db2 = half_device(b2), *dw1 = half_device(w1), *dw2 = half_device(w2);
    const std::vector<double> ref = resnet_ref::block(x, nullptr, add.data(), addb.data(), g1, be1, w1, b1.data(), g2,
                                                      be2, w2, b2.data(), N, H, W, C, G, eps, to_half);
    // The up block's operands: skip (the cat's second source, C channels), its norm1 over 2C, conv1 2C -> C, the 1x1
    // shortcut; the other operands as above (conv2, norm2, the time projection, b1 and b2).
    const size_t nw1c = size_t(C) * 9 * 2 * C;
    std::vector<float> skip = dev::random_normal(nx, 12), g1c = dev::random_normal(2 * C, 13, 1.0f, 0.2f),
                       be1c = dev::random_normal(2 * C, 14, 0.0f, 0.2f),
                       w1c = dev::random_normal(nw1c, 15, 0.0f, float(1.0 / std::sqrt(18.0 * C))),
                       wsc = dev::random_normal(size_t(C) * 2 * C, 16, 0.0f, float(1.0 / std::sqrt(2.0 * C)));
    __half *dskip = half_device(skip), *dg1c = half_device(g1c), *dbe1c = half_device(be1c), *dw1c = half_device(w1c),
           *dwsc = half_device(wsc);
    const std::vector<double> ref_concat =
        resnet_ref::concat_block(x, nullptr, skip, nullptr, add.data(), addb.data(), g1c, be1c, w1c, b1.data(), g2,
                                 be2, w2, b2.data(), wsc, N, H, W, C, C, C, G, eps, to_half);
    __half *y = nullptr, *a = nullptr, *hbuf = nullptr, *cat = nullptr, *a2c = nullptr, *sc = nullptr;
    float *mean = nullptr, *rstd = nullptr, *y32 = nullptr;
    dev_check(cudaMalloc(&y, nx * sizeof(__half)));
    dev_check(cudaMalloc(&a, nx * sizeof(__half)));
    dev_check(cudaMalloc(&hbuf, nx * sizeof(__half)));
    dev_check(cudaMalloc(&mean, size_t(N) * G * sizeof(float)));
    dev_check(cudaMalloc(&rstd, size_t(N) * G * sizeof(float)));
    dev_check(cudaMalloc(&y32, nx * sizeof(float)));
    dev_check(cudaMalloc(&cat, 2 * nx * sizeof(__half)));
    dev_check(cudaMalloc(&a2c, 2 * nx * sizeof(__half)));
    dev_check(cudaMalloc(&sc, nx * sizeof(__half)));

    auto run = [&](int version) -> onestep_status {
        if (version == 7 || version == 8) {  // 4 and 6 without the weight prefetch
            onestep_set_weight_prefetch(0);
            const onestep_status s = onestep_resnet_block_concat_typed(
                dx, nullptr, dskip, nullptr, dadd, daddb, dg1c, dbe1c, dw1c, db1, dg2, dbe2, dw2, db2, dwsc, y, N, H,
                W, C, C, C, G, eps, version == 8 ? 16 : 8, ONESTEP_FLOAT16, nullptr);
            onestep_set_weight_prefetch(1);
            return s;
        }
        const int cluster = version >= 5 ? 16 : 8;
        if (version == 4 || version == 6)
            return onestep_resnet_block_concat_typed(dx, nullptr, dskip, nullptr, dadd, daddb, dg1c, dbe1c, dw1c, db1,
                                                     dg2, dbe2, dw2, db2, dwsc, y, N, H, W, C, C, C, G, eps, cluster,
                                                     ONESTEP_FLOAT16, nullptr);
        if (version == 3) {
            onestep_status s = onestep_groupnorm_concat_typed(dx, nullptr, dskip, nullptr, dg1c, dbe1c, cat, a2c, mean,
                                                              rstd, N, HW, C, C, G, eps, 1, ONESTEP_FLOAT16, nullptr);
            if (s == ONESTEP_OK)
                s = onestep_conv2d_igemm_typed(a2c, dw1c, nullptr, nullptr, hbuf, N, H, W, 2 * C, 3, 3, C, 1, 1, 0,
                                               ONESTEP_FLOAT16, nullptr);
            if (s == ONESTEP_OK)
                s = onestep_conv2d_igemm_typed(cat, dwsc, nullptr, nullptr, sc, N, H, W, 2 * C, 1, 1, C, 1, 0, 0,
                                               ONESTEP_FLOAT16, nullptr);
            if (s == ONESTEP_OK)
                s = onestep_groupnorm_forward_add_typed(hbuf, db1, dadd, daddb, dg2, dbe2, nullptr, nullptr, a, mean,
                                                        rstd, N, HW, C, G, eps, 1, ONESTEP_FLOAT16, nullptr);
            if (s == ONESTEP_OK)
                s = onestep_conv2d_igemm_typed(a, dw2, db2, sc, y, N, H, W, C, 3, 3, C, 1, 1, 0, ONESTEP_FLOAT16,
                                               nullptr);
            return s;
        }
        if (version == 2 || version == 5)
            return onestep_resnet_block_typed(dx, nullptr, dadd, daddb, dg1, dbe1, dw1, db1, dg2, dbe2, dw2, db2, y, N,
                                              H, W, C, G, eps, cluster, ONESTEP_FLOAT16, nullptr);
        onestep_status s = onestep_groupnorm_forward_add_typed(dx, nullptr, nullptr, nullptr, dg1, dbe1, nullptr,
                                                               nullptr, a, mean, rstd, N, HW, C, G, eps, 1,
                                                               ONESTEP_FLOAT16, nullptr);
        if (s == ONESTEP_OK)
            s = onestep_conv2d_igemm_typed(a, dw1, nullptr, nullptr, hbuf, N, H, W, C, 3, 3, C, 1, 1, 0,
                                           ONESTEP_FLOAT16, nullptr);
        if (s == ONESTEP_OK)
            s = onestep_groupnorm_forward_add_typed(hbuf, db1, dadd, daddb, dg2, dbe2, nullptr, nullptr, a, mean, rstd,
                                                    N, HW, C, G, eps, 1, ONESTEP_FLOAT16, nullptr);
        if (s == ONESTEP_OK)
            s = onestep_conv2d_igemm_typed(a, dw2, db2, dx, y, N, H, W, C, 3, 3, C, 1, 1, 0, ONESTEP_FLOAT16, nullptr);
        return s;
    };
    const char* names[] = {"", "four launches (2 group norms, 2 implicit GEMMs)", "one launch (onestep_resnet_block_typed)",
                           "up block, five launches (norm1 + cat, conv1, shortcut, norm2, conv2)",
                           "up block, one launch (onestep_resnet_block_concat_typed)",
                           "one launch, a cluster of 16", "up block, one launch, a cluster of 16",
                           "up block, one launch, no weight prefetch", "up block, one launch, a cluster of 16, no weight prefetch"};
    bool all_ok = true;
    for (int version = 1; version <= 8; version++) {
        if (only && version != only) continue;
        dev_check(cudaMemset(y, 0xFF, nx * sizeof(__half)));
        if (run(version) != ONESTEP_OK) {
            std::printf("version %d: n/a (%s)\n", version, onestep_last_error_message());
            continue;
        }
        dev_check(cudaDeviceSynchronize());
        if (onestep_convert(y, ONESTEP_FLOAT16, y32, ONESTEP_FLOAT32, (long long)nx, nullptr) != ONESTEP_OK) std::exit(1);
        dev_check(cudaDeviceSynchronize());
        // fp16's unit roundoff is 2^-11: y within a few of its own rounding (the roundings of the stored tensors
        // that land the other way now and then included).
        const bool up = version == 3 || version == 4 || version >= 6;
        const bool ok = dev::validate("y", y32, up ? ref_concat : ref, 2e-3, 2e-3);
        all_ok &= ok;
#ifdef ONESTEP_EMULATION
        std::printf("version %d: %s  %s\n", version, ok ? "ok" : "MISMATCH", names[version]);
#else
        const float ms = dev::time_ms([&] { if (run(version) != ONESTEP_OK) std::exit(1); });
        const float warm = dev::time_ms_back_to_back([&] { if (run(version) != ONESTEP_OK) std::exit(1); });
        const double weights_mb = (up ? double(nw1c + nw + 2 * C * C) : 2.0 * nw) * 2 / 1e6;
        std::printf("version %d: %s  %8.1f us  (back to back %.1f us; %.2f MB of weights: %.0f GB/s)  %s\n", version,
                    ok ? "ok      " : "MISMATCH", ms * 1e3, warm * 1e3, weights_mb, weights_mb / 1e3 / (ms * 1e-3),
                    names[version]);
#endif
    }
    std::printf(all_ok ? "all versions match the CPU reference\n" : "SOME VERSIONS DO NOT MATCH the CPU reference\n");
    return all_ok ? 0 : 1;
}
