"""Generate the API's OpenAPI document from its routes, or check that the committed one is current."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "openapi.json"


def generate() -> str:
    """The document as the API function would serve it (imports the real handler module)."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    sys.path.insert(0, str(ROOT))
    from twin.lambdas import load_function

    document: str = load_function("api").openapi_document()
    return document + "\n"


def write_or_check(path: Path, text: str, *, write: bool, command: str) -> int:
    """Write a generated file, or exit 1 when the committed one differs from what would be generated."""
    name = path.relative_to(ROOT)
    if write:
        path.write_text(text)
        print(f"wrote {name}")
        return 0
    if not path.exists() or path.read_text() != text:
        print(f"{name} is stale: run `{command}`", file=sys.stderr)
        return 1
    print(f"{name} is current")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write docs/openapi.json")
    args = parser.parse_args()
    return write_or_check(DOCUMENT, generate(), write=args.write, command="make openapi")


if __name__ == "__main__":
    sys.exit(main())
