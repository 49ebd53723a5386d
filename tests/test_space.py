"""Search spaces: shipped files expand to the intended trials, and every mistake stops before Ray starts."""
import math
import pickle
from collections import defaultdict
from pathlib import Path

import optuna
import pytest
import yaml
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from analysis.table_spec import spec_for
from ito_sweeps.objectives import build_objective
from ito_sweeps.sweep.space import SearchSpace, SpaceError, load_space
from ito_sweeps.sweep.trainable import trial_config

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
SHIPPED = {  # file -> trials per profile
    "smoke": 4,
    "ablation_components": 9,
    "fusion_depth": 12,
    "fusion_weight": 18,
    "fusion_weight_optuna": 8,
    "alignment_variants": 42,
    "patch_dropout": 9,
}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def by_label(space: SearchSpace) -> dict:
    return {space.trial_label(t): space.resolve(t) for t in space.trial_configs()}


# ---- the shipped spaces ---------------------------------------------------------------------------


def test_every_shipped_space_is_listed_here():
    assert {p.stem for p in SPACES.glob("*.yaml")} == set(SHIPPED)


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_space_loads_and_expands(name, profile):
    space = load_space(SPACES / f"{name}.yaml", profile)
    assert space.profile == profile and space.name == name and space.path.is_absolute()
    assert space.num_trials() == SHIPPED[name]
    if space.search != "optuna":
        labels = [space.trial_label(t) for t in space.trial_configs()]
        assert len(set(labels)) == len(labels) == SHIPPED[name]
        assert space.param_space() == {"trial": {"grid_search": space.trials}}
        configs = [space.resolve(t) for t in space.trial_configs()]
    else:
        configs = [space.resolve({})]  # the fixed part; values come from the searcher
    cpu = profile == "cpu"
    for cfg in configs:
        assert cfg.run.device == ("cpu" if cpu else "cuda")
        assert cfg.model.name == ("tiny" if cpu else "ViT-B-16")
        assert cfg.data.image_size == (32 if cpu else 224)
        assert cfg.data.batch_size == (64 if cpu else 2048)
        assert cfg.schedule.steps // cfg.eval.every >= 2  # at least two validation passes
    assert space.resources.use_gpu == (not cpu)
    assert space.resources.num_workers == (1 if cpu else 8)
    if cpu:  # side by side only where the trials fit the 2-core machine together (the README's default)
        assert space.max_concurrent_trials * space.resources.cpus_per_worker <= 2
    else:
        assert space.max_concurrent_trials == 1


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_gpu_profile_streams_shards_and_evaluates_files(name):
    """Paper scale reads webdataset shards (make-shards output or the user's), never scenes rendered into every
    worker's memory, and evaluates benchmarks read from files; the placeholder paths are ablation_components'."""
    profile = yaml.safe_load((SPACES / f"{name}.yaml").read_text())["profiles"]["gpu"]
    assert profile["config"].get("data.dataset") == "webdataset"
    assert not {"data.num_train", "data.num_val", "data.num_test"} & set(profile["config"])  # embedded sets only
    (_, reference), *_ = load_space(SPACES / "ablation_components.yaml", "gpu").known_configs()
    places = {b.name: b for b in reference.eval.benchmarks}
    space = load_space(SPACES / f"{name}.yaml", "gpu")
    assert space.metric == "val/imagenet1k/zeroshot_top1"
    for which, cfg in space.known_configs():
        assert (cfg.data.dataset, cfg.data.train_data) == ("webdataset", reference.data.train_data), which
        assert (cfg.data.val_data, cfg.data.test_data) == (None, None)  # nothing is read from the run's own data
        assert cfg.eval.benchmarks and {b.source for b in cfg.eval.benchmarks} == {"path"}, which
        for bench in cfg.eval.benchmarks:
            assert bench.path == places[bench.name].path, (which, bench.name)
            assert bench.train_path in (None, places[bench.name].train_path), (which, bench.name)
        assert "imagenet1k/zeroshot_top1" in cfg.eval.metric_names("val")


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_report_tables_show_what_each_profile_evaluates(name, profile):
    space = load_space(SPACES / f"{name}.yaml", profile)
    spec = spec_for(space.path, profile)
    if name == "fusion_weight_optuna":  # the generic table, of whatever its runs logged
        assert spec is None
        return
    # a profile whose suite differs from the default one has a table of its own (analysis/specs/NAME.gpu.yaml)
    assert Path(spec.origin).name == (f"{name}.yaml" if profile == "cpu" else f"{name}.gpu.yaml")
    reported = {f"test/{m}" for _, cfg in space.known_configs() for m in cfg.eval.metric_names("test")}
    assert {c.metric for c in spec.columns} <= reported


def test_the_cpu_profile_is_the_default():
    assert load_space(SPACES / "smoke.yaml").profile == "cpu"


def test_smoke_cells():
    space = load_space(SPACES / "smoke.yaml")
    cells = by_label(space)
    assert list(cells) == ["CLIP seed=0", "ITO multiple alignment seed=0", "ITO + fusion seed=0",
                           "ITO views x captions + fusion seed=0"]
    assert cells["CLIP seed=0"].objective.name == "clip"
    alignment = cells["ITO multiple alignment seed=0"].objective
    assert (alignment.name, alignment.alignment, alignment.fusion_weight) == ("ito", "views", 0.0)
    fusion = cells["ITO + fusion seed=0"]
    assert (fusion.objective.alignment, fusion.objective.fusion_weight, fusion.fusion.depth) == ("views", 2.0, 2)
    assert cells["ITO views x captions + fusion seed=0"].objective.alignment == "views_captions"
    cfg = cells["CLIP seed=0"]
    assert (cfg.data.num_train, cfg.data.num_val, cfg.data.num_test) == (4000, 300, 500)
    assert (cfg.schedule.steps, cfg.schedule.warmup_steps, cfg.eval.every) == (80, 8, 40)
    assert cfg.eval.probe_train_size == 1000
    assert space.resources.cpus_per_worker == 2.0 and space.seeds == [0]


def test_ablation_cells():
    space = load_space(SPACES / "ablation_components.yaml")
    cells = by_label(space)
    assert cells["OpenCLIP seed=1"].objective.name == "clip" and cells["OpenCLIP seed=1"].run.seed == 1
    row = cells["+ multiple alignment seed=0"]
    assert (row.objective.name, row.objective.alignment, row.objective.fusion_weight) == ("ito", "views_captions", 0.0)
    row = cells["+ training-time fusion seed=2"]
    assert (row.objective.fusion_weight, row.fusion.depth, row.run.seed) == (2.0, 2, 2)
    assert space.swept_keys == ["objective.name", "objective.alignment", "objective.fusion_weight", "run.seed"]
    tags = space.trial_tags(space.trial_configs()[0])
    assert tags == {"variant": "OpenCLIP", "objective.name": "clip", "objective.alignment": "views",
                    "objective.fusion_weight": "0.0", "run.seed": "0"}  # what CLIP trains: no fusion


def test_alignment_variant_cells_cross_every_objective_with_fusion():
    space = load_space(SPACES / "alignment_variants.yaml")
    cells = by_label(space)
    rows = {"CLIP": ("clip", ()), "ITO": ("ito", ()), "UniAlign": ("unialign", ()), "Sep": ("latent_structure", ("sep",)),
            "Br": ("latent_structure", ("br",)), "GC": ("latent_structure", ("gc",)), "CyCLIP": ("cyclip", ())}
    assert len(cells) == len(rows) * 2 * 3
    for row, (name, regularizers) in rows.items():
        for lam in (0, 2):
            for seed in range(3):
                cfg = cells[f"{row} lam={lam} seed={seed}"]
                assert (cfg.objective.name, cfg.objective.latent_structure.regularizers) == (name, regularizers)
                assert (cfg.objective.fusion_weight, cfg.fusion.depth, cfg.run.seed) == (lam, 2, seed)
                # fusion on means a fusion module is trained, whatever the objective
                assert bool(build_objective(cfg).inputs.fusion_pairs) == (lam > 0)
    assert cells["UniAlign lam=0 seed=0"].objective.alignment == "views"
    tags = space.trial_tags(next(t for t in space.trial_configs() if space.trial_label(t).startswith("Sep")))
    assert tags["objective.latent_structure.regularizers"] == "['sep']"


def test_list_valued_keys_are_gridded_and_labelled_but_not_given_to_optuna(tmp_path):
    params = ("  objective.name: {grid: [clip, latent_structure]}\n"
              "  objective.latent_structure.regularizers: {KIND: [[sep], [br], [sep, gc]], "
              "when: {objective.name: latent_structure}}\n")
    space = load_space(write(tmp_path, "search: grid\nparams:\n" + params.replace("KIND", "grid")))
    cells = by_label(space)
    assert list(cells) == ["clip seed=0", "latent_structure regularizers=sep seed=0",
                           "latent_structure regularizers=br seed=0", "latent_structure regularizers=sep+gc seed=0"]
    assert cells["latent_structure regularizers=sep+gc seed=0"].objective.latent_structure.regularizers == ("sep", "gc")
    with pytest.raises(SpaceError, match=r"choice\[0\]: optuna chooses only between plain values"):
        load_space(write(tmp_path, "search: optuna\nnum_samples: 2\nparams:\n" + params.replace("KIND", "choice")))


def test_fusion_depth_and_weight_cells():
    depth = by_label(load_space(SPACES / "fusion_depth.yaml", "gpu"))
    cell = depth["ito views_captions fd=4 seed=1"]
    assert (cell.fusion.depth, cell.objective.fusion_weight, cell.run.seed, cell.run.bf16) == (4, 2.0, 1, True)
    assert {cfg.fusion.depth for cfg in depth.values()} == {0, 1, 2, 4}

    space = load_space(SPACES / "fusion_weight.yaml")
    weight = by_label(space)
    cell = weight["ito views lam=0.5 seed=2"]
    assert (cell.objective.fusion_weight, cell.fusion.depth, cell.objective.alignment) == (0.5, 2, "views")
    assert sorted({cfg.objective.fusion_weight for cfg in weight.values()}) == [0, 0.5, 1, 2, 4, 6]
    # base file values are not overrides; config, then the profile, then params, then the seed are
    overrides = space.trial_overrides(space.trial_configs()[1])
    assert list(overrides)[:3] == ["objective.name", "objective.alignment", "fusion.depth"]
    assert overrides["objective.fusion_weight"] == 0.5 and overrides["schedule.steps"] == 120
    assert list(overrides)[-1] == "run.seed"


def test_fusion_weight_optuna_searcher_and_asha():
    for profile, steps, every, bench in [("cpu", 120, 20, "scenes"), ("gpu", 10000, 1000, "imagenet1k")]:
        space = load_space(SPACES / "fusion_weight_optuna.yaml", profile)
        assert isinstance(space.search_alg(), OptunaSearch)
        assert space.param_space() == {}
        assert space.tune_metric_mode() == (f"val/{bench}/zeroshot_top1", "max")
        scheduler = space.scheduler()
        assert isinstance(scheduler, ASHAScheduler)
        assert scheduler._time_attr == "step" and scheduler._max_t == steps
        assert space.asha.grace_period == every and space.asha.reduction_factor == 2
        # Tune hands TuneConfig's metric to the scheduler and refuses to start if it already has one
        assert scheduler.set_search_properties(*space.tune_metric_mode())


def test_grid_spaces_use_fifo_and_no_searcher():
    space = load_space(SPACES / "fusion_weight.yaml")
    assert isinstance(space.scheduler(), FIFOScheduler) and space.search_alg() is None


# ---- mistakes -------------------------------------------------------------------------------------

GOOD = "search: grid\nmetric: val/scenes/zeroshot_top1\nmode: max\nseeds: [0]\n"
VARIANTS_AB = "variants:\n  - {name: A, set: {objective.name: clip}}\n  - {name: B, set: {objective.name: ito}}\n"
OPTUNA = "search: optuna\nnum_samples: 4\n"

BAD = {
    "unknown config key in params": (
        "params:\n  objective.fusion_weigth: {grid: [1, 2]}\n",
        None, ["params[objective.fusion_weigth]", "unknown config key", "did you mean objective.fusion_weight"]),
    "unknown config key in config": (
        "config: {fusion: {dept: 2}}\n", None, ["config[fusion.dept]", "fusion.depth"]),
    "a section instead of a key": (
        "params:\n  fusion: {grid: [1, 2]}\n", None, ["params[fusion]", "is a section", "fusion.depth"]),
    "unknown top-level key": ("serach: grid\n", None, ["serach", "did you mean search"]),
    "wrong type in a grid": (
        "params:\n  fusion.depth: {grid: [1, two]}\n", None, ["params[fusion.depth].grid[1]", "'two'", "integer"]),
    "value out of the key's range": (
        "params:\n  fusion.depth: {grid: [1, -2]}\n", None, ["params[fusion.depth].grid[1]", "below the minimum 0"]),
    "empty choice": (
        "search: random\nparams:\n  fusion.depth: {choice: []}\n", None, ["params[fusion.depth].choice", "non-empty"]),
    "low above high": (
        "search: random\nparams:\n  objective.fusion_weight: {uniform: [4, 1]}\n",
        None, ["params[objective.fusion_weight].uniform", "low 4.0 is above high 1.0"]),
    "loguniform from zero": (
        "search: random\nparams:\n  objective.fusion_weight: {loguniform: [0, 8]}\n",
        None, ["loguniform", "0 < low < high"]),
    "range bound outside the key's range": (
        "search: random\nparams:\n  data.augment.jitter_p: {uniform: [0.5, 1.5]}\n",
        None, ["params[data.augment.jitter_p].uniform[1]", "above the maximum 1.0"]),
    "uniform on an integer key": (
        "search: random\nparams:\n  fusion.depth: {uniform: [1, 4]}\n",
        None, ["fusion.depth", "integer key", "randint"]),
    "range on a string key": (
        "search: random\nparams:\n  fusion.readout: {randint: [1, 4]}\n", None, ["fusion.readout", "not a number"]),
    "metric never reported": (
        "metric: val/zero_shot\n", None, ["metric", "'val/zero_shot' is never reported", "val/scenes/zeroshot_top1"]),
    "metric of a benchmark that is not configured": (
        "metric: test/imagenet1k/zeroshot_top1\n", None,
        ["metric", "'test/imagenet1k/zeroshot_top1' is never reported",
         "the configured benchmarks (eval.benchmarks) are scenes, scenes_count, digits"]),
    "metric of a task the benchmark does not run": (
        "metric: val/scenes_count/probe_top1\n" + VARIANTS_AB, None,
        ["metric", "never reported in variant 'A'", "did you mean val/scenes/probe_top1?"]),
    "metric of a benchmark one variant drops": (
        "metric: test/digits/probe_top1\nvariants:\n  - {name: A, set: {objective.name: clip}}\n"
        "  - {name: B, set: {eval.benchmarks: [{name: scenes}]}}\n", None,
        ["metric", "never reported in variant 'B'", "benchmarks (eval.benchmarks) are scenes;"]),
    "mode not max or min": ("mode: maximize\n", None, ["mode", "'maximize'", "max, min"]),
    "unknown search": ("search: bayes\n", None, ["search", "'bayes'", "grid, random, optuna"]),
    "unknown scheduler": ("scheduler: hyperband\n", None, ["scheduler", "'hyperband'", "fifo, asha"]),
    "unknown scheduler option": (
        "scheduler: {name: asha, grace: 10}\n", None, ["scheduler.grace", "grace_period, reduction_factor"]),
    "asha with multi-objective": (
        OPTUNA + "metric: [val/scenes/zeroshot_top1, val/scenes/modality_gap]\nmode: [max, min]\nscheduler: asha\n"
        "params:\n  fusion.depth: {choice: [1, 2]}\n", None, ["scheduler", "asha", "multi-objective"]),
    "asha on a test metric": (
        "metric: test/scenes/zeroshot_top1\nscheduler: asha\n", None, ["scheduler", "val/scenes/zeroshot_top1"]),
    "asha without validation passes": (
        "config: {eval.every: 0}\nscheduler: asha\n", None, ["scheduler", "eval.every is 0"]),
    "multi-objective with grid": (
        "metric: [val/scenes/zeroshot_top1, val/scenes/modality_gap]\nmode: [max, min]\n", None, ["metric", "search: optuna"]),
    "modes not matching metrics": (
        OPTUNA + "metric: [val/scenes/zeroshot_top1, val/scenes/modality_gap]\nmode: max\n"
        "params:\n  fusion.depth: {choice: [1, 2]}\n", None, ["mode", "list of 2"]),
    "grid search with a uniform param": (
        "params:\n  objective.fusion_weight: {uniform: [0, 4]}\n",
        None, ["params[objective.fusion_weight].uniform", "search: random", "search: optuna"]),
    "random search with nothing to sample": (
        "search: random\nparams:\n  fusion.depth: {grid: [1, 2]}\n", None, ["search", "sampled param"]),
    "several seeds with optuna": (
        OPTUNA + "seeds: [0, 1]\nparams:\n  fusion.depth: {choice: [1, 2]}\n",
        None, ["seeds", "exactly one seed", "grid space"]),
    "optuna with nothing to choose": (OPTUNA, None, ["search", "optuna needs something to choose"]),
    "num_samples with grid": ("num_samples: 3\n", None, ["num_samples", "must be 1", "seeds: [0, 1, 2]"]),
    "seeds not a list": ("seeds: 0\n", None, ["seeds", "list of integers", "got 0"]),
    "negative num_samples": ("search: random\nnum_samples: -1\n", None, ["num_samples", "-1 is below the minimum 1"]),
    "no concurrent trials": ("max_concurrent_trials: 0\n", None, ["max_concurrent_trials", "minimum 1"]),
    "no workers": ("resources: {num_workers: 0}\n", None, ["resources.num_workers", "integer >= 1"]),
    "unknown resource": ("resources: {gpus: 1}\n", None, ["resources.gpus", "gpus_per_worker"]),
    "placement": ("resources: {placement_strategy: spread}\n", None,
                  ["resources.placement_strategy", "'spread' is not one of PACK, SPREAD"]),
    "unknown profile": (
        "profiles:\n  cpu: {}\n  gpu: {}\n", "tpu", ["unknown profile 'tpu'", "valid profiles: cpu, gpu"]),
    "mistake inside a profile": (
        "profiles:\n  gpu: {config: {data.batch_sise: 2048}}\n",
        "gpu", ["(profile gpu)", "profiles.gpu.config[data.batch_sise]", "data.batch_size"]),
    "unknown key inside a profile": (
        "profiles:\n  cpu: {seed: [1]}\n", None, ["profiles.cpu.seed", "seeds"]),
    "cross-key error names the trial": (
        "variants:\n  - {name: short warmup, set: {schedule.warmup_steps: 5}}\n"
        "  - {name: long warmup, set: {schedule.warmup_steps: 50}}\n"
        "params:\n  schedule.steps: {grid: [40, 100]}\n",
        None, ["trial 'long warmup steps=40 seed=0'", "schedule.warmup_steps: 50 exceeds schedule.steps 40"]),
    "when on an unknown key": (
        "params:\n  objective.alignment: {grid: [views, captions], when: {objective.nam: ito}}\n",
        None, ["when[objective.nam]", "did you mean objective.name"]),
    "when that can never match": (
        "params:\n  objective.name: {grid: [clip, ito]}\n"
        "  objective.alignment: {grid: [views, captions], when: {objective.name: simclr}}\n",
        None, ["when[objective.name]", "can never match", "'clip', 'ito'"]),
    "when on a key nothing sets": (
        "params:\n  objective.alignment: {grid: [views, captions], when: {fusion.readout: mean}}\n",
        None, ["when[fusion.readout]", "nothing in this space sets fusion.readout"]),
    "duplicate variant names": (
        "variants:\n  - {name: A, set: {objective.name: clip}}\n  - {name: A, set: {objective.name: ito}}\n",
        None, ["variants[1].name", "duplicate variant name 'A'"]),
    "a key both in a variant and in params": (
        VARIANTS_AB + "params:\n  objective.name: {grid: [clip, ito]}\n",
        None, ["params[objective.name]", "variant 'A' sets objective.name"]),
    "run.seed outside seeds": (
        "variants:\n  - {name: A, set: {objective.name: clip, run.seed: 1}}\n", None,
        ["variants[0].set", "run.seed is set by the top-level seeds list"]),
    "a val/ metric with no validation passes": (
        "config: {eval.every: 0}\n", None, ["metric", "val/zeroshot_avg needs validation passes", "eval.every is 0"]),
    "checkpoints between validation passes": (
        "config: {eval.every: 20, run.checkpoint_every: 30}\n", None,
        ["run.checkpoint_every", "30 is not a multiple of eval.every"]),
    "bad value in a variant": (
        "variants:\n  - {name: A, set: {objective.name: simclr}}\n",
        None, ["variants[0].set[objective.name]", "unknown objective 'simclr'"]),
    # refused here rather than found inside a trial after Ray, MLflow and perhaps a GPU node have started
    "a key written twice": ("seeds: [0]\nmode: max\nseeds: [1]\n", None, ["seeds: written twice (lines 1 and 3)"]),
    "a key written twice inside a profile": (
        "profiles:\n  cpu:\n    config:\n      optim.lr: 1.0e-3\n      optim.lr: 2.0e-3\n", None,
        ["profiles.cpu.config.optim.lr: written twice (lines 4 and 5)", "remove or rename one"]),
    "NaN learning rate in a profile": (
        "profiles:\n  cpu: {config: {optim.lr: .nan}}\n", None,
        ["(profile cpu)", "profiles.cpu.config[optim.lr]", "nan is not a finite number"]),
    "infinite range bound": (
        "search: random\nparams:\n  optim.lr: {loguniform: [1.0e-4, .inf]}\n", None,
        ["params[optim.lr].loguniform[1]", "inf is not a finite number"]),
    "infinite value in a grid": (
        "params:\n  objective.fusion_weight: {grid: [1, .inf]}\n", None,
        ["params[objective.fusion_weight].grid[1]", "not a finite number"]),
    "NaN resource": ("resources: {cpus_per_worker: .nan}\n", None, ["resources.cpus_per_worker", "not a finite number"]),
    "NaN reduction factor": (
        "scheduler: {name: asha, reduction_factor: .nan}\n", None, ["scheduler.reduction_factor", "not a finite number"]),
    "a batch that does not split over the workers": (
        "config: {data.batch_size: 33}\nresources: {num_workers: 2}\n", None,
        ["config[data.batch_size]", "global batch 33 does not split over 2 workers", "e.g. 32 or 34",
         "resources.num_workers is 2"]),
    "a swept batch that does not split": (
        "resources: {num_workers: 4}\nparams:\n  data.batch_size: {grid: [64, 66]}\n", None,
        ["params[data.batch_size]", "global batch 66 does not split over 4 workers"]),
    "a variant's batch that does not split": (
        "resources: {num_workers: 4}\nvariants:\n  - {name: A, set: {data.batch_size: 64}}\n"
        "  - {name: B, set: {data.batch_size: 30}}\n", None, ["variants[1].set[data.batch_size]", "global batch 30"]),
    "the default batch over three workers": (
        "resources: {num_workers: 3}\n", None, ["resources.num_workers", "global batch 128 does not split over 3"]),
    "fractional GPUs above one": ("resources: {gpus_per_worker: 1.5}\n", None, ["resources.gpus_per_worker", "whole number"]),
    "a negative infeasible wait": ("resources: {infeasible_wait_s: -1}\n", None, ["resources.infeasible_wait_s", ">= 0"]),
    "no checkpoint kept": ("checkpoints: {keep: 0}\n", None, ["checkpoints.keep", "below the minimum 1"]),
    "unknown final checkpoint": ("checkpoints: {final: none}\n", None, ["checkpoints.final", "'none' is not one of weights, full"]),
    "unknown checkpoints key": ("checkpoints: {keep_last: 2}\n", None, ["checkpoints.keep_last", "valid: keep, final"]),
    "two variants that train the same model": (
        "variants:\n  - {name: A, set: {objective.name: clip, fusion.depth: 1}}\n"
        "  - {name: B, set: {objective.name: clip, fusion.depth: 2}}\n", None,
        ["variants: 'B' trains exactly what 'A' trains", "never read by their objective"]),
    "an optuna param no trial reads": (
        OPTUNA + "config: {objective.name: clip}\nparams:\n  fusion.depth: {choice: [1, 2]}\n", None,
        ["params[fusion.depth]", "no trial of this space reads it", "objective.fusion_weight is 0"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_mistakes_stop_with_a_message_naming_them(tmp_path, case):
    text, profile, expected = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as caught:
        load_space(path, profile)
    message = str(caught.value)
    assert str(path) in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_missing_file_lists_the_spaces_beside_it(tmp_path):
    write(tmp_path, GOOD, "real.yaml")
    with pytest.raises(SpaceError, match=r"nope\.yaml: search space file not found .*real\.yaml"):
        load_space(tmp_path / "nope.yaml")


def test_a_key_written_twice_in_the_base_config(tmp_path):
    write(tmp_path, "schedule:\n  steps: 60\n  steps: 80\n", "base.yaml")
    with pytest.raises(SpaceError, match=r"space\.yaml: base: .*base\.yaml: schedule\.steps: written twice \(lines 2 and 3\)"):
        load_space(write(tmp_path, GOOD + "base: base.yaml\n"))


def test_a_yaml_merge_that_a_later_key_overrides_is_not_a_duplicate(tmp_path):
    space = load_space(write(tmp_path, GOOD + (
        "variants:\n"
        "  - {name: A, set: &short {objective.name: ito, schedule.steps: 50, schedule.warmup_steps: 5}}\n"
        "  - {name: B, set: {<<: *short, schedule.steps: 60}}\n"
    )))
    assert [cfg.schedule.steps for cfg in by_label(space).values()] == [50, 60]


def test_yaml_syntax_error(tmp_path):
    path = write(tmp_path, "params:\n  fusion.depth: {grid: [1, 2}\n")
    with pytest.raises(SpaceError, match=r"space\.yaml: invalid YAML"):
        load_space(path)


def test_profile_requested_from_a_file_without_profiles(tmp_path):
    with pytest.raises(SpaceError, match="unknown profile 'gpu' .*no profiles"):
        load_space(write(tmp_path, GOOD), "gpu")


# ---- semantics ------------------------------------------------------------------------------------


def test_conditional_keys_give_each_trial_once(tmp_path):
    path = write(tmp_path, GOOD.replace("seeds: [0]", "seeds: [0, 1]") + (
        "config: {objective: {alignment: none}}\n"
        "params:\n"
        "  objective.alignment: {grid: [views, captions, views_captions], when: {objective.name: ito}}\n"
        "  objective.name: {grid: [clip, ito]}\n"  # listed after the param whose condition reads it
        "  fusion.depth: {grid: [1, 4], when: {objective.alignment: [views, views_captions]}}\n"
    ))
    space = load_space(path)
    expected = {("clip", "none", 2, seed) for seed in (0, 1)}
    expected |= {("ito", "captions", 2, seed) for seed in (0, 1)}
    expected |= {("ito", a, d, seed) for a in ("views", "views_captions") for d in (1, 4) for seed in (0, 1)}
    got = [space.resolve(t) for t in space.trial_configs()]
    assert len(got) == len(expected) == 12  # (clip + ito captions + ito 2 alignments x 2 depths) x 2 seeds
    assert {(c.objective.name, c.objective.alignment, c.fusion.depth, c.run.seed) for c in got} == expected
    labels = [space.trial_label(t) for t in space.trial_configs()]
    assert "clip seed=0" in labels and "ito captions seed=1" in labels and "ito views fd=4 seed=0" in labels
    clip = space.trial_configs()[[i for i, label in enumerate(labels) if label == "clip seed=0"][0]]
    # a condition that failed leaves a key the trial never uses: it is not tagged
    assert space.trial_tags(clip) == {"objective.name": "clip", "run.seed": "0"}


def test_conditions_on_variants_and_nested_config(tmp_path):
    path = write(tmp_path, GOOD + VARIANTS_AB + (
        "config:\n  schedule: {steps: 50, warmup_steps: 5}\n  eval.every: 25\n"
        "params:\n  objective.fusion_weight: {grid: [0, 2], when: {objective.name: ito}}\n"
    ))
    space = load_space(path)
    cells = by_label(space)
    assert list(cells) == ["A seed=0", "B lam=0 seed=0", "B lam=2 seed=0"]
    assert cells["A seed=0"].schedule.steps == 50 and cells["B lam=0 seed=0"].objective.fusion_weight == 0.0


def test_base_file_is_read_relative_to_the_space(tmp_path):
    (tmp_path / "configs").mkdir()
    write(tmp_path / "configs", "schedule: {steps: 60, warmup_steps: 6}\nmodel: {name: tiny}\n", "base.yaml")
    path = write(tmp_path, GOOD + "base: configs/base.yaml\nconfig: {eval.every: 30}\n")
    space = load_space(path)
    trial = space.trial_configs()[0]
    assert "schedule.steps" not in space.trial_overrides(trial)
    cfg = space.resolve(trial)
    assert (cfg.schedule.steps, cfg.schedule.warmup_steps, cfg.eval.every) == (60, 6, 30)


def random_space(tmp_path, search_seed: int) -> SearchSpace:
    return load_space(write(tmp_path, (
        f"search: random\nsearch_seed: {search_seed}\nnum_samples: 50\nseeds: [0, 1]\n"
        "params:\n"
        "  objective.fusion_weight: {loguniform: [0.25, 8]}\n"
        "  fusion.depth: {choice: [1, 2, 4]}\n"
        "  optim.lr: {uniform: ['1e-4', 1.0e-3]}\n"
        "  schedule.steps: {randint: [40, 60]}\n"
        "  fusion.readout: {grid: [cls, mean]}\n"
    ), f"random{search_seed}.yaml"))


def test_random_search_is_reproducible_and_seeds_repeat_points(tmp_path):
    space = random_space(tmp_path, 3)
    assert space.trials == random_space(tmp_path, 3).trials
    assert space.trials != random_space(tmp_path, 4).trials
    assert space.num_trials() == 50 * 2 * 2  # samples x grid readout x seeds
    seeds_of = defaultdict(set)
    for trial in space.trials:
        seeds_of[(trial["variant"], tuple(sorted(trial["set"].items())))].add(trial["seed"])
    assert len(seeds_of) == 100 and all(seeds == {0, 1} for seeds in seeds_of.values())
    draws = [t["set"]["objective.fusion_weight"] for t in space.trials
             if t["seed"] == 0 and t["set"]["fusion.readout"] == "cls"]
    assert len(set(draws)) == 50 and all(0.25 <= w <= 8 for w in draws)
    # log-uniform: about as many draws below the geometric mean sqrt(2) as above it (uniform: 1/7 below)
    below = sum(w < math.sqrt(2) for w in draws)
    assert 15 <= below <= 35
    points = [t["set"] for t in space.trials]
    assert {p["fusion.depth"] for p in points} == {1, 2, 4}
    assert all(1e-4 <= p["optim.lr"] <= 1e-3 and 40 <= p["schedule.steps"] <= 60 for p in points)
    assert all(isinstance(p["schedule.steps"], int) for p in points)
    label = space.trial_label(space.trial_configs()[0])
    assert label.startswith("ito views lam=") and " fd=" in label and " lr=" in label and label.endswith("seed=0")


def optuna_space(tmp_path, extra: str = "") -> SearchSpace:
    return load_space(write(tmp_path, (
        "search: optuna\nnum_samples: 20\nsearch_seed: 1\nseeds: [7]\n" + VARIANTS_AB +
        "params:\n"
        "  objective.alignment: {choice: [views, views_captions], when: {objective.name: ito}}\n"
        "  objective.fusion_weight: {loguniform: [0.25, 8], when: {objective.name: ito}}\n"
        "  fusion.depth: {grid: [1, 2, 4], when: {objective.alignment: views_captions}}\n" + extra
    )))


def test_optuna_define_by_run_honours_conditions(tmp_path):
    space = optuna_space(tmp_path)
    define = space.define_by_run()
    assert pickle.loads(pickle.dumps(define)) == define
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        define(trial)
        params = trial.params
        seen.add((params["variant"], params.get("objective.alignment")))
        if params["variant"] == "A":
            assert set(params) == {"variant"}
        else:
            assert {"objective.alignment", "objective.fusion_weight"} <= set(params)
            assert ("fusion.depth" in params) == (params["objective.alignment"] == "views_captions")
        study.tell(trial, 0.5)
        # Tune hands the suggestions to the trainable as flat keys, beside its own entries
        cfg = space.resolve({**params, "sweep": {"name": "x"}})
        assert cfg.run.seed == 7 and cfg.objective.name == ("clip" if params["variant"] == "A" else "ito")
        if "fusion.depth" in params:
            assert cfg.fusion.depth == params["fusion.depth"]
            assert space.trial_label(params) == (f"B {params['objective.alignment']} "
                                                 f"lam={params['objective.fusion_weight']:.3g} "
                                                 f"fd={params['fusion.depth']} seed=7")
    assert seen == {("A", None), ("B", "views"), ("B", "views_captions")}


def test_optuna_searcher_suggests_flat_keys_and_multi_objective(tmp_path):
    space = optuna_space(tmp_path)
    assert space.num_trials() == 20 and space.param_space() == {}
    searcher = space.search_alg()
    assert isinstance(searcher, OptunaSearch)
    suggestion = searcher.suggest("trial_1")
    assert set(suggestion) <= {"variant", "objective.alignment", "objective.fusion_weight", "fusion.depth"}
    space.resolve(suggestion)

    multi = load_space(write(tmp_path, (
        "search: optuna\nnum_samples: 4\nmetric: [val/scenes/zeroshot_top1, val/scenes/modality_gap]\nmode: [max, min]\n"
        "params:\n  fusion.depth: {choice: [1, 2]}\n"
    ), "multi.yaml"))
    assert multi.tune_metric_mode() == (None, None)
    searcher = multi.search_alg()
    assert searcher.metric == ["val/scenes/zeroshot_top1", "val/scenes/modality_gap"]
    assert isinstance(multi.scheduler(), FIFOScheduler)


def test_asha_max_t_is_the_longest_trial(tmp_path):
    space = load_space(write(tmp_path, GOOD + (
        "config: {schedule.warmup_steps: 5, eval.every: 10}\n"
        "scheduler: {name: asha, grace_period: 20, reduction_factor: 3}\n"
        "params:\n  schedule.steps: {grid: [50, 90, 70]}\n"
    )))
    scheduler = space.scheduler()
    assert isinstance(scheduler, ASHAScheduler)
    assert (scheduler._time_attr, scheduler._max_t, scheduler._reduction_factor) == ("step", 90, 3.0)
    assert space.asha.grace_period == 20


# ---- swept keys a trial never reads ----------------------------------------------------------------


def test_a_swept_key_the_objective_never_reads_runs_once_with_a_warning(tmp_path):
    # the case: CLIP's lambda is 0, so it trains no fusion module and fusion.depth cannot matter
    space = load_space(write(tmp_path, GOOD + "config: {objective.name: clip}\nparams:\n  fusion.depth: {grid: [1, 2]}\n"))
    assert [space.trial_label(t) for t in space.trial_configs()] == ["clip seed=0"]
    (warning,) = space.warnings
    assert warning == (f"{tmp_path / 'space.yaml'}: params[fusion.depth]: objective.fusion_weight is 0: no fusion "
                       f"module is trained, so fusion.depth cannot change these trials; each group runs once: "
                       f"'clip fd=1 seed=0' and 'clip fd=2 seed=0' -> 'clip seed=0'")


def test_only_the_trials_that_cannot_read_a_key_are_merged(tmp_path):
    space = load_space(write(tmp_path, GOOD.replace("seeds: [0]", "seeds: [0, 1]") + (
        "params:\n  objective.name: {grid: [clip, ito]}\n  fusion.depth: {grid: [1, 2]}\n"
        "  objective.unialign.align_weight: {grid: [1, 2], when: {objective.name: ito}}\n")))
    cells = by_label(space)
    assert list(cells) == ["clip seed=0", "ito views fd=1 seed=0", "ito views fd=2 seed=0",
                           "clip seed=1", "ito views fd=1 seed=1", "ito views fd=2 seed=1"]
    assert cells["ito views fd=2 seed=1"].fusion.depth == 2 and cells["clip seed=1"].run.seed == 1
    assert len(space.warnings) == 2  # one per key: fusion.depth for CLIP, the UniAlign weight for ITO
    depth, align = space.warnings
    assert "params[fusion.depth]" in depth and "'clip fd=1 seed=1' and 'clip fd=2 seed=1' -> 'clip seed=1'" in depth
    assert "params[objective.unialign.align_weight]: objective ito does not read objective.unialign" in align
    assert "'ito views fd=1 align_weight=1 seed=0' and 'ito views fd=1 align_weight=2 seed=0' -> " \
           "'ito views fd=1 seed=0'" in align and "; and 1 more" in align
    # what a merged trial leaves out is not tagged, as for a failed condition
    clip = next(t for t in space.trial_configs() if space.trial_label(t) == "clip seed=0")
    assert space.trial_tags(clip) == {"objective.name": "clip", "run.seed": "0"}


def test_a_value_that_switches_a_key_back_on_is_not_dropped(tmp_path):
    # lambda 0 makes fusion.depth unused, and depth 0 would make lambda unused: never both dropped
    space = load_space(write(tmp_path, GOOD + (
        "config: {objective.name: ito, objective.fusion_weight: 2}\n"
        "params:\n  objective.fusion_weight: {grid: [0, 2]}\n  fusion.depth: {grid: [0, 2]}\n")))
    trained = {(cfg.objective.fusion_weight, cfg.fusion.depth) for cfg in by_label(space).values()}
    assert len(trained) == 3  # (0, any depth) once, (2, 0): no fusion either but the switch is depth, (2, 2)
    assert all(w == 0 or d in (0, 2) for w, d in trained) and (2.0, 2) in trained and (2.0, 0) in trained


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_spaces_sweep_nothing_their_trials_ignore(name, profile):
    assert load_space(SPACES / f"{name}.yaml", profile).warnings == []


def test_checkpoint_retention_and_infeasible_wait_are_read_with_defaults(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    assert (space.checkpoints.keep, space.checkpoints.final) == (1, "weights")
    assert space.resources.infeasible_wait_s == 600
    space = load_space(write(tmp_path, GOOD + "checkpoints: {keep: 3, final: full}\n"
                                              "resources: {infeasible_wait_s: 30, gpus_per_worker: 0.5}\n"
                                              "profiles:\n  cpu: {checkpoints: {keep: 2}}\n"))
    assert (space.checkpoints.keep, space.checkpoints.final) == (2, "full")  # merged key by key, as config is
    # what the trials' runs are told: only a trial that keeps its optimizer state once finished writes it last
    (point, *_) = space.trial_configs()
    assert trial_config(space.resolve(point), space.resources, space.checkpoints).run.final_optimizer_state
    assert not trial_config(space.resolve(point), space.resources).run.final_optimizer_state  # final: weights
    assert space.resources.infeasible_wait_s == 30.0 and space.resources.per_worker() == {"CPU": 1.0, "GPU": 0.5}
    assert space.resources_at["gpus_per_worker"] == "resources.gpus_per_worker"
