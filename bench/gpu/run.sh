#!/usr/bin/env bash
# bench/gpu/run.sh: THE one script for a GPU machine (see bench/gpu/README.md). One call does everything:
#   1. kernels/run_gpu_checks.sh: builds kernels/ with nvcc, CTest, every kernel version checked against its CPU
#      reference on the GPU and timed (block-size sweep), the kernel table;
#   2. bench/gpu/java_cuda_check.sh run: the Java CUDA backend's DeviceCheck (every device op vs the cpu backend,
#      a U-Net forward, graph capture and replay) on the carried jlink runtime;
#   3. StepTiming: one sampling step of the engine on the cuda backend, passes in fp16, bf16 and fp32 (student
#      1-step sample and whole 2-step sample; teacher denoiser call and Heun step) at batch 1 and 64 for the fmnist
#      teacher and student and the issue's CIFAR-size config (random weights, written on the machine), batch 1
#      checked against the cpu backend; then TrainTiming: teacher training steps (fmnist teacher, CIFAR-size config)
#      at batch 64, op by op and as resident blocks, with each step's host-device traffic (appended to steps.log);
#   4. torch_peers.py: PyTorch on the same card: SDPA, group norm (+SiLU), and the same U-Net with the same
#      weights in eager, CUDA-graph, torch.compile and compile+CUDA-graphs modes;
#   5. a combined table, last.
# Logs and JSON lines go to $OUT (the device tool's folder; build/gpu-results when unset): 8 files at most.
# Exit status: 0 when every check passed, 1 when any failed, 2 when something could not be built or run.
#
#   bench/gpu/run.sh prepare             (here, once) build/gpu-carry/: jlink runtime.txz, onestep.jar, classes/,
#                                        kernels.txz (the nvcc build)
#   bench/gpu/run.sh [--only LIST]       (on the GPU machine, carrying build/gpu-carry) LIST: kernels,java,steps,train,torch,profile
#   bench/gpu/run.sh --dry-run           (here, no GPU) steps 3-5 on the cpu backend and CPU torch, tiny sizes:
#                                        exercises the plumbing; PYTHON=/path/to/venv/python if python3 has no torch
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source bench/gpu/carry.sh   # unpack, unpack_kernels, pack_kernels
carry=build/gpu-carry
py=${PYTHON:-python3}
only=kernels,java,steps,train,torch
dry=0
limit=${ONESTEP_GPU_LIMIT_S:-570}   # the device tool kills a command at 600 s: keep the table inside that
case "${1:-}" in
  prepare)
    bench/gpu/java_cuda_check.sh prepare || exit 2
    JAVA_HOME=$(bin/find-jdk) || exit 2
    rm -rf "$carry/classes" && mkdir -p "$carry/classes"
    "$JAVA_HOME/bin/javac" --release 25 -cp "$carry/onestep.jar" -d "$carry/classes" bench/gpu/StepTiming.java \
      bench/gpu/TrainTiming.java || exit 2
    # The kernels too, with nvcc here (the GPU machine's version, 13.0): about 4 minutes on 2 cores here, which
    # the GPU machine would otherwise spend from its device time. Without nvcc here it builds them itself.
    if command -v nvcc > /dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
      kb=build/gpu-kernels-build
      targets=(onestep_kernels dev_groupnorm_forward dev_groupnorm_backward dev_attention_forward
               dev_attention_backward dev_denoise_update dev_conv_forward dev_resnet_forward test_groupnorm_gpu
               test_denoise_gpu test_attention_gpu test_layers_gpu test_typed_gpu test_conv_gpu test_resnet_gpu)
      # sm_90a only (the lent machines are Hoppers): half the binaries' size, and of what travels. No -lineinfo: the
      # line tables more than doubled the archive (8.9 MB with them, which took the carry past 64 MiB); Nsight still
      # names and times every kernel without them.
      cmake -S cmake -B "$kb" -DCMAKE_BUILD_TYPE=Release -DONESTEP_CUDA_ARCHS=90a -DONESTEP_CUDA_LINEINFO=OFF > /dev/null &&
        cmake --build "$kb" -j"$(nproc)" --target "${targets[@]}" > "$kb.log" 2>&1 ||
        { tail -30 "$kb.log"; exit 2; }
      pack_kernels "$kb" "$carry/kernels.txz" || exit 2
    else
      echo "no nvcc here: the GPU machine will build the kernels itself (a minute or two of its device time)"
    fi
    du -sh "$carry"/*
    tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
    carried=$(du -sb "$carry" | cut -f1)
    echo "travels: tracked tree $((tracked / 1048576)) MiB + $carry $((carried / 1048576)) MiB =" \
         "$(((tracked + carried) / 1048576)) MiB of the device tool's 64 MiB (untracked files not ignored travel too)"
    exit 0
    ;;
  --dry-run) dry=1; only=steps,train,torch ;;
  --only) only=${2:?--only needs a list}; ;;
  "") ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
has() { [[ ",$only," == *",$1,"* ]]; }
out=${OUT:-build/gpu-results}
mkdir -p "$out" build/gpu-run
status=0
fail() { [ "$status" -ge "${1}" ] || status=$1; }
flags=(--enable-native-access=ALL-UNNAMED --add-modules jdk.incubator.vector -Dorg.bytedeco.javacpp.cachedir=build/javacpp-cache)
# ONESTEP_JAVA_FLAGS: more JVM options for every Java step, e.g. "-Donestep.cuda.slabGroupNorm=false" to bisect.
read -r -a extra_flags <<< "${ONESTEP_JAVA_FLAGS:-}"
flags+=("${extra_flags[@]}")
lib=build/kernels-gpu/libonestep_kernels.so
card="(dry run: no GPU)"
# cap DEFAULT RESERVE: seconds for the next step, at most DEFAULT, leaving RESERVE for the steps after it, so that one
# slow or hung step cannot eat the call (GNU timeout signals the step's whole process group).
# later STEP: that reserve, the usual seconds of the steps after STEP that --only selects, plus 30 for the summary (a
# fixed reserve once left the kernels step 10 s of a 165 s call that ran no Java step).
order=(kernels java steps train profile torch)
declare -A usual=([java]=100 [steps]=150 [train]=60 [profile]=120 [torch]=60)
later() {
  local t=30 seen=0 s
  for s in "${order[@]}"; do
    if [ $seen = 1 ] && has "$s"; then t=$((t + ${usual[$s]:-0})); fi
    [ "$s" != "$1" ] || seen=1
  done
  echo $t
}
# rows LOG PROGRAM: a timing program's output, its table when it finished, else the rows it printed as it went.
rows() {
  if grep -q "^$2:" "$1"; then grep -v "^WARNING\|^row: " "$1"; else grep "^row: " "$1"; echo "$2: did not finish"; fi
}
cap() { local c=$((limit - SECONDS - $2)); [ $c -lt $1 ] || c=$1; [ $c -gt 10 ] || c=10; echo $c; }
if [ $dry = 0 ]; then
  [ -f $lib ] || [ ! -f "$carry/kernels.txz" ] || unpack_kernels "$carry/kernels.txz" build/kernels-gpu
  card=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
  echo "card: ${card:-nvidia-smi failed}" | tee "$out/card.txt"
  { nvidia-smi -q | grep -iE "addressing mode|^ +(graphics|sm|memory) +: [0-9]+ MHz" | sort -u
    "$py" -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())'
    "$py" bench/gpu/torch_peers.py --bandwidth; } 2>&1 | tee -a "$out/card.txt"
fi

if has kernels; then
  echo "==== 1. kernels: build, check, time (kernels/run_gpu_checks.sh)"
  timeout "$(cap 150 "$(later kernels)")" kernels/run_gpu_checks.sh build/kernels-gpu > "$out/kernels.log" 2>&1
  rc=$?; [ $rc != 124 ] || echo "kernels: stopped at its time cap" >> "$out/kernels.log"; [ $rc = 0 ] || fail $((rc == 2 ? 2 : 1))
  tail -40 "$out/kernels.log"
  echo "kernels: exit $rc"
fi

if has java; then
  echo "==== 2. Java CUDA backend: DeviceCheck (bench/gpu/java_cuda_check.sh run)"
  timeout "$(cap 100 "$(later java)")" bench/gpu/java_cuda_check.sh run > "$out/java_check.log" 2>&1
  rc=$?; [ $rc != 124 ] || echo "java check: stopped at its time cap" >> "$out/java_check.log"; [ $rc = 0 ] || fail $((rc == 1 ? 1 : 2))
  tail -30 "$out/java_check.log"
  echo "java check: exit $rc"
fi

cifar=build/gpu-run/cifar-random.safetensors
if has steps || has torch || has profile; then
  [ -f "$cifar" ] || "$py" bench/gpu/torch_peers.py --write-cifar "$cifar" || fail 2
fi
export ONESTEP_CIFAR_CHECKPOINT=$cifar   # the same random weights for our engine and for PyTorch

if has steps || has train || has profile; then  # the Java runtime, the arguments of StepTiming and TrainTiming
  : > "$out/steps.jsonl"
  if [ $dry = 1 ]; then
    JAVA_HOME=$(bin/find-jdk) || exit 2
    java="$JAVA_HOME/bin/java"
    [ -f java/target/onestep.jar ] || (JAVA_HOME=$JAVA_HOME mvn -B -q -pl java -am package -DskipTests) || exit 2
    mkdir -p build/gpu-run/classes
    "$JAVA_HOME/bin/javac" -cp java/target/onestep.jar -d build/gpu-run/classes bench/gpu/StepTiming.java \
      bench/gpu/TrainTiming.java || exit 2
    cp=java/target/onestep.jar:build/gpu-run/classes
    args=(--backend cpu --batches 1,2 --reps 3 --warmup 1 --compare)
    [ -f "$cifar" ] && args+=("$cifar")
    args+=(models/fmnist-student.safetensors models/fmnist-teacher.safetensors)
    targs=(--backend cpu --batch 2 --steps 4 --warmup 1 models/fmnist-teacher.safetensors)
  else
    [ -f "$carry/classes/TrainTiming.class" ] || { echo "no $carry/classes/TrainTiming.class: run '$0 prepare' here and carry $carry"; exit 2; }
    [ -x "$carry/runtime/bin/java" ] || unpack "$carry/runtime.txz" "$carry" || exit 2
    java="$carry/runtime/bin/java"
    cp=$carry/onestep.jar:$carry/classes
    if [ ! -f "$lib" ]; then  # --only steps without the kernels step
      cmake -S cmake -B build/kernels-gpu -DCMAKE_BUILD_TYPE=Release > /dev/null &&
        cmake --build build/kernels-gpu -j"$(nproc)" --target onestep_kernels > build/gpu-run/lib-build.log 2>&1 ||
        { tail -30 build/gpu-run/lib-build.log; exit 2; }
    fi
    libs=$(nvidia_libs "$py")
    export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # Each device arena (eager, and two for measuring a pass) is allocated whole: CIFAR at batch 64 needs a few GiB.
    flags+=(-Donestep.cuda.arenaMiB="${ONESTEP_ARENA_MIB:-6144}")
    # The CIFAR-size config first: its batch-1 1-step sample is the issue's 300 us target.
    # --unfolded-too: each model's first step again without constant folding (the time path back in the graph),
    # again folded with conv2 and to_out.0 apart from their residual adds (the fusions' gain, or loss, in us), and
    # again with cuDNN's heuristic algorithm choice instead of its timed search (that search's gain); in the first
    # precision listed (fp16) only, so the other precisions' rows fit the step's time cap.
    args=(--backend cuda --library "$lib" --batches 1,64 --reps 50 --warmup 5 --unfolded-too
          --precision "${ONESTEP_STEP_PRECISIONS:-fp16,bf16,fp32}")
    [ -f "$cifar" ] && args+=("$cifar")
    args+=(models/fmnist-student.safetensors models/fmnist-teacher.safetensors)
    targs=(--backend cuda --library "$lib" --batch 64 --steps 12 --warmup 2 models/fmnist-teacher.safetensors)
    [ -f "$cifar" ] && targs+=("$cifar")
  fi
fi
if has steps; then
  echo "==== 3. one sampling step of the engine (StepTiming)"
  timeout "$(cap 150 "$(later steps)")" "$java" "${flags[@]}" -cp "$cp" StepTiming --jsonl "$out/steps.jsonl" "${args[@]}" > "$out/steps.log" 2>&1
  rc=$?; [ $rc = 0 ] || fail $((rc == 1 ? 1 : 2))
  rows "$out/steps.log" StepTiming | tail -25
  echo "steps: exit $rc"
fi
if has train; then
  echo "==== 3b. teacher training steps, op by op and resident (TrainTiming)"
  timeout "$(cap 60 "$(later train)")" "$java" "${flags[@]}" -cp "$cp" TrainTiming --jsonl "$out/steps.jsonl" "${targs[@]}" > build/gpu-run/train.log 2>&1
  rc=$?; [ $rc = 0 ] || fail $((rc == 1 ? 1 : 2))
  rows build/gpu-run/train.log TrainTiming | tee -a "$out/steps.log" | tail -8
  echo "train steps: exit $rc"
fi

if has profile; then  # opt-in (--only ...,profile): where a batch-1 CIFAR sample's time goes, kernel by kernel
  echo "==== 3c. Nsight Compute: every kernel of one CIFAR-size fp16 1-step sample at batch 1 (ncu.csv)"
  # The timed choices are made by a run without ncu, whose per-launch overhead would skew them, and written to a file
  # (-Donestep.cuda.choices) that the profiled run loads. There the first call runs the pass op by op, the warm-up
  # call captures the graph, and the one timed call replays it between cudaProfilerStart and Stop (--profile-last):
  # with --profile-from-start off, ncu sees the replay's kernels alone. --clock-control none: the card's own clocks.
  if command -v ncu > /dev/null && [ -f "$cifar" ]; then
    chosen=(-Donestep.cuda.choices=build/gpu-run/profile-choices.tsv)
    rm -f build/gpu-run/profile-choices.tsv
    timeout "$(cap 40 $(($(later profile) + 80)))" "$java" "${flags[@]}" "${chosen[@]}" -cp "$cp" StepTiming --backend cuda --library "$lib" \
      --batches 1 --reps 1 --warmup 1 --precision fp16 --no-compare --first-step-only "$cifar" \
      > build/gpu-run/profile-choices.log 2>&1
    echo "choices for the profile: $(grep -c . build/gpu-run/profile-choices.tsv 2>/dev/null) lines"
    timeout "$(cap 80 "$(later profile)")" ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --csv \
      --log-file "$out/ncu.csv" --launch-count 2000 "$java" "${flags[@]}" "${chosen[@]}" -cp "$cp" StepTiming \
      --backend cuda --library "$lib" --batches 1 --reps 1 --warmup 1 --precision fp16 --no-compare \
      --first-step-only --profile-last "$cifar" > build/gpu-run/ncu-run.log 2>&1
    echo "ncu: exit $?, $(grep -c '"gpu__time_duration.sum"' "$out/ncu.csv" 2>/dev/null) kernels profiled"
    "$py" - "$out/ncu.csv" <<'PY' || true
import csv, sys, collections
rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))
        if r.get("Metric Name") == "gpu__time_duration.sum"]
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
us = [(r["Kernel Name"], float(r["Metric Value"].replace(",", "")) * scale[r["Metric Unit"]]) for r in rows]
replay = us  # the profiled range is the graph's replay alone (StepTiming --profile-last)
agg = collections.defaultdict(lambda: [0, 0.0])
for name, t in replay:
    key = name.replace("void ", "").split("(")[0][:70]
    agg[key][0] += 1
    agg[key][1] += t
total = sum(t for _, t in replay) or 1.0
print(f"graph replay: {len(replay)} kernels, {total:.1f} us of kernel time (each timed alone, L2 flushed: ncu's default)")
for key, (n, t) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:16]:
    print(f"  {t:8.1f} us {100 * t / total:5.1f}%  {n:4d} x {t / n:5.1f} us  {key}")
PY
  else
    echo "ncu or the CIFAR checkpoint missing: no profile"
  fi
fi

if has torch; then
  echo "==== 4. PyTorch peers (torch_peers.py)"
  left=$((limit - SECONDS - 30))
  if [ $dry = 1 ]; then
    targs=(--device cpu --quick --no-compile)
  else
    export TORCHINDUCTOR_CACHE_DIR=$PWD/build/gpu-run/inductor-cache   # a second call on a warm machine reuses it
    targs=(--device cuda --budget-s $((left * 2 / 3)) ${ONESTEP_TORCH_ARGS:-})   # e.g. "--only unet --no-compile"
  fi
  if [ $left -lt 30 ]; then
    echo "torch peers skipped: only ${left}s left of ${limit}s (run again with --only torch)"
  else
    PYTHONUNBUFFERED=1 timeout "$left" "$py" bench/gpu/torch_peers.py "${targs[@]}" --jsonl "$out/torch.jsonl" > "$out/torch.log" 2>&1
    rc=$?
    [ $rc = 0 ] || { echo "torch peers: exit $rc$([ $rc = 124 ] && echo ' (time limit: rerun with --only torch)')"; fail 2; }
    grep -v "^  {\|NNPACK" "$out/torch.log" | tail -45
  fi
fi

echo "==== 5. summary on ${card}"
{
  cat "$out/card.txt" 2>/dev/null
  if has kernels; then
    echo "kernel checks and timings (kernels/run_gpu_checks.sh; full log kernels.log)"
    sed -n '/^summary (fastest block size/,$p' "$out/kernels.log" | sed 1d
  fi
  if has java; then grep -E "^DeviceCheck:" "$out/java_check.log" || echo "DeviceCheck: did not finish: $(tail -1 "$out/java_check.log")"; fi
  if has steps; then
    grep -v "^row: " "$out/steps.log" | grep -E "^StepTiming:|FAIL|NON-FINITE" || echo "StepTiming: did not finish: $(tail -1 "$out/steps.log")"
    sed -n '/^teacher training step/,/^TrainTiming:/p' "$out/steps.log" | grep . || echo "TrainTiming: did not finish"
    # The group norm prologue (eighteenth session): how many norm-and-convolution choices took it (rows of all runs).
    nc=$(grep -c "(choice) normconv," "$out/steps.log"); fused=$(grep -c "(choice) normconv,.*: fused faster" "$out/steps.log")
    echo "group norm prologue: taken in $fused of $nc norm-and-convolution choices (steps.log: '(choice) normconv,')"
    # ... and over an up block's concatenation (nineteenth session): conv1 and the shortcut in one launch from h and skip.
    nc=$(grep -c "(choice) normcatconv," "$out/steps.log"); fused=$(grep -c "(choice) normcatconv,.*: fused faster" "$out/steps.log")
    echo "over a concatenation: one launch for norm1, conv1 and the shortcut in $fused of $nc choices (steps.log: '(choice) normcatconv,')"
    # ... and the attention with to_out.0 and the residual (twentieth session).
    nc=$(grep -c "(choice) attnres," "$out/steps.log"); fused=$(grep -c "(choice) attnres,.*: one launch, [^:]* faster" "$out/steps.log")
    echo "attention + to_out: one launch in $fused of $nc choices (steps.log: '(choice) attnres,')"
    # ... and whole resnet blocks (twenty-fifth and twenty-sixth sessions): one launch on clusters of 8 or 16 blocks.
    for kind in resnet resnetcat; do
      nc=$(grep -c "(choice) $kind," "$out/steps.log"); c8=$(grep -c "(choice) $kind,.*: one launch faster" "$out/steps.log")
      c16=$(grep -c "(choice) $kind,.*: one launch, 16 blocks faster" "$out/steps.log")
      echo "$kind blocks: one launch in $c8 (8 blocks) + $c16 (16 blocks) of $nc choices (steps.log: '(choice) $kind,')"
    done
  fi
  "$py" bench/gpu/torch_peers.py --summary "$out/steps.jsonl" "$out/torch.jsonl"
  echo "overall: $([ $status = 0 ] && echo 'all checks passed' || echo "FAILED (exit $status)")"
} 2>&1 | tee "$out/summary.txt"
exit $status
