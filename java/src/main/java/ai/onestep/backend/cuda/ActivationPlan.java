package ai.onestep.backend.cuda;

import java.util.Arrays;

/**
 * Where each activation of a captured pass lives: offsets into one arena such that two activations share memory only
 * when their lifetimes (from the op that allocates one to the last op that reads or writes it) do not overlap.
 *
 * <p>A pass's tensors are bump-allocated on the host ({@code Workspace}) and mirrored on the device by
 * {@link Residency}, so without a plan every activation of a U-Net forward keeps its own memory until the pass ends.
 * A pass issues the same allocations in the same order on every run of its key (the {@code runPass} contract), so
 * its first run ({@link Recorder}, in the bump-allocated measuring arena) records each allocation's size and the
 * ops that first and last touch it; the plan computed from that record is what the warm-up and the captured graph
 * run in ({@link Planned}), and a run that strays from it is caught ({@link Mismatch}) and measured again.
 *
 * <p>The placement is the "greedy by size" offset calculation of Pisarchyk and Lee, "Efficient Memory Management
 * for Deep Neural Net Inference" (2020), Section 4.3: the largest allocation first, each at the lowest offset where
 * it overlaps, in memory, no allocation already placed whose lifetime overlaps its own. Its peak is at least the
 * most bytes live at any one op (the lower bound the tests check) and at most the bump total.
 */
final class ActivationPlan {
    /** Aligned size of each allocation, in allocation order. */
    private final long[] sizes;
    /** The op that allocated it, and the last op that touched it (inclusive; {@link Integer#MAX_VALUE}: the pass's end). */
    private final int[] first;
    private final int[] last;
    private final long[] offsets;
    private final long peak;
    /** Bytes of the renewals (new contents of a tensor that had memory already), which a bump arena did not need. */
    private final long renewedBytes;
    /** Made by {@link #of} (reuse), not {@link #bump}. */
    private final boolean reuses;

    private ActivationPlan(long[] sizes, int[] first, int[] last, long[] offsets, boolean reuses, long renewedBytes) {
        this.sizes = sizes.clone();
        this.first = first.clone();
        this.last = last.clone();
        this.offsets = offsets;
        this.reuses = reuses;
        this.renewedBytes = renewedBytes;
        long p = DeviceArena.ALIGN;
        for (int i = 0; i < sizes.length; i++) {
            p = Math.max(p, offsets[i] + sizes[i]);
        }
        this.peak = p;
    }

    /** The greedy-by-size placement of allocations with these aligned sizes and lifetimes. */
    static ActivationPlan of(long[] sizes, int[] first, int[] last) {
        return of(sizes, first, last, 0);
    }

    /** The same, for a record whose renewals took {@code renewedBytes} (see {@link #bumpBytes}). */
    private static ActivationPlan of(long[] sizes, int[] first, int[] last, long renewedBytes) {
        int n = sizes.length;
        Integer[] order = new Integer[n];
        for (int i = 0; i < n; i++) {
            order[i] = i;
        }
        // Largest first (ties: earliest first, so a plan is a pure function of the record).
        Arrays.sort(order, (a, b) -> sizes[a] != sizes[b] ? Long.compare(sizes[b], sizes[a]) : Integer.compare(a, b));
        long[] offsets = new long[n];
        int[] placed = new int[n];  // placed allocations, kept sorted by offset
        int count = 0;
        for (int i : order) {
            long cursor = 0;
            for (int k = 0; k < count; k++) {
                int j = placed[k];
                if (first[j] > last[i] || first[i] > last[j]) {
                    continue;  // never live at the same time: free to share memory
                }
                if (offsets[j] - cursor >= sizes[i]) {
                    break;  // the gap before j holds it
                }
                cursor = Math.max(cursor, offsets[j] + sizes[j]);
            }
            offsets[i] = cursor;
            int at = count;
            while (at > 0 && offsets[placed[at - 1]] > cursor) {
                placed[at] = placed[at - 1];
                at--;
            }
            placed[at] = i;
            count++;
        }
        return new ActivationPlan(sizes, first, last, offsets, true, renewedBytes);
    }

    /** Every allocation after the previous one, as a bump arena does (the plan with no reuse). */
    static ActivationPlan bump(long[] sizes, int[] first, int[] last) {
        return bump(sizes, first, last, 0);
    }

    private static ActivationPlan bump(long[] sizes, int[] first, int[] last, long renewedBytes) {
        long[] offsets = new long[sizes.length];
        long cursor = 0;
        for (int i = 0; i < sizes.length; i++) {
            offsets[i] = cursor;
            cursor += sizes[i];
        }
        return new ActivationPlan(sizes, first, last, offsets, false, renewedBytes);
    }

    /** Bytes of the arena the plan needs. */
    long peak() {
        return peak;
    }

    /** Bytes the same allocations take one after another (no reuse). */
    long total() {
        long t = 0;
        for (long s : sizes) {
            t += s;
        }
        return t;
    }

    /**
     * Bytes of a bump arena that keeps each tensor at one address for the whole pass (how passes ran before plans):
     * the total less the renewals, which only a plan makes.
     */
    long bumpBytes() {
        return total() - renewedBytes;
    }

    /** True for a plan that reuses memory (and renews whole overwrites), false for {@link #bump}. */
    boolean reuses() {
        return reuses;
    }

    /** The most bytes live at any one op: no placement can need less. */
    long liveBound() {
        int ops = 0;
        for (int i = 0; i < sizes.length; i++) {
            ops = Math.max(ops, first[i] + 1);
        }
        long[] delta = new long[ops + 1];
        for (int i = 0; i < sizes.length; i++) {
            delta[first[i]] += sizes[i];
            int end = last[i] == Integer.MAX_VALUE ? ops : Math.min(ops, last[i] + 1);
            delta[end] -= sizes[i];
        }
        long live = 0, most = 0;
        for (long d : delta) {
            live += d;
            most = Math.max(most, live);
        }
        return most;
    }

    int count() {
        return sizes.length;
    }

    long offset(int i) {
        return offsets[i];
    }

    long size(int i) {
        return sizes[i];
    }

    int first(int i) {
        return first[i];
    }

    int last(int i) {
        return last[i];
    }

    static long aligned(long bytes) {
        return Math.max(DeviceArena.ALIGN, (bytes + DeviceArena.ALIGN - 1) / DeviceArena.ALIGN * DeviceArena.ALIGN);
    }

    /**
     * The first run of a pass: allocations come from {@code backing} one after another (a bump arena), and each
     * one's size and lifetime are recorded. {@link Residency} reports the touches and the ends of ops. A renewal
     * ({@link #renew}) is recorded as an allocation of its own but runs in the memory of the one it renews, as the
     * pass ran before plans: the measuring arena needs the bump bytes of {@link #bumpBytes}, not the total.
     */
    static final class Recorder implements DeviceAllocator {
        private final DeviceAllocator backing;
        private long[] addresses = new long[256];
        private long[] sizes = new long[256];
        private int[] first = new int[256];
        private int[] last = new int[256];
        private long renewed;
        private int n;
        private int op;
        /** The last plan made from this record, and whether it reuses memory. */
        private ActivationPlan plan;

        Recorder(DeviceAllocator backing) {
            this.backing = backing;
        }

        @Override
        public long allocate(long bytes, String what) {
            return record(backing.allocate(bytes, what), bytes);
        }

        @Override
        public long renew(int old, long bytes, String what) {
            if (aligned(bytes) != sizes[old]) {
                throw new IllegalStateException("renewal of " + what + ": " + bytes + " bytes, the tensor had "
                        + sizes[old]);
            }
            renewed += sizes[old];
            return record(addresses[old], bytes);
        }

        private long record(long address, long bytes) {
            if (n == sizes.length) {
                addresses = Arrays.copyOf(addresses, 2 * n);
                sizes = Arrays.copyOf(sizes, 2 * n);
                first = Arrays.copyOf(first, 2 * n);
                last = Arrays.copyOf(last, 2 * n);
            }
            addresses[n] = address;
            sizes[n] = aligned(bytes);
            first[n] = op;
            last[n] = op;
            n++;
            return address;
        }

        @Override
        public void reset() {
            backing.reset();
            n = 0;
            op = 0;
            renewed = 0;
            plan = null;
        }

        @Override
        public int lastAllocation() {
            return n - 1;
        }

        @Override
        public void touch(int allocation) {
            last[allocation] = Math.max(last[allocation], op);
        }

        @Override
        public void pin(int allocation) {
            last[allocation] = Integer.MAX_VALUE;
        }

        @Override
        public void endOp() {
            op++;
        }

        /** The plan for what was recorded: greedy reuse, or ({@code reuse} false) one allocation after another. */
        ActivationPlan plan(boolean reuse) {
            if (plan != null && plan.reuses() == reuse) {
                return plan;
            }
            long[] s = Arrays.copyOf(sizes, n);
            int[] f = Arrays.copyOf(first, n);
            int[] l = Arrays.copyOf(last, n);
            plan = reuse ? of(s, f, l, renewed) : bump(s, f, l, renewed);
            return plan;
        }
    }

    /**
     * A planned pass's allocator: the i-th allocation since {@link #reset} is at {@code base + offset(i)}, and it
     * must be the recorded size, made by the recorded op; a touch after an allocation's recorded last op, or an allocation the plan does not
     * have, throws {@link Mismatch} (the body did not repeat its first run). In checking mode every allocation is
     * first filled with NaN bytes, so an op that reads memory no op of the pass wrote shows up as NaN.
     */
    static final class Planned implements DeviceAllocator {
        private final Device device;
        private final ActivationPlan plan;
        private final long base;
        private final String pass;
        private boolean poison;
        private int next;
        private int op;

        Planned(Device device, ActivationPlan plan, long base, String pass) {
            this.device = device;
            this.plan = plan;
            this.base = base;
            this.pass = pass;
        }

        void poison(boolean on) {
            poison = on;
        }

        @Override
        public long allocate(long bytes, String what) {
            if (next >= plan.count() || aligned(bytes) != plan.size(next) || op != plan.first(next)) {
                throw new Mismatch("pass '" + pass + "': allocation " + next + " (" + what + ", " + bytes
                        + " bytes, op " + op + ") is not the one its first run made ("
                        + (next < plan.count() ? plan.size(next) + " bytes at op " + plan.first(next)
                        : "it made " + plan.count()) + ")");
            }
            long p = base + plan.offset(next);
            if (poison && !device.capturing()) {
                Device.check(ai.onestep.kernels.OnestepKernels.onestep_memset(p, 0xFF, plan.size(next),
                        device.stream()), "memset", () -> "poisoning " + what);
            }
            next++;
            return p;
        }

        @Override
        public void reset() {
            next = 0;
            op = 0;
        }

        @Override
        public int lastAllocation() {
            return next - 1;
        }

        @Override
        public void touch(int allocation) {
            if (op > plan.last(allocation)) {
                throw new Mismatch("pass '" + pass + "': op " + op + " uses allocation " + allocation
                        + ", which its first run last used at op " + plan.last(allocation)
                        + " (its memory may hold another tensor by now)");
            }
        }

        @Override
        public void endOp() {
            op++;
        }
    }

    /** A planned run did not repeat the run its plan was made from: the pass is measured again. */
    static final class Mismatch extends CudaException {
        Mismatch(String message) {
            super(message);
        }
    }
}
