"""Search spaces: one YAML file per sweep, checked completely before Ray starts.

A space names what a sweep varies (named variants as the rows of an ablation table, swept config keys,
repeats over seeds) and how Tune searches it (grid, our own seeded random sampling, or Optuna's TPE).
`load_space` reads the file, merges the chosen profile, checks every key against `Config`, builds the
`Config` of every trial it can enumerate, and on any mistake raises a `SpaceError` that names the file,
the key path inside it and what would be valid. The `SearchSpace` it returns hands Tune its
param_space, searcher and scheduler, and turns the config Tune gives a trial back into that trial's
`Config`, label and tags. The format is documented in search_spaces/README.md.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
import math
import random
import re
from collections import ChainMap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from ito_sweeps import config
from ito_sweeps.config import Config, ConfigError
from ito_sweeps.evaluate.run import METRIC_NAMES
from ito_sweeps.objectives.registry import OBJECTIVES

SEARCHES = ("grid", "random", "optuna")
SCHEDULERS = ("fifo", "asha")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
RANGES = ("uniform", "loguniform", "randint")
TOP_LEVEL_KEYS = (
    "description", "base", "config", "search", "metric", "mode", "scheduler", "num_samples", "search_seed",
    "max_concurrent_trials", "seeds", "variants", "params", "resources", "max_failures", "profiles",
)
DEFAULT_PROFILE = "cpu"
DEFAULT_METRIC, DEFAULT_MODE = "val/zeroshot_top1", "max"
ASHA_REDUCTION_FACTOR = 2.0
# labels read like the rows of an ablation table: the objective first, short names for the ITO knobs
OBJECTIVE_KEYS = ("objective.name", "objective.alignment")
LABEL_NAMES = {"fusion.depth": "fd", "objective.fusion_weight": "lam"}
# what Optuna's suggest_categorical accepts
CATEGORICAL_TYPES = (type(None), bool, int, float, str)


class SpaceError(ValueError):
    """A search space that cannot run; the message names the file, the key path in it and the problem."""


@dataclass(frozen=True)
class Resources:
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    # Ray placement of a trial's workers: PACK fills a node first (fast NVLink all-reduce on 8-GPU
    # nodes); SPREAD / STRICT_SPREAD put them on different nodes
    placement_strategy: str = "PACK"

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


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


@dataclass(frozen=True)
class DefineByRun:
    """Optuna's define-by-run space. A module-level class, not a closure: OptunaSearch pickles it into
    the experiment state, and Tuner.restore must be able to import it again."""

    variants: tuple[Variant, ...]
    params: tuple[Param, ...]  # in dependency order: a condition's keys are suggested before it is read
    fixed: dict[str, Any]  # the value a condition reads when no variant or param sets its key

    def __call__(self, trial) -> None:
        values = dict(self.fixed)
        if self.variants:
            name = trial.suggest_categorical("variant", [v.name for v in self.variants])
            values.update(next(v for v in self.variants if v.name == name).set)
        for param in self.params:
            if param.applies(values):
                values[param.key] = param.suggest(trial)


@dataclass
class SearchSpace:
    path: Path  # absolute path of the YAML
    name: str  # file stem
    profile: str | None
    description: str
    search: str  # grid | random | optuna
    metric: str | list[str]
    mode: str | list[str]
    num_samples: int
    max_concurrent_trials: int
    seeds: list[int]
    resources: Resources
    max_failures: int
    swept_keys: list[str]  # dotted keys that vary across trials
    search_seed: int = 0
    base: dict[str, Any] = field(default_factory=dict)  # the base config file's tree ({} without one)
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value: config, then the profile's
    variants: list[Variant] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)  # in file order, which labels follow
    asha: Asha | None = None  # None: FIFO
    fixed: dict[str, Any] = field(default_factory=dict)  # every key's value where no variant or param sets it
    trials: list[dict[str, Any]] = field(default_factory=list)  # grid/random: the grid_search elements

    def param_space(self) -> dict:
        if self.search == "optuna":
            return {}  # the searcher supplies every value
        from ray import tune

        return {"trial": tune.grid_search(self.trials)}

    def search_alg(self):
        if self.search != "optuna":
            return None
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(space=self.define_by_run(), metric=self.metric, mode=self.mode,
                            sampler=optuna.samplers.TPESampler(seed=self.search_seed))

    def define_by_run(self) -> DefineByRun:
        params = _dependency_order(self.params)
        conditioned = {key for param in params for key, _ in param.when}
        return DefineByRun(tuple(self.variants), tuple(params), {k: self.fixed[k] for k in sorted(conditioned)})

    def scheduler(self):
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

        if self.asha is None:
            return FIFOScheduler()
        # metric and mode reach ASHA from TuneConfig (see tune_metric_mode): Tune refuses to start when
        # both the scheduler and TuneConfig carry them
        return ASHAScheduler(time_attr="step", max_t=self.asha.max_t, grace_period=self.asha.grace_period,
                             reduction_factor=self.asha.reduction_factor)

    def tune_metric_mode(self) -> tuple[str | None, str | None]:
        if isinstance(self.metric, list):
            return None, None  # multi-objective: only OptunaSearch knows the metrics
        return self.metric, self.mode

    def num_trials(self) -> int | None:
        return self.num_samples if self.search == "optuna" else len(self.trials)

    def trial_configs(self) -> list[dict[str, Any]]:
        """grid/random: the `config` Tune gives each trial, in run order; optuna: [] (not known ahead)."""
        return [{"trial": trial} for trial in self.trials]

    def trial_overrides(self, trial_config: dict) -> dict[str, Any]:
        variant, chosen, seed = self._trial_parts(trial_config)
        return {**self.overrides, **(variant.set if variant else {}), **chosen, "run.seed": seed}

    def resolve(self, trial_config: dict) -> Config:
        try:
            return _make_config(self.base, self.trial_overrides(trial_config))
        except ConfigError as err:
            raise SpaceError(f"{self._shown()}: trial {self.trial_label(trial_config)!r}: {err}") from None

    def trial_label(self, trial_config: dict) -> str:
        variant, chosen, seed = self._trial_parts(trial_config)
        chosen = {key: _typed(key, value) for key, value in chosen.items()}
        values = ChainMap(chosen, variant.set if variant else {}, self.fixed)
        if variant:
            parts, skip = [variant.name], ()
        else:
            parts, skip = [str(values["objective.name"])], OBJECTIVE_KEYS
            uses_alignment = getattr(OBJECTIVES.get(values["objective.name"]), "uses_alignment", False)
            if uses_alignment or "objective.alignment" in chosen:
                parts.append(str(values["objective.alignment"]))
        parts += [_label_part(p.key, chosen[p.key]) for p in self.params if p.key in chosen and p.key not in skip]
        return " ".join([*parts, f"seed={seed}"])

    def trial_tags(self, trial_config: dict) -> dict[str, str]:
        variant, chosen, _ = self._trial_parts(trial_config)
        values = self.resolve(trial_config).flat()  # what the trial trains, objective defaults applied
        tags = {"variant": variant.name} if variant else {}
        swept_params = {p.key for p in self.params}
        # a conditional param whose condition failed keeps a default the trial never uses: no tag
        tags.update({key: str(values[key]) for key in self.swept_keys
                     if key in chosen or key not in swept_params})
        return tags

    def _trial_parts(self, trial_config: dict) -> tuple[Variant | None, dict[str, Any], int]:
        if self.search == "optuna":
            # Optuna's suggestions arrive as flat keys named like the config keys, beside anything else
            chosen = {p.key: trial_config[p.key] for p in self.params if p.key in trial_config}
            return self._variant(trial_config.get("variant")), chosen, self.seeds[0]
        if "trial" not in trial_config:
            raise SpaceError(f"{self._shown()}: a {self.search} trial's config needs the 'trial' entry of "
                             f"param_space(), got keys {sorted(trial_config)}")
        point = trial_config["trial"]
        return self._variant(point["variant"]), dict(point["set"]), point["seed"]

    def _variant(self, name: str | None) -> Variant | None:
        if not self.variants:
            return None
        for variant in self.variants:
            if variant.name == name:
                return variant
        names = ", ".join(v.name for v in self.variants)
        raise SpaceError(f"{self._shown()}: unknown variant {name!r} (variants: {names})")

    def _shown(self) -> str:
        return f"{self.path} (profile {self.profile})" if self.profile else str(self.path)


def load_space(path: str | Path, profile: str | None = None) -> SearchSpace:
    """Read, merge the profile, check everything and enumerate the trials; SpaceError on any mistake."""
    return _Loader(Path(path), profile).load()


# ---- reading and checking a file --------------------------------------------------------------------


class _Loader:
    def __init__(self, path: Path, profile: str | None):
        self.path, self.profile = path, profile
        self.origin: dict[str, str] = {}  # top-level key -> where it was written: "mode", "profiles.gpu.mode"
        self.profile_doc: dict[str, Any] = {}  # the chosen profile's own keys
        self.config_parts: list[tuple[Any, str]] = []  # (config tree, where it was written); later ones win
        self.config_origin: dict[str, str] = {}  # dotted config key -> where its value was written

    def fail(self, where: str, problem: str) -> NoReturn:
        profile = f" (profile {self.profile})" if self.profile else ""
        raise SpaceError(f"{self.path}{profile}: {where}: {problem}" if where else f"{self.path}{profile}: {problem}")

    def load(self) -> SearchSpace:
        doc = self.apply_profile(self.read())
        get = doc.get
        search = self.choose("search", get("search", "grid"), SEARCHES)
        metric, mode = self.metric_mode(get("metric", DEFAULT_METRIC), get("mode", DEFAULT_MODE))
        seeds = self.seeds(get("seeds", [0]))
        num_samples = self.integer("num_samples", get("num_samples", 1), 1)
        base = self.read_base(get("base"))
        overrides = self.config_entries()
        self.check_fixed(base, overrides)
        fixed = {**Config().flat(), **config.flatten(base), **overrides}
        variants = self.variants(get("variants"), base, overrides)
        params = self.params(get("params"), base, overrides, search)
        self.check_conditions(params, variants, base, overrides, fixed)
        self.check_seed_owner(params, variants, overrides)
        self.check_search(search, metric, num_samples, seeds, params, variants)
        asha = self.asha(get("scheduler", "fifo"), metric, params, variants, fixed)
        self.check_reporting(metric, params, variants, fixed)
        space = SearchSpace(
            path=self.path.resolve(), name=self.path.stem, profile=self.profile,
            description=str(get("description") or ""), search=search, metric=metric, mode=mode,
            num_samples=num_samples,
            max_concurrent_trials=self.integer("max_concurrent_trials", get("max_concurrent_trials", 1), 1),
            seeds=seeds, resources=self.resources(get("resources")),
            max_failures=self.integer("max_failures", get("max_failures", 0), 0),
            swept_keys=_swept_keys(params, variants, fixed, seeds),
            search_seed=self.integer("search_seed", get("search_seed", 0), None),
            base=base, overrides=overrides, variants=variants, params=params,
            asha=asha, fixed=fixed,
        )
        if search != "optuna":
            space.trials = _expand(space, random.Random(space.search_seed))
            for trial_config in space.trial_configs():
                space.resolve(trial_config)  # every trial's Config, so cross-key mistakes surface now
        return space

    # -- the file and its profile

    def read(self) -> dict[str, Any]:
        if not self.path.is_file():
            nearby = sorted(p.name for p in self.path.parent.glob("*.yaml")) if self.path.parent.is_dir() else []
            hint = f" (search spaces in {self.path.parent}: {', '.join(nearby)})" if nearby else ""
            raise SpaceError(f"{self.path}: search space file not found{hint}")
        try:
            doc = yaml.safe_load(self.path.read_text())
        except yaml.YAMLError as err:
            raise SpaceError(f"{self.path}: invalid YAML: {err}") from None
        if not isinstance(doc, dict):
            raise SpaceError(f"{self.path}: expected a mapping of keys ({', '.join(TOP_LEVEL_KEYS)}), "
                             f"got {type(doc).__name__}")
        self.check_top_level(doc, "", allowed=TOP_LEVEL_KEYS)
        return doc

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
            # config and resources merge key by key so a profile only says what differs; the rest replace
            if key in ("config", "resources") and isinstance(value, dict) and isinstance(doc.get(key), dict):
                merged[key] = {**doc[key], **value}
            else:
                merged[key] = value
            self.origin[key] = prefix + key
        self.profile_doc = overrides
        if "config" in overrides:
            self.config_parts.append((overrides["config"], prefix + "config"))
        return merged

    def where(self, key: str, inner: str | None = None) -> str:
        """Where `key` (or `key.inner`, inside config or resources) was written: the file or the profile."""
        if inner is None:
            return self.origin.get(key, key)
        from_profile = isinstance(self.profile_doc.get(key), dict) and inner in self.profile_doc[key]
        return f"profiles.{self.profile}.{key}.{inner}" if from_profile else f"{key}.{inner}"

    # -- scalar settings

    def choose(self, key: str, value: Any, valid: tuple[str, ...]) -> str:
        if value not in valid:
            self.fail(self.where(key), f"{value!r} is not one of {', '.join(valid)}")
        return value

    def integer(self, key: str, value: Any, lo: int | None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(self.where(key), f"expected an integer, got {value!r}")
        if lo is not None and value < lo:
            self.fail(self.where(key), f"{value} is below the minimum {lo}")
        return value

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
        valid = [f"{split}/{m}" for split in ("val", "test") for m in METRIC_NAMES]
        if name in valid:
            return
        close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]}? " if close else ""
        self.fail(where, f"{name!r} is never reported ({hint}metrics are val/NAME, at every validation pass, "
                         f"or test/NAME, at the end, with NAME one of {', '.join(METRIC_NAMES)})")

    def choose_mode(self, where: str, mode: Any) -> None:
        if mode not in ("max", "min"):
            self.fail(where, f"{mode!r} is not one of max, min")

    def resources(self, value: Any) -> Resources:
        value = value or {}
        if not isinstance(value, dict):
            self.fail(self.where("resources"), f"expected a mapping, got {value!r}")
        valid = tuple(f.name for f in dataclasses.fields(Resources))
        for key, amount in value.items():
            where = self.where("resources", key)
            if key not in valid:
                self.fail(where, f"unknown resource (valid: {', '.join(valid)})")
            if key == "placement_strategy":
                if amount not in PLACEMENT_STRATEGIES:
                    self.fail(where, f"{amount!r} is not one of {', '.join(PLACEMENT_STRATEGIES)}")
                continue
            if isinstance(amount, bool) or not isinstance(amount, (int, float)):
                self.fail(where, f"expected a number, got {amount!r}")
            if key == "num_workers" and (not isinstance(amount, int) or amount < 1):
                self.fail(where, f"expected an integer >= 1 (data-parallel processes per trial), got {amount!r}")
            if key == "cpus_per_worker" and amount <= 0:
                self.fail(where, f"expected a number > 0, got {amount!r}")
            if key == "gpus_per_worker" and amount < 0:
                self.fail(where, f"expected a number >= 0, got {amount!r}")
        return Resources(**{k: (v if k in ("num_workers", "placement_strategy") else float(v)) for k, v in value.items()})

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
            tree = yaml.safe_load(path.read_text()) or {}
            if not isinstance(tree, dict):
                raise ConfigError("expected a mapping of sections at the top level")
            config.from_dict(copy.deepcopy(tree))
        except (yaml.YAMLError, ConfigError) as err:
            self.fail(self.where("base"), f"{path}: {err}")
        return tree

    def config_entries(self) -> dict[str, Any]:
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
        problem = _key_problem(str(key))
        if problem:
            self.fail(where, problem)

    def check_fixed(self, base: dict[str, Any], overrides: dict[str, Any]) -> None:
        try:
            _make_config(base, overrides)
        except ConfigError as err:
            self.fail(self.config_origin.get(_error_key(err), self.where("config")), str(err))

    def check_value(self, where: str, base: dict[str, Any], overrides: dict[str, Any]) -> None:
        try:
            _make_config(base, overrides)
        except ConfigError as err:
            self.fail(where, str(err))

    # -- what varies

    def variants(self, value: Any, base: dict[str, Any], overrides: dict[str, Any]) -> list[Variant]:
        if value is None:
            return []
        where = self.where("variants")
        if not isinstance(value, list) or not value:
            self.fail(where, f"expected a non-empty list of {{name: ..., set: {{config.key: value}}}}, got {value!r}")
        variants: list[Variant] = []
        for n, item in enumerate(value):
            at = f"{where}[{n}]"
            if not isinstance(item, dict):
                self.fail(at, f"expected {{name: ..., set: {{config.key: value}}}}, got {item!r}")
            for key in item:
                if key not in ("name", "set"):
                    self.fail(f"{at}.{key}", "unknown key (valid keys: name, set)")
            name = item.get("name")
            if not isinstance(name, str) or not name.strip():
                self.fail(f"{at}.name", f"expected a non-empty string, got {name!r}")
            if name in [v.name for v in variants]:
                self.fail(f"{at}.name", f"duplicate variant name {name!r}: every row of the table needs its own name")
            settings = self.flat_entries(item.get("set"), f"{at}.set")
            try:
                _make_config(base, {**overrides, **settings})
            except ConfigError as err:
                key = _error_key(err)
                self.fail(f"{at}.set[{key}]" if key in settings else at, str(err))
            variants.append(Variant(name, settings))
        return variants

    def params(self, value: Any, base: dict[str, Any], overrides: dict[str, Any], search: str) -> list[Param]:
        if value is None:
            return []
        where = self.where("params")
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping of dotted config key -> {{grid: [...]}} (or choice, uniform, "
                             f"loguniform, randint), got {value!r}")
        return [self.param(f"{where}[{key}]", key, spec, base, overrides, search) for key, spec in value.items()]

    def param(self, at: str, key: Any, spec: Any, base: dict, overrides: dict, search: str) -> Param:
        self.check_key(at, key)
        shapes = ("{grid: [...]}, {choice: [...]}, {uniform: [low, high]}, {loguniform: [low, high]} "
                  "or {randint: [low, high]}")
        if not isinstance(spec, dict):
            self.fail(at, f"expected one of {shapes}, optionally with when: {{config.key: value}}; got {spec!r}")
        for name in spec:
            if name not in (*DISTRIBUTIONS, "when"):
                self.fail(f"{at}.{name}", f"unknown key (valid: {', '.join(DISTRIBUTIONS)}, when)")
        kinds = [name for name in spec if name in DISTRIBUTIONS]
        if len(kinds) != 1:
            self.fail(at, f"needs exactly one of {', '.join(DISTRIBUTIONS)}, got {kinds or 'none'}")
        kind = kinds[0]
        if search == "grid" and kind != "grid":
            self.fail(f"{at}.{kind}", f"{kind} samples values, which search: grid cannot do; use search: random or "
                                      f"search: optuna, or list the values with grid: [...]")
        if kind in RANGES:
            values = self.range_bounds(f"{at}.{kind}", key, kind, spec[kind], base, overrides)
        else:
            values = self.listed(f"{at}.{kind}", key, spec[kind], base, overrides, search)
        return Param(key, kind, values, self.condition(f"{at}.when", spec.get("when")))

    def listed(self, at: str, key: str, raw: Any, base: dict, overrides: dict, search: str) -> tuple[Any, ...]:
        if not isinstance(raw, list) or not raw:
            self.fail(at, f"expected a non-empty list of values for {key}, got {raw!r}")
        for n, value in enumerate(raw):
            if raw.index(value) != n:
                self.fail(f"{at}[{n}]", f"{value!r} is listed twice")
            if search == "optuna" and not isinstance(value, CATEGORICAL_TYPES):
                self.fail(f"{at}[{n}]", f"optuna chooses only between plain values (numbers, strings, booleans, "
                                        f"null), got {value!r}")
            self.check_value(f"{at}[{n}]", base, {**overrides, key: value})
        return tuple(raw)

    def range_bounds(self, at: str, key: str, kind: str, raw: Any, base: dict, overrides: dict) -> tuple[Any, Any]:
        kind_of_key = config.key_type(key)
        if kind_of_key not in (int, float):
            self.fail(at, f"{key} is not a number; list its values with choice: [...] or grid: [...]")
        if kind_of_key is int and kind != "randint":
            self.fail(at, f"{key} is an integer key; sample it with randint: [low, high], or list values with choice")
        if not isinstance(raw, list) or len(raw) != 2:
            self.fail(at, f"expected [low, high], got {raw!r}")
        low, high = (self.bound(f"{at}[{n}]", value, integer=kind == "randint") for n, value in enumerate(raw))
        if low > high:
            self.fail(at, f"low {low} is above high {high}")
        if kind == "loguniform" and not 0 < low < high:
            self.fail(at, f"loguniform needs 0 < low < high, got low {low}, high {high}")
        for n, bound in enumerate((low, high)):
            self.check_value(f"{at}[{n}]", base, {**overrides, key: bound})
        return low, high

    def bound(self, at: str, value: Any, integer: bool) -> int | float:
        if integer:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(at, f"randint bounds are integers, got {value!r}")
            return value
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; users mean the number
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(at, f"expected a number, got {value!r}")
        return float(value)

    def condition(self, at: str, raw: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict) or not raw:
            self.fail(at, f"expected a mapping of config.key: value (or a list of allowed values), got {raw!r}")
        out = []
        for key, allowed in raw.items():
            self.check_key(f"{at}[{key}]", key)
            allowed = allowed if isinstance(allowed, list) else [allowed]
            if not allowed:
                self.fail(f"{at}[{key}]", "an empty list of allowed values matches nothing")
            out.append((key, tuple(allowed)))
        return tuple(out)

    def check_conditions(self, params: list[Param], variants: list[Variant], base: dict, overrides: dict,
                         fixed: dict[str, Any]) -> None:
        swept = {p.key: p for p in params}
        for variant in variants:
            for key in variant.set:
                if key in swept:
                    self.fail(f"{self.where('params')}[{key}]",
                              f"variant {variant.name!r} sets {key}, so it cannot also be swept: a key is either "
                              f"a row of the table (variants) or a swept param, not both")
        set_by_file = set(overrides) | set(config.flatten(base))
        for param in params:
            for key, allowed in param.when:
                at = f"{self.where('params')}[{param.key}].when[{key}]"
                if key == param.key:
                    self.fail(at, "a param cannot be conditional on itself")
                source = swept.get(key)
                if source is not None and source.kind in ("uniform", "loguniform"):
                    self.fail(at, f"{key} is sampled from a continuous range; a condition can only read a key with "
                                  f"listed values (grid, choice, randint, a variant or config)")
                if source is None and key not in set_by_file and not any(key in v.set for v in variants):
                    self.fail(at, f"nothing in this space sets {key} (it is always its default {fixed[key]!r}); "
                                  f"condition on a key that config, a variant or another param sets")
                possible = _values_of(key, params, variants, fixed)
                if not any(value in possible for value in allowed):
                    self.fail(at, f"can never match: {key} is only ever {_show(possible)} here, never {list(allowed)}")
        if len(_dependency_order(params)) < len(params):
            self.fail(self.where("params"), "the when conditions form a cycle: each of some params waits for another")

    def check_search(self, search: str, metric: str | list[str], num_samples: int, seeds: list[int],
                     params: list[Param], variants: list[Variant]) -> None:
        if isinstance(metric, list) and search != "optuna":
            self.fail(self.where("metric"), "several metrics (multi-objective) need search: optuna")
        if search == "grid" and num_samples != 1:
            self.fail(self.where("num_samples"), f"a grid runs every point once per seed, so num_samples must be 1, "
                                                 f"got {num_samples}; for repeats list seeds instead, e.g. "
                                                 f"seeds: [0, 1, 2]")
        if search == "random" and all(p.kind == "grid" for p in params):
            self.fail(self.where("search"), "random needs a sampled param (choice, uniform, loguniform or "
                                            "randint); with only grid lists use search: grid")
        if search == "optuna" and not params and not variants:
            self.fail(self.where("search"), "optuna needs something to choose: params or variants")
        if search == "optuna" and len(seeds) != 1:
            self.fail(self.where("seeds"), f"optuna needs exactly one seed, got {seeds}: repeats of a sampled "
                                           f"point are not supported with optuna; rerun the chosen point over several "
                                           f"seeds with a grid space")

    def check_seed_owner(self, params: list[Param], variants: list[Variant], overrides: dict[str, Any]) -> None:
        # `seeds` sets run.seed last, so a value written anywhere else would be silently replaced
        places = ([self.config_origin.get("run.seed", "config")] if "run.seed" in overrides else []) + \
            [f"{self.where('variants')}[{n}].set" for n, v in enumerate(variants) if "run.seed" in v.set] + \
            [f"{self.where('params')}[run.seed]" for p in params if p.key == "run.seed"]
        if places:
            self.fail(places[0], "run.seed is set by the top-level seeds list (every point runs once per seed); "
                                 "list the seeds there, e.g. seeds: [0, 1, 2]")

    def check_reporting(self, metric: str | list[str], params: list[Param], variants: list[Variant],
                        fixed: dict[str, Any]) -> None:
        """Trials report to Tune at each validation pass, with the checkpoint Ray restores from."""
        every = _values_of("eval.every", params, variants, fixed)
        validated = [m for m in ([metric] if isinstance(metric, str) else metric) if m.startswith("val/")]
        if validated and 0 in every:
            self.fail(self.where("metric"), f"{validated[0]} needs validation passes, but eval.every is 0 in some "
                                            f"trial (only a final test pass); set eval.every or use a test/ metric")
        for ckpt in _values_of("run.checkpoint_every", params, variants, fixed):
            if ckpt and any(e and ckpt % e for e in every):
                self.fail("run.checkpoint_every", f"{ckpt} is not a multiple of eval.every {_show(every)}: a sweep "
                                                  f"hands Ray a checkpoint at validation passes only")

    def asha(self, raw: Any, metric: str | list[str], params: list[Param], variants: list[Variant],
             fixed: dict[str, Any]) -> Asha | None:
        where = self.where("scheduler")
        if isinstance(raw, dict):
            options = dict(raw)
            name = options.pop("name", None)
            name_at = f"{where}.name"
        else:
            options, name, name_at = {}, raw, where
        if name not in SCHEDULERS:
            self.fail(name_at, f"{name!r} is not one of {', '.join(SCHEDULERS)} (or a mapping such as "
                               f"{{name: asha, grace_period: 100, reduction_factor: 2}})")
        valid = ("grace_period", "reduction_factor") if name == "asha" else ()
        for option in options:
            if option not in valid:
                self.fail(f"{where}.{option}", f"unknown option for {name} (valid: {', '.join(valid) or 'none'})")
        if name == "fifo":
            return None
        if isinstance(metric, list):
            self.fail(where, "asha stops trials on one metric; a multi-objective sweep needs scheduler: fifo")
        if not metric.startswith("val/"):
            self.fail(where, f"asha compares trials on validation passes, so the metric must be val/..., not "
                             f"{metric} (e.g. val/{metric.split('/', 1)[1]})")
        every = _values_of("eval.every", params, variants, fixed)
        if 0 in every:
            self.fail(where, "asha needs validation passes to compare trials, but eval.every is 0 (only a final "
                             "test pass); set eval.every to the steps between passes")
        max_t = max(_values_of("schedule.steps", params, variants, fixed))
        grace = options.get("grace_period", min(every))
        if isinstance(grace, bool) or not isinstance(grace, int) or not 1 <= grace <= max_t:
            self.fail(f"{where}.grace_period", f"expected training steps from 1 to the longest schedule.steps "
                                               f"{max_t}, got {grace!r}")
        factor = options.get("reduction_factor", ASHA_REDUCTION_FACTOR)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 1:
            self.fail(f"{where}.reduction_factor", f"expected a number > 1, got {factor!r}")
        return Asha(grace, float(factor), int(max_t))


# ---- helpers ----------------------------------------------------------------------------------------


def _make_config(base: dict[str, Any], overrides: dict[str, Any]) -> Config:
    tree = copy.deepcopy(base)
    for key, value in overrides.items():
        config.set_path(tree, key, copy.deepcopy(value))
    return config.from_dict(tree)


@functools.cache
def _config_keys() -> tuple[str, ...]:
    return tuple(Config().flat())


def _key_problem(key: str) -> str | None:
    keys = _config_keys()
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


def _typed(key: str, value: Any) -> Any:
    """A value as the config holds it (YAML's 2 is 2.0 for a float key), so labels and tags agree."""
    if config.key_type(key) is float and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass  # the config check reports it
    return value


def _error_key(err: ConfigError) -> str:
    """The dotted key a ConfigError message starts with."""
    found = re.match(r"[A-Za-z_][\w.]*", str(err))
    return found.group(0) if found else ""


def _values_of(key: str, params: list[Param], variants: list[Variant], fixed: dict[str, Any]) -> list[Any]:
    """Every value `key` can take in some trial (for ranges: both bounds, or every integer of randint)."""
    for param in params:
        if param.key == key:
            low, high = param.values[0], param.values[-1]
            values = list(range(low, high + 1)) if param.kind == "randint" else list(param.values)
            return [*values, fixed[key]] if param.when else values  # absent where its condition fails
    setters = [v.set[key] for v in variants if key in v.set]
    return [*setters, fixed[key]] if len(setters) < len(variants) or not variants else setters


def _distinct(values: list[Any]) -> list[Any]:
    # by ==, not by hash: YAML gives 2 where the config holds 2.0, and lists are unhashable
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def _show(values: list[Any]) -> str:
    distinct = _distinct(values)
    return ", ".join(map(repr, distinct[:8])) + (", ..." if len(distinct) > 8 else "")


def _dependency_order(params: list[Param]) -> list[Param]:
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


def _expand(space: SearchSpace, rng: random.Random) -> list[dict[str, Any]]:
    """Every trial of a grid/random space: variants x grid lists (x sampled points), honouring `when`
    without duplicates, then all of it once per seed, so the repeats of a point share its values."""
    sampled = [p for p in space.params if p.kind != "grid"]
    # random: every sampled key is drawn up front in file order, so search_seed fixes the whole sweep
    draws = [{p.key: p.sample(rng) for p in sampled} for _ in range(space.num_samples)] if sampled else [{}]
    params = _dependency_order(space.params)
    points, seen = [], set()
    for draw in draws:
        for variant in space.variants or [None]:
            start = ChainMap(variant.set if variant else {}, space.fixed)
            for chosen in _branches(params, start, draw):
                point = {"variant": variant.name if variant else None, "set": chosen}
                fingerprint = json.dumps(point, sort_keys=True)
                if fingerprint not in seen:
                    seen.add(fingerprint)
                    points.append(point)
    # seeds outermost: a sweep stopped early has whole tables for its first seeds
    return [{**point, "seed": seed} for seed in space.seeds for point in points]


def _branches(params: list[Param], values: ChainMap, draw: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if not params:
        yield {}
        return
    first, rest = params[0], params[1:]
    if not first.applies(values):
        yield from _branches(rest, values, draw)  # absent: the trial keeps the config's value
        return
    for option in first.values if first.kind == "grid" else [draw[first.key]]:
        for tail in _branches(rest, values.new_child({first.key: option}), draw):
            yield {first.key: option, **tail}


def _swept_keys(params: list[Param], variants: list[Variant], fixed: dict[str, Any], seeds: list[int]) -> list[str]:
    keys = [p.key for p in params]
    for variant in variants:
        for key in variant.set:
            if key not in keys and len(_distinct([v.set.get(key, fixed[key]) for v in variants])) > 1:
                keys.append(key)
    return keys + (["run.seed"] if len(seeds) > 1 else [])


def _label_part(key: str, value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.3g}"
    elif isinstance(value, (list, tuple)):
        text = "+".join(map(str, value)) or "none"  # regularizers=sep+gc
    else:
        text = str(value)
    return text if key in OBJECTIVE_KEYS else f"{LABEL_NAMES.get(key, key.rsplit('.', 1)[-1])}={text}"
