// attention.cuh: the internal launcher of attention.cu, for the dev file's validation and timing.
#pragma once
#include "cuda_compat.cuh"
#include "dtype.cuh"

namespace onestep {
namespace attention {

constexpr int kRowsPerBlock = 32;  // query rows per block (Br)
constexpr int kKeysPerTile = 32;   // keys per K/V tile (Bc): one key per lane when scoring
constexpr int kWarps = 4;          // each warp owns kRowsPerBlock / kWarps query rows

// Dynamic shared memory the kernel needs for head dim D.
size_t shared_bytes(int D);

// Which kernel a 16-bit forward runs: Auto is the tensor-core one (mma.sync; o 4-byte aligned), Portable the CUDA-core
// one that fp32 uses (the dev file compares the two). fp32 always runs the portable kernel. SplitKeys (16-bit, D 32
// or 64) is the tensor-core kernel for few query blocks: 16 query rows a block and the keys dealt to its 4 warps,
// merged in shared memory (flash-decoding's split-KV inside one block), 4x the blocks at a quarter of the serial
// chain; the CUDA backend times it against Auto per shape (onestep_attention_forward_qkv_kernel_typed). Pipelined
// (16-bit, D 32 or 64) is the tensor-core kernel with its K/V tiles double-buffered by cp.async and its B fragments
// loaded by ldmatrix: Auto's bits, timed against it the same way. Wide is Pipelined with two 16-row m-tiles a warp
// (128-row blocks, each K/V fragment read once for both): Auto's bits too.
enum class Path { Auto, Portable, TensorCores, SplitKeys, Pipelined, Wide };

// Per-feature biases (H*D each, or null) added to q, k, v as they are read, each sum rounded to T once: the bits of
// adding them first (onestep_add_per_channel_typed), without that kernel.
template <typename T>
struct Biases {
    const T* q = nullptr;
    const T* k = nullptr;
    const T* v = nullptr;
};

// q (B,H,Tq,D), k/v (B,H,Tk,D), o (B,H,Tq,D), lse (B,H,Tq); softmax_scale already resolved (> 0). With tokens
// (1), q and o are the engine's token layout (B,Tq,H*D) and k, v (B,Tk,H*D) instead (lse unchanged): the same
// arithmetic, so the same bits, without splitting heads into (B,H,T,D) copies first. tokens = 3: q, k, v are views
// into one packed (B,T,3*H*D) projection (q = qkv, k = qkv + H*D, v = qkv + 2*H*D), their rows 3*H*D apart.
// T: float, __half or __nv_bfloat16 (instantiated in attention.cu).
template <typename T>
cudaError_t launch_forward(const T* q, const T* k, const T* v, T* o, float* lse, int B, int H, int Tq, int Tk, int D,
                           const int* kv_len, float softmax_scale, cudaStream_t stream, int tokens = 0,
                           Path path = Path::Auto, Biases<T> bias = {});

// The C entry points' shared argument handling (attention.cu): the shapes text of error messages, the checks of
// dtype and shapes (ONESTEP_OK or the failure, already reported), and softmax_scale <= 0 meaning 1 / sqrt(D).
void describe(char* out, size_t size, int B, int H, int Tq, int Tk, int D, onestep_dtype dtype);
onestep_status check_shapes(const char* fn, const char* shapes, int B, int H, int Tq, int Tk, int D, onestep_dtype dtype);
float resolve_scale(float softmax_scale, int D);

}  // namespace attention
}  // namespace onestep
