"""How long a mistaken command takes to be refused: the corpus of issue 14, run as a user runs it.

Each case is `ito-sweeps sweep SPACE` (or `train --config`) against a SQLite store that already holds
runs; the figure is the wall time from starting the command to its exit, median of --repeat runs, and
every refusal must exit 2 with the store's run count unchanged. `--checkout DIR` times another checkout
of the project (put first on PYTHONPATH) with this interpreter, so a before/after pair is measured on one
machine in one sitting:

    git worktree add /tmp/before HEAD~1
    .venv/bin/python benchmarks/refusal_time.py --checkout /tmp/before --out results/refusal_time_before.json
    .venv/bin/python benchmarks/refusal_time.py --out results/refusal_time_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPACE = ("search: grid\nseeds: [0]\n"
         "config: {data.num_train: 256, data.batch_size: 32, schedule.steps: 10, schedule.warmup_steps: 2, "
         "eval.every: 5}\n")
CASES = {  # name -> (space text or None for a missing file, extra arguments, extra environment)
    "missing file": (None, [], {}),
    "unknown key": (SPACE + "params:\n  fusion.dept: {grid: [1, 2]}\n", [], {}),
    "NaN in a profile's config": (SPACE + "profiles:\n  cpu: {config: {optim.lr: .nan}}\n", [], {}),
    "batch 33 over 2 workers": (SPACE.replace("batch_size: 32", "batch_size: 33")
                                + "resources: {num_workers: 2, cpus_per_worker: 1}\n", [], {}),
    "a key written twice": (SPACE + "seeds: [1]\n", [], {}),
    "a GPU this machine lacks": (SPACE + "profiles:\n  cpu: {}\n  gpu: {resources: {gpus_per_worker: 1}}\n",
                                 ["--profile", "gpu"], {"CUDA_VISIBLE_DEVICES": ""}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, help="time this checkout of the project instead of the installed one")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--give-up-s", type=float, default=120, help="stop a command that has not ended by then")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "refusal_time_cpu.json")
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    env = dict(os.environ)
    if args.checkout:
        env["PYTHONPATH"] = os.pathsep.join([str(args.checkout.resolve()), env.get("PYTHONPATH", "")])
    folder = Path(tempfile.mkdtemp(prefix="refusals-"))
    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("earlier")
    for name in ("parent", "child"):
        client.set_terminated(client.create_run(experiment, run_name=name).info.run_id)

    def runs() -> int:
        return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))

    results = {}
    for case, (text, extra, case_env) in CASES.items():
        space = folder / f"{len(results)}.yaml"
        if text is not None:
            space.write_text(text)
        command = [sys.executable, "-m", "ito_sweeps.cli", "sweep", str(space), *extra, "--tracking-uri", uri,
                   "--storage", str(folder / "ray")]
        times, line, code = [], "", None
        for _ in range(args.repeat):
            before, started = runs(), time.perf_counter()
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                       env={**env, **case_env}, cwd=folder, start_new_session=True)
            try:
                _, err = process.communicate(timeout=args.give_up_s)
                code, line = process.returncode, (err.strip().splitlines() or [""])[-1]
            except subprocess.TimeoutExpired:  # a sweep that started and waits (for a GPU, say)
                os.killpg(process.pid, 9)
                process.wait()
                code, line = None, f"still running after {args.give_up_s} s"
            times.append(time.perf_counter() - started)
            refused = code == 2 and runs() == before
            if not refused:  # what the code before issue 14 did: it started the sweep; clean up and move on
                subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
                break
        results[case] = {"refused": refused, "exit_code": code, "median_s": round(statistics.median(times), 2),
                         "times_s": [round(t, 2) for t in times], "runs_recorded": runs() - before,
                         "message": line[:300]}
        print(f"{case:<26} {'refused' if refused else 'NOT refused':<12} {results[case]['median_s']:>7.2f} s  {line[:110]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"checkout": str(args.checkout or "installed"), "cases": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
