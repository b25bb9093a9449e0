package ai.onestep.nn;

import ai.onestep.tensor.Tensor;

/**
 * One trainable tensor: its state-dict name, its fp32 value and its fp32 gradient (null in a set made without
 * gradients). Names follow diffusers' state dicts ({@code down_blocks.0.resnets.1.conv1.weight}) so checkpoints
 * load by name with no translation table. Made by {@link ParameterSet#add}.
 *
 * @param name  the state-dict name
 * @param value the fp32 master value
 * @param grad  the accumulated gradient, same shape as value, or null when the set keeps no gradients
 */
public record Parameter(String name, Tensor value, Tensor grad) {
    /** Number of scalars. */
    public long size() {
        return value.size();
    }
}
