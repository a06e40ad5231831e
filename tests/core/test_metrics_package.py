"""The metrics package stays pure NumPy/SciPy and records where its constants come from."""

from __future__ import annotations

import subprocess
import sys

import medtl.metrics as metrics
from medtl.metrics import froc, roc


def test_import_pulls_in_neither_caffe_nor_sklearn():
    code = ("import sys, medtl.metrics; "
            "print(sorted(m for m in sys.modules if 'caffe' in m or m.startswith('sklearn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_constants_carry_provenance():
    sourced = [metrics.CONFIDENCE_LEVEL, metrics.OPERATING_FPRS, metrics.SHIN_FP_RATE,
               metrics.LUNA16_FP_RATES, metrics.LOCALISATION_DICE, metrics.FILTER_CHANGE,
               metrics.TUKEY_WHISKER]
    assert all(not s.is_assumed for s in sourced)
    assumed = [metrics.AREA_MAX_FP, metrics.BOOTSTRAP_METHOD, metrics.N_BOOT, metrics.SEED,
               froc.INTERPOLATION, roc.INTERPOLATION]
    assert all(a.is_assumed for a in assumed)
    assert metrics.OPERATING_FPRS.value == (0.10, 0.15, 0.20)
    assert metrics.SHIN_FP_RATE.value == 3.0
    assert set(metrics.__all__) <= set(dir(metrics))
