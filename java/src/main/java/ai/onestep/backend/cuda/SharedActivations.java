package ai.onestep.backend.cuda;

/**
 * The activation memory of every captured pass: one device allocation as large as the largest pass's
 * {@link ActivationPlan}, which every graph addresses. Sharing is safe because passes run one at a time (a replay
 * ends with a synchronization before the host can start another) and a pass keeps nothing in its activations from one
 * replay to the next: its inputs are copied in at every replay, and its ops write every other activation before
 * reading it (checking mode fills the memory with NaN to prove it). So the teacher's graphs, one per noise level,
 * cost one pass's activations, not one each.
 *
 * <p>A pass that needs more than the current block gets a new one, 25% larger than it needs (the passes of one
 * sampler differ by a little: a whole 2-step sample needs a few percent more than one evaluation), which later
 * passes share; a block that is no longer current is freed when the last pass using it closes.
 */
final class SharedActivations implements AutoCloseable {
    private final Device device;
    private Block current;
    private long liveBytes;

    private static final class Block {
        final long base;
        final long bytes;
        int users;

        Block(long base, long bytes) {
            this.base = base;
            this.bytes = bytes;
        }
    }

    SharedActivations(Device device) {
        this.device = device;
    }

    /** A share of at least {@code bytes}, for one captured pass; close it with the pass. */
    Lease acquire(long bytes, String pass) {
        long need = ActivationPlan.aligned(bytes);
        if (current == null || current.bytes < need) {
            if (current != null && current.users == 0) {
                free(current);  // first, so the device has room for the bigger one
            }
            current = null;  // (a failed malloc below must leave no freed block behind)
            long size = ActivationPlan.aligned(need + need / 4);
            current = new Block(device.malloc(size, () -> "activations of pass '" + pass + "' (" + size + " bytes)"),
                    size);
            liveBytes += size;
        }
        current.users++;
        return new Lease(current);
    }

    /** Device bytes held by every block still in use (or kept for the next pass). */
    long bytes() {
        return liveBytes;
    }

    private void free(Block b) {
        device.free(b.base);
        liveBytes -= b.bytes;
    }

    /** One pass's use of a block. */
    final class Lease implements AutoCloseable {
        private Block block;

        private Lease(Block block) {
            this.block = block;
        }

        long base() {
            return block.base;
        }

        @Override
        public void close() {
            if (block == null) {
                return;
            }
            block.users--;
            if (block.users == 0 && block != current) {
                free(block);
            }
            block = null;
        }
    }

    /** Frees the current block (every pass must have closed its lease). */
    @Override
    public void close() {
        if (current != null && current.users == 0) {
            free(current);
            current = null;
        }
    }
}
