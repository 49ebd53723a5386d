"""Evaluation split over ranks gives the metrics of one process.

evaluate_suite hands sample i of every benchmark to rank i mod W and rank 0 puts the gathered features back
in stored order, so the metrics must not depend on W. Two gloo processes are compared with one process on
a suite covering every task and every kind of source: the run's own embedded scenes (zero-shot
classification, retrieval, linear probe), an embedded digits benchmark, and webdataset shards written by
make-shards with odd sample counts, so the ranks get unequal shares. Batches of 16 make each rank embed
several batches. A batched matmul may round a row differently with other rows beside it, and the linear
probe on a random model's near-collapsed features turns such last-bit differences into a flipped
prediction, so the encoder here embeds row by row: features are then bit-identical whatever the batch
composition, and any difference left is the suite's. Loader processes, which split a rank's share
again, are held to the same metrics.
"""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from ito_sweeps import cli
from ito_sweeps import config as C
from ito_sweeps.data.loader import build_splits
from ito_sweeps.evaluate.suite import Encoder, evaluate_suite
from ito_sweeps.models.towers import ITOModel, build_tokenizer, eval_transform
from tests.conftest import free_port, gloo_group

# the files benchmark's 41 probe-training samples span 36 scene classes: expected, not a mistake
pytestmark = pytest.mark.filterwarnings("ignore:The number of unique classes is greater than 50%")
KEEP = 50  # embedding-sample pairs: fewer than the 75 test samples, so the cut is checked too
ALL_TASKS = ["zeroshot_classification", "zeroshot_retrieval", "linear_probe"]


def _overrides(shards) -> list[str]:
    suite = [
        {"name": "scenes", "tasks": ALL_TASKS},  # the run's own held-out split and training data
        {"name": "digits", "embedded": "digits", "seed": 0, "tasks": ["zeroshot_classification", "linear_probe"],
         "size": 101, "train_size": 100},
        {"name": "files", "path": str(shards / "test"), "train_path": str(shards / "train"), "tasks": ALL_TASKS},
    ]
    return ["data.num_train=256", "data.num_val=32", "data.num_test=75", "eval.probe_train_size=100",
            "eval.batch_size=16", "run.device=cpu", f"eval.benchmarks={json.dumps(suite)}"]


class RowByRow(Encoder):
    """The suite's Encoder, each image and caption embedded alone (the suite still hands it batches)."""

    def images(self, pixels):
        return torch.cat([Encoder.images(self, row[None]) for row in pixels])

    def texts(self, texts):
        return torch.cat([Encoder.texts(self, [text]) for text in texts])


def _evaluate(overrides, weights, rank=0, world=1, workers=0):
    cfg = C.load(None, overrides)
    model = ITOModel(cfg, with_fusion=False)
    model.load_state_dict(torch.load(weights))
    encoder = RowByRow(model.clip, build_tokenizer(cfg), eval_transform(cfg), torch.device("cpu"),
                       cfg.eval.batch_size, contextlib.nullcontext)
    return evaluate_suite(encoder, cfg, "test", rank, world, build_splits(cfg.data), workers, keep_sample=KEEP)


def _rank(rank, world, port, overrides, weights, out):
    torch.set_num_threads(1)  # two processes on two cores
    with gloo_group(rank, world, port):
        torch.save(_evaluate(overrides, weights, rank, world), out / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_distributed")
    shards = folder / "shards"
    # 37 test and 41 train samples in shards of 10: neither splits evenly over two ranks or over shards
    sizes = ["data.num_train=41", "data.num_val=3", "data.num_test=37", "data.batch_size=8"]
    assert cli.main(["make-shards", str(shards), *(a for size in sizes for a in ("--set", size)),
                     "--shard-size", "10"]) == 0
    overrides = _overrides(shards)
    torch.manual_seed(0)
    weights = folder / "weights.pt"
    torch.save(ITOModel(C.load(None, overrides), with_fusion=False).state_dict(), weights)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs: a kernel's rounding may depend on its thread count
    try:
        yield folder, overrides, weights, _evaluate(overrides, weights)
    finally:
        torch.set_num_threads(threads)


def _assert_same(got, want):
    (metrics, sample), (want_metrics, want_sample) = got, want
    assert metrics.keys() == want_metrics.keys()
    for key, value in want_metrics.items():
        if key.endswith("/samples"):
            assert metrics[key] == value, key
        else:
            assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert sample.keys() == want_sample.keys()
    assert len(sample["image"]) == KEEP
    np.testing.assert_array_equal(sample["caption"], want_sample["caption"])
    np.testing.assert_array_equal(sample["label"], want_sample["label"])
    for key in ("image", "text"):
        np.testing.assert_allclose(sample[key], want_sample[key], rtol=1e-6, atol=0)


def test_the_one_process_suite_covers_every_task_and_source(setup):
    _, _, _, (metrics, sample) = setup
    assert {k: v for k, v in metrics.items() if k.endswith("/samples")} == \
        {"scenes/samples": 75, "digits/samples": 101, "files/samples": 37}
    for bench in ("scenes", "files"):
        assert {f"{bench}/zeroshot_top1", f"{bench}/i2t_r1", f"{bench}/probe_top1", f"{bench}/modality_gap"} <= \
            metrics.keys()
    assert "digits/probe_top1" in metrics and "zeroshot_avg" in metrics
    # the kept sample is the first retrieval benchmark's (scenes) first test pairs, in stored order
    splits = build_splits(C.load(None, setup[1]).data)
    assert sample["caption"].tolist() == [caps[0] for caps in splits["test"].captions[:KEEP]]


def test_two_gloo_ranks_give_the_metrics_of_one_process(setup):
    folder, overrides, weights, single = setup
    mp.spawn(_rank, args=(2, free_port(), overrides, weights, folder), nprocs=2, join=True)
    _assert_same(torch.load(folder / "rank0.pt", weights_only=False), single)
    assert torch.load(folder / "rank1.pt", weights_only=False) == ({}, None)  # rank 1 only embeds its share


def test_loader_workers_give_the_metrics_of_one_worker(setup):
    _, overrides, weights, single = setup
    # each loader process decodes every second sample of the rank's share; files are read through them
    _assert_same(_evaluate(overrides, weights, workers=2), single)


def test_the_encoders_two_part_transform_is_open_clips_own():
    """Samples leave the loader as uint8 and are normalised a batch at a time on the device: together that must
    be exactly open_clip's eval transform of the exported model, bit for bit."""
    import open_clip
    from PIL import Image

    _, _, preprocess = open_clip.create_model_and_transforms("tiny")
    flat = type("Flat", (), {"encode_image": lambda self, x: x.flatten(1)})()
    encoder = Encoder(flat, None, preprocess, torch.device("cpu"), 4, contextlib.nullcontext)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(40, 33), (32, 32), (90, 50)]]
    pixels = [encoder.pixels(image) for image in images]
    assert all(p.dtype == torch.uint8 and p.shape == (3, 32, 32) for p in pixels)
    assert torch.equal(encoder.images(torch.stack(pixels)), torch.stack([preprocess(i) for i in images]).flatten(1))
