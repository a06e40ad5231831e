"""`medtl run` and the report of Boit 2019 (ChestX-ray14) on tiny synthetic data, with real
Caffe: DenseNet-121 at 224, one epoch; the spec's options, phantoms and published numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from spec_helpers import free_disk, spec_from

from medtl.caffe_env import caffe
from medtl.config import ConfigError
from medtl.experiments import runner
from medtl.experiments.plan import load_plan
from medtl.experiments.report.build import build_report
from medtl.experiments.report.context import read_csv
from medtl.experiments.study import StudyAdapter
from medtl.metrics import wilson
from medtl.nets.densenet import DENSENET121
from medtl.nets.variants import deploy_net
from medtl.paths import REPO
from medtl.prototxt import write_text
from medtl.studies.boit2019.adapter import ChestXray14Adapter
from medtl.surgery import random_weights, read_weights

CHEST_SPEC = REPO / "experiments/boit2019/chestxray14_binary.yaml"



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
    weights = random_weights(definition, folder / "DenseNet_121.random.caffemodel", seed=2)
    return definition, _calibrated(net, weights, folder / "DenseNet_121.caffemodel")


def _calibrated(net, weights: Path, dest: Path) -> Path:
    """The stand-in's BatchNorm statistics measured on an input of image-like scale, as a
    trained net's are: random filters with neutral statistics blow activations up through
    121 layers, which a frozen base (use_global_stats) would pass on unchanged."""
    c = caffe()
    measuring = type(net)()
    measuring.CopyFrom(net)
    for layer in measuring.layer:
        if layer.type == "BatchNorm":
            layer.batch_norm_param.use_global_stats = False
    path = write_text(dest.with_suffix(".measure.prototxt"), measuring)
    live = c.Net(str(path), c.TEST, weights=str(weights))
    for layer in measuring.layer:
        if layer.type == "BatchNorm":
            for blob in live.params[layer.name]:
                blob.data[...] = 0      # the moving averages then hold this input's statistics
    live.blobs["data"].data[...] = np.random.default_rng(3).normal(
        0, 60, live.blobs["data"].data.shape)
    live.forward()
    live.save(str(dest))
    return dest


@pytest.mark.slow
def test_chestxray14_study_runs_scores_and_reports(results_root, tmp_path, caffe):
    definition, weights = _densenet_stand_in(tmp_path)
    spec_path = spec_from(tmp_path, "tiny_cxr", CHEST_SPEC, title="tiny ChestX-ray14 study",
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
    dataset = load_plan(spec_path).study.dataset_dir
    index = read_csv(dataset / "test_index.csv")
    balance = json.loads((dataset / "manifest.json").read_text())["counts"]
    for run_id in ids:
        m = json.loads((runs / run_id / "metrics.json").read_text())
        rows = read_csv(runs / run_id / "predictions.csv")
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

    report = build_report(spec_path)
    text = report.read_text()
    assert "| DenseNet-121 feature extraction, Adam | 1 |" in text and "| 0.96 |" in text
    assert "Fine-tuning with Data Augmentation" in text
    assert "majority-class accuracy" in text and "| test |" in text
    assert "training.batch_size = 2 (the paper's: 32)" in text
    assert "dataset `val_fraction` = 0.25" in text
    for figure in ("roc", "class_balance", "training_traces"):
        assert (report.parent / "figures" / f"{figure}.png").stat().st_size > 1000, figure
    free_disk(tmp_path)


# ------------------------------------------------------------------ specs and options

def test_the_declared_spec_loads_and_names_its_missing_data(results_root):
    adapter = load_plan(CHEST_SPEC).study
    assert isinstance(adapter, ChestXray14Adapter)
    assert type(adapter).report is not StudyAdapter.report   # the study has its report
    with pytest.raises(ConfigError, match="data/chestxray14"):
        adapter.prepare(progress=False)


def test_bad_options_are_named(results_root, tmp_path):
    tiny = spec_from(tmp_path, "d", CHEST_SPEC, dataset={
        "builder": "chestxray14", "source": "synthetic",
        "options": {"image_size": 32, "crop_size": 28}})
    with pytest.raises(ConfigError, match="crop_size 28 is below 32"):
        load_plan(tiny)
    multi = spec_from(tmp_path, "e", CHEST_SPEC, dataset={
        "builder": "chestxray14", "source": "synthetic", "options": {"task": "multilabel"}})
    with pytest.raises(ConfigError, match="14 label"):
        load_plan(multi)
    folds = spec_from(tmp_path, "f", CHEST_SPEC, folds=[2])
    with pytest.raises(ConfigError, match="one official patient-level split"):
        load_plan(folds)
    phantom = spec_from(tmp_path, "g", CHEST_SPEC, dataset={
        "builder": "chestxray14", "source": "synthetic", "phantom": {"revision": "2019"}})
    with pytest.raises(ConfigError, match=r"dataset\.phantom\.revision: '2019'"):
        load_plan(phantom)


def test_the_dataset_key_follows_the_source_and_the_phantoms(results_root, tmp_path):
    def study(name: str, **dataset) -> ChestXray14Adapter:
        return load_plan(spec_from(tmp_path, name, CHEST_SPEC, dataset={
            "builder": "chestxray14", "options": {"task": "binary"}, **dataset})).study

    phantoms = study("a", source="synthetic", phantom={"patients": 8, "seed": 2})
    again = study("b", source="synthetic", phantom={"patients": 8, "seed": 2})
    other_patients = study("c", source="synthetic", phantom={"patients": 9, "seed": 2})
    nested = study("d", source="synthetic", phantom={"patients": 8, "seed": 2,
                                                      "nested": True})
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, two = study("e", source=str(tmp_path / "one")), study("f", source="two")
    keys = [s.dataset_key for s in (phantoms, other_patients, nested, one, two)]
    assert len(set(keys)) == len(keys)
    assert again.dataset_key == phantoms.dataset_key
    assert two.source_path == (tmp_path / "two").resolve()   # relative to the spec's folder


def test_published_numbers_and_the_accuracy_interval():
    chest = load_plan(CHEST_SPEC).published.for_study("chestxray14_binary")
    assert [t.rows for t in chest] == [{"DenseNet-121": [0.96]}]
    w = wilson(96, 100)   # 95% Wilson score interval of 96/100: [0.9016, 0.9843]
    assert (round(w["low"], 4), round(w["high"], 4)) == (0.9016, 0.9843)
    assert wilson(0, 10)["low"] == 0.0
