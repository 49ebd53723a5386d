import logging

import pytest

from ito_sweeps import config as C

# open_clip warns on every randomly initialised model, which is every model in these tests
logging.getLogger().setLevel(logging.ERROR)

# A few seconds per run on 2 cores: small data, few steps, every feature still on.
FAST = [
    "data.num_train=128", "data.num_val=32", "data.num_test=64", "data.batch_size=32", "data.num_workers=0",
    "schedule.steps=4", "schedule.warmup_steps=1", "eval.every=0", "eval.probe_train_size=64",
    "run.log_every=1", "run.device=cpu",
]


@pytest.fixture
def fast_cfg():
    def make(*overrides: str) -> C.Config:
        return C.load(None, FAST + list(overrides))

    return make
