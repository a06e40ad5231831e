"""What a spec's runs will cost, told before anything is built (`medtl run SPEC --plan`).

Per run and in total:

- training images per epoch: the dataset manifest's count when the dataset is built (what
  the run will read, `StudyAdapter.fold_data_for`), else the study's expected count
  (`StudyAdapter.expected_sizes`: the paper's figures or the phantom settings, with their
  source), else unknown until the dataset is built;
- iterations: epochs x iterations per epoch (`medtl.solver.plan_solver` with the spec's
  overrides applied);
- time: iterations x the forward-backward time `caffe time` measures for the configuration's
  train net at its batch on the device (`medtl.experiments.timing`: measured once per net,
  device and Caffe build, then cached), plus per epoch one validation pass (the train net's
  forward time scaled to the validation batch). Not counted: reading records, the solver's
  update, snapshots and the test-set inference after training;
- peak memory: `medtl.experiments.memory.estimate_run` against 90% of what the device has
  free (MemAvailable, or the GPU's free memory from nvidia-smi);
- disk: the weights are 4 bytes per parameter, a solverstate as much per history blob (SGD
  one). While training the driver keeps the latest two epochs' caffemodel + solverstate and
  the best epoch's caffemodel, and copies the selected one at the end: at most 4 caffemodels
  and 2 solverstates. A finished run keeps its selected caffemodel (with
  `training.keep_snapshots`, its last snapshot pair too). Logs, traces and predictions
  (small) and the dataset (shared by the runs) are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medtl.caffe_env import build_info
from medtl.errors import MedtlError
from medtl.experiments import memory
from medtl.experiments.plan import Plan, RunPlan, State, with_overrides
from medtl.experiments.study import ExpectedSizes
from medtl.experiments.timing import NetTiming, device_description, time_net
from medtl.generate import DataPaths, build_nets
from medtl.inspect_net import with_dummy_data
from medtl.protocols import Configuration
from medtl.provenance import Sourced, derived
from medtl.solver import plan_solver

UNKNOWN = "unknown until the dataset is built"


@dataclass(frozen=True)
class ConfigCost:
    """What does not depend on the fold: the net's timing, memory and size."""

    config_id: str
    batch: int
    val_batch: int
    epochs: int
    params: int | None
    history: int                        # solverstate blobs per weight (SGD 1, Adam 3)
    memory: memory.MemoryEstimate | None
    timing: NetTiming | None
    notes: tuple[str, ...] = ()         # why a figure is missing

    @property
    def weights_bytes(self) -> int | None:
        return None if self.params is None else self.params * memory.FLOAT

    @property
    def disk_peak(self) -> int | None:
        w = self.weights_bytes
        return None if w is None else 4 * w + 2 * w * self.history

    def disk_kept(self, keep_snapshots: bool) -> int | None:
        w = self.weights_bytes
        if w is None:
            return None
        return w + (w + w * self.history if keep_snapshots else 0)


@dataclass(frozen=True)
class RunCost:
    run_id: str
    config_id: str
    state: str
    train: Sourced | None              # training images per epoch
    val: Sourced | None
    iterations: int | None
    train_s: float | None
    val_s: float | None
    per_epoch: int | None = None       # iterations per epoch

    @property
    def seconds(self) -> float | None:
        return None if self.train_s is None else self.train_s + (self.val_s or 0.0)


@dataclass(frozen=True)
class CostPlan:
    spec: str
    device: str
    gpu: int | None
    configs: dict[str, ConfigCost]
    runs: list[RunCost]
    host_available: int | None
    gpu_available: int | None
    keep_snapshots: bool


def _params(nets: dict, dims: tuple[int, ...]) -> int:
    return memory.count_net(nets["train"], "train", dims).params


def config_cost(cfg: Configuration, gpu: int | None, build: dict | None = None) -> ConfigCost:
    """Timing, memory and parameters of `cfg` (with the spec's overrides) on the device;
    `build`: the Caffe build's description (default: the one in use, `build_info()`)."""
    s = cfg.solver
    batch, notes = s.batch_size.value, []
    nets = build_nets(cfg, DataPaths("train", "val"))
    dims = tuple(nets["deploy"].layer[0].input_param.shape[0].dim[1:])
    timing = params = estimate = None
    if gpu is not None and (build or build_info()).get("cuda") == "0":
        notes.append(f"not timed: the Caffe build is CPU-only, GPU {gpu} cannot run")
    else:
        try:
            dummy = with_dummy_data(nets["train"], Path("train.prototxt"), dims,
                                    batch_size=batch)
            timing = time_net(dummy, batch, gpu)
        except MedtlError as exc:
            notes.append(f"not timed: {exc}")
    try:
        params = _params(nets, dims)
        estimate = memory.estimate_run(cfg)
    except Exception as exc:    # best effort, as the runner's memory check
        notes.append(f"memory not estimated ({type(exc).__name__}: {exc})")
    return ConfigCost(cfg.id, batch, s.val_batch_size.value, s.max_epochs.value, params,
                      memory.HISTORY.get(s.type.value, 4), estimate, timing, tuple(notes))


def run_sizes(plan: Plan, run: RunPlan, cfg: Configuration) -> ExpectedSizes | None:
    """The run's training and validation counts: the manifest's, else the study's expected
    ones, else None. Never builds the dataset."""
    study = plan.study
    if study.is_built():
        fold = study.fold_data_for(cfg, run.fold, run.fraction, run.seed)
        return ExpectedSizes(derived(fold.train_size, "the dataset's manifest"),
                             derived(fold.val_size, "the dataset's manifest"))
    return study.expected_sizes(cfg, run.fold, run.fraction)


def run_cost(plan: Plan, run: RunPlan, cost: ConfigCost, cfg: Configuration) -> RunCost:
    sizes = run_sizes(plan, run, cfg)
    state = plan.state(run).state.value
    if sizes is None:
        return RunCost(run.run_id, cost.config_id, state, None, None, None, None, None)
    solver = plan_solver(cfg.solver, sizes.train.value, max(1, sizes.val.value))
    iterations = solver.max_iter.value
    train_s = val_s = None
    if cost.timing is not None:
        t = cost.timing
        train_s = iterations * t.forward_backward_ms / 1000
        val_s = (cost.epochs * solver.test_iter.value * t.forward_ms
                 * cost.val_batch / t.batch / 1000)
    return RunCost(run.run_id, cost.config_id, state, sizes.train, sizes.val, iterations,
                   train_s, val_s, solver.iters_per_epoch.value)


def cost_plan(plan: Plan, gpu: int | None = None, build: dict | None = None) -> CostPlan:
    """The cost plan of every run of `plan` on the CPU or GPU `gpu` (default: the spec's
    training.gpu). Builds no dataset, trains nothing, writes no run folder; runs `caffe
    time` once per configuration net not in the timing cache."""
    experiment = plan.experiment
    gpu = experiment.training.gpu if gpu is None else gpu
    configs: dict[str, ConfigCost] = {}
    resolved: dict[str, Configuration] = {}
    runs = []
    for run in plan.runs:
        cfg = with_overrides(run.config, experiment)
        if cfg.id not in configs:
            print(f"  estimating {cfg.id} (batch {cfg.solver.batch_size.value}) ...", flush=True)
            configs[cfg.id], resolved[cfg.id] = config_cost(cfg, gpu, build), cfg
        runs.append(run_cost(plan, run, configs[cfg.id], resolved[cfg.id]))
    return CostPlan(f"{experiment.spec.paper}/{experiment.path.stem}", device_description(gpu),
                    gpu, configs, runs, memory.available_host_bytes(),
                    None if gpu is None else memory.available_gpu_bytes(gpu),
                    experiment.training.keep_snapshots)


# ------------------------------------------------------------------ the table

def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _fits(need: int, available: int | None, estimate: memory.MemoryEstimate) -> str:
    if available is None:
        return "free memory unknown"
    usable = int(available * memory.USABLE)
    if need <= usable:
        return "fits"
    fits = estimate.largest_batch(usable)
    return "does NOT fit" + (f" (batch {fits} would)" if fits >= 1 else "")


def _memory(cp: CostPlan, c: ConfigCost) -> str:
    """Host memory (on a GPU, at most the nets' size: Caffe mirrors on the host only what
    is read back), and the GPU's."""
    if c.memory is None:
        return "?"
    total = c.memory.total
    host = (f"{'' if cp.gpu is None else '<= '}{size(total)} "
            f"{_fits(total, cp.host_available, c.memory)}")
    if cp.gpu is None:
        return host
    return f"{host}; GPU {size(total)} {_fits(total, cp.gpu_available, c.memory)}"


def _config_lines(cp: CostPlan) -> list[str]:
    where = "host" if cp.gpu is None else f"host; GPU {cp.gpu}"
    width = max(len(c) for c in ["configuration", *cp.configs])
    lines = [f"{'configuration':<{width}}{'batch':>6}{'fwd+bwd/it':>12}{'fwd/it':>10}"
             f"{'params':>9}{'weights':>10}{'disk peak':>11}{'disk kept':>11}  "
             f"{'timing':<20}memory ({where})"]
    for c in cp.configs.values():
        t = c.timing
        source = "?" if t is None else ("cached" if t.cached else "measured now") + \
            f" ({t.iterations} it)"
        lines.append(
            f"{c.config_id:<{width}}{c.batch:>6}"
            f"{'?' if t is None else f'{t.forward_backward_ms:.0f} ms':>12}"
            f"{'?' if t is None else f'{t.forward_ms:.0f} ms':>10}"
            f"{'?' if c.params is None else f'{c.params / 1e6:.2f}M':>9}"
            f"{size(c.weights_bytes):>10}{size(c.disk_peak):>11}"
            f"{size(c.disk_kept(cp.keep_snapshots)):>11}  {source:<20}{_memory(cp, c)}")
        lines += [f"    {c.config_id}: {note}" for note in c.notes]
    return lines


def _iterations(cp: CostPlan, r: RunCost) -> str:
    if r.iterations is None:
        return "?"
    return f"{cp.configs[r.config_id].epochs} x {r.per_epoch:,} = {r.iterations:,}"


def _run_lines(cp: CostPlan, footnotes: dict[str, str]) -> list[str]:
    width = max(len(r.run_id) for r in cp.runs)
    lines = [f"{'run':<{width}}  {'train images/epoch':>19}  {'epochs x it/epoch':>24}  "
             f"{'training':>9}  {'validation':>10}  {'total':>9}  state"]
    for r in cp.runs:
        if r.train is None:
            images = UNKNOWN
        else:
            mark = footnotes.setdefault(r.train.describe(), f"[{len(footnotes) + 1}]")
            images = f"{r.train.value:,} {mark}"
        lines.append(f"{r.run_id:<{width}}  {images:>19}  "
                     f"{_iterations(cp, r):>24}  "
                     f"{duration(r.train_s):>9}  {duration(r.val_s):>10}  "
                     f"{duration(r.seconds):>9}  {r.state}")
    return lines


def _total(runs: list[RunCost], what: str) -> str:
    timed = [r for r in runs if r.seconds is not None]
    iters = sum(r.iterations or 0 for r in runs)
    text = (f"{what}: {len(runs)} run(s), {iters:,} iterations, "
            f"{duration(sum(r.seconds for r in timed))} of device time one run at a time")
    missing = len(runs) - len(timed)
    return text + (f" ({missing} run(s) not estimated: counted as 0)" if missing else "")


def format_plan(cp: CostPlan) -> str:
    """The plan as printed by `medtl run SPEC --plan`."""
    footnotes: dict[str, str] = {}
    host = "unknown" if cp.host_available is None else size(cp.host_available)
    lines = [f"Cost plan of {cp.spec}: {len(cp.runs)} run(s) on {cp.device} "
             f"(Caffe build {build_info().get('key', '?')}); nothing built or trained",
             f"free memory: host {host} (MemAvailable)"
             + ("" if cp.gpu is None else f", GPU {cp.gpu} "
                + ("unknown (no nvidia-smi)" if cp.gpu_available is None
                   else size(cp.gpu_available))) + f", of which {memory.USABLE:.0%} usable",
             "", "per configuration (caffe time of its train net, data layers as DummyData):"]
    lines += ["  " + line for line in _config_lines(cp)]
    lines += ["", "per run:"] + ["  " + line for line in _run_lines(cp, footnotes)]
    todo = [r for r in cp.runs if r.state != State.FINISHED.value]
    lines += ["", _total(cp.runs, "total")]
    if len(todo) != len(cp.runs):
        lines.append(_total(todo, "not finished yet"))
    peak = max((cp.configs[r.config_id].disk_peak or 0 for r in cp.runs), default=0)
    kept = sum(cp.configs[r.config_id].disk_kept(cp.keep_snapshots) or 0 for r in cp.runs)
    lines.append(f"disk: at most {size(peak)} for the largest run while it trains; "
                 f"{size(kept)} kept by all runs once finished"
                 + (" (with their last snapshot pairs)" if cp.keep_snapshots else
                    " (selected weights only)"))
    lines.append("time: fwd+bwd x iterations plus a validation pass per epoch; not counted: "
                 "record reading, the solver's update, snapshots, the test-set inference")
    lines += [f"{mark} {text}" for text, mark in footnotes.items()]
    return "\n".join(lines)
