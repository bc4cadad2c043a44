"""Run the CF simulator as a dev server until Ctrl-C or SIGTERM.

    python -m billing_dagster.simulator --port 8081 --seed 1 --apps 200 --service-instances 100

Without ``--start``, virtual time starts at the current hour (floored). With
``--follow-wall-clock`` each request first advances the foundation to the real time, so the
usage events keep coming like a live foundation's.
"""

import argparse
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

from billing_dagster.simulator.foundation import Foundation
from billing_dagster.simulator.server import Simulator


def _parse_start(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"--start needs a timezone, e.g. {text}Z")
    return moment.astimezone(UTC)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m billing_dagster.simulator",
        description="Serve a synthetic Cloud Foundry API v3 + UAA on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--service-instances", type=int, default=100)
    parser.add_argument(
        "--start", type=_parse_start, default=None,
        help="virtual start time, ISO 8601 with zone (default: now, floored to the hour)",
    )
    parser.add_argument("--follow-wall-clock", action="store_true",
                        help="advance virtual time to the real time on every request")
    parser.add_argument("--client-id", default="billing")
    parser.add_argument("--client-secret", default="billing-secret")
    parser.add_argument("--retention-days", type=int, default=31)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    start = args.start or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    print(f"generating foundation: seed={args.seed} apps={args.apps} "
          f"service_instances={args.service_instances} start={start.isoformat()}", flush=True)
    foundation = Foundation(
        args.seed, args.apps, args.service_instances, start, retention_days=args.retention_days
    )
    simulator = Simulator(
        foundation, host=args.host, port=args.port, client_id=args.client_id,
        client_secret=args.client_secret, follow_wall_clock=args.follow_wall_clock,
    )
    stopping = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    with simulator:
        print(f"CF simulator listening on {simulator.url} (UAA at {simulator.uaa_url})")
        print(f"  export CF_API_URL={simulator.url}")
        print(f"  export CF_CLIENT_ID={args.client_id}")
        print(f"  export CF_CLIENT_SECRET={args.client_secret}")
        print(f"  virtual clock: GET/POST {simulator.url}/_sim/clock; "
              f"faults: POST {simulator.url}/_sim/faults", flush=True)
        while not stopping.wait(0.5):
            pass
    print("CF simulator stopped", flush=True)


if __name__ == "__main__":
    main()
