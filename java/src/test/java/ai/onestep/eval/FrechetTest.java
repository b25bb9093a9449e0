package ai.onestep.eval;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class FrechetTest {
    @Test
    void diagonalCovariancesHaveTheClosedForm() {
        double[] m1 = {1, 2, 3}, m2 = {0, 2, 5};
        double[] v1 = {1, 4, 9}, v2 = {4, 4, 1};
        double[][] s1 = new double[3][3], s2 = new double[3][3];
        double expect = 1 + 0 + 4;
        for (int i = 0; i < 3; i++) {
            s1[i][i] = v1[i];
            s2[i][i] = v2[i];
            expect += Math.pow(Math.sqrt(v1[i]) - Math.sqrt(v2[i]), 2);
        }
        assertEquals(expect, Frechet.distance(new Frechet.Stats(m1, s1, 10), new Frechet.Stats(m2, s2, 10)), 1e-9);
    }

    @Test
    void distanceIsRotationInvariantAndZeroForEqualGaussians() {
        SplittableRandom r = new SplittableRandom(3);
        int d = 6;
        double[][] a = new double[d][d];
        for (int i = 0; i < d; i++) {
            for (int j = 0; j < d; j++) {
                a[i][j] = r.nextDouble() - 0.5;
            }
        }
        double[][] s1 = Frechet.multiply(a, transpose(a));
        double[][] b = new double[d][d];
        for (int i = 0; i < d; i++) {
            for (int j = 0; j < d; j++) {
                b[i][j] = r.nextDouble() - 0.5;
            }
        }
        double[][] s2 = Frechet.multiply(b, transpose(b));
        double[] mu = new double[d];
        var g1 = new Frechet.Stats(mu, s1, 2);
        assertEquals(0, Frechet.distance(g1, g1), 1e-9);
        // sqrt of a PSD matrix squares back to it.
        double[][] root = Frechet.sqrtPsd(s1);
        double[][] sq = Frechet.multiply(root, root);
        for (int i = 0; i < d; i++) {
            for (int j = 0; j < d; j++) {
                assertEquals(s1[i][j], sq[i][j], 1e-9);
            }
        }
        // Tr sqrt(S1 S2) is symmetric in its arguments.
        var g2 = new Frechet.Stats(mu, s2, 2);
        assertEquals(Frechet.distance(g1, g2), Frechet.distance(g2, g1), 1e-9);
    }

    @Test
    void sampleStatisticsAreUnbiased() {
        double[][] x = {{1, 2}, {3, 2}, {5, 8}};
        Frechet.Stats s = Frechet.stats(x);
        assertEquals(3, s.mean()[0], 1e-12);
        assertEquals(4, s.cov()[0][0], 1e-12);
        assertEquals(6, s.cov()[0][1], 1e-12);
        assertEquals(12, s.cov()[1][1], 1e-12);
    }

    private static double[][] transpose(double[][] a) {
        double[][] t = new double[a[0].length][a.length];
        for (int i = 0; i < a.length; i++) {
            for (int j = 0; j < a[0].length; j++) {
                t[j][i] = a[i][j];
            }
        }
        return t;
    }
}
