"""The fault scenarios: what goes wrong, where (chosen from the seed), and how the operator
recovers. Each is a ``Play`` (see campaign.py) run in a fresh world of its own; ``SCENARIOS``
is the campaign's list, in the order of its table.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.conninfo import conninfo_to_dict

from billing_dagster.catalog import CatalogError, load_catalog, read_catalog
from billing_dagster.catalog.reading import EXAMPLE_CATALOG
from billing_dagster.jobs import hours_to_meter
from billing_dagster.partitions import hourly_keys_between, hourly_partitions, utc_window
from billing_dagster.settings import sqlalchemy_url
from tests.faults.campaign import (
    HOUR,
    SQL,
    Baseline,
    Play,
    Scenario,
    State,
    Timeline,
    World,
)
from tests.faults.deployment import Deployment
from tests.faults.steps import CLIENT, Step
from tests.support import free_port


def _indices(timeline: Timeline, kind: str) -> list[int]:
    return [i for i, s in enumerate(timeline.steps()) if s.kind == kind]


def killed_in(kind: str, action: str, recovery: str = "rerun", where: str = "") -> Play:
    """A step of ``kind`` dies at a seeded fault point: SIGKILL of its process (``kill``) or
    the database server restarted under it (``pg_restart``). Then the operator re-runs it
    (``rerun``); or, for a landing, nobody does (``next_tick``): no metering follows the
    failed landing, and the next landing that succeeds meters every hour since the previous
    successful one, as ``metering_after_landing_sensor`` does; or, to show that the campaign
    sees what a fault loses, nothing at all happens (``none``). ``where`` narrows the points
    to those whose label starts with it (``inside a COPY``: while a page is being copied in;
    ``commit``: just before a page, or the snapshot, commits)."""

    def play(w: World, baseline: Baseline, rng: random.Random) -> tuple[int, bool | None, str]:
        steps = w.timeline.steps()
        choices = _indices(w.timeline, kind)
        if recovery == "next_tick":  # a later landing must exist to catch up
            choices = [i for i in choices if any(j > i for j in _indices(w.timeline, "land"))]
        target = rng.choice(choices)
        points = [n for n, label in enumerate(baseline.labels[target], start=1)
                  if label.startswith(where)]
        fire_at = rng.choice(points)
        clear: bool | None = None
        detail = ""
        landed: datetime | None = None  # the last landing that succeeded
        metering = "hourly"  # after a failed landing: "held", then "caught up" for an hour
        failed_tick = False  # the target's landing job failed: its AWS reading ends nothing
        for i, step in enumerate(steps):
            w.advance(step)
            if step.kind in ("derive", "price") and metering != "hourly":
                continue  # the sensor meters only after a landing that succeeded
            if i != target:
                w.run(step)
                # landing_job is the tick's CF landing and then its AWS reading: the sensor
                # fires when the job ends, after the AWS reading (metering the hour before it
                # would find AWS's gauges not yet read for it)
                if step.kind == "aws" and failed_tick:
                    failed_tick = False
                elif step.kind == "aws":
                    if metering == "held":
                        detail += "; next landing meters " + _catch_up(w, landed, step)
                    metering = "caught up" if metering == "held" else "hourly"
                    landed = step.now
                continue
            result = w.collect(w.spawn(step, fire_at=fire_at, action=action))
            detail = (f"{step.label()}, point {fire_at} of {baseline.points[target]} "
                      f"({baseline.labels[target][fire_at - 1]})")
            if action == "kill":
                if not result.killed:
                    raise AssertionError(f"the worker was not killed at {detail}: {result}")
            else:
                clear = _names_the_lost_connection(result.error)
                detail += f": {_first_line(result.error)}"
            if recovery == "rerun":
                w.run(step)
            elif recovery == "next_tick":
                metering, failed_tick = "held", step.kind == "land"
        return 1, clear, detail

    return play


def _catch_up(w: World, landed: datetime | None, landing: Step) -> str:
    """What the metering sensor requests after ``landing`` succeeded, run."""
    assert landing.now is not None
    first, last = hours_to_meter(landed, landing.now)
    start = utc_window(hourly_partitions.time_window_for_partition_key(first))[0]
    end = utc_window(hourly_partitions.time_window_for_partition_key(last))[1]
    for kind in ("derive", "price"):
        w.run(Step(kind, start=start, end=end))
    return f"{start:%H:00}-{end:%H:00}"


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _names_the_lost_connection(error: str | None) -> bool:
    if not error:
        return False
    words = ("server closed the connection", "terminating connection", "connection failed",
             "connection refused", "the database system is")
    return any(w in error for w in words)


# A racing pick: for a timeline and a seeded random source, the index of the step to replace
# and the steps to run at once in its place (each in a worker process of its own).
Racing = Callable[[Timeline, random.Random], tuple[int, list[Step]]]


def at_once(pick: Racing) -> Play:
    """Steps started together in separate processes; each must succeed, and together they
    must leave what the one step leaves."""

    def play(w: World, baseline: Baseline, rng: random.Random) -> tuple[int, bool | None, str]:
        target, racing = pick(w.timeline, rng)
        detail = " | ".join(s.label() for s in racing)
        for i, step in enumerate(w.timeline.steps()):
            w.advance(step)
            if i != target:
                w.run(step)
                continue
            processes = [w.spawn(s) for s in racing]
            results = [w.collect(p) for p in processes]
            failed = [r for r in results if r.returncode != 0]
            if failed:
                detail += "; failed: " + "; ".join(_first_line(r.error) for r in failed)
                w.run(step)  # the operator re-runs the one that failed
        return len(racing) - 1, None, detail

    return play


def _hourly(timeline: Timeline, kind: str, rng: random.Random) -> tuple[int, Step]:
    index = rng.choice(_indices(timeline, kind))
    return index, timeline.steps()[index]


def same_step_twice(kind: str) -> Racing:
    def pick(timeline: Timeline, rng: random.Random) -> tuple[int, list[Step]]:
        index, step = _hourly(timeline, kind, rng)
        return index, [step, step]
    return pick


def overlapping(kind: str) -> Racing:
    """The hourly step and a backfill of every hour up to it, at once."""
    def pick(timeline: Timeline, rng: random.Random) -> tuple[int, list[Step]]:
        index, step = _hourly(timeline, kind, rng)
        return index, [step, replace(step, start=timeline.start)]
    return pick


def racing_landing(kind: str) -> Racing:
    """A landing and, at the same time, a re-run of ``kind`` over the hours before it."""
    def pick(timeline: Timeline, rng: random.Random) -> tuple[int, list[Step]]:
        steps = timeline.steps()
        lands = [i for i in _indices(timeline, "land")
                 if (steps[i].now or timeline.start) > timeline.start + HOUR]
        index = rng.choice(lands)
        landing = steps[index]
        assert landing.now is not None
        upto = landing.now.replace(minute=0) - HOUR
        return index, [landing, Step(kind, start=timeline.start, end=upto)]
    return pick


def cf_fault(kind: str, *, count: int = 1, prefix: str = "/v3/", expect: str | None = None,
             **options: Any) -> Play:
    """The simulator answers a seeded request of a landing with a fault (``count`` times in
    a row). The landing either absorbs it (retries) or fails with an error that contains
    ``expect``; a failed landing is re-run by the operator."""

    def play(w: World, baseline: Baseline, rng: random.Random) -> tuple[int, bool | None, str]:
        target = rng.choice(_indices(w.timeline, "land"))
        asked = baseline.requests[target]
        k = rng.choice([k for k, path in enumerate(asked) if path.startswith(prefix)])
        path = asked[k]
        skip = sum(1 for earlier in asked[:k] if earlier.startswith(path))
        step = _run_up_to(w, target)
        before = w.sim.faults_served
        w.sim.inject_fault(kind, count=count, path_prefix=path, skip=skip, **options)
        failure = w.run(step)
        served = w.sim.faults_served - before
        w.sim.clear_faults()
        # A failed snapshot meter is recorded as a failed or partial reading and the landing
        # goes on (its events still land); a failed event read fails the run.
        error, clear, said = _what_the_run_said(w, step, failure, expect)
        if clear and kind != "drop_guid":
            clear = "127.0.0.1" in error  # the error names where it read from
        if failure is not None:
            w.run(step)  # the operator re-runs the failed landing
        _run_after(w, target)
        return served, clear, f"{step.label()}, {kind} x{served} at {path} #{skip + 1}{said}"

    return play


# What an AWS fault can hit: RDS's listing, OpenSearch's REST API, CloudWatch's metric reads
# and listings (S3's and SES's samples), SES v2's configuration sets.
AWS_REQUESTS = ("Action=DescribeDBInstances", "/2021-01-01/",
                "GraniteServiceVersion20100801.GetMetricData",
                "GraniteServiceVersion20100801.ListMetrics", "/v2/email/")


def aws_fault(kind: str, *, count: int, expect: str | None = None) -> Play:
    """The proxy in front of the embedded AWS answers ``count`` requests of a seeded kind
    (see ``AWS_REQUESTS``) of a seeded AWS reading with ``kind`` (``throttle`` or ``503``).
    Within boto3's retries the reading is complete as if nothing happened; beyond them the
    meter's reading is recorded as failed with an error containing ``expect``, and the
    operator re-runs the reading (the aws_readings_complete check fails)."""

    def play(w: World, baseline: Baseline, rng: random.Random) -> tuple[int, bool | None, str]:
        target = rng.choice(_indices(w.timeline, "aws"))
        match = rng.choice(AWS_REQUESTS)
        proxy = w.lab.aws_proxy
        step = _run_up_to(w, target)
        before = proxy.served
        proxy.inject(kind, count=count, match=match)
        failure = w.run(step)
        served = proxy.served - before
        proxy.clear()
        error, clear, said = _what_the_run_said(w, step, failure, expect)
        if failure is not None or error:
            w.run(step)  # the operator re-runs the reading
        _run_after(w, target)
        return served, clear, f"{step.label()}, {kind} x{served} at {match}{said}"

    return play


def _run_up_to(w: World, target: int) -> Step:
    """Run the timeline's steps before ``target``; the target step, its time reached."""
    steps = w.timeline.steps()
    for step in steps[:target]:
        w.advance(step)
        w.run(step)
    w.advance(steps[target])
    return steps[target]


def _run_after(w: World, target: int) -> None:
    """Run the timeline's steps after ``target``."""
    for step in w.timeline.steps()[target + 1:]:
        w.advance(step)
        w.run(step)


def _what_the_run_said(w: World, step: Step, failure: Exception | None, expect: str | None
                       ) -> tuple[str, bool | None, str]:
    """The error of a faulted run (its exception, or the errors its readings recorded),
    whether it holds ``expect`` (None when nothing is expected), and the words for the
    scenario's detail."""
    error = str(failure) if failure is not None else _reading_errors(w, step)
    said = f": {_first_line(error)}" if error else ""
    if expect is None:
        return error, None, said
    return error, expect in error, said or ": landed without a word"


def _reading_errors(w: World, step: Step) -> str:
    with w.connect() as conn:
        rows = conn.execute(SQL["reading_errors"], {"taken_at": step.now}).fetchall()
    return "; ".join(f"{meter} {status}: {error}" for meter, status, error in rows)


def tampering(statement: str, expect: str) -> Play:
    """Once the month is posted, the application's own role tries to change the ledger
    behind its back; the database must refuse, and say what to do instead."""

    def play(w: World, baseline: Baseline, rng: random.Random) -> tuple[int, bool | None, str]:
        for step in w.timeline.steps():
            w.advance(step)
            w.run(step)
        with w.connect() as conn:
            try:
                with conn.transaction():
                    conn.execute(SQL[statement])
            except psycopg.Error as exc:
                message = _first_line(str(exc))
                return 1, expect in message, f"{statement}: refused: {message}"
        return 1, False, f"{statement}: ACCEPTED by the database"

    return play


def bad_catalog(change: Callable[[Path], None], *expect: str) -> Play:
    """Once the month is posted, someone loads a catalog with a mistake in it. The load must
    be refused with a message holding every part of ``expect`` (the file, the entry, the fix),
    and leave the catalog in the database exactly as it was."""

    def play(w: World, baseline: Baseline, rng: random.Random) -> tuple[int, bool | None, str]:
        for step in w.timeline.steps():
            w.advance(step)
            w.run(step)
        broken = Path(tempfile.mkdtemp(prefix="faults-catalog-"))
        try:
            shutil.copytree(w.catalog, broken, dirs_exist_ok=True)
            change(broken)
            with w.connect() as conn:
                before = _catalog_rows(conn)
                w.runs += 1
                try:
                    load_catalog(conn, read_catalog(broken))
                except CatalogError as exc:
                    message = str(exc)
                else:
                    return 1, False, "loaded without a word"
                unchanged = _catalog_rows(conn) == before
        finally:
            shutil.rmtree(broken, ignore_errors=True)
        missing = [part for part in expect if part not in message]
        detail = " / ".join(message.splitlines()[1:3] or [message])
        if missing:
            detail += f"; the message lacks {missing}"
        if not unchanged:
            detail += "; the catalog in the database CHANGED"
        return 1, not missing and unchanged, detail

    return play


def _catalog_rows(conn: psycopg.Connection) -> list[tuple]:
    return [tuple(r) for r in conn.execute(SQL["catalog_rows"]).fetchall()]


def _edit_yaml(file: str, change: Callable[[Any], None]) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        data = yaml.safe_load((directory / file).read_text())
        change(data)
        (directory / file).write_text(yaml.safe_dump(data, sort_keys=False))
    return edit


def _append_text(file: str, text: str) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        with (directory / file).open("a") as f:
            f.write(text)
    return edit


def _remove(file: str) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        (directory / file).unlink()
    return edit


def bad_config(env: Callable[[World], dict[str, str]], *expect: str) -> Play:
    """The landing job started the way the code location starts it, with one setting wrong.
    The run must fail with an error holding every part of ``expect`` (the variable and the
    fix), and nothing may change in the billing database."""

    def play(w: World, baseline: Baseline, rng: random.Random) -> tuple[int, bool | None, str]:
        steps = w.timeline.steps()
        target = rng.choice(_indices(w.timeline, "land")[1:])
        clear: bool | None = None
        detail = ""
        for i, step in enumerate(steps):
            w.advance(step)
            if i == target:
                with w.connect() as conn:
                    before = State.read(conn)
                result = w.collect(w.spawn_job("landing_job", env(w)))
                with w.connect() as conn:
                    untouched = not State.read(conn).differences(before)
                error = result.error or ""
                missing = [part for part in expect if part not in error]
                clear = result.returncode != 0 and not missing and untouched
                # the run page shows Dagster's wrapper first; quote the error under it
                chain = [e for e in error.split(" | ") if not e.startswith("dagster._core.errors")]
                detail = _first_line((chain or [error])[0]) if error else "the run succeeded"
                if missing:
                    detail += f"; the error lacks {missing}"
                if not untouched:
                    detail += "; the billing database CHANGED"
            w.run(step)  # the operator fixes the setting and runs the landing again
        return 1, clear, detail

    return play


def _good_env(w: World) -> dict[str, str]:
    return {"DATABASE_URL": _as_url(w.url), "CF_API_URL": w.sim.url, "CF_CLIENT_ID": CLIENT[0],
            "CF_CLIENT_SECRET": CLIENT[1], "BILLING_CATALOG": str(w.catalog),
            **w.lab.aws.environment(), "AWS_ENDPOINT_URL": w.aws_url}


def _as_url(conninfo: str) -> str:
    params = conninfo_to_dict(conninfo)
    return (f"postgresql://{params['user']}@{params['host']}:{params['port']}/"
            f"{params['dbname']}")


DAEMON_PHASES = ("run created", "run started", "measured, pricing next")


def daemon_killed_mid_backfill(w: World, baseline: Baseline,
                               rng: random.Random) -> tuple[int, bool | None, str]:
    """Every landing and AWS reading as usual; then, instead of the hourly meterings, the
    operator backfills the window from the UI, and the machine of the Dagster daemon dies
    (daemon, code server and run worker SIGKILLed together) at a seeded phase. The operator
    starts the daemon again, marks a run left with no process as canceled, and launches the
    backfill again."""
    phase = DAEMON_PHASES[(w.timeline.seed - 1) % len(DAEMON_PHASES)]  # seeds 1-3: each once
    t = w.timeline
    for step in t.steps():
        w.advance(step)
        if step.kind in ("land", "aws"):
            w.run(step)
    storage, storage_url = w.lab.new_database(template="template0")
    deployment = Deployment(_good_env(w), sqlalchemy_url(_as_url(storage_url)))
    keys = hourly_keys_between(t.start, t.end)
    detail = f"killed at '{phase}'"
    try:
        deployment.start_webserver()
        backfill = deployment.launch_backfill(["hourly_measurements", "priced_postings"],
                                              keys[0], keys[-1])
        w.runs += 1
        deployment.start_daemon()
        runs = deployment.wait_for(lambda: _phase_reached(deployment, backfill, phase), 240,
                                   f"the backfill to reach '{phase}'")
        deployment.kill_daemon()
        detail += " (run " + ", ".join(r["status"] for r in runs) + ")"
        deployment.start_daemon()
        orphans = [r["runId"] for r in runs if r["status"] in ("STARTING", "STARTED")]
        for run_id in orphans:  # no process is left to finish them: the operator says so
            deployment.mark_canceled(run_id)
        status = deployment.wait_for(lambda: _settled(deployment, backfill), 300,
                                     "the backfill to finish")
        if status != "COMPLETED_SUCCESS":
            again = deployment.launch_backfill(["hourly_measurements", "priced_postings"],
                                               keys[0], keys[-1])
            w.runs += 1
            status = deployment.wait_for(lambda: _settled(deployment, again), 300,
                                         "the second backfill to finish")
            detail += f"; {len(orphans)} run(s) marked canceled, backfill launched again"
        detail += f"; backfill {status.lower()}"
        if status != "COMPLETED_SUCCESS":
            raise AssertionError(f"{detail}\n{deployment.logs()}")
    finally:
        deployment.stop()
        w.lab.drop_database(storage)
    w.run(t.steps()[-1])  # the month's posting
    return 1, None, detail


def _phase_reached(deployment: Deployment, backfill: str, phase: str
                   ) -> list[dict[str, Any]] | None:
    runs = deployment.backfill_runs(backfill)
    if phase == "run created":
        return runs or None
    if phase == "run started":
        return runs if any(r["status"] == "STARTED" for r in runs) else None
    done = {s["stepKey"] for r in runs for s in (r["stepStats"] or [])
            if s["status"] == "SUCCESS"}
    return runs if "hourly_measurements" in done else None


def _settled(deployment: Deployment, backfill: str) -> str | None:
    status = deployment.backfill_status(backfill)
    return status if status not in ("REQUESTED", "CANCELING", "FAILING") else None


# the campaign's catalog has the example's prices (tests/accuracy/harness.catalog_directory): an
# entry appended to them is entry number this + 1
_EXAMPLE_PRICES = len(yaml.safe_load((EXAMPLE_CATALOG / "prices.yaml").read_text())["prices"])

SCENARIOS: list[Scenario] = [
    Scenario("SIGKILL mid-landing, re-run", "process", killed_in("land", "kill")),
    Scenario("SIGKILL mid-landing, next tick", "process",
             killed_in("land", "kill", "next_tick")),
    Scenario("SIGKILL inside a page's COPY", "process",
             killed_in("land", "kill", where="inside a COPY")),
    Scenario("SIGKILL between pages", "process", killed_in("land", "kill", where="commit")),
    Scenario("SIGKILL mid-derivation", "process", killed_in("derive", "kill")),
    Scenario("SIGKILL mid-pricing", "process", killed_in("price", "kill")),
    Scenario("SIGKILL mid-posting", "process", killed_in("post", "kill")),
    Scenario("SIGKILL mid-AWS-reading", "process", killed_in("aws", "kill")),
    Scenario("Dagster daemon killed mid-backfill", "process", daemon_killed_mid_backfill),
    Scenario("Postgres restart mid-landing", "postgres", killed_in("land", "pg_restart")),
    Scenario("Postgres restart mid-derivation", "postgres", killed_in("derive", "pg_restart")),
    Scenario("Postgres restart mid-pricing", "postgres", killed_in("price", "pg_restart")),
    Scenario("Postgres restart mid-posting", "postgres", killed_in("post", "pg_restart")),
    Scenario("Postgres restart mid-AWS-reading", "postgres", killed_in("aws", "pg_restart")),
    Scenario("two derivations of one hour at once", "concurrency",
             at_once(same_step_twice("derive"))),
    Scenario("two pricings of one hour at once", "concurrency",
             at_once(same_step_twice("price"))),
    Scenario("overlapping derivations at once", "concurrency", at_once(overlapping("derive"))),
    Scenario("overlapping pricings at once", "concurrency", at_once(overlapping("price"))),
    Scenario("two postings of a month at once", "concurrency",
             at_once(same_step_twice("post"))),
    Scenario("two landings at once", "concurrency", at_once(same_step_twice("land"))),
    Scenario("two AWS readings at once", "concurrency", at_once(same_step_twice("aws"))),
    Scenario("re-pricing racing a landing", "concurrency", at_once(racing_landing("price"))),
    Scenario("re-derivation racing a landing", "concurrency",
             at_once(racing_landing("derive"))),
    Scenario("CF 429 with Retry-After", "cloud foundry", cf_fault("429", count=2)),
    Scenario("CF burst of 500s", "cloud foundry", cf_fault("500", count=3)),
    Scenario("CF 502s beyond the retries", "cloud foundry",
             cf_fault("502", count=4, expect="failed 4 times")),
    Scenario("CF 503s", "cloud foundry", cf_fault("503", count=2, retry_after=0)),
    Scenario("CF reply slower than the timeout", "cloud foundry",
             cf_fault("slow", delay_seconds=2.5)),
    Scenario("CF truncated JSON", "cloud foundry", cf_fault("truncate")),
    Scenario("CF malformed JSON", "cloud foundry", cf_fault("malformed", count=2)),
    Scenario("CF record without its guid", "cloud foundry",
             cf_fault("drop_guid", expect="guid")),
    Scenario("CF next link repeats its page", "cloud foundry",
             cf_fault("repeat_next", count=3, expect="already read")),
    Scenario("CF token expires mid-read", "cloud foundry", cf_fault("401")),
    Scenario("UAA down", "cloud foundry",
             cf_fault("503", count=50, prefix="/uaa/", expect="oauth/token")),
    Scenario("AWS throttling", "aws", aws_fault("throttle", count=3)),
    Scenario("AWS 503s", "aws", aws_fault("503", count=2)),
    Scenario("AWS 503s beyond the retries", "aws",
             aws_fault("503", count=6, expect="after 6 attempt(s)")),
    Scenario("UPDATE of a posted ledger entry", "tampering",
             tampering("tamper_update_entry", "append-only")),
    Scenario("DELETE of a posted ledger entry", "tampering",
             tampering("tamper_delete_entry", "append-only")),
    Scenario("UPDATE of a ledger transaction", "tampering",
             tampering("tamper_update_transaction", "append-only")),
    Scenario("DELETE of a ledger transaction", "tampering",
             tampering("tamper_delete_transaction", "append-only")),
    Scenario("TRUNCATE of the ledger", "tampering",
             tampering("tamper_truncate_ledger", "append-only")),
    Scenario("UPDATE of a posted price line", "tampering",
             tampering("tamper_update_posting_line", "append-only")),
    Scenario("TRUNCATE of the posted price lines", "tampering",
             tampering("tamper_truncate_posting_lines", "append-only")),
    Scenario("UPDATE of what an hour drew from an agreement", "tampering",
             tampering("tamper_update_draw", "append-only")),
    Scenario("DELETE of a landed usage event", "tampering",
             tampering("tamper_delete_usage_event", "append-only")),
    Scenario("UPDATE of a landed usage event", "tampering",
             tampering("tamper_update_usage_event", "append-only")),
    Scenario("TRUNCATE of the observations", "tampering",
             tampering("tamper_truncate_observations", "append-only")),
    Scenario("an unbalanced transaction", "tampering",
             tampering("tamper_unbalanced_transaction", "needs at least a debit and a credit")),
    Scenario("triggers switched off (replica role)", "tampering",
             tampering("tamper_replication_role", "permission denied")),
    Scenario("catalog: overlapping prices", "bad input", bad_catalog(
        _edit_yaml("prices.yaml", lambda d: d["prices"].append(
            {**d["prices"][0], "valid_from": date(2025, 6, 1), "microcredits_per_unit": 9})),
        "prices.yaml: entry 1 (App memory)", f"overlaps entry {_EXAMPLE_PRICES + 1}",
        "set this entry's valid_to")),
    Scenario("catalog: negative unit", "bad input", bad_catalog(
        _edit_yaml("prices.yaml", lambda d: d["prices"][1].update(unit=-3600)),
        "prices.yaml: entry 2", "unit is -3600, it must be 1 or more")),
    Scenario("catalog: zero unit", "bad input", bad_catalog(
        _edit_yaml("prices.yaml", lambda d: d["prices"][0].update(unit=0)),
        "prices.yaml: entry 1", "unit is 0, it must be 1 or more")),
    Scenario("catalog: a number as a string", "bad input", bad_catalog(
        _edit_yaml("iaas.yaml", lambda d: d["iaas"][0].update(credits="1000000")),
        "iaas.yaml: entry 1 (IAA-AGENCY-A)", "credits must be a whole number")),
    Scenario("catalog: unknown tier", "bad input", bad_catalog(
        _edit_yaml("customers.yaml", lambda d: d["customers"][0].update(tier="ultra")),
        "customers.yaml: entry 1 (agency-a)", "tier 'ultra' is not in tiers.yaml")),
    Scenario("catalog: unknown meter", "bad input", bad_catalog(
        _edit_yaml("resource_kinds.yaml", lambda d: d["resource_kinds"][1].update(
            meter="cftasks")),
        "resource_kinds.yaml: entry 2", "meter 'cftasks' is unknown: use")),
    Scenario("catalog: an org owned by two customers", "bad input", bad_catalog(
        _edit_yaml("customers.yaml", lambda d: d["customers"][1]["orgs"].append(
            d["customers"][0]["orgs"][0])),
        "customers.yaml: entry 2 (agency-b)", "is already claimed by entry 1",
        "an org belongs to one customer")),
    Scenario("catalog: a date that is not a date", "bad input", bad_catalog(
        _edit_yaml("iaas.yaml", lambda d: d["iaas"][0].update(pop_end="end of June")),
        "iaas.yaml: entry 1 (IAA-AGENCY-A)", "pop_end", "date")),
    Scenario("catalog: duplicate ids", "bad input", bad_catalog(
        _edit_yaml("customers.yaml", lambda d: d["customers"].append(dict(d["customers"][0]))),
        "customers.yaml: entry 6 (agency-a)", "customer id 'agency-a' is already used")),
    Scenario("catalog: malformed YAML", "bad input", bad_catalog(
        _append_text("tiers.yaml", "  - name: [unclosed\n"), "tiers.yaml: line",
        "YAML syntax error")),
    Scenario("catalog: a missing file", "bad input", bad_catalog(
        _remove("prices.yaml"), "prices.yaml: the file is missing", "create it")),
    Scenario("config: DATABASE_URL pointing nowhere", "bad input", bad_config(
        lambda w: {**_good_env(w), "DATABASE_URL":
                   f"postgresql://billing@127.0.0.1:{free_port()}/billing"},
        "DATABASE_URL")),
    Scenario("config: wrong CF credentials", "bad input", bad_config(
        lambda w: {**_good_env(w), "CF_CLIENT_SECRET": "not-the-secret"},
        "CF_CLIENT_ID and CF_CLIENT_SECRET")),
    Scenario("config: unreachable CF_API_URL", "bad input", bad_config(
        lambda w: {**_good_env(w), "CF_API_URL": f"http://127.0.0.1:{free_port()}"},
        "CF_API_URL")),
    Scenario("config: VCAP_SERVICES without the database", "bad input", bad_config(
        lambda w: {k: v for k, v in {**_good_env(w), "VCAP_SERVICES": json.dumps(
            {"user-provided": [{"name": "cf-creds", "credentials": {"client": "x"}}]})}.items()
            if k != "DATABASE_URL"},
        "VCAP_SERVICES", "bind an aws-rds PostgreSQL instance")),
]
