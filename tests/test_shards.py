"""Real data formats: make-shards, webdataset and CSV streaming, skipped samples, path checks, training on files.

Expected values come from the rendered benchmark itself (build_splits) and from reading the tar files with
Python's own tarfile module, never from the readers under test.
"""
from __future__ import annotations

import csv
import io
import json
import random
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from torchvision.transforms.v2 import functional as F
from webdataset import TarWriter

from ito_sweeps import config as C
from ito_sweeps.cli import main
from ito_sweeps.data.augment import VIEW_PARAMS, augment_view
from ito_sweeps.data.batch_augment import device_pixels, make_views
from ito_sweeps.data.csv_pairs import CsvSource
from ito_sweeps.data.digits import load_digits_set
from ito_sweeps.data.loader import build_splits, collate
from ito_sweeps.data.make_shards import encode_image
from ito_sweeps.data.paths import check_benchmark_paths, check_data_paths
from ito_sweeps.data.records import DataError, to_uint8_tensor
from ito_sweeps.data.shards import ShardSource
from ito_sweeps.data.stream import (SkipCounts, StreamViews, loader_workers, pass_units, stream_batches,
                                    stream_seed)
from ito_sweeps.data.benchmarks import open_split
from ito_sweeps.models.towers import build_tokenizer
from ito_sweeps.train import loop
from ito_sweeps.train.loop import train
from tests.conftest import FAST, SMALL_SUITE, free_port, gloo_group

SIZES = ["data.num_train=96", "data.num_val=16", "data.num_test=32", "data.batch_size=32"]
SHARD_SIZE = 16


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """make-shards output (6 train, 1 val, 2 test shards; CSV with '|'-joined captions; the small suite in
    CLIP_benchmark's layout) and the rendered splits."""
    out = tmp_path_factory.mktemp("shards")
    sets = [f"--set={s}" for s in SIZES + ["data.csv_separator=','", "data.csv_caption_separator='|'",
                                           f"eval.benchmarks={json.dumps(SMALL_SUITE)}"]]
    assert main(["make-shards", str(out), *sets, "--shard-size", str(SHARD_SIZE), "--clip-benchmark", "--csv"]) == 0
    return out, build_splits(C.load(None, SIZES).data)


def tar_samples(path: Path) -> dict[str, dict[str, bytes]]:
    """key -> extension -> bytes, with the standard library only."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def pixels(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)


def stream_cfg(*overrides: str) -> C.Config:
    return C.load(None, ["data.dataset=webdataset", "data.train_data=x", "data.test_data=x", "eval.every=0",
                         *overrides])


# ---- make-shards ------------------------------------------------------------------------------------


def test_make_shards_writes_exactly_the_rendered_benchmark(shards, capsys):
    out, splits = shards
    for name, data in splits.items():
        tars = sorted((out / name).glob("*.tar"))
        assert [t.name for t in tars] == [f"{i:06d}.tar" for i in range(len(data) // SHARD_SIZE)]
        samples = {k: v for t in tars for k, v in tar_samples(t).items()}
        assert len(samples) == len(data)
        for i, key in enumerate(sorted(samples)):
            s = samples[key]
            assert set(s) == {"png", "txt", "json", "cls"}
            assert torch.equal(pixels(s["png"]), data.images[i])  # PNG is lossless
            assert s["txt"].decode() == data.captions[i][0]
            assert json.loads(s["json"]) == {"captions": data.captions[i], "label": int(data.labels["object"][i])}
            assert int(s["cls"]) == int(data.labels["object"][i])
    names = (out / "classnames.txt").read_text().splitlines()
    assert names == splits["test"].classnames["object"]
    templates = (out / "zeroshot_classification_templates.txt").read_text().splitlines()
    assert templates == [t.replace("{}", "{c}") for t in splits["test"].templates["object"]]

    with (out / "csv" / "test.csv").open(newline="") as f:
        rows = list(csv.reader(f, delimiter=","))
    assert rows[0] == ["filepath", "title"] and len(rows) == 33
    for (path, captions), image, caps in zip(rows[1:], splits["test"].images, splits["test"].captions):
        assert torch.equal(pixels((out / "csv" / path).read_bytes()), image) and captions.split("|") == caps


def test_make_shards_refuses_streamed_data_sets(tmp_path, capsys):
    assert main(["make-shards", str(tmp_path), "--set", "data.dataset=webdataset", "--set", "data.train_data=x",
                 "--set", "data.test_data=x", "--set", "eval.every=0"]) == 2
    assert "data.dataset: make-shards renders the embedded benchmark" in capsys.readouterr().err


# ---- reading -----------------------------------------------------------------------------------------


def clip_benchmark_split(folder: Path) -> dict[str, dict[str, bytes]]:
    """A CLIP_benchmark split (nshards.txt, 0.tar, 1.tar, ...) in its numbered order, key -> extension -> bytes."""
    shards = [folder / f"{i}.tar" for i in range(int((folder / "nshards.txt").read_text()))]
    assert sorted(folder.glob("*.tar")) == sorted(shards)
    return {key: sample for shard in shards for key, sample in sorted(tar_samples(shard).items())}


def test_clip_benchmark_layout_holds_each_benchmark_of_the_suite(shards):
    out, splits = shards
    root = out / "clip_benchmark"
    digits = load_digits_set(0, 32, 5)  # SMALL_SUITE's digits: seed 0, the first 48 evaluated, the next 64 probed
    expected = {  # benchmark -> split -> (the samples, their zero-shot task, whether captions are written)
        "scenes": {"test": (splits["test"], "object", True), "train": (splits["train"], "object", False)},
        "scenes_count": {"test": (splits["test"], "count", False)},
        "digits": {"test": (digits.subset(slice(0, 48)), "digit", False),
                   "train": (digits.subset(slice(48, 112)), "digit", False)},
    }
    for name, parts in expected.items():
        assert sorted(p.name for p in (root / f"wds_{name}").iterdir()) == sorted(
            [*parts, "classnames.txt", "zeroshot_classification_templates.txt"])
        for part, (data, task, captions) in parts.items():
            samples = list(clip_benchmark_split(root / f"wds_{name}" / part).values())
            assert len(samples) == len(data)
            for i, sample in enumerate(samples):
                assert set(sample) == {"png", "cls"} | ({"txt"} if captions else set())
                assert torch.equal(pixels(sample["png"]), data.images[i])
                assert int(sample["cls"]) == int(data.labels[task][i])
                if captions:  # every caption, one per line
                    assert sample["txt"].decode().splitlines() == data.captions[i]
        names = (root / f"wds_{name}" / "classnames.txt").read_text().splitlines()
        assert names == parts["test"][0].classnames[parts["test"][1]]
    # the retrieval copy CLIP_benchmark reads as retrieval: the same test shards, typed
    assert (root / "wds_scenes_retrieval" / "dataset_type.txt").read_text().strip() == "retrieval"
    retrieval = clip_benchmark_split(root / "wds_scenes_retrieval" / "test")
    assert retrieval == clip_benchmark_split(root / "wds_scenes" / "test")
    assert sorted(p.name for p in root.iterdir()) == ["suite.yaml", "wds_digits", "wds_scenes", "wds_scenes_count",
                                                      "wds_scenes_retrieval"]
    # the suite reads those folders under the same names, and is a config like any other
    suite = C.load(root / "suite.yaml")
    assert [(b.name, b.tasks) for b in suite.eval.benchmarks] == [
        (b["name"], tuple(b.get("tasks", ["zeroshot_classification"]))) for b in SMALL_SUITE]
    scenes, _, digits_bench = suite.eval.benchmarks
    assert scenes.path == f"{root}/wds_scenes/test/{{0..1}}.tar" and scenes.train_size == 96
    assert digits_bench.train_path == f"{root}/wds_digits/train/{{0..3}}.tar" and digits_bench.train_size == 64


def read_split(spec: str, cfg: C.Config) -> tuple:
    """A benchmark reading spec, as evaluation opens it: its Split and every sample decoded."""
    bench = C.BenchmarkConfig(name="b", tasks=("zeroshot_retrieval",), path=spec)
    split = open_split(bench, "test", cfg, 32)
    return split, [split.decode(record) for record in split.records()]


def test_evaluation_reads_the_rendered_images_captions_and_classes_from_shards(shards, tmp_path):
    out, splits = shards
    test = splits["test"]
    shutil.copytree(out / "test", tmp_path / "bare")  # no class files beside it or above
    for spec in (str(out / "test"), str(out / "test" / "{000000..000001}.tar"), str(tmp_path / "bare")):
        split, samples = read_split(spec, C.load(None, SIZES))
        assert len(samples) == len(test)
        for i, (image, captions, label) in enumerate(samples):
            assert torch.equal(to_uint8_tensor(image), test.images[i])
            assert captions == test.captions[i]  # every caption, from json
            assert label == int(test.labels["object"][i])  # key.cls
        if "bare" in spec:
            assert split.classnames is None and split.templates is None
        else:
            assert split.classnames == test.classnames["object"] and split.templates == test.templates["object"]


def test_csv_with_its_separators(shards):
    out, splits = shards
    cfg = C.load(None, ["data.csv_separator=','", "data.csv_caption_separator='|'"])
    _, samples = read_split(str(out / "csv" / "val.csv"), cfg)
    assert len(samples) == len(splits["val"])
    for (image, captions, label), want, caps in zip(samples, splits["val"].images, splits["val"].captions):
        assert torch.equal(to_uint8_tensor(image), want) and captions == caps
        assert label is None  # CSV rows carry no class
    data_cfg = stream_cfg("data.csv_separator=','").data  # one caption per row: the whole cell
    whole = list(CsvSource(str(out / "csv" / "val.csv"), data_cfg).records([0]))[0]
    assert whole.captions == ["|".join(splits["val"].captions[0])]


def test_each_sample_is_read_once_per_pass_across_ranks_and_workers(shards):
    out, splits = shards
    source = ShardSource(str(out / "train"), shuffle_buffer=8)
    assert loader_workers(source, num_workers=8, world_size=2) == 3  # 6 shards: 3 per rank, so 3 workers at most
    keys_per_pass = []
    for pass_index in range(2):
        keys = []
        for rank in range(2):
            key_stream = KeyStream(source, None, 1, 1, stream_cfg().data, seed=3, skipped=SkipCounts(0), rank=rank,
                                   world_size=2)
            for worker in range(2):
                keys += list(key_stream.one_pass(pass_index, worker, 2))
        assert Counter(keys) == Counter(f"{i:09d}" for i in range(96))
        keys_per_pass.append(keys)
    assert keys_per_pass[0] != keys_per_pass[1]  # reshuffled every pass


class KeyStream(StreamViews):
    """The stream's split and shuffling, yielding each sample's key instead of its views."""

    def _views(self, record, image, shape, g):
        return record.key


def test_shuffle_buffer_bounds_what_is_held(shards):
    out, _ = shards
    read = []

    class Counting(ShardSource):
        def _samples(self, units):
            for sample in super()._samples(units):
                read.append(sample["__key__"])
                yield sample

    source = Counting(str(out / "train"), shuffle_buffer=8)
    keys, held = [], []
    for record in source.records(source.units, random.Random(0)):
        held.append(len(read) - len(keys))  # read but not yet yielded, this one included
        keys.append(record.key)
    assert held[0] == 4  # the first sample leaves once the buffer is half full, not after all 96 are read
    assert max(held) == 8  # never more than the buffer
    assert sorted(keys) == [f"{i:09d}" for i in range(96)] and keys != sorted(keys)


def test_stream_batches_match_views_dataset_shapes_and_reuse_too_few_captions(shards, tmp_path):
    out, splits = shards
    tokenizer = build_tokenizer(C.load(None, []))
    cfg = stream_cfg("data.image_size=16").data
    views = StreamViews(ShardSource(str(out / "val"), 8), tokenizer, views=2, captions=3, cfg=cfg, seed=0,
                        skipped=SkipCounts(0), augmented_captions=1)
    pixels, params, tokens = next(iter(views))
    context = tokenizer(["a"]).shape[1]
    # the image once, at its stored size, and the parameters of its two views
    assert pixels.dtype == torch.uint8 and pixels.shape == splits["val"].images.shape[1:]
    assert params.shape == (2, VIEW_PARAMS) and tokens.shape == (4, context)
    caption_ids = {tuple(t) for caps in splits["val"].captions for t in tokenizer(caps).tolist()}
    assert len({tuple(t) for t in tokens[:3].tolist()}) == 3  # 5 captions: 3 distinct ones
    assert all(tuple(t) in caption_ids for t in tokens[:3].tolist())

    # img2dataset with .txt only: one caption, reused for every one asked for
    write_tar(tmp_path / "one.tar", splits["val"], range(4), lambda i, s: {k: s[k] for k in ("__key__", "png", "txt")})
    single = StreamViews(ShardSource(str(tmp_path / "one.tar"), 8), tokenizer, 1, 3, cfg, 0, SkipCounts(0))
    *_, tokens = next(iter(single))
    assert torch.equal(tokens[0], tokens[1]) and torch.equal(tokens[1], tokens[2])

    batches = stream_batches(views, local_batch=5, num_workers=0, pin_memory=False)
    for _ in range(8):  # 16 samples per pass: several passes, never exhausted
        pixels, params, tokens = next(batches)
        assert make_views(pixels, params, 16).shape == (5, 2, 3, 16, 16) and tokens.shape == (5, 4, context)


def test_augment_view_cuts_views_of_the_requested_size_from_a_larger_image():
    image = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0))
    identity = dict(crop_scale=(1.0, 1.0), crop_ratio=(4 / 3, 4 / 3), jitter=(0, 0, 0, 0), jitter_p=0, grayscale_p=0)
    view = augment_view(image, torch.Generator().manual_seed(1), size=32, **identity)
    assert torch.allclose(view, F.resize(image, [32, 32], antialias=True).clamp(0, 1))  # the full image, resized
    g = torch.Generator().manual_seed(1)
    spec = dict(crop_scale=(0.5, 1.0), crop_ratio=(3 / 4, 4 / 3), jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8,
                grayscale_p=0.2)
    assert augment_view(image, g, size=24, **spec).shape == (3, 24, 24)


# ---- bad samples -------------------------------------------------------------------------------------

CORRUPT, CAPTIONLESS = (5, 17), (30,)


def bad_sample(i: int, sample: dict) -> dict:
    if i in CORRUPT:
        return {**sample, "png": b"\x89PNG garbage, not an image"}
    if i in CAPTIONLESS:
        return {k: v for k, v in sample.items() if k not in ("txt", "json")}
    return sample


def write_tar(path: Path, data, rows, edit=lambda i, s: s) -> None:
    with TarWriter(str(path), encoder=False) as sink:
        for i in rows:
            sink.write(edit(i, {
                "__key__": f"{i:09d}", "png": encode_image(data.images[i], "png"),
                "txt": data.captions[i][0].encode(), "json": json.dumps({"captions": data.captions[i]}).encode(),
            }))


def test_corrupt_and_captionless_samples_are_skipped_and_counted_by_reason(shards, tmp_path):
    _, splits = shards
    write_tar(tmp_path / "bad.tar", splits["train"], range(40), bad_sample)
    keys = list(KeyStream(ShardSource(str(tmp_path / "bad.tar"), 8), None, 1, 1, stream_cfg().data, 0,
                          skipped := SkipCounts(0)).one_pass(0))
    assert sorted(keys) == [f"{i:09d}" for i in range(40) if i not in CORRUPT + CAPTIONLESS]
    assert skipped.totals() == {"corrupt_image": 2, "missing_caption": 1}

    # counted in the loader worker processes, read by this one
    (tmp_path / "two").mkdir()
    write_tar(tmp_path / "two" / "0.tar", splits["train"], range(0, 20), bad_sample)
    write_tar(tmp_path / "two" / "1.tar", splits["train"], range(20, 40), bad_sample)
    counts = SkipCounts(2)
    views = StreamViews(ShardSource(str(tmp_path / "two"), 4), build_tokenizer(C.load(None, [])), 1, 1,
                        stream_cfg().data, 0, counts)
    batches = stream_batches(views, local_batch=1, num_workers=2, pin_memory=False)
    for _ in range(37):  # one pass's worth
        next(batches)
    rows = counts.table.tolist()
    assert rows[0] == [0, 0] and min(map(sum, rows[1:])) >= 1  # each worker counted in its own row
    assert counts.totals()["corrupt_image"] >= 2 and counts.totals()["missing_caption"] >= 1


def test_gpu_decode_leaves_whole_jpegs_encoded_and_gives_the_same_batches(shards, tmp_path):
    """data.decode=gpu: the loader passes whole JPEGs on still encoded and decodes the rest itself; decoded with
    their batch (here on the CPU, by torchvision's same decoder) they give what data.decode=cpu gives."""
    _, splits = shards
    train = splits["train"]

    def mixed(i, sample):
        jpeg = encode_image(train.images[i], "jpg")
        if i % 4 == 1:
            return sample  # PNG: decoded in the loader
        if i == 6:
            return {**sample, "png": jpeg[: len(jpeg) // 2]}  # a cut-off JPEG: corrupt, skipped in the loader
        return {**{k: v for k, v in sample.items() if k != "png"}, "jpg": jpeg}

    write_tar(tmp_path / "mixed.tar", train, range(12), mixed)
    tokenizer = build_tokenizer(C.load(None, []))
    streams = {}
    for decode in ("cpu", "gpu"):
        streams[decode] = StreamViews(ShardSource(str(tmp_path / "mixed.tar"), 4), tokenizer, 2, 1,
                                      stream_cfg(f"data.decode={decode}").data, 0, skipped := SkipCounts(0))
        assert skipped.totals() == {"corrupt_image": 0, "missing_caption": 0}
    on_cpu, on_gpu = (list(streams[d].one_pass(0)) for d in ("cpu", "gpu"))
    assert len(on_cpu) == len(on_gpu) == 11 and streams["gpu"].skipped.totals()["corrupt_image"] == 1
    kinds = [p.dim() for p, _, _ in on_gpu]
    assert kinds.count(1) == 8 and kinds.count(3) == 3  # 8 whole JPEGs stay encoded, 3 PNGs are decoded
    for (cpu_pixels, cpu_params, cpu_tokens), (gpu_pixels, gpu_params, gpu_tokens) in zip(on_cpu, on_gpu):
        assert torch.equal(cpu_params, gpu_params) and torch.equal(cpu_tokens, gpu_tokens)  # header sizes
    pixels, params, tokens = collate(on_gpu)
    assert isinstance(pixels, list)
    expected = collate(on_cpu)
    assert torch.equal(device_pixels(pixels, torch.device("cpu")), expected[0])
    assert torch.equal(params, expected[1]) and torch.equal(tokens, expected[2])


def test_gpu_decode_is_refused_where_it_cannot_apply():
    with pytest.raises(C.ConfigError, match="data.decode: gpu decodes streamed JPEGs; data.dataset=scenes"):
        C.load(None, ["data.decode=gpu"])
    with pytest.raises(C.ConfigError, match="data.decode: gpu needs a GPU to train on; use run.device=cuda"):
        stream_cfg("data.decode=gpu", "run.device=cpu")
    if not torch.cuda.is_available():  # auto finds no GPU: refused when training starts, before any data is read
        with pytest.raises(C.ConfigError, match="data.decode: gpu, but no GPU is visible"):
            train(stream_cfg("data.decode=gpu"), None)


def test_a_pass_with_nothing_usable_stops_with_a_clear_error(shards, tmp_path):
    _, splits = shards
    write_tar(tmp_path / "all_bad.tar", splits["train"], range(4), lambda i, s: {**s, "png": b"nope"})
    views = StreamViews(ShardSource(str(tmp_path / "all_bad.tar"), 8), None, 1, 1, stream_cfg().data, 0, SkipCounts(0))
    with pytest.raises(DataError, match=r"no usable sample in a pass over 1 shard\(s\).*4 read, all skipped"):
        next(iter(views))


def _ddp_rank(rank, world_size, port, overrides, run_dir):
    torch.set_num_threads(1)
    with gloo_group(rank, world_size, port):
        train(C.load(None, overrides), run_dir)


def test_two_ranks_train_on_unequal_shards_and_log_skips_summed_over_ranks(shards, tmp_path):
    out, splits = shards
    (tmp_path / "bad").mkdir()
    write_tar(tmp_path / "bad" / "0.tar", splits["train"], range(0, 20), bad_sample)  # 18 usable samples
    write_tar(tmp_path / "bad" / "1.tar", splits["train"], range(20, 40), bad_sample)  # 19 usable samples
    # a buffer of one: each rank reads its one shard in stored order, so the counts are known at every step
    overrides = FAST + ["data.dataset=webdataset", "eval.benchmarks=null", f"data.train_data={tmp_path / 'bad'}",
                        f"data.test_data={out / 'test'}", "data.batch_size=16", "data.shuffle_buffer=1",
                        "schedule.steps=3"]
    mp.spawn(_ddp_rank, args=(2, free_port(), overrides, tmp_path / "run"), nprocs=2, join=True)
    logged = [(r["step"], r["data/skipped_corrupt_image"], r["data/skipped_missing_caption"])
              for r in map(json.loads, (tmp_path / "run" / "history.jsonl").read_text().splitlines())
              if "train/loss" in r]
    # each rank yields 8 usable samples per step from the shard it drew in each pass (seeded by the run)
    source, seed = ShardSource(str(tmp_path / "bad"), 1), stream_seed(0, 0)
    rows = {"0.tar": range(0, 20), "1.tar": range(20, 40)}
    expected = []
    for step in (1, 2, 3):
        read = []
        for rank in (0, 1):
            drawn = [pass_units(source, seed, p, rank, 2, 0, 1)[0] for p in range(2)]
            read += read_needed([i for shard in drawn for i in rows[Path(shard).name]], 8 * step)
        expected.append((step, float(sum(i in CORRUPT for i in read)), float(sum(i in CAPTIONLESS for i in read))))
    # step 3 takes the rank with 18 usable samples into its second pass while the other is still in its
    # first: ranks move through passes independently, and none waits for the other
    assert logged == expected and expected[:2] == [(1, 1.0, 0.0), (2, 1.0, 1.0)]


def read_needed(rows, usable: int) -> list[int]:
    """The rows read, in order, until `usable` good samples have come out."""
    read = []
    for i in rows:
        read.append(i)
        if sum(j not in CORRUPT + CAPTIONLESS for j in read) == usable:
            return read
    raise AssertionError("not enough usable rows")


# ---- paths, checked before any work --------------------------------------------------------------------


@pytest.mark.parametrize("key, value, message", [
    ("train_data", "{tmp}/missing", r"data.train_data: {tmp}/missing does not exist"),
    ("test_data", "{tmp}/empty", r"data.test_data: directory {tmp}/empty holds no .tar shards; write shards with "
                                 r"`ito-sweeps make-shards DIR`"),
    ("train_data", "{tmp}/s/{{000000..000009}}.tar", r"data.train_data: .* matches 10 missing file\(s\) of 10"),
    ("train_data", "{out}/val", r"data.train_data: 1 shard\(s\) cannot feed 2 Train workers"),
])
def test_bad_paths_fail_before_a_model_is_built(shards, fast_cfg, tmp_path, monkeypatch, key, value, message):
    out, _ = shards
    (tmp_path / "empty").mkdir()
    value, message = value.format(tmp=tmp_path, out=out), message.format(tmp=tmp_path)
    paths = {"train_data": str(out / "train"), "test_data": str(out / "test"), key: value}
    cfg = fast_cfg("data.dataset=webdataset", "eval.benchmarks=null", *(f"data.{k}={v}" for k, v in paths.items()))
    world = 2 if "Train workers" in message else 1
    with pytest.raises(C.ConfigError, match=message):
        check_data_paths(cfg.data, world)
    monkeypatch.setattr(loop, "world", lambda: (0, world))
    monkeypatch.setattr(loop, "ITOModel", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(C.ConfigError, match=message):
        train(cfg)


def test_csv_paths_and_keys_are_checked(shards, tmp_path):
    out, _ = shards
    base = ["data.dataset=csv", "eval.every=0", f"data.test_data={out / 'csv' / 'test.csv'}"]
    (tmp_path / "empty.csv").write_text("")
    for train_data, extra, message in [
        (tmp_path / "none.csv", [], r"data.train_data: CSV file .*none.csv does not exist"),
        (tmp_path / "empty.csv", [], r"data.train_data: CSV file .*empty.csv is empty"),
        (out / "csv" / "train.csv", [], r"data.csv_image_key: column 'filepath' is not in .*train.csv"),  # tab default
        (out / "csv" / "train.csv", ["data.csv_separator=','", "data.csv_caption_key=caption"],
         r"data.csv_caption_key: column 'caption' is not in"),
    ]:
        with pytest.raises(C.ConfigError, match=message):
            check_data_paths(C.load(None, base + extra + [f"data.train_data={train_data}"]).data)


def test_config_demands_paths_for_streams_only():
    with pytest.raises(C.ConfigError, match="data.train_data: required for data.dataset=webdataset"):
        C.load(None, ["data.dataset=webdataset"])
    with pytest.raises(C.ConfigError, match="data.val_data: required for data.dataset=csv"):
        C.load(None, ["data.dataset=csv", "data.train_data=a.csv", "data.test_data=b.csv"])  # eval.every=100
    with pytest.raises(C.ConfigError, match="data.train_data: only read for data.dataset=webdataset or csv"):
        C.load(None, ["data.train_data=shards/"])
    # a stream's size is what it holds: no num_train >= batch_size check
    C.load(None, ["data.dataset=webdataset", "data.train_data=a", "data.test_data=b", "eval.every=0",
                  "data.num_train=1"])


def test_remote_shards_are_not_checked_locally():
    cfg = stream_cfg("data.train_data=s3://bucket/{000000..000003}.tar", "data.test_data=https://host/test.tar").data
    check_data_paths(cfg, world_size=4)
    with pytest.raises(C.ConfigError, match="4 shard"):
        check_data_paths(cfg, world_size=8)


# ---- training on files ---------------------------------------------------------------------------------


def test_training_on_shards_evaluates_its_own_split_and_benchmark_files(shards, fast_cfg, tmp_path):
    out, _ = shards
    shutil.copytree(out / "val", tmp_path / "bare" / "val")  # no class files next to it or above: no labels
    # the run's own held-out data (retrieval needs no labels), and the labelled test files as a benchmark scored
    # only by the test pass, with a probe fitted on the labelled training shards
    suite = (f"[{{name: heldout, tasks: [zeroshot_retrieval]}}, {{name: labelled, path: {out / 'test'}, val_size: 0, "
             f"tasks: [zeroshot_classification, linear_probe], train_path: {out / 'train'}, train_size: 48}}]")
    seen = []
    metrics = train(fast_cfg("data.dataset=webdataset", f"data.train_data={out / 'train'}",
                             f"data.val_data={tmp_path / 'bare' / 'val'}", f"data.test_data={out / 'test'}",
                             "data.num_workers=2", "eval.every=4", f"eval.benchmarks={suite}"),
                    tmp_path / "run", on_metrics=lambda step, record: seen.append(record))
    losses = [r["train/loss"] for r in seen if "train/loss" in r]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert all(r["data/skipped_corrupt_image"] == r["data/skipped_missing_caption"] == 0
               for r in seen if "train/loss" in r)
    assert 0 <= metrics["labelled/zeroshot_top1"] <= 1 and 0 <= metrics["labelled/probe_top1"] <= 1
    assert metrics["labelled/samples"] == metrics["heldout/samples"] == 32
    (val,) = [r for r in seen if "val/heldout/i2t_r1" in r]
    assert not any(k.startswith("val/labelled/") for k in val) and "val/zeroshot_avg" not in val
    assert {"val/heldout/t2i_r10", "val/heldout/modality_gap", "val/heldout/uniformity_union"} <= set(val)
    sample = np.load(tmp_path / "run" / "embeddings.npz")
    assert sample["image"].shape[0] == 32 and "label" not in sample  # from heldout: retrieval has no classes


def test_classifying_an_unlabelled_validation_split_is_refused(shards, fast_cfg, tmp_path):
    out, _ = shards
    shutil.copytree(out / "val", tmp_path / "bare" / "val")
    cfg = fast_cfg("data.dataset=webdataset", f"data.train_data={out / 'train'}", "eval.every=4",
                   f"data.val_data={tmp_path / 'bare' / 'val'}", f"data.test_data={out / 'test'}",
                   "eval.benchmarks=[{name: own, tasks: [zeroshot_classification]}]")
    with pytest.raises(C.ConfigError, match=r"data.val_data: no classnames.txt and zeroshot_classification_templates"
                                            r".txt beside .*bare/val or one folder up; benchmark 'own' classifies"):
        check_benchmark_paths(cfg)