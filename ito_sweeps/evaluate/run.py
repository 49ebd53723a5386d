"""Evaluate the deployed dual encoder (fusion discarded) on a held-out split: one flat dict of floats."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ito_sweeps.config import EvalConfig
from ito_sweeps.data.imageset import ImageTextSet
from ito_sweeps.data.loader import normalize
from ito_sweeps.evaluate.geometry import geometry_metrics
from ito_sweeps.evaluate.probe import linear_probe_top1
from ito_sweeps.evaluate.retrieval import retrieval_metrics
from ito_sweeps.evaluate.zeroshot import class_embeddings, zeroshot_top1


class Embedder:
    """Batched, gradient-free access to a model's deployed `encode_image` / `encode_text`."""

    def __init__(self, model, tokenizer: Callable[[list[str]], torch.Tensor], device: torch.device, batch_size: int,
                 autocast: Callable[[], object]):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.batch_size, self.autocast = batch_size, autocast

    @torch.no_grad()
    def _batched(self, encode, rows: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, rows.shape[0], self.batch_size):
            with self.autocast():
                out.append(encode(rows[start : start + self.batch_size].to(self.device)).float().cpu())
        return torch.cat(out)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        return self._batched(lambda x: self.model.encode_image(normalize(x)), images)

    def texts(self, texts: list[str]) -> torch.Tensor:
        return self._batched(self.model.encode_text, self.tokenizer(texts))


def evaluate(embed: Embedder, split: ImageTextSet, probe_train: ImageTextSet, cfg: EvalConfig, seed: int) -> dict[str, float]:
    was_training = embed.model.training
    embed.model.eval()
    try:
        image = embed.images(split.images)
        per_image = split.captions_per_image
        text = embed.texts([c for caps in split.captions for c in caps])
        text_to_image = torch.arange(len(split)).repeat_interleave(per_image)

        metrics: dict[str, float] = {}
        for n, task in enumerate(split.labels):
            with embed.autocast():
                classes = class_embeddings(embed.model.clip, embed.tokenizer, split.classnames[task],
                                           split.templates[task], embed.device)
            # the first task is the headline number every table reports
            key = "zeroshot_top1" if n == 0 else f"zeroshot_top1/{task}"
            metrics[key] = zeroshot_top1(image, classes, split.labels[task])
        metrics.update(retrieval_metrics(image, text, text_to_image))
        # real data may have no classes (then no zero-shot above), or none in its training split
        first_task = next(iter(split.labels), None)
        if first_task is not None and first_task in probe_train.labels:
            metrics["probe_top1"] = linear_probe_top1(
                embed.images(probe_train.images), probe_train.labels[first_task], image, split.labels[first_task],
                C=cfg.probe_c, max_iter=1000, seed=seed,
            )
        metrics.update(geometry_metrics(image, text[::per_image]))  # each image with its first caption
        return metrics
    finally:
        embed.model.train(was_training)


def embedding_sample(embed: Embedder, split: ImageTextSet, n: int) -> dict[str, np.ndarray]:
    """The first n held-out pairs (each image with its first caption), L2-normalised as the deployed model
    compares them: what the analysis package draws modality-gap plots from."""
    part = split.subset(slice(0, n))
    was_training = embed.model.training
    embed.model.eval()
    try:
        sample = {
            "image": F.normalize(embed.images(part.images), dim=-1).numpy(),
            "text": F.normalize(embed.texts([caps[0] for caps in part.captions]), dim=-1).numpy(),
            "caption": np.asarray([caps[0] for caps in part.captions]),
        }
        task = next(iter(part.labels), None)
        if task is not None:  # unlabelled real data has no classes to colour plots by
            sample.update(label=np.asarray(part.labels[task]), classnames=np.asarray(part.classnames[task]))
        return sample
    finally:
        embed.model.train(was_training)
