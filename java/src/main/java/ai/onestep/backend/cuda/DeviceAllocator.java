package ai.onestep.backend.cuda;

/**
 * Where a {@link Residency} takes device memory from: a fixed {@link DeviceArena}, a {@link GrowingArena}, or a
 * captured pass's {@link ActivationPlan} (recording its first run, then replaying its plan).
 */
interface DeviceAllocator {
    /** A slice of at least {@code bytes}, aligned to {@link DeviceArena#ALIGN}; {@code what} names it in errors. */
    long allocate(long bytes, String what);

    /** Rewinds: every earlier slice will be handed out again. */
    void reset();

    // Lifetimes, for an ActivationPlan: the Residency reports which allocation each op touches and where ops end.
    // Bump allocators keep every slice until reset and ignore them.

    /** The index of the latest allocation since {@link #reset}, or -1 where allocations are not tracked. */
    default int lastAllocation() {
        return -1;
    }

    /** The current op reads or writes allocation {@code allocation}. */
    default void touch(int allocation) {
    }

    /** Allocation {@code allocation} lives to the end of the pass (a pass's input or output). */
    default void pin(int allocation) {
    }

    /**
     * A new allocation for new contents of the tensor that allocation {@code old} held (a whole overwrite, the same
     * size): {@link #allocate} by default. A recording may hand back {@code old}'s own memory, whose contents are
     * dead from this op on, so that recording a multi-step pass needs one evaluation's memory, not one per step.
     */
    default long renew(int old, long bytes, String what) {
        return allocate(bytes, what);
    }

    /** The current op is done (after its launches and its outputs' conversions). */
    default void endOp() {
    }
}
