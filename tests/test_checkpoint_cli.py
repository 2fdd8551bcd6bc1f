"""Bad checkpoints on the command line: one sentence on stderr and exit status 2, never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina.cli import main


def _tiny():
    torch.manual_seed(0)
    return nr.RetinaCNN(nr.ModelConfig(history=6, size=16, channels=(3, 4), kernels=(5, 3), n_cells=2)).eval()


def _edit(payload_change):
    def make(path):
        nr.save_model(_tiny(), path)
        payload = torch.load(path, weights_only=True)
        payload_change(payload)
        torch.save(payload, path)
    return make


def _config(**fields):
    return _edit(lambda p: p.__setitem__("config", json.dumps({**json.loads(p["config"]), **fields})))


def _nan_weights_and_their_checksum(payload):
    """A NaN in conv1 with a checksum that matches it (a model trained to NaN and written by other code:
    nr.save_model refuses such weights)."""
    state = payload["state_dict"]
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    payload["weights_sha256"] = nr.checkpoint.weights_sha256(state)


_nan_weights = _edit(_nan_weights_and_their_checksum)


def _flipped_bit(payload):
    payload["state_dict"]["conv2.weight"].view(torch.int32).view(-1)[7] ^= 1 << 12


def _huge(payload):
    payload["config"] = json.dumps({**json.loads(payload["config"]), "size": 7000})
    payload["state_dict"] = {"conv1.weight": torch.zeros(1)}


BAD = {
    "info_list": (_edit(lambda p: p.__setitem__("info", "[1, 2]")), "has a malformed info: expected a JSON object, got a list"),
    "norm_null": (_config(norm=None), "has an invalid model config: ModelConfig.norm must be a dict"),
    "nan_weights": (_nan_weights, "has unusable weights: conv1.weight holds 1 NaN or infinite value of 450"),
    "flipped_bit": (_edit(_flipped_bit), "is corrupt: its weights hash to SHA-256"),
    "huge_config": (_edit(_huge), "ModelConfig.size must be a positive int up to 1024, got 7000"),
    "wrong_shape": (_edit(lambda p: p["state_dict"].__setitem__("conv1.weight", torch.zeros(9, 6, 5, 5))),
                    "conv1.weight should be [3, 6, 5, 5] but is [9, 6, 5, 5] in the file"),
}


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("name", list(BAD))
def test_bad_checkpoint_is_one_line_with_exit_status_2(tmp_path, capsys, command, name):
    make, match = BAD[name]
    model = tmp_path / f"{name}.pt"
    make(model)
    np.save(tmp_path / "s.npy", np.zeros((10, 16, 16), np.float32))
    data = str(tmp_path / ("s.npy" if command == "predict" else "data.h5"))  # the model loads first
    args = [command, data, "--model", str(model)] + (["--out", str(tmp_path / "o.h5"), "--quiet"] if command == "predict" else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"napari-retina {command}: error: '{model}' ")
    assert match in err
    assert not (tmp_path / "o.h5").exists()


def test_bad_checkpoint_in_a_real_process_prints_no_traceback(tmp_path):
    model = tmp_path / "info_list.pt"
    BAD["info_list"][0](model)
    np.save(tmp_path / "s.npy", np.zeros((10, 16, 16), np.float32))
    src = str(Path(nr.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "napari_retina.cli", "predict", str(tmp_path / "s.npy"), "--model", str(model),
         "--out", str(tmp_path / "o.h5"), "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"napari-retina predict: error: '{model}' has a malformed info: expected a JSON object, got a list"
    )
