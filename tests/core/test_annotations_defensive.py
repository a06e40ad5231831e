"""Annotation files read defensively (issue 12 item 5): a lymph-node `_indices.txt` that fits
neither index convention stops the build (or warns, by option); node ids are integers; NaN
sizes, NaN ROI points and interface rows outside the ROI are file:line errors; an unreadable
file is a one-line error, never a PermissionError traceback. Every case starts from a
corrupted copy of the kit's own phantoms."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from medtl import config
from medtl.datasets.formats.candidates import CandidateError, read_candidates
from medtl.datasets.formats.table import read_text
from medtl.datasets.manifest import read_manifest
from medtl.errors import InputError
from medtl.studies.shin2016.ild import reader as ild_io
from medtl.studies.shin2016.ild.phantoms import write_collection as write_ild
from medtl.studies.shin2016.ln import dataset as ln_dataset
from medtl.studies.shin2016.ln import tcia as tcia_ln
from medtl.studies.shin2016.ln.phantoms import write_collection as write_ln
from medtl.studies.tajbakhsh2016.apps.imt import SCHEMA as IMT
from medtl.studies.tajbakhsh2016.apps.imt import ImtApp, ImtConfig
from medtl.studies.tajbakhsh2016.phantoms import write_imt_collection

SMALL = {"train_views_per_candidate": 2, "test_views_per_candidate": 1,
         "val_views_per_candidate": 1, "folds": 3, "output_sizes": [32], "view_size": 32}


@pytest.fixture(scope="module")
def ln_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tcia_defensive") / "CT_Lymph_Nodes"
    write_ln(root, patients=3, regions=("med",), seed=5, shape=(44, 72, 72), n_false=8)
    return root


def _copy(root: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(root, dest, symlinks=True)
    return dest


def _ann(root: Path, pid: str, suffix: str) -> Path:
    folder = tcia_ln.CANDIDATES if "grtIDs" in suffix else tcia_ln.ANNOTATIONS
    return root / folder / pid / f"{pid}_{suffix}"


def _unreadable(path: Path) -> None:
    """A file that exists but cannot be read: no permission (root reads anything, so there a
    link to /proc/self/mem, whose first page is unmapped: read() fails with EIO)."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    path.unlink()
    path.symlink_to("/proc/self/mem")


def _k_from_the_other_end(root: Path, pid: str, nk: int) -> Path:
    f = _ann(root, pid, "lymphnodes_indices.txt")
    rows = [[int(v) for v in line.split()] for line in f.read_text().splitlines()]
    f.write_text("".join(f"{i} {j} {nk - 1 - k}\n" for i, j, k in rows))
    return f


# ------------------------------------------------------------------ lymph nodes

def test_indices_that_fit_neither_convention_stop_the_build(ln_root, tmp_path):
    root = _copy(ln_root, tmp_path)
    pid = tcia_ln.patient_ids(root, "med")[0]
    f = _k_from_the_other_end(root, pid, 44)
    with pytest.raises(tcia_ln.LnDataError,
                       match=rf"^{f}:\d+: .*voxels from the physical point .*neither"):
        tcia_ln.scan(root, "med")
    cfg = config.from_mapping(ln_dataset.LnConfig, SMALL)
    with pytest.raises(tcia_ln.LnDataError, match=rf"^{f}:\d+: "):
        ln_dataset.build(root, tmp_path / "ds", cfg, progress=False)
    assert not (tmp_path / "ds").exists()


def test_geometry_check_warn_builds_loudly_and_records_the_alarm(ln_root, tmp_path, capsys):
    root = _copy(ln_root, tmp_path)
    pid = tcia_ln.patient_ids(root, "med")[0]
    f = _k_from_the_other_end(root, pid, 44)
    cfg = config.from_mapping(ln_dataset.LnConfig, SMALL | {"geometry_check": "warn"})
    dest = ln_dataset.build(root, tmp_path / "ds", cfg, progress=False)
    err = capsys.readouterr().err
    assert f"warning: {f}:" in err and "neither" in err
    notes = read_manifest(dest)["notes"]
    assert notes["lymphnodes_indices_max_error_vox"] > 1.0
    assert any(str(f) in w for w in notes["geometry_warnings"])


def test_correct_indices_raise_no_alarm(ln_root):
    patients = tcia_ln.scan(ln_root, "med")
    assert all(p.index_warning is None and (p.index_error_vox or 0.0) <= 1.0 for p in patients)


def test_node_ids_must_be_integers(ln_root, tmp_path):
    root = _copy(ln_root, tmp_path)
    pid = tcia_ln.patient_ids(root, "med")[0]
    f = _ann(root, pid, "posCADe_grtIDs.txt")
    lines = f.read_text().splitlines()
    lines[1] = "2.7"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(tcia_ln.LnDataError, match=rf"^{f}:2: node id '2.7' is not an integer"):
        tcia_ln.scan(root, "med")


@pytest.mark.parametrize("value", ["nan", "inf", "-3.0"])
def test_a_node_size_that_is_no_size_is_a_file_line_error(ln_root, tmp_path, value):
    root = _copy(ln_root, tmp_path)
    pid = tcia_ln.patient_ids(root, "med")[0]
    f = _ann(root, pid, "lymphnodes_sizes.txt")
    lines = f.read_text().splitlines()
    lines[0] = value
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(tcia_ln.LnDataError, match=rf"^{f}:1: "):
        tcia_ln.scan(root, "med")


@pytest.mark.parametrize("suffix", ["lymphnodes_sizes.txt", "posCADe_grtIDs.txt",
                                    "lymphnodes_physicalPoints.txt"])
def test_an_unreadable_annotation_file_is_a_one_line_error(ln_root, tmp_path, suffix):
    root = _copy(ln_root, tmp_path)
    pid = tcia_ln.patient_ids(root, "med")[0]
    f = _ann(root, pid, suffix)
    _unreadable(f)
    with pytest.raises(tcia_ln.LnDataError, match=rf"^{f}: cannot be read \(.+\)$"):
        tcia_ln.scan(root, "med")


# ------------------------------------------------------------------ ILD, IMT, the helper

@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_a_non_finite_ild_roi_point_or_spacing_is_a_file_line_error(tmp_path, bad):
    write_ild(tmp_path / "db", patients=2, slices_per_patient=2, size=64, seed=1)
    roi_file = sorted((tmp_path / "db").rglob("*.txt"))[0]
    lines = roi_file.read_text().splitlines()
    n = next(i for i, ln in enumerate(lines) if ln.startswith("nb_points_on_contour"))
    x, y = lines[n + 1].split()
    lines[n + 1] = f"{bad} {y}"
    roi_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ild_io.IldDataError, match=rf"^{roi_file}:{n + 2}: .*finite"):
        ild_io.scan(tmp_path / "db")
    lines[n + 1] = f"{x} {y}"
    s = next(i for i, ln in enumerate(lines) if ln.startswith("SpacingX"))
    lines[s] = f"SpacingX: {bad}"
    roi_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ild_io.IldDataError, match=rf"^{roi_file}:{s + 1}: SpacingX"):
        ild_io.scan(tmp_path / "db")


@pytest.mark.parametrize("cell,message", [("500.0", "outside the ROI"),
                                          ("-3", "outside the ROI"),
                                          ("inf", "finite")])
def test_an_interface_row_outside_the_roi_is_a_file_line_error(tmp_path, cell, message):
    write_imt_collection(tmp_path / "c", subjects=2, rois_per_subject=1)
    cands = read_candidates(tmp_path / "c" / "candidates.csv", IMT)
    ann = cands[0].annotation
    lines = ann.read_text().splitlines()
    x, _, ma = lines[4].split(",")
    lines[4] = f"{x},{cell},{ma}"
    ann.write_text("\n".join(lines) + "\n")
    with pytest.raises(CandidateError, match=rf"^{ann}:5: .*{message}"):
        ImtApp(ImtConfig(patch_size=24, patch_px=12)).check(cands)


def test_read_text_turns_os_errors_into_one_line_input_errors(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("a\n")
    _unreadable(f)
    with pytest.raises(InputError, match=rf"^{f}: cannot be read \(.+\)$"):
        read_text(f)
    with pytest.raises(InputError, match=rf"^{tmp_path / 'none.txt'}: cannot be read"):
        read_text(tmp_path / "none.txt")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match=r"b\.txt: not a UTF-8 text file"):
        read_text(tmp_path / "b.txt")
