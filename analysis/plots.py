"""Figures of a report: where the two modalities sit, how geometry follows a swept parameter, how
metrics evolve while training, and what an Optuna search explored.

Every function takes the loaded `Runs` and returns a matplotlib `Figure` (or None when there is nothing
to draw) without saving it, so that callers and tests can look at its axes first; `save` writes it. Figures
are built directly, never through pyplot: no global figure registry, no GUI backend, nothing to close.

Only FINISHED trials are drawn. A "setting" is a group of trials that differ only by seed: a row of the
table, given by the table spec's row definition (`RowSpec`: the `by` columns, `order`, `names`), grouped
by `rows.group_rows`, so that a setting has the same place and label in a figure as in the table.
"""
from __future__ import annotations

import contextlib
import math
from numbers import Real
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import optuna
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from analysis.benchmarks import first_with
from analysis.errors import AnalysisError
from analysis.load import Runs
from analysis.rows import group_rows
from analysis.table_spec import RowSpec
from analysis.values import sort_key

PANEL_INCHES = 3.5
MAX_COLUMNS = 4  # panels per figure row
PNG_DPI = 120  # a 20-setting sweep's scatter is 1680 x 2100 pixels
GEOMETRY = {  # geometry metric of a retrieval benchmark (test/B/METRIC) -> (panel, line label)
    "modality_gap": ("modality gap", None),
    "uniformity_image": ("uniformity", "image"),
    "uniformity_text": ("uniformity", "text"),
    "uniformity_union": ("uniformity", "image + text"),
}


def save(fig: Figure, stem: Path) -> tuple[Path, Path]:
    """Write `stem.png` and `stem.pdf` (creating the folder) and return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.pdf"
    fig.savefig(png, dpi=PNG_DPI)
    # the constrained layout is solved by the first save; solving it again for the PDF costs a second
    fig.set_layout_engine("none")
    fig.savefig(pdf)
    return png, pdf


# ---- layout -------------------------------------------------------------------------------------------


def _panels(count: int, title: str) -> tuple[Figure, list[Axes]]:
    columns = min(count, MAX_COLUMNS)
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows), layout="constrained")
    fig.suptitle(title)
    return fig, [fig.add_subplot(rows, columns, i + 1) for i in range(count)]


def _header(rows: RowSpec) -> str:
    """What the settings' labels are values of (the table's header, e.g. λ): a label may be a bare 2."""
    return ", ".join(rows.header)


def _note(ax: Axes, text: str) -> None:
    """An empty panel that says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()


# ---- modality gap -------------------------------------------------------------------------------------


def gap_scatter(runs: Runs, rows: RowSpec, *, seeds: str = "tags.seed", max_points: int = 500,
                method: str = "pca") -> Figure | None:
    """One panel per setting (row of `rows`): its first seed's saved test embeddings (`embeddings.npz`),
    images and texts projected together to 2-D, each pair joined by a thin line, and the modality gap in
    the title. The projection is fitted on the first `max_points` pairs; the gap is measured on all saved
    pairs."""
    if method == "umap":
        _require_umap()
    elif method != "pca":
        raise AnalysisError(f"unknown projection method {method!r}: use 'pca' or 'umap'")
    groups = group_rows(runs.finished, rows)
    samples = [_first_embeddings(runs, group.trials, seeds) for group in groups]
    if not groups or all(sample is None for sample in samples):
        return None
    fig, axes = _panels(len(groups), f"Image and text embeddings by {_header(rows)} "
                                     f"({method.upper()} of the test sample)")
    for ax, group, sample in zip(axes, groups, samples):
        if sample is None:
            _note(ax, f"{group.label}\nno embeddings.npz in any finished run")
            continue
        seed, image, text = sample
        _draw_pairs(ax, image[:max_points], text[:max_points], method)
        gap = np.linalg.norm(image.mean(axis=0) - text.mean(axis=0))
        ax.set_title(f"{group.label}\nseed {seed}: gap {gap:.3f}", fontsize="medium")
    next(ax for ax, sample in zip(axes, samples) if sample is not None).legend(loc="best", markerscale=3)
    return fig


def _first_embeddings(runs: Runs, trials: pd.DataFrame, seeds: str) -> tuple[Any, np.ndarray, np.ndarray] | None:
    """(seed, image, text) of the lowest seed that saved embeddings, in float64; None if none did."""
    if seeds in trials.columns:
        trials = trials.sort_values(seeds, key=lambda column: column.map(sort_key), kind="stable")
    seed_of = trials[seeds] if seeds in trials.columns else pd.Series("?", index=trials.index)
    for run_id, seed in zip(trials["run_id"], seed_of):
        path = runs.artifact(run_id, "embeddings.npz")
        if path is not None:
            with np.load(path) as saved:
                return seed, saved["image"].astype(np.float64), saved["text"].astype(np.float64)
    return None


def _draw_pairs(ax: Axes, image: np.ndarray, text: np.ndarray, method: str) -> None:
    # one projection for both modalities: the gap is the offset between their clouds in that one space
    points = _project(np.vstack([image, text]), method)
    image_2d, text_2d = points[: len(image)], points[len(image) :]
    # Thousands of points and lines per panel: rasterised inside the PDF, which keeps it small and
    # quick to write and to open, while axes and text stay vector.
    ax.add_collection(LineCollection(np.stack([image_2d, text_2d], axis=1), colors="0.6", linewidths=0.3,
                                     alpha=0.5, zorder=1, rasterized=True))
    ax.scatter(*image_2d.T, s=6, color="C0", linewidths=0, label="image", zorder=2, rasterized=True)
    ax.scatter(*text_2d.T, s=6, color="C1", linewidths=0, label="text", zorder=2, rasterized=True)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([])
    ax.set_yticks([])


def _project(points: np.ndarray, method: str) -> np.ndarray:
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=0).fit_transform(points)
    return PCA(n_components=2).fit_transform(points)


def _require_umap() -> None:
    try:
        import umap  # noqa: F401
    except ImportError:
        raise AnalysisError("method='umap' needs umap-learn (pip install umap-learn); 'pca' needs nothing") from None


# ---- geometry against a swept parameter ---------------------------------------------------------------


def geometry_vs_param(runs: Runs, param: str, benchmark: str | None = None) -> Figure | None:
    """Two panels against the run-table column `param` (e.g. "params.objective.fusion_weight"): the test
    modality gap, and the test uniformity of images, texts and both, of `benchmark` (default: the first
    benchmark that logged a test modality gap, a retrieval one); the mean over a value's finished seeds
    with error bars of their standard deviation (none for a single seed). Values are grouped and sorted as
    table rows by `param` are; all-numeric values are drawn at their value, others as categories."""
    rows = RowSpec(by=(param,))
    groups = group_rows(runs.finished, rows)
    benchmark = benchmark or first_with(runs.finished, "test", "modality_gap")
    if benchmark is None:  # no benchmark reported a modality gap: no retrieval benchmark in the suite
        return None
    metrics = [m for m in GEOMETRY if f"metrics.test/{benchmark}/{m}" in runs.finished.columns]
    logged = [f"metrics.test/{benchmark}/{m}" for m in metrics]
    if not groups or not metrics or all(group.trials[logged].isna().all(axis=None) for group in groups):
        return None
    numeric = all(isinstance(group.key[0], float) for group in groups)
    x = np.array([group.key[0] for group in groups]) if numeric else np.arange(len(groups))

    fig, axes = _panels(2, f"Test geometry of {benchmark} against {_header(rows)}")
    for ax, panel in zip(axes, ("modality gap", "uniformity")):
        drawn = [m for m in metrics if GEOMETRY[m][0] == panel]
        if not drawn:
            _note(ax, f"no test {panel} metric of {benchmark} logged")
            continue
        for metric in drawn:
            # one seed: std NaN, no bar
            values = [group.trials[f"metrics.test/{benchmark}/{metric}"] for group in groups]
            ax.errorbar(x, [v.mean() for v in values], yerr=[v.std() for v in values], marker="o", capsize=3,
                        label=GEOMETRY[metric][1])
        ax.set_title(panel)
        ax.set_xlabel(_header(rows))
        if not numeric:
            ax.set_xticks(x, [group.label for group in groups])
        if len(drawn) > 1:
            ax.legend()
    axes[1].set_ylabel("log mean exp(-2 d²), lower = more uniform")
    return fig


# ---- training dynamics --------------------------------------------------------------------------------


def dynamics(runs: Runs, rows: RowSpec, *, keys: Sequence[str] | None = None) -> Figure | None:
    """One panel per metric key against the training step: a line per setting (row of `rows`; the mean
    over its seeds at each step) in a band from the seeds' minimum to their maximum. Default keys: the
    zero-shot average val/zeroshot_avg and the val/B/modality_gap of the first benchmark B that logged one."""
    if keys is None:
        gap = first_with(runs.finished, "val", "modality_gap")
        keys = ["val/zeroshot_avg"] + ([f"val/{gap}/modality_gap"] if gap is not None else [])
    groups = group_rows(runs.finished, rows)
    setting_of = {run_id: i for i, group in enumerate(groups) for run_id in group.trials["run_id"]}
    history = runs.history(list(keys), list(setting_of))
    if history.empty:
        return None
    history = history.assign(setting=history["run_id"].map(setting_of))
    # a trial restored from a checkpoint logs the steps after it again: each run counts once per step
    last = history.groupby(["key", "setting", "step", "run_id"], sort=False)["value"].last()
    stats = last.groupby(["key", "setting", "step"]).agg(["mean", "min", "max"])

    fig, axes = _panels(len(keys), "Training dynamics (mean over seeds, band: min to max)")
    for ax, key in zip(axes, keys):
        if key not in stats.index.get_level_values("key"):
            _note(ax, f"no {key} history in any finished run")
            continue
        for setting, curve in stats.loc[key].groupby(level="setting"):
            steps = curve.index.get_level_values("step")
            colour = f"C{setting % 10}"  # a setting keeps its colour in every panel
            ax.plot(steps, curve["mean"], color=colour, label=groups[setting].label)
            ax.fill_between(steps, curve["min"], curve["max"], color=colour, alpha=0.2, linewidth=0)
        ax.set_title(key)
        ax.set_xlabel("step")
    # one legend under the panels, out of the title's way: a sweep can have a dozen settings
    handles, labels = next(ax for ax in axes if ax.get_lines()).get_legend_handles_labels()
    fig.legend(handles, labels, title=_header(rows), loc="outside lower center", ncols=min(len(labels), 3),
               fontsize="small")
    return fig


# ---- Optuna -------------------------------------------------------------------------------------------


def optuna_views(runs: Runs, metric: str, mode: str) -> Figure | None:
    """The search as Optuna saw it, rebuilt from the finished trials (in start order) and their final
    `metric`: each trial's value with the running best, and fANOVA importances of the swept parameters
    (the `variant` tag and the dotted config keys tagged on the trials, where they vary).
    None when fewer than 2 finished trials have the metric."""
    if mode not in ("max", "min"):
        raise AnalysisError(f"mode must be 'max' or 'min', got {mode!r}")
    column = f"metrics.{metric}"
    trials = runs.finished
    if column not in trials.columns:
        return None
    trials = trials.dropna(subset=[column]).sort_values("start_time", kind="stable")
    if len(trials) < 2:
        return None
    values = trials[column].to_numpy(dtype=float)

    fig, (history_ax, importance_ax) = _panels(2, f"Optuna search on {metric} ({mode})")
    _draw_history(history_ax, values, mode, metric)
    swept = _swept_parameters(trials)
    same = np.ptp(values) == 0  # fANOVA shares out the variance of the metric: here there is none
    # Optuna weighs only the parameters that every trial set
    importances = _importances(values, swept, mode) if swept and not same else {}
    if importances:
        names = sorted(importances, key=importances.get)  # the most important on top
        importance_ax.barh(names, [importances[name] for name in names])
        importance_ax.set_title("parameter importance (fANOVA)")
        importance_ax.set_xlabel("share of the variance of the metric")
    else:
        why = "every trial scored the same" if same else "no parameter that every trial set varies"
        _note(importance_ax, f"no parameter importances: {why}")
    return fig


def _draw_history(ax: Axes, values: np.ndarray, mode: str, metric: str) -> None:
    number = np.arange(len(values))
    best = np.maximum.accumulate(values) if mode == "max" else np.minimum.accumulate(values)
    ax.scatter(number, values, color="C0", label="trial")
    ax.plot(number, best, color="C3", drawstyle="steps-post", label="best so far")
    ax.set_title("optimisation history")
    ax.set_xlabel("trial (start order)")
    ax.set_ylabel(metric)
    ax.legend()


def _importances(values: np.ndarray, swept: dict[str, list], mode: str) -> dict[str, float]:
    distributions = {name: _distribution(column) for name, column in swept.items()}
    with _quiet_optuna():
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        for i, value in enumerate(values):
            # a conditional parameter that a trial did not use is absent from it, as in Optuna
            params = {name: column[i] for name, column in swept.items() if column[i] is not None}
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={name: distributions[name] for name in params}, value=float(value)))
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {name: float(share) for name, share in found.items()}


def _swept_parameters(trials: pd.DataFrame) -> dict[str, list]:
    """Parameter name -> its Optuna value per trial (None where the trial did not use it), for what varies
    across the trials: the `variant` tag and every dotted config key the sweep tagged on its trials
    (typed from `params.*`). An Optuna sweep has a single seed, so the seed is never among them."""
    tagged = [c.removeprefix("tags.") for c in trials.columns if c.startswith("tags.")]
    columns = {"variant": "tags.variant"} if "variant" in tagged else {}
    columns.update({key: f"params.{key}" for key in tagged if "." in key and f"params.{key}" in trials.columns})
    swept = {}
    for name, column in columns.items():
        # a conditional parameter whose condition failed keeps an unused default but gets no tag
        used = trials[f"tags.{name}"].notna()
        # plain lists: a Series would turn None back into NaN and Python ints into numpy's
        values = [_optuna_value(v) if u else None for v, u in zip(trials[column], used)]
        if len({v for v in values if v is not None}) > 1:
            swept[name] = values
    return swept


def _optuna_value(value: Any) -> Any:
    """Optuna's choices are plain Python scalars: NaN means unused, a tuple (regularizers) becomes text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    return value if isinstance(value, str) else str(value)


def _distribution(values: list) -> optuna.distributions.BaseDistribution:
    present = [v for v in values if v is not None]
    if all(type(v) is int for v in present):
        return optuna.distributions.IntDistribution(min(present), max(present))
    if all(type(v) in (int, float) for v in present):
        return optuna.distributions.FloatDistribution(min(present), max(present))
    return optuna.distributions.CategoricalDistribution(sorted(set(present), key=sort_key))


@contextlib.contextmanager
def _quiet_optuna():
    # Optuna announces every study it creates at INFO level: noise in a report
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)
