"""Tables from recorded runs: the cells a table spec asks for, and what was left out of them.

A table is made in four steps, each a module readable alone: the spec says what to show
(analysis/table_spec.py), the runs are grouped into rows (analysis/rows.py), this module averages each
row's runs into cells, and the built `Table` is written out (analysis/render.py). `build_table` does all
four; `default_spec` makes a spec for runs no shipped spec describes.

A row averages its FINISHED runs only: the mean, the sample standard deviation (ddof=1; undefined, and
left empty, with one run) and the count n, all in display units (after `scale`). A row's `n` counts its
finished runs; a metric missing in some of them has a smaller count of its own. Against a `baseline` row
each metric gets its delta and, with `significance`, a 95% Welch interval (`welch_interval`); `cost` adds
the mean accelerator-hours per run. Runs not averaged (failed, killed, running, without a row value or
without the metric) are listed in `Table.excluded` and in a note under the table; runs of one row that
share a seed get a note too.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.benchmarks import benchmarks, first_with, tagged_benchmarks
from analysis.errors import AnalysisError
from analysis.load import Runs
from analysis.render import Table
from analysis.rows import group_rows, require_column, row_key, select
from analysis.table_spec import ColumnSpec, RowSpec, TableSpec, check_benchmarks, load_spec
from analysis.values import show, value_key
from ito_sweeps.config import Config

CONFIDENCE = 0.95
# Metrics that are the fraction of a benchmark's samples scored right; at the test pass each has a binomial
# standard error
PROPORTION_METRIC = r"(zeroshot_top\d+|probe_top1|[it]2[ti]_r\d+)"
PROPORTION = re.compile(rf"test/(?P<bench>[^/]+)/{PROPORTION_METRIC}")
RESOURCE_TAGS = ("tags.resources.num_workers", "tags.resources.cpus_per_worker", "tags.resources.gpus_per_worker")
# A table built without a spec: (metric, column name) of each benchmark where logged, in percent, then the
# zero-shot average, then the modality gap of the first benchmark that reports one (a retrieval benchmark)
DEFAULT_COLUMNS = (("zeroshot_top1", "ZS"), ("probe_top1", "probe"), ("i2t_r1", "I→T R@1"), ("t2i_r1", "T→I R@1"))


def build_table(runs: Runs | pd.DataFrame, spec: TableSpec | Mapping | str | Path) -> Table:
    """The table `spec` describes over `runs` (a loaded `Runs`, or its trials table). A column naming a
    benchmark that no run's `benchmarks` tag lists is refused first (`check_benchmarks`): the suite
    configured for these runs never reports it."""
    spec = spec if isinstance(spec, TableSpec) else load_spec(spec)
    frame = _trials(runs)
    suite = tagged_benchmarks(frame)
    if suite is not None:  # runs recorded before benchmark suites carry no tag: their columns are not checked
        check_benchmarks(spec, suite)
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
        cells[f"{column.name} binomial_se"] = _binomial_se(frame[kept], column, code, cells[f"{column.name} mean"])
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


# ---- the default spec -------------------------------------------------------------------------------------


def default_spec(runs: Runs | pd.DataFrame) -> TableSpec:
    """A generic table for runs no shipped spec describes: a row per setting; per benchmark (in suite
    order) its zero-shot top-1, linear probe, I→T and T→I R@1 where the runs logged them; the zero-shot
    average; the modality gap of the first benchmark that logged one."""
    frame = _trials(runs)
    percent = {"scale": 100, "format": "{:.1f}"}
    columns = [{"metric": f"test/{bench}/{metric}", "name": f"{bench} {name}", **percent}
               for bench in benchmarks(frame) for metric, name in DEFAULT_COLUMNS
               if f"metrics.test/{bench}/{metric}" in frame]
    if "metrics.test/zeroshot_avg" in frame:
        columns.append({"metric": "test/zeroshot_avg", "name": "ZS avg", **percent})
    gap = first_with(frame, "test", "modality_gap")
    if gap is not None:
        columns.append({"metric": f"test/{gap}/modality_gap", "name": f"{gap} modality gap", "better": "lower"})
    if not columns:
        wanted = ", ".join(metric for metric, _ in DEFAULT_COLUMNS)
        raise AnalysisError(f"these runs logged no test/BENCHMARK/METRIC of {wanted}, modality_gap, nor "
                            f"test/zeroshot_avg: pass a table spec naming the metrics to show")
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


# ---- building steps ---------------------------------------------------------------------------------------


def _trials(runs: Runs | pd.DataFrame) -> pd.DataFrame:
    frame = runs.trials if isinstance(runs, Runs) else runs
    if frame.empty:
        raise AnalysisError("there are no runs to tabulate")
    return frame.reset_index(drop=True)  # runs are told apart by their index label


def _seeds_column(frame: pd.DataFrame, seeds: str | None) -> str | None:
    if seeds is None:
        return "tags.seed" if "tags.seed" in frame else None
    require_column(frame, seeds, "seeds")
    return seeds


def _baseline_index(rows: RowSpec, row_keys: list[tuple]) -> int | None:
    if rows.baseline is None:
        return None
    key = row_key(rows.baseline, len(rows.by))
    if key not in row_keys:
        shown = "; ".join(", ".join(map(show, k)) for k in row_keys)
        raise AnalysisError(f"rows.baseline: {', '.join(map(show, key))} matches no row (rows: {shown})")
    return row_keys.index(key)


def _metric_values(runs: Runs | pd.DataFrame, frame: pd.DataFrame, column: ColumnSpec, key: str) -> pd.Series:
    if _source(column) in frame:
        return frame[_source(column)].astype(float)
    # a metric is known when some run logged it: then it has a final value
    require_column(frame, f"metrics.{column.metric}", key)
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


def _binomial_se(finished: pd.DataFrame, column: ColumnSpec, code: pd.Series, mean: pd.Series) -> np.ndarray:
    """Each cell's binomial standard error, scale * sqrt(p (1 - p) / N), p its mean as a fraction and N the
    benchmark's test samples (the mean over the row's runs): how far one run's figure moves from the test
    set's finite size alone, the floor under any spread over seeds. T→I recall is counted over images, not
    the more numerous captions, so its figure is an upper bound. NaN for a metric that is no proportion,
    or whose benchmark's sample count was not logged."""
    match = PROPORTION.fullmatch(column.metric)
    samples = f"metrics.test/{match['bench']}/samples" if match else None
    if samples not in finished:
        return np.full(len(mean), np.nan)
    n = finished[samples].astype(float).groupby(code).mean().reindex(mean.index).to_numpy()
    p = mean.to_numpy(dtype=float) / column.scale
    return column.scale * np.sqrt(p * (1 - p) / n)


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
        require_column(finished, tag, "cost")
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
    repeated = [f"{labels[row]} has {count} runs with {seeds} = {show(seed)}"
                for (row, seed), count in counts.items() if count > 1]
    return [f"repeated seeds: {_listing(repeated)}"] if repeated else []


def _listing(items: list[str], limit: int = 10) -> str:
    """Items for a note under a table, which must stay readable however many runs a sweep has."""
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def _first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
