"""Recorded runs as pandas tables: what every table and plot of a report is computed from.

`load_runs` reads one MLflow experiment, or one sweep (its parent run), into a `Runs`: a table of trial
runs and a table of sweep parents, one row per run with typed params, tags, final metric values,
status and timing. Failed, killed and still-running trials stay in the table with their status: what a
table averages is decided there, and what is left out is reported, never silently dropped. Metric
histories and artifacts are fetched only when a plot asks for them.
"""
from __future__ import annotations

import ast
import tempfile
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence
from urllib.parse import unquote, urlparse

import pandas as pd
import yaml
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from analysis.errors import AnalysisError
from ito_sweeps import config
from ito_sweeps.sweep.store import TrackingError, check_reachable, resolve_uri

PAGE = 1000  # runs per search request
HISTORY_THREADS = 8  # metric histories are one request each from a server: overlap their latency
BULK_RUNS, BULK_VALUES = 500, 10**7  # runs per bulk history query (SQLite's variable limit), values
RUN_COLUMNS = ["run_id", "run_name", "status", "start_time", "end_time", "duration_s", "parent_run_id", "artifact_uri"]


@dataclass
class Runs:
    trials: pd.DataFrame  # one row per trial run: RUN_COLUMNS, params.*, tags.*, metrics.* (final values)
    parents: pd.DataFrame  # one row per sweep parent run, same columns
    tracking_uri: str
    experiment_name: str
    client: MlflowClient = field(repr=False, default=None)
    _histories: dict[tuple[str, str], list[tuple[int, float]]] = field(repr=False, default_factory=dict)
    _downloads: Path | None = field(repr=False, default=None)

    @property
    def finished(self) -> pd.DataFrame:
        return self.trials[self.trials["status"] == "FINISHED"]

    def history(self, keys: Sequence[str], run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Every logged value of `keys`: a long table run_id, key, step, value, sorted by run, key and step."""
        run_ids = list(self.trials["run_id"] if run_ids is None else run_ids)
        missing = [(r, k) for r in run_ids for k in keys if (r, k) not in self._histories]
        if missing:
            self._histories.update(dict.fromkeys(missing, ()))
            self._histories.update(self._fetch(missing))
        rows = [(r, k, step, value) for r in run_ids for k in keys for step, value in self._histories[(r, k)]]
        frame = pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
        return frame.sort_values(["run_id", "key", "step"], kind="stable").reset_index(drop=True)

    def _fetch(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[int, float]]]:
        """Histories of (run id, key) pairs. MlflowClient reads one history per request; MLflow's SQL
        store (the local default) can read one key of many runs in one query, about a hundred times
        faster for a big sweep, so that is used where the store offers it."""
        store = getattr(self.client._tracking_client, "store", None)
        if hasattr(store, "get_metric_history_bulk"):
            found: dict[tuple[str, str], list[tuple[int, float]]] = {}
            for key in dict.fromkeys(k for _, k in pairs):
                run_ids = [r for r, k in pairs if k == key]
                for start in range(0, len(run_ids), BULK_RUNS):
                    for m in store.get_metric_history_bulk(run_ids[start:start + BULK_RUNS], key, BULK_VALUES):
                        found.setdefault((m.run_id, key), []).append((m.step, m.value))
            return found

        def fetch(pair: tuple[str, str]) -> list[tuple[int, float]]:
            return [(m.step, m.value) for m in self.client.get_metric_history(*pair)]

        with ThreadPoolExecutor(HISTORY_THREADS) as pool:
            return dict(zip(pairs, pool.map(fetch, pairs)))

    def best(self, key: str, mode: Literal["max", "min"]) -> pd.Series:
        """The best value of `key` over each trial's history (NaN where never logged), indexed by run_id."""
        values = self.history([key]).groupby("run_id")["value"].agg(mode)
        return values.reindex(self.trials["run_id"])

    def artifact(self, run_id: str, path: str) -> Path | None:
        """A local copy of one artifact file of a run, or None when the run has no such file."""
        root = self.trials.set_index("run_id").at[run_id, "artifact_uri"]
        parsed = urlparse(root)
        if parsed.scheme in ("", "file"):  # a local store: read in place
            local = Path(unquote(parsed.path)) / path
            return local if local.is_file() else None
        if self._downloads is None:
            self._downloads = Path(tempfile.mkdtemp(prefix="ito-sweeps-artifacts-"))
        target = self._downloads / run_id
        try:
            return Path(self.client.download_artifacts(run_id, path, str(target)))
        except (MlflowException, OSError):
            return None


def load_runs(tracking_uri: str | None = None, *, experiment: str | None = None, sweep: str | None = None) -> Runs:
    """The trial runs of an experiment (by name) or of one sweep (by its parent run id)."""
    if (experiment is None) == (sweep is None):
        raise AnalysisError("name exactly one of an experiment (--experiment NAME) or a sweep (--sweep RUN_ID)")
    uri = _open_store(tracking_uri)
    client = MlflowClient(uri)
    if sweep is not None:
        try:
            parent = client.get_run(sweep)
        except MlflowException:
            raise AnalysisError(f"no run {sweep!r} in {uri}: pass the sweep's parent run id "
                                f"(the sweep command prints it; or use --experiment NAME)") from None
        exp = client.get_experiment(parent.info.experiment_id)
        runs = _search(client, exp.experiment_id, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{sweep}'")
        if not runs:
            raise AnalysisError(f"run {sweep!r} ({parent.info.run_name}) has no trial runs: it is not a sweep's "
                                f"parent run; use --experiment {exp.name} for all runs of its experiment")
        parents = [parent]
    else:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments(view_type=ViewType.ALL))
            raise AnalysisError(f"no experiment {experiment!r} in {uri} (experiments there: "
                                f"{', '.join(names) or 'none'}); a sweep's experiment is named after it")
        every = _search(client, exp.experiment_id)
        named_as_parent = {r.data.tags.get(MLFLOW_PARENT_RUN_ID) for r in every}
        parents = [r for r in every if r.info.run_id in named_as_parent]
        runs = [r for r in every if r.info.run_id not in named_as_parent]
        if not runs:
            raise AnalysisError(f"experiment {experiment!r} in {uri} has no trial runs yet: run a sweep first")
    return Runs(trials=_table(runs), parents=_table(parents), tracking_uri=uri, experiment_name=exp.name,
                client=client)


def _open_store(tracking_uri: str | None) -> str:
    try:
        uri = resolve_uri(tracking_uri)
        check_reachable(uri)
    except TrackingError as err:
        raise AnalysisError(str(err)) from None
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # MLflow would create an empty store here; a report of nothing helps no one
        raise AnalysisError(f"no MLflow store at {uri.removeprefix('sqlite:///')}: run `ito-sweeps sweep "
                            f"SPACE.yaml` in this folder first, or pass --tracking-uri")
    return uri


def _search(client: MlflowClient, experiment_id: str, filter_string: str = "") -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, ViewType.ACTIVE_ONLY, PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _table(runs: list) -> pd.DataFrame:
    records = []
    for run in runs:
        info, data = run.info, run.data
        record: dict[str, Any] = {
            "run_id": info.run_id, "run_name": info.run_name, "status": info.status,
            "start_time": info.start_time, "end_time": info.end_time,
            "parent_run_id": data.tags.get(MLFLOW_PARENT_RUN_ID), "artifact_uri": info.artifact_uri,
        }
        record.update({f"params.{k}": parse_param(k, v) for k, v in data.params.items()})
        record.update({f"tags.{k}": v for k, v in data.tags.items() if not k.startswith("mlflow.")})
        record.update({f"metrics.{k}": v for k, v in data.metrics.items()})
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=None if records else RUN_COLUMNS)
    for column in ("start_time", "end_time"):
        frame[column] = pd.to_datetime(frame[column], unit="ms", utc=True)
    # a run still going has no end time: its duration is unknown, not "until now"
    frame["duration_s"] = (frame["end_time"] - frame["start_time"]).dt.total_seconds()
    others = sorted(c for c in frame.columns if c not in RUN_COLUMNS)
    return frame[RUN_COLUMNS + others].sort_values(["start_time", "run_name"], kind="stable").reset_index(drop=True)


def parse_param(key: str, raw: str) -> Any:
    """A param as the config holds it: MLflow stores "2.0", "True", "['sep']" and "None" as strings."""
    if raw == "None":
        return None
    try:
        kind = config.key_type(key)
    except KeyError:  # not a config key (logged by hand): YAML's reading of it, else the string
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            return raw
    if kind is bool:
        return raw == "True"
    if kind in (int, float):
        return kind(raw)
    if typing.get_origin(kind) is tuple:
        return tuple(ast.literal_eval(raw))  # logged as Python's repr of a list; YAML reads it 10x slower
    return raw
