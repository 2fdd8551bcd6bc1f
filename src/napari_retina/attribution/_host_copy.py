"""Chunks of results computed on a device, written into host arrays without stalling the device.

On a CPU, :meth:`HostWriter.put` copies at once. On a CUDA device a plain
``dest.copy_(values)`` makes the host wait for the device, then copies into
pageable memory at a fraction of the bus's rate while the device idles (on an
H200 the maps of 10,000 frames, 415 MB, took ~0.13 s so, and the whole call ran
1.34× slower than with this module: BENCHMARKS.md, "GPU rows", 2026-12-04).
Here each put is queued on a side stream, after the values
are ready, as a copy into pinned memory; a worker thread then moves it into the
destination. The device goes on with the next chunk meanwhile. At most
``depth`` chunks are in flight, so the pinned memory stays bounded (a few
chunks), and :meth:`HostWriter.close` waits for every write and re-raises the
first error.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from .._validate import consecutive

#: whether results on a device of this type are copied as above (True) or with a plain blocking copy;
#: ``benchmarks/gpu_rows.py`` times both
ASYNC_COPY: dict[str, bool] = {"cpu": False, "cuda": True}


def _write(dest: np.ndarray, rows: np.ndarray, values: torch.Tensor) -> None:
    """``dest[rows] = values`` (cast to dest's dtype); consecutive ``rows`` are copied straight into ``dest``'s
    memory (from a device too), without a staging copy on the host."""
    if consecutive(rows):
        torch.from_numpy(dest[rows[0] : rows[-1] + 1]).copy_(values)
    else:
        dest[rows] = values.cpu().numpy()


class HostWriter:
    """``put(dest, rows, values)``: ``dest[rows] = values`` for a host array ``dest`` and a tensor ``values``
    on ``device``, asynchronously on CUDA (module docstring); use as a context manager, or call :meth:`close`."""

    def __init__(self, device: torch.device, depth: int = 3) -> None:
        self.device = device
        self.async_copy = device.type == "cuda" and ASYNC_COPY.get("cuda", False)
        if self.async_copy:
            self.stream = torch.cuda.Stream(device)
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-retina-copy")
            self.slots = threading.Semaphore(depth)
            self.pending: list[Future] = []

    def put(self, dest: np.ndarray, rows: np.ndarray, values: torch.Tensor) -> None:
        """Write ``values`` (len(rows), …) into ``dest[rows]``: at once, or queued (then final after :meth:`close`)."""
        if not self.async_copy:
            _write(dest, rows, values)
            return
        self.slots.acquire()  # at most `depth` chunks in pinned memory
        try:
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                self.stream.wait_event(ready)
                pinned = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
                pinned.copy_(values, non_blocking=True)
                values.record_stream(self.stream)  # its memory is not reused before this stream's copy is done
                done = torch.cuda.Event()
                done.record(self.stream)
        except BaseException:
            self.slots.release()
            raise
        self.pending.append(self.pool.submit(self._finish, dest, rows, pinned, done))

    def _finish(self, dest: np.ndarray, rows: np.ndarray, pinned: torch.Tensor, done: torch.cuda.Event) -> None:
        try:
            done.synchronize()  # waits without the GIL
            _write(dest, rows, pinned)
        finally:
            self.slots.release()

    def close(self) -> None:
        """Wait for every queued write; re-raise the first one's error."""
        if not self.async_copy:
            return
        try:
            for future in self.pending:
                future.result()
        finally:
            self.pending = []
            self.pool.shutdown(wait=True)

    def __enter__(self) -> "HostWriter":
        return self

    def __exit__(self, typ, exc, tb) -> None:
        try:
            self.close()
        except Exception:
            if typ is None:  # an error on the way out (a Cancelled, say) is the one to report
                raise
