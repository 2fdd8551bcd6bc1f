"""nr.attribute: integrated gradients to conv1 units.

References are independent of the code under test: Captum's
LayerIntegratedGradients, float64 many-step integrals, float64 central finite
differences, predict() for the response, and sums of the full maps.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina.attribution import _adaptive as adaptive_module
from napari_retina.attribution import _attribute as attribute_module
from napari_retina.attribution import CAPTUM_RULES, MAX_STEPS, quadrature
from napari_retina.model import ModelConfig, RetinaCNN
from napari_retina._predict import predict

HIST, SIZE = 6, 14
CFG = dict(history=HIST, size=SIZE, channels=(3, 4), kernels=(5, 3), n_cells=3)


def random_model(seed=0, bn="unit", **kw) -> RetinaCNN:
    """A random BN-CNN with non-trivial batch-norm statistics (so ReLUs switch)."""
    torch.manual_seed(seed)
    m = RetinaCNN(ModelConfig(**{**CFG, "bn": bn, **kw}))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                mod.running_mean.normal_(0, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.3)
    return m.eval()


def noise(T=16, seed=1, size=SIZE):
    return np.random.default_rng(seed).standard_normal((T, size, size)).astype(np.float32)


def windows(stim, history=HIST):
    x = torch.from_numpy(stim)
    return x.unfold(0, history, 1).permute(0, 3, 1, 2).contiguous()


def captum_maps(model, stim, cells, steps, rule):
    captum = pytest.importorskip("captum.attr")
    x = windows(stim, model.config.history)
    lig = captum.LayerIntegratedGradients(lambda inp: model(inp)[:, cells].sum(1), model.first_layer_module)
    out = lig.attribute(x, baselines=torch.zeros_like(x), n_steps=steps, method=rule, internal_batch_size=64)
    return out.detach().numpy().astype(np.float64)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture(scope="module")
def model64():
    return copy.deepcopy(random_model()).double()


# --------------------------------------------------------------------------- Captum


@pytest.mark.parametrize("rule", CAPTUM_RULES)
def test_equals_captum_layer_integrated_gradients(model, rule):
    stim = noise()
    cells = [0, 2]
    attr = nr.attribute(model, stim, cell=cells, steps=12, rule=rule, invariance="none")
    ref = captum_maps(model, stim, cells, 12, rule)
    got = attr.maps[HIST - 1 :].astype(np.float64)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert np.isnan(attr.maps[: HIST - 1]).all()


def test_quadrature_matches_captum():
    am = pytest.importorskip("captum.attr._utils.approximation_methods")
    for rule in CAPTUM_RULES:
        for n in (2, 7, 50):
            step_sizes, alphas = am.approximation_parameters(rule)
            a, w = quadrature(rule, n)
            assert np.array_equal(a, np.asarray(alphas(n)))
            assert np.array_equal(w, np.asarray(step_sizes(n)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quadrature_tensors_equal_quadrature(dtype):
    """The points made on the device (kink rules) are quadrature()'s values, to the last bit."""
    from napari_retina.attribution._quadrature import RULES, quadrature_tensors

    for rule in RULES:
        for n in (1, 3, 7, 8, 12, 50, 1000):
            if rule == "riemann_trapezoid" and n < 2:
                continue
            a, w = quadrature_tensors(rule, n, dtype, torch.device("cpu"))
            a_ref, w_ref = (torch.as_tensor(v, dtype=dtype) for v in quadrature(rule, n))
            assert a.dtype == w.dtype == dtype and a.shape == w.shape == (n,)
            assert torch.equal(a, a_ref) and torch.equal(w, w_ref), (rule, n)


def test_cell_all_is_summed_response(model):
    stim = noise(T=10)
    attr = nr.attribute(model, stim, cell="all", steps=8, rule="gausslegendre", invariance="none")
    ref = captum_maps(model, stim, [0, 1, 2], 8, "gausslegendre")
    np.testing.assert_allclose(attr.maps[HIST - 1 :], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert attr.cells == [0, 1, 2]


# --------------------------------------------------------------------------- accuracy


def reference(model64, stim, cells, frames=None):
    """float64, 2,000 midpoint steps: the integral to ~1e-6 for the tiny model."""
    return nr.attribute(model64, stim, cell=cells, steps=2000, rule="riemann_middle", invariance="none",
                        frames=frames, batch_size=4096)


def test_error_falls_with_steps(model, model64):
    stim = noise(T=10, seed=3)
    ref = reference(model64, stim, [1]).maps[HIST - 1 :].astype(np.float64)
    for rule in ("kink_midpoint", "gausslegendre", "riemann_right"):
        errs = [rel(nr.attribute(model, stim, cell=1, steps=n, rule=rule, invariance="none").maps[HIST - 1 :], ref)
                for n in (4, 16, 64, 256)]
        assert all(b < a for a, b in zip(errs, errs[1:])), (rule, errs)
        assert errs[-1] < errs[0] / 20 and errs[-1] < 5e-3, (rule, errs)


def test_default_no_worse_than_captum_default(model, model64):
    stim = noise(T=12, seed=4)
    ref = reference(model64, stim, [0]).maps[HIST - 1 :].astype(np.float64)
    default = nr.attribute(model, stim, cell=0, invariance="none")
    captum_default = nr.attribute(model, stim, cell=0, steps=50, rule="gausslegendre", invariance="none")
    assert rel(default.maps[HIST - 1 :], ref) <= rel(captum_default.maps[HIST - 1 :], ref)


def test_completeness(model):
    stim = noise(T=14, seed=5)
    attr = nr.attribute(model, stim, cell=[0, 1], steps=64)
    rates = predict(model, stim)[:, [0, 1]].sum(1)
    with torch.no_grad():
        base = float(model(torch.zeros(1, HIST, SIZE, SIZE))[0, [0, 1]].sum())
    np.testing.assert_allclose(attr.rates[HIST - 1 :], rates[HIST - 1 :], rtol=1e-5, atol=1e-6)
    assert attr.baseline_rate == pytest.approx(base, rel=1e-6)
    np.testing.assert_allclose(attr.response, attr.rates - attr.baseline_rate, rtol=1e-5, atol=1e-6)
    t = attr.frames
    gap = np.abs(attr.maps[t].astype(np.float64).sum((1, 2, 3)) - (rates[t] - base)).max()
    expected = gap / np.abs(rates[t] - base).max()
    assert attr.completeness_error == pytest.approx(expected, rel=1e-3, abs=1e-6)
    np.testing.assert_allclose(attr.channels[t], attr.maps[t].sum((2, 3)), rtol=1e-5, atol=1e-6)
    assert attr.completeness_error < 0.02


def test_gradient_matches_finite_differences():
    """steps=1, right endpoint: A = d · ∂F/∂z at z = b + d, so ∂F/∂z = A / d."""
    m64 = random_model(seed=7).double()
    stim = noise(T=HIST, seed=8)
    attr = nr.attribute(m64, stim, cell=2, steps=1, rule="riemann_right", invariance="none")
    x = windows(stim).double()
    with torch.no_grad():
        z = m64.first_layer(x)[0]
        d = z - m64.conv1.bias.view(-1, 1, 1)
    grad_code = attr.maps[HIST - 1].astype(np.float64) / d.numpy()
    rng = np.random.default_rng(0)
    flat = z.flatten()
    units = rng.choice(flat.numel(), 40, replace=False)
    eps = 1e-6
    for u in units:
        zp, zm = flat.clone(), flat.clone()
        zp[u] += eps
        zm[u] -= eps
        with torch.no_grad():
            fp = m64.from_first_layer(zp.view(1, *z.shape))[0, 2]
            fm = m64.from_first_layer(zm.view(1, *z.shape))[0, 2]
        fd = float(fp - fm) / (2 * eps)
        got = grad_code.flatten()[u]
        if abs(float(d.flatten()[u])) > 1e-3:  # A / d is well conditioned
            assert got == pytest.approx(fd, rel=1e-4, abs=1e-7), u


# --------------------------------------------------------------------------- invariance


def bar_y(T=14, seed=9):  # uniform along y, varies along x
    f = np.random.default_rng(seed).standard_normal((T, 1, SIZE)).astype(np.float32)
    return np.repeat(f, SIZE, axis=1)


def bar_x(T=14, seed=10):  # uniform along x, varies along y
    f = np.random.default_rng(seed).standard_normal((T, SIZE, 1)).astype(np.float32)
    return np.repeat(f, SIZE, axis=2)


def flashes(T=14, seed=11):
    f = np.random.default_rng(seed).standard_normal((T, 1, 1)).astype(np.float32)
    return np.broadcast_to(f, (T, SIZE, SIZE)).copy()


@pytest.mark.parametrize(
    "make, inv, axes",
    [(flashes, "space", None), (bar_y, "y", 2), (bar_x, "x", 3)],
)
def test_invariance_equals_sums_of_full_maps(model, make, inv, axes):
    stim = make()
    full = nr.attribute(model, stim, cell=1, steps=10, rule="kink_midpoint", invariance="none")
    red = nr.attribute(model, stim, cell=1, steps=10, rule="kink_midpoint", invariance="auto")
    assert red.invariance == inv
    t = full.frames
    tol = 1e-4 * np.abs(full.channels[t]).max()
    np.testing.assert_allclose(red.channels[t], full.maps[t].sum((2, 3)), rtol=1e-4, atol=tol)
    if axes is None:
        assert red.maps is None
    else:
        np.testing.assert_allclose(red.maps[t], full.maps[t].sum(axes, keepdims=True), rtol=1e-4, atol=tol)
        assert np.isnan(red.maps[: HIST - 1]).all()
    np.testing.assert_allclose(red.rates[t], full.rates[t], rtol=1e-5, atol=1e-6)


def test_auto_on_noise_is_none(model):
    assert nr.attribute(model, noise(T=HIST), steps=2).invariance == "none"


def test_explicit_weaker_invariance_allowed(model):
    stim = flashes()
    a = nr.attribute(model, stim, steps=4, invariance="y")
    b = nr.attribute(model, stim, steps=4, invariance="space")
    assert a.maps.shape == (len(stim), 3, 1, SIZE - 4)
    t = a.frames
    np.testing.assert_allclose(a.channels[t], b.channels[t], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- frames, shapes, progress


def test_frames_subset(model):
    stim = noise(T=20, seed=12)
    full = nr.attribute(model, stim, steps=6, invariance="none")
    part = nr.attribute(model, stim, steps=6, invariance="none", frames=[7, 12, -1])
    assert list(part.frames) == [7, 12, 19]
    np.testing.assert_allclose(part.maps[part.frames], full.maps[part.frames], rtol=1e-5, atol=1e-6)
    rest = np.setdiff1d(np.arange(20), part.frames)
    assert np.isnan(part.maps[rest]).all() and np.isnan(part.channels[rest]).all()
    assert np.isnan(part.rates[rest]).all() and np.isnan(part.response[rest]).all()
    sl = nr.attribute(model, stim, steps=6, invariance="none", frames=slice(10, 14))
    assert list(sl.frames) == [10, 11, 12, 13]


def test_fields_and_dtypes(model):
    stim = noise(T=8)
    a = nr.attribute(model, stim, cell=1, steps=3, rule="riemann_middle")
    assert a.maps.dtype == np.float32 and a.maps.shape == (8, 3, SIZE - 4, SIZE - 4)
    assert a.channels.dtype == np.float32 and a.channels.shape == (8, 3)
    assert a.response.shape == a.rates.shape == (8,)
    assert a.cells == [1] and a.steps == 3 and a.rule == "riemann_middle" and a.invariance == "none"
    assert a.offset == 2 and a.history == HIST and a.stimulus.shape == stim.shape
    assert isinstance(a.baseline_rate, float) and a.model is model


def test_batch_size_does_not_change_result(model):
    stim = noise(T=12, seed=13)
    a = nr.attribute(model, stim, steps=7, batch_size=1)
    b = nr.attribute(model, stim, steps=7, batch_size=1000)
    np.testing.assert_allclose(a.maps[a.frames], b.maps[b.frames], rtol=1e-5, atol=1e-7)


def test_bn_channel_and_none(model):
    stim = noise(T=9)
    for bn in ("channel", "none"):
        m = random_model(seed=3, bn=bn)
        got = nr.attribute(m, stim, cell=0, steps=5, rule="gausslegendre", invariance="none")
        ref = captum_maps(m, stim, [0], 5, "gausslegendre")
        np.testing.assert_allclose(got.maps[HIST - 1 :], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_progress_and_cancel(model):
    calls = []
    nr.attribute(model, noise(T=20), steps=4, batch_size=8, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 15) and calls[-1] == (15, 15) and len(calls) > 2
    token = nr.CancelToken()
    token.cancel()
    with pytest.raises(nr.Cancelled):
        nr.attribute(model, noise(T=20), steps=4, progress=token.wrap())


def _two_frames_equal_captum(model):
    """Cell 0's maps (8 riemann_middle steps) on a noise movie's first two full-history frames equal Captum's;
    returns (stimulus, frames)."""
    cfg = model.config
    stim = np.random.default_rng(0).standard_normal((cfg.history + 1, cfg.size, cfg.size)).astype(np.float32)
    frames = [cfg.history - 1, cfg.history]
    got = nr.attribute(model, stim, cell=0, steps=8, rule="riemann_middle", invariance="none", frames=frames)
    captum = captum_maps(model, stim, [0], 8, "riemann_middle")
    np.testing.assert_allclose(got.maps[frames], captum, rtol=1e-4, atol=1e-4 * np.abs(captum).max())
    return stim, frames


def test_trained_model():
    try:
        model = nr.load_model()
    except (FileNotFoundError, ValueError) as exc:
        pytest.skip(f"no default model: {exc}")
    stim, frames = _two_frames_equal_captum(model)
    ref = nr.attribute(copy.deepcopy(model).double(), stim, cell=0, steps=1000, rule="riemann_middle",
                       invariance="none", frames=frames, batch_size=512)
    default = nr.attribute(model, stim, cell=0, frames=frames)
    gl50 = nr.attribute(model, stim, cell=0, steps=50, rule="gausslegendre", frames=frames)
    r = ref.maps[frames].astype(np.float64)
    assert rel(default.maps[frames], r) <= max(rel(gl50.maps[frames], r), 1e-4)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(cell=3), ValueError, "cell"),
        (dict(cell=-1), ValueError, "cell"),
        (dict(cell=[0, 5]), ValueError, "cell"),
        (dict(cell="some"), ValueError, "cell"),
        (dict(cell=1.5), TypeError, "cell"),
        (dict(steps=0), ValueError, "steps"),
        (dict(steps=2.5), TypeError, "steps"),
        (dict(steps=10_001), ValueError, r"steps must be in \[1, 10000\], got 10001"),
        (dict(normalize="yes"), ValueError, "normalize must be"),
        (dict(steps=1, rule="riemann_trapezoid"), ValueError, "trapezoid"),
        (dict(rule="simpson"), ValueError, "rule"),
        (dict(invariance="time"), ValueError, "invariance"),
        (dict(frames=[3, 40]), ValueError, "inside the movie"),
        (dict(frames=[0]), ValueError, "history"),
        (dict(batch_size=0), ValueError, "batch_size"),
    ],
)
def test_bad_arguments(model, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        nr.attribute(model, noise(T=10), **kwargs)


@pytest.mark.parametrize(
    "make, inv, axis",
    [(noise, "space", "y and x"), (bar_y, "space", "x"), (bar_x, "space", "y"),
     (bar_y, "x", "along x"), (bar_x, "y", "along y"), (noise, "y", "along y")],
)
def test_missing_invariance_names_axis(model, make, inv, axis):
    with pytest.raises(ValueError, match=axis):
        nr.attribute(model, make(), invariance=inv, steps=2)


@pytest.mark.parametrize(
    "stim, exc, match",
    [
        (np.zeros((10, SIZE)), ValueError, "dimension"),
        (np.zeros((10, SIZE, SIZE, 3)), ValueError, "RGB"),
        (np.zeros((3, SIZE, SIZE), np.float32), ValueError, "history"),
        (np.zeros((10, SIZE + 2, SIZE), np.float32), ValueError, "crop"),
        (np.full((10, SIZE, SIZE), np.nan, np.float32), ValueError, "finite"),
        (np.zeros((0, SIZE, SIZE)), ValueError, "empty|history"),
        (np.zeros((10, SIZE, SIZE), bool), TypeError, "dtype"),
        ("movie.tif", TypeError, "array"),
    ],
)
def test_bad_stimulus(model, stim, exc, match):
    with pytest.raises(exc, match=match):
        nr.attribute(model, stim)


def test_not_a_model():
    with pytest.raises(TypeError, match="RetinaCNN"):
        nr.attribute(object(), noise())


def test_crop(model):
    big = noise(T=8, size=SIZE + 4)
    a = nr.attribute(model, big, steps=3, crop=(1, 2))
    b = nr.attribute(model, big[:, 1 : 1 + SIZE, 2 : 2 + SIZE], steps=3)
    np.testing.assert_allclose(a.maps[a.frames], b.maps[b.frames], rtol=1e-6)


@pytest.mark.parametrize("crop,origin", [(None, (0, 0)), ((1, 2), (1, 2)), ("3,0", (3, 0)), ("center", (2, 1))])
def test_crop_origin_says_where_the_window_sits_in_the_input(model, crop, origin):
    """Map pixel (i, j) lies on input pixel (i + offset + y0, j + offset + x0)."""
    frame = (SIZE, SIZE) if crop is None else (SIZE + 4, SIZE + 3)
    stim = np.random.default_rng(3).standard_normal((8, *frame)).astype(np.float32)
    a = nr.attribute(model, stim, steps=2, crop=crop)
    assert a.crop_origin == origin
    y0, x0 = origin
    np.testing.assert_array_equal(a.stimulus, stim[:, y0 : y0 + SIZE, x0 : x0 + SIZE])


def test_to_dict_holds_what_is_written_and_writes(model, tmp_path):
    """Every field but the stimulus and the model; arrays stay arrays, the rest plain Python."""
    big = np.random.default_rng(3).standard_normal((8, SIZE + 2, SIZE)).astype(np.float32)
    a = nr.attribute(model, big, cell=[0, 2], steps=3, crop="center")
    d = a.to_dict()
    assert set(d) == {"maps", "channels", "response", "rates", "baseline_rate", "completeness_error", "cells",
                      "steps", "rule", "invariance", "frames", "offset", "history", "crop_origin", "tol",
                      "steps_per_frame", "units", "frame_ms", "pixel_um", "input_pixel_um", "input_frame_ms"}
    # a scientist's audit: a saved attribution said no unit, nor the size of the frames and pixels it counts
    assert d["units"].startswith("spikes per 10 ms bin") and (d["frame_ms"], d["pixel_um"]) == (10.0, 55.0)
    for key in ("maps", "channels", "response", "rates", "frames", "cells", "steps_per_frame"):
        np.testing.assert_array_equal(d[key], np.asarray(getattr(a, key)))
    assert d["crop_origin"].tolist() == [1, 0] and d["input_pixel_um"].tolist() == [55.0, 55.0]
    assert d["input_frame_ms"] == 10.0
    assert type(d["baseline_rate"]) is float and type(d["steps"]) is int and d["rule"] == "kink_midpoint"
    assert d["tol"] is None and d["steps_per_frame"].tolist() == [0] * 5 + [3] * 3
    adaptive = nr.attribute(model, big, cell=[0, 2], crop="center").to_dict()
    assert type(adaptive["tol"]) is float and adaptive["steps_per_frame"].dtype == np.int64
    full_field = nr.attribute(model, np.ones((8, SIZE, SIZE), np.float32), steps=2)
    assert "maps" not in full_field.to_dict() and full_field.to_dict()["invariance"] == "space"
    for suffix in (".h5", ".npz"):
        nr.io.write_results(tmp_path / f"a{suffix}", {"attribution": d, "adaptive": adaptive})
    with np.load(tmp_path / "a.npz") as z:
        np.testing.assert_array_equal(z["attribution/maps"], a.maps)


def test_repeated_windows_equal_direct_computation(model):
    """A periodic flash train repeats its windows; results equal a frame-by-frame run."""
    period = np.array([1.5, 0, 0, -2.0, 0], np.float32)
    stim = np.broadcast_to(np.tile(period, 6)[:, None, None], (30, SIZE, SIZE)).copy()
    a = nr.attribute(model, stim, cell=0, steps=6, rule="gausslegendre")
    assert a.invariance == "space"
    for t in (HIST - 1, 17, 29):
        one = nr.attribute(model, stim, cell=0, steps=6, rule="gausslegendre", frames=[t])
        np.testing.assert_allclose(a.channels[t], one.channels[t], rtol=1e-6, atol=1e-7)
        assert a.rates[t] == pytest.approx(one.rates[t], rel=1e-6)
    ref = captum_maps(model, stim, [0], 6, "gausslegendre").sum((2, 3))
    np.testing.assert_allclose(a.channels[HIST - 1 :], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_repeated_windows_are_filled_in_chunks_as_one_copy_fills_them(model):
    """The maps of repeated windows were copied through a temporary the size of every frame's maps (2.6 GB for a
    32,000-frame flash train); in chunks, in place, the same values (and a tensor too)."""
    import tracemalloc

    from napari_retina._frames import fill_repeats, unique_windows

    period = np.array([1.5, 0, 0, -2.0, 0, 0.5, 0], np.float32)
    stim = np.broadcast_to(np.tile(period, 60)[:, None, None], (420, SIZE, SIZE)).copy()
    idx = np.arange(HIST - 1, len(stim))
    todo, inverse = unique_windows(stim, idx, HIST)
    assert len(todo) < len(idx) / 10
    rng = np.random.default_rng(5)
    maps = np.full((len(stim), 3, 40, 40), np.nan, np.float32)
    maps[todo] = rng.standard_normal((len(todo), 3, 40, 40)).astype(np.float32)
    expected = maps.copy()
    expected[idx] = expected[todo][inverse]
    for chunk in (1, 4800, 48000):   # values: a frame at a time (4,800 values), 10 frames
        got = maps.copy()
        tracemalloc.start()
        try:
            fill_repeats(got, idx, todo, inverse, chunk_values=chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert np.array_equal(got, expected, equal_nan=True) and peak < 0.1 * maps.nbytes, (chunk, peak)
    tensor = torch.from_numpy(maps.copy())
    fill_repeats(tensor, idx, todo, inverse, chunk_values=4800)
    assert np.array_equal(tensor.numpy(), expected, equal_nan=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("invariance", ["none", "space"])
def test_gpu_attribution_matches_cpu(model, invariance):
    rng = np.random.default_rng(11)
    stim = rng.standard_normal((HIST + 30, SIZE, SIZE)).astype(np.float32)
    if invariance == "space":
        stim = np.broadcast_to(stim[:, :1, :1], stim.shape).copy()
    # fixed steps: the same points on both devices (the adaptive rule may stop a borderline frame one level apart)
    cpu = nr.attribute(model, stim, cell=[0, 2], steps=8, invariance=invariance, device="cpu")
    gpu = nr.attribute(model, stim, cell=[0, 2], steps=8, invariance=invariance, device="cuda")
    ok = ~np.isnan(cpu.channels[:, 0])
    scale = np.abs(cpu.channels[ok]).max()
    np.testing.assert_allclose(gpu.channels[ok], cpu.channels[ok], atol=1e-4 * scale, rtol=1e-3)
    np.testing.assert_allclose(gpu.response[ok], cpu.response[ok], atol=1e-5, rtol=1e-4)
    if cpu.maps is not None:
        np.testing.assert_allclose(gpu.maps[ok], cpu.maps[ok], atol=1e-4 * np.abs(cpu.maps[ok]).max(), rtol=1e-3)
    # a small difference of large sums: float32 (and TF32 convolutions) rounding moves it by ~3e-5
    assert gpu.completeness_error == pytest.approx(cpu.completeness_error, abs=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("invariance", ["none", "space"])
def test_gpu_adaptive_meets_tol_and_agrees_with_cpu(model, invariance):
    """The default (tol) on the GPU: completeness within tol, maps within the tolerance of the CPU's."""
    rng = np.random.default_rng(12)
    stim = rng.standard_normal((HIST + 30, SIZE, SIZE)).astype(np.float32)
    if invariance == "space":
        stim = np.broadcast_to(stim[:, :1, :1], stim.shape).copy()
    tol = 1e-3
    cpu = nr.attribute(model, stim, cell=[0, 2], tol=tol, invariance=invariance, device="cpu")
    gpu = nr.attribute(model, stim, cell=[0, 2], tol=tol, invariance=invariance, device="cuda")
    assert gpu.completeness_error <= tol and cpu.completeness_error <= tol
    ok = gpu.frames
    assert rel(gpu.channels[ok].astype(np.float64), cpu.channels[ok].astype(np.float64)) <= 2 * tol
    if cpu.maps is not None:
        assert rel(gpu.maps[ok].astype(np.float64), cpu.maps[ok].astype(np.float64)) <= 2 * tol


# --------------------------------------------------------------------------- steps bound, completeness floor, non-finite


def test_max_steps_is_accepted(model):
    assert MAX_STEPS == 10_000
    attr = nr.attribute(model, noise(T=HIST), steps=MAX_STEPS, rule="riemann_middle")
    assert attr.steps == MAX_STEPS and attr.completeness_error < 1e-3


def reference_completeness(attr, floor_eps=256.0):
    """The documented formula, recomputed in float64 from the attribution's arrays."""
    t = attr.frames
    resp = attr.rates[t].astype(np.float64) - attr.baseline_rate
    gap = np.abs(attr.channels[t].astype(np.float64).sum(1) - resp).max()
    level = max(abs(attr.baseline_rate), np.abs(attr.rates[t].astype(np.float64)).max(), 1.0)
    return gap, np.abs(resp).max(), floor_eps * 2.0 ** -23 * level


def test_completeness_error_is_finite_and_small_for_a_near_zero_stimulus(model):
    attr = nr.attribute(model, np.full((HIST + 4, SIZE, SIZE), 1e-8, np.float32))
    gap, scale, floor = reference_completeness(attr)
    assert scale < floor  # the response is at rounding level: the floor decides
    assert np.isfinite(attr.completeness_error) and attr.completeness_error < 1e-2
    assert attr.completeness_error == pytest.approx(gap / floor, rel=1e-6)


def test_completeness_error_is_unchanged_for_a_normal_stimulus(model):
    attr = nr.attribute(model, noise(T=12, seed=9), cell=[0, 2])
    gap, scale, floor = reference_completeness(attr)
    assert scale > 100 * floor  # far above the floor: the plain relative error
    assert attr.completeness_error == pytest.approx(gap / scale, rel=1e-6)


def test_non_finite_rates_are_an_error(model):
    with pytest.warns(nr.StimulusUnitsWarning):
        with pytest.raises(ValueError, match=r"the model's rates are NaN or infinite on 5 of 5 frames"):
            nr.attribute(model, np.full((HIST + 4, SIZE, SIZE), 1e38, np.float32))


def test_non_finite_attributions_are_an_error(model, monkeypatch):
    """Finite rates with gradients that overflowed must not come back as an Attribution."""
    integrate = attribute_module.integrate_chunk

    def nan_gradients(*args, **kwargs):
        G, rates = integrate(*args, **kwargs)
        return G * float("nan"), rates

    monkeypatch.setattr(attribute_module, "integrate_chunk", nan_gradients)
    with pytest.raises(ValueError, match=r"the attributions are NaN or infinite on 5 of 5 frames"):
        nr.attribute(model, noise(T=HIST + 4), steps=4)


def test_non_finite_maps_are_an_error_and_an_overflowing_sum_is_not(model, monkeypatch):
    """The maps are checked by their running sum on the device: a NaN in one frame's maps (channels finite) is
    found and counted on the host; finite maps whose sum overflows float32 come back as they are."""
    reduce_maps = attribute_module.reduce_maps
    poke = {}

    def poked(A, invariance):
        red = reduce_maps(A, invariance).clone()
        red[poke["frame"], 0, 0, 0] = poke["value"]
        return red

    monkeypatch.setattr(attribute_module, "reduce_maps", poked)
    stim = noise(T=HIST + 4)
    poke.update(frame=2, value=float("nan"))
    with pytest.raises(ValueError, match=r"the attribution maps are NaN or infinite on 1 of 5 frames with a full history "
                                         rf"\(first at frame {HIST + 1}\)"):
        nr.attribute(model, stim, steps=4, invariance="none")
    poke.update(frame=slice(None), value=3e38)  # finite, but 5 of them sum past float32's largest value
    attr = nr.attribute(model, stim, steps=4, invariance="none")
    assert np.all(attr.maps[attr.frames, 0, 0, 0] == np.float32(3e38))


def test_non_finite_attributions_stop_the_refinement(model, monkeypatch):
    """With tol, NaN gradients are reported after the first refinement, not refined up to the cap."""
    levels = []
    integrate = adaptive_module.path_integral

    def nan_gradients(head, c, a0, rule, steps, *args):
        levels.append(steps)
        return integrate(head, c, a0, rule, steps, *args) * float("nan")

    monkeypatch.setattr(adaptive_module, "path_integral", nan_gradients)
    with pytest.raises(ValueError, match=r"the attributions are NaN or infinite on 5 of 5 frames"):
        nr.attribute(model, noise(T=HIST + 4), tol=1e-3)
    assert levels == [4, 8]


def test_normalize_zscores_raw_float_stacks(model):
    raw = np.random.default_rng(3).integers(0, 256, (HIST + 4, SIZE, SIZE)).astype(np.float32)
    x = raw.astype(np.float64)
    contrast = ((x - x.mean()) / x.std()).astype(np.float32)
    with pytest.warns(nr.StimulusUnitsWarning, match="normalize='zscore'"):
        nr.attribute(model, raw, steps=2)
    a = nr.attribute(model, raw, steps=2, normalize="zscore")
    b = nr.attribute(model, contrast, steps=2)
    np.testing.assert_allclose(a.channels[a.frames], b.channels[b.frames], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- accuracy by tolerance (issue 15)

TOLS = (1e-2, 1e-3, 1e-4)


def shipped_model():
    try:
        return nr.load_model()
    except (FileNotFoundError, ValueError) as exc:
        pytest.skip(f"no default model: {exc}")


def flash_train(T, size, period=8, duration=2, intensity=-2.0):
    """Full-field flashes of ``intensity``, ``duration`` frames every ``period`` frames, (T, size, size)."""
    f = np.zeros(T, np.float32)
    for t in range(0, T, period):
        f[t : t + duration] = intensity
    return np.broadcast_to(f[:, None, None], (T, size, size)).copy()


def test_default_is_adaptive_to_default_tol(model):
    a = nr.attribute(model, noise(T=12, seed=2))
    assert a.tol == nr.attribution.DEFAULT_TOL == 1e-3 and a.rule == "kink_midpoint"
    used = a.steps_per_frame[a.frames]
    assert set(used.tolist()) <= {8, 16, 32, 64, 128, 256, 512, 1024} and a.steps == used.max()
    assert (a.steps_per_frame[: HIST - 1] == 0).all()
    fixed = nr.attribute(model, noise(T=12, seed=2), steps=5)
    assert fixed.tol is None and (fixed.steps_per_frame[fixed.frames] == 5).all()


def test_each_frame_equals_a_fixed_run_at_its_steps(model):
    """The adaptive result of a frame is the fixed-step result at the points it reports."""
    stim = noise(T=20, seed=6)
    a = nr.attribute(model, stim, cell=[0, 1], tol=1e-4, invariance="none")
    assert len(set(a.steps_per_frame[a.frames].tolist())) > 1  # the frames did differ
    for t in a.frames:
        one = nr.attribute(model, stim, cell=[0, 1], steps=int(a.steps_per_frame[t]), frames=[t], invariance="none")
        np.testing.assert_allclose(a.maps[t], one.maps[t], rtol=1e-5, atol=1e-6 * np.abs(one.maps[t]).max())


def test_a_blank_or_faint_stimulus_stops_where_only_rounding_is_left():
    """Refining cannot remove float32 rounding. A blank movie and white noise too faint to move the rates by more
    than a few ulps (responses ~2e-5, below the completeness floor) climbed to the 1,024-point cap; they stop at
    8 points now, and their completeness gap, like that of 1,024 fixed points, is float32 rounding: within
    ``ROUNDING_ULPS`` ulps of the rates' level (which of the two reads lower is the CPU's summation order: 1,024
    points read 1.8e-8 against 8 points' 4.4e-8 on one Xeon, the other way round on an EPYC). A blank movie's
    response is exactly 0 (F(0) and F(s_t) take one path), so its completeness error is 0."""
    from napari_retina.attribution._adaptive import ROUNDING_ULPS

    model = shipped_model()
    H, size = model.config.history, model.config.size
    blank = np.zeros((H + 5, size, size), np.float32)
    faint = 1e-4 * noise(T=H + 20, seed=1, size=size)
    for stim in (blank, faint):
        attr = nr.attribute(model, stim, invariance="none")
        idx = attr.frames
        assert (attr.steps_per_frame[idx] == 8).all(), np.unique(attr.steps_per_frame[idx])
        capped = nr.attribute(model, stim, invariance="none", steps=1024)
        level = max(1.0, float(np.nanmax(np.abs(nr.predict(model, stim)))))   # the rates' scale, as the rule's
        for run in (attr, capped):   # the absolute gap, float64 sums of the float32 channels
            gap = np.abs(run.channels[idx].astype(np.float64).sum(axis=1) - run.response[idx]).max()
            assert gap <= ROUNDING_ULPS * np.finfo(np.float32).eps * level, (run.steps, gap)
        assert np.abs(attr.maps[idx] - capped.maps[idx]).max() <= 1e-3 * max(np.abs(capped.maps[idx]).max(), 1e-30)
    attr = nr.attribute(model, blank, invariance="none")
    assert (attr.maps[H - 1 :] == 0).all() and (attr.response[H - 1 :] == 0).all() and attr.completeness_error == 0


def test_map_error_falls_with_tol_random_model(model, model64):
    stim = noise(T=12, seed=3)
    ref = reference(model64, stim, [1]).maps[HIST - 1 :].astype(np.float64)
    errs = [rel(nr.attribute(model, stim, cell=1, tol=tol, invariance="none").maps[HIST - 1 :], ref) for tol in TOLS]
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    # the criterion is an estimate (half the last change): measured 3.7e-3 (8 points), 6.7e-4, 1.6e-4 here
    assert all(e <= 2 * tol for e, tol in zip(errs, TOLS)), errs


def test_map_error_falls_with_tol_shipped_model():
    """Against a float64 2,000-step kink_midpoint reference on one white-noise frame of the trained model.

    1e-2 and 1e-3 may stop at the same level (8 points, the first refinement, whose change from 4 is
    the error estimate); the error never grows as tol shrinks, and falls once tol asks for more points
    (contrast 3 white noise)."""
    model = shipped_model()
    cfg = model.config
    stim = 3.0 * np.random.default_rng(1).standard_normal((cfg.history, cfg.size, cfg.size)).astype(np.float32)
    t = [cfg.history - 1]
    ref = nr.attribute(copy.deepcopy(model).double(), stim, cell=0, steps=2000, rule="kink_midpoint",
                       invariance="none", frames=t, batch_size=512).maps[t].astype(np.float64)
    runs = [nr.attribute(model, stim, cell=0, tol=tol, invariance="none", frames=t) for tol in TOLS]
    errs = [rel(a.maps[t], ref) for a in runs]
    assert all(b <= a for a, b in zip(errs, errs[1:])) and errs[-1] < 0.5 * errs[0], errs
    assert all(e <= tol for e, tol in zip(errs, TOLS)), errs
    assert [a.steps for a in runs] == sorted(a.steps for a in runs)


def test_default_accepts_white_noise_at_8_points_within_tol_shipped_model():
    """The default's cost on white noise: the 4-point level gives the estimate, 8 points are kept.

    On the trained model, contrast-1 white noise meets 1e-3 at 8 points (measured: maps' error
    relative to the largest frame ≤ 5e-4, completeness gap ≤ 8e-4), so each frame evaluates 4 + 8
    points (it was 8 + 16 when the refinement started at 8); the kept maps are within tol of a
    float64 500-step reference (its own error, at the rule's order ≈ 1.8, is ≈ (8/500)^1.8 ≈ 6e-4 of the 8-point
    one's: ~3e-7, far below tol; 2,000 steps took four times as long for nothing)."""
    model = shipped_model()
    cfg = model.config
    stim = np.random.default_rng(0).standard_normal((cfg.history + 3, cfg.size, cfg.size)).astype(np.float32)
    t = np.arange(cfg.history - 1, cfg.history + 3)
    a = nr.attribute(model, stim, cell=0, invariance="none", frames=t)
    assert a.steps_per_frame[t].tolist() == [8] * len(t)
    assert a.completeness_error <= a.tol
    ref = nr.attribute(copy.deepcopy(model).double(), stim, cell=0, steps=500, invariance="none", frames=t,
                       batch_size=512).maps[t].astype(np.float64)
    largest = np.linalg.norm(ref.reshape(len(t), -1), axis=1).max()
    errors = np.linalg.norm((a.maps[t] - ref).reshape(len(t), -1), axis=1) / largest
    assert errors.max() <= a.tol, errors


@pytest.mark.parametrize("tol", [1e-2, 1e-3])
def test_completeness_within_tol_on_white_noise_flashes_and_bars(tol):
    """The issue's stimuli on the trained model: completeness_error <= tol, whatever the invariance."""
    model = shipped_model()
    cfg = model.config
    noise_movie = np.random.default_rng(1).standard_normal((cfg.history + 29, cfg.size, cfg.size)).astype(np.float32)
    flashes = flash_train(2000, cfg.size)
    bar = nr.stimuli.moving_bar(speed=0.5, size=cfg.size)
    bar_frames = slice(cfg.history - 1, None, 3)
    for name, stim, frames, inv in (("white noise", noise_movie, None, "none"), ("flashes", flashes, None, "space"),
                                    ("bar", bar, bar_frames, "y")):
        a = nr.attribute(model, stim, cell=0, tol=tol, frames=frames)
        assert a.invariance == inv, name
        assert a.completeness_error <= tol, (name, a.completeness_error)


def test_completeness_within_tol_random_model_cell_all(model):
    for stim in (noise(T=20, seed=8), flash_train(40, SIZE, period=5)):
        for tol in TOLS:
            a = nr.attribute(model, stim, cell="all", tol=tol)
            assert a.completeness_error <= tol, (a.invariance, tol, a.completeness_error)


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(tol=1e-3, steps=8), ValueError,
     r"give steps \(a fixed quadrature\) or tol \(refined until it meets tol\), not both; got steps=8 and tol=0.001"),
    (dict(tol=0.0), ValueError, r"tol must be a number in \[1e-06, 1\) \(a relative error\), got 0.0"),
    (dict(tol=1.0), ValueError, r"tol must be a number in \[1e-06, 1\) \(a relative error\), got 1.0"),
    (dict(tol=float("nan")), ValueError, r"tol must be a number in \[1e-06, 1\) \(a relative error\), got nan"),
    (dict(tol="0.01"), TypeError, r"tol must be a number, got str '0.01'"),
    (dict(tol=True), TypeError, r"tol must be a number, got bool True"),
    (dict(rule="simpson"), ValueError, r"rule must be one of 'kink_midpoint', "),
])
def test_bad_tol(model, kwargs, exc, message):
    with pytest.raises(exc, match=f"^{message}"):
        nr.attribute(model, noise(T=10), **kwargs)


# --------------------------------------------------------------------------- conv2 by FFT (a GPU candidate)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels, kernels", [((3, 4), (5, 3)), ((8, 8), (15, 11))])
def test_fft_conv2_equals_the_direct_convolution_and_its_transpose(dtype, channels, kernels):
    """FFTConv2 against torch's conv2d / conv_transpose2d (float64: to rounding; float32: to its FFT error)."""
    from torch.nn import functional as F

    from napari_retina.attribution._head import FFTConv2

    net = random_model(channels=channels, kernels=kernels, size=50 if kernels[0] == 15 else SIZE).to(dtype)
    w, h1 = net.conv2.weight.detach(), net.config.map_sizes[0]
    gen = torch.Generator().manual_seed(3)
    y = torch.randn(5, channels[0], h1, h1, generator=gen, dtype=dtype)
    g = torch.randn(5, channels[1], *net.config.map_sizes[1:] * 2, generator=gen, dtype=dtype)
    fft = FFTConv2(w, h1)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    for got, want in ((fft.conv(y), F.conv2d(y, w)), (fft.transpose(g), F.conv_transpose2d(g, w))):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert float((got - want).abs().max() / want.abs().max()) < rtol


@pytest.mark.parametrize("method", ["fft", "channels_last"])
def test_attribution_with_another_conv2_method_equals_captum_and_the_direct_path(model, monkeypatch, method):
    """Switching conv2's method changes no result: fixed steps still equal Captum, the default the direct path."""
    from napari_retina.attribution import _head

    stim, cells = noise(seed=4), [0, 2]
    direct = nr.attribute(model, stim, cell=cells, invariance="none")
    monkeypatch.setitem(_head.CONV2_METHOD, "cpu", method)
    head = attribute_module.Head(model, cells)
    assert (head.fft is not None, head.channels_last) == (method == "fft", method == "channels_last")
    fixed = nr.attribute(model, stim, cell=cells, steps=12, rule="gausslegendre", invariance="none")
    ref = captum_maps(model, stim, cells, 12, "gausslegendre")
    np.testing.assert_allclose(fixed.maps[HIST - 1 :], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    fft = nr.attribute(model, stim, cell=cells, invariance="none")
    assert np.array_equal(fft.steps_per_frame, direct.steps_per_frame)
    idx = fft.frames
    assert np.abs(fft.maps[idx] - direct.maps[idx]).max() <= 1e-4 * np.abs(direct.maps[idx]).max()


def test_unknown_conv2_method_is_refused(model):
    with pytest.raises(ValueError, match="conv2 must be one of 'direct', 'channels_last', 'fft', got 'winograd'"):
        attribute_module.Head(model, [0], conv2="winograd")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("rule", ["kink_midpoint", "gausslegendre"])
def test_gpu_path_integral_does_not_wait_for_the_device(rule):
    """A level of the adaptive loop queues its kernels without a host synchronisation (the kink rules' points
    are made on the device); torch's sync debug mode raises on any synchronising call."""
    from napari_retina.attribution import _head, _integrate

    model = nr.load_model(device="cuda")
    net = copy.deepcopy(model).eval().requires_grad_(False)
    cfg = net.config
    scale, shift = net.first_layer_affine()
    h1 = cfg.map_sizes[0]
    a0 = scale * net.conv1.bias.view(-1, 1, 1).expand(-1, h1, h1) + shift  # bn1 at the baseline, as attribute has it
    c = scale * torch.randn(24, cfg.channels[0], h1, h1, device="cuda")
    with torch.no_grad():
        head = _head.Head(net, [0])
        expected = _integrate.path_integral(head, c, a0, rule, 8, 64)
        torch.cuda.synchronize()
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            if rule == "kink_midpoint":
                got = _integrate.path_integral(head, c, a0, rule, 8, 64)
            else:  # Captum's rules copy their points from the host: that copy waits
                with pytest.raises(RuntimeError, match="synchroniz"):
                    _integrate.path_integral(head, c, a0, rule, 8, 64)
                got = expected
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    assert torch.equal(got, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["fft", "channels_last"])
def test_gpu_conv2_methods_equal_the_direct_path(monkeypatch, method):
    from napari_retina.attribution import _head

    model = nr.load_model(device="cuda")
    stim = noise(T=model.config.history + 31, seed=5, size=model.config.size)
    monkeypatch.setitem(_head.CONV2_METHOD, "cuda", "direct")
    direct = nr.attribute(model, stim, invariance="none")
    monkeypatch.setitem(_head.CONV2_METHOD, "cuda", method)
    other = nr.attribute(model, stim, invariance="none")
    idx = other.frames
    assert np.array_equal(other.steps_per_frame, direct.steps_per_frame)
    assert np.abs(other.maps[idx] - direct.maps[idx]).max() <= 1e-3 * np.abs(direct.maps[idx]).max()


# --------------------------------------------------------------------------- results copied to the host


def test_host_writer_on_the_cpu_writes_rows_and_casts():
    from napari_retina.attribution._host_copy import HostWriter

    dest = np.full((6, 2), np.nan, dtype=np.float32)
    with HostWriter(torch.device("cpu")) as out:
        out.put(dest, np.array([1, 2]), torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64))
        out.put(dest, np.array([5, 0]), torch.tensor([[5.0, 6.0], [7.0, 8.0]]))
    np.testing.assert_array_equal(dest, [[7, 8], [1, 2], [3, 4], [np.nan, np.nan], [np.nan, np.nan], [5, 6]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_host_writer_writes_every_chunk_and_reports_a_failed_write():
    """More chunks than pinned slots, consecutive and not: every one lands; a bad write raises at close."""
    from napari_retina.attribution._host_copy import HostWriter

    dest = np.zeros((40, 3, 5), dtype=np.float32)
    values = torch.randn(40, 3, 5, device="cuda")
    with HostWriter(torch.device("cuda"), depth=2) as out:
        for i in range(0, 40, 4):
            rows = np.arange(i, i + 4) if i % 8 else np.array([i + 3, i, i + 2, i + 1])
            out.put(dest, rows, values[rows].clone())  # a fresh tensor each time: freed once queued
    np.testing.assert_array_equal(dest, values.cpu().numpy())
    # queued, so put says nothing (a test audit: one raises() round both passed with the copy made at once)
    out = HostWriter(torch.device("cuda"))
    out.put(np.zeros((4, 2), np.float32), np.array([0, 2, 1]), torch.ones(3, 5, device="cuda"))
    with pytest.raises(ValueError, match="broadcast"):
        out.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_results_copied_asynchronously_equal_a_blocking_copy(monkeypatch):
    """The side stream and the worker thread change no result, over several chunks and frame gaps (a chunk
    copied before it is ready, or after its memory was reused, would be off by far more than rounding)."""
    from napari_retina.attribution import _host_copy

    model = nr.load_model(device="cuda")
    H = model.config.history
    stim = noise(T=H + 400, seed=6, size=model.config.size)
    for frames in (None, list(range(H - 1, H + 400, 3))):
        got = nr.attribute(model, stim, invariance="none", batch_size=512, frames=frames)
        monkeypatch.setitem(_host_copy.ASYNC_COPY, "cuda", False)
        want = nr.attribute(model, stim, invariance="none", batch_size=512, frames=frames)
        monkeypatch.undo()
        for a, b in ((got.maps, want.maps), (got.channels, want.channels), (got.rates, want.rates)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.nanmax(np.abs(b)))  # NaN where b's are


@pytest.mark.parametrize("layer", ["bn3", "bn2"])
def test_a_batch_norm_with_a_large_shift_over_a_tiny_scale_is_attributed_exactly(layer):
    """A cell that hardly fires (bn3 shift −7 over a scale of −3e-4, as training on silent rates leaves it), or a
    unit so shifted, is attributed as Captum attributes it: the affine maps come from the batch norms' parameters,
    not from differences of their outputs, which lost four digits and failed the head's own check."""
    try:
        model = copy.deepcopy(nr.load_model(device="cpu"))
    except (FileNotFoundError, ValueError) as exc:
        pytest.skip(f"no default model: {exc}")
    norm = model.bn3 if layer == "bn3" else model.bn2.bn
    with torch.no_grad():
        norm.bias[0] = -7.0
        norm.weight[0] = -3e-4
    _two_frames_equal_captum(model)
