package ai.onestep.backend;

import static ai.onestep.backend.OpsTesting.CPU;
import static ai.onestep.backend.OpsTesting.CPU_VS_NAIVE;
import static ai.onestep.backend.OpsTesting.NAIVE;
import static ai.onestep.backend.OpsTesting.assertClose;
import static ai.onestep.backend.OpsTesting.randn;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.TensorException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Sinusoidal (diffusers get_timestep_embedding) and Gaussian Fourier time embeddings. */
class EmbeddingTest {

    /** Timesteps over the DDPM range, fractional, and EDM-style noise levels. */
    private static Tensor timesteps(TensorArena a) {
        return a.of(Layout.ROWS, new float[] {0f, 1f, 17.5f, 999f, 0.002f, 80f, 3.3f}, 7);
    }

    @ParameterizedTest(name = "D={0} flip={1} shift={2} scale={3}")
    @CsvSource({
        "32, false, 1, 1",        // diffusers' defaults
        "128, true, 0, 1",        // UNet2DModel's Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)
        "33, true, 1, 1000",      // odd D: a trailing zero; a large scale (argument ~1e6)
        "2, false, 0, 1",         // half = 1
    })
    void sinusoidalCpuMatchesNaive(int dim, boolean flip, float shift, float scale) {
        try (TensorArena a = new TensorArena()) {
            Tensor t = timesteps(a);
            Tensor ref = a.allocate(7, dim).fill(Float.NaN);
            Tensor out = a.allocate(7, dim).fill(Float.NaN);
            NAIVE.sinusoidalEmbedding(t, flip, shift, scale, 10000f, ref);
            CPU.sinusoidalEmbedding(t, flip, shift, scale, 10000f, out);
            assertTrue(out.allFinite(), "every element written");
            assertClose("sinusoidalEmbedding cpu vs naive", out, ref, CPU_VS_NAIVE);
            if (dim % 2 == 1) {
                assertEquals(0f, out.at(3, dim - 1), "odd D pads a zero");
            }
        }
    }

    /**
     * The formula written out for one element: D = 8, half = 4, shift 1: freq_j = 10000^(-j/3); at t = 17.5, j = 2
     * the sin half is sin(17.5 * 10000^(-2/3)) and, flipped, position 2 holds the cosine.
     */
    @Test
    void sinusoidalKnownValues() {
        try (TensorArena a = new TensorArena()) {
            Tensor t = timesteps(a);
            for (Ops ops : new Ops[] {NAIVE, CPU}) {
                Tensor y = a.allocate(7, 8);
                ops.sinusoidalEmbedding(t, false, 1f, 1f, 10000f, y);
                double arg = 17.5 * Math.pow(10000, -2.0 / 3);
                assertEquals(Math.sin(arg), y.at(2, 2), 1e-6, ops.name() + " sin half");
                assertEquals(Math.cos(arg), y.at(2, 6), 1e-6, ops.name() + " cos half");
                assertEquals(0f, y.at(0, 0), ops.name() + " t = 0: sin 0");
                assertEquals(1f, y.at(0, 4), ops.name() + " t = 0: cos 0");
                ops.sinusoidalEmbedding(t, true, 1f, 1f, 10000f, y);
                assertEquals(Math.cos(arg), y.at(2, 2), 1e-6, ops.name() + " flipped: cos first");
                assertEquals(Math.sin(arg), y.at(2, 6), 1e-6, ops.name() + " flipped: sin second");
            }
        }
    }

    @ParameterizedTest(name = "log={0} flip={1}")
    @CsvSource({"false, false", "true, false", "true, true", "false, true"})
    void fourierCpuMatchesNaive(boolean log, boolean flip) {
        try (TensorArena a = new TensorArena()) {
            Tensor t = a.of(Layout.ROWS, new float[] {0.002f, 0.5f, 1f, 7.25f, 80f}, 5);
            Tensor w = randn(a, 3, 19);
            Tensor ref = a.allocate(5, 38).fill(Float.NaN);
            Tensor out = a.allocate(5, 38).fill(Float.NaN);
            NAIVE.fourierEmbedding(t, w, log, flip, ref);
            CPU.fourierEmbedding(t, w, log, flip, out);
            assertTrue(out.allFinite(), "every element written");
            assertClose("fourierEmbedding cpu vs naive", out, ref, CPU_VS_NAIVE);
            double arg = 2 * Math.PI * (log ? Math.log(7.25f) : 7.25f) * w.get(4);
            assertEquals(flip ? Math.cos(arg) : Math.sin(arg), out.at(3, 4), 1e-5, "element (3, 4)");
            assertEquals(flip ? Math.sin(arg) : Math.cos(arg), out.at(3, 19 + 4), 1e-5, "element (3, 23)");
        }
    }

    @Test
    void bitIdenticalForAnyThreadCount() {
        try (TensorArena a = new TensorArena()) {
            Tensor t = timesteps(a);
            Tensor w = randn(a, 3, 16);
            float[][] ref = null;
            for (int threads = 1; threads <= 3; threads++) {
                Ops ops = new CpuOps(threads);
                Tensor s = a.allocate(7, 64);
                Tensor f = a.allocate(7, 32);
                ops.sinusoidalEmbedding(t, true, 0f, 1f, 10000f, s);
                ops.fourierEmbedding(t, w, true, false, f);
                float[][] got = {s.toArray(), f.toArray()};
                if (ref == null) {
                    ref = got;
                }
                assertArrayEquals(ref[0], got[0], "sinusoidal, " + threads + " threads");
                assertArrayEquals(ref[1], got[1], "fourier, " + threads + " threads");
            }
        }
    }

    @Test
    void badInputNamesTheOp() {
        try (TensorArena a = new TensorArena()) {
            Tensor t = timesteps(a);
            TensorException e = assertThrows(TensorException.class,
                    () -> CPU.sinusoidalEmbedding(t, false, 1f, 1f, 10000f, a.allocate(6, 8)));
            assertTrue(e.getMessage().startsWith("sinusoidalEmbedding:"), e.getMessage());
            TensorException e2 = assertThrows(TensorException.class,
                    () -> CPU.fourierEmbedding(t, a.allocate(4), false, false, a.allocate(7, 7)));
            assertTrue(e2.getMessage().startsWith("fourierEmbedding:"), e2.getMessage());
        }
    }
}
