"""``napari-retina synth``, ``napari-retina train`` and ``napari-retina evaluate``.

Each handler parses nothing itself: it calls the core function
(:func:`napari_retina.synthetic.make_dataset`, :func:`napari_retina.training.train`,
:func:`napari_retina.training.evaluate`) and shows progress with tqdm.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict

from .._json import jsonable
from .._units import FRAME_MS
from ..training import DEFAULTS, TrainConfig
from ._paths import check_out_file
from ._progress import tqdm_progress, write_line


def _cells(text):
    """``--cells``: None (all) or comma-separated indices, read as ``--cell`` reads them ("0,,1" or "1," is refused,
    not read as [0, 1] or [1])."""
    if text is None:
        return None
    try:
        return [int(c) for c in text.split(",")]
    except ValueError as exc:
        raise ValueError(f"--cells must be comma-separated cell indices, got {text!r}") from exc


def _synth(args) -> int:
    from ..io import HDF5_SUFFIXES
    from ..synthetic import Retina, make_dataset

    out = check_out_file(args.out, HDF5_SUFFIXES, what="out")  # before the work, not when it is renamed into place
    with tqdm_progress("synth", "stage", args.quiet) as progress:
        path = make_dataset(out, frames=args.frames, test_frames=args.test_frames, repeats=args.repeats,
                            seed=args.seed, checker=args.checker,
                            retina=Retina(seed=args.retina_seed, version=args.retina_version),
                            progress=progress, contrast=args.contrast, kind=args.kind, grey=args.grey)
    print(f"wrote {path}: {args.frames} training frames, {args.test_frames} test frames x {args.repeats} repeats")
    return 0


def _train_config(args) -> TrainConfig:
    """The training settings of a parsed ``napari-retina train`` command line (validated)."""
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, blocks_per_batch=args.blocks_per_batch,
                       lr=args.lr, l2=args.l2, l1_linear=args.l1_linear, patience=args.patience,
                       lr_patience=args.lr_patience, holdout=args.holdout, seed=args.seed,
                       recalibrate=args.recalibrate)


def _train(args) -> int:
    import torch

    from .._validate import check_int
    from ..checkpoint import CHECKPOINT_SUFFIXES
    from ..model import ModelConfig
    from ..training import train

    # a checkpoint's suffix, a folder that exists and can be written: before an epoch is spent
    check_out_file(args.out, CHECKPOINT_SUFFIXES, inputs=(args.data,))
    if check_int(args.threads, "--threads (0: torch's default)", 0):  # torch raises a RuntimeError below 1
        torch.set_num_threads(args.threads)
    config = None
    if args.tiny and args.init is not None:   # before reading the data: two architectures asked for
        raise ValueError("give either --tiny or --init, not both: the --init checkpoint brings its own architecture")
    if args.tiny:
        from ..io import read_dataset

        ds = read_dataset(args.data, cells=_cells(args.cells))
        config = ModelConfig(history=10, size=ds.train.stimulus.shape[1], channels=(4, 4), kernels=(9, 7),
                             n_cells=ds.train.rates.shape[1])
    def log(entry: dict) -> None:
        entry = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items()}
        write_line(json.dumps(jsonable(entry, strict=True)))

    command = "napari-retina " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    with tqdm_progress("train", "batch", args.quiet) as progress:
        model = train(args.data, config=config, **asdict(_train_config(args)), device=args.device,
                      cells=_cells(args.cells), out=args.out, progress=progress, log=log, command=command,
                      init=args.init)
    print(json.dumps(jsonable({"out": str(args.out), "seconds": model.provenance["seconds"],
                               "best_epoch": model.provenance["best_epoch"], **model.scores}, strict=True), indent=1))
    return 0


def _evaluate(args) -> int:
    from ..checkpoint import load_model
    from ..io import HDF5_SUFFIXES, write_results
    from ..training import evaluate

    out = check_out_file(args.out, HDF5_SUFFIXES + (".npz",), inputs=(args.data, args.model)) if args.out else None
    model = load_model(args.model, device=args.device)
    result = evaluate(model, args.data, cells=_cells(args.cells))
    if out is not None:
        write_results(out, {k: (json.dumps(v) if isinstance(v, list) and v and isinstance(v[0], str) else v)
                                       for k, v in result.items()})
    print(json.dumps(jsonable(result, strict=True), indent=1))  # strict JSON: an undefined r is null, not NaN
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    """Add the commands ``synth``, ``train`` and ``evaluate`` to the command line's subparsers ``sub``."""
    from .. import synthetic

    d = " (default %(default)s)"
    p = sub.add_parser("synth", help="write a dataset of the synthetic retina's responses (lab HDF5 layout)",
                       description="Record the synthetic retina (nr.synthetic.Retina, version 2 unless "
                                   "--retina-version says otherwise) on naturalistic "
                                   "movies and white noise (--kind mix) or on white noise alone, and write the "
                                   "dataset in the lab's HDF5 layout (replacing an existing file).")
    p.add_argument("out", help="output .h5 or .hdf5 file")
    p.add_argument("--frames", type=int, default=synthetic.DATASET_FRAMES,
                   help=f"training frames ({FRAME_MS:g} ms each)" + d)
    p.add_argument("--test-frames", type=int, default=synthetic.DATASET_TEST_FRAMES, help="test frames" + d)
    p.add_argument("--repeats", type=int, default=synthetic.DATASET_REPEATS, help="repeats of the test stimulus" + d)
    p.add_argument("--seed", type=int, default=0, help="seed of the stimuli and the spikes" + d)
    p.add_argument("--checker", type=int, default=synthetic.DATASET_CHECKER,
                   help="white-noise checker size in pixels, for --kind binary/gaussian (mix has its own)" + d)
    p.add_argument("--contrast", type=float, default=synthetic.DATASET_CONTRAST,
                   help="white-noise contrast (binary: ±contrast; gaussian: standard deviation)" + d)
    p.add_argument("--kind", default=synthetic.DATASET_KIND, choices=(*synthetic.MIXES, "binary", "gaussian"),
                   help="mix: naturalistic movies and white noise at 4, 2 and 1 px (nr.synthetic.training_mix); "
                        "mix-switching: the same with the noise's contrast switching between --contrast and 0.25 "
                        "every second; mix-steps: its contrast stepping every second to a level log-uniform in "
                        "0.125-5 x --contrast; mix-field: mix-steps with whole-field steps added; mix-quiet: "
                        "mix-field stepping from 0.005 x --contrast; mix-sparse: mix-field with its whole-field "
                        "block grey on 97%% of frames; binary/gaussian: white noise on --checker px checkers" + d)
    p.add_argument("--grey", type=float, default=synthetic.DATASET_GREY,
                   help="probability that a white-noise frame is grey (sparse noise; 0: classic white noise)" + d)
    p.add_argument("--retina-seed", type=int, default=0, help="seed of nr.synthetic.Retina" + d)
    p.add_argument("--retina-version", type=int, default=synthetic.DEFAULT_VERSION, choices=synthetic.VERSIONS,
                   help="circuit of nr.synthetic.Retina: 2 (the shipped model's truth: reversal and doubling; its "
                        "OSR locks to the last flash at the longest periods), "
                        "3 (with gain control: latency coding, anticipation, reversal, doubling; its OSR rises too "
                        "little), 4 (3 with a bank of tuned ON pathways), 5 (4 searched for an OSR latency on a "
                        "line), 6 (5 searched for an OSR that rises over the train's level: all five phenomena) "
                        "or 1 (the first)" + d)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_synth)

    p = sub.add_parser("train", help="train a BN-CNN on a dataset in the lab HDF5 layout",
                       description="Train a BN-CNN (nr.train) on a dataset in the lab's HDF5 layout, from scratch "
                                   "or from --init, with Adam on the Poisson loss, stopping early on the held-out "
                                   "end of the training frames; write the best epoch's checkpoint to --out and "
                                   "print its scores as JSON (heldout_r: Pearson r on the held-out frames; with a "
                                   "test split, test_r against the recorded test rates and, for synthetic data, "
                                   "test_r_true against the true rates: the keys of evaluate, prefixed test_).")
    p.add_argument("data", help="dataset .h5 (train/stimulus, train/response/firing_rate_10ms, test/...)")
    p.add_argument("--out", required=True,
                   help="checkpoint .pt to write (atomically, after every improvement; an existing file is replaced at "
                        "the first, and left as it was when the run stops before its first epoch ends)")
    # every training default from nr.training.TrainConfig, the one source shared with nr.train and napari
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="maximum passes over the training windows" + d)
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="windows per Adam step" + d)
    p.add_argument("--blocks-per-batch", type=int, default=DEFAULTS.blocks_per_batch,
                   help="runs of consecutive windows per batch (more runs: less correlated batches)" + d)
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help="Adam learning rate" + d)
    p.add_argument("--l2", type=float, default=DEFAULTS.l2, help="L2 on the conv kernels" + d)
    p.add_argument("--l1-linear", type=float, default=DEFAULTS.l1_linear, help="L1 on the readout weights" + d)
    p.add_argument("--patience", type=int, default=DEFAULTS.patience,
                   help="epochs without held-out improvement before stopping" + d)
    p.add_argument("--lr-patience", type=int, default=DEFAULTS.lr_patience,
                   help="epochs without held-out improvement before the learning rate is halved" + d)
    p.add_argument("--holdout", type=float, default=DEFAULTS.holdout,
                   help="fraction of the training frames held out at the end for early stopping" + d)
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seeds initialisation, shuffling and noise" + d)
    p.add_argument("--recalibrate", type=int, default=DEFAULTS.recalibrate,
                   help="training batches for re-estimating batch-norm statistics before each held-out score" + d)
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    p.add_argument("--cells", default=None, help="comma-separated cell indices (default all)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--init", default=None, help="checkpoint to start from (fine-tune or resume)")
    p.add_argument("--tiny", action="store_true", help="a tiny model (history 10, 4+4 channels) for smoke tests (not with --init)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="score a model on a dataset's test split (Pearson r per cell)",
                       description="Score a model on a dataset's test split (nr.evaluate), on the frames with a "
                                   "full history, and print JSON: r (per cell, Pearson r against the recorded "
                                   "test rates, test/response/firing_rate_10ms) and r_mean, mean_ratio (mean "
                                   "predicted over mean recorded rate), frames; with synthetic data "
                                   "(test/true_rates) also r_true and r_true_mean (against the true rates), "
                                   "ev_true (explained variance of the true rates) and r_data_vs_true (the "
                                   "recorded rates against the true ones); with test/repeats "
                                   "reliability_split_half.")
    p.add_argument("data", help="dataset .h5 in the lab layout (only its test/... datasets are read)")
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--cells", default=None, help="comma-separated cell indices of the dataset (default all)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    p.add_argument("--out", default=None, help="also write the scores to .h5/.npz (replacing an existing file)")
    p.set_defaults(func=_evaluate)
