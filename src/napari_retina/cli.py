"""The ``napari-retina`` command line.

Subcommands are contributed by small ``_cli_*`` modules, each with a
``register(subparsers)`` function that adds its parsers and sets
``func(args) -> int`` as the handler. Errors from bad input are printed as one
line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence

#: modules that contribute subcommands, in help order
COMMAND_MODULES = ("_cli_core", "_cli_training", "_cli_experiments")


@contextlib.contextmanager
def tqdm_progress(desc: str, unit: str = "frame", disable: bool = False) -> Iterator:
    """A ``progress(done, total)`` callback drawing a tqdm bar, opened on its first call.

    Opening the bar lazily keeps input errors (raised before any work) free of
    an empty bar on the terminal.
    """
    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit=unit, desc=desc, disable=disable)
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def check_out_file(path, suffixes: Sequence[str]) -> Path:
    """``path`` as a file the command can write, checked before any work.

    Its suffix must be one of ``suffixes`` (lower case, with the dot), its
    folder must exist and be writable, and it must not be a folder itself.
    """
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ValueError(f"--out must end in {', '.join(suffixes)}, got {out.suffix or 'no suffix'!r} ({str(out)!r})")
    if out.is_dir():
        raise ValueError(f"--out must be a file, but {str(out)!r} is a folder")
    _check_writable_folder(out.parent, out)
    return out


def check_out_dir(path) -> Path:
    """``path`` as a folder the command can write into (created later), checked before any work."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder, but {str(out)!r} is a file")
    existing = out
    while not existing.exists():  # the nearest folder that exists, where the new ones will be made
        existing = existing.parent
    _check_writable_folder(existing, out)
    return out


def _check_writable_folder(folder: Path, out: Path) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {str(out)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {str(out)!r}: folder {str(folder)!r} is not writable")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Show a warning as one line on stderr (no source line, no traceback)."""
    print(f"napari-retina: {category.__name__}: {message}", file=sys.stderr if file is None else file)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-retina",
        description="Make a deep-learning model of the retina explain itself.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"napari_retina.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"napari_retina.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status."""
    from ._progress import Cancelled

    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        print(f"napari-retina {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        print(f"napari-retina {args.command}: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
