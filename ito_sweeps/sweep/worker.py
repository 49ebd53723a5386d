"""What runs a trial's core training loop: each Ray Train worker of a multi-worker trial, under
torch.distributed, or the Tune trial itself when the trial has one worker.

A one-worker trial needs no process group, so it trains inside its Tune trial (`train_in_trial`) and saves
starting a Train controller and worker group: most of a short trial's time outside training. Both kinds
report, checkpoint and resume through the same `run_loop`; only the API they report to differs (`Session`).
Ray Train's controller imports this module only to unpickle `train_worker`, so its top-level imports
stay light (the controller then starts in seconds, not after importing MLflow, open_clip and
scikit-learn); the loop itself imports them inside the function. Every rank reports to Ray at each
validation pass (Ray requires equal report counts), with rank 0's metrics and checkpoint; rank 0 also
writes the trial's MLflow child run.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# A Ray checkpoint folder holds the weights (with the step and config) and, beside them, the optimizer state
CHECKPOINT_FILE, OPTIMIZER_STATE_FILE = "checkpoint.pt", "optimizer.pt"
# How long a report to Ray waits for MLflow to take the records logged before it. Only an outage makes
# it wait at all; then training goes on after REPORT_FLUSH_S, except at the final report, which a
# scheduler's stop must never cut off from its records.
REPORT_FLUSH_S = 5.0
FINAL_REPORT_FLUSH_S = 600.0


@dataclass(frozen=True)
class Session:
    """The Ray API a trial's loop reports to: Ray Train's for a worker of a Train job, Tune's in a trial."""

    rank: int
    get_checkpoint: Callable[[], Any]
    report: Callable[..., None]
    checkpoint_type: Any  # ray.train.Checkpoint or ray.tune.Checkpoint
    prepare_model: Callable | None  # wraps the model for data parallelism


def train_worker(loop_config: dict[str, Any]) -> None:
    import ray.train.torch

    from ito_sweeps.sweep import trial_log

    trial_log.send_output_to(Path(loop_config["log_file"]))  # every rank's chatter, in its trial's log
    run_loop(loop_config, Session(
        ray.train.get_context().get_world_rank(), ray.train.get_checkpoint, ray.train.report, ray.train.Checkpoint,
        lambda model: ray.train.torch.prepare_model(model, move_to_device=False),
    ))


def train_in_trial(loop_config: dict[str, Any]) -> None:
    from ray import tune

    # one INFO line per checkpoint reaches the console; the trial table already shows each validation pass
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    run_loop(loop_config, Session(0, tune.get_checkpoint, tune.report, tune.Checkpoint, None))


def run_loop(loop_config: dict[str, Any], session: Session) -> None:
    from ito_sweeps import config as config_mod
    from ito_sweeps.sweep import tracking
    from ito_sweeps.train import checkpoint
    from ito_sweeps.train.loop import train

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # it logs each start and stop
    # Ray Train logs every checkpointed report with all its metrics, one console line of the whole suite per
    # validation pass; the trial table already shows progress
    logging.getLogger("ray.train.v2._internal.execution.context").setLevel(logging.WARNING)
    # Rank 0's logger retries failed sends itself, off the training thread and without end; MLflow's own
    # retries (7 of them, backing off to minutes) would only delay noticing that a server is back.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    cfg = config_mod.from_dict(loop_config["cfg"])
    lead = session.rank == 0
    logger = (tracking.RunLogger(loop_config["tracking_uri"], loop_config["run_id"], loop_config["system_metrics_s"])
              if lead else None)
    work = Path(tempfile.mkdtemp(prefix="ito-trial-"))
    try:
        resume = None
        restored = session.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as folder:
                resume = Path(shutil.copy(Path(folder) / CHECKPOINT_FILE, work / "resume.pt"))
                if (Path(folder) / OPTIMIZER_STATE_FILE).is_file():  # gone from a finished trial's
                    shutil.copy(Path(folder) / OPTIMIZER_STATE_FILE, checkpoint.optimizer_file(resume))
        nodes = _node_of_each_rank()
        if logger is not None:
            # where the trial ran; and each restart (a failed worker, a resumed sweep) as a point of
            # train/resumed_from_step, at the step the restarted attempt continues from
            logger.set_tag("ray.nodes", ",".join(nodes))
            if restored is not None:
                step = int(restored.get_metadata()["step"])
                logger.log(step, {"train/resumed_from_step": float(step)})

        def on_metrics(step: int, record: dict[str, float]) -> None:
            if logger is not None:
                logger.log(step, record)

        def on_report(step: int, metrics: dict[str, float], saved: Path | None) -> None:
            if logger is not None:
                if tracking.FINAL_METRIC in metrics:
                    for name in ("config.yaml", "metrics.json", "embeddings.npz"):
                        if (work / "run" / name).is_file():
                            logger.artifact(work / "run" / name)
                # everything logged reaches MLflow before Ray hears of the report: a scheduler may stop
                # the trial as soon as it sees it
                logger.flush(FINAL_REPORT_FLUSH_S if tracking.FINAL_METRIC in metrics else REPORT_FLUSH_S)
            if saved is None:
                session.report({"step": step, **metrics})
                return
            folder = work / f"report-{step}"
            folder.mkdir()
            # Ray keeps its own copy: one on local disk at a time
            shutil.move(saved, folder / CHECKPOINT_FILE)
            if checkpoint.optimizer_file(saved).is_file():  # not in a finished trial's last one
                shutil.move(checkpoint.optimizer_file(saved), folder / OPTIMIZER_STATE_FILE)
            reported = session.checkpoint_type.from_directory(str(folder))
            reported.set_metadata({"step": step})
            session.report({"step": step, **metrics}, checkpoint=reported)
            shutil.rmtree(folder)

        train(cfg, work / "run" if lead else None, on_metrics=on_metrics, on_report=on_report,
              prepare_model=session.prepare_model, resume=resume)
    finally:
        if logger is not None:
            logger.close()
        shutil.rmtree(work, ignore_errors=True)


def _node_of_each_rank() -> list[str]:
    """The Ray node id of every rank, in rank order (one collective, at the start of each attempt)."""
    import ray
    import torch.distributed as dist

    node = ray.get_runtime_context().get_node_id()
    if not dist.is_initialized():
        return [node]
    nodes: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, node)
    return [str(n) for n in nodes]
