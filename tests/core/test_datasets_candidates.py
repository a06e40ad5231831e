"""The candidate manifest (reading, every bad-input error) and its 2D / 3D image readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtl.datasets.formats.candidates import (
    CandidateError,
    Schema,
    read_candidates,
    write_candidates,
)
from medtl.datasets.formats.dicom import write_ct_series
from medtl.datasets.formats.geometry import Geometry
from medtl.datasets.formats.images import (
    box_patch,
    dihedral,
    read_gray,
    read_rgb,
    read_volume,
    rgb_to_bgr_chw,
    volume_geometry,
    write_nifti,
)

BOXES = Schema("polyp", ("non-polyp", "polyp"), geometry="bbox", label="or_mask")
PE = Schema("pe", ("non-pe", "pe"), geometry="centre3d", axis=True, volume=True)


def _frame(path: Path, w: int = 40, h: int = 30, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def frames(tmp_path) -> Path:
    _frame(tmp_path / "f" / "a.png")
    mask = np.zeros((30, 40), np.uint8)
    mask[5:15, 5:15] = 255
    Image.fromarray(mask).save(tmp_path / "f" / "a_mask.png")
    return tmp_path


def test_reads_boxes_labels_by_name_or_index_and_from_masks(frames):
    path = _csv(frames / "c.csv",
                "image,group,candidate_id,label,x0,y0,x1,y1,mask,note\n"
                "f/a.png,v1,c1,polyp,0,0,10,10,,hello\n"
                "f/a.png,v1,c2,0,20,20,30,30,\n"
                "f/a.png,v1,c3,,4,4,16,16,f/a_mask.png\n"
                "f/a.png,v1,c4,,20,0,40,10,f/a_mask.png\n")
    cands = read_candidates(path, BOXES)
    assert [c.label for c in cands] == [1, 0, 1, 0]
    assert cands[0].image == (frames / "f" / "a.png").resolve()
    assert cands[2].box_centre == (10.0, 10.0)
    assert cands[0].where == f"{path}:2"


@pytest.mark.parametrize("row, message", [
    ("f/missing.png,v1,c1,polyp,0,0,10,10", r"c\.csv:2: image .*missing\.png does not exist"),
    ("f/a.png,v1,c1,polyp,0,0,41,10", r"c\.csv:2: box \(0, 0, 41, 10\) lies outside the 40 x "
                                      r"30 image"),
    ("f/a.png,v1,c1,polyp,-1,0,10,10", "lies outside"),
    ("f/a.png,v1,c1,poylp,0,0,10,10", r"c\.csv:2: unknown label 'poylp' \(known: 0=non-polyp"),
    ("f/a.png,,c1,polyp,0,0,10,10", r"c\.csv:2: group id missing"),
    ("f/a.png,v1,c1,,0,0,10,10", r"c\.csv:2: label missing \(and no mask"),
    ("f/a.png,v1,c1,polyp,5,0,5,10", "is empty"),
    ("f/a.png,v1,c1,polyp,0,0,ten,10", "x1 'ten' is not a number"),
    ("f/a.png,v1,c1,polyp,0,0,10", r"a box needs all of x0"),
])
def test_bad_rows_name_the_file_and_line(frames, row, message):
    path = _csv(frames / "c.csv", "image,group,candidate_id,label,x0,y0,x1,y1\n" + row + "\n")
    with pytest.raises(CandidateError, match=message):
        read_candidates(path, BOXES)


@pytest.mark.parametrize("header, message", [
    ("image,group,candidate_id,label,x0,y0,x1", r"c\.csv:1: missing column 'y1'"),
    ("image,group,candidate,label,x0,y0,x1,y1", r"c\.csv:1: unknown column 'candidate'"),
    ("image,group,candidate_id,label,x0,y0,x1,y1,x0", "column 'x0' appears twice"),
])
def test_wrong_columns_are_rejected_by_name(frames, header, message):
    path = _csv(frames / "c.csv", header + "\nf/a.png,v1,c1,polyp,0,0,10,10\n")
    with pytest.raises(CandidateError, match=message):
        read_candidates(path, BOXES)


def test_duplicate_ids_and_partial_split_column_are_errors(frames):
    head = "image,group,candidate_id,label,split,x0,y0,x1,y1\n"
    dup = _csv(frames / "d.csv", head + "f/a.png,v1,c1,1,train,0,0,5,5\n"
               "f/a.png,v1,c1,1,train,0,0,5,5\n")
    with pytest.raises(CandidateError, match=r"d\.csv:3: candidate_id 'c1' already used at "
                                             r".*d\.csv:2"):
        read_candidates(dup, BOXES)
    part = _csv(frames / "p.csv", head + "f/a.png,v1,c1,1,train,0,0,5,5\n"
                "f/a.png,v1,c2,1,,0,0,5,5\n")
    with pytest.raises(CandidateError, match=r"p\.csv:3: split missing"):
        read_candidates(part, BOXES)
    bad = _csv(frames / "b.csv", head + "f/a.png,v1,c1,1,validation,0,0,5,5\n")
    with pytest.raises(CandidateError, match="split 'validation' must be train or test"):
        read_candidates(bad, BOXES)


def test_mask_of_another_size_is_an_error(frames):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(frames / "small.png")
    path = _csv(frames / "c.csv", "image,group,candidate_id,label,x0,y0,x1,y1,mask\n"
                "f/a.png,v1,c1,,0,0,5,5,small.png\n")
    with pytest.raises(CandidateError, match=r"c\.csv:2: mask .*small\.png is 10 x 10"):
        read_candidates(path, BOXES)


def _volume(tmp_path: Path) -> tuple[Path, Path, Geometry, np.ndarray]:
    g = Geometry(np.array([-10.0, 5.0, 20.0]), np.array([0.7, 0.8, 1.5]), np.eye(3),
                 (6, 8, 10))
    hu = np.arange(np.prod(g.shape), dtype=np.float32).reshape(g.shape) - 200
    nii = write_nifti(tmp_path / "v.nii.gz", hu, g)
    write_ct_series(tmp_path / "dcm", hu, g, patient_id="p1")
    return nii, tmp_path / "dcm", g, hu


def test_nifti_and_dicom_volumes_read_to_the_same_world(tmp_path):
    nii, dcm, g, hu = _volume(tmp_path)
    for path in (nii, dcm):
        vol = read_volume(path)
        np.testing.assert_allclose(vol.hu, hu)
        np.testing.assert_allclose(vol.geometry.origin, g.origin, atol=1e-4)
        np.testing.assert_allclose(vol.geometry.spacing, g.spacing, atol=1e-4)
        assert volume_geometry(path).shape == g.shape


def test_3d_candidates_need_a_centre_inside_and_a_nonzero_axis(tmp_path):
    _volume(tmp_path)
    head = "image,group,candidate_id,label,cx,cy,cz,ax,ay,az\n"
    ok = _csv(tmp_path / "ok.csv", head + "v.nii.gz,p1,c1,pe,-8,7,24,0,0,2\n"
              "dcm,p1,c2,non-pe,-8,7,24,1,1,0\n")
    cands = read_candidates(ok, PE)
    np.testing.assert_allclose(cands[0].axis, (0, 0, 1))
    np.testing.assert_allclose(np.linalg.norm(cands[1].axis), 1)
    out = _csv(tmp_path / "out.csv", head + "v.nii.gz,p1,c1,pe,-8,7,90,0,0,1\n")
    with pytest.raises(CandidateError, match=r"out\.csv:2: centre .* lies outside volume"):
        read_candidates(out, PE)
    zero = _csv(tmp_path / "z.csv", head + "v.nii.gz,p1,c1,pe,-8,7,24,0,0,0\n")
    with pytest.raises(CandidateError, match=r"z\.csv:2: vessel axis .* is zero"):
        read_candidates(zero, PE)
    (tmp_path / "notavolume.txt").write_text("x")
    bad = _csv(tmp_path / "b.csv", head + "notavolume.txt,p1,c1,pe,0,0,0,0,0,1\n")
    with pytest.raises(CandidateError, match=r"b\.csv:2: .* neither a DICOM series folder"):
        read_candidates(bad, PE)


def test_image_readers_handle_gray_16bit_and_alpha(tmp_path):
    Image.fromarray(np.full((4, 5), 7, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(tmp_path / "w.png")
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert read_rgb(tmp_path / "g.png").shape == (4, 5, 3)
    assert (read_rgb(tmp_path / "g.png") == 7).all()
    assert (read_gray(tmp_path / "w.png") == 255).all()
    assert (read_rgb(tmp_path / "a.png")[..., 0] == 200).all()
    assert (rgb_to_bgr_chw(read_rgb(tmp_path / "a.png"))[2] == 200).all()


def test_box_patch_is_centred_on_the_box():
    img = np.zeros((1, 60, 80), np.uint8)
    img[0, 20:30, 50:60] = 255                       # a 10 x 10 square centred at (55, 25)
    patch = box_patch(img, 45, 15, 65, 35, 40)[0].astype(float)
    ys, xs = np.nonzero(patch > 127)
    assert abs(xs.mean() - 19.5) < 0.6 and abs(ys.mean() - 19.5) < 0.6
    assert abs(len(xs) - 400) < 60                   # half the side -> a quarter of the area


def test_dihedral_gives_eight_distinct_variants_of_one_group():
    p = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    variants = [dihedral(p, k) for k in range(8)]
    assert len({v.tobytes() for v in variants}) == 8
    assert (variants[0] == p).all() and (variants[4] == p[:, :, ::-1]).all()
    with pytest.raises(ValueError):
        dihedral(p, 8)


def test_write_candidates_round_trips(tmp_path):
    _frame(tmp_path / "x.png")
    write_candidates(tmp_path / "c.csv", [{"image": "x.png", "group": "g", "candidate_id": "1",
                                           "label": "polyp", "x0": 1, "y0": 2, "x1": 3,
                                           "y1": 4}])
    (c,) = read_candidates(tmp_path / "c.csv", BOXES)
    assert (c.label, c.box, c.group) == (1, (1.0, 2.0, 3.0, 4.0), "g")
