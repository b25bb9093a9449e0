package ai.onestep.model;

/**
 * How a parameter is laid out in a PyTorch state dict compared with the engine. Conversion happens once, at load
 * and save (docs/CHECKPOINTS.md).
 */
public enum TorchLayout {
    /** Same layout in both (biases, norm scales, embeddings). */
    PLAIN,
    /** Conv weight: PyTorch (out, in, kh, kw) = OIHW; engine (kh, kw, in, out) = HWIO. */
    CONV,
    /** Linear weight: PyTorch (out, in); engine (in, out). */
    LINEAR
}
