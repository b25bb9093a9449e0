package ai.onestep.io;

import ai.onestep.tensor.Tensor;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;
import javax.imageio.ImageIO;

/** Writes image batches as one PNG grid (javax.imageio), from NHWC tensors with pixels in [-1, 1]. */
public final class Png {
    private Png() {
    }

    /**
     * Lays the images of {@code x} (N, H, W, C with C = 1 or 3) out in a grid {@code cols} wide with a 2-pixel
     * gap, maps [-1, 1] to [0, 255] (clamped, rounded), and writes it to {@code path} atomically.
     */
    public static void writeGrid(Tensor x, int cols, Path path) {
        if (x.rank() != 4 || (x.dim(3) != 1 && x.dim(3) != 3)) {
            throw new IllegalArgumentException("png: " + path + ": images must be (N, H, W, 1 or 3), got " + x.describe());
        }
        int n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
        cols = Math.max(1, Math.min(cols, n));
        int rows = (n + cols - 1) / cols;
        int gap = 2;
        int gw = cols * w + (cols + 1) * gap, gh = rows * h + (rows + 1) * gap;
        BufferedImage img = new BufferedImage(gw, gh, c == 1 ? BufferedImage.TYPE_BYTE_GRAY : BufferedImage.TYPE_INT_RGB);
        float[] v = x.toArray();
        for (int i = 0; i < n; i++) {
            int ox = gap + (i % cols) * (w + gap), oy = gap + (i / cols) * (h + gap);
            for (int yy = 0; yy < h; yy++) {
                for (int xx = 0; xx < w; xx++) {
                    int base = ((i * h + yy) * w + xx) * c;
                    if (c == 1) {
                        img.getRaster().setSample(ox + xx, oy + yy, 0, toByte(v[base]));
                    } else {
                        int rgb = toByte(v[base]) << 16 | toByte(v[base + 1]) << 8 | toByte(v[base + 2]);
                        img.setRGB(ox + xx, oy + yy, rgb);
                    }
                }
            }
        }
        try {
            AtomicFile.write(path, tmp -> {
                if (!ImageIO.write(img, "png", tmp.toFile())) {
                    throw new IOException("no PNG writer available");
                }
            });
        } catch (IOException e) {
            throw new CheckpointException(path + ": cannot write PNG: " + AtomicFile.reason(e), e);
        }
    }

    static int toByte(float v) {
        float f = (v + 1f) * 127.5f;
        if (!(f >= 0)) {
            return 0; // also maps NaN to black rather than failing a whole grid
        }
        return Math.min(255, Math.round(f));
    }
}
