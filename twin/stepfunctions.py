"""moto's Step Functions interpreter, run on the virtual clock.

moto (5.2.5, `execute_state_machine` on) interprets ASL in background threads and waits in real time.
`StepFunctionsOnClock.install()` patches it, from the outside, so that:

- every thread the interpreter starts is an `ActivityThread` (busy while it runs; time cannot jump between
  `start()` and its first instruction) and every `threading.Event` it creates is a `VirtualEvent` (waits
  with a timeout - task `TimeoutSeconds`, `HeartbeatSeconds`, `.waitForTaskToken` callbacks, program
  `TimeoutSeconds`, joins - are measured on the virtual clock and are idle time);
- Wait states (`Seconds`, `SecondsPath`, `Timestamp`, `TimestampPath`, JSONata) sleep on the clock and
  stop at once when the execution is stopped; Retry intervals (`time.sleep` in the retrier) sleep on the
  clock; `.sync` polling sleeps on the clock;
- execution start/stop dates, state entered times and history event timestamps are virtual, so tests can
  measure durations from `describe_execution` / `get_execution_history`;
- JSONata works: moto's `_eval_jsonata` hook (a stub) points at `jsonata-python`, with `$now()` and
  `$millis()` on the virtual clock; this also makes JSONPath `Assign` and `$variables` work, which moto
  evaluates through the same hook;
- a task with HeartbeatSeconds but no TimeoutSeconds may run 99999999 s, as on AWS (moto caps it at 60 s);
- a callback answered before moto has set up the task's heartbeat wait is not lost (moto would wait out
  HeartbeatSeconds and report a heartbeat timeout: a race any fast SendTaskSuccess hits);
- a heartbeat timeout is the error States.HeartbeatTimeout, which `States.Timeout` catchers also match, as
  on AWS (moto reports States.Timeout, so a `Catch: [States.HeartbeatTimeout]` fallback never ran);
- an execution started without a name gets a UUID, as on AWS (moto names them all "None", so a second
  unnamed start of the same machine fails with ExecutionAlreadyExists);
- SendTaskFailure's `cause` reaches the task's Catch (moto's response handler drops it);
- SendTaskSuccess/Failure/Heartbeat answer as AWS does: TaskDoesNotExist for a token whose task is over
  (already answered, or its execution ended), TaskTimedOut for a task that timed out, InvalidToken for a
  token never issued (moto answers 200 for a second SendTaskSuccess on the same token).

`PATCHED` lists every moto internal touched; `tests/twin/test_stepfunctions.py` pins them so that a moto
upgrade fails loudly instead of silently running in real time.
"""

from __future__ import annotations

import importlib
import json
import math
import uuid
from datetime import UTC, datetime
from typing import Any, cast

from twin.clock import (
    ThreadingShim,
    VirtualClock,
    bind_event,
    bind_thread,
    current_time,
    datetime_module,
    time_module,
)
from twin.lambdas import Patches

P = "moto.stepfunctions.parser"
A = f"{P}.asl"

THREADING_MODULES = (
    f"{A}.component.program.program",
    f"{A}.component.state.exec.execute_state",
    f"{A}.component.state.exec.state_task.service.state_task_service_callback",
    f"{A}.component.state.exec.state_parallel.branch_worker",
    f"{A}.component.state.exec.state_parallel.branches_decl",
    f"{A}.component.state.exec.state_map.iteration.inline_iteration_component",
    f"{A}.component.state.exec.state_map.iteration.job",
    f"{A}.component.state.exec.state_map.iteration.itemprocessor.map_run_record",
    f"{A}.eval.environment",
)
"""Modules whose global `threading` becomes a `ThreadingShim` (Thread and Event on the clock)."""
THREAD_NAMES = ((f"{P}.backend.execution_worker", "Thread"), (f"{A}.component.state.exec.execute_state", "Thread"))
EVENT_NAMES = ((f"{A}.eval.callback.callback", "Event"),)
TIME_MODULES = (
    f"{A}.component.common.retry.retrier_decl",
    f"{A}.component.state.exec.state_task.service.state_task_service_callback",
)
"""Modules whose global `time` becomes the virtual `time` (their sleeps run on the clock)."""
DATETIME_MODULES = (
    f"{P}.models",
    f"{P}.backend.execution",
    f"{P}.backend.state_machine",
    f"{A}.component.state.state",
    f"{A}.component.state.exec.state_parallel.branches_decl",
    f"{A}.component.state.exec.state_map.iteration.itemprocessor.map_run_record",
)
"""Modules whose global `datetime` reads the virtual clock (execution dates, EnteredTime, map runs)."""
METHODS = (
    (f"{A}.component.state.wait.wait_function.wait_function", "WaitFunction", "_wait_interval"),
    (f"{A}.component.state.wait.wait_function.timestamp", "Timestamp", "_get_wait_seconds"),
    (f"{A}.eval.event.event_manager", "EventManager", "_get_current_timestamp"),
    (f"{A}.eval.callback.callback", "CallbackPoolManager", "add"),
    (f"{A}.eval.callback.callback", "CallbackEndpoint", "setup_heartbeat_endpoint"),
    (f"{A}.component.state.exec.execute_state", "ExecutionState", "from_state_props"),
    (f"{A}.component.state.exec.state_task.state_task", "StateTask", "_from_error"),
    (f"{A}.component.common.error_name.error_equals_decl", "ErrorEqualsDecl", "_eval_body"),
    (f"{P}.models", "StepFunctionsParserBackend", "send_task_success"),
    (f"{P}.models", "StepFunctionsParserBackend", "send_task_failure"),
    (f"{P}.models", "StepFunctionsParserBackend", "send_task_heartbeat"),
    (f"{P}.models", "StepFunctionsParserBackend", "start_execution"),
    (f"{P}.models", "StepFunctionsParserBackend", "_validate_definition"),
    ("moto.stepfunctions.responses", "StepFunctionResponse", "send_task_failure"),
)
JSONATA_HOOK = (f"{A}.jsonata.jsonata", "_eval_jsonata")

PATCHED = {
    "threading": THREADING_MODULES,
    "Thread": THREAD_NAMES,
    "Event": EVENT_NAMES,
    "time": TIME_MODULES,
    "datetime": DATETIME_MODULES,
    "methods": METHODS,
    "jsonata": JSONATA_HOOK,
}


_VALID_DEFINITIONS: set[str] = set()


def _module(name: str) -> Any:
    return importlib.import_module(name)


def patched_class(class_name: str) -> Any:
    """The class of METHODS with this name (looked up by name, so the table's order does not matter)."""
    module = next(module for module, owner, _ in METHODS if owner == class_name)
    return getattr(_module(module), class_name)


def evaluate_jsonata(expression: str) -> Any:
    """moto's JSONata hook: evaluate a fully composed expression (variables already bound) in Python."""
    import jsonata  # type: ignore[import-untyped]
    from moto.stepfunctions.parser.asl.jsonata.jsonata import JSONataException

    now = current_time()
    try:
        compiled = jsonata.Jsonata(expression)
        compiled.register_lambda("now", lambda: _iso_millis(now))
        compiled.register_lambda("millis", lambda: int(now * 1000))
        result = compiled.evaluate(None)
    except Exception as error:  # moto turns this into States.QueryEvaluationError
        raise JSONataException("UNKNOWN", str(error)) from error
    return json.loads(json.dumps(result))


def _iso_millis(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Stopped:
    """Interrupts a Wait state when its execution stops (moto pulses the env's VirtualEvent then)."""

    wakes_clock = True

    def __init__(self, env: Any) -> None:
        self._env = env

    def is_set(self) -> bool:
        return not self._env.is_running()


class StepFunctionsOnClock:
    """Install/uninstall the patches described in the module docstring, for one clock."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.issued_tokens: set[str] = set()
        self._patches = Patches()

    def install(self) -> None:
        clock = self.clock
        patches = self._patches
        shim = ThreadingShim(clock)
        for name in THREADING_MODULES:
            patches.set(_module(name), "threading", shim)
        for name, attribute in THREAD_NAMES:
            patches.set(_module(name), attribute, bind_thread(clock))
        for name, attribute in EVENT_NAMES:
            patches.set(_module(name), attribute, bind_event(clock))
        for name in TIME_MODULES:
            patches.set(_module(name), "time", time_module)
        for name in DATETIME_MODULES:
            patches.set(_module(name), "datetime", datetime_module)

        wait_function = patched_class("WaitFunction")
        timestamp = patched_class("Timestamp")
        event_manager = patched_class("EventManager")
        pool = patched_class("CallbackPoolManager")
        execution_state = patched_class("ExecutionState")
        state_task = patched_class("StateTask")
        error_equals = patched_class("ErrorEqualsDecl")
        backend = patched_class("StepFunctionsParserBackend")

        def _wait_interval(state: Any, env: Any, wait_seconds: int) -> None:
            if wait_seconds > 0:
                clock.sleep(wait_seconds, interrupt=_Stopped(env))

        original_failure_event = timestamp._create_failure_event

        def _get_wait_seconds(state: Any, env: Any) -> int:
            from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
                FailureEventException,
            )

            state.string.eval(env=env)
            text: str = env.stack.pop()
            when = state._from_timestamp_string(timestamp=text)
            if when is None:
                raise FailureEventException(original_failure_event(state, env, text))
            return int(when.replace(tzinfo=UTC).timestamp() - clock.now())

        def _get_current_timestamp() -> datetime:
            return datetime.fromtimestamp(clock.now(), tz=UTC)

        issued = self.issued_tokens
        original_add = pool.add

        def add(manager: Any, callback_id: str) -> Any:
            issued.add(callback_id)
            return original_add(manager, callback_id)

        patches.set(wait_function, "_wait_interval", _wait_interval)
        patches.set(timestamp, "_get_wait_seconds", _get_wait_seconds)
        patches.set(event_manager, "_get_current_timestamp", staticmethod(_get_current_timestamp))
        patches.set(pool, "add", add)

        endpoint_class = patched_class("CallbackEndpoint")
        original_setup = endpoint_class.setup_heartbeat_endpoint

        def setup_heartbeat_endpoint(endpoint: Any, heartbeat_seconds: int) -> Any:
            """A SendTaskSuccess that arrives before the heartbeat wait is set up (a Lambda that answers at
            once) must not be lost: moto would then wait out HeartbeatSeconds and report a timeout."""
            heartbeat = original_setup(endpoint, heartbeat_seconds)
            if endpoint.get_outcome() is not None:
                heartbeat.notify()
            return heartbeat

        patches.set(endpoint_class, "setup_heartbeat_endpoint", setup_heartbeat_endpoint)

        timeouts = _module("moto.stepfunctions.parser.asl.component.common.timeouts.timeout")
        original_props = execution_state.from_state_props

        def from_state_props(state: Any, state_props: Any) -> None:
            """AWS: a task without TimeoutSeconds may run 99999999 s, HeartbeatSeconds or not (moto: 60 s)."""
            original_props(state, state_props)
            timeout = state.timeout
            if state.heartbeat is not None and isinstance(timeout, timeouts.TimeoutSeconds) and timeout.is_default:
                state.timeout = timeouts.TimeoutSeconds(timeout_seconds=timeouts.TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS)

        patches.set(execution_state, "from_state_props", from_state_props)
        self._heartbeat_errors(patches, state_task, error_equals)
        for method in ("send_task_success", "send_task_failure", "send_task_heartbeat"):
            patches.set(backend, method, self._checked(getattr(backend, method)))
        original_start = backend.start_execution

        def start_execution(sfn: Any, state_machine_arn: str, name: str | None = None, *args: Any, **kw: Any) -> Any:
            """AWS names an unnamed execution with a UUID (moto names every one of them "None")."""
            return original_start(sfn, state_machine_arn, name or str(uuid.uuid4()), *args, **kw)

        patches.set(backend, "start_execution", start_execution)
        responses = patched_class("StepFunctionResponse")

        def send_task_failure(response: Any) -> Any:
            """AWS hands the failure's `cause` to the task's Catch (moto's response handler drops it)."""
            response.stepfunction_backend.send_task_failure(
                response._get_param("taskToken"), error=response._get_param("error"), cause=response._get_param("cause")
            )
            from moto.core.responses import EmptyResult

            return EmptyResult()

        patches.set(responses, "send_task_failure", send_task_failure)
        original_validate = backend._validate_definition

        def _validate_definition(definition: str) -> None:
            """Parsing ASL costs ~40 ms a machine; each twin creates every machine: remember the valid ones."""
            if definition not in _VALID_DEFINITIONS:
                original_validate(definition)
                _VALID_DEFINITIONS.add(definition)

        patches.set(backend, "_validate_definition", staticmethod(_validate_definition))
        patches.set(_module(JSONATA_HOOK[0]), JSONATA_HOOK[1], evaluate_jsonata)

    @staticmethod
    def _heartbeat_errors(patches: Patches, state_task: Any, error_equals: Any) -> None:
        """AWS names a heartbeat timeout States.HeartbeatTimeout, which a States.Timeout catcher also matches
        (moto reports States.Timeout, so a `Catch: [States.HeartbeatTimeout]` fallback never runs)."""
        from moto.stepfunctions.parser.api import HistoryEventType, TaskTimedOutEventDetails
        from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent
        from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
        from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
            StatesErrorNameType,
        )
        from moto.stepfunctions.parser.asl.eval.callback.callback import HeartbeatTimeoutError

        heartbeat = StatesErrorName(typ=StatesErrorNameType.StatesHeartbeatTimeout)
        timeout = StatesErrorName(typ=StatesErrorNameType.StatesTimeout)
        original_from_error = state_task._from_error
        original_eval = error_equals._eval_body

        def _from_error(state: Any, env: Any, ex: Exception) -> Any:
            if not isinstance(ex, HeartbeatTimeoutError):
                return original_from_error(state, env, ex)
            return FailureEvent(
                env=env,
                error_name=StatesErrorName(typ=StatesErrorNameType.StatesHeartbeatTimeout),
                event_type=HistoryEventType.TaskTimedOut,
                event_details=cast(
                    Any, {"taskTimedOutEventDetails": TaskTimedOutEventDetails(error=heartbeat.error_name)}
                ),
            )

        def _eval_body(decl: Any, env: Any) -> None:
            if env.stack and env.stack[-1] == heartbeat and timeout in decl.error_names:
                env.stack.pop()
                env.stack.append(True)
                return
            original_eval(decl, env)

        patches.set(state_task, "_from_error", _from_error)
        patches.set(error_equals, "_eval_body", _eval_body)

    def _checked(self, original: Any) -> Any:
        issued = self.issued_tokens

        def checked(backend: Any, task_token: str, *args: Any, **kwargs: Any) -> Any:
            from moto.stepfunctions.parser.api import ExecutionStatus, InvalidToken, TaskDoesNotExist, TaskTimedOut

            endpoint = None
            for execution in backend._get_executions(ExecutionStatus.RUNNING):
                env = getattr(execution.exec_worker, "env", None)
                endpoint = env.callback_pool_manager.get(task_token) if env is not None else None
                if endpoint is not None:
                    break
            if endpoint is None:
                if task_token in issued:
                    raise TaskDoesNotExist("Task does not exist anymore", "TaskDoesNotExist")
                invalid: Any = InvalidToken  # moto.core's, with an untyped __init__
                raise invalid()
            if endpoint._notify_event.is_set():
                if endpoint.get_outcome() is None:
                    raise TaskTimedOut("Task Timed Out: 'Provided task does not exist anymore'", "TaskTimedOut")
                raise TaskDoesNotExist("Task does not exist anymore", "TaskDoesNotExist")
            return original(backend, task_token, *args, **kwargs)

        return checked

    def uninstall(self) -> None:
        self._patches.restore()


def stop_running_executions(client: Any) -> int:
    """Stop every running execution (the twin does so before it shuts moto down): no thread is left to act."""
    stopped = 0
    for machine in client.list_state_machines()["stateMachines"]:
        pages = client.get_paginator("list_executions").paginate(
            stateMachineArn=machine["stateMachineArn"], statusFilter="RUNNING"
        )
        for page in pages:
            for execution in page["executions"]:
                client.stop_execution(executionArn=execution["executionArn"], cause="twin shut down")
                stopped += 1
    return stopped


def virtual_duration(description: dict[str, Any]) -> float:
    """Seconds between an execution's startDate and stopDate (virtual; inf while it runs)."""
    stop = description.get("stopDate")
    if stop is None:
        return math.inf
    return float((stop - description["startDate"]).total_seconds())
