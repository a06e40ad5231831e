"""ChestX-ray14 for DenseNet-121 (Boit & Zeng 2019): 8-bit LMDB sets for Caffe's `Data` layer
(binary task), or HDF5 sets for `HDF5Data` (14-label task).

Each image: 1024 x 1024 PNG -> 256 x 256 (area average) -> 224 x 224 (the centre, or for
augmented copies the `augment_crop` one) -> gray in B, G and R. The binary task stores that as
uint8 Datums (3 x 224 x 224, 147 KiB a record; float32 took 588 KiB) with its 0/1 label, and
the nets' Data layer does the rest where Caffe reads it: transform_param mean_value (the
DenseNet-Caffe port's BGR mean) and scale (its 0.017; medtl.nets.densenet MEAN_BGR,
INPUT_SCALE). The manifest's `caffe_transform` note carries the two values to the run's nets.
A Datum holds one integer label, so the 14-label task keeps HDF5 files of float32 records
stored preprocessed (minus the mean, times the scale: HDF5Data has no transform_param) with
float label vectors. Augmented copies are rounded to whole gray levels before they are stored
as 8-bit.

    train/ (LMDB; multilabel: train/train.txt + train_NNN.h5)
                                       shuffled centre crops (`plain_train`): feature
                                       extraction, "without Data Augmentation"
    train_augmented/                   shuffled, `train_augmented_copies` Keras-augmented
                                       copies of each training image (`augmented_train`):
                                       fine-tuning, "with Data Augmentation"
    val/, test/                        in list order, never augmented
    <set>_index.csv                    rank -> image, patient, label(s), copy
    splits.csv                         image, patient, role (train / val / test)
    class_balance.csv                  images per finding (and binary class) per set
    missing_images.txt                 listed images without a PNG (a partial download)

The split (`split`): the official patient-level lists (train_val_list.txt / test_list.txt)
when both are there; without them, a seeded patient-level split from Patient ID
(`test_fraction` of the patients to test); the manifest's `split` note says which. The
validation patients are drawn from the rest. Listed images that are not on disk are left out,
counted on the console (one line) and in the manifest, and named in missing_images.txt.
Images are read one at a time (112,120 of them never sit in memory), written straight to
their rank's record.
"""

from __future__ import annotations

import csv
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medtl import config
from medtl.config import option
from medtl.datasets.channels import gray_notes
from medtl.datasets.dbset import DatabaseSet, DbSpec
from medtl.datasets.formats.images import ImageError, read_gray
from medtl.datasets.manifest import Manifest, sha256_file
from medtl.datasets.splits import SPLITS_CSV, Member, write_splits
from medtl.io import atomic_dir
from medtl.nets.densenet import INPUT_SCALE, MEAN_BGR
from medtl.progress import bar
from medtl.provenance import assumed
from medtl.studies.boit2019.augment import KerasAugment
from medtl.studies.boit2019.reader import (
    BBOX_LIST,
    FINDINGS,
    TEST_LIST,
    TRAIN_VAL_LIST,
    ChestXray14Error,
    Collection,
    Entry,
    scan,
)

GRAY_SOURCE = ("assumed: the ChestX-ray14 PNGs are gray and Boit 2019 does not say how the "
               "three input channels were filled; gray in all three, as Keras' "
               "load_img(color_mode='rgb') gives")

METHODS = "Boit & Zeng 2019 Methodology"
CHOLLET = ("Chollet, Deep Learning with Python Sec. 5.2.5 ImageDataGenerator example, the "
           "Keras recipe the poster follows")
ROLES = ("train", "val", "test")
TRAIN_AUGMENTED = "train_augmented"
BALANCE_CSV = "class_balance.csv"
MISSING_TXT = "missing_images.txt"
# 3: 8-bit LMDB for the binary task, the split built from Patient ID without the lists,
#    partial downloads accepted (2: train_augmented/ beside train/)
BUILDER_VERSION = 3


@dataclass(frozen=True)
class ChestXray14Config:
    seed: int = option(0, "seed of the validation patients, key order and augmentation")
    task: str = option("binary", "binary (one sigmoid) or multilabel (14 sigmoids)",
                       assumed("binary", "the poster reports binary accuracy and does not "
                               "define the task"), choices=("binary", "multilabel"))
    positive_findings: list[str] = option(
        [], "binary task: findings that make an image positive (empty: any finding)",
        assumed([], "'No Finding' vs any finding: the poster does not define the binary task"))
    binary_negatives: str = option(
        "rest", "binary task: negatives are every other image (rest) or only 'No Finding' "
        "images (no_finding; images with other findings are left out)",
        choices=("rest", "no_finding"))
    data_entry: str = option("auto", "Data_Entry file: auto (2017, else the 2020 revision), "
                             "2017, 2020, or a file name in the root")
    val_fraction: float = option(
        0.1, "share of the train_val patients held out for validation",
        assumed(0.1, "the poster gives no split; 10% of train_val_list.txt, by patient"))
    split: str = option(
        "auto", "auto: the official lists (train_val_list.txt, test_list.txt) when both are "
        "there, else a patient-level split from Patient ID; official: require the lists; "
        "patients: always split by Patient ID", choices=("auto", "official", "patients"))
    test_fraction: float = option(
        0.2, "split by Patient ID: share of the patients in the test set",
        assumed(0.2, "without the official lists; their test_list.txt holds 25,596 of the "
                "112,120 images (23%), and the poster gives no split"))
    view_positions: list[str] = option([], "keep only these View Positions (PA, AP; empty: "
                                       "all)")
    image_size: int = option(256, "side the PNGs are resized to (area average)",
                             assumed(256, "the DenseNet-Caffe port's ImageNet protocol: 224 "
                                     "crops of 256 images (the poster gives no size)"))
    crop_size: int = option(224, "side of the stored crop (the net input)",
                            assumed(224, "DenseNet-121's 224 x 224 input"))
    mean_bgr: tuple[float, float, float] = option(
        tuple(MEAN_BGR), "BGR mean subtracted", assumed(
            tuple(MEAN_BGR), "what the DenseNet-Caffe port's ImageNet weights expect "
            "(medtl.nets.densenet.MEAN_BGR)"))
    input_scale: float = option(INPUT_SCALE, "factor after the mean is subtracted", assumed(
        INPUT_SCALE, "the DenseNet-Caffe port's scale (medtl.nets.densenet.INPUT_SCALE)"))
    plain_train: bool = option(
        True, "build train/: each training image once, its centre crop (what feature "
        "extraction trains on: Boit & Zeng 2019 Results, 'Feature extraction without Data "
        "Augmentation'); a spec sets it from its configurations")
    augmented_train: bool = option(
        False, "build train_augmented/: Keras-augmented copies of each training image (what "
        "fine-tuning trains on: Boit & Zeng 2019 Results, 'Fine-tuning with Data "
        "Augmentation'); a spec sets it from its configurations")
    train_augmented_copies: int = option(
        1, "augmented copies of each training image in train_augmented/", assumed(
            1, "the poster gives none: one copy per image, so an epoch holds as many images "
            "as a Keras epoch over the training set; Keras draws new transforms every epoch, "
            "which stored copies cannot (with k copies an epoch is k passes)"), minimum=1)
    augment_crop: str = option(
        "random", "augmented copies: a random or the centre crop_size crop of the "
        "image_size image", assumed("random", "the poster gives no crop; a random crop, as "
                                    "the DenseNet port's ImageNet training crops (Keras' "
                                    "flow_from_directory resizes instead)"),
        choices=("random", "centre"))
    rotation_range: float = option(40.0, "augmentation: rotation range (degrees)",
                                   assumed(40.0, CHOLLET))
    width_shift_range: float = option(0.2, "augmentation: column shift (fraction)",
                                      assumed(0.2, CHOLLET))
    height_shift_range: float = option(0.2, "augmentation: row shift (fraction)",
                                       assumed(0.2, CHOLLET))
    shear_range: float = option(0.2, "augmentation: shear (degrees, keras_preprocessing)",
                                assumed(0.2, CHOLLET))
    zoom_range: float = option(0.2, "augmentation: zoom range", assumed(0.2, CHOLLET))
    horizontal_flip: bool = option(True, "augmentation: random horizontal flips",
                                   assumed(True, CHOLLET))
    fill_mode: str = option("nearest", "augmentation: fill outside the image",
                            assumed("nearest", f"{CHOLLET}; also Keras's default"),
                            choices=("nearest", "constant", "reflect", "wrap"))
    max_images: int = option(0, "per split, use only the first N listed images (0: all); "
                             "for demos")
    hash_images: bool = option(False, "record every PNG's sha256 in the manifest (reads "
                               "45 GB twice for the full set)")
    max_file_mb: int = option(1024, "largest HDF5 file, multilabel task (Caffe loads one "
                              "file at a time)")

    def __post_init__(self) -> None:
        unknown = [f for f in self.positive_findings if f not in FINDINGS]
        if unknown:
            raise ValueError(f"positive_findings: unknown finding {unknown[0]!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError("val_fraction must lie in (0, 1)")
        if not 0 < self.test_fraction < 1:
            raise ValueError("test_fraction must lie in (0, 1)")
        if not 0 < self.crop_size <= self.image_size:
            raise ValueError("need 0 < crop_size <= image_size")
        if self.train_augmented_copies < 1 or self.max_images < 0:
            raise ValueError("need train_augmented_copies >= 1 and max_images >= 0")
        if not (self.plain_train or self.augmented_train):
            raise ValueError("build a training set: plain_train or augmented_train")
        if self.task == "multilabel" and (self.positive_findings
                                          or self.binary_negatives != "rest"):
            raise ValueError("positive_findings / binary_negatives apply to the binary task")

    def augment(self) -> KerasAugment:
        return KerasAugment(self.rotation_range, self.width_shift_range,
                            self.height_shift_range, self.shear_range, self.zoom_range,
                            self.horizontal_flip, self.fill_mode)


def label_of(entry: Entry, cfg: ChestXray14Config) -> int | list[int] | None:
    """The task's label of an image; None when the binary task leaves it out."""
    if cfg.task == "multilabel":
        return entry.multi_hot()
    positives = set(cfg.positive_findings or FINDINGS)
    if positives & set(entry.findings):
        return 1
    if cfg.binary_negatives == "no_finding" and entry.findings:
        return None
    return 0


def backend(cfg: ChestXray14Config) -> str:
    """lmdb (8-bit, one integer label) for the binary task; hdf5 (float label vectors) for
    the 14-label one."""
    return "lmdb" if cfg.task == "binary" else "hdf5"


def _deal(patients: list[str], fraction: float, seed: int, salt: bytes) -> set[str]:
    """A seeded `fraction` of `patients` (at least one when there are two or more)."""
    perm = np.random.default_rng([seed, zlib.crc32(salt)]).permutation(len(patients))
    n = max(1, round(fraction * len(patients))) if len(patients) > 1 else 0
    return {patients[i] for i in perm[:n]}


def split_patients(col: Collection, cfg: ChestXray14Config) -> dict[str, str]:
    """Image -> role: test from test_list.txt (without the official lists: a seeded
    `test_fraction` of the patients); the other patients dealt to val at random."""
    role: dict[str, str] = {}
    train_val = col.train_val
    if not col.official:
        test = _deal(sorted(col.patients(col.train_val), key=int), cfg.test_fraction,
                     cfg.seed, b"test")
        role = {i: "test" for i in col.train_val if col.entries[i].patient in test}
        train_val = [i for i in col.train_val if i not in role]
    val = _deal(sorted(col.patients(train_val), key=int), cfg.val_fraction, cfg.seed, b"val")
    role.update({i: ("val" if col.entries[i].patient in val else "train") for i in train_val})
    role.update({i: "test" for i in col.test})
    return role


def split_note(col: Collection, cfg: ChestXray14Config) -> str:
    """The manifest's word on the split (never "official" unless the lists made it)."""
    if col.official:
        return (f"official patient-level lists ({TRAIN_VAL_LIST} / {TEST_LIST}); validation "
                "patients from train_val")
    why = ("split=patients" if cfg.split == "patients" else
           f"{TRAIN_VAL_LIST} and {TEST_LIST} absent")
    return (f"patient-level split built from Patient ID, not the official one ({why}): "
            f"seed {cfg.seed}, {cfg.test_fraction:g} of the patients to test, "
            f"{cfg.val_fraction:g} of the rest to validation; no patient in two sets")


@dataclass
class _Set:
    images: list[str]
    labels: list[Any]


@dataclass(frozen=True)
class _Db:
    """One database: its name (folder and manifest role), the split whose images it holds,
    and 0 (each image once, centre crop) or k augmented copies of each."""

    name: str
    split: str
    copies: int
    images: int

    @property
    def count(self) -> int:
        return self.images * max(1, self.copies)


def _databases(cfg: ChestXray14Config, sets: dict[str, _Set]) -> list[_Db]:
    train = len(sets["train"].images)
    out = [_Db("train", "train", 0, train)] if cfg.plain_train else []
    if cfg.augmented_train:
        out.append(_Db(TRAIN_AUGMENTED, "train", cfg.train_augmented_copies, train))
    return out + [_Db(r, r, 0, len(sets[r].images)) for r in ("val", "test")]


def _plan(col: Collection, cfg: ChestXray14Config, manifest: Manifest
          ) -> tuple[dict[str, str], dict[str, _Set]]:
    role = split_patients(col, cfg)
    sets = {r: _Set([], []) for r in ROLES}
    for source in (col.train_val, col.test):
        for image in source:
            entry = col.entries[image]
            if cfg.view_positions and entry.view not in cfg.view_positions:
                manifest.skip("view position not kept")
                continue
            label = label_of(entry, cfg)
            if label is None:
                manifest.skip("binary task: finding outside positive_findings")
                continue
            s = sets[role[image]]
            if cfg.max_images and len(s.images) >= cfg.max_images:
                continue
            s.images.append(image)
            s.labels.append(label)
    if col.unlisted:
        manifest.skip("in Data_Entry but in neither split list", len(col.unlisted))
    for r, s in sets.items():
        if not s.images:
            raise ChestXray14Error(f"{col.root}: the {r} set would be empty")
    return role, sets


def load_resized(path: Path, size: int) -> np.ndarray:
    """size x size float32 gray, area-averaged (Pillow's BOX filter) from the PNG."""
    try:
        gray = read_gray(path)
    except ImageError as exc:
        raise ChestXray14Error(str(exc)) from None
    img = Image.fromarray(gray)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32)


def to_input(gray: np.ndarray, top: int, left: int, cfg: ChestXray14Config) -> np.ndarray:
    """3 x crop x crop float32: the crop, gray in B, G, R, mean subtracted, scaled (what the
    net reads; stored so for the 14-label task)."""
    s = cfg.crop_size
    crop = gray[top:top + s, left:left + s]
    mean = np.asarray(cfg.mean_bgr, np.float32).reshape(3, 1, 1)
    return ((crop[None] - mean) * np.float32(cfg.input_scale)).astype(np.float32)


def to_record(gray: np.ndarray, top: int, left: int, cfg: ChestXray14Config) -> np.ndarray:
    """The stored record: binary task, 3 x crop x crop uint8 (gray in B, G, R, rounded to
    whole gray levels; Caffe's transform_param subtracts and scales); else :func:`to_input`."""
    if backend(cfg) == "hdf5":
        return to_input(gray, top, left, cfg)
    s = cfg.crop_size
    crop = np.clip(np.rint(gray[top:top + s, left:left + s]), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(crop, (3, s, s)))


def build(root: Path, dest: Path, cfg: ChestXray14Config | None = None, *,
          progress: bool = True) -> Path:
    """Build the sets at `dest` (atomically) from the collection at `root`."""
    cfg = cfg or ChestXray14Config()
    root, dest = Path(root), Path(dest).resolve()
    col = scan(root, data_entry=cfg.data_entry, split=cfg.split)
    if col.missing:
        print(f"{root}: {len(col.missing)} of {col.listed} listed images not found (a partial "
              f"download?); building from the {col.listed - len(col.missing)} present; "
              f"missing ones listed in {dest / MISSING_TXT}", flush=True)
    multi = cfg.task == "multilabel"
    classes = list(FINDINGS) if multi else ["negative", "positive"]
    manifest = Manifest(dataset=f"boit2019-chestxray14-{cfg.task}", generator_module=__name__,
                        seed=cfg.seed, config=config.to_dict(cfg),
                        protocol=config.protocol_values(cfg), classes=classes)
    if col.missing:
        manifest.skip("listed image not found (partial download)", len(col.missing))
    role, sets = _plan(col, cfg, manifest)
    plan = _databases(cfg, sets)
    columns = ("image", "patient_id", *(("findings",) if multi else ("label", "findings")),
               "copy")
    s = cfg.crop_size
    fmt = backend(cfg)
    with atomic_dir(dest) as tmp:
        dbs = DatabaseSet(tmp, dest, manifest)
        try:
            ranks = {}
            for d in plan:
                ranks[d.name] = (np.random.default_rng([cfg.seed, zlib.crc32(d.name.encode())])
                                 .permutation(d.count) if d.split == "train"
                                 else np.arange(d.count))
                dbs.add(DbSpec(d.name, fmt, d.name, None, d.count, (3, s, s),
                               dtype="float32" if multi else "uint8",
                               label_shape=(len(FINDINGS),) if multi else (),
                               index_columns=columns))
            _write_all(col, sets, plan, ranks, dbs, cfg, manifest, root, progress)
            dbs.close()
        except BaseException:
            dbs.abort()
            raise
        _record_sources(col, manifest, root)
        members = [Member(i, col.entries[i].patient) for r in ROLES for i in sets[r].images]
        write_splits(tmp / SPLITS_CSV, members, role)
        manifest.counts = class_balance(col, sets, cfg, plan)
        write_balance_csv(tmp / BALANCE_CSV, manifest.counts)
        (tmp / MISSING_TXT).write_text("".join(f"{i}\n" for i in col.missing))
        manifest.notes = _notes(col, cfg)
        manifest.write(tmp)
    return dest


def _record_sources(col: Collection, manifest: Manifest, root: Path) -> None:
    manifest.add_source(col.data_entry, root)
    if col.official:
        for name in (TRAIN_VAL_LIST, TEST_LIST):
            manifest.add_source(root / name, root)
    if col.bboxes:
        manifest.add_source(root / BBOX_LIST, root)


def caffe_transform(cfg: ChestXray14Config) -> dict[str, Any] | None:
    """What the nets' Data layer must do to a stored record (None: stored preprocessed)."""
    if backend(cfg) == "hdf5":
        return None
    return {"mean_value": [float(v) for v in cfg.mean_bgr], "scale": float(cfg.input_scale)}


def _notes(col: Collection, cfg: ChestXray14Config) -> dict[str, Any]:
    multi = cfg.task == "multilabel"
    transform = caffe_transform(cfg)
    return {
        **gray_notes("X-ray gray (minus that channel's mean)", GRAY_SOURCE),
        "input": (f"stored preprocessed as float32: BGR mean {tuple(cfg.mean_bgr)} "
                  f"subtracted, x {cfg.input_scale}; add no transform_param (HDF5Data has "
                  "none)") if transform is None else
                 ("stored as 8-bit gray in B, G and R (uint8 Datums); the nets' Data layer "
                  f"subtracts the BGR mean {tuple(cfg.mean_bgr)} and multiplies by "
                  f"{cfg.input_scale} (transform_param mean_value, scale; caffe_transform)"),
        "caffe_transform": transform,
        "builder_version": BUILDER_VERSION,
        "labels": "multi-hot over FINDINGS order" if multi else
                  "1 = positive (any of positive_findings), 0 = negative",
        "findings_order": list(FINDINGS),
        "split": split_note(col, cfg),
        "split_source": "official" if col.official else "patient_id",
        "images": {"listed": col.listed, "present": col.listed - len(col.missing),
                   "missing": len(col.missing), "missing_file": MISSING_TXT},
        "data_entry": col.data_entry.name,
        "bbox_rows": len(col.bboxes),
        "augmentation": augmentation_note(cfg),
        "splits_file": SPLITS_CSV,
    }


def augmentation_note(cfg: ChestXray14Config) -> str:
    """What the manifest says of the training sets' augmentation."""
    plain = "train/: centre crops, no augmentation" if cfg.plain_train else ""
    if not cfg.augmented_train:
        return plain
    augmented = (f"{TRAIN_AUGMENTED}/: {cfg.train_augmented_copies} copies of each training "
                 "image, Keras ImageDataGenerator transforms (medtl.studies.boit2019.augment) "
                 f"on the {cfg.image_size} image, then a {cfg.augment_crop} crop")
    return "; ".join(filter(None, (plain, augmented)))


def _view(gray: np.ndarray, image: str, copy: int, augmented: bool, cfg: ChestXray14Config,
          aug: KerasAugment) -> np.ndarray:
    """The stored record: the centre crop, or augmented copy `copy`."""
    centre = (cfg.image_size - cfg.crop_size) // 2
    if not augmented:
        return to_record(gray, centre, centre, cfg)
    rng = np.random.default_rng([cfg.seed, zlib.crc32(image.encode()), copy])
    g = aug.apply(gray, aug.draw(rng, *gray.shape))
    top, left = (rng.integers(0, cfg.image_size - cfg.crop_size + 1, 2)
                 if cfg.augment_crop == "random" else (centre, centre))
    return to_record(g, int(top), int(left), cfg)


def _write_all(col: Collection, sets: dict[str, _Set], plan: list[_Db], ranks,
               dbs: DatabaseSet, cfg: ChestXray14Config, manifest: Manifest, root: Path,
               progress: bool) -> None:
    """Every record: each image read once, written to every database of its split."""
    aug = cfg.augment()
    pbar = bar(sum(d.count for d in plan), "ChestX-ray14 images", enabled=progress,
               unit="record")
    try:
        for r in ROLES:
            st = sets[r]
            n = len(st.images)
            for k, (image, label) in enumerate(zip(st.images, st.labels, strict=True)):
                entry = col.entries[image]
                path = col.images[image]
                if cfg.hash_images:
                    manifest.add_source(path, root, sha256=sha256_file(path))
                gray = load_resized(path, cfg.image_size)
                findings = "|".join(entry.findings) or "No Finding"
                extra = [findings] if isinstance(label, list) else [label, findings]
                for d in (d for d in plan if d.split == r):
                    for copy in range(max(1, d.copies)):
                        dbs.put(d.name, int(ranks[d.name][copy * n + k]),
                                _view(gray, image, copy, d.copies > 0, cfg, aug), label,
                                entry.patient, [image, entry.patient, *extra, copy])
                        pbar.update(1)
        if not cfg.hash_images:
            for folder in sorted({p.parent for p in col.images.values()}):
                manifest.sources.append({"path": str(folder.relative_to(root)),
                                         "kind": "png-folder", "files": sum(
                                             1 for p in col.images.values()
                                             if p.parent == folder), "sha256": None})
    finally:
        pbar.close()


def class_balance(col: Collection, sets: dict[str, _Set], cfg: ChestXray14Config,
                  plan: list[_Db]) -> dict[str, Any]:
    """Per set: images, patients, records per database, label counts (and every
    finding's count)."""
    out: dict[str, Any] = {}
    for r, st in sets.items():
        findings = Counter(f for i in st.images for f in col.entries[i].findings)
        entry: dict[str, Any] = {
            "images": len(st.images),
            "records": {d.name: d.count for d in plan if d.split == r},
            "patients": len(col.patients(st.images)),
            "no_finding": sum(1 for i in st.images if not col.entries[i].findings),
            "findings": {f: findings.get(f, 0) for f in FINDINGS}}
        if cfg.task == "binary":
            pos = sum(st.labels)
            entry["binary"] = {"positive": pos, "negative": len(st.labels) - pos,
                               "positive_share": round(pos / len(st.labels), 4)}
        out[r] = entry
    return out


def format_balance(counts: dict[str, Any]) -> str:
    """The class balance as lines for the terminal."""
    lines = []
    for r, e in counts.items():
        head = f"{r:<5} {e['images']:>7} images {e['patients']:>6} patients"
        if "binary" in e:
            b = e["binary"]
            head += (f"  positive {b['positive']} / negative {b['negative']} "
                     f"({100 * b['positive_share']:.1f}% positive)")
        lines.append(head)
        lines.append("      " + ", ".join(f"{k} {v}" for k, v in e["findings"].items()))
    return "\n".join(lines)


def write_balance_csv(path: Path, counts: dict[str, Any]) -> None:
    """class_balance.csv: set, finding (or "No Finding", "binary positive" ...), images."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "class", "images"])
        for r, e in counts.items():
            w.writerow([r, "No Finding", e["no_finding"]])
            for k, v in e["findings"].items():
                w.writerow([r, k, v])
            for k, v in e.get("binary", {}).items():
                if k != "positive_share":
                    w.writerow([r, f"binary {k}", v])
