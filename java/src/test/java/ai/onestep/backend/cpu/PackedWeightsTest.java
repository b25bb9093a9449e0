package ai.onestep.backend.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import ai.onestep.backend.OpsTesting;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The cpu backend's cache of repacked weights for registered (constant) tensors. */
class PackedWeightsTest {
    private static Tensor conv(CpuOps ops, TensorArena a, Tensor x, Tensor w, Tensor b) {
        Tensor y = a.allocate(Layout.NHWC, 2, 7, 7, 40);
        ops.conv2d(x, w, b, 1, 1, y);
        return y;
    }

    @Test
    void registeredWeightsGiveTheSameBitsAndAreDroppedWhenUpdated() {
        CpuOps cached = new CpuOps(2), plain = new CpuOps(2);
        try (TensorArena a = new TensorArena(); TensorArena model = new TensorArena()) {
            Tensor x = OpsTesting.randn(a, 1, Layout.NHWC, 2, 7, 7, 24);
            // 40 output channels: the last panel is partly zeros, which the cached panels must hold too.
            Tensor w = OpsTesting.randn(model, 2, Layout.HWIO, 3, 3, 24, 40), b = OpsTesting.randn(model, 3, 40);
            Tensor lw = OpsTesting.randn(model, 4, 24, 40);
            cached.registerParameters(List.of(w, b, lw));
            assertEquals(0, cached.cachedWeightPanels());
            Tensor want = conv(plain, a, x, w, b);
            assertArrayEquals(want.toArray(), conv(cached, a, x, w, b).toArray(), "first call packs and caches");
            assertEquals(1, cached.cachedWeightPanels());
            assertArrayEquals(want.toArray(), conv(cached, a, x, w, b).toArray(), "second call reuses the panels");
            Tensor rows = a.allocate(2, 7, 7, 40), rowsPlain = a.allocate(2, 7, 7, 40);
            cached.linear(x, lw, null, rows);
            plain.linear(x, lw, null, rowsPlain);
            assertArrayEquals(rowsPlain.toArray(), rows.toArray(), "linear layers use the cache too");
            assertEquals(2, cached.cachedWeightPanels());

            // An optimizer step through the backend changes w: its panels go, and the next call sees the new weights.
            Tensor g = OpsTesting.randn(a, 5, Layout.HWIO, 3, 3, 24, 40);
            Tensor m = a.allocate(Layout.HWIO, 3, 3, 24, 40), v = a.allocate(Layout.HWIO, 3, 3, 24, 40);
            cached.adamStep(w, g, m, v, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0f, false);
            assertEquals(1, cached.cachedWeightPanels(), "only the updated tensor's panels are dropped");
            Tensor moved = conv(plain, a, x, w, b);
            assertFalse(java.util.Arrays.equals(want.toArray(), moved.toArray()), "the step moved the weights");
            assertArrayEquals(moved.toArray(), conv(cached, a, x, w, b).toArray(), "repacked after the update");
            cached.ema(lw, OpsTesting.randn(a, 6, 24, 40), 0.5f);
            assertEquals(1, cached.cachedWeightPanels(), "an EMA update drops the linear weight's panels");
            cached.linear(x, lw, null, rows);
            plain.linear(x, lw, null, rowsPlain);
            assertArrayEquals(rowsPlain.toArray(), rows.toArray(), "the linear layer sees the EMA's weights");
        }
        // The model's arena is closed: registering anything else drops the dead entries.
        try (TensorArena other = new TensorArena()) {
            cached.registerParameters(List.of(other.allocate(4)));
            assertEquals(0, cached.cachedWeightPanels());
        }
    }

    @Test
    void unregisteredOrReshapedWeightsAreRepacked() {
        CpuOps ops = new CpuOps(1);
        try (TensorArena a = new TensorArena()) {
            Tensor x = OpsTesting.randn(a, 1, 6, 24), w = OpsTesting.randn(a, 2, 24, 40);
            Tensor y = a.allocate(6, 40);
            ops.linear(x, w, null, y);
            assertEquals(0, ops.cachedWeightPanels(), "nothing registered, nothing cached");
            ops.registerParameters(List.of(w));
            // The same memory used as a (40, 24) matrix first: its panels are for that shape, so the (24, 40) use
            // must repack rather than reuse them.
            Tensor wt = w.reshape(40, 24), xt = OpsTesting.randn(a, 3, 6, 40), yt = a.allocate(6, 24);
            ops.linear(xt, wt, null, yt);
            Tensor want = a.allocate(6, 40);
            new CpuOps(1).linear(x, w, null, want);
            ops.linear(x, w, null, y);
            assertArrayEquals(want.toArray(), y.toArray(), "a use under another shape repacks for that shape");
        }
    }
}
