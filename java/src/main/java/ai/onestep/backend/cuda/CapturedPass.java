package ai.onestep.backend.cuda;

import ai.onestep.tensor.Tensor;

/**
 * One pass (for example one denoiser call: U-Net forward plus the consistency combination) captured as a CUDA
 * graph for one key: the caller's key (which carries every scalar baked into the launches, such as the time point)
 * plus the input and output shapes.
 *
 * <p>{@link #measure} runs a key's first call on the device in shared arenas and reports the bytes it needed. The
 * second call builds a CapturedPass with arenas of exactly that size, runs the pass in them (the warm-up: it
 * uploads every constant, such as the weights, and fixes the activations' layout) and returns that result; it then
 * rewinds the activations arena, binds the inputs and outputs to the same addresses, and runs the pass again under
 * stream capture: nothing executes, every launch and device copy is recorded. Later calls copy the inputs in,
 * launch the graph once, and copy the outputs out.
 *
 * <p>Constants are uploaded once: a graph keeps using the weights it was captured with (see
 * {@link CudaOps#forgetCapturedPasses()}).
 */
final class CapturedPass implements AutoCloseable {
    private final Device device;
    private final String key;
    private final DeviceArena constants;
    private final DeviceArena activations;
    private final Residency residency;
    private long graph;
    private long[] inDev;
    private long[] outDev;
    private long capturedOps;

    /** A pass whose arenas hold exactly what {@link #measure} found it needs. */
    CapturedPass(Device device, ParameterStore parameters, String key, long constantsBytes, long activationsBytes) {
        this.device = device;
        this.key = key;
        this.constants = new DeviceArena(device, "pass constants", Math.max(DeviceArena.ALIGN, constantsBytes));
        DeviceArena a;
        try {
            a = new DeviceArena(device, "pass activations", Math.max(DeviceArena.ALIGN, activationsBytes));
        } catch (RuntimeException e) {
            constants.close();
            throw e;
        }
        this.activations = a;
        this.residency = new Residency(device, parameters, constants, activations);
    }

    /**
     * Runs the pass once on the device in the shared measuring arenas (rewound first) and returns the bytes of
     * constants and of activations it used; its results land in {@code outputs}.
     */
    static long[] measure(CudaOps ops, Device device, ParameterStore parameters, DeviceArena constants,
                          DeviceArena activations, Tensor[] inputs, Tensor[] outputs, Runnable body) {
        constants.reset();
        activations.reset();
        Residency r = new Residency(device, parameters, constants, activations);
        for (Tensor t : inputs) {
            long d = r.bind(t, "pass input");
            device.upload(d, t.segment(), t.size() * Float.BYTES, () -> "pass input " + t.describe());
        }
        for (Tensor t : outputs) {
            r.bind(t, "pass output");
        }
        runAndDownload(ops, device, r, outputs, body);
        return new long[] {constants.used(), activations.used()};
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
        residency.capturing(true);
        device.beginCapture();
        ops.enterPass(residency);
        boolean ended = false;
        try {
            body.run();
            graph = device.endCapture();
            ended = true;
        } finally {
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
    }

    void replay(Tensor[] inputs, Tensor[] outputs) {
        for (int i = 0; i < inputs.length; i++) {
            Tensor t = inputs[i];
            device.upload(inDev[i], t.segment(), t.size() * Float.BYTES, () -> "pass input " + t.describe());
        }
        device.launchGraph(graph);
        device.synchronize();
        for (int i = 0; i < outputs.length; i++) {
            Tensor t = outputs[i];
            device.download(t.segment(), outDev[i], t.size() * Float.BYTES, () -> "pass output " + t.describe());
        }
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
    boolean valid() {
        return residency.hostConstantsAlive();
    }

    /** Kernels and copies in the graph (as the library counts them). */
    long graphNodes() {
        return device.graphNodes(graph);
    }

    /** Device ops the backend issued while capturing. */
    long capturedOps() {
        return capturedOps;
    }

    long deviceBytes() {
        return constants.highWater() + activations.highWater();
    }

    @Override
    public void close() {
        if (graph != 0) {
            device.destroyGraph(graph);
            graph = 0;
        }
        activations.close();
        constants.close();
    }
}
