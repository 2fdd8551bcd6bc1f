"""nr.wrap: a user's PyTorch module (openretina-like core + readout) through predict and attribute.

References: the module itself run window by window, and Captum's LayerIntegratedGradients
on the chosen layer at Captum's own α points (never numbers napari-retina produced).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerIntegratedGradients
from torch import nn
from torch.nn import functional as F

import napari_retina as nr
from napari_retina._wrap import filter_labels

HISTORY, SIZE, CELLS = 10, 12, 3


class Core(nn.Module):
    """openretina-like: Conv3d (time × space) first layer, batch norm, ELU, a second Conv3d."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 4, (5, 5, 5))
        self.bn = nn.BatchNorm3d(4)
        self.nonlin = nn.ELU()
        self.conv2 = nn.Conv3d(4, 3, (3, 3, 3))

    def forward(self, x):
        return F.elu(self.conv2(self.nonlin(self.bn(self.conv(x)))))


class Readout(nn.Module):
    """A spatial readout: per cell a spatial mask and feature weights, on the last time step; softplus."""

    def __init__(self, channels=3, side=6, cells=CELLS):
        super().__init__()
        self.mask = nn.Parameter(torch.randn(cells, side, side) / side)
        self.features = nn.Parameter(torch.randn(cells, channels))
        self.bias = nn.Parameter(torch.zeros(cells))

    def forward(self, x):
        return F.softplus(torch.einsum("nchw,khw,kc->nk", x[:, :, -1], self.mask, self.features) + self.bias)


class Net(nn.Module):
    def __init__(self, gain=1.0):
        super().__init__()
        self.gain = gain
        self.core = Core()
        self.readout = Readout()

    def forward(self, x):
        return self.readout(self.core(self.gain * x))


@pytest.fixture
def net():
    torch.manual_seed(0)
    n = Net()
    with torch.no_grad():
        n.core.bn.running_mean.normal_(0, 0.1)
        n.core.bn.running_var.uniform_(0.5, 1.5)
        n.core.bn.weight.normal_(1, 0.3)
    return n.eval()


def stim(frames=16, seed=0):
    return np.random.default_rng(seed).normal(size=(frames, SIZE, SIZE)).astype(np.float32)


def captum(net, layer, windows, cell, steps, method, layout=lambda w: w.unsqueeze(1)):
    """Captum's LayerIntegratedGradients of ``net``'s cell to ``layer``'s output, baseline zero."""
    lig = LayerIntegratedGradients(lambda x: net(x)[:, cell], layer)
    x = layout(windows)
    return lig.attribute(x, baselines=torch.zeros_like(x), n_steps=steps, method=method).detach()


def windows_of(s, frames):
    return torch.stack([torch.from_numpy(s[t - HISTORY + 1:t + 1]) for t in frames])


def test_predict_runs_the_module_on_each_window(net):
    wrapped = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv",
                      cell_names=["a", "b", "c"])
    s = stim()
    rates = nr.predict(wrapped, s)
    frames = np.arange(HISTORY - 1, len(s))
    with torch.no_grad():
        expected = net(windows_of(s, frames).unsqueeze(1)).numpy()
    assert np.isnan(rates[:HISTORY - 1]).all()
    np.testing.assert_allclose(rates[frames], expected, rtol=1e-6, atol=1e-7)
    assert wrapped.config.cell_names == ["a", "b", "c"] and wrapped.config.n_cells == CELLS


@pytest.mark.parametrize("method, steps", [("gausslegendre", 16), ("riemann_trapezoid", 10)])
def test_the_fast_path_equals_captum_on_a_conv3d_first_layer(net, method, steps):
    wrapped = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv")
    assert wrapped.first_conv is net.core.conv
    s, frames = stim(seed=1), [9, 12, 15]
    attr = nr.attribute(wrapped, s, cell=1, steps=steps, rule=method, frames=frames)
    ref = captum(net, net.core.conv, windows_of(s, frames), 1, steps, method)   # (n, C, T', h, w)
    scale = float(ref.abs().sum(dim=(2, 3, 4)).max())
    np.testing.assert_allclose(attr.channels[frames], ref.sum(dim=(2, 3, 4)).numpy(), atol=2e-5 * scale)
    np.testing.assert_allclose(attr.maps[frames], ref.sum(dim=2).numpy(), atol=2e-5 * scale)
    assert attr.offset == 2 and attr.maps.shape == (len(s), 4, 8, 8)


@pytest.mark.parametrize("first_layer, gain", [("core.nonlin", 1.0), ("core.conv", 2.0)],
                         ids=["non-conv layer", "conv of a scaled input"])
def test_the_generic_path_equals_captum(first_layer, gain):
    torch.manual_seed(1)
    net = Net(gain=gain).eval()
    wrapped = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer=first_layer)
    assert wrapped.first_conv is None          # not a convolution of the stimulus itself
    s, frames = stim(seed=2), [9, 14]
    attr = nr.attribute(wrapped, s, cell=[0, 2], steps=12, rule="gausslegendre", frames=frames)
    layer = dict(net.named_modules())[first_layer]
    lig = LayerIntegratedGradients(lambda x: net(x)[:, [0, 2]].sum(1), layer)
    x = windows_of(s, frames).unsqueeze(1)
    ref = lig.attribute(x, baselines=torch.zeros_like(x), n_steps=12, method="gausslegendre").detach()
    scale = float(ref.abs().sum(dim=(2, 3, 4)).max())
    np.testing.assert_allclose(attr.channels[frames], ref.sum(dim=(2, 3, 4)).numpy(), atol=2e-5 * scale)
    assert attr.maps is None
    assert filter_labels(wrapped) is None       # labels omitted, not guessed


def test_a_wrapped_retina_cnn_attributes_like_the_retina_cnn():
    """NTHW with a Conv2d first layer: the wrapper's fast path and RetinaCNN's own IG at Captum's points agree."""
    torch.manual_seed(2)
    model = nr.RetinaCNN(nr.ModelConfig(history=HISTORY, size=SIZE, kernels=(5, 3), channels=(4, 4),
                                        n_cells=2)).eval()
    wrapped = nr.wrap(model, input="NTHW", history=HISTORY, size=SIZE, first_layer="conv1")
    assert wrapped.first_conv is model.conv1
    s, frames = stim(seed=3), [10, 13]
    a = nr.attribute(wrapped, s, cell=0, steps=16, rule="gausslegendre", frames=frames)
    b = nr.attribute(model, s, cell=0, steps=16, rule="gausslegendre", frames=frames, invariance="none")
    scale = float(np.abs(b.channels[frames]).max())
    np.testing.assert_allclose(a.channels[frames], b.channels[frames], atol=2e-5 * scale)
    np.testing.assert_allclose(a.maps[frames], b.maps[frames], atol=2e-5 * scale)
    np.testing.assert_allclose(nr.predict(wrapped, s), nr.predict(model, s), rtol=1e-5, equal_nan=True)


def test_labels_come_from_the_conv3d_kernels(net):
    """ON/OFF from the sign of each channel's spatially summed kernel's peak, fast/slow from its latency."""
    with torch.no_grad():
        w = torch.zeros(4, 1, 5, 5, 5)
        w[0, 0, 4] = 1.0    # ON, peak now
        w[1, 0, 2] = -1.0   # OFF, peak 20 ms ago
        w[2, 0, 2] = 1.0    # ON, 20 ms
        w[3, 0, 4] = -1.0   # OFF, now
        net.core.conv.weight.copy_(w)
    labels = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv").filter_labels()
    assert labels["polarity"] == ["ON", "OFF", "ON", "OFF"]
    assert labels["kinetics"] == ["fast", "slow", "slow", "fast"]
    assert labels["latency_ms"].tolist() == [0.0, 20.0, 20.0, 0.0]


# ---------------------------------------------------------------- bad input, refused before any computation


class Counting(Net):
    calls = 0

    def forward(self, x):
        Counting.calls += 1
        return super().forward(x)


def test_a_first_layer_that_does_not_exist_is_refused_before_running_the_module():
    torch.manual_seed(0)
    net = Counting().eval()
    Counting.calls = 0
    with pytest.raises(ValueError, match=r"first_layer must name a submodule of the module \(one of \['core', "
                                         r"'core.conv', 'core.bn', .*\), got 'core.conv9'"):
        nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv9")
    assert Counting.calls == 0


class TimeSeries(Net):
    def forward(self, x):  # (N, cells, T') like openretina without taking the last step
        return super().forward(x)[:, :, None].expand(-1, -1, 4)


def test_an_output_that_is_not_n_by_cells_is_refused():
    with pytest.raises(ValueError, match=r"the wrapped module must return rates of shape \(N, cells\); on one window "
                                         r"it returned \[1, 3, 4\]"):
        nr.wrap(TimeSeries().eval(), input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv")


@pytest.mark.parametrize("kwargs, error, message", [
    ({"input": "NHWT"}, ValueError, r"input must be one of \('NTHW', 'NCTHW'\) \(the module's window layout\), "
                                    r"got 'NHWT'"),
    ({"cell_names": ["a"]}, ValueError, r"the wrapped module has 3 cells but 1 cell names"),
    ({"first_layer": "readout"}, ValueError, r"first_layer must name a submodule"),
    ({"input": "NTHW"}, ValueError, r"the wrapped module failed on a window of shape \[1, 10, 12, 12\] \(NTHW, "
                                    r"history 10, size 12\)"),
])
def test_bad_settings_are_one_sentence(net, kwargs, error, message):
    settings = {"input": "NCTHW", "history": HISTORY, "size": SIZE, "first_layer": "core.conv", **kwargs}
    if kwargs.get("first_layer") == "readout":
        settings["first_layer"] = "readout.nothing"
    with pytest.raises(error, match=message):
        nr.wrap(net, **settings)


def test_a_module_that_is_not_a_module_is_refused():
    with pytest.raises(TypeError, match="wrap expects a torch.nn.Module, got function"):
        nr.wrap(lambda x: x, input="NTHW", history=HISTORY, size=SIZE, first_layer="conv")


def test_a_layer_the_forward_pass_never_runs_is_refused(net):
    net.core.unused = nn.Conv3d(1, 1, 1)
    with pytest.raises(ValueError, match=r"first_layer 'core.unused' is not run by the module's forward pass"):
        nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.unused")


def test_reduce_and_kink_rules_refuse_a_wrapped_module_with_one_sentence(net):
    wrapped = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv")
    with pytest.raises(ValueError, match=r"rule 'kink_midpoint' needs RetinaCNN's structure; a wrapped module takes "
                                         r"one of \['riemann_left'"):
        nr.attribute(wrapped, stim(), rule="kink_midpoint")
    attr = nr.attribute(wrapped, stim(), steps=4, frames=[9])
    with pytest.raises(TypeError, match=r"reduce needs an attribution of a RetinaCNN \(nr.load_model\); one of a "
                                        r"wrapped module \(nr.wrap\) cannot be reduced yet"):
        nr.reduce(attr)


def test_a_module_without_submodules_says_so():
    with pytest.raises(ValueError, match=r"first_layer must name a submodule of the module, and this Conv2d has none"):
        nr.wrap(nn.Conv2d(HISTORY, 2, 3), input="NTHW", history=HISTORY, size=SIZE, first_layer="")
