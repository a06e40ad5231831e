"""Transfer learning helps on the synthetic transfer task, as the studies found for real data.

The demo's setting on one fold with one epoch of training: AlexNet-L pre-trained by the kit on
synthetic shapes, then fine-tuned on lymph-node phantoms (TL), against the same net from random
weights (RI), both under Shin's protocol and fixed seeds. With the same training budget, TL
must reach a lower validation loss (it converges faster, cf. Shin Fig. 11, Tajbakhsh Fig. 10)
and detect the test fold's nodes better (candidate ROC AUC). A broken transplant, or a policy
that froze the wrong layers, fails this test.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from medtl.experiments import runner
from medtl.paths import REPO

DEMO = REPO / "experiments" / "shin2016" / "demo_ln_synthetic.yaml"


@pytest.mark.slow
def test_transfer_beats_random_initialisation_on_the_synthetic_task(tmp_path, monkeypatch,
                                                                    caffe):
    monkeypatch.setenv("MEDTL_RESULTS", str(tmp_path / "results"))
    spec = yaml.safe_load(DEMO.read_text())
    spec.update(configurations=["alexnet-l_ri", {"model": "alexnet-l", "policy": "tl"}],
                folds=[1], training={"max_epochs": 1}, published=str(DEMO.parent
                                                                     / "published.yaml"))
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(spec))
    status = runner.run_experiment(path, progress=False)
    assert set(status.values()) == {"done"}, status

    runs = tmp_path / "results" / "shin2016" / "transfer" / "runs"

    def first_val_loss(config: str) -> float:
        with open(runs / f"{config}__fold1__frac1__seed1" / "trace.csv", newline="") as f:
            return float(next(csv.DictReader(f))["val_loss"])

    def auc(config: str) -> float:
        metrics = json.loads(Path(runs / f"{config}__fold1__frac1__seed1" / "metrics.json")
                             .read_text())
        return metrics["candidate_roc_auc"]["estimate"]

    assert first_val_loss("alexnet-l_tl") < first_val_loss("alexnet-l_ri")
    assert auc("alexnet-l_tl") > auc("alexnet-l_ri")
    transplant = json.loads((runs / "alexnet-l_tl__fold1__frac1__seed1" / "transplant.json")
                            .read_text())
    assert [layer["name"] for layer in transplant["fresh"]] == ["fc8_new"]
    assert len(transplant["copied"]) == 7
