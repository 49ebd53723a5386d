"""Real server processes for tests: an MLflow tracking server (optionally with basic auth), started and
stopped in a session of their own so that stopping one also ends its worker processes."""
import os
import signal
import subprocess
import sys
import time
import urllib.request

from tests.conftest import free_port


def start(command, env=None, **kwargs):
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})},
                            **kwargs)


def stop(process, sig=signal.SIGTERM):
    os.killpg(process.pid, sig)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(20)


def wait_for(url, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def start_mlflow_server(folder, port=None, auth_env=None):
    """`mlflow server` on 127.0.0.1 over a SQLite store in `folder`; with `auth_env` (the admin password,
    the Flask secret key and the auth config path, as environment variables) MLflow's basic-auth app."""
    port = port or free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{folder}/server.db",
               "--artifacts-destination", str(folder / "art"), "--workers", "1"]
    if auth_env is not None:
        command += ["--app-name", "basic-auth"]
    server = start(command, env=auth_env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health")
    except RuntimeError:
        stop(server)
        raise
    return server, url
