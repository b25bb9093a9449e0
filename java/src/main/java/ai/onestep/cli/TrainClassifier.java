package ai.onestep.cli;

import ai.onestep.data.Datasets;
import ai.onestep.data.ImageDataset;
import ai.onestep.eval.ClassifierTrainer;
import ai.onestep.eval.FeatureNet;
import ai.onestep.eval.FidStats;
import ai.onestep.eval.Frechet;
import ai.onestep.model.Classifier;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "train-classifier", mixinStandardHelpOptions = true,
        description = "Train the FID-FMNIST feature classifier on the Fashion-MNIST training split, report its test "
                + "accuracy, write the test set's feature statistics, and print the real-train-versus-test FID floor.")
final class TrainClassifier implements Callable<Integer> {
    @Mixin
    Common common;

    @Option(names = "--data", defaultValue = "fashion-mnist", description = "fashion-mnist, or a folder as for train-teacher (default: ${DEFAULT-VALUE}).") String data;
    @Option(names = "--steps", defaultValue = "3000", description = "Optimizer steps (default: ${DEFAULT-VALUE}).") long steps;
    @Option(names = "--batch", defaultValue = "128", description = "Batch size (default: ${DEFAULT-VALUE}).") int batch;
    @Option(names = "--lr", defaultValue = "2e-3", description = "Learning rate (default: ${DEFAULT-VALUE}).") double lr;
    @Option(names = "--width", defaultValue = "32", description = "Channels of the first conv layer (default: ${DEFAULT-VALUE}).") int width;
    @Option(names = "--seed", defaultValue = "1", description = "Seed of the initialization and data order (default: ${DEFAULT-VALUE}).") long seed;
    @Option(names = "--out", defaultValue = "fmnist-classifier.safetensors", description = "Classifier checkpoint to write (default: ${DEFAULT-VALUE} in the working folder; the committed one in models/ is replaced only when named).") Path out;
    @Option(names = "--stats-out", defaultValue = "fmnist-fid-stats.safetensors", description = "FID reference statistics of the test set to write (default: ${DEFAULT-VALUE} in the working folder).") Path statsOut;
    @Option(names = "--floor-n", defaultValue = "1000", description = "Train images for the FID floor (default: ${DEFAULT-VALUE}).")
    int floorN;

    @Override
    public Integer call() {
        ImageDataset train = Datasets.load(data, true);
        ImageDataset test = Datasets.load(data, false);
        if (train.labels() == null || test.labels() == null) {
            throw new IllegalArgumentException("--data " + data + ": has no class labels (a classifier needs them: "
                    + "fashion-mnist, or IDX / CIFAR-10 files with their labels)");
        }
        // Checked here, not after training: the floor's covariance needs 2 images, and it cannot use more than exist.
        if (floorN < 2 || floorN > train.count()) {
            throw new IllegalArgumentException("--floor-n must lie in [2, " + train.count() + "] (the training images), got "
                    + floorN);
        }
        long t0 = System.nanoTime();
        var ops = common.ops();
        try (Classifier net = new Classifier(train.channels(), width, Math.max(train.classes(), test.classes()), true)) {
            try (Progress p = new Progress("classifier", steps, 0)) {
                ClassifierTrainer.train(ops, net, train, steps, batch, lr, seed, p);
            }
            FeatureNet f = new FeatureNet(net, ops);
            double acc = f.accuracy(test);
            Frechet.Stats ref = Frechet.stats(f.features(test, test.count()));
            double floor = Frechet.distance(Frechet.stats(f.features(train, floorN)), ref);
            String note = String.format(Locale.ROOT, "test accuracy %.4f; FID floor (train %d vs test) %.3f", acc, floorN, floor);
            FeatureNet.save(net, out, Map.of("test_accuracy", Double.toString(acc), "steps", Long.toString(steps)));
            FidStats.save(ref, statsOut, Map.of("source", test.source(), "classifier", out.toString(),
                    "fid_floor_train_" + floorN, Double.toString(floor)));
            System.out.printf(Locale.ROOT, "%s; %.1f s; wrote %s and %s%n", note, (System.nanoTime() - t0) / 1e9, out, statsOut);
        }
        return 0;
    }
}
