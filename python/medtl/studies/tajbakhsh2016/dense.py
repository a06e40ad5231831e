"""The trained intima-media net applied at every pixel of a test ROI (Tajbakhsh 2016
Sec. VI-D, Fig. 8): confidence maps, traced interfaces and their errors.

Patches come from `medtl.studies.tajbakhsh2016.apps.imt.dense_batches` (exactly the training
patches of the same pixels); the deploy net is applied through the kit's one inference module
(`medtl.infer.ArrayNet`: the training set's mean image subtracted, as Caffe's transform_param
does for the training and validation data), and its `prob` gives the three class
probabilities (0 background, 1 lumen-intima, 2 media-adventitia)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtl.errors import InputError
from medtl.infer import ArrayNet
from medtl.metrics import interface_errors
from medtl.studies.tajbakhsh2016.apps.imt import DenseRoi, confidence_maps, dense_batches
from medtl.studies.tajbakhsh2016.boundaries import SnakeParams, TracedInterface, trace_interface

INTERFACES = ("lumen-intima", "media-adventitia")


@dataclass(frozen=True)
class TracedRoi:
    """One test ROI: both confidence maps, both traced interfaces, the expert's traces."""

    maps: dict[str, np.ndarray]
    traced: dict[str, TracedInterface]
    expert: dict[str, np.ndarray]

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for name in INTERFACES:
            key = name.replace("-", "_")
            out[f"{key}_map"] = self.maps[name]
            out[f"{key}_column_max"] = self.traced[name].column_max
            out[f"{key}_snake"] = self.traced[name].snake
            out[f"{key}_expert"] = self.expert[name]
        return out

    def errors(self, pixel_size: float) -> dict[str, float]:
        """Mean |snake - expert| per interface over the columns the expert traced, the
        same for the per-column maxima, and the error of the mean thickness."""
        known = {n: np.isfinite(self.expert[n]) for n in INTERFACES}
        expert = {n: self.expert[n][known[n]] for n in INTERFACES}
        out = {}
        for suffix, attr in (("", "snake"), ("_step", "column_max")):
            traced = {n: getattr(self.traced[n], attr)[known[n]] for n in INTERFACES}
            for name, error in interface_errors(traced, expert, pixel_size).items():
                out[f"{name}{suffix}_error"] = error
        li, ma = (self.expert[n] for n in INTERFACES)
        both = np.isfinite(li) & np.isfinite(ma)
        truth = float((ma - li)[both].mean())
        for suffix, attr in (("", "snake"), ("_step", "column_max")):
            pred = (getattr(self.traced[INTERFACES[1]], attr)
                    - getattr(self.traced[INTERFACES[0]], attr))[both]
            out[f"thickness{suffix}_error"] = abs(float(pred.mean()) - truth) * pixel_size
        return out

    def rows(self, roi: DenseRoi) -> list[dict[str, Any]]:
        """predictions.csv rows: one per ROI column."""
        out = []
        for col in range(roi.shape[1]):
            row: dict[str, Any] = {"roi": roi.roi, "candidate_id": roi.candidate_id,
                                   "subject": roi.patient_id, "column": col}
            for name in INTERFACES:
                key = name.replace("-", "_")
                row[f"{key}_expert"] = _cell(self.expert[name][col])
                row[f"{key}_column_max"] = _cell(self.traced[name].column_max[col])
                row[f"{key}_snake"] = _cell(self.traced[name].snake[col])
            out.append(row)
        return out


def _cell(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.4f}"


class DenseNet:
    """A trained deploy net fed with dense ROI patches (TEST-phase preprocessing: the
    training mean off)."""

    def __init__(self, deploy: Path, weights: Path, mean_file: str | None,
                 gpu: int | None = None) -> None:
        self.net = ArrayNet(deploy, weights, mean_file=mean_file, gpu=gpu)

    def probabilities(self, patches: np.ndarray) -> np.ndarray:
        """n x classes probabilities of n x 3 x S x S uint8 patches."""
        return self.net(patches, "prob", batch=max(1, len(patches)))

    def trace(self, roi: DenseRoi, snake: SnakeParams, *, batch: int = 256) -> TracedRoi:
        shape = (self.net.height, self.net.width)
        if shape != (roi.patch_size, roi.patch_size):
            raise InputError(f"ROI {roi.roi}: patches of {roi.patch_size} px, the net "
                             f"{self.net.deploy} takes {shape}")
        scored = ((rows, cols, self.probabilities(patches))
                  for rows, cols, patches in dense_batches(roi, batch=batch))
        li, ma = confidence_maps(roi.shape, scored)
        maps = {INTERFACES[0]: li, INTERFACES[1]: ma}
        expert = {INTERFACES[0]: roi.interfaces.lumen_intima,
                  INTERFACES[1]: roi.interfaces.media_adventitia}
        return TracedRoi(maps, {n: trace_interface(m, snake) for n, m in maps.items()}, expert)
