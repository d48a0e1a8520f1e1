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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write docs/openapi.json")
    args = parser.parse_args()
    document = generate()
    if args.write:
        DOCUMENT.write_text(document)
        print(f"wrote {DOCUMENT.relative_to(ROOT)}")
        return 0
    if not DOCUMENT.exists() or DOCUMENT.read_text() != document:
        print("docs/openapi.json is stale: run `make openapi`", file=sys.stderr)
        return 1
    print("docs/openapi.json is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
