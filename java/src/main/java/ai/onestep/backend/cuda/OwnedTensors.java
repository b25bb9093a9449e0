package ai.onestep.backend.cuda;

import ai.onestep.tensor.Tensor;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Training state the device owns ({@link CudaOps#adopt}): parameters, their gradients, the optimizer's moments,
 * EMA copies. Each is uploaded once and from then on read and written only on the device, by every eager op,
 * resident block and pass, so an optimizer step moves no data across the bus. The host copy goes stale when an op
 * writes the tensor (it is then <i>dirty</i>) until {@link #syncToHost} or {@link #release} brings it back.
 *
 * <p>In checking mode a tensor's host memory is filled with NaN when it goes dirty, so a host read that skipped
 * {@link #syncToHost} shows up.
 */
final class OwnedTensors implements AutoCloseable {
    private final Device device;

    /** One owned tensor: its host range, device copy, and whether the host copy is stale. */
    private static final class Owned {
        final long host;
        final long bytes;
        final long dev;
        final Adoption adoption;
        final String name;
        /** The host memory's lifetime: an owned tensor whose memory was freed without a release is dropped. */
        final MemorySegment.Scope scope;
        boolean dirty;

        Owned(long host, long bytes, long dev, Adoption adoption, String name, MemorySegment.Scope scope) {
            this.host = host;
            this.bytes = bytes;
            this.dev = dev;
            this.adoption = adoption;
            this.name = name;
            this.scope = scope;
        }
    }

    /** The device memory of one {@link #adopt} call, freed when its last tensor is released. */
    private static final class Adoption {
        final DeviceArena arena;
        int live;

        Adoption(DeviceArena arena) {
            this.arena = arena;
        }
    }

    private final TreeMap<Long, Owned> map = new TreeMap<>();
    private boolean poison;

    OwnedTensors(Device device) {
        this.device = device;
    }

    void checkHost(boolean on) {
        poison = on;
    }

    /** Uploads the tensors not owned yet (one allocation for all); returns how many were new. */
    int adopt(List<Tensor> tensors) {
        List<Tensor> fresh = new ArrayList<>();
        long bytes = 0;
        for (Tensor t : tensors) {
            long addr = t.segment().address(), size = t.size() * Float.BYTES;
            if (size == 0 || exact(addr, size) != null) {
                continue;
            }
            if (!overlapping(addr, size).isEmpty()) {
                throw new CudaException("adopt: tensor " + t.describe() + " overlaps an owned tensor without matching it");
            }
            fresh.add(t);
            bytes += (size + DeviceArena.ALIGN - 1) / DeviceArena.ALIGN * DeviceArena.ALIGN;
        }
        if (fresh.isEmpty()) {
            return 0;
        }
        Adoption a = new Adoption(new DeviceArena(device, "training state", bytes));
        for (Tensor t : fresh) {
            long size = t.size() * Float.BYTES;
            long dev = a.arena.allocate(size, "training state " + t.describe());
            device.upload(dev, t.segment(), size, () -> "adopt " + t.describe());
            map.put(t.segment().address(), new Owned(t.segment().address(), size, dev, a, t.describe(),
                    t.segment().scope()));
            a.live++;
        }
        return fresh.size();
    }

    /**
     * The device address of host range [addr, addr + bytes) when it lies inside one owned tensor, else 0; throws
     * when the range overlaps owned tensors without lying inside one (an op must see one whole owner).
     */
    long find(long addr, long bytes, String op, Tensor t) {
        if (map.isEmpty() || bytes == 0) {
            return 0;
        }
        Owned o = containing(addr, bytes);
        if (o != null) {
            return o.dev + (addr - o.host);
        }
        if (!overlapping(addr, bytes).isEmpty()) {
            throw new CudaException(op + ": tensor " + t.describe() + " overlaps training state the device owns "
                    + "without lying inside one owned tensor");
        }
        return 0;
    }

    /** An op wrote [addr, addr + bytes) (inside an owned tensor): its host copy is stale now. */
    void wrote(long addr, long bytes) {
        Owned o = containing(addr, bytes);
        if (o != null && !o.dirty) {
            o.dirty = true;
            if (poison) {
                MemorySegment.ofAddress(o.host).reinterpret(o.bytes).fill((byte) 0xFF);
            }
        }
    }

    /** True when some owned tensor overlapping {@code t} has a stale host copy. */
    boolean dirty(Tensor t) {
        for (Owned o : overlapping(t.segment().address(), t.size() * Float.BYTES)) {
            if (o.dirty) {
                return true;
            }
        }
        return false;
    }

    boolean owns(Tensor t) {
        return containing(t.segment().address(), t.size() * Float.BYTES) != null;
    }

    /** Brings the device values of every dirty owned tensor overlapping {@code tensors} to the host (waits). */
    void syncToHost(List<Tensor> tensors) {
        java.util.Set<Owned> these = new java.util.LinkedHashSet<>();
        for (Tensor t : tensors) {
            these.addAll(overlapping(t.segment().address(), t.size() * Float.BYTES));
        }
        download(these);
    }

    /** Brings every dirty owned tensor to the host (before a host-only op, which may read any of them). */
    void syncAllToHost() {
        List<Owned> all = new ArrayList<>();
        for (Owned o : new ArrayList<>(map.values())) {
            if (live(o) != null) {
                all.add(o);
            }
        }
        download(all);
    }

    private void download(java.util.Collection<Owned> owned) {
        boolean waited = false;
        for (Owned o : owned) {
            if (o.dirty) {
                if (!waited) {
                    device.synchronize();
                    waited = true;
                }
                device.download(MemorySegment.ofAddress(o.host).reinterpret(o.bytes), o.dev, o.bytes,
                        () -> "training state " + o.name);
                o.dirty = false;
            }
        }
    }

    /** Uploads every owned tensor's host copy (after a host-only op, which may have written any of them). */
    void uploadAll() {
        for (Owned o : new ArrayList<>(map.values())) {
            if (live(o) != null) {
                device.upload(o.dev, MemorySegment.ofAddress(o.host).reinterpret(o.bytes), o.bytes,
                        () -> "training state " + o.name);
            }
        }
    }

    /** Syncs the tensors to the host and stops owning them; an adoption's memory is freed with its last tensor. */
    void release(List<Tensor> tensors) {
        syncToHost(tensors);
        for (Tensor t : tensors) {
            for (Owned o : overlapping(t.segment().address(), t.size() * Float.BYTES)) {
                map.remove(o.host);
                if (--o.adoption.live == 0) {
                    device.synchronize();  // queued work may still read it
                    o.adoption.arena.close();
                }
            }
        }
    }

    int size() {
        return map.size();
    }

    long bytes() {
        long b = 0;
        for (Owned o : map.values()) {
            b += o.bytes;
        }
        return b;
    }

    private Owned exact(long addr, long bytes) {
        Owned o = live(map.get(addr));
        return o != null && o.bytes == bytes ? o : null;
    }

    private Owned containing(long addr, long bytes) {
        Map.Entry<Long, Owned> e = map.floorEntry(addr);
        Owned o = e == null ? null : live(e.getValue());
        return o != null && addr + bytes <= o.host + o.bytes ? o : null;
    }

    private List<Owned> overlapping(long addr, long bytes) {
        List<Owned> out = new ArrayList<>();
        Map.Entry<Long, Owned> floor = map.floorEntry(addr);
        if (floor != null && floor.getValue().host + floor.getValue().bytes > addr) {
            out.add(floor.getValue());
        }
        out.addAll(map.subMap(addr, false, addr + bytes, false).values());
        out.removeIf(o -> live(o) == null);
        return out;
    }

    /** {@code o}, or null (and forgotten, its memory freed with its adoption's last tensor) if its host memory is gone. */
    private Owned live(Owned o) {
        if (o == null || o.scope.isAlive()) {
            return o;
        }
        map.remove(o.host);
        if (--o.adoption.live == 0) {
            device.synchronize();
            o.adoption.arena.close();
        }
        return null;
    }

    /** Frees every adoption's memory; the host copies are not synced (call {@link #release} for that). */
    @Override
    public void close() {
        java.util.Set<Adoption> all = new java.util.HashSet<>();
        for (Owned o : map.values()) {
            all.add(o.adoption);
        }
        for (Adoption a : all) {
            a.arena.close();
        }
        map.clear();
    }
}
