package ai.onestep.backend;

import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.Arrays;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;

class ScratchOpDetTest {
    static void check(String name, Supplier<float[]> f) {
        float[] first = f.get();
        for (int i = 0; i < 30; i++) {
            if (!Arrays.equals(first, f.get())) {
                System.out.println("NONDET " + name + " at repeat " + i);
                return;
            }
        }
        System.out.println("det " + name);
    }

    @Test
    void probe() {
        Ops o = OpsTesting.CPU;
        try (TensorArena a = new TensorArena()) {
            for (int[] s : new int[][] {{4, 8, 8, 8, 8}, {4, 4, 4, 8, 8}, {32, 28, 28, 32, 32}, {4, 8, 8, 16, 8}}) {
                int n = s[0], h = s[1], w = s[2], ci = s[3], co = s[4];
                Tensor x = OpsTesting.randn(a, 1, Layout.NHWC, n, h, w, ci);
                Tensor wt = OpsTesting.randn(a, 2, Layout.HWIO, 3, 3, ci, co);
                Tensor dy = OpsTesting.randn(a, 3, Layout.NHWC, n, h, w, co);
                Tensor dx = a.allocate(Layout.NHWC, n, h, w, ci);
                Tensor dw = a.allocate(Layout.HWIO, 3, 3, ci, co);
                Tensor db = a.allocate(co);
                String tag = Arrays.toString(s);
                check("conv dx " + tag, () -> { o.conv2dBackward(x, wt, dy, 1, 1, dx, null, null); return dx.toArray(); });
                check("conv dw " + tag, () -> { dw.fill(0); db.fill(0); o.conv2dBackward(x, wt, dy, 1, 1, null, dw, db); return dw.toArray(); });
                check("conv db " + tag, () -> { dw.fill(0); db.fill(0); o.conv2dBackward(x, wt, dy, 1, 1, null, dw, db); return db.toArray(); });
                Tensor w1 = OpsTesting.randn(a, 4, Layout.HWIO, 1, 1, ci, co);
                check("conv1x1 dw " + tag, () -> { dw.fill(0); Tensor d1 = a.allocate(Layout.HWIO, 1, 1, ci, co); o.conv2dBackward(x, w1, dy, 1, 1 - 1, null, d1, null); return d1.toArray(); });
                Tensor g = OpsTesting.randn(a, 5, ci), b = OpsTesting.randn(a, 6, ci);
                Tensor mean = a.allocate(n, 4), rstd = a.allocate(n, 4), y = a.allocate(Layout.NHWC, n, h, w, ci);
                o.groupNorm(x, g, b, null, null, 4, 1e-5f, true, y, mean, rstd);
                Tensor dyx = OpsTesting.randn(a, 7, Layout.NHWC, n, h, w, ci);
                Tensor dg = a.allocate(ci), dbb = a.allocate(ci);
                check("gn dgamma " + tag, () -> { dg.fill(0); dbb.fill(0); o.groupNormBackward(x, g, b, null, null, 4, true, mean, rstd, dyx, dx, dg, dbb, null, null); return dg.toArray(); });
                check("gn dx " + tag, () -> { o.groupNormBackward(x, g, b, null, null, 4, true, mean, rstd, dyx, dx, dg, dbb, null, null); return dx.toArray(); });
                Tensor tok = x.reshape(Layout.ROWS, n, h * w, ci);
                Tensor lw = OpsTesting.randn(a, 8, ci, co), ldw = a.allocate(ci, co), ldb = a.allocate(co);
                Tensor ldy = dy.reshape(Layout.ROWS, n, h * w, co);
                check("linear dw " + tag, () -> { ldw.fill(0); ldb.fill(0); o.linearBackward(tok, lw, ldy, null, ldw, ldb); return ldw.toArray(); });
                check("linear db " + tag, () -> { ldw.fill(0); ldb.fill(0); o.linearBackward(tok, lw, ldy, null, ldw, ldb); return ldb.toArray(); });
                Tensor q = OpsTesting.randn(a, 9, n, h * w, ci), k = OpsTesting.randn(a, 10, n, h * w, ci), v = OpsTesting.randn(a, 11, n, h * w, ci);
                Tensor out = a.allocate(n, h * w, ci), lse = a.allocate(n, 2, h * w);
                o.attention(q, k, v, 2, out, lse);
                Tensor dO = OpsTesting.randn(a, 12, n, h * w, ci), dq = a.allocate(n, h * w, ci), dk = a.allocate(n, h * w, ci), dv = a.allocate(n, h * w, ci);
                check("attn dq " + tag, () -> { o.attentionBackward(q, k, v, out, lse, dO, 2, dq, dk, dv); return dq.toArray(); });
                check("attn dk " + tag, () -> { o.attentionBackward(q, k, v, out, lse, dO, 2, dq, dk, dv); return dk.toArray(); });
                Tensor sv = a.allocate(n, ci);
                check("sumPerChannel " + tag, () -> { o.sumPerChannel(dyx, sv); return sv.toArray(); });
                check("sumsq " + tag, () -> new float[] {(float) o.sumOfSquares(dyx)});
                Tensor yy = a.allocate(Layout.NHWC, n, h, w, co);
                check("conv fwd " + tag, () -> { o.conv2d(x, wt, null, 1, 1, yy); return yy.toArray(); });
            }
        }
    }
}
