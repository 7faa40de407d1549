"""Both gateways under the same sustained load in one run, the side-by-side table recorded.

    .venv/bin/python bench/peers/jasmin/run.py [--quick] [other bench/run.py options]

The same as `.venv/bin/python bench/run.py --db postgresql --only sustained,jasmin`: TikoSMS
(`api` + `worker` on PostgreSQL, `api` alone as the ceiling), then Jasmin 0.11.1 (set up by
bench/peers/jasmin/setup.py), the generators alone against bare_app.py first. Never in the test
suite: it installs Jasmin into a venv of its own and uses the machine's RabbitMQ and Redis.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from bench import run

if __name__ == "__main__":
    raise SystemExit(run.main(["--db", "postgresql", "--only", "sustained,jasmin",
                               *sys.argv[1:]]))
