"""How deep a JSON text nests, read from the bytes before anything parses them.

For work done on requests that have not been authenticated yet: the bytes are scanned
with C-speed bytes operations and one pass of `itertools.accumulate` over the brackets,
so the cost is linear and a fraction of what parsing the same bytes would cost, and a
refusal costs no parsing at all.
"""

from __future__ import annotations

from array import array
from itertools import accumulate

# Openers to 1 and closers to -1 (255 read as a signed byte); everything else is dropped.
_STEP = bytearray(256)
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = 255
_STEPS = bytes(_STEP)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_exceeds(text: bytes, limit: int) -> bool:
    """True when `text`, read as JSON, nests arrays and objects deeper than `limit`.

    Exact for valid JSON; for anything else it still bounds what a parser could build,
    which is all the caller needs. Brackets inside strings do not count: escaped
    backslashes and quotes are removed first (JSON escapes are two characters and pair
    up from the left, as `bytes.replace` does), and then every other quote-delimited
    piece is string content.
    """
    unescaped = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    steps = outside_strings.translate(_STEPS, _NOT_BRACKETS)
    if steps.count(1) <= limit:
        return False  # not enough openers to get that deep
    return max(accumulate(array("b", steps))) > limit
