package ai.onestep.tensor;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class TensorTest {
    @Test
    void reshapeAndSliceAreViewsThatShareMemory() {
        try (TensorArena arena = new TensorArena()) {
            Tensor t = arena.allocate(Layout.NHWC, 2, 3, 4, 5);
            Tensor flat = t.reshape(Layout.ROWS, 2, 60);
            Tensor second = t.slice(1, 2);
            flat.set(60 + 7, 42f);
            assertEquals(42f, t.at(1, 0, 1, 2));
            assertEquals(42f, second.at(0, 0, 1, 2));
            assertArrayEquals(new int[] {1, 3, 4, 5}, second.shape());
            assertEquals(Layout.NHWC, second.layout());
        }
    }

    @Test
    void closedTensorGivesClearErrorNotCrash() {
        TensorArena arena = new TensorArena();
        Tensor t = arena.allocate(Layout.NHWC, 1, 2, 2, 3);
        arena.close();
        TensorException e = assertThrows(TensorException.class, () -> t.get(0));
        assertTrue(e.getMessage().contains("[1, 2, 2, 3] NHWC"), e.getMessage());
        assertTrue(e.getMessage().contains("closed"), e.getMessage());
    }

    @Test
    void badReshapeAndSliceNameTheShapes() {
        try (TensorArena arena = new TensorArena()) {
            Tensor t = arena.allocate(Layout.ROWS, 4, 6);
            TensorException e = assertThrows(TensorException.class, () -> t.reshape(5, 5));
            assertTrue(e.getMessage().contains("[5, 5]") && e.getMessage().contains("[4, 6]"), e.getMessage());
            assertThrows(TensorException.class, () -> t.slice(3, 5));
            assertThrows(TensorException.class, () -> t.at(4, 0));
        }
    }

    @Test
    void memoryIsAlignedForSimd() {
        try (TensorArena arena = new TensorArena()) {
            for (int i = 1; i < 10; i++) {
                assertEquals(0, arena.allocate(i).segment().address() % 64);
            }
        }
    }
}
