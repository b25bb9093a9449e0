package ai.onestep.model;

import ai.onestep.backend.Ops;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.List;

/**
 * diffusers' spatial self-attention ({@code Attention} as built by the Attn* blocks): optional group norm, then
 * multi-head scaled-dot-product attention over the H*W tokens with {@code to_q}, {@code to_k}, {@code to_v} and
 * {@code to_out.0} projections (all with bias), a residual connection and a division by
 * {@code rescale_output_factor}. NHWC feature maps are already token-major, so (N, H, W, C) is viewed as
 * (N, H*W, C) without a copy.
 *
 * <p>At inference on a backend whose attention reads one packed projection ({@link Ops#packsQkv}), inside a pass
 * that folds constants ({@link Ops#passConstants}), q, k and v come from one GEMM against the three weights
 * concatenated, [W_q | W_k | W_v] (C, 3C), whose concatenation the fold does once per capture: one launch instead
 * of three, the same products. There too ({@link Ops#fusesResidual}), to_out.0 and the residual run as one
 * {@link Ops#linearResidual}, and with the attention before them as one {@link Ops#attentionResidual} where the block
 * does not rescale its output (the backend may run those as one launch). Where the backend also fuses a group norm
 * into the convolution it feeds ({@link Ops#fusesNormConv}), the group norm and that GEMM are one
 * {@link Ops#groupNormConv2d}: the packed weights are a 1x1 convolution's.
 */
final class AttentionBlock implements AutoCloseable {
    final GroupNorm groupNorm;
    final Linear toQ, toK, toV, toOut;
    final int heads;
    final double rescale;
    private Tensor q, k, v, o, lse;
    /** The concatenated projection [W_q | W_k | W_v] and its bias, made on the first packed forward. */
    private TensorArena packedArena;
    private Tensor packedWeight, packedBias;

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
        o = c.alloc(Layout.ROWS, n, t, ch);
        lse = c.alloc(Layout.ROWS, n, heads, t);
        Ops fold = c.training || !c.ops.packsQkv(ch / heads) ? c.ops : c.ops.passConstants(List.of(
                toQ.weight.value(), toQ.bias.value(), toK.weight.value(), toK.bias.value(), toV.weight.value(),
                toV.bias.value()));
        if (fold != c.ops && groupNorm != null && c.ops.fusesNormConv()) {
            // The norm and the packed projection as one op: [W_q | W_k | W_v] (C, 3C) is a 1x1 convolution's HWIO
            // weights, and the tokens are the NHWC map itself.
            pack(fold, ch);
            Tensor qkv = groupNorm.forwardConv(c, x, null, packedWeight.reshape(Layout.HWIO, 1, 1, ch, 3 * ch),
                    packedBias, 1, 0, null);
            return packedAttention(c, x, qkv.reshape(Layout.ROWS, n, t, 3 * ch), n, t, ch);
        }
        Tensor h = groupNorm != null ? groupNorm.forward(c, x) : x;
        Tensor tokens = h.reshape(Layout.ROWS, n, t, ch);
        if (fold != c.ops) {
            pack(fold, ch);
            Tensor qkv = c.alloc(Layout.ROWS, n, t, 3 * ch);
            c.ops.linear(tokens, packedWeight, packedBias, qkv);
            return packedAttention(c, x, qkv, n, t, ch);
        } else {
            q = toQ.forward(c, tokens);
            k = toK.forward(c, tokens);
            v = toV.forward(c, tokens);
            c.ops.attention(q, k, v, heads, o, lse);
        }
        return afterAttention(c, x, n, t, ch);
    }

    /**
     * The attention on the packed projection qkv (n, t, 3 ch), then to_out.0, the residual x and the rescaling. Where
     * residuals fuse and there is no rescaling, the three as one {@link Ops#attentionResidual}, which the backend may
     * run as one launch.
     */
    private Tensor packedAttention(Context c, Tensor x, Tensor qkv, int n, int t, int ch) {
        q = k = v = null;  // (inference: no backward)
        if (c.ops.fusesResidual() && rescale == 1) {
            Tensor y = c.alloc(Layout.ROWS, n, t, ch);
            c.ops.attentionResidual(qkv, heads, o, lse, toOut.weight.value(), toOut.bias.value(),
                    x.reshape(Layout.ROWS, n, t, ch), y);
            return y.reshape(Layout.NHWC, x.shape());
        }
        c.ops.attentionPacked(qkv, heads, o, lse);
        return afterAttention(c, x, n, t, ch);
    }

    /** to_out.0 of this forward's attention output o, the residual x and the rescaling. */
    private Tensor afterAttention(Context c, Tensor x, int n, int t, int ch) {
        Tensor y;
        if (!c.training && c.ops.fusesResidual()) {
            // to_out.0 and the residual in one op (cuBLASLt's bias epilogue with C = x inside a captured pass).
            y = c.alloc(Layout.ROWS, n, t, ch);
            c.ops.linearResidual(o, toOut.weight.value(), toOut.bias.value(), x.reshape(Layout.ROWS, n, t, ch), y);
            y = y.reshape(Layout.NHWC, x.shape());
        } else {
            y = toOut.forward(c, o).reshape(Layout.NHWC, x.shape());
            c.ops.add(y, x, y);
        }
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

    /**
     * [W_q | W_k | W_v] and [b_q | b_k | b_v] with {@code fold}'s ops, into memory this block keeps: rewritten with
     * the same values each time, so a pass that read them as constants stays right (a weight update drops it).
     */
    private void pack(Ops fold, int ch) {
        if (packedArena == null) {
            packedArena = new TensorArena();
            packedWeight = packedArena.allocate(Layout.ROWS, ch, 3 * ch);
            packedBias = packedArena.allocate(Layout.ROWS, 3 * ch);
        }
        try (TensorArena a = new TensorArena()) {
            // Linear weights are (in, out): the concatenation runs along out, the channels of a (1, 1, in, out) map.
            Tensor qk = a.allocate(Layout.NHWC, 1, 1, ch, 2 * ch), qkB = a.allocate(Layout.NHWC, 1, 1, 1, 2 * ch);
            fold.concatChannels(toQ.weight.value().reshape(Layout.NHWC, 1, 1, ch, ch),
                    toK.weight.value().reshape(Layout.NHWC, 1, 1, ch, ch), qk);
            fold.concatChannels(qk, toV.weight.value().reshape(Layout.NHWC, 1, 1, ch, ch),
                    packedWeight.reshape(Layout.NHWC, 1, 1, ch, 3 * ch));
            fold.concatChannels(toQ.bias.value().reshape(Layout.NHWC, 1, 1, 1, ch),
                    toK.bias.value().reshape(Layout.NHWC, 1, 1, 1, ch), qkB);
            fold.concatChannels(qkB, toV.bias.value().reshape(Layout.NHWC, 1, 1, 1, ch),
                    packedBias.reshape(Layout.NHWC, 1, 1, 1, 3 * ch));
        }
    }

    @Override
    public void close() {
        if (packedArena != null) {
            packedArena.close();
            packedArena = null;
        }
    }

    long flops(int n, int h, int w) {
        long t = (long) h * w;
        long ch = toQ.out();
        return 4 * toQ.flops(n * t) + 4L * n * t * t * ch;
    }
}
