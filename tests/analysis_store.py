"""A real MLflow store (SQLite + local artifacts) with known runs, shared by the analysis tests.

Two sweeps, laid out like the platform's own (a parent run, one child run per trial, the tags, params,
metric histories and embeddings artifacts the sweep workers log):

- `ablation`: the component ablation, variants OpenCLIP / + multiple alignment / + training-time fusion
  x seeds 0, 1, 2, plus a FAILED fourth seed of the fusion row and an OpenCLIP run that never logged
  test/probe_top1 (a missing metric);
- `lambda`: objective.fusion_weight 0, 2, 6 x seeds 0, 1 (no variants), ITO with fusion.

Metrics are named as the platform's default suite logs them (tag `benchmarks` = SUITE): test/scenes/...
(zero-shot, probe, retrieval, geometry), test/scenes_count/zeroshot_top1, test/digits/... (zero-shot,
probe), test/zeroshot_avg (the mean of the three zero-shot values); val/zeroshot_avg and
val/scenes/modality_gap at each validation step. The parents carry the tags a sweep writes, profile cpu.

Every logged value comes from `Trial` records built here, so tests compute what a table or plot should
show from `StoreFacts.trials` with pandas, independently of the code under test.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

VAL_STEPS = (40, 80, 120)
SUITE = ("scenes", "scenes_count", "digits")
METRICS = ("scenes/zeroshot_top1", "scenes/probe_top1", "scenes/i2t_r1", "scenes/t2i_r1", "scenes/modality_gap",
           "scenes/uniformity_image", "scenes/uniformity_text", "scenes/uniformity_union",
           "scenes_count/zeroshot_top1", "digits/zeroshot_top1", "digits/probe_top1")
ZEROSHOT = ("scenes/zeroshot_top1", "scenes_count/zeroshot_top1", "digits/zeroshot_top1")
VAL_KEYS = ("zeroshot_avg", "scenes/modality_gap")  # the val/ metrics with a history
ABLATION_ROWS = ("OpenCLIP", "+ multiple alignment", "+ training-time fusion")


@dataclass
class Trial:
    name: str
    params: dict[str, str]
    tags: dict[str, str]
    test: dict[str, float]  # final test/* metrics
    val: dict[str, list[float]]  # val/* value at each of VAL_STEPS
    duration_s: float
    status: str = "FINISHED"
    run_id: str = ""


@dataclass
class StoreFacts:
    tracking_uri: str
    parents: dict[str, str]  # sweep (experiment) name -> parent run id
    trials: dict[str, list[Trial]] = field(default_factory=dict)  # sweep name -> its trials


def _values(rng: np.random.Generator, level: float) -> tuple[dict[str, float], dict[str, list[float]]]:
    test = {name: float(level + rng.normal(0, 0.01)) for name in METRICS}
    test["scenes/modality_gap"] = float(1.0 - level + rng.normal(0, 0.01))
    test["zeroshot_avg"] = float(np.mean([test[name] for name in ZEROSHOT]))
    val = {name: [float(test[name] * f) for f in (0.6, 0.85, 1.0)] for name in VAL_KEYS}
    return test, val


def ablation_trials(rng: np.random.Generator) -> list[Trial]:
    trials = []
    for level, row in zip((0.30, 0.40, 0.45), ABLATION_ROWS):
        for seed in range(3):
            test, val = _values(rng, level)
            fusion = row.endswith("fusion")
            trials.append(Trial(
                name=f"{row} seed={seed}",
                params={"objective.name": "clip" if row == "OpenCLIP" else "ito", "run.seed": str(seed),
                        "objective.fusion_weight": "2.0" if fusion else "0.0", "fusion.depth": "2",
                        "objective.latent_structure.regularizers": "[]", "optim.lr": "0.002"},
                tags={"variant": row, "seed": str(seed), "objective": "clip" if row == "OpenCLIP" else "ito",
                      "resources.num_workers": "1", "resources.cpus_per_worker": "2.0",
                      "resources.gpus_per_worker": "0.0", "benchmarks": ",".join(SUITE)},
                test=test, val=val, duration_s=60.0 + 10 * seed + (30 if fusion else 0),
            ))
    del trials[2].test["scenes/probe_top1"]  # OpenCLIP seed=2 never logged its probe
    failed = Trial(name="+ training-time fusion seed=3", params=dict(trials[-1].params, **{"run.seed": "3"}),
                   tags=dict(trials[-1].tags, seed="3", error="NonFiniteLoss: loss became NaN at step 7"),
                   test={}, val={"zeroshot_avg": [0.1], "scenes/modality_gap": [0.9]}, duration_s=5.0,
                   status="FAILED")
    return trials + [failed]


def lambda_trials(rng: np.random.Generator) -> list[Trial]:
    trials = []
    for lam, level in ((0.0, 0.40), (2.0, 0.45), (6.0, 0.38)):
        for seed in range(2):
            test, val = _values(rng, level)
            trials.append(Trial(
                name=f"ito views lam={lam:.3g} seed={seed}",
                params={"objective.name": "ito", "objective.fusion_weight": str(lam), "run.seed": str(seed),
                        "fusion.depth": "2"},
                tags={"seed": str(seed), "objective.fusion_weight": str(lam), "objective": "ito",
                      "resources.num_workers": "2", "resources.cpus_per_worker": "8.0",
                      "resources.gpus_per_worker": "1.0", "benchmarks": ",".join(SUITE)},
                test=test, val=val, duration_s=3600.0 * (1 + seed),
            ))
    return trials


def make_store(tmp_path: Path, embeddings: int = 24, dim: int = 8) -> StoreFacts:
    """Both sweeps in `tmp_path/mlflow.db`; each finished trial gets an embeddings.npz of `embeddings` pairs."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    rng = np.random.default_rng(0)
    facts = StoreFacts(tracking_uri=uri, parents={})
    start = int(time.time() * 1000) - 10**8
    for sweep, trials in (("ablation", ablation_trials(rng)), ("lambda", lambda_trials(rng))):
        experiment = client.create_experiment(sweep, artifact_location=(tmp_path / "mlartifacts").as_uri())
        parent = client.create_run(experiment, start_time=start, run_name=sweep,
                                   tags={"search_space": f"/spaces/{sweep}.yaml", "search": "grid",
                                         "metric": "val/zeroshot_avg", "profile": "cpu"})
        facts.parents[sweep] = parent.info.run_id
        for trial in trials:
            trial.run_id = _log_trial(client, experiment, parent.info.run_id, trial, start, rng, embeddings, dim)
        client.set_terminated(parent.info.run_id, "FINISHED", end_time=start + 10**7)
        facts.trials[sweep] = trials
    return facts


def _log_trial(client: MlflowClient, experiment: str, parent: str, trial: Trial, start: int,
               rng: np.random.Generator, embeddings: int, dim: int) -> str:
    run = client.create_run(experiment, start_time=start, run_name=trial.name,
                            tags={MLFLOW_PARENT_RUN_ID: parent, **trial.tags})
    run_id = run.info.run_id
    metrics = [Metric(f"test/{k}", v, start, VAL_STEPS[-1]) for k, v in trial.test.items()]
    metrics += [Metric(f"val/{k}", v, start, step) for k, values in trial.val.items()
                for step, v in zip(VAL_STEPS, values)]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in trial.params.items()],
                     tags=[RunTag("sweep", "yes")])
    if trial.status == "FINISHED":
        image = rng.normal(size=(embeddings, dim))
        text = image + rng.normal(0.5, 0.3, size=(embeddings, dim))  # a gap: texts shifted off the images
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "embeddings.npz"
            np.savez(path, image=_unit(image), text=_unit(text), label=np.arange(embeddings) % 3,
                     caption=np.array([f"caption {i}" for i in range(embeddings)]),
                     classnames=np.array(["a", "b", "c"]))
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, trial.status, end_time=start + int(trial.duration_s * 1000))
    return run_id


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
