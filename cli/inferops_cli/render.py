"""How the CLI shows the API's replies to a person (rich); `--json` bypasses all of this."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "ROLLED_BACK", "REFUSED", "ABORTED"})
STATUS_STYLE = {
    "SUCCEEDED": "bold green",
    "RUNNING": "bold cyan",
    "PENDING": "cyan",
    "PAUSED": "bold yellow",
    "FAILED": "bold red",
    "ROLLED_BACK": "bold magenta",
    "ABORTED": "bold magenta",
    "REFUSED": "bold red",
}
VERDICT_STYLE = {"Pass": "green", "Marginal": "yellow", "Fail": "red"}
TIMELINE_ROWS = 14
_BAR = 30


def status_text(status: str | None) -> Text:
    return Text(str(status or "?"), style=STATUS_STYLE.get(str(status), ""))


def _clock(at: Any) -> str:
    """`2026-01-05T09:04:39.381294Z` -> `09:04:39` (the date is in the header)."""
    text = str(at or "")
    return text[11:19] if len(text) >= 19 else text


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping | list):
        return json.dumps(value, separators=(", ", ": "))
    return "" if value is None else str(value)


# ------------------------------------------------------------------------------------------ traffic split
def traffic_split(view: Mapping[str, Any]) -> float | None:
    """The new model's share of traffic now, from the record alone.

    Managed path: the last `shift` entry says it. Native path: SageMaker's deployment events say
    `new fleet: ActivatingTraffic` once per traffic step, in the order of the plan's `shift` steps.
    The outcome overrides both: SUCCEEDED serves the new config, a rollback or failure the old one.
    """
    status = str(view.get("status"))
    if status == "SUCCEEDED":
        return 100.0
    if status in {"ROLLED_BACK", "FAILED", "ABORTED", "REFUSED"}:
        return 0.0
    timeline = list(view.get("timeline") or [])
    plan = view.get("plan") or {}
    shares = [float(s["new_traffic_percent"]) for s in plan.get("steps", []) if s.get("action") == "shift"]
    share = 0.0
    activations = 0
    for entry in timeline:
        data = entry.get("data") or {}
        if entry.get("kind") == "shift" and "share" in data:
            share = float(data["share"])
        elif entry.get("kind") == "rollback":
            share = 0.0
        elif entry.get("kind") == "sagemaker" and str(entry.get("message", "")).endswith("ActivatingTraffic"):
            if activations < len(shares):
                share = shares[activations]
            activations += 1
    return share


def split_bar(new_percent: float | None) -> Text:
    """`traffic  old 75 % ██████░░ 25 % new`."""
    if new_percent is None:
        return Text("traffic split unknown", style="dim")
    new_cells = round(_BAR * new_percent / 100)
    bar = Text(f"traffic  old {100 - new_percent:g} % ")
    bar.append("█" * (_BAR - new_cells), style="blue")
    bar.append("█" * new_cells, style="green")
    bar.append(f" {new_percent:g} % new")
    return bar


# ---------------------------------------------------------------------------------------------- records
def timeline_table(entries: Sequence[Mapping[str, Any]], *, last: int | None = TIMELINE_ROWS) -> Table:
    table = Table(title="timeline", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("at", style="dim", no_wrap=True)
    table.add_column("what", no_wrap=True)
    table.add_column("", overflow="fold")
    shown = list(entries)[-last:] if last else list(entries)
    if last and len(entries) > last:
        table.add_row("", "…", f"{len(entries) - last} earlier entries")
    for entry in shown:
        table.add_row(_clock(entry.get("at")), str(entry.get("kind", "")), str(entry.get("message", "")))
    return table


def verdicts_table(verdicts: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="verdicts", title_justify="left", show_edge=False, pad_edge=False)
    timed = any(v.get("at") or v.get("end") for v in verdicts)
    if timed:
        table.add_column("at", style="dim", no_wrap=True)
    table.add_column("share", justify="right")  # of traffic (deployments) or sampled (shadow tests)
    table.add_column("verdict")
    table.add_column("score", justify="right")
    table.add_column("reason", overflow="fold")
    for verdict in verdicts:
        result = str(verdict.get("result", ""))
        share = verdict.get("share", verdict.get("sampling"))  # deployments: traffic; shadow tests: sampling
        cells = [_clock(verdict.get("at") or verdict.get("end"))] if timed else []
        table.add_row(
            *cells,
            "" if share is None else f"{share} %",
            Text(result, style=VERDICT_STYLE.get(result, "")),
            _value(verdict.get("score")),
            str(verdict.get("reason", "")),
        )
    return table


def _header(kind: str, view: Mapping[str, Any], detail: str) -> Text:
    header = Text(f"{kind} {view.get('id')} on {view.get('endpoint')}  ", style="bold")
    header.append_text(status_text(str(view.get("status"))))
    if detail:
        header.append(f"  {detail}", style="dim")
    return header


def deployment(view: Mapping[str, Any], *, timeline_rows: int | None = TIMELINE_ROWS) -> RenderableType:
    """A deployment: status, strategy, traffic split, verdicts, timeline and (once it ends) the reason."""
    plan = view.get("plan") or {}
    detail = " ".join(str(p) for p in (plan.get("strategy"), plan.get("path") and f"({plan['path']} path)") if p)
    parts: list[RenderableType] = [_header("deployment", view, detail), split_bar(traffic_split(view))]
    if view.get("verdicts"):
        parts.append(verdicts_table(view["verdicts"]))
    parts.append(timeline_table(view.get("timeline") or [], last=timeline_rows))
    parts.extend(_outcome(view))
    return Group(*parts)


def shadow_test(view: Mapping[str, Any], *, timeline_rows: int | None = TIMELINE_ROWS) -> RenderableType:
    """A shadow test: status, phase and sampling, verdicts, decision, timeline."""
    phase = view.get("phase") or {}
    detail = f"experiment {view.get('experiment')}" if view.get("experiment") else ""
    parts: list[RenderableType] = [_header("shadow test", view, detail)]
    sampling = view.get("sampling_percent")
    line = Text(f"shadow sampling {sampling if sampling is not None else '-'} %")
    if phase:
        line.append(f"  phase {int(phase.get('index', 0)) + 1} of {phase.get('count', '?')}")
        if phase.get("intervals_judged") is not None:
            line.append(f", {phase['intervals_judged']} interval(s) judged")
    if view.get("waiting_for"):
        line.append(f"  waiting for {view['waiting_for']}", style="bold yellow")
    parts.append(line)
    if view.get("verdicts"):
        parts.append(verdicts_table(list(view["verdicts"])[-8:]))
    if view.get("final_verdict"):
        final = view["final_verdict"]
        parts.append(Text(f"final verdict: {final.get('result')} ({final.get('reason', '')})"))
    if view.get("decision"):
        parts.append(Text(f"decision: {_value(view['decision'])}"))
    parts.append(timeline_table(view.get("timeline") or [], last=timeline_rows))
    parts.extend(_outcome(view))
    return Group(*parts)


def _outcome(view: Mapping[str, Any]) -> list[RenderableType]:
    result = view.get("result") or {}
    parts: list[RenderableType] = []
    if result.get("reason") and str(view.get("status")) in TERMINAL:
        parts.append(Text(f"{view.get('status')}: {result['reason']}", style=STATUS_STYLE.get(str(view["status"]), "")))
    diagnosis = view.get("diagnosis") or {}
    if diagnosis.get("summary"):
        parts.append(Text(f"diagnosis: {diagnosis['summary']}", style="yellow"))
    return parts


def plan(body: Mapping[str, Any]) -> RenderableType:
    """A plan (POST /plans, or a dry run): the traffic steps with times and the cost of the rollout."""
    the_plan = body.get("plan", body)
    steps = Table(show_edge=False, pad_edge=False)
    for column, justify in (("at", "right"), ("for", "right"), ("step", "left"), ("new traffic", "right")):
        steps.add_column(column, justify=justify)  # type: ignore[arg-type]
    steps.add_column("old / new instances", justify="right")
    for step in the_plan.get("steps", []):
        steps.add_row(
            f"{step.get('at_seconds', 0)} s",
            f"{step.get('duration_seconds', 0)} s",
            str(step.get("description", step.get("action", ""))),
            f"{step.get('new_traffic_percent', 0):g} %",
            f"{step.get('old_instances', '')} / {step.get('new_instances', '')}",
        )
    cost = the_plan.get("cost") or {}
    summary = Text(
        f"{the_plan.get('strategy')} on the {the_plan.get('path')} path: "
        f"{the_plan.get('current_instance_count')} x {the_plan.get('current_instance_type')} -> "
        f"{the_plan.get('target_instance_count')} x {the_plan.get('target_instance_type')}, "
        f"{the_plan.get('total_seconds')} s, peak {the_plan.get('peak_instances')} instances",
        style="bold",
    )
    parts: list[RenderableType] = [summary, steps]
    if cost:
        parts.append(
            Text(
                f"cost: {cost.get('serving_hourly_usd')} USD/h serving, {cost.get('peak_hourly_usd')} USD/h at peak, "
                f"rollout {cost.get('rollout_usd')} USD (prices {cost.get('price_region')} {cost.get('price_as_of')})"
            )
        )
    for warning in body.get("warnings") or the_plan.get("warnings") or []:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    return Group(*parts)


def violations(body: Mapping[str, Any]) -> RenderableType | None:
    """Every rule a refused request breaks, with the fix."""
    found = body.get("violations") or body.get("errors")
    if not found:
        return None
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("problem", overflow="fold")
    table.add_column("fix", overflow="fold", style="green")
    for violation in found:
        table.add_row(str(violation.get("field", "")), str(violation.get("message", "")), str(violation.get("fix", "")))
    return table


def record(data: Mapping[str, Any], *, title: str | None = None) -> RenderableType:
    """Any object as a two-column table (nested values as compact JSON)."""
    table = Table(show_header=False, show_edge=False, pad_edge=False, title=title, title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        table.add_row(str(key), status_text(value) if key == "status" else _value(value))
    return table


def rows(items: Iterable[Mapping[str, Any]], columns: Sequence[str], *, title: str | None = None) -> Table:
    """A list of objects as a table of the named columns (absent ones stay empty)."""
    table = Table(show_edge=False, pad_edge=False, title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, overflow="fold", no_wrap=index == 0)
    for item in items:
        table.add_row(*(status_text(item.get(c)) if c == "status" else _value(item.get(c)) for c in columns))
    return table


def error_panel(message: str, details: RenderableType | None = None) -> RenderableType:
    body: RenderableType = Group(Text(message), details) if details is not None else Text(message)
    return Panel(body, title="refused" if details is not None else "error", border_style="red", expand=False)


def scaling_operation(view: Mapping[str, Any]) -> RenderableType:
    """A scale-to-zero operation (enable, disable, wake, park, unpark): what, its status, its latest events."""
    header = _header(f"{view.get('action', 'scaling')} of", view, f"({view.get('trigger')})")
    parts: list[RenderableType] = [header]
    if view.get("timeline"):
        parts.append(timeline_table(view["timeline"]))
    parts.extend(_outcome(view))
    return Group(*parts)


def endpoint(view: Mapping[str, Any]) -> RenderableType:
    """GET /endpoints/{name}: kind and capacity, the scale-to-zero state, the last wake, idle cost, last operation."""
    table = Table(show_header=False, show_edge=False, pad_edge=False, title=str(view.get("name")), title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    capacity = view.get("capacity") or {}
    copies = capacity.get("copies") or {}
    held = f"{capacity.get('instances', 0)} instance(s)" + "".join(f", {n}: {c} copies" for n, c in copies.items())
    table.add_row("endpoint", Text.assemble(f"{view.get('kind') or 'unknown kind'}  ", status_text(view.get("status"))))
    table.add_row("capacity", held)
    stz = view.get("scale_to_zero")
    if stz:
        state = "parked" if stz.get("parked") else "at zero" if stz.get("at_zero") else "awake"
        settings = {k: v for k, v in (stz.get("settings") or {}).items() if v is not None}
        table.add_row("scale to zero", f"enabled {_clock(stz.get('enabled_at'))}, {state}; {_value(settings)}")
        if stz.get("alarms"):
            table.add_row("wake alarms", ", ".join(stz["alarms"]))
    else:
        table.add_row("scale to zero", "off")
    wake = view.get("last_wake") or {}
    if wake:
        table.add_row("last wake", f"{wake.get('seconds')} s to serve ({wake.get('trigger')})")
    cost = view.get("idle_cost") or {}
    if cost:
        table.add_row(
            "last 7 days",
            f"{cost.get('idle_hours')} idle h = ${cost.get('idle_cost_usd')}; {cost.get('zero_hours')} h at zero "
            f"saved ${cost.get('saved_usd')} (at ${cost.get('price_usd_per_hour')}/h)",
        )
    operation = view.get("operation") or {}
    if operation:
        reason = (operation.get("result") or {}).get("reason") or ""
        table.add_row(
            "last operation",
            Text.assemble(
                f"{operation.get('action')} {operation.get('id')} ", status_text(operation.get("status")), f" {reason}"
            ),
        )
    return table
