"""nr.wrap: a user's PyTorch module (openretina-like core + readout) through predict and attribute.

References: the module itself run window by window, and Captum's LayerIntegratedGradients
on the chosen layer at Captum's own α points (never numbers napari-retina produced).
"""

from __future__ import annotations

import copy

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



def test_a_wrapped_modules_attribution_keeps_its_own_copy_of_the_callers_buffer(net):
    wrapped = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv")
    s = stim()
    attr = nr.attribute(wrapped, s, cell=0, steps=2, rule="riemann_middle")
    s[:] = 0.0
    assert not np.shares_memory(attr.stimulus, s) and np.abs(attr.stimulus).max() > 0



def test_predict_refuses_an_unknown_invariance_for_a_wrapped_module_as_for_a_retina_cnn(net):
    wrapped = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv")
    with pytest.raises(ValueError, match=r"invariance must be one of .*, got 'bogus'"):
        nr.predict(wrapped, stim(), invariance="bogus")


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


def test_kink_rules_are_still_refused_for_a_wrapped_module_with_one_sentence(net):
    """The kink rules integrate piecewise between ReLU kinks of RetinaCNN's own layers, which a wrapped module lacks."""
    wrapped = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv")
    with pytest.raises(ValueError, match=r"rule 'kink_midpoint' needs RetinaCNN's structure; a wrapped module takes "
                                         r"one of \['riemann_left'"):
        nr.attribute(wrapped, stim(), rule="kink_midpoint")


class KinkedCore(Core):
    """The core with ReLUs: an integrand with kinks, where Gauss-Legendre needs many points."""

    def __init__(self):
        super().__init__()
        self.nonlin = nn.ReLU()

    def forward(self, x):
        return torch.relu(self.conv2(self.nonlin(self.bn(self.conv(x)))))


@pytest.mark.parametrize("first_layer", ["core.conv", "core.nonlin"])
def test_the_default_is_refined_until_tol_and_its_error_falls_with_tol(first_layer):
    """Against a float64 midpoint reference at 1,500 points (Captum's, on a float64 copy of the module).

    Fast path (a Conv3d of the stimulus) and generic path (a hooked layer) alike: the completeness
    error is at most tol, the error of the channels falls with tol and stays within 2·tol (per frame,
    relative to the largest frame), and the frames needed more points than the fixed 16 for the
    smaller tolerances (16 points give 3e-2 here).
    """
    torch.manual_seed(1)
    net = Net(gain=2.0)
    net.core = KinkedCore()
    net.eval()
    wrapped = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer=first_layer)
    s, frames = stim(frames=HISTORY + 5, seed=5), np.arange(HISTORY - 1, HISTORY + 5)
    net64 = copy.deepcopy(net).double()
    lig = LayerIntegratedGradients(lambda x: net64(x)[:, 0], net64.get_submodule(first_layer))
    x = windows_of(s, frames).double().unsqueeze(1)
    ref = lig.attribute(x, baselines=torch.zeros_like(x), n_steps=1500, method="riemann_middle",
                        internal_batch_size=1500).detach().sum(dim=(2, 3, 4)).numpy()      # (n, C)
    errors = []
    for tol in (1e-1, 1e-2, 1e-3):
        attr = nr.attribute(wrapped, s, cell=0, tol=tol)
        assert attr.tol == tol and attr.completeness_error <= tol * (1 + 1e-3)
        errors.append(np.linalg.norm(attr.channels[frames] - ref, axis=1).max() / np.linalg.norm(ref, axis=1).max())
        assert errors[-1] <= 2 * tol, (tol, errors[-1])
        used = attr.steps_per_frame[frames]
        assert set(np.unique(used)) <= {8, 16, 32, 64, 128, 256, 512, 1024} and attr.steps == used.max()
    assert errors[0] > errors[1] > errors[2]
    assert attr.steps > 16


def test_steps_and_tol_together_are_refused_for_a_wrapped_module(net):
    wrapped = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv")
    with pytest.raises(ValueError, match=r"give steps \(a fixed quadrature\) or tol \(refined until it meets tol\), "
                                         r"not both; got steps=8 and tol=0.01"):
        nr.attribute(wrapped, stim(), steps=8, tol=1e-2)


def test_a_module_without_submodules_says_so():
    with pytest.raises(ValueError, match=r"first_layer must name a submodule of the module, and this Conv2d has none"):
        nr.wrap(nn.Conv2d(HISTORY, 2, 3), input="NTHW", history=HISTORY, size=SIZE, first_layer="")


class FirstFirst(nn.Module):
    """conv1, bn1 and the ReLU of a RetinaCNN as one layer: its output is RetinaCNN's rectified activation."""

    def __init__(self, model):
        super().__init__()
        self.conv, self.bn = model.conv1, model.bn1

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Staged(nn.Module):
    """A RetinaCNN run as first layer (conv1 + bn1 + ReLU) then the rest, so ``first`` names its activation."""

    def __init__(self, model):
        super().__init__()
        self.model, self.first = model, FirstFirst(model)

    def forward(self, x):
        return self.model.from_activation(self.first(x))


def tiny_retina_cnn(seed=2):
    torch.manual_seed(seed)
    model = nr.RetinaCNN(nr.ModelConfig(history=HISTORY, size=SIZE, kernels=(5, 3), channels=(4, 4), n_cells=2))
    with torch.no_grad():
        for bn in (model.bn1.bn, model.bn2.bn):
            bn.running_mean.normal_(0, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def full_field(frames=60, seed=5):
    """A full-field flicker (T, SIZE, SIZE): RetinaCNN's attribution sums space out (no maps, one uniform pool)."""
    level = np.random.default_rng(seed).normal(size=(frames, 1, 1)) * 2.0
    return np.broadcast_to(level, (frames, SIZE, SIZE)).astype(np.float32)


def test_the_reduction_of_a_wrapped_retina_cnn_equals_the_retina_cnns_own():
    """Drives from the wrapped first layer's outputs (a hook) equal RetinaCNN's from its rectified activation.

    On a full-field stimulus RetinaCNN's reduction pools each channel uniformly, as the generic path does,
    so the two reductions (one through FirstLayer's spatial sums, one through the module and a hook)
    must agree on the drives and the fitted circuit. The attributions differ (the wrapped one is to the
    rectified activation, RetinaCNN's to conv1's pre-activation), so every channel is kept in both
    (explain=1) and the drives are compared channel by channel.
    """
    model = tiny_retina_cnn()
    wrapped = nr.wrap(Staged(model), input="NTHW", history=HISTORY, size=SIZE, first_layer="first")
    assert wrapped.first_conv is None
    s, frames = full_field(), np.arange(HISTORY - 1, 60, 2)
    a = nr.attribute(wrapped, s, cell=1, steps=16, rule="gausslegendre", frames=frames)
    b = nr.attribute(model, s, cell=1, steps=16, rule="gausslegendre", frames=frames)
    assert b.invariance == "space" and a.maps is None and b.maps is None
    ra, rb = nr.reduce(a, explain=1.0), nr.reduce(b, explain=1.0)
    assert sorted(ra.kept) == sorted(rb.kept) == [0, 1, 2, 3] and ra.pools == rb.pools == ["uniform"]
    valid = slice(HISTORY - 1, None)
    da, db = ra.drives[valid][:, np.argsort(ra.kept)], rb.drives[valid][:, np.argsort(rb.kept)]
    np.testing.assert_allclose(da, db, atol=1e-5 * np.abs(db).max())
    np.testing.assert_allclose(ra.reduced_rates[valid], rb.reduced_rates[valid], rtol=1e-4, atol=1e-6)
    assert ra.explained_variance == pytest.approx(rb.explained_variance, abs=1e-4)
    assert ra.polarity == [None] * 4 and ra.kinetics == [None] * 4   # no kernels: omitted, not guessed
    assert [ra.label(c) for c in ra.kept] == [f"A{c} {'+' if rb.sign[c] > 0 else '-'}" for c in rb.kept]


def test_reduction_on_the_fast_path_pools_the_conv3d_outputs_with_the_attribution_maps(net):
    """d_cp(t) = Σ_u w_cpu o_cu(t): o the Conv3d's output (taken here by a hook), w the pool's map spread over
    the Conv3d's time axis with Σ|w| = 1; the circuit is softplus(Σ β d + β_0); labels from the kernels."""
    wrapped = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv")
    s = stim(frames=40, seed=6)
    attr = nr.attribute(wrapped, s, cell=0, steps=8)
    red = nr.reduce(attr, explain=0.99)
    frames = np.arange(HISTORY - 1, len(s))
    seen = []
    handle = net.core.conv.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    with torch.no_grad():
        net(windows_of(s, frames).unsqueeze(1))
    handle.remove()
    o = seen[0].double().numpy()                                         # (n, C, T', h, w)
    maps = attr.maps[attr.frames].astype(np.float64)                     # (n, C, h, w)
    assert red.pools == ["abs", "signed"]
    for p, m in enumerate([np.abs(maps).mean(0), maps.mean(0)]):
        w = m / np.abs(m).sum(axis=(1, 2), keepdims=True) / o.shape[2]   # spread over T'
        expected = np.einsum("nctij,cij->nc", o, w)[:, red.kept]
        np.testing.assert_allclose(red.drives[frames, :, p], expected, rtol=1e-4, atol=1e-6)
    z = np.einsum("nkp,kp->n", red.drives[frames].astype(np.float64), red.weights) + red.bias
    np.testing.assert_allclose(red.reduced_rates[frames], np.logaddexp(0, z), rtol=1e-4)
    labels = filter_labels(wrapped)
    assert red.polarity == labels["polarity"] and red.kinetics == labels["kinetics"]
    assert all(red.label(c).split()[1] in ("ON", "OFF") for c in red.kept)


def test_an_experiment_on_a_wrapped_retina_cnn_reads_out_the_retina_cnns_response():
    """The stimulus is built from the wrapped config (history, size); the model's readout is the RetinaCNN's."""
    from test_experiments import SMALL

    model = tiny_retina_cnn()
    wrapped = nr.wrap(Staged(model), input="NTHW", history=HISTORY, size=SIZE, first_layer="first")
    a = nr.experiments.run("latency", wrapped, cell=0, steps=4, max_frames=40, **SMALL["latency"])
    b = nr.experiments.run("latency", model, cell=0, steps=4, max_frames=40, **SMALL["latency"])
    np.testing.assert_array_equal(a.stimulus, b.stimulus)
    np.testing.assert_allclose(a.rates, b.rates, rtol=1e-5, equal_nan=True)
    for key in ("present", "spearman", "latency_range_ms"):
        assert a.readout[key] == pytest.approx(b.readout[key], rel=1e-4, nan_ok=True), key
    assert a.reduction is not None and np.isfinite(a.reduction.reduced_rates[HISTORY - 1:]).all()


def test_the_battery_runs_on_a_wrapped_core_readout_module(net):
    """Every experiment on an openretina-shaped module: rates are the module's own, the reduction is computed."""
    from test_experiments import SMALL

    from napari_retina.attribution._result import map_shape

    wrapped = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv")
    for name, params in SMALL.items():
        out = nr.experiments.battery(wrapped, 0, retina=None, names=[name], steps=4, max_frames=30, **params)
        res, row = out["results"][name], out["rows"][0]
        np.testing.assert_allclose(res.rates, nr.predict(wrapped, res.stimulus), rtol=1e-6, equal_nan=True)
        attr = res.attribution   # the protocol's invariance, as for a RetinaCNN: the maps summed along it
        assert res.stimulus.shape[1:] == (SIZE, SIZE), name
        assert (None if attr.maps is None else attr.maps.shape[1:]) == map_shape(4, 8, attr.invariance), name
        assert attr.invariance == {"osr": "space", "latency": "space"}.get(name, attr.invariance), name
        assert row["kept"] == [res.reduction.label(c) for c in res.reduction.kept] and row["kept"], name
        assert np.isfinite(row["explained_variance"]), name


def test_recovery_reads_a_wrapped_conv3d_kernels_and_refuses_a_generic_layer(net):
    from napari_retina.experiments.recovery import channel_filters

    wrapped = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv")
    f = channel_filters(wrapped, 2)
    kernel = net.core.conv.weight[2, 0].detach().double().numpy()        # (kt, k, k), index 0 = oldest
    np.testing.assert_allclose(f["temporal"], kernel[::-1].sum(axis=(1, 2)))
    generic = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.nonlin")
    with pytest.raises(TypeError, match=r"recovery needs the first layer's kernels, and the wrapped module's first "
                                        r"layer 'core.nonlin' is not a convolution of the stimulus"):
        nr.experiments.recovery_report(None, generic, channels=[0])


def test_an_experiment_on_something_that_is_not_a_model_says_what_it_takes():
    with pytest.raises(TypeError, match=r"model must be a RetinaCNN \(nr.load_model\) or a wrapped module "
                                        r"\(nr.wrap\), got Net"):
        nr.experiments.run("osr", Net())


class TupleFirst(Net):
    """A first layer that returns a tuple (as an LSTM does): its units cannot be attributed."""

    def __init__(self):
        super().__init__()
        self.pair = Pair()

    def forward(self, x):
        return super().forward(self.pair(x)[0])


class Pair(nn.Module):
    def forward(self, x):
        return x, x


def test_a_first_layer_that_returns_no_tensor_is_refused():
    with pytest.raises(ValueError, match=r"first_layer 'pair' must output a tensor \(N, channels, ...\) whose units "
                                         r"can be attributed; on one window it gave no tensor"):
        nr.wrap(TupleFirst().eval(), input="NCTHW", history=HISTORY, size=SIZE, first_layer="pair")


def test_the_analysis_of_the_generic_path_has_no_maps_and_a_reduction():
    """run_analysis (what the Analyze dock runs) on a layer that is not a convolution: traces, no maps."""
    from napari_retina.analysis import run_analysis

    torch.manual_seed(1)
    wrapped = nr.wrap(Net().eval(), input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.nonlin")
    s = stim(frames=20, seed=7)
    res = run_analysis(wrapped, s, cell=1, steps=4)
    ref = nr.attribute(wrapped, s, cell=1, steps=4)
    assert res.attribution.maps is None and res.maps is None
    np.testing.assert_array_equal(res.attribution.channels, ref.channels)
    assert res.reduction.kept == nr.reduce(ref).kept and res.reduction.pools == ["uniform"]


def test_an_asked_invariance_is_checked_and_sums_the_maps_as_for_a_retina_cnn(net):
    # it was ignored: full maps and invariance "none" whatever was asked, even on a stimulus that lacks it
    wrapped = nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv")
    field, frames = full_field(frames=30), [HISTORY, HISTORY + 7]
    full = nr.attribute(wrapped, field, cell=0, steps=8, frames=frames)
    assert full.invariance == "none" and full.maps.ndim == 4          # "auto" keeps full maps here
    space = nr.attribute(wrapped, field, cell=0, steps=8, frames=frames, invariance="space")
    assert space.invariance == "space" and space.maps is None
    np.testing.assert_allclose(space.channels[frames], full.channels[frames], rtol=1e-6)
    for axis, dim in (("y", 2), ("x", 3)):
        a = nr.attribute(wrapped, field, cell=0, steps=8, frames=frames, invariance=axis)
        assert a.invariance == axis and a.maps.shape[dim] == 1
        np.testing.assert_allclose(a.maps[frames], full.maps[frames].sum(axis=dim, keepdims=True),
                                   rtol=1e-5, atol=1e-7 * np.abs(full.maps[frames]).max())
    with pytest.raises(ValueError, match="invariance 'space' needs a spatially uniform stimulus"):
        nr.attribute(wrapped, stim(frames=30), cell=0, steps=8, frames=frames, invariance="space")
    with pytest.raises(ValueError, match="invariance"):
        nr.attribute(wrapped, field, cell=0, steps=8, invariance="sideways")


class Plain(nn.Module):
    """NTHW: conv (first layer) → act → conv2 → act2 → linear → softplus; ``act2`` may be ``act`` itself."""

    def __init__(self, shared=False, inplace=False):
        super().__init__()
        self.conv = nn.Conv2d(HISTORY, 4, 5, padding=2)
        self.act = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act2 = self.act if shared else nn.ReLU(inplace=inplace)
        self.lin = nn.Linear(4 * SIZE * SIZE, 2)

    def forward(self, x):
        return F.softplus(self.lin(self.act2(self.conv2(self.act(self.conv(x)))).flatten(1)))


def test_a_first_layer_that_runs_twice_per_pass_is_refused():
    """One activation module used after both convolutions: its output was replaced on both calls, giving
    attributions ~100x off with no word (completeness error 87), or a raw shape error."""
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"first_layer 'act' runs 2 times in one forward pass \(one module used for "
                                         r"several layers\), so its units cannot be told apart"):
        nr.wrap(Plain(shared=True).eval(), history=HISTORY, size=SIZE, first_layer="act")


@pytest.mark.parametrize("first_layer", ["conv", "conv2"], ids=["fast path", "generic path"])
def test_an_in_place_activation_after_the_first_layer_attributes_as_without(first_layer):
    """nn.ReLU(inplace=True) after the layer crashed attribution (an in-place change of the path's leaf); and
    the first layer's output taken by the hook was changed in place too. Reference: Captum on the same network
    without in-place activations."""
    torch.manual_seed(0)
    net = Plain(inplace=True).eval()
    reference = Plain().eval()
    reference.load_state_dict(net.state_dict())
    layer = dict(reference.named_modules())[first_layer]
    s, frames = stim(seed=3), [9, 13]
    attr = nr.attribute(nr.wrap(net, history=HISTORY, size=SIZE, first_layer=first_layer), s, cell=1, steps=8,
                        frames=frames)
    ref = captum(reference, layer, windows_of(s, frames), 1, 8, "gausslegendre", layout=lambda w: w)
    scale = float(ref.abs().sum(dim=(2, 3)).max())
    np.testing.assert_allclose(attr.channels[frames], ref.sum(dim=(2, 3)).numpy(), atol=2e-5 * scale)


def test_a_fully_connected_first_layer_attributes_its_units_and_reduces():
    """A Linear first layer (units (5,)) was accepted by wrap, then attribute failed with an IndexError."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(HISTORY * SIZE * SIZE, 5), nn.ReLU(), nn.Linear(5, 2),
                        nn.Softplus()).eval()
    wrapped = nr.wrap(net, history=HISTORY, size=SIZE, first_layer="1")
    s, frames = stim(frames=30, seed=4), [12, 20, 29]
    attr = nr.attribute(wrapped, s, cell=0, steps=16)
    ref = captum(net, net[1], windows_of(s, frames), 0, 16, "gausslegendre", layout=lambda w: w)
    np.testing.assert_allclose(attr.channels[frames], ref.numpy(), atol=2e-5 * float(ref.abs().max()))
    assert attr.maps is None and attr.channels.shape == (30, 5)
    red = nr.reduce(attr)
    assert 0 < red.explained_variance <= 1


class Head(nn.Module):
    """A conv first layer, then ``then`` applied to its output (N, 2, h, w)."""

    def __init__(self, then):
        super().__init__()
        self.conv = nn.Conv2d(HISTORY, 2, 3)
        self.then = then

    def forward(self, x):
        return self.then(self.conv(x))


@pytest.mark.parametrize("then, message", [
    (lambda z: F.softplus(z.detach().mean((2, 3))), r"rates must depend differentiably on first_layer 'conv'"),
    (lambda z: (z.mean((2, 3)) * 100).long(), r"floating-point rates .* it returned int64 \[1, 2\]"),
    (lambda z: z.mean((2, 3)).to(torch.complex64), r"floating-point rates .* it returned complex64 \[1, 2\]"),
    (lambda z: torch.log(z.std((2, 3))), r"rates on the all-zero \(mean-luminance\) window are \[-inf, -inf\]"),
], ids=["detached", "integer", "complex", "NaN at the baseline"])
def test_rates_that_cannot_be_attributed_are_refused_when_wrapping(then, message):
    """Each was accepted by wrap; attribute then failed in autograd, or blamed the stimulus for the NaN."""
    with pytest.raises(ValueError, match=message):
        nr.wrap(Head(then).eval(), history=HISTORY, size=SIZE, first_layer="conv")


def test_an_output_that_is_not_one_row_per_window_is_refused_on_every_batch():
    """A module returning (1, cells) for any batch passed the one-window probe; predict then spread its one row
    over the whole batch."""
    wrapped = nr.wrap(Head(lambda z: F.softplus(z.mean((0, 2, 3)))[None]).eval(), history=HISTORY, size=SIZE,
                      first_layer="conv")
    with pytest.raises(ValueError, match=r"must return floating-point rates of shape \(N, cells\) = \(7, 2\) on 7 "
                                         r"windows; it returned float32 \[1, 2\]"):
        nr.predict(wrapped, stim())


def test_a_gradient_that_is_zero_along_the_path_warns():
    """Rounded rates: every gradient is zero, the maps all zero while the response is not; only the
    completeness error (1.0) said so."""
    torch.manual_seed(0)
    wrapped = nr.wrap(Head(lambda z: F.softplus(torch.round(z.sum((2, 3))))).eval(), history=HISTORY, size=SIZE,
                      first_layer="conv")
    s = 3 * stim(frames=14, seed=5)
    with pytest.warns(nr.AccuracyWarning, match=r"misses tol 0.001: \d+ of 5 frames reached the 1024-point cap .*"
                                                r"the rates' gradient along the path is zero"):
        attr = nr.attribute(wrapped, s, cell=0)
    assert attr.completeness_error > 0.5


def test_nan_rates_on_a_stimulus_in_contrast_units_blame_the_module():
    """The sentence said the stimulus (largest |value| ~3) was 'probably far outside the contrast range'."""
    wrapped = nr.wrap(Head(lambda z: torch.log(1.0 - z.abs().amax((2, 3)))).eval(), history=HISTORY, size=SIZE,
                      first_layer="conv")
    with pytest.raises(ValueError, match=r"the wrapped module's rates are NaN or infinite on \d+ of 7 frames .*: the "
                                         r"stimulus is in contrast units \(largest \|value\| \d.*\), so the model "
                                         r"itself computes them .*; check the model on this stimulus"):
        nr.predict(wrapped, 3 * stim())


def test_cell_names_given_as_one_string_are_refused(net):
    with pytest.raises(TypeError, match=r"cell_names must be a list of names, one per output, got the string 'abc'"):
        nr.wrap(net, input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv", cell_names="abc")


class Preprocessed(Plain):
    """Plain with a step on the window before its first convolution: in place (``x.mul_``), or a clamp."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def forward(self, x):
        return super().forward(x.mul_(2.0) if self.step == "in place" else x.clamp(-6.0, 6.0))


@pytest.mark.parametrize("step", ["in place", "clamp"])
def test_a_module_that_changes_its_window_before_the_first_layer_attributes_as_captum(step):
    """The fast path (the layer's drive as the convolution of the window itself) was taken for both: the probe
    compared the layer's input with the window after the module had doubled both in place, and a clamp at 6 never
    touched the probe's values (largest 4.1). Attributions were 56% and 18% off with no word. Reference: Captum on
    the module as it is (a fresh window for each call, as an in-place step needs)."""
    torch.manual_seed(0)
    net = Preprocessed(step).eval()
    wrapped = nr.wrap(net, history=HISTORY, size=SIZE, first_layer="conv")
    assert wrapped.first_conv is None and wrapped.changes_input == (step == "in place")
    s, frames = 4 * stim(seed=3), [9, 13]   # a clamp at 6 cuts some of these contrasts
    attr = nr.attribute(wrapped, s, cell=1, steps=8, frames=frames)
    lig = LayerIntegratedGradients(lambda x: net(x.clone())[:, 1], net.conv)
    x = windows_of(s, frames)
    ref = lig.attribute(x, baselines=torch.zeros_like(x), n_steps=8, method="gausslegendre").detach()
    scale = float(ref.abs().sum(dim=(2, 3)).max())
    np.testing.assert_allclose(attr.channels[frames], ref.sum(dim=(2, 3)).numpy(), atol=2e-5 * scale)
    with torch.no_grad():
        expected = net(x.clone())[:, 1].numpy()
    np.testing.assert_allclose(attr.rates[frames], expected, rtol=1e-5)   # the windows were not changed
    np.testing.assert_array_equal(s, 4 * stim(seed=3))                      # nor was the caller's stimulus


class BatchMean(Plain):
    """The batch's mean window subtracted from each window (statistics over the batch dimension), amplified."""

    def forward(self, x):
        return super().forward(10 * (x - x.mean(0, keepdim=True)))


def test_rates_that_depend_on_the_other_windows_of_the_batch_are_refused():
    """A batch's mean subtracted: predict gave rates that changed with the batch size, with no word (an audit's
    module: 23% apart for batches of 4 and 64)."""
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"the wrapped module's rates for a window depend on the other windows of its "
                                         r"batch \(two windows run together and alone differ by up to .*\), so "
                                         r"predict and attribute would change with the batch size"):
        nr.wrap(BatchMean().eval(), history=HISTORY, size=SIZE, first_layer="conv")


def test_a_module_on_the_meta_device_is_one_sentence():
    with torch.device("meta"):
        net = Plain()
    with pytest.raises(ValueError, match=r"the wrapped module's weights are on the 'meta' device \(shapes without "
                                         r"values\); load them first"):
        nr.wrap(net, history=HISTORY, size=SIZE, first_layer="conv")


def test_a_weight_normed_first_layer_attributes_after_a_forward_pass_with_gradients():
    """The old torch.nn.utils.weight_norm keeps its weight as a tensor computed with autograd after a forward
    pass with gradients; copying the module (attribution works on a copy) raised torch's deepcopy error."""
    import warnings

    torch.manual_seed(0)
    net = Plain().eval()
    reference = Plain().eval()
    reference.load_state_dict(net.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # deprecated for parametrizations.weight_norm
        torch.nn.utils.weight_norm(net.conv)
    wrapped = nr.wrap(net, history=HISTORY, size=SIZE, first_layer="conv")
    net(torch.zeros(1, HISTORY, SIZE, SIZE))   # with gradients: net.conv.weight now has a grad_fn
    s, frames = stim(seed=4), [9, 12]
    attr = nr.attribute(wrapped, s, cell=0, steps=8, frames=frames)
    ref = captum(reference, reference.conv, windows_of(s, frames), 0, 8, "gausslegendre", layout=lambda w: w)
    scale = float(ref.abs().sum(dim=(2, 3)).max())
    np.testing.assert_allclose(attr.channels[frames], ref.sum(dim=(2, 3)).numpy(), atol=2e-5 * scale)


@pytest.mark.parametrize("names, message", [
    ([None, None], r"cell_names must be a list of str, got \[None, None\]"),
    (["a"], r"the wrapped module has 2 cells but 1 cell names"),
])
def test_bad_cell_names_read_as_a_sentence(names, message):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=f"^{message}$"):
        nr.wrap(Plain().eval(), history=HISTORY, size=SIZE, first_layer="conv", cell_names=names)


def test_the_reduction_never_hooks_the_users_module_itself():
    """It hooked the user's first layer to read its outputs, so another thread's forward pass of the same module
    (the Experiments dock's predict while Analyze reduces) fired the hook: torch shape errors, or a reduction
    made of the other run's outputs (EV 0.04 against 0.16). Reference: every hook goes on a copy."""
    import types

    torch.manual_seed(1)
    wrapped = nr.wrap(Net().eval(), input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.nonlin")
    attr = nr.attribute(wrapped, stim(frames=20, seed=7), cell=1, steps=4)
    layer, hooked = wrapped.layer, []

    def spy(self, hook, *args, **kwargs):
        hooked.append(self)
        return nn.Module.register_forward_hook(self, hook, *args, **kwargs)

    layer.register_forward_hook = types.MethodType(spy, layer)   # a copy's is bound to the copy
    red = nr.reduce(attr)
    assert hooked and all(module is not layer for module in hooked)
    assert not layer._forward_hooks and 0 < red.explained_variance <= 1


# ----------------------------------------------------------------------------- batch size from counted flops


class _ConvNet(nn.Module):
    """(N, 10, 12, 12) -> conv 10->6 (5x5) -> ReLU -> linear -> softplus: 2 cells."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(10, 6, 5)
        self.relu = nn.ReLU()
        self.out = nn.Linear(6 * 8 * 8, 2)

    def forward(self, x):
        return F.softplus(self.out(self.relu(self.conv(x)).flatten(1)))


def test_the_flops_of_one_window_are_counted_at_wrap():
    w = nr.wrap(_ConvNet(), history=10, size=12, first_layer="conv")
    conv = 2 * (6 * 8 * 8) * (10 * 5 * 5)          # 2 per multiply-add: outputs x inputs each sums
    linear = 2 * 2 * (6 * 8 * 8)
    assert w.config.flops == conv + linear


@pytest.mark.parametrize("flops, expected", [(0, 256), (197_137_152, 256), (250_000_000, 256),
                                             (300_000_000, 128), (1_448_907_264, 32), (10 ** 12, 1)])
def test_a_heavy_module_gets_fewer_windows_per_batch(flops, expected):
    """197 MFLOP is the shipped model's window (256 per batch); the tester's Conv3d net (1.45 GFLOP a window)
    took ~6 s a batch of 256, so Cancel waited that long."""
    from napari_retina._wrap import WrapConfig

    cfg = WrapConfig(history=10, size=12, n_cells=1, cell_names=["c"], input="NTHW", first_layer="conv", flops=flops)
    assert cfg.batch_size == expected


def test_progress_comes_every_batch_and_the_rates_do_not_depend_on_the_batch(monkeypatch):
    import napari_retina._wrap as wrap_module

    net = _ConvNet()
    monkeypatch.setattr(wrap_module, "BATCH_FLOPS", 8 * 193_536)   # 193,536 FLOP a window: 8 windows a batch
    w = nr.wrap(net, history=10, size=12, first_layer="conv")
    assert w.config.batch_size == 8
    stim = nr.stimuli.white_noise(frames=9 + 20, size=12, seed=3)
    reports = []
    rates = nr.predict(w, stim, progress=lambda done, total: reports.append((done, total)))
    assert reports == [(0, 20), (8, 20), (16, 20), (20, 20)]
    np.testing.assert_array_equal(rates, nr.predict(w, stim, batch_size=8))
    np.testing.assert_allclose(rates, nr.predict(w, stim, batch_size=256), rtol=1e-6, atol=1e-7)
