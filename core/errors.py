"""Errors that services raise and both the pages and the API understand."""

from django.core.exceptions import ValidationError


class ConflictError(ValidationError):
    """The request was valid but lost to the current state (e.g. the GPUs were
    just booked by someone else). Pages show it as a form error; the API
    answers 409."""
