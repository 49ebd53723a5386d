"""Loading recorded runs: typed params, final metrics, status kept, histories, artifacts, clear errors."""
import math

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisError
from analysis.load import load_runs, parse_param
from tests.analysis_store import VAL_STEPS


def test_a_sweep_loads_one_row_per_trial_with_what_was_logged(analysis_store):
    runs = load_runs(analysis_store.tracking_uri, sweep=analysis_store.parents["ablation"])
    logged = {t.run_id: t for t in analysis_store.trials["ablation"]}
    assert set(runs.trials["run_id"]) == set(logged) and runs.experiment_name == "ablation"
    assert list(runs.parents["run_id"]) == [analysis_store.parents["ablation"]]
    for _, row in runs.trials.iterrows():
        trial = logged[row["run_id"]]
        assert (row["run_name"], row["status"]) == (trial.name, trial.status)  # the failed run is kept
        assert row["duration_s"] == pytest.approx(trial.duration_s)
        assert row["parent_run_id"] == analysis_store.parents["ablation"]
        # params come back typed as the config declares them
        assert row["params.run.seed"] == int(trial.params["run.seed"])
        assert row["params.objective.fusion_weight"] == float(trial.params["objective.fusion_weight"])
        assert row["params.objective.latent_structure.regularizers"] == ()
        assert row["tags.variant"] == trial.tags["variant"]
        assert row["tags.benchmarks"] == "scenes,scenes_count,digits"
        for name in ("scenes/zeroshot_top1", "scenes/probe_top1", "scenes/modality_gap", "digits/zeroshot_top1",
                     "zeroshot_avg"):
            value = row[f"metrics.test/{name}"]
            assert value == trial.test[name] if name in trial.test else math.isnan(value)
        # the final val/* value is the last step's
        assert row["metrics.val/zeroshot_avg"] == trial.val["zeroshot_avg"][-1]
    assert sorted(runs.finished["run_id"]) == sorted(t.run_id for t in logged.values() if t.status == "FINISHED")


def test_an_experiment_without_a_sweep_filter_loads_all_its_trials(analysis_store):
    runs = load_runs(analysis_store.tracking_uri, experiment="lambda")
    assert sorted(runs.trials["params.objective.fusion_weight"]) == [0.0, 0.0, 2.0, 2.0, 6.0, 6.0]
    assert runs.trials["start_time"].dt.tz is not None and (runs.trials["duration_s"] > 0).all()


def test_histories_best_values_and_artifacts(analysis_store):
    runs = load_runs(analysis_store.tracking_uri, experiment="ablation")
    logged = {t.run_id: t for t in analysis_store.trials["ablation"]}
    history = runs.history(["val/zeroshot_avg", "val/scenes/modality_gap"])
    expected = pd.DataFrame(
        [(r, f"val/{k}", step, v) for r, t in logged.items() for k, values in t.val.items()
         for step, v in zip(VAL_STEPS, values)],
        columns=["run_id", "key", "step", "value"],
    ).sort_values(["run_id", "key", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(history, expected)
    best = runs.best("val/scenes/modality_gap", "min")
    assert best.to_dict() == {r: min(t.val["scenes/modality_gap"]) for r, t in logged.items()}
    for run_id, trial in logged.items():
        path = runs.artifact(run_id, "embeddings.npz")
        if trial.status == "FINISHED":
            with np.load(path) as sample:
                assert sample["image"].shape == sample["text"].shape == (24, 8)
        else:
            assert path is None  # a failed trial never wrote one


@pytest.mark.parametrize("kwargs, message", [
    ({"experiment": "nope"}, "no experiment 'nope' in .* \\(experiments there: Default, ablation, lambda\\)"),
    ({"sweep": "0123abc"}, "no run '0123abc'"),
    ({}, "name exactly one of an experiment"),
])
def test_unknown_or_missing_targets_say_what_exists(analysis_store, kwargs, message):
    with pytest.raises(AnalysisError, match=message):
        load_runs(analysis_store.tracking_uri, **kwargs)


def test_a_trial_run_is_not_a_sweep(analysis_store):
    trial = analysis_store.trials["lambda"][0]
    with pytest.raises(AnalysisError, match="has no trial runs: it is not a sweep's parent run; use --experiment lambda"):
        load_runs(analysis_store.tracking_uri, sweep=trial.run_id)


def test_a_missing_store_is_not_created(tmp_path):
    with pytest.raises(AnalysisError, match="no MLflow store at .*none.db: run `ito-sweeps sweep"):
        load_runs(f"sqlite:///{tmp_path}/none.db", experiment="x")
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("key, raw, value", [
    ("objective.fusion_weight", "2", 2.0), ("objective.fusion_weight", "None", None), ("run.seed", "3", 3),
    ("run.compile", "False", False), ("objective.latent_structure.regularizers", "['sep', 'gc']", ("sep", "gc")),
    ("data.augment.crop_scale", "[0.5, 1.0]", (0.5, 1.0)), ("model.name", "ViT-B-16", "ViT-B-16"),
    ("optim.eps", "1e-06", 1e-06), ("not.a.config.key", "12", 12), ("not.a.config.key", "a: [", "a: ["),
])
def test_params_are_typed_like_the_config(key, raw, value):
    assert parse_param(key, raw) == value and type(parse_param(key, raw)) is type(value)
