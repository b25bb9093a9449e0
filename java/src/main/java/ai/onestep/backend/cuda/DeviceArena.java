package ai.onestep.backend.cuda;

/**
 * One device allocation carved by a bump pointer (llm.c's activation arena, like the CPU {@code Workspace}):
 * {@link #allocate} hands out 256-byte-aligned slices in order, {@link #reset} rewinds to the start. A pass that
 * allocates the same sequence every time therefore gets the same addresses every time, which is what lets a
 * captured CUDA graph be replayed. Running out is an error that names the request, never a silent growth.
 */
public final class DeviceArena implements DeviceAllocator, AutoCloseable {
    /** cudaMalloc's own alignment; enough for float4 loads and for cuBLAS/cuDNN. */
    public static final long ALIGN = 256;

    private final Device device;
    private final String name;
    private final long capacity;
    private long base;
    private long offset;
    private long high;

    public DeviceArena(Device device, String name, long capacityBytes) {
        if (capacityBytes <= 0) {
            throw new IllegalArgumentException("device arena " + name + ": capacity must be > 0, got " + capacityBytes);
        }
        this.device = device;
        this.name = name;
        this.capacity = (capacityBytes + ALIGN - 1) / ALIGN * ALIGN;
        this.base = device.malloc(capacity, () -> "device arena " + name);
    }

    /** A slice of {@code bytes} (at least one alignment unit), aligned to {@link #ALIGN}. */
    @Override
    public long allocate(long bytes, String what) {
        if (base == 0) {
            throw new CudaException("device arena " + name + " is closed (allocating " + what + ")");
        }
        if (bytes < 0) {
            throw new CudaException("device arena " + name + ": negative size " + bytes + " for " + what);
        }
        long need = Math.max(ALIGN, (bytes + ALIGN - 1) / ALIGN * ALIGN);
        if (need > capacity - offset) {
            throw new OutOfMemory(this, "device arena " + name + ": out of memory: " + what + " needs " + bytes
                    + " bytes, " + offset + " of " + capacity + " are in use (raise the arena size, "
                    + "-Donestep.cuda.arenaMiB)");
        }
        long p = base + offset;
        offset += need;
        high = Math.max(high, offset);
        return p;
    }

    /** Rewinds to the start: every earlier slice will be handed out again. */
    @Override
    public void reset() {
        offset = 0;
    }

    public long used() {
        return offset;
    }

    public long capacity() {
        return capacity;
    }

    public long highWater() {
        return high;
    }

    public long base() {
        return base;
    }

    /** The arena is full: the request, the arena's name and its use are in the message. */
    public static final class OutOfMemory extends CudaException {
        private final transient DeviceArena arena;

        OutOfMemory(DeviceArena arena, String message) {
            super(message);
            this.arena = arena;
        }

        /** The arena that was full. */
        public DeviceArena arena() {
            return arena;
        }
    }

    @Override
    public void close() {
        if (base != 0) {
            device.free(base);
            base = 0;
        }
    }
}
