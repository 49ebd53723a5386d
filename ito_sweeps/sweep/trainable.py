"""One sweep trial: a Tune function trainable that runs the core training loop on Ray Train workers.

Ray Train V2's pattern: the Tune trial (`run_trial`) is a light driver that builds a `TorchTrainer`,
whose workers (`train_worker`) run `ito_sweeps.train.loop.train` under torch.distributed, so the
contrastive losses gather features with gradients across the whole global batch. Rank 0 writes the
trial's MLflow child run; every rank reports to Ray at each validation pass (Ray requires equal
report counts), and `TuneReportCallback` forwards rank 0's metrics to Tune for search and ASHA.

Both functions must stay importable from this module: `Tuner.restore` unpickles them by reference.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
from mlflow.tracking import MlflowClient
from ray import tune
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from ito_sweeps import config as config_mod
from ito_sweeps.config import Config
from ito_sweeps.objectives.registry import build_objective
from ito_sweeps.sweep import tracking
from ito_sweeps.sweep.space import Resources, load_space

CHECKPOINT_FILE = "checkpoint.pt"


def trial_config(cfg: Config, resources: Resources) -> Config:
    """The run settings a trial's resources imply: device, threads, and checkpoints that Ray can
    restore from at every validation pass."""
    run = dataclasses.replace(
        cfg.run,
        device="cuda" if resources.use_gpu else "cpu",
        threads=cfg.run.threads or max(1, int(resources.cpus_per_worker)),
        checkpoint_every=cfg.run.checkpoint_every or cfg.eval.every,
    )
    return dataclasses.replace(cfg, run=run)


def run_trial(config: dict[str, Any]) -> None:
    sweep = config["sweep"]
    space = load_space(sweep["space"], sweep["profile"])
    cfg = trial_config(space.resolve(config), space.resources)
    trial_id = tune.get_context().get_trial_id()
    client = MlflowClient(sweep["tracking_uri"])
    fusion = bool(build_objective(cfg).fusion_pairs)  # what the objective trains, not what the config says
    tags = {
        "objective": cfg.objective.name,
        "alignment": cfg.objective.alignment if cfg.objective.name == "ito" else "none",
        "fusion_depth": str(cfg.fusion.depth if fusion else 0),
        "fusion_weight": str(cfg.objective.fusion_weight if fusion else 0.0),
        "seed": str(cfg.run.seed),
        "search_space": sweep["space"],
        "profile": str(sweep["profile"]),
        "git_commit": sweep["git_commit"],
        "sweep": sweep["name"],
        **space.trial_tags(config),
    }
    run_id = tracking.trial_run(client, sweep["experiment_id"], sweep["parent_run_id"], trial_id,
                                space.trial_label(config), tags, cfg.flat())
    res = space.resources
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"cfg": cfg.to_dict(), "tracking_uri": sweep["tracking_uri"], "run_id": run_id,
                           "system_metrics_s": sweep["system_metrics_s"]},
        scaling_config=ScalingConfig(
            num_workers=res.num_workers, use_gpu=res.use_gpu,
            resources_per_worker={"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            # The same name and storage on a rerun (a resumed sweep) make Train restore its checkpoint.
            name=trial_id,
            storage_path=sweep["train_storage"],
            failure_config=FailureConfig(max_failures=space.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
            # the trial table and MLflow show progress; Train's per-report INFO lines would bury it
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    try:
        trainer.fit()
    except BaseException as err:
        tracking.fail_trial_run(client, run_id, root_cause(err))
        raise
    tracking.end_run(client, run_id, "FINISHED")


def root_cause(err: BaseException) -> str:
    """The worker's own exception, not Ray's wrappers around it."""
    failures = getattr(err, "worker_failures", None)
    if failures:
        err = failures[min(failures)]
    while getattr(err, "cause", None) is not None:
        err = err.cause
    return f"{type(err).__name__}: {err}".strip()


def train_worker(loop_config: dict[str, Any]) -> None:
    from ito_sweeps.train.loop import train

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # it logs each start and stop
    cfg = config_mod.from_dict(loop_config["cfg"])
    lead = ray.train.get_context().get_world_rank() == 0
    logger = (tracking.RunLogger(loop_config["tracking_uri"], loop_config["run_id"], loop_config["system_metrics_s"])
              if lead else None)
    work = Path(tempfile.mkdtemp(prefix="ito-trial-"))
    try:
        resume = None
        restored = ray.train.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as folder:
                resume = Path(shutil.copy(Path(folder) / CHECKPOINT_FILE, work / "resume.pt"))

        def on_metrics(step: int, record: dict[str, float]) -> None:
            if logger is not None:
                logger.log(step, record)

        def on_report(step: int, metrics: dict[str, float], saved: Path | None) -> None:
            if logger is not None and tracking.FINAL_METRIC in metrics:
                # before the final report: a scheduler may stop the trial as soon as it sees that report
                for name in ("config.yaml", "metrics.json", "embeddings.npz"):
                    if (work / "run" / name).is_file():
                        logger.artifact(work / "run" / name)
            if saved is None:
                ray.train.report({"step": step, **metrics})
                return
            folder = work / f"report-{step}"
            folder.mkdir()
            shutil.move(saved, folder / CHECKPOINT_FILE)  # Ray keeps its own copy: one on local disk at a time
            ray.train.report({"step": step, **metrics}, checkpoint=Checkpoint.from_directory(str(folder)))
            shutil.rmtree(folder)

        train(cfg, work / "run" if lead else None, on_metrics=on_metrics, on_report=on_report,
              prepare_model=lambda model: ray.train.torch.prepare_model(model, move_to_device=False),
              resume=resume)
    finally:
        if logger is not None:
            logger.close()
        shutil.rmtree(work, ignore_errors=True)
