package ai.onestep.eval;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.image.BufferedImage;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The report's Pareto plot: every model's legend entry and every point is drawn inside the image. */
class ReportPlotTest {
    private static boolean columnIsWhite(BufferedImage img, int x) {
        for (int y = 0; y < img.getHeight(); y++) {
            if ((img.getRGB(x, y) & 0xFFFFFF) != 0xFFFFFF) {
                return false;
            }
        }
        return true;
    }

    @Test
    void longModelNamesAreNotCutOffAtTheRightEdge() {
        String longName = "student models/a-rather-long-directory-name/fmnist-student-half-width.safetensors";
        List<Report.Row> rows = List.of(
                new Report.Row("teacher models/fmnist-teacher.safetensors", "teacher", 35, 35, 1.0, 317, 320, 1L, 500),
                new Report.Row("teacher models/fmnist-teacher.safetensors", "teacher", 9, 9, 5.7, 72, 75, 1L, 500),
                new Report.Row(longName, "student", 1, 1, 1.9, 5.2, 5.5, 1L, 500),
                new Report.Row(longName, "student", 2, 2, 1.6, 9.8, 10.1, 1L, 500));
        BufferedImage img = Report.plot(rows);
        // Text running off the image would leave ink in its last column; the layout keeps a white margin.
        assertTrue(columnIsWhite(img, img.getWidth() - 1), "legend or labels touch the right edge");
        assertTrue(columnIsWhite(img, img.getWidth() - 2));
        // One legend row per model: the image grows with the number of models instead of clipping the list.
        BufferedImage more = Report.plot(List.of(rows.get(0), rows.get(2),
                new Report.Row("student c", "student", 1, 1, 2.0, 4, 4, 1L, 500)));
        assertEquals(img.getHeight() + 20, more.getHeight());
    }
}
