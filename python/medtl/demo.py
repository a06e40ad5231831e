"""`make demo`: the default experiment, end to end on built-in synthetic data.

Shin 2016's lymph-node protocol on the kit's synthetic mediastinal phantoms (TCIA format):
CifarNet-RI, AlexNet-L-RI and AlexNet-L with transfer learning from a source model the kit
first pre-trains on a synthetic task; 3-fold CV, FROC, and the report beside Table II. Runs
that finished earlier are kept and not trained again; runs an earlier version of the kit made
under other settings are moved aside to `stale/` (never deleted) and trained again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from medtl.experiments.report.build import build_report
from medtl.experiments.runner import Resources, run_experiment
from medtl.paths import REPO, shown

DEMO_SPEC = REPO / "experiments" / "shin2016" / "demo_ln_synthetic.yaml"


def visible_gpu() -> bool:
    """Whether `nvidia-smi -L` lists a GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.startswith("GPU ") for line in listed.splitlines())


def demo_gpus() -> str | None:
    """The GPUs the demo trains on: MEDTL_GPUS when set (read by the runner), else GPU 0 when
    nvidia-smi sees one and Caffe was built with CUDA, else None: the CPU, as before."""
    if os.environ.get("MEDTL_GPUS") or not visible_gpu():
        return None
    from medtl import caffe_env  # imports pycaffe: only once a GPU is seen
    if caffe_env.build_info().get("cuda") != "1":
        print("a GPU is visible, but Caffe is a CPU-only build: the demo trains on the CPU "
              "(rebuild with MEDTL_CAFFE_GPU=on)")
        return None
    return "0"


def main(spec: Path = DEMO_SPEC) -> int:
    start = time.time()
    gpus = demo_gpus()
    status = run_experiment(spec, rerun_stale=True,
                            resources=None if gpus is None else Resources(gpus=gpus))
    failed = {run: state for run, state in status.items()
              if state.startswith(("failed", "interrupted"))}
    if failed:
        for run, state in failed.items():
            print(f"{run}: {state}")
        print(f"{len(failed)} run(s) did not finish; `make demo` again resumes interrupted "
              "runs (failed ones need `medtl run --retry-failed`)")
        return 1
    report = build_report(spec)
    summary = json.loads(report.with_name("report.json").read_text())
    print(f"\n{'configuration':<34} {'TPR at 3 FP':>12} {'FROC area':>10} {'ROC AUC':>8}")
    for cid, s in summary["scores"].items():
        auc = s["candidate_roc_auc"]["estimate"] if s["candidate_roc_auc"] else float("nan")
        print(f"{summary['labels'][cid]:<34} {s['tpr_at_3fp']['estimate']:>12.3f} "
              f"{s['froc_area']['estimate']:>10.3f} {auc:>8.3f}")
    print(f"\nreport: {shown(report)} ({time.time() - start:.0f} s)")
    return 0
