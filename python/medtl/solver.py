"""Caffe SolverParameter messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtl.caffe_env import caffe_pb2


def solver_param(**fields: Any):
    """A SolverParameter from keyword fields; paths are made absolute.

    Caffe resolves relative paths against the working directory of whoever runs it, so the
    kit always writes absolute ones.
    """
    msg = caffe_pb2().SolverParameter()
    fields.setdefault("solver_mode", msg.CPU)
    for key, value in fields.items():
        if isinstance(value, Path):
            value = str(value.resolve())
        if key in ("test_net", "test_iter"):
            getattr(msg, key).append(value)
        elif key == "stepvalue":
            msg.stepvalue.extend(value)
        else:
            setattr(msg, key, value)
    return msg
