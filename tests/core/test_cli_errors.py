"""Every command given a missing file, an empty file, a folder instead of a file (or a file
instead of a folder) or garbage content ends in one line on stderr naming that file, exit 2
(issue 12 item 12). Run in-process through `medtl.cli.main`, as a user's shell would."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from medtl import cli
from medtl.caffe_env import caffe
from medtl.datasets.lmdb_writer import write_lmdb

KINDS = ("missing", "empty", "folder", "binary", "text")

DEPLOY = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "fc7" type: "InnerProduct" bottom: "data" top: "fc7"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One bad input of each kind, and good inputs to pair them with."""
    root = tmp_path_factory.mktemp("inputs")
    out = {"missing": root / "missing.yaml", "empty": root / "empty.yaml",
           "folder": root / "folder", "binary": root / "binary.bin", "text": root / "text.csv"}
    out["empty"].write_text("")
    out["folder"].mkdir()
    out["binary"].write_bytes(np.random.default_rng(0).bytes(3000))
    out["text"].write_text("}{ not: [valid\n,,, garbage \x00\x01 ;;\n")
    out["deploy"] = root / "deploy.prototxt"
    out["deploy"].write_text(DEPLOY)
    c = caffe()
    c.set_mode_cpu()
    out["weights"] = root / "tiny.caffemodel"
    c.Net(str(out["deploy"]), c.TEST).save(str(out["weights"]))
    out["lmdb"] = root / "db"
    write_lmdb(out["lmdb"], ((i, np.full((3, 8, 8), i, np.uint8), i % 2) for i in range(4)))
    out["not_lmdb"] = root / "not_lmdb"
    out["not_lmdb"].mkdir()
    (out["not_lmdb"] / "data.mdb").write_bytes(np.random.default_rng(1).bytes(20000))
    out["empty_lmdb"] = root / "empty_lmdb"
    out["empty_lmdb"].mkdir()
    (out["empty_lmdb"] / "data.mdb").write_bytes(b"")
    out["out"] = root / "outputs"
    return out


def _one_line_error(argv: list[str], capsys, names: Path | str) -> str:
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (argv, code, captured.out[-500:], lines[-3:])
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, lines)
    assert str(names) in lines[0], (argv, lines)
    return lines[0]


SPEC_COMMANDS = {
    "run": lambda p: ["run", p, "--no-progress"],
    "run --list": lambda p: ["run", p, "--list"],
    "run-one": lambda p: ["run-one", p, "some_run", "--no-progress"],
    "report": lambda p: ["report", p],
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", SPEC_COMMANDS)
def test_experiment_commands_name_a_bad_spec(files, capsys, command, kind):
    _one_line_error(SPEC_COMMANDS[command](files[kind]), capsys, files[kind])


def test_run_one_names_an_unknown_run_id(repo, capsys, results_root):
    spec = repo / "experiments/shin2016/demo_ln_synthetic.yaml"
    line = _one_line_error(["run-one", spec, "no_such_run"], capsys, spec)
    assert "no run 'no_such_run'" in line and "--list" in line


@pytest.mark.parametrize("kind", KINDS)
def test_inspect_names_a_bad_prototxt_or_weights_file(files, capsys, kind):
    if kind != "text":      # a text file that parses as a prototxt is inspected: not garbage
        _one_line_error(["inspect", files[kind]], capsys, files[kind])
    _one_line_error(["inspect", files["deploy"], "--weights", files[kind]], capsys,
                    files[kind])


def _features(files, **bad: Path) -> list:
    args = {"deploy": files["deploy"], "weights": files["weights"], "source": files["lmdb"],
            **bad}
    argv = ["data", "features", "--deploy", args["deploy"], "--weights", args["weights"],
            "--source", args["source"], "--out", files["out"] / "features.h5",
            "--no-progress"]
    return argv + (["--mean-file", args["mean"]] if "mean" in args else [])


@pytest.mark.parametrize("kind", [*KINDS, "not_lmdb", "empty_lmdb"])
def test_data_features_and_haar_name_a_bad_input(files, capsys, kind):
    bad = files[kind]
    if kind in KINDS:
        for role in ("deploy", "weights", "mean"):
            _one_line_error(_features(files, **{role: bad}), capsys, bad)
    if kind != "folder":    # an empty folder as --source: the 'folder' row of the LMDB kinds
        _one_line_error(_features(files, source=bad), capsys, bad)
    _one_line_error(["data", "haar", "--source", bad, "--out", files["out"] / "haar.h5",
                     "--no-progress"], capsys, bad)
    assert not (files["out"] / "features.h5").exists()


BUILDERS = {   # command, the option naming its source
    "ln": (["data", "ln"], "--root"),
    "ild": (["data", "ild"], "--root"),
    "chestxray14": (["data", "chestxray14"], "--root"),
    "kidney": (["data", "kidney"], "--manifest"),
    "polyp": (["data", "tajbakhsh", "polyp"], "--manifest"),
    "pe": (["data", "tajbakhsh", "pe"], "--manifest"),
    "frames": (["data", "tajbakhsh", "frames"], "--manifest"),
    "imt": (["data", "tajbakhsh", "imt"], "--manifest"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("builder", BUILDERS)
def test_dataset_builders_name_a_bad_source_or_config(files, capsys, builder, kind):
    words, option = BUILDERS[builder]
    out = files["out"] / f"{builder}_{kind}"
    _one_line_error([*words, option, files[kind], "--out", out, "--no-progress"], capsys,
                    files[kind])
    if kind != "empty":     # an empty configuration file is no configuration: the defaults
        _one_line_error([*words, option, files["folder"], "--config", files[kind],
                         "--out", out, "--no-progress"], capsys, files[kind])
    assert not out.exists()


PHANTOMS = ("chestxray14", "kidney", "ln", "ild", "polyp", "frames", "imt", "pe")


@pytest.mark.parametrize("phantom", PHANTOMS)
def test_phantom_writers_never_write_over_an_existing_path(files, capsys, phantom):
    for kind in ("empty", "folder"):
        before = sorted(os.listdir(files["folder"]))
        line = _one_line_error(["data", "phantoms", phantom, "--out", files[kind]], capsys,
                               files[kind])
        assert "already exists" in line
        assert sorted(os.listdir(files["folder"])) == before


@pytest.mark.parametrize("kind", ["missing", "empty", "binary"])
def test_data_check_names_a_path_that_is_no_dataset_folder(files, capsys, kind):
    _one_line_error(["data", "check", files[kind]], capsys, files[kind])


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage", b'{"kind": "medtl-dataset", '
                                     b'"format_version": 1}', b"[1, 2]"])
def test_data_check_reports_a_garbage_manifest_naming_it(tmp_path, capsys, content):
    """A folder is checked and reported (exit 1, as for a folder without a manifest)."""
    (tmp_path / "manifest.json").write_bytes(content)
    assert cli.main(["data", "check", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err == ""
    assert f"{tmp_path / 'manifest.json'}: " in captured.out
    assert captured.out.strip().endswith("DOES NOT match its manifest")
