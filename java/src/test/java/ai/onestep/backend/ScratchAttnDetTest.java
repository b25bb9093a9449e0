package ai.onestep.backend;

import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.Arrays;
import org.junit.jupiter.api.Test;

class ScratchAttnDetTest {
    @Test
    void probe() {
        for (int threads : new int[] {1, 2}) {
            Ops o = new CpuOps(threads);
            try (TensorArena a = new TensorArena()) {
                int n = 4, t = 64, ci = 8;
                Tensor q = OpsTesting.randn(a, 9, n, t, ci), k = OpsTesting.randn(a, 10, n, t, ci), v = OpsTesting.randn(a, 11, n, t, ci);
                Tensor out = a.allocate(n, t, ci), lse = a.allocate(n, 2, t);
                o.attention(q, k, v, 2, out, lse);
                Tensor dO = OpsTesting.randn(a, 12, n, t, ci), dq = a.allocate(n, t, ci), dk = a.allocate(n, t, ci), dv = a.allocate(n, t, ci);
                o.attentionBackward(q, k, v, out, lse, dO, 2, dq, dk, dv);
                float[] ref = dq.toArray();
                int bad = 0;
                for (int i = 0; i < 300; i++) {
                    // Interleave other work that reuses the same per-thread scratch with other shapes.
                    Tensor q2 = OpsTesting.randn(a, i, 1, 17, 24), l2 = a.allocate(1, 3, 17), o2 = a.allocate(1, 17, 24);
                    o.attention(q2, q2, q2, 3, o2, l2);
                    o.attentionBackward(q, k, v, out, lse, dO, 2, dq, dk, dv);
                    if (!Arrays.equals(ref, dq.toArray())) {
                        bad++;
                    }
                }
                System.out.println("threads " + threads + " mismatches " + bad);
            }
        }
    }
}
