"""Where streamed data lives, expanded and checked before any work starts.

`check_data_paths` is a pure function of the data config (and the number of Train workers), so the
sweep driver can call it before Ray starts and `train()` before it builds a model: a typo in a shard
path then fails in a second with the key named, not after a cluster has come up.
"""
from __future__ import annotations

import csv
from pathlib import Path

from braceexpand import braceexpand

from ito_sweeps.config import ConfigError, DataConfig

STREAMED = ("webdataset", "csv")
DATA_KEYS = ("train_data", "val_data", "test_data")
# Read by webdataset's own openers on the machine that trains; nothing local to check
REMOTE_PREFIXES = ("s3://", "gs://", "http://", "https://", "pipe:")
MAKE_SHARDS_HINT = "write shards with `ito-sweeps make-shards DIR`, or point it at existing ones"


def is_remote(spec: str) -> bool:
    return spec.startswith(REMOTE_PREFIXES)


def expand_shards(spec: str) -> list[str]:
    """A brace pattern, one .tar or a directory (its *.tar, sorted by name) -> the shards, in order."""
    if not is_remote(spec) and Path(spec).is_dir():
        return sorted(str(p) for p in Path(spec).glob("*.tar"))
    return list(braceexpand(spec))


def metadata_folders(spec: str) -> list[Path]:
    """Where classnames.txt and zeroshot_classification_templates.txt may lie: next to the data, or one
    folder up (CLIP_benchmark keeps them above its split folders, make-shards above train/val/test)."""
    if is_remote(spec):
        return []
    path = Path(spec)
    if path.is_dir():
        folder = path
    elif path.is_file():  # one shard or a CSV file
        folder = path.parent
    else:  # a brace pattern
        folder = Path(expand_shards(spec)[0]).parent
    return [folder, folder.parent]


def check_data_paths(cfg: DataConfig, world_size: int = 1) -> None:
    """Raise ConfigError, naming the key and the path, for streamed data that cannot be read.

    Checks every data path set: it exists, a pattern matches files, a directory holds shards, a CSV has
    its columns and at least one row; and the training shards can feed `world_size` Train workers
    (each reads its own shards). Embedded data sets (scenes, digits) have nothing to check.
    """
    if cfg.dataset not in STREAMED:
        return
    for key in DATA_KEYS:
        spec = getattr(cfg, key)
        if spec is None:
            continue
        if cfg.dataset == "webdataset":
            shards = _check_shards(f"data.{key}", spec)
            if key == "train_data" and len(shards) < world_size:
                raise ConfigError(
                    f"data.train_data: {len(shards)} shard(s) cannot feed {world_size} Train workers, which "
                    f"each read their own shards; write more shards, e.g. `ito-sweeps make-shards DIR "
                    f"--shard-size N` with a smaller N, or use fewer workers"
                )
        else:
            _check_csv(f"data.{key}", spec, cfg)


def _check_shards(key: str, spec: str) -> list[str]:
    shards = expand_shards(spec)
    if is_remote(spec):
        return shards
    path = Path(spec)
    if path.is_dir() and not shards:
        raise ConfigError(f"{key}: directory {spec} holds no .tar shards; {MAKE_SHARDS_HINT}")
    missing = [s for s in shards if not Path(s).is_file()]
    if missing:
        what = "does not exist" if len(shards) == 1 else \
            f"matches {len(missing)} missing file(s) of {len(shards)} (first: {missing[0]})"
        raise ConfigError(f"{key}: {spec} {what}; {MAKE_SHARDS_HINT}")
    return shards


def _check_csv(key: str, spec: str, cfg: DataConfig) -> None:
    if is_remote(spec):
        return
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"{key}: CSV file {spec} does not exist; write one with `ito-sweeps make-shards DIR --csv`")
    with path.open(newline="") as f:
        reader = csv.reader(f, delimiter=cfg.csv_separator)
        header = next(reader, None)
        first_row = next(reader, None)
    if header is None or first_row is None:
        raise ConfigError(f"{key}: CSV file {spec} is empty (no header and data row)")
    for column in ("csv_image_key", "csv_caption_key"):
        name = getattr(cfg, column)
        if name not in header:
            raise ConfigError(
                f"data.{column}: column {name!r} is not in {spec} (its columns, split on data.csv_separator "
                f"{cfg.csv_separator!r}: {header})"
            )
