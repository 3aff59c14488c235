"""The scheduler's row locks, and the only place it takes them.

Each function returns rows locked with ``select_for_update()``; call it inside
``transaction.atomic()``. The order is the global one of ``core/locks.py``:
scheduler rows (``Job``, then ``SimJob``) come before financing's and
marketplace's, by primary key within a model. So a service may lock a job and
then call the marketplace's booking services (which lock the booking and its
servers), never the other way round. Marketplace rows (a job's booking when
it is submitted) are locked through ``marketplace.lock_objects``.
"""

from django.db.models import QuerySet

from scheduler.models import Cluster, Job, SimJob


def job_lock(job_id: int) -> Job:
    """The job, locked with its booking: ``select_related`` joins the booking
    into the ``FOR UPDATE``, Job before Booking as the global order has it."""
    return Job.objects.select_for_update().select_related("booking").get(pk=job_id)


def sim_jobs_lock(*, cluster: Cluster, node: str) -> QuerySet[SimJob]:
    """The simulated cluster's Jobs on ``node`` whose end is not known yet, locked by primary key."""
    return (
        SimJob.objects.select_for_update()
        .filter(cluster=cluster, node=node, interrupted_at__isnull=True)
        .order_by("pk")
    )
