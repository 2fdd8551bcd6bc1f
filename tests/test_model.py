"""The BN-CNN: shapes, eval determinism, the conv1 split, and its config."""

import numpy as np
import pytest
import torch

from napari_retina.model import ModelConfig, RetinaCNN


def tiny(bn="unit", seed=0, n_cells=3):
    torch.manual_seed(seed)
    return RetinaCNN(ModelConfig(history=6, size=16, channels=(3, 4), kernels=(5, 3), n_cells=n_cells, bn=bn)).eval()


@pytest.mark.parametrize("bn", ["unit", "channel", "none"])
def test_shapes_follow_the_config(bn):
    model = tiny(bn)
    z = model.first_layer(torch.randn(2, 6, 16, 16))
    assert z.shape == (2, 3, 12, 12)
    assert model(torch.randn(2, 6, 16, 16)).shape == (2, 3)
    assert model.config.map_sizes == (12, 10)
    assert model.config.first_layer_offset == 2


def test_default_architecture_is_methods_bn_cnn():
    model = RetinaCNN(ModelConfig(n_cells=5))
    assert model.conv1.weight.shape == (8, 40, 15, 15)
    assert model.conv2.weight.shape == (8, 8, 11, 11)
    assert model.linear.weight.shape == (5, 8 * 26 * 26)
    assert model.bn1.bn.num_features == 8 * 36 * 36 and model.bn1.bn.eps == 1e-3
    assert model.bn1.bn.momentum == 0.01


def test_eval_is_deterministic_and_training_is_noisy():
    model = tiny()
    x = torch.randn(4, 6, 16, 16)
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.equal(a, b)  # Gaussian noise (and batch statistics) in training


def test_rates_are_positive():
    model = tiny()
    assert (model(10 * torch.randn(8, 6, 16, 16)) > 0).all()


@pytest.mark.parametrize("bn", ["unit", "channel", "none"])
def test_norm_affine_matches_each_batch_norm(bn):
    model = tiny(bn)
    with torch.no_grad():
        for module in model.modules():  # non-trivial running statistics
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 2)
                module.bias.uniform_(-1, 1)
        z = torch.randn(3, 3, 12, 12)
        scale, shift = model.first_layer_affine()
        assert torch.allclose(model.bn1(z), scale * z + shift, atol=1e-6)
        h2 = model.config.map_sizes[1]
        for layer, norm, x in [(2, model.bn2, torch.randn(3, model.config.channels[1], h2, h2)),
                               (3, model.bn3, torch.randn(3, model.config.n_cells))]:
            scale, shift = model.norm_affine(layer)
            assert scale.shape == shift.shape == x.shape[1:]
            assert torch.allclose(norm(x), scale * x + shift, atol=1e-6)


def test_config_round_trips_through_json_dict():
    cfg = ModelConfig(history=8, size=20, kernels=(5, 5), n_cells=2, cell_names=["a", "b"])
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(history=0), "history must be a positive int"),
        (dict(size=10, kernels=(7, 5)), "do not fit"),
        (dict(bn="layer"), "bn must be one of"),
        (dict(n_cells=2, cell_names=["a"]), "2 cells but 1 cell names"),
        (dict(channels=(8,)), "two positive ints"),
        # types a JSON config can carry
        (dict(history="40"), r"history must be a positive int up to 1000, got '40'"),
        (dict(history=True), r"history must be a positive int up to 1000, got True"),
        (dict(kernels=(5.5, 3)), r"kernels must be two positive ints up to 255 \(one per layer\), got \(5.5, 3\)"),
        (dict(channels=None), r"channels must be two positive ints up to 1024 \(one per layer\), got None"),
        (dict(bn=["unit"]), r"bn must be one of .*, got \['unit'\]"),
        (dict(noise="x"), r"noise must be a finite number >= 0, got 'x'"),
        (dict(noise=float("nan")), r"noise must be a finite number >= 0, got nan"),
        (dict(noise=-0.1), r"noise must be a finite number >= 0, got -0.1"),
        (dict(n_cells=2, cell_names="ab"), r"cell_names must be a list of str, got 'ab'"),
        (dict(n_cells=1, cell_names=[None]), r"cell_names must be a list of str, got \[None\]"),
        (dict(norm=None), r"norm must be a dict .*, got None"),
        (dict(norm={"mean": 0.0, "std": 1.0}), r"norm must be a dict .*, got keys \['mean', 'std'\]"),
        (dict(norm={"mean": 0.0, "std": 1.0, "units": "contrast", "x": 1}), r"got keys \['mean', 'std', 'units', 'x'\]"),
        (dict(norm={"mean": "0", "std": 1.0, "units": "contrast"}), r"norm must be a dict .*, got mean='0'"),
        (dict(norm={"mean": 0.0, "std": 0.0, "units": "contrast"}), r"norm must be a dict .*, got std=0.0"),
        (dict(norm={"mean": 0.0, "std": float("inf"), "units": "raw"}), r"norm must be a dict .*, got std=inf"),
        (dict(norm={"mean": 10**400, "std": 1.0, "units": "raw"}), r"norm must be a dict .*, got mean=1000"),
        (dict(norm={"mean": 0.0, "std": 1.0, "units": "volts"}), r"norm must be a dict .*, got units='volts'"),
        # a stimulus mapped by these would be infinite, and the stimulus blamed for it
        (dict(norm={"mean": 1e308, "std": 1.0, "units": "raw"}), r"norm must be .*within float32.*, got mean=1e\+308"),
        (dict(norm={"mean": 0.0, "std": 1e-45, "units": "raw"}), r"norm must be .*within float32.*, got std=1e-45"),
        # sanity bounds (see the ModelConfig docstring)
        (dict(history=1001), r"history must be a positive int up to 1000, got 1001"),
        (dict(size=7000), r"size must be a positive int up to 1024, got 7000"),
        (dict(size=100_000), r"size must be a positive int up to 1024, got 100000"),
        (dict(n_cells=10_001), r"n_cells must be a positive int up to 10000, got 10001"),
        (dict(channels=(8, 1025)), r"channels must be two positive ints up to 1024 \(one per layer\), got \(8, 1025\)"),
        (dict(size=600, kernels=(256, 3)), r"kernels must be two positive ints up to 255 \(one per layer\), got \(256, 3\)"),
        # conv1 8*40*15*15+8, bn1 4*8*1010**2+1, conv2 8*8*11*11+8, bn2 4*8*1000**2+1, linear 100*8*1000**2+100, bn3 401
        (dict(size=1024, n_cells=100), r"a network of 864,723,463 weights and buffers, more than the 100,000,000 allowed"),
    ],
)
def test_bad_configs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_bounds_leave_room_for_real_models():
    """The bounds are generous: a 1024-pixel stimulus, 1000-frame history, 10 000 cells each fit alone."""
    assert ModelConfig(size=1024, n_cells=4).size == 1024
    assert ModelConfig(history=1000).history == 1000
    assert ModelConfig(size=20, kernels=(5, 5), n_cells=10_000).n_cells == 10_000
    assert ModelConfig(size=300, kernels=(255, 11), channels=(32, 32)).kernels == (255, 11)


def test_numpy_ints_and_int_cell_names_are_accepted_as_plain_values():
    cfg = ModelConfig(history=np.int64(8), size=np.int32(20), kernels=np.array([5, 5]), n_cells=2, cell_names=[3, "b"])
    assert cfg.to_dict() == {**cfg.to_dict(), "history": 8, "size": 20, "kernels": [5, 5], "cell_names": ["3", "b"]}
    assert type(cfg.history) is int and type(cfg.kernels[0]) is int


@pytest.mark.parametrize("bn", ["unit", "channel", "none"])
def test_state_shapes_are_those_of_the_built_network(bn):
    for cfg in (ModelConfig(history=6, size=16, channels=(3, 4), kernels=(5, 3), n_cells=2, bn=bn), ModelConfig(bn=bn)):
        built = {k: tuple(v.shape) for k, v in RetinaCNN(cfg).state_dict().items()}
        assert cfg.state_shapes() == built
        assert list(cfg.state_shapes()) == list(built)  # same order too


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match=r"unknown model config keys \['lr'\] \(expected \['history', 'size'"):
        ModelConfig.from_dict({"history": 4, "lr": 3})


def test_from_dict_refuses_a_non_dict_and_when_complete_a_missing_key():
    with pytest.raises(ValueError, match="a model config must be a dict of its fields, got list"):
        ModelConfig.from_dict([1])
    full = ModelConfig(history=8, size=20, kernels=(5, 5), n_cells=2).to_dict()
    del full["norm"]
    assert ModelConfig.from_dict(full).norm["units"] == "contrast"  # defaults fill in when not complete
    with pytest.raises(ValueError, match=r"the model config lacks keys \['norm'\]"):
        ModelConfig.from_dict(full, complete=True)


def test_first_layer_windows_of_a_whole_movie_equal_conv1_on_each_window():
    model = tiny()
    movie = torch.randn(20, 16, 16)
    z = model.first_layer_windows(movie, np.arange(5, 20))
    windows = torch.stack([movie[j : j + 6] for j in range(15)])
    assert z.shape == (15, 3, 12, 12)
    torch.testing.assert_close(z, model.first_layer(windows), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("idx", [[5, 6, 17, 29], list(range(5, 30)), [12]],
                         ids=["gathered (not consecutive, shared frames)", "consecutive (strided view)", "one"])
def test_first_layer_windows_by_fft_equals_direct_conv1_in_float64(idx):
    model = tiny().double()
    movie = torch.randn(30, 16, 16, dtype=torch.float64)
    idx = np.array(idx)
    windows = torch.stack([movie[t - 5 : t + 1] for t in idx])
    with torch.no_grad():
        direct = model.first_layer(windows)
        torch.testing.assert_close(model.first_layer_windows(movie, idx), direct, rtol=1e-10, atol=1e-10)
        linear = model.first_layer_windows(movie, idx, bias=False)
        torch.testing.assert_close(linear, direct - model.conv1.bias.view(1, -1, 1, 1), rtol=1e-10, atol=1e-10)


def test_conv1_fft_is_differentiable_like_the_direct_convolution():
    model = tiny().double()
    movie = torch.randn(12, 16, 16, dtype=torch.float64)
    idx = np.arange(5, 12)
    windows = torch.stack([movie[t - 5 : t + 1] for t in idx])
    g_fft = torch.autograd.grad(model.first_layer_windows(movie, idx).square().sum(), model.conv1.weight)[0]
    g_direct = torch.autograd.grad(model.first_layer(windows).square().sum(), model.conv1.weight)[0]
    torch.testing.assert_close(g_fft, g_direct, rtol=1e-9, atol=1e-9)
