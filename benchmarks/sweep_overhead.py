"""What Ray costs a sweep: the smoke sweep through Ray Tune + Ray Train, against the same trials as plain
`train()` calls in this process.

    .venv/bin/python benchmarks/sweep_overhead.py [--space search_spaces/smoke.yaml] [--out FILE.json]

Per trial, Ray's time outside training (trial actor, Train controller and worker start-up, process group,
checkpoint hand-over, MLflow logging, teardown) is the sweep's wall time minus Ray's own start, minus the
plain runs' time, over the number of trials. Both sides train with the same threads (the trial's
cpus_per_worker), one trial at a time. Steady-state throughput, per trial: the median of the logged
`train/samples_per_s` (each over `run.log_every` steps, validation excluded) through Ray Train, read back
from MLflow, over the same median of the plain run. The same script measures a GPU space unchanged
(`--space` a file whose trials ask for a GPU: the plain runs then use the GPU too).
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
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)

    import ray
    from mlflow.tracking import MlflowClient

    from ito_sweeps.sweep import tracking
    from ito_sweeps.sweep.runner import run_sweep
    from ito_sweeps.sweep.space import load_space
    from ito_sweeps.sweep.trainable import trial_config
    from ito_sweeps.train.loop import train

    space = load_space(args.space)
    work = Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    t0 = time.perf_counter()
    ray.init(include_dashboard=True, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = run_sweep(args.space, tracking_uri=f"sqlite:///{work}/mlflow.db", storage=work / "ray")
    sweep_wall = time.perf_counter() - t0
    ray.shutdown()

    client = MlflowClient(summary.tracking_uri)
    ray_rate = {
        run.info.run_name: statistics.median(m.value for m in client.get_metric_history(run.info.run_id, RATE))
        for run in tracking.trial_runs(client, summary.experiment_id, summary.parent_run_id)
    }

    plain, plain_rate = {}, {}
    for tc in space.trial_configs():
        cfg = trial_config(space.resolve(tc), space.resources)
        rates: list[float] = []
        t0 = time.perf_counter()
        train(cfg, on_metrics=lambda step, r: rates.append(r[RATE]) if RATE in r else None)
        plain[space.trial_label(tc)] = time.perf_counter() - t0
        plain_rate[space.trial_label(tc)] = statistics.median(rates)

    n = len(plain)
    per_trial = (sweep_wall - sum(plain.values())) / n
    result = {
        "space": str(Path(args.space).relative_to(ROOT)) if Path(args.space).is_relative_to(ROOT) else args.space,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "trials": n,
        "ray_init_s": round(ray_start, 2),
        "sweep_wall_s": round(sweep_wall, 2),
        "plain_train_s": {k: round(v, 2) for k, v in plain.items()},
        "plain_total_s": round(sum(plain.values()), 2),
        "ray_overhead_per_trial_s": round(per_trial, 2),
        "overhead_over_plain_trial": round(per_trial / (sum(plain.values()) / n), 3),
        "sweep_over_plain": round(sweep_wall / sum(plain.values()), 3),
        "trial_status": {t.label: t.status for t in summary.trials},
        "steps_per_trial": {space.trial_label(tc): space.resolve(tc).schedule.steps for tc in space.trial_configs()},
        "median_samples_per_s_ray_train": {k: round(v, 1) for k, v in ray_rate.items()},
        "median_samples_per_s_plain": {k: round(v, 1) for k, v in plain_rate.items()},
        "ray_train_over_plain_samples_per_s": {k: round(ray_rate[k] / plain_rate[k], 3) for k in plain_rate},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
