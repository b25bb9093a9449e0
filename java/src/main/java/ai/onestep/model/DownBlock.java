package ai.onestep.model;

import ai.onestep.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/**
 * diffusers' {@code DownBlock2D} / {@code AttnDownBlock2D}: {@code layers} residual blocks (each followed by
 * attention in the Attn variant), then a stride-2 3x3 convolution ({@code downsamplers.0.conv}, Downsample2D
 * with padding 1) unless it is the last level. Every layer's output, and the downsampler's, is also a skip
 * connection to the up path.
 */
final class DownBlock {
    final List<ResnetBlock2D> resnets = new ArrayList<>();
    final List<AttentionBlock> attentions = new ArrayList<>();
    final Conv2d downsampler;

    DownBlock(ParamBuilder pb, String name, UNetConfig cfg, int in, int out, boolean attention, boolean downsample,
              long[] ids) {
        float eps = (float) cfg.normEps();
        for (int i = 0; i < cfg.layersPerBlock(); i++) {
            resnets.add(new ResnetBlock2D(pb, name + ".resnets." + i, i == 0 ? in : out, out, cfg.timeEmbedDim(),
                    cfg.normNumGroups(), eps, cfg.scaleShift(), cfg.dropout(), 1.0, ids[0]++));
            if (attention) {
                attentions.add(new AttentionBlock(pb, name + ".attentions." + i, out,
                        cfg.attentionHeadDim() == null ? out : cfg.attentionHeadDim(), cfg.normNumGroups(), eps, 1.0));
            }
        }
        downsampler = downsample ? new Conv2d(pb, name + ".downsamplers.0.conv", out, out, 3, 2, 1) : null;
    }

    /** Number of skip connections this block produces. */
    int skips() {
        return resnets.size() + (downsampler != null ? 1 : 0);
    }

    Tensor forward(Context c, Tensor x, List<Tensor> skips) {
        Tensor h = x;
        for (int i = 0; i < resnets.size(); i++) {
            h = resnets.get(i).forward(c, h);
            if (!attentions.isEmpty()) {
                h = attentions.get(i).forward(c, h);
            }
            skips.add(h);
        }
        if (downsampler != null) {
            h = downsampler.forward(c, h, !c.training && c.ops.fusesResidual());  // (see UNet#forward)
            skips.add(h);
        }
        return h;
    }

    /**
     * {@code dOut} is the gradient from the next block (null for none); {@code dSkips} holds, at this block's
     * positions from {@code first}, the gradients that the up path sent back through the skips.
     */
    Tensor backward(Context c, Tensor dOut, Tensor[] dSkips, int first, Tensor dTembAct) {
        int k = first + skips() - 1;
        Tensor g = merge(c, dOut, dSkips[k--]);
        if (downsampler != null) {
            g = merge(c, downsampler.backward(c, g), dSkips[k--]);
        }
        for (int i = resnets.size() - 1; i >= 0; i--) {
            if (!attentions.isEmpty()) {
                g = attentions.get(i).backward(c, g);
            }
            g = resnets.get(i).backward(c, g, dTembAct);
            if (i > 0) {
                g = merge(c, g, dSkips[k--]);
            }
        }
        return g;
    }

    /** a + b where either may be null (a gradient from two paths). */
    static Tensor merge(Context c, Tensor a, Tensor b) {
        if (a == null) {
            return b;
        }
        if (b != null) {
            c.ops.axpy(1f, b, a);
        }
        return a;
    }

    long flops(int n, int h, int w) {
        long f = 0;
        for (int i = 0; i < resnets.size(); i++) {
            f += resnets.get(i).flops(n, h, w);
            if (!attentions.isEmpty()) {
                f += attentions.get(i).flops(n, h, w);
            }
        }
        return downsampler == null ? f : f + downsampler.flops(n, h, w);
    }
}
