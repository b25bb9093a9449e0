package ai.onestep.backend;

/**
 * The per-step scalars of one Adam or RAdam update, computed once per step (in double) so that the per-element
 * loop of every backend is the same few float operations:
 * <pre>
 *   g' = g + l2 p;   m = beta1 m + (1 - beta1) g';   v = beta2 v + (1 - beta2) g'^2
 *   adaptive:  p = decay p - step m / (sqrt(v) vScale + eps)
 *   otherwise: p = decay p - step m
 * </pre>
 * The CPU backend ({@code CpuOptim}) and the CUDA kernel {@code onestep_adam_step} (kernels/src/optim.cu) both
 * run exactly this; {@code NaiveOptim} is the float64 oracle written from the papers' formulas.
 *
 * @param vScale   multiplies sqrt(v) (Adam's 1 / sqrt(1 - beta2^t); 1 for RAdam, whose eps sits on the raw sqrt(v))
 * @param step     the step size on m, bias corrections and rectification folded in
 * @param l2       classic L2 decay added to the gradient (0 with decoupled decay)
 * @param decay    the decoupled decay factor 1 - lr wd (1 with L2 decay)
 * @param adaptive false for RAdam's first steps, where the variance of the adaptive rate is intractable
 */
public record AdamUpdate(float vScale, float step, float l2, float decay, boolean adaptive) {
    /**
     * Adam (Kingma &amp; Ba 2015, Algorithm 1) at step {@code t >= 1}, as torch.optim.Adam computes it:
     * {@code lr m_hat / (sqrt(v_hat) + eps) = (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)}; {@code decoupled} is
     * AdamW (Loshchilov &amp; Hutter 2019).
     */
    public static AdamUpdate adam(int t, float lr, float beta1, float beta2, float weightDecay, boolean decoupled) {
        double bc1 = 1 - Math.pow(beta1, t);
        double bc2 = 1 - Math.pow(beta2, t);
        return new AdamUpdate((float) (1 / Math.sqrt(bc2)), (float) (lr / bc1), decoupled ? 0f : weightDecay,
                decoupled ? 1f - lr * weightDecay : 1f, true);
    }

    /**
     * RAdam (Liu et al. 2020, Algorithm 2) with torch.optim.RAdam's threshold rho_t &gt; 5: rectified steps
     * {@code lr m_hat r_t sqrt(bc2) / (sqrt(v) + eps)}, and plain momentum {@code lr m_hat} before that.
     */
    public static AdamUpdate radam(int t, float lr, float beta1, float beta2, float weightDecay, boolean decoupled) {
        double bc1 = 1 - Math.pow(beta1, t);
        double bc2 = 1 - Math.pow(beta2, t);
        float l2 = decoupled ? 0f : weightDecay;
        float decay = decoupled ? 1f - lr * weightDecay : 1f;
        double rhoInf = 2 / (1 - (double) beta2) - 1;
        double rho = rhoInf - 2 * t * Math.pow(beta2, t) / bc2;
        if (rho > 5) {
            double r = Math.sqrt((rho - 4) * (rho - 2) * rhoInf / ((rhoInf - 4) * (rhoInf - 2) * rho));
            return new AdamUpdate(1f, (float) (lr * r * Math.sqrt(bc2) / bc1), l2, decay, true);
        }
        return new AdamUpdate(1f, (float) (lr / bc1), l2, decay, false);
    }
}
