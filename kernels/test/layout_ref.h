// layout_ref.h: host-side layout helpers shared by the attention test (test_attention.cpp) and its development
// record (dev/attention_forward.cu), so both check the token-layout kernel against the same relayout.
#pragma once
#include <cstddef>
#include <vector>

namespace layout_ref {

// (B, H, T, D) head blocks <-> the engine's (B, T, H*D) tokens: to_tokens moves heads -> tokens, else back.
template <typename E>
std::vector<E> relaid(const std::vector<E>& src, int B, int H, int T, int D, bool to_tokens) {
    std::vector<E> out(src.size());
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++)
                for (int d = 0; d < D; d++) {
                    const size_t tok = ((size_t(b) * T + t) * H + h) * D + d, hd = ((size_t(b) * H + h) * T + t) * D + d;
                    if (to_tokens) out[tok] = src[hd]; else out[hd] = src[tok];
                }
    return out;
}

}  // namespace layout_ref
