package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.diffusion.ConsistencyDenoiser;
import ai.onestep.model.UNet;
import ai.onestep.nn.Parameter;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Noise;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * Registered convolution weights' KRSC copies ({@link ParameterStore#krsc}), which spare cuDNN a transpose per call:
 * the right values in fp32 and fp16, refreshed with the parameter, never made for owned training state; and whole
 * passes on an emulated device that convolves with the KRSC copy (transposed back) give the same bits as the
 * plain route, before and after the weights change.
 */
class KrscWeightsTest {

    private static float[] download(Device d, long src, long elems, Precision type) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment m = a.allocate(elems * type.bytes);
            d.download(m, src, elems * type.bytes, () -> "test");
            float[] out = new float[(int) elems];
            for (int i = 0; i < elems; i++) {
                out[i] = type == Precision.FP32 ? m.getAtIndex(ValueLayout.JAVA_FLOAT, i)
                        : type == Precision.FP16 ? Float.float16ToFloat(m.getAtIndex(ValueLayout.JAVA_SHORT, i))
                        : Float.intBitsToFloat(m.getAtIndex(ValueLayout.JAVA_SHORT, i) << 16);
            }
            return out;
        }
    }

    /** (cols, rows) from w's (rows, cols), each value rounded to {@code type}. */
    private static float[] transposed(Tensor w, int rows, int cols, Precision type) {
        float[] v = w.toArray(), t = new float[v.length];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                float x = v[r * cols + c];
                t[c * rows + r] = type == Precision.FP16 ? Float.float16ToFloat(Float.floatToFloat16(x))
                        : type == Precision.BF16 ? bf16(x) : x;
            }
        }
        return t;
    }

    private static float bf16(float x) {
        int b = Float.floatToRawIntBits(x);
        return Float.intBitsToFloat((b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000);  // round to nearest even
    }

    @Test
    void copiesHoldTheTransposeAndFollowRefreshes() {
        EmulatedDeviceTest.require();
        try (EmulatedDevice d = new EmulatedDevice(CudaBackend.emulatedLibrary().toString());
             ParameterStore store = new ParameterStore(d); TensorArena a = new TensorArena()) {
            Tensor w = a.allocate(Layout.ROWS, 3, 3, 4, 5);  // HWIO: rows 36, cols 5
            Tensor other = a.allocate(Layout.ROWS, 7);
            SplittableRandom r = new SplittableRandom(3);
            for (long i = 0; i < w.size(); i++) {
                w.set(i, (float) r.nextGaussian());
            }
            store.register(List.of(w, other));
            for (int round = 0; round < 2; round++) {
                for (Precision p : Precision.values()) {
                    long k = store.krsc(w, p, 36, 5);
                    assertTrue(k != 0, p.label());
                    assertArrayEquals(transposed(w, 36, 5, p), download(d, k, w.size(), p), p.label() + " round " + round);
                    assertEquals(k, store.krsc(w, p, 36, 5), "made once");
                }
                for (long i = 0; i < w.size(); i++) {
                    w.set(i, w.get(i) * -0.5f + 0.25f);
                }
                store.refresh(w);  // what an optimizer or EMA step through the backend does
            }
            assertEquals(0, store.krsc(w.slice(0, 1), Precision.FP32, 12, 5), "part of a parameter");
            try (TensorArena b = new TensorArena()) {
                assertEquals(0, store.krsc(b.allocate(Layout.ROWS, 3, 3, 4, 5), Precision.FP32, 36, 5), "not registered");
            }
            store.owned.adopt(List.of(w));
            assertEquals(0, store.krsc(w, Precision.FP16, 36, 5), "owned: its registered copy is stale");
            store.owned.release(List.of(w));
        }
    }

    /**
     * Three calls of a captured consistency pass (measure, capture, replay), weights scaled by an eager op between
     * (which refreshes the registered copies); every output, in order. Shared with PendingBiasTest.
     */
    static float[] run(CudaOps ops, UNet net) {
        ops.registerParameters(net.weightTensors());
        try (TensorArena a = new TensorArena(); Workspace ws = new Workspace()) {
            ConsistencyDenoiser f = new ConsistencyDenoiser(net, ops, ws, true);
            Tensor x = a.allocate(Layout.NHWC, 2, 8, 8, 2), y = a.allocate(Layout.NHWC, 2, 8, 8, 2);
            Noise.gaussian(x, 8, 0);
            float[] all = new float[0];
            for (int round = 0; round < 2; round++) {
                for (int call = 0; call < 3; call++) {
                    f.denoise(x, new double[] {2.5, 2.5}, null, y);
                    float[] v = y.toArray(), joined = java.util.Arrays.copyOf(all, all.length + v.length);
                    System.arraycopy(v, 0, joined, all.length, v.length);
                    all = joined;
                }
                for (Parameter p : net.parameters()) {
                    ops.scale(p.value(), 0.9f, p.value());  // eager: refreshes the registered copy (and its KRSC copies)
                }
            }
            return all;
        }
    }

    @Test
    void passesConvolvingWithKeptCopiesGiveTheSameBits() {
        EmulatedDeviceTest.require();
        String lib = CudaBackend.emulatedLibrary().toString();
        for (Precision p : new Precision[] {Precision.FP32, Precision.FP16}) {
            float[] plain, kept;
            long plainBytes, keptBytes;
            try (UNet net = CudaGraphTest.randomNet(CudaGraphTest.config(32), 17);
                 CudaOps ops = new CudaOps(new EmulatedDevice(lib, false), 64L << 20, 2, p)) {
                plain = run(ops, net);
                plainBytes = ops.registeredParameters()[1];
            }
            try (UNet net = CudaGraphTest.randomNet(CudaGraphTest.config(32), 17);
                 CudaOps ops = new CudaOps(new EmulatedDevice(lib, true), 64L << 20, 2, p)) {
                kept = run(ops, net);
                keptBytes = ops.registeredParameters()[1];
            }
            assertTrue(keptBytes > plainBytes, p.label() + ": KRSC copies were made (" + keptBytes + " vs "
                    + plainBytes + " bytes)");
            assertArrayEquals(plain, kept, p.label() + ": every call, before and after the weights changed");
        }
    }
}
