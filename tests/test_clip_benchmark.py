"""LAION's CLIP_benchmark and `ito-sweeps evaluate` measure the same numbers on make-shards' CLIP_benchmark files.

A briefly trained model is exported; make-shards writes its training config's suite in CLIP_benchmark's
layout with a suite.yaml over those files. On them:
- `ito-sweeps evaluate` of the exported model reproduces the metrics the training loop computed in memory;
- CLIP_benchmark (from PyPI: its own webdataset loader, open_clip's `local-dir:` loading and transforms, its
  own prompt-ensemble classifier and recall@k, fp32) gives the same zero-shot classification and retrieval
  numbers as `ito-sweeps evaluate`;
- the linear probe equals scikit-learn's, fitted on features computed here with open_clip alone from the tar
  files read with Python's tarfile.
"""
import io
import json
import sys
import tarfile

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ito_sweeps import config as C
from ito_sweeps.cli import main
from ito_sweeps.evaluate.command import evaluate_model
from ito_sweeps.models.export import export
from ito_sweeps.train.loop import train
from tests.conftest import FAST, SMALL_SUITE

NUM_TEST = 48
CLASSIFIED = ("scenes", "scenes_count", "digits")


def accuracy(output, target, topk=(1,)):
    """clip-benchmark 1.6.2's (the latest) accuracy(), which calls float() on a shape-(1,) array that NumPy 2.4
    refuses: the same count, read through .item()."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clip_benchmark")
    # FAST's suite is the default one at test sizes: the run's own data, its count task, digits transfer
    overrides = FAST + [f"data.num_test={NUM_TEST}", "objective.name=clip", "schedule.steps=6"]
    in_memory = train(C.load(None, overrides), tmp / "run")
    exported = export(tmp / "run", tmp / "exported")
    out = tmp / "shards"
    assert main(["make-shards", str(out), *(f"--set={o}" for o in overrides), "--shard-size", "16",
                 "--clip-benchmark"]) == 0
    files = out / "clip_benchmark"
    ours = evaluate_model(str(exported), files / "suite.yaml", device="cpu").metrics
    return in_memory, ours, exported, files


def test_the_files_suite_reproduces_the_in_memory_suite(bench):
    in_memory, ours, _, files = bench
    written = yaml.safe_load((files / "suite.yaml").read_text())["eval"]["benchmarks"]
    assert [b["name"] for b in written] == [b["name"] for b in SMALL_SUITE]
    expected = {k: v for k, v in in_memory.items() if k not in ("train_time_s", "steps")}
    assert set(ours) == set(expected)
    # the same pixels (PNG is lossless), captions, labels and batches: the same numbers
    assert ours == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert 0 < ours["scenes/zeroshot_top5"] < 1 and 0 < ours["scenes/t2i_r10"] < 1  # not trivial


# what CLIP_benchmark's own pipeline warns about (its WebDataset call, its per-class precision report)
@pytest.mark.filterwarnings("ignore:WebDataset\\(shardshuffle=...\\) is None:UserWarning",
                            "ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_clip_benchmark_measures_what_ito_sweeps_evaluate_measures(bench, tmp_path, monkeypatch):
    _, ours, exported, files = bench
    common = ["eval", "--model", f"local-dir:{exported}", "--output", str(tmp_path / "{dataset}_{task}.json"),
              "--num_workers", "0", "--no_amp", "--batch_size", "16"]
    runs = [
        [*common, "--dataset", *(f"wds/{name}" for name in CLASSIFIED), "--dataset_root", f"{files}/wds_{{dataset}}"],
        [*common, "--dataset", "wds/scenes_retrieval", "--dataset_root", str(files / "wds_scenes_retrieval"),
         "--task", "zeroshot_retrieval", "--recall_k", "1", "5", "10"],
    ]
    from clip_benchmark import cli
    from clip_benchmark.metrics import zeroshot_classification

    monkeypatch.setattr(zeroshot_classification, "accuracy", accuracy)
    for argv in runs:  # its own command line, in this process: its imports are most of its time
        monkeypatch.setattr(sys, "argv", ["clip_benchmark", *argv])
        cli.main()

    # The same images, prompts, fp32 embeddings and argmax; only float summation order differs (batch sizes),
    # which moves scores by ~1e-7 and, on these runs, flips no ranking: the counts agree exactly
    for name in CLASSIFIED:
        theirs = json.loads((tmp_path / f"{name}_zeroshot_classification.json").read_text())["metrics"]
        assert theirs["acc1"] == pytest.approx(ours[f"{name}/zeroshot_top1"], abs=1e-9)
        recall = ours[f"{name}/zeroshot_mean_per_class_recall"]
        assert theirs["mean_per_class_recall"] == pytest.approx(recall, abs=1e-9)
        if len((files / f"wds_{name}" / "classnames.txt").read_text().splitlines()) >= 5:
            assert theirs["acc5"] == pytest.approx(ours[f"{name}/zeroshot_top5"], abs=1e-9)
        else:  # CLIP_benchmark reports no top-5 with fewer classes; ours is then top-C, always 1
            assert np.isnan(theirs["acc5"]) and ours[f"{name}/zeroshot_top5"] == 1
    # its image retrieval ranks the images for each caption (our t2i), its text retrieval the captions for
    # each image (our i2t); it averages in float32
    theirs = json.loads((tmp_path / "scenes_retrieval_zeroshot_retrieval.json").read_text())["metrics"]
    for k in (1, 5, 10):
        assert theirs[f"image_retrieval_recall@{k}"] == pytest.approx(ours[f"scenes/t2i_r{k}"], abs=1e-6)
        assert theirs[f"text_retrieval_recall@{k}"] == pytest.approx(ours[f"scenes/i2t_r{k}"], abs=1e-6)
    assert ours["scenes/t2i_r1"] < ours["scenes/t2i_r10"] < 1  # a ranking, not a tie or a trivial case


def test_linear_probe_equals_scikit_learn_on_open_clips_own_features(bench):
    _, ours, exported, files = bench
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{exported}")
    model.eval()
    for name in ("scenes", "digits"):
        train_x, train_y = features(model, preprocess, files / f"wds_{name}" / "train")
        test_x, test_y = features(model, preprocess, files / f"wds_{name}" / "test")
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000, random_state=0))
        probe.fit(train_x, train_y)
        expected = probe.score(test_x, test_y)
        # features of other batch sizes may differ in the last bits, which moves no prediction here
        assert ours[f"{name}/probe_top1"] == pytest.approx(expected, abs=1e-9)
    assert 0 < ours["digits/probe_top1"] < 1


def features(model, preprocess, split) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised image embeddings and labels of a CLIP_benchmark split, in shard and key order."""
    images, labels = [], []
    for shard in range(int((split / "nshards.txt").read_text())):
        with tarfile.open(split / f"{shard}.tar") as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for key in sorted({n.split(".")[0] for n in files}):
            images.append(preprocess(Image.open(io.BytesIO(files[f"{key}.png"])).convert("RGB")))
            labels.append(int(files[f"{key}.cls"]))
    with torch.no_grad():
        x = F.normalize(model.encode_image(torch.stack(images)), dim=1)
    return x.numpy(), np.array(labels)
