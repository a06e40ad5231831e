"""A finished run keeps what the report and a user need: its snapshots go once metrics.json is
written (the last pair stays when the spec says training.keep_snapshots)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from spec_helpers import tiny_ln_spec

from medtl.errors import RunError
from medtl.experiments import runner, specdoc
from medtl.experiments.plan import FINISHED, load_plan
from medtl.experiments.report.build import build_report
from medtl.experiments.spec import read_experiment
from medtl.train.snapshots import SNAPSHOTS, prune_snapshots

RUN = "cifarnet_ri__fold1__frac1__seed1"


def _finished_run(tmp_path: Path, **training) -> tuple[Path, Path]:
    """(spec, run folder) of a tiny two-epoch lymph-node run carried out by `run_one`."""
    spec = tiny_ln_spec(tmp_path, "disk", training={"max_epochs": 2, **training})
    plan = load_plan(spec)
    plan.study.prepare(progress=False)
    run = plan.runs[0]
    runner.run_one(plan, run, progress=False)
    return spec, run.run_dir


def _snapshot_folder(run_dir: Path, iterations: tuple[int, ...]) -> Path:
    """A run folder with the driver's snapshot files of `iterations` (contents do not
    matter to the pruning) and a file of the user's own in snapshots/."""
    folder = run_dir / SNAPSHOTS
    folder.mkdir(parents=True)
    for i in iterations:
        for suffix in ("caffemodel", "solverstate", "snapshot.json"):
            (folder / f"epoch_iter_{i}.{suffix}").write_bytes(b"x" * 10)
    (folder / "notes.txt").write_text("mine")
    (run_dir / "selected.caffemodel").write_bytes(b"weights")
    return folder


@pytest.mark.slow
def test_a_finished_run_keeps_no_snapshots_and_its_report_still_builds(results_root, tmp_path,
                                                                       caffe):
    spec, run_dir = _finished_run(tmp_path)
    assert (run_dir / FINISHED).is_file()
    assert not (run_dir / SNAPSHOTS).exists()
    for name in ("selected.caffemodel", "net/deploy.prototxt", "net/test.prototxt",
                 "solver.prototxt", "trace.csv", "iterations.csv", "predictions.csv",
                 "run.json", "manifest.json"):
        assert (run_dir / name).is_file(), name
    report = build_report(spec)
    assert "| CifarNet | 1 |" in report.read_text()
    assert (report.parent / "figures" / "training_traces.png").is_file()


@pytest.mark.slow
def test_keep_snapshots_keeps_the_last_snapshot_pair_only(results_root, tmp_path, caffe):
    _, run_dir = _finished_run(tmp_path, keep_snapshots=True)
    iterations = sorted(int(p.name.split("_iter_")[1].split(".")[0])
                        for p in (run_dir / SNAPSHOTS).glob("*.caffemodel"))
    last = iterations[-1]
    assert iterations == [last]
    assert sorted(p.name for p in (run_dir / SNAPSHOTS).iterdir()) == [
        f"epoch_iter_{last}.caffemodel", f"epoch_iter_{last}.snapshot.json",
        f"epoch_iter_{last}.solverstate"]


def test_snapshots_of_an_unfinished_run_are_never_pruned(tmp_path):
    folder = _snapshot_folder(tmp_path, (3, 6))
    with pytest.raises(RunError, match="not finished"):
        prune_snapshots(tmp_path, tmp_path / FINISHED, keep_last=False)
    assert len(list(folder.iterdir())) == 7


def test_pruning_removes_only_the_drivers_snapshot_files(tmp_path):
    folder = _snapshot_folder(tmp_path, (3, 6))
    (tmp_path / FINISHED).write_text("{}")
    removed = prune_snapshots(tmp_path, tmp_path / FINISHED, keep_last=False)
    assert len(removed) == 6
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (tmp_path / "selected.caffemodel").read_bytes() == b"weights"
    assert (tmp_path / FINISHED).is_file()


def test_pruning_empties_and_removes_the_snapshot_folder_and_may_be_repeated(tmp_path):
    folder = _snapshot_folder(tmp_path, (3, 6))
    (folder / "notes.txt").unlink()
    (tmp_path / FINISHED).write_text("{}")
    (folder / "epoch_iter_3.caffemodel").unlink()   # as if an earlier prune was interrupted
    prune_snapshots(tmp_path, tmp_path / FINISHED, keep_last=False)
    assert not folder.exists()
    assert prune_snapshots(tmp_path, tmp_path / FINISHED, keep_last=False) == []


def test_keep_last_keeps_the_latest_complete_pair_with_its_record(tmp_path):
    folder = _snapshot_folder(tmp_path, (3, 6, 9))
    (folder / "epoch_iter_9.solverstate").unlink()   # no pair: nothing to continue from
    (tmp_path / FINISHED).write_text("{}")
    prune_snapshots(tmp_path, tmp_path / FINISHED, keep_last=True)
    assert sorted(p.name for p in folder.iterdir()) == [
        "epoch_iter_6.caffemodel", "epoch_iter_6.snapshot.json", "epoch_iter_6.solverstate",
        "notes.txt"]


def test_a_snapshot_folder_that_is_a_link_is_left_alone(tmp_path):
    elsewhere = _snapshot_folder(tmp_path / "elsewhere", (3,))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / SNAPSHOTS).symlink_to(elsewhere)
    (run_dir / FINISHED).write_text("{}")
    assert prune_snapshots(run_dir, run_dir / FINISHED, keep_last=False) == []
    assert len(list(elsewhere.iterdir())) == 4


def test_keep_snapshots_is_a_documented_training_option_off_by_default(tmp_path):
    path = tiny_ln_spec(tmp_path)
    assert read_experiment(path).training.keep_snapshots is False
    data = yaml.safe_load(path.read_text())
    data["training"]["keep_snapshots"] = True
    path.write_text(yaml.safe_dump(data))
    assert read_experiment(path).training.keep_snapshots is True
    assert "`training.keep_snapshots`" in specdoc.REFERENCE.read_text()
