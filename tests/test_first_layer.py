"""napari_retina.first_layer: the one conv1 engine, against the direct convolution in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina import first_layer as FL
from napari_retina.experiments import base

HIST, SIZE = 6, 12


def model64() -> nr.RetinaCNN:
    torch.manual_seed(0)
    return nr.RetinaCNN(nr.ModelConfig(history=HIST, size=SIZE, kernels=(5, 3), n_cells=2)).eval().double()


def movie(kind: str, T: int = 16, seed: int = 0) -> np.ndarray:
    """float32 (T, SIZE, SIZE): uniform over space, along y, along x, or not at all ("none")."""
    rng = np.random.default_rng(seed)
    shape = {"space": (T, 1, 1), "y": (T, 1, SIZE), "x": (T, SIZE, 1), "none": (T, SIZE, SIZE)}[kind]
    return np.ascontiguousarray(np.broadcast_to(rng.normal(size=shape), (T, SIZE, SIZE)), dtype=np.float32)


def direct(model: nr.RetinaCNN, stim: np.ndarray, idx) -> torch.Tensor:
    """z by torch's conv2d on each gathered window, float64."""
    x = torch.stack([torch.from_numpy(stim[t - HIST + 1 : t + 1]) for t in idx]).double()
    return torch.nn.functional.conv2d(x, model.conv1.weight, model.conv1.bias)


@pytest.mark.parametrize("kind", ["space", "y", "x", "none"])
def test_every_path_equals_the_direct_convolution(kind):
    m = model64()
    stim = movie(kind)
    idx = np.array([5, 6, 11, 15])  # not consecutive, shared frames
    layer = FL.FirstLayer(m, stim)
    assert layer.invariance == kind  # "auto" detected it
    with torch.no_grad():
        ref = direct(m, stim, idx)
        z, d = layer.z(idx), layer.linear(idx)
    assert z.shape == d.shape == (4, m.config.channels[0], SIZE - 4, SIZE - 4)
    torch.testing.assert_close(z, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(d, ref - m.conv1.bias.view(1, -1, 1, 1), rtol=1e-10, atol=1e-10)


def test_a_named_invariance_is_used_as_given():
    """A weaker one than the movie has (here "none" on a full field) takes the general path, same answer."""
    m = model64()
    stim = movie("space")
    with torch.no_grad():
        general = FL.FirstLayer(m, stim, "none")
        assert general.invariance == "none" and general.source.shape == stim.shape
        torch.testing.assert_close(general.z(np.arange(5, 16)), FL.FirstLayer(m, stim).z(np.arange(5, 16)),
                                   rtol=1e-10, atol=1e-10)


def test_rest_is_z_of_a_grey_window():
    m = model64()
    with torch.no_grad():
        ref = direct(m, np.zeros((HIST, SIZE, SIZE), np.float32), [HIST - 1])
        torch.testing.assert_close(FL.FirstLayer(m, movie("none")).rest(), ref, rtol=0, atol=0)


def test_bad_invariance_is_refused():
    with pytest.raises(ValueError, match="invariance must be one of 'auto', 'none', 'x', 'y', 'space', got 'z'"):
        FL.FirstLayer(model64(), movie("none"), "z")


def test_predict_attribute_reduce_and_experiments_compute_conv1_here(monkeypatch):
    """One engine: every caller's first layer goes through FirstLayer (a copy elsewhere would not count)."""
    calls: dict[str, int] = {}
    who = {"now": ""}
    compact = FL.FirstLayer._compact

    def counted(self, idx):
        calls[who["now"]] = calls.get(who["now"], 0) + 1
        return compact(self, idx)

    monkeypatch.setattr(FL.FirstLayer, "_compact", counted)
    m = model64().float()
    noise = movie("none", T=20)
    who["now"] = "predict"
    nr.predict(m, noise)
    who["now"] = "predict, full field"
    nr.predict(m, movie("space", T=20))
    who["now"] = "experiments"
    base.model_rates(m, movie("y", T=20))
    who["now"] = "attribute"
    attr = nr.attribute(m, noise, steps=2)
    who["now"] = "reduce"
    nr.reduce(attr, explain=0.5)
    assert set(calls) == {"predict", "predict, full field", "experiments", "attribute", "reduce"}, calls


def test_two_means_split_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(5):
        v = rng.choice([10, 20, 30, 40, 60, 90, 120, 150], size=8).astype(float)
        if v.min() == v.max():
            continue
        split = FL.two_means_split(v)
        best = None
        for thr in np.unique(v)[:-1]:
            lo, hi = v[v <= thr], v[v > thr]
            cost = ((lo - lo.mean()) ** 2).sum() + ((hi - hi.mean()) ** 2).sum()
            if best is None or cost < best[0] - 1e-12:
                best = (cost, thr)
        assert (v <= split).tolist() == (v <= best[1]).tolist()
    assert FL.two_means_split(np.array([30.0, 30.0])) == 30.0


def test_temporal_filters_are_the_kernels_summed_over_space_signed_by_bn1():
    m = nr.RetinaCNN(nr.ModelConfig(history=HIST, size=SIZE, kernels=(5, 3), n_cells=1, bn="channel")).eval()
    with torch.no_grad():
        m.bn1.weight[1] = -2.0
    ref = m.conv1.weight.detach().double().sum(dim=(2, 3)).numpy()
    ref[1] *= -1
    np.testing.assert_allclose(FL.temporal_filters(m), ref, rtol=1e-12)
    assert FL.bn1_sign(m).tolist() == [1.0, -1.0] + [1.0] * (m.config.channels[0] - 2)
