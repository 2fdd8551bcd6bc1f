"""Review of the file, "your own model" and scale-out parts: defects a scientist would meet, one test each.

Each test failed before its fix (see the commit that added it). Tiny models and short stimuli keep the
file to seconds; batch tasks run in this process (``batch._compute_block``), without a cluster.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_retina as nr

pytest.importorskip("zarr", minversion="3")  # batch's extras (the module itself imports neither)

from napari_retina import batch  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny checkpoint (history 8, 12×12, contrast units) and its folder."""
    d = tmp_path_factory.mktemp("review-fmt")
    torch.manual_seed(0)
    model = nr.RetinaCNN(nr.ModelConfig(history=8, size=12, channels=(3, 3), kernels=(5, 3), n_cells=2)).eval()
    nr.save_model(model, d / "tiny.pt")
    return d


def _blocks(task):
    return [batch._compute_block(task, a, b) for a, b in task.blocks]


# ------------------------------------------------------------------------------------------------ batch


def test_a_split_uint8_movie_equals_the_unsplit_run(tiny):
    """An integer movie is z-scored by its own statistics: the whole movie's, not each block's."""
    rng = np.random.default_rng(0)
    stim = (rng.random((50, 12, 12)) * 255).astype(np.uint8)
    stim[30:] //= 4                                   # a darker second half: blocks differ in mean and std
    np.save(tiny / "u8.npy", stim)
    spec = batch.parse_spec({"model": str(tiny / "tiny.pt"), "stimuli": [str(tiny / "u8.npy")], "cells": [1],
                             "analyses": ["predict", "attribute"], "out": str(tiny / "out"), "block_frames": 16,
                             "steps": 4})
    predict, attribute = batch.plan(spec)
    assert len(predict.blocks) > 1
    model = nr.load_model(tiny / "tiny.pt")
    rates = np.concatenate([b["rates"] for b in _blocks(predict)])
    np.testing.assert_allclose(rates, nr.predict(model, stim), rtol=1e-5, atol=1e-6)
    channels = np.concatenate([b["channels"] for b in _blocks(attribute)])
    direct = nr.attribute(model, stim, cell=1, steps=4, invariance="none")
    np.testing.assert_allclose(channels, direct.channels, rtol=1e-4, atol=1e-6)


def test_a_model_analysis_or_experiment_named_twice_makes_each_task_once(tiny, monkeypatch):
    """Two tasks with one key would write one result twice (and a run's progress never reached its total)."""
    monkeypatch.chdir(tiny)
    np.save(tiny / "f.npy", np.zeros((20, 12, 12), np.float32))
    spec = batch.parse_spec({"model": ["tiny.pt", str(tiny / "tiny.pt"), "default", "default"],
                             "stimuli": ["f.npy", "./f.npy"], "cells": [0],
                             "analyses": ["predict", "attribute", "predict"], "experiments": ["osr", "osr"],
                             "out": "out-dup"})
    keys = [t.key for t in batch.plan(spec)]
    assert len(keys) == len(set(keys)) == 2 * (2 + 1)   # 2 models × (predict, attribute, osr) on 1 stimulus, 1 cell


# ----------------------------------------------------------------------------------------------- io


def _lab_file(path, rates_dtype=np.float32, compress=False):
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        for split in ("train", "test"):
            h5.create_dataset(f"{split}/stimulus", data=rng.standard_normal((120, 12, 12)).astype(np.float32),
                              compression="gzip" if compress else None, chunks=(20, 12, 12) if compress else None)
            rates = rng.random((2, 120))
            h5[f"{split}/response/firing_rate_10ms"] = rates.astype(rates_dtype) if rates_dtype is not str else \
                np.array([["n/a" if v < 0.1 else f"{v:.3f}" for v in row] for row in rates], dtype="S8")
    return path


def test_a_dataset_with_a_damaged_chunk_is_one_sentence_naming_it(tmp_path):
    import h5py

    path = _lab_file(tmp_path / "lab.h5", compress=True)
    with h5py.File(path, "r") as h5:
        offset = h5["train/stimulus"].id.get_chunk_info(2).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 10:offset + 200] = bytes(190)            # a damaged gzip chunk: h5py raises OSError on read
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"cannot read the dataset 'train/stimulus' of .*lab\.h5.*corrupt"):
        nr.io.read_dataset(path)


def test_rates_that_are_not_numbers_are_one_sentence(tmp_path):
    path = _lab_file(tmp_path / "lab.h5", rates_dtype=str)
    with pytest.raises(ValueError, match=r"train/response/firing_rate_10ms in lab\.h5 must hold numbers .*got dtype"):
        nr.io.read_dataset(path)


def _dataset(attrs, cell_names=("on", "off")):
    rng = np.random.default_rng(1)
    split = lambda t: nr.io.Split(rng.standard_normal((t, 12, 12)).astype(np.float32),  # noqa: E731
                                  rng.random((t, 2)).astype(np.float32))
    return nr.io.Dataset(split(100), split(60), list(cell_names), attrs)


def test_a_dataset_with_list_attributes_reads_back_what_was_written(tmp_path):
    """write_dataset then read_dataset: list attributes (a lab's electrode numbers, say) and text come back."""
    attrs = {"electrodes": [3, 5, 9], "gains": [0.5, 2.0], "rig": "rétine 2", "frame_ms": 10.0}
    nr.io.write_dataset(tmp_path / "d.h5", _dataset(attrs))
    back = nr.io.read_dataset(tmp_path / "d.h5")
    assert back.attrs == attrs and back.cell_names == ["on", "off"]
    assert nr.io.read_dataset(tmp_path / "d.h5", cells=[1]).cell_names == ["off"]
    nr.io.write_dataset(tmp_path / "unnamed.h5", _dataset({}, cell_names=()))   # a Dataset's default: no names
    assert nr.io.read_dataset(tmp_path / "unnamed.h5").cell_names == ["cell0", "cell1"]


@pytest.mark.parametrize("names", ["on,off", '["on"]', '{"a": 1}'])
def test_a_malformed_cell_names_attribute_is_one_sentence(tmp_path, names):
    import h5py

    nr.io.write_dataset(tmp_path / "d.h5", _dataset({}))
    with h5py.File(tmp_path / "d.h5", "a") as h5:
        h5.attrs["cell_names"] = names
    with pytest.raises(ValueError, match=r"d\.h5' has a malformed cell_names attribute: expected a JSON list of 2 "
                                         r"names .*got"):
        nr.io.read_dataset(tmp_path / "d.h5")


# ------------------------------------------------------------------------------------------------- wrap


class _Conv2dNet(torch.nn.Module):
    """NTHW windows (N, 8, 12, 12) -> conv -> relu -> a readout of 2 cells."""

    def __init__(self, kernel=(5, 5), padding=0, dtype=torch.float32):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 3, kernel, padding=padding, dtype=dtype)
        h = 12 - kernel[0] + 1 + 2 * (padding if isinstance(padding, int) else padding[0])
        w = 12 - kernel[1] + 1 + 2 * (padding if isinstance(padding, int) else padding[1])
        self.readout = torch.nn.Linear(3 * h * w, 2, dtype=dtype)

    def forward(self, x):
        return torch.nn.functional.softplus(self.readout(torch.relu(self.conv(x)).flatten(1)))


def _stim(frames=20, seed=0):
    return np.random.default_rng(seed).standard_normal((frames, 12, 12)).astype(np.float32)


@pytest.mark.parametrize("kernel, padding", [((5, 3), 0), ((5, 5), (2, 0))])
def test_a_first_conv_with_unequal_y_and_x_gets_no_misplaced_maps(kernel, padding):
    """Maps carry one offset for y and x; a (5, 3) kernel's maps were 8×10 under map_sizes (8,), offset 1."""
    torch.manual_seed(0)
    wrapped = nr.wrap(_Conv2dNet(kernel, padding), input="NTHW", history=8, size=12, first_layer="conv")
    attr = nr.attribute(wrapped, _stim(), cell=0, steps=8)
    assert wrapped.first_conv is None and wrapped.config.map_sizes is None and attr.maps is None
    assert np.isfinite(attr.channels[7:]).all()                  # the units are still attributed, by a hook


def test_a_float64_module_runs_in_float64_and_a_half_one_is_one_sentence():
    """A module in float64 (.double(), as for reference checks) was refused by a torch dtype error on the probe."""
    import copy

    torch.manual_seed(0)
    net = _Conv2dNet()
    w32 = nr.wrap(net, input="NTHW", history=8, size=12, first_layer="conv")
    w64 = nr.wrap(copy.deepcopy(net).double(), input="NTHW", history=8, size=12, first_layer="conv")
    assert w64.first_conv is not None
    np.testing.assert_allclose(nr.predict(w64, _stim()), nr.predict(w32, _stim()), rtol=1e-5, atol=1e-6)
    a64, a32 = (nr.attribute(w, _stim(), cell=0, steps=8) for w in (w64, w32))
    assert a64.channels.dtype == np.float32 and a64.maps.dtype == np.float32
    np.testing.assert_allclose(a64.channels, a32.channels, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a64.maps, a32.maps, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"must compute in float32 or float64 .*got float16 parameters; wrap "
                                         r"module\.float\(\)"):
        nr.wrap(copy.deepcopy(net).half(), input="NTHW", history=8, size=12, first_layer="conv")


# ---------------------------------------------------------------------------------------------- formats


def _keras_file(tmp_path, change=None):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_formats import keras_weights, save_keras

    path = save_keras(tmp_path / "bn_cnn.h5", keras_weights())
    if change is not None:
        import h5py

        with h5py.File(path, "a") as h5:
            change(h5)
    return path


def test_a_keras_array_larger_than_the_bound_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A small HDF5 file can declare a huge unwritten dataset; reading it would allocate all of it."""
    from napari_retina.formats import _net

    def huge(h5):
        del h5["dense_1/dense_1/kernel:0"]
        h5["dense_1"].create_dataset("dense_1/kernel:0", shape=(1_000_000, 3), dtype="f4", chunks=(1000, 3))

    path = _keras_file(tmp_path, huge)
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(_net, "MAX_STATE_NUMBERS", 100_000)   # the bound, lowered: no test allocates gigabytes
    with pytest.raises(ValueError, match=r"layer dense_1's dense_1/kernel:0 holds 3,000,000 numbers "
                                         r"\(shape \[1000000, 3\]\); at most 100,000 are read"):
        nr.load_model(path)


def test_a_damaged_keras_array_is_one_sentence(tmp_path):
    import h5py

    def compressed(h5):
        data = h5["conv2d_1/conv2d_1/kernel:0"][()]
        del h5["conv2d_1/conv2d_1/kernel:0"]
        h5["conv2d_1"].create_dataset("conv2d_1/kernel:0", data=data, compression="gzip", chunks=(1, 5, 6, 3))

    path = _keras_file(tmp_path, compressed)
    with h5py.File(path, "r") as h5:
        offset = h5["conv2d_1/conv2d_1/kernel:0"].id.get_chunk_info(1).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 40] = bytes(40)
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"is damaged Keras weights: layer conv2d_1's conv2d_1/kernel:0 cannot "
                                         r"be read"):
        nr.load_model(path)


@pytest.mark.parametrize("cells", [5, np.int64(5), {"a": 1}])
def test_a_lab_checkpoint_whose_cells_are_not_a_list_is_one_sentence(tmp_path, cells):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_formats import save_tdr, tdr_state

    state, _ = tdr_state()
    path = save_tdr(tmp_path / "lab.pt", "BNCNN", state, cells=cells)
    with pytest.raises(ValueError, match=r"lab\.pt' has malformed cells: expected a list of 3 cell ids"):
        nr.load_model(path)


def test_a_stimulus_file_s_statistics_are_the_whole_stack_s_to_the_bit(tmp_path):
    """Batch blocks z-score an integer movie by the file's statistics, read window by window: the same
    chunks through the same chunked_mean_std as mean_std over the whole stack, so the same numbers."""
    from napari_retina._validate import mean_std

    movie = np.random.default_rng(4).integers(0, 256, (900, 40, 40), dtype=np.uint8)  # 2 chunks of 655 frames
    np.save(tmp_path / "m.npy", movie)
    assert batch._file_mean_std(str(tmp_path / "m.npy")) == mean_std(movie)
    x = movie.astype(np.float64)
    assert mean_std(movie) == pytest.approx((x.mean(), x.std()), rel=1e-12)
