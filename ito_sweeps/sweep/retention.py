"""What a trial leaves in Ray's storage once it is over, by the space's `checkpoints` setting.

While a trial runs, Ray Train (or Tune, for a trial that trains itself) keeps its latest `checkpoints.keep`
checkpoints (the newest is what a restarted worker or a resumed sweep continues from). A trial that has finished, or that the scheduler
stopped, is never resumed, so with `checkpoints.final: weights` its checkpoints drop the optimizer state
(two thirds of each under AdamW) and keep the weights, the config and the step: what evaluation and
export read. (Its last checkpoint is written without it in the first place: `run.final_optimizer_state`,
set by `trainable.trial_config`.) A failed trial keeps everything, for a rerun from where it failed.
"""
from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from ito_sweeps.sweep.worker import OPTIMIZER_STATE_FILE


class DropFinishedOptimizerState(Callback):
    """A Tune callback on the sweep driver; it holds plain values, as Tune pickles callbacks into its state."""

    def __init__(self, train_storage: str):
        self.train_storage = train_storage

    def on_trial_complete(self, iteration, trials, trial, **info):
        # where Ray Train keeps a Train job's checkpoints, and where Tune keeps those of a trial that trained itself
        for folder in (Path(self.train_storage) / trial.trial_id, Path(trial.path)):
            for state in folder.glob(f"checkpoint_*/{OPTIMIZER_STATE_FILE}"):
                state.unlink(missing_ok=True)
