"""Wall time of the embedded default evaluation suite on CPU, per split and per benchmark.

The default Config at the smoke sweep's cpu-profile sizes (search_spaces/smoke.yaml: 4,000 training
scenes, 300 val, 500 test, probes fitted on 1,000 images) and a freshly initialised `tiny` ITOModel, its
open_clip towers evaluated by `evaluate_suite` as the training loop does (eval.batch_size, no loader
processes, torch's default threads). What a trial pays at each validation pass (split "val") and at the
end (split "test"), and which benchmark costs what: each benchmark is also timed alone, in a suite of
that one benchmark, and a benchmark of several tasks with each task alone (warm). Rendered benchmarks
are cached between passes (`_rendered` beside `open_split`), so every figure is given cold (cache
cleared: the first pass of a trial) and warm (rendered already: every later pass); medians of --repeat.

    .venv/bin/python benchmarks/eval_time.py --repeat 3   # ~4 min on 2 cores; writes results/eval_time_cpu.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import yaml

SMOKE = Path(__file__).resolve().parent.parent / "search_spaces" / "smoke.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="timings of each figure (the median is reported)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_time_cpu.json")
    args = parser.parse_args()

    import torch

    from ito_sweeps import config as C
    from ito_sweeps.data.loader import build_splits
    from ito_sweeps.evaluate.suite import Encoder, evaluate_suite, open_split
    from ito_sweeps.models.towers import ITOModel, build_tokenizer, eval_transform

    profile = yaml.safe_load(SMOKE.read_text())["profiles"]["cpu"]["config"]
    cfg = C.load(None, [f"{key}={json.dumps(value)}" for key, value in profile.items()])
    torch.manual_seed(cfg.run.seed)
    model = ITOModel(cfg, with_fusion=False)
    encoder = Encoder(model.clip, build_tokenizer(cfg), eval_transform(cfg), torch.device("cpu"),
                      cfg.eval.batch_size, nullcontext)
    started = time.perf_counter()
    own = build_splits(cfg.data)  # the run renders these once, for training; not an evaluation cost
    rendered = sys.modules[open_split.__module__]._rendered  # the cache of rendered benchmarks
    splits_s = time.perf_counter() - started

    def timed(suite_cfg, split: str, cold: bool) -> tuple[float, dict[str, float]]:
        times, metrics = [], {}
        for _ in range(args.repeat):
            if cold:
                rendered.cache_clear()
            started = time.perf_counter()
            metrics, _ = evaluate_suite(encoder, suite_cfg, split, own=own)
            times.append(time.perf_counter() - started)
        return round(statistics.median(times), 2), metrics

    def alone(bench):  # the config with this one benchmark as its suite
        return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, benchmarks=(bench,)))

    results = {}
    for split in ("val", "test"):
        cold, metrics = timed(cfg, split, cold=True)
        warm, _ = timed(cfg, split, cold=False)
        row = {"suite": {"cold_s": cold, "warm_s": warm, "metrics": len(metrics)}, "benchmarks": {}}
        print(f"{split}: whole suite {cold} s cold, {warm} s warm")
        for bench in cfg.eval.benchmarks:
            cold, metrics = timed(alone(bench), split, cold=True)
            warm, _ = timed(alone(bench), split, cold=False)
            figures = {"tasks": list(bench.tasks), "samples": int(metrics[f"{bench.name}/samples"]),
                       "cold_s": cold, "warm_s": warm}
            if len(bench.tasks) > 1:  # which task costs what: the benchmark with that task alone, warm
                figures["task_alone_warm_s"] = {
                    task: timed(alone(dataclasses.replace(bench, tasks=(task,))), split, cold=False)[0]
                    for task in bench.tasks}
            row["benchmarks"][bench.name] = figures
            print(f"  {bench.name:<13} {figures['samples']:>4} samples  {cold:>6} s cold  {warm:>6} s warm  "
                  f"{figures.get('task_alone_warm_s', '')}")
        results[split] = row
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    out = {"command": command, "overrides": profile, "model": cfg.model.name, "image_size": cfg.data.image_size,
           "eval_batch_size": cfg.eval.batch_size, "torch_threads": torch.get_num_threads(),
           "cpu_cores": os.cpu_count(), "load_average_at_end": os.getloadavg(), "build_splits_s": round(splits_s, 2),
           "splits": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
