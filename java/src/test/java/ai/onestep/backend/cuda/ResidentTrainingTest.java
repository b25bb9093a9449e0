package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.Ops;
import ai.onestep.backend.OpsTesting;
import ai.onestep.data.ImageDataset;
import ai.onestep.diffusion.ConsistencyDistiller;
import ai.onestep.diffusion.EdmDenoiser;
import ai.onestep.diffusion.TeacherTrainer;
import ai.onestep.model.Init;
import ai.onestep.model.StudentInit;
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
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Resident blocks ({@link CudaOps#runResident}): training steps whose activations stay on the device. Each run
 * is compared with the same run op by op on the same backend (the same kernels in the same order: the same bits)
 * and with the CPU backend, in checking mode, which turns any host read of a device-written tensor (or of training
 * state the device owns) into NaN and any host write the device would miss into an error; and the host-device
 * traffic is counted.
 */
class ResidentTrainingTest {
    @TempDir
    Path dir;

    private CudaOps ops;

    @BeforeEach
    void needsBackend() {
        ops = EmulatedDeviceTest.require();
        ops.checkHostAccess(true);
    }

    @AfterEach
    void restore() {
        if (ops != null) {
            ops.checkHostAccess(false);
            ops.residentBlocks(true);
        }
    }

    /** A small U-Net with dropout and attention (the training tests' net), class-conditional (3 classes) or not. */
    static UNetConfig config(boolean labelled) {
        return UNetConfig.parse("{\"sample_size\": 8, \"in_channels\": 1, \"out_channels\": 1,"
                + "\"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"], \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"],"
                + "\"block_out_channels\": [8, 8], \"layers_per_block\": 1, \"attention_head_dim\": 4, \"norm_num_groups\": 4,"
                + "\"dropout\": 0.1" + (labelled ? ", \"num_class_embeds\": 3" : "") + "}", "test");
    }

    static ImageDataset labelledData() {
        byte[] px = new byte[20 * 64];
        int[] labels = new int[20];
        SplittableRandom r = new SplittableRandom(1);
        for (int i = 0; i < px.length; i++) {
            px[i] = (byte) r.nextInt(256);
        }
        for (int i = 0; i < labels.length; i++) {
            labels[i] = r.nextInt(3);
        }
        return new ImageDataset("synthetic", px, 20, 8, 8, 1, labels, 3);
    }

    /** The losses, the final weights and the traffic of a short training on {@code backend} (and of its last step). */
    private record Run(List<Double> losses, Map<String, float[]> weights, Device.Traffic traffic, Device.Traffic last) {
    }

    /** Records each step's loss and the device traffic of step 2 (neither the first nor the checkpoint's). */
    private final class Steps implements ai.onestep.diffusion.TrainingProgress {
        final List<Double> losses = new ArrayList<>();
        Device.Traffic mark = ops.device().traffic();
        Device.Traffic last;

        @Override
        public void step(long step, double loss, String note) {
            losses.add(loss);
            Device.Traffic now = ops.device().traffic();
            if (step == 2) {
                last = now.minus(mark);
            }
            mark = now;
        }
    }

    private Run trainTeacher(Ops backend, String name) {
        Steps steps = new Steps();
        Map<String, float[]> weights = new LinkedHashMap<>();
        Device.Traffic before = ops.device().traffic();
        try (UNet net = new UNet(config(true), true)) {
            Init.pytorchDefault(net, 1);
            var o = new TeacherTrainer.Options(3, 4, 1e-3, 1, 0.9, 0.05, 0.01, 3, 5, true, false);
            new TeacherTrainer(backend, net, labelledData(), o, dir.resolve(name + ".safetensors"),
                    dir.resolve(name + ".jsonl")).run(null, steps);
            keepWeights(net, weights);
        }
        return finish(name, steps, weights, before);
    }

    private static void keepWeights(UNet net, Map<String, float[]> into) {
        for (Parameter p : net.parameters()) {
            into.put(p.name(), p.value().toArray());
        }
    }

    /** The run, with what its checkpoint holds as well (the EMA, swapped in where the weights live, then synced). */
    private Run finish(String name, Steps steps, Map<String, float[]> weights, Device.Traffic before) {
        try (var r = ai.onestep.io.Safetensors.open(dir.resolve(name + ".safetensors")); TensorArena a = new TensorArena()) {
            for (String k : List.copyOf(weights.keySet())) {
                weights.put("saved " + k, r.read(k, a, Layout.ROWS).toArray());
            }
        }
        return new Run(steps.losses, weights, ops.device().traffic().minus(before), steps.last);
    }

    /** Every weight (live and saved) finite and within {@code tol} of the cpu run's. */
    private static void assertNearTheCpu(String what, Run cpu, Run got, double tol) {
        for (String name : cpu.weights().keySet()) {
            float[] g = got.weights().get(name), want = cpu.weights().get(name);
            for (int i = 0; i < g.length; i++) {
                assertEquals(want[i], g[i], tol, what + ": " + name + "[" + i + "]");
            }
        }
    }

    @Test
    void teacherTrainingMatchesOpByOpBitForBitWithAFractionOfTheTraffic() {
        ops.residentBlocks(false);
        Run eager = trainTeacher(ops, "eager");
        ops.residentBlocks(true);
        Run resident = trainTeacher(ops, "resident");
        Run cpu = trainTeacher(OpsTesting.CPU, "cpu");
        assertEquals(eager.losses(), resident.losses(), "losses, op by op vs resident");
        for (String name : eager.weights().keySet()) {
            assertArrayEquals(eager.weights().get(name), resident.weights().get(name), name + " after 3 steps");
        }
        for (int i = 0; i < cpu.losses().size(); i++) {
            // Different summation orders than the CPU's blocked kernels; a wrong term would move the loss by O(1).
            assertEquals(cpu.losses().get(i), resident.losses().get(i), 1e-4 * cpu.losses().get(i), "loss " + i);
        }
        // The weights that came back, and the checkpoint's: finite (a missed sync leaves NaN in checking mode) and
        // within 3 Adam steps of lr 1e-3 of the CPU's (its rounding noise can flip the sign of a tiny gradient).
        assertNearTheCpu("teacher", cpu, resident, 3.5e-3);
        // Op by op, every op copies its inputs in and its outputs back; a resident step copies the batch in and the
        // gradients back, and the optimizer and EMA still copy the parameters and their state.
        Device.Traffic e = eager.traffic(), r = resident.traffic();
        System.out.printf("teacher, 3 steps at batch 4: op by op %d copies, %.2f MB; resident %d copies, %.2f MB%n",
                e.uploads() + e.downloads(), e.bytes() / 1e6, r.uploads() + r.downloads(), r.bytes() / 1e6);
        System.out.println("teacher, step 2: op by op " + eager.last() + "; resident " + resident.last());
        assertTrue(r.bytes() * 3 < e.bytes(), "bytes: resident " + r.bytes() + ", op by op " + e.bytes());
        assertSteadyStepStaysOnTheDevice("teacher", eager.last(), resident.last());
    }

    /**
     * A step between checkpoints, resident with the training state on the device: one wait for the device, and
     * what comes back is a few loss and norm partials, never a weight, a gradient or an activation (op by op
     * moves each op's operands).
     */
    private static void assertSteadyStepStaysOnTheDevice(String what, Device.Traffic eager, Device.Traffic resident) {
        assertTrue(resident.synchronizations() <= 2 && resident.waits() * 20 < eager.waits(),
                what + ": step 2 resident " + resident + ", op by op " + eager);
        assertTrue(resident.downloadedBytes() * 100 < eager.downloadedBytes() && resident.downloadedBytes() < 4096,
                what + ": step 2 resident " + resident + ", op by op " + eager);
    }

    private ConsistencyDistiller.Options distillOptions(double featureWeight) {
        return new ConsistencyDistiller.Options(3, 2, 6, 0.95, ConsistencyDistiller.Distance.PSEUDO_HUBER,
                ConsistencyDistiller.Weighting.INVERSE_STEP, false, 1e-2, 1.0, 3, 3, 10, 4, featureWeight,
                ConsistencyDistiller.Decay.NONE, 0.9, false, 1);
    }

    private Run distill(Ops backend, String name, double width, double featureWeight) {
        Steps steps = new Steps();
        Map<String, float[]> weights = new LinkedHashMap<>();
        Device.Traffic before = ops.device().traffic();
        UNetConfig tc = config(false);
        UNetConfig sc = StudentInit.config(tc, width, 1);
        try (UNet teacher = new UNet(tc, false); UNet student = new UNet(sc, true); UNet target = new UNet(sc, false);
             Workspace tws = new Workspace()) {
            ai.onestep.diffusion.DistillationNets.randomTeacherSlicedStudent(teacher, student, target);
            var d = new ConsistencyDistiller(backend, student, target, new EdmDenoiser(teacher, backend, tws),
                    labelledData(), null, distillOptions(featureWeight),
                    dir.resolve(name + ".safetensors"), Map.of());
            d.run(null, steps);
            steps.losses.addAll(d.featureLosses());
            keepWeights(student, weights);
        }
        return finish(name, steps, weights, before);
    }

    @Test
    void distillationMatchesOpByOpBitForBit() {
        // Full width (the teacher's Heun step, the target network, the denoiser warm-up step), and half width with
        // feature distillation (taps captured from the teacher's first evaluation, projections, per-tap weights).
        for (double[] c : new double[][] {{1.0, 0}, {0.5, 2.0}}) {
            String what = "width " + c[0] + ", feature weight " + c[1];
            ops.residentBlocks(false);
            Run eager = distill(ops, "eager", c[0], c[1]);
            ops.residentBlocks(true);
            Run resident = distill(ops, "resident", c[0], c[1]);
            Run cpu = distill(OpsTesting.CPU, "cpu", c[0], c[1]);
            assertEquals(eager.losses(), resident.losses(), what + ": losses");
            for (String name : eager.weights().keySet()) {
                assertArrayEquals(eager.weights().get(name), resident.weights().get(name), what + ": " + name);
            }
            for (int i = 0; i < cpu.losses().size(); i++) {
                assertEquals(cpu.losses().get(i), resident.losses().get(i), 1e-3 * Math.abs(cpu.losses().get(i)) + 1e-9,
                        what + ": loss " + i + " vs the cpu");
            }
            // Live and saved (EMA) weights: finite, and within 3 Adam steps of lr 1e-2 of the CPU's.
            assertNearTheCpu(what, cpu, resident, 3.5e-2);
            System.out.println("distillation (" + what + "), step 2: op by op " + eager.last() + "; resident "
                    + resident.last());
            Device.Traffic e = eager.traffic(), r = resident.traffic();
            System.out.printf("distillation (%s), 3 steps at batch 2: op by op %.2f MB in %d waits; resident %.2f MB in"
                    + " %d waits%n", what, e.bytes() / 1e6, e.waits(), r.bytes() / 1e6, r.waits());
            assertTrue(r.bytes() * 2 < e.bytes(), what + ": bytes: resident " + r.bytes() + ", op by op " + e.bytes());
            assertSteadyStepStaysOnTheDevice(what, eager.last(), resident.last());
        }
    }

    @Test
    void classifierTrainingKeepsItsStateOnTheDevice() {
        // The FID classifier's training adopts its weights, gradients and moments (its cross-entropy is a host
        // function of the logits, so its ops run one by one): the same losses and weights as the cpu backend.
        List<List<Double>> losses = new ArrayList<>();
        List<float[]> weights = new ArrayList<>();
        long[] ownedDuring = new long[1];
        for (Ops backend : new Ops[] {ops, OpsTesting.CPU}) {
            List<Double> l = new ArrayList<>();
            try (ai.onestep.model.Classifier c = new ai.onestep.model.Classifier(1, 8, 3, true)) {
                ai.onestep.eval.ClassifierTrainer.train(backend, c, labelledData(), 3, 4, 1e-3, 7, (step, loss, note) -> {
                    l.add(loss);
                    if (backend == ops) {
                        ownedDuring[0] = ops.ownedTensors()[0];
                    }
                });
                weights.add(DeviceCheck.values(c.parameters()));
            }
            losses.add(l);
        }
        for (int i = 0; i < 3; i++) {
            assertEquals(losses.get(1).get(i), losses.get(0).get(i), 1e-4 * losses.get(1).get(i), "loss " + i);
        }
        for (int i = 0; i < weights.get(0).length; i++) {
            assertEquals(weights.get(1)[i], weights.get(0)[i], 3.5e-3, "weight " + i);  // 3 AdamW steps of lr 1e-3
        }
        assertTrue(ownedDuring[0] > 0, "the device owned the state during the run");
        assertEquals(0, ops.ownedTensors()[0], "and gave it back at the end");
    }

    @Test
    void checkingModeCatchesHostAccessThatTheDeviceWouldMiss() {
        try (TensorArena a = new TensorArena()) {
            Tensor x = a.allocate(Layout.ROWS, 64), y = a.allocate(Layout.ROWS, 64), z = a.allocate(Layout.ROWS, 64);
            Noise.gaussian(x, 1, 0);
            // A host read of what an op of the block wrote sees NaN (the device holds the value).
            float[] seen = new float[1];
            ops.runResident("read", new Tensor[] {z}, () -> {
                ops.scale(x, 2f, y);
                seen[0] = y.get(0);
                ops.add(y, x, z);
            });
            assertTrue(Float.isNaN(seen[0]), "host read inside the block: " + seen[0]);
            assertEquals(3 * x.get(5), z.get(5), 1e-6f, "the declared result came back");
            assertTrue(Float.isNaN(y.get(5)), "an undeclared tensor stays stale on the host (NaN in checking mode)");
            // A host write to a tensor an op already read: the device would keep the old values.
            CudaException e = assertThrows(CudaException.class, () -> ops.runResident("write", new Tensor[] {z}, () -> {
                ops.scale(x, 2f, z);
                x.set(3, 7f);
                ops.add(z, x, z);
            }));
            assertTrue(e.getMessage().contains("written on the host after an op") && e.getMessage().contains("[64]"),
                    e.getMessage());
            // A host write into memory an op wrote earlier in the block (a workspace reused), then read by an op.
            Noise.gaussian(x, 2, 0);
            e = assertThrows(CudaException.class, () -> ops.runResident("reuse", new Tensor[] {z}, () -> {
                ops.scale(x, 2f, y);
                y.set(0, 1f);
                ops.add(y, x, z);
            }));
            assertTrue(e.getMessage().contains("written on the host after an op of the block had written it"),
                    e.getMessage());
        }
    }

    @Test
    void aBlockThatMeetsAHostOnlyOpRunsAgainOpByOp() {
        // Heads of 160 features have no device kernel: the block is abandoned before anything reached the host and
        // runs again op by op, with the same result as a plain eager run.
        try (TensorArena a = new TensorArena()) {
            int t = 4, c = 160;
            Tensor x = a.allocate(Layout.ROWS, 1, t, c), q = a.allocate(Layout.ROWS, 1, t, c);
            Tensor o1 = a.allocate(Layout.ROWS, 1, t, c), o2 = a.allocate(Layout.ROWS, 1, t, c);
            Tensor lse = a.allocate(Layout.ROWS, 1, 1, t);
            Noise.gaussian(x, 3, 0);
            Runnable eager = () -> {
                ops.scale(x, 0.5f, q);
                ops.attention(q, x, x, 1, o1, lse);
            };
            ops.residentBlocks(false);
            eager.run();
            ops.residentBlocks(true);
            ops.checkHostAccess(false);
            float[] want = o1.toArray();
            ops.runResident("big heads", new Tensor[] {o2}, () -> {
                ops.scale(x, 0.5f, q);
                ops.attention(q, x, x, 1, o2, lse);
            });
            assertArrayEquals(want, o2.toArray());
            assertTrue(ops.eagerBlocks().contains("big heads"), "listed: " + ops.eagerBlocks());
        }
    }

    @Test
    void adoptingWeightsDropsGraphsThatHoldThemAsConstants() {
        // A graph captured before training holds the (unregistered) weights as constants; once the device owns them
        // and an op changes them, the next pass must see the new values, not replay the old graph.
        ops.checkHostAccess(false);
        try (UNet net = CudaGraphTest.randomNet(CudaGraphTest.config(32), 31); TensorArena a = new TensorArena();
             Workspace ws = new Workspace(); Workspace wc = new Workspace()) {
            var f = new ai.onestep.diffusion.ConsistencyDenoiser(net, ops, ws, true);
            Tensor x = a.allocate(Layout.NHWC, 1, 8, 8, 2), y = a.allocate(Layout.NHWC, 1, 8, 8, 2);
            Tensor want = a.allocate(Layout.NHWC, 1, 8, 8, 2);
            Noise.gaussian(x, 9, 0);
            double[] t = {0.9};
            for (int i = 0; i < 3; i++) {
                f.denoise(x, t, null, y);  // measured, captured, replayed
            }
            List<Tensor> weights = net.weightTensors();
            ops.adopt(weights);
            try {
                Tensor w = net.parameters().get("conv_out.weight").value();
                ops.scale(w, 0.5f, w);
                f.denoise(x, t, null, y);
            } finally {
                ops.release(weights);
            }
            new ai.onestep.diffusion.ConsistencyDenoiser(net, OpsTesting.CPU, wc).denoise(x, t, null, want);
            OpsTesting.assertClose("pass after the owned weights changed", y, want, 1e-4);
        }
    }

    @Test
    void aHostOnlyOpSeesAndUpdatesOwnedState() {
        // An op without a device kernel runs on the host: owned inputs come to the host first, owned outputs go
        // back to the device after it.
        ops.checkHostAccess(false);
        try (TensorArena a = new TensorArena()) {
            int t = 4, c = 160;
            Tensor q = a.allocate(Layout.ROWS, 1, t, c), o = a.allocate(Layout.ROWS, 1, t, c);
            Tensor lse = a.allocate(Layout.ROWS, 1, 1, t), copy = a.allocate(Layout.ROWS, 1, t, c);
            Tensor wantO = a.allocate(Layout.ROWS, 1, t, c), wantLse = a.allocate(Layout.ROWS, 1, 1, t);
            Noise.gaussian(q, 5, 0);
            Tensor q2 = a.copyOf(q);
            OpsTesting.CPU.scale(q2, 0.5f, q2);
            OpsTesting.CPU.attention(q2, q2, q2, 1, wantO, wantLse);
            List<Tensor> owned = List.of(q, o);
            ops.adopt(owned);
            try {
                ops.scale(q, 0.5f, q);                  // on the device: the host copy of q is stale now
                ops.attention(q, q, q, 1, o, lse);      // heads of 160: on the host
                ops.scale(o, 1f, copy);                 // reads o's device copy
                assertArrayEquals(wantO.toArray(), copy.toArray(), "the host op saw q's device value, the device its o");
            } finally {
                ops.release(owned);
            }
            assertArrayEquals(wantO.toArray(), o.toArray());
        }
    }

    @Test
    void residentMemoryGrowsByChunksInsteadOfFailing() {
        // Arenas of 256 KiB: enough for any one op, but a training step needs more, so the resident arenas add
        // chunks, and the result is the same as op by op.
        try (CudaOps small = new CudaOps(new EmulatedDevice(CudaBackend.emulatedLibrary().toString()), 256L << 10, 2)) {
            small.checkHostAccess(true);
            small.residentBlocks(false);
            CudaOps saved = ops;
            ops = small;
            try {
                Run eager = trainTeacher(small, "small-eager");
                small.residentBlocks(true);
                Run resident = trainTeacher(small, "small-resident");
                assertEquals(eager.losses(), resident.losses());
                assertTrue(small.residentBytes() > 2 * (256L << 10), "resident bytes " + small.residentBytes());
            } finally {
                ops = saved;
            }
        }
    }
}
