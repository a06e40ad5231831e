"""The one place that imports pycaffe and locates the rest of the Caffe build.

Everything in medtl that needs Caffe goes through :func:`caffe`, so Caffe's glog chatter is
quieted once, CPU/GPU mode is chosen once, and a missing build fails with one clear message.
"""

from __future__ import annotations

import os
import shutil
from functools import cache
from pathlib import Path
from types import ModuleType

from medtl.errors import MedtlError

# glog prints every layer it sets up to stderr; keep warnings and errors only unless the
# user asked otherwise.
os.environ.setdefault("GLOG_minloglevel", "1")


class CaffeNotFoundError(MedtlError, RuntimeError):
    """pycaffe or the caffe tool is not installed where medtl looks for it."""


@cache
def caffe() -> ModuleType:
    """Import pycaffe (built by scripts/build_caffe.sh and linked into the venv)."""
    try:
        import caffe as _caffe
    except ImportError as exc:
        raise CaffeNotFoundError(
            f"pycaffe cannot be imported ({exc}); run 'make setup' in the repository root, "
            "or point CAFFE_ROOT at an existing pycaffe build and run it again"
        ) from exc
    return _caffe


def caffe_pb2() -> ModuleType:
    """Caffe's generated protobuf module (NetParameter, SolverParameter, Datum, ...)."""
    return caffe().proto.caffe_pb2


def prefix() -> Path:
    """Root of the Caffe build in use (an install tree with bin/, lib/, python/)."""
    return Path(caffe().__file__).resolve().parent.parent.parent


def caffe_binary() -> Path:
    """The `caffe` command-line tool of the same build as the imported pycaffe."""
    override = os.environ.get("MEDTL_CAFFE_BIN")
    candidates = [Path(override)] if override else []
    root = prefix()
    candidates += [root / "bin" / "caffe", root / "build" / "tools" / "caffe"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which("caffe")
    if found:
        return Path(found)
    raise CaffeNotFoundError(
        "the caffe tool was not found next to pycaffe (looked in "
        + ", ".join(str(p) for p in candidates)
        + "); run 'make setup'"
    )


def build_info() -> dict[str, str]:
    """Key/value facts the build script recorded (source, patches, flags, versions)."""
    info_file = prefix() / "BUILD_INFO"
    info: dict[str, str] = {}
    if info_file.is_file():
        for line in info_file.read_text().splitlines():
            key, _, value = line.partition("=")
            info[key] = f"{info[key]}, {value}" if key in info else value
    return info


class NoGpuBuildError(MedtlError, RuntimeError):
    """A GPU was asked of a CPU-only Caffe build."""


def set_mode(gpu: int | None = None) -> None:
    """CPU mode, or GPU `gpu` when given.

    A CPU-only Caffe aborts the whole process on set_mode_gpu, so that case is refused here.
    """
    c = caffe()
    if gpu is None:
        c.set_mode_cpu()
        return
    if build_info().get("cuda") == "0":
        raise NoGpuBuildError(f"GPU {gpu} requested, but the Caffe build at {prefix()} is "
                              "CPU-only; rebuild with MEDTL_CAFFE_GPU=on (needs nvcc)")
    c.set_device(gpu)
    c.set_mode_gpu()
