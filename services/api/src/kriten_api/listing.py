"""Lists: Kriten's `?limit=`/`?offset=` and `Content-Range`, paged in SQL.

Every list answer is a JSON array (`[]` when empty, never null) with `Content-Range:
<count>`, the number of items before paging, as Kriten's clients read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from aiohttp import web
from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select, SelectOfScalar

from kriten_common import errors

Row = TypeVar("Row")

# Databases refuse integers past 64 bits (500); no table comes near this many rows, so a
# larger limit or offset is the same as this one.
MAX_COUNT = 2**62


def count(request: web.Request, name: str) -> int | None:
    """A non-negative integer query parameter, or None when absent."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    # isdigit() alone takes other scripts' digits ('²', '٣'), which int() refuses.
    if not (raw.isascii() and raw.isdigit()):
        raise errors.InvalidInput(f"{name} must be a non-negative integer")
    return min(int(raw), MAX_COUNT)


@dataclass(frozen=True)
class Window:
    """Which items of a list to answer: `limit` (None: all) from `offset`."""

    limit: int | None
    offset: int = 0

    @classmethod
    def of(cls, request: web.Request) -> Window:
        """`?limit=` and `?offset=`, validated."""
        return cls(count(request, "limit"), count(request, "offset") or 0)


@overload
async def paginate(
    session: AsyncSession, query: SelectOfScalar[Row], window: Window
) -> tuple[Sequence[Row], int]: ...


@overload
async def paginate(
    session: AsyncSession, query: Select[*tuple[Any, ...]], window: Window
) -> tuple[Sequence[Any], int]: ...


async def paginate(
    session: AsyncSession,
    query: Select[*tuple[Any, ...]] | SelectOfScalar[Any],
    window: Window,
) -> tuple[Sequence[Any], int]:
    """The window's rows of `query` (which must be ordered, so pages are stable) and the
    count of all its rows, in two statements: only a page is ever loaded."""
    counted = select(func.count()).select_from(query.order_by(None).subquery())
    total = (await session.exec(counted)).one()
    rows = (await session.exec(query.offset(window.offset).limit(window.limit))).all()
    return rows, total


def list_response(items: list[Any], total: int) -> web.Response:
    return web.json_response(items, headers={"Content-Range": str(total)})
