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
#   MEDTL_CUDA_ARCHS  CUDA architectures to build, e.g. "90" (default: those of WANTED_CUDA_ARCHS
#                     that nvcc can target); patches/caffe-cuda/ is applied to every CUDA build
#   MEDTL_CAFFE_PYCAFFE on | off        (default: on; off builds only the caffe tool, without Python)
#   MEDTL_CAFFE_IO    full | minimal    (default: full; minimal drops LMDB, LevelDB and HDF5, so
#                     nets read DummyData/Input/MemoryData only; applies patches/caffe-minimal/)
#   MEDTL_CAFFE_DEPS  a root the build libraries' Debian packages were unpacked into (dpkg -x):
#                     headers, libraries and protoc are taken from there (scripts/gpu_check.sh)
#   MEDTL_CAFFE_FETCH_ONLY=1      print the source tarball's path and stop
#   MEDTL_CAFFE_CONFIGURE_ONLY=1  run CMake's configure step only, print its log's path and stop
set -euo pipefail

readonly CAFFE_DEB_VERSION="1.0.0+git20180821.99bd997-8"
readonly CAFFE_DEB_SUITE="bullseye"
readonly CAFFE_ORIG_TARBALL="caffe_1.0.0+git20180821.99bd997.orig.tar.gz"
readonly CAFFE_ORIG_SHA256="e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c"
readonly CAFFE_GIT_URL="https://github.com/BVLC/caffe.git"
readonly CAFFE_GIT_COMMIT="99bd99795dcdf0b1d3086a8d67ab1782a8a08383"
# Architectures we want when the toolkit can target them: K40 (sm_35, the papers' GPU),
# then Pascal through Hopper.
# CUDA 13 targets sm_75 and newer only (patches/caffe-cuda/).
readonly WANTED_CUDA_ARCHS="35 60 61 70 75 80 86 89 90 100 120"

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
CACHE="${MEDTL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/medtl}"
JOBS="${MEDTL_JOBS:-$(nproc 2>/dev/null || echo 2)}"
GPU_MODE="${MEDTL_CAFFE_GPU:-auto}"
SOURCE_MODE="${MEDTL_CAFFE_SOURCE:-auto}"
PYCAFFE="${MEDTL_CAFFE_PYCAFFE:-on}"
IO_MODE="${MEDTL_CAFFE_IO:-full}"
DEPS="${MEDTL_CAFFE_DEPS:-}"
FETCH_ONLY="${MEDTL_CAFFE_FETCH_ONLY:-0}"
CONFIGURE_ONLY="${MEDTL_CAFFE_CONFIGURE_ONLY:-0}"
case "$PYCAFFE" in on|off) ;; *) die "MEDTL_CAFFE_PYCAFFE must be on or off (got '$PYCAFFE')" ;; esac
case "$IO_MODE" in full|minimal) ;; *) die "MEDTL_CAFFE_IO must be full or minimal (got '$IO_MODE')" ;; esac
if [ "$PYCAFFE" = on ] && [ "$FETCH_ONLY" != 1 ]; then
  : "${MEDTL_PYTHON:?MEDTL_PYTHON must name the interpreter pycaffe is built for}"
fi

# Build libraries unpacked from Debian packages into a private root (no root, no apt there).
DEPS_FLAGS=()
if [ -n "$DEPS" ]; then
  [ -d "$DEPS/usr/include" ] || die "MEDTL_CAFFE_DEPS=$DEPS has no usr/include (unpack the bundle's .deb files there with dpkg -x)"
  DEPS="$(cd "$DEPS" && pwd)"
  deps_lib="$DEPS/usr/lib/x86_64-linux-gnu"
  export PATH="$DEPS/usr/bin:$PATH"
  export LD_LIBRARY_PATH="$deps_lib:$deps_lib/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # Kept out of the cache key, like the Python paths: they say where, not what, is built.
  DEPS_FLAGS=(-DCMAKE_PREFIX_PATH="$DEPS/usr" -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu
              -DBoost_NO_SYSTEM_PATHS=ON -DBOOST_ROOT="$DEPS/usr"
              -DGFLAGS_ROOT_DIR="$DEPS/usr" -DGLOG_ROOT_DIR="$DEPS/usr"
              -DProtobuf_PROTOC_EXECUTABLE="$DEPS/usr/bin/protoc"
              -DOpenBLAS_INCLUDE_DIR="$DEPS/usr/include/x86_64-linux-gnu/openblas-pthread"
              -DOpenBLAS_LIB="$deps_lib/openblas-pthread/libopenblas.so")
fi

for tool in cmake make patch tar sha256sum; do
  [ "$FETCH_ONLY" = 1 ] && break
  command -v "$tool" >/dev/null \
    || die "'$tool' is not installed (Debian: apt-get install build-essential cmake patch)"
done
if [ "$FETCH_ONLY" != 1 ]; then
  command -v c++ >/dev/null || die "no C++ compiler (Debian: apt-get install build-essential)"
  command -v protoc >/dev/null || die "protoc is missing (Debian: apt-get install protobuf-compiler)"
fi
if [ "$PYCAFFE" = on ] && [ "$FETCH_ONLY" != 1 ]; then
  "$MEDTL_PYTHON" -c 'import numpy' 2>/dev/null \
    || die "$MEDTL_PYTHON cannot import numpy (run 'make setup' to create the venv first)"
fi

# ---------------------------------------------------------------- CPU or CUDA
gpu_present() { command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; }

[ "$FETCH_ONLY" = 1 ] && GPU_MODE=off
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

if [ "$IO_MODE" = minimal ]; then db=OFF; else db=ON; fi
if [ "$PYCAFFE" = on ]; then py=ON; else py=OFF; fi
CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DBLAS=Open
  -DUSE_OPENCV=OFF
  "-DUSE_LEVELDB=$db"
  "-DUSE_LMDB=$db"
  -DBUILD_docs=OFF
  -DBUILD_matlab=OFF
  "-DBUILD_python=$py"
  "-DBUILD_python_layer=$py"
  -Dpython_version=3
)
# Only non-default builds add flags, so the default build keeps its cache key.
[ "$IO_MODE" = minimal ] && CMAKE_FLAGS+=(-DUSE_HDF5=OFF)

if [ "$USE_CUDA" = 1 ]; then
  supported="$(nvcc --list-gpu-arch 2>/dev/null | sed -n 's/^compute_\([0-9]*\)$/\1/p' | tr '\n' ' ')"
  archs=""
  for a in ${MEDTL_CUDA_ARCHS:-$WANTED_CUDA_ARCHS}; do
    case " $supported " in *" $a "*) archs="$archs $a" ;; esac
  done
  archs="${archs# }"
  [ -n "$archs" ] || die "nvcc $(nvcc --version | tail -1) supports none of: ${MEDTL_CUDA_ARCHS:-$WANTED_CUDA_ARCHS}"
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
                -DCUDA_ARCH_BIN="$archs" -DCUDA_ARCH_PTX="$ptx"
                -DCMAKE_POLICY_VERSION_MINIMUM=3.5)
  log "CUDA build: $(nvcc --version | tail -1); sm: $archs (PTX $ptx); cuDNN $cudnn"
else
  CMAKE_FLAGS+=(-DCPU_ONLY=ON -DUSE_CUDNN=OFF)
  log "CPU-only build"
fi

PY_VERSION=none NUMPY_VERSION=none PY_INCLUDE=none PY_LIBRARY=none PY_FLAGS=()
[ "$PYCAFFE" = on ] && [ "$FETCH_ONLY" != 1 ] && PY_INFO="$("$MEDTL_PYTHON" - <<'EOF'
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
if [ -n "${PY_INFO:-}" ]; then
  PY_VERSION="$(sed -n 1p <<<"$PY_INFO")"
  NUMPY_VERSION="$(sed -n 2p <<<"$PY_INFO")"
  PY_INCLUDE="$(sed -n 3p <<<"$PY_INFO")"
  PY_LIBRARY="$(sed -n 4p <<<"$PY_INFO")"
  # Kept out of the cache key: a build serves every venv of the same base interpreter and NumPy.
  PY_FLAGS=(-DPYTHON_EXECUTABLE="$MEDTL_PYTHON" -DPYTHON_INCLUDE_DIR="$PY_INCLUDE")
  [ -f "$PY_LIBRARY" ] && PY_FLAGS+=(-DPYTHON_LIBRARY="$PY_LIBRARY")
fi

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

# patches/caffe/ keep their bare names (the default build's cache key); others name their folder.
patch_name() {
  case "$1" in
    "$PATCH_DIR"/*) basename "$1" ;;
    *) printf '%s/%s\n' "$(basename "$(dirname "$1")")" "$(basename "$1")" ;;
  esac
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

if [ "$FETCH_ONLY" = 1 ]; then
  if [[ "$SOURCE_ID" == git:* ]]; then printf '%s\n' "$CACHE/src/caffe-$CAFFE_GIT_COMMIT"
  else printf '%s\n' "$CACHE/src/$CAFFE_ORIG_TARBALL"; fi
  exit 0
fi

# ---------------------------------------------------------------- cache key
PATCHES=("$PATCH_DIR"/*.patch)
[ -e "${PATCHES[0]}" ] || die "no patches found in $PATCH_DIR"
# Applied only to the builds that need them, so the default CPU build keeps its cache key.
[ "$USE_CUDA" = 1 ] && PATCHES+=("$REPO"/patches/caffe-cuda/*.patch)
[ "$IO_MODE" = minimal ] && PATCHES+=("$REPO"/patches/caffe-minimal/*.patch)
KEY="$({
  echo "source=$SOURCE_ID"
  for p in "${PATCHES[@]}"; do echo "patch=$(patch_name "$p") $(sha256sum "$p" | cut -d' ' -f1)"; done
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
  log "patch $(patch_name "$p"): $(sed -n 's/^Reason: //p' "$p" | head -1)"
  patch -d "$WORK/src" -p1 --forward --batch --quiet < "$p" >&2 || die "patch $(basename "$p") does not apply"
done

LOG="$CACHE/logs/caffe-$KEY.log"
log "configuring and building with $JOBS jobs (log: $LOG)"
start=$(date +%s)
# $ORIGIN rpaths make bin/caffe and python/caffe/_caffe.so find lib/libcaffe.so wherever the tree lies.
TARGETS=(caffe caffe.bin)
[ "$PYCAFFE" = on ] && TARGETS+=(pycaffe)
# shellcheck disable=SC2016  # $ORIGIN is for the linker, not the shell
configure() {
  (cd "$WORK/build" && cmake "$WORK/src" "${CMAKE_FLAGS[@]}" "${PY_FLAGS[@]}" "${DEPS_FLAGS[@]}" \
     -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON \
     '-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../lib;$ORIGIN/../../lib')
}
if [ "$CONFIGURE_ONLY" = 1 ]; then
  configure > "$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "CMake configure failed; the full log is $LOG"; }
  log "configured (configure only): $LOG"
  printf '%s\n' "$LOG"
  exit 0
fi
if ! { configure && (cd "$WORK/build" && make -j"$JOBS" "${TARGETS[@]}"); } > "$LOG" 2>&1; then
  tail -n 30 "$LOG" >&2
  die "the Caffe build failed; the full log is $LOG"
fi
seconds=$(( $(date +%s) - start ))

mkdir -p "$STAGE/bin" "$STAGE/lib"
cp -a "$WORK/build/tools/caffe" "$STAGE/bin/caffe"
cp -a "$WORK/build/lib/"libcaffe.so* "$STAGE/lib/"
if [ "$PYCAFFE" = on ]; then
  mkdir -p "$STAGE/python"
  cp -a "$WORK/src/python/caffe" "$STAGE/python/caffe"
  rm -rf "$STAGE/python/caffe/test"
  rm -f "$STAGE/python/caffe/_caffe.so"
  cp "$WORK/build/lib/_caffe.so" "$STAGE/python/caffe/_caffe.so"
  mkdir -p "$STAGE/python/caffe/proto"
  touch "$STAGE/python/caffe/proto/__init__.py"
  cp "$WORK/build/include/caffe/proto/caffe_pb2.py" "$STAGE/python/caffe/proto/"
fi
cp "$WORK/src/src/caffe/proto/caffe.proto" "$STAGE/caffe.proto"
# The BVLC model definitions: the reference for layer names that weights transfer by.
cp -a "$WORK/src/models" "$STAGE/models"
{
  echo "key=$KEY"
  echo "source=$SOURCE_ID"
  echo "upstream_commit=$CAFFE_GIT_COMMIT"
  for p in "${PATCHES[@]}"; do echo "patch=$(patch_name "$p")"; done
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
