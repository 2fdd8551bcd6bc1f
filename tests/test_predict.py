"""predict: alignment, reference agreement, chunking, devices, progress."""

import warnings

import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina.model import ModelConfig, RetinaCNN


def tiny(seed=0):
    torch.manual_seed(seed)
    model = RetinaCNN(ModelConfig(history=6, size=16, channels=(3, 4), kernels=(5, 3), n_cells=2))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2)
    return model.eval()


def reference(model, stim):
    """Direct windowed forward pass in float64, one frame at a time."""
    m64 = RetinaCNN(model.config).double().eval()
    m64.load_state_dict(model.state_dict())
    h = model.config.history
    out = np.full((len(stim), model.config.n_cells), np.nan)
    with torch.no_grad():
        for t in range(h - 1, len(stim)):
            x = torch.from_numpy(stim[t - h + 1 : t + 1].astype(np.float64))[None]
            out[t] = m64(x)[0].numpy()
    return out


def test_matches_float64_windowed_reference():
    model = tiny()
    stim = np.random.default_rng(0).standard_normal((50, 16, 16)).astype(np.float32)
    rates = nr.predict(model, stim, batch_size=7)  # batches that do not divide T
    ref = reference(model, stim)
    assert rates.dtype == np.float32 and rates.shape == (50, 2)
    assert np.isnan(rates[:5]).all() and np.isfinite(rates[5:]).all()
    np.testing.assert_allclose(rates[5:], ref[5:], rtol=1e-5, atol=1e-7)


def test_frame_t_depends_only_on_frames_up_to_t():
    model = tiny()
    stim = np.random.default_rng(1).standard_normal((30, 16, 16)).astype(np.float32)
    changed = stim.copy()
    changed[20] += 1.0
    a, b = nr.predict(model, stim), nr.predict(model, changed)
    np.testing.assert_array_equal(a[:20], b[:20])
    assert not np.allclose(a[20:26], b[20:26])
    np.testing.assert_array_equal(a[26:], b[26:])  # frame 20 left the 6-frame window


def test_batch_size_does_not_change_the_answer():
    model = tiny()
    stim = np.random.default_rng(2).standard_normal((40, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(nr.predict(model, stim, batch_size=1), nr.predict(model, stim, batch_size=64), rtol=1e-6)


def test_crop_cuts_the_requested_window():
    model = tiny()
    big = np.random.default_rng(3).standard_normal((20, 24, 30)).astype(np.float32)
    np.testing.assert_array_equal(
        nr.predict(model, big, crop=(2, 5)), nr.predict(model, big[:, 2:18, 5:21])
    )
    np.testing.assert_array_equal(
        nr.predict(model, big, crop="center"), nr.predict(model, big[:, 4:20, 7:23])
    )


def test_integer_stacks_are_mapped_to_contrast():
    model = tiny()
    raw = np.random.default_rng(4).integers(0, 256, (20, 16, 16)).astype(np.uint8)
    x = raw.astype(np.float64)
    contrast = ((x - x.mean()) / x.std()).astype(np.float32)
    np.testing.assert_allclose(nr.predict(model, raw), nr.predict(model, contrast), rtol=1e-5)


def test_progress_reports_and_cancel_stops():
    model = tiny()
    stim = np.random.default_rng(4).standard_normal((40, 16, 16)).astype(np.float32)
    seen = []
    nr.predict(model, stim, batch_size=10, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 35) and seen[-1] == (35, 35) and len(seen) == 5
    token = nr.CancelToken()

    def cancel_after_first(done, total):
        if done >= 10:
            token.cancel()

    with pytest.raises(nr.Cancelled):
        nr.predict(model, stim, batch_size=10, progress=token.wrap(cancel_after_first))


def test_predict_does_not_move_the_callers_model():
    model = tiny()
    nr.predict(model, np.zeros((8, 16, 16), np.float32), device="cpu")
    assert model.device.type == "cpu" and not model.training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu():
    model = tiny()
    stim = np.random.default_rng(5).standard_normal((60, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(nr.predict(model, stim, device="cuda"), nr.predict(model, stim), rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- stimulus units, non-finite rates


def raw_intensities(seed=6, T=20):
    """A 0–255 stack stored as floats: raw intensities, not contrast."""
    return np.random.default_rng(seed).integers(0, 256, (T, 16, 16)).astype(np.float32)


def test_float_raw_intensities_warn_and_say_how_to_normalise():
    with pytest.warns(nr.StimulusUnitsWarning, match=r"mean 1\d\d.*normalize='zscore'") as record:
        nr.predict(tiny(), raw_intensities())
    assert len(record) == 1 and "\n" not in str(record[0].message)


@pytest.mark.parametrize("normalize", [True, "zscore"])
def test_normalize_zscores_by_the_stacks_own_statistics(normalize):
    model, raw = tiny(), raw_intensities()
    x = raw.astype(np.float64)
    contrast = ((x - x.mean()) / x.std()).astype(np.float32)  # independent z-score
    with warnings.catch_warnings():
        warnings.simplefilter("error", nr.StimulusUnitsWarning)
        rates = nr.predict(model, raw, normalize=normalize)
        np.testing.assert_allclose(rates, nr.predict(model, contrast), rtol=1e-5)


def test_the_words_for_how_a_stack_is_mapped_say_what_predict_does():
    """input_mapping's sentence (the Analyze dock's status line) for each of normalise's cases, checked against
    what predict does with the stack."""
    from napari_retina._validate import input_mapping

    model, raw = tiny(), raw_intensities().astype(np.uint16)
    x = raw.astype(np.float64)
    own = ((x - x.mean()) / x.std()).astype(np.float32)
    assert input_mapping(np.float32) == ""
    assert input_mapping(np.float32, normalize=True).startswith("the stack was z-scored by its own mean and std")
    assert "uint16 stack was read as raw intensities and z-scored by its own" in input_mapping(raw.dtype)
    np.testing.assert_allclose(nr.predict(model, raw), nr.predict(model, own), rtol=1e-5)
    model.config.norm = {"units": "raw", "mean": 100.0, "std": 40.0}
    assert input_mapping(raw.dtype, model.config.norm) == ("the uint16 stack was read as raw intensities and mapped "
                                                           "to contrast with the model's training statistics (mean "
                                                           "100, std 40)")
    stored = ((x - 100.0) / 40.0).astype(np.float32)
    model.config.norm = {"units": "contrast", "mean": 0.0, "std": 1.0}
    reference = nr.predict(model, stored)
    model.config.norm = {"units": "raw", "mean": 100.0, "std": 40.0}
    np.testing.assert_allclose(nr.predict(model, raw), reference, rtol=1e-5)


@pytest.mark.parametrize(
    "mean, std, warns",
    [(0.0, 1.0, False), (2.9, 1.0, False), (-3.1, 1.0, True), (3.1, 1.0, True), (0.0, 9.5, False), (0.0, 10.5, True)],
)
def test_units_rule_is_three_training_stds_of_mean_or_ten_of_std(mean, std, warns):
    """The documented rule, with the model's training std (norm['std'] = 1 here): |mean| > 3 or std > 10."""
    z = np.random.default_rng(7).standard_normal((10, 16, 16))
    stim = (mean + std * (z - z.mean()) / z.std()).astype(np.float32)  # exactly this mean and std
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        nr.predict(tiny(), stim)
    assert any(issubclass(w.category, nr.StimulusUnitsWarning) for w in record) == warns


def test_float_intensities_from_0_to_1_warn_and_say_how_to_map_them():
    """0–1 intensities (a uint8 movie / 255) have mean and std within the rule above, but no value below 0:
    they are not contrast units, whose 0 is mean luminance."""
    with pytest.warns(nr.StimulusUnitsWarning,
                      match=r"looks like intensities.*no value is below 0.*mean 0\.5.*normalize='zscore'") as record:
        nr.predict(tiny(), raw_intensities() / np.float32(255))
    assert len(record) == 1 and "\n" not in str(record[0].message)


def _bright_squares_on_grey(seed=3):
    """Half the frames hold a bright 4×4 px square at a random place on grey (0)."""
    rng = np.random.default_rng(seed)
    stim = np.zeros((20, 16, 16), np.float32)
    for t in np.flatnonzero(rng.random(20) < 0.5):
        y, x = rng.integers(0, 12, 2)
        stim[t, y:y + 4, x:x + 4] = 1.5
    return stim


@pytest.mark.parametrize("stim", [
    np.zeros((20, 16, 16), np.float32),                                   # all grey
    np.ones((20, 16, 16), np.float32),                                    # uniform: a full-field step
    nr.stimuli.flash(intensity=2.0, pre=10, duration=5, post=5, size=16),  # a bright flash on grey
    nr.stimuli.step(intensity=1.0, pre=8, post=12, size=16),               # mostly bright, mean 0.6
    nr.stimuli.flash_train(intensity=1.0, pre=10, size=16),
    nr.stimuli.moving_bar(intensity=1.0, pre=10, size=16),
    _bright_squares_on_grey(),                                                   # sparse flashed squares
], ids=["grey", "uniform", "flash", "step", "flash_train", "moving_bar", "sparse"])
def test_bright_stimuli_on_grey_do_not_warn(stim):
    """Contrast stimuli with no dark values are grey (0) with bright parts: many values at 0, no warning."""
    assert stim.min() >= 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", nr.StimulusUnitsWarning)
        nr.predict(tiny(), stim)


def test_binary_noise_stored_as_0_and_1_warns():
    """A scientist's audit: white noise stored as 0/1 floats (half its values at 0) passed as contrast, a
    grey background with bright flashes; its rates correlated −0.16…0.08 with those of the same noise as ±1."""
    noise = nr.stimuli.white_noise(frames=30, size=16, seed=4)
    zero_one = ((noise + 1) / 2).astype(np.float32)
    assert 0.4 < np.mean(zero_one == 0) < 0.6
    with pytest.warns(nr.StimulusUnitsWarning, match=r"looks like intensities.*no value is below 0 and 0\.00% are "
                                                     r"grey \(0 across a whole row or column of a frame\)"):
        nr.predict(tiny(), zero_one)


def test_units_rule_scales_with_the_training_std():
    model = tiny()
    model.config.norm = {"mean": 0.0, "std": 0.2, "units": "contrast"}
    with pytest.warns(nr.StimulusUnitsWarning, match="std 0.2"):
        nr.predict(model, np.random.default_rng(8).standard_normal((10, 16, 16)).astype(np.float32) * 3)


def test_integer_stacks_without_a_grey_background_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", nr.StimulusUnitsWarning)
        nr.predict(tiny(), raw_intensities().astype(np.uint8))


def _flash_train_on_grey(dtype=np.uint8, grey=128.0, flash=-1.0, size=16):
    """A flash train as a raw movie: grey ``grey``, each flash ``grey·(1 + flash)``."""
    f = nr.stimuli.flash_train(period=7, intensity=flash, pre=10, size=size)
    return np.round(grey * (1 + f)).astype(dtype)


@pytest.mark.parametrize("dtype,normalize", [(np.uint8, False), (np.uint16, False), (np.float32, "zscore")])
def test_z_scoring_that_moves_a_grey_background_off_0_warns(dtype, normalize):
    """A scientist's audit: a uint8 flash train (grey 128, dark flashes) z-scored by its own mean and std put
    its grey at +0.33, and the model's peak rate was 3× that of the same movie in contrast, without a word."""
    stim = _flash_train_on_grey(dtype)
    x = stim.astype(np.float64)
    expected = (128.0 - x.mean()) / x.std()     # where z-scoring puts the grey, in float64
    share = np.mean(x == 128.0)
    assert share > 0.5 and expected > 0.2
    with pytest.warns(nr.StimulusUnitsWarning) as record:
        nr.predict(tiny(), stim, normalize=normalize)
    texts = [str(w.message) for w in record if "most common value" in str(w.message)]
    assert len(texts) == 1 and "\n" not in texts[0]
    assert f"most common value, 128 ({share:.0%} of its values" in texts[0]
    assert f"becomes {expected:+.2f} in contrast units, not 0" in texts[0] and "brighter background" in texts[0]
    assert "(x - 128) / s" in texts[0]


@pytest.mark.parametrize("stim", [
    np.full((20, 16, 16), 128, np.uint8),                                       # one grey level: std 0
    np.concatenate([_flash_train_on_grey(flash=-0.5), _flash_train_on_grey(flash=0.5)]),  # mean at the grey
    nr.stimuli.flash_train(period=7, intensity=-1.0, pre=10, size=16),          # float contrast, not z-scored
    (128 + 60 * nr.stimuli.white_noise(frames=30, size=16, seed=2)).astype(np.uint8),  # binary: 2 levels, ~50% each
], ids=["uniform", "balanced", "contrast", "binary_noise"])
def test_a_grey_background_that_stays_at_0_does_not_warn(stim):
    with warnings.catch_warnings():
        warnings.simplefilter("error", nr.StimulusUnitsWarning)
        nr.predict(tiny(), stim)


def test_float64_beyond_float32_is_refused():
    with pytest.raises(ValueError, match=r"must fit in float32 .*magnitude 1e\+39"):
        nr.predict(tiny(), np.full((10, 16, 16), 1e39))


def test_non_finite_rates_are_an_error_not_a_result():
    stim = np.full((10, 16, 16), 1e38, np.float32)  # finite, but the network overflows
    with pytest.raises(ValueError, match=r"rates are NaN or infinite on 5 of 5 frames.*first at frame 5") as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", nr.StimulusUnitsWarning)
            nr.predict(tiny(), stim)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_conv1_weight_is_reported_on_a_grey_movie_too(bad):
    """The at-rest shortcut is W⊛0 + b as the reference computes it: NaN, not the bias alone."""
    model = tiny()
    with torch.no_grad():
        model.conv1.weight[1, 2, 0, 0] = bad
    grey = np.zeros((10, 16, 16), np.float32)
    assert np.isnan(reference(model, grey)[5:]).all()  # what the network itself gives
    with pytest.raises(ValueError, match=r"rates are NaN or infinite on 5 of 5 frames.*NaN in its weights"):
        nr.predict(model, grey)
    with pytest.raises(ValueError, match=r"NaN or infinite on 5 of 5 frames"):
        nr.attribute(model, grey, cell=0)


def test_crop_text_forms_equal_the_tuple_forms():
    model = tiny()
    big = np.random.default_rng(9).standard_normal((12, 24, 30)).astype(np.float32)
    centre = nr.predict(model, big, crop="center")
    for crop in ("centre", " Center ", "CENTRE"):
        np.testing.assert_array_equal(nr.predict(model, big, crop=crop), centre)
    np.testing.assert_array_equal(nr.predict(model, big, crop="2, 5"), nr.predict(model, big, crop=(2, 5)))
    np.testing.assert_array_equal(nr.predict(model, big, crop=np.array([2, 5])), nr.predict(model, big[:, 2:18, 5:21]))
    exact = big[:, :16, :16]
    np.testing.assert_array_equal(nr.predict(model, exact, crop="none"), nr.predict(model, exact))


@pytest.mark.parametrize("kind", ["space", "y", "x"])
def test_uniform_movies_take_the_exact_fast_path(kind):
    """A full field or a bar is computed without the full convolution, with the reference's answer."""
    model = tiny()
    rng = np.random.default_rng(5)
    shape = {"space": (30, 1, 1), "y": (30, 1, 16), "x": (30, 16, 1)}[kind]
    stim = np.ascontiguousarray(np.broadcast_to(rng.standard_normal(shape), (30, 16, 16)), dtype=np.float32)
    fast, full = nr.predict(model, stim), nr.predict(model, stim, invariance="none")
    np.testing.assert_allclose(fast[5:], reference(model, stim)[5:], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fast[5:], full[5:], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="invariance 'space' needs a spatially uniform stimulus"):
        nr.predict(model, rng.standard_normal((30, 16, 16)).astype(np.float32), invariance="space")


def test_grey_windows_are_computed_once():
    """Windows of mean luminance only are the model at rest: one forward pass, the reference's rate."""
    model = tiny()
    stim = np.zeros((40, 16, 16), np.float32)
    stim[20] = 1.0  # windows ending at 20..25 see it; 5..19 and 26..39 are grey
    seen = []
    rates = nr.predict(model, stim, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen[:2] == [(0, 35), (29, 35)] and seen[-1] == (35, 35) and len(seen) == 4
    np.testing.assert_allclose(rates[5:], reference(model, stim)[5:], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(rates[5:20], np.broadcast_to(rates[39], (15, 2)))


def test_unique_windows_are_exact_on_frames_that_repeat_or_nearly_repeat():
    """Windows are equal exactly when their frames are equal byte for byte (here against a brute-force reference)."""
    from napari_retina._frames import unique_windows

    rng = np.random.default_rng(4)
    pool = rng.standard_normal((4, 6, 5)).astype(np.float32)
    pool[3] = pool[2]
    pool[3, 5, 4] = np.nextafter(pool[2, 5, 4], np.float32(9))  # one ulp from frame 2: a different frame
    pool[1] = 0.0
    pool[0] = 0.0
    pool[0, 2, 2] = -0.0  # other bytes than +0.0: kept apart, as a byte comparison does
    stim = pool[rng.integers(0, 4, size=60)]
    history, idx = 3, np.arange(2, 60)
    todo, inverse = unique_windows(stim, idx, history)
    windows = [stim[t - history + 1 : t + 1].tobytes() for t in idx]
    assert inverse.shape == idx.shape and np.isin(todo, idx).all()
    assert all(windows[i] == windows[np.flatnonzero(idx == todo[inverse[i]])[0]] for i in range(len(idx)))
    assert len(todo) == len(set(windows)) and list(todo) == sorted(todo)
    fresh = rng.standard_normal((20, 6, 5)).astype(np.float32)  # every frame distinct: the identity
    todo, inverse = unique_windows(fresh, np.arange(2, 20), history)
    assert np.array_equal(todo, np.arange(2, 20)) and np.array_equal(inverse, np.arange(18))


def test_frame_ids_tell_frames_apart_where_the_probe_does_not_look():
    """The probe (a sample of each frame) only shortcuts: frames equal on it but not elsewhere stay apart,
    byte-equal frames share an id, and frames the probe tells apart get ids 0..T-1 without the sort."""
    from napari_retina import _frames

    rng = np.random.default_rng(5)
    base = rng.standard_normal((50, 50)).astype(np.float32)
    stim = np.repeat(base[None], 6, axis=0)
    stim[1, 1, 30] += 1.0  # outside every probed run (values 0-15, 828-843, 1656-1671, 2484-2499)
    stim[2, 49, 0] -= 1.0
    stim[4] = stim[1]
    distinct, ids = _frames._frame_ids(stim)
    assert not _frames._probe_tells_apart(stim.reshape(6, -1))
    assert distinct == 3 and list(ids) == [ids[0], ids[1], ids[2], ids[0], ids[1], ids[0]]
    assert len({ids[0], ids[1], ids[2]}) == 3
    noise = rng.standard_normal((300, 50, 50)).astype(np.float32)
    assert _frames._probe_tells_apart(noise.reshape(300, -1))
    distinct, ids = _frames._frame_ids(noise)
    assert distinct == 300 and np.array_equal(ids, np.arange(300))

def test_importing_the_package_and_reading_a_stimulus_does_not_import_torch(tmp_path):
    """``nr.predict`` resolves lazily like every heavy name: reading a file stays torch-free."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    np.save(tmp_path / "s.npy", np.zeros((3, 4, 4), np.float32))
    code = (
        "import sys\n"
        "import napari_retina as nr\n"
        "import napari_retina.io\n"
        f"assert nr.io.read_stimulus({str(tmp_path / 's.npy')!r}).shape == (3, 4, 4)\n"
        "print('torch' in sys.modules)\n"
        "from napari_retina._predict import predict\n"
        "print(nr.predict is predict, callable(nr.predict))\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": src})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True", "True"]


def test_an_integer_stack_mapped_with_a_checkpoints_statistics_takes_a_chunk_beyond_its_result():
    """Mapped at once it took three float64 copies of the stack (20× a uint8 movie); chunk by chunk, the
    same float32 values (computed here at once)."""
    import tracemalloc

    from napari_retina._validate import normalise

    raw = np.random.default_rng(8).integers(0, 256, (4000, 50, 50)).astype(np.uint8)
    norm = {"units": "raw", "mean": 101.3, "std": 37.7}
    tracemalloc.start()
    try:
        got = normalise(raw, norm)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.tobytes() == ((raw.astype(np.float64) - 101.3) / 37.7).astype(np.float32).tobytes()
    assert peak < got.nbytes + 3 * 8 * (1 << 22), (peak, got.nbytes)   # the result and one chunk's temporaries
