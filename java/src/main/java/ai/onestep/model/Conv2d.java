package ai.onestep.model;

import ai.onestep.nn.Parameter;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;

/** {@code torch.nn.Conv2d} with square kernels, zero padding and a bias (state-dict names {@code .weight}, {@code .bias}). */
public final class Conv2d {
    final Parameter weight;
    final Parameter bias;
    final int kernel;
    final int stride;
    final int padding;
    private Tensor x; // saved input (N, H, W, Cin)

    Conv2d(ParamBuilder pb, String name, int in, int out, int kernel, int stride, int padding) {
        this.weight = pb.conv(name + ".weight", kernel, in, out);
        this.bias = pb.plain(name + ".bias", out);
        this.kernel = kernel;
        this.stride = stride;
        this.padding = padding;
    }

    int outChannels() {
        return weight.value().dim(3);
    }

    int inChannels() {
        return weight.value().dim(2);
    }

    Tensor forward(Context c, Tensor x) {
        return forward(c, x, false);
    }

    /**
     * With {@code biasApplied}, through {@link ai.onestep.backend.Ops#conv2dBiased}: the bias is applied by the
     * convolution itself, for a result the next block reads as its residual (see there).
     */
    Tensor forward(Context c, Tensor x, boolean biasApplied) {
        this.x = x;
        Tensor y = c.alloc(Layout.NHWC, ai.onestep.backend.Ops.convOutputShape(x, weight.value(), stride, padding));
        if (biasApplied) {
            c.ops.conv2dBiased(x, weight.value(), bias.value(), stride, padding, y);
        } else {
            c.ops.conv2d(x, weight.value(), bias.value(), stride, padding, y);
        }
        return y;
    }

    /**
     * This (3x3, padding 1) convolution of the nearest 2x upsampling of {@code x}, as one op
     * (Ops.upsampleConv2d): diffusers' Upsample2D at inference, where the backend fuses it. Keeps no input: there is
     * no backward from here.
     */
    Tensor forwardUpsampled(Context c, Tensor x) {
        this.x = null;
        Tensor y = c.alloc(Layout.NHWC, x.dim(0), 2 * x.dim(1), 2 * x.dim(2), outChannels());
        c.ops.upsampleConv2d(x, weight.value(), bias.value(), y);
        return y;
    }

    /** Forgets a saved input: this forward ran inside a fused op (GroupNorm.forwardConv), with no backward from it. */
    void keepNoInput() {
        this.x = null;
    }

    /** Returns dx; accumulates the weight and bias gradients. */
    Tensor backward(Context c, Tensor dy) {
        return backward(c, dy, true);
    }

    /** As {@link #backward(Context, Tensor)}; with {@code needDx} false only the parameter gradients (returns null). */
    Tensor backward(Context c, Tensor dy, boolean needDx) {
        if (x == null) {
            throw new IllegalStateException("convolution backward without a training forward (an upsampling "
                    + "convolution at inference keeps no input for it)");
        }
        Tensor dx = needDx ? c.like(x) : null;
        c.ops.conv2dBackward(x, weight.value(), dy, stride, padding, dx, weight.grad(), bias.grad());
        return dx;
    }

    /** FLOPs of one forward pass on an input of this height and width (a multiply-add counts 2). */
    long flops(int n, int h, int w) {
        int ho = (h + 2 * padding - kernel) / stride + 1, wo = (w + 2 * padding - kernel) / stride + 1;
        return 2L * n * ho * wo * outChannels() * kernel * kernel * inChannels();
    }
}
