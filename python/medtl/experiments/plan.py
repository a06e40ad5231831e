"""A loaded study: the spec validated as a whole, expanded into runs, and the state of each.

:func:`load_plan` is the one way in for `medtl run`, `run-one`, `report` and the demo. It
reads the spec (`medtl.experiments.spec`), builds the study's adapter (which checks the
builder's options, phantoms, folds and fractions), checks the transfer-learning weights and
the published numbers, and only then returns: nothing is built before the whole spec is
valid.

A run's state comes from its folder, `results/<paper>/<spec>/runs/<run id>/`:

- to run: no folder, or one holding the same settings (an interrupted run resumes);
- finished: `metrics.json` is there and the recorded settings are the spec's;
- running: another process claims it (`medtl.locks`: the claim names the host and pid);
- failed: `failed.json` says why; only `--retry-failed` runs it again;
- stale: the folder was made under other settings (the spec, its data, or the kit changed):
  it is never mixed into results; `--rerun-stale` moves it aside.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from medtl import zoo
from medtl.config import ConfigError, to_dict
from medtl.errors import RunError
from medtl.experiments.report.published import Published, load_published
from medtl.experiments.spec import Experiment, WeightsFile, read_experiment
from medtl.experiments.study import StudyAdapter, study_for
from medtl.locks import describe, holder, is_this_process
from medtl.nets.registry import get_model
from medtl.paths import resolve
from medtl.protocols import Configuration, selection_rule
from medtl.provenance import Sourced, assumed
from medtl.solver import SolverRecipe
from medtl.train.driver import DRIVER_VERSION

RUN_FILE = "run.json"
FINISHED = "metrics.json"
FAILED = "failed.json"
SYNTHETIC_SOURCE = "synthetic-source"


class State(str, Enum):
    TO_RUN = "to run"
    FINISHED = "finished"
    FAILED = "failed"
    STALE = "stale"
    RUNNING = "running"


@dataclass(frozen=True)
class RunPlan:
    """One run: a configuration on one fold, data fraction and seed."""

    experiment: Experiment
    config: Configuration
    fold: int
    fraction: float
    seed: int

    @property
    def run_id(self) -> str:
        return (f"{self.config.id}__fold{self.fold}__frac{self.fraction:g}"
                f"__seed{self.seed}")

    @property
    def run_dir(self) -> Path:
        return self.experiment.results_dir / "runs" / self.run_id


@dataclass(frozen=True)
class RunState:
    state: State
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.state.value}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Plan:
    """A validated spec, its study adapter, its runs and its published numbers."""

    experiment: Experiment
    study: StudyAdapter
    runs: list[RunPlan]
    published: Published | None

    def run(self, run_id: str) -> RunPlan:
        for run in self.runs:
            if run.run_id == run_id:
                return run
        raise RunError(f"{self.experiment.path}: no run {run_id!r} (see `medtl run "
                       f"{self.experiment.path} --list`)")

    def state(self, run: RunPlan) -> RunState:
        return run_state(self, run)


def expand(experiment: Experiment, folds: list[int]) -> list[RunPlan]:
    """Every run of the experiment on `folds` (the spec's, resolved by its study), in a
    stable order (configuration, fold, fraction, seed)."""
    s = experiment.spec
    return [RunPlan(experiment, cfg, fold, fraction, seed)
            for cfg in experiment.configurations
            for fold in folds
            for fraction in s.data_fractions
            for seed in s.seeds]


def load_plan(path: Path) -> Plan:
    """Read and validate a whole spec (nothing is built); every error names file and key."""
    experiment = read_experiment(path)
    study = study_for(experiment)
    check_pretrained(experiment)
    published = None
    if experiment.spec.published:
        published = load_published(resolve(experiment.spec.published, experiment.folder),
                                   where=f"{experiment.path}: published")
    return Plan(experiment, study, expand(experiment, study.folds), published)


# ------------------------------------------------------------------ resolved settings

def _deviation(value: Any, what: str) -> Sourced:
    return assumed(value, f"set by the experiment spec ({what}), not the paper's value")


def with_overrides(cfg: Configuration, experiment: Experiment) -> Configuration:
    """The configuration with the spec's training overrides, each marked as a deviation."""
    t = experiment.training
    solver: SolverRecipe = cfg.solver
    if t.max_epochs is not None:
        solver = replace(solver, max_epochs=_deviation(t.max_epochs, "training.max_epochs"))
    if t.batch_size is not None:
        batch = _deviation(t.batch_size, "training.batch_size")
        solver = replace(solver, batch_size=batch, val_batch_size=batch)
    policy = cfg.policy
    if t.base_lr is not None:
        base = _deviation(t.base_lr, "training.base_lr")
        policy = replace(policy, base_lr=base)
        solver = replace(solver, base_lr=base)
    return replace(cfg, solver=solver, policy=policy)


def selection_for(experiment: Experiment) -> Sourced:
    choice = experiment.training.selection
    if choice != "paper":
        return _deviation(choice, "training.selection")
    rule = selection_rule(experiment.spec.paper, experiment.spec.study)
    return rule or assumed("min_val_loss",
                           "the paper gives no snapshot selection; lowest validation loss")


def pretrained_source(experiment: Experiment, cfg: Configuration) -> dict[str, Any] | None:
    """Where a run's initial weights come from (None: random initialisation)."""
    if cfg.policy.init.value != "pretrained":
        return None
    source = experiment.pretrained.weights[cfg.model]
    if source == SYNTHETIC_SOURCE:
        return {"synthetic_source": to_dict(experiment.pretrained.source_task)}
    if isinstance(source, WeightsFile):
        return {"weights": str(resolve(source.weights, experiment.folder)),
                "definition": str(resolve(source.definition, experiment.folder)),
                "drop": list(source.drop)}
    return {"zoo": source}


def run_settings(plan: Plan, run: RunPlan) -> dict[str, Any]:
    """Everything that makes a run what it is; a finished run whose recorded settings differ
    from these is stale."""
    experiment = plan.experiment
    cfg = with_overrides(run.config, experiment)
    return {
        "run_id": run.run_id, "paper": cfg.paper, "study": cfg.study,
        "configuration": run.config.id, "model": cfg.model, "policy": cfg.policy.name,
        "fold": run.fold, "data_fraction": run.fraction, "seed": run.seed,
        "values": {k: v.value for k, v in sorted(cfg.provenance().items())},
        "selection": selection_for(experiment).value,
        "initial_weights": pretrained_source(experiment, cfg),
        "dataset": plan.study.settings(),
        "scoring": plan.study.scoring_settings(),
        "driver": DRIVER_VERSION,
    }


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _differences(recorded: dict[str, Any], current: dict[str, Any], prefix: str = ""
                 ) -> list[str]:
    out = []
    for key in sorted(set(recorded) | set(current)):
        a, b = recorded.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def run_state(plan: Plan, run: RunPlan) -> RunState:
    """The state of a run from its folder (see the module docstring)."""
    folder = run.run_dir
    record = folder / RUN_FILE
    if record.is_file():
        recorded = json.loads(record.read_text())
        if "settings" not in recorded:
            return RunState(State.STALE, "recorded by an earlier version of the kit")
        changed = _differences(recorded["settings"], _plain(run_settings(plan, run)))
        if changed:
            listed = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more"
                                               if len(changed) > 4 else "")
            return RunState(State.STALE, f"settings changed: {listed}")
        if (folder / FINISHED).is_file():
            if (plan.study.identity is not None
                    and recorded.get("dataset_key") != plan.study.dataset_key):
                return RunState(State.STALE, "the data at dataset.source changed")
            return RunState(State.FINISHED)
    claimed = holder(folder)
    if claimed is not None and not is_this_process(claimed):
        return RunState(State.RUNNING, f"claimed by {describe(claimed)}")
    if (folder / FAILED).is_file():
        reason = json.loads((folder / FAILED).read_text()).get("reason", "")
        return RunState(State.FAILED, reason)
    if record.is_file():
        return RunState(State.TO_RUN, "interrupted; resumes")
    return RunState(State.TO_RUN)


# ------------------------------------------------------------------ transfer learning

def check_pretrained(experiment: Experiment) -> None:
    """Every transfer-learning configuration has source weights of a known kind."""
    where = f"{experiment.path}: pretrained.weights"
    weights = experiment.pretrained.weights
    for model, source in weights.items():
        try:
            get_model(model)
        except KeyError as exc:
            raise ConfigError(f"{where}: {exc.args[0]}") from None
        if isinstance(source, str) and source != SYNTHETIC_SOURCE:
            try:
                zoo.get(source)
            except KeyError:
                raise ConfigError(f"{where}.{model}: {source!r} is not a model-zoo name "
                                  f"(known: {', '.join(zoo.MODELS)}) nor "
                                  f"'{SYNTHETIC_SOURCE}'") from None
        if isinstance(source, WeightsFile) and not (source.weights and source.definition):
            raise ConfigError(f"{where}.{model}: give weights and definition")
    for cfg in experiment.configurations:
        if cfg.policy.init.value == "pretrained" and cfg.model not in weights:
            hint = ""
            model = get_model(cfg.model)
            if model.zoo_model:
                z = zoo.get(model.zoo_model)
                hint = (f"; e.g. {cfg.model}: {z.name} (download {z.url}, sha1 "
                        f"{z.sha1 or 'not published'})")
            raise ConfigError(f"{where}: no entry for {cfg.model}, which {cfg.id} "
                              f"(transfer learning) needs{hint}")
