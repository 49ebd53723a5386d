"""Report figures, drawn from a real MLflow store and checked against what was logged there.

The shared store (tests/analysis_store.py) holds the ablation and lambda sweeps; `edge_uri` adds, in a
copy of it, runs that a figure must leave out or cannot draw (running, failed, no embeddings) and
Optuna-style searches.
"""
import dataclasses
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from sklearn.decomposition import PCA

from analysis import plots
from analysis.errors import AnalysisError
from analysis.load import load_runs
from analysis.table_spec import RowSpec, load_spec, spec_for
from analysis.tables import build_table
from tests.analysis_store import ABLATION_ROWS, VAL_STEPS

GEOMETRY = ["scenes/modality_gap", "scenes/uniformity_image", "scenes/uniformity_text", "scenes/uniformity_union"]
START_MS = 1_700_000_000_000
SUITE_GAPS = {"A": ((0.5, 0.4), (0.9, 0.8)), "B": ((0.3, 0.2), (0.7, 0.6))}  # val/mscoco, val/flickr gap per step

# (fusion_weight, depth, final val/zeroshot_avg, status) per Optuna trial, in start order
OPTUNA_TRIALS = [(0.3, 1, 0.30, "FINISHED"), (1.5, 2, 0.35, "FINISHED"), (7.0, 4, 0.33, "FINISHED"),
                 (0.8, 2, 0.90, "FAILED"), (2.5, 2, 0.41, "FINISHED"), (5.0, 1, 0.39, "FINISHED"),
                 (0.5, 2, 0.28, "FINISHED"), (3.0, 4, 0.40, "FINISHED")]


@pytest.fixture(scope="module")
def edge_uri(analysis_store, tmp_path_factory):
    """A copy of the shared store (its schema set-up takes seconds; a file copy does not) with more runs."""
    folder = tmp_path_factory.mktemp("plots_store")
    shutil.copy(analysis_store.tracking_uri.removeprefix("sqlite:///"), folder / "mlflow.db")
    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri)
    rng = np.random.default_rng(1)

    edge = _experiment(client, folder, "edge")
    embeddings = {"image": _unit(rng.normal(size=(6, 4))), "text": _unit(rng.normal(size=(6, 4)))}
    # A seed=0 logged step 40 twice (a trial restored from an earlier checkpoint): the later value counts
    _log_run(client, edge, "A seed=0", {"variant": "A", "seed": "0"}, {"test/scenes/modality_gap": 0.5},
             history=[(40, 0.9), (40, 0.2), (80, 0.5)])
    _log_run(client, edge, "A seed=1", {"variant": "A", "seed": "1"}, {"test/scenes/modality_gap": 0.7},
             history=[(40, 0.4), (80, 0.7)], embeddings=embeddings)
    _log_run(client, edge, "B seed=0", {"variant": "B", "seed": "0"}, {"test/scenes/modality_gap": 0.2})
    # left out everywhere: still running (its seed sorts first), or failed
    _log_run(client, edge, "A seed=-1", {"variant": "A", "seed": "-1"}, {"test/scenes/modality_gap": 9.0},
             history=[(40, 9.0), (80, 9.0)], embeddings=embeddings, status="RUNNING")
    _log_run(client, edge, "C seed=0", {"variant": "C", "seed": "0"}, {"test/scenes/modality_gap": 9.0},
             embeddings=embeddings, status="FAILED")

    optuna = _experiment(client, folder, "optuna")
    for i, (weight, depth, score, status) in enumerate(OPTUNA_TRIALS):
        swept = {"objective.fusion_weight": str(weight), "fusion.depth": str(depth)}
        _log_run(client, optuna, f"trial {i}", {**swept, "seed": "0", "ray.trial_id": f"t{i}",
                                                  "resources.num_workers": "1"},
                 {"val/zeroshot_avg": score}, params={**swept, "run.seed": "0"}, status=status, start=i)

    # fusion.depth applies to trials 1 and 2 only: the others keep a default in params but get no tag
    conditional = _experiment(client, folder, "optuna_conditional")
    for i, (weight, depth, score, _) in enumerate(OPTUNA_TRIALS[:4]):
        tags = {"objective.fusion_weight": str(weight), **({"fusion.depth": str(depth)} if i in (1, 2) else {})}
        _log_run(client, conditional, f"trial {i}", tags, {"val/zeroshot_avg": score},
                 params={"objective.fusion_weight": str(weight), "fusion.depth": str(depth)}, start=i)
    # a suite whose retrieval benchmarks are its second and third (sorted, flickr's columns come first)
    suite = _experiment(client, folder, "suite")
    for variant, (mscoco, flickr) in SUITE_GAPS.items():
        _log_run(client, suite, f"{variant} seed=0", {"variant": variant, "seed": "0",
                                                       "benchmarks": "imagenet1k,mscoco,flickr"},
                 {"test/imagenet1k/zeroshot_top1": 0.5, "test/mscoco/modality_gap": mscoco[-1],
                  "test/flickr/modality_gap": flickr[-1]},
                 history=[(40, 0.1), (80, 0.2)],
                 histories={"val/mscoco/modality_gap": list(zip((40, 80), mscoco)),
                            "val/flickr/modality_gap": list(zip((40, 80), flickr))})
    return uri


def _experiment(client, folder, name):
    return client.create_experiment(name, artifact_location=(folder / "mlartifacts" / name).as_uri())


def _log_run(client, experiment, name, tags, metrics, *, params=None, history=(), histories=None, embeddings=None,
             status="FINISHED", start=0):
    """A run with final `metrics` (at step 120), a val/zeroshot_avg `history` of (step, value) and more
    `histories` (key -> [(step, value)]), each in order."""
    run_id = client.create_run(experiment, start_time=START_MS + start, run_name=name).info.run_id
    histories = {"val/zeroshot_avg": history, **(histories or {})}
    logged = [Metric(key, v, START_MS + i, step) for key, values in histories.items()
              for i, (step, v) in enumerate(values)]
    client.log_batch(run_id, metrics=logged + [Metric(k, v, START_MS, 120) for k, v in metrics.items()],
                     params=[Param(k, v) for k, v in (params or {}).items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    if embeddings is not None:
        with tempfile.TemporaryDirectory() as scratch:
            np.savez(Path(scratch) / "embeddings.npz", **embeddings)
            client.log_artifact(run_id, str(Path(scratch) / "embeddings.npz"))
    if status != "RUNNING":
        client.set_terminated(run_id, status)


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _runs(uri, experiment):
    return load_runs(uri, experiment=experiment)


def _logged(analysis_store, sweep):
    """What the store logged for the finished trials of a sweep, one row per trial."""
    return pd.DataFrame([
        {"run_id": t.run_id, "seed": int(t.tags["seed"]), "variant": t.tags.get("variant"),
         "lam": float(t.params["objective.fusion_weight"]), **{m: t.test.get(m, np.nan) for m in GEOMETRY}}
        for t in analysis_store.trials[sweep] if t.status == "FINISHED"
    ])


def _restrict(runs, keep):
    """The same runs with a subset of the trials, as a caller narrowing a report down would pass them."""
    return dataclasses.replace(runs, trials=runs.trials[keep(runs.trials)].reset_index(drop=True))


def _text(ax):
    return " ".join(t.get_text() for t in ax.texts)


def _rows(by, **more):
    """The row definition of a table spec, as a report hands it to the figures."""
    return load_spec({"rows": {"by": by, **more}, "columns": [{"metric": "test/scenes/zeroshot_top1"}]}).rows


BY_VARIANT = RowSpec(by=("tags.variant",))


# ---- modality gap scatter -----------------------------------------------------------------------------


def test_gap_scatter_projects_each_settings_first_seed_with_its_pairs_joined(analysis_store):
    runs = _runs(analysis_store.tracking_uri, "ablation")
    fig = plots.gap_scatter(runs, _rows("tags.variant", order=list(ABLATION_ROWS)), max_points=10)

    logged = _logged(analysis_store, "ablation")
    assert fig.get_suptitle() == "Image and text embeddings by variant (PCA of the test sample)"
    assert len(fig.axes) == 3
    for ax, row in zip(fig.axes, ABLATION_ROWS):
        run_id = logged[(logged["variant"] == row) & (logged["seed"] == 0)]["run_id"].item()
        with np.load(runs.artifact(run_id, "embeddings.npz")) as saved:
            image, text = saved["image"].astype(float), saved["text"].astype(float)
        expected = PCA(n_components=2).fit_transform(np.vstack([image[:10], text[:10]]))
        scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
        [pairs] = [c for c in ax.collections if isinstance(c, LineCollection)]
        assert [c.get_label() for c in scatters] == ["image", "text"]
        np.testing.assert_allclose(scatters[0].get_offsets(), expected[:10], atol=1e-9)
        np.testing.assert_allclose(scatters[1].get_offsets(), expected[10:], atol=1e-9)
        np.testing.assert_allclose(np.array(pairs.get_segments()), np.stack([expected[:10], expected[10:]], axis=1),
                                   atol=1e-9)
        gap = np.linalg.norm(image.mean(axis=0) - text.mean(axis=0))  # over all 24 saved pairs
        assert ax.get_title() == f"{row}\nseed 0: gap {gap:.3f}"


def test_gap_scatter_takes_the_first_seed_with_embeddings_and_says_when_a_setting_has_none(edge_uri):
    runs = _runs(edge_uri, "edge")
    fig = plots.gap_scatter(runs, BY_VARIANT)
    a, b = fig.axes  # no panel for the failed C; the running A seed=-1 is not drawn
    assert a.get_title().startswith("A\nseed 1: gap ")
    assert len([c for c in a.collections if isinstance(c, PathCollection)]) == 2
    assert not b.collections and "B\nno embeddings.npz in any finished run" in _text(b)
    assert plots.gap_scatter(_restrict(runs, lambda t: t["tags.variant"] == "B"), BY_VARIANT) is None


def test_umap_needs_umap_learn_and_unknown_projections_are_refused(analysis_store):
    runs = _runs(analysis_store.tracking_uri, "ablation")
    with pytest.raises(AnalysisError, match="unknown projection method 'tsne'"):
        plots.gap_scatter(runs, BY_VARIANT, method="tsne")
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(AnalysisError, match="needs umap-learn"):
            plots.gap_scatter(runs, BY_VARIANT, method="umap")


# ---- geometry against a parameter ---------------------------------------------------------------------


def _error_bars(container):
    """(x, mean, half-width of the error bar: NaN where none is drawn) of one errorbar() call."""
    line, _, (bars,) = container.lines
    x, y = line.get_xdata(), line.get_ydata()
    half = np.array([(s[1, 1] - s[0, 1]) / 2 if len(s) else np.nan for s in bars.get_segments()])
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float), half


def test_geometry_against_a_numeric_param_shows_mean_and_std_over_seeds(analysis_store):
    runs = _runs(analysis_store.tracking_uri, "lambda")
    fig = plots.geometry_vs_param(runs, "params.objective.fusion_weight")

    expected = _logged(analysis_store, "lambda").groupby("lam")[GEOMETRY].agg(["mean", "std"])
    assert fig.get_suptitle() == "Test geometry of scenes against objective.fusion_weight"
    gap_ax, uniformity_ax = fig.axes
    assert (gap_ax.get_title(), uniformity_ax.get_title()) == ("modality gap", "uniformity")
    assert len(gap_ax.containers) == 1 and len(uniformity_ax.containers) == 3
    assert [t.get_text() for t in uniformity_ax.get_legend().get_texts()] == ["image", "text", "image + text"]
    for container, metric in zip(gap_ax.containers + uniformity_ax.containers, GEOMETRY):
        x, mean, half = _error_bars(container)
        np.testing.assert_allclose(x, [0.0, 2.0, 6.0])
        np.testing.assert_allclose(mean, expected[(metric, "mean")])
        np.testing.assert_allclose(half, expected[(metric, "std")])


def test_geometry_against_a_categorical_param_uses_sorted_categories(analysis_store):
    runs = _runs(analysis_store.tracking_uri, "ablation")
    fig = plots.geometry_vs_param(runs, "tags.variant")

    expected = _logged(analysis_store, "ablation").groupby("variant")["scenes/modality_gap"].agg(["mean", "std"])
    expected = expected.loc[sorted(ABLATION_ROWS)]  # the failed run logged no test metrics
    x, mean, half = _error_bars(fig.axes[0].containers[0])
    np.testing.assert_allclose(x, [0, 1, 2])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == sorted(ABLATION_ROWS)
    np.testing.assert_allclose(mean, expected["mean"])
    np.testing.assert_allclose(half, expected["std"])


def test_geometry_says_which_metrics_were_never_logged(analysis_store):
    runs = _runs(analysis_store.tracking_uri, "lambda")
    gap_only = dataclasses.replace(runs, trials=runs.trials.drop(columns=[f"metrics.test/{m}" for m in GEOMETRY[1:]]))
    gap_ax, uniformity_ax = plots.geometry_vs_param(gap_only, "params.objective.fusion_weight").axes
    assert len(gap_ax.containers) == 1
    assert not uniformity_ax.containers and "no test uniformity metric of scenes logged" in _text(uniformity_ax)


def test_geometry_leaves_out_unfinished_runs_and_draws_nothing_without_them(edge_uri):
    runs = _runs(edge_uri, "edge")
    x, mean, half = _error_bars(plots.geometry_vs_param(runs, "tags.variant").axes[0].containers[0])
    np.testing.assert_allclose(mean, [0.6, 0.2])  # A: seeds 0 and 1, not the running one; no failed C
    np.testing.assert_allclose(half[0], np.std([0.5, 0.7], ddof=1))
    assert np.isnan(half[1])  # one seed: no spread to show
    assert plots.geometry_vs_param(_restrict(runs, lambda t: t["status"] != "FINISHED"), "tags.variant") is None
    with pytest.raises(AnalysisError, match="rows.by: the runs have no column 'params.nope'"):
        plots.geometry_vs_param(runs, "params.nope")


# ---- training dynamics --------------------------------------------------------------------------------


def test_dynamics_draws_the_mean_over_seeds_in_a_min_max_band(analysis_store):
    runs = _runs(analysis_store.tracking_uri, "ablation")
    fig = plots.dynamics(runs, _rows("tags.variant", order=list(ABLATION_ROWS)))

    finished = [t for t in analysis_store.trials["ablation"] if t.status == "FINISHED"]
    # the default keys: the zero-shot average and the gap of the suite's retrieval benchmark, scenes
    assert [ax.get_title() for ax in fig.axes] == ["val/zeroshot_avg", "val/scenes/modality_gap"]
    for ax in fig.axes:
        name = ax.get_title().removeprefix("val/")
        lines, bands = ax.get_lines(), [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert [line.get_label() for line in lines] == list(ABLATION_ROWS) and len(bands) == 3
        for line, band, row in zip(lines, bands, ABLATION_ROWS):
            # the failed fourth seed of the fusion row logged val values too: they must not count
            seeds = np.array([t.val[name] for t in finished if t.tags["variant"] == row])
            np.testing.assert_allclose(line.get_xdata(), VAL_STEPS)
            np.testing.assert_allclose(line.get_ydata(), seeds.mean(axis=0))
            vertices = band.get_paths()[0].vertices
            for step, low, high in zip(VAL_STEPS, seeds.min(axis=0), seeds.max(axis=0)):
                at_step = vertices[vertices[:, 0] == step, 1]
                np.testing.assert_allclose([at_step.min(), at_step.max()], [low, high])


def test_dynamics_counts_each_finished_run_once_per_step(edge_uri):
    fig = plots.dynamics(_runs(edge_uri, "edge"), BY_VARIANT, keys=("val/zeroshot_avg",))
    [a] = fig.axes[0].get_lines()  # B logged no history; the running A seed=-1 is left out
    np.testing.assert_allclose(a.get_ydata(), [np.mean([0.2, 0.4]), np.mean([0.5, 0.7])])  # the last step-40 value


def test_dynamics_notes_a_key_nobody_logged_and_returns_none_without_history(analysis_store):
    runs = _runs(analysis_store.tracking_uri, "lambda")
    by_lambda = _rows("params.objective.fusion_weight")
    fig = plots.dynamics(runs, by_lambda, keys=("val/zeroshot_avg", "val/nothing"))
    logged, missing = fig.axes
    # numbers sorted numerically, shown as the table shows them; the legend says what they are
    assert [line.get_label() for line in logged.get_lines()] == ["0", "2", "6"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["0", "2", "6"]
    assert fig.legends[0].get_title().get_text() == "objective.fusion_weight"
    assert not missing.get_lines() and "no val/nothing history in any finished run" in _text(missing)
    assert plots.dynamics(runs, by_lambda, keys=("val/nothing",)) is None


def test_a_setting_has_the_label_of_its_table_row(analysis_store):
    runs = _runs(analysis_store.tracking_uri, "lambda")
    shipped = spec_for("fusion_weight")  # header λ, names {0: 0 (no fusion)}
    body = build_table(runs, shipped).to_markdown().splitlines()[4:7]  # after the title and the header
    table_labels = [line.split(" | ")[0].removeprefix("| ") for line in body]
    assert table_labels == ["0 (no fusion)", "2", "6"]

    dynamics = plots.dynamics(runs, shipped.rows)
    assert [t.get_text() for t in dynamics.legends[0].get_texts()] == table_labels
    assert dynamics.legends[0].get_title().get_text() == "λ"
    scatter = plots.gap_scatter(runs, shipped.rows, max_points=5)
    assert [ax.get_title().split("\n")[0] for ax in scatter.axes] == table_labels


def test_figures_draw_the_geometry_of_the_suites_first_retrieval_benchmark(edge_uri):
    runs = _runs(edge_uri, "suite")
    fig = plots.geometry_vs_param(runs, "tags.variant")
    assert fig.get_suptitle() == "Test geometry of mscoco against variant"  # the suite's order, not the columns'
    _, mean, _ = _error_bars(fig.axes[0].containers[0])
    np.testing.assert_allclose(mean, [SUITE_GAPS[v][0][-1] for v in ("A", "B")])
    assert "no test uniformity metric of mscoco logged" in _text(fig.axes[1])
    flickr = plots.geometry_vs_param(runs, "tags.variant", benchmark="flickr")
    np.testing.assert_allclose(_error_bars(flickr.axes[0].containers[0])[1], [SUITE_GAPS[v][1][-1] for v in ("A", "B")])
    assert plots.geometry_vs_param(runs, "tags.variant", benchmark="imagenet1k") is None  # no geometry logged

    dynamics = plots.dynamics(runs, BY_VARIANT)
    assert [ax.get_title() for ax in dynamics.axes] == ["val/zeroshot_avg", "val/mscoco/modality_gap"]
    for line, variant in zip(dynamics.axes[1].get_lines(), ("A", "B")):
        np.testing.assert_allclose(line.get_ydata(), SUITE_GAPS[variant][0])


# ---- Optuna -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, running", [("max", np.maximum.accumulate), ("min", np.minimum.accumulate)])
def test_optuna_history_and_importances_of_the_swept_params(edge_uri, mode, running):
    fig = plots.optuna_views(_runs(edge_uri, "optuna"), "val/zeroshot_avg", mode)

    history, importance = fig.axes
    scores = [score for _, _, score, status in OPTUNA_TRIALS if status == "FINISHED"]  # in start order
    [trials] = history.collections
    np.testing.assert_allclose(trials.get_offsets()[:, 1], scores)
    [best] = history.get_lines()
    np.testing.assert_allclose(best.get_ydata(), running(np.array(scores)))
    names = [t.get_text() for t in importance.get_yticklabels()]
    assert sorted(names) == ["fusion.depth", "objective.fusion_weight"]  # not seed, resources.*, ray.*
    shares = [bar.get_width() for bar in importance.patches]
    assert shares == sorted(shares) and sum(shares) == pytest.approx(1.0)


def test_optuna_with_one_swept_param_or_no_variation(edge_uri):
    runs = _runs(edge_uri, "optuna")
    one = plots.optuna_views(_restrict(runs, lambda t: t["params.fusion.depth"] == 2), "val/zeroshot_avg", "max")
    assert [t.get_text() for t in one.axes[1].get_yticklabels()] == ["objective.fusion_weight"]
    assert [bar.get_width() for bar in one.axes[1].patches] == pytest.approx([1.0])

    flat = dataclasses.replace(runs, trials=runs.trials.assign(**{"metrics.val/zeroshot_avg": 0.5}))
    fig = plots.optuna_views(flat, "val/zeroshot_avg", "max")
    assert not fig.axes[1].patches and "every trial scored the same" in _text(fig.axes[1])


def test_optuna_leaves_out_a_conditional_params_unused_default(edge_uri):
    fig = plots.optuna_views(_runs(edge_uri, "optuna_conditional"), "val/zeroshot_avg", "max")
    # Optuna weighs only what every trial set: the unused default must not stand in for fusion.depth
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["objective.fusion_weight"]


def test_optuna_needs_two_finished_trials_with_the_metric_and_a_mode(edge_uri):
    runs = _runs(edge_uri, "optuna")
    with pytest.raises(AnalysisError, match="mode must be 'max' or 'min', got 'best'"):
        plots.optuna_views(runs, "val/zeroshot_avg", "best")
    assert plots.optuna_views(runs, "val/nothing", "max") is None
    assert plots.optuna_views(_restrict(runs, lambda t: t["run_name"].isin(["trial 0", "trial 3"])),
                              "val/zeroshot_avg", "max") is None  # trial 3 failed


# ---- saving -------------------------------------------------------------------------------------------


def test_save_writes_png_and_pdf(analysis_store, tmp_path):
    fig = plots.geometry_vs_param(_runs(analysis_store.tracking_uri, "lambda"), "params.objective.fusion_weight")
    png, pdf = plots.save(fig, tmp_path / "report" / "geometry.lambda")
    assert (png.name, pdf.name) == ("geometry.lambda.png", "geometry.lambda.pdf")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and pdf.read_bytes().startswith(b"%PDF")
