"""`ito-sweeps evaluate`: any open_clip model on a suite file of named benchmarks, optionally logged to a run.

The model is an exported folder (open_clip's `local-dir:`), a sweep trial's final Ray checkpoint
(`run:RUN_ID`, exported on the fly exactly as `ito-sweeps export --run` does), or an open_clip model name
with `--pretrained` weights. Whatever it is, open_clip builds it with its own eval transform and
tokenizer, so the numbers are those of the deployed model, the ones CLIP_benchmark would measure.

The suite file is an ordinary config (typically `eval: {benchmarks: [...]}`), checked like any other,
and its files are checked before a model is built. Benchmarks on "the run's own held-out data" read the
trial's data section (the suite file's own data keys win); without a trial there is no such data.
With a run (--run, or the trial itself) the metrics are logged to it as test/BENCHMARK/METRIC, at the
trial checkpoint's step (where training logged its own test metrics), else at step 0. Library warnings
(a probe on few samples, ...) go to this module's logger, not the console.
"""
from __future__ import annotations

import logging
import tempfile
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from ito_sweeps import config as config_mod
from ito_sweeps import strict_yaml
from ito_sweeps.config import Config, ConfigError
from ito_sweeps.errors import UserError

RUN_PREFIX = "run:"
LOCAL_DIR = "local-dir:"
MLFLOW_BATCH = 1000  # MLflow's limit on metrics per log_batch call
log = logging.getLogger(__name__)


class ModelError(UserError):
    pass


@dataclass
class ModelSpec:
    kind: str  # folder | run | name
    value: str  # the folder, the run id, or the open_clip name
    pretrained: str | None = None


def parse_model(model: str, pretrained: str | None) -> ModelSpec:
    """MODEL as given on the command line, checked without loading anything."""
    if model.startswith(RUN_PREFIX):
        spec = ModelSpec("run", model.removeprefix(RUN_PREFIX))
    elif model.startswith(LOCAL_DIR) or Path(model).is_dir():
        folder = Path(model.removeprefix(LOCAL_DIR))
        if not (folder / "open_clip_config.json").is_file():
            raise ModelError(f"--model {model}: no open_clip_config.json in {folder}; pass a folder written by "
                             f"`ito-sweeps export`, run:RUN_ID for a sweep trial, or an open_clip model name")
        spec = ModelSpec("folder", str(folder))
    else:
        if pretrained is None:
            raise ModelError(f"--model {model}: no such folder, and an open_clip model name needs --pretrained "
                             f"FILE_OR_TAG; pass a folder written by `ito-sweeps export`, run:RUN_ID, or a name "
                             f"with its weights")
        return ModelSpec("name", model, pretrained)
    if pretrained is not None:
        raise ModelError(f"--pretrained: only read with an open_clip model name; {model} carries its own weights")
    return spec


@dataclass
class Evaluation:
    metrics: dict[str, float]  # BENCHMARK/METRIC -> value, and zeroshot_avg
    model: str  # what was evaluated, for the user
    logged_to: str | None  # the MLflow run the metrics were logged to


def evaluate_model(model: str, suite: Path, *, pretrained: str | None = None, run_id: str | None = None,
                   tracking_uri: str | None = None, batch_size: int | None = None,
                   device: str = "auto") -> Evaluation:
    spec = parse_model(model, pretrained)
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size: {batch_size} must be at least 1")
    if spec.kind == "run" and run_id not in (None, spec.value):
        raise ModelError(f"--run {run_id} and --model {model} name different runs; drop --run (a trial's "
                         f"metrics go to its own run) or evaluate another model")
    cfg = load_suite(suite, for_trial=spec.kind == "run")
    target = spec.value if spec.kind == "run" else run_id
    client = run = state = None
    if target is not None:
        from ito_sweeps.models.export import recorded_run

        client, run = recorded_run(target, tracking_uri)  # a wrong run id fails before any evaluation
    if spec.kind == "run":
        from ito_sweeps.models.export import trial_checkpoint
        from ito_sweeps.train import checkpoint

        state = checkpoint.load(trial_checkpoint(run))
        cfg = over_trial_data(suite, config_mod.from_dict(state["config"]))
    from ito_sweeps.data.paths import check_benchmark_paths

    check_benchmark_paths(cfg)
    from ito_sweeps.evaluate.suite import evaluate_suite

    with warnings.catch_warnings():
        # scikit-learn and torch warn about small probes and the like; the table is what the user asked for
        warnings.showwarning = _to_log
        encoder, described = _encoder(spec, state, cfg, device, batch_size)
        own = None
        if any(b.source == "run" for b in cfg.eval.benchmarks or ()) and cfg.data.dataset in ("scenes", "digits"):
            from ito_sweeps.data.loader import build_splits

            own = build_splits(cfg.data)  # rendered once for every benchmark that reads it
        metrics, _ = evaluate_suite(encoder, cfg, "test", own=own, workers=cfg.data.num_workers)
    if client is not None:
        # at the trial checkpoint's step, where training logged its own test metrics
        _log(client, run.info.run_id, metrics, step=int(state["step"]) if state is not None else 0)
    return Evaluation(metrics, described, None if run is None else run.info.run_id)


def load_suite(suite: Path, for_trial: bool) -> Config:
    """The suite file as a config, checked like any; without a trial, no benchmark may read a run's own data."""
    cfg = config_mod.load(suite)
    if for_trial:
        return cfg
    if "benchmarks" not in ((strict_yaml.load(suite) or {}).get("eval") or {}):
        raise ConfigError(f"eval.benchmarks: {suite} lists none, and the default suite of data.dataset "
                          f"{cfg.data.dataset} reads a run's own data; list the benchmarks to run, or evaluate "
                          f"--model run:RUN_ID to run a trial's default suite")
    for n, bench in enumerate(cfg.eval.benchmarks or ()):
        if bench.source == "run":
            raise ConfigError(f"eval.benchmarks[{n}] ({bench.name}): reads the run's own held-out data (it has "
                              f"neither path nor embedded), which only a sweep trial has; evaluate --model "
                              f"run:RUN_ID, or give the benchmark files (path) or an embedded set (embedded)")
    return cfg


def over_trial_data(suite: Path, trial: Config) -> Config:
    """The suite file over the trial's data section (the file's own data keys win)."""
    written = strict_yaml.load(suite) or {}
    data = {**trial.to_dict()["data"], **(written.get("data") or {})}
    # only the test pass runs here: what validation passes would need (data.val_data) is not asked for
    return config_mod.from_dict({**written, "data": data, "eval": {"every": 0, **(written.get("eval") or {})}})


def format_table(metrics: dict[str, float]) -> list[str]:
    """One block per benchmark (name and sample count, then its metrics), zeroshot_avg last."""
    benchmarks: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        bench, _, metric = key.rpartition("/")
        benchmarks.setdefault(bench, {})[metric] = value
    overall = benchmarks.pop("", {})
    width = max([len(m) for values in benchmarks.values() for m in values] + [len(k) - 2 for k in overall] + [8])
    lines = []
    for bench, values in benchmarks.items():
        samples = values.pop("samples", None)
        lines.append(bench + ("" if samples is None else f" ({samples:.0f} samples)"))
        lines += [f"  {metric:<{width}}  {value:8.4f}" for metric, value in values.items()]
    lines += [f"{key:<{width + 2}}  {value:8.4f}" for key, value in overall.items()]
    return lines


def _encoder(spec: ModelSpec, state: dict | None, cfg: Config, device: str, batch_size: int | None):
    import torch

    from ito_sweeps.evaluate.suite import Encoder

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no GPU is visible here; use --device cpu or auto")
    torch_device = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="ito-evaluate-") as tmp:
        clip, preprocess, tokenizer, described = _open_clip_model(spec, state, Path(tmp))
    clip.to(torch_device).eval()
    use_bf16 = cfg.run.bf16 and torch_device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else nullcontext
    return Encoder(clip, tokenizer, preprocess, torch_device, batch_size or cfg.eval.batch_size, autocast), described


def _open_clip_model(spec: ModelSpec, state: dict | None, tmp: Path):
    """(model, eval transform, tokenizer, description), all from open_clip's own factory."""
    import open_clip

    import ito_sweeps.models.towers  # noqa: F401 - registers the small configs (tiny) as open_clip names

    if spec.kind in ("run", "folder"):
        folder = spec.value
        if spec.kind == "run":
            from ito_sweeps.models.export import export_state

            folder = str(export_state(state, tmp))  # exactly what `ito-sweeps export --run` writes
        name = f"{LOCAL_DIR}{folder}"
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        described = f"run:{spec.value} (step {state['step']})" if spec.kind == "run" else name
        return model, preprocess, open_clip.get_tokenizer(name), described
    if spec.value not in open_clip.list_models():
        raise ModelError(f"--model {spec.value}: not an exported folder, run:RUN_ID or an open_clip model name "
                         f"(see open_clip.list_models())")
    tags = open_clip.list_pretrained_tags_by_model(spec.value)
    if not Path(spec.pretrained).is_file() and spec.pretrained not in tags:
        raise ModelError(f"--pretrained {spec.pretrained}: neither a weights file nor a pretrained tag of "
                         f"{spec.value} ({', '.join(tags) or 'it has none'})")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(spec.value, pretrained=spec.pretrained)
    except RuntimeError as err:  # weights of another shape; open_clip's message names the keys
        raise ModelError(f"--pretrained {spec.pretrained}: does not load into {spec.value}: "
                         f"{str(err).splitlines()[0]}") from None
    return model, preprocess, open_clip.get_tokenizer(spec.value), f"{spec.value} --pretrained {spec.pretrained}"


def _to_log(message, category, filename, lineno, file=None, line=None) -> None:
    log.info("%s: %s (%s:%s)", category.__name__, message, filename, lineno)


def _log(client, run_id: str, metrics: dict[str, float], step: int) -> None:
    """As the training loop names its final metrics: test/BENCHMARK/METRIC."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    records = [Metric(f"test/{key}", value, now, step) for key, value in metrics.items()]
    for start in range(0, len(records), MLFLOW_BATCH):
        client.log_batch(run_id, metrics=records[start : start + MLFLOW_BATCH])
