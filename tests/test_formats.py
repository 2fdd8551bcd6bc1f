"""Importing the Baccus lab's model files (torch-deep-retina .pt, deep-retina Keras HDF5) into RetinaCNN.

Each test writes a small file in the documented layout (docs: napari_retina.formats.tdr and
.keras) with random weights, and compares the imported model's rates with a direct
re-implementation of the original network's forward pass, written here from the layouts
(module by module, each stacked convolution applied in turn, in float64), never with
numbers the importer produced.
"""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
import torch
from torch.nn import functional as F

import napari_retina as nr

HISTORY, SIZE, CELLS = 6, 12, 3


def _bn(gen, n, absolute=False):
    """A batch norm's tensors: AbsBatchNorm (scale/shift, scales of both signs) or BatchNorm (weight/bias)."""
    w = torch.randn(n, generator=gen, dtype=torch.float64)
    names = ("scale", "shift") if absolute else ("weight", "bias")
    out = {names[0]: w, names[1]: 0.3 * torch.randn(n, generator=gen, dtype=torch.float64),
           "running_mean": 0.2 * torch.randn(n, generator=gen, dtype=torch.float64),
           "running_var": 0.5 + torch.rand(n, generator=gen, dtype=torch.float64)}
    if not absolute:
        out["num_batches_tracked"] = torch.tensor(7)
    return out


def _conv_stack(gen, cin, cout, k, stack_chan=None, inner_bn=False, dropout=False):
    """A LinearStackedConv2d's ``convs.<j>`` tensors: 3x3 kernels (the last with bias) building a kxk kernel."""
    mid = stack_chan or cout
    n = (k - 3) // 2 + 1
    out, j = {}, 0
    for i in range(n):
        c_in, c_out = (cin if i == 0 else mid), (cout if i == n - 1 else mid)
        out[f"convs.{j}.weight"] = 0.3 * torch.randn(c_out, c_in, 3, 3, generator=gen, dtype=torch.float64)
        if i == n - 1:
            out[f"convs.{j}.bias"] = 0.1 * torch.randn(c_out, generator=gen, dtype=torch.float64)
        j += 1
        if i < n - 1 and inner_bn:
            out.update({f"convs.{j}.{key}": v for key, v in _bn(gen, mid, absolute=True).items()})
            j += 1
        if i < n - 1 and dropout:
            j += 1  # nn.Dropout: no tensors, but it takes an index
    return out


def tdr_state(arch="BNCNN", chans=(3, 4), ksizes=(5, 3), bnorm_d=1, seed=0, old_layout=False, **stack):
    """A model_state_dict in the lab's layout, and the list of modules the reference forward runs."""
    gen = torch.Generator().manual_seed(seed)
    h1 = SIZE - ksizes[0] + 1
    h2 = h1 - ksizes[1] + 1
    stacked = arch == "LinearStackedBNCNN"
    mods, state = [], {}

    def add(kind, tensors=None, **info):
        i = len(mods)
        mods.append((kind, f"sequential.{i}", info))
        state.update({f"sequential.{i}.{k}": v for k, v in (tensors or {}).items()})

    def conv(cin, cout, k):
        if stacked:
            add("stack", _conv_stack(gen, cin, cout, k, **stack))
        else:
            add("conv", {"weight": 0.3 * torch.randn(cout, cin, k, k, generator=gen, dtype=torch.float64),
                         "bias": 0.1 * torch.randn(cout, generator=gen, dtype=torch.float64)})

    def norm(c, h):
        if bnorm_d == 1:
            add("flatten")
            add("bn", _bn(gen, c * h * h, absolute=stacked))
            if not old_layout:
                add("reshape", shape=(c, h, h))
        else:
            add("bn", _bn(gen, c, absolute=stacked))
        add("noise", {"sigma": torch.full((1,), 0.05, dtype=torch.float64)})
        add("relu")
        if old_layout and bnorm_d == 1:
            add("reshape", shape=(c, h, h))

    conv(HISTORY, chans[0], ksizes[0])
    norm(chans[0], h1)
    conv(chans[0], chans[1], ksizes[1])
    norm(chans[1], h2)
    add("flatten")
    add("linear", {"weight": 0.05 * torch.randn(CELLS, chans[1] * h2 * h2, generator=gen, dtype=torch.float64)})
    add("bn", _bn(gen, CELLS, absolute=stacked))
    add("softplus")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, mods


def tdr_forward(state, mods, x):
    """The lab's Sequential, module by module (eval mode), from the state dict alone, in float64."""
    t = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    for kind, name, info in mods:
        if kind == "conv":
            x = F.conv2d(x, t[f"{name}.weight"], t.get(f"{name}.bias"))
        elif kind == "stack":
            for j in sorted({int(k.split(".")[3]) for k in t if k.startswith(f"{name}.convs.")}):
                p = f"{name}.convs.{j}"
                if f"{p}.weight" in t:
                    x = F.conv2d(x, t[f"{p}.weight"], t.get(f"{p}.bias"))
                else:  # AbsBatchNorm2d, torch's default eps
                    x = F.batch_norm(x, t[f"{p}.running_mean"], t[f"{p}.running_var"], t[f"{p}.scale"].abs(),
                                     t[f"{p}.shift"], False, 0.0, 1e-5)
        elif kind == "bn":
            absolute = f"{name}.scale" in t
            w = t[f"{name}.scale"].abs() if absolute else t[f"{name}.weight"]
            b = t[f"{name}.shift"] if absolute else t[f"{name}.bias"]
            x = F.batch_norm(x, t[f"{name}.running_mean"], t[f"{name}.running_var"], w, b, False, 0.0, 1e-3)
        elif kind == "flatten":
            x = x.reshape(len(x), -1)
        elif kind == "reshape":
            x = x.reshape(-1, *info["shape"])
        elif kind == "relu":
            x = F.relu(x)
        elif kind == "linear":
            x = F.linear(x, t[f"{name}.weight"], t.get(f"{name}.bias"))
        elif kind == "softplus":
            x = F.softplus(x)
    return x


def save_tdr(path, arch, state, **extra):
    payload = {"model_type": arch, "model_state_dict": state,
               "optim_state_dict": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
               "hyps": {"model_type": arch, "img_shape": (HISTORY, SIZE, SIZE), "noise": 0.05, "bnorm_d": 1,
                        "chans": [3, 4], "softplus": True, "convgc": False},
               "norm_stats": {"mean": np.float64(51.2), "std": np.float64(12.5)},   # numpy scalars, as the lab saves
               "cells": [2, 5, 9], "dataset": "15-10-07", "stim_type": "naturalscene", "epoch": 40,
               "val_acc": np.float64(0.61), "test_pearson": 0.58, "zero_dict": {"sequential.0": set()},
               "y_stats": {"mean": np.zeros(3), "std": np.ones(3)}}
    payload.update(extra)
    torch.save(payload, path)
    return path


def windows(seed=1, n=4):
    return torch.randn(n, HISTORY, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def assert_matches(model, reference, x):
    """The imported float32 model equals the float64 reference to float32 rounding."""
    with torch.no_grad():
        got = model(x.float()).double()
    scale = reference.abs().max()
    assert float((got - reference).abs().max() / scale) < 2e-5, (got, reference)


@pytest.mark.parametrize("layout", ["BNCNN", "BNCNN-old", "BNCNN-bnorm_d2"])
def test_a_tdr_bncnn_imports_exactly(tmp_path, layout):
    state, mods = tdr_state("BNCNN", old_layout=layout.endswith("old"), bnorm_d=2 if layout.endswith("d2") else 1)
    path = save_tdr(tmp_path / "bncnn.pt", "BNCNN", state)
    model = nr.load_model(path, device="cpu")
    x = windows()
    assert_matches(model, tdr_forward(state, mods, x), x)
    cfg = model.config
    assert (cfg.history, cfg.size, cfg.channels, cfg.kernels, cfg.n_cells) == (HISTORY, SIZE, (3, 4), (5, 3), CELLS)
    assert cfg.bn == ("channel" if layout.endswith("d2") else "unit")
    assert cfg.cell_names == ["cell2", "cell5", "cell9"]
    assert cfg.norm == {"mean": 51.2, "std": 12.5, "units": "raw"}
    assert model.provenance["imported"]["format"] == "torch-deep-retina"
    assert model.provenance["imported"]["architecture"] == "BNCNN"
    assert model.scores == {"val_pearson": pytest.approx(0.61), "test_pearson": pytest.approx(0.58)}


@pytest.mark.parametrize("stack", [{}, {"stack_chan": 5}, {"inner_bn": True, "dropout": True}],
                         ids=["plain", "stack_chan", "inner_abs_bn_and_dropout"])
def test_a_linear_stacked_bncnn_collapses_to_one_kernel_exactly(tmp_path, stack):
    """7x7 from three 3x3 convolutions and 5x5 from two, absolute-value batch-norm scales."""
    state, mods = tdr_state("LinearStackedBNCNN", ksizes=(7, 5), **stack)
    assert any(k.startswith("sequential.0.convs.2") or k.startswith("sequential.0.convs.4") for k in state)
    assert any(float(v.min()) < 0 for k, v in state.items() if k.endswith(".scale"))  # the abs matters
    path = save_tdr(tmp_path / "stacked.pt", "LinearStackedBNCNN", state)
    model = nr.load_model(path, device="cpu")
    x = windows(seed=2)
    assert_matches(model, tdr_forward(state, mods, x), x)
    assert model.config.kernels == (7, 5)
    assert model.provenance["imported"]["convolutions_per_layer"] == [3, 2]


def test_a_damaged_lab_file_is_refused_not_loaded_as_other_weights(tmp_path):
    """A lab file has no checksum of its own: bytes overwritten inside a weight loaded as other numbers (rates
    0.45 spikes/bin off); the zip entry's CRC-32 shows it."""
    import struct
    import zipfile

    state, _ = tdr_state("BNCNN")
    path = save_tdr(tmp_path / "lab.pt", "BNCNN", state)
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + 8 : start + 12] = bytes(4 - k for k in range(4)) if raw[start + 8] != 4 else bytes(range(4))
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"lab.pt' is damaged: its entry '{info.filename}' fails its checksum"):
        nr.load_model(path)


@pytest.mark.parametrize("arch, ksizes", [("BNCNN", (5, 3)), ("LinearStackedBNCNN", (7, 5))])
def test_a_state_dict_of_numpy_arrays_imports_as_one_of_tensors(tmp_path, arch, ksizes):
    """A lab file saved with numpy arrays for tensors was refused as "sequential.0: unknown (bias, weight)"."""
    state, mods = tdr_state(arch, ksizes=ksizes)
    path = save_tdr(tmp_path / "np.pt", arch, {k: v.numpy() for k, v in state.items()})
    x = windows(seed=4)
    assert_matches(nr.load_model(path, device="cpu"), tdr_forward(state, mods, x), x)


def test_an_imported_model_saves_and_reloads_as_a_napari_retina_checkpoint(tmp_path):
    state, mods = tdr_state("LinearStackedBNCNN", ksizes=(7, 5))
    model = nr.load_model(save_tdr(tmp_path / "s.pt", "LinearStackedBNCNN", state))
    again = nr.load_model(nr.save_model(model, tmp_path / "again.pt"))
    x = windows(seed=3)
    assert_matches(again, tdr_forward(state, mods, x), x)
    assert again.provenance["imported"]["file"] == "s.pt"


# ---------------------------------------------------------------- Keras


def keras_weights(seed=0, chans=(3, 4), ksizes=(5, 3)):
    """bn_cnn's weights in Keras' layout: conv kernels (k, k, in, out), dense (in, out), BN gamma/beta/moving_*."""
    rng = np.random.default_rng(seed)
    h1 = SIZE - ksizes[0] + 1
    h2 = h1 - ksizes[1] + 1

    def bn(n):
        return {"gamma": rng.normal(size=n), "beta": 0.3 * rng.normal(size=n),
                "moving_mean": 0.2 * rng.normal(size=n), "moving_variance": 0.5 + rng.random(n)}

    return [
        ("input_1", {}),
        ("conv2d_1", {"kernel": 0.3 * rng.normal(size=(ksizes[0], ksizes[0], HISTORY, chans[0])),
                      "bias": 0.1 * rng.normal(size=chans[0])}),
        ("flatten_1", {}), ("batch_normalization_1", bn(chans[0] * h1 * h1)), ("reshape_1", {}),
        ("gaussian_noise_1", {}), ("activation_1", {}),
        ("conv2d_2", {"kernel": 0.3 * rng.normal(size=(ksizes[1], ksizes[1], chans[0], chans[1])),
                      "bias": 0.1 * rng.normal(size=chans[1])}),
        ("flatten_2", {}), ("batch_normalization_2", bn(chans[1] * h2 * h2)), ("reshape_2", {}),
        ("gaussian_noise_2", {}), ("activation_2", {}), ("flatten_3", {}),
        ("dense_1", {"kernel": 0.05 * rng.normal(size=(chans[1] * h2 * h2, CELLS))}),
        ("batch_normalization_3", bn(CELLS)), ("activation_3", {}),
    ]


def save_keras(path, layers, nested=False, backend="tensorflow", epsilon=None):
    """Keras 2's HDF5 layout (save_weights; model.save when ``nested``, with a model_config)."""
    with h5py.File(path, "w") as h5:
        root = h5.create_group("model_weights") if nested else h5
        root.attrs["layer_names"] = [name.encode() for name, _ in layers]
        root.attrs["backend"] = backend.encode()
        root.attrs["keras_version"] = b"2.2.4"
        for name, arrays in layers:
            group = root.create_group(name)
            group.attrs["weight_names"] = [f"{name}/{k}:0".encode() for k in arrays]
            for k, v in arrays.items():
                group.create_dataset(f"{name}/{k}:0", data=v.astype(np.float32))
        if epsilon is not None:
            import json

            config = {"class_name": "Model", "config": {"layers": [
                {"class_name": "BatchNormalization" if n.startswith("batch") else "Other",
                 "config": {"epsilon": epsilon} if n.startswith("batch") else {}} for n, _ in layers]}}
            h5.attrs["model_config"] = json.dumps(config).encode()
    return path


def keras_forward(layers, x, eps=1e-3, theano=False):
    """bn_cnn's forward pass in numpy from Keras' arrays: correlation (Theano: true convolution)."""
    w = {name: {k: v.astype(np.float32).astype(np.float64) for k, v in arrays.items()} for name, arrays in layers}

    def conv(x, kernel, bias):
        if theano:
            kernel = kernel[::-1, ::-1]
        k = kernel.shape[0]
        win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))   # (N, in, h, h, k, k)
        return np.einsum("niyxab,abio->noyx", win, kernel) + bias[None, :, None, None]

    def bn(x, p):
        return p["gamma"] * (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + eps) + p["beta"]

    y = conv(x, w["conv2d_1"]["kernel"], w["conv2d_1"]["bias"])
    y = np.maximum(bn(y.reshape(len(x), -1), w["batch_normalization_1"]), 0).reshape(y.shape)
    y = conv(y, w["conv2d_2"]["kernel"], w["conv2d_2"]["bias"])
    y = np.maximum(bn(y.reshape(len(x), -1), w["batch_normalization_2"]), 0)
    y = bn(y @ w["dense_1"]["kernel"], w["batch_normalization_3"])
    return torch.from_numpy(np.log1p(np.exp(y)))


@pytest.mark.parametrize("variant", ["save_weights", "model.save eps 1e-2", "theano"])
def test_keras_bn_cnn_weights_import_exactly(tmp_path, variant):
    layers = keras_weights()
    eps = 1e-2 if "eps" in variant else 1e-3
    path = save_keras(tmp_path / "bn_cnn.h5", layers, nested=variant.startswith("model.save"),
                      backend="theano" if variant == "theano" else "tensorflow",
                      epsilon=eps if variant.startswith("model.save") else None)
    model = nr.load_model(path, device="cpu")
    x = windows(seed=4)
    assert_matches(model, keras_forward(layers, x.numpy(), eps=eps, theano=variant == "theano"), x)
    assert (model.config.history, model.config.size, model.config.kernels) == (HISTORY, SIZE, (5, 3))
    assert model.provenance["imported"]["format"] == "deep-retina Keras"
    assert model.config.norm["units"] == "contrast"


# ---------------------------------------------------------------- the battery on an imported model


def _full_config(layers) -> dict:
    """The model_config deep-retina's bn_cnn gets from model.save: each layer's class and settings, the
    activations after each batch norm."""
    out = []
    for name, _ in layers:
        if name.startswith("conv2d"):
            out.append({"class_name": "Conv2D", "config": {"name": name, "data_format": "channels_first",
                                                          "strides": [1, 1], "padding": "valid",
                                                          "dilation_rate": [1, 1], "activation": "linear"}})
        elif name.startswith("dense"):
            out.append({"class_name": "Dense", "config": {"name": name, "activation": "linear", "use_bias": False}})
        elif name.startswith("batch"):
            out.append({"class_name": "BatchNormalization", "config": {"name": name, "epsilon": 1e-3}})
            act = "softplus" if name.endswith("3") else "relu"
            out.append({"class_name": "Activation", "config": {"name": f"act_{name}", "activation": act}})
        else:
            out.append({"class_name": "InputLayer", "config": {"name": name}})
    return {"class_name": "Model", "config": {"layers": out}}


@pytest.mark.parametrize("change,said", [
    (None, None),
    (("conv2d_1", "strides", [2, 2]), "model_config gives Conv2D 'conv2d_1' strides '(2, 2)' (a bn_cnn's is (1, 1))"),
    (("conv2d_2", "data_format", "channels_last"),
     "model_config gives Conv2D 'conv2d_2' data_format 'channels_last' (a bn_cnn's is 'channels_first')"),
    (("act_batch_normalization_1", "activation", "tanh"),
     "model_config's activations are tanh, relu, softplus (a bn_cnn's are relu, relu, softplus)"),
])
def test_a_model_config_of_layers_a_bn_cnn_does_not_have_is_refused(tmp_path, change, said):
    """A helper's audit: the importer read only the epsilons of the model_config, so a channels-last file imported
    with a 0.41 relative error, a stride-2 conv1 as stride 1, and tanh as ReLU. The bn_cnn's own config imports
    exactly."""
    import json

    layers = keras_weights()
    path = save_keras(tmp_path / "c.h5", layers, nested=True, epsilon=1e-3)
    config = _full_config(layers)
    if change is not None:
        name, key, value = change
        next(layer for layer in config["config"]["layers"] if layer["config"]["name"] == name)["config"][key] = value
    with h5py.File(path, "r+") as h5:
        h5.attrs["model_config"] = json.dumps(config).encode()
    if said is None:
        x = windows(seed=4)
        assert_matches(nr.load_model(path, device="cpu"), keras_forward(layers, x.numpy()), x)
    else:
        with pytest.raises(ValueError, match=r"c.h5' is not a deep-retina bn_cnn napari-retina can import: its "
                                             + re.escape(said) + "$"):
            nr.load_model(path)


def test_a_model_config_listing_another_number_of_batch_norms_is_refused(tmp_path):
    """Two BatchNormalization layers listed for the weights' three: every norm silently took Keras' default
    epsilon instead of the file's."""
    import json

    layers = keras_weights()
    path = save_keras(tmp_path / "w.h5", layers, nested=True, epsilon=0.01)
    with h5py.File(path, "r+") as h5:
        config = json.loads(h5.attrs["model_config"])
        norms = [layer for layer in config["config"]["layers"] if layer["class_name"] == "BatchNormalization"]
        config["config"]["layers"].remove(norms[-1])
        h5.attrs["model_config"] = json.dumps(config).encode()
    with pytest.raises(ValueError, match=r"w.h5' has a malformed model_config: it lists 2 BatchNormalization "
                                         r"layers, and a bn_cnn's weights have 3"):
        nr.load_model(path)


def test_the_battery_runs_on_an_imported_model(tmp_path):
    from test_experiments import HISTORY as H, SIZE as S, SMALL

    gen = torch.Generator().manual_seed(5)
    h1, h2 = S - 5 + 1, S - 5 + 1 - 5 + 1
    state = {"sequential.0.weight": 0.1 * torch.randn(4, H, 5, 5, generator=gen),
             "sequential.0.bias": torch.zeros(4),
             **{f"sequential.2.{k}": v.float() for k, v in _bn(gen, 4 * h1 * h1).items() if k != "num_batches_tracked"},
             "sequential.6.weight": 0.1 * torch.randn(4, 4, 5, 5, generator=gen), "sequential.6.bias": torch.zeros(4),
             **{f"sequential.8.{k}": v.float() for k, v in _bn(gen, 4 * h2 * h2).items() if k != "num_batches_tracked"},
             "sequential.13.weight": 0.05 * torch.randn(2, 4 * h2 * h2, generator=gen),
             **{f"sequential.14.{k}": v.float() for k, v in _bn(gen, 2).items() if k != "num_batches_tracked"}}
    torch.save({"model_type": "BNCNN", "model_state_dict": state, "hyps": {"img_shape": [H, S, S]}},
               tmp_path / "lab.pt")
    model = nr.load_model(tmp_path / "lab.pt", device="cpu")
    for name, params in SMALL.items():   # the battery, one experiment at a time (each with its small parameters)
        out = nr.experiments.battery(model, 0, retina=None, names=[name], steps=4, max_frames=60, **params)
        res = out["results"][name]
        assert res.rates.shape[1] == 2 and np.isfinite(res.rates[H - 1:]).all(), name
        assert out["rows"][0]["name"] == name and isinstance(out["rows"][0]["model_present"], bool)


# ---------------------------------------------------------------- bad input


def test_an_unknown_torch_file_names_the_formats_it_knows(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt' is a torch file but not a napari-retina checkpoint .*nor of "
                                         r"another format napari-retina knows \(expected a napari-retina checkpoint "
                                         r"\(nr.save_model\); a torch-deep-retina BNCNN or LinearStackedBNCNN "
                                         r"checkpoint .*; deep-retina Keras bn_cnn weights"):
        nr.load_model(tmp_path / "other.pt")


def test_an_hdf5_file_that_is_not_keras_weights_names_the_formats_it_knows(tmp_path):
    with h5py.File(tmp_path / "data.h5", "w") as h5:
        h5["train/stimulus"] = np.zeros((3, 4, 4))
    with pytest.raises(ValueError, match=r"data.h5' is an HDF5 file but not Keras weights \(no layer_names "
                                         r"attribute\) nor of another format .*torch-deep-retina BNCNN"):
        nr.load_model(tmp_path / "data.h5")


def test_a_tdr_checkpoint_of_another_architecture_is_refused_by_name(tmp_path):
    state, _ = tdr_state()
    with pytest.raises(ValueError, match=r"r.pt' is a torch-deep-retina checkpoint of a 'RNNCNN' model; "
                                         r"napari-retina imports BNCNN and LinearStackedBNCNN"):
        nr.load_model(save_tdr(tmp_path / "r.pt", "RNNCNN", state))


def test_a_batch_norm_with_a_tensor_the_import_does_not_know_is_refused_by_name(tmp_path):
    """An extra tensor in a batch norm (a variant of the layer) was left out without a word."""
    state, _ = tdr_state("BNCNN")
    bn = next(k.rsplit(".", 1)[0] for k in state if k.endswith("running_mean"))
    state[f"{bn}.foo"] = torch.ones(3)
    path = save_tdr(tmp_path / "extra.pt", "BNCNN", state)
    with pytest.raises(ValueError, match=rf"extra.pt' cannot be imported: the batch norm {bn} holds \['{bn}.foo'\] "
                                         r"besides a batch norm's"):
        nr.load_model(path)


@pytest.mark.parametrize("key, shape, message", [
    ("sequential.6.weight", (4, 2, 3, 3),
     r"sequential.6.weight has shape \[4, 2, 3, 3\] but \[4, 3, 3, 3\] was expected "
     r"\(the layer before has 3 channels\)"),
    ("sequential.2.running_mean", (190,),
     r"sequential.2.running_mean has shape \[190\] but \[192\] was expected \(one per unit of the layer's map: "
     r"3 channels of 8x8\)"),
    ("sequential.14.running_var", (2,),
     r"sequential.14.running_var has shape \[2\] but \[3\] was expected \(one per cell, 3 cells\)"),
])
def test_a_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path, key, shape, message):
    state, _ = tdr_state()
    state[key] = torch.rand(shape) + 0.5
    with pytest.raises(ValueError, match=message):
        nr.load_model(save_tdr(tmp_path / "bad.pt", "BNCNN", state))


def test_a_stacked_sub_convolution_of_the_wrong_width_is_named(tmp_path):
    state, _ = tdr_state("LinearStackedBNCNN", ksizes=(7, 5))
    state["sequential.0.convs.1.weight"] = torch.randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match=r"sequential.0.convs.1.weight has shape \[3, 2, 3, 3\] but \[3, 3, 3, 3\] "
                                         r"was expected \(the previous convolution of the stack has 3 channels\)"):
        nr.load_model(save_tdr(tmp_path / "bad.pt", "LinearStackedBNCNN", state))


def test_hyps_img_shape_that_disagrees_with_the_weights_is_refused(tmp_path):
    state, _ = tdr_state()
    path = save_tdr(tmp_path / "bad.pt", "BNCNN", state,
                    hyps={"img_shape": (40, 50, 50)})
    with pytest.raises(ValueError, match=r"hyps img_shape is \[40, 50, 50\] but the weights \(sequential.0 and the "
                                         r"readout\) imply \[6, 12, 12\]"):
        nr.load_model(path)


def test_a_keras_kernel_of_the_wrong_width_is_named(tmp_path):
    layers = keras_weights()
    layers[7] = ("conv2d_2", {"kernel": np.zeros((3, 3, 2, 4)), "bias": np.zeros(4)})
    with pytest.raises(ValueError, match=r"conv2d_2/kernel \(in torch's \(out, in, k, k\) layout\) has shape "
                                         r"\[4, 2, 3, 3\] but \[4, 3, 3, 3\] was expected"):
        nr.load_model(save_keras(tmp_path / "bad.h5", layers))


def test_pickled_code_in_a_lab_checkpoint_is_still_refused(tmp_path):
    """Allowing numpy's data constructors does not open the door to other globals."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    state, _ = tdr_state()
    torch.save({"model_type": "BNCNN", "model_state_dict": state, "hyps": {"x": Evil()}}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil.pt' is not a napari-retina checkpoint: it holds pickled objects other "
                                         r"than weights, which are refused because loading them could execute code"):
        nr.load_model(tmp_path / "evil.pt")
    assert not marker.exists()


def test_keras_weights_that_lack_a_listed_array_are_refused(tmp_path):
    path = save_keras(tmp_path / "cut.h5", keras_weights())
    with h5py.File(path, "a") as h5:
        del h5["conv2d_2/conv2d_2/bias:0"]
    with pytest.raises(ValueError, match=r"cut.h5' is damaged Keras weights: layer conv2d_2 lists "
                                         r"\['conv2d_2/bias:0'\] but lacks them"):
        nr.load_model(path)


def test_a_tensor_claiming_more_than_the_file_holds_is_refused_before_it_is_copied(tmp_path):
    state, _ = tdr_state()
    state["sequential.0.weight"] = torch.zeros(1).expand(3, 6, 5, 5)   # 450 elements over one stored number
    with pytest.raises(ValueError, match=r"big.pt' has malformed weights: sequential.0.weight claims 450 elements but "
                                         r"the file holds 1 for it"):
        nr.load_model(save_tdr(tmp_path / "big.pt", "BNCNN", state))


@pytest.mark.parametrize("make, kind", [(lambda t: t.to_sparse(), "sparse_coo tensor on device 'cpu'"),
                                        (lambda t: t.to("meta"), "strided tensor on device 'meta'")])
def test_a_sparse_or_meta_tensor_in_a_lab_checkpoint_is_refused_in_one_sentence(tmp_path, make, kind):
    state, _ = tdr_state()
    state["sequential.0.weight"] = make(state["sequential.0.weight"])
    with pytest.raises(ValueError, match=rf"m.pt' has malformed weights: sequential.0.weight is a {kind}; "
                                         r"expected a dense tensor with its values in the file$"):
        nr.load_model(save_tdr(tmp_path / "m.pt", "BNCNN", state))


def _replace_conv(value):
    """An edit of a Keras file: its first conv layer's group replaced by ``value`` (a link or an array)."""
    def edit(h5):
        del h5["conv2d_1"]
        h5["conv2d_1"] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda h5: h5.attrs.__setitem__("layer_names", 5), r"damaged Keras weights: layer_names is 0-D \(expected a "
                                                        r"list of names\)"),
    (_replace_conv(h5py.SoftLink("/conv2d_1")), r"damaged Keras weights: layer conv2d_1 cannot be opened \(.*\)"),
    (_replace_conv(np.zeros((3, 3))), r"damaged Keras weights: layer conv2d_1 is not a group"),
    (_replace_conv(h5py.ExternalLink("/etc/passwd", "/")),
     r"not self-contained Keras weights: layer conv2d_1 is a link to '/etc/passwd', which is not followed"),
], ids=["scalar layer_names", "link loop", "array for a layer", "external link"])
def test_a_malformed_keras_file_is_one_sentence_naming_it(tmp_path, edit, message):
    """Malformed layouts gave h5py's or numpy's own errors without the file's name (TypeError, KeyError...),
    and an external link was followed out of the file."""
    path = save_keras(tmp_path / "odd.h5", keras_weights())
    with h5py.File(path, "a") as h5:
        edit(h5)
    with pytest.raises(ValueError, match=r"odd.h5' is " + message):
        nr.load_model(path)


def test_a_keras_epsilon_that_is_not_a_number_is_refused(tmp_path):
    """One unreadable epsilon silently dropped all three stored ones (Keras' default 1e-3 was used instead)."""
    path = save_keras(tmp_path / "eps.h5", keras_weights(), nested=True, epsilon="abc")
    with pytest.raises(ValueError, match=r"eps.h5' has a malformed model_config: a BatchNormalization epsilon is "
                                         r"'abc' \(expected a number >= 0\)"):
        nr.load_model(path)


@pytest.mark.parametrize("key, value, message", [
    ("sequential.0.weight", float("nan"), r"sequential.0.weight holds 1 NaN or infinite value of \d+"),
    ("sequential.2.running_var", -1.0, r"sequential.2.running_var holds 1 negative variance \(expected all >= 0\)"),
], ids=["NaN weight", "negative variance"])
def test_bad_values_in_a_lab_checkpoint_are_named_as_the_file_names_them(tmp_path, key, value, message):
    """They were reported under RetinaCNN's names (conv1.weight, bn1.bn.weight), and a negative variance as NaN."""
    state, _ = tdr_state()
    state[key] = state[key].clone()
    state[key].view(-1)[0] = value
    with pytest.raises(ValueError, match=r"bad.pt' has unusable weights: " + message):
        nr.load_model(save_tdr(tmp_path / "bad.pt", "BNCNN", state))


def test_a_negative_keras_variance_is_named(tmp_path):
    layers = keras_weights()
    layers[3][1]["moving_variance"][2] = -0.5
    with pytest.raises(ValueError, match=r"has unusable weights: batch_normalization_1/moving_variance holds 1 "
                                         r"negative variance"):
        nr.load_model(save_keras(tmp_path / "bad.h5", layers))


def test_a_stacked_sub_convolution_without_its_kernel_is_refused(tmp_path):
    """A sub-module with a bias but no weight was skipped: the file loaded as a network with a smaller kernel."""
    state, _ = tdr_state("LinearStackedBNCNN", ksizes=(7, 5))
    del state["sequential.0.convs.1.weight"]
    state["sequential.0.convs.1.bias"] = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"sequential.0.convs.1 holds \['bias'\] but no weight \(a convolution of "
                                         r"the stack\) nor running_mean"):
        nr.load_model(save_tdr(tmp_path / "cut.pt", "LinearStackedBNCNN", state, hyps={}))


# ------------------------------------------------ stacks refused before they are collapsed (size bombs) ---

def _long_stack(state, n, k=3, channels=1):
    """``state`` with sequential.0 replaced by a stack of ``n`` k×k convolutions of ``channels`` channels."""
    state = {key: v for key, v in state.items() if not key.startswith("sequential.0.")}
    for j in range(n):
        cin = HISTORY if j == 0 else channels
        state[f"sequential.0.convs.{j}.weight"] = torch.zeros(channels, cin, k, k)
    return state


@pytest.mark.parametrize("n, k, channels, message", [
    (65, 3, 1, r"the stacked convolution sequential.0 has 65 convolutions, more than the 64 napari-retina collapses"),
    (5, 65, 1, r"the stacked convolution sequential.0 collapses to a 321x321 kernel, wider than the 255 pixels"),
    (10, 3, 8, r"collapsing the stacked convolution sequential.0 \(10 convolutions of up to 8 channels into a 21x21 "
               r"kernel\) would take 6\.1e\+06 multiply-adds, more than the 1e\+06 napari-retina allows"),
], ids=["too many convolutions", "kernel too wide", "too much work (against a lowered limit)"])
def test_a_stack_too_large_to_collapse_is_refused_before_any_is_computed(tmp_path, monkeypatch, n, k, channels,
                                                                         message):
    """A 5.6 MB file of 151 stacked 32-channel convolutions took minutes and GBs before the size check."""
    from napari_retina.formats import tdr

    if channels == 8:
        monkeypatch.setattr(tdr, "MAX_COLLAPSE_MACS", 10**6, raising=False)
    def never(layers):
        raise AssertionError("the stack was collapsed")

    monkeypatch.setattr(tdr, "collapse", never)
    state, _ = tdr_state("LinearStackedBNCNN", ksizes=(7, 5))
    path = save_tdr(tmp_path / "long.pt", "LinearStackedBNCNN", _long_stack(state, n, k, channels), hyps={})
    with pytest.raises(ValueError, match=r"long.pt' cannot be imported: " + message):
        nr.load_model(path)


def test_the_collapse_cost_of_the_labs_stacks_is_far_within_the_limits():
    """collapse_cost from shapes alone: a 15-pixel stack of 8 channels over 40 frames (the lab's default) and a
    25-pixel one of 64 channels pass; the cost counts the conv2d of each composition."""
    from napari_retina.formats._stack import MAX_COLLAPSE_MACS, MAX_STACKED_CONVS, collapse, collapse_cost

    def stack(n, c, history=40):
        return [("conv", torch.zeros(c, history if j == 0 else c, 3, 3), None) for j in range(n)]

    assert collapse_cost(stack(7, 8)) == (15, sum(40 * 8 * 8 * (3 + 2 * j) ** 2 * 9 for j in range(1, 7)))
    side, work = collapse_cost(stack(12, 64))
    assert side == 25 and 12 <= MAX_STACKED_CONVS and work < MAX_COLLAPSE_MACS / 4
    assert collapse(stack(3, 2, 4))[0].shape[-1] == collapse_cost(stack(3, 2, 4))[0]


@pytest.mark.parametrize("key, value, message", [
    ("sequential.0.convs.1.weight", torch.zeros(3, 3, 3),
     r"sequential.0.convs.1.weight has shape \[3, 3, 3\] but \['C', 3, 'k', 'k'\] was expected \(a 2-D convolution "
     r"kernel over the previous convolution's 3 channels\)"),
    ("sequential.0.convs.0.weight", torch.zeros(3, HISTORY, 3),
     r"sequential.0.convs.0.weight has shape \[3, 6, 3\] but \['C', 'in', 'k', 'k'\] was expected"),
    ("sequential.0.convs.0.weight", torch.zeros(3, HISTORY, 3, 5),
     r"sequential.0.convs.0.weight has shape \[3, 6, 3, 5\] but \[3, 6, 5, 5\] was expected \(a square kernel\)"),
    ("sequential.0.convs.2.bias", torch.zeros(7),
     r"sequential.0.convs.2.bias has shape \[7\] but \[3\] was expected \(one bias per channel of "
     r"sequential.0.convs.2.weight\)"),
], ids=["3-D inner kernel", "3-D first kernel", "oblong kernel", "bias of another width"])
def test_a_stacked_convolution_of_the_wrong_shape_names_itself_and_both_shapes(tmp_path, key, value, message):
    """A 3-D inner kernel printed the same shape as found and expected; a 3-D first kernel or a bias of another
    width was torch's RuntimeError from inside the collapse."""
    state, _ = tdr_state("LinearStackedBNCNN", ksizes=(7, 5))
    state[key] = value
    with pytest.raises(ValueError, match=r"bad.pt' cannot be imported: " + message):
        nr.load_model(save_tdr(tmp_path / "bad.pt", "LinearStackedBNCNN", state))


def test_an_inner_batch_norm_of_another_width_than_its_convolution_is_named(tmp_path):
    state, _ = tdr_state("LinearStackedBNCNN", ksizes=(7, 5), inner_bn=True)
    state["sequential.0.convs.1.running_mean"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"sequential.0.convs.1.running_mean has shape \[5\] but \[3\] was expected "
                                         r"\(one per channel of the stack's previous convolution, 3\)"):
        nr.load_model(save_tdr(tmp_path / "bad.pt", "LinearStackedBNCNN", state))


# ---------------------------------------------------- messages stay one short sentence on huge listings ---

def test_a_keras_file_listing_a_layer_twice_is_refused(tmp_path):
    """5000 copies of one name read the layer 5000 times (6 s) and listed all of them (80,000 characters)."""
    path = save_keras(tmp_path / "twice.h5", keras_weights())
    with h5py.File(path, "a") as h5:
        h5.attrs["layer_names"] = [b"conv2d_1"] * 2000
    with pytest.raises(ValueError, match=r"twice.h5' is damaged Keras weights: layer_names lists 'conv2d_1' more "
                                         r"than once \(a Keras model's layer names are unique\)"):
        nr.load_model(path)


def test_unexpected_layers_are_listed_a_few_at_a_time_with_their_count(tmp_path):
    extra = [(f"dense_x{i}", {"kernel": np.zeros((2, 2)), "bias": np.zeros(2)}) for i in range(200)]
    with pytest.raises(ValueError, match=r"does not have a bn_cnn's layers: .*, \.\.\. \(206 in all\)$") as info:
        nr.load_model(save_keras(tmp_path / "many.h5", keras_weights() + extra))
    assert len(str(info.value)) < 600
    state, _ = tdr_state()
    state.update({f"sequential.{100 + i}.weight": torch.zeros(2, 2) for i in range(300)})
    with pytest.raises(ValueError, match=r"does not have a BNCNN's layers: .*, \.\.\. \(306 in all\)$") as info:
        nr.load_model(save_tdr(tmp_path / "many.pt", "BNCNN", state))
    assert len(str(info.value)) < 600
