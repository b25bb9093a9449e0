package ai.onestep.diffusion;

/** Training stopped on a non-finite loss or gradient; the last good checkpoint is kept (its path is in the message). */
public final class TrainingStopped extends RuntimeException {
    public final long step;

    public TrainingStopped(long step, String message) {
        super(message);
        this.step = step;
    }
}
