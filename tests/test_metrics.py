"""nr.metrics against independent references (SciPy, NumPy), zero variance, ties, non-finite values."""

from __future__ import annotations

import re
from contextlib import nullcontext
import warnings

import numpy as np
import pytest

from napari_retina import metrics as M

stats = pytest.importorskip("scipy.stats")


@pytest.fixture
def no_warnings():
    """Fail on any warning: an undefined score is NaN, silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ----------------------------------------------------------------------------- pearson


def test_pearson_1d_matches_scipy():
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        a = rng.normal(size=200).astype(dtype)
        b = (0.3 * a + rng.normal(size=200)).astype(dtype)
        r = M.pearson(a, b)
        assert isinstance(r, float)
        assert r == pytest.approx(stats.pearsonr(a.astype(np.float64), b.astype(np.float64)).statistic, rel=1e-12)


def test_pearson_2d_is_columnwise():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 4))
    b = a * [1.0, -2.0, 0.1, 0.0] + rng.normal(size=(300, 4))
    r = M.pearson(a, b)
    assert r.shape == (4,) and r.dtype == np.float64
    ref = [stats.pearsonr(a[:, j], b[:, j]).statistic for j in range(4)]
    np.testing.assert_allclose(r, ref, rtol=1e-12)


def test_pearson_zero_variance_empty_and_nonfinite_give_nan(no_warnings):
    assert np.isnan(M.pearson(np.ones(10), np.arange(10.0)))
    assert np.isnan(M.pearson(np.arange(10.0), np.full(10, 3.0)))
    assert np.isnan(M.pearson(np.zeros(0), np.zeros(0)))
    # a constant whose mean does not round back to it: the deviations are ~1e-17, not 0
    assert np.isnan(M.pearson(np.full(1001, 0.1), np.arange(1001.0)))
    assert np.isnan(M.pearson(np.arange(1001.0), np.full(1001, 0.7)))
    x = np.arange(10.0)
    assert np.isnan(M.pearson(np.where(x == 4, np.nan, x), x))      # no values are skipped
    assert np.isnan(M.pearson(np.where(x == 4, np.inf, x), x))
    a = np.stack([x, np.ones(10), x, x], 1)
    b = np.stack([x ** 2, x, x, np.where(x == 2, np.nan, x)], 1)
    r = M.pearson(a, b)
    assert np.isfinite(r[0]) and r[2] == pytest.approx(1.0)
    assert np.isnan(r[1]) and np.isnan(r[3])                          # only the bad columns
    assert np.isnan(M.pearson(np.zeros((0, 3)), np.zeros((0, 3)))).all()


def test_pearson_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"pearson needs two arrays of the same shape .*got shapes \(5,\) and \(4,\)"):
        M.pearson(np.zeros(5), np.zeros(4))
    with pytest.raises(ValueError, match=r"same shape \(T,\) or \(T, n\), got shapes \(2, 2, 2\)"):
        M.pearson(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))



@pytest.mark.parametrize("bad, says", [(["a", "b", "c"], "<U1 values of shape (3,)"),
                                       ([1j, 2.0, 3.0], "complex128 values of shape (3,)"),
                                       ([[1.0, 2.0], [3.0]], "a ragged list")])
def test_scores_refuse_text_complex_and_ragged_input_in_one_sentence(bad, says):
    """Complex numbers would lose their imaginary part silently; text and ragged lists gave numpy's messages."""
    for name, score in (("pearson", M.pearson), ("spearman", M.spearman), ("linear_fit", M.linear_fit),
                        ("explained_variance", M.explained_variance)):
        with pytest.raises(TypeError, match=rf"^{name} needs arrays of real numbers, got {re.escape(says)}$"):
            score(bad, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match=r"^finite_mean needs arrays of real numbers"):
        M.finite_mean(bad)


def test_pearson_of_huge_values_does_not_overflow_to_a_wrong_r(no_warnings):
    """Sums of products of 1e200s overflow float64 (r came out 0.0 for a perfect line); r is scale-free."""
    assert M.pearson([1e200, 2e200, 3e200], [1.0, 2.0, 3.0]) == pytest.approx(1.0, rel=1e-12)
    x = np.random.default_rng(1).normal(size=(50, 2))
    y = x + np.random.default_rng(2).normal(size=(50, 2))
    np.testing.assert_allclose(M.pearson(x * 1e300, y), M.pearson(x, y), rtol=1e-12)


def test_a_percentile_outside_0_to_100_is_one_sentence():
    for call in (lambda p: M.map_limit(np.ones(3), p), lambda p: M.map_limit_of_blocks([np.ones(3)], p)):
        for p in (200, -1, float("nan"), "99"):
            with pytest.raises(ValueError, match=r"^percentile must be a number in \[0, 100\], got "):
                call(p)


# ----------------------------------------------------------------------------- explained variance


def test_explained_variance_known_answers(no_warnings):
    rng = np.random.default_rng(2)
    t = rng.normal(size=500)
    assert M.explained_variance(t, t + 3.0) == pytest.approx(1.0)                # an offset costs nothing
    assert M.explained_variance(t, 0.5 * t) == pytest.approx(0.75)               # 1 - var(t/2)/var(t)
    assert M.explained_variance(t, np.zeros_like(t)) == pytest.approx(0.0, abs=1e-12)
    e = rng.normal(size=500)
    ref = 1.0 - np.var(t - e) / np.var(t)
    assert M.explained_variance(t, e) == pytest.approx(ref, rel=1e-12)


def test_explained_variance_uses_the_frames_where_both_are_finite(no_warnings):
    rng = np.random.default_rng(3)
    t, e = rng.normal(size=50), rng.normal(size=50)
    tn, en = t.copy(), e.copy()
    tn[3], en[7], en[9] = np.nan, np.inf, np.nan
    keep = np.ones(50, bool)
    keep[[3, 7, 9]] = False
    assert M.explained_variance(tn, en) == pytest.approx(M.explained_variance(t[keep], e[keep]), rel=1e-12)
    assert np.isnan(M.explained_variance(np.full(4, np.nan), np.zeros(4)))


def test_explained_variance_of_a_constant_target(no_warnings):
    assert M.explained_variance(np.full(20, 2.0), np.full(20, 5.0)) == 1.0     # the residual is constant too
    assert M.explained_variance(np.full(20, 2.0), np.arange(20.0)) == 0.0
    big = np.full(1001, 1e6 + 0.1)                                            # var() ~5e-20 from rounding
    assert M.explained_variance(big, np.arange(1001.0)) == 0.0
    assert M.explained_variance(big, np.full(1001, 3.0)) == 1.0


def test_explained_variance_2d_is_columnwise():
    rng = np.random.default_rng(4)
    t = rng.normal(size=(100, 3))
    e = t + rng.normal(size=(100, 3)) * [0.1, 1.0, 3.0]
    ev = M.explained_variance(t, e)
    assert ev.shape == (3,)
    np.testing.assert_allclose(ev, [M.explained_variance(t[:, j], e[:, j]) for j in range(3)], rtol=0)
    assert ev[0] > ev[1] > ev[2]
    with pytest.raises(ValueError, match=r"explained_variance needs two arrays of the same shape"):
        M.explained_variance(t, e[:, :2])


# ----------------------------------------------------------------------------- spearman


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(5)
    for _ in range(20):
        x = rng.integers(0, 5, 30).astype(float)       # many ties
        y = rng.integers(0, 3, 30).astype(float)
        assert M.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)
    x = np.array([1.0, 2.0, 2.0, 3.0, 10.0])
    assert M.spearman(x, -x ** 3) == pytest.approx(-1.0)


def test_spearman_drops_nonfinite_pairs_and_needs_three():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=40), rng.normal(size=40)
    x[[2, 5]], y[11] = np.nan, np.inf
    ok = np.isfinite(x) & np.isfinite(y)
    assert M.spearman(x, y) == pytest.approx(stats.spearmanr(x[ok], y[ok]).statistic, rel=1e-12)
    assert np.isnan(M.spearman([1.0, 2.0, np.nan], [1.0, 2.0, 3.0]))            # two finite pairs
    three = ([1.0, 2.0, 3.0, np.nan], [2.0, 1.0, 7.0, 4.0])                      # three: a number, as scipy's
    assert M.spearman(*three) == pytest.approx(stats.spearmanr([1.0, 2.0, 3.0], [2.0, 1.0, 7.0]).statistic, rel=1e-12)


def test_spearman_of_a_constant_series_is_nan(no_warnings):
    assert np.isnan(M.spearman(np.ones(10), np.arange(10.0)))


# ----------------------------------------------------------------------------- linear fit


def test_linear_fit_matches_linregress():
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 10, 60)
    y = 1.7 * x - 4.0 + rng.normal(size=60)
    x[4], y[9] = np.nan, np.nan
    ok = np.isfinite(x) & np.isfinite(y)
    ref = stats.linregress(x[ok], y[ok])
    slope, intercept, r2 = M.linear_fit(x, y)
    assert (slope, intercept, r2) == pytest.approx((ref.slope, ref.intercept, ref.rvalue ** 2), rel=1e-10)
    np.testing.assert_allclose(np.polyfit(x[ok], y[ok], 1), [slope, intercept], rtol=1e-12)


def test_linear_fit_degenerate_inputs(no_warnings):
    assert np.isnan(M.linear_fit([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])).all()         # x constant: no line
    assert np.isnan(M.linear_fit([1.0, np.nan], [1.0, 2.0])).all()                # one finite pair
    slope, intercept, r2 = M.linear_fit([1.0, 2.0, 3.0], [4.0, 4.0, 4.0])         # y constant: fitted exactly
    assert (slope, intercept, r2) == pytest.approx((0.0, 4.0, 1.0), abs=1e-12)
    with pytest.raises(ValueError, match=r"linear_fit needs two arrays of the same shape \(T,\), got shapes \(3,\) and \(2,\)"):
        M.linear_fit([1.0, 2.0, 3.0], [1.0, 2.0])


def test_map_means_in_chunks_are_bitwise_np_nanmean_over_every_frame():
    from napari_retina.metrics import MapMeans

    rng = np.random.default_rng(3)
    for trial in range(60):
        shape = (int(rng.integers(1, 200)), 3, int(rng.integers(1, 7)), int(rng.integers(1, 7)))
        maps = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-4, 3)).astype(np.float32)
        if trial % 2:
            maps[rng.random(shape) < 0.3] = np.nan
            maps[:, 0, 0, 0] = np.nan   # NaN on every frame: NaN, as np.nanmean gives
        acc, start = MapMeans(), 0
        assert acc.means() == {}
        while start < len(maps):
            stop = start + int(rng.integers(1, 50))
            acc.add(maps[start:stop])
            start = stop
        got = acc.means()
        with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning) if trial % 2 else nullcontext():
            ref = {"abs": np.nanmean(np.abs(maps.astype(np.float64)), axis=0),
                   "signed": np.nanmean(maps.astype(np.float64), axis=0)}
        for key in ref:
            assert np.array_equal(got[key], ref[key], equal_nan=True), (trial, key)
