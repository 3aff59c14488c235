"""The one way an HTML form feeds a service.

Pages validate input with a form, call one service with the cleaned data, and
show the service's ``ValidationError`` on the same form, so a page and the API
report the same messages. ``form_submit`` hands back what the service
returned::

    if done := form_submit(form, lambda d: booking_create(**d)):
        return redirect(done.result)
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.core.exceptions import ValidationError


@dataclass(frozen=True)
class Submission:
    """The outcome of a form submission: true when the form was valid and the service succeeded."""

    ok: bool
    result: Any = None

    def __bool__(self) -> bool:
        return self.ok


def form_errors_from(form: forms.Form, exc: ValidationError) -> None:
    """Attach a service's ValidationError to the form that fed it (kept as
    ``form.service_error`` so a view can tell a conflict from bad input)."""
    form.service_error = exc
    if hasattr(exc, "error_dict"):
        for field, errors in exc.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc)


def form_submit(form: forms.Form, action: Callable[[dict], Any]) -> Submission:
    """Validate ``form`` and run ``action(cleaned_data)``; the submission carries its result."""
    if not form.is_valid():
        return Submission(ok=False)
    try:
        result = action(form.cleaned_data)
    except ValidationError as exc:
        form_errors_from(form, exc)
        return Submission(ok=False)
    return Submission(ok=True, result=result)
