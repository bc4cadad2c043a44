"""Fault points: every place where a billing step talks to Postgres, numbered in order.

A step (a landing, a metering, a posting) is a sequence of SQL statements, COPYs and commits.
``FaultPoints`` wraps psycopg's cursor, COPY and transaction methods in this process so that
each of them is a numbered point: before each statement, once a COPY has sent its first row
(inside the COPY, the "inside a page" point) and before each commit. Counting a fault-free run
of a step gives its points; a faulted run of the same step from the same state reaches the
same points in the same order, and the fault fires at the chosen one. Nothing in the project
knows about this: it is the test process's own instrumentation.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg


def kill_self() -> None:
    """SIGKILL this process: no cleanup, no rollback sent, exactly as the kernel's OOM killer."""
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class FaultPoints:
    """Counts points; at point ``fire_at`` (1-based) calls ``action`` once, then goes on."""

    fire_at: int | None = None
    action: Callable[[], None] = kill_self
    reached: int = 0
    labels: list[str] = field(default_factory=list)
    fired: str | None = None

    def point(self, label: str) -> None:
        self.reached += 1
        self.labels.append(label)
        if self.reached == self.fire_at:
            self.fired = f"{self.reached}: {label}"
            self.action()

    @contextmanager
    def installed(self) -> Iterator[FaultPoints]:
        """Instrument psycopg in this process for the duration of the block."""
        originals = (psycopg.Cursor.execute, psycopg.Cursor.executemany, psycopg.Cursor.copy,
                     psycopg.Copy.write_row, psycopg.Transaction.__exit__)
        execute, executemany, copy, write_row, transaction_exit = originals
        points = self

        def counted_execute(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            points.point("execute " + _first_words(query))
            return execute(cur, query, *args, **kwargs)

        def counted_executemany(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            points.point("executemany " + _first_words(query))
            return executemany(cur, query, *args, **kwargs)

        rows_sent: dict[int, int] = {}  # id of an open Copy -> rows written to it

        @contextmanager
        def counted_copy(cur: Any, statement: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            points.point("copy " + _first_words(statement))
            with copy(cur, statement, *args, **kwargs) as c:
                rows_sent[id(c)] = 0
                try:
                    yield c
                finally:
                    rows_sent.pop(id(c), None)

        def counted_write_row(c: Any, row: Any) -> None:
            write_row(c, row)
            rows_sent[id(c)] = rows_sent.get(id(c), 0) + 1
            if rows_sent[id(c)] == 1:
                points.point("inside a COPY, after its first row")

        def counted_exit(tx: Any, exc_type: Any, *args: Any) -> Any:
            if exc_type is None:
                points.point("commit")
            return transaction_exit(tx, exc_type, *args)

        psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
        psycopg.Cursor.executemany = counted_executemany  # type: ignore[method-assign]
        psycopg.Cursor.copy = counted_copy  # type: ignore[method-assign]
        psycopg.Copy.write_row = counted_write_row  # type: ignore[method-assign]
        psycopg.Transaction.__exit__ = counted_exit  # type: ignore[method-assign]
        try:
            yield self
        finally:
            (psycopg.Cursor.execute, psycopg.Cursor.executemany, psycopg.Cursor.copy,
             psycopg.Copy.write_row, psycopg.Transaction.__exit__) = originals


def _first_words(query: Any) -> str:
    text = query.as_string(None) if hasattr(query, "as_string") else str(query)
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return " ".join(" ".join(lines).split()[:4])[:60]
