"""Reading stimuli and datasets, writing results."""

import csv
import re
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import tifffile

from napari_retina.io import (
    Dataset,
    Split,
    read_dataset,
    read_split,
    read_stimulus,
    trace_columns,
    write_dataset,
    write_results,
    write_traces_csv,
)


@pytest.fixture
def stack():
    return np.random.default_rng(0).standard_normal((12, 8, 9)).astype(np.float32)


def test_reads_npy_tif_and_h5(tmp_path, stack):
    np.save(tmp_path / "s.npy", stack)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["train/stimulus"] = stack * 2
        f["test/stimulus"] = stack
    np.testing.assert_array_equal(read_stimulus(tmp_path / "s.npy"), stack)
    np.testing.assert_array_equal(read_stimulus(tmp_path / "s.tif"), stack)
    np.testing.assert_array_equal(read_stimulus(tmp_path / "s.h5"), stack)  # test/ before train/
    np.testing.assert_array_equal(read_stimulus(tmp_path / "s.h5", key="train/stimulus"), stack * 2)


def test_uint8_tiff_keeps_its_dtype(tmp_path):
    raw = np.random.default_rng(1).integers(0, 255, (5, 8, 8)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "raw.tiff", raw)
    out = read_stimulus(tmp_path / "raw.tiff")
    assert out.dtype == np.uint8 and np.array_equal(out, raw)


def test_stimulus_file_errors(tmp_path, stack):
    with pytest.raises(FileNotFoundError, match="no file"):
        read_stimulus(tmp_path / "missing.npy")
    (tmp_path / "s.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="expected one of .npy"):
        read_stimulus(tmp_path / "s.png")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["movie"] = stack
    with pytest.raises(ValueError, match="has none of the datasets.*movie"):
        read_stimulus(tmp_path / "other.h5")
    with pytest.raises(ValueError, match="no dataset 'frames'"):
        read_stimulus(tmp_path / "other.h5", key="frames")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        read_stimulus(tmp_path / "bad.h5")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled objects are refused"):
        read_stimulus(tmp_path / "obj.npy")
    np.save(tmp_path / "rgb.npy", np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        read_stimulus(tmp_path / "rgb.npy")


def make_dataset(t_train=30, t_test=20, cells=3, seed=0):
    rng = np.random.default_rng(seed)
    split = lambda t: Split(
        rng.standard_normal((t, 8, 8)).astype(np.float32),
        rng.gamma(1.0, 0.5, (t, cells)).astype(np.float32),
        rng.poisson(0.5, (cells, 4, t)).astype(np.float32),
    )
    return Dataset(split(t_train), split(t_test), [f"c{i}" for i in range(cells)], {"source": "test"})


def test_dataset_round_trip_in_the_lab_layout(tmp_path):
    data = make_dataset()
    write_dataset(tmp_path / "d.h5", data)
    with h5py.File(tmp_path / "d.h5") as f:  # the lab's layout, cells first
        assert f["train/response/firing_rate_10ms"].shape == (3, 30)
        assert f["test/repeats/cell01"].shape == (4, 20)
    back = read_dataset(tmp_path / "d.h5")
    for name in ("train", "test"):
        a, b = getattr(data, name), getattr(back, name)
        np.testing.assert_array_equal(a.stimulus, b.stimulus)
        np.testing.assert_array_equal(a.rates, b.rates)
        np.testing.assert_array_equal(a.repeats, b.repeats)
    assert back.cell_names == ["c0", "c1", "c2"] and back.attrs["source"] == "test"
    sub = read_dataset(tmp_path / "d.h5", cells=[2, 0])
    np.testing.assert_array_equal(sub.train.rates, data.train.rates[:, [2, 0]])
    assert sub.cell_names == ["c2", "c0"]
    # every cell, reordered: the names follow the rates (they stayed c0, c1, c2)
    perm = read_dataset(tmp_path / "d.h5", cells=[2, 1, 0])
    np.testing.assert_array_equal(perm.train.rates, data.train.rates[:, [2, 1, 0]])
    assert perm.cell_names == ["c2", "c1", "c0"]


def _corrupt(path, key, value):
    with h5py.File(path, "a") as f:
        del f[key]
        if value is not None:
            f[key] = value


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("train/response/firing_rate_10ms", None, "missing the dataset 'train/response/firing_rate_10ms'"),
        ("test/stimulus", None, "missing the dataset 'test/stimulus'"),
        ("train/response/firing_rate_10ms", np.ones((3, 29)), "30 frames but the rates have 29"),
        ("train/response/firing_rate_10ms", np.full((3, 30), np.nan), "NaN or infinite rates"),
        ("test/response/firing_rate_10ms", -np.ones((3, 20)), "negative rates"),
        ("test/response/firing_rate_10ms", np.ones((2, 20)), "train has 3 cells but test has 2"),
        ("test/stimulus", np.zeros((20, 9, 9)), "differ in size"),
    ],
)
def test_bad_datasets_are_refused(tmp_path, key, value, match):
    write_dataset(tmp_path / "d.h5", make_dataset())
    _corrupt(tmp_path / "d.h5", key, value)
    with h5py.File(tmp_path / "d.h5", "a") as f:  # repeats for the test rates' cells only: the one problem is `key`
        for name in list(f["test/repeats"])[f["test/response/firing_rate_10ms"].shape[0]:]:
            del f[f"test/repeats/{name}"]
    with pytest.raises(ValueError, match=match):
        read_dataset(tmp_path / "d.h5")


def _with_repeats(path, names, t_test=20, cells=3):
    """A dataset whose test repeats are stored under ``names`` (in that order), each filled with its position in
    ``names``, so which dataset went to which cell can be read back."""
    data = make_dataset(t_test=t_test, cells=cells)
    data.test.repeats = None
    write_dataset(path, data)
    with h5py.File(path, "a") as f:
        for i, name in enumerate(names):
            f[f"test/repeats/{name}"] = np.full((2, t_test), i, np.float32)
    return path


@pytest.mark.parametrize("cells, name", [(12, "cell{}"), (102, "cell{:02d}")], ids=["unpadded", "2-digit-past-99"])
def test_repeats_go_to_the_cell_their_name_numbers(tmp_path, cells, name):
    # sorted as text, cell10 came before cell2 (and cell100 before cell11): repeats silently given to the wrong cells
    path = _with_repeats(tmp_path / "d.h5", [name.format(c) for c in range(cells)], cells=cells)
    repeats = read_dataset(path).test.repeats
    np.testing.assert_array_equal(repeats[:, 0, 0], np.arange(cells))
    np.testing.assert_array_equal(read_dataset(path, cells=[11, 2]).test.repeats[:, 0, 0], [11, 2])


@pytest.mark.parametrize(
    "names, match",
    [
        (["cell00", "cell01", "trial2"], r"test/repeats/trial2 in d\.h5 is not named after a cell: test/repeats holds "
                                         r"one \(repeats, T\) dataset per row of the rates, named cell0 to cell2"),
        (["cell0", "cell1", "cell01", "cell2"],
         r"test/repeats in d\.h5 holds cell01 and cell1, which both name cell 1"),
        (["cell0", "cell2"], r"test/repeats in d\.h5 must hold the repeats of each of the 3 cells of its rates, cell0 "
                             r"to cell2 \(numbered from 0 as the rates' rows\), but cell 1 has none$"),
        (["cell1", "cell2", "cell3"], r"but cell 0 has none and cell 3 is not a row of the rates$"),  # numbered from 1
    ],
    ids=["no-cell-number", "duplicate", "gap", "from-1"],
)
def test_repeats_that_do_not_name_each_cell_once_are_refused(tmp_path, names, match):
    # these were read in text order, or dropped without a word when their count differed from the cells'
    path = _with_repeats(tmp_path / "d.h5", names)
    with pytest.raises(ValueError, match=match):
        read_dataset(path)


@pytest.mark.parametrize("shape", [(3, 4, 20), (4, 3, 20), (4, 20, 3)], ids=["cells-first", "repeats-first", "record"])
def test_repeats_as_one_dataset_are_refused_naming_the_layout(tmp_path, shape):
    # "'Dataset' object has no attribute 'keys'" before; the order of its axes cannot be told in general
    data = make_dataset()
    data.test.repeats = None
    write_dataset(tmp_path / "d.h5", data)
    with h5py.File(tmp_path / "d.h5", "a") as f:
        f["test/repeats"] = np.ones(shape, np.float32)
    with pytest.raises(ValueError, match=rf"^test/repeats in d\.h5 is one dataset of shape {re.escape(str(shape))}, "
                                         r"but the lab layout stores the repeats as a group of one \(repeats, T\) "
                                         r"dataset per row of the rates, test/repeats/cell00, test/repeats/cell01"):
        read_dataset(tmp_path / "d.h5")


def _nan_in_one(reps):
    reps = reps.copy()
    reps[1, 5] = np.nan
    return reps


@pytest.mark.parametrize(
    "value, match",
    [
        (_nan_in_one, r"^test/repeats/cell02 in d\.h5 holds NaN or infinite rates$"),
        (lambda r: np.where(r > 0, np.inf, r), r"^test/repeats/cell02 in d\.h5 holds NaN or infinite rates$"),
        (lambda r: r - 1, r"^test/repeats/cell02 in d\.h5 holds negative rates \(min -1\); rates must be >= 0$"),
        (lambda r: r[:, :17], r"^test/repeats/cell02 in d\.h5: the stimulus has 20 frames but the repeats have 17 "
                              r"time bins$"),
        (lambda r: r[0], r"^test/repeats/cell02 in d\.h5 must be \(repeats, T\), got shape \(20,\)$"),
        (lambda r: r.astype("S3"),
         r"^test/repeats/cell02 in d\.h5 must hold numbers \(spikes per 10 ms bin\), got dtype"),
        (lambda r: r[:3], r"^test/repeats in d\.h5 must hold the same number of repeats \(at least 1\) for every "
                          r"cell, got 4 in cell00 but 3 in cell02$"),
    ],
    ids=["nan", "inf", "negative", "short", "1-d", "text", "fewer-trials"],
)
def test_bad_repeats_are_refused_as_bad_rates_are(tmp_path, value, match):
    # NaN, inf and negative trials were accepted (reliability NaN, or a mean over the rest); the wrong length or
    # shape dropped every cell's repeats without a word (repeats None)
    write_dataset(tmp_path / "d.h5", make_dataset())
    with h5py.File(tmp_path / "d.h5", "a") as f:
        reps = f["test/repeats/cell02"][()]
        del f["test/repeats/cell02"]
        f["test/repeats/cell02"] = value(reps)
    with pytest.raises(ValueError, match=match):
        read_dataset(tmp_path / "d.h5")


def test_rates_in_hz_warn_once_naming_the_file(tmp_path):
    # rates in Hz trained badly and were reported as spikes per 10 ms bin, 100x off, without a word
    data = make_dataset()
    data.train.rates = data.train.rates * 100   # gamma(1, 0.5) per bin: 50 "Hz" on average
    write_dataset(tmp_path / "hz.h5", data)
    with pytest.warns(UserWarning) as caught:
        read_dataset(tmp_path / "hz.h5")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and caught[0].filename == __file__, messages
    assert re.fullmatch(r"the rates in hz\.h5 look like Hz, not spikes per 10 ms bin: in "
                        r"train/response/firing_rate_10ms 3 of 3 cells average more than 5 spikes per 10 ms bin "
                        r"\(up to [0-9.]+\), beyond any ganglion cell \(rates in Hz fit badly and come out 100× "
                        r"too large as spikes per bin: divide them by 100\)", messages[0]), messages[0]
    data.test.rates = data.test.rates * 100
    write_dataset(tmp_path / "hz2.h5", data)
    with pytest.warns(UserWarning, match=r"in train/.* and in test/response/firing_rate_10ms 3 of 3 cells"):
        read_dataset(tmp_path / "hz2.h5")
    with pytest.warns(UserWarning, match=r"hz2\.h5 look like Hz.*: in test/response/firing_rate_10ms 1 of 1 cell "
                                         r"averages more than 5"):
        read_split(tmp_path / "hz2.h5", "test", cells=[1])


def test_spike_counts_per_bin_do_not_warn(tmp_path):
    import warnings

    from napari_retina import synthetic

    path = synthetic.make_dataset(tmp_path / "syn.h5", frames=300, test_frames=60, repeats=2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_dataset(path)
        read_split(path, "test")
    assert read_dataset(path).train.rates.mean(0).max() > 1   # a busy cell, but per bin


def test_selecting_missing_cells_is_refused(tmp_path):
    write_dataset(tmp_path / "d.h5", make_dataset())
    with pytest.raises(ValueError, match=r"cells \[5\] do not exist: the file has 3 cells"):
        read_dataset(tmp_path / "d.h5", cells=[0, 5])
    # a float index reached NumPy's indexing (IndexError: only integers, slices ...), then was called missing
    with pytest.raises(TypeError, match=r"^cells must be whole cell indices \(ints\), got float 1\.0$"):
        read_dataset(tmp_path / "d.h5", cells=[1.0])
    # one index is one cell ("'int' object is not iterable" before); a text is not a list of indices
    one = read_dataset(tmp_path / "d.h5", cells=np.int64(2))
    assert one.train.rates.shape[1] == 1 and one.cell_names == read_dataset(tmp_path / "d.h5").cell_names[2:]
    with pytest.raises(TypeError, match=r"cells must be a list of cell indices, got str '0'"):
        read_dataset(tmp_path / "d.h5", cells="0")


def test_write_results_h5_and_npz(tmp_path):
    results = {"rates": np.arange(6.0).reshape(3, 2), "meta": {"name": "osr", "steps": 50, "periods": [2, 4]}}
    write_results(tmp_path / "r.h5", results)
    with h5py.File(tmp_path / "r.h5") as f:
        np.testing.assert_array_equal(f["rates"][()], results["rates"])
        assert f["meta"].attrs["name"] == "osr" and f["meta"].attrs["steps"] == 50
        np.testing.assert_array_equal(f["meta/periods"][()], [2, 4])
    write_results(tmp_path / "r.npz", results)
    with np.load(tmp_path / "r.npz") as z:
        np.testing.assert_array_equal(z["rates"], results["rates"])
        assert str(z["meta/name"]) == "osr"
    with pytest.raises(ValueError, match=".h5, .hdf5 or .npz"):
        write_results(tmp_path / "r.csv", results)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_results(tmp_path / "nope" / "r.h5", results)


# ---------------------------------------------------- damaged stimulus files ---

def _stimulus_files(folder, stack):
    """A .npy, a .tif and an .h5 of ``stack`` (20 frames), by suffix."""
    np.save(folder / "full.npy", stack)
    tifffile.imwrite(folder / "full.tif", stack)
    with h5py.File(folder / "full.h5", "w") as f:
        f["stimulus"] = stack
    return {s: (folder / f"full{s}").read_bytes() for s in (".npy", ".tif", ".h5")}


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".h5"])
def test_empty_stimulus_file_is_one_sentence(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(f"{str(path)!r} is empty (0 bytes), expected a {suffix} stimulus")):
        read_stimulus(path)


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".h5"])
@pytest.mark.parametrize("keep", [0.02, 0.3, 0.6, 0.95])
def test_truncated_stimulus_file_is_a_value_error_naming_it(tmp_path, suffix, keep):
    stack = np.random.default_rng(0).standard_normal((20, 16, 16)).astype(np.float32)
    data = _stimulus_files(tmp_path, stack)[suffix]
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=re.escape(repr(str(path)))):
        read_stimulus(path)


def test_truncated_npy_says_how_much_is_missing(tmp_path):
    stack = np.zeros((20, 8, 8), np.float32)
    np.save(tmp_path / "s.npy", stack)
    data = (tmp_path / "s.npy").read_bytes()
    (tmp_path / "s.npy").write_bytes(data[:-5000])
    with pytest.raises(ValueError, match=r"is truncated: its header describes a \(20, 8, 8\) float32 array of "
                                         r"5120 bytes but only 120 bytes follow"):
        read_stimulus(tmp_path / "s.npy")
    (tmp_path / "junk.npy").write_bytes(b"these are not numpy bytes")
    with pytest.raises(ValueError, match="junk.npy' is not a .npy file or its header is corrupt"):
        read_stimulus(tmp_path / "junk.npy")


def test_truncated_multipage_tiff_is_refused_not_read_short(tmp_path):
    """tifffile logs a page offset past the end and returns the pages it found: refused instead."""
    stack = np.random.default_rng(0).standard_normal((20, 16, 16)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", stack, contiguous=False, metadata=None)  # one IFD per page
    data = (tmp_path / "s.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[:21049])  # the IFD chain breaks after 3 pages
    with pytest.raises(ValueError, match=r"cut.tif' is not a readable TIFF \(truncated or corrupt: .*invalid page"):
        read_stimulus(tmp_path / "cut.tif")


@pytest.mark.parametrize("compression", ["tiff_lzw", "jpeg"])
def test_compressed_tiffs_as_fiji_and_pil_write_them_are_read(tmp_path, compression):
    """LZW (Fiji's choice) and JPEG TIFFs need the imagecodecs package, a dependency."""
    from PIL import Image

    frames = np.random.default_rng(2).integers(0, 256, (6, 16, 16)).astype(np.uint8)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / "c.tif", save_all=True, append_images=images[1:], compression=compression)
    out = read_stimulus(tmp_path / "c.tif")
    assert out.shape == frames.shape and out.dtype == np.uint8
    if compression == "tiff_lzw":  # lossless
        np.testing.assert_array_equal(out, frames)
    else:  # lossy: as PIL decodes it, within a decoder's rounding
        with Image.open(tmp_path / "c.tif") as im:
            ref = [np.asarray(im.seek(i) or im) for i in range(len(frames))]
        np.testing.assert_allclose(out, np.stack(ref), atol=2)


def test_a_2d_dataset_that_is_no_image_gets_no_single_frame_hint(tmp_path):
    with h5py.File(tmp_path / "rec.h5", "w") as f:
        f["train/response/firing_rate_10ms"] = np.ones((4, 400), np.float32)
        f["frame"] = np.zeros((50, 50), np.float32)
    with pytest.raises(ValueError) as info:
        read_stimulus(tmp_path / "rec.h5", key="train/response/firing_rate_10ms")
    assert str(info.value) == ("the stimulus 'train/response/firing_rate_10ms' in rec.h5 must be a (T, H, W) stack, "
                               "got 2 dimension(s) with shape (4, 400)")
    with pytest.raises(ValueError, match=r"shape \(50, 50\) \(a single frame: add a time axis\)$"):
        read_stimulus(tmp_path / "rec.h5", key="frame")


def test_a_folder_named_like_a_stimulus_is_called_a_folder(tmp_path):
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(IsADirectoryError, match=re.escape(f"{str(tmp_path / 'dir.npy')!r} is a folder, not a file")):
        read_stimulus(tmp_path / "dir.npy")


def _with_missing_filter(tmp_path):
    """A stimulus compressed with HDF5 filter 32001 (Blosc), which this h5py has not: an LZF file (filter 32000,
    built into h5py) whose pipeline message is patched to name 32001."""
    with h5py.File(tmp_path / "lzf.h5", "w") as f:
        f.create_dataset("stimulus", data=np.zeros((10, 8, 8), np.float32), chunks=(5, 8, 8), compression="lzf")
    data = bytearray((tmp_path / "lzf.h5").read_bytes())
    at = data.rfind(b"\x00\x7d", 0, data.find(b"lzf"))   # the filter id, 32000 little-endian, before its name
    data[at] = 0x01
    (tmp_path / "blosc.h5").write_bytes(bytes(data))
    if h5py.h5z.filter_avail(32001):
        pytest.skip("this HDF5 has the Blosc filter")
    return tmp_path / "blosc.h5"


def test_a_compression_filter_that_is_not_installed_is_named(tmp_path):
    path = _with_missing_filter(tmp_path)
    with pytest.raises(ValueError) as info:
        read_stimulus(path)
    message = str(info.value)
    assert message.startswith(f"cannot read the dataset 'stimulus' of {str(path)!r}: it is compressed with the "
                              "filter ")
    assert "(HDF5 filter 32001), which is not installed here" in message
    assert "corrupt" not in message and "plugin)" not in message and "\n" not in message


def test_corrupt_hdf5_structure_is_a_value_error(tmp_path):
    stack = np.zeros((20, 8, 8), np.float32)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["stimulus"] = stack
    data = bytearray((tmp_path / "s.h5").read_bytes())
    for q in range(300, 1500, 41):  # damage the object headers and heaps, not the superblock
        data[q] ^= 0xFF
    (tmp_path / "bad.h5").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bad.h5' is a corrupt HDF5 file: 'stimulus' cannot be looked up"):
        read_stimulus(tmp_path / "bad.h5")


def test_soft_links_and_absolute_keys_are_followed_inside_the_file(tmp_path, stack):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["data/movie"] = stack
        f["stimulus"] = h5py.SoftLink("/data/movie")          # absolute target
        f["data/alias"] = h5py.SoftLink("movie")              # relative target
        f["chain"] = h5py.SoftLink("/stimulus")                # a link to a link
        f["dir"] = h5py.SoftLink("/data")                      # a link to a group
        f["nowhere"] = h5py.SoftLink("/missing")
    np.testing.assert_array_equal(read_stimulus(tmp_path / "s.h5"), stack)   # found by its default name
    for key in ("stimulus", "/stimulus", "/data/movie", "data/alias", "chain", "dir/movie", "/dir/alias"):
        np.testing.assert_array_equal(read_stimulus(tmp_path / "s.h5", key=key), stack)
    with pytest.raises(ValueError, match=re.escape(
            "has no dataset 'nowhere'; it has ['chain', 'stimulus', 'data/alias', 'data/movie']")):
        read_stimulus(tmp_path / "s.h5", key="nowhere")   # a dangling link, and the list names the links
    with pytest.raises(ValueError, match="no dataset 'dir'"):
        read_stimulus(tmp_path / "s.h5", key="dir")        # a group, not a dataset


def test_soft_link_loop_is_one_sentence(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["a"] = h5py.SoftLink("/b")
        f["b"] = h5py.SoftLink("/a")
    with pytest.raises(ValueError, match=r"'a' in .*s.h5' is a chain of more than 32 soft links"):
        read_stimulus(tmp_path / "s.h5", key="a")


def test_external_links_are_refused_not_followed(tmp_path, stack):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["movie"] = stack
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["stimulus"] = h5py.ExternalLink("other.h5", "/movie")
        f["ext"] = h5py.ExternalLink("other.h5", "/")
        f["soft"] = h5py.SoftLink("/ext/movie")                # inside the file, then out of it
    for key in ("stimulus", "/stimulus", None):
        with pytest.raises(ValueError, match=re.escape(
                f"{key or 'stimulus'!r} in {str(tmp_path / 's.h5')!r} leads into another file, 'other.h5' "
                "(through the external link 'stimulus'), which is not followed; copy the data into the file")):
            read_stimulus(tmp_path / "s.h5", key=key)
    with pytest.raises(ValueError, match=r"'soft' in .* leads into another file, 'other.h5' \(through the external "
                                         r"link 'ext'\)"):
        read_stimulus(tmp_path / "s.h5", key="soft")


def test_dataset_read_through_soft_links(tmp_path):
    path = write_dataset(tmp_path / "d.h5", make_dataset())
    with h5py.File(tmp_path / "linked.h5", "w") as f, h5py.File(path, "r") as plain:
        for split in ("train", "test"):
            f[f"raw/{split}/stim"] = plain[f"{split}/stimulus"][()]
            f[f"raw/{split}/rates"] = plain[f"{split}/response/firing_rate_10ms"][()]
            f[f"{split}/stimulus"] = h5py.SoftLink(f"/raw/{split}/stim")
            f[f"{split}/response/firing_rate_10ms"] = h5py.SoftLink(f"/raw/{split}/rates")
    a, b = read_dataset(path), read_dataset(tmp_path / "linked.h5")
    np.testing.assert_array_equal(a.train.stimulus, b.train.stimulus)
    np.testing.assert_array_equal(a.test.rates, b.test.rates)


@pytest.mark.parametrize(
    "shape, kwargs",
    [((50, 50, 3), {}), ((50, 50, 4), {}), ((3, 50, 50), {"photometric": "rgb"})],
    ids=["rgb", "rgba", "planar-rgb"],
)
def test_single_rgb_tiff_image_is_refused(tmp_path, shape, kwargs):
    tifffile.imwrite(tmp_path / "photo.tif", np.zeros(shape, np.uint8), **kwargs)
    with pytest.raises(ValueError, match=re.escape(
            f"the stimulus in photo.tif must be a greyscale (T, H, W) stack, got an RGB(A) image of shape {shape}")):
        read_stimulus(tmp_path / "photo.tif")


def test_greyscale_tiff_shaped_like_rgb_is_a_stack(tmp_path):
    """The TIFF's metadata, not the shape, tells colour: 50 grey frames of 50x3 pixels are a stack."""
    grey = np.random.default_rng(0).integers(0, 255, (50, 50, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "thin.tif", grey, photometric="minisblack")
    np.testing.assert_array_equal(read_stimulus(tmp_path / "thin.tif"), grey)


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_key_is_refused_for_files_without_keys(tmp_path, stack, suffix):
    _stimulus_files(tmp_path, stack)
    with pytest.raises(ValueError, match=re.escape(
            f"key='train/stimulus' picks a dataset in an HDF5 file, but 'full{suffix}' is a {suffix} file")):
        read_stimulus(tmp_path / f"full{suffix}", key="train/stimulus")


def test_cli_predict_on_an_empty_npy_or_with_a_key_is_one_line(tmp_path, capsys):
    from napari_retina.cli import main

    (tmp_path / "s.npy").write_bytes(b"")
    assert main(["predict", str(tmp_path / "s.npy"), "--out", str(tmp_path / "r.h5"), "--quiet"]) == 2
    sentence = f"{str(tmp_path / 's.npy')!r} is empty (0 bytes), expected a .npy stimulus stack"
    assert capsys.readouterr().err == f"napari-retina predict: error: {sentence}\n"
    np.save(tmp_path / "full.npy", np.zeros((30, 50, 50), np.float32))
    assert main(["predict", str(tmp_path / "full.npy"), "--key", "stimulus", "--out", str(tmp_path / "r.h5"),
                 "--quiet"]) == 2
    assert "key='stimulus' picks a dataset in an HDF5 file" in capsys.readouterr().err
    assert not (tmp_path / "r.h5").exists()


# ------------------------------------------------------------- traces CSV ---

def _attribution(T=7, C=3):
    rng = np.random.default_rng(0)
    response = rng.standard_normal(T).astype(np.float32)
    response[:2] = np.nan  # frames without a full history
    return SimpleNamespace(response=response, rates=rng.random(T).astype(np.float32),
                           channels=rng.standard_normal((T, C)).astype(np.float32))


def test_write_traces_csv_writes_one_row_per_frame(tmp_path):
    attr = _attribution()
    red = SimpleNamespace(reduced_response=np.arange(7, dtype=np.float32), label=lambda c: f"A{c} ON fast +")
    path = write_traces_csv(tmp_path / "traces.csv", attr, red)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    unit = " (spikes per 10 ms bin)"   # each column names its unit (a GUI audit: a rate could be read as Hz)
    assert rows[0] == ["frame", "time (ms)", "rate" + unit, "response" + unit, "reduced_response" + unit,
                       "A0 ON fast +" + unit, "A1 ON fast +" + unit, "A2 ON fast +" + unit]
    assert len(rows) == 8 and rows[3][:2] == ["2", "20"] and rows[1][3] == "nan"
    np.testing.assert_array_equal(np.array(rows[1:], float)[:, 5:].astype(np.float32), attr.channels)  # 9 digits: exact
    assert list(trace_columns(attr)) == ["frame", "time (ms)", *(n + unit for n in ("rate", "response", "A0", "A1",
                                                                                   "A2"))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traces.csv"]
    with pytest.raises(TypeError, match="attr must be an attribution"):
        write_traces_csv(tmp_path / "t.csv", {"response": []})


def test_a_reduction_of_another_attribution_is_refused_in_one_sentence(tmp_path, tiny):
    """A tester paired cell 0's attribution with cell 3's reduction of another stimulus: the CSV held one analysis'
    response beside the other's reduced response (and a 45-frame reduction was cut to 42 rows), silently."""
    import napari_retina as nr

    stim = nr.stimuli.white_noise(frames=42, size=tiny.config.size, seed=0)
    attr = nr.attribute(tiny, stim, cell=0, steps=2)
    other = nr.attribute(tiny, nr.stimuli.white_noise(frames=42, size=tiny.config.size, seed=1), cell=1, steps=2)
    longer = nr.attribute(tiny, nr.stimuli.white_noise(frames=45, size=tiny.config.size, seed=0), cell=0, steps=2)
    with pytest.raises(ValueError, match=r"^the reduction is not of this attribution: its kept channels' traces "
                                         r"are not the attribution's; reduce this attribution \(nr.reduce\(attr\)\)$"):
        write_traces_csv(tmp_path / "t.csv", attr, nr.reduce(other))
    with pytest.raises(ValueError, match=r"its reduced response has 45 frames, the attribution 42"):
        write_traces_csv(tmp_path / "t.csv", attr, nr.reduce(longer))
    # a scientist's audit: a string there was an AttributeError deep in the check
    with pytest.raises(TypeError, match=r"^red must be a Reduction of this attribution \(nr.reduce\(attr\)\), "
                                        r"got str$"):
        write_traces_csv(tmp_path / "t.csv", attr, "red")
    assert not list(tmp_path.iterdir())
    red = nr.reduce(attr)
    rows = list(csv.reader(open(write_traces_csv(tmp_path / "t.csv", attr, red), newline="")))
    np.testing.assert_array_equal(np.array([r[4] for r in rows[1:]], float).astype(np.float32), red.reduced_response)


def test_a_garbage_tiff_says_it_holds_no_image(tmp_path):
    """tifffile's error was IndexError(0): "... is not a readable TIFF: 0"."""
    path = tmp_path / "garbage.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 100)
    with pytest.raises(ValueError, match=r"garbage.tif' is not a readable TIFF \(truncated or corrupt: no image at "
                                         r"the offset of its first page\)$"):
        read_stimulus(path)


@pytest.mark.parametrize("suffix, samples", [(".npy", 3), (".h5", 4)])
def test_a_single_rgb_image_in_npy_or_h5_is_refused_not_read_as_frames(tmp_path, suffix, samples):
    """A (50, 50, 3) photo in .npy was read as 50 frames of 50x3 pixels; the same photo as a TIFF was refused."""
    image = np.random.default_rng(0).random((50, 40, samples)).astype(np.float32)
    path = tmp_path / f"photo{suffix}"
    if suffix == ".npy":
        np.save(path, image)
    else:
        with h5py.File(path, "w") as h5:
            h5["stimulus"] = image
    with pytest.raises(ValueError, match=re.escape(
            f"the stimulus in photo{suffix} must be a greyscale (T, H, W) stack, got an array of shape "
            f"(50, 40, {samples}), which looks like a single RGB(A) image rather than 50 frames {samples} pixels "
            "wide; convert it to luminance")):
        read_stimulus(path)
    np.save(tmp_path / "small.npy", np.zeros((12, 3, 4), np.float32))      # frames wider than tall: a stack
    assert read_stimulus(tmp_path / "small.npy").shape == (12, 3, 4)


def test_a_soft_link_loop_is_refused_in_a_short_traceback(tmp_path):
    """The loop was followed by recursion: the one sentence came through a 39-frame traceback."""
    import traceback

    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["a"] = h5py.SoftLink("/b")
        f["b"] = h5py.SoftLink("/a")
    with pytest.raises(ValueError, match=r"is a chain of more than 32 soft links") as info:
        read_stimulus(tmp_path / "s.h5", key="a")
    assert len(traceback.extract_tb(info.value.__traceback__)) < 10


@pytest.mark.parametrize("value", ["cell\x00", ["a", "b\x00c"], ("\x00",)])
@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_results_text_with_a_nul_is_refused_naming_its_key(tmp_path, value, suffix):
    """A reliability audit: .h5 raised h5py's "VLEN strings do not support embedded NULLs", naming no key; .npz
    saved 'cell\\x00' as 'cell', silently."""
    with pytest.raises(ValueError, match=r"^results\['info/name'\] holds text with a NUL character"):
        write_results(tmp_path / f"r{suffix}", {"info": {"name": value}, "x": np.arange(3)})
    assert not (tmp_path / f"r{suffix}").exists()
