"""Named SQL queries from ``sql/queries/*.sql``.

Each query sits under a header line ``-- name: <query_name>`` followed by a one-line
description comment; parameters are psycopg ``%(name)s`` placeholders. Queries are looked up by
name, so the SQL stays in reviewable ``.sql`` files and Python never builds SQL from strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, LiteralString, cast

import psycopg

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_HEADER = re.compile(r"^-- name: (?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted((SQL_DIR / "queries").glob("*.sql")):
        queries_in(path, found)
    return found


def queries_in(path: Path, found: dict[str, str] | None = None) -> dict[str, LiteralString]:
    """The named queries of one ``.sql`` file (added to ``found``, refusing a second
    definition of a name)."""
    found = {} if found is None else found
    text = path.read_text()
    headers = list(_HEADER.finditer(text))
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        body = text[header.end(): following.start() if following else len(text)].strip()
        name = header["name"]
        if name in found:
            raise ValueError(f"{path.name}: query {name!r} is defined twice")
        found[name] = body
    return cast(dict[str, LiteralString], found)


def copy_rows(cur: psycopg.Cursor[Any], name: str, rows: Iterable[Sequence[Any]], *,
              found: dict[str, LiteralString] | None = None) -> None:
    """COPY ``rows`` through the named ``COPY ... FROM STDIN`` query (of the project's files,
    or of ``found``, queries read with ``queries_in``)."""
    with cur.copy(found[name] if found is not None else query(name)) as copy:
        for row in rows:
            copy.write_row(row)


def query(name: str) -> LiteralString:
    """The SQL of one named query; a KeyError lists the names that do exist.

    The text comes from the repository's own files, never from input, hence LiteralString.
    """
    try:
        return cast(LiteralString, queries()[name])
    except KeyError:
        raise KeyError(f"no SQL query named {name!r} in {SQL_DIR / 'queries'}; "
                       f"known: {', '.join(sorted(queries()))}") from None
