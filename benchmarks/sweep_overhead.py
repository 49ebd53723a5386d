"""What Ray costs a sweep: a sweep through Ray Tune (and Ray Train, for trials of several workers), against
the same trials as plain `train()` calls in this process.

    .venv/bin/python benchmarks/sweep_overhead.py [--space search_spaces/smoke.yaml] [--repeats N] [--out FILE.json]

Per trial, Ray's time outside training (trial process start-up, MLflow runs, checkpoints and their hand-over
to Ray, reports, teardown) is the sweep's wall time (after `ray.init`) minus the plain runs' time, over the
number of trials. Both sides train with the same threads (the trial's cpus_per_worker), one trial at a
time. That difference also carries the machine's throughput drift between the two (on a shared 2-core VM,
+-10% of a minute-long trial), so each round also splits it by MLflow's timestamps: the sweep's time before
its first trial's run, between runs and after the last, and per trial its set-up, middle (training and
evaluation, with checkpoints and reports) and teardown against its plain run's. `--repeats N` runs N rounds,
alternating which side goes first. Steady-state throughput, per trial: the median logged
`train/samples_per_s` (validation excluded) through Ray, read back from MLflow, over the plain run's. The
same script measures a GPU space unchanged (`--space` a file whose trials ask for a GPU).
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RATE = "train/samples_per_s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "smoke.yaml"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sweep_overhead_cpu.json"))
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of (plain trials, sweep), the order alternating: the machine's drift cancels")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)

    import ray

    from ito_sweeps.sweep.space import load_space

    space = load_space(args.space)
    t0 = time.perf_counter()
    ray.init(include_dashboard=True, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    rounds = []
    for r in range(args.repeats):
        if r % 2 == 0:
            plain = run_plain(space)
            swept = run_swept(args.space)
        else:
            swept = run_swept(args.space)
            plain = run_plain(space)
        rounds.append(compare(plain, swept))
        print(json.dumps(rounds[-1]["summary"]), flush=True)
    ray.shutdown()

    per_trial = [r["summary"]["ray_overhead_per_trial_s"] for r in rounds]
    result = {
        "space": str(Path(args.space).relative_to(ROOT)) if Path(args.space).is_relative_to(ROOT) else args.space,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "trials": len(rounds[0]["plain_train_s"]),
        "ray_init_s": round(ray_start, 2),
        "repeats": args.repeats,
        "ray_overhead_per_trial_s": per_trial,
        "ray_overhead_per_trial_median_s": round(statistics.median(per_trial), 2),
        "rounds": rounds,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))


def run_plain(space) -> dict[str, dict]:
    """Each trial's config as one plain `train()` call, with the wall-clock times of its first and last
    metric records (as the sweep's trials log them to MLflow)."""
    from ito_sweeps.sweep.trainable import trial_config
    from ito_sweeps.train.loop import train

    out = {}
    for tc in space.trial_configs():
        cfg = trial_config(space.resolve(tc), space.resources)  # plain runs keep no checkpoints
        rates: list[float] = []
        stamps: list[float] = []

        def on_metrics(step, record):
            stamps.append(time.time())
            if RATE in record:
                rates.append(record[RATE])

        called = time.time()
        train(cfg, on_metrics=on_metrics)
        out[space.trial_label(tc)] = {"start": called, "first": stamps[0], "last": stamps[-1], "end": time.time(),
                                      "rate": statistics.median(rates)}
    return out


def run_swept(space_file: str) -> dict:
    """The sweep, and per trial its MLflow run's start and end and its first and last metric records."""
    from mlflow.tracking import MlflowClient

    from ito_sweeps.sweep import tracking
    from ito_sweeps.sweep.runner import run_sweep

    work = Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    called = time.time()
    summary = run_sweep(space_file, tracking_uri=f"sqlite:///{work}/mlflow.db", storage=work / "ray")
    ended = time.time()
    client = MlflowClient(summary.tracking_uri)
    trials = {}
    for run in tracking.trial_runs(client, summary.experiment_id, summary.parent_run_id):
        stamps = [m.timestamp / 1000 for key in run.data.metrics if not key.startswith("system/")
                  for m in client.get_metric_history(run.info.run_id, key)]
        trials[run.info.run_name] = {
            "start": run.info.start_time / 1000, "first": min(stamps), "last": max(stamps),
            "end": run.info.end_time / 1000, "status": run.info.status,
            "rate": statistics.median(m.value for m in client.get_metric_history(run.info.run_id, RATE)),
        }
    return {"start": called, "end": ended, "trials": trials}


def compare(plain: dict[str, dict], swept: dict) -> dict:
    """Where the sweep's extra time went. Per trial, against its plain run: set-up (its run's start to its
    first record), the time between its first and last records (training and evaluation: the machine's
    throughput noise lands here, with checkpoints and reports), and teardown (last record to its run's
    end); and the sweep's time outside its trials' runs (before the first, between trials, after the
    last). The parts add up to sweep wall - plain total."""
    trials = sorted(swept["trials"].items(), key=lambda kv: kv[1]["start"])
    outside, previous_end = [], swept["start"]
    per = {}
    for label, t in trials:
        p = plain[label]
        outside.append(t["start"] - previous_end)
        previous_end = t["end"]
        per[label] = {
            "setup_extra_s": round((t["first"] - t["start"]) - (p["first"] - p["start"]), 2),
            "middle_extra_s": round((t["last"] - t["first"]) - (p["last"] - p["first"]), 2),
            "teardown_extra_s": round((t["end"] - t["last"]) - (p["end"] - p["last"]), 2),
            "samples_per_s_ray_over_plain": round(t["rate"] / p["rate"], 3),
            "status": t["status"],
        }
    outside.append(swept["end"] - previous_end)
    wall = swept["end"] - swept["start"]
    plain_total = sum(p["end"] - p["start"] for p in plain.values())
    n = len(plain)
    return {
        "summary": {
            "sweep_wall_s": round(wall, 2),
            "plain_total_s": round(plain_total, 2),
            "ray_overhead_per_trial_s": round((wall - plain_total) / n, 2),
            "before_first_trial_s": round(outside[0], 2),
            "between_trials_s": [round(x, 2) for x in outside[1:-1]],
            "after_last_trial_s": round(outside[-1], 2),
            "per_trial_setup_extra_s": [v["setup_extra_s"] for v in per.values()],
            "per_trial_middle_extra_s": [v["middle_extra_s"] for v in per.values()],
            "per_trial_teardown_extra_s": [v["teardown_extra_s"] for v in per.values()],
            "samples_per_s_ray_over_plain": [v["samples_per_s_ray_over_plain"] for v in per.values()],
        },
        "plain_train_s": {k: round(p["end"] - p["start"], 2) for k, p in plain.items()},
        "trials": per,
    }


if __name__ == "__main__":
    main()
