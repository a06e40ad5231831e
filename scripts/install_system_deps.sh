#!/usr/bin/env bash
# Install the Debian packages that building Caffe and the venv need; a no-op when present.
set -euo pipefail

PACKAGES=(
  build-essential cmake patch git dpkg-dev ca-certificates
  python3-dev python3-venv
  libboost-system-dev libboost-thread-dev libboost-filesystem-dev libboost-python-dev
  libprotobuf-dev protobuf-compiler
  libgoogle-glog-dev libgflags-dev
  libhdf5-dev liblmdb-dev libleveldb-dev libsnappy-dev
  libopenblas-dev
)

missing=()
if command -v dpkg-query >/dev/null; then
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
else
  missing=("${PACKAGES[@]}")
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  cat >&2 <<MSG
[setup] error: this system has no apt-get. Install the equivalents of these Debian packages
[setup] with your package manager, or point CAFFE_ROOT at an existing pycaffe build:
[setup]   ${missing[*]}
MSG
  exit 1
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "[setup] error: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "[setup] apt-get install ${missing[*]}" >&2
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
