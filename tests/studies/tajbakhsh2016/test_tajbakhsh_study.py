"""Tajbakhsh 2016's four studies through `medtl run` and `medtl report`, on tiny phantoms
with real Caffe (AlexNet at 227 x 227, one epoch), plus the boundary tracing, the scoring
conventions on inputs with known answers, and the spec errors `load_plan` names."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medtl import caffe_env
from medtl.config import ConfigError
from medtl.datasets.formats.candidates import Candidate
from medtl.datasets.lmdb_writer import read_lmdb
from medtl.experiments import runner
from medtl.experiments.plan import load_plan
from medtl.experiments.report.build import build_report
from medtl.experiments.study import BUILDERS
from medtl.nets.registry import get_model
from medtl.paths import REPO, from_results
from medtl.prototxt import read_net, write_text
from medtl.studies.tajbakhsh2016.adapters import polyp_lesions
from medtl.studies.tajbakhsh2016.boundaries import (
    SnakeParams,
    column_max_rows,
    open_snake,
    trace_interface,
)
from medtl.studies.tajbakhsh2016.dense import DenseNet
from medtl.studies.tajbakhsh2016.phantoms import write_frame_collection
from medtl.studies.tajbakhsh2016.scoring import (
    PolypOptions,
    link_lesions,
    score_polyp,
)
from medtl.surgery import random_weights

DECLARED = REPO / "experiments" / "tajbakhsh2016"
BUILDER_NAMES = {"tajbakhsh_polyp", "tajbakhsh_pe", "tajbakhsh_frame", "tajbakhsh_imt"}


# ------------------------------------------------------------------ fixtures

@pytest.fixture
def study(tmp_path, monkeypatch):
    """Runs write under a temporary results/ (inherited by the `run-one` subprocesses)."""
    assert set(BUILDERS) >= BUILDER_NAMES
    root = tmp_path / "results"
    monkeypatch.setenv("MEDTL_RESULTS", str(root))
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> dict[str, str]:
    """A small stand-in for bvlc_alexnet: its conv1-conv5 with random weights (9 MB; fc6 and
    fc7, absent from it, start from their fillers like fc8)."""
    folder = tmp_path_factory.mktemp("source")
    net = read_net(caffe_env.prefix() / "models" / "bvlc_alexnet" / "deploy.prototxt")
    names = [layer.name for layer in net.layer]
    del net.layer[names.index("pool5") + 1:]
    definition = write_text(folder / "alexnet_conv.prototxt", net)
    weights = random_weights(definition, folder / "alexnet_conv.caffemodel", seed=5)
    return {"weights": str(weights), "definition": str(definition)}


def _spec(folder: Path, name: str, study_id: str, builder: str, source: dict[str, str],
          **changes) -> Path:
    base = {
        "paper": "tajbakhsh2016", "study": study_id, "title": f"tiny {study_id}",
        "dataset": {"builder": builder, "source": "synthetic"},
        "configurations": ["alexnet-h_fc8"], "folds": [1], "seeds": [1],
        "data_fractions": [1.0],
        "training": {"max_epochs": 1, "batch_size": 8},
        "pretrained": {"weights": {"alexnet-h": source}},
        "published": str(DECLARED / "published.yaml"),
    }
    base.update(changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def _metrics(root: Path, spec_path: Path) -> dict[str, dict]:
    return {p.run_id: json.loads((p.run_dir / "metrics.json").read_text())
            for p in load_plan(spec_path).runs}


def _interval_ok(interval: dict) -> bool:
    return 0 <= interval["low"] <= interval["estimate"] <= interval["high"] <= 1


# ------------------------------------------------------------------ the four studies

@pytest.mark.slow
def test_frame_study_with_a_reduced_training_set(study, tmp_path, source, caffe):
    spec_path = _spec(
        tmp_path, "frame", "frame", "tajbakhsh_frame", source, data_fractions=[1.0, 0.5],
        dataset={"builder": "tajbakhsh_frame", "source": "synthetic",
                 "phantom": {"videos": 4, "frames_per_video": 4, "size": [240, 230]},
                 "options": {"train_patches": 16, "crops_per_frame": 2,
                             "frame_size": [240, 230], "reductions": [0.5],
                             "adapter": {"n_boot": 200}}})
    status = runner.run_experiment(spec_path, progress=False)
    assert set(status.values()) == {"done"}, status
    metrics = _metrics(study, spec_path)
    assert len(metrics) == 2
    for m in metrics.values():
        assert m["frames"] == 8 and m["informative"] == 4
        assert _interval_ok(m["auc_delong"]) and _interval_ok(m["auc_bootstrap"])
        assert set(m["sensitivity_at_fpr"]) == {"0.1", "0.15", "0.2"}
        assert all(_interval_ok(i) for i in m["sensitivity_at_fpr"].values())
        assert list(m["selection"]) == ["max_val_auc"]
    runs = study / "tajbakhsh2016" / "frame" / "runs"
    full = json.loads((runs / "alexnet-h_fc8__fold1__frac1__seed1" / "run.json"
                       ).read_text())["dataset"]
    half = json.loads((runs / "alexnet-h_fc8__fold1__frac0.5__seed1" / "run.json"
                       ).read_text())["dataset"]
    assert half["val"] == full["val"] and half["val"].endswith("full/val_lmdb")
    assert half["train"].endswith("reduced_50pct/train_lmdb")
    assert half["train_size"] < full["train_size"]
    with open(runs / "alexnet-h_fc8__fold1__frac1__seed1" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["patches"] for r in rows} == {"2"}

    report = build_report(spec_path)
    text = report.read_text()
    assert "AUC (DeLong)" in text and "sensitivity at 15% FPR" in text
    assert "| Fine-tuned AlexNet:fc8 | 50% |" in text
    assert "Fine-tuned AlexNet:fc8 (100%) vs Fine-tuned AlexNet:fc8 (50%)" in text
    assert "training.max_epochs = 1" in text and "dataset `train_patches` = 16" in text
    # the core's walk names the scoring options by their key in the spec, `adapter`
    assert "adapter `bootstrap_unit` = 'frame'" in text   # the spec's key names the group
    for figure in ("roc_100.png", "roc_50.png", "roc_reductions.png", "validation_auc.png"):
        assert (report.parent / "figures" / figure).stat().st_size > 5000, figure


@pytest.mark.slow
def test_polyp_study_froc_per_frame(study, tmp_path, source, caffe):
    spec_path = _spec(
        tmp_path, "polyp", "polyp", "tajbakhsh_polyp", source,
        dataset={"builder": "tajbakhsh_polyp", "source": "synthetic",
                 "phantom": {"videos": 4, "frames_per_video": 4, "seed": 2},
                 "options": {"train_patches": 20, "scales": [1.0],
                             "translation_pattern": "cross5", "flips": 1,
                             "adapter": {"n_boot": 200}}})
    assert runner.run_experiment(spec_path, progress=False) == {
        "alexnet-h_fc8__fold1__frac1__seed1": "done"}
    (m,) = _metrics(study, spec_path).values()
    assert m["fp_unit"] == "frame" and m["frames"] == 8 and m["lesions"] >= 1
    assert set(m["sensitivity"]) == {"0.01", "0.05", "0.1"}
    assert all(_interval_ok(i) for i in m["sensitivity"].values())
    assert m["froc_curve"]["fp"][0] == 0 and m["froc_curve"]["sensitivity"][-1] == 1.0
    run_dir = study / "tajbakhsh2016" / "polyp" / "runs" / "alexnet-h_fc8__fold1__frac1__seed1"
    with open(run_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["patches"] for r in rows} == {"5"}
    assert all((r["lesion"] != "") == (r["label"] == "1") for r in rows)
    report = build_report(spec_path)
    assert "sensitivity at 0.05 FP/frame" in report.read_text()
    assert "FROC hit rule: a polyp is one connected region" in report.read_text()
    assert (report.parent / "figures" / "froc_100.png").stat().st_size > 5000


@pytest.mark.slow
def test_pe_study_scratch_and_fine_tuned_froc_per_volume(study, tmp_path, source, caffe):
    spec_path = _spec(
        tmp_path, "pe", "pe", "tajbakhsh_pe", source,
        configurations=["alexnet-h_fc8", "alexnet-h_scratch"],
        dataset={"builder": "tajbakhsh_pe", "source": "synthetic",
                 "phantom": {"patients": 4},
                 "options": {"train_patches": 20, "sizes_mm": [15.0], "translations": [0.0],
                             "rotations": 2, "adapter": {"n_boot": 200}}})
    assert set(runner.run_experiment(spec_path, progress=False).values()) == {"done"}
    metrics = _metrics(study, spec_path)
    assert len(metrics) == 2
    for m in metrics.values():
        # two test patients, two emboli each, one candidate per embolus
        assert m["fp_unit"] == "volume" and m["volumes"] == 2 and m["lesions"] == 4
        assert m["candidates"] == 12 and m["positives"] == 4
        assert set(m["sensitivity"]) == {"1", "2", "3"}
        assert _interval_ok(m["froc_area"])
    report = build_report(spec_path)
    text = report.read_text()
    assert "sensitivity at 3 FP/volume" in text
    assert "Fine-tuned AlexNet:fc8 (100%) vs AlexNet scratch (100%)" in text
    assert (report.parent / "figures" / "froc_100.png").stat().st_size > 5000


@pytest.mark.slow
def test_imt_study_dense_maps_snakes_and_box_plots(study, tmp_path, source, caffe):
    spec_path = _spec(
        tmp_path, "imt", "imt", "tajbakhsh_imt", source, configurations=["alexnet-h_scratch"],
        dataset={"builder": "tajbakhsh_imt", "source": "synthetic",
                 "phantom": {"subjects": 4, "rois_per_subject": 1, "roi_size": [10, 18],
                             "frame_size": [40, 40]},
                 "options": {"train_patches": 30, "patch_px": 16,
                             "adapter": {"n_boot": 200, "dense_batch": 128,
                                         "single_group_fraction": 0.5}}})
    assert set(runner.run_experiment(spec_path, progress=False).values()) == {"done"}
    (m,) = _metrics(study, spec_path).values()
    assert m["rois"] == 2 and m["subjects"] == 2 and m["units"] == "pixels"
    for name in ("lumen-intima", "media-adventitia", "thickness"):
        box = m[name]
        assert box["n"] == 2 and box["whisker_low"] <= box["median"] <= box["whisker_high"]
        assert box["mean"]["low"] <= box["mean"]["estimate"] <= box["mean"]["high"]
        assert 0 <= box["mean"]["estimate"] < 20
    assert m["snake"]["beta"]["assumed"]
    run_dir = (study / "tajbakhsh2016" / "imt" / "runs"
               / "alexnet-h_scratch__fold1__frac1__seed1")
    with open(run_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 10
    assert all(0 <= float(r["lumen_intima_snake"]) <= 17 for r in rows)
    maps = np.load(run_dir / "maps" / "roi_00000.npz")
    assert maps["lumen_intima_map"].shape == (18, 10)
    assert np.isfinite(maps["media_adventitia_map"]).all()
    with open(run_dir / "trace.csv") as f:
        assert 0 <= float(next(csv.DictReader(f))["val_auc"]) <= 1   # classes 1+2 merged
    # dense inference preprocesses exactly as Caffe's data layer: same probabilities as the
    # run's validation net on the first validation records
    recorded = json.loads((run_dir / "run.json").read_text())["dataset"]
    resolved = {key: str(from_results(recorded[key])) for key in ("train", "val")}
    records = [image for _, image, _ in itertools.islice(read_lmdb(resolved["val"]), 4)]
    dense = DenseNet(run_dir / "net" / "deploy.prototxt", run_dir / "selected.caffemodel",
                     str(Path(resolved["train"]).parent / "train_mean.binaryproto"))
    val = caffe.Net(str(run_dir / "net" / "val.prototxt"), caffe.TEST,
                    weights=str(run_dir / "selected.caffemodel"))
    val.forward()
    np.testing.assert_allclose(dense.probabilities(np.stack(records)),
                               val.blobs["prob"].data[:4], rtol=1e-4, atol=1e-6)
    one = load_plan(spec_path).study.fold_data(1, 0.5, 1, get_model("alexnet-h"))
    assert one.train.endswith("single_group/train_lmdb") and one.val == resolved["val"]
    report = build_report(spec_path)
    text = report.read_text()
    assert "lumen-intima error, mean [95% CI] (pixels)" in text and "snake `kappa`" in text
    for figure in ("boxplots_100.png", "imt_example.png"):
        assert (report.parent / "figures" / figure).stat().st_size > 5000, figure


# ------------------------------------------------------------------ specs and data fractions

@pytest.mark.parametrize("name", ["polyp", "pe", "frame", "imt"])
def test_declared_specs_resolve_every_data_fraction(name):
    plan = load_plan(DECLARED / f"{name}.yaml")
    adapter, experiment = plan.study, plan.experiment
    assert experiment.dataset.builder in BUILDER_NAMES
    sets = [adapter.training_set(f) for f in experiment.spec.data_fractions]
    assert sets[0] == "full" and len(set(sets)) == len(sets)
    expected = {"polyp": ["reduced_50pct", "reduced_25pct"],
                "pe": ["reduced_50pct", "reduced_25pct"],
                "frame": ["reduced_10pct", "reduced_5pct", "reduced_1pct"],
                "imt": ["single_group"]}[name]
    assert sets[1:] == expected
    assert adapter.positive_classes == ((1, 2) if name == "imt" else (1,))


def test_bad_fractions_folds_and_sizes_are_named(study, tmp_path, source):
    frame = {"builder": "tajbakhsh_frame", "source": "synthetic"}
    bad = _spec(tmp_path, "f", "frame", "tajbakhsh_frame", source, data_fractions=[1.0, 0.3],
                dataset=frame)
    with pytest.raises(ConfigError, match=r"data_fractions: 0.3 is not one of the dataset's "
                                          r"training sets \(1, 0.1, 0.05, 0.01\)"):
        load_plan(bad)
    wrong = _spec(tmp_path, "w", "polyp", "tajbakhsh_frame", source, dataset=frame)
    with pytest.raises(ConfigError, match="serves the study 'frame', not 'polyp'"):
        load_plan(wrong)
    small = _spec(tmp_path, "s", "frame", "tajbakhsh_frame", source,
                  dataset=frame | {"options": {"patch_size": 64}})
    with pytest.raises(ConfigError, match="patch_size is 64 but alexnet-h takes 227"):
        load_plan(small)
    unknown = _spec(tmp_path, "u", "frame", "tajbakhsh_frame", source,
                    dataset=frame | {"options": {"adapter": {"fp_unit": "frame"}}})
    with pytest.raises(ConfigError, match=r"dataset.options.adapter: unknown key 'fp_unit'"):
        load_plan(unknown)
    folds = _spec(tmp_path, "k", "frame", "tajbakhsh_frame", source, folds=[2],
                  dataset=frame)
    with pytest.raises(ConfigError, match="one training / test split"):
        load_plan(folds)
    imt = _spec(tmp_path, "i", "imt", "tajbakhsh_imt", source, data_fractions=[1.0, 0.2],
                dataset={"builder": "tajbakhsh_imt", "source": "synthetic",
                         "options": {"single_group": False,
                                     "adapter": {"single_group_fraction": 0.2}}})
    with pytest.raises(ConfigError, match="no one-group training set"):
        load_plan(imt)


@pytest.mark.parametrize(("study_id", "dataset", "fractions", "message"), [
    ("polyp", {"phantom": {"frames": 3}}, [1.0], "dataset.phantom: unknown key 'frames'"),
    ("imt", {"phantom": {"roi_size": [50, 10], "frame_size": [40, 40]}}, [1.0],
     "dataset.phantom: frame_size [40, 40] is smaller than roi_size [50, 10]"),
    ("pe", {"options": {"adapter": {"link": 5.0}}}, [1.0],
     "dataset.options.adapter: unknown key 'link'"),
    ("imt", {"options": {"adapter": {"snake": {"gamma": 1.0}}}}, [1.0],
     "dataset.options.adapter.snake: unknown key 'gamma'"),
    ("polyp", {"options": {"reductions": [0.5]}}, [1.0, 0.4],
     "data_fractions: 0.4 is not one of the dataset's training sets (1, 0.5)"),
])
def test_load_plan_names_a_bad_phantom_scoring_key_or_fraction(study, tmp_path, study_id,
                                                               dataset, fractions, message):
    builder = f"tajbakhsh_{study_id}"
    path = _spec(tmp_path, study_id, study_id, builder, {"weights": "w", "definition": "d"},
                 data_fractions=fractions,
                 dataset={"builder": builder, "source": "synthetic", **dataset})
    with pytest.raises(ConfigError) as err:
        load_plan(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert not study.exists()                          # nothing was built


def test_the_candidate_manifest_is_found_beside_the_spec(study, tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    write_frame_collection(specs / "frames", videos=2, frames_per_video=2, size=(40, 30))
    weights = {"weights": "w", "definition": "d"}
    for source in ("frames", "frames/candidates.csv"):
        path = _spec(specs, "f", "frame", "tajbakhsh_frame", weights,
                     dataset={"builder": "tajbakhsh_frame", "source": source})
        assert load_plan(path).study.source() == specs / "frames" / "candidates.csv"
    path = _spec(specs, "m", "frame", "tajbakhsh_frame", weights,
                 dataset={"builder": "tajbakhsh_frame", "source": "nowhere"})
    with pytest.raises(ConfigError, match=r"dataset.source: .*/specs/nowhere does not exist"):
        load_plan(path).study.source()


# ------------------------------------------------------------------ boundaries

def test_column_max_gives_the_row_of_the_ridge_per_column():
    rows = np.arange(30)[:, None]
    truth = np.array([5, 6, 6, 7, 20, 21, 3, 0, 29])
    confidence = np.exp(-(rows - truth[None, :]) ** 2 / 4.0)
    confidence[:, 2] = 0.3                         # flat column: the first row
    confidence[:, 3] = np.nan                      # never scored
    got = column_max_rows(confidence)
    np.testing.assert_array_equal(got[[0, 1, 4, 5, 6, 7, 8]], truth[[0, 1, 4, 5, 6, 7, 8]])
    assert got[2] == 0 and np.isnan(got[3])


def _ridge(truth: np.ndarray, height: int, width: float = 1.5) -> np.ndarray:
    rows = np.arange(height)[:, None]
    return np.exp(-(rows - truth[None, :]) ** 2 / (2 * width ** 2))


def test_open_snake_smooths_a_step_boundary_onto_the_true_interface():
    x = np.arange(60)
    truth = 18 + 2.5 * np.sin(2 * np.pi * x / 40) + 0.05 * x
    noisy = np.clip(_ridge(truth, 40) + np.random.default_rng(0).normal(0, 0.05, (40, 60)),
                    0, 1)
    traced = trace_interface(noisy)
    step_error = np.abs(traced.column_max - truth).mean()
    assert 0.15 < step_error < 0.5                     # whole rows: up to half a pixel off
    assert set(np.unique(traced.column_max % 1)) == {0.0}
    assert np.abs(traced.snake - truth).mean() < 0.1   # sub-pixel after the snake
    stray = traced.column_max.copy()
    stray[::7] += 3                                    # spurious maxima 3 rows off
    snake = open_snake(noisy, stray)
    assert np.abs(snake - truth).max() < 0.5


def test_open_snake_internal_energy_keeps_lines_and_fills_gaps():
    x = np.arange(40, dtype=float)
    line = 10 + 0.3 * x
    flat = np.zeros((40, 40))
    only_rigidity = SnakeParams(alpha=0.0, kappa=0.0)
    np.testing.assert_allclose(open_snake(flat, line, only_rigidity), line, atol=1e-9)
    # elasticity pulls an open snake with no external force towards a flat line
    tilted = open_snake(flat, line, SnakeParams(alpha=1.0, beta=0.0, kappa=0.0,
                                                iterations=5000, tol=1e-9))
    assert np.ptp(tilted) < 0.5 * np.ptp(line)
    gaps = line.copy()
    gaps[5:9] = np.nan
    np.testing.assert_allclose(open_snake(flat, gaps, only_rigidity), line, atol=1e-9)
    with pytest.raises(ValueError, match="one row per map column"):
        open_snake(flat, line[:10])


# ------------------------------------------------------------------ scoring conventions

def test_polyps_are_mask_regions_and_each_counts_once(tmp_path):
    mask = np.zeros((40, 60), np.uint8)
    mask[5:15, 5:15] = 255                         # polyp 1
    mask[25:35, 40:55] = 255                       # polyp 2
    Image.fromarray(mask).save(tmp_path / "m.png")
    frame = tmp_path / "f.png"

    def cand(cid, box, label, image=frame, m=tmp_path / "m.png"):
        return Candidate("x:1", image, "video_1", cid, label, None, box, mask=m)

    cands = [cand("a", (6, 6, 12, 12), 1), cand("b", (8, 8, 14, 14), 1),
             cand("c", (40, 26, 50, 34), 1), cand("d", (20, 20, 30, 30), 0),
             cand("e", (17, 4, 21, 8), 1),          # label given, centre just off polyp 1
             cand("g", (1, 1, 5, 5), 1, image=tmp_path / "g.png", m=None)]
    lesions = polyp_lesions(cands)
    assert lesions["a"][0] == lesions["b"][0] == lesions["e"][0] != lesions["c"][0]
    assert lesions["d"] == ("", 2) and lesions["a"][1] == 2
    assert lesions["g"] == ("1", 1)                # no mask: the frame's one polyp
    rows = [{"candidate_id": c, "group": "video_1", "frame": "f", "label": int(c != "d"),
             "lesion": lesions[c][0], "frame_lesions": 2, "score": s}
            for c, s in (("a", 0.9), ("b", 0.8), ("c", 0.3), ("d", 0.5), ("e", 0.7))]
    m = score_polyp(rows, PolypOptions(n_boot=50, fp_rates=[0.5], max_fp=2.0))
    # threshold 0.9: polyp 1 found, no FP; 0.5: the FP; 0.3: polyp 2; b and e are repeats
    assert m["froc_curve"]["fp"] == [0.0, 0.0, 1.0, 1.0]
    assert m["froc_curve"]["sensitivity"] == [0.0, 0.5, 0.5, 1.0]
    assert m["sensitivity"]["0.5"]["estimate"] == 0.5
    per_video = score_polyp(rows, PolypOptions(n_boot=50, fp_unit="video", fp_rates=[1.0],
                                               max_fp=2.0))
    assert per_video["fp_unit"] == "video" and per_video["lesions"] == 2


def test_pe_candidates_link_into_emboli():
    centres = np.array([[0, 0, 0], [3, 0, 0], [6, 0, 0], [20, 0, 0], [20, 4.9, 0]], float)
    np.testing.assert_array_equal(link_lesions(centres, 5.0), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(link_lesions(centres, 0.0), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(link_lesions(centres, 3.5), [0, 0, 0, 1, 2])
