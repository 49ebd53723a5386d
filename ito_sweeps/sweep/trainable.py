"""One sweep trial: a Tune function trainable that opens the trial's MLflow child run and trains.

A trial of several workers follows Ray Train V2's pattern: the Tune trial (`run_trial`) is a light driver
that builds a `TorchTrainer`, whose workers (`worker.train_worker`) run the core training loop, and
`TuneReportCallback` forwards rank 0's reports to Tune for search and ASHA. A trial of one worker runs the
loop in the Tune trial itself (`worker.train_in_trial`), holding the worker's resources and reporting to
Tune directly; Tune then retries its failures from the last checkpoint, as Train does for a Train job.

`run_trial` must stay importable from this module: `Tuner.restore` unpickles it by reference. The sweep
driver imports this module to hand `run_trial` to Tune, so what only a trial needs (torch, open_clip, Ray
Train) is imported inside the functions: the driver then starts Tune without those seconds of imports,
which the trial's own process pays anyway.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from ray import tune

from ito_sweeps import catalog
from ito_sweeps.config import Config
from ito_sweeps.sweep import tracking, trial_log
from ito_sweeps.sweep.space import SearchSpace, load_space
from ito_sweeps.sweep.space_parts import Checkpoints, Resources
from ito_sweeps.sweep.worker import train_in_trial, train_worker

HEALTH_CHECK_INTERVAL_S = 0.5


def trial_config(cfg: Config, resources: Resources, checkpoints: Checkpoints = Checkpoints()) -> Config:
    """The run settings a trial's resources and retention imply: device, threads, checkpoints that Ray can
    restore from at every validation pass, and a last one without the optimizer state when a finished
    trial keeps its weights only (writing it would cost a copy to Ray's storage, then a deletion)."""
    run = dataclasses.replace(
        cfg.run,
        device="cuda" if resources.use_gpu else "cpu",
        threads=cfg.run.threads or max(1, int(resources.cpus_per_worker)),
        checkpoint_every=cfg.run.checkpoint_every or cfg.eval.every,
        final_optimizer_state=cfg.run.final_optimizer_state and checkpoints.final != "weights",
    )
    return dataclasses.replace(cfg, run=run)


def run_trial(config: dict[str, Any]) -> None:
    sweep = config["sweep"]
    trial_id = tune.get_context().get_trial_id()
    log_file = trial_log.log_path(sweep["logs"], trial_id)
    trial_log.send_output_to(log_file)
    # torch and open_clip (see the module's docstring), after the redirect: their chatter goes to the log
    from ito_sweeps.objectives import build_objective

    space = load_space(sweep["space"], sweep["profile"])
    cfg = trial_config(space.resolve(config), space.resources, space.checkpoints)
    client = MlflowClient(sweep["tracking_uri"])
    fusion = bool(build_objective(cfg).inputs.fusion_pairs)  # what the objective trains, not what the config says
    tags = {
        "objective": cfg.objective.name,
        "alignment": cfg.objective.alignment if catalog.OBJECTIVES[cfg.objective.name].uses_alignment else "none",
        "fusion_depth": str(cfg.fusion.depth if fusion else 0),
        "fusion_weight": str(cfg.objective.fusion_weight if fusion else 0.0),
        "seed": str(cfg.run.seed),
        "search_space": sweep["space"],
        "profile": str(sweep["profile"]),
        "git_commit": sweep["git_commit"],
        "sweep": sweep["name"],
        # what the trial occupies, so that analysis can price each table row in accelerator-hours
        "resources.num_workers": str(space.resources.num_workers),
        "resources.cpus_per_worker": str(space.resources.cpus_per_worker),
        "resources.gpus_per_worker": str(space.resources.gpus_per_worker),
        **space.trial_tags(config),
        # what `ito-sweeps export --run` and `evaluate --model run:ID` read, and what table columns may name
        "checkpoints": (tune.get_context().get_storage().trial_fs_path if space.resources.trains_in_trial
                        else str(Path(sweep["train_storage"]) / trial_id)),
        "benchmarks": ",".join(b.name for b in cfg.eval.benchmarks or ()),
    }
    if cfg.objective.name == "latent_structure":
        tags["regularizers"] = "+".join(cfg.objective.latent_structure.regularizers) or "none"
    run_id = tracking.trial_run(client, sweep["experiment_id"], sweep["parent_run_id"], trial_id,
                                space.trial_label(config), tags, cfg.flat())
    loop_config = {"cfg": cfg.to_dict(), "tracking_uri": sweep["tracking_uri"], "run_id": run_id,
                   "system_metrics_s": sweep["system_metrics_s"], "log_file": str(log_file)}
    try:
        if space.resources.trains_in_trial:
            train_in_trial(loop_config)
        else:
            _train_job(space, sweep, trial_id, loop_config).fit()
    except Exception:
        # Into the trial's log. The run's status is the sweep driver's to set, from Tune's verdict: a trial
        # that Tune stops (ASHA, Ctrl+C) may see its stop as an error, and may see it after the driver has
        # already closed the run (a Train job's controller dies with the trial's placement group).
        traceback.print_exc()
        raise
    finally:
        _keep_log(client, run_id, log_file)
    tracking.end_run(client, run_id, "FINISHED")


def _keep_log(client: MlflowClient, run_id: str, log_file: Path) -> None:
    """The trial's log beside its metrics: on a cluster without shared storage the file stays on the node
    that ran the trial."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        client.log_artifact(run_id, str(log_file), trial_log.LOGS_FOLDER)
    except Exception as err:  # a log that cannot be uploaded must not fail a trial that trained
        print(f"warning: this log was not copied to MLflow run {run_id}: {type(err).__name__}: {err}",
              file=sys.stderr)


def _train_job(space: SearchSpace, sweep: dict[str, Any], trial_id: str, loop_config: dict[str, Any]):
    """The Ray Train job of a trial of several workers."""
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = space.resources
    # Train's controller polls its workers at this interval, and a trial's end waits for the next poll:
    # 2 s by default, a noticeable share of a short trial. Passed on to the controller by Ray Train.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(HEALTH_CHECK_INTERVAL_S))
    return TorchTrainer(
        train_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=res.num_workers, use_gpu=res.use_gpu,
            resources_per_worker=res.per_worker(),
            placement_strategy=res.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            # The same name and storage on a rerun (a resumed sweep) make Train restore its checkpoint.
            name=trial_id,
            storage_path=sweep["train_storage"],
            failure_config=FailureConfig(max_failures=space.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=space.checkpoints.keep),
            callbacks=[TuneReportCallback()],
            # the trial table and MLflow show progress; Train's per-report INFO lines would bury it
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
