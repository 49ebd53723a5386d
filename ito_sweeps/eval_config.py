"""The `eval` section of the config: the evaluation suite of named benchmarks, and its rules.

A benchmark is one data set (the run's own held-out data, an embedded set rendered for it, or files in
CLIP_benchmark's or open_clip's layout) and the tasks run on it; every metric it reports is named
val|test/BENCHMARK/METRIC (catalog.TASK_METRICS), so sweeps, schedulers and tables address columns of
one suite by name. Ground floor like config.py: no torch, no file is read here (data/paths.py checks the
files).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from ito_sweeps import catalog
from ito_sweeps.typed_tree import ConfigError, bounded

Task = Literal["zeroshot_classification", "zeroshot_retrieval", "linear_probe"]


@dataclass
class BenchmarkConfig:
    """One named evaluation data set and the tasks run on it; its metrics are val|test/NAME/METRIC.

    The samples come from one of three places:
    - neither `path` nor `embedded`: this run's own held-out data (the val split at validation passes, the
      test split at the end; data.val_data / data.test_data for streamed data), the probe fitted on the first
      samples of its training data;
    - `embedded`: scenes or digits rendered for this benchmark from `seed`: the first `size` samples are
      evaluated, the next `train_size` fit the probe;
    - `path`: files in CLIP_benchmark's webdataset layout (a folder of shards, a brace pattern or one .tar,
      with classnames.txt and zeroshot_classification_templates.txt beside it or one folder up; retrieval
      captions one per line of key.txt) or an open_clip CSV (*.csv, read with the data.csv_* settings).
    """

    name: str = ""
    tasks: tuple[Task, ...] = ("zeroshot_classification",)
    # the tasks of validation passes, some of `tasks`; None: all of them. A probe refitted at every pass
    # costs more than the zero-shot score that a training-dynamics plot reads
    val_tasks: tuple[Task, ...] | None = None
    path: str | None = None
    embedded: Literal["scenes", "digits"] | None = None
    seed: int = 1  # embedded sets: the rendering seed (scenes: not data.seed, which renders the training set)
    # the zero-shot task of an embedded set with several (scenes: object, count), also of a run's own embedded
    # data; None: its first
    label: str | None = None
    # samples of the test pass; None: all of path's, EMBEDDED_SIZE of an embedded set (run's own: data.num_test)
    size: int | None = bounded(None, 1)
    # the first samples of the test set evaluated at validation passes; 0: none; None: all of `size`
    # (run's own: the val split, data.num_val)
    val_size: int | None = bounded(None, 0)
    train_path: str | None = None  # linear_probe on files: a labelled train split in the same layout
    train_size: int | None = bounded(None, 2)  # samples fitting the probe; None: eval.probe_train_size

    @property
    def source(self) -> str:
        return "path" if self.path is not None else "embedded" if self.embedded is not None else "run"

    def evaluated_at(self, split: Literal["val", "test"], eval_every: int) -> bool:
        if split == "test":
            return True
        return bool(eval_every) and self.val_size != 0

    def tasks_at(self, split: str) -> tuple[Task, ...]:
        """The tasks run at `split` (val, test)."""
        return self.val_tasks if split == "val" and self.val_tasks is not None else self.tasks


EMBEDDED_SIZE = 1000
DIGITS_TOTAL = 1797  # scikit-learn's bundled handwritten digits
EMBEDDED_LABELS = {"scenes": ("object", "count"), "digits": ("digit",)}
_ALL_TASKS: tuple[Task, ...] = ("zeroshot_classification", "zeroshot_retrieval", "linear_probe")
# Each data set's default suite, in-domain (the run's own held-out data) and, for the embedded sets,
# transfer to the other embedded set, which training never shows. Streamed data carries no promise of
# class names or labels, so its default is retrieval alone; name the rest in eval.benchmarks.
DEFAULT_BENCHMARKS: dict[str, tuple[BenchmarkConfig, ...]] = {
    "scenes": (
        BenchmarkConfig(name="scenes", tasks=_ALL_TASKS),
        BenchmarkConfig(name="scenes_count", label="count"),
        BenchmarkConfig(name="digits", embedded="digits", tasks=("zeroshot_classification", "linear_probe"),
                        seed=0, size=500, train_size=1000),
    ),
    "digits": (
        BenchmarkConfig(name="digits", tasks=_ALL_TASKS),
        BenchmarkConfig(name="scenes", embedded="scenes", tasks=("zeroshot_classification", "linear_probe"),
                        size=500, train_size=1000),
    ),
    "webdataset": (BenchmarkConfig(name="heldout", tasks=("zeroshot_retrieval",)),),
    "csv": (BenchmarkConfig(name="heldout", tasks=("zeroshot_retrieval",)),),
}


@dataclass
class EvalConfig:
    every: int = bounded(100, 0)  # steps between validation passes; 0 = only the final test pass
    # None: the default suite of data.dataset (DEFAULT_BENCHMARKS); [] evaluates nothing
    benchmarks: tuple[BenchmarkConfig, ...] | None = None
    probe_train_size: int = bounded(2_000, 2)  # train images whose frozen features fit each probe
    probe_c: float = bounded(1.0, 0.0)
    batch_size: int = bounded(256, 1)
    embeddings_sample: int = bounded(1_000, 0)  # test pairs whose final embeddings are saved; 0 = none

    def metric_names(self, split: Literal["val", "test"]) -> list[str]:
        """Every metric a pass over this suite reports, without the val/ or test/ prefix."""
        names: list[str] = []
        classification = 0
        for bench in self.benchmarks or ():
            if bench.evaluated_at(split, self.every):
                tasks = bench.tasks_at(split)
                names += [f"{bench.name}/{m}" for task in ("samples", *tasks) for m in catalog.TASK_METRICS[task]]
                classification += "zeroshot_classification" in tasks
        return names + (["zeroshot_avg"] if classification else [])



BENCHMARK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
RESERVED_METRICS = ("zeroshot_avg", "steps", "train_time_s")  # test/NAME metrics that are not benchmarks


def check_benchmarks(cfg: EvalConfig, data: Any) -> None:
    """The suite's rules that need no file: names, tasks, where samples come from, sizes."""
    seen: set[str] = set()
    for n, bench in enumerate(cfg.benchmarks or ()):
        key = f"eval.benchmarks[{n}]"
        if not BENCHMARK_NAME.fullmatch(bench.name) or bench.name in RESERVED_METRICS:
            raise ConfigError(f"{key}.name: {bench.name!r} cannot name a benchmark; use letters, digits, _ . - "
                              f"(e.g. imagenet1k), not one of {', '.join(RESERVED_METRICS)}")
        if bench.name in seen:
            raise ConfigError(f"{key}.name: two benchmarks are named {bench.name!r}; list the tasks of one data set "
                              f"under one benchmark's tasks, or give each its own name")
        seen.add(bench.name)
        key = f"{key} ({bench.name})"
        if not bench.tasks or len(set(bench.tasks)) < len(bench.tasks):
            raise ConfigError(f"{key}.tasks: {list(bench.tasks)}: name each task once, at least one")
        if bench.val_tasks is not None:
            extra = [t for t in bench.val_tasks if t not in bench.tasks]
            if not bench.val_tasks or extra or len(set(bench.val_tasks)) < len(bench.val_tasks):
                raise ConfigError(f"{key}.val_tasks: {list(bench.val_tasks)}: name some of tasks "
                                  f"({', '.join(bench.tasks)}), each once; val_size: 0 skips validation passes")
        _check_source(cfg, data, bench, key)
        if bench.train_path is not None and not ("linear_probe" in bench.tasks and bench.source == "path"):
            raise ConfigError(f"{key}.train_path: only read by a linear_probe on files (path); remove it")


def _check_source(cfg: EvalConfig, data: Any, bench: BenchmarkConfig, key: str) -> None:
    if bench.path is not None and bench.embedded is not None:
        raise ConfigError(f"{key}: path and embedded both set; a benchmark reads files or renders a set, not both")
    if bench.source == "run":
        for name in ("size", "val_size"):
            if getattr(bench, name) is not None:
                raise ConfigError(f"{key}.{name}: the run's own held-out data has data.num_test and data.num_val "
                                  f"samples; set those instead, or point the benchmark at files (path)")
    if bench.source == "path":
        if bench.label is not None:
            raise ConfigError(f"{key}.label: files carry one class per sample (key.cls); remove label")
        if "linear_probe" in bench.tasks and bench.train_path is None:
            raise ConfigError(f"{key}.train_path: a linear_probe on files needs a labelled train split (e.g. "
                              f"wds_NAME/train in CLIP_benchmark's layout); the probe never uses training labels")
        return
    labels = EMBEDDED_LABELS.get(bench.embedded if bench.source == "embedded" else data.dataset)
    if bench.label is not None and bench.label not in (labels or ()):
        where = f"embedded {bench.embedded}" if bench.source == "embedded" else f"data.dataset {data.dataset}"
        raise ConfigError(f"{key}.label: {bench.label!r} is not a zero-shot task of {where} "
                          f"(valid: {', '.join(labels) if labels else 'none; files carry one class per sample'})")
    if bench.source == "embedded":
        if bench.embedded == data.dataset and bench.seed == data.seed:
            raise ConfigError(f"{key}.seed: {bench.seed} is data.seed, which renders this run's training set; "
                              f"choose another seed so the benchmark holds unseen samples")
        total = (bench.size or EMBEDDED_SIZE) + (bench.train_size or cfg.probe_train_size) * \
            ("linear_probe" in bench.tasks)
        if bench.embedded == "digits" and total > DIGITS_TOTAL:
            raise ConfigError(f"{key}: size + train_size = {total} exceeds the {DIGITS_TOTAL} digits images; "
                              f"e.g. size: 500, train_size: 1000")
