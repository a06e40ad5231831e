"""`medtl run` and the report of Ravishankar 2016 (kidney) on tiny synthetic data, with real
Caffe: CaffeNet at 227, one epoch; the spec's options, phantoms and published numbers."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from spec_helpers import free_disk, spec_from

from medtl import caffe_env
from medtl.config import ConfigError
from medtl.experiments import runner
from medtl.experiments.plan import load_plan
from medtl.experiments.report.build import build_report
from medtl.experiments.report.context import read_csv
from medtl.experiments.study import StudyAdapter
from medtl.infer import ArrayNet
from medtl.paths import REPO, from_results
from medtl.studies.ravishankar2016.adapter import KidneyAdapter
from medtl.studies.ravishankar2016.dataset import render_boxes
from medtl.surgery import random_weights, read_weights

KIDNEY_SPEC = REPO / "experiments/ravishankar2016/kidney.yaml"



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
    return spec_from(tmp_path, "tiny_kidney", KIDNEY_SPEC, **(base | changes))


@pytest.mark.slow
def test_kidney_study_runs_scores_and_reports(results_root, tmp_path, caffe):
    spec_path = _kidney_spec(tmp_path)
    status = runner.run_experiment(spec_path, progress=False)
    ids = [f"caffenet_{p}__fold1__frac1__seed1" for p in ("fa", "pa", "na")]
    assert status == dict.fromkeys(ids, "done")
    runs = results_root / "ravishankar2016" / "tiny_kidney" / "runs"
    metrics = {i.split("_")[1]: json.loads((runs / i / "metrics.json").read_text()) for i in ids}

    fa = runs / ids[0]
    preds = read_csv(fa / "predictions.csv")
    labels = np.array([int(r["label"]) for r in preds])
    located = read_csv(fa / "localisation.csv")
    dataset_dir = load_plan(spec_path).study.dataset_dir
    test_images = {r["image"] for r in read_csv(dataset_dir / "test_images.csv")}
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
    record = json.loads((fa / "run.json").read_text())["dataset"]
    net = ArrayNet(fa / "net/deploy.prototxt", fa / "selected.caffemodel",
                   mean_file=from_results(record["train"]).parent / "train_mean.binaryproto")
    boxes = np.array([[float(r[k]) for k in ("x0", "y0", "x1", "y1")] for r in
                      read_csv(from_results(record["test"]).parent / "test_index.csv")[:3]])
    patches = render_boxes(Path(preds[0]["image"]), boxes, 256)
    with h5py.File(fa / "features/fc7_test.h5", "r") as f:
        np.testing.assert_allclose(net(patches, "fc7"), f["features"][:3], rtol=1e-4,
                                   atol=1e-4)

    assert runner.run_experiment(spec_path, progress=False) == dict.fromkeys(
        ids, "finished earlier")
    report = build_report(spec_path)
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
    free_disk(tmp_path)


# ------------------------------------------------------------------ specs and options

def test_the_declared_spec_loads_and_names_its_missing_data(results_root):
    plan = load_plan(KIDNEY_SPEC)
    adapter = plan.study
    assert isinstance(adapter, KidneyAdapter)
    assert type(adapter).report is not StudyAdapter.report   # the study has its report
    with pytest.raises(ConfigError, match="data/ravishankar_kidney"):
        adapter.prepare(progress=False)
    assert [c.id for c in plan.experiment.configurations] == ["caffenet_fa", "caffenet_pa",
                                                              "caffenet_na"]


def test_bad_options_are_named(results_root, tmp_path):
    bad_eval = spec_from(tmp_path, "a", KIDNEY_SPEC, dataset={
        "builder": "ravishankar_kidney", "source": "synthetic",
        "options": {"evaluation": {"gbm_trees": 5}}})
    with pytest.raises(ConfigError, match="evaluation: unknown key 'gbm_trees'") as err:
        load_plan(bad_eval)
    assert str(bad_eval) in str(err.value)
    assert "dataset.options.evaluation" in str(err.value)
    small = spec_from(tmp_path, "b", KIDNEY_SPEC, dataset={
        "builder": "ravishankar_kidney", "source": "synthetic", "options": {"patch_size": 64}})
    with pytest.raises(ConfigError, match="patch_size 64 is smaller than caffenet's input 227"):
        load_plan(small)
    phantom = spec_from(tmp_path, "c", KIDNEY_SPEC, dataset={
        "builder": "ravishankar_kidney", "source": "synthetic", "phantom": {"patients": 3}})
    with pytest.raises(ConfigError, match=r"dataset\.phantom: unknown key 'patients'"):
        load_plan(phantom)
    stride = spec_from(tmp_path, "d", KIDNEY_SPEC, dataset={
        "builder": "ravishankar_kidney", "source": "synthetic",
        "options": {"evaluation": {"window_stride": 0}}})
    with pytest.raises(ConfigError, match=r"dataset\.options\.evaluation\.window_stride"):
        load_plan(stride)
    folds = spec_from(tmp_path, "e", KIDNEY_SPEC, folds=[2])
    with pytest.raises(ConfigError, match="one subject-level split"):
        load_plan(folds)


def test_the_dataset_key_follows_the_source_and_the_phantoms(results_root, tmp_path):
    def study(name: str, **dataset) -> KidneyAdapter:
        return load_plan(spec_from(tmp_path, name, KIDNEY_SPEC, dataset={
            "builder": "ravishankar_kidney", **dataset})).study

    phantoms = study("a", source="synthetic", phantom={"subjects": 5, "seed": 1})
    again = study("b", source="synthetic", phantom={"subjects": 5, "seed": 1})
    other_seed = study("c", source="synthetic", phantom={"subjects": 5, "seed": 2})
    other_size = study("d", source="synthetic", phantom={"subjects": 5, "seed": 1,
                                                          "size": [100, 80]})
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, two = study("e", source=str(tmp_path / "one")), study("f", source="two")
    keys = [s.dataset_key for s in (phantoms, other_seed, other_size, one, two)]
    assert len(set(keys)) == len(keys)
    assert again.dataset_key == phantoms.dataset_key
    assert two.source_path == (tmp_path / "two").resolve()   # relative to the spec's folder
    # the evaluation options score the runs; they do not change the dataset
    scored = study("g", source="synthetic", phantom={"subjects": 5, "seed": 1},
                   options={"evaluation": {"gbm_estimators": 7}})
    assert scored.dataset_key == phantoms.dataset_key
    assert scored.scoring_settings() != phantoms.scoring_settings()


def test_the_published_numbers():
    published = load_plan(KIDNEY_SPEC).published
    kidney = {t.name: t for t in published.for_study("kidney")}
    assert kidney["table_1"].rows == {"fc7 + Haar": [None, 3]}
    assert kidney["table_1"].metrics == ["accuracy", "localisation_failures"]
    assert kidney["table_2"].rows == {}
