"""Bad input to the dataset and results readers and writers, training, evaluation and checkpoints: one
sentence each (DESIGN.md, bad input policy), never numpy's, h5py's or pathlib's; a refused write replaces
nothing and leaves nothing behind."""

import os
import re

import h5py
import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina import training
from napari_retina.io import Dataset, Split
from napari_retina.model import ModelConfig, RetinaCNN

T, SIZE, CELLS = 40, 16, 4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RetinaCNN(ModelConfig(history=6, size=SIZE, channels=(3, 4), kernels=(5, 3), n_cells=CELLS)).eval()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    stim = rng.standard_normal((T, SIZE, SIZE)).astype(np.float32)
    rates = np.abs(rng.standard_normal((T, CELLS))).astype(np.float32)
    return stim, rates


def _listing(folder):
    """Every file under ``folder`` with its bytes: what a refused write must leave as it was."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def no_training(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("training ran before its arguments were checked")

    monkeypatch.setattr(training, "_fit", forbidden)


# ----------------------------------------------------------------------------- A1: rates are numbers


@pytest.mark.parametrize("kind", ["str", "bool"])
def test_rates_that_are_text_or_bools_are_refused_by_evaluate_and_train(model, data, no_training, kind):
    # text was parsed as numbers and bools taken as 0/1: scored (or trained on) without a word
    stim, rates = data
    bad = rates.astype(str) if kind == "str" else rates > 0.5
    match = r"^test rates must hold numbers \(spikes per 10 ms bin, integers or floats\), got dtype"
    with pytest.raises(TypeError, match=match):
        nr.evaluate(model, (stim, bad))
    with pytest.raises(TypeError, match=match.replace("test", "train")):
        nr.train((stim, bad), epochs=1)


def test_bool_rates_in_a_file_are_refused(tmp_path, data):
    stim, rates = data
    with h5py.File(tmp_path / "b.h5", "w") as f:
        for split in ("train", "test"):
            f[f"{split}/stimulus"] = stim
            f[f"{split}/response/firing_rate_10ms"] = (rates > 0.5).T
    with pytest.raises(ValueError, match=r"^train/response/firing_rate_10ms in b\.h5 must hold numbers \(spikes per "
                                         r"10 ms bin\), got dtype bool$"):
        nr.io.read_dataset(tmp_path / "b.h5")


# ----------------------------------------------------------------------------- A2: repeats given as arrays


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: np.zeros((2, 2, 2)), ValueError,
         r"^test repeats must hold the repeats of each of the 4 cells of the rates, \(cells, repeats, T\), got 2 row"),
        (lambda: np.full((CELLS, 2, T), np.nan), ValueError, r"^test repeats of cell 0 holds NaN or infinite rates$"),
        (lambda: -np.ones((CELLS, 2, T)), ValueError, r"^test repeats of cell 0 holds negative rates"),
        (lambda: np.zeros((CELLS, 2, T)).astype(str), TypeError,
         r"^test repeats of cell 0 must hold numbers \(spikes per 10 ms bin, integers or floats\), got dtype <U"),
        (lambda: np.zeros((CELLS, 2, T - 1)), ValueError,
         r"^test repeats of cell 0: the stimulus has 40 frames but the repeats have 39 time bins$"),
        (lambda: np.zeros((CELLS, 0, T)), ValueError,
         r"^test repeats must hold the same number of repeats \(at least 1\) for every cell, got 0 in cell 0$"),
        (lambda: [np.zeros((2, T))] * 3 + [np.zeros((3, T))], ValueError,
         r"^test repeats must hold the same number of repeats .* got 2 in cell 0 but 3 in cell 3$"),
        (lambda: "reps", TypeError, r"^test repeats must be a \(cells, repeats, T\) array of numbers, got str$"),
    ],
    ids=["shape", "nan", "negative", "text", "short", "no-repeats", "uneven", "str"],
)
def test_repeats_of_a_dataset_are_checked_as_a_file_s_are(model, data, make, error, match):
    # a (2, 2, 2) array for 4 cells scored reliability [nan, nan]; NaN gave NaN; text a numpy TypeError
    stim, rates = data
    good = Split(stim, rates)
    with pytest.raises(error, match=match):
        nr.evaluate(model, Dataset(good, Split(stim, rates, make()), [], {}))


def test_good_repeats_given_as_arrays_still_score(model, data):
    stim, rates = data
    reps = np.random.default_rng(1).poisson(1.0, (CELLS, 4, T))          # integers: spike counts
    out = nr.evaluate(model, Dataset(Split(stim, rates), Split(stim, rates, reps), [], {}))
    assert out["repeats"] == 4 and np.isfinite(out["reliability_split_half"]).all()


# ----------------------------------------------------------------------------- A3: one name per cell


def test_cell_names_that_do_not_name_each_cell_are_refused(model, data, no_training):
    # evaluate(..., cells=[0, 1, 2, 3]) of a Dataset with one name raised IndexError: list index out of range
    stim, rates = data
    split = Split(stim, rates)
    match = r"^the Dataset's cell_names must be a list of 4 strings, one per cell of the rates \(or empty\), got 1 "
    with pytest.raises(ValueError, match=match):
        nr.evaluate(model, Dataset(split, split, ["a"], {}), cells=[0, 1, 2, 3])
    with pytest.raises(ValueError, match=match):
        nr.train(Dataset(split, split, ["a"], {}), epochs=1)


# ----------------------------------------------------------------------------- A4: log checked up front


@pytest.mark.parametrize("kw, match", [({"log": 3}, r"^log must be a callable log\(entry\) or None, got int 3$"),
                                       ({"progress": "x"}, r"^progress must be a callable progress\(done, total\)")])
def test_a_log_that_is_not_callable_is_refused_before_any_work(data, monkeypatch, kw, match):
    # log=3 failed only after the first epoch, with "'int' object is not callable"
    def forbidden(*args, **kwargs):
        raise AssertionError("the data were read before log was checked")

    monkeypatch.setattr(training, "_load", forbidden)
    with pytest.raises(TypeError, match=match):
        nr.train(data, epochs=1, **kw)


# ----------------------------------------------------------------------------- B5: write_dataset checks first


def _bad_datasets(stim, rates):
    good = Split(stim, rates)
    return {
        "nan": (Dataset(Split(stim, rates * np.nan), good), ValueError, r"^dataset.train.rates holds NaN or infinite"),
        "lengths": (Dataset(Split(stim[:30], rates[:25]), good), ValueError,
                    r"^dataset.train.rates: the stimulus has 30 frames but the rates have 25 time bins$"),
        "text-stimulus": (Dataset(Split(stim.astype(str), rates), good), TypeError,
                          r"^dataset.train.stimulus must hold real numbers"),
        "bool-rates": (Dataset(good, Split(stim, rates > 0.5)), TypeError,
                       r"^dataset.test.rates must hold numbers .*got dtype bool$"),
        "repeats": (Dataset(good, Split(stim, rates, np.full((CELLS, 2, T), np.inf))), ValueError,
                    r"^dataset.test.repeats of cell 0 holds NaN or infinite rates$"),
        "cells": (Dataset(good, Split(stim, rates[:, :2])), ValueError, r"^train has 4 cells but test has 2$"),
        "frame-size": (Dataset(good, Split(stim[:, :8], rates)), ValueError, r"^train and test stimuli differ in size"),
        "names": (Dataset(good, good, ["a", "b"]), ValueError,
                  r"^dataset.cell_names must be a list of 4 strings, one per cell of the rates \(or empty\), got 2"),
        "nested-attr": (Dataset(good, good, [], {"x": {"a": 1}}), ValueError,
                        r"^dataset.attrs\['x'\] cannot be stored in an HDF5 file: expected a number, a string or a "
                        r"list of them, got dict"),
        "huge-attr": (Dataset(good, good, [], {"n": 2**70}), ValueError, r"^dataset.attrs\['n'\] cannot be stored"),
        "cell_names-attr": (Dataset(good, good, [], {"cell_names": "[]"}), ValueError,
                            r"^dataset.attrs names must be non-empty strings other than 'cell_names'"),
        "split": (Dataset(good, (stim, rates)), TypeError, r"^dataset.test must be an nr.io.Split, got tuple$"),
        "dict": ({"train": good, "test": good}, TypeError, r"^dataset must be an nr.io.Dataset, got dict$"),
    }


@pytest.mark.parametrize("case", list(_bad_datasets(np.zeros((1, 1, 1)), np.zeros((1, 1)))))
def test_write_dataset_refuses_what_read_dataset_would_and_keeps_the_file(tmp_path, data, case):
    # NaN rates and mismatched lengths were written (a file read_dataset refuses, over a good one); a text
    # stimulus, a nested attribute or a dict failed inside numpy or h5py
    stim, rates = data
    nr.io.write_dataset(tmp_path / "d.h5", Dataset(Split(stim, rates), Split(stim, rates)))
    before = _listing(tmp_path)
    dataset, error, match = _bad_datasets(stim, rates)[case]
    with pytest.raises(error, match=match):
        nr.io.write_dataset(tmp_path / "d.h5", dataset)
    assert _listing(tmp_path) == before       # the good file as it was, no temporary beside it
    nr.io.read_dataset(tmp_path / "d.h5")


# ----------------------------------------------------------------------------- B6: the key's type


def test_a_key_that_is_not_a_string_is_named_as_such(tmp_path, data):
    # it was "'ok.h5' is a corrupt HDF5 file: 3 cannot be looked up"
    with h5py.File(tmp_path / "ok.h5", "w") as f:
        f["stimulus"] = data[0]
    match = r"^key must be a string naming an HDF5 dataset, got int 3$"
    with pytest.raises(TypeError, match=match):
        nr.io.read_stimulus(tmp_path / "ok.h5", key=3)
    with pytest.raises(TypeError, match=match):
        nr.io.stimulus_key(tmp_path / "ok.h5", key=3)


# ----------------------------------------------------------------------------- B7: what write_results cannot store


@pytest.mark.parametrize(
    "results, match",
    [
        ({"a/b": np.ones(2), "a": {"b": np.zeros(2)}}, r"^results keys must be names without '/' .*got 'a/b'$"),
        ({"": np.ones(2)}, r"^results keys must be names without '/' .*not empty or '\.', got ''$"),
        ({"a": {"": 1.0}}, r"got 'a/'$"),
        ({1: np.ones(2), "1": np.zeros(2)}, r"^results hold two entries named '1' \(keys 1 and '1'\); rename one$"),
        ({"a": 2**70}, r"^results\['a'\] must be a number, .*got the int 1180591620717411303424, which no 64-bit "
                       r"integer holds$"),
        ({"m": {"a": np.array([{"x": 1}, None], dtype=object)}},
         r"^results\['m/a'\] must be a number, a string, a dict, or an array or list of numbers or strings, got "
         r"ndarray of objects"),
        ({"a": [[1, 2], [3]]}, r"^results\['a'\] must be .*got list of objects"),
        ({"a": b"bytes"}, r"^results\['a'\] must be .*got bytes of dtype \|S5$"),
    ],
    ids=["slash-collision", "empty", "empty-nested", "str-collision", "huge-int", "object-array", "ragged", "bytes"],
)
@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_write_results_refuses_what_it_cannot_store_before_writing(tmp_path, results, match, suffix):
    # .npz dropped one of two arrays named a/b; .h5 failed in h5py ("name already exists", "expected bytes",
    # "Object dtype"); an object array was stored as its repr
    (tmp_path / f"r{suffix}").write_bytes(b"old")
    with pytest.raises(ValueError, match=match):
        nr.io.write_results(tmp_path / f"r{suffix}", results)
    assert _listing(tmp_path) == {f"r{suffix}": b"old"}


def test_write_results_still_stores_numbers_text_and_big_unsigned_ints(tmp_path):
    nr.io.write_results(tmp_path / "r.h5", {"n": 2**63, "s": "x", "names": ["a", "b"], "z": None, "g": {"v": [1.5]}})
    with h5py.File(tmp_path / "r.h5") as f:
        assert int(f.attrs["n"]) == 2**63 and f.attrs["s"] == "x" and f.attrs["names"] == '["a", "b"]'
        assert "z" not in f.attrs and f["g/v"][()].tolist() == [1.5]


# ----------------------------------------------------------------------------- C8: a folder or None as a path


def test_a_folder_where_a_file_is_expected_is_one_value_error(tmp_path, model):
    # read_stimulus and save_model raised IsADirectoryError, not one of the policy's errors; it stays one (callers
    # that catch it still do), and is a ValueError too
    (tmp_path / "dir.npy").mkdir()
    (tmp_path / "dir.pt").mkdir()
    for read in (nr.io.read_stimulus, nr.io.read_dataset, nr.load_model):
        with pytest.raises(ValueError, match=r"dir\.(npy|pt)' is a folder, not a file$") as info:
            read(tmp_path / ("dir.pt" if read is nr.load_model else "dir.npy"))
        assert isinstance(info.value, IsADirectoryError)
    with pytest.raises(ValueError, match=r"^cannot write .*dir\.pt': it is a folder; give a file name inside it$"):
        nr.save_model(model, tmp_path / "dir.pt")
    assert sorted(os.listdir(tmp_path)) == ["dir.npy", "dir.pt"] and not os.listdir(tmp_path / "dir.pt")


@pytest.mark.parametrize("call", [
    lambda m: nr.io.read_stimulus(None),
    lambda m: nr.io.read_dataset(None),
    lambda m: nr.io.stimulus_key(None),
    lambda m: nr.save_model(m, None),
    lambda m: nr.io.write_results(None, {"a": 1}),
    lambda m: nr.io.write_dataset(None, Dataset(Split(np.zeros((2, 2, 2)), np.zeros((2, 1))),
                                                Split(np.zeros((2, 2, 2)), np.zeros((2, 1))))),
], ids=["read_stimulus", "read_dataset", "stimulus_key", "save_model", "write_results", "write_dataset"])
def test_a_path_of_none_is_one_type_error(model, call):
    # pathlib's "expected str, bytes or os.PathLike object, not NoneType"
    with pytest.raises(TypeError, match=r"^path must be a str or os.PathLike, got NoneType$"):
        call(model)


# ----------------------------------------------------------------------------- D9: cell indices are ints


@pytest.mark.parametrize("cells, got", [([1.0], r"float 1\.0"), ([0, True], r"bool True"),
                                        (np.array([0.0]), r"float64 0\.0")])
def test_cell_indices_that_are_not_ints_are_a_type_error(tmp_path, model, data, no_training, cells, got):
    # cells=[1.0] was "cells [1.0] do not exist"
    stim, rates = data
    nr.io.write_dataset(tmp_path / "d.h5", Dataset(Split(stim, rates), Split(stim, rates)))
    match = rf"^cells must be whole cell indices \(ints\), got {got}$"
    with pytest.raises(TypeError, match=match):
        nr.io.read_dataset(tmp_path / "d.h5", cells=cells)
    with pytest.raises(TypeError, match=match):
        nr.evaluate(model, data, cells=cells)
    with pytest.raises(TypeError, match=match):
        nr.train(data, epochs=1, cells=cells)


@pytest.mark.parametrize("name, says", [("stimulus", "it has no suffix"), ("stimulus.txt", "its suffix is '.txt'")])
def test_a_stimulus_file_of_another_suffix_is_named(tmp_path, name, says):
    """The message said "cannot read a stimulus from 'a file without suffix'", naming no file."""
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ValueError, match=rf"^cannot read a stimulus from '{re.escape(str(tmp_path / name))}': {says}, "
                                         r"expected one of \.npy, \.tif, \.tiff, \.h5, \.hdf5$"):
        nr.io.read_stimulus(tmp_path / name)


def test_a_truncated_hdf5_or_tiff_says_so_in_plain_words(tmp_path):
    """HDF5's 'truncated file: eof = …, sblock->base_addr = 0, stored_eof = …' and tifffile's '<tifffile.TiffPages
    @8> invalid page offset' reached the napari notification as they were."""
    import tifffile

    with h5py.File(tmp_path / "whole.h5", "w") as h5:
        h5["stimulus"] = np.zeros((100, 20, 20), np.float32)
    tifffile.imwrite(tmp_path / "whole.tif", np.zeros((30, 20, 20), np.float32))
    for name in ("whole.h5", "whole.tif"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"half{name[5:]}").write_bytes(data[: len(data) // 2])
    size = len((tmp_path / "whole.h5").read_bytes())
    with pytest.raises(ValueError, match=rf"is not a readable HDF5 file: it is truncated \({size // 2:,} of its "
                                         rf"{size:,} bytes are there; an interrupted copy or download\?\)$"):
        nr.io.read_stimulus(tmp_path / "half.h5")
    with pytest.raises(ValueError, match=r"is not a readable TIFF \(truncated or corrupt: invalid page offset \d+\)$"):
        nr.io.read_stimulus(tmp_path / "half.tif")
