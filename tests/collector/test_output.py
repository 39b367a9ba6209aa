"""Output capping: head and tail kept within a byte budget, never splitting a character."""

from __future__ import annotations

import re

import pytest

from kriten_collector.output import cap_ends, cap_output, truncation_note

NOTE_RE = re.compile(r"\n\[kriten: output truncated, (\d+) bytes omitted\]\n")


def size(text: str) -> int:
    return len(text.encode())


def test_output_within_the_cap_is_unchanged() -> None:
    text = "héllo ✓\n" * 10

    assert cap_output(text, size(text)) == text
    assert cap_output("", 0) == ""


def test_long_output_keeps_head_and_tail_with_a_note() -> None:
    text = "HEAD\n" + "x" * 10_000 + "\n^JSON\n{}\n^JSON\n"

    capped = cap_output(text, 200)

    assert size(capped) <= 200
    match = NOTE_RE.search(capped)
    assert match is not None
    head, tail = capped[: match.start()], capped[match.end() :]
    assert text.startswith(head)
    assert text.endswith(tail)
    assert head.startswith("HEAD\n")
    assert tail.endswith("\n^JSON\n{}\n^JSON\n")
    # The note counts exactly what is missing.
    assert int(match.group(1)) == size(text) - size(head) - size(tail)
    # Both halves get a fair share of the budget.
    assert abs(size(head) - size(tail)) <= 1


@pytest.mark.parametrize("char", ["é", "✓", "😀"])
@pytest.mark.parametrize("cap", range(60, 90))
def test_a_cut_never_splits_a_multibyte_character(char: str, cap: int) -> None:
    text = char * 100

    capped = cap_output(text, cap)

    assert size(capped) <= cap
    assert "\ufffd" not in capped
    match = NOTE_RE.search(capped)
    assert match is not None
    head, tail = capped[: match.start()], capped[match.end() :]
    assert set(head) <= {char}
    assert set(tail) <= {char}
    assert int(match.group(1)) == size(text) - size(head) - size(tail)


def test_a_cap_smaller_than_the_note_keeps_the_head_only() -> None:
    capped = cap_output("é" * 100, 11)

    assert capped == "é" * 5


def test_cap_ends_counts_the_bytes_left_out_in_between() -> None:
    capped = cap_ends("a" * 50, "z" * 50, middle_omitted=1000, cap_bytes=120)

    assert size(capped) <= 120
    match = NOTE_RE.search(capped)
    assert match is not None
    head, tail = capped[: match.start()], capped[match.end() :]
    assert set(head) == {"a"}
    assert set(tail) == {"z"}
    assert int(match.group(1)) == 1100 - size(head) - size(tail)


def test_cap_ends_with_short_sides_lends_the_budget() -> None:
    capped = cap_ends("ab", "z" * 500, middle_omitted=10, cap_bytes=120)

    assert capped.startswith("ab" + truncation_note(0)[:10])
    assert size(capped) <= 120
    match = NOTE_RE.search(capped)
    assert match is not None
    assert len(capped[match.end() :]) > 60


def test_invalid_surrogates_do_not_raise() -> None:
    capped = cap_output("\udcff" * 1000, 100)

    assert size(capped) <= 100
