"""Training and evaluating a :class:`~napari_retina.model.RetinaCNN` (METHOD.md §1).

:func:`train` fits the BN-CNN to a dataset in the lab's HDF5 layout (or to
arrays) with a Poisson loss, Adam, L2 on the conv kernels, reduce-on-plateau
and early stopping on a held-out tail in time (the last 5% of the training
frames, not a random split: neighbouring frames share history). Its settings
and their defaults are :class:`TrainConfig`'s, shared with the command line
and the napari widget. The best model (lowest held-out loss) is returned
and, with ``out=``, saved atomically after every improvement, so an
interrupted run leaves a complete checkpoint of this run at ``out``, or,
before the first epoch ends, ``out`` as it was (no file, or the file that
was there, untouched): never a half-written one.
:func:`evaluate` scores a model on a dataset's test split (per-cell Pearson
r against the recorded rates, and against the true rates for synthetic
data).

Example
-------
>>> import napari_retina as nr
>>> nr.synthetic.make_dataset("wn.h5", frames=4000, test_frames=500)   # doctest: +SKIP
>>> model = nr.train("wn.h5", epochs=5, out="model.pt")               # doctest: +SKIP
>>> nr.evaluate(model, "wn.h5")["r_mean"]                               # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import socket
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch.nn import functional as F

from ._atomic import same_file
from ._device import DeviceLike, resolve_device
from ._frames import batches, gather_windows
from ._progress import Progress, report
from ._types import PathLike
from ._validate import (as_rates, as_stack, check_cell_subset, check_history_frames, check_int, check_positive,
                        check_real, hz_like_rates, hz_warning, is_real, mean_std, normalise,
                        units_finding, unusable_weights)
from .checkpoint import checkpoint_path, load_model, save_model, weights_sha256
from .io import Dataset, Split, cell_names_list, read_cell_names, read_dataset, read_split, repeats_array
from .metrics import explained_variance, finite_mean, pearson, ratio_of_means
from .model import ModelConfig, RetinaCNN

__all__ = [
    "TrainConfig", "init_readout", "train", "weight_penalty", "evaluate", "HOLDOUT", "IMPROVEMENT", "TEST_STIMULUS",
    "TRUE_RATES_KEY", "DEFAULTS"
]

TrainingData = Union[PathLike, Dataset, tuple]
"""What :func:`train` and :func:`evaluate` read: an HDF5 file in the lab layout, a
:class:`~napari_retina.io.Dataset`, or arrays ``(stimulus, rates)`` (for :func:`train` also
``(stimulus, rates, test_stimulus, test_rates)``)."""

#: fraction of the training frames held out at the end for early stopping
HOLDOUT = 0.05
#: an epoch improves when its held-out loss is below the best so far by more than this (early stopping and lr)
IMPROVEMENT = 1e-6
#: what nr.train and nr.evaluate call the test split's stimulus in their sentences
TEST_STIMULUS = "the test stimulus"
#: HDF5 key (cells, T) of the true test rates written by nr.synthetic.make_dataset
TRUE_RATES_KEY = "test/true_rates"


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`train` fits a model: every training setting and its one default.

    ``nr.train``'s keyword defaults, ``napari-retina train``'s option defaults
    and the napari Model widget's values are read from here. Validated on
    construction (one-sentence ValueError/TypeError). A checkpoint records
    these in ``provenance["params"]`` (:meth:`provenance_params`).

    Example
    -------
    >>> from dataclasses import asdict
    >>> tc = TrainConfig(epochs=5, batch_size=192)
    >>> model = nr.train("wn.h5", **asdict(tc))               # doctest: +SKIP
    """

    #: maximum passes over the training windows
    epochs: int = 10
    #: windows (stimulus frames predicted) per Adam step, >= 2 (batch norm)
    batch_size: int = 128
    #: a batch is this many runs of consecutive windows taken at random places (conv1 by FFT, each
    #: frame of a run transformed once: :meth:`RetinaCNN.first_layer_windows`)
    blocks_per_batch: int = 4
    #: Adam learning rate, > 0
    lr: float = 2e-3
    #: L2 penalty on the conv1 and conv2 kernels (sum of squared weights, added to the mean Poisson
    #: loss in spikes per 10 ms bin), >= 0
    l2: float = 1e-3
    #: L1 penalty on the readout weights (sum of absolute weights), >= 0
    l1_linear: float = 0.0
    #: epochs without held-out improvement before stopping early, >= 1
    patience: int = 3
    #: epochs without held-out improvement before the learning rate is halved, >= 1 (counted as ``patience``
    #: counts them: 2 halves it after the second such epoch in a row; checkpoints made before this meaning
    #: recorded torch's count, one less, as ``lr_patience``)
    lr_patience: int = 2
    #: fraction of the training frames held out at the end (in time) for early stopping, in (0, 0.5)
    holdout: float = HOLDOUT
    #: seeds initialisation, shuffling and training noise (reproducible on one device), >= 0
    seed: int = 0
    #: before each held-out score, re-estimate the batch-norm running statistics on this many fixed
    #: training batches (0: keep the running averages)
    recalibrate: int = 8

    def __post_init__(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 2), ("blocks_per_batch", 1), ("recalibrate", 0)):
            object.__setattr__(self, name, check_int(getattr(self, name), name, low))
        if self.blocks_per_batch > self.batch_size:   # each block holds one window at least: batches grew silently
            raise ValueError(f"blocks_per_batch must be at most batch_size ({self.batch_size}): a batch is "
                             f"blocks_per_batch runs of batch_size // blocks_per_batch windows, got "
                             f"{self.blocks_per_batch}")
        object.__setattr__(self, "lr", check_positive(self.lr, "lr"))
        # a seed below 2**64 - 1: torch's generators take 64 bits, and calibration uses seed + 1
        for name, low, high in (("patience", 1, None), ("lr_patience", 1, None), ("seed", 0, 2**64 - 1)):
            object.__setattr__(self, name, check_int(getattr(self, name), name, low, high))
        if not is_real(self.holdout) or not 0 < self.holdout < 0.5:
            raise ValueError(f"holdout must be a fraction in (0, 0.5), got {self.holdout!r}")
        for name in ("l2", "l1_linear"):
            object.__setattr__(self, name, check_real(getattr(self, name), name, low=0))

    def provenance_params(self, device: torch.device, cells: Optional[list[int]], command: Optional[str]) -> dict:
        """``provenance["params"]`` of a checkpoint: these settings (under their recorded names) plus
        the device, the cells and the command (default ``sys.argv``)."""
        params = {_RECORDED_AS.get(k, k): v for k, v in asdict(self).items()}
        params.update(device=str(device), cells=cells, command=command or " ".join(sys.argv))
        return params

    @classmethod
    def from_provenance(cls, params: dict) -> "TrainConfig":
        """The settings a checkpoint was trained with, from its ``provenance["params"]``.

        >>> TrainConfig.from_provenance(nr.load_model().provenance["params"]).batch_size   # doctest: +SKIP
        192
        """
        params = dict(params)
        if _RECORDED_AS["lr_patience"] not in params and "lr_patience" in params:   # torch's count: one less
            params[_RECORDED_AS["lr_patience"]] = params["lr_patience"] + 1
        return cls(**{f.name: params[_RECORDED_AS.get(f.name, f.name)] for f in fields(cls)})


#: TrainConfig fields recorded under another name in provenance["params"] (the names checkpoints have);
#: lr_patience under a new name because older checkpoints' "lr_patience" is torch's ReduceLROnPlateau count
#: (the learning rate halved after lr_patience + 1 epochs without improvement)
_RECORDED_AS = {"epochs": "epochs_max", "recalibrate": "recalibrate_batches", "lr_patience": "lr_patience_epochs"}
#: the defaults, validated
DEFAULTS = TrainConfig()


@dataclass
class _Data:
    dataset: Dataset
    path: Optional[Path]
    sha256: Optional[str]
    true_test: Optional[np.ndarray]   # (T, n_cells) or None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _arrays_sha256(ds: Dataset) -> str:
    """SHA-256 of a dataset given as arrays, as a file's bytes are hashed: each split's stimulus, rates (float32,
    as trained on) and repeats in that order, each as its dtype and shape (JSON) then its elements in C order."""
    h = hashlib.sha256()
    for split in (ds.train, ds.test):
        for arr in (() if split is None else (split.stimulus, split.rates, split.repeats)):
            if arr is None:
                h.update(b"null")
                continue
            arr = np.ascontiguousarray(arr)
            h.update(json.dumps([str(arr.dtype), list(arr.shape)]).encode())
            h.update(memoryview(arr.reshape(-1)).cast("B"))
    return h.hexdigest()


def _read_true_rates(path: Path, cells: Optional[list[int]], n_frames: int) -> Optional[np.ndarray]:
    """The file's ``test/true_rates`` (synthetic data's noiseless rates, (cells, T) in the file) as (T, n_cells)
    float32 for ``cells`` (default all), or None when the file has none.

    Read as the recorded rates beside them are (``nr.io``'s reader: nothing from
    outside the file, the size checked before reading) and checked alike: numbers,
    one row per cell of ``test/response/firing_rate_10ms``, ``n_frames`` time
    bins, finite and >= 0, or one ValueError naming the file and the dataset.
    """
    from .io import RATE_KEY, _checked_rates, _h5_dataset_path, _h5_optional_dataset, _open_h5, _read_h5_dataset

    with _open_h5(path) as h5:
        if _h5_optional_dataset(h5, TRUE_RATES_KEY, path) is None:
            return None
        true = _read_h5_dataset(h5, TRUE_RATES_KEY, path)
        n_cells = int(h5[_h5_dataset_path(h5, f"test/{RATE_KEY}", path)].shape[0])   # checked by read_split before
    true = _checked_rates(true, TRUE_RATES_KEY, "(cells, T)", path, n_frames, "true rates")
    if true.shape[0] != n_cells:
        raise ValueError(f"{TRUE_RATES_KEY} in {path.name} must hold one row per cell of test/{RATE_KEY}, "
                         f"{n_cells}, got {true.shape[0]}")
    if cells is not None:
        true = true[check_cell_subset(cells, n_cells, "the file has")]
    return np.ascontiguousarray(true.T, dtype=np.float32)


def _check_rates(rates, n_frames: int, name: str, stacklevel: int) -> np.ndarray:
    """Rates (T, n_cells) float32, refused in one sentence unless numbers (integers or floats: not bools, not
    text), finite and >= 0, one bin per frame (:func:`~napari_retina._validate.as_rates`); rates that look like
    Hz warn (``stacklevel``: warnings.warn's, as if called here)."""
    arr = as_rates(rates, n_frames, name)
    why = hz_like_rates(arr)
    if why is not None:   # as a file's rates warn when read (nr.io.read_dataset)
        warnings.warn(hz_warning(name, why), UserWarning, stacklevel=stacklevel)
    return arr.astype(np.float32)


def _as_split(value, name: str, stacklevel: int) -> Split:
    """A (stimulus, rates) pair or a Split, checked (a Split's repeats as a file's are,
    :func:`~napari_retina.io.repeats_array`); ``stacklevel`` (warnings.warn's, as if called here) points a
    warning at the user's call."""
    if isinstance(value, Split):
        stim, rates, reps = value.stimulus, value.rates, value.repeats
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        stim, rates = value
        reps = None
    else:
        raise TypeError(f"{name} must be a Split or a (stimulus, rates) pair, got {type(value).__name__}")
    stim = as_stack(stim, f"{name} stimulus")
    rates = _check_rates(rates, stim.shape[0], f"{name} rates", stacklevel + 1)
    if reps is not None:
        reps = repeats_array(reps, rates.shape[1], stim.shape[0], f"{name} repeats")
    return Split(stim, rates, reps)


def _load(data, cells: Optional[list[int]]) -> _Data:
    """A dataset from an HDF5 path, a Dataset, or (stimulus, rates[, test_stimulus, test_rates])."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"no dataset at {str(path)!r}")
        ds = read_dataset(path, cells=cells)
        return _Data(ds, path, _sha256(path), _read_true_rates(path, cells, ds.test.stimulus.shape[0]))
    if isinstance(data, Dataset):
        train, test = _as_split(data.train, "train", 4), _as_split(data.test, "test", 4)
        names = cell_names_list(data.cell_names, train.rates.shape[1], "the Dataset's cell_names")
        ds = Dataset(train, test, names, dict(data.attrs))
    elif isinstance(data, (tuple, list)) and len(data) in (2, 4):
        train = _as_split(tuple(data[:2]), "train", 4)      # here, _load, train, its caller
        test = _as_split(tuple(data[2:]), "test", 4) if len(data) == 4 else None
        ds = Dataset(train, test, [], {})
    else:
        raise TypeError(
            "data must be an HDF5 path in the lab layout, an nr.io.Dataset, or arrays "
            f"(stimulus, rates[, test_stimulus, test_rates]), got {type(data).__name__}"
        )
    n = ds.train.rates.shape[1]
    if ds.test is not None and ds.test.rates.shape[1] != n:
        raise ValueError(f"train has {n} cells but test has {ds.test.rates.shape[1]}")
    if not ds.cell_names:   # cellN by the index in the data, before a subset is picked
        ds.cell_names = [f"cell{i}" for i in range(n)]
    sha256 = _arrays_sha256(ds)   # as given, before a subset (a file's hash is of all of it; cells are recorded)
    if cells is not None:
        cells = check_cell_subset(cells, n, "the data have")
        sel = lambda s: None if s is None else Split(s.stimulus, s.rates[:, cells],  # noqa: E731
                                                       None if s.repeats is None else s.repeats[cells])
        ds = Dataset(sel(ds.train), sel(ds.test), [ds.cell_names[c] for c in cells], ds.attrs)
    return _Data(ds, None, sha256, None)


def _warn_of_silent_cells(rates: np.ndarray, names: list, subject: str) -> None:
    """Warn (UserWarning) of each cell whose training rates (T, n_cells) are all zero: nothing to learn, so its
    model is trained to stay silent, and what explains a silent response is ~0 everywhere."""
    silent = [repr(str(names[j]) if j < len(names) else f"cell{j}") for j in np.flatnonzero(~rates.any(axis=0))]
    if silent:
        warnings.warn(f"{subject} are zero in every frame for cell{'s' if len(silent) > 1 else ''} "
                      f"{', '.join(silent)}: a model learns to keep {'them' if len(silent) > 1 else 'it'} silent, "
                      "and attributions of a silent response are ~0; leave such cells out (cells=)",
                      UserWarning, stacklevel=3)


def _check_training_stimulus(stim: np.ndarray, name: str) -> None:
    """Refuse a constant training stimulus, and a float one far from contrast units (by the rule that warns
    before predicting).

    A constant stimulus (all zero, say) carries nothing to learn a response
    from: the model would fit each cell's mean rate and pass as trained.

    A float stack is taken to be contrast (``norm["units"] == "contrast"``): it
    is used as it is, and a model trained on it expects the same of every float
    stimulus, so a raw 0–255 stack in float64 would make a model that stores its
    mean but never applies it (predictions on its own data warn, the
    experiments' contrast stimuli do not). Integer stacks are raw intensities,
    normalised with statistics the checkpoint stores, and are not checked.
    The rule is :func:`~napari_retina._validate.units_finding`'s with a
    training std of 1 (the model's contrast is the stack's own).
    """
    low, high = float(stim.min()), float(stim.max())
    if low == high:
        raise ValueError(f"{name} is constant (every value is {low:g}), so there is no response to a stimulus to "
                         "learn; train on a stimulus that varies, such as white noise or natural movies")
    finding = units_finding(stim)
    if finding is None:
        return
    kind, mean, std, grey = finding
    found = (f"does not look like contrast units (mean {mean:.3g}, std {std:.3g}; contrast has mean 0 and a std "
             "of about 1)" if kind == "scale" else
             f"looks like intensities, not contrast units (0 = mean luminance): no value is below 0 and {grey:.2%} "
             f"are grey (0 across a whole row or column of a frame) (mean {mean:.3g}, std {std:.3g})")
    raise ValueError(
        f"{name} {found}, and a float training stimulus is used as contrast as it is; z-score it ((x - mean) / std) "
        "or map it to contrast yourself, or give the integer stack, which training normalises with statistics the "
        "checkpoint stores"
    )


def _norm_for(stim: np.ndarray) -> dict:
    """The training stimulus' statistics for the checkpoint, in float64 a chunk at a time (a float64 copy of the
    whole movie and a temporary made training's memory grow by 4× the stimulus)."""
    mean, std = mean_std(stim)
    units = "contrast" if np.issubdtype(stim.dtype, np.floating) else "raw"
    return {"mean": mean, "std": std if std > 0 else 1.0, "units": units}


def _to_model_units(stim: np.ndarray, norm: dict) -> np.ndarray:
    """A raw (integer) stimulus mapped with ``norm`` as :func:`~napari_retina._validate.normalise` maps one for
    a raw-trained checkpoint; a float one as float32 contrast."""
    if norm["units"] == "raw":
        return normalise(stim, norm)
    return np.ascontiguousarray(stim, dtype=np.float32)


def _split_indices(n_frames: int, history: int, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out window indices; the held-out tail starts history-1 frames after
    the last training target, so no stimulus frame is shared between the two."""
    valid = np.arange(history - 1, n_frames)
    n_hold = max(1, int(round(holdout * len(valid))))
    hold = valid[-n_hold:]
    fit = valid[valid < hold[0] - (history - 1)]
    return fit, hold


def _predict_windows(model: RetinaCNN, stim: torch.Tensor, idx: np.ndarray, bs: int) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for chunk in batches(idx, bs):
            out.append(model(gather_windows(stim, chunk, model.config.history).to(model.device)).cpu().numpy())
    return np.concatenate(out)


def _recalibrate_bn(model: RetinaCNN, stim: torch.Tensor, starts: np.ndarray, per_block: int,
                    blocks_per_batch: int, fit_lo: int, fit_hi: int) -> None:
    """Re-estimate every batch norm's running statistics on training windows.

    With momentum 0.01 the running statistics trail weights that change
    quickly, so the eval-mode model is miscalibrated and the held-out loss
    misleading; averaging the batch statistics of a fixed set of training
    batches (cumulative average, then the usual momentum again) fixes that.
    Each batch is ``blocks_per_batch`` runs of ``per_block`` consecutive
    windows ending at ``start .. start + per_block - 1``, clipped to the fit
    range ``fit_lo .. fit_hi`` as a training batch is (:func:`_batch_ends`):
    no window reaches into the held-out tail or past the movie's end.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for group in batches(starts, blocks_per_batch):
            ends = _batch_ends(group, per_block, fit_lo, fit_hi)
            if ends is not None:
                model.from_first_layer(model.first_layer_windows(stim, ends))
    for m, mom in zip(norms, saved):
        m.momentum = mom
    model.eval()


def init_readout(model: RetinaCNN, rates: np.ndarray) -> None:
    """Start the model's output at the firing-rate scale of the data.

    The output is ``softplus(γ·ẑ + β)`` with ``ẑ`` the batch-normalised readout
    (mean 0, sd 1 per cell). With PyTorch's defaults (γ = 1, β = 0) a cell
    firing ~8 spikes per bin needs Adam to move γ and β by several units at
    ~``lr`` per step, which takes far longer than the kernels take to learn
    the features: the first shipped model ended 5× below the data's mean rate
    with a good correlation. So β = softplus⁻¹(mean rate) and γ = the rate's
    signal sd, estimated from spike counts as ``sqrt(max(var − mean, 0.01·mean))``
    (Poisson noise adds the mean to the variance), where softplus is about
    linear. Without output batch norm only the readout bias is set.

    ``rates`` : (T, n_cells) spike counts or rates per 10 ms bin.
    """
    r = np.asarray(rates, dtype=np.float64)
    mean = np.maximum(np.nanmean(r, axis=0), 1e-3)
    signal_var = np.maximum(np.nanvar(r, axis=0) - mean, 0.01 * mean)
    beta = mean + np.log(-np.expm1(-mean))                   # softplus⁻¹(mean), stable for large means
    with torch.no_grad():
        if isinstance(model.bn3, torch.nn.BatchNorm1d):
            model.bn3.bias.copy_(torch.as_tensor(beta, dtype=torch.float32))
            model.bn3.weight.copy_(torch.as_tensor(np.sqrt(signal_var), dtype=torch.float32))
        else:
            model.linear.bias.copy_(torch.as_tensor(beta, dtype=torch.float32))


def _poisson(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.poisson_nll_loss(pred, target, log_input=False, full=False, eps=1e-6)


def train(
    data: TrainingData,
    *,
    config: Optional[ModelConfig] = None,
    epochs: int = DEFAULTS.epochs,
    batch_size: int = DEFAULTS.batch_size,
    blocks_per_batch: int = DEFAULTS.blocks_per_batch,
    lr: float = DEFAULTS.lr,
    l2: float = DEFAULTS.l2,
    l1_linear: float = DEFAULTS.l1_linear,
    patience: int = DEFAULTS.patience,
    lr_patience: int = DEFAULTS.lr_patience,
    holdout: float = DEFAULTS.holdout,
    seed: int = DEFAULTS.seed,
    device: DeviceLike = None,
    cells: Optional[list[int]] = None,
    out: Optional[PathLike] = None,
    progress: Optional[Progress] = None,
    log: Optional[Callable[[dict], None]] = None,
    command: Optional[str] = None,
    init: Optional[Union[RetinaCNN, PathLike]] = None,
    recalibrate: int = DEFAULTS.recalibrate,
) -> RetinaCNN:
    """Fit a BN-CNN to a dataset and return the best model (eval mode).

    The training settings (``epochs`` … ``seed``, ``recalibrate``) are the
    fields of :class:`TrainConfig`, which documents them and holds their
    defaults; a whole configuration is passed as ``**dataclasses.asdict(tc)``.

    Parameters
    ----------
    data : str or Path, nr.io.Dataset, or arrays
        An HDF5 file in the lab layout (see :mod:`napari_retina.io`), a
        :class:`~napari_retina.io.Dataset`, or ``(stimulus, rates)`` /
        ``(stimulus, rates, test_stimulus, test_rates)`` with stimulus (T, H, W)
        and rates (T, n_cells) in spikes per 10 ms bin. A float training stimulus
        is contrast units and used as it is (one far from contrast, by the rule
        that warns before predicting, is refused); an integer one is raw
        intensities, z-scored with statistics stored in ``config.norm``.
    config : ModelConfig, optional
        Architecture (a fresh model starts with its output at the data's
        rate scale, :func:`init_readout`); default the standard one (history 40, channels (8, 8),
        kernels (15, 11), bn "unit") with ``size`` and ``n_cells`` from the data.
        ``config.norm`` is replaced by the training stimulus' statistics.
    epochs, batch_size, blocks_per_batch, lr, l2, l1_linear, patience, lr_patience, holdout, seed, recalibrate
        See :class:`TrainConfig` (validated there).
    device : ``None``/"auto", "cpu", "cuda", "mps".
    cells : train on a subset of cells (indices into the data, each once); the model's cell names are
        the chosen cells' (the file's ``cell_names``, else ``cellN`` with N the index in the data).
    out : optional checkpoint path, written atomically after every improvement.
    progress : ``progress(done_batches, total_batches)``; raise ``nr.Cancelled`` to stop
        (``out`` then holds this run's best checkpoint so far; stopped before the first epoch ended,
        it is left as it was: absent, or an existing file untouched, which is not this run's).
    log : optional callable ``log(dict)`` called after every epoch with its history entry.
    command : the command line or call to record in the provenance (default ``sys.argv``).
    init : a RetinaCNN or checkpoint path to start from (fine-tuning or resuming);
        its config is used (``config`` must then be None).

    Returns
    -------
    RetinaCNN in eval mode with ``.provenance`` (``data_file``: the dataset's
    absolute path, or None for arrays; ``data_sha256``: of the file's bytes, or
    of the arrays; ``init``: ``{"file", "weights_sha256"}`` of the model it started
    from, or None; parameters, seed, epochs, time, torch version, machine) and
    ``.scores`` (held-out tail and test-split Pearson r per cell; a test split
    shorter than the model's history is refused before training, as
    :func:`evaluate` refuses it, and ``(stimulus, rates)`` alone has no test scores).

    Example
    -------
    >>> model = nr.train("wn.h5", epochs=5, out="m.pt")          # doctest: +SKIP
    """
    t0 = time.time()
    for what, call, fn in (("progress", "progress(done, total)", progress), ("log", "log(entry)", log)):
        if fn is not None and not callable(fn):   # before any work, not after the first epoch
            raise TypeError(f"{what} must be a callable {call} or None, got {type(fn).__name__} {fn!r}")
    tc = TrainConfig(epochs=epochs, batch_size=batch_size, blocks_per_batch=blocks_per_batch, lr=lr, l2=l2,
                     l1_linear=l1_linear, patience=patience, lr_patience=lr_patience, holdout=holdout, seed=seed,
                     recalibrate=recalibrate)
    out = _check_out(out, data)
    init_model, config = _start_from(init, config)
    d = _load(data, cells)
    where = f" in {d.path.name}" if d.path else ""
    _check_training_stimulus(d.dataset.train.stimulus, "the training stimulus" + where)
    _warn_of_silent_cells(d.dataset.train.rates, d.dataset.cell_names, "the training rates" + where)
    whose = None if init is None else (f"the init checkpoint {str(init)!r}" if isinstance(init, (str, os.PathLike))
                                       else "the init model")
    config, fit_idx, hold_idx = _prepare(config, d.dataset, tc.holdout, whose)
    dev = resolve_device(device)
    run = _start(config, init_model, d.dataset.train, fit_idx, hold_idx, tc, dev, t0)
    if init_model is not None:   # what a fine-tune or resume started from: the file, and the weights themselves
        run.init = {"file": os.path.abspath(init) if isinstance(init, (str, os.PathLike)) else None,
                    "weights_sha256": weights_sha256(init_model.state_dict())}
    params = tc.provenance_params(dev, cells, command)

    def on_improvement(best: tuple) -> None:
        if out is not None:                    # the best model so far, written atomically
            save_model(_snapshot(run, d, params, best, final=False), out)

    best = _fit(run, tc, progress, log, on_improvement)
    _warn_if_no_better_than_start(run.history, best)
    model = _snapshot(run, d, params, best, final=True)
    if out is not None:
        save_model(model, out)
    return model


def _warn_if_no_better_than_start(history: list[dict], best: tuple) -> None:
    """A UserWarning when the best epoch's held-out loss is above the model's before training (epoch 0).

    The best epoch is returned either way (it is what was trained), but a run
    that made the model worse than where it started, e.g. at too high a
    learning rate, should not pass as a trained model unnoticed.
    """
    start = history[0]["heldout_loss"]
    if np.isfinite(start) and best[0] > start:
        warnings.warn(f"training did not improve on the starting model: the best held-out loss, {best[0]:.4g} "
                      f"(epoch {best[2]}), is above the {start:.4g} before training; lower the learning rate "
                      "or train for more epochs", UserWarning, stacklevel=3)


def _check_out(out: Optional[PathLike], data=None) -> Optional[Path]:
    """The checkpoint path, checked before any work: its folder must exist, and it must be neither a
    folder nor the dataset file ``data`` (when that is a path) the model is trained on."""
    if out is None:
        return None
    out = checkpoint_path(out, "out")  # a folder or another suffix: one sentence, before an epoch
    if not out.parent.exists():
        raise FileNotFoundError(f"cannot save the model: folder {str(out.parent)!r} does not exist")
    if same_file(out, data):
        raise ValueError(f"cannot save the model to {str(out)!r}: it is the training data {str(data)!r}, which the "
                         "checkpoint would replace")
    return out


def _start_from(init, config: Optional[ModelConfig]) -> tuple[Optional[RetinaCNN], Optional[ModelConfig]]:
    """The model to start from (``init``: a RetinaCNN or checkpoint path) and the config to use."""
    if init is None:
        return None, config
    if config is not None:
        raise ValueError("give either config or init, not both: init brings its own config")
    if isinstance(init, RetinaCNN):
        return init, init.config
    init_model = load_model(init, device="cpu")
    return init_model, init_model.config


def _prepare(config: Optional[ModelConfig], ds: Dataset, holdout: float,
             whose: Optional[str] = None) -> tuple[ModelConfig, np.ndarray, np.ndarray]:
    """The architecture for the data (a copy, with the stimulus' norm) and the fit/held-out window ends;
    ``whose`` names where ``config`` came from when not the ``config`` argument (an init checkpoint)."""
    T, H, W = ds.train.stimulus.shape
    if H != W:
        raise ValueError(f"the training stimulus must be square, got {H}x{W} pixels")
    n_cells = ds.train.rates.shape[1]
    if config is None:
        config = ModelConfig(size=H, n_cells=n_cells, cell_names=list(ds.cell_names))
    else:
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        config = copy.deepcopy(config)
        if config.size != H or config.n_cells != n_cells:
            raise ValueError(
                f"{whose or 'config'} expects a {config.size}x{config.size} stimulus and {config.n_cells} cells, "
                f"the data have {H}x{W} and {n_cells}"
            )
        config.cell_names = list(ds.cell_names)
    hist = config.history
    min_frames = hist + (hist - 1) + 2 * math.ceil(1 / holdout)
    if T < min_frames:
        raise ValueError(
            f"the training split has {T} frames; with a {hist}-frame history and a {holdout:.0%} held-out "
            f"tail training needs at least {min_frames}"
        )
    if ds.test is not None:   # before an epoch is spent: the test scores need one full history, as evaluate does
        check_history_frames(ds.test.stimulus.shape[0], hist, TEST_STIMULUS)
    config.norm = _norm_for(ds.train.stimulus)
    fit_idx, hold_idx = _split_indices(T, hist, holdout)
    if len(fit_idx) < 2:
        raise ValueError(f"the training split has too few frames ({T}) to leave windows for fitting")
    return config, fit_idx, hold_idx


@dataclass
class _Run:
    """The state of one training run (what the functions below share)."""

    model: RetinaCNN
    opt: torch.optim.Optimizer
    sched: Any                        # ReduceLROnPlateau
    stim: torch.Tensor                # (T, H, W) training stimulus in model units, CPU
    stim_dev: torch.Tensor            # the same on the training device
    rates_dev: torch.Tensor           # (T, n_cells) spikes per bin, on the device
    hold_idx: np.ndarray              # held-out window end frames
    hold_target: np.ndarray           # (n_hold, n_cells) their rates
    fit_lo: int                       # first and last fit window end frame
    fit_hi: int
    per_block: int                    # consecutive windows per block
    gen: torch.Generator              # shuffling
    calib_starts: np.ndarray          # block starts for re-estimating the batch norms
    t0: float                         # time.time() at the start, for "seconds"
    history: list = field(default_factory=list)   # one dict per epoch (epoch 0: before training)
    init: Optional[dict] = None       # the model training started from (provenance["init"]), or None


def _start(config: ModelConfig, init_model: Optional[RetinaCNN], train_split: Split, fit_idx: np.ndarray,
           hold_idx: np.ndarray, tc: TrainConfig, dev: torch.device, t0: float) -> _Run:
    """Seed, build the model and optimiser, draw the calibration batches, score epoch 0.

    The order of the random draws (torch's global RNG: initialisation, then
    training noise; ``gen``: shuffling; ``seed + 1``: calibration batches) is
    part of what a seed reproduces.
    """
    torch.manual_seed(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)
    model = RetinaCNN(config)
    if init_model is not None:
        model.load_state_dict({k: v.detach().cpu() for k, v in init_model.state_dict().items()})
    else:
        init_readout(model, train_split.rates[fit_idx])
    model = model.to(dev)
    stim = torch.from_numpy(_to_model_units(train_split.stimulus, config.norm))
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    # torch halves after more than ``patience`` bad epochs; lr_patience counts them as early stopping does
    # (_fit: an improvement is a held-out loss below the best by more than IMPROVEMENT)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=tc.lr_patience - 1,
                                                       threshold=IMPROVEMENT, threshold_mode="abs")
    per_block = max(1, tc.batch_size // tc.blocks_per_batch)
    fit_lo, fit_hi = int(fit_idx[0]), int(fit_idx[-1])
    run = _Run(model, opt, sched, stim, stim.to(dev), torch.from_numpy(train_split.rates).to(dev), hold_idx,
               train_split.rates[hold_idx], fit_lo, fit_hi, per_block, gen,
               _calibration_starts(fit_lo, fit_hi, per_block, tc), t0)
    run.history.append(_heldout_entry(run, tc, epoch=0, train_loss=None, lr=tc.lr))
    return run


def _calibration_starts(fit_lo: int, fit_hi: int, per_block: int, tc: TrainConfig) -> np.ndarray:
    """Block starts (frames) of the fixed training batches that re-estimate the batch norms, drawn once.

    Every block of ``per_block`` windows from a start lies inside the fit range
    ``fit_lo .. fit_hi``. A block as long as the range or longer (a batch size
    larger than the training part; training clips such blocks to the range)
    is the range itself, once: one start, ``fit_lo``.
    """
    n_fit = fit_hi - fit_lo + 1
    if not tc.recalibrate:
        return np.zeros(0, int)
    if per_block >= n_fit:
        return np.array([fit_lo])
    n_calib = min(tc.recalibrate, max(1, (n_fit - per_block) // per_block))
    calib_gen = torch.Generator().manual_seed(tc.seed + 1)
    return fit_lo + torch.randint(0, n_fit - per_block + 1, (n_calib * tc.blocks_per_batch,),
                                  generator=calib_gen).numpy()


def _fit(run: _Run, tc: TrainConfig, progress: Optional[Progress], log: Optional[Callable[[dict], None]],
         on_improvement: Callable[[tuple], None]) -> tuple:
    """Epochs until ``tc.epochs`` or ``tc.patience`` epochs without improvement (early stopping).

    Returns the best ``(heldout_loss, state_dict, epoch)`` and calls
    ``on_improvement(best)`` after every improvement; ``progress`` counts
    batches, ``log`` gets each epoch's history entry. An epoch whose weights
    or buffers are not all finite (a batch-norm variance can overflow while
    the held-out loss stays finite) counts as a diverged one: never the best,
    an epoch without improvement for early stopping and the learning rate.
    """
    n_fit = run.fit_hi - run.fit_lo + 1
    # an epoch's grid shifted by up to per_block - 1 windows can hold one block, and so one batch, more than
    # n_fit / per_block: progress counts that many per epoch (it went past its total, 89 of 88), each epoch's
    # count ends at its share, and an early stop reports the total
    per_epoch = math.ceil(math.ceil((n_fit + run.per_block - 1) / run.per_block) / tc.blocks_per_batch)
    total = tc.epochs * per_epoch
    done = 0
    report(progress, 0, total)
    best = (math.inf, None, -1)
    bad_epochs = 0
    unusable = None                    # (epoch, why) of the last epoch whose weights were not all finite
    for epoch in range(1, tc.epochs + 1):
        train_loss, done = _epoch(run, tc, progress, done, total)
        if done < epoch * per_epoch:
            done = epoch * per_epoch
            report(progress, done, total)
        if tc.recalibrate:
            _recalibrate_bn(run.model, run.stim_dev, run.calib_starts, run.per_block, tc.blocks_per_batch,
                            run.fit_lo, run.fit_hi)
        entry = _heldout_entry(run, tc, epoch, train_loss, run.opt.param_groups[0]["lr"])
        run.history.append(entry)
        if log is not None:
            log(entry)
        why = unusable_weights(run.model.state_dict())
        if why is not None:
            unusable = (epoch, why)
        score = entry["heldout_loss"] if why is None else math.inf
        run.sched.step(score)
        if score < best[0] - IMPROVEMENT:
            best, bad_epochs = (score, copy.deepcopy(run.model.state_dict()), epoch), 0
            on_improvement(best)
        else:
            bad_epochs += 1
            if bad_epochs >= tc.patience:
                break
    if best[1] is None:
        if unusable is None:
            raise ValueError(
                f"training diverged: the held-out loss was {run.history[-1]['heldout_loss']} in every epoch "
                f"(lr {tc.lr}); lower the learning rate or check the data for extreme values"
            )
        raise ValueError(
            f"training diverged (lr {tc.lr}): no epoch ended with finite weights and a finite held-out loss; after "
            f"epoch {unusable[0]}, {unusable[1]}; lower the learning rate or check the data for extreme values"
        )
    if done < total:   # stopped early: the training is done
        report(progress, total, total)
    return best


def _epoch(run: _Run, tc: TrainConfig, progress: Optional[Progress], done: int, total: int) -> tuple[float, int]:
    """One pass over the fit windows; returns the mean training Poisson loss and the batches done so far.

    Batches are made of blocks of consecutive windows (conv1 by FFT, frames
    shared); each epoch the block grid is shifted by a random offset and the
    blocks are shuffled.
    """
    model = run.model
    model.train()
    offset = int(torch.randint(0, run.per_block, (1,), generator=run.gen))
    starts = np.arange(run.fit_lo - offset, run.fit_hi + 1, run.per_block)
    starts = starts[torch.randperm(len(starts), generator=run.gen).numpy()]
    running, seen = 0.0, 0
    for group in batches(starts, tc.blocks_per_batch):
        idx = _batch_ends(group, run.per_block, run.fit_lo, run.fit_hi)
        if idx is None:
            continue
        z = model.first_layer_windows(run.stim_dev, idx)
        y = run.rates_dev[torch.from_numpy(idx).to(run.rates_dev.device)]
        loss = _poisson(model.from_first_layer(z), y)
        run.opt.zero_grad(set_to_none=True)
        (loss + weight_penalty(model, tc.l2, tc.l1_linear)).backward()
        run.opt.step()
        running += float(loss.detach()) * len(idx)
        seen += len(idx)
        done += 1
        report(progress, done, total)
    return running / max(seen, 1), done


def weight_penalty(model: RetinaCNN, l2: float, l1_linear: float) -> torch.Tensor:
    """The recipe's regularisation, a scalar added to the mean Poisson loss.

    ``l2`` times the sum of squared conv1 and conv2 kernel weights, plus ``l1_linear`` times the sum
    of absolute readout weights (:class:`TrainConfig`'s ``l2`` and ``l1_linear``).
    """
    reg = l2 * (model.conv1.weight.pow(2).sum() + model.conv2.weight.pow(2).sum())
    if l1_linear:
        reg = reg + l1_linear * model.linear.weight.abs().sum()
    return reg


def _batch_ends(group: np.ndarray, per_block: int, fit_lo: int, fit_hi: int) -> Optional[np.ndarray]:
    """Window end frames of one batch: the blocks starting at ``group``, clipped to the fit range.

    Blocks cut short by the range's ends are dropped when longer ones remain
    (equal runs per batch); None when the batch would hold fewer than two
    windows (batch norm needs two samples).
    """
    ends = [np.arange(max(a, fit_lo), min(a + per_block, fit_hi + 1)) for a in group]
    ends = [e for e in ends if len(e)]
    n_win = max(len(e) for e in ends)
    ends = [e for e in ends if len(e) == n_win] if len(ends) > 1 else ends
    if n_win * len(ends) < 2:
        return None
    return np.concatenate(ends)


def _heldout_entry(run: _Run, tc: TrainConfig, epoch: int, train_loss: Optional[float], lr: float) -> dict:
    """The history entry of an epoch: held-out Poisson loss and mean Pearson r (eval mode)."""
    pred = _predict_windows(run.model, run.stim, run.hold_idx, max(tc.batch_size, 256))
    return {"epoch": epoch, "train_loss": train_loss,
            "heldout_loss": float(_poisson(torch.from_numpy(pred), torch.from_numpy(run.hold_target))),
            "heldout_r_mean": finite_mean(pearson(pred, run.hold_target)), "lr": lr,
            "seconds": time.time() - run.t0}


def _snapshot(run: _Run, d: _Data, params: dict, best: tuple, final: bool) -> RetinaCNN:
    """A copy of the best model with provenance and scores (test-split scores when ``final``).

    Building the copy draws the fresh model's initialisation from torch's
    global RNG; mid-run (``out=``) that shifts the training noise of the
    epochs that follow. Kept: it is part of what a seed has reproduced so far
    (the shipped model, docs/MODEL.md, was trained with ``--out``).
    """
    config = run.model.config
    result = RetinaCNN(copy.deepcopy(config)).to(run.model.device)
    result.load_state_dict(best[1])
    result.eval()
    hold_r = pearson(_predict_windows(result, run.stim, run.hold_idx, 256), run.hold_target)
    result.provenance = _provenance(run, d, params, best, final)
    scores: dict[str, Any] = {
        "heldout_loss": best[0],
        "heldout_r": [float(v) for v in hold_r],
        "heldout_r_mean": finite_mean(hold_r),
    }
    ds = d.dataset
    if final and ds.test is not None:
        ev = _evaluate(result, ds, d.true_test)
        scores.update({f"test_{k}": v for k, v in ev.items() if k != "cell_names"})
    result.scores = scores
    return result


def _provenance(run: _Run, d: _Data, params: dict, best: tuple, final: bool) -> dict:
    """What a checkpoint records about how it was made (JSON-able)."""
    ds = d.dataset
    dev = run.model.device
    return {
        "trained_by": "napari_retina.training.train",
        "data_file": os.path.abspath(d.path) if d.path else None,
        "data_sha256": d.sha256,       # of the file's bytes, or of the arrays (_arrays_sha256)
        "init": run.init,
        "data_attrs": {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in ds.attrs.items()},
        "train_frames": int(ds.train.stimulus.shape[0]),
        "fit_windows": int(run.fit_hi - run.fit_lo + 1),
        "heldout_windows": int(len(run.hold_idx)),
        "params": params,
        "seed": params["seed"],
        "epochs_run": len(run.history) - 1,
        "best_epoch": best[2],
        "history": run.history,
        "seconds": round(time.time() - run.t0, 1),
        "finished": final,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": f"{socket.gethostname()} {platform.platform()} {platform.processor() or platform.machine()}, "
                   f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
                   + (f", {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else ""),
    }


def _mean_ratio(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per cell, mean predicted rate over mean target rate (1 = calibrated), (n_cells,); NaN for a silent cell."""
    return ratio_of_means(pred, target)


def _reliability(repeats: np.ndarray, start: int) -> list[float]:
    """Split-half reliability per cell: r between the mean of even and odd repeats."""
    out = []
    for reps in repeats:
        if reps.shape[0] < 2:
            out.append(float("nan"))
            continue
        a, b = reps[0::2, start:].mean(0), reps[1::2, start:].mean(0)
        out.append(pearson(a, b))
    return out


def _warn_undefined_r(r: np.ndarray, pred: np.ndarray, rates: np.ndarray, names: list) -> None:
    """One sentence for the cells whose r is NaN because the recorded or the predicted rate is constant."""
    import warnings

    why = {"recorded": [], "predicted": []}
    for j in np.flatnonzero(~np.isfinite(r)):
        if np.ptp(rates[:, j]) == 0:
            why["recorded"].append(names[j])
        elif np.ptp(pred[:, j]) == 0:
            why["predicted"].append(names[j])
    parts = [f"the {k} test rate is constant for {', '.join(v)}" for k, v in why.items() if v]
    if parts:
        every = "every cell, so r_mean is NaN" if np.isnan(r).all() else "those cells"
        warnings.warn(f"Pearson r is undefined (NaN) for {every}: {' and '.join(parts)} over the "
                      f"{len(rates)} scored frames", UserWarning, stacklevel=4)


def _evaluate(model: RetinaCNN, ds: Dataset, true_test: Optional[np.ndarray]) -> dict:
    from ._predict import predict

    test = ds.test
    pred = predict(model, test.stimulus)
    start = model.config.history - 1
    r = pearson(pred[start:], test.rates[start:])
    _warn_undefined_r(r, pred[start:], test.rates[start:], list(model.config.cell_names))
    out: dict[str, Any] = {
        "cell_names": list(model.config.cell_names),
        "r": [float(v) for v in r],
        "r_mean": finite_mean(r),
        "mean_ratio": [float(v) for v in _mean_ratio(pred[start:], test.rates[start:])],
        "frames": int(test.stimulus.shape[0] - start),
    }
    if true_test is not None:
        rt = pearson(pred[start:], true_test[start:])
        out["r_true"] = [float(v) for v in rt]
        out["r_true_mean"] = finite_mean(rt)
        ev = explained_variance(true_test[start:], pred[start:])
        out["ev_true"] = [float(v) for v in ev]
        out["ev_true_mean"] = finite_mean(ev)
        rd = pearson(test.rates[start:], true_test[start:])
        out["r_data_vs_true"] = [float(v) for v in rd]
    if test.repeats is not None:
        rel = _reliability(test.repeats, start)
        out["repeats"] = int(test.repeats.shape[1])
        out["reliability_split_half"] = rel
        out["reliability_split_half_mean"] = finite_mean(rel)
    return out


def evaluate(model: RetinaCNN, data: TrainingData, cells: Optional[list[int]] = None) -> dict:
    """Score ``model`` on a dataset's test split.

    Parameters
    ----------
    model : RetinaCNN (e.g. ``nr.load_model()``).
    data : HDF5 path in the lab layout (only its ``test/...`` datasets are read: a file
        without a train split scores too), an nr.io.Dataset, or ``(stimulus, rates)``
        arrays used as the test split (stimulus (T, H, W), rates (T, n_cells)).
    cells : the data's cells (indices, each once) that the model's outputs correspond to, in
        order (default all), for arrays as for files. When the data name their cells (a file's
        ``cell_names`` attribute, a Dataset's ``cell_names``) and the model's cell names are
        among them, cells named otherwise than the model's outputs are refused.

    Returns
    -------
    dict with ``r`` (per-cell Pearson r between predicted and recorded test
    rates, frames with a full history), ``r_mean``, ``mean_ratio`` (per cell, mean
    predicted over mean recorded rate: 1 = calibrated, which r cannot see; NaN
    for a cell that never fired), ``frames``, ``cell_names``; with synthetic data (``test/true_rates`` in the
    file) also ``r_true``, ``r_true_mean`` (against the true rates), ``ev_true``,
    ``ev_true_mean`` (explained variance of the true rates,
    ``1 − var(pred − true)/var(true)``) and ``r_data_vs_true``; with
    repeats ``reliability_split_half`` per cell (r between the means of even
    and odd repeats). A cell whose recorded (or predicted) test rate is constant
    has no r (NaN, one warning names it); the ``*_mean`` values average the
    cells that have one, NaN when none has.

    Example
    -------
    >>> nr.evaluate(nr.load_model(), "wn.h5")["r_true_mean"]     # doctest: +SKIP
    """
    if not isinstance(model, RetinaCNN):
        raise TypeError(f"model must be a RetinaCNN (see nr.load_model), got {type(model).__name__}")
    where, all_names = "the data", None          # all_names: the data's own names for all their cells, if any
    if isinstance(data, (tuple, list)) and len(data) == 2:
        split = _as_split(tuple(data), "test", 3)         # here, evaluate, its caller
        if cells is not None:
            picked = check_cell_subset(cells, split.rates.shape[1], "the data have")
            split = Split(split.stimulus, np.ascontiguousarray(split.rates[:, picked]), None)
        d = _Data(Dataset(split, split, [], {}), None, None, None)
    elif isinstance(data, (str, os.PathLike)):  # the test split alone: a file without a train split scores too
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"no dataset at {str(path)!r}")
        split = read_split(path, "test", cells=cells)
        where, all_names = path.name, read_cell_names(path)
        d = _Data(Dataset(split, split, _pick(all_names, cells) if all_names else [], {}), path, None,
                  _read_true_rates(path, cells, split.stimulus.shape[0]))
    else:
        d = _load(data, cells)               # picks a Dataset's names as it picks the rates, checked there
        if isinstance(data, Dataset) and data.cell_names is not None:
            all_names = list(data.cell_names) or None
    ds = d.dataset
    if ds.test.rates.shape[1] != model.config.n_cells:
        raise ValueError(f"the model has {model.config.n_cells} cells but the data have {ds.test.rates.shape[1]}")
    check_history_frames(ds.test.stimulus.shape[0], model.config.history, TEST_STIMULUS)
    if all_names:
        _check_same_cells(model, list(ds.cell_names), all_names, cells, where)
    return _evaluate(model, ds, d.true_test)


def _pick(names: list, cells: Optional[list[int]]) -> list:
    return list(names) if cells is None else [names[c] for c in check_cell_subset(cells, len(names), "the data have")]


def _check_same_cells(model: RetinaCNN, chosen: list, all_names: list, cells: Optional[list[int]],
                      where: str) -> None:
    """Refuse scoring the model's outputs against other cells, when the data's names show it.

    Detectable when the data name their cells and every one of the model's
    cell names is among them: then the chosen cells must be those, in the
    model's order. Data without names, or named otherwise (another recording,
    an untrained model's cell0...), cannot be checked.
    """
    mine = list(model.config.cell_names)
    if chosen == mine or not set(mine) <= set(all_names):
        return
    right = [list(all_names).index(n) for n in mine]
    raise ValueError(
        f"the cells chosen in {where} ({'all' if cells is None else 'cells=' + str(list(cells))}) are named "
        f"{chosen} but the model's outputs are {mine}, which are cells={right} there; pass cells={right} so each "
        "output is scored against its own cell"
    )
