"""Each trial's own log file: `<sweep folder>/logs/<trial id>.log`, where its library chatter goes.

A trial's processes print what a researcher rarely reads: open_clip's model-creation lines, Ray Train's and
MLflow's INFO lines, PyTorch's warnings. Ray forwards all of it to the sweep's console, dozens of lines per
trial around the trial table; here it goes to the trial's file instead, which the trial table names when
the trial ends and which is logged to the trial's MLflow run. The redirection is of the file descriptors,
so output of C extensions lands in the file too.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

LOGS_FOLDER = "logs"


def log_path(logs: str | Path, trial_id: str) -> Path:
    return Path(logs) / f"{trial_id}.log"


def send_output_to(path: Path) -> None:
    """From now on everything this process writes to stdout and stderr is appended to `path` (a retried or
    resumed trial adds its attempts to one file). Never undone: a process that Tune reuses is sent to the
    next trial's log as that trial starts, and one that Ray stops exits into its last trial's log, with
    whatever Python prints on the way out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with path.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
