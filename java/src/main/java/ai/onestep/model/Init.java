package ai.onestep.model;

import ai.onestep.nn.Parameter;
import ai.onestep.nn.ParameterSet;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import java.util.SplittableRandom;

/**
 * PyTorch's default initialization, which is what a freshly constructed diffusers {@code UNet2DModel} has:
 * conv and linear weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)),
 * group-norm weight 1 and bias 0, embeddings ~ N(0, 1), Fourier frequencies ~ N(0, 16^2). Each parameter draws
 * from its own stream keyed by its name, so adding a layer does not change the others' initial values.
 */
public final class Init {
    private Init() {
    }

    public static void pytorchDefault(UNet net, long seed) {
        pytorchDefault(net.parameters(), net.torchLayouts(), seed);
        for (var b : net.buffers().entrySet()) {
            gaussian(b.getValue(), Noise.stream(seed, b.getKey().hashCode()), 16.0);
        }
    }

    /** Initializes any parameter set whose layouts are known (the U-Net, the classifier). */
    public static void pytorchDefault(ParameterSet params, java.util.Map<String, TorchLayout> layouts, long seed) {
        for (Parameter p : params) {
            SplittableRandom r = Noise.stream(seed, p.name().hashCode());
            Tensor v = p.value();
            String n = p.name();
            boolean norm = n.contains("norm") && !n.contains("to_");
            if (norm) {
                v.fill(n.endsWith(".weight") ? 1f : 0f);
            } else if (n.startsWith("class_embedding")) {
                gaussian(v, r, 1.0);
            } else {
                int fanIn = fanIn(params, layouts, n);
                double bound = 1 / Math.sqrt(fanIn);
                for (long i = 0; i < v.size(); i++) {
                    v.set(i, (float) ((r.nextDouble() * 2 - 1) * bound));
                }
            }
        }
    }

    /** fan_in of a weight, or of the weight that a bias belongs to. */
    private static int fanIn(ParameterSet params, java.util.Map<String, TorchLayout> layouts, String name) {
        String weight = name.endsWith(".bias") ? name.substring(0, name.length() - 5) + ".weight" : name;
        Tensor w = params.get(weight).value();
        TorchLayout wl = layouts.get(weight);
        return switch (wl) {
            case CONV -> w.dim(0) * w.dim(1) * w.dim(2);
            case LINEAR -> w.dim(0);
            case PLAIN -> w.dim(-1);
        };
    }

    private static void gaussian(Tensor v, SplittableRandom r, double std) {
        for (long i = 0; i < v.size(); i++) {
            double u1 = 1.0 - r.nextDouble(), u2 = r.nextDouble();
            v.set(i, (float) (std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2)));
        }
    }
}
