"""sample_data/: the small files the README lists open in the plugin's reader and are reproducible."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import napari_retina as nr
from napari_retina._napari._reader import napari_get_reader

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data"


def _script():
    spec = importlib.util.spec_from_file_location("make_sample_data", ROOT / "scripts" / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, dtype", [("naturalistic_movie.tif", np.uint8), ("synthetic_recording.h5", np.float32)])
def test_sample_file_opens_as_a_stimulus_layer(name, dtype):
    path = SAMPLES / name
    reader = napari_get_reader(str(path))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(path))
    assert kind == "image" and data.ndim == 3 and data.shape[1:] == (50, 50) and data.dtype == dtype
    assert data.shape[0] >= 200
    assert kwargs["scale"] == (nr.FRAME_MS, nr.PIXEL_UM, nr.PIXEL_UM)
    assert data.std() > 0


def test_synthetic_recording_is_a_lab_dataset_of_the_ground_truth():
    ds = nr.io.read_dataset(SAMPLES / "synthetic_recording.h5")
    assert ds.train.stimulus.shape == (400, 50, 50) and ds.train.rates.shape == (400, 4)
    assert ds.test.stimulus.shape == (200, 50, 50) and ds.test.repeats.shape == (4, 5, 200)
    np.testing.assert_allclose(ds.test.rates, ds.test.repeats.mean(axis=1).T, rtol=1e-6)
    truth = nr.synthetic.Retina(seed=0).respond(ds.test.stimulus)
    valid = ~np.isnan(truth).any(axis=1)
    r = [np.corrcoef(truth[valid, c], ds.test.rates[valid, c])[0, 1] for c in range(4)]
    assert min(r) > 0.8


def test_sample_files_are_what_the_script_writes(tmp_path):
    script = _script()
    script.naturalistic_tiff(tmp_path / "movie.tif")
    script.synthetic_recording(tmp_path / "rec.h5")
    np.testing.assert_array_equal(nr.io.read_stimulus(tmp_path / "movie.tif"),
                                  nr.io.read_stimulus(SAMPLES / "naturalistic_movie.tif"))
    a, b = nr.io.read_dataset(tmp_path / "rec.h5"), nr.io.read_dataset(SAMPLES / "synthetic_recording.h5")
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(a, split).stimulus, getattr(b, split).stimulus)
        np.testing.assert_array_equal(getattr(a, split).rates, getattr(b, split).rates)
