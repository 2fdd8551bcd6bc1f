"""A stack shown at another frame interval than the model's 10 ms, resampled to the model's bins (``frame_ms=``).

Checked against references written here, in float64: pair means for 5 ms frames, frame repeats for 20 ms, and
for a 60 Hz monitor (50/3 ms frames, which do not divide 10 ms) each bin's mean over its 10 ms by dense point
sampling of the time axis (no overlap weights). predict, attribute (a wrapped module's too), run_analysis, the
saved analysis and the command line carry the frame interval and count the model's bins.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import napari_retina as nr
from napari_retina._validate import as_stimulus, check_frame_ms


def _pair_means(stack: np.ndarray) -> np.ndarray:
    T = len(stack) // 2 * 2
    return stack[:T].astype(np.float64).reshape(T // 2, 2, *stack.shape[1:]).mean(axis=1)


def _sampled_bins(stack: np.ndarray, frame_ms: float, points: int = 600) -> np.ndarray:
    """Each 10 ms bin's mean of the frames on screen during it, from ``points`` evenly spaced instants a bin
    (an instant shows frame ``floor(t / frame_ms)``), knowing nothing of overlap lengths. For 50/3 ms frames
    and 600 points the instants are odd multiples of 1/120 ms and the frame edges multiples of 1/60 ms: no
    instant falls on an edge, and each instant stands for exactly 1/60 ms, so the mean is exact."""
    n_bins = int(np.floor(len(stack) * frame_ms / 10.0 + 1e-3))
    out = np.empty((n_bins, *stack.shape[1:]))
    for k in range(n_bins):
        t = 10.0 * (k + (np.arange(points) + 0.5) / points)
        shown = np.floor(t / frame_ms).astype(int)
        out[k] = stack[shown].astype(np.float64).mean(axis=0)
    return out


def test_5_ms_frames_are_averaged_in_pairs_and_the_window_is_cut_as_without():
    stack = np.random.default_rng(0).standard_normal((25, 30, 30)).astype(np.float32)
    got = as_stimulus(stack, history=10, size=20, crop=(3, 7), frame_ms=5)
    assert got.dtype == np.float32 and got.shape == (12, 20, 20)   # 25 frames of 5 ms: 12 whole bins
    np.testing.assert_allclose(got, _pair_means(stack)[:, 3:23, 7:27], rtol=0, atol=1e-6)


def test_20_ms_frames_are_each_shown_for_two_bins():
    stack = np.random.default_rng(1).standard_normal((7, 20, 20)).astype(np.float32)
    np.testing.assert_array_equal(as_stimulus(stack, history=10, size=20, frame_ms=20.0), np.repeat(stack, 2, axis=0))


def test_a_60_hz_movie_is_the_mean_of_what_was_on_screen_during_each_bin():
    stack = np.random.default_rng(2).standard_normal((36, 20, 20))
    got = as_stimulus(stack, history=10, size=20, frame_ms=1000 / 60)
    assert got.shape == (60, 20, 20)                                   # 36 frames of 16.67 ms: 600 ms
    ref = _sampled_bins(stack, 1000 / 60)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    # bin 1 (10–20 ms) shows frame 0 until 16.67 ms and frame 1 after it; a bin off is caught
    np.testing.assert_allclose(got[1], (2 * stack[0] + stack[1]) / 3, rtol=0, atol=1e-6)
    assert np.abs(got[1:] - ref[:-1]).max() > 0.3


def test_an_integer_stack_is_z_scored_at_its_own_frames_and_pixels_then_resampled_in_time_and_space():
    stack = np.random.default_rng(3).integers(0, 256, (30, 40, 40)).astype(np.uint8)
    got = as_stimulus(stack, history=10, size=20, frame_ms=5, pixel_um=27.5)
    z = (stack - stack.astype(np.float64).mean()) / stack.astype(np.float64).std()
    ref = _pair_means(z).reshape(15, 20, 2, 20, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    assert 0.3 < got.std() < 0.4   # white noise averaged over 2 frames and 2 × 2 pixels keeps 1/√8 of its std


@pytest.mark.parametrize("frame_ms", [1.0, 7.5, 1000 / 60, 33.3, 100.0])
def test_the_run_by_run_sum_is_the_dense_product_of_the_time_weights(frame_ms):
    from napari_retina._resample import area_weights, band_sum

    frames = np.random.default_rng(10).standard_normal((400, 3, 4))
    n = int(400 * frame_ms / 10) - 3
    for first, count in ((0, min(n, 37)), (5, min(n - 5, 50))):
        rows, weights = area_weights(frame_ms, first, count, 400, unit=10.0)
        np.testing.assert_allclose(band_sum(frames[rows], weights), np.tensordot(weights, frames[rows], axes=1),
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("value, expected", [(1000 / 60, 1000 / 60), ("16.5", 16.5), (5, 5.0), (10, None),
                                             ("10", None), (None, None), (np.float32(20), 20.0), (np.array(5.0), 5.0),
                                             ("1000/60", 1000 / 60), (" 100 / 3 ", 100 / 3), ("20/2", None)])
def test_frame_ms_reads_a_number_or_its_text(value, expected):
    assert check_frame_ms(value) == expected


@pytest.mark.parametrize("value", [0, -3, float("nan"), float("inf"), True, "a", "5,5", (5,), [5, 5], b"5",
                                   np.array([5.0]), "1000/0", "1/2/3", "/60"])
def test_frame_ms_refuses_what_is_no_positive_number(value):
    with pytest.raises(ValueError, match=r"^frame_ms must be None, a positive number of ms per frame, or its text "
                                         r"\('16.5', or '1000/60' for a 60 Hz monitor\), got "):
        check_frame_ms(value)


def test_frame_ms_beyond_10_s_is_refused_in_one_sentence():
    """A helper's audit: 1e6 ms (the first cap) made 3 million bins of 30 frames, 5 GB and minutes without a
    word, and 16667 (µs taken for ms) passed."""
    for value in (1e308, 16667):
        with pytest.raises(ValueError, match=r"^frame_ms must be at most 10000 ms \(10 s; µs taken for ms\?\), "):
            as_stimulus(np.zeros((3, 20, 20), np.float32), history=1, size=20, frame_ms=value)


def test_the_memory_check_counts_the_output_bins_on_the_model_s_pixels(monkeypatch):
    """A helper's audit: with pixel_um too, the check counted the stack's own pixels: 80 x 80 pixels of 13.75 µm
    (a 20 x 20 model window) at 100 bins a frame were refused, and 10 x 10 pixels of 110 µm passed unchecked."""
    from napari_retina import _validate

    monkeypatch.setattr(_validate, "physical_memory_bytes", lambda: 32 << 20)   # a machine of 32 MiB
    fine = as_stimulus(np.zeros((40, 80, 80), np.uint8), history=10, size=20, pixel_um=13.75, frame_ms=1000)
    assert fine.shape == (4000, 20, 20)                                          # 6.4 MB
    with pytest.raises(MemoryError, match=r"^stimulus's 30 frames of 10000 ms on the model's 10 ms bins takes "
                                          r"30,000 frames of 20×20 px, 0.0447 GiB as float32"):
        as_stimulus(np.zeros((30, 10, 10), np.uint8), history=10, size=20, pixel_um=110, frame_ms=1e4)


def test_too_few_frames_is_said_in_the_stack_s_frames_and_the_model_s_bins():
    with pytest.raises(ValueError, match=r"^stimulus has 19 frame\(s\) of 5 ms \(9 of the model's 10 ms\) but the "
                                         r"model needs at least its history of 10 frames \(100 ms\)$"):
        as_stimulus(np.zeros((19, 20, 20), np.float32), history=10, size=20, frame_ms=5)
    assert as_stimulus(np.zeros((20, 20, 20), np.float32), history=10, size=20, frame_ms=5).shape == (10, 20, 20)


def test_predict_and_attribute_on_5_ms_frames_are_those_of_the_pair_means(tiny):
    stack = nr.stimuli.white_noise(frames=60, size=24, seed=4)
    coarse = _pair_means(stack).astype(np.float32)
    np.testing.assert_allclose(nr.predict(tiny, stack, frame_ms=5, crop=(1, 2)), nr.predict(tiny, coarse, crop=(1, 2)),
                               rtol=1e-5, atol=1e-6)
    got = nr.attribute(tiny, stack, cell=0, steps=2, invariance="none", frame_ms=5, crop=(1, 2))
    ref = nr.attribute(tiny, coarse, cell=0, steps=2, invariance="none", crop=(1, 2))
    assert got.input_frame_ms == 5.0 and ref.input_frame_ms is None and got.maps.shape[0] == 30
    np.testing.assert_allclose(got.maps, ref.maps, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got.frames, ref.frames)
    assert got.to_dict()["input_frame_ms"] == 5.0 and got.to_dict()["frame_ms"] == 10.0
    assert ref.to_dict()["input_frame_ms"] == 10.0
    with pytest.raises(ValueError, match=r"^frames must lie inside the movie's 30 frames \(the model's 10 ms bins of "
                                         r"its 60 frames of 5 ms\), got index 40$"):
        nr.attribute(tiny, stack, steps=2, frame_ms=5, crop=(1, 2), frames=[40])


def test_a_wrapped_module_resamples_time_as_a_retina_cnn_does(wrapped_tiny):
    wrapped = wrapped_tiny
    stack = np.random.default_rng(5).standard_normal((40, 12, 12)).astype(np.float32)
    coarse = _pair_means(stack).astype(np.float32)
    np.testing.assert_allclose(nr.predict(wrapped, stack, frame_ms=5), nr.predict(wrapped, coarse),
                               rtol=1e-5, atol=1e-6)
    got = nr.attribute(wrapped, stack, steps=2, frame_ms=5)
    np.testing.assert_allclose(got.channels, nr.attribute(wrapped, coarse, steps=2).channels, rtol=1e-4, atol=1e-6)
    assert got.input_frame_ms == 5.0


@pytest.mark.parametrize("lazy_threshold", [1 << 40, 0], ids=["maps", "lazy maps"])
def test_run_analysis_keeps_the_frame_interval_and_saves_it(tiny, tmp_path, lazy_threshold):
    from napari_retina.analysis import run_analysis

    stack = nr.stimuli.white_noise(frames=50, size=20, seed=6)
    res = run_analysis(tiny, stack, cell=0, steps=2, invariance="none", frame_ms=20, lazy_threshold=lazy_threshold)
    attr = res.attribution
    assert attr.input_frame_ms == 20.0 and res.parameters["frame_ms"] == 20.0 and len(attr.response) == 100
    np.testing.assert_array_equal(attr.stimulus, np.repeat(stack, 2, axis=0))
    assert res.lazy == (lazy_threshold == 0) and np.shape(res.maps if res.lazy else attr.maps)[0] == 100
    saved = nr.read_analysis(res.save(tmp_path / "a.h5"))
    assert saved.attribution.input_frame_ms == 20.0 and saved.parameters["frame_ms"] == 20.0
    assert len(saved.attribution.stimulus) == 100


def test_a_saved_analysis_without_a_frame_interval_reads_as_the_models_and_a_bad_one_is_refused(tiny, tmp_path):
    from napari_retina.analysis import run_analysis

    res = run_analysis(tiny, nr.stimuli.white_noise(frames=30, size=20, seed=7), cell=0, steps=2)
    path = res.save(tmp_path / "a.h5")
    with h5py.File(path) as h5:
        assert h5["attribution"].attrs["input_frame_ms"] == 10.0 and h5["parameters"].attrs["frame_ms"] == 10.0
    assert nr.read_analysis(path).attribution.input_frame_ms is None
    with h5py.File(path, "a") as h5:
        del h5["attribution"].attrs["input_frame_ms"]
    assert nr.read_analysis(path).attribution.input_frame_ms is None    # a file from before time resampling
    with h5py.File(path, "a") as h5:
        h5["attribution"].attrs["input_frame_ms"] = -5.0
    with pytest.raises(ValueError, match=r"its 'attribution/input_frame_ms' is '-5.0', expected the frame interval "
                                         r"of the analysed layer in ms, a positive number$"):
        nr.read_analysis(path)
    with h5py.File(path, "a") as h5:   # a helper's audit: the settings' frame_ms reached the dock unchecked
        h5["attribution"].attrs["input_frame_ms"] = 10.0
        h5["parameters"].attrs["frame_ms"] = "abc"
    with pytest.raises(ValueError, match=r"its 'parameters/frame_ms' is 'abc', expected the frame interval"):
        nr.read_analysis(path)


def test_the_command_line_resamples_with_frame_ms_and_names_its_option(tmp_path, capsys):
    from napari_retina.cli import main

    stack = np.random.default_rng(8).standard_normal((90, 50, 50)).astype(np.float32)
    np.save(tmp_path / "s.npy", stack)
    assert main(["predict", str(tmp_path / "s.npy"), "--frame-ms", "5", "--quiet", "--out", str(tmp_path / "r.h5")]) == 0
    assert "rates 45 frames (the model's 10 ms bins of its 90 frames of 5 ms) x 4 cells" in capsys.readouterr().out
    with h5py.File(tmp_path / "r.h5") as h5:
        assert h5.attrs["input_frame_ms"] == 5.0
        rates = h5["rates"][()]
    np.testing.assert_allclose(rates, nr.predict(nr.load_model(), _pair_means(stack).astype(np.float32)),
                               rtol=1e-5, atol=1e-6)
    assert main(["predict", str(tmp_path / "s.npy"), "--frame-ms", "0", "--out", str(tmp_path / "r.h5")]) == 2
    assert capsys.readouterr().err == ("napari-retina predict: error: --frame-ms must be a positive number of ms per "
                                       "frame, or a ratio such as 1000/60 (a 60 Hz monitor), got '0'\n")
    assert main(["attribute", str(tmp_path / "s.npy"), "--frame-ms", "20/4", "--steps", "2", "--quiet",
                 "--out", str(tmp_path / "a.h5")]) == 0
    assert "on 6 frames (the model's 10 ms bins of its 90 frames of 5 ms)" in capsys.readouterr().out
    with h5py.File(tmp_path / "a.h5") as h5:
        assert h5["attribution"].attrs["input_frame_ms"] == 5.0 and h5["attribution/channels"].shape == (45, 8)


def test_a_cancel_acts_while_a_long_stack_is_resampled(tiny):
    """A reliability audit: resampling ran before the first progress report (13.8 s for 50,000 frames of
    100×100 px at 60 Hz), so Cancel did nothing until it ended. Each chunk now reports (0, bins) first."""
    from napari_retina import Cancelled

    stim = np.zeros((3000, 40, 40), np.float32)
    for call in (nr.predict, nr.attribute):
        seen = []

        def progress(done, total):
            seen.append((done, total))
            raise Cancelled("the test's")

        with pytest.raises(Cancelled):
            call(tiny, stim, pixel_um=27.5, frame_ms=1000 / 60, crop="center", progress=progress)
        assert seen == [(0, 5000)]   # the first chunk's report: 3,000 frames at 60 Hz are 5,000 bins
