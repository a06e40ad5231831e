#!/usr/bin/env bash
# The GPU proof in one command, on a bare machine with a CUDA toolkit (CUDA 13: sm_75 and newer;
# no cuDNN), CMake, a C++ compiler, make and Python 3, and no package registry or internet:
#   scripts/gpu_bundle.sh             # first, on a Debian machine: build/gpu_bundle (<= 64 MiB)
#   scripts/gpu_check.sh [BUNDLE]     # there: build CUDA Caffe from the bundle with the kit's
#                                     # build_caffe.sh and patches, time AlexNet-H, GoogLeNet-H and
#                                     # VGG-16, train AlexNet-H briefly, print them beside Table VII
# Options:
#   --cpu             rehearsal without a GPU: a CPU_ONLY build against the same bundle
#   --configure-only  stop after CMake's configure step
#   --caffe PREFIX    time and train with an existing build (PREFIX/bin/caffe) instead
# Environment: MEDTL_GPU (device id, default 0), MEDTL_GPU_CHECK_DIR (scratch, default
#   /tmp/medtl-gpu-check), MEDTL_GPU_CHECK_ITERS (caffe time iterations, default 20),
#   MEDTL_GPU_CHECK_TRAIN_ITERS (default 200), MEDTL_GPU_CHECK_BATCH (replaces the papers'
#   batch sizes: rehearsals only), MEDTL_GPU_CHECK_BUDGET_S (default 570), OUT (logs copied there).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
log() { printf '[gpu-check] %s\n' "$*" >&2; }
die() { printf '[gpu-check] error: %s\n' "$*" >&2; exit 1; }

CPU=0 CONFIGURE_ONLY=0 CAFFE_PREFIX="" BUNDLE="$REPO/build/gpu_bundle"
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1 ;;
    --configure-only) CONFIGURE_ONLY=1 ;;
    --caffe) [ $# -ge 2 ] || die "--caffe needs a PREFIX"; CAFFE_PREFIX="$2"; shift ;;
    -*) die "unknown option $1 (see the header of $0)" ;;
    *) BUNDLE="$1" ;;
  esac
  shift
done
GPU="${MEDTL_GPU:-0}"
DIR="${MEDTL_GPU_CHECK_DIR:-/tmp/medtl-gpu-check}"
ITERS="${MEDTL_GPU_CHECK_ITERS:-20}"
TRAIN_ITERS="${MEDTL_GPU_CHECK_TRAIN_ITERS:-200}"
BUDGET_S="${MEDTL_GPU_CHECK_BUDGET_S:-570}"
START=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

# ---------------------------------------------------------------- preconditions
for tool in python3 timeout; do command -v "$tool" >/dev/null || die "'$tool' is not installed"; done
if [ "$CPU" = 0 ]; then
  if ! { command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; }; then
    die "no GPU visible (nvidia-smi -L lists none); --cpu rehearses the check without one"
  fi
  [ -n "$CAFFE_PREFIX" ] || command -v nvcc >/dev/null || [ ! -x /usr/local/cuda/bin/nvcc ] \
    || export PATH="/usr/local/cuda/bin:$PATH"
  cc="$(nvidia-smi -i "$GPU" --query-gpu=compute_cap --format=csv,noheader | tr -d ' .')"
  DEVICE="GPU $GPU: $(nvidia-smi -i "$GPU" --query-gpu=name,driver_version --format=csv,noheader)"
else
  DEVICE="CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
fi
mkdir -p "$DIR"
DEPS="$DIR/deps"

# ---------------------------------------------------------------- build
unpack_bundle() {
  command -v dpkg >/dev/null || die "dpkg is needed to unpack the bundle's packages (dpkg -x)"
  [ -f "$BUNDLE/SHA256SUMS" ] || die "no bundle at $BUNDLE (make it with scripts/gpu_bundle.sh and carry it here)"
  (cd "$BUNDLE" && sha256sum --quiet -c SHA256SUMS) >&2 || die "the bundle at $BUNDLE does not match its SHA256SUMS"
  rm -rf "$DEPS"; mkdir -p "$DEPS"
  local deb
  for deb in "$BUNDLE"/debs/*.deb; do
    dpkg -x "$deb" "$DEPS"
  done
  mkdir -p "$DIR/cache/src"
  cp "$BUNDLE"/caffe_*.orig.tar.gz "$DIR/cache/src/"
  log "unpacked $(find "$BUNDLE/debs" -name '*.deb' | wc -l) packages into $DEPS"
}

build_caffe() {
  local mode=on; [ "$CPU" = 1 ] && mode=off
  MEDTL_CACHE_DIR="$DIR/cache" MEDTL_CAFFE_SOURCE=apt MEDTL_CAFFE_GPU="$mode" \
    MEDTL_CAFFE_PYCAFFE=off MEDTL_CAFFE_IO=minimal MEDTL_CAFFE_DEPS="$DEPS" \
    MEDTL_CUDA_ARCHS="${cc:-}" MEDTL_CAFFE_CONFIGURE_ONLY="$CONFIGURE_ONLY" \
    "$HERE/build_caffe.sh" | tail -n 1
}

if [ -z "$CAFFE_PREFIX" ]; then
  unpack_bundle
  log "building Caffe ($([ "$CPU" = 1 ] && echo CPU_ONLY || echo "CUDA, sm_$cc")); $(left) s left"
  built="$(build_caffe)" || die "the Caffe build failed (see above)"
  if [ "$CONFIGURE_ONLY" = 1 ]; then log "configure only: done ($built)"; printf '%s\n' "$built"; exit 0; fi
  CAFFE_PREFIX="$built"
  export LD_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu:$DEPS/usr/lib/x86_64-linux-gnu/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
CAFFE="$CAFFE_PREFIX/bin/caffe"
[ -x "$CAFFE" ] || die "no caffe tool at $CAFFE"

# ---------------------------------------------------------------- time and train
NETS="$DIR/nets"
rm -rf "$NETS"
net_args=("$NETS" --train-iters "$TRAIN_ITERS")
[ -n "${MEDTL_GPU_CHECK_BATCH:-}" ] && net_args+=(--batch "$MEDTL_GPU_CHECK_BATCH")
[ "$CPU" = 1 ] && net_args+=(--cpu)
mapfile -t nets < <(python3 "$HERE/gpu_check.py" nets "${net_args[@]}")
device_args=(); [ "$CPU" = 0 ] && device_args=(-gpu "$GPU")

peak_memory() {   # run "$@", print the most GPU memory (MiB) nvidia-smi saw meanwhile
  local samples="$1"; shift
  if [ "$CPU" = 0 ]; then
    nvidia-smi -i "$GPU" --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$samples" &
    local sampler=$!
    "$@"; local rc=$?
    kill "$sampler" 2>/dev/null || true
    return $rc
  fi
  "$@"
}

report_args=(--device "$DEVICE")
for entry in "${nets[@]}"; do
  read -r net batch <<<"$entry"
  budget=$(( $(left) - 60 ))
  [ "$budget" -gt 10 ] || { log "out of time before $net"; break; }
  log "caffe time $net (batch $batch, $ITERS iterations); $(left) s left"
  if peak_memory "$NETS/$net.mem" timeout "$budget" "$CAFFE" time -model "$NETS/$net.prototxt" \
       -iterations "$ITERS" "${device_args[@]}" > "$NETS/$net.time.log" 2>&1; then
    report_args+=(--time "$net" "$batch" "$NETS/$net.time.log")
    [ -s "$NETS/$net.mem" ] && log "$net: peak GPU memory $(sort -n "$NETS/$net.mem" | tail -1) MiB (whole device)"
  else
    log "$net: caffe time failed or ran out of time: $(tail -n 1 "$NETS/$net.time.log")"
  fi
done

budget=$(( $(left) - 10 ))
if [ "$budget" -gt 10 ]; then
  log "caffe train ($TRAIN_ITERS iterations); $(left) s left"
  t0=$(date +%s.%N)
  if timeout "$budget" "$CAFFE" train -solver "$NETS/train_solver.prototxt" "${device_args[@]}" \
       > "$NETS/train.log" 2>&1; then
    seconds="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
    train_batch="$(awk '/alexnet-h_ri /{print $2}' <<<"$(printf '%s\n' "${nets[@]}")")"
    report_args+=(--train "$NETS/train.log" "$seconds" "$train_batch")
  else
    log "caffe train failed or ran out of time: $(tail -n 1 "$NETS/train.log")"
  fi
fi

status=0
python3 "$HERE/gpu_check.py" report "${report_args[@]}" | tee "$DIR/report.txt" || status=$?
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/gpu_check"
  cp "$DIR/report.txt" "$NETS"/*.log "$OUT/gpu_check/" 2>/dev/null || true
fi
log "done in $(( $(date +%s) - START )) s"
exit "$status"
