"""A stack drawn at another pixel size than the model's 55 µm, resampled to the model's grid (``pixel_um=``).

Checked against references written here, in float64: 2 × 2 block means for 27.5 µm pixels, pixel repeats for
110 µm, and for pixels that do not divide 55 µm (40 × 36 µm), each model pixel's mean over its 55 µm square by
dense point sampling of the stack (no overlap weights). A stack z-scored by its own statistics is z-scored at its
own pixels; predict, attribute, run_analysis, the saved analysis and the command line carry the pixel size and
place the window on the model's grid.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import napari_retina as nr
from napari_retina._validate import analysed_origin, as_stimulus, check_pixel_um


def _block_means(stack: np.ndarray, k: int) -> np.ndarray:
    T, H, W = stack.shape
    return stack.astype(np.float64).reshape(T, H // k, k, W // k, k).mean(axis=(2, 4))


def _sampled_means(frame: np.ndarray, pixel_um: tuple, origin: tuple, size: int, points: int = 440) -> np.ndarray:
    """Each model pixel's mean over its 55 µm square, from ``points`` × ``points`` evenly spaced samples (a
    sample reads the stack pixel it falls in), knowing nothing of overlap lengths. With 440 points (every 0.125
    µm) and stack pixels a multiple of 0.125 µm, no sample falls on a pixel edge and the mean is exact."""
    offsets = (np.arange(points) + 0.5) / points

    def sample_shares(axis: int, n_in: int) -> np.ndarray:   # (size, n_in): the share of samples in each pixel
        shares = np.zeros((size, n_in))
        for j in range(size):
            hits = np.floor((origin[axis] + j + offsets) * 55.0 / pixel_um[axis]).astype(int)
            shares[j] = np.bincount(hits, minlength=n_in)[:n_in] / points
        return shares

    return sample_shares(0, frame.shape[0]) @ frame @ sample_shares(1, frame.shape[1]).T


def test_27_5_um_pixels_are_averaged_two_by_two():
    stack = np.random.default_rng(0).standard_normal((12, 40, 60)).astype(np.float32)
    got = as_stimulus(stack, history=10, size=20, pixel_um=27.5, crop=(0, 5))
    assert got.dtype == np.float32 and got.shape == (12, 20, 20)
    np.testing.assert_allclose(got, _block_means(stack, 2)[:, :20, 5:25], rtol=0, atol=1e-6)


def test_110_um_pixels_are_repeated_two_by_two():
    stack = np.random.default_rng(1).standard_normal((12, 10, 10)).astype(np.float32)
    got = as_stimulus(stack, history=10, size=20, pixel_um=110.0)
    np.testing.assert_array_equal(got, np.repeat(np.repeat(stack, 2, axis=1), 2, axis=2))


def test_pixels_that_do_not_divide_55_um_are_area_means_of_the_stack_under_each_model_pixel():
    stack = np.random.default_rng(2).standard_normal((11, 40, 45))
    pixel = (40.0, 36.0)                      # 40 × 45 stack pixels: a 29 × 29 model grid, the window at its centre
    origin = analysed_origin((40, 45), 20, "center", pixel)
    assert origin == (4, 4)
    got = as_stimulus(stack, history=10, size=20, pixel_um=pixel, crop="center")
    for t in (0, 10):
        np.testing.assert_allclose(got[t], _sampled_means(stack[t], pixel, origin, 20), rtol=0, atol=1e-6)
    assert np.abs(got[0] - _sampled_means(stack[0], pixel, (4, 5), 20)).max() > 0.3   # a pixel off is caught


def test_an_integer_stack_is_z_scored_at_its_own_pixels_then_averaged():
    stack = np.random.default_rng(3).integers(0, 256, (12, 40, 40)).astype(np.uint8)
    got = as_stimulus(stack, history=10, size=20, pixel_um=27.5)
    z = (stack - stack.astype(np.float64).mean()) / stack.astype(np.float64).std()
    np.testing.assert_allclose(got, _block_means(z, 2), rtol=0, atol=1e-5)
    assert 0.4 < got.std() < 0.6   # white noise averaged 2 × 2 keeps half its std; z-scoring after would undo it


def test_every_chunk_of_a_long_stack_is_resampled_and_standardised():
    """resample_window works a chunk of about ``chunk_values`` values at a time (4 M by default: no test stack
    reached a second chunk); with chunks of 2 frames every chunk is the float64 reference's, standardised and
    averaged, at 27.5 µm pixels and at a 60 Hz frame interval."""
    from napari_retina._resample import resample_window

    stack = (100 + 30 * np.random.default_rng(4).standard_normal((25, 8, 8))).astype(np.float32)
    mean, std = 100.0, 30.0
    got = resample_window(stack, (27.5, 27.5), (0, 0), 4, mean=mean, std=std, chunk_values=2 * 64)
    np.testing.assert_allclose(got, _block_means((stack - mean) / std, 2), rtol=0, atol=1e-5)
    timed = resample_window(stack, None, (0, 0), None, mean=mean, std=std, chunk_values=64, frame_ms=20.0)
    ref = (np.repeat(stack.astype(np.float64), 2, axis=0) - mean) / std        # 20 ms frames: two 10 ms bins each
    np.testing.assert_allclose(timed, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("value, expected", [(27.5, (27.5, 27.5)), ("20, 25", (20.0, 25.0)), ([30, 40], (30.0, 40.0)),
                                             (55, None), ("55", None), (None, None), (np.float32(27.5), (27.5, 27.5))])
def test_pixel_um_reads_a_number_a_pair_or_their_text(value, expected):
    assert check_pixel_um(value) == expected


@pytest.mark.parametrize("value", [0, -3, float("nan"), float("inf"), True, "a", "1,2,3", (1, 2, 3), {"y": 1}, b"27",
                                   np.array([True])])
def test_a_pixel_size_that_is_no_positive_number_is_refused_in_one_sentence(value):
    with pytest.raises(ValueError, match=r"^pixel_um must be None, a positive number of µm, \(y_um, x_um\), or the "
                                         r"text '27.5' or '20,25', got "):
        check_pixel_um(value)


def test_a_pixel_size_beyond_a_metre_is_refused_in_one_sentence_and_a_0_d_array_is_a_number():
    """A helper's audit: 1e308 µm overflowed the grid's arithmetic (OverflowError; a traceback from the command
    line), and np.array(27.5) was iterated over (TypeError) where np.float32(27.5) was taken."""
    with pytest.raises(ValueError, match=r"^pixel_um must be at most 1e\+06 µm \(a metre\), got 1e\+308$"):
        as_stimulus(np.zeros((3, 60, 60), np.float32), history=1, size=50, crop="center", pixel_um=1e308)
    assert check_pixel_um(np.array(27.5)) == (27.5, 27.5)


def test_55_3_um_pixels_written_to_4_decimals_still_make_whole_model_pixels():
    """150 pixels of 18.3333 µm are 49.9999 model pixels: floored, the grid lost its 50th pixel (a helper's audit:
    the dock's box held 18.33, and a 150 × 150 layer was 'too small'). Within a thousandth of a pixel of a whole
    one it counts whole; the last model pixel averages what the stack holds of it."""
    stack = np.random.default_rng(9).standard_normal((41, 150, 150))
    got = as_stimulus(stack, history=40, size=50, pixel_um=18.3333)
    assert got.shape == (41, 50, 50)
    np.testing.assert_allclose(got[:, :49, :49], as_stimulus(stack, history=40, size=50, pixel_um=55 / 3)[:, :49, :49],
                               rtol=0, atol=2e-3)   # 3 x 3 block means, edges drifting up to 0.0003 px
    np.testing.assert_allclose(got[0, -1, -1], stack[0, -3:, -3:].mean(), rtol=0, atol=1e-3)


def test_a_stack_too_small_on_the_model_grid_is_refused_naming_the_grid():
    stack = np.zeros((12, 30, 30), np.float32)
    with pytest.raises(ValueError, match=r"^stimulus on the model's 55 µm grid \(27.5 µm pixels\) is 15x15 pixels, "
                                         r"smaller than the 20x20 the model expects"):
        as_stimulus(stack, history=10, size=20, pixel_um=27.5)
    with pytest.raises(ValueError, match=r"on the model's 55 µm grid \(27.5 µm pixels\) is 25x25 pixels but the "
                                         r"model expects 20x20; pass crop="):
        as_stimulus(np.zeros((12, 50, 50), np.float32), history=10, size=20, pixel_um=27.5)


def test_predict_and_attribute_on_27_5_um_pixels_are_those_of_the_block_means(tiny):
    stack = nr.stimuli.white_noise(frames=30, size=50, seed=4)
    coarse = _block_means(stack, 2).astype(np.float32)              # 25 × 25 model pixels
    np.testing.assert_allclose(nr.predict(tiny, stack, pixel_um=27.5, crop=(2, 3)),
                               nr.predict(tiny, coarse, crop=(2, 3)), rtol=1e-5, atol=1e-6)
    got = nr.attribute(tiny, stack, cell=0, steps=2, invariance="none", pixel_um=27.5, crop=(2, 3))
    ref = nr.attribute(tiny, coarse, cell=0, steps=2, invariance="none", crop=(2, 3))
    assert got.crop_origin == (2, 3) and got.input_pixel_um == (27.5, 27.5) and ref.input_pixel_um is None
    np.testing.assert_allclose(got.maps, ref.maps, rtol=1e-4, atol=1e-6)
    d = got.to_dict()
    assert d["input_pixel_um"].tolist() == [27.5, 27.5] and d["pixel_um"] == 55.0
    assert ref.to_dict()["input_pixel_um"].tolist() == [55.0, 55.0]


@pytest.mark.parametrize("lazy_threshold", [1 << 40, 0], ids=["maps", "lazy maps"])
def test_run_analysis_keeps_the_pixel_size_and_the_window_on_the_model_grid(tiny, tmp_path, lazy_threshold):
    from napari_retina.analysis import run_analysis

    stack = nr.stimuli.white_noise(frames=30, size=50, seed=5)
    res = run_analysis(tiny, stack, cell=0, steps=2, invariance="none", crop="center", pixel_um=27.5,
                       lazy_threshold=lazy_threshold)
    attr = res.attribution
    assert attr.crop_origin == (2, 2) and attr.input_pixel_um == (27.5, 27.5)   # (25 − 20) // 2
    assert res.parameters["pixel_um"] == [27.5, 27.5]
    np.testing.assert_allclose(attr.stimulus, _block_means(stack, 2)[:, 2:22, 2:22], rtol=0, atol=1e-6)
    saved = nr.read_analysis(res.save(tmp_path / "a.h5"))
    assert saved.attribution.input_pixel_um == (27.5, 27.5) and saved.attribution.crop_origin == (2, 2)


def test_a_saved_analysis_without_a_pixel_size_reads_as_the_models_and_a_bad_one_is_refused(tiny, tmp_path):
    from napari_retina.analysis import run_analysis

    res = run_analysis(tiny, nr.stimuli.white_noise(frames=30, size=20, seed=6), cell=0, steps=2)
    path = res.save(tmp_path / "a.h5")
    assert nr.read_analysis(path).attribution.input_pixel_um is None
    with h5py.File(path, "a") as h5:
        del h5["attribution/input_pixel_um"]
    assert nr.read_analysis(path).attribution.input_pixel_um is None     # a file from before resampling
    with h5py.File(path, "a") as h5:
        h5["attribution/input_pixel_um"] = np.array([27.5, -1.0])
    with pytest.raises(ValueError, match=r"its 'attribution/input_pixel_um' is .*expected the \(y, x\) pixel size "
                                         r"of the analysed layer in µm, two positive numbers$"):
        nr.read_analysis(path)


def test_the_command_line_s_pixel_um_sentences_name_its_option(tmp_path, capsys):
    """A helper's audit: '--pixel-um 0' was told the API's forms (None, (y_um, x_um)), and a 30 x 30 stack to
    'pass --pixel-um= (their size in µm; command line: --pixel-um)'."""
    from napari_retina.cli import main

    np.save(tmp_path / "s.npy", np.zeros((45, 30, 30), np.float32))
    assert main(["predict", str(tmp_path / "s.npy"), "--pixel-um", "0", "--out", str(tmp_path / "r.h5")]) == 2
    assert capsys.readouterr().err == ("napari-retina predict: error: --pixel-um must be a positive number of µm, "
                                       "'p', or 'p_y,p_x' for y and x, got '0'\n")
    assert main(["predict", str(tmp_path / "s.npy"), "--quiet", "--out", str(tmp_path / "r.h5")]) == 2
    assert capsys.readouterr().err.endswith("if its pixels are larger than the model's 55 µm, pass their size in µm "
                                            "as --pixel-um to resample it, else pad it to at least 50x50\n")


def test_the_command_line_resamples_with_pixel_um(tmp_path):
    from napari_retina.cli import main

    stack = np.random.default_rng(7).standard_normal((45, 110, 104)).astype(np.float32)
    np.save(tmp_path / "s.npy", stack)
    assert main(["predict", str(tmp_path / "s.npy"), "--pixel-um", "27.5", "--crop", "center", "--quiet",
                 "--out", str(tmp_path / "r.h5")]) == 0
    with h5py.File(tmp_path / "r.h5") as h5:   # 55 × 52 model pixels: the 50 × 50 window at (2, 1)
        assert h5["crop_origin"][()].tolist() == [2, 1] and h5["input_pixel_um"][()].tolist() == [27.5, 27.5]
        rates = h5["rates"][()]
    model = nr.load_model()
    np.testing.assert_allclose(rates, nr.predict(model, _block_means(stack, 2)[:, 2:52, 1:51].astype(np.float32)),
                               rtol=1e-5, atol=1e-6)
