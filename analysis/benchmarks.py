"""Which evaluation benchmarks recorded runs evaluated, read from a run table (no MLflow, no config).

Every metric of a benchmark is named val|test/BENCHMARK/METRIC (ito_sweeps/eval_config.py); a few
run-level metrics have two parts (test/zeroshot_avg, test/steps). Every trial run carries the tag
`benchmarks`, its suite's names joined by commas in the suite's order. The default table and the
figures choose their metrics from what these functions find.
"""
from __future__ import annotations

import pandas as pd

TAG = "tags.benchmarks"


def benchmark_of(metric: str) -> str | None:
    """The benchmark a metric name belongs to: B of val|test/B/METRIC, None for any other name."""
    parts = metric.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] in ("val", "test") else None


def tagged_benchmarks(frame: pd.DataFrame) -> list[str] | None:
    """The union of the runs' `benchmarks` tags, in suite order (first run first); None when no run has
    the tag (runs recorded before benchmark suites existed)."""
    if TAG not in frame:
        return None
    tags = [value for value in frame[TAG] if isinstance(value, str)]
    if not tags:
        return None
    return list(dict.fromkeys(name for tag in tags for name in tag.split(",") if name))


def benchmarks(frame: pd.DataFrame) -> list[str]:
    """Every benchmark the runs evaluated: the tagged ones in suite order, then any other that names a
    logged metric column (metrics.val|test/B/...), in column order."""
    logged = (benchmark_of(c.removeprefix("metrics.")) for c in frame.columns if c.startswith("metrics."))
    return list(dict.fromkeys([*(tagged_benchmarks(frame) or []), *(b for b in logged if b is not None)]))


def first_with(frame: pd.DataFrame, split: str, metric: str) -> str | None:
    """The first benchmark (in `benchmarks` order) some run logged `split`/B/`metric` for, else None:
    e.g. the first retrieval benchmark, whose test modality gap a report draws."""
    return next((b for b in benchmarks(frame) if _logged(frame, f"metrics.{split}/{b}/{metric}")), None)


def _logged(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and bool(frame[column].notna().any())
