"""The trials of a grid or random space, enumerated before Ray starts, and trials that would be the same.

A trial is a point (a variant name and the swept values set for it) run once per seed; Tune receives the
whole list as one grid_search. A swept value that the trial's objective never reads (`catalog.unused_keys`:
fusion.depth where lambda is 0, the UniAlign knobs of a CLIP trial, ...) is dropped from that point, as a
failed `when` would leave it out, and points that become equal run once, with a warning naming the key and
the trials merged. Two variants that train the same model are a mistake in the table and are refused.
"""
from __future__ import annotations

import itertools
import json
import math
import random
from collections import ChainMap
from collections.abc import Callable, Iterator
from typing import Any

from ito_sweeps import catalog
from ito_sweeps.config import ConfigError
from ito_sweeps.sweep.space_file import SpaceFile
from ito_sweeps.sweep.space_parts import Param, Variant, dependency_order, distinct, make_config, values_of

Trial = dict[str, Any]  # {"variant": name or None, "set": {dotted key: value}, "seed": int}
# Optuna's points cannot be listed ahead; its params are checked on the combinations of their listed values
# (ranges by their bounds), when there are at most this many
MAX_COMBINATIONS = 2000


def expand(variants: list[Variant], params: list[Param], fixed: dict[str, Any], seeds: list[int],
           num_samples: int, rng: random.Random) -> list[Trial]:
    """Every trial of a grid/random space: variants x grid lists (x sampled points), honouring `when`
    without duplicates, then all of it once per seed, so the repeats of a point share its values."""
    sampled = [p for p in params if p.kind != "grid"]
    # random: every sampled key is drawn up front in file order, so search_seed fixes the whole sweep
    draws = [{p.key: p.sample(rng) for p in sampled} for _ in range(num_samples)] if sampled else [{}]
    ordered = dependency_order(params)
    points, seen = [], set()
    for draw in draws:
        for variant in variants or [None]:
            start = ChainMap(variant.set if variant else {}, fixed)
            for chosen in _branches(ordered, start, draw):
                point = {"variant": variant.name if variant else None, "set": chosen}
                fingerprint = json.dumps(point, sort_keys=True)
                if fingerprint not in seen:
                    seen.add(fingerprint)
                    points.append(point)
    # seeds outermost: a sweep stopped early has whole tables for its first seeds
    return [{**point, "seed": seed} for seed in seeds for point in points]


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


def swept_keys(params: list[Param], variants: list[Variant], fixed: dict[str, Any], seeds: list[int]) -> list[str]:
    keys = [p.key for p in params]
    for variant in variants:
        for key in variant.set:
            if key not in keys and len(distinct([v.set.get(key, fixed[key]) for v in variants])) > 1:
                keys.append(key)
    return keys + (["run.seed"] if len(seeds) > 1 else [])


def merge_unused(f: SpaceFile, trials: list[Trial], variants: list[Variant], base: dict[str, Any],
                 overrides: dict[str, Any], label: Callable[[Trial], str]) -> tuple[list[Trial], list[str]]:
    """`trials` without the swept values their objective never reads, each distinct model once per seed,
    and a warning per dropped key naming the trials merged."""
    by_name = {v.name: v for v in variants}
    out: list[Trial] = []
    owner: dict[str, int] = {}  # what a trial trains (its model and seed) -> its place in out
    merged: dict[int, list[Trial]] = {}  # place in out -> the trials it stands for
    dropped_by: dict[int, dict[str, str]] = {}  # place in out -> key dropped from one of its trials -> why
    for trial in trials:
        fixed = {**overrides, **by_name[trial["variant"]].set} if trial["variant"] else dict(overrides)
        kept, dropped = _without_unused(base, fixed, trial["set"])
        model = f"{_fingerprint(make_config(base, {**fixed, **kept}).flat())}|seed={trial['seed']}"
        if model not in owner:
            owner[model] = len(out)
            out.append({**trial, "set": kept})
        place = owner[model]
        if out[place]["variant"] != trial["variant"]:
            f.fail(f.where("variants"), f"{trial['variant']!r} trains exactly what {out[place]['variant']!r} trains "
                                        f"(seed {trial['seed']}): what sets them apart is never read by their "
                                        f"objective (unused_keys in ito_sweeps/catalog.py); make the rows differ in a "
                                        f"key that matters, or drop one")
        merged.setdefault(place, []).append(trial)
        dropped_by.setdefault(place, {}).update(dropped)
    by_key: dict[str, list[str]] = {}
    for place, group in merged.items():
        if len(group) > 1:
            merge = f"{' and '.join(repr(label(t)) for t in group)} -> {label(out[place])!r}"
            for key, reason in dropped_by[place].items() or [("", "")]:
                problem = (f"{f.where('params')}[{key}]: {reason}, so {key} cannot change these trials" if key
                           else "these trials train the same model")
                by_key.setdefault(problem, []).append(merge)
    warnings = [f"{problem}; each group runs once: {'; '.join(merges[:3])}"
                + (f"; and {len(merges) - 3} more" if len(merges) > 3 else "") for problem, merges in by_key.items()]
    return out, warnings


def _without_unused(base: dict[str, Any], fixed: dict[str, Any], chosen: dict[str, Any]) -> tuple[dict, dict]:
    """The swept values of one point minus those that cannot change what it trains, and why each went."""
    flat = make_config(base, {**fixed, **chosen}).flat()
    target = _fingerprint(flat)
    unused = catalog.unused_keys(flat)
    kept, dropped = dict(chosen), {}
    for key in chosen:
        if key not in unused:
            continue
        trial = {k: v for k, v in kept.items() if k != key}
        # dropped only if the model stays the same: the config's own value may switch something on
        if _fingerprint(make_config(base, {**fixed, **trial}).flat()) == target:
            kept, dropped[key] = trial, unused[key]
    return kept, dropped


def _fingerprint(flat: dict[str, Any]) -> str:
    unused = catalog.unused_keys(flat)
    return json.dumps({k: v for k, v in flat.items() if k not in unused and k != "run.seed"}, sort_keys=True)


def params_never_used(params: list[Param], variants: list[Variant], base: dict[str, Any], overrides: dict[str, Any],
                      fixed: dict[str, Any]) -> list[tuple[Param, str]]:
    """Optuna: the params that no combination of listed values (ranges by their bounds) lets the trial's
    objective read, each with the reason; [] when there are too many combinations to try."""
    options = [distinct(values_of(p.key, params, variants, fixed)) for p in params]
    if len(variants or [None]) * math.prod(len(o) for o in options) > MAX_COMBINATIONS:
        return []
    used, why = set(), {}
    for variant in variants or [None]:
        for values in itertools.product(*options):
            chosen = {p.key: v for p, v in zip(params, values)}
            try:
                flat = make_config(base, {**overrides, **(variant.set if variant else {}), **chosen}).flat()
            except ConfigError:
                continue  # a combination no trial can have
            unused = catalog.unused_keys(flat)
            for param in params:
                if param.applies(ChainMap(chosen, variant.set if variant else {}, fixed)):
                    if param.key in unused:
                        why.setdefault(param.key, unused[param.key])
                    else:
                        used.add(param.key)
    return [(p, why[p.key]) for p in params if p.key not in used and p.key in why]

