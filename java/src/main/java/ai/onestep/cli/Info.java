package ai.onestep.cli;

import ai.onestep.model.UNet;
import ai.onestep.model.UNetCheckpoint;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "info", mixinStandardHelpOptions = true,
        description = "Print a checkpoint's role, config, parameter count and FLOPs per forward pass.")
final class Info implements Callable<Integer> {
    @Parameters(index = "0", description = "A .safetensors checkpoint or a diffusers model folder.") Path ckpt;

    @Option(names = "--verbose", description = "Print stack traces on errors.") boolean verbose;

    @Override
    public Integer call() {
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
}
