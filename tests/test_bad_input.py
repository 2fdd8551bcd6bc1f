"""The bad-input policy: one clear sentence for each kind of wrong stimulus."""

import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina.model import ModelConfig, RetinaCNN


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RetinaCNN(ModelConfig(history=6, size=16, channels=(3, 4), kernels=(5, 3), n_cells=2)).eval()


def good(t=10):
    return np.zeros((t, 16, 16), np.float32)


@pytest.mark.parametrize(
    "stimulus, error, match",
    [
        (np.zeros((16, 16), np.float32), ValueError, r"\(T, H, W\) stack, got 2 dimension.*single frame"),
        (np.zeros((10, 16, 16, 3), np.float32), ValueError, "RGB"),
        (np.zeros((2, 10, 16, 16), np.float32), ValueError, "got 4 dimension"),
        (np.zeros((3, 16, 16), np.float32), ValueError, "3 frame.*history of 6 frames"),
        (np.zeros((10, 20, 16), np.float32), ValueError, "20x16 pixels but the model expects 16x16.*crop"),
        (np.full((10, 16, 16), np.nan, np.float32), ValueError, "must be finite"),
        (np.array([[[np.inf] * 16] * 16] * 10), ValueError, "must be finite"),
        (np.zeros((0, 16, 16), np.float32), ValueError, "must not be empty"),
        (np.zeros((10, 16, 16), dtype=complex), TypeError, "real numbers"),
        (np.zeros((10, 16, 16), dtype=bool), TypeError, "real numbers"),
        (np.array([["a"]]), TypeError, "real numbers"),
        ("movie.tif", TypeError, r"\(T, H, W\) array of numbers"),
        (None, TypeError, r"\(T, H, W\) array of numbers"),
        ([[[1, 2], [3]]], TypeError, r"\(T, H, W\) array of numbers"),
    ],
)
def test_predict_refuses_bad_stimuli(model, stimulus, error, match):
    with pytest.raises(error, match=match):
        nr.predict(model, stimulus)


def test_error_messages_are_one_sentence(model):
    with pytest.raises(ValueError) as info:
        nr.predict(model, np.zeros((10, 20, 20), np.float32))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("crop, match", [((10, 0), "does not fit"), ("middle", "crop must be"), ((1,), "crop must be")])
def test_bad_crops(model, crop, match):
    with pytest.raises(ValueError, match=match):
        nr.predict(model, np.zeros((10, 20, 20), np.float32), crop=crop)


def test_bad_batch_size_and_model(model):
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        nr.predict(model, good(), batch_size=0)
    with pytest.raises(TypeError, match="model must be a RetinaCNN"):
        nr.predict("model.pt", good())
