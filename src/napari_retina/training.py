"""Training and evaluating a :class:`~napari_retina.model.RetinaCNN` (METHOD.md §1).

:func:`train` fits the BN-CNN to a dataset in the lab's HDF5 layout (or to
arrays) with a Poisson loss, Adam, L2 on the conv kernels, reduce-on-plateau
and early stopping on a held-out tail in time (the last 5% of the training
frames, not a random split: neighbouring frames share history). The best
model (lowest held-out loss) is returned and, with ``out=``, saved atomically
after every improvement, so an interrupted run leaves either no file or a
complete checkpoint. :func:`evaluate` scores a model on a dataset's test
split (per-cell Pearson r against the recorded rates, and against the true
rates for synthetic data).

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
import math
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch.nn import functional as F

from ._device import DeviceLike, resolve_device
from ._frames import batches, gather_windows
from ._progress import Progress, report
from ._validate import as_stack, check_int, check_positive
from .io import Dataset, Split, read_dataset
from .model import ModelConfig, RetinaCNN

PathLike = Union[str, os.PathLike]

#: fraction of the training frames held out at the end for early stopping
HOLDOUT = 0.05
#: HDF5 key (cells, T) of the true test rates written by nr.synthetic.make_dataset
TRUE_RATES_KEY = "test/true_rates"


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


def _read_true_rates(path: Path, cells: Optional[list[int]], n_frames: int) -> Optional[np.ndarray]:
    import h5py

    with h5py.File(path, "r") as h5:
        if TRUE_RATES_KEY not in h5:
            return None
        true = np.asarray(h5[TRUE_RATES_KEY][()], dtype=np.float32)
    if true.ndim != 2 or true.shape[1] != n_frames:
        raise ValueError(f"{TRUE_RATES_KEY} in {path.name} must be (cells, {n_frames}), got shape {true.shape}")
    if cells is not None:
        true = true[cells]
    return np.ascontiguousarray(true.T)


def _check_rates(rates, n_frames: int, name: str) -> np.ndarray:
    try:
        arr = np.asarray(rates, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a (T, n_cells) array of numbers, got {type(rates).__name__}") from exc
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (T, n_cells), got shape {arr.shape}")
    if arr.shape[0] != n_frames:
        raise ValueError(f"the stimulus has {n_frames} frames but {name} has {arr.shape[0]} time bins")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite rates")
    if (arr < 0).any():
        raise ValueError(f"{name} holds negative rates (min {arr.min():g}); rates must be >= 0")
    return arr.astype(np.float32)


def _as_split(value, name: str) -> Split:
    if isinstance(value, Split):
        stim, rates, reps = value.stimulus, value.rates, value.repeats
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        stim, rates = value
        reps = None
    else:
        raise TypeError(f"{name} must be a Split or a (stimulus, rates) pair, got {type(value).__name__}")
    stim = as_stack(stim, f"{name} stimulus")
    return Split(stim, _check_rates(rates, stim.shape[0], f"{name} rates"), reps)


def _load(data, cells: Optional[list[int]]) -> _Data:
    """A dataset from an HDF5 path, a Dataset, or (stimulus, rates[, test_stimulus, test_rates])."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"no dataset at {str(path)!r}")
        ds = read_dataset(path, cells=cells)
        return _Data(ds, path, _sha256(path), _read_true_rates(path, cells, ds.test.stimulus.shape[0]))
    if isinstance(data, Dataset):
        ds = Dataset(_as_split(data.train, "train"), _as_split(data.test, "test"), list(data.cell_names),
                     dict(data.attrs))
    elif isinstance(data, (tuple, list)) and len(data) in (2, 4):
        train = _as_split(tuple(data[:2]), "train")
        test = _as_split(tuple(data[2:]), "test") if len(data) == 4 else None
        ds = Dataset(train, test, [], {})
    else:
        raise TypeError(
            "data must be an HDF5 path in the lab layout, an nr.io.Dataset, or arrays "
            f"(stimulus, rates[, test_stimulus, test_rates]), got {type(data).__name__}"
        )
    n = ds.train.rates.shape[1]
    if ds.test is not None and ds.test.rates.shape[1] != n:
        raise ValueError(f"train has {n} cells but test has {ds.test.rates.shape[1]}")
    if cells is not None:
        bad = [c for c in cells if not (isinstance(c, (int, np.integer)) and 0 <= c < n)]
        if bad:
            raise ValueError(f"cells {bad} do not exist: the data have {n} cells (0..{n - 1})")
        sel = lambda s: None if s is None else Split(s.stimulus, s.rates[:, cells],  # noqa: E731
                                                       None if s.repeats is None else s.repeats[cells])
        ds = Dataset(sel(ds.train), sel(ds.test), [ds.cell_names[c] for c in cells] if ds.cell_names else [], ds.attrs)
    if not ds.cell_names:
        ds.cell_names = [f"cell{i}" for i in range(ds.train.rates.shape[1])]
    return _Data(ds, None, None, None)


def _norm_for(stim: np.ndarray) -> dict:
    x = stim.astype(np.float64)
    mean, std = float(x.mean()), float(x.std())
    units = "contrast" if np.issubdtype(stim.dtype, np.floating) else "raw"
    return {"mean": mean, "std": std if std > 0 else 1.0, "units": units}


def _to_model_units(stim: np.ndarray, norm: dict) -> np.ndarray:
    if norm["units"] == "raw":
        return ((stim.astype(np.float64) - norm["mean"]) / norm["std"]).astype(np.float32)
    return np.ascontiguousarray(stim, dtype=np.float32)


def _split_indices(n_frames: int, history: int, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out window indices; the held-out tail starts history-1 frames after
    the last training target, so no stimulus frame is shared between the two."""
    valid = np.arange(history - 1, n_frames)
    n_hold = max(1, int(round(holdout * len(valid))))
    hold = valid[-n_hold:]
    fit = valid[valid < hold[0] - (history - 1)]
    return fit, hold


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-column Pearson r of (T, n) arrays (float64); NaN where a column is constant."""
    a = a.astype(np.float64) - a.mean(0)
    b = b.astype(np.float64) - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / den, np.nan)


def _predict_windows(model: RetinaCNN, stim: torch.Tensor, idx: np.ndarray, bs: int) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for chunk in batches(idx, bs):
            out.append(model(gather_windows(stim, chunk, model.config.history).to(model.device)).cpu().numpy())
    return np.concatenate(out)


def _recalibrate_bn(model: RetinaCNN, stim: torch.Tensor, starts: np.ndarray, per_block: int,
                    blocks_per_batch: int) -> None:
    """Re-estimate every batch norm's running statistics on training windows.

    With momentum 0.01 the running statistics trail weights that change
    quickly, so the eval-mode model is miscalibrated and the held-out loss
    misleading; averaging the batch statistics of a fixed set of training
    batches (cumulative average, then the usual momentum again) fixes that.
    Each batch is ``blocks_per_batch`` runs of ``per_block`` consecutive
    windows ending at ``start .. start + per_block - 1``.
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
            ends = np.concatenate([np.arange(a, a + per_block) for a in group])
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
    data,
    *,
    config: Optional[ModelConfig] = None,
    epochs: int = 10,
    batch_size: int = 128,
    blocks_per_batch: int = 4,
    lr: float = 2e-3,
    l2: float = 1e-3,
    l1_linear: float = 0.0,
    patience: int = 3,
    lr_patience: int = 1,
    holdout: float = HOLDOUT,
    seed: int = 0,
    device: DeviceLike = None,
    cells: Optional[list[int]] = None,
    out: Optional[PathLike] = None,
    progress: Optional[Progress] = None,
    log=None,
    command: Optional[str] = None,
    init: Optional[Union[RetinaCNN, PathLike]] = None,
    recalibrate: int = 8,
) -> RetinaCNN:
    """Fit a BN-CNN to a dataset and return the best model (eval mode).

    Parameters
    ----------
    data : str or Path, nr.io.Dataset, or arrays
        An HDF5 file in the lab layout (see :mod:`napari_retina.io`), a
        :class:`~napari_retina.io.Dataset`, or ``(stimulus, rates)`` /
        ``(stimulus, rates, test_stimulus, test_rates)`` with stimulus (T, H, W)
        and rates (T, n_cells) in spikes per 10 ms bin.
    config : ModelConfig, optional
        Architecture (a fresh model starts with its output at the data's
        rate scale, :func:`init_readout`); default the standard one (history 40, channels (8, 8),
        kernels (15, 11), bn "unit") with ``size`` and ``n_cells`` from the data.
        ``config.norm`` is replaced by the training stimulus' statistics.
    epochs : maximum passes over the training windows.
    batch_size, lr : Adam mini-batch size (windows) and learning rate.
    blocks_per_batch : a batch is made of this many runs of consecutive windows taken at
        random places (conv1 is computed by FFT, each frame of a run transformed once: :meth:`RetinaCNN.first_layer_windows`).
    l2 : L2 penalty on the conv1 and conv2 kernels (added to the mean Poisson loss).
    l1_linear : L1 penalty on the readout weights.
    patience : epochs without held-out improvement before stopping early.
    lr_patience : epochs without improvement before the learning rate is halved.
    holdout : fraction of the training frames held out at the end (default 5%).
    seed : seeds initialisation, shuffling and training noise (reproducible on one device).
    device : ``None``/"auto", "cpu", "cuda", "mps".
    cells : train on a subset of cells (indices).
    out : optional checkpoint path, written atomically after every improvement.
    progress : ``progress(done_batches, total_batches)``; raise ``nr.Cancelled`` to stop
        (``out`` then holds the best checkpoint so far, or nothing).
    log : optional callable ``log(dict)`` called after every epoch.
    command : the command line or call to record in the provenance.
    init : a RetinaCNN or checkpoint path to start from (fine-tuning or resuming);
        its config is used (``config`` must then be None).
    recalibrate : before each held-out evaluation, re-estimate the batch-norm running
        statistics on this many fixed training batches (0: keep the running averages).

    Returns
    -------
    RetinaCNN in eval mode with ``.provenance`` (data file, sha256, parameters,
    seed, epochs, time, torch version, machine) and ``.scores`` (held-out tail
    and test-split Pearson r per cell).

    Example
    -------
    >>> model = nr.train("wn.h5", epochs=5, out="m.pt")          # doctest: +SKIP
    """
    t0 = time.time()
    epochs = check_int(epochs, "epochs", 1)
    batch_size = check_int(batch_size, "batch_size", 2)
    blocks_per_batch = check_int(blocks_per_batch, "blocks_per_batch", 1)
    recalibrate = check_int(recalibrate, "recalibrate", 0)
    lr = check_positive(lr, "lr")
    patience = check_int(patience, "patience", 1)
    lr_patience = check_int(lr_patience, "lr_patience", 0)
    seed = check_int(seed, "seed", 0)
    if not isinstance(holdout, (int, float)) or not 0 < holdout < 0.5:
        raise ValueError(f"holdout must be a fraction in (0, 0.5), got {holdout!r}")
    for name, value in (("l2", l2), ("l1_linear", l1_linear)):
        if not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if out is not None:
        out = Path(out)
        if not out.parent.exists():
            raise FileNotFoundError(f"cannot save the model: folder {str(out.parent)!r} does not exist")

    init_model = None
    if init is not None:
        if config is not None:
            raise ValueError("give either config or init, not both: init brings its own config")
        if isinstance(init, RetinaCNN):
            init_model = init
        else:
            from .checkpoint import load_model

            init_model = load_model(init, device="cpu")
        config = init_model.config
    d = _load(data, cells)
    ds = d.dataset
    stim_np, rates_np = ds.train.stimulus, ds.train.rates
    T, H, W = stim_np.shape
    if H != W:
        raise ValueError(f"the training stimulus must be square, got {H}x{W} pixels")
    n_cells = rates_np.shape[1]
    if config is None:
        config = ModelConfig(size=H, n_cells=n_cells, cell_names=list(ds.cell_names))
    else:
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        config = copy.deepcopy(config)
        if config.size != H or config.n_cells != n_cells:
            raise ValueError(
                f"config expects a {config.size}x{config.size} stimulus and {config.n_cells} cells, "
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
    config.norm = _norm_for(stim_np)
    fit_idx, hold_idx = _split_indices(T, hist, holdout)
    if len(fit_idx) < 2:
        raise ValueError(f"the training split has too few frames ({T}) to leave windows for fitting")

    dev = resolve_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = RetinaCNN(config)
    if init_model is not None:
        model.load_state_dict({k: v.detach().cpu() for k, v in init_model.state_dict().items()})
    else:
        init_readout(model, rates_np[fit_idx])
    model = model.to(dev)
    stim = torch.from_numpy(_to_model_units(stim_np, config.norm))
    rates = torch.from_numpy(rates_np)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=lr_patience)

    # batches are made of blocks of consecutive windows (conv1 by FFT, frames shared); each epoch
    # the block grid is shifted by a random offset and the blocks are shuffled
    per_block = max(1, batch_size // blocks_per_batch)
    fit_lo, fit_hi = int(fit_idx[0]), int(fit_idx[-1])                 # window end frames
    n_fit = fit_hi - fit_lo + 1
    n_batches = math.ceil(n_fit / (per_block * blocks_per_batch))
    total = epochs * n_batches
    done = 0
    report(progress, 0, total)
    best = (math.inf, None, -1)
    history: list[dict] = []
    bad_epochs = 0
    hold_target = rates_np[hold_idx]
    stim_dev = stim.to(dev)
    rates_dev = rates.to(dev)
    # a fixed set of training batches (drawn once) for re-estimating the batch-norm statistics
    calib_gen = torch.Generator().manual_seed(seed + 1)
    n_calib = min(recalibrate, max(1, (n_fit - per_block) // per_block)) if recalibrate else 0
    calib_starts = (fit_lo + torch.randint(0, max(1, n_fit - per_block + 1), (n_calib * blocks_per_batch,),
                                           generator=calib_gen).numpy()) if n_calib else np.zeros(0, int)
    pred0 = _predict_windows(model, stim, hold_idx, max(batch_size, 256))
    history.append({"epoch": 0, "train_loss": None,
                    "heldout_loss": float(_poisson(torch.from_numpy(pred0), torch.from_numpy(hold_target))),
                    "heldout_r_mean": float(np.nanmean(_pearson(pred0, hold_target))), "lr": lr,
                    "seconds": time.time() - t0})
    for epoch in range(epochs):
        model.train()
        offset = int(torch.randint(0, per_block, (1,), generator=gen))
        starts = np.arange(fit_lo - offset, fit_hi + 1, per_block)
        starts = starts[torch.randperm(len(starts), generator=gen).numpy()]
        running, seen = 0.0, 0
        for group in batches(starts, blocks_per_batch):
            ends = [np.arange(max(a, fit_lo), min(a + per_block, fit_hi + 1)) for a in group]
            ends = [e for e in ends if len(e)]
            n_win = max(len(e) for e in ends)
            ends = [e for e in ends if len(e) == n_win] if len(ends) > 1 else ends
            if n_win * len(ends) < 2:  # batch norm needs two samples
                continue
            idx = np.concatenate(ends)
            z = model.first_layer_windows(stim_dev, idx)
            y = rates_dev[torch.from_numpy(idx).to(dev)]
            loss = _poisson(model.from_first_layer(z), y)
            reg = l2 * (model.conv1.weight.pow(2).sum() + model.conv2.weight.pow(2).sum())
            if l1_linear:
                reg = reg + l1_linear * model.linear.weight.abs().sum()
            opt.zero_grad(set_to_none=True)
            (loss + reg).backward()
            opt.step()
            running += float(loss.detach()) * len(idx)
            seen += len(idx)
            done += 1
            report(progress, done, total)
        if recalibrate:
            _recalibrate_bn(model, stim_dev, calib_starts, per_block, blocks_per_batch)
        pred = _predict_windows(model, stim, hold_idx, max(batch_size, 256))
        hold_loss = float(_poisson(torch.from_numpy(pred), torch.from_numpy(hold_target)))
        hold_r = _pearson(pred, hold_target)
        entry = {"epoch": epoch + 1, "train_loss": running / max(seen, 1), "heldout_loss": hold_loss,
                 "heldout_r_mean": float(np.nanmean(hold_r)), "lr": opt.param_groups[0]["lr"],
                 "seconds": time.time() - t0}
        history.append(entry)
        if log is not None:
            log(entry)
        sched.step(hold_loss)
        if hold_loss < best[0] - 1e-6:
            best = (hold_loss, copy.deepcopy(model.state_dict()), epoch + 1)
            bad_epochs = 0
            if out is not None:
                snap = _finish(model, d, config, history, best, t0, dict(locals_for_provenance(
                    epochs, (batch_size, blocks_per_batch), lr, l2, l1_linear, patience, lr_patience, holdout, seed, dev, cells, command, recalibrate)),
                    final=False)
                from .checkpoint import save_model

                save_model(snap, out)
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                break
    params = locals_for_provenance(epochs, (batch_size, blocks_per_batch), lr, l2, l1_linear, patience, lr_patience,
                                   holdout, seed, dev, cells, command, recalibrate)
    model = _finish(model, d, config, history, best, t0, params, final=True)
    if out is not None:
        from .checkpoint import save_model

        save_model(model, out)
    return model


def locals_for_provenance(epochs, batch_size, lr, l2, l1_linear, patience, lr_patience, holdout, seed, dev, cells,
                          command, recalibrate=0) -> dict:
    return {
        "epochs_max": epochs, "batch_size": batch_size[0], "blocks_per_batch": batch_size[1], "lr": lr, "l2": l2, "l1_linear": l1_linear,
        "patience": patience, "lr_patience": lr_patience, "holdout": holdout, "seed": seed,
        "device": str(dev), "cells": cells, "recalibrate_batches": recalibrate, "command": command or " ".join(sys.argv),
    }


def _finish(model: RetinaCNN, d: _Data, config: ModelConfig, history: list, best: tuple, t0: float,
            params: dict, final: bool) -> RetinaCNN:
    """A copy of the best model with provenance and scores."""
    result = RetinaCNN(copy.deepcopy(config)).to(model.device)
    result.load_state_dict(best[1])
    result.eval()
    ds = d.dataset
    fit_idx, hold_idx = _split_indices(ds.train.stimulus.shape[0], config.history, params["holdout"])
    stim = torch.from_numpy(_to_model_units(ds.train.stimulus, config.norm))
    pred = _predict_windows(result, stim, hold_idx, 256)
    hold_r = _pearson(pred, ds.train.rates[hold_idx])
    result.provenance = {
        "trained_by": "napari_retina.training.train",
        "data_file": str(d.path) if d.path else None,
        "data_sha256": d.sha256,
        "data_attrs": {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in ds.attrs.items()},
        "train_frames": int(ds.train.stimulus.shape[0]),
        "fit_windows": int(len(fit_idx)),
        "heldout_windows": int(len(hold_idx)),
        "params": params,
        "seed": params["seed"],
        "epochs_run": len(history) - 1,
        "best_epoch": best[2],
        "history": history,
        "seconds": round(time.time() - t0, 1),
        "finished": final,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": f"{socket.gethostname()} {platform.platform()} {platform.processor() or platform.machine()}, "
                   f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
                   + (f", {torch.cuda.get_device_name(model.device)}" if model.device.type == "cuda" else ""),
    }
    scores: dict[str, Any] = {
        "heldout_loss": best[0],
        "heldout_r": [float(v) for v in hold_r],
        "heldout_r_mean": float(np.nanmean(hold_r)),
    }
    if final and ds.test is not None and ds.test.stimulus.shape[0] >= config.history:
        ev = _evaluate(result, ds, d.true_test)
        scores.update({f"test_{k}": v for k, v in ev.items() if k != "cell_names"})
    result.scores = scores
    return result


def _mean_ratio(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per cell, mean predicted rate over mean target rate (1 = calibrated), (n_cells,)."""
    return np.nanmean(pred, axis=0) / np.nanmean(target, axis=0)


def _explained_variance(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per cell ``1 − var(pred − target) / var(target)`` (scale-sensitive, unlike r), (n_cells,)."""
    return 1.0 - np.nanvar(pred - target, axis=0) / np.nanvar(target, axis=0)


def _reliability(repeats: np.ndarray, start: int) -> list[float]:
    """Split-half reliability per cell: r between the mean of even and odd repeats."""
    out = []
    for reps in repeats:
        if reps.shape[0] < 2:
            out.append(float("nan"))
            continue
        a, b = reps[0::2, start:].mean(0), reps[1::2, start:].mean(0)
        out.append(float(_pearson(a[:, None], b[:, None])[0]))
    return out


def _evaluate(model: RetinaCNN, ds: Dataset, true_test: Optional[np.ndarray]) -> dict:
    from .predict import predict

    test = ds.test
    pred = predict(model, test.stimulus)
    start = model.config.history - 1
    r = _pearson(pred[start:], test.rates[start:])
    out: dict[str, Any] = {
        "cell_names": list(model.config.cell_names),
        "r": [float(v) for v in r],
        "r_mean": float(np.nanmean(r)),
        "mean_ratio": [float(v) for v in _mean_ratio(pred[start:], test.rates[start:])],
        "frames": int(test.stimulus.shape[0] - start),
    }
    if true_test is not None:
        rt = _pearson(pred[start:], true_test[start:])
        out["r_true"] = [float(v) for v in rt]
        out["r_true_mean"] = float(np.nanmean(rt))
        ev = _explained_variance(pred[start:], true_test[start:])
        out["ev_true"] = [float(v) for v in ev]
        out["ev_true_mean"] = float(np.nanmean(ev))
        rd = _pearson(test.rates[start:], true_test[start:])
        out["r_data_vs_true"] = [float(v) for v in rd]
    if test.repeats is not None:
        rel = _reliability(test.repeats, start)
        out["repeats"] = int(test.repeats.shape[1])
        out["reliability_split_half"] = rel
        out["reliability_split_half_mean"] = float(np.nanmean(rel))
    return out


def evaluate(model: RetinaCNN, data, cells: Optional[list[int]] = None) -> dict:
    """Score ``model`` on a dataset's test split.

    Parameters
    ----------
    model : RetinaCNN (e.g. ``nr.load_model()``).
    data : HDF5 path in the lab layout, an nr.io.Dataset, or ``(stimulus, rates)``
        arrays used as the test split (stimulus (T, H, W), rates (T, n_cells)).
    cells : the dataset's cells that the model's outputs correspond to (default all).

    Returns
    -------
    dict with ``r`` (per-cell Pearson r between predicted and recorded test
    rates, frames with a full history), ``r_mean``, ``mean_ratio`` (per cell, mean
    predicted over mean recorded rate: 1 = calibrated, which r cannot see),
    ``frames``, ``cell_names``; with synthetic data (``test/true_rates`` in the
    file) also ``r_true``, ``r_true_mean`` (against the true rates), ``ev_true``,
    ``ev_true_mean`` (explained variance of the true rates,
    ``1 − var(pred − true)/var(true)``) and ``r_data_vs_true``; with
    repeats ``reliability_split_half`` per cell (r between the means of even
    and odd repeats).

    Example
    -------
    >>> nr.evaluate(nr.load_model(), "wn.h5")["r_true_mean"]     # doctest: +SKIP
    """
    if not isinstance(model, RetinaCNN):
        raise TypeError(f"model must be a RetinaCNN (see nr.load_model), got {type(model).__name__}")
    if isinstance(data, (tuple, list)) and len(data) == 2:
        split = _as_split(tuple(data), "test")
        d = _Data(Dataset(split, split, [], {}), None, None, None)
    else:
        d = _load(data, cells)
    ds = d.dataset
    if ds.test.rates.shape[1] != model.config.n_cells:
        raise ValueError(f"the model has {model.config.n_cells} cells but the data have {ds.test.rates.shape[1]}")
    return _evaluate(model, ds, d.true_test)
