"""The set-up scripts: idempotent, and clear about what they refuse."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from medtl import caffe_env


def _run(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_second_setup_is_a_no_op(repo):
    build_info = caffe_env.prefix() / "BUILD_INFO"
    before = build_info.stat().st_mtime_ns
    result = _run(repo / "scripts" / "setup.sh", {})
    assert result.returncode == 0, result.stderr
    assert "is up to date" in result.stderr
    assert "configuring and building" not in result.stderr
    assert "creating the venv" not in result.stderr
    assert build_info.stat().st_mtime_ns == before


def test_caffe_root_is_honoured(repo, tmp_path):
    result = _run(repo / "scripts" / "build_caffe.sh", {"CAFFE_ROOT": str(caffe_env.prefix())})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(caffe_env.prefix())

    result = _run(repo / "scripts" / "build_caffe.sh", {"CAFFE_ROOT": str(tmp_path)})
    assert result.returncode != 0
    assert "has no python/caffe package" in result.stderr


def test_tarball_with_a_wrong_hash_is_refused(repo, tmp_path):
    tarball = tmp_path / "src" / "caffe_1.0.0+git20180821.99bd997.orig.tar.gz"
    tarball.parent.mkdir()
    tarball.write_bytes(b"not the Debian orig tarball")
    result = _run(repo / "scripts" / "build_caffe.sh", {
        "MEDTL_CACHE_DIR": str(tmp_path), "MEDTL_CAFFE_SOURCE": "apt",
        "MEDTL_CAFFE_GPU": "off", "MEDTL_PYTHON": str(repo / ".venv" / "bin" / "python")})
    assert result.returncode != 0
    assert "does not match the pinned e0eb3f06" in result.stderr
    assert "refusing to build" in result.stderr
    assert not tarball.exists()
    assert not any((tmp_path / "caffe").iterdir())


def test_cuda_asked_for_without_nvcc_says_what_to_install(repo, tmp_path):
    path = ":".join(d for d in os.environ["PATH"].split(":") if not (Path(d) / "nvcc").exists())
    result = _run(repo / "scripts" / "build_caffe.sh", {
        "PATH": path, "MEDTL_CACHE_DIR": str(tmp_path), "MEDTL_CAFFE_GPU": "on",
        "MEDTL_PYTHON": str(repo / ".venv" / "bin" / "python")})
    assert result.returncode != 0
    assert "nvcc is not on PATH" in result.stderr
    assert "CUDA 11.8" in result.stderr


def test_unknown_gpu_mode_is_rejected(repo, tmp_path):
    result = _run(repo / "scripts" / "build_caffe.sh", {
        "MEDTL_CACHE_DIR": str(tmp_path), "MEDTL_CAFFE_GPU": "maybe",
        "MEDTL_PYTHON": str(repo / ".venv" / "bin" / "python")})
    assert result.returncode != 0
    assert "MEDTL_CAFFE_GPU must be auto, on or off (got 'maybe')" in result.stderr
