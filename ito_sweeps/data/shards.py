"""Reading webdataset shards (img2dataset and CLIP_benchmark layouts) as a stream of Records.

The shard is the unit of splitting: a pass reads each shard once, by one loader worker of one rank.
Within a worker, a shuffle buffer of `shuffle_buffer` samples (webdataset's own) mixes the shards it
reads, so memory stays at one buffer of encoded samples whatever the data set's size.
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

from webdataset import shuffle
from webdataset.tariterators import tarfile_samples

from ito_sweeps.data.paths import expand_shards
from ito_sweeps.data.records import Record, from_webdataset

# Fill this much of the buffer before the first sample leaves it: the start of a pass is then shuffled
# too, without waiting for a full buffer of large images.
INITIAL_FILL = 0.5


class ShardSource:
    """A list of shards; units are shards."""

    def __init__(self, spec: str, shuffle_buffer: int):
        self.spec, self.units, self.shuffle_buffer = spec, expand_shards(spec), shuffle_buffer

    def describe(self, units: list[str]) -> str:
        return f"{len(units)} shard(s) of {self.spec}"

    def records(self, units: list[str], rng: random.Random | None = None) -> Iterator[Record]:
        """The samples of these shards in order, or shuffled through the buffer when rng is given."""
        records = (from_webdataset(s) for s in self._samples(units))
        if rng is None:
            return records
        fill = max(1, int(self.shuffle_buffer * INITIAL_FILL))
        return shuffle(bufsize=self.shuffle_buffer, initial=fill, rng=rng)(records)

    def _samples(self, units: Iterable[str]) -> Iterator[dict]:
        # A broken tar file raises (with its URL): a lost shard should stop a run, not shrink it silently
        return tarfile_samples({"url": url} for url in units)
