"""Ablation tables from recorded runs: which runs make a row, which metrics make a column.

A table spec (a YAML file or a dict) reads:

    title: ITO component ablation              # optional caption
    where: {params.objective.fusion_weight: 0} # optional: keep the runs whose column holds the value
                                               #   (or one of a list of values)
    rows:
      by: tags.variant                         # a run-table column, or a list of them
      header: Variant                          # optional label-column header(s); default: the column name
      order: [OpenCLIP, + multiple alignment]  # optional display order (with several `by` columns, lists
                                               #   of values); rows not listed follow, sorted
      names: {OpenCLIP: OpenCLIP (baseline)}   # optional display names of values (of any `by` column)
      baseline: OpenCLIP                       # optional (a list with several `by` columns): deltas go
                                               #   against this row
    seeds: tags.seed                           # the column telling repeats apart (default tags.seed)
    columns:
      - metric: test/zeroshot_top1             # the run-table column metrics.<metric>
        name: Zero-shot                        # default: the metric
        source: final                          # final (last logged value) | best (best over its history)
        scale: 100                             # display multiplier (default 1)
        format: "{:.1f}"                       # default "{:.3f}"
        better: higher                         # higher | lower: which mean is set in bold
    significance: false                        # true: a 95% Welch interval on every delta (needs baseline)
    cost: false                                # true: mean accelerator-hours per run

Values are matched by meaning, not by type (`value_key`): the tag "0.5", the typed param 0.5 and a YAML
0.5 are the same row, "True" and true too; a missing value, None and NaN are "no value", and a run with no
value in a `by` column belongs to no row.

Rows are the listed `order` first, then the others sorted, numbers (also written as text) numerically.
A row's label is the display name of each of its values (`names`, else the value itself: 2.0 shows as 2)
joined by ", ". The report's figures draw the same rows under the same labels: they group runs with
`group_rows`, and filter them as the table does with `select`.

A row averages its FINISHED runs only: the mean, the sample standard deviation (ddof=1) and the count n,
all in display units (after `scale`). With one run the deviation is undefined: the cell shows the mean
alone and the CSV leaves the std empty. A row's `n` counts its finished runs; a cell whose own count is
smaller (the metric is missing in some run) says "(n=k)". Failed, killed and running runs are never
averaged; they are listed in `Table.excluded` and in a note under the table.
"""
from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from analysis.load import AnalysisError, Runs
from ito_sweeps.config import Config

SPECS_DIR = Path(__file__).parent / "specs"
DEFAULT_FORMAT = "{:.3f}"
COST_FORMAT = "{:.3g}"
CONFIDENCE = 0.95
RESOURCE_TAGS = ("tags.resources.num_workers", "tags.resources.cpus_per_worker", "tags.resources.gpus_per_worker")
# (metric, name, scale, better) of a table built without a spec
DEFAULT_COLUMNS = (
    ("test/zeroshot_top1", "Zero-shot", 100, "higher"),
    ("test/probe_top1", "Linear probe", 100, "higher"),
    ("test/i2t_r1", "I→T R@1", 100, "higher"),
    ("test/t2i_r1", "T→I R@1", 100, "higher"),
    ("test/modality_gap", "Modality gap", 1, "lower"),
)

SPEC_KEYS = ("title", "where", "rows", "seeds", "columns", "significance", "cost")
ROW_KEYS = ("by", "header", "order", "names", "baseline")
COLUMN_KEYS = ("metric", "name", "source", "scale", "format", "better")


@dataclass(frozen=True)
class ColumnSpec:
    metric: str
    name: str
    source: str = "final"
    scale: float = 1.0
    format: str = DEFAULT_FORMAT
    better: str = "higher"


@dataclass(frozen=True)
class RowSpec:
    """`order`, `names` and `baseline` hold the values as written in the spec; `header` defaults to the
    `by` column names without their first part (params.fusion.depth -> fusion.depth)."""

    by: tuple[str, ...]
    header: tuple[str, ...] = ()
    order: tuple[Any, ...] = ()
    names: Mapping[Any, str] = field(default_factory=dict)
    baseline: Any = None

    def __post_init__(self):
        if not self.header:
            object.__setattr__(self, "header", tuple(column.split(".", 1)[-1] for column in self.by))


@dataclass(frozen=True, eq=False)
class Row:
    """One row of a table, or one setting of a figure: runs that differ only by seed."""

    key: tuple  # its values of the `by` columns, as `value_key` reads them
    label: str  # the same text in the table and in a figure
    trials: pd.DataFrame  # its runs, in the order of the run table


@dataclass(frozen=True)
class TableSpec:
    rows: RowSpec
    columns: tuple[ColumnSpec, ...]
    title: str = ""
    where: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # column -> accepted values (value_key)
    seeds: str | None = None  # None: tags.seed where the runs have it
    significance: bool = False
    cost: bool = False


# ---- specs ------------------------------------------------------------------------------------------------


def load_spec(source: str | Path | Mapping) -> TableSpec:
    """A checked spec from a YAML file or a dict; any problem is an AnalysisError naming the key."""
    if isinstance(source, Mapping):
        return _parse(source, "table spec")
    path = Path(source)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as err:
        raise AnalysisError(f"cannot read the table spec {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise AnalysisError(f"{path}: not valid YAML: {err}") from None
    return _parse(doc, str(path))


def spec_for(search_space: str | Path) -> TableSpec | None:
    """The shipped spec named like a search space (its path or name), or None when there is none."""
    path = SPECS_DIR / f"{Path(search_space).stem}.yaml"
    return load_spec(path) if path.is_file() else None


def default_spec(runs: Runs | pd.DataFrame) -> TableSpec:
    """A generic table for runs no shipped spec describes: a row per setting, the headline test metrics."""
    frame = _trials(runs)
    columns = [{"metric": metric, "name": name, "scale": scale, "better": better,
                "format": "{:.1f}" if scale == 100 else DEFAULT_FORMAT}
               for metric, name, scale, better in DEFAULT_COLUMNS if f"metrics.{metric}" in frame]
    if not columns:
        raise AnalysisError(f"these runs logged none of {', '.join(m for m, *_ in DEFAULT_COLUMNS)}: "
                            f"pass a table spec naming the metrics to show")
    return load_spec({
        "title": runs.experiment_name if isinstance(runs, Runs) else "",
        "rows": {"by": _default_rows(frame)},
        "columns": columns,
        "cost": all(tag in frame for tag in RESOURCE_TAGS),
    })


def _default_rows(frame: pd.DataFrame) -> list[str]:
    if "tags.variant" in frame and frame["tags.variant"].notna().any():
        return ["tags.variant"]
    # sweeps tag each trial with its swept config keys; ray.trial_id and the like vary too, hence the Config
    config_keys = set(Config().flat()) - {"run.seed"}
    swept = [c for c in frame.columns if c.startswith("tags.") and c.removeprefix("tags.") in config_keys
             and frame[c].map(value_key).nunique() > 1]
    if swept:
        return swept
    return ["tags.objective"] if "tags.objective" in frame else ["run_name"]


# ---- rows: which runs, grouped how ----------------------------------------------------------------------------


def select(frame: pd.DataFrame, where: Mapping[str, Any]) -> pd.DataFrame:
    """The runs of `frame` (a run table) whose every `where` column holds one of its accepted values (a
    list or tuple of values, as `TableSpec.where` holds them), matched by `value_key`. A column the runs
    lack, or a filter no run passes, is an AnalysisError naming `where.<column>` and what is there."""
    for column, accepted in where.items():
        _require_column(frame, column, f"where.{column}")
        accepted = {value_key(v) for v in accepted}
        matches = frame[column].map(lambda v: value_key(v) in accepted)
        if not matches.any():
            present = sorted({value_key(v) for v in frame[column]} - {None}, key=sort_key)
            wanted = " or ".join(_show(v) for v in sorted(accepted, key=sort_key))
            raise AnalysisError(f"where.{column}: no run has {wanted} "
                                f"(values there: {', '.join(map(_show, present)) or 'none'})")
        frame = frame[matches.to_numpy()]
    return frame


def group_rows(frame: pd.DataFrame, rows: RowSpec) -> list[Row]:
    """The runs of `frame` grouped by their values of the `rows.by` columns, whatever their status: the
    rows listed in `rows.order` first (those present), then the others sorted by `sort_key`. A run without
    a value in some `by` column is in no row. A `by` column the runs lack is an AnalysisError."""
    for column in rows.by:
        _require_column(frame, column, "rows.by")
    members: dict[tuple, list[int]] = {}
    for position, key in enumerate(_keys_of(frame[list(rows.by)])):
        if key is not None:
            members.setdefault(key, []).append(position)
    listed = [k for k in dict.fromkeys(_row_key(item, len(rows.by)) for item in rows.order) if k in members]
    others = sorted(members.keys() - set(listed), key=lambda key: [sort_key(v) for v in key])
    return [Row(key=key, label=", ".join(_value_label(rows, v) for v in key), trials=frame.iloc[members[key]])
            for key in listed + others]


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


def _keys_of(columns: pd.DataFrame) -> list[tuple | None]:
    """One row key per run: the tuple of its `by` values, None when one of them is missing."""
    # not Series.map: it would turn the None of a missing value back into NaN
    parts = zip(*([value_key(v) for v in columns[c]] for c in columns.columns))
    return [None if None in key else key for key in parts]


def _row_key(item: Any, width: int) -> tuple:
    """The key of a row as an `order` or `baseline` entry names it: a value, or a list of them."""
    return (value_key(item),) if width == 1 else tuple(value_key(v) for v in item)


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(map(_show, value)) + "]"
    return str(value)


def _value_label(rows: RowSpec, value: Any) -> str:
    names = {value_key(k): v for k, v in rows.names.items()}
    return names.get(value, _show(value))


# ---- the table ----------------------------------------------------------------------------------------------


@dataclass
class Table:
    """`cells` has one row per table row: the `by` values, n, then per metric `<name> mean`, `std`, `n`
    (and `delta`, `lo`, `hi` against the baseline), then the cost column, all in display units."""

    spec: TableSpec
    cells: pd.DataFrame
    excluded: pd.DataFrame  # run_id, run_name, status, reason, detail: each run (or run's cell) left out
    notes: list[str]  # what a reader of the table must know: exclusions, repeated seeds
    cost_column: str | None = None  # "GPU-hours" or "CPU-hours"

    def to_markdown(self) -> str:
        header, body = self._grid()
        labels = len(self.spec.rows.by)
        lines = [f"**{_md(self.spec.title)}**", ""] if self.spec.title else []
        lines.append(_md_row(_md(h) for h in header))
        lines.append(_md_row([":---"] * labels + ["---:"] * (len(header) - labels)))
        lines += [_md_row(_md_cell(cell) for cell in row) for row in body]
        lines += [line for note in self.notes for line in ("", _md(note))]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        """A booktabs tabular to \\input inside a table environment; title and notes ride along as comments."""
        header, body = self._grid()
        labels = len(self.spec.rows.by)
        lines = [f"% {self.spec.title}"] if self.spec.title else []
        lines += [
            f"\\begin{{tabular}}{{{'l' * labels}{'r' * (len(header) - labels)}}}",
            "\\toprule",
            " & ".join(_tex(h) for h in header) + " \\\\",
            "\\midrule",
            *(" & ".join(_tex_cell(cell) for cell in row) + " \\\\" for row in body),
            "\\bottomrule",
            "\\end{tabular}",
        ]
        lines += [f"% {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        return self.cells.to_csv(index=False)

    def _grid(self) -> tuple[list[str], list[list[list[tuple[str, bool]]]]]:
        """Header texts and body cells, each cell a list of (text, bold) segments, for every output format."""
        spec, cells = self.spec, self.cells
        header = [*spec.rows.header, "n"]
        for column in spec.columns:
            header += [column.name, "Δ"] if spec.rows.baseline is not None else [column.name]
        header += [self.cost_column] if self.cost_column else []
        best = {c.name: _best(cells[f"{c.name} mean"], c.better) for c in spec.columns}
        keys = _keys_of(cells[list(spec.rows.by)])
        baseline = _row_key(spec.rows.baseline, len(spec.rows.by)) if spec.rows.baseline is not None else None
        body = []
        for i, key in enumerate(keys):
            row = cells.iloc[i]
            line = [[(_value_label(spec.rows, value), False)] for value in key] + [[(str(int(row["n"])), False)]]
            for column in spec.columns:
                line.append(_metric_cell(column, row, best[column.name][i]))
                if baseline is not None:
                    line.append([(_delta_cell(column, row, key == baseline, spec.significance), False)])
            if self.cost_column:
                line.append([(_number(COST_FORMAT, row[self.cost_column]), False)])
            body.append(line)
        return header, body


def build_table(runs: Runs | pd.DataFrame, spec: TableSpec | Mapping | str | Path) -> Table:
    """The table `spec` describes over `runs` (a loaded `Runs`, or its trials table)."""
    spec = spec if isinstance(spec, TableSpec) else load_spec(spec)
    frame = _trials(runs)
    seeds = _seeds_column(frame, spec.seeds)
    frame = select(frame, spec.where)
    rows = group_rows(frame, spec.rows)
    row_keys = [row.key for row in rows]
    # the row of each run (-1: none), so that every column aggregates in one groupby
    row_of = pd.Series(-1, index=frame.index)
    for i, row in enumerate(rows):
        row_of.loc[row.trials.index] = i
    kept = frame["status"].eq("FINISHED").to_numpy() & row_of.ge(0).to_numpy()
    code = row_of[kept]

    cells = pd.DataFrame({c: [k[i] for k in row_keys] for i, c in enumerate(spec.rows.by)})
    cells["n"] = code.value_counts().reindex(range(len(row_keys)), fill_value=0).to_numpy()
    baseline = _baseline_index(spec.rows, row_keys)
    missing = []
    for i, column in enumerate(spec.columns):
        values = _metric_values(runs, frame, column, f"columns[{i}].metric")[kept] * column.scale
        cells = cells.join(_aggregate(values, code, len(row_keys)).add_prefix(f"{column.name} "))
        if baseline is not None:
            cells = cells.join(_against_baseline(cells, column.name, baseline, spec.significance))
        missing.append(_left_out(frame[kept][values.isna()], f"missing {_source(column)}"))
    cost_column = None
    if spec.cost:
        cost_column, cost = _cost(frame[kept])
        cells[cost_column] = cost.groupby(code).mean().reindex(range(len(row_keys))).to_numpy()

    excluded = pd.concat([_runs_left_out(frame[~kept], spec.rows.by), *missing], ignore_index=True)
    labels = [row.label for row in rows]
    notes = _exclusion_notes(excluded) + _repeated_seed_notes(frame[kept], code, seeds, labels)
    return Table(spec=spec, cells=cells, excluded=excluded, notes=notes, cost_column=cost_column)


def welch_interval(mean_a, std_a, n_a, mean_b, std_b, n_b, confidence: float = CONFIDENCE):
    """Two-sided `confidence` interval (lo, hi) of mean_a - mean_b by Welch's t, elementwise over arrays.

    diff = mean_a - mean_b; se = sqrt(s_a^2/n_a + s_b^2/n_b), s the sample standard deviations (ddof=1);
    Welch–Satterthwaite df = se^4 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1));
    interval = diff -/+ t.ppf((1+confidence)/2, df) * se. NaN where either side has fewer than 2 values.
    """
    mean_a, std_a, n_a, mean_b, std_b, n_b = (np.asarray(x, dtype=float)
                                              for x in (mean_a, std_a, n_a, mean_b, std_b, n_b))
    defined = (n_a >= 2) & (n_b >= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_a, var_b = std_a**2 / n_a, std_b**2 / n_b
        se = np.sqrt(var_a + var_b)
        denominator = var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1)
        # identical repeats on both sides leave se = 0 and df = 0/0: the interval is the point itself
        df = np.where(denominator > 0, se**4 / denominator, np.inf)
        half = stats.t.ppf((1 + confidence) / 2, df) * se
    diff = mean_a - mean_b
    return np.where(defined, diff - half, np.nan), np.where(defined, diff + half, np.nan)


# ---- building steps ---------------------------------------------------------------------------------------


def _trials(runs: Runs | pd.DataFrame) -> pd.DataFrame:
    frame = runs.trials if isinstance(runs, Runs) else runs
    if frame.empty:
        raise AnalysisError("there are no runs to tabulate")
    return frame.reset_index(drop=True)  # runs are told apart by their index label


def _require_column(frame: pd.DataFrame, column: str, key: str) -> None:
    if column in frame:
        return
    prefix = column.split(".", 1)[0]
    family = sorted(c for c in frame.columns if c.split(".", 1)[0] == prefix) or list(frame.columns)
    close = difflib.get_close_matches(column, family, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    shown = ", ".join(family) if len(family) <= 40 else f"{len(family)} of them"
    raise AnalysisError(f"{key}: the runs have no column {column!r} ({hint}{prefix} columns there: {shown})")


def _seeds_column(frame: pd.DataFrame, seeds: str | None) -> str | None:
    if seeds is None:
        return "tags.seed" if "tags.seed" in frame else None
    _require_column(frame, seeds, "seeds")
    return seeds


def _baseline_index(rows: RowSpec, row_keys: list[tuple]) -> int | None:
    if rows.baseline is None:
        return None
    key = _row_key(rows.baseline, len(rows.by))
    if key not in row_keys:
        shown = "; ".join(", ".join(map(_show, k)) for k in row_keys)
        raise AnalysisError(f"rows.baseline: {', '.join(map(_show, key))} matches no row (rows: {shown})")
    return row_keys.index(key)


def _metric_values(runs: Runs | pd.DataFrame, frame: pd.DataFrame, column: ColumnSpec, key: str) -> pd.Series:
    if _source(column) in frame:
        return frame[_source(column)].astype(float)
    # a metric is known when some run logged it: then it has a final value
    _require_column(frame, f"metrics.{column.metric}", key)
    if not isinstance(runs, Runs):
        raise AnalysisError(f"{key}: source best needs runs from load_runs (their histories) or a "
                            f"{_source(column)} column in the table")
    best = runs.best(column.metric, "max" if column.better == "higher" else "min")
    return pd.Series(best.reindex(frame["run_id"]).to_numpy(dtype=float), index=frame.index)


def _source(column: ColumnSpec) -> str:
    return f"{'metrics' if column.source == 'final' else 'best'}.{column.metric}"


def _aggregate(values: pd.Series, code: pd.Series, rows: int) -> pd.DataFrame:
    grouped = values.groupby(code).agg(["mean", "std", "count"]).reindex(range(rows))
    return grouped.assign(count=grouped["count"].fillna(0).astype(int)).rename(columns={"count": "n"})


def _against_baseline(cells: pd.DataFrame, name: str, baseline: int, significance: bool) -> pd.DataFrame:
    mean, std, n = (cells[f"{name} {part}"].to_numpy(dtype=float) for part in ("mean", "std", "n"))
    delta = mean - mean[baseline]
    delta[baseline] = np.nan  # the baseline is not compared with itself
    out = {f"{name} delta": delta}
    if significance:
        lo, hi = welch_interval(mean, std, n, mean[baseline], std[baseline], n[baseline])
        lo[baseline] = hi[baseline] = np.nan
        out.update({f"{name} lo": lo, f"{name} hi": hi})
    return pd.DataFrame(out, index=cells.index)


def _cost(finished: pd.DataFrame) -> tuple[str, pd.Series]:
    """Accelerator-hours per run; CPU-hours when no run had a GPU. A run without a GPU in a table that has
    GPU runs costs 0 GPU-hours."""
    for tag in RESOURCE_TAGS:
        _require_column(finished, tag, "cost")
    workers, cpus, gpus = (pd.to_numeric(finished[tag], errors="coerce") for tag in RESOURCE_TAGS)
    hours = finished["duration_s"] / 3600 * workers
    if (gpus > 0).any():
        return "GPU-hours", hours * gpus
    return "CPU-hours", hours * cpus


def _runs_left_out(frame: pd.DataFrame, by: tuple[str, ...]) -> pd.DataFrame:
    """Runs not averaged anywhere: not FINISHED, or without a value in a `by` column."""
    reasons = [status.lower() if status != "FINISHED" else f"no {next(c for c in by if value_key(row[c]) is None)}"
               for status, (_, row) in zip(frame["status"], frame.iterrows())]
    return _left_out(frame, reasons)


def _left_out(frame: pd.DataFrame, reason: str | list[str]) -> pd.DataFrame:
    detail = frame["tags.error"] if "tags.error" in frame else pd.Series("", index=frame.index)
    return pd.DataFrame({"run_id": frame["run_id"], "run_name": frame["run_name"], "status": frame["status"],
                         "reason": reason, "detail": detail.fillna("").astype(str)})


def _exclusion_notes(excluded: pd.DataFrame) -> list[str]:
    parts = []
    for reason, group in excluded.groupby("reason", sort=False):
        runs = [f"{name}: {_first_line(detail)}" if detail else name
                for name, detail in zip(group["run_name"], group["detail"])]
        parts.append(f"{len(group)} {reason} ({_listing(runs)})")
    return [f"excluded: {', '.join(parts)}"] if parts else []


def _repeated_seed_notes(finished: pd.DataFrame, code: pd.Series, seeds: str | None, labels: list[str]) -> list[str]:
    """Two runs with the same seed in one row are reruns, or settings the rows do not tell apart: both
    are averaged as repeats, which the reader should know."""
    if seeds is None:
        return []
    runs = pd.DataFrame({"row": code.to_numpy(), "seed": finished[seeds].map(value_key).to_numpy()})
    counts = runs.groupby(["row", "seed"], sort=False).size()
    repeated = [f"{labels[row]} has {count} runs with {seeds} = {_show(seed)}"
                for (row, seed), count in counts.items() if count > 1]
    return [f"repeated seeds: {_listing(repeated)}"] if repeated else []


def _listing(items: list[str], limit: int = 10) -> str:
    """Items for a note under a table, which must stay readable however many runs a sweep has."""
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def _first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ---- cells ------------------------------------------------------------------------------------------------


def _best(means: pd.Series, better: str) -> np.ndarray:
    target = means.max() if better == "higher" else means.min()
    return (means == target).to_numpy()


def _metric_cell(column: ColumnSpec, row: pd.Series, best: bool) -> list[tuple[str, bool]]:
    mean, std, n = row[f"{column.name} mean"], row[f"{column.name} std"], int(row[f"{column.name} n"])
    if n == 0:
        cell = [("n/a", False)]
    else:
        cell = [(column.format.format(mean), best)]
        if n > 1:
            cell.append((f" ± {column.format.format(std)}", False))
    if n != row["n"]:
        cell.append((f" (n={n})", False))
    return cell


def _delta_cell(column: ColumnSpec, row: pd.Series, is_baseline: bool, significance: bool) -> str:
    if is_baseline:
        return ""
    delta = row[f"{column.name} delta"]
    if math.isnan(delta):
        return "n/a"
    text = ("+" if delta >= 0 else "") + column.format.format(delta)
    if not significance:
        return text
    lo, hi = row[f"{column.name} lo"], row[f"{column.name} hi"]
    # fewer than two runs on a side: no interval can be computed, and the cell says so
    interval = "n/a" if math.isnan(lo) else f"{column.format.format(lo)}, {column.format.format(hi)}"
    return f"{text} [{interval}]"


def _number(fmt: str, value: float) -> str:
    return "n/a" if math.isnan(value) else fmt.format(value)


# ---- output formats ---------------------------------------------------------------------------------------

_MD_ESCAPES = str.maketrans({c: "\\" + c for c in "\\|*_`"})
_TEX_ESCAPES = str.maketrans({
    "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
    "±": r"$\pm$", "Δ": r"$\Delta$", "λ": r"$\lambda$", "→": r"$\rightarrow$",
})


def _md(text: str) -> str:
    return text.translate(_MD_ESCAPES)


def _md_cell(cell: list[tuple[str, bool]]) -> str:
    return "".join(f"**{_md(text)}**" if bold else _md(text) for text, bold in cell)


def _md_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _tex(text: str) -> str:
    return text.translate(_TEX_ESCAPES)


def _tex_cell(cell: list[tuple[str, bool]]) -> str:
    return "".join(f"\\textbf{{{_tex(text)}}}" if bold else _tex(text) for text, bold in cell)


# ---- spec parsing -----------------------------------------------------------------------------------------


def _parse(doc: Any, origin: str) -> TableSpec:
    read = _Reader(origin)
    doc = read.mapping(doc, "", SPEC_KEYS, required=("rows", "columns"))
    rows = _parse_rows(read, doc["rows"])
    columns = read.sequence(doc["columns"], "columns")
    if not columns:
        read.fail("columns", "empty: list at least one metric column")
    parsed = tuple(_parse_column(read, c, f"columns[{i}]") for i, c in enumerate(columns))
    names = [c.name for c in parsed]
    for i, name in enumerate(names):
        if name in names[:i]:
            read.fail(f"columns[{i}].name", f"{name!r} is already the name of columns[{names.index(name)}]; "
                                            f"give each column its own name")
    significance = read.flag(doc.get("significance", False), "significance")
    if significance and rows.baseline is None:
        read.fail("significance", "true needs rows.baseline: the row every interval is taken against")
    where = read.mapping(doc.get("where", {}), "where")
    return TableSpec(
        rows=rows, columns=parsed,
        title=read.text(doc.get("title", ""), "title"),
        where={read.text(k, "where"): tuple(map(value_key, v if isinstance(v, list) else [v]))
               for k, v in where.items()},
        seeds=read.text(doc["seeds"], "seeds") if "seeds" in doc else None,
        significance=significance,
        cost=read.flag(doc.get("cost", False), "cost"),
    )


def _parse_rows(read: _Reader, value: Any) -> RowSpec:
    rows = read.mapping(value, "rows", ROW_KEYS, required=("by",))
    by = read.names(rows["by"], "rows.by")
    header = read.names(rows["header"], "rows.header") if "header" in rows else ()  # () : RowSpec's default
    if header and len(header) != len(by):
        read.fail("rows.header", f"{len(header)} headers for {len(by)} rows.by columns; give one per column")
    order = read.sequence(rows.get("order", []), "rows.order")
    for i, item in enumerate(order):
        read.row_value(item, f"rows.order[{i}]", by)
    if "baseline" in rows:
        read.row_value(rows["baseline"], "rows.baseline", by)
    names = read.mapping(rows.get("names", {}), "rows.names")
    for value, name in names.items():
        read.text(name, f"rows.names.{value}")
    return RowSpec(by=by, header=header, order=tuple(order), names=names, baseline=rows.get("baseline"))


def _parse_column(read: _Reader, value: Any, key: str) -> ColumnSpec:
    column = read.mapping(value, key, COLUMN_KEYS, required=("metric",))
    metric = read.text(column["metric"], f"{key}.metric")
    fmt = read.text(column.get("format", DEFAULT_FORMAT), f"{key}.format")
    try:
        fmt.format(1.0)
    except (ValueError, IndexError, KeyError):
        read.fail(f"{key}.format", f"{fmt!r} cannot format a number; write e.g. \"{{:.1f}}\"")
    scale = column.get("scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        read.fail(f"{key}.scale", f"expected a number, got {scale!r}")
    return ColumnSpec(
        metric=metric,
        name=read.text(column.get("name", metric), f"{key}.name"),
        source=read.choice(column.get("source", "final"), f"{key}.source", ("final", "best")),
        scale=float(scale),
        format=fmt,
        better=read.choice(column.get("better", "higher"), f"{key}.better", ("higher", "lower")),
    )


class _Reader:
    """Type checks of spec values; every failure names the spec and the key path."""

    def __init__(self, origin: str):
        self.origin = origin

    def fail(self, key: str, problem: str) -> NoReturn:
        raise AnalysisError(f"{self.origin}: {key}: {problem}" if key else f"{self.origin}: {problem}")

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...] | None = None,
                required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, Mapping):
            self.fail(key, f"expected a mapping, got {value!r}")
        prefix = f"{key}." if key else ""
        for k in value:
            if allowed is not None and k not in allowed:
                self.fail(f"{prefix}{k}", f"unknown key (valid keys: {', '.join(allowed)})")
        for k in required:
            if k not in value:
                self.fail(f"{prefix}{k}", "missing; it is required")
        return dict(value)

    def sequence(self, value: Any, key: str) -> list:
        if not isinstance(value, list):
            self.fail(key, f"expected a list, got {value!r}")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            self.fail(key, f"expected text, got {value!r}")
        return value

    def flag(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {value!r}")
        return value

    def choice(self, value: Any, key: str, options: tuple[str, ...]) -> str:
        if value not in options:
            self.fail(key, f"{value!r} is not one of {' | '.join(options)}")
        return value

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        """Column names or headers: one text, or a non-empty list of texts."""
        items = [value] if isinstance(value, str) else self.sequence(value, key)
        if not items:
            self.fail(key, "empty: name at least one run-table column, e.g. tags.variant")
        return tuple(self.text(item, f"{key}[{i}]") for i, item in enumerate(items))

    def row_value(self, value: Any, key: str, by: tuple[str, ...]) -> None:
        """With several `by` columns a row is named by a list of values, one per column."""
        if len(by) > 1 and not (isinstance(value, list) and len(value) == len(by)):
            self.fail(key, f"expected a list of {len(by)} values, one per rows.by column ({', '.join(by)}), "
                           f"got {value!r}")
