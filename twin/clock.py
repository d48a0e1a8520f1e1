"""One virtual clock for the whole twin: Wait states, retries, the SageMaker simulator, metrics and alarms.

Virtual time runs `speed` times faster than wall time, and, when `auto_advance` is on, jumps straight to
the next deadline (timer or sleeper) whenever no registered activity is busy and somebody is waiting for
time to pass (a thread in `sleep` with a finite deadline: a Wait state, a task timeout, a test calling
`sleep`): a one-hour canary then plays out in the time its handlers take to run. Pending timers alone do
not pull time forward, so recurring timers (schedules, metric ticks) never make an idle twin race ahead.
Callbacks scheduled with `call_at` run on the clock's own driver thread, in virtual-time order.

Jumping is only safe if no work is "in flight" between two threads. Three tools close those gaps:

- `hold()`: a busy token that one thread takes and another releases (a thread being started, a message
  being handed over). `ActivityThread` does this for the threads it starts.
- `sleep(seconds, interrupt=...)` registers the sleeper with the clock: once its interrupt is set, the
  sleeper counts as runnable and time does not jump until it has woken and is busy again.
- `VirtualEvent`: a `threading.Event` whose `wait(timeout)` is measured on the virtual clock, whose `set()`
  wakes sleepers at once, and whose pulses (`set(); clear()`) are never lost.

The module also offers *time as seen through the clock* (`set_time_source`, `VirtualDatetime`,
`time_module`, `datetime_module`, `shim_time_globals`): the twin substitutes them for `time`/`datetime`
in the modules it does not own (the product's handlers and layer, moto's Step Functions interpreter), so
their notion of "now" is virtual without any change to their code.
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from types import ModuleType
from typing import Any, ClassVar, Protocol

DEFAULT_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()


class Interrupt(Protocol):
    """Anything a sleeper can be woken by (a `threading.Event`, a `VirtualEvent`, a predicate object)."""

    def is_set(self) -> bool: ...


@dataclass(order=True)
class Timer:
    """A scheduled callback; `cancel()` before it fires to drop it."""

    when: float
    seq: int
    fn: Callable[[], None] = field(compare=False)
    name: str = field(default="", compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(eq=False)
class _Sleeper:
    deadline: float
    interrupt: Interrupt | None
    prompt: bool  # the interrupt calls clock.notify() when set: no need to poll it

    def runnable(self, now: float) -> bool:
        return now >= self.deadline or (self.interrupt is not None and self.interrupt.is_set())


class Hold:
    """A busy token not tied to a thread: time cannot jump until it is released (idempotent)."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._released = False
        self._mutex = threading.Lock()

    def release(self) -> None:
        with self._mutex:
            if self._released:
                return
            self._released = True
        self._clock._release_hold()

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class VirtualClock:
    def __init__(self, start: float = DEFAULT_START, speed: float = 60.0, auto_advance: bool = True) -> None:
        self._speed = speed
        self.auto_advance = auto_advance
        self._lock = threading.Condition(threading.RLock())
        self._anchor_virtual = start
        self._anchor_real = time.monotonic()
        self._frozen = False
        self._timers: list[Timer] = []
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()
        self._busy = 0
        self._local = threading.local()
        self._running = False
        self._driver: threading.Thread | None = None
        self.errors: list[BaseException] = []

    # ------------------------------------------------------------------ reading time
    def now(self) -> float:
        with self._lock:
            if self._frozen:
                return self._anchor_virtual
            return self._anchor_virtual + (time.monotonic() - self._anchor_real) * self._speed

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=UTC)

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        """Changing the speed rebases the anchors, so the virtual past does not move."""
        with self._lock:
            self._anchor_virtual = self.now()
            self._anchor_real = time.monotonic()
            self._speed = value
            self._lock.notify_all()

    # ------------------------------------------------------------------ moving time
    def advance(self, seconds: float) -> None:
        """Jump forward; due callbacks and sleepers run on their threads right after."""
        with self._lock:
            self._anchor_virtual += max(0.0, seconds)
            self._lock.notify_all()

    def _jump_to(self, when: float) -> None:
        with self._lock:
            now = self.now()
            if when > now:
                self._anchor_virtual += when - now
            self._lock.notify_all()

    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    def _set_busy(self, busy: bool) -> None:
        """Count the current thread as busy or not; nested activities of one thread count once."""
        with self._lock:
            depth = self._depth() + (1 if busy else -1)
            self._local.depth = depth
            if busy and depth == 1:
                self._busy += 1
            elif not busy and depth == 0:
                self._busy -= 1
                self._lock.notify_all()

    @contextmanager
    def activity(self) -> Iterator[None]:
        """Mark the current work busy: virtual time does not jump while any activity runs."""
        self._set_busy(True)
        try:
            yield
        finally:
            self._set_busy(False)

    @contextmanager
    def idle(self) -> Iterator[None]:
        """Inside an activity, mark a blocking wait (a task token, an event) as idle time.

        Prefer `sleep(..., interrupt=)` / `wait(event)` when another thread will wake you: a plain idle
        block leaves a gap between the wake-up and this thread being busy again, in which time may jump.
        """
        depth = self._depth()
        for _ in range(depth):
            self._set_busy(False)
        try:
            yield
        finally:
            for _ in range(depth):
                self._set_busy(True)

    def hold(self) -> Hold:
        """A busy token to hand to another thread (see the module docstring)."""
        with self._lock:
            self._busy += 1
        return Hold(self)

    def _release_hold(self) -> None:
        with self._lock:
            self._busy -= 1
            self._lock.notify_all()

    def wait_quiet(self, timeout_real: float) -> bool:
        """Wait (wall time) until no activity but the caller's is busy; False on timeout. For shutdowns."""
        deadline = time.monotonic() + timeout_real
        with self._lock:
            mine = 1 if self._depth() else 0
            while self._busy > mine:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(timeout=min(remaining, 0.05))
            return True

    def sleeping(self) -> int:
        """How many threads are blocked in `sleep`/`wait` (for tests that must know a waiter is waiting)."""
        with self._lock:
            return len(self._sleepers)

    def notify(self) -> None:
        """Wake sleepers so they re-check their interrupts (called by `VirtualEvent.set`)."""
        with self._lock:
            self._lock.notify_all()

    # ------------------------------------------------------------------ waiting
    def sleep(self, seconds: float, interrupt: Interrupt | None = None) -> bool:
        """Block until `seconds` of virtual time pass; True if `interrupt` was set first.

        `seconds` may be `math.inf` (wait for the interrupt only). While blocked the thread is idle; once the
        interrupt is set or the deadline passed, it counts as runnable, so time stops jumping until it runs.
        """
        if math.isnan(seconds):
            raise ValueError("sleep(nan)")
        if threading.current_thread() is self._driver:
            raise RuntimeError("a clock callback cannot sleep on the clock it drives: start an ActivityThread")
        prompt = bool(getattr(interrupt, "wakes_clock", False))
        with self._lock:
            sleeper = _Sleeper(self.now() + max(0.0, seconds), interrupt, prompt)
            self._sleepers.append(sleeper)
            depth = self._depth()
            if depth:
                self._local.depth = 0
                self._busy -= 1
            self._lock.notify_all()
            try:
                while True:
                    if interrupt is not None and interrupt.is_set():
                        return True
                    now = self.now()
                    if now >= sleeper.deadline:
                        return False
                    real = (sleeper.deadline - now) / self._speed if self._speed > 0 and not self._frozen else 1.0
                    cap = 0.5 if interrupt is None or prompt else 0.02
                    self._lock.wait(timeout=min(max(real, 0.0005), cap))
            finally:
                if depth:
                    self._local.depth = depth
                    self._busy += 1
                self._sleepers.remove(sleeper)
                self._lock.notify_all()

    def wait(self, event: Interrupt, timeout: float | None = None) -> bool:
        """Wait for `event` on virtual time (idle meanwhile); True if it is set."""
        return self.sleep(math.inf if timeout is None else timeout, interrupt=event) or event.is_set()

    def call_at(self, when: float, fn: Callable[[], None], name: str = "") -> Timer:
        timer = Timer(when, next(self._seq), fn, name)
        with self._lock:
            heapq.heappush(self._timers, timer)
            self._lock.notify_all()
        return timer

    def call_later(self, delay: float, fn: Callable[[], None], name: str = "") -> Timer:
        return self.call_at(self.now() + max(0.0, delay), fn, name)

    def pending(self) -> list[Timer]:
        with self._lock:
            return sorted(t for t in self._timers if not t.cancelled)

    # ------------------------------------------------------------------ the driver
    def start(self) -> None:
        with self._lock:
            if self._running:
                return
            if self._frozen:
                self._anchor_real = time.monotonic()
                self._frozen = False
            self._running = True
        self._driver = threading.Thread(target=self._drive, name="virtual-clock", daemon=True)
        self._driver.start()

    def stop(self) -> None:
        """Stop firing timers and freeze time: leftover sleepers never time out after the twin is gone."""
        with self._lock:
            self._anchor_virtual = self.now()
            self._anchor_real = time.monotonic()
            self._frozen = True
            self._running = False
            self._lock.notify_all()
        if self._driver is not None and self._driver is not threading.current_thread():
            self._driver.join(timeout=5)

    def _next_deadline(self) -> float | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        candidates = [self._timers[0].when] if self._timers else []
        candidates += [s.deadline for s in self._sleepers if s.deadline != math.inf]
        return min(candidates) if candidates else None

    def _drive(self) -> None:
        while True:
            with self._lock:
                if not self._running:
                    return
                due = self._pop_due()
                if due is None:
                    now = self.now()
                    runnable = any(s.runnable(now) for s in self._sleepers)
                    waited_on = any(s.deadline != math.inf for s in self._sleepers)
                    deadline = self._next_deadline()
                    jump = self.auto_advance and waited_on and not runnable and self._busy <= 0
                    if deadline is not None and jump:
                        self._jump_to(deadline)
                        continue
                    if deadline is None or self._speed <= 0:
                        wait = 0.05
                    else:
                        wait = max(0.0005, min(0.05, (deadline - now) / self._speed))
                    self._lock.wait(timeout=wait)
                    continue
            self._fire(due)

    def _pop_due(self) -> Timer | None:
        now = self.now()
        while self._timers:
            timer = self._timers[0]
            if timer.cancelled:
                heapq.heappop(self._timers)
                continue
            if timer.when <= now:
                return heapq.heappop(self._timers)
            return None
        return None

    def _fire(self, timer: Timer) -> None:
        with self.activity():
            try:
                timer.fn()
            except Exception as error:  # a broken callback must not stop the clock; tests check `errors`
                self.errors.append(error)


# ---------------------------------------------------------------------- threads and events on the clock
class _Pulse:
    """True once its event is set, or was pulsed (set then cleared) after the wait began."""

    wakes_clock = True

    def __init__(self, event: VirtualEvent) -> None:
        self._event = event
        self._seen = event.generation

    def is_set(self) -> bool:
        return self._event.is_set() or self._event.generation != self._seen


class VirtualEvent(threading.Event):
    """A `threading.Event` measured on the virtual clock (see the module docstring).

    Bind a clock per instance (`VirtualEvent(clock)`) or per subclass (`bind_event(clock)`); without one it
    behaves as a plain Event.
    """

    clock: ClassVar[VirtualClock | None] = None
    wakes_clock = True

    def __init__(self, clock: VirtualClock | None = None) -> None:
        super().__init__()
        self._clock = clock if clock is not None else type(self).clock
        self._generation = 0
        self._generation_lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self._generation

    def watch(self) -> Interrupt:
        """An interrupt that fires when this event is next set (or is set now): take it *before* checking
        the condition you wait for, so a set() in between is not missed."""
        return _Pulse(self)

    def set(self) -> None:
        with self._generation_lock:
            self._generation += 1
        super().set()
        if self._clock is not None:
            self._clock.notify()

    def wait(self, timeout: float | None = None) -> bool:
        if self._clock is None:
            return super().wait(timeout)
        pulse = _Pulse(self)
        self._clock.sleep(math.inf if timeout is None else timeout, interrupt=pulse)
        return pulse.is_set()


class ActivityThread(threading.Thread):
    """A thread that keeps virtual time still from `start()` until it runs, runs inside an activity, and
    whose `join(timeout)` is measured on the virtual clock (idle while joining).

    Daemon by default: a thread waiting on a stopped (frozen) clock waits forever and must not block the
    interpreter's exit."""

    clock: ClassVar[VirtualClock | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._vclock: VirtualClock | None = kwargs.pop("clock", None) or type(self).clock
        kwargs.setdefault("daemon", True)
        super().__init__(*args, **kwargs)
        self._hold: Hold | None = None
        self._finished = VirtualEvent(self._vclock)

    def start(self) -> None:
        if self._vclock is not None:
            self._hold = self._vclock.hold()
        try:
            super().start()
        except BaseException:
            if self._hold is not None:
                self._hold.release()
            raise

    def run(self) -> None:
        if self._vclock is None:
            try:
                super().run()
            finally:
                self._finished.set()
            return
        with self._vclock.activity():
            if self._hold is not None:
                self._hold.release()
            try:
                super().run()
            finally:
                self._finished.set()

    def join(self, timeout: float | None = None) -> None:
        if self._vclock is None or threading.current_thread() is self:
            super().join(timeout)
            return
        if self._finished.wait(timeout):
            super().join()


def bind_event(clock: VirtualClock) -> type[VirtualEvent]:
    """A `VirtualEvent` subclass whose no-argument constructor uses `clock` (to replace `threading.Event`)."""
    return type("Event", (VirtualEvent,), {"clock": clock})


def bind_thread(clock: VirtualClock) -> type[ActivityThread]:
    """An `ActivityThread` subclass bound to `clock` (to replace `threading.Thread`)."""
    return type("Thread", (ActivityThread,), {"clock": clock})


class ThreadingShim(ModuleType):
    """Stands in for the `threading` module inside a module we patch: Thread and Event on the clock."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__("threading")
        self.Thread = bind_thread(clock)
        self.Event = bind_event(clock)

    def __getattr__(self, name: str) -> Any:
        return getattr(threading, name)


# ---------------------------------------------------------------------- time seen through the clock
_source: VirtualClock | None = None
_real_time = time.time
_real_sleep = time.sleep
_real_datetime = datetime
_real_date = date


def set_time_source(clock: VirtualClock | None) -> None:
    """Make the shims below read `clock` (None: real time). One twin per process, as moto's mock is."""
    global _source  # noqa: PLW0603 - the shims are process-wide, like the modules they replace
    _source = clock


def time_source() -> VirtualClock | None:
    return _source


def current_time() -> float:
    clock = _source
    return clock.now() if clock is not None else _real_time()


def _virtual_sleep(seconds: float) -> None:
    clock = _source
    if clock is None:
        _real_sleep(seconds)
    else:
        clock.sleep(seconds)


def _virtual_time_ns() -> int:
    return int(current_time() * 1e9)


def _virtual_gmtime(secs: float | None = None) -> time.struct_time:
    return time.gmtime(current_time() if secs is None else secs)


def _virtual_localtime(secs: float | None = None) -> time.struct_time:
    return time.localtime(current_time() if secs is None else secs)


class _DatetimeMeta(type):
    """isinstance/issubclass against the shim behave as against the real class."""

    real: type

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, cls.real)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, cls.real)


class VirtualDatetime(datetime, metaclass=_DatetimeMeta):
    """`datetime` whose now()/utcnow()/today() read the time source; it builds only real datetimes."""

    real = _real_datetime

    def __new__(cls, *args: Any, **kwargs: Any) -> datetime:  # type: ignore[misc]
        return _real_datetime(*args, **kwargs)

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
        return _real_datetime.fromtimestamp(current_time(), tz)

    @classmethod
    def utcnow(cls) -> datetime:  # type: ignore[override]
        return _real_datetime.fromtimestamp(current_time(), UTC).replace(tzinfo=None)

    @classmethod
    def today(cls) -> datetime:  # type: ignore[override]
        return _real_datetime.fromtimestamp(current_time())

    @classmethod
    def fromtimestamp(cls, t: float, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
        return _real_datetime.fromtimestamp(t, tz)

    @classmethod
    def fromisoformat(cls, date_string: str) -> datetime:  # type: ignore[override]
        return _real_datetime.fromisoformat(date_string)

    @classmethod
    def strptime(cls, date_string: str, format: str) -> datetime:  # type: ignore[override]
        return _real_datetime.strptime(date_string, format)

    @classmethod
    def combine(cls, *args: Any, **kwargs: Any) -> datetime:  # type: ignore[override]
        return _real_datetime.combine(*args, **kwargs)


class VirtualDate(date, metaclass=_DatetimeMeta):
    """`date` whose today() reads the time source."""

    real = _real_date

    def __new__(cls, *args: Any, **kwargs: Any) -> date:  # type: ignore[misc]
        return _real_date(*args, **kwargs)

    @classmethod
    def today(cls) -> date:  # type: ignore[override]
        return _real_date.fromtimestamp(current_time())


class _TimeModule(ModuleType):
    def __init__(self) -> None:
        super().__init__("time")
        self.time = current_time
        self.time_ns = _virtual_time_ns
        self.sleep = _virtual_sleep
        self.gmtime = _virtual_gmtime
        self.localtime = _virtual_localtime

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class _DatetimeModule(ModuleType):
    def __init__(self) -> None:
        super().__init__("datetime")
        self.datetime = VirtualDatetime
        self.date = VirtualDate

    def __getattr__(self, name: str) -> Any:
        return getattr(sys.modules["datetime"], name)


time_module: ModuleType = _TimeModule()
"""Stands in for `time` in a patched module: time(), time_ns(), sleep(), gmtime(), localtime() are virtual."""
datetime_module: ModuleType = _DatetimeModule()
"""Stands in for `datetime` in a patched module: datetime and date read the time source."""

_REPLACEMENTS: dict[int, object] = {
    id(time): time_module,
    id(sys.modules["datetime"]): datetime_module,
    id(_real_datetime): VirtualDatetime,
    id(_real_date): VirtualDate,
    id(time.time): current_time,
    id(time.time_ns): _virtual_time_ns,
    id(time.sleep): _virtual_sleep,
}


def shim_time_globals(module: ModuleType) -> list[tuple[str, object]]:
    """Replace the module's references to time/datetime by the virtual ones; returns what to restore."""
    replaced: list[tuple[str, object]] = []
    namespace = module.__dict__
    for name, value in list(namespace.items()):
        substitute = _REPLACEMENTS.get(id(value))
        if substitute is not None and not name.startswith("__"):
            replaced.append((name, value))
            namespace[name] = substitute
    return replaced


def restore_globals(module: ModuleType, replaced: list[tuple[str, object]]) -> None:
    for name, value in replaced:
        module.__dict__[name] = value
