"""Reading and writing Caffe text-format messages (nets and solvers)."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format

from medtl import io
from medtl.caffe_env import caffe_pb2


def to_text(message, header: list[str] | None = None) -> str:
    """Text format of `message`, with `header` lines as leading `#` comments."""
    lines = [f"# {h}".rstrip() for h in header or []]
    return "\n".join(lines) + ("\n" if lines else "") + text_format.MessageToString(message)


def write_text(path: Path, message, header: list[str] | None = None) -> Path:
    """Write atomically: a reader never sees a half-written prototxt."""
    return io.write_text(Path(path), to_text(message, header))


def read_net(path: Path):
    net = caffe_pb2().NetParameter()
    text_format.Parse(Path(path).read_text(), net)
    return net


def read_solver(path: Path):
    solver = caffe_pb2().SolverParameter()
    text_format.Parse(Path(path).read_text(), solver)
    return solver
