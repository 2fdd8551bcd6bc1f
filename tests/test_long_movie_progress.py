"""Long movies (the chunked, traces-only path of run_analysis): progress is fine-grained and cancel prompt."""

from __future__ import annotations

import numpy as np
import pytest

import napari_retina as nr
from napari_retina._progress import Cancelled, CancelToken
from napari_retina.analysis import attribute_traces


def test_attribute_traces_reports_within_chunks_and_cancels_at_the_next_report(tiny):
    stim = nr.stimuli.white_noise(frames=400, size=20, seed=0)
    total = len(stim) - tiny.config.history + 1
    seen: list = []
    attr = attribute_traces(tiny, stim, steps=8, batch_size=24, chunk_frames=128,
                            progress=lambda d, n: seen.append((d, n)))
    done = [d for d, _ in seen]
    assert done[-1] == total and all(n == total for _, n in seen)
    assert max(np.diff(done)) <= total / 100  # every 1% at least (was one report per chunk of frames)
    assert done == sorted(done)
    # the same batches as one run: the chunks change nothing (another batch size may change the conv algorithm, and
    # float32 results by up to 1.4e-4 of the largest channel value, on an Intel Xeon)
    ref = nr.attribute(tiny, stim, steps=8, invariance="none", batch_size=24)
    np.testing.assert_allclose(attr.channels, ref.channels, rtol=1e-5, atol=1e-6, equal_nan=True)

    token, calls = CancelToken(), []

    def cancel_early(d, n):
        calls.append(d)
        if d > 0:
            token.cancel()

    with pytest.raises(Cancelled):
        attribute_traces(tiny, stim, steps=8, batch_size=24, chunk_frames=128, progress=token.wrap(cancel_early))
    assert [d for d in calls if d > 0] == [calls[-1]]  # nothing ran past the report that cancelled
