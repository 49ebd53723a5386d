"""The sweep driver's watch for trials whose resource request no node of the cluster can meet.

Ray Train waits for a trial's placement group without end. On a cluster an autoscaler may still add a
node type that has what is asked for (a GPU node takes minutes to boot), so waiting is right for a while:
the sweep fails once Ray (the GCS) has reported one of its placement groups infeasible for
`resources.infeasible_wait_s` seconds without a break. On this machine alone `feasibility.check_local`
refuses such a request before Ray starts.
"""
from __future__ import annotations

import logging
import time

from ray.tune import Callback

from ito_sweeps.sweep.feasibility import InfeasibleRequest
from ito_sweeps.sweep.space import SearchSpace

POLL_S = 2.0  # between looks at the placement groups: one GCS request each
log = logging.getLogger(__name__)


class InfeasibleWatch(Callback):
    """A Tune callback on the sweep driver; it holds plain values, as Tune pickles callbacks into its state."""

    def __init__(self, space_shown: str, where: str, request: dict[str, float], workers: int, wait_s: float):
        self.space_shown, self.where, self.request = space_shown, where, request
        self.workers, self.wait_s = workers, wait_s
        self._since: float | None = None  # when Ray was first seen reporting an infeasible group of this sweep
        self._polled = 0.0
        self._blind = False  # Ray's placement groups could not be read: nothing to watch

    @classmethod
    def for_space(cls, space: SearchSpace) -> InfeasibleWatch:
        res = space.resources
        where = space.resources_at["gpus_per_worker" if res.use_gpu else "cpus_per_worker"]
        return cls(space.shown(), where, res.per_worker(), res.num_workers, res.infeasible_wait_s)

    def __getstate__(self):
        # monotonic clock readings mean nothing in the process that resumes the sweep
        return {**self.__dict__, "_since": None, "_polled": 0.0}

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if self._blind or now - self._polled < POLL_S:
            return
        self._polled = now
        try:
            infeasible = infeasible_groups()
        except Exception as err:  # noqa: BLE001 - a watch that cannot look must never stop the sweep itself
            log.warning("cannot read Ray's placement groups (%s); not watching for infeasible requests", err)
            self._blind = True
            return
        if not infeasible:
            self._since = None
            return
        self._since = self._since or now
        if now - self._since >= self.wait_s:
            raise InfeasibleRequest(
                f"{self.space_shown}: {self.where}: Ray reports that no node of this cluster can hold a trial's "
                f"{self.workers} worker(s) of {self.request} each, and none joined within "
                f"resources.infeasible_wait_s ({self.wait_s:g} s); lower the request, add a node type that has "
                f"it to the cluster, or raise resources.infeasible_wait_s if such nodes take longer to start")


def infeasible_groups() -> list[str]:
    """Ids of this job's placement groups that Ray (the GCS) reports no node can ever hold."""
    import ray
    from ray.util.placement_group import placement_group_table

    job = ray.get_runtime_context().get_job_id()
    # a placement group id ends with the id of the job that created it, and every trial of a sweep
    # (Tune's actors, Train's controller) belongs to the sweep driver's job
    return [group for group, state in placement_group_table().items()
            if group.endswith(job) and state["state"] == "PENDING"
            and state.get("stats", {}).get("scheduling_state") == "INFEASIBLE"]


def remove_infeasible_groups(settle_s: float = 10.0) -> None:
    """Once the sweep has given up: nothing of it stays queued in Ray (a driver that joined a cluster may
    live on, and a job's placement groups outlive the actors that asked for them). A trial's Train
    controller may place a new group while it is being stopped, hence the few rounds."""
    from ito_sweeps.sweep.leftovers import remove_group

    deadline, quiet = time.monotonic() + settle_s, 0
    while quiet < 2 and time.monotonic() < deadline:
        groups = infeasible_groups()
        for group in groups:
            remove_group(group)
        quiet = 0 if groups else quiet + 1
        time.sleep(0.5)
