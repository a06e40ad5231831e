"""DICOM geometry, the B-spline kernel and 2.5D views."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from medtl.datasets.formats import bspline
from medtl.datasets.formats.dicom import DicomError, read_single_series, write_ct_series
from medtl.datasets.formats.geometry import Geometry
from medtl.datasets.formats.resize import resize
from medtl.datasets.views import ViewSampler, draw_params, identity_params, window_to_uint8

TILTED = Rotation.from_euler("zx", [20, 5], degrees=True).as_matrix()


def _geometry(shape=(24, 30, 36)) -> Geometry:
    return Geometry(np.array([-40.0, 25.0, -310.0]), np.array([0.9, 1.1, 2.5]), TILTED, shape)


def test_dicom_series_round_trip_matches_simpleitk_geometry(tmp_path):
    g = _geometry()
    hu = np.random.default_rng(0).integers(-1024, 2000, g.shape).astype(np.float32)
    write_ct_series(tmp_path / "s", hu, g, patient_id="P1")
    vol = read_single_series(tmp_path)
    np.testing.assert_array_equal(vol.hu, hu)
    np.testing.assert_allclose(vol.geometry.origin, g.origin, atol=1e-5)
    np.testing.assert_allclose(vol.geometry.spacing, g.spacing, atol=1e-5)
    np.testing.assert_allclose(vol.geometry.direction, g.direction, atol=1e-5)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    image = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), hu)
    for ijk in ([0, 0, 0], [5, 7, 11], [35, 29, 23]):
        np.testing.assert_allclose(vol.geometry.index_to_world(ijk),
                                   image.TransformIndexToPhysicalPoint(ijk), atol=1e-4)
    world = vol.geometry.index_to_world([3.25, 4.5, 6.75])
    np.testing.assert_allclose(vol.geometry.world_to_index(world), [3.25, 4.5, 6.75], atol=1e-9)


def test_dicom_reader_names_the_bad_file(tmp_path):
    g = _geometry((6, 8, 8))
    files = write_ct_series(tmp_path / "s", np.zeros(g.shape, np.float32), g, patient_id="P")
    files[2].write_bytes(b"not a dicom file at all" * 10)
    with pytest.raises(DicomError, match=rf"{files[2]}: not a readable DICOM"):
        read_single_series(tmp_path / "s")
    files[2].unlink()
    with pytest.raises(DicomError, match=r"slice gap of 5\.000 mm .* a slice is missing"):
        read_single_series(tmp_path / "s")
    ds = pydicom.dcmread(files[3])
    del ds.ImagePositionPatient
    ds.save_as(files[3])
    with pytest.raises(DicomError, match=rf"{files[3]}: required tag ImagePositionPatient"):
        read_single_series(tmp_path / "s")
    write_ct_series(tmp_path / "s2", np.zeros(g.shape, np.float32), g, patient_id="P")
    with pytest.raises(DicomError, match="2 series found"):
        read_single_series(tmp_path)


def test_native_kernel_equals_scipy(tmp_path):
    assert bspline.backend() == "native"  # the C compiler that built Caffe is present
    rng = np.random.default_rng(1)
    vol = (rng.random((20, 25, 30)) * 1400 - 1000).astype(np.float32)
    coef = bspline.prefilter(vol)
    ref = ndimage.spline_filter(vol, order=3, mode="mirror", output=np.float64)
    np.testing.assert_allclose(coef, ref, atol=1e-6 * np.abs(ref).max())
    pts = rng.random((500, 3)) * [[16, 21, 26]] + 2
    np.testing.assert_allclose(bspline.sample_points(coef, pts),
                               ndimage.map_coordinates(vol.astype(np.float64), pts.T, order=3,
                                                       mode="mirror"), atol=2e-3)
    o, du, dv = rng.random((6, 3)) * 8 + 4, rng.normal(size=(6, 3)) * 0.2, \
        rng.normal(size=(6, 3)) * 0.2
    planes = bspline.sample_planes(coef, o, du, dv, 9, 7)
    r, q = np.mgrid[0:9, 0:7]
    manual = o[:, None, None] + r[None, ..., None] * dv[:, None, None] + \
        q[None, ..., None] * du[:, None, None]
    np.testing.assert_allclose(planes.reshape(-1), bspline.sample_points(
        coef, manual.reshape(-1, 3)), atol=1e-3)
    np.testing.assert_array_equal(
        bspline.sample_planes_u8(coef, o, du, dv, 9, 7, (-100.0, 200.0)),
        window_to_uint8(planes, (-100.0, 200.0)))


def test_views_from_a_cropped_prefilter_equal_whole_volume_interpolation():
    rng = np.random.default_rng(2)
    g = _geometry((40, 60, 60))
    hu = ndimage.gaussian_filter(rng.normal(0, 300, g.shape), 1).astype(np.float32)
    centre = g.index_to_world([30, 30, 20])
    params = draw_params(rng, 5, (10.0, 30.0), 2.0, True)
    sampler = ViewSampler(hu, g, size=16)
    views = sampler.render_hu(np.repeat(centre[None], 5, 0), params)
    from medtl.datasets.views import plane_vectors

    o, du, dv = plane_vectors(np.repeat(centre[None], 5, 0), params, 16)
    r, q = np.mgrid[0:16, 0:16]
    world = o[:, None, None] + r[None, ..., None] * dv[:, None, None] + \
        q[None, ..., None] * du[:, None, None]
    idx = g.world_to_array(world.reshape(-1, 3))
    ref = ndimage.map_coordinates(hu.astype(np.float64), idx.T, order=3, mode="mirror")
    np.testing.assert_allclose(views.reshape(-1), ref, atol=0.05)


def test_a_point_at_the_view_centre_is_at_the_centre_of_all_three_planes():
    g = _geometry((50, 64, 64))
    hu = np.full(g.shape, -100.0, np.float32)
    target = g.index_to_world([33.3, 29.6, 24.2])
    k, j, i = np.meshgrid(*(np.arange(n) for n in g.shape), indexing="ij")
    world = g.index_to_world(np.stack([i, j, k], -1).reshape(-1, 3)).reshape(*g.shape, 3)
    hu[np.linalg.norm(world - target, axis=-1) < 4.0] = 200.0
    rng = np.random.default_rng(3)
    params = draw_params(rng, 8, (30.0, 60.0), 0.0, True)  # random rotations, no translation
    for params_set in (params, identity_params(2, 40.0)):
        views = ViewSampler(hu, g, size=32).render(
            np.repeat(target[None], len(params_set), 0), params_set, (-100.0, 200.0))
        for view in views:
            for plane in view:
                ys, xs = np.nonzero(plane > 128)
                assert len(ys) > 4
                assert abs(ys.mean() - 15.5) < 0.6 and abs(xs.mean() - 15.5) < 0.6


def test_resize_bilinear_up_and_area_down():
    img = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4) * 5
    up = resize(img, 16)
    assert up.shape == (3, 16, 16) and up.dtype == np.uint8
    # bilinear reproduces a ramp away from the clamped border; area-averaging undoes it there
    np.testing.assert_allclose(resize(up, 4)[:, 1:3, 1:3], img[:, 1:3, 1:3], atol=1)
    ramp = resize(img.astype(np.float32), 16)[0, 6, 2:14]
    np.testing.assert_allclose(np.diff(ramp), 5 / 4, atol=1e-4)
    block = np.kron(np.arange(4).reshape(1, 2, 2), np.ones((1, 2, 2))).astype(np.float32)
    np.testing.assert_array_equal(resize(block, 2), np.arange(4).reshape(1, 2, 2))
