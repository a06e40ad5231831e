"""Splits and reductions of a candidate set (Tajbakhsh 2016), all seeded, saved as CSV.

- training / test: by group (video, patient, subject), from the manifest's `split` column or
  drawn here (Sec. VI: "divided at the video / patient / subject level");
- training / validation: 80% / 20% of the training data (Sec. VI), by group, or by unit
  (one manifest row, each class keeping its share) where an application has too few groups;
- reductions of the training part: nested prefixes of one seeded order of groups (a 25%
  reduction is part of the 50% one), or a single group. A reduction never splits a group.

`splits.csv`: candidate_id,group,role (train / val / test).
`reductions.csv`: reduction,candidate_id,group (the units each reduction keeps).
"""

from __future__ import annotations

import csv
import math
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medtl.datasets.formats.table import table_rows
from medtl.errors import InputError

ROLES = ("train", "val", "test")
SINGLE = "single_group"
SPLITS_CSV = "splits.csv"
REDUCTIONS_CSV = "reductions.csv"
Unit = Literal["group", "candidate"]


class SplitError(InputError):
    """A split that would put one group on both sides, or a malformed split file."""


@dataclass(frozen=True)
class Member:
    candidate_id: str
    group: str
    split: str | None = None     # the manifest's train / test, if given
    where: str = ""
    label: int | None = None     # by-candidate splits keep each class's share


def _seeded(items: Sequence[str], seed: int, stream: str) -> list[str]:
    items = sorted(set(items))
    perm = np.random.default_rng([seed, zlib.crc32(stream.encode())]).permutation(len(items))
    return [items[i] for i in perm]


def _by_label(members: Sequence[Member]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for m in members:
        out[str(m.label)].append(m.candidate_id)
    return dict(sorted(out.items()))


def train_test(members: Sequence[Member], test_fraction: float, seed: int) -> dict[str, str]:
    """candidate_id -> "train" / "test". The manifest's split column wins (every group on one
    side); without it, groups in seeded order go to test until `test_fraction` of them."""
    given = [m for m in members if m.split is not None]
    if given:
        side: dict[str, Member] = {}
        for m in members:
            first = side.setdefault(m.group, m)
            if first.split != m.split:
                raise SplitError(f"{m.where}: group {m.group!r} is in {m.split} here and in "
                                 f"{first.split} at {first.where}: a group must stay on one "
                                 "side of the training / test split")
        return {m.candidate_id: m.split for m in members}
    groups = _seeded([m.group for m in members], seed, "test")
    if len(groups) < 2:
        raise SplitError(f"one group ({groups[0]!r}) cannot be split into training and test; "
                         "give the manifest a split column")
    n_test = min(len(groups) - 1, max(1, round(test_fraction * len(groups))))
    test = set(groups[:n_test])
    return {m.candidate_id: "test" if m.group in test else "train" for m in members}


def _take_groups(order: list[str], sizes: dict[str, int], fraction: float) -> list[str]:
    """Groups from the front of `order` until they hold `fraction` of the units (>= 1 group)."""
    total = sum(sizes.values())
    target = fraction * total
    kept, held = [], 0
    for g in order:
        if kept and held >= target - 1e-9:
            break
        kept.append(g)
        held += sizes[g]
    return kept


def train_val(members: Sequence[Member], val_fraction: float, seed: int, by: Unit = "group"
              ) -> dict[str, str]:
    """Training members -> "train" / "val" (`val_fraction` of the units go to validation)."""
    if not members:
        return {}
    if by == "candidate":
        val: set[str] = set()
        for label, ids in _by_label(members).items():
            ids = _seeded(ids, seed, f"val-{label}")
            n_val = max(1, round(val_fraction * len(ids))) if len(ids) > 1 else 0
            val.update(ids[:n_val])
        if len(val) in (0, len(members)):
            raise SplitError(f"{len(members)} training candidates cannot be split into "
                             "training and validation")
        return {m.candidate_id: "val" if m.candidate_id in val else "train" for m in members}
    sizes: dict[str, int] = defaultdict(int)
    for m in members:
        sizes[m.group] += 1
    if len(sizes) < 2:
        raise SplitError(f"the training data hold one group ({next(iter(sizes))!r}); a "
                         "group-level validation split needs two (or split_unit=candidate)")
    order = _seeded(list(sizes), seed, "val")
    val_groups = _take_groups(order, sizes, val_fraction)
    if len(val_groups) == len(order):
        val_groups = val_groups[:-1]
    val = set(val_groups)
    return {m.candidate_id: "val" if m.group in val else "train" for m in members}


def reduction_name(fraction: float | str) -> str:
    if fraction == SINGLE:
        return SINGLE
    return f"reduced_{float(fraction) * 100:g}pct".replace(".", "p")


def reduce(members: Sequence[Member], fraction: float | str, seed: int, by: Unit = "group"
           ) -> list[str]:
    """The candidate ids a reduction keeps: the front of one seeded order holding `fraction`
    of the units (whole groups when by="group"), or the first group for SINGLE."""
    if not members:
        return []
    if by == "candidate" and fraction != SINGLE:
        keep: set[str] = set()
        for label, ids in _by_label(members).items():
            ids = _seeded(ids, seed, f"reduce-{label}")
            keep.update(ids[:max(1, math.ceil(float(fraction) * len(ids) - 1e-9))])
        return [m.candidate_id for m in members if m.candidate_id in keep]
    sizes: dict[str, int] = defaultdict(int)
    for m in members:
        sizes[m.group] += 1
    order = _seeded(list(sizes), seed, "reduce")
    groups = set(order[:1] if fraction == SINGLE else _take_groups(order, sizes,
                                                                   float(fraction)))
    return [m.candidate_id for m in members if m.group in groups]


def write_splits(path: Path, members: Sequence[Member], role: dict[str, str]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["candidate_id", "group", "role"])
        for m in sorted(members, key=lambda m: (ROLES.index(role[m.candidate_id]), m.group,
                                                m.candidate_id)):
            w.writerow([m.candidate_id, m.group, role[m.candidate_id]])
    return Path(path)


def write_reductions(path: Path, kept: dict[str, list[str]], group_of: dict[str, str]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["reduction", "candidate_id", "group"])
        for name, ids in kept.items():
            for cid in sorted(ids, key=lambda c: (group_of[c], c)):
                w.writerow([name, cid, group_of[cid]])
    return Path(path)


def read_splits(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(candidate_id -> role, candidate_id -> group) from a splits.csv, checked: roles known,
    no group in both the training data (train, val) and the test set."""
    path = Path(path)
    role, group, side_of = {}, {}, {}
    for n, (cid, g, r) in table_rows(path, ["candidate_id", "group", "role"], SplitError):
        if r not in ROLES:
            raise SplitError(f"{path}:{n}: role {r!r} is not one of {', '.join(ROLES)}")
        if cid in role:
            raise SplitError(f"{path}:{n}: candidate {cid!r} listed twice")
        side = "test" if r == "test" else "training"
        if side_of.setdefault(g, (side, n))[0] != side:
            raise SplitError(f"{path}:{n}: group {g!r} is in the {side} set here and in the "
                             f"{side_of[g][0]} set at line {side_of[g][1]}")
        role[cid], group[cid] = r, g
    return role, group
