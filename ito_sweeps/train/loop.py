"""The training loop: one plain function from a Config to a flat dict of final metrics.

Plain PyTorch only. Orchestration layers (Ray Train, MLflow) attach through arguments: `on_metrics`
receives every logged record, `on_report` is called on every rank at each validation pass (every
`eval.every` steps and at the end) with rank 0's evaluation metrics and the checkpoint saved at that
step, `prepare_model` may wrap the model for data parallelism, and `resume` restarts from a
checkpoint. Under torch.distributed each rank runs this function; every rank embeds its share of the
evaluation suite, rank 0 scores it and writes files.

The step itself never waits on the host: losses are accumulated on the device and read back only at
logging steps, where a non-finite loss also surfaces, naming the first step at which it appeared.
"""
from __future__ import annotations

import json
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ito_sweeps import config as config_mod
from ito_sweeps.config import Config, ConfigError
from ito_sweeps.data.batch_augment import device_pixels, make_views
from ito_sweeps.data.train_data import open_data
from ito_sweeps.evaluate.suite import Encoder, evaluate_suite
from ito_sweeps.models.towers import ITOModel, build_tokenizer, eval_transform
from ito_sweeps.objectives import build_objective
from ito_sweeps.objectives.contrastive import world
from ito_sweeps.train import checkpoint
from ito_sweeps.train.optim import build_optimizer, lr_at
from ito_sweeps.train.step import TrainStep

MetricsHook = Callable[[int, dict[str, float]], None]
ReportHook = Callable[[int, dict[str, float], "Path | None"], None]
# Sections a resumed run must share with its checkpoint; run, eval and the schedule length may change.
RESUME_MUST_MATCH = ("model", "data", "objective", "fusion", "optim")


class NonFiniteLoss(RuntimeError):
    pass


def resolve_device(name: str) -> torch.device:
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("run.device: cuda requested but no GPU is visible; use run.device=cpu or auto")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def _check_resumable(cfg: Config, saved: dict) -> None:
    now = cfg.to_dict()
    for section in RESUME_MUST_MATCH:
        changed = [
            k for k, v in config_mod.flatten(now[section], section + ".").items()
            if config_mod.flatten(saved.get(section, {}), section + ".").get(k) != v
        ]
        if changed:
            raise ConfigError(
                f"{changed[0]}: differs from the checkpoint being resumed ({len(changed)} key(s) differ); "
                f"resume with the run's own config.yaml or start a new run directory"
            )


def train(
    cfg: Config,
    run_dir: Path | None = None,
    *,
    on_metrics: MetricsHook | None = None,
    on_report: ReportHook | None = None,
    prepare_model: Callable[[nn.Module], nn.Module] | None = None,
    resume: Path | None = None,
) -> dict[str, float]:
    rank, world_size = world()
    lead = rank == 0
    device = resolve_device(cfg.run.device)
    if cfg.data.decode == "gpu" and device.type != "cuda":
        raise ConfigError("data.decode: gpu, but no GPU is visible (run.device=auto chose the CPU); "
                          "use data.decode=cpu")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    started = time.perf_counter()

    tokenizer = build_tokenizer(cfg)
    objective = build_objective(cfg)
    needs = objective.inputs
    # data first: a wrong path or an unreadable split fails before a model is built
    data = open_data(cfg, tokenizer, needs, rank, world_size, pin_memory=device.type == "cuda")
    model = ITOModel.for_inputs(cfg, needs).to(device)
    optimizer = build_optimizer(model, cfg.optim, device)
    start_step = 0
    if resume is not None:
        state = checkpoint.load(resume)
        _check_resumable(cfg, state["config"])
        model.load_state_dict(state["model"])
        start_step = state["step"]
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        elif start_step < cfg.schedule.steps:  # a finished run's weights alone: nothing to train on from
            raise ConfigError(f"schedule.steps: {resume} holds the weights of a finished run without its optimizer "
                              f"state, so training cannot continue past step {start_step}")
    if prepare_model is not None:
        wrapped = prepare_model(model)
    elif world_size > 1:
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    else:
        wrapped = model

    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None
    if lead and run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        config_mod.dump(cfg, run_dir / "config.yaml")
    history = run_dir / "history.jsonl" if lead and run_dir is not None else None

    def emit(step: int, record: dict[str, float]) -> None:
        if history is not None:
            with history.open("a") as f:  # appended per record, so a crash keeps everything logged
                f.write(json.dumps({"step": step, **record}) + "\n")
        if on_metrics is not None:
            on_metrics(step, record)

    use_bf16 = cfg.run.bf16 and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else nullcontext
    encoder = Encoder(model.clip, tokenizer, eval_transform(cfg), device, cfg.eval.batch_size, autocast)
    batches = data.batches(start_step)
    # the views of a batch are cut on this device, queued behind the previous step like the step itself
    views = torch.compile(make_views) if cfg.run.compile else make_views

    train_step = TrainStep(cfg, model, objective, optimizer, autocast, wrapped)
    first_bad = torch.full((), -1, device=device)
    sums: dict[str, torch.Tensor] = {}
    metrics: dict[str, float] = {}  # the final test metrics, on rank 0
    interval_start, data_wait, last_logged = time.perf_counter(), 0.0, start_step

    def raise_if_nonfinite() -> None:
        bad_step = int(first_bad.item())
        if bad_step >= 0:
            raise NonFiniteLoss(
                f"loss became NaN or infinite at step {bad_step + 1}; lower optim.lr, set optim.grad_clip "
                f"(e.g. 1.0), or resume from the last checkpoint in {ckpt_dir}"
            )

    def save_checkpoint(step: int) -> Path | None:
        raise_if_nonfinite()  # never persist weights that a NaN has already reached
        if lead and ckpt_dir is not None:
            keep_optimizer = step < cfg.schedule.steps or cfg.run.final_optimizer_state
            return checkpoint.save(ckpt_dir, step, model, optimizer if keep_optimizer else None, cfg.to_dict())
        return None

    model.train()
    for step in range(start_step, cfg.schedule.steps):
        t0 = time.perf_counter()
        pixels, params, texts = next(batches)
        pixels = device_pixels(pixels, device)  # data.decode=gpu: the batch's JPEGs are decoded here
        params, texts = params.to(device, non_blocking=True), texts.to(device, non_blocking=True)
        data_wait += time.perf_counter() - t0
        images = views(pixels, params, cfg.data.image_size)

        lr = lr_at(step, cfg.optim.lr, cfg.schedule)
        losses = train_step(images, texts, lr)
        with torch.no_grad():
            first_bad = torch.where(~torch.isfinite(losses["loss"]) & (first_bad < 0), step, first_bad)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.float()

        done = step + 1
        if done % cfg.run.log_every == 0 or done == cfg.schedule.steps:
            raise_if_nonfinite()
            elapsed = time.perf_counter() - interval_start
            n = done - last_logged
            means = (torch.stack(list(sums.values())) / n).tolist()  # one device-to-host copy
            record = {f"train/{k}": m for k, m in zip(sums, means)}
            record.update({
                "train/lr": lr,
                "train/logit_scale": model.clip.logit_scale.exp().item(),
                "train/samples_per_s": n * cfg.data.batch_size / elapsed,
                "train/data_wait_frac": data_wait / elapsed,
                "train/step_time_s": elapsed / n,
            })
            record.update(_skipped_totals(data.skipped(), device, world_size))
            emit(done, record)
            sums, interval_start, data_wait, last_logged = {}, time.perf_counter(), 0.0, done
        last = done == cfg.schedule.steps
        train_time = time.perf_counter() - started
        saved = None
        if last or (cfg.run.checkpoint_every and done % cfg.run.checkpoint_every == 0):
            saved = save_checkpoint(done)
        validate = bool(cfg.eval.every) and (done % cfg.eval.every == 0 or last)
        if validate or last:
            # every rank embeds its share of each benchmark; rank 0 gathers and scores
            def run_suite(split: str, keep_sample: int = 0):
                return evaluate_suite(encoder, cfg, split, rank, world_size, data.own, cfg.data.num_workers,
                                      keep_sample)

            report: dict[str, float] = {}
            if validate:
                val, _ = run_suite("val")
                if lead:
                    report = {f"val/{k}": v for k, v in val.items()}
                    emit(done, report)
            if last:
                final, sample = run_suite("test", cfg.eval.embeddings_sample)
                if lead:
                    final.update(train_time_s=train_time, steps=float(cfg.schedule.steps))
                    emit(done, {f"test/{k}": v for k, v in final.items()})
                    report.update({f"test/{k}": v for k, v in final.items()})
                    metrics = final
                    if run_dir is not None:
                        (run_dir / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
                        if sample is not None:
                            np.savez(run_dir / "embeddings.npz", **sample)
            _barrier(world_size)
            if on_report is not None:
                on_report(done, report, saved)
            interval_start = time.perf_counter()  # evaluation time is not training throughput

    return metrics


def _skipped_totals(skipped: dict[str, int], device: torch.device, world_size: int) -> dict[str, float]:
    """Streamed samples skipped so far, summed over ranks: one all_reduce, at logging steps only."""
    if not skipped:
        return {}
    counts = torch.tensor(list(skipped.values()), dtype=torch.int64, device=device)
    if world_size > 1:
        dist.all_reduce(counts)
    return {f"data/skipped_{reason}": float(n) for reason, n in zip(skipped, counts.tolist())}


def _barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()
