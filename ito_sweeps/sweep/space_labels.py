"""What a trial is called and tagged: labels read like the rows of a results table (`CLIP seed=1`,
`ito views_captions fd=2 seed=0`), tags name each swept key's value as the trial trains it."""
from __future__ import annotations

from collections import ChainMap
from typing import Any

from ito_sweeps import catalog
from ito_sweeps.sweep.space_parts import Param, Variant, typed

# the objective first, then short names for the ITO knobs
OBJECTIVE_KEYS = ("objective.name", "objective.alignment")
LABEL_NAMES = {"fusion.depth": "fd", "objective.fusion_weight": "lam"}


def trial_label(variant: Variant | None, chosen: dict[str, Any], seed: int, params: list[Param],
                fixed: dict[str, Any]) -> str:
    """The variant name (or the objective and, where it applies, its alignment), each swept param set for
    the trial in file order, then the seed."""
    chosen = {key: typed(key, value) for key, value in chosen.items()}
    values = ChainMap(chosen, variant.set if variant else {}, fixed)
    if variant:
        parts, skip = [variant.name], ()
    else:
        parts, skip = [str(values["objective.name"])], OBJECTIVE_KEYS
        info = catalog.OBJECTIVES.get(values["objective.name"])
        if (info is not None and info.uses_alignment) or "objective.alignment" in chosen:
            parts.append(str(values["objective.alignment"]))
    parts += [label_part(p.key, chosen[p.key]) for p in params if p.key in chosen and p.key not in skip]
    return " ".join([*parts, f"seed={seed}"])


def trial_tags(variant: Variant | None, chosen: dict[str, Any], trained: dict[str, Any], params: list[Param],
               swept_keys: list[str]) -> dict[str, str]:
    """`trained`: the trial's flattened Config (objective defaults applied), so a tag says what it trains."""
    tags = {"variant": variant.name} if variant else {}
    swept_params = {p.key for p in params}
    # a param left out of this trial (a failed condition, a value its objective never reads) keeps a
    # value the trial never uses: no tag
    tags.update({key: str(trained[key]) for key in swept_keys if key in chosen or key not in swept_params})
    return tags


def label_part(key: str, value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.3g}"
    elif isinstance(value, (list, tuple)):
        text = "+".join(map(str, value)) or "none"  # regularizers=sep+gc
    else:
        text = str(value)
    return text if key in OBJECTIVE_KEYS else f"{LABEL_NAMES.get(key, key.rsplit('.', 1)[-1])}={text}"
