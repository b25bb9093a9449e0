package ai.onestep.model;

import ai.onestep.nn.Parameter;
import ai.onestep.tensor.Tensor;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Builds a smaller student's config from the teacher's and initializes it from the teacher by slicing: every
 * student tensor whose name exists in the teacher takes the teacher's leading block along each dimension (the
 * first channels, the first layers); the rest keep their default initialization. With width 1 and all layers this
 * is an exact copy, which is how consistency distillation starts (Song et al. 2023, Section 4).
 */
public final class StudentInit {
    private StudentInit() {
    }

    /**
     * The teacher's config with channels scaled by {@code width} (kept a multiple of the group count, and of the head
     * size at levels with attention), the group count scaled alike, and {@code layers} res blocks per level.
     */
    public static UNetConfig config(UNetConfig t, double width, int layers) {
        if (!(width > 0 && width <= 1)) {
            throw new IllegalArgumentException("--student-width must lie in (0, 1], got " + width);
        }
        if (layers < 1 || layers > t.layersPerBlock()) {
            throw new IllegalArgumentException("--student-layers must lie in [1, " + t.layersPerBlock() + "], got " + layers);
        }
        Map<String, Object> m = new LinkedHashMap<>(t.toMap());
        int[] tc = t.blockOutChannels();
        int levels = tc.length;
        // Fewer channels need fewer groups: keep the teacher's channels per group (the group count scales with the
        // width, kept a divisor of the teacher's so the statistics nest), else a 0.5-width level 0 of 32 channels in
        // 32-channel units could not shrink at all.
        int gs = scaledGroups(t.normNumGroups(), width);
        java.util.List<Object> ch = new java.util.ArrayList<>();
        for (int i = 0; i < levels; i++) {
            // A level with attention also needs whole heads; the last level feeds the mid block's attention.
            boolean attention = t.downBlockTypes().get(i).startsWith("Attn")
                    || t.upBlockTypes().get(levels - 1 - i).startsWith("Attn") || (i == levels - 1 && t.addAttention());
            int unit = attention && t.attentionHeadDim() != null ? lcm(gs, t.attentionHeadDim()) : gs;
            ch.add((long) Math.max(unit, Math.round(tc[i] * width / unit) * unit));
        }
        m.put("block_out_channels", ch);
        m.put("norm_num_groups", (long) gs);
        if (t.attnNormNumGroups() != null) {
            m.put("attn_norm_num_groups", (long) scaledGroups(t.attnNormNumGroups(), width));
        }
        m.put("layers_per_block", (long) layers);
        return UNetConfig.fromMap(m);
    }

    /** round(groups x width), at least 1, lowered to a divisor of {@code groups}. */
    private static int scaledGroups(int groups, double width) {
        int g = Math.max(1, (int) Math.round(groups * width));
        while (groups % g != 0) {
            g--;
        }
        return g;
    }

    private static int lcm(int a, int b) {
        int x = a, y = b;
        while (y != 0) {
            int r = x % y;
            x = y;
            y = r;
        }
        return a / x * b;
    }

    /** Copies the teacher's leading blocks into the student; returns how many tensors were (partly) copied. */
    public static int sliceFrom(UNet teacher, UNet student) {
        int copied = 0;
        for (Parameter p : student.parameters()) {
            if (!teacher.parameters().contains(p.name())) {
                continue;
            }
            Tensor src = teacher.parameters().get(p.name()).value();
            if (src.rank() != p.value().rank()) {
                continue;
            }
            copyLeading(src, p.value());
            copied++;
        }
        for (var b : student.buffers().entrySet()) {
            Tensor src = teacher.buffers().get(b.getKey());
            if (src != null) {
                copyLeading(src, b.getValue());
            }
        }
        return copied;
    }

    /** dst = src[:d0, :d1, ...] for each dimension, where dst is no larger than src (else only the overlap). */
    static void copyLeading(Tensor src, Tensor dst) {
        int[] ds = dst.shape(), ss = src.shape();
        int rank = ds.length;
        int[] idx = new int[rank];
        for (long i = 0; i < dst.size(); i++) {
            long rem = i;
            boolean inside = true;
            for (int d = rank - 1; d >= 0; d--) {
                idx[d] = (int) (rem % ds[d]);
                rem /= ds[d];
                inside &= idx[d] < ss[d];
            }
            if (inside) {
                dst.set(i, src.at(idx));
            }
        }
    }
}
