// reduce.cuh: warp and block reductions used by several kernels (sum, max, Welford statistics).
// Block reductions assume blockDim.x is a multiple of 32 and at most 1024 and that every thread of
// the block calls them (they contain __syncthreads).
#pragma once
#include "cuda_compat.cuh"

namespace onestep {

// T is float, or double for the losses' and the gradient norm's sums (kernels/src/loss.cu).
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum over the block, returned to every thread. `scratch` holds >= 32 values of shared memory; the
// leading __syncthreads lets a caller reuse the same scratch for consecutive reductions.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : T(0);
    return warp_sum(v);
}

// Running statistics of a stream of values: count, mean and the sum of squared deviations M2
// (Welford 1962). Merging two of them is Chan, Golub & LeVeque's pairwise update, which keeps the
// variance accurate where E[x^2] - E[x]^2 would cancel catastrophically (large mean, small spread).
struct Welford {
    float n, mean, m2;
};

__device__ __forceinline__ void welford_add(Welford& w, float x) {
    w.n += 1.0f;
    const float d = x - w.mean;
    w.mean += __fdividef(d, w.n);
    w.m2 += d * (x - w.mean);
}

__device__ __forceinline__ Welford welford_merge(Welford a, Welford b) {
    const float n = a.n + b.n;
    if (n == 0.0f) return a;
    const float d = b.mean - a.mean;
    const float fb = __fdividef(b.n, n);
    Welford r;
    r.n = n;
    r.mean = a.mean + d * fb;
    r.m2 = a.m2 + b.m2 + d * d * a.n * fb;
    return r;
}

__device__ __forceinline__ Welford warp_welford(Welford w) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        Welford o;
        o.n = __shfl_xor_sync(0xffffffffu, w.n, offset);
        o.mean = __shfl_xor_sync(0xffffffffu, w.mean, offset);
        o.m2 = __shfl_xor_sync(0xffffffffu, w.m2, offset);
        w = welford_merge(w, o);
    }
    return w;
}

// Welford statistics over the whole block, returned to every thread. `scratch` holds >= 32 Welfords.
__device__ __forceinline__ Welford block_welford(Welford w, Welford* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    w = warp_welford(w);
    __syncthreads();
    if (lane == 0) scratch[warp] = w;
    __syncthreads();
    w = lane < nwarps ? scratch[lane] : Welford{0.0f, 0.0f, 0.0f};
    return warp_welford(w);
}

// Per-group totals of one value a thread, summed in a fixed order (every run and every block gets the same bits).
// Thread i's value belongs to group (i % cols) / per_group: cols threads make a row of the caller's layout (a pixel's
// channel vectors, say), per_group consecutive columns a group, and the block's blockDim / cols rows are summed in
// order, then the group's columns. part holds blockDim floats of shared memory, stat at least ngroups; ngroups <=
// blockDim. Ends at a barrier: stat[k] then holds group k's total for every thread. The caller keeps a barrier between
// reading stat and the next call (which rewrites it). Shared by the fused resnet block (src/resnet.cu) and the
// two-pass group norm of dev/groupnorm_forward.cu.
__device__ __forceinline__ void group_totals(float v, float* part, float* stat, int cols, int per_group, int ngroups) {
    part[threadIdx.x] = v;
    __syncthreads();
    if (int(threadIdx.x) < ngroups) {
        float s = 0.0f;
        for (int r = 0; r < int(blockDim.x) / cols; r++)
            for (int j = 0; j < per_group; j++) s += part[r * cols + threadIdx.x * per_group + j];
        stat[threadIdx.x] = s;
    }
    __syncthreads();
}

}  // namespace onestep
