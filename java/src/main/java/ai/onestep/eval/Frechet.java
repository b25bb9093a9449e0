package ai.onestep.eval;

/**
 * The Fréchet distance between two Gaussians (Dowson & Landau 1982; as FID, Heusel et al. 2017, eq. 6):
 * {@code d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))}, in float64. The trace of the matrix square
 * root is computed as {@code sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))}, a symmetric positive semi-definite matrix with
 * the same eigenvalues as S1 S2, so only symmetric eigendecompositions (cyclic Jacobi) are needed.
 */
public final class Frechet {
    private Frechet() {
    }

    /** Mean and covariance (unbiased, divided by n - 1) of the rows of {@code x} (n x d). */
    public record Stats(double[] mean, double[][] cov, int n) {
    }

    public static Stats stats(double[][] x) {
        int n = x.length, d = x[0].length;
        if (n < 2) {
            throw new IllegalArgumentException("fid: need at least 2 samples, got " + n);
        }
        double[] mu = new double[d];
        for (double[] r : x) {
            for (int j = 0; j < d; j++) {
                mu[j] += r[j];
            }
        }
        for (int j = 0; j < d; j++) {
            mu[j] /= n;
        }
        double[][] cov = new double[d][d];
        for (double[] r : x) {
            for (int a = 0; a < d; a++) {
                double da = r[a] - mu[a];
                for (int b = a; b < d; b++) {
                    cov[a][b] += da * (r[b] - mu[b]);
                }
            }
        }
        for (int a = 0; a < d; a++) {
            for (int b = a; b < d; b++) {
                cov[a][b] /= n - 1;
                cov[b][a] = cov[a][b];
            }
        }
        return new Stats(mu, cov, n);
    }

    public static double distance(Stats s1, Stats s2) {
        int d = s1.mean().length;
        double m = 0;
        for (int j = 0; j < d; j++) {
            double t = s1.mean()[j] - s2.mean()[j];
            m += t * t;
        }
        double tr = 0;
        for (int j = 0; j < d; j++) {
            tr += s1.cov()[j][j] + s2.cov()[j][j];
        }
        double[][] root1 = sqrtPsd(s1.cov());
        double[][] inner = multiply(multiply(root1, s2.cov()), root1);
        double[] eig = eigenvalues(inner);
        double sqrtTrace = 0;
        for (double e : eig) {
            sqrtTrace += Math.sqrt(Math.max(e, 0));
        }
        return m + tr - 2 * sqrtTrace;
    }

    /** The symmetric square root of a symmetric PSD matrix (negative eigenvalues from rounding clamp to 0). */
    static double[][] sqrtPsd(double[][] a) {
        int d = a.length;
        double[][] v = new double[d][d];
        double[] e = jacobi(copy(a), v);
        double[][] r = new double[d][d];
        for (int i = 0; i < d; i++) {
            for (int j = 0; j < d; j++) {
                double s = 0;
                for (int k = 0; k < d; k++) {
                    s += v[i][k] * Math.sqrt(Math.max(e[k], 0)) * v[j][k];
                }
                r[i][j] = s;
            }
        }
        return r;
    }

    static double[] eigenvalues(double[][] a) {
        double[][] sym = copy(a);
        int d = a.length;
        for (int i = 0; i < d; i++) {
            for (int j = i + 1; j < d; j++) {
                double s = (sym[i][j] + sym[j][i]) / 2;
                sym[i][j] = s;
                sym[j][i] = s;
            }
        }
        return jacobi(sym, new double[d][d]);
    }

    /**
     * Cyclic Jacobi eigenvalue iteration for a symmetric matrix (Golub & Van Loan, Algorithm 8.5.3): rotates away
     * off-diagonal entries until they are negligible. Returns the eigenvalues; {@code v} receives the eigenvectors
     * as columns. {@code a} is destroyed.
     */
    static double[] jacobi(double[][] a, double[][] v) {
        int d = a.length;
        for (int i = 0; i < d; i++) {
            java.util.Arrays.fill(v[i], 0);
            v[i][i] = 1;
        }
        for (int sweep = 0; sweep < 100; sweep++) {
            double off = 0, diag = 0;
            for (int i = 0; i < d; i++) {
                diag += a[i][i] * a[i][i];
                for (int j = i + 1; j < d; j++) {
                    off += a[i][j] * a[i][j];
                }
            }
            if (off <= 1e-30 * Math.max(diag, 1e-300)) {
                break;
            }
            for (int p = 0; p < d; p++) {
                for (int q = p + 1; q < d; q++) {
                    double apq = a[p][q];
                    if (Math.abs(apq) < 1e-300) {
                        continue;
                    }
                    double theta = (a[q][q] - a[p][p]) / (2 * apq);
                    double t = Math.signum(theta) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
                    if (theta == 0) {
                        t = 1;
                    }
                    double c = 1 / Math.sqrt(t * t + 1), s = t * c;
                    for (int k = 0; k < d; k++) {
                        double akp = a[k][p], akq = a[k][q];
                        a[k][p] = c * akp - s * akq;
                        a[k][q] = s * akp + c * akq;
                    }
                    for (int k = 0; k < d; k++) {
                        double apk = a[p][k], aqk = a[q][k];
                        a[p][k] = c * apk - s * aqk;
                        a[q][k] = s * apk + c * aqk;
                    }
                    for (int k = 0; k < d; k++) {
                        double vkp = v[k][p], vkq = v[k][q];
                        v[k][p] = c * vkp - s * vkq;
                        v[k][q] = s * vkp + c * vkq;
                    }
                }
            }
        }
        double[] e = new double[d];
        for (int i = 0; i < d; i++) {
            e[i] = a[i][i];
        }
        return e;
    }

    static double[][] multiply(double[][] a, double[][] b) {
        int n = a.length, m = b[0].length, k = b.length;
        double[][] r = new double[n][m];
        for (int i = 0; i < n; i++) {
            for (int p = 0; p < k; p++) {
                double aip = a[i][p];
                for (int j = 0; j < m; j++) {
                    r[i][j] += aip * b[p][j];
                }
            }
        }
        return r;
    }

    private static double[][] copy(double[][] a) {
        double[][] r = new double[a.length][];
        for (int i = 0; i < a.length; i++) {
            r[i] = a[i].clone();
        }
        return r;
    }
}
