package ai.onestep.diffusion;

import ai.onestep.backend.Ops;
import ai.onestep.data.ImageDataset;
import ai.onestep.io.CheckpointException;
import ai.onestep.io.Safetensors;
import ai.onestep.model.UNet;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.function.IntConsumer;

/**
 * Data-free distillation: the teacher's own samples stand in for the data set. They are generated once with EDM's
 * Heun sampler and cached as safetensors (quantized to 8 bits, like the images they imitate), keyed by the
 * teacher file's size and time, the count, the steps and the seed, so reruns skip the generation.
 */
public final class TeacherSamples {
    private TeacherSamples() {
    }

    public static ImageDataset load(Ops ops, UNet teacher, Path teacherFile, Path cacheDir, int n, int steps, long seed,
                                    IntConsumer onSample) {
        try {
            String key = Files.size(teacherFile) + "-" + Files.getLastModifiedTime(teacherFile).toMillis();
            Path cache = cacheDir.resolve(teacherFile.getFileName() + ".samples-" + n + "-" + steps + "-" + seed + "-" + key
                    + ".safetensors");
            var cfg = teacher.config();
            int s = cfg.sampleSize(), c = cfg.inChannels();
            try (TensorArena a = new TensorArena()) {
                Tensor x;
                if (Files.exists(cache)) {
                    try (Safetensors.Reader r = Safetensors.open(cache)) {
                        x = r.read("x", a, Layout.NHWC, n, s, s, c);
                    }
                } else {
                    x = a.allocate(Layout.NHWC, n, s, s, c);
                    try (Workspace ws = new Workspace()) {
                        EdmDenoiser d = new EdmDenoiser(teacher, ops, ws);
                        double[] sig = KarrasSchedule.sigmas(steps);
                        int chunk = 32;
                        for (int i = 0; i < n; i += chunk) {
                            Tensor xi = x.slice(i, Math.min(n, i + chunk));
                            Noise.gaussian(xi, seed, i);
                            ops.scale(xi, (float) sig[0], xi);
                            EdmSampler.sample(ops, d, EdmSampler.Method.HEUN, xi, sig, null, null);
                            if (onSample != null) {
                                onSample.accept(Math.min(n, i + chunk));
                            }
                        }
                    }
                    Files.createDirectories(cacheDir);
                    Safetensors.write(cache, Map.of("x", x), Map.of("onestep.role", "teacher-samples",
                            "teacher", teacherFile.toString(), "steps", Integer.toString(steps)));
                }
                byte[] px = new byte[(int) x.size()];
                for (int i = 0; i < px.length; i++) {
                    px[i] = (byte) Math.max(0, Math.min(255, Math.round((x.get(i) + 1) * 127.5f)));
                }
                return new ImageDataset("teacher samples (" + n + ", " + steps + " Heun steps) of " + teacherFile, px, n,
                        s, s, c, null, 0);
            }
        } catch (java.io.IOException e) {
            throw new CheckpointException(cacheDir + ": cannot cache teacher samples: " + e.getMessage(), e);
        }
    }
}
