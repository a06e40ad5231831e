"""Experiment specs: the schema of `experiments/<paper>/<study>.yaml` and its reading.

A spec names the paper's study, the dataset and how to build it, which of the protocol's
configurations to train, and the folds, data fractions and seeds to cross them with. Every
key is declared here with its type, default, range and meaning (`experiments/README.md` is
generated from these classes); a key given twice, an unknown key, a wrong type or a value out
of range is an error naming the file and the key. Relative paths in a spec are taken from the
spec's own folder.

:func:`read_experiment` checks the spec itself; `medtl.experiments.plan.load_plan` adds what
needs the registries (the builder's options, weights, published numbers) before anything is
built.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from medtl.config import ConfigError, from_mapping, load_yaml, option
from medtl.paths import results_root
from medtl.protocols import Configuration, configurations

ALL_FOLDS = "all"  # `folds: [all]`: every fold of the dataset's split


@dataclass(frozen=True)
class DatasetSpec:
    builder: str = option("", "required: the dataset builder (listed below with its "
                              "options)")
    source: str = option("synthetic", "'synthetic' (the kit's phantoms in the published "
                                      "format) or the dataset in its published format "
                                      "(relative: to the spec's folder)")
    options: dict = option({}, "the builder's options (strict; see the builder below)")
    phantom: dict = option({}, "settings of the builder's phantoms (strict; used with "
                               "source: synthetic)")
    prepared: str = option("", "a dataset folder `medtl data <builder> --out` built, used as "
                               "is instead of building from source (relative: to the spec's "
                               "folder); its manifest must record this builder's version and "
                               "the spec's options")


@dataclass(frozen=True)
class TrainingSpec:
    max_epochs: int | None = option(None, "override the paper's epoch count (a deviation)",
                                    minimum=1)
    batch_size: int | None = option(None, "override the paper's batch size, training and "
                                          "validation (a deviation)", minimum=1)
    base_lr: float | None = option(None, "override the policy's base learning rate "
                                         "(a deviation)", minimum=0)
    selection: str = option("paper", "snapshot selection: paper (Shin: lowest validation "
                                     "loss; Tajbakhsh: highest validation AUC), min_val_loss, "
                                     "max_val_auc",
                            choices=("paper", "min_val_loss", "max_val_auc"))
    gpu: int | None = option(None, "GPU id to train and test on; none: the CPU", minimum=0)
    keep_snapshots: bool = option(False, "keep a finished run's last snapshot pair "
                                         "(caffemodel + solverstate, to carry training on); "
                                         "false: a finished run keeps only its selected "
                                         "weights, its snapshots are removed")


@dataclass(frozen=True)
class WeightsFile:
    """Source weights of the user's own: a caffemodel with the definition it was trained with."""

    weights: str = option("", "the caffemodel (relative: to the spec's folder)")
    definition: str = option("", "its net definition (relative: to the spec's folder)")
    drop: list[str] = option([], "source layers expected not to carry over (its classifiers)")


@dataclass(frozen=True)
class SourceTask:
    """The synthetic source task the kit pre-trains on for 'synthetic-source' weights."""

    images: int = option(2000, "images of the source task (a fifth validates)", minimum=10)
    epochs: int = option(3, "training epochs", minimum=1)
    batch_size: int = option(50, "batch size", minimum=1)
    base_lr: float = option(0.01, "fixed learning rate, momentum 0.9, weight decay 0.0005",
                            minimum=0, exclusive_minimum=True)
    seed: int = option(1, "seed of the images and of Caffe", minimum=0)


@dataclass(frozen=True)
class PretrainSpec:
    """Where transfer-learning runs take their source weights from, per model."""

    weights: dict[str, str | WeightsFile] = option(
        {}, "model -> a model-zoo name (bvlc_alexnet, ...), {weights, definition, drop} of "
            "your own, or 'synthetic-source' (the kit pre-trains one on a synthetic task)")
    search_dirs: list[str] = option([], "folders searched for model-zoo caffemodels "
                                        "(relative: to the spec's folder); none given: "
                                        "$MEDTL_MODELS, else the repository's models/")
    source_task: SourceTask = option(SourceTask(), "the synthetic source task, for "
                                                   "'synthetic-source' weights")


@dataclass(frozen=True)
class ExperimentSpec:
    paper: str = option("", "required: the paper, a study package under "
                            "python/medtl/studies")
    study: str = option("", "required: the study within the paper's protocol, e.g. "
                            "ln_mediastinum")
    title: str = option("", "one line for the report")
    dataset: DatasetSpec = option(DatasetSpec(), "the dataset")
    configurations: list[str | dict] = option(
        ["all"], "configuration ids of the protocol (model_policy), 'all', or {model, "
                 "policy} for a combination the paper did not run (a deviation)",
        non_empty=True)
    folds: list[int | Literal["all"]] = option(
        [1], "folds to run (1-based; at most the dataset's fold count), or [all]: every fold "
             "of the dataset's split (e.g. one per patient for leave-one-patient-out)",
        minimum=1, non_empty=True)
    data_fractions: list[float] = option([1.0], "fractions of the training groups kept",
                                         minimum=0, exclusive_minimum=True, maximum=1,
                                         non_empty=True)
    seeds: list[int] = option([1], "seeds (Caffe and every sampler)", minimum=0,
                              non_empty=True)
    training: TrainingSpec = option(TrainingSpec(), "training overrides")
    pretrained: PretrainSpec = option(PretrainSpec(), "source weights for transfer learning")
    ensembles: dict[str, list[str]] = option(
        {}, "name -> configuration ids whose probabilities are averaged (Shin's Combined)")
    published: str | None = option(None, "published-numbers file (relative: to the spec's "
                                         "folder)")
    parallel: int | None = option(
        None, "runs trained at the same time on the local Dask cluster (none: one per GPU "
              "given, else one per core as memory allows); `medtl run --workers` overrides",
        minimum=1)


@dataclass(frozen=True)
class Experiment:
    """A read spec with its configurations resolved."""

    path: Path
    spec: ExperimentSpec
    configurations: tuple[Configuration, ...]
    extra_ids: frozenset[str] = field(default=frozenset())   # combinations not in the paper

    @property
    def dataset(self) -> DatasetSpec:
        return self.spec.dataset

    @property
    def training(self) -> TrainingSpec:
        return self.spec.training

    @property
    def pretrained(self) -> PretrainSpec:
        return self.spec.pretrained

    @property
    def folder(self) -> Path:
        """The spec's folder: relative paths in the spec start here."""
        return self.path.parent

    @property
    def results_dir(self) -> Path:
        """<results>/<paper>/<spec name>/: one folder per declared study."""
        return results_root() / self.spec.paper / self.path.stem

    def deviations(self) -> list[str]:
        """Settings that differ from the paper's protocol, for every report."""
        out = []
        t = self.training
        for key, value, paper_values in (
                ("max_epochs", t.max_epochs, {c.solver.max_epochs.value
                                              for c in self.configurations}),
                ("batch_size", t.batch_size, {c.solver.batch_size.value
                                              for c in self.configurations}),
                ("base_lr", t.base_lr, {c.policy.base_lr.value for c in self.configurations})):
            if value is not None:
                paper_text = ", ".join(sorted(f"{v}" for v in paper_values))
                out.append(f"training.{key} = {value} (the paper's: {paper_text})")
        if self.dataset.source == "synthetic":
            out.append("data: the kit's synthetic phantoms in the published format, not the "
                       "paper's patients")
        for cfg in self.configurations:
            if cfg.id in self.extra_ids:
                out.append(f"{cfg.label}: a model/policy combination the paper did not run")
        for model, source in self.pretrained.weights.items():
            if source == "synthetic-source":
                out.append(f"{model}: source weights pre-trained by the kit on a synthetic "
                           "task, not ImageNet")
        return out


def read_experiment(path: Path) -> Experiment:
    """Read and check a spec on its own; every error names the file and the key."""
    path = Path(path).resolve()
    raw = load_yaml(path)
    spec = from_mapping(ExperimentSpec, raw, where=str(path))
    for key in ("paper", "study"):
        if not getattr(spec, key):
            raise ConfigError(f"{path}: {key}: required")
    if not spec.dataset.builder:
        raise ConfigError(f"{path}: dataset.builder: required")
    try:
        available = [c for c in configurations(spec.paper) if c.study == spec.study]
    except KeyError as exc:
        raise ConfigError(f"{path}: paper: {exc.args[0]}") from None
    if not available:
        studies = sorted({c.study for c in configurations(spec.paper)})
        raise ConfigError(f"{path}: study: {spec.paper} has no study {spec.study!r} "
                          f"(studies: {', '.join(studies)})")
    by_id = {c.id: c for c in available}
    wanted, extra = [], set()
    entries = list(by_id) if spec.configurations == ["all"] else spec.configurations
    for entry in entries:
        if isinstance(entry, dict):
            cfg = _extra_configuration(entry, available, path)
            by_id[cfg.id] = cfg
            extra.add(cfg.id)
            entry = cfg.id
        elif entry not in by_id:
            raise ConfigError(f"{path}: configurations: {entry!r} is not a configuration of "
                              f"{spec.paper}/{spec.study} (known: {', '.join(by_id)})")
        if entry in wanted:
            raise ConfigError(f"{path}: configurations: {entry!r} is listed twice")
        wanted.append(entry)
    for name, members in spec.ensembles.items():
        missing = [m for m in members if m not in wanted]
        if missing:
            raise ConfigError(f"{path}: ensembles.{name}: {missing[0]!r} is not among the "
                              "spec's configurations")
    if ALL_FOLDS in spec.folds and spec.folds != [ALL_FOLDS]:
        raise ConfigError(f"{path}: folds: give fold numbers or [all], not both")
    for key in ("folds", "data_fractions", "seeds"):
        values = getattr(spec, key)
        if len(set(values)) != len(values):
            raise ConfigError(f"{path}: {key}: a value is listed twice")
    return Experiment(path, spec, tuple(by_id[w] for w in wanted), frozenset(extra))


def _extra_configuration(entry: dict, available: list[Configuration], path: Path
                         ) -> Configuration:
    """A model trained under one of the study's policies, which the paper did not report."""
    from medtl.nets.registry import UnknownModelError, get_model

    if set(entry) != {"model", "policy"}:
        raise ConfigError(f"{path}: configurations: {entry!r}: give exactly model and policy")
    try:
        get_model(entry["model"])
    except UnknownModelError as exc:
        raise ConfigError(f"{path}: configurations: {exc}") from None
    base = next((c for c in available if c.policy.name == entry["policy"]), None)
    if base is None:
        policies = sorted({c.policy.name for c in available})
        raise ConfigError(f"{path}: configurations: policy {entry['policy']!r} is not one of "
                          f"the study's ({', '.join(policies)})")
    label = f"{entry['model']} {entry['policy'].upper()} (not in the paper)"
    return replace(base, model=entry["model"], label=label)
