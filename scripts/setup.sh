#!/usr/bin/env bash
# One idempotent set-up: Debian packages, the project venv (.venv), BVLC Caffe, pycaffe in the venv.
# A second run changes nothing and takes a few seconds.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
VENV="$REPO/.venv"
PYTHON="${PYTHON:-python3}"
start=$(date +%s.%N)

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }
# pip's notes about unreachable extra index locations on some machines are noise here.
pip_install() {
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
    2> >(grep -v '^WARNING: Location .* is ignored' >&2)
}

if [ -z "${CAFFE_ROOT:-}" ]; then
  "$HERE/install_system_deps.sh"
fi

# ---- the venv, rebuilt only when requirements.txt or pyproject.toml changes
command -v "$PYTHON" >/dev/null || die "no '$PYTHON' interpreter (Debian: apt-get install python3 python3-venv)"
req_hash="$(cat "$REPO/requirements.txt" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.medtl-requirements"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$req_hash" ]; then
  log "creating the venv in .venv (pinned requirements.txt)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv' failed (Debian: apt-get install python3-venv)"
  # requirements.txt is the lock (every package at its version); then medtl with its `test`
  # extra (pytest, ruff): what pyproject.toml declares is already installed from the lock, so
  # pip only checks it, and the constraints keep it from choosing any other version.
  pip_install -r "$REPO/requirements.txt"
  pip_install --no-build-isolation -c "$REPO/requirements.txt" -e "$REPO[test]"
  echo "$req_hash" > "$stamp"
fi

# ---- Caffe (cached by source + patches + flags), then made importable from the venv
prefix="$(MEDTL_PYTHON="$VENV/bin/python" "$HERE/build_caffe.sh" | tail -n 1)"
[ -d "$prefix/python/caffe" ] || die "the Caffe build did not produce $prefix/python/caffe"
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
pth="$site/medtl_pycaffe.pth"
if [ "$(cat "$pth" 2>/dev/null)" != "$prefix/python" ]; then
  echo "$prefix/python" > "$pth"
  log "pycaffe linked into the venv: $prefix/python"
fi

"$VENV/bin/python" -c 'import caffe; caffe.set_mode_cpu()' 2>/dev/null \
  || { "$VENV/bin/python" -c 'import caffe'; die "pycaffe does not import from the venv"; }
elapsed="$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
log "ready in ${elapsed}s: .venv/bin/python -m medtl; Caffe at $prefix"
