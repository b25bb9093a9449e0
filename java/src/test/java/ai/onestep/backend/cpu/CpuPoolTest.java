package ai.onestep.backend.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

/** The worker pool: every task runs exactly once, failures surface, nesting and concurrent callers stay correct. */
class CpuPoolTest {
    @Test
    void everyTaskRunsExactlyOnceAcrossManyBackToBackJobs() {
        CpuPool pool = CpuPool.of(3);
        for (int job = 0; job < 2000; job++) {
            int tasks = 1 + job % 37;
            int[] hits = new int[tasks];
            pool.parallelFor(tasks, i -> hits[i]++);
            int[] once = new int[tasks];
            java.util.Arrays.fill(once, 1);
            assertArrayEquals(once, hits, "job " + job);
        }
    }

    @Test
    void helpersTakePartAndTheCallerSeesTheirWrites() throws Exception {
        CpuPool pool = CpuPool.of(2);
        Set<String> threads = ConcurrentHashMap.newKeySet();
        long[] out = new long[64];
        for (int rep = 0; rep < 200 && threads.size() < 2; rep++) {
            pool.parallelFor(64, i -> {
                threads.add(Thread.currentThread().getName());
                long s = 0;
                for (int k = 0; k < 20_000; k++) {
                    s += (long) k * i;
                }
                out[i] = s;
            });
        }
        assertEquals(2, threads.size(), "the caller and the helper both ran tasks: " + threads);
        for (int i = 0; i < 64; i++) {
            assertEquals(199_990_000L * i, out[i], "task " + i);
        }
    }

    @Test
    void aFailureStopsTheJobAndReachesTheCaller() {
        CpuPool pool = CpuPool.of(2);
        AtomicInteger ran = new AtomicInteger();
        // The other tasks take 0.2 ms each, so running all 999 would take the other thread 0.2 s: without that,
        // a thread descheduled between taking task 3 and throwing could see the other one finish every task
        // first (under CI load it did), and "the others stop" would be a race rather than a property.
        var e = assertThrows(IllegalStateException.class, () -> pool.parallelFor(1000, i -> {
            ran.incrementAndGet();
            if (i == 3) {
                throw new IllegalStateException("task 3");
            }
            java.util.concurrent.locks.LockSupport.parkNanos(200_000);
        }));
        assertEquals("task 3", e.getMessage());
        assertTrue(ran.get() < 1000, "the other tasks stop: " + ran.get());
        int[] hits = new int[10];
        pool.parallelFor(10, i -> hits[i]++);
        assertEquals(10, java.util.Arrays.stream(hits).sum(), "the pool works after a failure");
    }

    @Test
    void nestedCallsRunOnTheCallingTask() {
        CpuPool pool = CpuPool.of(2);
        AtomicReference<String> mismatch = new AtomicReference<>();
        pool.parallelFor(8, i -> {
            Thread outer = Thread.currentThread();
            pool.parallelFor(4, j -> {
                if (Thread.currentThread() != outer) {
                    mismatch.set("task " + i + "." + j + " left its thread");
                }
            });
        });
        assertEquals(null, mismatch.get());
    }

    @Test
    void concurrentCallersEachGetAllTheirTasks() throws Exception {
        // Two application threads share the pool: one holds it, the other runs its job serially; both complete.
        CpuPool pool = CpuPool.of(2);
        int callers = 4;
        CountDownLatch start = new CountDownLatch(1);
        Thread[] ts = new Thread[callers];
        long[][] sums = new long[callers][];
        AtomicReference<Throwable> failure = new AtomicReference<>();
        for (int c = 0; c < callers; c++) {
            int id = c;
            ts[c] = new Thread(() -> {
                try {
                    start.await();
                    long[] s = new long[500];
                    for (int rep = 0; rep < 50; rep++) {
                        pool.parallelFor(500, i -> s[i] += i + id);
                    }
                    sums[id] = s;
                } catch (Throwable t) {
                    failure.set(t);
                }
            });
            ts[c].start();
        }
        start.countDown();
        for (Thread t : ts) {
            t.join(60_000);
        }
        assertSame(null, failure.get());
        for (int c = 0; c < callers; c++) {
            for (int i = 0; i < 500; i++) {
                assertEquals(50L * (i + c), sums[c][i], "caller " + c + " task " + i);
            }
        }
    }
}
