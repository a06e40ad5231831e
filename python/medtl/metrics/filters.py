"""How many filters of each layer fine-tuning changed (Ravishankar et al. 2016, Table 2).

A filter is one slice along the first (output) axis of a layer's weight blob, as Caffe stores
it: (out, in, kh, kw) for convolutions, (out, in) for inner products. Its change is the
relative L2 norm ||W1_f - W0_f|| / ||W0_f||; it counts as changed above the threshold. A filter
that was all zeros before has change +inf if it moved at all, else 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from medtl.metrics import _validate as v
from medtl.provenance import paper

FILTER_CHANGE = paper(0.40, "Ravishankar et al. 2016, Table 2: filters whose weights changed by "
                            "more than 40% (relative L2 norm) after fine-tuning")


@dataclass(frozen=True)
class LayerChange:
    changed: int                # filters with relative change > threshold
    total: int                  # filters in the layer
    relative_change: np.ndarray  # per filter


def relative_filter_change(before: ArrayLike, after: ArrayLike, layer: str = "") -> np.ndarray:
    """||after_f - before_f|| / ||before_f|| for every filter f (first axis)."""
    where = f"layer {layer!r}: " if layer else ""
    w0 = v.finite_floats(before, f"{where}before", ndim=np.ndim(before))
    w1 = v.finite_floats(after, f"{where}after", ndim=np.ndim(after))
    if w0.ndim < 2:
        raise v.MetricInputError(f"{where}weights must be (filters, ...), got shape {w0.shape}")
    if w0.shape != w1.shape:
        raise v.MetricInputError(f"{where}shape changed from {w0.shape} to {w1.shape}")
    diff = np.linalg.norm((w1 - w0).reshape(w0.shape[0], -1), axis=1)
    base = np.linalg.norm(w0.reshape(w0.shape[0], -1), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base > 0, diff / base, np.where(diff > 0, np.inf, 0.0))


def changed_filters(before: Mapping[str, ArrayLike], after: Mapping[str, ArrayLike],
                    threshold: float = FILTER_CHANGE.value) -> dict[str, LayerChange]:
    """Per layer (in the order of `before`), how many filters changed by more than
    `threshold` relative L2. Both mappings must hold the same layers."""
    if not before:
        raise v.MetricInputError("before: no layers")
    if set(before) != set(after):
        only_before = sorted(set(before) - set(after))
        only_after = sorted(set(after) - set(before))
        raise v.MetricInputError(f"layers differ: only in before {only_before}, "
                                 f"only in after {only_after}")
    if not np.isfinite(threshold) or threshold < 0:
        raise v.MetricInputError(f"threshold: expected a relative change >= 0, got {threshold}")
    out = {}
    for layer in before:
        change = relative_filter_change(before[layer], after[layer], layer)
        out[layer] = LayerChange(int((change > threshold).sum()), int(change.size), change)
    return out
