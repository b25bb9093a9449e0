package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.model.UNet;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Timed choices written to a file and read back (Device.saveChoices / loadChoices, -Donestep.cuda.choices): a device
 * that loads them runs what the first one chose without timing anything, checks each loaded candidate against the
 * incumbent before it runs, and refuses a file made for another device.
 */
class ChoicesFileTest {
    /** A whole pass's choices (convolutions, attention, group norms) on the emulated device, then the output. */
    private static float[] run(EmulatedDevice d) {
        try (UNet net = CudaGraphTest.randomNet(CudaGraphTest.config(32), 29);
             CudaOps ops = new CudaOps(d, 64L << 20, 2, Precision.FP16)) {
            return KrscWeightsTest.run(ops, net);
        }
    }

    private static EmulatedDevice device(Boolean force) {
        EmulatedDevice d = new EmulatedDevice(CudaBackend.emulatedLibrary().toString(), true, false,
                EmulatedDevice.Candidates.TIMED);
        d.forceChoice = force;
        return d;
    }

    @Test
    void aDeviceThatLoadsTheChoicesRunsThemWithoutTiming(@TempDir Path dir) throws Exception {
        EmulatedDeviceTest.require();
        Path file = dir.resolve("choices.tsv");
        float[] first;
        List<Device.Choice> made;
        try (EmulatedDevice a = device(Boolean.TRUE)) {  // every candidate wins
            first = run(a);
            made = a.timedChoices();
            a.saveChoices(file);
        }
        assertTrue(made.stream().anyMatch(c -> c.config() > 0 && c.shape().startsWith("conv,")), made.toString());
        assertTrue(made.stream().anyMatch(c -> c.config() > 0 && c.shape().startsWith("groupnorm,")), made.toString());
        List<String> lines = Files.readAllLines(file);
        assertEquals(made.size() + 2, lines.size(), "a header, the identity, one line a choice");
        try (EmulatedDevice b = device(Boolean.FALSE)) {  // timing now would keep every incumbent
            assertEquals(made.size(), b.loadChoices(file));
            float[] again = run(b);
            assertArrayEquals(first, again, "the loaded choices run the same kernels: the same bits");
            for (Device.Choice c : b.timedChoices()) {
                assertTrue(c.verdict().endsWith("(loaded)"), "nothing timed again: " + c);
            }
            assertEquals(made.stream().map(Device.Choice::config).toList(),
                    b.timedChoices().stream().map(Device.Choice::config).toList());
        }
    }

    @Test
    void aLoadedChoiceThatDoesNotRunHereFallsBackToTheIncumbent(@TempDir Path dir) throws Exception {
        EmulatedDeviceTest.require();
        Path file = dir.resolve("choices.tsv");
        float[] plain;
        try (EmulatedDevice a = device(Boolean.FALSE)) {  // every incumbent kept
            plain = run(a);
            a.saveChoices(file);
        }
        // Every convolution's choice rewritten to tile 99, which the library refuses: each is checked on its first
        // use, refused, and replaced by the incumbent, so the output is the incumbents' bits.
        List<String> lines = Files.readAllLines(file);
        int rewritten = 0;
        for (int i = 2; i < lines.size(); i++) {
            String[] f = lines.get(i).split("\t", -1);
            if (f[0].startsWith("conv,")) {
                f[1] = "99";
                lines.set(i, String.join("\t", f));
                rewritten++;
            }
        }
        assertTrue(rewritten > 0);
        Files.write(file, lines);
        try (EmulatedDevice b = device(Boolean.FALSE)) {
            b.loadChoices(file);
            assertArrayEquals(plain, run(b), "the incumbents' bits");
            for (Device.Choice c : b.timedChoices()) {
                assertEquals(0, c.config(), c.toString());
                if (c.shape().startsWith("conv,")) {
                    assertTrue(c.verdict().contains("did not run here"), c.toString());
                }
            }
        }
    }

    @Test
    void aFileForAnotherDeviceOrMalformedIsRefusedNamingIt(@TempDir Path dir) throws Exception {
        EmulatedDeviceTest.require();
        Path file = dir.resolve("choices.tsv");
        try (EmulatedDevice a = device(Boolean.TRUE)) {
            run(a);
            a.saveChoices(file);
        }
        List<String> lines = Files.readAllLines(file);
        Path other = dir.resolve("other.tsv"), broken = dir.resolve("broken.tsv"), plain = dir.resolve("plain.txt");
        List<String> o = new java.util.ArrayList<>(lines);
        o.set(1, "# cuda; library /elsewhere/libonestep_kernels.so (1 bytes, modified 0); NVIDIA H200 (sm_90)");
        Files.write(other, o);
        List<String> bad = new java.util.ArrayList<>(lines);
        bad.set(2, bad.get(2).replaceFirst("\t[0-9]+\t", "\tseven\t"));
        Files.write(broken, bad);
        Files.writeString(plain, "conv,1,2,3\t1\n");
        try (EmulatedDevice b = device(null)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> b.loadChoices(other));
            assertTrue(e.getMessage().contains(other.toString()) && e.getMessage().contains("made for"),
                    e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> b.loadChoices(broken));
            assertTrue(e.getMessage().contains(broken + " line 3") && e.getMessage().contains("seven"),
                    e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> b.loadChoices(plain));
            assertTrue(e.getMessage().contains("not a timed-choices file"), e.getMessage());
            assertTrue(b.timedChoices().isEmpty(), "nothing taken from a refused file");
        }
    }

    @Test
    void thePropertyLoadsOnOpenAndMergesOnClose(@TempDir Path dir) throws Exception {
        EmulatedDeviceTest.require();
        Path file = dir.resolve("sub/choices.tsv");
        String before = System.getProperty("onestep.cuda.choices");
        System.setProperty("onestep.cuda.choices", file.toString());
        try {
            int first;
            try (EmulatedDevice a = device(Boolean.TRUE)) {
                run(a);
                first = a.timedChoices().size();
            }  // written on close, its folder made
            assertEquals(first + 2, Files.readAllLines(file).size());
            try (EmulatedDevice b = device(Boolean.FALSE)) {
                assertEquals(first, b.timedChoices().size(), "loaded on open");
                assertTrue(b.timedChoices().stream().allMatch(c -> c.verdict().endsWith("(loaded)")));
            }
            // A file that is not a choices file: one log line, the device times as usual, and close replaces it.
            Files.writeString(file, "not choices\n");
            try (EmulatedDevice c = device(Boolean.FALSE)) {
                assertTrue(c.timedChoices().isEmpty());
                run(c);
            }
            assertTrue(Files.readAllLines(file).get(0).startsWith("# onestep timed choices"));
            assertFalse(Files.list(file.getParent()).anyMatch(p -> p.toString().endsWith(".tmp")), "no temporary left");
        } finally {
            if (before == null) {
                System.clearProperty("onestep.cuda.choices");
            } else {
                System.setProperty("onestep.cuda.choices", before);
            }
        }
    }
}
