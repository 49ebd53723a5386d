"""Export a trained model as a plain open_clip model folder: the towers only, no fusion parameter.

`open_clip.create_model_and_transforms('local-dir:DIR')` and `open_clip.get_tokenizer('local-dir:DIR')`
load the result with open_clip alone; its embeddings are bit-identical to the trained towers'.

Every checkpoint carries its run's config, so one function exports any of them: the last checkpoint of an
`ito-sweeps train` run folder, or the latest Ray checkpoint of a sweep trial, found through the trial's
MLflow run (its `checkpoints` tag: the folder where Ray Train, or Tune for a one-worker trial, keeps `checkpoint_*/checkpoint.pt`).
"""
from __future__ import annotations

import json
from pathlib import Path

import open_clip
from safetensors.torch import save_file

from ito_sweeps import config as config_mod
from ito_sweeps.errors import UserError
from ito_sweeps.models.towers import model_config, preprocess_config
from ito_sweeps.train import checkpoint

TOWERS = "clip."  # state-dict prefix of the dual encoder inside ITOModel; everything else is training-only
WEIGHTS = "open_clip_model.safetensors"
CHECKPOINTS_TAG = "checkpoints"  # set on every sweep trial's MLflow run
RAY_CHECKPOINT_FILE = "checkpoint.pt"  # sweep.worker.CHECKPOINT_FILE, without importing Ray here


class ExportError(UserError):
    pass


def export(run_dir: Path, out: Path) -> Path:
    """The last checkpoint of an `ito-sweeps train` run folder, as an open_clip folder."""
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: config.yaml is missing")
    ckpt = checkpoint.latest(run_dir / "checkpoints")
    if ckpt is None:
        raise ExportError(f"no checkpoint in {run_dir / 'checkpoints'}: the run stopped before its first one (the "
                          f"last step, unless run.checkpoint_every is set); train it to the end with another --out")
    return export_checkpoint(ckpt, out)


def export_checkpoint(ckpt: Path, out: Path) -> Path:
    """A checkpoint file (step, model, config) as an open_clip folder at `out`."""
    return export_state(checkpoint.load(ckpt), out)


def export_state(state: dict, out: Path) -> Path:
    """A loaded checkpoint as an open_clip folder at `out`."""
    cfg = config_mod.from_dict(state["config"])
    towers = {k[len(TOWERS):]: v.contiguous() for k, v in state["model"].items() if k.startswith(TOWERS)}

    out.mkdir(parents=True, exist_ok=True)
    save_file(towers, str(out / WEIGHTS))
    (out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_config(cfg), "preprocess_cfg": preprocess_config(cfg)}, indent=2) + "\n"
    )
    # open_clip loads it back strictly: a broken export fails here, not on a user's cluster
    open_clip.create_model(f"local-dir:{out}")
    return out


def recorded_run(run_id: str, tracking_uri: str | None):
    """(MlflowClient, Run) of an existing run, or ExportError naming what to do."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from ito_sweeps.sweep.store import check_reachable, resolve_uri

    uri = resolve_uri(tracking_uri)
    check_reachable(uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # MLflow would create an empty store here, and then not find the run in it
        raise ExportError(f"no MLflow store at {uri.removeprefix('sqlite:///')}: pass the sweep's --tracking-uri")
    client = MlflowClient(uri)
    try:
        return client, client.get_run(run_id)
    except MlflowException:
        raise ExportError(f"run {run_id}: no such run in {uri}; copy a trial's run id from `ito-sweeps ui`, or "
                          f"pass the sweep's --tracking-uri") from None


def trial_checkpoint(run) -> Path:
    """A sweep trial's final weights: the newest `checkpoint_*/checkpoint.pt` under its checkpoints tag."""
    run_id = run.info.run_id
    folder = run.data.tags.get(CHECKPOINTS_TAG)
    if folder is None:
        raise ExportError(f"run {run_id} ({run.info.run_name}) is not a sweep trial (no {CHECKPOINTS_TAG!r} tag); "
                          f"pass a trial's run id, or export a `ito-sweeps train` run folder with "
                          f"`ito-sweeps export RUN_DIR`")
    # Ray names checkpoint folders by the time of their report, so the last name is the latest step
    found = sorted(Path(folder).glob(f"checkpoint_*/{RAY_CHECKPOINT_FILE}"), key=lambda p: p.parent.name)
    if not found:
        raise ExportError(f"run {run_id}: {folder} holds no checkpoint_*/{RAY_CHECKPOINT_FILE}; the trial stopped "
                          f"before its first checkpoint (finish it with `ito-sweeps sweep SPACE --resume`), or its "
                          f"Ray storage is not mounted at this path here (the sweep's --storage)")
    return found[-1]
