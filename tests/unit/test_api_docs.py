"""docs/api.html: rendered from docs/openapi.json, current, and readable offline (no scripts, no remote assets)."""

from __future__ import annotations

import json
import re

from scripts.openapi_html import DOCUMENT, PAGE, render


def test_committed_page_is_current() -> None:
    assert PAGE.read_text() == render(json.loads(DOCUMENT.read_text())), "docs/api.html is stale: run `make api-docs`"


def test_page_is_self_contained_and_its_links_resolve() -> None:
    page = PAGE.read_text()
    anchors = set(re.findall(r"""id=["']([^"']+)["']""", page))
    links = set(re.findall(r"""href=["']#([^"']+)["']""", page))

    assert not re.search(r"https?://|<script|<link|<img|src=", page)
    assert links and links <= anchors


def test_every_operation_and_schema_is_on_the_page() -> None:
    document = json.loads(DOCUMENT.read_text())
    page = PAGE.read_text()
    operations = [op["operationId"] for path in document["paths"].values() for op in path.values()]

    assert all(f'id="{name}"' in page for name in operations)
    assert all(f'id="schema-{name}"' in page for name in document["components"]["schemas"])
    assert "canary size" in render(
        {"paths": {"/x": {"get": {"operationId": "x", "description": "canary size", "responses": {}}}}}
    )
