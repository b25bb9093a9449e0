package ai.onestep.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onestep.backend.Backends;
import ai.onestep.backend.cpu.CpuOps;
import ai.onestep.cli.Main;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** {@code --backend cuda|auto} where no CUDA library or device is available (this test forces that case). */
class BackendSelectionTest {
    private String saved;
    private String missing;

    @BeforeEach
    void pointAtAMissingLibrary() {
        saved = System.getProperty("onestep.kernels.library");
        missing = "/nonexistent-" + UUID.randomUUID() + "/libonestep_kernels.so";
        System.setProperty("onestep.kernels.library", missing);
    }

    @AfterEach
    void restore() {
        if (saved == null) {
            System.clearProperty("onestep.kernels.library");
        } else {
            System.setProperty("onestep.kernels.library", saved);
        }
    }

    @Test
    void autoFallsBackToCpuWithOneLineSayingWhy() {
        List<String> log = new ArrayList<>();
        assertInstanceOf(CpuOps.class, Backends.byName("auto", 1, log::add));
        assertInstanceOf(CpuOps.class, Backends.byName("auto", 1, log::add));
        assertEquals(1, log.size(), "one line per process: " + log);
        assertEquals("backend auto: no CUDA kernel library at " + missing
                + " (built by cmake where nvcc exists): using cpu", log.get(0));
    }

    @Test
    void cudaWithoutADeviceIsOneClearError() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Backends.byName("cuda", 1));
        assertEquals("backend cuda: no CUDA kernel library at " + missing + " (built by cmake where nvcc exists)",
                e.getMessage());
        IllegalArgumentException u = assertThrows(IllegalArgumentException.class, () -> Backends.byName("tpu", 1));
        assertTrue(u.getMessage().contains("choose cpu, cuda, auto, naive or cuda-emulated"), u.getMessage());
    }

    @Test
    void theCliSaysSoInOneLineAndExitsWith2() {
        PrintStream out = System.out, err = System.err;
        ByteArrayOutputStream o = new ByteArrayOutputStream(), e = new ByteArrayOutputStream();
        int code;
        try {
            System.setOut(new PrintStream(o, true, StandardCharsets.UTF_8));
            System.setErr(new PrintStream(e, true, StandardCharsets.UTF_8));
            code = Main.run(new String[] {"sample", "--backend", "cuda", "--model",
                "../models/fmnist-teacher.safetensors", "--n", "1", "--out", "target/never-written.png"});
        } finally {
            System.setOut(out);
            System.setErr(err);
        }
        String text = e.toString(StandardCharsets.UTF_8).trim();
        assertEquals(2, code, text);
        assertEquals(1, text.lines().count(), text);
        assertTrue(text.startsWith("onestep sample: backend cuda: no CUDA kernel library at "), text);
    }
}
