package ai.onestep.model;

import ai.onestep.nn.Parameter;
import ai.onestep.tensor.Tensor;

/** {@code torch.nn.Linear} with a bias; the engine stores the weight as (in, out). */
public final class Linear {
    final Parameter weight;
    final Parameter bias;
    private Tensor x;

    Linear(ParamBuilder pb, String name, int in, int out) {
        this.weight = pb.linear(name + ".weight", in, out);
        this.bias = pb.plain(name + ".bias", out);
    }

    int out() {
        return weight.value().dim(1);
    }

    Tensor forward(Context c, Tensor x) {
        this.x = x;
        int[] s = x.shape();
        s[s.length - 1] = out();
        Tensor y = c.alloc(x.layout(), s);
        c.ops.linear(x, weight.value(), bias.value(), y);
        return y;
    }

    Tensor backward(Context c, Tensor dy) {
        Tensor dx = c.like(x);
        c.ops.linearBackward(x, weight.value(), dy, dx, weight.grad(), bias.grad());
        return dx;
    }

    long flops(long rows) {
        return 2L * rows * weight.value().dim(0) * out();
    }
}
