"""How tables and figures compare, order and print the values of a run-table column.

The same setting reaches the analysis in several types: MLflow tags are text ("0.5", "True"), typed
params are numbers and booleans, and a table spec's YAML gives whatever YAML reads. `value_key` makes them
comparable by meaning, not by type: the tag "0.5", the param 0.5 and a YAML 0.5 are one value, "True" and
true too; a missing value, None and NaN are all "no value". Rows, `where` filters, `order`, `names` and
`baseline` all match values through it, and `sort_key` and `show` order and print them.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import pandas as pd


def value_key(value: Any) -> Any:
    """A value as rows, `where`, `order` and `names` compare it: numbers (also as text) as floats, booleans
    as "True"/"False", sequences as tuples, missing (None, NaN) as None."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(value_key(v) for v in value)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Number):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return None if math.isnan(number) else number  # the text MLflow stores for a NaN
    return str(value)


def sort_key(value: Any) -> tuple:
    """An ordering of any values, also mixed: numbers (also written as text) numerically, then texts,
    then the rest (tuples, missing) by their text."""
    value = value_key(value)
    if isinstance(value, float):
        return (0, value, "")
    return (1, 0.0, value) if isinstance(value, str) else (2, 0.0, repr(value))


def show(value: Any) -> str:
    """A value (as `value_key` reads it) as a label or a message prints it: 2.0 as 2, a tuple as [a, b]."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(map(show, value)) + "]"
    return str(value)
