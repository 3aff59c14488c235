"""Marketplace: GPU inventory, listings, search, bookings, payments, settlements.

It owns what renters and owners see of the hardware: the GPU model catalogue,
regions, servers and their GPUs (each GPU with a platform-unique serial).
Business logic sits in ``services`` (writes) and ``selectors`` (reads); views
and API views stay thin. It imports ``accounts`` only; ``financing`` and
``scheduler`` build on it and pull from it, never the other way round.
"""
