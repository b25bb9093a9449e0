package ai.onestep.backend.cpu;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.IntConsumer;

/**
 * The CPU backend's workers: a dedicated pool of {@code threads} threads (the caller is one of them).
 *
 * <p>{@link #parallelFor} hands out task indices {@code 0..tasks-1}; which thread runs which task does not
 * matter for the result because kernels give each task its own outputs and never split a reduction across tasks
 * in a thread-count-dependent way. That is what makes the CPU backend bit-reproducible for any thread count.
 *
 * <p>A call made from inside a task (nested parallelism) runs serially on the calling thread.
 */
public final class CpuPool {
    private static final Map<Integer, CpuPool> POOLS = new ConcurrentHashMap<>();
    private static final ThreadLocal<Boolean> IN_TASK = ThreadLocal.withInitial(() -> false);

    private final int threads;
    private final ForkJoinPool pool;

    private CpuPool(int threads) {
        this.threads = threads;
        this.pool = threads == 1 ? null : new ForkJoinPool(threads - 1, p -> {
            var t = ForkJoinPool.defaultForkJoinWorkerThreadFactory.newThread(p);
            t.setName("onestep-cpu-" + t.getPoolIndex());
            t.setDaemon(true);
            return t;
        }, null, false);
    }

    /** The shared pool with this many threads (created once per count). */
    public static CpuPool of(int threads) {
        if (threads < 1) {
            throw new IllegalArgumentException("cpu backend: thread count must be >= 1, got " + threads);
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
        if (threads == 1 || tasks == 1 || IN_TASK.get()) {
            for (int i = 0; i < tasks; i++) {
                body.accept(i);
            }
            return;
        }
        AtomicInteger next = new AtomicInteger();
        Runnable worker = () -> {
            boolean outer = IN_TASK.get();
            IN_TASK.set(true);
            try {
                for (int i = next.getAndIncrement(); i < tasks; i = next.getAndIncrement()) {
                    body.accept(i);
                }
            } finally {
                IN_TASK.set(outer);
            }
        };
        int helpers = Math.min(threads, tasks) - 1;
        ForkJoinTask<?>[] submitted = new ForkJoinTask<?>[helpers];
        for (int h = 0; h < helpers; h++) {
            submitted[h] = pool.submit(worker);
        }
        RuntimeException failure = null;
        try {
            worker.run();
        } catch (RuntimeException | Error e) {
            failure = e instanceof RuntimeException re ? re : new RuntimeException(e);
            next.set(tasks);
        }
        for (ForkJoinTask<?> t : submitted) {
            try {
                t.join();
            } catch (RuntimeException e) {
                if (failure == null) {
                    failure = e.getCause() instanceof RuntimeException re ? re : e;
                }
            }
        }
        if (failure != null) {
            throw failure;
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
