"""Shin 2016 protocols beside Tables I, IV, VI and VIII: the snapshot rule of each study,
slice- and patch-level leave-one-patient-out over every patient, the two priors of Table VIII
on both rows, the 32x32 patch variant, and Table I's slices per fold beside the kit's folds.
Nothing here trains a net."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
import yaml

from medtl.config import ConfigError, fields_of, protocol_values
from medtl.experiments.plan import load_plan, selection_for
from medtl.experiments.report.published import Table, load_published
from medtl.paths import REPO
from medtl.protocols import configurations
from medtl.studies.shin2016.ild import reader as ild_io
from medtl.studies.shin2016.ild import report as ild_report
from medtl.studies.shin2016.ild.adapter import ShinIldAdapter
from medtl.studies.shin2016.ild.dataset import IldConfig
from medtl.studies.shin2016.ild.phantoms import write_collection
from medtl.studies.shin2016.ild.report import published_references
from medtl.studies.shin2016.ln.dataset import LnConfig

SHIN = REPO / "experiments/shin2016"
PUBLISHED = SHIN / "published.yaml"
PHANTOM = {"patients": 6, "slices_per_patient": 3, "size": 64, "seed": 2}
TABLE_I = [30.2, 20.2, 85.4, 96.8, 63.2, 39.2]
SHIN_PATIENTS = 120  # Sec. II: 905 slices from 120 patients


def _spec(folder: Path, name: str, **changes) -> Path:
    base = {"paper": "shin2016", "study": "ild_patch", "title": "tiny",
            "dataset": {"builder": "shin_ild", "source": "synthetic", "phantom": PHANTOM,
                        "options": {"level": "patch", "split": "loo", "seed": 1}},
            "configurations": ["cifarnet_ri"], "folds": ["all"], "published": str(PUBLISHED)}
    base.update(changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def _refs(plan) -> object:
    adapter = plan.study
    return published_references(plan.published.for_study(plan.experiment.spec.study),
                                adapter.level, adapter.config.split, adapter.prior)


def _folds(plan) -> list[int]:
    return sorted({run.fold for run in plan.runs})


# ------------------------------------------------------------------ item 10: provenance

def test_ln_snapshot_selection_is_assumed_and_the_ild_one_cites_sec_iv_c():
    ln = selection_for(load_plan(SHIN / "ln_mediastinum.yaml").experiment)
    assert ln.value == "min_val_loss" and ln.is_assumed
    assert "Sec. III-C" in ln.assumed and "no snapshot rule" in ln.assumed
    for spec in ("ild_patch_cv5", "ild_slice_cv5"):
        ild = selection_for(load_plan(SHIN / f"{spec}.yaml").experiment)
        assert ild.value == "min_val_loss" and ild.source.startswith("Shin 2016 Sec. IV-C")
    polyp = selection_for(load_plan(REPO / "experiments/tajbakhsh2016/polyp.yaml").experiment)
    assert polyp.value == "max_val_auc" and polyp.source.startswith("Tajbakhsh 2016 Sec. VI")


def test_no_lymph_node_value_cites_the_ild_section():
    """Sec. IV-C describes the ILD runs (Tables VI, VII); nothing of the LN studies is its."""
    for cfg in configurations("shin2016"):
        if cfg.study.startswith("ln_"):
            for key, value in cfg.provenance().items():
                assert "IV-C" not in (value.source or ""), (cfg.id, key)
    for field in fields_of(LnConfig):
        prov = field["prov"]
        if prov is not None:
            assert "IV-C" not in (prov.source or ""), field["name"]
            assert "Shin keeps" not in (prov.assumed or ""), field["name"]


# ------------------------------------------------------------------ item 11a, b: LOO

def test_the_slice_level_loo_spec_is_table_vi_over_every_patient():
    plan = load_plan(SHIN / "ild_slice_loo.yaml")
    adapter = plan.study
    assert isinstance(adapter, ShinIldAdapter)
    assert (adapter.level, adapter.config.split) == ("slice", "loo")
    table_vi = plan.published.table("table_vi", "ild_slice")
    # OverFeat has no public Caffe weights: every other slice row of Table VI is run
    assert {c.label for c in plan.experiment.configurations} == set(table_vi.rows) - {
        "OverFeat-TL"}
    assert _folds(plan) == list(range(1, SHIN_PATIENTS + 1))  # no database here: Sec. II
    refs = _refs(plan)
    assert "Table VI (Slice-LOO)" in refs.accuracy_source
    assert refs.accuracy["GoogLeNet-TL"] == 0.902 and refs.accuracy["AlexNet-TL"] == 0.867


def test_the_patch_loo_spec_declares_every_patient_a_fold():
    plan = load_plan(SHIN / "ild_patch_loo.yaml")
    assert plan.experiment.spec.folds == ["all"]
    assert _folds(plan) == list(range(1, SHIN_PATIENTS + 1))
    assert len(plan.runs) == SHIN_PATIENTS * len(plan.experiment.configurations)
    assert "Table VI (Patch-LOO)" in _refs(plan).accuracy_source


def test_all_folds_are_the_patients_with_an_roi_of_the_classes(tmp_path, monkeypatch):
    """A patient whose ROIs are all of other labels is no LOO fold (the split skips it)."""
    monkeypatch.setenv("MEDTL_RESULTS", str(tmp_path / "results"))
    database = tmp_path / "ILD_DB"
    write_collection(database, **PHANTOM)
    other = database / "999"
    shutil.copytree(database / "001", other)
    for roi_file in other.glob("*.txt"):
        lines = roi_file.read_text().splitlines()
        roi_file.write_text("\n".join("label: reticulation" if line.startswith("label:")
                                      else line for line in lines) + "\n")
    spec = _spec(tmp_path, "db", dataset={"builder": "shin_ild", "source": str(database),
                                          "options": {"level": "patch", "split": "loo"}})
    plan = load_plan(spec)
    assert _folds(plan) == list(range(1, PHANTOM["patients"] + 1))
    assert plan.study.split()["k"] == PHANTOM["patients"]
    assert len(ild_io.scan(database)) == PHANTOM["patients"] + 1
    synthetic = load_plan(_spec(tmp_path, "phantoms"))
    assert _folds(synthetic) == list(range(1, PHANTOM["patients"] + 1))
    listed = load_plan(_spec(tmp_path, "listed", folds=[2, 5]))  # a subset of the patients
    assert _folds(listed) == [2, 5]


@pytest.mark.parametrize(("folds", "message"), [
    (["all", 1], "folds: give fold numbers or [all]"),
    (["al"], "folds: 'al' is not one of 'all'"),
    ([0], "folds: 0 must be at least 1"),
])
def test_bad_fold_lists_are_rejected_naming_folds(tmp_path, folds, message):
    with pytest.raises(ConfigError) as err:
        load_plan(_spec(tmp_path, "bad", folds=folds))
    assert message in str(err.value) and "bad.yaml" in str(err.value)


def test_all_folds_follow_a_given_folds_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_RESULTS", str(tmp_path / "results"))
    csv_path = tmp_path / "outer.csv"
    csv_path.write_text("unit,patient_id,fold\n001,001,1\n002,002,2\n003,003,3\n")
    plan = load_plan(_spec(tmp_path, "given", dataset={
        "builder": "shin_ild", "source": "synthetic", "phantom": PHANTOM,
        "options": {"level": "patch", "folds_csv": str(csv_path)}}))
    assert _folds(plan) == [1, 2, 3]


# ------------------------------------------------------------------ item 11c: Table VIII

@pytest.mark.parametrize(("level", "prior"),
                         list(itertools.product(("slice", "patch"), ("equal", "biased"))))
def test_table_viii_specs_cover_both_rows_and_both_priors(level, prior):
    plan = load_plan(SHIN / f"ild_{level}_prior_{prior}.yaml")
    adapter = plan.study
    assert (adapter.level, adapter.prior, adapter.config.split) == (level, prior, "loo")
    assert [c.id for c in plan.experiment.configurations] == ["googlenet-h_tl"]
    assert _folds(plan) == list(range(1, SHIN_PATIENTS + 1))
    refs = _refs(plan)
    row = "ILD-Slice" if level == "slice" else "ILD-Patch"
    assert f"Table VIII ({row}, {prior} prior" in refs.accuracy_source
    assert refs.accuracy_metric == "balanced_accuracy"
    expected = {("slice", "equal"): 0.902, ("slice", "biased"): 0.872,
                ("patch", "equal"): 0.953, ("patch", "biased"): 0.952}[level, prior]
    assert refs.accuracy["GoogLeNet-TL"] == expected
    assert any("LN PATCH" in n for n in refs.notes)


def test_table_viii_records_the_caption_ambiguity():
    published = load_published(PUBLISHED)
    table = published.table("table_viii", "ild_patch")
    assert table.rows == {"ILD-Slice": [0.902, 0.872], "ILD-Patch": [0.953, 0.952]}
    notes = " ".join(table.notes)
    assert "LN PATCH" in notes and "0.902" in notes and "Table VI" in notes
    assert published.table("table_viii", "ln_mediastinum") is None


# ------------------------------------------------------------------ item 11d: 32x32 patches

def test_the_32_pixel_patch_variant_is_declared_with_its_source():
    plan = load_plan(SHIN / "ild_patch32_cv5.yaml")
    adapter = plan.study
    assert (adapter.level, adapter.config.split, adapter.config.patch_size) == ("patch", "cv5",
                                                                                 32)
    assert [c.id for c in plan.experiment.configurations] == ["googlenet-h_tl"]
    value = protocol_values(adapter.config)["patch_size"]
    assert value["set_by_user"] and value["default"]["value"] == 64
    assert "Sec. IV-B" in value["default"]["source"] and "32" in value["default"]["source"]
    refs = _refs(plan)
    assert "Patch-CV5" in refs.f1_source and "Table III (Patch-CV5)" in refs.accuracy_source
    source = next(f for f in fields_of(IldConfig) if f["name"] == "patch_size")["prov"].source
    assert "Table IV says" not in source  # the 32 stands in the text of Sec. IV-B


# ------------------------------------------------------------------ item 11e: Table I

def test_table_i_is_transcribed_for_both_ild_studies():
    published = load_published(PUBLISHED)
    for study in ("ild_slice", "ild_patch"):
        table = published.table("table_i", study)
        assert table.metrics == ["NM", "EM", "GG", "FB", "MN", "CD"]
        assert table.rows == {"Slices per fold": TABLE_I}
    assert sum(TABLE_I) == pytest.approx(335.0)  # x 5 folds = 1675 slice labels of 905 slices
    assert published.table("table_i", "ln_abdomen") is None


def test_the_split_records_slices_per_class_per_fold(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_RESULTS", str(tmp_path / "results"))
    plan = load_plan(_spec(tmp_path, "cv", study="ild_slice", folds=[1],
                           configurations=[{"model": "cifarnet", "policy": "ri"}], dataset={
        "builder": "shin_ild", "source": "synthetic",
        "phantom": PHANTOM | {"slices_per_patient": 6},
        "options": {"level": "slice", "split": "cv5", "folds": 3}}))
    record = plan.study.split()
    counts = record["slices_per_class"]
    assert sorted(counts) == ["1", "2", "3"] and all(len(c) == 6 for c in counts.values())
    expected = [0] * 6
    for patient in ild_io.scan(plan.study.source()):
        per_slice: dict[int, set[int]] = {}
        for roi in patient.rois:
            per_slice.setdefault(roi.slice_number, set()).add(
                ild_io.SIX_CLASSES.index(roi.label))
        for classes in per_slice.values():
            for c in classes:
                expected[c] += 1
    assert [sum(c[k] for c in counts.values()) for k in range(6)] == expected
    for fold, units in record["folds"].items():  # a fold's count is its test patients'
        assert units["test"] and sum(counts[fold]) > 0


def _table_i() -> Table:
    return Table("table_i", "Shin 2016 Table I", "", ["NM", "EM", "GG", "FB", "MN", "CD"], [],
                 {"Slices per fold": TABLE_I})


def test_the_report_sets_the_kit_folds_beside_table_i():
    folds = {str(f): [30, 20, 85, 97, 63, 39] for f in range(1, 6)}
    folds["2"] = [31, 21, 86, 96, 64, 40]
    record = {"split": "cv5", "k": 5, "slices_per_class": folds}
    text = "\n".join(ild_report.table_i_lines(record, _table_i(), list(ild_io.SHORT_NAMES)))
    assert "beside Table I" in text
    assert "| fold 1 | 30 | 20 | 85 | 97 | 63 | 39 | 334 |" in text
    assert "| fold 2 | 31 | 21 | 86 | 96 | 64 | 40 | 338 |" in text
    assert "| mean per fold | 30.2 | 20.2 | 85.2 | 96.8 | 63.2 | 39.2 | 334.8 |" in text
    assert "| published: Shin 2016 Table I | 30.2 | 20.2 | 85.4 | 96.8 | 63.2 | 39.2 | 335.0 |" \
        in text
    assert "| difference | +0.0 | +0.0 | -0.2 | +0.0 | +0.0 | +0.0 | -0.2 |" in text


def test_table_i_is_compared_only_for_five_patient_folds_and_old_splits_say_so():
    names = ["NM", "EM", "GG", "FB", "MN", "CD"]
    loo = {"split": "loo", "k": 3, "slices_per_class": {str(f): [1] * 6 for f in (1, 2, 3)}}
    text = "\n".join(ild_report.table_i_lines(loo, _table_i(), names))
    assert "| mean per fold | 1.0 |" in text and "| fold 1 |" in text
    assert "Table I averages five patient-disjoint folds" in text and "| difference |" not in text
    old = "\n".join(ild_report.table_i_lines({"split": "cv5", "k": 5}, _table_i(), names))
    assert "not recorded" in old
    assert ild_report.table_i_lines(loo, None, names)[-1].startswith("No published Table I")
