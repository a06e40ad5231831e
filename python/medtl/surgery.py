"""Weight surgery: carry a pretrained caffemodel's weights into another net, layer by name.

In the spirit of fcn.berkeleyvision.org's `surgery.transplant`, but strict: every target layer
is accounted for (copied, reshaped, fresh or mismatched), every source layer the target lacks
is reported as skipped, and a transfer that silently leaves pretrained weights behind is
refused unless the caller says so.

pycaffe aborts the whole process on a Caffe CHECK failure (e.g. `Net.copy_from` with a shape
mismatch), so nothing here hands Caffe a pair it could reject: definitions are checked in
Python first, the caffemodel is read with protobuf, and blob data is copied with numpy.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from math import prod
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from medtl import io
from medtl.caffe_env import caffe, caffe_pb2
from medtl.errors import InputError, MissingFileError, OutputExistsError
from medtl.prototxt import read_net, write_text

Shape = tuple[int, ...]

# Data layers that read files when Caffe sets them up; surgery swaps them for Input layers.
_FILE_DATA_LAYERS = ("Data", "ImageData", "HDF5Data", "WindowData")
_FILLED_LAYERS = ("Convolution", "Deconvolution", "InnerProduct")
# assumed: the input channel count of a data layer whose LMDB is absent. Every model in the
# kit takes 3-channel input (grey or 2-channel data are repeated into 3 channels).
_ASSUMED_CHANNELS = 3


class SurgeryError(InputError):
    """A definition or weights file that surgery cannot use, explained for the user."""


class TransplantError(SurgeryError):
    """A transfer that would leave pretrained weights behind; carries the full report.

    The message lists the layers; `advice` says how to resolve it in the words of the
    interface the transfer came from (Python keywords by default; the command line and the
    experiment specs put theirs)."""

    PYTHON_ADVICE = ("Name renamed layers in fresh= (target) and drop= (source), or pass "
                     "allow_partial=True to accept the loss.")

    def __init__(self, problems: str, report: TransplantReport,
                 advice: str = PYTHON_ADVICE) -> None:
        super().__init__(f"{problems}. {advice}")
        self.problems = problems
        self.report = report

    def advised(self, advice: str) -> TransplantError:
        """The same refusal with another interface's advice."""
        return TransplantError(self.problems, self.report, advice)


class WeightsMismatchError(SurgeryError):
    """A caffemodel whose layers do not fit a net (Caffe would abort the process)."""


@dataclass(frozen=True)
class LayerTransfer:
    """What happened to one layer: its blob shapes in source and target, and why."""

    name: str
    source_shapes: tuple[Shape, ...] | None   # None: not in the source weights
    target_shapes: tuple[Shape, ...] | None   # None: not in the target net
    note: str = ""


@dataclass
class TransplantReport:
    source_weights: str
    target_def: str
    dest_weights: str | None
    seed: int
    copied: list[LayerTransfer] = field(default_factory=list)
    reshaped: list[LayerTransfer] = field(default_factory=list)   # same count, new shape
    fresh: list[LayerTransfer] = field(default_factory=list)      # target filler init kept
    mismatched: list[LayerTransfer] = field(default_factory=list)  # not copied: count differs
    skipped: list[LayerTransfer] = field(default_factory=list)    # source layers left behind
    notes: list[str] = field(default_factory=list)

    CATEGORIES = ("copied", "reshaped", "fresh", "mismatched", "skipped")

    @property
    def problems(self) -> list[LayerTransfer]:
        """Pretrained weights that would be lost: mismatched layers and undropped skips."""
        return self.mismatched + [s for s in self.skipped if s.note != _DROPPED]

    def summary(self) -> str:
        rows = [(cat, t.name, _shapes_text(t.source_shapes), _shapes_text(t.target_shapes),
                 t.note) for cat in self.CATEGORIES for t in getattr(self, cat)]
        header = ("category", "layer", "source shapes", "target shapes", "note")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        lines = [f"transplant {self.source_weights} -> {self.target_def}"
                 + (f" -> {self.dest_weights}" if self.dest_weights else "")
                 + f" (seed {self.seed})"]
        for row in [header, *rows]:
            cells = [c.ljust(w) for c, w in zip(row[:4], widths, strict=True)]
            lines.append("  ".join([*cells, row[4]]).rstrip())
        counts = ", ".join(f"{len(getattr(self, c))} {c}" for c in self.CATEGORIES)
        lines.append(counts)
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(source_weights=self.source_weights,
                                   target_def=self.target_def,
                                   dest_weights=self.dest_weights, seed=self.seed,
                                   notes=list(self.notes))
        for cat in self.CATEGORIES:
            out[cat] = [_jsonable(asdict(t)) for t in getattr(self, cat)]
        return out


_DROPPED = "dropped as asked (drop=)"


def transplant(source_def: Path, source_weights: Path, target_def: Path, dest_weights: Path,
               *, fresh: Iterable[str] = (), drop: Iterable[str] = (),
               allow_partial: bool = False, seed: int = 0,
               overwrite: bool = False) -> TransplantReport:
    """Copy `source_weights` into the net of `target_def` by layer name; save `dest_weights`.

    Every target layer with parameters is *copied* (same name and shapes), *reshaped* (same
    name and element count, new shape: fc -> conv), *fresh* (named in `fresh`, or absent
    from the source: keeps the target's own filler initialisation, drawn after
    `caffe.set_random_seed(seed)`) or *mismatched* (same name, other element count: not
    copied). Source layers with weights that the target lacks are *skipped*; `drop` names
    those the caller expects to leave behind (the source's old classifier). Unless
    `allow_partial`, a mismatched layer or an unexpected skip raises TransplantError naming
    each one, and nothing is written.

    The source layers are those stored in `source_weights` (Caffe's own name matching reads
    the file, not the definition); `source_def` must agree with the file on every layer it
    defines, as Caffe would require. Definitions may be deploy nets or train/val nets: data
    layers are replaced by Input layers of the same shape (see `notes` in the report).
    """
    source_def, source_weights = Path(source_def), Path(source_weights)
    target_def, dest_weights = Path(target_def), Path(dest_weights)
    _require_files(source_def, source_weights, target_def)
    _check_destination(dest_weights, overwrite)
    fresh, drop = tuple(fresh), tuple(drop)

    report = TransplantReport(str(source_weights), str(target_def), None, seed)
    stored = _read_stored(source_weights)
    source_net_param = _instantiable(source_def, report.notes)
    target_net_param = _instantiable(target_def, report.notes)
    _check_names_exist(fresh, target_net_param, target_def, "fresh")

    with _loaded(source_net_param) as source_net:
        _check_weights_match_definition(source_net, stored, source_def, source_weights)
    del source_net

    caffe().set_random_seed(seed)
    with _loaded(target_net_param) as target:
        params = target.params
        for name in fresh:
            if name not in params:
                raise SurgeryError(f"{target_def}: layer {name!r} (in fresh=) has no parameters")
        _classify(report, stored, params, set(fresh), set(drop))
        if report.problems and not allow_partial:
            raise TransplantError(_refusal(report), report)
        for t in report.copied + report.reshaped:
            for blob, proto in zip(params[t.name], stored[t.name], strict=True):
                blob.data[...] = _values(proto, t.name, source_weights).reshape(blob.data.shape)
        _save_atomically(target, dest_weights)
    report.dest_weights = str(dest_weights)
    return report


def random_weights(definition: Path, dest: Path, seed: int, *,
                   unset_filler_std: float | None = 0.01, overwrite: bool = False) -> Path:
    """Save a caffemodel holding `definition`'s own filler initialisation under `seed`.

    Deploy prototxts (BVLC AlexNet, CaffeNet) often set no fillers, and Caffe's default is
    the constant 0; a Convolution / InnerProduct layer without a weight or bias filler gets a
    Gaussian of `unset_filler_std` instead (None keeps Caffe's zeros), and BatchNorm layers
    get neutral statistics, so the result is a usable stand-in for pretrained weights in
    tests and smoke runs.
    """
    definition, dest = Path(definition), Path(dest)
    _require_files(definition)
    _check_destination(dest, overwrite)
    net_param = _instantiable(definition, [])
    if unset_filler_std is not None:
        _fill_unset(net_param, unset_filler_std)
    caffe().set_random_seed(seed)
    with _loaded(net_param) as net:
        _neutral_statistics(net, net_param)
        _save_atomically(net, dest)
    return dest


def _neutral_statistics(net, net_param) -> None:
    """BatchNorm as a trained net holds it: mean 0, variance 1, factor 1 (Caffe leaves all
    three at 0, and a net using stored statistics would divide 0 by 0)."""
    for layer in net_param.layer:
        if layer.type == "BatchNorm" and layer.name in net.params:
            mean, variance, factor = net.params[layer.name]
            mean.data[...], variance.data[...], factor.data[...] = 0.0, 1.0, 1.0


def read_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """Every layer with weights in a caffemodel: name -> float32 arrays in stored shapes."""
    path = Path(path)
    _require_files(path)
    return {name: [_values(b, name, path).reshape(_stored_shape(b)[0]) for b in blobs]
            for name, blobs in _read_stored(path).items()}


def _fits(want: tuple[int, ...], got: tuple[int, ...]) -> bool:
    """Caffe's Blob::ShapeEquals: the same shape, or a legacy 4-D shape padded with 1s."""
    return want == got or (len(got) == 4 and (1,) * (4 - len(want)) + want == got)


def check_weights_fit(net, weights: Path, definition: Path, *, require_all: bool) -> None:
    """Every layer of `net` that `weights` holds has blobs of the net's shapes (else Caffe
    CHECK-fails and aborts the process on `copy_from`); with `require_all`, every layer with
    parameters must be in the file (a missing one would keep random weights)."""
    stored = read_weights(weights)
    problems = []
    for name, blobs in net.params.items():
        if name not in stored:
            if require_all:
                problems.append(f"no weights for layer {name!r}")
            continue
        want = [tuple(b.data.shape) for b in blobs]
        got = [tuple(a.shape) for a in stored[name]]
        if len(want) != len(got) or not all(_fits(w, g) for w, g in zip(want, got, strict=False)):
            problems.append(f"layer {name!r}: file {got}, net {want}")
    if problems:
        raise WeightsMismatchError(f"{weights} does not fit {definition} at "
                                   + "; ".join(problems))


def weights_digest(path: Path) -> str:
    """sha256 over a caffemodel's weights (layer names, blob shapes, float32 values), not its
    bytes: the file also stores the net definition, whose data paths differ between hosts."""
    h = hashlib.sha256()
    for name, blobs in sorted(read_weights(path).items()):
        h.update(name.encode() + b"\0")
        for blob in blobs:
            h.update(str(blob.shape).encode())
            h.update(np.ascontiguousarray(blob, dtype="<f4").tobytes())
    return h.hexdigest()


# --- reading and checking inputs ------------------------------------------------------------

def _require_files(*paths: Path) -> None:
    for path in paths:
        if not path.is_file():
            raise MissingFileError(f"{path} does not exist or is not a file")


def _check_destination(dest: Path, overwrite: bool) -> None:
    if dest.exists() and not overwrite:
        raise OutputExistsError(f"{dest} already exists and is never overwritten: move it "
                                "away or choose another destination")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Caffe CHECK-fails (aborts) when it cannot write the file: find out now.
    if not os.access(dest.parent, os.W_OK):
        raise SurgeryError(f"cannot write to {dest.parent}")


def _read_stored(path: Path) -> dict[str, list[Any]]:
    """Layer name -> BlobProtos of every layer with weights in a caffemodel (V0/V1/V2)."""
    net = caffe_pb2().NetParameter()
    try:
        net.ParseFromString(path.read_bytes())
    except DecodeError as exc:
        raise SurgeryError(f"{path} is not a binary caffemodel (Caffe NetParameter): {exc}"
                           ) from exc
    if net.layer and net.layers:
        raise SurgeryError(f"{path} mixes the V1 'layers' and current 'layer' formats")
    stored: dict[str, list[Any]] = {}
    for layer in [*net.layer, *net.layers]:
        # V0 files nest the layer one level down (V1LayerParameter.layer).
        name, blobs = ((layer.layer.name, layer.layer.blobs)
                       if not layer.name and layer.HasField("layer") else
                       (layer.name, layer.blobs))
        if not blobs:
            continue
        if name in stored:
            raise SurgeryError(f"{path}: layer {name!r} appears twice with weights")
        stored[name] = list(blobs)
    if not stored:
        raise SurgeryError(f"{path} holds no layer with weights (a prototxt or an empty net?)")
    return stored


def _stored_shape(blob) -> tuple[Shape, bool]:
    """A BlobProto's shape, and whether it is Caffe's legacy num/channels/height/width."""
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width), True
    return tuple(blob.shape.dim), False


def _same_shape(blob, target: Shape) -> bool:
    """Caffe's Blob::ShapeEquals: a legacy 4-D shape matches target dims padded with 1s."""
    shape, legacy = _stored_shape(blob)
    if legacy:
        return len(target) <= 4 and (1,) * (4 - len(target)) + tuple(target) == shape
    return shape == tuple(target)


def _values(blob, layer: str, path: Path) -> np.ndarray:
    shape, _ = _stored_shape(blob)
    values = blob.data if len(blob.data) else blob.double_data
    if len(values) != prod(shape):
        raise SurgeryError(f"{path}: layer {layer!r} stores {len(values)} values for shape "
                           f"{_shape_text(shape)} (a damaged file)")
    return np.asarray(values, dtype=np.float32)


def _instantiable(path: Path, notes: list[str]):
    """`path`'s net in the TEST phase, checked and with its data layers made Input layers."""
    try:
        net = read_net(path)
    except text_format.ParseError as exc:
        raise SurgeryError(f"{path}: not a valid net prototxt: {exc}") from exc
    if net.layer and net.layers:
        raise SurgeryError(f"{path} mixes the V1 'layers' and current 'layer' formats")
    if net.layers:
        return _checked_v1(net, path)
    known_types = set(caffe().layer_type_list())
    out = caffe_pb2().NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    produced = set(net.input)
    label_tops: set[str] = set()
    for layer in net.layer:
        if layer.type in _FILE_DATA_LAYERS:
            # One data layer per top, whatever its phase: a train-only net (data layer
            # included in TRAIN) still gives its parameter shapes; train_val keeps the first.
            if set(layer.top) & produced:
                continue
        elif not _in_test_phase(layer):
            continue
        if layer.type not in known_types:
            raise SurgeryError(f"{path}: layer {layer.name!r} has type {layer.type!r}, which "
                               "this Caffe build does not know")
        if set(layer.bottom) & label_tops:
            label_tops.update(layer.top)   # a loss or accuracy: unneeded for weights
            notes.append(f"{path}: layer {layer.name!r} ({layer.type}) left out: it reads "
                         "labels, which surgery does not feed")
            continue
        for bottom in layer.bottom:
            if bottom not in produced:
                raise SurgeryError(f"{path}: layer {layer.name!r} reads blob {bottom!r}, which "
                                   "no earlier layer produces")
        new = out.layer.add()
        new.CopyFrom(layer)
        del new.include[:]
        del new.exclude[:]
        if layer.type in _FILE_DATA_LAYERS:
            _as_input(new, _data_shape(layer, path, notes))
            label_tops.update(layer.top[1:])
        produced.update(layer.top)
    return out


def _checked_v1(net, path: Path):
    """Old-format nets are upgraded by Caffe itself; refuse the ones that would read data."""
    v1 = caffe_pb2().V1LayerParameter
    readers = {v1.DATA, v1.IMAGE_DATA, v1.HDF5_DATA, v1.WINDOW_DATA}
    for layer in net.layers:
        if layer.type in readers:
            raise SurgeryError(f"{path}: old-format (V1) data layer {layer.name!r}; give a "
                               "deploy definition, or upgrade it with Caffe's "
                               "upgrade_net_proto_text tool")
    return net


def _in_test_phase(layer) -> bool:
    """Caffe's NetStateRule filter for phase TEST, level 0 and no stages."""
    test = caffe_pb2().TEST

    def matches(rule) -> bool:
        if rule.HasField("phase") and rule.phase != test:
            return False
        if rule.HasField("min_level") and rule.min_level > 0:
            return False
        if rule.HasField("max_level") and rule.max_level < 0:
            return False
        return not rule.stage   # a rule that needs a stage never matches (none is set)

    if layer.include:
        return any(matches(r) for r in layer.include)
    return not any(matches(r) for r in layer.exclude)


def _data_shape(layer, path: Path, notes: list[str]) -> Shape:
    """N x C x H x W a data layer would produce (N = 1: parameter shapes do not depend on it)."""
    crop = layer.transform_param.crop_size
    if layer.type == "Data":
        channels, height, width = _lmdb_datum_shape(layer) or (_ASSUMED_CHANNELS, 0, 0)
        if not height:
            notes.append(f"{path}: data layer {layer.name!r}: {layer.data_param.source!r} not "
                         f"readable, so {_ASSUMED_CHANNELS} input channels assumed")
    elif layer.type == "ImageData":
        param = layer.image_data_param
        channels = 3 if param.is_color else 1
        height, width = param.new_height, param.new_width
    elif layer.type == "HDF5Data":
        channels, height, width = _hdf5_record_shape(layer, path)
    else:
        raise SurgeryError(f"{path}: cannot tell the input shape of data layer {layer.name!r} "
                           f"({layer.type}); give a deploy definition with an Input layer")
    if crop:
        height = width = crop
    if not (height and width):
        raise SurgeryError(f"{path}: data layer {layer.name!r} has no crop_size and no readable "
                           "source, so its input size is unknown; give a deploy definition")
    notes.append(f"{path}: data layer {layer.name!r} replaced by an Input of "
                 f"{_shape_text((1, channels, height, width))}")
    return (1, channels, height, width)


def _hdf5_record_shape(layer, path: Path) -> Shape:
    """C x H x W of the first file an HDF5Data list names (HDF5 stores preprocessed input)."""
    import h5py

    source = Path(layer.hdf5_data_param.source)
    files = ([line.strip() for line in source.read_text().splitlines() if line.strip()]
             if source.is_file() else [])
    if not files or not Path(files[0]).is_file():
        raise SurgeryError(f"{path}: data layer {layer.name!r}: cannot read the HDF5 list "
                           f"{source}; give a deploy definition with an Input layer")
    with h5py.File(files[0], "r") as f:
        shape = f[layer.top[0]].shape[1:]
    if len(shape) != 3:
        raise SurgeryError(f"{path}: {files[0]}: records of shape {shape}, not C x H x W")
    return tuple(int(d) for d in shape)


def _lmdb_datum_shape(layer) -> Shape | None:
    import lmdb

    source = layer.data_param.source
    if layer.data_param.backend != caffe_pb2().DataParameter.LMDB or not Path(source).is_dir():
        return None
    with lmdb.open(source, readonly=True, lock=False) as env, env.begin() as txn:
        first = next(iter(txn.cursor()), None)
    if first is None:
        return None
    datum = caffe_pb2().Datum()
    datum.ParseFromString(first[1])
    return (datum.channels, datum.height, datum.width)


def _as_input(layer, shape: Shape) -> None:
    tops, name = list(layer.top), layer.name
    layer.Clear()
    layer.name, layer.type = name, "Input"
    layer.top.extend(tops)
    for i in range(len(tops)):
        layer.input_param.shape.add().dim.extend(shape if i == 0 else (1,))


def _fill_unset(net, std: float) -> None:
    for layer in net.layer:
        if layer.type not in _FILLED_LAYERS:
            continue
        param = (layer.inner_product_param if layer.type == "InnerProduct"
                 else layer.convolution_param)
        for filler in ("weight_filler", "bias_filler"):
            if not param.HasField(filler):
                getattr(param, filler).type = "gaussian"
                getattr(param, filler).std = std


def _check_names_exist(names: tuple[str, ...], net, path: Path, argument: str) -> None:
    layer_names = {layer.name for layer in [*net.layer, *net.layers]}
    missing = [n for n in names if n not in layer_names]
    if missing:
        raise SurgeryError(f"{path} has no layer {', '.join(map(repr, missing))} (named in "
                           f"{argument}=)")


def _check_weights_match_definition(net, stored, definition: Path, weights: Path) -> None:
    for name, blobs in net.params.items():
        if name not in stored:
            raise SurgeryError(f"{weights} has no weights for layer {name!r} of {definition}: "
                               "the two do not belong together")
        shapes = _target_shapes(blobs)
        if len(stored[name]) != len(shapes) or not all(
                _same_shape(b, s) for b, s in zip(stored[name], shapes, strict=True)):
            raise SurgeryError(
                f"{weights} does not match {definition} at layer {name!r}: stored "
                f"{_shapes_text(_source_shapes(stored[name]))}, defined {_shapes_text(shapes)}")


# --- classifying and copying ----------------------------------------------------------------

def _classify(report: TransplantReport, stored, params, fresh: set[str],
              drop: set[str]) -> None:
    for name, blobs in params.items():
        target = _target_shapes(blobs)
        source = _source_shapes(stored[name]) if name in stored else None
        if name in fresh:
            report.fresh.append(LayerTransfer(name, source, target, "fresh as asked (fresh=)"))
        elif source is None:
            report.fresh.append(LayerTransfer(name, None, target, "not in the source weights"))
        elif len(source) != len(target):
            report.mismatched.append(LayerTransfer(
                name, source, target, f"{len(source)} blobs in the source, {len(target)} here"))
        elif all(_same_shape(b, s) for b, s in zip(stored[name], target, strict=True)):
            report.copied.append(LayerTransfer(name, source, target))
        elif all(prod(s) == prod(t) for s, t in zip(source, target, strict=True)):
            report.reshaped.append(LayerTransfer(name, source, target, "same element count"))
        else:
            report.mismatched.append(LayerTransfer(name, source, target,
                                                   "element counts differ"))
    for name, blobs in stored.items():
        if name not in params:
            note = _DROPPED if name in drop else "not in the target net"
            report.skipped.append(LayerTransfer(name, _source_shapes(blobs), None, note))


def _refusal(report: TransplantReport) -> str:
    parts = []
    if report.mismatched:
        parts.append("mismatched (would stay freshly initialised): " + "; ".join(
            f"{t.name} (source {_shapes_text(t.source_shapes)}, target "
            f"{_shapes_text(t.target_shapes)})" for t in report.mismatched))
    lost = [t for t in report.skipped if t.note != _DROPPED]
    if lost:
        parts.append("source layers the target lacks: " + ", ".join(t.name for t in lost))
    return (f"refusing a partial transfer of {report.source_weights} into "
            f"{report.target_def}: " + " | ".join(parts))


@contextmanager
def _loaded(net_param) -> Iterator[Any]:
    """A TEST-phase pycaffe Net from an in-memory NetParameter."""
    c = caffe()
    with tempfile.TemporaryDirectory(prefix="medtl-surgery-") as tmp:
        path = write_text(Path(tmp) / "net.prototxt", net_param)
        net = c.Net(str(path), c.TEST)
    yield net


def _save_atomically(net, dest: Path) -> None:
    with io.atomic_path(dest) as tmp:
        net.save(str(tmp))


def _target_shapes(blobs) -> tuple[Shape, ...]:
    return tuple(tuple(int(d) for d in b.data.shape) for b in blobs)


def _source_shapes(blobs) -> tuple[Shape, ...]:
    return tuple(_stored_shape(b)[0] for b in blobs)


def _shape_text(shape: Shape) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def _shapes_text(shapes: tuple[Shape, ...] | None) -> str:
    return "-" if shapes is None else ", ".join(_shape_text(s) for s in shapes)


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value
