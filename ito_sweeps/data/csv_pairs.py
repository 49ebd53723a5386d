"""Reading open_clip's CSV format (an image path column and a caption column) as a stream of Records.

The rows (paths and captions, small) are held in memory as open_clip does; images are read lazily, one
file per sample. Units are row indices: a pass permutes all of them, so CSV data is shuffled in full
and needs no shuffle buffer. Several captions of one image share a cell, split on
data.csv_caption_separator (one caption per row when it is unset).
"""
from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

from ito_sweeps.config import DataConfig
from ito_sweeps.data.records import Record, clean_captions


class CsvSource:
    def __init__(self, spec: str, cfg: DataConfig):
        self.spec = spec
        base = Path(spec).parent
        with open(spec, newline="") as f:
            reader = csv.DictReader(f, delimiter=cfg.csv_separator)
            self.rows = [(base / row[cfg.csv_image_key], row[cfg.csv_caption_key] or "") for row in reader]
        self.caption_separator = cfg.csv_caption_separator
        self.units = list(range(len(self.rows)))

    def describe(self, units: list[int]) -> str:
        return f"{len(units)} row(s) of {self.spec}"

    def records(self, units: list[int], rng: random.Random | None = None) -> Iterator[Record]:
        """The rows in the given order; units arrive already permuted, so rng has nothing left to do."""
        for i in units:
            path, cell = self.rows[i]
            captions = cell.split(self.caption_separator) if self.caption_separator else [cell]
            yield Record(str(path), _read(path), clean_captions(captions))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # a missing image file is a corrupt sample, skipped and counted like one
        return None
