#!/usr/bin/env bash
# run_gpu_checks.sh: the kernels' part of bench/gpu/run.sh, which is the one script to run on a GPU machine
# (it calls this first, then the Java CUDA check, the step timings and the PyTorch peers; see bench/gpu/README.md).
# On its own: builds kernels/ with nvcc, runs the emulated CTest suite, then every dev binary,
# which validates each kernel version (the production one included) against its CPU reference ON THE GPU
# and times it, and prints a short table last. Exit status is non-zero if any validation fails.
#   usage: kernels/run_gpu_checks.sh [build-dir]      (from anywhere; default build/kernels-gpu)
#   ONESTEP_KERNEL_FILTER=REGEX runs only the dev runs whose label matches (e.g. 'group norm forward')
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/kernels-gpu}
jobs=$(nproc 2>/dev/null || echo 4)
status=0

mkdir -p "$build"
if [ -f "$build/PREBUILT" ]; then
    # bench/gpu/run.sh unpacked binaries that nvcc built on the machine that sent this call (bench/gpu/carry.sh):
    # no device time for compiling, and the emulated CTest suite already runs in CI on every push.
    echo "prebuilt by $(head -1 "$build/PREBUILT") ($(sed -n 2p "$build/PREBUILT")): no nvcc build, no emulated CTest here"
    export LD_LIBRARY_PATH="$(cd "$build" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"   # the test_*_gpu binaries' library
else
    cmake -S cmake -B "$build" -DCMAKE_BUILD_TYPE=Release > "$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 2; }
    cmake --build "$build" -j"$jobs" > "$build/build.log" 2>&1 || { tail -50 "$build/build.log"; exit 2; }
fi
for bin in dev_groupnorm_forward dev_groupnorm_backward dev_attention_forward dev_attention_backward dev_denoise_update \
           dev_conv_forward dev_resnet_forward; do
    [ -x "$build/$bin" ] || { echo "missing $build/$bin: was nvcc found? see $build/configure.log"; exit 2; }
done
[ -f "$build/PREBUILT" ] || ctest --test-dir "$build" --output-on-failure || status=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

log="$build/gpu_checks.log"
: > "$log"
# The production API on the GPU through the same tests as the emulation (needs HMM: see cmake/CMakeLists.txt).
if nvidia-smi -q 2>/dev/null | grep -qi "Addressing Mode *: *HMM"; then
    for t in test_groupnorm test_denoise test_attention test_layers test_typed test_conv test_resnet; do
        echo "== ${t}_gpu" | tee -a "$log"
        "$build/${t}_gpu" > "$build/${t}_gpu.log" 2>&1 || status=1
        grep -E "FAIL|checks" "$build/${t}_gpu.log" | tail -8 | tee -a "$log"
    done
else
    echo "== test_*_gpu skipped: nvidia-smi reports no HMM addressing mode (the tests pass malloc'd memory)" | tee -a "$log"
fi
# Line-buffered (stdbuf): a binary that dies on a signal would otherwise take its buffered rows with it, and
# its exit status is printed, since a crash that prints nothing is otherwise indistinguishable from no output.
line=(); command -v stdbuf > /dev/null && line=(stdbuf -oL -eL)
run() {  # run <label> <binary> [args...]
    local label=$1; shift
    [[ -z "${ONESTEP_KERNEL_FILTER:-}" || "$label" =~ $ONESTEP_KERNEL_FILTER ]] || return 0
    echo "== $label: $*" | tee -a "$log"
    "${line[@]}" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" != 0 ]; then
        status=1
        echo "   exit status $rc$([ "$rc" -gt 128 ] && echo " (signal $((rc - 128)))")" | tee -a "$log"
    fi
}
# First the runs the newest candidates need (the backend times them itself, but these say by how much), in case the
# step's time cap stops the later ones.
run "convolution forward, the CIFAR U-Net's shapes at batch 1 and 64 (v1 portable, v2-13 the implicit GEMM, v9-12 split over clusters, v14-25 the group norm prologue, v26-37 the statistics epilogue, v38-49 the prologue on given statistics)" \
    "$build/dev_conv_forward"
run "resnet block, CIFAR 4x4x256 at batch 1 (v1 four launches, v2 one; the up block: v3 five, v4 one; v5, v6: v2, v4 on 16-block clusters; v7, v8: v4, v6 without the weight prefetch)" "$build/dev_resnet_forward" 0 1 4 4 256 32
run "resnet block, CIFAR 8x8x256 at batch 1 (v1 four launches, v2 one; the up block: v3 five, v4 one; v5, v6: v2, v4 on 16-block clusters; v7, v8: v4, v6 without the weight prefetch)" "$build/dev_resnet_forward" 0 1 8 8 256 32
run "resnet block, CIFAR 4x4x256 at batch 64 (v1 four launches, v2 one; the up block: v3 five, v4 one; v5, v6: v2, v4 on 16-block clusters; v7, v8: v4, v6 without the weight prefetch)" "$build/dev_resnet_forward" 0 64 4 4 256 32
run "attention forward, CIFAR 16x16, B=1 H=4 T=256 D=64 (v11: split keys, v12-14: pipelined, v15-17: + to_out, v18-20: wide)" \
    "$build/dev_attention_forward" 0 1 4 256 64
run "attention forward, CIFAR 16x16, B=64 H=4 T=256 D=64 (v12-14: pipelined, v18-20: wide, against v8-10)" \
    "$build/dev_attention_forward" 0 64 4 256 64
run "group norm forward, CIFAR 1x32x32x128, G=32 (batch 1: v6 production, v12-14 the cluster kernel)" \
    "$build/dev_groupnorm_forward" 0 1 1024 128 32
run "group norm forward, CIFAR 1x16x16x256, G=32 (v6 against v12-14)" "$build/dev_groupnorm_forward" 0 1 256 256 32
run "group norm forward, 8x32x32x256, G=32" "$build/dev_groupnorm_forward"
run "group norm forward, 8x16x16x512, G=32" "$build/dev_groupnorm_forward" 0 8 256 512 32
run "group norm backward, 8x32x32x256, G=32" "$build/dev_groupnorm_backward"
run "attention forward, B=8 H=8 T=1024 D=64" "$build/dev_attention_forward"
run "attention forward, B=2 H=4 T=4096 D=32 (version 2 only)" "$build/dev_attention_forward" 2 2 4 4096 32
run "attention forward, B=8 H=4 T=256 D=128" "$build/dev_attention_forward" 0 8 4 256 128
# At the U-Nets' own shapes, batch 64 (and 1 for CIFAR), next to torch_peers.py's SDPA and group norm rows.
run "attention forward, fmnist 14x14, B=64 H=2 T=196 D=32 (v2)" "$build/dev_attention_forward" 2 64 2 196 32
run "attention forward, fmnist 14x14, B=64 H=2 T=196 D=32 (v8)" "$build/dev_attention_forward" 8 64 2 196 32
run "attention forward, fmnist 7x7, B=64 H=4 T=49 D=32 (v2)" "$build/dev_attention_forward" 2 64 4 49 32
run "attention forward, fmnist 7x7, B=64 H=4 T=49 D=32 (v8)" "$build/dev_attention_forward" 8 64 4 49 32
run "attention forward, fmnist 14x14, B=1 H=2 T=196 D=32 (v10)" "$build/dev_attention_forward" 10 1 2 196 32
run "attention forward, fmnist 14x14, B=1 H=2 T=196 D=32 (v11: keys split over the warps)" "$build/dev_attention_forward" 11 1 2 196 32
run "group norm forward, fmnist 64x28x28x32, G=8" "$build/dev_groupnorm_forward" 0 64 784 32 8
run "group norm forward, CIFAR 64x32x32x128, G=32 (the target shape: v8-10 slab, v21-23 two chunked passes)" "$build/dev_groupnorm_forward" 0 64 1024 128 32
run "group norm forward, CIFAR up block 1x32x32x384, G=32 (v11: the concat fused)" "$build/dev_groupnorm_forward" 11 1 1024 384 32
run "attention backward, B=8 H=8 T=1024 D=64" "$build/dev_attention_backward"
run "attention backward, B=8 H=4 T=256 D=128" "$build/dev_attention_backward" 0 8 4 256 128
run "denoising updates, 12.6M floats (64 x 32x32x3, 64 times)" "$build/dev_denoise_update"

echo
echo "summary (fastest block size per version; MISMATCH lines are failures)"
awk '/^== /{label=substr($0, 4); sub(/:.*/, "", label)}
     /^version [0-9]+ block/ && $5 != "n/a" {
        key=label " | v" $2; t=$6 + 0;
        if ($5 == "MISMATCH") { bad[key]=1 }
        if (!(key in best) || t < best[key]) { best[key]=t; line[key]=$0 }
        order[key]=++n }
     END { for (k in order) print order[k] "\t" k "\t" line[k] (bad[k] ? "   <-- MISMATCH" : "") }' "$log" |
    sort -n | cut -f2- | awk -F'\t' '{printf "%-62s %s\n", $1, $2}'
# The convolutions: per shape, the portable kernel and the fastest implicit-GEMM tile (dev/conv_forward.cu), then
# the fastest tile leaving a group norm's statistics in its epilogue and the fastest normalizing on given ones
# (versions 26-49: what replaces the group norm's launch; "-" where the shape has none).
awk '/^== convolution forward/{on=1; next} /^== /{on=0}
     function flush() { if (shape != "") print shape "\t" p "\t" best[1] "\t" best[2] "\t" best[3] }
     function take(k, tail) { t=$(NF-3)+0; if (t < bt[k]) {bt[k]=t; best[k]=$1 " " $(NF-3) " us" tail} }
     on && / MFLOP\)$/ {flush(); shape=$0; sub(/ \(.*/, "", shape); p="-"
                        for (k=1; k<=3; k++) {best[k]="-"; bt[k]=1e30}}
     on && /^  v1 / && / us / {p=$(NF-3) " us"}
     on && / us / && / igemm / {take(1, ", " $(NF-1) " TFLOP/s")}
     on && / us / && /stats epilogue/ {take(2, "")}
     on && / us / && /norm on given stats/ {take(3, "")}
     END {flush()}' "$log" |
    awk -F'\t' 'NR==1{printf "%-60s %-12s %-28s %-18s %s\n", "convolution (fp16)", "portable", "fastest implicit GEMM", "+ stats epilogue", "norm on given stats"}
                {printf "%-60s %-12s %-28s %-18s %s\n", $1, $2, $3, $4, $5}'
# The resnet block in one launch against the four it replaces, and the up block's against its five
# (dev/resnet_forward.cu), per shape.
awk '/^== resnet block/{label=substr($0, 4); sub(/ \(.*/, "", label); on=1; next} /^== /{on=0}
     on && /^version [0-9]+:/ {printf "%-44s %s\n", label, $0}' "$log"
grep -q "SOME VERSIONS DO NOT MATCH\|SOME VERSIONS FAILED" "$log" && status=1
grep -E "^test_[a-z]+: " "$log" || true
exit $status
