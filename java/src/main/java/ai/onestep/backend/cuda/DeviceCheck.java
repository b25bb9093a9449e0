package ai.onestep.backend.cuda;

import ai.onestep.backend.Ops;
import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.diffusion.ConsistencyDenoiser;
import ai.onestep.diffusion.EdmDenoiser;
import ai.onestep.model.Context;
import ai.onestep.model.UNet;
import ai.onestep.model.UNetConfig;
import ai.onestep.nn.Parameter;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.Consumer;

/**
 * The CUDA backend checked against the cpu backend, op by op and on a whole U-Net, plus graph capture and replay,
 * fp16/bf16 passes, and training steps as resident blocks:
 * the one Java check to run where a GPU is lent (bench/gpu/java_cuda_check.sh carries a JDK runtime there), and
 * runnable here against the emulated library with {@code --emulated}. Prints one row per check and a summary
 * last; exits 1 if any check fails.
 *
 * <pre>java -cp onestep.jar ai.onestep.backend.cuda.DeviceCheck [--emulated] [--library PATH]</pre>
 *
 * Tolerances are relative L2 errors: 1e-4 for our fp32 kernels, 5e-3 for single cuBLAS/cuDNN ops and whole fp32
 * U-Net passes; 2e-2 for those passes under {@code -Donestep.cuda.tf32=true}, whose truncation bias adds up over the
 * convolutions (1.0e-2 measured on an H100, see {@link CudaDevice}).
 */
public final class DeviceCheck {
    private final CudaOps dev;
    private final CpuOps cpu = new CpuOps(Runtime.getRuntime().availableProcessors());
    private final List<String> rows = new ArrayList<>();
    private int failures;
    /** The bound for a whole fp32 U-Net pass against the cpu backend. */
    private final double unet = CudaDevice.TF32 ? 2e-2 : 5e-3;

    private DeviceCheck(CudaOps dev) {
        this.dev = dev;
    }

    public static void main(String[] args) throws Exception {
        boolean emulated = Arrays.asList(args).contains("--emulated");
        int li = Arrays.asList(args).indexOf("--library");
        CudaOps ops;
        // The checks compare fp32 passes with eager ops bit for bit; the fp16/bf16 passes get backends of their own.
        System.setProperty("onestep.cuda.precision", "fp32");
        try {
            if (emulated) {
                Path lib = li >= 0 ? Path.of(args[li + 1]) : CudaBackend.emulatedLibrary();
                ops = CudaBackend.openEmulated(lib, 256L << 20, 2);
            } else {
                if (li >= 0) {
                    System.setProperty("onestep.kernels.library", args[li + 1]);
                }
                ops = CudaBackend.open(Runtime.getRuntime().availableProcessors());
            }
        } catch (CudaBackend.Unavailable e) {
            System.err.println("DeviceCheck: " + e.getMessage());
            System.exit(2);
            return;
        }
        try (ops) {
            System.out.println("device: " + ops.device().describe());
            List<String> rows = new ArrayList<>();
            int failures = checkAll(ops, rows);
            System.out.printf("%-46s %12s %10s  %s%n", "check", "rel. error", "tolerance", "result");
            rows.forEach(System.out::println);
            System.out.println("DeviceCheck: " + (failures == 0 ? "all " + rows.size() + " checks passed"
                    : failures + " of " + rows.size() + " checks FAILED") + " on " + ops.name());
            System.exit(failures == 0 ? 0 : 1);
        }
    }

    /** Runs every check on {@code ops}; adds one printed row per check to {@code rows}; returns the failures. */
    public static int checkAll(CudaOps ops, List<String> rows) {
        DeviceCheck c = new DeviceCheck(ops);
        c.run();
        rows.addAll(c.rows);
        return c.failures;
    }

    private void record(String name, double err, double tol) {
        boolean ok = err <= tol;  // false for NaN
        failures += ok ? 0 : 1;
        rows.add(String.format("%-46s %12.3e %10.1e  %s", name, err, tol, ok ? "ok" : "FAIL"));
    }

    private void fact(String name, boolean ok) {
        failures += ok ? 0 : 1;
        rows.add(String.format("%-46s %12s %10s  %s", name, "", "", ok ? "ok" : "FAIL"));
    }

    private void exact(String name, boolean same) {
        failures += same ? 0 : 1;
        rows.add(String.format("%-46s %12s %10s  %s", name, same ? "identical" : "differ", "bits", same ? "ok" : "FAIL"));
    }

    /** Every parameter's values, concatenated in the set's order. */
    static float[] values(ai.onestep.nn.ParameterSet set) {
        float[] all = new float[Math.toIntExact(set.count())];
        int at = 0;
        for (Parameter p : set) {
            float[] v = p.value().toArray();
            System.arraycopy(v, 0, all, at, v.length);
            at += v.length;
        }
        return all;
    }

    /** Relative L2 error ||got - want|| / ||want|| in float64 (StepTiming's GPU checks use it too). */
    public static double relErr(Tensor got, Tensor want) {
        return relErr(got.toArray(), want.toArray());
    }

    static double relErr(float[] a, float[] b) {
        double num = 0, den = 0;
        for (int i = 0; i < a.length; i++) {
            num += ((double) a[i] - b[i]) * ((double) a[i] - b[i]);
            den += (double) b[i] * b[i];
        }
        return Math.sqrt(num / Math.max(den, 1e-30));
    }

    private static Tensor randn(TensorArena a, long seed, Layout l, int... shape) {
        Tensor t = a.allocate(l, shape);
        SplittableRandom r = new SplittableRandom(seed);
        for (long i = 0; i < t.size(); i++) {
            t.set(i, (float) (r.nextDouble() * 2 - 1));
        }
        return t;
    }

    /** Runs {@code op} on the device and on the cpu into fresh outputs of {@code shape} and compares. */
    private void compare(String name, double tol, TensorArena a, Layout l, int[] shape, OpCall op) {
        Tensor d = a.allocate(l, shape), c = a.allocate(l, shape);
        op.run(dev, d);
        op.run(cpu, c);
        record(name, relErr(d, c), tol);
    }

    @FunctionalInterface
    private interface OpCall {
        void run(Ops ops, Tensor out);
    }

    private void run() {
        try (TensorArena a = new TensorArena()) {
            ops(a);
        }
        network();
        training();
    }

    /** Losses, final weights and the traffic of one step between checkpoints of a short teacher training. */
    private record TrainRun(List<Double> losses, float[] weights, Device.Traffic step) {
    }

    /**
     * Three steps of teacher training (the CIFAR-shaped net, batch 8; 2 of 8x8 images emulated) op by op and as
     * resident blocks with the training state on the device: the same losses and weights, close to the cpu
     * backend's, and a step between checkpoints that waits for the device once and brings back no tensor.
     */
    private void training() {
        // Batch 8 of 16x16 images on a GPU; 2 of 8x8 on the emulated library, whose backward kernels run at a few
        // GFLOP/s on one thread.
        boolean gpu = dev.device() instanceof CudaDevice;
        int batch = gpu ? 8 : 2, size = gpu ? 16 : 8;
        byte[] px = new byte[32 * size * size * 3];
        new SplittableRandom(4).nextBytes(px);
        var data = new ai.onestep.data.ImageDataset("synthetic", px, 32, size, size, 3, null, 0);
        var o = new ai.onestep.diffusion.TeacherTrainer.Options(3, batch, 1e-3, 1, 0.9, 1.0, 0.0, 3, 5, false, false);
        try {
            Path dir = java.nio.file.Files.createTempDirectory("onestep-devicecheck");
            dev.residentBlocks(false);
            UNetConfig cfg = config(size);
            TrainRun eager = train(dev, cfg, data, o, dir.resolve("eager"));
            dev.residentBlocks(true);
            TrainRun resident = train(dev, cfg, data, o, dir.resolve("resident"));
            TrainRun host = train(cpu, cfg, data, o, dir.resolve("cpu"));
            double lossErr = 0, hostErr = 0;
            for (int i = 0; i < eager.losses().size(); i++) {
                double got = resident.losses().get(i), op = eager.losses().get(i), cpuLoss = host.losses().get(i);
                lossErr = Math.max(lossErr, Math.abs(got - op) / op);
                hostErr = Math.max(hostErr, Math.abs(got - cpuLoss) / cpuLoss);
            }
            record("training: resident losses vs op by op", lossErr, 1e-5);
            record("training: resident weights vs op by op", relErr(resident.weights(), eager.weights()), 1e-3);
            record("training: resident losses vs cpu", hostErr, 5e-3);
            Device.Traffic st = resident.step(), se = eager.step();
            // Printed for the record: op by op, every op's operands cross the bus.
            System.out.println("training step between checkpoints: resident " + st + "; op by op " + se);
            fact("training step: " + st.waits() + " waits, " + st.downloadedBytes() + " B back",
                    st.synchronizations() <= 2 && st.downloadedBytes() * 1000 < se.downloadedBytes());
        } catch (java.io.IOException e) {
            fact("training: temporary folder: " + e.getMessage(), false);
        }
    }

    private static TrainRun train(Ops ops, UNetConfig cfg, ai.onestep.data.ImageDataset data,
                                  ai.onestep.diffusion.TeacherTrainer.Options o, Path out) {
        List<Double> losses = new ArrayList<>();
        Device.Traffic[] marks = new Device.Traffic[2];
        Device d = ops instanceof CudaOps c ? c.device() : null;
        try (UNet net = new UNet(cfg, true)) {
            ai.onestep.model.Init.pytorchDefault(net, 9);
            new ai.onestep.diffusion.TeacherTrainer(ops, net, data, o, out, Path.of(out + ".jsonl")).run(null,
                    (step, loss, note) -> {
                        losses.add(loss);
                        if (d != null && step <= 2) {
                            marks[(int) step - 1] = d.traffic();  // after steps 1 and 2: step 2 between them
                        }
                    });
            return new TrainRun(losses, values(net.parameters()), d == null ? null : marks[1].minus(marks[0]));
        }
    }

    private void ops(TensorArena a) {
        double lib = 5e-3, ours = 1e-4;
        Tensor m1 = randn(a, 1, Layout.ROWS, 67, 129), m2 = randn(a, 2, Layout.ROWS, 129, 45);
        compare("matmul 67x129 . 129x45", lib, a, Layout.ROWS, new int[] {67, 45},
                (o, y) -> o.matmul(m1, false, m2, false, y, 1f, 0f));
        Tensor x = randn(a, 3, Layout.ROWS, 4, 256), w = randn(a, 4, Layout.ROWS, 256, 512), b = randn(a, 5, Layout.ROWS, 512);
        compare("linear 4x256 -> 512 + bias", lib, a, Layout.ROWS, new int[] {4, 512}, (o, y) -> o.linear(x, w, b, y));
        Tensor f = randn(a, 6, Layout.NHWC, 2, 32, 32, 64);
        Tensor k3 = randn(a, 7, Layout.HWIO, 3, 3, 64, 128), kb = randn(a, 8, Layout.ROWS, 128);
        compare("conv2d 3x3 64->128 on 32x32, pad 1", lib, a, Layout.NHWC, new int[] {2, 32, 32, 128},
                (o, y) -> o.conv2d(f, k3, kb, 1, 1, y));
        compare("conv2d 3x3 stride 2 (downsample)", lib, a, Layout.NHWC, new int[] {2, 16, 16, 128},
                (o, y) -> o.conv2d(f, k3, kb, 2, 1, y));
        Tensor g = randn(a, 9, Layout.ROWS, 64), be = randn(a, 10, Layout.ROWS, 64);
        Tensor sc = randn(a, 11, Layout.ROWS, 2, 64), sh = randn(a, 12, Layout.ROWS, 2, 64);
        compare("groupNorm 32 groups + scale/shift + SiLU", ours, a, Layout.NHWC, new int[] {2, 32, 32, 64},
                (o, y) -> o.groupNorm(f, g, be, sc, sh, 32, 1e-5f, true, y, a.allocate(2, 32), a.allocate(2, 32)));
        for (int d : new int[] {32, 64, 128}) {
            Tensor q = randn(a, 13, Layout.ROWS, 2, 256, 2 * d), kk = randn(a, 14, Layout.ROWS, 2, 256, 2 * d);
            Tensor v = randn(a, 15, Layout.ROWS, 2, 256, 2 * d);
            compare("attention 2 heads of " + d + ", 256 tokens", ours, a, Layout.ROWS, new int[] {2, 256, 2 * d},
                    (o, y) -> o.attention(q, kk, v, 2, y, a.allocate(2, 2, 256)));
        }
        Tensor p = randn(a, 16, Layout.NHWC, 2, 16, 16, 64), p2 = randn(a, 17, Layout.NHWC, 2, 16, 16, 32);
        compare("upsampleNearest2x", ours, a, Layout.NHWC, new int[] {2, 32, 32, 64}, (o, y) -> o.upsampleNearest2x(p, y));
        compare("concatChannels", ours, a, Layout.NHWC, new int[] {2, 16, 16, 96}, (o, y) -> o.concatChannels(p, p2, y));
        compare("addPerChannel", ours, a, Layout.NHWC, new int[] {2, 16, 16, 64}, (o, y) -> o.addPerChannel(p, sc, y));
        compare("silu", ours, a, Layout.NHWC, new int[] {2, 16, 16, 64}, (o, y) -> o.silu(p, y));
        compare("add", ours, a, Layout.NHWC, new int[] {2, 16, 16, 64}, (o, y) -> o.add(p, p, y));
        Tensor t = a.of(Layout.ROWS, new float[] {-2.1f, 0.3f, 250f}, 3);
        compare("sinusoidalEmbedding", ours, a, Layout.ROWS, new int[] {3, 128},
                (o, y) -> o.sinusoidalEmbedding(t, true, 0f, 1f, 10000f, y));
        training(a, lib);
    }

    /** The training ops: each backward's outputs one at a time (fresh zeros for the accumulated ones), an Adam step. */
    private void training(TensorArena a, double lib) {
        double back = 1e-3;  // our fp32 backward kernels sum in other orders than the cpu's blocked ones
        Tensor f = randn(a, 21, Layout.NHWC, 2, 32, 32, 64), k3 = randn(a, 22, Layout.HWIO, 3, 3, 64, 128);
        Tensor dy1 = randn(a, 23, Layout.NHWC, 2, 32, 32, 128), dy2 = randn(a, 24, Layout.NHWC, 2, 16, 16, 128);
        compare("conv2d 3x3 backward dx", lib, a, Layout.NHWC, new int[] {2, 32, 32, 64},
                (o, y) -> o.conv2dBackward(f, k3, dy1, 1, 1, y, null, null));
        compare("conv2d 3x3 backward dw", lib, a, Layout.HWIO, new int[] {3, 3, 64, 128},
                (o, y) -> o.conv2dBackward(f, k3, dy1, 1, 1, null, y, null));
        compare("conv2d 3x3 stride 2 backward dx", lib, a, Layout.NHWC, new int[] {2, 32, 32, 64},
                (o, y) -> o.conv2dBackward(f, k3, dy2, 2, 1, y, null, null));
        compare("conv2d 3x3 stride 2 backward dw", lib, a, Layout.HWIO, new int[] {3, 3, 64, 128},
                (o, y) -> o.conv2dBackward(f, k3, dy2, 2, 1, null, y, null));
        compare("conv2d backward db", back, a, Layout.ROWS, new int[] {128},
                (o, y) -> o.conv2dBackward(f, k3, dy1, 1, 1, null, null, y));
        Tensor x = randn(a, 25, Layout.ROWS, 64, 256), w = randn(a, 26, Layout.ROWS, 256, 512);
        Tensor ly = randn(a, 27, Layout.ROWS, 64, 512);
        compare("linear backward dx", lib, a, Layout.ROWS, new int[] {64, 256},
                (o, y) -> o.linearBackward(x, w, ly, y, a.allocate(256, 512), null));
        compare("linear backward dw", lib, a, Layout.ROWS, new int[] {256, 512},
                (o, y) -> o.linearBackward(x, w, ly, a.allocate(64, 256), y, null));
        for (int d : new int[] {32, 64, 128}) {
            Tensor q = randn(a, 31, Layout.ROWS, 2, 256, 2 * d), k = randn(a, 32, Layout.ROWS, 2, 256, 2 * d);
            Tensor v = randn(a, 33, Layout.ROWS, 2, 256, 2 * d), dO = randn(a, 34, Layout.ROWS, 2, 256, 2 * d);
            Tensor out = a.allocate(2, 256, 2 * d), lse = a.allocate(2, 2, 256);
            cpu.attention(q, k, v, 2, out, lse);
            int[] sh = {2, 256, 2 * d};
            compare("attention backward dq, heads of " + d, back, a, Layout.ROWS, sh,
                    (o, y) -> o.attentionBackward(q, k, v, out, lse, dO, 2, y, a.allocate(sh), a.allocate(sh)));
            compare("attention backward dk, heads of " + d, back, a, Layout.ROWS, sh,
                    (o, y) -> o.attentionBackward(q, k, v, out, lse, dO, 2, a.allocate(sh), y, a.allocate(sh)));
            compare("attention backward dv, heads of " + d, back, a, Layout.ROWS, sh,
                    (o, y) -> o.attentionBackward(q, k, v, out, lse, dO, 2, a.allocate(sh), a.allocate(sh), y));
        }
        Tensor up = randn(a, 35, Layout.NHWC, 2, 32, 32, 64);
        compare("upsampleNearest2x backward", 1e-6, a, Layout.NHWC, new int[] {2, 16, 16, 64},
                (o, y) -> o.upsampleNearest2xBackward(up, y));
        Tensor pr = randn(a, 38, Layout.NHWC, 16, 28, 28, 1), tg = randn(a, 39, Layout.NHWC, 16, 28, 28, 1);
        compare("pseudoHuberLoss gradient", 1e-5, a, Layout.NHWC, new int[] {16, 28, 28, 1},
                (o, y) -> o.pseudoHuberLoss(pr, tg, null, 0.0151f, y));
        double lossDev = dev.mseLoss(pr, tg, null, null), lossCpu = cpu.mseLoss(pr, tg, null, null);
        record("mseLoss value", Math.abs(lossDev - lossCpu) / lossCpu, 1e-6);
        Tensor big = randn(a, 40, Layout.ROWS, 1_000_003);
        double ssDev = dev.sumOfSquares(big), ssCpu = cpu.sumOfSquares(big);
        record("sumOfSquares (gradient norm), 1M floats", Math.abs(ssDev - ssCpu) / ssCpu, 1e-9);
        Tensor p0 = randn(a, 36, Layout.ROWS, 100_000), g = randn(a, 37, Layout.ROWS, 100_000);
        compare("adamW step (3 steps)", 1e-5, a, Layout.ROWS, new int[] {100_000}, (o, y) -> {
            y.copyFrom(p0);
            Tensor m = a.allocate(100_000), v = a.allocate(100_000);
            for (int t = 1; t <= 3; t++) {
                o.adamStep(y, g, m, v, t, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, true);
            }
        });
    }

    /** The CIFAR-size shape family on a small scale: two levels, attention at the lower one. */
    private static UNetConfig config() {
        return config(16);
    }

    private static UNetConfig config(long sampleSize) {
        return config(sampleSize, "scale_shift");
    }

    /** timeMode: resnet_time_scale_shift, "scale_shift" or "default" (the CIFAR config's: h + time_emb_proj(temb)). */
    private static UNetConfig config(long sampleSize, String timeMode) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("sample_size", sampleSize);
        m.put("in_channels", 3L);
        m.put("out_channels", 3L);
        m.put("time_embedding_type", "positional");
        m.put("down_block_types", List.of("DownBlock2D", "AttnDownBlock2D"));
        m.put("up_block_types", List.of("AttnUpBlock2D", "UpBlock2D"));
        m.put("block_out_channels", List.of(64L, 128L));
        m.put("layers_per_block", 2L);
        m.put("attention_head_dim", 64L);
        m.put("norm_num_groups", 32L);
        m.put("resnet_time_scale_shift", timeMode);
        return UNetConfig.fromMap(m);
    }

    private void network() {
        try (UNet net = new UNet(config(), false); TensorArena a = new TensorArena(); Workspace wd = new Workspace();
             Workspace wc = new Workspace()) {
            SplittableRandom r = new SplittableRandom(1);
            for (Parameter p : net.parameters()) {
                boolean gain = p.name().contains("norm") && p.name().endsWith("weight");
                for (long i = 0; i < p.value().size(); i++) {
                    p.value().set(i, (float) ((r.nextDouble() * 2 - 1) * 0.2 + (gain ? 1 : 0)));
                }
            }
            Tensor x = a.allocate(Layout.NHWC, 2, 16, 16, 3);
            Noise.gaussian(x, 3, 0);
            double[] t = {20, 700};
            Tensor yd = net.forward(Context.inference(dev, wd), x, t, null);
            Tensor yc = net.forward(Context.inference(cpu, wc), x, t, null);
            record("U-Net forward, eager, vs cpu", relErr(yd, yc), unet);

            double[] tau = {1.7, 1.7};
            Consumer<Tensor> eager = out -> {
                wd.reset();
                Tensor fd = new EdmDenoiser(net, dev, wd).forward(Context.inference(dev, wd), x, tau, null);
                ConsistencyDenoiser.combine(dev, x, fd, tau, out);
            };
            Tensor e = a.allocate(Layout.NHWC, 2, 16, 16, 3);
            eager.accept(e);
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, dev, wd, true);
            Tensor first = a.allocate(Layout.NHWC, 2, 16, 16, 3), second = a.allocate(Layout.NHWC, 2, 16, 16, 3);
            Tensor replay = a.allocate(Layout.NHWC, 2, 16, 16, 3);
            // First unfolded: a pass then runs the eager ops, so it has their bits. Folded below.
            boolean folding = dev.foldsConstants();
            dev.foldConstants(false);
            dev.checkHostAccess(true);  // each planned activation NaN until the warm-up writes it
            try {
                f.denoise(x, tau, null, first);
                f.denoise(x, tau, null, second);
                f.denoise(x, tau, null, replay);
            } finally {
                dev.checkHostAccess(false);
            }
            exact("consistency pass, first call vs eager", Arrays.equals(first.toArray(), e.toArray()));
            exact("captured warm-up vs first call", Arrays.equals(second.toArray(), first.toArray()));
            exact("graph replay vs first call", Arrays.equals(replay.toArray(), first.toArray()));
            Tensor c = a.allocate(Layout.NHWC, 2, 16, 16, 3);
            try (Workspace w = new Workspace()) {
                new ConsistencyDenoiser(net, cpu, w).denoise(x, tau, null, c);
            }
            record("consistency graph replay vs cpu", relErr(replay, c), unet);
            long[] g = dev.capturedPasses().values().stream().findFirst().orElse(new long[] {0, 0, 0});
            // On cuDNN the group norms and residual adds take the convolutions' biases (Residency.deferBias).
            fact("graph: " + g[0] + " nodes for " + g[1] + " backend ops, " + g[2] + " bias kernels left out",
                    g[0] >= g[1] && g[1] > 0 && (g[2] > 0 || !dev.device().convBiasSeparate()));
            long[] m = dev.passMemory().values().stream().findFirst().orElse(new long[] {0, 0, 0});
            fact(String.format(java.util.Locale.ROOT, "activations planned: %.0f of %.0f KiB", m[1] / 1024.0,
                    m[2] / 1024.0), m[1] > 0 && 2 * m[1] < m[2]);

            // Constant folding (CudaOps#passConstants): the time path computed on the host while the pass is
            // captured, so the graph has its kernels fewer and rounds it once differently.
            dev.forgetCapturedPasses();
            dev.foldConstants(true);
            Tensor folded = a.allocate(Layout.NHWC, 2, 16, 16, 3);
            for (int i = 0; i < 3; i++) {
                f.denoise(x, tau, null, folded);
            }
            record("folded graph replay vs cpu", relErr(folded, c), unet);
            long[] gf = dev.capturedPasses().values().stream().findFirst().orElse(new long[] {0, 0, 0});
            fact("folded graph: " + gf[0] + " nodes (" + (g[0] - gf[0]) + " fewer)", gf[0] > 0 && gf[0] < g[0]);
            // Inside folded passes conv2 and to_out.0 take the residual (cuDNN's conv + bias + z, cuBLASLt's bias
            // epilogue with C = z); a device that could not fuse a shape ran it as two launches (correct, and
            // reported here).
            java.util.Map<String, Long> ops = dev.capturedOpCounts().values().stream().findFirst()
                    .orElse(java.util.Map.of());
            long fusedConvs = ops.getOrDefault("conv2dResidual", 0L);
            // An attention block's to_out.0 with its residual, alone or inside the attention's op (Ops#attentionResidual,
            // one launch where the shape's timed choice took it).
            long attentionOuts = ops.getOrDefault("attentionResidual", 0L);
            long fusedGemms = ops.getOrDefault("linearResidual", 0L) + attentionOuts;
            // Where the device runs our convolutions, a block's norm and convolution are one op
            // (Ops#groupNormConv2d; over an up block's concatenation Ops#groupNormConcatConv2d, with the shortcut; with
            // a down block's shortcut Ops#groupNormConvShortcut2d),
            // fused where the shape's timed choice took our convolution's norm prologue.
            long normConvs = ops.getOrDefault("groupNormSiluConv2d", 0L) + ops.getOrDefault("groupNormConv2d", 0L)
                    + ops.getOrDefault("groupNormSiluConcatConv2d", 0L) + ops.getOrDefault("groupNormConcatConv2d", 0L)
                    + ops.getOrDefault("groupNormSiluConvShortcut2d", 0L)
                    + ops.getOrDefault("groupNormConvShortcut2d", 0L);
            fact("folded graph: " + fusedConvs + " convolutions and " + fusedGemms + " GEMMs took their residual, "
                    + dev.device().residualsUnfused() + " calls as two launches; " + normConvs + " norm + convolution"
                    + " ops, " + dev.device().normConvsUnfused() + " calls as the two ops; " + attentionOuts
                    + " attention + to_out ops, " + dev.device().attentionResidualsApart() + " calls as the two ops",
                    fusedConvs + normConvs > 0 && fusedGemms > 0);
            dev.foldConstants(folding);

            // Registered weights, as api.Sampler has them: on cuDNN the convolutions read kept KRSC copies. An
            // eager update of the weights refreshes them, and the graph replays with the new values.
            dev.registerParameters(net.weightTensors());
            dev.forgetCapturedPasses();
            for (int i = 0; i < 3; i++) {
                f.denoise(x, tau, null, replay);
            }
            record("graph on registered weights vs cpu", relErr(replay, c), unet);
            // The upsamplers read their weights' sub-pixel kernels (ParameterStore#subpixel): one transposed
            // convolution each (cuDNN's backward-data on a GPU, checked on first use against the portable kernel).
            long upsamplers = dev.capturedOpCounts().values().stream().findFirst().orElse(java.util.Map.of())
                    .getOrDefault("upsampleConv2d", 0L);
            fact("graph on registered weights: " + upsamplers + " upsampling convolutions as one transposed "
                    + "convolution each", upsamplers > 0 || !dev.foldsConstants());
            for (Parameter p : net.parameters()) {
                dev.scale(p.value(), 0.9f, p.value());
            }
            f.denoise(x, tau, null, replay);
            try (Workspace w = new Workspace()) {
                new ConsistencyDenoiser(net, cpu, w).denoise(x, tau, null, c);
            }
            record("the same after a weight update vs cpu", relErr(replay, c), unet);
        }
        halfPasses();
    }

    /**
     * A consistency pass in fp16 and bf16 (a backend of each precision on a second stream of the same library):
     * replay bit for bit, and close to the fp32 cpu result. The net has PyTorch's default initialization (weights
     * ~ 1/sqrt(fan_in), as a trained net's scale), not the larger random weights above, which amplify each layer's
     * rounding far more than a real model does. Bounds: 3x what the emulated library measures (fp16 9.0e-4, bf16
     * 7.4e-3 in this net's default time mode, 9.8e-4 and 7.1e-3 in scale_shift; the trained Fashion-MNIST student:
     * 5.5e-4 and 7.7e-3).
     */
    private void halfPasses() {
        boolean gpu = dev.device() instanceof CudaDevice;
        // The CIFAR config's time mode: norm2 takes h + time_emb_proj(temb) (and on cuDNN the biases) in one kernel.
        try (UNet net = new UNet(config(16, "default"), false); TensorArena a = new TensorArena();
             Workspace wc = new Workspace()) {
            ai.onestep.model.Init.pytorchDefault(net, 5);
            Tensor x = a.allocate(Layout.NHWC, 2, 16, 16, 3);
            Noise.gaussian(x, 6, 0);
            cpu.scale(x, 1.7f, x);  // a sample at the noise level tau
            double[] tau = {1.7, 1.7};
            Tensor want = a.allocate(Layout.NHWC, 2, 16, 16, 3);
            new ConsistencyDenoiser(net, cpu, wc).denoise(x, tau, null, want);
            for (Precision p : new Precision[] {Precision.FP16, Precision.BF16}) {
                halfPass(net, x, tau, want, p, gpu);
            }
        }
    }

    private void halfPass(UNet net, Tensor x, double[] tau, Tensor cpuResult, Precision p, boolean gpu) {
        // Emulated: the convolutions that take it run our implicit GEMM (what a GPU does where it times faster).
        Device d = gpu ? new CudaDevice(dev.device().library())
                : new EmulatedDevice(dev.device().library(), false, false, true);
        try (CudaOps h = new CudaOps(d, gpu ? CudaOps.DEFAULT_ARENA_BYTES : 256L << 20, 2, p);
             TensorArena a = new TensorArena(); Workspace w = new Workspace()) {
            h.registerParameters(net.weightTensors());
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, h, w, true);
            Tensor first = a.allocate(Layout.NHWC, x.shape()), replay = a.allocate(Layout.NHWC, x.shape());
            f.denoise(x, tau, null, first);   // on the device, uncaptured (and the 16-bit weight copies made)
            f.denoise(x, tau, null, replay);  // captured
            f.denoise(x, tau, null, replay);  // replayed
            exact(p.label() + " graph replay vs first call", Arrays.equals(replay.toArray(), first.toArray()));
            record(p.label() + " consistency graph replay vs cpu fp32", relErr(replay, cpuResult),
                    p == Precision.FP16 ? 3e-3 : 2e-2);
            fact(p.label() + " pass captured, nothing on the host", h.capturedPasses().size() == 1
                    && h.eagerOnlyPasses().isEmpty() && h.hostOps() == 0);
            // Programmatic dependent launch (Device#programmaticLaunch, sm_90+): the pass captured anew with it
            // replays to the same bits; a kernel reading its inputs before its predecessor finished would not.
            // Emulated, fp16 only: there it checks the plumbing (CTest checks every kernel's await), and each pass
            // convolves with the emulated mma.sync, which is slow.
            if (gpu || p == Precision.FP16) {
                boolean pdlBefore = Device.programmaticLaunch();
                try {
                    Device.programmaticLaunch(true);
                    h.forgetCapturedPasses();
                    Tensor pdl = a.allocate(Layout.NHWC, x.shape());
                    for (int i = 0; i < 3; i++) {
                        f.denoise(x, tau, null, pdl);
                    }
                    exact(p.label() + " graph with programmatic launch vs first call",
                            Arrays.equals(pdl.toArray(), first.toArray()));
                    fact(p.label() + " pass captured with programmatic launch", h.capturedPasses().size() == 1
                            && h.eagerOnlyPasses().isEmpty());
                } catch (CudaException e) {
                    // Only a device below sm_90 may refuse it; any other failure (a launch, the capture) fails here.
                    fact(p.label() + " programmatic launch: " + e.getMessage(),
                            e.getMessage().contains("compute capability"));
                } finally {
                    Device.programmaticLaunch(pdlBefore);
                }
            }
            if (d instanceof CudaDevice cd) {
                // Each shape's timed choice: our tensor-core implicit GEMM against cuDNN (kernels/src/conv.cu), the
                // split-keys, pipelined and wide attention against the default kernel, the cluster group norm (the slab
                // one only above 2^20 values, none here) against the default kernels.
                java.util.List<Device.Choice> choices = cd.timedChoices();
                long attention = choices.stream().filter(o -> o.shape().startsWith("attention,")).count();
                long norms = choices.stream().filter(o -> o.shape().startsWith("groupnorm,")).count();
                long resnets = choices.stream().filter(o -> o.shape().startsWith("resnet")).count();
                long convs = choices.size() - attention - norms - resnets;
                fact(p.label() + " pass: " + choices.stream().filter(o -> o.config() > 0).count() + " of "
                        + choices.size() + " shapes on our candidate kernels (" + convs + " convolution shapes timed "
                        + "against cuDNN, " + attention + " attention shapes, " + norms + " group norms, " + resnets
                        + " whole resnet blocks)",
                        convs > 0 || !cd.ownsConvolutions());
                choices.forEach(o -> System.out.println("    " + o));
                // The statistics chain (Device#groupNormConv): readers that took the statistics their producer left,
                // counted over the device's runs so far, every precision (the ",given" rows above are their choices).
                System.out.println("    so far " + cd.normConvsGiven() + " group norms read statistics the "
                        + "convolution before them left (" + cd.normConvStatsLeft() + " producers left them)");
                System.out.println("    so far " + cd.resnetBlocksFused() + " resnet blocks ran as one launch, "
                        + cd.resnetBlocksApart() + " as their two ops");
            } else {
                fact(p.label() + " pass: " + d.igemmLaunches() + " convolutions by our implicit GEMM (emulated mma)",
                        d.igemmLaunches() > 0);
            }
        }
    }
}
