package ai.onestep.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * A bump allocator for the activations of one pass (llm.c's activation arena): tensors are carved out of large
 * chunks in order, and {@link #reset()} rewinds to the start instead of freeing. A pass that allocates the same
 * sequence of shapes every time therefore allocates nothing after its first run, which is what lets a sampling
 * step run without allocation (and, later, be captured as a CUDA graph).
 *
 * <p>Memory is not cleared: every op assigns its whole output. A tensor from before a reset aliases memory that the next pass will reuse: hold on to results across a
 * reset only by copying them out.
 */
public final class Workspace implements AutoCloseable {
    private static final long ALIGN = 64;
    private static final long MIN_CHUNK = 16L << 20;

    private final long minChunk;
    private final Arena arena = Arena.ofShared();
    private final List<MemorySegment> chunks = new ArrayList<>();
    private int chunk;
    private long offset;
    private long high;

    /** A workspace that reserves memory in chunks of at least 16 MiB (one pass's activations). */
    public Workspace() {
        this(MIN_CHUNK);
    }

    /** A workspace whose chunks are at least {@code minChunkBytes} (a small, long-lived one). */
    public Workspace(long minChunkBytes) {
        if (minChunkBytes <= 0) {
            throw new IllegalArgumentException("workspace: chunk size " + minChunkBytes + " bytes");
        }
        this.minChunk = minChunkBytes;
    }

    public Tensor allocate(Layout layout, int... shape) {
        long bytes = Math.max(1, Tensor.count(shape)) * Float.BYTES;
        long need = (bytes + ALIGN - 1) / ALIGN * ALIGN;
        while (chunk < chunks.size() && offset + need > chunks.get(chunk).byteSize()) {
            chunk++;
            offset = 0;
        }
        if (chunk == chunks.size()) {
            chunks.add(arena.allocate(Math.max(minChunk, need), ALIGN));
            offset = 0;
        }
        MemorySegment seg = chunks.get(chunk).asSlice(offset, Tensor.count(shape) * Float.BYTES);
        offset += need;
        high = Math.max(high, used());
        return Tensor.wrap(seg, layout, shape);
    }

    /** Like {@link #allocate} but zero-filled (the plain one leaves the old contents: every op overwrites its output). */
    public Tensor allocateZeroed(Layout layout, int... shape) {
        Tensor t = allocate(layout, shape);
        t.segment().fill((byte) 0);
        return t;
    }

    /** Rewinds to the start; earlier tensors' memory will be reused. */
    public void reset() {
        chunk = 0;
        offset = 0;
    }

    private long used() {
        long u = offset;
        for (int i = 0; i < chunk; i++) {
            u += chunks.get(i).byteSize();
        }
        return u;
    }

    /** Bytes reserved from the system (all chunks). */
    public long reservedBytes() {
        return chunks.stream().mapToLong(MemorySegment::byteSize).sum();
    }

    /** The most bytes in use at once since creation. */
    public long highWaterBytes() {
        return high;
    }

    @Override
    public void close() {
        arena.close();
    }
}
