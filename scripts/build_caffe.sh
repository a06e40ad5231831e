#!/usr/bin/env bash
# Build BVLC Caffe (upstream commit 99bd997) once per (source, patches, build flags)
# into a content-keyed cache, and print the install prefix on the last line of stdout.
#
# Environment (all optional except MEDTL_PYTHON):
#   MEDTL_PYTHON      interpreter pycaffe is built against (the project venv's python)
#   CAFFE_ROOT        an existing Caffe build to use instead of building one
#   MEDTL_CACHE_DIR   cache root            (default: ${XDG_CACHE_HOME:-~/.cache}/medtl)
#   MEDTL_CAFFE_GPU   auto | on | off       (default: auto = CUDA when nvcc and a GPU are present)
#   MEDTL_CAFFE_SOURCE auto | apt | git     (default: auto = apt-get source, else git clone)
#   MEDTL_JOBS        parallel compile jobs (default: nproc)
set -euo pipefail

readonly CAFFE_DEB_VERSION="1.0.0+git20180821.99bd997-8"
readonly CAFFE_DEB_SUITE="bullseye"
readonly CAFFE_ORIG_TARBALL="caffe_1.0.0+git20180821.99bd997.orig.tar.gz"
readonly CAFFE_ORIG_SHA256="e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c"
readonly CAFFE_GIT_URL="https://github.com/BVLC/caffe.git"
readonly CAFFE_GIT_COMMIT="99bd99795dcdf0b1d3086a8d67ab1782a8a08383"
# Architectures we want when the toolkit can target them: K40 (sm_35, the papers' GPU),
# then Pascal through Hopper.
readonly WANTED_CUDA_ARCHS="35 60 61 70 75 80 86 89 90"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PATCH_DIR="$REPO/patches/caffe"

log() { printf '[caffe] %s\n' "$*" >&2; }
die() { printf '[caffe] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- existing build
caffe_root_prefix() {
  # Accept either an install tree (bin/, lib/, python/) or a source tree built in build/.
  local root="$1"
  [ -d "$root/python/caffe" ] || die "CAFFE_ROOT=$root has no python/caffe package"
  [ -e "$root/python/caffe/_caffe.so" ] \
    || die "CAFFE_ROOT=$root: python/caffe/_caffe.so is missing (build the pycaffe target)"
  if [ ! -x "$root/bin/caffe" ] && [ ! -x "$root/build/tools/caffe" ]; then
    die "CAFFE_ROOT=$root: neither bin/caffe nor build/tools/caffe exists (build the caffe tool)"
  fi
  printf '%s\n' "$root"
}

if [ -n "${CAFFE_ROOT:-}" ]; then
  log "using the existing build given by CAFFE_ROOT"
  caffe_root_prefix "$(cd "$CAFFE_ROOT" && pwd)"
  exit 0
fi

# ---------------------------------------------------------------- preconditions
: "${MEDTL_PYTHON:?MEDTL_PYTHON must name the interpreter pycaffe is built for}"
CACHE="${MEDTL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/medtl}"
JOBS="${MEDTL_JOBS:-$(nproc 2>/dev/null || echo 2)}"
GPU_MODE="${MEDTL_CAFFE_GPU:-auto}"
SOURCE_MODE="${MEDTL_CAFFE_SOURCE:-auto}"

for tool in cmake make patch tar sha256sum; do
  command -v "$tool" >/dev/null \
    || die "'$tool' is not installed (Debian: apt-get install build-essential cmake patch)"
done
command -v c++ >/dev/null || die "no C++ compiler (Debian: apt-get install build-essential)"
command -v protoc >/dev/null || die "protoc is missing (Debian: apt-get install protobuf-compiler)"
"$MEDTL_PYTHON" -c 'import numpy' 2>/dev/null \
  || die "$MEDTL_PYTHON cannot import numpy (run 'make setup' to create the venv first)"

# ---------------------------------------------------------------- CPU or CUDA
gpu_present() { command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; }

case "$GPU_MODE" in
  on)
    command -v nvcc >/dev/null \
      || die "MEDTL_CAFFE_GPU=on but nvcc is not on PATH (install a CUDA toolkit, e.g. CUDA 11.8, or use MEDTL_CAFFE_GPU=off)"
    USE_CUDA=1 ;;
  off) USE_CUDA=0 ;;
  auto)
    if command -v nvcc >/dev/null && gpu_present; then USE_CUDA=1; else USE_CUDA=0; fi ;;
  *) die "MEDTL_CAFFE_GPU must be auto, on or off (got '$GPU_MODE')" ;;
esac

CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DBLAS=Open
  -DUSE_OPENCV=OFF
  -DUSE_LEVELDB=ON
  -DUSE_LMDB=ON
  -DBUILD_docs=OFF
  -DBUILD_matlab=OFF
  -DBUILD_python=ON
  -DBUILD_python_layer=ON
  -Dpython_version=3
)

if [ "$USE_CUDA" = 1 ]; then
  supported="$(nvcc --list-gpu-arch 2>/dev/null | sed -n 's/^compute_\([0-9]*\)$/\1/p' | tr '\n' ' ')"
  archs=""
  for a in $WANTED_CUDA_ARCHS; do
    case " $supported " in *" $a "*) archs="$archs $a" ;; esac
  done
  archs="${archs# }"
  [ -n "$archs" ] || die "nvcc $(nvcc --version | tail -1) supports none of: $WANTED_CUDA_ARCHS"
  ptx="${archs##* }"
  cudnn=OFF
  # Caffe 1.0 speaks the cuDNN 5-7 API; cuDNN 8 removed calls it needs.
  for h in /usr/include/cudnn_version.h /usr/include/cudnn.h /usr/local/cuda/include/cudnn_version.h /usr/local/cuda/include/cudnn.h; do
    if [ -f "$h" ]; then
      major="$(sed -n 's/^#define CUDNN_MAJOR[[:space:]]*\([0-9]*\).*/\1/p' "$h" | head -1)"
      if [ -n "$major" ] && [ "$major" -ge 5 ] && [ "$major" -le 7 ]; then cudnn=ON; fi
      break
    fi
  done
  CMAKE_FLAGS+=(-DCPU_ONLY=OFF -DUSE_CUDNN="$cudnn" -DCUDA_ARCH_NAME=Manual
                -DCUDA_ARCH_BIN="$archs" -DCUDA_ARCH_PTX="$ptx")
  log "CUDA build: $(nvcc --version | tail -1); sm: $archs (PTX $ptx); cuDNN $cudnn"
else
  CMAKE_FLAGS+=(-DCPU_ONLY=ON -DUSE_CUDNN=OFF)
  log "CPU-only build"
fi

PY_INFO="$("$MEDTL_PYTHON" - <<'EOF'
import sys, sysconfig, numpy
v = sys.version_info
libdir = sysconfig.get_config_var("LIBDIR") or ""
ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
print(f"{v.major}.{v.minor}.{v.micro}")
print(numpy.__version__)
print(sysconfig.get_paths()["include"])
print(f"{libdir}/{ldlib}")
EOF
)"
PY_VERSION="$(sed -n 1p <<<"$PY_INFO")"
NUMPY_VERSION="$(sed -n 2p <<<"$PY_INFO")"
PY_INCLUDE="$(sed -n 3p <<<"$PY_INFO")"
PY_LIBRARY="$(sed -n 4p <<<"$PY_INFO")"
# Kept out of the cache key: a build serves every venv of the same base interpreter and NumPy.
PY_FLAGS=(-DPYTHON_EXECUTABLE="$MEDTL_PYTHON" -DPYTHON_INCLUDE_DIR="$PY_INCLUDE")
[ -f "$PY_LIBRARY" ] && PY_FLAGS+=(-DPYTHON_LIBRARY="$PY_LIBRARY")

# ---------------------------------------------------------------- source
mkdir -p "$CACHE/src" "$CACHE/caffe" "$CACHE/logs"

# The deb-src entry reuses the URI of the machine's own Debian apt source; only the suite changes.
debian_mirror_uri() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri="$(awk '/^URIs:/{for (i = 2; i <= NF; i++) if ($i ~ /debian\/?$/) {print $i; exit}}' "$f")"
    [ -n "$uri" ] && { printf '%s\n' "$uri"; return 0; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri="$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file|mirror\+[a-z]+):/ && $i ~ /debian\/?$/) {print $i; exit}}' "$f")"
    [ -n "$uri" ] && { printf '%s\n' "$uri"; return 0; }
  done
  return 1
}

verify_tarball() {
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$CAFFE_ORIG_SHA256" ]; then
    rm -f "$1"
    die "$(basename "$1"): sha256 $got does not match the pinned $CAFFE_ORIG_SHA256; refusing to build (file removed)"
  fi
}

fetch_with_apt() {
  local tarball="$CACHE/src/$CAFFE_ORIG_TARBALL"
  if [ -f "$tarball" ]; then verify_tarball "$tarball"; return 0; fi
  command -v apt-get >/dev/null || return 1
  local uri; uri="$(debian_mirror_uri)" || { log "no Debian apt source found to derive a deb-src entry from"; return 1; }
  local apt_dir="$CACHE/apt"
  rm -rf "$apt_dir"; mkdir -p "$apt_dir/lists/partial" "$apt_dir/sources.list.d" "$apt_dir/download"
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  {
    echo "Types: deb-src"; echo "URIs: $uri"; echo "Suites: $CAFFE_DEB_SUITE"; echo "Components: main"
    [ -f "$keyring" ] && echo "Signed-By: $keyring"
  } > "$apt_dir/sources.list.d/caffe-src.sources"
  local opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
              -o "Dir::State::Lists=$apt_dir/lists" -o "APT::Sandbox::User=root")
  log "apt-get source caffe=$CAFFE_DEB_VERSION (deb-src, suite $CAFFE_DEB_SUITE)"
  apt-get "${opts[@]}" -qq update >&2 || return 1
  (cd "$apt_dir/download" && apt-get "${opts[@]}" -qq source --download-only "caffe=$CAFFE_DEB_VERSION" >&2) || return 1
  [ -f "$apt_dir/download/$CAFFE_ORIG_TARBALL" ] || return 1
  verify_tarball "$apt_dir/download/$CAFFE_ORIG_TARBALL"
  mv "$apt_dir/download/$CAFFE_ORIG_TARBALL" "$tarball"
  rm -rf "$apt_dir"
}

fetch_with_git() {
  local dest="$CACHE/src/caffe-$CAFFE_GIT_COMMIT"
  [ -d "$dest/.git" ] && [ "$(git -C "$dest" rev-parse HEAD)" = "$CAFFE_GIT_COMMIT" ] && return 0
  command -v git >/dev/null || die "neither apt-get source nor git is available to obtain Caffe"
  rm -rf "$dest.tmp"
  log "git clone $CAFFE_GIT_URL @ $CAFFE_GIT_COMMIT"
  git clone --quiet "$CAFFE_GIT_URL" "$dest.tmp" >&2
  git -C "$dest.tmp" checkout --quiet "$CAFFE_GIT_COMMIT" >&2
  mv "$dest.tmp" "$dest"
}

SOURCE_ID=""
case "$SOURCE_MODE" in
  apt)  fetch_with_apt || die "apt-get source failed (see above)"; SOURCE_ID="debian-orig-sha256:$CAFFE_ORIG_SHA256" ;;
  git)  fetch_with_git; SOURCE_ID="git:$CAFFE_GIT_COMMIT" ;;
  auto)
    if fetch_with_apt; then SOURCE_ID="debian-orig-sha256:$CAFFE_ORIG_SHA256"
    else log "apt-get source unavailable here; falling back to git"; fetch_with_git; SOURCE_ID="git:$CAFFE_GIT_COMMIT"
    fi ;;
  *) die "MEDTL_CAFFE_SOURCE must be auto, apt or git (got '$SOURCE_MODE')" ;;
esac

# ---------------------------------------------------------------- cache key
PATCHES=("$PATCH_DIR"/*.patch)
[ -e "${PATCHES[0]}" ] || die "no patches found in $PATCH_DIR"
KEY="$({
  echo "source=$SOURCE_ID"
  for p in "${PATCHES[@]}"; do echo "patch=$(basename "$p") $(sha256sum "$p" | cut -d' ' -f1)"; done
  printf 'flag=%s\n' "${CMAKE_FLAGS[@]}"
  echo "python=$PY_VERSION include=$PY_INCLUDE library=$PY_LIBRARY numpy=$NUMPY_VERSION"
  echo "cxx=$(c++ --version | head -1)"
} | sha256sum | cut -c1-16)"
PREFIX="$CACHE/caffe/$KEY"

exec 9>"$CACHE/caffe/.lock"
flock 9 2>/dev/null || true

if [ -f "$PREFIX/BUILD_INFO" ]; then
  log "cached build $KEY is up to date"
  printf '%s\n' "$PREFIX"
  exit 0
fi

# ---------------------------------------------------------------- build
# Leftovers of an interrupted build are removed, so every build starts clean.
rm -rf "$CACHE/caffe/$KEY".tmp.* "$CACHE/build/$KEY".*
WORK="$CACHE/build/$KEY.$$"
STAGE="$CACHE/caffe/$KEY.tmp.$$"
cleanup() { rm -rf "$WORK" "$STAGE"; }
trap cleanup EXIT
mkdir -p "$WORK/src" "$WORK/build" "$STAGE"

if [[ "$SOURCE_ID" == git:* ]]; then
  git -C "$CACHE/src/caffe-$CAFFE_GIT_COMMIT" archive "$CAFFE_GIT_COMMIT" | tar -x -C "$WORK/src"
else
  tar -xzf "$CACHE/src/$CAFFE_ORIG_TARBALL" -C "$WORK/src"
fi

for p in "${PATCHES[@]}"; do
  log "patch $(basename "$p"): $(sed -n 's/^Reason: //p' "$p" | head -1)"
  patch -d "$WORK/src" -p1 --forward --batch --quiet < "$p" >&2 || die "patch $(basename "$p") does not apply"
done

LOG="$CACHE/logs/caffe-$KEY.log"
log "configuring and building with $JOBS jobs (log: $LOG)"
start=$(date +%s)
# $ORIGIN rpaths make bin/caffe and python/caffe/_caffe.so find lib/libcaffe.so wherever the tree lies.
if ! (cd "$WORK/build" && cmake "$WORK/src" "${CMAKE_FLAGS[@]}" "${PY_FLAGS[@]}" \
        -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON \
        '-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../lib;$ORIGIN/../../lib' \
        && make -j"$JOBS" caffe pycaffe caffe.bin) > "$LOG" 2>&1; then
  tail -n 30 "$LOG" >&2
  die "the Caffe build failed; the full log is $LOG"
fi
seconds=$(( $(date +%s) - start ))

mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/python"
cp -a "$WORK/build/tools/caffe" "$STAGE/bin/caffe"
cp -a "$WORK/build/lib/"libcaffe.so* "$STAGE/lib/"
cp -a "$WORK/src/python/caffe" "$STAGE/python/caffe"
rm -rf "$STAGE/python/caffe/test"
rm -f "$STAGE/python/caffe/_caffe.so"
cp "$WORK/build/lib/_caffe.so" "$STAGE/python/caffe/_caffe.so"
mkdir -p "$STAGE/python/caffe/proto"
touch "$STAGE/python/caffe/proto/__init__.py"
cp "$WORK/build/include/caffe/proto/caffe_pb2.py" "$STAGE/python/caffe/proto/"
cp "$WORK/src/src/caffe/proto/caffe.proto" "$STAGE/caffe.proto"
# The BVLC model definitions: the reference for layer names that weights transfer by.
cp -a "$WORK/src/models" "$STAGE/models"
{
  echo "key=$KEY"
  echo "source=$SOURCE_ID"
  echo "upstream_commit=$CAFFE_GIT_COMMIT"
  for p in "${PATCHES[@]}"; do echo "patch=$(basename "$p")"; done
  echo "cuda=$USE_CUDA"
  printf 'cmake_flag=%s\n' "${CMAKE_FLAGS[@]}"
  echo "python=$PY_VERSION ($PY_INCLUDE)"
  echo "numpy=$NUMPY_VERSION"
  echo "build_seconds=$seconds"
  echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$STAGE/BUILD_INFO"

mv -T "$STAGE" "$PREFIX"
log "built in ${seconds}s -> $PREFIX"
printf '%s\n' "$PREFIX"
