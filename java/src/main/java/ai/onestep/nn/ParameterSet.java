package ai.onestep.nn;

import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;
import java.util.TreeMap;
import java.util.regex.Pattern;

/**
 * The parameters of a model, ordered by name. Values live in one arena and gradients in another (the memory
 * model of {@link ai.onestep.nn}); closing the set frees both.
 *
 * <p>The order by name is what makes whole-model reductions (the global gradient norm) and checkpoints
 * deterministic: every pass over the set visits the parameters in the same order, whatever the order in which
 * the model registered them.
 */
public final class ParameterSet implements AutoCloseable, Iterable<Parameter> {
    /** Dotted state-dict names: {@code conv_in.weight}, {@code down_blocks.0.resnets.1.norm1.bias}. */
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9_]+(\\.[A-Za-z0-9_]+)*");

    private final TensorArena values = new TensorArena();
    private final TensorArena grads;
    private final TreeMap<String, Parameter> byName = new TreeMap<>();
    private List<Parameter> ordered = List.of();

    /** A set whose parameters have gradients (for training). */
    public ParameterSet() {
        this(true);
    }

    private ParameterSet(boolean withGradients) {
        this.grads = withGradients ? new TensorArena() : null;
    }

    /** A set of values only ({@link Parameter#grad()} is null): EMA shadows, inference weights. */
    public static ParameterSet withoutGradients() {
        return new ParameterSet(false);
    }

    /** A new set with the same names and shapes (values and gradients zero). */
    public ParameterSet mirror(boolean withGradients) {
        ParameterSet m = new ParameterSet(withGradients);
        for (Parameter p : ordered) {
            m.add(p.name(), p.value().layout(), p.value().shape());
        }
        return m;
    }

    public boolean hasGradients() {
        return grads != null;
    }

    /**
     * Registers a parameter; its value and gradient start at zero (the model's initializer fills the value).
     *
     * @throws IllegalArgumentException for a malformed or duplicate name
     */
    public Parameter add(String name, Layout layout, int... shape) {
        if (name == null || !NAME.matcher(name).matches()) {
            throw new IllegalArgumentException("parameter name '" + name
                    + "' is not a dotted state-dict name like 'down_blocks.0.resnets.1.conv1.weight'");
        }
        if (byName.containsKey(name)) {
            throw new IllegalArgumentException("parameter '" + name + "' is already registered as "
                    + byName.get(name).value().describe());
        }
        Tensor value = values.allocate(layout, shape);
        Tensor grad = grads == null ? null : grads.allocate(layout, shape);
        Parameter p = new Parameter(name, value, grad);
        byName.put(name, p);
        ordered = Collections.unmodifiableList(new ArrayList<>(byName.values()));
        return p;
    }

    /** A row-major parameter (biases, linear weights, norm scales). */
    public Parameter add(String name, int... shape) {
        return add(name, Layout.ROWS, shape);
    }

    /** @throws IllegalArgumentException naming the missing parameter */
    public Parameter get(String name) {
        Parameter p = byName.get(name);
        if (p == null) {
            throw new IllegalArgumentException("no parameter named '" + name + "' among " + byName.size());
        }
        return p;
    }

    public boolean contains(String name) {
        return byName.containsKey(name);
    }

    /** The parameters, ordered by name (an unmodifiable snapshot). */
    public List<Parameter> list() {
        return ordered;
    }

    @Override
    public Iterator<Parameter> iterator() {
        return ordered.iterator();
    }

    /** Number of parameter tensors. */
    public int size() {
        return ordered.size();
    }

    /** Number of scalars over all parameters (the "parameter count" of a model). */
    public long count() {
        long n = 0;
        for (Parameter p : ordered) {
            n += p.size();
        }
        return n;
    }

    /** Sets every gradient to zero (before a new accumulation window: parameter gradients accumulate). */
    public void zeroGrad() {
        if (grads == null) {
            throw new IllegalStateException("zeroGrad: this parameter set keeps no gradients");
        }
        for (Parameter p : ordered) {
            p.grad().fill(0f);
        }
    }

    /** {@link #zeroGrad()} through {@code ops}: where a device owns the gradients, it zeroes them there. */
    public void zeroGrad(ai.onestep.backend.Ops ops) {
        if (grads == null) {
            throw new IllegalStateException("zeroGrad: this parameter set keeps no gradients");
        }
        for (Parameter p : ordered) {
            ops.zero(p.grad());
        }
    }

    /**
     * Copies every value of {@code source} into the parameter of the same name here; both sets must hold the
     * same names with the same shapes.
     */
    public void copyValuesFrom(ParameterSet source) {
        requireSameLayout(source);
        for (Parameter p : ordered) {
            p.value().copyFrom(source.get(p.name()).value());
        }
    }

    /** Checks that {@code other} has exactly these names with these shapes. */
    void requireSameLayout(ParameterSet other) {
        if (!byName.keySet().equals(other.byName.keySet())) {
            throw new IllegalArgumentException("parameter sets differ: " + size() + " vs " + other.size()
                    + " parameters, or different names");
        }
        for (Parameter p : ordered) {
            Tensor o = other.get(p.name()).value();
            if (!Arrays.equals(o.shape(), p.value().shape())) {
                throw new IllegalArgumentException("parameter '" + p.name() + "' is " + p.value().describe()
                        + " here but " + o.describe() + " in the other set");
            }
        }
    }

    /** Bytes held by the values and the gradients. */
    public long allocatedBytes() {
        return values.allocatedBytes() + (grads == null ? 0 : grads.allocatedBytes());
    }

    @Override
    public void close() {
        values.close();
        if (grads != null) {
            grads.close();
        }
    }
}
