"""`ito-sweeps`: train one run, sweep a search space on Ray, report on a sweep, browse the runs, export a model,
evaluate a model on a benchmark suite, write the embedded benchmark as webdataset shards."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ito_sweeps import config as config_mod
from ito_sweeps.errors import UserError


def _train(args: argparse.Namespace) -> int:
    from ito_sweeps.data.paths import check_benchmark_paths, check_data_paths

    # checked before torch and the training code load: a mistake costs a fraction of a second
    cfg = config_mod.load(args.config, args.set)
    check_data_paths(cfg.data)  # before the progress bar: a wrong path is one line, not a broken bar
    check_benchmark_paths(cfg)

    from tqdm import tqdm

    from ito_sweeps.train import checkpoint
    from ito_sweeps.train.loop import NonFiniteLoss, train

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
        elif any(key.startswith("val/") for key in record):
            shown = [k for k in record if k == "val/zeroshot_avg" or k.endswith("/modality_gap")][:2]
            bar.write(f"step {step}: " + ", ".join(f"{k} {record[k]:.3f}" for k in shown))

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


def _sweep(args: argparse.Namespace) -> int:
    from analysis.table_spec import check_benchmarks, spec_for
    from ito_sweeps.sweep.space import load_space

    # the report's table, found before any trial runs: a column of a benchmark no trial evaluates would
    # otherwise surface only when the finished sweep is reported
    space = load_space(args.space, args.profile)
    spec = spec_for(space.path, space.profile)
    if spec is not None:
        check_benchmarks(spec, space.benchmark_names(), where=f"{space.shown()}: its report's table {spec.origin}")

    from ito_sweeps.sweep.runner import run_sweep

    summary = run_sweep(args.space, profile=args.profile, address=args.address, tracking_uri=args.tracking_uri,
                        name=args.name, resume=args.resume, storage=args.storage)
    print(f"\nsweep {summary.name}: {len(summary.trials)} trial(s) in {summary.wall_s:.0f} s")
    width = max([len(t.label) for t in summary.trials] + [5])
    for t in summary.trials:
        value = "-" if t.value is None else f"{t.value:.4f}"
        print(f"  {t.label:<{width}}  {t.status:<8}  {summary.metric} {value}")
    if summary.best is not None:
        print(f"best ({summary.mode} {summary.metric}): {summary.best.label} = {summary.best.value:.4f}")
    for t in summary.failed:
        print(f"FAILED {t.label}: {t.error.splitlines()[0] if t.error else 'see its log'} (log: {t.log})")
    print(f"runs: MLflow {summary.tracking_uri}, experiment {summary.name!r}, parent run {summary.parent_run_id} "
          f"(browse with `ito-sweeps ui`); Ray state: {summary.experiment_path}")
    print(f"trial logs (everything a trial printed; also in its MLflow run): {summary.logs}")
    if summary.interrupted:
        print(f"interrupted: continue with `ito-sweeps sweep {args.space} --resume"
              + (f" --name {args.name}" if args.name else "") + "`")
        return 130
    return 1 if summary.failed else 0


def _report(args: argparse.Namespace) -> int:
    from analysis.table_spec import load_spec

    spec = load_spec(args.spec) if args.spec else None  # before MLflow loads: a mistaken spec costs a second

    from analysis.load import load_runs
    from analysis.report import write_report

    runs = load_runs(args.tracking_uri, experiment=args.experiment, sweep=args.sweep)
    out = Path(args.out or Path("reports") / (args.experiment or args.sweep))
    index = write_report(runs, out, spec=spec)
    print(f"report: {index} ({len(runs.trials)} trial run(s) of experiment {runs.experiment_name!r}); "
          f"also logged under report/ in the sweep's parent run (browse with `ito-sweeps ui`)")
    return 0


def _ui(args: argparse.Namespace) -> int:
    import os

    from ito_sweeps.sweep import store

    uri = store.resolve_uri(args.tracking_uri)
    if not uri.startswith("sqlite:///"):
        print(f"error: {uri} is a server already; open it in a browser", file=sys.stderr)
        return 2
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port} (Ctrl+C stops it)", flush=True)
    # One worker: a single user on loopback, whose requests that worker's threads serve side by side over
    # a SQLite file that takes one writer at a time anyway. MLflow's default of four starts three more
    # processes importing its server: on a busy 2-core machine the UI answered after 35 s instead of 15 s.
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
               "--port", str(args.port), "--artifacts-destination", store.artifact_root(uri), "--workers", "1"]
    # MLflow's job runner serves GenAI evaluation jobs, which sweeps never submit: five fewer processes.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    os.execve(sys.executable, command, env)  # the UI replaces this process, so signals reach it directly


def _export(args: argparse.Namespace) -> int:
    if (args.run_dir is None) == (args.run is None):
        raise UserError("export: name one model, a run folder (RUN_DIR) or a sweep trial (--run RUN_ID)")
    from ito_sweeps.models import export

    if args.run is None:
        out, source = export.export(Path(args.run_dir), Path(args.out)), args.run_dir
    else:
        _, run = export.recorded_run(args.run, args.tracking_uri)
        ckpt = export.trial_checkpoint(run)
        out, source = export.export_checkpoint(ckpt, Path(args.out)), f"run {args.run} ({ckpt})"
    print(f"exported {source} -> {out} (load with open_clip.create_model_and_transforms('local-dir:{out}'))")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ito_sweeps.evaluate.command import evaluate_model, format_table

    done = evaluate_model(args.model, Path(args.suite), pretrained=args.pretrained, run_id=args.run,
                          tracking_uri=args.tracking_uri, batch_size=args.batch_size, device=args.device)
    print(f"{done.model} on {args.suite} (test split):")
    for line in format_table(done.metrics):
        print(f"  {line}")
    if done.logged_to is not None:
        print(f"logged as test/BENCHMARK/METRIC to MLflow run {done.logged_to}")
    return 0


def _make_shards(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config, args.set)

    from ito_sweeps.data.make_shards import make_shards

    for line in make_shards(cfg, Path(args.out), args.shard_size, args.format, args.clip_benchmark, args.csv):
        print(line)
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

    sweep = commands.add_parser(
        "sweep",
        help="run a search space (search_spaces/*.yaml) as a Ray Tune sweep recorded in MLflow",
        description="Validate SPACE, then run its trials (a Ray Tune trial each; a Ray Train job where a trial has "
        "several workers) on the local machine or the Ray cluster at --address, logging a parent MLflow run for "
        "the sweep and a child run per trial. The console shows the trial table; each trial's own output goes to "
        "its log file under the sweep's storage folder (logs/).",
    )
    sweep.add_argument("space", metavar="SPACE.yaml")
    sweep.add_argument("--profile", help="the space's profile to use, e.g. cpu or gpu (default: cpu if defined)")
    sweep.add_argument("--address", help="Ray cluster to join: auto, ray://HOST:10001, ... (default: a local Ray)")
    sweep.add_argument("--tracking-uri", help="MLflow store: sqlite:///PATH.db or http://HOST:PORT "
                       "(default: sqlite:///mlflow.db in the current folder)")
    sweep.add_argument("--name", help="sweep name: the MLflow experiment and Ray folder (default: the space file's stem)")
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep of this name")
    sweep.add_argument("--storage", help="where Ray keeps sweep state and checkpoints (default: ./ray_results); "
                       "a shared filesystem path on a multi-node cluster")
    sweep.set_defaults(func=_sweep)

    report = commands.add_parser(
        "report",
        help="ablation tables and modality-gap plots of a recorded sweep",
        description="Write the tables (Markdown, LaTeX, CSV), plots (PNG, PDF) and an index.md of a sweep's runs, "
        "and log them under report/ in the sweep's parent run. The table layout comes from --spec, else from "
        "the shipped spec named like the sweep's search space (analysis/specs/), else a generic one.",
    )
    which = report.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", metavar="NAME", help="every trial of an experiment (a sweep's name)")
    which.add_argument("--sweep", metavar="RUN_ID", help="the trials of one sweep, by its parent run id")
    report.add_argument("--tracking-uri", help="MLflow store (default: sqlite:///mlflow.db in the current folder)")
    report.add_argument("--spec", metavar="FILE", help="table spec YAML (see analysis/specs/)")
    report.add_argument("--out", metavar="DIR", help="output folder (default: reports/NAME)")
    report.set_defaults(func=_report)

    ui = commands.add_parser("ui", help="start the MLflow UI on 127.0.0.1 over the sweeps' store",
                             description="Serve the MLflow UI for a local store, bound to 127.0.0.1 only.")
    ui.add_argument("--tracking-uri", help="default: sqlite:///mlflow.db in the current folder")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=_ui)

    exp = commands.add_parser(
        "export",
        help="write a trained run or sweep trial as a plain open_clip model folder (no fusion parameters)",
        description="Write RUN_DIR's last checkpoint, or with --run a sweep trial's latest Ray checkpoint, as "
        "open_clip_config.json + weights, loadable with open_clip.create_model_and_transforms('local-dir:DIR') "
        "and open_clip.get_tokenizer('local-dir:DIR').",
    )
    exp.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="an `ito-sweeps train` run folder")
    exp.add_argument("--run", metavar="RUN_ID", help="a sweep trial's MLflow run id, instead of RUN_DIR")
    exp.add_argument("--tracking-uri", help="MLflow store of --run (default: sqlite:///mlflow.db here)")
    exp.add_argument("--out", required=True, metavar="DIR")
    exp.set_defaults(func=_export)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate an open_clip model on a suite of benchmarks (and log it to an MLflow run)",
        description="Evaluate MODEL on the benchmarks of SUITE.yaml (a config file, typically eval: {benchmarks: "
        "[...]}) with open_clip's own eval transform and tokenizer, and print one block of metrics per benchmark. "
        "MODEL: a folder written by `ito-sweeps export`, run:RUN_ID (a sweep trial's final checkpoint; benchmarks "
        "without path or embedded read its own held-out data), or an open_clip model name with --pretrained. With "
        "--run (or run:RUN_ID) the metrics are logged to that run as test/BENCHMARK/METRIC.",
    )
    evaluate.add_argument("--model", required=True, metavar="MODEL", help="FOLDER | run:RUN_ID | open_clip model name")
    evaluate.add_argument("--suite", required=True, metavar="SUITE.yaml")
    evaluate.add_argument("--pretrained", metavar="FILE_OR_TAG", help="weights of an open_clip model name")
    evaluate.add_argument("--run", metavar="RUN_ID", help="MLflow run to log the metrics to")
    evaluate.add_argument("--tracking-uri", help="MLflow store (default: sqlite:///mlflow.db in the current folder)")
    evaluate.add_argument("--batch-size", type=int, metavar="N", help="images per batch (default: eval.batch_size)")
    evaluate.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    evaluate.set_defaults(func=_evaluate)

    shards = commands.add_parser(
        "make-shards",
        help="write the embedded benchmark as webdataset shards (and CLIP_benchmark / CSV layouts)",
        description="Render data.dataset (scenes or digits) with data.num_train/num_val/num_test and write "
        "OUT/{train,val,test}/NNNNNN.tar in img2dataset's layout (key.png|jpg, key.txt, key.json with every "
        "caption, key.cls) plus OUT/classnames.txt and OUT/zeroshot_classification_templates.txt; train on them "
        "with data.dataset=webdataset data.train_data=OUT/train data.val_data=OUT/val data.test_data=OUT/test.",
    )
    shards.add_argument("out", metavar="OUT")
    shards.add_argument("--config", help="YAML file with a data section (dataset, sizes, image_size, seed) and "
                        "optionally eval.benchmarks (the suite --clip-benchmark writes)")
    shards.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key, e.g. --set data.num_train=2000 (repeatable)")
    shards.add_argument("--shard-size", type=int, default=1000, metavar="N", help="samples per shard (default 1000)")
    shards.add_argument("--format", choices=["png", "jpg"], default="png", help="image encoding (png is lossless)")
    shards.add_argument("--clip-benchmark", action="store_true", help="also write every benchmark of the config's "
                        "suite in CLIP_benchmark's layout under OUT/clip_benchmark/ (wds_NAME/, wds_NAME_retrieval/) "
                        "with OUT/clip_benchmark/suite.yaml, which `ito-sweeps evaluate --suite` runs on those files")
    shards.add_argument("--csv", action="store_true", help="also write each split in open_clip's CSV format "
                        "under OUT/csv/ (columns and separators from data.csv_*)")
    shards.set_defaults(func=_make_shards)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
