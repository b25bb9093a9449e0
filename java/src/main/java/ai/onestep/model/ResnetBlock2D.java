package ai.onestep.model;

import ai.onestep.backend.Ops;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.SplittableRandom;

/**
 * diffusers' {@code ResnetBlock2D} (Ho et al. 2020's residual block with time conditioning):
 * <pre>
 *   h = conv1(silu(norm1(x)))
 *   default:      h = silu(norm2(h + time_emb_proj(silu(temb))))
 *   scale_shift:  scale, shift = chunk(time_emb_proj(silu(temb)), 2);  h = silu(norm2(h) (1 + scale) + shift)
 *   h = conv2(dropout(h))
 *   y = (shortcut(x) + h) / output_scale_factor          shortcut = 1x1 conv_shortcut when channels change
 * </pre>
 * silu(temb) is the same for every block, so the U-Net computes it once, and every block's time_emb_proj of it
 * ({@link #condition}) before the first block runs: all of it depends on the time points and labels alone, which
 * lets a captured device pass take it as constants (UNet#forward). Group norm and the SiLU (and the scale/shift)
 * after it run as one fused op, and at inference so does the default mode's h + time_emb_proj(temb) before it
 * (GroupNorm.forwardAdded).
 *
 * <p>At inference where the backend fuses a residual into a convolution ({@link Ops#fusesResidual}: cuDNN's
 * conv + bias + z inside a captured pass), conv2 and the residual add are one op, {@code conv2(h) + shortcut(x)}.
 * A 1x1 conv_shortcut then runs without its bias, and conv2 takes the two biases' sum, which the pass folds into a
 * constant: one launch where there were two.
 */
final class ResnetBlock2D implements AutoCloseable {
    final GroupNorm norm1;
    final Conv2d conv1;
    final Linear timeEmbProj;
    final GroupNorm norm2;
    final Conv2d conv2;
    final Conv2d convShortcut;
    final boolean scaleShift;
    final double dropout;
    final double outputScale;
    final int outChannels;
    final long id;
    private Tensor mask;
    /** This forward's time conditioning ({@link #condition}): time_emb_proj(silu(temb)), or its two halves. */
    private Tensor tp, scale, shift;
    /** conv2's bias plus conv_shortcut's, made on the first fused forward with a shortcut convolution. */
    private TensorArena biasArena;
    private Tensor biasSum;

    ResnetBlock2D(ParamBuilder pb, String name, int in, int out, int tembChannels, int groups, float eps,
                  boolean scaleShift, double dropout, double outputScale, long id) {
        this.norm1 = new GroupNorm(pb, name + ".norm1", in, groups, eps, true);
        this.conv1 = new Conv2d(pb, name + ".conv1", in, out, 3, 1, 1);
        this.timeEmbProj = new Linear(pb, name + ".time_emb_proj", tembChannels, scaleShift ? 2 * out : out);
        this.norm2 = new GroupNorm(pb, name + ".norm2", out, groups, eps, true);
        this.conv2 = new Conv2d(pb, name + ".conv2", out, out, 3, 1, 1);
        this.convShortcut = in != out ? new Conv2d(pb, name + ".conv_shortcut", in, out, 1, 1, 0) : null;
        this.scaleShift = scaleShift;
        this.dropout = dropout;
        this.outputScale = outputScale;
        this.outChannels = out;
        this.id = id;
    }

    /**
     * Computes this block's time conditioning for the next {@link #forward}: time_emb_proj(silu(temb)) and, in
     * scale_shift mode, its split into scale and shift, with {@code tc}'s ops and memory (the U-Net's choice).
     */
    void condition(Context tc, Tensor tembAct) {
        int n = tembAct.dim(0);
        tp = timeEmbProj.forward(tc, tembAct);
        if (scaleShift) {
            scale = tc.alloc(Layout.NHWC, n, 1, 1, outChannels);
            shift = tc.alloc(Layout.NHWC, n, 1, 1, outChannels);
            tc.ops.splitChannels(tp.reshape(Layout.NHWC, n, 1, 1, 2 * outChannels), scale, shift);
        }
    }

    /** The block on {@code x}, with the time conditioning {@link #condition} computed last. */
    Tensor forward(Context c, Tensor x) {
        checkConditioned(x.dim(0));
        if (!c.training && c.ops.fusesNormConv()) {
            if (shortcutRidesWithConv1() && foldedBiasSum(c) != null) {
                // A down block's channel change: norm1, conv1 and the 1x1 shortcut as one op (its bias in conv2's).
                Tensor[] hs = norm1.forwardConvShortcut(c, x, conv1, conv1.bias.value(), convShortcut);
                return afterConv1(c, x, hs[0], hs[1]);
            }
            if (isWholeBlock(c)) {
                return wholeBlock(c, x);
            }
            return afterConv1(c, x, norm1.forwardConv(c, x, null, conv1, conv1.bias.value(), null));
        }
        return afterNorm1(c, x, norm1.forward(c, x));
    }

    /**
     * At inference where the backend fuses norms into convolutions and residuals into conv2: a block without a
     * conv_shortcut, with the default time_embedding_norm, output scale 1, and two 3x3 'same' convolutions whose norms
     * agree (groups, eps, SiLU) runs as one op ({@link Ops#resnetBlock2d}), which the cuda backend may launch as one
     * kernel at its small levels; the same two ops as {@link #afterConv1}'s fused path otherwise.
     */
    private boolean isWholeBlock(Context c) {
        return convShortcut == null && fusesWhole(c);
    }

    /**
     * What both whole-block ops ask of the rest of the block: the default time_embedding_norm, output scale 1, residuals
     * fused, the two norms alike (groups, eps, SiLU), two 3x3 'same' convolutions.
     */
    private boolean fusesWhole(Context c) {
        return !scaleShift && outputScale == 1 && c.ops.fusesResidual() && norm1.groups == norm2.groups
                && norm1.eps == norm2.eps && norm1.silu && norm2.silu && isSame3x3(conv1) && isSame3x3(conv2);
    }

    private static boolean isSame3x3(Conv2d conv) {
        Tensor w = conv.weight.value();
        return conv.stride == 1 && conv.padding == 1 && w.dim(0) == 3 && w.dim(1) == 3;
    }

    private Tensor wholeBlock(Context c, Tensor x) {
        Tensor w1 = conv1.weight.value(), w2 = conv2.weight.value();
        Tensor g1 = norm1.scratch(c, x);
        Tensor h = c.alloc(Layout.NHWC, Ops.convOutputShape(x, w1, 1, 1));
        Tensor g2 = norm2.scratch(c, h);
        Tensor y = c.alloc(Layout.NHWC, Ops.convOutputShape(h, w2, 1, 1));
        conv1.keepNoInput();
        conv2.keepNoInput();
        mask = null;
        c.ops.resnetBlock2d(x, tp, norm1.gamma.value(), norm1.beta.value(), g1, norm1.mean(), norm1.rstd(), w1,
                conv1.bias.value(), h, norm2.gamma.value(), norm2.beta.value(), g2, norm2.mean(), norm2.rstd(), w2,
                conv2.bias.value(), norm1.groups, norm1.eps, y);
        return y;
    }

    /** A 1x1 conv_shortcut next to a conv1 that keeps x's size: the two share their output pixels. */
    private boolean shortcutRidesWithConv1() {
        if (convShortcut == null || convShortcut.stride != 1 || convShortcut.padding != 0 || conv1.stride != 1) {
            return false;
        }
        Tensor ws = convShortcut.weight.value(), w1 = conv1.weight.value();
        return ws.dim(0) == 1 && ws.dim(1) == 1 && w1.dim(0) == 2 * conv1.padding + 1
                && w1.dim(1) == 2 * conv1.padding + 1;
    }

    /**
     * The block on {@code cat(a, b)} along channels (an up block's [h, skip]), with the concatenation and norm1 as one
     * op (Ops.groupNormConcat): the concatenation is still made, for the shortcut and the backward, but in the same
     * pass as the norm. At inference where the backend fuses a norm into its convolution (Ops.fusesNormConv) and the
     * shortcut's bias folds into conv2's ({@link #foldedBiasSum}), norm1, conv1 and the conv_shortcut are one op
     * (Ops.groupNormConcatConv2d), whose convolutions may gather cat from a and b without it ever being stored; and
     * where the rest of the block allows ({@link #isWholeConcatBlock}), the whole block is one op
     * (Ops.resnetBlock2dConcat).
     */
    Tensor forwardConcat(Context c, Tensor a, Tensor b) {
        checkConditioned(a.dim(0));
        Tensor cat = c.alloc(Layout.NHWC, a.dim(0), a.dim(1), a.dim(2), a.dim(3) + b.dim(3));
        if (!c.training && c.ops.fusesNormConv() && convShortcut != null && foldedBiasSum(c) != null) {
            if (isWholeConcatBlock(c)) {
                return wholeConcatBlock(c, a, b, cat);
            }
            Tensor[] hs = norm1.forwardConcatConv(c, a, b, cat, conv1, conv1.bias.value(), convShortcut);
            return afterConv1(c, cat, hs[0], hs[1]);
        }
        return afterNorm1(c, cat, norm1.forwardConcat(c, a, b, cat));
    }

    /**
     * An up block's block whose 1x1 conv_shortcut rides with conv1 (its bias folded into conv2's), with the default
     * time_embedding_norm, output scale 1 and the norms and convolutions {@link #isWholeBlock} asks for: one op
     * ({@link Ops#resnetBlock2dConcat}), which the cuda backend may launch as one kernel at its small levels; the same
     * two ops as the fused path of {@link #forwardConcat} otherwise.
     */
    private boolean isWholeConcatBlock(Context c) {
        return shortcutRidesWithConv1() && fusesWhole(c);
    }

    /** Allocates as the fused path of {@link #forwardConcat} does (so the pass plans the same activations). */
    private Tensor wholeConcatBlock(Context c, Tensor a, Tensor b, Tensor cat) {
        Tensor w1 = conv1.weight.value(), ws = convShortcut.weight.value(), w2 = conv2.weight.value();
        Tensor g1 = norm1.scratch(c, cat);
        Tensor h = c.alloc(Layout.NHWC, Ops.convOutputShape(cat, w1, 1, 1));
        Tensor sc = c.alloc(Layout.NHWC, Ops.convOutputShape(cat, ws, 1, 0));
        conv1.keepNoInput();
        convShortcut.keepNoInput();
        mask = null;
        conv2.keepNoInput();
        Tensor g2 = norm2.scratch(c, h);
        Tensor y = c.alloc(Layout.NHWC, Ops.convOutputShape(h, w2, 1, 1));
        c.ops.resnetBlock2dConcat(a, b, tp, norm1.gamma.value(), norm1.beta.value(), cat, g1, norm1.mean(),
                norm1.rstd(), w1, conv1.bias.value(), h, ws, sc, norm2.gamma.value(), norm2.beta.value(), g2,
                norm2.mean(), norm2.rstd(), w2, biasSum, norm1.groups, norm1.eps, y);
        return y;
    }

    private void checkConditioned(int n) {
        if (tp == null || tp.dim(0) != n) {
            throw new IllegalStateException("resnet block: forward of batch " + n + " without its time conditioning");
        }
    }

    /** The rest of the block on x, given norm1's output {@code n1} (silu(norm1(x))). */
    private Tensor afterNorm1(Context c, Tensor x, Tensor n1) {
        return afterConv1(c, x, conv1.forward(c, n1));
    }

    private Tensor afterConv1(Context c, Tensor x, Tensor h) {
        return afterConv1(c, x, h, null);
    }

    /**
     * The rest of the block on x, given conv1's output h. At inference where the backend fuses a norm into the
     * convolution after it (Ops.fusesNormConv), norm2 of h + time_emb_proj(temb) and conv2 with its residual are one op
     * (the default time_embedding_norm; scale_shift modulates after the norm, which that op does not take).
     * {@code sc}: conv_shortcut(x) without its bias where the caller computed it (the bias then in
     * {@link #foldedBiasSum}), else null.
     */
    private Tensor afterConv1(Context c, Tensor x, Tensor h, Tensor sc) {
        int n = x.dim(0);
        boolean fuse2 = !c.training && !scaleShift && c.ops.fusesNormConv();
        Tensor g = null;
        mask = null;
        if (!fuse2) {
            if (scaleShift) {
                g = norm2.forward(c, h, scale.reshape(Layout.ROWS, n, outChannels),
                        shift.reshape(Layout.ROWS, n, outChannels));
            } else {
                g = norm2.forwardAdded(c, h, tp);
            }
            if (c.training && dropout > 0) {
                mask = dropoutMask(c, g);
                c.ops.mul(g, mask, g);
            }
        }
        Tensor y = c.training || !c.ops.fusesResidual() ? null : conv2Residual(c, x, h, g, sc);
        if (y == null) {
            if (sc != null) {  // forward and forwardConcat take the fused entries only where the bias sum folds
                throw new IllegalStateException("resnet block: a shortcut computed without its bias, and no bias sum");
            }
            if (g == null) {
                g = norm2.forwardAdded(c, h, tp);
            }
            y = conv2.forward(c, g);
            c.ops.add(convShortcut != null ? convShortcut.forward(c, x) : x, y, y);
        }
        if (outputScale != 1) {
            c.ops.scale(y, (float) (1 / outputScale), y);
        }
        return y;
    }

    /**
     * conv2(g) + shortcut(x) as one {@link Ops#conv2dResidual}; with a conv_shortcut, that runs without its bias and
     * conv2 takes b_conv2 + b_shortcut, computed with the pass's constant folding into memory this block keeps
     * (rewritten with the same values each time, so a pass that read it as a constant stays right; a weight update
     * drops such a pass). Null where the folding is refused (weights the device owns): then the two ops run as usual.
     * g null: norm2 of h + time_emb_proj(temb) is fused into conv2 (GroupNorm.forwardConv). scGiven: the shortcut
     * without its bias, already computed (see afterConv1), or null.
     */
    private Tensor conv2Residual(Context c, Tensor x, Tensor h, Tensor g, Tensor scGiven) {
        Tensor bias = conv2.bias.value(), sc = x;
        if (convShortcut != null) {
            // scGiven: forward or forwardConcat folded it this forward
            bias = scGiven != null ? biasSum : foldedBiasSum(c);
            if (bias == null) {
                return null;
            }
            sc = scGiven;
            if (sc == null) {
                Tensor w = convShortcut.weight.value();
                sc = c.alloc(Layout.NHWC, Ops.convOutputShape(x, w, convShortcut.stride, convShortcut.padding));
                c.ops.conv2d(x, w, null, convShortcut.stride, convShortcut.padding, sc);
            }
        }
        if (g == null) {
            return norm2.forwardConv(c, h, tp, conv2, bias, sc);
        }
        Tensor w = conv2.weight.value();
        Tensor y = c.alloc(Layout.NHWC, Ops.convOutputShape(g, w, conv2.stride, conv2.padding));
        c.ops.conv2dResidual(g, w, bias, sc, conv2.stride, conv2.padding, y);
        return y;
    }

    /**
     * b_conv2 + b_shortcut, computed with the pass's constant folding into memory this block keeps (rewritten with the
     * same values each time, so a pass that read it as a constant stays right; a weight update drops such a pass), for
     * a conv2 that adds the shortcut's result computed without its bias. Null where the folding is refused (weights
     * the device owns, or no pass that folds).
     */
    private Tensor foldedBiasSum(Context c) {
        Ops fold = c.ops.passConstants(List.of(conv2.bias.value(), convShortcut.bias.value()));
        if (fold == c.ops) {
            return null;
        }
        if (biasArena == null) {
            biasArena = new TensorArena();
            biasSum = biasArena.allocate(Layout.ROWS, outChannels);
        }
        fold.add(conv2.bias.value(), convShortcut.bias.value(), biasSum);
        return biasSum;
    }

    @Override
    public void close() {
        if (biasArena != null) {
            biasArena.close();
            biasArena = null;
        }
    }

    /** Returns dx; adds this block's contribution to {@code dTembAct} (the gradient of silu(temb)). */
    Tensor backward(Context c, Tensor dy, Tensor dTembAct) {
        int n = dy.dim(0);
        Tensor dys = dy;
        if (outputScale != 1) {
            dys = c.like(dy);
            c.ops.scale(dy, (float) (1 / outputScale), dys);
        }
        Tensor dg = conv2.backward(c, dys);
        if (mask != null) {
            c.ops.mul(dg, mask, dg);
        }
        Tensor dh;
        Tensor dtp;
        if (scaleShift) {
            Tensor dscale = c.alloc(Layout.ROWS, n, outChannels);
            Tensor dshift = c.alloc(Layout.ROWS, n, outChannels);
            dh = norm2.backward(c, dg, dscale, dshift);
            dtp = c.alloc(Layout.ROWS, n, 2 * outChannels);
            c.ops.concatChannels(dscale.reshape(Layout.NHWC, n, 1, 1, outChannels),
                    dshift.reshape(Layout.NHWC, n, 1, 1, outChannels), dtp.reshape(Layout.NHWC, n, 1, 1, 2 * outChannels));
        } else {
            dh = norm2.backward(c, dg);
            dtp = c.alloc(Layout.ROWS, n, outChannels);
            c.ops.sumPerChannel(dh, dtp);
        }
        c.ops.axpy(1f, timeEmbProj.backward(c, dtp), dTembAct);
        Tensor dx = norm1.backward(c, conv1.backward(c, dh));
        c.ops.axpy(1f, convShortcut != null ? convShortcut.backward(c, dys) : dys, dx);
        return dx;
    }

    /** Inverted dropout (Srivastava et al. 2014): keep with probability 1 - p and scale by 1 / (1 - p). */
    private Tensor dropoutMask(Context c, Tensor like) {
        Tensor m = c.like(like);
        MemorySegment s = m.segment();
        float keep = (float) (1 / (1 - dropout));
        int n = like.dim(0);
        long per = like.size() / n;
        for (int b = 0; b < n; b++) {
            SplittableRandom r = Noise.stream(c.dropoutSeed ^ (id * 0x632BE59BD9B4E019L), b);
            for (long i = 0; i < per; i++) {
                s.setAtIndex(Tensor.F32, b * per + i, r.nextDouble() < dropout ? 0f : keep);
            }
        }
        return m;
    }

    long flops(int n, int h, int w) {
        long f = conv1.flops(n, h, w) + conv2.flops(n, h, w) + timeEmbProj.flops(n);
        return convShortcut == null ? f : f + convShortcut.flops(n, h, w);
    }
}
