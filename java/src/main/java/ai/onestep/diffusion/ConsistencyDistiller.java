package ai.onestep.diffusion;

import ai.onestep.backend.Ops;
import ai.onestep.data.ImageDataset;
import ai.onestep.model.Classifier;
import ai.onestep.model.Context;
import ai.onestep.model.FeatureProjections;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetCheckpoint;
import ai.onestep.nn.AdamSettings;
import ai.onestep.nn.AdamW;
import ai.onestep.nn.Ema;
import ai.onestep.nn.GradientClipping;
import ai.onestep.nn.LearningRateSchedule;
import ai.onestep.nn.Optimizer;
import ai.onestep.nn.Parameter;
import ai.onestep.nn.RAdam;
import ai.onestep.nn.TrainingState;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.NonFiniteException;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.ToDoubleFunction;

/**
 * Consistency distillation (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", Algorithm 2), per step:
 * <pre>
 *   x ~ data;  n ~ U{1, ..., N-1};  z ~ N(0, I);  x_{n+1} = x + t_{n+1} z
 *   x_hat_n = one Heun step of the teacher from t_{n+1} to t_n                       (2 teacher evaluations)
 *   L = lambda(t_n) d( f_theta(x_{n+1}, t_{n+1}), stopgrad f_theta-(x_hat_n, t_n) )
 *   theta <- optimizer step on L;   theta- <- mu theta- + (1 - mu) theta            (the EMA target)
 * </pre>
 * with the grid t_1 = eps < ... < t_N = T of EDM's formula ({@link KarrasSchedule#consistencyGrid}). The student
 * and the target see the same dropout masks (one seed per step). The distance d is l2, pseudo-Huber (Song &amp;
 * Dhariwal 2023, c = 0.00054 sqrt(dim)) or an LPIPS-like distance on the in-domain classifier's activations;
 * lambda is 1 or 1 / (t_{n+1} - t_n) (Song &amp; Dhariwal 2023).
 *
 * <p>Every {@code validateEvery} steps the student's 1- and 2-step samples from a fixed noise set are scored by a
 * caller-given FID; the best checkpoint is kept (consistency distillation is known to degrade if run too long) and
 * training stops after {@code patience} validations without improvement.
 */
public final class ConsistencyDistiller {
    public enum Distance { L2, PSEUDO_HUBER, FEATURE }

    public enum Weighting { UNIFORM, INVERSE_STEP }

    /** How the feature-distillation weight falls from its initial value to the end of training. */
    public enum Decay { NONE, LINEAR, COSINE }

    /**
     * @param featureWeight weight of the feature-distillation term for smaller students (0: off), see {@link #run}
     * @param featureDecay  how that weight decays over the {@code steps}
     * @param emaRate       rate of the evaluation EMA of the student (0: off); validation and checkpoints use it
     * @param cosineLr      a half-cosine decay of the learning rate to 0 at {@code steps} (else constant)
     * @param denoiserWarmup steps at the start that regress the teacher's denoiser instead (see {@link #run})
     */
    public record Options(long steps, int batch, int gridN, double mu, Distance distance, Weighting weighting,
                          boolean radam, double lr, double clip, long seed, long validateEvery, int patience,
                          int validationSamples, double featureWeight, Decay featureDecay, double emaRate,
                          boolean cosineLr, long denoiserWarmup) {
        /** The options of Algorithm 2 alone: no feature distillation, no evaluation EMA, a constant learning rate. */
        public Options(long steps, int batch, int gridN, double mu, Distance distance, Weighting weighting,
                       boolean radam, double lr, double clip, long seed, long validateEvery, int patience,
                       int validationSamples) {
            this(steps, batch, gridN, mu, distance, weighting, radam, lr, clip, seed, validateEvery, patience,
                    validationSamples, 0, Decay.NONE, 0, false, 0);
        }

        public Options {
            if (!(featureWeight >= 0) || !Double.isFinite(featureWeight)) {
                throw new IllegalArgumentException("distill: the feature weight must be a finite number >= 0, got " + featureWeight);
            }
            if (denoiserWarmup < 0 || denoiserWarmup >= steps && steps > 0) {
                throw new IllegalArgumentException("distill: the denoiser warm-up must lie in [0, steps), got "
                        + denoiserWarmup + " of " + steps);
            }
            if (!(emaRate >= 0 && emaRate < 1)) {
                throw new IllegalArgumentException("distill: the evaluation EMA rate must lie in [0, 1), got " + emaRate);
            }
            if (validateEvery < 0) {
                throw new IllegalArgumentException("distill: --validate-every must be >= 0 (0: off), got " + validateEvery);
            }
        }

        public static Options defaults() {
            return new Options(2000, 16, 18, 0.95, Distance.PSEUDO_HUBER, Weighting.UNIFORM, true, 1e-4, 1.0, 1, 200, 4, 256);
        }

        /** The feature-distillation weight for the update after {@code step} completed updates. */
        public double featureWeightAt(long step) {
            double p = Math.min(1.0, (double) step / Math.max(1, steps));
            return featureWeight * switch (featureDecay) {
                case NONE -> 1.0;
                case LINEAR -> 1 - p;
                case COSINE -> 0.5 * (1 + Math.cos(Math.PI * p));
            };
        }
    }

    /** Scores a set of samples (N, H, W, C) in [-1, 1]; lower is better (FID-FMNIST in practice). */
    public interface Validator extends ToDoubleFunction<Tensor> {
    }

    /** What a validation saw. */
    public record Validation(long step, double fid1, double fid2) {
        double score() {
            return (fid1 + fid2) / 2;
        }
    }

    private final Ops ops;
    private final UNet student;
    private final UNet target;
    private final EdmDenoiser teacher;
    private final ImageDataset data;
    private final Classifier features;
    private final Options o;
    private final Path out;
    private final Map<String, String> meta;
    private final List<Validation> history = new ArrayList<>();
    private final List<Double> featureLosses = new ArrayList<>();
    private UNet guide;
    private double guideWeight;
    /** The run's training state while {@link #run} runs (its checkpoints sync it first), else null. */
    private TrainingState state;

    /**
     * @param student trainable (with gradients), initialized (from the teacher's weights, or sliced from them)
     * @param target  the EMA target, same config as the student, initialized to the student's weights
     * @param features the classifier for the feature distance (null unless {@link Distance#FEATURE})
     */
    public ConsistencyDistiller(Ops ops, UNet student, UNet target, EdmDenoiser teacher, ImageDataset data,
                                Classifier features, Options options, Path out, Map<String, String> metadata) {
        this.ops = ops;
        this.student = student;
        this.target = target;
        this.teacher = teacher;
        this.data = data;
        this.features = features;
        this.o = options;
        this.out = out;
        this.meta = metadata;
        var tc = teacher.net().config();
        var sc = student.config();
        if (sc.inChannels() != tc.inChannels() || sc.sampleSize() != tc.sampleSize()) {
            throw new IllegalArgumentException("distill: the student (" + sc.inChannels() + " channels, size "
                    + sc.sampleSize() + ") does not produce the teacher's images (" + tc.inChannels() + ", " + tc.sampleSize() + ")");
        }
        if (data.channels() != tc.inChannels() || data.height() != tc.sampleSize() || data.width() != tc.sampleSize()) {
            throw new IllegalArgumentException("distill: " + data.source() + " has " + data.height() + "x" + data.width()
                    + "x" + data.channels() + " images but the teacher's config expects " + tc.sampleSize() + "x"
                    + tc.sampleSize() + "x" + tc.inChannels());
        }
        if (options.distance() == Distance.FEATURE && features == null) {
            throw new IllegalArgumentException("distill: the feature distance needs the in-domain classifier");
        }
        if (options.featureWeight() > 0 && !student.tapNames().equals(teacher.net().tapNames())) {
            throw new IllegalArgumentException("distill: feature distillation needs the teacher's block structure; the"
                    + " student has blocks " + student.tapNames() + ", the teacher " + teacher.net().tapNames());
        }
        if (options.gridN() < 2) {
            throw new IllegalArgumentException("distill: N must be >= 2, got " + options.gridN());
        }
    }

    /**
     * Distills from a trained consistency model (the guide, e.g. a full-width student) as well as from the teacher:
     * the target becomes {@code w f_guide(x_{n+1}, t_{n+1}) + (1 - w) f_theta-(x_hat_n, t_n)}, and with feature
     * distillation the block outputs regressed are the guide's at that same input. With {@code w = 1} it is plain
     * output distillation (Hinton et al. 2015) of a consistency function at every grid time: the teacher's Heun
     * step and the target pass are skipped, so a step costs about half as much, and the target carries no
     * bootstrapping error (the EMA target of Algorithm 2 is the student's own, still inexact, estimate). Why: a
     * 0.5-width student trained by Algorithm 2 alone stays well behind the full-width student at 2 steps (README,
     * "The committed students"), and the full-width student already is the consistency function it should
     * approximate.
     *
     * @param net    a consistency model (f = c_skip x + c_out F) of the student's image shape, without gradients;
     *               evaluated without dropout
     * @param weight w in (0, 1]
     */
    public ConsistencyDistiller guide(UNet net, double weight) {
        if (!(weight > 0 && weight <= 1)) {
            throw new IllegalArgumentException("distill: the guide weight must lie in (0, 1], got " + weight);
        }
        var gc = net.config();
        var sc = student.config();
        if (gc.inChannels() != sc.inChannels() || gc.sampleSize() != sc.sampleSize()) {
            throw new IllegalArgumentException("distill: the guide (" + gc.inChannels() + " channels, size "
                    + gc.sampleSize() + ") does not produce the student's images (" + sc.inChannels() + ", " + sc.sampleSize() + ")");
        }
        if (o.featureWeight() > 0 && !student.tapNames().equals(net.tapNames())) {
            throw new IllegalArgumentException("distill: feature distillation from the guide needs its block structure; the"
                    + " student has blocks " + student.tapNames() + ", the guide " + net.tapNames());
        }
        this.guide = net;
        this.guideWeight = weight;
        return this;
    }

    public List<Validation> history() {
        return history;
    }

    /** The feature-distillation term of each step's loss (before its weight), empty when that term is off. */
    public List<Double> featureLosses() {
        return featureLosses;
    }

    /**
     * Runs the distillation; returns the best validation (or null when validation is off).
     *
     * <p>With {@code featureWeight > 0} (smaller students) the loss gains a feature-distillation term, FitNets-style
     * (Romero et al. 2015): the student's block outputs ({@link UNet#taps()}), mapped by trainable 1x1 convolutions
     * ({@link FeatureProjections}) to the teacher's channels, regress the teacher's block outputs on the same input
     * (x_{n+1}, t_{n+1}), which the teacher computes anyway as the first evaluation of its Heun step. Each tap's
     * mean squared error is divided by the mean square of the teacher's activation there, so every block counts
     * alike whatever its scale; the sum is weighted by {@code featureWeightAt(step) / taps}. The weight decays so
     * that training ends on the consistency loss alone.
     *
     * <p>With {@code denoiserWarmup = K > 0} the first K steps regress the teacher's denoiser instead of the
     * consistency target: d(f_theta(x_{n+1}, t_{n+1}), D_teacher(x_{n+1}, t_{n+1})), one teacher evaluation and no
     * target pass. A student of the teacher's size starts as the teacher, i.e. as a good denoiser, which is what
     * makes consistency distillation converge fast (Song et al. 2023, Section 4, initialize from the diffusion
     * model); a smaller student sliced from the teacher is no denoiser at all, and this is the cheapest way to give
     * it the same starting point (direct distillation of the denoiser, as in Luhman &amp; Luhman 2021 but at every
     * noise level). The consistency parameterization's c_skip, c_out are close to EDM's away from eps, so the same
     * network serves both. Validation starts after the warm-up.
     *
     * <p>With {@code emaRate > 0} an EMA of the student (warm-up min(rate, (1+k)/(10+k)), as for the teacher) is
     * what validation scores and what checkpoints hold: the usual evaluation EMA of consistency models (Song et al.
     * 2023, Appendix C), separate from the target network theta- whose rate is mu.
     */
    public Validation run(Validator fid, TrainingProgress progress) {
        double[] t = KarrasSchedule.consistencyGrid(o.gridN());
        int b = o.batch();
        int[] shape = {b, data.height(), data.width(), data.channels()};
        int dim = data.height() * data.width() * data.channels();
        float huberC = (float) (0.00054 * Math.sqrt(dim));
        LearningRateSchedule schedule = o.cosineLr() ? LearningRateSchedule.warmupCosine(o.lr(), 0, o.steps())
                : LearningRateSchedule.constant(o.lr());
        boolean distillFeatures = o.featureWeight() > 0;
        UNet featureSource = guide != null ? guide : teacher.net();
        boolean needTeacherStep = guide == null || guideWeight < 1;
        Validation best = null;
        int stale = 0;
        // The networks that only read their weights: a device keeps one copy of them for the whole run.
        ops.registerParameters(teacher.net().weightTensors());
        if (guide != null) {
            ops.registerParameters(guide.weightTensors());
        }
        if (features != null) {
            ops.registerParameters(features.parameters().list().stream().map(Parameter::value).toList());
        }
        try (Optimizer opt = o.radam() ? new RAdam(ops, student.parameters(), AdamSettings.adam(0f))
                : new AdamW(ops, student.parameters(), AdamSettings.adam(0f));
             FeatureProjections proj = distillFeatures ? new FeatureProjections(student, featureSource) : null;
             Optimizer projOpt = distillFeatures ? new AdamW(ops, proj.parameters(), AdamSettings.adam(0f)) : null;
             Ema ema = o.emaRate() > 0 ? new Ema(ops, student.parameters()) : null;
             TrainingState state = trainingState(opt, proj, projOpt, ema);
             Workspace ws = new Workspace(); Workspace tws = new Workspace(); Workspace fws = new Workspace();
             Workspace gws = new Workspace(); Workspace tgtWs = new Workspace(); TensorArena scratch = new TensorArena()) {
            TapCapture capture = distillFeatures && guide == null ? new TapCapture(teacher.net(), tws, scratch) : null;
            Denoiser teacherDen = capture != null ? capture : new EdmDenoiser(teacher.net(), ops, tws);
            List<Tensor> guideTaps = new ArrayList<>();
            List<Tensor> featureTargets = capture != null ? capture.taps : guideTaps;
            Tensor fGuide = guide != null ? scratch.allocate(Layout.NHWC, shape) : null;
            List<Tensor> tapWeights = new ArrayList<>();
            for (int k = 0; distillFeatures && k < student.tapNames().size(); k++) {
                tapWeights.add(scratch.allocate(Layout.ROWS, b));
            }
            List<Tensor> gradList = new ArrayList<>();
            student.parameters().forEach(p -> gradList.add(p.grad()));
            if (proj != null) {
                proj.parameters().forEach(p -> gradList.add(p.grad()));
            }
            Tensor[] grads = gradList.toArray(Tensor[]::new);
            Tensor weights = scratch.allocate(Layout.ROWS, b);
            Tensor xn1 = scratch.allocate(Layout.NHWC, shape);
            Tensor xhat = scratch.allocate(Layout.NHWC, shape);
            EdmSampler.Scratch heun = new EdmSampler.Scratch(scratch, xhat);
            Tensor fTarget = scratch.allocate(Layout.NHWC, shape);
            Tensor x0 = scratch.allocate(Layout.NHWC, shape);
            for (long step = 0; step < o.steps(); step++) {
                SplittableRandom r = Noise.stream(o.seed(), step);
                int[] idx = new int[b];
                double[] tn = new double[b], tn1 = new double[b];
                for (int i = 0; i < b; i++) {
                    idx[i] = r.nextInt(data.count());
                    int n = r.nextInt(o.gridN() - 1);
                    tn[i] = t[n];
                    tn1[i] = t[n + 1];
                    weights.set(i, (float) (o.weighting() == Weighting.UNIFORM ? 1 : 1 / (tn1[i] - tn[i])));
                }
                data.batch(idx, false, r, x0);
                Noise.gaussian(xn1, r.nextLong(), 0);
                long dropoutSeed = r.nextLong();
                long stepNo = step;
                double[] lossNormFeature = new double[3];
                // The whole step up to the parameter updates as one resident block: on the cuda backend every
                // activation (teacher, target, student) stays on the device and only the gradients come back.
                try {
                    ops.runResident("distillation step", grads, () -> {
                        // x_{n+1} = x + t_{n+1} z
                        for (int i = 0; i < b; i++) {
                            Tensor s = xn1.slice(i, i + 1);
                            ops.scale(s, (float) tn1[i], s);
                        }
                        ops.add(xn1, x0, xn1);
                        targets(stepNo, capture, teacherDen, xn1, tn1, tn, dropoutSeed, fGuide, guideTaps, fTarget,
                                heun, xhat, needTeacherStep, gws, tgtWs, scratch);
                        studentStep(stepNo, xn1, tn1, dropoutSeed, fTarget, weights, huberC, proj, featureTargets,
                                tapWeights, ws, fws, lossNormFeature);
                    });
                } catch (NonFiniteException e) {
                    throw new TrainingStopped(step, "distillation stopped at step " + (step + 1)
                            + ": the student's output is not finite; " + (best != null
                            ? "the best checkpoint " + out + " (step " + best.step() + ") is kept" : "no checkpoint was written"));
                }
                double loss = lossNormFeature[0], norm = lossNormFeature[1];
                if (distillFeatures) {
                    featureLosses.add(lossNormFeature[2]);
                }
                if (!Double.isFinite(norm) || !Double.isFinite(loss)) {
                    throw new TrainingStopped(step, "distillation stopped at step " + (step + 1) + ": loss " + loss
                            + ", gradient norm " + norm + "; " + (best != null ? "the best checkpoint " + out
                            + " (step " + best.step() + ") is kept" : "no checkpoint was written"));
                }
                opt.step(schedule.lr(step));
                if (projOpt != null) {
                    projOpt.step(schedule.lr(step));
                }
                // theta- <- mu theta- + (1 - mu) theta: the target follows the student (Algorithm 2, last line).
                for (Parameter p : target.parameters()) {
                    ops.ema(p.value(), student.parameters().get(p.name()).value(), (float) o.mu());
                }
                if (ema != null) {
                    ema.update((float) Math.min(o.emaRate(), (1.0 + step) / (10.0 + step)));
                }
                long done = step + 1;
                String note = null;
                boolean last = done == o.steps();
                if (fid != null && o.validateEvery() > 0 && done > o.denoiserWarmup()
                        && (done % o.validateEvery() == 0 || last)) {
                    swap(ema); // score (and save) the evaluation EMA when there is one
                    Validation v;
                    try {
                        v = validate(fid, done);
                        history.add(v);
                        note = String.format(Locale.ROOT, "FID 1-step %.2f 2-step %.2f", v.fid1(), v.fid2());
                        if (best == null || v.score() < best.score()) {
                            best = v;
                            stale = 0;
                            save(done, v);
                            note += " (best, saved)";
                        } else {
                            stale++;
                        }
                    } finally {
                        swap(ema);
                    }
                    if (stale >= o.patience()) {
                        progress.step(done, loss, note + " (no improvement in " + stale + ": early stop)");
                        break;
                    }
                } else if ((fid == null || o.validateEvery() == 0)
                        && (last || o.validateEvery() > 0 && done % o.validateEvery() == 0)) {
                    // No validation (no scorer, or --validate-every 0): a checkpoint every validateEvery steps and at
                    // the end. With a scorer and validation off this saved nothing at all.
                    swap(ema);
                    try {
                        save(done, null);
                    } finally {
                        swap(ema);
                    }
                    note = "saved";
                }
                progress.step(done, loss, note == null && done <= o.denoiserWarmup() ? "denoiser warm-up" : note);
            }
            return best;
        }
    }

    /** Copies live activations into kept tensors (allocated on the first call). */
    /** Copies the block outputs {@code live} into {@code kept} (made on first use) through the backend (exact). */
    private static void copyTaps(Ops ops, List<Tensor> live, List<Tensor> kept, TensorArena arena) {
        if (kept.isEmpty()) {
            for (Tensor s : live) {
                kept.add(arena.allocate(s.layout(), s.shape()));
            }
        }
        for (int k = 0; k < live.size(); k++) {
            ops.scale(live.get(k), 1f, kept.get(k));
        }
    }

    /**
     * What every step updates, handed to the backend for the run (on the cuda backend: the device): the student's
     * weights and gradients, the target network, the projections, the optimizers' moments, the EMA.
     */
    private TrainingState trainingState(Optimizer opt, FeatureProjections proj, Optimizer projOpt, Ema ema) {
        TrainingState s = TrainingState.of(ops).add(student.parameters()).add(target.parameters()).add(opt);
        if (proj != null) {
            s.add(proj.parameters()).add(projOpt);
        }
        if (ema != null) {
            s.add(ema);
        }
        this.state = s;
        return s.adopt();
    }

    private static void swap(Ema ema) {
        if (ema != null) {
            ema.swap();
        }
    }

    /**
     * The teacher's denoiser, which keeps a copy of the U-Net's {@link UNet#taps()} from the first evaluation after
     * it is armed: the Heun step's first evaluation is the teacher at exactly the student's input (x_{n+1},
     * t_{n+1}), so feature distillation costs no extra teacher pass.
     */
    private final class TapCapture implements Denoiser {
        final EdmDenoiser den;
        final UNet net;
        final Workspace ws;
        final TensorArena arena;
        final List<Tensor> taps = new ArrayList<>();
        boolean armed;

        TapCapture(UNet net, Workspace ws, TensorArena arena) {
            this.den = new EdmDenoiser(net, ops, ws);
            this.net = net;
            this.ws = ws;
            this.arena = arena;
        }

        @Override
        public void denoise(Tensor x, double[] sigma, int[] classLabels, Tensor out) {
            den.denoise(x, sigma, classLabels, out);
            if (armed) {
                armed = false;
                copyTaps(ops, net.taps(), taps, arena);
            }
        }
    }

    /** The default 2-step time point: the middle of the consistency grid (cf. the ImageNet-64 choice 22 of 40). */
    public static double defaultTau(int gridN) {
        return KarrasSchedule.consistencyGrid(gridN)[gridN / 2];
    }

    private Validation validate(Validator fid, long step) {
        int n = o.validationSamples();
        try (Workspace vws = new Workspace(); TensorArena a = new TensorArena()) {
            ConsistencyDenoiser f = new ConsistencyDenoiser(student, ops, vws);
            Tensor x = a.allocate(Layout.NHWC, n, data.height(), data.width(), data.channels());
            Noise.gaussian(x, 12345, 0);
            ops.scale(x, (float) ConsistencyParameterization.T_MAX, x);
            Tensor x2 = a.copyOf(x);
            ConsistencySampler.sample(ops, f, x, new double[0], null, 12345, 0);
            double fid1 = fid.applyAsDouble(x);
            ConsistencySampler.sample(ops, f, x2, new double[] {defaultTau(o.gridN())}, null, 12345, 0);
            double fid2 = fid.applyAsDouble(x2);
            return new Validation(step, fid1, fid2);
        }
    }

    /**
     * The regression targets of one step: the guide's output (and block outputs) at (x_{n+1}, t_{n+1}) when there
     * is a guide; then either the teacher's denoised estimate (warm-up), or one Heun step of the teacher from t_{n+1}
     * to t_n (Karras et al. 2022, Algorithm 1, lines 5-8) followed by the target network f_theta-(x_hat_n, t_n) with
     * the student's dropout masks (Song et al. 2023, Algorithm 2), mixed with the guide's output by its weight.
     * Only ops, so it runs inside the step's resident block.
     */
    private void targets(long step, TapCapture capture, Denoiser teacherDen, Tensor xn1, double[] tn1, double[] tn,
                         long dropoutSeed, Tensor fGuide, List<Tensor> guideTaps, Tensor fTarget,
                         EdmSampler.Scratch heun, Tensor xhat, boolean needTeacherStep, Workspace gws, Workspace tgtWs,
                         TensorArena scratch) {
        if (capture != null) {
            capture.armed = true; // keep the taps of the first evaluation, the one at (x_{n+1}, t_{n+1})
        }
        if (guide != null) {
            // The guide's consistency output at the student's own input (see guide()).
            gws.reset();
            Tensor fg = new EdmDenoiser(guide, ops, gws).forward(Context.inference(ops, gws), xn1, tn1, null);
            ConsistencyDenoiser.combine(ops, xn1, fg, tn1, fGuide);
            if (o.featureWeight() > 0) {
                copyTaps(ops, guide.taps(), guideTaps, scratch);
            }
        }
        if (step < o.denoiserWarmup()) {
            // Warm-up: the target is the teacher's denoised estimate at the student's own input.
            teacherDen.denoise(xn1, tn1, null, fTarget);
        } else if (needTeacherStep) {
            ops.scale(xn1, 1f, xhat);  // an exact copy through the backend
            EdmSampler.step(ops, teacherDen, EdmSampler.Method.HEUN, xhat, tn1, tn, null, heun);
            // The target f_theta-(x_hat_n, t_n), with the student's dropout masks, no gradient. Its own workspace:
            // the training forward writes its timestep tensor on the host, so it must not reuse memory that the
            // teacher's evaluations used in the same block.
            tgtWs.reset();
            Context tc = new Context(ops, tgtWs, true, dropoutSeed);
            Tensor ft = new EdmDenoiser(target, ops, tgtWs).forward(tc, xhat, tn, null);
            ConsistencyDenoiser.combine(ops, xhat, ft, tn, fTarget);
            if (guide != null) {
                ops.axpby((float) (1 - guideWeight), fTarget, (float) guideWeight, fGuide, fTarget);
            }
        } else {
            ops.scale(fGuide, 1f, fTarget);
        }
    }

    /**
     * The student's side of one step: f_theta(x_{n+1}, t_{n+1}) with gradients, the distance to the target (and
     * the feature-distillation term), the backward and the gradient clipping. Leaves the loss, the gradient norm
     * and the feature term (before its weight) in {@code out}. Only ops, so it runs inside the resident block.
     */
    private void studentStep(long step, Tensor xn1, double[] tn1, long dropoutSeed, Tensor fTarget, Tensor weights,
                             float huberC, FeatureProjections proj, List<Tensor> featureTargets,
                             List<Tensor> tapWeights, Workspace ws, Workspace fws, double[] out) {
        ws.reset();
        student.parameters().zeroGrad(ops);
        int b = xn1.dim(0);
        int[] shape = xn1.shape();
        Context sc = new Context(ops, ws, true, dropoutSeed);
        EdmDenoiser sd = new EdmDenoiser(student, ops, ws);
        Tensor fs = sd.forward(sc, xn1, tn1, null);
        Tensor fOut = ws.allocate(Layout.NHWC, shape);
        ConsistencyDenoiser.combine(ops, xn1, fs, tn1, fOut);
        Tensor dOut = ws.allocate(Layout.NHWC, shape);
        double loss = switch (o.distance()) {
            case L2 -> ops.mseLoss(fOut, fTarget, weights, dOut);
            case PSEUDO_HUBER -> ops.pseudoHuberLoss(fOut, fTarget, weights, huberC, dOut);
            case FEATURE -> featureLoss(fws, ws, fOut, fTarget, weights, dOut);
        };
        // dL/dF = c_out(t_{n+1}) dL/df (the consistency scaling), then the network's backward.
        Tensor dF = ws.allocate(Layout.NHWC, shape);
        for (int i = 0; i < b; i++) {
            ops.scale(dOut.slice(i, i + 1), (float) ConsistencyParameterization.cOut(tn1[i]), dF.slice(i, i + 1));
        }
        List<Tensor> dTaps = null;
        double fl = 0;
        if (proj != null) {
            proj.parameters().zeroGrad(ops);
            List<Tensor> projected = proj.forward(sc, student.taps());
            List<Tensor> dProjected = new ArrayList<>();
            double w = o.featureWeightAt(step) / projected.size();
            for (int k = 0; k < projected.size(); k++) {
                Tensor tt = featureTargets.get(k);
                double ms = ops.sumOfSquares(tt) / tt.size();
                // One weights tensor per tap: the host writes it before any op reads it.
                Tensor tw = tapWeights.get(k);
                for (int i = 0; i < b; i++) {
                    tw.set(i, (float) (w / (ms + 1e-8)));
                }
                Tensor d = ws.allocate(Layout.NHWC, projected.get(k).shape());
                double lk = ops.mseLoss(projected.get(k), tt, tw, d);
                fl += lk / (w / (ms + 1e-8)) / projected.size();
                loss += lk;
                dProjected.add(d);
            }
            dTaps = proj.backward(sc, dProjected);
        }
        student.backward(sc, dF, false, dTaps);
        double norm = GradientClipping.clipByGlobalNorm(student.parameters(), o.clip(), ops);
        if (proj != null) {
            GradientClipping.clipByGlobalNorm(proj.parameters(), o.clip(), ops);
        }
        out[0] = loss;
        out[1] = norm;
        out[2] = fl;
    }

    /**
     * An LPIPS-like distance (Zhang et al. 2018) on the in-domain classifier: the mean squared difference of the
     * four GN+SiLU stages' activations, plus the pixel l2, each stage weighted equally; weighted per sample.
     */
    private double featureLoss(Workspace fws, Workspace ws, Tensor pred, Tensor tgt, Tensor weights, Tensor dPred) {
        fws.reset();
        Context infer = Context.inference(ops, fws);
        Classifier.Activations at = features.forward(infer, tgt);
        List<Tensor> targetStages = new ArrayList<>();
        for (Tensor s : at.stages()) {
            Tensor copy = ws.allocate(s.layout(), s.shape());
            ops.scale(s, 1f, copy);  // an exact copy through the backend (fws is reset by the next call)
            targetStages.add(copy);
        }
        Context train = new Context(ops, ws, true, 0);
        Classifier.Activations ap = features.forward(train, pred);
        double loss = ops.mseLoss(pred, tgt, weights, dPred);
        List<Tensor> dStages = new ArrayList<>();
        for (int i = 0; i < targetStages.size(); i++) {
            Tensor d = ws.allocate(ap.stages().get(i).layout(), ap.stages().get(i).shape());
            loss += ops.mseLoss(ap.stages().get(i), targetStages.get(i), weights, d);
            dStages.add(d);
        }
        Tensor dLogits = ws.allocateZeroed(Layout.ROWS, ap.logits().shape());
        Tensor dx = features.backward(train, dLogits, dStages, true);
        ops.axpy(1f, dx, dPred);
        return loss;
    }

    private void save(long step, Validation v) {
        if (state != null) {
            state.syncToHost();  // the student's weights (the EMA's, when swapped in) live where the backend keeps them
        }
        // A finite loss can still give an update that overflows; such a student would only ever sample NaN.
        String bad = WeightsProbe.nonFinite(student);
        if (bad != null) {
            throw new TrainingStopped(step - 1, "distillation stopped at step " + step + ": " + bad + " after this "
                    + "step's update; " + (Files.exists(out) ? out + " was kept as it was" : "no checkpoint was written"));
        }
        Map<String, String> m = new LinkedHashMap<>(meta);
        m.put(UNetCheckpoint.ROLE, "student");
        m.put("onestep.train.step", Long.toString(step));
        m.put("onestep.distill.options", o.toString());
        if (v != null) {
            m.put("onestep.distill.fid", String.format(Locale.ROOT, "1-step %.4f, 2-step %.4f", v.fid1(), v.fid2()));
        }
        m.putIfAbsent(ConsistencySampler.TIMEPOINTS, "2:" + defaultTau(o.gridN()));
        UNetCheckpoint.save(out, student, m, null);
    }
}
