package ai.onestep.diffusion;

import ai.onestep.backend.Ops;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.Arrays;
import java.util.function.IntConsumer;

/**
 * EDM's deterministic samplers (Karras et al. 2022, Algorithm 1): Heun's second-order method, which costs
 * 2N - 1 network evaluations for N noise levels (the last step, to s_N = 0, is Euler only), and plain Euler
 * (N evaluations). Samplers are plain functions of (denoiser, x, sigmas), as in k-diffusion and
 * stable-diffusion.cpp.
 */
public final class EdmSampler {
    public enum Method { HEUN, EULER }

    private EdmSampler() {
    }

    /** The number of network evaluations for N noise levels. */
    public static int nfe(Method m, int steps) {
        return m == Method.HEUN ? 2 * steps - 1 : steps;
    }

    /**
     * Integrates the probability-flow ODE from {@code sigmas[0]} to 0 in place: {@code x} holds x_0 ~ N(0, s_0^2 I)
     * on entry and the sample on return. {@code onStep} (may be null) is told each finished step index.
     */
    public static void sample(Ops ops, Denoiser d, Method method, Tensor x, double[] sigmas, int[] classLabels,
                              IntConsumer onStep) {
        sample(ops, d, method, x, sigmas, classLabels, onStep, false);
    }

    /**
     * As above; with {@code onePass} the whole integration is one {@link Ops#runPass} (on the cuda backend one CUDA
     * graph per noise schedule and shape: every network evaluation and update, nothing back on the host until the
     * end). Then {@code onStep} hears of every step at the end. Same operations, same bits.
     */
    public static void sample(Ops ops, Denoiser d, Method method, Tensor x, double[] sigmas, int[] classLabels,
                              IntConsumer onStep, boolean onePass) {
        int n = x.dim(0);
        boolean whole = onePass;
        try (TensorArena scratch = new TensorArena()) {
            Scratch sc = new Scratch(scratch, x);
            double[] s = new double[n], sNext = new double[n];
            Runnable body = () -> {
                for (int i = 0; i + 1 < sigmas.length; i++) {
                    Arrays.fill(s, sigmas[i]);
                    Arrays.fill(sNext, sigmas[i + 1]);
                    step(ops, d, method, x, s, sNext, classLabels, sc);
                    if (onStep != null && !whole) {
                        onStep.accept(i);
                    }
                }
            };
            if (!whole) {
                body.run();
                return;
            }
            // x is the pass's input and is updated in place on the device; the result leaves through `out`.
            Tensor out = scratch.allocate(x.layout(), x.shape());
            ops.runPass("edm " + method + " sigmas=" + Arrays.toString(sigmas) + EdmDenoiser.labelsKey(classLabels),
                    new Tensor[] {x}, new Tensor[] {out},
                    () -> {
                        body.run();
                        ops.scale(x, 1f, out);  // exact
                    });
            x.copyFrom(out);
            for (int i = 0; onStep != null && i + 1 < sigmas.length; i++) {
                onStep.accept(i);
            }
        }
    }

    /** Work tensors for {@link #step}, shaped like x. */
    public static final class Scratch {
        final Tensor den, dir, xNext;

        public Scratch(TensorArena arena, Tensor like) {
            den = arena.allocate(like.layout(), like.shape());
            dir = arena.allocate(like.layout(), like.shape());
            xNext = arena.allocate(like.layout(), like.shape());
        }
    }

    /**
     * One step of Algorithm 1 (Karras et al. 2022) from noise level {@code s[b]} to {@code sNext[b]} for each
     * sample b, in place: the Euler step, then for Heun (where {@code sNext[b] > 0}) the trapezoidal correction.
     * Consistency distillation calls this with a different pair of grid points per sample.
     */
    public static void step(Ops ops, Denoiser d, Method method, Tensor x, double[] s, double[] sNext, int[] classLabels,
                            Scratch sc) {
        int n = x.dim(0);
        d.denoise(x, s, classLabels, sc.den);
        boolean heun = method == Method.HEUN;
        // One op per run of samples that share (s, s_next): a sampler's whole batch, or training's single samples.
        // Only Ops calls, no host copies, so a step can run inside a device pass.
        for (int b = 0, e; b < n; b = e) {
            e = runEnd(s, sNext, b);
            double h = sNext[b] - s[b];
            Tensor xb = x.slice(b, e), dirb = sc.dir.slice(b, e), nb = sc.xNext.slice(b, e);
            // d_i = (x - D(x; s)) / s  (eq. 3 of Karras et al. 2022 with sigma(t) = t); Euler: x' = x + h d_i as one
            // fused multiply-add (fma(h, d_i, 1 * x)), the rounding of a copy followed by axpy.
            ops.scale(xb, (float) (1 / s[b]), dirb);
            ops.axpy((float) (-1 / s[b]), sc.den.slice(b, e), dirb);
            ops.axpby(1f, xb, (float) h, dirb, nb);
            heun &= sNext[b] != 0;
        }
        if (!heun) {
            ops.scale(sc.xNext, 1f, x);  // an exact copy through the backend
            return;
        }
        // Heun's correction: average d_i with the slope d' = (x' - D(x'; s_next)) / s_next at the Euler point.
        d.denoise(sc.xNext, sNext, classLabels, sc.den);
        for (int b = 0, e; b < n; b = e) {
            e = runEnd(s, sNext, b);
            double h = sNext[b] - s[b];
            Tensor xb = x.slice(b, e);
            ops.axpy((float) (h / 2), sc.dir.slice(b, e), xb);
            ops.axpy((float) (h / 2 / sNext[b]), sc.xNext.slice(b, e), xb);
            ops.axpy((float) (-h / 2 / sNext[b]), sc.den.slice(b, e), xb);
        }
    }

    /** The end (exclusive) of the run of samples from {@code i} with the same pair (s, s_next). */
    private static int runEnd(double[] s, double[] sNext, int i) {
        int j = i + 1;
        while (j < s.length && s[j] == s[i] && sNext[j] == sNext[i]) {
            j++;
        }
        return j;
    }
}
