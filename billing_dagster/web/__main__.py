"""``python -m billing_dagster.web``: the Dagster UI behind the UAA login (the `web` process)."""

import argparse
import logging
import os
import sys

from billing_dagster.web.app import serve
from billing_dagster.web.login import LoginConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m billing_dagster.web", description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 3000),
                        help="default: $PORT (set by cloud.gov), else 3000")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        serve(args.host, args.port)
    except LoginConfigError as exc:
        logging.getLogger("billing_dagster.web").error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
