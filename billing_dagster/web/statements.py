"""Statements to download from the UI, behind the same login as the Dagster UI (readers too).

    GET /statements/<YYYY-MM>/<customer>.csv             usage by org, space and kind
    GET /statements/<YYYY-MM>/<customer>-agreements.csv  each agreement, overage and total

Each file is built from Postgres when it is asked for (ledger/statements.py, the same code as the
``monthly_statements`` asset), so it needs no shared disk and always says what the database
says: for a posted month, the statement; for the month under way, its usage so far. The
``monthly_statements`` and ``month_to_date`` assets link to these files.
"""

from __future__ import annotations

import re
from datetime import date

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from billing_dagster.ledger.statements import DOWNLOADS as PREFIX
from billing_dagster.ledger.statements import Statement, build_statements
from billing_dagster.partitions import monthly_partitions, utc_window
from billing_dagster.resources import BillingDatabase

MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
FILE = re.compile(r"(?P<customer>[A-Za-z0-9_.-]+?)(?P<agreements>-agreements)?\.csv")


def statement_of(database: BillingDatabase, month: str, customer: str) -> Statement | None:
    window = monthly_partitions.time_window_for_partition_key(month)
    start, end = utc_window(window)
    with database.connect() as conn:
        statements = build_statements(conn, date.fromisoformat(f"{month}-01"), start, end)
    return next((s for s in statements if s.customer_id == customer), None)


def statements_app(database: BillingDatabase) -> Starlette:
    async def download(request: Request) -> Response:
        month, name = request.path_params["month"], request.path_params["file"]
        wanted = FILE.fullmatch(name)
        if not MONTH.fullmatch(month) or wanted is None:
            return PlainTextResponse(
                f"no such statement file {request.url.path!r}: ask for "
                f"{PREFIX}<YYYY-MM>/<customer>.csv or <customer>-agreements.csv", 404)
        statement = await run_in_threadpool(statement_of, database, month,
                                            wanted["customer"])
        if statement is None:
            return PlainTextResponse(
                f"customer {wanted['customer']!r} has no statement for {month}: no usage, "
                "posting, ledger activity or agreement of theirs in that month", 404)
        text = statement.agreements_csv() if wanted["agreements"] else statement.usage_csv()
        return Response(text, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{month}-{name}"',
            "Cache-Control": "no-store"})

    return Starlette(routes=[Route(PREFIX + "{month}/{file}", download, methods=["GET"])])


class WithStatements:
    """``app`` (the Dagster UI) with the statement files beside it under ``/statements/``."""

    def __init__(self, app: ASGIApp, database: BillingDatabase | None = None) -> None:
        self.app = app
        self.statements = statements_app(database or BillingDatabase())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await self.statements(scope, receive, send)
        else:
            await self.app(scope, receive, send)
