"""Files the pages offer for download."""

import csv

from django.http import HttpResponse


def csv_download(filename: str):
    """An ``attachment`` response for ``filename`` and a CSV writer into it: ``response, writer = …``."""
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response, csv.writer(response)
