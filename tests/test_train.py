"""The training loop end to end on the embedded data: repeatability, resume, NaN, export, CLI."""
import json
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from ito_sweeps import config as C
from ito_sweeps.cli import main
from ito_sweeps.models.export import export
from ito_sweeps.models.towers import ITOModel, build_tokenizer
from ito_sweeps.objectives import build_objective
from ito_sweeps.train import checkpoint
from ito_sweeps.train.loop import NonFiniteLoss, seed_everything, train
from tests.conftest import FAST, free_port, gloo_group


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def weights(run_dir):
    return checkpoint.load(checkpoint.latest(run_dir / "checkpoints"))["model"]


def test_run_folder_and_metrics(fast_cfg, tmp_path):
    seen, reports = [], []
    metrics = train(fast_cfg("eval.every=2", "eval.embeddings_sample=40"), tmp_path / "run",
                    on_metrics=lambda s, r: seen.append((s, r)), on_report=lambda *a: reports.append(a))
    run = tmp_path / "run"
    assert C.load(run / "config.yaml") == fast_cfg("eval.every=2", "eval.embeddings_sample=40")
    assert json.loads((run / "metrics.json").read_text()) == pytest.approx(metrics)
    # every metric the suite declares (what sweeps and table specs are checked against), and nothing else
    assert set(metrics) == {*C.load(run / "config.yaml").eval.metric_names("test"), "train_time_s", "steps"}
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["scenes/samples"] == 64 and metrics["digits/samples"] == 48
    train_steps = [s for s, r in seen if "train/loss" in r]
    assert train_steps == [1, 2, 3, 4]
    record = dict(seen)[1]
    assert {"train/loss", "train/loss_align", "train/loss_fusion", "train/lr", "train/samples_per_s",
            "train/data_wait_frac", "train/logit_scale"} <= set(record)
    assert 0 <= record["train/data_wait_frac"] <= 1 and record["train/samples_per_s"] > 0
    assert [s for s, r in seen if "val/scenes/zeroshot_top1" in r] == [2, 4]  # every eval.every steps and at the end
    # each validation pass is reported once; the end adds the test metrics and the final checkpoint
    assert [(step, ckpt) for step, _, ckpt in reports] == [(2, None), (4, run / "checkpoints" / "step_00000004.pt")]
    assert set(reports[0][1]) == {f"val/{k}" for k in metrics if k not in ("train_time_s", "steps")}
    val_at_end = next(r for s, r in seen if s == 4 and "val/scenes/zeroshot_top1" in r)
    assert reports[1][1] == {**val_at_end, **{f"test/{k}": v for k, v in metrics.items()}}
    assert (run / "checkpoints" / "last.pt").is_file()
    sample = np.load(run / "embeddings.npz")
    assert sample["image"].shape == sample["text"].shape == (40, 128) and sample["label"].shape == (40,)
    assert np.allclose(np.linalg.norm(sample["image"], axis=1), 1, atol=1e-5)
    assert sample["classnames"][sample["label"][0]] in str(sample["caption"][0])


def test_seeded_runs_repeat_exactly_and_seeds_differ(fast_cfg, tmp_path):
    train(fast_cfg(), tmp_path / "a")
    train(fast_cfg(), tmp_path / "b")
    train(fast_cfg("run.seed=1"), tmp_path / "c")
    strip = lambda h: [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k and "wait" not in k}  # noqa: E731
                       for r in h]
    assert strip(history(tmp_path / "a")) == strip(history(tmp_path / "b"))
    a, b, c = weights(tmp_path / "a"), weights(tmp_path / "b"), weights(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_continues_exactly(fast_cfg, tmp_path):
    train(fast_cfg("schedule.steps=6", "run.checkpoint_every=3"), tmp_path / "full")
    # the interrupted run: same schedule, stopped after its step-3 checkpoint
    interrupted = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        def stop(step, record):
            if step == 4:
                raise KeyboardInterrupt
        train(fast_cfg("schedule.steps=6", "run.checkpoint_every=3"), interrupted, on_metrics=stop)
    assert checkpoint.load(checkpoint.latest(interrupted / "checkpoints"))["step"] == 3
    train(fast_cfg("schedule.steps=6", "run.checkpoint_every=3"), interrupted,
          resume=checkpoint.latest(interrupted / "checkpoints"))
    full, resumed = weights(tmp_path / "full"), weights(interrupted)
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_a_run_that_keeps_weights_only_writes_its_last_checkpoint_without_the_optimizer_state(fast_cfg, tmp_path):
    cfg = fast_cfg("schedule.steps=6", "run.checkpoint_every=3")
    train(cfg, tmp_path / "full")
    train(fast_cfg("schedule.steps=6", "run.checkpoint_every=3", "run.final_optimizer_state=false"), tmp_path / "lean")
    lean = tmp_path / "lean" / "checkpoints"
    assert sorted(p.name for p in lean.iterdir()) == \
        ["last.pt", "step_00000003.optimizer.pt", "step_00000003.pt", "step_00000006.pt"]
    last = checkpoint.load(checkpoint.latest(lean))  # not step 3's optimizer state, under the last step's weights
    assert last["step"] == 6 and "optimizer" not in last
    full = checkpoint.load(tmp_path / "full" / "checkpoints" / "step_00000006.pt")
    assert all(torch.equal(full["model"][k], last["model"][k]) for k in full["model"])  # the same run
    with pytest.raises(C.ConfigError, match="without its optimizer state"):
        train(fast_cfg("schedule.steps=8", "run.checkpoint_every=3"), tmp_path / "lean", resume=checkpoint.latest(lean))


def test_resume_refuses_a_different_objective(fast_cfg, tmp_path):
    train(fast_cfg(), tmp_path / "run")
    with pytest.raises(C.ConfigError, match="objective.name: differs from the checkpoint"):
        train(fast_cfg("objective.name=clip"), tmp_path / "run", resume=checkpoint.latest(tmp_path / "run" / "checkpoints"))


def test_non_finite_loss_stops_naming_the_step_and_keeps_no_bad_checkpoint(fast_cfg, tmp_path):
    cfg = fast_cfg("optim.lr=1e30", "schedule.warmup_steps=0", "schedule.steps=8", "run.log_every=4",
                   "run.checkpoint_every=1")
    with pytest.raises(NonFiniteLoss, match=r"loss became NaN or infinite at step (\d+); lower optim.lr") as err:
        train(cfg, tmp_path / "run")
    bad_step = int(err.value.args[0].split("at step ")[1].split(";")[0])
    saved = checkpoint.load(checkpoint.latest(tmp_path / "run" / "checkpoints"))
    assert saved["step"] < bad_step
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


SEPARATION_AND_FUSION = ("objective.name=latent_structure", "objective.latent_structure.regularizers=[sep]",
                         "objective.fusion_weight=2")


@pytest.mark.parametrize("overrides", [(), SEPARATION_AND_FUSION], ids=["ito", "latent_structure sep + fusion"])
def test_export_is_plain_open_clip_with_bit_identical_embeddings(fast_cfg, tmp_path, overrides):
    cfg = fast_cfg(*overrides)
    train(cfg, tmp_path / "run")
    out = export(tmp_path / "run", tmp_path / "exported")
    saved = load_file(str(out / "open_clip_model.safetensors"))
    assert not any("fusion" in k or "independent" in k for k in saved)

    heads = bool(overrides)
    trained = ITOModel(cfg, with_fusion=True, independent_heads=heads).eval()
    trained.load_state_dict(weights(tmp_path / "run"))
    assert sum(p.numel() for p in trained.fusion.parameters()) > 0  # there was a fusion module to drop
    if heads:
        assert sum(p.numel() for p in trained.independent.parameters()) > 0  # and heads
    plain, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    plain.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    captions = ["a large red circle above a small blue square", "one green diamond"]
    assert torch.equal(tokenizer(captions), build_tokenizer(cfg)(captions))
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in trained.clip.parameters())

    images = torch.randn(3, 3, cfg.data.image_size, cfg.data.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(plain.encode_image(images), trained.encode_image(images))
        assert torch.equal(plain.encode_text(tokenizer(captions)), trained.encode_text(tokenizer(captions)))


def test_cli_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "train" in out and "export" in out
    assert main(["train", "--set", "objective.fusion_wieght=2", "--out", str(tmp_path / "r")]) == 2
    assert "objective.fusion_wieght: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing was started
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "e")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_cli_train_then_refuses_to_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ito_sweeps.cli", "train", "--out", str(run)]
    for item in FAST:
        cmd += ["--set", item]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "zeroshot_top1" in done.stdout and (run / "metrics.json").is_file()
    # the same command again, in this process (a command's start-up is seconds of imports)
    assert main(cmd[3:]) == 2 and "pass --resume" in capsys.readouterr().err
    assert main(cmd[3:] + ["--set", "schedule.steps=6", "--resume"]) == 0
    assert checkpoint.load(checkpoint.latest(run / "checkpoints"))["step"] == 6
    steps = [r["step"] for r in history(run) if "train/loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # the resumed run picked up at step 5


# ---- data parallel: 2 gloo ranks train exactly like one process holding the global batch -----------


def _ddp_rank(rank, world_size, port, overrides, run_dir):
    torch.set_num_threads(1)
    with gloo_group(rank, world_size, port):
        train(C.load(None, overrides), run_dir)


def test_two_rank_data_parallel_matches_one_process(tmp_path):
    overrides = FAST + ["schedule.steps=3"]
    mp.spawn(_ddp_rank, args=(2, free_port(), overrides, tmp_path / "ddp"), nprocs=2, join=True)
    torch.set_num_threads(1)
    train(C.load(None, overrides), tmp_path / "single")

    loss = lambda run: [r["train/loss"] for r in history(run) if "train/loss" in r]  # noqa: E731
    assert loss(tmp_path / "ddp") == pytest.approx(loss(tmp_path / "single"), rel=1e-5)
    seed_everything(0, False)
    init = ITOModel(C.load(None, overrides), with_fusion=True).state_dict()
    ddp, single = weights(tmp_path / "ddp"), weights(tmp_path / "single")
    for k in single:
        moved_ddp, moved_single = ddp[k] - init[k], single[k] - init[k]
        if k.endswith("attn.in_proj_bias"):
            # the key bias has an exactly zero gradient (softmax ignores a constant shift), so Adam
            # turns float noise into updates: compare only the query and value thirds
            keep = torch.ones_like(moved_single, dtype=torch.bool)
            keep[keep.shape[0] // 3 : 2 * keep.shape[0] // 3] = False
            moved_ddp, moved_single = moved_ddp[keep], moved_single[keep]
        assert (moved_ddp - moved_single).norm() <= 0.02 * moved_single.norm() + 1e-7, k


@pytest.mark.parametrize("overrides", [
    ("objective.name=unialign", "objective.alignment=views_captions", "objective.unialign.centroid_weight=0.5",
     "objective.unialign.volume_weight=1"),
    ("objective.name=latent_structure", "objective.latent_structure.regularizers=[sep, br, gc]"),
    ("objective.name=cyclip", "objective.fusion_weight=1"),
    ("model.view_patch_dropout=0.5", "fusion.patch_dropout=0.5"),
], ids=["unialign", "latent_structure", "cyclip + fusion", "ito + patch dropout"])
def test_objectives_train_end_to_end(fast_cfg, tmp_path, overrides):
    cfg = fast_cfg(*overrides)
    seen = []
    metrics = train(cfg, tmp_path / "run", on_metrics=lambda step, record: seen.append(record))
    objective_losses = set(build_objective(cfg)(_zero_features(cfg)))  # the loss names the objective reports
    assert {f"train/{k}" for k in objective_losses} <= set(seen[0])
    assert all(np.isfinite(r[k]) for r in seen for k in r)
    assert 0.0 <= metrics["scenes/zeroshot_top1"] <= 1.0 and np.isfinite(metrics["scenes/modality_gap"])


def _zero_features(cfg):
    """Features of the shapes the objective asks for, to learn which losses it reports."""
    from ito_sweeps.models.towers import Features

    needs = build_objective(cfg).inputs
    unit = lambda n: torch.nn.functional.normalize(torch.randn(n, 4, 8), dim=-1)  # noqa: E731
    texts = needs.captions + needs.augmented_captions
    return Features(image=unit(needs.views), text=unit(texts), fused=unit(2), logit_scale=torch.tensor(10.0),
                    image_independent=unit(needs.views), text_independent=unit(texts))


def test_digits_data_set_trains_the_clip_baseline(fast_cfg, tmp_path):
    cfg = fast_cfg("data.dataset=digits", "objective.name=clip", "data.captions_per_image=3", "eval.benchmarks=null")
    metrics = train(cfg, tmp_path / "r")
    # digits' default suite: in-domain digits, and transfer to the embedded scenes it never trains on
    assert [b.name for b in cfg.eval.benchmarks] == ["digits", "scenes"] and cfg.eval.benchmarks[1].embedded == "scenes"
    assert 0.0 <= metrics["digits/zeroshot_top1"] <= 1.0 and 0.0 <= metrics["scenes/probe_top1"] <= 1.0


def test_digits_sizes_are_checked_before_work(fast_cfg):
    with pytest.raises(C.ConfigError, match="exceeds the 1797 digits images"):
        train(fast_cfg("data.dataset=digits", "data.num_train=5000", "eval.benchmarks=null"))
