"""Reading stimuli and datasets, writing results."""

import h5py
import numpy as np
import pytest
import tifffile

from napari_retina.io import Dataset, Split, read_dataset, read_stimulus, write_dataset, write_results


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
    with pytest.raises(ValueError, match=match):
        read_dataset(tmp_path / "d.h5")


def test_selecting_missing_cells_is_refused(tmp_path):
    write_dataset(tmp_path / "d.h5", make_dataset())
    with pytest.raises(ValueError, match=r"cells \[5\] do not exist: the file has 3 cells"):
        read_dataset(tmp_path / "d.h5", cells=[0, 5])


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
