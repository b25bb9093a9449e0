#!/usr/bin/env bash
# The Java CUDA backend on a GPU machine, which has no Java: carry a jlink runtime and the engine's jar there.
# Part of bench/gpu/run.sh, the one script for a GPU machine (its `prepare` calls this one's; its step 2 is `run`).
#
#   bench/gpu/java_cuda_check.sh prepare   (here) builds build/gpu-carry/: runtime.txz (jlink, ~13 MB: stored
#                                          uncompressed by jlink, then xz, which packs it ~40% smaller than jlink's
#                                          zip-9 under gzip) and onestep.jar (~8 MB); the device tool's carry limit
#                                          is 64 MiB
#   bench/gpu/java_cuda_check.sh run       (on the GPU machine, carrying build/gpu-carry) builds kernels/ with
#                                          nvcc if needed, puts the pip nvidia-* libraries (cudart, cuBLAS, cuDNN)
#                                          on LD_LIBRARY_PATH, and runs ai.onestep.backend.cuda.DeviceCheck: every
#                                          device op vs the cpu backend, a U-Net forward, graph capture and replay;
#                                          a table last, exit status 1 on any failure
#   bench/gpu/java_cuda_check.sh emulated  (here) the same check against the emulated kernel library
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
carry=build/gpu-carry
source bench/gpu/carry.sh   # unpack, unpack_kernels
flags=(--enable-native-access=ALL-UNNAMED --add-modules jdk.incubator.vector -Dorg.bytedeco.javacpp.cachedir=build/javacpp-cache)
case "${1:-}" in
  prepare)
    export JAVA_HOME; JAVA_HOME=$(bin/find-jdk)   # exported: mvn needs Java 25 too
    (mvn -B -q -pl java -am package -DskipTests)
    rm -rf "$carry" && mkdir -p "$carry"
    "$JAVA_HOME/bin/jlink" --add-modules java.base,java.logging,jdk.incubator.vector,jdk.unsupported \
      --strip-debug --no-man-pages --no-header-files --compress=zip-0 --output "$carry/runtime"
    XZ_OPT="-9 -T0" tar -C "$carry" -cJf "$carry/runtime.txz" runtime && rm -rf "$carry/runtime"
    cp java/target/onestep.jar "$carry/"
    du -sh "$carry"/*
    ;;
  run)
    [ -f "$carry/runtime.txz" ] || { echo "no $carry/runtime.txz: run '$0 prepare' first and carry $carry"; exit 2; }
    [ -x "$carry/runtime/bin/java" ] || unpack "$carry/runtime.txz" "$carry"
    build=build/kernels-gpu
    [ -f "$build/libonestep_kernels.so" ] || [ ! -f "$carry/kernels.txz" ] || unpack_kernels "$carry/kernels.txz" "$build"
    if [ ! -f "$build/libonestep_kernels.so" ]; then
      cmake -S cmake -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
      cmake --build "$build" -j"$(nproc)" --target onestep_kernels > "$build-build.log" 2>&1 || { tail -30 "$build-build.log"; exit 2; }
    fi
    # cuBLAS / cuDNN / cudart for org.bytedeco:cuda come from the pip nvidia-* packages next to PyTorch.
    libs=$(nvidia_libs python3)
    export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$carry/runtime/bin/java" "${flags[@]}" -cp "$carry/onestep.jar" ai.onestep.backend.cuda.DeviceCheck \
      --library "$build/libonestep_kernels.so"
    ;;
  emulated)
    export JAVA_HOME; JAVA_HOME=$(bin/find-jdk)
    [ -f java/target/onestep.jar ] || (mvn -B -q -pl java -am package -DskipTests)
    "$JAVA_HOME/bin/java" "${flags[@]}" -cp java/target/onestep.jar ai.onestep.backend.cuda.DeviceCheck --emulated \
      --library build/kernels/emu/libonestep_kernels.so
    ;;
  *)
    sed -n '2,14p' "$0"
    exit 2
    ;;
esac
