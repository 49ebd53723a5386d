"""`ito-sweeps evaluate` and `ito-sweeps export --run`: the printed table, refusals before any model loads, and
a real sweep trial (local Ray, SQLite MLflow) exported, re-evaluated and logged to its own run.

Expected numbers come from open_clip alone (zero-shot by its own classifier builder), from what the training
loop logged itself, and from reading the run back with MlflowClient.
"""
import re

import open_clip
import pytest
import ray
import torch
import yaml
from mlflow.tracking import MlflowClient
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from safetensors.torch import load_file
from torchvision.transforms.functional import to_pil_image

from ito_sweeps import config as C
from ito_sweeps.cli import main
from ito_sweeps.data.digits import load_digits_set
from ito_sweeps.models.export import export
from ito_sweeps.sweep import tracking
from ito_sweeps.sweep.runner import run_sweep
from ito_sweeps.train.loop import train
from tests.conftest import FAST

DIGITS, SCENES = 40, 24
SUITE = {"eval": {"benchmarks": [
    {"name": "digits", "embedded": "digits", "seed": 0, "tasks": ["zeroshot_classification", "linear_probe"],
     "size": DIGITS, "train_size": 60},
    {"name": "shapes", "embedded": "scenes", "tasks": ["zeroshot_retrieval"], "size": SCENES},
]}}


def write(path, doc):
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    train(C.load(None, FAST + ["eval.benchmarks=[]", "objective.name=clip", "schedule.steps=1"]), tmp / "run")
    return export(tmp / "run", tmp / "exported")


def printed_values(out: str) -> dict[str, float]:
    """BENCHMARK/METRIC -> value from the printed table (benchmark headers, indented metric lines)."""
    values, bench = {}, None
    for line in out.splitlines()[1:]:
        if not line.startswith("  "):
            break
        header = re.fullmatch(r"  (\S+) \((\d+) samples\)", line)
        metric = re.fullmatch(r"    (\S+) +(-?\d+\.\d{4})", line)
        if header:
            bench = header[1]
            values[f"{bench}/samples"] = float(header[2])
        elif metric:
            values[f"{bench}/{metric[1]}"] = float(metric[2])
        else:
            key, value = line.split()
            values[key] = float(value)
    return values


def test_evaluate_prints_one_block_per_benchmark(exported, tmp_path, capsys):
    suite = write(tmp_path / "suite.yaml", SUITE)
    assert main(["evaluate", "--model", str(exported), "--suite", str(suite), "--device", "cpu",
                 "--batch-size", "16"]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""  # library warnings (a probe on 60 samples) go to logging
    assert printed.out.splitlines()[0] == f"local-dir:{exported} on {suite} (test split):"
    values = printed_values(printed.out)
    assert values["digits/samples"] == DIGITS and values["shapes/samples"] == SCENES
    assert {f"shapes/{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} <= set(values)
    assert "shapes/zeroshot_top1" not in values and 0 <= values["digits/probe_top1"] <= 1
    assert values["zeroshot_avg"] == values["digits/zeroshot_top1"]  # the one benchmark that classifies

    # zero-shot top-1 of the digits the suite renders (seed 0, the first 40), by open_clip alone
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{exported}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{exported}")
    digits = load_digits_set(0, 32, 5).subset(slice(0, DIGITS))
    with torch.no_grad():
        images = model.eval().encode_image(torch.stack([preprocess(to_pil_image(i)) for i in digits.images]))
        classes = build_zero_shot_classifier(model, tokenizer, digits.classnames["digit"], digits.templates["digit"],
                                             device="cpu")
    top1 = ((images @ classes).argmax(dim=1) == digits.labels["digit"]).double().mean().item()
    assert values["digits/zeroshot_top1"] == pytest.approx(top1, abs=5e-5)

    # the same model as an open_clip name with local weights
    weights = exported / "open_clip_model.safetensors"
    assert main(["evaluate", "--model", "tiny", "--pretrained", str(weights), "--suite", str(suite), "--device", "cpu",
                 "--batch-size", "16"]) == 0
    again = capsys.readouterr().out
    assert again.splitlines()[0] == f"tiny --pretrained {weights} on {suite} (test split):"
    assert again.splitlines()[1:] == printed.out.splitlines()[1:]


@pytest.mark.parametrize("suite, model, message", [
    ({"eval": {"benchmarks": [{"name": "coco", "tasks": ["zeroshot_retrieval"], "path": "{tmp}/coco"}]}}, "broken",
     r"error: eval.benchmarks\[0\] \(coco\).path: {tmp}/coco does not exist"),
    ({"eval": {"benchmarks": [{"name": "heldout", "tasks": ["zeroshot_retrieval"]}]}}, "broken",
     r"error: eval.benchmarks\[0\] \(heldout\): reads the run's own held-out data .* only a sweep trial has"),
    ({"data": {"dataset": "digits"}}, "broken", r"error: eval.benchmarks: .* lists none, and the default suite of "
                                                r"data.dataset digits reads a run's own data"),
    ({"eval": {"benchmarks": [{"name": "d", "embedded": "digits", "sizee": 4}]}}, "broken",
     r"error: eval.benchmarks\[0\].sizee: unknown key"),
    (SUITE, "{tmp}/missing", r"error: --model {tmp}/missing: no such folder, and an open_clip model name needs "
                             r"--pretrained"),
], ids=["missing path", "run's own data", "no benchmarks", "unknown key", "no such model"])
def test_refusals_name_the_key_before_a_model_loads(tmp_path, capsys, suite, model, message):
    # a folder open_clip cannot load: any refusal seen is one made before loading it
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "open_clip_config.json").write_text("{}")
    suite_file = write(tmp_path / "suite.yaml", yaml.safe_load(yaml.safe_dump(suite).replace("{tmp}", str(tmp_path))))
    model = str(tmp_path / "broken") if model == "broken" else model.format(tmp=tmp_path)
    assert main(["evaluate", "--model", model, "--suite", str(suite_file)]) == 2
    err = capsys.readouterr().err
    assert re.search(message.format(tmp=tmp_path), err) and len(err.splitlines()) == 1


def test_export_run_refuses_what_is_not_a_trial_with_checkpoints(exported, tmp_path, capsys, store_uri):
    uri = store_uri
    client = MlflowClient(uri)
    experiment = client.create_experiment("x")
    plain = client.create_run(experiment, run_name="plain").info.run_id
    (tmp_path / "empty").mkdir()
    bare = client.create_run(experiment, tags={"checkpoints": str(tmp_path / "empty")}).info.run_id
    capsys.readouterr()  # MLflow announces the new store's tables
    for run, message in [
        ("0" * 32, f"error: run {'0' * 32}: no such run in {uri}"),
        (plain, f"error: run {plain} (plain) is not a sweep trial (no 'checkpoints' tag)"),
        (bare, f"error: run {bare}: {tmp_path / 'empty'} holds no checkpoint_*/checkpoint.pt; the trial stopped"),
    ]:
        assert main(["export", "--run", run, "--tracking-uri", uri, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and len(err.splitlines()) == 1
    assert main(["export", "--run", plain, "--tracking-uri", f"sqlite:///{tmp_path}/none.db", "--out", "o"]) == 2
    assert f"no MLflow store at {tmp_path}/none.db" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "out").exists()

    # any model's metrics can be logged to any run: here at step 0, under test/
    suite = write(tmp_path / "suite.yaml", SUITE)
    assert main(["evaluate", "--model", str(exported), "--suite", str(suite), "--run", plain, "--tracking-uri", uri,
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    values = printed_values(printed.out)
    logged = client.get_run(plain).data.metrics
    assert set(logged) == {f"test/{k}" for k in values}
    assert logged["test/digits/zeroshot_top1"] == pytest.approx(values["digits/zeroshot_top1"], abs=5e-5)
    assert [m.step for m in client.get_metric_history(plain, "test/shapes/t2i_r5")] == [0]


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_sweep_trial_is_exported_and_reevaluated_on_its_own_data(local_ray, tmp_path, capsys, store_uri):
    config = {**{k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in FAST)}, "schedule.steps": 2,
              "eval.benchmarks": [{"name": "scenes", "tasks": ["zeroshot_classification", "zeroshot_retrieval"]}]}
    space = write(tmp_path / "one.yaml", {
        "config": config, "search": "grid", "metric": "test/scenes/zeroshot_top1", "mode": "max", "seeds": [0],
        "variants": [{"name": "CLIP", "set": {"objective.name": "clip"}}],
        "resources": {"num_workers": 1, "cpus_per_worker": 1}, "max_concurrent_trials": 1,
    })
    uri = store_uri
    summary = run_sweep(space, storage=tmp_path / "ray", tracking_uri=uri, system_metrics_s=1)
    client = MlflowClient(summary.tracking_uri)
    (trial,) = tracking.trial_runs(client, summary.experiment_id, summary.parent_run_id)
    run_id, trained = trial.info.run_id, trial.data.metrics
    capsys.readouterr()

    assert main(["export", "--run", run_id, "--tracking-uri", uri, "--out", str(tmp_path / "exported")]) == 0
    assert f"exported run {run_id} (" in capsys.readouterr().out
    (ckpt,) = (tmp_path / "ray").rglob("checkpoint_*/checkpoint.pt")
    state = torch.load(ckpt, weights_only=True)
    towers = {k.removeprefix("clip."): v for k, v in state["model"].items() if k.startswith("clip.")}
    saved = load_file(str(tmp_path / "exported" / "open_clip_model.safetensors"))
    assert saved.keys() == towers.keys() and all(torch.equal(saved[k], towers[k]) for k in towers)

    # a benchmark without path or embedded reads the trial's own test split: the numbers training logged
    suite = write(tmp_path / "suite.yaml", {"eval": {"benchmarks": [
        {"name": "own", "tasks": ["zeroshot_classification", "zeroshot_retrieval"]}]}})
    assert main(["evaluate", "--model", f"run:{run_id}", "--suite", str(suite), "--tracking-uri", uri,
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    assert f"logged as test/BENCHMARK/METRIC to MLflow run {run_id}" in printed.out and printed.err == ""
    logged = client.get_run(run_id).data.metrics
    for key, value in trained.items():
        if key.startswith("test/scenes/"):
            assert logged[key.replace("/scenes/", "/own/")] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert [m.step for m in client.get_metric_history(run_id, "test/own/zeroshot_top1")] == [state["step"]]
