// stats_ref.h: the group norm statistics a convolution's epilogue leaves (onestep_conv2d_igemm_stats_typed), written
// out on the host; shared by the convolution test (test_conv.cpp) and its development record (dev/conv_forward.cu),
// so both check the epilogue and feed the reader against the same oracle.
#pragma once
#include <cstddef>
#include <vector>

namespace stats_ref {

// (N, HW / 16, groups) x (mean, M2) per run of 16 pixels and group of C / groups channels, in double from v
// (N, HW, C; float or double) and rounded to float once; HW a multiple of 16.
template <typename E>
std::vector<float> run_stats(const std::vector<E>& v, int N, int HW, int C, int groups) {
    const int Cg = C / groups, runs = HW / 16;
    std::vector<float> out(size_t(N) * runs * groups * 2);
    for (int n = 0; n < N; n++)
        for (int r = 0; r < runs; r++)
            for (int g = 0; g < groups; g++) {
                double sum = 0, m2 = 0;
                auto at = [&](int p, int ch) { return double(v[(size_t(n) * HW + 16 * r + p) * C + g * Cg + ch]); };
                for (int p = 0; p < 16; p++)
                    for (int ch = 0; ch < Cg; ch++) sum += at(p, ch);
                const double mean = sum / (16.0 * Cg);
                for (int p = 0; p < 16; p++)
                    for (int ch = 0; ch < Cg; ch++) m2 += (at(p, ch) - mean) * (at(p, ch) - mean);
                const size_t o = ((size_t(n) * runs + r) * groups + g) * 2;
                out[o] = float(mean), out[o + 1] = float(m2);
            }
    return out;
}

}  // namespace stats_ref
