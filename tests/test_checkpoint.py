"""Checkpoints: round trip, the shipped model, and refusal of unsafe or broken files."""

import os
import pickle

import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina.model import ModelConfig, RetinaCNN


def tiny():
    torch.manual_seed(0)
    model = RetinaCNN(ModelConfig(history=6, size=16, channels=(3, 4), kernels=(5, 3), n_cells=2))
    with torch.no_grad():
        model.bn1.bn.running_mean.uniform_(-1, 1)
    model.provenance = {"trained_on": "nothing", "seed": 0}
    model.scores = {"test_r": [0.5, 0.6]}
    return model.eval()


def test_round_trip_gives_identical_outputs(tmp_path):
    model = tiny()
    nr.save_model(model, tmp_path / "m.pt")
    loaded = nr.load_model(tmp_path / "m.pt", device="cpu")
    x = torch.randn(5, 6, 16, 16)
    assert torch.equal(model(x), loaded(x))
    assert loaded.config == model.config
    assert loaded.provenance == model.provenance and loaded.scores == model.scores
    assert not loaded.training


def test_shipped_default_model_loads_and_predicts():
    model = nr.load_model(device="cpu")
    assert (model.config.history, model.config.size) == (40, 50)
    assert model.provenance, "the shipped model must say where it came from"
    stim = np.sign(np.random.default_rng(0).standard_normal((45, 50, 50))).astype(np.float32)
    rates = nr.predict(model, stim)
    assert rates.shape == (45, model.config.n_cells) and np.isfinite(rates[39:]).all()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ["NR_EVIL_MARKER"],))


def test_file_that_would_run_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("NR_EVIL_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"format": "napari-retina-checkpoint", "version": 1, "x": _Evil()}, path)
    with pytest.raises(ValueError, match="could execute code"):
        nr.load_model(path)
    assert not marker.exists()
    # the same attack as a plain pickle file
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_Evil(), f)
    with pytest.raises(ValueError):
        nr.load_model(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        nr.load_model(tmp_path / "nope.pt")


def test_corrupt_file(tmp_path):
    model = tiny()
    good = nr.save_model(model, tmp_path / "m.pt")
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        nr.load_model(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="not"):
        nr.load_model(tmp_path / "text.pt")


def test_foreign_torch_file_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a napari-retina checkpoint"):
        nr.load_model(tmp_path / "other.pt")


def test_incompatible_weights_are_refused(tmp_path):
    model = tiny()
    path = nr.save_model(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["conv1.weight"] = torch.zeros(9, 6, 5, 5)
    torch.save(payload, path)
    with pytest.raises(ValueError, match="do not match its own config"):
        nr.load_model(path)


def test_other_version_is_refused(tmp_path):
    path = nr.save_model(tiny(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, path)
    with pytest.raises(ValueError, match="version 99"):
        nr.load_model(path)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = nr.save_model(tiny(), tmp_path / "m.pt")
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        nr.save_model(tiny(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_unavailable_device_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        nr.load_model(device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        nr.load_model(device="tpu")
