"""What each Ray Train worker of a trial runs: the core training loop under torch.distributed.

Ray Train's controller imports this module only to unpickle `train_worker`, so its top-level imports
stay light (the controller then starts in seconds, not after importing MLflow, open_clip and
scikit-learn); the worker itself imports them inside the function. Every rank reports to Ray at each
validation pass (Ray requires equal report counts), with rank 0's metrics and checkpoint; rank 0 also
writes the trial's MLflow child run.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray.train
from ray.train import Checkpoint

CHECKPOINT_FILE = "checkpoint.pt"


def train_worker(loop_config: dict[str, Any]) -> None:
    import ray.train.torch

    from ito_sweeps import config as config_mod
    from ito_sweeps.sweep import tracking
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
