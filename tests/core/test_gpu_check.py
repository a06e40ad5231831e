"""The GPU proof's CPU-runnable parts (issue 11, item 7): the CUDA patches, the build switches,
the timing nets, the Table VII report and the demo's choice of device. Nothing here downloads;
the checks that need build/gpu_bundle (scripts/gpu_bundle.sh) skip without it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from medtl import caffe_env, demo
from medtl.paths import REPO

SCRIPTS = REPO / "scripts"
BUNDLE = REPO / "build" / "gpu_bundle"
TARBALL = "caffe_1.0.0+git20180821.99bd997.orig.tar.gz"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPTS / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def _cache_root() -> Path:
    return caffe_env.prefix().parent.parent


def test_the_cuda_and_minimal_patches_apply_cleanly_to_the_debian_source(tmp_path):
    tarball = _cache_root() / "src" / TARBALL
    if not tarball.is_file():
        pytest.skip(f"no cached {TARBALL}")
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path, filter="data")
    patches = sorted((REPO / "patches" / "caffe").glob("*.patch"))
    patches += sorted((REPO / "patches" / "caffe-cuda").glob("*.patch"))
    patches += sorted((REPO / "patches" / "caffe-minimal").glob("*.patch"))
    for patch in patches:
        subprocess.run(["patch", "-d", str(tmp_path), "-p1", "--forward", "--batch", "--quiet",
                        "-i", str(patch)], check=True)
    common = (tmp_path / "src" / "caffe" / "common.cpp").read_text()
    for removed in ("prop.clockRate", "prop.deviceOverlap", "prop.kernelExecTimeoutEnabled"):
        assert removed not in common


def test_the_default_cpu_build_keeps_its_cache_key():
    env = {**os.environ, "MEDTL_PYTHON": sys.executable, "MEDTL_CACHE_DIR": str(_cache_root())}
    for name in ("MEDTL_CAFFE_GPU", "MEDTL_CAFFE_IO", "MEDTL_CAFFE_PYCAFFE", "CAFFE_ROOT"):
        env.pop(name, None)
    env["MEDTL_CAFFE_GPU"] = "off"
    out = subprocess.run([str(SCRIPTS / "build_caffe.sh")], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == str(caffe_env.prefix())


def test_the_timing_nets_use_dummy_data_at_the_papers_batch_sizes(tmp_path):
    gpu_check = _gpu_check()
    gpu_check.write_nets(tmp_path, None, 50, gpu=True)
    expected = {"alexnet-h_ri": (128, 227), "googlenet-h_ri": (64, 224), "vgg16_tl": (32, 224)}
    for net, (batch, size) in expected.items():
        text = (tmp_path / f"{net}.prototxt").read_text()
        assert 'type: "Data"' not in text
        assert f"shape {{ dim: {batch} dim: 3 dim: {size} dim: {size} }}" in text
    solver = (tmp_path / "train_solver.prototxt").read_text()
    assert "max_iter: 50" in solver and "solver_mode: GPU" in solver
    assert "test_net" not in solver and "base_lr: 0.01" in solver


def test_table_vii_is_the_published_table():
    published = yaml.safe_load((REPO / "experiments" / "shin2016" / "published.yaml").read_text())
    rows = published["tables"]["table_vii"]["rows"]
    for row in _gpu_check().TABLE_VII:
        assert rows[row.label] == [row.k40_time, row.k40_memory_gb]


def test_caffe_time_of_a_small_net_is_printed_beside_table_vii(tmp_path):
    gpu_check = _gpu_check()
    gpu_check.write_nets(tmp_path, 1, 2, gpu=False)
    log = subprocess.run([str(caffe_env.caffe_binary()), "time", "-model",
                          str(tmp_path / "alexnet-h_ri.prototxt"), "-iterations", "1"],
                         env={**os.environ, "GLOG_minloglevel": "0"},
                         capture_output=True, text=True, check=True).stderr
    times = {"alexnet-h_ri": (1, gpu_check.caffe_time(log))}
    text = gpu_check.report(times, "CPU")
    alexnet = next(line for line in text.splitlines() if line.startswith("AlexNet"))
    assert "1h2m" in alexnet and "3.45" in alexnet
    assert float(alexnet.split()[2]) > 0
    assert "20h24m" in text and "not run" in text


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    """The repository's build/gpu_bundle, or one made now by scripts/gpu_bundle.sh (it
    downloads the Debian packages, as on any machine that prepares a GPU check)."""
    if (BUNDLE / "SHA256SUMS").is_file():
        return BUNDLE
    made = tmp_path_factory.mktemp("gpu") / "gpu_bundle"
    subprocess.run([str(SCRIPTS / "gpu_bundle.sh"), str(made)], check=True,
                   capture_output=True, text=True)
    return made


@pytest.mark.slow
def test_the_gpu_bundle_stays_within_64_mib(bundle):
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert size <= 64 * 1024 * 1024
    assert (bundle / TARBALL).is_file()


@pytest.mark.slow
def test_the_bundle_build_configures_against_the_carried_libraries(bundle, tmp_path):
    env = {**os.environ, "MEDTL_GPU_CHECK_DIR": str(tmp_path)}
    out = subprocess.run([str(SCRIPTS / "gpu_check.sh"), "--cpu", "--configure-only",
                          str(bundle)], env=env, capture_output=True, text=True,
                         check=True).stdout
    log = Path(out.strip().splitlines()[-1]).read_text()
    deps = str(tmp_path / "deps")
    for found in ("Found glog", "Found gflags", "Found Protobuf", "Found OpenBLAS libraries"):
        line = next(line for line in log.splitlines() if found in line)
        assert deps in line
    assert "USE_HDF5          :   OFF" in log


def _fake_nvidia_smi(folder: Path, listing: str) -> None:
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nprintf '%s\\n' '{listing}'\n")
    smi.chmod(0o755)


def test_the_demo_trains_on_the_cpu_when_no_gpu_is_visible(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDTL_GPUS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert demo.demo_gpus() is None


def test_the_demo_leaves_the_choice_to_medtl_gpus(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA H100 (UUID: GPU-x)")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("MEDTL_GPUS", "1")
    assert demo.demo_gpus() is None       # the runner reads MEDTL_GPUS itself


def test_the_demo_picks_gpu_0_only_for_a_cuda_build(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA H100 (UUID: GPU-x)")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("MEDTL_GPUS", raising=False)
    assert caffe_env.build_info().get("cuda") == "0"
    assert demo.demo_gpus() is None       # this machine's CPU-only build: stays on the CPU
    monkeypatch.setattr(caffe_env, "build_info", lambda: {"cuda": "1"})
    assert demo.demo_gpus() == "0"
