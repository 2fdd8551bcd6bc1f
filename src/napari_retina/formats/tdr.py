"""torch-deep-retina checkpoints (the Baccus lab's PyTorch BN-CNNs) as RetinaCNN weights.

Followed: baccuslab/torch-deep-retina, ``torchdeepretina/models.py`` (the
version whose ``TDRModel`` takes ``bnorm_d``, ``convgc``, ``activ_fxn``),
``custom_modules.py`` (``LinearStackedConv2d``, ``AbsBatchNorm1d/2d``,
``GaussianNoise``), ``training.py`` (``Trainer.train_loop``'s ``save_dict``),
``io.load_model`` and ``utils.stacked2conv``. Older layouts of the same classes
(the noise before the reshape, ``linear_bias`` instead of ``gc_bias``) load too:
modules are recognised by their tensors, not their index.

A checkpoint is a ``torch.save`` dict::

    {"model_type": "BNCNN" | "LinearStackedBNCNN",
     "model_state_dict": {"sequential.<i>.<param>": tensor},
     "hyps" (or "model_hyps"): {"img_shape": (40, 50, 50), "chans": [8, 8], "ksizes": (15, 11), ...},
     "norm_stats": {"mean": m, "std": s},      # of the raw stimulus
     "cells": [...], "dataset": "...", "stim_type": "...", "epoch": int, "val_acc": float, ...}

``model.sequential`` holds, in order: a convolution (``Conv2d``: ``weight``,
``bias``; ``LinearStackedConv2d``: ``convs.<j>.weight`` 3×3 kernels, the last
one with the bias, optionally per-channel batch norms between them), a batch
norm (``BatchNorm1d`` over C·h·w units, or ``BatchNorm2d`` when
``bnorm_d == 2``; ``AbsBatchNorm*`` in LinearStackedBNCNN: ``scale``, ``shift``,
``running_mean``, ``running_var``, used as ``|scale|``), Gaussian noise (a
``sigma`` tensor, training only), ReLU; the same again; a ``Linear`` readout
(bias only when ``gc_bias``); a batch norm per cell; softplus. Every batch norm
has eps 1e-3, as in RetinaCNN.

A stack is checked from its shapes before it is collapsed (``_stack.MAX_STACKED_CONVS``,
``model.MAX_KERNEL``, ``_stack.MAX_COLLAPSE_MACS``): a crafted file of many wide convolutions would
otherwise take minutes and gigabytes before any other check ran.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from . import _net
from ._net import BatchNorm, Net
from ..model import MAX_KERNEL
from ._stack import MAX_COLLAPSE_MACS, MAX_STACKED_CONVS, Layer, collapse, collapse_cost

FORMAT = "torch-deep-retina"
ARCHITECTURES = ("BNCNN", "LinearStackedBNCNN")
EPS = 1e-3
_KEY = re.compile(r"^sequential\.(\d+)\.(.+)$")
_SUB = re.compile(r"^convs\.(\d+)\.(.+)$")
#: tensors of modules that do nothing in eval mode (GaussianNoise, its adaptive variants)
_NOISE = {"sigma", "running_std"}
#: hyperparameters whose other values the import cannot represent, with the value it needs
_REQUIRED_HYPS = {"convgc": False, "one2one": False, "softplus": True, "inference_exp": False,
                  "activ_fxn": "ReLU", "recurrent": False, "kinetic": False}


def is_tdr(payload: Any) -> bool:
    """Whether a loaded torch file looks like a torch-deep-retina checkpoint."""
    return isinstance(payload, dict) and "model_state_dict" in payload and "model_type" in payload


def _hyps(payload: dict) -> dict:
    hyps = payload.get("hyps", payload.get("model_hyps"))
    return hyps if isinstance(hyps, dict) else {}


def _check_hyps(path: Path, hyps: dict) -> None:
    """Refuse hyperparameters that change the forward pass away from a BN-CNN's."""
    for key, needed in _REQUIRED_HYPS.items():
        if key in hyps and hyps[key] is not None and hyps[key] != needed:
            raise ValueError(
                f"{str(path)!r} cannot be imported: its hyps have {key}={hyps[key]!r}, but a RetinaCNN "
                f"needs {key}={needed!r}"
            )
    paddings = hyps.get("paddings")
    if paddings is not None and any(p for p in (paddings if isinstance(paddings, (list, tuple)) else [paddings])):
        raise ValueError(
            f"{str(path)!r} cannot be imported: its hyps have paddings={paddings!r}, but a RetinaCNN's "
            "convolutions are valid (padding 0)"
        )


def _modules(path: Path, state: Any) -> list[tuple[str, dict[str, Any]]]:
    """``sequential.<i>.<param>`` entries grouped per module, in order: [("sequential.i", {param: tensor})]."""
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{str(path)!r} has malformed weights: model_state_dict should be a dict of named tensors")
    groups: dict[int, dict[str, Any]] = {}
    for key, value in state.items():
        match = _KEY.match(str(key))
        if not match:
            raise ValueError(
                f"{str(path)!r} cannot be imported: its weight {key!r} is not in model.sequential "
                "(expected names sequential.<index>.<parameter>, as BNCNN and LinearStackedBNCNN have)"
            )
        groups.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return [(f"sequential.{i}", groups[i]) for i in sorted(groups)]


def _role(name: str, params: dict[str, Any]) -> str:
    if set(params) <= _NOISE:
        return "noise"
    if any(k.startswith("convs.") for k in params):
        return "conv"
    if "running_mean" in params:
        return "bn"
    weight = params.get("weight")
    ndim = weight.ndim if isinstance(weight, (torch.Tensor, np.ndarray)) else None   # numpy arrays are weights too
    if ndim == 4:
        return "conv"
    if ndim == 2:
        return "linear"
    return f"unknown ({', '.join(sorted(params))})"


def _batch_norm(path: Path, name: str, params: dict[str, Any], eps: float = EPS) -> BatchNorm:
    """A BatchNorm1d/2d (``weight``, ``bias``) or AbsBatchNorm1d/2d (``scale``, ``shift``: |scale| is used)."""
    absolute = "scale" in params
    w_key, b_key = ("scale", "shift") if absolute else ("weight", "bias")
    fields = {"mean": "running_mean", "var": "running_var", "weight": w_key, "bias": b_key}
    missing = [f"{name}.{k}" for k in ("running_mean", "running_var") if k not in params]
    if missing:
        raise ValueError(f"{str(path)!r} cannot be imported: the batch norm {name} lacks {missing}")
    extra = sorted(f"{name}.{k}" for k in set(params) - {*fields.values(), "num_batches_tracked"})
    if extra:   # a tensor the import would leave out: the file is of a variant it does not know
        raise ValueError(f"{str(path)!r} cannot be imported: the batch norm {name} holds {extra} besides a batch "
                         f"norm's {sorted(fields.values())}")
    mean = _net.as_float64(path, f"{name}.running_mean", params["running_mean"])
    var = _net.as_float64(path, f"{name}.running_var", params["running_var"])
    weight = _net.as_float64(path, f"{name}.{w_key}", params[w_key]) if w_key in params else torch.ones_like(mean)
    bias = _net.as_float64(path, f"{name}.{b_key}", params[b_key]) if b_key in params else torch.zeros_like(mean)
    return BatchNorm(weight.abs() if absolute else weight, bias, mean, var, eps,
                     {k: f"{name}.{v}" for k, v in fields.items()})


def _stack_layers(path: Path, name: str, params: dict[str, Any]) -> list[Layer]:
    """The layers of a LinearStackedConv2d (``convs.<j>.*``), in order, each a conv or a channel affine.

    Every tensor's shape is checked against the layer before it, and a stack that would take more than
    :data:`MAX_STACKED_CONVS` convolutions, a kernel wider than ``MAX_KERNEL`` or more than
    :data:`MAX_COLLAPSE_MACS` multiply-adds to collapse is refused before it is collapsed.
    """
    subs = _stack_parts(path, name, params)
    n_convs = sum("weight" in sub for sub in subs.values())
    if n_convs > MAX_STACKED_CONVS:
        raise ValueError(f"{str(path)!r} cannot be imported: the stacked convolution {name} has {n_convs} "
                         f"convolutions, more than the {MAX_STACKED_CONVS} napari-retina collapses into one kernel "
                         "(torch-deep-retina's stacks have a handful: 7 3x3 convolutions make a 15-pixel kernel)")
    layers: list[Layer] = []
    for j in sorted(subs):
        sub, sub_name = subs[j], f"{name}.convs.{j}"
        channels = next((int(w.shape[0]) for kind, w, _ in reversed(layers) if kind == "conv"), None)
        if "running_mean" in sub:
            if channels is None:
                break       # a batch norm before any convolution: refused below
            bn = _batch_norm(path, sub_name, sub, eps=1e-5)  # the stack's inner norms keep torch's default eps
            bn.check(path, channels, f"one per channel of the stack's previous convolution, {channels}")
            scale = bn.weight / torch.sqrt(bn.var + bn.eps)
            layers.append(("affine", scale, bn.bias - bn.mean * scale))
        elif "weight" in sub:
            layers.append(_stack_conv(path, sub_name, sub, channels))
        else:
            raise ValueError(f"{str(path)!r} cannot be imported: {sub_name} holds {sorted(sub)} but no weight (a "
                             "convolution of the stack) nor running_mean (a batch norm of the stack)")
    if not layers or layers[0][0] != "conv":
        raise ValueError(f"{str(path)!r} cannot be imported: the stacked convolution {name} has no first convolution")
    _check_collapse_cost(path, name, layers, n_convs)
    return layers


def _stack_parts(path: Path, name: str, params: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """A LinearStackedConv2d's ``convs.<j>.<parameter>`` tensors grouped by j: {j: {parameter: tensor}}."""
    subs: dict[int, dict[str, Any]] = {}
    for key, value in params.items():
        match = _SUB.match(key)
        if not match:
            raise ValueError(
                f"{str(path)!r} cannot be imported: {name}.{key} is not part of a LinearStackedConv2d "
                "(expected convs.<index>.<parameter>; OneToOneLinearStackedConv2d is not supported)"
            )
        subs.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return subs


def _stack_conv(path: Path, name: str, sub: dict[str, Any], previous: Optional[int]) -> Layer:
    """A convolution of a stack, ("conv", weight (C, in, k, k), bias (C,) or None), or a shape error naming it.

    ``previous``: the channels of the stack's convolution before it (None for the first), which are its inputs.
    """
    weight = _net.as_float64(path, f"{name}.weight", sub["weight"])
    bias = _net.as_float64(path, f"{name}.bias", sub["bias"]) if "bias" in sub else None
    inputs = "in" if previous is None else previous
    why = "a square kernel" if previous is None else f"the previous convolution of the stack has {previous} channels"
    if weight.ndim != 4:
        over = "" if previous is None else f" over the previous convolution's {previous} channels"
        raise _net.shape_error(path, f"{name}.weight", tuple(weight.shape), ("C", inputs, "k", "k"),
                               f"a 2-D convolution kernel{over}")
    out, k = int(weight.shape[0]), int(weight.shape[-1])
    _net.expect_shape(path, f"{name}.weight", weight, (out, int(weight.shape[1]) if previous is None else previous,
                                                        k, k), why)
    if bias is not None:
        _net.expect_shape(path, f"{name}.bias", bias, (out,), f"one bias per channel of {name}.weight")
    return "conv", weight, bias


def _check_collapse_cost(path: Path, name: str, layers: list[Layer], n_convs: int) -> None:
    """Refuse a stack whose collapsed kernel is wider than ``MAX_KERNEL`` or that takes more than
    :data:`MAX_COLLAPSE_MACS` multiply-adds to collapse, from its shapes, before any of it is computed."""
    side, work = collapse_cost(layers)
    if side > MAX_KERNEL:
        raise ValueError(f"{str(path)!r} cannot be imported: the stacked convolution {name} collapses to a "
                         f"{side}x{side} kernel, wider than the {MAX_KERNEL} pixels a RetinaCNN kernel may have")
    if work > MAX_COLLAPSE_MACS:
        channels = max(max(int(n) for n in w.shape[:2]) for kind, w, _ in layers if kind == "conv")
        raise ValueError(f"{str(path)!r} cannot be imported: collapsing the stacked convolution {name} ({n_convs} "
                         f"convolutions of up to {channels} channels into a {side}x{side} kernel) would take "
                         f"{work:.1e} multiply-adds, more than the {MAX_COLLAPSE_MACS:.0e} napari-retina allows")


def _conv_names(name: str, params: dict[str, Any]) -> tuple[str, str]:
    """How a conv's weight and bias are named in messages (a collapsed stack is named as such)."""
    if any(k.startswith("convs.") for k in params):
        return f"{name} (the stack's collapsed kernel)", f"{name} (the stack's collapsed bias)"
    return f"{name}.weight", f"{name}.bias"


def _conv(path: Path, name: str, params: dict[str, Any]) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
    """(weight, bias) of a Conv2d or a collapsed LinearStackedConv2d, and how many convolutions it had."""
    if any(k.startswith("convs.") for k in params):
        layers = _stack_layers(path, name, params)
        return collapse(layers), sum(kind == "conv" for kind, _, _ in layers)
    weight = _net.as_float64(path, f"{name}.weight", params["weight"])
    bias = _net.as_float64(path, f"{name}.bias", params["bias"]) if "bias" in params else torch.zeros(weight.shape[0])
    return (weight, bias.to(torch.float64)), 1


def _linear(path: Path, name: str, params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    weight = _net.as_float64(path, f"{name}.weight", params["weight"])
    if "bias" in params:
        return weight, _net.as_float64(path, f"{name}.bias", params["bias"])
    return weight, torch.zeros(weight.shape[0], dtype=torch.float64)


EXPECTED_ROLES = ["conv", "bn", "conv", "bn", "linear", "bn"]


def _number(value: Any) -> float | None:
    """A finite float from a number, numpy scalar or one-element tensor/array; None otherwise."""
    try:
        out = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return out if math.isfinite(out) else None


def _norm(path: Path, payload: dict) -> dict:
    """The stored stimulus statistics as RetinaCNN's ``norm`` (units "raw"), or contrast units when absent."""
    stats = payload.get("norm_stats")
    if stats is None:
        return {"mean": 0.0, "std": 1.0, "units": "contrast"}
    pair = (stats.get("mean"), stats.get("std")) if isinstance(stats, dict) else \
        tuple(stats) if isinstance(stats, (list, tuple)) and len(stats) == 2 else (None, None)
    mean, std = _number(pair[0]), _number(pair[1])
    if mean is None or std is None or std <= 0:
        raise ValueError(
            f"{str(path)!r} has malformed norm_stats: expected {{'mean': finite, 'std': finite > 0}} "
            f"or [mean, std], got {stats!r}"
        )
    return {"mean": mean, "std": std, "units": "raw"}


def _cell_names(path: Path, payload: dict, hyps: dict, n_cells: int) -> list[str]:
    cells = payload.get("cells", hyps.get("cells"))
    if cells is None or isinstance(cells, str):
        return []
    cells = cells.tolist() if hasattr(cells, "tolist") else cells
    if not isinstance(cells, (list, tuple)):
        raise ValueError(f"{str(path)!r} has malformed cells: expected a list of {n_cells} cell ids (one per "
                         f"output of its readout), got {cells!r}")
    cells = list(cells)
    if len(cells) != n_cells:
        raise ValueError(
            f"{str(path)!r} cannot be imported: it lists {len(cells)} cells but its readout has {n_cells}"
        )
    return [f"cell{c}" for c in cells]


def _info(payload: dict, hyps: dict, arch: str, stacked: list[int]) -> tuple[dict, dict]:
    """Provenance (what was imported) and held-out scores (those the checkpoint recorded)."""
    keep = {k: payload.get(k, hyps.get(k)) for k in ("dataset", "stim_type", "epoch", "exp_name")}
    provenance = {"imported": {"format": FORMAT, "architecture": arch, "convolutions_per_layer": stacked,
                               **{k: v for k, v in keep.items() if isinstance(v, (str, int))}}}
    scores = {name: _number(payload[key]) for key, name in (("val_acc", "val_pearson"),
                                                            ("test_pearson", "test_pearson")) if key in payload}
    return provenance, {k: v for k, v in scores.items() if v is not None}


def read(path: Path, payload: dict) -> tuple[Net, int, dict]:
    """A torch-deep-retina checkpoint as (Net, stimulus size, config fields incl. provenance and scores).

    ``payload`` is the dict ``torch.load(weights_only=True)`` returned. Bad
    input is one ValueError naming the file and what was expected.
    """
    arch = payload.get("model_type")
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"{str(path)!r} is a torch-deep-retina checkpoint of a {arch!r} model; napari-retina imports "
            f"{' and '.join(ARCHITECTURES)}"
        )
    hyps = _hyps(payload)
    _check_hyps(path, hyps)
    modules = [(name, params, _role(name, params)) for name, params in _modules(path, payload["model_state_dict"])]
    modules = [m for m in modules if m[2] != "noise"]
    roles = [role for _, _, role in modules]
    if roles != EXPECTED_ROLES:
        found = _net.listing([f"{name}: {role}" for name, _, role in modules])
        raise ValueError(
            f"{str(path)!r} does not have a {arch}'s layers: expected {', '.join(EXPECTED_ROLES)} "
            f"in model.sequential, found {found}"
        )
    (n1, p1, _), (nb1, pb1, _), (n2, p2, _), (nb2, pb2, _), (nl, pl, _), (nb3, pb3, _) = modules
    conv1, s1 = _conv(path, n1, p1)
    conv2, s2 = _conv(path, n2, p2)
    net = Net(conv1, _batch_norm(path, nb1, pb1), conv2, _batch_norm(path, nb2, pb2), _linear(path, nl, pl),
              _batch_norm(path, nb3, pb3), "unit")
    names = {"conv1": _conv_names(n1, p1), "conv2": _conv_names(n2, p2), "linear": (f"{nl}.weight", f"{nl}.bias")}
    size = _net.assemble(path, net, names)
    _check_img_shape(path, hyps, (conv1[0].shape[1], size, size), n1)
    provenance, scores = _info(payload, hyps, arch, [s1, s2])
    noise = _number(hyps.get("noise"))
    fields = {"cell_names": _cell_names(path, payload, hyps, net.linear[0].shape[0]), "norm": _norm(path, payload),
              "noise": noise if noise is not None and noise >= 0 else 0.05}
    return net, size, {"config": fields, "provenance": provenance, "scores": scores}


def _check_img_shape(path: Path, hyps: dict, implied: tuple[int, int, int], conv_name: str) -> None:
    """Refuse hyps['img_shape'] that disagrees with the (history, size, size) the weights imply."""
    shape = hyps.get("img_shape")
    if shape is None:
        return
    try:
        stated = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        stated = ()
    if stated != tuple(implied):
        raise ValueError(
            f"{str(path)!r} cannot be imported: hyps img_shape is {list(shape) if stated else shape!r} but the "
            f"weights ({conv_name} and the readout) imply {list(implied)}"
        )
