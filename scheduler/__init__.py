"""Scheduler: renters' jobs on the owners' Kubernetes clusters.

It owns clusters (kubeconfigs encrypted at rest), node sync, placement (a
pure module; ``placement.choose`` per request), the job lifecycle (a state
table in ``services/jobs.py``), metering and failover. It imports
``marketplace`` (bookings, search, usage reporting), ``accounts`` and
``core``, and ``financing`` only through ``financing.selectors``, for
collateral-aware placement (read in ``scheduler.selectors``; an
import-linter contract in ``pyproject.toml`` holds it). Every Kubernetes
call sits in ``scheduler/backends``; every row lock it takes, in
``scheduler/lock_objects.py``, in the order of ``core/locks.py``.
"""
