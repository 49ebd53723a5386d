"""Run a search space as a Ray Tune experiment recorded in MLflow: `ito-sweeps sweep`.

Order matters: the space is validated, its data paths and (for a Ray started here) its resources
checked, and the tracking store asked before Ray starts or any run is recorded, so a typo, a missing
shard, a GPU this machine lacks or a dead server costs a second, not a cluster start-up. Hence the late
imports: MLflow, Tune and the trial code load only once there is a sweep to run. The sweep's own state
(its MLflow parent run) lives in `ito_sweep.json` beside Tune's experiment state, which is what
`--resume` reads back.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ito_sweeps.errors import UserError
from ito_sweeps.sweep import store, trial_log
from ito_sweeps.sweep.space import SearchSpace, load_space

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

STATE_FILE = "ito_sweep.json"
DEFAULT_STORAGE = "ray_results"
TRIAL_DRIVER_MEMORY = 256 * 2**20


class SweepError(UserError, RuntimeError):
    pass


@dataclass
class TrialOutcome:
    label: str
    status: str  # FINISHED, STOPPED (early, by the scheduler), FAILED or KILLED (the sweep was interrupted)
    value: float | None  # the sweep metric, last logged
    error: str = ""
    log: str = ""  # the trial's log file: everything it printed


@dataclass
class SweepSummary:
    name: str
    experiment_path: Path
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    metric: str
    mode: str
    expected_trials: int | None
    logs: str = ""  # the folder of the trials' log files
    trials: list[TrialOutcome] = field(default_factory=list)
    wall_s: float = 0.0
    interrupted: bool = False

    @property
    def failed(self) -> list[TrialOutcome]:
        return [t for t in self.trials if t.status == "FAILED"]

    @property
    def best(self) -> TrialOutcome | None:
        scored = [t for t in self.trials if t.value is not None and t.status in ("FINISHED", "STOPPED")]
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda t: t.value) if scored else None


def run_sweep(space_file: str | Path, *, profile: str | None = None, address: str | None = None,
              tracking_uri: str | None = None, name: str | None = None, resume: bool = False,
              storage: str | Path | None = None, system_metrics_s: float = 10.0) -> SweepSummary:
    started = time.perf_counter()
    space = load_space(space_file, profile)
    for warning in space.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    name = name or space.name
    if not (address or "").startswith("ray://"):  # a driver on a cluster node sees the workers' paths
        _check_data(space)
    import ray

    from ito_sweeps.sweep import feasibility, leftovers

    if address is None and not ray.is_initialized():  # the Ray this sweep starts will be this machine alone
        feasibility.check_local(space, feasibility.local_capacity())
    # a new store's "Creating initial MLflow database tables" lines say nothing a researcher acts on
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    uri = store.resolve_uri(tracking_uri)
    store.check_reachable(uri)
    storage_path = Path(storage or DEFAULT_STORAGE).expanduser().resolve()
    experiment_path = storage_path / name
    state_file = experiment_path / STATE_FILE

    from mlflow.tracking import MlflowClient
    from ray import tune

    from ito_sweeps.sweep import tracking

    client = MlflowClient(uri)

    if resume:
        if not state_file.is_file() or not tune.Tuner.can_restore(str(experiment_path)):
            raise SweepError(f"--resume: no interrupted sweep {name!r} under {storage_path}; "
                             f"run it without --resume to start it")
        state = json.loads(state_file.read_text())
        if state["tracking_uri"] != uri:
            raise SweepError(f"--resume: sweep {name!r} logs to {state['tracking_uri']}, not {uri}; "
                             f"pass --tracking-uri {state['tracking_uri']}")
        tracking.reopen(client, state["parent_run_id"])
        state.setdefault("logs", str(experiment_path / trial_log.LOGS_FOLDER))  # a sweep started before logs
    else:
        if experiment_path.exists():
            raise SweepError(f"sweep {name!r} already exists at {experiment_path}; continue it with --resume, "
                             f"or start a new one with --name")
        experiment = tracking.experiment_id(client, name, uri)
        state = {
            "name": name, "space": str(space.path), "profile": space.profile, "tracking_uri": uri,
            "experiment_id": experiment, "git_commit": tracking.git_commit(),
            "train_storage": str(storage_path / name / "train"), "system_metrics_s": system_metrics_s,
            "logs": str(experiment_path / trial_log.LOGS_FOLDER),
        }
        state["parent_run_id"] = tracking.start_sweep(
            client, experiment, name,
            {"search_space": str(space.path), "profile": str(space.profile), "git_commit": state["git_commit"],
             "search": space.search, "metric": str(space.metric), "mode": str(space.mode),
             "description": space.description},
            space.path,
        )
        experiment_path.mkdir(parents=True)
        state_file.write_text(json.dumps(state, indent=2) + "\n")
    drivers = state.pop("drivers", [])  # the Ray jobs of its earlier drivers, none for a new sweep (leftovers.py)

    # Tune's own console output (an experiment box, a TensorBoard hint) would only repeat the trial table's
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not ray.is_initialized():
        # Never with the dashboard off: Train V2 asks its State API whether a stopped trial's
        # controller is gone before freeing the trial's workers (ray-project/ray#54305).
        forward = store.credentials_to_forward()
        ray.init(address=address, include_dashboard=True, log_to_driver=True,
                 runtime_env={"env_vars": forward} if forward else None)
    removed = leftovers.remove_groups_of_ended(drivers)
    if removed:
        print(f"removed {len(removed)} Ray placement group(s) that an earlier, killed driver of this sweep "
              f"left holding resources", file=sys.stderr, flush=True)
    this_driver = leftovers.this_driver()
    if this_driver is not None:
        state_file.write_text(json.dumps({**state, "drivers": [*drivers, this_driver]}, indent=2) + "\n")
    tuner = _tuner(space, state, experiment_path, resume)
    try:
        results = tuner.fit()
    except feasibility.InfeasibleRequest as err:
        from ito_sweeps.sweep.infeasible import remove_infeasible_groups

        remove_infeasible_groups()
        # the trials waiting for it never ran: they failed, for the reason the sweep did
        _settle(client, state, experiment_path)
        for run in tracking.trial_runs(client, state["experiment_id"], state["parent_run_id"]):
            if run.info.status != "FINISHED":
                tracking.end_run(client, run.info.run_id, "FAILED", **{tracking.ERROR_TAG: str(err)})
        tracking.end_run(client, state["parent_run_id"], "FAILED", **{tracking.ERROR_TAG: str(err)})
        raise
    except BaseException as err:
        _settle(client, state, experiment_path)
        tracking.end_run(client, state["parent_run_id"], "FAILED", **{tracking.ERROR_TAG: f"{type(err).__name__}: {err}"})
        raise
    tune_status = _settle(client, state, experiment_path)
    first = lambda v: v if isinstance(v, str) else v[0]  # noqa: E731
    summary = SweepSummary(name, experiment_path, uri, state["experiment_id"], state["parent_run_id"],
                           first(space.metric), first(space.mode), space.num_trials(), state["logs"])
    for run in tracking.trial_runs(client, state["experiment_id"], state["parent_run_id"]):
        status = run.info.status
        if status == "FINISHED" and run.data.tags.get("stopped_early") == "true":
            status = "STOPPED"
        log = trial_log.log_path(state["logs"], run.data.tags.get(tracking.TRIAL_ID_TAG, ""))
        summary.trials.append(TrialOutcome(run.info.run_name, status, run.data.metrics.get(summary.metric),
                                           run.data.tags.get(tracking.ERROR_TAG, ""), str(log)))
    summary.trials.sort(key=lambda t: t.label)
    ended = [s for s in tune_status.values() if s in ("TERMINATED", "ERROR")]
    summary.interrupted = len(ended) < max(len(results), summary.expected_trials or 0)
    summary.wall_s = time.perf_counter() - started
    # A sweep whose trials failed still ran to its end: FINISHED, with the failures counted in a tag.
    tracking.end_run(client, state["parent_run_id"], "KILLED" if summary.interrupted else "FINISHED",
                     interrupted=str(summary.interrupted).lower(),
                     failed_trials=str(len(summary.failed)))
    return summary


def _check_data(space: SearchSpace) -> None:
    """Every known trial's data and benchmark paths (optuna: each variant's fixed part), before Ray starts: a
    typo in a path costs a second."""
    from ito_sweeps.config import ConfigError
    from ito_sweeps.data.paths import check_benchmark_paths, check_data_paths

    checked = set()
    for which, cfg in space.known_configs():
        key = repr((cfg.data, cfg.eval.benchmarks))
        if key not in checked:
            checked.add(key)
            try:
                check_data_paths(cfg.data, space.resources.num_workers)
                check_benchmark_paths(cfg)
            except ConfigError as err:
                raise SweepError(f"{space.path}: {which}: {err}") from None


def _tuner(space: SearchSpace, state: dict, experiment_path: Path, resume: bool):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from ito_sweeps.sweep import tracking
    from ito_sweeps.sweep.infeasible import InfeasibleWatch
    from ito_sweeps.sweep.progress import TrialTable
    from ito_sweeps.sweep.retention import DropFinishedOptimizerState
    from ito_sweeps.sweep.trainable import run_trial

    # Keeping only the newest checkpoints makes Tune save its experiment state at each one, and warn about
    # it every time; on a sweep's few trials that costs milliseconds (the warning would bury the table)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's own result files (result.json, progress.csv) stay, added below; its TensorBoard logger goes:
    # MLflow is the sweep's tracker, and that logger imports torch into the driver just as Tune starts
    # (seconds before the first trial, on every sweep and --resume)
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    res = space.resources
    if res.trains_in_trial:  # the trial is the worker: it holds the worker's CPUs and GPUs
        trainable = tune.with_resources(run_trial, {k.lower(): v for k, v in res.per_worker().items()})
    else:
        # The trial only drives its TorchTrainer; the Train workers hold the CPUs and GPUs. Tune needs a
        # non-empty request, so the driver reserves its memory instead of a CPU the workers need.
        trainable = tune.with_resources(run_trial, {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY})
    param_space = {**space.param_space(), "sweep": state}
    if resume:
        return tune.Tuner.restore(str(experiment_path), trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False, param_space=param_space)
    metric, mode = space.tune_metric_mode()
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, search_alg=space.search_alg(), scheduler=space.scheduler(),
            num_samples=space.num_samples if space.search == "optuna" else 1,
            max_concurrent_trials=space.max_concurrent_trials,
            # A trial that trains itself hands its process, imports done, to the next trial (Tune reuses it
            # only once the previous trial's loop has ended). A Train job's driver is never reused: it
            # would keep a trial that ASHA stopped alive, with its Train workers and their CPUs, and the
            # next trial would wait for them forever.
            reuse_actors=res.trains_in_trial,
            trial_dirname_creator=trial_folder_name,
        ),
        run_config=tune.RunConfig(
            name=experiment_path.name, storage_path=str(experiment_path.parent), verbose=0,
            # a trial that trains itself keeps its checkpoints in Tune's trial folder (Train jobs: in Train's)
            checkpoint_config=tune.CheckpointConfig(num_to_keep=space.checkpoints.keep),
            callbacks=[
                CSVLoggerCallback(), JsonLoggerCallback(),
                TrialTable(str(space.path), space.profile, state["logs"]),
                tracking.CloseStoppedRuns(state["tracking_uri"], state["experiment_id"], state["parent_run_id"]),
                InfeasibleWatch.for_space(space),
                *([DropFinishedOptimizerState(state["train_storage"])] if space.checkpoints.final == "weights" else []),
            ],
            # A failed trial is retried from its last checkpoint up to max_failures times (by Ray Train for a
            # Train job), then stays failed while the sweep goes on.
            failure_config=tune.FailureConfig(max_failures=space.max_failures if res.trains_in_trial else 0,
                                              fail_fast=False),
        ),
    )


def trial_folder_name(trial) -> str:
    """Tune's folder of a trial (a one-worker trial's checkpoints), named as Train's is: by its trial id."""
    return trial.trial_id


def _settle(client: MlflowClient, state: dict, experiment_path: Path) -> dict[str, str]:
    """Tune's last saved verdict per trial id, applied to the trials' MLflow runs."""
    from ray import tune

    from ito_sweeps.sweep import tracking

    try:
        trials = tune.ExperimentAnalysis(str(experiment_path)).trials
    except Exception:  # nothing saved yet: no trial ever started
        trials = []
    tune_status = {t.trial_id: t.status for t in trials}
    tracking.settle_trial_runs(client, state["experiment_id"], state["parent_run_id"], tune_status)
    return tune_status
