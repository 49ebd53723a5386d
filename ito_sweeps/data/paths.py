"""Where streamed data lives, expanded and checked before any work starts.

`check_data_paths` is a pure function of the data config (and the number of Train workers), so the
sweep driver can call it before Ray starts and `train()` before it builds a model: a typo in a shard
path then fails in a second with the key named, not after a cluster has come up.
"""
from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

from braceexpand import braceexpand

from ito_sweeps.config import Config, ConfigError, DataConfig

STREAMED = ("webdataset", "csv")
DATA_KEYS = ("train_data", "val_data", "test_data")
# Read by webdataset's own openers on the machine that trains; nothing local to check
REMOTE_PREFIXES = ("s3://", "gs://", "http://", "https://", "pipe:")
CLASSNAMES_FILE = "classnames.txt"  # CLIP_benchmark's class files, one entry per line
TEMPLATES_FILE = "zeroshot_classification_templates.txt"
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


def read_classes(spec: str) -> tuple[list[str], list[str]] | None:
    """CLIP_benchmark's class names and prompt templates (`{c}` -> `{}`) beside spec or one folder up."""
    for folder in metadata_folders(spec):
        names, templates = folder / CLASSNAMES_FILE, folder / TEMPLATES_FILE
        if names.is_file() and templates.is_file():
            return _lines(names), [t.replace("{c}", "{}") for t in _lines(templates)]
    return None


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


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


def check_benchmark_paths(cfg: Config) -> None:
    """Raise ConfigError, naming the benchmark's key, for evaluation files that cannot give its tasks.

    Checks every benchmark that reads files (its own path, or the run's streamed data): the files exist,
    zero-shot classification has its class and template files, and the first sample carries what the tasks
    read (a label for classification and the probe, captions for retrieval). Remote data is not checked.
    """
    for n, bench in enumerate(cfg.eval.benchmarks or ()):
        key = f"eval.benchmarks[{n}] ({bench.name})"
        if bench.source == "embedded" or (bench.source == "run" and cfg.data.dataset not in STREAMED):
            continue
        own = bench.source == "run"
        classify, retrieve = "zeroshot_classification" in bench.tasks, "zeroshot_retrieval" in bench.tasks
        if (bench.path or "").endswith(".csv") or (own and cfg.data.dataset == "csv"):
            if classify or "linear_probe" in bench.tasks:
                raise ConfigError(f"{key}.tasks: an open_clip CSV has no class labels, so only zeroshot_retrieval "
                                  f"can read it; write the benchmark in CLIP_benchmark's webdataset layout")
            if not own:
                _check_csv(f"{key}.path", bench.path, cfg.data)
            continue
        # the run's own data is scored on its val split too; a benchmark's files serve both passes
        evaluated = [("data.test_data", cfg.data.test_data)] if own else [(f"{key}.path", bench.path)]
        if own and bench.evaluated_at("val", cfg.eval.every):
            evaluated.append(("data.val_data", cfg.data.val_data))
        if "linear_probe" in bench.tasks:
            evaluated.append(("data.train_data", cfg.data.train_data) if own else (f"{key}.train_path", bench.train_path))
        for where, spec in evaluated:
            if is_remote(spec):
                continue
            if not own:
                _check_shards(where, spec)
            probe_split = where.endswith("train_data") or where.endswith("train_path")
            if classify and not probe_split and read_classes(spec) is None:
                raise ConfigError(f"{where}: no {CLASSNAMES_FILE} and {TEMPLATES_FILE} beside {spec} or one folder "
                                  f"up; benchmark {bench.name!r} classifies zero-shot, which needs both "
                                  f"(CLIP_benchmark's layout)")
            _check_first_sample(where, spec, label=classify or probe_split, captions=retrieve and not probe_split,
                                benchmark=bench.name)


def _check_first_sample(key: str, spec: str, *, label: bool, captions: bool, benchmark: str) -> None:
    """The first sample of the first shard has a label (key.cls, or json `label`) and captions, as asked."""
    names, meta = _first_sample(expand_shards(spec)[0])
    if label and "cls" not in names and not isinstance(meta.get("label"), int):
        raise ConfigError(f"{key}: the first sample of {spec} has no label (key.cls or a json `label`), which "
                          f"benchmark {benchmark!r} needs for zero-shot classification or its linear probe")
    if captions and "txt" not in names and not meta.get("captions"):
        raise ConfigError(f"{key}: the first sample of {spec} has no caption (key.txt or json `captions`), which "
                          f"benchmark {benchmark!r} needs for zero-shot retrieval")


def _first_sample(shard: str) -> tuple[set[str], dict]:
    """The file extensions of a shard's first sample, and its json metadata (empty when it has none)."""
    names: set[str] = set()
    meta: dict = {}
    first_key = None
    with tarfile.open(shard) as tar:
        for member in tar:
            sample_key, _, extension = member.name.partition(".")
            if first_key is not None and sample_key != first_key:
                break
            first_key = sample_key
            names.add(extension)
            if extension == "json":
                try:
                    loaded = json.loads(tar.extractfile(member).read())
                except ValueError:
                    loaded = {}
                meta = loaded if isinstance(loaded, dict) else {}
    return names, meta
