"""`medtl data` commands of the Tajbakhsh study (and those beside it): phantoms -> builders ->
features, and their errors, through the one `medtl` parser."""

from __future__ import annotations

import argparse
import subprocess
import sys

import h5py

from medtl import cli
from medtl.datasets.manifest import read_manifest
from medtl.studies.tajbakhsh2016.cli import add_commands


def main(argv: list[str]) -> int:
    """`medtl data ARGV...`."""
    return cli.main(["data", *argv])


def test_phantoms_build_and_haar_from_the_command_line(tmp_path, capsys):
    assert main(["phantoms", "polyp", "--out", str(tmp_path / "p"), "--groups", "6",
                 "--per-group", "2"]) == 0
    assert main(["tajbakhsh", "polyp", "--manifest", str(tmp_path / "p" / "candidates.csv"),
                 "--out", str(tmp_path / "ds"), "--set", "train_patches=40",
                 "--set", "patch_size=24", "--set", "reductions=[0.5]", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "medtl data check" in out
    m = read_manifest(tmp_path / "ds")
    assert m["config"]["train_patches"] == 40 and m["config"]["reductions"] == [0.5]
    assert main(["haar", "--source", str(tmp_path / "ds" / "full" / "val_lmdb"),
                 "--out", str(tmp_path / "h.h5"), "--features", "50", "--no-progress"]) == 0
    with h5py.File(tmp_path / "h.h5", "r") as f:
        assert f["features"].shape[1] == 50


def test_kidney_and_chestxray14_commands(tmp_path, capsys):
    assert main(["phantoms", "kidney", "--out", str(tmp_path / "k"), "--groups", "6",
                 "--per-group", "1"]) == 0
    assert main(["kidney", "--manifest", str(tmp_path / "k" / "candidates.csv"), "--out",
                 str(tmp_path / "kds"), "--set", "patch_size=24", "--set", "haar_features=20",
                 "--set", "negatives_per_image=3", "--no-progress"]) == 0
    assert (tmp_path / "kds" / "haar" / "test.h5").is_file()
    assert main(["phantoms", "chestxray14", "--out", str(tmp_path / "c"), "--groups", "12",
                 "--size", "32"]) == 0
    assert main(["chestxray14", "--root", str(tmp_path / "c"), "--out", str(tmp_path / "cds"),
                 "--set", "image_size=24", "--set", "crop_size=20", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "positive" in out and "patients" in out          # the class balance is reported


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["phantoms", "frames", "--out", str(tmp_path / "f"), "--groups", "4",
                 "--per-group", "2", "--size", "60", "40"]) == 0
    manifest = str(tmp_path / "f" / "candidates.csv")
    assert main(["tajbakhsh", "frames", "--manifest", manifest, "--out",
                 str(tmp_path / "ds"), "--set", "crops=3"]) == 2
    assert "unknown key 'crops'" in capsys.readouterr().err
    assert main(["tajbakhsh", "frames", "--out", str(tmp_path / "ds")]) == 2
    assert "--manifest is required" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("image,group,candidate_id,label\nnone.png,v1,c1,good\n")
    assert main(["tajbakhsh", "frames", "--manifest", str(tmp_path / "bad.csv"), "--out",
                 str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv:2: image" in err and "does not exist" in err
    assert not (tmp_path / "ds").exists()
    assert main(["chestxray14", "--root", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "x")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_show_config_lists_sources(capsys):
    assert main(["tajbakhsh", "imt", "--show-config"]) == 0
    text = capsys.readouterr().out
    assert "train_patches = 200000" in text and "Tajbakhsh 2016 Sec. VI-D" in text
    assert "patch_px = 32" in text and "assumed:" in text
    assert main(["kidney", "--show-config"]) == 0
    assert "haar_features = 2000" in capsys.readouterr().out


def test_add_commands_hangs_on_an_existing_data_parser():
    parser = argparse.ArgumentParser(prog="medtl")
    top = parser.add_subparsers(dest="command")
    data = top.add_parser("data")
    sub = data.add_subparsers(dest="data_command")
    phantoms = sub.add_parser("phantoms").add_subparsers(dest="phantom_kind")
    add_commands(sub, phantoms)
    args = parser.parse_args(["data", "tajbakhsh", "pe", "--manifest", "m.csv", "--out", "o"])
    assert args.application == "pe" and callable(args.func)
    args = parser.parse_args(["data", "phantoms", "imt", "--out", "o"])
    assert args.phantom_kind == "imt"
    # the other studies' phantom kinds hang on the same parser (`medtl.cli`)
    whole = cli.build_parser()
    assert whole.parse_args(["data", "phantoms", "kidney", "--out", "o"]).phantom_kind == \
        "kidney"


def test_data_prep_scripts_run(repo):
    scripts = [str(repo / "data_prep" / f"{name}.py") for name in (
        "tajbakhsh_polyp", "tajbakhsh_pe", "tajbakhsh_frames", "tajbakhsh_imt",
        "ravishankar_kidney", "chestxray14", "tajbakhsh_phantoms")]
    # one interpreter runs every script's --help (each exits 0 after its usage)
    code = ("import runpy, sys\n"
            "for s in sys.argv[1:]:\n"
            "    sys.argv = [s, '--help']\n"
            "    try:\n"
            "        runpy.run_path(s, run_name='__main__')\n"
            "    except SystemExit as e:\n"
            "        assert e.code in (0, None), (s, e.code)\n"
            "    print('ran', s)\n")
    done = subprocess.run([sys.executable, "-c", code, *scripts], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("usage:") == len(scripts)
    assert done.stdout.count("ran ") == len(scripts)


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_commands_fit_beside_the_core_data_commands():
    parser = cli.build_parser()
    sub = _subparsers(_subparsers(parser).choices["data"])
    ph = _subparsers(sub.choices["phantoms"])
    assert {"check", "tajbakhsh", "kidney", "chestxray14", "features", "haar"} <= set(
        sub.choices)
    assert {"polyp", "pe", "frames", "imt", "kidney", "chestxray14"} <= set(ph.choices)
    args = parser.parse_args(["data", "phantoms", "pe", "--out", "o", "--groups", "2"])
    assert args.phantom_kind == "pe" and args.groups == 2
