"""Endless training batches of (K views, K' captions) streamed from real data (webdataset or CSV).

A source (ShardSource, CsvSource) is a list of units (shards, or CSV rows) and a reader of records.
Each pass shuffles the units with a seed from (stream seed, pass), the same on every rank; rank r of W
takes units r, r + W, ... and its loader worker w of n every n-th of those, so each sample is read
exactly once per pass across all ranks and workers. Every worker then goes on to the next pass by
itself, so every rank yields a local batch at every step however unequal its shards: DDP never waits
on a rank that ran dry.

Each sample's image is decoded once, at full resolution, to uint8 (with data.decode=gpu a whole JPEG is
passed on still encoded, to be decoded with its batch on the GPU), and its views' parameters are drawn
(RandomResizedCrop semantics at data.image_size); the views are cut a batch at a time on the training
device (data/batch_augment.py). Its K' captions are distinct when it has at least K',
else its captions are cycled in a random order (reused). The A text-augmented captions are copies of
the first chosen caption, as in ViewsDataset; real data declares no synonyms, so synonym replacement
leaves words unchanged.

Unlike the in-memory sets, a stream's batches depend on the number of ranks and loader workers, and a
resumed run (start_step > 0) starts a fresh pass seeded from (run seed, start_step) instead of
replaying the stream up to that step, which would cost as long as the training it skips.
"""
from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Callable, Protocol

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ito_sweeps.config import DataConfig
from ito_sweeps.data.loader import Sample, collate, draw_views
from ito_sweeps.data.records import SKIP_REASONS, DataError, Record, decode_pixels, jpeg_size, skip_reason
from ito_sweeps.data.text_augment import augment_caption


class Source(Protocol):
    units: list

    def describe(self, units: list) -> str: ...

    def records(self, units: list, rng: random.Random | None = None) -> Iterator[Record]: ...


class SkipCounts:
    """Samples skipped per reason, cumulative, in shared memory with one row per loader process.

    Each DataLoader worker process writes only its own row (row 0 is the main process, when there are no
    workers), so no lock is needed and the training process reads the sum at any time.
    """

    def __init__(self, num_workers: int):
        self.table = torch.zeros(num_workers + 1, len(SKIP_REASONS), dtype=torch.int64).share_memory_()

    def add(self, reason: str) -> None:
        info = get_worker_info()
        self.table[0 if info is None else info.id + 1, SKIP_REASONS.index(reason)] += 1

    def totals(self) -> dict[str, int]:
        return dict(zip(SKIP_REASONS, self.table.sum(0).tolist()))


def stream_seed(run_seed: int, start_step: int) -> int:
    """The seed of a stream that starts at optimizer step start_step: a resumed run starts a fresh pass."""
    return hash((run_seed, start_step))


def pass_units(source: Source, seed: int, pass_index: int, rank: int, world_size: int, worker: int,
               workers: int) -> list:
    """The units one loader worker of one rank reads in one pass."""
    units = list(source.units)
    random.Random(hash((seed, pass_index))).shuffle(units)
    return units[rank::world_size][worker::workers]


class StreamViews(IterableDataset):
    """An endless stream of (image uint8, its K views' parameters, token ids (K' + A, L)), like ViewsDataset's."""

    def __init__(
        self, source: Source, tokenizer: Callable[[list[str]], torch.Tensor], views: int, captions: int,
        cfg: DataConfig, seed: int, skipped: SkipCounts, rank: int = 0, world_size: int = 1,
        augmented_captions: int = 0,
    ):
        self.source, self.tokenizer, self.skipped = source, tokenizer, skipped
        self.views, self.captions, self.augmented_captions = views, captions, augmented_captions
        self.cfg, self.seed, self.rank, self.world_size = cfg, seed, rank, world_size

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for pass_index in itertools.count():
            yield from self.one_pass(pass_index, worker, workers)

    def one_pass(self, pass_index: int, worker: int = 0, workers: int = 1) -> Iterator:
        """What one loader worker yields in one pass: its units' usable samples, shuffled."""
        units = pass_units(self.source, self.seed, pass_index, self.rank, self.world_size, worker, workers)
        seed = hash((self.seed, pass_index, self.rank, worker))
        mixing, g = random.Random(seed), torch.Generator().manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
        used = read = 0
        for record in self.source.records(units, mixing):
            read += 1
            sample = self._sample(record, g)
            if sample is not None:
                used += 1
                yield sample
        if not used:
            raise DataError(
                f"no usable sample in a pass over {self.source.describe(units)} ({read} read, all skipped; "
                f"skipped so far: {self.skipped.totals()}); check the data, e.g. decode a few images by hand"
            )

    def _sample(self, record: Record, g: torch.Generator) -> Sample | None:
        """The record's training sample, or None (counted) when it is skipped."""
        reason = skip_reason(record)
        shape = jpeg_size(record.image) if reason is None and self.cfg.decode == "gpu" else None
        if shape is not None:  # left encoded, for the training process to decode with the whole batch
            image = torch.frombuffer(bytearray(record.image), dtype=torch.uint8)
        else:
            image = decode_pixels(record.image) if reason is None else None
            shape = None if image is None else image.shape[-2:]
        if reason is None and image is None:
            reason = "corrupt_image"
        if reason is not None:
            self.skipped.add(reason)
            return None
        return self._views(record, image, shape, g)

    def _views(self, record: Record, image: torch.Tensor, shape: tuple[int, int], g: torch.Generator) -> Sample:
        params = draw_views(shape, self.views, g, self.cfg.augment)
        order = torch.randperm(len(record.captions), generator=g).tolist()
        chosen = [record.captions[order[k % len(order)]] for k in range(self.captions)]
        augmented = [augment_caption(chosen[0], g, self.cfg.text_augment, {}) for _ in range(self.augmented_captions)]
        return image, params, self.tokenizer(chosen + augmented)


def loader_workers(source: Source, num_workers: int, world_size: int) -> int:
    """Loader workers beyond a rank's share of units would read nothing: cap them."""
    return max(0, min(num_workers, len(source.units) // world_size))


def stream_batches(dataset: StreamViews, local_batch: int, num_workers: int, pin_memory: bool) -> Iterator[Sample]:
    """Endless local batches; the dataset never ends, so neither does this."""
    return iter(DataLoader(dataset, batch_size=local_batch, num_workers=num_workers, pin_memory=pin_memory,
                           collate_fn=collate))
