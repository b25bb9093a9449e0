package ai.onestep.backend.cuda;

import ai.onestep.tensor.Tensor;

/**
 * One pass (for example one denoiser call: U-Net forward plus the consistency combination) captured as a CUDA
 * graph for one key: the caller's key (which carries every scalar baked into the launches, such as the time point)
 * plus the input and output shapes.
 *
 * <p>{@link #measure} runs a key's first call on the device in shared arenas and reports the bytes of constants it
 * needed and the {@link ActivationPlan} of its activations (each one's size and lifetime, placed so that tensors
 * never live at the same time share memory). The second call builds a CapturedPass with a constants arena of exactly
 * that size and its activations at the plan's offsets in the memory every captured pass shares
 * ({@link SharedActivations}), runs the pass there (the warm-up: it uploads every constant, such as the weights) and
 * returns that result; it then rewinds, binds the inputs and outputs to the same addresses, and runs the pass again
 * under stream capture: nothing executes, every launch and device copy is recorded. Later calls copy the inputs in,
 * launch the graph once, and copy the outputs out.
 *
 * <p>Constants are uploaded once: a graph keeps using the weights it was captured with (see
 * {@link CudaOps#forgetCapturedPasses()}).
 */
final class CapturedPass implements AutoCloseable {
    private final Device device;
    private final String key;
    private final DeviceArena constants;
    private final ActivationPlan plan;
    private final SharedActivations.Lease lease;
    private final Residency residency;
    private long graph;
    private long[] inDev;
    private long[] outDev;
    private long capturedOps;
    /** Host ranges (address to bytes) of the weights whose results this pass folded into constants. */
    private final java.util.Map<Long, Long> folded = new java.util.HashMap<>();
    /** The ops the capture issued, by name, in order of first use. */
    private final java.util.Map<String, Long> opCounts = new java.util.LinkedHashMap<>();
    /** Bias kernels the captured run left to readers that took them (none launched; see CudaOps.biasDeferrals). */
    private long biasKernelsSaved;

    long biasKernelsSaved() {
        return biasKernelsSaved;
    }

    /** What a pass's first run found it needs: bytes of constants, and where its activations go. */
    record Measured(long constantsBytes, ActivationPlan.Recorder record, boolean reuse) {
        /**
         * Where the activations go: computed on first use, i.e. when the key comes back to be captured (most keys
         * met once, such as a validation pass's, never do).
         */
        ActivationPlan plan() {
            return record.plan(reuse);
        }
    }

    /**
     * A pass with a constants arena of exactly what {@link #measure} found and its activations planned in
     * {@code shared}; {@code poison} (checking mode) fills each activation with NaN before the warm-up writes it.
     */
    CapturedPass(Device device, ParameterStore parameters, String key, Measured need, SharedActivations shared,
                 boolean poison) {
        this.device = device;
        this.key = key;
        this.plan = need.plan();
        this.constants = new DeviceArena(device, "pass constants", Math.max(DeviceArena.ALIGN, need.constantsBytes()));
        SharedActivations.Lease l;
        try {
            l = shared.acquire(plan.peak(), key);
        } catch (RuntimeException e) {
            constants.close();
            throw e;
        }
        this.lease = l;
        ActivationPlan.Planned activations = new ActivationPlan.Planned(device, plan, lease.base(), key);
        activations.poison(poison);
        this.residency = new Residency(device, parameters, constants, activations);
        residency.renewWholeWrites(plan.reuses());  // as the run the plan was recorded from
    }

    /**
     * Runs the pass once on the device in the shared measuring arenas (rewound first), recording its activations'
     * sizes and lifetimes, and returns what it needs: its constants' bytes and the plan of its activations (reusing
     * memory between tensors that never live at once, or with {@code reuse} false one after another, as the
     * measuring run had them). Its results land in {@code outputs}.
     */
    static Measured measure(CudaOps ops, Device device, ParameterStore parameters, DeviceArena constants,
                            DeviceArena activations, Tensor[] inputs, Tensor[] outputs, Runnable body, boolean reuse) {
        constants.reset();
        ActivationPlan.Recorder recorder = new ActivationPlan.Recorder(activations);
        recorder.reset();
        Residency r = new Residency(device, parameters, constants, recorder);
        r.renewWholeWrites(reuse);
        for (Tensor t : inputs) {
            long d = r.bind(t, "pass input");
            device.upload(d, t.segment(), t.size() * Float.BYTES, () -> "pass input " + t.describe());
        }
        for (Tensor t : outputs) {
            r.bind(t, "pass output");
        }
        runAndDownload(ops, device, r, outputs, body);
        return new Measured(constants.used(), recorder, reuse);
    }

    /** Runs the body with {@code r} as the pass's residency, waits for the device, and brings the outputs back. */
    private static void runAndDownload(CudaOps ops, Device device, Residency r, Tensor[] outputs, Runnable body) {
        ops.enterPass(r);
        try {
            body.run();
        } finally {
            ops.exitPass();
        }
        device.synchronize();
        for (Tensor t : outputs) {
            r.download(t, "pass output");
        }
    }

    /** Warm-up (its result lands in {@code outputs}), then capture. */
    void warmUpAndCapture(CudaOps ops, Tensor[] inputs, Tensor[] outputs, Runnable body) {
        bind(inputs, outputs);
        runAndDownload(ops, device, residency, outputs, body);

        residency.resetActivations();
        bind(inputs, outputs);
        long before = ops.deviceOps();
        long[] biasBefore = ops.biasDeferrals();
        residency.capturing(true);
        device.beginCapture();
        ops.enterPass(residency);
        ops.countOps(opCounts);
        boolean ended = false;
        try {
            body.run();
            graph = device.endCapture();
            ended = true;
        } finally {
            ops.countOps(null);
            ops.exitPass();
            residency.capturing(false);
            if (!ended) {
                try {
                    device.destroyGraph(device.endCapture());
                } catch (RuntimeException ignored) {
                    // the capture was already invalid; the original error is what matters
                }
            }
        }
        capturedOps = ops.deviceOps() - before;
        long[] biasAfter = ops.biasDeferrals();
        biasKernelsSaved = (biasAfter[0] - biasBefore[0]) - (biasAfter[1] - biasBefore[1]);
    }

    /**
     * Inputs in, the graph, outputs out, all queued on the stream in that order, then one wait, instead of a wait
     * after every copy and one after the graph (at batch 1 the waits are a visible part of a sample's latency). The
     * final wait also covers pinned host memory, whose copies CUDA would not wait for.
     */
    void replay(Tensor[] inputs, Tensor[] outputs) {
        for (int i = 0; i < inputs.length; i++) {
            Tensor t = inputs[i];
            device.uploadQueued(inDev[i], t.segment(), t.size() * Float.BYTES, () -> "pass input " + t.describe());
        }
        device.launchGraph(graph);
        for (int i = 0; i < outputs.length; i++) {
            Tensor t = outputs[i];
            device.downloadQueued(t.segment(), outDev[i], t.size() * Float.BYTES, () -> "pass output " + t.describe());
        }
        device.synchronize();
    }

    private void bind(Tensor[] inputs, Tensor[] outputs) {
        inDev = new long[inputs.length];
        outDev = new long[outputs.length];
        for (int i = 0; i < inputs.length; i++) {
            Tensor t = inputs[i];
            inDev[i] = residency.bind(t, "pass input");
            device.upload(inDev[i], t.segment(), t.size() * Float.BYTES, () -> "pass input " + t.describe());
        }
        for (int i = 0; i < outputs.length; i++) {
            outDev[i] = residency.bind(outputs[i], "pass output");
        }
    }

    String key() {
        return key;
    }

    /** False once the host memory of a constant or parameter it was captured from has been freed. */
    /** Records that this pass folded work on {@code reads} into its constants ({@link CudaOps#passConstants}). */
    void folded(java.util.List<Tensor> reads) {
        for (Tensor t : reads) {
            folded.merge(t.segment().address(), t.size() * Float.BYTES, Math::max);
        }
    }

    /** True when this pass folded work on weights that overlap host bytes {@code [addr, addr + bytes)}. */
    boolean foldedOn(long addr, long bytes) {
        for (var e : folded.entrySet()) {
            if (e.getKey() < addr + bytes && addr < e.getKey() + e.getValue()) {
                return true;
            }
        }
        return false;
    }

    boolean valid() {
        return residency.hostConstantsAlive();
    }

    /** Kernels and copies in the graph (as the library counts them). */
    long graphNodes() {
        return device.graphNodes(graph);
    }

    /** Device ops the backend issued while capturing. */
    java.util.Map<String, Long> opCounts() {
        return java.util.Collections.unmodifiableMap(opCounts);
    }

    long capturedOps() {
        return capturedOps;
    }

    /**
     * Device bytes of its own (constants), of its activations' plan (in the shared memory), and of a bump arena that
     * keeps every tensor at one address to the pass's end (how it ran before plans).
     */
    long[] memory() {
        return new long[] {constants.highWater(), plan.peak(), plan.bumpBytes()};
    }

    @Override
    public void close() {
        if (graph != 0) {
            device.destroyGraph(graph);
            graph = 0;
        }
        lease.close();
        constants.close();
    }
}
