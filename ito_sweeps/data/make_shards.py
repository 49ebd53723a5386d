"""`ito-sweeps make-shards`: the embedded benchmark written out as real data files.

OUT/{train,val,test}/000000.tar, ... in img2dataset's webdataset layout: per sample key.png (or .jpg),
key.txt (its first caption), key.json ({"captions": [all of them], "label": class of the first
zero-shot task}) and key.cls (that class, as CLIP_benchmark reads it); OUT/classnames.txt and
OUT/zeroshot_classification_templates.txt hold that task's classes and prompts in CLIP_benchmark's form
(`{c}` for the class). With csv, each split is also written in open_clip's CSV format: OUT/csv/{split}.csv
(data.csv_* columns and separators) next to OUT/csv/images/.

With clip_benchmark, every benchmark of the config's evaluation suite (eval.benchmarks: the data set's
default suite unless the config names one) is written in CLIP_benchmark's layout under OUT/clip_benchmark/,
from exactly the samples the in-memory suite evaluates (data.benchmarks.open_split), as lossless PNG:
- wds_NAME/test/0.tar, 1.tar, ... (numbered from 0, unpadded) with test/nshards.txt; train/ likewise when
  NAME has a linear probe (the samples that fit it); classnames.txt and
  zeroshot_classification_templates.txt when it classifies. Each sample holds key.png, key.cls (its class)
  when a task needs labels, and key.txt (all its captions, one per line) when NAME retrieves.
- wds_NAME_retrieval/: when NAME retrieves, a copy of wds_NAME/test plus dataset_type.txt `retrieval` (a
  copy, not a link: the folder stays whole when uploaded or synced).
- suite.yaml: eval.benchmarks with the same names and tasks, each reading its wds_NAME folder (absolute
  paths; brace patterns {0..N-1}.tar, so shards are read in written order, not a directory's name order;
  train_size = the probe samples written), so `ito-sweeps evaluate --suite OUT/clip_benchmark/suite.yaml`
  gives the in-memory suite's numbers; embedded sets are rendered at data.image_size, as the suite renders
  them for a model of that size. A benchmark that already reads files (path) is kept as it is.
Why one folder serves every task, plus a retrieval copy: ito-sweeps reads labels and captions of the same
samples from one path, so a benchmark that classifies, retrieves and probes is one suite entry; LAION's
CLIP_benchmark reads a folder as a single task type, classification unless dataset_type.txt says
retrieval, so its retrieval run gets its own typed folder: `clip_benchmark eval --dataset wds/NAME
--dataset_root OUT/clip_benchmark/wds_NAME` and `--dataset wds/NAME_retrieval --task zeroshot_retrieval
--dataset_root OUT/clip_benchmark/wds_NAME_retrieval`.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import shutil
from pathlib import Path
from typing import Literal

import torch
import yaml
from PIL import Image
from webdataset import ShardWriter

from ito_sweeps.config import Config, ConfigError
from ito_sweeps.data.imageset import ImageTextSet
from ito_sweeps.data.loader import build_splits
from ito_sweeps.data.paths import CLASSNAMES_FILE, TEMPLATES_FILE
from ito_sweeps.data.benchmarks import Split, open_split
from ito_sweeps.typed_tree import plain

ImageFormat = Literal["png", "jpg"]
JPEG_QUALITY = 95  # img2dataset's default
CLIP_BENCHMARK_DIR, SUITE_FILE = "clip_benchmark", "suite.yaml"


def make_shards(cfg: Config, out: Path, shard_size: int = 1000, image_format: ImageFormat = "png",
                clip_benchmark: bool = False, write_csv: bool = False) -> list[str]:
    """Write the files; returns one line per thing written (count and path), for the user."""
    if cfg.data.dataset not in ("scenes", "digits"):
        raise ConfigError(f"data.dataset: make-shards renders the embedded benchmark (scenes or digits), "
                          f"not {cfg.data.dataset}")
    if shard_size < 1:
        raise ConfigError(f"--shard-size: {shard_size} must be at least 1")
    splits = build_splits(cfg.data)
    task = next(iter(splits["test"].labels))
    done = []
    for name, data in splits.items():
        shards = write_webdataset(data, task, out / name, "%06d.tar", shard_size, image_format)
        done.append(f"{name}: {len(data)} samples in {len(shards)} shard(s) {out / name}/")
    test = splits["test"]
    done.append(_write_classes(test.classnames[task], test.templates[task], out)
                + f" (task {task!r} in {out}/)")
    if clip_benchmark:
        done += write_clip_benchmark(cfg, out / CLIP_BENCHMARK_DIR, shard_size, splits)
    if write_csv:
        for name, data in splits.items():
            table = write_csv_split(data, out / "csv", name, cfg, image_format)
            done.append(f"{name}: {len(data)} rows {table}")
    return done


def write_clip_benchmark(cfg: Config, folder: Path, shard_size: int, own: dict[str, ImageTextSet]) -> list[str]:
    """Every benchmark of cfg's suite in CLIP_benchmark's layout, and suite.yaml reading them."""
    folder = folder.resolve()  # suite.yaml then works from any working directory
    entries, done = [], []
    for bench in cfg.eval.benchmarks or ():
        if bench.source == "path":  # already files: the suite reads them where they are
            entries.append({k: v for k, v in plain(dataclasses.asdict(bench)).items() if v is not None})
            continue
        classify, probe = "zeroshot_classification" in bench.tasks, "linear_probe" in bench.tasks
        retrieve = "zeroshot_retrieval" in bench.tasks
        root = folder / f"wds_{bench.name}"
        test = open_split(bench, "test", cfg, cfg.data.image_size, own)
        entry = {"name": bench.name, "tasks": list(bench.tasks)}
        entry["path"], n = _write_split(test, root / "test", shard_size, classify or probe, retrieve)
        line = f"CLIP_benchmark {bench.name}: {n} test samples"
        if classify:
            _write_classes(test.classnames, test.templates, root)
        if probe:
            train = open_split(bench, "train", cfg, cfg.data.image_size, own)
            # train_size pins the probe to these samples, whatever eval.probe_train_size evaluates them
            entry["train_path"], entry["train_size"] = _write_split(train, root / "train", shard_size, True, False)
            line += f", {entry['train_size']} train samples"
        done.append(f"{line} in {root}/")
        if retrieve:
            typed = folder / f"wds_{bench.name}_retrieval"
            shutil.copytree(root / "test", typed / "test", dirs_exist_ok=True)
            (typed / "dataset_type.txt").write_text("retrieval\n")
            done.append(f"CLIP_benchmark {bench.name} retrieval: its test split, typed retrieval, in {typed}/")
        entries.append(entry)
    suite = folder / SUITE_FILE
    suite.write_text(yaml.safe_dump({"eval": {"probe_c": cfg.eval.probe_c, "benchmarks": entries}}, sort_keys=False))
    done.append(f"suite: {suite} (ito-sweeps evaluate --model EXPORTED --suite {suite})")
    return done


def _write_split(split: Split, folder: Path, shard_size: int, labels: bool, captions: bool) -> tuple[str, int]:
    """The split's samples as CLIP_benchmark's numbered shards: the brace pattern reading them, and their count."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    count = 0
    with ShardWriter(str(folder / "%d.tar"), maxcount=shard_size, verbose=0, encoder=False,
                     post=written.append) as sink:
        for record in itertools.islice(split.records(), split.limit):
            image, texts, label = split.decode(record)
            sample = {"__key__": f"{count:09d}", "png": encode_pil(image, "png")}
            if labels:
                sample["cls"] = str(label).encode()
            if captions:
                sample["txt"] = "\n".join(texts).encode()
            sink.write(sample)
            count += 1
    (folder / "nshards.txt").write_text(f"{len(written)}\n")
    return str(folder / f"{{0..{len(written) - 1}}}.tar"), count


def write_webdataset(data: ImageTextSet, task: str, folder: Path, pattern: str, shard_size: int,
                     image_format: ImageFormat) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    with ShardWriter(str(folder / pattern), maxcount=shard_size, verbose=0, encoder=False, post=written.append) as sink:
        for i in range(len(data)):
            label = int(data.labels[task][i])
            sink.write({
                "__key__": f"{i:09d}",
                image_format: encode_image(data.images[i], image_format),
                "txt": data.captions[i][0].encode(),
                "json": json.dumps({"captions": data.captions[i], "label": label}).encode(),
                "cls": str(label).encode(),
            })
    return written


def write_csv_split(data: ImageTextSet, folder: Path, name: str, cfg: Config, image_format: ImageFormat) -> Path:
    c = cfg.data
    (folder / "images").mkdir(parents=True, exist_ok=True)
    table = folder / f"{name}.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f, delimiter=c.csv_separator)
        writer.writerow([c.csv_image_key, c.csv_caption_key])
        for i in range(len(data)):
            image = Path("images") / f"{name}_{i:09d}.{image_format}"
            (folder / image).write_bytes(encode_image(data.images[i], image_format))
            captions = c.csv_caption_separator.join(data.captions[i]) if c.csv_caption_separator else data.captions[i][0]
            writer.writerow([str(image), captions])
    return table


def encode_image(image: torch.Tensor, image_format: ImageFormat) -> bytes:
    """uint8 (3, H, W) -> PNG (lossless) or JPEG bytes."""
    return encode_pil(Image.fromarray(image.permute(1, 2, 0).numpy()), image_format)


def encode_pil(image: Image.Image, image_format: ImageFormat) -> bytes:
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _write_classes(classnames: list[str], templates: list[str], folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CLASSNAMES_FILE).write_text("".join(f"{name}\n" for name in classnames))
    # CLIP_benchmark fills prompts with template.format(c=classname)
    (folder / TEMPLATES_FILE).write_text("".join(f"{t.replace('{}', '{c}')}\n" for t in templates))
    return f"classes: {len(classnames)} names and {len(templates)} templates in {{{CLASSNAMES_FILE},{TEMPLATES_FILE}}}"
