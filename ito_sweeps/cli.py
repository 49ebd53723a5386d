"""`ito-sweeps`: train one run, or export a trained run as a plain open_clip model."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ito_sweeps import config as config_mod
from ito_sweeps.config import ConfigError


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ito_sweeps.train import checkpoint
    from ito_sweeps.train.loop import NonFiniteLoss, train

    cfg = config_mod.load(args.config, args.set)
    run_dir = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{cfg.objective.name}")
    resume = checkpoint.latest(run_dir / "checkpoints")
    if resume is not None and not args.resume:
        print(f"error: {run_dir} already holds checkpoints; pass --resume to continue it, or choose a new --out",
              file=sys.stderr)
        return 2
    if args.resume and resume is None:
        print(f"error: --resume given but {run_dir / 'checkpoints'} holds no checkpoint", file=sys.stderr)
        return 2

    bar = tqdm(total=cfg.schedule.steps, desc=f"{cfg.objective.name} {run_dir.name}", unit="step", dynamic_ncols=True)

    def progress(step: int, record: dict[str, float]) -> None:
        bar.update(step - bar.n)
        if "train/loss" in record:
            bar.set_postfix(loss=f"{record['train/loss']:.3f}", sps=f"{record['train/samples_per_s']:.0f}",
                            wait=f"{record['train/data_wait_frac']:.0%}")
        elif "val/zeroshot_top1" in record:
            bar.write(f"step {step}: val zero-shot top-1 {record['val/zeroshot_top1']:.3f}, "
                      f"gap {record['val/modality_gap']:.3f}")

    try:
        metrics = train(cfg, run_dir, on_metrics=progress, resume=resume if args.resume else None)
    except NonFiniteLoss as err:
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return 1
    bar.close()
    width = max(map(len, metrics))
    print(f"\nfinal metrics (test split), run folder {run_dir}:")
    for key, value in metrics.items():
        print(f"  {key:<{width}}  {value:.4f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ito_sweeps.models.export import export

    out = export(Path(args.run_dir), Path(args.out))
    print(f"exported {args.run_dir} -> {out} (load with open_clip.create_model_and_transforms('local-dir:{out}'))")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ito-sweeps",
        description="Train and sweep ITO-style image-text contrastive pretraining on open_clip.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train one run (the embedded default when no --config is given)",
        description="Train one run and evaluate it on the held-out split. The run folder gets config.yaml "
        "(resolved), history.jsonl (every logged record), metrics.json (final metrics) and checkpoints/.",
    )
    train.add_argument("--config", help="YAML file with any of the config sections; defaults fill the rest")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one key, e.g. --set objective.fusion_weight=2 (repeatable)")
    train.add_argument("--out", help="run folder (default: runs/TIMESTAMP-OBJECTIVE)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.set_defaults(func=_train)

    exp = commands.add_parser(
        "export",
        help="write a trained run as a plain open_clip model folder (no fusion parameters)",
        description="Write RUN_DIR's last checkpoint as open_clip_config.json + weights, loadable with "
        "open_clip.create_model_and_transforms('local-dir:DIR') and open_clip.get_tokenizer('local-dir:DIR').",
    )
    exp.add_argument("run_dir", metavar="RUN_DIR")
    exp.add_argument("--out", required=True, metavar="DIR")
    exp.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
