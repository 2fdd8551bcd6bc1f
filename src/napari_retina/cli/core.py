"""``napari-retina demo`` and ``napari-retina predict``."""

from __future__ import annotations

import json

from .._units import FRAME_MS
from ._paths import check_out_dir, check_out_file
from ._progress import tqdm_progress


def _demo(args) -> int:
    from .._napari.demo import run_demo, summary_text  # without a Qt binding, run_demo says so in one sentence

    out = check_out_dir(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    summary = run_demo(headless=args.headless, out_dir=out)
    if args.headless:
        print(summary_text(summary))  # a few lines; the full summary is the JSON file it names
    return 0


def _predict(args) -> int:
    import numpy as np

    from .._predict import predict
    from .._validate import parse_crop
    from ..checkpoint import load_model
    from ..io import HDF5_SUFFIXES, read_stimulus, write_results

    # everything that can be checked is checked before the model runs
    out = check_out_file(args.out, HDF5_SUFFIXES + (".npz",))
    crop = parse_crop(args.crop)
    model = load_model(args.model, device=args.device)
    stim = read_stimulus(args.stimulus, key=args.key)
    normalize = "zscore" if args.normalize else False
    with tqdm_progress("predict", disable=args.quiet) as progress:
        rates = predict(model, stim, batch_size=args.batch_size, crop=crop, progress=progress, normalize=normalize)
    write_results(
        out,
        {
            "rates": rates,
            "cell_names": json.dumps(model.config.cell_names),
            "units": f"spikes per {FRAME_MS:g} ms bin; frame t from frames t-history+1..t; NaN without full history",
            "stimulus_file": str(args.stimulus),
            "normalize": normalize or "none",
            "model": {"path": str(args.model or "default"), "provenance": json.dumps(model.provenance)},
        },
    )
    valid = rates[~np.isnan(rates[:, 0])]
    print(f"wrote {out}: rates {rates.shape[0]} frames x {rates.shape[1]} cells, mean rate per cell "
          + ", ".join(f"{n}={m:.3f}" for n, m in zip(model.config.cell_names, valid.mean(0))))
    return 0


def register(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="open napari with the shipped model, an omitted-stimulus flash train and the analysis ready",
        description="Open napari with the shipped model, an omitted-stimulus flash train and its analysis.",
    )
    demo.add_argument("--headless", action="store_true",
                      help="do not open a window: write a PNG screenshot and print a summary")
    demo.add_argument("--out", default=None, help="folder for the screenshot and summary (default: ./napari-retina-demo)")
    demo.set_defaults(func=_demo)

    pred = sub.add_parser("predict", help="predict every cell's firing rate for a stimulus file",
                          description=f"Predict firing rates (spikes per {FRAME_MS:g} ms bin) for a .npy/.tif/.h5 "
                                      "stimulus stack.")
    pred.add_argument("stimulus", help="stimulus stack (T, H, W): .npy, .tif/.tiff or .h5 (lab layout)")
    pred.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    pred.add_argument("--key", default=None, help="HDF5 dataset holding the stimulus (default: stimulus, test/stimulus, train/stimulus)")
    pred.add_argument("--out", default="rates.h5", help="output .h5 or .npz (default rates.h5)")
    pred.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    pred.add_argument("--batch-size", type=int, default=None, help="windows per forward pass")
    pred.add_argument("--crop", default=None,
                      help="'center' (or 'centre'), 'none' or 'y0,x0' (whole pixels) to cut a model-sized window "
                           "out of a larger stack")
    pred.add_argument("--normalize", action="store_true",
                      help="z-score the stack by its own mean and std (raw intensities stored as floats); "
                           "default: floats are contrast units, integer stacks are normalised anyway")
    pred.add_argument("--quiet", action="store_true", help="no progress bar")
    pred.set_defaults(func=_predict)
