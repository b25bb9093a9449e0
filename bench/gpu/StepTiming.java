import ai.onestep.api.Sampler;
import ai.onestep.backend.cuda.DeviceCheck;
import ai.onestep.diffusion.ConsistencyDenoiser;
import ai.onestep.diffusion.ConsistencySampler;
import ai.onestep.diffusion.Denoiser;
import ai.onestep.diffusion.EdmDenoiser;
import ai.onestep.diffusion.EdmSampler;
import ai.onestep.diffusion.KarrasSchedule;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.io.FileWriter;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * Times one sampling step of the engine on a backend, host to host (input on the host, output back on the host,
 * as {@code bin/onestep sample} sees it): for a student, its 1-step sample (one consistency evaluation at T = 80);
 * for a teacher, one denoiser evaluation (1 NFE, sigma 1.5) and one Heun step (2 NFE, from the first to the second
 * Karras noise level of an 18-level schedule, plus the update). Both with the denoisers' device passes (one
 * CUDA graph per noise level on the cuda backend, captured on the second call), at each batch size; median and
 * minimum of {@code --reps} calls after {@code --warmup}. With a backend other than cpu, batch 1's output is
 * compared with the cpu backend's (relative L2) and a difference over 5e-3 (TF32 in cuBLAS/cuDNN; fp16 passes)
 * or 3e-2 (bf16 passes) fails. {@code --precision fp16,fp32} times each pass precision in turn (cuda backends).
 *
 * <p>Not part of the engine: bench/gpu/run.sh compiles it against onestep.jar (no Maven module, so the GPU
 * machine needs only the jlink runtime). Exit status 1 on a failed comparison or a non-finite output.
 *
 * <pre>java -cp onestep.jar:classes StepTiming --backend cuda --batches 1,64 --jsonl out.jsonl MODEL...</pre>
 */
public final class StepTiming {
    private static final List<String> rows = new ArrayList<>();

    /** A table row: printed now too (prefixed "row:"), so a run stopped at its time cap still shows it. */
    private static void row(String line) {
        rows.add(line);
        System.out.println("row: " + line);
    }

    private static int failures;
    /** Only the first step of each model (the 1-step sample, the teacher's denoiser call): for a profiler. */
    private static boolean firstStepOnly;
    /**
     * Brackets each step's last timed run with cudaProfilerStart/Stop, so that a profiler started with its collection
     * off (ncu --profile-from-start off) sees that run's kernels alone: with warm-up, the captured graph's replay, not
     * the first call's timed choices and searches.
     */
    private static boolean profileLast;
    /** Also time each model's first step with constant folding off (CudaOps#foldConstants): the fold's gain. */
    private static boolean unfoldedToo;
    private static boolean variantsNow;

    public static void main(String[] args) throws IOException {
        String backend = "cpu", jsonl = null;
        String[] precisions = {null};  // null: the backend's default
        int reps = 30, warmup = 3;
        int[] batches = {1, 64};
        boolean compare = true, forceCompare = false;
        List<Path> models = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--backend" -> backend = args[++i];
                case "--batches" -> batches = Arrays.stream(args[++i].split(",")).mapToInt(Integer::parseInt).toArray();
                case "--reps" -> reps = Integer.parseInt(args[++i]);
                case "--warmup" -> warmup = Integer.parseInt(args[++i]);
                case "--jsonl" -> jsonl = args[++i];
                case "--library" -> System.setProperty("onestep.kernels.library", args[++i]);
                case "--no-compare" -> compare = false;
                case "--compare" -> forceCompare = true;
                case "--first-step-only" -> firstStepOnly = true;
                case "--profile-last" -> profileLast = true;
                case "--unfolded-too" -> unfoldedToo = true;
                case "--precision" -> precisions = args[++i].split(",");
                default -> models.add(Path.of(args[i]));
            }
        }
        if (models.isEmpty()) {
            System.err.println("usage: StepTiming [--backend B] [--batches 1,64] [--reps N] [--warmup N] [--jsonl F] "
                    + "[--library libonestep_kernels.so] [--precision fp16,bf16,fp32] [--no-compare | --compare] "
                    + "[--first-step-only] [--profile-last] [--unfolded-too] MODEL...   (--unfolded-too: the first step also without "
                    + "constant folding, without the residual fusions, and on a GPU with cuDNN's heuristics, in the "
                    + "first precision listed)");
            System.exit(2);
        }
        FileWriter out = jsonl == null ? null : new FileWriter(jsonl, true);
        for (String precision : precisions) {
            if (precision != null) {
                System.setProperty("onestep.cuda.precision", precision);
            }
            // The first step's variants (--unfolded-too) for the first precision listed only (run.sh: fp16, the
            // issue's target), so the other precisions' rows still fit the step's time cap on a GPU.
            variantsNow = unfoldedToo && precision == precisions[0];
            for (Path model : models) {
                try (Sampler s = Sampler.load(model, backend)) {
                    String device = s.ops() instanceof ai.onestep.backend.cuda.CudaOps c ? c.device().describe()
                            + ", passes in " + c.precision().label() : backend;
                    for (int n : batches) {
                        time(s, model, backend, device, n, reps, warmup,
                                forceCompare || compare && n == 1 && !backend.equals("cpu"), out);
                    }
                }
            }
        }
        if (out != null) {
            out.close();
        }
        System.out.printf("%n%-56s %6s %12s %12s %10s%n", "engine step (" + backend + ")", "batch", "median us",
                "min us", "img/s");
        rows.forEach(System.out::println);
        System.out.println("StepTiming: " + (failures == 0 ? "ok" : failures + " FAILED"));
        System.exit(failures == 0 ? 0 : 1);
    }

    /**
     * The device memory of this batch's captured passes: their activations as planned (one block all graphs share,
     * as large as the largest plan) against the bytes each graph held before plans and sharing (its activations one
     * after another, in an arena of its own).
     */
    private static void passMemory(ai.onestep.backend.cuda.CudaOps co, String name, int n, int hw, FileWriter jsonl)
            throws IOException {
        long planned = 0, unplanned = 0, constants = 0;
        int graphs = 0;
        for (var e : co.passMemory().entrySet()) {
            if (e.getKey().contains("([" + n + ", " + hw + ", ")) {
                long[] m = e.getValue();
                constants += m[0];
                planned = Math.max(planned, m[1]);
                unplanned += m[2];
                graphs++;
            }
        }
        row(String.format(Locale.ROOT, "%-56s %6d   %d graphs: activations %.2f MiB shared (%.2f MiB one arena "
                + "each, no reuse), constants %.2f MiB", "  (memory) " + name, n, graphs, planned / 1048576.0,
                unplanned / 1048576.0, constants / 1048576.0));
        if (jsonl != null) {
            jsonl.write(String.format(Locale.ROOT, "{\"bench\":\"pass-memory\",\"model\":\"%s\",\"batch\":%d,"
                    + "\"graphs\":%d,\"activations_bytes\":%d,\"unplanned_bytes\":%d,\"constants_bytes\":%d}%n",
                    name, n, graphs, planned, unplanned, constants));
            jsonl.flush();
        }
        // What each graph launches: its nodes, the backend ops that made them, and the bias kernels of cuDNN
        // convolutions and cuBLAS linears it did not launch (left to the group norm or residual add that reads
        // the result; 0 on the emulated device, whose portable kernels add their bias themselves).
        StringBuilder sb = new StringBuilder();
        for (var e : co.capturedPasses().entrySet()) {
            if (e.getKey().contains("([" + n + ", " + hw + ", ")) {
                long[] g = e.getValue();
                sb.append(sb.isEmpty() ? "" : "; ").append(g[0]).append(" nodes for ").append(g[1]).append(" ops, ")
                        .append(g[2]).append(" bias kernels left to readers");
                if (jsonl != null) {
                    jsonl.write(String.format(Locale.ROOT, "{\"bench\":\"pass-graph\",\"model\":\"%s\",\"batch\":%d,"
                            + "\"nodes\":%d,\"ops\":%d,\"bias_kernels_saved\":%d}%n", name, n, g[0], g[1], g[2]));
                    jsonl.flush();
                }
            }
        }
        // Timed choices that could not capture their runs and were timed as launches, host time included (each a
        // route that allocates or synchronizes per run; 0 expected: a nonzero count skews those choices).
        sb.append("; ").append(co.device().uncapturedTimings()).append(" timings as launches so far");
        // Resnet blocks as one launch (onestep_resnet_block_typed) and as their two ops, over the device's runs so far.
        sb.append("; resnet blocks so far: ").append(co.device().resnetBlocksFused()).append(" as one launch, ")
                .append(co.device().resnetBlocksApart()).append(" apart");
        row(String.format(Locale.ROOT, "%-56s %6d   %s", "  (graphs) " + name, n, sb));
        // And the ops they were made of, by name (a profile of what to fuse next, also without a GPU).
        for (var e : co.capturedOpCounts().entrySet()) {
            if (e.getKey().contains("([" + n + ", " + hw + ", ")) {
                row(String.format(Locale.ROOT, "%-56s %6d   %s", "  (ops) " + name, n, e.getValue()));
            }
        }
    }

    private static void time(Sampler s, Path model, String backend, String device, int n, int reps, int warmup,
                             boolean compare, FileWriter jsonl) throws IOException {
        var cfg = s.net().config();
        int hw = cfg.sampleSize(), c = cfg.inChannels();
        String name = model.getFileName().toString().replace(".safetensors", "");
        ai.onestep.backend.cuda.Precision precision = s.ops() instanceof ai.onestep.backend.cuda.CudaOps co
                ? co.precision() : ai.onestep.backend.cuda.Precision.FP32;
        if (s.ops() instanceof ai.onestep.backend.cuda.CudaOps) {
            name += " " + precision.label();
        }
        try (TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
            Tensor x0 = a.allocate(Layout.NHWC, n, hw, hw, c), x = a.allocate(Layout.NHWC, n, hw, hw, c);
            Tensor y = a.allocate(Layout.NHWC, n, hw, hw, c);
            Noise.gaussian(x0, 7, 0);
            List<Runnable> steps = new ArrayList<>();
            List<String> labels = new ArrayList<>();
            List<Tensor> results = new ArrayList<>();
            double[] taus2 = s.isStudent() ? s.timepoints(2) : null;
            if (s.isStudent()) {
                scale(x0, 80.0);
                double[] t = filled(n, 80.0);
                Denoiser f = new ConsistencyDenoiser(s.net(), s.ops(), ws, true);
                labels.add("student 1-step sample (1 NFE)");
                steps.add(() -> f.denoise(x0, t, null, y));
                results.add(y);
                // What api.Sampler runs: both evaluations and the re-noising as one pass (one graph on cuda).
                labels.add("student 2-step sample (2 NFE, 1 pass)");
                steps.add(() -> {
                    x.copyFrom(x0);
                    ConsistencySampler.sample(s.ops(), f, x, taus2, null, 7, 0, true);
                });
                results.add(x);
            } else {
                double[] sig = KarrasSchedule.sigmas(18);
                scale(x0, sig[0]);
                Denoiser d = new EdmDenoiser(s.net(), s.ops(), ws, true);
                double[] one = filled(n, 1.5), s0 = filled(n, sig[0]), s1 = filled(n, sig[1]);
                labels.add("teacher denoiser D(x; 1.5) (1 NFE)");
                steps.add(() -> d.denoise(x0, one, null, y));
                results.add(y);
                EdmSampler.Scratch sc = new EdmSampler.Scratch(a, x0);
                labels.add("teacher Heun step (2 NFE)");
                steps.add(() -> {
                    x.copyFrom(x0);
                    EdmSampler.step(s.ops(), d, EdmSampler.Method.HEUN, x, s0, s1, null, sc);
                });
                results.add(x);
            }
            for (int k = 0; k < (firstStepOnly ? 1 : steps.size()); k++) {
                Runnable step = steps.get(k);
                long first = System.nanoTime();
                step.run();
                double firstUs = (System.nanoTime() - first) / 1e3;
                for (int i = 0; i < warmup; i++) {
                    step.run();
                }
                double[] t = new double[reps];
                for (int i = 0; i < reps; i++) {
                    boolean profiled = profileLast && i == reps - 1;
                    if (profiled) {
                        profiler("cuProfilerStart");
                    }
                    long t0 = System.nanoTime();
                    step.run();
                    t[i] = (System.nanoTime() - t0) / 1e3;
                    if (profiled) {
                        profiler("cuProfilerStop");
                    }
                }
                Tensor result = results.get(k);
                boolean finite = allFinite(result);
                if (!finite) {
                    failures++;
                }
                Arrays.sort(t);
                double med = t[reps / 2], min = t[0];
                String label = name + ": " + labels.get(k);
                row(String.format(Locale.ROOT, "%-56s %6d %12.1f %12.1f %10.1f%s", label, n, med, min,
                        n / med * 1e6, finite ? "" : "  NON-FINITE OUTPUT"));
                if (jsonl != null) {
                    jsonl.write(String.format(Locale.ROOT, "{\"bench\":\"engine-step\",\"backend\":\"%s\",\"device\":\"%s\","
                            + "\"model\":\"%s\",\"precision\":\"%s\",\"step\":\"%s\",\"batch\":%d,\"us\":%.2f,"
                            + "\"min_us\":%.2f,\"first_call_us\":%.1f,\"finite\":%b}%n", backend,
                            device.replace("\"", "'"), model.getFileName().toString().replace(".safetensors", ""),
                            precision.label(), labels.get(k), n, med, min, firstUs, finite));
                    jsonl.flush();
                }
                if (k == (firstStepOnly ? 0 : steps.size() - 1) && s.ops() instanceof ai.onestep.backend.cuda.CudaOps co) {
                    passMemory(co, name, n, hw, jsonl);
                }
                if (compare) {
                    try (Sampler ref = Sampler.load(model, "cpu"); Workspace w = new Workspace(); TensorArena b = new TensorArena()) {
                        Tensor want = b.allocate(Layout.NHWC, n, hw, hw, c), got = results.get(k);
                        Tensor xr = b.allocate(Layout.NHWC, n, hw, hw, c);
                        xr.copyFrom(x0);
                        if (s.isStudent() && k == 1) {
                            ConsistencySampler.sample(ref.ops(), new ConsistencyDenoiser(ref.net(), ref.ops(), w), xr,
                                    taus2, null, 7, 0);
                            want.copyFrom(xr);
                        } else if (k == 1) {
                            double[] sig = KarrasSchedule.sigmas(18);
                            EdmSampler.step(ref.ops(), new EdmDenoiser(ref.net(), ref.ops(), w), EdmSampler.Method.HEUN,
                                    xr, filled(n, sig[0]), filled(n, sig[1]), null, new EdmSampler.Scratch(b, xr));
                            want.copyFrom(xr);
                        } else if (s.isStudent()) {
                            new ConsistencyDenoiser(ref.net(), ref.ops(), w).denoise(xr, filled(n, 80.0), null, want);
                        } else {
                            new EdmDenoiser(ref.net(), ref.ops(), w).denoise(xr, filled(n, 1.5), null, want);
                        }
                        double err = DeviceCheck.relErr(got, want);
                        boolean ok = err <= (precision == ai.onestep.backend.cuda.Precision.BF16 ? 3e-2 : 5e-3);
                        failures += ok ? 0 : 1;
                        row(String.format(Locale.ROOT, "%-56s %6d   rel. L2 error vs cpu backend %.3e  %s",
                                "  (check) " + labels.get(k), n, err, ok ? "ok" : "FAIL"));
                    }
                }
            }
            if (variantsNow && s.ops() instanceof ai.onestep.backend.cuda.CudaOps co) {
                // The first step again, its graph captured anew: without constant folding (the time path on the
                // device, in the graph); folded but with conv2 and to_out.0 apart from their residual adds (cuDNN's
                // conv + bias + z fusion runs IMPLICIT_PRECOMP_GEMM, which may be slower than the algorithm the
                // plain convolution gets); folded but with the upsamplers as the upsampling and a 3x3 convolution
                // instead of one transposed convolution; folded but with each ResnetBlock2D's group norms apart from
                // the convolutions they feed (Ops#groupNormConv2d not called: the group norm kernels and the plain
                // convolutions); folded but with each attention block's attention and to_out.0 as two launches (no
                // onestep_attention_residual_qkv_typed); with each small-level ResnetBlock2D as its two norm-convolution
                // ops (no onestep_resnet_block_typed); with each group norm's statistics computed by its reader,
                // not left by the convolution before it (Device#chainNormConvs); and, on a GPU, with cuDNN's heuristic algorithms instead of
                // its timed search, with every convolution on cuDNN (none on our implicit GEMM, even where it timed
                // faster), with every attention on the default kernel (no split-keys, pipelined or wide one), with every
                // group norm on the default kernels (no slab or cluster kernel); with the kernels' weights not asked of
                // L2 before their wait (Device#weightPrefetch, on by default); and with programmatic dependent launch
                // on (Device#programmaticLaunch: sm_90+, off by default), with and without the prefetch, which is what
                // gives the launch's early start something to do. Last, the default
                // again, captured anew after the others: the same graph as the default row (the choices are kept), so
                // its difference from that row is the spread between two timings of one graph in this process, the
                // noise any variant's difference must exceed to mean something (on an H200, 2026-11-27, two variants
                // that were the default's graph came out 5% under it). Then all back to the defaults for the next batch.
                boolean folding = co.foldsConstants();
                var cudnnDevice = co.device() instanceof ai.onestep.backend.cuda.CudaDevice cd ? cd : null;
                boolean searching = cudnnDevice != null && cudnnDevice.searchesConvolutions();
                String[] variants = searching
                        ? new String[] {"unfolded", "unfused residual", "unfused upsampling", "norms apart",
                                        "norm statistics not chained", "attention and to_out apart",
                                        "resnet blocks apart", "heuristic convolutions", "cuDNN convolutions only",
                                        "default attention only",
                                        "default group norm only", "weights not prefetched",
                                        "programmatic dependent launch", "programmatic launch, weights not prefetched",
                                        "default again"}
                        : new String[] {"unfolded", "unfused residual", "unfused upsampling", "norms apart",
                                        "norm statistics not chained", "attention and to_out apart",
                                        "resnet blocks apart", "weights not prefetched",
                                        "programmatic dependent launch", "programmatic launch, weights not prefetched",
                                        "default again"};
                boolean pdlBefore = ai.onestep.backend.cuda.Device.programmaticLaunch();
                boolean prefetchBefore = ai.onestep.backend.cuda.Device.weightPrefetch();
                boolean attentionOut = co.device().fusesAttentionResidual();
                boolean resnets = co.device().fusesResnetBlocks();
                for (String variant : variants) {
                    co.foldConstants(!variant.equals("unfolded") && folding);
                    co.fuseResiduals(!variant.equals("unfused residual"));
                    co.fuseUpsampling(!variant.equals("unfused upsampling"));
                    co.fuseNormConvs(!variant.equals("norms apart"));
                    co.device().chainNormConvs(!variant.equals("norm statistics not chained"));
                    co.device().fuseAttentionResidual(attentionOut && !variant.equals("attention and to_out apart"));
                    co.device().fuseResnetBlocks(resnets && !variant.equals("resnet blocks apart"));
                    if (searching) {
                        cudnnDevice.searchConvolutions(!variant.equals("heuristic convolutions"));
                        cudnnDevice.ownConvolutions(!variant.equals("cuDNN convolutions only"));
                        cudnnDevice.splitKeys(!variant.equals("default attention only"));
                        cudnnDevice.pipelinedAttention(!variant.equals("default attention only"));
                        cudnnDevice.slabGroupNorm(!variant.equals("default group norm only"));
                        cudnnDevice.clusterGroupNorm(!variant.equals("default group norm only"));
                    }
                    ai.onestep.backend.cuda.Device.weightPrefetch(!variant.endsWith("weights not prefetched"));
                    if (variant.startsWith("programmatic")) {
                        try {
                            ai.onestep.backend.cuda.Device.programmaticLaunch(true);
                        } catch (ai.onestep.backend.cuda.CudaException e) {
                            row("  " + name + ": " + labels.get(0) + ", " + variant + ": skipped (" + e.getMessage()
                                    + ")");
                            continue;
                        }
                    }
                    co.forgetCapturedPasses();
                    try {
                        double[] t = new double[reps];
                        for (int i = 0; i < warmup + 2 + reps; i++) {  // + 2: measured, then captured
                            long t0 = System.nanoTime();
                            steps.get(0).run();
                            if (i >= warmup + 2) {
                                t[i - warmup - 2] = (System.nanoTime() - t0) / 1e3;
                            }
                        }
                        Arrays.sort(t);
                        long nodes = co.capturedPasses().values().stream().mapToLong(g -> g[0]).max().orElse(0);
                        String label = name + ": " + labels.get(0) + ", " + variant;
                        row(String.format(Locale.ROOT, "%-56s %6d %12.1f %12.1f %10.1f  (%d nodes)", label, n,
                                t[reps / 2], t[0], n / t[reps / 2] * 1e6, nodes));
                        if (jsonl != null) {
                            jsonl.write(String.format(Locale.ROOT, "{\"bench\":\"engine-step-unfolded\","
                                    + "\"variant\":\"%s\",\"model\":\"%s\",\"precision\":\"%s\",\"step\":\"%s\","
                                    + "\"batch\":%d,\"us\":%.2f,\"min_us\":%.2f,\"nodes\":%d}%n", variant,
                                    model.getFileName().toString().replace(".safetensors", ""), precision.label(),
                                    labels.get(0), n, t[reps / 2], t[0], nodes));
                            jsonl.flush();
                        }
                    } finally {
                        co.foldConstants(folding);
                        co.fuseResiduals(true);
                        co.fuseUpsampling(true);
                        co.fuseNormConvs(true);
                        co.device().chainNormConvs(true);
                        co.device().fuseAttentionResidual(attentionOut);
                        co.device().fuseResnetBlocks(resnets);
                        if (searching) {
                            cudnnDevice.searchConvolutions(true);
                            cudnnDevice.ownConvolutions(true);
                            cudnnDevice.splitKeys(true);
                            cudnnDevice.pipelinedAttention(true);
                            cudnnDevice.slabGroupNorm(true);
                            cudnnDevice.clusterGroupNorm(true);
                        }
                        ai.onestep.backend.cuda.Device.programmaticLaunch(pdlBefore);
                        ai.onestep.backend.cuda.Device.weightPrefetch(prefetchBefore);
                        co.forgetCapturedPasses();
                    }
                }
                if (cudnnDevice != null) {
                    // Each shape's timed choice so far: our implicit GEMM's best tile against the route cuDNN would
                    // take (kernels/src/conv.cu; Device#ownConv), the split-keys and pipelined attention against the
                    // default, the slab and cluster group norms against the default kernels.
                    for (var choice : cudnnDevice.timedChoices()) {
                        row("  (choice) " + choice);
                    }
                }
            }
        }
    }

    /**
     * The driver's cuProfilerStart or cuProfilerStop (on the calling thread's current context, the runtime's primary
     * one), through the FFM linker: the bytedeco presets map no profiler API. A failure is reported, not fatal.
     */
    private static void profiler(String function) {
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            java.lang.foreign.SymbolLookup cuda = java.lang.foreign.SymbolLookup.libraryLookup("libcuda.so.1", arena);
            java.lang.invoke.MethodHandle h = java.lang.foreign.Linker.nativeLinker().downcallHandle(
                    cuda.find(function).orElseThrow(),
                    java.lang.foreign.FunctionDescriptor.of(java.lang.foreign.ValueLayout.JAVA_INT));
            int rc = (int) h.invokeExact();
            if (rc != 0) {
                System.err.println("StepTiming: " + function + " returned CUresult " + rc);
            }
        } catch (Throwable e) {
            System.err.println("StepTiming: " + function + " unavailable: " + e);
        }
    }

    private static double[] filled(int n, double v) {
        double[] a = new double[n];
        Arrays.fill(a, v);
        return a;
    }

    private static void scale(Tensor t, double s) {
        for (long i = 0; i < t.size(); i++) {
            t.set(i, (float) (t.get(i) * s));
        }
    }

    private static boolean allFinite(Tensor t) {
        for (float v : t.toArray()) {
            if (!Float.isFinite(v)) {
                return false;
            }
        }
        return true;
    }
}
