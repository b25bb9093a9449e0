package ai.onestep.backend.cuda;

import ai.onestep.tensor.TensorException;

/**
 * A failure reported by the kernel library or the CUDA runtime, turned into a Java exception. The message names
 * the Java op, the C function, its shapes and the reason, e.g.
 * {@code groupNorm: onestep_groupnorm_forward(N=1, HW=2, C=12, G=5): C must be a multiple of G}.
 * A {@link TensorException}, so callers that report bad shapes handle it the same way.
 */
public class CudaException extends TensorException {
    private final int status;

    public CudaException(String message, int status) {
        super(message);
        this.status = status;
    }

    public CudaException(String message) {
        this(message, -1);
    }

    /** The library's onestep_status (1 invalid argument, 2 unsupported, 3 CUDA error), or -1 for a Java-side check. */
    public int status() {
        return status;
    }
}
