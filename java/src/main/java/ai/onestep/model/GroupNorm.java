package ai.onestep.model;

import ai.onestep.nn.Parameter;
import ai.onestep.tensor.Tensor;

/**
 * {@code torch.nn.GroupNorm} (affine) over NHWC, optionally fused with the SiLU that follows it and with the
 * ResnetBlock2D "scale_shift" time conditioning (one pass instead of three; see Ops.groupNorm).
 */
public final class GroupNorm {
    final Parameter gamma;
    final Parameter beta;
    final int groups;
    final float eps;
    final boolean silu;
    private Tensor x, scale, shift, mean, rstd;

    GroupNorm(ParamBuilder pb, String name, int channels, int groups, float eps, boolean silu) {
        if (channels % groups != 0) {
            throw new IllegalArgumentException(name + ": " + channels + " channels do not divide into " + groups
                    + " groups (norm_num_groups)");
        }
        this.gamma = pb.plain(name + ".weight", channels);
        this.beta = pb.plain(name + ".bias", channels);
        this.groups = groups;
        this.eps = eps;
        this.silu = silu;
    }

    Tensor forward(Context c, Tensor x, Tensor scale, Tensor shift) {
        return normalize(c, x, null, scale, shift);
    }

    Tensor forward(Context c, Tensor x) {
        return forward(c, x, null, null);
    }

    /**
     * The norm of {@code x + add[n, c]} (add (N, C)): at inference one fused op that never stores the sum; a
     * training pass stores it, since the backward reads it (see Ops.groupNorm).
     */
    Tensor forwardAdded(Context c, Tensor x, Tensor add) {
        if (c.training) {
            Tensor sum = c.like(x);
            c.ops.addPerChannel(x, add, sum);
            return forward(c, sum);
        }
        return normalize(c, x, add, null, null);
    }

    /**
     * The norm of {@code cat(a, b)} along channels, which it writes to {@code cat} (an up block's concatenated input,
     * kept for its shortcut and for the backward), in one op (Ops.groupNormConcat).
     */
    Tensor forwardConcat(Context c, Tensor a, Tensor b, Tensor cat) {
        Tensor y = keep(c, cat, cat, null, null);
        c.ops.groupNormConcat(a, b, gamma.value(), beta.value(), groups, eps, silu, cat, y, mean, rstd);
        return y;
    }

    /**
     * At inference where the backend fuses them ({@code Ops.fusesNormConv}): {@code conv} of this norm of
     * {@code x + add[n, c]} (add (N, C) or null), with bias {@code b} (conv's own, or a sum the caller folded) and the
     * residual z (or null), as one op ({@code Ops.groupNormConv2d}); returns the convolution's output. The norm's
     * output is scratch that op may leave unwritten; neither layer keeps anything for a backward.
     */
    Tensor forwardConv(Context c, Tensor x, Tensor add, Conv2d conv, Tensor b, Tensor z) {
        conv.keepNoInput();
        return forwardConv(c, x, add, conv.weight.value(), b, conv.stride, conv.padding, z);
    }

    /** {@link #forwardConv(Context, Tensor, Tensor, Conv2d, Tensor, Tensor)} with HWIO weights w not of a layer. */
    Tensor forwardConv(Context c, Tensor x, Tensor add, Tensor w, Tensor b, int stride, int padding, Tensor z) {
        Tensor g = keep(c, x, null, null, null);
        Tensor y = c.alloc(ai.onestep.tensor.Layout.NHWC, ai.onestep.backend.Ops.convOutputShape(x, w, stride, padding));
        c.ops.groupNormConv2d(x, add, gamma.value(), beta.value(), groups, eps, silu, g, mean, rstd, w, b, z, stride,
                padding, y);
        return y;
    }

    /**
     * At inference where the backend fuses them ({@code Ops.fusesNormConv}): a down block's resnet entry as one op
     * ({@code Ops.groupNormConvShortcut2d}): {@code conv} (stride 1, 'same' padding) of this norm of x with bias
     * {@code b1}, and {@code shortcut} (the 1x1 conv_shortcut) of x without its bias, which the caller folds into
     * conv2's. Returns {conv's output, the shortcut's}; nothing is kept for a backward.
     */
    Tensor[] forwardConvShortcut(Context c, Tensor x, Conv2d conv, Tensor b1, Conv2d shortcut) {
        Tensor g = keep(c, x, null, null, null);
        Tensor w = conv.weight.value(), ws = shortcut.weight.value();
        Tensor y = c.alloc(ai.onestep.tensor.Layout.NHWC, ai.onestep.backend.Ops.convOutputShape(x, w, 1, conv.padding));
        Tensor sc = c.alloc(ai.onestep.tensor.Layout.NHWC, ai.onestep.backend.Ops.convOutputShape(x, ws, 1, 0));
        conv.keepNoInput();
        shortcut.keepNoInput();
        c.ops.groupNormConvShortcut2d(x, gamma.value(), beta.value(), groups, eps, silu, g, mean, rstd, w, b1,
                conv.padding, y, ws, sc);
        return new Tensor[] {y, sc};
    }

    /**
     * At inference where the backend fuses them ({@code Ops.fusesNormConv}): an up block's resnet entry as one op
     * ({@code Ops.groupNormConcatConv2d}): {@code conv} of this norm of {@code cat(a, b)} with bias {@code b1}, and
     * {@code shortcut} (the 1x1 conv_shortcut) of cat without its bias, which the caller folds into conv2's. Returns
     * {conv's output, the shortcut's}. cat and the norm's output are scratch that op may leave unwritten; nothing is
     * kept for a backward.
     */
    Tensor[] forwardConcatConv(Context c, Tensor a, Tensor b, Tensor cat, Conv2d conv, Tensor b1, Conv2d shortcut) {
        Tensor g = keep(c, cat, null, null, null);
        Tensor w = conv.weight.value(), ws = shortcut.weight.value();
        Tensor y = c.alloc(ai.onestep.tensor.Layout.NHWC,
                ai.onestep.backend.Ops.convOutputShape(cat, w, conv.stride, conv.padding));
        Tensor sc = c.alloc(ai.onestep.tensor.Layout.NHWC, ai.onestep.backend.Ops.convOutputShape(cat, ws, 1, 0));
        conv.keepNoInput();
        shortcut.keepNoInput();
        c.ops.groupNormConcatConv2d(a, b, gamma.value(), beta.value(), groups, eps, silu, cat, g, mean, rstd, w, b1,
                conv.stride, conv.padding, y, ws, sc);
        return new Tensor[] {y, sc};
    }

    /** Keeps what the backward reads; with {@code add} there is none (an inference pass: x + add is never stored). */
    private Tensor normalize(Context c, Tensor x, Tensor add, Tensor scale, Tensor shift) {
        Tensor y = keep(c, x, add == null ? x : null, scale, shift);
        c.ops.groupNorm(x, add, gamma.value(), beta.value(), scale, shift, groups, eps, silu, y, mean, rstd);
        return y;
    }

    /**
     * Notes what the backward reads ({@code saved}: the normalized input, or null) and makes this forward's mean and
     * rstd; returns the output, shaped like x.
     */
    /**
     * At inference, inside an op that fuses this norm with more ({@code Ops.resnetBlock2d}): the tensor for its output
     * (x's shape) and, in {@link #mean()} and {@link #rstd()}, its statistics'; nothing is kept for a backward.
     */
    Tensor scratch(Context c, Tensor x) {
        return keep(c, x, null, null, null);
    }

    /** The statistics tensors of the last {@link #scratch} or forward, (N, groups) each. */
    Tensor mean() {
        return mean;
    }

    /** See {@link #mean()}. */
    Tensor rstd() {
        return rstd;
    }

    private Tensor keep(Context c, Tensor x, Tensor saved, Tensor scale, Tensor shift) {
        this.x = saved;
        this.scale = scale;
        this.shift = shift;
        this.mean = c.alloc(ai.onestep.tensor.Layout.ROWS, x.dim(0), groups);
        this.rstd = c.alloc(ai.onestep.tensor.Layout.ROWS, x.dim(0), groups);
        return c.like(x);
    }

    /** Returns dx; writes dscale/dshift when the forward had them (else pass null); accumulates dgamma/dbeta. */
    Tensor backward(Context c, Tensor dy, Tensor dscale, Tensor dshift) {
        if (x == null) {
            throw new IllegalStateException("group norm backward without a training forward (an inference pass keeps "
                    + "no input for it)");
        }
        Tensor dx = c.like(x);
        c.ops.groupNormBackward(x, gamma.value(), beta.value(), scale, shift, groups, silu, mean, rstd, dy, dx,
                gamma.grad(), beta.grad(), dscale, dshift);
        return dx;
    }

    Tensor backward(Context c, Tensor dy) {
        return backward(c, dy, null, null);
    }
}
