"""2.5D views at the first and last slices of a scan equal SimpleITK's B-spline resampling
(ITK's mirror boundary; outside the volume's voxels, the padding value) (issue 12 item 4)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from medtl.datasets.formats import bspline
from medtl.datasets.formats.geometry import Geometry
from medtl.datasets.views import ViewSampler, identity_params, plane_vectors

PAD = -1024.0
SIZE = 32
SLAB = 5


def _slab_volume() -> tuple[np.ndarray, Geometry]:
    """Soft tissue with a bright slab filling the first and the last five slices (a scan that
    starts and ends inside the body: nothing like air beyond them)."""
    rng = np.random.default_rng(5)
    shape = (18, 40, 44)
    hu = ndimage.gaussian_filter(rng.normal(40, 60, shape), 1.0).astype(np.float32)
    hu[:SLAB] = 900.0
    hu[-SLAB:] = 900.0
    tilt = Rotation.from_euler("z", 12, degrees=True).as_matrix()
    return hu, Geometry(np.array([-30.0, 10.0, -200.0]), np.array([0.8, 0.9, 2.5]), tilt, shape)


def _sitk_planes(hu: np.ndarray, g: Geometry, o: np.ndarray, du: np.ndarray, dv: np.ndarray
                 ) -> np.ndarray:
    """SimpleITK's cubic B-spline at every pixel of each plane (world origin, column and row
    steps), `PAD` outside the image (sitk.Resample's default value)."""
    image = sitk.GetImageFromArray(hu)
    image.SetOrigin(tuple(g.origin))
    image.SetSpacing(tuple(g.spacing))
    image.SetDirection(tuple(np.asarray(g.direction).ravel()))
    out = []
    for origin, u, v in zip(o, du, dv, strict=True):
        normal = np.cross(u, v)
        axes = np.stack([u / np.linalg.norm(u), v / np.linalg.norm(v),
                         normal / np.linalg.norm(normal)], 1)
        ref = sitk.Image(SIZE, SIZE, 1, sitk.sitkFloat32)
        ref.SetOrigin(tuple(origin))
        ref.SetSpacing((float(np.linalg.norm(u)), float(np.linalg.norm(v)), 1.0))
        ref.SetDirection(tuple(axes.ravel()))
        res = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkBSpline, PAD,
                            sitk.sitkFloat32)
        out.append(sitk.GetArrayFromImage(res)[0])
    return np.stack(out)


def _edge_views(hu: np.ndarray, g: Geometry, k: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views (kit, SimpleITK) centred on slice index k (the planes cross the scan's edge), and
    the slice index of every pixel."""
    centres = g.index_to_world(np.array([[21.3, 19.6, k], [18.7, 22.2, k]]))
    params = identity_params(2, 36.0)
    views = ViewSampler(hu, g, size=SIZE, pad_hu=PAD).render_hu(centres, params)
    o, du, dv = plane_vectors(centres, params, SIZE)
    r, q = np.mgrid[0:SIZE, 0:SIZE]
    world = o[:, None, None] + r[None, ..., None] * dv[:, None, None] \
        + q[None, ..., None] * du[:, None, None]
    slices = g.world_to_array(world.reshape(-1, 3))[:, 0].reshape(-1, SIZE, SIZE)
    return views.reshape(-1, SIZE, SIZE), _sitk_planes(hu, g, o, du, dv), slices


@pytest.mark.parametrize("k", [0.37, 1.1, 16.6, 17.2])
def test_views_at_the_first_and_last_slices_equal_simpleitk(k):
    hu, g = _slab_volume()
    mine, ref, _ = _edge_views(hu, g, k)
    assert np.any(ref == PAD) and np.any(ref > 500)  # the planes do cross the scan's edge
    np.testing.assert_allclose(mine, ref, atol=0.05)


def test_no_white_line_at_the_slab_edges():
    """On the first and last slices, a constant slab stays constant under the mirror rule (no
    overshoot beyond the data range); outside the scan the views are the padding value."""
    hu, g = _slab_volume()
    n = hu.shape[0]
    for k in (0.37, 17.2):
        mine, ref, slices = _edge_views(hu, g, k)
        inside = ref != PAD
        edge = inside & ((slices < 1.0) | (slices > n - 2.0)) & (mine > 500)
        assert edge.sum() > 100
        assert mine[edge].max() <= 900.0 + 0.05  # the old -1024 padding gave 1414 HU here
        np.testing.assert_allclose(mine[edge], 900.0, atol=2.0)  # the ringing of slice 5's step
        np.testing.assert_array_equal(mine[~inside], PAD)


def test_native_kernel_and_scipy_agree_at_the_edges(monkeypatch):
    hu, g = _slab_volume()
    native, _, _ = _edge_views(hu, g, 0.37)
    monkeypatch.setattr(bspline, "native", lambda: None)
    fallback, ref, _ = _edge_views(hu, g, 0.37)
    np.testing.assert_allclose(fallback, native, atol=0.05)
    np.testing.assert_allclose(fallback, ref, atol=0.05)


def test_a_view_wholly_outside_the_scan_is_padding():
    hu, g = _slab_volume()
    centre = g.index_to_world(np.array([[20.0, 20.0, 40.0]]))  # 22 slices past the last
    views = ViewSampler(hu, g, size=SIZE, pad_hu=PAD).render_hu(centre, identity_params(1, 20.0))
    np.testing.assert_array_equal(views, PAD)
