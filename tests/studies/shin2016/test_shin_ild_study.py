"""Shin 2016 ILD studies through `medtl run` / `medtl report`: a tiny phantom study trained with
real Caffe, the validation split, slice-level scoring, and the checked-in specs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from medtl.config import ConfigError
from medtl.datasets.folds import FoldError
from medtl.experiments import runner
from medtl.experiments.plan import load_plan
from medtl.experiments.report.build import build_report
from medtl.nets.registry import get_model
from medtl.paths import REPO
from medtl.studies.shin2016.ild import reader as ild_io
from medtl.studies.shin2016.ild import split as ild_split
from medtl.studies.shin2016.ild.adapter import ShinIldAdapter
from medtl.studies.shin2016.ild.phantoms import write_collection
from medtl.studies.shin2016.ild.report import published_references

PUBLISHED = str(REPO / "experiments/shin2016/published.yaml")
ILD_SPECS = sorted((REPO / "experiments/shin2016").glob("ild_*.yaml"))
CLASSES = ["NM", "EM", "GG", "FB", "MN", "CD"]
PHANTOM = {"patients": 6, "slices_per_patient": 6, "size": 128, "seed": 2}


def _write_spec(folder: Path, name: str, **changes) -> Path:
    base = {
        "paper": "shin2016", "study": "ild_patch", "title": "tiny ILD",
        "dataset": {"builder": "shin_ild", "source": "synthetic", "phantom": PHANTOM,
                    "options": {"level": "patch", "split": "loo", "seed": 1,
                                "patch_size": 16, "patches_per_roi": 6}},
        "configurations": ["cifarnet_ri"], "folds": [1], "seeds": [1],
        "training": {"max_epochs": 1}, "ensembles": {"Avg-All": ["cifarnet_ri"]},
        "published": PUBLISHED,
    }
    base.update(changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One tiny patch-level LOO study (CifarNet, 32x32 patches, one epoch), run and reported."""
    folder = tmp_path_factory.mktemp("ild_study")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDTL_RESULTS", str(folder / "results"))  # inherited by run-one processes
        spec_path = _write_spec(folder, "tiny_ild")
        status = runner.run_experiment(spec_path, progress=False)
        report = build_report(spec_path)
        plan = load_plan(spec_path)
        yield {"status": status, "report": report, "experiment": plan.experiment,
               "adapter": plan.study, "run_dir": plan.runs[0].run_dir}


@pytest.mark.slow
def test_a_tiny_ild_study_runs_end_to_end(study, caffe):
    assert study["status"] == {"cifarnet_ri__fold1__frac1__seed1": "done"}
    run_dir = study["run_dir"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["balanced_accuracy"] <= 1
    low, high = metrics["accuracy_interval"]["low"], metrics["accuracy_interval"]["high"]
    assert low <= metrics["accuracy"] <= high
    counts = np.array(metrics["confusion"]["counts"])
    assert metrics["confusion"]["classes"] == CLASSES and counts.shape == (6, 6)
    assert counts.sum() == metrics["samples"] > 0
    assert np.trace(counts) / counts.sum() == pytest.approx(metrics["accuracy"])
    for name, row, fractions in zip(CLASSES, counts, metrics["confusion"]["row_normalised"],
                                    strict=True):
        assert metrics["per_class"][name]["support"] == row.sum()
        if row.sum():
            assert sum(fractions) == pytest.approx(1.0)
        else:
            assert fractions == [None] * 6
    f1 = [metrics["per_class"][n]["f1"] for n in CLASSES]
    assert metrics["macro_f1"] == pytest.approx(np.mean(f1))
    assert metrics["patients"] == 1  # leave one patient out: fold 1 tests one patient

    with open(run_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == metrics["samples"]
    for row in rows[::5]:
        probs = [float(row[f"p_{n}"]) for n in CLASSES]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert int(row["predicted"]) == int(np.argmax(probs))
        assert row["roi"].startswith(f"{row['patient_id']}:") and row["row"] and row["col"]
    resolved = json.loads((run_dir / "run.json").read_text())
    assert resolved["dataset"]["val_size"] > 0
    assert "training.max_epochs = 1 (the paper's: 90)" in resolved["deviations"]


@pytest.mark.slow
def test_the_report_sets_the_scores_beside_the_paper(study):
    text = study["report"].read_text()
    assert "| CifarNet | 1 |" in text and "| Avg-All | ensemble |" in text
    assert "Shin 2016 Table VI (Patch-LOO)" in text and "| 0.799 |" in text
    assert "### Per-class F1 (beside Table IV)" in text
    assert "| NM | " in text and "(0.68)" in text  # Table V beside our confusion matrix
    assert "training.max_epochs = 1 (the paper's: 90)" in text
    assert "folds: 1 of the split's 6 folds run" in text
    assert "### Annotated slices per fold (beside Table I)" in text
    assert "| published: Shin 2016 Table I | 30.2 |" in text and "| fold 6 |" in text
    assert "dataset `val_fraction` = 0.2" in text
    figures = study["report"].parent / "figures"
    for figure in ("confusion.png", "training_traces.png", "filters_cifarnet_ri.png"):
        assert (figures / figure).stat().st_size > 1000, figure
    summary = json.loads(study["report"].with_name("report.json").read_text())
    assert summary["published"]["accuracy"]["CifarNet"] == 0.799
    assert set(summary["scores"]) == {"cifarnet_ri", "Avg-All"}


@pytest.mark.slow
def test_validation_patients_are_held_out_of_training_and_test(study):
    adapter = study["adapter"]
    fold = adapter.split()["folds"]["1"]
    assert fold["test"] == ["001"] and fold["validation"]
    assert not set(fold["validation"]) & set(fold["training"])
    data = adapter.fold_data(1, 1.0, 1, get_model("cifarnet"))

    def database(path: str) -> dict:
        build = Path(path).parents[1]
        manifest = json.loads((build / "manifest.json").read_text())
        return next(d for d in manifest["databases"] if str(build / d["path"]) == path)

    train, val, test = (database(p) for p in (data.train, data.val, data.test))
    assert set(train["patient_counts"]) == set(fold["training"])
    assert set(val["patient_counts"]) == set(fold["validation"])
    assert set(test["patient_counts"]) == {"001"}
    assert len(val["label_counts"]) == 6  # every class validates ...
    assert len(set(val["label_counts"].values())) == 1  # ... balanced, as the equal prior
    assert (val["count"], test["count"]) == (data.val_size, data.test_size)


def test_slice_random_folds_keep_roi_ids_and_score_multi_label_slices(tmp_path, monkeypatch):
    """On a database folder in the distributed format (here written by the phantoms)."""
    monkeypatch.setenv("MEDTL_RESULTS", str(tmp_path / "results"))
    database = tmp_path / "ILD_DB"
    write_collection(database, **PHANTOM | {"size": 64})
    spec_path = _write_spec(
        tmp_path, "slices", study="ild_slice", folds=[2], ensembles={},
        configurations=[{"model": "cifarnet", "policy": "ri"}],
        dataset={"builder": "shin_ild", "source": str(database),
                 "options": {"level": "slice", "split": "slice_random", "folds": 3,
                             "augmentations_per_slice": 2, "seed": 1}})
    adapter = load_plan(spec_path).study
    adapter.prepare(progress=False)
    fold = adapter.split()["folds"]["2"]
    original = {r.id: (r.patient, r.slice_number) for p in ild_io.scan(database)
                for r in p.rois}
    units = {}
    for name in ("train", "eval"):
        rois = [r for p in ild_io.scan(adapter.dataset_dir / "fold2" / f"{name}_source")
                for r in p.rois]
        assert all(original[r.id] == (r.patient, r.slice_number) for r in rois)
        units[name] = {f"{r.patient}:{r.slice_number}" for r in rois}
    assert units["train"] == set(fold["training"]) | set(fold["validation"])
    assert units["eval"] == set(fold["test"]) | set(fold["validation"])

    data = adapter.fold_data(2, 1.0, 1, get_model("cifarnet"))
    with open(data.test_index, newline="") as f:
        index = list(csv.DictReader(f))
    truth = np.array([int(r["label"]) for r in index])
    rows = adapter.predictions(data, np.eye(6)[truth])
    assert adapter.score(rows, data)["accuracy"] == 1.0
    # predict every slice as its first label: right once per slice, whatever its labels
    first = [CLASSES.index(r["labels"].split("|")[0]) for r in rows]
    scores = adapter.score(adapter.predictions(data, np.eye(6)[first]), data)
    assert scores["accuracy_any_label"] == 1.0
    slices = {(r["patient_id"], r["slice"]) for r in rows}
    assert len(slices) < len(rows)  # the fold holds multi-label slices
    assert scores["accuracy"] == pytest.approx(len(slices) / len(rows))


@pytest.mark.parametrize("path", ILD_SPECS, ids=lambda p: p.stem)
def test_every_ild_spec_has_valid_options_and_its_table(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_RESULTS", str(tmp_path))
    plan = load_plan(path)
    adapter = plan.study
    assert isinstance(adapter, ShinIldAdapter)
    assert not adapter.dataset_dir.exists()  # checking options builds nothing
    refs = published_references(plan.published.for_study(plan.experiment.spec.study),
                                adapter.level, adapter.config.split, adapter.prior)
    expected = {"ild_patch_cv5": "Table III (Patch-CV5)", "ild_slice_cv5": "Table III (Slice-CV5)",
                "ild_patch_loo": "Table VI (Patch-LOO)", "ild_slice_loo": "Table VI (Slice-LOO)",
                "ild_patch32_cv5": "Table III (Patch-CV5)",
                "ild_patch_prior_equal": "Table VIII (ILD-Patch, equal prior",
                "ild_patch_prior_biased": "Table VIII (ILD-Patch, biased prior",
                "ild_slice_prior_equal": "Table VIII (ILD-Slice, equal prior",
                "ild_slice_prior_biased": "Table VIII (ILD-Slice, biased prior",
                "ild_slice_random": ""}[path.stem]
    assert expected in refs.accuracy_source and bool(refs.accuracy) == bool(expected)
    if path.stem == "ild_slice_random":
        assert "Slice-Random" in refs.f1_source and len(refs.f1) == 6
    if path.stem.startswith("ild_patch_prior"):
        assert refs.accuracy_metric == "balanced_accuracy"
        assert refs.accuracy["GoogLeNet-TL"] == (0.953 if "equal" in path.stem else 0.952)


@pytest.mark.parametrize(("options", "message"), [
    ({"backend": "hdf5"}, "backend: 'hdf5' is not supported by runs"),
    ({"multi_label": "multi_hot", "backend": "hdf5"}, "multi_label: 'multi_hot' is not"),
    ({"only_folds": [1]}, "only_folds: runs build the folds the spec's `folds` lists"),
    ({"patch_output_size": 64}, "patch_output_size: 64 but the spec's models read [32]"),
    ({"val_fraction": 1.5}, "val_fraction must be in (0, 1)"),
    ({"window": 3}, "unknown key 'window'"),
])
def test_bad_ild_options_are_rejected_naming_the_key(tmp_path, options, message):
    spec_path = _write_spec(tmp_path, "bad", dataset={
        "builder": "shin_ild", "source": "synthetic", "options": {"level": "patch"} | options})
    with pytest.raises(ConfigError) as err:
        load_plan(spec_path)
    assert message in str(err.value) and "dataset.options" in str(err.value)


def test_a_missing_database_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_RESULTS", str(tmp_path / "results"))
    spec_path = _write_spec(tmp_path, "nowhere", dataset={
        "builder": "shin_ild", "source": str(tmp_path / "no_database"),
        "options": {"level": "patch"}})
    with pytest.raises(ConfigError, match=r"dataset.source: .*no_database is not a folder"):
        load_plan(spec_path).study.prepare(progress=False)


def test_the_dataset_key_follows_the_source_the_phantoms_and_val_fraction(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("MEDTL_RESULTS", str(tmp_path / "results"))
    for name in ("db_a", "db_b"):
        (tmp_path / name).mkdir()
    options = {"level": "patch", "split": "loo", "seed": 1}

    def dataset_dir(name: str, **dataset) -> str:
        ds = {"builder": "shin_ild", "source": "synthetic", "phantom": PHANTOM,
              "options": options} | dataset
        study = load_plan(_write_spec(tmp_path, name, dataset=ds)).study
        assert not study.dataset_dir.exists()  # the key is computed, nothing is built
        return study.dataset_dir.name

    base = dataset_dir("base")
    assert dataset_dir("same") == base
    others = [dataset_dir("db_a", source=str(tmp_path / "db_a"), phantom={}),
              dataset_dir("db_b", source=str(tmp_path / "db_b"), phantom={}),
              dataset_dir("phantom_seed", phantom=PHANTOM | {"seed": 3}),
              dataset_dir("phantom_patients", phantom=PHANTOM | {"patients": 7}),
              dataset_dir("val_fraction", options=options | {"val_fraction": 0.3})]
    assert len({base, *others}) == 1 + len(others)


@pytest.mark.parametrize(("options", "folds", "count"), [
    ({"split": "cv5"}, [6], 5),
    ({"split": "slice_random", "folds": 3}, [4], 3),
    ({"split": "loo"}, [7], 6),   # one fold per phantom patient
])
def test_a_fold_beyond_the_split_is_rejected_naming_folds(tmp_path, options, folds, count):
    spec_path = _write_spec(tmp_path, "beyond", folds=folds, dataset={
        "builder": "shin_ild", "source": "synthetic", "phantom": PHANTOM,
        "options": {"level": "patch"} | options})
    with pytest.raises(ConfigError) as err:
        load_plan(spec_path)
    message = str(err.value)
    assert "beyond.yaml: folds: fold" in message and f"has {count} fold(s)" in message


def test_bad_phantom_settings_are_rejected_naming_the_key(tmp_path):
    for phantom, key in (({"patiens": 4}, "patiens"), ({"patients": 1}, "patients"),
                         ({"multi_label_rate": 2}, "multi_label_rate")):
        spec_path = _write_spec(tmp_path, "bad_phantom", dataset={
            "builder": "shin_ild", "source": "synthetic", "phantom": phantom,
            "options": {"level": "patch"}})
        with pytest.raises(ConfigError, match=f"dataset.phantom.*{key}"):
            load_plan(spec_path)


def test_a_folds_csv_resolves_against_the_spec_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_RESULTS", str(tmp_path / "results"))
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "outer.csv").write_text("unit,patient_id,fold\n001,001,1\n002,002,2\n"
                                      "003,003,3\n")
    dataset = {"builder": "shin_ild", "source": "synthetic", "phantom": PHANTOM,
               "options": {"level": "patch", "folds_csv": "outer.csv"}}
    monkeypatch.chdir(tmp_path)  # not the spec's folder
    study = load_plan(_write_spec(folder, "given", dataset=dataset)).study
    assert study.config.folds_csv == str(folder / "outer.csv")
    assert study.fold_count() == 3
    with pytest.raises(ConfigError, match=r"given.yaml: folds: fold 4"):
        load_plan(_write_spec(folder, "given", dataset=dataset, folds=[4]))
    missing = dataset | {"options": {"level": "patch", "folds_csv": "nowhere.csv"}}
    with pytest.raises(ConfigError, match=r"dataset.options.folds_csv: .*nowhere.csv"):
        load_plan(_write_spec(folder, "missing", dataset=missing))


def test_validation_units_hold_every_class_on_both_sides():
    labels = {"a": frozenset({0, 1}), "b": frozenset({2}), "c": frozenset({0, 1, 2}),
              "d": frozenset({0, 1, 2}), "e": frozenset({0})}
    for seed in range(10):
        val = ild_split.hold_out_validation(list(labels), labels, 3, 0.2, seed)
        rest = set(labels) - set(val)
        assert frozenset().union(*(labels[u] for u in val)) == {0, 1, 2}
        assert frozenset().union(*(labels[u] for u in rest)) == {0, 1, 2}
    with pytest.raises(FoldError, match="a class lies on a single unit"):
        ild_split.hold_out_validation(["a", "b", "e"], labels, 3, 0.5, 0)


def test_blanked_contours_keep_the_line_numbers_of_the_others():
    lines = ["SpacingX: 1", "SpacingY: 1", "label: fibrosis", "slice_number: 2",
             "nb_points_on_contour: 2", "0 0", "1 1", "slice_number: 3",
             "nb_points_on_contour: 1", "5 5"]
    out = ild_split.blank_contours(lines, {3})
    assert len(out) == len(lines) and out[4:7] == ["", "", ""]
    assert out[7:] == lines[7:] and ild_split.blank_contours(lines, None) == lines
