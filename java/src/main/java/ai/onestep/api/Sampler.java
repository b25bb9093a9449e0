package ai.onestep.api;

import ai.onestep.backend.Backends;
import ai.onestep.backend.Ops;
import ai.onestep.backend.cuda.Precision;
import ai.onestep.diffusion.ConsistencyDenoiser;
import ai.onestep.diffusion.ConsistencyParameterization;
import ai.onestep.diffusion.ConsistencySampler;
import ai.onestep.diffusion.EdmDenoiser;
import ai.onestep.diffusion.EdmSampler;
import ai.onestep.diffusion.KarrasSchedule;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetCheckpoint;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.function.IntConsumer;

/**
 * What an application embeds: load a teacher or student checkpoint once, then draw samples.
 * <pre>{@code
 * try (Sampler s = Sampler.load(Path.of("models/fmnist-teacher.safetensors"), "cpu")) {
 *     Tensor images = s.sample(16, 18, 42, arena);   // (16, 28, 28, 1) in [-1, 1]
 * }
 * }</pre>
 * A teacher samples with EDM's Heun method ({@code steps} noise levels, 2 steps - 1 network evaluations); a
 * consistency student with Algorithm 1 of Song et al. 2023 ({@code steps} evaluations, at the time points stored
 * in its checkpoint).
 * <p>One sampler serves one call at a time: its workspace, and on the cuda backend its graphs, belong to the call in
 * flight, so calls from several threads queue behind each other (the cpu backend already uses every core for one
 * batch). For independent streams on a many-core machine, load one sampler per stream with a share of the threads.
 */
public final class Sampler implements AutoCloseable {
    /** See {@link ConsistencySampler#TIMEPOINTS}. */
    public static final String TIMEPOINTS = ConsistencySampler.TIMEPOINTS;

    /**
     * Samples per network batch by default. The workspace holds a batch's activations (about 8 MB per sample for
     * the fmnist-small U-Net), so {@code sample(n)} runs in batches of at most this many: memory stays bounded
     * whatever n is asked for (an unbatched {@code report --n 2000} was killed by the kernel's OOM killer at 24 GB).
     */
    public static final int DEFAULT_MAX_BATCH = 256;

    private final UNetCheckpoint.Loaded model;
    private final Ops ops;
    private final Workspace ws = new Workspace();
    private int maxBatch = DEFAULT_MAX_BATCH;

    private Sampler(UNetCheckpoint.Loaded model, Ops ops) {
        this.model = model;
        this.ops = ops;
        // The weights never change after loading: a device backend keeps one copy of them for every pass.
        ops.registerParameters(model.net().weightTensors());
    }

    public static Sampler load(Path checkpoint, String backend) {
        return load(checkpoint, backend, null);
    }

    /**
     * As {@link #load(Path, String)}; on the cuda backend the sampling passes store activations and weights in
     * {@code precision}: "fp16" (the default on a GPU), "bf16" or "fp32" (null: the default). Arithmetic stays fp32.
     */
    public static Sampler load(Path checkpoint, String backend, String precision) {
        return load(checkpoint, backend, precision, Runtime.getRuntime().availableProcessors());
    }

    /** As above, with {@code threads} for the cpu backend (all cores by default). */
    public static Sampler load(Path checkpoint, String backend, String precision, int threads) {
        Precision p = precision == null ? null : Precision.parse(precision);
        UNetCheckpoint.Loaded model = UNetCheckpoint.load(checkpoint, false);
        return new Sampler(model, Backends.byName(backend, threads, System.err::println, p));
    }

    public boolean isStudent() {
        return model.role().equals("student");
    }

    public UNet net() {
        return model.net();
    }

    public Ops ops() {
        return ops;
    }

    /**
     * Sets the largest batch one network evaluation gets (memory against throughput). The samples do not depend
     * on it: sample i is a function of (seed, i) only.
     */
    public synchronized Sampler maxBatch(int max) {
        if (max < 1) {
            throw new IllegalArgumentException("sample: the batch limit must be >= 1, got " + max);
        }
        this.maxBatch = max;
        return this;
    }

    /** Network evaluations per sample for a number of steps. */
    public int nfe(int steps) {
        return isStudent() ? steps : EdmSampler.nfe(EdmSampler.Method.HEUN, steps);
    }

    /** Draws {@code n} samples (N, H, W, C) into {@code into}; sample i depends only on (seed, i). */
    public Tensor sample(int n, int steps, long seed, int[] classLabels, TensorArena into, IntConsumer onStep) {
        return sample(n, steps, seed, classLabels, into, onStep, null);
    }

    /**
     * As above; {@code onBatch} (may be null) hears the number of samples finished after each batch of at most
     * {@link #maxBatch} (a progress report for long requests).
     */
    public synchronized Tensor sample(int n, int steps, long seed, int[] classLabels, TensorArena into,
            IntConsumer onStep, IntConsumer onBatch) {
        var cfg = model.net().config();
        if (n < 0) {
            throw new IllegalArgumentException("sample: the number of samples must be >= 0, got " + n);
        }
        if (cfg.sampleSize() <= 0) {
            throw new IllegalArgumentException("sample: the checkpoint's config has no sample_size");
        }
        if (steps < 1) {
            throw new IllegalArgumentException("sample: --steps must be >= 1, got " + steps);
        }
        if (classLabels != null && classLabels.length != n) {
            throw new IllegalArgumentException("sample: " + classLabels.length + " class labels for " + n + " samples");
        }
        double[] taus = isStudent() ? timepoints(steps) : null;
        Tensor x = into.allocate(Layout.NHWC, n, cfg.sampleSize(), cfg.sampleSize(), cfg.inChannels());
        for (int from = 0; from < n; from += maxBatch) {
            int to = Math.min(n, from + maxBatch);
            Tensor xb = x.slice(from, to);
            int[] labels = classLabels == null ? null : Arrays.copyOfRange(classLabels, from, to);
            // Noise streams are indexed by the sample's position in the whole request, so batching changes no bit.
            Noise.gaussian(xb, seed, from);
            if (isStudent()) {
                ops.scale(xb, (float) ConsistencyParameterization.T_MAX, xb);
                ConsistencySampler.sample(ops, new ConsistencyDenoiser(model.net(), ops, ws, true), xb, taus, labels,
                        seed, from, true);
            } else {
                double[] sigmas = KarrasSchedule.sigmas(steps);
                ops.scale(xb, (float) sigmas[0], xb);
                // One pass for the whole integration where passes are captured (cuda: one graph for 2N - 1 network
                // evaluations); elsewhere step by step, so the progress report is live.
                EdmSampler.sample(ops, new EdmDenoiser(model.net(), ops, ws, true), EdmSampler.Method.HEUN, xb, sigmas,
                        labels, from == 0 ? onStep : null, ops.capturesPasses());
            }
            if (onBatch != null) {
                onBatch.accept(to);
            }
        }
        return x;
    }

    public Tensor sample(int n, int steps, long seed, TensorArena into) {
        return sample(n, steps, seed, null, into, null);
    }

    /** The re-noising times for a student's {@code steps}-step sampling (from its metadata). */
    public double[] timepoints(int steps) {
        if (steps == 1) {
            return new double[0];
        }
        String spec = model.metadata().get(TIMEPOINTS);
        if (spec != null) {
            try {
                for (String part : spec.split(";")) {
                    String[] kv = part.split(":");
                    if (kv.length == 2 && Integer.parseInt(kv[0].trim()) == steps) {
                        return Arrays.stream(kv[1].split(",")).mapToDouble(s -> Double.parseDouble(s.trim())).toArray();
                    }
                }
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("sample: " + model.path() + ": metadata " + TIMEPOINTS
                        + " is not 'steps:t1,t2,...;...' (" + spec + ")");
            }
        }
        throw new IllegalArgumentException("sample: " + model.path() + " stores no time points for " + steps
                + " steps (it has: " + (spec == null ? "none" : spec) + ")");
    }

    @Override
    public synchronized void close() {
        ws.close();
        model.net().close();
        if (ops instanceof AutoCloseable device) {
            try {
                device.close();  // the CUDA backend's graphs and device memory
            } catch (Exception e) {
                throw new IllegalStateException("closing backend " + ops.name() + ": " + e.getMessage(), e);
            }
        }
    }
}
