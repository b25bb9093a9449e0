// cuda_emu.h: a CPU emulation of the small CUDA subset that onestep's kernels use, so that the SAME
// kernel source compiles with g++ (-DONESTEP_EMULATION) and its logic is tested where no GPU exists.
//
// Execution model (why it is faithful enough for kernel logic):
//   * Blocks run one after another on the calling OS thread, in blockIdx order (x fastest); the blocks of a
//     thread block cluster (launch_cluster_as) run at the same time, each on an OS thread of its own.
//   * The schedule inside a block differs from block to block (by blockIdx, so every run is the same): in a third of
//     the blocks all warps advance in lockstep from barrier to barrier; in the others one warp at a time runs as far
//     as it can before the next starts, lowest warp first or highest first. So a read that needs a __syncthreads
//     after another warp's write, and a write into memory another warp has yet to read, each meet the wrong order
//     in some block of any launch with three or more blocks (with cp.async's poisoned destinations, below).
//   * The threads of one block are cooperative fibers on that one OS thread (a hand-written x86-64
//     context switch; ucontext elsewhere or with -DONESTEP_EMU_USE_UCONTEXT). A fiber runs
//     until it reaches a barrier (__syncthreads, __syncwarp, or any *_sync warp primitive) or exits;
//     the scheduler then runs the next fiber. A barrier is released once every thread it names has
//     arrived, so code that is only correct with barriers (shared-memory tiles, warp shuffles) is
//     only correct here with barriers as well. Code that races without one runs in the fixed orders of the
//     schedules above: a race between warps meets the wrong order in some block; one between the lanes of a
//     warp is not detected.
//   * Misuse aborts with a message instead of hanging: a __syncthreads that some threads never reach
//     (they exited, or wait at a different barrier), a warp primitive whose mask names a lane that
//     exited, waits elsewhere, or does not exist, a shuffle reading a lane outside the mask, and
//     launch configurations the hardware rejects (block > 1024 threads, grid.y/z > 65535, dynamic
//     shared memory > 48 KiB without cudaFuncSetAttribute, > 227 KiB at all).
//   * `__shared__` is `static thread_local`: one instance per OS thread, hence per running block.
//     Dynamic shared memory (ONESTEP_DYNAMIC_SHARED) is a per-launch buffer filled with 0xFF bytes
//     (NaN as float) before every block, so reading a tile before writing it shows up in results.
//   * Memory: cudaMalloc is aligned host memory; device and host pointers are the same thing.
//   * cp.async (emu::cp_async, behind tensor_core.cuh's cp_async16): the copy lands at the issuing thread's
//     wait_group that retires its group, and until then the destination holds 0xFF bytes (NaN in every
//     float type), as if still in flight. So a read before the wait, a wait on the wrong group count, or a
//     read of another lane's data without the barrier after its wait sees NaN whenever the fiber order puts
//     the reader first; a copy issued into a buffer other threads still read poisons their reads the same way.
//   * Programmatic dependent launch: a kernel launched by onestep::launch_dependent must call
//     await_predecessors() (griddepcontrol.wait) in every thread before anything else; one that returns
//     without it, or reaches a barrier, warp primitive or cp.async first, aborts with a message.
//   * Tensor cores: only mma.sync.m16n8k16 with fp16 or bf16 A/B and fp32 C/D (emu::mma_m16n8k16, the
//     PTX ISA's fragment layouts), as a warp collective. A kernel spells it through its own wrapper: inline
//     PTX under nvcc, this function here.
//   * ldmatrix: only .x4 (with or without .trans) of 16-bit elements (emu::ldmatrix_x4), as a warp collective.
//   * Thread block clusters along x, up to 8 blocks, or 16 for a kernel whose non-portable cluster size attribute
//     is set (ClusterState): cluster_sync is a barrier of every thread of
//     every block of the cluster; cluster_map reaches a peer's dynamic shared memory (only that); a block that
//     ends poisons its dynamic shared memory, and one that ends while its peers wait at the barrier aborts.
//   * Not emulated: half/bfloat16 math (storage and conversions only), WMMA, wgmma, cooperative
//     groups, streams as concurrency (every call is synchronous), textures, TMA. Kernels that need those
//     keep a portable fp32 path that this emulation runs.
#pragma once
#ifndef ONESTEP_EMULATION
#error "cuda_emu.h is the host emulation; build with -DONESTEP_EMULATION (nvcc builds use the real CUDA)"
#endif

#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

// ---- execution-space and qualifier macros ---------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local
#define __constant__ static
// Dynamic shared memory: `extern __shared__ T name[]` has no host spelling, so kernels declare it with
// this macro (kernels/src/cuda_compat.cuh gives the nvcc spelling).
#define ONESTEP_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::emu::dynamic_shared())

// ---- vector types ------------------------------------------------------------------------------------
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

// ---- 16-bit storage types: IEEE binary16 (cuda_fp16.h) and bfloat16 (cuda_bf16.h) ------------------------
// Only the storage types and the conversions the kernels use: the kernels load 16-bit values, compute in
// float and round once when they store, so no half arithmetic is emulated. Conversions round to nearest
// even, including subnormals, as __float2half_rn / __float2bfloat16_rn do; NaN stays NaN.
struct __half { unsigned short x; };
struct __nv_bfloat16 { unsigned short x; };
inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.x; }
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }

inline uint32_t emu_float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float emu_bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float __half2float(__half h) {
    const uint32_t sign = uint32_t(h.x & 0x8000u) << 16, exp = (h.x >> 10) & 0x1fu, mant = h.x & 0x3ffu;
    if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float
        const float mag = std::ldexp(float(mant), -24);
        return emu_bits_float(emu_float_bits(mag) | sign);
    }
    if (exp == 31) return emu_bits_float(sign | 0x7f800000u | (mant << 13));  // inf, NaN (payload kept)
    return emu_bits_float(sign | ((exp + 112u) << 23) | (mant << 13));          // rebias 15 -> 127
}
inline __half __float2half_rn(float f) {
    uint32_t x = emu_float_bits(f);
    const unsigned short sign = (unsigned short)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) return {(unsigned short)(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u))};
    if (x >= 0x477ff000u) return {(unsigned short)(sign | 0x7c00u)};  // >= 65520 rounds (to even) to inf
    if (x < 0x38800000u) {  // below 2^-14: a subnormal half (or 0); f * 2^24 is exact, rint rounds to even
        const float units = std::nearbyint(emu_bits_float(x) * 16777216.0f);
        return {(unsigned short)(sign | (unsigned short)units)};  // 1024 units is the smallest normal's encoding
    }
    x += 0xfffu + ((x >> 13) & 1u);  // round the 13 dropped bits to nearest even (a carry bumps the exponent)
    return {(unsigned short)(sign | ((x - 0x38000000u) >> 13))};
}
inline float __bfloat162float(__nv_bfloat16 b) { return emu_bits_float(uint32_t(b.x) << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    const uint32_t x = emu_float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return {(unsigned short)((x >> 16) | 0x40u)};  // quiet NaN
    return {(unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16)};
}

// ---- runtime API subset --------------------------------------------------------------------------------
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorLaunchFailure = 719,
    cudaErrorNotSupported = 801,
};
typedef cudaError_t cudaError;
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4
};
enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributeNonPortableClusterSizeAllowed = 14
};
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };

// The fiber switch. On x86-64 a hand-written switch saves only the callee-saved registers and the FP
// control words (a few ns); glibc's swapcontext also saves the signal mask with a system call on every
// switch, which made the emulated tests ~10x slower. Other architectures use ucontext.
#if defined(__x86_64__) && !defined(ONESTEP_EMU_USE_UCONTEXT)
#define ONESTEP_EMU_FAST_SWITCH 1
// emu_switch_context(save, next): pushes rbp rbx r12-r15 and mxcsr/x87 control word, stores rsp in *save,
// loads next as rsp and pops the same. Weak, so every translation unit may carry the definition.
asm(R"(
    .text
    .weak emu_switch_context
    .type emu_switch_context, @function
emu_switch_context:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch_context, .-emu_switch_context
)");
extern "C" void emu_switch_context(void** save, void* next);
#else
#define ONESTEP_EMU_FAST_SWITCH 0
#endif

namespace emu {

constexpr int kWarpSize = 32;
constexpr size_t kDefaultDynamicSharedLimit = 48 * 1024;  // without the opt-in attribute
constexpr size_t kMaxDynamicShared = 227 * 1024;          // sm_90 opt-in maximum per block

// The opt-in maximum this emulated device reports and enforces: sm_90's 227 KiB, or ONESTEP_EMU_MAX_SHARED_KB to act
// like a card with less (sm_80: 163, sm_86/89: 99), read on every query so that a test can change it.
inline size_t max_dynamic_shared() {
    const char* v = std::getenv("ONESTEP_EMU_MAX_SHARED_KB");
    const long kb = v ? std::strtol(v, nullptr, 10) : 0;
    return kb > 0 ? size_t(kb) * 1024 : kMaxDynamicShared;
}
constexpr size_t kFiberStack = 128 * 1024;

[[noreturn]] inline void die(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::fprintf(stderr, "cuda_emu: fatal: ");
    std::vfprintf(stderr, fmt, ap);
    std::fprintf(stderr, "\n");
    va_end(ap);
    std::fflush(stderr);
    std::abort();
}

enum class Wait { None, Block, Warp, Cluster, Done };

// One 16-byte (or smaller) cp.async in flight: where it lands, what it reads, zero-fill when !valid, and the commit
// group it belongs to (the issuing thread's count of commits when it was issued).
struct AsyncCopy {
    void* dst;
    const void* src;
    unsigned bytes;
    bool valid;
    long group;
};

struct Fiber {
    void* sp = nullptr;        // saved stack pointer while suspended (x86-64 switch)
#if !ONESTEP_EMU_FAST_SWITCH
    ucontext_t ctx;
#endif
    unsigned char* stack = nullptr;
    uint3 tid;
    Wait wait = Wait::None;
    unsigned mask = 0;  // the mask given to the warp primitive it waits at
    std::vector<AsyncCopy> in_flight;  // this thread's cp.async not yet landed, in issue (hence group) order
    long commits = 0;                  // cp.async.commit_group calls so far: the open group's number
    bool awaited = false;  // called await_predecessors() (launch_dependent's kernels must, first)
};

// A warp's exchange for its collectives: two banks of slots, used in turn. A collective writes its lanes' values to
// the current bank, waits at one warp barrier (whose release switches the bank), and reads them back. One barrier
// is enough: a released lane reads as soon as it resumes, and every released lane resumes before the warp's next
// barrier can be released (the schedulers resume all runnable threads between releases), so the next collective
// writes the other bank and the one after it can reuse this one only once everyone has read it.
struct WarpExchange {
    uint64_t slot[2][kWarpSize];
    uint32_t fragment[2][kWarpSize][6];  // mma_m16n8k16's operands, the A and B registers of each lane
    int bank = 0;
};

struct ClusterState;

// Bytes of 0xFF past the end of each block's dynamic shared memory. A GPU faults on a shared access past the block's
// allocation (or, inside the SM's carve-out, hits another block's data); here a read past the end reads NaN bytes,
// and a write there is caught when the block ends (run_block), naming the launch's size and the first byte changed.
constexpr size_t kSharedGuard = 64;

struct BlockState {
    std::vector<Fiber> fibers;
    std::vector<WarpExchange> warps;
    void* scheduler_sp = nullptr;
#if !ONESTEP_EMU_FAST_SWITCH
    ucontext_t scheduler;
#endif
    int current = -1;
    int nthreads = 0;
    bool dependent = false;  // launched by onestep::launch_dependent (programmatic dependent launch on a GPU)
    uint3 block_idx{0, 0, 0};
    std::function<void()> body;  // calls the kernel with the launch's arguments
    std::vector<unsigned char> dynamic_shared;
    ClusterState* cluster = nullptr;  // the thread block cluster it belongs to (launch_cluster), or none
    unsigned rank = 0;                // its rank in that cluster
};

// A thread block cluster (sm_90; CUDA programming guide, "Thread Block Clusters"): its blocks run at the same time,
// each on an OS thread of its own (so each has its own `__shared__`), and meet at the cluster barrier, which
// releases once every thread of every block waits there. Distributed shared memory (emu::cluster_map) reaches a
// peer's dynamic shared memory.
struct ClusterState {
    std::vector<BlockState*> blocks;  // by rank, filled before any block runs
    std::mutex m;
    std::condition_variable cv;
    int arrived = 0, exited = 0;
    long generation = 0;
};

// The emulation's per-thread state is hidden from other shared objects: the library then reaches it through its own
// TLS block (one __tls_get_addr per function for the module's base, then offsets) instead of looking each
// variable up by symbol at every use (the general-dynamic model a preemptible symbol needs in -fPIC code), which was
// ~6% of the emulated tests' profile.
#define ONESTEP_EMU_TLS __attribute__((visibility("hidden"))) inline thread_local
ONESTEP_EMU_TLS BlockState* g_block = nullptr;
ONESTEP_EMU_TLS cudaError_t g_last_error = cudaSuccess;
inline std::map<const void*, int>& func_max_dynamic_shared() {
    static std::map<const void*, int> m;
    return m;
}
// Kernels whose cudaFuncAttributeNonPortableClusterSizeAllowed is set: they may launch clusters of up to 16 blocks
// (what H100 and H200 allow), the others only the portable 8.
inline std::map<const void*, int>& func_non_portable_cluster() {
    static std::map<const void*, int> m;
    return m;
}

}  // namespace emu

// The built-in variables. The scheduler rewrites threadIdx before resuming each fiber, which is enough
// because a fiber can only be suspended inside an emulated barrier call.
ONESTEP_EMU_TLS uint3 threadIdx{0, 0, 0};
ONESTEP_EMU_TLS uint3 blockIdx{0, 0, 0};
ONESTEP_EMU_TLS dim3 blockDim{1, 1, 1};
ONESTEP_EMU_TLS dim3 gridDim{1, 1, 1};
constexpr int warpSize = emu::kWarpSize;

namespace emu {

inline void* dynamic_shared() {
    if (!g_block) die("dynamic shared memory used outside a kernel");
    return g_block->dynamic_shared.data();
}

inline int linear_tid() {
    return int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

// A launch_dependent kernel's thread must have called await_predecessors() before it does `what`.
inline void require_awaited(const BlockState& b, const Fiber& f, const char* what) {
    if (b.dependent && !f.awaited)
        die("a kernel launched by onestep::launch_dependent %s (thread %u of block %u): await_predecessors() must be "
            "its first statement, or on a GPU with programmatic dependent launch it could read its inputs before the "
            "kernel that writes them has finished",
            what, f.tid.x, b.block_idx.x);
}

inline void yield_to_scheduler(Wait why, unsigned mask) {
    BlockState* b = g_block;
    if (!b || b->current < 0) die("barrier or warp primitive called outside a kernel");
    Fiber& f = b->fibers[b->current];
    require_awaited(*b, f, "reached a barrier or warp primitive before await_predecessors()");
    f.wait = why;
    f.mask = mask;
#if ONESTEP_EMU_FAST_SWITCH
    emu_switch_context(&f.sp, b->scheduler_sp);
#else
    swapcontext(&f.ctx, &b->scheduler);
#endif
}

// Fiber stacks are mapped once per OS thread and reused by every launch (pages are touched lazily).
// (A cluster's blocks run on threads of their own, which unmap their stacks when they end.)
struct StackPool {
    std::vector<unsigned char*> stacks;
    ~StackPool() {
        for (unsigned char* p : stacks) munmap(p, kFiberStack);
    }
};
inline unsigned char* fiber_stack(int i) {
    static thread_local StackPool pool;
    while ((int)pool.stacks.size() <= i) {
        void* p = mmap(nullptr, kFiberStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) die("cannot map a %zu-byte fiber stack", kFiberStack);
        pool.stacks.push_back(static_cast<unsigned char*>(p));
    }
    return pool.stacks[i];
}

// Lands the thread's copies of groups before `group` (all of them: LONG_MAX), oldest first.
inline void land_before(Fiber& f, long group) {
    size_t k = 0;
    for (; k < f.in_flight.size() && f.in_flight[k].group < group; k++) {
        const AsyncCopy& c = f.in_flight[k];
        if (c.valid) std::memcpy(c.dst, c.src, c.bytes);
        else std::memset(c.dst, 0, c.bytes);
    }
    f.in_flight.erase(f.in_flight.begin(), f.in_flight.begin() + long(k));
}

inline void fiber_entry() {
    BlockState* b = g_block;
    b->body();
    {  // copies still in flight at exit land anyway (no one can read them any more)
        Fiber& f = b->fibers[b->current];
        require_awaited(*b, f, "returned without calling await_predecessors()");
        land_before(f, LONG_MAX);
    }
    b->fibers[b->current].wait = Wait::Done;
#if ONESTEP_EMU_FAST_SWITCH
    emu_switch_context(&b->fibers[b->current].sp, b->scheduler_sp);  // never resumed
    die("a finished fiber was resumed");
#endif
    // with ucontext, returning switches to uc_link (the scheduler)
}

inline unsigned lanes_present(int warp, int nthreads) {
    int n = nthreads - warp * kWarpSize;
    return n >= kWarpSize ? 0xffffffffu : ((1u << n) - 1u);
}

[[noreturn]] inline void deadlock(BlockState& b, const char* why) {
    int at_block = 0, at_warp = 0, at_cluster = 0, done = 0, running = 0;
    for (auto& f : b.fibers) {
        if (f.wait == Wait::Block) at_block++;
        else if (f.wait == Wait::Warp) at_warp++;
        else if (f.wait == Wait::Cluster) at_cluster++;
        else if (f.wait == Wait::Done) done++;
        else running++;
    }
    die("%s in block (%u,%u,%u) of %d threads: %d wait at __syncthreads, %d wait at a warp primitive, "
        "%d at the cluster barrier, %d exited, %d running",
        why, b.block_idx.x, b.block_idx.y, b.block_idx.z, b.nthreads, at_block, at_warp, at_cluster, done, running);
}

// Releases warp w's barrier if every lane its waiting lanes' mask names waits there (with the same mask); returns
// whether it did.
inline bool release_warp(BlockState& b, int w) {
    unsigned waiting = 0, mask = 0;
    bool any = false;
    for (int l = 0; l < kWarpSize && w * kWarpSize + l < b.nthreads; l++) {
        Fiber& f = b.fibers[w * kWarpSize + l];
        if (f.wait != Wait::Warp) continue;
        if (any && f.mask != mask)
            die("warp %d of block (%u,%u,%u): lanes wait at warp primitives with different masks "
                "(0x%08x and 0x%08x)", w, b.block_idx.x, b.block_idx.y, b.block_idx.z, mask, f.mask);
        mask = f.mask;
        any = true;
        waiting |= 1u << l;
    }
    if (!any) return false;
    unsigned present = lanes_present(w, b.nthreads);
    if (mask & ~present)
        die("warp %d of block (%u,%u,%u): mask 0x%08x names lanes that do not exist (present 0x%08x); "
            "use a block size that is a multiple of 32 or a partial mask",
            w, b.block_idx.x, b.block_idx.y, b.block_idx.z, mask, present);
    if (waiting == mask) {
        for (int l = 0; l < kWarpSize; l++)
            if (mask & (1u << l)) b.fibers[w * kWarpSize + l].wait = Wait::None;
        b.warps[w].bank ^= 1;  // the next collective writes the other bank (WarpExchange)
        return true;
    }
    for (int l = 0; l < kWarpSize; l++) {
        if (!(mask & (1u << l))) continue;
        if (b.fibers[w * kWarpSize + l].wait == Wait::Done)
            die("warp %d of block (%u,%u,%u): lane %d exited but mask 0x%08x of a warp primitive names it",
                w, b.block_idx.x, b.block_idx.y, b.block_idx.z, l, mask);
    }
    return false;
}

// Releases __syncthreads once every thread waits there or has exited (some exited: a deadlock on the GPU, reported).
inline bool release_block(BlockState& b) {
    int at_block = 0, done = 0;
    for (auto& f : b.fibers) {
        if (f.wait == Wait::Block) at_block++;
        else if (f.wait == Wait::Done) done++;
    }
    if (at_block > 0 && at_block + done == b.nthreads) {
        if (done > 0) deadlock(b, "__syncthreads not reached by every thread (some exited)");
        for (auto& f : b.fibers) f.wait = Wait::None;
        return true;
    }
    return false;
}

// Releases every barrier whose participants have all arrived (the warps' first); returns whether anything was.
inline bool release_barriers(BlockState& b) {
    bool released = false;
    const int nwarps = (b.nthreads + kWarpSize - 1) / kWarpSize;
    for (int w = 0; w < nwarps; w++) released |= release_warp(b, w);
    return released || release_block(b);
}

// The cluster barrier (barrier.cluster.arrive + wait): once every thread of this block waits there, the block
// waits for its peers, and all are released together. A thread that exited, or a peer block that ended, before the
// barrier is a deadlock on the GPU: reported here.
inline bool release_cluster(BlockState& b) {
    int at_cluster = 0, done = 0;
    for (auto& f : b.fibers) {
        if (f.wait == Wait::Cluster) at_cluster++;
        else if (f.wait == Wait::Done) done++;
    }
    if (at_cluster == 0 || at_cluster + done != b.nthreads) return false;
    if (done > 0) deadlock(b, "the cluster barrier not reached by every thread (some exited)");
    ClusterState& c = *b.cluster;
    std::unique_lock<std::mutex> lock(c.m);
    const long generation = c.generation;
    if (++c.arrived == int(c.blocks.size())) {
        c.arrived = 0;
        c.generation++;
        c.cv.notify_all();
    } else {
        c.cv.wait(lock, [&] { return c.generation != generation || c.exited > 0; });
        if (c.generation == generation)
            deadlock(b, "a block of its cluster ended while this one waits at the cluster barrier");
    }
    for (auto& f : b.fibers) f.wait = Wait::None;
    return true;
}

// Runs fiber i until its next barrier or its end.
inline void resume(BlockState& b, int i) {
    Fiber& f = b.fibers[i];
    b.current = i;
    threadIdx = f.tid;
#if ONESTEP_EMU_FAST_SWITCH
    emu_switch_context(&b.scheduler_sp, f.sp);
#else
    swapcontext(&b.scheduler, &f.ctx);
#endif
    b.current = -1;
}

// The guard past the dynamic shared memory (kSharedGuard) must still hold the 0xFF bytes it was filled with.
inline void check_shared_guard(const BlockState& b) {
    const size_t size = b.dynamic_shared.size() - kSharedGuard;
    for (size_t k = 0; k < kSharedGuard; k++) {
        if (b.dynamic_shared[size + k] != 0xFF) {
            die("dynamic shared memory written past its end: byte %zu of a %zu-byte allocation", size + k, size);
        }
    }
}

inline void run_block(BlockState& b) {
    for (int i = 0; i < b.nthreads; i++) {
        Fiber& f = b.fibers[i];
        f.wait = Wait::None;
        f.in_flight.clear();
        f.commits = 0;
        f.awaited = false;
#if ONESTEP_EMU_FAST_SWITCH
        // The frame emu_switch_context pops: FP control words, r15 r14 r13 r12 rbx rbp, then the return
        // address fiber_entry, placed so that rsp + 8 is 16-byte aligned at its first instruction.
        uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + kFiberStack) & ~uintptr_t(15);
        uint64_t* frame = reinterpret_cast<uint64_t*>(top) - 9;
        uint32_t fpcw[2] = {0x1F80u, 0x037Fu};  // default MXCSR (no FTZ, round to nearest) and x87 word
        std::memcpy(&frame[0], fpcw, 8);
        for (int r = 1; r <= 6; r++) frame[r] = 0;
        frame[7] = reinterpret_cast<uint64_t>(&fiber_entry);
        frame[8] = 0;  // fake return address of fiber_entry, which never returns
        f.sp = frame;
#else
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = kFiberStack;
        f.ctx.uc_link = &b.scheduler;
        makecontext(&f.ctx, fiber_entry, 0);
#endif
    }
    std::memset(b.dynamic_shared.data(), 0xFF, b.dynamic_shared.size());
    // The order fibers run in between block barriers (see the header: the schedule). Lockstep: every runnable
    // thread to its next barrier, then the barriers released, so all warps advance together. Greedy: one warp at a
    // time runs as far as it can (through its own warp barriers) before the next starts, lowest warp first or
    // highest first, so a warp that overwrites shared memory another warp has yet to read, with no __syncthreads
    // between them, poisons or changes that read.
    const int nwarps = (b.nthreads + kWarpSize - 1) / kWarpSize;
    const unsigned long linear = b.block_idx.x + 7ul * b.block_idx.y + 13ul * b.block_idx.z;
    const int policy = nwarps > 1 ? int(linear % 3) : 0;  // 0 lockstep, 1 lowest warp first, 2 highest first
    int done = 0;
    while (done < b.nthreads) {
        bool progress = false;
        if (policy == 0) {
            for (int i = 0; i < b.nthreads; i++) {
                if (b.fibers[i].wait != Wait::None) continue;
                resume(b, i);
                if (b.fibers[i].wait == Wait::Done) done++;
                progress = true;
            }
            if (done == b.nthreads) break;
            progress |= release_barriers(b);
        } else {
            for (int k = 0; k < nwarps; k++) {
                const int w = policy == 1 ? k : nwarps - 1 - k;
                const int end = std::min(b.nthreads, (w + 1) * kWarpSize);
                for (;;) {
                    bool ran = false;
                    for (int i = w * kWarpSize; i < end; i++) {
                        if (b.fibers[i].wait != Wait::None) continue;
                        resume(b, i);
                        if (b.fibers[i].wait == Wait::Done) done++;
                        ran = true;
                    }
                    const bool released = release_warp(b, w);
                    progress |= ran || released;
                    if (!released) break;
                }
            }
            if (done == b.nthreads) break;
            progress |= release_block(b);
        }
        if (!progress && b.cluster) progress = release_cluster(b);
        if (!progress) deadlock(b, "deadlock: no thread can proceed");
    }
    check_shared_guard(b);
    if (b.cluster) {  // a peer still waiting at a cluster barrier will never be released: it reports that
        // A block's shared memory is gone when it ends: a peer that reads it later (no cluster_sync after its last
        // remote read) reads NaN bytes.
        std::memset(b.dynamic_shared.data(), 0xFF, b.dynamic_shared.size());
        std::lock_guard<std::mutex> lock(b.cluster->m);
        b.cluster->exited++;
        b.cluster->cv.notify_all();
    }
}

// The launch checks of the hardware: the error a real launch would report for an invalid configuration (recorded
// for cudaGetLastError), or cudaSuccess.
template <typename... KArgs>
cudaError_t check_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t shared_bytes) {
    unsigned long threads = (unsigned long)block.x * block.y * block.z;
    cudaError_t err = cudaSuccess;
    if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.y > 65535 || grid.z > 65535)
        err = cudaErrorInvalidConfiguration;
    if (shared_bytes > max_dynamic_shared()) err = cudaErrorInvalidValue;
    if (shared_bytes > kDefaultDynamicSharedLimit) {
        auto it = func_max_dynamic_shared().find((const void*)kernel);
        if (it == func_max_dynamic_shared().end() || (size_t)it->second < shared_bytes) err = cudaErrorInvalidValue;
    }
    if (err != cudaSuccess) g_last_error = err;
    return err;
}

// A block's threads (fibers on this OS thread's stacks), warps and dynamic shared memory, ready to run `body`.
inline void prepare_block(BlockState& b, bool dependent, dim3 block, size_t shared_bytes, std::function<void()> body) {
    const unsigned long threads = (unsigned long)block.x * block.y * block.z;
    b.nthreads = int(threads);
    b.dependent = dependent;
    b.fibers.resize(threads);
    for (unsigned long i = 0; i < threads; i++) {
        b.fibers[i].stack = fiber_stack(int(i));
        b.fibers[i].tid = uint3{unsigned(i % block.x), unsigned((i / block.x) % block.y),
                                unsigned(i / ((unsigned long)block.x * block.y))};
    }
    b.warps.resize((threads + kWarpSize - 1) / kWarpSize);
    b.dynamic_shared.resize(shared_bytes + kSharedGuard);
    b.body = std::move(body);
}

// Launches `kernel` over the grid, synchronously. Returns the error a real launch would report for an
// invalid configuration (and records it for cudaGetLastError).
// `dependent`: launched as onestep::launch_dependent would be on a GPU with programmatic dependent launch,
// so every thread must call await_predecessors() before anything else (checked: see Fiber::awaited).
template <typename... KArgs, typename... Args>
cudaError_t launch_as(bool dependent, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t shared_bytes,
                      Args... args) {
    static_assert(sizeof...(KArgs) == sizeof...(Args), "kernel launched with the wrong number of arguments");
    const cudaError_t err = check_launch(kernel, grid, block, shared_bytes);
    if (err != cudaSuccess) return err;
    if (g_block) die("kernel launched from inside a kernel (dynamic parallelism is not emulated)");
    BlockState b;
    prepare_block(b, dependent, block, shared_bytes, [=]() { kernel(args...); });
    g_block = &b;
    blockDim = block;
    gridDim = grid;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                b.block_idx = uint3{x, y, z};
                blockIdx = b.block_idx;
                run_block(b);
            }
    g_block = nullptr;
    return cudaSuccess;
}

// launch_as with thread block clusters of cluster_x blocks along x (cudaLaunchAttributeClusterDimension; sm_90):
// grid.x must be a multiple of cluster_x, at most 8 (the portable size), or 16 where the kernel's
// cudaFuncAttributeNonPortableClusterSizeAllowed is set (H100/H200). The clusters run one after another; the
// blocks of one run at the same time, each on its own OS thread (so `__shared__` stays per block), and meet at
// emu::cluster_sync. The calling thread runs rank 0.
template <typename... KArgs, typename... Args>
cudaError_t launch_cluster_as(bool dependent, unsigned cluster_x, void (*kernel)(KArgs...), dim3 grid, dim3 block,
                              size_t shared_bytes, Args... args) {
    static_assert(sizeof...(KArgs) == sizeof...(Args), "kernel launched with the wrong number of arguments");
    const auto np = func_non_portable_cluster().find((const void*)kernel);
    const unsigned most = np != func_non_portable_cluster().end() && np->second ? 16 : 8;
    if (cluster_x == 0 || cluster_x > most || grid.x % cluster_x != 0) {
        g_last_error = cudaErrorInvalidValue;  // the runtime's answer to a cluster size the grid does not fit
        return cudaErrorInvalidValue;
    }
    const cudaError_t e = check_launch(kernel, grid, block, shared_bytes);
    if (e != cudaSuccess) return e;
    if (g_block) die("kernel launched from inside a kernel (dynamic parallelism is not emulated)");
    std::function<void()> body = [=]() { kernel(args...); };
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x0 = 0; x0 < grid.x; x0 += cluster_x) {
                ClusterState cluster;
                std::vector<BlockState> blocks(cluster_x);
                for (unsigned r = 0; r < cluster_x; r++) {
                    prepare_block(blocks[r], dependent, block, 0, body);
                    blocks[r].dynamic_shared.resize(shared_bytes + kSharedGuard);
                    blocks[r].block_idx = uint3{x0 + r, y, z};
                    blocks[r].cluster = &cluster;
                    blocks[r].rank = r;
                    cluster.blocks.push_back(&blocks[r]);
                }
                auto run = [&](unsigned r) {
                    BlockState& b = blocks[r];
                    for (unsigned long i = 0; i < (unsigned long)b.nthreads; i++) b.fibers[i].stack = fiber_stack(int(i));
                    g_block = &b;
                    blockDim = block;
                    gridDim = grid;
                    blockIdx = b.block_idx;
                    run_block(b);
                    g_block = nullptr;
                };
                std::vector<std::thread> peers;
                for (unsigned r = 1; r < cluster_x; r++) peers.emplace_back(run, r);
                run(0);
                for (std::thread& t : peers) t.join();
            }
    return cudaSuccess;
}

template <typename... KArgs, typename... Args>
cudaError_t launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t shared_bytes, Args... args) {
    return launch_as(false, kernel, grid, block, shared_bytes, args...);
}

inline Fiber& current_fiber(const char* what) {
    BlockState* b = g_block;
    if (!b || b->current < 0) die("%s called outside a kernel", what);
    return b->fibers[b->current];
}

// griddepcontrol.wait (PTX ISA, sm_90): on a GPU it waits until the grids this one depends on have completed
// and their writes are visible. Blocks here run one launch after another, so it only records the call.
inline void await_predecessors() { current_fiber("await_predecessors()").awaited = true; }

// prefetch.global.L2 over a range (onestep::prefetch_l2): a hint with no effect here. Allowed before
// await_predecessors(), as on a GPU; checks that it runs inside a kernel and that its part is one of its parts.
// Counts the calls (prefetch_calls(): tests check that the library's switch reaches its kernels).
inline std::atomic<long long>& prefetch_calls() {
    static std::atomic<long long> calls{0};
    return calls;
}
inline void prefetch_l2(const void* p, size_t bytes, unsigned part, unsigned parts) {
    current_fiber("prefetch_l2()");
    if (parts == 0 || part >= parts) die("prefetch_l2(%p, %zu): part %u of %u", p, bytes, part, parts);
    prefetch_calls().fetch_add(1, std::memory_order_relaxed);
}

// ---- thread block clusters (launch_cluster_as) ------------------------------------------------------
inline BlockState& cluster_block(const char* what) {
    BlockState* b = g_block;
    if (!b || b->current < 0) die("%s called outside a kernel", what);
    if (!b->cluster) die("%s in a kernel not launched as a cluster (onestep::launch_cluster)", what);
    return *b;
}
// %cluster_ctarank.
inline unsigned cluster_rank() { return cluster_block("cluster_rank()").rank; }
// barrier.cluster.arrive.release + barrier.cluster.wait.acquire: every thread of every block of the cluster.
inline void cluster_sync() {
    cluster_block("cluster_sync()");
    yield_to_scheduler(Wait::Cluster, 0);
}
// mapa: the address in block `rank`'s shared memory of what p addresses in this block's. Only dynamic shared memory
// (ONESTEP_DYNAMIC_SHARED) can be mapped here: static `__shared__` lives in each block's OS thread.
inline void* cluster_map(const void* p, unsigned rank) {
    BlockState& b = cluster_block("cluster_map()");
    const unsigned char* base = b.dynamic_shared.data();
    const unsigned char* q = static_cast<const unsigned char*>(p);
    if (q < base || q >= base + b.dynamic_shared.size())
        die("cluster_map(%p): not in this block's dynamic shared memory (the emulation maps only that)", p);
    if (rank >= b.cluster->blocks.size()) die("cluster_map: rank %u of a cluster of %zu blocks", rank, b.cluster->blocks.size());
    return b.cluster->blocks[rank]->dynamic_shared.data() + (q - base);
}

// ---- alignment ----------------------------------------------------------------------------------------
// Whether p is off a multiple of `bytes` (a power of two). A GPU faults on a vector access, cp.async or ldmatrix at
// such an address ("misaligned address", which loses the context); x86 does not, so the emulation checks each.
inline bool misaligned(const void* p, size_t bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) != 0; }

// A vector load or store of `bytes` at p: stops on a misaligned address instead of passing a kernel that would fail.
inline void require_aligned(const void* p, size_t bytes, const char* what) {
    if (misaligned(p, bytes)) die("%s of %zu bytes: misaligned address %p", what, bytes, p);
}

// ---- cp.async (PTX ISA, "cp.async", "cp.async.commit_group", "cp.async.wait_group") ---------------
// Issues a copy of `bytes` from global `src` to shared `dst` (zeros when !valid). The destination reads as
// 0xFF bytes until the copy lands at the wait that retires its group.
inline void cp_async(void* dst, const void* src, unsigned bytes, bool valid) {
    Fiber& f = current_fiber("cp.async");
    require_awaited(*g_block, f, "issued cp.async before await_predecessors()");
    // The PTX ISA requires both addresses aligned to the copy size (a GPU faults with a misaligned address, which
    // loses the context); x86 would copy anyway, so a kernel reached with an offset operand would pass here.
    const bool bad_dst = misaligned(dst, bytes);
    if (bad_dst || (valid && misaligned(src, bytes)))
        die("cp.async of %u bytes: misaligned %s address %p", bytes, bad_dst ? "shared" : "global", bad_dst ? dst : src);
    std::memset(dst, 0xFF, bytes);
    f.in_flight.push_back(AsyncCopy{dst, src, bytes, valid, f.commits});
}
inline void cp_async_commit() { current_fiber("cp.async.commit_group").commits++; }
// Lands this thread's committed groups but the newest `pending`; copies not yet committed stay in flight.
inline void cp_async_wait(int pending) {
    Fiber& f = current_fiber("cp.async.wait_group");
    land_before(f, f.commits - pending);
}

// ---- warp primitives: exchange through the warp's current bank of slots, across one warp barrier --------------
inline void warp_barrier(unsigned mask) { yield_to_scheduler(Wait::Warp, mask); }

template <typename T>
inline T shuffle_from(unsigned mask, T v, int src_lane_in_warp) {
    static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable<T>::value,
                  "shuffle of a type wider than 64 bits");
    int tid = linear_tid();
    int lane = tid % kWarpSize;
    if (!(mask & (1u << lane))) die("thread %d calls a warp primitive with a mask 0x%08x that excludes it", tid, mask);
    WarpExchange& w = g_block->warps[tid / kWarpSize];
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    const int bank = w.bank;
    w.slot[bank][lane] = bits;
    warp_barrier(mask);
    if (!(mask & (1u << src_lane_in_warp)))
        die("thread %d reads lane %d, outside the shuffle mask 0x%08x (undefined on the GPU)", tid,
            src_lane_in_warp, mask);
    bits = w.slot[bank][src_lane_in_warp];
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}

}  // namespace emu

inline void __syncthreads() { emu::yield_to_scheduler(emu::Wait::Block, 0); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::warp_barrier(mask); }

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    int lane = emu::linear_tid() % 32;
    return emu::shuffle_from(mask, v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    int lane = emu::linear_tid() % 32;
    int src = lane ^ lane_mask;
    if (src >= (lane & ~(width - 1)) + width) src = lane;
    return emu::shuffle_from(mask, v, src);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = emu::linear_tid() % 32;
    int src = ((lane & (width - 1)) + int(delta) < width) ? lane + int(delta) : lane;
    return emu::shuffle_from(mask, v, src);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = emu::linear_tid() % 32;
    int src = ((lane & (width - 1)) >= int(delta)) ? lane - int(delta) : lane;
    return emu::shuffle_from(mask, v, src);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    int tid = emu::linear_tid();
    int lane = tid % 32;
    emu::WarpExchange& w = emu::g_block->warps[tid / 32];
    const int bank = w.bank;
    w.slot[bank][lane] = pred ? 1 : 0;
    emu::warp_barrier(mask);
    unsigned r = 0;
    for (int l = 0; l < 32; l++)
        if ((mask & (1u << l)) && w.slot[bank][l]) r |= 1u << l;
    return r;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }

// ---- mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: D (16x8) = A (16x16) B (16x8) + C, fp32 accumulation --------
// Fragment layouts of the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating point type"), lane = 4 g + t:
//   A, 4 registers of two 16-bit values (the lower column in the low half): register r holds row g + 8 (r % 2),
//     columns 2t, 2t + 1 (+ 8 when r >= 2);
//   B, 2 registers: register r holds rows 2t, 2t + 1 (+ 8 when r == 1) of column g;
//   C and D, 4 floats: element i is row g + 8 (i / 2), column 2t + i % 2.
// Every lane of the warp must call it (it is a full-warp collective on the GPU too). Products of 16-bit values are
// exact in fp32; the hardware's summation order is not specified, so results agree to fp32 rounding, not bits.
namespace emu {
template <typename T>
inline float mma_element(uint32_t word, int high) {
    const unsigned short bits = static_cast<unsigned short>(high ? word >> 16 : word & 0xffffu);
    if constexpr (std::is_same_v<T, __half>) return __half2float(__half{bits});
    else return __bfloat162float(__nv_bfloat16{bits});
}
template <typename T>
inline void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "fp16 or bf16 operands");
    const int tid = linear_tid(), lane = tid % kWarpSize;
    WarpExchange& w = g_block->warps[tid / kWarpSize];
    // One exchange of all six registers (three 64-bit shuffles cost three warp barriers, each 32 fiber switches,
    // and made the emulated mma the largest item of the emulated tests' profile).
    const int bank = w.bank;
    uint32_t* mine = w.fragment[bank][lane];
    mine[0] = a[0], mine[1] = a[1], mine[2] = a[2], mine[3] = a[3], mine[4] = b0, mine[5] = b1;
    warp_barrier(0xffffffffu);
    const uint32_t(&F)[kWarpSize][6] = w.fragment[bank];
    // This lane's rows g, g + 8 of A and columns 2t, 2t + 1 of B, converted once: element (row, k) of A is half
    // k % 2 of register row / 8 + 2 (k / 8) of lane 4 (row % 8) + (k % 8) / 2; element (k, col) of B is half k % 2
    // of register k / 8 of lane 4 col + (k % 8) / 2.
    const int g = lane / 4, t = lane % 4;
    float av[2][16], bv[2][16];
    for (int h = 0; h < 2; h++) {
        for (int k = 0; k < 16; k++) {
            av[h][k] = mma_element<T>(F[g * 4 + (k % 8) / 2][h + 2 * (k / 8)], k % 2);
            bv[h][k] = mma_element<T>(F[(2 * t + h) * 4 + (k % 8) / 2][4 + k / 8], k % 2);
        }
    }
    for (int i = 0; i < 4; i++) {
        const float* ar = av[i / 2];
        const float* bc = bv[i % 2];
        float acc = c[i];
        for (int k = 0; k < 16; k++) acc += ar[k] * bc[k];
        c[i] = acc;
    }
}

// ---- ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16 (PTX ISA, "Warp-level matrix load instruction: ldmatrix") ----
// Four 8x8 matrices of 16-bit elements from shared memory, as a warp collective: lanes 8m .. 8m + 7 give the addresses
// of matrix m's rows 0 .. 7 (each row 8 contiguous elements, 16-byte aligned), and register m of lane 4 g + t receives
// row g, elements 2t and 2t + 1 (the lower in the low half), or with .trans the transposed matrix's: elements 2t and
// 2t + 1 of column g. Those are the B fragments of mma.m16n8k16 for a K tile stored [n][k] and a V tile stored [k][n].
// Every lane reads between the two barriers, so the load is one point in the warp's program order as on the GPU.
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row, bool trans) {
    const int tid = linear_tid(), lane = tid % kWarpSize;
    if (misaligned(row, 16))
        die("ldmatrix: thread %d gives the row address %p, which is not 16-byte aligned", tid, row);
    WarpExchange& w = g_block->warps[tid / kWarpSize];
    const int bank = w.bank;
    w.slot[bank][lane] = reinterpret_cast<uintptr_t>(row);
    warp_barrier(0xffffffffu);
    const int g = lane / 4, t = lane % 4;
    for (int m = 0; m < 4; m++) {
        unsigned short e[2];
        for (int j = 0; j < 2; j++) {
            const unsigned char* p = trans ? reinterpret_cast<const unsigned char*>(w.slot[bank][8 * m + 2 * t + j]) + 2 * g
                                           : reinterpret_cast<const unsigned char*>(w.slot[bank][8 * m + g]) + 2 * (2 * t + j);
            std::memcpy(&e[j], p, 2);
        }
        r[m] = uint32_t(e[0]) | uint32_t(e[1]) << 16;
    }
    warp_barrier(0xffffffffu);
}
}  // namespace emu
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }

// ---- atomics (real atomics, so they stay correct if blocks ever run on several OS threads) ---------
inline float atomicAdd(float* p, float v) {
    float old;
    __atomic_load(p, &old, __ATOMIC_RELAXED);
    float next = old + v;
    while (!__atomic_compare_exchange(p, &old, &next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) next = old + v;
    return old;
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline int atomicMax(int* p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline int atomicMin(int* p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}

// ---- fast-math intrinsics: the emulation computes them exactly (the GPU versions are approximations
// within a few ulp, which the tests' tolerances cover) ------------------------------------------------
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
// Round-to-nearest arithmetic that nvcc never fuses into an FMA; on the host each is one IEEE operation.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
template <typename T>
inline T __ldg(const T* p) { return *p; }

// ---- runtime API functions ---------------------------------------------------------------------------
inline cudaError_t cudaGetLastError() {
    cudaError_t e = emu::g_last_error;
    emu::g_last_error = cudaSuccess;
    return e;
}
inline cudaError_t cudaPeekAtLastError() { return emu::g_last_error; }
inline const char* cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
        case cudaErrorNotSupported: return "cudaErrorNotSupported";
    }
    return "cudaErrorUnknown";
}
inline const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorLaunchFailure: return "unspecified launch failure";
        case cudaErrorNotSupported: return "operation not supported";
    }
    return "unknown error";
}
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
    *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
    return *p ? cudaSuccess : (emu::g_last_error = cudaErrorMemoryAllocation);
}
template <typename T>
inline cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc(reinterpret_cast<void**>(p), bytes); }
inline cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
    std::memmove(dst, src, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind k, cudaStream_t = nullptr) {
    return cudaMemcpy(dst, src, bytes, k);
}
inline cudaError_t cudaMemset(void* p, int v, size_t bytes) { std::memset(p, v, bytes); return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t = nullptr) { return cudaMemset(p, v, bytes); }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* device) {
    *device = 0;
    return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
    if (attr != cudaDevAttrMaxSharedMemoryPerBlockOptin || device != 0) return emu::g_last_error = cudaErrorInvalidValue;
    *value = int(emu::max_dynamic_shared());
    return cudaSuccess;
}
template <typename... KArgs>
inline cudaError_t cudaFuncSetAttribute(void (*kernel)(KArgs...), cudaFuncAttribute attr, int value) {
    if (attr == cudaFuncAttributeNonPortableClusterSizeAllowed) {
        emu::func_non_portable_cluster()[(const void*)kernel] = value;
        return cudaSuccess;
    }
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || (size_t)value > emu::max_dynamic_shared())
        return emu::g_last_error = cudaErrorInvalidValue;
    emu::func_max_dynamic_shared()[(const void*)kernel] = value;
    return cudaSuccess;
}
