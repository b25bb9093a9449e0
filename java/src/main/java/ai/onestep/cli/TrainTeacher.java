package ai.onestep.cli;

import ai.onestep.data.Datasets;
import ai.onestep.data.ImageDataset;
import ai.onestep.diffusion.TeacherTrainer;
import ai.onestep.diffusion.TrainingStopped;
import ai.onestep.model.Init;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetConfig;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "train-teacher", mixinStandardHelpOptions = true,
        description = "Train an EDM teacher U-Net (Karras et al. 2022) on images; checkpoints are written atomically.")
final class TrainTeacher implements Callable<Integer> {
    @Mixin
    Common common;

    @Option(names = "--data", required = true, description = "fashion-mnist, or a folder of IDX / CIFAR-10 / PNG/JPEG files.")
    String data;

    @Option(names = "--config", defaultValue = "fmnist-small",
            description = "A built-in config (fmnist-small, fmnist-tiny) or a diffusers config.json file (default: ${DEFAULT-VALUE}).")
    String config;

    @Option(names = "--steps", defaultValue = "4000", description = "Total optimizer steps (default: ${DEFAULT-VALUE}).")
    long steps;

    @Option(names = "--out", required = true, description = "Checkpoint to write (.safetensors).")
    Path out;

    @Option(names = "--force", description = "Replace --out if it exists (without --resume of it).") boolean force;
    @Option(names = "--resume", description = "Continue from this checkpoint's step, weights, optimizer and EMA.")
    Path resume;

    @Option(names = "--batch", defaultValue = "32", description = "Batch size (default: ${DEFAULT-VALUE}).") int batch;
    @Option(names = "--lr", defaultValue = "1e-3", description = "Peak learning rate (default: ${DEFAULT-VALUE}).") double lr;
    @Option(names = "--warmup", defaultValue = "200", description = "Linear learning-rate warm-up steps (default: ${DEFAULT-VALUE}).") long warmup;
    @Option(names = "--ema", defaultValue = "0.999", description = "EMA decay per step, in [0, 1) (default: ${DEFAULT-VALUE}).") double ema;
    @Option(names = "--clip", defaultValue = "1.0", description = "Gradient-norm clipping threshold (default: ${DEFAULT-VALUE}).") double clip;
    @Option(names = "--weight-decay", defaultValue = "0", description = "Decoupled weight decay (default: ${DEFAULT-VALUE}).") double weightDecay;
    @Option(names = "--checkpoint-every", defaultValue = "500", description = "Steps between (atomic) checkpoints (default: ${DEFAULT-VALUE}).") long every;
    @Option(names = "--seed", defaultValue = "1", description = "Seed of the initialization, data order and noise (default: ${DEFAULT-VALUE}).") long seed;
    @Option(names = "--flip", description = "Random horizontal flips.") boolean flip;
    @Option(names = "--no-train-state", description = "Save only the EMA weights (smaller; cannot be resumed).")
    boolean noTrainState;
    @Option(names = "--limit", description = "Use only the first N images (quick runs).") Integer limit;
    @Option(names = "--metrics", description = "JSON-lines metrics log (default: <out>.metrics.jsonl).") Path metrics;

    @Override
    public Integer call() throws IOException {
        Common.requireNewOrForced(out, resume, force, "--resume it to continue its training");
        UNetConfig cfg = loadConfig(config);
        ImageDataset ds = Datasets.load(data, true);
        if (limit != null) {
            ds = ds.head(limit);
        }
        if (resume != null) {
            Common.requireFile(resume, "checkpoint to resume");
        }
        var opts = new TeacherTrainer.Options(steps, batch, lr, warmup, ema, clip, weightDecay, every, seed, flip,
                !noTrainState);
        Path log = metrics != null ? metrics : Path.of(out + ".metrics.jsonl");
        long t0 = System.nanoTime();
        try (UNet net = new UNet(cfg, true)) {
            Init.pytorchDefault(net, seed);
            System.err.printf(Locale.ROOT, "train-teacher: %s, %,d parameters, %d images %dx%dx%d from %s, backend %s%n",
                    config, net.parameters().count(), ds.count(), ds.height(), ds.width(), ds.channels(), ds.source(),
                    common.backend);
            TeacherTrainer trainer = new TeacherTrainer(common.ops(), net, ds, opts, out, log);
            double loss;
            try (Progress p = new Progress("train", steps, 0)) {
                loss = trainer.run(resume, p);
            } catch (TrainingStopped e) {
                System.err.println("train-teacher: " + e.getMessage());
                return 3;
            }
            System.out.printf(Locale.ROOT, "trained %d steps in %.1f s; last loss %.4f; wrote %s%n", steps,
                    (System.nanoTime() - t0) / 1e9, loss, out);
        }
        return 0;
    }

    static UNetConfig loadConfig(String nameOrFile) throws IOException {
        try (InputStream in = TrainTeacher.class.getResourceAsStream("/ai/onestep/configs/" + nameOrFile + ".json")) {
            if (in != null) {
                return UNetConfig.parse(new String(in.readAllBytes(), StandardCharsets.UTF_8), nameOrFile);
            }
        }
        Path p = Path.of(nameOrFile);
        if (!Files.exists(p)) {
            throw new IllegalArgumentException("--config " + nameOrFile
                    + ": neither a built-in config (fmnist-small, fmnist-tiny) nor a file");
        }
        if (!Files.isRegularFile(p)) {
            throw new IllegalArgumentException("--config " + nameOrFile + ": is a folder; give a config.json file");
        }
        String text;
        try {
            text = Files.readString(p);
        } catch (java.nio.charset.CharacterCodingException e) {
            throw new IllegalArgumentException("--config " + nameOrFile + ": not UTF-8 text (a config.json is JSON)");
        }
        return UNetConfig.parse(text, p.toString());
    }
}
