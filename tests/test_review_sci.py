"""Review of the science core: readouts, reduction and scores against hand-made references.

Each test pins a defect that was found and fixed (see the commit that added it):
the reference is computed here by hand (float64 numpy, closed forms), never taken
from what the code printed.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_retina.experiments import base, latency


def _latency_protocol(n_flashes: int, max_frames: int, size: int = 20, history: int = 10):
    p = base.resolve_params(latency, {"intensities": [-1.0] * n_flashes, "max_frames": max_frames}, size, history)
    return latency.build(size=size, history=history, respond=None, **p)


@pytest.mark.parametrize("n_flashes,max_frames", [(12, 12), (25, 10), (40, 30)])
def test_frames_of_interest_stay_within_max_frames_with_many_conditions(n_flashes, max_frames):
    """The resting frames before each condition used to be taken one per condition whatever
    max_frames said: with as many conditions as max_frames the thinning divided by zero, with
    more it attributed more frames than max_frames (41 for max_frames=10)."""
    proto = _latency_protocol(n_flashes, max_frames)
    fr = proto.frames
    assert 0 < len(fr) <= max_frames
    assert np.all(np.diff(fr) > 0) and fr.min() >= 9
    # resting frames (whole window grey) are still there, at most half of the budget
    stim = np.abs(proto.stimulus).reshape(len(proto.stimulus), -1).max(1)
    rest = [t for t in fr if stim[t - 9:t + 1].max() == 0]
    assert 1 <= len(rest) <= max_frames // 2
