package ai.onestep.cli;

import ai.onestep.diffusion.TrainingProgress;
import java.util.Locale;
import me.tongfei.progressbar.ConsoleProgressBarConsumer;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;

/**
 * Progress of long work. On a terminal: a progress bar (me.tongfei:progressbar) with the loss, steps/s, ETA and
 * the last note. Otherwise (a log file, CI): one plain line about every 5% or 30 seconds, so logs stay readable.
 */
final class Progress implements TrainingProgress, AutoCloseable {
    private final ProgressBar bar;
    private final String task;
    private final long max;
    private final long t0 = System.nanoTime();
    private long start = -1;
    private long lastLine = System.nanoTime();
    private long lastStep;
    private String lastNote = "";
    private final String unit;

    Progress(String task, long max, long start) {
        this(task, max, start, "steps");
    }

    /** {@code unit}: what one count is, for the rate ("samples/s"). */
    Progress(String task, long max, long start, String unit) {
        this.task = task;
        this.unit = unit;
        this.max = max;
        boolean terminal = System.console() != null && System.console().isTerminal();
        bar = terminal ? new ProgressBarBuilder().setTaskName(task).setInitialMax(max)
                .startsFrom(start, java.time.Duration.ZERO).setStyle(ProgressBarStyle.ASCII)
                .setUpdateIntervalMillis(500).setUnit(" " + unit, 1).showSpeed().setConsumer(new ConsoleProgressBarConsumer(System.err))
                .build() : null;
    }

    /**
     * The rate counts every step from 0 (a fresh count, such as samples drawn). By default it counts from the step
     * before the first reported one, so that a resumed run's rate is not inflated by the steps it skipped.
     */
    void countFromZero() {
        start = 0;
    }

    @Override
    public void step(long step, double loss, String note) {
        if (note != null) {
            lastNote = note;
        }
        if (start < 0) {
            start = step - 1;
        }
        if (bar != null) {
            bar.stepTo(step);
            bar.setExtraMessage((Double.isNaN(loss) ? "" : String.format(Locale.ROOT, "loss %.4f ", loss)) + lastNote);
            return;
        }
        long now = System.nanoTime();
        boolean due = lastStep == 0 || step == max || step - lastStep >= Math.max(1, max / 20) || now - lastLine > 30_000_000_000L;
        if (due) {
            double secs = (now - t0) / 1e9;
            double rate = (step - start) / Math.max(secs, 1e-9);
            long eta = rate > 0 ? (long) ((max - step) / rate) : 0;
            String lossText = Double.isNaN(loss) ? "" : String.format(Locale.ROOT, "  loss %.4f", loss);
            System.err.printf(Locale.ROOT, "%s %d/%d%s  %.2f %s/s  ETA %d:%02d:%02d  %s%n", task, step, max, lossText,
                    rate, unit, eta / 3600, eta / 60 % 60, eta % 60, lastNote);
            lastLine = now;
            lastStep = step;
        }
    }

    @Override
    public void close() {
        if (bar != null) {
            bar.close();
        }
    }
}
