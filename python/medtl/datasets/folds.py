"""Fold assignments (CV-k patient-disjoint, leave-one-patient-out, random by item), saved as
CSV and reused by every later step (training, evaluation, FROC)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtl.datasets.formats.table import table_rows
from medtl.errors import InputError

FOLDS_CSV = "folds.csv"
HEADER = ["unit", "patient_id", "fold"]


class FoldError(InputError):
    """A fold file that is malformed, or folds that share a patient."""


@dataclass(frozen=True)
class Folds:
    """`unit` -> fold (1-based). A unit is a patient, or one item (slice) for random splits."""

    fold_of: dict[str, int]
    patient_of: dict[str, str]
    patient_disjoint: bool

    @property
    def k(self) -> int:
        return max(self.fold_of.values())

    def units(self, fold: int) -> list[str]:
        return sorted(u for u, f in self.fold_of.items() if f == fold)

    def patients(self, fold: int) -> set[str]:
        return {self.patient_of[u] for u in self.units(fold)}

    def check_disjoint(self) -> None:
        """Raise when two folds hold the same patient (only for patient-disjoint splits)."""
        seen: dict[str, int] = {}
        for unit, fold in self.fold_of.items():
            patient = self.patient_of[unit]
            if seen.setdefault(patient, fold) != fold:
                raise FoldError(f"patient {patient} is in folds {seen[patient]} and {fold}")


def patient_folds(patients: list[str], k: int, seed: int,
                  weights: dict[str, float] | None = None) -> Folds:
    """Patients dealt into k folds: seeded order, then each patient to the lightest fold
    (by `weights`, e.g. positives per patient, else by patient count)."""
    patients = sorted(set(patients))
    if k < 2:
        raise FoldError(f"need at least 2 folds, got {k}")
    if len(patients) < k:
        raise FoldError(f"{len(patients)} patients cannot fill {k} folds")
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    if weights:
        order.sort(key=lambda p: -weights.get(p, 0.0))  # stable: seeded order breaks ties
    load = [0.0] * k
    size = [0] * k
    fold_of = {}
    for p in order:
        f = min(range(k), key=lambda i: (load[i], size[i], i))
        fold_of[p] = f + 1
        load[f] += (weights or {}).get(p, 0.0)
        size[f] += 1
    return Folds(fold_of, {p: p for p in patients}, True)


def leave_one_out(patients: list[str]) -> Folds:
    patients = sorted(set(patients))
    return Folds({p: i + 1 for i, p in enumerate(patients)}, {p: p for p in patients}, True)


def random_item_folds(items: dict[str, str], k: int, seed: int) -> Folds:
    """Items (id -> patient) dealt into k folds at random, patients ignored (Slice-Random)."""
    ids = sorted(items)
    if len(ids) < k:
        raise FoldError(f"{len(ids)} items cannot fill {k} folds")
    perm = np.random.default_rng(seed).permutation(len(ids))
    fold_of = {ids[j]: (rank % k) + 1 for rank, j in enumerate(perm)}
    return Folds(fold_of, dict(items), False)


def write_folds(path: Path, folds: Folds) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for unit in sorted(folds.fold_of, key=lambda u: (folds.fold_of[u], u)):
            w.writerow([unit, folds.patient_of[unit], folds.fold_of[unit]])
    return Path(path)


def read_folds(path: Path) -> Folds:
    """Read and validate a folds CSV (header unit,patient_id,fold; folds 1..k all used)."""
    path = Path(path)
    fold_of: dict[str, int] = {}
    patient_of: dict[str, str] = {}
    for n, (unit, patient, fold) in table_rows(path, HEADER, FoldError):
        try:
            fold_n = int(fold)
        except ValueError as exc:
            raise FoldError(f"{path}:{n}: fold {fold!r} is not an integer") from exc
        if fold_n < 1:
            raise FoldError(f"{path}:{n}: folds are numbered from 1")
        if unit in fold_of:
            raise FoldError(f"{path}:{n}: unit {unit} listed twice")
        fold_of[unit], patient_of[unit] = fold_n, patient
    if not fold_of:
        raise FoldError(f"{path}: no rows")
    missing = sorted(set(range(1, max(fold_of.values()) + 1)) - set(fold_of.values()))
    if missing:
        raise FoldError(f"{path}: fold {missing[0]} has no units")
    disjoint = all(u == p for u, p in patient_of.items())
    folds = Folds(fold_of, patient_of, disjoint)
    if disjoint:
        folds.check_disjoint()
    return folds
