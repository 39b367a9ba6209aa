"""Capping a job's output to the stored size, keeping its head and its tail.

Kriten tasks print their `^JSON` block, and most errors, at the end of the output, while
the head says what the task set out to do; the middle is usually the least useful part.
So a capped output keeps the first half and the last half of the byte budget with a note
in between, e.g. `\\n[kriten: output truncated, 1234 bytes omitted]\\n`. Sizes are UTF-8
bytes (what the database and HTTP carry) and a cut never splits a character.
"""

from __future__ import annotations


def truncation_note(omitted: int) -> str:
    return f"\n[kriten: output truncated, {omitted} bytes omitted]\n"


def _is_continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


def _trim_end(data: bytes) -> bytes:
    """`data` without an incomplete UTF-8 sequence at its end."""
    # Look back at most 3 bytes for the lead byte of the last sequence.
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if _is_continuation(byte):
            continue
        if byte < 0x80:
            return data
        needed = 2 if byte >= 0xC0 and byte < 0xE0 else 3 if byte < 0xF0 else 4
        return data if back >= needed else data[:-back]
    return data


def _trim_start(data: bytes) -> bytes:
    """`data` without the continuation bytes of a character cut at its start."""
    start = 0
    while start < min(3, len(data)) and _is_continuation(data[start]):
        start += 1
    return data[start:]


def cap_ends(head: str, tail: str, *, middle_omitted: int, cap_bytes: int) -> str:
    """Cap an output of which only `head` and `tail` are known, with `middle_omitted`
    bytes between them already left out (how a large file is read without loading it).

    The result is at most `cap_bytes` UTF-8 bytes. When even the note does not fit, it is
    the head alone.
    """
    head_b = head.encode("utf-8", "replace")
    tail_b = tail.encode("utf-8", "replace")
    total = len(head_b) + middle_omitted + len(tail_b)
    if middle_omitted == 0 and total <= cap_bytes:
        return (head_b + tail_b).decode("utf-8", "replace")
    # The note for `total` omitted bytes is the longest it can be, so the real one fits.
    budget = cap_bytes - len(truncation_note(total).encode())
    if budget < 0:
        return _trim_end((head_b + tail_b)[: max(cap_bytes, 0)]).decode("utf-8", "replace")
    # Half each; a short side lends what it does not need to the other.
    head_budget = min(budget // 2, len(head_b))
    tail_budget = min(budget - head_budget, len(tail_b))
    head_budget = min(budget - tail_budget, len(head_b))
    kept_head = _trim_end(head_b[:head_budget])
    kept_tail = _trim_start(tail_b[len(tail_b) - tail_budget :]) if tail_budget else b""
    omitted = total - len(kept_head) - len(kept_tail)
    note = truncation_note(omitted).encode()
    return (kept_head + note + kept_tail).decode("utf-8", "replace")


def cap_output(text: str, cap_bytes: int) -> str:
    """`text` if it fits in `cap_bytes` UTF-8 bytes, else its head and tail with a note."""
    data = text.encode("utf-8", "replace")
    if len(data) <= cap_bytes:
        return text
    first = _trim_end(data[: len(data) // 2])
    return cap_ends(
        first.decode("utf-8"),
        data[len(first) :].decode("utf-8"),
        middle_omitted=0,
        cap_bytes=cap_bytes,
    )
