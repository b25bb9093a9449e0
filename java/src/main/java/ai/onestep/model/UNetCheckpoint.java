package ai.onestep.model;

import ai.onestep.io.CheckpointException;
import ai.onestep.io.Safetensors;
import ai.onestep.nn.Parameter;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TreeSet;

/**
 * Loads and saves a {@link UNet} as safetensors with diffusers' names and PyTorch layouts (docs/CHECKPOINTS.md):
 * conv weights OIHW, linear weights (out, in), converted once to the engine's HWIO and (in, out). The model's
 * {@code config.json} travels in the metadata under {@link #CONFIG}; a diffusers folder ({@code config.json} +
 * {@code diffusion_pytorch_model.safetensors}) loads the same way.
 */
public final class UNetCheckpoint {
    /** Metadata key: the diffusers config.json text. */
    public static final String CONFIG = "config";
    /** Metadata key: "teacher" or "student". */
    public static final String ROLE = "onestep.role";
    /** Metadata key: the checkpoint format version. */
    public static final String FORMAT = "onestep.format";

    private UNetCheckpoint() {
    }

    /** A loaded network and the checkpoint's metadata. */
    public record Loaded(UNet net, Map<String, String> metadata, Path path) implements AutoCloseable {
        public String role() {
            return metadata.getOrDefault(ROLE, "teacher");
        }

        /** Frees the network's parameters. */
        @Override
        public void close() {
            net.close();
        }
    }

    /** Loads a .safetensors file written by the engine, or a diffusers model folder. */
    public static Loaded load(Path path, boolean withGradients) {
        Path file = path;
        UNetConfig cfg = null;
        if (Files.isDirectory(path)) {
            Path json = path.resolve("config.json");
            file = path.resolve("diffusion_pytorch_model.safetensors");
            if (!Files.exists(json) || !Files.exists(file)) {
                throw new CheckpointException(path + ": a diffusers model folder needs config.json and "
                        + "diffusion_pytorch_model.safetensors");
            }
            try {
                cfg = UNetConfig.parse(Files.readString(json), json.toString());
            } catch (IOException e) {
                throw new CheckpointException(json + ": cannot read: " + e.getMessage(), e);
            } catch (IllegalArgumentException e) {
                throw new CheckpointException(e.getMessage());
            }
        }
        try (Safetensors.Reader r = Safetensors.open(file)) {
            Map<String, String> meta = new LinkedHashMap<>(r.metadata());
            String role = meta.get(ROLE);
            if (role != null && !role.equals("teacher") && !role.equals("student")) {
                // The FID classifier and statistics are safetensors too; any other role is no U-Net of ours.
                throw new CheckpointException(file + ": holds a " + role + ", not a U-Net checkpoint (teacher or student)");
            }
            if (cfg == null) {
                String text = meta.get(CONFIG);
                if (text == null) {
                    throw new CheckpointException(file + ": metadata has no '" + CONFIG + "' (the model's config.json); "
                            + "give a diffusers folder with config.json, or a checkpoint written by onestep");
                }
                try {
                    cfg = UNetConfig.parse(text, file + " metadata '" + CONFIG + "'");
                } catch (IllegalArgumentException e) {
                    throw new CheckpointException(e.getMessage());
                }
            } else {
                meta.put(CONFIG, cfg.toJson());
            }
            UNet net = new UNet(cfg, withGradients);
            try {
                read(r, net);
            } catch (RuntimeException e) {
                net.close();
                throw e;
            }
            return new Loaded(net, meta, file);
        }
    }

    /** Reads every parameter and buffer of {@code net} from {@code r}; missing or unexpected tensors are errors. */
    public static void read(Safetensors.Reader r, UNet net) {
        TreeSet<String> unexpected = new TreeSet<>();
        for (String k : r.entries().keySet()) {
            if (!k.startsWith("train/")) {
                unexpected.add(k);
            }
        }
        try (TensorArena tmp = new TensorArena()) {
            for (Parameter p : net.parameters()) {
                TorchLayout tl = net.torchLayouts().get(p.name());
                Tensor src = r.read(p.name(), tmp, Layout.ROWS, torchShape(p.value(), tl));
                fromTorch(src, tl, p.value());
                unexpected.remove(p.name());
            }
            for (var b : net.buffers().entrySet()) {
                Tensor src = r.read(b.getKey(), tmp, Layout.ROWS, b.getValue().shape());
                b.getValue().copyFrom(src);
                unexpected.remove(b.getKey());
            }
        }
        if (!unexpected.isEmpty()) {
            throw new CheckpointException(r.path() + ": unexpected tensor(s) for this config: "
                    + String.join(", ", unexpected.stream().limit(5).toList())
                    + (unexpected.size() > 5 ? " and " + (unexpected.size() - 5) + " more" : ""));
        }
    }

    /**
     * Writes {@code net}'s parameters (PyTorch layouts), buffers and {@code extra} tensors (stored as they are),
     * with the config and {@code metadata}, atomically.
     */
    public static void save(Path path, UNet net, Map<String, String> metadata, Map<String, Tensor> extra) {
        try (TensorArena tmp = new TensorArena()) {
            Map<String, Tensor> out = new LinkedHashMap<>();
            for (Parameter p : net.parameters()) {
                out.put(p.name(), toTorch(p.value(), net.torchLayouts().get(p.name()), tmp));
            }
            out.putAll(net.buffers());
            if (extra != null) {
                out.putAll(extra);
            }
            Map<String, String> meta = new LinkedHashMap<>(metadata);
            meta.put(CONFIG, net.config().toJson());
            meta.put(FORMAT, "1");
            Safetensors.write(path, out, meta);
        }
    }

    static int[] torchShape(Tensor engine, TorchLayout tl) {
        int[] s = engine.shape();
        return switch (tl) {
            case PLAIN -> s;
            case CONV -> new int[] {s[3], s[2], s[0], s[1]};
            case LINEAR -> new int[] {s[1], s[0]};
        };
    }

    /** PyTorch layout to the engine's: OIHW to HWIO, (out, in) to (in, out). */
    static void fromTorch(Tensor src, TorchLayout tl, Tensor dst) {
        MemorySegment s = src.segment(), d = dst.segment();
        int[] e = dst.shape();
        switch (tl) {
            case PLAIN -> dst.copyFrom(src);
            case CONV -> {
                int kh = e[0], kw = e[1], ci = e[2], co = e[3];
                for (int o = 0; o < co; o++) {
                    for (int i = 0; i < ci; i++) {
                        for (int y = 0; y < kh; y++) {
                            for (int x = 0; x < kw; x++) {
                                float v = s.getAtIndex(Tensor.F32, ((long) (o * ci + i) * kh + y) * kw + x);
                                d.setAtIndex(Tensor.F32, ((long) (y * kw + x) * ci + i) * co + o, v);
                            }
                        }
                    }
                }
            }
            case LINEAR -> {
                int in = e[0], out = e[1];
                for (int o = 0; o < out; o++) {
                    for (int i = 0; i < in; i++) {
                        d.setAtIndex(Tensor.F32, (long) i * out + o, s.getAtIndex(Tensor.F32, (long) o * in + i));
                    }
                }
            }
        }
    }

    /** The engine's layout to PyTorch's (a new tensor in {@code tmp}, or the tensor itself for PLAIN). */
    static Tensor toTorch(Tensor src, TorchLayout tl, TensorArena tmp) {
        if (tl == TorchLayout.PLAIN) {
            return src;
        }
        int[] e = src.shape();
        Tensor dst = tmp.allocate(Layout.ROWS, torchShape(src, tl));
        MemorySegment s = src.segment(), d = dst.segment();
        if (tl == TorchLayout.CONV) {
            int kh = e[0], kw = e[1], ci = e[2], co = e[3];
            for (int o = 0; o < co; o++) {
                for (int i = 0; i < ci; i++) {
                    for (int y = 0; y < kh; y++) {
                        for (int x = 0; x < kw; x++) {
                            d.setAtIndex(Tensor.F32, ((long) (o * ci + i) * kh + y) * kw + x,
                                    s.getAtIndex(Tensor.F32, ((long) (y * kw + x) * ci + i) * co + o));
                        }
                    }
                }
            }
        } else {
            int in = e[0], out = e[1];
            for (int o = 0; o < out; o++) {
                for (int i = 0; i < in; i++) {
                    d.setAtIndex(Tensor.F32, (long) o * in + i, s.getAtIndex(Tensor.F32, (long) i * out + o));
                }
            }
        }
        return dst;
    }
}
