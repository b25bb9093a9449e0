package ai.onestep.backend.cuda;

import ai.onestep.kernels.OnestepKernels;
import java.util.Locale;

/**
 * The storage type of activations and weights inside a device pass ({@link CudaOps#runPass}): a sampling step runs
 * in fp32, fp16 or bf16. Arithmetic is fp32 in every case: the {@code *_typed} kernels widen on load and round
 * once on store, convolutions and GEMMs accumulate in fp32 (cuDNN / cuBLAS compute type float), and group-norm
 * statistics, attention's log-sum-exp, the time embedding's noise level and the pass's inputs and outputs stay
 * fp32 (see {@link CudaOps} for the rule). Eager ops and training always run in fp32.
 */
public enum Precision {
    FP32(OnestepKernels.FLOAT32, 4),
    FP16(OnestepKernels.FLOAT16, 2),
    BF16(OnestepKernels.BFLOAT16, 2);

    /** The C API's {@code onestep_dtype}. */
    public final int code;
    /** Bytes per element. */
    public final int bytes;

    Precision(int code, int bytes) {
        this.code = code;
        this.bytes = bytes;
    }

    /** "fp32", "fp16" or "bf16". */
    public String label() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** Parses fp32 | fp16 | bf16 (also float32, float16, half, bfloat16); the error names the accepted values. */
    public static Precision parse(String s) {
        return switch (s.trim().toLowerCase(Locale.ROOT)) {
            case "fp32", "float32", "float" -> FP32;
            case "fp16", "float16", "half" -> FP16;
            case "bf16", "bfloat16" -> BF16;
            default -> throw new IllegalArgumentException("precision must be fp32, fp16 or bf16, got '" + s + "'");
        };
    }

    /** System property {@code onestep.cuda.precision} (bin/onestep's --precision sets it), else {@code otherwise}. */
    public static Precision fromProperty(Precision otherwise) {
        String p = System.getProperty("onestep.cuda.precision");
        return p == null || p.isBlank() ? otherwise : parse(p);
    }
}
