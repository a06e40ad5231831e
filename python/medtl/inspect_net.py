"""`medtl inspect`: what a net and its solver will train, layer by layer.

The net is instantiated in real Caffe (data layers replaced by DummyData of the same shape,
so a dataset need not exist) to read every output and parameter shape; the solver gives the
learning-rate schedule; the comments medtl writes into generated files give each value's
provenance. Rows are the layers the file declares for the net's phase: the Split layers Caffe
inserts where one blob feeds several layers are left out, and in-place layers (ReLU, Dropout)
show the blob they rewrite.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from medtl.caffe_env import caffe, caffe_pb2
from medtl.errors import InputError
from medtl.finetune import constant_fillers
from medtl.generate import WHY
from medtl.prototxt import read_net

DATA_LAYERS = ("Data", "HDF5Data", "ImageData", "WindowData")
FLOAT_BYTES = 4


class InspectError(InputError):
    """A file that cannot be inspected, with the reason."""


@dataclass
class LayerRow:
    name: str
    type: str
    top_shapes: list[list[int]]
    param_shapes: list[list[int]]
    param_count: int
    mults: list[list[float]]            # [lr_mult, decay_mult] per parameter blob
    learning: bool
    effective_lr: dict[str, float]      # "epoch N" -> weights' learning rate
    provenance: str
    weights: str = ""                   # with a weights file: "copied", "absent", "shape ..."


@dataclass
class Inspection:
    net: str
    solver: str | None
    phase: str
    batch_size: int | None
    iters_per_epoch: int | None
    layers: list[LayerRow]
    total_params: int
    trainable_params: int
    memory_bytes: dict[str, int]
    solver_fields: dict[str, Any] = field(default_factory=dict)
    solver_provenance: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ reading inputs

def is_solver(path: Path) -> bool:
    return _parse(path).DESCRIPTOR.name == "SolverParameter"


def _parse(path: Path):
    """The file's NetParameter, else its SolverParameter (each file is parsed once)."""
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise InspectError(f"{path}: not a prototxt (a binary file; a .caffemodel goes to "
                           "--weights)") from None
    if not text.strip():
        raise InspectError(f"{path}: empty file, neither a Caffe net nor a solver")
    net = caffe_pb2().NetParameter()
    try:
        text_format.Parse(text, net)
        return net
    except text_format.ParseError:
        pass
    solver = caffe_pb2().SolverParameter()
    try:
        text_format.Parse(text, solver)
    except text_format.ParseError as exc:
        raise InspectError(f"{path}: neither a Caffe net nor a solver ({exc})") from None
    return solver


def _resolve(ref: str, anchor: Path) -> Path:
    """A path named inside `anchor`: absolute, or relative to the cwd or an ancestor of it."""
    candidate = Path(ref)
    if candidate.is_absolute():
        return candidate
    for base in [Path.cwd(), *anchor.resolve().parents]:
        if (base / candidate).is_file():
            return base / candidate
    raise InspectError(f"{anchor}: cannot find {ref!r} (relative to the working directory "
                       "or any folder above the file)")


def comment_provenance(path: Path) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """(layer -> why, header field -> (value, source)) from the comments medtl writes."""
    layers: dict[str, str] = {}
    header: dict[str, tuple[str, str]] = {}
    current = None
    for line in Path(path).read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith('name: "') and current is None:
            current = stripped[len('name: "'):-1]
        elif stripped == "layer {":
            current = None
        elif stripped.startswith(f"# {WHY}") and current is not None:
            layers[current] = stripped[len(f"# {WHY}"):]
        elif line.startswith("# ") and " <- " in line and ":" in line:
            key, _, rest = line[2:].partition(":")
            value, _, source = rest.partition(" <- ")
            header[key.strip()] = (value.strip(), source.strip())
    return layers, header


def _input_shape(net, net_path: Path, override: tuple[int, ...] | None) -> tuple[int, ...]:
    if override:
        return override
    for layer in net.layer:
        if layer.type in DATA_LAYERS and layer.transform_param.crop_size:
            crop = layer.transform_param.crop_size
            return (3, crop, crop)
    deploy = net_path.with_name("deploy.prototxt")
    if deploy.is_file() and deploy != net_path:
        shape = _deploy_input(str(deploy), deploy.stat().st_mtime_ns)
        if shape:
            return shape
    raise InspectError(f"{net_path}: the input size is not in the net (no crop_size, no "
                       "deploy.prototxt beside it); give --input-shape C,H,W")


@lru_cache(maxsize=64)
def _deploy_input(deploy: str, mtime_ns: int) -> tuple[int, ...] | None:
    """C,H,W of a deploy net's Input layer (cached: every net of a folder reads it)."""
    del mtime_ns  # part of the cache key only: an edited file is read again
    for layer in read_net(Path(deploy)).layer:
        if layer.type == "Input":
            return tuple(layer.input_param.shape[0].dim[1:])
    return None


def _label_shape(net, label_top: str, batch: int) -> list[int]:
    """[batch] for softmax labels; [batch, K] when a sigmoid loss reads the label."""
    producers = {top: layer for layer in net.layer for top in layer.top}
    for layer in net.layer:
        if layer.type == "SigmoidCrossEntropyLoss" and label_top in layer.bottom:
            scores = producers.get(layer.bottom[0])
            if scores is not None and scores.type == "InnerProduct":
                return [batch, scores.inner_product_param.num_output]
    return [batch]


def with_dummy_data(net, net_path: Path, input_shape: tuple[int, ...] | None,
                    batch_size: int | None = None):
    """A copy of `net` whose data layers are DummyData of the same shapes (or batch size)."""
    out = caffe_pb2().NetParameter()
    out.CopyFrom(net)
    for layer in out.layer:
        if layer.type not in DATA_LAYERS:
            continue
        batch = batch_size or (layer.data_param.batch_size or layer.hdf5_data_param.batch_size
                               or layer.image_data_param.batch_size or 1)
        shapes = [[batch, *_input_shape(net, net_path, input_shape)]]
        if len(layer.top) > 1:
            shapes.append(_label_shape(net, layer.top[1], batch))
        name, tops, include = layer.name, list(layer.top), list(layer.include)
        layer.Clear()
        layer.name, layer.type = name, "DummyData"
        layer.top.extend(tops)
        layer.include.extend(include)
        for dims in shapes:
            layer.dummy_data_param.shape.add().dim.extend(dims)
        layer.dummy_data_param.data_filler.add(type="constant", value=0)
    return out


def _phase_of(net) -> str:
    phases = {inc.phase for layer in net.layer for inc in layer.include if inc.HasField("phase")}
    return "TEST" if phases == {caffe_pb2().TEST} else "TRAIN"


# ------------------------------------------------------------------ learning-rate schedule

def _f32(value: float) -> float:
    """Caffe stores rates as float32; 7 significant digits give back the written value."""
    return float(f"{value:.7g}")


def learning_rate(solver, iteration: int) -> float:
    """Caffe's SGDSolver::GetLearningRate for the common policies."""
    base, policy = solver.base_lr, solver.lr_policy
    if policy == "fixed":
        return base
    if policy == "step":
        return base * solver.gamma ** (iteration // solver.stepsize)
    if policy == "multistep":
        return base * solver.gamma ** sum(1 for s in solver.stepvalue if iteration >= s)
    if policy == "exp":
        return base * solver.gamma ** iteration
    if policy == "inv":
        return base * (1 + solver.gamma * iteration) ** (-solver.power)
    if policy == "poly":
        return base * (1 - iteration / solver.max_iter) ** solver.power
    raise InspectError(f"unsupported lr_policy {policy!r}")


# ------------------------------------------------------------------ inspection

def inspect(path: Path, *, weights: Path | None = None, train_size: int | None = None,
            epochs: tuple[float, ...] = (0,), input_shape: tuple[int, ...] | None = None
            ) -> Inspection:
    """Inspect a net or a solver prototxt (a solver brings its training net)."""
    path = Path(path)
    if not path.is_file():
        raise InspectError(f"{path}: no such file")
    solver = None
    solver_prov: dict[str, tuple[str, str]] = {}
    net_path = path
    net = _parse(path)
    if net.DESCRIPTOR.name == "SolverParameter":
        solver = net
        ref = solver.train_net or solver.net
        if not ref:
            raise InspectError(f"{path}: the solver names no train_net or net")
        net_path = _resolve(ref, path)
        _, solver_prov = comment_provenance(path)
        net = read_net(net_path)
    layer_prov, _ = comment_provenance(net_path)
    phase = _phase_of(net)
    runnable = with_dummy_data(net, net_path, input_shape)
    shapes = _caffe_shapes(runnable, phase)
    batch = next((shapes.blobs[layer.top[0]][0] for layer in runnable.layer
                  if layer.type in ("DummyData", "Input") and layer.top[0] in shapes.blobs),
                 None)
    ipe = _iters_per_epoch(train_size, batch, solver_prov)
    if solver is not None and train_size is not None:
        _rescale_to_epochs(solver, solver_prov, ipe, train_size)
    stored = _stored_shapes(weights) if weights else None

    rows = []
    for proto, param_shapes in _declared_layers(shapes, runnable, phase):
        name = proto.name
        params = [list(s) for s in param_shapes]
        count = sum(math.prod(s) for s in params)
        mults = ([[_f32(p.lr_mult), _f32(p.decay_mult)] for p in proto.param]
                 or [[1.0, 1.0]] * len(params))
        mults += [[1.0, 1.0]] * (len(params) - len(mults))
        if proto.type == "BatchNorm" and not proto.param:
            mults = [[0.0, 0.0]] * len(params)  # Caffe never learns BatchNorm statistics
        learning = bool(params) and any(m[0] > 0 for m in mults[: len(params)])
        eff = {}
        if solver is not None and params:
            for e in epochs:
                it = int(e * ipe) if ipe else 0
                label = f"epoch {e:g}" if ipe else "iteration 0"
                eff[label] = _f32(learning_rate(solver, it) * mults[0][0])
        top_shapes = [list(shapes.blobs[t]) for t in proto.top if t in shapes.blobs]
        rows.append(LayerRow(
            name=name, type=proto.type, top_shapes=top_shapes, param_shapes=params,
            param_count=count, mults=mults[: len(params)], learning=learning,
            effective_lr=eff, provenance=layer_prov.get(name, ""),
            weights=_weights_state(name, params, stored) if stored is not None else ""))

    total = sum(r.param_count for r in rows)
    trainable = sum(r.param_count for r in rows if r.learning)
    activations = shapes.activations
    memory = {
        "activations (data + diff)": 2 * activations * FLOAT_BYTES,
        "parameters (data + diff + solver history)": 3 * total * FLOAT_BYTES,
    }
    memory["total"] = sum(memory.values())
    fields_ = {f.name: _plain(v) for f, v in solver.ListFields()} if solver is not None else {}
    return Inspection(net=str(net_path), solver=str(path) if solver is not None else None,
                      phase=phase, batch_size=batch, iters_per_epoch=ipe, layers=rows,
                      total_params=total, trainable_params=trainable, memory_bytes=memory,
                      solver_fields=fields_,
                      solver_provenance={k: src for k, (_, src) in solver_prov.items()})


@dataclass(frozen=True)
class _Shapes:
    """What Caffe builds from a net: per layer (Caffe's order) its parameter shapes, per blob
    its shape, and the number of activation values."""

    layers: tuple[tuple[str, str, tuple[tuple[int, ...], ...]], ...]   # name, type, params
    blobs: dict[str, tuple[int, ...]]
    activations: int


def _caffe_shapes(runnable, phase: str) -> _Shapes:
    """Shapes of `runnable` as real Caffe builds it.

    Rates, fillers and the net's name change no shape, so they are cleared before the net is
    built, and nets that differ only in them (every policy of a model) are built once per
    process; constant fillers also spare filling 145M Gaussian weights (OverFeat) to read shapes.
    """
    key = caffe_pb2().NetParameter()
    key.CopyFrom(runnable)
    key.ClearField("name")
    for layer in key.layer:
        for spec in layer.param:
            spec.ClearField("lr_mult")
            spec.ClearField("decay_mult")
        constant_fillers(layer)
    return _build_shapes(text_format.MessageToString(key), phase)


@lru_cache(maxsize=16)
def _build_shapes(net_text: str, phase: str) -> _Shapes:
    c = caffe()
    c.set_mode_cpu()
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as tmp:
        tmp.write(net_text)
        tmp.flush()
        cnet = c.Net(tmp.name, c.TRAIN if phase == "TRAIN" else c.TEST)
    layers = tuple((name, cnet.layers[i].type, tuple(tuple(b.shape) for b in cnet.layers[i].blobs))
                   for i, name in enumerate(cnet._layer_names))
    return _Shapes(layers=layers,
                   blobs={name: tuple(blob.shape) for name, blob in cnet.blobs.items()},
                   activations=sum(blob.count for blob in cnet.blobs.values()))


def _declared_layers(shapes: _Shapes, runnable, phase: str
                     ) -> list[tuple[Any, tuple[tuple[int, ...], ...]]]:
    """(declared layer, its parameter shapes) for every layer Caffe built, in Caffe's order.

    Caffe adds a Split layer wherever one blob feeds several layers (`<blob>_<layer>_<i>_split`)
    and leaves out the layers of the other phase; rows follow the file, so neither appears.
    """
    phase_id = getattr(caffe_pb2(), phase)
    declared = {layer.name: layer for layer in runnable.layer if _in_phase(layer, phase_id)}
    return [(declared[name], params) for name, kind, params in shapes.layers if kind != "Split"]


def _in_phase(layer, phase_id: int) -> bool:
    """Caffe's phase rule (stages and levels aside): include wins, else no matching exclude."""
    def matches(rule) -> bool:
        return not rule.HasField("phase") or rule.phase == phase_id
    if layer.include:
        return any(matches(rule) for rule in layer.include)
    return not any(matches(rule) for rule in layer.exclude)


def _iters_per_epoch(train_size: int | None, batch: int | None,
                     header: dict[str, tuple[str, str]]) -> int | None:
    """From --train-size, else from the iterations-per-epoch a generated solver records."""
    if train_size is not None:
        if train_size <= 0:
            raise InspectError("--train-size must be positive")
        return math.ceil(train_size / (batch or 1))
    value = header.get("iters_per_epoch", ("", ""))[0]
    return int(value) if value.isdigit() else None


def _rescale_to_epochs(solver, header: dict[str, tuple[str, str]], ipe: int,
                       train_size: int) -> None:
    """Recompute a generated solver's iteration counts for another training-set size.

    medtl records the paper's epoch-based values (step_epochs, max_epochs) in the header, so
    the schedule can follow the data as a run would; a solver without them keeps its counts.
    """
    for field_name, epochs_key in (("stepsize", "step_epochs"), ("max_iter", "max_epochs")):
        epochs = header.get(epochs_key, ("", ""))[0]
        try:
            value = int(float(epochs) * ipe)
        except ValueError:
            continue
        if field_name == "stepsize" and solver.lr_policy != "step":
            continue
        setattr(solver, field_name, value)
        header[field_name] = (str(value), f"derived: {epochs} epochs x {ipe} iterations "
                                          f"(--train-size {train_size})")


def _plain(value: Any) -> Any:
    """A protobuf field value as plain Python; float32 fields rounded to what was written."""
    if isinstance(value, float):
        return _f32(value)
    if isinstance(value, (str, bytes, int, bool)):
        return value
    try:
        return list(value)
    except TypeError:
        return str(value)


def _stored_shapes(weights: Path) -> dict[str, list[list[int]]]:
    path = Path(weights)
    if not path.is_file():
        raise InspectError(f"{path}: no such weights file")
    model = caffe_pb2().NetParameter()
    try:
        model.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError or RuntimeWarning-like errors
        raise InspectError(f"{path}: not a caffemodel ({exc})") from None
    layers = list(model.layer) or list(model.layers)
    if not layers:
        raise InspectError(f"{path}: not a caffemodel (it holds no layers; an empty file?)")
    return {layer.name: [list(b.shape.dim) or [b.num, b.channels, b.height, b.width]
                         for b in layer.blobs] for layer in layers if layer.blobs}


def _weights_state(name: str, shapes: list[list[int]], stored: dict[str, list[list[int]]]
                   ) -> str:
    if not shapes:
        return ""
    if name not in stored:
        return "absent (keeps its filler)"
    if [list(s) for s in stored[name]] == shapes:
        return "present"
    return f"shape mismatch: file has {stored[name]}"


# ------------------------------------------------------------------ output

def _shape(shapes: list[list[int]]) -> str:
    return " ".join("x".join(str(d) for d in s) or "scalar" for s in shapes) or "-"


def format_inspection(ins: Inspection, show_provenance: bool = True) -> str:
    lines = [f"net: {ins.net} (phase {ins.phase}, batch {ins.batch_size})"]
    if ins.solver:
        lines.append(f"solver: {ins.solver}")
        sf = ins.solver_fields
        for key in ("type", "base_lr", "lr_policy", "gamma", "stepsize", "momentum",
                    "weight_decay", "max_iter", "random_seed"):
            if key in sf:
                prov = ins.solver_provenance.get(key, "")
                lines.append(f"  {key:<13} {sf[key]!s:<12} {prov}")
        if ins.iters_per_epoch:
            lines.append(f"  iterations per epoch: {ins.iters_per_epoch}")
    lr_cols = list(ins.layers[0].effective_lr) if ins.layers else []
    for row in ins.layers:
        if row.effective_lr:
            lr_cols = list(row.effective_lr)
            break
    head = (f"{'layer':<28} {'type':<22} {'output':<18} {'params':<22} {'count':>10} "
            f"{'w lr/decay':>11} {'b lr/decay':>11} {'state':<8}"
            + "".join(f" {c:>12}" for c in lr_cols)
            + (" weights" if any(r.weights for r in ins.layers) else ""))
    lines += ["", head, "-" * len(head)]
    for r in ins.layers:
        w = "/".join(f"{x:g}" for x in r.mults[0]) if r.mults else ""
        b = "/".join(f"{x:g}" for x in r.mults[1]) if len(r.mults) > 1 else ""
        state = ("learning" if r.learning else "frozen") if r.param_shapes else ""
        lrs = "".join(f" {r.effective_lr[c]:>12.6g}" if c in r.effective_lr else f" {'':>12}"
                      for c in lr_cols)
        lines.append(f"{r.name:<28} {r.type:<22} {_shape(r.top_shapes):<18} "
                     f"{_shape(r.param_shapes):<22} {r.param_count:>10} {w:>11} {b:>11} "
                     f"{state:<8}{lrs}" + (f" {r.weights}" if r.weights else ""))
        if show_provenance and r.provenance:
            lines.append(f"{'':<28}   why: {r.provenance}")
    lines += ["", f"parameters: {ins.total_params:,} ({ins.trainable_params:,} trainable, "
                  f"{ins.total_params - ins.trainable_params:,} frozen)"]
    for key, value in ins.memory_bytes.items():
        lines.append(f"memory, {key}: {value / 2**20:,.1f} MiB")
    return "\n".join(lines)


def diff(a: Inspection, b: Inspection) -> list[str]:
    """What differs between two inspections, layer by layer and field by field."""
    out = []
    la = {r.name: r for r in a.layers}
    lb = {r.name: r for r in b.layers}
    for name in la.keys() - lb.keys():
        out.append(f"layer {name}: only in A ({la[name].type})")
    for name in lb.keys() - la.keys():
        out.append(f"layer {name}: only in B ({lb[name].type})")
    for name in [n for n in la if n in lb]:
        ra, rb = la[name], lb[name]
        for attr in ("type", "top_shapes", "param_shapes", "mults", "learning"):
            va, vb = getattr(ra, attr), getattr(rb, attr)
            if va != vb:
                out.append(f"layer {name}: {attr} {va} -> {vb}")
    for key in sorted(a.solver_fields.keys() | b.solver_fields.keys()):
        va, vb = a.solver_fields.get(key), b.solver_fields.get(key)
        if va != vb:
            out.append(f"solver {key}: {va} -> {vb}")
    if a.total_params != b.total_params:
        out.append(f"parameters: {a.total_params:,} -> {b.total_params:,}")
    if a.trainable_params != b.trainable_params:
        out.append(f"trainable parameters: {a.trainable_params:,} -> {b.trainable_params:,}")
    return out
