"""Evaluate the deployed dual encoder on a suite of named benchmarks: one flat dict BENCHMARK/METRIC -> float.

Streaming and data-parallel: every rank embeds its share of each benchmark (sample i of the stored order goes
to rank i mod W), in batches of eval.batch_size, so memory holds features, never a data set's images; rank 0
gathers the features, puts them back in stored order and computes the metrics, which therefore do not
depend on the number of ranks. Images go through the model's own eval transform (open_clip's Resize,
CenterCrop, Normalize: what CLIP_benchmark feeds the exported model). Only the dual encoder is used; the
fusion module and separation heads never see evaluation data.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.transforms import Compose, ToTensor
from torchvision.transforms.functional import pil_to_tensor

from ito_sweeps.config import BenchmarkConfig, Config
from ito_sweeps.data.imageset import ImageTextSet
from ito_sweeps.data.records import DataError
from ito_sweeps.evaluate.geometry import geometry_metrics
from ito_sweeps.evaluate.probe import linear_probe_top1
from ito_sweeps.evaluate.retrieval import retrieval_metrics
from ito_sweeps.data.benchmarks import Split, open_split
from ito_sweeps.evaluate.zeroshot import class_embeddings, zeroshot_metrics


class Encoder:
    """An open_clip CLIP's `encode_image` / `encode_text`, batched and gradient-free, with its tokenizer and
    eval transform (PIL image -> normalised tensor).

    The transform runs in two parts that together compute exactly what it computes: per sample up to its
    ToTensor (decoded, resized, cropped: `pixels` gives uint8), and on the device for a whole batch from
    there (ToTensor's float / 255, then Normalize). Samples in flight hold a quarter of the memory, and
    the loader hands the main process bytes, not floats.
    """

    def __init__(self, clip, tokenizer: Callable, preprocess: Callable, device: torch.device, batch_size: int,
                 autocast: Callable[[], object]):
        self.clip, self.tokenizer = clip, tokenizer
        self.device, self.batch_size, self.autocast = device, batch_size, autocast
        steps = list(getattr(preprocess, "transforms", [preprocess]))
        cut = next((i for i, step in enumerate(steps) if isinstance(step, ToTensor)), None)
        if cut is None:  # not a torchvision pipeline with a ToTensor: run it whole, per sample
            self.pixels, self._on_device = preprocess, []
        else:
            self.pixels = lambda image: pil_to_tensor(Compose(steps[:cut])(image))
            self._on_device = steps[cut + 1:]

    @torch.no_grad()
    def images(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: a batch of what `pixels` returns, stacked."""
        x = pixels.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div(255)  # what ToTensor does to a uint8 image
        for step in self._on_device:
            x = step(x)
        with self.autocast():
            return self.clip.encode_image(x).float().cpu()

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), self.batch_size):
            with self.autocast():
                tokens = self.tokenizer(texts[start : start + self.batch_size]).to(self.device)
                out.append(self.clip.encode_text(tokens).float().cpu())
        return torch.cat(out) if out else torch.empty(0)


@dataclass
class Features:
    """One benchmark split's embeddings in stored order (rows of skipped samples are absent)."""

    image: torch.Tensor  # (N, D)
    labels: torch.Tensor | None  # (N,)
    text: torch.Tensor | None  # (M, D), every caption of every image
    text_to_image: torch.Tensor | None  # (M,) row of `image` each caption belongs to
    first_captions: list[str]
    skipped: int


class _RankShare(IterableDataset):
    """This rank's samples of a split, each loader worker decoding every n-th of them."""

    def __init__(self, split: Split, pixels: Callable, rank: int, world: int, captions: bool, labels: bool):
        self.split, self.pixels, self.rank, self.world = split, pixels, rank, world
        self.captions, self.labels = captions, labels

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for i, record in enumerate(self.split.records()):
            if self.split.limit is not None and i >= self.split.limit:
                return
            if i % self.world != self.rank or (i // self.world) % workers != worker:
                continue  # another rank's or worker's sample: never decoded here
            image, captions, label = self.split.decode(record)
            usable = image is not None and (captions or not self.captions) and (label is not None or not self.labels)
            yield (i, self.pixels(image), captions, label) if usable else (i, None, [], None)


def _collate(batch):
    return batch  # samples of mixed kinds (skipped ones have no image): embed_split stacks the usable ones


def embed_split(encoder: Encoder, split: Split, rank: int, world: int, *, captions: bool, labels: bool,
                workers: int = 0) -> Features | None:
    """Every rank embeds its share; rank 0 returns the gathered Features, the other ranks None."""
    share = _RankShare(split, encoder.pixels, rank, world, captions, labels)
    # in-memory sets are already decoded: loader processes would only add their start-up time
    loader = DataLoader(share, batch_size=encoder.batch_size, num_workers=workers if split.from_files else 0,
                        collate_fn=_collate)
    index, image, label, text, text_index, first, skipped = [], [], [], [], [], [], 0
    for batch in loader:
        kept = [sample for sample in batch if sample[1] is not None]
        skipped += len(batch) - len(kept)
        index += [sample[0] for sample in kept]
        if kept:
            image.append(encoder.images(torch.stack([sample[1] for sample in kept])))
        label += [sample[3] for sample in kept]
        first += [sample[2][0] if sample[2] else "" for sample in kept]
        if captions and kept:
            text.append(encoder.texts([c for sample in kept for c in sample[2]]))
            text_index += [sample[0] for sample in kept for _ in sample[2]]
        # the loader builds the next batch while these names still hold this one's pixels: freed now, peak
        # memory is one batch lower (benchmarks/eval_memory.py)
        del batch, kept
    mine = (index, image, label, text, text_index, first, skipped)
    if world > 1:
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        if rank != 0:
            return None
    else:
        gathered = [mine]
    return _in_stored_order(gathered, split.describe, captions, labels)


def _in_stored_order(parts: list, describe: str, captions: bool, labels: bool) -> Features:
    index = [i for part in parts for i in part[0]]
    skipped = sum(part[6] for part in parts)
    if not index:
        raise DataError(f"{describe}: no usable sample ({skipped} skipped: corrupt images"
                        + (", no caption" if captions else "") + (", no label" if labels else "") + ")")
    order = torch.tensor(index).argsort()
    row_of = {i: row for row, i in enumerate(sorted(index))}
    image = torch.cat([t for part in parts for t in part[1]])[order]
    label = [x for part in parts for x in part[2]]
    first = [x for part in parts for x in part[5]]
    text = text_to_image = None
    if captions:
        text_index = torch.tensor([row_of[i] for part in parts for i in part[4]])
        text_order = text_index.argsort(stable=True)  # a rank's captions of one image stay in their order
        text = torch.cat([t for part in parts for t in part[3]])[text_order]
        text_to_image = text_index[text_order]
    return Features(image, torch.tensor(label)[order] if labels else None, text, text_to_image,
                    [first[i] for i in order.tolist()], skipped)


def evaluate_suite(encoder: Encoder, cfg: Config, split: str, rank: int = 0, world: int = 1,
                   own: dict[str, ImageTextSet] | None = None, workers: int = 0,
                   keep_sample: int = 0) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
    """Metrics of every benchmark evaluated at `split` (val or test), on rank 0 ({} on the others), and the
    first `keep_sample` pairs of the first retrieval benchmark (what analysis draws gap plots from)."""
    was_training = encoder.clip.training
    encoder.clip.eval()
    metrics: dict[str, float] = {}
    sample = None
    try:
        for bench in cfg.eval.benchmarks or ():
            if not bench.evaluated_at(split, cfg.eval.every):
                continue
            found, features, classnames = _evaluate_one(encoder, bench, cfg, split, rank, world, own, workers)
            metrics.update({f"{bench.name}/{k}": v for k, v in found.items()})
            if keep_sample and sample is None and features is not None and features.text is not None:
                sample = _sample(features, keep_sample, classnames)
        zeroshot = [v for k, v in metrics.items() if k.endswith("/zeroshot_top1")]
        if zeroshot:
            metrics["zeroshot_avg"] = float(np.mean(zeroshot))
        return metrics, sample
    finally:
        encoder.clip.train(was_training)


def _evaluate_one(encoder: Encoder, bench: BenchmarkConfig, cfg: Config, split: str, rank: int, world: int,
                  own, workers: int) -> tuple[dict[str, float], Features | None, list[str] | None]:
    tasks = bench.tasks_at(split)
    classify, retrieve, probe = (task in tasks for task in ("zeroshot_classification", "zeroshot_retrieval",
                                                             "linear_probe"))
    data = open_split(bench, split, cfg, encoder_image_size(encoder), own)
    features = embed_split(encoder, data, rank, world, captions=retrieve, labels=classify or probe,
                           workers=workers)
    train = None
    if probe:
        train = embed_split(encoder, open_split(bench, "train", cfg, encoder_image_size(encoder), own), rank, world,
                            captions=False, labels=True, workers=workers)
    if features is None:  # not rank 0
        return {}, None, None
    metrics: dict[str, float] = {"samples": float(len(features.image))}
    if classify:
        if data.classnames is None:
            raise DataError(f"{data.describe}: no class names and templates to classify with")
        classes = class_embeddings(encoder.clip, encoder.tokenizer, data.classnames, data.templates, encoder.device)
        metrics.update(zeroshot_metrics(features.image, classes, features.labels))
    if retrieve:
        metrics.update(retrieval_metrics(features.image, features.text, features.text_to_image))
        first = torch.searchsorted(features.text_to_image, torch.arange(len(features.image)))
        metrics.update(geometry_metrics(features.image, features.text[first]))
    if probe:
        metrics["probe_top1"] = linear_probe_top1(train.image, train.labels, features.image, features.labels,
                                                  C=cfg.eval.probe_c, max_iter=1000, seed=cfg.run.seed)
    return metrics, features, data.classnames if classify else None


def encoder_image_size(encoder: Encoder) -> int:
    size = encoder.clip.visual.image_size
    return size[0] if isinstance(size, (tuple, list)) else int(size)


def _sample(features: Features, n: int, classnames: list[str] | None) -> dict[str, np.ndarray]:
    first = torch.searchsorted(features.text_to_image, torch.arange(min(n, len(features.image))))
    sample = {
        "image": F.normalize(features.image[: len(first)], dim=-1).numpy(),
        "text": F.normalize(features.text[first], dim=-1).numpy(),
        "caption": np.asarray(features.first_captions[: len(first)]),
    }
    if classnames is not None:  # to colour plots by class
        sample.update(label=features.labels[: len(first)].numpy(), classnames=np.asarray(classnames))
    return sample
