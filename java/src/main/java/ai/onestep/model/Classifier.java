package ai.onestep.model;

import ai.onestep.nn.ParameterSet;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.Map;

/**
 * The in-domain feature network behind FID-FMNIST: a small CNN trained on the Fashion-MNIST training split.
 * <pre>
 *   conv1 3x3 (C -> w) GN+SiLU, conv2 3x3 (w -> w) GN+SiLU            28x28
 *   conv3 3x3 stride 2 (w -> 2w) GN+SiLU                               14x14
 *   conv4 3x3 stride 2 (2w -> 4w) GN+SiLU                              7x7
 *   features = global average pool (4w)                                 <- FID features (Heusel et al. 2017 use
 *   logits = fc (4w -> classes)                                            Inception's pool3 the same way)
 * </pre>
 * Its intermediate activations also serve as the "feature" distance of consistency distillation (an LPIPS-like
 * distance on an in-domain network, Zhang et al. 2018).
 */
public final class Classifier implements AutoCloseable {
    public static final int GROUPS = 8;

    private final ParameterSet params;
    private final ParamBuilder pb;
    final List<Conv2d> convs;
    final List<GroupNorm> norms;
    final Linear fc;
    private final int width;
    private final int inChannels;
    private final int classes;
    private Tensor pooledIn;

    public Classifier(int inChannels, int width, int classes, boolean withGradients) {
        this.params = withGradients ? new ParameterSet() : ParameterSet.withoutGradients();
        this.pb = new ParamBuilder(params);
        this.width = width;
        this.inChannels = inChannels;
        this.classes = classes;
        int[] ch = {width, width, 2 * width, 4 * width};
        int[] stride = {1, 1, 2, 2};
        convs = new java.util.ArrayList<>();
        norms = new java.util.ArrayList<>();
        int in = inChannels;
        for (int i = 0; i < 4; i++) {
            convs.add(new Conv2d(pb, "conv" + (i + 1), in, ch[i], 3, stride[i], 1));
            norms.add(new GroupNorm(pb, "norm" + (i + 1), ch[i], GROUPS, 1e-5f, true));
            in = ch[i];
        }
        fc = new Linear(pb, "fc", 4 * width, classes);
    }

    public ParameterSet parameters() {
        return params;
    }

    public Map<String, TorchLayout> torchLayouts() {
        return pb.layouts;
    }

    public int featureDim() {
        return 4 * width;
    }

    public int classes() {
        return classes;
    }

    public int inChannels() {
        return inChannels;
    }

    public int width() {
        return width;
    }

    /** The activations after each GN+SiLU stage (for the feature distance) and the pooled features. */
    public record Activations(List<Tensor> stages, Tensor features, Tensor logits) {
    }

    public Activations forward(Context c, Tensor x) {
        List<Tensor> stages = new java.util.ArrayList<>();
        Tensor h = x;
        for (int i = 0; i < 4; i++) {
            h = norms.get(i).forward(c, convs.get(i).forward(c, h));
            stages.add(h);
        }
        pooledIn = h;
        int n = h.dim(0);
        Tensor feat = c.alloc(Layout.ROWS, n, h.dim(3));
        c.ops.sumPerChannel(h, feat);
        c.ops.scale(feat, 1f / (h.dim(1) * h.dim(2)), feat);
        Tensor logits = fc.forward(c, feat);
        return new Activations(stages, feat, logits);
    }

    /**
     * Backward from the logits' gradient (and optionally extra gradients on the stages, null for none); returns the
     * image gradient when {@code needDx}, else null.
     */
    public Tensor backward(Context c, Tensor dLogits, List<Tensor> dStages, boolean needDx) {
        Tensor dFeat = fc.backward(c, dLogits);
        Tensor h = pooledIn;
        Tensor dh = c.like(h);
        dh.segment().fill((byte) 0);
        c.ops.scale(dFeat, 1f / (h.dim(1) * h.dim(2)), dFeat);
        c.ops.addPerChannel(dh, dFeat, dh);
        for (int i = 3; i >= 0; i--) {
            if (dStages != null && dStages.get(i) != null) {
                c.ops.axpy(1f, dStages.get(i), dh);
            }
            dh = convs.get(i).backward(c, norms.get(i).backward(c, dh), i > 0 || needDx);
        }
        return dh;
    }

    /**
     * Softmax cross-entropy of {@code logits} (N, K) against {@code labels}, averaged over the batch; writes
     * dL/dlogits into {@code dLogits} and returns the loss. Computed in double with the max subtracted.
     */
    public static double crossEntropy(Tensor logits, int[] labels, Tensor dLogits) {
        int n = logits.dim(0), k = logits.dim(1);
        MemorySegment l = logits.segment(), d = dLogits.segment();
        double loss = 0;
        for (int i = 0; i < n; i++) {
            double max = Double.NEGATIVE_INFINITY;
            for (int j = 0; j < k; j++) {
                max = Math.max(max, l.getAtIndex(Tensor.F32, (long) i * k + j));
            }
            double sum = 0;
            for (int j = 0; j < k; j++) {
                sum += Math.exp(l.getAtIndex(Tensor.F32, (long) i * k + j) - max);
            }
            double lse = max + Math.log(sum);
            loss += lse - l.getAtIndex(Tensor.F32, (long) i * k + labels[i]);
            for (int j = 0; j < k; j++) {
                double p = Math.exp(l.getAtIndex(Tensor.F32, (long) i * k + j) - lse);
                d.setAtIndex(Tensor.F32, (long) i * k + j, (float) ((p - (j == labels[i] ? 1 : 0)) / n));
            }
        }
        return loss / n;
    }

    @Override
    public void close() {
        params.close();
    }
}
