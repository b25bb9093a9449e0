package ai.onestep.nn;

import ai.onestep.tensor.Tensor;
import java.util.Map;

/**
 * Updates the parameters of a {@link ParameterSet} from their accumulated gradients, through an
 * {@link ai.onestep.backend.Ops} backend. The optimizer owns its state (one arena, freed by {@link #close()})
 * and counts its steps; the learning rate comes with each step, from a {@link LearningRateSchedule}.
 *
 * <h2>fp32 master weights and a lower-precision working copy</h2>
 * The optimizer always updates {@link Parameter#value()}, which is float32, with float32 moments: updates of
 * size {@code lr * 1e-3} relative to the weight survive only in fp32 (Micikevicius et al. 2018, sec. 3.1). A
 * backend that runs the network in fp16/bf16 (the later CUDA path) keeps its half-precision copy of each
 * parameter next to the set, keyed by the same name, and per step:
 * <ol>
 *   <li>runs forward and backward with the half copy, writing (or converting, and dividing by the loss scale)
 *       the gradients into the fp32 {@link Parameter#grad()};</li>
 *   <li>calls {@link GradientClipping#clipByGlobalNorm} (a non-finite norm means an fp16 overflow: skip this
 *       step and lower the loss scale) and then {@link #step(float)} on the fp32 master;</li>
 *   <li>re-casts the updated fp32 values into its half copy.</li>
 * </ol>
 * Nothing in this interface changes for that: the master weights, gradients and moments stay fp32, and only
 * the network's forward/backward sees the low-precision copy.
 */
public interface Optimizer extends AutoCloseable {

    /**
     * One update of every parameter from its gradient with learning rate {@code lr}; the gradients are left as
     * they are (zero them before the next accumulation window).
     *
     * @throws IllegalArgumentException if lr is negative or not finite
     */
    void step(float lr);

    /** Steps taken so far: 0 before the first; the next step uses {@code t = steps() + 1} for bias correction. */
    int steps();

    /** Sets the step count, to resume from a checkpoint whose {@link #state()} was restored. */
    void resume(int steps);

    /** The parameters this optimizer updates. */
    ParameterSet parameters();

    /**
     * The optimizer state by name, in parameter order, named as in PyTorch's optimizer state
     * ({@code <param>.exp_avg}, {@code <param>.exp_avg_sq}), for checkpoints: write into these tensors to restore.
     */
    Map<String, Tensor> state();

    /** Frees the optimizer state. */
    @Override
    void close();
}
