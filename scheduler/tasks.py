"""Periodic scheduler work (Celery beat; ``run_scheduler`` in the embedded mode)."""

from celery import shared_task

from scheduler.services import clusters, jobs


@shared_task
def jobs_tick() -> dict[str, int]:
    return jobs.jobs_tick()


@shared_task
def clusters_sync() -> dict[str, int]:
    return clusters.clusters_sync()
