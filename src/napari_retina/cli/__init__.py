"""The ``napari-retina`` command line.

One module per command group contributes subcommands: :mod:`.core` (demo,
predict), :mod:`.training` (synth, train, evaluate) and :mod:`.experiments`
(experiment), :mod:`.batch` (batch). Each has a ``register(subparsers)`` function that adds its
parsers and sets ``func(args) -> int`` as the handler. The command modules
import only what lies below them (:mod:`._progress`, :mod:`._paths` and the
core), never this package. Errors from bad input are printed as one line on
stderr with exit status 2, never as a traceback; an output that cannot be
written once the work is done (a full disk) is one line naming it, exit status 1.

Example
-------
>>> from napari_retina.cli import main
>>> main(["experiment", "osr", "--out", "osr-run"])   # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from typing import Optional, Sequence

from . import batch, core, experiments, training

#: modules that contribute subcommands, in help order
COMMAND_MODULES = (core, training, experiments, batch)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Show a warning as one line on stderr (no source line, no traceback)."""
    print(f"napari-retina: {category.__name__}: {message}", file=sys.stderr if file is None else file)


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-retina`` parser with every subcommand; ``args.func(args)`` runs the chosen one."""
    parser = argparse.ArgumentParser(
        prog="napari-retina",
        description="Make a deep-learning model of the retina explain itself.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def option_names(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """``{dest: "--option"}`` for the options of subcommand ``command`` of ``parser`` whose Python name holds an
    underscore (``batch_size``: ``--batch-size``), the names the core's messages use."""
    subparsers = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    sub = subparsers[0].choices[command] if subparsers else parser
    return {action.dest: max(action.option_strings, key=len) for action in sub._actions
            if "_" in action.dest and any(o.startswith("--") for o in action.option_strings)}


def as_options(text: str, options: dict[str, str]) -> str:
    """``text`` (a core message) with each Python name of ``options`` (:func:`option_names`) written as its
    command-line option: "batch_size must be >= 1" → "--batch-size must be >= 1"."""
    for dest in sorted(options, key=len, reverse=True):
        text = re.sub(rf"(?<![\w-]){re.escape(dest)}(?![\w-])", options[dest], text)
    return text


def _joined_negative_crops(argv: list) -> list:
    """``--crop -5,3`` as ``--crop=-5,3``: argparse reads a value that starts with "-" and is not a plain
    number as an option, and said only "expected one argument", not why the corner does not fit."""
    out = []
    for arg in argv:
        if out and out[-1] == "--crop" and re.fullmatch(r"-\d[\d,\s-]*", str(arg)):
            out[-1] = f"--crop={arg}"
        else:
            out.append(arg)
    return out


def _stdout_broken() -> bool:
    """Whether standard output cannot be written (a full disk, a closed pipe): asked, after an OSError, by
    writing it a newline (a failed write drops what it held, so a flush alone succeeds)."""
    try:
        sys.stdout.write("\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        return True
    return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status (0 done, 1 an output could not be written, 2 bad input or not enough
    memory for it, 130 cancelled)."""
    from .._atomic import WriteError
    from .._progress import Cancelled
    from .._validate import one_sentence

    parser = build_parser()
    args = parser.parse_args(_joined_negative_crops(sys.argv[1:] if argv is None else list(argv)))
    options = option_names(parser, args.command)

    def error(text: str, status: int) -> int:
        print(f"napari-retina {args.command}: error: {as_options(text, options)}", file=sys.stderr)
        return status

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return int(args.func(args) or 0)
    except WriteError as exc:  # an output that could not be written after the work (a full disk): a failure
        return error(one_sentence(exc), 1)
    except (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
            ImportError) as exc:   # bad input, a path that cannot be read
        return error(one_sentence(exc), 2)
    except MemoryError as exc:  # a size beyond this machine (a huge --frames or --param): one line, as bad input
        return error(f"not enough memory: {one_sentence(exc)}", 2)
    except RuntimeError as exc:   # torch's allocation failures are RuntimeErrors (a huge --batch-size): the same
        from ..analysis import is_out_of_memory, memory_sentence   # torch raised it: it is imported

        if not is_out_of_memory(exc):
            raise
        smaller = "; a smaller --batch-size needs less" if getattr(args, "batch_size", None) is not None else ""
        return error(f"not enough memory: {memory_sentence(exc)}{smaller}", 2)
    except OSError as exc:  # the system failed us otherwise (an I/O error): a failure, in one line
        if _stdout_broken():   # the summary line could not be printed: say where, not a bare "[Errno 28]"
            return error(f"standard output cannot be written ({exc.strerror or one_sentence(exc)}); the files the "
                         "command writes were written before its summary", 1)
        return error(one_sentence(exc), 1)
    except (KeyboardInterrupt, Cancelled):
        print(f"napari-retina {args.command}: cancelled", file=sys.stderr)
        return 130


def command() -> int:
    """The ``napari-retina`` console script: :func:`main` on ``sys.argv`` in a process of its own.

    The process is this command's, so it keeps freed memory for reuse
    (:func:`napari_retina._malloc.hold_freed_memory`: ~1.2× faster attribution
    and ~1.4× faster prediction on a CPU, BENCHMARKS.md); :func:`main`, called from a script,
    leaves the caller's process as it is.
    """
    import signal

    from .._malloc import hold_freed_memory

    hold_freed_memory()
    status = main()
    if status == 130:   # cancelled: a second Ctrl-C while the process exits (dask's atexit closing its cluster)
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # printed a KeyboardInterrupt traceback (an audit)
    return status
