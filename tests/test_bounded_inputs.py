"""Every integer a user can send is bounded before it reaches the database.

An unbounded ``IntegerField`` lets ``10**19`` through validation and PostgreSQL answers
"bigint out of range": a 500 where the user should have had a field error. Rather than
probe each form and serializer, this walks all of them: every writable integer field of a
form or a DRF serializer in the project's apps has a ``max_value`` (output-only serializer
fields are ``read_only``). Decimal fields are bounded by ``max_digits``.
"""

import importlib
import inspect
import pkgutil

from django import forms
from rest_framework import serializers

APPS = ["core", "accounts", "marketplace", "financing", "scheduler"]


def _classes():
    for app in APPS:
        package = importlib.import_module(app)
        for info in pkgutil.walk_packages(package.__path__, f"{app}."):
            if ".migrations" in info.name or ".management" in info.name:
                continue
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if inspect.isclass(obj) and obj.__module__ == module.__name__:
                    yield f"{module.__name__}.{name}", obj


def test_every_writable_integer_field_has_an_upper_bound():
    unbounded = []
    for name, cls in _classes():
        if issubclass(cls, forms.BaseForm) and hasattr(cls, "base_fields"):
            for field_name, field in cls.base_fields.items():
                if type(field) is forms.IntegerField and field.max_value is None:
                    unbounded.append(f"{name}.{field_name}")
        elif issubclass(cls, serializers.Serializer) and not issubclass(cls, serializers.ListSerializer):
            for field_name, field in cls().fields.items():
                if isinstance(field, serializers.IntegerField) and not field.read_only and field.max_value is None:
                    unbounded.append(f"{name}.{field_name}")
    assert unbounded == []
