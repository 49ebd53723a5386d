"""What a killed sweep driver can leave in a Ray that outlives it (a cluster, or a Ray another process
started): placement groups that hold CPUs and GPUs for nobody.

Ray removes a job's placement groups when the job ends, but not always in time: a trial's Ray Train
controller that is restarting its workers as the driver is SIGKILLed can place a new group just after the
GCS has marked the job finished, and that group is never removed (seen in tests/test_scale_out.py: the
resumed sweep's trial waited for CPUs the dead job held, Train timing out every 60 s without end). So the
sweep records each of its drivers' jobs, and a resumed sweep removes the groups of those that have ended.
A job id alone is not an identity (a restarted Ray counts job ids from 1 again), hence its start time.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def this_driver() -> dict | None:
    """This driver's Ray job, as the sweep's state records it; None where Ray's State API cannot say."""
    import ray
    from ray.util.state import list_jobs

    job = ray.get_runtime_context().get_job_id()
    try:
        (state,) = list_jobs(filters=[("job_id", "=", job)], detail=True)
    except Exception as err:  # noqa: BLE001 - without it a resume cannot tidy up, but the sweep can run
        log.warning("cannot read this driver's Ray job (%s); a resumed sweep will not remove what it leaves", err)
        return None
    return {"job_id": job, "start_time": state.start_time}


def remove_groups_of_ended(drivers: list[dict]) -> list[str]:
    """Remove the placement groups still held by those of `drivers` (this_driver records) whose jobs have
    ended; the ids of the groups removed."""
    from ray.util.placement_group import placement_group_table
    from ray.util.state import list_jobs

    if not drivers:
        return []
    try:  # one request per driver: the State API filters on one value at a time
        jobs = {(j.job_id, j.start_time): j.status for d in drivers
                for j in list_jobs(filters=[("job_id", "=", d["job_id"])], detail=True)}
    except Exception as err:  # noqa: BLE001
        log.warning("cannot read Ray's jobs (%s); not removing what earlier drivers of this sweep left", err)
        return []
    ended = [d["job_id"] for d in drivers if jobs.get((d["job_id"], d["start_time"]), "RUNNING") != "RUNNING"]
    # a placement group id ends with the id of the job that created it
    removed = [group for group, info in placement_group_table().items()
               if info["state"] != "REMOVED" and any(group.endswith(job) for job in ended)]
    for group in removed:
        remove_group(group)
    return removed


def remove_group(group: str) -> None:
    """Remove a placement group by its hex id."""
    from ray import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(group))))
