package ai.onestep.tensor;

/**
 * What the dimensions of a tensor mean. The engine has ONE activation layout, {@link #NHWC}: it is what a
 * fused group norm wants (a group's channels are contiguous inside each pixel) and what cuDNN's tensor cores
 * want. PyTorch layouts ({@link #NCHW}, {@link #OIHW}) appear only at the edges (checkpoints, the denoise
 * command) and are converted once.
 */
public enum Layout {
    /** Feature maps: (batch, height, width, channels). */
    NHWC,
    /** PyTorch feature maps: (batch, channels, height, width); only for import and export. */
    NCHW,
    /** The engine's conv weight: (kernel height, kernel width, in channels, out channels). */
    HWIO,
    /** PyTorch's conv weight: (out channels, in channels, kernel height, kernel width); import only. */
    OIHW,
    /** Plain row-major data with no spatial meaning: vectors, matrices, token sequences (batch, tokens, channels). */
    ROWS
}
