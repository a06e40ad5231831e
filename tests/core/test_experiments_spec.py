"""Experiment specs: strict loading, stable expansion, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medtl.config import ConfigError
from medtl.experiments.plan import load_plan
from medtl.paths import REPO

SPECS = sorted((REPO / "experiments").glob("*/*.yaml"))
STUDY_SPECS = [p for p in SPECS if p.name != "published.yaml"]


def _spec(tmp_path: Path, **changes) -> Path:
    base = {"paper": "shin2016", "study": "ln_mediastinum", "dataset": {"builder": "shin_ln"},
            "configurations": ["cifarnet_ri", "alexnet-h_tl"], "folds": [1, 2, 3],
            "pretrained": {"weights": {"alexnet-h": "bvlc_alexnet",
                                       "alexnet-l": "synthetic-source"}}}
    base.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.mark.parametrize("path", STUDY_SPECS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_checked_in_spec_loads(path):
    assert load_plan(path).runs


def test_expansion_gives_stable_ids_in_a_stable_order(tmp_path):
    runs = load_plan(_spec(tmp_path, seeds=[1, 2])).runs
    ids = [p.run_id for p in runs]
    assert ids[:3] == ["cifarnet_ri__fold1__frac1__seed1", "cifarnet_ri__fold1__frac1__seed2",
                       "cifarnet_ri__fold2__frac1__seed1"]
    assert len(ids) == len(set(ids)) == 2 * 3 * 2
    assert ids == [p.run_id for p in load_plan(_spec(tmp_path, seeds=[1, 2])).runs]
    assert runs[0].run_dir.parts[-4:] == (
        "shin2016", "spec", "runs", "cifarnet_ri__fold1__frac1__seed1")


@pytest.mark.parametrize(("change", "message"), [
    ({"epochs": 3}, "unknown key 'epochs'"),
    ({"folds": "all"}, "folds: expected a list"),
    ({"configurations": ["resnet_tl"]}, "'resnet_tl' is not a configuration of "
                                        "shin2016/ln_mediastinum"),
    ({"study": "ln_thorax"}, "shin2016 has no study 'ln_thorax'"),
    ({"paper": "smith2020"}, "unknown paper 'smith2020'"),
    ({"training": {"max_epoch": 3}}, "training: unknown key 'max_epoch'"),
    ({"data_fractions": [0.0]}, "data_fractions: 0.0 is not in (0, 1]"),
    ({"ensembles": {"Combined": ["alexnet-h_ri"]}}, "'alexnet-h_ri' is not among"),
    ({"configurations": [{"model": "alexnet-l", "policy": "warm"}]}, "policy 'warm' is not"),
])
def test_a_bad_spec_is_rejected_naming_the_key(tmp_path, change, message):
    path = _spec(tmp_path, **change)
    with pytest.raises(ConfigError) as err:
        load_plan(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_deviations_from_the_paper_are_listed(tmp_path):
    experiment = load_plan(_spec(
        tmp_path, training={"max_epochs": 2},
        configurations=["cifarnet_ri", {"model": "alexnet-l", "policy": "tl"}],
        dataset={"builder": "shin_ln", "source": "synthetic"})).experiment
    deviations = "\n".join(experiment.deviations())
    assert "training.max_epochs = 2 (the paper's: 30)" in deviations
    assert "synthetic phantoms" in deviations
    assert "alexnet-l TL (not in the paper)" in deviations


def test_the_spec_reference_is_generated_from_the_schema():
    from medtl.experiments.specdoc import REFERENCE, spec_reference

    text = spec_reference()
    assert REFERENCE.read_text() == text, "experiments/README.md drifted: run `medtl generate`"
    for key in ("`folds` | list of integer or 'all' | `[1]` | >= 1; not empty",
                "`training.max_epochs`", "`pretrained.source_task.images`",
                "`dataset.options.evaluation`", "### `shin_ln`", "### `tajbakhsh_imt`",
                "`dataset.phantom` (LnPhantoms)", "*paper*: Shin 2016 Sec. II"):
        assert key in text, key


def test_runs_trained_by_an_earlier_driver_are_stale(tmp_path, monkeypatch):
    """The driver's training semantics are part of a run's settings: a run trained with the
    per-epoch re-seeding (drifting from `caffe train`) is never mixed with exact ones."""
    import json

    from medtl.experiments.plan import run_settings, run_state
    from medtl.train.driver import DRIVER_VERSION

    monkeypatch.setenv("MEDTL_RESULTS", str(tmp_path / "results"))
    plan = load_plan(_spec(tmp_path))
    run = plan.runs[0]
    settings = json.loads(json.dumps(run_settings(plan, run), default=str))
    assert settings["driver"] == DRIVER_VERSION
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "run.json").write_text(json.dumps(
        {"settings": {**settings, "driver": DRIVER_VERSION - 1}}))
    state = run_state(plan, run)
    assert state.state.value == "stale" and "driver" in state.detail
