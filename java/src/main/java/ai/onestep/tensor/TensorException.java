package ai.onestep.tensor;

/**
 * Bad input to a tensor operation: a shape or layout mismatch, a closed tensor, a NaN where a finite value is
 * required. The message names the operation and the shapes at fault, e.g.
 * {@code conv2d: weight w has shape [3, 3, 16, 32] HWIO but x has 8 channels (x [2, 8, 8, 8] NHWC)}.
 */
public class TensorException extends RuntimeException {
    public TensorException(String message) {
        super(message);
    }
}
