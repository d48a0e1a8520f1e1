"""One virtual clock for the whole twin: Wait states, retries, the SageMaker simulator, metrics and alarms.

Virtual time runs `speed` times faster than wall time, and, when `auto_advance` is on, jumps straight to
the next deadline whenever no registered activity is busy (every execution is sleeping or waiting for an
event): a one-hour canary then plays out in the time its handlers take to run. Callbacks scheduled with
`call_at` run on the clock's own driver thread, in virtual-time order.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

DEFAULT_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()


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


class VirtualClock:
    def __init__(self, start: float = DEFAULT_START, speed: float = 60.0, auto_advance: bool = True) -> None:
        self.speed = speed
        self.auto_advance = auto_advance
        self._lock = threading.Condition(threading.RLock())
        self._anchor_virtual = start
        self._anchor_real = time.monotonic()
        self._timers: list[Timer] = []
        self._sleepers: list[float] = []
        self._seq = itertools.count()
        self._busy = 0
        self._local = threading.local()
        self._running = False
        self._driver: threading.Thread | None = None
        self.errors: list[BaseException] = []

    # ------------------------------------------------------------------ reading time
    def now(self) -> float:
        with self._lock:
            return self._anchor_virtual + (time.monotonic() - self._anchor_real) * self.speed

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=UTC)

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
        """Inside an activity, mark a blocking wait (a task token, an event) as idle time."""
        depth = self._depth()
        for _ in range(depth):
            self._set_busy(False)
        try:
            yield
        finally:
            for _ in range(depth):
                self._set_busy(True)

    # ------------------------------------------------------------------ waiting
    def sleep(self, seconds: float, interrupt: threading.Event | None = None) -> bool:
        """Block until `seconds` of virtual time pass; True if `interrupt` was set first."""
        deadline = self.now() + max(0.0, seconds)
        with self.idle(), self._lock:
            heapq.heappush(self._sleepers, deadline)
            self._lock.notify_all()
            try:
                while self.now() < deadline:
                    if interrupt is not None and interrupt.is_set():
                        return True
                    remaining = (deadline - self.now()) / self.speed
                    self._lock.wait(timeout=min(max(remaining, 0.0005), 0.05))
                return False
            finally:
                self._sleepers.remove(deadline)
                heapq.heapify(self._sleepers)

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
            self._running = True
        self._driver = threading.Thread(target=self._drive, name="virtual-clock", daemon=True)
        self._driver.start()

    def stop(self) -> None:
        with self._lock:
            self._running = False
            self._lock.notify_all()
        if self._driver is not None and self._driver is not threading.current_thread():
            self._driver.join(timeout=5)

    def _next_deadline(self) -> float | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        candidates = [self._timers[0].when] if self._timers else []
        candidates += self._sleepers[:1]
        return min(candidates) if candidates else None

    def _drive(self) -> None:
        while True:
            with self._lock:
                if not self._running:
                    return
                due = self._pop_due()
                if due is None:
                    deadline = self._next_deadline()
                    if deadline is not None and self.auto_advance and self._busy <= 0:
                        self._jump_to(deadline)
                        continue
                    wait = 0.05 if deadline is None else max(0.0005, min(0.05, (deadline - self.now()) / self.speed))
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
