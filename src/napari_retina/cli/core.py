"""``napari-retina demo``, ``napari-retina predict`` and ``napari-retina attribute``."""

from __future__ import annotations

import argparse
import json
from typing import Union

from .._units import FRAME_MS, PIXEL_UM, RATE_UNITS
from ._paths import check_out_dir, check_out_file
from ._progress import tqdm_progress


def _check_display() -> None:
    """On Linux, Qt aborts the process (SIGABRT) when it has no display, --headless too: say so first."""
    import os
    import sys

    if sys.platform.startswith("linux") and not any(
            os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        raise ValueError("no display to draw on ($DISPLAY is not set; napari draws even with --headless): "
                         "run it under Xvfb, e.g. xvfb-run -a napari-retina demo --headless")


def _demo(args) -> int:
    from .._napari.demo import DEFAULT_OUT_DIR, run_demo, summary_text  # without Qt, run_demo says so

    # checked before any work: headless, the files go to the default folder when none is given
    out = check_out_dir(args.out or DEFAULT_OUT_DIR) if (args.out or args.headless) else None
    _check_display()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    summary = run_demo(headless=args.headless, out_dir=out)
    if args.headless:
        print(summary_text(summary))  # a few lines; the full summary is the JSON file it names
    return 0


#: what --pixel-um takes, in an error's words
PIXEL_UM_TEXT = "a positive number of µm, 'p', or 'p_y,p_x' for y and x"
#: --pixel-um, for predict and attribute
PIXEL_UM_HELP = (f"the stack's pixel size on the retina in µm, 'p' or 'p_y,p_x': other than the model's {PIXEL_UM:g}, "
                 "the stack is resampled to the model's pixels (area-weighted means) and --crop counts model pixels "
                 "(default: the stack's pixels are the model's)")
#: what --frame-ms takes, in an error's words
FRAME_MS_TEXT = "a positive number of ms per frame, or a ratio such as 1000/60 (a 60 Hz monitor)"
#: --frame-ms, for predict and attribute
FRAME_MS_HELP = (f"how long each frame of the stack was shown, in ms (1000/60 for 60 Hz): other than the model's "
                 f"{FRAME_MS:g}, time is resampled to the model's {FRAME_MS:g} ms bins (each the mean of the frames "
                 "shown during it) and the output counts those bins (default: the stack's frames are the model's)")


def _predict(args) -> int:
    import numpy as np

    from .._predict import predict
    from .._validate import analysed_origin, bins_words, check_frame_ms, check_pixel_um, parse_crop
    from ..checkpoint import load_model, model_record
    from ..io import HDF5_SUFFIXES, read_stimulus, stimulus_key, write_results

    # everything that can be checked is checked before the model runs
    out = check_out_file(args.out, HDF5_SUFFIXES + (".npz",), inputs=(args.stimulus, args.model))
    crop, pixel_um = parse_crop(args.crop), check_pixel_um(args.pixel_um, PIXEL_UM_TEXT)
    frame_ms = check_frame_ms(args.frame_ms, FRAME_MS_TEXT)
    model = load_model(args.model, device=args.device)
    stim = read_stimulus(args.stimulus, key=args.key)
    normalize = "zscore" if args.normalize else False
    with tqdm_progress("predict", disable=args.quiet) as progress:
        rates = predict(model, stim, batch_size=args.batch_size, crop=crop, progress=progress, normalize=normalize,
                        pixel_um=pixel_um, frame_ms=frame_ms)
    write_results(
        out,
        {
            "rates": rates,
            "cell_names": json.dumps(model.config.cell_names),
            "units": RATE_UNITS,
            "stimulus_file": str(args.stimulus),
            "stimulus_key": stimulus_key(args.stimulus, args.key),   # None (left out) for .npy and TIFF
            "crop_origin": np.asarray(analysed_origin(stim.shape[1:], model.config.size, crop, pixel_um),
                                      dtype=np.int64),
            "input_pixel_um": np.asarray(pixel_um or (PIXEL_UM, PIXEL_UM), dtype=np.float64),
            "input_frame_ms": frame_ms or FRAME_MS,
            "normalize": normalize or "none",
            "model": {**model_record(model, args.model), "provenance": json.dumps(model.provenance)},
        },
    )
    valid = rates[~np.isnan(rates[:, 0])]
    bins = bins_words(len(stim), frame_ms)
    print(f"wrote {out}: rates {rates.shape[0]} frames{bins} x {rates.shape[1]} cells, mean rate per cell "
          + ", ".join(f"{n}={m:.3f}" for n, m in zip(model.config.cell_names, valid.mean(0))))
    return 0


def parse_cell(text: str) -> Union[int, list[int], str]:
    """``--cell``: "all", an index ("2") or a comma-separated list ("0,2"), for ``nr.attribute(cell=...)``."""
    if text.strip() == "all":
        return "all"
    try:
        cells = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--cell must be 'all', an index or a comma-separated list of indices, got {text!r}") from None
    return cells[0] if len(cells) == 1 else cells


def _attribute(args) -> int:
    from .._validate import bins_words, check_frame_ms, check_pixel_um, parse_crop
    from ..attribution import attribute
    from ..checkpoint import load_model, model_record
    from ..io import HDF5_SUFFIXES, read_stimulus, stimulus_key, write_results

    out = check_out_file(args.out, HDF5_SUFFIXES + (".npz",), inputs=(args.stimulus, args.model))
    crop, cell, pixel_um = parse_crop(args.crop), parse_cell(args.cell), check_pixel_um(args.pixel_um, PIXEL_UM_TEXT)
    frame_ms = check_frame_ms(args.frame_ms, FRAME_MS_TEXT)
    model = load_model(args.model, device=args.device)
    stim = read_stimulus(args.stimulus, key=args.key)
    normalize = "zscore" if args.normalize else False
    with tqdm_progress("attribute", disable=args.quiet) as progress:
        attr = attribute(model, stim, cell=cell, steps=args.steps, tol=args.tol, invariance=args.invariance,
                         batch_size=args.batch_size, crop=crop, progress=progress, normalize=normalize,
                         pixel_um=pixel_um, frame_ms=frame_ms)
    write_results(out, {
        "attribution": attr.to_dict(),
        "units": RATE_UNITS,
        "stimulus_file": str(args.stimulus),
        "stimulus_key": stimulus_key(args.stimulus, args.key),   # the crop's corner is attribution/crop_origin
        "normalize": normalize or "none",
        "model": {**model_record(model, args.model), "provenance": json.dumps(model.provenance)},
    })
    used = attr.steps_per_frame[attr.frames]
    how = f"tol {attr.tol:g}, {int(used.min())}–{int(used.max())} steps per frame" if attr.tol is not None \
        else f"{attr.steps} steps"
    bins = bins_words(len(stim), frame_ms)
    print(f"wrote {out}: attribution of cell(s) {attr.cells} on {len(attr.frames)} frames{bins} ({attr.rule}, {how}, "
          f"invariance {attr.invariance}); completeness error {attr.completeness_error:.1e}")
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    """Add the commands ``demo``, ``predict`` and ``attribute`` to the command line's subparsers ``sub``."""
    demo = sub.add_parser(
        "demo",
        help="open napari with the shipped model, an omitted-stimulus flash train and the analysis ready",
        description="Open napari with the shipped model, an omitted-stimulus flash train and its analysis.",
    )
    demo.add_argument("--headless", action="store_true",
                      help="do not open a window: write a PNG screenshot and print a summary (napari still needs a "
                           "display: on a server run it under xvfb-run -a)")
    demo.add_argument("--out", default=None, help="folder for the screenshot and summary (default: ./napari-retina-demo)")
    demo.set_defaults(func=_demo)

    pred = sub.add_parser("predict", help="predict every cell's firing rate for a stimulus file",
                          description=f"Predict firing rates (spikes per {FRAME_MS:g} ms bin) for a .npy/.tif/.h5 "
                                      "stimulus stack.")
    pred.add_argument("stimulus", help="stimulus stack (T, H, W): .npy, .tif/.tiff or .h5 (lab layout)")
    pred.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    pred.add_argument("--key", default=None, help="HDF5 dataset holding the stimulus (default: the first of stimulus, "
                                                  "test/stimulus, train/stimulus that exists)")
    pred.add_argument("--out", default="rates.h5", help="output .h5 or .npz, replaced if it exists (default rates.h5)")
    pred.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    pred.add_argument("--batch-size", type=int, default=None,
                      help="windows per forward pass (default 256 on a CPU, 1024 on a GPU)")
    pred.add_argument("--crop", default=None,
                      help="'center' (or 'centre'), 'none' or 'y0,x0' (whole pixels) to cut a model-sized window "
                           "out of a larger stack")
    pred.add_argument("--pixel-um", default=None, help=PIXEL_UM_HELP)
    pred.add_argument("--frame-ms", default=None, help=FRAME_MS_HELP)
    pred.add_argument("--normalize", action="store_true",
                      help="z-score the stack by its own mean and std (raw intensities stored as floats); "
                           "default: floats are contrast units, integer stacks are normalised anyway")
    pred.add_argument("--quiet", action="store_true", help="no progress bar")
    pred.set_defaults(func=_predict)

    from ..attribution import DEFAULT_TOL, INVARIANCES

    attr = sub.add_parser("attribute", help="integrated gradients of a cell's rate to the first-layer units",
                          description="Attribute a cell's rate (spikes per 10 ms bin) to the model's first-layer "
                                      "units over a .npy/.tif/.h5 stimulus stack, frame by frame (nr.attribute).")
    attr.add_argument("stimulus", help="stimulus stack (T, H, W): .npy, .tif/.tiff or .h5 (lab layout)")
    attr.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    attr.add_argument("--key", default=None, help="HDF5 dataset holding the stimulus (default: the first of stimulus, "
                                                  "test/stimulus, train/stimulus that exists)")
    attr.add_argument("--cell", default="0", help="cell index, comma-separated indices (rates summed) or 'all' "
                                                  "(default 0)")
    quad = attr.add_mutually_exclusive_group()
    quad.add_argument("--tol", type=float, default=None,
                      help="accuracy: the quadrature is refined per frame until the completeness error and the "
                           f"maps' estimated error are within it (default {DEFAULT_TOL:g}, nr.attribute's)")
    quad.add_argument("--steps", type=int, default=None, help="a fixed number of quadrature steps instead of --tol")
    attr.add_argument("--invariance", default="auto", choices=list(INVARIANCES),
                      help="sum the maps over a uniform axis or all space (default auto: what the stimulus allows)")
    attr.add_argument("--out", default="attribution.h5", help="output .h5 or .npz, replaced if it exists (default attribution.h5)")
    attr.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    attr.add_argument("--batch-size", type=int, default=None,
                      help="path points (frames x quadrature points) per backward pass (default 256 on a CPU, "
                           "4096 on a CUDA GPU, 1024 on MPS)")
    attr.add_argument("--crop", default=None, help="'center', 'none' or 'y0,x0' (as for predict)")
    attr.add_argument("--pixel-um", default=None, help=PIXEL_UM_HELP)
    attr.add_argument("--frame-ms", default=None, help=FRAME_MS_HELP)
    attr.add_argument("--normalize", action="store_true", help="z-score the stack by its own mean and std")
    attr.add_argument("--quiet", action="store_true", help="no progress bar")
    attr.set_defaults(func=_attribute)
