"""MLflow bookkeeping for sweeps: one parent run per sweep, one child run per trial.

Everything goes through `MlflowClient` with explicit run ids, never the fluent API's process-wide
active run: the sweep driver, a trial's Tune actor and its rank-0 Train worker are three processes
(often on three machines) writing to the same runs. A trial's child run is found again by its Ray trial
id, so a trial restarted after a worker failure or a resumed sweep continues its run instead of
opening a second one.
"""
from __future__ import annotations

import logging
import os
import queue
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from ray.tune import Callback

from ito_sweeps.sweep.store import TrackingError, artifact_root

TRIAL_ID_TAG = "ray.trial_id"
ERROR_TAG = "error"
FINAL_METRIC = "test/steps"  # only the last report of a trial carries test metrics, and it always has this one
MAX_TAG_CHARS = 5000  # MLflow caps tag values at 8000 characters
log = logging.getLogger(__name__)


def experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    # Created once by the sweep driver, before any trial starts: concurrent first writers to a
    # fresh SQLite store race ("database is locked").
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_root(uri))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def start_sweep(client: MlflowClient, experiment: str, name: str, tags: dict[str, str], space_file: Path) -> str:
    run = client.create_run(experiment, run_name=name, tags={**tags, "ito.kind": "sweep"})
    client.log_artifact(run.info.run_id, str(space_file))
    return run.info.run_id


def reopen(client: MlflowClient, run_id: str) -> None:
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "interrupted", "false")


def find_trial_run(client: MlflowClient, experiment: str, parent: str, trial_id: str):
    found = client.search_runs(
        [experiment],
        filter_string=f"tags.`{TRIAL_ID_TAG}` = '{trial_id}' and tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}'",
        max_results=1,
    )
    return found[0] if found else None


def trial_run(client: MlflowClient, experiment: str, parent: str, trial_id: str, name: str,
              tags: dict[str, str], params: dict[str, Any]) -> str:
    """The trial's child run: the existing one for this trial id, reopened, or a new one."""
    found = find_trial_run(client, experiment, parent, trial_id)
    if found is not None:
        if found.info.status != "RUNNING":
            client.update_run(found.info.run_id, status="RUNNING")
            _drop_tag(client, found, ERROR_TAG)
        return found.info.run_id
    run = client.create_run(
        experiment, run_name=name,
        tags={**tags, MLFLOW_PARENT_RUN_ID: parent, TRIAL_ID_TAG: trial_id, "ito.kind": "trial"},
    )
    items = [Param(k, str(v)) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=items[start : start + 100])
    return run.info.run_id


def trial_runs(client: MlflowClient, experiment: str, parent: str) -> list:
    return client.search_runs([experiment], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}'",
                              max_results=10_000)


def end_run(client: MlflowClient, run_id: str, status: str, **tags: str) -> None:
    for key, value in tags.items():
        client.set_tag(run_id, key, value[:MAX_TAG_CHARS])
    client.set_terminated(run_id, status)


def root_cause(err: BaseException) -> str:
    """The worker's own exception, not Ray's wrappers around it."""
    failures = getattr(err, "worker_failures", None)
    if failures:
        err = failures[min(failures)]
    while getattr(err, "cause", None) is not None:
        err = err.cause
    return f"{type(err).__name__}: {err}".strip()


def trial_error(trial) -> str:
    """A failed Tune trial's root cause, from the exception Tune pickled beside the trial before telling its
    callbacks. Read from the trial's local folder: `Trial.get_pickled_error()` reads the storage copy, which
    is not written yet when the callbacks run (it returned None there)."""
    path = trial.pickled_error_file
    if path is None or not os.path.isfile(path):
        return ""
    with open(path, "rb") as f:
        return root_cause(cloudpickle.load(f))


def _drop_tag(client: MlflowClient, run, key: str) -> None:
    if key in run.data.tags:
        client.delete_tag(run.info.run_id, key)


def settle_trial_runs(client: MlflowClient, experiment: str, parent: str, tune_status: dict[str, str]) -> None:
    """After the sweep driver stops: each child run gets the status Tune recorded for its trial. Trials Tune
    left unfinished (interrupted, to be resumed) are KILLED, whatever exception their process saw last."""
    for run in trial_runs(client, experiment, parent):
        status = tune_status.get(run.data.tags.get(TRIAL_ID_TAG, ""))
        if status in ("TERMINATED", "ERROR"):
            if status == "ERROR" and run.info.status == "RUNNING":
                end_run(client, run.info.run_id, "FAILED", **{ERROR_TAG: "the trial failed; see its Ray error.txt"})
            continue
        if run.info.status != "KILLED":
            _drop_tag(client, run, ERROR_TAG)
            end_run(client, run.info.run_id, "KILLED", interrupted="true")


class CloseStoppedRuns(Callback):
    """A Tune callback on the sweep driver. A trial that ASHA stops is killed, never returning to close
    its child run, and a trial whose process dies cannot close it either: close those runs here, with
    the last metrics exactly as the trial logged them."""

    def __init__(self, uri: str, experiment: str, parent: str):
        self.uri, self.experiment, self.parent = uri, experiment, parent

    def on_trial_complete(self, iteration, trials, trial, **info):
        client = MlflowClient(self.uri)
        run = find_trial_run(client, self.experiment, self.parent, trial.trial_id)
        if run is None or run.info.status == "FINISHED":
            return
        # ASHA also stops a trial whose last report reached max_t: that one ran to its end.
        finished = FINAL_METRIC in (trial.last_result or {})
        end_run(client, run.info.run_id, "FINISHED", stopped_early=str(not finished).lower())

    def on_trial_error(self, iteration, trials, trial, **info):
        client = MlflowClient(self.uri)
        run = find_trial_run(client, self.experiment, self.parent, trial.trial_id)
        if run is not None and run.info.status == "RUNNING":
            error = trial_error(trial) or f"the trial process failed; see {trial.path}/error.txt"
            end_run(client, run.info.run_id, "FAILED", **{ERROR_TAG: error})


class RunLogger:
    """What rank 0 of a trial writes while it trains: metric records, files, system metrics.

    A tracking server that stops answering must not stop training, so records are sent by a background
    thread, in order, each retried until it is accepted (MLflow's own HTTP retries first, then ours).
    `flush` waits for what is queued, at most `timeout_s`: the worker flushes before every report to Ray,
    so a scheduler that stops the trial on a report never loses what came before it. `close` gives an
    outage `CLOSE_TIMEOUT_S` to end, then raises `TrackingError` naming how much could not be sent.
    """

    RETRY_S = (1.0, 2.0, 5.0, 10.0)  # waits between our own retries, the last one repeated
    CLOSE_TIMEOUT_S = 600.0

    def __init__(self, uri: str, run_id: str, system_metrics_interval_s: float = 10.0):
        self.client, self.run_id, self.uri = MlflowClient(uri), run_id, uri
        self.pending: queue.Queue = queue.Queue()
        self.failures = 0  # sends that failed and were retried, for the trial's log
        self.stopping = threading.Event()
        self.sender = threading.Thread(target=self._send_forever, name="mlflow-sender", daemon=True)
        self.sender.start()
        self.monitor = None
        if system_metrics_interval_s > 0:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            # resume_logging: a restarted trial continues the system-metric steps it already logged
            self.monitor = SystemMetricsMonitor(run_id, sampling_interval=system_metrics_interval_s,
                                                resume_logging=True, tracking_uri=uri)
            self.monitor.start()

    def log(self, step: int, record: dict[str, float]) -> None:
        now = int(time.time() * 1000)  # the time it was measured, not the time it reached the server
        metrics = [Metric(k, float(v), now, step) for k, v in record.items()]
        self.pending.put(lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def artifact(self, path: Path) -> None:
        data = path.read_bytes()  # the file may be gone by the time the sender gets to it
        def send() -> None:
            with tempfile.TemporaryDirectory() as folder:
                copy = Path(folder) / path.name
                copy.write_bytes(data)
                self.client.log_artifact(self.run_id, str(copy))
        self.pending.put(send)

    def set_tag(self, key: str, value: str) -> None:
        self.pending.put(lambda: self.client.set_tag(self.run_id, key, value[:MAX_TAG_CHARS]))

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued so far is sent; False if `timeout_s` ran out first."""
        deadline = time.monotonic() + timeout_s
        while self.pending.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.pending.unfinished_tasks

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.finish()
        sent = self.flush(self.CLOSE_TIMEOUT_S)
        self.stopping.set()
        if not sent:
            raise TrackingError(
                f"{self.pending.unfinished_tasks} MLflow record(s) of run {self.run_id} could not be sent to "
                f"{self.uri} within {self.CLOSE_TIMEOUT_S:.0f} s; the trial's metrics are in its Ray result "
                f"and checkpoint. Check that the tracking server is up"
            )

    def _send_forever(self) -> None:
        while not self.stopping.is_set():
            try:
                send = self.pending.get(timeout=0.5)
            except queue.Empty:
                continue
            attempt = 0
            while not self.stopping.is_set():
                try:
                    send()
                    break
                except Exception as err:  # noqa: BLE001 - a failure to send is retried or dropped, never fatal
                    if _refused(err):  # the server answered no: sending it again cannot help
                        log.error("MLflow at %s refused a record of run %s, dropped: %s", self.uri, self.run_id, err)
                        break
                    self.failures += 1
                    wait = self.RETRY_S[min(attempt, len(self.RETRY_S) - 1)]
                    if attempt == 0:
                        log.warning("MLflow at %s did not accept a record (%s); retrying every %.0f s or less, "
                                    "training goes on", self.uri, err, self.RETRY_S[-1])
                    attempt += 1
                    self.stopping.wait(wait)
            self.pending.task_done()


def _refused(err: Exception) -> bool:
    """A 4xx answer (bad value, no permission), as opposed to a server that is down or failing."""
    status = getattr(err, "get_http_status_code", lambda: 500)()
    return 400 <= status < 500
