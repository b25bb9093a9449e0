package ai.onestep.eval;

import ai.onestep.backend.Ops;
import ai.onestep.data.ImageDataset;
import ai.onestep.diffusion.TrainingProgress;
import ai.onestep.model.Classifier;
import ai.onestep.model.Context;
import ai.onestep.model.Init;
import ai.onestep.nn.AdamSettings;
import ai.onestep.nn.AdamW;
import ai.onestep.nn.LearningRateSchedule;
import ai.onestep.nn.TrainingState;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.Workspace;
import java.util.SplittableRandom;

/** Trains the FID-FMNIST classifier: AdamW on softmax cross-entropy, warm-up then cosine decay, random flips. */
public final class ClassifierTrainer {
    private ClassifierTrainer() {
    }

    public static void train(Ops ops, Classifier net, ImageDataset data, long steps, int batch, double lr, long seed,
                             TrainingProgress progress) {
        Init.pytorchDefault(net.parameters(), net.torchLayouts(), seed);
        LearningRateSchedule schedule = LearningRateSchedule.warmupCosine(lr, Math.min(200, steps / 10), steps);
        // The weights, gradients and moments stay with the backend for the run (on the cuda backend: the device; the
        // cross-entropy is computed on the host from the logits, so the steps themselves run op by op).
        try (AdamW opt = new AdamW(ops, net.parameters(), AdamSettings.adamW(1e-4f)); Workspace ws = new Workspace();
             TrainingState state = TrainingState.of(ops).add(net.parameters()).add(opt).adopt()) {
            for (long step = 0; step < steps; step++) {
                ws.reset();
                net.parameters().zeroGrad(ops);
                SplittableRandom r = Noise.stream(seed, step);
                int[] idx = new int[batch];
                int[] labels = new int[batch];
                for (int i = 0; i < batch; i++) {
                    idx[i] = r.nextInt(data.count());
                    labels[i] = data.labels()[idx[i]];
                }
                Tensor x = ws.allocate(Layout.NHWC, batch, data.height(), data.width(), data.channels());
                data.batch(idx, true, r, x);
                Context c = new Context(ops, ws, true, 0);
                Classifier.Activations a = net.forward(c, x);
                Tensor dLogits = ws.allocate(Layout.ROWS, a.logits().shape());
                double loss = Classifier.crossEntropy(a.logits(), labels, dLogits);
                net.backward(c, dLogits, null, false);
                opt.step(schedule.lr(step + 1));
                progress.step(step + 1, loss, null);
            }
        }
    }
}
