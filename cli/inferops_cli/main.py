"""`inferops`: plan, deploy, watch and steer SageMaker rollouts, shadow tests and scale to zero from a terminal.

Exit codes (scripts can rely on them; `--json` prints the reply, or `{"error": ...}`, on stdout):

\b
    0  success: the request was accepted / the operation SUCCEEDED (or is still running, for `status`)
    1  failed: the operation FAILED, or the API failed (5xx)
    2  usage: a bad option or argument (nothing was sent)
    3  refused: the API refused the request (4xx: a broken rule, a busy endpoint, not found, no credentials)
       or the operation ended REFUSED
    4  rolled back: the operation ended ROLLED_BACK or ABORTED (the endpoint serves the old model)
    5  unreachable: no API URL, or no answer from it (nothing was done)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from inferops_cli import render
from inferops_cli.client import LOCAL_PORT, Api, ApiError, Target, Unreachable, connect


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    REFUSED = 3
    ROLLED_BACK = 4
    UNREACHABLE = 5


OUTCOME_CODES = {
    "SUCCEEDED": ExitCode.OK,
    "FAILED": ExitCode.FAILED,
    "REFUSED": ExitCode.REFUSED,
    "ROLLED_BACK": ExitCode.ROLLED_BACK,
    "ABORTED": ExitCode.ROLLED_BACK,
}


def outcome_code(status: str | None) -> ExitCode:
    """A finished operation's status as an exit code; a running one is a success so far."""
    return OUTCOME_CODES.get(str(status), ExitCode.OK)


@dataclass
class Cli:
    """What every command shares: where the API is, how to print, and the one place errors are turned into exits."""

    target: Target
    json: bool = False
    timeout: float = 30.0
    out: Console = field(default_factory=Console)
    err: Console = field(default_factory=lambda: Console(stderr=True))
    _api: Api | None = None

    @property
    def api(self) -> Api:
        if self._api is None:
            try:
                self._api = connect(self.target, timeout=self.timeout)
            except Unreachable as error:
                self.fail(str(error), ExitCode.UNREACHABLE)
        return self._api

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; an error reply or no reply ends the command with its exit code and the user's message."""
        try:
            return self.api.call(method, path, **kwargs)
        except (ApiError, Unreachable) as error:
            self.exit_on(error)

    def exit_on(self, error: ApiError | Unreachable) -> NoReturn:
        """End the command on a failed call: the user's message, and the exit code its kind maps to."""
        if isinstance(error, Unreachable):
            self.fail(str(error), ExitCode.UNREACHABLE)
        code = ExitCode.FAILED if error.status >= 500 else ExitCode.REFUSED
        if self.json:
            self.print_json({"error": {**error.body, "status": error.status, "message": error.message}})
            raise typer.Exit(code) from None
        self.err.print(render.error_panel(error.message, render.violations(error.body)))
        raise typer.Exit(code) from None

    def fail(self, message: str, code: ExitCode) -> NoReturn:
        if self.json:
            self.print_json({"error": {"message": message}})
        else:
            self.err.print(render.error_panel(message))
        raise typer.Exit(code)

    def print_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()

    def show(self, data: Any, view: Callable[[Any], RenderableType | str]) -> None:
        if self.json:
            self.print_json(data)
        else:
            self.out.print(view(data))


app = typer.Typer(
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
shadow_app = typer.Typer(help="Shadow tests: run a candidate beside production, then promote or discard it.")
scale_app = typer.Typer(help="Scale to zero: let an idle endpoint scale in to nothing, wake it on demand.")
catalog_app = typer.Typer(help="The SageMaker instance & accelerator catalog.")
results_app = typer.Typer(help="Async inference results.")
delivery_app = typer.Typer(help="Registry-driven deliveries of approved model versions.")
for sub, name in (
    (shadow_app, "shadow"),
    (scale_app, "scale"),
    (catalog_app, "catalog"),
    (results_app, "results"),
    (delivery_app, "delivery"),
):
    sub.info.no_args_is_help = True
    app.add_typer(sub, name=name)


@app.callback()
def _options(
    ctx: typer.Context,
    api_url: Annotated[
        str | None, typer.Option("--api-url", envvar="INFEROPS_API_URL", help="the API's base URL, stage included")
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="the local twin of `make up` (http://127.0.0.1:PORT/v1)")
    ] = False,
    port: Annotated[int, typer.Option("--port", help="with --local: the port of `make up`")] = LOCAL_PORT,
    stack: Annotated[
        str | None, typer.Option("--stack", help="read ApiUrl from this stack (default: samconfig.toml's)")
    ] = None,
    profile: Annotated[str | None, typer.Option("--profile", envvar="AWS_PROFILE", help="AWS profile")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS Region (default: the URL's or profile's)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print machine-readable JSON on stdout")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="seconds to wait for each API reply")] = 30.0,
) -> None:
    """Talk to the InferOps API (SigV4-signed with your AWS credentials)."""
    target = Target(api_url=api_url, local=local, local_port=port, stack=stack, profile=profile, region=region)
    ctx.obj = Cli(target=target, json=json_output, timeout=timeout)


def _cli(ctx: typer.Context) -> Cli:
    cli = ctx.find_root().obj
    assert isinstance(cli, Cli)
    return cli


# ------------------------------------------------------------------------------------- request building
class Strategy(StrEnum):
    all_at_once = "all_at_once"
    canary = "canary"
    linear = "linear"
    rolling = "rolling"
    managed = "managed"


RequestFile = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="the request as JSON ('-': stdin); the options below override its fields"),
]
EndpointOpt = Annotated[str | None, typer.Option("--endpoint", "-e", help="endpoint name")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="an existing SageMaker model's name")]
PackageOpt = Annotated[str | None, typer.Option("--package", help="an Approved model package's ARN")]


def _load(cli: Cli, source: Path | None) -> dict[str, Any]:
    if source is None:
        return {}
    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_text()
        loaded = json.loads(text)
    except OSError as error:
        cli.fail(f"cannot read {source}: {error.strerror}", ExitCode.USAGE)
    except ValueError as error:
        cli.fail(f"{source} is not valid JSON: {error}", ExitCode.USAGE)
    if not isinstance(loaded, dict):
        cli.fail(f"{source} must hold a JSON object", ExitCode.USAGE)
    return loaded


def _model(model: str | None, package: str | None) -> dict[str, Any] | None:
    if package:
        return {"source": "package", "model_package_arn": package}
    if model:
        return {"source": "existing", "model_name": model}
    return None


def _strategy(strategy: Strategy, size: float | None, steps: str | None, bake: int | None) -> dict[str, Any]:
    chosen: dict[str, Any] = {"type": strategy.value}
    amount = None if size is None else {"unit": "percent", "value": size}
    if amount is not None:
        key = {Strategy.canary: "size", Strategy.linear: "step", Strategy.rolling: "batch"}.get(strategy)
        if key:
            chosen[key] = amount
    if steps and strategy is Strategy.managed:
        chosen["steps"] = [int(s) for s in steps.split(",") if s.strip()]
    if bake is not None:
        chosen["bake_seconds"] = bake
    return chosen


def deployment_request(
    cli: Cli,
    source: Path | None,
    *,
    endpoint: str | None,
    model: str | None,
    package: str | None,
    strategy: Strategy | None,
    size: float | None,
    steps: str | None,
    bake: int | None,
    alarms: list[str] | None,
    recommended_alarms: bool,
    instance_type: str | None,
    instance_count: int | None,
) -> dict[str, Any]:
    """POST /plans and /deployments' body: the file's, with the options on top. The API validates it."""
    request = _load(cli, source)
    overrides = {
        "endpoint_name": endpoint,
        "model": _model(model, package),
        "instance_type": instance_type,
        "instance_count": instance_count,
        "alarms": alarms or None,
        "create_recommended_alarms": True if recommended_alarms else None,
    }
    request.update({k: v for k, v in overrides.items() if v is not None})
    if strategy is not None:
        request["strategy"] = _strategy(strategy, size, steps, bake)
    elif any(v is not None for v in (size, steps, bake)):
        cli.fail("--size, --steps and --bake need --strategy", ExitCode.USAGE)
    if not request.get("endpoint_name") or not request.get("model"):
        cli.fail("name the endpoint (--endpoint) and the model (--model or --package), or pass --file", ExitCode.USAGE)
    return request


StrategyOpt = Annotated[Strategy | None, typer.Option("--strategy", "-s", help="how to shift traffic")]
SizeOpt = Annotated[
    float | None, typer.Option("--size", help="percent: canary size, linear step or rolling batch", min=0)
]
StepsOpt = Annotated[str | None, typer.Option("--steps", help="managed: traffic steps, e.g. 10,50,100")]
BakeOpt = Annotated[int | None, typer.Option("--bake", help="seconds to bake after each step", min=0)]
AlarmOpt = Annotated[list[str] | None, typer.Option("--alarm", help="a rollback alarm (repeat for more)")]
RecommendedOpt = Annotated[bool, typer.Option("--recommended-alarms", help="create the recommended rollback alarms")]
InstanceTypeOpt = Annotated[str | None, typer.Option("--instance-type", help="the new fleet's instance type")]
InstanceCountOpt = Annotated[int | None, typer.Option("--instance-count", min=1, help="the new fleet's size")]
IntervalOpt = Annotated[float, typer.Option("--interval", min=0.05, help="seconds between polls")]


# ---------------------------------------------------------------------------------------- deployments
@app.command()
def plan(
    ctx: typer.Context,
    file: RequestFile = None,
    endpoint: EndpointOpt = None,
    model: ModelOpt = None,
    package: PackageOpt = None,
    strategy: StrategyOpt = None,
    size: SizeOpt = None,
    steps: StepsOpt = None,
    bake: BakeOpt = None,
    alarm: AlarmOpt = None,
    recommended_alarms: RecommendedOpt = False,
    instance_type: InstanceTypeOpt = None,
    instance_count: InstanceCountOpt = None,
) -> None:
    """Check a deployment against SageMaker's rules and show its plan (changes nothing)."""
    cli = _cli(ctx)
    request = deployment_request(
        cli,
        file,
        endpoint=endpoint,
        model=model,
        package=package,
        strategy=strategy,
        size=size,
        steps=steps,
        bake=bake,
        alarms=alarm,
        recommended_alarms=recommended_alarms,
        instance_type=instance_type,
        instance_count=instance_count,
    )
    cli.show(cli.call("POST", "/plans", body=request), render.plan)


@app.command()
def deploy(
    ctx: typer.Context,
    file: RequestFile = None,
    endpoint: EndpointOpt = None,
    model: ModelOpt = None,
    package: PackageOpt = None,
    strategy: StrategyOpt = None,
    size: SizeOpt = None,
    steps: StepsOpt = None,
    bake: BakeOpt = None,
    alarm: AlarmOpt = None,
    recommended_alarms: RecommendedOpt = False,
    instance_type: InstanceTypeOpt = None,
    instance_count: InstanceCountOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="plan only, start nothing")] = False,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="retries with the same key get the first answer")
    ] = None,
    watch_: Annotated[
        bool, typer.Option("--watch", "-w", help="follow it to the end (exit code: its outcome)")
    ] = False,
    interval: IntervalOpt = 2.0,
) -> None:
    """Start a guarded deployment; with --watch, follow it live until it ends."""
    cli = _cli(ctx)
    request = deployment_request(
        cli,
        file,
        endpoint=endpoint,
        model=model,
        package=package,
        strategy=strategy,
        size=size,
        steps=steps,
        bake=bake,
        alarms=alarm,
        recommended_alarms=recommended_alarms,
        instance_type=instance_type,
        instance_count=instance_count,
    )
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    started = cli.call("POST", "/deployments", query={"dryRun": dry_run or None}, body=request, headers=headers)
    if dry_run or not watch_:
        cli.show(started, lambda s: render.plan(s) if dry_run else _started("deployment", s))
        return
    if not cli.json:
        cli.out.print(_started("deployment", started))
    _follow(cli, f"/deployments/{started['id']}", render.deployment, interval)


def _started(kind: str, started: Mapping[str, Any]) -> str:
    return (
        f"{kind} {started.get('id')} started ({started.get('status')}); follow it: inferops watch {started.get('id')}"
    )


@app.command()
def status(
    ctx: typer.Context,
    operation_id: Annotated[str | None, typer.Argument(help="a deployment's id")] = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint", "-e", help="list this endpoint's deployments")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 20,
) -> None:
    """A deployment's status, traffic split, verdicts and timeline; or an endpoint's deployments."""
    cli = _cli(ctx)
    if operation_id:
        view = cli.call("GET", f"/deployments/{operation_id}")
        cli.show(view, lambda v: render.deployment(v, timeline_rows=None))
        raise typer.Exit(outcome_code(view.get("status")))
    if not endpoint:
        cli.fail("name a deployment id, or --endpoint to list an endpoint's deployments", ExitCode.USAGE)
    page = cli.call("GET", "/deployments", query={"endpoint": endpoint, "limit": limit})
    columns = ("id", "status", "strategy", "created_at", "reason")
    cli.show(page, lambda p: render.rows(p.get("deployments", []), columns, title=f"deployments of {endpoint}"))


@app.command()
def watch(
    ctx: typer.Context,
    operation_id: Annotated[str, typer.Argument(help="a deployment's or shadow test's id")],
    interval: IntervalOpt = 2.0,
) -> None:
    """Follow a deployment (or shadow test) live until it ends; the exit code is its outcome."""
    cli = _cli(ctx)
    try:
        cli.api.call("GET", f"/deployments/{operation_id}")
        _follow(cli, f"/deployments/{operation_id}", render.deployment, interval)
    except ApiError as error:
        if error.status != 404:
            cli.call("GET", f"/deployments/{operation_id}")  # shows the error and exits
        cli.call("GET", f"/shadow-tests/{operation_id}")  # a shadow test, or its 404 ends the command
        _follow(cli, f"/shadow-tests/{operation_id}", render.shadow_test, interval)
    except Unreachable as error:
        cli.fail(str(error), ExitCode.UNREACHABLE)


WATCH_RETRIES = 5
"""Consecutive failed polls `watch` rides out (a 5xx or 429 from API Gateway or the function, no answer), each
after a longer pause (up to WATCH_MAX_PAUSE): the operation goes on whether anyone watches it or not."""
WATCH_MAX_PAUSE = 30.0


def _poll(cli: Cli, path: str, interval: float) -> Any:
    """The record after `interval`; a transient failure is retried, anything else ends the command as `call` does."""
    failures = 0
    while True:
        time.sleep(min(interval * 2**failures, max(interval, WATCH_MAX_PAUSE)))
        try:
            return cli.api.call("GET", path)
        except (ApiError, Unreachable) as error:
            failures += 1
            transient = isinstance(error, Unreachable) or error.status >= 500 or error.status == 429
            if not transient or failures > WATCH_RETRIES:
                cli.exit_on(error)


def _follow(cli: Cli, path: str, view: Callable[[Any], RenderableType], interval: float) -> NoReturn:
    """Poll the record until it reaches a terminal status, redrawing in place; exit with its outcome."""
    record = cli.call("GET", path)
    if cli.json:
        while str(record.get("status")) not in render.TERMINAL:
            record = _poll(cli, path, interval)
        cli.print_json(record)
        raise typer.Exit(outcome_code(record.get("status")))
    with Live(view(record), console=cli.out, refresh_per_second=4, transient=False) as live:
        while str(record.get("status")) not in render.TERMINAL:
            record = _poll(cli, path, interval)
            live.update(view(record))
    if not cli.out.is_terminal:
        cli.out.line()  # Live ends its last frame without a newline when it is not drawing on a terminal
    raise typer.Exit(outcome_code(record.get("status")))


@app.command()
def abort(
    ctx: typer.Context,
    operation_id: Annotated[str, typer.Argument(help="a running deployment's id")],
    reason: Annotated[str | None, typer.Option("--reason", help="recorded in the timeline")] = None,
) -> None:
    """Roll a running deployment back now (the outcome follows in `inferops watch`)."""
    cli = _cli(ctx)
    view = cli.call("POST", f"/deployments/{operation_id}/abort", body={"reason": reason} if reason else None)
    cli.show(
        view, lambda v: f"abort of {v.get('id')} requested ({v.get('status')}); follow it: inferops watch {v.get('id')}"
    )


@app.command()
def approve(
    ctx: typer.Context,
    operation_id: Annotated[str, typer.Argument(help="a paused managed deployment's id")],
) -> None:
    """Let a paused managed deployment take its next traffic step."""
    cli = _cli(ctx)
    view = cli.call("POST", f"/deployments/{operation_id}/approve")
    cli.show(view, lambda v: f"{v.get('id')} approved: {v.get('status')}")


# -------------------------------------------------------------------------------------------- shadow
@shadow_app.command("start")
def shadow_start(
    ctx: typer.Context,
    file: Annotated[Path, typer.Option("--file", "-f", help="the shadow test request as JSON ('-': stdin)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="check and plan, start nothing")] = False,
    watch_: Annotated[bool, typer.Option("--watch", "-w", help="follow it to the end")] = False,
    interval: IntervalOpt = 5.0,
) -> None:
    """Start a shadow test (POST /shadow-tests)."""
    cli = _cli(ctx)
    started = cli.call("POST", "/shadow-tests", query={"dryRun": dry_run or None}, body=_load(cli, file))
    if dry_run or not watch_:
        cli.show(started, lambda s: render.record(s.get("plan") or s) if dry_run else _started("shadow test", s))
        return
    if not cli.json:
        cli.out.print(_started("shadow test", started))
    _follow(cli, f"/shadow-tests/{started['id']}", render.shadow_test, interval)


@shadow_app.command("status")
def shadow_status(
    ctx: typer.Context,
    operation_id: Annotated[str | None, typer.Argument(help="a shadow test's id")] = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint", "-e", help="list this endpoint's shadow tests")] = None,
) -> None:
    """A shadow test's phase, sampling, verdicts and timeline; or an endpoint's shadow tests."""
    cli = _cli(ctx)
    if operation_id:
        view = cli.call("GET", f"/shadow-tests/{operation_id}")
        cli.show(view, lambda v: render.shadow_test(v, timeline_rows=None))
        raise typer.Exit(outcome_code(view.get("status")))
    if not endpoint:
        cli.fail("name a shadow test id, or --endpoint to list an endpoint's shadow tests", ExitCode.USAGE)
    page = cli.call("GET", "/shadow-tests", query={"endpoint": endpoint})
    columns = ("id", "status", "action", "decision", "created_at", "reason")
    cli.show(page, lambda p: render.rows(p.get("shadow_tests", []), columns, title=f"shadow tests of {endpoint}"))


def _shadow_action(ctx: typer.Context, operation_id: str, action: str, body: dict[str, Any] | None = None) -> None:
    cli = _cli(ctx)
    view = cli.call("POST", f"/shadow-tests/{operation_id}/{action}", body=body)
    cli.show(view, lambda v: f"{action} of shadow test {v.get('id')} requested ({v.get('status')})")


@shadow_app.command("promote")
def shadow_promote(ctx: typer.Context, operation_id: Annotated[str, typer.Argument()]) -> None:
    """Promote the shadow variant to production (needs 100 % sampling throughout the last phase)."""
    _shadow_action(ctx, operation_id, "promote")


@shadow_app.command("discard")
def shadow_discard(
    ctx: typer.Context,
    operation_id: Annotated[str, typer.Argument()],
    reason: Annotated[str | None, typer.Option("--reason")] = None,
) -> None:
    """Remove the shadow variant and keep production."""
    _shadow_action(ctx, operation_id, "discard", {"reason": reason} if reason else None)


@shadow_app.command("approve")
def shadow_approve(ctx: typer.Context, operation_id: Annotated[str, typer.Argument()]) -> None:
    """Approve a shadow test waiting for a human: its action (promote) goes ahead."""
    _shadow_action(ctx, operation_id, "approve")


# --------------------------------------------------------------------------------------------- scale
@scale_app.command("enable")
def scale_enable(
    ctx: typer.Context,
    endpoint: Annotated[str, typer.Argument(help="endpoint name")],
    idle_minutes: Annotated[
        int | None, typer.Option("--idle-minutes", min=15, help="classic endpoints: park after this long idle")
    ] = None,
    max_copies: Annotated[
        int | None, typer.Option("--max-copies", min=1, help="inference components: most copies when awake")
    ] = None,
    max_instances: Annotated[
        int | None, typer.Option("--max-instances", min=1, help="most instances when awake")
    ] = None,
    awake: Annotated[
        str | None,
        typer.Option("--awake", help="classic endpoints: awake hours, parked outside them, e.g. 'MON-FRI 07:00-20:00'"),
    ] = None,
    timezone: Annotated[str, typer.Option("--timezone", help="the time zone of --awake")] = "UTC",
) -> None:
    """Let an endpoint scale to zero when idle (PUT /endpoints/{name}/scale-to-zero)."""
    cli = _cli(ctx)
    options = {"idle_minutes": idle_minutes, "max_copies": max_copies, "max_instances": max_instances}
    body: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    if awake:
        body["schedule"] = {**_awake_hours(cli, awake), "timezone": timezone}
    reply = cli.call("PUT", f"/endpoints/{endpoint}/scale-to-zero", body=body)
    cli.show(reply, _scaling_started)


_DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


def _awake_hours(cli: Cli, text: str) -> dict[str, Any]:
    """'MON-FRI 07:00-20:00' (or 'MON,WED,SAT 08:00-18:00') -> the API's schedule fields."""
    usage = f"--awake {text!r}: write DAYS HH:MM-HH:MM, e.g. 'MON-FRI 07:00-20:00'"
    days_text, _, hours = text.strip().upper().partition(" ")
    start, _, end = hours.strip().partition("-")
    days: list[str] = []
    for part in days_text.split(","):
        first, _, last = part.partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            cli.fail(usage, ExitCode.USAGE)
        i, j = _DAYS.index(first), _DAYS.index(last or first)
        days += [_DAYS[k % 7] for k in range(i, j + 1 if j >= i else j + 8)]
    if not (start and end):
        cli.fail(usage, ExitCode.USAGE)
    return {"days": list(dict.fromkeys(days)), "start": start, "end": end}


def _scaling_started(operation: Mapping[str, Any]) -> RenderableType:
    follow = f"follow it: inferops scale status {operation.get('endpoint')}"
    return Group(render.scaling_operation(operation), Text(follow, style="dim"))


@scale_app.command("disable")
def scale_disable(ctx: typer.Context, endpoint: Annotated[str, typer.Argument(help="endpoint name")]) -> None:
    """Stop scaling an endpoint to zero (DELETE /endpoints/{name}/scale-to-zero)."""
    cli = _cli(ctx)
    reply = cli.call("DELETE", f"/endpoints/{endpoint}/scale-to-zero")
    cli.show(reply, _scaling_started)


@scale_app.command("wake")
def scale_wake(ctx: typer.Context, endpoint: Annotated[str, typer.Argument(help="endpoint name")]) -> None:
    """Wake a scaled-in endpoint now, instead of waiting for the alarm (POST /endpoints/{name}/wake)."""
    cli = _cli(ctx)
    reply = cli.call("POST", f"/endpoints/{endpoint}/wake")
    cli.show(reply, lambda r: Group(Text(str(r.get("reason"))), _scaling_started(r.get("operation") or {})))


@scale_app.command("park")
def scale_park(ctx: typer.Context, endpoint: Annotated[str, typer.Argument(help="endpoint name")]) -> None:
    """Park a classic endpoint now: record it exactly, then delete it (POST /endpoints/{name}/park)."""
    cli = _cli(ctx)
    reply = cli.call("POST", f"/endpoints/{endpoint}/park")
    cli.show(reply, _scaling_started)


@scale_app.command("status")
def scale_status(ctx: typer.Context, endpoint: Annotated[str, typer.Argument(help="endpoint name")]) -> None:
    """An endpoint's capacity and scale-to-zero state (GET /endpoints/{name})."""
    cli = _cli(ctx)
    reply = cli.call("GET", f"/endpoints/{endpoint}")
    cli.show(reply, render.endpoint)


@app.command()
def cost(
    ctx: typer.Context,
    days: Annotated[int, typer.Option("--days", min=1, max=90, help="how far back")] = 30,
) -> None:
    """What idle hours cost and what scale to zero saved, per endpoint (GET /reports/cost)."""
    cli = _cli(ctx)
    report = cli.call("GET", "/reports/cost", query={"days": days})

    def view(r: Mapping[str, Any]) -> RenderableType:
        endpoints = r.get("endpoints")
        if isinstance(endpoints, list) and endpoints:
            columns = ("endpoint", "kind", "instance_type", "hours", "idle_hours", "idle_cost_usd", "zero_hours")
            title = (
                f"cost over {days} days: idle ${r.get('idle_cost_usd')}, saved by scale to zero ${r.get('saved_usd')}"
                f" (prices of {r.get('price_snapshot')})"
            )
            return render.rows(endpoints, (*columns, "saved_usd"), title=title)
        return render.record(r, title=f"cost over {days} days")

    cli.show(report, view)


# -------------------------------------------------------------------------------------------- catalog
_CATALOG_COLUMNS = ("name", "vcpus", "memory_gib", "accelerator", "price_usd_per_hour")


def _instance_row(item: Mapping[str, Any]) -> dict[str, Any]:
    accelerator = item.get("accelerator") or {}
    kind = accelerator.get("model") if isinstance(accelerator, dict) else None
    if kind:
        count = accelerator.get("count", 1)
        memory = accelerator.get("memory_gib_total") or accelerator.get("memory_gib")
        kind = f"{count} x {kind}" + (f" ({memory:g} GiB)" if isinstance(memory, int | float) else "")
    return {**item, "accelerator": kind or "-"}


@catalog_app.command("list")
def catalog_list(
    ctx: typer.Context,
    accelerator_kind: Annotated[str | None, typer.Option("--kind", help="gpu, inferentia, trainium or none")] = None,
    accelerator_model: Annotated[str | None, typer.Option("--accelerator", help="e.g. A10G, L4, H100")] = None,
    family: Annotated[str | None, typer.Option("--family", help="e.g. g5")] = None,
    feature: Annotated[str | None, typer.Option("--feature", help="e.g. shadow_tests")] = None,
    architecture: Annotated[str | None, typer.Option("--arch", help="x86_64 or arm64")] = None,
    min_memory: Annotated[float | None, typer.Option("--min-accelerator-gib", min=0)] = None,
) -> None:
    """Instance types, filtered (GET /catalog/instances)."""
    cli = _cli(ctx)
    query = {
        "accelerator_kind": accelerator_kind,
        "accelerator_model": accelerator_model,
        "family": family,
        "feature": feature,
        "architecture": architecture,
        "min_accelerator_memory_gib": min_memory,
    }
    found = cli.call("GET", "/catalog/instances", query=query)
    cli.show(
        found,
        lambda f: render.rows(
            [_instance_row(t) for t in f.get("instance_types", [])],
            _CATALOG_COLUMNS,
            title=f"{f.get('count')} instance types",
        ),
    )


@catalog_app.command("show")
def catalog_show(ctx: typer.Context, instance_type: Annotated[str, typer.Argument(help="e.g. ml.g5.xlarge")]) -> None:
    """One instance type: accelerator, memory, price, SageMaker features (GET /catalog/instances/{type})."""
    cli = _cli(ctx)
    cli.show(cli.call("GET", f"/catalog/instances/{instance_type}"), lambda t: render.record(t, title=instance_type))


@catalog_app.command("fit")
def catalog_fit(
    ctx: typer.Context,
    model_gb: Annotated[float, typer.Argument(help="the model's size in GB")],
    tensor_parallel: Annotated[int, typer.Option("--tp", min=1, max=64, help="tensor-parallel degree")] = 1,
    overhead: Annotated[float, typer.Option("--overhead", min=0, max=5, help="KV cache & runtime share")] = 0.2,
    accelerator_kind: Annotated[str | None, typer.Option("--kind")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="rows to show (all with --json)")] = 15,
) -> None:
    """Instance types that hold a model of N GB, cheapest first (GET /catalog/fit)."""
    cli = _cli(ctx)
    query = {
        "model_gb": model_gb,
        "tensor_parallel": tensor_parallel,
        "overhead": overhead,
        "accelerator_kind": accelerator_kind,
    }
    fits = cli.call("GET", "/catalog/fit", query=query)

    def view(f: Mapping[str, Any]) -> RenderableType:
        items = list(f.get("fits", []))[:limit]
        columns = list(dict.fromkeys(k for item in items for k in item if not isinstance(item[k], dict | list)))
        return render.rows(items, columns, title=f"{f.get('count')} instance types hold {model_gb:g} GB")

    cli.show(fits, view)


# -------------------------------------------------------------------------------------------- results
@results_app.command("get")
def results_get(
    ctx: typer.Context, inference_id: Annotated[str, typer.Argument(help="the async inference id")]
) -> None:
    """An async inference's outcome, latency and, if it failed, the classified cause."""
    cli = _cli(ctx)
    result = cli.call("GET", f"/async-results/{inference_id}")
    cli.show(result, lambda r: render.record(r, title=inference_id))
    if result.get("status") == "FAILED":
        raise typer.Exit(ExitCode.FAILED)


# ------------------------------------------------------------------------------------------ deliveries
@delivery_app.command("list")
def delivery_list(
    ctx: typer.Context,
    group: Annotated[str, typer.Option("--group", "-g", help="the model package group")],
) -> None:
    """A model package group's deliveries (GET /deliveries?group=)."""
    cli = _cli(ctx)
    page = cli.call("GET", "/deliveries", query={"group": group})

    def view(p: Mapping[str, Any]) -> RenderableType:
        items = p.get("deliveries", p if isinstance(p, list) else [])
        columns = list(dict.fromkeys(k for d in items for k in d if not isinstance(d[k], dict | list)))
        return render.rows(items, columns or ["id"], title=f"deliveries of {group}")

    cli.show(page, view)


@delivery_app.command("show")
def delivery_show(ctx: typer.Context, delivery_id: Annotated[str, typer.Argument()]) -> None:
    """A delivery: its stages and where it stands (GET /deliveries/{id})."""
    cli = _cli(ctx)
    delivery = cli.call("GET", f"/deliveries/{delivery_id}")
    cli.show(delivery, lambda d: render.record(d, title=f"delivery {delivery_id}"))
    raise typer.Exit(outcome_code(delivery.get("status")))


@delivery_app.command("approve")
def delivery_approve(ctx: typer.Context, delivery_id: Annotated[str, typer.Argument()]) -> None:
    """Approve a delivery stage that waits for a human."""
    cli = _cli(ctx)
    reply = cli.call("POST", f"/deliveries/{delivery_id}/approve")
    cli.show(reply, lambda d: f"delivery {delivery_id} approved ({d.get('status')})")


@delivery_app.command("cancel")
def delivery_cancel(ctx: typer.Context, delivery_id: Annotated[str, typer.Argument()]) -> None:
    """Cancel a delivery (stages not started yet never run)."""
    cli = _cli(ctx)
    reply = cli.call("POST", f"/deliveries/{delivery_id}/cancel")
    cli.show(reply, lambda d: f"delivery {delivery_id} cancelled ({d.get('status')})")


def run() -> None:
    """The console script."""
    app(prog_name="inferops")
