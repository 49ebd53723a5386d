"""What the training loop needs from any data source, embedded or streamed, behind one interface.

`open_data` checks the data paths first (before the loop builds a model), then gives endless local
training batches from any optimizer step on, plus the samples a stream has skipped so far (nothing for the
embedded sets, which cannot have bad samples). Evaluation streams its benchmarks itself
(data/benchmarks.py); an embedded set lends it the splits already rendered (`own`).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Callable

import torch

from ito_sweeps.config import Config, check_batch_split
from ito_sweeps.data.imageset import ImageTextSet
from ito_sweeps.data.loader import BatchPlan, Sample, ViewsDataset, build_splits, train_batches
from ito_sweeps.data.paths import check_benchmark_paths, check_data_paths

Batches = Iterator[Sample]  # (pixels, view parameters, token ids) per local batch: see data/loader.py


class TrainData:
    own: dict[str, ImageTextSet] | None = None  # an embedded set's rendered train, val and test splits

    def batches(self, start_step: int) -> Batches:
        """Endless local batches (global batch / world size) from optimizer step start_step on."""
        raise NotImplementedError

    def skipped(self) -> dict[str, int]:
        """Samples skipped so far on this rank, by reason; empty for data that cannot have bad samples."""
        return {}


def open_data(cfg: Config, tokenizer: Callable[[list[str]], torch.Tensor], needs, rank: int = 0,
              world_size: int = 1, pin_memory: bool = False) -> TrainData:
    """needs: the objective's inputs (views, captions, augmented_captions per sample)."""
    check_data_paths(cfg.data, world_size)
    check_benchmark_paths(cfg)  # evaluation reads its files only at the first validation pass
    check_batch_split(cfg.data.batch_size, world_size)
    kind = _Streamed if cfg.data.dataset in ("webdataset", "csv") else _InMemory
    return kind(cfg, tokenizer, needs, rank, world_size, pin_memory)


class _InMemory(TrainData):
    def __init__(self, cfg, tokenizer, needs, rank, world_size, pin_memory):
        splits = build_splits(cfg.data)
        self.own = splits
        self.dataset = ViewsDataset(splits["train"], tokenizer, needs.views, needs.captions, cfg.data, cfg.run.seed,
                                    augmented_captions=needs.augmented_captions)
        self.plan = BatchPlan(len(self.dataset), cfg.data.batch_size, cfg.run.seed, rank, world_size)
        self.num_workers, self.pin_memory = cfg.data.num_workers, pin_memory

    def batches(self, start_step: int) -> Batches:
        return train_batches(self.dataset, self.plan, start_step, self.num_workers, self.pin_memory)


class _Streamed(TrainData):
    def __init__(self, cfg, tokenizer, needs, rank, world_size, pin_memory):
        from ito_sweeps.data.stream import SkipCounts, loader_workers

        self.cfg, self.tokenizer, self.needs = cfg, tokenizer, needs
        self.rank, self.world_size, self.pin_memory = rank, world_size, pin_memory
        self.source = _source(cfg, cfg.data.train_data)
        self.num_workers = loader_workers(self.source, cfg.data.num_workers, world_size)
        self._skipped = SkipCounts(self.num_workers)

    def batches(self, start_step: int) -> Batches:
        from ito_sweeps.data.stream import StreamViews, stream_batches, stream_seed

        dataset = StreamViews(
            self.source, self.tokenizer, self.needs.views, self.needs.captions, self.cfg.data,
            seed=stream_seed(self.cfg.run.seed, start_step), skipped=self._skipped, rank=self.rank,
            world_size=self.world_size, augmented_captions=self.needs.augmented_captions,
        )
        return stream_batches(dataset, self.cfg.data.batch_size // self.world_size, self.num_workers, self.pin_memory)

    def skipped(self) -> dict[str, int]:
        return self._skipped.totals()


def _source(cfg: Config, spec: str):
    if cfg.data.dataset == "webdataset":
        from ito_sweeps.data.shards import ShardSource

        return ShardSource(spec, cfg.data.shuffle_buffer)
    from ito_sweeps.data.csv_pairs import CsvSource

    return CsvSource(spec, cfg.data)
