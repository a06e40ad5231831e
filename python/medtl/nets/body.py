"""The contract between a network body and the variants (train / val / deploy) around it.

A body adds its layers to a NetSpec and returns its heads: the main classifier first, then
any auxiliary classifiers (GoogLeNet's two, each with its loss weight). Bodies set topology
and weight fillers only; the fine-tuning policy rewrites every layer's `param` afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Head:
    top: Any             # the classifier's output top (a NetSpec Top)
    loss_name: str       # name of its loss layer, as in the BVLC definitions
    loss_weight: float = 1.0
    loss_top: str = ""   # the loss layer's top, where BVLC names it apart from the layer

    @property
    def loss_output(self) -> str:
        return self.loss_top or self.loss_name


class Body(Protocol):
    def __call__(self, n: Any, bottom: Any, num_classes: int, *, deploy: bool) -> list[Head]:
        """Add the layers on `bottom` to NetSpec `n`; auxiliary heads only when not deploy."""
        ...
