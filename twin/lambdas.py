"""The real Lambda handlers, run in-process as Lambda would run them, without Docker.

Each function of the template is its real `app.py` (loaded once under its own module name, its layers on
`sys.path`), invoked with its environment variables, a realistic context object and its timeout measured
on the virtual clock. Every invocation path reaches the same `LambdaRuntime.invoke`: the twin's own calls,
boto3 `lambda.invoke` against moto (so Step Functions `lambda:invoke` tasks), SNS subscriptions, SQS event
sources, EventBridge rules and schedules.

Environment variables are process-global, and invocations of *different* functions may run at the same
time (a Step Functions task while an event is delivered). `os.environ` therefore gets a thread-local
overlay while the twin runs: during an invocation, its thread reads the function's variables first, then
the process's; other threads see nothing of it. Invocations of the *same* function are serialised (one
warm container per function: module globals such as Powertools' resolver are not thread-safe), and the
wait for that container is idle time on the clock, so it cannot deadlock with virtual sleeps.

The product's notion of time is virtual without the product knowing: once loaded, every module of the
functions and layers (and every product module imported later) gets its `time`/`datetime` references
replaced by the clock's shims (`twin.clock.shim_time_globals`). We patch names at this boundary rather than
pass `clock=` to `inferops.storage.Repository`, because the handlers build their own repositories (and
other code reads `datetime.now()` directly): patching the boundary covers all of them at once.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import re
import sys
import threading
import time as _time
import traceback
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from twin.clock import ActivityThread, VirtualClock, VirtualEvent, restore_globals, shim_time_globals

if TYPE_CHECKING:
    from twin.faults import Faults
    from twin.template import FunctionSpec, Template

ROOT = Path(__file__).resolve().parents[1]
LAYER = ROOT / "layers" / "shared"
ASYNC_RETRY_DELAYS = (60.0, 120.0)
"""Lambda retries a failed asynchronous invocation after about one, then two more minutes."""


def load_function(name: str) -> ModuleType:
    """Import functions/<name>/app.py once (every function's module is called app.py)."""
    if str(LAYER) not in sys.path:
        sys.path.insert(0, str(LAYER))
    return _load_module(ROOT / "functions" / name, "app", f"functions_{name}_app")


def _load_module(code_dir: Path, module: str, module_name: str) -> ModuleType:
    if module_name in sys.modules:
        return sys.modules[module_name]
    relative = Path(*module.split("."))
    candidates = [code_dir / f"{relative}.py", code_dir / relative / "__init__.py"]
    path = next((c for c in candidates if c.exists()), None)
    if path is None:
        raise FileNotFoundError(f"{code_dir}/{relative}.py")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(str(path))
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = loaded
    sys.path.insert(0, str(code_dir))  # the function's own folder is on the path while it imports, as in Lambda
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        del sys.modules[module_name]
        raise
    finally:
        sys.path.remove(str(code_dir))
    return loaded


def module_name_for(code_dir: Path, module: str) -> str:
    """functions/<name>/app.py keeps the name `load_function` gives it; others get a unique name."""
    if code_dir.parent == ROOT / "functions" and module == "app":
        return f"functions_{code_dir.name}_app"
    slug = re.sub(r"\W+", "_", str(code_dir.relative_to(ROOT) if code_dir.is_relative_to(ROOT) else code_dir))
    return f"twin_fn_{slug.strip('_')}_{module.replace('.', '_')}"


# ---------------------------------------------------------------------- os.environ, per thread
class _OverlayEnviron(os._Environ[str]):
    """`os.environ` whose reads see the current thread's invocation variables first (see module docstring)."""

    _local = threading.local()

    @classmethod
    def layers(cls) -> list[dict[str, str]]:
        stack: list[dict[str, str]] | None = getattr(cls._local, "stack", None)
        if stack is None:
            stack = []
            cls._local.stack = stack
        return stack

    def _top(self, key: str) -> dict[str, str] | None:
        for layer in reversed(type(self).layers()):
            if key in layer:
                return layer
        return None

    def __getitem__(self, key: str) -> str:
        layer = self._top(key)
        return layer[key] if layer is not None else super().__getitem__(key)

    def __setitem__(self, key: str, value: str) -> None:
        layer = self._top(key)
        if layer is not None:
            layer[key] = value
        else:
            super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        layer = self._top(key)
        if layer is not None:
            del layer[key]
        else:
            super().__delitem__(key)

    def __contains__(self, key: object) -> bool:
        return (isinstance(key, str) and self._top(key) is not None) or super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        seen = set()
        for key in super().__iter__():
            seen.add(key)
            yield key
        for layer in type(self).layers():
            for key in list(layer):
                if key not in seen:
                    seen.add(key)
                    yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)


_environ_users = 0
_environ_lock = threading.Lock()


def _install_environ() -> None:
    global _environ_users  # noqa: PLW0603 - os.environ is process-wide
    with _environ_lock:
        _environ_users += 1
        if _environ_users == 1:
            os.environ.__class__ = _OverlayEnviron


def _uninstall_environ() -> None:
    global _environ_users  # noqa: PLW0603 - os.environ is process-wide
    with _environ_lock:
        _environ_users -= 1
        if _environ_users == 0:
            os.environ.__class__ = os._Environ


@contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """While the block runs, this thread's `os.environ` reads see `variables` over the process env."""
    stack = _OverlayEnviron.layers()
    stack.append(dict(variables))
    try:
        yield
    finally:
        stack.pop()


# ---------------------------------------------------------------------- the context object
@dataclass
class LambdaContext:
    """What Lambda passes as `context` (the attributes Powertools and handlers read)."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    timeout: float
    clock: VirtualClock = field(repr=False)
    started: float = 0.0
    started_wall: float = field(default_factory=_time.perf_counter, repr=False)
    function_version: str = "$LATEST"
    identity: Any = None
    client_context: Any = None
    tenant_id: str | None = None

    def elapsed(self) -> float:
        """Seconds the invocation has run, on the virtual clock, with its busy time counted at 1x.

        While a handler computes, no jump can happen, but virtual time still flows at `clock.speed`: at
        speed 60 one wall second of work would count as a minute and time out an API call. So busy (wall)
        time counts once, and what the clock added beyond it (virtual sleeps, jumps) counts fully.
        """
        wall = _time.perf_counter() - self.started_wall
        virtual = self.clock.now() - self.started
        return max(0.0, virtual - (self.clock.speed - 1.0) * wall)

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the timeout (0 once past)."""
        return max(0, int((self.timeout - self.elapsed()) * 1000))


class FunctionError(Exception):
    """A function returned an error payload (Lambda's FunctionError "Unhandled")."""

    def __init__(self, function: str, payload: Mapping[str, Any]) -> None:
        super().__init__(f"{function}: {payload.get('errorType', 'Error')}: {payload.get('errorMessage', '')}")
        self.function = function
        self.payload = dict(payload)

    @property
    def error_type(self) -> str:
        return str(self.payload.get("errorType", ""))


@dataclass
class Invocation:
    """One invocation, as recorded by the runtime (times are virtual seconds)."""

    function: str
    request_id: str
    source: str
    invocation_type: str
    event: Any
    payload: Any = None
    error: str | None = None  # "Unhandled" when the function failed
    started: float = 0.0
    duration: float = 0.0  # as Lambda bills it: busy time at 1x plus virtual waits (see LambdaContext.elapsed)
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def result(self) -> Any:
        if self.error is not None:
            raise FunctionError(self.function, self.payload)
        return self.payload


class _Slot:
    """One warm container: invocations of a function run one at a time; waiting for it is idle time."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.released = VirtualEvent(clock)

    @contextmanager
    def held(self) -> Iterator[None]:
        while True:
            watch = self.released.watch()
            if self.lock.acquire(blocking=False):
                break
            self.clock.sleep(math.inf, interrupt=watch)
        try:
            yield
        finally:
            self.lock.release()
            self.released.set()
            self.released.clear()


# ---------------------------------------------------------------------- the runtime
class LambdaRuntime:
    """Every function of the template, invocable in-process (see the module docstring)."""

    def __init__(
        self,
        template: Template,
        clock: VirtualClock,
        faults: Faults | None = None,
        *,
        region: str = "us-east-1",
    ) -> None:
        self.template = template
        self.clock = clock
        self.faults = faults
        self.region = region
        self.functions: dict[str, FunctionSpec] = dict(template.functions)
        self.invocations: list[Invocation] = []
        self._by_name = {spec.name: lid for lid, spec in self.functions.items()}
        self._by_name.update({spec.arn: lid for lid, spec in self.functions.items()})
        self._slots = {lid: _Slot(clock) for lid in self.functions}
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {}
        self._lock = threading.Lock()
        self._product_roots = sorted(
            {str(spec.code_dir) for spec in self.functions.values()}
            | {str(layer) for spec in self.functions.values() for layer in spec.layers}
        )
        self._shimmed: dict[str, list[tuple[str, object]]] = {}
        self._modules_seen = 0
        self._installed = False
        self.on_failure: Callable[[FunctionSpec, Invocation, int], None] | None = None
        """Called when an async invocation failed its last attempt (the twin sends the OnFailure record)."""

    # -------------------------------------------------------------- lifecycle
    def install(self) -> None:
        """Put layers on sys.path, overlay os.environ and shim time in product modules already imported."""
        if self._installed:
            return
        for spec in self.functions.values():
            for layer in spec.layers:
                if str(layer) not in sys.path:
                    sys.path.insert(0, str(layer))
        _install_environ()
        self._installed = True
        self.shim_product_modules()

    def uninstall(self) -> None:
        if not self._installed:
            return
        for name, replaced in self._shimmed.items():
            module = sys.modules.get(name)
            if module is not None:
                restore_globals(module, replaced)
        self._shimmed.clear()
        self._modules_seen = 0
        _uninstall_environ()
        self._installed = False

    def shim_product_modules(self) -> None:
        """Virtual time for every imported module under a function's folder or a layer (once each)."""
        if len(sys.modules) == self._modules_seen:
            return
        with self._lock:  # invocations run concurrently: shim each module once, or its originals are lost
            pending = False
            for name, module in list(sys.modules.items()):
                if name in self._shimmed or module is None:
                    continue
                path = getattr(module, "__file__", None)
                if path and any(path.startswith(root + os.sep) for root in self._product_roots):
                    if getattr(getattr(module, "__spec__", None), "_initializing", False):
                        # another thread is still executing it: shimming now would hand its pydantic models,
                        # defined further down, the virtual datetime (no schema); the next call shims it
                        pending = True
                        continue
                    self._shimmed[name] = shim_time_globals(module)
            self._modules_seen = -1 if pending else len(sys.modules)

    # -------------------------------------------------------------- lookups
    def logical_id(self, function: str) -> str:
        """A function by logical id, deployed name or ARN (qualifiers dropped)."""
        if function in self.functions:
            return function
        bare = re.sub(r"^(arn:aws:lambda:[^:]+:[^:]+:function:[^:]+):.*$", r"\1", function)
        try:
            return self._by_name[bare]
        except KeyError:
            raise KeyError(f"no function {function!r}; have {sorted(self.functions)}") from None

    def spec(self, function: str) -> FunctionSpec:
        return self.functions[self.logical_id(function)]

    def environment_of(self, function: str) -> dict[str, str]:
        """The variables Lambda would set for this function (reserved ones win over the template's)."""
        spec = self.spec(function)
        log_group = f"/aws/lambda/{spec.name}"
        return {
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon in the twin; the template may override
            **spec.environment,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": log_group,
            "AWS_LAMBDA_LOG_STREAM_NAME": f"2026/01/05/[$LATEST]{uuid.uuid5(uuid.NAMESPACE_DNS, spec.name).hex}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "_HANDLER": spec.handler,
            "TZ": ":UTC",
        }

    def handler(self, function: str) -> Callable[[Any, Any], Any]:
        """The handler callable (loads the module on first use, inside the function's environment)."""
        logical_id = self.logical_id(function)
        found = self._handlers.get(logical_id)
        if found is not None:
            return found
        spec = self.functions[logical_id]
        module_path, _, attribute = spec.handler.rpartition(".")
        for layer in spec.layers:
            if str(layer) not in sys.path:
                sys.path.insert(0, str(layer))
        with environment(self.environment_of(logical_id)):
            module = _load_module(spec.code_dir, module_path, module_name_for(spec.code_dir, module_path))
        handler = getattr(module, attribute, None)
        if not callable(handler):
            raise AttributeError(f"{spec.code_dir}/{module_path}.py has no handler {attribute!r}")
        self.shim_product_modules()
        self._handlers[logical_id] = handler
        return handler  # type: ignore[no-any-return]

    # -------------------------------------------------------------- invoking
    def invoke(
        self,
        function: str,
        event: Any,
        *,
        source: str = "direct",
        invocation_type: str = "RequestResponse",
    ) -> Invocation:
        """Run one invocation to completion in this thread (busy on the clock) and record it."""
        logical_id = self.logical_id(function)
        spec = self.functions[logical_id]
        request_id = str(uuid.uuid4())
        record = Invocation(logical_id, request_id, source, invocation_type, event)
        with self.clock.activity(), self._slots[logical_id].held():
            record.started = self.clock.now()
            wall = _time.perf_counter()
            context = LambdaContext(
                function_name=spec.name,
                invoked_function_arn=spec.arn,
                memory_limit_in_mb=spec.memory,
                aws_request_id=request_id,
                log_group_name=f"/aws/lambda/{spec.name}",
                log_stream_name=f"2026/01/05/[$LATEST]{request_id.replace('-', '')}",
                timeout=spec.timeout,
                clock=self.clock,
                started=record.started,
                started_wall=wall,
            )
            with environment(self.environment_of(logical_id)):
                record.payload, record.error = self._run(logical_id, event, context)
            record.duration = context.elapsed()
            record.wall_seconds = _time.perf_counter() - wall
            if record.error is None and record.duration > spec.timeout:
                record.error = "Unhandled"
                record.payload = {
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"RequestId: {request_id} Error: Task timed out after {spec.timeout:.2f} seconds",
                }
            with self._lock:  # still busy: whoever waits on the clock sees the record once time moves on
                self.invocations.append(record)
        return record

    def _run(self, logical_id: str, event: Any, context: LambdaContext) -> tuple[Any, str | None]:
        spec = self.functions[logical_id]
        try:
            crash = self.faults.take_crash(logical_id, spec.name) if self.faults is not None else None
            if crash is not None:  # what Lambda reports when the runtime process dies mid-invocation
                return {
                    "errorType": "Runtime.ExitError",
                    "errorMessage": f"RequestId: {context.aws_request_id} Error: Runtime exited with error: "
                    f"exit status 1 ({crash})",
                }, "Unhandled"
            handler = self.handler(logical_id)
            self.shim_product_modules()
            result = handler(event, context)
        except Exception as error:
            return _error_payload(error, context.aws_request_id), "Unhandled"
        try:
            return json.loads(json.dumps(result)), None
        except (TypeError, ValueError) as error:
            return {"errorType": "Runtime.MarshalError", "errorMessage": f"Unable to marshal response: {error}"}, (
                "Unhandled"
            )

    def call(self, function: str, event: Any, *, source: str = "direct") -> Any:
        """Invoke and return the handler's result; raise `FunctionError` if it failed."""
        return self.invoke(function, event, source=source).result()

    def invoke_async(self, function: str, event: Any, *, source: str, delay: float = 0.0) -> None:
        """An asynchronous (Event) invocation: queued on the clock, run in its own thread, retried on error
        after ~1 and ~2 minutes (the function's EventInvokeConfig MaximumRetryAttempts, default 2); then
        `on_failure` (its OnFailure destination)."""
        logical_id = self.logical_id(function)
        retries = self.functions[logical_id].async_retries

        def attempt(number: int) -> None:
            record = self.invoke(logical_id, event, source=source, invocation_type="Event")
            if record.error is not None and number < retries:
                wait = ASYNC_RETRY_DELAYS[min(number, len(ASYNC_RETRY_DELAYS) - 1)]
                self.clock.call_later(wait, lambda: _spawn(number + 1), name=f"retry {logical_id}")
            elif record.error is not None and self.on_failure is not None:
                self.on_failure(self.functions[logical_id], record, number + 1)

        def _spawn(number: int) -> None:
            ActivityThread(
                target=attempt, args=(number,), name=f"lambda-{logical_id}", daemon=True, clock=self.clock
            ).start()

        self.clock.call_later(delay, lambda: _spawn(0), name=f"invoke {logical_id}")

    def of(self, function: str) -> list[Invocation]:
        logical_id = self.logical_id(function)
        with self._lock:
            return [i for i in self.invocations if i.function == logical_id]

    # -------------------------------------------------------------- moto
    def register_in_moto(self, iam: Any, lambda_client: Any) -> None:
        """Create each function (and its role) in moto under its template name, so ARNs resolve."""
        trust = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ],
            }
        )
        existing = {r["RoleName"] for r in iam.list_roles()["Roles"]}
        for spec in self.functions.values():
            if spec.role_name not in existing:
                iam.create_role(RoleName=spec.role_name, AssumeRolePolicyDocument=trust)
                existing.add(spec.role_name)
            lambda_client.create_function(
                FunctionName=spec.name,
                Runtime=spec.runtime,
                Role=spec.role_arn,
                Handler=spec.handler,
                Code={"ZipFile": _dummy_zip(spec.handler)},
                Timeout=spec.timeout,
                MemorySize=spec.memory,
                Environment={"Variables": spec.environment},
                Architectures=spec.architectures,
            )


def _error_payload(error: BaseException, request_id: str) -> dict[str, Any]:
    """The payload Lambda's Python runtime returns for an unhandled exception (the twin's frames left out)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(_TWIN_DIR)]
    return {
        "errorMessage": str(error),
        "errorType": type(error).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(frames),
    }


_TWIN_DIR = str(Path(__file__).resolve().parent) + os.sep


def _dummy_zip(handler: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        module, _, function = handler.rpartition(".")
        archive.writestr(f"{module.replace('.', '/')}.py", f"def {function}(event, context):\n    return None\n")
    return buffer.getvalue()


# ---------------------------------------------------------------------- patching moto
class Patches:
    """Attribute patches that can all be undone, in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[object, str, object]] = []

    def set(self, owner: object, name: str, value: object) -> None:
        self._undo.append((owner, name, owner.__dict__[name] if name in vars(owner) else _ABSENT))
        setattr(owner, name, value)

    def restore(self) -> None:
        while self._undo:
            owner, name, value = self._undo.pop()
            if value is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


_ABSENT = object()


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    for key, value in dict(headers).items():
        if str(key).lower() == name:
            return str(value)
    return None


def _parse_payload(body: Any) -> Any:
    if isinstance(body, bytes):
        body = body.decode()
    if isinstance(body, str):
        return json.loads(body) if body.strip() else {}
    return {} if body is None else body


class MotoLambdaBridge:
    """Routes moto's Lambda invocation paths to the in-process runtime.

    - `LambdaFunction._invoke_lambda` (used by every synchronous path: Invoke, Step Functions tasks, moto's
      own event sources): the in-process handler instead of Docker.
    - `LambdaFunction.invoke`: `InvocationType=Event` becomes a real asynchronous invocation on the clock;
      a failed invocation reports FunctionError "Unhandled", as Lambda does (moto says "Handled").
    - SNS `Subscription.publish` to a lambda endpoint: delivered asynchronously with the SNS record Lambda
      receives (topic, subscription, message id, subject, attributes, virtual timestamp), filter policy first.
    """

    def __init__(self, runtime: LambdaRuntime) -> None:
        self.runtime = runtime
        self._patches = Patches()

    def _ours(self, name: str) -> str | None:
        try:
            return self.runtime.logical_id(name)
        except KeyError:
            return None

    def install(self) -> None:
        from moto.awslambda.models import LambdaFunction
        from moto.sns.models import Subscription

        bridge = self
        runtime = self.runtime
        original_invoke_lambda = LambdaFunction._invoke_lambda
        original_invoke = LambdaFunction.invoke
        original_publish = Subscription.publish

        def _invoke_lambda(fn: Any, event: Any = None) -> tuple[str, bool, str]:
            logical_id = bridge._ours(fn.function_name)
            if logical_id is None:
                return original_invoke_lambda(fn, event)
            record = runtime.invoke(logical_id, _parse_payload(event), source="lambda:Invoke")
            return json.dumps(record.payload), record.error is not None, ""

        def invoke(fn: Any, body: Any, request_headers: Any, response_headers: Any) -> str | bytes:
            logical_id = bridge._ours(fn.function_name)
            if logical_id is None:
                return original_invoke(fn, body, request_headers, response_headers)
            kind = _header(request_headers, "x-amz-invocation-type") or "RequestResponse"
            if kind == "DryRun":
                return b""
            if kind == "Event":
                runtime.invoke_async(logical_id, _parse_payload(body), source="lambda:Invoke(Event)")
                return b""
            record = runtime.invoke(logical_id, _parse_payload(body), source="lambda:Invoke")
            if record.error is not None:
                response_headers["x-amz-function-error"] = record.error
            response_headers["x-amz-executed-version"] = "$LATEST"
            return json.dumps(record.payload).encode()

        def publish(sub: Any, message: str, message_id: str, *args: Any, **kwargs: Any) -> None:
            logical_id = bridge._ours(sub.endpoint) if sub.protocol == "lambda" else None
            if logical_id is None:
                original_publish(sub, message, message_id, *args, **kwargs)
                return
            names = ("subject", "message_attributes", "group_id", "deduplication_id", "message_structure")
            params = {**dict(zip(names, args, strict=False)), **kwargs}
            attributes = params.get("message_attributes") or {}
            matcher = sub._filter_policy_matcher
            if matcher is not None and not matcher.matches(attributes, message):
                return
            if params.get("message_structure") == "json":
                message = sub._parse_message_structure(message, sub.protocol)
            record = sns_record(
                topic_arn=sub.topic.arn,
                subscription_arn=sub.arn,
                message=message,
                message_id=message_id,
                subject=params.get("subject"),
                attributes=attributes,
                timestamp=runtime.clock.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            )
            runtime.invoke_async(logical_id, record, source=f"sns:{sub.topic.name}")

        self._patches.set(LambdaFunction, "_invoke_lambda", _invoke_lambda)
        self._patches.set(LambdaFunction, "invoke", invoke)
        self._patches.set(Subscription, "publish", publish)

    def uninstall(self) -> None:
        self._patches.restore()


def sns_record(
    *,
    topic_arn: str,
    subscription_arn: str,
    message: str,
    message_id: str,
    subject: str | None,
    attributes: Mapping[str, Any],
    timestamp: str,
) -> dict[str, Any]:
    """The event SNS sends a Lambda subscriber."""
    region = topic_arn.split(":")[3]
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": {
                    "Type": "Notification",
                    "MessageId": message_id,
                    "TopicArn": topic_arn,
                    "Subject": subject,
                    "Message": message,
                    "Timestamp": timestamp,
                    "SignatureVersion": "1",
                    "Signature": "EXAMPLE",
                    "SigningCertUrl": f"https://sns.{region}.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem",
                    "UnsubscribeUrl": f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={subscription_arn}",
                    "MessageAttributes": {k: {"Type": v["Type"], "Value": v["Value"]} for k, v in attributes.items()},
                },
            }
        ]
    }
