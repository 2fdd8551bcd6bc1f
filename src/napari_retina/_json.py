"""One conversion of result values to plain, JSON-able Python (the package's only one).

Results (``Attribution``, ``Reduction``, ``ExperimentResult``) give their data
with ``to_dict()``; :func:`jsonable` turns any such value — numpy arrays and
scalars, tuples, nested dicts — into dicts, lists, str, int, float, bool and None.
:func:`strict_json` makes such a value strict JSON throughout, JSON text in its
strings included (what files other programs read must hold).
:func:`parse_json` is the one way the package reads JSON text that came from a
file: whatever the text holds, bad input is one ValueError naming what was read.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any

MAX_JSON_DEPTH = 100
"""How deeply JSON (or YAML) read from a file may nest lists and objects. Real configs, readouts and
labels nest a few levels; deeper text is refused before code that walks it recursively can hit
Python's recursion limit."""
TOO_DEEP = f"it nests lists and objects more than {MAX_JSON_DEPTH} levels deep"
"""Why text nested deeper than :data:`MAX_JSON_DEPTH` is refused, as the parenthesis of the refusal."""


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


def parse_json(text: str, what: str, **options: Any) -> Any:
    """``json.loads(text, **options)``, where bad input is one ValueError: "<what> is not valid JSON (...)".

    ``what`` names what was read, as the sentence's subject (e.g. ``"'m.pt' config"``). Text that is not
    JSON, or that nests lists and objects deeper than :data:`MAX_JSON_DEPTH` (which would otherwise raise
    ``RecursionError`` here or in whatever walks the value), is refused without a chained traceback.

    Example
    -------
    >>> parse_json('{"a": [1, 2]}', "the readout")
    {'a': [1, 2]}
    >>> parse_json("[" * 5000 + "]" * 5000, "the readout")
    Traceback (most recent call last):
    ...
    ValueError: the readout is not valid JSON (it nests lists and objects more than 100 levels deep)
    """
    try:
        value = json.loads(text, **options)
    except RecursionError:
        problem = TOO_DEEP
    except ValueError as exc:      # JSONDecodeError, or UnicodeDecodeError for bytes
        problem = str(exc)
    else:
        problem = TOO_DEEP if nesting_depth(value) > MAX_JSON_DEPTH else None
    if problem:
        raise ValueError(f"{what} is not valid JSON ({problem})") from None
    return value


def nesting_depth(value: Any, stop: int = MAX_JSON_DEPTH) -> int:
    """How many levels of lists, tuples and dicts ``value`` nests (0 for a scalar), counted without recursion.

    Counting stops once it passes ``stop``: the result is then ``stop + 1`` (so a list that holds itself,
    as YAML anchors can make, is "too deep"). A container met again no deeper than before is not walked
    again, so values that share parts (YAML aliases) take time in the number of containers, not paths.
    """
    deepest, todo, seen = 0, [(value, 1)], {}
    while todo:
        item, depth = todo.pop()
        if not isinstance(item, (list, tuple, dict)) or seen.get(id(item), 0) >= depth:
            continue
        if depth > stop:
            return stop + 1
        seen[id(item)], deepest = depth, max(deepest, depth)
        todo.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest
