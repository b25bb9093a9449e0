package ai.onestep.bench;

/**
 * What one invocation of a benchmark method does, to turn its time into achieved GFLOP/s and GB/s and compare it
 * with the machine's floor (shared/BENCHMARKING.md: count FLOPs and the fewest bytes moved).
 *
 * <p>Every benchmark class declares {@code public static Work work(String method, Map<String, String> params)}:
 * the JMH method name and its {@code @Param} values in, the FLOPs (a fused multiply-add counts 2) and the
 * minimum bytes read plus written out. {@link BenchMain} finds it by reflection.
 *
 * @param flops floating-point operations per invocation
 * @param bytes the fewest bytes an invocation must move to and from memory
 * @param memoryBound true when bytes, not FLOPs, set the floor (report GB/s first)
 */
public record Work(double flops, double bytes, boolean memoryBound) {
    public static Work compute(double flops, double bytes) {
        return new Work(flops, bytes, false);
    }

    public static Work memory(double flops, double bytes) {
        return new Work(flops, bytes, true);
    }
}
