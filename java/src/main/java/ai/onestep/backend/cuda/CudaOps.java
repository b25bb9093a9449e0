package ai.onestep.backend.cuda;

import static ai.onestep.kernels.OnestepKernels.*;

import ai.onestep.backend.AdamUpdate;
import ai.onestep.backend.Ops;
import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.backend.cuda.Residency.Access;
import ai.onestep.tensor.Tensor;
import java.lang.foreign.MemorySegment;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.function.Supplier;

/**
 * The CUDA backend: {@link Ops} on a {@link Device} (a GPU, or the emulated library in tests).
 *
 * <p>The engine's tensors live in host memory, so the backend works in one of three modes:
 * <ul>
 *   <li><b>eager</b> (any op called on its own): the op's inputs are copied into the device arena, the kernels run
 *       on the device's stream, the outputs are copied back, and the arena is rewound. Correct for every op, slow
 *       (two copies per op).</li>
 *   <li><b>pass</b> ({@link #runPass}, used by the denoisers for a whole sampling step): tensors stay on the device
 *       for the whole pass ({@link Residency}), only the declared outputs come back. The first call of a key runs
 *       uncaptured (and measures the memory it needs, recording each activation's lifetime); the second captures
 *       it as a CUDA graph whose activations reuse the memory of dead ones ({@link ActivationPlan}), in memory
 *       every captured pass shares ({@link SharedActivations}); later calls replay it ({@link CapturedPass}).
 *       Updates of unregistered, unowned tensors through this backend drop the graphs. Work on weights and the
 *       key alone (the U-Net's time path) runs on the host while the pass is recorded and enters the graph as
 *       constants ({@link #passConstants}: constant folding); an update of those weights drops the graphs that
 *       folded them.</li>
 *   <li><b>resident block</b> ({@link #runResident}, a training step up to its parameter updates): as a pass, but
 *       never captured, in fp32, with ops that return host values allowed, and memory that grows by chunks.</li>
 * </ul>
 * Two kinds of tensors live on the device across modes: registered weights ({@link #registerParameters}, read
 * only, refreshed after an eager update) and adopted training state ({@link #adopt}: weights, gradients, moments,
 * EMA; read and written in place, host copies stale until {@link #syncToHost}).
 *
 * <p>On the device: conv2d, linear and matmul (cuBLAS or our portable kernels, see the device), the upsampling
 * convolution (cuDNN's transposed convolution or our portable kernel), group norm (+SiLU, +scale/shift, + a
 * channel concatenation), SiLU, attention (heads of up to 128 features: 32, 64 and 128 natively, others zero-padded
 * to the next of these), add, mul, axpy, axpby, scale, addPerChannel, sumPerChannel, concatChannels, splitChannels,
 * upsampleNearest2x, the sinusoidal and Fourier embeddings, and of the training ops the backward of conv2d (cuDNN,
 * or our portable kernels), linear, group norm, SiLU, attention and upsampling, the Adam/RAdam steps and the EMA
 * (these three eagerly only: a parameter update never runs inside a pass or block), the gradients' zeroing, and the
 * losses and sumOfSquares (their sums on the device, the few per-sample or per-chunk values added on the host:
 * eagerly or in a resident block, as they return a host value). Still on the host, through {@link CpuOps} in eager
 * mode: attention with heads of more than 128 features; inside a pass it makes the pass fall back to eager mode,
 * and a resident block start over in eager mode (each logged once).
 *
 * <p><b>Precision</b> ({@link Precision}, fixed per backend): inside a pass, the forward ops run on fp16 or bf16
 * storage with fp32 arithmetic (the {@code *_typed} kernels, cuBLAS GemmEx and cuDNN with fp32 accumulation), and
 * registered weights are read from 16-bit copies made once on the device. fp32 stays where precision needs it:
 * group-norm mean/rstd and attention's lse, the time embedding's noise level, the pass's inputs and outputs, and
 * every elementwise op (add, mul, axpy, axpby, scale) with an fp32 operand runs in fp32, so the denoisers' output
 * c_skip x + c_out F reads the sample x unrounded. Eager ops and resident blocks (training) are always fp32.
 */
public final class CudaOps extends Ops implements AutoCloseable {
    /** Default size of each device arena (eager, and each captured pass's constants and activations). */
    public static final long DEFAULT_ARENA_BYTES = Long.getLong("onestep.cuda.arenaMiB", 1024L) << 20;

    private final Device device;
    private final Precision precision;
    private final CpuOps host;
    private final long arenaBytes;
    private final DeviceArena eagerArena;
    private final ParameterStore parameters;
    private final Residency eager;
    private Residency pass;
    private DeviceArena measureConstants;
    private DeviceArena measureActivations;
    /**
     * Most graphs kept at once; later keys run on the device uncaptured. A graph holds its own constants (weights
     * that were not registered, host-filled tensors); registered weights and the activations are shared.
     */
    private static final int MAX_GRAPHS = Integer.getInteger("onestep.cuda.maxGraphs", 64);
    private final Map<String, CapturedPass> passes = new LinkedHashMap<>();
    /** Keys run once (resident, not captured) and the memory they need; bounded, least recent dropped. */
    private final Map<String, CapturedPass.Measured> seenOnce = bounded(256);
    /** The activations of every captured pass (they run one at a time). */
    private final SharedActivations sharedActivations;
    /** Captured passes reuse the memory of dead activations ({@code -Donestep.cuda.planActivations=false}: not). */
    private boolean planActivations = !"false".equalsIgnoreCase(System.getProperty("onestep.cuda.planActivations"));
    /** Keys whose pass needs a host-only op; bounded (training draws new keys every step). */
    private final Set<String> eagerOnly = java.util.Collections.newSetFromMap(bounded(1024));
    private boolean warnedFull;
    private boolean warnedOpByOp;
    /** The current pass is a resident block ({@link #runResident}): uncaptured, fp32, host values allowed. */
    private boolean resident;
    /** The element type of the current pass's activations. */
    private Precision passType = Precision.FP32;
    /** Resident blocks' memory, made on first use and kept (rewound per block). */
    private GrowingArena residentConstants;
    private GrowingArena residentActivations;
    /** Resident blocks on (the default; {@code -Donestep.cuda.resident=false} runs their ops one by one). */
    private boolean residentBlocks = !"false".equalsIgnoreCase(System.getProperty("onestep.cuda.resident"));
    /** Checking mode for resident blocks (see {@link Residency#checkHost}); {@code -Donestep.cuda.checkHost=true}. */
    private boolean checkHost = Boolean.getBoolean("onestep.cuda.checkHost");
    /** Resident-block keys that met an op without a device kernel: they run op by op. Bounded. */
    private final Set<String> eagerBlocks = java.util.Collections.newSetFromMap(bounded(256));
    private boolean warnedEagerBlock;
    private long deviceOps;
    private long hostOps;

    /** A backend on {@code device} with arenas of {@code arenaBytes} each; it owns (and closes) the device. fp32. */
    public CudaOps(Device device, long arenaBytes, int hostThreads) {
        this(device, arenaBytes, hostThreads, Precision.FP32);
    }

    /** The same, with passes in {@code precision}. */
    public CudaOps(Device device, long arenaBytes, int hostThreads, Precision precision) {
        this.device = device;
        this.precision = precision;
        this.arenaBytes = arenaBytes;
        this.host = new CpuOps(hostThreads);
        this.eagerArena = new DeviceArena(device, "eager", arenaBytes);
        this.parameters = new ParameterStore(device);
        this.eager = new Residency(device, parameters, eagerArena, eagerArena);
        this.sharedActivations = new SharedActivations(device);
    }

    @Override
    public String name() {
        return device.kind().equals("cuda") ? "cuda" : "cuda-emulated";
    }

    public Device device() {
        return device;
    }

    /** The storage type of activations and weights inside a pass. */
    public Precision precision() {
        return precision;
    }

    /** Device ops issued so far (each Ops call that ran on the device counts once). */
    public long deviceOps() {
        return deviceOps;
    }

    /** Ops that had no device kernel and ran on the host (CPU backend) so far. */
    public long hostOps() {
        return hostOps;
    }

    /**
     * Captured passes by key: graph nodes, device ops issued while capturing, and bias kernels the capture did not
     * launch (biases left to readers that added them on the fly; see {@link #biasDeferrals}).
     */
    public Map<String, long[]> capturedPasses() {
        Map<String, long[]> out = new LinkedHashMap<>();
        for (CapturedPass p : passes.values()) {
            out.put(p.key(), new long[] {p.graphNodes(), p.capturedOps(), p.biasKernelsSaved()});
        }
        return out;
    }

    /**
     * Captured passes by key: the ops each capture issued, by name (in order of first use), for a profile of what a
     * graph launches.
     */
    public Map<String, Map<String, Long>> capturedOpCounts() {
        Map<String, Map<String, Long>> out = new LinkedHashMap<>();
        for (CapturedPass p : passes.values()) {
            out.put(p.key(), p.opCounts());
        }
        return out;
    }

    /**
     * Captured passes by key: device bytes of their constants, of their activations as planned, and of a bump
     * arena that keeps every tensor at one address to the pass's end (how passes ran before plans).
     */
    public Map<String, long[]> passMemory() {
        Map<String, long[]> out = new LinkedHashMap<>();
        for (CapturedPass p : passes.values()) {
            out.put(p.key(), p.memory());
        }
        return out;
    }

    /** The most activation bytes a pass's measuring (first) run has used so far. */
    public long measuringBytes() {
        return measureActivations == null ? 0 : measureActivations.highWater();
    }

    /** Device bytes of the activation memory the captured passes share. */
    public long sharedActivationBytes() {
        return sharedActivations.bytes();
    }

    /**
     * Turns the reuse of dead activations' memory in passes captured from now on on (the default) or off (every
     * activation keeps its own memory to the pass's end). For comparisons; results are the same bits either way.
     */
    public void planActivations(boolean on) {
        planActivations = on;
    }

    /** Pass keys that could not be captured and run op by op. */
    public Set<String> eagerOnlyPasses() {
        return Set.copyOf(eagerOnly);
    }

    @Override
    public void registerParameters(java.util.List<Tensor> tensors) {
        parameters.register(tensors);
    }

    /** Registered parameters (count) and their device bytes. */
    public long[] registeredParameters() {
        return new long[] {parameters.size(), parameters.bytes()};
    }

    /**
     * Drops every captured graph. A graph keeps the constants it was captured with (weights that were neither
     * registered with {@link #registerParameters} nor adopted with {@link #adopt}), so this runs by itself when an
     * update through this backend (adamStep, radamStep, ema) changes such a tensor, and when tensors are adopted or
     * released; call it after changing such weights any other way.
     */
    public void forgetCapturedPasses() {
        for (CapturedPass p : passes.values()) {
            p.close();
        }
        passes.clear();
        seenOnce.clear();
    }

    private static <K, V> Map<K, V> bounded(int max) {
        return new LinkedHashMap<>(16, 0.75f, true) {
            @Override
            protected boolean removeEldestEntry(Map.Entry<K, V> eldest) {
                return size() > max;
            }
        };
    }

    /** Frees the graphs, the arenas and the device's stream (and cuBLAS/cuDNN handles). */
    @Override
    public void close() {
        forgetCapturedPasses();
        sharedActivations.close();
        parameters.close();
        if (measureConstants != null) {
            measureConstants.close();
            measureActivations.close();
        }
        if (residentConstants != null) {
            residentConstants.close();
            residentActivations.close();
        }
        eagerArena.close();
        device.close();
    }

    // ------------------------------------------------------------------------------------------------
    // Passes and graphs
    // ------------------------------------------------------------------------------------------------

    @Override
    public boolean capturesPasses() {
        return true;
    }

    /**
     * Constant folding inside captured passes ({@code -Donestep.cuda.foldConstants=false}: off, every op of a pass
     * on the device). The fusions that round differently from the eager ops ({@link #fusesResidual},
     * {@link #fusesUpsampleConv}) run only in folding passes, so a pass without folding gives the eager ops' bits.
     */
    private boolean foldConstants = !"false".equalsIgnoreCase(System.getProperty("onestep.cuda.foldConstants"));

    public boolean foldsConstants() {
        return foldConstants;
    }

    /** Turns constant folding ({@link #passConstants}) on or off; passes captured before keep what they folded. */
    public void foldConstants(boolean on) {
        foldConstants = on;
    }

    /**
     * The host backend inside a captured pass (see {@link Ops#passConstants}), so work on weights and the pass's
     * key alone is done while the pass is recorded and replays as constants; this backend otherwise: eager ops,
     * resident blocks (training), or a read the device owns (its host copy is stale).
     */
    @Override
    public Ops passConstants(java.util.List<Tensor> reads) {
        if (!foldConstants || pass == null || resident) {
            return this;
        }
        for (Tensor t : reads) {
            if (parameters.owned.owns(t)) {
                return this;
            }
        }
        if (capturing != null) {
            capturing.folded(reads);  // an update of these weights must drop the graph (see forgetFoldedOn)
        }
        return host;
    }

    /** The pass being warmed up and captured (null: none), for the weights it folds. */
    private CapturedPass capturing;

    /**
     * A registered parameter's device copy was refreshed (an eager update): graphs replay with the new values in
     * place, except those that folded work on it into constants ({@link #passConstants}), which are dropped and
     * captured again on later calls.
     */
    private void forgetFoldedOn(Tensor t) {
        long addr = t.segment().address(), bytes = t.size() * Float.BYTES;
        for (var it = passes.values().iterator(); it.hasNext(); ) {
            CapturedPass p = it.next();
            if (p.foldedOn(addr, bytes)) {
                p.close();
                it.remove();
            }
        }
    }

    @Override
    public void runPass(String key, Tensor[] inputs, Tensor[] outputs, Runnable body) {
        if (pass != null) {
            body.run();  // nested: part of the enclosing pass
            return;
        }
        String full = key + " " + shapes(inputs) + " -> " + shapes(outputs);
        CapturedPass p = passes.get(full);
        if (p != null && !p.valid()) {
            // Its weights were freed (a closed model): a new model at the same addresses must not replay it.
            p.close();
            passes.remove(full);
            p = null;
        }
        if (p != null) {
            p.replay(inputs, outputs);
            return;
        }
        if (eagerOnly.contains(full)) {
            body.run();
            return;
        }
        if (measureConstants == null) {
            // Constants are small (registered weights are not constants): start at 64 MiB and grow if a pass needs more.
            measureConstants = new DeviceArena(device, "measuring constants", Math.min(arenaBytes, 64L << 20));
            measureActivations = new DeviceArena(device, "measuring activations", arenaBytes);
        }
        CapturedPass.Measured need = seenOnce.remove(full);
        if (need == null || passes.size() >= MAX_GRAPHS) {
            // First use of this key (training draws fresh noise levels every step, and most keys never come
            // back), or no room for another graph: run the pass on the device, uncaptured, and remember its size.
            if (need != null && !warnedFull) {
                warnedFull = true;
                System.err.println("cuda: " + MAX_GRAPHS + " graphs captured (-Donestep.cuda.maxGraphs): further "
                        + "passes run on the device without capture");
            }
            try {
                need = measure(inputs, outputs, body);
            } catch (NoDeviceKernel e) {
                passOpByOp(full, key, e.getMessage(), body);
                return;
            }
            seenOnce.put(full, need);
            return;
        }
        // Second use: capture it (constants in an arena of exactly the measured size, activations where the plan
        // put them) and replay from now on.
        p = new CapturedPass(device, parameters, full, need, sharedActivations, checkHost);
        try {
            capturing = p;
            try {
                p.warmUpAndCapture(this, inputs, outputs, body);
            } finally {
                capturing = null;
            }
            passes.put(full, p);
        } catch (NoDeviceKernel | Residency.HostDataDuringCapture e) {
            p.close();
            passOpByOp(full, key, e.getMessage(), body);
        } catch (DeviceArena.OutOfMemory | ActivationPlan.Mismatch e) {
            // The pass did not repeat its first run (another model now answers to this key): measure again.
            p.close();
            seenOnce.put(full, measure(inputs, outputs, body));
        } catch (RuntimeException | Error e) {
            p.close();
            throw e;
        }
    }

    /** Largest measuring arena {@link #measure} grows to. */
    private static final long MAX_MEASURE_BYTES = 64L << 30;

    /**
     * A pass's first run in the shared measuring arenas (see {@link CapturedPass#measure}). A pass larger than an
     * arena (a big batch: while it is measured, every activation of a pass stays allocated until its end) doubles
     * that arena and runs again, so no default size has to fit every model and batch; the captured pass then gets
     * exactly what it used for constants, and its activations' plan.
     */
    private CapturedPass.Measured measure(Tensor[] inputs, Tensor[] outputs, Runnable body) {
        boolean grew = false;
        while (true) {
            try {
                CapturedPass.Measured need = CapturedPass.measure(this, device, parameters, measureConstants,
                        measureActivations, inputs, outputs, body, planActivations);
                if (grew) {
                    System.err.println("cuda: a pass outgrew the measuring arenas; they now hold "
                            + mib(measureConstants.capacity()) + " of constants and " + mib(measureActivations.capacity())
                            + " of activations (the pass used " + mib(need.constantsBytes()) + " and "
                            + mib(need.plan().bumpBytes()) + ", " + mib(need.plan().peak()) + " once planned)");
                }
                return need;
            } catch (DeviceArena.OutOfMemory e) {
                grew = true;
                exitPass();
                DeviceArena full = e.arena();
                long grown = 2 * full.capacity();
                if ((full != measureConstants && full != measureActivations) || grown > MAX_MEASURE_BYTES) {
                    throw e;
                }
                boolean constants = full == measureConstants;
                String name = constants ? "measuring constants" : "measuring activations";
                full.close();  // first, so the device has room for the bigger one
                DeviceArena next;
                CudaException failed = null;
                try {
                    next = new DeviceArena(device, name, grown);
                } catch (CudaException noRoom) {
                    next = new DeviceArena(device, name, grown / 2);  // put the old size back, then report
                    failed = new CudaException(e.getMessage() + "; growing it to " + (grown >> 20) + " MiB failed: "
                            + noRoom.getMessage());
                }
                if (constants) {
                    measureConstants = next;
                } else {
                    measureActivations = next;
                }
                if (failed != null) {
                    throw failed;
                }
            }
        }
    }

    private static String mib(long bytes) {
        return String.format(java.util.Locale.ROOT, "%.1f MiB", bytes / 1048576.0);
    }

    private void passOpByOp(String full, String key, String why, Runnable body) {
        eagerOnly.add(full);
        if (!warnedOpByOp) {  // once: training can meet a new key every step
            warnedOpByOp = true;
            System.err.println("cuda: pass '" + key + "' runs op by op, not as a graph: " + why
                    + " (said once; CudaOps.eagerOnlyPasses() lists every such pass)");
        }
        body.run();
    }

    void enterPass(Residency r) {
        pass = r;
        passType = precision;
        device.pass(true);
    }

    void exitPass() {
        if (pass != null) {
            biasesAddedInPlace += pass.takeBiasFlushes();
        }
        pass = null;
        resident = false;
        passType = Precision.FP32;
        device.pass(false);
    }

    // ------------------------------------------------------------------------------------------------
    // Resident blocks (training steps)
    // ------------------------------------------------------------------------------------------------

    /** Turns resident blocks on or off (off: their ops run one by one, each with its copies). */
    public void residentBlocks(boolean on) {
        residentBlocks = on;
    }

    /**
     * Turns checking mode on or off: host reads of device-written tensors in a resident block see NaN, and host
     * writes to a tensor after an op of the block read it are errors (see {@link Residency#checkHost}). For tests.
     */
    public void checkHostAccess(boolean on) {
        checkHost = on;
        parameters.owned.checkHost(on);
    }

    // ------------------------------------------------------------------------------------------------
    // Training state the device owns
    // ------------------------------------------------------------------------------------------------

    /**
     * From now on the device owns these tensors (see {@link OwnedTensors}): uploaded once, then read and written
     * only there, so an optimizer step, the EMA and the gradients' zeroing move no data across the bus.
     */
    @Override
    public void adopt(java.util.List<Tensor> tensors) {
        forgetCapturedPasses();  // a graph captured before may hold these tensors as constants
        parameters.owned.adopt(tensors);
    }

    @Override
    public void syncToHost(java.util.List<Tensor> tensors) {
        parameters.owned.syncToHost(tensors);
    }

    /**
     * Syncs and stops owning; graphs that read the tensors' device copies are dropped with them, and a registered
     * parameter among them gets its registered device copy refreshed (ops wrote the owned copy meanwhile).
     */
    @Override
    public void release(java.util.List<Tensor> tensors) {
        forgetCapturedPasses();
        parameters.owned.release(tensors);
        for (Tensor t : tensors) {
            if (parameters.touches(t.segment().address(), t.size() * Float.BYTES)) {
                parameters.refresh(t);
            }
        }
    }

    /** Owned tensors (count) and their device bytes. */
    public long[] ownedTensors() {
        return new long[] {parameters.owned.size(), parameters.owned.bytes()};
    }

    /** Keys of resident blocks that met an op without a device kernel and run op by op. */
    public Set<String> eagerBlocks() {
        return Set.copyOf(eagerBlocks);
    }

    /** Device memory the resident blocks hold (constants, activations), 0 before the first. */
    public long residentBytes() {
        return residentConstants == null ? 0 : residentConstants.capacity() + residentActivations.capacity();
    }

    /**
     * A resident block: every tensor the body touches stays on the device from its first use to the block's end,
     * so an op's inputs are uploaded once (host data) or never (what an earlier op of the block wrote), and only
     * {@code results} come back, after one synchronization. Unlike a pass it is never captured (a training step's
     * noise levels are new every step) and it runs in fp32 whatever this backend's precision (training), and the
     * ops that return host values (losses, sumOfSquares) work inside: each waits for the device and copies back
     * its few doubles. Its memory comes from arenas that grow by chunks (the body cannot be re-run to size them,
     * as it returns values mid-way).
     *
     * <p>A body that meets an op without a device kernel (heads over 128 features; an optimizer step) is abandoned
     * before any tensor came back to the host (values such as a loss may have) and runs again op by op, and its
     * key does so from then on (said once): so it must change no host state except through ops' outputs, and
     * must set up every owned tensor it accumulates into (a gradient: zeroed inside the block) itself.
     */
    @Override
    public void runResident(String key, Tensor[] results, Runnable body) {
        if (pass != null || !residentBlocks || eagerBlocks.contains(key)) {
            body.run();
            return;
        }
        if (residentConstants == null) {
            GrowingArena c = new GrowingArena(device, "resident constants", Math.min(arenaBytes, 64L << 20));
            try {
                residentActivations = new GrowingArena(device, "resident activations", arenaBytes);
            } catch (RuntimeException e) {
                c.close();
                throw e;
            }
            residentConstants = c;  // both made, or neither
        }
        residentConstants.reset();
        residentActivations.reset();
        Residency r = new Residency(device, parameters, residentConstants, residentActivations);
        r.checkHost(checkHost);
        pass = r;
        resident = true;
        passType = Precision.FP32;
        boolean ran = false;
        try {
            body.run();
            ran = true;
        } catch (NoDeviceKernel e) {
            eagerBlocks.add(key);
            if (!warnedEagerBlock) {
                warnedEagerBlock = true;
                System.err.println("cuda: resident block '" + key + "' runs op by op: " + e.getMessage()
                        + " (said once; CudaOps.eagerBlocks() lists every such block)");
            }
        } finally {
            exitPass();
            if (!ran) {
                try {
                    device.synchronize();  // let queued work finish before the arenas are reused
                } catch (CudaException ignored) {
                    // the body's own error is the one to report
                }
                r.clear();
            }
        }
        if (!ran) {
            body.run();  // nothing came back to the host: start over, op by op
            return;
        }
        try {
            device.synchronize();
            r.verifyConstants("resident block '" + key + "'");
            r.poisonWritten();
            for (Tensor t : results) {
                if (parameters.owned.owns(t)) {
                    continue;  // training state the device owns stays there
                }
                if (!r.untouched(t)) {  // an untouched result (a gradient this step did not reach) is current
                    long src = r.resolve(t, Access.IN, key + " result");
                    device.download(t.segment(), src, t.size() * Float.BYTES, () -> key + " result " + t.describe());
                }
            }
        } finally {
            r.clear();
        }
    }

    private static String shapes(Tensor[] ts) {
        StringBuilder sb = new StringBuilder();
        for (Tensor t : ts) {
            sb.append(sb.isEmpty() ? "" : ", ").append(java.util.Arrays.toString(t.shape()));
        }
        return "(" + sb + ")";
    }

    // ------------------------------------------------------------------------------------------------
    // The launch sequence of one op
    // ------------------------------------------------------------------------------------------------

    /** Where {@link #run} counts ops by name while a pass is captured (null: not counting). */
    private Map<String, Long> opCounts;

    void countOps(Map<String, Long> into) {
        opCounts = into;
    }

    /** Runs {@code body} (which resolves its tensors and launches) as one device op. */
    private void run(String op, Runnable body) {
        deviceOps++;
        device.opBoundary();
        if (opCounts != null) {
            opCounts.merge(op, 1L, Long::sum);
        }
        if (pass != null) {
            body.run();
            pass.flush();
            return;
        }
        try {
            body.run();
            eager.flush();
            java.util.List<Residency.Entry> written = eager.written();
            if (!written.isEmpty()) {
                device.synchronize();  // (an op that wrote only owned state returns without waiting)
            }
            for (Residency.Entry e : written) {
                MemorySegment hostSeg = MemorySegment.ofAddress(e.host).reinterpret(e.bytes);
                device.download(hostSeg, e.dev, e.bytes, () -> op + " output");
                if (parameters.touches(e.host, e.bytes)) {
                    Tensor param = Tensor.wrap(hostSeg, ai.onestep.tensor.Layout.ROWS, (int) (e.bytes / Float.BYTES));
                    parameters.refresh(param);
                    forgetFoldedOn(param);
                }
            }
        } finally {
            eager.clear();
            eagerArena.reset();
        }
    }

    /**
     * An op with no device kernel: the CPU backend runs it in eager mode; inside a pass it is an error. Owned
     * training state is brought to the host around it (and back: it may read or write any of it). Rare: heads over
     * 128 features.
     */
    private void hostOnly(String op, Runnable cpu) {
        if (pass != null) {
            throw new NoDeviceKernel(op + ": has no device kernel yet, so it cannot run inside a device pass");
        }
        hostOps++;
        device.opBoundary();
        if (parameters.owned.size() == 0) {
            cpu.run();
            return;
        }
        parameters.owned.syncAllToHost();
        cpu.run();
        parameters.owned.uploadAll();
    }

    private Residency res() {
        return pass != null ? pass : eager;
    }

    private long in(Tensor t, String op) {
        return t == null ? 0 : res().resolve(t, Access.IN, op);
    }

    private long out(Tensor t, String op) {
        return t == null ? 0 : res().resolve(t, Access.OUT, op);
    }

    private long inOut(Tensor t, String op) {
        return t == null ? 0 : res().resolve(t, Access.IN_OUT, op);
    }

    private long in(Tensor t, String op, Precision type) {
        return t == null ? 0 : res().resolve(t, Access.IN, op, type);
    }

    private long out(Tensor t, String op, Precision type) {
        return t == null ? 0 : res().resolve(t, Access.OUT, op, type);
    }

    private long inOut(Tensor t, String op, Precision type) {
        return t == null ? 0 : res().resolve(t, Access.IN_OUT, op, type);
    }

    /**
     * An input the op reads whole and can add a pending bias to on the fly: its address in {@code [0]} and the bias
     * left on it by the op that wrote it ({@link Residency#deferBias}) in {@code [1]}, or 0 where there is none (or
     * its channels are not {@code t}'s last dimension: then it is added in place first, as for any reader).
     */
    private long[] inTakingBias(Tensor t, String op, Precision type) {
        if (t == null) {
            return new long[2];
        }
        long bias = pass != null ? pass.pendingBias(t, type) : 0;
        return new long[] {pass != null ? pass.resolve(t, Access.IN, op, type, bias != 0) : in(t, op, type), bias};
    }

    /**
     * After the op resolved {@code y} as its whole output: true when it should write y without {@code bias} and leave
     * the bias to y's readers. Only inside a pass (eager ops bring every result back to the host) and only where
     * the device would have spent a kernel of its own on the bias ({@code separate}).
     */
    private boolean deferBias(boolean separate, Tensor y, long bias, Precision type) {
        boolean deferred = separate && bias != 0 && pass != null && pass.deferBias(y, bias, type, y.dim(-1));
        if (deferred) {
            biasesDeferred++;
        }
        return deferred;
    }

    private long biasesDeferred;
    private long biasesAddedInPlace;

    /**
     * Biases of convolutions and linears left to their readers (where the device would spend a kernel of its own on
     * each: cuDNN, cuBLAS), and how many of those a reader still had to add in place, summed over every pass run so
     * far. The difference is the bias kernels the passes did not launch; on the emulated device (whose portable
     * kernels add the bias themselves) both are 0.
     */
    public long[] biasDeferrals() {
        return new long[] {biasesDeferred, biasesAddedInPlace};
    }

    /**
     * The storage type of the current op's activations: the backend's precision inside a pass, else (eager ops,
     * resident blocks) fp32.
     */
    private Precision dt() {
        return passType;
    }

    /**
     * The type of an elementwise op: fp32 when any operand is held in fp32 on the device (a pass input such as the
     * sample x, or the result of an earlier fp32 op), else the pass's type. This keeps c_skip x + c_out F and
     * c_in x from rounding x.
     */
    private Precision elementwise(Tensor... operands) {
        Precision p = dt();
        if (p == Precision.FP32) {
            return p;
        }
        for (Tensor t : operands) {
            if (t != null && res().typeOf(t) == Precision.FP32) {
                return Precision.FP32;
            }
        }
        return p;
    }

    private static Supplier<String> what(Tensor... ts) {
        return () -> {
            StringBuilder sb = new StringBuilder();
            for (Tensor t : ts) {
                if (t != null) {
                    sb.append(sb.isEmpty() ? "" : ", ").append(t.describe());
                }
            }
            return sb.toString();
        };
    }

    private long stream() {
        return device.stream();
    }

    // ------------------------------------------------------------------------------------------------
    // GEMM, linear, convolution
    // ------------------------------------------------------------------------------------------------

    @Override
    protected void matmulKernel(Tensor a, boolean transA, Tensor b, boolean transB, Tensor c, int m, int n, int k,
                                float alpha, float beta) {
        run("matmul", () -> {
            Precision type = dt();
            long pa = in(a, "matmul", type), pb = in(b, "matmul", type);
            long pc = beta == 0f ? out(c, "matmul", type) : inOut(c, "matmul", type);
            device.gemm(pa, transA, pb, transB, pc, m, n, k, alpha, beta, type, what(a, b, c));
        });
    }

    @Override
    protected void linearKernel(Tensor x, Tensor w, Tensor b, Tensor y, int rows, int in, int out) {
        run("linear", () -> {
            Precision type = dt();
            long px = in(x, "linear", type), pw = in(w, "linear", type), pb = in(b, "linear", type);
            long py = out(y, "linear", type);
            // cuBLAS's GEMM then a bias kernel: the bias goes to y's readers instead where they can take it.
            boolean deferred = deferBias(device.linearBiasSeparate(rows), y, pb, type);
            device.linear(px, pw, deferred ? 0 : pb, py, rows, in, out, type, what(x, w, b, y));
        });
    }

    /**
     * One launch (cuBLASLt's bias epilogue with C = z; the emulated device's portable kernel) where z is held in the
     * pass's type with no bias left pending on it; otherwise the linear and then the residual add.
     */
    @Override
    protected void linearResidualKernel(Tensor x, Tensor w, Tensor b, Tensor z, Tensor y, int rows, int in, int out) {
        Precision type = dt();
        if (!residualFuses(device.linearFusesResidual(), b, z, type)) {
            super.linearResidualKernel(x, w, b, z, y, rows, in, out);
            return;
        }
        String op = "linearResidual";
        run(op, () -> {
            long px = in(x, op, type), pw = in(w, op, type), pb = in(b, op, type), pz = in(z, op, type);
            device.linearResidual(px, pw, pb, pz, out(y, op, type), rows, in, out, type, what(x, w, b, z, y));
        });
    }

    @Override
    protected void linearBackwardKernel(Tensor x, Tensor w, Tensor dy, Tensor dx, Tensor dw, Tensor db, int rows,
                                        int in, int out) {
        String op = "linearBackward";
        run(op, () -> {
            long px = in(x, op), pw = in(w, op), pdy = in(dy, op);
            long pdx = out(dx, op), pdw = inOut(dw, op), pdb = inOut(db, op);
            Supplier<String> wh = what(x, w, dy);
            // dx (rows, in) = dy (rows, out) w^T, with w (in, out); dw (in, out) += x^T dy; db += column sums of dy.
            device.gemm(pdy, false, pw, true, pdx, rows, in, out, 1f, 0f, wh);
            device.gemm(px, true, pdy, false, pdw, in, out, rows, 1f, 1f, wh);
            if (db != null) {
                long sums = res().scratch(out, "linearBackward bias sums");
                Device.check(onestep_sum_per_channel(pdy, sums, 1, rows, out, stream()), op, wh);
                Device.check(onestep_axpy(1f, sums, pdb, out, stream()), op, wh);
            }
        });
    }

    @Override
    protected void convKernel(Tensor x, Tensor w, Tensor b, int stride, int padding, Tensor y) {
        run("conv2d", () -> {
            Precision type = dt();
            long px = in(x, "conv2d", type), pw = in(w, "conv2d", type), pb = in(b, "conv2d", type);
            // Registered weights come with a KRSC copy for cuDNN (kept, not transposed per call); only where w is
            // read from the registered copy itself (not owned training state, not a tensor an op of this pass wrote).
            long wk = krscOf(w, pw, type);
            long py = out(y, "conv2d", type);
            // cuDNN's convolution then a bias kernel: the bias goes to y's readers instead where they can take it
            // (a group norm or a residual add adds it on the fly; ResnetBlock2D's conv1 and conv2 both feed one).
            boolean deferred = deferBias(device.convBiasSeparate(), y, pb, type);
            device.conv2d(px, pw, wk, deferred ? 0 : pb, py, x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0),
                    w.dim(1), w.dim(3), stride, padding, type, (bytes, why) -> res().scratch((bytes + 3) / 4, why),
                    what(x, w, b, y));
        });
    }

    /**
     * Whether folding passes run conv2 and to_out.0 with their residual adds as one op each
     * ({@code -Donestep.cuda.fuseResidual=false}: never, for timing the fusions against the two ops).
     */
    private boolean fuseResiduals = !"false".equalsIgnoreCase(System.getProperty("onestep.cuda.fuseResidual"));

    /** Turns the residual fusion ({@link #fusesResidual}) on or off for passes captured from now on. */
    public void fuseResiduals(boolean on) {
        fuseResiduals = on;
    }

    /** Inside a pass that folds constants, on a device that fuses residuals into convolutions and GEMMs. */
    @Override
    public boolean fusesResidual() {
        return fuseResiduals && foldConstants && pass != null && !resident && device.convFusesResidual()
                && device.linearFusesResidual();
    }

    /** Whether passes run Upsample2D as one transposed convolution ({@code -Donestep.cuda.fuseUpsample=false}: never). */
    private boolean fuseUpsampling = !"false".equalsIgnoreCase(System.getProperty("onestep.cuda.fuseUpsample"));

    /** Turns {@link #fusesUpsampleConv} on or off for passes captured from now on. */
    public void fuseUpsampling(boolean on) {
        fuseUpsampling = on;
    }

    /**
     * Inside a pass that folds constants (not a resident block): the upsampling convolution is one transposed
     * convolution. Like the residual fusions it rounds differently from the eager ops, so a pass without folding
     * keeps their bits.
     */
    @Override
    public boolean fusesUpsampleConv() {
        return fuseUpsampling && foldConstants && pass != null && !resident;
    }

    /**
     * The transposed convolution from the weights' sub-pixel kernel, kept with the registered parameter
     * ({@link ParameterStore#subpixel}): cuDNN's backward-data convolution on a GPU, our portable kernel otherwise.
     * Weights that are not a registered parameter (or whose kernel would be made while capturing) run as the
     * upsampling into scratch and the convolution, inside the same op. The bias goes to y's readers where the device
     * would spend a kernel of its own on it.
     */
    @Override
    protected void upsampleConvKernel(Tensor x, Tensor w, Tensor b, Tensor y) {
        String op = "upsampleConv2d";
        run(op, () -> {
            Precision type = dt();
            long px = in(x, op, type), pw = in(w, op, type), pb = in(b, op, type);
            int n = x.dim(0), h = x.dim(1), wd = x.dim(2), cin = x.dim(3), cout = w.dim(3);
            boolean registered = pw == parameters.peek(w.segment().address(), w.size() * Float.BYTES, type);
            long k = registered ? parameters.subpixel(w, type, cin, cout) : 0;
            long py = out(y, op, type);
            Supplier<String> wh = what(x, w, b, y);
            Device.Scratch scratch = (bytes, why) -> res().scratch((bytes + 3) / 4, why);
            boolean deferred = deferBias(device.convBiasSeparate(), y, pb, type);
            long wk = registered && device.convUsesKrsc() ? parameters.krsc(w, type, 9L * cin, cout) : 0;
            if (k != 0) {
                device.upsampleConv(px, pw, wk, k, deferred ? 0 : pb, py, n, h, wd, cin, cout, type, scratch, wh);
            } else {
                device.upsampleThenConv(px, pw, wk, deferred ? 0 : pb, py, n, h, wd, cin, cout, type, scratch, wh);
            }
        });
    }

    /**
     * One launch (cuDNN's conv + bias + z; the emulated device's portable kernel) where z is held in the pass's type
     * with no bias left pending on it; otherwise the convolution and then the residual add, which takes pending
     * biases on the fly.
     */
    @Override
    protected void convResidualKernel(Tensor x, Tensor w, Tensor b, Tensor z, int stride, int padding, Tensor y) {
        Precision type = dt();
        if (!residualFuses(device.convFusesResidual(), b, z, type)) {
            super.convResidualKernel(x, w, b, z, stride, padding, y);
            return;
        }
        fusedConv("conv2dResidual", x, w, b, z, stride, padding, y, type);
    }

    /**
     * Whether a convolution or GEMM takes the residual z in its launch: inside a pass (not resident blocks), on a
     * device that fuses ({@code deviceFuses}), with a bias, and z held in the pass's type with no bias pending on it.
     */
    private boolean residualFuses(boolean deviceFuses, Tensor b, Tensor z, Precision type) {
        return pass != null && !resident && b != null && deviceFuses && res().typeOf(z) == type
                && pass.pendingBias(z, type) == 0;
    }

    /**
     * Inside a pass on a device that fuses: the bias in the convolution's own launch (cuDNN's conv + bias with no
     * residual), never pending; otherwise {@link #convKernel}, which leaves it to the readers where it can.
     */
    @Override
    protected void convBiasedKernel(Tensor x, Tensor w, Tensor b, int stride, int padding, Tensor y) {
        if (pass == null || resident || b == null || !device.convFusesResidual()) {
            convKernel(x, w, b, stride, padding, y);
            return;
        }
        fusedConv("conv2d", x, w, b, null, stride, padding, y, dt());
    }

    /** Device.conv2dResidual on resolved tensors: y = conv(x, w) + b (+ z, unless null), one op named {@code op}. */
    private void fusedConv(String op, Tensor x, Tensor w, Tensor b, Tensor z, int stride, int padding, Tensor y,
                           Precision type) {
        run(op, () -> {
            long px = in(x, op, type), pw = in(w, op, type), pb = in(b, op, type), pz = in(z, op, type);
            long wk = krscOf(w, pw, type);
            long py = out(y, op, type);
            device.conv2dResidual(px, pw, wk, pb, pz, py, x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(1),
                    w.dim(3), stride, padding, type, (bytes, why) -> res().scratch((bytes + 3) / 4, why),
                    what(x, w, b, z, y));
        });
    }

    @Override
    protected void convBackwardKernel(Tensor x, Tensor w, Tensor dy, int stride, int padding, Tensor dx, Tensor dw,
                                      Tensor db) {
        // cuDNN's backward on a GPU (checked against our portable kernels on first use), the portable kernels otherwise.
        String op = "conv2dBackward";
        run(op, () -> {
            long px = in(x, op), pw = in(w, op), pdy = in(dy, op);
            long pdx = out(dx, op), pdw = inOut(dw, op), pdb = inOut(db, op);
            Supplier<String> wh = what(x, w, dy);
            device.conv2dBackward(px, pw, pdy, pdx, pdw, x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(1),
                    w.dim(3), stride, padding, (bytes, why) -> res().scratch((bytes + 3) / 4, why), wh);
            if (db != null) {
                int cout = w.dim(3);
                long sums = res().scratch(cout, "conv2dBackward bias sums");
                Device.check(onestep_sum_per_channel(pdy, sums, 1, dy.size() / cout, cout, stream()), op, wh);
                Device.check(onestep_axpy(1f, sums, pdb, cout, stream()), op, wh);
            }
        });
    }

    // ------------------------------------------------------------------------------------------------
    // Normalization, activations, attention
    // ------------------------------------------------------------------------------------------------

    @Override
    protected void groupNormKernel(Tensor x, Tensor add, Tensor gamma, Tensor beta, Tensor scale, Tensor shift,
                                   int groups, float eps, boolean silu, Tensor y, Tensor mean, Tensor rstd) {
        String op = silu ? "groupNormSilu" : "groupNorm";
        run(op, () -> {
            Precision type = dt();  // mean and rstd stay fp32
            // x and add may carry biases their producers left (a conv's, the time projection's): the kernel adds
            // them with add on the fly, (x + x_bias) + (add + add_bias), and never stores the sum.
            long[] x2 = inTakingBias(x, op, type), a2 = inTakingBias(add, op, type);
            long pg = in(gamma, op, type), pb = in(beta, op, type);
            long ps = in(scale, op, type), pt = in(shift, op, type);
            long py = out(y, op, type), pm = out(mean, op), pr = out(rstd, op);
            // With no terms to add, the library runs the plain group norm (the same kernels, the pre-add compiled out);
            // large shapes may run the slab kernel where the device's timed choice took it (Device#groupNormKernel).
            device.groupNorm(x2[0], x2[1], a2[0], a2[1], pg, pb, ps, pt, py, pm, pr, x.dim(0), x.dim(1) * x.dim(2),
                    x.dim(3), groups, eps, silu, type, what(x, add, y));
        });
    }

    /**
     * Whether folding passes run a ResnetBlock2D's norm and convolution as one op ({@link #fusesNormConv};
     * {@code -Donestep.cuda.fuseNormConv=false}: never, for timing the fusion against the two ops).
     */
    private boolean fuseNormConvs = !"false".equalsIgnoreCase(System.getProperty("onestep.cuda.fuseNormConv"));

    /** Turns {@link #fusesNormConv} on or off for passes captured from now on. */
    public void fuseNormConvs(boolean on) {
        fuseNormConvs = on;
    }

    /**
     * Where residuals fuse ({@link #fusesResidual}) on a device that runs our convolutions ({@link
     * Device#ownsConvolutions}); the device still times the fused route against the two ops, per shape.
     */
    @Override
    public boolean fusesNormConv() {
        return fuseNormConvs && fusesResidual() && device.ownsConvolutions();
    }

    /**
     * {@link Device#groupNormConv}: our convolution with the group norm as its prologue where the shape's timed choice
     * took it, else the two ops, each as {@link #groupNormKernel} and {@link #convKernel} / {@link #convResidualKernel}
     * would run it (pending biases taken on the fly, conv1's bias left to its reader where the device's convolution
     * has no bias epilogue). Outside such a pass, or with a residual the convolution cannot take in its launch: the
     * two ops themselves.
     */
    @Override
    protected void groupNormConvKernel(Tensor x, Tensor add, Tensor gamma, Tensor beta, int groups, float eps,
                                       boolean silu, Tensor g, Tensor mean, Tensor rstd, Tensor w, Tensor b, Tensor z,
                                       int stride, int padding, Tensor y) {
        Precision type = dt();
        if (!fusesNormConv() || (z != null && !residualFuses(device.convFusesResidual(), b, z, type))) {
            super.groupNormConvKernel(x, add, gamma, beta, groups, eps, silu, g, mean, rstd, w, b, z, stride, padding,
                    y);
            return;
        }
        String op = silu ? "groupNormSiluConv2d" : "groupNormConv2d";
        run(op, () -> {
            long[] x2 = inTakingBias(x, op, type), a2 = inTakingBias(add, op, type);
            long pgam = in(gamma, op, type), pbet = in(beta, op, type);
            long pw = in(w, op, type), pb = in(b, op, type), pz = in(z, op, type);
            long wk = krscOf(w, pw, type);
            long pg = out(g, op, type), pm = out(mean, op), pr = out(rstd, op), py = out(y, op, type);
            boolean deferred = z == null && deferBias(device.convBiasSeparate(), y, pb, type);
            device.groupNormConv(x2[0], x2[1], a2[0], a2[1], pgam, pbet, groups, eps, silu, pg, pm, pr, pw, wk,
                    deferred ? 0 : pb, pz, py, x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(1), w.dim(3),
                    stride, padding, type, (bytes, why) -> res().scratch((bytes + 3) / 4, why), what(x, add, w, z, y));
        });
    }

    /**
     * {@link Device#resnetBlock}: the whole block in one launch where the shape's timed choice took it, else the two
     * norm-convolution ops as {@link #groupNormConvKernel} runs them. Outside a pass that fuses them, for a shape the
     * kernel has no instance for ({@link Device#resnetBlockFits}), where conv2 cannot take the residual, or where x
     * carries a bias its producer left pending (the residual would need it added, which the ops apart do their own
     * way): the two ops themselves, each its own op.
     */
    @Override
    protected void resnetBlockKernel(Tensor x, Tensor add, Tensor gamma1, Tensor beta1, Tensor g1, Tensor mean1,
                                     Tensor rstd1, Tensor w1, Tensor b1, Tensor h, Tensor gamma2, Tensor beta2,
                                     Tensor g2, Tensor mean2, Tensor rstd2, Tensor w2, Tensor b2, int groups, float eps,
                                     Tensor y) {
        Precision type = dt();
        if (!fusesNormConv() || !device.fusesResnetBlocks()
                || !Device.resnetBlockFits(x.dim(1), x.dim(2), x.dim(3), groups, type)
                || !residualFuses(device.convFusesResidual(), b2, x, type) || pass.pendingBias(x, type) != 0) {
            super.resnetBlockKernel(x, add, gamma1, beta1, g1, mean1, rstd1, w1, b1, h, gamma2, beta2, g2, mean2, rstd2,
                    w2, b2, groups, eps, y);
            return;
        }
        String op = "resnetBlock2d";
        run(op, () -> {
            long px = in(x, op, type);
            long[] a2 = inTakingBias(add, op, type);
            long pg1 = in(gamma1, op, type), pb1n = in(beta1, op, type), pg2 = in(gamma2, op, type);
            long pb2n = in(beta2, op, type);
            long pw1 = in(w1, op, type), pw2 = in(w2, op, type), pb1 = in(b1, op, type), pb2 = in(b2, op, type);
            long wk1 = krscOf(w1, pw1, type), wk2 = krscOf(w2, pw2, type);
            long og1 = out(g1, op, type), om1 = out(mean1, op), or1 = out(rstd1, op), oh = out(h, op, type);
            long og2 = out(g2, op, type), om2 = out(mean2, op), or2 = out(rstd2, op), py = out(y, op, type);
            device.resnetBlock(px, a2[0], a2[1], pg1, pb1n, pw1, wk1, pb1, pg2, pb2n, pw2, wk2, pb2, og1, om1, or1,
                    oh, og2, om2, or2, py, x.dim(0), x.dim(1), x.dim(2), x.dim(3), groups, eps, type,
                    (bytes, why) -> res().scratch((bytes + 3) / 4, why), what(x, add, w1, w2, y));
        });
    }

    /**
     * {@link Device#resnetConcatBlock}: an up block's whole block in one launch where the shape's timed choice took it,
     * else the two norm-convolution ops as {@link #groupNormConcatConvKernel} and {@link #groupNormConvKernel} run them
     * (a's and b's pending biases taken on the fly either way). Outside a pass that fuses them, for a shape the kernel
     * has no instance for ({@link Device#resnetConcatBlockFits}) or where conv2 cannot take the residual: the two ops
     * themselves, each its own op.
     */
    @Override
    protected void resnetBlockConcatKernel(Tensor a, Tensor b, Tensor add, Tensor gamma1, Tensor beta1, Tensor cat,
                                           Tensor g1, Tensor mean1, Tensor rstd1, Tensor w1, Tensor b1, Tensor h,
                                           Tensor wShortcut, Tensor sc, Tensor gamma2, Tensor beta2, Tensor g2,
                                           Tensor mean2, Tensor rstd2, Tensor w2, Tensor b2, int groups, float eps,
                                           Tensor y) {
        Precision type = dt();
        // conv2's residual is sc, which this op writes in type with no pending bias: residualFuses' other conditions.
        if (!fusesNormConv() || !device.fusesResnetBlocks() || pass == null || resident || b2 == null
                || !device.convFusesResidual()
                || !Device.resnetConcatBlockFits(a.dim(1), a.dim(2), a.dim(3), b.dim(3), y.dim(3), groups, type)) {
            super.resnetBlockConcatKernel(a, b, add, gamma1, beta1, cat, g1, mean1, rstd1, w1, b1, h, wShortcut, sc,
                    gamma2, beta2, g2, mean2, rstd2, w2, b2, groups, eps, y);
            return;
        }
        String op = "resnetBlock2dConcat";
        run(op, () -> {
            long[] pa = inTakingBias(a, op, type), pb = inTakingBias(b, op, type), pt = inTakingBias(add, op, type);
            long pg1 = in(gamma1, op, type), pb1n = in(beta1, op, type), pg2 = in(gamma2, op, type);
            long pb2n = in(beta2, op, type);
            long pw1 = in(w1, op, type), pws = in(wShortcut, op, type), pw2 = in(w2, op, type);
            long pb1 = in(b1, op, type), pb2 = in(b2, op, type);
            long wk1 = krscOf(w1, pw1, type), wks = krscOf(wShortcut, pws, type), wk2 = krscOf(w2, pw2, type);
            long oc = out(cat, op, type), og1 = out(g1, op, type), om1 = out(mean1, op), or1 = out(rstd1, op);
            long oh = out(h, op, type), osc = out(sc, op, type), og2 = out(g2, op, type), om2 = out(mean2, op);
            long or2 = out(rstd2, op), py = out(y, op, type);
            device.resnetConcatBlock(new Device.ConcatResnetOp(pa[0], pa[1], pb[0], pb[1], pt[0], pt[1], pg1, pb1n, pw1,
                    wk1, pb1, pws, wks, pg2, pb2n, pw2, wk2, pb2, oc, og1, om1, or1, oh, osc, og2, om2, or2, py,
                    a.dim(0), a.dim(1), a.dim(2), a.dim(3), b.dim(3), y.dim(3), groups, eps, type,
                    (bytes, why) -> res().scratch((bytes + 3) / 4, why), what(a, b, add, w1, w2, y)));
        });
    }

    /**
     * {@link Device#groupNormConvShortcut}: one launch of our convolution, conv1 with the group norm as its prologue and
     * the 1x1 shortcut by its other blocks, where the shape's timed choice took it; else the group norm, conv1 and the
     * shortcut. Outside such a pass, or where x carries a bias its producer left pending (the ops apart take it their
     * own way): those ops themselves.
     */
    @Override
    protected void groupNormConvShortcutKernel(Tensor x, Tensor gamma, Tensor beta, int groups, float eps,
                                               boolean silu, Tensor g, Tensor mean, Tensor rstd, Tensor w, Tensor b,
                                               int padding, Tensor y, Tensor wShortcut, Tensor sc) {
        Precision type = dt();
        if (!fusesNormConv() || pass == null || pass.pendingBias(x, type) != 0) {
            super.groupNormConvShortcutKernel(x, gamma, beta, groups, eps, silu, g, mean, rstd, w, b, padding, y,
                    wShortcut, sc);
            return;
        }
        String op = silu ? "groupNormSiluConvShortcut2d" : "groupNormConvShortcut2d";
        run(op, () -> {
            long px = in(x, op, type), pgam = in(gamma, op, type), pbet = in(beta, op, type);
            long pw = in(w, op, type), pb = in(b, op, type), pws = in(wShortcut, op, type);
            long wk = krscOf(w, pw, type), wsk = krscOf(wShortcut, pws, type);
            long pg = out(g, op, type), pm = out(mean, op), pr = out(rstd, op);
            long py = out(y, op, type), psc = out(sc, op, type);
            boolean deferred = deferBias(device.convBiasSeparate(), y, pb, type);
            device.groupNormConvShortcut(px, pgam, pbet, groups, eps, silu, pg, pm, pr, pw, wk, deferred ? 0 : pb,
                    pws, wsk, py, psc, x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(1), w.dim(3), 1, padding,
                    type, (bytes, why) -> res().scratch((bytes + 3) / 4, why), what(x, w, wShortcut, y));
        });
    }

    /**
     * {@link Device#groupNormConcatConv}: one launch of our convolution, conv1 with the group norm as its prologue and
     * the shortcut by its other blocks, both gathering the concatenation from a and b (their pending biases taken on
     * the fly), where the shape's timed choice took it; else the group norm writing cat and g, and the two
     * convolutions. Outside such a pass: those ops themselves.
     */
    @Override
    protected void groupNormConcatConvKernel(Tensor a, Tensor b, Tensor gamma, Tensor beta, int groups, float eps,
                                             boolean silu, Tensor cat, Tensor g, Tensor mean, Tensor rstd, Tensor w,
                                             Tensor b1, int stride, int padding, Tensor y, Tensor wShortcut,
                                             Tensor sc) {
        if (!fusesNormConv()) {
            super.groupNormConcatConvKernel(a, b, gamma, beta, groups, eps, silu, cat, g, mean, rstd, w, b1, stride,
                    padding, y, wShortcut, sc);
            return;
        }
        Precision type = dt();
        String op = silu ? "groupNormSiluConcatConv2d" : "groupNormConcatConv2d";
        run(op, () -> {
            long[] a2 = inTakingBias(a, op, type), b2 = inTakingBias(b, op, type);
            long pgam = in(gamma, op, type), pbet = in(beta, op, type);
            long pw = in(w, op, type), pb = in(b1, op, type), pws = in(wShortcut, op, type);
            long wk = krscOf(w, pw, type), wsk = wShortcut == null ? 0 : krscOf(wShortcut, pws, type);
            long pc = out(cat, op, type), pg = out(g, op, type), pm = out(mean, op), pr = out(rstd, op);
            long py = out(y, op, type), psc = out(sc, op, type);
            boolean deferred = deferBias(device.convBiasSeparate(), y, pb, type);
            device.groupNormConcatConv(a2[0], a2[1], b2[0], b2[1], pgam, pbet, groups, eps, silu, pc, pg, pm, pr, pw,
                    wk, deferred ? 0 : pb, pws, wsk, py, psc, a.dim(0), a.dim(1), a.dim(2), a.dim(3), b.dim(3),
                    w.dim(0), w.dim(1), w.dim(3), stride, padding, type,
                    (bytes, why) -> res().scratch((bytes + 3) / 4, why), what(a, b, w, y));
        });
    }

    /**
     * The kept KRSC copy of convolution weights w (device copy pw; or a linear's (in, out) weights, whose copy is
     * [out][in], a 1x1 convolution's) where the device reads KRSC, else 0: a registered
     * parameter's ({@link ParameterStore#krsc}), or inside a pass a constant's, such as weights the pass's folding
     * computed (the attention's packed q/k/v projection; {@link Residency#krscOfConstant}).
     */
    private long krscOf(Tensor w, long pw, Precision type) {
        if (!device.convUsesKrsc()) {
            return 0;
        }
        // HWIO convolution weights (KH, KW, Cin, Cout) or a linear's (in, out): rows of Cout (out) values either way.
        int cols = w.dim(w.rank() - 1);
        long rows = w.size() / cols;
        if (pw == parameters.peek(w.segment().address(), w.size() * Float.BYTES, type)) {
            return parameters.krsc(w, type, rows, cols);
        }
        return pass != null ? pass.krscOfConstant(w, type, rows, cols, "conv2d") : 0;
    }

    @Override
    protected void groupNormConcatKernel(Tensor a, Tensor b, Tensor gamma, Tensor beta, int groups, float eps,
                                         boolean silu, Tensor cat, Tensor y, Tensor mean, Tensor rstd) {
        String op = silu ? "groupNormSiluConcat" : "groupNormConcat";
        run(op, () -> {
            Precision type = dt();
            // a and b may carry the biases their producers left (the upsampler's conv, conv_in's): added and rounded
            // once as the concat kernel does, so cat holds the bits concatChannels would have stored.
            long[] a2 = inTakingBias(a, op, type), b2 = inTakingBias(b, op, type);
            long pg = in(gamma, op, type), pb = in(beta, op, type);
            long pc = out(cat, op, type), py = out(y, op, type), pm = out(mean, op), pr = out(rstd, op);
            // Small shapes may run the cluster kernel where the device's timed choice took it
            // (Device#groupNormConcatKernel).
            device.groupNormConcat(a2[0], a2[1], b2[0], b2[1], pg, pb, pc, py, pm, pr, a.dim(0), a.dim(1) * a.dim(2),
                    a.dim(3), b.dim(3), groups, eps, silu, type, what(a, b, cat));
        });
    }

    @Override
    protected void groupNormBackwardKernel(Tensor x, Tensor gamma, Tensor beta, Tensor scale, Tensor shift, int groups,
                                           boolean silu, Tensor mean, Tensor rstd, Tensor dy, Tensor dx,
                                           Tensor dgamma, Tensor dbeta, Tensor dscale, Tensor dshift) {
        // The kernel wants every gradient buffer; optional ones (null here) stay on the host path.
        if (dx == null || dgamma == null || dbeta == null || (scale != null && (dscale == null || dshift == null))) {
            hostOnly("groupNormBackward", () -> host.groupNormBackward(x, gamma, beta, scale, shift, groups, silu,
                    mean, rstd, dy, dx, dgamma, dbeta, dscale, dshift));
            return;
        }
        String op = silu ? "groupNormSiluBackward" : "groupNormBackward";
        run(op, () -> {
            long px = in(x, op), pg = in(gamma, op), pb = in(beta, op), ps = in(scale, op), pt = in(shift, op);
            long pm = in(mean, op), pr = in(rstd, op), pdy = in(dy, op);
            long pdx = out(dx, op), pdg = inOut(dgamma, op), pdb = inOut(dbeta, op);
            long pds = out(dscale, op), pdt = out(dshift, op);
            Device.check(onestep_groupnorm_backward(pdy, px, pm, pr, pg, pb, ps, pt, pdx, pdg, pdb, pds, pdt,
                    x.dim(0), x.dim(1) * x.dim(2), x.dim(3), groups, silu ? 1 : 0, stream()), op, what(x, dy));
        });
    }

    @Override
    protected void siluKernel(Tensor x, Tensor y) {
        run("silu", () -> {
            Precision type = dt();
            long px = in(x, "silu", type);
            Device.check(onestep_silu_forward_typed(px, out(y, "silu", type), x.size(), type.code, stream()), "silu",
                    what(x, y));
        });
    }

    @Override
    protected void siluBackwardKernel(Tensor x, Tensor dy, Tensor dx) {
        run("siluBackward", () -> {
            long px = in(x, "siluBackward"), pdy = in(dy, "siluBackward");
            Device.check(onestep_silu_backward(px, pdy, out(dx, "siluBackward"), x.size(), stream()), "siluBackward",
                    what(x, dy, dx));
        });
    }

    /**
     * The head dim our fused attention kernels run a head of {@code d} features at (kernels/src/attention.cu has 32,
     * 64 and 128): the next one up, the head zero-padded to it (zero features change no score and give zero output
     * columns; the softmax scale stays 1/sqrt(d)); 0 above 128, which runs on the host.
     */
    static int paddedHeadDim(int d) {
        return d <= 32 ? 32 : d <= 64 ? 64 : d <= 128 ? 128 : 0;
    }

    /** The softmax scale to pass the kernels: 0 (their own 1/sqrt(D)) when unpadded, else 1/sqrt(d). */
    private static float softmaxScale(int d, int dp) {
        return d == dp ? 0f : (float) (1.0 / Math.sqrt(d));
    }

    @Override
    protected void attentionKernel(Tensor q, Tensor k, Tensor v, int heads, Tensor o, Tensor lse) {
        int n = q.dim(0), t = q.dim(1), d = q.dim(2) / heads, dp = paddedHeadDim(d);
        if (dp == 0) {
            hostOnly("attention (head dim " + d + ")", () -> host.attention(q, k, v, heads, o, lse));
            return;
        }
        run("attention", () -> {
            String op = "attention";
            Precision type = dt();  // lse stays fp32
            int c = type.code;
            Supplier<String> w0 = what(q, o, lse);
            if (d == dp) {
                // Heads of 32, 64 or 128 features: the kernel reads and writes the engine's (N, T, H*D) tokens in
                // place (one launch; the same bits as the split/attend/merge below), and adds the biases the q, k,
                // v projections left pending as it reads them (the bits of adding them first).
                long[] q2 = inTakingBias(q, op, type), k2 = inTakingBias(k, op, type), v2 = inTakingBias(v, op, type);
                long po = out(o, op, type), pl = out(lse, op);
                Device.check(onestep_attention_forward_tokens_biased_typed(q2[0], q2[1], k2[0], k2[1], v2[0], v2[1], po,
                        pl, n, heads, t, t, d, 0L, 0f, c, stream()), op, w0);  // a 0 bias: none added
                return;
            }
            long pq = in(q, op, type), pk = in(k, op, type), pv = in(v, op, type);
            long po = out(o, op, type), pl = out(lse, op);
            long size = (long) n * heads * t * dp;
            // Padded heads: the kernel takes (B, H, T, Dp); split the tokens into zero-padded heads, attend, merge.
            long qh = res().scratch(size, type, "attention q heads"), kh = res().scratch(size, type, "attention k heads");
            long vh = res().scratch(size, type, "attention v heads"), oh = res().scratch(size, type, "attention o heads");
            Supplier<String> w = what(q, o, lse);
            Device.check(onestep_split_heads_padded_typed(pq, qh, n, t, heads, d, dp, c, stream()), op, w);
            Device.check(onestep_split_heads_padded_typed(pk, kh, n, t, heads, d, dp, c, stream()), op, w);
            Device.check(onestep_split_heads_padded_typed(pv, vh, n, t, heads, d, dp, c, stream()), op, w);
            Device.check(onestep_attention_forward_typed(qh, kh, vh, oh, pl, n, heads, t, t, dp, 0L,
                    softmaxScale(d, dp), c, stream()), op, w);
            Device.check(onestep_merge_heads_padded_typed(oh, po, n, t, heads, d, dp, c, stream()), op, w);
        });
    }

    @Override
    public boolean packsQkv(int headDim) {
        return paddedHeadDim(headDim) == headDim;
    }

    @Override
    protected void attentionPackedKernel(Tensor qkv, int heads, Tensor o, Tensor lse) {
        int n = qkv.dim(0), t = qkv.dim(1), d = qkv.dim(2) / 3 / heads;
        if (!packsQkv(d)) {
            // Padded heads read q, k and v as whole tensors: on the host in eager mode; a pass runs op by op.
            hostOnly("attentionPacked (head dim " + d + ")", () -> host.attentionPacked(qkv, heads, o, lse));
            return;
        }
        run("attention", () -> {
            String op = "attention";
            Precision type = dt();  // lse stays fp32
            // One packed projection's output and the bias its GEMM left pending (3C channels, in the same order).
            long[] p = inTakingBias(qkv, op, type);
            long po = out(o, op, type), pl = out(lse, op);
            device().attentionQkv(p[0], p[1], po, pl, n, heads, t, d, type, what(qkv, o, lse));  // a 0 bias: none
        });
    }

    /**
     * {@link Device#attentionResidual}: the attention, to_out's projection and the residual in one launch where the
     * shape's timed choice took it, else the attention and the linear with the residual (cuBLASLt's epilogue), as
     * {@link #attentionPackedKernel} and {@link #linearResidualKernel} run them. On a device that never fuses them
     * ({@link Device#fusesAttentionResidual}), outside a folding pass, for a head dim the packed attention lacks, or a
     * residual the linear cannot take in its launch: those two ops themselves (two ops, one node each).
     */
    @Override
    protected void attentionResidualKernel(Tensor qkv, int heads, Tensor o, Tensor lse, Tensor w, Tensor b, Tensor z,
                                           Tensor y, int rows, int in, int out) {
        int n = qkv.dim(0), t = qkv.dim(1), d = qkv.dim(2) / 3 / heads;
        Precision type = dt();
        if (!device.fusesAttentionResidual() || !packsQkv(d)
                || !residualFuses(device.linearFusesResidual(), b, z, type)) {
            super.attentionResidualKernel(qkv, heads, o, lse, w, b, z, y, rows, in, out);
            return;
        }
        String op = "attentionResidual";
        run(op, () -> {
            long[] p = inTakingBias(qkv, op, type);  // the packed projection and the bias its GEMM left pending
            long pw = in(w, op, type), pb = in(b, op, type), pz = in(z, op, type);
            long wk = krscOf(w, pw, type);
            long po = out(o, op, type), pl = out(lse, op), py = out(y, op, type);
            device.attentionResidual(p[0], p[1], po, pl, pw, wk, pb, pz, py, n, heads, t, d, type,
                    what(qkv, w, z, y));
        });
    }

    @Override
    protected void attentionBackwardKernel(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dO, int heads,
                                           Tensor dq, Tensor dk, Tensor dv) {
        int n = q.dim(0), t = q.dim(1), d = q.dim(2) / heads, dp = paddedHeadDim(d);
        if (dp == 0) {
            hostOnly("attentionBackward (head dim " + d + ")",
                    () -> host.attentionBackward(q, k, v, o, lse, dO, heads, dq, dk, dv));
            return;
        }
        String op = "attentionBackward";
        run(op, () -> {
            long pq = in(q, op), pk = in(k, op), pv = in(v, op), po = in(o, op), pl = in(lse, op), pdo = in(dO, op);
            long pdq = out(dq, op), pdk = out(dk, op), pdv = out(dv, op);
            long size = (long) n * heads * t * dp;
            int f32 = Precision.FP32.code;
            // As the forward: (N, T, H*D) tokens to (B, H, T, Dp) heads, the FlashAttention-2 backward, and back.
            long[] h = new long[8];
            String[] names = {"q", "k", "v", "o", "dO", "dq", "dk", "dv"};
            for (int i = 0; i < h.length; i++) {
                h[i] = res().scratch(size, "attentionBackward " + names[i] + " heads");
            }
            long delta = res().scratch((long) n * heads * t, "attentionBackward delta");
            Supplier<String> w = what(q, dO);
            long[] src = {pq, pk, pv, po, pdo};
            for (int i = 0; i < src.length; i++) {
                Device.check(onestep_split_heads_padded_typed(src[i], h[i], n, t, heads, d, dp, f32, stream()), op, w);
            }
            Device.check(onestep_attention_backward(h[0], h[1], h[2], h[3], h[4], pl, delta, h[5], h[6], h[7], n, heads,
                    t, t, dp, 0L, softmaxScale(d, dp), stream()), op, w);
            Device.check(onestep_merge_heads_padded_typed(h[5], pdq, n, t, heads, d, dp, f32, stream()), op, w);
            Device.check(onestep_merge_heads_padded_typed(h[6], pdk, n, t, heads, d, dp, f32, stream()), op, w);
            Device.check(onestep_merge_heads_padded_typed(h[7], pdv, n, t, heads, d, dp, f32, stream()), op, w);
        });
    }

    // ------------------------------------------------------------------------------------------------
    // Elementwise and data movement
    // ------------------------------------------------------------------------------------------------

    @Override
    protected void addKernel(Tensor a, Tensor b, Tensor y) {
        run("add", () -> {
            Precision type = elementwise(a, b);
            // A residual add takes the biases its operands' producers left (conv2's, the shortcut's, an attention
            // block's output projection) when both operands index channels alike; otherwise they are added first.
            boolean rows = a.rank() > 0 && b.rank() > 0 && a.dim(-1) == b.dim(-1);
            long[] a2 = rows ? inTakingBias(a, "add", type) : new long[] {in(a, "add", type), 0};
            long[] b2 = rows ? inTakingBias(b, "add", type) : new long[] {in(b, "add", type), 0};
            long py = out(y, "add", type);
            if (a2[1] == 0 && b2[1] == 0) {
                Device.check(onestep_add_typed(a2[0], b2[0], py, a.size(), type.code, stream()), "add", what(a, b, y));
            } else {
                int c = a.dim(-1);
                Device.check(onestep_add_biased_typed(a2[0], a2[1], b2[0], b2[1], py, a.size() / c, c, type.code,
                        stream()), "add", what(a, b, y));
            }
        });
    }

    @Override
    protected void mulKernel(Tensor a, Tensor b, Tensor y) {
        run("mul", () -> {
            Precision type = elementwise(a, b);
            long pa = in(a, "mul", type), pb = in(b, "mul", type);
            Device.check(onestep_mul_typed(pa, pb, out(y, "mul", type), a.size(), type.code, stream()), "mul",
                    what(a, b, y));
        });
    }

    @Override
    protected void axpyKernel(float alpha, Tensor x, Tensor y) {
        run("axpy", () -> {
            Precision type = elementwise(x, y);
            long px = in(x, "axpy", type);
            Device.check(onestep_axpy_typed(alpha, px, inOut(y, "axpy", type), x.size(), type.code, stream()), "axpy",
                    what(x, y));
        });
    }

    @Override
    protected void axpbyKernel(float a, Tensor x, float b, Tensor z, Tensor y) {
        run("axpby", () -> {
            Precision type = elementwise(x, z);
            Precision zType = res().typeOf(z);
            if (type == Precision.FP32 && zType != null && zType != Precision.FP32 && res().typeOf(x) == type) {
                // The denoiser output c_skip x + c_out F, x fp32 and F the 16-bit network's output: F read in its
                // own type with the bias its last convolution left pending, in one launch (the bits of adding the
                // bias in place, converting F to fp32 and the fp32 axpby).
                long[] f = z.rank() > 0 ? inTakingBias(z, "axpby", zType) : new long[] {in(z, "axpby", zType), 0};
                long px = in(x, "axpby", type);
                Device.check(onestep_axpby_mixed_typed(a, px, b, f[0], f[1], f[1] == 0 ? 1 : z.dim(-1),
                        out(y, "axpby", type), x.size(), zType.code, stream()), "axpby", what(x, z, y));
                return;
            }
            long px = in(x, "axpby", type);
            long pz = in(z, "axpby", type);
            Device.check(onestep_axpby_typed(a, px, b, pz, out(y, "axpby", type), x.size(), type.code, stream()),
                    "axpby", what(x, z, y));
        });
    }

    @Override
    protected void scaleKernel(Tensor x, float alpha, Tensor y) {
        run("scale", () -> {
            Precision type = elementwise(x);
            long px = in(x, "scale", type);
            Device.check(onestep_scale_typed(alpha, px, out(y, "scale", type), x.size(), type.code, stream()), "scale",
                    what(x, y));
        });
    }

    /**
     * In a 16-bit pass, an fp32 x scaled straight into the pass's type ({@code onestep_convert_scaled}: the bits of
     * the fp32 scale and the conversion the network's first op would make, in one launch); otherwise scale.
     */
    @Override
    protected void scaleNetworkInputKernel(Tensor x, float alpha, Tensor y) {
        Precision type = dt();
        if (pass == null || resident || type == Precision.FP32 || res().typeOf(x) != Precision.FP32) {
            scaleKernel(x, alpha, y);
            return;
        }
        run("scale", () -> {
            long px = in(x, "scale", Precision.FP32);
            Device.check(onestep_convert_scaled(alpha, px, Precision.FP32.code, out(y, "scale", type), type.code,
                    x.size(), stream()), "scale", what(x, y));
        });
    }

    @Override
    protected void addPerChannelKernel(Tensor x, Tensor v, Tensor y) {
        run("addPerChannel", () -> {
            int n = x.dim(0), c = x.dim(-1);
            Precision type = elementwise(x, v);
            long px = in(x, "addPerChannel", type), pv = in(v, "addPerChannel", type);
            Device.check(onestep_add_per_channel_typed(px, pv, out(y, "addPerChannel", type), n,
                    x.size() / ((long) n * c), c, type.code, stream()), "addPerChannel", what(x, v, y));
        });
    }

    @Override
    protected void sumPerChannelKernel(Tensor dy, Tensor dv) {
        run("sumPerChannel", () -> {
            int n = dy.dim(0), c = dy.dim(-1);
            long pdy = in(dy, "sumPerChannel");
            Device.check(onestep_sum_per_channel(pdy, out(dv, "sumPerChannel"), n, dy.size() / ((long) n * c), c,
                    stream()), "sumPerChannel", what(dy, dv));
        });
    }

    @Override
    protected void concatChannelsKernel(Tensor a, Tensor b, Tensor y) {
        run("concatChannels", () -> {
            Precision type = dt();
            // A skip connection takes the bias its conv left (conv_in's, a sampler's): rounded once, as its own
            // bias kernel would have rounded it, so the same bits in every type.
            long[] a2 = inTakingBias(a, "concatChannels", type), b2 = inTakingBias(b, "concatChannels", type);
            long py = out(y, "concatChannels", type);
            long rows = (long) a.dim(0) * a.dim(1) * a.dim(2);
            // Without biases the library runs the plain concat kernel.
            Device.check(onestep_concat_channels_biased_typed(a2[0], a2[1], b2[0], b2[1], py, rows, a.dim(3), b.dim(3),
                    type.code, stream()), "concatChannels", what(a, b, y));
        });
    }

    @Override
    protected void splitChannelsKernel(Tensor dy, Tensor da, Tensor db) {
        run("splitChannels", () -> {
            long pdy = in(dy, "splitChannels");
            long rows = (long) da.dim(0) * da.dim(1) * da.dim(2);
            long pa = out(da, "splitChannels"), pb = out(db, "splitChannels");
            Device.check(onestep_split_channels(pdy, pa, pb, rows, da.dim(3), db.dim(3), stream()), "splitChannels",
                    what(dy, da, db));
        });
    }

    @Override
    protected void upsampleKernel(Tensor x, Tensor y) {
        run("upsampleNearest2x", () -> {
            Precision type = dt();
            long px = in(x, "upsampleNearest2x", type);
            Device.check(onestep_upsample_nearest2x_typed(px, out(y, "upsampleNearest2x", type), x.dim(0), x.dim(1),
                    x.dim(2), x.dim(3), type.code, stream()), "upsampleNearest2x", what(x, y));
        });
    }

    @Override
    protected void upsampleBackwardKernel(Tensor dy, Tensor dx) {
        String op = "upsampleNearest2xBackward";
        run(op, () -> {
            long pdy = in(dy, op);
            Device.check(onestep_upsample_nearest2x_backward(pdy, out(dx, op), dx.dim(0), dx.dim(1), dx.dim(2),
                    dx.dim(3), stream()), op, what(dy, dx));
        });
    }

    // ------------------------------------------------------------------------------------------------
    // Losses, embeddings, optimizers
    // ------------------------------------------------------------------------------------------------

    @Override
    protected double mseLossKernel(Tensor pred, Tensor target, Tensor weights, Tensor dpred) {
        return deviceLoss("mseLoss", pred, target, weights, 0f, dpred);
    }

    @Override
    protected double pseudoHuberLossKernel(Tensor pred, Tensor target, Tensor weights, float c, Tensor dpred) {
        return deviceLoss("pseudoHuberLoss", pred, target, weights, c, dpred);
    }

    /**
     * The losses of {@link Ops#mseLoss} and {@link Ops#pseudoHuberLoss} ({@code huberC > 0}): the device sums each
     * sample's squared distance s_b in double (onestep_row_sq_dist); the host forms the loss and each sample's
     * gradient coefficient, as NaiveNorm writes them (MSE: L = mean_b w_b s_b / D, dpred = 2 w_b (pred - target) /
     * (N D); pseudo-Huber: L = mean_b w_b s_b / (sqrt(s_b + c^2) + c), dpred = w_b (pred - target) / (N sqrt(s_b +
     * c^2))); the device writes dpred (onestep_row_scaled_diff). Eager only: the loss is a host value.
     */
    private double deviceLoss(String op, Tensor pred, Tensor target, Tensor weights, float huberC, Tensor dpred) {
        requireHostValuesAllowed(op);
        int n = pred.dim(0);
        long d = pred.size() / n;
        double[] loss = new double[1];
        run(op, () -> {
            long pp = in(pred, op), pt = in(target, op);
            Supplier<String> w = what(pred, target);
            long sums = res().scratch(2L * n, op + " per-sample sums");
            Device.check(onestep_row_sq_dist(pp, pt, sums, n, d, stream()), op, w);
            double[] s = downloadDoubles(sums, n, w);
            float[] wt = weights == null ? null : hostValues(weights, op);
            float[] coef = new float[n];
            double total = 0;
            for (int b = 0; b < n; b++) {
                double wb = wt == null ? 1 : wt[b];
                if (huberC == 0f) {
                    total += wb * s[b] / d;
                    coef[b] = (float) (2 * wb / ((double) n * d));
                } else {
                    double norm = Math.sqrt(s[b] + (double) huberC * huberC);
                    total += wb * s[b] / (norm + huberC);
                    coef[b] = (float) (wb / (n * norm));
                }
            }
            loss[0] = total / n;
            if (dpred != null) {
                long pc = res().scratch(n, op + " coefficients");
                try (java.lang.foreign.Arena a = java.lang.foreign.Arena.ofConfined()) {
                    MemorySegment hc = a.allocate((long) n * Float.BYTES);
                    MemorySegment.copy(coef, 0, hc, java.lang.foreign.ValueLayout.JAVA_FLOAT, 0, n);
                    device.upload(pc, hc, (long) n * Float.BYTES, w);
                }
                Device.check(onestep_row_scaled_diff(pp, pt, pc, out(dpred, op), n, d, stream()), op, w);
            }
        });
        return loss[0];
    }

    /**
     * Where an op of the current pass wrote {@code t}, or {@code t} is owned training state an op changed, the
     * check runs on the device: the sum of squares, in double,
     * of float elements is finite exactly when every element is (the largest float squared is about 1e77).
     */
    @Override
    protected boolean allFinite(Tensor t) {
        if (!res().holdsWritten(t)) {
            return t.allFinite();
        }
        return Double.isFinite(sumOfSquaresKernel(t));
    }

    /**
     * {@code t}'s values: from the host, or from the device where an op of the current block wrote them (or an op
     * changed owned training state).
     */
    private float[] hostValues(Tensor t, String op) {
        if (!res().holdsWritten(t)) {
            return t.toArray();
        }
        long src = in(t, op);
        try (java.lang.foreign.Arena a = java.lang.foreign.Arena.ofConfined()) {
            MemorySegment h = a.allocate(t.size() * Float.BYTES);
            device.download(h, src, t.size() * Float.BYTES, what(t));
            return h.toArray(java.lang.foreign.ValueLayout.JAVA_FLOAT);
        }
    }

    /** An op that returns a value to the host: eagerly or in a resident block, never inside a (capturable) pass. */
    private void requireHostValuesAllowed(String op) {
        if (pass != null && !resident) {
            throw new NoDeviceKernel(op + ": returns its value to the host, so it cannot run inside a device pass");
        }
    }

    /** {@code count} doubles from the device (waits for the stream). */
    private double[] downloadDoubles(long src, int count, Supplier<String> what) {
        try (java.lang.foreign.Arena a = java.lang.foreign.Arena.ofConfined()) {
            MemorySegment h = a.allocate((long) count * Double.BYTES);
            device.download(h, src, (long) count * Double.BYTES, what);
            return h.toArray(java.lang.foreign.ValueLayout.JAVA_DOUBLE);
        }
    }

    @Override
    protected void sinusoidalEmbeddingKernel(Tensor t, boolean flipSinToCos, float downscaleFreqShift, float scale,
                                             float maxPeriod, Tensor y) {
        run("sinusoidalEmbedding", () -> {
            Precision type = dt();  // the noise level t stays fp32
            long pt = in(t, "sinusoidalEmbedding");
            Device.check(onestep_sinusoidal_embedding_typed(pt, out(y, "sinusoidalEmbedding", type), y.dim(0),
                    y.dim(1), flipSinToCos ? 1 : 0, downscaleFreqShift, scale, maxPeriod, type.code, stream()),
                    "sinusoidalEmbedding", what(t, y));
        });
    }

    @Override
    protected void fourierEmbeddingKernel(Tensor t, Tensor weight, boolean log, boolean flipSinToCos, Tensor y) {
        run("fourierEmbedding", () -> {
            Precision type = dt();  // t and the frequencies stay fp32
            long pt = in(t, "fourierEmbedding"), pw = in(weight, "fourierEmbedding");
            Device.check(onestep_fourier_embedding_typed(pt, pw, out(y, "fourierEmbedding", type), t.dim(0),
                    weight.dim(0), log ? 1 : 0, flipSinToCos ? 1 : 0, type.code, stream()), "fourierEmbedding",
                    what(t, weight, y));
        });
    }

    @Override
    protected void adamStepKernel(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2,
                                  float eps, float weightDecay, boolean decoupled) {
        optimizerStep("adamStep", p, g, m, v, beta1, beta2, eps,
                AdamUpdate.adam(t, lr, beta1, beta2, weightDecay, decoupled));
    }

    @Override
    protected void radamStepKernel(Tensor p, Tensor g, Tensor m, Tensor v, int t, float lr, float beta1, float beta2,
                                   float eps, float weightDecay, boolean decoupled) {
        optimizerStep("radamStep", p, g, m, v, beta1, beta2, eps,
                AdamUpdate.radam(t, lr, beta1, beta2, weightDecay, decoupled));
    }

    /** {@link AdamUpdate}'s per-element update by onestep_adam_step, the same float operations as the CPU's. */
    private void optimizerStep(String op, Tensor p, Tensor g, Tensor m, Tensor v, float beta1, float beta2, float eps,
                               AdamUpdate u) {
        eagerUpdate(op);
        run(op, () -> {
            long pg = in(g, op);
            Device.check(onestep_adam_step(inOut(p, op), pg, inOut(m, op), inOut(v, op), p.size(), beta1, beta2,
                    u.vScale(), eps, u.step(), u.l2(), u.decay(), u.adaptive() ? 1 : 0, stream()), op, what(p, g));
        });
        afterUpdate(p);
    }

    /**
     * Parameter updates run eagerly, never inside a pass: a pass may have captured the old values as constants,
     * and the host copy must hold the new ones when the op returns (unless the device owns the tensor).
     */
    private void eagerUpdate(String op) {
        if (pass != null) {
            throw new NoDeviceKernel(op + ": parameter updates do not run inside a device pass");
        }
    }

    /**
     * After an eager update of {@code t} on the device (its host copy is already current and a registered
     * parameter's device copy was refreshed by the download, or the device owns it and graphs read it in place):
     * a graph may hold any other {@code t} as a constant, so every graph is dropped then.
     */
    private void afterUpdate(Tensor t) {
        if (!parameters.touches(t.segment().address(), t.size() * Float.BYTES) && !parameters.owned.owns(t)) {
            forgetCapturedPasses();
        }
    }

    /** Chunk of onestep_sum_squares: the partials (one double per 16,384 floats) are added in order on the host. */
    private static final long SUM_SQUARES_CHUNK = 1 << 14;

    @Override
    protected double sumOfSquaresKernel(Tensor x) {
        return sumOfSquaresKernel(java.util.List.of(x));  // the same double: its partials added in order
    }

    /**
     * All the tensors' partial sums in one scratch buffer and one copy back (op by op: in groups that fit half the
     * eager arena, since each group's inputs are uploaded together); added per tensor, then in order.
     */
    @Override
    protected double sumOfSquaresKernel(java.util.List<Tensor> xs) {
        requireHostValuesAllowed("sumOfSquares");
        double[] perTensor = new double[xs.size()];
        for (int from = 0, to; from < xs.size(); from = to) {
            long bytes = 0;
            to = from;
            do {
                bytes += xs.get(to).size() * Float.BYTES;
                to++;
            } while (to < xs.size() && (pass != null || bytes + xs.get(to).size() * Float.BYTES <= arenaBytes / 2));
            sumOfSquaresGroup(xs.subList(from, to), perTensor, from);
        }
        double total = 0;
        for (double v : perTensor) {
            total += v;
        }
        return total;
    }

    private void sumOfSquaresGroup(java.util.List<Tensor> xs, double[] perTensor, int offset) {
        int[] first = new int[xs.size() + 1];
        for (int i = 0; i < xs.size(); i++) {
            long n = xs.get(i).size();
            first[i + 1] = first[i] + (int) ((n + SUM_SQUARES_CHUNK - 1) / SUM_SQUARES_CHUNK);
        }
        int parts = first[xs.size()];
        if (parts == 0) {
            return;
        }
        run("sumOfSquares", () -> {
            long partials = res().scratch(2L * parts, "sumOfSquares partials");
            for (int i = 0; i < xs.size(); i++) {
                Tensor x = xs.get(i);
                if (x.size() > 0) {
                    Device.check(onestep_sum_squares(in(x, "sumOfSquares"), x.size(), SUM_SQUARES_CHUNK,
                            partials + (long) first[i] * Double.BYTES, stream()), "sumOfSquares", what(x));
                }
            }
            double[] v = downloadDoubles(partials, parts, () -> xs.size() + " tensors");
            for (int i = 0; i < xs.size(); i++) {
                double s = 0;  // as sumOfSquaresKernel(Tensor) adds one tensor's partials
                for (int j = first[i]; j < first[i + 1]; j++) {
                    s += v[j];
                }
                perTensor[offset + i] = s;
            }
        });
    }

    @Override
    protected void emaKernel(Tensor target, Tensor source, float mu) {
        eagerUpdate("ema");
        // fmaf(mu, target, (1 - mu) source): the CPU backend's rounding (CpuOptim.ema), as axpby(1 - mu, source, mu, target).
        run("ema", () -> {
            long ps = in(source, "ema");
            long pt = inOut(target, "ema");
            Device.check(onestep_axpby(1f - mu, ps, mu, pt, pt, target.size(), stream()), "ema", what(target, source));
        });
        afterUpdate(target);
    }

    @Override
    protected void zeroKernel(Tensor t) {
        run("zero", () -> Device.check(onestep_memset(out(t, "zero"), 0, t.size() * Float.BYTES, stream()), "zero",
                what(t)));
    }

    /** An op the device cannot run inside a pass; the pass then runs op by op. */
    static final class NoDeviceKernel extends CudaException {
        NoDeviceKernel(String message) {
            super(message);
        }
    }
}
