package ai.onestep.data;

import ai.onestep.tensor.Tensor;
import java.lang.foreign.MemorySegment;
import java.util.SplittableRandom;

/**
 * A set of same-sized 8-bit images, kept as bytes (N, H, W, C) to stay small in memory (Fashion-MNIST's 60,000
 * images are 47 MB), with optional class labels. Batches are produced as float32 NHWC tensors with pixels scaled
 * to [-1, 1], the range EDM's sigma_data = 0.5 assumes (Karras et al. 2022, sec. 5).
 *
 * @param labels class index per image, or null
 * @param classes number of classes (0 when unlabeled)
 */
public record ImageDataset(String source, byte[] pixels, int count, int height, int width, int channels,
                           int[] labels, int classes) {
    public ImageDataset {
        if ((long) count * height * width * channels != pixels.length) {
            throw new IllegalArgumentException(source + ": " + pixels.length + " pixel bytes for " + count + " images of "
                    + height + "x" + width + "x" + channels);
        }
        if (labels != null && labels.length != count) {
            throw new IllegalArgumentException(source + ": " + labels.length + " labels for " + count + " images");
        }
    }

    public int imageSize() {
        return height * width * channels;
    }

    /** Image {@code i} as floats in [-1, 1], NHWC order. */
    public float[] image(int i) {
        float[] out = new float[imageSize()];
        int base = i * imageSize();
        for (int k = 0; k < out.length; k++) {
            out[k] = (pixels[base + k] & 0xff) / 127.5f - 1f;
        }
        return out;
    }

    /**
     * Fills {@code out} (B, H, W, C) with the images {@code indices}, each mirrored left-right with probability
     * 1/2 when {@code flip} (random horizontal flip, the usual augmentation for these data sets).
     */
    public void batch(int[] indices, boolean flip, SplittableRandom rng, Tensor out) {
        if (!out.hasShape(indices.length, height, width, channels)) {
            throw new IllegalArgumentException(source + ": batch tensor " + out.describe() + " does not hold "
                    + indices.length + " images of " + height + "x" + width + "x" + channels);
        }
        MemorySegment s = out.segment();
        int size = imageSize();
        int row = width * channels;
        for (int b = 0; b < indices.length; b++) {
            int base = indices[b] * size;
            boolean mirror = flip && rng.nextBoolean();
            long o = (long) b * size;
            for (int y = 0; y < height; y++) {
                for (int x = 0; x < width; x++) {
                    int sx = mirror ? width - 1 - x : x;
                    for (int c = 0; c < channels; c++) {
                        float v = (pixels[base + y * row + sx * channels + c] & 0xff) / 127.5f - 1f;
                        s.setAtIndex(Tensor.F32, o + (long) y * row + (long) x * channels + c, v);
                    }
                }
            }
        }
    }

    /** The first {@code n} images (a view for quick runs and tests). */
    public ImageDataset head(int n) {
        int m = Math.min(n, count);
        byte[] p = java.util.Arrays.copyOf(pixels, m * imageSize());
        return new ImageDataset(source, p, m, height, width, channels,
                labels == null ? null : java.util.Arrays.copyOf(labels, m), classes);
    }
}
