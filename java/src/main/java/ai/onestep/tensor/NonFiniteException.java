package ai.onestep.tensor;

/**
 * An op met NaN or infinity where it needs finite values (a loss's prediction, say). Its own type, so a training
 * loop can stop cleanly on it (keeping its last good checkpoint) without mistaking any other error for divergence.
 */
public class NonFiniteException extends TensorException {
    public NonFiniteException(String message) {
        super(message);
    }
}
