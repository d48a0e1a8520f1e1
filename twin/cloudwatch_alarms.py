"""Alarm evaluation for the twin: moto stores CloudWatch alarms but never evaluates them (local-tooling.md).

This module is pure logic over moto's stored data: an incremental index of moto's metric list (exact
dimension-set lookups, as CloudWatch does), statistics (incl. percentiles), a small metric-math evaluator,
AWS's M-of-N and TreatMissingData rules, and the exact text/JSON shapes AWS uses for state reasons, the
EventBridge "CloudWatch Alarm State Change" event and the SNS alarm notification. `twin/cloudwatch.py`
drives it on the virtual clock and runs the actions.

Event shape source (single-metric and metric-math samples, matched key for key):
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch-and-eventbridge.html
"""

from __future__ import annotations

import ast
import bisect
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

OK = "OK"
ALARM = "ALARM"
INSUFFICIENT_DATA = "INSUFFICIENT_DATA"

# Comparison operator -> (predicate, phrase used in AWS's state reason).
_COMPARISONS: dict[str, tuple[str, str]] = {
    "GreaterThanThreshold": (">", "greater than"),
    "GreaterThanOrEqualToThreshold": (">=", "greater than or equal to"),
    "LessThanThreshold": ("<", "less than"),
    "LessThanOrEqualToThreshold": ("<=", "less than or equal to"),
}
# Anomaly-detection operators need a model band; the twin leaves such alarms untouched.
UNSUPPORTED_COMPARISONS = frozenset(
    {"LessThanLowerOrGreaterThanUpperThreshold", "LessThanLowerThreshold", "GreaterThanUpperThreshold"}
)
BASIC_STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")

REGION_NAMES = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)",
    "ca-central-1": "Canada (Central)",
    "eu-west-1": "EU (Ireland)",
    "eu-west-2": "EU (London)",
    "eu-west-3": "EU (Paris)",
    "eu-central-1": "EU (Frankfurt)",
    "eu-north-1": "EU (Stockholm)",
    "eu-south-1": "EU (Milan)",
    "ap-south-1": "Asia Pacific (Mumbai)",
    "ap-northeast-1": "Asia Pacific (Tokyo)",
    "ap-northeast-2": "Asia Pacific (Seoul)",
    "ap-northeast-3": "Asia Pacific (Osaka)",
    "ap-southeast-1": "Asia Pacific (Singapore)",
    "ap-southeast-2": "Asia Pacific (Sydney)",
    "ap-east-1": "Asia Pacific (Hong Kong)",
    "sa-east-1": "South America (Sao Paulo)",
    "me-south-1": "Middle East (Bahrain)",
    "af-south-1": "Africa (Cape Town)",
}

SeriesKey = tuple[str, str, frozenset[tuple[str, str]]]


# ---------------------------------------------------------------------------------------------- formats
def java_double(value: float) -> str:
    """Format a number as Java's Double.toString does: CloudWatch's reason texts are written by Java."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e7:
        text = repr(float(value))
        return text if ("." in text or "e" in text) else text + ".0"
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = "".join(str(d) for d in digits)
    power = exponent + len(mantissa) - 1
    fraction = mantissa[1:] or "0"
    return f"{'-' if sign else ''}{mantissa[0]}.{fraction}E{power}"


def aws_timestamp(moment: datetime) -> str:
    """`2019-10-02T17:04:40.989+0000`: the timestamp format of alarm events, reason data and SNS bodies."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def reason_timestamp(epoch: float) -> str:
    """`02/10/19 16:59:00`: how a datapoint's time appears inside a state reason."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%d/%m/%y %H:%M:%S")


def epoch_of(moment: datetime) -> float:
    """moto stores naive UTC datetimes; requests may bring aware ones."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def naive_utc(epoch: float) -> datetime:
    """The datetime flavour moto keeps in its models (naive, UTC)."""
    return datetime.fromtimestamp(epoch, tz=UTC).replace(tzinfo=None)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# ---------------------------------------------------------------------------------------------- the index
@dataclass(frozen=True)
class Point:
    """One stored datum: a raw value (count 1) or a statistic set, with weighted samples for percentiles."""

    ts: float
    count: float
    total: float
    minimum: float
    maximum: float
    unit: str | None
    samples: tuple[tuple[float, float], ...]


def point_from_datum(datum: Any) -> Point:
    """Read a moto MetricDatum / MetricAggregatedDatum (plus the twin's `twin_samples` sidecar)."""
    ts = epoch_of(datum.timestamp)
    unit = datum.unit if isinstance(datum.unit, str) else None
    if hasattr(datum, "value"):
        value = float(datum.value)
        return Point(ts, 1.0, value, value, value, unit, ((value, 1.0),))
    count = float(datum.sample_count)
    total = float(datum.sum)
    samples: tuple[tuple[float, float], ...] = tuple(getattr(datum, "twin_samples", ()) or ())
    if not samples and count > 0:
        samples = ((total / count, count),)  # no raw values published: the average stands for all of them
    return Point(ts, count, total, float(datum.min), float(datum.max), unit, samples)


class MetricIndex:
    """Incremental, exact-dimension index over moto's flat (append-only) metric list.

    moto scans the whole list per query and matches dimension subsets; CloudWatch matches the exact
    dimension set. Reading only the tail that appeared since the last sync keeps evaluation O(log n).
    """

    def __init__(self) -> None:
        self._series: dict[SeriesKey, list[Point]] = {}
        self._times: dict[SeriesKey, list[float]] = {}
        self._source: int | None = None
        self._seen = 0

    def sync(self, metric_data: list[Any]) -> None:
        if self._source != id(metric_data) or len(metric_data) < self._seen:
            self._series.clear()
            self._times.clear()
            self._source = id(metric_data)
            self._seen = 0
        end = len(metric_data)
        for datum in metric_data[self._seen : end]:
            dims = frozenset((str(d.name), str(d.value)) for d in datum.dimensions)
            self.add((str(datum.namespace), str(datum.name), dims), point_from_datum(datum))
        self._seen = end

    def add(self, key: SeriesKey, point: Point) -> None:
        times = self._times.setdefault(key, [])
        series = self._series.setdefault(key, [])
        position = bisect.bisect_right(times, point.ts)
        times.insert(position, point.ts)
        series.insert(position, point)

    def points(
        self,
        namespace: str,
        name: str,
        dimensions: Mapping[str, str],
        start: float,
        end: float,
        unit: str | None = None,
    ) -> list[Point]:
        key = (namespace, name, frozenset(dimensions.items()))
        times = self._times.get(key)
        if not times:
            return []
        series = self._series[key]
        found = series[bisect.bisect_left(times, start) : bisect.bisect_left(times, end)]
        return [p for p in found if unit is None or p.unit == unit]

    def keys(self) -> list[SeriesKey]:
        return list(self._series)


def percentile(points: Iterable[Point], rank: float) -> float | None:
    """Weighted nearest-rank percentile over the points' samples."""
    samples = sorted(s for p in points for s in p.samples)
    total = sum(weight for _, weight in samples)
    if total <= 0:
        return None
    wanted = rank / 100.0 * total
    running = 0.0
    for value, weight in samples:
        running += weight
        if running >= wanted - 1e-9:
            return value
    return samples[-1][0]


def aggregate(points: Sequence[Point], statistic: str) -> float | None:
    """One statistic over the points of a period; None when the period has no data (missing)."""
    if not points:
        return None
    if statistic == "SampleCount":
        return sum(p.count for p in points)
    if statistic == "Sum":
        return sum(p.total for p in points)
    if statistic == "Average":
        count = sum(p.count for p in points)
        return sum(p.total for p in points) / count if count else None
    if statistic == "Minimum":
        return min(p.minimum for p in points)
    if statistic == "Maximum":
        return max(p.maximum for p in points)
    if statistic.startswith("p"):
        try:
            rank = float(statistic[1:])
        except ValueError:
            return None
        return percentile(points, rank)
    return None  # trimmed means, IQM...: not simulated


def supported_statistic(statistic: str) -> bool:
    if statistic in BASIC_STATISTICS:
        return True
    if statistic.startswith("p"):
        try:
            return 0.0 <= float(statistic[1:]) <= 100.0
        except ValueError:
            return False
    return False


# ---------------------------------------------------------------------------------------------- metric math
class MathError(ValueError):
    """An expression the twin's small metric-math evaluator does not support."""


_Series = list[float | None]
_FUNCTIONS = frozenset({"SUM", "AVG", "MIN", "MAX", "FILL", "ABS", "METRICS"})


def evaluate_expression(
    expression: str, series: Mapping[str, _Series], labels: Mapping[str, str], size: int
) -> _Series:
    """Evaluate a metric-math expression per period: arithmetic, METRICS(), SUM/AVG/MIN/MAX, FILL, ABS.

    Values align by period; arithmetic on a missing point gives a missing point, as CloudWatch's
    timestamp-aligned math does.
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise MathError(f"cannot parse {expression!r}") from error
    result = _math_node(tree.body, series, labels, size)
    if isinstance(result, float):
        return [result] * size
    if result and isinstance(result[0], list):
        raise MathError("the expression returns several time series")
    return [v if not isinstance(v, list) else None for v in result]


def _math_node(node: ast.AST, series: Mapping[str, _Series], labels: Mapping[str, str], size: int) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id not in series:
            raise MathError(f"unknown metric id {node.id}")
        return list(series[node.id])
    if isinstance(node, ast.List):
        return [_as_series(_math_node(e, series, labels, size), size) for e in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _elementwise(lambda a, _b: -a, _math_node(node.operand, series, labels, size), 0.0, size)
    if isinstance(node, ast.BinOp):
        left = _math_node(node.left, series, labels, size)
        right = _math_node(node.right, series, labels, size)
        operators: dict[type[ast.operator], Any] = {
            ast.Add: lambda a, b: a + b,
            ast.Sub: lambda a, b: a - b,
            ast.Mult: lambda a, b: a * b,
            ast.Div: lambda a, b: a / b if b else None,
            ast.Pow: lambda a, b: a**b,
        }
        operator = operators.get(type(node.op))
        if operator is None:
            raise MathError(f"operator {type(node.op).__name__} not supported")
        return _elementwise(operator, left, right, size)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        return _math_call(node.func.id, node.args, series, labels, size)
    raise MathError(f"unsupported expression element {ast.dump(node)}")


def _as_series(value: Any, size: int) -> _Series:
    if isinstance(value, float):
        return [value] * size
    return list(value)


def _elementwise(operator: Any, left: Any, right: Any, size: int) -> Any:
    if isinstance(left, float) and isinstance(right, float):
        result = operator(left, right)
        if result is None:
            raise MathError("division by zero")
        return float(result)
    lhs, rhs = _as_series(left, size), _as_series(right, size)
    return [None if a is None or b is None else operator(a, b) for a, b in zip(lhs, rhs, strict=True)]


def _math_call(
    name: str, args: list[ast.expr], series: Mapping[str, _Series], labels: Mapping[str, str], size: int
) -> Any:
    if name == "METRICS":
        wanted = ""
        if args:
            if not (isinstance(args[0], ast.Constant) and isinstance(args[0].value, str)):
                raise MathError("METRICS() takes a string")
            wanted = args[0].value
        return [list(values) for key, values in series.items() if wanted in labels.get(key, key)]
    if not args:
        raise MathError(f"{name} needs an argument")
    first = _math_node(args[0], series, labels, size)
    if name == "FILL":
        if len(args) != 2:
            raise MathError("FILL(series, value) only")
        fill = _math_node(args[1], series, labels, size)
        if not isinstance(fill, float):
            raise MathError("FILL value must be a number")
        return [fill if v is None else v for v in _as_series(first, size)]
    if name == "ABS":
        return _elementwise(lambda a, _b: abs(a), first, 0.0, size)
    group: list[_Series] = first if first and isinstance(first, list) and isinstance(first[0], list) else []
    if not group:
        return first  # SUM/AVG/MIN/MAX of one series: that series, period by period
    reducers: dict[str, Any] = {"SUM": sum, "MIN": min, "MAX": max, "AVG": lambda v: sum(v) / len(v)}
    result: _Series = []
    for index in range(size):
        present = [s[index] for s in group if s[index] is not None]
        result.append(float(reducers[name](present)) if present else None)
    return result


# ---------------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class Evaluation:
    """The outcome of one evaluation; `state` None means "keep the current state" (reasons only on a change)."""

    state: str | None
    reason: str
    reason_data: str
    datapoints: tuple[tuple[float, float], ...]  # the existing points evaluated: (period start, value), oldest first

    def present_values(self) -> list[float]:
        return [v for _, v in self.datapoints]


@dataclass(frozen=True)
class Decision:
    state: str | None  # None: keep the current state
    evaluated: tuple[int, ...]  # indexes (into the evaluation range) of the existing points used
    filled: int  # missing points filled in by TreatMissingData
    missing_as: str  # "Breaching" / "NonBreaching" when filled points were counted that way


def _stat_name(alarm: Any) -> str:
    return str(alarm.extended_statistic or alarm.statistic or "")


def alarm_period(alarm: Any) -> int | None:
    """The period CloudWatch evaluates: the alarm's own, or for metric math the queries' period."""
    if alarm.period:
        return int(alarm.period)
    periods = [int(q.period) for q in alarm.metric_data_queries if q.period]
    periods += [int(q.metric_stat.period) for q in alarm.metric_data_queries if q.metric_stat and q.metric_stat.period]
    return max(periods) if periods else None


def is_evaluable(alarm: Any) -> bool:
    """Composite and anomaly-detection alarms are stored but not simulated."""
    if alarm.rule is not None or alarm.threshold_metric_id:
        return False
    if alarm.comparison_operator not in _COMPARISONS or alarm.threshold is None:
        return False
    if alarm.metric_data_queries:
        return alarm_period(alarm) is not None
    return bool(alarm.metric_name) and supported_statistic(_stat_name(alarm)) and bool(alarm.period)


def evaluation_range(alarm: Any) -> int:
    """How many periods CloudWatch retrieves: more than EvaluationPeriods (AWS's example: 5 for 3).

    The exact count depends on the period and resolution and is not published; the twin uses N + 2.
    """
    return int(alarm.evaluation_periods or 1) + 2


def period_starts(alarm: Any, now: float) -> list[float]:
    """Start times of the evaluation range, ending at the last whole minute (10 s if high-res).

    AWS's reason data shows the window ending at the evaluation's minute (queryDate 17:04:40, period 300,
    startDate 16:59:00), not at an epoch-aligned boundary.
    """
    period = alarm_period(alarm) or 60
    grain = 60 if period >= 60 else 10
    end = math.floor(now / grain) * grain
    count = evaluation_range(alarm)
    return [end - (count - i) * period for i in range(count)]


def datapoints(alarm: Any, index: MetricIndex, starts: Sequence[float]) -> list[float | None]:
    period = alarm_period(alarm) or 60
    if not alarm.metric_data_queries:
        dims = {str(d.name): str(d.value) for d in alarm.dimensions}
        stat = _stat_name(alarm)
        return [
            aggregate(index.points(alarm.namespace, alarm.metric_name, dims, s, s + period, alarm.unit), stat)
            for s in starts
        ]
    series: dict[str, _Series] = {}
    labels: dict[str, str] = {}
    for query in alarm.metric_data_queries:
        if query.metric_stat is None:
            continue
        stat = query.metric_stat
        dims = {str(d.name): str(d.value) for d in stat.metric.dimensions}
        step = int(stat.period or period)
        series[query.id] = [
            aggregate(
                index.points(stat.metric.namespace, stat.metric.metric_name, dims, s, s + step, stat.unit), stat.stat
            )
            for s in starts
        ]
        labels[query.id] = query.label or query.id
    for query in alarm.metric_data_queries:  # expressions may build on each other, in declaration order
        if query.expression:
            series[query.id] = evaluate_expression(query.expression, series, labels, len(starts))
            labels[query.id] = query.label or query.id
    returned = [q for q in alarm.metric_data_queries if q.return_data in (True, "true", None) and q.id in series]
    if not returned:
        raise MathError("no query returns data")
    return series[returned[0].id]


def breaches(alarm: Any, value: float) -> bool:
    symbol = _COMPARISONS[alarm.comparison_operator][0]
    threshold = float(alarm.threshold)
    return {">": value > threshold, ">=": value >= threshold, "<": value < threshold, "<=": value <= threshold}[symbol]


def decide(alarm: Any, values: Sequence[float | None]) -> Decision:
    """AWS's rules over the evaluation range (oldest first), from "How alarm state is evaluated when data is
    missing" (awsdocs/amazon-cloudwatch-user-guide, AlarmThatSendsEmail.md), whose tables the tests replay:

    - at least N existing points: the N most recent ones decide; TreatMissingData is not needed;
    - fewer: the existing points plus N - existing filled-in points decide: `breaching` / `notBreaching`
      count them as such; `missing` gives INSUFFICIENT_DATA with no data, ALARM with M breaching points,
      OK once a point is not breaching, and otherwise (only breaching points, too few) ALARM if the metric
      stopped flowing (the newest period is missing), else INSUFFICIENT_DATA; `ignore` is `missing` with
      "keep the current state" where `missing` would not have enough real data.
    """
    needed_total = int(alarm.evaluation_periods or 1)
    needed = int(alarm.datapoints_to_alarm or needed_total)
    present = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(present) >= needed_total:
        recent = present[-needed_total:]
        bad = sum(1 for _, v in recent if breaches(alarm, v))
        return Decision(ALARM if bad >= needed else OK, tuple(i for i, _ in recent), 0, "")
    chosen = tuple(i for i, _ in present)
    filled = needed_total - len(present)
    bad = sum(1 for _, v in present if breaches(alarm, v))
    good = len(chosen) - bad
    mode = alarm.treat_missing_data or "missing"
    if mode == "breaching":
        return Decision(ALARM if bad + filled >= needed else OK, chosen, filled, "Breaching")
    if mode == "notBreaching":
        return Decision(ALARM if bad >= needed else OK, chosen, filled, "NonBreaching")
    ignore = mode == "ignore"
    if not chosen:
        return Decision(None if ignore else INSUFFICIENT_DATA, chosen, filled, "")
    if bad >= needed:
        return Decision(ALARM, chosen, filled, "")
    if good:
        return Decision(OK, chosen, filled, "")
    if ignore:
        return Decision(None, chosen, filled, "")
    return Decision(ALARM if values[-1] is None else INSUFFICIENT_DATA, chosen, filled, "")


def evaluate(alarm: Any, index: MetricIndex, now: float) -> Evaluation | None:
    """Evaluate one moto alarm at virtual time `now`; None if the alarm kind is not simulated."""
    if not is_evaluable(alarm):
        return None
    starts = period_starts(alarm, now)
    try:
        values = datapoints(alarm, index, starts)
    except MathError:
        return None
    decision = decide(alarm, values)
    chosen = tuple((starts[i], v) for i in decision.evaluated if (v := values[i]) is not None)
    if decision.state is None or decision.state == alarm.state_value:
        return Evaluation(decision.state, "", "", chosen)  # no transition: the reason is not needed
    window_start = chosen[0][0] if chosen else starts[-int(alarm.evaluation_periods or 1)]
    reason = state_reason(alarm, chosen, decision)
    return Evaluation(decision.state, reason, reason_data(alarm, chosen, window_start, now), chosen)


def state_reason(alarm: Any, chosen: Sequence[tuple[float, float]], decision: Decision) -> str:
    """The StateReason text, in AWS's wording (see the published samples cited at the top)."""
    count = int(alarm.evaluation_periods or 1)
    threshold = java_double(float(alarm.threshold))
    if decision.state == INSUFFICIENT_DATA:
        unknown = decision.filled
        return f"Insufficient Data: {_plural(unknown, 'datapoint')} {'was' if unknown == 1 else 'were'} unknown."
    if not chosen and decision.missing_as:
        return (
            f"Threshold Crossed: no datapoints were received for {_plural(count, 'period')} and "
            f"{_plural(count, 'missing datapoint')} {'was' if count == 1 else 'were'} treated as "
            f"[{decision.missing_as}]."
        )
    phrase = _COMPARISONS[alarm.comparison_operator][1]
    needed = int(alarm.datapoints_to_alarm or count)
    if decision.state == ALARM:
        shown = [(s, v) for s, v in chosen if breaches(alarm, v)]
        minimum, transition = needed, "OK -> ALARM"
    else:
        shown = [(s, v) for s, v in chosen if not breaches(alarm, v)]
        phrase = f"not {phrase}"
        minimum, transition = count - needed + 1, "ALARM -> OK"
    listed = ", ".join(f"{java_double(v)} ({reason_timestamp(s)})" for s, v in reversed(shown))
    verb = "was" if len(shown) == 1 else "were"
    return (
        f"Threshold Crossed: {len(shown)} out of the last {count} datapoints [{listed}] {verb} {phrase} the threshold "
        f"({threshold}) (minimum {_plural(minimum, 'datapoint')} for {transition} transition)."
    )


def reason_data(alarm: Any, chosen: Sequence[tuple[float, float]], window_start: float, now: float) -> str:
    """StateReasonData: same keys and order as AWS (`statistic` only for single-metric alarms)."""
    data: dict[str, Any] = {
        "version": "1.0",
        "queryDate": aws_timestamp(datetime.fromtimestamp(now, tz=UTC)),
        "startDate": aws_timestamp(datetime.fromtimestamp(window_start, tz=UTC)),
    }
    if not alarm.metric_data_queries:
        data["statistic"] = _stat_name(alarm)
    data["period"] = alarm_period(alarm)
    data["recentDatapoints"] = [v for _, v in chosen]
    data["threshold"] = float(alarm.threshold)
    return json.dumps(data, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------- payloads
@dataclass(frozen=True)
class StateSnapshot:
    """An alarm state as events and notifications report it."""

    value: str
    reason: str
    reason_data: str | None
    timestamp: datetime

    def as_event(self) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": self.reason}
        if self.reason_data and self.reason_data != "{}":
            body["reasonData"] = self.reason_data
        body["timestamp"] = aws_timestamp(self.timestamp)
        body["value"] = self.value
        return body


def metric_id(alarm: Any) -> str:
    """Single-metric alarms get a generated UUID id in events; derive it from the ARN so it is stable."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, str(alarm.alarm_arn)))


def _dimension_map(dimensions: Iterable[Any]) -> dict[str, str]:
    return {str(d.name): str(d.value) for d in dimensions}


def event_configuration(alarm: Any) -> dict[str, Any]:
    """`detail.configuration`: description and the metrics, as in the published samples."""
    metrics: list[dict[str, Any]] = []
    if alarm.metric_data_queries:
        for query in alarm.metric_data_queries:
            entry: dict[str, Any]
            if query.expression:
                entry = {"expression": query.expression, "id": query.id}
                if query.label:
                    entry["label"] = query.label
            else:
                stat = query.metric_stat
                entry = {
                    "id": query.id,
                    "metricStat": {
                        "metric": {
                            "dimensions": _dimension_map(stat.metric.dimensions),
                            "name": stat.metric.metric_name,
                            "namespace": stat.metric.namespace,
                        },
                        "period": int(stat.period),
                        "stat": stat.stat,
                    },
                }
            entry["returnData"] = query.return_data in (True, "true", None)
            metrics.append(entry)
    else:
        metrics.append(
            {
                "id": metric_id(alarm),
                "metricStat": {
                    "metric": {
                        "dimensions": _dimension_map(alarm.dimensions),
                        "name": alarm.metric_name,
                        "namespace": alarm.namespace,
                    },
                    "period": int(alarm.period),
                    "stat": _stat_name(alarm),
                },
                "returnData": True,
            }
        )
    configuration: dict[str, Any] = {}
    if alarm.description:
        configuration["description"] = alarm.description
    configuration["metrics"] = metrics
    return configuration


def state_change_detail(alarm: Any, previous: StateSnapshot, current: StateSnapshot) -> dict[str, Any]:
    """`detail` of the "CloudWatch Alarm State Change" event (key order as in AWS's samples)."""
    return {
        "alarmName": alarm.name,
        "configuration": event_configuration(alarm),
        "previousState": previous.as_event(),
        "state": current.as_event(),
    }


def sns_notification(
    alarm: Any, previous: StateSnapshot, current: StateSnapshot, account_id: str, region: str
) -> tuple[str, str]:
    """(Subject, Message) of the alarm notification CloudWatch publishes to an SNS topic action."""
    region_name = REGION_NAMES.get(region, region)
    trigger: dict[str, Any]
    if alarm.metric_data_queries:
        trigger = {}
    else:
        trigger = {"MetricName": alarm.metric_name, "Namespace": alarm.namespace}
        if alarm.extended_statistic:
            trigger |= {"StatisticType": "ExtendedStatistic", "ExtendedStatistic": alarm.extended_statistic}
        else:
            trigger |= {"StatisticType": "Statistic", "Statistic": str(alarm.statistic).upper()}
        trigger["Unit"] = alarm.unit
        trigger["Dimensions"] = [{"value": str(d.value), "name": str(d.name)} for d in alarm.dimensions]
    trigger["Period"] = alarm_period(alarm)
    trigger["EvaluationPeriods"] = int(alarm.evaluation_periods)
    if alarm.datapoints_to_alarm:
        trigger["DatapointsToAlarm"] = int(alarm.datapoints_to_alarm)
    trigger["ComparisonOperator"] = alarm.comparison_operator
    trigger["Threshold"] = float(alarm.threshold)
    trigger["TreatMissingData"] = alarm.treat_missing_data or "missing"
    trigger["EvaluateLowSampleCountPercentile"] = alarm.evaluate_low_sample_count_percentile or ""
    if alarm.metric_data_queries:
        trigger["Metrics"] = [_sns_query(q) for q in alarm.metric_data_queries]
    message = {
        "AlarmName": alarm.name,
        "AlarmDescription": alarm.description or None,
        "AWSAccountId": account_id,
        "AlarmConfigurationUpdatedTimestamp": aws_timestamp(_aware(alarm.configuration_updated_timestamp)),
        "NewStateValue": current.value,
        "NewStateReason": current.reason,
        "StateChangeTime": aws_timestamp(current.timestamp),
        "Region": region_name,
        "AlarmArn": alarm.alarm_arn,
        "OldStateValue": previous.value,
        "OKActions": list(alarm.ok_actions),
        "AlarmActions": list(alarm.alarm_actions),
        "InsufficientDataActions": list(alarm.insufficient_data_actions),
        "Trigger": trigger,
    }
    subject = f'{current.value}: "{alarm.name}" in {region_name}'
    return subject[:100], json.dumps(message, separators=(",", ":"))


def _sns_query(query: Any) -> dict[str, Any]:
    if query.expression:
        entry: dict[str, Any] = {"Expression": query.expression, "Id": query.id}
        if query.label:
            entry["Label"] = query.label
    else:
        stat = query.metric_stat
        entry = {
            "Id": query.id,
            "MetricStat": {
                "Metric": {
                    "Dimensions": [{"value": str(d.value), "name": str(d.name)} for d in stat.metric.dimensions],
                    "MetricName": stat.metric.metric_name,
                    "Namespace": stat.metric.namespace,
                },
                "Period": int(stat.period),
                "Stat": stat.stat,
            },
        }
    entry["ReturnData"] = query.return_data in (True, "true", None)
    return entry


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def history_state_data(previous: StateSnapshot, current: StateSnapshot) -> str:
    """HistoryData of a StateUpdate item in DescribeAlarmHistory."""

    def state(snapshot: StateSnapshot) -> dict[str, Any]:
        body: dict[str, Any] = {"stateValue": snapshot.value, "stateReason": snapshot.reason}
        if snapshot.reason_data and snapshot.reason_data != "{}":
            body["stateReasonData"] = json.loads(snapshot.reason_data)
        return body

    return json.dumps({"version": "1.0", "oldState": state(previous), "newState": state(current)})
