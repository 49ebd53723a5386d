"""`ito-sweeps make-shards`: the embedded benchmark written out as real data files.

OUT/{train,val,test}/000000.tar, ... in img2dataset's webdataset layout: per sample key.png (or .jpg),
key.txt (its first caption), key.json ({"captions": [all of them], "label": class of the first
zero-shot task}) and key.cls (that class, as CLIP_benchmark reads it); OUT/classnames.txt and
OUT/zeroshot_classification_templates.txt hold that task's classes and prompts in CLIP_benchmark's form
(`{c}` for the class). With a CLIP_benchmark name, the test split is also written in the layout that
`clip_benchmark eval --dataset wds/NAME --dataset_root OUT/wds_NAME` reads: test/0.tar, ... (numbered
from 0, no padding), test/nshards.txt and the two text files. With csv, each split is also written in
open_clip's CSV format: OUT/csv/{split}.csv (data.csv_* columns and separators) next to
OUT/csv/images/.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from webdataset import ShardWriter

from ito_sweeps.config import Config, ConfigError
from ito_sweeps.data.heldout import CLASSNAMES_FILE, TEMPLATES_FILE
from ito_sweeps.data.imageset import ImageTextSet
from ito_sweeps.data.loader import build_splits

ImageFormat = Literal["png", "jpg"]
JPEG_QUALITY = 95  # img2dataset's default


def make_shards(cfg: Config, out: Path, shard_size: int = 1000, image_format: ImageFormat = "png",
                clip_benchmark: str | None = None, write_csv: bool = False) -> list[str]:
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
    done.append(_write_classes(splits["test"], task, out))
    if clip_benchmark:
        folder = out / f"wds_{clip_benchmark}"
        shards = write_webdataset(splits["test"], task, folder / "test", "%d.tar", shard_size, "png")
        (folder / "test" / "nshards.txt").write_text(f"{len(shards)}\n")
        _write_classes(splits["test"], task, folder)
        done.append(f"CLIP_benchmark test split: {len(splits['test'])} samples in {len(shards)} shard(s) {folder}/ "
                    f"(clip_benchmark eval --dataset wds/{clip_benchmark} --dataset_root {folder} --num_workers "
                    f"{min(len(shards), 4)} --model local-dir:EXPORTED)")
    if write_csv:
        for name, data in splits.items():
            table = write_csv_split(data, out / "csv", name, cfg, image_format)
            done.append(f"{name}: {len(data)} rows {table}")
    return done


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
    buffer = io.BytesIO()
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    if image_format == "png":
        pil.save(buffer, format="PNG")
    else:
        pil.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _write_classes(data: ImageTextSet, task: str, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CLASSNAMES_FILE).write_text("".join(f"{name}\n" for name in data.classnames[task]))
    # CLIP_benchmark fills prompts with template.format(c=classname)
    (folder / TEMPLATES_FILE).write_text("".join(f"{t.replace('{}', '{c}')}\n" for t in data.templates[task]))
    return f"classes: {len(data.classnames[task])} names and {len(data.templates[task])} templates of task " \
           f"{task!r} in {folder}/{{{CLASSNAMES_FILE},{TEMPLATES_FILE}}}"
