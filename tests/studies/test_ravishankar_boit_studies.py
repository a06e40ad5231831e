"""`medtl run` and the reports of Ravishankar 2016 (kidney) and Boit 2019 (ChestX-ray14) on
tiny synthetic data, with real Caffe: CaffeNet at 227 and DenseNet-121 at 224, one epoch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from medtl import caffe_env
from medtl.config import ConfigError
from medtl.experiments import datasets, runner, spec
from medtl.experiments.report_other import (
    OTHER_REPORTS,
    build_other_report,
    published_tables,
)
from medtl.nets.densenet import DENSENET121
from medtl.nets.variants import deploy_net
from medtl.paths import REPO
from medtl.prototxt import write_text
from medtl.studies.boit2019.adapter import ChestXray14Adapter, wilson
from medtl.studies.ravishankar2016.adapter import KidneyAdapter, PatchFeatures
from medtl.studies.ravishankar2016.dataset import render_boxes
from medtl.surgery import random_weights, read_weights

KIDNEY_SPEC = REPO / "experiments/ravishankar2016/kidney.yaml"
CHEST_SPEC = REPO / "experiments/boit2019/chestxray14_binary.yaml"

@pytest.fixture
def results_root(tmp_path, monkeypatch):
    root = tmp_path / "results"
    monkeypatch.setenv("MEDTL_RESULTS", str(root))
    return root


def _spec(folder: Path, name: str, base: Path, **changes) -> Path:
    data = yaml.safe_load(base.read_text())
    data["published"] = str(base.parent / data["published"])
    for key, value in changes.items():
        data[key] = value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _free_disk(root: Path) -> None:
    """The runs' weights and solver states (CaffeNet's: ~3 GB) once the test has used them."""
    for path in list(root.rglob("*")):
        if path.suffix in (".caffemodel", ".solverstate"):
            path.unlink()


# ------------------------------------------------------------------ Ravishankar

def _kidney_spec(tmp_path: Path, **changes) -> Path:
    definition = caffe_env.prefix() / "models/bvlc_reference_caffenet/deploy.prototxt"
    weights = tmp_path / "caffenet_stand_in.caffemodel"
    if not weights.exists():
        random_weights(definition, weights, seed=3)   # stands in for the ImageNet weights
    base = {
        "title": "tiny kidney study",
        "dataset": {"builder": "ravishankar_kidney", "source": "synthetic",
                    "phantom": {"subjects": 5, "images_per_subject": 2, "size": [120, 90],
                                "seed": 1},
                    "options": {"seed": 1, "positives_per_kidney": 3, "negatives_per_image": 4,
                                "haar_features": 200,
                                "evaluation": {"gbm_estimators": 20, "window_scales": [1.0],
                                               "window_stride": 0.5, "batch": 10}}},
        "training": {"max_epochs": 1, "batch_size": 10},
        "pretrained": {"weights": {"caffenet": {"weights": str(weights),
                                                "definition": str(definition),
                                                "drop": ["fc8"]}}},
    }
    return _spec(tmp_path, "tiny_kidney", KIDNEY_SPEC, **(base | changes))


def test_kidney_study_runs_scores_and_reports(results_root, tmp_path, caffe):
    spec_path = _kidney_spec(tmp_path)
    status = runner.run_experiment(spec_path, progress=False)
    ids = [f"caffenet_{p}__fold1__frac1__seed1" for p in ("fa", "pa", "na")]
    assert status == dict.fromkeys(ids, "done")
    runs = results_root / "ravishankar2016" / "tiny_kidney" / "runs"
    metrics = {i.split("_")[1]: json.loads((runs / i / "metrics.json").read_text()) for i in ids}

    fa = runs / ids[0]
    preds = _read_csv(fa / "predictions.csv")
    labels = np.array([int(r["label"]) for r in preds])
    located = _read_csv(fa / "localisation.csv")
    test_images = {r["image"] for r in _read_csv(
        next((results_root / "ravishankar2016/tiny_kidney/data").glob("kidney_*"))
        / "test_images.csv")}
    for name, s in metrics["fa"]["feature_sets"].items():
        # the GBM's decision is its probability above 0.5
        scores = np.array([float(r[f"score_{name}"]) for r in preds])
        assert s["test_accuracy"] == pytest.approx(((scores > 0.5) == labels).mean())
        dice = [float(r["dice"]) for r in located if r["feature_set"] == name]
        assert len(dice) == s["localisation_images"] == len(test_images)
        assert s["localisation_failures"] == sum(d < 0.8 for d in dice)
    assert set(metrics["fa"]["feature_sets"]) == {"fc7", "haar", "fc7+haar"}
    assert metrics["fa"]["test_patches"] == len(preds) and 0 < labels.sum() < len(labels)
    assert metrics["fa"]["evaluation"]["gbm_estimators"]["set_by_user"]

    # Table 2 inputs: FA moves conv1, PA keeps conv1 and conv2, NA keeps every weight
    layers = {k: v["changed_filters"]["layers"] for k, v in metrics.items()}
    assert list(layers["fa"]) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    assert layers["fa"]["conv1"]["median_change"] > 0
    assert layers["pa"]["conv1"]["median_change"] == layers["pa"]["conv2"]["median_change"] == 0
    assert layers["pa"]["conv3"]["median_change"] > 0
    assert all(v["changed"] == 0 and v["median_change"] == 0 for v in layers["na"].values())
    na = runs / ids[2]
    before, after = read_weights(na / "init.caffemodel"), read_weights(na / "selected.caffemodel")
    assert all(np.array_equal(a, b) for k in before for a, b in zip(before[k], after[k],
                                                                    strict=True))

    # the localisation's patch features are the extracted fc7 features of the same boxes
    net = PatchFeatures(fa / "net/deploy.prototxt", fa / "selected.caffemodel",
                        Path(json.loads((fa / "run.json").read_text())["dataset"]["train"])
                        .parent / "train_mean.binaryproto", "fc7")
    boxes = np.array([[float(r[k]) for k in ("x0", "y0", "x1", "y1")] for r in
                      _read_csv(Path(json.loads((fa / "run.json").read_text())["dataset"]
                                     ["test"]).parent / "test_index.csv")[:3]])
    patches = render_boxes(Path(preds[0]["image"]), boxes, 256)
    with h5py.File(fa / "features/fc7_test.h5", "r") as f:
        np.testing.assert_allclose(net(patches), f["features"][:3], rtol=1e-4, atol=1e-4)

    assert runner.run_experiment(spec_path, progress=False) == dict.fromkeys(
        ids, "finished earlier")
    report = build_other_report(spec_path)
    text = report.read_text()
    assert "| CaffeNet_FA | fc7 + Haar | 1 |" in text and "| -, 3 |" in text
    assert "| Haar (no CNN) | Haar | 1 |" in text
    assert "| conv1 | 96 | 0 | 0 | 0 |" in text
    assert "CaffeNet_NA: no layer learns" in text
    assert "training.max_epochs = 1 (the paper's: 50)" in text
    assert "evaluation `gbm_estimators` = 20" in text
    assert "evaluation `gbm_max_depth` = 3: not given" in text
    for figure in ("filter_changes", "roc", "localisation_dice", "training_traces"):
        assert (report.parent / "figures" / f"{figure}.png").stat().st_size > 1000, figure
    _free_disk(tmp_path)


# ------------------------------------------------------------------ Boit

def _densenet_stand_in(folder: Path) -> tuple[Path, Path]:
    """A DenseNet-121 laid out like the Caffe port (ImageNet classifier `fc6`), random
    weights standing in for the port's ImageNet ones."""
    net = deploy_net(DENSENET121.body, 1000, (1, 3, 224, 224), "DenseNet_121")
    for layer in net.layer:
        layer.name = "fc6" if layer.name == "fc6_new" else layer.name
        for blobs in (layer.top, layer.bottom):
            for i, name in enumerate(blobs):
                if name == "fc6_new":
                    blobs[i] = "fc6"
    definition = write_text(folder / "DenseNet_121.prototxt", net)
    return definition, random_weights(definition, folder / "DenseNet_121.caffemodel", seed=2)


def test_chestxray14_study_runs_scores_and_reports(results_root, tmp_path, caffe):
    definition, weights = _densenet_stand_in(tmp_path)
    spec_path = _spec(tmp_path, "tiny_cxr", CHEST_SPEC, title="tiny ChestX-ray14 study",
                      dataset={"builder": "chestxray14", "source": "synthetic",
                               "phantom": {"patients": 8, "max_images_per_patient": 2,
                                           "size": 256, "seed": 2, "test_fraction": 0.4},
                               "options": {"task": "binary", "val_fraction": 0.25}},
                      training={"max_epochs": 1, "batch_size": 2},
                      pretrained={"weights": {"densenet121-boit": {
                          "weights": str(weights), "definition": str(definition),
                          "drop": ["fc6"]}}})
    status = runner.run_experiment(spec_path, progress=False)
    ids = [f"densenet121-boit_{p}__fold1__frac1__seed1" for p in ("fe", "ft")]
    assert status == dict.fromkeys(ids, "done")
    runs = results_root / "boit2019" / "tiny_cxr" / "runs"
    dataset = next((results_root / "boit2019/tiny_cxr/data").glob("chestxray14_binary_*"))
    index = _read_csv(dataset / "test_index.csv")
    balance = json.loads((dataset / "manifest.json").read_text())["counts"]
    for run_id in ids:
        m = json.loads((runs / run_id / "metrics.json").read_text())
        rows = _read_csv(runs / run_id / "predictions.csv")
        assert [r["image"] for r in rows] == [r["image"] for r in index]
        labels = np.array([int(r["label"]) for r in rows])
        assert labels.tolist() == [int(float(r["label"])) for r in index]
        scores = np.array([float(r["score"]) for r in rows])
        assert ((scores > 0) & (scores < 1)).all()
        assert m["accuracy"]["estimate"] == pytest.approx(((scores >= 0.5) == labels).mean())
        assert m["accuracy"]["low"] <= m["accuracy"]["estimate"] <= m["accuracy"]["high"]
        assert m["test_positives"] == balance["test"]["binary"]["positive"]
        assert m["class_balance"] == balance
        assert m["majority_class_accuracy"] == pytest.approx(
            max(labels.mean(), 1 - labels.mean()))
    # feature extraction keeps the base, fine-tuning moves conv5_16/x2 (Boit's boundary)
    init = read_weights(runs / ids[0] / "init.caffemodel")
    fe = read_weights(runs / ids[0] / "selected.caffemodel")
    ft = read_weights(runs / ids[1] / "selected.caffemodel")
    assert np.array_equal(fe["conv5_16/x2"][0], init["conv5_16/x2"][0])
    assert not np.array_equal(ft["conv5_16/x2"][0], init["conv5_16/x2"][0])
    assert not np.array_equal(fe["fc6_new"][0], init["fc6_new"][0])

    report = build_other_report(spec_path)
    text = report.read_text()
    assert "| DenseNet-121 feature extraction | 1 |" in text and "| 0.96 |" in text
    assert "majority-class accuracy" in text and "| test |" in text
    assert "training.batch_size = 2 (the paper's: 32)" in text
    assert "dataset `val_fraction` = 0.25" in text
    for figure in ("roc", "class_balance", "training_traces"):
        assert (report.parent / "figures" / f"{figure}.png").stat().st_size > 1000, figure
    _free_disk(tmp_path)


# ------------------------------------------------------------------ specs and options

def test_the_declared_specs_load_and_name_their_missing_data(results_root):
    for path, adapter_class, source in ((KIDNEY_SPEC, KidneyAdapter, "data/ravishankar_kidney"),
                                        (CHEST_SPEC, ChestXray14Adapter, "data/chestxray14")):
        experiment = spec.load_experiment(path)
        adapter = datasets.adapter_for(experiment)
        assert isinstance(adapter, adapter_class)
        assert adapter.report_kind in OTHER_REPORTS
        with pytest.raises(ConfigError, match=source):
            adapter.prepare(progress=False)
    kidney = spec.load_experiment(KIDNEY_SPEC)
    assert [c.id for c in kidney.configurations] == ["caffenet_fa", "caffenet_pa", "caffenet_na"]


def test_bad_options_are_named(results_root, tmp_path):
    bad_eval = _spec(tmp_path, "a", KIDNEY_SPEC, dataset={
        "builder": "ravishankar_kidney", "source": "synthetic",
        "options": {"evaluation": {"gbm_trees": 5}}})
    with pytest.raises(ConfigError, match="evaluation: unknown key 'gbm_trees'"):
        datasets.adapter_for(spec.load_experiment(bad_eval))
    small = _spec(tmp_path, "b", KIDNEY_SPEC, dataset={
        "builder": "ravishankar_kidney", "source": "synthetic", "options": {"patch_size": 64}})
    with pytest.raises(ConfigError, match="patch_size 64 is smaller than caffenet's input 227"):
        datasets.adapter_for(spec.load_experiment(small))
    phantom = _spec(tmp_path, "c", KIDNEY_SPEC, dataset={
        "builder": "ravishankar_kidney", "source": "synthetic", "phantom": {"patients": 3}})
    with pytest.raises(ConfigError, match=r"dataset\.phantom: unknown key 'patients'"):
        datasets.adapter_for(spec.load_experiment(phantom)).prepare(progress=False)
    tiny = _spec(tmp_path, "d", CHEST_SPEC, dataset={
        "builder": "chestxray14", "source": "synthetic",
        "options": {"image_size": 32, "crop_size": 28}})
    with pytest.raises(ConfigError, match="crop_size 28 is below 32"):
        datasets.adapter_for(spec.load_experiment(tiny))
    multi = _spec(tmp_path, "e", CHEST_SPEC, dataset={
        "builder": "chestxray14", "source": "synthetic", "options": {"task": "multilabel"}})
    with pytest.raises(ConfigError, match="14 label"):
        datasets.adapter_for(spec.load_experiment(multi))
    folds = _spec(tmp_path, "f", CHEST_SPEC, folds=[2])
    experiment = spec.load_experiment(folds)
    with pytest.raises(ConfigError, match="one official patient-level split"):
        datasets.adapter_for(experiment).fold_data(2, 1.0, 1, None)


def test_published_numbers_and_the_accuracy_interval():
    kidney = {t.name: t for t in published_tables(spec.load_experiment(KIDNEY_SPEC))}
    assert kidney["table_1"].rows == {"fc7 + Haar": [None, 3]}
    assert kidney["table_1"].metrics == ["accuracy", "localisation_failures"]
    assert kidney["table_2"].rows == {}
    chest = published_tables(spec.load_experiment(CHEST_SPEC))
    assert [t.rows for t in chest] == [{"DenseNet-121": [0.96]}]
    w = wilson(96, 100)   # 95% Wilson score interval of 96/100: [0.9016, 0.9843]
    assert (round(w["low"], 4), round(w["high"], 4)) == (0.9016, 0.9843)
    assert wilson(0, 10)["low"] == 0.0
