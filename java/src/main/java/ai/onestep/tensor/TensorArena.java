package ai.onestep.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * Owns the memory of a group of tensors with one lifetime (the parameters, the gradients, one sampling
 * session's activations). Closing the arena frees them all at once; every later use of one of its tensors fails
 * with a clear {@link TensorException}.
 *
 * <p>The arena is shared, not confined: the CPU backend's worker threads read and write its tensors. Memory is
 * 64-byte aligned (one AVX-512 register, one cache line) and zero-filled.
 */
public final class TensorArena implements AutoCloseable {
    private static final long ALIGN = 64;
    private final Arena arena = Arena.ofShared();
    private long bytes;

    public Tensor allocate(Layout layout, int... shape) {
        long n = Tensor.count(shape);
        MemorySegment seg = arena.allocate(Math.max(1, n) * Float.BYTES, ALIGN);
        bytes += seg.byteSize();
        return new Tensor(n == 0 ? seg.asSlice(0, 0) : seg, layout, shape);
    }

    /** A row-major tensor ({@link Layout#ROWS}). */
    public Tensor allocate(int... shape) {
        return allocate(Layout.ROWS, shape);
    }

    public Tensor of(Layout layout, float[] values, int... shape) {
        return allocate(layout, shape).copyFrom(values);
    }

    public Tensor copyOf(Tensor t) {
        return allocate(t.layout(), t.shape()).copyFrom(t);
    }

    /** Bytes allocated so far. */
    public long allocatedBytes() {
        return bytes;
    }

    public boolean isAlive() {
        return arena.scope().isAlive();
    }

    @Override
    public void close() {
        arena.close();
    }
}
