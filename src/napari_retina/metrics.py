"""Scores of one series against another: Pearson and Spearman correlation, explained variance, a line fit.

The one home of these numbers for the whole package (training's held-out scores,
the reduction's explained variance, the experiments' readouts, the recovery of the
ground truth's pathways). NumPy only; everything is computed in float64.

Conventions shared by every function here:

- 1-D inputs (T,) give a float; :func:`pearson` and :func:`explained_variance` also
  take 2-D inputs (T, n) and score each column, giving float64 (n,).
- A score that is undefined (a constant series, too few values) is NaN, not an error
  and not a warning; :func:`explained_variance` is the one exception, by design: a
  constant target is fully explained (1.0) by a constant-offset estimate, else not at all (0.0).
- :func:`pearson` does not skip non-finite values (NaN or inf in a column gives NaN
  for that column); :func:`explained_variance`, :func:`spearman` and
  :func:`linear_fit` use only the pairs where both values are finite.

Example
-------
>>> import numpy as np
>>> from napari_retina.metrics import pearson, spearman, linear_fit, explained_variance
>>> pearson([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]) > 0.98
True
>>> spearman([1, 2, 3, 4], [1, 3, 2, 4])
0.8
>>> [round(v, 6) for v in linear_fit([1, 2, 3, 4], [3, 5, 7, 9])]
[2.0, 1.0, 1.0]
>>> explained_variance([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
1.0
"""

from __future__ import annotations

from typing import Iterable, Optional, Union

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "pearson", "explained_variance", "spearman", "linear_fit", "finite_mean", "ratio_of_means", "map_limit",
    "map_limit_of_blocks", "MapMeans", "VARIANCE_FLOOR", "MAP_LIMIT_PERCENTILE"
]

#: variances at or below this count as zero in :func:`explained_variance`
VARIANCE_FLOOR = 1e-30


def _floats(values: ArrayLike, what: str) -> np.ndarray:
    """``values`` as a float64 array (None counts as NaN), or one TypeError unless they are real numbers: text,
    complex numbers (their imaginary part would be dropped) and ragged sequences are refused."""
    try:
        kind = np.asarray(values).dtype.kind
        if kind not in "biufO":
            raise TypeError
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{what} needs arrays of real numbers, got {_described(values)}") from None


def _described(values: ArrayLike) -> str:
    """What ``values`` are, in a few words: a NumPy array's dtype and shape, else its type (a ragged list)."""
    try:
        arr = np.asarray(values)
        return f"{arr.dtype} values of shape {arr.shape}"
    except ValueError:
        return f"a ragged {type(values).__name__}"


def _pair(a: ArrayLike, b: ArrayLike, what: str, ndims: tuple[int, ...] = (1,)) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as float64 arrays of the same shape with an allowed ndim, or a clear TypeError or ValueError."""
    x = _floats(a, what)
    y = _floats(b, what)
    if x.ndim not in ndims or x.shape != y.shape:
        allowed = " or ".join(("(T,)", "(T, n)")[d - 1] for d in ndims)
        raise ValueError(f"{what} needs two arrays of the same shape {allowed}, got shapes {x.shape} and {y.shape}")
    return x, y


def pearson(a: ArrayLike, b: ArrayLike) -> Union[float, np.ndarray]:
    """Pearson correlation of two series, or of each pair of columns.

    Parameters
    ----------
    a, b : arrays of the same shape, (T,) or (T, n) (any units).

    Returns
    -------
    float for (T,) inputs; float64 (n,) for (T, n) inputs, column j the r of ``a[:, j]``
    and ``b[:, j]``. NaN where either series is constant (all its values equal), empty,
    or holds a NaN or inf (no values are skipped).

    Example
    -------
    >>> pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    -1.0
    >>> pearson(np.ones(3), [1.0, 2.0, 3.0])
    nan
    """
    x, y = _pair(a, b, "pearson", (1, 2))
    if x.shape[0] == 0:
        return float("nan") if x.ndim == 1 else np.full(x.shape[1], np.nan)
    # exactly constant: the mean's rounding would leave tiny deviations and an arbitrary r
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        varies = (np.ptp(x, axis=0) > 0) & (np.ptp(y, axis=0) > 0)
        # r is scale-free: columns scaled to a largest |value| of 1 cannot overflow in the sums of products
        x = x / np.where(varies, np.abs(x).max(0), 1.0)
        y = y / np.where(varies, np.abs(y).max(0), 1.0)
        x = x - x.mean(0)
        y = y - y.mean(0)
        den = np.sqrt((x * x).sum(0) * (y * y).sum(0))
        r = np.where(varies & (den > 0), (x * y).sum(0) / den, np.nan)
    return float(r) if x.ndim == 1 else r


def _constant(v: np.ndarray, var: float) -> bool:
    """Whether a finite 1-D series counts as constant: exactly, or to within :data:`VARIANCE_FLOOR`."""
    return var <= VARIANCE_FLOOR or np.ptp(v) == 0


def _explained_variance_1d(t: np.ndarray, e: np.ndarray) -> float:
    ok = np.isfinite(t) & np.isfinite(e)
    if not ok.any():
        return float("nan")
    t, r = t[ok], t[ok] - e[ok]
    vt, vr = t.var(), r.var()
    if _constant(t, vt):
        return 1.0 if _constant(r, vr) else 0.0
    return float(1.0 - vr / vt)


def explained_variance(target: ArrayLike, estimate: ArrayLike) -> Union[float, np.ndarray]:
    """``1 − var(target − estimate) / var(target)`` over the frames where both are finite.

    Scale-sensitive, unlike :func:`pearson`: an estimate off by a factor or an offset
    that varies loses variance explained; a constant offset does not.

    Parameters
    ----------
    target : (T,) or (T, n), the series to explain (e.g. a model's rate, spikes per bin).
    estimate : the same shape and units (e.g. the reduced circuit's rate).

    Returns
    -------
    float for (T,) inputs; float64 (n,) for (T, n), one value per column. NaN when no
    frame has both values finite. A constant target (all values equal, or variance <=
    :data:`VARIANCE_FLOOR`) is fully explained (1.0) when the residual is constant too,
    else not at all (0.0).

    Example
    -------
    >>> explained_variance([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])
    1.0
    >>> explained_variance([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    0.0
    """
    t, e = _pair(target, estimate, "explained_variance", (1, 2))
    if t.ndim == 1:
        return _explained_variance_1d(t, e)
    return np.array([_explained_variance_1d(t[:, j], e[:, j]) for j in range(t.shape[1])], dtype=np.float64)


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a 1-D float array, ties sharing their average rank (float64 (n,))."""
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=np.float64)
    for val in np.unique(v):  # average ranks of ties
        tie = v == val
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation of two (T,) series over their finite pairs.

    Ties get average ranks (as ``scipy.stats.spearmanr``). NaN with fewer than 3
    finite pairs or when either series is constant over them.

    Example
    -------
    >>> spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 25.0, 100.0])
    1.0
    """
    a, b = _pair(x, y, "spearman")
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    return pearson(_ranks(a[ok]), _ranks(b[ok]))


def linear_fit(x: ArrayLike, y: ArrayLike) -> tuple[float, float, float]:
    """Least-squares line ``y = slope·x + intercept`` over the finite pairs of two (T,) series.

    Returns ``(slope, intercept, r²)`` as floats (slope in y-units per x-unit); all NaN
    with fewer than 2 finite pairs or when x is constant over them. r² is 1.0 when y is
    constant (the line fits it exactly).

    Example
    -------
    >>> [round(v, 6) for v in linear_fit([0.0, 1.0, 2.0], [1.0, 3.0, 5.0])]
    [2.0, 1.0, 1.0]
    """
    a, b = _pair(x, y, "linear_fit")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 2 or np.ptp(a) == 0:
        return float("nan"), float("nan"), float("nan")
    slope, intercept = np.polyfit(a, b, 1)
    resid = b - (slope * a + intercept)
    sst = ((b - b.mean()) ** 2).sum()
    r2 = 1.0 - (resid ** 2).sum() / sst if sst > 0 else 1.0
    return float(slope), float(intercept), float(r2)


def finite_mean(values: ArrayLike) -> float:
    """Mean of the finite values of ``values`` (any array-like of numbers), as a float.

    NaN, without a warning, when none is finite (``np.nanmean`` warns "Mean of
    empty slice" there): e.g. the mean r over cells whose every r is undefined.

    Example
    -------
    >>> finite_mean([0.5, float("nan"), 0.7])
    0.6
    >>> finite_mean([float("nan"), float("inf")])
    nan
    """
    v = _floats(values, "finite_mean").reshape(-1)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def ratio_of_means(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Per column of two (T, n) arrays, the mean of ``a`` over the mean of ``b`` (finite values of each), float64 (n,).

    NaN, without a warning, where ``b``'s mean is 0 or either column has no finite
    value (a cell that never fired: no calibration to speak of, not ``inf``).

    Example
    -------
    >>> ratio_of_means([[1.0, 2.0], [3.0, 2.0]], [[2.0, 0.0], [2.0, 0.0]]).tolist()
    [1.0, nan]
    """
    x, y = _pair(a, b, "ratio_of_means", (2,))
    out = np.full(x.shape[1], np.nan)
    for j in range(x.shape[1]):
        num, den = finite_mean(x[:, j]), finite_mean(y[:, j])
        if np.isfinite(num) and np.isfinite(den) and den != 0:
            out[j] = num / den
    return out


#: the percentile of |attribution| that sets the maps' shared contrast limit (:func:`map_limit`)
MAP_LIMIT_PERCENTILE = 99.99


def map_limit(maps: Optional[ArrayLike], percentile: float = MAP_LIMIT_PERCENTILE) -> float:
    """Shared symmetric contrast limit over all channels: a high percentile of |attribution|.

    ``maps`` is any array-like (T, C, h, w) (or None: 1.0). The
    :data:`MAP_LIMIT_PERCENTILE` (99.99th) percentile rather than the maximum,
    so that a few extreme pixels do not wash out every map; non-finite values
    are ignored; 1.0 when nothing is left. Attribution maps are sparse (a few
    channels, a receptive field's pixels, the frames with a response: 2–4 %
    of the shipped model's values on its samples are above a hundredth of the
    largest), so a lower percentile lies in the near-zero background: the
    99.5th was 7–20× below the largest value on the samples, and the maps at
    the response's peak were one saturated disc; the 99.99th is 1.3–2.7×.
    Below ~10,000 values (a small crop, a few frames) it is about the largest
    value: one extreme pixel then sets the scale.
    """
    _check_percentile(percentile)
    if maps is None:
        return 1.0
    arr = np.abs(np.asarray(maps))
    arr = arr[np.isfinite(arr)]
    if not arr.size:
        return 1.0
    lim = float(np.percentile(arr, percentile))
    lim = lim if lim > 0 else float(arr.max())
    return lim if lim > 0 else 1.0


def _check_percentile(percentile: float) -> None:
    """One sentence unless ``percentile`` is a number in [0, 100]."""
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.integer, np.floating)) \
            or not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be a number in [0, 100], got {percentile!r}")


def _top_values(values: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest of ``values`` (1-d), in no particular order."""
    return values if values.size <= k else np.partition(values, values.size - k)[values.size - k:]


def map_limit_of_blocks(blocks: Iterable[ArrayLike], percentile: float = MAP_LIMIT_PERCENTILE) -> float:
    """:func:`map_limit` of the blocks' maps concatenated along time, read block by block.

    ``blocks`` is a sequence of array-likes (n_i, C, h, w), each read once. The
    percentile (numpy's linear interpolation) needs only the largest
    ``(1 − percentile/100)`` of the values, so only those are kept: the value is
    the whole movie's, while memory follows one block plus 0.01 % of the maps.
    """
    _check_percentile(percentile)
    blocks = list(blocks)
    total = sum(int(np.prod(np.shape(b))) for b in blocks)
    k = int(np.ceil(total * (1.0 - percentile / 100.0))) + 3   # ≥ the ranks the interpolation reads
    top, n = np.empty(0, np.float32), 0
    for block in blocks:
        arr = np.abs(np.asarray(block)).ravel()
        arr = arr[np.isfinite(arr)]
        n += arr.size
        top = _top_values(np.concatenate([top, _top_values(arr, k)]), k)
    if n == 0:
        return 1.0
    top = np.sort(top)
    index = percentile / 100.0 * (n - 1)
    lo = int(np.floor(index))
    a = float(top[lo - (n - top.size)])
    b = float(top[min(lo + 1, n - 1) - (n - top.size)])
    lim = a + (b - a) * (index - lo)
    lim = lim if lim > 0 else float(top[-1])
    return lim if lim > 0 else 1.0


class MapMeans:
    """Means over frames of attribution maps, |A| and A, taken a chunk of frames at a time.

    ``add(maps)`` takes float (n, C, …) maps of n more frames; ``means()``
    gives ``{"abs": mean_t |A|, "signed": mean_t A}``, float64 (C, …), NaN
    values left out as ``np.nanmean`` leaves them (NaN where a value is NaN on
    every frame). The sums run frame after frame, in the order numpy's sum over
    the first axis adds them, so the means are bitwise those of ``np.nanmean``
    over all the frames at once, without holding them: the memory is a chunk's
    and three float64 (C, …) sums (a reduction of a long movie's maps held
    three float64 copies of every kept channel's maps).
    """

    def __init__(self) -> None:
        self._sums: Optional[list[np.ndarray]] = None   # [Σ |A|, Σ A, count of non-NaN]

    def add(self, maps: ArrayLike) -> None:
        """Add the maps of n more frames, float (n, C, …) with the same trailing shape at every call
        (n = 0: nothing added); NaN values are left out of the means."""
        chunk = np.asarray(maps, dtype=np.float64)
        if not len(chunk):
            return
        seen = ~np.isnan(chunk)
        signed = np.where(seen, chunk, 0.0)
        parts = [np.abs(signed), signed, seen.astype(np.intp)]
        if self._sums is not None:   # the running sums first, then the frames: one sequential sum over axis 0
            parts = [np.concatenate([total[None], part]) for total, part in zip(self._sums, parts)]
        self._sums = [np.add.reduce(part, axis=0) for part in parts]

    def means(self) -> dict:
        """``{"abs", "signed"}`` over the frames added so far (an empty dict before any)."""
        if self._sums is None:
            return {}
        total_abs, total, count = self._sums
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"abs": total_abs / count, "signed": total / count}
