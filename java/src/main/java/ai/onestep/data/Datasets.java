package ai.onestep.data;

import java.awt.image.BufferedImage;
import java.io.BufferedInputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;
import java.util.zip.GZIPInputStream;
import javax.imageio.ImageIO;

/**
 * Readers for the image data sets the engine trains on: IDX files (MNIST, Fashion-MNIST; raw or .gz), CIFAR-10
 * binary batches, and a folder of PNG/JPEG images. Every failure names the file at fault.
 */
public final class Datasets {
    /** Where Debian's dataset-fashion-mnist package installs the IDX files. */
    public static final Path FASHION_MNIST = Path.of("/usr/share/datasets/fashion-mnist");

    private Datasets() {
    }

    /**
     * Resolves a {@code --data} argument: the name {@code fashion-mnist} (its train or test split), a folder of IDX
     * files, a folder of CIFAR-10 batches, or a folder of images.
     */
    public static ImageDataset load(String spec, boolean train) {
        if (spec.equals("fashion-mnist")) {
            return fashionMnist(train);
        }
        Path p = Path.of(spec);
        if (!Files.isDirectory(p)) {
            throw new DataException(spec + (Files.exists(p) ? ": a file, not a folder" : ": no such folder") + " (give a folder of images, IDX or CIFAR-10 files, "
                    + "or the name fashion-mnist)");
        }
        String split = train ? "train" : "t10k";
        Path idx = firstExisting(p.resolve(split + "-images-idx3-ubyte.gz"), p.resolve(split + "-images-idx3-ubyte"));
        if (idx != null) {
            Path labels = firstExisting(p.resolve(split + "-labels-idx1-ubyte.gz"), p.resolve(split + "-labels-idx1-ubyte"));
            return idx(idx, labels);
        }
        Path cifar = p.resolve("data_batch_1.bin");
        if (Files.exists(cifar) || Files.exists(p.resolve("test_batch.bin"))) {
            List<Path> files = new ArrayList<>();
            if (train) {
                for (int i = 1; i <= 5; i++) {
                    Path f = p.resolve("data_batch_" + i + ".bin");
                    if (Files.exists(f)) {
                        files.add(f);
                    }
                }
            } else {
                files.add(p.resolve("test_batch.bin"));
            }
            return cifar10(files);
        }
        return imageFolder(p);
    }

    public static ImageDataset fashionMnist(boolean train) {
        String split = train ? "train" : "t10k";
        Path images = FASHION_MNIST.resolve(split + "-images-idx3-ubyte.gz");
        if (!Files.exists(images)) {
            throw new DataException(images + ": Fashion-MNIST is not installed; install it with "
                    + "'apt-get install dataset-fashion-mnist' (Debian package dataset-fashion-mnist)");
        }
        return idx(images, FASHION_MNIST.resolve(split + "-labels-idx1-ubyte.gz"));
    }

    private static Path firstExisting(Path... ps) {
        for (Path p : ps) {
            if (Files.exists(p)) {
                return p;
            }
        }
        return null;
    }

    private static InputStream open(Path p) throws IOException {
        InputStream in = new BufferedInputStream(Files.newInputStream(p), 1 << 16);
        return p.toString().endsWith(".gz") ? new GZIPInputStream(in, 1 << 16) : in;
    }

    /**
     * IDX (LeCun's MNIST format): big-endian magic 0x00000803 with (count, rows, cols) for images, 0x00000801 with
     * (count) for labels. {@code labels} may be null.
     */
    public static ImageDataset idx(Path images, Path labels) {
        byte[] px;
        int n, h, w;
        try (DataInputStream in = new DataInputStream(open(images))) {
            int magic = in.readInt();
            if (magic != 0x00000803) {
                throw new DataException(images + ": not an IDX image file (magic 0x" + Integer.toHexString(magic)
                        + ", expected 0x803)");
            }
            n = in.readInt();
            h = in.readInt();
            w = in.readInt();
            if (n <= 0 || h <= 0 || w <= 0 || (long) n * h * w > Integer.MAX_VALUE - 8) {
                throw new DataException(images + ": implausible IDX dimensions " + n + "x" + h + "x" + w);
            }
            px = new byte[n * h * w];
            in.readFully(px);
        } catch (EOFException e) {
            throw new DataException(images + ": truncated IDX file", e);
        } catch (IOException e) {
            throw new DataException(images + ": cannot read: " + e.getMessage(), e);
        }
        int[] lab = null;
        int classes = 0;
        if (labels != null) {
            try (DataInputStream in = new DataInputStream(open(labels))) {
                int magic = in.readInt();
                int m = in.readInt();
                if (magic != 0x00000801) {
                    throw new DataException(labels + ": not an IDX label file (magic 0x" + Integer.toHexString(magic)
                            + ", expected 0x801)");
                }
                if (m != n) {
                    throw new DataException(labels + ": " + m + " labels for " + n + " images in " + images);
                }
                byte[] b = new byte[m];
                in.readFully(b);
                lab = new int[m];
                for (int i = 0; i < m; i++) {
                    lab[i] = b[i] & 0xff;
                    classes = Math.max(classes, lab[i] + 1);
                }
            } catch (EOFException e) {
                throw new DataException(labels + ": truncated IDX file", e);
            } catch (IOException e) {
                throw new DataException(labels + ": cannot read: " + e.getMessage(), e);
            }
        }
        return new ImageDataset(images.toString(), px, n, h, w, 1, lab, classes);
    }

    /** CIFAR-10 binary batches: records of 1 label byte and 3072 pixel bytes (3 planes of 32x32, CHW). */
    public static ImageDataset cifar10(List<Path> files) {
        int rec = 1 + 3072;
        List<byte[]> parts = new ArrayList<>();
        long total = 0;
        for (Path f : files) {
            try {
                byte[] all = Files.readAllBytes(f);
                if (all.length == 0 || all.length % rec != 0) {
                    throw new DataException(f + ": " + all.length + " bytes is not a whole number of CIFAR-10 records ("
                            + rec + " bytes each)");
                }
                parts.add(all);
                total += all.length / rec;
            } catch (IOException e) {
                throw new DataException(f + ": cannot read: " + e.getMessage(), e);
            }
        }
        int n = (int) total;
        byte[] px = new byte[n * 3072];
        int[] lab = new int[n];
        int i = 0;
        for (byte[] all : parts) {
            for (int r = 0; r < all.length / rec; r++, i++) {
                int base = r * rec;
                lab[i] = all[base] & 0xff;
                if (lab[i] > 9) {
                    throw new DataException(files.get(0).getParent() + ": CIFAR-10 label " + lab[i] + " out of range");
                }
                // CHW planes to the engine's HWC order.
                for (int c = 0; c < 3; c++) {
                    for (int p = 0; p < 1024; p++) {
                        px[i * 3072 + p * 3 + c] = all[base + 1 + c * 1024 + p];
                    }
                }
            }
        }
        return new ImageDataset(files.isEmpty() ? "cifar10" : files.get(0).getParent().toString(), px, n, 32, 32, 3,
                lab, 10);
    }

    /**
     * A folder of .png/.jpg/.jpeg images, all the same size; grayscale if every image is gray, RGB otherwise.
     * Files are sorted by name so the order is reproducible.
     */
    public static ImageDataset imageFolder(Path dir) {
        List<Path> files;
        try (Stream<Path> s = Files.list(dir)) {
            files = s.filter(f -> {
                String n = f.getFileName().toString().toLowerCase(Locale.ROOT);
                return n.endsWith(".png") || n.endsWith(".jpg") || n.endsWith(".jpeg");
            }).sorted().toList();
        } catch (IOException e) {
            throw new DataException(dir + ": cannot list: " + e.getMessage(), e);
        }
        if (files.isEmpty()) {
            throw new DataException(dir + ": no images (.png, .jpg, .jpeg) and no IDX or CIFAR-10 files");
        }
        List<BufferedImage> imgs = new ArrayList<>();
        boolean gray = true;
        for (Path f : files) {
            BufferedImage img;
            try {
                img = ImageIO.read(f.toFile());
            } catch (IOException e) {
                throw new DataException(f + ": unreadable image: " + e.getMessage(), e);
            }
            if (img == null) {
                throw new DataException(f + ": unreadable image (not a PNG or JPEG ImageIO can decode)");
            }
            if (!imgs.isEmpty() && (img.getWidth() != imgs.get(0).getWidth() || img.getHeight() != imgs.get(0).getHeight())) {
                throw new DataException(f + ": " + img.getWidth() + "x" + img.getHeight() + " differs from "
                        + files.get(0).getFileName() + " (" + imgs.get(0).getWidth() + "x" + imgs.get(0).getHeight()
                        + "); all images must have one size");
            }
            gray &= img.getColorModel().getNumColorComponents() == 1;
            imgs.add(img);
        }
        int h = imgs.get(0).getHeight(), w = imgs.get(0).getWidth(), c = gray ? 1 : 3;
        byte[] px = new byte[imgs.size() * h * w * c];
        int o = 0;
        for (BufferedImage img : imgs) {
            for (int y = 0; y < h; y++) {
                for (int x = 0; x < w; x++) {
                    if (gray) {
                        // The raster, not getRGB: getRGB would convert a linear-gray image's values to sRGB.
                        px[o++] = (byte) img.getRaster().getSample(x, y, 0);
                    } else {
                        int rgb = img.getRGB(x, y);
                        px[o++] = (byte) ((rgb >> 16) & 0xff);
                        px[o++] = (byte) ((rgb >> 8) & 0xff);
                        px[o++] = (byte) (rgb & 0xff);
                    }
                }
            }
        }
        return new ImageDataset(dir.toString(), px, imgs.size(), h, w, c, null, 0);
    }
}
