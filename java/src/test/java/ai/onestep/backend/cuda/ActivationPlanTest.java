package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The placement of a pass's activations ({@link ActivationPlan}) against brute force: no two allocations that live
 * at the same time share a byte, and the peak lies between the bytes live at once (no plan can do better) and the
 * bump total. No device needed.
 */
class ActivationPlanTest {
    private static final long A = DeviceArena.ALIGN;

    /** Every pair that is live at one op at the same time occupies disjoint bytes. */
    private static void assertNoSharedLiveBytes(ActivationPlan p) {
        for (int i = 0; i < p.count(); i++) {
            for (int j = i + 1; j < p.count(); j++) {
                boolean together = p.first(i) <= p.last(j) && p.first(j) <= p.last(i);
                boolean overlap = p.offset(i) < p.offset(j) + p.size(j) && p.offset(j) < p.offset(i) + p.size(i);
                assertTrue(!(together && overlap), "allocations " + i + " [" + p.first(i) + ", " + p.last(i) + "] at "
                        + p.offset(i) + "+" + p.size(i) + " and " + j + " [" + p.first(j) + ", " + p.last(j) + "] at "
                        + p.offset(j) + "+" + p.size(j) + " are live together and share memory");
            }
        }
    }

    @Test
    void aChainOfTensorsNeedsTwoAtOnce() {
        // x0 -> x1 -> x2 -> x3: op k reads x(k-1) and writes x(k); each dies once the next is written.
        long[] sizes = {4 * A, 4 * A, 4 * A, 4 * A};
        int[] first = {0, 1, 2, 3};
        int[] last = {1, 2, 3, 3};
        ActivationPlan p = ActivationPlan.of(sizes, first, last);
        assertNoSharedLiveBytes(p);
        assertEquals(8 * A, p.peak(), "two tensors live at once");
        assertEquals(16 * A, p.total());
        assertEquals(8 * A, p.liveBound());
        assertEquals(16 * A, ActivationPlan.bump(sizes, first, last).peak(), "no reuse: one after another");
    }

    @Test
    void aPinnedAllocationKeepsItsMemoryToTheEnd() {
        // An input (pinned) and three temporaries: the temporaries reuse one another's memory, never the input's.
        long[] sizes = {2 * A, 2 * A, 2 * A, 2 * A};
        int[] first = {0, 0, 1, 2};
        int[] last = {Integer.MAX_VALUE, 0, 1, 2};
        ActivationPlan p = ActivationPlan.of(sizes, first, last);
        assertNoSharedLiveBytes(p);
        assertEquals(4 * A, p.peak());
        for (int i = 1; i < 4; i++) {
            assertTrue(p.offset(i) != p.offset(0), "temporary " + i + " is not placed on the input");
        }
    }

    @Test
    void randomLifetimesNeverShareLiveMemory() {
        SplittableRandom r = new SplittableRandom(7);
        for (int trial = 0; trial < 40; trial++) {
            int n = 1 + r.nextInt(300);
            int ops = 1 + r.nextInt(200);
            long[] sizes = new long[n];
            int[] first = new int[n];
            int[] last = new int[n];
            for (int i = 0; i < n; i++) {
                sizes[i] = A * (1 + r.nextInt(r.nextBoolean() ? 4 : 200));
                first[i] = r.nextInt(ops);
                last[i] = r.nextInt(10) == 0 ? Integer.MAX_VALUE : first[i] + r.nextInt(1 + r.nextInt(ops));
            }
            ActivationPlan p = ActivationPlan.of(sizes, first, last);
            assertNoSharedLiveBytes(p);
            assertTrue(p.liveBound() <= p.peak() && p.peak() <= p.total(), "trial " + trial + ": bound "
                    + p.liveBound() + ", peak " + p.peak() + ", total " + p.total());
            for (int i = 0; i < n; i++) {
                assertEquals(0, p.offset(i) % A, "aligned");
            }
        }
    }

    @Test
    void theRecorderTracksFirstAndLastUse() {
        // A recorder over a bump allocator: allocations in order, touches extend lifetimes, endOp advances the op.
        DeviceAllocator backing = new DeviceAllocator() {  // a bump allocator with no device behind it
            long next;

            @Override
            public long allocate(long bytes, String what) {
                long p = next;
                next += ActivationPlan.aligned(bytes);
                return p;
            }

            @Override
            public void reset() {
                next = 0;
            }
        };
        ActivationPlan.Recorder rec = new ActivationPlan.Recorder(backing);
        rec.reset();
        rec.allocate(100, "x");               // op 0: allocation 0 (rounded up to one unit)
        rec.pin(rec.lastAllocation());
        rec.endOp();
        rec.allocate(3 * A, "h");             // op 1: allocation 1
        rec.endOp();
        rec.allocate(3 * A, "g");             // op 2: allocation 2, reads h
        rec.touch(1);
        rec.endOp();
        rec.allocate(3 * A, "y");             // op 3: allocation 3 reads g only
        rec.touch(2);
        ActivationPlan p = rec.plan(true);
        assertEquals(4, p.count());
        assertEquals(A, p.size(0));
        assertEquals(Integer.MAX_VALUE, p.last(0));
        assertEquals(2, p.last(1));
        assertEquals(3, p.first(3));
        assertEquals(p.offset(1), p.offset(3), "y takes h's memory (h died at op 2)");
        assertEquals(A + 6 * A, p.peak());
    }

    @Test
    void aRunThatStraysFromItsPlanIsCaught() {
        long[] sizes = {A, 2 * A};
        ActivationPlan p = ActivationPlan.of(sizes, new int[] {0, 1}, new int[] {1, 1});
        ActivationPlan.Planned planned = new ActivationPlan.Planned(null, p, 1 << 20, "test");
        assertEquals(1 << 20, planned.allocate(A, "a") - p.offset(0));
        assertThrows(ActivationPlan.Mismatch.class, () -> planned.allocate(3 * A, "b"), "another size");
        planned.reset();
        planned.allocate(A, "a");
        assertThrows(ActivationPlan.Mismatch.class, () -> planned.allocate(2 * A, "b"), "made by another op");
        planned.reset();
        planned.allocate(A, "a");
        planned.endOp();
        planned.allocate(2 * A, "b");
        planned.touch(0);                                     // op 1: its recorded last use
        planned.endOp();
        assertThrows(ActivationPlan.Mismatch.class, () -> planned.touch(0), "a use after its last");
        assertThrows(ActivationPlan.Mismatch.class, () -> planned.allocate(A, "c"), "one more than recorded");
    }
}
