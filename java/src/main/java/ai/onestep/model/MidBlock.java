package ai.onestep.model;

import ai.onestep.tensor.Tensor;

/**
 * diffusers' {@code UNetMidBlock2D} with one layer: resnet, attention (unless {@code add_attention} is false),
 * resnet, all with {@code mid_block_scale_factor} as output scale. Its attention has a group norm with
 * {@code attn_norm_num_groups} groups, or, when that is null, {@code norm_num_groups} groups for
 * {@code resnet_time_scale_shift = "default"} and no group norm at all for "scale_shift" (diffusers' rule).
 */
final class MidBlock {
    final ResnetBlock2D resnet0;
    final AttentionBlock attention;
    final ResnetBlock2D resnet1;

    MidBlock(ParamBuilder pb, UNetConfig cfg, int ch, long[] ids) {
        float eps = (float) cfg.normEps();
        double scale = cfg.midBlockScaleFactor();
        resnet0 = new ResnetBlock2D(pb, "mid_block.resnets.0", ch, ch, cfg.timeEmbedDim(), cfg.normNumGroups(), eps,
                cfg.scaleShift(), cfg.dropout(), scale, ids[0]++);
        Integer attnGroups = cfg.attnNormNumGroups() != null ? cfg.attnNormNumGroups()
                : cfg.scaleShift() ? null : Integer.valueOf(cfg.normNumGroups());
        attention = cfg.addAttention() ? new AttentionBlock(pb, "mid_block.attentions.0", ch,
                cfg.attentionHeadDim() == null ? ch : cfg.attentionHeadDim(), attnGroups, eps, scale) : null;
        resnet1 = new ResnetBlock2D(pb, "mid_block.resnets.1", ch, ch, cfg.timeEmbedDim(), cfg.normNumGroups(), eps,
                cfg.scaleShift(), cfg.dropout(), scale, ids[0]++);
    }

    Tensor forward(Context c, Tensor x) {
        Tensor h = resnet0.forward(c, x);
        if (attention != null) {
            h = attention.forward(c, h);
        }
        return resnet1.forward(c, h);
    }

    Tensor backward(Context c, Tensor dy, Tensor dTembAct) {
        Tensor g = resnet1.backward(c, dy, dTembAct);
        if (attention != null) {
            g = attention.backward(c, g);
        }
        return resnet0.backward(c, g, dTembAct);
    }

    long flops(int n, int h, int w) {
        return resnet0.flops(n, h, w) + resnet1.flops(n, h, w) + (attention == null ? 0 : attention.flops(n, h, w));
    }
}
