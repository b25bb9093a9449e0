package ai.onestep.cli;

import ai.onestep.model.UNetCheckpoint;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "export", mixinStandardHelpOptions = true,
        description = "Write a checkpoint's model weights and metadata without its training state (train/...): the "
                + "small, diffusers-loadable file to ship. Optionally also a diffusers folder (config.json + "
                + "diffusion_pytorch_model.safetensors).")
final class Export implements Callable<Integer> {
    @Option(names = "--model", required = true, description = "Checkpoint to export.") Path model;
    @Option(names = "--out", required = true, description = "The .safetensors file to write.") Path out;
    @Option(names = "--diffusers", description = "Also write a diffusers model folder here.") Path diffusers;
    @Option(names = "--raw", description = "Export the raw (non-EMA) weights of a training checkpoint (train/raw/...).")
    boolean raw;
    @Option(names = "--verbose", description = "Print stack traces on errors.") boolean verbose;

    @Override
    public Integer call() throws Exception {
        Common.requireNotInput("--out", out, "--model", model);
        try (UNetCheckpoint.Loaded l = UNetCheckpoint.load(Common.requireFile(model, "checkpoint"), false)) {
            if (raw) {
                try (ai.onestep.io.Safetensors.Reader r = ai.onestep.io.Safetensors.open(model);
                     ai.onestep.tensor.TensorArena tmp = new ai.onestep.tensor.TensorArena()) {
                    for (var p : l.net().parameters()) {
                        String name = "train/raw/" + p.name();
                        if (!r.entries().containsKey(name)) {
                            throw new IllegalArgumentException(model + " has no training state (" + name + "); --raw needs a "
                                    + "checkpoint written with it");
                        }
                        p.value().copyFrom(r.read(name, tmp, ai.onestep.tensor.Layout.ROWS, p.value().shape()));
                    }
                }
            }
            UNetCheckpoint.save(out, l.net(), new LinkedHashMap<>(l.metadata()), null);
            System.out.println("wrote " + out + " (" + Files.size(out) / 1024 + " KiB)");
            if (diffusers != null) {
                Files.createDirectories(diffusers);
                // diffusers reads "format"; the role and a student's time points ride along (diffusers ignores them),
                // so the folder loads back as what it was, not as a teacher.
                java.util.Map<String, String> meta = new LinkedHashMap<>(l.metadata());
                meta.put("format", "pt");
                UNetCheckpoint.save(diffusers.resolve("diffusion_pytorch_model.safetensors"), l.net(), meta, null);
                ai.onestep.io.AtomicFile.writeString(diffusers.resolve("config.json"), l.net().config().toJson());
                System.out.println("wrote " + diffusers + "/{config.json, diffusion_pytorch_model.safetensors}");
            }
        }
        return 0;
    }
}
