"""Checks of the command line's ``--out`` paths, made before any work (one-sentence errors)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .._atomic import same_file
from .._types import PathLike
from .._validate import write_target


def check_out_file(path: PathLike, suffixes: Sequence[str], inputs: Sequence[PathLike] = (),
                   what: str = "--out") -> Path:
    """``path`` as a file the command can write, checked before any work.

    Its suffix must be one of ``suffixes`` (lower case, with the dot), its
    folder must exist and be writable, it must not be a folder, device or pipe
    itself, and it must not be one of the command's ``inputs`` (the results
    would replace them). A symbolic link is written through (its target's
    folder must be writable).
    ``what``: the argument's name in the messages (``out`` for a positional one).
    """
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ValueError(f"{what} must end in {', '.join(suffixes)}, got {out.suffix or 'no suffix'!r} ({str(out)!r})")
    if out.is_dir():
        raise ValueError(f"{what} must be a file, but {str(out)!r} is a folder")
    _check_writable_folder(write_target(out).parent, out)   # not /dev/null or a pipe; a link: its target's folder
    for given in inputs:
        if same_file(out, given):
            raise ValueError(f"{what} {str(out)!r} is the input file {str(given)!r}; the results would replace it, "
                             f"so choose another {what}")
    return out


FILE_SUFFIXES = frozenset({".h5", ".hdf5", ".npz", ".npy", ".json", ".png", ".csv", ".tif", ".tiff", ".md", ".txt",
                           ".pt"})
"""Suffixes of the files the commands read or write: a new ``--out`` folder named with one is a mistake."""


def check_out_dir(path: PathLike) -> Path:
    """``path`` as a folder the command can write into (created later), checked before any work."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder, but {str(out)!r} is a file")
    if not out.exists() and out.suffix.lower() in FILE_SUFFIXES:   # a folder named x.h5 was made (a helper's audit)
        raise ValueError(f"--out is the folder the outputs are written into, but {str(out)!r} reads as a file name "
                         f"({out.suffix}); give a folder, e.g. {str(out.with_suffix(''))!r}")
    existing = out
    while not existing.exists():  # the nearest folder that exists, where the new ones will be made
        existing = existing.parent
    _check_writable_folder(existing, out)
    return out


def _check_writable_folder(folder: Path, out: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"cannot write {str(out)!r}: {str(folder)!r} is a file, not a folder")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {str(out)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {str(out)!r}: folder {str(folder)!r} is not writable")
