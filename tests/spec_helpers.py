"""Helpers the study tests share (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

import yaml

from medtl.paths import REPO

PUBLISHED = REPO / "experiments/shin2016/published.yaml"


def spec_from(folder: Path, name: str, base: Path, **changes) -> Path:
    """A copy of the checked-in spec `base` at `folder/name.yaml` with top-level keys
    replaced; its published file keeps pointing at the original's."""
    data = yaml.safe_load(base.read_text())
    data["published"] = str(base.parent / data["published"])
    data.update(changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def free_disk(root: Path) -> None:
    """Remove the runs' weights and solver states below `root` once a test has used them."""
    for path in list(root.rglob("*")):
        if path.suffix in (".caffemodel", ".solverstate"):
            path.unlink()


def tiny_ln_spec(folder: Path, name: str = "tiny", **changes) -> Path:
    """A lymph-node spec small enough to train in seconds (4 phantom patients, CifarNet,
    one fold, one epoch); `changes` replace top-level keys, mappings are merged."""
    base = {
        "paper": "shin2016", "study": "ln_mediastinum", "title": "tiny",
        "dataset": {"builder": "shin_ln", "source": "synthetic",
                    "phantom": {"patients": 4, "seed": 3, "n_false": 12},
                    "options": {"region": "med", "seed": 3, "folds": 2,
                                "train_views_per_candidate": 6, "val_views_per_candidate": 2,
                                "test_views_per_candidate": 2, "val_fraction": 0.5}},
        "configurations": ["cifarnet_ri"], "folds": [1], "seeds": [1],
        "training": {"max_epochs": 1}, "published": str(PUBLISHED),
    }
    for key, value in changes.items():
        merge = isinstance(value, dict) and isinstance(base.get(key), dict)
        base[key] = {**base[key], **value} if merge else value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path
