"""The torch-free declarations (ito_sweeps/catalog.py) agree with the code behind them.

Configs and search spaces are checked against the catalog alone, so a name declared there but not
implemented, a metric name the evaluation suite never reports, or a key declared unused that training does
read would each let a mistake through, or merge two different trials into one. The last is tested by
training: two configs that differ only in a key the catalog calls unused must train bit-identically.
"""
import contextlib
import subprocess
import sys

import pytest
import torch

from ito_sweeps import catalog
from ito_sweeps import config as C
from ito_sweeps.data.loader import build_splits
from ito_sweeps.evaluate.suite import Encoder, evaluate_suite
from ito_sweeps.models.towers import ITOModel, build_tokenizer, eval_transform
from ito_sweeps.objectives.latent_structure import REGULARIZERS
from ito_sweeps.objectives.registry import OBJECTIVES
from ito_sweeps.train.loop import train


def test_declared_names_are_the_implemented_ones():
    assert set(OBJECTIVES) == set(catalog.OBJECTIVES)
    assert tuple(REGULARIZERS) == catalog.REGULARIZERS


@pytest.mark.parametrize("split", ["val", "test"])
def test_the_metric_names_are_what_evaluation_reports(fast_cfg, split):
    # every task, a transfer set, one benchmark left out of validation passes (val_size 0) and one whose
    # validation passes skip its probe and retrieval (val_tasks)
    suite = ('[{name: scenes, tasks: [zeroshot_classification, zeroshot_retrieval, linear_probe], '
             'val_tasks: [zeroshot_classification]}, '
             '{name: count, label: count}, {name: digits, embedded: digits, seed: 0, size: 40, train_size: 40, '
             'tasks: [linear_probe, zeroshot_retrieval]}, {name: shapes, embedded: scenes, size: 30, val_size: 0}]')
    cfg = fast_cfg(f"eval.benchmarks={suite}", "eval.every=2")
    model = ITOModel(cfg, with_fusion=False, independent_heads=False)
    encoder = Encoder(model.clip, build_tokenizer(cfg), eval_transform(cfg), torch.device("cpu"), 64,
                      contextlib.nullcontext)
    metrics, _ = evaluate_suite(encoder, cfg, split, own=build_splits(cfg.data))
    assert set(metrics) == set(cfg.eval.metric_names(split))
    assert ("shapes/zeroshot_top1" in metrics) == (split == "test")
    assert ("scenes/probe_top1" in metrics) == ("scenes/i2t_r1" in metrics) == (split == "test")
    assert "scenes/zeroshot_top1" in metrics
    assert metrics["zeroshot_avg"] == pytest.approx(
        sum(v for k, v in metrics.items() if k.endswith("/zeroshot_top1")) / (3 if split == "test" else 2))


def test_checking_configs_and_spaces_imports_no_heavy_library():
    script = (
        "import sys\n"
        "from ito_sweeps import config\n"
        "from ito_sweeps.sweep.space import load_space\n"
        "config.load(None, ['objective.name=latent_structure', 'objective.latent_structure.regularizers=[sep]'])\n"
        "for name in ('alignment_variants', 'fusion_weight_optuna', 'smoke'):\n"
        "    load_space(f'search_spaces/{name}.yaml', 'gpu')\n"
        "print(sorted({'torch', 'open_clip', 'sklearn', 'ray', 'mlflow', 'optuna', 'pandas'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# (base overrides, the key declared unused there, two values of it)
UNUSED = [
    ("objective.name=clip", "fusion.depth", 1, 3),
    ("objective.name=clip", "objective.alignment", "views", "views_captions"),
    ("objective.name=clip", "objective.unialign.uniformity_weight", 1.0, 3.0),
    ("objective.name=clip", "data.text_augment.delete_p", 0.1, 0.6),
    ("objective.name=ito fusion.depth=0", "objective.fusion_weight", 2.0, 5.0),
    ("objective.name=ito objective.fusion_weight=0", "fusion.readout", "cls", "mean"),
    ("objective.name=ito objective.alignment=captions", "objective.num_views", 2, 3),
    ("objective.name=ito objective.alignment=views", "objective.num_captions", 2, 3),
    ("objective.name=unialign", "objective.unialign.centroid_tau", 0.5, 2.0),
    ("objective.name=latent_structure objective.latent_structure.regularizers=[br]",
     "objective.latent_structure.sep_weight", 1.0, 5.0),
    ("objective.name=latent_structure objective.latent_structure.regularizers=[gc]",
     "objective.latent_structure.bridge_t", 0.25, 0.75),
]
STEPS = ["schedule.steps=3", "data.num_train=64", "data.batch_size=16", "data.num_test=32", "data.num_val=16",
         "eval.probe_train_size=32", "data.captions_per_image=2"]


def losses(fast_cfg, overrides: list[str]) -> list[float]:
    seen = []
    train(fast_cfg(*STEPS, *overrides), on_metrics=lambda step, record: seen.append(record.get("train/loss")))
    return [loss for loss in seen if loss is not None]


@pytest.mark.parametrize("base, key, one, other", UNUSED, ids=[case[1] for case in UNUSED])
def test_a_key_declared_unused_cannot_change_training(fast_cfg, base, key, one, other):
    overrides = base.split()
    for value in (one, other):
        assert key in catalog.unused_keys(fast_cfg(*overrides, f"{key}={value}").flat())
    assert losses(fast_cfg, [*overrides, f"{key}={one}"]) == losses(fast_cfg, [*overrides, f"{key}={other}"])


def test_the_same_comparison_tells_a_key_that_is_read(fast_cfg):
    """The control: ITO with lambda 2 reads fusion.depth, and its losses differ with it."""
    assert "fusion.depth" not in catalog.unused_keys(C.load(None, ["objective.name=ito"]).flat())
    assert losses(fast_cfg, ["objective.name=ito", "fusion.depth=1"]) != losses(fast_cfg, ["objective.name=ito", "fusion.depth=3"])


def test_fusion_is_switched_off_by_one_key_only():
    both_off = catalog.unused_keys(C.load(None, ["objective.fusion_weight=0", "fusion.depth=0"]).flat())
    assert "fusion.depth" in both_off and "objective.fusion_weight" not in both_off
    depth_off = catalog.unused_keys(C.load(None, ["fusion.depth=0"]).flat())
    assert "objective.fusion_weight" in depth_off and "fusion.depth" not in depth_off and "fusion.heads" in depth_off
