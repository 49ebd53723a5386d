"""Which runs make which row of a table, or which setting of a figure.

`group_rows` groups a run table by the values of the `rows.by` columns of a `RowSpec`: runs that differ
only by seed. A run with no value in a `by` column belongs to no row. Rows come in the spec's `order`
first, then the others sorted, numbers (also written as text) numerically. A row's label is the display
name of each of its values (`names`, else the value itself: 2.0 shows as 2) joined by ", ".

The report's figures draw the same rows under the same labels as its table: they group runs with
`group_rows`, and filter them as the table does with `select`. Groups hold runs of any status: which of
them a table averages is decided by analysis/tables.py.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.errors import AnalysisError
from analysis.table_spec import RowSpec
from analysis.values import show, sort_key, value_key


@dataclass(frozen=True, eq=False)
class Row:
    """One row of a table, or one setting of a figure: runs that differ only by seed."""

    key: tuple  # its values of the `by` columns, as `value_key` reads them
    label: str  # the same text in the table and in a figure
    trials: pd.DataFrame  # its runs, in the order of the run table


def select(frame: pd.DataFrame, where: Mapping[str, Any]) -> pd.DataFrame:
    """The runs of `frame` (a run table) whose every `where` column holds one of its accepted values (a
    list or tuple of values, as `TableSpec.where` holds them), matched by `value_key`. A column the runs
    lack, or a filter no run passes, is an AnalysisError naming `where.<column>` and what is there."""
    for column, accepted in where.items():
        require_column(frame, column, f"where.{column}")
        accepted = {value_key(v) for v in accepted}
        matches = frame[column].map(lambda v: value_key(v) in accepted)
        if not matches.any():
            present = sorted({value_key(v) for v in frame[column]} - {None}, key=sort_key)
            wanted = " or ".join(show(v) for v in sorted(accepted, key=sort_key))
            raise AnalysisError(f"where.{column}: no run has {wanted} "
                                f"(values there: {', '.join(map(show, present)) or 'none'})")
        frame = frame[matches.to_numpy()]
    return frame


def group_rows(frame: pd.DataFrame, rows: RowSpec) -> list[Row]:
    """The runs of `frame` grouped by their values of the `rows.by` columns, whatever their status: the
    rows listed in `rows.order` first (those present), then the others sorted by `sort_key`. A run without
    a value in some `by` column is in no row. A `by` column the runs lack is an AnalysisError."""
    for column in rows.by:
        require_column(frame, column, "rows.by")
    members: dict[tuple, list[int]] = {}
    for position, key in enumerate(keys_of(frame[list(rows.by)])):
        if key is not None:
            members.setdefault(key, []).append(position)
    listed = [k for k in dict.fromkeys(row_key(item, len(rows.by)) for item in rows.order) if k in members]
    others = sorted(members.keys() - set(listed), key=lambda key: [sort_key(v) for v in key])
    return [Row(key=key, label=", ".join(value_label(rows, v) for v in key), trials=frame.iloc[members[key]])
            for key in listed + others]


def keys_of(columns: pd.DataFrame) -> list[tuple | None]:
    """One row key per run: the tuple of its `by` values, None when one of them is missing."""
    # not Series.map: it would turn the None of a missing value back into NaN
    parts = zip(*([value_key(v) for v in columns[c]] for c in columns.columns))
    return [None if None in key else key for key in parts]


def row_key(item: Any, width: int) -> tuple:
    """The key of a row as an `order` or `baseline` entry names it: a value, or a list of them."""
    return (value_key(item),) if width == 1 else tuple(value_key(v) for v in item)


def value_label(rows: RowSpec, value: Any) -> str:
    """How a table and a figure print one value of a row key: its `names` entry, else the value itself."""
    names = {value_key(k): v for k, v in rows.names.items()}
    return names.get(value, show(value))


def require_column(frame: pd.DataFrame, column: str, key: str) -> None:
    """Nothing when the runs have `column`; else an AnalysisError naming the spec's `key`, the columns of
    that family (params, tags, metrics) the runs do have, and the closest of them."""
    if column in frame:
        return
    prefix = column.split(".", 1)[0]
    family = sorted(c for c in frame.columns if c.split(".", 1)[0] == prefix) or list(frame.columns)
    close = difflib.get_close_matches(column, family, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    shown = ", ".join(family) if len(family) <= 40 else f"{len(family)} of them"
    raise AnalysisError(f"{key}: the runs have no column {column!r} ({hint}{prefix} columns there: {shown})")
