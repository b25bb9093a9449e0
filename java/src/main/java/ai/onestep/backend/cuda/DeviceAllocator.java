package ai.onestep.backend.cuda;

/** Where a {@link Residency} takes device memory from: a fixed {@link DeviceArena} or a {@link GrowingArena}. */
interface DeviceAllocator {
    /** A slice of at least {@code bytes}, aligned to {@link DeviceArena#ALIGN}; {@code what} names it in errors. */
    long allocate(long bytes, String what);

    /** Rewinds: every earlier slice will be handed out again. */
    void reset();
}
