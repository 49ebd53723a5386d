"""Where runs are recorded: the MLflow store's address, its artifact root, and whether it answers.

Apart from tracking.py so that readers of recorded runs (the analysis package) need neither Ray nor Tune.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from ito_sweeps.errors import UserError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# How MLflow clients authenticate to a server; the sweep hands them on to every trial and Train worker
CREDENTIAL_VARIABLES = (
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_CLIENT_CERT_PATH",
)


class TrackingError(UserError, RuntimeError):
    pass


def resolve_uri(uri: str | None) -> str:
    """An absolute tracking URI: Ray runs trials in other working directories, so `sqlite:///mlflow.db`
    must not mean a different file in each of them."""
    uri = uri or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).expanduser().resolve())
    if uri.startswith(("http://", "https://", "databricks", "postgresql", "mysql")):
        return uri.rstrip("/")
    raise TrackingError(
        f"tracking URI {uri!r} is not supported: use sqlite:///PATH.db (the default is {DEFAULT_TRACKING_URI}) "
        f"or http://HOST:PORT of a running `mlflow server` (MLflow's ./mlruns file store is deprecated)"
    )


def artifact_root(uri: str) -> str | None:
    """Artifacts of a local SQLite store go in `mlartifacts/` beside the database; a server chooses its own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after MLflow's minutes of HTTP retries, when the server is not there or does
    not accept this environment's credentials."""
    if not uri.startswith("http"):
        return
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError) as err:
        raise TrackingError(
            f"the MLflow server at {uri} is not reachable ({err}); start it with "
            f"`mlflow server --host HOST --port PORT`, or drop --tracking-uri to log to {DEFAULT_TRACKING_URI}"
        ) from err
    # MLflow's own request path, so the login is exactly what its clients send (environment variables or
    # ~/.mlflow/credentials, token, TLS settings)
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)
    response = http_request(creds, "/api/2.0/mlflow/experiments/search", "GET", params={"max_results": 1},
                            max_retries=0, timeout=timeout_s, raise_on_status=False)
    if response.status_code in (401, 403):
        given = "were refused" if creds.username or creds.token else "are not set"
        raise TrackingError(
            f"the MLflow server at {uri} requires a login and the credentials {given} (HTTP {response.status_code}); "
            f"export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
        )
    if response.status_code != 200:
        raise TrackingError(f"the MLflow server at {uri} answered HTTP {response.status_code} to a search")


def credentials_to_forward() -> dict[str, str]:
    """The MLflow credential variables of this environment that Ray must hand on to trials and workers.

    Inside a `ray job submit` job, the variables the job's runtime_env already sets reach them anyway,
    and Ray refuses a driver runtime_env that sets them again.
    """
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
    from_job = (job.get("runtime_env") or {}).get("env_vars") or {}
    return {k: os.environ[k] for k in CREDENTIAL_VARIABLES if k in os.environ and k not in from_job}
