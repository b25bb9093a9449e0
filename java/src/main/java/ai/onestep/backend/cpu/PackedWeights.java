package ai.onestep.backend.cpu;

import ai.onestep.tensor.Tensor;
import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Function;

/**
 * Packed forms of the weights a caller registered as constants ({@code Ops.registerParameters}: they change only
 * through this backend's optimizer and EMA, which drop the forms): the repacked GEMM panels of a linear or direct
 * convolution weight ({@link GemmKernels#packRows}), or a 3x3 filter's Winograd transform
 * ({@link CpuWinograd#transformWeights}). Every call otherwise redoes them, which a training step needs (the
 * weights move every step) but a sampler does not: the fmnist-small U-Net repacks 11 MB per evaluation, a sizeable
 * part of a batch-1 network evaluation on this machine. A cached form holds the same floats as a fresh one, so
 * results are bit-identical with and without the cache.
 *
 * <p>Entries are keyed by the tensor's address and remember its segment: an entry whose memory was freed (a
 * closed model) never answers again, even when a new tensor is later allocated at the same address.
 */
final class PackedWeights {
    /** A registered tensor and, once used, one packed form of it ({@code form} names the layout and sizes). */
    private record Entry(MemorySegment segment, String form, float[] panels) {
    }

    private final Map<Long, Entry> entries = new ConcurrentHashMap<>();

    /** Declares these tensors constant (entries of freed tensors are dropped on the way). */
    void register(List<Tensor> tensors) {
        entries.values().removeIf(e -> !e.segment().scope().isAlive());
        for (Tensor t : tensors) {
            MemorySegment s = t.segment();
            Entry old = entries.get(s.address());
            if (old == null || old.segment().scope() != s.scope() || old.segment().byteSize() != s.byteSize()) {
                entries.put(s.address(), new Entry(s, null, null));
            }
        }
    }

    /**
     * The panels of the registered (k, n) weight matrix {@code w}, packed on first use; null when {@code w} is not
     * a registered, live tensor of that size (the caller packs it itself).
     */
    float[] panels(Tensor w, int k, int n) {
        if ((long) k * n * Float.BYTES != w.segment().byteSize()) {
            return null;
        }
        return packed(w, "gemm " + k + "x" + n, s -> GemmKernels.packRows(s, k, n));
    }

    /**
     * The packed form {@code form} of the registered tensor {@code w}, computed by {@code pack} on first use (and
     * again when a different form is asked for); null when {@code w} is not a registered, live tensor.
     */
    float[] packed(Tensor w, String form, Function<MemorySegment, float[]> pack) {
        if (entries.isEmpty()) {
            return null;
        }
        MemorySegment s = w.segment();
        Entry e = entries.get(s.address());
        if (e == null || !e.segment().scope().isAlive() || e.segment().scope() != s.scope()
                || s.byteSize() != e.segment().byteSize()) {
            return null;
        }
        if (e.panels() != null && form.equals(e.form())) {
            return e.panels();
        }
        float[] p = pack.apply(s);
        entries.put(s.address(), new Entry(e.segment(), form, p));
        return p;
    }

    /** After an update of {@code t} through the backend: drops the panels of any registered tensor it overlaps. */
    void updated(Tensor t) {
        if (entries.isEmpty()) {
            return;
        }
        long lo = t.segment().address(), hi = lo + t.segment().byteSize();
        entries.replaceAll((address, e) -> e.panels() != null && address < hi && address + e.segment().byteSize() > lo
                ? new Entry(e.segment(), null, null) : e);
    }

    /** Registered tensors that hold packed panels now (for tests). */
    int packedCount() {
        return (int) entries.values().stream().filter(e -> e.panels() != null).count();
    }
}
