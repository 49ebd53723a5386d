"""Every objective on the embedded benchmark under the default CPU budget (200 steps at batch 128).

    .venv/bin/python benchmarks/objectives_cpu.py [--only NAME ...] [--out FILE.json]

One process, one run after another, so the wall times compare: each is also given as a ratio to the
`clip` run of the same process. For each run: the first and the last logged training loss (does it
fall?), the test metrics (zero-shot top-1 against chance, modality gap, retrieval, probe) and the wall
time. The zero-shot task of the default data (scenes) has 36 classes: chance is 1/36 = 0.0278.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "clip": ["objective.name=clip"],
    "ito": ["objective.name=ito"],
    "unialign": ["objective.name=unialign"],
    "latent_structure": ["objective.name=latent_structure"],
    "latent_structure sep": ["objective.name=latent_structure", "objective.latent_structure.regularizers=[sep]"],
    "latent_structure br": ["objective.name=latent_structure", "objective.latent_structure.regularizers=[br]"],
    "latent_structure gc": ["objective.name=latent_structure", "objective.latent_structure.regularizers=[gc]"],
    "cyclip": ["objective.name=cyclip"],
    # the published weights collapse both towers at this budget (see README.md): the same terms 100x weaker
    "cyclip weights/100": ["objective.name=cyclip", "objective.cyclip.cross_weight=0.0025",
                           "objective.cyclip.inmodal_weight=0.0025"],
    "latent_structure gc weight/100": ["objective.name=latent_structure", "objective.latent_structure.regularizers=[gc]",
                                       "objective.latent_structure.gc_weight=0.01"],
    "unialign + fusion": ["objective.name=unialign", "objective.fusion_weight=2"],
    "latent_structure gc + fusion": ["objective.name=latent_structure",
                                     "objective.latent_structure.regularizers=[gc]", "objective.fusion_weight=2"],
    "cyclip + fusion": ["objective.name=cyclip", "objective.fusion_weight=2"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(RUNS), help="a subset of the runs (clip always runs)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "objectives_cpu.json"))
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)

    from ito_sweeps import config as C
    from ito_sweeps.train.loop import train

    names = ["clip", *[n for n in (args.only or RUNS) if n != "clip"]]
    results = {}
    for name in names:
        losses: list[float] = []
        started = time.perf_counter()
        metrics = train(C.load(None, RUNS[name]), None,
                        on_metrics=lambda step, r: losses.append(r["train/loss"]) if "train/loss" in r else None)
        wall = time.perf_counter() - started
        results[name] = {
            "overrides": RUNS[name], "wall_s": wall, "wall_vs_clip": wall / results["clip"]["wall_s"] if results else 1.0,
            "first_loss": losses[0], "last_loss": losses[-1], **metrics,
        }
        r = results[name]
        print(f"{name:30s} loss {r['first_loss']:8.4f} -> {r['last_loss']:8.4f}  zero-shot {r['scenes/zeroshot_top1']:.4f}  "
              f"gap {r['scenes/modality_gap']:.4f}  wall {wall:7.1f} s ({r['wall_vs_clip']:.2f}x clip)", flush=True)
    out = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "runs": results}
    path = Path(args.out)
    if args.only and path.is_file():  # a partial rerun adds to the recorded runs
        out["runs"] = {**json.loads(path.read_text())["runs"], **results}
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
