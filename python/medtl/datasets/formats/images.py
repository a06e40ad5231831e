"""Images named by a candidate manifest: 2D frames (PNG, JPEG, TIFF, BMP) through Pillow, volumes
(a DICOM series folder through `medtl.datasets.formats.dicom`, NIfTI / MetaImage / NRRD through
SimpleITK), and the patch helpers every 2D sampler uses.

Conventions: a frame is H x W x 3 uint8 RGB; patches are C x H x W (Caffe's layout) in BGR
order, Caffe's and the BVLC models' channel order. Pixel (c, r) covers [c, c+1) x [r, r+1). A
volume is float32 (k, j, i) with a `medtl.datasets.formats.geometry.Geometry` (world = ITK
physical coordinates, LPS mm); NIfTI files are read through ITK, which converts them from RAS."""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medtl.datasets.channels import to_caffe
from medtl.datasets.formats.geometry import Geometry
from medtl.datasets.formats.resize import resize
from medtl.errors import InputError

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")


class ImageError(InputError):
    """An image or volume that cannot be read; the message names the file."""


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only."""
    with _open(path) as im:
        return im.size


def _to_8bit(im: Image.Image, path: Path) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        # 16-bit images are scaled by their full range (a 12-bit image stays darker)
        return Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8))
    if im.mode == "F":
        raise ImageError(f"{path}: floating-point images are not supported; save 8 or 16 bit")
    return im


def read_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB (gray images repeated, alpha dropped)."""
    with _open(path) as im:
        try:
            im.load()
            return np.asarray(_to_8bit(im, path).convert("RGB"), dtype=np.uint8).copy()
        except OSError as exc:
            raise ImageError(f"{path}: cannot be decoded ({exc})") from None


def read_gray(path: Path) -> np.ndarray:
    """H x W uint8 (ITU-R 601 luma for colour images, as Pillow's "L")."""
    with _open(path) as im:
        try:
            im.load()
            return np.asarray(_to_8bit(im, path).convert("L"), dtype=np.uint8).copy()
        except OSError as exc:
            raise ImageError(f"{path}: cannot be decoded ({exc})") from None


def rgb_to_bgr_chw(image: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB -> 3 x H x W BGR (`medtl.datasets.channels`: R in Caffe channel 2)."""
    return to_caffe(image.transpose(2, 0, 1))


def gray_to_chw3(gray: np.ndarray) -> np.ndarray:
    """H x W gray -> 3 x H x W, the gray channel repeated (Tajbakhsh 2016 Sec. VI-D)."""
    return np.ascontiguousarray(np.broadcast_to(gray, (3, *gray.shape)))


# ------------------------------------------------------------------ patches

def crop_padded(image: np.ndarray, x0: int, y0: int, width: int, height: int,
                fill: int = 0) -> np.ndarray:
    """Pixels [y0, y0+height) x [x0, x0+width) of a C x H x W image, `fill` outside it."""
    c, h, w = image.shape
    out = np.full((c, height, width), fill, dtype=image.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + width, w), min(y0 + height, h)
    if sx1 > sx0 and sy1 > sy0:
        out[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[:, sy0:sy1, sx0:sx1]
    return out


def box_patch(image: np.ndarray, x0: float, y0: float, x1: float, y1: float, size: int,
              fill: int = 0) -> np.ndarray:
    """The box [x0, x1) x [y0, y1) of a C x H x W image resized to size x size (bilinear up,
    area average down). The box snaps to whole pixels (its edges move by at most half a
    pixel, so a patch is centred on the box within half a source pixel)."""
    ix0, iy0 = int(np.floor(x0 + 0.5)), int(np.floor(y0 + 0.5))
    width = max(1, int(np.floor(x1 + 0.5)) - ix0)
    height = max(1, int(np.floor(y1 + 0.5)) - iy0)
    return resize(crop_padded(image, ix0, iy0, width, height, fill), size, size)


def square_patch(image: np.ndarray, cx: float, cy: float, side: float, size: int,
                 fill: int = 0) -> np.ndarray:
    """A side x side square centred on (cx, cy), resized to size x size."""
    half = side / 2.0
    return box_patch(image, cx - half, cy - half, cx + half, cy + half, size, fill)


DIHEDRAL = ("identity", "rot90", "rot180", "rot270", "flip_lr", "transpose", "flip_ud",
            "anti_transpose")


def dihedral(patch: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 mirror / flip / rotation variants of a square C x H x W patch
    (k = 0 identity; 1-3 rotations by 90 degrees; 4-7 those mirrored left-right)."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral variant {k} outside 0..7")
    out = np.rot90(patch, k % 4, axes=(1, 2))
    if k >= 4:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


# ------------------------------------------------------------------ volumes

@dataclass
class VolumeImage:
    hu: np.ndarray           # float32 (k, j, i)
    geometry: Geometry
    digest: str              # sha256 of the file(s)
    files: int
    notes: list[str] = field(default_factory=list)  # DICOM: files skipped, padding read as air


def is_volume_path(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return True
    name = path.name.lower()
    return path.is_file() and any(name.endswith(s) for s in VOLUME_SUFFIXES)


def _sitk():
    import SimpleITK

    return SimpleITK


def _itk_geometry(origin, spacing, direction, size_ijk, path: Path) -> Geometry:
    try:
        return Geometry(origin=np.asarray(origin, float), spacing=np.asarray(spacing, float),
                        direction=np.asarray(direction, float).reshape(3, 3),
                        shape=(int(size_ijk[2]), int(size_ijk[1]), int(size_ijk[0])))
    except ValueError as exc:
        raise ImageError(f"{path}: {exc}") from None


def volume_geometry(path: Path) -> Geometry:
    """The geometry of a volume from its header(s) only."""
    path = Path(path)
    if path.is_dir():
        from medtl.datasets.formats.dicom import DicomError, read_single_series

        try:
            return read_single_series(path, pixels=False).geometry
        except DicomError as exc:
            raise ImageError(str(exc)) from None
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        _check_nifti_complete(path)   # a damaged or cut .nii.gz says so
        raise ImageError(f"{path}: not a readable volume ({str(exc).strip().splitlines()[-1]})"
                         ) from None
    if reader.GetDimension() != 3:
        raise ImageError(f"{path}: a {reader.GetDimension()}D image, expected a 3D volume")
    return _itk_geometry(reader.GetOrigin(), reader.GetSpacing(), reader.GetDirection(),
                         reader.GetSize(), path)


_NIFTI_HEAD = 540   # bytes: a NIfTI-2 header (NIfTI-1: 348)


def _nifti_need(head: bytes) -> int | None:
    """The bytes a NIfTI-1 or -2 file needs (vox_offset + voxels x bitpix / 8), from its header;
    None when the header is not one."""
    for order in "<>":
        size = struct.unpack(order + "i", head[:4])[0] if len(head) >= 4 else 0
        if size == 348 and len(head) >= 348:
            dims = struct.unpack(order + "8h", head[40:56])
            bitpix = struct.unpack(order + "h", head[72:74])[0]
            offset = int(struct.unpack(order + "f", head[108:112])[0])
        elif size == 540 and len(head) >= 540:
            dims = struct.unpack(order + "8q", head[16:80])
            bitpix = struct.unpack(order + "h", head[14:16])[0]
            offset = struct.unpack(order + "q", head[168:176])[0]
        else:
            continue
        if not 1 <= dims[0] <= 7:
            return None
        return offset + int(np.prod(dims[1:1 + dims[0]], dtype=np.int64)) * bitpix // 8
    return None


def _nifti_payload(path: Path) -> tuple[bytes, int]:
    """(the first header bytes, the whole length) of a NIfTI file, decompressed when .gz."""
    if not path.name.lower().endswith(".gz"):
        with open(path, "rb") as f:
            return f.read(_NIFTI_HEAD), path.stat().st_size
    head, total = b"", 0
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            while data:
                try:
                    out = inflate.decompress(data)
                except zlib.error as exc:
                    raise ImageError(f"{path}: damaged gzip data ({exc}); download or export "
                                     "it again") from None
                head += out[:max(0, _NIFTI_HEAD - len(head))]
                total += len(out)
                data = inflate.unused_data if inflate.eof else b""
                if data.strip(b"\0"):   # a further gzip member (zeros after one are padding)
                    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                else:
                    data = b""
    if not inflate.eof:
        raise ImageError(f"{path}: truncated: the gzip stream ends after {total:,} bytes; "
                         "download or export it again")
    return head, total


def _check_nifti_complete(path: Path) -> None:
    """ITK reads a NIfTI file whose data end early and fills the rest with zeros (0 HU)."""
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return
    try:
        head, total = _nifti_payload(path)
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    need = _nifti_need(head)
    if need is not None and total < need:
        raise ImageError(f"{path}: truncated: {total:,} bytes where its header needs "
                         f"{need:,}; download or export it again")


def _itk_reason(exc: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    # ITK appends a stale errno ("No such file or directory") to some read failures
    useful = [ln for ln in lines if not ln.startswith("Reason:")]
    return re.sub(r"^ITK ERROR: \w+\(0x[0-9a-fA-F]+\): ", "",
                  (useful or lines or ["unknown error"])[-1])


def read_volume(path: Path) -> VolumeImage:
    """A DICOM series folder or a NIfTI / MetaImage / NRRD file as a float32 volume."""
    path = Path(path)
    if path.is_dir():
        from medtl.datasets.formats.dicom import DicomError, read_single_series

        try:
            vol = read_single_series(path)
        except DicomError as exc:
            raise ImageError(str(exc)) from None
        return VolumeImage(vol.hu, vol.geometry, vol.digest, len(vol.files), vol.notes)
    _check_nifti_complete(path)
    volume_geometry(path)   # the header first: a file that is no volume at all says so
    sitk = _sitk()
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ImageError(f"{path}: damaged or truncated: its header reads but its pixel data "
                         f"do not ({_itk_reason(exc)})") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(f"{path}: expected a 3D scalar volume")
    geometry = _itk_geometry(img.GetOrigin(), img.GetSpacing(), img.GetDirection(),
                             img.GetSize(), path)
    hu = sitk.GetArrayFromImage(img).astype(np.float32)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return VolumeImage(hu, geometry, digest, 1)


def write_nifti(path: Path, hu: np.ndarray, geometry: Geometry) -> Path:
    """A (k, j, i) volume as a NIfTI (or any SimpleITK format by suffix) file (phantoms)."""
    sitk = _sitk()
    img = sitk.GetImageFromArray(np.asarray(hu, dtype=np.int16))
    img.SetOrigin(tuple(float(v) for v in geometry.origin))
    img.SetSpacing(tuple(float(v) for v in geometry.spacing))
    img.SetDirection(tuple(float(v) for v in np.asarray(geometry.direction).ravel()))
    sitk.WriteImage(img, str(path))
    return Path(path)
