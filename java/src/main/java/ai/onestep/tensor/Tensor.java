package ai.onestep.tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * A dense float32 tensor in off-heap memory.
 *
 * <p>The data is always contiguous and row-major over {@link #shape()}; what the dimensions mean is given by
 * {@link #layout()}. Memory belongs to a {@link TensorArena}: there are no finalizers, and a tensor whose arena
 * was closed refuses every access with a {@link TensorException} instead of touching freed memory.
 *
 * <p>{@link #reshape} and {@link #slice} return views that share the memory (no copy).
 */
public final class Tensor {
    /** float32 in the platform's byte order (little-endian on every machine we run on). */
    public static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT;

    private final MemorySegment data;
    private final int[] shape;
    private final Layout layout;
    private final long size;

    Tensor(MemorySegment data, Layout layout, int[] shape) {
        this.shape = shape.clone();
        this.layout = layout;
        this.size = count(this.shape);
        if (data.byteSize() != size * Float.BYTES) {
            throw new TensorException("tensor: segment of " + data.byteSize() + " bytes cannot hold shape "
                    + Arrays.toString(shape) + " (" + size + " floats)");
        }
        this.data = data;
    }

    /** Wraps an existing segment (for example a memory-mapped checkpoint region) without copying. */
    public static Tensor wrap(MemorySegment data, Layout layout, int... shape) {
        return new Tensor(data, layout, shape);
    }

    static long count(int[] shape) {
        long n = 1;
        for (int d : shape) {
            if (d < 0) {
                throw new TensorException("tensor: negative dimension in shape " + Arrays.toString(shape));
            }
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    /** The memory, after checking that its arena is still open. Kernels call this once per op, not per element. */
    public MemorySegment segment() {
        if (!data.scope().isAlive()) {
            throw new TensorException("tensor " + describe() + " is closed: its arena was closed");
        }
        return data;
    }

    public boolean isAlive() {
        return data.scope().isAlive();
    }

    public int[] shape() {
        return shape.clone();
    }

    public int rank() {
        return shape.length;
    }

    /** Dimension {@code i}; negative {@code i} counts from the end, as in PyTorch. */
    public int dim(int i) {
        return shape[i < 0 ? shape.length + i : i];
    }

    public long size() {
        return size;
    }

    public Layout layout() {
        return layout;
    }

    public boolean hasShape(int... expected) {
        return Arrays.equals(shape, expected);
    }

    /** A view with another shape over the same memory; the element count must not change. */
    public Tensor reshape(Layout newLayout, int... newShape) {
        if (count(newShape) != size) {
            throw new TensorException("reshape: cannot view " + describe() + " as " + Arrays.toString(newShape)
                    + " (" + count(newShape) + " elements, have " + size + ")");
        }
        return new Tensor(segment(), newLayout, newShape);
    }

    /** A view with another shape and the same layout tag. */
    public Tensor reshape(int... newShape) {
        return reshape(layout, newShape);
    }

    /** A view of rows [from, to) of the first dimension (for example a sub-batch); shares memory. */
    public Tensor slice(int from, int to) {
        if (rank() == 0 || from < 0 || to > shape[0] || from > to) {
            throw new TensorException("slice: [" + from + ", " + to + ") is outside the first dimension of "
                    + describe());
        }
        long row = size / Math.max(1, shape[0]);
        int[] s = shape.clone();
        s[0] = to - from;
        return new Tensor(segment().asSlice(from * row * Float.BYTES, (to - from) * row * Float.BYTES), layout, s);
    }

    public float get(long index) {
        return segment().getAtIndex(F32, index);
    }

    public void set(long index, float value) {
        segment().setAtIndex(F32, index, value);
    }

    /** Element at a multi-index (slow; for tests and tools). */
    public float at(int... idx) {
        return get(offset(idx));
    }

    public long offset(int... idx) {
        if (idx.length != shape.length) {
            throw new TensorException("index " + Arrays.toString(idx) + " has rank " + idx.length + ", tensor "
                    + describe());
        }
        long off = 0;
        for (int i = 0; i < idx.length; i++) {
            if (idx[i] < 0 || idx[i] >= shape[i]) {
                throw new TensorException("index " + Arrays.toString(idx) + " is outside " + describe());
            }
            off = off * shape[i] + idx[i];
        }
        return off;
    }

    public float[] toArray() {
        return segment().toArray(F32);
    }

    public double[] toDoubleArray() {
        float[] f = toArray();
        double[] d = new double[f.length];
        for (int i = 0; i < f.length; i++) {
            d[i] = f[i];
        }
        return d;
    }

    public Tensor copyFrom(float[] values) {
        if (values.length != size) {
            throw new TensorException("copyFrom: " + values.length + " values for " + describe());
        }
        MemorySegment.copy(values, 0, segment(), F32, 0, values.length);
        return this;
    }

    /** Copies double values, rounding each to the nearest float. */
    public Tensor copyFrom(double[] values) {
        if (values.length != size) {
            throw new TensorException("copyFrom: " + values.length + " values for " + describe());
        }
        MemorySegment s = segment();
        for (int i = 0; i < values.length; i++) {
            s.setAtIndex(F32, i, (float) values[i]);
        }
        return this;
    }

    public Tensor copyFrom(Tensor other) {
        if (other.size != size) {
            throw new TensorException("copyFrom: cannot copy " + other.describe() + " into " + describe());
        }
        MemorySegment.copy(other.segment(), 0, segment(), 0, size * Float.BYTES);
        return this;
    }

    public Tensor fill(float value) {
        segment().fill((byte) 0);
        if (value != 0f) {
            MemorySegment s = segment();
            for (long i = 0; i < size; i++) {
                s.setAtIndex(F32, i, value);
            }
        }
        return this;
    }

    /** True if every element is finite (no NaN, no infinity). */
    public boolean allFinite() {
        MemorySegment s = segment();
        for (long i = 0; i < size; i++) {
            if (!Float.isFinite(s.getAtIndex(F32, i))) {
                return false;
            }
        }
        return true;
    }

    /** {@code [2, 8, 8, 64] NHWC}, or {@code [2, 8, 8, 64] NHWC (closed)} after its arena closed. */
    public String describe() {
        return Arrays.toString(shape) + " " + layout + (data.scope().isAlive() ? "" : " (closed)");
    }

    @Override
    public String toString() {
        return "Tensor" + describe();
    }
}
