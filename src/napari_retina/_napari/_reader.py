"""napari reader: stimulus stacks (.npy, .tif/.tiff, .h5/.hdf5) as image layers.

The layer carries the physical scale of the stimulus (10 ms per frame, 55 µm
per pixel), its units and axis labels, so every result layer built later lines
up with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

from .. import io as nr_io
from ._layers import stimulus_layer_kwargs

Paths = Union[str, list]


def napari_get_reader(path: Paths) -> Optional[Callable]:
    """Return :func:`read_stimulus_layers` when ``path`` is a stimulus file we read, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(str(p).lower().endswith(nr_io.STIMULUS_SUFFIXES) for p in paths):
        return None
    return read_stimulus_layers


def read_stimulus_layers(path: Paths) -> list[tuple]:
    """Read one or several stimulus files into napari layer-data tuples.

    Each file becomes an image layer ``(T, H, W)`` with scale
    ``(FRAME_MS, PIXEL_UM, PIXEL_UM)``, units ``("ms", "um", "um")`` and axis
    labels ``("t", "y", "x")``, named after the file.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    out = []
    for p in paths:
        p = Path(p)
        stim = nr_io.read_stimulus(p)
        kwargs = stimulus_layer_kwargs(stim, name=p.stem, metadata={"source": str(p)})
        out.append((stim, kwargs, "image"))
    return out
