package ai.onestep.backend.cpu;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.IntConsumer;

/**
 * The CPU backend's workers: {@code threads - 1} dedicated helper threads plus the calling thread.
 *
 * <p>{@link #parallelFor} hands out task indices {@code 0..tasks-1}; which thread runs which task does not
 * matter for the result because kernels give each task its own outputs and never split a reduction across tasks
 * in a thread-count-dependent way. That is what makes the CPU backend bit-reproducible for any thread count.
 *
 * <p>Why not a ForkJoinPool: a network evaluation at batch 1 is about a hundred parallel ops of 10-150 us each,
 * back to back. A parked worker takes tens of microseconds to wake (measured on this 2-core VM: two 5 us tasks
 * took 76 us at the median after a 200 us pause, 25 us back to back), which is paid on almost every op. So after
 * a job the helpers spin (Thread.onSpinWait) for {@code -Donestep.cpu.spinMicros} (default 300) before they park,
 * as OpenMP runtimes do with an active wait policy: the next op of the same evaluation finds them awake. Set it to
 * 0 to park at once (shared machines where an idle core must stay idle).
 *
 * <p>A call made from inside a task (nested parallelism) runs serially on the calling thread, and so does a call
 * made while another thread's job holds the pool: two sampler threads sharing a pool never wait for each other,
 * and a serial run gives the same bits.
 */
public final class CpuPool {
    private static final Map<Integer, CpuPool> POOLS = new ConcurrentHashMap<>();
    private static final ThreadLocal<Boolean> IN_TASK = ThreadLocal.withInitial(() -> false);
    /** How long an idle helper spins before it parks. */
    static final long SPIN_NANOS = Long.getLong("onestep.cpu.spinMicros", 300L) * 1000L;

    private final int threads;
    private final Helper[] helpers;
    /** One job at a time; a caller that finds the pool busy runs its tasks itself. */
    private final ReentrantLock submit = new ReentrantLock();
    private volatile Job current;

    /** One parallelFor: its task counter, the threads in it, and the first failure. */
    private static final class Job {
        final IntConsumer body;
        final int tasks;
        final AtomicInteger next = new AtomicInteger();
        /** Threads working on the job (the caller counts from the start); -1 once the caller closed it. */
        final AtomicInteger active = new AtomicInteger(1);
        volatile Throwable failure;

        Job(IntConsumer body, int tasks) {
            this.body = body;
            this.tasks = tasks;
        }

        /** Takes task indices until none are left; the first exception stops the others. */
        void work() {
            for (int i = next.getAndIncrement(); i < tasks; i = next.getAndIncrement()) {
                try {
                    body.accept(i);
                } catch (RuntimeException | Error e) {
                    if (failure == null) {
                        failure = e;
                    }
                    next.set(tasks);
                }
            }
        }

        /** A helper joins unless the caller has closed the job (then the work is done anyway). */
        boolean join() {
            for (int a = active.get(); a >= 0; a = active.get()) {
                if (active.compareAndSet(a, a + 1)) {
                    return true;
                }
            }
            return false;
        }
    }

    private final class Helper extends Thread {
        volatile boolean parked;

        Helper(int index) {
            super("onestep-cpu-" + index);
            setDaemon(true);
        }

        @Override
        public void run() {
            IN_TASK.set(true);
            Job seen = null;
            while (true) {
                Job j = current;
                long spinUntil = System.nanoTime() + SPIN_NANOS;
                while (j == null || j == seen) {
                    if (System.nanoTime() < spinUntil) {
                        Thread.onSpinWait();
                    } else {
                        // Dekker-style with submitJob: either this read sees the new job, or the submitter sees
                        // parked and unparks us (a permit given before park makes park return at once).
                        parked = true;
                        if (current == seen) {
                            LockSupport.park(this);
                        }
                        parked = false;
                        spinUntil = System.nanoTime() + SPIN_NANOS;
                    }
                    j = current;
                }
                seen = j;
                if (j.join()) {
                    j.work();
                    j.active.decrementAndGet();
                }
            }
        }
    }

    private CpuPool(int threads) {
        this.threads = threads;
        this.helpers = new Helper[threads - 1];
        for (int i = 0; i < helpers.length; i++) {
            helpers[i] = new Helper(i + 1);
            helpers[i].start();
        }
    }

    /** More helpers than this only oversubscribe (and each is an OS thread that spins between ops). */
    public static final int MAX_THREADS = 1024;

    /** The shared pool with this many threads (created once per count). */
    public static CpuPool of(int threads) {
        if (threads < 1 || threads > MAX_THREADS) {
            throw new IllegalArgumentException("cpu backend: thread count must be in 1.." + MAX_THREADS + " (this machine has "
                    + Runtime.getRuntime().availableProcessors() + " cores), got " + threads);
        }
        return POOLS.computeIfAbsent(threads, CpuPool::new);
    }

    public int threads() {
        return threads;
    }

    /** Runs {@code body.accept(i)} for every {@code i} in {@code [0, tasks)}, in parallel; returns when all are done. */
    public void parallelFor(int tasks, IntConsumer body) {
        if (tasks <= 0) {
            return;
        }
        if (threads == 1 || tasks == 1 || IN_TASK.get() || !submit.tryLock()) {
            for (int i = 0; i < tasks; i++) {
                body.accept(i);
            }
            return;
        }
        Job job = new Job(body, tasks);
        try {
            current = job;
            for (Helper h : helpers) {
                if (h.parked) {
                    LockSupport.unpark(h);
                }
            }
            IN_TASK.set(true);
            try {
                job.work();
            } finally {
                IN_TASK.set(false);
            }
            // Close the job: wait for the helpers inside it to leave, then bar late ones (they would find no
            // task left, but must not count as working on it after we return).
            job.active.decrementAndGet();
            while (!job.active.compareAndSet(0, -1)) {
                Thread.onSpinWait();
            }
        } finally {
            submit.unlock();
        }
        Throwable f = job.failure;
        if (f instanceof RuntimeException re) {
            throw re;
        }
        if (f instanceof Error e) {
            throw e;
        }
    }

    /**
     * Splits {@code [0, n)} into contiguous chunks of at least {@code grain} elements (about 4 per thread, for
     * balance) and runs {@code body.run(from, to)} on each. The chunk boundaries depend on the thread count, so
     * use it only where each element's result does not depend on how the range is cut (elementwise work); a
     * reduction must cut its input into a fixed number of pieces and combine them in a fixed order.
     */
    public void parallelRange(long n, long grain, RangeBody body) {
        if (n <= 0) {
            return;
        }
        long chunks = Math.max(1, Math.min((n + grain - 1) / Math.max(1, grain), 4L * threads));
        long step = (n + chunks - 1) / chunks;
        int tasks = (int) ((n + step - 1) / step);
        parallelFor(tasks, i -> body.run(i * step, Math.min(n, (i + 1) * step)));
    }

    @FunctionalInterface
    public interface RangeBody {
        void run(long from, long to);
    }
}
