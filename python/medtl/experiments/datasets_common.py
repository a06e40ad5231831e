"""What every dataset adapter shares: the per-fold inputs a run gets, the adapter protocol,
and the cache key of a dataset built from a spec's options."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medtl.config import ConfigError
from medtl.experiments.spec import REPO, Experiment
from medtl.nets.registry import ModelSpec


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


class Adapter(Protocol):
    positive_classes: tuple[int, ...]

    def prepare(self, progress: bool = True) -> None: ...
    def fold_data(self, fold: int, fraction: float, seed: int, model: ModelSpec
                  ) -> FoldData: ...
    def predictions(self, fold: FoldData, probs: np.ndarray) -> list[dict[str, Any]]: ...
    def score(self, rows: list[dict[str, Any]], fold: FoldData) -> dict[str, Any]: ...


def options_key(options: dict[str, Any]) -> str:
    """A short stable hash of a dataset's options: one cached build per distinct setting."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()
                          ).hexdigest()[:10]


def source_root(experiment: Experiment, what: str) -> Path:
    """The dataset root a spec names (relative: to the repository), checked to be a folder."""
    root = REPO / Path(experiment.dataset.source).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{experiment.path}: dataset.source: {root} is not a folder ({what})")
    return root
