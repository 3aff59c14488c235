"""The marketplace's REST API (DRF), one module per concern, wired in ``config/urls.py``:

- ``inventory``: the GPU model catalogue and regions (public), an owner's
  servers and GPUs, CSV import;
- ``listings``: search, public listings and their calendar, an owner's
  listings, terms and availability rules;
- ``bookings``: a renter's bookings (quote, book, pay, cancel, invoice), usage
  reported by the scheduler, an owner's earnings.

Each view validates input with a serializer, calls one service (or selector)
and renders the result: the same services the pages call.
"""
