package ai.onestep.cli;

import ai.onestep.model.UNet;
import ai.onestep.model.UNetCheckpoint;
import ai.onestep.io.Safetensors;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "info", mixinStandardHelpOptions = true,
        description = "Print a checkpoint's role, config, parameter count and FLOPs per forward pass; for other "
                + "safetensors files (the FID classifier, FID statistics), their metadata and tensors.")
final class Info implements Callable<Integer> {
    @Parameters(index = "0", description = "A .safetensors checkpoint or a diffusers model folder.") Path ckpt;

    @Option(names = "--verbose", description = "Print stack traces on errors.") boolean verbose;

    @Override
    public Integer call() {
        if (Files.isRegularFile(ckpt)) {
            try (Safetensors.Reader r = Safetensors.open(ckpt)) {
                if (!r.metadata().containsKey(UNetCheckpoint.CONFIG)) {
                    printOther(r);
                    return 0;
                }
            }
        }
        UNetCheckpoint.Loaded l = UNetCheckpoint.load(Common.requireFile(ckpt, "checkpoint"), false);
        try (UNet net = l.net()) {
            var cfg = net.config();
            int s = cfg.sampleSize();
            System.out.println("checkpoint  " + l.path());
            System.out.println("role        " + l.role());
            System.out.printf(Locale.ROOT, "parameters  %,d%n", net.parameters().count());
            if (s > 0) {
                System.out.printf(Locale.ROOT, "flops       %,d per forward pass at batch 1 (%dx%d)%n", net.flops(1, s, s), s, s);
            }
            l.metadata().forEach((k, v) -> {
                if (!k.equals(UNetCheckpoint.CONFIG)) {
                    System.out.println("meta        " + k + " = " + v);
                }
            });
            System.out.println("config      " + cfg.toJson());
        }
        return 0;
    }

    /** A safetensors file that holds no U-Net: what its metadata says it is, and its tensors. */
    private static void printOther(Safetensors.Reader r) {
        System.out.println("file        " + r.path());
        String role = r.metadata().get(UNetCheckpoint.ROLE);
        System.out.println("role        " + (role == null ? "(none: not written by onestep)" : role));
        long elements = 0;
        for (Safetensors.Entry e : r.entries().values()) {
            elements += e.elements();
        }
        System.out.printf(Locale.ROOT, "tensors     %,d (%,d elements)%n", r.entries().size(), elements);
        new TreeMap<>(r.metadata()).forEach((k, v) -> {
            if (!k.equals(UNetCheckpoint.ROLE)) {
                System.out.println("meta        " + k + " = " + v);
            }
        });
        new TreeMap<>(r.entries()).values().forEach(e -> System.out.println("tensor      " + e));
    }
}
