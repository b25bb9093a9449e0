package ai.onestep.backend.cuda;

import ai.onestep.tensor.Tensor;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Supplier;

/**
 * Parameters declared to the CUDA backend ({@link CudaOps#registerParameters}), uploaded once and shared by every
 * eager op and every captured pass: a graph reads them at their device address when it is replayed, so a
 * parameter refreshed in place (after an optimizer step) is seen by existing graphs, and N graphs do not hold N
 * copies of the weights. Each registration is one device allocation (a {@link DeviceArena} carved by the tensors).
 *
 * <p>Half-precision passes ({@link Precision}) read fp16 or bf16 copies: the first request of a type converts the
 * whole registration on the device, once, into one more arena; {@link #refresh} converts them again. Convolution
 * weights get, on a device whose convolutions want them so (cuDNN), a copy transposed to KRSC per type
 * ({@link #krsc}), made once and refreshed with the rest, instead of a transpose in every call; an upsampler's
 * weights, the kernel of the equivalent transposed convolution ({@link #subpixel}).
 */
final class ParameterStore implements AutoCloseable {
    private final Device device;
    private final List<DeviceArena> arenas = new ArrayList<>();
    /** Host address -> {bytes, fp32 device address, index of its registration in {@link #batches}}. */
    private final TreeMap<Long, long[]> map = new TreeMap<>();
    /** Per registration: its tensors' host addresses and, per {@link Precision}, the arena of converted copies. */
    private final List<Batch> batches = new ArrayList<>();
    /** The host memory's lifetime: a parameter whose arena closed is forgotten (its address may be reused). */
    private final Map<Long, MemorySegment.Scope> scopes = new java.util.HashMap<>();

    /** Weights in another layout, made on the device from a parameter's copy of the same precision. */
    private enum Derived {
        /** Convolution weights transposed to cuDNN's KRSC ({@link #krsc}). */
        KRSC,
        /** An upsampling 3x3 convolution's stride-2 transposed kernel ({@link #subpixel}). */
        SUBPIXEL
    }

    private record DerivedKey(long host, Derived kind) {
    }

    /** Per parameter and kind: its derived copies by precision ordinal (0: not made), and their shape (a, b). */
    private final Map<DerivedKey, long[]> derived = new java.util.HashMap<>();
    private final Map<DerivedKey, long[]> derivedShape = new java.util.HashMap<>();
    /** The device allocations of every derived copy, freed on close (a graph may point at one until then). */
    private final List<Long> derivedBlocks = new ArrayList<>();
    private long derivedBytes;

    /** Training state the device owns ({@link CudaOps#adopt}), looked up by every residency like the parameters. */
    final OwnedTensors owned;

    ParameterStore(Device device) {
        this.device = device;
        this.owned = new OwnedTensors(device);
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
        Batch batch = new Batch();
        batches.add(batch);
        for (Tensor t : fresh) {
            long size = t.size() * Float.BYTES;
            long dev = a.allocate(size, "parameter " + t.describe());
            device.upload(dev, t.segment(), size, () -> "parameter " + t.describe());
            map.put(t.segment().address(), new long[] {size, dev, batches.size() - 1});
            scopes.put(t.segment().address(), t.segment().scope());
            batch.hosts.add(t.segment().address());
        }
        return fresh.size();
    }

    /** The tensors of one registration and their converted copies (per precision; null until first asked for). */
    private static final class Batch {
        final List<Long> hosts = new ArrayList<>();
        final DeviceArena[] arenas = new DeviceArena[Precision.values().length];
        final Map<Long, long[]> typed = new java.util.HashMap<>();  // host -> device address per precision ordinal
    }

    /** The device address of host range [addr, addr + bytes) if it lies inside one parameter, else 0. */
    long find(long addr, long bytes) {
        return find(addr, bytes, Precision.FP32);
    }

    /**
     * The device address of host range [addr, addr + bytes) as {@code type} elements if it lies inside one
     * parameter, else 0. A 16-bit type's copies of the parameter's whole registration are made on first request
     * (one conversion kernel per tensor, queued on the stream; never while the stream is being captured, when this
     * throws {@link Residency.HostDataDuringCapture}: the pass then runs op by op).
     */
    long find(long addr, long bytes, Precision type) {
        Map.Entry<Long, long[]> e = map.floorEntry(addr);
        if (e == null || addr + bytes > e.getKey() + e.getValue()[0]) {
            return 0;
        }
        if (!scopes.get(e.getKey()).isAlive()) {
            forget(e.getKey());
            return 0;
        }
        long offsetElems = (addr - e.getKey()) / Float.BYTES;
        if (type == Precision.FP32) {
            return e.getValue()[1] + offsetElems * Float.BYTES;
        }
        Batch b = batches.get((int) e.getValue()[2]);
        if (b.arenas[type.ordinal()] == null) {
            convertBatch(b, type);
        }
        return b.typed.get(e.getKey())[type.ordinal()] + offsetElems * type.bytes;
    }

    /**
     * The device address of registered convolution weights {@code w} (HWIO: a (rows, cols) matrix with rows =
     * KH*KW*Cin, cols = Cout) transposed to KRSC, as {@code type} elements; made on the first request and
     * refreshed with the parameter. 0 when {@code w} is not a whole registered parameter, is owned training state
     * (written in place by ops: its registered copy is stale), or the copy would have to be made while the stream
     * is being captured (the pass's first run makes it; a graph captured without it transposes in each replay).
     */
    long krsc(Tensor w, Precision type, long rows, int cols) {
        return derived(w, type, Derived.KRSC, rows, cols, rows * cols);
    }

    /**
     * The device address of registered 3x3 convolution weights {@code w} (3, 3, cin, cout) turned into the kernel
     * (cin, 4, 4, cout) of the stride-2 transposed convolution that equals the nearest 2x upsampling followed by
     * the convolution ({@link Device#subpixelWeights}), as {@code type} elements; made and refreshed like
     * {@link #krsc}, and 0 in the same cases.
     */
    long subpixel(Tensor w, Precision type, int cin, int cout) {
        return derived(w, type, Derived.SUBPIXEL, cin, cout, 16L * cin * cout);
    }

    /** A derived copy of {@code elems} elements with shape (a, b), made on first request (see {@link #krsc}). */
    private long derived(Tensor w, Precision type, Derived kind, long a, int b, long elems) {
        long addr = w.segment().address();
        long bytes = w.size() * Float.BYTES;
        long[] entry = map.get(addr);  // a whole parameter starts at addr and has exactly these bytes
        if (entry == null || entry[0] != bytes || !scopes.get(addr).isAlive() || owned.owns(w)) {
            return 0;
        }
        DerivedKey key = new DerivedKey(addr, kind);
        long[] copies = derived.computeIfAbsent(key, k -> new long[Precision.values().length]);
        if (copies[type.ordinal()] == 0) {
            if (device.capturing()) {
                return 0;
            }
            long src = find(addr, bytes, type);
            long size = elems * type.bytes;
            Supplier<String> what = () -> kind + " copy of parameter " + w.describe();
            long dst = device.malloc(size, what);
            derivedBlocks.add(dst);
            derivedBytes += size;
            make(kind, src, dst, a, b, type, what);
            copies[type.ordinal()] = dst;
            derivedShape.put(key, new long[] {a, b});
        }
        return copies[type.ordinal()];
    }

    private void make(Derived kind, long src, long dst, long a, int b, Precision type, Supplier<String> what) {
        switch (kind) {
            case KRSC -> device.transpose(src, dst, a, b, type, what);
            case SUBPIXEL -> device.subpixelWeights(src, dst, Math.toIntExact(a), b, type, what);
        }
    }

    /**
     * Like {@link #find(long, long, Precision)}, but never makes anything: 0 also when the parameter's copies of
     * {@code type} do not exist yet.
     */
    long peek(long addr, long bytes, Precision type) {
        Map.Entry<Long, long[]> e = map.floorEntry(addr);
        if (e == null || addr + bytes > e.getKey() + e.getValue()[0] || !scopes.get(e.getKey()).isAlive()) {
            return 0;
        }
        long offsetElems = (addr - e.getKey()) / Float.BYTES;
        if (type == Precision.FP32) {
            return e.getValue()[1] + offsetElems * Float.BYTES;
        }
        long[] typed = batches.get((int) e.getValue()[2]).typed.get(e.getKey());
        return typed == null || typed[type.ordinal()] == 0 ? 0 : typed[type.ordinal()] + offsetElems * type.bytes;
    }

    private void convertBatch(Batch b, Precision type) {
        if (device.capturing()) {
            throw new Residency.HostDataDuringCapture("parameters: their " + type.label()
                    + " copies would be made while the pass is being captured");
        }
        long bytes = 0;
        for (long host : b.hosts) {
            long elems = map.containsKey(host) ? map.get(host)[0] / Float.BYTES : 0;
            bytes += Math.max(DeviceArena.ALIGN, (elems * type.bytes + DeviceArena.ALIGN - 1) / DeviceArena.ALIGN
                    * DeviceArena.ALIGN);
        }
        DeviceArena a = new DeviceArena(device, "parameters " + type.label(), Math.max(DeviceArena.ALIGN, bytes));
        b.arenas[type.ordinal()] = a;
        for (long host : b.hosts) {
            long[] v = map.get(host);
            if (v == null) {
                continue;  // forgotten (its host memory was freed)
            }
            long elems = v[0] / Float.BYTES;
            long dev = a.allocate(elems * type.bytes, "parameter " + type.label() + " copy");
            b.typed.computeIfAbsent(host, k -> new long[Precision.values().length])[type.ordinal()] = dev;
            convert(v[1], dev, elems, type);
        }
    }

    private void convert(long fp32, long dev, long elems, Precision type) {
        device.convert(fp32, Precision.FP32, dev, type, elems, "parameters", () -> elems + " elements");
    }

    /** The lifetime of the parameter holding host address {@code addr} (call after a successful {@link #find}). */
    MemorySegment.Scope scopeOf(long addr) {
        return scopes.get(map.floorKey(addr));
    }

    /** Drops an entry whose host memory was freed (its device slice stays allocated until close: graphs may point at it). */
    private void forget(long host) {
        map.remove(host);
        scopes.remove(host);
        for (Derived kind : Derived.values()) {
            derived.remove(new DerivedKey(host, kind));
            derivedShape.remove(new DerivedKey(host, kind));
        }
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
            long[] typed = batches.get((int) e.getValue()[2]).typed.get(host);
            for (Precision p : Precision.values()) {
                if (typed != null && typed[p.ordinal()] != 0) {
                    convert(dev, typed[p.ordinal()], size / Float.BYTES, p);
                }
            }
            for (Derived kind : Derived.values()) {
                DerivedKey key = new DerivedKey(host, kind);
                long[] copies = derived.get(key);
                for (Precision p : Precision.values()) {
                    if (copies != null && copies[p.ordinal()] != 0) {
                        long[] shape = derivedShape.get(key);
                        long src = p == Precision.FP32 ? dev : typed[p.ordinal()];
                        make(kind, src, copies[p.ordinal()], shape[0], (int) shape[1], p,
                                () -> kind + " copy refresh " + t.describe());
                    }
                }
            }
        }
    }

    int size() {
        return map.size();
    }

    /** Device bytes of the fp32 parameters and of every converted copy. */
    long bytes() {
        long typed = 0;
        for (Batch b : batches) {
            for (DeviceArena a : b.arenas) {
                typed += a == null ? 0 : a.used();
            }
        }
        return arenas.stream().mapToLong(DeviceArena::used).sum() + typed + derivedBytes;
    }

    @Override
    public void close() {
        owned.close();
        for (DeviceArena a : arenas) {
            a.close();
        }
        for (Batch b : batches) {
            for (DeviceArena a : b.arenas) {
                if (a != null) {
                    a.close();
                }
            }
        }
        for (long p : derivedBlocks) {
            device.free(p);
        }
        derivedBlocks.clear();
        derived.clear();
        derivedShape.clear();
        derivedBytes = 0;
        arenas.clear();
        batches.clear();
        map.clear();
        scopes.clear();
    }
}
