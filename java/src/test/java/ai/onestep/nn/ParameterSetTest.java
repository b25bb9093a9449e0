package ai.onestep.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.OpsTesting;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorException;
import java.util.List;
import org.junit.jupiter.api.Test;

class ParameterSetTest {
    @Test
    void parametersAreOrderedByNameAndCounted() {
        try (ParameterSet ps = new ParameterSet()) {
            ps.add("conv_in.weight", Layout.HWIO, 3, 3, 4, 8);
            ps.add("conv_in.bias", 8);
            ps.add("time_embedding.linear_1.weight", 8, 32);
            List<String> names = ps.list().stream().map(Parameter::name).toList();
            assertEquals(List.of("conv_in.bias", "conv_in.weight", "time_embedding.linear_1.weight"), names);
            assertEquals(3, ps.size());
            assertEquals(3 * 3 * 4 * 8 + 8 + 8 * 32, ps.count());
            Parameter w = ps.get("conv_in.weight");
            assertEquals(Layout.HWIO, w.value().layout());
            assertArrayEquals(w.value().shape(), w.grad().shape());
            assertEquals(2L * Float.BYTES * ps.count(), ps.allocatedBytes(), "values + gradients");
        }
    }

    @Test
    void zeroGradClearsAccumulatedGradients() {
        try (ParameterSet ps = new ParameterSet()) {
            Parameter a = ps.add("a", 5, 7);
            Parameter b = ps.add("b", 3);
            a.grad().copyFrom(OpsTesting.randn(41, 35));
            b.grad().fill(2f);
            ps.zeroGrad();
            assertArrayEquals(new float[35], a.grad().toArray());
            assertArrayEquals(new float[3], b.grad().toArray());
        }
    }

    @Test
    void badNamesDuplicatesAndMissingNamesAreRefused() {
        try (ParameterSet ps = new ParameterSet()) {
            ps.add("down_blocks.0.resnets.1.conv1.weight", 2);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> ps.add("down_blocks.0.resnets.1.conv1.weight", 2));
            assertTrue(e.getMessage().contains("already registered"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> ps.add("bad name", 2));
            assertThrows(IllegalArgumentException.class, () -> ps.add("trailing.", 2));
            e = assertThrows(IllegalArgumentException.class, () -> ps.get("conv_out.bias"));
            assertTrue(e.getMessage().contains("conv_out.bias"), e.getMessage());
        }
    }

    @Test
    void valuesOnlySetsHaveNoGradientsAndMirrorsCopyValues() {
        try (ParameterSet ps = new ParameterSet()) {
            ps.add("w", 4, 4).value().copyFrom(OpsTesting.randn(3, 16));
            try (ParameterSet shadow = ps.mirror(false)) {
                assertNull(shadow.get("w").grad());
                assertThrows(IllegalStateException.class, shadow::zeroGrad);
                shadow.copyValuesFrom(ps);
                assertArrayEquals(ps.get("w").value().toArray(), shadow.get("w").value().toArray());
            }
            try (ParameterSet other = ParameterSet.withoutGradients()) {
                other.add("w", 16);
                assertThrows(IllegalArgumentException.class, () -> other.copyValuesFrom(ps));
            }
        }
    }

    @Test
    void closingTheSetFreesValuesAndGradients() {
        ParameterSet ps = new ParameterSet();
        Tensor v = ps.add("w", 4).value();
        ps.close();
        assertThrows(TensorException.class, () -> v.get(0));
    }
}
