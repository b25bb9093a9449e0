package ai.onestep.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SafetensorsTest {
    @TempDir
    Path dir;

    /** Builds a file from a header string and a data section, as another framework might have written it. */
    private Path file(String name, String header, byte[] data) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h).put(data);
        Path p = dir.resolve(name);
        Files.write(p, b.array());
        return p;
    }

    private static byte[] floats(float... v) {
        ByteBuffer b = ByteBuffer.allocate(4 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float f : v) {
            b.putFloat(f);
        }
        return b.array();
    }

    private void assertRejected(Path p, String... fragments) {
        CheckpointException e = assertThrows(CheckpointException.class, () -> Safetensors.open(p).close());
        assertTrue(e.getMessage().startsWith(p.toString()), e.getMessage());
        for (String f : fragments) {
            assertTrue(e.getMessage().contains(f), "'" + e.getMessage() + "' lacks '" + f + "'");
        }
    }

    /**
     * A new file is readable by others (rw-r--r--), as files written any other way here are; an overwrite keeps the
     * file's own permissions; no temporary file stays behind. (createTempFile's rw------- made every checkpoint private.)
     */
    @Test
    void writesKeepSensiblePermissionsAndLeaveNoTemporaryFile() throws IOException {
        Path p = dir.resolve("perm.safetensors");
        try (TensorArena a = new TensorArena()) {
            Map<String, Tensor> ts = Map.of("w", a.of(Layout.ROWS, new float[] {1, 2}, 2));
            Safetensors.write(p, ts, Map.of());
            assertEquals("rw-r--r--", PosixFilePermissions.toString(Files.getPosixFilePermissions(p)));
            Files.setPosixFilePermissions(p, PosixFilePermissions.fromString("rw-r-----"));
            Safetensors.write(p, ts, Map.of());
            assertEquals("rw-r-----", PosixFilePermissions.toString(Files.getPosixFilePermissions(p)));
        }
        try (var files = Files.list(dir)) {
            assertEquals(List.of(p), files.toList());
        }
    }

    @Test
    void roundTripKeepsValuesShapesOrderAndMetadata() {
        Path p = dir.resolve("m.safetensors");
        try (TensorArena a = new TensorArena()) {
            Map<String, Tensor> ts = new LinkedHashMap<>();
            ts.put("conv_in.weight", a.of(Layout.OIHW, new float[] {1, 2, 3, 4, 5, 6}, 3, 2, 1, 1));
            ts.put("conv_in.bias", a.of(Layout.ROWS, new float[] {-1.5f, 7}, 2));
            Safetensors.write(p, ts, Map.of("role", "teacher"));
            try (Safetensors.Reader r = Safetensors.open(p)) {
                assertEquals("teacher", r.metadata().get("role"));
                assertEquals(java.util.List.of("conv_in.weight", "conv_in.bias"), java.util.List.copyOf(r.entries().keySet()));
                Tensor w = r.read("conv_in.weight", a, Layout.OIHW, 3, 2, 1, 1);
                assertArrayEquals(new float[] {1, 2, 3, 4, 5, 6}, w.toArray());
                assertArrayEquals(new float[] {-1.5f, 7}, r.read("conv_in.bias", a, Layout.ROWS).toArray());
                CheckpointException e = assertThrows(CheckpointException.class,
                        () -> r.read("conv_in.bias", a, Layout.ROWS, 3));
                assertTrue(e.getMessage().contains("'conv_in.bias' has shape [2], expected [3]"), e.getMessage());
                e = assertThrows(CheckpointException.class, () -> r.read("nope", a, Layout.ROWS));
                assertTrue(e.getMessage().contains("missing tensor 'nope'"), e.getMessage());
            }
        }
    }

    @Test
    void readsHalfAndBfloat16Exactly() throws IOException {
        ByteBuffer b = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
        b.putShort(Float.floatToFloat16(1.5f)).putShort(Float.floatToFloat16(-2f));
        b.putShort((short) (Float.floatToIntBits(3.25f) >>> 16)).putShort((short) (Float.floatToIntBits(-0.5f) >>> 16));
        Path p = file("h.safetensors", "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                + "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]}}", b.array());
        try (TensorArena a = new TensorArena(); Safetensors.Reader r = Safetensors.open(p)) {
            assertArrayEquals(new float[] {1.5f, -2f}, r.read("a", a, Layout.ROWS).toArray());
            assertArrayEquals(new float[] {3.25f, -0.5f}, r.read("b", a, Layout.ROWS).toArray());
        }
    }

    @Test
    void corruptFilesGiveOneClearError() throws IOException {
        byte[] d = floats(1, 2, 3, 4);
        assertRejected(file("short.safetensors", "", new byte[0]).resolveSibling("short.safetensors"), "header length");
        Path tooLong = dir.resolve("len.safetensors");
        Files.write(tooLong, ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(1000).array());
        assertRejected(tooLong, "header length 1000");
        Path tiny = dir.resolve("tiny.safetensors");
        Files.write(tiny, new byte[] {1, 2, 3});
        assertRejected(tiny, "too short");
        assertRejected(file("json.safetensors", "{\"a\": {\"dtype\": ", d), "not valid JSON");
        assertRejected(file("dtype.safetensors", "{\"a\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", d),
                "'a'", "I64");
        assertRejected(file("off.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]}}", d),
                "'a'", "outside the data section of 16 bytes");
        assertRejected(file("size.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", d),
                "'a'", "needs 12 bytes", "span 16");
        assertRejected(file("overlap.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                + "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", d), "overlap");
        assertRejected(file("shape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", d),
                "shape");
        assertRejected(file("meta.safetensors", "{\"__metadata__\":{\"x\":1}}", d), "__metadata__.x must be a string");
        assertRejected(dir.resolve("absent.safetensors"), "no such file");
    }

    @Test
    void failedSaveLeavesThePreviousCheckpointIntact() throws IOException {
        Path p = dir.resolve("ckpt.safetensors");
        try (TensorArena a = new TensorArena()) {
            Safetensors.write(p, Map.of("w", a.of(Layout.ROWS, new float[] {1, 2}, 2)), Map.of());
        }
        byte[] before = Files.readAllBytes(p);
        TensorArena closed = new TensorArena();
        Tensor dead = closed.allocate(2);
        closed.close();
        assertThrows(RuntimeException.class, () -> Safetensors.write(p, Map.of("w", dead), Map.of()));
        assertArrayEquals(before, Files.readAllBytes(p));
        try (var files = Files.list(dir)) {
            assertEquals(1, files.count(), "no temporary file is left behind");
        }
    }
}
