"""The bad-input policy: one clear sentence for each kind of wrong stimulus."""

import warnings

import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina.model import ModelConfig, RetinaCNN


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RetinaCNN(ModelConfig(history=6, size=16, channels=(3, 4), kernels=(5, 3), n_cells=2)).eval()


def good(t=10):
    return np.zeros((t, 16, 16), np.float32)


@pytest.mark.parametrize(
    "stimulus, error, match",
    [
        (np.zeros((16, 16), np.float32), ValueError, r"\(T, H, W\) stack, got 2 dimension.*single frame"),
        (np.zeros((10, 16, 16, 3), np.float32), ValueError, "RGB"),
        (np.zeros((2, 10, 16, 16), np.float32), ValueError, "got 4 dimension"),
        (np.zeros((3, 16, 16), np.float32), ValueError, "3 frame.*history of 6 frames"),
        (np.zeros((10, 20, 16), np.float32), ValueError, "20x16 pixels but the model expects 16x16.*crop"),
        (np.zeros((10, 12, 20), np.float32), ValueError,
         "12x20 pixels, smaller than the 16x16 the model expects, and a crop cannot make it larger; if its pixels "
         "are larger than the model's 55 µm, pass their size in µm as pixel_um"),
        (np.full((10, 16, 16), np.nan, np.float32), ValueError, "must be finite"),
        (np.array([[[np.inf] * 16] * 16] * 10), ValueError, "must be finite"),
        (np.zeros((0, 16, 16), np.float32), ValueError, "must not be empty"),
        (np.zeros((10, 16, 16), dtype=complex), TypeError, "real numbers"),
        (np.zeros((10, 16, 16), dtype=bool), TypeError, "real numbers"),
        (np.array([["a"]]), TypeError, "real numbers"),
        ("movie.tif", TypeError, r"\(T, H, W\) array of numbers, got the path 'movie.tif'; read the file first: "
                                 r"nr\.io\.read_stimulus\(path\)$"),
        # time last: frames of the model's size with T after them (a crop would cut rows into "frames")
        (np.zeros((16, 16, 30), np.float32), ValueError, r"16x30 pixels but the model expects 16x16 \(if time is "
                                                         r"its last axis, put it first: np\.moveaxis\(stack, -1, 0\)\)"),
        (np.zeros((16, 16, 8), np.float32), ValueError, r"smaller than .* at least 16x16 \(if time is its last axis"),
        (None, TypeError, r"\(T, H, W\) array of numbers"),
        ([[[1, 2], [3]]], TypeError, r"\(T, H, W\) array of numbers"),
    ],
)
def test_predict_refuses_bad_stimuli(model, stimulus, error, match):
    with pytest.raises(error, match=match):
        nr.predict(model, stimulus)


def test_error_messages_are_one_sentence(model):
    with pytest.raises(ValueError) as info:
        nr.predict(model, np.zeros((10, 20, 20), np.float32))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "crop, match",
    [
        ((10, 0), "does not fit"),
        ("middle", "crop must be"),
        ((1,), "crop must be"),
        ((1.7, 2.2), r"crop must be .*got \(1\.7, 2\.2\) \(whole pixel indices"),
        ((2.0, 3.0), "crop must be .*whole pixel indices"),
        ((True, False), "crop must be .*not fractions or bools"),
        ("1.5,2", r"crop must be .*got '1\.5,2'"),
        ("2,3,4", "crop must be"),
        ("-1,2", r"at \(y0=-1, x0=2\) does not fit"),
    ],
)
def test_bad_crops(model, crop, match):
    with pytest.raises(ValueError, match=match):
        nr.predict(model, np.zeros((10, 20, 20), np.float32), crop=crop)


def test_bad_batch_size_and_model(model):
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        nr.predict(model, good(), batch_size=0)
    with pytest.raises(TypeError, match="model must be a RetinaCNN"):
        nr.predict("model.pt", good())


def test_stimulus_beyond_float32_is_refused_before_any_work(model):
    with pytest.raises(ValueError, match=r"stimulus must fit in float32 \(\|value\| <= 3\.4e\+38\).*1e\+39"):
        nr.predict(model, np.full((10, 16, 16), 1e39))
    with pytest.raises(ValueError, match="must fit in float32"):
        nr.attribute(model, np.full((10, 16, 16), -1e39))


@pytest.mark.parametrize("normalize, error", [("yes", ValueError), (None, ValueError), ("ZSCORE", ValueError)])
def test_bad_normalize(model, normalize, error):
    with pytest.raises(error, match=r"normalize must be False, True or 'zscore'"):
        nr.predict(model, good(), normalize=normalize)
    with pytest.raises(error, match=r"normalize must be False, True or 'zscore'"):
        nr.attribute(model, good(), normalize=normalize)


# --------------------------------------------------------------------------- reduce's arguments


@pytest.fixture(scope="module")
def attribution(model):
    return nr.attribute(model, np.random.default_rng(0).standard_normal((12, 16, 16)).astype(np.float32), steps=2)


@pytest.mark.parametrize(
    "value, error, match",
    [
        (float("nan"), ValueError, "ignore_oldest_ms must be finite, >= 0 and less than the model's history of 60 ms, got nan"),
        (float("inf"), ValueError, "got inf"),
        (-5, ValueError, "less than the model's history of 60 ms, got -5"),
        (60, ValueError, "history of 60 ms, got 60"),
        ("150", TypeError, "ignore_oldest_ms must be a number of milliseconds, got str"),
        (True, TypeError, "got bool"),
    ],
)
def test_reduce_refuses_bad_ignore_oldest_ms(attribution, value, error, match):
    with pytest.raises(error, match=match):
        nr.reduce(attribution, ignore_oldest_ms=value)


def test_reduce_accepts_the_ends_of_the_ignore_oldest_range(attribution):
    assert nr.reduce(attribution, ignore_oldest_ms=0).kept
    assert nr.reduce(attribution, ignore_oldest_ms=59.9).kept


def test_reduce_refuses_a_circuit_that_is_non_finite_off_the_attributed_frames(model):
    """Frames 6..11 are attributed (finite); frames 13.. hold ±3e38, so the model's rate there is NaN."""
    stim = np.random.default_rng(1).standard_normal((20, 16, 16)).astype(np.float32)
    stim[13:] = np.sign(stim[13:]) * 3e38
    with pytest.warns(nr.StimulusUnitsWarning):
        attr = nr.attribute(model, stim, frames=list(range(6, 12)), steps=2)
    with pytest.raises(ValueError, match=r"the model's rates are NaN or infinite on \d+ of 15 frames "
                                         r"with a full history \(first at frame 1[3-9]\)"):
        nr.reduce(attr)


def test_reduce_refuses_a_non_finite_reduced_circuit(attribution, monkeypatch):
    """A fit that went wrong (NaN weights) must not come back as a Reduction."""
    from napari_retina import reduction

    def nan_fit(drives, target, steps=200, rest=None):
        return np.full(drives.shape[1], np.nan), float("nan"), np.full(len(target), np.nan)

    monkeypatch.setattr(reduction, "fit_output", nan_fit)
    with pytest.raises(ValueError, match=r"the reduced circuit's rates are NaN or infinite on 7 of 7 frames "
                                         r"with a full history \(first at frame 5\); the fit of its output weights"):
        nr.reduce(attribution)


def test_units_statistics_are_exact_and_chunked():
    """The contrast-units check reads mean and std in float64, chunk by chunk (no whole-stack float64 copy)."""
    from napari_retina._validate import mean_std

    rng = np.random.default_rng(0)
    stack = (128 + 70 * rng.standard_normal((97, 13, 11))).astype(np.float32)
    ref = stack.astype(np.float64)
    for chunk in (1, 143, 1000, 1 << 22):
        mean, std = mean_std(stack, chunk_values=chunk)
        assert mean == pytest.approx(ref.mean(), rel=1e-12) and std == pytest.approx(ref.std(), rel=1e-12)
    # a cropped (non-contiguous) view, raw integers and a constant stack
    view = stack[:, 2:11, 1:9]
    assert mean_std(view, 100) == pytest.approx((ref[:, 2:11, 1:9].mean(), ref[:, 2:11, 1:9].std()), rel=1e-12)
    raw = rng.integers(0, 256, (31, 7, 5), dtype=np.uint8)
    assert mean_std(raw, 50) == pytest.approx((raw.mean(), raw.std()), rel=1e-12)
    assert mean_std(np.full((9, 4, 4), 7.25, np.float32), 20) == (7.25, 0.0)
    # values far from 0 (1e6 + N(0, 1)): the one-pass variance is taken about a shift near the mean, or it is lost
    # to cancellation (sums of squares of 1e12 leave a variance of 1 under float64's rounding of them)
    far = 1e6 + rng.standard_normal((40, 9, 9))
    assert mean_std(far, 200) == pytest.approx((far.mean(), far.std()), rel=1e-9)


@pytest.mark.parametrize("text", ["--3,4", "3,²", "3,+-4", "3.0,4"])
def test_crop_text_that_is_not_two_integers_gets_the_crop_sentence(text):
    from napari_retina._validate import parse_crop

    with pytest.raises(ValueError, match=r"crop must be None, 'none', 'center', \(y0, x0\) integers"):
        parse_crop(text)


def test_zscore_is_exact_and_chunked():
    from napari_retina._validate import zscore

    rng = np.random.default_rng(1)
    stack = rng.integers(0, 256, size=(2000, 50, 50), dtype=np.uint8)   # more than one chunk
    x = stack.astype(np.float64)
    np.testing.assert_allclose(zscore(stack), ((x - x.mean()) / x.std()).astype(np.float32), rtol=1e-6, atol=1e-6)
    assert zscore(stack).dtype == np.float32
    np.testing.assert_array_equal(zscore(np.full((3, 4, 4), 7.0)), np.zeros((3, 4, 4), np.float32))


def test_check_finite_output_reads_only_the_given_frames_and_survives_an_overflowing_sum():
    """The fast path (a finite sum) must not miss a NaN or pass an inf, and a sum that overflows is not an error."""
    from napari_retina._validate import NonFiniteOutputError, check_finite_output

    values = np.full((12, 3, 4), 3e38, np.float32)  # every value finite, their float32 sum overflows
    values[:2] = np.nan  # no full history: never checked
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflowing sum is internal: no RuntimeWarning for the user
        check_finite_output(values, np.arange(2, 12), "the maps")
    values[7, 1, 2] = np.inf
    with pytest.raises(NonFiniteOutputError, match=r"the maps are NaN or infinite on 1 of 10 frames .*\(first at frame 7\)"):
        check_finite_output(values, np.arange(2, 12), "the maps")
    check_finite_output(values, np.array([2, 5, 9]), "the maps")  # a subset without frame 7
    values[9, 0, 0] = np.nan
    with pytest.raises(NonFiniteOutputError, match=r"on 1 of 3 frames .*\(first at frame 9\)"):
        check_finite_output(values, np.array([2, 5, 9]), "the maps")
    with pytest.raises(NonFiniteOutputError, match=r"on 2 of 3 frames .*\(first at frame 7\)"):
        check_finite_output(values, np.array([2, 7, 9]), "the maps")



@pytest.mark.parametrize("stimulus", [[[1.0, 2.0], [3.0]], None, 3.0, np.float32(3.0), "a.npy"])
def test_run_analysis_refuses_what_is_not_a_stack_as_attribute_does(model, stimulus):
    """A ragged list, None, a number or a path: the Analyze computation's sentence is nr.attribute's."""
    from napari_retina.analysis import run_analysis

    with pytest.raises((TypeError, ValueError)) as ours:
        run_analysis(model, stimulus)
    with pytest.raises((TypeError, ValueError)) as theirs:
        nr.attribute(model, stimulus)
    assert (ours.type, str(ours.value)) == (theirs.type, str(theirs.value)) and "\n" not in str(ours.value)



def test_frames_that_are_a_mask_or_a_long_float_array_are_one_line():
    """A boolean mask is named as one (with the remedy); a long array is described, not printed over lines."""
    from napari_retina._frames import select_frames

    with pytest.raises(TypeError, match=r"^frames must be frame indices, not a boolean mask \(got a bool array of "
                                        r"shape \(60,\)\); pass np.flatnonzero\(mask\)$"):
        select_frames(60, 10, np.ones(60, bool))
    with pytest.raises(TypeError, match=r"^frames must be None, a slice or a list of integer frame indices, got "
                                        r"ndarray of float64 \(100,\)$"):
        select_frames(60, 10, np.linspace(0, 1, 100))


def test_frames_messages_name_the_index_given_and_an_open_slice_starts_where_none_does():
    """A tester's review: frames=[-10] was refused as 'got frame 34' (an index never passed), 10**20 as not an
    integer, and slice(None) was refused where frames=None means every frame with a full history."""
    from napari_retina._frames import select_frames

    with pytest.raises(ValueError, match=r"have no full 40-frame history\), got frame -20 \(frame 30 of 50\)$"):
        select_frames(50, 40, [45, -20])
    for big in (10**20, -10**20):
        with pytest.raises(ValueError, match=rf"^frames must lie inside the movie's 50 frames, got index {big}$"):
            select_frames(50, 40, [40, big])
    # Python ints that all fit are frames like any others (the check for those beyond int64 raised StopIteration)
    np.testing.assert_array_equal(select_frames(50, 40, np.array([45, 40], dtype=object)), [40, 45])
    every = np.arange(39, 50)
    for open_slice, want in ((slice(None), every), (slice(None, 45), every[:6]), (slice(None, None, -1), every),
                             (slice(None, None, 2), np.arange(40, 50, 2)), (slice(45, None, -1), every[:7])):
        np.testing.assert_array_equal(select_frames(50, 40, open_slice), want)
    with pytest.raises(ValueError, match=r"got frame 0$"):   # a start given is taken at its word
        select_frames(50, 40, slice(0, 50))


def test_maps_larger_than_memory_are_refused_before_any_work(model, monkeypatch):
    """nr.attribute keeps maps over the whole movie: 3 frames of a 20,000-frame movie took 791 MiB, and a movie
    whose maps exceed the machine's memory was filled with NaN until the system killed the process."""
    import napari_retina._validate as V

    stim = good()
    T = len(stim)
    per_frame = 4 * 3 * 12 * 12   # this model's maps: 3 channels of 12 × 12 float32
    monkeypatch.setattr(V, "physical_memory_bytes", lambda: T * per_frame - 1)
    with pytest.raises(MemoryError, match=rf"^the maps of the movie's {T} frames \(3 × 12 × 12 float32 a frame, NaN "
                                          r"where not attributed\) take .* GiB, more than this machine's memory .*; "
                                          r"pass invariance='space' for the channels' traces alone"):
        nr.attribute(model, stim, cell=0, steps=2, frames=[T - 1], invariance="none",
                     progress=lambda done, total: pytest.fail("attributed before the maps were checked"))
    assert nr.attribute(model, stim, cell=0, steps=2, frames=[T - 1], invariance="space").maps is None
    monkeypatch.setattr(V, "physical_memory_bytes", lambda: T * per_frame)
    assert nr.attribute(model, stim, cell=0, steps=2, frames=[T - 1], invariance="none").maps.shape == (T, 3, 12, 12)


def test_a_progress_that_is_not_callable_is_one_sentence(model):
    for call in (lambda: nr.predict(model, good(), progress=3),
                 lambda: nr.attribute(model, good(), steps=2, progress="yes")):
        with pytest.raises(TypeError, match=r"^progress must be a callable progress\(done, total\) or None, got "):
            call()


def test_run_analysis_refuses_a_lazy_threshold_that_is_not_an_int(model):
    from napari_retina.analysis import run_analysis

    with pytest.raises(TypeError, match="^lazy_threshold must be an int, got str 'x'$"):
        run_analysis(model, good(), lazy_threshold="x")
    with pytest.raises(ValueError, match="^lazy_threshold must be >= 0, got -1$"):
        run_analysis(model, good(), lazy_threshold=-1)


def test_a_masked_stimulus_with_masked_values_is_refused_not_read_beneath_its_mask(tiny):
    """A reliability audit: np.asarray of a masked array hands over the values beneath its mask, so predict,
    attribute and the synthetic retina analysed what their maker had masked out, with no warning."""
    data = np.random.default_rng(0).normal(size=(30, 20, 20)).astype(np.float32)
    stim = np.ma.masked_array(data, mask=np.zeros(data.shape, bool))
    stim[:, :3] = np.ma.masked
    big = np.ma.masked_array(np.zeros((50, 50, 50), np.float32), mask=np.zeros((50, 50, 50), bool))
    big[:, :3] = np.ma.masked
    for call, n in ((lambda: nr.predict(tiny, stim), 1800), (lambda: nr.attribute(tiny, stim, steps=2), 1800),
                    (lambda: nr.synthetic.Retina().respond(big), 7500)):
        with pytest.raises(ValueError, match=rf"^stimulus is a masked array with {n} masked value\(s\), which would "
                                             r"be used as the values beneath the mask; fill them first"):
            call()
    clear = np.ma.masked_array(data, mask=np.zeros(data.shape, bool))   # nothing masked: its values
    np.testing.assert_array_equal(nr.predict(tiny, clear), nr.predict(tiny, data))


def test_a_torch_tensor_that_requires_grad_or_is_bfloat16_is_read_as_its_values(tiny):
    """A reliability audit: such tensors were refused as "not an array of numbers", a plain one was read."""
    data = torch.from_numpy(np.random.default_rng(1).normal(size=(30, 20, 20)).astype(np.float32))
    want = nr.predict(tiny, data.numpy())
    np.testing.assert_array_equal(nr.predict(tiny, data.clone().requires_grad_(True)), want)
    np.testing.assert_array_equal(nr.predict(tiny, data.to(torch.bfloat16)),
                                  nr.predict(tiny, data.to(torch.bfloat16).float().numpy()))
    from napari_retina.analysis import run_analysis

    half = data.to(torch.bfloat16)   # every entry point, not predict alone (a review: attribute raised a TypeError)
    want = nr.attribute(tiny, half.float().numpy(), steps=2).channels
    np.testing.assert_array_equal(nr.attribute(tiny, half, steps=2).channels, want)
    np.testing.assert_array_equal(run_analysis(tiny, half, steps=2, reduce=False).attribution.channels, want)
    np.testing.assert_array_equal(nr.attribute(tiny, data.clone().requires_grad_(True), steps=2).channels,
                                  nr.attribute(tiny, data.numpy(), steps=2).channels)


def test_a_half_precision_model_is_refused_in_one_sentence(tiny):
    """A reliability audit: model.half() failed deep inside torch.fft (predict, attribute) or einsum (experiments);
    nr.wrap already refused float16 modules."""
    half = tiny.half()
    stim = np.zeros((30, 20, 20), np.float32)
    for call in (lambda: nr.predict(half, stim), lambda: nr.attribute(half, stim, steps=2),
                 lambda: nr.experiments.run("latency", half, steps=2)):
        with pytest.raises(ValueError, match=r"^the model must compute in float32 or float64 \(attribution sums "
                                             r"small gradients\), got float16 weights; pass model.float\(\)$"):
            call()
