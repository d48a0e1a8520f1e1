"""Faults on demand, all in one place and all seeded: what the real cloud does to us on a bad day.

- Events (applied by the bus to every `put`): lost, duplicated (up to `max_copies`), delayed, reordered
  (a small random extra delay, so later events can overtake), at rates drawn from one seeded RNG; plus
  targeted one-shot faults for tests (`lose_next`, `duplicate_next`, `delay_next`), optionally restricted
  by an EventBridge pattern.
- Lambdas: `crash_once("EndpointEventsFunction")` makes the next invocation of that function fail as a
  crashed runtime does (errorType `Runtime.ExitError`; the handler never runs).
- SageMaker: the simulator owns throttling and 5xx; the configuration lives here so there is one place
  to set every fault. Contract for the simulator (`twin/sagemaker.py`):

      faults.sagemaker_errors = {"UpdateEndpoint": ("ThrottlingException", 0.2), "*": ("InternalFailure", 0.01)}

  maps an operation name (as in botocore, e.g. "UpdateEndpoint"; "*" for any) to (error code, rate).
  The simulator calls `faults.sagemaker_error("UpdateEndpoint")` once per call: it returns the error code
  to raise (and counts it) or None. Reading the dict directly is fine too.

`counts` tallies every injected fault (`event.lost`, `event.duplicated`, `lambda.crash.<fn>`,
`sagemaker.<Operation>.<Code>`, ...) for reports and assertions.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twin.bus import matches, validate_pattern


@dataclass
class EventFaults:
    """Rates (0..1) of event faults; `pattern` limits them to matching events (None: every event)."""

    lose: float = 0.0
    duplicate: float = 0.0
    max_copies: int = 2
    delay: float = 0.0
    delay_seconds: tuple[float, float] = (5.0, 60.0)
    reorder: float = 0.0
    reorder_window: float = 5.0
    pattern: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.pattern is not None:
            validate_pattern(self.pattern)
        if self.max_copies < 2:
            raise ValueError("max_copies must be at least 2")


@dataclass
class _OneShot:
    action: str  # "lose" | "duplicate" | "delay"
    pattern: Mapping[str, Any] | None
    remaining: int
    arg: float = 0.0


@dataclass
class _Crash:
    message: str
    remaining: int = 1


@dataclass
class Faults:
    """The twin's fault configuration and counters (see the module docstring)."""

    seed: int = 0
    events: EventFaults = field(default_factory=EventFaults)
    sagemaker_errors: dict[str, tuple[str, float]] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._one_shots: list[_OneShot] = []
        self._crashes: dict[str, _Crash] = {}

    # -------------------------------------------------------------- events
    def lose_next(self, pattern: Mapping[str, Any] | None = None, count: int = 1) -> None:
        self._add_one_shot(_OneShot("lose", pattern, count))

    def duplicate_next(self, pattern: Mapping[str, Any] | None = None, copies: int = 2, count: int = 1) -> None:
        self._add_one_shot(_OneShot("duplicate", pattern, count, float(copies)))

    def delay_next(self, seconds: float, pattern: Mapping[str, Any] | None = None, count: int = 1) -> None:
        self._add_one_shot(_OneShot("delay", pattern, count, seconds))

    def _add_one_shot(self, shot: _OneShot) -> None:
        if shot.pattern is not None:
            validate_pattern(shot.pattern)
        with self._lock:
            self._one_shots.append(shot)

    def event_delays(self, event: Mapping[str, Any]) -> list[float]:
        """Extra delays, one per copy to deliver: [] = lost, [0.0] = delivered once on time."""
        with self._lock:
            shot = self._take_one_shot(event)
            if shot is not None:
                return self._apply_one_shot(shot)
            cfg = self.events
            if cfg.pattern is not None and not matches(cfg.pattern, event):
                return [0.0]
            if cfg.lose and self.rng.random() < cfg.lose:
                self.counts["event.lost"] += 1
                return []
            copies = 1
            if cfg.duplicate and self.rng.random() < cfg.duplicate:
                copies = self.rng.randint(2, cfg.max_copies)
                self.counts["event.duplicated"] += 1
            delays = []
            for _ in range(copies):
                extra = 0.0
                if cfg.delay and self.rng.random() < cfg.delay:
                    extra += self.rng.uniform(*cfg.delay_seconds)
                    self.counts["event.delayed"] += 1
                if cfg.reorder and self.rng.random() < cfg.reorder:
                    extra += self.rng.uniform(0.0, cfg.reorder_window)
                    self.counts["event.reordered"] += 1
                delays.append(extra)
            return delays

    def _take_one_shot(self, event: Mapping[str, Any]) -> _OneShot | None:
        for shot in self._one_shots:
            if shot.pattern is None or matches(shot.pattern, event):
                shot.remaining -= 1
                if shot.remaining <= 0:
                    self._one_shots.remove(shot)
                return shot
        return None

    def _apply_one_shot(self, shot: _OneShot) -> list[float]:
        if shot.action == "lose":
            self.counts["event.lost"] += 1
            return []
        if shot.action == "duplicate":
            self.counts["event.duplicated"] += 1
            return [0.0] * int(shot.arg)
        self.counts["event.delayed"] += 1
        return [shot.arg]

    # -------------------------------------------------------------- lambdas
    def crash_once(self, function: str, message: str = "injected crash", times: int = 1) -> None:
        """The next `times` invocations of `function` (logical id or deployed name) crash (Runtime.ExitError)."""
        with self._lock:
            self._crashes[function] = _Crash(message, times)

    def take_crash(self, *names: str) -> str | None:
        """Called by the Lambda runtime for each invocation: the crash message if one is due."""
        with self._lock:
            for name in names:
                crash = self._crashes.get(name)
                if crash is None:
                    continue
                crash.remaining -= 1
                if crash.remaining <= 0:
                    del self._crashes[name]
                self.counts[f"lambda.crash.{names[0]}"] += 1
                return crash.message
        return None

    # -------------------------------------------------------------- sagemaker
    def sagemaker_error(self, operation: str) -> str | None:
        """The error code to inject for this call of `operation`, or None (see the module docstring)."""
        with self._lock:
            spec = self.sagemaker_errors.get(operation) or self.sagemaker_errors.get("*")
            if spec is None:
                return None
            code, rate = spec
            if self.rng.random() < rate:
                self.counts[f"sagemaker.{operation}.{code}"] += 1
                return code
            return None

    def report(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self.counts.items()))
