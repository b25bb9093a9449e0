import ai.onestep.backend.Backends;
import ai.onestep.backend.Ops;
import ai.onestep.backend.cuda.CudaOps;
import ai.onestep.backend.cuda.Device;
import ai.onestep.data.ImageDataset;
import ai.onestep.diffusion.TeacherTrainer;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetCheckpoint;
import java.io.FileWriter;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Times teacher training steps (EDM loss, forward, backward, clipping, AdamW, EMA) of a model's network on a
 * backend, starting from its weights, on random images of its shape: on the cuda backend once op by op
 * ({@code residentBlocks(false)}: every op's operands cross the bus) and once as resident blocks (the default: one
 * wait per step), with the host-device traffic of each step, and optionally on the cpu backend in the same run.
 * Median and minimum wall time per step after {@code --warmup} steps, leaving out the last (it writes the
 * checkpoint).
 *
 * <p>Not part of the engine: bench/gpu/run.sh compiles it against onestep.jar like StepTiming. Exit status 1 when a
 * loss is not finite or the two cuda modes disagree on the first step's loss by more than 1e-4 (relative).
 *
 * <pre>java -cp onestep.jar:classes TrainTiming --backend cuda --batch 64 --steps 12 --warmup 2 MODEL...</pre>
 */
public final class TrainTiming {
    private static final List<String> rows = new ArrayList<>();

    /** A table row: printed now too (prefixed "row:"), so a run stopped at its time cap still shows it. */
    private static void row(String line) {
        rows.add(line);
        System.out.println("row: " + line);
    }

    private static int failures;

    public static void main(String[] args) throws IOException {
        String backend = "cuda", jsonl = null;
        int batch = 64, steps = 12, warmup = 2, cpuSteps = 0;
        List<Path> models = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--backend" -> backend = args[++i];
                case "--batch" -> batch = Integer.parseInt(args[++i]);
                case "--steps" -> steps = Integer.parseInt(args[++i]);
                case "--warmup" -> warmup = Integer.parseInt(args[++i]);
                case "--cpu-steps" -> cpuSteps = Integer.parseInt(args[++i]);
                case "--jsonl" -> jsonl = args[++i];
                case "--library" -> System.setProperty("onestep.kernels.library", args[++i]);
                default -> models.add(Path.of(args[i]));
            }
        }
        if (models.isEmpty() || steps < warmup + 2) {
            System.err.println("usage: TrainTiming [--backend cuda|cuda-emulated|cpu] [--batch 64] [--steps 12] "
                    + "[--warmup 2] [--cpu-steps N] [--jsonl F] [--library libonestep_kernels.so] MODEL...");
            System.exit(2);
        }
        int threads = Runtime.getRuntime().availableProcessors();
        FileWriter out = jsonl == null ? null : new FileWriter(jsonl, true);
        Path dir = Files.createTempDirectory("onestep-traintiming");
        for (Path model : models) {
            String name = model.getFileName().toString().replace(".safetensors", "");
            Ops ops = Backends.byName(backend, threads);
            try {
                if (ops instanceof CudaOps c) {
                    c.residentBlocks(false);
                    double[] opByOp = time(ops, model, name + " op by op", batch, steps, warmup, dir, out);
                    c.residentBlocks(true);
                    double[] resident = time(ops, model, name + " resident", batch, steps, warmup, dir, out);
                    double rel = Math.abs(resident[0] - opByOp[0]) / Math.abs(opByOp[0]);
                    if (!(rel <= 1e-4)) {
                        failures++;
                        row(String.format(Locale.ROOT, "FAIL %s: first loss %.6g resident vs %.6g op by op", name,
                                resident[0], opByOp[0]));
                    }
                } else {
                    time(ops, model, name, batch, steps, warmup, dir, out);
                }
            } finally {
                if (ops instanceof CudaOps c) {
                    c.close();
                }
            }
            if (cpuSteps > warmup + 1 && !backend.equals("cpu")) {
                time(Backends.byName("cpu", threads), model, name + " cpu", batch, cpuSteps, warmup, dir, out);
            }
        }
        if (out != null) {
            out.close();
        }
        // fp32 convolutions run exact unless -Donestep.cuda.tf32=true (CudaDevice): the tenth session's 215.5 ms CIFAR
        // step was TF32, the seventeenth's 292.1 ms exact, so the header says which.
        String math = backend.equals("cpu") ? "" : Boolean.getBoolean("onestep.cuda.tf32") ? ", TF32 convolutions"
                : ", exact fp32 convolutions";
        System.out.printf("%n%-44s %6s %12s %12s %9s %12s %8s%n", "teacher training step (" + backend + math + ")",
                "batch", "median ms", "min ms", "img/s", "copies/step", "MB/step");
        rows.forEach(System.out::println);
        System.out.println("TrainTiming: " + (failures == 0 ? "ok" : failures + " FAILED"));
        System.exit(failures == 0 ? 0 : 1);
    }

    /** Trains {@code steps} steps from the model's weights; returns {first loss, median ms}. */
    private static double[] time(Ops ops, Path model, String label, int batch, int steps, int warmup, Path dir,
                                 FileWriter jsonl) throws IOException {
        Device device = ops instanceof CudaOps c ? c.device() : null;
        List<Double> losses = new ArrayList<>();
        long[] at = new long[steps + 1];
        Device.Traffic[] traffic = new Device.Traffic[steps + 1];
        try (UNetCheckpoint.Loaded m = UNetCheckpoint.load(model, true)) {
            UNet net = m.net();
            var cfg = net.config();
            int hw = cfg.sampleSize(), c = cfg.inChannels(), count = Math.max(256, batch);
            byte[] px = new byte[count * hw * hw * c];
            new SplittableRandom(3).nextBytes(px);
            ImageDataset data = new ImageDataset("random", px, count, hw, hw, c, null, 0);
            // lr 1e-5 from trained weights: the timed steps stay in the regime of a real run.
            var o = new TeacherTrainer.Options(steps, batch, 1e-5, 1, 0.999, 1.0, 0.0, 1_000_000, 1, false, false);
            at[0] = System.nanoTime();
            traffic[0] = device == null ? null : device.traffic();
            new TeacherTrainer(ops, net, data, o, dir.resolve("t.safetensors"), dir.resolve("t.jsonl")).run(null,
                    (step, loss, note) -> {
                        losses.add(loss);
                        at[(int) step] = System.nanoTime();
                        traffic[(int) step] = device == null ? null : device.traffic();
                    });
        }
        // Steps warmup+1 .. steps-1: after the warm-up, before the last (which writes the checkpoint).
        double[] ms = new double[steps - 1 - warmup];
        for (int i = warmup; i < steps - 1; i++) {
            ms[i - warmup] = (at[i + 1] - at[i]) / 1e6;
        }
        for (double l : losses) {
            if (!Double.isFinite(l)) {
                failures++;
                row("NON-FINITE loss: " + label + " " + losses);
                break;
            }
        }
        double[] sorted = ms.clone();
        Arrays.sort(sorted);
        double median = sorted[sorted.length / 2], min = sorted[0];
        String copies = "", mb = "";
        if (device != null) {
            Device.Traffic t = traffic[steps - 1].minus(traffic[warmup]);
            int n = steps - 1 - warmup;
            copies = String.valueOf((t.uploads() + t.downloads()) / n);
            mb = String.format(Locale.ROOT, "%.2f", t.bytes() / 1e6 / n);
        }
        row(String.format(Locale.ROOT, "%-44s %6d %12.2f %12.2f %9.1f %12s %8s", label, batch, median, min,
                batch / (median / 1e3), copies, mb));
        if (device != null) {
            // The group norms' timed choices (fp32 training at batch 64 is above 2^20 values): the slab kernel, x
            // read once, against the statistics and normalize kernels (Device#groupNormKernel).
            device.timedChoices().stream().filter(ch -> ch.shape().startsWith("groupnorm,"))
                    .forEach(ch -> row("  (choice) " + ch));
        }
        if (jsonl != null) {
            jsonl.write(String.format(Locale.ROOT, "{\"bench\":\"train-step\",\"what\":\"%s\",\"batch\":%d,"
                    + "\"median_ms\":%.4f,\"min_ms\":%.4f,\"copies_per_step\":\"%s\",\"mb_per_step\":\"%s\"}%n",
                    label, batch, median, min, copies, mb));
        }
        return new double[] {losses.get(0), median};
    }
}
