"""Choosing the torch device: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

from typing import Optional, Union

import torch

DeviceLike = Optional[Union[str, torch.device]]


def available_devices() -> list[str]:
    """Names of the devices usable here, best first, e.g. ``["cuda", "cpu"]``."""
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(device: DeviceLike = None) -> torch.device:
    """Turn ``None``/``"auto"``/``"cpu"``/``"cuda"``/``"cuda:1"``/``"mps"`` into a device.

    ``None`` or ``"auto"`` picks CUDA, then MPS, then CPU. Asking for a device
    that is not there is a ValueError, not a deep torch error.
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device(available_devices()[0])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'mps', got {device!r}"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "device 'cuda' was requested but no CUDA GPU is available here; "
                "use device='cpu' or 'auto'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} was requested but only "
                f"{torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type == "mps" and "mps" not in available_devices():
        raise ValueError(
            "device 'mps' was requested but Apple MPS is not available here; "
            "use device='cpu' or 'auto'"
        )
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'mps', got {device!r}")
    return dev
