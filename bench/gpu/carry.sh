# bench/gpu/carry.sh: what run.sh and java_cuda_check.sh share (sourced, not run): the carried build/gpu-carry and the
# pip nvidia-* libraries on the GPU machine.

# unpack ARCHIVE DIR: tar's xz, or Python's lzma where the machine has no xz binary.
unpack() {
  mkdir -p "$2" && { tar -C "$2" -xJf "$1" 2>/dev/null ||
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"; }
}

# unpack_kernels ARCHIVE DIR: the nvcc binaries that `run.sh prepare` built here with the GPU machine's nvcc
# version, so that machine spends no device time compiling; DIR/PREBUILT tells kernels/run_gpu_checks.sh.
unpack_kernels() {
  unpack "$1" "$2" && [ -f "$2/PREBUILT" ] && echo "kernels: prebuilt here by $(head -1 "$2/PREBUILT")"
}

# pack_kernels BUILD ARCHIVE: the CUDA targets of an nvcc build of cmake/ (everything run_gpu_checks.sh runs).
pack_kernels() {
  local build=$1 archive=$2 files=(libonestep_kernels.so)
  local name
  for name in groupnorm_forward groupnorm_backward attention_forward attention_backward denoise_update conv_forward \
              resnet_forward; do
    files+=("dev_$name"); done
  for name in groupnorm denoise attention layers typed conv resnet; do files+=("test_${name}_gpu"); done
  { nvcc --version | tail -1; echo "git $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes')";
    date -u +%FT%TZ; } > "$build/PREBUILT"
  XZ_OPT="-9 -T0" tar -C "$build" -cJf "$archive" PREBUILT "${files[@]}"
}

# nvidia_libs PYTHON: the lib folders of the pip nvidia-* packages next to PyTorch (cudart, cuBLAS, cuDNN for
# org.bytedeco:cuda), joined for LD_LIBRARY_PATH; empty where there are none.
nvidia_libs() {
  "$1" -c 'import glob, nvidia; print(":".join(d for p in nvidia.__path__ for d in glob.glob(p + "/*/lib")))' \
    2>/dev/null || true
}
