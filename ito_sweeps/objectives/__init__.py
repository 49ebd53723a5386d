"""Training objectives by name: `build_objective(cfg)` gives the one a config chooses.

Importing this package registers every family (registry.py holds the registry and what an objective
declares it needs); ITO's training-time fusion term is added to whichever objective is chosen when
objective.fusion_weight and fusion.depth are both above 0.
"""
from ito_sweeps.config import Config
from ito_sweeps.objectives import clip, latent_structure, unialign  # noqa: F401 - importing registers them
from ito_sweeps.objectives.ito import WithFusion
from ito_sweeps.objectives.registry import OBJECTIVES, Objective


def build_objective(cfg: Config) -> Objective:
    objective = OBJECTIVES[cfg.objective.name](cfg)  # the name was checked when the config was built
    if cfg.objective.fusion_weight and cfg.fusion.depth:
        objective = WithFusion(objective, cfg.objective.fusion_weight)
    return objective
