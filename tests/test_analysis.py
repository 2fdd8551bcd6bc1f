"""napari_retina.analysis: the Analyze widget's computation without a viewer.

Lazy maps and chunked traces against one ``nr.attribute`` call, the crop
origin on both paths, the out-of-memory retry, and the export against the
attribution's and reduction's own ``to_dict``.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina.attribution._integrate import default_points
from napari_retina import analysis


# --------------------------------------------------------------- long movies ---

def test_lazy_maps_equal_eager_maps_and_compute_each_block_once(tiny):
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=2)
    eager = nr.attribute(tiny, stim, cell=[0, 1], steps=4, invariance="none")
    maps = analysis.lazy_maps(tiny, stim, cell=[0, 1], steps=4, invariance="none", chunk=8)
    assert maps.shape == eager.maps.shape
    np.testing.assert_allclose(np.asarray(maps[20]), eager.maps[20], rtol=1e-4, atol=1e-6)
    before = maps.block_cache.computed
    for c in range(maps.shape[1]):  # all channel layers of the same frame: one block, computed once
        np.asarray(maps[21, c])
    assert maps.block_cache.computed == before
    full = np.asarray(maps)
    np.testing.assert_array_equal(np.isnan(full), np.isnan(eager.maps))
    np.testing.assert_allclose(full, eager.maps, rtol=1e-4, atol=1e-6 * np.nanmax(np.abs(eager.maps)))


def test_attribute_traces_in_chunks_equals_one_call(tiny):
    stim = nr.stimuli.white_noise(frames=40, size=20, seed=3)
    ref = nr.attribute(tiny, stim, cell=0, steps=4, invariance="none")
    seen = []
    got = analysis.attribute_traces(tiny, stim, cell=0, steps=4, invariance="none", chunk_frames=7,
                                    progress=lambda d, t: seen.append((d, t)))
    assert got.maps is None
    for name in ("channels", "response", "rates"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got.frames, ref.frames)
    assert seen[-1] == (31, 31)
    assert got.completeness_error == pytest.approx(ref.completeness_error, rel=1e-2, abs=1e-6)


def test_attribute_traces_completeness_floor_matches_attribute_for_a_near_zero_stimulus():
    """The chunked traces use attribute's completeness_error (with its floor), not a copy without it.

    A constant 1e-7 gives the shipped model a response of a few float32 ulps; without
    the floor the chunked error read 0.91 while attribute's read 7e-4.
    """
    model = nr.load_model(device="cpu")
    stim = np.full((60, 50, 50), 1e-7, np.float32)
    ref = nr.attribute(model, stim, cell=0, steps=4, invariance="none")
    got = analysis.attribute_traces(model, stim, cell=0, steps=4, invariance="none", chunk_frames=7)
    assert ref.completeness_error < 0.01
    assert got.completeness_error == pytest.approx(ref.completeness_error, rel=1e-2, abs=1e-3)


# --------------------------------------------------------------- run_analysis ---

def test_a_short_movie_is_exactly_attribute_then_reduce(tiny):
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    res = analysis.run_analysis(tiny, stim, cell=1, steps=4, explain=0.6)
    ref = nr.attribute(tiny, stim, cell=1, steps=4)
    red = nr.reduce(ref, explain=0.6)
    assert not res.lazy and res.maps is None
    np.testing.assert_array_equal(res.attribution.maps, ref.maps)
    np.testing.assert_array_equal(res.reduction.reduced_response, red.reduced_response)
    assert res.reduction.kept == red.kept
    assert res.limit == analysis.map_limit(ref.maps)
    assert res.parameters == {"cell": 1, "steps": 4, "tol": None, "invariance": "auto", "crop": "none",
                              "pixel_um": None, "frame_ms": None, "normalize": False, "reduce": True, "explain": 0.6}


def test_tol_reaches_attribute_on_both_paths(tiny):
    """run_analysis(tol=) is nr.attribute(tol=) on a short movie; the chunked traces keep each frame's steps."""
    stim = nr.stimuli.white_noise(frames=40, size=20, seed=4)
    res = analysis.run_analysis(tiny, stim, cell=0, tol=1e-4, reduce=False)
    ref = nr.attribute(tiny, stim, cell=0, tol=1e-4)
    np.testing.assert_array_equal(res.attribution.maps, ref.maps)
    np.testing.assert_array_equal(res.attribution.steps_per_frame, ref.steps_per_frame)
    assert res.parameters["tol"] == 1e-4 and res.parameters["steps"] == ref.steps
    lazy = analysis.run_analysis(tiny, stim, cell=0, tol=1e-4, reduce=False, lazy_threshold=0)
    per_frame = lazy.attribution.steps_per_frame
    assert per_frame.shape == (40,) and (per_frame[:9] == 0).all() and (per_frame[9:] >= 16).all()
    assert lazy.attribution.steps == per_frame.max() and lazy.attribution.completeness_error <= 1e-4
    traces = analysis.attribute_traces(tiny, stim, cell=0, tol=1e-4, invariance="none", chunk_frames=7)
    for a in range(9, 40, 7):  # each chunk is one nr.attribute call on its window
        part = nr.attribute(tiny, stim[a - 9 : a + 7], cell=0, tol=1e-4, invariance="none")
        np.testing.assert_array_equal(traces.steps_per_frame[a : a + 7], part.steps_per_frame[9:])


@pytest.mark.parametrize("threshold", [0, analysis.LAZY_MAP_BYTES], ids=["lazy", "eager"])
def test_the_crop_origin_says_where_the_window_sits_on_both_paths(tiny, threshold):
    """The lazy path crops before attributing; its result still says where the window was cut (it said (0, 0))."""
    stim = nr.stimuli.white_noise(frames=30, size=26, seed=5)
    res = analysis.run_analysis(tiny, stim, cell=0, steps=2, crop="center", reduce=False, lazy_threshold=threshold)
    assert res.lazy == (threshold == 0)
    assert res.attribution.crop_origin == (3, 3)
    ref = nr.attribute(tiny, stim[:, 3:23, 3:23], cell=0, steps=2)
    np.testing.assert_allclose(res.attribution.channels, ref.channels, rtol=1e-4, atol=1e-6)


def test_out_of_memory_retry_halves_the_attributions_own_default(tiny, monkeypatch, oom_above_256):
    """The retry starts from half of attribute's path points per block, not of predict's frames per pass."""
    from napari_retina.attribution import _integrate

    monkeypatch.setitem(_integrate.BATCH_POINTS, "cpu", 400)
    analysis.run_analysis(tiny, nr.stimuli.white_noise(frames=30, size=20, seed=1), steps=2, reduce=False)
    assert oom_above_256[:2] == [None, 200]


def test_out_of_memory_retry_halves_a_wrapped_modules_own_default(monkeypatch, oom_above_256, wrapped_tiny):
    """A wrapped module attributes in its own config.batch_size by default (fewer for a heavy one): the retry
    halves that, not the device's default for a RetinaCNN."""
    from napari_retina import _wrap

    wrapped = wrapped_tiny
    monkeypatch.setattr(_wrap, "BATCH_FLOPS", 40 * wrapped.config.flops)  # a heavy module: 32 windows a batch
    assert wrapped.config.batch_size == 32
    stim = np.random.default_rng(0).standard_normal((20, 12, 12)).astype(np.float32)
    analysis.run_analysis(wrapped, stim, steps=2, reduce=False)
    assert oom_above_256[:2] == [None, 16]


def test_out_of_memory_is_retried_with_smaller_batches(tiny, monkeypatch, oom_above_256):
    sizes = oom_above_256
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    res = analysis.run_analysis(tiny, stim, steps=2, reduce=False)
    assert sizes[0] is None and sizes[-1] <= 256 and len(sizes) >= 2
    # retried from half the batch of the model's device (CPU: 256 -> 128), not of a GPU's
    assert sizes[1] == default_points(tiny.device) // 2
    monkeypatch.undo()
    ref = nr.attribution.attribute(tiny, stim, steps=2)
    np.testing.assert_allclose(res.attribution.channels, ref.channels, rtol=1e-5, atol=1e-7)

    def always_oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(nr.attribution, "attribute", always_oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        analysis.run_analysis(tiny, stim, steps=2, reduce=False)



@pytest.mark.parametrize("threshold", [0, analysis.LAZY_MAP_BYTES])
def test_the_result_keeps_its_own_stimulus_not_the_callers_buffer(tiny, threshold):
    """A caller that reuses its float32 buffer after the call must not change the analysis: its reduction and
    (lazy path) its maps are recomputed from the kept stimulus."""
    buf = nr.stimuli.white_noise(frames=30, size=20, seed=2)
    res = analysis.run_analysis(tiny, buf, cell=0, steps=4, lazy_threshold=threshold)
    before, reduced = res.attribution.stimulus.copy(), nr.reduce(res.attribution).explained_variance
    maps = np.asarray(res.maps[25]) if res.lazy else None   # not yet computed: cached from here on
    buf[:] = nr.stimuli.white_noise(frames=30, size=20, seed=3)
    np.testing.assert_array_equal(res.attribution.stimulus, before)
    assert nr.reduce(res.attribution).explained_variance == reduced
    if res.lazy:   # a fresh lazy array over what the analysis keeps computes the same maps
        again = analysis.lazy_maps(tiny, res.attribution.stimulus, cell=0, steps=4, invariance="none")
        np.testing.assert_array_equal(np.asarray(again[25]), maps)


def test_an_attribution_copies_a_writeable_buffer_and_tensor_but_not_a_read_only_array(tiny):
    """``nr.attribute`` keeps a copy of the caller's writeable float32 array or CPU tensor (no copy of what it
    converted anyway), and a read-only array as it is: it cannot change, and it may be a whole memory-mapped file."""
    buf = nr.stimuli.white_noise(frames=20, size=20, seed=2)
    assert not np.shares_memory(nr.attribute(tiny, buf, steps=2).stimulus, buf)
    tensor = torch.from_numpy(buf.copy())
    assert not np.shares_memory(nr.attribute(tiny, tensor, steps=2).stimulus, tensor.numpy())
    buf.flags.writeable = False
    assert nr.attribute(tiny, buf, steps=2).stimulus is buf


def test_map_limit_is_a_high_percentile_of_finite_magnitudes():
    maps = np.linspace(-1.0, 1.0, 2001, dtype=np.float32)
    maps[:3] = [np.nan, np.inf, -np.inf]
    assert analysis.map_limit(maps) == pytest.approx(np.percentile(np.abs(maps[3:]), 99.99))
    assert analysis.map_limit(None) == analysis.map_limit(np.zeros(4)) == analysis.map_limit(np.full(3, np.nan)) == 1.0


def test_map_limit_of_sparse_maps_is_near_their_peak_not_in_their_background():
    """Attribution maps are sparse: one channel's receptive field on the few frames with a response, a faint
    background elsewhere. The 99.5th percentile lay in that background (7-20x below the largest value on the
    samples) and saturated the peak frame's maps into one disc."""
    rng = np.random.default_rng(0)
    maps = 1e-4 * rng.standard_normal((100, 8, 20, 20)).astype(np.float32)
    maps[40:45, 2, 8:13, 8:13] = rng.uniform(0.5, 1.0, (5, 5, 5))   # 125 of 320,000 values
    assert 0.5 <= analysis.map_limit(maps) <= 1.0


# ------------------------------------------------------------------- export ---

def test_to_dict_is_the_results_own_export_plus_parameters_and_provenance(tiny):
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    res = analysis.run_analysis(tiny, stim, cell=0, steps=2, explain=0.6, model_source="tiny model", layer="noise")
    d = res.to_dict()
    assert set(d) == {"parameters", "attribution", "reduction", "stimulus", "model"}
    assert d["attribution"].keys() == res.attribution.to_dict().keys()
    assert d["reduction"].keys() == res.reduction.to_dict().keys()
    np.testing.assert_array_equal(d["stimulus"], stim)
    assert d["parameters"] == {**res.parameters, "stimulus_layer": "noise", "frame_ms": nr.FRAME_MS,
                               "pixel_um": nr.PIXEL_UM}
    assert d["model"]["source"] == "tiny model"
    assert json.loads(d["model"]["config"]) == tiny.config.to_dict()


def test_save_writes_everything_to_hdf5_and_the_traces_to_csv(tiny, tmp_path):
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    res = analysis.run_analysis(tiny, stim, cell=0, steps=2, explain=0.6, model_source="tiny model")
    attr, red = res.attribution, res.reduction
    with h5py.File(res.save(tmp_path / "a.h5"), "r") as h5:
        np.testing.assert_array_equal(h5["attribution/maps"][()], attr.maps)
        np.testing.assert_array_equal(h5["attribution/crop_origin"][()], [0, 0])
        np.testing.assert_array_equal(h5["reduction/kept"][()], red.kept)
        assert json.loads(h5["reduction"].attrs["labels"]) == [red.label(c) for c in range(len(red.importance))]
        np.testing.assert_array_equal(h5["stimulus"][()], stim)
        assert h5["parameters"].attrs["steps"] == 2 and h5["model"].attrs["source"] == "tiny model"
    csv_path = res.save(tmp_path / "t.csv")
    header = csv_path.read_text().splitlines()[0].split(",")
    unit = " (spikes per 10 ms bin)"
    assert header[:5] == ["frame", "time (ms)", "rate" + unit, "response" + unit, "reduced_response" + unit]
    with pytest.raises(ValueError, match=r"Save to a \.h5/\.hdf5 file \(everything\) or a \.csv file "
                                         r"\(traces\), got 'a\.txt'\."):
        res.save(tmp_path / "a.txt")
    with pytest.raises(TypeError, match=r"^path must be a str or os\.PathLike, got NoneType$"):   # pathlib's words
        res.save(None)
    (tmp_path / "folder.h5").mkdir()
    with pytest.raises(ValueError, match=r"it is a folder; give a file name inside it"):
        res.save(tmp_path / "folder.h5")


def test_read_analysis_gives_back_what_was_saved_without_torch_or_napari(tiny, tmp_path):
    """nr.read_analysis: the saved arrays, reduction, settings and model source, as the analysis had them."""
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    res = analysis.run_analysis(tiny, stim, cell=0, steps=2, explain=0.6, model_source="tiny model")
    attr, red = res.attribution, res.reduction
    saved = nr.read_analysis(res.save(tmp_path / "a.h5"))
    got = saved.attribution
    for name in ("channels", "response", "maps"):
        np.testing.assert_array_equal(getattr(got, name), getattr(attr, name), err_msg=name)
    np.testing.assert_array_equal(got.stimulus, stim)
    assert (got.cells, got.invariance, got.offset, got.crop_origin) == (attr.cells, "none", attr.offset, (0, 0))
    assert got.completeness_error == pytest.approx(attr.completeness_error)
    assert got.baseline_rate == attr.baseline_rate > 0   # the rate at mean grey: the reopened plot's title gives it
    assert saved.reduction.kept == list(red.kept)
    assert [saved.reduction.label(c) for c in range(len(red.importance))] == \
        [red.label(c) for c in range(len(red.importance))]
    np.testing.assert_array_equal(saved.reduction.reduced_response, red.reduced_response)
    assert saved.reduction.explained_variance == pytest.approx(red.explained_variance)
    assert (saved.parameters["steps"], saved.parameters["explain"], saved.model["source"]) == (2, 0.6, "tiny model")
    # the module reads files only: importing it pulls in neither torch nor napari
    import subprocess
    import sys

    code = "import sys, napari_retina.saved; print('torch' in sys.modules, 'napari' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split() == ["False", "False"]


def test_read_analysis_refuses_what_is_not_a_saved_analysis(tmp_path, tiny):
    np.save(tmp_path / "s.npy", np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"s\.npy' is not a saved analysis \(an \.h5/\.hdf5 file Analysis\.save"):
        nr.read_analysis(tmp_path / "s.npy")
    with h5py.File(tmp_path / "d.h5", "w") as h5:   # a dataset's layout, say
        h5["train/stimulus"] = np.zeros((3, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"d\.h5' is not a saved analysis .*: it has no 'attribution' and no "
                                        r"'stimulus'$"):
        nr.read_analysis(tmp_path / "d.h5")
    # a scientist's audit: an attribution written with write_results was called "a damaged saved analysis"
    stim = nr.stimuli.white_noise(frames=30, size=tiny.config.size, seed=0)
    attr = nr.attribute(tiny, stim, steps=2)
    nr.io.write_results(tmp_path / "attr.h5", {"attribution": attr.to_dict()})
    with pytest.raises(ValueError, match=r"attr\.h5' is not a saved analysis .*: it has no 'stimulus'$"):
        nr.read_analysis(tmp_path / "attr.h5")
    # and a truncated one says so in words (HDF5's own: "truncated file: eof = 1058528, sblock->base_addr = 0, …")
    res = analysis.run_analysis(tiny, stim, steps=2, reduce=False)
    data = res.save(tmp_path / "whole.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=rf"it cannot be read \(it is truncated \({len(data) // 2:,} of its "
                                         rf"{len(data):,} bytes are there"):
        nr.read_analysis(tmp_path / "cut.h5")
    with pytest.raises(FileNotFoundError, match=r"^no file at .*gone\.h5'$"):
        nr.read_analysis(tmp_path / "gone.h5")
    (tmp_path / "text.h5").write_text("not HDF5")
    with pytest.raises(ValueError, match=r"text\.h5' is not a saved analysis .*: it is not an HDF5 file$"):
        nr.read_analysis(tmp_path / "text.h5")


# ------------------------------------------------------- maps of full-field stimuli ---

@pytest.mark.parametrize("threshold", [analysis.LAZY_MAP_BYTES, 0], ids=["eager", "lazy"])
def test_a_full_field_stimulus_gets_full_maps_by_default_with_the_same_traces(tiny, threshold):
    """invariance "auto" on a full field resolves to "space" (no maps); run_analysis shows full maps instead.

    Before: maps None and nothing said why; now (T, C, h, h) maps whose spatial sums are
    the channels of the cheap "space" path, and a note that says what was computed.
    """
    stim = nr.stimuli.flash_train(period=4, n_flashes=3, size=20, pre=10, post=10)
    space = nr.attribute(tiny, stim, cell=0, steps=4, invariance="space")
    res = analysis.run_analysis(tiny, stim, cell=0, steps=4, reduce=False, lazy_threshold=threshold)
    maps = np.asarray(res.maps) if res.lazy else res.attribution.maps
    h = tiny.config.map_sizes[0]
    assert maps.shape == (len(stim), tiny.config.channels[0], h, h)
    np.testing.assert_allclose(np.nansum(maps, axis=(2, 3))[space.frames], space.channels[space.frames],
                               rtol=1e-4, atol=1e-5 * np.abs(space.channels[space.frames]).max())
    np.testing.assert_allclose(res.attribution.channels, space.channels, rtol=1e-4,
                               atol=1e-5 * np.nanmax(np.abs(space.channels)))
    assert res.parameters["invariance"] == "auto" and "full-field" in res.maps_note
    assert ("on demand" in res.maps_note) == res.lazy == (threshold == 0)


def test_an_explicit_space_invariance_keeps_no_maps_and_the_note_says_so(tiny):
    stim = nr.stimuli.flash_train(period=4, n_flashes=3, size=20, pre=10, post=10)
    res = analysis.run_analysis(tiny, stim, cell=0, steps=4, invariance="space", reduce=False)
    assert res.attribution.maps is None and res.maps is None
    assert res.maps_note.startswith("no maps: invariance 'space'")


@pytest.mark.parametrize("asked, resolved, used", [("auto", "space", "none"), ("auto", "y", "y"),
                                                   ("space", "space", "space"), ("none", "none", "none")])
def test_maps_invariance(asked, resolved, used):
    assert analysis.maps_invariance(asked, resolved) == used


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(explain=5), ValueError, r"^explain must be a fraction in \(0, 1\], got 5\.0$"),
    (dict(explain="0.9"), TypeError, r"^explain must be a number in \(0, 1\]"),
    (dict(reduce="no"), TypeError, r"^reduce must be True or False, got str 'no'$"),
])
def test_reduction_arguments_are_refused_before_the_attribution(tiny, monkeypatch, kwargs, exc, match):
    """A wrong ``explain`` used to end a run only after the whole attribution (11.7 s for 1,000 frames on a CPU,
    minutes on a long movie), and ``reduce="no"`` counted as true."""
    def attribute(*args, **kw):
        raise AssertionError("the attribution ran before the arguments were checked")

    monkeypatch.setattr(analysis.attribution, "attribute", attribute)
    stim = np.random.default_rng(0).standard_normal((tiny.config.history + 2, tiny.config.size,
                                                     tiny.config.size)).astype(np.float32)
    with pytest.raises(exc, match=match):
        analysis.run_analysis(tiny, stim, cell=0, steps=2, **kwargs)


def test_progress_alone_cancels_the_reduction_too(tiny):
    """With ``progress`` and no ``reduce_progress``, the reduction (16 s of 10,000 frames in an audit) could not
    be cancelled: a Cancel raised in ``progress`` after the attribution was never asked. ``progress`` is now asked
    again, with its last values (a bar does not move back), as the reduction goes on."""
    stim = nr.stimuli.white_noise(frames=60, size=20, seed=2)
    seen, token = [], nr.CancelToken()

    def progress(done, total):
        seen.append((done, total))
        if done == total:               # the attribution is done: the user presses Cancel
            token.cancel()

    with pytest.raises(nr.Cancelled):
        analysis.run_analysis(tiny, stim, cell=0, steps=2, progress=token.wrap(progress))
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == seen[-1][1]
    reduced = []                        # with its own callback, the reduction reports there
    analysis.run_analysis(tiny, stim, cell=0, steps=2, progress=lambda d, n: None,
                          reduce_progress=lambda d, n: reduced.append((d, n)))
    assert reduced and reduced[-1][0] == reduced[-1][1]
