"""``make faults``: the fault campaign, one table, exit 1 if any scenario lost or added usage.

    python -m tests.faults [--seeds 3] [--first-seed 1] [--scenario SUBSTRING ...]

Starts a PostgreSQL server of its own (the machine's PostgreSQL binaries, a free loopback
port, a temporary directory it removes) and a CF simulator per run; see campaign.py.
"""

import argparse
import logging
import sys
import time

from tests.faults.campaign import run_campaign
from tests.faults.scenarios import SCENARIOS


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per scenario")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--scenario", action="append", default=[],
                        help="run only scenarios whose name contains this (repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("billing_dagster", "httpx"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    chosen = [s for s in SCENARIOS
              if not args.scenario or any(part in s.name for part in args.scenario)]
    if not chosen:
        parser.error(f"no scenario matches {args.scenario}; names: "
                     + ", ".join(s.name for s in SCENARIOS))
    started = time.monotonic()
    campaign = run_campaign(list(range(args.first_seed, args.first_seed + args.seeds)), chosen)
    print(campaign.table())
    print(f"\n{time.monotonic() - started:.0f} s")
    return 0 if campaign.passed else 1


if __name__ == "__main__":
    sys.exit(main())
