"""How long `ito-sweeps report` takes over 1,000 recorded trial runs (target: at most 10 s).

    .venv/bin/python benchmarks/report_1000.py [--runs 1000] [--out FILE.json]

Builds a local MLflow store (SQLite + artifacts) holding one sweep of `--runs` synthetic trials shaped
like the platform's own: 20 values of lambda x seeds, every config key as a param, the tags the
sweep writes, every test/* metric of the default benchmark suite, val/zeroshot_avg and
val/scenes/modality_gap histories at three steps, an embeddings.npz per finished trial, and 2% failed trials. Building the store is not timed; loading the runs and writing the whole report
(tables, plots, index.md, artifacts logged to the parent run) is, in this process, phase by phase.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = [round(0.5 * i, 1) for i in range(20)]
VAL_STEPS = (40, 80, 120)


def build_store(folder: Path, runs: int) -> tuple[str, str]:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from ito_sweeps import config

    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("bench", artifact_location=(folder / "mlartifacts").as_uri())
    parent = client.create_run(experiment, run_name="bench", tags={
        "search_space": str(ROOT / "search_spaces" / "fusion_weight.yaml"), "search": "grid",
        "metric": "val/zeroshot_avg", "mode": "max", "profile": "cpu"})
    rng = np.random.default_rng(0)
    default = config.from_dict({})
    base = default.flat()
    test_metrics = default.eval.metric_names("test")
    suite = ",".join(b.name for b in default.eval.benchmarks)
    now = int(time.time() * 1000)
    for i in range(runs):
        lam, seed = LAMBDAS[i % len(LAMBDAS)], i // len(LAMBDAS)
        failed = rng.random() < 0.02
        params = {**base, "objective.fusion_weight": lam, "run.seed": seed}
        run = client.create_run(experiment, start_time=now, run_name=f"ito views lam={lam:.3g} seed={seed}", tags={
            MLFLOW_PARENT_RUN_ID: parent.info.run_id, "objective": "ito", "seed": str(seed),
            "objective.fusion_weight": str(lam), "run.seed": str(seed), "resources.num_workers": "1",
            "resources.cpus_per_worker": "2.0", "resources.gpus_per_worker": "0.0", "benchmarks": suite})
        level = 0.3 + 0.02 * lam - 0.004 * lam**2
        metrics = [Metric(f"val/{k}", level * f + rng.normal(0, 0.01), now, step)
                   for k in ("zeroshot_avg", "scenes/modality_gap") for step, f in zip(VAL_STEPS, (0.6, 0.85, 1.0))]
        if not failed:
            metrics += [Metric(f"test/{k}", level + rng.normal(0, 0.01), now, VAL_STEPS[-1]) for k in test_metrics]
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()],
                         tags=[RunTag("sweep", "bench")])
        if not failed:
            path = folder / "scratch" / "embeddings.npz"
            path.parent.mkdir(exist_ok=True)
            image = rng.normal(size=(1000, 128))
            text = image + rng.normal(0.3, 1.0, size=image.shape)
            np.savez(path, image=image / np.linalg.norm(image, axis=1, keepdims=True),
                     text=text / np.linalg.norm(text, axis=1, keepdims=True), label=np.arange(1000) % 36)
            client.log_artifact(run.info.run_id, str(path))
        client.set_terminated(run.info.run_id, "FAILED" if failed else "FINISHED", end_time=now + 60_000)
    client.set_terminated(parent.info.run_id, "FINISHED")
    return uri, parent.info.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "report_1000_cpu.json"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="report-bench-"))
    started = time.perf_counter()
    uri, parent = build_store(folder, args.runs)
    print(f"store of {args.runs} runs built in {time.perf_counter() - started:.1f} s (not timed)", flush=True)

    started = time.perf_counter()
    from analysis.load import load_runs
    from analysis.report import write_report
    imported = time.perf_counter()
    runs = load_runs(uri, sweep=parent)
    loaded = time.perf_counter()
    index = write_report(runs, folder / "report")
    done = time.perf_counter()
    result = {
        "runs": args.runs, "import_s": imported - started, "load_s": loaded - imported,
        "report_s": done - loaded, "total_s": done - started, "files": sorted(p.name for p in index.parent.iterdir()),
        "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
