"""What Ray Tune is handed for a space: the param_space, the search algorithm (Optuna's TPE over a
define-by-run space) and the scheduler (FIFO or ASHA). Ray and Optuna are imported here only when asked for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ito_sweeps.sweep.space_parts import Asha, Param, Variant, dependency_order


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


def define_by_run(variants: list[Variant], params: list[Param], fixed: dict[str, Any]) -> DefineByRun:
    ordered = dependency_order(params)
    conditioned = {key for param in ordered for key, _ in param.when}
    return DefineByRun(tuple(variants), tuple(ordered), {k: fixed[k] for k in sorted(conditioned)})


def param_space(search: str, trials: list[dict[str, Any]]) -> dict:
    if search == "optuna":
        return {}  # the searcher supplies every value
    from ray import tune

    return {"trial": tune.grid_search(trials)}


def search_alg(search: str, define: DefineByRun, metric: str | list[str], mode: str | list[str], seed: int):
    if search != "optuna":
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(space=define, metric=metric, mode=mode, sampler=optuna.samplers.TPESampler(seed=seed))


def scheduler(asha: Asha | None):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if asha is None:
        return FIFOScheduler()
    # metric and mode reach ASHA from TuneConfig (see tune_metric_mode): Tune refuses to start when
    # both the scheduler and TuneConfig carry them
    return ASHAScheduler(time_attr="step", max_t=asha.max_t, grace_period=asha.grace_period,
                         reduction_factor=asha.reduction_factor)


def tune_metric_mode(metric: str | list[str], mode: str | list[str]) -> tuple[str | None, str | None]:
    if isinstance(metric, list):
        return None, None  # multi-objective: only OptunaSearch knows the metrics
    return metric, mode
