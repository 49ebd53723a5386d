"""Reading a search-space file: the YAML, the chosen profile merged in, where each key was written, the
sweep's own settings (search, metric, seeds, resources, checkpoints) and the config every trial starts
from. Every mistake is a SpaceError naming the file, the profile, the key path and what would be valid.

What varies between trials (variants, params) and the checks across keys live in space_checks.py; both
need the config's types and the declared names only, never torch.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import re
from pathlib import Path
from typing import Any, NoReturn

import yaml

from ito_sweeps import catalog, config, strict_yaml
from ito_sweeps.config import Config, ConfigError
from ito_sweeps.sweep.space_parts import (FINAL_CHECKPOINTS, PLACEMENT_STRATEGIES, Checkpoints, Resources, SpaceError,
                                          make_config)

TOP_LEVEL_KEYS = (
    "description", "base", "config", "search", "metric", "mode", "scheduler", "num_samples", "search_seed",
    "max_concurrent_trials", "seeds", "variants", "params", "resources", "checkpoints", "max_failures", "profiles",
)
DEFAULT_PROFILE = "cpu"
MERGED_KEY_BY_KEY = ("config", "resources", "checkpoints")  # a profile's mappings merge into the file's
DEFAULT_METRIC, DEFAULT_MODE = "val/zeroshot_avg", "max"


class SpaceFile:
    def __init__(self, path: Path, profile: str | None):
        self.path, self.profile = path, profile
        self.origin: dict[str, str] = {}  # top-level key -> where it was written: "mode", "profiles.gpu.mode"
        self.profile_doc: dict[str, Any] = {}  # the chosen profile's own keys
        self.config_parts: list[tuple[Any, str]] = []  # (config tree, where it was written); later ones win
        self.config_origin: dict[str, str] = {}  # dotted config key -> where its value was written

    def fail(self, where: str, problem: str) -> NoReturn:
        raise SpaceError(f"{self.shown()}: {where}: {problem}" if where else f"{self.shown()}: {problem}")

    def shown(self) -> str:
        return f"{self.path} (profile {self.profile})" if self.profile else str(self.path)

    # -- the file and its profile

    def read(self) -> dict[str, Any]:
        """The file's top level with the chosen profile merged in."""
        if not self.path.is_file():
            nearby = sorted(p.name for p in self.path.parent.glob("*.yaml")) if self.path.parent.is_dir() else []
            hint = f" (search spaces in {self.path.parent}: {', '.join(nearby)})" if nearby else ""
            raise SpaceError(f"{self.path}: search space file not found{hint}")
        try:
            doc = strict_yaml.load(self.path)
        except strict_yaml.DuplicateKeyError as err:
            raise SpaceError(f"{self.path}: {err}") from None
        except yaml.YAMLError as err:
            raise SpaceError(f"{self.path}: invalid YAML: {err}") from None
        if not isinstance(doc, dict):
            raise SpaceError(f"{self.path}: expected a mapping of keys ({', '.join(TOP_LEVEL_KEYS)}), "
                             f"got {type(doc).__name__}")
        self.check_top_level(doc, "", allowed=TOP_LEVEL_KEYS)
        return self.apply_profile(doc)

    def check_top_level(self, doc: dict, prefix: str, allowed: tuple[str, ...]) -> None:
        for key in doc:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                self.fail(f"{prefix}{key}", f"unknown key ({hint}valid keys: {', '.join(allowed)})")

    def apply_profile(self, doc: dict[str, Any]) -> dict[str, Any]:
        self.origin = {key: key for key in doc}
        self.config_parts = [(doc.get("config"), "config")]
        profiles = doc.pop("profiles", None) or {}
        if not isinstance(profiles, dict):
            self.fail("profiles", f"expected a mapping of profile name -> overrides, got {profiles!r}")
        if self.profile is None:
            self.profile = DEFAULT_PROFILE if DEFAULT_PROFILE in profiles else None
            if self.profile is None:
                return doc
        if self.profile not in profiles:
            valid = ", ".join(map(str, profiles)) if profiles else "none: this file has no profiles"
            profile, self.profile = self.profile, None
            self.fail("profiles", f"unknown profile {profile!r} (valid profiles: {valid})")
        overrides = profiles[self.profile] or {}
        prefix = f"profiles.{self.profile}."
        if not isinstance(overrides, dict):
            self.fail(prefix[:-1], f"expected a mapping of top-level keys, got {overrides!r}")
        self.check_top_level(overrides, prefix, allowed=tuple(k for k in TOP_LEVEL_KEYS if k != "profiles"))
        merged = dict(doc)
        for key, value in overrides.items():
            # mappings merge key by key so a profile only says what differs; the rest replace
            if key in MERGED_KEY_BY_KEY and isinstance(value, dict) and isinstance(doc.get(key), dict):
                merged[key] = {**doc[key], **value}
            else:
                merged[key] = value
            self.origin[key] = prefix + key
        self.profile_doc = overrides
        if "config" in overrides:
            self.config_parts.append((overrides["config"], prefix + "config"))
        return merged

    def where(self, key: str, inner: str | None = None) -> str:
        """Where `key` (or `key.inner`, inside a mapping such as resources) was written: the file or the profile."""
        if inner is None:
            return self.origin.get(key, key)
        from_profile = isinstance(self.profile_doc.get(key), dict) and inner in self.profile_doc[key]
        return f"profiles.{self.profile}.{key}.{inner}" if from_profile else f"{key}.{inner}"

    # -- the sweep's own settings

    def choose(self, key: str, value: Any, valid: tuple[str, ...]) -> str:
        if value not in valid:
            self.fail(self.where(key), f"{value!r} is not one of {', '.join(valid)}")
        return value

    def integer(self, key: str, value: Any, lo: int | None, where: str | None = None) -> int:
        where = where or self.where(key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected an integer, got {value!r}")
        if lo is not None and value < lo:
            self.fail(where, f"{value} is below the minimum {lo}")
        return value

    def number(self, where: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            self.fail(where, f"{value!r} is not a finite number")
        return float(value)

    def seeds(self, value: Any) -> list[int]:
        if (not isinstance(value, list) or not value
                or any(isinstance(s, bool) or not isinstance(s, int) for s in value)):
            self.fail(self.where("seeds"), f"expected a non-empty list of integers such as [0, 1, 2], got {value!r}")
        if len(set(value)) != len(value):
            self.fail(self.where("seeds"), f"a seed is listed twice in {value}")
        return list(value)

    def metric_mode(self, metric: Any, mode: Any) -> tuple[str | list[str], str | list[str]]:
        if isinstance(metric, list):
            if not metric:
                self.fail(self.where("metric"), "an empty list; name one metric, or several for multi-objective")
            for n, name in enumerate(metric):
                self.check_metric(f"{self.where('metric')}[{n}]", name)
            if len(set(metric)) != len(metric):
                self.fail(self.where("metric"), f"a metric is listed twice in {metric}")
            if not isinstance(mode, list) or len(mode) != len(metric):
                self.fail(self.where("mode"), f"with {len(metric)} metrics, mode must be a list of {len(metric)} "
                                              f"entries (max or min each), got {mode!r}")
            for n, direction in enumerate(mode):
                self.choose_mode(f"{self.where('mode')}[{n}]", direction)
            return list(metric), list(mode)
        self.check_metric(self.where("metric"), metric)
        if isinstance(mode, list):
            self.fail(self.where("mode"), "a list of modes needs a list of metrics; with one metric use max or min")
        self.choose_mode(self.where("mode"), mode)
        return metric, mode

    def check_metric(self, where: str, name: Any) -> None:
        """The form val/BENCHMARK/METRIC or test/...; space_checks.check_metrics_reported checks the names
        against each trial's suite."""
        if not (isinstance(name, str) and name.split("/", 1)[0] in ("val", "test") and "/" in name):
            self.fail(where, f"{name!r} is never reported: metrics are val/NAME, at every validation pass, or "
                             f"test/NAME, at the end, e.g. val/scenes/zeroshot_top1 or val/zeroshot_avg")

    def choose_mode(self, where: str, mode: Any) -> None:
        if mode not in ("max", "min"):
            self.fail(where, f"{mode!r} is not one of max, min")

    def mapping(self, key: str, value: Any, of: type) -> dict[str, Any]:
        """A mapping whose keys are the fields of the dataclass `of`, each checked as known."""
        value = value or {}
        if not isinstance(value, dict):
            self.fail(self.where(key), f"expected a mapping, got {value!r}")
        valid = tuple(f.name for f in dataclasses.fields(of))
        for name in value:
            if name not in valid:
                self.fail(self.where(key, name), f"unknown key (valid: {', '.join(valid)})")
        return value

    def resources(self, value: Any) -> Resources:
        out: dict[str, Any] = {}
        for key, amount in self.mapping("resources", value, Resources).items():
            where = self.where("resources", key)
            if key == "placement_strategy":
                if amount not in PLACEMENT_STRATEGIES:
                    self.fail(where, f"{amount!r} is not one of {', '.join(PLACEMENT_STRATEGIES)}")
                out[key] = amount
                continue
            if key == "num_workers":
                if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
                    self.fail(where, f"expected an integer >= 1 (data-parallel processes per trial), got {amount!r}")
                out[key] = amount
                continue
            out[key] = self.number(where, amount)
            if key == "cpus_per_worker" and amount <= 0:
                self.fail(where, f"expected a number > 0, got {amount!r}")
            if key in ("gpus_per_worker", "infeasible_wait_s") and amount < 0:
                self.fail(where, f"expected a number >= 0, got {amount!r}")
            if key == "gpus_per_worker" and amount > 1 and not float(amount).is_integer():
                self.fail(where, f"Ray shares a GPU by fractions below 1 only; use a whole number of GPUs, "
                                 f"got {amount!r}")
        return Resources(**out)

    def checkpoints(self, value: Any) -> Checkpoints:
        settings = self.mapping("checkpoints", value, Checkpoints)
        keep = self.integer("checkpoints", settings.get("keep", Checkpoints.keep), 1, self.where("checkpoints", "keep"))
        final = settings.get("final", Checkpoints.final)
        if final not in FINAL_CHECKPOINTS:
            self.fail(self.where("checkpoints", "final"), f"{final!r} is not one of {', '.join(FINAL_CHECKPOINTS)} "
                                                          f"(weights: the model alone; full: with the optimizer state)")
        return Checkpoints(keep, final)

    # -- the config every trial starts from

    def read_base(self, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, str):
            self.fail(self.where("base"), f"expected a path to a config YAML, got {value!r}")
        path = self.path.parent / value  # relative to the space file, so a sweep runs from any directory
        if not path.is_file():
            self.fail(self.where("base"), f"config file not found: {path}")
        try:
            tree = strict_yaml.load(path) or {}
            if not isinstance(tree, dict):
                raise ConfigError("expected a mapping of sections at the top level")
            config.from_dict(copy.deepcopy(tree))
        except (yaml.YAMLError, ConfigError) as err:
            self.fail(self.where("base"), f"{path}: {err}")
        return tree

    def config_entries(self) -> dict[str, Any]:
        """The `config` overrides, then the profile's, as dotted key -> value (later ones win)."""
        out: dict[str, Any] = {}
        for tree, where in self.config_parts:
            for key, value in self.flat_entries(tree, where).items():
                out[key] = value
                self.config_origin[key] = f"{where}[{key}]"
        return out

    def flat_entries(self, tree: Any, where: str) -> dict[str, Any]:
        """Nested sections and dotted keys alike, as dotted key -> value, each key checked."""
        if tree is None:
            return {}
        if not isinstance(tree, dict):
            self.fail(where, f"expected a mapping of config keys (nested sections or dotted keys), got {tree!r}")
        out: dict[str, Any] = {}

        def walk(node: dict, prefix: str) -> None:
            for name, value in node.items():
                key = f"{prefix}{name}"
                if isinstance(value, dict):
                    walk(value, key + ".")
                    continue
                if key in out:
                    self.fail(f"{where}[{key}]", "set twice (once in a nested section, once as a dotted key)")
                self.check_key(f"{where}[{key}]", key)
                out[key] = value

        walk(tree, "")
        return out

    def check_key(self, where: str, key: Any) -> None:
        problem = key_problem(str(key))
        if problem:
            self.fail(where, problem)

    def check_fixed(self, base: dict[str, Any], overrides: dict[str, Any]) -> None:
        try:
            make_config(base, overrides)
        except ConfigError as err:
            self.fail(self.config_origin.get(error_key(err), self.where("config")), str(err))

    def check_value(self, where: str, base: dict[str, Any], overrides: dict[str, Any]) -> None:
        try:
            make_config(base, overrides)
        except ConfigError as err:
            self.fail(where, str(err))


@functools.cache
def config_keys() -> tuple[str, ...]:
    return tuple(Config().flat())


def key_problem(key: str) -> str | None:
    keys = config_keys()
    if key in keys:
        return None
    inside = [k for k in keys if k.startswith(f"{key}.")]
    if inside:
        return f"{key} is a section, not a key (its keys: {', '.join(inside)})"
    close = difflib.get_close_matches(key, keys, n=3)
    sections = sorted({k.split(".")[0] for k in keys})
    hint = (f"did you mean {' or '.join(close)}?" if close
            else f"keys are dotted paths such as objective.fusion_weight; sections: {', '.join(sections)}")
    return f"unknown config key {key!r} ({hint})"


def error_key(err: ConfigError) -> str:
    """The dotted key a ConfigError message starts with."""
    found = re.match(r"[A-Za-z_][\w.]*", str(err))
    return found.group(0) if found else ""
