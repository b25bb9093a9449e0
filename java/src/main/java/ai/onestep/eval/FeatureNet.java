package ai.onestep.eval;

import ai.onestep.backend.Ops;
import ai.onestep.data.ImageDataset;
import ai.onestep.io.CheckpointException;
import ai.onestep.io.Safetensors;
import ai.onestep.model.Classifier;
import ai.onestep.model.Context;
import ai.onestep.nn.Parameter;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import ai.onestep.tensor.Workspace;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The trained in-domain classifier as a feature extractor: loading, saving, pooled features of a set of images
 * (FID-FMNIST), and classification accuracy.
 */
public final class FeatureNet implements AutoCloseable {
    public static final String ROLE = "classifier";

    private final Classifier net;
    private final Ops ops;

    public FeatureNet(Classifier net, Ops ops) {
        this.net = net;
        this.ops = ops;
    }

    public Classifier net() {
        return net;
    }

    public static FeatureNet load(Path path, Ops ops) {
        try (Safetensors.Reader r = Safetensors.open(path)) {
            Map<String, String> m = r.metadata();
            if (!ROLE.equals(m.get("onestep.role"))) {
                throw new CheckpointException(path + ": not a classifier checkpoint (onestep.role = "
                        + m.get("onestep.role") + ")");
            }
            int in = Integer.parseInt(m.getOrDefault("in_channels", "1"));
            int width = Integer.parseInt(m.getOrDefault("width", "32"));
            int classes = Integer.parseInt(m.getOrDefault("classes", "10"));
            Classifier c = new Classifier(in, width, classes, false);
            try (TensorArena tmp = new TensorArena()) {
                for (Parameter p : c.parameters()) {
                    p.value().copyFrom(r.read(p.name(), tmp, Layout.ROWS, p.value().shape()));
                }
            }
            return new FeatureNet(c, ops);
        } catch (NumberFormatException e) {
            throw new CheckpointException(path + ": bad classifier metadata: " + e.getMessage());
        }
    }

    /** Saves in the engine's layouts (HWIO convs, (in, out) linears): this network never leaves the engine. */
    public static void save(Classifier c, Path path, Map<String, String> extraMeta) {
        Map<String, Tensor> t = new LinkedHashMap<>();
        for (Parameter p : c.parameters()) {
            t.put(p.name(), p.value());
        }
        Map<String, String> m = new LinkedHashMap<>(extraMeta);
        m.put("onestep.role", ROLE);
        m.put("in_channels", Integer.toString(c.inChannels()));
        m.put("width", Integer.toString(c.width()));
        m.put("classes", Integer.toString(c.classes()));
        Safetensors.write(path, t, m);
    }

    /** Pooled features of images (N, H, W, C) in [-1, 1], computed in batches: an n x d matrix in double. */
    public double[][] features(Tensor images) {
        int n = images.dim(0), d = net.featureDim();
        double[][] out = new double[n][d];
        try (Workspace ws = new Workspace()) {
            for (int s = 0; s < n; s += 256) {
                int e = Math.min(n, s + 256);
                ws.reset();
                Tensor f = net.forward(Context.inference(ops, ws), images.slice(s, e)).features();
                for (int i = s; i < e; i++) {
                    for (int j = 0; j < d; j++) {
                        out[i][j] = f.get((long) (i - s) * d + j);
                    }
                }
            }
        }
        return out;
    }

    /** Features of a whole data set (or its first {@code limit} images). */
    public double[][] features(ImageDataset data, int limit) {
        int n = Math.min(limit, data.count());
        try (TensorArena a = new TensorArena()) {
            Tensor x = a.allocate(Layout.NHWC, n, data.height(), data.width(), data.channels());
            int[] idx = new int[n];
            for (int i = 0; i < n; i++) {
                idx[i] = i;
            }
            data.batch(idx, false, null, x);
            return features(x);
        }
    }

    /** Top-1 accuracy on a labelled data set. */
    public double accuracy(ImageDataset data) {
        int correct = 0;
        try (Workspace ws = new Workspace(); TensorArena a = new TensorArena()) {
            for (int s = 0; s < data.count(); s += 256) {
                int e = Math.min(data.count(), s + 256);
                int[] idx = new int[e - s];
                for (int i = 0; i < idx.length; i++) {
                    idx[i] = s + i;
                }
                ws.reset();
                Tensor x = ws.allocate(Layout.NHWC, idx.length, data.height(), data.width(), data.channels());
                data.batch(idx, false, null, x);
                Tensor logits = net.forward(Context.inference(ops, ws), x).logits();
                int k = logits.dim(1);
                for (int i = 0; i < idx.length; i++) {
                    int best = 0;
                    for (int j = 1; j < k; j++) {
                        if (logits.get((long) i * k + j) > logits.get((long) i * k + best)) {
                            best = j;
                        }
                    }
                    if (best == data.labels()[s + i]) {
                        correct++;
                    }
                }
            }
        }
        return (double) correct / data.count();
    }

    @Override
    public void close() {
        net.close();
    }
}
