"""Prometheus as a metric source: each variant's counters and latency histogram from PromQL.

Every query is an instant query (``GET /api/v1/query``) read twice, at the rollout's start and now;
the judge sees the difference, so counts are exact integers since the start, as the gateway's own
telemetry is. A counter that went down (its target restarted since the start, or since an earlier
read) cannot be read that way and is reported as an error, as is anything else that goes wrong: an
unreachable server, a PromQL error (with Prometheus' message), an answer carrying warnings (a
partial answer: Thanos' or Mimir's from a store that did not answer, Prometheus' past a limit), a
query returning several series where one was asked for, or none (missing data is never a pass: a
typo in the errors query would read as no errors), a value that is not a finite count, an answer
that is not Prometheus' API (a proxy's error page, a truncated body, JSON of another shape). A
counter that may not exist yet (a labelled prometheus_client counter is created by its first
increment, so the candidate's errors often do not exist at the start) is written
``sum(errors_total{version="2"}) or vector(0)``. A latency histogram's series may be missing at the
start (they count as zero there), not now: its ``le="+Inf"`` bucket, each bucket it had at the
start, and as many observations as the requests query counted (read without ``$window``) must be
there, or the slowest requests would vanish from the judge's view.

An error quotes Prometheus' own ``errorType`` and ``error``, shortened, and never the body of an
answer that is not Prometheus': a spec's URL may name any service the controller can reach, and
the error is logged and saved in the rollout's history, which the API shows. Nor does it show a
URL's ``user:password@``: such a URL (which no spec takes now) is refused before it is opened.

Each query has one deadline, the source's ``timeout``, for all of it (connecting, and reading the
answer to its last byte, however slowly it comes), and a read stops at the first query that fails:
a ``measure`` makes at most twelve queries (two variants' requests, errors and latency buckets, at
the start and now; a ``$window`` query is read once), so it takes at most ``timeout`` times the
number of its queries, and one ``timeout`` when the server stalls.

A reset between reads is caught by remembering each counter's highest value at earlier reads, in
the source's memory (``metric_source`` keeps one source per process): a controller that restarts
compares its first read with the start alone.

A query holding ``$window`` computes the growth itself and is read once, now, with ``$window`` set to
the rollout's age (``sum(increase(requests_total[$window]))``): PromQL's ``increase`` survives
counter resets, at the price of extrapolated, rounded counts.
"""

from __future__ import annotations

import http
import http.client
import json
import math
import urllib.error
import urllib.parse
from typing import Any

from modelcanary.adapters.deadline import Deadline
from modelcanary.domain.spec import PrometheusSource, Source, VariantQueries
from modelcanary.domain.specbase import without_credentials
from modelcanary.domain.telemetry import RolloutTelemetry, VariantTelemetry, latency_counts_from_buckets
from modelcanary.ports import Measurement

NAME = "prometheus"
MAX_ANSWER = 8 * 1024 * 1024  # bytes of one answer; a query of ours answers a few series


class QueryError(Exception):
    """One query failed; its message says which and why (caught in ``measure``, never escapes it)."""


class PrometheusMetrics:
    """Reads ``spec.source.prometheus`` queries over Prometheus' HTTP API."""

    def __init__(self) -> None:
        self._seen = _Seen()

    def measure(self, source: Source, *, since: float, until: float) -> Measurement:
        config = source.prometheus
        shown = without_credentials(config.url)
        if shown != config.url:  # saved before specs refused them: never sent, so never opened
            why = "the URL holds credentials (user:password@, not shown), which are never sent: take them out"
            return Measurement(telemetry=None, error=f"prometheus {shown}: {why}")
        try:
            telemetry = RolloutTelemetry(
                baseline=_variant(config, config.baseline, since, until, self._seen),
                candidate=_variant(config, config.candidate, since, until, self._seen),
            )
        except QueryError as exc:
            return Measurement(telemetry=None, error=f"prometheus {shown}: {exc}")
        return Measurement(telemetry=telemetry)


class _Seen:
    """The highest value each counter gave at an earlier read of a rollout. A counter below it was
    reset in between: comparing with the start alone misses a reset once the counter has regrown
    past its value at the start, and the growth then reads as far less than it was (a candidate's
    errors vanish)."""

    LIMIT = 10_000  # counters remembered, a few per rollout: the longest unread are forgotten first

    def __init__(self) -> None:
        self._highest: dict[tuple[str, str, float, float | None], tuple[float, float]] = {}

    def below(self, key: tuple[str, str, float, float | None], value: float, at: float) -> float | None:
        """The highest value read before ``at`` when ``value`` is below it, else None; remembers
        ``value`` if it is the new highest."""
        highest = self._highest.pop(key, None)
        if highest is not None and highest[1] < at and value < highest[0]:
            self._highest[key] = highest
            return highest[0]
        self._highest[key] = (value, at) if highest is None or value >= highest[0] else highest
        if len(self._highest) > self.LIMIT:
            del self._highest[next(iter(self._highest))]
        return None


def _variant(
    config: PrometheusSource, queries: VariantQueries, since: float, until: float, seen: _Seen
) -> VariantTelemetry:
    requests = _growth(config, queries.requests, since, until, seen)
    errors = _growth(config, queries.errors, since, until, seen)
    if errors > requests:
        raise QueryError(f"{errors} errors but {requests} requests: {queries.errors!r} counts more than requests")
    telemetry = VariantTelemetry(requests=requests, errors=errors)
    if queries.latency_buckets is not None:
        telemetry.latency_counts = _latency(config, queries.latency_buckets, since, until, seen)
        observed = sum(telemetry.latency_counts)  # the +Inf bucket's growth
        # ``increase`` extrapolates each series on its own, so two $window reads need not agree
        exact = WINDOW not in queries.requests and WINDOW not in queries.latency_buckets
        if exact and observed < requests:
            raise QueryError(
                f"{queries.latency_buckets!r} observed {observed} requests (its +Inf bucket), fewer than the "
                f"{requests} of {queries.requests!r}: the others' latencies would go unseen; the histogram must "
                "observe every request counted, failures included"
            )
    return telemetry


def _latency(config: PrometheusSource, query: str, since: float, until: float, seen: _Seen) -> list[int]:
    """Our latency histogram from the growth of Prometheus' buckets."""
    scale = 1000.0 if config.latency_unit == "s" else 1.0
    if WINDOW in query:
        now, start = _buckets(config, _windowed(query, since, until), until), {}
    else:
        now = _buckets(config, query, until)
        start = _buckets(config, query, since)  # none yet at the start: nothing counted then
    if not now:
        raise QueryError(f"{query!r} gave no series; a histogram read now must have its buckets")
    if math.inf not in now:
        raise QueryError(
            f'{query!r} gave no le="+Inf" bucket: the requests slower than le={max(now):g} would vanish; '
            "every histogram has one, so keep it in the query"
        )
    gone = sorted(set(start) - set(now))
    if gone:
        bounds = ", ".join(f"{le:g}" for le in gone)
        raise QueryError(
            f"{query!r} gave no bucket le={bounds} now, which it gave at the start: their requests would vanish"
        )
    grown = []
    for le, count in now.items():
        delta = count - start.get(le, 0.0)
        if delta < 0:  # a $window read is never below zero (see _count): a cumulative one went down
            raise QueryError(f"bucket le={le:g} of {query!r} went down: {_RESET}")
        highest = None if WINDOW in query else seen.below((config.url, query, since, le), count, until)
        if highest is not None:
            raise QueryError(f"bucket le={le:g} of {query!r} went down from {highest:g} at an earlier read: {_RESET}")
        grown.append((le * scale, delta))
    try:
        return latency_counts_from_buckets(grown)
    except ValueError as exc:
        raise QueryError(f"{query!r}: {exc}") from exc


WINDOW = "$window"  # in a query: the rollout's age, as a PromQL duration (e.g. 3600000ms)


def _windowed(query: str, since: float, until: float) -> str:
    return query.replace(WINDOW, f"{max(round((until - since) * 1000), 1)}ms")


_RESET = (
    "the target restarted since the rollout began (a counter reset); to read through restarts, write the "
    "query with increase(...[$window])"
)


def _growth(config: PrometheusSource, query: str, since: float, until: float, seen: _Seen) -> int:
    if WINDOW in query:  # the query computes the growth itself, e.g. with increase(...[$window]); never negative
        return round(_one(config, _windowed(query, since, until), until))
    now, start = _one(config, query, until), _one(config, query, since)
    if now < start:
        raise QueryError(f"{query!r} went down from {start:g} to {now:g}: {_RESET}")
    highest = seen.below((config.url, query, since, None), now, until)
    if highest is not None:
        raise QueryError(f"{query!r} went down from {highest:g} at an earlier read to {now:g}: {_RESET}")
    return round(now - start)


def _one(config: PrometheusSource, query: str, at: float) -> float:
    """A query's single value, finite. No series is an error, never 0: a query with a typo in a
    label answers none, and reading it as no errors would pass the candidate."""
    kind, result = _query(config, query, at)
    if kind == "scalar":
        return _count(query, result[1])
    if kind != "vector":
        raise QueryError(f"{query!r} gave a {kind}; write a query whose result is one number")
    if len(result) > 1:
        labels = _shorten(", ".join(json.dumps(series.get("metric", {}), sort_keys=True) for series in result[:3]))
        raise QueryError(f"{query!r} gave {len(result)} series ({labels}, ...); aggregate it to one, e.g. sum(...)")
    if not result:
        raise QueryError(
            f"{query!r} gave no series; if the counter may not exist yet, write it as ({query}) or vector(0)"
        )
    return _count(query, result[0]["value"][1])


def _buckets(config: PrometheusSource, query: str, at: float) -> dict[float, float]:
    """Cumulative count per ``le`` bound."""
    kind, result = _query(config, query, at)
    if kind != "vector":
        raise QueryError(f"{query!r} gave a {kind}; latencyBuckets wants one series per le: sum(...) by (le)")
    buckets: dict[float, float] = {}
    for series in result:
        le = series.get("metric", {}).get("le")
        if le is None:
            raise QueryError(f"{query!r} gave a series without an le label; aggregate it with sum(...) by (le)")
        bound = _number(query, le)
        if bound in buckets:
            raise QueryError(f"{query!r} gave le={le} twice; aggregate it with sum(...) by (le)")
        buckets[bound] = _count(query, series["value"][1])
    return buckets


def _number(query: str, text: Any) -> float:
    """A number, possibly infinite (the last bucket's ``le="+Inf"``)."""
    try:
        value = float(text)
    except (TypeError, ValueError) as exc:
        raise QueryError(f"{query!r} gave {_shorten(repr(text), 40)}, not a number") from exc
    if math.isnan(value):
        raise QueryError(f"{query!r} gave NaN")
    return value


def _count(query: str, text: Any) -> float:
    """A sample's value, which the judge counts: finite (an infinite one cannot be rounded to a count)
    and not below zero (neither a counter nor its ``increase`` ever is: a query that is, e.g. a
    difference of two counters, would take requests or errors away)."""
    value = _number(query, text)
    if math.isinf(value):
        raise QueryError(f"{query!r} gave {text!r}, not a finite number")
    if value < 0:
        raise QueryError(f"{query!r} gave {text!r}, a negative count; a count, or its increase, is never below zero")
    return value


def _query(config: PrometheusSource, query: str, at: float) -> tuple[str, Any]:
    """An instant query's result type and result, from an answer of Prometheus' API."""
    raw, answered = _fetch(config, query, at)
    if len(raw) > MAX_ANSWER:
        raise QueryError(f"{query!r}: the answer is larger than {MAX_ANSWER // 2**20} MiB; aggregate it")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise QueryError(f"{query!r}: {answered}: not JSON") from exc
    if not isinstance(body, dict):
        raise QueryError(f"{query!r}: {answered}: JSON, but not an object")
    if body.get("status") != "success":
        raise QueryError(f"{query!r}: {_error(body) or f'{answered}: no errorType and error'}")
    warnings = body.get("warnings")
    if warnings:  # the data may lack what a store, a shard or a limit left out
        if not isinstance(warnings, list) or not all(isinstance(warning, str) for warning in warnings):
            raise QueryError(f"{query!r}: {answered}: its warnings are not a list of strings")
        raise QueryError(f"{query!r}: an answer with warnings, so it may lack data: {_shorten('; '.join(warnings))}")
    data = body.get("data")
    kind, result = (data.get("resultType"), data.get("result")) if isinstance(data, dict) else (None, None)
    if not _well_formed(kind, result):
        raise QueryError(f"{query!r}: a malformed answer: its data is not of the shape Prometheus' API gives")
    return str(kind), result


def _fetch(config: PrometheusSource, query: str, at: float) -> tuple[bytes, str]:
    """The raw answer to an instant query, whole within the source's ``timeout``, and what answered it."""
    url = f"{config.url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    late = f"{query!r}: no complete answer within {config.timeout:g} s"
    with Deadline(config.timeout) as deadline:
        try:
            with deadline.opener().open(url, timeout=config.timeout) as response:
                raw = response.read(MAX_ANSWER + 1)
                if len(raw) <= MAX_ANSWER and response.length:  # the connection ended early
                    raise http.client.IncompleteRead(raw, response.length)
                answered = _answered(response.status, response.headers.get("Content-Type"))
            if deadline.expired:  # the cut ends a read as if the answer ended there
                raise QueryError(late)
        except urllib.error.HTTPError as exc:  # Prometheus answers bad PromQL with 400 and a JSON error
            with exc:
                problem = _problem(exc)
            raise QueryError(late if deadline.expired else f"{query!r}: {problem}") from exc
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if deadline.expired:  # the deadline cut the connection: whatever it raised, this is why
                raise QueryError(late) from exc
            if isinstance(exc, http.client.HTTPException):  # a bad port, an answer not HTTP or cut short
                raise QueryError(f"{query!r}: {type(exc).__name__}: {_http_fault(exc)}") from exc
            raise QueryError(f"{query!r}: {exc}") from exc  # refused, timed out, DNS, a bad IPv6 address
    return raw, answered


def _well_formed(kind: Any, result: Any) -> bool:
    """Whether a result has the shape Prometheus' API gives its type, which the readers index into
    (a matrix or a string they refuse by its type alone)."""
    if kind == "scalar":
        return _sample(result)
    if kind == "vector":
        return isinstance(result, list) and all(
            isinstance(series, dict) and isinstance(series.get("metric", {}), dict) and _sample(series.get("value"))
            for series in result
        )
    return isinstance(kind, str)


def _sample(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


def _answered(status: int, content_type: str | None) -> str:
    """What answered, without what it said: the body of a service other than Prometheus may hold
    anything (an internal service's credentials), and an error is logged and saved. So the status
    is named by its standard phrase, not the one the server sent, and the content type is cut short.

    >>> _answered(599, "text/html; " + "x" * 500)[44:]
    '(HTTP 599 (no standard phrase), Content-Type text/html; xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...)'
    """
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "(no standard phrase)"
    kind = _shorten(content_type, 60) if content_type else "none"
    return f"the answer is not a Prometheus API response (HTTP {status} {phrase}, Content-Type {kind})"


# their messages are the spec's own URL, byte counts or fixed wording: nothing the server sent
_SAID_NOTHING = (
    http.client.InvalidURL,
    http.client.IncompleteRead,
    http.client.RemoteDisconnected,
    http.client.LineTooLong,
)


def _http_fault(exc: http.client.HTTPException) -> str:
    """What an answer that is not HTTP did wrong, without its text: a status line of another
    protocol (``BadStatusLine``'s message is that line, whole) may say anything."""
    if isinstance(exc, _SAID_NOTHING):
        return str(exc).strip()
    return "the answer is not HTTP"


def _error(body: Any) -> str | None:
    """Prometheus' own error, ``errorType: error``, shortened; None when ``body`` is not one."""
    if not isinstance(body, dict) or body.get("status") != "error":
        return None
    kind, error = body.get("errorType"), body.get("error")
    if not isinstance(kind, str) or not isinstance(error, str):
        return None
    return f"{_shorten(kind, 40)}: {_shorten(error)}"


def _problem(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read(MAX_ANSWER))
    except (OSError, ValueError, http.client.HTTPException):
        body = None
    error = _error(body)
    if error is not None:
        return f"HTTP {exc.code} {error}"
    return _answered(exc.code, exc.headers.get("Content-Type"))
