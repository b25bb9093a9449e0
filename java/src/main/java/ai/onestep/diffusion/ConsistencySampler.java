package ai.onestep.diffusion;

import ai.onestep.backend.Ops;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.Arrays;

/**
 * Multistep consistency sampling (Song et al. 2023, Algorithm 1): {@code x = f(T z, T)}; then for each tau in a
 * decreasing list, re-noise {@code x <- x + sqrt(tau^2 - eps^2) z} and denoise {@code x <- f(x, tau)}. One network
 * evaluation per step.
 */
public final class ConsistencySampler {
    /** Checkpoint metadata key for a student's multistep re-noising times: {@code "2:0.82;4:5.2,1.1,0.3"} (steps:taus). */
    public static final String TIMEPOINTS = "onestep.consistency.timepoints";

    private ConsistencySampler() {
    }

    /**
     * Joins two {@link #TIMEPOINTS} specs: the entries of {@code fresh} replace those of {@code old} with the same
     * step count, the others are kept (a search up to 2 steps keeps the stored 3- and 4-step points). Ordered by
     * step count.
     */
    public static String mergeTimepoints(String old, String fresh) {
        java.util.TreeMap<Integer, String> m = new java.util.TreeMap<>();
        for (String spec : new String[] {old, fresh}) {
            if (spec == null || spec.isBlank()) {
                continue;
            }
            for (String part : spec.split(";")) {
                String[] kv = part.split(":");
                if (kv.length != 2) {
                    throw new IllegalArgumentException(TIMEPOINTS + ": '" + part + "' is not steps:tau[,tau...]");
                }
                m.put(Integer.parseInt(kv[0].trim()), kv[1].trim());
            }
        }
        StringBuilder b = new StringBuilder();
        m.forEach((k, v) -> b.append(b.isEmpty() ? "" : ";").append(k).append(':').append(v));
        return b.toString();
    }

    /**
     * On entry {@code x} holds T z (z ~ N(0, I)); on return the sample. {@code taus} are the re-noising times after
     * the first step (empty for one step), strictly decreasing, each in (eps, T). Noise for step k comes from the
     * stream (seed, k) so a seed fixes the result.
     */
    public static void sample(Ops ops, Denoiser f, Tensor x, double[] taus, int[] classLabels, long seed, long firstSample) {
        sample(ops, f, x, taus, classLabels, seed, firstSample, false);
    }

    /**
     * As above; with {@code onePass} the whole sampling, every network evaluation and re-noising, is one
     * {@link Ops#runPass} (on the cuda backend one CUDA graph per time-point list and shape, replayed for every new
     * noise: the noises are drawn on the host first and are the pass's inputs). The same operations in the same order
     * either way, so the same bits.
     */
    public static void sample(Ops ops, Denoiser f, Tensor x, double[] taus, int[] classLabels, long seed, long firstSample,
                              boolean onePass) {
        double prev = ConsistencyParameterization.T_MAX;
        for (double tau : taus) {
            if (!(tau > ConsistencyParameterization.EPS && tau < prev)) {
                throw new IllegalArgumentException("consistency sampler: time points " + Arrays.toString(taus)
                        + " must decrease strictly inside (" + ConsistencyParameterization.EPS + ", "
                        + ConsistencyParameterization.T_MAX + ")");
            }
            prev = tau;
        }
        int n = x.dim(0);
        try (TensorArena scratch = new TensorArena()) {
            Tensor[] bufs = {scratch.allocate(x.layout(), x.shape()), scratch.allocate(x.layout(), x.shape())};
            Tensor[] z = new Tensor[taus.length];
            for (int k = 0; k < taus.length; k++) {
                z[k] = scratch.allocate(x.layout(), x.shape());
                Noise.gaussian(z[k], seed + 1_000_003L * (k + 1), firstSample);
            }
            Tensor[] result = new Tensor[1];
            Runnable body = () -> {
                // Ping-pong between two buffers: no host copy inside the pass (it would not reach device memory).
                double[] t = new double[n];
                Arrays.fill(t, ConsistencyParameterization.T_MAX);
                f.denoise(x, t, classLabels, bufs[0]);
                int cur = 0;
                for (int k = 0; k < taus.length; k++) {
                    double tau = taus[k];
                    // Algorithm 1 line 5: x <- x + sqrt(tau^2 - eps^2) z.
                    ops.axpy((float) Math.sqrt(tau * tau - ConsistencyParameterization.EPS
                            * ConsistencyParameterization.EPS), z[k], bufs[cur]);
                    Arrays.fill(t, tau);
                    f.denoise(bufs[cur], t, classLabels, bufs[1 - cur]);
                    cur = 1 - cur;
                }
                result[0] = bufs[cur];
            };
            if (onePass) {
                Tensor[] inputs = new Tensor[1 + taus.length];
                inputs[0] = x;
                System.arraycopy(z, 0, inputs, 1, taus.length);
                // The pass's output is the buffer the last step writes: bufs[taus.length % 2].
                Tensor out = bufs[taus.length % 2];
                ops.runPass("consistency sample taus=" + Arrays.toString(taus) + EdmDenoiser.labelsKey(classLabels),
                        inputs, new Tensor[] {out}, body);
                result[0] = out;
            } else {
                body.run();
            }
            x.copyFrom(result[0]);
        }
    }
}
