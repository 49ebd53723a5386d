"""From a DataConfig to train/val/test splits and to batches of (K views, K' captions) for training.

A training sample leaves the loader as (its image once, uint8; its K views' parameter rows; its token ids):
the views themselves are cut a batch at a time on the training device (data/batch_augment.py). Every
random choice of a training sample (its crops, jitter, which captions) is drawn from a generator
seeded by (run seed, epoch, sample index). Batches therefore do not depend on the number of loader
workers or data-parallel ranks, and a run resumed from a checkpoint sees exactly the batches it would
have seen, so seeded runs repeat exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ito_sweeps.config import AugmentConfig, ConfigError, DataConfig
from ito_sweeps.data.augment import draw_view
from ito_sweeps.data.batch_augment import pad_stack
from ito_sweeps.data.imageset import ImageTextSet
from ito_sweeps.data.text_augment import augment_caption
from ito_sweeps.eval_config import DIGITS_TOTAL

# (pixels uint8 (3, H, W), view parameters float64 (K, VIEW_PARAMS), token ids (K' + A, L)); batched, each
# gains a leading batch dimension. With data.decode=gpu a JPEG's pixels are its encoded bytes (1-D uint8).
Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def build_splits(cfg: DataConfig) -> dict[str, ImageTextSet]:
    sizes = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}
    total = sum(sizes.values())
    if cfg.dataset == "scenes":
        from ito_sweeps.data.scenes import make_scenes

        data = make_scenes(total, cfg.seed, cfg.image_size, cfg.captions_per_image)
    else:
        from ito_sweeps.data.digits import load_digits_set

        if total > DIGITS_TOTAL:
            raise ConfigError(
                f"data.num_train + num_val + num_test = {total} exceeds the {DIGITS_TOTAL} digits images; "
                f"e.g. data.num_train=1297 data.num_val=100 data.num_test=400"
            )
        data = load_digits_set(cfg.seed, cfg.image_size, cfg.captions_per_image)
    splits, start = {}, 0
    for name, n in sizes.items():
        splits[name] = data.subset(slice(start, start + n))
        start += n
    return splits


def draw_views(shape: tuple[int, int], count: int, generator: torch.Generator, augment: AugmentConfig
               ) -> torch.Tensor:
    """The parameter rows (count, VIEW_PARAMS) of `count` random views of an image of shape (height, width)."""
    rows = [draw_view(*shape, generator, **vars(augment)) for _ in range(count)]
    return torch.tensor(rows, dtype=torch.float64)


def collate(samples: list[Sample]) -> Sample:
    """Samples -> a batch. Images of different sizes are zero-padded to the largest (no crop reaches the
    padding, so no view sees it); with still-encoded JPEGs among them (data.decode=gpu), pixels stay a list
    for the training process to decode (batch_augment.device_pixels)."""
    pixels, params, tokens = zip(*samples)
    if any(p.dim() == 1 for p in pixels):
        return list(pixels), default_collate(params), default_collate(tokens)
    if len({p.shape for p in pixels}) > 1:
        return pad_stack(list(pixels)), default_collate(params), default_collate(tokens)
    return default_collate(samples)


def tokenize_captions(data: ImageTextSet, tokenizer: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
    """All captions as token ids (N, C, L); each distinct caption is tokenised once."""
    unique = sorted({c for caps in data.captions for c in caps})
    ids = tokenizer(unique)
    row = {c: i for i, c in enumerate(unique)}
    index = torch.tensor([[row[c] for c in caps] for caps in data.captions])
    return ids[index]


class ViewsDataset(Dataset):
    """Sample (epoch, i) -> (image i, the parameters of its K views, token ids (K' + A, L)).

    The token ids are K' distinct captions, then A text-augmented copies of the first of them (the
    in-modal text positives of latent_structure), augmented afresh at every draw.
    """

    def __init__(
        self, data: ImageTextSet, tokenizer: Callable[[list[str]], torch.Tensor], views: int, captions: int,
        cfg: DataConfig, seed: int, augmented_captions: int = 0,
    ):
        if captions > data.captions_per_image:
            raise ConfigError(
                f"objective.num_captions: {captions} captions per sample but the data set has "
                f"{data.captions_per_image} per image (data.captions_per_image)"
            )
        self.data, self.tokenizer = data, tokenizer
        self.tokens = tokenize_captions(data, tokenizer)
        self.views, self.captions, self.augmented_captions = views, captions, augmented_captions
        self.augment, self.text_augment, self.seed = cfg.augment, cfg.text_augment, seed

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        epoch, i = key
        g = torch.Generator().manual_seed(hash((self.seed, epoch, i)) & 0x7FFF_FFFF_FFFF_FFFF)
        image = self.data.images[i]
        params = draw_views(image.shape[-2:], self.views, g, self.augment)
        chosen = torch.randperm(self.tokens.shape[1], generator=g)[: self.captions]
        tokens = self.tokens[i, chosen]
        if self.augmented_captions:
            first = self.data.captions[i][int(chosen[0])]
            augmented = [augment_caption(first, g, self.text_augment, self.data.synonyms)
                         for _ in range(self.augmented_captions)]
            tokens = torch.cat([tokens, self.tokenizer(augmented)])
        return image, params, tokens


@dataclass
class BatchPlan:
    """Which samples form each global batch; rank r of W takes the r-th slice of every global batch.

    The global batch must split evenly over the ranks; open_data checks that for every data source.
    """

    num_samples: int
    global_batch: int
    seed: int
    rank: int = 0
    world_size: int = 1

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def local_indices(self, epoch: int, first_step: int = 0) -> list[tuple[int, int]]:
        order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + 7919 * epoch))
        batches = order[: self.steps_per_epoch * self.global_batch].view(self.steps_per_epoch, self.world_size, -1)
        mine = batches[first_step:, self.rank].flatten().tolist()
        return [(epoch, i) for i in mine]


def train_batches(
    dataset: ViewsDataset, plan: BatchPlan, start_step: int, num_workers: int, pin_memory: bool
) -> Iterator[Sample]:
    """Endless local batches from optimizer step `start_step` on, epoch after epoch."""
    epoch, offset = divmod(start_step, plan.steps_per_epoch)
    while True:
        loader = DataLoader(
            dataset,
            batch_size=plan.local_batch,
            sampler=plan.local_indices(epoch, offset),
            num_workers=num_workers,
            pin_memory=pin_memory,
            drop_last=True,
            collate_fn=collate,
        )
        yield from loader
        epoch, offset = epoch + 1, 0
