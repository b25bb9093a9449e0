/**
 * The training-side building blocks on top of {@link ai.onestep.backend.Ops}: named parameters, optimizers,
 * gradient clipping, learning-rate schedules and the EMA of the weights. Everything numerical goes through an
 * {@code Ops} backend, so the same code trains on {@code naive}, {@code cpu} and, later, {@code cuda}.
 *
 * <h2>Gradient conventions (the ones of {@code Ops}, written once here for the training code)</h2>
 * <ul>
 *   <li>Gradients of <b>parameters</b> ACCUMULATE: every backward op adds ({@code +=}) into
 *       {@link ai.onestep.nn.Parameter#grad()}. A parameter used twice, or several micro-batches, therefore sum
 *       without extra code, and the training loop must call {@link ai.onestep.nn.ParameterSet#zeroGrad()} before
 *       each accumulation window.</li>
 *   <li>Gradients of <b>inputs</b> (activations) are ASSIGNED ({@code =}); where two paths meet (a skip
 *       connection) the caller adds one into the other with {@link ai.onestep.backend.Ops#axpy}.</li>
 *   <li>An optimizer step reads the gradients and leaves them as they are; clipping scales them in place.</li>
 * </ul>
 *
 * <h2>Memory model: three arenas with three lifetimes</h2>
 * <ol>
 *   <li>The parameter <b>values</b>, in one {@link ai.onestep.tensor.TensorArena} owned by the
 *       {@link ai.onestep.nn.ParameterSet} (what a checkpoint holds, what sampling needs);</li>
 *   <li>their <b>gradients</b>, in a second arena of the same set (training only; a set made with
 *       {@link ai.onestep.nn.ParameterSet#withoutGradients()} has none, e.g. the EMA shadow);</li>
 *   <li>the <b>optimizer state</b> (Adam's first and second moments), in a third arena owned by the
 *       {@link ai.onestep.nn.Optimizer}, freed when the optimizer closes.</li>
 * </ol>
 * Activations live elsewhere (one arena per forward/backward pass), so none of these ever reallocate during
 * training.
 *
 * <h2>Precision</h2>
 * Parameters, gradients and optimizer state are float32 ("fp32 master weights", Micikevicius et al. 2018,
 * "Mixed Precision Training", sec. 3.1). See {@link ai.onestep.nn.Optimizer} for how a lower-precision working
 * copy fits in.
 */
package ai.onestep.nn;
