"""Sweeps end to end on a real local Ray instance and real MLflow stores (SQLite, and a server over HTTP)."""
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.state import list_actors
import yaml
from mlflow.tracking import MlflowClient

from analysis.load import load_runs
from analysis.report import write_report
from ito_sweeps import config as C
from ito_sweeps.cli import main
from ito_sweeps.models.towers import ITOModel
from ito_sweeps.objectives import build_objective
from ito_sweeps.sweep import leftovers, tracking
from ito_sweeps.sweep.infeasible import infeasible_groups
from ito_sweeps.sweep.runner import SweepError, run_sweep
from ito_sweeps.sweep.space import load_space
from ito_sweeps.sweep.trainable import trial_config
from ito_sweeps.train import checkpoint
from ito_sweeps.train.loop import train
from tests.conftest import SMALL_SUITE, free_port, train_job_checkpoint
from tests.servers import start, stop, wait_for

# Seconds per trial: tiny data, a handful of steps, two validation passes.
TINY = {
    "eval.benchmarks": SMALL_SUITE,
    "data.num_train": 128, "data.num_val": 32, "data.num_test": 64, "data.batch_size": 32, "data.num_workers": 0,
    "schedule.steps": 4, "schedule.warmup_steps": 1, "eval.every": 2, "eval.probe_train_size": 64,
    "eval.embeddings_sample": 48, "run.log_every": 1,
}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)
    yield
    ray.shutdown()


def write_space(path, variants, config=None, **top):
    doc = {
        "config": {**TINY, **(config or {})},
        "search": "grid",
        "metric": "val/scenes/zeroshot_top1",
        "mode": "max",
        "seeds": [0],
        "variants": [{"name": name, "set": values} for name, values in variants.items()],
        "resources": {"num_workers": 1, "cpus_per_worker": 1},
        "max_concurrent_trials": 1,
        **top,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def sweep(tmp_path, space, tracking_uri):
    return run_sweep(space, tracking_uri=tracking_uri, storage=tmp_path / "ray", system_metrics_s=1)


def children(client, summary):
    return {r.info.run_name: r for r in tracking.trial_runs(client, summary.experiment_id, summary.parent_run_id)}


def steps_of(client, run_id, key):
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_two_trial_sweep_records_one_parent_and_two_children(tmp_path, capsys, store_uri):
    # Side by side, one CPU each, so that one trial's start-up overlaps the other's (and the SQLite store
    # takes two writers at once). Which trial starts first is then up to Ray: rows are compared as sets.
    # Neither objective reads UniAlign's weight: sweeping it would run each variant twice, identically, so
    # the trials are merged (with a warning) and the sweep still has two.
    space = write_space(tmp_path / "two.yaml", {
        "CLIP": {"objective.name": "clip"},
        "ITO": {"objective.name": "ito", "objective.alignment": "views", "fusion.depth": 1},
    }, max_concurrent_trials=2, params={"objective.unialign.align_weight": {"grid": [1.0, 2.0]}})
    summary = sweep(tmp_path, space, tracking_uri=store_uri)
    printed = capsys.readouterr()
    assert f"warning: {space}: params[objective.unialign.align_weight]: objective clip does not read " \
           f"objective.unialign" in printed.err
    assert "'CLIP align_weight=1 seed=0' and 'CLIP align_weight=2 seed=0' -> 'CLIP seed=0'" in printed.err
    # the live trial table ends with every trial done, at its last step, with its metric and time
    table = printed.out.split("== two: ")[-1].splitlines()
    assert table[0].startswith("2/2 trials ended (2 done)")
    assert sorted(line.split()[:4] for line in table[2:4]) == [["CLIP", "seed=0", "DONE", "4/4"], ["ITO", "seed=0", "DONE", "4/4"]]
    client = MlflowClient(summary.tracking_uri)
    runs = client.search_runs([summary.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(runs) == 3 and [p.info.run_id for p in parents] == [summary.parent_run_id]
    assert parents[0].info.status == "FINISHED" and parents[0].data.tags["search_space"] == str(space.resolve())
    kids = children(client, summary)
    assert sorted(kids) == ["CLIP seed=0", "ITO seed=0"]
    assert [t.status for t in summary.trials] == ["FINISHED", "FINISHED"] and not summary.interrupted
    ito = kids["ITO seed=0"]
    assert ito.info.status == "FINISHED"
    assert ito.data.params["objective.name"] == "ito" and ito.data.params["fusion.depth"] == "1"
    assert ito.data.params["data.num_train"] == "128" and ito.data.params["run.device"] == "cpu"
    tags = ito.data.tags
    assert (tags["objective"], tags["alignment"], tags["fusion_depth"], tags["seed"]) == ("ito", "views", "1", "0")
    assert tags["variant"] == "ITO" and tags["ray.trial_id"] and tags["search_space"] == str(space.resolve())
    assert len(tags["git_commit"]) == 40 or tags["git_commit"] == "unknown"
    assert (tags["resources.num_workers"], tags["resources.cpus_per_worker"], tags["resources.gpus_per_worker"]) == (
        "1", "1.0", "0.0")
    clip_tags = kids["CLIP seed=0"].data.tags
    assert (clip_tags["objective"], clip_tags["alignment"], clip_tags["fusion_depth"]) == ("clip", "none", "0")
    # per-step training metrics, validation over time, final test metrics
    assert steps_of(client, ito.info.run_id, "train/loss") == [1, 2, 3, 4]
    assert steps_of(client, ito.info.run_id, "train/loss_fusion") == [1, 2, 3, 4]
    assert steps_of(client, ito.info.run_id, "val/scenes/zeroshot_top1") == [2, 4]
    assert 0 <= ito.data.metrics["test/scenes/zeroshot_top1"] <= 1 and "test/scenes/t2i_r1" in ito.data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in ito.data.metrics)
    # the artifacts the analysis package reads, and the trial's log: what it printed (open_clip's warning
    # about random weights among it), beside the sweep's state and in its run
    files = {f.path for f in client.list_artifacts(ito.info.run_id)}
    assert {"config.yaml", "metrics.json", "embeddings.npz"} <= files
    assert summary.logs == str(tmp_path / "ray" / "two" / "logs")
    for name, kid in kids.items():
        log = Path(summary.logs) / f"{kid.data.tags['ray.trial_id']}.log"
        assert "No pretrained weights loaded for model 'tiny'" in log.read_text()
        assert [f.path for f in client.list_artifacts(kid.info.run_id, "logs")] == [f"logs/{log.name}"]
        # the console names it in the line the trial's end prints, with the outcome and the metric
        value = kid.data.metrics["val/scenes/zeroshot_top1"]
        assert re.search(rf"^trial {name}: DONE at step 4/4, val/scenes/zeroshot_top1 {value:.4f}, in 0:00:\d\d; "
                         rf"log: {re.escape(str(log))}$", printed.out, flags=re.M)
    sample = np.load(client.download_artifacts(ito.info.run_id, "embeddings.npz", str(tmp_path)))
    assert sample["image"].shape == sample["text"].shape == (48, 128)
    saved = yaml.safe_load(open(client.download_artifacts(ito.info.run_id, "config.yaml", str(tmp_path))))
    assert saved["fusion"]["depth"] == 1 and saved["objective"]["name"] == "ito"
    # what `export --run` and table checks read back from the trial
    assert tags["benchmarks"] == "scenes,scenes_count,digits"
    # a one-worker trial trains in its Tune trial, which keeps its checkpoints in its own folder
    assert (tmp_path / "ray" / "two" / tags["ray.trial_id"]).samefile(tags["checkpoints"])
    # Tune agrees with MLflow on the final metric
    assert summary.best.value == max(k.data.metrics["val/scenes/zeroshot_top1"] for k in kids.values())
    # and the report reads what the sweep recorded: a row per variant with its test zero-shot, both plots
    index = write_report(load_runs(summary.tracking_uri, sweep=summary.parent_run_id), tmp_path / "report")
    table = pd.read_csv(index.parent / "table.csv").set_index("tags.variant").sort_index()
    assert list(table.index) == ["CLIP", "ITO"] and list(table["n"]) == [1, 1]
    assert table["scenes ZS mean"].tolist() == pytest.approx(
        [100 * kids[f"{v} seed=0"].data.metrics["test/scenes/zeroshot_top1"] for v in ("CLIP", "ITO")])
    assert {"gap_scatter.png", "dynamics.png"} <= {p.name for p in index.parent.iterdir()}
    assert "report/index.md" in {a.path for a in client.list_artifacts(summary.parent_run_id, "report")}
    # Ray's storage keeps each finished trial's last checkpoint (of the two it reported), without the
    # optimizer state: the weights, the config and the step, which is what evaluating or exporting it reads
    trial_folders = sorted(Path(k.data.tags["checkpoints"]) for k in kids.values())
    assert [p.name for p in trial_folders] == sorted(k.data.tags["ray.trial_id"] for k in kids.values())
    assert not (tmp_path / "ray" / "two" / "train").exists()  # no Ray Train job was started
    for folder in trial_folders:
        (kept,) = [p for p in folder.glob("checkpoint_*") if p.is_dir()]
        assert (kept / "checkpoint.pt").is_file() and not (kept / "optimizer.pt").exists()
        state = checkpoint.load(kept / "checkpoint.pt")
        assert state["step"] == 4 and "optimizer" not in state
        cfg = C.from_dict(state["config"])
        model = ITOModel.for_inputs(cfg, build_objective(cfg).inputs)
        model.load_state_dict(state["model"])  # strict: every weight is there


def sweep_cut_when(ready, tmp_path: Path, space: Path, uri: str):
    """The sweep, interrupted by Ctrl+C (SIGINT: Tune saves its state and stops) once `ready()` holds."""
    def interrupt():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if ready():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.5)

    watcher = threading.Thread(target=interrupt, daemon=True)
    watcher.start()
    summary = sweep(tmp_path, space, tracking_uri=uri)
    watcher.join()
    return summary


def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path, store_uri):
    # The two trials run side by side (one CPU each), and the sweep is interrupted once the short one has
    # finished and the long one has checkpointed since: a validation pass well after the first trial's end,
    # by when Tune has recorded that end too.
    space = write_space(tmp_path / "cut.yaml", {"first": {"objective.name": "clip", "schedule.steps": 10}, "second": {}},
                        config={"schedule.steps": 40, "eval.every": 5}, max_concurrent_trials=2)
    uri = store_uri
    client = MlflowClient(uri)

    def second_trial_runs_after_first_ended() -> bool:
        runs = {r.info.run_name: r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}
        first, second = runs.get("first seed=0"), runs.get("second seed=0")
        if first is None or second is None or first.info.status != "FINISHED":
            return False
        passes = client.get_metric_history(second.info.run_id, "val/scenes/zeroshot_top1")
        return any(m.timestamp >= first.info.end_time + 2000 for m in passes)

    first = sweep_cut_when(second_trial_runs_after_first_ended, tmp_path, space, uri)
    assert first.interrupted
    by_name = children(client, first)
    assert by_name["first seed=0"].info.status == "FINISHED" and by_name["second seed=0"].info.status == "KILLED"
    first_history = client.get_metric_history(by_name["first seed=0"].info.run_id, "train/loss")

    with pytest.raises(SweepError, match="already exists"):
        sweep(tmp_path, space, tracking_uri=uri)
    assert main(["sweep", str(space), "--resume", "--tracking-uri", uri, "--storage", str(tmp_path / "ray")]) == 0
    runs = children(client, first)
    assert sorted(runs) == ["first seed=0", "second seed=0"]  # one child run per trial, never two
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert client.get_metric_history(runs["first seed=0"].info.run_id, "train/loss") == first_history
    second_loss = steps_of(client, runs["second seed=0"].info.run_id, "train/loss")
    assert second_loss[-1] == 40 and steps_of(client, runs["second seed=0"].info.run_id, "test/scenes/zeroshot_top1") == [40]
    assert client.get_run(first.parent_run_id).info.status == "FINISHED"


def test_an_interrupted_train_job_resumes_from_its_checkpoint_in_its_one_run(tmp_path, store_uri):
    # Ctrl+C once Ray Train has registered a checkpoint of the trial's two workers and MLflow holds its
    # validation pass; the resumed sweep goes on from there, in the same run
    space = write_space(tmp_path / "cut2.yaml", {"CLIP": {"objective.name": "clip"}},
                        config={"schedule.steps": 30, "eval.every": 10},
                        resources={"num_workers": 2, "cpus_per_worker": 1})
    uri = store_uri
    client = MlflowClient(uri)

    def checkpointed() -> bool:
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string="attributes.run_name = 'CLIP seed=0'")
        step = train_job_checkpoint(tmp_path / "ray", "cut2")
        return bool(runs and step and step in steps_of(client, runs[0].info.run_id, "val/scenes/zeroshot_top1"))

    first = sweep_cut_when(checkpointed, tmp_path, space, uri)
    assert first.interrupted
    (cut,) = children(client, first).values()
    assert cut.info.status == "KILLED"
    assert main(["sweep", str(space), "--resume", "--tracking-uri", uri, "--storage", str(tmp_path / "ray")]) == 0
    (run,) = children(client, first).values()  # one run, not two
    assert run.info.run_id == cut.info.run_id and run.info.status == "FINISHED"
    (resumed,) = client.get_metric_history(run.info.run_id, "train/resumed_from_step")
    assert resumed.value in (10, 20) and resumed.step == resumed.value
    assert steps_of(client, run.info.run_id, "test/scenes/zeroshot_top1") == [30]


def sweep_command(space: Path, tmp_path: Path, uri: str, *extra: str) -> list[str]:
    """The sweep command as a researcher runs it, its own driver process, joined to this module's Ray."""
    return [sys.executable, "-m", "ito_sweeps.cli", "sweep", str(space), "--address",
            ray.get_runtime_context().gcs_address, "--tracking-uri", uri,
            "--storage", str(tmp_path / "ray"), *extra]


def test_a_killed_driver_resumes_a_trial_that_trains_itself_from_its_checkpoint_in_its_one_run(tmp_path, store_uri):
    space = write_space(tmp_path / "killed.yaml", {"CLIP": {"objective.name": "clip"}},
                        config={"schedule.steps": 30, "eval.every": 10})
    command = sweep_command(space, tmp_path, store_uri)
    client = MlflowClient(store_uri)

    def checkpointed() -> bool:
        # The second validation pass: by then Tune has registered the first one's checkpoint and saved its
        # state (it does at each checkpoint, as it keeps only the newest)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string="attributes.run_name = 'CLIP seed=0'")
        return bool(runs and 20 in steps_of(client, runs[0].info.run_id, "val/scenes/zeroshot_top1"))

    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not checkpointed():
            assert time.monotonic() < deadline and driver.poll() is None, "the trial never checkpointed"
            time.sleep(0.3)
    finally:
        driver.kill()  # SIGKILL: no handler runs, Tune saves nothing more
        driver.wait()
    experiment = client.get_experiment_by_name("killed").experiment_id
    (left,) = client.search_runs([experiment], filter_string="attributes.run_name = 'CLIP seed=0'")
    assert left.info.status == "RUNNING"  # nobody was left to close it
    assert main(command[3:] + ["--resume"]) == 0
    (run,) = client.search_runs([experiment], filter_string="attributes.run_name = 'CLIP seed=0'")
    assert run.info.run_id == left.info.run_id and run.info.status == "FINISHED"
    (resumed,) = client.get_metric_history(run.info.run_id, "train/resumed_from_step")
    assert resumed.value in (10, 20)
    assert steps_of(client, run.info.run_id, "test/scenes/zeroshot_top1") == [30]
    # both attempts wrote to the trial's one log
    log = tmp_path / "ray" / "killed" / "logs" / f"{run.data.tags['ray.trial_id']}.log"
    assert log.read_text().count("No pretrained weights loaded for model 'tiny'") == 2
    # the sweep's state names both drivers' Ray jobs (the second: this process's), what --resume tidies after
    first, second = json.loads((tmp_path / "ray" / "killed" / "ito_sweep.json").read_text())["drivers"]
    assert first["job_id"] != second["job_id"] == ray.get_runtime_context().get_job_id()


# A driver that leaves a placement group in Ray as it is SIGKILLed. Ray removes a job's groups when it ends
# unless a Train controller places one just then (leftovers.py); a detached actor's group stays too, which
# makes that leftover here on demand.
LEAVES_A_GROUP = """
import json, os, signal, sys, ray
from ray.util.placement_group import placement_group
from ito_sweeps.sweep import leftovers
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_cpus=0)
class Holder:
    def place(self):
        group = placement_group([{"CPU": 0.25}])
        ray.get(group.ready())
        return group.id.hex()

holder = Holder.options(name=sys.argv[2], namespace="leftovers", lifetime="detached").remote()
print(json.dumps({"group": ray.get(holder.place.remote()), "driver": leftovers.this_driver()}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_what_ended_drivers_of_a_sweep_left_is_removed_and_nothing_else():
    def killed_driver(name):
        done = subprocess.run([sys.executable, "-c", LEAVES_A_GROUP, ray.get_runtime_context().gcs_address, name],
                              capture_output=True, text=True, timeout=120)
        return json.loads(done.stdout.splitlines()[-1])

    ours, other = killed_driver("ours"), killed_driver("other")
    mine = placement_group([{"CPU": 0.25}])
    ray.get(mine.ready())
    try:
        me = leftovers.this_driver()
        assert me["job_id"] == ray.get_runtime_context().get_job_id()
        # the sweep's earlier driver; one with the other's job id but another start (a Ray restarted since:
        # job ids count from 1 again); this driver, alive. The other driver's job is not the sweep's.
        restarted = {**other["driver"], "start_time": other["driver"]["start_time"] - 1}
        assert leftovers.remove_groups_of_ended([ours["driver"], restarted, me]) == [ours["group"]]
        table = placement_group_table()
        assert table[ours["group"]]["state"] == "REMOVED"
        assert table[other["group"]]["state"] == table[mine.id.hex()]["state"] == "CREATED"
    finally:
        remove_placement_group(mine)
        leftovers.remove_group(other["group"])
        for name in ("ours", "other"):
            ray.kill(ray.get_actor(name, namespace="leftovers"))


@pytest.mark.parametrize("workers", [1, 2], ids=["trial-trains-itself", "train-job"])
def test_asha_stops_a_poor_trial_and_a_failing_trial_is_failed_while_the_sweep_goes_on(tmp_path, capsys, workers):
    # lr 0 keeps the initial weights, so the second trial's val/scenes/alignment stays at its initial 1.95 while the
    # first trial's has risen to 2.60 by the first rung (runs are deterministic): maximising it, ASHA must stop
    # the second trial there, and the sweep must not hang on the stopped trial's workers, which hold every
    # CPU the third trial needs. lr 1e30 makes the third trial's loss NaN before its first validation pass.
    # Trials either train themselves (one worker, in a reused trial process) or run on two Train workers.
    # The second trial trains ITO with captions (its initial val/scenes/alignment is CLIP's: the towers start
    # the same), so that with two workers its first loss also checks data-parallel ITO against a single
    # process: a Train job's start-up costs half a minute, so one sweep serves both.
    space = write_space(tmp_path / "asha.yaml", {
        "learns": {"optim.lr": 5e-3},
        "frozen": {"optim.lr": 0.0, "objective.name": "ito", "objective.alignment": "views_captions"},
        "diverges": {"optim.lr": 1e30, "schedule.warmup_steps": 0},
    }, config={"schedule.steps": 12, "eval.every": 3, "objective.name": "clip"}, metric="val/scenes/alignment",
        mode="max", scheduler={"name": "asha", "grace_period": 3, "reduction_factor": 2},
        resources={"num_workers": workers, "cpus_per_worker": 2 // workers})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    if workers == 1:  # the sweep command as a researcher runs it: the console is what a researcher sees
        done = subprocess.run(sweep_command(space, tmp_path, uri), capture_output=True, text=True, timeout=300)
        out, console = done.stdout, done.stdout + done.stderr
        assert done.returncode == 1, console
    else:  # in this process: the slowest test of the suite is spared a second driver's start-up
        assert main(["sweep", str(space), "--tracking-uri", uri, "--storage", str(tmp_path / "ray")]) == 1
        printed = capsys.readouterr()
        out, console = printed.out, printed.out + printed.err
    assert "FAILED diverges seed=0: NonFiniteLoss: loss became NaN" in out
    # the trial table, a line per ended trial naming its log (and its error), the summary naming the logs
    logs = tmp_path / "ray" / "asha" / "logs"
    assert "== asha: 3/3 trials ended (1 done, 1 stopped, 1 failed)" in out
    ended = {name: re.search(rf"^trial {name} seed=0: {status} at step {step}/12, {metric}in [\d:]+{error}; "
                             rf"log: (\S+)$", out, flags=re.M)
             for name, status, step, metric, error in [
                 ("learns", "DONE", "12", r"val/scenes/alignment [\d.]+, ", ""),
                 ("frozen", "STOPPED", r"\d+", r"val/scenes/alignment [\d.]+, ", ""),
                 ("diverges", "FAILED", "0", "", ": NonFiniteLoss: loss became NaN .*")]}
    assert all(ended.values()), out
    assert f"trial logs (everything a trial printed; also in its MLflow run): {logs}" in out
    for found in ended.values():
        assert Path(found[1]).parent == logs
        assert "No pretrained weights loaded for model 'tiny'" in Path(found[1]).read_text()
    # and none of the libraries' chatter: open_clip's warning, Tune's box and TensorBoard hint, MLflow's new
    # store, Ray Train's per-report lines (what Ray forwards from other processes reaches the fds, not capsys)
    for chatter in ("No pretrained weights", "TensorBoard", "Configuration for experiment", "database tables",
                    "Reporting training result"):
        assert chatter not in console
    client = MlflowClient(uri)
    runs = {r.info.run_name: r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}
    learns, frozen, diverges = runs["learns seed=0"], runs["frozen seed=0"], runs["diverges seed=0"]
    assert learns.info.status == "FINISHED" and learns.data.tags.get("stopped_early", "false") == "false"
    assert steps_of(client, learns.info.run_id, "test/scenes/zeroshot_top1") == [12]
    assert frozen.info.status == "FINISHED" and frozen.data.tags["stopped_early"] == "true"
    assert steps_of(client, frozen.info.run_id, "val/scenes/alignment")[-1] < 12
    assert diverges.info.status == "FAILED"
    assert diverges.data.tags["error"].startswith("NonFiniteLoss: loss became NaN or infinite")
    tune_trials = ray.tune.ExperimentAnalysis(str(tmp_path / "ray" / "asha")).trials
    assert {t.config["trial"]["variant"]: t.status for t in tune_trials} == \
        {"learns": "TERMINATED", "frozen": "TERMINATED", "diverges": "ERROR"}
    # the two workers' first loss (before any update) is the one a single process computes on the whole batch
    (distributed,) = [m for m in client.get_metric_history(frozen.info.run_id, "train/loss") if m.step == 1]
    loaded = load_space(space)
    (point,) = [t for t in loaded.trial_configs() if t["trial"]["variant"] == "frozen"]
    cfg = trial_config(loaded.resolve(point), loaded.resources)
    seen = []
    train(dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, steps=1),
                              eval=dataclasses.replace(cfg.eval, every=1)),
          on_metrics=lambda step, record: seen.append(record))
    assert distributed.value == pytest.approx(seen[0]["train/loss"], abs=1e-5, rel=0)


def test_a_killed_trial_that_trains_itself_is_retried_from_its_checkpoint_in_its_one_run(tmp_path, store_uri):
    space = write_space(tmp_path / "retry.yaml", {"CLIP": {"objective.name": "clip"}},
                        config={"schedule.steps": 30, "eval.every": 10}, max_failures=1)
    killed = {}
    client = MlflowClient(store_uri)

    def kill_after_first_checkpoint():
        # Once the trial trains past its first validation pass: its report returned, which a Tune trial's
        # report does only after the driver has taken it, checkpoint included. (The checkpoint's files
        # appear before that: a trial killed then is retried from scratch.) The store is read only once the
        # trial runs: the driver has created it by then.
        deadline = time.monotonic() + 120
        pids = []
        while time.monotonic() < deadline:
            pids = pids or [a.pid for a in list_actors(filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
                            if "run_trial" in a.class_name or "ImplicitFunc" in a.class_name]
            runs = pids and client.search_runs([e.experiment_id for e in client.search_experiments()],
                                               filter_string="attributes.run_name = 'CLIP seed=0'")
            if runs and max(steps_of(client, runs[0].info.run_id, "train/loss"), default=0) > 10:
                os.kill(pids[0], signal.SIGKILL)
                killed["pid"] = pids[0]
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    watcher.start()
    summary = sweep(tmp_path, space, tracking_uri=store_uri)
    watcher.join()
    assert killed, "the trial never checkpointed"
    (run,) = children(client, summary).values()  # one run, not two
    assert [t.status for t in summary.trials] == ["FINISHED"] and run.info.status == "FINISHED"
    (resumed,) = client.get_metric_history(run.info.run_id, "train/resumed_from_step")
    assert resumed.value in (10, 20)
    assert steps_of(client, run.info.run_id, "test/scenes/zeroshot_top1") == [30]
    assert steps_of(client, run.info.run_id, "val/scenes/zeroshot_top1")[-1] == 30


def test_an_optuna_sweep_samples_within_bounds_and_records_each_trial(tmp_path, store_uri):
    space = tmp_path / "tpe.yaml"
    space.write_text(yaml.safe_dump({
        "config": {**TINY, "objective.name": "ito"},
        "search": "optuna", "num_samples": 2, "search_seed": 3,
        "metric": "val/scenes/zeroshot_top1", "mode": "max",
        "params": {"objective.fusion_weight": {"loguniform": [0.25, 8]}, "fusion.depth": {"choice": [1, 2]}},
        "resources": {"num_workers": 1, "cpus_per_worker": 1}, "max_concurrent_trials": 2,
    }))
    summary = sweep(tmp_path, space, tracking_uri=store_uri)
    client = MlflowClient(summary.tracking_uri)
    runs = list(children(client, summary).values())
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        lam, depth = float(run.data.params["objective.fusion_weight"]), int(run.data.params["fusion.depth"])
        assert 0.25 <= lam <= 8 and depth in (1, 2)
        assert run.info.run_name == f"ito views fd={depth} lam={lam:.3g} seed=0"
        assert run.data.tags["objective.fusion_weight"] == str(lam)


def test_an_unreachable_server_fails_fast_with_a_clear_message(tmp_path, capsys):
    space = write_space(tmp_path / "x.yaml", {"CLIP": {"objective.name": "clip"}})
    started = time.monotonic()
    assert main(["sweep", str(space), "--tracking-uri", f"http://127.0.0.1:{free_port()}",
                 "--storage", str(tmp_path / "ray")]) == 2
    assert time.monotonic() - started < 20
    assert "is not reachable" in capsys.readouterr().err
    assert not (tmp_path / "ray").exists()  # nothing started, nothing half-written


@pytest.mark.parametrize("workers", [1, 2], ids=["trial-trains-itself", "train-job"])
def test_a_request_no_node_can_meet_fails_the_sweep_after_the_bounded_wait(tmp_path, capsys, workers, store_uri):
    # This Ray (started by the fixture, as on a cluster the sweep joins) has no GPU and no autoscaler: the
    # trial's placement group is infeasible from the start, and the sweep gives up after infeasible_wait_s.
    space = write_space(tmp_path / "gpu.yaml", {"CLIP": {"objective.name": "clip"}},
                        resources={"num_workers": workers, "cpus_per_worker": 1, "gpus_per_worker": 1,
                                   "infeasible_wait_s": 3})
    uri = store_uri
    started = time.monotonic()
    assert main(["sweep", str(space), "--tracking-uri", uri, "--storage", str(tmp_path / "ray")]) == 2
    assert time.monotonic() - started < 60
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: {space}: resources.gpus_per_worker: Ray reports that no node of this cluster "
                            f"can hold a trial's {workers} worker(s) of {{'CPU': 1.0, 'GPU': 1.0}} each")
    assert "resources.infeasible_wait_s (3 s)" in error
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    # the parent, and a Train job's trial, whose driver started and opened its run; a trial that would
    # train itself never started, so it has no run
    assert len(runs) == (1 if workers == 1 else 2) and {r.info.status for r in runs} == {"FAILED"}
    assert all("no node of this cluster can hold" in r.data.tags["error"] for r in runs)
    assert infeasible_groups() == []  # and nothing of the sweep is left waiting in Ray


def test_ui_serves_the_local_store_on_loopback(tmp_path, store_uri):
    uri = store_uri
    MlflowClient(uri).create_experiment("browse-me")
    port = free_port()
    ui = start([sys.executable, "-m", "ito_sweeps.cli", "ui", "--tracking-uri", uri, "--port", str(port)], cwd=tmp_path)
    try:
        assert "browse-me" in wait_for(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10")
    finally:
        stop(ui)
