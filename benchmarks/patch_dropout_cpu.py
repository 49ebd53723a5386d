"""The cheaper ITO mode on the embedded benchmark: patch dropout against exact ITO and OpenCLIP, 3 seeds.

    .venv/bin/python benchmarks/patch_dropout_cpu.py [--profile cpu] [--out FILE.json]   # ~10 min on 2 cores

The runs are the trials of `search_spaces/patch_dropout.yaml` under its `cpu` profile (the `tiny` ViT
at 32 px, 4,000 training images, 120 steps at batch 64: what the sweep runs on a laptop), trained one
after another by plain `train()` in one process, so their wall times compare. Per variant: mean and standard deviation over the
seeds of the test metrics, and the wall time as a ratio to the exact ITO run of the same seed.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("scenes/zeroshot_top1", "scenes/probe_top1", "scenes/i2t_r1", "scenes/t2i_r1", "scenes/modality_gap")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "patch_dropout.yaml"))
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--only", nargs="+", help="run only these variants (names as in the space file)")
    parser.add_argument("--seeds", nargs="+", type=int, help="run only these seeds")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides on every run; eval.every=0 skips the validation passes, "
                             "which do not change the trained model or its test metrics")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "patch_dropout_cpu.json"))
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)

    from ito_sweeps import config as C
    from ito_sweeps.sweep.space import load_space
    from ito_sweeps.train.loop import train

    space = load_space(args.space, args.profile)
    runs = []
    for trial in space.trial_configs():
        variant = space.trial_label(trial).rsplit(" seed", 1)[0]
        cfg = C.load(None, [f"{k}={json.dumps(v)}" for k, v in space.resolve(trial).flat().items()] + args.set)
        if (args.only and variant not in args.only) or (args.seeds and cfg.run.seed not in args.seeds):
            continue
        started = time.perf_counter()
        metrics = train(cfg)
        runs.append({"variant": variant, "seed": cfg.run.seed, "wall_s": time.perf_counter() - started,
                     **{k: metrics[k] for k in METRICS}})
        print(json.dumps(runs[-1]), flush=True)

    path = Path(args.out)
    if (args.only or args.seeds) and path.is_file():  # a partial rerun replaces those runs among the recorded ones
        redone = {(r["variant"], r["seed"]) for r in runs}
        runs = [r for r in json.loads(path.read_text())["runs"] if (r["variant"], r["seed"]) not in redone] + runs
    # wall times compare against the exact ITO run of the same seed (rerun a seed's variants together)
    base_wall = {r["seed"]: r["wall_s"] for r in runs if r["variant"] == "ITO (exact)"}
    summary = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rows = [r for r in runs if r["variant"] == variant]
        stats = {k: (statistics.mean(r[k] for r in rows), statistics.stdev(r[k] for r in rows)) for k in METRICS}
        ratios = [r["wall_s"] / base_wall[r["seed"]] for r in rows if r["seed"] in base_wall]
        summary[variant] = {**{k: {"mean": m, "std": s} for k, (m, s) in stats.items()},
                            "wall_vs_exact_ito": statistics.mean(ratios) if ratios else None}
    lines = ["| variant | " + " | ".join(METRICS) + " | wall / exact ITO |", "|---" * (len(METRICS) + 2) + "|"]
    for variant, s in summary.items():
        cells = [f"{s[k]['mean']:.4f} +- {s[k]['std']:.4f}" for k in METRICS]
        ratio = "-" if s["wall_vs_exact_ito"] is None else f"{s['wall_vs_exact_ito']:.3f}"
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {ratio} |")
    print("\n".join(lines))
    out = {"space": Path(args.space).name, "profile": args.profile, "overrides": args.set,
           "date": time.strftime("%Y-%m-%d"),
           "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
           "torch": torch.__version__, "runs": runs, "summary": summary, "table": lines}
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
