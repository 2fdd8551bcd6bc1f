"""Any PyTorch retina model, through a small adapter: :func:`wrap` (``nr.wrap``; the module is private so that
``napari_retina.wrap`` is the function).

``nr.wrap(module, input="NCTHW", history=30, size=20, first_layer="core.conv0")``
turns a user's ``torch.nn.Module`` into a :class:`WrappedModel` that
:func:`napari_retina.predict`, :func:`napari_retina.attribute`,
:func:`napari_retina.reduce`, the experiments and battery
(``nr.experiments``) and the plugin's docks (``napari_retina._napari.use_model``)
accept; they read its settings through :func:`model_config`.
The module maps a batch of stimulus windows to rates:

- ``input="NTHW"``: windows (N, history, size, size), time as channels (like RetinaCNN);
- ``input="NCTHW"``: windows (N, 1, history, size, size), one channel, time as
  a depth axis (openretina-style cores with a ``Conv3d`` first layer);

and must return (N, cells) rates for the last frame of each window. The
``first_layer`` (a dotted name from ``module.named_modules()``) is the layer
whose output units are attributed. When it is a ``Conv2d`` (NTHW) or
``Conv3d`` (NCTHW) applied to the stimulus itself, :attr:`WrappedModel.first_conv`
is that layer: the attribution computes its linear drive by convolution
(the fast path) and its kernels give the units' temporal filters, polarity
and kinetics (:func:`filter_labels`); otherwise the layer's output is taken by
a hook (the generic path) and no labels are given.

Everything is checked when wrapping, with probes on an all-zero and a random
window: the layout, the history and size, that the first layer exists and runs
once per forward pass, that the output is finite floating-point (N, cells) and
depends differentiably on the first layer, and the cell names. Units: 1 frame = 10 ms, stimuli
in contrast units (0 = mean luminance), as everywhere in napari-retina.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ._device import DeviceLike, resolve_device
from ._frames import batches, gather_windows, select_frames
from ._progress import Progress, report
from ._validate import Crop, Normalize, as_stimulus, check_finite_output, check_int, stimulus_tensor
from .first_layer import DEFAULT_IGNORE_OLDEST_MS, properties_of_filters
from .model import MAX_HISTORY, MAX_SIZE, RetinaCNN, _cell_names

INPUTS = ("NTHW", "NCTHW")
#: the most windows per forward pass (RetinaCNN's CPU default)
MAX_BATCH = 256
#: floating-point operations per forward batch that sets a wrapped module's default batch size: 256
#: windows of the shipped model are 50 GFLOP (197 MFLOP each), so it and anything lighter get 256
BATCH_FLOPS = 64e9
#: the layers whose operations ``flops`` counts (2 per multiply-add of each output element)
COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class WrapConfig:
    """What :func:`wrap` was told and found: the fields predict and attribute read.

    ``history`` frames (10 ms each), ``size`` pixels (square windows),
    ``n_cells`` outputs named ``cell_names``, ``input`` layout, ``first_layer``
    name, ``norm`` (contrast units: mean 0, std 1, as RetinaCNN's config),
    ``units``: the first layer's output shape for one window, channels first
    (e.g. (C, T', h, w) for a Conv3d). ``flops``: the operations of the
    module's convolutions and linear layers (:data:`COUNTED`) on one window, 0
    when it has none (it computes with ``torch.nn.functional``); they set
    ``batch_size``. ``channels`` and ``map_sizes`` answer
    what RetinaCNN's config answers for its first layer: (C,) and, when the
    attribution has maps (the fast path), (h,) the maps' side; None otherwise.
    """

    history: int
    size: int
    n_cells: int
    cell_names: list
    input: str
    first_layer: str
    norm: dict = field(default_factory=lambda: {"mean": 0.0, "std": 1.0, "units": "contrast"})
    units: tuple = ()
    map_sizes: Optional[tuple] = None
    flops: int = 0

    @property
    def batch_size(self) -> int:
        """Windows per forward pass by default (predict, attribute, reduce): 256, or fewer when one
        window costs more than 1/256 of :data:`BATCH_FLOPS`, so that a batch, and with it each progress
        report and the time a Cancel waits, stays near what 256 windows of the shipped model take (a
        power of two). From ``flops`` (counted once, at :func:`wrap`), never from timing: results
        must not depend on how fast the machine was."""
        if self.flops <= 0:
            return MAX_BATCH
        fit = int(BATCH_FLOPS // self.flops)
        return max(1, min(MAX_BATCH, 1 << max(0, fit.bit_length() - 1)))

    @property
    def channels(self) -> tuple:
        """(C,): the first layer's output channels (index 1 of its output)."""
        return tuple(self.units[:1])

    def to_dict(self) -> dict:
        """JSON-able fields, as :meth:`napari_retina.model.ModelConfig.to_dict`, with ``"wrapped": True``."""
        out = {k: getattr(self, k) for k in ("history", "size", "n_cells", "cell_names", "input", "first_layer",
                                              "norm")}
        out.update(units=list(self.units), map_sizes=None if self.map_sizes is None else list(self.map_sizes),
                   wrapped=True)
        return out


class WrappedModel(nn.Module):
    """A user's module with the settings napari-retina needs; build it with :func:`wrap`.

    ``forward(windows)`` takes windows (N, history, size, size) float32 in
    contrast units, lays them out as the module expects and returns its
    (N, n_cells) rates.
    """

    def __init__(self, module: nn.Module, config: WrapConfig, layer: nn.Module, first_conv: Optional[nn.Module]):
        super().__init__()
        self.module = module
        self.config = config
        self._layer_name = config.first_layer
        self.first_conv = first_conv
        #: whether the module changes its input in place (found by wrap's probe): it is then given a copy of
        #: each batch, so that the windows, which attribution reuses along its path, stay as they were
        self.changes_input = False
        #: JSON-able notes, as RetinaCNN has
        self.provenance: dict[str, Any] = {"wrapped": {"module": type(module).__name__, "input": config.input,
                                                       "first_layer": config.first_layer}}
        self.scores: dict[str, Any] = {}

    @property
    def layer(self) -> nn.Module:
        """The first layer (the attributed units)."""
        return dict(self.module.named_modules())[self._layer_name]

    @property
    def device(self) -> torch.device:
        tensors = [*self.module.parameters(), *self.module.buffers()]
        return tensors[0].device if tensors else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The module's floating-point dtype (its first floating parameter's or buffer's; float32 when none)."""
        floats = (t.dtype for t in (*self.module.parameters(), *self.module.buffers()) if t.is_floating_point())
        return next(floats, torch.float32)

    def layout(self, windows: torch.Tensor) -> torch.Tensor:
        """Windows (N, history, H, W) in the module's layout and dtype (a float64 module gets float64 windows)."""
        windows = windows if windows.dtype == self.dtype else windows.to(self.dtype)
        return windows if self.config.input == "NTHW" else windows.unsqueeze(1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        x = self.layout(windows)
        out = self.module(x.clone() if self.changes_input else x)
        if self.config.units:  # wrapped: every batch is checked (the probe saw one window only)
            check_rates_shape(out, len(windows), self.config.n_cells)
        return out

    @contextmanager
    def replaced_layer(self, value: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """Within the block, the first layer's output ``o`` is replaced by ``value(o)``.

        ``value`` should return a tensor of its own (not ``o``, not a leaf the
        caller keeps): the layers after may change it in place
        (``nn.ReLU(inplace=True)``)."""
        handle = self.layer.register_forward_hook(lambda _m, _i, out: value(out))
        try:
            yield
        finally:
            handle.remove()

    def filter_labels(self, ignore_oldest_ms: float = DEFAULT_IGNORE_OLDEST_MS) -> Optional[dict[str, Any]]:
        """Polarity, latency and kinetics of the first convolution's channels, or None; see :func:`filter_labels`."""
        return filter_labels(self, ignore_oldest_ms)

    def describe(self) -> str:
        """What the model is, in a few words, e.g. ``"wrapped Net (NCTHW, first layer 'core.conv', Conv3d)"``."""
        cfg = self.config
        return (f"wrapped {type(self.module).__name__} ({cfg.input}, first layer {cfg.first_layer!r}, "
                f"{type(self.layer).__name__})")

    def layer_output(self, windows: torch.Tensor) -> torch.Tensor:
        """The first layer's output on ``windows`` (N, history, H, W), taken by a hook."""
        return self.layer_and_rates(windows)[0]

    def layer_and_rates(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the first layer's output (N, *units), the rates (N, n_cells)) of one pass over windows
        (N, history, H, W).

        The output is read by a hook on this module's layer, which fires in every
        forward pass of it, whatever the thread: call it on a copy of a module that
        other threads may run (``copy.deepcopy``, as attribution and reduction do)."""
        seen: list = []
        # a copy: an in-place layer after this one (nn.ReLU(inplace=True)) would change the output itself
        with self.replaced_layer(lambda out: seen.append(out.detach().clone()) or out):
            rates = self(windows)
        return seen[0], rates


def check_rates_shape(out: Any, n: int, n_cells: int) -> None:
    """Refuse a module's output that is not floating-point rates (n, n_cells), in one sentence."""
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (n, n_cells) and out.is_floating_point():
        return
    got = (f"{str(out.dtype).removeprefix('torch.')} {list(out.shape)}" if isinstance(out, torch.Tensor)
           else type(out).__name__)
    raise ValueError(f"the wrapped module must return floating-point rates of shape (N, cells) = ({n}, {n_cells}) "
                     f"on {n} window{'s' if n != 1 else ''}; it returned {got}")


def is_wrapped(model: Any) -> bool:
    """Whether ``model`` is a user's module adapted by :func:`wrap` (not a RetinaCNN)."""
    return isinstance(model, WrappedModel)


def model_config(model: Any, what: str = "model") -> Any:
    """The config of a RetinaCNN or a :class:`WrappedModel`, or one TypeError naming what came in.

    Both answer ``history`` (frames), ``size`` (px), ``n_cells``,
    ``cell_names`` and ``norm``: what the experiments, the battery and the
    widgets read, whichever kind of model they were given.
    """
    if isinstance(model, (RetinaCNN, WrappedModel)):
        return model.config
    raise TypeError(f"{what} must be a RetinaCNN (nr.load_model) or a wrapped module (nr.wrap), "
                    f"got {type(model).__name__}")


def _check_settings(module: Any, input: Any, history: Any, size: Any, first_layer: Any) -> nn.Module:
    """The first layer, or one sentence on the first setting that is wrong."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"wrap expects a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(input, str) or input not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS} (the module's window layout), got {input!r}")
    check_int(history, "history", 1, MAX_HISTORY + 1)
    check_int(size, "size", 1, MAX_SIZE + 1)
    layers = dict(module.named_modules())
    if not isinstance(first_layer, str) or first_layer not in layers or first_layer == "":
        names = [n for n in layers if n][:8]
        if not names:
            raise ValueError(f"first_layer must name a submodule of the module, and this {type(module).__name__} "
                             f"has none (wrap a module that holds its layers), got {first_layer!r}")
        raise ValueError(
            f"first_layer must name a submodule of the module (one of {names}{' ...' if len(layers) > 9 else ''}), "
            f"got {first_layer!r}"
        )
    return layers[first_layer]


#: how far beyond a stimulus's contrasts the second probe window reaches (a clamp, a squashing or a normalisation
#: of the window before the first layer, which leaves a plain window's values as they are, shows on it)
WIDE_PROBE = 1e3


def _probe(model: WrappedModel) -> tuple[torch.Tensor, bool, tuple]:
    """(the module's output on one all-zero window, whether the first layer's input was the window itself,
    the first layer's output shape for one window).

    "The window itself" (the fast path's convolution of the stimulus then
    gives the layer's drive) holds when the layer's input equals the window
    on a random window of contrasts and on one a thousand times wider, each
    passed as a copy (a module that changes its input in place changes the
    copy, not what it is compared with; such a module is given a copy of
    every batch from then on: ``changes_input``).

    Refused here: a module that fails on a window, a first layer that does
    not run or runs more than once in a forward pass (one module reused for
    several layers: its units cannot be told apart), rates of a window that
    depend on the other windows of its batch.
    """
    cfg = model.config
    window = torch.zeros(1, cfg.history, cfg.size, cfg.size, device=model.device)
    probe = torch.randn(1, cfg.history, cfg.size, cfg.size, generator=torch.Generator().manual_seed(0))
    probe = probe.to(model.device)
    seen: list = []
    shapes: list = []
    flops: list = []
    handle = model.layer.register_forward_pre_hook(_keep_input(seen))
    out_handle = model.layer.register_forward_hook(
        lambda _m, _a, out: shapes.append(tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None))
    counters = [m.register_forward_hook(_count_flops(flops)) for m in model.module.modules() if isinstance(m, COUNTED)]
    try:
        with torch.no_grad():
            out = model(window)
            runs = len(seen)
            cfg.flops = int(sum(flops))
            given = probe.clone()
            out_probe = model(given)
            model.changes_input = not torch.equal(given, probe)
            out_pair = model(torch.cat([window, probe]))
    except Exception as exc:
        raise ValueError(
            f"the wrapped module failed on a window of shape {list(model.layout(window).shape)} "
            f"({cfg.input}, history {cfg.history}, size {cfg.size}): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        handle.remove()
        out_handle.remove()
        for counter in counters:
            counter.remove()
    if not seen:
        raise ValueError(f"first_layer {cfg.first_layer!r} is not run by the module's forward pass")
    if runs > 1:
        raise ValueError(
            f"first_layer {cfg.first_layer!r} runs {runs} times in one forward pass (one module used for several "
            "layers), so its units cannot be told apart; attribute a layer that runs once (give each layer its own "
            "module, e.g. its own nn.ReLU)"
        )
    _check_batch_independent(model, torch.cat([out, out_probe]) if _is_rates(out, out_probe) else None, out_pair)
    direct = _is_window(seen[1], model.layout(probe)) and _wide_input_is_window(model, probe * WIDE_PROBE)
    return out, direct, shapes[-1]


def _keep_input(seen: list) -> Callable:
    """A forward pre-hook that appends a copy of the layer's input to ``seen`` (a copy: a module may change it in
    place afterwards; None when the layer got no tensor)."""
    def hook(_m, args) -> None:
        first = args[0] if args else None
        seen.append(first.detach().clone() if isinstance(first, torch.Tensor) else None)
    return hook


def _is_rates(*outs: Any) -> bool:
    return all(isinstance(o, torch.Tensor) and o.ndim == 2 and len(o) == 1 for o in outs)


def _is_window(seen: Any, window: torch.Tensor) -> bool:
    """Whether a first layer's input ``seen`` is ``window`` (in the module's layout), value for value."""
    return isinstance(seen, torch.Tensor) and seen.shape == window.shape and torch.equal(seen, window)


def _wide_input_is_window(model: WrappedModel, wide: torch.Tensor) -> bool:
    """Whether the first layer's input on the window ``wide`` (1, history, H, W) is that window (False when the
    module fails on it: such a module takes the generic path, which needs no answer)."""
    seen: list = []
    handle = model.layer.register_forward_pre_hook(_keep_input(seen))
    try:
        with torch.no_grad():
            model(wide.clone())
    except Exception:
        return False
    finally:
        handle.remove()
    return bool(seen) and _is_window(seen[0], model.layout(wide))


def _check_batch_independent(model: WrappedModel, alone: Optional[torch.Tensor], together: Any) -> None:
    """Refuse rates of a window that change with the other windows of its batch (e.g. a batch's mean subtracted):
    ``alone`` is (2, cells), the all-zero and the random window each run alone; ``together`` both in one batch.
    Rounding is allowed, up to 1e-2 of the rates' scale (their largest |value|): another kernel for another batch
    size, in TF32 on a GPU (cuDNN's default for convolutions, ~1e-3), can change the last digits."""
    if alone is None or not isinstance(together, torch.Tensor) or together.shape != alone.shape:
        return  # an output of another shape: wrap refuses it in its own words
    scale = float(alone.abs().nan_to_num(posinf=0.0, neginf=0.0).max()) or 1.0
    if torch.allclose(together.to(alone.dtype), alone, rtol=0.0, atol=1e-2 * scale, equal_nan=True):
        return
    gap = float((together.to(alone.dtype) - alone).abs().nan_to_num(nan=float("inf")).max())
    raise ValueError(
        f"the wrapped module's rates for a window depend on the other windows of its batch (two windows run "
        f"together and alone differ by up to {gap:.3g} spikes/bin, {gap / scale:.2g} of the rates), so predict "
        "and attribute would change with the batch size; compute each window's rates from that window alone "
        "(e.g. no statistics over the batch dimension)"
    )


def _count_flops(into: list) -> Callable:
    """A forward hook that appends a layer's operations on its batch to ``into``: 2 per multiply-add, i.e.
    2 · output elements · (inputs each output element sums: the weight's size over its output channels)."""
    def hook(layer: nn.Module, _args, out) -> None:
        weight = getattr(layer, "weight", None)
        if isinstance(out, torch.Tensor) and isinstance(weight, torch.Tensor) and weight.ndim >= 2:
            into.append(2 * out.numel() * weight[0].numel())
    return hook


def _check_differentiable(model: WrappedModel) -> None:
    """Refuse rates that do not depend differentiably on the first layer's output (attribution follows
    their gradient), found on one all-zero window: a ``.detach()`` or a ``no_grad`` block after the layer."""
    cfg = model.config
    window = torch.zeros(1, cfg.history, cfg.size, cfg.size, device=model.device)
    with torch.no_grad():
        z = model.layer_output(window)
    leaf = z.requires_grad_(True)
    with torch.enable_grad(), model.replaced_layer(lambda _out: leaf.clone()):
        rates = model(window).sum()
        grad = torch.autograd.grad(rates, leaf, allow_unused=True)[0] if rates.requires_grad else None
    if grad is None:
        raise ValueError(
            f"the wrapped module's rates must depend differentiably on first_layer {cfg.first_layer!r} (attribution "
            "follows their gradient), and they do not: is the layer's output detached, or the rest of the forward "
            "pass run under torch.no_grad?"
        )


def _first_conv(layer: nn.Module, input: str, history: int, direct: bool) -> Optional[nn.Module]:
    """``layer`` when it is a plain convolution of the stimulus (stride 1, no dilation or groups, a square
    kernel and padding the same in y and x), else None."""
    kind = nn.Conv2d if input == "NTHW" else nn.Conv3d
    if not direct or type(layer) is not kind:
        return None
    plain = all(s == 1 for s in layer.stride) and all(d == 1 for d in layer.dilation) and layer.groups == 1
    plain = plain and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
    # maps are square with one offset for y and x (map pixel (i, j) over stimulus pixel (i + o, j + o))
    plain = plain and layer.kernel_size[-1] == layer.kernel_size[-2] and layer.padding[-1] == layer.padding[-2]
    if input == "NCTHW":
        plain = plain and layer.padding[0] == 0 and layer.kernel_size[0] <= history
    return layer if plain else None


def wrap(module: nn.Module, input: str = "NTHW", history: int = 40, size: int = 50, first_layer: str = "",
         cell_names: Optional[Sequence[str]] = None) -> WrappedModel:
    """Adapt a PyTorch retina model for predict, attribute, reduce, the experiments and the plugin's docks.

    Parameters
    ----------
    module : torch.nn.Module
        Maps windows to rates (N, cells), spikes per 10 ms bin, for the last
        frame of each window. Used in eval mode, on its own device and in its
        own dtype (float32 or float64; windows are cast to it).
    input : "NTHW" or "NCTHW"
        Window layout: (N, history, size, size) or (N, 1, history, size, size).
    history : int
        Frames per window (10 ms each).
    size : int
        Window side in pixels (55 µm each).
    first_layer : str
        Dotted name of the layer whose output units are attributed (from
        ``module.named_modules()``), e.g. ``"core.features.layer0.conv"``.
    cell_names : list of str, optional
        One per output; ``cell0``, ``cell1``, ... by default.

    Returns
    -------
    WrappedModel, in eval mode. ``first_conv`` is the first layer when it is a
    Conv2d/Conv3d of the stimulus itself, else None.

    Refused with one sentence, after probes on an all-zero and a random
    window: bad settings; a first layer that does not exist, does not run or
    runs more than once per forward pass; an output that is not floating-point
    (N, cells), or not finite on the all-zero window; rates that do not
    depend differentiably on the first layer. Every later batch's output is
    checked to be (N, cells) too.

    Example
    -------
    >>> wrapped = nr.wrap(net, input="NCTHW", history=30, size=20, first_layer="core.conv")  # doctest: +SKIP
    >>> nr.predict(wrapped, stim).shape                                                      # doctest: +SKIP
    (T, n_cells)
    """
    layer = _check_settings(module, input, history, size, first_layer)
    config = WrapConfig(history=int(history), size=int(size), n_cells=1, cell_names=[], input=input,
                        first_layer=first_layer)
    model = WrappedModel(module, config, layer, None).eval()
    if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        raise ValueError("the wrapped module's weights are on the 'meta' device (shapes without values); load "
                         "them first, e.g. module.to_empty(device='cpu') then module.load_state_dict(...)")
    if model.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the wrapped module must compute in float32 or float64 (attribution sums small "
                         f"gradients), got {str(model.dtype).removeprefix('torch.')} parameters; wrap module.float()")
    out, direct, units = _probe(model)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1 or out.shape[1] < 1:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the wrapped module must return rates of shape (N, cells); on one window it returned {got}")
    check_rates_shape(out, 1, int(out.shape[1]))  # floating point
    if not torch.isfinite(out).all():
        raise ValueError(
            f"the wrapped module's rates on the all-zero (mean-luminance) window are {out.flatten().tolist()[:8]}; "
            "attribution integrates from that window, so they must be finite"
        )
    config.n_cells = int(out.shape[1])
    if isinstance(cell_names, str):
        raise TypeError(f"cell_names must be a list of names, one per output, got the string {cell_names!r}")
    try:
        config.cell_names = _cell_names([] if cell_names is None else list(cell_names), config.n_cells)
    except ValueError as exc:
        raise ValueError(str(exc).replace("ModelConfig.cell_names", "cell_names")
                         .replace("ModelConfig", "the wrapped module")) from exc
    if not units:
        got = "no tensor" if units is None else "one number per window"
        raise ValueError(f"first_layer {first_layer!r} must output a tensor (N, channels, ...) whose units can be "
                         f"attributed; on one window it gave {got}")
    config.units = units
    _check_differentiable(model)
    model.first_conv = _first_conv(layer, input, config.history, direct)
    if model.first_conv is not None:
        config.map_sizes = (int(units[-2]),)
    return model


def check_model_dtype(model: Any) -> None:
    """A ValueError, in one sentence, for a RetinaCNN with weights in another precision than float32 or float64
    (``model.half()``: its first layer's FFT and the reduction's sums have no float16 kernels, and attribution
    sums small gradients); a wrapped module is checked by :func:`wrap`."""
    if isinstance(model, RetinaCNN):
        other = {t.dtype for t in (*model.parameters(), *model.buffers())
                 if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64)}
        if other:
            got = ", ".join(sorted(str(d).removeprefix("torch.") for d in other))
            raise ValueError(f"the model must compute in float32 or float64 (attribution sums small gradients), "
                             f"got {got} weights; pass model.float()")


def model_on(model: Any, device: DeviceLike) -> Any:
    """``model`` (a RetinaCNN or a :class:`WrappedModel`) in eval mode on ``device`` (a copy when it has to move;
    ``device`` None: where it is); a TypeError for anything else, a ValueError for a RetinaCNN in float16
    (:func:`check_model_dtype`)."""
    model_config(model)
    check_model_dtype(model)
    dev = model.device if device is None else resolve_device(device)
    if dev != model.device:
        model = private_copy(model).to(dev)
    return model.eval()


def private_copy(model: Any) -> Any:
    """``copy.deepcopy(model)`` (a RetinaCNN or a :class:`WrappedModel`), also of a module that holds a tensor
    computed with autograd as a plain attribute (the old ``torch.nn.utils.weight_norm`` keeps its weight so after
    a forward pass with gradients; deepcopy refuses such tensors): one forward pass on an all-zero window without
    gradients recomputes it as a plain tensor first."""
    try:
        return copy.deepcopy(model)
    except RuntimeError as exc:
        if "deepcopy" not in str(exc):
            raise
    cfg = model.config
    with torch.no_grad():
        model(torch.zeros(1, cfg.history, cfg.size, cfg.size, device=model.device))
    return copy.deepcopy(model)


def predict(model: WrappedModel, stimulus, device: DeviceLike = None, batch_size: Optional[int] = None,
            crop: Crop = None, progress: Optional[Progress] = None, normalize: Normalize = False,
            pixel_um=None, frame_ms=None) -> np.ndarray:
    """Rates (T, n_cells) of a wrapped module, aligned to stimulus frames (NaN for the first history-1); on the
    model's 10 ms bins with ``frame_ms`` (as :func:`napari_retina.predict`).

    What :func:`napari_retina.predict` runs for a :class:`WrappedModel`: the
    same checks of the stimulus, then the module on every window with a full
    history, ``batch_size`` windows (default ``model.config.batch_size``: 256, fewer
    for a heavy module) at a time.
    """
    model = model_on(model, device)
    cfg = model.config
    stim = as_stimulus(stimulus, history=cfg.history, size=cfg.size, crop=crop, norm=cfg.norm, normalize=normalize,
                       pixel_um=pixel_um, frame_ms=frame_ms, progress=progress)
    bs = cfg.batch_size if batch_size is None else check_int(batch_size, "batch_size", 1)
    idx = select_frames(len(stim), cfg.history)
    source = stimulus_tensor(stim)
    out = np.full((len(stim), cfg.n_cells), np.nan, dtype=np.float32)
    report(progress, 0, len(idx))
    with torch.inference_mode():
        for done, chunk in enumerate(batches(idx, bs)):
            windows = gather_windows(source, chunk, cfg.history).to(model.device)
            out[chunk] = model(windows).float().cpu().numpy()
            report(progress, min(len(idx), (done + 1) * bs), len(idx))
    check_finite_output(out, idx, "the wrapped module's rates", stim)
    return out


def temporal_filters(model: WrappedModel) -> Optional[np.ndarray]:
    """The first convolution's kernels summed over space, float64 (C, taps), index 0 = oldest; None if no conv.

    Conv2d (C, history, k, k) -> (C, history); Conv3d (C, 1, kt, k, k) -> (C, kt).
    The last tap is the current frame (a Conv3d's last output time step sees
    the last ``kt`` frames). Unlike RetinaCNN's no batch-norm sign is applied:
    what follows the layer is not known.
    """
    if model.first_conv is None:
        return None
    w = model.first_conv.weight.detach().double().cpu().numpy()
    return w.sum(axis=(2, 3)) if w.ndim == 4 else w.sum(axis=(1, 3, 4))


def filter_labels(model: WrappedModel,
                  ignore_oldest_ms: float = DEFAULT_IGNORE_OLDEST_MS) -> Optional[dict[str, Any]]:
    """Polarity (ON/OFF), peak latency and kinetics (fast/slow) of the first convolution's channels.

    As :func:`napari_retina.first_layer.filter_properties` on
    :func:`temporal_filters` (peak sought outside the oldest
    ``ignore_oldest_ms``, at most half the taps); None when the first layer is
    not a convolution of the stimulus (the labels are omitted, not guessed).
    """
    filt = temporal_filters(model)
    return None if filt is None else properties_of_filters(filt, ignore_oldest_ms)
