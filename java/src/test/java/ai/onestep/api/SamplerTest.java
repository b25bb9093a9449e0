package ai.onestep.api;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.tensor.TensorArena;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

/**
 * The embedding API's batching: {@code sample(n)} runs the network on at most {@code maxBatch} samples at a time
 * (memory stays bounded for any n), and the samples are the same bits whatever the batch limit, because sample i
 * depends only on (seed, i).
 */
class SamplerTest {
    private static final Path STUDENT = Path.of("../models/fmnist-student-half.safetensors");
    private static final Path TEACHER = Path.of("../models/fmnist-teacher.safetensors");

    private static float[] draw(Path model, int n, int steps, int maxBatch) {
        try (Sampler s = Sampler.load(model, "cpu"); TensorArena a = new TensorArena()) {
            return s.maxBatch(maxBatch).sample(n, steps, 11, a).toArray();
        }
    }

    @Test
    void studentSamplesDoNotDependOnTheBatchLimit() {
        float[] whole = draw(STUDENT, 5, 2, Sampler.DEFAULT_MAX_BATCH);
        float[] batched = draw(STUDENT, 5, 2, 2);  // batches of 2, 2 and 1
        assertArrayEquals(whole, batched);
        float[] first = draw(STUDENT, 2, 2, Sampler.DEFAULT_MAX_BATCH);
        for (int i = 0; i < first.length; i++) {
            assertTrue(first[i] == whole[i], "sample 0 and 1 of a 5-sample request are those of a 2-sample one");
        }
    }

    @Test
    void teacherSamplesDoNotDependOnTheBatchLimit() {
        assertArrayEquals(draw(TEACHER, 3, 2, Sampler.DEFAULT_MAX_BATCH), draw(TEACHER, 3, 2, 1));
    }

    /**
     * Calls from several threads on one sampler give each caller the samples a lone call gives: the workspace the
     * network's activations live in belongs to one call at a time.
     */
    @Test
    void concurrentCallsGiveTheSamplesOfSequentialOnes() throws Exception {
        try (Sampler s = Sampler.load(STUDENT, "cpu")) {
            float[][] alone = new float[4][];
            for (int t = 0; t < alone.length; t++) {
                try (TensorArena a = new TensorArena()) {
                    alone[t] = s.sample(3, 2, 100 + t, a).toArray();
                }
            }
            float[][] together = new float[alone.length][];
            Thread[] threads = new Thread[alone.length];
            for (int t = 0; t < threads.length; t++) {
                int seed = 100 + t;
                int slot = t;
                threads[t] = new Thread(() -> {
                    try (TensorArena a = new TensorArena()) {
                        together[slot] = s.sample(3, 2, seed, a).toArray();
                    }
                });
            }
            for (Thread th : threads) {
                th.start();
            }
            for (Thread th : threads) {
                th.join();
            }
            for (int t = 0; t < alone.length; t++) {
                assertArrayEquals(alone[t], together[t], "seed " + (100 + t));
            }
        }
    }

    @Test
    void aNegativeSampleCountIsRefused() {
        try (Sampler s = Sampler.load(STUDENT, "cpu"); TensorArena a = new TensorArena()) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> s.sample(-1, 1, 0, a));
            assertTrue(e.getMessage().contains("number of samples"), e.getMessage());
        }
    }

    @Test
    void aBatchLimitBelowOneIsRefused() {
        try (Sampler s = Sampler.load(STUDENT, "cpu")) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> s.maxBatch(0));
            assertTrue(e.getMessage().contains("batch limit"), e.getMessage());
        }
    }
}
