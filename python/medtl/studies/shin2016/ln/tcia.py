"""Reader for TCIA's "CT Lymph Nodes" collection (Roth et al. 2014; Seff et al. 2015).

Layout (PROTOCOLS.md, "Public formats"), under one root:

    ABD_LYMPH_001/<study>/<series>/*.dcm           one CT series per patient (also MED_LYMPH_xxx)
    MED_ABD_LYMPH_ANNOTATIONS/<PID>/<PID>_lymphnodes_physicalPoints.txt   node centres, "x y z"
    MED_ABD_LYMPH_ANNOTATIONS/<PID>/<PID>_lymphnodes_indices.txt          voxel "i j k" (optional)
    MED_ABD_LYMPH_ANNOTATIONS/<PID>/<PID>_lymphnodes_sizes.txt            mm (optional)
    MED_ABD_LYMPH_CANDIDATES/<PID>/<PID>_posCADe_physicalPoints.txt       true candidates
    MED_ABD_LYMPH_CANDIDATES/<PID>/<PID>_negCADe_physicalPoints.txt       false candidates
    MED_ABD_LYMPH_CANDIDATES/<PID>/*grtIDs*.txt    node of each positive candidate (optional)

Physical points are world millimetres in the DICOM patient (LPS) frame, the frame ITK's
TransformPhysicalPointToIndex uses in Roth's released pipeline. A user CSV
(patient_id,x,y,z,label[,candidate_id]) can replace the CADe candidate files.
"""

from __future__ import annotations

import csv
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medtl.datasets.formats.dicom import DicomError, read_series, single_series_files
from medtl.datasets.formats.geometry import Geometry
from medtl.datasets.formats.table import finite, read_text
from medtl.errors import InputError

REGION_PREFIX = {"med": "MED_LYMPH_", "abd": "ABD_LYMPH_"}
ANNOTATIONS = "MED_ABD_LYMPH_ANNOTATIONS"
CANDIDATES = "MED_ABD_LYMPH_CANDIDATES"
# voxels: integer indices rounded (or truncated) from the physical points stay within one
# voxel of them under the right convention; farther, they fit neither (a geometry alarm)
INDEX_TOLERANCE_VOX = 1.0
GEOMETRY_CHECKS = ("error", "warn")


class LnDataError(InputError):
    """A lymph-node source file that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class Candidate:
    id: str                 # "<PID>:<source>:<line>", unique and traceable
    patient: str
    world: tuple[float, float, float]
    label: int              # 1 true lymph node, 0 false candidate
    source: str             # posCADe, negCADe, annotation, csv
    where: str              # file:line it came from
    node: int | None = None  # 0-based node index (from grtIDs), when known


@dataclass
class LnPatient:
    pid: str
    series_files: list[Path]
    geometry: Geometry
    nodes: np.ndarray                       # (n, 3) world mm
    node_where: list[str]
    node_sizes: list[list[float]]
    candidates: list[Candidate]
    text_files: list[Path] = field(default_factory=list)
    index_base: int | None = None           # 0 or 1, derived from the geometry
    index_error_vox: float | None = None
    index_warning: str | None = None        # the geometry alarm, where only warned of
    dicom_notes: list[str] = field(default_factory=list)  # DICOM files skipped


def read_points(path: Path, columns: int = 3) -> tuple[np.ndarray, list[str]]:
    """Rows of `columns` numbers, blank lines ignored; (array, ["file:line", ...])."""
    path = Path(path)
    rows, where = [], []
    for n, line in enumerate(read_text(path, LnDataError).splitlines(), start=1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) != columns:
            raise LnDataError(f"{path}:{n}: expected {columns} numbers, got {line.strip()!r}")
        try:
            values = [float(p) for p in parts]
        except ValueError as exc:
            raise LnDataError(f"{path}:{n}: not a number in {line.strip()!r}") from exc
        if not np.all(np.isfinite(values)):
            raise LnDataError(f"{path}:{n}: non-finite coordinate in {line.strip()!r}")
        rows.append(values)
        where.append(f"{path}:{n}")
    return np.array(rows, dtype=float).reshape(-1, columns), where


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every non-empty line, cells split at blanks and commas."""
    return [(n, line.replace(",", " ").split())
            for n, line in enumerate(read_text(path, LnDataError).splitlines(), start=1)
            if line.split()]


def read_sizes(path: Path) -> list[list[float]]:
    """Node sizes (mm, one or more per line): positive finite numbers."""
    rows = []
    for n, cells in _lines(path):
        row = [finite(c, f"{path}:{n}", "node size", LnDataError) for c in cells]
        if min(row) <= 0:
            raise LnDataError(f"{path}:{n}: node size must be positive (mm), got "
                              f"{' '.join(cells)!r}")
        rows.append(row)
    return rows


def read_node_ids(path: Path) -> list[int]:
    """One node id per line, an integer (a whole number written as 3.0 is accepted)."""
    ids = []
    for n, cells in _lines(path):
        if len(cells) != 1:
            raise LnDataError(f"{path}:{n}: expected one node id, got {' '.join(cells)!r}")
        value = finite(cells[0], f"{path}:{n}", "node id", LnDataError)
        if not value.is_integer():
            raise LnDataError(f"{path}:{n}: node id {cells[0]!r} is not an integer")
        ids.append(int(value))
    return ids


def patient_ids(root: Path, region: str) -> list[str]:
    """Patients of `region` with a series folder under `root`."""
    prefix = REGION_PREFIX[region]
    pattern = re.compile(rf"^{prefix}\d+$")
    root = Path(root)
    if not root.is_dir():
        raise LnDataError(f"{root}: no such directory (the CT Lymph Nodes root)")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and pattern.match(p.name))


def _check_orphans(folder: Path, region: str, with_series: set[str]) -> None:
    if not folder.is_dir():
        return
    prefix = REGION_PREFIX[region]
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and sub.name.startswith(prefix) and sub.name not in with_series:
            files = sorted(f.name for f in sub.iterdir())
            shown = f"{sub / files[0]}" if files else str(sub)
            raise LnDataError(f"{shown}: annotation/candidate file for patient {sub.name}, "
                              "which has no DICOM series under the root")


def derive_index_base(points: np.ndarray, indices: np.ndarray, geometry: Geometry,
                      where: list[str]) -> tuple[int, float]:
    """Which index base (0 or 1) makes the TCIA `_indices.txt` agree with the geometry's
    world -> voxel transform of the physical points; (base, worst error in voxels)."""
    if len(points) != len(indices):
        raise LnDataError(f"{where[0].rsplit(':', 1)[0] if where else 'indices'}: "
                          f"{len(indices)} index rows for {len(points)} physical points")
    computed = geometry.world_to_index(points)
    errors = {base: float(np.abs(indices - base - computed).max()) for base in (0, 1)}
    base = min(errors, key=errors.get)
    return base, errors[base]


def index_alarm(points: np.ndarray, indices: np.ndarray, geometry: Geometry, base: int,
                node_where: list[str], where: list[str]) -> str | None:
    """The geometry alarm of an `_indices.txt` that fits neither convention (its worst row
    more than INDEX_TOLERANCE_VOX from its physical point under the better one), or None."""
    computed = geometry.world_to_index(points)
    per_row = np.abs(indices - base - computed).max(axis=1)
    worst = int(np.argmax(per_row))
    if per_row[worst] <= INDEX_TOLERANCE_VOX:
        return None
    ijk = " ".join(f"{v:g}" for v in indices[worst])
    at = " ".join(f"{v:.1f}" for v in computed[worst] + base)
    return (f"{where[worst]}: voxel index ({ijk}) lies {per_row[worst]:.1f} voxels from the "
            f"physical point {node_where[worst]} (at {base}-based index ({at})): it fits "
            f"neither the 0- nor the 1-based convention (limit {INDEX_TOLERANCE_VOX:g} voxel); "
            "the annotation and the series' geometry disagree")


def read_candidates_csv(path: Path) -> dict[str, list[Candidate]]:
    """A user candidate list: columns patient_id,x,y,z,label[,candidate_id] (label 1 or 0)."""
    path = Path(path)
    reader = csv.reader(read_text(path, LnDataError).splitlines())
    header = [h.strip() for h in next(reader, [])]
    need = ["patient_id", "x", "y", "z", "label"]
    if header[:5] != need or len(header) not in (5, 6) or (len(header) == 6 and
                                                          header[5] != "candidate_id"):
        raise LnDataError(f"{path}:1: header must be {','.join(need)}[,candidate_id]")
    out: dict[str, list[Candidate]] = {}
    seen: set[str] = set()
    for n, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(header):
            raise LnDataError(f"{path}:{n}: expected {len(header)} columns, got {len(row)}")
        pid = row[0].strip()
        xyz = tuple(finite(v, f"{path}:{n}", "coordinate", LnDataError) for v in row[1:4])
        try:
            label = int(row[4])
        except ValueError as exc:
            raise LnDataError(f"{path}:{n}: bad number ({exc})") from exc
        if label not in (0, 1):
            raise LnDataError(f"{path}:{n}: label must be 0 or 1, got {label}")
        cid = row[5].strip() if len(header) == 6 else f"{pid}:csv:{n}"
        if cid in seen:
            raise LnDataError(f"{path}:{n}: candidate_id {cid} repeated")
        seen.add(cid)
        out.setdefault(pid, []).append(Candidate(cid, pid, xyz, label, "csv", f"{path}:{n}"))
    return out


def _grt_ids(folder: Path, pid: str, positives: list[Candidate], nodes: np.ndarray
             ) -> list[Candidate]:
    files = sorted(folder.glob(f"{pid}*grtIDs*.txt"))
    if not files or not positives or len(nodes) == 0:
        return positives
    ids = read_node_ids(files[0])
    if len(ids) != len(positives):
        raise LnDataError(f"{files[0]}: {len(ids)} node ids for {len(positives)} positive "
                          "candidates")
    best = None
    for base in (0, 1):  # the index base is not documented: keep the nearer linking
        idx = np.array(ids) - base
        if idx.min() < 0 or idx.max() >= len(nodes):
            continue
        dist = np.linalg.norm(nodes[idx] - np.array([c.world for c in positives]), axis=1)
        if best is None or dist.mean() < best[1]:
            best = (idx, dist.mean())
    if best is None:
        raise LnDataError(f"{files[0]}: node ids outside 0..{len(nodes)} for {len(nodes)} nodes")
    return [Candidate(c.id, c.patient, c.world, c.label, c.source, c.where, int(i))
            for c, i in zip(positives, best[0], strict=True)]


def _check_indices(patient: LnPatient, index_file: Path, geometry_check: str) -> None:
    indices, where = read_points(index_file)
    patient.index_base, patient.index_error_vox = derive_index_base(
        patient.nodes, indices, patient.geometry, where)
    alarm = index_alarm(patient.nodes, indices, patient.geometry, patient.index_base,
                        patient.node_where, where)
    if alarm is None:
        return
    if geometry_check == "error":
        raise LnDataError(alarm + " (geometry_check: warn builds on)")
    print(f"medtl: warning: {alarm}", file=sys.stderr)
    patient.index_warning = alarm


def load_patient(root: Path, pid: str, *, annotations_dir: Path, candidates_dir: Path | None,
                 csv_candidates: dict[str, list[Candidate]] | None,
                 geometry_check: str = "error") -> LnPatient:
    """Headers, geometry and every text file of one patient (no pixels yet). An
    `_indices.txt` that disagrees with the geometry stops here, or with geometry_check
    "warn" is printed and kept in `index_warning`."""
    root = Path(root)
    dicom_notes: list[str] = []
    try:
        files = single_series_files(root / pid, dicom_notes)
        geometry = read_series(files, pixels=False).geometry
    except DicomError as exc:
        raise LnDataError(str(exc)) from exc
    ann = Path(annotations_dir) / pid
    node_file = ann / f"{pid}_lymphnodes_physicalPoints.txt"
    if not node_file.is_file():
        raise LnDataError(f"{node_file}: missing (node centres of patient {pid})")
    nodes, node_where = read_points(node_file)
    text_files = [node_file]
    sizes: list[list[float]] = [[] for _ in range(len(nodes))]
    size_file = ann / f"{pid}_lymphnodes_sizes.txt"
    if size_file.is_file():
        rows = read_sizes(size_file)
        if len(rows) != len(nodes):
            raise LnDataError(f"{size_file}: {len(rows)} rows for {len(nodes)} nodes")
        sizes = rows
        text_files.append(size_file)
    patient = LnPatient(pid, files, geometry, nodes, node_where, sizes, [], text_files,
                        dicom_notes=dicom_notes)
    index_file = ann / f"{pid}_lymphnodes_indices.txt"
    if index_file.is_file() and len(nodes):
        _check_indices(patient, index_file, geometry_check)
        text_files.append(index_file)
    if csv_candidates is not None:
        patient.candidates = list(csv_candidates.get(pid, []))
        return patient
    folder = Path(candidates_dir) / pid
    cands: list[Candidate] = []
    for kind, label in (("posCADe", 1), ("negCADe", 0)):
        path = folder / f"{pid}_{kind}_physicalPoints.txt"
        if not path.is_file():
            raise LnDataError(f"{path}: missing ({kind} candidates of patient {pid})")
        points, where = read_points(path)
        text_files.append(path)
        group = [Candidate(f"{pid}:{kind}:{w.rsplit(':', 1)[1]}", pid, tuple(p), label, kind, w)
                 for p, w in zip(points, where, strict=True)]
        if label == 1:
            group = _grt_ids(folder, pid, group, nodes)
            text_files.extend(sorted(folder.glob(f"{pid}*grtIDs*.txt"))[:1])
        cands.extend(group)
    patient.candidates = cands
    return patient


def scan(root: Path, region: str, *, annotations_dir: Path | None = None,
         candidates_dir: Path | None = None, candidates_csv: Path | None = None,
         geometry_check: str = "error") -> list[LnPatient]:
    """Every patient of `region`: headers and text files, validated; no pixel data read."""
    if geometry_check not in GEOMETRY_CHECKS:
        raise ValueError(f"geometry_check must be one of {GEOMETRY_CHECKS}")
    root = Path(root)
    pids = patient_ids(root, region)
    if not pids:
        raise LnDataError(f"{root}: no {REGION_PREFIX[region]}xxx patient folders")
    annotations_dir = Path(annotations_dir) if annotations_dir else root / ANNOTATIONS
    candidates_dir = Path(candidates_dir) if candidates_dir else root / CANDIDATES
    _check_orphans(annotations_dir, region, set(pids))
    csv_cands = read_candidates_csv(candidates_csv) if candidates_csv else None
    if csv_cands is None:
        _check_orphans(candidates_dir, region, set(pids))
    else:
        orphans = sorted(set(csv_cands) - set(pids))
        if orphans:
            first = csv_cands[orphans[0]][0]
            raise LnDataError(f"{first.where}: candidate for patient {orphans[0]}, which has "
                              "no DICOM series under the root")
    return [load_patient(root, pid, annotations_dir=annotations_dir,
                         candidates_dir=candidates_dir, csv_candidates=csv_cands,
                         geometry_check=geometry_check)
            for pid in pids]
