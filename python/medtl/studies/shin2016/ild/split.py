"""The ILD studies' data split for runs: outer folds, a held-out validation part of each
fold's training units, and filtered views of the database that hold only some units.

A unit is what the split deals out: a patient (CV5, LOO) or an annotated slice
`<patient>:<slice>` (Slice-Random). A filtered view is a folder per kept patient with links to
all of its DICOM slices and copies of its ROI files in which the contours of units left out are
blanked line for line, so `medtl.studies.shin2016.ild.reader` reads the kept ROIs with their
original ids (`<patient>:<file>:<line>`) and slice numbers."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtl import io
from medtl.datasets.folds import (
    FoldError,
    Folds,
    leave_one_out,
    patient_folds,
    random_item_folds,
    read_folds,
    write_folds,
)
from medtl.io import atomic_dir
from medtl.provenance import assumed
from medtl.studies.shin2016.ild import reader as ild_io

_KEY = re.compile(r"^\s*([A-Za-z_]+):\s*(.*?)\s*$")  # the ROI file's `key: value` lines
ATTEMPTS_PER_SIZE = 200  # seeded draws tried per validation size before taking one unit more

VALIDATION_RULE = assumed(
    "held-out training units, prepared as training data",
    "Shin names no validation set; a seeded val_fraction of each fold's training units "
    "(patient-disjoint from training and test except under Slice-Random, whose units are "
    "slices), redrawn until both sides hold every class, augmented and balanced like the "
    "training set: Sec. IV-D compares classifiers 'on the balanced validation sets'")
OUTER_SPLIT = assumed(
    "CV5: patients in a seeded order, each dealt to the fold with the fewest annotated slices",
    "Shin gives five folds of disjoint patients (Sec. II) but no dealing rule; slices are what "
    "a patient brings to both levels (`medtl data ild` weights patch-level folds by patches)")


@dataclass(frozen=True)
class Units:
    """Every unit the split can deal, with the classes (label indices) annotated on it."""

    labels: dict[str, frozenset[int]]
    patient_of: dict[str, str]
    patient_disjoint: bool

    def slices_of(self, units: set[str]) -> dict[str, set[int] | None]:
        """Patient -> slice numbers to keep (None: every slice) for a set of units."""
        keep: dict[str, set[int] | None] = {}
        for unit in units:
            pid = self.patient_of[unit]
            if self.patient_disjoint:
                keep[pid] = None
            else:
                keep.setdefault(pid, set()).add(int(unit.rsplit(":", 1)[1]))
        return keep


def slice_labels(patients: list[ild_io.IldPatient], classes: tuple[str, ...], *,
                 min_points: int = 1) -> dict[str, dict[int, set[int]]]:
    """Patient -> slice number -> class indices of its ROIs (those of `classes` with at least
    `min_points` contour points; patch-level ROIs need 3 to enclose an area)."""
    out: dict[str, dict[int, set[int]]] = {}
    for p in patients:
        per_slice: dict[int, set[int]] = defaultdict(set)
        for roi in p.rois:
            if roi.label in classes and len(roi.points_mm) >= min_points:
                per_slice[roi.slice_number].add(classes.index(roi.label))
        if per_slice:
            out[p.pid] = dict(per_slice)
    return out


def loo_patients(root: Path, classes: tuple[str, ...], *, min_points: int = 1) -> int | None:
    """Patient folders with an ROI of `classes` (the units of leave-one-patient-out, as
    `slice_labels` keeps them), read from the ROI text files only (no DICOM); None where
    the database is not there (yet)."""
    try:
        folders = sorted(p for p in Path(root).iterdir() if p.is_dir())
    except OSError:  # not there (yet) or not readable: the build names the problem
        return None
    count = 0
    for folder in folders:
        texts = sorted(f for f in folder.iterdir()
                       if f.is_file() and f.suffix.lower() == ".txt")
        count += any(roi.label in classes and len(roi.points_mm) >= min_points
                     for t in texts for roi in ild_io.parse_roi_file(t, folder.name)[0])
    return count


def units_of(labels: dict[str, dict[int, set[int]]], patient_disjoint: bool) -> Units:
    if patient_disjoint:
        return Units({pid: frozenset().union(*s.values()) for pid, s in labels.items()},
                     {pid: pid for pid in labels}, True)
    per_unit = {f"{pid}:{n}": frozenset(c) for pid, s in labels.items() for n, c in s.items()}
    return Units(per_unit, {u: u.rsplit(":", 1)[0] for u in per_unit}, False)


def slices_per_fold(labels: dict[str, dict[int, set[int]]], units: Units, folds: Folds,
                    n_classes: int) -> dict[str, list[int]]:
    """Fold -> annotated slices per class among its test units, a slice counted once for
    each class it carries: what Shin's Table I averages over five patient folds."""
    out = {str(fold): [0] * n_classes for fold in range(1, folds.k + 1)}
    for unit, fold in folds.fold_of.items():
        if unit not in units.labels:  # a given folds.csv may list units without ROIs
            continue
        per_slice = labels[units.patient_of[unit]]
        slices = (per_slice.values() if units.patient_disjoint
                  else [per_slice[int(unit.rsplit(":", 1)[1])]])
        for classes in slices:
            for c in classes:
                out[str(fold)][c] += 1
    return out


def outer_folds(units: Units, split: str, k: int, seed: int,
                weights: dict[str, float]) -> Folds:
    """CV-k by patients (each to the fold with the least `weights`, e.g. annotated slices,
    as `medtl data ild` deals them), leave-one-patient-out, or Slice-Random."""
    if split == "cv5":
        return patient_folds(list(units.labels), k, seed, weights=weights)
    if split == "loo":
        return leave_one_out(list(units.labels))
    if split == "slice_random":
        return random_item_folds(dict(units.patient_of), k, seed)
    raise FoldError(f"unknown split {split!r}")


def read_outer_folds(path: Path, units: Units) -> Folds:
    """A user's folds.csv as the outer split; every unit needs a fold."""
    folds = read_folds(path)
    if folds.patient_disjoint != units.patient_disjoint:
        want = "patients" if units.patient_disjoint else "slices (<patient>:<slice>)"
        raise FoldError(f"{path}: the split deals {want}, this file does not")
    missing = sorted(set(units.labels) - set(folds.fold_of))
    if missing:
        raise FoldError(f"{path}: unit {missing[0]} has no fold")
    return folds


def hold_out_validation(units: list[str], labels: dict[str, frozenset[int]], n_classes: int,
                        fraction: float, seed: list[int] | int) -> list[str]:
    """A seeded `fraction` of the training units for validation such that the validation
    and the remaining training units each hold every class (growing the part one unit at a
    time when no draw of that size does)."""
    units = sorted(units)
    n = len(units)
    everything = set(range(n_classes))

    def covers(chosen: list[str]) -> bool:
        return everything <= set().union(*(labels[u] for u in chosen))

    if n < 2:
        raise FoldError(f"{n} training unit(s): too few to hold out a validation set")
    if not covers(units):
        absent = sorted(everything - set().union(*(labels[u] for u in units)))
        raise FoldError(f"the training units lack class {absent[0]}")
    rng = np.random.default_rng(seed)
    for size in range(min(n - 1, max(1, round(fraction * n))), n):
        for _ in range(ATTEMPTS_PER_SIZE):
            pick = set(rng.choice(n, size, replace=False).tolist())
            val = [units[i] for i in sorted(pick)]
            rest = [units[i] for i in range(n) if i not in pick]
            if covers(val) and covers(rest):
                return val
    raise FoldError(f"no validation set of {n} training units leaves every class on both "
                    "sides (a class lies on a single unit)")


def write_build_folds(path: Path, groups: list[tuple[list[str], int]], units: Units) -> Path:
    """A folds.csv for one build: each group of units in its fold (atomically)."""
    fold_of = {u: fold for members, fold in groups for u in members}
    folds = Folds(fold_of, {u: units.patient_of[u] for u in fold_of}, units.patient_disjoint)
    with io.atomic_path(path) as tmp:
        write_folds(tmp, folds)
    return path


def blank_contours(lines: list[str], keep: set[int] | None) -> list[str]:
    """The ROI file's lines with every contour on a slice outside `keep` blanked (the reader
    skips blank lines, so the kept contours keep their line numbers)."""
    if keep is None:
        return list(lines)
    out: list[str] = []
    current: int | None = None
    n = 0
    while n < len(lines):
        m = _KEY.match(lines[n])
        key = m.group(1).lower() if m else ""
        if key == "slice_number":
            current = int(m.group(2))
        elif key == "nb_points_on_contour" and current not in keep:
            count = int(m.group(2))
            out.extend([""] * (count + 1))
            n += count + 1
            continue
        out.append(lines[n])
        n += 1
    return out


def write_filtered_source(patients: list[ild_io.IldPatient], keep: dict[str, set[int] | None],
                          dest: Path) -> Path:
    """The database restricted to `keep` (patient -> slices, None for all), at `dest`."""
    by_pid = {p.pid: p for p in patients}
    final = Path(dest).resolve()
    with atomic_dir(final) as tmp:  # beside `final`: links relative to it hold in both
        for pid, slices in sorted(keep.items()):
            patient = by_pid[pid]
            folder = tmp / pid
            folder.mkdir()
            for f in patient.slice_files:
                os.symlink(os.path.relpath(f.resolve(), final / pid), folder / f.name)
            for roi_file in patient.roi_files:
                lines = roi_file.read_text().splitlines()
                (folder / roi_file.name).write_text("\n".join(blank_contours(lines, slices))
                                                    + "\n")
    return Path(dest)
