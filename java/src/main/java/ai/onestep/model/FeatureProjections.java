package ai.onestep.model;

import ai.onestep.nn.ParameterSet;
import ai.onestep.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/**
 * The 1x1 convolutions that map a smaller student's intermediate activations ({@link UNet#taps()}) to the
 * teacher's channel counts, so the two can be compared by a feature-distillation loss (FitNets, Romero et al. 2015:
 * a regressor from the student's hint layer to the teacher's). One projection per tap, named
 * {@code proj.<tap name>}; they train with the student and are dropped afterwards (sampling never uses them).
 *
 * <p>Initialization: a student sliced from the teacher ({@link StudentInit}) keeps the teacher's leading channels,
 * so channel i of the student starts as channel i of the teacher. The projection starts as that embedding
 * (weight[i][i] = 1, zero bias), which makes the initial feature loss measure exactly what slicing dropped.
 */
public final class FeatureProjections implements AutoCloseable {
    private final ParameterSet params = new ParameterSet();
    private final List<Conv2d> convs = new ArrayList<>();
    private final List<String> names;

    public FeatureProjections(UNet student, UNet teacher) {
        this.names = student.tapNames();
        if (!names.equals(teacher.tapNames())) {
            throw new IllegalArgumentException("feature distillation: the student's blocks " + names
                    + " do not match the teacher's " + teacher.tapNames());
        }
        int[] sc = tapChannels(student.config()), tc = tapChannels(teacher.config());
        ParamBuilder pb = new ParamBuilder(params);
        for (int i = 0; i < names.size(); i++) {
            Conv2d conv = new Conv2d(pb, "proj." + names.get(i), sc[i], tc[i], 1, 1, 0);
            Tensor w = conv.weight.value(); // HWIO (1, 1, Cin, Cout)
            for (int c = 0; c < Math.min(sc[i], tc[i]); c++) {
                w.set((long) c * tc[i] + c, 1f);
            }
            convs.add(conv);
        }
    }

    /** The channel count of each tap of a U-Net with this config (down blocks, mid block, up blocks). */
    static int[] tapChannels(UNetConfig cfg) {
        int[] ch = cfg.blockOutChannels();
        int levels = ch.length;
        int[] out = new int[2 * levels + 1];
        for (int i = 0; i < levels; i++) {
            out[i] = ch[i];
            out[levels + 1 + i] = ch[levels - 1 - i];
        }
        out[levels] = ch[levels - 1];
        return out;
    }

    public ParameterSet parameters() {
        return params;
    }

    public List<String> names() {
        return names;
    }

    /** The projected student taps (in {@code c}'s workspace), one per tap. */
    public List<Tensor> forward(Context c, List<Tensor> studentTaps) {
        List<Tensor> out = new ArrayList<>();
        for (int i = 0; i < convs.size(); i++) {
            out.add(convs.get(i).forward(c, studentTaps.get(i)));
        }
        return out;
    }

    /** Given the loss gradients of the projected taps, accumulates the projections' gradients and returns the taps'. */
    public List<Tensor> backward(Context c, List<Tensor> dProjected) {
        List<Tensor> out = new ArrayList<>();
        for (int i = 0; i < convs.size(); i++) {
            out.add(convs.get(i).backward(c, dProjected.get(i)));
        }
        return out;
    }

    @Override
    public void close() {
        params.close();
    }
}
