"""HDF5 files are not trusted: every dataset the package reads from one goes through ``nr.io``'s one reader,
which checks it before reading (DESIGN.md, "Bad input policy": one sentence, no h5py traceback).

Refused, naming the file and the dataset: a declared size that would not fit (a small file can declare a
terabyte it never stores), declared values never written, data from outside the file (HDF5 external raw storage,
virtual datasets, links into other files), variable-length values; h5py's raw errors on damaged files become one
ValueError. The huge datasets here are declared, not written: the tests stay fast.
"""

import os
import re

import h5py
import numpy as np
import pytest
from test_formats import keras_weights, save_keras

import napari_retina as nr
from napari_retina import batch, io
from napari_retina._napari._reader import read_stimulus_layers
from napari_retina.io import read_dataset, read_stimulus, write_dataset
from napari_retina.model import ModelConfig, RetinaCNN

TERABYTES = (10**6, 1000, 1000)      # float32: 3.64 TiB, more than any machine's memory


def _declared(path, key="stimulus", shape=TERABYTES, write_first=True, **kwargs):
    """A file whose dataset ``key`` declares ``shape`` float32 in chunks of one frame, only its first frame
    written (``write_first``) or none."""
    with h5py.File(path, "a") as h5:
        dataset = h5.create_dataset(key, shape=shape, dtype="f4", chunks=(1,) + tuple(shape[1:]), **kwargs)
        if write_first:
            dataset[0] = 1.0
    return path


def _lab_file(path, cells=2, frames=30, size=20):
    """A dataset in the lab's layout (train and test), 20×20 px, no true rates."""
    rng = np.random.default_rng(0)
    split = lambda: io.Split(rng.standard_normal((frames, size, size)).astype(np.float32),   # noqa: E731
                             rng.gamma(1.0, 0.5, (frames, cells)).astype(np.float32))
    return write_dataset(path, io.Dataset(split(), split(), [f"c{i}" for i in range(cells)], {}))


# ----------------------------------------------------------------------------- size ---

def test_a_declared_size_beyond_the_limit_is_refused_before_reading(tmp_path):
    path = _declared(tmp_path / "bomb.h5")
    with pytest.raises(ValueError, match=re.escape(
            f"the dataset 'stimulus' of {str(path)!r} would take 3.64 TiB in memory (shape (1000000, 1000, 1000), "
            "dtype float32), more than the ")):
        read_stimulus(path)


def test_declared_values_never_written_are_refused(tmp_path):
    """750 frames of 1000×1000 px in a 1.4 KB file: 2.9 GB of zeros were allocated and returned."""
    path = _declared(tmp_path / "empty.h5", shape=(750, 1000, 1000), write_first=False)
    assert path.stat().st_size < 10_000
    with pytest.raises(ValueError, match=re.escape(
            f"the dataset 'stimulus' of {str(path)!r} declares shape (750, 1000, 1000) and dtype float32 but holds "
            "no data: its values were never written to the file")):
        read_stimulus(path)


def test_the_limit_is_half_the_memory_and_says_so(tmp_path, monkeypatch):
    from napari_retina import _validate

    monkeypatch.setattr(_validate, "physical_memory_bytes", lambda: 4 * 2**30)
    assert io.h5_read_limit() == (2 * 2**30, "50% of this machine's 4 GiB memory")
    assert io.h5_read_limit()[0] > 100_000 * 50 * 50 * 4      # a long movie, 100,000 frames of 50×50 float32
    monkeypatch.setattr(_validate, "physical_memory_bytes", lambda: None)
    assert io.h5_read_limit() == (8 * 2**30, "the limit where the system does not say how much memory it has")
    # a written dataset over the limit (made small here) is refused alike, one under it is read
    monkeypatch.setattr(io, "h5_read_limit", lambda: (1000, "a test's limit"))
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        h5["stimulus"] = np.ones((3, 10, 10), np.float32)     # 1200 bytes
        h5["small"] = np.ones((2, 10, 10), np.float32)        # 800 bytes
    with pytest.raises(ValueError, match=r"'stimulus' of .* would take 1.17 KiB in memory \(shape \(3, 10, 10\), "
                                         r"dtype float32\), more than the 1000 bytes one read may take "
                                         r"\(a test's limit\)$"):
        read_stimulus(tmp_path / "s.h5")
    assert read_stimulus(tmp_path / "s.h5", key="small").shape == (2, 10, 10)


def test_a_lab_dataset_declaring_huge_rates_is_refused(tmp_path):
    path = _lab_file(tmp_path / "d.h5")
    with h5py.File(path, "a") as h5:
        del h5["train/response/firing_rate_10ms"]
    _declared(path, "train/response/firing_rate_10ms", shape=(10**6, 10**6))
    with pytest.raises(ValueError, match=r"the dataset 'train/response/firing_rate_10ms' of .*d.h5' would take "
                                         r"3.64 TiB in memory"):
        read_dataset(path)


def test_variable_length_values_are_refused(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        h5["stimulus"] = np.array(["a", "b"], dtype=h5py.string_dtype())
    with pytest.raises(ValueError, match=r"the dataset 'stimulus' of .*s.h5' holds variable-length or reference "
                                         r"values \(dtype object\), not an array of numbers$"):
        read_stimulus(tmp_path / "s.h5")


# ------------------------------------------------------------------- outside data ---

def _external_storage(path, key="stimulus"):
    """``key`` of a new file at ``path`` as 32 bytes of another file (HDF5 external raw storage)."""
    secret = path.parent / "secret.bin"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    with h5py.File(path, "a") as h5:
        h5.create_dataset(key, shape=(1, 4, 8), dtype="u1", external=[(str(secret), 0, 32)])
    return path, secret


def _virtual(path, key="stimulus"):
    """``key`` of a new file at ``path`` as a virtual dataset mapping another file's stack."""
    source = path.parent / "source.h5"
    with h5py.File(source, "w") as h5:
        h5["movie"] = np.full((12, 8, 8), 9, np.float32)
    layout = h5py.VirtualLayout(shape=(12, 8, 8), dtype="f4")
    layout[:] = h5py.VirtualSource(str(source), "movie", shape=(12, 8, 8))
    with h5py.File(path, "a") as h5:
        h5.create_virtual_dataset(key, layout)
    return path, source


def test_external_raw_storage_is_refused(tmp_path):
    """The returned "stimulus" was the other file's bytes (/etc/passwd in the report)."""
    path, secret = _external_storage(tmp_path / "s.h5")
    with pytest.raises(ValueError, match=re.escape(
            f"the dataset 'stimulus' of {str(path)!r} keeps its data outside the file, in {str(secret)!r} (HDF5 "
            "external storage), which is not read; copy the data into the file")):
        read_stimulus(path)


def test_a_virtual_dataset_is_refused(tmp_path):
    path, source = _virtual(tmp_path / "s.h5")
    with pytest.raises(ValueError, match=re.escape(
            f"the dataset 'stimulus' of {str(path)!r} is a virtual dataset that maps {str(source)!r}, which is not "
            "read; copy the data into the file")):
        read_stimulus(path)


def test_a_lab_dataset_with_outside_rates_is_refused(tmp_path):
    path = _lab_file(tmp_path / "d.h5")
    with h5py.File(path, "a") as h5:
        del h5["test/stimulus"]
    _virtual(path, "test/stimulus")
    with pytest.raises(ValueError, match=r"the dataset 'test/stimulus' of .*d.h5' is a virtual dataset"):
        read_dataset(path)


# ------------------------------------------------------------------- batch windows ---

def test_batch_windows_are_checked_like_whole_reads(tmp_path):
    """read_window tried to allocate the whole declared movie (7.63 GiB in the report) when a task read it all."""
    path = _declared(tmp_path / "bomb.h5")
    assert batch.read_window(path, 0, 2).shape == (2, 1000, 1000)      # a window of it is small
    with pytest.raises(ValueError, match=r"^frames 0:1000000 of the dataset 'stimulus' of .*bomb.h5' would take "
                                         r"3.64 TiB in memory"):
        batch.read_window(path, 0, 10**6)
    ext, _ = _external_storage(tmp_path / "ext.h5")
    with pytest.raises(ValueError, match=r"'stimulus' of .*ext.h5' keeps its data outside the file"):
        batch.read_window(ext, 0, 1)
    vds, _ = _virtual(tmp_path / "vds.h5")
    with pytest.raises(ValueError, match=r"'stimulus' of .*vds.h5' is a virtual dataset"):
        batch.read_window(vds, 0, 1)


# ------------------------------------------------------------------ saved analyses ---

def _saved_analysis(path, frames=6, channels=3):
    """The datasets of a saved analysis that the napari reader needs, and no more."""
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as h5:
        h5["stimulus"] = rng.standard_normal((frames, 8, 8)).astype(np.float32)
        h5["attribution/channels"] = rng.standard_normal((frames, channels)).astype(np.float32)
        h5["attribution/response"] = rng.random(frames).astype(np.float32)
        h5["attribution/cells"], h5["attribution/crop_origin"] = np.array([0]), np.zeros(2, np.int64)
        h5.create_group("parameters")
    return path


@pytest.mark.parametrize("case", ["declared", "external storage", "virtual", "external link", "extra"])
def test_a_saved_analysis_reads_its_datasets_as_untrusted(tmp_path, case):
    """The reader read every dataset whole (MemoryError), followed external links and read outside data."""
    from napari_retina.saved import read_analysis

    path = _saved_analysis(tmp_path / "an.h5")
    read_analysis(path)                                   # the file as written reads
    with h5py.File(path, "a") as h5:
        if case != "extra":
            del h5["stimulus"]
        if case == "external link":
            h5["stimulus"] = h5py.ExternalLink(str(_saved_analysis(tmp_path / "other.h5")), "/stimulus")
    if case in ("declared", "extra"):
        key = "stimulus" if case == "declared" else "attribution/junk"
        _declared(path, key, shape=(10**6, 1000, 1000))
        match = rf"^the dataset '{key}' of .*an.h5' would take 3.64 TiB in memory"
    elif case == "external storage":
        _external_storage(path)
        match = r"^the dataset 'stimulus' of .*an.h5' keeps its data outside the file"
    elif case == "virtual":
        _virtual(path)
        match = r"^the dataset 'stimulus' of .*an.h5' is a virtual dataset"
    else:
        match = r"^'stimulus' in .*an.h5' leads into another file, .*other.h5' .*which is not followed"
    if case == "extra":   # a dataset the layers do not need is not read at all, however big it says it is
        assert read_stimulus_layers(str(path))[0][1]["name"] == "an"
        return
    with pytest.raises(ValueError, match=match):
        read_stimulus_layers(str(path))


# ------------------------------------------------------------- evaluate's true rates ---

def _with_true_rates(tmp_path, value):
    """A lab file (2 cells, 30 test frames) whose test/true_rates is ``value`` (an array, a link, a callable
    that edits the open file)."""
    path = _lab_file(tmp_path / "d.h5")
    with h5py.File(path, "a") as h5:
        if callable(value):
            value(h5)
        else:
            h5["test/true_rates"] = value
    return path


TRUE_RATES = {
    "NaN": (np.full((2, 30), np.nan, np.float32), r"^test/true_rates in d.h5 holds NaN or infinite rates$"),
    "-inf": (np.full((2, 30), -np.inf), r"^test/true_rates in d.h5 holds NaN or infinite rates$"),
    "negative": (-np.ones((2, 30)), r"^test/true_rates in d.h5 holds negative rates"),
    "complex": (np.ones((2, 30), complex), r"^test/true_rates in d.h5 must hold numbers .*got dtype complex128$"),
    "text": (np.full((2, 30), b"a", "S3"), r"^test/true_rates in d.h5 must hold numbers .*got dtype \|S3$"),
    "short": (np.ones((2, 29)), r"^test/true_rates in d.h5: the stimulus has 30 frames but the true rates have 29 "
                                r"time bins$"),
    "1-D": (np.ones(30), r"^test/true_rates in d.h5 must be \(cells, T\), got shape \(30,\)$"),
    "other cells": (np.ones((3, 30)), r"^test/true_rates in d.h5 must hold one row per cell of "
                                      r"test/response/firing_rate_10ms, 2, got 3$"),
    "group": (lambda h5: h5.create_group("test/true_rates"),
              r"^'test/true_rates' in .*d.h5' is a group; expected a dataset$"),
    "dangling": (h5py.SoftLink("/nowhere"), r"^'test/true_rates' in .*d.h5' is a link to nothing in the file"),
    "external link": (h5py.ExternalLink("/nonexistent.h5", "/x"),
                      r"^'test/true_rates' in .*d.h5' leads into another file, '/nonexistent.h5'"),
    "declared": (lambda h5: h5.create_dataset("test/true_rates", shape=(10**6, 10**6), dtype="f4",
                                              chunks=(1000, 1000)),
                 r"^the dataset 'test/true_rates' of .*d.h5' would take 3.64 TiB in memory"),
}


@pytest.mark.parametrize("case", list(TRUE_RATES))
def test_evaluates_true_rates_are_checked_as_its_rates(tmp_path, tiny, case):
    """test/true_rates was read unchecked: NaN scored r_true NaN without a word, a link to another file was
    followed, a group or a missing link target gave h5py's KeyError/TypeError, a huge declaration MemoryError."""
    value, match = TRUE_RATES[case]
    path = _with_true_rates(tmp_path, value)
    with pytest.raises(ValueError, match=match):
        nr.evaluate(tiny, path)


def test_evaluates_true_rates_keep_the_picked_cells(tmp_path):
    true = np.stack([np.full(30, 1.0), np.full(30, 2.0)]) + np.linspace(0, 1, 30)
    path = _with_true_rates(tmp_path, true.astype(np.float32))
    model = RetinaCNN(ModelConfig(history=10, size=20, kernels=(5, 5), n_cells=1)).eval()
    ev = nr.evaluate(model, path, cells=[1])
    assert np.isfinite(ev["r_true_mean"])
    from napari_retina import training

    picked = training._read_true_rates(path, [1], 30)
    np.testing.assert_array_equal(picked, true[[1]].T.astype(np.float32))


# ----------------------------------------------------------------------- Keras weights ---

def test_keras_weights_from_outside_the_file_are_refused(tmp_path):
    """External storage and virtual datasets loaded a model from other files' bytes."""
    path = save_keras(tmp_path / "ext.h5", keras_weights())
    with h5py.File(path, "a") as h5:
        del h5["conv2d_2/conv2d_2/bias:0"]
        (tmp_path / "bias.bin").write_bytes(np.zeros(4, "<f8").tobytes())
        h5["conv2d_2"].create_dataset("conv2d_2/bias:0", shape=(4,), dtype="<f8",
                                      external=[(str(tmp_path / "bias.bin"), 0, 32)])
    with pytest.raises(ValueError, match=r"the dataset 'conv2d_2/conv2d_2/bias:0' of .*ext.h5' keeps its data "
                                         r"outside the file"):
        nr.load_model(path)
    with h5py.File(tmp_path / "source.h5", "w") as h5:
        h5["bias"] = np.zeros(4)
    path = save_keras(tmp_path / "vds.h5", keras_weights())
    with h5py.File(path, "a") as h5:
        del h5["conv2d_2/conv2d_2/bias:0"]
        layout = h5py.VirtualLayout(shape=(4,), dtype="f8")
        layout[:] = h5py.VirtualSource(str(tmp_path / "source.h5"), "bias", shape=(4,))
        h5["conv2d_2"].create_virtual_dataset("conv2d_2/bias:0", layout)
    with pytest.raises(ValueError, match=r"the dataset 'conv2d_2/conv2d_2/bias:0' of .*vds.h5' is a virtual dataset"):
        nr.load_model(path)


def test_keras_weights_reached_through_a_soft_link_into_another_file_are_refused(tmp_path):
    other = save_keras(tmp_path / "other.h5", keras_weights(seed=1))
    path = save_keras(tmp_path / "k.h5", keras_weights())
    with h5py.File(path, "a") as h5:
        h5["elsewhere"] = h5py.ExternalLink(str(other), "/")
        del h5["conv2d_1"]
        h5["conv2d_1"] = h5py.SoftLink("/elsewhere/conv2d_1")
    with pytest.raises(ValueError, match=r"in .*k.h5' leads into another file, .*other.h5', which is not followed"):
        nr.load_model(path)


def test_keras_names_that_are_not_text_are_one_sentence(tmp_path):
    """A bare UnicodeDecodeError, naming no file."""
    path = save_keras(tmp_path / "k.h5", keras_weights())
    with h5py.File(path, "a") as h5:
        names = list(h5.attrs["layer_names"])
        h5.attrs["layer_names"] = np.array([b"\xf9conv"] + names[1:], dtype=f"S{max(map(len, names))}")
    with pytest.raises(ValueError, match=r"k.h5' is damaged Keras weights: its HDF5 structure cannot be read "
                                         r"\(UnicodeDecodeError: "):
        nr.load_model(path)


@pytest.mark.parametrize("start, step", [(200, 311), (297, 311), (394, 211), (588, 401)])
def test_keras_weights_with_damaged_structure_are_one_sentence(tmp_path, start, step):
    """h5py's RuntimeError ("bad heap free list"), KeyError or OSError from the layer lookups and attributes,
    naming no file. The damage (every ``step``-th byte from ``start`` flipped, as the tester did) hits the
    symbol tables and heaps of a file save_keras writes, not the superblock."""
    path = save_keras(tmp_path / "k.h5", keras_weights())
    data = bytearray(path.read_bytes())
    for at in range(start, len(data), step):
        data[at] ^= 0x33
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"k.h5' is damaged Keras weights") as info:
        nr.load_model(path)
    assert "\n" not in str(info.value)


def test_npy_and_tiff_reads_have_the_hdf5_memory_limit(tmp_path, monkeypatch):
    """A reliability audit: only HDF5 reads were bounded. A .npy over the limit was loaded (or failed with a bare
    MemoryError naming no file), and a valid TIFF too large to allocate was called "truncated or corrupt"."""
    import tifffile

    stack = np.ones((3, 10, 10), np.float32)    # 1200 bytes
    np.save(tmp_path / "s.npy", stack)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    monkeypatch.setattr(io, "h5_read_limit", lambda: (1000, "a test's limit"))
    for name in ("s.npy", "s.tif"):
        with pytest.raises(ValueError, match=rf"^'.*{name}' would take 1.17 KiB in memory \(shape \(3, 10, 10\), "
                                             r"dtype float32\), more than the 1000 bytes one read may take "
                                             r"\(a test's limit\)$"):
            read_stimulus(tmp_path / name)
    monkeypatch.setattr(io, "h5_read_limit", lambda: (1200, "a test's limit"))
    for name in ("s.npy", "s.tif"):
        np.testing.assert_array_equal(read_stimulus(tmp_path / name), stack)


def test_a_path_that_is_no_regular_file_is_said_to_be_so(tmp_path):
    """A reliability audit: a FIFO (or /dev/null) was "no file at ...", which is false."""
    import os

    os.mkfifo(tmp_path / "pipe.npy")
    with pytest.raises(ValueError, match=r"^'.*pipe\.npy' is not a regular file \(a pipe or a device\?\)$"):
        read_stimulus(tmp_path / "pipe.npy")
    with pytest.raises(FileNotFoundError, match=r"^no file at '.*gone\.npy'$"):
        read_stimulus(tmp_path / "gone.npy")


def test_an_hdf5_file_in_use_is_said_to_be_in_use_not_damaged(tmp_path, tiny):
    """A reliability audit: while another process held HDF5's lock on a file (open for writing), reading it said
    "not a readable HDF5 file" and a saved analysis "is a damaged saved analysis", which may get a good result
    deleted."""
    import subprocess
    import sys

    from napari_retina.analysis import run_analysis

    stim = np.random.default_rng(0).normal(size=(tiny.config.history + 5, 20, 20)).astype(np.float32)
    saved = run_analysis(tiny, stim, steps=2).save(tmp_path / "a.h5")
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        h5["stimulus"] = stim
    hold = ("import h5py, sys, time; files = [h5py.File(p, 'a') for p in sys.argv[1:]]; print('held', flush=True); "
            "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / "s.h5"), str(saved)], stdout=subprocess.PIPE,
                              env={**os.environ, "HDF5_USE_FILE_LOCKING": "TRUE"})
    try:
        assert holder.stdout.readline().strip() == b"held"
        in_use = r"it is in use: another program holds HDF5's lock on it \(open for writing\?\); close it there"
        with pytest.raises(ValueError, match=rf"^'.*s\.h5' cannot be read now: {in_use}"):
            read_stimulus(tmp_path / "s.h5")
        with pytest.raises(ValueError, match=rf"^'.*a\.h5' cannot be read now: {in_use}"):
            nr.read_analysis(saved)
    finally:
        holder.kill()
        holder.wait()
