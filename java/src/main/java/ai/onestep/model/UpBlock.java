package ai.onestep.model;

import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/**
 * diffusers' {@code UpBlock2D} / {@code AttnUpBlock2D}: {@code layers + 1} residual blocks, each taking the
 * concatenation [h, skip] along channels (h first) of the running features and the most recent unused skip
 * connection (each followed by attention in the Attn variant; the concatenation is made by the resnet's norm1 op,
 * see ResnetBlock2D#forwardConcat), then a nearest-neighbour 2x upsampling and a 3x3
 * convolution ({@code upsamplers.0.conv}, Upsample2D) unless it is the last level.
 */
final class UpBlock {
    final List<ResnetBlock2D> resnets = new ArrayList<>();
    final List<AttentionBlock> attentions = new ArrayList<>();
    final Conv2d upsampler;
    private final List<Tensor> hs = new ArrayList<>();
    private final List<Tensor> skipIn = new ArrayList<>();
    private Tensor preUpsample;

    UpBlock(ParamBuilder pb, String name, UNetConfig cfg, int in, int prevOut, int out, boolean attention,
            boolean upsample, long[] ids) {
        float eps = (float) cfg.normEps();
        int layers = cfg.layersPerBlock() + 1;
        for (int i = 0; i < layers; i++) {
            int skipCh = i == layers - 1 ? in : out;
            int resIn = i == 0 ? prevOut : out;
            resnets.add(new ResnetBlock2D(pb, name + ".resnets." + i, resIn + skipCh, out, cfg.timeEmbedDim(),
                    cfg.normNumGroups(), eps, cfg.scaleShift(), cfg.dropout(), 1.0, ids[0]++));
            if (attention) {
                attentions.add(new AttentionBlock(pb, name + ".attentions." + i, out,
                        cfg.attentionHeadDim() == null ? out : cfg.attentionHeadDim(), cfg.normNumGroups(), eps, 1.0));
            }
        }
        upsampler = upsample ? new Conv2d(pb, name + ".upsamplers.0.conv", out, out, 3, 1, 1) : null;
    }

    /** Consumes skips from the end of {@code skips} (removing them). */
    Tensor forward(Context c, Tensor x, List<Tensor> skips) {
        hs.clear();
        skipIn.clear();
        Tensor h = x;
        for (int i = 0; i < resnets.size(); i++) {
            Tensor skip = skips.remove(skips.size() - 1);
            hs.add(h);
            skipIn.add(skip);
            // cat(h, skip) and the resnet's norm1 as one op (Ops.groupNormConcat)
            h = resnets.get(i).forwardConcat(c, h, skip);
            if (!attentions.isEmpty()) {
                h = attentions.get(i).forward(c, h);
            }
        }
        if (upsampler != null) {
            preUpsample = h;
            if (!c.training && c.ops.fusesUpsampleConv()) {
                return upsampler.forwardUpsampled(c, h);  // one transposed convolution (Ops.upsampleConv2d)
            }
            Tensor up = c.alloc(Layout.NHWC, h.dim(0), 2 * h.dim(1), 2 * h.dim(2), h.dim(3));
            c.ops.upsampleNearest2x(h, up);
            h = upsampler.forward(c, up);
        }
        return h;
    }

    /**
     * Returns the gradient for this block's input and writes the gradients of the consumed skips into
     * {@code dSkips}, counting down from {@code last} (the skip consumed first is the last one).
     */
    Tensor backward(Context c, Tensor dy, Tensor[] dSkips, int last, Tensor dTembAct) {
        Tensor g = dy;
        if (upsampler != null) {
            Tensor dUp = upsampler.backward(c, g);
            g = c.like(preUpsample);
            c.ops.upsampleNearest2xBackward(dUp, g);
        }
        for (int i = resnets.size() - 1; i >= 0; i--) {
            if (!attentions.isEmpty()) {
                g = attentions.get(i).backward(c, g);
            }
            Tensor dCat = resnets.get(i).backward(c, g, dTembAct);
            Tensor dh = c.like(hs.get(i));
            Tensor dSkip = c.like(skipIn.get(i));
            c.ops.splitChannels(dCat, dh, dSkip);
            dSkips[last - i] = dSkip;
            g = dh;
        }
        return g;
    }

    long flops(int n, int h, int w) {
        long f = 0;
        for (int i = 0; i < resnets.size(); i++) {
            f += resnets.get(i).flops(n, h, w);
            if (!attentions.isEmpty()) {
                f += attentions.get(i).flops(n, h, w);
            }
        }
        return upsampler == null ? f : f + upsampler.flops(n, 2 * h, 2 * w);
    }
}
