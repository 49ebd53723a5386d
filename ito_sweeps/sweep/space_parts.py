"""The pieces a search space is made of (resources, variants, swept params, ASHA, checkpoint retention) and
the small questions every other space module asks of them: which values can a key take, in which order
can conditional params be chosen, what Config does a set of overrides give.

Nothing here imports torch, Ray or Optuna: a space is checked before any of them is needed.
"""
from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ito_sweeps import config
from ito_sweeps.config import Config
from ito_sweeps.errors import UserError

SEARCHES = ("grid", "random", "optuna")
SCHEDULERS = ("fifo", "asha")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
RANGES = ("uniform", "loguniform", "randint")
FINAL_CHECKPOINTS = ("weights", "full")


class SpaceError(UserError, ValueError):
    """A search space that cannot run; the message names the file, the key path in it and the problem."""


@dataclass(frozen=True)
class Resources:
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    # Ray placement of a trial's workers: PACK fills a node first (fast NVLink all-reduce on 8-GPU
    # nodes); SPREAD / STRICT_SPREAD put them on different nodes
    placement_strategy: str = "PACK"
    # On a cluster, how long a trial's request may stay one that Ray reports no node can meet before the
    # sweep fails: long enough for an autoscaler to start a node type that has it
    infeasible_wait_s: float = 600.0

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @property
    def trains_in_trial(self) -> bool:
        """One worker needs no Train job: the Tune trial itself trains (see sweep/worker.py)."""
        return self.num_workers == 1

    def per_worker(self) -> dict[str, float]:
        """One Train worker's request, as Ray names the resources."""
        return {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if self.use_gpu else {})}


@dataclass(frozen=True)
class Checkpoints:
    """What a trial keeps in Ray's storage. While it runs, the latest `keep` checkpoints (the newest is
    what a restarted worker or a resumed sweep continues from); once it has finished, its last one holds
    the model weights alone (`weights`: enough to evaluate and export it) or also the optimizer state
    (`full`: enough to train on from it)."""

    keep: int = 1
    final: str = "weights"


@dataclass(frozen=True)
class Variant:
    """One named row of an ablation table: fixed values for a few config keys."""

    name: str
    set: dict[str, Any]


@dataclass(frozen=True)
class Param:
    """One swept config key: a grid or choice list, or a [low, high] range, optionally conditional."""

    key: str
    kind: str  # one of DISTRIBUTIONS
    values: tuple[Any, ...]  # grid/choice: the listed values; uniform/loguniform/randint: (low, high)
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (key, allowed values) pairs that must all hold

    def applies(self, values: Mapping[str, Any]) -> bool:
        return all(values[key] in allowed for key, allowed in self.when)

    def sample(self, rng: random.Random) -> Any:
        low, high = self.values[0], self.values[-1]
        if self.kind == "uniform":
            return rng.uniform(low, high)
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        if self.kind == "randint":
            return rng.randint(low, high)
        return rng.choice(self.values)

    def suggest(self, trial) -> Any:
        if self.kind in ("uniform", "loguniform"):
            return trial.suggest_float(self.key, self.values[0], self.values[1], log=self.kind == "loguniform")
        if self.kind == "randint":
            return trial.suggest_int(self.key, self.values[0], self.values[1])
        return trial.suggest_categorical(self.key, list(self.values))


@dataclass(frozen=True)
class Asha:
    grace_period: int  # training steps before the first rung
    reduction_factor: float
    max_t: int  # the longest trial's schedule.steps


def make_config(base: dict[str, Any], overrides: Mapping[str, Any]) -> Config:
    """The checked Config of the base file's tree with dotted-key overrides; ConfigError on a mistake."""
    tree = copy.deepcopy(base)
    for key, value in overrides.items():
        config.set_path(tree, key, copy.deepcopy(value))
    return config.from_dict(tree)


def typed(key: str, value: Any) -> Any:
    """A value as the config holds it (YAML's 2 is 2.0 for a float key), so labels and tags agree."""
    if config.key_type(key) is float and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass  # the config check reports it
    return value


def values_of(key: str, params: list[Param], variants: list[Variant], fixed: dict[str, Any]) -> list[Any]:
    """Every value `key` can take in some trial (for ranges: both bounds, or every integer of randint)."""
    for param in params:
        if param.key == key:
            low, high = param.values[0], param.values[-1]
            values = list(range(low, high + 1)) if param.kind == "randint" else list(param.values)
            return [*values, fixed[key]] if param.when else values  # absent where its condition fails
    setters = [v.set[key] for v in variants if key in v.set]
    return [*setters, fixed[key]] if len(setters) < len(variants) or not variants else setters


def distinct(values: list[Any]) -> list[Any]:
    # by ==, not by hash: YAML gives 2 where the config holds 2.0, and lists are unhashable
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def show(values: list[Any]) -> str:
    unique = distinct(values)
    return ", ".join(map(repr, unique[:8])) + (", ..." if len(unique) > 8 else "")


def dependency_order(params: list[Param]) -> list[Param]:
    """File order, except that a param comes after the params its condition reads (a cycle is left out)."""
    swept = {p.key for p in params}
    ordered: list[Param] = []
    remaining = list(params)
    while remaining:
        placed = {p.key for p in ordered}
        ready = [p for p in remaining if all(k not in swept or k in placed for k, _ in p.when)]
        if not ready:
            break
        ordered.append(ready[0])
        remaining.remove(ready[0])
    return ordered
