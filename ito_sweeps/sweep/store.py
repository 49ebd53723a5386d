"""Where runs are recorded: the MLflow store's address, its artifact root, and whether it answers.

Apart from tracking.py so that readers of recorded runs (the analysis package) need neither Ray nor Tune.
"""
from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class TrackingError(RuntimeError):
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
    """Fail in seconds, not after MLflow's minutes of HTTP retries, when the server is not there."""
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
