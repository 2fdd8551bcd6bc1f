"""The one invariance check (napari_retina._invariance): streamed over chunks of frames,
identical to the plain whole-array definition, and used by every caller."""

from __future__ import annotations

import numpy as np
import pytest

from napari_retina import _invariance as I
from napari_retina import attribution, first_layer
from napari_retina import analysis


def reference(stimulus) -> str:
    """The definition on the whole array at once, in float64 (the code before streaming)."""
    s = np.asarray(stimulus)
    tol = 1e-6 * max(1.0, float(np.abs(s.astype(np.float64)).max()))
    uy = bool(np.abs(s - s.mean(axis=1, keepdims=True, dtype=np.float64)).max() <= tol)
    ux = bool(np.abs(s - s.mean(axis=2, keepdims=True, dtype=np.float64)).max() <= tol)
    return "space" if (uy and ux) else "y" if uy else "x" if ux else "none"


def edge(e: float, big: float = 0.0) -> np.ndarray:
    """(3, 4, 3) zeros but s[0, 0, 0] = e (deviation 3e/4 along y, 2e/3 along x); frame 2 = ``big``."""
    s = np.zeros((3, 4, 3), np.float32)
    s[0, 0, 0] = e
    s[2] = big
    return s


rng = np.random.default_rng(0)
CASES = {
    "noise": (rng.standard_normal((9, 6, 5)).astype(np.float32), "none"),
    "full field": (np.broadcast_to(rng.standard_normal((9, 1, 1)), (9, 6, 5)).astype(np.float32), "space"),
    "bars along x": (np.broadcast_to(rng.standard_normal((9, 1, 5)), (9, 6, 5)), "y"),  # float64 view
    "bars along y": (np.broadcast_to(rng.standard_normal((9, 6, 1)), (9, 6, 5)).astype(np.float32), "x"),
    "uint8 bars": (np.broadcast_to(rng.integers(0, 256, (9, 1, 5), dtype=np.uint8), (9, 6, 5)), "y"),
    "grey": (np.zeros((9, 6, 5), np.float32), "space"),
    "noise in one late frame": (np.concatenate([np.ones((8, 6, 5)), rng.random((1, 6, 5))]), "none"),
    # tolerance 1e-6 (max|s| < 1): 3e/4 and 2e/3 against it
    "edge: both within": (edge(1.3e-6), "space"),
    "edge: y just over": (edge(1.4e-6), "x"),
    "edge: both over": (edge(1.6e-6), "none"),
    # max|s| = 1000 in frame 2 scales the tolerance for frame 0 too
    "edge: scaled by another frame": (edge(1.6e-6, big=1000.0), "space"),
    "edge: scaled, still over": (edge(2e-3, big=1000.0), "none"),
    # deviation 2δ/3 ≈ 0.99e-6 in float64; float32 arithmetic rounds it over 1e-6 (calling it "x")
    "edge: float64 arithmetic": (np.repeat(np.float32([0.51415986, 0.51415986, 0.51416135])[None, :, None], 2, 2), "space"),
    "NaN": (np.where(np.arange(30).reshape(1, 6, 5) == 7, np.nan, np.ones((9, 6, 5))), "none"),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("chunk_frames", [None, 1, 2, 4, 100])
def test_matches_the_whole_array_reference(name, chunk_frames):
    stim, expected = CASES[name]
    assert reference(stim) == expected
    assert I.stimulus_invariance(stim, chunk_frames=chunk_frames) == expected


def test_default_chunks_split_a_long_stack_and_agree():
    """More frames than one default chunk: the frame that sets the tolerance is in another chunk."""
    T = 3 * I.CHUNK_ELEMENTS // 100 + 5
    s = np.zeros((T, 10, 10), np.float32)
    s[1, 0, 0] = 1.6e-6  # deviates by 1.44e-6 along y and x: over 1e-6
    s[-1] = 1000.0  # ... but within 1e-3 once the last frame counts
    assert I.stimulus_invariance(s) == reference(s) == "space"
    s[-1] = 0.5
    assert I.stimulus_invariance(s) == reference(s) == "none"


class Stack:
    """A (T, H, W) array-like that records the frames each read asks for and refuses whole-array copies."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __getitem__(self, key):
        self.reads.append(len(range(*key.indices(self.shape[0]))))
        return self.data[key]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole stack was converted to one array")


def test_streams_chunks_and_stops_once_nothing_can_be_uniform():
    noise = Stack(rng.standard_normal((50, 6, 5)).astype(np.float32))
    assert I.stimulus_invariance(noise, chunk_frames=8) == "none"
    assert max(noise.reads) == 8
    assert len(noise.reads) == 7 + 1  # max|s| over all 7 chunks, then the first chunk decides
    bars = Stack(np.ascontiguousarray(np.broadcast_to(rng.standard_normal((50, 1, 5)), (50, 6, 5))))
    assert analysis.resolve_invariance(bars, "auto") == "y"
    assert bars.reads == [50, 50]  # 50 frames fit one default chunk: one read per pass


@pytest.mark.parametrize("requested", ["none", "y", "space", "auto"])
def test_resolve_allows_what_holds(requested):
    full = CASES["full field"][0]
    assert I.resolve_invariance(full, requested) == ("space" if requested == "auto" else requested)


@pytest.mark.parametrize(
    "name, requested, says",
    [("noise", "space", "varies along y and x"), ("bars along x", "space", "varies along x;"),
     ("bars along x", "x", "'x' needs a stimulus uniform along x"),
     ("bars along y", "y", "'y' needs a stimulus uniform along y")],
)
def test_resolve_refuses_what_does_not_hold(name, requested, says):
    with pytest.raises(ValueError, match=says):
        I.resolve_invariance(CASES[name][0], requested, chunk_frames=2)


@pytest.mark.parametrize(
    "stim, kwargs, exc, says",
    [
        (np.zeros((4, 5)), {}, ValueError, r"\(T, H, W\) stack, got 2 dimension\(s\)"),
        (np.zeros((0, 5, 5)), {}, ValueError, r"must not be empty, got shape \(0, 5, 5\)"),
        (np.full((2, 3, 3), "a"), {}, TypeError, "real numbers, got dtype <U1"),
        (np.zeros((2, 3, 3)), {"chunk_frames": 0}, ValueError, "chunk_frames must be >= 1, got 0"),
    ],
)
def test_bad_input_says_what_was_expected(stim, kwargs, exc, says):
    with pytest.raises(exc, match=says):
        I.stimulus_invariance(stim, **kwargs)


def test_bad_invariance_name():
    with pytest.raises(ValueError, match="invariance must be one of 'auto', 'none', 'x', 'y', 'space', got 'time'"):
        I.resolve_invariance(np.zeros((2, 3, 3)), "time")


def test_one_implementation_behind_every_public_name():
    assert attribution.resolve_invariance is I.resolve_invariance
    assert first_layer.stimulus_invariance is I.stimulus_invariance
    assert attribution.INVARIANCES is I.INVARIANCES
    assert analysis.resolve_invariance is I.resolve_invariance
    for name, (stim, expected) in CASES.items():
        assert analysis.resolve_invariance(stim, "auto") == expected, name
