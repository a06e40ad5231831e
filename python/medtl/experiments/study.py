"""The study contract: what every study's adapter owns, and the registry of them.

A study adapter turns the `dataset:` section of a spec into the data a run needs and the
run's outputs into the paper's numbers. The base class owns everything that is the same for
every study, so a study writes only what is its own:

- the builder's options (a strict config class, `options_class`), the study's own scoring
  options (`scoring_class`, under `dataset.options.<scoring_key>`) and the phantom settings
  (`phantom_class`), all parsed and validated when the spec is loaded;
- where the data come from: the user's source (a path resolved against the spec's folder),
  or the kit's phantoms written once per phantom setting;
- the dataset cache key over everything that changes the dataset: builder, builder version,
  resolved options, the source's resolved path and content identity (or the phantom
  settings); the dataset lives in `<results>/datasets/<builder>_<key>/`, or, with
  `dataset.prepared`, in the folder `medtl data <builder> --out` built (never rebuilt there:
  its manifest must record the builder's version, `notes.builder_version`, and the spec's
  options, else a one-line ConfigError says what differs);
- prepare (build once), the manifest, and a fold's inputs from the manifest's databases;
- the default evaluation: TEST-phase inference over the test database (`medtl.infer`),
  per-sample rows (`predictions`), and the study's score (`score`).

A study subclass names its `builder` (the spec's `dataset.builder`), which registers it, and
writes what is its own: `build`, `fold_data` where its folds are not one manifest split
(`fold_data_for` where its configurations train on different sets), `predictions`, `score`
(or all of `evaluate`), `report`, and the few checks only it can make; `expected_sizes`
where the paper (or its phantom settings) tells a run's record counts before the dataset is
built, for `medtl run --plan`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medtl import config as cfgmod
from medtl import io
from medtl.errors import ConfigError, InputError
from medtl.experiments.report.context import ReportBody, ReportContext, read_csv
from medtl.experiments.spec import ALL_FOLDS, Experiment
from medtl.infer import predict_database
from medtl.locks import claim, describe
from medtl.nets.registry import ModelSpec, get_model
from medtl.paths import content_identity, resolve, results_root, shown
from medtl.protocols import Configuration
from medtl.provenance import Sourced
from medtl.registry import Registry

SYNTHETIC = "synthetic"
DATASETS = "datasets"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class FoldData:
    """One fold's inputs, as absolute paths, with the counts the solver needs."""

    train: str
    val: str
    mean_file: str | None
    test: str
    test_index: str
    train_size: int
    val_size: int
    test_size: int
    manifest_sha256: str
    backend: str = "lmdb"           # "lmdb" (Data + transform_param) or "hdf5" (HDF5Data)
    # a fixed per-channel transform of records stored at the net's input size (8-bit), done
    # by the Data layer's transform_param (no crop, no mean image); () for none
    mean_value: tuple[float, ...] = ()
    scale: float = 1.0


@dataclass(frozen=True)
class ExpectedSizes:
    """A run's training and validation record counts expected before its dataset is built
    (`StudyAdapter.expected_sizes`), each with where it comes from."""

    train: Sourced
    val: Sourced


@dataclass(frozen=True)
class RunInputs:
    """What a study's evaluation gets from the runner."""

    config: Configuration          # with the spec's training overrides
    fold: FoldData
    weights: Path                  # the selected snapshot
    initial: Path | None           # the weights training started from (transfer learning)
    run_dir: Path
    seed: int
    gpu: int | None


def short_key(value: Any) -> str:
    """A short stable digest of JSON-able settings."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class StudyAdapter:
    """Base of every study's adapter; see the module docstring for what it owns."""

    builder: ClassVar[str] = ""              # `dataset.builder` in a spec; registers the class
    version: ClassVar[int] = 1               # bump when the same settings build other data
    paper: ClassVar[str] = ""
    studies: ClassVar[tuple[str, ...]] = ()  # the protocol's studies it can serve
    options_class: ClassVar[type]            # the dataset builder's strict configuration
    scoring_key: ClassVar[str | None] = None  # key under dataset.options for scoring options
    scoring_class: ClassVar[type | None] = None
    phantom_class: ClassVar[type | None] = None
    source_help: ClassVar[str] = "the dataset in its published format"
    source_file: ClassVar[str | None] = None  # a file the source is, or a folder holds
    split_help: ClassVar[str] = ""           # how the data are split, for fold errors
    positive_classes: ClassVar[tuple[int, ...]] = (1,)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.builder:
            BUILDERS.register(cls.builder, cls)

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        ds = experiment.dataset
        where = f"{experiment.path}: dataset.options"
        raw = dict(ds.options)
        scoring_raw = raw.pop(self.scoring_key, None) if self.scoring_key else None
        self.config = cfgmod.from_mapping(self.options_class, self.dataset_options(raw),
                                          where=where)
        self.scoring = (cfgmod.from_mapping(self.scoring_class, scoring_raw or {},
                                            where=f"{where}.{self.scoring_key}")
                        if self.scoring_class else None)
        self.phantom = (cfgmod.from_mapping(self.phantom_class, ds.phantom,
                                            where=f"{experiment.path}: dataset.phantom")
                        if self.phantom_class else None)
        if ds.phantom and self.phantom_class is None:
            raise ConfigError(f"{experiment.path}: dataset.phantom: the {self.builder} builder "
                              "has no phantoms")
        if experiment.spec.study not in self.studies:
            served = ", ".join(repr(s) for s in self.studies)
            raise ConfigError(f"{experiment.path}: dataset.builder: {self.builder} serves the "
                              f"stud{'ies' if len(self.studies) > 1 else 'y'} {served}, not "
                              f"{experiment.spec.study!r}")
        self.check()
        self.check_plan()

    # ------------------------------------------------------------------ hooks of a study

    def dataset_options(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The builder's options as the spec gives them (a study may add defaults that
        follow from the spec, e.g. the input sizes of its models)."""
        return raw

    def check(self) -> None:
        """Study-specific checks of the options against the spec's configurations."""

    def fold_count(self) -> int | None:
        """How many folds the dataset has (None: known only once the data are read)."""
        return 1

    def check_fraction(self, fraction: float) -> None:
        """Raise ConfigError for a data fraction the dataset does not provide."""
        if fraction != 1.0:
            raise ConfigError(f"{self.experiment.path}: data_fractions: {fraction:g}: the "
                              f"{self.builder} dataset trains on whole folds (use 1.0)"
                              + (f"; {self.split_help}" if self.split_help else ""))

    def phantom_args(self) -> dict[str, Any]:
        """The phantom writer's keyword arguments: the spec's settings (a study may add
        what follows from its options, e.g. the region)."""
        return cfgmod.to_dict(self.phantom) if self.phantom is not None else {}

    def write_phantoms(self, dest: Path) -> None:
        """Write the kit's phantoms (`phantom_args`) at `dest`, in the published format."""
        raise NotImplementedError

    def locate(self, path: Path) -> Path:
        """The source as the builder reads it: the folder, or with `source_file` the file
        itself or that file inside the folder; ConfigError when it is not there."""
        if self.source_file is None:
            if not path.is_dir():
                raise ConfigError(f"{self.experiment.path}: dataset.source: {shown(path)} is "
                                  f"not a folder ({self.source_help})")
            return path
        found = path / self.source_file if path.is_dir() else path
        if not found.is_file():
            raise ConfigError(f"{self.experiment.path}: dataset.source: {shown(found)} does "
                              f"not exist ({self.source_help})")
        return found

    def build(self, source: Path, dest: Path, progress: bool) -> None:
        """Build the dataset from `source` into `dest` (complete or absent)."""
        raise NotImplementedError

    def fold_data(self, fold: int, fraction: float, seed: int, model: ModelSpec) -> FoldData:
        """A fold's inputs; the default reads one train / val / test split from the
        manifest."""
        self.prepare()
        dbs = {d["role"]: d for d in self.manifest()["databases"]}
        return self.fold_from(dbs["train"], dbs["val"], dbs["test"])

    def fold_data_for(self, cfg: Configuration, fold: int, fraction: float, seed: int
                      ) -> FoldData:
        """The inputs of one run of `cfg` (what the runner asks for): the fold's data by
        default; a study whose configurations train on different sets of one dataset (Boit:
        fine-tuning on augmented copies, feature extraction on plain images) chooses here."""
        return self.fold_data(fold, fraction, seed, get_model(cfg.model))

    def expected_sizes(self, cfg: Configuration, fold: int, fraction: float
                       ) -> ExpectedSizes | None:
        """The training and validation record counts of a run of `cfg` before the dataset
        is built (`medtl run --plan`), from the paper's figures or the phantom settings,
        each with its source; None (the default): unknown until the dataset is built. Once
        it is built, the plan reads the manifest's counts (`fold_data_for`) instead."""
        return None

    def predictions(self, fold: FoldData, probs: np.ndarray) -> list[dict[str, Any]]:
        """Per test sample: its metadata and score, from the net's outputs in record order."""
        raise NotImplementedError

    def score(self, rows: list[dict[str, Any]], fold: FoldData) -> dict[str, Any]:
        """The paper's numbers of one run's predictions."""
        raise NotImplementedError

    def evaluate(self, run: RunInputs) -> dict[str, Any]:
        """Predict the test set, write predictions.csv, score it."""
        probs, _ = predict_database(run.config, run.fold, run.weights,
                                    run.run_dir / "net" / "test.prototxt", gpu=run.gpu)
        rows = self.predictions(run.fold, probs)
        io.write_csv(run.run_dir / "predictions.csv", rows)
        return self.score(rows, run.fold)

    def report(self, ctx: ReportContext) -> ReportBody:
        """The study's report sections beside the paper's tables."""
        raise NotImplementedError

    def provenance_extra(self) -> list[str]:
        """Assumptions of the study beyond its options (e.g. a split rule), for reports."""
        return []

    # ------------------------------------------------------------------ owned by the base

    @cached_property
    def folds(self) -> list[int]:
        """The folds to run: the spec's, or for `[all]` every fold of the dataset."""
        spec = self.experiment.spec
        if spec.folds != [ALL_FOLDS]:
            return list(spec.folds)
        count = self.fold_count()
        if count is None:
            raise ConfigError(f"{self.experiment.path}: folds: [all]: the {self.builder} "
                              "dataset's fold count is known only once it is built; list the "
                              "folds")
        return list(range(1, count + 1))

    def check_plan(self) -> None:
        """The spec's folds and data fractions against what the dataset provides."""
        spec = self.experiment.spec
        count = self.fold_count()
        for fold in self.folds:
            if count is not None and fold > count:
                raise ConfigError(f"{self.experiment.path}: folds: fold {fold}, but the "
                                  f"{self.builder} dataset has {count} fold(s)"
                                  + (f"; {self.split_help}" if self.split_help else ""))
        for fraction in spec.data_fractions:
            self.check_fraction(fraction)

    @property
    def synthetic(self) -> bool:
        return self.experiment.dataset.source == SYNTHETIC

    @cached_property
    def source_path(self) -> Path | None:
        """The resolved `dataset.source` (None for the phantoms)."""
        if self.synthetic:
            return None
        return resolve(self.experiment.dataset.source, self.experiment.path.parent)

    def source(self) -> Path:
        """What the builder reads: the user's data, or the phantoms (written once)."""
        if not self.synthetic:
            return self.locate(self.source_path)
        dest = (results_root() / DATASETS / "phantoms"
                / f"{self.builder}_{short_key(self.phantom_settings())}")
        if not dest.exists():
            self.write_phantoms(dest)
        return self.locate(dest)

    def phantom_settings(self) -> dict[str, Any]:
        return {"builder": self.builder, "version": self.version,
                "phantom": self.phantom_args()}

    @cached_property
    def prepared_path(self) -> Path | None:
        """The resolved `dataset.prepared` (None: the dataset is built from the source)."""
        prepared = self.experiment.dataset.prepared
        return resolve(prepared, self.experiment.path.parent) if prepared else None

    def settings(self) -> dict[str, Any]:
        """Everything the spec says that changes the dataset (no file is read)."""
        source: dict[str, Any] = (
            {"prepared": str(self.prepared_path)} if self.prepared_path is not None
            else self.phantom_settings() if self.synthetic else {"path": str(self.source_path)})
        return {"builder": self.builder, "version": self.version,
                "options": cfgmod.to_dict(self.config), "source": source}

    def source_identity(self) -> str | None:
        """The content identity of the user's source (None: phantoms, or not there); of a
        prepared dataset, its manifest's digest."""
        if self.prepared_path is not None:
            manifest = self.prepared_path / MANIFEST
            return io.sha256_file(manifest) if manifest.is_file() else None
        if self.synthetic or not self.source_path.exists():
            return None
        return content_identity(self.source_path)

    @cached_property
    def identity(self) -> str | None:
        """`source_identity()`, read once (a real source may hold 100,000 files)."""
        return self.source_identity()

    @cached_property
    def dataset_key(self) -> str:
        """The cache key of the dataset: its settings and the identity of its source."""
        return short_key({**self.settings(), "identity": self.identity})

    @property
    def dataset_dir(self) -> Path:
        if self.prepared_path is not None:
            return self.prepared_path
        return results_root() / DATASETS / f"{self.builder}_{self.dataset_key}"

    def scoring_settings(self) -> dict[str, Any]:
        """The study's scoring options (they change a run's numbers, not its dataset)."""
        return cfgmod.to_dict(self.scoring) if self.scoring is not None else {}

    def is_built(self) -> bool:
        return (self.dataset_dir / MANIFEST).is_file()

    def prepare(self, progress: bool = True) -> None:
        """Build the dataset unless it is there (a prepared one is checked, never built).
        One process builds it; another asking meanwhile waits, then finds it built."""
        if self.prepared_path is not None:
            self.check_prepared()
            return
        if self.is_built():
            return
        with claim(self.dataset_dir, f"dataset {shown(self.dataset_dir)}", wait_s=math.inf,
                   on_wait=lambda who: print(f"  waiting for dataset {self.dataset_dir.name}:"
                                             f" being built by {describe(who)}", flush=True)):
            if not self.is_built():
                io.clean_stale_temps(self.dataset_dir.parent)
                self.build(self.source(), self.dataset_dir, progress)

    def prepared_option_fits(self, key: str, recorded: Any, wanted: Any) -> bool:
        """Whether a prepared dataset built with option `key` = `recorded` serves a spec
        asking `wanted` (a study may accept more than equality, e.g. an extra set)."""
        return recorded == wanted

    def check_prepared(self) -> None:
        """The prepared dataset is complete and was built by this builder's version with the
        spec's options; ConfigError naming the folder and the difference otherwise."""
        path, where = self.prepared_path, f"{self.experiment.path}: dataset.prepared"
        if not (path / MANIFEST).is_file():
            raise ConfigError(f"{where}: {shown(path)} holds no {MANIFEST} (not a finished "
                              f"dataset: build it with `medtl data {self.builder} ... --out "
                              f"{shown(path)}`)")
        manifest = self.manifest()
        version = manifest.get("notes", {}).get("builder_version")
        if version is None:
            raise ConfigError(f"{where}: {shown(path)}'s manifest records no builder version "
                              f"(not built by `medtl data {self.builder}` of this kit, version "
                              f"{self.version})")
        if version != self.version:
            raise ConfigError(f"{where}: {shown(path)} was built by version {version} of the "
                              f"{self.builder} builder, this kit's is {self.version}: build "
                              "it again")
        recorded = manifest.get("config", {})
        wanted = json.loads(json.dumps(cfgmod.to_dict(self.config), default=str))
        for key in sorted(set(recorded) | set(wanted)):
            if not self.prepared_option_fits(key, recorded.get(key), wanted.get(key)):
                raise ConfigError(
                    f"{where}: {shown(path)} was built with {key}={recorded.get(key)!r}, the "
                    f"spec needs {wanted.get(key)!r} (build it with --set "
                    f"{key}={json.dumps(wanted.get(key))}, or change dataset.options)")

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.dataset_dir / MANIFEST).read_text())

    def fold_from(self, train: dict[str, Any], val: dict[str, Any], test: dict[str, Any],
                  root: Path | None = None, manifest: Path | None = None) -> FoldData:
        """FoldData of three manifest database records under `root` (the dataset)."""
        root = root or self.dataset_dir
        manifest = manifest or root / MANIFEST
        backend = "hdf5" if train.get("format") == "hdf5" else "lmdb"
        mean = train.get("mean_file")
        return FoldData(train=str(root / train["path"]), val=str(root / val["path"]),
                        mean_file=str(root / mean) if mean else None,
                        test=str(root / test["path"]),
                        test_index=str(root / test["index_file"]) if test.get("index_file")
                        else "",
                        train_size=train["count"], val_size=val["count"],
                        test_size=test["count"], manifest_sha256=io.sha256_file(manifest),
                        backend=backend)

    def candidate_means(self, fold: FoldData, probs: np.ndarray
                        ) -> list[tuple[dict[str, str], int, float]]:
        """Per candidate of the test index (first-seen order): its index row, its number of
        test records (views, patches) and the mean of their positive-class probabilities,
        how the papers score a candidate from its test-time augmentations."""
        index = read_csv(fold.test_index)
        if len(index) != len(probs):
            raise InputError(f"{fold.test_index}: {len(index)} rows for {len(probs)} outputs")
        scores: dict[str, list[float]] = defaultdict(list)
        meta: dict[str, dict[str, str]] = {}
        for row, p in zip(index, probs, strict=True):
            scores[row["candidate_id"]].append(float(sum(p[c] for c in self.positive_classes)))
            meta[row["candidate_id"]] = row
        return [(meta[cid], len(v), float(np.mean(v))) for cid, v in scores.items()]

    def model_sizes(self) -> list[int]:
        """The input sizes of the spec's models (what a dataset stores per model)."""
        return sorted({get_model(c.model).image_size for c in self.experiment.configurations})

    def protocol_values(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Each option group's values with provenance, for the reports' one walk."""
        out = {"dataset": cfgmod.protocol_values(self.config)}
        if self.scoring is not None:
            out[self.scoring_key or "scoring"] = cfgmod.protocol_values(self.scoring)
        return out


BUILDERS: Registry[type[StudyAdapter]] = Registry("dataset builder")


def study_for(experiment: Experiment) -> StudyAdapter:
    """The adapter of the spec's `dataset.builder`."""
    builder = experiment.dataset.builder
    try:
        cls = BUILDERS.get(builder)
    except KeyError as exc:
        raise ConfigError(f"{experiment.path}: dataset.builder: {exc.args[0]}") from None
    return cls(experiment)
