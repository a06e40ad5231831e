"""Ravishankar et al. 2016: kidney ROI vs background patches of ultrasound images, for
CaffeNet fine-tuning (FA / PA), fc7 feature extraction and Haar features.

Manifest (data_prep/CANDIDATE_MANIFEST.md): one row per kidney box (label `kidney`, the
default) and optionally explicit background boxes (label `background`); `group` is the
subject. Per kidney box: the box itself plus jittered copies that still overlap it with Dice
>= 0.8 are positives; per image, random boxes of a kidney's size overlapping no kidney by
more than Dice 0.2 are negatives. Each box is warped to 256 x 256 (CaffeNet crops 227), gray
repeated to 3 channels.

    train_lmdb (+ train_mean.binaryproto), val_lmdb, test_lmdb   labels 0 background, 1 kidney
    <db>_index.csv      rank -> box id, subject, label, image, x0 y0 x1 y1, dice to the kidney
    haar/<db>.h5        `features` (N x ~2000) and `label` in rank (= LMDB key) order
    test_images.csv     the test images with their kidney boxes (localisation scoring)
    splits.csv, manifest.json
"""

from __future__ import annotations

import csv
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from medtl import config
from medtl.config import option
from medtl.datasets.channels import gray_notes
from medtl.datasets.dbset import DatabaseSet, DbSpec
from medtl.datasets.formats.candidates import Candidate, CandidateError, Schema, read_candidates
from medtl.datasets.formats.images import box_patch, gray_to_chw3, image_size, read_gray
from medtl.datasets.manifest import Manifest
from medtl.datasets.splits import SPLITS_CSV, Member, train_test, train_val, write_splits
from medtl.io import atomic_dir
from medtl.progress import bar
from medtl.provenance import assumed, paper
from medtl.studies.ravishankar2016.haar import HaarBank

SEC2 = "Ravishankar 2016 Sec. 2"
CLASSES = ("background", "kidney")
SCHEMA = Schema("kidney", CLASSES, geometry="bbox", label="optional", default_label=1,
                aliases={"roi": 1, "negative": 0, "positive": 1})
INDEX_COLUMNS = ("candidate_id", "patient_id", "label", "image", "x0", "y0", "x1", "y1",
                 "dice")
ROLES = ("train", "val", "test")

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class KidneyConfig:
    seed: int = option(0, "seed of splits, box sampling and key order")
    test_fraction: float = option(
        0.5, "share of subjects drawn for the test set when the manifest has no split column",
        assumed(0.5, "not given; a split column overrides it"))
    val_fraction: float = option(0.2, "share of the training subjects held out for validation",
                                 assumed(0.2, "not given; Tajbakhsh's 80/20, for snapshot "
                                         "selection during fine-tuning"))
    patch_size: int = option(256, "stored patch side; CaffeNet crops 227 of it",
                             assumed(256, "not given; bvlc_reference_caffenet's 256-pixel "
                                     "images with a 227 crop"))
    positives_per_kidney: int = option(
        10, "positive boxes per kidney: the box itself and jittered copies",
        assumed(10, "not given; a few overlapping boxes per kidney"))
    positive_min_dice: float = option(
        0.8, "a jittered box stays positive above this Dice with the kidney box",
        assumed(0.8, "Ravishankar's localisation is a failure below Dice 0.80 (Sec. 3)"))
    jitter: float = option(0.1, "jitter of the positives: shift and size change, as a share "
                           "of the box", assumed(0.1, "not given"))
    negatives_per_image: int = option(20, "random background boxes per image",
                                      assumed(20, "not given"))
    negative_max_dice: float = option(
        0.2, "a background box overlaps every kidney box by at most this Dice",
        assumed(0.2, "not given; clearly off the kidney"))
    negative_scale: tuple[float, float] = option(
        (0.7, 1.4), "background box sides as a range of factors of the kidney box's",
        assumed((0.7, 1.4), "not given; boxes of about a kidney's size"))
    haar_features: int = option(2000, "Haar-like features per patch (0: none)",
                                paper(2000, f"{SEC2} (review): Haar features 'with about 2000 "
                                      "dimensions'"))
    haar_window: int = option(24, "Haar window side (pixels)",
                              assumed(24, "Viola and Jones's 24 x 24 detector window"))

    def __post_init__(self) -> None:
        for name in ("test_fraction", "val_fraction", "positive_min_dice", "negative_max_dice"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in (0, 1)")
        if self.positives_per_kidney < 1 or self.negatives_per_image < 0:
            raise ValueError("positives_per_kidney >= 1 and negatives_per_image >= 0 required")
        lo, hi = self.negative_scale
        if not 0 < lo <= hi:
            raise ValueError(f"negative_scale must satisfy 0 < min <= max, got "
                             f"{self.negative_scale}")
        if self.patch_size < 8:
            raise ValueError("patch_size must be at least 8")


def dice(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return 2 * iw * ih / area if area > 0 else 0.0


@dataclass(frozen=True)
class Sample:
    """One patch to write: a box of an image with its label."""

    cand: Candidate          # the manifest row it came from
    sample_id: str
    box: Box
    label: int
    dice: float              # with the image's kidney box (best over kidneys)


def _rng(cfg: KidneyConfig, what: str, key: str) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, zlib.crc32(what.encode()),
                                  zlib.crc32(key.encode())])


def _jittered(cfg: KidneyConfig, c: Candidate, size: tuple[int, int]) -> list[Box]:
    rng = _rng(cfg, "positive", c.candidate_id)
    x0, y0, x1, y1 = c.box
    w, h = x1 - x0, y1 - y0
    out: list[Box] = [c.box]
    for _ in range(200 * cfg.positives_per_kidney):
        if len(out) >= cfg.positives_per_kidney:
            break
        dx, dy, sw, sh = rng.uniform(-cfg.jitter, cfg.jitter, 4)
        nw, nh = w * (1 + sw), h * (1 + sh)
        cx, cy = (x0 + x1) / 2 + dx * w, (y0 + y1) / 2 + dy * h
        b = (cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2)
        if (b[0] >= 0 and b[1] >= 0 and b[2] <= size[0] and b[3] <= size[1]
                and dice(b, c.box) >= cfg.positive_min_dice):
            out.append(b)
    return out


def _backgrounds(cfg: KidneyConfig, key: str, kidneys: list[Box], size: tuple[int, int],
                 ref: tuple[float, float]) -> list[Box]:
    """Random boxes off every kidney of one image (`key`: its first row's candidate id, so
    the draw does not depend on where the data live)."""
    rng = _rng(cfg, "negative", key)
    out: list[Box] = []
    lo, hi = cfg.negative_scale
    for _ in range(200 * max(1, cfg.negatives_per_image)):
        if len(out) >= cfg.negatives_per_image:
            break
        w = min(ref[0] * rng.uniform(lo, hi), size[0])
        h = min(ref[1] * rng.uniform(lo, hi), size[1])
        x0, y0 = rng.uniform(0, size[0] - w), rng.uniform(0, size[1] - h)
        b = (x0, y0, x0 + w, y0 + h)
        if all(dice(b, k) <= cfg.negative_max_dice for k in kidneys):
            out.append(b)
    return out


def samples(cands: list[Candidate], cfg: KidneyConfig) -> list[Sample]:
    """Every patch of every image, in manifest order (deterministic under the seed)."""
    by_image: dict[Path, list[Candidate]] = defaultdict(list)
    for c in cands:
        by_image[c.image].append(c)
    kid = [c.box for c in cands if c.label == 1]
    if not kid:
        raise CandidateError("the manifest has no kidney box (label kidney)")
    ref = (float(np.mean([b[2] - b[0] for b in kid])), float(np.mean([b[3] - b[1] for b in kid])))
    out: list[Sample] = []
    for image, rows in by_image.items():
        size = image_size(image)
        kidneys = [c.box for c in rows if c.label == 1]
        for c in rows:
            if c.label == 1:
                for k, b in enumerate(_jittered(cfg, c, size)):
                    out.append(Sample(c, f"{c.candidate_id}:pos{k}", b, 1, dice(b, c.box)))
            else:
                d = max((dice(c.box, k) for k in kidneys), default=0.0)
                out.append(Sample(c, c.candidate_id, c.box, 0, d))
        first = rows[0]
        own_ref = ((float(np.mean([b[2] - b[0] for b in kidneys])),
                    float(np.mean([b[3] - b[1] for b in kidneys]))) if kidneys else ref)
        for k, b in enumerate(_backgrounds(cfg, first.candidate_id, kidneys, size, own_ref)):
            d = max((dice(b, kb) for kb in kidneys), default=0.0)
            out.append(Sample(first, f"{first.candidate_id}:bg{k}", b, 0, d))
    return out


def build(manifest_csv: Path, dest: Path, cfg: KidneyConfig | None = None, *,
          progress: bool = True) -> Path:
    """Build the kidney dataset at `dest` (atomically) from the candidate manifest."""
    cfg = cfg or KidneyConfig()
    manifest_csv, dest = Path(manifest_csv), Path(dest).resolve()
    cands = read_candidates(manifest_csv, SCHEMA)
    members = [Member(c.candidate_id, c.group, c.split, c.where, c.label) for c in cands]
    role = train_test(members, cfg.test_fraction, cfg.seed)
    role.update(train_val([m for m in members if role[m.candidate_id] == "train"],
                          cfg.val_fraction, cfg.seed))
    all_samples = samples(cands, cfg)
    per_role = {r: [s for s in all_samples if role[s.cand.candidate_id] == r] for r in ROLES}
    for r in ROLES:
        labels = {s.label for s in per_role[r]}
        if labels != {0, 1}:
            missing = CLASSES[({0, 1} - labels).pop()] if labels else "any"
            raise CandidateError(f"{manifest_csv}: the {r} set would hold no {missing} patch")
    bank = HaarBank(cfg.haar_window, cfg.haar_features) if cfg.haar_features else None
    manifest = Manifest(dataset="ravishankar2016-kidney", generator_module=__name__,
                        seed=cfg.seed, config=config.to_dict(cfg),
                        protocol=config.protocol_values(cfg), classes=list(CLASSES))
    root = manifest_csv.resolve().parent
    with atomic_dir(dest) as tmp:
        dbs = DatabaseSet(tmp, dest, manifest)
        haar_files: dict[str, h5py.File] = {}
        try:
            ranks = {}
            for r in ROLES:
                n = len(per_role[r])
                ranks[r] = (np.random.default_rng([cfg.seed, zlib.crc32(r.encode())])
                            .permutation(n) if r == "train" else np.arange(n))
                s = cfg.patch_size
                dbs.add(DbSpec(f"{r}_lmdb", "lmdb", r, None, n, (3, s, s), mean=r == "train",
                               index_columns=INDEX_COLUMNS))
                if bank is not None:
                    (tmp / "haar").mkdir(exist_ok=True)
                    f = h5py.File(tmp / "haar" / f"{r}.h5", "w")
                    f.create_dataset("features", (n, len(bank)), dtype=np.float32)
                    f.create_dataset("label", (n,), dtype=np.float32)
                    haar_files[r] = f
            _render(per_role, ranks, dbs, haar_files, bank, cfg, manifest, root, progress)
            dbs.close()
        except BaseException:
            dbs.abort()
            raise
        finally:
            for f in haar_files.values():
                f.close()
        manifest.add_source(manifest_csv, root)
        write_splits(tmp / SPLITS_CSV, members, role)
        _write_test_images(tmp / "test_images.csv", cands, role)
        manifest.counts = {
            r: {"patches": dict(sorted(Counter(CLASSES[s.label] for s in per_role[r]).items())),
                "subjects": len({s.cand.group for s in per_role[r]}),
                "images": len({s.cand.image for s in per_role[r]})} for r in ROLES}
        manifest.notes = {
            **gray_notes("ultrasound gray", "assumed: B-mode ultrasound is gray; Ravishankar "
                         "2016 does not say how it filled CaffeNet's 3 input channels, the "
                         "gray repeated in all three"),
            "boxes": "each box warped to patch_size x patch_size (aspect not kept)",
            "haar": (bank.describe() | {"files": {r: f"haar/{r}.h5" for r in ROLES},
                                        "order": "rank = LMDB key order"}) if bank else None,
            "fc7": "medtl data features --source <db>_lmdb --mean-file train_mean.binaryproto",
            "splits_file": SPLITS_CSV,
        }
        manifest.write(tmp)
    return dest


def _render(per_role, ranks, dbs: DatabaseSet, haar_files, bank, cfg: KidneyConfig,
            manifest: Manifest, root: Path, progress: bool) -> None:
    by_image: dict[Path, list[tuple[str, int, Sample]]] = defaultdict(list)
    for r in ROLES:
        for s, rank in zip(per_role[r], ranks[r], strict=True):
            by_image[s.cand.image].append((r, int(rank), s))
    pbar = bar(sum(len(v) for v in by_image.values()), "kidney patches", enabled=progress,
               unit="patch")
    try:
        for image in sorted(by_image):
            gray = gray_to_chw3(read_gray(image))
            manifest.add_source(image, root)
            items = by_image[image]
            patches = [box_patch(gray, *s.box, cfg.patch_size) for _, _, s in items]
            feats = bank.compute(np.stack(patches)) if bank is not None else None
            for k, ((r, rank, s), patch) in enumerate(zip(items, patches, strict=True)):
                row = [s.sample_id, s.cand.group, s.label, str(s.cand.image),
                       *(f"{v:.2f}" for v in s.box), f"{s.dice:.4f}"]
                dbs.put(f"{r}_lmdb", rank, patch, s.label, s.cand.group, row)
                if feats is not None:
                    haar_files[r]["features"][rank] = feats[k]
                    haar_files[r]["label"][rank] = s.label
            pbar.update(len(items))
    finally:
        pbar.close()


def _write_test_images(path: Path, cands: list[Candidate], role: dict[str, str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["candidate_id", "patient_id", "image", "x0", "y0", "x1", "y1"])
        for c in cands:
            if role[c.candidate_id] == "test" and c.label == 1:
                w.writerow([c.candidate_id, c.group, str(c.image.resolve()), *c.box])


def _positions(last: float, step: float) -> np.ndarray:
    """0, step, 2 step ... and `last` itself, so the far edge is covered too."""
    pos = np.arange(0, last + 1e-9, step)
    return pos if last - pos[-1] < 1e-9 else np.append(pos, last)


def sliding_boxes(width: int, height: int, sizes: list[tuple[float, float]],
                  stride: float = 0.1) -> np.ndarray:
    """Candidate boxes (n x 4: x0 y0 x1 y1) covering an image at each (w, h) size, moved by
    `stride` of the box (the last flush with the far edges): what a detector scores to
    localise the kidney at test time."""
    out = []
    for w, h in sizes:
        if w > width or h > height:
            continue
        xs = _positions(width - w, max(1.0, stride * w))
        ys = _positions(height - h, max(1.0, stride * h))
        for y in ys:
            for x in xs:
                out.append((x, y, x + w, y + h))
    return np.array(out, dtype=float).reshape(-1, 4)


def render_boxes(image: Path, boxes: np.ndarray, size: int = 256) -> np.ndarray:
    """n x 3 x size x size uint8 patches of `boxes`, exactly as the dataset stores them."""
    gray = gray_to_chw3(read_gray(image))
    return np.stack([box_patch(gray, *b, size) for b in boxes])

