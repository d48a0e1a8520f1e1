"""Render docs/openapi.json as one self-contained HTML page (docs/api.html): no scripts, no CDN, no network.

    python scripts/openapi_html.py [--write | --check]

Operations grouped by their first path segment, each with its parameters, request body and responses;
schemas listed once at the end with their fields, linked from wherever they are used.
"""

from __future__ import annotations

import argparse
import json
import sys
from html import escape
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: `scripts` is a package of the repository
DOCUMENT = ROOT / "docs" / "openapi.json"
PAGE = ROOT / "docs" / "api.html"
METHODS = ("get", "post", "put", "patch", "delete")
STYLE = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1f2328;background:#fff}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:40px}
code,.path{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
nav ul{columns:2;padding-left:18px}a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}
.op{border:1px solid #d0d7de;border-radius:6px;margin:16px 0;padding:12px 16px}
.m{display:inline-block;min-width:58px;text-align:center;border-radius:4px;color:#fff;font-weight:600;
font-size:12px;padding:2px 6px;margin-right:8px}
.get{background:#1f883d}.post{background:#0969da}.put{background:#9a6700}.patch{background:#8250df}
.delete{background:#cf222e}.path{font-weight:600}.summary{color:#57606a;margin-left:8px}
table{border-collapse:collapse;width:100%;margin:8px 0}th,td{border:1px solid #d0d7de;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f6f8fa}.req{color:#cf222e}h4{margin:12px 0 4px}
.schema{border-left:3px solid #d0d7de;padding-left:12px;margin:20px 0}.muted{color:#57606a}
"""


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(schema: dict[str, Any]) -> str:
    """A schema as a short, linked type expression: `DeploymentRequest`, `array of string`, `integer | null`."""
    if "$ref" in schema:
        name = escape(_ref_name(schema["$ref"]))
        return f'<a href="#schema-{name}">{name}</a>'
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return " | ".join(type_of(s) for s in schema[key])
    if schema.get("type") == "array":
        return f"array of {type_of(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(f"<code>{escape(json.dumps(v))}</code>" for v in schema["enum"])
    if "const" in schema:
        return f"<code>{escape(json.dumps(schema['const']))}</code>"
    if schema.get("type") == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"map of {type_of(extra) if isinstance(extra, dict) else 'any'}"
    return escape(str(schema.get("type", "any")))


def limits(schema: dict[str, Any]) -> str:
    """Bounds and defaults worth telling a caller (minimum, maxLength, pattern, default...)."""
    keys: tuple[str, ...] = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minLength", "maxLength")
    keys += ("minItems", "maxItems", "pattern", "default")
    found = [f"{k}: <code>{escape(json.dumps(schema[k]))}</code>" for k in keys if k in schema]
    for option in schema.get("anyOf", []):
        found += [f"{k}: <code>{escape(json.dumps(option[k]))}</code>" for k in keys if k in option]
    return ", ".join(found)


def parameters_table(parameters: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(p['name'])}</code>{' <span class=req>*</span>' if p.get('required') else ''}</td>"
        f"<td>{escape(p.get('in', ''))}</td><td>{type_of(p.get('schema', {}))}</td>"
        f"<td>{escape(p.get('description') or p.get('schema', {}).get('description', ''))}"
        f" <span class=muted>{limits(p.get('schema', {}))}</span></td></tr>"
        for p in parameters
    )
    return f"<table><tr><th>name</th><th>in</th><th>type</th><th>description</th></tr>{rows}</table>"


def _content_type(body: dict[str, Any]) -> str:
    content: dict[str, Any] = body.get("content", {})
    schema: dict[str, Any] = next(iter(content.values())).get("schema", {}) if content else {}
    return type_of(schema) if schema and schema != {"title": "Return"} else "JSON"


def operation(path: str, method: str, op: dict[str, Any]) -> str:
    anchor = escape(op.get("operationId", f"{method}-{path}"))
    parts = [
        f'<div class="op" id="{anchor}"><span class="m {method}">{method.upper()}</span>'
        f'<span class="path">{escape(path)}</span><span class="summary">{escape(op.get("summary", ""))}</span>'
    ]
    if op.get("description"):
        parts.append(f"<p>{escape(op['description'])}</p>")
    if op.get("parameters"):
        parts.append(f"<h4>Parameters</h4>{parameters_table(op['parameters'])}")
    if "requestBody" in op:
        required = " (required)" if op["requestBody"].get("required") else " (optional)"
        parts.append(f"<h4>Request body{required}</h4><p>{_content_type(op['requestBody'])}</p>")
    responses = "".join(
        f"<tr><td><code>{escape(code)}</code></td><td>{escape(reply.get('description', ''))}</td>"
        f"<td>{_content_type(reply)}</td></tr>"
        for code, reply in sorted(op.get("responses", {}).items())
    )
    parts.append(f"<h4>Responses</h4><table><tr><th>status</th><th>meaning</th><th>body</th></tr>{responses}</table>")
    return "".join(parts) + "</div>"


def schema_section(name: str, schema: dict[str, Any]) -> str:
    title = escape(name)
    parts = [f'<div class="schema" id="schema-{title}"><h3>{title}</h3>']
    if schema.get("description"):
        parts.append(f"<p>{escape(schema['description'])}</p>")
    properties: dict[str, Any] = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        rows = "".join(
            f"<tr><td><code>{escape(field)}</code>{' <span class=req>*</span>' if field in required else ''}</td>"
            f"<td>{type_of(spec)}</td><td>{escape(spec.get('description', ''))}"
            f" <span class=muted>{limits(spec)}</span></td></tr>"
            for field, spec in properties.items()
        )
        parts.append(f"<table><tr><th>field</th><th>type</th><th>description</th></tr>{rows}</table>")
    else:
        parts.append(f"<p>{type_of(schema)}</p>")
    return "".join(parts) + "</div>"


def render(document: dict[str, Any]) -> str:
    """The whole page, deterministic for a given document (so a test can keep the committed page fresh)."""
    info = document.get("info", {})
    groups: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path in sorted(document.get("paths", {})):
        for method in METHODS:
            op = document["paths"][path].get(method)
            if op is not None:
                groups.setdefault(path.strip("/").split("/")[0], []).append((path, method, op))
    toc = "".join(
        f"<li><a href='#group-{escape(group)}'>/{escape(group)}</a>: "
        + ", ".join(
            f"<a href='#{escape(op.get('operationId', ''))}'>{method.upper()} {escape(path)}</a>"
            for path, method, op in ops
        )
        + "</li>"
        for group, ops in groups.items()
    )
    body = "".join(
        f"<h2 id='group-{escape(group)}'>/{escape(group)}</h2>" + "".join(operation(*op) for op in ops)
        for group, ops in groups.items()
    )
    schemas = document.get("components", {}).get("schemas", {})
    models = "".join(schema_section(name, schemas[name]) for name in sorted(schemas))
    title = escape(info.get("title", "API"))
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{STYLE}</style></head><body><main>"
        f"<h1>{title} <span class=muted>{escape(info.get('version', ''))}</span></h1>"
        f"<p>{escape(info.get('description', ''))}</p>"
        f"<p class=muted>Generated from <code>docs/openapi.json</code> (OpenAPI {escape(document.get('openapi', ''))})"
        " by <code>make api-docs</code>; the API serves the same document at <code>GET /openapi.json</code>."
        " <span class=req>*</span> marks a required field.</p>"
        f"<nav><h2>Operations</h2><ul>{toc}</ul></nav>{body}<h2 id='schemas'>Schemas</h2>{models}"
        "</main></body></html>\n"
    )


def main() -> int:
    from scripts.openapi import write_or_check

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write docs/api.html")
    args = parser.parse_args()
    page = render(json.loads(DOCUMENT.read_text()))
    return write_or_check(PAGE, page, write=args.write, command="make api-docs")


if __name__ == "__main__":
    sys.exit(main())
