package ai.onestep.model;

import ai.onestep.nn.Parameter;
import ai.onestep.nn.ParameterSet;
import ai.onestep.tensor.Layout;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Registers a model's parameters under their diffusers state-dict names and remembers each one's PyTorch layout,
 * so checkpoints load by name with no translation table (as stable-diffusion.cpp does).
 */
final class ParamBuilder {
    final ParameterSet params;
    final Map<String, TorchLayout> layouts = new LinkedHashMap<>();

    ParamBuilder(ParameterSet params) {
        this.params = params;
    }

    Parameter conv(String name, int k, int in, int out) {
        layouts.put(name, TorchLayout.CONV);
        return params.add(name, Layout.HWIO, k, k, in, out);
    }

    Parameter linear(String name, int in, int out) {
        layouts.put(name, TorchLayout.LINEAR);
        return params.add(name, Layout.ROWS, in, out);
    }

    Parameter plain(String name, int... shape) {
        layouts.put(name, TorchLayout.PLAIN);
        return params.add(name, Layout.ROWS, shape);
    }
}
