"""`medtl data ...` commands and the data_prep/ entry points."""

from __future__ import annotations

import subprocess
import sys

from medtl import cli


def test_phantoms_build_and_check_from_the_command_line(tmp_path, capsys):
    root, out = tmp_path / "tcia", tmp_path / "ln"
    assert cli.main(["data", "phantoms", "ln", "--out", str(root), "--patients", "3",
                     "--region", "med", "--shape", "40", "64", "64",
                     "--false-candidates", "10"]) == 0
    assert cli.main(["data", "ln", "--root", str(root), "--out", str(out), "--no-progress",
                     "--set", "train_views_per_candidate=3", "--set", "test_views_per_candidate=1",
                     "--set", "output_sizes=[32]"]) == 0
    capsys.readouterr()
    assert cli.main(["data", "check", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fold3/train_32_lmdb" in printed and printed.strip().endswith("matches its manifest")


def test_command_line_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["data", "ln", "--root", str(tmp_path), "--out", str(tmp_path / "o"),
                     "--set", "fov_mn=[30,45]"]) == 2
    assert "unknown key 'fov_mn'" in capsys.readouterr().err
    assert cli.main(["data", "ln", "--root", str(tmp_path / "none"),
                     "--out", str(tmp_path / "o")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert cli.main(["data", "check", str(tmp_path)]) == 1
    assert "no manifest" in capsys.readouterr().out
    assert cli.main(["data", "ild", "--show-config"]) == 0
    assert "augmentations_per_slice = 12" in capsys.readouterr().out


def test_one_parser_holds_every_studys_data_commands(tmp_path, capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["data", "check", str(tmp_path)])
    assert args.func(args) == 1
    args = parser.parse_args(["data"])
    assert args.func(args) == 2
    data = next(a for a in parser._subparsers._group_actions[0].choices["data"]._actions
                if a.dest == "data_command")
    assert {"check", "features", "phantoms", "ln", "ild", "tajbakhsh", "kidney", "haar",
            "chestxray14"} <= set(data.choices)


def test_data_prep_scripts_run_the_same_commands(repo, tmp_path):
    run = [sys.executable, str(repo / "data_prep" / "phantoms.py"), "ild", "--out",
           str(tmp_path / "db"), "--patients", "6", "--slices", "2", "--size", "96"]
    subprocess.run(run, check=True, capture_output=True, text=True)
    build = [sys.executable, str(repo / "data_prep" / "shin_ild.py"), "--root",
             str(tmp_path / "db"), "--out", str(tmp_path / "ds"), "--set", "level=patch",
             "--set", "patch_size=16", "--set", "patches_per_roi=4", "--set",
             "patch_output_size=16", "--set", "only_folds=[2]"]
    subprocess.run(build, check=True, capture_output=True, text=True)
    done = subprocess.run([sys.executable, "-m", "medtl", "data", "check",
                           str(tmp_path / "ds")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fold2/test_16_lmdb" in done.stdout
