package ai.onestep.eval;

import ai.onestep.api.Sampler;
import ai.onestep.io.AtomicFile;
import ai.onestep.io.CheckpointException;
import ai.onestep.io.Json;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import javax.imageio.ImageIO;

/**
 * The quality-versus-speed report: FID-FMNIST against measured latency per sample and NFE, for the teacher
 * (Heun at 35, 17 and 9 NFE) and each student (1, 2 and 4 steps). Writes report.md, report.json and report.png
 * (the Pareto plot), and returns the rows.
 */
public final class Report {
    /** One measured configuration. */
    public record Row(String model, String role, int steps, int nfe, double fid, double latencyMs, double latencyP90Ms,
                      long flopsPerSample, int n) {
    }

    private Report() {
    }

    /**
     * Measures one model at the given step counts: FID over {@code n} samples (batched), and latency as the median
     * (and p90) of {@code reps} single-sample runs after a warm-up.
     */
    public static List<Row> measure(Sampler s, String label, int[] steps, FeatureNet f, Frechet.Stats ref, int n, int reps,
                                    java.util.function.Consumer<String> log) {
        List<Row> rows = new ArrayList<>();
        var cfg = s.net().config();
        long flopsOne = s.net().flops(1, cfg.sampleSize(), cfg.sampleSize());
        for (int st : steps) {
            if (s.isStudent() && st > 1) {
                try {
                    s.timepoints(st);
                } catch (IllegalArgumentException e) {
                    log.accept(label + ": no time points for " + st + " steps, skipped");
                    continue;
                }
            }
            try (TensorArena a = new TensorArena()) {
                Tensor x = s.sample(n, st, 2024, null, a, null);
                double fid = Frechet.distance(Frechet.stats(f.features(x)), ref);
                double[] times = new double[reps];
                s.sample(1, st, 0, null, a, null);
                for (int r = 0; r < reps; r++) {
                    long t0 = System.nanoTime();
                    s.sample(1, st, r + 1, null, a, null);
                    times[r] = (System.nanoTime() - t0) / 1e6;
                }
                Arrays.sort(times);
                Row row = new Row(label, s.isStudent() ? "student" : "teacher", st, s.nfe(st), fid, times[reps / 2],
                        times[Math.min(reps - 1, (int) Math.ceil(reps * 0.9) - 1)], flopsOne * s.nfe(st), n);
                rows.add(row);
                log.accept(String.format(Locale.ROOT, "%-28s %2d steps %3d NFE  FID %8.3f  %9.1f ms/sample", label, st,
                        row.nfe(), fid, row.latencyMs()));
            }
        }
        return rows;
    }

    public static String markdown(List<Row> rows, String machine) {
        StringBuilder b = new StringBuilder();
        b.append("| model | role | steps | NFE | FID-FMNIST | latency p50 (ms/sample, batch 1) | p90 | GFLOP/sample | samples |\n");
        b.append("|---|---|---|---|---|---|---|---|---|\n");
        for (Row r : rows) {
            b.append(String.format(Locale.ROOT, "| %s | %s | %d | %d | %.3f | %.1f | %.1f | %.2f | %d |%n", r.model(), r.role(),
                    r.steps(), r.nfe(), r.fid(), r.latencyMs(), r.latencyP90Ms(), r.flopsPerSample() / 1e9, r.n()));
        }
        b.append("\nMachine: ").append(machine).append('\n');
        return b.toString();
    }

    public static void write(List<Row> rows, Path dir, String machine) {
        try {
            Files.createDirectories(dir);
            AtomicFile.writeString(dir.resolve("report.md"), markdown(rows, machine));
            List<Object> js = new ArrayList<>();
            for (Row r : rows) {
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("model", r.model());
                m.put("role", r.role());
                m.put("steps", (long) r.steps());
                m.put("nfe", (long) r.nfe());
                m.put("fid", r.fid());
                m.put("latency_ms_p50", r.latencyMs());
                m.put("latency_ms_p90", r.latencyP90Ms());
                m.put("flops_per_sample", (double) r.flopsPerSample());
                m.put("n", (long) r.n());
                m.put("machine", machine);
                js.add(m);
            }
            AtomicFile.writeString(dir.resolve("report.json"), Json.write(js) + "\n");
            AtomicFile.write(dir.resolve("report.png"), tmp -> ImageIO.write(plot(rows), "png", tmp.toFile()));
        } catch (IOException e) {
            throw new CheckpointException(dir + ": cannot write the report: " + AtomicFile.reason(e), e);
        }
    }

    /**
     * FID against latency (log scale), one colour per model, each point labelled with its NFE. The legend is a
     * row per model under the axis label, so a long file name is never cut off at the image's edge.
     */
    static BufferedImage plot(List<Row> rows) {
        List<String> models = rows.stream().map(Row::model).distinct().toList();
        int w = 900, left = 80, right = 30, top = 40, ph = 460, legendTop = top + ph + 50;
        int h = legendTop + 20 * models.size() + 10;
        BufferedImage img = new BufferedImage(w, h, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = img.createGraphics();
        g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, w, h);
        double minL = rows.stream().mapToDouble(Row::latencyMs).min().orElse(1) / 1.5;
        double maxL = rows.stream().mapToDouble(Row::latencyMs).max().orElse(10) * 1.5;
        double maxF = rows.stream().mapToDouble(Row::fid).max().orElse(1) * 1.15;
        int pw = w - left - right;
        g.setColor(Color.DARK_GRAY);
        g.drawRect(left, top, pw, ph);
        g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 13));
        g.drawString("latency per sample, ms (batch 1, log scale)", left + pw / 2 - 130, top + ph + 38);
        g.drawString("FID-FMNIST", 10, top - 12);
        for (double tick = Math.pow(10, Math.floor(Math.log10(minL))); tick <= maxL; tick *= 10) {
            for (double m : new double[] {1, 2, 5}) {
                double v = tick * m;
                if (v < minL || v > maxL) {
                    continue;
                }
                int x = left + (int) (pw * Math.log(v / minL) / Math.log(maxL / minL));
                g.setColor(new Color(230, 230, 230));
                g.drawLine(x, top, x, top + ph);
                g.setColor(Color.DARK_GRAY);
                g.drawString(v >= 1 ? String.format(Locale.ROOT, "%.0f", v) : String.format(Locale.ROOT, "%.2g", v), x - 8, top + ph + 18);
            }
        }
        for (int k = 0; k <= 5; k++) {
            double v = maxF * k / 5;
            int y = top + ph - (int) (ph * v / maxF);
            g.drawString(String.format(Locale.ROOT, "%.1f", v), left - 45, y + 5);
        }
        Color[] palette = {new Color(31, 119, 180), new Color(214, 39, 40), new Color(44, 160, 44), new Color(148, 103, 189),
            new Color(255, 127, 14), new Color(140, 86, 75)};
        for (int mi = 0; mi < models.size(); mi++) {
            Color c = palette[mi % palette.length];
            g.setColor(c);
            g.setStroke(new BasicStroke(2f));
            int px = -1, py = -1;
            for (Row r : rows) {
                if (!r.model().equals(models.get(mi))) {
                    continue;
                }
                int x = left + (int) (pw * Math.log(r.latencyMs() / minL) / Math.log(maxL / minL));
                int y = top + ph - (int) (ph * r.fid() / maxF);
                if (px >= 0) {
                    g.drawLine(px, py, x, y);
                }
                g.fillOval(x - 5, y - 5, 10, 10);
                g.drawString(r.nfe() + " NFE", x + 7, y - 7);
                px = x;
                py = y;
            }
            g.fillRect(left, legendTop + 20 * mi, 12, 12);
            g.drawString(models.get(mi), left + 18, legendTop + 11 + 20 * mi);
        }
        g.dispose();
        return img;
    }
}
