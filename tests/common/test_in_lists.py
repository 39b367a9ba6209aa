"""IN-lists padded to a power of two: the same values, few distinct statement texts."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import asyncpg
from sqlmodel import col, select

from kriten_common.db.in_lists import padded
from kriten_common.db.models import Job


def test_the_values_are_kept_and_the_length_is_a_power_of_two() -> None:
    assert padded([]) == []
    assert padded(["b", "a", "b"]) == ["a", "b"]
    assert padded(["c", "a", "b"]) == ["a", "b", "c", "c"]
    assert len(padded(str(n) for n in range(33))) == 64


def test_batches_of_every_size_up_to_64_are_seven_statements() -> None:
    texts = set()
    for size in range(1, 65):
        ids = padded(f"job-{n}" for n in range(size))
        statement = select(Job.id).where(col(Job.id).in_(ids))
        compiled = statement.compile(
            dialect=asyncpg.dialect(),
            compile_kwargs={"render_postcompile": True},
        )
        texts.add(str(compiled))
    assert len(texts) == 7  # 1, 2, 4, ..., 64
