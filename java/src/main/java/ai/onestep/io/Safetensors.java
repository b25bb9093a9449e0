package ai.onestep.io;

import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N, N bytes of JSON
 * mapping each tensor name to {@code {"dtype", "shape", "data_offsets": [begin, end]}} (offsets relative to the
 * byte after the header) plus an optional {@code "__metadata__"} object of strings, then the raw data.
 *
 * <p>Reading validates everything before any tensor is touched: the header length against the file size, the
 * JSON, every dtype, shape and offset pair (inside the data, the right size for the shape, no overlaps). Each
 * failure is a {@link CheckpointException} naming the file and the tensor or field. Writing goes to a temporary
 * file in the same folder, is forced to disk, and is renamed over the target, so a crash mid-save leaves the
 * previous checkpoint intact.
 */
public final class Safetensors {
    /** The largest header we accept (the format's reference implementation uses the same 100 MB limit). */
    static final long MAX_HEADER = 100L << 20;

    private Safetensors() {
    }

    /** One tensor's entry in the header. */
    public record Entry(String name, String dtype, int[] shape, long begin, long end) {
        public long elements() {
            long n = 1;
            for (int d : shape) {
                n *= d;
            }
            return n;
        }

        @Override
        public String toString() {
            return name + " " + dtype + " " + Arrays.toString(shape);
        }
    }

    private static int dtypeSize(String dtype) {
        return switch (dtype) {
            case "F32" -> 4;
            case "F16", "BF16" -> 2;
            default -> -1;
        };
    }

    /** Opens and validates a file; its tensors are read on demand with {@link Reader#read}. */
    public static Reader open(Path path) {
        return new Reader(path);
    }

    /** An open, validated safetensors file (memory-mapped; close it to unmap). */
    public static final class Reader implements AutoCloseable {
        private final Path path;
        private final Arena arena = Arena.ofShared();
        private final MemorySegment data;
        private final Map<String, Entry> entries;
        private final Map<String, String> metadata;

        Reader(Path path) {
            this.path = path;
            String file = path.toString();
            if (!Files.isRegularFile(path)) {
                arena.close();
                throw new CheckpointException(file + ": no such file");
            }
            try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
                long size = ch.size();
                if (size < 8) {
                    throw new CheckpointException(file + ": " + size + " bytes is too short for a safetensors file "
                            + "(needs an 8-byte header length)");
                }
                ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
                while (len.hasRemaining() && ch.read(len, len.position()) > 0) {
                    // read the 8 bytes
                }
                long n = len.getLong(0);
                if (n < 2 || n > MAX_HEADER || n > size - 8) {
                    throw new CheckpointException(file + ": header length " + n + " is invalid for a file of " + size
                            + " bytes (not a safetensors file, or truncated)");
                }
                ByteBuffer hb = ByteBuffer.allocate((int) n);
                while (hb.hasRemaining()) {
                    if (ch.read(hb, 8 + hb.position()) < 0) {
                        throw new CheckpointException(file + ": truncated header");
                    }
                }
                String header = new String(hb.array(), StandardCharsets.UTF_8);
                Map<String, Object> json;
                try {
                    json = Json.parseObject(header);
                } catch (Json.JsonException e) {
                    throw new CheckpointException(file + ": header is not valid JSON: " + e.getMessage());
                }
                long dataSize = size - 8 - n;
                this.metadata = parseMetadata(file, json.remove("__metadata__"));
                this.entries = parseEntries(file, json, dataSize);
                this.data = ch.map(FileChannel.MapMode.READ_ONLY, 8 + n, dataSize, arena);
            } catch (IOException e) {
                arena.close();
                throw new CheckpointException(file + ": cannot read: " + e.getMessage(), e);
            } catch (RuntimeException e) {
                arena.close();
                throw e;
            }
        }

        private static Map<String, String> parseMetadata(String file, Object m) {
            if (m == null) {
                return Map.of();
            }
            if (!(m instanceof Map<?, ?> map)) {
                throw new CheckpointException(file + ": __metadata__ must be an object of strings, found "
                        + Json.kind(m));
            }
            Map<String, String> out = new LinkedHashMap<>();
            for (var e : map.entrySet()) {
                if (!(e.getValue() instanceof String v)) {
                    throw new CheckpointException(file + ": __metadata__." + e.getKey() + " must be a string, found "
                            + Json.kind(e.getValue()));
                }
                out.put((String) e.getKey(), v);
            }
            return Collections.unmodifiableMap(out);
        }

        private static Map<String, Entry> parseEntries(String file, Map<String, Object> json, long dataSize) {
            Map<String, Entry> out = new LinkedHashMap<>();
            for (var e : json.entrySet()) {
                String name = e.getKey();
                String where = file + ": tensor '" + name + "'";
                if (!(e.getValue() instanceof Map<?, ?> t)) {
                    throw new CheckpointException(where + " must be an object, found " + Json.kind(e.getValue()));
                }
                if (!(t.get("dtype") instanceof String dtype)) {
                    throw new CheckpointException(where + ": missing or non-string dtype");
                }
                if (dtypeSize(dtype) < 0) {
                    throw new CheckpointException(where + ": dtype " + dtype + " is not supported (F32, F16, BF16)");
                }
                int[] shape = ints(where + ": shape", t.get("shape"), Integer.MAX_VALUE);
                long[] off = longs(where + ": data_offsets", t.get("data_offsets"));
                if (off.length != 2 || off[0] > off[1] || off[1] > dataSize) {
                    throw new CheckpointException(where + ": data_offsets " + Arrays.toString(off)
                            + " lie outside the data section of " + dataSize + " bytes");
                }
                Entry en = new Entry(name, dtype, shape, off[0], off[1]);
                long need = en.elements() * dtypeSize(dtype);
                if (need != off[1] - off[0]) {
                    throw new CheckpointException(where + ": shape " + Arrays.toString(shape) + " of " + dtype
                            + " needs " + need + " bytes but data_offsets span " + (off[1] - off[0]));
                }
                out.put(name, en);
            }
            List<Entry> sorted = new ArrayList<>(out.values());
            sorted.sort(Comparator.comparingLong(Entry::begin));
            for (int k = 1; k < sorted.size(); k++) {
                if (sorted.get(k).begin() < sorted.get(k - 1).end()) {
                    throw new CheckpointException(file + ": tensors '" + sorted.get(k - 1).name() + "' and '"
                            + sorted.get(k).name() + "' overlap in the data section");
                }
            }
            return Collections.unmodifiableMap(out);
        }

        private static int[] ints(String where, Object v, long max) {
            long[] l = longs(where, v);
            int[] r = new int[l.length];
            for (int k = 0; k < l.length; k++) {
                if (l[k] < 0 || l[k] > max) {
                    throw new CheckpointException(where + " has an invalid entry " + l[k]);
                }
                r[k] = (int) l[k];
            }
            return r;
        }

        private static long[] longs(String where, Object v) {
            if (!(v instanceof List<?> list)) {
                throw new CheckpointException(where + " must be an array of integers, found " + Json.kind(v));
            }
            long[] r = new long[list.size()];
            for (int k = 0; k < r.length; k++) {
                if (!(list.get(k) instanceof Long x) || x < 0) {
                    throw new CheckpointException(where + " must hold non-negative integers, found " + list.get(k));
                }
                r[k] = x;
            }
            return r;
        }

        public Path path() {
            return path;
        }

        /** Tensor entries in header order. */
        public Map<String, Entry> entries() {
            return entries;
        }

        public Map<String, String> metadata() {
            return metadata;
        }

        public Entry entry(String name) {
            Entry e = entries.get(name);
            if (e == null) {
                throw new CheckpointException(path + ": missing tensor '" + name + "'");
            }
            return e;
        }

        /**
         * Reads tensor {@code name} as float32 into {@code into}, checking it has {@code expectedShape} (pass null to
         * accept any shape). F16 and BF16 are widened exactly.
         */
        public Tensor read(String name, TensorArena into, Layout layout, int... expectedShape) {
            Entry e = entry(name);
            if (expectedShape != null && expectedShape.length > 0 && !Arrays.equals(e.shape(), expectedShape)) {
                throw new CheckpointException(path + ": tensor '" + name + "' has shape " + Arrays.toString(e.shape())
                        + ", expected " + Arrays.toString(expectedShape));
            }
            Tensor t = into.allocate(layout, e.shape());
            MemorySegment src = data.asSlice(e.begin(), e.end() - e.begin());
            MemorySegment dst = t.segment();
            long n = e.elements();
            ValueLayout.OfFloat f32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
            ValueLayout.OfShort u16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
            switch (e.dtype()) {
                case "F32" -> {
                    for (long k = 0; k < n; k++) {
                        dst.setAtIndex(Tensor.F32, k, src.getAtIndex(f32, k));
                    }
                }
                case "F16" -> {
                    for (long k = 0; k < n; k++) {
                        dst.setAtIndex(Tensor.F32, k, Float.float16ToFloat(src.getAtIndex(u16, k)));
                    }
                }
                case "BF16" -> {
                    for (long k = 0; k < n; k++) {
                        dst.setAtIndex(Tensor.F32, k, Float.intBitsToFloat((src.getAtIndex(u16, k) & 0xffff) << 16));
                    }
                }
                default -> throw new CheckpointException(path + ": tensor '" + name + "' has dtype " + e.dtype());
            }
            return t;
        }

        @Override
        public void close() {
            arena.close();
        }
    }

    /**
     * Writes {@code tensors} (in map order) as F32 with {@code metadata}, atomically: a temporary file in the same
     * folder, forced to disk, then renamed over {@code path}.
     */
    public static void write(Path path, Map<String, Tensor> tensors, Map<String, String> metadata) {
        Map<String, Object> header = new LinkedHashMap<>();
        if (metadata != null && !metadata.isEmpty()) {
            header.put("__metadata__", new LinkedHashMap<>(metadata));
        }
        long offset = 0;
        for (var e : tensors.entrySet()) {
            if (e.getKey().equals("__metadata__")) {
                throw new CheckpointException(path + ": '__metadata__' is reserved and cannot name a tensor");
            }
            Tensor t = e.getValue();
            Map<String, Object> entry = new LinkedHashMap<>();
            entry.put("dtype", "F32");
            entry.put("shape", t.shape());
            long bytes = t.size() * Float.BYTES;
            entry.put("data_offsets", List.of(offset, offset + bytes));
            header.put(e.getKey(), entry);
            offset += bytes;
        }
        byte[] json = Json.write(header).getBytes(StandardCharsets.UTF_8);
        // Pad the header with spaces to a multiple of 8 so the data section is aligned (as the reference writer does).
        int padded = (json.length + 7) / 8 * 8;
        byte[] h = Arrays.copyOf(json, padded);
        Arrays.fill(h, json.length, padded, (byte) ' ');
        try {
            AtomicFile.write(path, tmp -> {
                try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE,
                        StandardOpenOption.TRUNCATE_EXISTING); Arena a = Arena.ofConfined()) {
                    ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(0, padded);
                    writeFully(ch, len);
                    writeFully(ch, ByteBuffer.wrap(h));
                    for (Tensor t : tensors.values()) {
                        // Tensors are float32 in native (little-endian) order, exactly the F32 layout of the format.
                        MemorySegment buf = a.allocate(t.size() * Float.BYTES);
                        MemorySegment.copy(t.segment(), 0, buf, 0, buf.byteSize());
                        writeFully(ch, buf.asByteBuffer());
                    }
                    ch.force(true);
                }
            });
        } catch (IOException e) {
            throw new CheckpointException(path + ": cannot write: " + AtomicFile.reason(e), e);
        }
    }

    private static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }
}
