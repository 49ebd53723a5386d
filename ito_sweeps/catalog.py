"""Every name a config or a search space can choose, and what each objective reads of the config.

Checking a config or a whole search space needs these declarations, not the code behind them: nothing
here imports torch, so a typo is refused in a second. The implementations register under the same names
(`objectives.registry.register`, `objectives.latent_structure.REGULARIZERS`, `evaluate.suite`),
and the tests hold the two lists equal.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ObjectiveInfo:
    default_fusion_weight: float = 0.0  # lambda when objective.fusion_weight is not set
    uses_alignment: bool = False  # objective.alignment (with num_views, num_captions) chooses its inputs
    reads: tuple[str, ...] = ()  # the objective-specific config keys and sections it reads (see below)


OBJECTIVES: dict[str, ObjectiveInfo] = {
    "clip": ObjectiveInfo(reads=("objective.local_loss",)),
    "ito": ObjectiveInfo(default_fusion_weight=2.0, uses_alignment=True, reads=("objective.local_loss",)),
    "unialign": ObjectiveInfo(uses_alignment=True, reads=("objective.unialign",)),
    "latent_structure": ObjectiveInfo(reads=("objective.latent_structure", "data.text_augment")),
    "cyclip": ObjectiveInfo(reads=("objective.local_loss", "objective.cyclip")),
}
ALIGNMENT_KEYS = ("objective.alignment", "objective.num_views", "objective.num_captions")
# keys and sections that only some objectives read: a trial whose objective reads none of them trains
# the same model whatever they hold
OBJECTIVE_SPECIFIC = (*ALIGNMENT_KEYS, *dict.fromkeys(s for info in OBJECTIVES.values() for s in info.reads))

REGULARIZERS = ("sep", "br", "gc")  # latent_structure's, each with its <name>_weight

GEOMETRY_METRICS = ("modality_gap", "mean_paired_distance", "alignment",
                    "uniformity_image", "uniformity_text", "uniformity_union")
# What each evaluation task reports for one benchmark (`evaluate.suite`), logged as val|test/BENCHMARK/METRIC;
# search spaces and table specs check their metrics against a suite with these before Ray starts. Zero-shot
# classification reports what CLIP_benchmark reports (acc1, acc5 over min(5, classes), mean per-class
# recall); retrieval also the geometry of the benchmark's image-caption pairs.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "samples": ("samples",),  # every benchmark: how many samples were scored (corrupt ones are skipped)
    "zeroshot_classification": ("zeroshot_top1", "zeroshot_top5", "zeroshot_mean_per_class_recall"),
    "zeroshot_retrieval": ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", *GEOMETRY_METRICS),
    "linear_probe": ("probe_top1",),
}


def unused_keys(flat: dict[str, Any]) -> dict[str, str]:
    """Config keys (dotted, as `Config.flat()` gives them) whose value cannot change what this config
    trains, each with the reason; two configs that differ only there train the same model.

    Deliberately narrow: only keys the training code never reads under these settings. A weight of 0
    that is still multiplied in (and whose term is still logged) is not listed.
    """
    name = flat["objective.name"]
    info = OBJECTIVES[name]
    reads = info.reads + (ALIGNMENT_KEYS if info.uses_alignment else ())
    unused: dict[str, str] = {}

    def mark(prefix: str, reason: str) -> None:
        for key in flat:
            if (key == prefix or key.startswith(prefix + ".")) and key not in unused:
                unused[key] = reason

    for section in OBJECTIVE_SPECIFIC:
        if section not in reads:
            mark(section, f"objective {name} does not read {section}")
    if info.uses_alignment:
        alignment = flat["objective.alignment"]
        if alignment not in ("views", "views_captions"):
            mark("objective.num_views", f"objective.alignment {alignment} aligns one view")
        if alignment not in ("captions", "views_captions"):
            mark("objective.num_captions", f"objective.alignment {alignment} aligns one caption")
    if name == "latent_structure":
        chosen = flat["objective.latent_structure.regularizers"]
        for regularizer in REGULARIZERS:
            if regularizer not in chosen:
                mark(f"objective.latent_structure.{regularizer}_weight", f"regulariser {regularizer} is not chosen")
        if "br" not in chosen:
            mark("objective.latent_structure.bridge_t", "regulariser br is not chosen")
    if name == "unialign" and not flat["objective.unialign.centroid_weight"]:
        mark("objective.unialign.centroid_tau", "objective.unialign.centroid_weight is 0")
    # one switch is enough to turn fusion off: the other stays meaningful, so both are never marked
    if not flat["objective.fusion_weight"]:
        mark("fusion", "objective.fusion_weight is 0: no fusion module is trained")
    elif not flat["fusion.depth"]:
        mark("objective.fusion_weight", "fusion.depth is 0: no fusion module is trained")
        mark("fusion", "fusion.depth is 0: no fusion module is trained")
        del unused["fusion.depth"]
    return unused
