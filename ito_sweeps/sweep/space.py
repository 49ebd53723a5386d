"""Search spaces: one YAML file per sweep, checked completely before Ray starts.

A space names what a sweep varies (named variants as the rows of an ablation table, swept config keys,
repeats over seeds) and how Tune searches it (grid, our own seeded random sampling, or Optuna's TPE).
`load_space` reads the file and merges the chosen profile (space_file.py), checks what varies and every
cross-key rule (space_checks.py), builds the `Config` of every trial it can enumerate and merges trials
that would train the same model (space_expand.py); on any mistake it raises a `SpaceError` that names the
file, the key path inside it and what would be valid. The `SearchSpace` it returns hands Tune its
param_space, searcher and scheduler (space_tune.py), and turns the config Tune gives a trial back into
that trial's `Config`, label and tags (space_labels.py). The format is in search_spaces/README.md.

None of this imports torch: refusing a mistaken space costs a second.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ito_sweeps import config
from ito_sweeps.config import Config, ConfigError
from ito_sweeps.sweep import space_checks as checks
from ito_sweeps.sweep import space_labels, space_tune
from ito_sweeps.sweep.space_expand import expand, merge_unused, params_never_used, swept_keys
from ito_sweeps.sweep.space_file import DEFAULT_METRIC, DEFAULT_MODE, SpaceFile
from ito_sweeps.sweep.space_parts import (SEARCHES, Asha, Checkpoints, Param, Resources, SpaceError, Variant,
                                          make_config)

__all__ = ["SearchSpace", "SpaceError", "load_space"]  # SpaceError: what every caller catches


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
    checkpoints: Checkpoints = field(default_factory=Checkpoints)
    search_seed: int = 0
    base: dict[str, Any] = field(default_factory=dict)  # the base config file's tree ({} without one)
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value: config, then the profile's
    variants: list[Variant] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)  # in file order, which labels follow
    asha: Asha | None = None  # None: FIFO
    fixed: dict[str, Any] = field(default_factory=dict)  # every key's value where no variant or param sets it
    trials: list[dict[str, Any]] = field(default_factory=list)  # grid/random: the grid_search elements
    warnings: list[str] = field(default_factory=list)  # what the sweep's console should say before it starts
    resources_at: dict[str, str] = field(default_factory=dict)  # resources key -> where the file sets it

    # -- what Tune is handed

    def param_space(self) -> dict:
        return space_tune.param_space(self.search, self.trials)

    def define_by_run(self) -> space_tune.DefineByRun:
        return space_tune.define_by_run(self.variants, self.params, self.fixed)

    def search_alg(self):
        return space_tune.search_alg(self.search, self.define_by_run(), self.metric, self.mode, self.search_seed)

    def scheduler(self):
        return space_tune.scheduler(self.asha)

    def tune_metric_mode(self) -> tuple[str | None, str | None]:
        return space_tune.tune_metric_mode(self.metric, self.mode)

    def num_trials(self) -> int | None:
        return self.num_samples if self.search == "optuna" else len(self.trials)

    def trial_configs(self) -> list[dict[str, Any]]:
        """grid/random: the `config` Tune gives each trial, in run order; optuna: [] (not known ahead)."""
        return [{"trial": trial} for trial in self.trials]

    # -- one trial, from the config Tune gives it

    def trial_overrides(self, trial_config: dict) -> dict[str, Any]:
        variant, chosen, seed = self._trial_parts(trial_config)
        return {**self.overrides, **(variant.set if variant else {}), **chosen, "run.seed": seed}

    def resolve(self, trial_config: dict) -> Config:
        try:
            return make_config(self.base, self.trial_overrides(trial_config))
        except ConfigError as err:
            raise SpaceError(f"{self.shown()}: trial {self.trial_label(trial_config)!r}: {err}") from None

    def trial_label(self, trial_config: dict) -> str:
        variant, chosen, seed = self._trial_parts(trial_config)
        return space_labels.trial_label(variant, chosen, seed, self.params, self.fixed)

    def trial_tags(self, trial_config: dict) -> dict[str, str]:
        variant, chosen, _ = self._trial_parts(trial_config)
        trained = self.resolve(trial_config).flat()
        return space_labels.trial_tags(variant, chosen, trained, self.params, self.swept_keys)

    def _trial_parts(self, trial_config: dict) -> tuple[Variant | None, dict[str, Any], int]:
        if self.search == "optuna":
            # Optuna's suggestions arrive as flat keys named like the config keys, beside anything else
            chosen = {p.key: trial_config[p.key] for p in self.params if p.key in trial_config}
            return self._variant(trial_config.get("variant")), chosen, self.seeds[0]
        if "trial" not in trial_config:
            raise SpaceError(f"{self.shown()}: a {self.search} trial's config needs the 'trial' entry of "
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
        raise SpaceError(f"{self.shown()}: unknown variant {name!r} (variants: {names})")

    def known_configs(self) -> list[tuple[str, Config]]:
        """(which trials, Config) of every trial known ahead (grid/random: "trial 'LABEL'"); optuna, whose trials
        are not, each variant's fixed part ("variant 'NAME'", or "every trial"), the suggested keys at their
        configured values: what is checked before Ray starts."""
        if self.search == "optuna":
            return [(f"variant {v.name!r}" if v else "every trial",
                     make_config(self.base, {**self.overrides, **(v.set if v else {})}))
                    for v in self.variants or [None]]
        return [(f"trial {self.trial_label(trial)!r}", self.resolve(trial)) for trial in self.trial_configs()]

    def benchmark_names(self) -> list[str]:
        """Every benchmark some trial evaluates, in suite order (optuna: each variant's): what a table of this
        sweep's runs can have columns of."""
        configs = [cfg for _, cfg in self.known_configs()]
        return list(dict.fromkeys(b.name for cfg in configs for b in cfg.eval.benchmarks or ()))

    def shown(self) -> str:
        return f"{self.path} (profile {self.profile})" if self.profile else str(self.path)


def load_space(path: str | Path, profile: str | None = None) -> SearchSpace:
    """Read, merge the profile, check everything and enumerate the trials; SpaceError on any mistake."""
    f = SpaceFile(Path(path), profile)
    doc = f.read()
    get = doc.get
    search = f.choose("search", get("search", "grid"), SEARCHES)
    metric, mode = f.metric_mode(get("metric", DEFAULT_METRIC), get("mode", DEFAULT_MODE))
    seeds = f.seeds(get("seeds", [0]))
    num_samples = f.integer("num_samples", get("num_samples", 1), 1)
    resources = f.resources(get("resources"))
    base = f.read_base(get("base"))
    overrides = f.config_entries()
    f.check_fixed(base, overrides)
    fixed = {**Config().flat(), **config.flatten(base), **overrides}
    variants = checks.variants(f, get("variants"), base, overrides)
    params = checks.params(f, get("params"), base, overrides, search)
    checks.check_conditions(f, params, variants, base, overrides, fixed)
    checks.check_seed_owner(f, params, variants, overrides)
    checks.check_search(f, search, metric, num_samples, seeds, params, variants)
    asha = checks.asha(f, get("scheduler", "fifo"), metric, params, variants, fixed)
    checks.check_reporting(f, metric, params, variants, fixed)
    checks.check_metrics_reported(f, metric, variants, base, overrides)
    checks.check_batch_split(f, resources, params, variants, fixed)
    space = SearchSpace(
        path=f.path.resolve(), name=f.path.stem, profile=f.profile,
        description=str(get("description") or ""), search=search, metric=metric, mode=mode,
        num_samples=num_samples,
        max_concurrent_trials=f.integer("max_concurrent_trials", get("max_concurrent_trials", 1), 1),
        seeds=seeds, resources=resources, checkpoints=f.checkpoints(get("checkpoints")),
        max_failures=f.integer("max_failures", get("max_failures", 0), 0),
        swept_keys=swept_keys(params, variants, fixed, seeds),
        search_seed=f.integer("search_seed", get("search_seed", 0), None),
        base=base, overrides=overrides, variants=variants, params=params, asha=asha, fixed=fixed,
        resources_at={key: f.where("resources", key) for key in dataclasses.asdict(resources)},
    )
    if search == "optuna":
        for param, reason in params_never_used(params, variants, base, overrides, fixed):
            f.fail(f"{f.where('params')}[{param.key}]", f"no trial of this space reads it ({reason}); remove it, or "
                                                        f"sweep a setting under which it matters")
        return space
    space.trials = expand(variants, params, fixed, seeds, num_samples, random.Random(space.search_seed))
    for trial_config in space.trial_configs():
        space.resolve(trial_config)  # every trial's Config, so cross-key mistakes surface now
    space.trials, warnings = merge_unused(f, space.trials, variants, base, overrides,
                                          lambda trial: space.trial_label({"trial": trial}))
    space.warnings = [f"{f.shown()}: {warning}" for warning in warnings]
    return space
