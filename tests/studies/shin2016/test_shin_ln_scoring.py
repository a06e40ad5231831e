"""The lymph-node study's hit rule is a scoring option (issue 10, item 13): the collection's
links by default, LUNA16's evaluation on node centres and short axes on request; every score
names the rule it used."""

from __future__ import annotations

import pytest
from spec_helpers import tiny_ln_spec

from medtl.config import ConfigError, from_mapping
from medtl.experiments.plan import load_plan
from medtl.studies.shin2016.ln.scoring import LnScoring, score_candidates

# P1: node 0 at x=0 (short axis 10 mm), node 1 at x=2 (sizes 10 and 8: short axis 8 mm).
# P2: node 0 at x=100 without a size (LUNA16's unknown diameter: 10 mm).
NODES = [{"patient_id": "P1", "node": "0", "x": "0", "y": "0", "z": "0", "sizes_mm": "10"},
         {"patient_id": "P1", "node": "1", "x": "2", "y": "0", "z": "0", "sizes_mm": "10 8"},
         {"patient_id": "P2", "node": "0", "x": "100", "y": "0", "z": "0", "sizes_mm": ""}]
# c1 is linked to P1's node 0 but lies inside node 1 too (1 mm from both centres); c2 is a
# false candidate; c3 is linked to P2's node 0, 4 mm from its centre.
ROWS = [{"candidate_id": "c1", "patient_id": "P1", "label": 1, "node": "0", "x": "1",
         "y": "0", "z": "0", "score": 0.9},
        {"candidate_id": "c2", "patient_id": "P1", "label": 0, "node": "", "x": "50",
         "y": "0", "z": "0", "score": 0.8},
        {"candidate_id": "c3", "patient_id": "P2", "label": 1, "node": "0", "x": "104",
         "y": "0", "z": "0", "score": 0.3}]


def test_default_rule_is_the_collections_links():
    s = score_candidates(ROWS, NODES, {"P1", "P2"}, seed=0, n_boot=50)
    assert s["hit_rule"] == "tcia_link" and "grtIDs" in s["hit_rule_text"]
    # Nodes P1/0 and P2/0 found, P1/1 (no linked candidate) missed: 2 of 3.
    assert s["tpr_at_3fp"]["estimate"] == pytest.approx(2 / 3)
    assert len(s["froc_band"]["low"]) == len(s["froc_band"]["fp_per_patient"])


def test_luna16_rule_counts_a_candidate_for_every_node_it_lies_in():
    scoring = from_mapping(LnScoring, {"hit_rule": "luna16"})
    s = score_candidates(ROWS, NODES, {"P1", "P2"}, seed=0, n_boot=50, scoring=scoring)
    assert s["hit_rule"] == "luna16"
    assert "at most 100 candidates per patient" in s["hit_rule_text"]
    # c1 hits P1/0 (1 < 5 mm) and P1/1 (1 < 4 mm); c3 hits P2/0 (4 < 5 mm, the 10 mm default).
    assert s["tpr_at_3fp"]["estimate"] == pytest.approx(1.0)
    assert s["luna16"] == {"max_marks": 100, "capped": 0, "double_hits": 0}


def test_luna16_rule_with_nothing_found_is_nan():
    far = [dict(r, x=str(float(r["x"]) + 500)) for r in ROWS]
    s = score_candidates(far, NODES, {"P1", "P2"}, seed=0, n_boot=20,
                         scoring=LnScoring(hit_rule="luna16"))
    assert s["tpr_at_3fp"]["estimate"] != s["tpr_at_3fp"]["estimate"]      # NaN


def test_the_option_is_checked_and_read_from_the_spec(tmp_path, results_root):
    with pytest.raises(ConfigError, match="hit_rule"):
        from_mapping(LnScoring, {"hit_rule": "nearest"})
    spec = tiny_ln_spec(tmp_path, "luna", dataset={
        "builder": "shin_ln", "source": "synthetic",
        "phantom": {"patients": 4, "seed": 3, "n_false": 12},
        "options": {"region": "med", "seed": 3, "folds": 2,
                    "scoring": {"hit_rule": "luna16", "max_marks": 50}}})
    study = load_plan(spec).study
    assert (study.scoring.hit_rule, study.scoring.max_marks) == ("luna16", 50)
    assert study.scoring_settings() == {"hit_rule": "luna16", "max_marks": 50}
