"""Training-step throughput: open_clip's own CLIP step against this project's steps, in one process.

Needs torch and open_clip only (no Ray, no MLflow). For each model and batch, on synthetic tensors
already on the device, bf16 autocast on CUDA, fused AdamW:

  a  open_clip's CLIP step as its training loop runs it: its model, its `ClipLoss`, its parameter groups
  b  this project's `TrainStep` (the object `train()` runs) with the `clip` objective
  c  the full ITO step: 2 views, fusion depth 2, lambda 2
  d  c with the cheaper mode: model.view_patch_dropout and fusion.patch_dropout (--view-drop, --fusion-drop)

each eager and compiled (`torch.compile` of open_clip's model for a, as open_clip's --torchcompile does;
of the forward and loss for b-d, as run.compile does). It reports the median step time, samples/s,
FLOPs per step counted by `torch.utils.flop_counter` (forward + backward, on the meta device: no memory,
no compute), the achieved TFLOP/s, peak memory, and the time ratios b/a, c/a and d/a within each mode.

    python benchmarks/step_throughput.py --out benchmarks/results/step_throughput_h100.json   # on a GPU
    python benchmarks/step_throughput.py --flops-only       # FLOP counts of the GPU cases, on any CPU
    python benchmarks/step_throughput.py --tiny             # one step of each case on the CPU (tests run it)
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import open_clip
import torch
from open_clip.loss import ClipLoss
from torch.utils.flop_counter import FlopCounterMode

from ito_sweeps import config as C
from ito_sweeps.models.towers import ITOModel, build_tokenizer
from ito_sweeps.objectives import build_objective
from ito_sweeps.train.optim import build_optimizer
from ito_sweeps.train.step import TrainStep

ITO = ["objective.name=ito", "objective.alignment=views", "objective.fusion_weight=2", "fusion.depth=2"]
CASES = {"a": "open_clip CLIP", "b": "TrainStep clip", "c": "TrainStep ITO", "d": "TrainStep ITO, patch dropout"}


@dataclass
class Case:
    step: Callable[[], None]  # one whole optimizer step on the case's fixed batch
    loss: Callable[[], torch.Tensor]  # forward and loss only, for counting FLOPs


def _texts(tokenizer, batch: int, device: str) -> torch.Tensor:
    captions = [f"a photo of a small red object number {i} left of a blue one" for i in range(batch)]
    return tokenizer(captions).to(device)


def open_clip_case(name: str, size: int, batch: int, device: str, compiled: bool, autocast) -> Case:
    """open_clip's train_one_epoch for one batch, without gradient accumulation or a grad scaler (bf16)."""
    model = open_clip.create_model(name, force_image_size=size, output_dict=True).to(device)
    # open_clip's main.py: no weight decay for gains, biases, norms and the temperature
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
         {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": 0.1}],
        lr=1e-4, betas=(0.9, 0.98), eps=1e-6, fused=device == "cuda",
    )
    forward = torch.compile(model) if compiled else model
    clip_loss = ClipLoss()
    images = torch.randn(batch, 3, size, size, device=device)
    texts = _texts(open_clip.get_tokenizer(name), batch, device)

    def loss() -> torch.Tensor:
        with autocast():
            out = forward(images, texts)
            return clip_loss(out["image_features"], out["text_features"], out["logit_scale"])

    def step() -> None:
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    return Case(step, loss)


def project_case(overrides: list[str], name: str, size: int, batch: int, device: str, compiled: bool,
                 autocast) -> Case:
    cfg = C.load(None, [f"model.name={name}", f"data.image_size={size}", f"data.batch_size={batch}",
                        f"run.compile={str(compiled).lower()}"] + overrides)
    objective = build_objective(cfg)
    needs = objective.inputs
    model = ITOModel.for_inputs(cfg, needs).to(device).train()
    optimizer = build_optimizer(model, cfg.optim, torch.device(device))
    train_step = TrainStep(cfg, model, objective, optimizer, autocast)
    images = torch.randn(batch, needs.views, 3, size, size, device=device)
    texts = _texts(build_tokenizer(cfg), batch, device).unsqueeze(1).expand(-1, needs.captions, -1).contiguous()
    return Case(lambda: train_step(images, texts, 1e-4), lambda: train_step.forward_loss(images, texts)["loss"])


def build(case: str, args, name: str, size: int, batch: int, device: str, compiled: bool) -> Case:
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device == "cuda" else nullcontext
    if case == "a":
        return open_clip_case(name, size, batch, device, compiled, autocast)
    drop = [f"model.view_patch_dropout={args.view_drop}", f"fusion.patch_dropout={args.fusion_drop}"]
    overrides = {"b": ["objective.name=clip"], "c": ITO, "d": ITO + drop}[case]
    return project_case(overrides, name, size, batch, device, compiled, autocast)


def count_flops(case: str, args, name: str, size: int, batch: int) -> int:
    """Forward + backward FLOPs of one step, on meta tensors (shapes only)."""
    c = build(case, args, name, size, batch, "meta", compiled=False)
    with FlopCounterMode(display=False) as counter:
        c.loss().backward()
    return counter.get_total_flops()


def time_steps(c: Case, device: str, warmup: int, steps: int) -> list[float]:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):  # compilation and allocator warm-up are not throughput
        c.step()
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        c.step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def run(args) -> dict:
    rows = []
    for spec in args.model:
        name, batch = spec.split(":")[0], int(spec.split(":")[1])
        flops = {case: count_flops(case, args, name, args.image_size, batch) for case in CASES}
        for mode in ([] if args.flops_only else args.modes):
            for case, label in CASES.items():
                if args.device == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                torch.manual_seed(0)
                c = build(case, args, name, args.image_size, batch, args.device, compiled=mode == "compiled")
                times = time_steps(c, args.device, args.warmup, args.steps)
                median = statistics.median(times)
                rows.append({
                    "model": name, "batch": batch, "mode": mode, "case": case, "label": label,
                    "step_s": median, "samples_per_s": batch / median, "tflop_per_step": flops[case] / 1e12,
                    "tflop_per_s": flops[case] / median / 1e12,
                    "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
                    "step_times_s": times,
                })
                del c
        if args.flops_only:
            rows += [{"model": name, "batch": batch, "case": case, "label": CASES[case],
                      "tflop_per_step": flops[case] / 1e12, "flop_ratio_to_a": flops[case] / flops["a"]}
                     for case in CASES]
    for row in rows:
        if "step_s" in row:
            base = next(r for r in rows if r["model"] == row["model"] and r["mode"] == row["mode"] and r["case"] == "a")
            row["time_ratio_to_a"] = row["step_s"] / base["step_s"]
    return {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "open_clip": open_clip.__version__, "image_size": args.image_size,
        "view_patch_dropout": args.view_drop, "fusion_patch_dropout": args.fusion_drop,
        "steps": args.steps, "warmup": args.warmup, "command": " ".join(sys.argv), "rows": rows,
    }


def table(result: dict) -> str:
    if all("step_s" not in r for r in result["rows"]):
        lines = ["| model | batch | case | TFLOP / step | / a |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['model']} | {r['batch']} | {r['case']} {r['label']} | {r['tflop_per_step']:.4g} | "
                  f"{r['flop_ratio_to_a']:.3f} |" for r in result["rows"]]
        return "\n".join(lines)
    lines = ["| model | batch | mode | case | step s | samples/s | TFLOP / step | TFLOP/s | peak GiB | time / a |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        mem = "-" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.1f}"
        lines.append(f"| {r['model']} | {r['batch']} | {r['mode']} | {r['case']} {r['label']} | {r['step_s']:.4f} | "
                     f"{r['samples_per_s']:.0f} | {r['tflop_per_step']:.4g} | {r['tflop_per_s']:.3g} | {mem} | "
                     f"{r['time_ratio_to_a']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["ViT-B-32:512", "ViT-B-16:256"], help="NAME:BATCH ...")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per case (the median is reported)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--view-drop", type=float, default=0.75, help="model.view_patch_dropout of case d")
    parser.add_argument("--fusion-drop", type=float, default=0.5, help="fusion.patch_dropout of case d")
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs only; needs no GPU")
    parser.add_argument("--tiny", action="store_true", help="the `tiny` model at 32 px, batch 8, one eager step")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns about every randomly initialised model
    if args.tiny:
        args.model, args.image_size, args.device, args.modes, args.steps, args.warmup = (
            ["tiny:8"], 32, "cpu", ["eager"], 1, 0)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as open_clip's training script sets it
        torch.backends.cudnn.allow_tf32 = True
    result = run(args)
    print(table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
