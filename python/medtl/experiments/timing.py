"""How long one training iteration of a net takes on a device, measured by `caffe time` and
kept, so that `medtl run SPEC --plan` measures each net once per device.

`caffe time -model NET -iterations N [-gpu G]` runs one forward-backward pass to warm up,
then N more, and prints the average forward, backward and forward-backward milliseconds
(:func:`parse_caffe_time`). The net timed is the run's generated train net with its data
layers replaced by DummyData at the run's batch size (`medtl.inspect_net.with_dummy_data`),
so no dataset is read: reading and decoding records, the solver's update and snapshots are
not in the figure.

A measurement is cached as JSON under `$MEDTL_CACHE/timings/` (default
`~/.cache/medtl/timings/`), keyed by the device (CPU model name and core count, or the GPU's
name), the Caffe build (`medtl.caffe_env.build_info`), the net's prototxt digest and the
batch: the same net on the same device and build is never timed twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from medtl import io
from medtl.caffe_env import build_info, caffe_binary
from medtl.errors import RunError
from medtl.experiments.resources import cpu_count, cpu_model, gpu_name

CACHE_ENV = "MEDTL_CACHE"
CPU_ITERATIONS = 2    # a CPU iteration of GoogLeNet-H takes ~20 s here; the mean of 2 suffices
GPU_ITERATIONS = 10
_AVERAGE = re.compile(r"Average (Forward pass|Backward pass|Forward-Backward):\s*"
                      r"([0-9.]+(?:[eE][-+]?[0-9]+)?)\s*ms")
_KEYS = {"Forward pass": "forward_ms", "Backward pass": "backward_ms",
         "Forward-Backward": "forward_backward_ms"}


@dataclass(frozen=True)
class NetTiming:
    """One `caffe time` measurement: mean milliseconds per iteration at `batch`."""

    forward_ms: float
    backward_ms: float
    forward_backward_ms: float
    batch: int
    iterations: int
    device: str
    measured_at: str
    cached: bool = False     # read from the cache rather than measured now

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("cached")
        return out


def parse_caffe_time(text: str) -> dict[str, float]:
    """forward_ms, backward_ms and forward_backward_ms from `caffe time`'s log (glog lines,
    any prefix); RunError when a figure is missing."""
    found = {_KEYS[m.group(1)]: float(m.group(2)) for m in _AVERAGE.finditer(text)}
    missing = [key for key in _KEYS.values() if key not in found]
    if missing:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise RunError(f"caffe time printed no {missing[0].replace('_ms', '')} average "
                       f"(last lines: {tail or 'none'})")
    return found


def device_description(gpu: int | None) -> str:
    """The device a timing belongs to: CPU model and cores, or the GPU's name."""
    if gpu is None:
        return f"CPU {cpu_model()} x {cpu_count()} cores"
    return f"GPU {gpu_name(gpu) or f'{gpu} (name unknown: no nvidia-smi)'}"


def cache_dir() -> Path:
    """`$MEDTL_CACHE/timings`, else `~/.cache/medtl/timings`."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "medtl"
    return Path(root).expanduser() / "timings"


def cache_key(net_text: str, batch: int, device: str) -> str:
    build = json.dumps(build_info(), sort_keys=True)
    digest = hashlib.sha256(net_text.encode()).hexdigest()
    return hashlib.sha256(json.dumps([device, build, digest, batch]).encode()
                          ).hexdigest()[:20]


def run_caffe_time(net: Path, iterations: int, gpu: int | None) -> str:
    """`caffe time`'s log (stdout and stderr; INFO lines on); RunError when it fails."""
    cmd = [str(caffe_binary()), "time", "-model", str(net), "-iterations", str(iterations)]
    if gpu is not None:
        cmd += ["-gpu", str(gpu)]
    env = {**os.environ, "GLOG_minloglevel": "0", "GLOG_logtostderr": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    log = done.stdout + done.stderr
    if done.returncode != 0:
        tail = " | ".join(log.strip().splitlines()[-2:])
        raise RunError(f"caffe time failed on {net.name} (exit {done.returncode}): {tail}")
    return log


def time_net(net_param, batch: int, gpu: int | None = None,
             iterations: int | None = None) -> NetTiming:
    """The timing of `net_param` (a NetParameter whose data layers are DummyData at `batch`)
    on the CPU or GPU `gpu`: from the cache, else measured with `caffe time` and cached."""
    text, device = str(net_param), device_description(gpu)
    path = cache_dir() / f"{cache_key(text, batch, device)}.json"
    if path.is_file():
        try:
            return NetTiming(**json.loads(path.read_text()), cached=True)
        except (TypeError, ValueError):
            pass            # damaged or of another layout: measure again
    n = iterations or (CPU_ITERATIONS if gpu is None else GPU_ITERATIONS)
    with tempfile.TemporaryDirectory(prefix="medtl-time-") as tmp:
        net = Path(tmp) / "train_dummy.prototxt"
        net.write_text(text)
        figures = parse_caffe_time(run_caffe_time(net, n, gpu))
    timing = NetTiming(**figures, batch=batch, iterations=n, device=device,
                       measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    io.write_json(path, timing.to_dict())
    return timing
