package ai.onestep.backend.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector transcendental functions written out in plain arithmetic. The library's {@code VectorOperators.EXP} is
 * not used because its result depends on how the code runs: the interpreter and C1 compute it lane by lane with
 * {@code StrictMath}, C2 calls a vendor vector-math stub, and the two differ in the last bit. Bits that change when
 * a method gets compiled would break reproducibility (same seed, same bits) and resumed training. Every
 * operation below is an IEEE add, multiply, fused multiply-add or bit move, so all execution tiers agree.
 */
public final class VectorMath {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;

    private VectorMath() {
    }

    private static final float LOG2E = 1.44269504088896341f;
    /** ln 2 split so that {@code n * LN2_HI} is exact for |n| < 2^9 (Cody and Waite 1980). */
    private static final float LN2_HI = 0.693359375f;
    private static final float LN2_LO = -2.12194440e-4f;
    /** 1.5 * 2^23: adding it rounds a float of magnitude < 2^22 to an integer, which lands in the low mantissa bits. */
    private static final float ROUND = 12582912f;
    /** Below this exp(x) is under the smallest normal float (2^-126); those lanes are flushed to 0. */
    private static final float EXP_MIN = -87.33654f;
    private static final float EXP_MAX = 88f;

    /**
     * {@code exp(x)} in float to about 1 ulp, branch-free and inline (the library's vector exp is a call, about
     * twice as slow here). Cody-Waite reduction {@code x = n ln2 + r}, |r| <= ln2/2, then Cephes' expf minimax
     * polynomial for {@code e^r}, then {@code 2^n} built in the exponent bits. Lanes below EXP_MIN, -inf included,
     * give exactly 0, which is what masked and padded scores need.
     */
    public static FloatVector exp(FloatVector x) {
        return expClamped(x).blend(0f, x.lt(EXP_MIN));
    }

    /**
     * {@link #exp} of x clamped to [EXP_MIN, EXP_MAX], without the flush of the lanes below EXP_MIN to 0 (they give
     * about 1.2e-38, the smallest normal float): the same bits as exp elsewhere, one compare and blend cheaper.
     * For a sigmoid {@code 1 / (1 + exp(-h))} the two give identical results ({@code 1 + 1.2e-38 == 1}).
     */
    public static FloatVector expClamped(FloatVector x) {
        FloatVector xc = x.max(EXP_MIN).min(EXP_MAX);
        FloatVector shifted = xc.fma(LOG2E, ROUND);
        FloatVector n = shifted.sub(ROUND);
        FloatVector r = n.fma(FloatVector.broadcast(S, -LN2_HI), xc);
        r = n.fma(FloatVector.broadcast(S, -LN2_LO), r);
        FloatVector p = FloatVector.broadcast(S, 1.9875691500e-4f);
        p = p.fma(r, FloatVector.broadcast(S, 1.3981999507e-3f));
        p = p.fma(r, FloatVector.broadcast(S, 8.3334519073e-3f));
        p = p.fma(r, FloatVector.broadcast(S, 4.1665795894e-2f));
        p = p.fma(r, FloatVector.broadcast(S, 1.6666665459e-1f));
        p = p.fma(r, FloatVector.broadcast(S, 5.0000001201e-1f));
        p = p.mul(r.mul(r)).add(r).add(1f);
        // The integer n sits in the low mantissa bits of shifted; moving it to the exponent field gives 2^n.
        IntVector bits = shifted.reinterpretAsInts().sub(Float.floatToRawIntBits(ROUND) - 127)
                .lanewise(VectorOperators.LSHL, 23);
        return p.mul(bits.reinterpretAsFloats());
    }
}
