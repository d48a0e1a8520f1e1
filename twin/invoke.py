"""`make invoke FUNCTION=<LogicalId> EVENT=events/<file>.json`: `sam local invoke`, in-process, no Docker.

    python -m twin.invoke <LogicalId> <event.json> [--template PATH] [--root DIR]

Starts the twin (every resource of the template in moto), invokes the function once with the event, and
prints the result as JSON on stdout; the function's own logs go to stderr, as `sam local invoke` does.
Exit status 1 when the function fails (its error payload is printed instead).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from twin.runtime import Twin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twin.invoke", description=__doc__.splitlines()[0])
    parser.add_argument("function", help="logical id of an AWS::Serverless::Function in the template")
    parser.add_argument("event", type=Path, help="JSON file with the event")
    parser.add_argument("--template", type=Path, default=None)
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args(argv)
    event = json.loads(args.event.read_text())
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr), Twin(args.template, args.root, schedules=False) as twin:
        if args.function not in twin.lambdas.functions:
            print(f"no function {args.function}; have {', '.join(sorted(twin.lambdas.functions))}", file=sys.stderr)
            return 2
        record = twin.lambdas.invoke(args.function, event, source="twin.invoke")
    print(json.dumps(record.payload, indent=2), file=stdout)
    print(
        f"{args.function}: {'error ' + str(record.error) if record.error else 'ok'} "
        f"in {record.wall_seconds * 1000:.0f} ms (request {record.request_id})",
        file=sys.stderr,
    )
    return 1 if record.error else 0


if __name__ == "__main__":
    sys.exit(main())
