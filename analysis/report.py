"""One folder per report: the table in three formats, the plots as PNG and PDF, and an index.md.

The same files are logged under `report/` in the sweep's parent run, so they sit beside the runs in the
MLflow UI. Everything is recomputed from the recorded runs: running the report again after more trials
finish (or after `--resume`) simply gives the new numbers.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pandas as pd
import yaml

from analysis import plots
from analysis.load import Runs
from analysis.render import Table
from analysis.rows import select
from analysis.table_spec import TableSpec, spec_for
from analysis.tables import build_table, default_spec

ARTIFACT_DIR = "report"


def write_report(runs: Runs, out: Path, spec: TableSpec | None = None) -> Path:
    """Write the report of `runs` into `out` (replacing an earlier report there); returns index.md."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    spec, layout = (spec, "the given spec") if spec is not None else _spec_of(runs)
    table = build_table(runs, spec)
    for suffix, text in (("md", table.to_markdown()), ("tex", table.to_latex()), ("csv", table.to_csv())):
        (out / f"table.{suffix}").write_text(text)
    figures = _figures(runs, spec, out)
    index = out / "index.md"
    index.write_text(_index(runs, layout, table, figures))
    for parent in runs.parents["run_id"]:
        runs.client.log_artifacts(parent, str(out), ARTIFACT_DIR)
    return index


def _spec_of(runs: Runs) -> tuple[TableSpec, str]:
    """The shipped spec of the sweep's search space and profile (analysis/specs/SPACE.PROFILE.yaml, else
    SPACE.yaml), else a generic one for whatever was swept and evaluated."""
    parents = runs.parents
    spaces = parents.get("tags.search_space", pd.Series(None, index=parents.index, dtype=object))
    profiles = parents.get("tags.profile", pd.Series(None, index=parents.index, dtype=object))
    for space, profile in zip(spaces, profiles):
        if isinstance(space, str):
            found = spec_for(space, profile if isinstance(profile, str) else None)
            if found is not None:
                return found, f"analysis/specs/{Path(found.origin).name}"
    return default_spec(runs), "generic (rows by variant or swept keys; pass --spec FILE for another)"


def _figures(runs: Runs, spec: TableSpec, out: Path) -> dict[str, str | None]:
    """Figure title -> PNG file written (a PDF beside it), or None when there was nothing to plot."""
    runs = dataclasses.replace(runs, trials=select(runs.trials, spec.where))  # the table's runs only
    made = {
        "gap_scatter": ("Modality gap: PCA of the held-out image and text embeddings",
                        plots.gap_scatter(runs, spec.rows)),
        "dynamics": ("Training dynamics: validation zero-shot average and modality gap",
                     plots.dynamics(runs, spec.rows)),
    }
    (first, *others) = spec.rows.by
    if not others and first != "tags.variant" and _is_numeric(runs.finished[first]):
        made["geometry"] = ("Modality gap and uniformity against the swept parameter",
                            plots.geometry_vs_param(runs, first))
    optuna = runs.parents[runs.parents.get("tags.search", pd.Series(dtype=str)) == "optuna"]
    if len(optuna):
        # a multi-objective sweep records lists: its history is drawn for the first metric
        metric, mode = (_first(optuna.get(f"tags.{key}", pd.Series([default])).iloc[0])
                        for key, default in (("metric", "val/zeroshot_avg"), ("mode", "max")))
        made["optuna"] = ("Optuna: optimisation history and parameter importance",
                          plots.optuna_views(runs, metric, mode))
    return {title: None if figure is None else plots.save(figure, out / stem)[0].name
            for stem, (title, figure) in made.items()}


def _first(tag: str) -> str:
    value = yaml.safe_load(tag)
    return str(value[0] if isinstance(value, list) else value)


def _is_numeric(values: pd.Series) -> bool:
    """Numbers, also as tags hold them ("0.5"): a swept number gets a plot against it."""
    if pd.api.types.is_bool_dtype(values) or values.empty:
        return False
    return bool(pd.to_numeric(values, errors="coerce").notna().all())


def _index(runs: Runs, layout: str, table: Table, figures: dict[str, str | None]) -> str:
    counts = runs.trials["status"].value_counts().to_dict()
    status = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    parents = ", ".join(f"`{r}`" for r in runs.parents["run_id"]) or "none"
    lines = [
        f"# Report: {runs.experiment_name}",
        "",
        f"{len(runs.trials)} trial run(s) ({status}) from MLflow `{runs.tracking_uri}`, experiment "
        f"`{runs.experiment_name}`, sweep parent run(s) {parents}. Table layout: {layout}.",
        "",
        table.to_markdown(),
        "",
        "Also as [LaTeX](table.tex) (booktabs) and [CSV](table.csv).",
        "",
    ]
    for title, png in figures.items():
        lines += [f"## {title}", ""]
        if png is None:
            lines += ["Nothing to plot: no finished trial recorded what this figure needs.", ""]
        else:
            lines += [f"![{title}]({png})", "", f"[PDF]({Path(png).with_suffix('.pdf').name})", ""]
    return "\n".join(lines)
