"""The table spec: what a table shows, read from a YAML file or a dict and checked before any run is read.

A table spec reads:

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
      - metric: test/scenes/zeroshot_top1      # the run-table column metrics.<metric>
        name: Zero-shot                        # default: the metric
        source: final                          # final (last logged value) | best (best over its history)
        scale: 100                             # display multiplier (default 1)
        format: "{:.1f}"                       # default "{:.3f}"
        better: higher                         # higher | lower: which mean is set in bold
    significance: false                        # true: a 95% Welch interval on every delta (needs baseline)
    cost: false                                # true: mean accelerator-hours per run

`load_spec` checks every key and value: a mistake is an AnalysisError naming the spec and the key path
(`columns[1].scale: ...`), and so is a key written twice in a file, which YAML would silently read as the
last one. `spec_for` finds the shipped spec of a search space (and profile) in analysis/specs/.

Metrics are named as the runs log them: val|test/BENCHMARK/METRIC for a benchmark of the evaluation suite
(test/scenes/zeroshot_top1), val|test/NAME for the run-level ones (test/zeroshot_avg, test/steps).
`check_benchmarks` refuses a column whose benchmark a suite does not evaluate, before any run is trained
or loaded.

The values in `where`, `order`, `names` and `baseline` are matched by meaning, not by type
(analysis/values.py). What a spec asks for is done elsewhere: analysis/rows.py groups the runs into rows,
analysis/tables.py averages them into cells, analysis/render.py writes the table out. A spec is checked
without any of them, and without importing MLflow or SciPy: a wrong spec is refused in a fraction of a
second, before any run is loaded.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from analysis.benchmarks import benchmark_of
from analysis.errors import AnalysisError
from analysis.values import value_key
from ito_sweeps import strict_yaml

SPECS_DIR = Path(__file__).parent / "specs"
DEFAULT_FORMAT = "{:.3f}"

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


@dataclass(frozen=True)
class TableSpec:
    rows: RowSpec
    columns: tuple[ColumnSpec, ...]
    title: str = ""
    where: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # column -> accepted values (value_key)
    seeds: str | None = None  # None: tags.seed where the runs have it
    significance: bool = False
    cost: bool = False
    origin: str = field(default="table spec", compare=False)  # its file, or "table spec": what errors name


def load_spec(source: str | Path | Mapping) -> TableSpec:
    """A checked spec from a YAML file or a dict; any problem is an AnalysisError naming the key."""
    if isinstance(source, Mapping):
        return _parse(source, "table spec")
    path = Path(source)
    try:
        doc = strict_yaml.load(path)
    except OSError as err:
        raise AnalysisError(f"cannot read the table spec {path}: {err.strerror}") from None
    except strict_yaml.DuplicateKeyError as err:
        raise AnalysisError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise AnalysisError(f"{path}: not valid YAML: {err}") from None
    return _parse(doc, str(path))


def spec_for(search_space: str | Path, profile: str | None = None) -> TableSpec | None:
    """The shipped spec of a search space (its path or name) run under `profile`: specs/STEM.PROFILE.yaml
    where there is one (a profile whose suite names other benchmarks), else specs/STEM.yaml, else None."""
    stem = Path(search_space).stem
    for name in ([f"{stem}.{profile}.yaml"] if profile else []) + [f"{stem}.yaml"]:
        if (SPECS_DIR / name).is_file():
            return load_spec(SPECS_DIR / name)
    return None


def check_benchmarks(spec: TableSpec, benchmarks: Iterable[str], where: str | None = None) -> None:
    """Refuse a column of `spec` whose metric names a benchmark (B of val|test/B/METRIC) not among
    `benchmarks`, the names of the suite the runs evaluate (a set is shown sorted, a sequence in its order).
    Run-level metrics (test/zeroshot_avg, test/steps) name none. The AnalysisError names `where` (default:
    the spec's file), the key path and the suite, e.g. `smoke.yaml: columns[2].metric: 'test/mscoco/i2t_r1'
    names benchmark 'mscoco', which these runs do not evaluate (their benchmarks: scenes, digits)`.
    Pure: no run, no config, no file is read."""
    known = sorted(benchmarks) if isinstance(benchmarks, (set, frozenset)) else list(dict.fromkeys(benchmarks))
    for i, column in enumerate(spec.columns):
        name = benchmark_of(column.metric)
        if name is not None and name not in known:
            raise AnalysisError(f"{where or spec.origin}: columns[{i}].metric: {column.metric!r} names benchmark "
                                f"{name!r}, which these runs do not evaluate (their benchmarks: "
                                f"{', '.join(known) or 'none'})")


# ---- parsing ----------------------------------------------------------------------------------------------


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
        origin=origin,
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
    if not math.isfinite(scale):  # every cell of the column would show nan or inf
        read.fail(f"{key}.scale", f"{scale!r} is not a finite number")
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
