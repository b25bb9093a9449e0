package ai.onestep.backend.cuda;

import ai.onestep.tensor.Tensor;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Where each host tensor of an op (eager mode) or of a whole pass lives on the device: a map from host address
 * ranges to device addresses. The engine's tensors are host memory; this is how the CUDA backend runs behind the
 * same {@code Ops} interface.
 *
 * <p>Registered parameters ({@link ParameterStore}) are read where they already are. Besides them, two kinds of
 * entries:
 * <ul>
 *   <li><b>constants</b>: host data first met as an op's input (weights, a host-filled timestep tensor). Uploaded
 *       once into the constants arena and never written on the device: an op that writes one gets a private copy
 *       in the activations arena (a device copy, so it can be captured).</li>
 *   <li><b>activations</b>: anything an op writes, bump-allocated in the activations arena. Reads of them never
 *       touch the host.</li>
 * </ul>
 * A tensor that spans several entries (a whole batch after per-sample slices were written) is coalesced into one
 * new activation by device copies. Host data needed while the stream is under capture is an error: a graph cannot
 * depend on host memory that changes ({@link CapturedPass} then falls back to eager mode for that pass).
 */
final class Residency {
    private final Device device;
    private final DeviceArena constants;
    private final DeviceArena activations;
    private final TreeMap<Long, Entry> map = new TreeMap<>();
    private final ParameterStore parameters;
    /** Lifetimes of the host memory behind every constant and parameter this residency read. */
    private final java.util.Set<java.lang.foreign.MemorySegment.Scope> usedScopes = new java.util.HashSet<>();
    private boolean capturing;

    static final class Entry {
        final long host;
        final long bytes;
        final long dev;
        final boolean constant;
        boolean written;

        Entry(long host, long bytes, long dev, boolean constant) {
            this.host = host;
            this.bytes = bytes;
            this.dev = dev;
            this.constant = constant;
        }

        long end() {
            return host + bytes;
        }
    }

    enum Access { IN, OUT, IN_OUT }

    Residency(Device device, ParameterStore parameters, DeviceArena constants, DeviceArena activations) {
        this.device = device;
        this.parameters = parameters;
        this.constants = constants;
        this.activations = activations;
    }

    void capturing(boolean on) {
        capturing = on;
    }

    boolean capturing() {
        return capturing;
    }

    /** Forgets every activation (and rewinds their arena); constants stay. */
    void resetActivations() {
        map.values().removeIf(e -> !e.constant);
        activations.reset();
    }

    /** Maps {@code t} to a fresh activation without uploading (a pass's input or output buffer). */
    long bind(Tensor t, String what) {
        long addr = t.segment().address();
        long bytes = t.size() * Float.BYTES;
        if (!overlapping(addr, addr + bytes).isEmpty()) {
            throw new CudaException(what + ": tensor " + t.describe() + " overlaps one already on the device");
        }
        Entry e = new Entry(addr, bytes, activations.allocate(bytes, what + " " + t.describe()), false);
        map.put(addr, e);
        return e.dev;
    }

    /** The device address of {@code t} for an op that reads it, writes it, or both. */
    long resolve(Tensor t, Access access, String op) {
        long addr = t.segment().address();
        long bytes = t.size() * Float.BYTES;
        if (bytes == 0) {
            return 0;
        }
        long end = addr + bytes;
        List<Entry> over = overlapping(addr, end);
        if (access == Access.IN && over.isEmpty()) {
            long p = parameters.find(addr, bytes);  // a registered parameter: already on the device, shared
            if (p != 0) {
                usedScopes.add(parameters.scopeOf(addr));
                return p;
            }
        }
        if (over.size() == 1 && over.get(0).host <= addr && end <= over.get(0).end()) {
            Entry e = over.get(0);
            if (access != Access.IN) {
                if (e.constant) {
                    e = privatize(e, op, t);
                }
                e.written = true;
            }
            return e.dev + (addr - e.host);
        }
        if (over.isEmpty()) {
            if (access == Access.OUT) {
                Entry e = add(addr, bytes, activations.allocate(bytes, op + " output " + t.describe()), false);
                e.written = true;
                return e.dev;
            }
            requireHostReadable(op, t);
            usedScopes.add(t.segment().scope());
            Entry c = add(addr, bytes, constants.allocate(bytes, op + " input " + t.describe()), true);
            device.upload(c.dev, t.segment(), bytes, () -> op + " input " + t.describe());
            if (access == Access.IN) {
                return c.dev;
            }
            Entry w = privatize(c, op, t);
            w.written = true;
            return w.dev;
        }
        return coalesce(t, addr, end, over, access, op);
    }

    /**
     * True while the host memory of every constant and parameter read so far is alive. A graph is keyed by host
     * addresses; once one of them is freed, a new tensor at that address must not be mistaken for it.
     */
    boolean hostConstantsAlive() {
        for (java.lang.foreign.MemorySegment.Scope s : usedScopes) {
            if (!s.isAlive()) {
                return false;
            }
        }
        return true;
    }

    /** Scratch device memory for the current op or pass (not mapped to any host tensor). */
    long scratch(long floats, String what) {
        return activations.allocate(floats * Float.BYTES, what);
    }

    /** The entries whose contents the device wrote, for eager mode's download. */
    List<Entry> written() {
        List<Entry> out = new ArrayList<>();
        for (Entry e : map.values()) {
            if (e.written) {
                out.add(e);
            }
        }
        return out;
    }

    /** Copies the device contents of {@code t} (which must be mapped) to its host memory. */
    void download(Tensor t, String what) {
        long addr = t.segment().address();
        long bytes = t.size() * Float.BYTES;
        if (bytes == 0) {
            return;
        }
        List<Entry> over = overlapping(addr, addr + bytes);
        if (over.size() != 1 || over.get(0).host > addr || addr + bytes > over.get(0).end()) {
            throw new CudaException(what + ": tensor " + t.describe() + " is not on the device as one piece");
        }
        Entry e = over.get(0);
        device.download(t.segment(), e.dev + (addr - e.host), bytes, () -> what + " " + t.describe());
    }

    void clear() {
        map.clear();
        usedScopes.clear();
    }

    private Entry add(long host, long bytes, long dev, boolean constant) {
        Entry e = new Entry(host, bytes, dev, constant);
        map.put(host, e);
        return e;
    }

    /** A writable activation copy of constant {@code c}, replacing it in the map. */
    private Entry privatize(Entry c, String op, Tensor t) {
        Entry w = new Entry(c.host, c.bytes, activations.allocate(c.bytes, op + " writes " + t.describe()), false);
        device.copy(w.dev, c.dev, c.bytes, () -> op + " " + t.describe());
        map.put(c.host, w);
        return w;
    }

    private long coalesce(Tensor t, long addr, long end, List<Entry> over, Access access, String op) {
        long lo = Math.min(addr, over.get(0).host);
        long hi = Math.max(end, over.get(over.size() - 1).end());
        long dev = activations.allocate(hi - lo, op + " joins " + t.describe());
        long cursor = lo;
        for (Entry e : over) {
            if (cursor < e.host) {
                fillFromHost(t, op, dev, lo, cursor, e.host, addr, end, access);
            }
            boolean overwritten = access == Access.OUT && addr <= e.host && e.end() <= end;
            if (!overwritten) {
                device.copy(dev + (e.host - lo), e.dev, e.bytes, () -> op + " joins " + t.describe());
            }
            cursor = e.end();
            map.remove(e.host);
        }
        if (cursor < hi) {
            fillFromHost(t, op, dev, lo, cursor, hi, addr, end, access);
        }
        Entry joined = add(lo, hi - lo, dev, false);
        joined.written = over.stream().anyMatch(e -> e.written) || access != Access.IN;
        return joined.dev + (addr - lo);
    }

    private void fillFromHost(Tensor t, String op, long dev, long lo, long from, long to, long addr, long end,
                              Access access) {
        if (access == Access.OUT && addr <= from && to <= end) {
            return;  // the op overwrites this gap
        }
        requireHostReadable(op, t);
        java.lang.foreign.MemorySegment seg = java.lang.foreign.MemorySegment.ofAddress(from).reinterpret(to - from);
        device.upload(dev + (from - lo), seg, to - from, () -> op + " joins " + t.describe());
    }

    private void requireHostReadable(String op, Tensor t) {
        if (capturing) {
            throw new HostDataDuringCapture(op + ": reads host tensor " + t.describe()
                    + " for the first time while the pass is being captured (a graph cannot read changing host memory)");
        }
    }

    private List<Entry> overlapping(long addr, long end) {
        List<Entry> out = new ArrayList<>();
        Map.Entry<Long, Entry> floor = map.floorEntry(addr);
        if (floor != null && floor.getValue().end() > addr) {
            out.add(floor.getValue());
        }
        Iterator<Entry> it = map.subMap(addr, false, end, false).values().iterator();
        while (it.hasNext()) {
            out.add(it.next());
        }
        return out;
    }

    /** Host data was needed while capturing: the pass cannot become a graph. */
    static final class HostDataDuringCapture extends CudaException {
        HostDataDuringCapture(String message) {
            super(message);
        }
    }
}
