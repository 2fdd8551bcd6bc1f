"""One conversion of result values to plain, JSON-able Python (the package's only one).

Results (``Attribution``, ``Reduction``, ``ExperimentResult``) give their data
with ``to_dict()``; :func:`jsonable` turns any such value — numpy arrays and
scalars, tuples, nested dicts — into dicts, lists, str, int, float, bool and None.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def jsonable(value: Any, strict: bool = False) -> Any:
    """Plain-Python copy of ``value``: dict keys become str, arrays and tuples lists, numpy scalars Python ones.

    ``strict=False`` keeps non-finite floats (``nan``, ``inf``), as Python's
    ``json`` writes them; ``strict=True`` makes the result valid strict JSON:
    NaN becomes None and ±inf the strings ``"inf"``/``"-inf"``. Objects of other
    types (paths, say) become their ``str``.

    Example
    -------
    >>> import numpy as np
    >>> jsonable({"lead_um": np.float32(24.0), "kept": np.array([3, 6]), "r": float("nan")}, strict=True)
    {'lead_um': 24.0, 'kept': [3, 6], 'r': None}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v, strict) for k, v in value.items()}
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()                      # numpy arrays and scalars, torch tensors
    if isinstance(value, (list, tuple)):
        return [jsonable(v, strict) for v in value]
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        x = float(value)
        if strict and not math.isfinite(x):
            return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
        return x
    return str(value)
