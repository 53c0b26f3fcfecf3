"""Per-variant telemetry accumulators and the memory of recent predictions, for joining labels.

Everything here runs on the gateway's event loop thread: no locks on the request path. A flush
copies the counts that changed; the store write happens off the loop.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

from modelcanary.domain.errors import UnknownPrediction
from modelcanary.domain.telemetry import Variant, VariantTelemetry


class LabelSink(Protocol):
    """Told of each label joined to a prediction (the gateway's Prometheus children of the
    endpoint it names)."""

    @property
    def endpoint(self) -> str: ...

    def label(self, label: int) -> None: ...


ADOPT_PART = 5_000  # rows of a hand-off adopted between two turns of the event loop (~10-15 ms)

# What a label may still join to, handed from a stopping gateway to another (``hand_off``,
# ``adopt``), as JSON: (prediction id, endpoint, rollout id, variant, score bucket, segment, when a
# label of it counts (wall clock; 0: at once), a label waiting for that (or None), the shadow lane's
# baseline and candidate scores of its input (or None), and until when that pair is kept)
Held = tuple[
    str, str | None, str | None, str, int | None, str | None, float, int | None, float | None, float | None, float
]


class _Served(NamedTuple):
    """A prediction a label may still join to. A named tuple, not a frozen dataclass: one is made
    for every row served, and a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``."""

    rollout_id: str | None
    variant: Variant
    bucket: int | None  # score bucket; None when the output had no score
    sink: LabelSink | None = None
    segment: str | None = None
    mature_at: float = 0.0  # when a label of it may count (the recorder's clock); 0: at once


class Recorder:
    def __init__(self, *, max_predictions: int = 200_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._counts: dict[tuple[str, Variant], VariantTelemetry] = {}
        self._changed: set[tuple[str, Variant]] = set()
        self._served: OrderedDict[str, _Served] = OrderedDict()
        self._max_predictions = max_predictions
        # ids are unique per process start; the prefix also says which replica issued them
        self._prefix = os.urandom(5).hex()
        self._counter = itertools.count()
        self.forgotten_predictions = 0  # evicted before a label came
        # the shadow lane's candidate score (and the baseline's) per served prediction id, until a
        # label comes or ``keep`` runs out: (expires at, baseline score, candidate score)
        self._shadowed: OrderedDict[str, tuple[float, float, float]] = OrderedDict()
        # predictions whose shadow copy is queued (how long the lane keeps their pair), and the
        # labels that came before the copy ran: (expires at, label), joined when it runs
        self._awaiting_shadow: OrderedDict[str, float] = OrderedDict()
        self._early: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # predictions whose label is claimed (``take``) but not yet counted (``apply``, or given
        # back by ``restore``): a feedback request awaits the relay of its other labels in between,
        # and a shadow copy finishing then must still keep its pair for that label
        self._claimed: set[str] = set()
        self.labels_without_rollout = 0
        # labels come before their prediction is old enough to count (the route's label maturity):
        # (counts at, sequence, label, served) by when, and the shadow pair of each, once known
        self._clock = clock
        self._sequence = itertools.count()
        self._maturing: list[tuple[float, int, str, int, _Served]] = []
        self._maturing_pairs: dict[str, tuple[float, float] | None] = {}
        self.labels_counted_unripe = 0  # counted before they matured: more waited than memory holds
        self._issuers = {self._prefix}  # its own prefix, and those of the stopped gateways it adopted
        self.adopted_predictions = 0  # predictions and waiting labels taken over from stopped gateways
        # a hand-off's predictions (and shadow pairs) being adopted, in parts, until ``join_for``
        self._adopting: OrderedDict[str, _Served] = OrderedDict()
        self._adopting_shadowed: OrderedDict[str, tuple[float, float, float]] = OrderedDict()

    def _variant(self, rollout_id: str, variant: Variant) -> VariantTelemetry:
        key = (rollout_id, variant)
        self._changed.add(key)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = VariantTelemetry()
        return counts

    def record(
        self,
        rollout_id: str | None,
        variant: Variant,
        *,
        latency_ms: float | None,
        error: bool,
        cpu_ms: float | None = None,
        scores: Sequence[float | None] = (),
        sink: LabelSink | None = None,
        segment: str | None = None,
        cache: tuple[int, int] = (0, 0),
        mature_s: float = 0.0,
    ) -> list[str]:
        """Count one request (in its segment too, if it has one) and remember its rows'
        predictions, whose labels count once they are ``mature_s`` old; their ids, one per row.
        ``latency_ms`` None: no model was called (all from the cache), so no latency is counted."""
        counts = part = None
        if rollout_id is not None:
            counts = self._variant(rollout_id, variant)
            counts.observe(latency_ms=latency_ms, error=error, cpu_ms=cpu_ms)
            if cache != (0, 0):  # (hits, misses) in the prediction cache, in rows
                counts.cache_hits += cache[0]
                counts.cache_misses += cache[1]
            if segment is not None:
                part = counts.segment(segment)
                part.observe(latency_ms=latency_ms, error=error, cpu_ms=cpu_ms)
        ids = []
        mature_at = self._clock() + mature_s if mature_s > 0 and scores else 0.0
        served, prefix, counter = self._served, self._prefix, self._counter
        for score in scores:
            prediction_id = f"{prefix}-{next(counter):x}"
            bucket = counts.observe_score(score) if counts is not None and score is not None else None
            if part is not None and score is not None:
                part.observe_score(score)
            served[prediction_id] = _Served(rollout_id, variant, bucket, sink, segment, mature_at)
            ids.append(prediction_id)
        if len(served) > self._max_predictions:
            self._forget()
        return ids

    def _forget(self) -> None:
        """Drop the oldest predictions past ``max_predictions``: their labels come too late."""
        while len(self._served) > self._max_predictions:
            self._served.popitem(last=False)
            self.forgotten_predictions += 1

    def new_key(self, rollout_id: str, variant: Variant, segment: str | None) -> None:
        """Count a sticky key the router sent to ``variant`` for the first time at its weight."""
        counts = self._variant(rollout_id, variant)
        counts.keys += 1
        counts.key_gateways = 1  # this gateway counts keys here (the sum over gateways says how many do)
        if segment is not None:
            counts.segment(segment).keys += 1

    def shadow(
        self,
        rollout_id: str,
        *,
        segment: str | None,
        prediction_ids: Sequence[str],
        baseline_scores: Sequence[float | None],
        candidate_scores: Sequence[float | None] | None,
        keep_s: float,
    ) -> None:
        """One shadow prediction of the candidate (None when it failed), paired row by row with
        the baseline's on the same input, and kept to meet the label of the served prediction (or
        joined at once to a label that came while the copy was queued)."""
        for prediction_id in prediction_ids:
            self._awaiting_shadow.pop(prediction_id, None)
            if candidate_scores is None:  # a failed copy: a label that came early has nothing to join
                self._early.pop(prediction_id, None)
        lane = self._variant(rollout_id, Variant.CANDIDATE).shadow_lane()
        lanes = (lane, lane.segment(segment)) if segment is not None else (lane,)
        for each in lanes:
            each.requests += 1
            each.errors += candidate_scores is None
        if candidate_scores is None or not prediction_ids:  # failed, or a copy of a request the baseline failed
            return
        now = time.monotonic()
        for prediction_id, base, cand in zip(prediction_ids, baseline_scores, candidate_scores, strict=True):
            early = self._early.pop(prediction_id, None)
            if base is None or cand is None:
                continue
            for each in lanes:
                each.pair(baseline=base, candidate=cand)
                if early is not None and early[0] > now:
                    each.label(baseline=base, candidate=cand, label=early[1])
            if prediction_id in self._maturing_pairs:  # its label came and waits to mature: the pair waits with it
                self._maturing_pairs[prediction_id] = (base, cand)
            elif early is None and (prediction_id in self._served or prediction_id in self._claimed):  # label to come
                self._shadowed[prediction_id] = (now + keep_s, base, cand)
        self._forget_shadowed(now)

    def shadow_queued(self, prediction_ids: Sequence[str], keep_s: float) -> None:
        """A shadow copy of these predictions is queued: a label that comes before it runs is kept
        (for ``keep_s``) to be joined to its pair, as one that comes after."""
        for prediction_id in prediction_ids:
            self._awaiting_shadow[prediction_id] = keep_s
        while len(self._awaiting_shadow) > self._max_predictions:
            self._awaiting_shadow.popitem(last=False)

    def _forget_shadowed(self, now: float) -> None:
        shadowed = self._shadowed
        while shadowed and (len(shadowed) > self._max_predictions or next(iter(shadowed.values()))[0] <= now):
            shadowed.popitem(last=False)

    def shed(self, rollout_id: str, segment: str | None) -> None:
        """A copy for the shadow lane was dropped: its queue was full."""
        lane = self._variant(rollout_id, Variant.CANDIDATE).shadow_lane()
        lane.shed += 1
        if segment is not None:
            lane.segment(segment).shed += 1

    def trip(self, rollout_id: str, variant: Variant, reason: str) -> None:
        """A circuit breaker took ``variant`` out: counted, with why, for the controller."""
        counts = self._variant(rollout_id, variant)
        counts.breaker_trips += 1
        counts.breaker_reason = counts.breaker_reason or reason

    @property
    def issuer(self) -> str:
        """The prefix of every prediction id this recorder issues: which replica made a prediction."""
        return self._prefix

    @property
    def issuers(self) -> frozenset[str]:
        """The prefixes of the predictions whose labels this recorder joins: its own, and those of
        the stopped gateways whose predictions it adopted."""
        return frozenset(self._issuers)

    def hand_off(self) -> list[Held]:
        """Everything a label may still join to, for another gateway to ``adopt`` when this one
        stops: every prediction it remembers (oldest first, with its shadow pair while the lane
        keeps it), then every label waiting for its prediction to mature. Times are wall-clock: the
        adopter's clocks are its own. A shadow copy still queued is not waited for (its pair is lost,
        as when the lane sheds it)."""
        wall, clock, now = time.time(), self._clock(), time.monotonic()

        def held(
            prediction_id: str, served: _Served, label: int | None, pair: tuple[float, float] | None, until: float
        ) -> Held:
            endpoint = served.sink.endpoint if served.sink is not None else None
            mature_at = served.mature_at - clock + wall if served.mature_at else 0.0
            base, cand = pair if pair is not None else (None, None)
            return (
                prediction_id,
                endpoint,
                served.rollout_id,
                served.variant.value,
                served.bucket,
                served.segment,
                mature_at,
                label,
                base,
                cand,
                until,
            )

        rows = []
        for prediction_id, served in self._served.items():
            shadowed = self._shadowed.get(prediction_id)
            if shadowed is not None and shadowed[0] > now:
                rows.append(held(prediction_id, served, None, shadowed[1:], shadowed[0] - now + wall))
            else:
                rows.append(held(prediction_id, served, None, None, 0.0))
        for _at, _sequence, prediction_id, label, served in sorted(self._maturing):
            rows.append(held(prediction_id, served, label, self._maturing_pairs.get(prediction_id), 0.0))
        return rows

    def adopt(self, rows: Sequence[Sequence[Any]], sink_of: Callable[[str, Variant], LabelSink | None]) -> set[str]:
        """Take over a part of what a stopped gateway handed off (``hand_off``; parts oldest
        first): its waiting labels count when they mature, as there; its predictions wait aside
        until ``join_for``, which makes them the oldest held here (forgotten first) and joins
        their labels here, relayed ones included. Meanwhile a label for one is relayed, and joined
        at the next take. ``sink_of`` gives an endpoint's Prometheus children of a variant. The
        prefixes of the adopted predictions are returned, for ``join_for``."""
        wall, clock, now = time.time(), self._clock(), time.monotonic()
        variants = {variant.value: variant for variant in Variant}
        sinks: dict[tuple[str, Variant], LabelSink | None] = {}
        served, shadowed, issuers = self._adopting, self._adopting_shadowed, set()
        for row in rows:
            prediction_id, endpoint, rollout_id, variant_name, bucket, segment, mature_at, label, base, cand, until = (
                row
            )
            variant = variants[variant_name]
            sink = None
            if endpoint is not None:
                key = (endpoint, variant)
                sink = sinks[key] if key in sinks else sinks.setdefault(key, sink_of(endpoint, variant))
            held = _Served(rollout_id, variant, bucket, sink, segment, mature_at - wall + clock if mature_at else 0.0)
            pair = (base, cand) if base is not None and cand is not None else None
            if label is not None:
                if prediction_id in self._maturing_pairs:  # handed off twice (a retried write that had landed)
                    continue
                self._maturing_pairs[prediction_id] = pair
                heapq.heappush(self._maturing, (held.mature_at, next(self._sequence), prediction_id, label, held))
            else:
                served[prediction_id] = held
                if pair is not None and until > wall:
                    shadowed[prediction_id] = (until - wall + now, *pair)
            issuers.add(prediction_id.partition("-")[0])
        self.adopted_predictions += len(rows)
        while len(self._maturing) > self._max_predictions:
            self._ripen_first()
            self.labels_counted_unripe += 1
        return issuers

    def adopting(
        self, rows: Sequence[Sequence[Any]], sink_of: Callable[[str, Variant], LabelSink | None]
    ) -> Iterator[None]:
        """``adopt`` a whole hand-off in parts of ``ADOPT_PART`` rows, pausing after each (the
        event loop serves requests there), then ``join_for``. The rows, and then what was adopted,
        are put out of the garbage collector's sight (``gc.freeze``, as the gateway does with its
        models): for 200,000 rows the longest pause was 213-218 ms unfrozen, 52-62 ms frozen
        (``python -m bench.handoff``). Freezing acyclic data leaks nothing: it is freed by its
        reference count. What cyclic garbage the young generations hold at that moment stays, as
        after the gateway's freeze at a model load: one adoption's worth, at a gateway's stop."""
        gc.freeze()
        issuers: set[str] = set()
        for start in range(0, len(rows), ADOPT_PART):
            issuers |= self.adopt(rows[start : start + ADOPT_PART], sink_of)
            yield
        self.join_for(issuers)
        gc.freeze()

    def join_for(self, issuers: Iterable[str]) -> None:
        """All of a hand-off is adopted: its predictions join those held here, as the oldest, and
        the labels of these issuers' predictions are joined here from now on (``issuers``)."""
        served, shadowed = self._adopting, self._adopting_shadowed
        served.update(self._served)
        shadowed.update(self._shadowed)
        self._served, self._shadowed = served, shadowed
        self._adopting, self._adopting_shadowed = OrderedDict(), OrderedDict()
        while len(self._served) > self._max_predictions:
            self._served.popitem(last=False)
            self.forgotten_predictions += 1
        self._issuers.update(issuers)

    def take(
        self, items: Sequence[tuple[str, int]], *, positions: Sequence[int] | None = None
    ) -> list[tuple[str, int, _Served]]:
        """Claim the predictions these labels are for, all or none: every id is checked before any
        is claimed (an error names ``labels[i]``, i from ``positions``: where each item stood in
        the request). ``apply`` counts them; ``restore`` gives them back (a relay that failed)."""
        seen: set[str] = set()
        for index, (prediction_id, _label) in enumerate(items):
            if prediction_id not in self._served or prediction_id in seen:
                where = positions[index] if positions is not None else index
                raise UnknownPrediction(
                    f"unknown prediction id {prediction_id!r} (never issued here, already labelled, or forgotten)",
                    field=f"labels[{where}].prediction_id",
                )
            seen.add(prediction_id)
        self._claimed.update(prediction_id for prediction_id, _label in items)
        return [(prediction_id, label, self._served.pop(prediction_id)) for prediction_id, label in items]

    def restore(self, taken: Sequence[tuple[str, int, _Served]]) -> None:
        for prediction_id, _label, served in taken:
            self._claimed.discard(prediction_id)
            self._served[prediction_id] = served

    def label(self, items: Sequence[tuple[str, int]]) -> int:
        """Join labels to their predictions, all or none (see ``take``)."""
        taken = self.take(items)
        self.apply(taken)
        return len(taken)

    def label_relayed(self, items: Sequence[tuple[str, int]]) -> tuple[int, int]:
        """Join labels another replica received for this one's predictions: how many joined, and
        how many found no prediction held here (forgotten, or labelled already)."""
        known: dict[str, int] = {}
        for prediction_id, label in items:
            if prediction_id in self._served:
                known.setdefault(prediction_id, label)  # the first label of an id counts, as here
        return self.label(list(known.items())), len(items) - len(known)

    def apply(self, taken: Sequence[tuple[str, int, _Served]]) -> None:
        now, clock = time.monotonic(), self._clock()
        for prediction_id, label, served in taken:
            self._claimed.discard(prediction_id)
            if served.sink is not None:
                served.sink.label(label)
            shadowed = self._shadowed.pop(prediction_id, None)
            pair = shadowed[1:] if shadowed is not None and shadowed[0] > now else None
            if served.mature_at > clock:  # counted once its prediction is old enough (``ripen``)
                self._maturing_pairs[prediction_id] = pair
                heapq.heappush(self._maturing, (served.mature_at, next(self._sequence), prediction_id, label, served))
                continue
            if shadowed is None:
                self._await_copy(prediction_id, label, now)
            self._count(label, served, pair)
        while len(self._maturing) > self._max_predictions:  # memory is bounded: the ripest count now
            self._ripen_first()
            self.labels_counted_unripe += 1

    def ripen(self) -> None:
        """Count the labels whose predictions are now old enough."""
        clock = self._clock()
        while self._maturing and self._maturing[0][0] <= clock:
            self._ripen_first()

    def _await_copy(self, prediction_id: str, label: int, now: float) -> None:
        """If the prediction's shadow copy has not run yet, its label waits for it (``shadow``)."""
        keep_s = self._awaiting_shadow.get(prediction_id)
        if keep_s is not None:
            self._early[prediction_id] = (now + keep_s, label)
            while len(self._early) > self._max_predictions:
                self._early.popitem(last=False)

    def _ripen_first(self) -> None:
        _at, _sequence, prediction_id, label, served = heapq.heappop(self._maturing)
        pair = self._maturing_pairs.pop(prediction_id, None)
        if pair is None:  # its copy may still be queued (a backed-up lane): the label waits for it there
            self._await_copy(prediction_id, label, time.monotonic())
        self._count(label, served, pair)

    def _count(self, label: int, served: _Served, pair: tuple[float, float] | None) -> None:
        """Count one label in its variant's telemetry (its segment's too), and in the shadow lane's
        paired comparison when the candidate's shadow prediction of the same input is known."""
        if pair is not None and served.rollout_id is not None:
            lane = self._variant(served.rollout_id, Variant.CANDIDATE).shadow_lane()
            base, cand = pair
            lane.label(baseline=base, candidate=cand, label=label)
            if served.segment is not None:
                lane.segment(served.segment).label(baseline=base, candidate=cand, label=label)
        if served.rollout_id is None:
            self.labels_without_rollout += 1
            return
        counts = self._variant(served.rollout_id, served.variant)
        for each in (counts, counts.segment(served.segment)) if served.segment is not None else (counts,):
            if served.bucket is None:
                each.unscored_labels += 1
            else:
                each.observe_label(bucket=served.bucket, label=label)

    def changed(self) -> list[tuple[str, Variant, VariantTelemetry]]:
        """Copies of the counts changed since the last call (cumulative, so a lost write is harmless),
        after counting the labels that have matured since."""
        self.ripen()
        rows = [
            (rollout_id, variant, VariantTelemetry.from_json(self._counts[(rollout_id, variant)].to_json()))
            for rollout_id, variant in self._changed
        ]
        self._changed.clear()
        return rows

    def unflushed(self, rows: Sequence[tuple[str, Variant, VariantTelemetry]]) -> None:
        """Mark rows whose write failed as changed again, so the next flush retries them."""
        self._changed.update((rollout_id, variant) for rollout_id, variant, _counts in rows)
