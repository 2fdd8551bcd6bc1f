"""The command line: predict end to end, and one-line errors instead of tracebacks."""

import json

import h5py
import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina.cli import main


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = nr.RetinaCNN(nr.ModelConfig(history=6, size=16, channels=(3, 4), kernels=(5, 3), n_cells=2)).eval()
    return model, nr.save_model(model, tmp_path / "tiny.pt")


def test_predict_writes_rates_matching_the_api(tmp_path, tiny_checkpoint, capsys):
    model, path = tiny_checkpoint
    stim = np.random.default_rng(0).standard_normal((30, 20, 20)).astype(np.float32)
    np.save(tmp_path / "s.npy", stim)
    out = tmp_path / "rates.h5"
    code = main(["predict", str(tmp_path / "s.npy"), "--model", str(path), "--out", str(out), "--crop", "2,3", "--quiet"])
    assert code == 0
    with h5py.File(out) as f:
        rates = f["rates"][()]
        assert json.loads(f.attrs["cell_names"]) == ["cell0", "cell1"]
    np.testing.assert_array_equal(rates, nr.predict(model, stim[:, 2:18, 3:19]))
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, match",
    [
        (["predict", "missing.npy"], "no file"),
        (["predict", "{stim}", "--model", "missing.pt"], "no checkpoint"),
        (["predict", "{stim}", "--model", "{model}"], "20x20 pixels but the model expects 16x16"),
        (["predict", "{stim}", "--model", "{model}", "--device", "tpu"], "device must be"),
    ],
)
def test_errors_are_one_line_with_exit_status_2(tmp_path, tiny_checkpoint, capsys, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "s.npy", np.zeros((10, 20, 20), np.float32))
    args = [a.format(stim=tmp_path / "s.npy", model=tiny_checkpoint[1]) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-retina predict: error:") and len(err.splitlines()) == 1
    assert match in err


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "demo" in out and "predict" in out
