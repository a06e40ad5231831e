"""Synthetic CT Lymph Nodes collection, in TCIA's exact layout (see
`medtl.studies.shin2016.ln.tcia`).

Each patient is a small CT volume written as a DICOM series: air around an elliptic body,
subcutaneous fat and a muscle wall, fat-filled interior with organ-like soft tissue, contrast
vessels (tubes), bowel-like loops (a wall around air, fluid or contrast) and lymph nodes
(soft-tissue ellipsoids in fat, some with a fatty hilum). Noise and a slight blur stand in for
the scanner. False CADe candidates (~40 per patient) sit on vessels, bowel, node-like
soft-tissue blobs (the hard ones) and plain tissue; true candidates sit within 2 mm of node
centres, sometimes two on one node. A CNN learns to tell them apart in minutes on a CPU, but
not perfectly: the node-like blobs are nodes in all but name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from medtl.datasets.formats.dicom import write_ct_series
from medtl.datasets.formats.geometry import Geometry
from medtl.io import atomic_dir
from medtl.studies.shin2016.ln.tcia import ANNOTATIONS, CANDIDATES, REGION_PREFIX

AIR, FAT, MUSCLE, ORGAN, NODE, VESSEL = -1000.0, -100.0, 50.0, 60.0, 45.0, 200.0


@dataclass
class PatientTruth:
    pid: str
    geometry: Geometry
    nodes: np.ndarray                     # (n, 3) world mm
    node_radii: np.ndarray                # (n, 3) semi-axes mm
    positives: list[tuple[np.ndarray, int]] = field(default_factory=list)  # (world, node)
    negatives: list[tuple[np.ndarray, str]] = field(default_factory=list)  # (world, kind)


def _ellipsoid(world: np.ndarray, centre, radii, rotation) -> np.ndarray:
    """Normalised radius (1 at the surface) of an ellipsoid at every voxel."""
    d = (world - centre) @ rotation
    return np.sqrt(np.sum((d / radii) ** 2, axis=-1))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


class _Body:
    """World-space drawing helpers on one phantom volume."""

    def __init__(self, geometry: Geometry, rng: np.random.Generator) -> None:
        self.g = geometry
        self.rng = rng
        k, j, i = np.meshgrid(*(np.arange(n) for n in geometry.shape), indexing="ij")
        self.world = geometry.index_to_world(np.stack([i, j, k], -1).reshape(-1, 3)
                                             ).reshape(*geometry.shape, 3)
        self.hu = np.full(geometry.shape, AIR, dtype=np.float32)
        self.occupied = np.zeros(geometry.shape, dtype=bool)
        self.centre = geometry.index_to_world((np.array(geometry.shape[::-1]) - 1) / 2)
        ext = geometry.extent_mm()
        self.ax = np.array([0.44 * ext[0], 0.36 * ext[1]])
        rel = self.world[..., :2] - self.centre[:2]
        self.r_body = np.sqrt(np.sum((rel / self.ax) ** 2, axis=-1))

    def draw_body(self) -> None:
        rng = self.rng
        texture = ndimage.gaussian_filter(rng.normal(0, 1, self.hu.shape), 3) * 40
        self.hu[self.r_body < 1.0] = FAT
        self.hu[(self.r_body < 0.93) & (self.r_body >= 0.85)] = MUSCLE
        inner = self.r_body < 0.85
        self.hu[inner] = FAT + texture[inner]
        self.interior = (self.r_body < 0.8)

    def free_point(self, margin_mm: float, tries: int = 200) -> np.ndarray | None:
        for _ in range(tries):
            ang = self.rng.uniform(0, 2 * np.pi)
            rad = np.sqrt(self.rng.uniform(0, 0.7 ** 2))
            ext_z = self.g.extent_mm()[2]
            p = self.centre + np.array([rad * self.ax[0] * np.cos(ang),
                                        rad * self.ax[1] * np.sin(ang),
                                        self.rng.uniform(-0.32, 0.32) * ext_z])
            idx = np.round(self.g.world_to_array(p)).astype(int)
            if np.any(idx < 0) or np.any(idx >= self.g.shape):
                continue
            r = max(1, int(np.ceil(margin_mm / float(min(self.g.spacing)))))
            sl = tuple(slice(max(0, c - r), c + r + 1) for c in idx)
            if not self.occupied[sl].any():
                return p
        return None

    def ellipsoid(self, centre, radii, value, *, rotation=None, hilum: bool = False) -> None:
        rotation = np.eye(3) if rotation is None else rotation
        r = _ellipsoid(self.world, centre, np.asarray(radii, float), rotation)
        inside = r < 1.0
        self.hu[inside] = value
        if hilum:
            self.hu[r < 0.35] = FAT + 30
        self.occupied |= r < 1.3

    def tube(self, start, direction, length, radius, value, wall: float | None = None,
             lumen: float | None = None) -> np.ndarray:
        """A straight cylinder; returns its axis points (for candidates)."""
        direction = np.asarray(direction, float) / np.linalg.norm(direction)
        d = self.world - start
        t = np.clip(d @ direction, 0, length)
        dist = np.linalg.norm(d - t[..., None] * direction, axis=-1)
        inside = dist < radius
        self.hu[inside] = value if wall is None else wall
        if lumen is not None:
            self.hu[dist < radius * 0.6] = lumen
        self.occupied |= dist < radius + 3
        return start + np.linspace(0.1, 0.9, 9)[:, None] * length * direction

    def finish(self, noise_hu: float) -> np.ndarray:
        blurred = ndimage.gaussian_filter(self.hu, 0.6)
        blurred += self.rng.normal(0, noise_hu, blurred.shape).astype(np.float32)
        return np.clip(blurred, -1024, 3071).astype(np.float32)


def make_patient(pid: str, rng: np.random.Generator, *, shape=(60, 96, 96),
                 spacing=(2.0, 2.0, 2.5), n_nodes: tuple[int, int] = (3, 6),
                 n_false: int = 40, noise_hu: float = 25.0) -> tuple[np.ndarray, PatientTruth]:
    spacing_arr = np.asarray(spacing, float)
    origin = np.array([-(shape[2] - 1) * spacing_arr[0] / 2 + rng.uniform(-20, 20),
                       -(shape[1] - 1) * spacing_arr[1] / 2 + rng.uniform(-20, 20),
                       rng.uniform(-400, -100)])
    geometry = Geometry(origin, spacing_arr, np.eye(3), tuple(shape))
    body = _Body(geometry, rng)
    body.draw_body()
    # large organ-like soft tissue and an aorta-like vessel along z
    for _ in range(2):
        p = body.free_point(25)
        if p is not None:
            body.ellipsoid(p, rng.uniform(14, 24, 3), ORGAN + rng.uniform(-15, 15),
                           rotation=_random_rotation(rng))
    truth = PatientTruth(pid, geometry, np.zeros((0, 3)), np.zeros((0, 3)))
    ext_z = geometry.extent_mm()[2]
    vessel_axes = []
    for _ in range(rng.integers(3, 6)):
        p = body.free_point(8)
        if p is None:
            continue
        direction = np.array([rng.normal(0, 0.3), rng.normal(0, 0.3), 1.0])
        start = p - direction / np.linalg.norm(direction) * ext_z * 0.35
        vessel_axes.append(body.tube(start, direction, ext_z * 0.7, rng.uniform(3, 7),
                                     VESSEL + rng.uniform(-60, 80)))
    bowel = []
    for _ in range(rng.integers(4, 8)):
        p = body.free_point(14)
        if p is None:
            continue
        lumen = rng.choice([-800.0, 10.0, 300.0])
        body.ellipsoid(p, rng.uniform(7, 12, 3), 40.0, rotation=_random_rotation(rng))
        body.ellipsoid(p, rng.uniform(3.5, 5.5, 3), lumen)
        bowel.append(p)
    nodes, radii = [], []
    for _ in range(rng.integers(n_nodes[0], n_nodes[1] + 1)):
        p = body.free_point(12)
        if p is None:
            continue
        r = np.sort(rng.uniform(3.5, 8.0, 3))
        body.ellipsoid(p, r, NODE + rng.uniform(-15, 15), rotation=_random_rotation(rng),
                       hilum=bool(rng.random() < 0.3))
        nodes.append(p)
        radii.append(r)
    mimics = []
    for _ in range(rng.integers(2, 5)):  # node-like soft tissue that nobody annotated
        p = body.free_point(12)
        if p is None:
            continue
        body.ellipsoid(p, np.sort(rng.uniform(3.5, 8.0, 3)), NODE + rng.uniform(-15, 25),
                       rotation=_random_rotation(rng))
        mimics.append(p)
    truth.nodes = np.array(nodes).reshape(-1, 3)
    truth.node_radii = np.array(radii).reshape(-1, 3)
    for n, p in enumerate(truth.nodes):
        for _ in range(1 if rng.random() < 0.7 else 2):
            truth.positives.append((p + rng.uniform(-1.5, 1.5, 3), n))
    def well_inside(p: np.ndarray) -> bool:
        idx = geometry.world_to_index(p)
        return bool(np.all(idx >= 3) and np.all(idx <= np.array(shape[::-1]) - 4))

    pools = {"vessel": [a for axis in vessel_axes for a in axis if well_inside(a)],
             "bowel": bowel, "mimic": mimics}
    while len(truth.negatives) < n_false:
        kind = str(rng.choice(["vessel", "bowel", "mimic", "tissue"], p=[0.4, 0.3, 0.12, 0.18]))
        pool = pools.get(kind) or []
        if pool:
            p = pool[rng.integers(len(pool))] + rng.uniform(-2, 2, 3)
        else:
            kind = "tissue"
            p = body.free_point(0)
            if p is None:
                p = body.centre + rng.uniform(-15, 15, 3)
        if well_inside(p):
            truth.negatives.append((p, kind))
    return body.finish(noise_hu), truth


def _fmt(points) -> str:
    return "".join(f"{p[0]:.4f} {p[1]:.4f} {p[2]:.4f}\n" for p in points)


def write_patient(root: Path, hu: np.ndarray, truth: PatientTruth, region: str,
                  *, index_base: int = 0) -> None:
    pid = truth.pid
    number = pid.rsplit("_", 1)[1]
    study = "mediastinallymphnodes" if region == "med" else "abdominallymphnodes"
    series_dir = (root / pid / f"01-01-2000-{pid.replace('_', '')}-{study}-{number}"
                  / f"{study}-{int(number) + 500}")
    write_ct_series(series_dir, hu, truth.geometry, patient_id=pid, description=study)
    ann = root / ANNOTATIONS / pid
    ann.mkdir(parents=True, exist_ok=True)
    (ann / f"{pid}_lymphnodes_physicalPoints.txt").write_text(_fmt(truth.nodes))
    idx = np.rint(truth.geometry.world_to_index(truth.nodes)).astype(int) + index_base
    (ann / f"{pid}_lymphnodes_indices.txt").write_text(
        "".join(f"{a} {b} {c}\n" for a, b, c in idx.reshape(-1, 3)))
    short = 2 * truth.node_radii.reshape(-1, 3)
    sizes = [f"{s[0]:.1f}\n" if region == "med" else f"{s[1]:.1f} {s[0]:.1f}\n" for s in short]
    (ann / f"{pid}_lymphnodes_sizes.txt").write_text("".join(sizes))
    cand = root / CANDIDATES / pid
    cand.mkdir(parents=True, exist_ok=True)
    (cand / f"{pid}_posCADe_physicalPoints.txt").write_text(
        _fmt([p for p, _ in truth.positives]))
    (cand / f"{pid}_posCADe_grtIDs.txt").write_text(
        "".join(f"{n + 1}\n" for _, n in truth.positives))
    (cand / f"{pid}_negCADe_physicalPoints.txt").write_text(
        _fmt([p for p, _ in truth.negatives]))


def write_collection(dest: Path, *, patients: int = 4, regions: tuple[str, ...] = ("med",),
                     seed: int = 0, shape=(60, 96, 96), spacing=(2.0, 2.0, 2.5),
                     n_false: int = 40, noise_hu: float = 25.0, progress=None
                     ) -> dict[str, PatientTruth]:
    """Write a phantom collection at `dest` (atomically); returns the ground truth by PID."""
    truths: dict[str, PatientTruth] = {}
    with atomic_dir(Path(dest)) as tmp:
        jobs = [(region, n) for region in regions for n in range(1, patients + 1)]
        for region, n in (progress(jobs) if progress else jobs):
            pid = f"{REGION_PREFIX[region]}{n:03d}"
            rng = np.random.default_rng([seed, n, 0 if region == "med" else 1])
            hu, truth = make_patient(pid, rng, shape=shape, spacing=spacing, n_false=n_false,
                                     noise_hu=noise_hu)
            write_patient(tmp, hu, truth, region)
            truths[pid] = truth
    return truths
