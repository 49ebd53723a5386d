import json
import logging
import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch.distributed as dist

from ito_sweeps import config as C

# open_clip warns on every randomly initialised model, which is every model in these tests
logging.getLogger().setLevel(logging.ERROR)

# The default suite's benchmarks and tasks (config.DEFAULT_BENCHMARKS["scenes"]), with the digits transfer set
# cut from 500 + 1000 samples to 48 + 64
SMALL_SUITE = [
    {"name": "scenes", "tasks": ["zeroshot_classification", "zeroshot_retrieval", "linear_probe"]},
    {"name": "scenes_count", "label": "count"},
    {"name": "digits", "embedded": "digits", "tasks": ["zeroshot_classification", "linear_probe"], "seed": 0,
     "size": 48, "train_size": 64},
]

# A few seconds per run on 2 cores: small data, few steps, every feature still on.
FAST = [f"eval.benchmarks={json.dumps(SMALL_SUITE)}",
    "data.num_train=128", "data.num_val=32", "data.num_test=64", "data.batch_size=32", "data.num_workers=0",
    "schedule.steps=4", "schedule.warmup_steps=1", "eval.every=0", "eval.probe_train_size=64",
    "run.log_every=1", "run.device=cpu",
]


@pytest.fixture
def fast_cfg():
    def make(*overrides: str) -> C.Config:
        return C.load(None, FAST + list(overrides))

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def gloo_group(rank: int, world_size: int, port: int):
    """A real torch.distributed process group over loopback, for one spawned rank."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, made once: MLflow makes a new store's schema by running its migrations,
    about 2 s per store. The tests that check what a new store prints make their own."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("empty_store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store_uri(tmp_path, empty_store) -> str:
    """A new, empty MLflow store at `tmp_path/mlflow.db` (a copy of `empty_store`), where the sweep helpers
    of the tests point."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture(scope="session")
def analysis_store(tmp_path_factory):
    """The analysis tests' MLflow store (tests/analysis_store.py), built once: its schema set-up takes seconds."""
    from tests.analysis_store import make_store

    return make_store(tmp_path_factory.mktemp("analysis_store"))


def train_job_checkpoint(storage: Path, experiment: str) -> int:
    """The step of the newest checkpoint Ray Train has registered for a sweep's Train jobs (0: none)."""
    steps = [0]
    for snapshot in (storage / experiment / "train").glob("*/checkpoint_manager_snapshot.json"):
        try:
            steps += [c["metrics"]["step"] for c in json.loads(snapshot.read_text())["checkpoint_results"]]
        except (OSError, ValueError, KeyError):  # caught mid-write
            pass
    return max(steps)
