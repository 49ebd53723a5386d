"""One typed configuration tree: the single source of truth for every default.

A run is described by `Config`; YAML files and `--set key.path=value` overrides are merged into the
defaults here (reading each value against its annotation: typed_tree.py) and checked before any work
starts. Every error names the dotted key path, so a typo in a sweep file fails in the first second
instead of after an hour of training. Names (objectives, regularisers) are checked against
ito_sweeps/catalog.py, which declares them without importing the code behind them.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ito_sweeps import catalog, strict_yaml, typed_tree
from ito_sweeps.eval_config import DEFAULT_BENCHMARKS, BenchmarkConfig, EvalConfig, check_benchmarks  # noqa: F401
from ito_sweeps.typed_tree import ConfigError, bounded, flatten, set_path  # noqa: F401 - the config's own API


@dataclass
class ModelConfig:
    name: str = "tiny"  # an open_clip model name (ViT-B-16, ...) or a registered small config (tiny)
    pretrained: str | None = None  # open_clip pretrained tag or weights file; never needed by tests
    grad_checkpointing: bool = False  # trade compute for activation memory on large models
    # Cheaper ITO (FLIP-style): this fraction of the patch tokens of every image view after the first is
    # dropped before the image tower, in training only; view 1 and every evaluation see all patches.
    # No effect on objectives that use one view. Must be below 1: at least one patch always stays.
    view_patch_dropout: float = bounded(0.0, 0.0)


@dataclass
class FusionConfig:
    depth: int = bounded(2, 0)  # 0 turns the training-time fusion module off
    heads: int = bounded(8, 1)
    mlp_ratio: float = bounded(4.0, 0.25)
    readout: Literal["cls", "mean", "token"] = "cls"
    # fraction of each image's patch tokens dropped from the fusion input (training only; CLS always stays)
    patch_dropout: float = bounded(0.0, 0.0)


@dataclass
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = bounded(0.8, 0.0, 1.0)
    grayscale_p: float = bounded(0.2, 0.0, 1.0)


@dataclass
class TextAugmentConfig:
    """EDA-style word operations that make a caption's in-modal positive (used by latent_structure).

    Each augmented caption gets one operation, chosen uniformly among those whose strength is above 0.
    """

    delete_p: float = bounded(0.1, 0.0, 1.0)  # each word is dropped with this probability (one always stays)
    swap_frac: float = bounded(0.1, 0.0, 1.0)  # swaps of two random words, as a fraction of the word count
    synonym_frac: float = bounded(0.1, 0.0, 1.0)  # words replaced by a synonym from the data set's vocabulary


@dataclass
class DataConfig:
    # scenes and digits are embedded and held in memory; webdataset and csv stream real data from
    # train_data (see ito_sweeps/data/stream.py), reading val_data and test_data into memory
    dataset: Literal["scenes", "digits", "webdataset", "csv"] = "scenes"
    seed: int = 0  # the data set's own seed: repeats of a trial vary run.seed, not the data
    image_size: int = bounded(32, 8)
    # embedded sets: captions rendered per image; streamed sets: the most captions an eval split keeps
    captions_per_image: int = bounded(5, 1)
    num_train: int = bounded(10_000, 1)  # embedded sets only: a stream's size is whatever train_data holds
    num_val: int = bounded(500, 1)  # streamed sets: the first num_val samples of val_data
    num_test: int = bounded(1_000, 1)  # streamed sets: the first num_test samples of test_data
    batch_size: int = bounded(128, 2)  # global batch, split across data-parallel workers
    num_workers: int = bounded(1, 0)  # loader processes per rank; streams use at most one per shard of the rank
    # Streamed data, required for webdataset and csv. webdataset: a brace pattern (DIR/{000000..000009}.tar),
    # one .tar, or a directory (its *.tar, sorted); s3://, gs://, http(s):// and pipe: URLs are passed on
    # unchecked. csv: a CSV file whose image paths are relative to its folder unless absolute.
    train_data: str | None = None
    val_data: str | None = None  # needed when eval.every > 0
    test_data: str | None = None
    # open_clip's CSV defaults: tab-separated, image path in `filepath`, caption in `title`
    csv_separator: str = "\t"
    csv_image_key: str = "filepath"
    csv_caption_key: str = "title"
    # splits a caption cell into several captions of one image (e.g. "|"); None: one caption per row
    csv_caption_separator: str | None = None
    shuffle_buffer: int = bounded(1000, 1)  # samples each loader worker holds to shuffle a stream: bounds memory
    # where a stream's JPEGs are decoded: in the loader processes, or a batch at a time on the training GPU
    # (nvJPEG), so a sample costs the CPU little more than reading its bytes; other formats stay on the CPU
    decode: Literal["cpu", "gpu"] = "cpu"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    text_augment: TextAugmentConfig = field(default_factory=TextAugmentConfig)


@dataclass
class UniAlignConfig:
    """UniAlign (methods.md section 3): per-modality uniformity plus anchor-based alignment."""

    anchor: Literal["image", "text"] = "image"  # the modality every other one is pulled towards
    uniformity_weight: float = bounded(1.0, 0.0)
    uniformity_tau: float = bounded(0.5, 1e-3)  # Gaussian kernel width; 0.5 is Wang-Isola's t = 2
    align_weight: float = bounded(1.0, 0.0)
    centroid_weight: float = bounded(0.0, 0.0)  # uniformity of each sample's centroid over the batch
    centroid_tau: float = bounded(0.5, 1e-3)
    volume_weight: float = bounded(0.0, 0.0)  # Gram volume of each sample's unit vectors (1 for retrieval)


@dataclass
class LatentStructureConfig:
    """Jiang et al.'s regularisers (methods.md section 4), each added on top of L_con."""

    regularizers: tuple[str, ...] = ()  # any of sep, br, gc; empty trains L_con alone
    sep_weight: float = bounded(1.0, 0.0)
    br_weight: float = bounded(1.0, 0.0)
    gc_weight: float = bounded(1.0, 0.0)
    bridge_t: float = bounded(0.25, 0.0, 1.0)  # where on the image-text bridge the augmented image must lie


@dataclass
class CyCLIPConfig:
    """CyCLIP: CLIP plus the two symmetry terms of L_gc; 0.25 each as in the CyCLIP paper."""

    cross_weight: float = bounded(0.25, 0.0)  # <I_j, T_k> = <I_k, T_j>
    inmodal_weight: float = bounded(0.25, 0.0)  # <I_j, I_k> = <T_j, T_k>


@dataclass
class ObjectiveConfig:
    name: str = "ito"  # a registered objective: see ito_sweeps/catalog.py
    # which views and captions enter ito's and unialign's alignment (the other objectives fix theirs)
    alignment: Literal["none", "views", "captions", "views_captions"] = "views"
    num_views: int = bounded(2, 1)  # K image views for the `views` variants
    num_captions: int = bounded(2, 1)  # K' captions for the `captions` variants
    # lambda of ITO's training-time fusion term, which any objective can add; 0 drops the fusion module.
    # None takes the objective's own default: 2 for ito, 0 (no fusion) for every peer objective.
    fusion_weight: float | None = bounded(None, 0.0)
    local_loss: bool = False  # open_clip's local_loss: local rows against the global batch
    unialign: UniAlignConfig = field(default_factory=UniAlignConfig)
    latent_structure: LatentStructureConfig = field(default_factory=LatentStructureConfig)
    cyclip: CyCLIPConfig = field(default_factory=CyCLIPConfig)


@dataclass
class OptimConfig:
    lr: float = bounded(2e-3, 0.0)
    weight_decay: float = bounded(0.1, 0.0)
    beta1: float = bounded(0.9, 0.0, 1.0)
    beta2: float = bounded(0.98, 0.0, 1.0)
    eps: float = bounded(1e-6, 0.0)
    grad_clip: float | None = bounded(None, 0.0)  # max global grad norm; None = no clipping


@dataclass
class ScheduleConfig:
    steps: int = bounded(200, 1)
    warmup_steps: int = bounded(20, 0)
    min_lr_ratio: float = bounded(0.0, 0.0, 1.0)  # cosine floor as a fraction of lr


@dataclass
class RunConfig:
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True  # autocast to bfloat16 on CUDA; ignored on CPU
    compile: bool = False
    deterministic: bool = False  # torch.use_deterministic_algorithms on top of seeding
    log_every: int = bounded(10, 1)
    checkpoint_every: int = bounded(0, 0)  # 0 = only the final checkpoint
    # the optimizer state in the final checkpoint too, so that the run can be trained on past its schedule;
    # a sweep whose finished trials keep weights only (checkpoints.final: weights) never writes it
    final_optimizer_state: bool = True
    threads: int = bounded(0, 0)  # torch intra-op threads; 0 = torch's default


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return typed_tree.plain(dataclasses.asdict(self))

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, as sweeps and trackers see the config."""
        return flatten(self.to_dict())


# ---- building a Config from plain data, with checks -------------------------------------------------


def from_dict(data: dict[str, Any] | None) -> Config:
    cfg = typed_tree.build(Config, data or {})
    if cfg.eval.benchmarks is None:
        cfg.eval.benchmarks = DEFAULT_BENCHMARKS[cfg.data.dataset]
    check(cfg)
    if cfg.objective.fusion_weight is None:
        cfg.objective.fusion_weight = catalog.OBJECTIVES[cfg.objective.name].default_fusion_weight
    return cfg


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML file <- `key.path=value` overrides, then every check."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = strict_yaml.load(path)
        except strict_yaml.DuplicateKeyError as err:
            raise ConfigError(f"{path}: {err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        data = loaded or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected KEY.PATH=VALUE, e.g. objective.fusion_weight=2")
        set_path(data, key.strip(), yaml.safe_load(raw))
    return from_dict(data)


@functools.cache
def key_type(key: str) -> Any:
    """The type of a dotted config key, Optional unwrapped: objective.fusion_weight -> float.

    Raises KeyError for a key the config does not have.
    """
    return typed_tree.key_type(Config, key)


def check(cfg: Config) -> None:
    """Checks that involve more than one key or a declared name."""
    if cfg.objective.name not in catalog.OBJECTIVES:
        raise ConfigError(f"objective.name: unknown objective {cfg.objective.name!r} "
                          f"(valid: {', '.join(sorted(catalog.OBJECTIVES))})")
    names = cfg.objective.latent_structure.regularizers
    for name in names:
        if name not in catalog.REGULARIZERS:
            raise ConfigError(f"objective.latent_structure.regularizers: unknown regulariser {name!r} "
                              f"(valid: {', '.join(catalog.REGULARIZERS)})")
    if len(set(names)) < len(names):
        raise ConfigError(f"objective.latent_structure.regularizers: {list(names)} names one twice")
    if cfg.schedule.warmup_steps > cfg.schedule.steps:
        raise ConfigError(
            f"schedule.warmup_steps: {cfg.schedule.warmup_steps} exceeds schedule.steps {cfg.schedule.steps}"
        )
    for key, value in (("model.view_patch_dropout", cfg.model.view_patch_dropout),
                       ("fusion.patch_dropout", cfg.fusion.patch_dropout)):
        if value >= 1:
            raise ConfigError(f"{key}: {value!r} would drop every patch; use a fraction in [0, 1), e.g. 0.5")
    lo, hi = cfg.data.augment.crop_scale
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"data.augment.crop_scale: need 0 < low <= high <= 1, got {[lo, hi]}")
    lo, hi = cfg.data.augment.crop_ratio
    if not 0 < lo <= hi:
        raise ConfigError(f"data.augment.crop_ratio: need 0 < low <= high, got {[lo, hi]}")
    if any(j < 0 for j in cfg.data.augment.jitter) or cfg.data.augment.jitter[3] > 0.5:
        raise ConfigError(f"data.augment.jitter: need non-negative values and hue <= 0.5, got {cfg.data.augment.jitter}")
    _check_data_keys(cfg)
    check_benchmarks(cfg.eval, cfg.data)


def check_batch_split(batch_size: int, world_size: int) -> None:
    """A global batch that data-parallel training over `world_size` workers can split evenly."""
    if batch_size % world_size:
        low = batch_size - batch_size % world_size
        near = " or ".join(str(b) for b in (low, low + world_size) if b >= 2)
        raise ConfigError(f"data.batch_size: global batch {batch_size} does not split over {world_size} workers; "
                          f"use a multiple of {world_size}, e.g. {near}")


def _check_data_keys(cfg: Config) -> None:
    data = cfg.data
    streamed = data.dataset in ("webdataset", "csv")
    own = [b for b in cfg.eval.benchmarks or () if b.source == "run"]
    needed = {"train_data": True, "val_data": any(b.evaluated_at("val", cfg.eval.every) for b in own),
              "test_data": bool(own)}
    for key, needed_here in needed.items():
        value = getattr(data, key)
        if streamed and needed_here and not value:
            raise ConfigError(
                f"data.{key}: required for data.dataset={data.dataset}; e.g. data.{key}=DIR/{key.split('_')[0]} "
                f"with shards written by `ito-sweeps make-shards DIR`"
            )
        if not streamed and value is not None:
            raise ConfigError(
                f"data.{key}: only read for data.dataset=webdataset or csv, not {data.dataset}; remove it"
            )
    if not streamed and data.num_train < data.batch_size:
        raise ConfigError(f"data.batch_size: {data.batch_size} is larger than data.num_train {data.num_train}")
    if data.decode == "gpu" and not streamed:
        raise ConfigError(f"data.decode: gpu decodes streamed JPEGs; data.dataset={data.dataset} is held decoded in "
                          f"memory, so use data.decode=cpu")
    if data.decode == "gpu" and cfg.run.device == "cpu":
        raise ConfigError("data.decode: gpu needs a GPU to train on; use run.device=cuda, or data.decode=cpu")
    if data.csv_caption_separator == "":
        raise ConfigError("data.csv_caption_separator: empty; use null for one caption per row")


def dump(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
