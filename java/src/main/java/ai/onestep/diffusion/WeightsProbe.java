package ai.onestep.diffusion;

import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.model.Context;
import ai.onestep.model.UNet;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.Workspace;

/**
 * Whether the weights a trainer is about to save give a working network. A finite loss and gradient can still make
 * an update that leaves every weight finite but so large that the next forward pass overflows (a learning rate far
 * too high): the loss of the next step is NaN, and the checkpoint of this one would only ever sample NaN. So before a
 * checkpoint is written, one sample at a low, a middle and the highest noise level goes through the network on the
 * cpu backend, reading the host copies of the weights (which a save has just synchronized, whatever backend trains).
 */
final class WeightsProbe {
    private static final double[] SIGMAS = {KarrasSchedule.SIGMA_MIN, 1.0, KarrasSchedule.SIGMA_MAX};

    private WeightsProbe() {
    }

    /** Null when the network's output is finite for the probe's inputs, else what is wrong, for the stop message. */
    static String nonFinite(UNet net) {
        for (var p : net.parameters()) {
            if (!p.value().allFinite()) {
                return "weight " + p.name() + " is not finite";
            }
        }
        var cfg = net.config();
        if (cfg.sampleSize() <= 0) {
            return null;  // no input size to probe with; the weights themselves were checked above
        }
        CpuOps cpu = new CpuOps();
        try (Workspace ws = new Workspace()) {
            int n = SIGMAS.length;
            Tensor x = ws.allocate(Layout.NHWC, n, cfg.sampleSize(), cfg.sampleSize(), cfg.inChannels());
            Noise.gaussian(x, 1, 0);
            for (int i = 0; i < n; i++) {
                cpu.scale(x.slice(i, i + 1), (float) SIGMAS[i], x.slice(i, i + 1));
            }
            int[] labels = cfg.numClassEmbeds() != null ? new int[n] : null;
            Tensor f = new EdmDenoiser(net, cpu, ws).forward(new Context(cpu, ws, false, 0), x, SIGMAS, labels);
            return f.allFinite() ? null : "the network's output is not finite (its weights overflow a forward pass)";
        }
    }
}
