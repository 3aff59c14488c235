"""Forms of the search and listing pages: search filters, listing terms, availability."""

from datetime import time
from decimal import Decimal

from django import forms
from django.core.cache import cache

from core.api import INTEGER_MAX
from marketplace.forms.fields import UTCDateTimeField
from marketplace.models import MAX_CPU_MILLI_PER_GPU, MAX_MEMORY_MIB_PER_GPU, GpuModel, Region
from marketplace.selectors.search import SORTS, SearchQuery


def _catalogue() -> dict:
    """GPU models and regions for the search form, cached per process for a
    minute: they change rarely (operators edit them), searches are many."""

    def build():
        return {
            "models": [(m.pk, m.name) for m in GpuModel.objects.order_by("undisclosed", "-vram_gb", "name")],
            "regions": {r.code: (r.pk, str(r)) for r in Region.objects.order_by("code")},
        }

    return cache.get_or_set("marketplace:search-catalogue", build, timeout=60)


class SearchForm(forms.Form):
    gpu_model = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="GPU model")
    gpu_count = forms.IntegerField(min_value=1, max_value=16, required=False, initial=1, label="GPUs on one server")
    min_vram_gb = forms.IntegerField(min_value=1, max_value=10_000, required=False, label="Min VRAM (GB)")
    region = forms.ChoiceField(required=False)
    max_price = forms.DecimalField(min_value=Decimal("0.01"), decimal_places=2, required=False, label="Max $/GPU-h")
    min_reliability = forms.DecimalField(
        min_value=0, max_value=1, decimal_places=4, required=False, label="Min reliability (0–1)"
    )
    start = UTCDateTimeField(required=False, label="Free from (UTC)")
    end = UTCDateTimeField(required=False, label="until (UTC)")
    sort = forms.ChoiceField(
        choices=[("price", "Price ↑"), ("-price", "Price ↓"), ("reliability", "Reliability"), ("vram", "VRAM")],
        required=False,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        catalogue = _catalogue()
        self._regions = catalogue["regions"]
        self.fields["gpu_model"].choices = [("", "Any model"), *catalogue["models"]]
        self.fields["region"].choices = [("", "Any region")] + [
            (code, name) for code, (_, name) in self._regions.items()
        ]

    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if bool(start) != bool(end):
            self.add_error("end" if start else "start", "Give both ends of the window, or neither.")
        elif start and end and end <= start:
            self.add_error("end", "The end must be after the start.")
        return data

    def to_query(self) -> SearchQuery:
        d = self.cleaned_data
        return SearchQuery(
            gpu_models=(d["gpu_model"],) if d.get("gpu_model") else (),
            gpu_count=d.get("gpu_count") or 1,
            min_vram_gb=d.get("min_vram_gb"),
            region_id=self._regions[d["region"]][0] if d.get("region") else None,
            max_price=d.get("max_price"),
            min_reliability=d.get("min_reliability"),
            start=d.get("start"),
            end=d.get("end"),
            sort=d.get("sort") if d.get("sort") in SORTS else "price",
        )


class ListingTermsForm(forms.Form):
    price_per_gpu_hour = forms.DecimalField(
        min_value=Decimal("0.01"), decimal_places=2, label="Price per GPU-hour (USD)"
    )
    min_hours = forms.IntegerField(
        min_value=1, max_value=INTEGER_MAX // 60, initial=1, label="Shortest booking (hours)"
    )
    max_hours = forms.IntegerField(
        min_value=1, max_value=INTEGER_MAX // 60, initial=720, label="Longest booking (hours)"
    )
    # What a booking takes per GPU; empty = the server's CPU and RAM split evenly over its GPUs.
    cpu_milli_per_gpu = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_CPU_MILLI_PER_GPU,
        label="CPU per GPU (millicores)",
        help_text="1000 millicores = 1 core. Leave empty for an even split of the server's CPU.",
    )
    memory_mib_per_gpu = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_MEMORY_MIB_PER_GPU,
        label="RAM per GPU (MiB)",
        help_text="1024 MiB = 1 GiB. Leave empty for an even split of the server's RAM.",
    )

    def clean(self):
        data = super().clean()
        if data.get("min_hours") and data.get("max_hours") and data["max_hours"] < data["min_hours"]:
            self.add_error("max_hours", "The longest booking cannot be shorter than the shortest.")
        return data

    def terms(self) -> dict:
        d = self.cleaned_data
        return {
            "price_per_gpu_hour": d["price_per_gpu_hour"],
            "min_duration_minutes": d["min_hours"] * 60,
            "max_duration_minutes": d["max_hours"] * 60,
            "cpu_milli_per_gpu": d.get("cpu_milli_per_gpu"),
            "memory_mib_per_gpu": d.get("memory_mib_per_gpu"),
        }


class ListingCreateForm(ListingTermsForm):
    server = forms.ModelChoiceField(queryset=None, label="Server")

    def __init__(self, *args, servers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["server"].queryset = servers
        self.order_fields(["server"])


class WindowForm(forms.Form):
    start = UTCDateTimeField(label="From (UTC)")
    end = UTCDateTimeField(label="Until (UTC)")


WEEKDAYS = [
    (0, "Monday"),
    (1, "Tuesday"),
    (2, "Wednesday"),
    (3, "Thursday"),
    (4, "Friday"),
    (5, "Saturday"),
    (6, "Sunday"),
]


class WeeklyForm(forms.Form):
    weekday = forms.TypedChoiceField(choices=WEEKDAYS, coerce=int)
    start_time = forms.TimeField(widget=forms.TimeInput(attrs={"type": "time"}), label="From (UTC)")
    end_time = forms.TimeField(
        widget=forms.TimeInput(attrs={"type": "time"}),
        label="Until (UTC)",
        help_text="00:00 means midnight, end of day.",
    )

    def minutes(self) -> tuple[int, int]:
        d = self.cleaned_data
        start = d["start_time"].hour * 60 + d["start_time"].minute
        end = d["end_time"].hour * 60 + d["end_time"].minute
        return start, (1440 if d["end_time"] == time(0) else end)
