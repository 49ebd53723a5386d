"""A built table and how it is written out: Markdown, LaTeX (a booktabs tabular) and CSV.

A `Table` holds the cells analysis/tables.py computed: per row its `by` values and n, per metric column
the mean, the sample standard deviation and the count in display units, deltas against the baseline and
their intervals, and the cost. The CSV is those cells as they are; Markdown and LaTeX show one cell per
metric: "mean ± std", the mean alone when only one run counted, "se s" the binomial standard error of one
run's figure where the metric is a proportion of logged test samples, "(n=k)" when fewer runs than the
row's n logged the metric, "n/a" when none did, and the best mean of each column in bold. With a baseline, a Δ
column follows each metric: the signed delta and, with `significance`, its interval "[lo, hi]" ("n/a"
where a side has fewer than two runs). Row labels are those of analysis/rows.py, so the report's figures
name each setting alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.rows import keys_of, row_key, value_label
from analysis.table_spec import ColumnSpec, TableSpec

COST_FORMAT = "{:.3g}"


@dataclass
class Table:
    """`cells` has one row per table row: the `by` values, n, then per metric `<name> mean`, `std`, `n`,
    `binomial_se` (and `delta`, `lo`, `hi` against the baseline), then the cost column, all in display units."""

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
        keys = keys_of(cells[list(spec.rows.by)])
        baseline = row_key(spec.rows.baseline, len(spec.rows.by)) if spec.rows.baseline is not None else None
        body = []
        for i, key in enumerate(keys):
            row = cells.iloc[i]
            line = [[(value_label(spec.rows, value), False)] for value in key] + [[(str(int(row["n"])), False)]]
            for column in spec.columns:
                line.append(_metric_cell(column, row, best[column.name][i]))
                if baseline is not None:
                    line.append([(_delta_cell(column, row, key == baseline, spec.significance), False)])
            if self.cost_column:
                line.append([(_number(COST_FORMAT, row[self.cost_column]), False)])
            body.append(line)
        return header, body


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
        se = row.get(f"{column.name} binomial_se", math.nan)
        if not math.isnan(se):
            cell.append((f", se {column.format.format(se)}", False))
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
