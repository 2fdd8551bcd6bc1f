"""One conversion of result values to plain, JSON-able Python (the package's only one).

Results (``Attribution``, ``Reduction``, ``ExperimentResult``) give their data
with ``to_dict()``; :func:`jsonable` turns any such value — numpy arrays and
scalars, tuples, nested dicts — into dicts, lists, str, int, float, bool and None.
:func:`strict_json` makes such a value strict JSON throughout, JSON text in its
strings included (what files other programs read must hold).
"""

from __future__ import annotations

import json
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


def strict_json(value: Any) -> Any:
    """``jsonable(value, strict=True)``, with the JSON text inside its strings made strict too.

    ``to_dict()`` gives nested lists and dicts as JSON text (an experiment's
    ``readout``, ``conditions`` and ``params``), written by Python's ``json``,
    which writes NaN as ``NaN``: a strict parser (jq, JavaScript) refuses that
    even inside a string it goes on to parse. A string that is JSON text
    holding NaN or ±Infinity is written again with null and ``"inf"``/``"-inf"``;
    every other string is kept as it is.

    Example
    -------
    >>> strict_json({"r": float("nan"), "readout": '{"latency_ms": [NaN, 30.0]}'})
    {'r': None, 'readout': '{"latency_ms": [null, 30.0]}'}
    """
    return _strict_text(jsonable(value, strict=True))


def _strict_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strict_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict_text(v) for v in value]
    if isinstance(value, str) and value[:1] in "[{":
        found = []
        try:
            parsed = json.loads(value, parse_constant=lambda name: found.append(name) or float(name))
        except ValueError:
            return value          # not JSON text: a plain string
        return json.dumps(jsonable(parsed, strict=True)) if found else value
    return value
