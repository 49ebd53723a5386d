"""GPU correctness check for the training core: torch + open_clip only (no Ray, no MLflow imported).

1. The ITO losses of one batch under bf16 autocast and/or torch.compile agree with float32 eager
   (TF32 off) within 1e-2 relative, on a real open_clip architecture (ViT-B-16 at 224 px by default).
2. A short ITO run (bf16, compiled) on the embedded benchmark: the loss falls and zero-shot beats chance.

    python benchmarks/gpu_check.py --out results.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ito_sweeps import config as C
from ito_sweeps.data.batch_augment import make_views
from ito_sweeps.data.loader import ViewsDataset, collate
from ito_sweeps.data.scenes import make_scenes
from ito_sweeps.models.towers import ITOModel, build_tokenizer
from ito_sweeps.objectives import build_objective
from ito_sweeps.train.loop import seed_everything, train


def loss_agreement(model_name: str, image_size: int, batch: int) -> dict:
    cfg = C.load(None, [f"model.name={model_name}", f"data.image_size={image_size}", "run.device=cuda"])
    seed_everything(0, False)
    objective = build_objective(cfg)
    model = ITOModel(cfg, with_fusion=True).cuda()
    data = make_scenes(batch, 0, image_size, 5)
    needs = objective.inputs
    dataset = ViewsDataset(data, build_tokenizer(cfg), needs.views, needs.captions, cfg.data, seed=0)
    pixels, params, texts = (x.cuda() for x in collate([dataset[(0, i)] for i in range(batch)]))
    images = make_views(pixels, params, image_size)

    def losses(bf16: bool, compiled: bool) -> dict[str, float]:
        def fn(i, t):
            return objective(model(i, t, needs.fusion_pairs))

        step = torch.compile(fn) if compiled else fn
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16), torch.no_grad():
            out = step(images, texts)
        return {k: v.item() for k, v in out.items()}

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    reference = losses(bf16=False, compiled=False)
    rows = {"fp32 eager": reference}
    for name, bf16, compiled in [("bf16 eager", True, False), ("fp32 compiled", False, True),
                                 ("bf16 compiled", True, True)]:
        rows[name] = losses(bf16, compiled)
    rel = {name: max(abs(v[k] - reference[k]) / abs(reference[k]) for k in reference) for name, v in rows.items()}
    return {"model": model_name, "image_size": image_size, "batch": batch, "losses": rows, "max_rel_err": rel,
            "ok": all(r < 1e-2 for r in rel.values())}


def short_run(steps: int, batch: int, out: Path) -> dict:
    cfg = C.load(None, ["run.device=cuda", "run.compile=true", f"schedule.steps={steps}",
                        f"data.batch_size={batch}", "data.num_workers=6", "eval.every=0",
                        f"schedule.warmup_steps={steps // 10}"])
    records = []
    start = time.perf_counter()
    metrics = train(cfg, out, on_metrics=lambda s, r: records.append((s, r)))
    losses = [r["train/loss"] for _, r in records if "train/loss" in r]
    rates = [r["train/samples_per_s"] for _, r in records if "train/samples_per_s" in r]
    waits = [r["train/data_wait_frac"] for _, r in records if "train/data_wait_frac" in r]
    return {
        "steps": steps, "batch": batch, "wall_s": time.perf_counter() - start,
        "first_loss": losses[0], "last_loss": losses[-1], "loss_fell": losses[-1] < 0.7 * losses[0],
        "zeroshot_top1": metrics["scenes/zeroshot_top1"], "chance": 1 / 36,
        "median_samples_per_s": sorted(rates)[len(rates) // 2], "median_data_wait_frac": sorted(waits)[len(waits) // 2],
        "metrics": metrics,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    assert "ray" not in sys.modules and "mlflow" not in sys.modules
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "agreement": loss_agreement(args.model, args.image_size, args.batch),
        "short_run": short_run(args.steps, 256, Path(args.out).with_suffix("") / "run"),
        "ray_or_mlflow_imported": "ray" in sys.modules or "mlflow" in sys.modules,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["agreement"]["ok"] and result["short_run"]["loss_fell"] else 1


if __name__ == "__main__":
    sys.exit(main())
