"""Training-reader throughput: streamed webdataset shards and CSV files against the in-memory ViewsDataset,
CPU, with a per-sample cost breakdown and the loader cores a GPU needs.

    .venv/bin/python benchmarks/loader_throughput.py [--seconds 8] [--repeats 5] [--out FILE.json]

All readers produce what the default `ito` objective trains on (two ITO views and one caption, tokenised,
per sample). The stream (StreamViews) decodes each image once and cuts both views from it; the in-memory
set already holds decoded images of the training size. Cases: the embedded scenes as 32-px PNG shards,
and as 224-px JPEG shards (the in-memory baseline then holds 224-px images); the 224-px case is also
written as an open_clip CSV file (same samples, one image file per row) and read by the same StreamViews
over a CsvSource. For 0, 1 and 2 DataLoader workers it times batches of 32 after one warm-up batch
(worker start-up excluded) and reports samples/s in all and per loader process; every process runs one
torch thread, as DataLoader workers do.

Then, for the 224-px JPEG shards, one core: what one sample costs (µs, the least of --repeats passes over
all training samples) in JPEG decoding, each of the two augmented views, normalisation, caption
tokenisation, the whole sample as StreamViews builds it from a read record, and as its pass yields it
(tar reading and the shuffle buffer included); and the naive alternative of decoding once per view. Both
CPU time (what a loader core spends, little changed by other jobs on the machine) and wall time are
reported, and the same pass collated into batches of 32 as a DataLoader worker does it. Samples/s per
loader process (= per CPU core) is 1e6 / the CPU µs of a sample in batches; the loader cores one GPU
needs for a target rate follow from it.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32
WORKERS = (0, 1, 2)
CASES = {  # name -> (image size, format, samples rendered, samples per shard)
    "32px_png": (32, "png", 512, 64),
    "224px_jpg": (224, "jpg", 256, 32),
}
CSV_CASE = BREAKDOWN_CASE = "224px_jpg"
# samples/s one GPU consumes: ITO's ViT-B/16 target, and the 2,000-6,000 images/s of CLIP training per H100
# (an ITO sample is one image, decoded once, with two views)
GPU_TARGETS = (1450, 2000, 6000)


def rate(batches, seconds: float) -> float:
    next(batches)  # worker start-up and the first shuffle-buffer fill are not throughput
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += next(batches)[0].shape[0]
    return n / (time.perf_counter() - t0)


class Stopwatch:
    """CPU and wall time spent per named stage, summed over calls."""

    def __init__(self):
        self.cpu, self.wall = {}, {}

    def time(self, stage: str, fn, *args):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn(*args)
        self.cpu[stage] = self.cpu.get(stage, 0.0) + time.process_time() - c0
        self.wall[stage] = self.wall.get(stage, 0.0) + time.perf_counter() - w0
        return out


def per_sample_costs(streamed, csv_streamed, records: list, repeats: int) -> dict:
    """µs per sample, per stage (the least over repeats: other jobs only add time), on this process's one core."""
    from ito_sweeps.data.augment import augment_view
    from ito_sweeps.data.loader import normalize
    from ito_sweeps.data.records import decode_image, to_uint8_tensor
    from ito_sweeps.data.stream import stream_batches

    cfg, a = streamed.cfg, streamed.cfg.augment
    view_args = dict(crop_scale=a.crop_scale, crop_ratio=a.crop_ratio, jitter=a.jitter, jitter_p=a.jitter_p,
                     grayscale_p=a.grayscale_p, size=cfg.image_size)  # as StreamViews._views passes them

    def decode(data: bytes) -> torch.Tensor:  # StreamViews: decode_image, then a float tensor in [0, 1]
        return to_uint8_tensor(decode_image(data)).float() / 255

    def drain(stream) -> int:
        return sum(1 for _ in stream)

    runs = []
    for _ in range(repeats):
        watch, n = Stopwatch(), len(records)
        for i, record in enumerate(records):
            # the stages of one sample, each timed (the sum should match the whole sample below)
            g = torch.Generator().manual_seed(i)
            pixels = watch.time("jpeg_decode", decode, record.image)
            first = watch.time("view_1", lambda: augment_view(pixels, g, **view_args))
            second = watch.time("view_2", lambda: augment_view(pixels, g, **view_args))
            watch.time("normalise", lambda: normalize(torch.stack([first, second])))
            watch.time("tokenise", streamed.tokenizer, record.captions[:1])
            # the whole sample as the reader builds it from a read record (skip checks, decode, views, captions)
            watch.time("sample_from_record", streamed._sample, record, torch.Generator().manual_seed(i))
            # the naive alternative: decode the image again for every view
            g = torch.Generator().manual_seed(i)
            watch.time("sample_decoding_per_view", lambda: (
                normalize(torch.stack([augment_view(decode(record.image), g, **view_args) for _ in range(2)])),
                streamed.tokenizer(record.captions[:1])))
        # whole passes: reading (tar parsing or one file per row) alone, and everything the pass yields
        watch.time("read_record_shards", lambda: list(streamed.source.records(streamed.source.units)))
        watch.time("read_record_csv", lambda: list(csv_streamed.source.records(csv_streamed.source.units)))
        assert watch.time("sample_as_yielded_shards", drain, streamed.one_pass(0)) == n
        assert watch.time("sample_as_yielded_csv", drain, csv_streamed.one_pass(0)) == n
        # what a loader worker does: the same pass collated into batches (in a worker, into shared memory)
        for kind, reader in (("shards", streamed), ("csv", csv_streamed)):
            batches = stream_batches(reader, BATCH, 0, pin_memory=False)
            watch.time(f"sample_in_batches_{kind}", lambda: [next(batches) for _ in range(n // BATCH)])
        runs.append({clock: {k: 1e6 * v / n for k, v in getattr(watch, clock).items()} for clock in ("cpu", "wall")})

    out = {}
    for clock in ("cpu", "wall"):
        us = {k: round(min(r[clock][k] for r in runs), 1) for k in runs[0][clock]}
        us["sum_of_stages"] = round(sum(us[k] for k in ("jpeg_decode", "view_1", "view_2", "normalise", "tokenise")), 1)
        out[f"{clock}_us"] = us
    cpu = out["cpu_us"]
    out["augmentation_share_of_sample"] = round((cpu["view_1"] + cpu["view_2"]) / cpu["sample_as_yielded_shards"], 3)
    out["decode_share_of_sample"] = round(cpu["jpeg_decode"] / cpu["sample_as_yielded_shards"], 3)
    out["collation_share_of_sample"] = round(1 - cpu["sample_as_yielded_shards"] / cpu["sample_in_batches_shards"], 3)
    out["decoding_per_view_over_once"] = round(cpu["sample_decoding_per_view"] / cpu["sample_from_record"], 3)
    return out


def sizing(costs: dict, measured: dict) -> dict:
    """Samples/s per loader process (= per CPU core) and the loader cores one GPU needs."""
    cpu = costs["cpu_us"]
    per_core = {"webdataset": 1e6 / cpu["sample_in_batches_shards"], "csv": 1e6 / cpu["sample_in_batches_csv"]}
    return {
        "basis": "CPU time of one sample as StreamViews' pass yields it collated into batches of 32 (what a "
                 "DataLoader worker does), one torch thread",
        "samples_per_s_per_core": {k: round(v, 1) for k, v in per_core.items()},
        "samples_per_s_per_core_before_collation": {
            "webdataset": round(1e6 / cpu["sample_as_yielded_shards"], 1),
            "csv": round(1e6 / cpu["sample_as_yielded_csv"], 1),
        },
        "dataloader_1_worker_samples_per_s": {
            "webdataset": measured["workers_1"]["stream_samples_per_s"],
            "csv": measured["workers_1"]["csv_samples_per_s"],
        },
        "loader_cores_per_gpu": {
            str(target): {k: math.ceil(target / v) for k, v in per_core.items()} for target in GPU_TARGETS
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the samples for the per-sample costs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loader_throughput_cpu.json"))
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(1)

    from ito_sweeps import config as C
    from ito_sweeps.data.csv_pairs import CsvSource
    from ito_sweeps.data.loader import BatchPlan, ViewsDataset, build_splits, train_batches
    from ito_sweeps.data.make_shards import make_shards
    from ito_sweeps.data.shards import ShardSource
    from ito_sweeps.data.stream import SkipCounts, StreamViews, stream_batches
    from ito_sweeps.models.towers import build_tokenizer
    from ito_sweeps.objectives import build_objective

    work = Path(tempfile.mkdtemp(prefix="loader-throughput-"))
    results, extra = {}, {}
    for name, (size, image_format, n, shard_size) in CASES.items():
        sizes = [f"data.image_size={size}", f"data.num_train={n}", "data.num_val=1", "data.num_test=1",
                 f"data.batch_size={BATCH}"]
        make_shards(C.load(None, sizes), work / name, shard_size, image_format, write_csv=name == CSV_CASE)
        cfg = C.load(None, sizes)
        tokenizer, needs = build_tokenizer(cfg), build_objective(cfg).inputs
        memory = ViewsDataset(build_splits(cfg.data)["train"], tokenizer, needs.views, needs.captions, cfg.data,
                              cfg.run.seed)
        plan = BatchPlan(len(memory), BATCH, cfg.run.seed)
        results[name] = {"samples": n, "shards": n // shard_size, "views": needs.views, "captions": needs.captions}
        sources = {"stream": lambda: ShardSource(str(work / name / "train"), cfg.data.shuffle_buffer)}
        if name == CSV_CASE:
            sources["csv"] = lambda: CsvSource(str(work / name / "csv" / "train.csv"), cfg.data)

        def reader(kind: str, workers: int) -> StreamViews:
            return StreamViews(sources[kind](), tokenizer, needs.views, needs.captions, cfg.data, cfg.run.seed,
                               SkipCounts(workers))

        for workers in WORKERS:
            rates = {kind: rate(stream_batches(reader(kind, workers), BATCH, workers, pin_memory=False), args.seconds)
                     for kind in sources}
            memory_rate = rate(train_batches(memory, plan, 0, workers, pin_memory=False), args.seconds)
            processes = max(workers, 1)
            row = {}
            for kind, r in rates.items():
                row[f"{kind}_samples_per_s"] = round(r, 1)
                row[f"{kind}_samples_per_s_per_worker"] = round(r / processes, 1)
            row["in_memory_samples_per_s"] = round(memory_rate, 1)
            for kind, r in rates.items():
                row[f"{kind}_over_in_memory"] = round(r / memory_rate, 3)
            results[name][f"workers_{workers}"] = row
            print(name, workers, row, flush=True)

        if name == BREAKDOWN_CASE:
            streamed, csv_streamed = reader("stream", 0), reader("csv", 0)
            records = list(streamed.source.records(streamed.source.units))
            costs = per_sample_costs(streamed, csv_streamed, records, args.repeats)
            extra[f"per_sample_{name}"] = {"samples": len(records), "repeats": args.repeats,
                                           "statistic": "least over the repeats", **costs}
            extra[f"sizing_{name}"] = sizing(costs, results[name])
            print(json.dumps(extra, indent=2), flush=True)

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        # other work on the machine slows every figure alike; the ratios suffer least
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "batch": BATCH,
        "timed_seconds": args.seconds,
        "cases": results,
        **extra,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
