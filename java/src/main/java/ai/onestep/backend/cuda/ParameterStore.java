package ai.onestep.backend.cuda;

import ai.onestep.tensor.Tensor;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Parameters declared to the CUDA backend ({@link CudaOps#registerParameters}), uploaded once and shared by every
 * eager op and every captured pass: a graph reads them at their device address when it is replayed, so a
 * parameter refreshed in place (after an optimizer step) is seen by existing graphs, and N graphs do not hold N
 * copies of the weights. Each registration is one device allocation (a {@link DeviceArena} carved by the tensors).
 */
final class ParameterStore implements AutoCloseable {
    private final Device device;
    private final List<DeviceArena> arenas = new ArrayList<>();
    private final TreeMap<Long, long[]> map = new TreeMap<>();  // host address -> {bytes, device address}
    /** The host memory's lifetime: a parameter whose arena closed is forgotten (its address may be reused). */
    private final Map<Long, MemorySegment.Scope> scopes = new java.util.HashMap<>();

    ParameterStore(Device device) {
        this.device = device;
    }

    /** Uploads the tensors not registered yet; returns how many were new. */
    int register(List<Tensor> tensors) {
        List<Tensor> fresh = new ArrayList<>();
        long bytes = 0;
        for (Tensor t : tensors) {
            long addr = t.segment().address();
            long size = t.size() * Float.BYTES;
            if (size == 0 || find(addr, size) != 0) {
                continue;
            }
            if (overlaps(addr, size)) {
                throw new CudaException("registerParameters: tensor " + t.describe()
                        + " overlaps a registered parameter without matching it");
            }
            fresh.add(t);
            bytes += (size + DeviceArena.ALIGN - 1) / DeviceArena.ALIGN * DeviceArena.ALIGN;
        }
        if (fresh.isEmpty()) {
            return 0;
        }
        DeviceArena a = new DeviceArena(device, "parameters", bytes);
        arenas.add(a);
        for (Tensor t : fresh) {
            long size = t.size() * Float.BYTES;
            long dev = a.allocate(size, "parameter " + t.describe());
            device.upload(dev, t.segment(), size, () -> "parameter " + t.describe());
            map.put(t.segment().address(), new long[] {size, dev});
            scopes.put(t.segment().address(), t.segment().scope());
        }
        return fresh.size();
    }

    /** The device address of host range [addr, addr + bytes) if it lies inside one parameter, else 0. */
    long find(long addr, long bytes) {
        Map.Entry<Long, long[]> e = map.floorEntry(addr);
        if (e == null || addr + bytes > e.getKey() + e.getValue()[0]) {
            return 0;
        }
        if (!scopes.get(e.getKey()).isAlive()) {
            forget(e.getKey());
            return 0;
        }
        return e.getValue()[1] + (addr - e.getKey());
    }

    /** The lifetime of the parameter holding host address {@code addr} (call after a successful {@link #find}). */
    MemorySegment.Scope scopeOf(long addr) {
        return scopes.get(map.floorKey(addr));
    }

    /** Drops an entry whose host memory was freed (its device slice stays allocated until close: graphs may point at it). */
    private void forget(long host) {
        map.remove(host);
        scopes.remove(host);
    }

    private boolean overlaps(long addr, long bytes) {
        Map.Entry<Long, long[]> e = map.floorEntry(addr + bytes - 1);
        while (e != null && !scopes.get(e.getKey()).isAlive()) {
            forget(e.getKey());
            e = map.floorEntry(addr + bytes - 1);
        }
        return e != null && e.getKey() + e.getValue()[0] > addr;
    }

    /** True if any part of [addr, addr + bytes) is a registered parameter. */
    boolean touches(long addr, long bytes) {
        return bytes > 0 && overlaps(addr, bytes);
    }

    /** Copies the host value of every parameter overlapping {@code t} to the device again. */
    void refresh(Tensor t) {
        long addr = t.segment().address();
        long end = addr + t.size() * Float.BYTES;
        Map.Entry<Long, long[]> first = map.floorEntry(addr);
        Long from = first != null ? first.getKey() : addr;
        for (Map.Entry<Long, long[]> e : map.subMap(from, true, end, false).entrySet()) {
            long host = e.getKey(), size = e.getValue()[0], dev = e.getValue()[1];
            if (host + size <= addr) {
                continue;
            }
            java.lang.foreign.MemorySegment seg = java.lang.foreign.MemorySegment.ofAddress(host).reinterpret(size);
            device.upload(dev, seg, size, () -> "parameter refresh " + t.describe());
        }
    }

    int size() {
        return map.size();
    }

    long bytes() {
        return arenas.stream().mapToLong(DeviceArena::used).sum();
    }

    @Override
    public void close() {
        for (DeviceArena a : arenas) {
            a.close();
        }
        arenas.clear();
        map.clear();
        scopes.clear();
    }
}
