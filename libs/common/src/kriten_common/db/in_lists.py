"""Lists of values for `IN (...)`, in few distinct lengths.

SQLAlchemy renders `col.in_(values)` as one bound parameter per value, so every list
length is a different SQL text, and asyncpg prepares and caches each text per pooled
connection (up to 100 per connection). A collector writing batches of every size from 1
to its prefetch would fill those caches with one statement per size on each of its
connections: memory that grows with the traffic seen, not with the work in hand.
Padding each list to the next power of two (repeating a value changes nothing in an
`IN`) keeps it to a handful of texts.
"""

from __future__ import annotations

from collections.abc import Iterable


def padded(values: Iterable[str]) -> list[str]:
    """`values` sorted and deduplicated, the last repeated up to a power-of-two length
    (an empty list stays empty)."""
    distinct = sorted(set(values))
    if not distinct:
        return distinct
    length = 1 << (len(distinct) - 1).bit_length()
    return distinct + [distinct[-1]] * (length - len(distinct))
