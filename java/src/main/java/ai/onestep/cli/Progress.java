package ai.onestep.cli;

import ai.onestep.diffusion.TrainingProgress;
import java.util.Locale;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;

/** A terminal progress bar (me.tongfei:progressbar) with the loss, steps/s, ETA and the last note. */
final class Progress implements TrainingProgress, AutoCloseable {
    private final ProgressBar bar;
    private String lastNote = "";

    Progress(String task, long max, long start) {
        bar = new ProgressBarBuilder().setTaskName(task).setInitialMax(max).startsFrom(start, java.time.Duration.ZERO)
                .setStyle(ProgressBarStyle.ASCII).setUpdateIntervalMillis(500).showSpeed()
                .setConsumer(new me.tongfei.progressbar.ConsoleProgressBarConsumer(System.err)).build();
    }

    @Override
    public void step(long step, double loss, String note) {
        if (note != null) {
            lastNote = note;
        }
        bar.stepTo(step);
        bar.setExtraMessage(String.format(Locale.ROOT, "loss %.4f %s", loss, lastNote));
    }

    @Override
    public void close() {
        bar.close();
    }
}
