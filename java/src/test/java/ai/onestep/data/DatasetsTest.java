package ai.onestep.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.io.Png;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.SplittableRandom;
import java.util.zip.GZIPOutputStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class DatasetsTest {
    @TempDir
    Path dir;

    private void writeIdx(Path p, boolean gz, int magic, int[] dims, byte[] data) throws IOException {
        ByteArrayOutputStream bo = new ByteArrayOutputStream();
        DataOutputStream d = new DataOutputStream(bo);
        d.writeInt(magic);
        for (int x : dims) {
            d.writeInt(x);
        }
        d.write(data);
        try (OutputStream o = gz ? new GZIPOutputStream(Files.newOutputStream(p)) : Files.newOutputStream(p)) {
            o.write(bo.toByteArray());
        }
    }

    @Test
    void idxGzAndRawReadTheSameImagesAndLabels() throws IOException {
        byte[] px = new byte[3 * 2 * 2];
        for (int i = 0; i < px.length; i++) {
            px[i] = (byte) (i * 20);
        }
        writeIdx(dir.resolve("train-images-idx3-ubyte.gz"), true, 0x803, new int[] {3, 2, 2}, px);
        writeIdx(dir.resolve("train-labels-idx1-ubyte"), false, 0x801, new int[] {3}, new byte[] {7, 0, 9});
        ImageDataset d = Datasets.load(dir.toString(), true);
        assertEquals(3, d.count());
        assertEquals(2, d.height());
        assertArrayEquals(new int[] {7, 0, 9}, d.labels());
        assertEquals(-1f, d.image(0)[0]);
        assertEquals(80 / 127.5f - 1f, d.image(1)[0], 1e-6);
    }

    @Test
    void flipMirrorsRowsAndScalesToMinusOneOne() {
        byte[] px = {0, (byte) 255, 0, (byte) 255};
        ImageDataset d = new ImageDataset("t", px, 1, 2, 2, 1, null, 0);
        try (TensorArena a = new TensorArena()) {
            Tensor t = a.allocate(Layout.NHWC, 1, 2, 2, 1);
            boolean sawFlip = false, sawPlain = false;
            SplittableRandom r = new SplittableRandom(1);
            for (int k = 0; k < 20; k++) {
                d.batch(new int[] {0}, true, r, t);
                float[] v = t.toArray();
                sawPlain |= v[0] == -1f && v[1] == 1f;
                sawFlip |= v[0] == 1f && v[1] == -1f;
            }
            assertTrue(sawFlip && sawPlain);
        }
    }

    @Test
    void badInputNamesTheFile() throws IOException {
        Path bad = dir.resolve("train-images-idx3-ubyte");
        writeIdx(bad, false, 0x801, new int[] {1}, new byte[1]);
        DataException e = assertThrows(DataException.class, () -> Datasets.load(dir.toString(), true));
        assertTrue(e.getMessage().startsWith(bad.toString()) && e.getMessage().contains("magic"), e.getMessage());
        writeIdx(bad, false, 0x803, new int[] {5, 4, 4}, new byte[10]);
        e = assertThrows(DataException.class, () -> Datasets.load(dir.toString(), true));
        assertTrue(e.getMessage().contains("truncated"), e.getMessage());
        Path empty = Files.createDirectory(dir.resolve("empty"));
        e = assertThrows(DataException.class, () -> Datasets.load(empty.toString(), true));
        assertTrue(e.getMessage().contains("no images"), e.getMessage());
        Path junk = Files.createDirectory(dir.resolve("junk"));
        Files.write(junk.resolve("a.png"), new byte[] {1, 2, 3});
        e = assertThrows(DataException.class, () -> Datasets.load(junk.toString(), true));
        assertTrue(e.getMessage().contains("a.png") && e.getMessage().contains("unreadable"), e.getMessage());
        e = assertThrows(DataException.class, () -> Datasets.load(dir.resolve("nope").toString(), true));
        assertTrue(e.getMessage().contains("no such folder"), e.getMessage());
    }

    @Test
    void pngGridRoundTripsThroughTheImageFolderReader() {
        try (TensorArena a = new TensorArena()) {
            Tensor x = a.allocate(Layout.NHWC, 1, 3, 4, 1);
            float[] v = new float[12];
            for (int i = 0; i < 12; i++) {
                v[i] = -1f + i * (2f / 11);
            }
            x.copyFrom(v);
            Path folder = dir.resolve("imgs");
            Png.writeGrid(x, 1, folder.resolve("g.png"));
            ImageDataset d = Datasets.imageFolder(folder);
            assertEquals(1, d.channels());
            assertEquals(3 + 4, d.height());
            // The image sits inside a 2-pixel gap; compare its pixels after 8-bit rounding.
            for (int y = 0; y < 3; y++) {
                for (int xx = 0; xx < 4; xx++) {
                    int got = d.pixels()[(y + 2) * d.width() + xx + 2] & 0xff;
                    assertEquals(Math.round((v[y * 4 + xx] + 1) * 127.5f), got, "pixel " + y + "," + xx);
                }
            }
        }
    }

    @Test
    void cifarRecordsBecomeHwc() throws IOException {
        byte[] rec = new byte[3073];
        rec[0] = 3;
        rec[1] = 10; // R of pixel 0
        rec[1 + 1024] = 20; // G of pixel 0
        rec[1 + 2048] = 30; // B of pixel 0
        Files.write(dir.resolve("data_batch_1.bin"), rec);
        ImageDataset d = Datasets.load(dir.toString(), true);
        assertEquals(List.of(3), List.of(d.labels()[0]));
        assertArrayEquals(new byte[] {10, 20, 30}, java.util.Arrays.copyOf(d.pixels(), 3));
    }

    @Test
    void realFashionMnistWhenInstalled() {
        org.junit.jupiter.api.Assumptions.assumeTrue(Files.exists(Datasets.FASHION_MNIST),
                "dataset-fashion-mnist is not installed");
        ImageDataset test = Datasets.fashionMnist(false);
        assertEquals(10000, test.count());
        assertEquals(28, test.height());
        assertEquals(10, test.classes());
    }
}
