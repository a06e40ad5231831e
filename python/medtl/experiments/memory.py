"""The memory a training run will take, estimated before it starts, so that a batch which
cannot fit stops with a one-line message instead of swapping (DenseNet-121 at batch 16 took
10.8 GB; batch 32 does not fit 24 GB).

The train and validation nets are built in Caffe at batch 1 with their data layers replaced
by DummyData (`medtl.inspect_net.with_dummy_data`) and their blob shapes counted, float32:

- per training record (scaled by the batch): every blob's data, and its diff where Caffe's
  backward pass reaches it (a layer with a learning parameter, or above one); the buffers
  layers keep per element (BatchNorm: its normalised copy and a temporary; Scale in place: a
  copy of its input; MAX pooling: the argmax mask; Dropout: its mask; LRN: its scale; the
  losses: their probabilities); the data layer's prefetch queue (`prefetch` batches, 4 by
  default);
- fixed: every parameter's data and diff and the solver's history (SGD 1 copy, AdaGrad and
  RMSProp 2, Adam 3, AdaDelta 4), each convolution's im2col buffer, a whole HDF5 file where
  HDF5Data reads one, and the process itself (BASELINE_BYTES, assumed);
- the validation net at its batch: the same without diffs (forward only).

Caffe allocates lazily, so what a run touches is at most this; tests hold the estimate within
a factor of the measured peak (ru_maxrss) of a small net. The runner compares it, times the
runs it starts at once, with 90% (USABLE) of MemAvailable (/proc/meminfo) in CPU mode or of
the GPU's free memory (nvidia-smi) in GPU mode, and stops before training when it does not
fit; MEDTL_NO_MEMORY_CHECK=1 skips the check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from medtl.caffe_env import caffe
from medtl.errors import RunError
from medtl.experiments.plan import with_overrides
from medtl.generate import DataPaths, build_nets
from medtl.inspect_net import DATA_LAYERS, with_dummy_data

FLOAT = 4
BASELINE_BYTES = 300 * 2**20   # assumed: Python, NumPy and Caffe loaded (~90 MB) plus slack
HISTORY = {"SGD": 1, "Nesterov": 1, "AdaGrad": 2, "RMSProp": 2, "Adam": 3, "AdaDelta": 4}
GB = 1e9
SKIP_ENV = "MEDTL_NO_MEMORY_CHECK"
# assumed: a run may take 90% of what is free; the rest stays for the page cache (LMDB reads
# are memory-mapped), the system and the estimate's own error
USABLE = 0.9


@dataclass(frozen=True)
class NetCount:
    """Bytes of one net at batch 1: per record (scales with the batch) and fixed."""

    per_record: int
    fixed: int
    params: int            # parameter elements (data and diff counted by the caller)


@dataclass(frozen=True)
class MemoryEstimate:
    batch: int
    val_batch: int
    per_record: int        # bytes per training record
    fixed: int             # parameters, diffs, solver history, buffers, the process
    val_bytes: int         # the validation net at its batch

    @property
    def total(self) -> int:
        return self.fixed + self.per_record * self.batch + self.val_bytes

    def largest_batch(self, available: int) -> int:
        """The largest training batch that fits `available` bytes (0: none)."""
        spare = available - self.fixed - self.val_bytes
        return max(0, spare // self.per_record) if self.per_record else self.batch


def _learnable(layer_param, n_blobs: int) -> bool:
    """Whether Caffe updates any of the layer's parameter blobs (lr_mult 1 when unset)."""
    mults = [p.lr_mult for p in layer_param.param]
    return any(m != 0 for m in mults) or len(mults) < n_blobs


def _layer_buffers(kind: str, layer_param, bottoms: list[int], tops: list[int],
                   in_place: bool) -> int:
    """Elements a layer keeps per record beyond its blobs (Caffe's layer implementations)."""
    if kind == "BatchNorm":
        return 2 * bottoms[0]
    if kind == "Scale" and in_place:
        return bottoms[0]
    if kind == "Pooling" and layer_param.pooling_param.pool == 0 and len(tops) == 1:  # MAX
        return tops[0]
    if kind in ("Dropout", "LRN", "SoftmaxWithLoss", "SigmoidCrossEntropyLoss"):
        return bottoms[0]
    return 0


def _col_buffer(net, name: str, top: str) -> int:
    """Elements of a convolution's im2col buffer (one record; every layer keeps its own)."""
    weights = net.params[name][0].data.shape        # out, in / group, kh, kw
    _, _, h, w = net.blobs[top].data.shape
    return int(weights[1] * weights[2] * weights[3] * h * w)


def _hdf5_file_bytes(layer_param) -> int:
    """The largest file an HDF5Data layer's list names (it holds one whole file)."""
    import h5py

    source = Path(layer_param.hdf5_data_param.source)
    if not source.is_file():
        return 0
    largest = 0
    for line in source.read_text().splitlines():
        if line.strip() and Path(line.strip()).is_file():
            with h5py.File(line.strip(), "r") as f:
                largest = max(largest, sum(int(f[k].size) for k in f))
    return largest * FLOAT


def _built(net_param, phase: str, input_shape: tuple[int, ...]):
    """Caffe's net of `net_param` at batch 1 (its data layers DummyData), and the layer
    parameters by name."""
    dummy = with_dummy_data(net_param, Path("net.prototxt"), input_shape, batch_size=1)
    c = caffe()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.prototxt"
        path.write_text(str(dummy))
        net = c.Net(str(path), c.TRAIN if phase == "train" else c.TEST)
    return net, {layer.name: layer for layer in dummy.layer}


def _data_layer_elements(layer_param, tops: list[int]) -> tuple[int, int]:
    """(per record, fixed) elements a data layer holds beyond its tops: the prefetch queue
    of a Data layer, the whole current file of an HDF5Data layer."""
    if layer_param.type == "Data":
        return layer_param.data_param.prefetch * sum(tops), 0
    if layer_param.type == "HDF5Data":
        return 0, _hdf5_file_bytes(layer_param) // FLOAT
    return 0, 0


def count_net(net_param, phase: str, input_shape: tuple[int, ...]) -> NetCount:
    """Bytes of `net_param` (a NetParameter with data layers) at batch 1 in `phase`."""
    data_layers = {layer.name: layer for layer in net_param.layer if layer.type in DATA_LAYERS}
    net, by_name = _built(net_param, phase, input_shape)
    size = {name: int(blob.count) for name, blob in net.blobs.items()}
    need: dict[str, bool] = {}     # blob -> Caffe's backward pass writes its diff
    shared: set[str] = set()       # the tops of the Split layers Caffe inserts share data
    per_record = fixed = 0
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        bottoms, tops = list(net.bottom_names[name]), list(net.top_names[name])
        param = by_name.get(name)          # None for an inserted Split
        needs = phase == "train" and (
            (len(layer.blobs) > 0 and param is not None and _learnable(param, len(layer.blobs)))
            or any(need.get(b, False) for b in bottoms))
        for t in tops:
            need[t] = need.get(t, False) or needs
        if layer.type == "Split":
            shared.update(tops)
            continue
        if name in data_layers:
            extra, held = _data_layer_elements(data_layers[name], [size[t] for t in tops])
            per_record, fixed = per_record + extra, fixed + held
            continue
        per_record += _layer_buffers(layer.type, param, [size[b] for b in bottoms],
                                     [size[t] for t in tops], bool(set(bottoms) & set(tops)))
        if layer.type in ("Convolution", "Deconvolution") and layer.blobs:
            fixed += _col_buffer(net, name, tops[0])
    per_record += sum(n * ((b not in shared) + bool(need.get(b))) for b, n in size.items())
    params = sum(int(b.count) for blobs in net.params.values() for b in blobs)
    return NetCount(per_record * FLOAT, fixed * FLOAT, params)


def estimate_training(train_net, val_net, input_shape: tuple[int, ...], batch: int,
                      val_batch: int, solver_type: str = "SGD") -> MemoryEstimate:
    """The estimate of one run (see the module docstring); `val_net` may be None."""
    train = count_net(train_net, "train", input_shape)
    copies = 2 + HISTORY.get(solver_type, 4)              # data, diff, solver history
    fixed = train.fixed + train.params * FLOAT * copies + BASELINE_BYTES
    val_bytes = 0
    if val_net is not None:
        val = count_net(val_net, "test", input_shape)
        val_bytes = val.fixed + val.per_record * val_batch
    return MemoryEstimate(batch, val_batch, train.per_record, fixed, val_bytes)


# ------------------------------------------------------------------ what is free

def available_host_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable (bytes), None where /proc/meminfo does not say."""
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "MemAvailable" and value.split():
            return int(value.split()[0]) * 1024
    return None


def available_gpu_bytes(gpu: int) -> int | None:
    """The GPU's free memory (nvidia-smi), None without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "--query-gpu=memory.free", "--format=csv,noheader,nounits",
                               "-i", str(gpu)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.strip()
    return int(float(text)) * 2**20 if done.returncode == 0 and text.replace(".", "").isdigit() \
        else None


def check_fits(estimate: MemoryEstimate, what: str, *, gpu: int | None = None,
               runs: int = 1, available: int | None = None) -> None:
    """RunError (one line, naming `what`, the batch and the estimate) when `runs` runs of
    `estimate` exceed the free memory; nothing when it fits or cannot be read."""
    if available is None:
        available = available_host_bytes() if gpu is None else available_gpu_bytes(gpu)
    if available is None:
        return
    need, usable = estimate.total * runs, int(available * USABLE)
    if need <= usable:
        return
    where = "MemAvailable" if gpu is None else f"free on GPU {gpu}"
    fits = estimate.largest_batch(usable // runs)
    times = f" x {runs} runs at once" if runs > 1 else ""
    hint = (f"batch {fits} would fit: set training.batch_size" if fits >= 1 else
            "no batch fits: free memory or use a machine with more")
    raise RunError(f"{what}: training at batch {estimate.batch} needs about "
                   f"{need / GB:.1f} GB{times} (estimated from the nets' blob shapes), "
                   f"{available / GB:.1f} GB is {where} (of which {USABLE:.0%} may be "
                   f"used); {hint}"
                   + ("; or lower parallel" if runs > 1 else ""))


def estimate_run(cfg) -> MemoryEstimate:
    """The estimate of a configuration (with the spec's overrides applied); the data paths
    do not matter, the data layers are replaced."""
    nets = build_nets(cfg, DataPaths("train", "val"))
    dims = tuple(nets["deploy"].layer[0].input_param.shape[0].dim[1:])
    return estimate_training(nets["train"], nets["val"], dims, cfg.solver.batch_size.value,
                             cfg.solver.val_batch_size.value, cfg.solver.type.value)


def _largest(plan, runs) -> tuple[str, MemoryEstimate] | None:
    """The configuration of `runs` whose estimate is largest (None: none could be built)."""
    estimates: dict[str, MemoryEstimate] = {}
    for run in runs:
        cfg = with_overrides(run.config, plan.experiment)
        if cfg.id in estimates:
            continue
        try:
            estimates[cfg.id] = estimate_run(cfg)
        except Exception as exc:   # best effort: the run itself reports a net it cannot build
            print(f"  memory of {cfg.id} not estimated ({type(exc).__name__}: {exc})",
                  flush=True)
    return max(estimates.items(), key=lambda kv: kv[1].total) if estimates else None


class PlanMemory:
    """The memory of a batch's runs, estimated once (the largest configuration's) for both
    questions the runner asks: how many fit at once, and whether the chosen number does."""

    def __init__(self, plan, runs) -> None:
        self.plan, self.runs = plan, runs
        self.off = not runs or os.environ.get(SKIP_ENV) == "1"

    @cached_property
    def largest(self) -> tuple[str, MemoryEstimate] | None:
        return None if self.off else _largest(self.plan, self.runs)

    def check(self, parallel: int, gpu: int | None = None) -> None:
        """The largest estimate, times the runs started at once on one device (the CPU, or
        `gpu`, default the spec's training.gpu), must fit (RunError naming it otherwise)."""
        if self.largest is None:
            return
        cid, estimate = self.largest
        check_fits(estimate, f"{self.plan.experiment.path}: {cid}",
                   gpu=self.plan.experiment.training.gpu if gpu is None else gpu,
                   runs=max(1, min(parallel, len(self.runs))))

    def runs_at_once(self) -> int | None:
        """How many runs fit in host memory at once (against USABLE of MemAvailable); None
        when it cannot be told or the check is off."""
        available = None if self.largest is None else available_host_bytes()
        if available is None:
            return None
        return max(1, int(available * USABLE) // self.largest[1].total)


def check_plan_memory(plan, runs, parallel: int, gpu: int | None = None) -> None:
    """Before `medtl run` trains `runs` of `plan` (see PlanMemory.check).
    MEDTL_NO_MEMORY_CHECK=1 skips the check."""
    PlanMemory(plan, runs).check(parallel, gpu)
