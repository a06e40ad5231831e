"""What a run's training cost (Shin Table VII): wall time, images per second, peak memory
and the hardware, measured in the process that trains (`medtl run-one`, or whoever calls
`runner.run_one`) and recorded under `resources` in the run's run.json.

- training time: the sum of trace.csv's per-epoch seconds (each epoch's iterations, its
  validation and its snapshot), so a resumed run counts the epochs of every session; the
  wall time of this process's training call (net setup and a resume's replay included) is
  `session_seconds`;
- images per second: training images drawn (iterations x batch size) / training time;
- peak host memory: `ru_maxrss` of the process that trained, its peak over its whole life
  (dataset reading and Caffe's nets included);
- peak GPU memory: the most `nvidia-smi` reports for the process while it trains, sampled
  every `GPU_POLL_S` seconds; null, with the reason, in CPU mode or without nvidia-smi.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtl.experiments.report.context import read_csv

GPU_POLL_S = 2.0
NO_GPU = "CPU mode: no GPU used"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what `platform` knows)."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Processor", "cpu model") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_count() -> int:
    """CPUs this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _nvidia_smi(*args: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def gpu_name(gpu: int) -> str | None:
    out = _nvidia_smi("--query-gpu=name", "--format=csv,noheader", "-i", str(gpu))
    return (out or "").strip() or None


def hardware(gpu: int | None) -> dict[str, Any]:
    """What the run trained on: CPU model and count, OS, and the GPU's name when one is used."""
    return {"cpu": cpu_model(), "cpus": cpu_count(),
            "platform": platform.platform(terse=True),
            "gpu": None if gpu is None else (gpu_name(gpu) or f"GPU {gpu} (name unknown: no "
                                                               "nvidia-smi)")}


def peak_host_memory_mb() -> float:
    """Peak resident memory of this process so far, MiB (ru_maxrss: KiB on Linux, bytes on
    macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def process_gpu_mb(text: str, pid: int) -> float | None:
    """This process's GPU memory (MiB) in `nvidia-smi --query-compute-apps=pid,used_memory
    --format=csv,noheader,nounits` output, summed over GPUs; None when it is not listed."""
    used = [float(cols[1]) for line in text.splitlines()
            if len(cols := [c.strip() for c in line.split(",")]) == 2
            and cols[0] == str(pid) and cols[1].replace(".", "", 1).isdigit()]
    return sum(used) if used else None


class GpuPeak:
    """The most GPU memory nvidia-smi reports for this process, sampled in a thread."""

    def __init__(self) -> None:
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _sample(self) -> None:
        out = _nvidia_smi("--query-compute-apps=pid,used_memory",
                          "--format=csv,noheader,nounits")
        used = process_gpu_mb(out, os.getpid()) if out else None
        if used is not None:
            self.peak = max(self.peak or 0.0, used)

    def _poll(self) -> None:
        while not self._stop.wait(GPU_POLL_S):
            self._sample()

    def __enter__(self) -> GpuPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()


@dataclass
class Usage:
    """What `measure` saw of one training call."""

    gpu: int | None
    session_seconds: float = 0.0
    peak_host_memory_mb: float = 0.0
    peak_gpu_memory_mb: float | None = None
    gpu_memory_note: str = NO_GPU
    hardware: dict[str, Any] = field(default_factory=dict)


@contextmanager
def measure(gpu: int | None) -> Iterator[Usage]:
    """Time the block, and read this process's peak host (and GPU) memory after it."""
    usage = Usage(gpu, hardware=hardware(gpu))
    start = time.perf_counter()
    if gpu is None:
        yield usage
    elif shutil.which("nvidia-smi") is None:
        usage.gpu_memory_note = "no nvidia-smi on this machine to read the GPU's memory"
        yield usage
    else:
        with GpuPeak() as poll:
            yield usage
        usage.peak_gpu_memory_mb = poll.peak
        usage.gpu_memory_note = (f"nvidia-smi, this process, sampled every {GPU_POLL_S:g} s"
                                 if poll.peak is not None else
                                 "nvidia-smi did not list this process")
    usage.session_seconds = round(time.perf_counter() - start, 3)
    usage.peak_host_memory_mb = peak_host_memory_mb()


def training_resources(usage: Usage, trace: Path, batch_size: int,
                       resumed_from_epoch: int) -> dict[str, Any]:
    """run.json's `resources`: the trace's training time and images, and what `measure`
    saw (see the module docstring)."""
    rows = read_csv(trace) if trace.is_file() else []
    seconds = round(sum(float(r["seconds"]) for r in rows), 3)
    iterations = int(rows[-1]["iteration"]) if rows else 0
    images = iterations * batch_size
    return {
        "trained": bool(rows),
        "epochs": len(rows), "iterations": iterations, "batch_size": batch_size,
        "images": images, "training_seconds": seconds,
        "images_per_second": round(images / seconds, 2) if seconds > 0 else None,
        "session_seconds": usage.session_seconds, "resumed_from_epoch": resumed_from_epoch,
        "peak_host_memory_mb": usage.peak_host_memory_mb,
        "host_memory_note": f"ru_maxrss of the process that trained (pid {os.getpid()}), "
                            "its peak over its whole life",
        "peak_gpu_memory_mb": usage.peak_gpu_memory_mb,
        "gpu_memory_note": usage.gpu_memory_note,
        "device": "CPU" if usage.gpu is None else f"GPU {usage.gpu}",
        "hardware": usage.hardware,
    }
