package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.kernels.OnestepKernels;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The split-keys attention (kernel 1 of {@code onestep_attention_forward_qkv_kernel_typed}: 16 query rows a block,
 * the keys over its warps), which {@link CudaDevice} times against the default kernel per shape, through the Java
 * bindings: on a packed fp16/bf16 projection with a bias it agrees with the default kernel to the 16-bit rounding,
 * and shapes it cannot take are refused by name. The kernel's own checks against a double reference are
 * kernels/test/test_attention.cpp (check_split).
 */
class SplitKeysAttentionTest {

    @Test
    void agreesWithTheDefaultKernelAndRefusesWhatItCannotTake() {
        EmulatedDeviceTest.require();
        int n = 1, heads = 4, t = 37, d = 32, elems = n * t * 3 * heads * d, outs = n * t * heads * d;
        SplittableRandom r = new SplittableRandom(11);
        try (EmulatedDevice dev = new EmulatedDevice(CudaBackend.emulatedLibrary().toString());
             DeviceArena a = new DeviceArena(dev, "split keys test", 1 << 22); TensorArena host = new TensorArena()) {
            for (Precision p : new Precision[] {Precision.FP16, Precision.BF16}) {
                Tensor h = host.allocate(elems), hb = host.allocate(3 * heads * d);
                for (long i = 0; i < h.size(); i++) {
                    h.set(i, (float) r.nextGaussian());
                }
                for (long i = 0; i < hb.size(); i++) {
                    hb.set(i, (float) (0.3 * r.nextGaussian()));
                }
                long wide = a.allocate(4L * elems, "fp32 qkv"), qkv = a.allocate(2L * elems, "qkv");
                long wideB = a.allocate(4L * hb.size(), "fp32 bias"), bias = a.allocate(2L * hb.size(), "bias");
                dev.upload(wide, h.segment(), 4L * elems, () -> "qkv");
                dev.upload(wideB, hb.segment(), 4L * hb.size(), () -> "bias");
                dev.convert(wide, Precision.FP32, qkv, p, elems, "qkv", () -> "test");
                dev.convert(wideB, Precision.FP32, bias, p, hb.size(), "bias", () -> "test");
                long[] o = new long[2];
                float[][] got = new float[2][];
                for (int kernel = 0; kernel < 2; kernel++) {
                    o[kernel] = a.allocate(2L * outs, "o");
                    long lse = a.allocate(4L * n * heads * t, "lse"), o32 = a.allocate(4L * outs, "o32");
                    dev.attentionQkv(qkv, bias, o[kernel], lse, n, heads, t, d, kernel, p, () -> "test");
                    dev.convert(o[kernel], p, o32, Precision.FP32, outs, "o", () -> "test");
                    Tensor ho = host.allocate(outs);
                    dev.download(ho.segment(), o32, 4L * outs, () -> "o");
                    got[kernel] = ho.toArray();
                }
                // Both round P and o to the type, with the sums in different orders: a few units of its rounding
                // (emulated: fp16 1.5e-4, bf16 1.3e-3; the bounds are ~4x).
                double err = IgemmConvTest.relL2(got[1], got[0]), bound = p == Precision.FP16 ? 6e-4 : 5e-3;
                assertTrue(err < bound, p.label() + ": split keys vs default, relative L2 " + err);
            }
            long any = a.allocate(1 << 16, "any");
            CudaException e = assertThrows(CudaException.class, () -> dev.attentionQkv(any, 0, any, any, 1, 1, 4, 128,
                    1, Precision.FP16, () -> "mid_block.attentions.0"));
            assertEquals(OnestepKernels.ERROR_UNSUPPORTED, e.status());
            assertTrue(e.getMessage().contains("onestep_attention_forward_qkv_kernel_typed(B=1, H=1, Tq=4, Tk=4, D=128")
                    && e.getMessage().contains("mid_block.attentions.0"), e.getMessage());
        }
    }
}
