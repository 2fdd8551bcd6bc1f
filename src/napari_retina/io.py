"""Reading stimuli and datasets, writing results.

Stimulus stacks (T, H, W) come from ``.npy``, ``.tif``/``.tiff`` or HDF5
files. Datasets use the lab's HDF5 layout (METHOD.md §1)::

    train/stimulus                    (T, H, W)   contrast units or raw
    train/response/firing_rate_10ms   (cells, T)  spikes per 10 ms bin (counts or mean counts)
    test/stimulus, test/response/firing_rate_10ms   the same, held out
    test/repeats/cellNN               (repeats, T)  optional single trials

Rates must be spikes per 10 ms bin, not Hz (what is trained and reported is
per bin): rates whose cells average more than 5 per bin (500 Hz) warn.
``cellNN`` holds the trials of row NN of the rates, numbered from 0 (cell0 or
cell00 for the first row; read by number, so cell10 comes after cell9); with
repeats, every row has its own dataset.

Results are written to HDF5 (``.h5``/``.hdf5``) or ``.npz``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ._atomic import atomic_write, atomic_write_in_memory
from ._json import parse_json
from ._types import ArrayLike, PathLike
from ._units import FRAME_MS, RATE_UNIT
from ._validate import (as_rates, as_real_array, as_stack, check_cell_subset, check_reduces, file_path,
                        hz_like_rates, hz_warning, rate_table, size_text)

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from .attribution import Attribution
    from .reduction import Reduction

__all__ = [
    "read_stimulus", "refuse_empty_file", "npy_header", "stimulus_key", "h5_read_limit", "Split", "Dataset",
    "repeats_array", "read_split", "read_dataset", "read_cell_names", "cell_names_list", "hdf5_path", "write_dataset",
    "write_results",
    "trace_columns", "write_traces_csv", "STIMULUS_SUFFIXES", "HDF5_SUFFIXES", "STIMULUS_KEYS", "RATE_KEY",
    "REPEATS_NAME", "MAX_SOFT_LINKS", "H5_READ_MEMORY_SHARE", "H5_READ_FALLBACK_BYTES", "RESULT_KINDS"
]


STIMULUS_SUFFIXES = (".npy", ".tif", ".tiff", ".h5", ".hdf5")
HDF5_SUFFIXES = (".h5", ".hdf5")
STIMULUS_KEYS = ("stimulus", "test/stimulus", "train/stimulus")
RATE_KEY = "response/firing_rate_10ms"
#: the name of a cell's repeats dataset in ``<split>/repeats``: "cell" and the number of the cell's row in the
#: rates, from 0 (zero padding optional: cell7, cell07 and cell007 all name row 7)
REPEATS_NAME = re.compile(r"cell([0-9]+)")


def _existing(path: PathLike) -> Path:
    """``path`` as a Path to an existing file: :func:`~napari_retina._validate.file_path`'s TypeError or
    FolderError (a ValueError and an IsADirectoryError), or a FileNotFoundError, in one sentence."""
    path = file_path(path)
    if not path.is_file():
        if path.exists():   # a FIFO, a device: nothing to read a stack from, and no "missing" file either
            raise ValueError(f"{str(path)!r} is not a regular file (a pipe or a device?)")
        raise FileNotFoundError(f"no file at {str(path)!r}")
    return path


def refuse_empty_file(path: Path) -> None:
    """One sentence for a stimulus file of 0 bytes (a header reader's own error says less: "EOF: reading magic
    string")."""
    if path.stat().st_size == 0:
        raise ValueError(f"{str(path)!r} is empty (0 bytes), expected a {path.suffix.lower()} stimulus stack")


def _h5_keys(h5) -> list[str]:
    """The names under which the open file's datasets are reached inside it: every hard or soft link to a
    dataset in every group (a soft-linked group's members under the group's own name; external links left out)."""
    import h5py

    keys: list[str] = []
    try:
        groups = [""]
        h5.visit(lambda name: groups.append(name) if isinstance(h5[name], h5py.Group) else None)
        for name in groups:  # each group once (visit follows hard links only), then each of its links
            group = h5[name] if name else h5
            for member in group:
                full = f"{name}/{member}" if name else member
                link = group.get(member, getlink=True)
                if isinstance(link, h5py.HardLink):
                    found = isinstance(group[member], h5py.Dataset)
                elif isinstance(link, h5py.SoftLink):  # followed by hand: it may lead out of the file
                    try:
                        found = _h5_dataset_path(h5, full, Path(h5.filename)) is not None
                    except ValueError:  # out of the file, or a loop
                        found = False
                else:  # an external link (never opened) or a user-defined one
                    found = False
                if found:
                    keys.append(full)
    except Exception as exc:  # h5py raises RuntimeError, KeyError, OSError on damaged structure
        raise ValueError(f"{h5.filename!r} is a corrupt HDF5 file: its datasets cannot be listed ({exc})") from exc
    return keys


#: soft links followed at most in looking up one name, before a chain (or loop) of them is refused
MAX_SOFT_LINKS = 32


def _h5_dataset_path(h5, key: str, path: Path) -> Optional[str]:
    """The hard path of the dataset ``key`` names in the open file, or None when it names none.

    A leading ``/`` (an absolute name, as h5py writes them) is accepted; soft
    links are followed inside the file; an external link (to another file) is
    refused in one sentence and never opened.
    """
    import h5py

    found = _h5_lookup(h5, key, path)
    try:
        return found if found and isinstance(h5[found], h5py.Dataset) else None
    except Exception as exc:  # RuntimeError, KeyError, OSError from a damaged object header
        raise ValueError(f"{str(path)!r} is a corrupt HDF5 file: {key!r} cannot be looked up ({exc})") from exc


def _h5_lookup(h5, key: str, path: Path) -> Optional[str]:
    """The hard path ("" for the root) of the object ``key`` names in the open file, or None when it names none:
    :func:`_h5_resolve`, with a damaged file's raw h5py error turned into one ValueError naming the file and key."""
    try:
        return _h5_resolve(h5, key, path)
    except ValueError:
        raise
    except Exception as exc:  # RuntimeError, KeyError, OSError from a damaged link table or object header
        raise ValueError(f"{str(path)!r} is a corrupt HDF5 file: {key!r} cannot be looked up ({exc})") from exc


def _h5_group(h5, key: str, path: Path):
    """The group ``key`` names in the open file (soft links followed inside it, an external link refused), or
    None when it names none or names a dataset; a damaged object header is one ValueError naming the file."""
    import h5py

    found = _h5_lookup(h5, key, path)
    if found is None:
        return None
    try:
        group = h5[found] if found else h5
    except Exception as exc:  # RuntimeError, KeyError, OSError from a damaged object header
        raise ValueError(f"{str(path)!r} is a corrupt HDF5 file: {key!r} cannot be opened ({exc})") from exc
    return group if isinstance(group, h5py.Group) else None


def _h5_optional_dataset(h5, key: str, path: Path) -> Optional[str]:
    """The hard path of the optional dataset ``key`` in the open file, or None when the file has nothing under
    that name; one ValueError naming the file when the name is there but is no dataset: a group, a soft link to
    nothing, or a link into another file (:func:`_h5_resolve`)."""
    import h5py

    found = _h5_lookup(h5, key, path)
    try:
        if found is None:
            if h5.get(key, getlink=True) is None:
                return None
            raise ValueError(f"{key!r} in {str(path)!r} is a link to nothing in the file; expected a dataset")
        if not isinstance(h5[found], h5py.Dataset):
            raise ValueError(f"{key!r} in {str(path)!r} is a group; expected a dataset")
    except ValueError:
        raise
    except Exception as exc:  # RuntimeError, KeyError, OSError from a damaged link table or object header
        raise ValueError(f"{str(path)!r} is a corrupt HDF5 file: {key!r} cannot be looked up ({exc})") from exc
    return found


def _path_parts(key: str) -> list[str]:
    return [p for p in key.split("/") if p not in ("", ".")]


def _h5_resolve(h5, key: str, path: Path) -> Optional[str]:
    """The hard path ("" for the root) of the object ``key`` names, following soft links (at most
    :data:`MAX_SOFT_LINKS` of them, so a loop ends) and refusing external ones; None when it names none.

    A loop, not recursion: a soft link's target replaces it in the parts still to walk, so a refused
    chain is one short traceback.
    """
    import h5py

    here: list[str] = []
    todo, followed = _path_parts(key), 0
    while todo:
        part = todo.pop(0)
        group = h5["/".join(here)] if here else h5
        if not isinstance(group, h5py.Group):
            return None
        link = group.get(part, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise ValueError(f"{key!r} in {str(path)!r} leads into another file, {link.filename!r} (through the "
                             f"external link {'/'.join(here + [part])!r}), which is not followed; copy the data "
                             "into the file")
        if isinstance(link, h5py.SoftLink):
            followed += 1
            if followed > MAX_SOFT_LINKS:
                raise ValueError(f"{key!r} in {str(path)!r} is a chain of more than {MAX_SOFT_LINKS} soft links "
                                 "(a loop?), which is not followed")
            here = [] if link.path.startswith("/") else here
            todo = _path_parts(link.path) + todo
        elif isinstance(link, h5py.HardLink):
            here.append(part)
        else:  # absent, or a user-defined link h5py cannot follow
            return None
    return "/".join(here)


def _h5_stimulus_key(h5, path: Path, key: Optional[str] = None) -> str:
    """The hard path of the stimulus dataset in the open file: ``key``, or the first of :data:`STIMULUS_KEYS`
    the file has; a missing one is one ValueError listing the file's datasets, a key that is no string a
    TypeError."""
    if key is not None and not isinstance(key, str):
        raise TypeError(f"key must be a string naming an HDF5 dataset, got {type(key).__name__} {key!r}")
    if key is not None:
        found = _h5_dataset_path(h5, key, path)
        if found is None:
            raise ValueError(f"{str(path)!r} has no dataset {key!r}; it has {_h5_keys(h5)}")
        return found
    for name in STIMULUS_KEYS:
        found = _h5_dataset_path(h5, name, path)
        if found is not None:
            return found
    raise ValueError(f"{str(path)!r} has none of the datasets {list(STIMULUS_KEYS)}; it has {_h5_keys(h5)}")


def _plain(tifffile_message: str) -> str:
    """tifffile's message without the objects it names (``<tifffile.TiffPages @8> invalid page offset``)."""
    return re.sub(r"<tifffile\.[^>]*>\s*", "", tifffile_message)


def _open_h5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        what = "cannot be read now" if _h5_locked(exc) else "is not a readable HDF5 file"   # in use, not damaged
        raise ValueError(f"{str(path)!r} {what}: {_h5_problem(exc)}") from exc


def _h5_locked(exc: BaseException) -> bool:
    """Whether HDF5 refused to open a file because another program holds its lock (the file is in use, not
    damaged)."""
    return isinstance(exc, OSError) and "unable to lock file" in str(exc)


def _h5_problem(exc: OSError) -> str:
    """Why HDF5 would not open a file, in plain words for the common reasons, else HDF5's own."""
    text = str(exc)
    if _h5_locked(exc):
        return ("it is in use: another program holds HDF5's lock on it (open for writing?); close it there and try "
                "again (on a file system without locks, set HDF5_USE_FILE_LOCKING=FALSE)")
    truncated = re.search(r"truncated file: eof = (\d+),.*stored_eof = (\d+)", text)
    if truncated:
        return (f"it is truncated ({int(truncated[1]):,} of its {int(truncated[2]):,} bytes are there; an "
                "interrupted copy or download?)")
    if "file signature not found" in text:
        return "it is not an HDF5 file (no HDF5 signature at its start)"
    return text


def read_stimulus(path: PathLike, key: Optional[str] = None) -> np.ndarray:
    """Read a (T, H, W) stimulus stack, keeping the file's dtype.

    Nothing is converted: an integer file (a uint8 TIFF, say) comes back as its
    raw intensities, which :func:`napari_retina.predict` and :func:`napari_retina.attribute`
    (and the plugin) map to contrast themselves (with the checkpoint's stored
    normalisation, or the stack's own statistics for a model trained on contrast
    units); a float file comes back as it is, read as contrast units (0 = mean
    luminance; pass ``normalize="zscore"`` to those functions for raw intensities
    stored as floats).

    ``key`` picks the HDF5 dataset; by default the first of ``stimulus``,
    ``test/stimulus``, ``train/stimulus`` that exists. ``.npy`` and TIFF files
    hold one stack and take no ``key``. Checked with the same rules as every
    stimulus (3-D, greyscale, numeric, finite, non-empty); an RGB(A) TIFF is
    refused whatever its shape, and an empty, truncated or corrupt file is a
    ValueError naming it.

    Example
    -------
    >>> stim = nr.io.read_stimulus("movie.tif")          # doctest: +SKIP
    """
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix not in STIMULUS_SUFFIXES:
        raise ValueError(
            f"cannot read a stimulus from {str(path)!r}: "
            f"{f'its suffix is {path.suffix!r}' if path.suffix else 'it has no suffix'}, "
            f"expected one of {', '.join(STIMULUS_SUFFIXES)}"
        )
    if key is not None and suffix not in HDF5_SUFFIXES:
        raise ValueError(
            f"key={key!r} picks a dataset in an HDF5 file, but {path.name!r} is a {suffix} file "
            "that holds a single stack; drop the key"
        )
    refuse_empty_file(path)
    colour = False
    if suffix == ".npy":
        arr = _read_npy(path)
    elif suffix in (".tif", ".tiff"):
        arr, colour, _ = _read_tiff(path)
    else:
        arr = _read_h5_stimulus(path, key)
    name = f"the stimulus in {path.name}" if key is None else f"the stimulus {key!r} in {path.name}"
    if not colour and suffix not in (".tif", ".tiff"):
        _refuse_rgb_image(arr, name)
    return as_stack(arr, name=name, colour=colour)


def _refuse_rgb_image(arr: np.ndarray, name: str) -> None:
    """Refuse an array of a file without colour metadata (.npy, HDF5) shaped like one RGB(A) image: (H, W, 3|4)
    with H > 3|4, which would otherwise be read as H frames of W×3 pixels. (A TIFF's metadata says which it is.)"""
    shape = getattr(arr, "shape", ())
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[1] > shape[-1]:
        raise ValueError(
            f"{name} must be a greyscale (T, H, W) stack, got an array of shape {tuple(shape)}, which looks like a "
            f"single RGB(A) image rather than {shape[0]} frames {shape[-1]} pixels wide; convert it to luminance "
            "(e.g. image.mean(axis=-1)) and add a time axis (image[None]), or pass a genuine stack of such "
            "frames as an array"
        )


def npy_header(path: Path) -> tuple[tuple, np.dtype, int]:
    """The shape, dtype and the bytes of data after the header of a .npy file, refusing a damaged
    header and pickled objects (one sentence naming the file)."""
    fmt = np.lib.format
    with open(path, "rb") as fh:
        try:
            version = fmt.read_magic(fh)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read_header(fh)
        except Exception as exc:  # ValueError, EOFError, or a SyntaxError from a damaged header
            raise ValueError(f"{str(path)!r} is not a .npy file or its header is corrupt ({exc})") from exc
        data_bytes = os.fstat(fh.fileno()).st_size - fh.tell()
    if dtype.hasobject:
        raise ValueError(f"{str(path)!r} is not a plain numeric .npy array (pickled objects are refused)")
    return shape, dtype, data_bytes


def _read_npy(path: Path) -> np.ndarray:
    """A .npy array, refusing pickled objects and files whose data are shorter than the header says."""
    shape, dtype, data_bytes = npy_header(path)
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if data_bytes < need:
        raise ValueError(
            f"{str(path)!r} is truncated: its header describes a {shape} {dtype} array of {need} bytes "
            f"but only {data_bytes} bytes follow"
        )
    _check_read_size(need, repr(str(path)), shape, dtype)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise ValueError(f"{str(path)!r} is not a readable .npy array ({exc})") from exc


def _read_tiff(path: Path, frames: Optional[tuple[int, int]] = None,
               header: bool = False) -> tuple[Optional[np.ndarray], bool, tuple]:
    """The first series of a TIFF, whether its pixels hold colour samples (RGB, RGBA...), and its shape.

    ``frames``: the [start, stop) range of its first axis only, read page by
    page where each page is a frame (else the whole series is read and cut);
    ``header``: no pixel is read (the array is None). tifffile logs, rather
    than raises, some damage (a page offset past the end of a truncated file)
    and then returns fewer frames: any error it logs while reading refuses the
    file.
    """
    import logging

    import tifffile

    errors: list = []
    catch = logging.Handler(logging.ERROR)
    catch.emit = errors.append
    logger = logging.getLogger("tifffile")
    logger.addHandler(catch)
    too_big, arr = "", None
    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) == 0:    # tifffile's own error would be "IndexError: 0"
                raise ValueError("no image at the offset of its first page")
            page = tif.pages.first
            colour = page.samplesperpixel > 1 or page.photometric in (
                tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
            series = tif.series[0]
            shape = tuple(int(n) for n in series.shape)
            by_page = (frames is not None and not colour and len(shape) == 3 and len(series.pages) == shape[0]
                       and len(tif.series) == 1)
            if by_page:   # only the window's pages: a block of a long movie no longer reads all of it
                window = range(shape[0])[slice(*frames)]
                arr = (np.zeros((0, *shape[1:]), series.dtype) if len(window) == 0
                       else tif.asarray(key=window).reshape(len(window), *shape[1:]))
            elif not header:   # (raised below: in here it would be read as damage)
                too_big = _read_size_problem(int(np.prod(shape, dtype=object)) * series.dtype.itemsize,
                                             repr(str(path)), shape, series.dtype)
                arr = None if too_big else tif.asarray()
                arr = arr if arr is None or frames is None else arr[slice(*frames)]
    except Exception as exc:
        why = errors[0].getMessage() if errors else str(exc) or type(exc).__name__   # what tifffile logged first
        raise ValueError(f"{str(path)!r} is not a readable TIFF (truncated or corrupt: {_plain(why)})") from None
    finally:
        logger.removeHandler(catch)
    if errors:
        raise ValueError(f"{str(path)!r} is not a readable TIFF (truncated or corrupt: "
                         f"{_plain(errors[0].getMessage())})")
    if too_big:   # a valid file too large to read: said as such, not as damage
        raise ValueError(too_big)
    return arr, colour, shape


def _read_h5_stimulus(path: Path, key: Optional[str]) -> np.ndarray:
    with _open_h5(path) as h5:
        return _read_h5_dataset(h5, _h5_stimulus_key(h5, path, key), path)


def stimulus_key(path: PathLike, key: Optional[str] = None) -> Optional[str]:
    """The HDF5 dataset :func:`read_stimulus` reads for ``path`` and ``key`` (None for .npy and TIFF files,
    which hold one stack), as its path in the file (soft links followed), for recording next to results.

    Example
    -------
    >>> nr.io.stimulus_key("recording.h5")                # doctest: +SKIP
    'test/stimulus'
    """
    path = _existing(path)
    if path.suffix.lower() not in HDF5_SUFFIXES:
        return None
    with _open_h5(path) as h5:
        return _h5_stimulus_key(h5, path, key)


#: share of this machine's physical memory that one read of an HDF5 dataset may take
H5_READ_MEMORY_SHARE = 0.5
#: the most bytes one read of an HDF5 dataset may take where the system does not say how much memory it has
H5_READ_FALLBACK_BYTES = 8 * 2**30


def h5_read_limit() -> tuple[int, str]:
    """(bytes, why): the most memory one read of an HDF5 dataset from a file may take, and the reason, for messages.

    :data:`H5_READ_MEMORY_SHARE` of this machine's physical memory, or
    :data:`H5_READ_FALLBACK_BYTES` where the system does not say.
    A 100,000-frame movie of 50×50 float32 pixels takes 1 GB. The limit stops a
    small file that declares a huge dataset (HDF5 stores no data for unwritten
    chunks, and gzip packs a constant array 1000-fold) before it is allocated.
    """
    from ._validate import physical_memory_bytes

    have = physical_memory_bytes()
    if have is None:
        return H5_READ_FALLBACK_BYTES, "the limit where the system does not say how much memory it has"
    return int(have * H5_READ_MEMORY_SHARE), f"{H5_READ_MEMORY_SHARE:.0%} of this machine's {size_text(have)} memory"


def _read_size_problem(need: int, what: str, shape: tuple, dtype: np.dtype) -> str:
    """The sentence naming ``what`` (a dataset, a file, frames of one) when reading ``need`` bytes (of an array of
    ``shape`` and ``dtype``) would take more memory than :func:`h5_read_limit` allows, "" when it fits; one limit
    for HDF5, .npy and TIFF."""
    limit, why = h5_read_limit()
    if need <= limit:
        return ""
    return (f"{what} would take {size_text(need)} in memory (shape {tuple(shape)}, dtype {dtype}), more than the "
            f"{size_text(limit)} one read may take ({why})")


def _check_read_size(need: int, what: str, shape: tuple, dtype: np.dtype) -> None:
    """:func:`_read_size_problem`'s sentence as a ValueError."""
    problem = _read_size_problem(need, what, shape, dtype)
    if problem:
        raise ValueError(problem)


def _h5_source_text(dataset) -> str:
    """The files a virtual dataset maps, for messages: "'a.h5'", "'a.h5' and 2 more"."""
    try:
        names = sorted({str(m.file_name) for m in dataset.virtual_sources()})
    except Exception:  # a damaged mapping: the dataset is refused all the same
        return "other data"
    if not names:
        return "other data"
    return repr(names[0]) + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def _check_h5_read(dataset, key: str, path: Path, frames: Optional[tuple[int, int]] = None) -> None:
    """Refuse, before anything is read, a read of ``dataset`` (``key`` in the file at ``path``; ``frames``: a
    [start, stop) range of its first axis, None for all of it) that the file cannot be trusted with, in one
    ValueError naming the file and the dataset:

    - data from outside the file: external raw storage (``dataset.external``,
      any file on this machine, e.g. /etc/passwd), a virtual dataset
      (``dataset.is_virtual``), or a dataset of another file reached through links;
    - values whose memory is not the declared shape's (variable-length strings,
      object references) or no array at all (an empty dataspace);
    - more bytes than :func:`h5_read_limit` allows, from the declared shape and dtype;
    - declared values that were never written (no storage at all: a small file
      declaring a huge dataset, which HDF5 would fill in with zeros).
    """
    where = f"the dataset {key!r} of {str(path)!r}"
    try:
        external, virtual = dataset.external, dataset.is_virtual
        shape, dtype = dataset.shape, dataset.dtype
        stored = dataset.id.get_storage_size()
        home = dataset.file.filename
    except Exception as exc:  # a type or layout h5py cannot map, or a damaged object header
        raise ValueError(f"cannot read {where}: its type or layout cannot be read (corrupt or unsupported: "
                         f"{exc})") from exc
    if external:
        name = external[0][0]
        name = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        raise ValueError(f"{where} keeps its data outside the file, in {name!r} (HDF5 external storage), which is "
                         "not read; copy the data into the file")
    if virtual:
        raise ValueError(f"{where} is a virtual dataset that maps {_h5_source_text(dataset)}, which is not read; "
                         "copy the data into the file")
    if not _same_file(home, path):
        raise ValueError(f"{key!r} in {str(path)!r} leads into another file, {home!r}, which is not followed; "
                         "copy the data into the file")
    if dtype.hasobject:
        raise ValueError(f"{where} holds variable-length or reference values (dtype {dtype}), not an array of numbers")
    if shape is None:
        raise ValueError(f"{where} holds no array (an empty HDF5 dataspace)")
    rows = len(range(*slice(*frames).indices(shape[0]))) if frames is not None and shape else None
    count = int(np.prod([rows, *shape[1:]] if rows is not None else shape, dtype=object))
    what = where if rows is None else f"frames {frames[0]}:{frames[1]} of {where}"
    _check_read_size(count * dtype.itemsize, what, shape, dtype)
    if stored == 0 and count > 0:
        raise ValueError(f"{where} declares shape {tuple(shape)} and dtype {dtype} but holds no data: its values "
                         "were never written to the file")


def _same_file(name: str, path: Path) -> bool:
    """Whether the file h5py opened as ``name`` is the one at ``path``."""
    try:
        return os.path.samefile(name, path)
    except OSError:
        return False


def _read_h5_dataset(h5, key: str, path: Path, frames: Optional[tuple[int, int]] = None) -> np.ndarray:
    """The package's one way to read an HDF5 dataset from a file it does not trust: ``key`` of the open file
    (soft links followed inside it, an external link refused), all of it, or only the [start, stop) range
    ``frames`` of its first axis (frames of a (T, H, W) stimulus), in the file's dtype and shape.

    Checked before anything is read (:func:`_check_h5_read`: outside data, dtype,
    declared bytes); a read that fails is one ValueError naming the file and the
    dataset: a compression filter that is not installed is named as such, anything else is damage.
    """
    found = _h5_dataset_path(h5, key, path)
    if found is None:
        raise ValueError(f"{str(path)!r} has no dataset {key!r}; it has {_h5_keys(h5)}")
    try:
        dataset = h5[found]
    except Exception as exc:  # RuntimeError, KeyError, OSError from a damaged object header
        raise ValueError(f"{str(path)!r} is a corrupt HDF5 file: {key!r} cannot be opened ({exc})") from exc
    if frames is not None and dataset.ndim == 0:
        frames = None   # a single value, read whole: the caller says it is no stack of frames
    _check_h5_read(dataset, key, path, frames)
    what = f"the dataset {key!r} of {str(path)!r}"
    if frames is not None:
        what = f"frames {frames[0]}:{frames[1]} of {what}"
    try:
        return dataset[()] if frames is None else dataset[frames[0]:frames[1]]
    except Exception as exc:  # OSError from a damaged chunk or filter, and whatever else h5py raises on damage
        missing = _missing_filter(h5, found)
        if missing:
            raise ValueError(f"cannot read {what}: it is compressed with {missing}, "
                             "which is not installed here; install that HDF5 filter plugin (HDF5_PLUGIN_PATH) or "
                             "rewrite the file with gzip compression") from exc
        raise ValueError(f"cannot read {what} (truncated or corrupt: {exc})") from exc


def _missing_filter(h5, key: str) -> str:
    """The first filter of dataset ``key``'s pipeline that this HDF5 library cannot apply, as "the filter
    'name' (HDF5 filter id)", or "" when all are there (or the pipeline cannot be read)."""
    from h5py import h5z

    try:
        plist = h5[key].id.get_create_plist()
        for i in range(plist.get_nfilters()):
            code, _, _, name = plist.get_filter(i)
            if not h5z.filter_avail(code):
                name = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
                return f"the filter {name!r} (HDF5 filter {code})" if name else f"HDF5 filter {code}"
    except Exception:  # a damaged header: the caller says "corrupt"
        pass
    return ""


@dataclass
class Split:
    """One split of a dataset.

    stimulus: (T, H, W) float32; rates: (T, n_cells) float32 (spikes per 10 ms
    bin); repeats: (n_cells, repeats, T) float32 or None.
    """

    stimulus: np.ndarray
    rates: np.ndarray
    repeats: Optional[np.ndarray] = None


@dataclass
class Dataset:
    """A training dataset in memory: ``train`` and ``test`` splits plus file attributes."""

    train: Split
    test: Split
    cell_names: list = field(default_factory=list)
    attrs: dict = field(default_factory=dict)


def _read_split(h5, split: str, path: Path, cells: Optional[list[int]]) -> Split:
    found = {}
    for need in (f"{split}/stimulus", f"{split}/{RATE_KEY}"):
        found[need] = _h5_dataset_path(h5, need, path)
        if found[need] is None:
            raise ValueError(f"{str(path)!r} is missing the dataset {need!r} of the lab layout; it has {_h5_keys(h5)}")
    stim = as_stack(_read_h5_dataset(h5, found[f"{split}/stimulus"], path), name=f"{split}/stimulus in {path.name}")
    rates = _checked_rates(_read_h5_dataset(h5, found[f"{split}/{RATE_KEY}"], path), f"{split}/{RATE_KEY}",
                           "(cells, T)", path, stim.shape[0])
    n_cells = rates.shape[0]
    if cells is not None:
        cells = check_cell_subset(cells, n_cells, "the file has")
        rates = rates[cells]
    repeats = _read_repeats(h5, split, path, n_cells, stim.shape[0])
    if repeats is not None and cells is not None:
        repeats = repeats[cells]
    return Split(stim, rates.T.astype(np.float32), repeats)


def _checked_rates(values: np.ndarray, key: str, shape: str, path: Optional[Path], n_frames: int,
                   what: str = "rates") -> np.ndarray:
    """The rates of dataset ``key`` as float64, or one ValueError naming it and the file (``path``; None for
    arrays in memory, named ``key`` alone): numbers (integers or floats, not bools), 2-D (``shape``, time last),
    one time bin per stimulus frame, finite and >= 0. Checks the rates and each cell's repeats alike (``what``:
    "rates" or "repeats")."""
    name = key if path is None else f"{key} in {path.name}"
    if values.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold numbers (spikes per 10 ms bin), got dtype {values.dtype}")
    return rate_table(values, n_frames, name, shape, time_axis=1, what=what)


def _read_repeats(h5, split: str, path: Path, n_cells: int, n_frames: int) -> Optional[np.ndarray]:
    """The split's repeats, (n_cells, repeats, T) float32, row i from ``<split>/repeats/cell<i>``; None without any."""
    prefix = f"{split}/repeats/"
    whole = _h5_dataset_path(h5, prefix[:-1], path)
    if whole is not None:  # (cells, repeats, T), (repeats, cells, T) or record()'s (repeats, T, cells): not guessed
        raise ValueError(f"{prefix[:-1]} in {path.name} is one dataset of shape {h5[whole].shape}, but the lab layout "
                         f"stores the repeats as a group of one (repeats, T) dataset per row of the rates, "
                         f"{prefix}cell00, {prefix}cell01, …; store them so")
    names = [k[len(prefix):] for k in _h5_keys(h5) if k.startswith(prefix) and "/" not in k[len(prefix):]]
    if not names:
        return None
    names = _repeats_by_cell(names, prefix[:-1], path, n_cells)
    rows = (_read_h5_dataset(h5, prefix + n, path) for n in names)   # read one by one as they are checked
    return _stacked_repeats(rows, [f"{prefix}{n} in {path.name}" for n in names], names,
                            f"{prefix[:-1]} in {path.name}", n_frames)


def _stacked_repeats(rows, names: list[str], labels: list[str], group: str, n_frames: int) -> np.ndarray:
    """(n_cells, repeats, T) float32 from one (repeats, T) array per cell, a file's or an array's: each row,
    ``names[i]`` in messages, checked as rates are (:func:`_checked_rates`), and the same number of repeats
    (at least 1) for every cell (``group``, its cells ``labels``), or one ValueError."""
    reps = [_checked_rates(r, n, "(repeats, T)", None, n_frames, "repeats") for r, n in zip(rows, names)]
    counts = [len(r) for r in reps]
    odd = next((i for i, c in enumerate(counts) if c != counts[0]), None)
    if odd is not None or counts[0] == 0:
        got = f"{counts[0]} in {labels[0]}" + (f" but {counts[odd]} in {labels[odd]}" if odd is not None else "")
        raise ValueError(f"{group} must hold the same number of repeats (at least 1) for every cell, got {got}")
    return np.stack([r.astype(np.float32) for r in reps])


def repeats_array(repeats: ArrayLike, n_cells: int, n_frames: int, name: str) -> np.ndarray:
    """Repeats given in memory, (n_cells, repeats, T) (or one (repeats, T) array per cell), as (n_cells, repeats,
    T) float32, checked as a file's are (:func:`_stacked_repeats`), or one sentence: a TypeError unless arrays of
    numbers, a ValueError unless one row per cell of the rates (``n_cells``), ``n_frames`` time bins, the same
    number of repeats (at least 1) for every cell, finite and >= 0."""
    if not isinstance(repeats, (list, tuple, np.ndarray)) or getattr(repeats, "ndim", 1) == 0:
        raise TypeError(f"{name} must be a (cells, repeats, T) array of numbers, got {type(repeats).__name__}")
    if len(repeats) != n_cells:
        shape = f" (shape {repeats.shape})" if isinstance(repeats, np.ndarray) else ""
        raise ValueError(f"{name} must hold the repeats of each of the {n_cells} cells of the rates, (cells, repeats, "
                         f"T), got {len(repeats)} row(s){shape}")
    labels = [f"cell {c}" for c in range(n_cells)]
    rows = [as_real_array(r, f"{name} of {c} must be a (repeats, T) array of numbers",
                          f"{name} of {c} must hold numbers (spikes per 10 ms bin, integers or floats)")
            for r, c in zip(repeats, labels)]
    return _stacked_repeats(rows, [f"{name} of {c}" for c in labels], labels, name, n_frames)


def _cell_list(numbers: list[int], most: int = 6) -> str:
    """"cell 3", "cells 0, 2 and 5", "cells 0, 1, 2, 3, 4, 5 and 94 more"."""
    shown = [str(c) for c in numbers[:most]]
    if len(numbers) > most:
        shown.append(f"{len(numbers) - most} more")
    return f"cell {shown[0]}" if len(shown) == 1 else f"cells {', '.join(shown[:-1])} and {shown[-1]}"


def _repeats_by_cell(names: list[str], group: str, path: Path, n_cells: int) -> list[str]:
    """The datasets of ``group`` ordered by the cell each names (:data:`REPEATS_NAME`: ``cell<i>`` is row i of the
    rates), by number and not as text (cell10 after cell9); one ValueError naming the file and the group for a
    name without a cell number, two names of one cell, or a set of cells other than the rates' 0..n_cells-1."""
    numbered: dict[int, list[str]] = {}
    for name in names:
        match = REPEATS_NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"{group}/{name} in {path.name} is not named after a cell: {group} holds one "
                             f"(repeats, T) dataset per row of the rates, named cell0 to cell{n_cells - 1} "
                             "(zero padding optional)")
        numbered.setdefault(int(match.group(1)), []).append(name)
    for number, same in sorted(numbered.items()):
        if len(same) > 1:
            raise ValueError(f"{group} in {path.name} holds {' and '.join(sorted(same))}, which both name cell "
                             f"{number}; keep one")
    missing = [c for c in range(n_cells) if c not in numbered]
    beyond = sorted(c for c in numbered if c >= n_cells)
    if missing or beyond:
        found = [f"{_cell_list(missing)} {'has' if len(missing) == 1 else 'have'} none"] if missing else []
        if beyond:
            found.append(f"{_cell_list(beyond)} {'is' if len(beyond) == 1 else 'are'} not a row of the rates")
        raise ValueError(f"{group} in {path.name} must hold the repeats of each of the {n_cells} cells of its rates, "
                         f"cell0 to cell{n_cells - 1} (numbered from 0 as the rates' rows), but "
                         f"{' and '.join(found)}")
    return [numbered[c][0] for c in range(n_cells)]


def read_split(path: PathLike, split: str = "test", cells: Optional[list[int]] = None) -> Split:
    """Read one split (``"train"`` or ``"test"``) of a dataset in the lab's HDF5 layout, checked as
    :func:`read_dataset` checks it; the other split need not be in the file (``nr.evaluate`` reads the test split).

    Example
    -------
    >>> test = nr.io.read_split("wn.h5", "test")          # doctest: +SKIP
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = _existing(path)
    with _open_h5(path) as h5:
        out = _read_split(h5, split, path, cells)
    _warn_if_hz(path, {split: out})
    return out


def read_dataset(path: PathLike, cells: Optional[list[int]] = None) -> Dataset:
    """Read a dataset in the lab's HDF5 layout (see the module docstring).

    ``cells`` keeps a subset of cells (a list of indices, or one index; each once), named by the file's
    ``cell_names`` attribute or, without one, ``cellN`` with N the index in the file. Refuses missing keys,
    mismatched lengths, NaN or negative rates, and cells that do not exist.
    """
    path = _existing(path)
    with _open_h5(path) as h5:
        train = _read_split(h5, "train", path, cells)
        test = _read_split(h5, "test", path, cells)
        attrs = {k: _attr_value(v) for k, v in h5.attrs.items() if k != "cell_names"}
        file_cells = int(h5[f"train/{RATE_KEY}"].shape[0])
        names = _names_in(h5, path, "train")
    _check_splits_agree(train, test)
    _warn_if_hz(path, {"train": train, "test": test})
    # one name per file cell (the file's, or cellN by its index in the file), picked as the rates are
    cell_names = names if names is not None else [f"cell{i}" for i in range(file_cells)]
    if cells is not None:
        cell_names = [cell_names[c] for c in check_cell_subset(cells, len(cell_names), "the file has")]
    return Dataset(train, test, cell_names, attrs)


def _check_splits_agree(train: Split, test: Split) -> None:
    """One ValueError unless the (checked) splits have frames of one size and the same cells."""
    if train.stimulus.shape[1:] != test.stimulus.shape[1:]:
        raise ValueError(
            f"train and test stimuli differ in size: {train.stimulus.shape[1:]} vs {test.stimulus.shape[1:]}"
        )
    if train.rates.shape[1] != test.rates.shape[1]:
        raise ValueError(f"train has {train.rates.shape[1]} cells but test has {test.rates.shape[1]}")


def _warn_if_hz(path: Path, splits: dict, stacklevel: int = 3) -> None:
    """One UserWarning naming the file when the rates of any of ``splits`` ({name: Split}) look like Hz
    (:func:`~napari_retina._validate.hz_like_rates`); ``stacklevel`` counts from this function."""
    found = [f"in {name}/{RATE_KEY} {why}" for name, split in splits.items()
             if (why := hz_like_rates(split.rates)) is not None]
    if found:
        warnings.warn(hz_warning(f"the rates in {path.name}", " and ".join(found)), UserWarning, stacklevel=stacklevel)


def _attr_value(value: Any) -> Any:
    """An HDF5 attribute as plain Python: numbers and strings as they are, arrays as (nested) lists, bytes as text."""
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim else value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
    return value


def read_cell_names(path: PathLike, split: str = "test") -> Optional[list]:
    """The names a dataset file gives its cells (its ``cell_names`` attribute), one per row of ``split``'s
    rates, or None when it gives none; a malformed attribute is one ValueError naming the file.

    Example
    -------
    >>> nr.io.read_cell_names("wn.h5")                    # doctest: +SKIP
    ['cell0', 'cell1', 'cell2', 'cell3']
    """
    path = _existing(path)
    with _open_h5(path) as h5:
        return _names_in(h5, path, split)


def _names_in(h5, path: Path, split: str) -> Optional[list]:
    """:func:`read_cell_names` in the open file."""
    if "cell_names" not in h5.attrs:
        return None
    rates = _h5_dataset_path(h5, f"{split}/{RATE_KEY}", path)
    if rates is None:
        raise ValueError(f"{str(path)!r} is missing the dataset {f'{split}/{RATE_KEY}'!r} of the lab layout; "
                         f"it has {_h5_keys(h5)}")
    return _cell_names_attr(path, _attr_value(h5.attrs["cell_names"]), int(h5[rates].shape[0]))


def _cell_names_attr(path: Path, names: Any, n_cells: int) -> Optional[list]:
    """The file's ``cell_names`` attribute (JSON text, as write_dataset stores it, or a list of strings): one name
    per cell of the file, or None when there is none (or an empty list); anything else is one ValueError naming the
    file."""
    if names is None or (isinstance(names, str) and names.strip() == "[]") or names == []:
        return None   # written from a Dataset without names (its default)
    parsed = names
    if isinstance(names, str):
        try:
            parsed = parse_json(names, "cell_names")
        except ValueError:
            parsed = None
    if not (isinstance(parsed, list) and len(parsed) == n_cells and all(isinstance(c, str) for c in parsed)):
        got = repr(names) if len(repr(names)) <= 80 else f"{repr(names)[:77]}..."
        raise ValueError(
            f"{str(path)!r} has a malformed cell_names attribute: expected a JSON list of {n_cells} names (one per "
            f"cell of its rates), got {got}"
        )
    return parsed


def cell_names_list(names: Optional[Sequence[str]], n_cells: int, name: str = "cell_names") -> list[str]:
    """A dataset's cell names as a list: empty (none given), or one string per cell of its rates (``n_cells``),
    as a file's ``cell_names`` attribute must be (:func:`read_dataset`); one ValueError otherwise."""
    if names is None:
        return []
    ok = isinstance(names, (list, tuple, np.ndarray)) and all(isinstance(c, str) for c in names)
    if not ok or len(names) not in (0, n_cells):
        got = f"{len(names)} name(s): {list(names)!r:.80}" if ok else f"{type(names).__name__} {names!r:.80}"
        raise ValueError(f"{name} must be a list of {n_cells} strings, one per cell of the rates (or empty), got "
                         f"{got}")
    return [str(c) for c in names]


def _checked_split(split, name: str) -> Split:
    """A :class:`Split` in memory checked as :func:`read_dataset` checks a file's, in one sentence naming
    ``name`` ("dataset.train"): the stimulus, the rates (:func:`~napari_retina._validate.as_rates`) and any
    repeats (:func:`repeats_array`)."""
    if not isinstance(split, Split):
        raise TypeError(f"{name} must be an nr.io.Split, got {type(split).__name__}")
    stim = as_stack(split.stimulus, f"{name}.stimulus")
    rates = as_rates(split.rates, stim.shape[0], f"{name}.rates")
    reps = split.repeats
    if reps is not None:
        reps = repeats_array(reps, rates.shape[1], stim.shape[0], f"{name}.repeats")
    return Split(stim, rates.astype(np.float32), reps)


def _check_attrs(attrs) -> None:
    """One sentence unless every one of ``attrs`` can be a file attribute (HDF5 stores it: a number, a string,
    a list or array of numbers or strings), under a name of its own (not ``cell_names``, which holds the
    dataset's cell names)."""
    import h5py

    if not isinstance(attrs, Mapping):
        raise TypeError(f"dataset.attrs must be a dict, got {type(attrs).__name__}")
    with h5py.File("attrs", "w", driver="core", backing_store=False) as h5:   # in memory: nothing is written
        for key, value in attrs.items():
            if not isinstance(key, str) or key in ("", "cell_names"):
                raise ValueError(f"dataset.attrs names must be non-empty strings other than 'cell_names' (the cell "
                                 f"names are dataset.cell_names), got {key!r}")
            try:
                h5.attrs[key] = value
            except (TypeError, ValueError, OverflowError) as exc:
                raise ValueError(f"dataset.attrs[{key!r}] cannot be stored in an HDF5 file: expected a number, a "
                                 f"string or a list of them, got {type(value).__name__} {value!r:.60}") from exc


def hdf5_path(path: PathLike, name: str = "path") -> Path:
    """``path`` as an HDF5 file to write (:func:`._validate.file_path` with ``writing``), or one sentence when
    its name does not end in .h5 or .hdf5: every reader takes the format from the suffix (an HDF5 dataset
    written as 'd.npy' was then read as a broken .npy stack)."""
    path = file_path(path, name, writing=True)
    if path.suffix.lower() not in HDF5_SUFFIXES:
        raise ValueError(f"{name} must end in {', '.join(HDF5_SUFFIXES)} (the file is HDF5), got "
                         f"{path.suffix or 'no suffix'!r} ({str(path)!r})")
    return path


def write_dataset(path: PathLike, dataset: Dataset) -> Path:
    """Write a :class:`Dataset` in the lab's HDF5 layout (atomically).

    Checked first, as :func:`read_dataset` checks a file (stimuli, rates,
    repeats, cells, cell names) and as HDF5 stores attributes: a dataset that
    would not read back is one sentence, and a file at ``path`` stays as it was.
    """
    path = hdf5_path(path)
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be an nr.io.Dataset, got {type(dataset).__name__}")
    train, test = _checked_split(dataset.train, "dataset.train"), _checked_split(dataset.test, "dataset.test")
    _check_splits_agree(train, test)
    names = cell_names_list(dataset.cell_names, train.rates.shape[1], "dataset.cell_names")
    _check_attrs(dataset.attrs)
    checked = Dataset(train, test, names, dict(dataset.attrs))
    return _atomic_h5(path, lambda h5: _fill_dataset(h5, checked))


def _fill_dataset(h5, dataset: Dataset) -> None:
    """Write ``dataset`` into the open HDF5 file ``h5`` in the lab's layout."""
    for name in ("train", "test"):
        split: Split = getattr(dataset, name)
        h5[f"{name}/stimulus"] = np.asarray(split.stimulus, dtype=np.float32)
        h5[f"{name}/{RATE_KEY}"] = np.asarray(split.rates, dtype=np.float32).T
        if split.repeats is not None:
            for c, reps in enumerate(split.repeats):
                h5[f"{name}/repeats/cell{c:02d}"] = np.asarray(reps, dtype=np.float32)
    h5.attrs["cell_names"] = json.dumps(list(dataset.cell_names))
    for k, v in dataset.attrs.items():
        h5.attrs[k] = v


def _atomic_h5(path: PathLike, fill: Callable[[Any], None]) -> Path:
    """Write the HDF5 file ``path`` atomically: ``fill(h5)`` fills an ``h5py.File`` made in memory
    (:func:`~napari_retina._atomic.atomic_write_in_memory`: HDF5 writing to a full disk crashed the process)."""
    import h5py

    def write(image) -> None:
        with h5py.File(image, "w") as h5:
            fill(h5)

    return atomic_write_in_memory(path, write)


def _write_group(group, data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        key = str(key)
        if isinstance(value, Mapping):
            _write_group(group.create_group(key), value)
        elif value is None:   # omitted, as in .npz: an absent attribute reads as None (not the string "None")
            continue
        elif isinstance(value, (str, bool, int, float, np.generic)):
            group.attrs[key] = value
        else:
            arr = np.asarray(value)   # numbers or text: _check_results refused the rest
            if arr.dtype.kind == "U":
                group.attrs[key] = json.dumps(arr.tolist())
            else:
                group.create_dataset(key, data=arr, compression="gzip" if arr.size > 1024 else None)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "/"))
        elif value is not None:
            out[name] = np.asarray(value)
    return out


#: the kinds of array write_results stores (in .h5 and .npz alike): bool, integer, float, complex and text
RESULT_KINDS = "biufcU"


def _check_results(data: Mapping, prefix: str = "") -> None:
    """One sentence for what :func:`write_results` cannot store as given, before anything is written: a key that
    is empty, holds "/" (nest dicts instead) or names the same entry as another once keys are text; a value other
    than None, a nested dict, a number, a string, or an array or list of numbers or strings (of
    :data:`RESULT_KINDS`): an object array, a ragged or mixed list, bytes, an int beyond 64 bits; text with a NUL."""
    seen: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key)
        where = f"{prefix}{name}"
        if name in ("", ".") or "/" in name:
            raise ValueError(f"results keys must be names without '/' (nest dicts for groups), not empty or '.', got "
                             f"{where!r}")
        if name in seen:
            raise ValueError(f"results hold two entries named {where!r} (keys {seen[name]!r} and {key!r}); "
                             "rename one")
        seen[name] = key
        if isinstance(value, Mapping):
            _check_results(value, where + "/")
            continue
        texts = [value] if isinstance(value, str) else value if isinstance(value, (list, tuple)) else []
        if any(isinstance(text, str) and "\x00" in text for text in texts):   # (NumPy drops a trailing one itself)
            # HDF5 refuses it with a raw h5py error naming no key; .npz cuts the text at it
            raise ValueError(f"results[{where!r}] holds text with a NUL character ('\\x00'), which neither .h5 nor "
                             ".npz keeps; remove it")
        if value is None or isinstance(value, str):
            continue
        try:
            kind = np.asarray(value).dtype
        except (ValueError, TypeError):   # a ragged list
            kind = np.dtype(object)
        if kind.kind not in RESULT_KINDS:
            if isinstance(value, int):
                got = f"the int {value}, which no 64-bit integer holds"
            elif kind == object:
                got = f"{type(value).__name__} of objects (mixed, nested or ragged values)"
            else:
                got = f"{type(value).__name__} of dtype {kind}"
            raise ValueError(f"results[{where!r}] must be a number, a string, a dict, or an array or list of numbers "
                             f"or strings, got {got}")


def _write_npz(tmp: str, arrays: Mapping[str, np.ndarray]) -> None:
    with open(tmp, "wb") as fh:  # a file, not a name: numpy would append ".npz" to the name
        np.savez_compressed(fh, **arrays)


def write_results(path: PathLike, results: Mapping[str, Any]) -> Path:
    """Write a nested dict of arrays, numbers and strings to ``.h5``/``.hdf5`` or ``.npz``.

    In HDF5, nested dicts become groups, arrays datasets, and numbers and
    strings attributes. In ``.npz``, keys are joined with ``/``. A value of
    None is left out in both (``tol`` of a fixed-steps attribution, say).
    What either format cannot hold as given (an empty key or one with ``/``,
    two keys that read the same, an object array, an int beyond 64 bits) is
    refused in one sentence before anything is written (:func:`_check_results`).

    Example
    -------
    >>> nr.io.write_results("out.h5", {"rates": rates, "model": {"name": "default"}})  # doctest: +SKIP
    """
    path = file_path(path, writing=True)
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a dict, got {type(results).__name__}")
    suffix = path.suffix.lower()
    if suffix not in HDF5_SUFFIXES + (".npz",):
        raise ValueError(f"results are written to .h5, .hdf5 or .npz, got {path.suffix or 'no suffix'!r}")
    _check_results(results)
    if suffix in HDF5_SUFFIXES:
        return _atomic_h5(path, lambda h5: _write_group(h5, results))
    return atomic_write(path, lambda tmp: _write_npz(tmp, _flatten(results)))


def trace_columns(attr: "Attribution", red: Optional["Reduction"] = None) -> dict[str, np.ndarray]:
    """Columns of the traces CSV, each of length T (frames), named with their units.

    ``frame``, ``time (ms)`` (frame × 10 ms, the stack's first frame at 0, as napari's time slider reads it; for
    a stack resampled from frames of Δ ms, ``input_frame_ms``, each 10 ms bin's centre on that clock,
    frame × 10 + (10 − Δ)/2, where the trace plot draws it), ``rate (spikes per 10 ms bin)`` and
    ``response (spikes per 10 ms bin)`` (the model's, from ``attr``), ``reduced_response (spikes per 10 ms
    bin)`` when ``red`` is given, then each channel's A_c(t) under its label (``red.label(c)``, else
    ``"A{c}"``) and the same unit. NaN where a frame was not attributed. A ``red`` of another attribution is
    refused (:func:`._validate.check_reduces`). (Before 2026-12-08 only the time's name carried its unit,
    ``time_ms``: a rate read as Hz was ten times off.)
    """
    if not all(hasattr(attr, a) for a in ("response", "rates", "channels")):
        raise TypeError(f"attr must be an attribution (nr.attribute's result), got {type(attr).__name__}")
    T = len(attr.response)
    frame = getattr(attr, "input_frame_ms", None)
    centre = 0.0 if frame is None else (FRAME_MS - float(frame)) / 2   # a bin's centre, frame 0's at 0
    rate = f" ({RATE_UNIT})"
    cols = {"frame": np.arange(T), "time (ms)": np.arange(T) * FRAME_MS + centre, "rate" + rate: attr.rates,
            "response" + rate: attr.response}
    if red is not None:
        check_reduces(attr, red)
        cols["reduced_response" + rate] = red.reduced_response
    for c in range(attr.channels.shape[1]):
        cols[(str(red.label(c)) if red is not None else f"A{c}") + rate] = attr.channels[:, c]
    return cols


def write_traces_csv(path: PathLike, attr: "Attribution", red: Optional["Reduction"] = None) -> Path:
    """Write an analysis's traces to CSV (atomically): one row per frame, the columns of :func:`trace_columns`.

    Floats are written with 9 significant digits; NaN where a frame was not
    attributed.

    Example
    -------
    >>> nr.io.write_traces_csv("traces.csv", attr, nr.reduce(attr))   # doctest: +SKIP
    """
    import csv

    path = file_path(path, writing=True)
    cols = trace_columns(attr, red)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(list(cols))
            for row in zip(*cols.values()):
                writer.writerow([f"{v:.9g}" if isinstance(v, (float, np.floating)) else v for v in row])

    return atomic_write(path, write)
