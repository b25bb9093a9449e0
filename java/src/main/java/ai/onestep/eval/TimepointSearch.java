package ai.onestep.eval;

import ai.onestep.backend.Ops;
import ai.onestep.diffusion.ConsistencyDenoiser;
import ai.onestep.diffusion.ConsistencyParameterization;
import ai.onestep.diffusion.ConsistencySampler;
import ai.onestep.diffusion.KarrasSchedule;
import ai.onestep.model.UNet;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.util.Arrays;
import java.util.Locale;
import java.util.function.ToDoubleFunction;

/**
 * Picks a consistency student's multistep re-noising times greedily by validation FID (cf. Song et al. 2023, who
 * chose tau by search): the best single tau on the grid gives the 2-step schedule; each further step appends the
 * best tau below the last one. The same fixed noise is used for every candidate, so the comparison is paired.
 */
public final class TimepointSearch {
    private TimepointSearch() {
    }

    /** The schedules for 2..maxSteps steps, as the checkpoint metadata string ("2:a;3:a,b;4:a,b,c"). */
    public static String search(Ops ops, UNet student, int gridN, int maxSteps, int n, long seed,
                                ToDoubleFunction<Tensor> fid, java.util.function.Consumer<String> log) {
        double[] grid = KarrasSchedule.consistencyGrid(gridN);
        StringBuilder spec = new StringBuilder();
        double[] chosen = new double[0];
        try (Workspace ws = new Workspace(); TensorArena a = new TensorArena()) {
            var cfg = student.config();
            ConsistencyDenoiser f = new ConsistencyDenoiser(student, ops, ws);
            Tensor x = a.allocate(Layout.NHWC, n, cfg.sampleSize(), cfg.sampleSize(), cfg.inChannels());
            for (int steps = 2; steps <= maxSteps; steps++) {
                double upper = chosen.length == 0 ? ConsistencyParameterization.T_MAX : chosen[chosen.length - 1];
                double bestFid = Double.POSITIVE_INFINITY, bestTau = Double.NaN;
                for (int i = 1; i < grid.length - 1; i++) {
                    double tau = grid[i];
                    if (!(tau < upper)) {
                        continue;
                    }
                    double[] taus = Arrays.copyOf(chosen, chosen.length + 1);
                    taus[chosen.length] = tau;
                    Noise.gaussian(x, seed, 0);
                    ops.scale(x, (float) ConsistencyParameterization.T_MAX, x);
                    ConsistencySampler.sample(ops, f, x, taus, null, seed, 0);
                    double v = fid.applyAsDouble(x);
                    if (v < bestFid) {
                        bestFid = v;
                        bestTau = tau;
                    }
                }
                if (Double.isNaN(bestTau)) {
                    break;
                }
                chosen = Arrays.copyOf(chosen, chosen.length + 1);
                chosen[chosen.length - 1] = bestTau;
                if (spec.length() > 0) {
                    spec.append(';');
                }
                spec.append(steps).append(':');
                for (int k = 0; k < chosen.length; k++) {
                    spec.append(k == 0 ? "" : ",").append(String.format(Locale.ROOT, "%.6g", chosen[k]));
                }
                if (log != null) {
                    log.accept(String.format(Locale.ROOT, "%d steps: taus %s, FID %.3f", steps, Arrays.toString(chosen), bestFid));
                }
            }
        }
        return spec.toString();
    }
}
