// test_emu.cpp: the CUDA emulation itself. Each check is a kernel whose result on a GPU is known
// (shuffle and ballot semantics, shared-memory tiles behind barriers, index coverage of 3-D grids,
// atomics, launch-configuration errors, the one tensor-core instruction and ldmatrix, cp.async's in-flight and
// wait_group semantics, launch_dependent's kernels awaiting their predecessors first, thread block clusters and their
// distributed shared memory), or whose result here is fixed
// by the emulation's per-block schedules (a racy kernel), plus misuse that must abort with a message rather than hang:
// run in a forked child whose exit signal and stderr are inspected.
#include "cuda_compat.cuh"
#include "tensor_core.cuh"
#include "test_common.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

using ktest::expect;

namespace {

__global__ void shuffle_kernel(int* out) {
    const int t = threadIdx.x, lane = t % 32;
    int* o = out + t * 6;
    o[0] = __shfl_xor_sync(0xffffffffu, t, 5);
    o[1] = __shfl_down_sync(0xffffffffu, t, 3);
    o[2] = __shfl_up_sync(0xffffffffu, t, 2);
    o[3] = __shfl_sync(0xffffffffu, t, 7);
    o[4] = __shfl_xor_sync(0xffffffffu, t, 1, 8);  // width 8 segments
    o[5] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
}

void check_shuffles() {
    std::vector<int> out(64 * 6, -1);
    onestep::launch(shuffle_kernel, dim3(1), dim3(64), 0, nullptr, out.data());
    bool ok = true;
    unsigned ballot = 0;
    for (int l = 0; l < 32; l++)
        if (l % 3 == 0) ballot |= 1u << l;
    for (int t = 0; t < 64; t++) {
        const int lane = t % 32, w = t - lane;
        const int* o = out.data() + t * 6;
        ok &= o[0] == (w + (lane ^ 5));
        ok &= o[1] == (lane + 3 < 32 ? t + 3 : t);
        ok &= o[2] == (lane >= 2 ? t - 2 : t);
        ok &= o[3] == w + 7;
        ok &= o[4] == w + (lane ^ 1);
        ok &= (unsigned)o[5] == ballot;
    }
    expect(ok, "warp shuffles/ballot returned values a GPU would not%s");
}

// Reverses each block's 256-element slice through shared memory: wrong without the barrier.
__global__ void reverse_kernel(const float* in, float* out) {
    __shared__ float tile[256];
    const int i = blockIdx.x * 256 + threadIdx.x;
    tile[threadIdx.x] = in[i];
    __syncthreads();
    out[i] = tile[255 - threadIdx.x];
}

void check_shared_and_barrier() {
    std::vector<float> in(1024), out(1024, -1.0f);
    for (int i = 0; i < 1024; i++) in[i] = float(i);
    onestep::launch(reverse_kernel, dim3(4), dim3(256), 0, nullptr, in.data(), out.data());
    bool ok = true;
    for (int b = 0; b < 4; b++)
        for (int t = 0; t < 256; t++) ok &= out[b * 256 + t] == in[b * 256 + 255 - t];
    expect(ok, "shared-memory reversal across a barrier is wrong%s");
}

__global__ void dynamic_shared_kernel(float* out, int write_first) {
    ONESTEP_DYNAMIC_SHARED(float, buf);
    if (write_first) buf[threadIdx.x] = float(threadIdx.x);
    __syncthreads();
    out[threadIdx.x] = buf[(threadIdx.x + 1) % blockDim.x];
}

void check_dynamic_shared() {
    std::vector<float> out(64);
    onestep::launch(dynamic_shared_kernel, dim3(1), dim3(64), 64 * sizeof(float), nullptr, out.data(), 1);
    bool ok = true;
    for (int t = 0; t < 64; t++) ok &= out[t] == float((t + 1) % 64);
    expect(ok, "dynamic shared memory does not hold what the block wrote%s");
    onestep::launch(dynamic_shared_kernel, dim3(1), dim3(64), 64 * sizeof(float), nullptr, out.data(), 0);
    expect(std::isnan(out[0]), "unwritten dynamic shared memory is not poisoned with NaN%s");
}

// Each lane queues three groups of one 16-byte cp.async each (slot g of its own row; group 2 zero-fills on odd
// lanes) and records, as 0/1 flags, what its slots hold at each point: in flight they read as NaN, a wait lands
// exactly the groups older than its count, and after the last wait and a __syncwarp a neighbour's data is there.
__global__ void cp_async_kernel(const float* src, int* seen) {
    namespace tc = onestep::tensor_core;
    ONESTEP_DYNAMIC_SHARED(float, slots);  // [32 lanes][3 groups][4 floats]
    const int lane = threadIdx.x;
    float* mine = slots + lane * 12;
    const float* from = src + lane * 12;
    auto landed = [&](int g) { return mine[4 * g] == from[4 * g] && mine[4 * g + 3] == from[4 * g + 3]; };
    int* o = seen + lane * 6;
    tc::cp_async16(mine, from, true);
    o[0] = std::isnan(mine[0]);  // issued, not committed
    tc::cp_async_commit();
    tc::cp_async16(mine + 4, from + 4, true);
    tc::cp_async_commit();
    tc::cp_async16(mine + 8, from + 8, lane % 2 == 0);
    tc::cp_async_commit();
    tc::cp_async_wait<2>();
    o[1] = landed(0) && std::isnan(mine[4]) && std::isnan(mine[8]);
    tc::cp_async_wait<1>();
    o[2] = landed(1) && std::isnan(mine[8]);
    tc::cp_async_wait<0>();
    o[3] = lane % 2 == 0 ? landed(2) : (mine[8] == 0.f && mine[11] == 0.f);
    __syncwarp();
    const float* next = slots + ((lane + 1) % 32) * 12;
    o[4] = next[4] == src[((lane + 1) % 32) * 12 + 4];
    o[5] = 1;
}

// A 16-byte cp.async from a global address 8 bytes off (a sub-tensor offset an entry forgot to check): a GPU faults
// with a misaligned address; the emulation must stop too, not copy.
__global__ void misaligned_cp_async_kernel(const float* src) {
    namespace tc = onestep::tensor_core;
    ONESTEP_DYNAMIC_SHARED(float, slots);
    tc::cp_async16(slots + 4 * threadIdx.x, src + 2 + 4 * threadIdx.x, true);
    tc::cp_async_commit();
    tc::cp_async_wait<0>();
}

// A 16-byte vector load 8 bytes off, and a 4-float store 4 bytes off (an offset into a tensor that an entry did not
// check): a GPU faults with a misaligned address, so the emulation must stop, not load.
__global__ void misaligned_load_kernel(const __half* src, int* out) {
    const int4 v = onestep::tensor_core::load_as<int4>(src + 4 + 8 * threadIdx.x);
    out[threadIdx.x] = v.x;
}
__global__ void misaligned_store4_kernel(float* dst) {
    onestep::store4(dst + 1 + 4 * threadIdx.x, make_float4(1.f, 2.f, 3.f, 4.f));
}

// One float past a 128-byte dynamic shared allocation (a tile size computed for one block size, launched with
// another): a GPU faults or overwrites a neighbour; the emulation's guard bytes catch it when the block ends.
__global__ void dynamic_shared_overrun_kernel() {
    ONESTEP_DYNAMIC_SHARED(float, buf);
    buf[threadIdx.x + 1] = 1.f;
}

#ifdef ONESTEP_EMU_SANITIZE
// The same faults through plain C++ (UBSan's checks, cmake/CMakeLists.txt): a float4 read through a typed pointer
// 4 bytes off, which x86 loads anyway and a GPU faults on; and a store one past a static __shared__ array, which a
// GPU lets corrupt whatever lies next to it.
__global__ void misaligned_typed_float4_kernel(const float* src, float* out) {
    const float4 v = reinterpret_cast<const float4*>(src + 1)[threadIdx.x];
    out[threadIdx.x] = v.x;
}
__global__ void shared_overrun_kernel(float* out) {
    __shared__ float tile[32];
    tile[threadIdx.x + 1] = 1.f;
    __syncthreads();
    out[threadIdx.x] = tile[threadIdx.x];
}
#endif

void check_cp_async() {
    std::vector<float> src(32 * 12);
    for (size_t i = 0; i < src.size(); i++) src[i] = float(i) + 0.25f;
    std::vector<int> seen(32 * 6, 0);
    onestep::launch(cp_async_kernel, dim3(1), dim3(32), 32 * 12 * sizeof(float), nullptr, src.data(), seen.data());
    const char* what[6] = {"an issued cp.async's destination is not poisoned until its wait%s",
                           "wait_group 2 did not land exactly the oldest group%s",
                           "wait_group 1 did not land exactly the second group%s",
                           "wait_group 0 did not land the last group (or its zero fill)%s",
                           "a neighbour's landed copy is not visible after __syncwarp%s",
                           "the cp.async kernel did not run to its end%s"};
    for (int k = 0; k < 6; k++) {
        bool ok = true;
        for (int lane = 0; lane < 32; lane++) ok &= seen[lane * 6 + k] == 1;
        expect(ok, what[k]);
    }
}

__global__ void coverage_kernel(int* hits, int nx, int ny) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int z = blockIdx.z * blockDim.z + threadIdx.z;
    atomicAdd(hits + (z * ny + y) * nx + x, 1);
}

__global__ void atomic_kernel(float* sum, int* mx) {
    atomicAdd(sum, 0.5f);
    atomicMax(mx, int(blockIdx.x * blockDim.x + threadIdx.x));
}

void check_indices_and_atomics() {
    const int nx = 2 * 8, ny = 3 * 4, nz = 2 * 2;
    std::vector<int> hits(nx * ny * nz, 0);
    onestep::launch(coverage_kernel, dim3(2, 3, 2), dim3(8, 4, 2), 0, nullptr, hits.data(), nx, ny);
    bool ok = true;
    for (int h : hits) ok &= h == 1;
    expect(ok, "a 3-D grid of 3-D blocks does not visit every index exactly once%s");
    float sum = 0.0f;
    int mx = -1;
    onestep::launch(atomic_kernel, dim3(5), dim3(96), 0, nullptr, &sum, &mx);
    expect(sum == 240.0f && mx == 479, "atomicAdd/atomicMax results are wrong%s");
}

// emu::mma_m16n8k16 against a plain matrix product, its fragments built with the PTX ISA's element formulas as the
// ISA states them ("Matrix Fragments for mma.m16n8k16 with floating point type": a_i, b_i, c_i per lane), spelled
// independently of the emulation's own index arithmetic. Each warp multiplies its own matrices. Small integers
// make every product and sum exact, so D must equal A B + C exactly.
template <typename T>
__global__ void mma_kernel(const float* a, const float* b, const float* c, float* d) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, group = lane >> 2, tig = lane % 4;
    a += warp * 16 * 16, b += warp * 16 * 8, c += warp * 16 * 8, d += warp * 16 * 8;
    unsigned short ah[8], bh[4];
    for (int i = 0; i < 8; i++) {
        const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
        const int col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
        ah[i] = std::is_same_v<T, __half> ? __half_as_ushort(__float2half_rn(a[row * 16 + col]))
                                          : __bfloat16_as_ushort(__float2bfloat16_rn(a[row * 16 + col]));
    }
    for (int i = 0; i < 4; i++) {
        const int row = tig * 2 + (i & 1) + (i >= 2 ? 8 : 0), col = group;
        bh[i] = std::is_same_v<T, __half> ? __half_as_ushort(__float2half_rn(b[row * 8 + col]))
                                          : __bfloat16_as_ushort(__float2bfloat16_rn(b[row * 8 + col]));
    }
    uint32_t ar[4], b0 = bh[0] | uint32_t(bh[1]) << 16, b1 = bh[2] | uint32_t(bh[3]) << 16;
    for (int r = 0; r < 4; r++) ar[r] = ah[2 * r] | uint32_t(ah[2 * r + 1]) << 16;
    float acc[4];
    for (int i = 0; i < 4; i++) acc[i] = c[(i < 2 ? group : group + 8) * 8 + tig * 2 + (i & 1)];
    emu::mma_m16n8k16<T>(acc, ar, b0, b1);
    for (int i = 0; i < 4; i++) d[(i < 2 ? group : group + 8) * 8 + tig * 2 + (i & 1)] = acc[i];
}

template <typename T>
void check_mma(const char* name) {
    const int warps = 2;
    std::vector<float> a(warps * 256), b(warps * 128), c(warps * 128), d(warps * 128, NAN);
    unsigned s = 12345;
    auto small = [&s]() { s = s * 1103515245u + 12345u; return float(int(s >> 16) % 9 - 4); };  // -4 .. 4
    for (float& x : a) x = small();
    for (float& x : b) x = small() * 0.5f;
    for (float& x : c) x = small();
    onestep::launch(mma_kernel<T>, dim3(1), dim3(32 * warps), 0, nullptr, a.data(), b.data(), c.data(), d.data());
    size_t bad = 0;
    for (int w = 0; w < warps; w++)
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 8; j++) {
                double want = c[w * 128 + i * 8 + j];
                for (int k = 0; k < 16; k++) want += double(a[w * 256 + i * 16 + k]) * b[w * 128 + k * 8 + j];
                bad += d[w * 128 + i * 8 + j] != float(want);
            }
    expect(bad == 0, "emu::mma_m16n8k16<%s> differs from A B + C", name);
}

__global__ void big_shared_kernel(float* out) {
    ONESTEP_DYNAMIC_SHARED(float, buf);
    buf[threadIdx.x] = 1.0f;
    out[0] = buf[0];
}

void check_launch_errors() {
    float out = 0.0f;
    cudaError_t e = onestep::launch(big_shared_kernel, dim3(1), dim3(1025), 0, nullptr, &out);
    expect(e == cudaErrorInvalidConfiguration, "a 1025-thread block was accepted%s");
    e = onestep::launch(big_shared_kernel, dim3(1), dim3(32), 64 * 1024, nullptr, &out);
    expect(e == cudaErrorInvalidValue, "64 KiB of dynamic shared memory without the opt-in was accepted%s");
    cudaFuncSetAttribute(big_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024);
    e = onestep::launch(big_shared_kernel, dim3(1), dim3(32), 64 * 1024, nullptr, &out);
    expect(e == cudaSuccess && out == 1.0f, "64 KiB of dynamic shared memory after the opt-in failed%s");
}

// ---- misuse: each must abort with a message naming the problem --------------------------------------
__global__ void divergent_barrier_kernel() {
    if (threadIdx.x < 16) __syncthreads();
}
__global__ void exited_before_barrier_kernel() {
    if (threadIdx.x >= 32) return;
    __syncthreads();
}
__global__ void mixed_barrier_kernel(float* out) {
    if (threadIdx.x % 32 < 16) out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    else __syncthreads();
}
__global__ void partial_warp_kernel(float* out) { out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 16); }
__global__ void outside_mask_kernel(float* out) {
    if (threadIdx.x < 16) out[threadIdx.x] = __shfl_xor_sync(0x0000ffffu, 1.0f, 16);
}

// Programmatic dependent launch: launch_dependent's kernels must call await_predecessors() first, in every thread.
__global__ void awaiting_kernel(float* out) {
    onestep::await_predecessors();
    out[threadIdx.x] = float(threadIdx.x);
    __syncthreads();
}
__global__ void not_awaiting_kernel(float* out) { out[threadIdx.x] = 1.f; }
__global__ void barrier_before_await_kernel(float* out) {
    __syncthreads();
    onestep::await_predecessors();
    out[threadIdx.x] = 1.f;
}
__global__ void some_threads_return_early_kernel(float* out) {
    if (threadIdx.x >= 16) return;
    onestep::await_predecessors();
    out[threadIdx.x] = 1.f;
}

void check_dependent_launch() {
    std::vector<float> out(64, -1.f);
    onestep::launch_dependent(awaiting_kernel, dim3(2), dim3(64), 0, nullptr, out.data());
    bool ok = true;
    for (int t = 0; t < 64; t++) ok &= out[t] == float(t);
    expect(ok, "a kernel that awaits its predecessors did not run under launch_dependent%s");
    onestep::launch(not_awaiting_kernel, dim3(1), dim3(64), 0, nullptr, out.data());
    expect(out[0] == 1.f, "a plain launch does not need await_predecessors()%s");
}

void expect_abort(const char* what, const char* needle, const std::function<void()>& body, bool ubsan = false) {
    std::fflush(stdout);
    int fds[2];
    if (pipe(fds) != 0) std::abort();
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        alarm(20);  // a hang fails the check instead of the whole CTest run
        body();
        _exit(0);
    }
    close(fds[1]);
    std::string err;
    char buf[512];
    ssize_t k;
    while ((k = read(fds[0], buf, sizeof buf)) > 0) err.append(buf, size_t(k));
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    const bool aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
    const bool stopped = aborted || (ubsan && WIFEXITED(status) && WEXITSTATUS(status) != 0);
    const bool named = err.find(needle) != std::string::npos;
    expect(stopped && named, "%s", (std::string(what) + ": did not stop with \"" + needle + "\"; stderr: " + err).c_str());
}

// UBSan's checks end the process with its message and exit code 1 (UBSAN_OPTIONS may make that an abort).
void expect_stop(const char* what, const char* needle, const std::function<void()>& body) {
    expect_abort(what, needle, body, true);
}

// Thread block clusters: 4 blocks a cluster along x, two clusters, 64 threads a block. Each block puts 100 * its
// block index + rank in dynamic shared memory, and static __shared__ a value of its own; after the cluster barrier
// every thread reads its peers' words through cluster_map (in rank order), and its own static word; a second barrier
// keeps every block alive until the peers have read. Two rounds, so the barrier is reused.
__global__ void cluster_kernel(int* out) {
    onestep::await_predecessors();
    ONESTEP_DYNAMIC_SHARED(int, word);
    __shared__ int mine;
    const unsigned rank = onestep::cluster_rank();
    int total = 0;
    for (int round = 0; round < 2; round++) {
        if (threadIdx.x == 0) word[round] = 100 * int(blockIdx.x) + int(rank) + 1000 * round, mine = int(blockIdx.x);
        onestep::cluster_sync();
        for (unsigned r = 0; r < 4; r++) total += *onestep::cluster_map(word + round, r);
        total += 10000 * (mine == int(blockIdx.x));
        onestep::cluster_sync();
    }
    if (threadIdx.x == 63) out[blockIdx.x] = total;
}
__global__ void cluster_early_exit_kernel(int* out) {
    onestep::await_predecessors();
    if (onestep::cluster_rank() == 1) return;  // block 1 of the cluster ends without meeting the barrier
    onestep::cluster_sync();
    out[blockIdx.x] = 1;
}

void check_clusters() {
    std::vector<int> out(8, -1);
    const cudaError_t e = onestep::launch_cluster(cluster_kernel, dim3(8), dim3(64), 4, 2 * sizeof(int), nullptr,
                                                  out.data());
    bool ok = e == cudaSuccess;
    for (int b = 0; b < 8; b++) {
        const int first = b / 4 * 4;  // the cluster's first block
        int want = 2 * 10000;
        for (int round = 0; round < 2; round++)
            for (int r = 0; r < 4; r++) want += 100 * (first + r) + r + 1000 * round;
        ok &= out[b] == want;
    }
    expect(ok, "a cluster's blocks do not see each other's dynamic shared memory after cluster_sync, or share "
               "their static __shared__%s");
    expect(onestep::launch_cluster(cluster_kernel, dim3(6), dim3(64), 4, 8, nullptr, out.data()) ==
               cudaErrorInvalidValue, "a grid of 6 blocks in clusters of 4 was accepted%s");
}

void check_misuse() {
    float out[64];
    expect_abort("__syncthreads in a branch", "not reached by every thread",
                 [] { onestep::launch(divergent_barrier_kernel, dim3(1), dim3(64), 0, nullptr); });
    expect_abort("__syncthreads after some threads exited", "not reached by every thread",
                 [] { onestep::launch(exited_before_barrier_kernel, dim3(1), dim3(64), 0, nullptr); });
    expect_abort("half a warp at a shuffle, half at __syncthreads", "deadlock",
                 [&] { onestep::launch(mixed_barrier_kernel, dim3(1), dim3(64), 0, nullptr, out); });
    expect_abort("full-mask shuffle in a 48-thread block", "do not exist",
                 [&] { onestep::launch(partial_warp_kernel, dim3(1), dim3(48), 0, nullptr, out); });
    expect_abort("shuffle reading a lane outside its mask", "outside the shuffle mask",
                 [&] { onestep::launch(outside_mask_kernel, dim3(1), dim3(32), 0, nullptr, out); });
    expect_abort("launch_dependent kernel without await_predecessors()", "returned without calling await_predecessors",
                 [&] { onestep::launch_dependent(not_awaiting_kernel, dim3(1), dim3(64), 0, nullptr, out); });
    expect_abort("launch_dependent kernel whose threads return before awaiting", "returned without calling",
                 [&] { onestep::launch_dependent(some_threads_return_early_kernel, dim3(1), dim3(64), 0, nullptr, out); });
    expect_abort("barrier before await_predecessors()", "before await_predecessors()",
                 [&] { onestep::launch_dependent(barrier_before_await_kernel, dim3(1), dim3(64), 0, nullptr, out); });
    int iout[4];
    expect_abort("a block of a cluster ends before the cluster barrier", "ended while this one waits",
                 [&] { onestep::launch_cluster(cluster_early_exit_kernel, dim3(4), dim3(32), 4, 0, nullptr, iout); });
    expect_abort("cluster_sync outside a cluster launch", "not launched as a cluster",
                 [&] { onestep::launch_dependent(cluster_kernel, dim3(1), dim3(64), 8, nullptr, iout); });
    alignas(16) float src[4 * 32 + 4] = {};
    expect_abort("a 16-byte cp.async from a global address 8 bytes off", "misaligned global address",
                 [&] { onestep::launch(misaligned_cp_async_kernel, dim3(1), dim3(32), 512, nullptr, src); });
    alignas(16) __half halves[8 * 32 + 8] = {};
    int got[32] = {};
    expect_abort("a 16-byte vector load 8 bytes off", "vector load (load_as) of 16 bytes: misaligned",
                 [&] { onestep::launch(misaligned_load_kernel, dim3(1), dim3(32), 0, nullptr, halves, got); });
    expect_abort("a float4 store 4 bytes off", "vector store (store4) of 16 bytes: misaligned",
                 [&] { onestep::launch(misaligned_store4_kernel, dim3(1), dim3(32), 0, nullptr, src); });
    expect_abort("a store one past the dynamic shared memory", "written past its end: byte 128 of a 128-byte",
                 [&] { onestep::launch(dynamic_shared_overrun_kernel, dim3(1), dim3(32), 128, nullptr); });
#ifdef ONESTEP_EMU_SANITIZE
    float fout[32] = {};
    expect_stop("a float4 read through a typed pointer 4 bytes off", "misaligned address",
                 [&] { onestep::launch(misaligned_typed_float4_kernel, dim3(1), dim3(32), 0, nullptr, src, fout); });
    expect_stop("a store one past a __shared__ array", "index 32 out of bounds",
                 [&] { onestep::launch(shared_overrun_kernel, dim3(1), dim3(32), 0, nullptr, fout); });
#else
    std::printf("test_emu: built without ONESTEP_EMU_SANITIZE: typed misaligned and out-of-bounds accesses unchecked\n");
#endif
}

// The schedule (cuda_emu.h): block (x, y, z) runs its warps in lockstep when (x + 7y + 13z) % 3 == 0, else one warp
// at a time, lowest first (1) or highest first (2). A racy kernel: after a barrier, warp 0 reads a shared word that
// warp 1 overwrites with no barrier between. In lockstep warp 0's lanes run first in each round, so they read the old
// value; lowest-first too; highest-first runs warp 1 to its end before warp 0 starts, so warp 0 reads the new one.
// And warp 0 writes a word that warp 1 then reads with no __syncthreads between: lockstep (warp 0's write a round
// earlier) and lowest-first show warp 1 the write, highest-first the value before it.
__global__ void race_kernel(int* out) {
    __shared__ int word, early;
    if (threadIdx.x == 0) word = 1, early = 0;
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x * 2] = word;  // the write-after-read race
    if (threadIdx.x == 32) word = 2;
    __syncwarp();
    if (threadIdx.x == 1) early = 5;                        // the read-after-write race
    __syncwarp();
    if (threadIdx.x == 33) out[blockIdx.x * 2 + 1] = early;
}

void check_schedules() {
    std::vector<int> out(6, -1);
    onestep::launch(race_kernel, dim3(3), dim3(64), 0, nullptr, out.data());
    expect(out[0] == 1 && out[2] == 1 && out[4] == 2,
           "the write-after-read race does not read the old value in lockstep and lowest-first blocks and the new one "
           "highest-first%s");
    expect(out[1] == 5 && out[3] == 5 && out[5] == 0,
           "the read-after-write race does not read the old value highest-first only%s");
}

// ldmatrix.x4 with and without .trans against the PTX ISA's fragment of it ("Warp-level matrix load instruction:
// ldmatrix"): register m of lane 4 g + t is row g, elements 2t, 2t + 1 of matrix m (the lower in the low half), or
// with .trans elements 2t, 2t + 1 of its column g. Lanes 8m .. 8m + 7 point at the rows of matrix m, here rows
// 8m .. 8m + 7 of a 32-row tile whose element (row, col) holds 100 row + col, stored with a padded pitch (rows are
// not adjacent). Then the fragments feed mma.m16n8k16 as the attention kernel uses them: K^T from a [key][d] tile
// without .trans, V from a [key][d] tile with it, each against A B in exact arithmetic.
constexpr int kLdmPitch = 24;  // 16-bit elements a row: 48 bytes, a multiple of 16 as ldmatrix needs
__global__ void ldmatrix_kernel(uint32_t* frags, float* products) {
    __shared__ __align__(16) unsigned short tile[32 * kLdmPitch];
    const int lane = threadIdx.x;
    for (int c = 0; c < kLdmPitch; c++) tile[lane * kLdmPitch + c] = static_cast<unsigned short>(100 * lane + c);
    __syncwarp();
    uint32_t r[4];
    onestep::tensor_core::ldmatrix_x4<false>(r, tile + lane * kLdmPitch + 8);  // columns 8 .. 15 of each row
    for (int m = 0; m < 4; m++) frags[lane * 8 + m] = r[m];
    onestep::tensor_core::ldmatrix_x4<true>(r, tile + lane * kLdmPitch + 8);
    for (int m = 0; m < 4; m++) frags[lane * 8 + 4 + m] = r[m];
    __syncwarp();
    // A (16 x 16) = rows 0..15 of a second tile of small integers: 2-3 a row, as the MMA's row-major A fragments.
    // B = K^T where K is the 8 x 16 (key x d) tile Ks, and B = V for the 16 x 8 (key x d) tile Vs.
    for (int c = 0; c < kLdmPitch; c++) {
        const float k = float((lane * 7 + c * 3) % 9 - 4), v = float((lane * 5 + c) % 7 - 3);
        tile[lane * kLdmPitch + c] = __half_as_ushort(__float2half_rn(lane < 8 ? k : v));
    }
    __syncwarp();
    const int g = lane / 4, t = lane % 4;
    uint32_t a[4];
    for (int i = 0; i < 4; i++) {
        const int row = g + 8 * (i % 2), col = 2 * t + 8 * (i / 2);
        auto av = [](int rr, int cc) { return __half_as_ushort(__float2half_rn(float((rr + 2 * cc) % 5 - 2))); };
        a[i] = uint32_t(av(row, col)) | uint32_t(av(row, col + 1)) << 16;
    }
    // K: rows 0..7 (keys), d 0..15: matrices (keys 0-7, d 0-7), (keys 0-7, d 8-15); lanes 16-31 repeat them.
    onestep::tensor_core::ldmatrix_x4<false>(r, tile + (lane & 7) * kLdmPitch + 8 * ((lane >> 3) & 1));
    float s[4] = {0.f, 0.f, 0.f, 0.f};
    onestep::tensor_core::mma<__half>(s, a, r[0], r[1]);
    // V: rows 8..23 (keys 0..15), d 0..7: matrices (keys 0-7), (keys 8-15); lanes 16-31 repeat them.
    onestep::tensor_core::ldmatrix_x4<true>(r, tile + (8 + (lane & 15)) * kLdmPitch);
    float o[4] = {0.f, 0.f, 0.f, 0.f};
    onestep::tensor_core::mma<__half>(o, a, r[0], r[1]);
    for (int i = 0; i < 4; i++) {
        products[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = s[i];
        products[128 + (g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = o[i];
    }
}

void check_ldmatrix() {
    std::vector<uint32_t> frags(32 * 8, 0);
    std::vector<float> products(256, NAN);
    onestep::launch(ldmatrix_kernel, dim3(1), dim3(32), 0, nullptr, frags.data(), products.data());
    size_t bad_plain = 0, bad_trans = 0;
    for (int lane = 0; lane < 32; lane++) {
        const int g = lane / 4, t = lane % 4;
        for (int m = 0; m < 4; m++) {
            auto at = [](int row, int col) { return uint32_t(100 * row + 8 + col); };  // column 8 + col of the tile
            const int row0 = 8 * m;
            bad_plain += frags[lane * 8 + m] != (at(row0 + g, 2 * t) | at(row0 + g, 2 * t + 1) << 16);
            bad_trans += frags[lane * 8 + 4 + m] != (at(row0 + 2 * t, g) | at(row0 + 2 * t + 1, g) << 16);
        }
    }
    expect(bad_plain == 0, "ldmatrix.x4 gives other elements than row g, columns 2t, 2t + 1%s");
    expect(bad_trans == 0, "ldmatrix.x4.trans gives other elements than column g, rows 2t, 2t + 1%s");
    size_t bad_k = 0, bad_v = 0;
    for (int i = 0; i < 16; i++)
        for (int n = 0; n < 8; n++) {
            double qk = 0, pv = 0;
            for (int k = 0; k < 16; k++) {
                const double a = (i + 2 * k) % 5 - 2;
                qk += a * ((n * 7 + k * 3) % 9 - 4);   // K[key n][d k]
                pv += a * (((8 + k) * 5 + n) % 7 - 3);  // V[key k][d n], stored at tile row 8 + k
            }
            bad_k += products[i * 8 + n] != float(qk);
            bad_v += products[128 + i * 8 + n] != float(pv);
        }
    expect(bad_k == 0, "ldmatrix.x4 fragments of a [key][d] tile do not multiply as K^T%s");
    expect(bad_v == 0, "ldmatrix.x4.trans fragments of a [key][d] tile do not multiply as V%s");
}

}  // namespace

int main() {
    const auto start = std::chrono::steady_clock::now();
    check_shuffles();
    check_shared_and_barrier();
    check_dynamic_shared();
    check_cp_async();
    check_dependent_launch();
    check_indices_and_atomics();
    check_launch_errors();
    check_mma<__half>("__half");
    check_mma<__nv_bfloat16>("__nv_bfloat16");
    check_ldmatrix();
    check_schedules();
    check_clusters();
    check_misuse();
    return ktest::finish("test_emu", start);
}
