package ai.onestep.backend.cuda;

import java.util.ArrayList;
import java.util.List;

/**
 * A bump allocator over a list of {@link DeviceArena} chunks that adds a chunk (twice the last one, or the request
 * if larger) when the current one is full, and keeps every chunk across {@link #reset}. For device work that runs
 * once and cannot be re-run to size an arena first: a resident training step ({@link CudaOps#runResident}) has
 * host-visible results (a loss returned mid-step), so unlike a pass's measuring run it cannot start over in a
 * bigger arena. A slice never spans two chunks, so every slice is contiguous.
 */
final class GrowingArena implements DeviceAllocator, AutoCloseable {
    private final Device device;
    private final String name;
    private final List<DeviceArena> chunks = new ArrayList<>();
    private int current;

    GrowingArena(Device device, String name, long firstChunkBytes) {
        this.device = device;
        this.name = name;
        chunks.add(new DeviceArena(device, name + " #1", firstChunkBytes));
    }

    @Override
    public long allocate(long bytes, String what) {
        while (true) {
            try {
                return chunks.get(current).allocate(bytes, what);
            } catch (DeviceArena.OutOfMemory full) {
                if (current + 1 == chunks.size()) {
                    long last = chunks.get(current).capacity();
                    long size = Math.max(2 * last, bytes + DeviceArena.ALIGN);
                    chunks.add(new DeviceArena(device, name + " #" + (chunks.size() + 1), size));
                }
                current++;
            }
        }
    }

    @Override
    public void reset() {
        for (int i = 0; i <= current; i++) {
            chunks.get(i).reset();
        }
        current = 0;
    }

    /** Bytes of device memory held over all chunks. */
    long capacity() {
        long c = 0;
        for (DeviceArena a : chunks) {
            c += a.capacity();
        }
        return c;
    }

    int chunks() {
        return chunks.size();
    }

    @Override
    public void close() {
        for (DeviceArena a : chunks) {
            a.close();
        }
        chunks.clear();
    }
}
