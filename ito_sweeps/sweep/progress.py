"""What a sweep prints while it runs: the live trial table (one line per trial with its status, step, metric
and time, every 15 s and whenever a trial starts or ends) and, as each trial ends, one line with its
outcome, its error if it failed, and its log file (everything else the trial printed).

A Tune callback on the sweep driver. It holds only plain values (the space file and profile, the logs
folder), because Tune pickles callbacks into its experiment state and unpickles them on `--resume`.
"""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

from ito_sweeps.sweep.tracking import trial_error
from ito_sweeps.sweep.trial_log import log_path


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class TrialTable(Callback):
    def __init__(self, space_file: str, profile: str | None, logs: str, every_s: float = 15.0):
        self.space_file, self.profile, self.logs, self.every_s = space_file, profile, logs, every_s
        self._space = None
        self._rows: dict[str, dict] = {}
        self._started = time.monotonic()
        self._printed = 0.0

    def __getstate__(self):
        return {**self.__dict__, "_space": None}

    @property
    def space(self):
        if self._space is None:
            from ito_sweeps.sweep.space import load_space

            self._space = load_space(self.space_file, self.profile)
        return self._space

    def _row(self, trial) -> dict:
        if trial.trial_id not in self._rows:
            cfg = self.space.resolve(trial.config)
            self._rows[trial.trial_id] = {
                "label": self.space.trial_label(trial.config), "status": "PENDING", "step": 0,
                "steps": cfg.schedule.steps, "value": None, "start": None, "end": None,
            }
        return self._rows[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row["status"], row["start"] = "RUNNING", time.monotonic()
        self.print()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self._row(trial)
        row["step"] = result.get("step", row["step"])
        row["value"] = result.get(self._metric, row["value"])
        if time.monotonic() - self._printed >= self.every_s:
            self.print()

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row["status"] = "DONE" if row["step"] >= row["steps"] else "STOPPED"
        row["end"] = time.monotonic()
        self._ended(trial, row)

    def on_trial_error(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row["status"], row["end"] = "FAILED", time.monotonic()
        self._ended(trial, row, trial_error(trial).split("\n", 1)[0])

    def _ended(self, trial, row: dict, error: str = "") -> None:
        parts = [f"trial {row['label']}: {row['status']} at step {row['step']}/{row['steps']}"]
        if row["value"] is not None:
            parts.append(f"{self._metric} {row['value']:.4f}")
        if row["start"] is not None:  # a resumed sweep did not see it start
            parts.append(f"in {_clock(row['end'] - row['start'])}")
        line = ", ".join(parts) + (f": {error}" if error else "")
        print(f"{line}; log: {log_path(self.logs, trial.trial_id)}", file=sys.stdout, flush=True)
        self.print()

    @property
    def _metric(self) -> str:
        return self.space.metric if isinstance(self.space.metric, str) else self.space.metric[0]

    def print(self) -> None:
        self._printed = time.monotonic()
        rows = list(self._rows.values())
        metric = self._metric
        width = max([len(r["label"]) for r in rows] + [5])
        counts = {s: sum(r["status"] == s for r in rows) for s in ("RUNNING", "DONE", "STOPPED", "FAILED")}
        total = self.space.num_trials()
        done_rows = [r for r in rows if r["end"] is not None and r["start"] is not None]
        eta = ""
        if total and done_rows and len(done_rows) < total:
            mean = sum(r["end"] - r["start"] for r in done_rows) / len(done_rows)
            remaining = (total - len(done_rows)) * mean / max(1, self.space.max_concurrent_trials)
            eta = f", ETA ~{_clock(remaining)}"
        lines = [
            f"== {self.space.name}: {len(done_rows)}/{total or '?'} trials ended ("
            + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
            + f"), elapsed {_clock(time.monotonic() - self._started)}{eta}",
            f"  {'trial':<{width}}  {'status':<8} {'step':>11}  {metric:>18}  {'time':>8}",
        ]
        now = time.monotonic()
        for r in rows:
            value = "-" if r["value"] is None else f"{r['value']:.4f}"
            took = "-" if r["start"] is None else _clock((r["end"] or now) - r["start"])
            lines.append(f"  {r['label']:<{width}}  {r['status']:<8} {r['step']:>5}/{r['steps']:<5}  "
                         f"{value:>18}  {took:>8}")
        print("\n".join(lines), file=sys.stdout, flush=True)
