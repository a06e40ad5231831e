#!/usr/bin/env bash
# Prepare what scripts/gpu_check.sh carries to a bare GPU machine (no registry, no internet):
# Caffe's Debian source tarball (the one build_caffe.sh builds) and the Debian packages of its
# build libraries and headers, 64 MiB at most. Run here, where apt-get reaches Debian's packages.
#   scripts/gpu_bundle.sh [OUT]      (default: build/gpu_bundle, ignored by git)
# LMDB, LevelDB, HDF5 and OpenCV are left out: the check builds Caffe with MEDTL_CAFFE_IO=minimal.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
OUT="${1:-$REPO/build/gpu_bundle}"
readonly LIMIT_BYTES=$((64 * 1024 * 1024))
# Debian 12 (bookworm) names; a machine with glibc >= 2.36 runs them (Ubuntu 24.04 does).
readonly PACKAGES=(
  libboost1.74-dev
  libboost-system1.74-dev libboost-system1.74.0
  libboost-thread1.74-dev libboost-thread1.74.0
  libboost-filesystem1.74-dev libboost-filesystem1.74.0
  libboost-atomic1.74-dev libboost-atomic1.74.0
  libboost-chrono1.74-dev libboost-chrono1.74.0
  libboost-date-time1.74-dev libboost-date-time1.74.0
  libgoogle-glog-dev libgoogle-glog0v6 libunwind8
  libgflags-dev libgflags2.2
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 protobuf-compiler libprotoc32
  libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libquadmath0
)

log() { printf '[gpu-bundle] %s\n' "$*" >&2; }
die() { printf '[gpu-bundle] error: %s\n' "$*" >&2; exit 1; }

command -v apt-get >/dev/null || die "apt-get is needed to download the Debian packages (run this on a Debian machine)"
tarball="$(MEDTL_CAFFE_FETCH_ONLY=1 "$HERE/build_caffe.sh" | tail -n 1)"
[ -f "$tarball" ] || die "no Caffe source tarball (got '$tarball'); build_caffe.sh could not fetch it"

stage="$OUT.partial"
rm -rf "$stage"
mkdir -p "$stage/debs"
cp "$tarball" "$stage/"
log "apt-get download ${#PACKAGES[@]} packages"
(cd "$stage/debs" && apt-get -o APT::Sandbox::User=root -qq download "${PACKAGES[@]}" >&2) \
  || die "apt-get download failed (run 'apt-get update' first)"
(cd "$stage" && sha256sum -- *.tar.gz debs/*.deb > SHA256SUMS)
for deb in "$stage"/debs/*.deb; do
  dpkg-deb -f "$deb" Package Version | paste -sd' ' -
done > "$stage/PACKAGES"
bytes="$(du -cb "$stage" | tail -n 1 | cut -f1)"
[ "$bytes" -le "$LIMIT_BYTES" ] || die "the bundle is $bytes bytes, over the 64 MiB ($LIMIT_BYTES) limit"
rm -rf "$OUT"
mv "$stage" "$OUT"
log "$(( bytes / 1024 / 1024 )) MiB in $OUT ($(wc -l < "$OUT/PACKAGES") packages + $(basename "$tarball"))"
printf '%s\n' "$OUT"
