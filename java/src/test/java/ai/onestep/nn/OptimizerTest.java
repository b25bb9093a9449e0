package ai.onestep.nn;

import static ai.onestep.backend.OpsTesting.CPU;
import static ai.onestep.backend.OpsTesting.NAIVE;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.Ops;
import ai.onestep.backend.OpsTesting;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.List;
import java.util.function.BiFunction;
import org.junit.jupiter.api.Test;

class OptimizerTest {

    /** A small model: three tensors of ragged sizes and different ranks. */
    private static ParameterSet model() {
        ParameterSet ps = new ParameterSet();
        ps.add("mid_block.resnets.0.conv1.weight", Layout.HWIO, 3, 3, 2, 5).value().copyFrom(OpsTesting.randn(1, 90));
        ps.add("mid_block.resnets.0.conv1.bias", 5).value().copyFrom(OpsTesting.randn(2, 5));
        ps.add("conv_out.weight", 7, 3).value().copyFrom(OpsTesting.randn(3, 21));
        return ps;
    }

    /**
     * The quadratic {@code f(p) = 1/2 sum_i a_i (p_i - c_i)^2} with curvatures a_i in [0.5, 5]: writes its
     * gradient {@code a (p - c)} into every parameter's grad and returns {@code ||p - c|| / ||c||}.
     */
    private static double quadraticGradient(ParameterSet ps) {
        double num = 0;
        double den = 0;
        int seed = 0;
        for (Parameter p : ps) {
            double[] c = OpsTesting.randn(1000 + seed++, (int) p.size());
            float[] x = p.value().toArray();
            float[] g = new float[x.length];
            for (int i = 0; i < x.length; i++) {
                double a = 0.5 + 4.5 * (i % 10) / 9.0;
                g[i] = (float) (a * (x[i] - c[i]));
                num += (x[i] - c[i]) * (x[i] - c[i]);
                den += c[i] * c[i];
            }
            p.grad().copyFrom(g);
        }
        return Math.sqrt(num / den);
    }

    private static void convergesOnQuadratic(BiFunction<Ops, ParameterSet, Optimizer> make) {
        try (ParameterSet ps = model(); Optimizer opt = make.apply(CPU, ps)) {
            LearningRateSchedule lr = LearningRateSchedule.warmupCosine(0.2, 20, 1000);
            double start = quadraticGradient(ps);
            for (int k = 0; k < 1000; k++) {
                quadraticGradient(ps);
                opt.step(lr.lr(opt.steps()));
            }
            double end = quadraticGradient(ps);
            assertTrue(end < 1e-4 * start, "distance to the minimum went from " + start + " to " + end);
        }
    }

    @Test
    void adamWAndRAdamConvergeOnAQuadratic() {
        convergesOnQuadratic((ops, ps) -> new AdamW(ops, ps, AdamSettings.adamW(1e-4f)));
        convergesOnQuadratic((ops, ps) -> AdamW.adam(ops, ps, 0f));
        convergesOnQuadratic(RAdam::new);
    }

    /** The optimizer over a set must be exactly one backend op per tensor with the set's settings. */
    private static void stepEqualsPerTensorOps(Ops ops, AdamSettings s, boolean radam) {
        try (ParameterSet ps = model(); TensorArena ref = new TensorArena();
             Optimizer opt = radam ? new RAdam(ops, ps, s) : new AdamW(ops, ps, s)) {
            List<Parameter> list = ps.list();
            Tensor[] p = new Tensor[list.size()];
            Tensor[] m = new Tensor[list.size()];
            Tensor[] v = new Tensor[list.size()];
            for (int i = 0; i < p.length; i++) {
                p[i] = ref.copyOf(list.get(i).value());
                m[i] = ref.allocate(p[i].shape());
                v[i] = ref.allocate(p[i].shape());
            }
            for (int t = 1; t <= 8; t++) {
                float lr = 0.01f * t;
                for (int i = 0; i < p.length; i++) {
                    Tensor g = list.get(i).grad();
                    g.copyFrom(OpsTesting.randn(100L * t + i, (int) g.size()));
                    if (radam) {
                        ops.radamStep(p[i], g, m[i], v[i], t, lr, s.beta1(), s.beta2(), s.eps(), s.weightDecay(),
                                s.decoupled());
                    } else {
                        ops.adamStep(p[i], g, m[i], v[i], t, lr, s.beta1(), s.beta2(), s.eps(), s.weightDecay(),
                                s.decoupled());
                    }
                }
                opt.step(lr);
            }
            assertEquals(8, opt.steps());
            for (int i = 0; i < p.length; i++) {
                String name = list.get(i).name();
                assertArrayEquals(p[i].toArray(), list.get(i).value().toArray(), name);
                assertArrayEquals(m[i].toArray(), opt.state().get(name + ".exp_avg").toArray(), name);
                assertArrayEquals(v[i].toArray(), opt.state().get(name + ".exp_avg_sq").toArray(), name);
            }
        }
    }

    @Test
    void stepOverTheSetEqualsPerTensorOpCalls() {
        for (Ops ops : new Ops[] {NAIVE, CPU}) {
            stepEqualsPerTensorOps(ops, AdamSettings.adamW(0.01f), false);
            stepEqualsPerTensorOps(ops, AdamSettings.adam(0.01f).withBetas(0.8f, 0.99f), false);
            stepEqualsPerTensorOps(ops, AdamSettings.adam(0f), true);
            stepEqualsPerTensorOps(ops, AdamSettings.adamW(0.1f).withEps(1e-6f), true);
        }
    }

    @Test
    void stateIsNamedLikePyTorchAndTheStepCountResumes() {
        try (ParameterSet ps = model(); AdamW opt = new AdamW(CPU, ps, AdamSettings.adamW(0f))) {
            assertEquals(List.of("conv_out.weight.exp_avg", "conv_out.weight.exp_avg_sq",
                            "mid_block.resnets.0.conv1.bias.exp_avg", "mid_block.resnets.0.conv1.bias.exp_avg_sq",
                            "mid_block.resnets.0.conv1.weight.exp_avg", "mid_block.resnets.0.conv1.weight.exp_avg_sq"),
                    List.copyOf(opt.state().keySet()));
            assertEquals(0, opt.steps());
            opt.resume(41);
            ps.get("conv_out.weight").grad().fill(1f);
            opt.step(0.1f);
            assertEquals(42, opt.steps());
        }
    }

    @Test
    void badUseIsRefusedWithAClearMessage() {
        try (ParameterSet valuesOnly = ParameterSet.withoutGradients()) {
            valuesOnly.add("w", 3);
            assertThrows(IllegalArgumentException.class, () -> new RAdam(CPU, valuesOnly));
        }
        try (ParameterSet ps = model(); AdamW opt = new AdamW(CPU, ps, AdamSettings.adamW(0f))) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> opt.step(Float.NaN));
            assertTrue(e.getMessage().contains("AdamW: learning rate"), e.getMessage());
            ps.add("late.weight", 2);
            IllegalStateException s = assertThrows(IllegalStateException.class, () -> opt.step(0.1f));
            assertTrue(s.getMessage().contains("grew from 3 to 4"), s.getMessage());
        }
        assertThrows(IllegalArgumentException.class, () -> AdamSettings.adamW(0f).withBetas(1f, 0.9f));
    }
}
