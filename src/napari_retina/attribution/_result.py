"""The result of ``attribute``: :class:`Attribution`, and its completeness check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from .._invariance import Invariance
from .._json import jsonable
from .._types import AnyModel
from .._units import FRAME_MS, PIXEL_UM, RATE_UNITS
from ._quadrature import Rule

#: ``completeness_error``'s floor on its denominator, in float32 eps of the rate scale: a
#: response of fewer ulps than this carries more than ~1/256 of rounding of its own
COMPLETENESS_FLOOR_EPS = 256.0


def map_shape(channels: int, side: int, invariance: str) -> Optional[tuple[int, int, int]]:
    """(C, h, w) of one frame's maps: (C, h, h) for "none", summed along y (C, 1, h) for "y",
    along x (C, h, 1) for "x"; None for "space" (no maps). ``side`` is conv1's map side h."""
    return {"none": (channels, side, side), "y": (channels, 1, side), "x": (channels, side, 1)}.get(invariance)


def kept_stimulus(stim: np.ndarray, source: Any) -> np.ndarray:
    """The stimulus a result keeps: ``stim`` (float32 (T, H, W), validated from the caller's ``source``), copied
    when it is a writeable view of the caller's own memory (a float32 array, a CPU tensor), so that the result,
    its reduction and its lazy maps do not change when the caller reuses that buffer. A read-only view (a
    memory-mapped file opened "r") is kept as it is: it cannot change, and copying could be a whole file."""
    if not stim.flags.writeable:
        return stim
    if isinstance(source, torch.Tensor):   # a bfloat16 tensor has no NumPy view: the stimulus is a converted copy
        source = source.detach().numpy() if source.device.type == "cpu" and source.dtype != torch.bfloat16 else None
    return stim.copy() if isinstance(source, np.ndarray) and np.shares_memory(stim, source) else stim


def reduce_maps(a: torch.Tensor, invariance: Invariance) -> Optional[torch.Tensor]:
    """A (n, C, h, w) summed along the uniform axis ("y": over y, "x": over x); None for "space"."""
    if invariance == "none":
        return a
    if invariance == "y":
        return a.sum(dim=2, keepdim=True)
    if invariance == "x":
        return a.sum(dim=3, keepdim=True)
    return None


def reported(a: torch.Tensor, invariance: Invariance) -> torch.Tensor:
    """What the result holds of A (n, C, h, w): its maps (:func:`reduce_maps`), or the channels (n, C) for "space"."""
    red = reduce_maps(a, invariance)
    return a.sum(dim=(2, 3)) if red is None else red


@dataclass
class Attribution:
    """Integrated-gradient attributions of a response to conv1 units.

    Arrays over time have length T (stimulus frames), NaN on frames not
    attributed. Units: spikes per 10 ms bin (the model's rate units).

    Attributes
    ----------
    maps : float32 (T, C, h, w), (T, C, 1, w) for invariance "y" (summed over
        y), (T, C, h, 1) for "x" (summed over x), or None for "space".
        Map pixel (i, j) sits on stimulus pixel (i + offset, j + offset) of
        the analysed window, i.e. (i + offset + y0, j + offset + x0) of the
        input stack with ``(y0, x0) = crop_origin``.
    channels : float32 (T, C), A_c(t) = sum of the maps over space.
    response : float32 (T,), F(s_t) − F(0).
    rates : float32 (T,), F(s_t), the summed rate of ``cells``.
    baseline_rate : F(0), the rate at mean luminance.
    completeness_error : ``max_t |Σ_c A_c(t) − response(t)| / max(max_t |response(t)|, floor)``
        over the attributed frames, with ``floor = 256·eps32·max(|F(0)|, max_t |F(s_t)|, 1)``
        (``eps32 = 2⁻²³``, so ≈ 3e-5 of the rate scale; :func:`completeness_error`):
        the response is a difference of float32 rates that each carry a few
        ulps of rounding, so below the floor it is mostly rounding, and the
        error is measured against the floor instead of blowing up (a
        near-zero stimulus gives a small finite value, not inf). For any
        response above the floor it is the plain relative error.
    cells : attributed cells (their rates are summed).
    steps, rule : quadrature used (with ``tol``, the most points any frame
        needed); invariance : "none" | "x" | "y" | "space".
    frames : int (n,), the attributed frames.
    offset : stimulus pixel under map pixel 0 (k1 // 2).
    history : frames per window.
    stimulus : float32 (T, H, W) contrast units actually used (the analysed window); never the caller's own
        writeable array (:func:`kept_stimulus`).
    model : the model used (kept by reference, as given).
    crop_origin : (y0, x0), model pixels: where the analysed ``size × size`` window
        sits in the input stack ((0, 0) when nothing was cut); with
        ``input_pixel_um``, on the model's grid laid over the stack from its
        top-left edge (stack pixel ``y0·55/p_y − 0.5`` is its top edge).
    input_pixel_um : (y_um, x_um) or None: the input stack's pixel size on the retina when it was
        resampled to the model's 55 µm pixels (``pixel_um=``, :mod:`napari_retina._resample`);
        None when its pixels were the model's.
    input_frame_ms : float or None: how long each frame of the input stack was shown (ms) when time was
        resampled to the model's 10 ms bins (``frame_ms=``); every array over time then counts those bins,
        bin ``k`` covering ``[10k, 10(k+1))`` ms from the stack's first frame. None when its frames were the model's.
    tol : the tolerance the quadrature was refined to (adaptive, the default;
        :mod:`napari_retina.attribution._adaptive`), or None for fixed ``steps``.
    steps_per_frame : int64 (T,), the quadrature points each frame used
        (``steps`` everywhere with fixed steps), 0 on frames not attributed.
    """

    maps: Optional[np.ndarray]
    channels: np.ndarray
    response: np.ndarray
    rates: np.ndarray
    baseline_rate: float
    completeness_error: float
    cells: list
    steps: int
    rule: Rule
    invariance: Invariance
    frames: np.ndarray
    offset: int
    history: int
    stimulus: np.ndarray = field(repr=False)
    model: AnyModel = field(repr=False)
    crop_origin: tuple[int, int] = (0, 0)
    tol: Optional[float] = None
    steps_per_frame: Optional[np.ndarray] = None
    input_pixel_um: Optional[tuple[float, float]] = None
    input_frame_ms: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        """Arrays and parameters as a flat dict for :func:`napari_retina.io.write_results`.

        NumPy arrays for ``channels``, ``response``, ``rates``, ``steps_per_frame`` (T,…), ``cells``,
        ``frames`` and ``crop_origin`` (2,), ``maps`` only when there are maps;
        plain Python numbers and strings for the rest, with ``units`` (of the
        rates, the response and the attributions: spikes per 10 ms bin),
        ``frame_ms`` and ``pixel_um`` (the size of a frame and of a model pixel, which
        ``frames``, ``offset`` and ``crop_origin`` count), ``input_pixel_um`` (2,), the
        input stack's pixel size (µm, y and x: 55 unless it was resampled) and ``input_frame_ms``, its frame
        interval (ms: 10 unless it was resampled). ``stimulus`` and
        ``model`` are not included (write the stimulus and the model's config
        next to it).

        >>> nr.io.write_results("a.h5", {"attribution": attr.to_dict()})   # doctest: +SKIP
        """
        out: dict[str, Any] = {
            "channels": self.channels, "response": self.response, "rates": self.rates,
            "cells": np.asarray(self.cells), "frames": np.asarray(self.frames),
            "crop_origin": np.asarray(self.crop_origin, dtype=np.int64),
            "input_pixel_um": np.asarray(self.input_pixel_um or (PIXEL_UM, PIXEL_UM), dtype=np.float64),
        }
        if self.steps_per_frame is not None:
            out["steps_per_frame"] = self.steps_per_frame
        out.update(jsonable({
            "baseline_rate": self.baseline_rate, "completeness_error": self.completeness_error,
            "steps": self.steps, "tol": self.tol, "rule": self.rule, "invariance": self.invariance, "offset": self.offset,
            "history": self.history, "units": RATE_UNITS, "frame_ms": FRAME_MS, "pixel_um": PIXEL_UM,
            "input_frame_ms": self.input_frame_ms or FRAME_MS,
        }))
        if self.maps is not None:
            out["maps"] = self.maps
        return out


def completeness_error(channels: np.ndarray, response: np.ndarray, rates: np.ndarray,
                       baseline_rate: float) -> float:
    """``max_t |Σ_c A_c(t) − response(t)| / max(max_t |response(t)|, floor)``, in float64.

    ``channels`` (n, C) A_c(t), ``response`` (n,) F(s_t) − F(0) and ``rates``
    (n,) F(s_t) on the attributed frames; ``baseline_rate`` F(0). The floor,
    ``COMPLETENESS_FLOOR_EPS·eps32·max(|F(0)|, max_t |F(s_t)|, 1)`` spikes per
    bin (256 ulps of the rate scale, ≈ 3e-5 of it), is where a difference of
    float32 rates, each a few ulps off, stops resolving the response to
    better than ~1/256: when the response is below it (a near-zero stimulus)
    the gap is compared with the floor, so the error stays finite and small
    (a 1-ulp gap reads 0.004) instead of inf.

    Example
    -------
    >>> completeness_error(np.array([[0.5, 0.5]]), np.array([1.0]), np.array([2.0]), 1.0)
    0.0
    """
    resp = np.asarray(response, dtype=np.float64)
    if resp.size == 0:
        return 0.0
    gap = float(np.abs(np.asarray(channels, dtype=np.float64).sum(1) - resp).max())
    level = max(abs(float(baseline_rate)), float(np.abs(np.asarray(rates, dtype=np.float64)).max()), 1.0)
    floor = COMPLETENESS_FLOOR_EPS * float(np.finfo(np.float32).eps) * level
    return gap / max(float(np.abs(resp).max()), floor)
