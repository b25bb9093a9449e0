package ai.onestep.model;

import ai.onestep.io.Json;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The configuration of a U-Net, with the keys and meaning of diffusers' {@code UNet2DModel} {@code config.json}.
 * The engine implements a subset (see {@link #SUPPORTED}); a config outside it is rejected with a message naming
 * the key and the value, never silently approximated.
 */
public record UNetConfig(
        int sampleSize,
        int inChannels,
        int outChannels,
        String timeEmbeddingType,
        double freqShift,
        boolean flipSinToCos,
        List<String> downBlockTypes,
        List<String> upBlockTypes,
        int[] blockOutChannels,
        int layersPerBlock,
        double midBlockScaleFactor,
        double dropout,
        Integer attentionHeadDim,
        int normNumGroups,
        Integer attnNormNumGroups,
        double normEps,
        String resnetTimeScaleShift,
        boolean addAttention,
        Integer numClassEmbeds) {

    /** Keys the engine reads, and the values it accepts where it accepts only some. */
    public static final Set<String> SUPPORTED = Set.of("sample_size", "in_channels", "out_channels",
            "center_input_sample", "time_embedding_type", "freq_shift", "flip_sin_to_cos", "down_block_types",
            "up_block_types", "block_out_channels", "layers_per_block", "mid_block_scale_factor", "downsample_padding",
            "downsample_type", "upsample_type", "dropout", "act_fn", "attention_head_dim", "norm_num_groups",
            "attn_norm_num_groups", "norm_eps", "resnet_time_scale_shift", "add_attention", "class_embed_type",
            "num_class_embeds", "num_train_timesteps", "attention_legacy_order", "mid_block_type", "time_embedding_dim");

    /** Bookkeeping keys diffusers writes; ignored. */
    private static final Set<String> IGNORED = Set.of("_class_name", "_diffusers_version", "_name_or_path");

    public UNetConfig {
        int levels = blockOutChannels.length;
        if (levels < 1 || downBlockTypes.size() != levels || upBlockTypes.size() != levels) {
            throw new ConfigException("block_out_channels " + Arrays.toString(blockOutChannels) + ", down_block_types "
                    + downBlockTypes + " and up_block_types " + upBlockTypes + " must have the same length >= 1");
        }
        for (String t : downBlockTypes) {
            if (!t.equals("DownBlock2D") && !t.equals("AttnDownBlock2D")) {
                throw new ConfigException("down_block_types: '" + t + "' is not supported (DownBlock2D, AttnDownBlock2D)");
            }
        }
        for (String t : upBlockTypes) {
            if (!t.equals("UpBlock2D") && !t.equals("AttnUpBlock2D")) {
                throw new ConfigException("up_block_types: '" + t + "' is not supported (UpBlock2D, AttnUpBlock2D)");
            }
        }
        if (!timeEmbeddingType.equals("positional") && !timeEmbeddingType.equals("fourier")) {
            throw new ConfigException("time_embedding_type: '" + timeEmbeddingType
                    + "' is not supported (positional, fourier)");
        }
        if (!resnetTimeScaleShift.equals("default") && !resnetTimeScaleShift.equals("scale_shift")) {
            throw new ConfigException("resnet_time_scale_shift: '" + resnetTimeScaleShift
                    + "' is not supported (default, scale_shift)");
        }
        for (int i = 0; i < blockOutChannels.length; i++) {
            int ch = blockOutChannels[i];
            if (ch < 1 || ch % normNumGroups != 0) {
                throw new ConfigException("block_out_channels: " + ch + " is not a positive multiple of norm_num_groups "
                        + normNumGroups);
            }
            // Only the levels that run attention need whole heads (as in diffusers): level i's down block, its
            // mirror up block, and the mid block at the last level.
            int levelCount = blockOutChannels.length;
            boolean attention = (i < downBlockTypes.size() && downBlockTypes.get(i).startsWith("Attn"))
                    || (levelCount - 1 - i < upBlockTypes.size() && upBlockTypes.get(levelCount - 1 - i).startsWith("Attn"))
                    || (i == levelCount - 1 && addAttention);
            if (attention && attentionHeadDim != null && ch % attentionHeadDim != 0) {
                throw new ConfigException("attention_head_dim: " + attentionHeadDim + " does not divide the "
                        + ch + " channels of block " + i + ", which has attention");
            }
        }
        if (layersPerBlock < 1 || inChannels < 1 || outChannels < 1 || normNumGroups < 1) {
            throw new ConfigException("layers_per_block, in_channels, out_channels and norm_num_groups must be >= 1");
        }
        if (!(dropout >= 0 && dropout < 1)) {
            throw new ConfigException("dropout: " + dropout + " must lie in [0, 1)");
        }
        if (!(normEps > 0)) {
            throw new ConfigException("norm_eps: " + normEps + " must be > 0");
        }
        if (sampleSize > 0 && sampleSize % (1 << (levels - 1)) != 0) {
            throw new ConfigException("sample_size: " + sampleSize + " is not divisible by 2^" + (levels - 1)
                    + " (one halving per down block but the last)");
        }
        if (numClassEmbeds != null && numClassEmbeds < 1) {
            throw new ConfigException("num_class_embeds: " + numClassEmbeds + " must be >= 1 or null");
        }
        downBlockTypes = List.copyOf(downBlockTypes);
        upBlockTypes = List.copyOf(upBlockTypes);
        blockOutChannels = blockOutChannels.clone();
    }

    /** Channels of the time embedding: 4 x block_out_channels[0], as in diffusers. */
    public int timeEmbedDim() {
        return 4 * blockOutChannels[0];
    }

    public boolean fourier() {
        return timeEmbeddingType.equals("fourier");
    }

    public boolean scaleShift() {
        return resnetTimeScaleShift.equals("scale_shift");
    }

    /** Parses diffusers' config.json text; {@code where} (a file name) prefixes every error. */
    public static UNetConfig parse(String json, String where) {
        try {
            return fromMap(Json.parseObject(json));
        } catch (Json.JsonException e) {
            throw new ConfigException(where + ": not valid JSON: " + e.getMessage());
        } catch (ConfigException e) {
            throw new ConfigException(where + ": " + e.getMessage());
        }
    }

    public static UNetConfig fromMap(Map<String, Object> m) {
        for (String k : m.keySet()) {
            if (!SUPPORTED.contains(k) && !IGNORED.contains(k)) {
                throw new ConfigException("config key '" + k + "' is not supported by this engine (supported: "
                        + String.join(", ", new java.util.TreeSet<>(SUPPORTED)) + ")");
            }
        }
        Object cls = m.get("_class_name");
        if (cls != null && !"UNet2DModel".equals(cls)) {
            throw new ConfigException("_class_name '" + cls + "' is not supported (UNet2DModel only)");
        }
        require(m, "center_input_sample", false);
        require(m, "downsample_padding", 1L);
        require(m, "downsample_type", "conv");
        require(m, "upsample_type", "conv");
        require(m, "act_fn", "silu");
        require(m, "class_embed_type", null);
        require(m, "attention_legacy_order", false);
        require(m, "mid_block_type", "UNetMidBlock2D");
        require(m, "time_embedding_dim", null);
        Object sample = m.getOrDefault("sample_size", null);
        int sampleSize = sample == null ? 0 : sample instanceof List<?> l
                ? (l.size() == 2 && l.get(0).equals(l.get(1)) ? intOf("sample_size", l.get(0))
                : fail("sample_size: only square samples are supported, got " + l))
                : intOf("sample_size", sample);
        return new UNetConfig(
                sampleSize,
                intOf("in_channels", m.getOrDefault("in_channels", 3L)),
                intOf("out_channels", m.getOrDefault("out_channels", 3L)),
                str("time_embedding_type", m.getOrDefault("time_embedding_type", "positional")),
                num("freq_shift", m.getOrDefault("freq_shift", 0L)),
                bool("flip_sin_to_cos", m.getOrDefault("flip_sin_to_cos", true)),
                strings("down_block_types", m.getOrDefault("down_block_types",
                        List.of("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"))),
                strings("up_block_types", m.getOrDefault("up_block_types",
                        List.of("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"))),
                ints("block_out_channels", m.getOrDefault("block_out_channels", List.of(224L, 448L, 672L, 896L))),
                intOf("layers_per_block", m.getOrDefault("layers_per_block", 2L)),
                num("mid_block_scale_factor", m.getOrDefault("mid_block_scale_factor", 1L)),
                num("dropout", m.getOrDefault("dropout", 0L)),
                m.containsKey("attention_head_dim") ? nullableInt("attention_head_dim", m.get("attention_head_dim")) : Integer.valueOf(8),
                intOf("norm_num_groups", m.getOrDefault("norm_num_groups", 32L)),
                nullableInt("attn_norm_num_groups", m.get("attn_norm_num_groups")),
                num("norm_eps", m.getOrDefault("norm_eps", 1e-5)),
                str("resnet_time_scale_shift", m.getOrDefault("resnet_time_scale_shift", "default")),
                bool("add_attention", m.getOrDefault("add_attention", true)),
                nullableInt("num_class_embeds", m.get("num_class_embeds")));
    }

    /** The config as diffusers writes it (keys in diffusers' order). */
    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("_class_name", "UNet2DModel");
        m.put("sample_size", (long) sampleSize);
        m.put("in_channels", (long) inChannels);
        m.put("out_channels", (long) outChannels);
        m.put("center_input_sample", false);
        m.put("time_embedding_type", timeEmbeddingType);
        m.put("freq_shift", freqShift == Math.rint(freqShift) ? (Object) (long) freqShift : freqShift);
        m.put("flip_sin_to_cos", flipSinToCos);
        m.put("down_block_types", downBlockTypes);
        m.put("up_block_types", upBlockTypes);
        List<Object> ch = new ArrayList<>();
        for (int c : blockOutChannels) {
            ch.add((long) c);
        }
        m.put("block_out_channels", ch);
        m.put("layers_per_block", (long) layersPerBlock);
        m.put("mid_block_scale_factor", midBlockScaleFactor);
        m.put("downsample_padding", 1L);
        m.put("downsample_type", "conv");
        m.put("upsample_type", "conv");
        m.put("dropout", dropout);
        m.put("act_fn", "silu");
        m.put("attention_head_dim", attentionHeadDim == null ? null : (Object) (long) attentionHeadDim);
        m.put("norm_num_groups", (long) normNumGroups);
        m.put("attn_norm_num_groups", attnNormNumGroups == null ? null : (Object) (long) attnNormNumGroups);
        m.put("norm_eps", normEps);
        m.put("resnet_time_scale_shift", resnetTimeScaleShift);
        m.put("add_attention", addAttention);
        m.put("class_embed_type", null);
        m.put("num_class_embeds", numClassEmbeds == null ? null : (Object) (long) numClassEmbeds);
        return m;
    }

    public String toJson() {
        return Json.write(toMap());
    }

    private static void require(Map<String, Object> m, String key, Object only) {
        if (!m.containsKey(key)) {
            return;
        }
        Object v = m.get(key);
        boolean ok = only == null ? v == null : only.equals(v) || (only instanceof Long l && v instanceof Double d && d == (double) l);
        if (!ok) {
            throw new ConfigException(key + ": value " + Json.write(v) + " is not supported (only " + Json.write(only) + ")");
        }
    }

    private static <T> T fail(String msg) {
        throw new ConfigException(msg);
    }

    private static int intOf(String key, Object v) {
        if (v instanceof Long l && l >= Integer.MIN_VALUE && l <= Integer.MAX_VALUE) {
            return (int) (long) l;
        }
        if (v instanceof Double d && d == Math.rint(d)) {
            return (int) (double) d;
        }
        throw new ConfigException(key + ": expected an integer, found " + Json.write(v));
    }

    private static Integer nullableInt(String key, Object v) {
        return v == null ? null : intOf(key, v);
    }

    private static double num(String key, Object v) {
        if (v instanceof Number n) {
            return n.doubleValue();
        }
        throw new ConfigException(key + ": expected a number, found " + Json.write(v));
    }

    private static boolean bool(String key, Object v) {
        if (v instanceof Boolean b) {
            return b;
        }
        throw new ConfigException(key + ": expected true or false, found " + Json.write(v));
    }

    private static String str(String key, Object v) {
        if (v instanceof String s) {
            return s;
        }
        throw new ConfigException(key + ": expected a string, found " + Json.write(v));
    }

    private static List<String> strings(String key, Object v) {
        if (!(v instanceof List<?> l)) {
            throw new ConfigException(key + ": expected an array of strings, found " + Json.write(v));
        }
        List<String> r = new ArrayList<>();
        for (Object o : l) {
            r.add(str(key, o));
        }
        return r;
    }

    private static int[] ints(String key, Object v) {
        if (!(v instanceof List<?> l)) {
            throw new ConfigException(key + ": expected an array of integers, found " + Json.write(v));
        }
        int[] r = new int[l.size()];
        for (int i = 0; i < r.length; i++) {
            r[i] = intOf(key, l.get(i));
        }
        return r;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof UNetConfig c && toMap().equals(c.toMap());
    }

    @Override
    public int hashCode() {
        return toMap().hashCode();
    }

    @Override
    public String toString() {
        return toJson();
    }

    /** A config.json that the engine does not support or that is malformed; names the key. */
    public static final class ConfigException extends IllegalArgumentException {
        public ConfigException(String message) {
            super(message);
        }
    }
}
