"""What varies between a space's trials (variants, swept params with their conditions) and the checks that
need more than one key: search, seeds, scheduler, reporting, and how each trial's batch splits over its
workers. Each function reads through a `SpaceFile`, whose `fail` names the file, the key path and the fix.
"""
from __future__ import annotations

import difflib
from typing import Any

from ito_sweeps import config
from ito_sweeps.config import ConfigError
from ito_sweeps.sweep.space_file import SpaceFile, error_key
from ito_sweeps.sweep.space_parts import (DISTRIBUTIONS, RANGES, Asha, Param, Resources, Variant, dependency_order,
                                          make_config, show, values_of)

SCHEDULERS = ("fifo", "asha")
ASHA_REDUCTION_FACTOR = 2.0
# what Optuna's suggest_categorical accepts
CATEGORICAL_TYPES = (type(None), bool, int, float, str)
SHAPES = ("{grid: [...]}, {choice: [...]}, {uniform: [low, high]}, {loguniform: [low, high]} "
          "or {randint: [low, high]}")


def variants(f: SpaceFile, value: Any, base: dict[str, Any], overrides: dict[str, Any]) -> list[Variant]:
    if value is None:
        return []
    where = f.where("variants")
    if not isinstance(value, list) or not value:
        f.fail(where, f"expected a non-empty list of {{name: ..., set: {{config.key: value}}}}, got {value!r}")
    out: list[Variant] = []
    for n, item in enumerate(value):
        at = f"{where}[{n}]"
        if not isinstance(item, dict):
            f.fail(at, f"expected {{name: ..., set: {{config.key: value}}}}, got {item!r}")
        for key in item:
            if key not in ("name", "set"):
                f.fail(f"{at}.{key}", "unknown key (valid keys: name, set)")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            f.fail(f"{at}.name", f"expected a non-empty string, got {name!r}")
        if name in [v.name for v in out]:
            f.fail(f"{at}.name", f"duplicate variant name {name!r}: every row of the table needs its own name")
        settings = f.flat_entries(item.get("set"), f"{at}.set")
        try:
            make_config(base, {**overrides, **settings})
        except ConfigError as err:
            key = error_key(err)
            f.fail(f"{at}.set[{key}]" if key in settings else at, str(err))
        out.append(Variant(name, settings))
    return out


def params(f: SpaceFile, value: Any, base: dict[str, Any], overrides: dict[str, Any], search: str) -> list[Param]:
    if value is None:
        return []
    where = f.where("params")
    if not isinstance(value, dict):
        f.fail(where, f"expected a mapping of dotted config key -> {{grid: [...]}} (or choice, uniform, "
                      f"loguniform, randint), got {value!r}")
    return [_param(f, f"{where}[{key}]", key, spec, base, overrides, search) for key, spec in value.items()]


def _param(f: SpaceFile, at: str, key: Any, spec: Any, base: dict, overrides: dict, search: str) -> Param:
    f.check_key(at, key)
    if not isinstance(spec, dict):
        f.fail(at, f"expected one of {SHAPES}, optionally with when: {{config.key: value}}; got {spec!r}")
    for name in spec:
        if name not in (*DISTRIBUTIONS, "when"):
            f.fail(f"{at}.{name}", f"unknown key (valid: {', '.join(DISTRIBUTIONS)}, when)")
    kinds = [name for name in spec if name in DISTRIBUTIONS]
    if len(kinds) != 1:
        f.fail(at, f"needs exactly one of {', '.join(DISTRIBUTIONS)}, got {kinds or 'none'}")
    kind = kinds[0]
    if search == "grid" and kind != "grid":
        f.fail(f"{at}.{kind}", f"{kind} samples values, which search: grid cannot do; use search: random or "
                               f"search: optuna, or list the values with grid: [...]")
    if kind in RANGES:
        values = _range_bounds(f, f"{at}.{kind}", key, kind, spec[kind], base, overrides)
    else:
        values = _listed(f, f"{at}.{kind}", key, spec[kind], base, overrides, search)
    return Param(key, kind, values, _condition(f, f"{at}.when", spec.get("when")))


def _listed(f: SpaceFile, at: str, key: str, raw: Any, base: dict, overrides: dict, search: str) -> tuple[Any, ...]:
    if not isinstance(raw, list) or not raw:
        f.fail(at, f"expected a non-empty list of values for {key}, got {raw!r}")
    for n, value in enumerate(raw):
        if raw.index(value) != n:
            f.fail(f"{at}[{n}]", f"{value!r} is listed twice")
        if search == "optuna" and not isinstance(value, CATEGORICAL_TYPES):
            f.fail(f"{at}[{n}]", f"optuna chooses only between plain values (numbers, strings, booleans, "
                                 f"null), got {value!r}")
        f.check_value(f"{at}[{n}]", base, {**overrides, key: value})
    return tuple(raw)


def _range_bounds(f: SpaceFile, at: str, key: str, kind: str, raw: Any, base: dict, overrides: dict) -> tuple[Any, Any]:
    kind_of_key = config.key_type(key)
    if kind_of_key not in (int, float):
        f.fail(at, f"{key} is not a number; list its values with choice: [...] or grid: [...]")
    if kind_of_key is int and kind != "randint":
        f.fail(at, f"{key} is an integer key; sample it with randint: [low, high], or list values with choice")
    if not isinstance(raw, list) or len(raw) != 2:
        f.fail(at, f"expected [low, high], got {raw!r}")
    low, high = (_bound(f, f"{at}[{n}]", value, integer=kind == "randint") for n, value in enumerate(raw))
    if low > high:
        f.fail(at, f"low {low} is above high {high}")
    if kind == "loguniform" and not 0 < low < high:
        f.fail(at, f"loguniform needs 0 < low < high, got low {low}, high {high}")
    for n, bound in enumerate((low, high)):
        f.check_value(f"{at}[{n}]", base, {**overrides, key: bound})
    return low, high


def _bound(f: SpaceFile, at: str, value: Any, integer: bool) -> int | float:
    if integer:
        if isinstance(value, bool) or not isinstance(value, int):
            f.fail(at, f"randint bounds are integers, got {value!r}")
        return value
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; users mean the number
        try:
            value = float(value)
        except ValueError:
            pass
    return f.number(at, value)


def _condition(f: SpaceFile, at: str, raw: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        f.fail(at, f"expected a mapping of config.key: value (or a list of allowed values), got {raw!r}")
    out = []
    for key, allowed in raw.items():
        f.check_key(f"{at}[{key}]", key)
        allowed = allowed if isinstance(allowed, list) else [allowed]
        if not allowed:
            f.fail(f"{at}[{key}]", "an empty list of allowed values matches nothing")
        out.append((key, tuple(allowed)))
    return tuple(out)


def check_conditions(f: SpaceFile, params: list[Param], variants: list[Variant], base: dict, overrides: dict,
                     fixed: dict[str, Any]) -> None:
    swept = {p.key: p for p in params}
    for variant in variants:
        for key in variant.set:
            if key in swept:
                f.fail(f"{f.where('params')}[{key}]",
                       f"variant {variant.name!r} sets {key}, so it cannot also be swept: a key is either "
                       f"a row of the table (variants) or a swept param, not both")
    set_by_file = set(overrides) | set(config.flatten(base))
    for param in params:
        for key, allowed in param.when:
            at = f"{f.where('params')}[{param.key}].when[{key}]"
            if key == param.key:
                f.fail(at, "a param cannot be conditional on itself")
            source = swept.get(key)
            if source is not None and source.kind in ("uniform", "loguniform"):
                f.fail(at, f"{key} is sampled from a continuous range; a condition can only read a key with "
                           f"listed values (grid, choice, randint, a variant or config)")
            if source is None and key not in set_by_file and not any(key in v.set for v in variants):
                f.fail(at, f"nothing in this space sets {key} (it is always its default {fixed[key]!r}); "
                           f"condition on a key that config, a variant or another param sets")
            possible = values_of(key, params, variants, fixed)
            if not any(value in possible for value in allowed):
                f.fail(at, f"can never match: {key} is only ever {show(possible)} here, never {list(allowed)}")
    if len(dependency_order(params)) < len(params):
        f.fail(f.where("params"), "the when conditions form a cycle: each of some params waits for another")


def check_search(f: SpaceFile, search: str, metric: str | list[str], num_samples: int, seeds: list[int],
                 params: list[Param], variants: list[Variant]) -> None:
    if isinstance(metric, list) and search != "optuna":
        f.fail(f.where("metric"), "several metrics (multi-objective) need search: optuna")
    if search == "grid" and num_samples != 1:
        f.fail(f.where("num_samples"), f"a grid runs every point once per seed, so num_samples must be 1, got "
                                       f"{num_samples}; for repeats list seeds instead, e.g. seeds: [0, 1, 2]")
    if search == "random" and all(p.kind == "grid" for p in params):
        f.fail(f.where("search"), "random needs a sampled param (choice, uniform, loguniform or randint); with "
                                  "only grid lists use search: grid")
    if search == "optuna" and not params and not variants:
        f.fail(f.where("search"), "optuna needs something to choose: params or variants")
    if search == "optuna" and len(seeds) != 1:
        f.fail(f.where("seeds"), f"optuna needs exactly one seed, got {seeds}: repeats of a sampled point are not "
                                 f"supported with optuna; rerun the chosen point over several seeds with a grid space")


def check_seed_owner(f: SpaceFile, params: list[Param], variants: list[Variant], overrides: dict[str, Any]) -> None:
    # `seeds` sets run.seed last, so a value written anywhere else would be silently replaced
    places = ([f.config_origin.get("run.seed", "config")] if "run.seed" in overrides else []) + \
        [f"{f.where('variants')}[{n}].set" for n, v in enumerate(variants) if "run.seed" in v.set] + \
        [f"{f.where('params')}[run.seed]" for p in params if p.key == "run.seed"]
    if places:
        f.fail(places[0], "run.seed is set by the top-level seeds list (every point runs once per seed); "
                          "list the seeds there, e.g. seeds: [0, 1, 2]")


def check_reporting(f: SpaceFile, metric: str | list[str], params: list[Param], variants: list[Variant],
                    fixed: dict[str, Any]) -> None:
    """Trials report to Tune at each validation pass, with the checkpoint Ray restores from."""
    every = values_of("eval.every", params, variants, fixed)
    validated = [m for m in ([metric] if isinstance(metric, str) else metric) if m.startswith("val/")]
    if validated and 0 in every:
        f.fail(f.where("metric"), f"{validated[0]} needs validation passes, but eval.every is 0 in some trial "
                                  f"(only a final test pass); set eval.every or use a test/ metric")
    for ckpt in values_of("run.checkpoint_every", params, variants, fixed):
        if ckpt and any(e and ckpt % e for e in every):
            f.fail("run.checkpoint_every", f"{ckpt} is not a multiple of eval.every {show(every)}: a sweep hands "
                                           f"Ray a checkpoint at validation passes only")


def check_metrics_reported(f: SpaceFile, metric: str | list[str], variants: list[Variant], base: dict[str, Any],
                           overrides: dict[str, Any]) -> None:
    """Each variant's evaluation suite reports the metric: a benchmark that is not configured, or a task it
    does not run, is found before Ray starts, with the names that are reported."""
    for variant in variants or [None]:
        cfg = make_config(base, {**overrides, **(variant.set if variant else {})})
        for n, name in enumerate([metric] if isinstance(metric, str) else metric):
            split = name.split("/", 1)[0]
            reported = [f"{split}/{m}" for m in cfg.eval.metric_names(split)]
            if name in reported:
                continue
            where = f.where("metric") + (f"[{n}]" if isinstance(metric, list) else "")
            trial = f" in variant {variant.name!r}" if variant else ""
            close = difflib.get_close_matches(name, reported, n=1, cutoff=0.5)
            benchmarks = ", ".join(b.name for b in cfg.eval.benchmarks or ()) or "none"
            f.fail(where, f"{name!r} is never reported{trial}: " + (f"did you mean {close[0]}? " if close else "")
                   + f"the configured benchmarks (eval.benchmarks) are {benchmarks}; {split}/ metrics are "
                   f"{', '.join(reported[:12])}{', ...' if len(reported) > 12 else ''}")


def check_batch_split(f: SpaceFile, resources: Resources, params: list[Param], variants: list[Variant],
                      fixed: dict[str, Any]) -> None:
    """Every trial's global batch splits evenly over its Train workers: found here, not inside a trial
    after Ray (or a GPU node of an autoscaled cluster) has started."""
    workers = resources.num_workers
    for batch in values_of("data.batch_size", params, variants, fixed):
        try:
            config.check_batch_split(batch, workers)
        except ConfigError as err:
            f.fail(_written_at(f, "data.batch_size", batch, params, variants),
                   f"{err} (resources.num_workers is {workers}: each worker takes an equal share of the batch)")


def _written_at(f: SpaceFile, key: str, value: Any, params: list[Param], variants: list[Variant]) -> str:
    """Where the space gives `key` the value `value`: a param, a variant, the config or, for a default,
    the resources that make it wrong."""
    if any(p.key == key for p in params):
        return f"{f.where('params')}[{key}]"
    for n, variant in enumerate(variants):
        if variant.set.get(key) == value:
            return f"{f.where('variants')}[{n}].set[{key}]"
    return f.config_origin.get(key, f.where("base") if "base" in f.origin else f.where("resources", "num_workers"))


def asha(f: SpaceFile, raw: Any, metric: str | list[str], params: list[Param], variants: list[Variant],
         fixed: dict[str, Any]) -> Asha | None:
    where = f.where("scheduler")
    if isinstance(raw, dict):
        options = dict(raw)
        name = options.pop("name", None)
        name_at = f"{where}.name"
    else:
        options, name, name_at = {}, raw, where
    if name not in SCHEDULERS:
        f.fail(name_at, f"{name!r} is not one of {', '.join(SCHEDULERS)} (or a mapping such as "
                        f"{{name: asha, grace_period: 100, reduction_factor: 2}})")
    valid = ("grace_period", "reduction_factor") if name == "asha" else ()
    for option in options:
        if option not in valid:
            f.fail(f"{where}.{option}", f"unknown option for {name} (valid: {', '.join(valid) or 'none'})")
    if name == "fifo":
        return None
    if isinstance(metric, list):
        f.fail(where, "asha stops trials on one metric; a multi-objective sweep needs scheduler: fifo")
    if not metric.startswith("val/"):
        f.fail(where, f"asha compares trials on validation passes, so the metric must be val/..., not {metric} "
                      f"(e.g. val/{metric.split('/', 1)[1]})")
    every = values_of("eval.every", params, variants, fixed)
    if 0 in every:
        f.fail(where, "asha needs validation passes to compare trials, but eval.every is 0 (only a final test "
                      "pass); set eval.every to the steps between passes")
    max_t = max(values_of("schedule.steps", params, variants, fixed))
    grace = options.get("grace_period", min(every))
    if isinstance(grace, bool) or not isinstance(grace, int) or not 1 <= grace <= max_t:
        f.fail(f"{where}.grace_period", f"expected training steps from 1 to the longest schedule.steps {max_t}, "
                                        f"got {grace!r}")
    factor = options.get("reduction_factor", ASHA_REDUCTION_FACTOR)
    if f.number(f"{where}.reduction_factor", factor) <= 1:
        f.fail(f"{where}.reduction_factor", f"expected a number > 1, got {factor!r}")
    return Asha(grace, float(factor), int(max_t))
