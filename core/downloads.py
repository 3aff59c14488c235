"""Files the pages offer for download.

Every CSV goes through ``csv_download``: its writer neutralises spreadsheet
formulas (OWASP "CSV injection"). A text cell that a spreadsheet would read
as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
return) is written with a leading single quote, so a company named
``=HYPERLINK(…)`` reaches a lender's spreadsheet as text. Numbers (``int``,
``Decimal``, ``float``) are written as they are: a negative amount is not a
formula.
"""

import csv
from decimal import Decimal

from django.http import HttpResponse

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """``value`` as a cell a spreadsheet shows as text, never evaluates."""
    if isinstance(value, int | float | Decimal) or value is None:
        return value
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


class SafeCsvWriter:
    """A ``csv.writer`` whose every cell passes through ``csv_cell``."""

    def __init__(self, stream):
        self._writer = csv.writer(stream)

    def writerow(self, row):
        return self._writer.writerow([csv_cell(value) for value in row])

    def writerows(self, rows):
        for row in rows:
            self.writerow(row)


def csv_download(filename: str):
    """An ``attachment`` response for ``filename`` and a formula-safe CSV writer into it: ``response, writer = …``."""
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response, SafeCsvWriter(response)
