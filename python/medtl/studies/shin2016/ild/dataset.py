"""Shin et al. 2016 ILD datasets (slice level and patch level) -> Caffe LMDB or HDF5.

Every CT value becomes RGB through three windows (lung -> R, high attenuation -> G, low
attenuation -> B; Sec. II, Fig. 4), stored in Caffe's channel order: low, high, lung
(`medtl.datasets.channels`). Slice level: each annotated slice sampled 12 times with random
rotations and translations, classes balanced by per-class sampling rates, 512 -> 256.
Patch level: up to 100 patches per ROI whose area lies mostly inside the ROI polygon,
resampled to 256. Splits: CV5 (patient-disjoint), LOO (one patient per fold) and
Slice-Random (slices dealt into 5 folds regardless of patient).

Layout: fold<f>/{train,test}_<size>_{lmdb,hdf5}, train means, test index CSVs, folds.csv,
manifest.json. Multi-label slices are either replicated once per label (LMDB, softmax) or
stored with a multi-hot label vector (HDF5, sigmoid).
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import polygon as fill_polygon

from medtl import config
from medtl.config import option
from medtl.datasets.channels import channel_notes, to_caffe
from medtl.datasets.dbset import DatabaseSet, DbSpec
from medtl.datasets.folds import (
    FOLDS_CSV,
    Folds,
    leave_one_out,
    patient_folds,
    random_item_folds,
    read_folds,
    write_folds,
)
from medtl.datasets.formats.dicom import DicomError, read_ct_slice_headers
from medtl.datasets.formats.resize import resize
from medtl.datasets.manifest import Manifest
from medtl.datasets.views import window_to_uint8
from medtl.io import atomic_dir
from medtl.progress import bar
from medtl.provenance import assumed, paper
from medtl.studies.shin2016.ild import reader as ild_io

S2 = "Shin 2016 Sec. II"
S4B = "Shin 2016 Sec. IV-B"
PAD_HU = -1024.0
WINDOW_NAMES = ("lung", "high-attenuation", "low-attenuation")  # R, G, B
CHANNELS_SOURCE = ("Shin 2016 Fig. 4: 'We encode the lung/high-attenuation/low-attenuation CT "
                   "windowing into red/green/blue channels'")


@dataclass(frozen=True)
class IldConfig:
    level: str = option("slice", "slice: whole axial slices; patch: patches inside ROIs",
                        choices=("slice", "patch"))
    split: str = option("cv5", "cv5 (patient-disjoint), loo (leave one patient out), "
                        "slice_random (slices dealt at random)",
                        paper("cv5", f"{S2}: five folds of disjoint patients; LOO (Table VI) "
                              "and Slice-Random (Table IV) also reported"),
                        choices=("cv5", "loo", "slice_random"))
    folds: int = option(5, "folds of cv5 and slice_random", paper(5, f"{S2}: five folds"))
    seed: int = option(0, "seed of folds, augmentations, patch positions, key order")
    folds_csv: str | None = option(None, "reuse this folds.csv instead of drawing folds")
    only_folds: tuple[int, ...] = option((), "build only these folds (all when empty)")
    classes: tuple[str, ...] = option(
        ild_io.SIX_CLASSES, "ROI labels kept, in label order (others are skipped)",
        paper(ild_io.SIX_CLASSES, f"{S2}: NM, EM, GG, FB, MN, CD"))
    windows: tuple[tuple[float, float], ...] = option(
        ((-1400.0, -200.0), (-160.0, 240.0), (-1400.0, -950.0)), "HU windows for R, G, B",
        paper(((-1400.0, -200.0), (-160.0, 240.0), (-1400.0, -950.0)),
              f"{S2}: lung, high-attenuation and low-attenuation windows -> R, G, B"))
    prior: str = option("equal", "equal: classes balanced by sampling rates; biased: not",
                        paper("equal", f"{S2}; Sec. IV-D compares 'equal' and 'biased'"),
                        choices=("equal", "biased"))
    augmentations_per_slice: int = option(
        12, "random rotation + translation samples per training slice",
        paper(12, f"{S2}: slices sampled 12 times with random translations and rotations"))
    max_rotation_deg: float = option(
        15.0, "slice augmentation: rotation uniform in +-this",
        assumed(15.0, "Shin gives no range; small rotations keep the anatomy plausible"))
    max_translation_frac: float = option(
        0.05, "slice augmentation: shift uniform in +-this fraction of the slice side",
        assumed(0.05, "Shin gives no range; +-25 pixels of a 512 slice"))
    multi_label: str = option(
        "replicate", "slices with several labels: one record per label (LMDB, softmax) or "
        "one multi-hot record (HDF5, sigmoid)",
        assumed("replicate", "Shin reports single-label accuracy for slices that can carry "
                "several labels (Sec. II) without saying how; one record per label"),
        choices=("replicate", "multi_hot"))
    slice_size: int = option(256, "slice side written",
                             paper(256, f"{S4B}: 512 x 512 slices re-sampled to 256 x 256"))
    patch_size: int = option(
        64, "patch side in slice pixels (32: the 32 x 32 reading of Table IV's F-scores, "
        "experiments/shin2016/ild_patch32_cv5.yaml)",
        paper(64, f"{S2}: 'up to 100 patches of size 64x64 from each ROI'; {S4B}, on Table "
              "IV: 'F1-scores are reported on patch classification only (32x32 pixel patches "
              "extracted from manual ROIs) [38], [39], [54]', of the cited works or of "
              "Patch-CV5"))
    patches_per_roi: int = option(100, "patches drawn per ROI (fewer where fewer fit)",
                                  paper(100, f"{S2}: up to 100 patches per ROI"))
    patch_min_roi_fraction: float = option(
        0.75, "a patch's area inside its ROI polygon, at least",
        assumed(0.75, "Shin says patches are sampled 'from each ROI' without a rule; most of "
                "the patch inside the polygon"))
    patch_output_size: int = option(256, "patch side written",
                                    paper(256, f"{S4B}: patches re-sampled to 256 x 256"))
    backend: str = option("lmdb", "lmdb, or hdf5 (float32; required for multi_hot)",
                          choices=("lmdb", "hdf5"))
    degenerate_rois: str = option("skip", "ROIs with fewer than 3 points or no room for a "
                                  "patch: skip (counted) or error", choices=("skip", "error"))

    def __post_init__(self) -> None:
        if self.multi_label == "multi_hot" and self.backend != "hdf5":
            raise ValueError("multi_label=multi_hot needs backend=hdf5 (an LMDB Datum holds one "
                             "integer label)")
        if len(self.windows) != 3 or any(lo >= hi for lo, hi in self.windows):
            raise ValueError(f"windows must be three increasing (lo, hi) pairs, got "
                             f"{self.windows}")
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ValueError("classes must be distinct and non-empty")
        if not 0 < self.patch_min_roi_fraction <= 1:
            raise ValueError("patch_min_roi_fraction must be in (0, 1]")


@dataclass(frozen=True)
class _Item:
    """An annotated slice, or (patch level) a patch position in one ROI."""

    uid: str            # unit id for Slice-Random: "<patient>:<slice>"
    patient: int
    slice_number: int
    labels: tuple[int, ...]
    roi: int = -1
    y: int = -1
    x: int = -1


def to_rgb(hu: np.ndarray, windows) -> np.ndarray:
    """The picture of Fig. 4: one window per channel, R, G, B."""
    return np.stack([window_to_uint8(hu, w) for w in windows])


def to_input(hu: np.ndarray, windows, size: int) -> np.ndarray:
    """The stored record: the picture in Caffe's channel order (R in channel 2), resized."""
    return resize(to_caffe(to_rgb(hu, windows)), size)


def augment(hu: np.ndarray, angle_deg: float, shift: np.ndarray) -> np.ndarray:
    """Rotate about the slice centre and shift (pixels), bilinear, air outside."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    centre = (np.array(hu.shape) - 1) / 2.0
    offset = centre - rot @ (centre + shift)
    return ndimage.affine_transform(hu, rot, offset=offset, order=1, cval=PAD_HU,
                                    output=np.float32)


def _aug_params(cfg: IldConfig, uid: str, k: int, size: int) -> tuple[float, np.ndarray]:
    rng = np.random.default_rng([cfg.seed, 31, zlib.crc32(uid.encode()), k])
    angle = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)
    shift = rng.uniform(-cfg.max_translation_frac, cfg.max_translation_frac, 2) * size
    return angle, shift


def _roi_mask(roi: ild_io.Roi, shape: tuple[int, int]) -> np.ndarray:
    px = roi.pixels()
    mask = np.zeros(shape, bool)
    rr, cc = fill_polygon(px[:, 1], px[:, 0], shape)
    mask[rr, cc] = True
    return mask


def patch_centres(mask: np.ndarray, size: int, min_fraction: float) -> np.ndarray:
    """(n, 2) rows/columns of the top-left corners of every size x size patch inside the
    image with at least `min_fraction` of its area in `mask`."""
    h, w = mask.shape
    if h < size or w < size:
        return np.zeros((0, 2), int)
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    area = (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size]
            + integral[:-size, :-size])
    ys, xs = np.nonzero(area >= min_fraction * size * size)
    return np.stack([ys, xs], 1)


def _slice_shape(path: Path) -> tuple[int, int]:
    try:
        return read_ct_slice_headers([path])[0].shape
    except DicomError as exc:
        raise ild_io.IldDataError(str(exc)) from exc


def _make_folds(cfg: IldConfig, patients: list[ild_io.IldPatient], slice_units: dict[str, str],
                weights: dict[str, float]) -> Folds:
    pids = [p.pid for p in patients]
    if cfg.folds_csv is not None:
        folds = read_folds(cfg.folds_csv)
        units = set(pids) if folds.patient_disjoint else set(slice_units)
        missing = sorted(units - set(folds.fold_of))
        if missing:
            raise ild_io.IldDataError(f"{cfg.folds_csv}: unit {missing[0]} has no fold")
        return folds
    if cfg.split == "cv5":
        return patient_folds(pids, cfg.folds, cfg.seed, weights=weights)
    if cfg.split == "loo":
        return leave_one_out(pids)
    return random_item_folds(slice_units, cfg.folds, cfg.seed)


class _Planner:
    """Records per database: (item index, augmentation, label, rank)."""

    def __init__(self, cfg: IldConfig, items: list[_Item], fold_of_item: np.ndarray,
                 patients: list[ild_io.IldPatient]) -> None:
        self.cfg = cfg
        self.items = items
        self.fold_of_item = fold_of_item
        self.patients = patients

    def _label_value(self, item: _Item, label: int | None):
        if self.cfg.multi_label == "multi_hot" and self.cfg.level == "slice":
            vec = np.zeros(len(self.cfg.classes), np.float32)
            vec[list(item.labels)] = 1
            return tuple(vec.tolist())
        return label

    def _units(self, idx: np.ndarray) -> list[tuple[int, int | None]]:
        """(item, label) pairs: one per label when replicating, else one per item."""
        out = []
        for i in idx:
            item = self.items[i]
            if self.cfg.level == "slice" and self.cfg.multi_label == "multi_hot":
                out.append((int(i), None))
            else:
                out.extend((int(i), lab) for lab in item.labels)
        return out

    def _classes_of(self, unit: tuple[int, int | None]) -> tuple[int, ...]:
        i, lab = unit
        return self.items[i].labels if lab is None else (lab,)

    def train(self, fold: int) -> list[tuple[int, int, object, int]]:
        cfg = self.cfg
        idx = np.nonzero(self.fold_of_item != fold)[0]
        units = self._units(idx)
        counts = Counter(c for u in units for c in self._classes_of(u))
        for c, name in enumerate(cfg.classes):
            if counts[c] == 0:
                what = "slices" if cfg.level == "slice" else "patches"
                raise ild_io.IldDataError(f"empty class: the training set of fold {fold} has "
                                          f"no {name} {what}")
        base = cfg.augmentations_per_slice if cfg.level == "slice" else 1
        copies = {u: base for u in units}
        if cfg.prior == "equal":
            # every class sampled up to the largest one; a multi-hot slice at the rate of
            # its rarest class (patches of rarer classes are repeated)
            target = base * max(counts.values())
            by_class: dict[int, list] = defaultdict(list)
            for u in units:
                by_class[min(self._classes_of(u), key=lambda c: counts[c])].append(u)
            for c, members in by_class.items():
                total = round(target * len(members) / counts[c])
                each, extra = divmod(total, len(members))
                lucky = set(np.random.default_rng([cfg.seed, 21, fold, c]).permutation(
                    len(members))[:extra].tolist())
                for j, u in enumerate(members):
                    copies[u] = each + (1 if j in lucky else 0)
        records = []
        for (i, lab), n in copies.items():
            for k in range(n):
                # a patch is the same image however often it is repeated: render it once
                aug = k if cfg.level == "slice" else 0
                records.append((i, aug, self._label_value(self.items[i], lab), 0))
        order = np.random.default_rng([cfg.seed, 11, fold]).permutation(len(records))
        return [(i, k, lab, int(r)) for (i, k, lab, _), r in zip(records, order, strict=True)]

    def test(self, fold: int) -> list[tuple[int, int, object, int]]:
        idx = np.nonzero(self.fold_of_item == fold)[0]
        units = self._units(idx)
        if not units:
            raise ild_io.IldDataError(f"fold {fold} has no test items")
        return [(i, -1, self._label_value(self.items[i], lab), r)
                for r, (i, lab) in enumerate(units)]


def _slice_items(cfg, patients, manifest) -> list[_Item]:
    items = []
    for pi, p in enumerate(patients):
        labels: dict[int, set[int]] = defaultdict(set)
        for roi in p.rois:
            if roi.label in cfg.classes:
                labels[roi.slice_number].add(cfg.classes.index(roi.label))
            else:
                manifest.skip(f"ROI label not among the classes: {roi.label}")
        for s in sorted(labels):
            items.append(_Item(f"{p.pid}:{s}", pi, s, tuple(sorted(labels[s]))))
    return items


def _patch_items(cfg, patients, manifest, rois_out: list[ild_io.Roi]) -> list[_Item]:
    items = []
    for pi, p in enumerate(patients):
        shape = _slice_shape(p.slice_files[0])
        for roi in p.rois:
            if roi.label not in cfg.classes:
                manifest.skip(f"ROI label not among the classes: {roi.label}")
                continue
            if len(roi.points_mm) < 3:
                if cfg.degenerate_rois == "error":
                    raise ild_io.IldDataError(f"{roi.where}: ROI polygon with "
                                              f"{len(roi.points_mm)} points (3 needed)")
                manifest.skip("ROI polygon with fewer than 3 points")
                continue
            corners = patch_centres(_roi_mask(roi, shape), cfg.patch_size,
                                    cfg.patch_min_roi_fraction)
            if len(corners) == 0:
                if cfg.degenerate_rois == "error":
                    raise ild_io.IldDataError(f"{roi.where}: no {cfg.patch_size}-pixel patch "
                                              "fits inside this ROI")
                manifest.skip("ROI with no room for a patch")
                continue
            rng = np.random.default_rng([cfg.seed, 41, zlib.crc32(roi.id.encode())])
            pick = rng.choice(len(corners), min(cfg.patches_per_roi, len(corners)),
                              replace=False)
            r = len(rois_out)
            rois_out.append(roi)
            label = cfg.classes.index(roi.label)
            for y, x in corners[np.sort(pick)]:
                items.append(_Item(f"{p.pid}:{roi.slice_number}", pi, roi.slice_number,
                                   (label,), r, int(y), int(x)))
    return items


def build(root: Path, dest: Path, cfg: IldConfig, *, progress: bool = True) -> Path:
    """Build the dataset at `dest` (atomically) from the database at `root`."""
    root, dest = Path(root), Path(dest).resolve()
    patients = ild_io.scan(root)
    manifest = Manifest(
        dataset=f"shin2016-ild-{cfg.level}-{cfg.split}", generator_module=__name__,
        seed=cfg.seed, config=config.to_dict(cfg), protocol=config.protocol_values(cfg),
        classes=list(cfg.classes))
    for p in patients:
        if p.unknown_keys:
            manifest.skip("ROI file line with an unknown key", p.unknown_keys)
    rois: list[ild_io.Roi] = []
    items = (_slice_items(cfg, patients, manifest) if cfg.level == "slice"
             else _patch_items(cfg, patients, manifest, rois))
    if not items:
        raise ild_io.IldDataError(f"{root}: no ROI of the classes {cfg.classes}")
    slice_units = {it.uid: patients[it.patient].pid for it in items}
    weights = Counter(patients[it.patient].pid for it in items)
    folds = _make_folds(cfg, patients, slice_units, {k: float(v) for k, v in weights.items()})
    if folds.patient_disjoint:
        folds.check_disjoint()
        fold_of_item = np.array([folds.fold_of[patients[it.patient].pid] for it in items])
    else:
        fold_of_item = np.array([folds.fold_of[it.uid] for it in items])
    build_folds = sorted(cfg.only_folds) or list(range(1, folds.k + 1))
    bad = [f for f in build_folds if not 1 <= f <= folds.k]
    if bad:
        raise ild_io.IldDataError(f"only_folds: fold {bad[0]} outside 1..{folds.k}")
    planner = _Planner(cfg, items, fold_of_item, patients)
    plans = {}
    for f in build_folds:
        plans[(f, "train")] = planner.train(f)
        plans[(f, "test")] = planner.test(f)
    size = cfg.slice_size if cfg.level == "slice" else cfg.patch_output_size
    label_shape = ((len(cfg.classes),) if cfg.multi_label == "multi_hot" and cfg.level == "slice"
                   else ())
    columns = (("patient_id", "slice", "labels", "label") if cfg.level == "slice"
               else ("patient_id", "slice", "roi", "label", "row", "col"))
    with atomic_dir(dest) as tmp:
        dbs = DatabaseSet(tmp, dest, manifest)
        try:
            for (f, role), records in plans.items():
                dbs.add(DbSpec(_db_name(f, role, size, cfg.backend), cfg.backend, role, f,
                               len(records), (3, size, size),
                               dtype="uint8" if cfg.backend == "lmdb" else "float32",
                               label_shape=label_shape, mean=role == "train",
                               index_columns=columns if role == "test" else ()))
            dicom_notes = {p.pid: list(p.notes) for p in patients}
            _render_all(cfg, patients, items, rois, plans, dbs, size, manifest, root,
                        dicom_notes, progress=progress)
            dbs.close()
        except BaseException:
            dbs.abort()
            raise
        write_folds(tmp / FOLDS_CSV, folds)
        manifest.folds_file = FOLDS_CSV
        if cfg.folds_csv is not None:
            manifest.add_source(Path(cfg.folds_csv), root)
        manifest.counts = _counts(cfg, patients, items, fold_of_item, folds.k)
        windows = [f"{name} window [{lo:g}, {hi:g}] HU"
                   for name, (lo, hi) in zip(WINDOW_NAMES, cfg.windows, strict=True)]
        manifest.notes = {**channel_notes(*windows, CHANNELS_SOURCE),
                          "slice_numbering": "1-based, InstanceNumber order"}
        if any(dicom_notes.values()):   # DICOM files skipped, padding read as air
            manifest.notes["dicom"] = {pid: n for pid, n in dicom_notes.items() if n}
        manifest.write(tmp)
    return dest


def _db_name(fold: int, role: str, size: int, backend: str) -> str:
    return f"fold{fold}/{role}_{size}_{backend}"


def _render_all(cfg, patients, items, rois, plans, dbs, size, manifest, root, dicom_notes, *,
                progress):
    # patient -> slice -> (item, aug) -> [(db, rank, label)]
    work: dict[int, dict[int, dict[tuple[int, int], list]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for (f, role), records in plans.items():
        name = _db_name(f, role, size, cfg.backend)
        for i, k, label, rank in records:
            it = items[i]
            work[it.patient][it.slice_number][(i, k)].append((name, rank, label))
    total = sum(len(v) for s in work.values() for v in s.values())
    pbar = bar(total, f"ILD {cfg.level}s", enabled=progress, unit="img")
    try:
        for pi in sorted(work):
            patient = patients[pi]
            for path in patient.roi_files:
                manifest.add_source(path, root)
            for s, jobs in sorted(work[pi].items()):
                path = patient.slice_files[s - 1]
                try:
                    hu, _ = ild_io.read_slice(path, dicom_notes[patient.pid])
                except DicomError as exc:
                    raise ild_io.IldDataError(str(exc)) from exc
                manifest.add_source(path, root)
                for (i, k), targets in jobs.items():
                    image = _render(cfg, hu, items[i], k, size)
                    if cfg.backend == "hdf5":
                        image = image.astype(np.float32)
                    it = items[i]
                    for name, rank, label in targets:
                        row = None
                        if name.split("/")[1].startswith("test"):
                            names = "|".join(cfg.classes[c] for c in it.labels)
                            lab = "" if isinstance(label, tuple) else label
                            row = ([patient.pid, s, names, lab] if cfg.level == "slice" else
                                   [patient.pid, s, rois[it.roi].id, lab, it.y, it.x])
                        dbs.put(name, rank, image, label, patient.pid, row)
                    pbar.update(1)
    finally:
        pbar.close()


def _render(cfg: IldConfig, hu: np.ndarray, item: _Item, k: int, size: int) -> np.ndarray:
    if cfg.level == "slice":
        if k >= 0:
            angle, shift = _aug_params(cfg, item.uid, k, hu.shape[0])
            hu = augment(hu, angle, shift)
        return to_input(hu, cfg.windows, size)
    p = cfg.patch_size
    return to_input(hu[item.y:item.y + p, item.x:item.x + p], cfg.windows, size)


def _counts(cfg, patients, items, fold_of_item, k) -> dict:
    per_fold = {}
    for f in range(1, k + 1):
        sel = [it for it, fi in zip(items, fold_of_item, strict=True) if fi == f]
        per_fold[str(f)] = {
            "patients": sorted({patients[it.patient].pid for it in sel}),
            "items_per_class": {cfg.classes[c]: n for c, n in sorted(
                Counter(c for it in sel for c in it.labels).items())},
        }
    return {"patients": len(patients),
            "items": len(items),
            "item": "slice" if cfg.level == "slice" else "patch position",
            "items_per_class": {cfg.classes[c]: n for c, n in sorted(
                Counter(c for it in items for c in it.labels).items())},
            "folds": per_fold}
