package ai.onestep.diffusion;

/** Told about each finished training step (the CLI draws a progress bar from it; tests can record it). */
@FunctionalInterface
public interface TrainingProgress {
    /**
     * @param step steps completed so far
     * @param loss this step's loss
     * @param note a short status (the last validation FID, a checkpoint written) or null
     */
    void step(long step, double loss, String note);

    TrainingProgress NONE = (s, l, n) -> { };
}
