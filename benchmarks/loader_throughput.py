"""Training-reader throughput: streamed webdataset shards against the in-memory ViewsDataset, CPU.

    .venv/bin/python benchmarks/loader_throughput.py [--seconds 8] [--out FILE.json]

Both produce what the default `ito` objective trains on (two ITO views and one caption, tokenised, per
sample). The stream decodes each image once and cuts both views from it; the in-memory set already holds
decoded images of the training size. Cases: the embedded scenes as 32-px PNG shards, and as 224-px JPEG
shards (the in-memory baseline then holds 224-px images). For 0, 1 and 2 DataLoader workers it times
batches of 32 after one warm-up batch (worker start-up excluded) and reports samples/s in all and per
loader process; every process runs one torch thread, as DataLoader workers do.
"""
from __future__ import annotations

import argparse
import json
import logging
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


def rate(batches, seconds: float) -> float:
    next(batches)  # worker start-up and the first shuffle-buffer fill are not throughput
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += next(batches)[0].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loader_throughput_cpu.json"))
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(1)

    from ito_sweeps import config as C
    from ito_sweeps.data.loader import BatchPlan, ViewsDataset, build_splits, train_batches
    from ito_sweeps.data.make_shards import make_shards
    from ito_sweeps.data.shards import ShardSource
    from ito_sweeps.data.stream import SkipCounts, StreamViews, stream_batches
    from ito_sweeps.models.towers import build_tokenizer
    from ito_sweeps.objectives.registry import build_objective

    work = Path(tempfile.mkdtemp(prefix="loader-throughput-"))
    results = {}
    for name, (size, image_format, n, shard_size) in CASES.items():
        sizes = [f"data.image_size={size}", f"data.num_train={n}", "data.num_val=1", "data.num_test=1",
                 f"data.batch_size={BATCH}"]
        make_shards(C.load(None, sizes), work / name, shard_size, image_format)
        cfg = C.load(None, sizes)
        tokenizer, needs = build_tokenizer(cfg), build_objective(cfg).inputs
        memory = ViewsDataset(build_splits(cfg.data)["train"], tokenizer, needs.views, needs.captions, cfg.data,
                              cfg.run.seed)
        plan = BatchPlan(len(memory), BATCH, cfg.run.seed)
        results[name] = {"samples": n, "shards": n // shard_size, "views": needs.views, "captions": needs.captions}
        for workers in WORKERS:
            source = ShardSource(str(work / name / "train"), cfg.data.shuffle_buffer)
            streamed = StreamViews(source, tokenizer, needs.views, needs.captions, cfg.data, cfg.run.seed,
                                   SkipCounts(workers))
            stream_rate = rate(stream_batches(streamed, BATCH, workers, pin_memory=False), args.seconds)
            memory_rate = rate(train_batches(memory, plan, 0, workers, pin_memory=False), args.seconds)
            processes = max(workers, 1)
            results[name][f"workers_{workers}"] = {
                "stream_samples_per_s": round(stream_rate, 1),
                "stream_samples_per_s_per_worker": round(stream_rate / processes, 1),
                "in_memory_samples_per_s": round(memory_rate, 1),
                "stream_over_in_memory": round(stream_rate / memory_rate, 3),
            }
            print(name, workers, results[name][f"workers_{workers}"], flush=True)

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        # other work on the machine slows every figure alike; the ratios suffer least
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "batch": BATCH,
        "timed_seconds": args.seconds,
        "cases": results,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
