"""The project's JSON parser for DRF (``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]``).

Kept apart from ``core.api``: DRF imports the parser classes while it builds
``APIView``, so this module must not import ``rest_framework.views``.
"""

import io
import re

from rest_framework import exceptions, parsers

# No request body of ours nests deeper than a handful of levels. The web3
# stack raises the recursion limit to 100,000 (``py_ecc``), so the C JSON
# decoder would recurse until the thread's stack overflows (SIGSEGV) on
# ``[[[[…``: the depth is checked before decoding.
JSON_MAX_DEPTH = 64
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_OPENERS = frozenset(b"[{")


def json_depth_exceeds(body: bytes, limit: int = JSON_MAX_DEPTH) -> bool:
    """True when brackets outside strings nest deeper than ``limit``.

    Stops at the first level past the limit, so a hostile body costs
    ``limit`` steps; a malformed body is left for the decoder to reject.
    """
    depth = 0
    for match in _JSON_TOKENS.finditer(body):
        first = match.group()[0]
        if first in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif first != 0x22:  # a closing bracket; strings (0x22 is '"') are skipped
            depth -= 1
    return False


class BoundedJSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing (HTTP 400) bodies nested deeper than ``JSON_MAX_DEPTH``."""

    def parse(self, stream, media_type=None, parser_context=None):
        body = stream.read() if stream is not None else b""
        if json_depth_exceeds(body):
            raise exceptions.ParseError(f"JSON parse error - nested deeper than {JSON_MAX_DEPTH} levels.")
        return super().parse(io.BytesIO(body), media_type, parser_context)
