"""Shin et al. 2016 lymph-node datasets: 2.5D views of CADe candidates -> Caffe LMDBs.

For one region (mediastinum or abdomen, built separately as in Sec. IV-A), per fold of a
patient-disjoint k-fold split (k = 3):

    fold<f>/train_<s>_lmdb     views of the other folds' candidates, shuffled keys, label 1/0
    fold<f>/train_<s>_mean.binaryproto
    fold<f>/test_<s>_lmdb      N views per candidate of fold f, in candidate order
    fold<f>/test_<s>_index.csv rank -> candidate id, patient, label, world x y z, view, node
    folds.csv, candidates.csv, nodes.csv, manifest.json

for each output size s (64 for -L models, 256 bilinear for -H, 32 for CifarNet). Views are
drawn per candidate from a seed of their own, so a view is the same in every fold that uses it
and is rendered once; volumes are read one patient at a time. A view is the RGB picture of
Fig. 1 (axial R, coronal G, sagittal B) stored in Caffe's channel order: sagittal, coronal,
axial (`medtl.datasets.channels`).
"""

from __future__ import annotations

import csv
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtl import config
from medtl.config import option
from medtl.datasets.channels import channel_notes, to_caffe
from medtl.datasets.dbset import DatabaseSet, DbSpec
from medtl.datasets.folds import FOLDS_CSV, patient_folds, read_folds, write_folds
from medtl.datasets.formats import bspline
from medtl.datasets.formats.dicom import DicomError, read_series
from medtl.datasets.formats.resize import resize
from medtl.datasets.manifest import Manifest
from medtl.datasets.views import ViewParams, ViewSampler, draw_params
from medtl.io import atomic_dir
from medtl.progress import bar
from medtl.provenance import assumed, paper
from medtl.studies.shin2016.ln import tcia as tcia_ln

S2 = "Shin 2016 Sec. II"
S4A = "Shin 2016 Sec. IV-A"
TRAIN, TEST = 1, 2  # random streams of the view parameters
INDEX_COLUMNS = ("candidate_id", "patient_id", "label", "x", "y", "z", "view", "node")
CHANNELS_SOURCE = (f"{S2} / Fig. 1: 'axial, coronal, and sagittal views encoded in RGB color "
                   "images' (axial R, coronal G, sagittal B)")


@dataclass(frozen=True)
class LnConfig:
    region: str = option("med", "med (MED_LYMPH_xxx) or abd (ABD_LYMPH_xxx); each region is "
                         "its own dataset", choices=("med", "abd"))
    seed: int = option(0, "seed of folds, view parameters, negative re-selection, key order")
    folds: int = option(3, "number of patient-disjoint folds",
                        paper(3, f"{S4A}: three-fold CV, folds of disjoint patients"))
    folds_csv: str | None = option(None, "reuse this folds.csv instead of drawing folds")
    only_folds: tuple[int, ...] = option((), "build only these folds (all when empty)")
    annotations_dir: str | None = option(None, "default <root>/MED_ABD_LYMPH_ANNOTATIONS")
    candidates_dir: str | None = option(None, "default <root>/MED_ABD_LYMPH_CANDIDATES")
    candidates_csv: str | None = option(None, "CSV patient_id,x,y,z,label[,candidate_id] "
                                         "replacing the TCIA CADe candidate files")
    train_positives: str = option(
        "candidates", "training positives: CADe true candidates, annotated centres, or both",
        assumed("candidates", "Shin samples around 'annotated and detected LN centers' (Sec. "
                "II) without saying which are trained on; the CADe true candidates match what "
                "is tested"), choices=("candidates", "annotations", "both"))
    fov_mm: tuple[float, float] = option(
        (35.0, 128.0), "range of the view side (mm); [30, 45] is Roth et al.'s variant",
        paper((35.0, 128.0), f"{S2}: FOVs spanning 35 mm to 128 mm"))
    max_translation_mm: float = option(
        3.0, "views' centres move up to this far from the candidate",
        assumed(3.0, "Shin gives no range; Roth's released pipeline translates up to 3 mm"))
    rotate: bool = option(
        True, "random 3D rotation of each view's frame (uniform on SO(3))",
        assumed(True, "Shin: views in 'randomly resampled coordinates' (Sec. II); the "
                "distribution is not given, uniform rotations assumed"))
    train_views_per_candidate: int = option(
        200, "random views per training candidate",
        paper(200, f"{S2}: each candidate sampled up to 200 times"))
    test_views_per_candidate: int = option(
        50, "random views per test candidate (probabilities averaged)",
        assumed(50, "Shin gives no number; Roth's released pipeline defaults make 2 scales x 5 "
                "translations x 5 rotations = 50 views"))
    prior: str = option("equal", "equal: negatives re-selected to about the positives; biased: "
                        "all negative views kept",
                        paper("equal", f"{S2}; Sec. IV-D compares 'equal' and 'biased' priors"),
                        choices=("equal", "biased"))
    negatives_per_positive: float = option(
        1.0, "equal prior: negative views kept per positive view",
        assumed(1.0, "Sec. II: negatives re-selected 'at a rate close to the total number of "
                "positives'"))
    hu_window: tuple[float, float] = option(
        (-100.0, 200.0), "HU mapped linearly to 0..255",
        paper((-100.0, 200.0), f"{S2}: soft-tissue window [-100, 200] HU"))
    view_size: int = option(64, "pixels per side of each sampled plane",
                            paper(64, f"{S2}: rescaled to 64 x 64 by B-spline interpolation"))
    output_sizes: tuple[int, ...] = option(
        (64,), "sizes written: 64 (-L), 256 (-H, bilinear), 32 (CifarNet, area average)",
        paper((64,), f"{S4A}: 64 x 64 for -L, up-sampled bilinearly to 256 x 256 for -H, "
              "down-sampled to 32 x 32 for CifarNet"))
    val_fraction: float = option(
        0.2, "fraction of each fold's training patients held out as its validation set",
        assumed(0.2, "Shin gives the LN runs no validation set or snapshot rule (Sec. III-C: "
                "30 epochs); the kit keeps the lowest-validation-loss snapshot as in the ILD "
                "runs (Sec. IV-C), validated on a patient-disjoint fifth of the training "
                "patients"))
    val_views_per_candidate: int = option(
        10, "views per validation candidate (training views, equal/biased prior as training)",
        assumed(10, "not given; enough views for a stable validation loss at a fraction of "
                "the training cost"))
    pad_hu: float = option(-1024.0, "HU of whatever a view sees outside the scanned volume",
                           assumed(-1024.0, "outside the scan is taken as air"))
    points_outside: str = option("error", "a node or candidate outside its volume: error, or "
                                 "skip and count it", choices=("error", "skip"))
    geometry_check: str = option(
        "error", "a _lymphnodes_indices.txt that fits neither the 0- nor the 1-based convention "
        "(over 1 voxel from its physical point): error stops the build; warn builds on, prints "
        "the alarm and records it in the manifest", choices=tcia_ln.GEOMETRY_CHECKS)

    def __post_init__(self) -> None:
        lo, hi = self.fov_mm
        if not 0 < lo <= hi:
            raise ValueError(f"fov_mm must satisfy 0 < min <= max, got {self.fov_mm}")
        if self.hu_window[0] >= self.hu_window[1]:
            raise ValueError(f"hu_window must be increasing, got {self.hu_window}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if min(self.train_views_per_candidate, self.test_views_per_candidate,
               self.val_views_per_candidate) < 1:
            raise ValueError("views per candidate must be at least 1")
        if not self.output_sizes or any(s < 1 for s in self.output_sizes):
            raise ValueError(f"output_sizes must be positive, got {self.output_sizes}")
        if self.folds < 2 and self.folds_csv is None:
            raise ValueError("folds must be at least 2")


@dataclass(frozen=True)
class _Cand:
    cand: tcia_ln.Candidate
    patient_index: int
    train: bool     # may be a training sample
    test: bool      # is scored at test time


def _stream_rng(seed: int, stream: int, cand_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, stream, zlib.crc32(cand_id.encode())])


def view_params(cfg: LnConfig, cand_id: str, stream: int, n: int) -> ViewParams:
    """The first n views of a candidate in a stream (a prefix of the same draws for any n)."""
    return draw_params(_stream_rng(cfg.seed, stream, cand_id), n, cfg.fov_mm,
                       cfg.max_translation_mm, cfg.rotate)


def _validate_points(patients: list[tcia_ln.LnPatient], cfg: LnConfig, manifest: Manifest
                     ) -> None:
    for p in patients:
        inside = p.geometry.inside(p.nodes) if len(p.nodes) else np.zeros(0, bool)
        for ok, where in zip(inside, p.node_where, strict=True):
            if not ok:
                if cfg.points_outside == "error":
                    raise tcia_ln.LnDataError(f"{where}: node centre outside the volume of "
                                              f"{p.pid}")
                manifest.skip("node outside its volume")
        keep = []
        for c in p.candidates:
            if p.geometry.inside(np.array(c.world))[0]:
                keep.append(c)
            elif cfg.points_outside == "error":
                raise tcia_ln.LnDataError(f"{c.where}: candidate outside the volume of {p.pid}")
            else:
                manifest.skip("candidate outside its volume")
        p.candidates = keep
        if not inside.all():
            p.nodes = p.nodes[inside]
            p.node_where = [w for w, ok in zip(p.node_where, inside, strict=True) if ok]
            p.node_sizes = [s for s, ok in zip(p.node_sizes, inside, strict=True) if ok]


def _candidate_table(patients: list[tcia_ln.LnPatient], cfg: LnConfig) -> list[_Cand]:
    table = []
    for pi, p in enumerate(patients):
        use_cands = cfg.train_positives in ("candidates", "both")
        for c in p.candidates:
            table.append(_Cand(c, pi, train=(c.label == 0 or use_cands), test=True))
        if cfg.train_positives in ("annotations", "both"):
            for n, (xyz, where) in enumerate(zip(p.nodes, p.node_where, strict=True)):
                cid = f"{p.pid}:node:{where.rsplit(':', 1)[1]}"
                ann = tcia_ln.Candidate(cid, p.pid, tuple(xyz), 1, "annotation", where, n)
                table.append(_Cand(ann, pi, train=True, test=False))
    return table


@dataclass
class _Plan:
    """Per database: candidate index, view index and rank of every record."""

    cand: np.ndarray
    view: np.ndarray
    rank: np.ndarray


def val_patients(fold_of_patient: np.ndarray, fold: int, cfg: LnConfig) -> np.ndarray:
    """Indices of the patients that validate fold `fold`: a seeded share of its training ones."""
    training = np.flatnonzero(fold_of_patient != fold)
    n = min(len(training) - 1, max(1, round(cfg.val_fraction * len(training))))
    if n < 1:
        raise tcia_ln.LnDataError(f"fold {fold} has too few training patients to hold out "
                                  "a validation patient")
    return np.sort(np.random.default_rng([cfg.seed, 13, fold]).choice(training, n,
                                                                       replace=False))


def _train_plan(table: list[_Cand], fold_of_patient: np.ndarray, fold: int, cfg: LnConfig,
                role: str = "train") -> _Plan:
    """Training (or, with role "val", validation) views of fold `fold`, in shuffled order."""
    held_out = set(val_patients(fold_of_patient, fold, cfg).tolist())
    wanted = (lambda pi: pi in held_out) if role == "val" else (
        lambda pi: fold_of_patient[pi] != fold and pi not in held_out)
    v = cfg.val_views_per_candidate if role == "val" else cfg.train_views_per_candidate
    idx = np.array([i for i, c in enumerate(table) if c.train and wanted(c.patient_index)],
                   dtype=np.int64)
    labels = np.array([table[i].cand.label for i in idx], dtype=np.int64)
    pos, neg = idx[labels == 1], idx[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        which = "positive" if len(pos) == 0 else "negative"
        name = "training" if role == "train" else "validation"
        raise tcia_ln.LnDataError(f"empty class: the {name} set of fold {fold} has no "
                                  f"{which} candidates")
    pos_c, pos_v = np.repeat(pos, v), np.tile(np.arange(v), len(pos))
    neg_c, neg_v = np.repeat(neg, v), np.tile(np.arange(v), len(neg))
    if cfg.prior == "equal":
        keep = min(len(neg_c), round(cfg.negatives_per_positive * len(pos_c)))
        stream = 7 if role == "train" else 17
        pick = np.sort(np.random.default_rng([cfg.seed, stream, fold]).choice(
            len(neg_c), keep, replace=False))
        neg_c, neg_v = neg_c[pick], neg_v[pick]
    cand = np.concatenate([pos_c, neg_c])
    view = np.concatenate([pos_v, neg_v])
    order_stream = 11 if role == "train" else 19
    rank = np.random.default_rng([cfg.seed, order_stream, fold]).permutation(len(cand))
    return _Plan(cand, view, rank)


def _test_plan(table: list[_Cand], fold_of_patient: np.ndarray, fold: int, cfg: LnConfig
               ) -> _Plan:
    v = cfg.test_views_per_candidate
    idx = np.array([i for i, c in enumerate(table)
                    if c.test and fold_of_patient[c.patient_index] == fold], dtype=np.int64)
    if len(idx) == 0:
        raise tcia_ln.LnDataError(f"fold {fold} has no test candidates")
    cand, view = np.repeat(idx, v), np.tile(np.arange(v), len(idx))
    return _Plan(cand, view, np.arange(len(cand)))


def _db_name(fold: int, role: str, size: int) -> str:
    return f"fold{fold}/{role}_{size}_lmdb"


def _write_tables(root: Path, patients: list[tcia_ln.LnPatient], table: list[_Cand],
                  fold_of_patient: np.ndarray) -> None:
    with open(root / "candidates.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["candidate_id", "patient_id", "fold", "label", "x", "y", "z", "source",
                    "node", "train", "test", "where"])
        for c in table:
            k = c.cand
            w.writerow([k.id, k.patient, int(fold_of_patient[c.patient_index]), k.label,
                        *(f"{v:.4f}" for v in k.world), k.source,
                        "" if k.node is None else k.node, int(c.train), int(c.test), k.where])
    with open(root / "nodes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "node", "fold", "x", "y", "z", "sizes_mm", "where"])
        for pi, p in enumerate(patients):
            for n, (xyz, where) in enumerate(zip(p.nodes, p.node_where, strict=True)):
                sizes = " ".join(f"{s:g}" for s in p.node_sizes[n]) if p.node_sizes else ""
                w.writerow([p.pid, n, int(fold_of_patient[pi]), *(f"{v:.4f}" for v in xyz),
                            sizes, where])


def build(root: Path, dest: Path, cfg: LnConfig, *, progress: bool = True) -> Path:
    """Build the dataset at `dest` (atomically) from the collection at `root`."""
    root, dest = Path(root), Path(dest).resolve()
    patients = tcia_ln.scan(root, cfg.region, annotations_dir=cfg.annotations_dir,
                            candidates_dir=cfg.candidates_dir,
                            candidates_csv=cfg.candidates_csv,
                            geometry_check=cfg.geometry_check)
    manifest = Manifest(
        dataset=f"shin2016-ln-{cfg.region}", generator_module=__name__, seed=cfg.seed,
        config=config.to_dict(cfg), protocol=config.protocol_values(cfg),
        classes=["false candidate", "lymph node"])
    _validate_points(patients, cfg, manifest)
    pids = [p.pid for p in patients]
    if cfg.folds_csv is not None:
        folds = read_folds(cfg.folds_csv)
        missing = sorted(set(pids) - set(folds.fold_of))
        if missing:
            raise tcia_ln.LnDataError(f"{cfg.folds_csv}: patient {missing[0]} has no fold")
        if not folds.patient_disjoint:
            raise tcia_ln.LnDataError(f"{cfg.folds_csv}: lymph-node folds must be by patient")
    else:
        positives = {p.pid: float(sum(c.label for c in p.candidates) + len(p.nodes))
                     for p in patients}
        folds = patient_folds(pids, cfg.folds, cfg.seed, weights=positives)
    folds.check_disjoint()
    fold_of_patient = np.array([folds.fold_of[pid] for pid in pids])
    build_folds = sorted(cfg.only_folds) or list(range(1, folds.k + 1))
    bad = [f for f in build_folds if not 1 <= f <= folds.k]
    if bad:
        raise tcia_ln.LnDataError(f"only_folds: fold {bad[0]} outside 1..{folds.k}")
    table = _candidate_table(patients, cfg)
    plans = {}
    for f in build_folds:
        plans[(f, "train")] = _train_plan(table, fold_of_patient, f, cfg)
        plans[(f, "val")] = _train_plan(table, fold_of_patient, f, cfg, role="val")
        plans[(f, "test")] = _test_plan(table, fold_of_patient, f, cfg)

    with atomic_dir(dest) as tmp:
        dbs = DatabaseSet(tmp, dest, manifest)
        try:
            for (f, role), plan in plans.items():
                for size in cfg.output_sizes:
                    dbs.add(DbSpec(_db_name(f, role, size), "lmdb", role, f, len(plan.cand),
                                   (3, size, size), mean=role == "train",
                                   index_columns=INDEX_COLUMNS if role == "test" else ()))
            dicom_notes = {p.pid: list(p.dicom_notes) for p in patients}
            _render_all(patients, table, plans, cfg, dbs, progress=progress, manifest=manifest,
                        root=root, dicom_notes=dicom_notes)
            dbs.close()
        except BaseException:
            dbs.abort()
            raise
        if cfg.folds_csv is not None:
            manifest.add_source(Path(cfg.folds_csv), root)
        write_folds(tmp / FOLDS_CSV, folds)
        manifest.folds_file = FOLDS_CSV
        _write_tables(tmp, patients, table, fold_of_patient)
        manifest.counts = _counts(patients, table, plans, fold_of_patient, folds.k)
        bases = Counter(p.index_base for p in patients if p.index_base is not None)
        manifest.notes = {
            "bspline_backend": bspline.backend(),
            **channel_notes("axial plane", "coronal plane", "sagittal plane", CHANNELS_SOURCE),
            "planes": "axial, coronal, sagittal: the planes of each view's rotated frame",
            "lymphnodes_indices_base": {str(k): v for k, v in sorted(bases.items())},
            "lymphnodes_indices_max_error_vox": max(
                (p.index_error_vox for p in patients if p.index_error_vox is not None),
                default=None),
            "geometry_warnings": [p.index_warning for p in patients if p.index_warning],
            "test_index": "rank -> candidate; average a candidate's view probabilities",
        }
        if any(dicom_notes.values()):   # DICOM files skipped, padding read as air
            manifest.notes["dicom"] = {pid: n for pid, n in dicom_notes.items() if n}
        manifest.write(tmp)
    return dest


def _render_all(patients, table, plans, cfg: LnConfig, dbs: DatabaseSet, *, progress: bool,
                manifest: Manifest, root: Path, dicom_notes: dict[str, list[str]]) -> None:
    by_patient: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(table):
        by_patient[c.patient_index].append(i)
    patient_of = np.array([c.patient_index for c in table])
    keys: dict[str, list[np.ndarray]] = defaultdict(list)
    for (_, role), plan in plans.items():
        keys[role].append(plan.cand * 1_000_003 + plan.view)
    total = sum(len(np.unique(np.concatenate(k))) for k in keys.values())
    pbar = bar(total, f"LN views ({cfg.region})", enabled=progress, unit="view")
    try:
        for pi, patient in enumerate(patients):
            # (stream, candidate) -> view -> [(fold, role, rank)]
            jobs: dict[tuple[int, int], dict[int, list]] = defaultdict(lambda: defaultdict(list))
            for (f, role), plan in plans.items():
                mask = patient_of[plan.cand] == pi
                stream = TEST if role == "test" else TRAIN
                for ci, v, r in zip(plan.cand[mask], plan.view[mask], plan.rank[mask],
                                    strict=True):
                    jobs[(stream, int(ci))][int(v)].append((f, role, int(r)))
            if not jobs:
                continue
            try:
                volume = read_series(patient.series_files)
            except DicomError as exc:
                raise tcia_ln.LnDataError(str(exc)) from exc
            dicom_notes[patient.pid].extend(volume.notes)
            manifest.add_source(patient.series_files[0].parent, root, sha256=volume.digest,
                                kind="dicom-series", files=len(patient.series_files))
            for path in patient.text_files:
                manifest.add_source(path, root)
            sampler = ViewSampler(volume.hu, volume.geometry, size=cfg.view_size,
                                  pad_hu=cfg.pad_hu)
            work = []
            for (stream, ci), views in jobs.items():
                # Training and validation views are prefixes of one draw per candidate.
                n = (max(cfg.train_views_per_candidate, cfg.val_views_per_candidate)
                     if stream == TRAIN else cfg.test_views_per_candidate)
                wanted = np.array(sorted(views))
                params = view_params(cfg, table[ci].cand.id, stream, n).take(wanted)
                work.append((ci, wanted, params, views))
            sampler.prepare(np.concatenate([np.repeat([table[ci].cand.world], len(w), 0)
                                            for ci, w, _, _ in work]),
                            ViewParams.concat([p for _, _, p, _ in work]))
            for ci, wanted, params, views in work:
                c = table[ci].cand
                images = to_caffe(sampler.render(np.repeat([c.world], len(wanted), 0),
                                                 params, cfg.hu_window), axis=1)
                for image, v in zip(images, wanted, strict=True):
                    resized = {s: resize(image, s) for s in cfg.output_sizes}
                    for f, role, rank in views[int(v)]:
                        row = None
                        if role == "test":
                            row = [c.id, c.patient, c.label, *(f"{x:.4f}" for x in c.world),
                                   int(v), "" if c.node is None else c.node]
                        for s in cfg.output_sizes:
                            dbs.put(_db_name(f, role, s), rank, resized[s], c.label,
                                    c.patient, row)
                pbar.update(len(wanted))
            del volume, sampler
    finally:
        pbar.close()


def _counts(patients, table, plans, fold_of_patient, k) -> dict:
    per_fold = {}
    for f in range(1, k + 1):
        in_fold = [p.pid for p, pf in zip(patients, fold_of_patient, strict=True) if pf == f]
        entry: dict = {"patients": in_fold,
                       "nodes": int(sum(len(p.nodes) for p, pf in
                                        zip(patients, fold_of_patient, strict=True) if pf == f)),
                       "test_candidates": Counter()}
        for c in table:
            if c.test and fold_of_patient[c.patient_index] == f:
                entry["test_candidates"][str(c.cand.label)] += 1
        entry["test_candidates"] = dict(sorted(entry["test_candidates"].items()))
        for role in ("train", "val"):
            if (f, role) in plans:
                plan = plans[(f, role)]
                labels = np.array([table[i].cand.label for i in plan.cand])
                entry[f"{role}_views"] = {"0": int((labels == 0).sum()),
                                          "1": int((labels == 1).sum())}
                entry[f"{role}_patients"] = sorted({table[i].cand.patient for i in plan.cand})
        per_fold[str(f)] = entry
    return {
        "patients": len(patients),
        "nodes": int(sum(len(p.nodes) for p in patients)),
        "candidates": {str(k): v for k, v in sorted(
            Counter(c.cand.label for c in table if c.test).items())},
        "candidates_per_patient": {p.pid: len(p.candidates) for p in patients},
        "folds": per_fold,
    }
