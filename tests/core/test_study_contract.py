"""The study contract's defects (issue 9), each as a test that failed before the fix.

Fast tests call `medtl run --list` and the adapters without training; the slow ones train a
tiny CifarNet for an epoch or two on the kit's lymph-node phantoms.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from spec_helpers import tiny_ln_spec

from medtl import cli
from medtl.experiments.plan import load_plan


def _cli(capsys, *args: str) -> SimpleNamespace:
    """`medtl ARGS` in this process (what the command prints, its exit status)."""
    code = cli.main(list(args))
    printed = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=printed.out, stderr=printed.err)


def _medtl(*args: str, env: dict | None = None, cwd: Path | None = None
           ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medtl", *args], capture_output=True,
                          text=True, timeout=600, env=env, cwd=cwd)



# ------------------------------------------------------------------ the dataset cache key

def test_switching_the_source_or_the_phantoms_gives_another_dataset(results_root, tmp_path):
    synthetic = load_plan(tiny_ln_spec(tmp_path / "a"))
    (tmp_path / "tcia").mkdir()
    real = load_plan(tiny_ln_spec(
        tmp_path / "b", dataset={"builder": "shin_ln", "source": str(tmp_path / "tcia"),
                                 "options": {"region": "med"}}))
    other_phantoms = load_plan(tiny_ln_spec(
        tmp_path / "c", dataset={"builder": "shin_ln", "source": "synthetic",
                                 "phantom": {"patients": 5, "seed": 3, "n_false": 12},
                                 "options": {"region": "med"}}))
    same_options = load_plan(tiny_ln_spec(
        tmp_path / "d", dataset={"builder": "shin_ln", "source": "synthetic",
                                 "phantom": {"patients": 4, "seed": 3, "n_false": 12},
                                 "options": {"region": "med"}}))
    real_dir, other_dir = real.study.dataset_dir.name, other_phantoms.study.dataset_dir.name
    assert len({real_dir, other_dir, same_options.study.dataset_dir.name}) == 3
    assert synthetic.study.dataset_dir.name != same_options.study.dataset_dir.name


# ------------------------------------------------------------------ validation before work

BAD_SPECS = {
    "unknown builder option": ({"dataset": {"options": {"regoin": "med"}}}, "regoin"),
    "unknown zoo name": ({"configurations": ["alexnet-h_tl"],
                          "pretrained": {"weights": {"alexnet-h": "bvlc_alexnett"}}},
                         "pretrained.weights"),
    "missing published file": ({"published": "nowhere.yaml"}, "published"),
    "zero epochs": ({"training": {"max_epochs": 0}}, "training.max_epochs"),
    "zero batch": ({"training": {"batch_size": 0}}, "training.batch_size"),
    "negative rate": ({"training": {"base_lr": -0.01}}, "training.base_lr"),
    "no folds": ({"folds": []}, "folds"),
    "fold beyond the dataset": ({"folds": [3]}, "folds"),
    "phantom typo": ({"dataset": {"phantom": {"patiens": 4}}}, "patiens"),
    "source task typo": ({"configurations": ["alexnet-l_ri", {"model": "alexnet-l",
                                                              "policy": "tl"}],
                          "pretrained": {"weights": {"alexnet-l": "synthetic-source"},
                                         "source_task": {"imagez": 10}}}, "imagez"),
    "no seeds": ({"seeds": []}, "seeds"),
}


def _merge(base: dict, change: dict) -> dict:
    out = dict(base)
    for key, value in change.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_run_list_rejects_a_bad_spec_before_building_anything(case, results_root, tmp_path,
                                                              capsys):
    change, key = BAD_SPECS[case]
    good = yaml.safe_load(tiny_ln_spec(tmp_path).read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_merge(good, change), sort_keys=False))
    result = _cli(capsys, "run", str(bad), "--list")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "bad.yaml" in lines[0] and key in lines[0], lines[0]
    assert not results_root.exists()


def test_duplicate_yaml_keys_are_rejected_naming_the_line(results_root, tmp_path, capsys):
    path = tiny_ln_spec(tmp_path)
    path.write_text(path.read_text() + "seeds: [2]\n")
    result = _cli(capsys, "run", str(path), "--list")
    assert result.returncode == 2
    assert "duplicate key 'seeds'" in result.stderr and "tiny.yaml" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ paths

def test_a_relative_source_resolves_against_the_spec_folder(results_root, tmp_path):
    folder = tmp_path / "specs"
    (folder / "tcia").mkdir(parents=True)
    path = tiny_ln_spec(folder, dataset={"builder": "shin_ln", "source": "tcia",
                                     "options": {"region": "med"}})
    study = load_plan(path).study
    assert study.source() == folder / "tcia"


# ------------------------------------------------------------------ errors at the CLI

def test_run_one_reports_an_input_error_in_one_line(results_root, tmp_path, capsys):
    path = tiny_ln_spec(tmp_path, configurations=["alexnet-h_tl"])
    result = _cli(capsys, "run-one", str(path), "alexnet-h_tl__fold1__frac1__seed1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "pretrained.weights" in result.stderr.strip().splitlines()[-1]


def test_run_one_with_an_unknown_run_id_is_one_line(results_root, tmp_path, capsys):
    result = _cli(capsys, "run-one", str(tiny_ln_spec(tmp_path)), "nope")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nope" in result.stderr


def test_transplant_onto_an_existing_file_names_no_python_keyword(tmp_path, caffe, capsys):
    from medtl.nets.cifarnet import cifarnet
    from medtl.nets.variants import deploy_net
    from medtl.prototxt import write_text
    from medtl.surgery import random_weights

    net = write_text(tmp_path / "net.prototxt",
                     deploy_net(cifarnet, 2, (1, 3, 32, 32), "cifarnet"))
    weights = tmp_path / "w.caffemodel"
    random_weights(net, weights, seed=1)
    result = _cli(capsys, "weights", "transplant", str(net), str(weights), str(net),
                  str(weights))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "overwrite=True" not in result.stderr and str(weights) in result.stderr


def test_a_partial_transfer_names_the_command_line_options(tmp_path, caffe, capsys):
    from medtl.nets.cifarnet import cifarnet
    from medtl.nets.variants import deploy_net
    from medtl.prototxt import write_text
    from medtl.surgery import random_weights

    two = write_text(tmp_path / "two.prototxt", deploy_net(cifarnet, 2, (1, 3, 32, 32), "a"))
    three = write_text(tmp_path / "three.prototxt",
                       deploy_net(cifarnet, 3, (1, 3, 32, 32), "b"))
    weights = tmp_path / "w.caffemodel"
    random_weights(two, weights, seed=1)
    result = _cli(capsys, "weights", "transplant", str(two), str(weights), str(three),
                    str(tmp_path / "out.caffemodel"))
    assert result.returncode == 2
    assert "--allow-partial" in result.stderr and "allow_partial=" not in result.stderr


def test_inspect_into_a_closed_pipe_is_quiet(repo):
    solver = repo / "solvers/shin2016/ild_patch/vgg16_tl.solver.prototxt"
    epochs = ",".join(map(str, range(201)))     # > 64 KiB: more than a pipe holds
    result = subprocess.run(f"{sys.executable} -m medtl inspect {solver} --json --epochs "
                            f"{epochs} | head -1",
                            shell=True, capture_output=True, text=True, timeout=300)
    assert result.stdout.strip()
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


# ------------------------------------------------------------------ inference

def test_prediction_reads_an_hdf5_list_through_a_sigmoid_net_once_per_record(tmp_path, caffe):
    from dataclasses import replace

    import numpy as np

    from medtl.datasets.hdf5_writer import Hdf5Writer
    from medtl.experiments.study import FoldData
    from medtl.infer import predict_database
    from medtl.nets.registry import get_model
    from medtl.nets.variants import deploy_net
    from medtl.protocols import configurations
    from medtl.prototxt import write_text
    from medtl.provenance import assumed
    from medtl.surgery import random_weights

    cfg = next(c for c in configurations("boit2019") if c.policy.name == "ft")
    cfg = replace(cfg, model="cifarnet",   # Boit's sigmoid head on a small body, batch 2
                  solver=replace(cfg.solver, val_batch_size=assumed(2, "test")))
    writer = Hdf5Writer(tmp_path, "test", 5, (3, 32, 32), label_shape=(1,))
    rng = np.random.default_rng(0)
    for i in range(5):
        writer.put(i, rng.normal(size=(3, 32, 32)).astype(np.float32), [i % 2])
    writer.close()
    fold = FoldData(train="", val="", mean_file=None, test=str(writer.list_file),
                    test_index="", train_size=5, val_size=5, test_size=5, manifest_sha256="",
                    backend="hdf5")
    deploy = write_text(tmp_path / "deploy.prototxt", deploy_net(
        get_model(cfg.model).body, 1, (1, 3, 32, 32), "d", "sigmoid"))
    weights = tmp_path / "w.caffemodel"
    random_weights(deploy, weights, seed=1)
    probs, labels = predict_database(cfg, fold, weights, tmp_path / "test.prototxt")
    assert probs.shape == (5, 1) and ((probs > 0) & (probs < 1)).all()
    assert labels[:, 0].tolist() == [0, 1, 0, 1, 0]      # each record once, in order


# ------------------------------------------------------------------ run states (training)

@pytest.mark.slow
def test_an_edited_spec_makes_finished_runs_stale(results_root, tmp_path, caffe):
    path = tiny_ln_spec(tmp_path)
    assert _medtl("run", str(path), "--no-progress").returncode == 0
    edited = yaml.safe_load(path.read_text())
    edited["training"]["max_epochs"] = 2
    path.write_text(yaml.safe_dump(edited, sort_keys=False))

    listed = _medtl("run", str(path), "--list")
    assert "stale" in listed.stdout, listed.stdout
    refused = _medtl("run", str(path), "--no-progress")
    assert refused.returncode == 2 and "--rerun-stale" in refused.stderr
    report = _medtl("report", str(path))
    assert report.returncode == 2 and "stale" in report.stderr


@pytest.mark.slow
def test_a_report_works_with_results_outside_the_repository(tmp_path, monkeypatch, caffe):
    results_root = tmp_path / "scratch" / "disk" / "results"
    monkeypatch.setenv("MEDTL_RESULTS", str(results_root))
    path = tiny_ln_spec(tmp_path / "elsewhere")
    assert _medtl("run", str(path), "--no-progress").returncode == 0
    result = _medtl("report", str(path))
    assert result.returncode == 0, result.stderr
    assert (results_root / "shin2016" / "tiny" / "REPORT.md").is_file()


@pytest.mark.slow
def test_a_diverging_run_is_recorded_as_failed_with_its_log(results_root, tmp_path, caffe):
    path = tiny_ln_spec(tmp_path, training={"max_epochs": 2, "batch_size": 4, "base_lr": 1e6})
    result = _medtl("run", str(path), "--no-progress")
    assert result.returncode == 1
    run_dir = results_root / "shin2016" / "tiny" / "runs" / "cifarnet_ri__fold1__frac1__seed1"
    failed = json.loads((run_dir / "failed.json").read_text())
    assert "finite" in failed["reason"] or "diverge" in failed["reason"]
    assert (run_dir / "run.log").stat().st_size > 0
    listed = _medtl("run", str(path), "--list")
    assert "failed" in listed.stdout


@pytest.mark.slow
def test_results_move_stale_runs_are_set_aside_and_tampering_is_refused(tmp_path, monkeypatch,
                                                                       caffe):
    first = tmp_path / "disk1" / "results"
    monkeypatch.setenv("MEDTL_RESULTS", str(first))
    path = tiny_ln_spec(tmp_path)
    assert _medtl("run", str(path), "--no-progress").returncode == 0
    run_id = "cifarnet_ri__fold1__frac1__seed1"
    record = json.loads((first / "shin2016/tiny/runs" / run_id / "run.json").read_text())
    assert not Path(record["dataset"]["train"]).is_absolute()
    log = (first / "shin2016/tiny/runs" / run_id / "run.log").read_text()
    assert "run-one" in log and "selected epoch" in log

    moved = tmp_path / "disk2" / "results"
    moved.parent.mkdir()
    first.rename(moved)                         # results moved to another disk
    monkeypatch.setenv("MEDTL_RESULTS", str(moved))
    assert "finished" in _medtl("run", str(path), "--list").stdout
    assert _medtl("report", str(path)).returncode == 0

    run_dir = moved / "shin2016/tiny/runs" / run_id
    predictions = run_dir / "predictions.csv"
    original = predictions.read_text()
    predictions.write_text(original.replace(",0.", ",0.9", 1))
    refused = _medtl("report", str(path))
    assert refused.returncode == 2 and "predictions.csv" in refused.stderr
    predictions.write_text(original)

    edited = yaml.safe_load(path.read_text())
    edited["seeds"] = [1]
    edited["training"]["max_epochs"] = 2
    path.write_text(yaml.safe_dump(edited, sort_keys=False))
    rerun = _medtl("run", str(path), "--no-progress", "--rerun-stale")
    assert rerun.returncode == 0, rerun.stderr
    aside = list((moved / "shin2016/tiny/stale").iterdir())
    assert len(aside) == 1 and (aside[0] / "metrics.json").is_file()   # kept, not deleted
    assert "finished" in _medtl("run", str(path), "--list").stdout


@pytest.mark.slow
def test_a_failed_run_is_retried_only_when_asked(results_root, tmp_path, caffe):
    path = tiny_ln_spec(tmp_path, training={"max_epochs": 2, "batch_size": 4, "base_lr": 1e6})
    assert _medtl("run", str(path), "--no-progress").returncode == 1
    again = _medtl("run", str(path), "--no-progress")
    assert again.returncode == 1 and "--retry-failed" in again.stderr
    run_dir = results_root / "shin2016/tiny/runs/cifarnet_ri__fold1__frac1__seed1"
    assert not (run_dir / "failures").exists()
    retried = _medtl("run", str(path), "--no-progress", "--retry-failed")
    assert retried.returncode == 1
    assert len(list((run_dir / "failures").iterdir())) == 1      # the first failure is kept


def test_a_run_killed_by_caffe_is_failed_and_an_interrupted_one_resumes(tmp_path):
    import signal
    from types import SimpleNamespace

    from medtl.experiments.runner import _outcome

    aborted = SimpleNamespace(run_dir=tmp_path / "aborted")
    assert _outcome(aborted, -signal.SIGABRT).startswith("failed: the run died of SIGABRT")
    failed = json.loads((aborted.run_dir / "failed.json").read_text())
    assert failed["error"] == "SIGABRT" and "run.log" in failed["reason"]
    killed = SimpleNamespace(run_dir=tmp_path / "killed")
    assert _outcome(killed, -signal.SIGKILL) == "interrupted (SIGKILL); rerun to resume"
    assert not (killed.run_dir / "failed.json").exists()
