"""Intima-media interfaces from the CNN's confidence maps (Tajbakhsh 2016 Sec. VI-D, Fig. 8).

The paper: the trained net is applied at every ROI pixel, giving one confidence map per
interface; scanning each map column by column for the row of maximum response gives a
1-pixel, step-like boundary (Fig. 8(c)); an open active contour (snake, ref. [72]) per
interface, initialised on that boundary, deforms until it takes the interface's shape
(Fig. 8(d)). The paper gives neither the snake's energy nor its parameters; the snake here is
the classic one (Kass, Witkin and Terzopoulos 1988) restricted to boundaries that are a row
per column, every parameter marked assumed:

    E(y) = sum_i  alpha/2 (y[i+1] - y[i])^2  +  beta/2 (y[i+1] - 2 y[i] + y[i-1])^2
           - kappa * C_s(y[i], i)

y[i] is the (sub-pixel) row of the snake in ROI column i, C_s the confidence map smoothed by
a Gaussian of `sigma` pixels (so its pull reaches a step-like boundary's stray pixels). The
sums run over the snake's own differences only: the ends are free (an open snake). Gradient
descent with the internal forces implicit (Kass et al.'s semi-implicit scheme):

    (I + tau A) y_new = y + tau * kappa * dC_s/dr (y, i),   A = alpha D1'D1 + beta D2'D2

until no node moves more than `tol` rows, or `iterations` steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medtl.config import option
from medtl.provenance import assumed

_SNAKE = "the paper (Sec. VI-D, ref. [72]) gives no snake energy or parameters"


@dataclass(frozen=True)
class SnakeParams:
    """The open snake's parameters (all assumed: the paper gives none)."""

    alpha: float = option(0.05, "elasticity (first-difference) weight",
                          assumed(0.05, f"{_SNAKE}; weak, so a sloped interface is not "
                                  "pulled flat"))
    beta: float = option(1.0, "rigidity (second-difference, curvature) weight",
                         assumed(1.0, f"{_SNAKE}; smooths 1-pixel steps, keeps slow bends"))
    kappa: float = option(4.0, "weight of the confidence map (external energy)",
                          assumed(4.0, f"{_SNAKE}; a probability ridge of unit height pulls "
                                  "harder than the curvature of a 1-pixel step"))
    sigma: float = option(1.0, "Gaussian smoothing of the confidence map (pixels) before "
                               "its gradient is taken",
                          assumed(1.0, f"{_SNAKE}; widens the capture range by a pixel"))
    tau: float = option(0.5, "time step of the semi-implicit iteration",
                        assumed(0.5, "any stable step (the scheme is implicit in the internal "
                                "forces); 0.5 converges in tens of steps"))
    iterations: int = option(500, "maximum number of steps",
                             assumed(500, "a cap; the snake stops earlier once it has settled"))
    tol: float = option(1e-3, "stop when no node moves more than this (rows)",
                        assumed(1e-3, "a thousandth of a pixel: settled"))

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "kappa", "sigma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.tau <= 0 or self.iterations < 1 or self.tol <= 0:
            raise ValueError("tau and tol must be > 0 and iterations >= 1")


def column_max_rows(confidence: np.ndarray) -> np.ndarray:
    """Per column, the row of maximum response (the first of equal maxima): the step-like
    boundary of Fig. 8(c). Columns without any scored pixel (all NaN) give NaN."""
    c = np.asarray(confidence, dtype=float)
    if c.ndim != 2 or c.size == 0:
        raise ValueError(f"confidence: expected a non-empty rows x columns map, got {c.shape}")
    scored = np.isfinite(c).any(axis=0)
    rows = np.argmax(np.where(np.isfinite(c), c, -np.inf), axis=0).astype(float)
    rows[~scored] = np.nan
    return rows


def _internal_matrix(n: int, alpha: float, beta: float) -> np.ndarray:
    """A = alpha D1'D1 + beta D2'D2 over the snake's own differences (free ends)."""
    a = np.zeros((n, n))
    if n >= 2:
        d1 = np.diff(np.eye(n), axis=0)
        a += alpha * d1.T @ d1
    if n >= 3:
        d2 = np.diff(np.eye(n), n=2, axis=0)
        a += beta * d2.T @ d2
    return a


def _row_gradient_at(grad: np.ndarray, y: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """dC/dr at sub-pixel rows `y` of columns `cols`, linear between rows."""
    h = grad.shape[0]
    r0 = np.clip(np.floor(y).astype(int), 0, h - 1)
    r1 = np.minimum(r0 + 1, h - 1)
    t = np.clip(y - r0, 0.0, 1.0)
    return (1 - t) * grad[r0, cols] + t * grad[r1, cols]


def open_snake(confidence: np.ndarray, initial: np.ndarray,
               params: SnakeParams | None = None) -> np.ndarray:
    """The converged open snake (one row per column) started from `initial` on `confidence`.

    Columns where `initial` is NaN (nothing scored) are filled by linear interpolation from
    their neighbours before the snake starts; rows stay inside the map.
    """
    params = params or SnakeParams()
    c = np.asarray(confidence, dtype=float)
    y = np.asarray(initial, dtype=float).copy()
    if c.ndim != 2 or y.shape != (c.shape[1],):
        raise ValueError(f"initial: expected one row per map column ({c.shape[1]}), "
                         f"got shape {y.shape}")
    known = np.isfinite(y)
    if not known.any():
        raise ValueError("initial: no column has a starting row")
    cols = np.arange(len(y))
    y[~known] = np.interp(cols[~known], cols[known], y[known])
    h = c.shape[0]
    smooth = ndimage.gaussian_filter(np.nan_to_num(c, nan=0.0), params.sigma) \
        if params.sigma > 0 else np.nan_to_num(c, nan=0.0)
    grad = np.gradient(smooth, axis=0) if h > 1 else np.zeros_like(smooth)
    step = np.linalg.inv(np.eye(len(y)) + params.tau * _internal_matrix(
        len(y), params.alpha, params.beta))
    for _ in range(params.iterations):
        force = params.kappa * _row_gradient_at(grad, y, cols)
        new = np.clip(step @ (y + params.tau * force), 0.0, h - 1.0)
        moved = float(np.abs(new - y).max())
        y = new
        if moved < params.tol:
            break
    return y


@dataclass(frozen=True)
class TracedInterface:
    """One interface of one ROI: the step-like boundary and the snake smoothing it."""

    column_max: np.ndarray
    snake: np.ndarray


def trace_interface(confidence: np.ndarray, params: SnakeParams | None = None
                    ) -> TracedInterface:
    """Per-column maximum, then the open snake initialised on it (Fig. 8(c)-(d))."""
    step = column_max_rows(confidence)
    return TracedInterface(step, open_snake(confidence, step, params))
