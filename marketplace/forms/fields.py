"""Form fields the market pages share: times are UTC, at minute resolution."""

from datetime import UTC, datetime

from django import forms

DATETIME_INPUT = forms.DateTimeInput(attrs={"type": "datetime-local", "step": 60}, format="%Y-%m-%dT%H:%M")


class UTCDateTimeField(forms.DateTimeField):
    """A datetime-local input read as UTC (the pages say so)."""

    widget = DATETIME_INPUT

    def __init__(self, **kwargs):
        kwargs.setdefault("input_formats", ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"])
        super().__init__(**kwargs)

    def to_python(self, value):
        result = super().to_python(value)
        if result is not None and result.tzinfo is None:
            result = result.replace(tzinfo=UTC)
        return result.astimezone(UTC) if result else result


def utc_now_minute() -> datetime:
    """Now in UTC, to the minute: the resolution of booking times."""
    return datetime.now(UTC).replace(second=0, microsecond=0)
