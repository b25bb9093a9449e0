package ai.onestep.eval;

import ai.onestep.io.CheckpointException;
import ai.onestep.io.Safetensors;
import ai.onestep.tensor.Layout;
import ai.onestep.tensor.Tensor;
import ai.onestep.tensor.TensorArena;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * FID reference statistics on disk: the mean ("mu", d) and covariance ("sigma", d x d) of the classifier's features
 * of the Fashion-MNIST test images, so FID-FMNIST can be computed where the data set is not installed.
 */
public final class FidStats {
    private FidStats() {
    }

    public static void save(Frechet.Stats s, Path path, Map<String, String> meta) {
        int d = s.mean().length;
        try (TensorArena a = new TensorArena()) {
            Tensor mu = a.allocate(Layout.ROWS, d);
            Tensor cov = a.allocate(Layout.ROWS, d, d);
            mu.copyFrom(s.mean());
            double[] flat = new double[d * d];
            for (int i = 0; i < d; i++) {
                System.arraycopy(s.cov()[i], 0, flat, i * d, d);
            }
            cov.copyFrom(flat);
            Map<String, Tensor> t = new LinkedHashMap<>();
            t.put("mu", mu);
            t.put("sigma", cov);
            Map<String, String> m = new LinkedHashMap<>(meta);
            m.put("onestep.role", "fid-stats");
            m.put("n", Integer.toString(s.n()));
            Safetensors.write(path, t, m);
        }
    }

    public static Frechet.Stats load(Path path) {
        try (Safetensors.Reader r = Safetensors.open(path); TensorArena a = new TensorArena()) {
            if (!"fid-stats".equals(r.metadata().get("onestep.role"))) {
                throw new CheckpointException(path + ": not an FID statistics file (onestep.role = "
                        + r.metadata().get("onestep.role") + ")");
            }
            Tensor mu = r.read("mu", a, Layout.ROWS);
            int d = mu.dim(0);
            Tensor cov = r.read("sigma", a, Layout.ROWS, d, d);
            double[] m = mu.toDoubleArray();
            double[] c = cov.toDoubleArray();
            double[][] sig = new double[d][d];
            for (int i = 0; i < d; i++) {
                System.arraycopy(c, i * d, sig[i], 0, d);
            }
            return new Frechet.Stats(m, sig, Integer.parseInt(r.metadata().getOrDefault("n", "0")));
        }
    }
}
