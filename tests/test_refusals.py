"""Mistakes that could only fail later are refused by the command itself, in seconds, before Ray starts and
before anything is recorded: run as a user runs them, against a store that already holds runs."""
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ito_sweeps.cli import main
from ito_sweeps.sweep.feasibility import check_local, local_capacity
from ito_sweeps.sweep.space import SpaceError, load_space

ROOT = Path(__file__).resolve().parents[1]
REFUSE_WITHIN_S = 3.0
SPACE = ("search: grid\nseeds: [0]\n"
         "config: {data.num_train: 256, data.batch_size: 32, schedule.steps: 10, schedule.warmup_steps: 2, eval.every: 5}\n")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store that already holds a sweep's worth of runs."""
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("earlier")
    for name in ("parent", "child a", "child b"):
        client.set_terminated(client.create_run(experiment, run_name=name).info.run_id)
    return uri


def run_count(uri: str) -> int:
    client = MlflowClient(uri)
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))


def refused(tmp_path, store, *args: str, env: dict | None = None) -> str:
    """Run `ito-sweeps ARGS` as a command; it must exit 2 within REFUSE_WITHIN_S with nothing recorded."""
    before = run_count(store)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ito_sweeps.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, **(env or {})})
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert took < REFUSE_WITHIN_S, f"refused after {took:.1f} s"
    assert run_count(store) == before
    assert not (tmp_path / "ray").exists()  # Ray never started a sweep's state
    (line,) = done.stderr.strip().splitlines()  # one line, no traceback
    return line


def sweep_refused(tmp_path, store, text: str, *args: str, env: dict | None = None) -> str:
    space = tmp_path / "space.yaml"
    space.write_text(text)
    line = refused(tmp_path, store, "sweep", str(space), *args, "--tracking-uri", store,
                   "--storage", str(tmp_path / "ray"), env=env)
    assert line.startswith(f"error: {space}")
    return line


def test_a_nan_in_a_profile_config(tmp_path, store):
    line = sweep_refused(tmp_path, store, SPACE + "profiles:\n  cpu: {config: {optim.lr: .nan}}\n")
    assert "profiles.cpu.config[optim.lr]: optim.lr: nan is not a finite number" in line


def test_a_batch_that_does_not_split_over_the_workers(tmp_path, store):
    line = sweep_refused(tmp_path, store, SPACE.replace("batch_size: 32", "batch_size: 33") +
                         "resources: {num_workers: 2, cpus_per_worker: 1}\n")
    assert "config[data.batch_size]: data.batch_size: global batch 33 does not split over 2 workers" in line


def test_a_key_written_twice_in_a_space(tmp_path, store):
    line = sweep_refused(tmp_path, store, SPACE + "seeds: [1]\n")
    assert "seeds: written twice (lines 2 and 4)" in line


def test_a_key_written_twice_in_a_train_config(tmp_path, store):
    config = tmp_path / "run.yaml"
    config.write_text("optim:\n  lr: 1.0e-3\n  weight_decay: 0.1\n  lr: 1.0e-2\n")
    line = refused(tmp_path, store, "train", "--config", str(config), "--out", str(tmp_path / "run"))
    assert line == f"error: {config}: optim.lr: written twice (lines 2 and 4); YAML would silently keep the last " \
                   f"one, so remove or rename one of them"
    assert not (tmp_path / "run").exists()


def test_a_key_written_twice_in_a_table_spec(tmp_path, store):
    spec = tmp_path / "table.yaml"
    spec.write_text("rows: {by: tags.variant}\ncolumns:\n  - {metric: test/zeroshot_top1, scale: 100, scale: 1}\n")
    line = refused(tmp_path, store, "report", "--experiment", "earlier", "--spec", str(spec),
                   "--tracking-uri", store, "--out", str(tmp_path / "report"))
    assert line.startswith(f"error: {spec}: columns[0].scale: written twice (lines 3 and 3)")
    assert not (tmp_path / "report").exists()


def test_gpus_on_a_machine_that_has_none(tmp_path, store):
    # an empty CUDA_VISIBLE_DEVICES hides any GPU from Ray's own detection, as on the 2-core CI machine
    line = sweep_refused(tmp_path, store, SPACE + "profiles:\n  cpu: {}\n  gpu: {resources: {gpus_per_worker: 1}}\n",
                         "--profile", "gpu", env={"CUDA_VISIBLE_DEVICES": ""})
    assert "(profile gpu): profiles.gpu.resources.gpus_per_worker: a trial asks for 1 GPU (1 worker(s) x 1), " \
           "but this machine has 0, and a local Ray would wait for them forever" in line
    assert "--profile cpu" in line and "--address" in line


@pytest.mark.parametrize("name", ["ablation_components", "alignment_variants", "fusion_depth", "fusion_weight",
                                  "fusion_weight_optuna", "patch_dropout", "smoke"])
def test_a_shipped_gpu_profile_whose_placeholder_paths_are_not_filled_in(tmp_path, store, name):
    # past the space's and its report table's checks, the first path the trials read: the training shards
    # (an optuna space's trials are not known ahead: what every one of them reads is checked)
    space = ROOT / "search_spaces" / f"{name}.yaml"
    line = refused(tmp_path, store, "sweep", str(space), "--profile", "gpu", "--tracking-uri", store,
                   "--storage", str(tmp_path / "ray"))
    assert line.startswith(f"error: {space}: {'every trial' if 'optuna' in name else 'trial '}")
    assert ": data.train_data: /mnt/datasets/cc12m/{00000..01242}.tar matches 1243 missing file(s) of 1243 " \
           "(first: /mnt/datasets/cc12m/00000.tar)" in line


def test_missing_space_file_is_refused_at_once(tmp_path, store):
    line = refused(tmp_path, store, "sweep", str(tmp_path / "missing.yaml"), "--tracking-uri", store)
    assert "missing.yaml: search space file not found" in line


# ---- evaluation suites: every benchmark's files and names, checked before any training -------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """make-shards' output with three broken copies of its test split: no class files, no labels, no captions."""
    out = tmp_path_factory.mktemp("shards")
    assert main(["make-shards", str(out), "--set", "data.num_train=40", "--set", "data.num_val=8", "--set",
                 "data.num_test=16", "--set", "data.batch_size=8", "--shard-size", "8"]) == 0
    for name, drop in (("unlabelled", {"cls", "json"}), ("captionless", {"txt", "json"})):
        folder = out / name / "test"
        folder.mkdir(parents=True)
        for shard in sorted((out / "test").glob("*.tar")):
            with tarfile.open(shard) as source, tarfile.open(folder / shard.name, "w") as target:
                for member in source:
                    if member.name.partition(".")[2] not in drop:
                        target.addfile(member, source.extractfile(member))
    shutil.copytree(out / "test", out / "classless" / "test")
    return out


def suite_space(benchmarks: str, metric: str = "test/zeroshot_avg") -> str:
    return SPACE + f"metric: {metric}\nprofiles:\n  cpu: {{config: {{eval.benchmarks: {benchmarks}}}}}\n"


@pytest.mark.parametrize("benchmarks, expected", [
    ("[{name: imagenet1k, path: /nowhere/wds_imagenet1k/test}]",
     "eval.benchmarks[0] (imagenet1k).path: /nowhere/wds_imagenet1k/test does not exist"),
    ("[{name: bare, path: SHARDS/classless/test}]",
     "eval.benchmarks[0] (bare).path: no classnames.txt and zeroshot_classification_templates.txt beside"),
    ("[{name: coco, path: SHARDS/captionless/test, tasks: [zeroshot_retrieval]}]",
     "eval.benchmarks[0] (coco).path: the first sample of SHARDS/captionless/test has no caption"),
    ("[{name: p, path: SHARDS/test, tasks: [linear_probe], train_path: SHARDS/unlabelled/test}]",
     "eval.benchmarks[0] (p).train_path: the first sample of SHARDS/unlabelled/test has no label"),
    ("[{name: p, path: SHARDS/test, tasks: [linear_probe]}]",
     "eval.benchmarks[0] (p).train_path: a linear_probe on files needs a labelled train split"),
    ("[{name: a}, {name: a, embedded: digits}]", "eval.benchmarks[1].name: two benchmarks are named 'a'"),
    ("[{name: a, embedded: digits, tasks: [zeroshot_classification], val_tasks: [linear_probe]}]",
     "eval.benchmarks[0] (a).val_tasks: ['linear_probe']: name some of tasks (zeroshot_classification)"),
], ids=["missing path", "no class files", "retrieval without captions", "probe without labels",
        "probe without a train split", "two benchmarks with one name", "a validation task not in tasks"])
def test_a_benchmark_that_cannot_be_evaluated(tmp_path, store, shards, benchmarks, expected):
    name = expected.split("(")[1].split(")")[0] if "(" in expected else "a"
    # a metric the suite reports, so that the benchmark's own problem is the one found
    line = sweep_refused(tmp_path, store, suite_space(benchmarks.replace("SHARDS", str(shards)), f"test/{name}/samples"))
    assert expected.replace("SHARDS", str(shards)) in line


def test_a_sweep_metric_of_a_benchmark_that_is_not_configured(tmp_path, store):
    line = sweep_refused(tmp_path, store, suite_space("[{name: scenes}]", metric="test/imagenet1k/zeroshot_top1"))
    assert "metric: 'test/imagenet1k/zeroshot_top1' is never reported: did you mean test/scenes/zeroshot_top1? " \
           "the configured benchmarks (eval.benchmarks) are scenes;" in line


def test_a_report_column_of_a_benchmark_no_trial_evaluates(tmp_path, store):
    # a space named smoke gets the shipped smoke table, whose transfer columns read the digits benchmark
    space = tmp_path / "smoke.yaml"
    space.write_text(suite_space("[{name: scenes}]", metric="test/scenes/samples"))
    line = refused(tmp_path, store, "sweep", str(space), "--tracking-uri", store, "--storage", str(tmp_path / "ray"))
    assert f"{space} (profile cpu): its report's table " in line
    assert "analysis/specs/smoke.yaml: columns[5].metric: 'test/digits/zeroshot_top1' names benchmark 'digits', " \
           "which these runs do not evaluate (their benchmarks: scenes)" in line


def test_a_train_command_with_a_broken_benchmark(tmp_path, store, shards):
    line = refused(tmp_path, store, "train", "--set", f"eval.benchmarks=[{{name: x, path: {shards}/classless/test}}]",
                   "--out", str(tmp_path / "run"))
    assert "eval.benchmarks[0] (x).path: no classnames.txt" in line
    assert not (tmp_path / "run").exists()


# ---- what a local Ray would have: checked without starting it ----------------------------------------


def test_local_capacity_is_what_ray_would_register():
    capacity = local_capacity()
    assert capacity["CPU"] >= 1 and capacity["GPU"] >= 0


@pytest.mark.parametrize("resources, capacity, expected", [
    ("{num_workers: 2, cpus_per_worker: 2}", {"CPU": 2, "GPU": 0},
     ["resources.cpus_per_worker: a trial asks for 4 CPU (2 worker(s) x 2), but this machine has 2",
      "lower resources.cpus_per_worker or resources.num_workers"]),
    ("{num_workers: 2, gpus_per_worker: 1}", {"CPU": 16, "GPU": 1},
     ["resources.gpus_per_worker: a trial asks for 2 GPU (2 worker(s) x 1), but this machine has 1"]),
    ("{num_workers: 2, placement_strategy: STRICT_SPREAD}", {"CPU": 16, "GPU": 0},
     ["resources.placement_strategy: STRICT_SPREAD puts each of the 2 workers on a node of its own"]),
])
def test_a_trial_that_cannot_fit_on_this_machine(tmp_path, resources, capacity, expected):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE + f"resources: {resources}\n")
    with pytest.raises(SpaceError) as caught:
        check_local(load_space(path), capacity)
    for part in expected:
        assert part in str(caught.value)


def test_a_trial_that_fits_exactly_passes(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE + "resources: {num_workers: 2, cpus_per_worker: 1, gpus_per_worker: 0.5}\n")
    check_local(load_space(path), {"CPU": 2, "GPU": 1})
