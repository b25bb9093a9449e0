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
 *       in the activations arena (a device copy, so it can be captured). A constant whose host memory is freed is
 *       forgotten, so new data the host puts at the same addresses is read as new.</li>
 *   <li><b>activations</b>: anything an op writes, bump-allocated in the activations arena. Reads of them never
 *       touch the host.</li>
 * </ul>
 * A tensor that spans several entries (a whole batch after per-sample slices were written) is coalesced into one
 * new activation by device copies. Host data needed while the stream is under capture is an error: a graph cannot
 * depend on host memory that changes ({@link CapturedPass} then falls back to eager mode for that pass).
 *
 * <p>Element types ({@link Precision}): every entry holds fp32, fp16 or bf16 elements, one per host float (host
 * ranges stay fp32-sized; device offsets scale by the element size). An op asks for each operand in the type its
 * kernel takes. An input held in another type is converted into scratch for that op (a constant's conversion is
 * kept, as it never changes); an output wanted in another type than its entry's is written to scratch and
 * converted into the entry by {@link #flush} after the op's launch. So a pass may mix types and stays correct;
 * the pass's own inputs and outputs and the host's constants are fp32.
 */
final class Residency {
    private final Device device;
    private final DeviceAllocator constants;
    private final DeviceAllocator activations;
    private final TreeMap<Long, Entry> map = new TreeMap<>();
    private final ParameterStore parameters;
    /** Lifetimes of the host memory behind every constant and parameter this residency read. */
    private final java.util.Set<java.lang.foreign.MemorySegment.Scope> usedScopes = new java.util.HashSet<>();
    private boolean capturing;
    /** A whole overwrite of an activation gets a new allocation (planned passes; see {@link #resolve}). */
    private boolean renewWholeWrites;
    /** Checking mode ({@link #checkHost}): snapshots of the constants' host bytes, by entry. */
    private java.util.Map<Entry, java.lang.foreign.MemorySegment> snapshots;

    static final class Entry {
        final long host;
        /** Host bytes (4 per element whatever the device type). */
        final long bytes;
        final long dev;
        final boolean constant;
        final Precision type;
        boolean written;
        /** The tensor and op that first put it here, for error messages. */
        String origin;
        /** Checking mode: its host memory was filled with NaN when an op first wrote it. */
        boolean poisoned;
        /** A constant's converted copies, by precision ordinal (0: not made yet). */
        long[] converted;
        /** A constant's KRSC copies ({@link #krscOfConstant}), by precision ordinal (0: not made yet). */
        long[] krsc;
        /** Its allocation's index in the activations allocator, for lifetimes ({@link ActivationPlan}); -1: none. */
        int alloc = -1;
        /** A pass's input or output: bound to one device address for the whole pass. */
        boolean pinned;
        /**
         * A constant's host memory lifetime: once it ends, the entry is stale (the host may hand the same addresses
         * to new data, such as a conditioning the U-Net allocated after freeing an older one mid-pass).
         */
        java.lang.foreign.MemorySegment.Scope scope;
        /**
         * A per-channel bias (device address, {@link #type} elements, {@link #biasChannels} of them) that the op
         * which wrote this entry left for its readers to add: a consumer that can add it on the fly takes it
         * ({@link #pendingBias}), any other read adds it in place first ({@link #flushBias}). 0: none.
         */
        long bias;
        int biasChannels;

        Entry(long host, long bytes, long dev, boolean constant, Precision type) {
            this.host = host;
            this.bytes = bytes;
            this.dev = dev;
            this.constant = constant;
            this.type = type;
        }

        long end() {
            return host + bytes;
        }

        /** The device address of host address {@code addr} inside this entry. */
        long devAt(long addr) {
            return dev + (addr - host) / Float.BYTES * type.bytes;
        }

        long devBytes() {
            return bytes / Float.BYTES * type.bytes;
        }
    }

    /** An output written to scratch in the op's type, to be converted into its entry after the launch. */
    private record Pending(long scratch, Precision from, long dev, Precision to, long elems) {
    }

    private final List<Pending> pending = new ArrayList<>();

    enum Access { IN, OUT, IN_OUT }

    Residency(Device device, ParameterStore parameters, DeviceAllocator constants, DeviceAllocator activations) {
        this.device = device;
        this.parameters = parameters;
        this.constants = constants;
        this.activations = activations;
    }

    /** Turns on new allocations for whole overwrites (a planned pass: lifetimes end where a tensor is overwritten). */
    void renewWholeWrites(boolean on) {
        renewWholeWrites = on;
    }

    void capturing(boolean on) {
        capturing = on;
    }

    boolean capturing() {
        return capturing;
    }

    /**
     * Checking mode, for tests of code that runs in a resident block ({@link CudaOps#runResident}): every
     * activation's host memory is filled with NaN when an op first writes it, so host code that reads it instead of
     * asking the backend reads NaN; and every constant's host bytes are kept, so {@link #verifyConstants} can tell
     * when host code wrote a tensor after an op had uploaded it.
     */
    void checkHost(boolean on) {
        snapshots = on ? new java.util.HashMap<>() : null;
    }

    /** Throws, naming the tensor, when the host memory of a constant changed after it was uploaded. */
    void verifyConstants(String block) {
        if (snapshots == null) {
            return;
        }
        for (var s : snapshots.entrySet()) {
            Entry e = s.getKey();
            java.lang.foreign.MemorySegment now = java.lang.foreign.MemorySegment.ofAddress(e.host).reinterpret(e.bytes);
            if (now.mismatch(s.getValue()) != -1) {
                throw new CudaException(block + ": " + e.origin + " was written on the host after an op of the "
                        + "block had read it (the device kept the old values; write it through an op, or before the block)");
            }
        }
    }

    /** Checking mode: fills the host memory of every entry the device wrote with NaN (it is stale there). */
    void poisonWritten() {
        if (snapshots == null) {
            return;
        }
        for (Entry e : map.values()) {
            if (e.written) {
                poison(e);
            }
        }
    }

    private void poison(Entry e) {
        // 0xFFFFFFFF is a quiet NaN: any arithmetic on a stale host read shows up as NaN.
        java.lang.foreign.MemorySegment.ofAddress(e.host).reinterpret(e.bytes).fill((byte) 0xFF);
        e.poisoned = true;
    }

    /**
     * Checking mode, an op reads part of a poisoned entry: its host memory must still be all NaN. Anything else
     * means host code wrote there after an op did (a workspace reused inside the block, say), and the op would
     * read the device's older values instead.
     */
    private void requireNoHostWrite(long addr, long bytes, String op, Tensor t) {
        java.lang.foreign.MemorySegment h = java.lang.foreign.MemorySegment.ofAddress(addr).reinterpret(bytes);
        for (long i = 0; i < bytes; i++) {
            if (h.get(java.lang.foreign.ValueLayout.JAVA_BYTE, i) != (byte) 0xFF) {
                throw new CudaException(op + ": tensor " + t.describe() + " was written on the host after an op "
                        + "of the block had written it on the device (the op would read the device's values; write it "
                        + "through an op, or use memory the block has not used)");
            }
        }
    }

    /** True when some part of {@code t} was written by an op of this residency (its host memory is stale). */
    boolean holdsWritten(Tensor t) {
        if (parameters.owned.dirty(t)) {
            return true;
        }
        long addr = t.segment().address();
        for (Entry e : overlapping(addr, addr + t.size() * Float.BYTES)) {
            if (e.written) {
                return true;
            }
        }
        return false;
    }

    /** True when no part of {@code t} is on the device (its host memory is current). */
    boolean untouched(Tensor t) {
        long addr = t.segment().address();
        return overlapping(addr, addr + t.size() * Float.BYTES).isEmpty() && !parameters.owned.dirty(t);
    }

    /** Forgets every activation (and rewinds their arena); constants stay. */
    void resetActivations() {
        map.values().removeIf(e -> !e.constant);
        activations.reset();
    }

    /** Maps {@code t} to a fresh fp32 activation without uploading (a pass's input or output buffer). */
    long bind(Tensor t, String what) {
        long addr = t.segment().address();
        long bytes = t.size() * Float.BYTES;
        if (!overlapping(addr, addr + bytes).isEmpty()) {
            throw new CudaException(what + ": tensor " + t.describe() + " overlaps one already on the device");
        }
        Entry e = new Entry(addr, bytes, activations.allocate(bytes, what + " " + t.describe()), false,
                Precision.FP32);
        e.alloc = activations.lastAllocation();
        e.pinned = true;
        if (e.alloc >= 0) {
            activations.pin(e.alloc);  // copied in before the pass and out after it
        }
        map.put(addr, e);
        return e.dev;
    }

    /** The device address of {@code t} as fp32 elements, for an op that reads it, writes it, or both. */
    long resolve(Tensor t, Access access, String op) {
        return resolve(t, access, op, Precision.FP32);
    }

    /**
     * The type {@code t} is held in on the device when it lies inside one entry, else null (a parameter, host data
     * not uploaded yet, or a tensor spread over several entries).
     */
    Precision typeOf(Tensor t) {
        if (parameters.owned.owns(t)) {
            return Precision.FP32;
        }
        long addr = t.segment().address();
        long end = addr + t.size() * Float.BYTES;
        List<Entry> over = overlapping(addr, end);
        if (over.size() == 1 && over.get(0).host <= addr && end <= over.get(0).end()) {
            return over.get(0).type;
        }
        return null;
    }

    /**
     * The device address of {@code t} as {@code type} elements, for an op that reads it, writes it, or both. Where
     * the tensor is held in another type, the op gets a converted scratch copy (and an output's scratch is
     * converted back by {@link #flush}, which the backend calls after every op).
     */
    long resolve(Tensor t, Access access, String op, Precision type) {
        return resolve(t, access, op, type, false);
    }

    /**
     * {@link #resolve} for an op that reads {@code t} and adds its pending bias itself ({@code takesBias}; it asked
     * {@link #pendingBias} first): the bias stays pending for later readers.
     */
    long resolve(Tensor t, Access access, String op, Precision type, boolean takesBias) {
        long addr = t.segment().address();
        long bytes = t.size() * Float.BYTES;
        if (bytes == 0) {
            return 0;
        }
        long end = addr + bytes;
        long own = parameters.owned.find(addr, bytes, op, t);
        if (own != 0) {
            // Training state the device owns: read and written in place (fp32), never copied. A graph that reads it
            // is valid while its host memory lives (the owned copy is freed with it).
            usedScopes.add(t.segment().scope());
            if (access != Access.IN) {
                parameters.owned.wrote(addr, bytes);
            }
            if (type == Precision.FP32) {
                return own;
            }
            return retype(new Entry(addr, bytes, own, false, Precision.FP32), addr, bytes / Float.BYTES, access, type,
                    op, t);
        }
        List<Entry> over = overlapping(addr, end);
        if (access == Access.IN && over.isEmpty()) {
            long p = parameters.find(addr, bytes, type);  // a registered parameter: already on the device, shared
            if (p != 0) {
                usedScopes.add(parameters.scopeOf(addr));
                return p;
            }
        }
        Entry e;
        if (renewWholeWrites && over.size() == 1 && over.get(0).host == addr && over.get(0).bytes == bytes
                && access == Access.OUT && over.get(0).alloc >= 0 && !over.get(0).pinned && over.get(0).type == type) {
            // A planned pass's op overwrites a whole tensor: what it held is dead from here, so the new contents
            // get an allocation (and a lifetime) of their own. Host memory reused by the next network evaluation
            // of a multi-step pass (its workspace rewound) would otherwise keep every activation alive from the
            // first evaluation to the last, and nothing could share memory. Only in the entry's own type: an
            // entry written in another type keeps its type (the op's output is converted into it), as unplanned.
            e = add(addr, bytes, activations.renew(over.get(0).alloc, bytes / Float.BYTES * type.bytes, op
                    + " output " + t.describe()), false, type);
            e.alloc = activations.lastAllocation();
            e.written = true;
        } else if (over.size() == 1 && over.get(0).host <= addr && end <= over.get(0).end()) {
            e = over.get(0);
            if (e.bias != 0) {
                if (access == Access.OUT && e.host == addr && e.bytes == bytes) {
                    e.bias = 0;  // overwritten whole: what it held (bias or not) is dead. Ops resolve inputs first.
                } else if (!(takesBias && access == Access.IN && e.host == addr && e.bytes == bytes && e.type == type)) {
                    flushBias(e, op);
                }
            }
            if (snapshots != null && e.poisoned) {
                if (access == Access.OUT) {
                    java.lang.foreign.MemorySegment.ofAddress(addr).reinterpret(bytes).fill((byte) 0xFF);
                } else {
                    requireNoHostWrite(addr, bytes, op, t);
                }
            }
            if (access != Access.IN) {
                if (e.constant) {
                    e = privatize(e, op, t);
                }
                e.written = true;
            }
        } else if (over.isEmpty()) {
            if (access == Access.OUT) {
                e = add(addr, bytes, activations.allocate(bytes / Float.BYTES * type.bytes, op + " output "
                        + t.describe()), false, type);
                e.alloc = activations.lastAllocation();
                e.written = true;
                if (snapshots != null) {
                    poison(e);
                }
                return e.dev;
            }
            requireHostReadable(op, t);
            usedScopes.add(t.segment().scope());
            e = add(addr, bytes, constants.allocate(bytes, op + " input " + t.describe()), true, Precision.FP32);
            e.scope = t.segment().scope();
            device.upload(e.dev, t.segment(), bytes, () -> op + " input " + t.describe());
            if (snapshots != null) {
                e.origin = "tensor " + t.describe() + " (first read by " + op + ")";
                java.lang.foreign.MemorySegment copy = java.lang.foreign.Arena.ofAuto().allocate(bytes);
                copy.copyFrom(t.segment().reinterpret(bytes));
                snapshots.put(e, copy);
            }
            if (access != Access.IN) {
                e = privatize(e, op, t);
                e.written = true;
            }
        } else {
            e = coalesce(t, addr, end, over, access, op);
        }
        use(e);
        if (e.type == type) {
            return e.devAt(addr);
        }
        return retype(e, addr, bytes / Float.BYTES, access, type, op, t);
    }

    /** {@code t} (elements from {@code addr} of entry {@code e}) as {@code type}: a converted scratch copy. */
    private long retype(Entry e, long addr, long elems, Access access, Precision type, String op, Tensor t) {
        if (access == Access.IN && e.constant) {
            // Constants never change: convert the whole entry once and keep it (in the constants arena).
            if (e.converted == null) {
                e.converted = new long[Precision.values().length];
            }
            if (e.converted[type.ordinal()] == 0) {
                long elemsAll = e.bytes / Float.BYTES;
                long c = constants.allocate(elemsAll * type.bytes, op + " " + type.label() + " copy of " + t.describe());
                convert(e.dev, e.type, c, type, elemsAll, op, t);
                e.converted[type.ordinal()] = c;
            }
            return e.converted[type.ordinal()] + (addr - e.host) / Float.BYTES * type.bytes;
        }
        long scratch = activations.allocate(elems * type.bytes, op + " " + type.label() + " view of " + t.describe());
        if (access != Access.OUT) {
            convert(e.devAt(addr), e.type, scratch, type, elems, op, t);
        }
        if (access != Access.IN) {
            pending.add(new Pending(scratch, type, e.devAt(addr), e.type, elems));
        }
        return scratch;
    }

    /**
     * Convolution weights {@code w} (HWIO: a (rows, cols) matrix, rows = KH*KW*Cin, cols = Cout) that are a whole
     * constant of this residency (host data an op read, such as weights a folding pass computed: AttentionBlock's
     * packed q/k/v projection) transposed to KRSC as {@code type} elements, made on the first request and kept with
     * the constant (which never changes); the twin of {@link ParameterStore#krsc} for registered weights. 0 when w is
     * not a whole constant already read, or the copy would have to be made while the stream is being captured.
     */
    long krscOfConstant(Tensor w, Precision type, long rows, int cols, String op) {
        long addr = w.segment().address(), bytes = w.size() * Float.BYTES;
        Entry e = map.get(addr);
        if (e == null || !e.constant || e.bytes != bytes || e.written) {
            return 0;
        }
        if (e.krsc == null) {
            e.krsc = new long[Precision.values().length];
        }
        if (e.krsc[type.ordinal()] == 0) {
            if (device.capturing()) {
                return 0;
            }
            long src = resolve(w, Access.IN, op, type);
            long dst = constants.allocate(rows * cols * type.bytes, op + " KRSC copy of " + w.describe());
            device.transpose(src, dst, rows, cols, type, () -> op + " KRSC copy of " + w.describe());
            e.krsc[type.ordinal()] = dst;
        }
        return e.krsc[type.ordinal()];
    }

    private void convert(long from, Precision fromType, long to, Precision toType, long elems, String op, Tensor t) {
        device.convert(from, fromType, to, toType, elems, op, t::describe);
    }

    /**
     * Leaves {@code bias} ({@code channels} elements of {@code type}, a device address that outlives the pass) for
     * the readers of {@code t}, which the current op has just resolved as its whole output but not yet written:
     * true where {@code t} is one whole activation held in {@code type} and not a pass input or output (those are
     * copied to and from the host around the pass), and the caller must then write it without the bias. The
     * bias kernel of a cuDNN convolution or cuBLAS GEMM is a graph node of its own; a group norm or residual add
     * that reads the result adds the bias on the fly instead, and any other reader adds it in place first
     * ({@link #resolve}), so every reader sees the biased values.
     */
    boolean deferBias(Tensor t, long bias, Precision type, int channels) {
        long addr = t.segment().address();
        long bytes = t.size() * Float.BYTES;
        Entry e = map.get(addr);
        if (e == null || e.bytes != bytes || e.type != type || e.pinned || e.constant || bias == 0
                || (bytes / Float.BYTES) % channels != 0) {
            return false;
        }
        e.bias = bias;
        e.biasChannels = channels;
        return true;
    }

    /**
     * The bias pending on {@code t} for an op that reads it whole in {@code type} and can add it itself
     * ({@link #deferBias}), else 0. The op then resolves {@code t} with {@code takesBias}.
     */
    long pendingBias(Tensor t, Precision type) {
        Entry e = map.get(t.segment().address());
        if (e == null || e.bias == 0 || e.bytes != t.size() * Float.BYTES || e.type != type || t.rank() == 0
                || t.dim(-1) != e.biasChannels) {
            return 0;
        }
        return e.bias;
    }

    /** Adds {@code e}'s pending bias to its contents in place (for a reader that does not take it). */
    private void flushBias(Entry e, String op) {
        long elems = e.bytes / Float.BYTES;
        Device.check(ai.onestep.kernels.OnestepKernels.onestep_add_per_channel_typed(e.dev, e.bias, e.dev, 1,
                elems / e.biasChannels, e.biasChannels, e.type.code, device.stream()), op,
                () -> "pending bias of " + elems + " values read by " + op);
        e.bias = 0;
        biasFlushes++;
    }

    /** How many pending biases a reader had to add in place (a kernel each) since the last call. */
    long takeBiasFlushes() {
        long n = biasFlushes;
        biasFlushes = 0;
        return n;
    }

    private long biasFlushes;

    /** Converts the outputs the last op wrote in another type than their entries' into those entries. */
    void flush() {
        for (Pending p : pending) {
            device.convert(p.scratch(), p.from(), p.dev(), p.to(), p.elems(), "pass", () -> "output written back");
        }
        pending.clear();
        activations.endOp();
    }

    /** The current op reads or writes entry {@code e}'s memory (its lifetime, for a planned pass). */
    private void use(Entry e) {
        if (e.alloc >= 0) {
            activations.touch(e.alloc);
        }
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

    /** Scratch for {@code elems} elements of {@code type}. */
    long scratch(long elems, Precision type, String what) {
        return activations.allocate(elems * type.bytes, what);
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
        use(e);
        if (e.bias != 0) {
            flushBias(e, what);
            device.synchronize();  // the download below may not be ordered after the stream's kernels
        }
        long src = e.devAt(addr);
        if (e.type != Precision.FP32) {
            long f = activations.allocate(bytes, what + " fp32 copy of " + t.describe());
            convert(src, e.type, f, Precision.FP32, bytes / Float.BYTES, what, t);
            src = f;
        }
        device.download(t.segment(), src, bytes, () -> what + " " + t.describe());
    }

    void clear() {
        map.clear();
        usedScopes.clear();
        pending.clear();
        if (snapshots != null) {
            snapshots.clear();
        }
    }

    private Entry add(long host, long bytes, long dev, boolean constant, Precision type) {
        Entry e = new Entry(host, bytes, dev, constant, type);
        map.put(host, e);
        return e;
    }

    /** A writable activation copy of constant {@code c}, replacing it in the map. */
    private Entry privatize(Entry c, String op, Tensor t) {
        Entry w = new Entry(c.host, c.bytes, activations.allocate(c.devBytes(), op + " writes " + t.describe()), false,
                c.type);
        w.alloc = activations.lastAllocation();
        device.copy(w.dev, c.dev, c.devBytes(), () -> op + " " + t.describe());
        map.put(c.host, w);
        return w;
    }

    /**
     * One new activation for a tensor spread over several entries (or partly on the host). It takes the entries'
     * type when they share one, else fp32; entries of another type are converted into it, host gaps uploaded.
     */
    private Entry coalesce(Tensor t, long addr, long end, List<Entry> over, Access access, String op) {
        long lo = Math.min(addr, over.get(0).host);
        long hi = Math.max(end, over.get(over.size() - 1).end());
        Precision type = over.get(0).type;
        for (Entry e : over) {
            if (e.type != type) {
                type = Precision.FP32;
            }
        }
        Entry joined = new Entry(lo, hi - lo, activations.allocate((hi - lo) / Float.BYTES * type.bytes, op + " joins "
                + t.describe()), false, type);
        joined.alloc = activations.lastAllocation();
        long cursor = lo;
        for (Entry e : over) {
            use(e);  // its last use: copied into the joined entry, then dropped
            if (cursor < e.host) {
                fillFromHost(t, op, joined, cursor, e.host, addr, end, access);
            }
            boolean overwritten = access == Access.OUT && addr <= e.host && e.end() <= end;
            if (!overwritten) {
                if (e.bias != 0) {
                    flushBias(e, op);
                }
                if (e.type == type) {
                    device.copy(joined.devAt(e.host), e.dev, e.devBytes(), () -> op + " joins " + t.describe());
                } else {
                    convert(e.dev, e.type, joined.devAt(e.host), type, e.bytes / Float.BYTES, op, t);
                }
            }
            cursor = e.end();
            map.remove(e.host);
        }
        if (cursor < hi) {
            fillFromHost(t, op, joined, cursor, hi, addr, end, access);
        }
        map.put(lo, joined);
        joined.written = over.stream().anyMatch(e -> e.written) || access != Access.IN;
        return joined;
    }

    private void fillFromHost(Tensor t, String op, Entry joined, long from, long to, long addr, long end,
                              Access access) {
        if (access == Access.OUT && addr <= from && to <= end) {
            return;  // the op overwrites this gap
        }
        requireHostReadable(op, t);
        java.lang.foreign.MemorySegment seg = java.lang.foreign.MemorySegment.ofAddress(from).reinterpret(to - from);
        if (joined.type == Precision.FP32) {
            device.upload(joined.devAt(from), seg, to - from, () -> op + " joins " + t.describe());
        } else {
            long staging = activations.allocate(to - from, op + " joins " + t.describe() + " (fp32 staging)");
            device.upload(staging, seg, to - from, () -> op + " joins " + t.describe());
            convert(staging, Precision.FP32, joined.devAt(from), joined.type, (to - from) / Float.BYTES, op, t);
        }
    }

    private void requireHostReadable(String op, Tensor t) {
        if (capturing) {
            throw new HostDataDuringCapture(op + ": reads host tensor " + t.describe()
                    + " for the first time while the pass is being captured (a graph cannot read changing host memory)");
        }
    }

    /**
     * The entries that overlap host bytes {@code [addr, end)}. A constant whose host memory was freed is dropped
     * first: new host data at its addresses is not what it holds (the pass uploads that as a constant of its own,
     * or, while capturing, runs op by op).
     */
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
        for (Iterator<Entry> dead = out.iterator(); dead.hasNext(); ) {
            Entry e = dead.next();
            if (e.constant && e.scope != null && !e.scope.isAlive()) {
                map.remove(e.host);
                dead.remove();
            }
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
