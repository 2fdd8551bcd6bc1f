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
    stim = np.zeros((40, 16, 16), np.float32)
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


def test_units_rule_scales_with_the_training_std():
    model = tiny()
    model.config.norm = {"mean": 0.0, "std": 0.2, "units": "contrast"}
    with pytest.warns(nr.StimulusUnitsWarning, match="std 0.2"):
        nr.predict(model, np.random.default_rng(8).standard_normal((10, 16, 16)).astype(np.float32) * 3)


def test_integer_stacks_never_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", nr.StimulusUnitsWarning)
        nr.predict(tiny(), raw_intensities().astype(np.uint8))


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
