package ai.onestep.cli;

import ai.onestep.api.Sampler;
import ai.onestep.diffusion.ConsistencyDenoiser;
import ai.onestep.diffusion.Denoiser;
import ai.onestep.diffusion.EdmDenoiser;
import ai.onestep.io.Safetensors;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "denoise", mixinStandardHelpOptions = true,
        description = "Evaluate the preconditioned denoiser once (teacher: D(x; sigma); student: f(x, sigma)) on the "
                + "tensor 'x' (N, C, H, W as in PyTorch) of a safetensors file; writes tensor 'y' in the same layout.")
final class Denoise implements Callable<Integer> {
    @Mixin
    Common common;

    @Option(names = "--model", required = true, description = "Teacher or student checkpoint.") Path model;
    @Option(names = "--input", required = true, description = "safetensors file with tensor 'x' (N, C, H, W).") Path input;
    @Option(names = "--sigma", required = true, description = "Noise level (> 0).") double sigma;
    @Option(names = "--class", description = "Class label for a class-conditional model.") Integer label;
    @Option(names = "--out", required = true, description = "safetensors file to write (tensor 'y').") Path out;

    @Override
    public Integer call() {
        Common.requireFile(model, "model");
        Common.requireNotInput("--out", out, "--input", input, "--model", model);
        try (Sampler s = common.sampler(model); TensorArena a = new TensorArena();
             Workspace ws = new Workspace(); Safetensors.Reader r = Safetensors.open(input)) {
            var cfg = s.net().config();
            Tensor nchw = r.read("x", a, Layout.NCHW);
            if (nchw.rank() != 4 || nchw.dim(1) != cfg.inChannels()) {
                throw new IllegalArgumentException(input + ": tensor 'x' has shape " + Arrays.toString(nchw.shape())
                        + ", expected (N, " + cfg.inChannels() + ", H, W)");
            }
            int n = nchw.dim(0), c = nchw.dim(1), h = nchw.dim(2), w = nchw.dim(3);
            Tensor x = a.allocate(Layout.NHWC, n, h, w, c);
            transpose(nchw, x, n, c, h * w, true);
            double[] sig = new double[n];
            Arrays.fill(sig, sigma);
            int[] labels = null;
            if (label != null) {
                labels = new int[n];
                Arrays.fill(labels, label);
            }
            Denoiser d = s.isStudent() ? new ConsistencyDenoiser(s.net(), s.ops(), ws) : new EdmDenoiser(s.net(), s.ops(), ws);
            Tensor y = a.allocate(Layout.NHWC, n, h, w, c);
            d.denoise(x, sig, labels, y);
            Tensor yOut = a.allocate(Layout.NCHW, n, c, h, w);
            transpose(y, yOut, n, c, h * w, false);
            Safetensors.write(out, Map.of("y", yOut), Map.of("sigma", Double.toString(sigma),
                    "model", model.toString(), "role", s.isStudent() ? "student" : "teacher"));
            System.out.println("wrote " + out + " (y " + Arrays.toString(yOut.shape()) + ")");
        }
        return 0;
    }

    /** NCHW to NHWC ({@code toNhwc}) or back, for n images of c channels and hw pixels. */
    static void transpose(Tensor src, Tensor dst, int n, int c, int hw, boolean toNhwc) {
        for (int b = 0; b < n; b++) {
            for (int ch = 0; ch < c; ch++) {
                for (int p = 0; p < hw; p++) {
                    long nchw = ((long) b * c + ch) * hw + p, nhwc = ((long) b * hw + p) * c + ch;
                    if (toNhwc) {
                        dst.set(nhwc, src.get(nchw));
                    } else {
                        dst.set(nchw, src.get(nhwc));
                    }
                }
            }
        }
    }
}
