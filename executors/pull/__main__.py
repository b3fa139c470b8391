"""``python -m executors.pull relay|agent ...``: the relay or a site agent, in the foreground.

Child processes (the benchmark, the demo) use it because it starts in a fraction of the time
the whole CLI (Prefect included) takes to import.
"""

from __future__ import annotations

import sys

from executors.pull.agent import main as agent
from executors.pull.relay import main as relay

__all__: list[str] = []

_USAGE = "usage: python -m executors.pull relay|agent [options] (--help for the options)"

if __name__ == "__main__":
    command, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    mains = {"relay": relay, "agent": agent}
    if command not in mains:
        print(_USAGE, file=sys.stderr)
        sys.exit(2)
    sys.exit(mains[command](rest))
