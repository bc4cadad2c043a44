"""A billing step in a process of its own, so that the campaign can kill it.

    python -m tests.faults.worker '<json>'

The JSON holds ``step`` (see ``steps.Step``), ``database_url``, ``cf_url``, ``aws_url`` and, for
a faulted run, ``fire_at`` (the fault point) and ``action``: ``kill`` (SIGKILL of this process)
or ``pg_restart`` (the campaign's server restarted, then the step goes on and meets the dead
connection). Or it holds ``job``: a job of the code location run as Dagster runs it, with the
resources configured from this process's environment (the bad-configuration scenarios). The
last line of stdout is a JSON report: the points reached and the one fired, or the error.
"""

import json
import sys

from tests.faults.points import FaultPoints, kill_self
from tests.faults.server import CampaignPostgres
from tests.faults.steps import Step, run_step


def run_job(name: str) -> list[str]:
    """A job of the code location as Dagster runs it, its resources configured from this
    process's environment; the errors of its failed steps, as the run's page shows them."""
    from billing_dagster.definitions import defs

    result = defs.resolve_job_def(name).execute_in_process(
        raise_on_error=False, run_config={"loggers": {"console": {"config": {
            "log_level": "CRITICAL"}}}})
    errors = []
    for event in result.all_events:
        if event.is_step_failure or event.is_failure:
            error = getattr(event.event_specific_data, "error", None)
            while error is not None:
                errors.append(error.message.strip())
                error = error.cause
    return errors


def main() -> int:
    spec = json.loads(sys.argv[1])
    action = kill_self
    if spec.get("action") == "pg_restart":
        action = CampaignPostgres.from_dict(spec["postgres"]).restart
    points = FaultPoints(fire_at=spec.get("fire_at"), action=action)
    report: dict[str, object] = {}
    try:
        if "job" in spec:
            errors = run_job(spec["job"])
            if errors:
                report["error"] = " | ".join(errors)
                return 1
            return 0
        with points.installed():
            run_step(Step.from_dict(spec["step"]), spec["database_url"], spec["cf_url"],
                     spec["aws_url"])
        return 0
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        return 1
    finally:
        report.update(points=points.reached, fired=points.fired)
        sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    sys.exit(main())
