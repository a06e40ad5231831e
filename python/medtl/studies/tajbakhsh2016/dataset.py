"""Tajbakhsh et al. 2016 datasets from a candidate manifest: the engine shared by the polyp,
PE, frame-quality and intima-media applications (`apps/polyp.py`, `apps/pe.py`,
`apps/frames.py`, `apps/imt.py` supply the sampling and rendering).

Layout of a built dataset (LMDBs of 3 x 227 x 227 uint8 Datums, BGR):

    full/train_lmdb, full/train_mean.binaryproto   stratified training patches (80%)
    full/val_lmdb                                  stratified validation patches (20%)
    <reduction>/train_lmdb (+ mean)                training patches of a reduction, validated
                                                   on full/val_lmdb
    test_lmdb, test_index.csv                      every test patch of every test candidate,
                                                   in candidate order (average per candidate)
    splits.csv, reductions.csv, candidates.csv, manifest.json

Patches are stored at the network's input size (227, Table I): the augmentation is the
paper's own, so no Caffe crop or mirror should be added (a crop_size of 227 is a no-op).
"""

from __future__ import annotations

import csv
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medtl import config
from medtl.config import option
from medtl.datasets.dbset import DatabaseSet, DbSpec
from medtl.datasets.formats.candidates import Candidate, Schema, read_candidates
from medtl.datasets.formats.images import ImageError
from medtl.datasets.manifest import Manifest
from medtl.datasets.splits import (
    REDUCTIONS_CSV,
    SINGLE,
    SPLITS_CSV,
    Member,
    SplitError,
    read_splits,
    reduce,
    reduction_name,
    train_test,
    train_val,
    write_reductions,
    write_splits,
)
from medtl.io import atomic_dir
from medtl.progress import bar
from medtl.provenance import assumed, paper

SEC6 = "Tajbakhsh 2016 Sec. VI"
INDEX_COLUMNS = ("candidate_id", "patient_id", "label", "variant")
CHUNK = 128  # patches rendered per call


@dataclass(frozen=True)
class TajbakhshConfig:
    """Keys every Tajbakhsh application shares (each one overrides the defaults it sets)."""

    seed: int = option(0, "seed of splits, reductions, patch selection and key order")
    train_patches: int = option(1000, "stratified patches of the training data (training + "
                                "validation); each class equally present")
    val_fraction: float = option(0.2, "share of the training data held out for validation",
                                 paper(0.2, f"{SEC6}: 80% training, 20% validation"))
    test_fraction: float = option(
        0.5, "share of groups drawn for the test set when the manifest has no split column",
        assumed(0.5, "the paper's splits are roughly even (polyp 18,900 / 18,900 frames, "
                "frames 2,000 / 2,000, IMT 144 / 132 ROIs); a split column overrides it"))
    split_unit: str = option("group", "unit of the validation split and the reductions: "
                             "group, or candidate (one manifest row)",
                             choices=("group", "candidate"))
    reductions: list[float] = option([], "fractions of the training data kept, each its own "
                                     "training set")
    single_group: bool = option(False, "also build a training set from one group only")
    reduced_patches: str = option(
        "scale", "patches of a reduced training set: scale (by the share of units kept) or "
        "same (as many as the full set, drawn from fewer units)",
        assumed("scale", "the paper reduces 'the number of training samples'; with 'same' a "
                "reduction would only change the variety, not the amount"),
        choices=("scale", "same"))
    minority: str = option(
        "cap", "a class with fewer patches than its share: cap (every class down to it) or "
        "repeat (draw it again)",
        paper("cap", f"{SEC6}: 'randomly down-sampled the majority (negative) class, while "
              "keeping the minority class (positive) unchanged'"), choices=("cap", "repeat"))
    patch_size: int = option(227, "stored patch side (pixels)",
                             paper(227, "Tajbakhsh 2016 Table I: AlexNet input 3x227x227"))
    splits_csv: Path | None = option(None, "reuse a splits.csv (candidate_id,group,role) "
                                     "instead of drawing the splits")
    build_test: bool = option(True, "write the test patches (test_lmdb, test_index.csv)")

    def __post_init__(self) -> None:
        if self.train_patches < 2:
            raise ValueError(f"train_patches must be at least 2, got {self.train_patches}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must lie in (0, 1), got {self.test_fraction}")
        bad = [f for f in self.reductions if not 0 < f < 1]
        if bad:
            raise ValueError(f"reductions must be fractions in (0, 1), got {bad[0]}")
        if len(set(self.reductions)) != len(self.reductions):
            raise ValueError("reductions lists a fraction twice")
        if self.patch_size < 8:
            raise ValueError(f"patch_size must be at least 8, got {self.patch_size}")


class Application(Protocol):
    """What an application adds to the engine."""

    name: str                      # e.g. "polyp"
    classes: tuple[str, ...]
    schema: Schema
    test_columns: tuple[str, ...]  # columns describing a test variant in test_index.csv

    def check(self, cands: list[Candidate]) -> list[Candidate]: ...
    def pools(self, cand: Candidate) -> tuple[int, ...]: ...
    def test_count(self, cand: Candidate) -> int: ...
    def load(self, image: Path, jobs: list[tuple[Candidate, str, int, np.ndarray]]) -> Any: ...
    def render(self, source: Any, cand: Candidate, stream: str, cls: int,
               indices: np.ndarray) -> np.ndarray: ...
    def test_values(self, cand: Candidate, variant: int) -> list[Any]: ...
    def source_of(self, image: Path, source: Any) -> tuple[str | None, str, int]: ...
    def notes(self) -> dict[str, Any]: ...  # with medtl.datasets.channels' channel notes
    def extra_files(self, directory: Path, cands: list[Candidate],
                    role: dict[str, str]) -> dict[str, Any]: ...


def stream_rng(seed: int, stream: str, key: str) -> np.random.Generator:
    """An independent, reproducible random stream per (seed, purpose, candidate)."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode()), zlib.crc32(key.encode())])


# ------------------------------------------------------------------ planning

@dataclass
class Plan:
    """The records of one database: candidate index, class, index into that candidate's
    class pool (or test variant), and rank (the LMDB key)."""

    role: str
    cand: np.ndarray
    cls: np.ndarray
    local: np.ndarray
    rank: np.ndarray
    requested: dict[str, int]
    pool: dict[str, int]

    def __len__(self) -> int:
        return len(self.cand)


def _per_class(target: int, n_classes: int) -> list[int]:
    base, rem = divmod(target, n_classes)
    return [base + (1 if c < rem else 0) for c in range(n_classes)]


def stratified(pools: np.ndarray, idx: np.ndarray, target: int, rng: np.random.Generator,
               minority: str, classes: tuple[str, ...], what: str) -> Plan:
    """`target` patches from the pools of candidates `idx`, the classes equally present."""
    sub = pools[idx]
    totals = sub.sum(0)
    empty = [classes[c] for c in range(len(classes)) if totals[c] == 0]
    if empty:
        raise SplitError(f"{what}: no {empty[0]!r} patches (its candidates hold none of that "
                         "class); change the split, the reduction or the data")
    want = _per_class(target, len(classes))
    if minority == "cap":
        low = int(totals.min())
        want = [min(w, low) for w in want]
    cand, cls, local = [], [], []
    for c, n in enumerate(want):
        holders = idx[sub[:, c] > 0]
        counts = pools[holders, c]
        ends = np.cumsum(counts)
        total = int(ends[-1])
        if n <= total:
            picks = np.sort(rng.choice(total, n, replace=False))
        else:  # minority == "repeat": every patch, then again
            picks = np.sort(np.concatenate([np.tile(np.arange(total), n // total),
                                            rng.choice(total, n % total, replace=False)]))
        owner = np.searchsorted(ends, picks, side="right")
        cand.append(holders[owner])
        cls.append(np.full(n, c))
        local.append(picks - (ends[owner] - counts[owner]))
    cand_a, cls_a, local_a = (np.concatenate(x).astype(np.int64) for x in (cand, cls, local))
    rank = rng.permutation(len(cand_a))
    return Plan("", cand_a, cls_a, local_a, rank,
                {classes[c]: int(n) for c, n in enumerate(want)},
                {classes[c]: int(t) for c, t in enumerate(totals)})


def _test_plan(app: Application, cands: list[Candidate], idx: np.ndarray) -> Plan:
    counts = np.array([app.test_count(cands[i]) for i in idx], dtype=np.int64)
    cand = np.repeat(idx, counts)
    local = np.concatenate([np.arange(n) for n in counts]) if len(counts) else np.zeros(0, int)
    cls = np.array([cands[i].label for i in cand], dtype=np.int64)
    per = Counter(app.classes[c] for c in cls)
    return Plan("test", cand, cls, local.astype(np.int64), np.arange(len(cand)),
                dict(per), dict(per))


def _roles(cands: list[Candidate], cfg: TajbakhshConfig) -> dict[str, str]:
    members = [Member(c.candidate_id, c.group, c.split, c.where, c.label) for c in cands]
    if cfg.splits_csv is not None:
        role, group = read_splits(cfg.splits_csv)
        for m in members:
            if m.candidate_id not in role:
                raise SplitError(f"{cfg.splits_csv}: candidate {m.candidate_id!r} ({m.where}) "
                                 "has no role")
            if group[m.candidate_id] != m.group:
                raise SplitError(f"{cfg.splits_csv}: candidate {m.candidate_id!r} is in group "
                                 f"{group[m.candidate_id]!r} there, {m.group!r} at {m.where}")
        return {m.candidate_id: role[m.candidate_id] for m in members}
    side = train_test(members, cfg.test_fraction, cfg.seed)
    training = [m for m in members if side[m.candidate_id] == "train"]
    role = dict(side)
    role.update(train_val(training, cfg.val_fraction, cfg.seed, cfg.split_unit))
    return role


def plan_dataset(app: Application, cands: list[Candidate], cfg: TajbakhshConfig
                 ) -> tuple[dict[str, str], dict[str, list[str]], dict[str, Plan]]:
    """Roles, reductions (name -> kept ids) and the plan of every database."""
    role = _roles(cands, cfg)
    pools = np.array([app.pools(c) for c in cands], dtype=np.int64).reshape(
        len(cands), len(app.classes))
    pos = {c.candidate_id: i for i, c in enumerate(cands)}
    by_role = {r: np.array([i for i, c in enumerate(cands) if role[c.candidate_id] == r],
                           dtype=np.int64) for r in ("train", "val", "test")}
    for r in ("train", "val"):
        if len(by_role[r]) == 0:
            raise SplitError(f"the {r} set would be empty")
    n_train = round(cfg.train_patches * (1 - cfg.val_fraction))
    n_val = cfg.train_patches - n_train
    plans: dict[str, Plan] = {}

    def add(name: str, r: str, idx: np.ndarray, target: int) -> None:
        rng = np.random.default_rng([cfg.seed, zlib.crc32(name.encode())])
        p = stratified(pools, idx, target, rng, cfg.minority, app.classes, name)
        p.role = r
        plans[name] = p

    add("full/train_lmdb", "train", by_role["train"], n_train)
    add("full/val_lmdb", "val", by_role["val"], n_val)
    training = [Member(cands[i].candidate_id, cands[i].group, label=cands[i].label)
                for i in by_role["train"]]
    reductions: dict[str, list[str]] = {}
    wanted: list[float | str] = [*sorted(cfg.reductions, reverse=True)]
    if cfg.single_group:
        wanted.append(SINGLE)
    for fraction in wanted:
        name = reduction_name(fraction)
        kept = reduce(training, fraction, cfg.seed, cfg.split_unit)
        reductions[name] = kept
        share = len(kept) / len(training)
        target = n_train if cfg.reduced_patches == "same" else max(2, round(n_train * share))
        add(f"{name}/train_lmdb", "train", np.array([pos[k] for k in kept]), target)
    if cfg.build_test and len(by_role["test"]):
        plan = _test_plan(app, cands, by_role["test"])
        if len(plan):
            plans["test_lmdb"] = plan
    return role, reductions, plans


# ------------------------------------------------------------------ building

def build(manifest_csv: Path, dest: Path, app: Application, cfg: TajbakhshConfig, *,
          progress: bool = True) -> Path:
    """Build the dataset at `dest` (atomically) from the candidate manifest."""
    manifest_csv, dest = Path(manifest_csv), Path(dest).resolve()
    cands = app.check(read_candidates(manifest_csv, app.schema))
    role, reductions, plans = plan_dataset(app, cands, cfg)
    manifest = Manifest(dataset=f"tajbakhsh2016-{app.name}", generator_module=app.__module__,
                        seed=cfg.seed, config=config.to_dict(cfg),
                        protocol=config.protocol_values(cfg), classes=list(app.classes))
    root = manifest_csv.resolve().parent
    with atomic_dir(dest) as tmp:
        dbs = DatabaseSet(tmp, dest, manifest)
        try:
            s = cfg.patch_size
            for name, plan in plans.items():
                test = name == "test_lmdb"
                dbs.add(DbSpec(name, "lmdb", plan.role, None, len(plan), (3, s, s),
                               mean=plan.role == "train",
                               index_columns=(*INDEX_COLUMNS, *app.test_columns) if test
                               else ()))
            _render_all(app, cands, plans, dbs, manifest, root, progress)
            dbs.close()
        except BaseException:
            dbs.abort()
            raise
        manifest.add_source(manifest_csv, root)
        write_splits(tmp / SPLITS_CSV, [Member(c.candidate_id, c.group) for c in cands], role)
        group_of = {c.candidate_id: c.group for c in cands}
        write_reductions(tmp / REDUCTIONS_CSV, reductions, group_of)
        _write_candidates(tmp / "candidates.csv", app, cands, role)
        extra = app.extra_files(tmp, cands, role)
        manifest.counts = _counts(app, cands, role, reductions, plans)
        manifest.notes = {
            "stored_size": f"{cfg.patch_size} = the net input: add no crop_size or mirror, "
                           "the paper's augmentation is in the data",
            "validation": "full/val_lmdb validates every training set, reductions included",
            "test_index": "rank -> candidate; average a candidate's patch probabilities",
            "splits_file": SPLITS_CSV, "reductions_file": REDUCTIONS_CSV,
            "manifest_csv": str(manifest_csv.resolve()),
            **app.notes(), **extra,
        }
        manifest.write(tmp)
    return dest


def _render_all(app: Application, cands: list[Candidate], plans: dict[str, Plan],
                dbs: DatabaseSet, manifest: Manifest, root: Path, progress: bool) -> None:
    # training sets: (candidate, class) -> pool index -> [(db, rank)]; a patch drawn for
    # several sets (full and reduced) is rendered once
    jobs: dict[tuple[int, int], dict[int, list[tuple[str, int]]]] = defaultdict(
        lambda: defaultdict(list))
    for name, plan in plans.items():
        if name != "test_lmdb":
            for ci, c, loc, r in zip(plan.cand, plan.cls, plan.local, plan.rank, strict=True):
                jobs[(int(ci), int(c))][int(loc)].append((name, int(r)))
    by_image: dict[Path, list[tuple[int, str, int]]] = defaultdict(list)
    for ci, c in jobs:
        by_image[cands[ci].image].append((ci, "train", c))
    # the test set: every variant of each test candidate, at consecutive ranks
    first: dict[int, int] = {}
    test = plans.get("test_lmdb")
    if test is not None:
        for rank, ci in enumerate(test.cand):
            first.setdefault(int(ci), rank)
        for ci in first:
            by_image[cands[ci].image].append((ci, "test", int(cands[ci].label)))
    total = sum(len(v) for v in jobs.values()) + (len(test) if test is not None else 0)
    pbar = bar(total, f"{app.name} patches", enabled=progress, unit="patch")
    try:
        for image in sorted(by_image):
            keys = sorted(by_image[image])
            work = [(cands[ci], stream, c,
                     np.arange(app.test_count(cands[ci])) if stream == "test"
                     else np.array(sorted(jobs[(ci, c)])))
                    for ci, stream, c in keys]
            try:
                source = app.load(image, work)
            except ImageError as exc:
                raise ImageError(f"{work[0][0].where}: {exc}") from None
            sha, kind, files = app.source_of(image, source)
            manifest.add_source(image, root, sha256=sha, kind=kind, files=files)
            for (ci, stream, c), (cand, _, _, wanted) in zip(keys, work, strict=True):
                for start in range(0, len(wanted), CHUNK):
                    part = wanted[start:start + CHUNK]
                    patches = app.render(source, cand, stream, c, part)
                    for patch, loc in zip(patches, part, strict=True):
                        if stream == "test":
                            row = [cand.candidate_id, cand.group, c, int(loc),
                                   *app.test_values(cand, int(loc))]
                            dbs.put("test_lmdb", first[ci] + int(loc), patch, c, cand.group,
                                    row)
                            continue
                        for name, rank in jobs[(ci, c)][int(loc)]:
                            dbs.put(name, rank, patch, c, cand.group)
                    pbar.update(len(part))
            del source
    finally:
        pbar.close()


def _write_candidates(path: Path, app: Application, cands: list[Candidate],
                      role: dict[str, str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["candidate_id", "group", "role", "label", "class", "image", "where"])
        for c in cands:
            label = "" if c.label is None else c.label
            name = "" if c.label is None else app.classes[c.label]
            w.writerow([c.candidate_id, c.group, role[c.candidate_id], label, name, c.image,
                        c.where])


def _counts(app: Application, cands: list[Candidate], role: dict[str, str],
            reductions: dict[str, list[str]], plans: dict[str, Plan]) -> dict[str, Any]:
    per_role: dict[str, dict[str, Any]] = {}
    for r in ("train", "val", "test"):
        members = [c for c in cands if role[c.candidate_id] == r]
        labels = Counter(app.classes[c.label] for c in members if c.label is not None)
        per_role[r] = {"candidates": len(members), "groups": len({c.group for c in members}),
                       "candidates_per_class": dict(sorted(labels.items()))}
    group_of = {c.candidate_id: c.group for c in cands}
    n_train = sum(1 for c in cands if role[c.candidate_id] == "train")
    return {
        "roles": per_role,
        "reductions": {name: {"candidates": len(ids), "groups": len({group_of[i] for i in ids}),
                              "share_of_training_units": round(len(ids) / max(1, n_train), 4)}
                       for name, ids in reductions.items()},
        "databases": {name: {"records": len(p), "requested_per_class": p.requested,
                             "available_per_class": p.pool,
                             "candidates": len(np.unique(p.cand))}
                      for name, p in plans.items()},
    }



def iter_patches(app: Application, cands: list[Candidate], *, batch: int = CHUNK
                 ) -> Iterator[tuple[Candidate, np.ndarray, np.ndarray]]:
    """(candidate, variant indices, n x 3 x S x S uint8 patches) for every test variant of
    `cands`, image by image, without writing anything: the test set rendered on the fly
    (the same patches test_lmdb holds), for sets too large to store."""
    by_image: dict[Path, list[Candidate]] = defaultdict(list)
    for c in cands:
        by_image[c.image].append(c)
    for image in sorted(by_image):
        work = [(c, "test", int(c.label), np.arange(app.test_count(c)))
                for c in by_image[image]]
        source = app.load(image, work)
        for cand, _, cls, wanted in work:
            for start in range(0, len(wanted), batch):
                part = wanted[start:start + batch]
                yield cand, part, app.render(source, cand, "test", cls, part)
