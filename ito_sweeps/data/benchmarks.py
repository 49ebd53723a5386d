"""Where a benchmark's samples come from: one split of one benchmark as a stream in a fixed order.

`open_split(bench, split, ...)` gives the samples a pass reads: for split "val" or "test" the evaluated
ones, for "train" the samples that fit a linear probe. Records stay encoded (shard bytes, or an index into
an in-memory set) until `decode` is called, so an evaluation rank decodes only its own share and memory
never holds more than the batches in flight. Class names and templates come with the split when the
benchmark classifies: from an embedded set, or from CLIP_benchmark's files beside the data or one folder
up (`classnames.txt`, `zeroshot_classification_templates.txt` with `{c}`).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.transforms.functional import to_pil_image

from ito_sweeps.config import BenchmarkConfig, Config, ConfigError
from ito_sweeps.eval_config import EMBEDDED_SIZE
from ito_sweeps.data.imageset import ImageTextSet
from ito_sweeps.data.paths import read_classes
from ito_sweeps.data.records import decode_image

Decoded = tuple["Image.Image | None", list[str], "int | None"]  # image (None: corrupt), captions, label


@dataclass
class Split:
    """The samples of one pass over one benchmark, in stored order; the first `limit` records count."""

    describe: str
    records: Callable[[], Iterator[Any]]
    decode: Callable[[Any], Decoded]
    limit: int | None
    classnames: list[str] | None = None
    templates: list[str] | None = None
    from_files: bool = False  # decoding costs real time, so loader processes help


def open_split(bench: BenchmarkConfig, split: str, cfg: Config, image_size: int,
               own: dict[str, ImageTextSet] | None = None) -> Split:
    """split: val, test or train (the probe's). own: the run's in-memory splits, for embedded run data."""
    source = bench.source
    if source == "path":
        spec = bench.train_path if split == "train" else bench.path
        return _files(spec, cfg, _limit(bench, split, cfg, bench.size), with_classes=split != "train")
    if source == "embedded":
        size = bench.size or EMBEDDED_SIZE
        train = (bench.train_size or cfg.eval.probe_train_size) if "linear_probe" in bench.tasks else 0
        data = _rendered(bench.embedded, bench.seed, image_size, cfg.data.captions_per_image, size + train)
        part = data.subset(slice(size, size + train)) if split == "train" else data.subset(slice(0, size))
        return _in_memory(part, bench.label, f"embedded {bench.embedded} (seed {bench.seed})",
                          _limit(bench, split, cfg, size))
    data_cfg = cfg.data
    if data_cfg.dataset in ("webdataset", "csv"):
        spec = {"train": data_cfg.train_data, "val": data_cfg.val_data, "test": data_cfg.test_data}[split]
        if spec is None:
            raise ConfigError(f"eval.benchmarks ({bench.name}): reads the run's own {split} split, but data.{split}_data "
                              f"is not set")
        n = {"train": bench.train_size or cfg.eval.probe_train_size, "val": data_cfg.num_val,
             "test": data_cfg.num_test}[split]
        return _files(spec, cfg, n, with_classes=split != "train")
    if own is None:
        from ito_sweeps.data.loader import build_splits

        own = build_splits(data_cfg)
    part = own[split]
    if split == "train":
        part = part.subset(slice(0, bench.train_size or cfg.eval.probe_train_size))
    return _in_memory(part, bench.label, f"the run's {data_cfg.dataset} {split} split", None)


def _limit(bench: BenchmarkConfig, split: str, cfg: Config, size: int | None) -> int | None:
    if split == "train":
        return bench.train_size or cfg.eval.probe_train_size
    if split == "val" and bench.val_size is not None:
        return bench.val_size if size is None else min(bench.val_size, size)
    return size


def _in_memory(data: ImageTextSet, label: str | None, describe: str, limit: int | None) -> Split:
    task = label or next(iter(data.labels), None)
    labels = data.labels[task].tolist() if task is not None else None

    def decode(i: int) -> Decoded:
        return to_pil_image(data.images[i]), data.captions[i], None if labels is None else labels[i]

    return Split(describe, lambda: iter(range(len(data))), decode, limit,
                 data.classnames.get(task), data.templates.get(task))


@functools.lru_cache(maxsize=4)
def _rendered(name: str, seed: int, image_size: int, captions_per_image: int, n: int) -> ImageTextSet:
    # validation passes read the same rendering again; the cache keeps the few small sets a suite names
    if name == "scenes":
        from ito_sweeps.data.scenes import make_scenes

        return make_scenes(n, seed, image_size, captions_per_image)
    from ito_sweeps.data.digits import load_digits_set

    return load_digits_set(seed, image_size, captions_per_image).subset(slice(0, n))


def _files(spec: str, cfg: Config, limit: int | None, with_classes: bool) -> Split:
    if spec.endswith(".csv"):
        from ito_sweeps.data.csv_pairs import CsvSource

        source: Any = CsvSource(spec, cfg.data)
    else:
        from ito_sweeps.data.shards import ShardSource

        source = ShardSource(spec, 1)
    classes = read_classes(spec) if with_classes else None

    def decode(record) -> Decoded:
        image = decode_image(record.image) if record.image is not None else None
        return image, record.captions, record.label

    return Split(source.describe(source.units), lambda: source.records(source.units), decode, limit,
                 *(classes or (None, None)), from_files=True)
