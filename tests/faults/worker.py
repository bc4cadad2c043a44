"""A billing step in a process of its own, so that the campaign can kill it.

    python -m tests.faults.worker '<json>'

The JSON holds ``step`` (see ``steps.Step``), ``database_url``, ``cf_url`` and, for a faulted
run, ``fire_at`` (the fault point) and ``action``: ``kill`` (SIGKILL of this process) or
``pg_restart`` (the campaign's server restarted, then the step goes on and meets the dead
connection). The last line of stdout is a JSON report: the points reached and the one fired.
"""

import json
import sys

from tests.faults.points import FaultPoints, kill_self
from tests.faults.server import CampaignPostgres
from tests.faults.steps import Step, run_step


def main() -> int:
    spec = json.loads(sys.argv[1])
    action = kill_self
    if spec.get("action") == "pg_restart":
        action = CampaignPostgres.from_dict(spec["postgres"]).restart
    points = FaultPoints(fire_at=spec.get("fire_at"), action=action)
    report: dict[str, object] = {}
    try:
        with points.installed():
            run_step(Step.from_dict(spec["step"]), spec["database_url"], spec["cf_url"])
        return 0
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        return 1
    finally:
        report.update(points=points.reached, fired=points.fired)
        sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    sys.exit(main())
