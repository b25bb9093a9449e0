// groupnorm_forward.cu: development record of the NHWC group norm forward (Wu & He 2018, Eq. 1-4) fused with
// the U-Net ResBlock's time-embedding modulation and SiLU:
//   y = SiLU((xhat * gamma + beta) * (1 + scale[n,c]) + shift[n,c]),  xhat = (x - mean[n,g]) * rstd[n,g].
// A CPU reference in double, numbered kernel versions, validation of each against the reference for every
// block size of the sweep, and (nvcc only) timing with an L2 flush and achieved bandwidth.
//
//   nvcc build:  cmake target dev_groupnorm_forward;  run: ./dev_groupnorm_forward [version] [N HW C G]
//   emulated:    cmake target dev_groupnorm_forward_emu (validation only, small shape; a CTest test)
//
// GB/s counts the bytes the op must move at least once: read x, write y (params and stats are negligible).
// Versions 4 and 5 are the production kernel on fp16 and bf16 storage (2 bytes per element moved). Version 6 is
// production's one-kernel path for small tensors (src/groupnorm.cu takes it up to kFusedMaxElems values).
// Version 7 is production's pre-add variant, ResnetBlock2D's norm2(h + time_emb_proj(temb)) with the conv's and
// the projection's biases: x' = (x + x_bias[c]) + (add[n,c] + add_bias[c]) added on the fly, timed against what
// it replaces (an add_per_channel-style kernel writing x', then version 3 on it). Version 8 reads x once (a block per
// sample and 16-channel slab, held in registers) to reach the bandwidth version 3 misses at large shapes; versions
// 9 and 10 are version 8 on fp16 and bf16 storage, against versions 4 and 5. Version 11 is production's
// concatenating variant (an up block's norm1 over cat(h, skip), writing the concatenation too), against a concat
// kernel followed by the group norm. Versions 12, 13 and 14 (fp32, fp16, bf16; sm_90) are production's cluster kernel
// (kernel 2 of onestep_groupnorm_forward_add_kernel_typed): each group split over a thread block cluster of up to 8
// blocks that meet in distributed shared memory, x read once, for batch 1, where version 6 runs N x G = 32 blocks
// (the tenth session's H100 profile: ~7 us each, 51 per CIFAR-size sample). They choose their own launch shape
// (cluster_shape), so the block sweep does not apply: one row each, "block auto". Versions 15, 16 and 17 (fp32, fp16,
// bf16) are a persistent slab kernel (this file only: it lost to version 8 on the H100): version 8's arithmetic on a
// grid of one 512-thread block an SM that loops over the slabs, the next copied into shared memory by cp.async while
// the current is normalized; "block auto" too. Versions 21, 22 and 23 (fp32, fp16, bf16; this file only, not yet timed)
// split the work in two streaming kernels over chunks of whole pixels, statistics then normalization, the second
// reading x back from L2 (the comment above launch_chunked has the reasoning).
#include "../src/status.cu"
#include "../src/groupnorm.cu"
#include "../src/tensor_core.cuh"
#include "dev_common.cuh"

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace onestep;
using namespace onestep::groupnorm;

// ---- CPU reference ---------------------------------------------------------------------------------------
static void groupnorm_forward_cpu(std::vector<double>& y, std::vector<double>& mean, std::vector<double>& rstd,
                                  const std::vector<float>& x, const std::vector<float>& gamma,
                                  const std::vector<float>& beta, const std::vector<float>& scale,
                                  const std::vector<float>& shift, int N, int HW, int C, int G, float eps) {
    const int Cg = C / G;
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            double s = 0, sq = 0;
            for (int p = 0; p < HW; p++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) s += x[(size_t(n) * HW + p) * C + c];
            const double mu = s / (double(HW) * Cg);
            for (int p = 0; p < HW; p++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                    const double d = x[(size_t(n) * HW + p) * C + c] - mu;
                    sq += d * d;
                }
            const double rs = 1.0 / std::sqrt(sq / (double(HW) * Cg) + eps);
            mean[n * G + g] = mu;
            rstd[n * G + g] = rs;
            for (int p = 0; p < HW; p++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                    const size_t i = (size_t(n) * HW + p) * C + c;
                    const double u = ((x[i] - mu) * rs * gamma[c] + beta[c]) * (1.0 + scale[n * C + c]) + shift[n * C + c];
                    y[i] = u / (1.0 + std::exp(-u));
                }
        }
}

// ---- version 1: one thread per (n, g) does everything serially: two passes over the group for mean and
// variance, a third to normalize. Obviously correct, and slow: N*G threads, uncoalesced reads.
__global__ void groupnorm_forward_kernel1(const float* x, const float* gamma, const float* beta, const float* scale,
                                          const float* shift, float* y, float* mean, float* rstd, int N, int HW, int C,
                                          int G, float eps) {
    const int ng = blockIdx.x * blockDim.x + threadIdx.x;
    if (ng >= N * G) return;
    const int n = ng / G, g = ng % G, Cg = C / G;
    const long long base = (long long)n * HW * C + (long long)g * Cg;
    float s = 0.0f;
    for (int p = 0; p < HW; p++)
        for (int c = 0; c < Cg; c++) s += x[base + (long long)p * C + c];
    const float mu = s / (float(HW) * Cg);
    float sq = 0.0f;
    for (int p = 0; p < HW; p++)
        for (int c = 0; c < Cg; c++) {
            const float d = x[base + (long long)p * C + c] - mu;
            sq += d * d;
        }
    const float rs = rsqrtf(sq / (float(HW) * Cg) + eps);
    mean[ng] = mu;
    rstd[ng] = rs;
    for (int p = 0; p < HW; p++)
        for (int c = 0; c < Cg; c++) {
            const long long i = base + (long long)p * C + c;
            y[i] = apply_one<true, true>(x[i], n, g * Cg + c, C, G, Cg, mean, rstd, gamma, beta, scale, shift);
        }
}

// ---- version 2: one block per (n, g): Welford per thread, merged by warp shuffles and through shared memory
// (one read of x for the statistics instead of two), then the same block normalizes its group.
// Parallelism is still only N*G blocks, and each block reads its group twice.
__global__ void groupnorm_forward_kernel2(const float* x, const float* gamma, const float* beta, const float* scale,
                                          const float* shift, float* y, float* mean, float* rstd, int HW, int C, int G,
                                          float eps) {
    __shared__ Welford scratch[32];
    const int n = blockIdx.x / G, g = blockIdx.x % G, Cg = C / G;
    const long long base = (long long)n * HW * C + (long long)g * Cg;
    const long long m = (long long)HW * Cg;
    Welford w{0.0f, 0.0f, 0.0f};
    for (long long i = threadIdx.x; i < m; i += blockDim.x) welford_add(w, x[base + (i / Cg) * C + i % Cg]);
    w = block_welford(w, scratch);
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = w.mean;
        rstd[blockIdx.x] = rsqrtf(w.m2 / w.n + eps);
    }
    __syncthreads();
    for (long long i = threadIdx.x; i < m; i += blockDim.x) {
        const long long idx = base + (i / Cg) * C + i % Cg;
        y[idx] = apply_one<true, true>(x[idx], n, g * Cg + int(i % Cg), C, G, Cg, mean, rstd, gamma, beta, scale, shift);
    }
}

// ---- version 3 (production, src/groupnorm.cu): version 2's statistics with float4 loads, then a separate
// grid-wide float4 normalize pass over all N*HW*C values, so the second pass is not limited to N*G blocks.

struct Args {
    const float *x, *gamma, *beta, *scale, *shift;
    float *y, *mean, *rstd;
    int N, HW, C, G;
    float eps;
};

// ---- version 6 (production for small tensors, src/groupnorm.cu's fused_kernel): version 2's one block per
// (n, g), statistics then normalization in one launch, with version 3's float4 loads and Welford loop. Only N*G
// blocks, each reading its group twice (the second time from cache): at batch 1 the launch it saves is the cost.

// ---- versions 4 and 5 (production, src/groupnorm.cu's launch_forward_t): version 3 on fp16 and bf16 storage
// (the half-precision inference path): half the bytes per element, statistics and arithmetic still fp32.
template <typename T>
struct Typed {
    T *x, *gamma, *beta, *scale, *shift, *y;
    std::vector<float> xr, gr, br, sr, hr;  // the inputs as rounded to T, widened (the reference's inputs)
};

template <typename T>
static T* to_device_as(const std::vector<float>& v, std::vector<float>& rounded) {
    std::vector<T> h(v.size());
    rounded.resize(v.size());
    for (size_t i = 0; i < v.size(); i++) {
        h[i] = from_f32<T>(v[i]);
        rounded[i] = to_f32(h[i]);
    }
    return dev::to_device(h);
}

template <typename T>
static Typed<T> make_typed(const std::vector<float>& x, const std::vector<float>& gamma, const std::vector<float>& beta,
                           const std::vector<float>& scale, const std::vector<float>& shift) {
    Typed<T> t;
    t.x = to_device_as<T>(x, t.xr);
    t.gamma = to_device_as<T>(gamma, t.gr);
    t.beta = to_device_as<T>(beta, t.br);
    t.scale = to_device_as<T>(scale, t.sr);
    t.shift = to_device_as<T>(shift, t.hr);
    std::vector<float> unused;
    t.y = to_device_as<T>(std::vector<float>(x.size(), 0.0f), unused);
    return t;
}

// The typed output widened and compared as dev::validate does.
template <typename T>
static bool validate_typed(const char* name, const T* d_got, const std::vector<double>& ref, double tol, double rel) {
    std::vector<T> got(ref.size());
    dev_check(cudaMemcpy(got.data(), d_got, got.size() * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<float> wide(ref.size());
    for (size_t i = 0; i < ref.size(); i++) wide[i] = to_f32(got[i]);
    float* d = dev::to_device(wide);
    const bool ok = dev::validate(name, d, ref, tol, rel);
    dev_check(cudaFree(d));
    return ok;
}

// ---- version 7's baseline: the unfused pair, x' = x + v[n,c] written out (add_per_channel), then version 3.
__global__ void add_per_channel_kernel(const float* x, const float* v, float* y, long long per_sample, int C,
                                       long long total) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x)
        y[i] = x[i] + v[(i / per_sample) * C + i % C];
}

// ---- version 11's baseline: the concat kernel of src/layers.cu (one thread per element of the concatenation).
__global__ void concat_kernel(const float* a, const float* b, float* y, long long rows, int ca, int cb) {
    const int ct = ca + cb;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < rows * ct; i += (long long)gridDim.x * blockDim.x) {
        const long long r = i / ct;
        const int c = int(i % ct);
        y[i] = c < ca ? a[r * ca + c] : b[r * cb + (c - ca)];
    }
}

// ---- version 8: x read once. Versions 3 and 6 read each group twice (statistics, then normalize), and a block
// of one (n, g) reads 4 of a pixel's channels: 16 bytes of each 32-byte sector, so half of what DRAM moves is
// wasted at Cg = 4 (the tenth session measured version 3 at 36% of the H100's bandwidth, 64x32x32x128 fp32).
// Version 8 is production's slab kernel (src/groupnorm.cu's slab_kernel; the C API's kernel 1, which the CUDA
// backend times against the default per shape): a block per sample and 16-channel slab (64 bytes a pixel: whole
// sectors), held in registers, two exact passes for the statistics, normalized from the registers. Its launcher
// answers cudaErrorNotSupported where the shape or block size is outside its conditions (the sweep skips those).
// Versions 9 and 10 are the same kernel on fp16 and bf16 storage (32 bytes a pixel of the slab: one sector).
template <typename T>
static cudaError_t launch_v8(const T* x, const T* gamma, const T* beta, const T* scale, const T* shift, T* y,
                             float* mean, float* rstd, int N, int HW, int C, int G, float eps, int block) {
    if (slab_iters(HW, C, G, block) == 0) return cudaErrorNotSupported;
    return launch_forward_t<T>(x, gamma, beta, scale, shift, y, mean, rstd, N, HW, C, G, eps, true, block, block,
                               nullptr, 2);
}

static cudaError_t run_version8(const Args& a, int block) {
    return launch_v8<float>(a.x, a.gamma, a.beta, a.scale, a.shift, a.y, a.mean, a.rstd, a.N, a.HW, a.C, a.G, a.eps,
                            block);
}

// ---- versions 15-17: the persistent slab kernel (seventeenth session), a try at the bandwidth version 8 misses ----
// Version 8 (the slab kernel) reached half the H100's copy bandwidth at 64x32x32x128 fp32 (1.48 of 2.97 TB/s): each
// block loads its slab, reduces, then stores, and with two blocks an SM (its registers) the SM's loads and stores come
// in bursts with the reductions' barriers between them. Here one 512-thread block an SM loops over the slabs (a
// persistent grid) and copies the next slab into shared memory with cp.async while it reduces and stores the current
// one, two stages, so that reads and writes overlap. Each slab is version 8's arithmetic (slab_normalize: the same
// registers, sums and formula). Predicted ~27 us at 64x32x32x128 fp32 (the bytes at the copy rate plus one slab's
// load); measured on the H100 40.8 us, slower than version 8 once version 8 issued its loads first (37.6 us), and
// slower in fp16 (36.3 against 31.7 us) and at 8x32x32x256 (15.1 against 14.2 us): one block of 16 warps an SM does
// not hide the reductions and SiLU that two independent blocks overlap. So it stays here, not in the library.
// Needs version 8's conditions at 512 threads, HW <= 1024 (two fp32 stages of 64 KB) and x 16-byte aligned.
constexpr int kPersistBlock = 512;

template <int ITERS, typename T>
__global__ void __launch_bounds__(kPersistBlock, 1)
    persistent_kernel(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                      const T* __restrict__ scale, const T* __restrict__ shift, T* __restrict__ y,
                      float* __restrict__ mean, float* __restrict__ rstd, int N, int HW, int C, int G, float eps,
                      bool silu) {
    constexpr int Q = kSlab / 4;
    constexpr int CHUNK = 16 / sizeof(T);     // elements a 16-byte copy moves
    constexpr int PER_PIXEL = kSlab / CHUNK;  // copies a pixel of the slab: 4 in fp32, 2 in 16 bits
    __shared__ float part[32][Q];
    __shared__ float group_stat[Q];
    ONESTEP_DYNAMIC_SHARED(unsigned char, stage_bytes);
    T* const stages = reinterpret_cast<T*>(stage_bytes);  // [2][HW][kSlab]
    const int slabs = C / kSlab, total = N * slabs, stage = HW * kSlab;
    const int q = threadIdx.x % Q, rows = blockDim.x / Q;

    auto issue = [&](int s, int st) {  // slab s into stage st, one commit group
        const int n = s / slabs, c0 = (s - n * slabs) * kSlab;
        const T* src = x + (long long)n * HW * C + c0;
        T* dst = stages + st * stage;
        for (int i = threadIdx.x; i < HW * PER_PIXEL; i += blockDim.x) {
            const int p = i / PER_PIXEL, k = i - p * PER_PIXEL;
            tensor_core::cp_async16(dst + p * kSlab + k * CHUNK, src + (long long)p * C + k * CHUNK, true);
        }
        tensor_core::cp_async_commit();
    };
    if (int(blockIdx.x) < total) issue(blockIdx.x, 0);
    for (int s = blockIdx.x, k = 0; s < total; s += gridDim.x, k++) {
        // The next slab into the other stage (read into registers by the iteration before last, whose barriers every
        // thread has passed), then wait for this one's group: an empty group at the end keeps the count.
        if (s + int(gridDim.x) < total) issue(s + gridDim.x, (k + 1) & 1);
        else tensor_core::cp_async_commit();
        tensor_core::cp_async_wait<1>();
        __syncthreads();  // every thread's copies of this stage have landed
        const int n = s / slabs, c0 = (s - n * slabs) * kSlab;
        const T* sl = stages + (k & 1) * stage;
        float4 v[ITERS];
#pragma unroll
        for (int i = 0; i < ITERS; i++) {
            const int p = threadIdx.x / Q + i * rows;
            v[i] = p < HW ? load4(sl + p * kSlab + 4 * q) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        slab_normalize<ITERS, Q, T>(v, part, group_stat, gamma, beta, scale, shift, y + (long long)n * HW * C, mean,
                                    rstd, n, c0, HW, C, G, eps, silu);
    }
    tensor_core::cp_async_wait<0>();  // no copy outlives the block (the last, empty group)
}

// One block an SM (3 when emulated, so that the emulated blocks loop over several slabs and both stages).
static int sm_count() {
#ifdef ONESTEP_EMULATION
    return 3;
#else
    int device = 0, sms = 0;
    dev_check(cudaGetDevice(&device));
    dev_check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return sms;
#endif
}

template <typename T>
static cudaError_t launch_persistent(const T* x, const T* gamma, const T* beta, const T* scale, const T* shift, T* y,
                                     float* mean, float* rstd, int N, int HW, int C, int G, float eps) {
    const int it = slab_iters(HW, C, G, kPersistBlock);
    if (HW > 1024 || it == 0 || it > 8 || (reinterpret_cast<uintptr_t>(x) & 15)) return cudaErrorNotSupported;
    const int total = N * (C / kSlab);
    const dim3 grid(unsigned(std::min(total, sm_count())));
    const size_t smem = 2 * size_t(HW) * kSlab * sizeof(T);
#define PERSIST(IT)                                                                                                \
    if (it == IT) {                                                                                                \
        cudaError_t e = cudaFuncSetAttribute(persistent_kernel<IT, T>, cudaFuncAttributeMaxDynamicSharedMemorySize, \
                                             int(smem));                                                          \
        if (e != cudaSuccess) return e;                                                                            \
        return launch(persistent_kernel<IT, T>, grid, dim3(kPersistBlock), smem, nullptr, x, gamma, beta, scale,   \
                      shift, y, mean, rstd, N, HW, C, G, eps, true);                                               \
    }
    PERSIST(1) PERSIST(2) PERSIST(4) PERSIST(8)
#undef PERSIST
    return cudaErrorNotSupported;
}

// ---- versions 21, 22, 23 (fp32, fp16, bf16; twenty-fifth session): two passes over contiguous pixel chunks, the
// second read from L2 ------------------------------------------------------------------------------------------------
// Version 8 holds a whole (sample, 16-channel slab) in registers: 512 blocks at 64x32x32x128, two an SM, so the grid
// runs in two waves in which every block loads, then reduces behind barriers, then stores. The loads and stores of
// an SM come in bursts, and the DRAM idles through the reductions. The H200 (2026-11-27) put it at 48% of the copy
// bandwidth in fp32, and the fp16 version, with half the bytes, took 87% of the fp32 time: the kernel is bound by
// that schedule, not by the bytes. Here the work is split in two streaming kernels over chunks of whole pixels (all
// C channels, so a warp reads 32 consecutive 16-byte vectors: whole 128-byte lines):
//   1. statistics: a block per (chunk, sample) loads its chunk once (kChunkIters 4-vectors a thread, all issued
//      before the first use), and writes each group's (mean, M2) over the chunk: two exact passes over the registers,
//      as version 8 does, summed in a fixed order (reduce.cuh's group_totals: the rows in order, then the group's quads);
//   2. normalize: the same blocks in reverse order merge their sample's chunk pairs (Chan et al.'s pairwise update,
//      reduce.cuh's welford_merge, chunks in order: the same mean and rstd in every block), then read the chunk again
//      and store y. x's second read is meant to come from L2 (H100 and H200: 50 MB; x is 33.5 MB in fp32 at
//      64x32x32x128 and 16.8 MB in fp16). Two choices serve that. The second read and y's stores are "cache
//      streaming" (ld/st.global.cs: evict first), so y's lines go before x's. The blocks run in reverse, so the
//      chunks read last by kernel 1 are read first: were L2 too small, the misses would be the oldest lines only,
//      not a thrash.
// DRAM then moves x once and y once, as in version 8, in two grids of short blocks with no wave in lockstep. Same
// formula per element as version 8 (gamma, beta, scale, shift, SiLU); the statistics differ from its bits in the last
// places (another summation order). Plain group norm only (no pre-add terms). Needs C / 4 dividing the block, G <= 32
// and Cg a multiple of 4. Not timed yet.
constexpr int kChunkIters = 8;  // 4-vectors a thread holds in the statistics pass

// Thread t's quad (4 channels) is t % QC, QC = C / 4; its pixels in a chunk are t / QC + i * rows, i < kChunkIters.
struct ChunkShape {
    int QC, rows, pixels, chunks;  // quads a pixel, pixels a round of the block, pixels a chunk, chunks a sample
};

__host__ __device__ inline ChunkShape chunk_shape(int HW, int C, int block) {
    const int QC = C / 4, rows = block / QC, pixels = rows * kChunkIters;
    return {QC, rows, pixels, (HW + pixels - 1) / pixels};
}

// Values of group g in chunk k: its pixels (the last chunk may be short) times Cg.
__host__ __device__ inline float chunk_count(const ChunkShape& s, int k, int HW, int Cg) {
    const int left = HW - k * s.pixels;
    return float(left < s.pixels ? left : s.pixels) * float(Cg);
}

template <typename T>
__global__ void chunk_stats_kernel(const T* __restrict__ x, float2* __restrict__ partial, int HW, int C, int G) {
    __shared__ float part[1024], tot[32];  // reduce.cuh's group_totals: a float a thread, a total a group
    const ChunkShape s = chunk_shape(HW, C, blockDim.x);
    const int n = blockIdx.y, chunk = blockIdx.x, q = threadIdx.x % s.QC, Cg = C / G, g = 4 * q / Cg;
    const int p0 = chunk * s.pixels + threadIdx.x / s.QC;
    const T* xs = x + (long long)n * HW * C + 4 * q;
    float4 v[kChunkIters];
#pragma unroll
    for (int i = 0; i < kChunkIters; i++) {
        const int p = p0 + i * s.rows;
        v[i] = p < HW ? load4(xs + (long long)p * C) : make_float4(0.f, 0.f, 0.f, 0.f);  // padding adds 0
    }
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kChunkIters; i++) sum += (v[i].x + v[i].y) + (v[i].z + v[i].w);
    group_totals(sum, part, tot, s.QC, Cg / 4, G);  // thread t's quad t % QC, Cg / 4 quads a group
    const float count = chunk_count(s, chunk, HW, Cg);
    const float mu = tot[g] / count;
    const float my_mean = int(threadIdx.x) < G ? tot[threadIdx.x] / count : 0.f;
    __syncthreads();  // every thread has read tot before the next call rewrites it
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < kChunkIters; i++) {
        if (p0 + i * s.rows < HW) {  // the padding holds zeros, not x - mu
            const float a = v[i].x - mu, b = v[i].y - mu, d = v[i].z - mu, e = v[i].w - mu;
            ss += (a * a + b * b) + (d * d + e * e);
        }
    }
    group_totals(ss, part, tot, s.QC, Cg / 4, G);
    if (int(threadIdx.x) < G)
        partial[((long long)n * gridDim.x + chunk) * G + threadIdx.x] = make_float2(my_mean, tot[threadIdx.x]);
}

// Four elements at p, read or written "cache streaming" (evict first), as load4/store4 convert them. The emulation
// has no cache: plain moves there.
template <typename T>
__device__ __forceinline__ float4 load4_streaming(const T* p) {
#ifdef ONESTEP_EMULATION
    return load4(p);
#else
    if constexpr (sizeof(T) == 4) {
        return __ldcs(reinterpret_cast<const float4*>(p));
    } else {
        const uint2 u = __ldcs(reinterpret_cast<const uint2*>(p));
        const Pack4<T> pk = *reinterpret_cast<const Pack4<T>*>(&u);
        return make_float4(to_f32(pk.v[0]), to_f32(pk.v[1]), to_f32(pk.v[2]), to_f32(pk.v[3]));
    }
#endif
}

template <typename T>
__device__ __forceinline__ void store4_streaming(T* p, float4 v) {
#ifdef ONESTEP_EMULATION
    store4(p, v);
#else
    if constexpr (sizeof(T) == 4) {
        __stcs(reinterpret_cast<float4*>(p), v);
    } else {
        Pack4<T> pk;
        pk.v[0] = from_f32<T>(v.x), pk.v[1] = from_f32<T>(v.y), pk.v[2] = from_f32<T>(v.z), pk.v[3] = from_f32<T>(v.w);
        __stcs(reinterpret_cast<uint2*>(p), *reinterpret_cast<const uint2*>(&pk));
    }
#endif
}

template <typename T>
__global__ void chunk_normalize_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                       const T* __restrict__ beta, const T* __restrict__ scale,
                                       const T* __restrict__ shift, T* __restrict__ y, float* __restrict__ mean,
                                       float* __restrict__ rstd, const float2* __restrict__ partial, int HW, int C,
                                       int G, float eps, bool silu) {
    __shared__ float mu_s[32], rs_s[32];
    const ChunkShape s = chunk_shape(HW, C, blockDim.x);
    // Reverse order: the chunks kernel 1 read last (the likeliest still in L2) first.
    const int n = gridDim.y - 1 - blockIdx.y, chunk = gridDim.x - 1 - blockIdx.x;
    const int q = threadIdx.x % s.QC, Cg = C / G, g = 4 * q / Cg, c = 4 * q;
    if (int(threadIdx.x) < G) {
        Welford w{0.f, 0.f, 0.f};
        for (int k = 0; k < s.chunks; k++) {
            const float2 pk = partial[((long long)n * s.chunks + k) * G + threadIdx.x];
            w = welford_merge(w, Welford{chunk_count(s, k, HW, Cg), pk.x, pk.y});
        }
        mu_s[threadIdx.x] = w.mean, rs_s[threadIdx.x] = rsqrtf(w.m2 / w.n + eps);
        if (chunk == 0) mean[n * G + threadIdx.x] = mu_s[threadIdx.x], rstd[n * G + threadIdx.x] = rs_s[threadIdx.x];
    }
    __syncthreads();
    const float mu = mu_s[g], rs = rs_s[g];
    float ga[4], be[4], sc[4] = {0.f, 0.f, 0.f, 0.f}, sh[4] = {0.f, 0.f, 0.f, 0.f};
    for (int k = 0; k < 4; k++) {
        ga[k] = to_f32(gamma[c + k]), be[k] = to_f32(beta[c + k]);
        if (scale) sc[k] = to_f32(scale[(long long)n * C + c + k]), sh[k] = to_f32(shift[(long long)n * C + c + k]);
    }
    auto apply = [&](float xv, int k) {  // slab_normalize's formula
        float u = (xv - mu) * rs * ga[k] + be[k];
        if (scale) u = u * (1.0f + sc[k]) + sh[k];
        if (silu) u = u * sigmoid(u);
        return u;
    };
    const int p0 = chunk * s.pixels + threadIdx.x / s.QC;
    const long long base = (long long)n * HW * C + c;
    float4 v[kChunkIters];
#pragma unroll
    for (int i = 0; i < kChunkIters; i++) {
        const int p = p0 + i * s.rows;
        if (p < HW) v[i] = load4_streaming(x + base + (long long)p * C);
    }
#pragma unroll
    for (int i = 0; i < kChunkIters; i++) {
        const int p = p0 + i * s.rows;
        if (p < HW)
            store4_streaming(y + base + (long long)p * C,
                             make_float4(apply(v[i].x, 0), apply(v[i].y, 1), apply(v[i].z, 2), apply(v[i].w, 3)));
    }
}

// The two kernels, or cudaErrorNotSupported outside their conditions. partial: N * chunks * G float2, grown as needed
// (allocated on the first call, the untimed warm-up).
template <typename T>
static cudaError_t launch_chunked(const T* x, const T* gamma, const T* beta, const T* scale, const T* shift, T* y,
                                  float* mean, float* rstd, int N, int HW, int C, int G, float eps, int block) {
    const int Cg = C / G, QC = C / 4;
    if (C % 4 || Cg % 4 || G > 32 || G > block || block % 32 || QC > block || block % QC || (QC & (QC - 1)) ||
        (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(y)) % (4 * sizeof(T)))
        return cudaErrorNotSupported;
    const ChunkShape s = chunk_shape(HW, C, block);
    static float2* partial = nullptr;
    static size_t capacity = 0;
    const size_t need = size_t(N) * s.chunks * G;
    if (need > capacity) {
        if (partial) dev_check(cudaFree(partial));
        dev_check(cudaMalloc(&partial, need * sizeof(float2)));
        capacity = need;
    }
    const dim3 grid(unsigned(s.chunks), unsigned(N));
    const cudaError_t e = launch(chunk_stats_kernel<T>, grid, dim3(block), 0, nullptr, x, partial, HW, C, G);
    if (e != cudaSuccess) return e;
    return launch(chunk_normalize_kernel<T>, grid, dim3(block), 0, nullptr, x, gamma, beta, scale, shift, y, mean, rstd,
                  static_cast<const float2*>(partial), HW, C, G, eps, true);
}

static cudaError_t run_version(int version, const Args& a, int block) {
    switch (version) {
        case 1:
            return launch(groupnorm_forward_kernel1, dim3(ceil_div(a.N * a.G, block)), dim3(block), 0, nullptr, a.x,
                          a.gamma, a.beta, a.scale, a.shift, a.y, a.mean, a.rstd, a.N, a.HW, a.C, a.G, a.eps);
        case 2:
            return launch(groupnorm_forward_kernel2, dim3(a.N * a.G), dim3(block), 0, nullptr, a.x, a.gamma, a.beta,
                          a.scale, a.shift, a.y, a.mean, a.rstd, a.HW, a.C, a.G, a.eps);
        case 3:
            return launch_forward(a.x, a.gamma, a.beta, a.scale, a.shift, a.y, a.mean, a.rstd, a.N, a.HW, a.C, a.G,
                                  a.eps, true, block, block, nullptr, 0);
        case 6:
            return launch_forward(a.x, a.gamma, a.beta, a.scale, a.shift, a.y, a.mean, a.rstd, a.N, a.HW, a.C, a.G,
                                  a.eps, true, block, block, nullptr, 1);
        case 8:
            return run_version8(a, block);
        case 12:
            return launch_forward(a.x, a.gamma, a.beta, a.scale, a.shift, a.y, a.mean, a.rstd, a.N, a.HW, a.C, a.G,
                                  a.eps, true, block, block, nullptr, 3);
        case 15:
            return launch_persistent<float>(a.x, a.gamma, a.beta, a.scale, a.shift, a.y, a.mean, a.rstd, a.N, a.HW,
                                            a.C, a.G, a.eps);
        case 21:
            return launch_chunked<float>(a.x, a.gamma, a.beta, a.scale, a.shift, a.y, a.mean, a.rstd, a.N, a.HW, a.C,
                                         a.G, a.eps, block);
    }
    std::fprintf(stderr, "unknown version %d\n", version);
    std::exit(2);
}

int main(int argc, char** argv) {
#ifdef ONESTEP_EMULATION
    int N = 2, HW = 36, C = 64, G = 8;  // small: every GPU thread is a fiber on one CPU core
#else
    int N = 8, HW = 32 * 32, C = 256, G = 32;  // a 32x32 U-Net level of a batch of 8
#endif
    int only = 0;
    if (argc > 1) only = std::atoi(argv[1]);
    if (argc > 5) N = std::atoi(argv[2]), HW = std::atoi(argv[3]), C = std::atoi(argv[4]), G = std::atoi(argv[5]);
    std::printf("group norm forward (+scale/shift, +SiLU), N=%d HW=%d C=%d G=%d\n", N, HW, C, G);
    const size_t nx = size_t(N) * HW * C;
    const float eps = 1e-5f;
    std::vector<float> x = dev::random_normal(nx, 1, 0.5f), gamma = dev::random_normal(C, 2, 1.0f, 0.3f),
                       beta = dev::random_normal(C, 3, 0.0f, 0.3f), scale = dev::random_normal(size_t(N) * C, 4, 0.0f, 0.3f),
                       shift = dev::random_normal(size_t(N) * C, 5, 0.0f, 0.3f);
    std::vector<double> y_ref(nx), mean_ref(size_t(N) * G), rstd_ref(size_t(N) * G);
    groupnorm_forward_cpu(y_ref, mean_ref, rstd_ref, x, gamma, beta, scale, shift, N, HW, C, G, eps);

    Args a{dev::to_device(x), dev::to_device(gamma), dev::to_device(beta), dev::to_device(scale), dev::to_device(shift),
           dev::device_filled(nx, 0.0f), dev::device_filled(size_t(N) * G, 0.0f), dev::device_filled(size_t(N) * G, 0.0f),
           N, HW, C, G, eps};
    const int block_sizes[] = {32, 64, 128, 256, 512, 1024};
    bool all_ok = true;
    Typed<__half> h16 = make_typed<__half>(x, gamma, beta, scale, shift);
    Typed<__nv_bfloat16> b16 = make_typed<__nv_bfloat16>(x, gamma, beta, scale, shift);
    // References on the rounded inputs: the typed versions differ from them only by rounding y once.
    std::vector<double> y16(nx), ybf(nx), m16(mean_ref.size()), r16(m16.size()), mbf(m16.size()), rbf(m16.size());
    groupnorm_forward_cpu(y16, m16, r16, h16.xr, h16.gr, h16.br, h16.sr, h16.hr, N, HW, C, G, eps);
    groupnorm_forward_cpu(ybf, mbf, rbf, b16.xr, b16.gr, b16.br, b16.sr, b16.hr, N, HW, C, G, eps);
    auto run_typed = [&](int version, int block) -> cudaError_t {
        if (version == 9)
            return launch_v8<__half>(h16.x, h16.gamma, h16.beta, h16.scale, h16.shift, h16.y, a.mean, a.rstd, N, HW, C,
                                     G, eps, block);
        if (version == 10)
            return launch_v8<__nv_bfloat16>(b16.x, b16.gamma, b16.beta, b16.scale, b16.shift, b16.y, a.mean, a.rstd, N,
                                            HW, C, G, eps, block);
        if (version == 13)
            return launch_forward_t<__half>(h16.x, h16.gamma, h16.beta, h16.scale, h16.shift, h16.y, a.mean, a.rstd,
                                            N, HW, C, G, eps, true, block, block, nullptr, 3);
        if (version == 14)
            return launch_forward_t<__nv_bfloat16>(b16.x, b16.gamma, b16.beta, b16.scale, b16.shift, b16.y, a.mean,
                                                   a.rstd, N, HW, C, G, eps, true, block, block, nullptr, 3);
        if (version == 16)
            return launch_persistent<__half>(h16.x, h16.gamma, h16.beta, h16.scale, h16.shift, h16.y, a.mean, a.rstd,
                                             N, HW, C, G, eps);
        if (version == 17)
            return launch_persistent<__nv_bfloat16>(b16.x, b16.gamma, b16.beta, b16.scale, b16.shift, b16.y, a.mean,
                                                    a.rstd, N, HW, C, G, eps);
        if (version == 22)
            return launch_chunked<__half>(h16.x, h16.gamma, h16.beta, h16.scale, h16.shift, h16.y, a.mean, a.rstd, N,
                                          HW, C, G, eps, block);
        if (version == 23)
            return launch_chunked<__nv_bfloat16>(b16.x, b16.gamma, b16.beta, b16.scale, b16.shift, b16.y, a.mean,
                                                 a.rstd, N, HW, C, G, eps, block);
        if (version == 4)
            return launch_forward_t<__half>(h16.x, h16.gamma, h16.beta, h16.scale, h16.shift, h16.y, a.mean, a.rstd,
                                            N, HW, C, G, eps, true, block, block, nullptr, 0);
        return launch_forward_t<__nv_bfloat16>(b16.x, b16.gamma, b16.beta, b16.scale, b16.shift, b16.y, a.mean, a.rstd,
                                               N, HW, C, G, eps, true, block, block, nullptr, 0);
    };
    // Version 3's y per block size: version 6 (production's other path) must give exactly its bits.
    std::vector<std::vector<float>> v3(sizeof block_sizes / sizeof block_sizes[0]);
    // The cluster and persistent kernels (12-17) choose their own launch shape: one row each, "block auto".
    const auto picks_block = [](int version) { return version >= 12 && version <= 17; };
    for (int version : {1, 2, 3, 6, 8, 12, 15, 21}) {
        if (only && version != only) continue;
        for (size_t bi = 0; bi < (picks_block(version) ? 1 : v3.size()); bi++) {
            const int block = block_sizes[bi];
            dev_check(cudaMemset(a.y, 0xFF, nx * sizeof(float)));  // NaN: a value the kernel skips fails
            dev_check(cudaMemset(a.mean, 0xFF, size_t(N) * G * sizeof(float)));
            dev_check(cudaMemset(a.rstd, 0xFF, size_t(N) * G * sizeof(float)));
            const cudaError_t launched = run_version(version, a, block);
            if ((version == 8 || version >= 12) && launched == cudaErrorNotSupported) {
                std::printf("version %d block %4d: n/a (shape or block outside its conditions)\n", version, block);
                continue;
            }
            dev_check(launched);
            dev_check(cudaDeviceSynchronize());
            bool ok = dev::validate("y", a.y, y_ref, 1e-4, 1e-4);
            if (version == 3 || version == 6) {
                std::vector<float> got(nx);
                dev_check(cudaMemcpy(got.data(), a.y, nx * sizeof(float), cudaMemcpyDeviceToHost));
                if (version == 3) {
                    v3[bi] = got;
                } else if (!v3[bi].empty() && std::memcmp(got.data(), v3[bi].data(), nx * sizeof(float)) != 0) {
                    std::printf("version 6 block %4d: y differs from version 3's bits\n", block);
                    ok = false;
                }
            }
            ok &= dev::validate("mean", a.mean, mean_ref, 1e-5, 1e-5);
            ok &= dev::validate("rstd", a.rstd, rstd_ref, 1e-5, 1e-4);
            all_ok &= ok;
#ifdef ONESTEP_EMULATION
            std::printf("version %d block %4s: %s\n", version, picks_block(version) ? "auto" : std::to_string(block).c_str(), ok ? "ok" : "MISMATCH");
#else
            const float ms = dev::time_ms([&] { dev_check(run_version(version, a, block)); });
            const double gbs = 2.0 * nx * sizeof(float) / (ms * 1e-3) / 1e9;
            std::printf("version %d block %4s: %s  %8.4f ms  %7.1f GB/s\n", version,
                        picks_block(version) ? "auto" : std::to_string(block).c_str(), ok ? "ok      " : "MISMATCH", ms, gbs);
#endif
        }
    }
    for (int version : {4, 5, 9, 10, 13, 14, 16, 17, 22, 23}) {
        if (only && version != only) continue;
        const bool half = version == 4 || version == 9 || version == 13 || version == 16 || version == 22;
        for (int block : block_sizes) {
            if (picks_block(version) && block != block_sizes[0]) break;
            const cudaError_t launched = run_typed(version, block);
            if (version >= 9 && launched == cudaErrorNotSupported) {
                std::printf("version %d block %4d: n/a (shape or block outside its conditions)\n", version, block);
                continue;
            }
            dev_check(launched);
            dev_check(cudaDeviceSynchronize());
            // y: one rounding (2^-11 relative for fp16, 2^-8 for bf16) on top of fp32's error.
            bool ok = half ? validate_typed("y fp16", h16.y, y16, 1e-4, 1e-3)
                           : validate_typed("y bf16", b16.y, ybf, 1e-4, 8e-3);
            ok &= dev::validate("mean", a.mean, half ? m16 : mbf, 1e-5, 1e-5);
            ok &= dev::validate("rstd", a.rstd, half ? r16 : rbf, 1e-5, 1e-4);
            all_ok &= ok;
#ifdef ONESTEP_EMULATION
            std::printf("version %d block %4s: %s\n", version, picks_block(version) ? "auto" : std::to_string(block).c_str(), ok ? "ok" : "MISMATCH");
#else
            const float ms = dev::time_ms([&] { dev_check(run_typed(version, block)); });
            const double gbs = 2.0 * nx * 2 / (ms * 1e-3) / 1e9;  // 2 bytes per element read and written
            std::printf("version %d block %4s: %s  %8.4f ms  %7.1f GB/s  (%s)\n", version,
                        picks_block(version) ? "auto" : std::to_string(block).c_str(), ok ? "ok      " : "MISMATCH", ms, gbs,
                        half ? "fp16" : "bf16");
#endif
        }
    }
    // One launch of a variant on NaN-filled y, then y, mean and rstd against their references.
    auto run_and_validate = [&](auto launch_fn, const std::vector<double>& yr, const std::vector<double>& mr,
                                const std::vector<double>& rr) {
        dev_check(cudaMemset(a.y, 0xFF, nx * sizeof(float)));
        dev_check(launch_fn());
        dev_check(cudaDeviceSynchronize());
        bool ok = dev::validate("y", a.y, yr, 1e-4, 1e-4);
        ok &= dev::validate("mean", a.mean, mr, 1e-5, 1e-5);
        ok &= dev::validate("rstd", a.rstd, rr, 1e-5, 1e-4);
        return ok;
    };
    if (!only || only == 7) {
        // Version 7: the pre-add terms as ResnetBlock2D's inference pass has them (conv1's bias, the time
        // projection and its bias), no scale/shift, SiLU. Reference: the plain CPU reference on x' formed in
        // float in the kernel's order.
        std::vector<float> xb = dev::random_normal(C, 6, 0.0f, 0.5f), add = dev::random_normal(size_t(N) * C, 7, 0.0f, 1.0f),
                           ab = dev::random_normal(C, 8, 0.0f, 0.5f), xp(nx), vsum(size_t(N) * C);
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++) vsum[size_t(n) * C + c] = add[size_t(n) * C + c] + ab[c];
        for (size_t i = 0; i < nx; i++) {
            const int c = int(i % C), n = int(i / (size_t(HW) * C));
            xp[i] = (x[i] + xb[c]) + vsum[size_t(n) * C + c];
        }
        const std::vector<float> none(size_t(N) * C, 0.0f);  // scale = shift = 0: no modulation
        std::vector<double> y7(nx), m7(mean_ref.size()), r7(m7.size());
        groupnorm_forward_cpu(y7, m7, r7, xp, gamma, beta, none, none, N, HW, C, G, eps);
        float *d_xb = dev::to_device(xb), *d_add = dev::to_device(add), *d_ab = dev::to_device(ab);
        float *d_vsum = dev::to_device(vsum), *d_xp = dev::device_filled(nx, 0.0f);
        const PreAdd<float> pre{d_xb, d_add, d_ab};
        for (int block : block_sizes) {
            auto fused = [&] {
                return launch_forward_t<float>(a.x, a.gamma, a.beta, nullptr, nullptr, a.y, a.mean, a.rstd, N, HW, C, G,
                                               eps, true, block, block, nullptr, -1, pre);
            };
            const bool ok = run_and_validate(fused, y7, m7, r7);
            all_ok &= ok;
#ifdef ONESTEP_EMULATION
            std::printf("version 7 block %4d: %s\n", block, ok ? "ok" : "MISMATCH");
#else
            auto unfused = [&] {
                dev_check(launch(add_per_channel_kernel, dim3(unsigned(std::min<long long>(65535, ceil_div(nx, 256)))),
                                 dim3(256), 0, nullptr, a.x, d_vsum, d_xp, (long long)HW * C, C, (long long)nx));
                return launch_forward(d_xp, a.gamma, a.beta, nullptr, nullptr, a.y, a.mean, a.rstd, N, HW, C, G, eps,
                                      true, block, block, nullptr, -1);
            };
            const float ms = dev::time_ms([&] { dev_check(fused()); });
            const float ms_pair = dev::time_ms([&] { dev_check(unfused()); });
            const double gbs = 2.0 * nx * sizeof(float) / (ms * 1e-3) / 1e9;
            std::printf("version 7 block %4d: %s  %8.4f ms  %7.1f GB/s  (unfused add + version 3: %8.4f ms)\n", block,
                        ok ? "ok      " : "MISMATCH", ms, gbs, ms_pair);
#endif
        }
        for (float* p : {d_xb, d_add, d_ab, d_vsum, d_xp}) dev_check(cudaFree(p));
    }
    if (!only || only == 11) {
        // Version 11: production's concatenating variant (onestep_groupnorm_concat_typed), an up block's
        // norm1(cat(h, skip)) + SiLU: x's first C/2 channels come from one tensor and the rest from another, and
        // the op writes the concatenation besides y. Timed against what it replaces: a concat kernel, then the
        // group norm (versions 3/6 by size, as production picks) on the concatenation. GB/s counts reading both
        // halves and writing cat and y.
        const int Ca = C / 2, Cb = C - Ca;
        std::vector<float> ha(size_t(N) * HW * Ca), hb(size_t(N) * HW * Cb);
        for (size_t p = 0; p < size_t(N) * HW; p++)
            for (int c = 0; c < C; c++) (c < Ca ? ha[p * Ca + c] : hb[p * Cb + c - Ca]) = x[p * C + c];
        const std::vector<float> none(size_t(N) * C, 0.0f);
        std::vector<double> y11(nx), m11(mean_ref.size()), r11(m11.size());
        groupnorm_forward_cpu(y11, m11, r11, x, gamma, beta, none, none, N, HW, C, G, eps);
        float *d_a = dev::to_device(ha), *d_b = dev::to_device(hb), *d_cat = dev::device_filled(nx, 0.0f);
        const ConcatSrc<float> src{d_a, nullptr, d_b, nullptr, Ca, Cb};
        auto fused = [&] {
            return launch_concat_t<float>(src, a.gamma, a.beta, d_cat, a.y, a.mean, a.rstd, N, HW, G, eps, true,
                                          nullptr);
        };
        bool ok = run_and_validate(fused, y11, m11, r11);
        std::vector<double> xd(x.begin(), x.end());
        ok &= dev::validate("cat", d_cat, xd, 0.0, 0.0);
        all_ok &= ok;
#ifdef ONESTEP_EMULATION
        std::printf("version 11: %s\n", ok ? "ok" : "MISMATCH");
#else
        auto unfused = [&] {
            dev_check(launch(concat_kernel, dim3(unsigned(std::min<long long>(65535, ceil_div(nx, 256)))), dim3(256), 0,
                             nullptr, d_a, d_b, d_cat, (long long)N * HW, Ca, Cb));
            return launch_forward(d_cat, a.gamma, a.beta, nullptr, nullptr, a.y, a.mean, a.rstd, N, HW, C, G, eps, true,
                                  production_stats_block(N, HW, C, G), kApplyBlock, nullptr, -1);
        };
        const float ms = dev::time_ms([&] { dev_check(fused()); });
        const float ms_pair = dev::time_ms([&] { dev_check(unfused()); });
        const double gbs = 3.0 * nx * sizeof(float) / (ms * 1e-3) / 1e9;
        std::printf("version 11: %s  %8.4f ms  %7.1f GB/s  (concat + group norm: %8.4f ms)\n", ok ? "ok      " : "MISMATCH",
                    ms, gbs, ms_pair);
#endif
        for (float* p : {d_a, d_b, d_cat}) dev_check(cudaFree(p));
    }
    std::printf(all_ok ? "all versions match the CPU reference\n" : "SOME VERSIONS DO NOT MATCH the CPU reference\n");
    return all_ok ? 0 : 1;
}
