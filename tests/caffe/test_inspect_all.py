"""`medtl inspect` reads every file the kit generates, and nets Caffe rewrites on load.

Caffe inserts a Split layer wherever one blob feeds several layers (every validation net: the
label feeds the loss and the Accuracy; every inception or dense block) and lets in-place layers
(ReLU, Dropout) share their bottom blob; inspection reports the layers the file declares.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtl import generate
from medtl.caffe_env import caffe_pb2
from medtl.cli import main
from medtl.inspect_net import format_inspection, inspect
from medtl.prototxt import read_net

CANONICAL = sorted(path.relative_to(generate.REPO).as_posix()
                   for folder in ("prototxt", "solvers")
                   for path in (generate.REPO / folder).rglob("*.prototxt"))

SPLIT_NET = """
name: "split-and-in-place"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "drop1" type: "Dropout" bottom: "conv1" top: "conv1" }
layer { name: "branch_a" type: "InnerProduct" bottom: "conv1" top: "branch_a"
        param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }
        inner_product_param { num_output: 2 } }
layer { name: "branch_b" type: "InnerProduct" bottom: "conv1" top: "branch_b"
        inner_product_param { num_output: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "branch_a" bottom: "branch_b" top: "sum" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "sum" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "sum" bottom: "label" top: "accuracy" }
"""


def _declared(net_path: Path, phase: str) -> list[str]:
    """The names of the layers a file declares for `phase`, in order."""
    wanted = {"TRAIN": caffe_pb2().TRAIN, "TEST": caffe_pb2().TEST}[phase]
    return [layer.name for layer in read_net(net_path).layer
            if not layer.include or any(inc.phase == wanted for inc in layer.include)]


@pytest.mark.parametrize("rel", CANONICAL)
def test_inspect_reads_every_canonical_file(rel):
    path = generate.REPO / rel
    ins = inspect(path)
    assert [row.name for row in ins.layers] == _declared(Path(ins.net), ins.phase)
    assert not [row.name for row in ins.layers if row.type == "Split"]
    assert ins.total_params > 0 and ins.batch_size
    if rel.startswith("solvers/"):
        assert ins.solver_fields["base_lr"] > 0
        assert any(row.effective_lr for row in ins.layers)
    text = format_inspection(ins)
    assert text.count("\n") > len(ins.layers)


def test_inspect_reports_split_and_in_place_nets_as_declared(tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_text(SPLIT_NET)
    ins = inspect(path)
    rows = {row.name: row for row in ins.layers}
    assert list(rows) == ["data", "conv1", "relu1", "drop1", "branch_a", "branch_b", "sum",
                          "loss", "accuracy"]
    # in-place layers report the shape of the blob they rewrite
    assert rows["relu1"].top_shapes == rows["drop1"].top_shapes == [[2, 4, 6, 6]]
    assert rows["branch_a"].param_shapes == [[2, 144], [2]]
    assert not rows["branch_a"].learning and rows["branch_b"].learning
    assert rows["loss"].top_shapes == [[]]
    assert ins.total_params == 4 * 3 * 9 + 4 + 2 * (2 * 144 + 2)

    assert main(["inspect", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in shown["layers"]] == list(rows)
    assert main(["inspect", str(path), str(path)]) == 0
    assert "no differences" in capsys.readouterr().out
