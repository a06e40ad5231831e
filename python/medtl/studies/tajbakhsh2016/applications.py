"""The four Tajbakhsh 2016 applications by name: their configuration class and builder."""

from __future__ import annotations

from pathlib import Path

from medtl.studies.tajbakhsh2016 import dataset as tajbakhsh_dataset
from medtl.studies.tajbakhsh2016.apps.frames import FramesApp, FramesConfig
from medtl.studies.tajbakhsh2016.apps.imt import ImtApp, ImtConfig
from medtl.studies.tajbakhsh2016.apps.pe import PeApp, PeConfig
from medtl.studies.tajbakhsh2016.apps.polyp import PolypApp, PolypConfig

APPLICATIONS = {
    "polyp": (PolypConfig, PolypApp, "polyp detection in colonoscopy frames (Sec. VI-A)"),
    "pe": (PeConfig, PeApp, "pulmonary embolism detection in CTPA (Sec. VI-B)"),
    "frames": (FramesConfig, FramesApp, "colonoscopy frame quality (Sec. VI-C)"),
    "imt": (ImtConfig, ImtApp, "intima-media interfaces in carotid ultrasound (Sec. VI-D)"),
}


def config_class(application: str) -> type:
    if application not in APPLICATIONS:
        raise KeyError(f"unknown application {application!r} (known: "
                       f"{', '.join(APPLICATIONS)})")
    return APPLICATIONS[application][0]


def build(application: str, manifest_csv: Path, dest: Path, cfg=None, *,
          progress: bool = True) -> Path:
    """Build one application's dataset; `cfg` defaults to the paper's configuration."""
    cls = config_class(application)
    cfg = cfg if cfg is not None else cls()
    if not isinstance(cfg, cls):
        raise TypeError(f"{application} needs a {cls.__name__}, got {type(cfg).__name__}")
    app = APPLICATIONS[application][1](cfg)
    return tajbakhsh_dataset.build(manifest_csv, dest, app, cfg, progress=progress)


def iter_test_patches(dataset: Path, *, batch: int = 128):
    """Every test patch of a built dataset, rendered again from its candidate manifest with
    the dataset's configuration: yields (candidate, variant indices, patches) in the order
    of test_lmdb. For test sets kept out of the dataset (build_test=false)."""
    from medtl.config import from_mapping
    from medtl.datasets.formats.candidates import read_candidates
    from medtl.datasets.manifest import read_manifest
    from medtl.datasets.splits import read_splits

    dataset = Path(dataset)
    m = read_manifest(dataset)
    application = m["dataset"].removeprefix("tajbakhsh2016-")
    cls = config_class(application)
    cfg = from_mapping(cls, m["config"], where=str(dataset / "manifest.json"))
    app = APPLICATIONS[application][1](cfg)
    role, _ = read_splits(dataset / "splits.csv")
    cands = app.check(read_candidates(Path(m["notes"]["manifest_csv"]), app.schema))
    test = [c for c in cands if role.get(c.candidate_id) == "test"]
    return tajbakhsh_dataset.iter_patches(app, test, batch=batch)
