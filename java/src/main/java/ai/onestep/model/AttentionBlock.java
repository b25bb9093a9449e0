package ai.onestep.model;

import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;

/**
 * diffusers' spatial self-attention ({@code Attention} as built by the Attn* blocks): optional group norm, then
 * multi-head scaled-dot-product attention over the H*W tokens with {@code to_q}, {@code to_k}, {@code to_v} and
 * {@code to_out.0} projections (all with bias), a residual connection and a division by
 * {@code rescale_output_factor}. NHWC feature maps are already token-major, so (N, H, W, C) is viewed as
 * (N, H*W, C) without a copy.
 */
final class AttentionBlock {
    final GroupNorm groupNorm;
    final Linear toQ, toK, toV, toOut;
    final int heads;
    final double rescale;
    private Tensor q, k, v, o, lse;

    AttentionBlock(ParamBuilder pb, String name, int channels, int headDim, Integer normGroups, float eps,
                   double rescale) {
        this.groupNorm = normGroups == null ? null : new GroupNorm(pb, name + ".group_norm", channels, normGroups, eps, false);
        this.toQ = new Linear(pb, name + ".to_q", channels, channels);
        this.toK = new Linear(pb, name + ".to_k", channels, channels);
        this.toV = new Linear(pb, name + ".to_v", channels, channels);
        this.toOut = new Linear(pb, name + ".to_out.0", channels, channels);
        this.heads = channels / headDim;
        this.rescale = rescale;
    }

    Tensor forward(Context c, Tensor x) {
        int n = x.dim(0), t = x.dim(1) * x.dim(2), ch = x.dim(3);
        Tensor h = groupNorm != null ? groupNorm.forward(c, x) : x;
        Tensor tokens = h.reshape(Layout.ROWS, n, t, ch);
        q = toQ.forward(c, tokens);
        k = toK.forward(c, tokens);
        v = toV.forward(c, tokens);
        o = c.alloc(Layout.ROWS, n, t, ch);
        lse = c.alloc(Layout.ROWS, n, heads, t);
        c.ops.attention(q, k, v, heads, o, lse);
        Tensor y = toOut.forward(c, o).reshape(Layout.NHWC, x.shape());
        c.ops.add(y, x, y);
        if (rescale != 1) {
            c.ops.scale(y, (float) (1 / rescale), y);
        }
        return y;
    }

    Tensor backward(Context c, Tensor dy) {
        int n = dy.dim(0), t = dy.dim(1) * dy.dim(2), ch = dy.dim(3);
        Tensor dys = dy;
        if (rescale != 1) {
            dys = c.like(dy);
            c.ops.scale(dy, (float) (1 / rescale), dys);
        }
        Tensor dO = toOut.backward(c, dys.reshape(Layout.ROWS, n, t, ch));
        Tensor dq = c.like(q), dk = c.like(k), dv = c.like(v);
        c.ops.attentionBackward(q, k, v, o, lse, dO, heads, dq, dk, dv);
        Tensor dh = toQ.backward(c, dq);
        c.ops.axpy(1f, toK.backward(c, dk), dh);
        c.ops.axpy(1f, toV.backward(c, dv), dh);
        Tensor dhMap = dh.reshape(Layout.NHWC, dy.shape());
        Tensor dx = groupNorm != null ? groupNorm.backward(c, dhMap) : dhMap;
        c.ops.axpy(1f, dys, dx);
        return dx;
    }

    long flops(int n, int h, int w) {
        long t = (long) h * w;
        long ch = toQ.out();
        return 4 * toQ.flops(n * t) + 4L * n * t * t * ch;
    }
}
