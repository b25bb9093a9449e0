package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.kernels.OnestepKernels;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The attention kernels {@link CudaDevice} times against the default one per shape (kernels 1 and 2 of {@code
 * onestep_attention_forward_qkv_kernel_typed}), through the Java bindings, on a packed fp16/bf16 projection with a
 * bias: the split-keys kernel (16 query rows a block, the keys over its warps) agrees with the default to the 16-bit
 * rounding; the pipelined one (cp.async double buffering, ldmatrix fragments) gives the default's bits; shapes they
 * cannot take are refused by name. Their own checks are kernels/test/test_attention.cpp (check_split against a double
 * reference, check_pipelined against kernel 0's bits).
 */
class AttentionKernelsTest {

    @Test
    void agreesWithTheDefaultKernelAndRefusesWhatItCannotTake() {
        EmulatedDeviceTest.require();
        int n = 1, heads = 4, t = 37, d = 32, elems = n * t * 3 * heads * d, outs = n * t * heads * d;
        SplittableRandom r = new SplittableRandom(11);
        try (EmulatedDevice dev = new EmulatedDevice(CudaBackend.emulatedLibrary().toString());
             DeviceArena a = new DeviceArena(dev, "attention kernels test", 1 << 22);
             TensorArena host = new TensorArena()) {
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
                long[] o = new long[4];
                float[][] got = new float[4][];
                for (int kernel = 0; kernel < 4; kernel++) {
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
                byte[][] bits = new byte[4][];
                for (int kernel : new int[] {0, 2, 3}) {
                    Tensor raw = host.allocate(outs / 2);  // the 16-bit o's bytes
                    dev.download(raw.segment(), o[kernel], 2L * outs, () -> "o");
                    bits[kernel] = raw.segment().asSlice(0, 2L * outs).toArray(ValueLayout.JAVA_BYTE);
                }
                assertArrayEquals(bits[0], bits[2], p.label() + ": the pipelined kernel gives the default's bits");
                assertArrayEquals(bits[0], bits[3], p.label() + ": the wide kernel gives the default's bits");
            }
            long any = a.allocate(1 << 16, "any");
            CudaException refused = assertThrows(CudaException.class, () -> dev.attentionQkv(any, 0, any, any, 1, 1, 4,
                    128, 2, Precision.BF16, () -> "mid_block.attentions.0"));
            assertEquals(OnestepKernels.ERROR_UNSUPPORTED, refused.status());
            assertTrue(refused.getMessage().contains("pipelined") && refused.getMessage().contains("D=128"),
                    refused.getMessage());
            CudaException wide = assertThrows(CudaException.class, () -> dev.attentionQkv(any, 0, any, any, 1, 1, 4,
                    128, 3, Precision.FP16, () -> "mid_block.attentions.0"));
            assertTrue(wide.getMessage().contains("wide") && wide.getMessage().contains("D=128"), wide.getMessage());
            CudaException e = assertThrows(CudaException.class, () -> dev.attentionQkv(any, 0, any, any, 1, 1, 4, 128,
                    1, Precision.FP16, () -> "mid_block.attentions.0"));
            assertEquals(OnestepKernels.ERROR_UNSUPPORTED, e.status());
            assertTrue(e.getMessage().contains("onestep_attention_forward_qkv_kernel_typed(B=1, H=1, Tq=4, Tk=4, D=128")
                    && e.getMessage().contains("mid_block.attentions.0"), e.getMessage());
        }
    }
}
