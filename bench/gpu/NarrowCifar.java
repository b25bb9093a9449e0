import ai.onestep.model.UNet;
import ai.onestep.model.UNetCheckpoint;
import ai.onestep.model.UNetConfig;
import ai.onestep.nn.Parameter;
import java.nio.file.Path;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Writes a student checkpoint with the CIFAR-size U-Net's structure (torch_peers.py --write-cifar's config: 4 levels,
 * two layers a block, attention at 16x16, 32x32 inputs) but a quarter of its channels (32/64/64/64, 8 groups: the same
 * 4-16 channels a group) and random weights: the same ops and graph nodes as the CIFAR-size sample, at a cost the
 * emulated kernel library can run in minutes. For counting a sampling graph's nodes without a GPU:
 * <pre>
 *   java -cp java/target/onestep.jar bench/gpu/NarrowCifar.java /tmp/narrow.safetensors
 *   java -Donestep.cuda.emulateCudnnBias=true -Donestep.cuda.emulateIgemm=true -cp java/target/onestep.jar:CLASSES \
 *     StepTiming --backend cuda-emulated --library build/kernels/emu/libonestep_kernels.so --precision fp16 \
 *     --batches 1 --reps 1 --warmup 1 --first-step-only --unfolded-too --no-compare /tmp/narrow.safetensors
 * </pre>
 */
public class NarrowCifar {
    public static void main(String[] args) {
        if (args.length != 1) {
            System.err.println("usage: NarrowCifar OUT.safetensors");
            System.exit(2);
        }
        String json = """
                {"_class_name": "UNet2DModel", "sample_size": 32, "in_channels": 3, "out_channels": 3,
                 "time_embedding_type": "positional", "freq_shift": 0, "flip_sin_to_cos": true,
                 "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
                 "block_out_channels": [32, 64, 64, 64], "layers_per_block": 2, "mid_block_scale_factor": 1.0,
                 "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0,
                 "act_fn": "silu", "attention_head_dim": 32, "norm_num_groups": 8, "norm_eps": 1e-05,
                 "resnet_time_scale_shift": "default", "add_attention": true}""";
        try (UNet net = new UNet(UNetConfig.parse(json, "NarrowCifar"), false)) {
            SplittableRandom r = new SplittableRandom(7);
            for (Parameter p : net.parameters()) {
                boolean gain = p.name().contains("norm") && p.name().endsWith("weight");  // norms' gamma around 1
                for (long i = 0; i < p.value().size(); i++) {
                    p.value().set(i, (float) ((r.nextDouble() * 2 - 1) * 0.1 + (gain ? 1 : 0)));
                }
            }
            UNetCheckpoint.save(Path.of(args[0]), net,
                    Map.of("onestep.role", "student", "onestep.consistency.timepoints", "2:1.92334"), Map.of());
        }
    }
}
