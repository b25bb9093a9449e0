// groupnorm.cuh: the internal launchers of groupnorm.cu, with the block sizes as parameters so the
// dev files (kernels/dev/groupnorm_*.cu) can sweep them; the C API uses the defaults below.
#pragma once
#include "cuda_compat.cuh"

namespace onestep {
namespace groupnorm {

constexpr int kStatsBlock = 256;     // chosen by the sweep in kernels/dev/groupnorm_forward.cu
constexpr int kApplyBlock = 256;
constexpr int kBackwardBlock = 256;  // chosen by the sweep in kernels/dev/groupnorm_backward.cu
// Tensors of at most this many values take the one-kernel forward (version 6): batch-1 inference, where the
// second launch costs more than both passes' memory traffic (the CIFAR config's largest is 32x32x128 = 131K).
constexpr long long kFusedMaxElems = 1 << 20;

// The statistics block the C API launches for a tensor: kStatsBlock on the two-kernel path; on the one-kernel path,
// which has only N*G blocks (32 at batch 1 in the U-Net), enough threads that each handles about one 4-vector of
// its group per pass, from kStatsBlock up to 1024. On the H100 (tenth session, dev_groupnorm_forward) version 6's
// fastest blocks were 1024 at 1x32x32x128 and 512 at 1x16x16x256, where production ran 256: what this picks there.
// The block size sets the Welford merge order, so every entry that must give another's bits uses this.
int production_stats_block(int N, int HW, int C, int G);

// The slab kernel (groupnorm.cu, version 8 of the dev file: x read once, a block per sample and 16-channel slab):
// the 4-vectors a thread holds at this block size, 0 where the shape or block is outside its conditions; and the
// block the C API gives it (the smallest of 256, 512, 1024 that holds the sample).
constexpr int kSlab = 16;
constexpr int kSlabMaxHW = 2048;  // 512 threads x 16 4-vectors: the register budget's largest sample
int slab_iters(int HW, int C, int G, int block);
int slab_block(int HW, int C, int G);

// The cluster kernel (groupnorm.cu, versions 12-14 of the dev file: a group split over a thread block cluster of cs
// blocks, x read once, sm_90): the cluster size, block and 4-vectors a thread for a tensor; false where it has no
// instance (C/G not a multiple of 4, or a group too large).
bool cluster_shape(int N, int HW, int C, int G, int& cs, int& block, int& iters);
// The largest block the cluster kernel's ITERS instance may run: a block holds at most 64K registers (sm_80, sm_90),
// and ptxas (nvcc 13.0, sm_90a) gives the ITERS = 8 instances 71-80 registers a thread, the ITERS = 4 ones 54-56:
// 1024 threads x 80 would fail every launch (cudaErrorLaunchOutOfResources), which the emulation, with no registers,
// cannot see. The kernel's __launch_bounds__(cluster_max_block(ITERS), 1) holds ptxas to it (then: 80 registers at
// ITERS 8, 62-64 at 4, no spills), and cluster_shape never picks a larger block.
constexpr int cluster_max_block(int iters) { return iters >= 8 ? 256 : 1024; }

// Block sizes: multiples of 32 up to 1024. fused: -1 by size (kFusedMaxElems), 0 two kernels, 1 one kernel, 2 the
// slab kernel (stats_block is its block, 0 picks; cudaErrorNotSupported outside its conditions), 3 the cluster
// kernel (its own shape; cudaErrorNotSupported outside its conditions).
cudaError_t launch_forward(const float* x, const float* gamma, const float* beta, const float* scale,
                           const float* shift, float* y, float* mean, float* rstd, int N, int HW, int C, int G,
                           float eps, bool silu, int stats_block, int apply_block, cudaStream_t stream,
                           int fused = -1);

cudaError_t launch_backward(const float* dy, const float* x, const float* mean, const float* rstd,
                            const float* gamma, const float* beta, const float* scale, const float* shift, float* dx,
                            float* dgamma, float* dbeta, float* dscale, float* dshift, int N, int HW, int C, int G,
                            bool silu, int block, cudaStream_t stream);

}  // namespace groupnorm
}  // namespace onestep
