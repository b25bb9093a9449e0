package ai.onestep.diffusion;

import ai.onestep.backend.Ops;
import ai.onestep.data.ImageDataset;
import ai.onestep.io.CheckpointException;
import ai.onestep.io.Safetensors;
import ai.onestep.model.Context;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetCheckpoint;
import ai.onestep.nn.AdamSettings;
import ai.onestep.nn.AdamW;
import ai.onestep.nn.Ema;
import ai.onestep.nn.GradientClipping;
import ai.onestep.nn.LearningRateSchedule;
import ai.onestep.nn.Parameter;
import ai.onestep.nn.TrainingState;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.NonFiniteException;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Trains the teacher with EDM's objective (Karras et al. 2022, eq. 8 and Table 1): for clean images y, noise
 * levels ln s ~ N(-1.2, 1.2^2) and n ~ N(0, I), minimize lambda(s) ||D(y + s n; s) - y||^2 with
 * lambda(s) = (s^2 + sd^2) / (s sd)^2, using AdamW with linear learning-rate warm-up, gradient-norm clipping
 * and an EMA of the weights with a warm-up of its rate ({@link #emaRate}; the EMA is what the checkpoint's model
 * weights are, and what sampling uses).
 *
 * <p>Every random draw of step k (batch indices, flips, noise levels, noise, dropout) comes from the stream
 * (seed, k), so a run resumed from a checkpoint follows the same loss curve as an uninterrupted one.
 *
 * <p>A checkpoint holds the EMA weights under diffusers' names (so it samples and loads anywhere), plus, under
 * {@code train/}, the raw weights and AdamW's moments for {@code --resume}. It is written atomically; a
 * non-finite loss or gradient stops training with {@link TrainingStopped} and leaves the last checkpoint as it was.
 */
public final class TeacherTrainer {
    /** Training settings; {@link #defaults()} are the ones the default Fashion-MNIST teacher uses. */
    public record Options(long steps, int batch, double lr, long warmup, double ema, double clip, double weightDecay,
                          long checkpointEvery, long seed, boolean flip, boolean keepTrainState) {
        /** Each setting checked by the name train-teacher gives it, before any work. */
        public Options {
            if (steps < 1 || batch < 1 || checkpointEvery < 1) {
                throw new IllegalArgumentException("train-teacher: --steps, --batch and --checkpoint-every must be >= 1, got "
                        + steps + ", " + batch + " and " + checkpointEvery);
            }
            if (!(lr > 0) || !Double.isFinite(lr)) {
                throw new IllegalArgumentException("train-teacher: --lr must be a finite number > 0, got " + lr);
            }
            if (warmup < 0) {
                throw new IllegalArgumentException("train-teacher: --warmup must be >= 0, got " + warmup);
            }
            if (!(ema >= 0 && ema < 1)) {
                throw new IllegalArgumentException("train-teacher: --ema must lie in [0, 1), got " + ema);
            }
            if (!(clip > 0)) {
                throw new IllegalArgumentException("train-teacher: --clip must be > 0 (a large value turns it off), got "
                        + clip);
            }
            if (!(weightDecay >= 0) || !Double.isFinite(weightDecay)) {
                throw new IllegalArgumentException("train-teacher: --weight-decay must be a finite number >= 0, got "
                        + weightDecay);
            }
        }

        public static Options defaults() {
            return new Options(4000, 32, 1e-3, 200, 0.999, 1.0, 0.0, 500, 1, false, true);
        }
    }

    static final String RAW = "train/raw/";
    static final String OPT = "train/opt/";
    static final String STEP = "onestep.train.step";

    private final Ops ops;
    private final UNet net;
    private final ImageDataset data;
    private final Options o;
    private final Path out;
    private final Path metrics;

    public TeacherTrainer(Ops ops, UNet net, ImageDataset data, Options options, Path out, Path metrics) {
        this.ops = ops;
        this.net = net;
        this.data = data;
        this.o = options;
        this.out = out;
        this.metrics = metrics;
        var cfg = net.config();
        if (cfg.inChannels() != data.channels() || cfg.outChannels() != data.channels()) {
            throw new IllegalArgumentException("train: the model has in/out channels " + cfg.inChannels() + "/"
                    + cfg.outChannels() + " but " + data.source() + " has " + data.channels() + "-channel images");
        }
        int div = 1 << (cfg.blockOutChannels().length - 1);
        if (data.height() % div != 0 || data.width() % div != 0) {
            throw new IllegalArgumentException("train: " + data.height() + "x" + data.width() + " images of "
                    + data.source() + " are not divisible by " + div + " as this config's " + cfg.blockOutChannels().length
                    + " levels need");
        }
        if (cfg.numClassEmbeds() != null && data.labels() == null) {
            throw new IllegalArgumentException("train: the config is class-conditional but " + data.source()
                    + " has no labels");
        }
    }

    /**
     * Runs from step {@code start} (0, or the step of the checkpoint {@code resume} restored) to {@code steps}.
     * Returns the last loss.
     */
    public double run(Path resume, TrainingProgress progress) {
        try (AdamW opt = new AdamW(ops, net.parameters(), AdamSettings.adamW((float) o.weightDecay()));
             Ema ema = new Ema(ops, net.parameters())) {
            long start = 0;
            if (resume != null) {
                start = restore(resume, opt, ema);
            }
            // From here the backend owns the weights, gradients, moments and EMA (on the cuda backend: the device).
            try (TrainingState state = TrainingState.of(ops).add(net.parameters()).add(opt).add(ema).adopt()) {
                return train(start, opt, ema, state, progress);
            }
        }
    }

    private double train(long start, AdamW opt, Ema ema, TrainingState state, TrainingProgress progress) {
        LearningRateSchedule schedule = LearningRateSchedule.linearWarmup(o.lr(), o.warmup());
        try (Workspace ws = new Workspace(); TensorArena scratch = new TensorArena()) {
            EdmDenoiser den = new EdmDenoiser(net, ops, ws);
            Tensor[] grads = net.parameters().list().stream().map(Parameter::grad).toArray(Tensor[]::new);
            int b = o.batch();
            int[] shape = {b, data.height(), data.width(), data.channels()};
            Tensor weights = scratch.allocate(Layout.ROWS, b);
            double loss = Double.NaN;
            long lastSave = -1;
            long t0 = System.nanoTime();
            for (long step = start; step < o.steps(); step++) {
                ws.reset();
                SplittableRandom r = Noise.stream(o.seed(), step);
                int[] idx = new int[b];
                int[] labels = net.config().numClassEmbeds() != null ? new int[b] : null;
                for (int i = 0; i < b; i++) {
                    idx[i] = r.nextInt(data.count());
                    if (labels != null) {
                        labels[i] = data.labels()[idx[i]];
                    }
                }
                Tensor y = ws.allocate(Layout.NHWC, shape);
                data.batch(idx, o.flip(), r, y);
                double[] sigma = new double[b];
                for (int i = 0; i < b; i++) {
                    sigma[i] = Math.exp(Edm.P_MEAN + Edm.P_STD * gaussian(r));
                    weights.set(i, (float) Edm.lossWeight(sigma[i]));
                }
                Tensor x = ws.allocate(Layout.NHWC, shape);
                Noise.gaussian(x, r.nextLong(), 0);
                long dropoutSeed = r.nextLong();
                Tensor d = ws.allocate(Layout.NHWC, shape);
                Tensor dD = ws.allocate(Layout.NHWC, shape);
                double[] lossAndNorm = new double[2];
                // Noising, forward, loss, backward and clipping as one resident block: on the cuda backend the
                // activations never leave the device (and the gradients, like the weights, stay there: TrainingState).
                // The gradients are zeroed inside: a block may be started over.
                try {
                    ops.runResident("teacher step", grads, () -> {
                        net.parameters().zeroGrad(ops);
                        for (int i = 0; i < b; i++) {
                            Tensor xi = x.slice(i, i + 1);
                            ops.scale(xi, (float) sigma[i], xi);
                        }
                        ops.add(x, y, x);
                        Context c = new Context(ops, ws, true, dropoutSeed);
                        Tensor f = den.forward(c, x, sigma, labels);
                        EdmDenoiser.combine(ops, x, f, sigma, d);
                        lossAndNorm[0] = ops.mseLoss(d, y, weights, dD);
                        den.backward(c, dD, sigma);
                        lossAndNorm[1] = GradientClipping.clipByGlobalNorm(net.parameters(), o.clip(), ops);
                    });
                } catch (NonFiniteException e) {
                    throw stop(step, "the denoiser output is not finite", lastSave);
                }
                loss = lossAndNorm[0];
                double norm = lossAndNorm[1];
                if (!Double.isFinite(norm) || !Double.isFinite(loss)) {
                    throw stop(step, "loss " + loss + ", gradient norm " + norm, lastSave);
                }
                float lr = schedule.lr(step + 1);
                opt.step(lr);
                ema.update((float) emaRate(o.ema(), step + 1));
                long done = step + 1;
                double secs = (System.nanoTime() - t0) / 1e9;
                log(String.format(Locale.ROOT, "{\"step\":%d,\"loss\":%.6g,\"lr\":%.6g,\"grad_norm\":%.6g,"
                        + "\"images_per_s\":%.2f}", done, loss, lr, norm, (done - start) * b / Math.max(secs, 1e-9)));
                String note = null;
                if (done % o.checkpointEvery() == 0 || done == o.steps()) {
                    save(done, opt, ema, state, step, lastSave);
                    lastSave = done;
                    note = "saved " + out.getFileName() + " @" + done;
                }
                progress.step(done, loss, note);
            }
            if (start >= o.steps()) {
                progress.step(start, Double.NaN, "already at step " + start);
            }
            return loss;
        }
    }

    private void requireFinite(String which, long step, long lastSave) {
        String bad = WeightsProbe.nonFinite(net);
        if (bad != null) {
            throw stop(step, which + " after this step's update: " + bad, lastSave);
        }
    }

    private TrainingStopped stop(long step, String why, long lastSave) {
        return new TrainingStopped(step, "training stopped at step " + (step + 1) + ": " + why + "; "
                + (lastSave >= 0 ? "the last good checkpoint " + out + " (step " + lastSave + ") is kept"
                : Files.exists(out) ? out + " was not overwritten" : "no checkpoint was written yet"));
    }

    /**
     * Writes the checkpoint of {@code step}, unless the raw weights or their EMA fail {@link WeightsProbe}: a finite
     * loss and gradient can still give an update that overflows (a learning rate far too high), and such a checkpoint
     * would only ever sample NaN; then training stops as for a NaN loss, and the last checkpoint stays.
     */
    private void save(long step, AdamW opt, Ema ema, TrainingState state, long index, long lastSave) {
        state.syncToHost();  // the raw weights and the moments, read below
        requireFinite("the raw weights", index, lastSave);
        try (TensorArena copies = new TensorArena()) {
            Map<String, Tensor> extra = new LinkedHashMap<>();
            if (o.keepTrainState()) {
                // Copies, not the live tensors: the swap below puts the EMA into the live tensors for the save.
                for (Parameter p : net.parameters()) {
                    extra.put(RAW + p.name(), copies.copyOf(p.value()));
                }
                for (var e : opt.state().entrySet()) {
                    extra.put(OPT + e.getKey(), e.getValue());
                }
            }
            Map<String, String> meta = new LinkedHashMap<>();
            meta.put(UNetCheckpoint.ROLE, "teacher");
            meta.put(STEP, Long.toString(step));
            meta.put("onestep.train.options", o.toString());
            // The model weights of a checkpoint are the EMA: swap it in for the save, then back.
            ema.swap();
            try {
                state.syncToHost();  // the swap ran where the weights live
                requireFinite("the EMA weights", index, lastSave);
                UNetCheckpoint.save(out, net, meta, extra);
            } finally {
                ema.swap();
            }
        }
    }

    /** Restores raw weights, optimizer moments, EMA and the step from a checkpoint written with train state. */
    private long restore(Path path, AdamW opt, Ema ema) {
        try (Safetensors.Reader r = Safetensors.open(path)) {
            String stepText = r.metadata().get(STEP);
            if (stepText == null || !r.entries().containsKey(RAW + net.parameters().list().get(0).name())) {
                throw new CheckpointException(path + ": has no training state to resume from (it was saved with "
                        + "--no-train-state, or by distill or export); --resume needs a checkpoint train-teacher wrote "
                        + "without --no-train-state");
            }
            String cfg = r.metadata().get(UNetCheckpoint.CONFIG);
            if (cfg != null && !net.config().toJson().equals(ai.onestep.model.UNetConfig.parse(cfg, path.toString()).toJson())) {
                throw new CheckpointException(path + ": its config differs from the one given for this run");
            }
            // EMA weights are the model weights of the file.
            UNetCheckpoint.read(r, net);
            ema.shadow().copyValuesFrom(net.parameters());
            try (TensorArena tmp = new TensorArena()) {
                for (Parameter p : net.parameters()) {
                    p.value().copyFrom(r.read(RAW + p.name(), tmp, Layout.ROWS, p.value().shape()));
                }
                for (var e : opt.state().entrySet()) {
                    e.getValue().copyFrom(r.read(OPT + e.getKey(), tmp, Layout.ROWS, e.getValue().shape()));
                }
            }
            long step = Long.parseLong(stepText);
            opt.resume((int) step);
            return step;
        }
    }

    private void log(String line) {
        if (metrics == null) {
            return;
        }
        try (BufferedWriter w = Files.newBufferedWriter(metrics, StandardOpenOption.CREATE, StandardOpenOption.APPEND)) {
            w.write(line);
            w.newLine();
        } catch (IOException e) {
            throw new CheckpointException(metrics + ": cannot append metrics: " + e.getMessage(), e);
        }
    }

    /**
     * The EMA rate for update {@code k} (1-based): {@code min(mu, (1 + k) / (10 + k))}. Without this ramp the
     * average keeps 0.999^1000 = 37% of the random initial weights after 1,000 steps; with it the early average
     * follows the model (the usual warm-up of parameter EMAs, e.g. in the consistency-models and diffusers code).
     */
    static double emaRate(double mu, long k) {
        return Math.min(mu, (1.0 + k) / (10.0 + k));
    }

    static double gaussian(SplittableRandom r) {
        double u1 = 1.0 - r.nextDouble(), u2 = r.nextDouble();
        return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    }
}
