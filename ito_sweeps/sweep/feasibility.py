"""Whether a trial's resource request can ever be met, so that a sweep never waits forever for it.

Ray Train places a trial's workers as one placement group and waits for it without end: a request for a
GPU on a machine without one hangs the sweep while the console repeats the autoscaler's "No available node
types can fulfill resource request". Two guards:

- `check_local`: when the sweep starts its own Ray on this machine, the request is compared with what
  Ray will find here (its own detection of CPUs and GPUs) before Ray starts or any run is recorded.
- `infeasible.InfeasibleWatch`: on a cluster, an autoscaler may still add a node type that has what is
  asked for, so the sweep fails only once Ray has reported the trial's placement group infeasible (no
  node of the cluster could ever hold it) for `resources.infeasible_wait_s` seconds.

This module imports neither Tune nor the trial code: it runs before the sweep commits to anything.
"""
from __future__ import annotations

from ito_sweeps.sweep.space import SearchSpace, SpaceError


class InfeasibleRequest(SpaceError):
    """Raised on the sweep driver: Ray reported a trial's request infeasible for longer than allowed."""


def local_capacity() -> dict[str, float]:
    """The CPUs and GPUs a Ray started here would register, by Ray's own detection (cgroup limits,
    CUDA_VISIBLE_DEVICES and NVML included)."""
    from ray._private.resource_and_label_spec import ResourceAndLabelSpec
    from ray._private.utils import get_num_cpus

    manager, accelerators = ResourceAndLabelSpec._get_current_node_accelerator(None, {})
    gpus = accelerators if manager is not None and manager.get_resource_name() == "GPU" else 0
    return {"CPU": float(get_num_cpus()), "GPU": float(gpus)}


def check_local(space: SearchSpace, capacity: dict[str, float]) -> None:
    """SpaceError naming the resources key when one trial's workers cannot all run on this machine."""
    res = space.resources
    for resource, per_worker in res.per_worker().items():
        need, have = per_worker * res.num_workers, capacity.get(resource, 0.0)
        if need <= have:
            continue
        key = "gpus_per_worker" if resource == "GPU" else "cpus_per_worker"
        fix = ("use a profile without GPUs (e.g. --profile cpu) or resources.gpus_per_worker: 0" if resource == "GPU"
               else f"lower resources.{key} or resources.num_workers")
        raise SpaceError(f"{space.shown()}: {space.resources_at[key]}: a trial asks for {_amount(need)} {resource} "
                         f"({res.num_workers} worker(s) x {_amount(per_worker)}), but this machine has "
                         f"{_amount(have)}, and a local Ray would wait for them forever; {fix}, or run the sweep "
                         f"on a Ray cluster that has them (--address)")
    if res.placement_strategy == "STRICT_SPREAD" and res.num_workers > 1:
        raise SpaceError(f"{space.shown()}: {space.resources_at['placement_strategy']}: STRICT_SPREAD puts each of "
                         f"the {res.num_workers} workers on a node of its own, but a local Ray is one node; use "
                         f"PACK or SPREAD, or run the sweep on a Ray cluster (--address)")


def _amount(value: float) -> str:
    return f"{value:g}"
