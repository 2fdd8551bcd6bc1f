"""napari integration basics: manifest, plugin discovery, reader, sample data.

Run headless under Xvfb (pytest-xvfb starts it); never with QT_QPA_PLATFORM=offscreen.
"""

from __future__ import annotations

import json

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tifffile

import napari_retina as nr

pytest.importorskip("napari")

EXPECTED_SCALE = (nr.FRAME_MS, nr.PIXEL_UM, nr.PIXEL_UM)


def test_manifest_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-retina")
    assert manifest.name == "napari-retina"
    assert manifest.display_name == "napari-retina"
    # and the command-line validator agrees
    out = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-retina"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in (out.stdout + out.stderr).lower()


def test_plugin_discovered_with_contributions():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    assert "napari-retina" in pm._manifests  # noqa: SLF001 - the public API lists it the same way
    mf = pm.get_manifest("napari-retina")
    patterns = set(mf.contributions.readers[0].filename_patterns)
    assert patterns == {"*.npy", "*.tif", "*.tiff", "*.h5", "*.hdf5"}
    assert {s.key for s in mf.contributions.sample_data} == {
        "omitted_flash_train", "moving_bar", "reversing_bar", "white_noise"}
    assert {w.display_name for w in mf.contributions.widgets} == {"Stimulus", "Model", "Analyze", "Experiments"}
    # every command points at something importable
    for cmd in mf.contributions.commands:
        module, _, attr = cmd.python_name.partition(":")
        mod = __import__(module, fromlist=[attr])
        assert callable(getattr(mod, attr)), cmd.python_name


def test_reader_refuses_other_files(tmp_path):
    from napari_retina._napari._reader import napari_get_reader

    assert napari_get_reader(str(tmp_path / "x.png")) is None
    assert napari_get_reader(str(tmp_path / "x.npy")) is not None


def _stack(seed=0):
    return np.random.default_rng(seed).standard_normal((12, 9, 7)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".h5"])
def test_reader_opens_stack_in_viewer(make_napari_viewer, tmp_path, suffix):
    stim = _stack()
    path = tmp_path / f"movie{suffix}"
    if suffix == ".npy":
        np.save(path, stim)
    elif suffix == ".tif":
        tifffile.imwrite(path, stim)
    else:
        with h5py.File(path, "w") as h5:
            h5["train/stimulus"] = stim
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-retina")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.name == "movie"
    np.testing.assert_array_equal(np.asarray(layer.data), stim)
    np.testing.assert_allclose(layer.scale, EXPECTED_SCALE)
    assert tuple(layer.axis_labels) == ("t", "y", "x")
    assert [str(u) for u in layer.units] == ["millisecond", "micrometer", "micrometer"]
    assert layer.metadata["source"] == str(path)
    lim = float(np.abs(stim).max())
    np.testing.assert_allclose(layer.contrast_limits, (-lim, lim), rtol=1e-6)


def test_reader_bad_file_is_one_clear_error(tmp_path):
    from napari_retina._napari._reader import read_stimulus_layers

    path = tmp_path / "rgb.npy"
    np.save(path, np.zeros((4, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        read_stimulus_layers(str(path))


def test_the_reader_opens_a_stack_without_importing_torch(tmp_path):
    """The reader shares the layer helpers with the analysis, which loads torch; opening a file must not."""
    from pathlib import Path

    np.save(tmp_path / "s.npy", np.zeros((3, 4, 4), np.float32))
    code = ("import sys\n"
            "from napari_retina._napari._reader import napari_get_reader\n"
            f"layers = napari_get_reader({str(tmp_path / 's.npy')!r})({str(tmp_path / 's.npy')!r})\n"
            "print(layers[0][0].shape, 'torch' in sys.modules)\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": src})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["(3,", "4,", "4)", "False"]


@pytest.mark.parametrize("key", ["omitted_flash_train", "moving_bar", "reversing_bar", "white_noise"])
def test_sample_data_ready_for_the_shipped_model(make_napari_viewer, key, qtbot):
    from napari_retina._napari import _sample_data

    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-retina", key)
    assert len(layers) == 1
    layer = layers[0]
    data = np.asarray(layer.data)
    cfg = nr.ModelConfig()  # the shipped model's architecture: 40-frame history, 50x50
    assert data.ndim == 3 and data.shape[1:] == (cfg.size, cfg.size)
    assert data.shape[0] >= cfg.history
    assert data.dtype == np.float32
    np.testing.assert_allclose(layer.scale, EXPECTED_SCALE)
    name, generator, params = _sample_data.SAMPLES[key]
    assert layer.metadata["stimulus"] == generator
    assert layer.metadata["parameters"] == params
    # the same generator with the stored parameters reproduces the layer
    np.testing.assert_array_equal(data, getattr(nr.stimuli, generator)(**params))
    # it opens at its first frame, not mid-movie (napari's choice: a dark flash of the flash train, all black)
    assert viewer.dims.current_step[0] == 0
    nr.viewer.set_time(viewer, 100)   # a script's time, set before the event loop runs, stays
    qtbot.wait(20)
    assert viewer.dims.current_step[0] == 10


# ------------------------------------------------------- damaged saved analysis ---

@pytest.fixture(scope="module")
def saved_analysis(tiny, tmp_path_factory):
    from napari_retina.analysis import run_analysis

    res = run_analysis(tiny, nr.stimuli.white_noise(frames=30, size=20, seed=4), cell=0, steps=2, invariance="none")
    return res.save(tmp_path_factory.mktemp("saved") / "an.h5")


def _replace(name, value):
    def damage(h5):
        del h5[name]
        if value is not None:
            h5[name] = value
    return damage


DAMAGE = {
    "no channels": (_replace("attribution/channels", None), "it has no dataset 'attribution/channels' "
                                                            "(expected the channels' attributions, (30, C))"),
    "no reduced response": (_replace("reduction/reduced_response", None),
                            "it has no dataset 'reduction/reduced_response' (expected the reduced circuit's response, "
                            "(30,))"),
    "1-D stimulus": (_replace("stimulus", np.zeros(5, np.float32)),
                     "its dataset 'stimulus' has shape (5,), expected the analysed stimulus, (T, H, W)"),
    "short response": (_replace("attribution/response", np.zeros(29, np.float32)),
                       "its dataset 'attribution/response' has shape (29,), expected the model's response, (30,)"),
    "maps of other channels": (_replace("attribution/maps", np.zeros((30, 2, 16, 16), np.float32)),
                               "its dataset 'attribution/maps' has shape (30, 2, 16, 16), expected the channels' "
                               "maps, (30, 8, h, w)"),
    "no cells": (_replace("attribution/cells", None), "it has no dataset 'attribution/cells' (expected the indices "
                                                      "of the analysed cells)"),
    "no crop origin": (_replace("attribution/crop_origin", None), "it has no dataset 'attribution/crop_origin'"),
    "no kept channels": (_replace("reduction/kept", None), "it has no dataset 'reduction/kept' (expected the "
                                                          "reduction's kept channels)"),
    "no reduction group": (_replace("reduction", None), "it has no dataset 'reduction/kept'"),
    "kept channel out of range": (_replace("reduction/kept", np.array([0, 8])),
                                  "its dataset 'reduction/kept' holds [0, 8], expected distinct indices of the 8 "
                                  "channels"),
}


def test_nr_show_of_a_damaged_saved_analysis_adds_no_layers(make_napari_viewer, saved_analysis, tmp_path):
    import shutil

    path = tmp_path / "damaged.h5"
    shutil.copy(saved_analysis, path)
    with h5py.File(path, "a") as h5:
        _replace("attribution/channels", None)(h5)
    viewer = make_napari_viewer()
    with pytest.raises(ValueError, match=r"damaged saved analysis: it has no dataset 'attribution/channels'"):
        nr.show(path, viewer)
    assert len(viewer.layers) == 0


def _set(name, change):
    """Damage: dataset ``name`` replaced by ``change(its values)`` (same shape, any dtype)."""
    def damage(h5):
        value = change(h5[name][()])
        del h5[name]
        h5[name] = value
    return damage


def _at(index, number, dtype=None):
    """A change that writes ``number`` at ``index`` (as ``dtype``, default the dataset's)."""
    def change(a):
        a = a.astype(dtype or a.dtype)
        a[index] = number
        return a
    return change


def _attr(group, key, value):
    def damage(h5):
        h5[group].attrs[key] = value
    return damage


# values a saved analysis must not hold: each refused before napari sees them (an inf stimulus broke Qt's
# contrast limits and left a broken layer behind)
NOT_FINITE = {
    "inf stimulus": (_set("stimulus", _at((1, 0, 0), np.inf)),
                     "its dataset 'stimulus' holds 1 NaN, infinite or out-of-float32-range value(s) in frame 1"),
    "NaN stimulus": (_set("stimulus", _at((0, 3, 4), np.nan)), "its dataset 'stimulus' holds 1 NaN"),
    "NaN in part of a frame of maps": (_set("attribution/maps", _at((20, 1, 2, 3), np.nan)),
                                       "its dataset 'attribution/maps' holds 1 NaN, infinite or "
                                       "out-of-float32-range value(s) in frame 20"),
    "maps NaN everywhere": (_set("attribution/maps", lambda a: np.full_like(a, np.nan)),
                            "its dataset 'attribution/maps' is NaN in every frame"),
    "inf channel": (_set("attribution/channels", _at((12, 0), -np.inf)),
                    "its dataset 'attribution/channels' holds 1 NaN, infinite or out-of-float32-range value(s) in "
                    "frame 12"),
    "float64 channel beyond float32": (_set("attribution/channels", _at((12, 0), 1e300, np.float64)),
                                       "its dataset 'attribution/channels' holds 1 NaN, infinite or "
                                       "out-of-float32-range value(s) in frame 12"),
    "NaN response in an attributed frame": (_set("attribution/response", _at(15, np.nan)),
                                            "its dataset 'attribution/response' is NaN in frame 15 but "
                                            "'attribution/channels' is not"),
    "NaN reduced response": (_set("reduction/reduced_response", _at(20, np.nan)),
                             "its dataset 'reduction/reduced_response' is NaN in frame 20"),
}

# hostile or corrupt entries: each one sentence naming the file and the entry, never a raw conversion error
HOSTILE = {
    "offset a string": (_attr("attribution", "offset", "abc"),
                        "its 'attribution/offset' is 'abc', expected a pixel offset"),
    "offset negative": (_attr("attribution", "offset", -3), "its 'attribution/offset' is '-3'"),
    "completeness error a string": (_attr("attribution", "completeness_error", "abc"),
                                    "its 'attribution/completeness_error' is 'abc', expected a number >= 0, or NaN"),
    "crop origin NaN": (_replace("attribution/crop_origin", np.array([1.5, np.nan])),
                        "its 'attribution/crop_origin' is '1.5', expected (y0, x0) pixels"),
    "crop origin three numbers": (_replace("attribution/crop_origin", np.array([1, 2, 3])),
                                  "its 'attribution/crop_origin' is '[1 2 3]', expected the (y0, x0) pixel"),
    "cells strings": (_replace("attribution/cells", np.array([b"x"])), "its 'attribution/cells' is \"b'x'\""),
    "cells a JSON list of strings": (lambda h5: (_replace("attribution/cells", None)(h5),
                                                 _attr("attribution", "cells", '["x"]')(h5)),
                                     "its 'attribution/cells' is 'x', expected cell indices"),
    "invariance unknown": (_attr("attribution", "invariance", "sideways"),
                           "its 'attribution/invariance' is 'sideways', expected one of auto, none"),
    "explained variance a string": (_attr("reduction", "explained_variance", "high"),
                                    "its 'reduction/explained_variance' is 'high', expected a fraction of at most 1, "
                                    "or NaN"),
    # a helper's audit: each of these opened, and drew nonsense or broke napari
    "explained variance inf": (_attr("reduction", "explained_variance", np.inf),
                               "its 'reduction/explained_variance' is 'inf', expected a fraction of at most 1"),
    "offset past the stimulus": (_attr("attribution", "offset", 100),
                                 "its 'attribution/offset' is 100, which puts the"),
    "offset of a billion": (_attr("attribution", "offset", 10 ** 9), "its 'attribution/offset' is 1000000000"),
    "kept channels repeated": (_replace("reduction/kept", np.array([1, 1, 1])),
                               "its dataset 'reduction/kept' holds [1, 1, 1], expected distinct indices"),
    "labels of 5,000 characters": (lambda h5: h5["reduction"].attrs.__setitem__(
        "labels", json.dumps(["x" * 5000] * len(json.loads(h5["reduction"].attrs["labels"])))),
        "its attribute 'reduction/labels' is"),
    "labels not text": (lambda h5: h5["reduction"].attrs.__setitem__(
        "labels", json.dumps([{"a": 1}] * len(json.loads(h5["reduction"].attrs["labels"])))),
        "its attribute 'reduction/labels' is"),
}


@pytest.mark.parametrize("case", list(DAMAGE) + list(NOT_FINITE) + list(HOSTILE))
def test_a_damaged_saved_analysis_is_one_sentence_naming_the_file_and_the_dataset(saved_analysis, tmp_path, case):
    """Wrong shapes (DAMAGE), non-finite values (NOT_FINITE) and hostile entries (HOSTILE) alike."""
    import shutil

    from napari_retina._napari._reader import read_stimulus_layers

    damage, sentence = {**DAMAGE, **NOT_FINITE, **HOSTILE}[case]
    path = tmp_path / "damaged.h5"
    shutil.copy(saved_analysis, path)
    with h5py.File(path, "a") as h5:
        damage(h5)
    with pytest.raises(ValueError) as info:
        read_stimulus_layers(str(path))
    assert str(info.value).startswith(f"{str(path)!r} is a damaged saved analysis: {sentence}")
    assert "\n" not in str(info.value)


def test_a_saved_analysis_reads_only_the_datasets_the_layers_need(saved_analysis, tmp_path):
    """An unknown dataset (here one h5py cannot read: a chunk that is not gzip) is left alone, not read."""
    import shutil

    from napari_retina._napari._reader import read_stimulus_layers

    path = tmp_path / "extra.h5"
    shutil.copy(saved_analysis, path)
    with h5py.File(path, "a") as h5:
        h5["attribution"].create_dataset("junk", shape=(4, 4), dtype="f4", chunks=(4, 4), compression="gzip")
        h5["attribution/junk"].id.write_direct_chunk((0, 0), b"not gzip")
    names = [kw["name"] for _, kw, _ in read_stimulus_layers(str(path))]
    assert names[0] == "extra"


def test_a_corrupt_chunk_of_a_saved_analysis_is_one_sentence_naming_the_file_and_the_dataset(saved_analysis,
                                                                                             tmp_path):
    import shutil

    from napari_retina._napari._reader import read_stimulus_layers

    path = tmp_path / "corrupt.h5"
    shutil.copy(saved_analysis, path)
    with h5py.File(path, "a") as h5:
        h5["attribution/maps"].id.write_direct_chunk((0, 0, 0, 0), b"not gzip at all")
    with pytest.raises(ValueError) as info:
        read_stimulus_layers(str(path))
    # one sentence from nr.io's checked HDF5 reader, which every dataset of a saved analysis goes through
    assert str(info.value).startswith(f"cannot read the dataset 'attribution/maps' of {str(path)!r} (truncated or "
                                      "corrupt: ")
    assert "\n" not in str(info.value)


def test_nr_show_of_a_saved_analysis_with_an_inf_stimulus_adds_no_layers(make_napari_viewer, saved_analysis,
                                                                         tmp_path):
    """The inf once reached napari's contrast limits (OverflowError in Qt) and left a broken layer behind."""
    import shutil

    path = tmp_path / "inf.h5"
    shutil.copy(saved_analysis, path)
    with h5py.File(path, "a") as h5:
        NOT_FINITE["inf stimulus"][0](h5)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 4, 4), np.float32), name="mine")
    with pytest.raises(ValueError, match=r"damaged saved analysis: its dataset 'stimulus' holds 1 NaN, infinite"):
        nr.show(path, viewer)
    assert [lay.name for lay in viewer.layers] == ["mine"]
    nr.show(saved_analysis, viewer)   # the viewer still works
    assert "an" in [lay.name for lay in viewer.layers]
