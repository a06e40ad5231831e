"""ChestX-ray14 (NIH, Wang et al. 2017) in its published layout, read and validated.

    Data_Entry_2017.csv (or the 2020 revision Data_Entry_2017_v2020.csv)
        Image Index, Finding Labels ('|'-separated, or 'No Finding'), Follow-up #, Patient ID,
        Patient Age, Patient Gender, View Position, OriginalImage[Width, Height],
        OriginalImagePixelSpacing[x, y] (the bracketed pairs are two columns each; the 2017
        file ends every line with an empty column)
    BBox_List_2017.csv   Image Index, Finding Label, Bbox [x, y, w, h] (4 columns)
    train_val_list.txt, test_list.txt   the official patient-level split, one image a line
                                        (optional: without both, `split="auto"` leaves the
                                        split to the builder, by Patient ID)
    images_001/ ... images_012/         1024 x 1024 PNGs, found in any sub-folder (the NIH
                                        tarballs unpack into images_NNN/images/)

Only the columns the kit uses are required; the rest are kept as read. Every problem names
the file and line. Nothing here holds pixels: images are located, not read.

A partial download is usable: listed images that are not there are left out and named in
`Collection.missing` (the builder reports and records them). No fraction threshold applies,
since building from the first few tarballs is a legitimate use; a collection with none of
its listed images is refused, and the builder refuses a set that would be empty.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from medtl.datasets.formats.table import read_text
from medtl.errors import InputError

FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
            "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
            "Pleural_Thickening", "Hernia")
NO_FINDING = "No Finding"
# BBox_List_2017.csv writes "Infiltrate" for the Data_Entry's "Infiltration"
ALIASES = {"Infiltrate": "Infiltration", "Pleural Thickening": "Pleural_Thickening"}
DATA_ENTRY_2017 = "Data_Entry_2017.csv"
DATA_ENTRY_2020 = "Data_Entry_2017_v2020.csv"
BBOX_LIST = "BBox_List_2017.csv"
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
REQUIRED = ("Image Index", "Finding Labels", "Patient ID")


class ChestXray14Error(InputError):
    """The collection cannot be used as is; the message names the file and line."""


@dataclass(frozen=True)
class Entry:
    image: str
    findings: tuple[str, ...]      # in FINDINGS order; () for "No Finding"
    patient: str                   # Patient ID without leading zeros
    view: str
    follow_up: str
    where: str

    def multi_hot(self) -> list[int]:
        return [int(f in self.findings) for f in FINDINGS]


@dataclass(frozen=True)
class BBox:
    image: str
    finding: str
    x: float
    y: float
    w: float
    h: float
    where: str


def _finding(name: str, where: str) -> str:
    name = ALIASES.get(name.strip(), name.strip())
    if name not in FINDINGS:
        raise ChestXray14Error(f"{where}: unknown finding {name!r} (known: "
                               f"{', '.join(FINDINGS)}, or {NO_FINDING!r})")
    return name


def parse_findings(text: str, where: str) -> tuple[str, ...]:
    parts = [p.strip() for p in text.split("|") if p.strip()]
    if not parts:
        raise ChestXray14Error(f"{where}: Finding Labels is empty")
    if NO_FINDING in parts:
        if len(parts) > 1:
            raise ChestXray14Error(f"{where}: {NO_FINDING!r} together with findings {text!r}")
        return ()
    found = {_finding(p, where) for p in parts}
    return tuple(f for f in FINDINGS if f in found)


def _rows(path: Path) -> list[list[str]]:
    return list(csv.reader(read_text(path, ChestXray14Error).splitlines()))


def _cell(row: list[str], col: dict[str, int], name: str) -> str:
    return row[col[name]].strip() if name in col and col[name] < len(row) else ""


def read_data_entry(path: Path) -> dict[str, Entry]:
    """Image name -> Entry, in file order."""
    rows = _rows(path)
    if not rows:
        raise ChestXray14Error(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ChestXray14Error(f"{path}:1: missing column {missing[0]!r} (a Data_Entry file "
                               f"needs {', '.join(REQUIRED)})")
    col = {name: header.index(name) for name in header if name}
    out: dict[str, Entry] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        where = f"{path}:{n}"
        if len(row) < len(REQUIRED) or len(row) <= max(col[c] for c in REQUIRED):
            raise ChestXray14Error(f"{where}: {len(row)} cells, the header has {len(header)}")
        image = row[col["Image Index"]].strip()
        if not image:
            raise ChestXray14Error(f"{where}: Image Index is empty")
        if image in out:
            raise ChestXray14Error(f"{where}: image {image} already listed at "
                                   f"{out[image].where}")
        pid = row[col["Patient ID"]].strip()
        if not pid.isdigit():
            raise ChestXray14Error(f"{where}: Patient ID {pid!r} is not a number")
        out[image] = Entry(image, parse_findings(row[col["Finding Labels"]], where),
                           str(int(pid)), _cell(row, col, "View Position"),
                           _cell(row, col, "Follow-up #"), where)
    if not out:
        raise ChestXray14Error(f"{path}: no image rows")
    return out


def read_bbox_list(path: Path) -> list[BBox]:
    """Every box of BBox_List_2017.csv (columns by position: image, finding, x, y, w, h)."""
    rows = _rows(path)
    if not rows or [c.strip() for c in rows[0][:2]] != ["Image Index", "Finding Label"]:
        raise ChestXray14Error(f"{path}:1: header must start with Image Index,Finding Label")
    out = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        where = f"{path}:{n}"
        if len(row) < 6:
            raise ChestXray14Error(f"{where}: expected image, finding and 4 box values")
        try:
            x, y, w, h = (float(v) for v in row[2:6])
        except ValueError:
            raise ChestXray14Error(f"{where}: box values {row[2:6]} are not numbers") from None
        if w <= 0 or h <= 0:
            raise ChestXray14Error(f"{where}: box of width {w:g} and height {h:g}")
        out.append(BBox(row[0].strip(), _finding(row[1], where), x, y, w, h, where))
    return out


def read_list(path: Path) -> list[tuple[str, str]]:
    """(image, "file:line") of a split list, one image name per line."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ChestXray14Error(f"{path}: cannot be read ({exc.strerror})") from exc
    out, seen = [], {}
    for n, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            raise ChestXray14Error(f"{path}:{n}: {name} already listed at line {seen[name]}")
        seen[name] = n
        out.append((name, f"{path}:{n}"))
    return out


def locate_images(root: Path) -> dict[str, Path]:
    """PNG name -> path, for every PNG in any sub-folder of root (images_NNN/,
    images_NNN/images/, images/ ...); a name found twice is refused."""
    out: dict[str, Path] = {}
    for png in sorted(Path(root).rglob("*.png")):
        if png.name in out:
            raise ChestXray14Error(f"{png}: {png.name} is also at {out[png.name]}")
        out[png.name] = png
    return out


def find_data_entry(root: Path, which: str = "auto") -> Path:
    """The Data_Entry file: `which` is auto (2017, else the 2020 revision), 2017, 2020 or a
    path relative to root."""
    root = Path(root)
    names = {"2017": DATA_ENTRY_2017, "2020": DATA_ENTRY_2020}
    if which == "auto":
        for name in (DATA_ENTRY_2017, DATA_ENTRY_2020):
            if (root / name).is_file():
                return root / name
        raise ChestXray14Error(f"{root}: neither {DATA_ENTRY_2017} nor {DATA_ENTRY_2020}")
    path = root / names.get(which, which)
    if not path.is_file():
        raise ChestXray14Error(f"{path}: no such file")
    return path


@dataclass
class Collection:
    root: Path
    data_entry: Path
    entries: dict[str, Entry]
    train_val: list[str]
    test: list[str]
    images: dict[str, Path]
    bboxes: list[BBox] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)   # in Data_Entry, in neither list
    official: bool = True          # train_val / test from the lists; False: every present
                                   # Data_Entry image in train_val, test empty (the builder
                                   # splits by Patient ID)
    listed: int = 0                # images the lists (or, without them, Data_Entry) name
    missing: list[str] = field(default_factory=list)    # listed, but no PNG found

    def patients(self, images: list[str]) -> set[str]:
        return {self.entries[i].patient for i in images}


def check_patient_split(entries: dict[str, Entry], sides: dict[str, list[tuple[str, str]]]
                        ) -> None:
    """No patient on two sides of a split (sides: name -> (image, where))."""
    side_of: dict[str, tuple[str, str]] = {}
    for side, items in sides.items():
        for image, where in items:
            pid = entries[image].patient
            first = side_of.setdefault(pid, (side, where))
            if first[0] != side:
                raise ChestXray14Error(f"{where}: patient {pid} ({image}) is in {side}, and in "
                                       f"{first[0]} at {first[1]}: the split must be by "
                                       "patient")


def official_lists(root: Path, split: str) -> bool:
    """Whether the official lists are used: `split` is auto (when both are there), official
    (required) or patients (never)."""
    present = [name for name in (TRAIN_VAL_LIST, TEST_LIST) if (root / name).is_file()]
    if split == "patients":
        return False
    if split == "auto" and not present:
        return False
    for name in (TRAIN_VAL_LIST, TEST_LIST):
        if name not in present:
            have = f" while {present[0]} is there" if present else ""
            raise ChestXray14Error(f"{root / name}: the official split list is missing{have} "
                                   "(restore it, or split by Patient ID with split=patients)")
    return True


def _read_lists(root: Path, entries: dict[str, Entry], entry_path: Path
                ) -> dict[str, list[tuple[str, str]]]:
    lists = {}
    for side, name in (("train_val", TRAIN_VAL_LIST), ("test", TEST_LIST)):
        lists[side] = read_list(root / name)
        for image, where in lists[side]:
            if image not in entries:
                raise ChestXray14Error(f"{where}: {image} is not in {entry_path.name}")
    test_names = {i for i, _ in lists["test"]}
    both = [(i, w) for i, w in lists["train_val"] if i in test_names]
    if both:
        raise ChestXray14Error(f"{both[0][1]}: {both[0][0]} is also in {TEST_LIST}")
    check_patient_split(entries, lists)
    return lists


def scan(root: Path, *, data_entry: str = "auto", check_images: bool = True,
         split: str = "auto") -> Collection:
    """Read and cross-check the collection at `root` (lists, entries, patients, PNGs).

    `split`: auto (the official lists when both are there, else none), official or
    patients (see :func:`official_lists`). Listed images without a PNG are left out and
    named in `missing`; with none of them there, the collection is refused."""
    root = Path(root)
    if not root.is_dir():
        raise ChestXray14Error(f"{root}: no such directory")
    entry_path = find_data_entry(root, data_entry)
    entries = read_data_entry(entry_path)
    official = official_lists(root, split)
    lists = (_read_lists(root, entries, entry_path) if official else
             {"train_val": [(i, e.where) for i, e in entries.items()], "test": []})
    listed = [i for side in lists.values() for i, _ in side]
    images = locate_images(root) if check_images else {}
    missing = [i for i in listed if i not in images] if check_images else []
    if missing and len(missing) == len(listed):
        raise ChestXray14Error(f"{root}: all {len(listed)} listed image(s) not found "
                               f"(searched for *.png in every sub-folder), e.g. "
                               f"{', '.join(missing[:3])}")
    absent = set(missing)
    bboxes = read_bbox_list(root / BBOX_LIST) if (root / BBOX_LIST).is_file() else []
    for b in bboxes:
        if b.image not in entries:
            raise ChestXray14Error(f"{b.where}: {b.image} is not in {entry_path.name}")
    in_lists = set(listed)
    return Collection(root, entry_path, entries,
                      [i for i, _ in lists["train_val"] if i not in absent],
                      [i for i, _ in lists["test"] if i not in absent], images, bboxes,
                      [i for i in entries if i not in in_lists], official, len(listed),
                      missing)


def by_patient(entries: dict[str, Entry], images: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for i in images:
        out[entries[i].patient].append(i)
    return dict(out)
