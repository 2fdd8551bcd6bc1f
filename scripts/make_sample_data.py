"""Write the small files in sample_data/ that a user can open in napari (File ▸ Open).

    python scripts/make_sample_data.py [--out sample_data]

- ``naturalistic_movie.tif``: 200 frames (2 s) of a naturalistic movie (1/f images
  with fixational jitter and one saccade), 50×50, as uint8 raw intensities
  (mean 128), the way a camera or a stimulus program would save it. The reader
  keeps the integers; the model maps them to contrast with its stored normalisation.
- ``synthetic_recording.h5``: the lab's HDF5 layout (``train/stimulus``,
  ``train/response/firing_rate_10ms``, ``test/...``, ``test/repeats/cellNN``),
  the synthetic retina (``nr.synthetic.Retina(seed=0)``, version 2) recorded on 400 frames
  of 4 px white noise (one of the stimuli of the shipped model's training mix; binary
  noise keeps the file small) and 5 repeats of 200 test frames;
  opened in napari it shows the test stimulus, and ``nr.train`` / ``nr.evaluate``
  read the whole file. Datasets are gzip-compressed to keep the file small.

Everything is seeded: rerunning gives the same files.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import h5py
import numpy as np
import tifffile

import napari_retina as nr


def naturalistic_tiff(path: Path) -> None:
    """200 frames of ``nr.stimuli.naturalistic`` as uint8 intensities 128 ± 40·contrast."""
    movie = nr.stimuli.naturalistic(frames=200, size=50, seed=3, fixation=100)
    raw = np.clip(np.round(128 + 40 * movie), 0, 255).astype(np.uint8)
    tifffile.imwrite(path, raw, photometric="minisblack", compression="zlib",
                     metadata={"axes": "TYX"})


def _repack(src: Path, dst: Path) -> None:
    """Copy every dataset and attribute of ``src`` into ``dst``, gzip-compressed."""
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        b.attrs.update(dict(a.attrs))

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                d = b.create_dataset(name, data=obj[()], compression="gzip", compression_opts=9, shuffle=True)
                d.attrs.update(dict(obj.attrs))
            else:
                b.require_group(name).attrs.update(dict(obj.attrs))

        a.visititems(copy)


def synthetic_recording(path: Path) -> None:
    """The synthetic retina on 4 px white noise of the training mix: 400 training frames, 5 × 200 test frames."""
    stim = nr.stimuli.white_noise(600, size=50, seed=1, checker=4, contrast=2.0, grey=0.5)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.h5"
        nr.synthetic.record_dataset(raw, stim[:400], stim[400:], repeats=5, seed=1,
                                    attrs={"stimulus": "white_noise(600, checker=4, contrast=2, grey=0.5, seed=1)"})
        _repack(raw, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "sample_data"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    naturalistic_tiff(out / "naturalistic_movie.tif")
    synthetic_recording(out / "synthetic_recording.h5")
    for p in sorted(out.iterdir()):
        print(f"{p.name}: {p.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
