package ai.onestep.nn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class LearningRateScheduleTest {
    @Test
    void linearWarmupRampsFromZeroThenStaysConstant() {
        LearningRateSchedule s = LearningRateSchedule.linearWarmup(1e-3, 100);
        assertEquals(0f, s.lr(0));
        assertEquals(1e-5f, s.lr(1));
        assertEquals(5e-4f, s.lr(50));
        assertEquals(9.9e-4f, s.lr(99));
        assertEquals(1e-3f, s.lr(100));
        assertEquals(1e-3f, s.lr(10_000_000));
        // A pure function of the step: asking again, or out of order, gives the same value.
        assertEquals(s.lr(37), s.lr(37));
        assertEquals(3.7e-4f, s.lr(37));
        assertEquals(2e-4f, LearningRateSchedule.linearWarmup(2e-4, 0).lr(0), "no warm-up");
    }

    @Test
    void cosineAndLinearDecayFollowDiffusersFormulas() {
        LearningRateSchedule cos = LearningRateSchedule.warmupCosine(1.0, 10, 110);
        assertEquals(0.5f, cos.lr(5));
        assertEquals(1f, cos.lr(10));
        assertEquals((float) (0.5 * (1 + Math.cos(Math.PI * 0.25))), cos.lr(35));
        assertEquals(0.5f, cos.lr(60), 1e-7f);
        assertEquals(0f, cos.lr(110), 1e-7f);
        assertEquals(0f, cos.lr(500), 1e-7f);

        LearningRateSchedule lin = LearningRateSchedule.warmupLinearDecay(2.0, 10, 110);
        assertEquals(1f, lin.lr(5));
        assertEquals(2f, lin.lr(10));
        assertEquals(1f, lin.lr(60));
        assertEquals(0f, lin.lr(110));
        assertEquals(0f, lin.lr(111));
        assertEquals(0.25f, LearningRateSchedule.constant(0.25).lr(12345));
    }

    @Test
    void badArgumentsAreRefused() {
        assertThrows(IllegalArgumentException.class, () -> LearningRateSchedule.linearWarmup(-1, 10));
        assertThrows(IllegalArgumentException.class, () -> LearningRateSchedule.warmupCosine(1, 20, 10));
        assertThrows(IllegalArgumentException.class, () -> LearningRateSchedule.linearWarmup(1, 10).lr(-1));
    }
}
