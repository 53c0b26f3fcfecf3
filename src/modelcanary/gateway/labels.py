"""Labels: a feedback body parsed, and each label joined where its prediction was made.

A prediction's id starts with the issuing recorder's prefix (ten random hex digits, new at every
process start), and only that process holds what a label joins to (variant, score bucket,
segment, shadow pair). Behind a load balancer a label may reach any replica: one for another
replica's prediction is written to the store, and the issuer takes its own at every flush, before
the telemetry write that carries them (docs/gateway.md). A gateway that stops hands what it holds
to the store, and the first gateway to flush after that adopts it: the stopped one's predictions,
their labels relayed from then on, and the labels still waiting to mature.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from modelcanary.domain.errors import ModelcanaryError, RequestError, UnknownPrediction
from modelcanary.domain.telemetry import Variant
from modelcanary.gateway.metrics import Count
from modelcanary.gateway.recorder import LabelSink, Recorder
from modelcanary.ports import TelemetryStore

log = logging.getLogger("modelcanary.gateway")

# A label relayed to another gateway waits this long for it (it takes them every flush, ~1 s):
# one still there after that was for a gateway that is gone, and its predictions with it.
RELAYED_LABELS_KEEP_S = 600.0
_ISSUER = re.compile(r"[0-9a-f]{10}")  # a recorder's prefix: 5 random bytes in hex
_COUNTER = re.compile(r"[0-9a-f]{1,16}")  # a recorder's running count in hex


class Labels:
    """One gateway's labels: joined by its recorder, or relayed through ``store`` (None: this
    gateway has no store, and takes labels for its own predictions only). ``counts`` are the
    ``modelcanary_relayed_labels_total`` children by outcome."""

    def __init__(
        self,
        recorder: Recorder,
        store: TelemetryStore | None,
        source: str,
        counts: dict[str, Count],
        sink_of: Callable[[str, Variant], LabelSink | None],
    ) -> None:
        self._recorder = recorder
        self._sink_of = sink_of
        self._store = store
        self._source = source
        self._counts = counts
        self._next_expiry = 0.0  # when to drop relayed labels no gateway took
        self._taking: asyncio.Task[None] | None = None  # a take of relayed labels under way

    async def accept(self, body: Any) -> dict[str, int]:
        """A feedback body's labels, all or none: this process's own predictions are claimed
        first, the rest relayed, and the claimed ones given back if the relay fails (503)."""
        mine, others, positions = partition(parse_labels(body), self._recorder.issuers, relay=self._store is not None)
        taken = self._recorder.take(mine, positions=positions)
        if others:
            assert self._store is not None
            try:
                await asyncio.to_thread(self._store.relay_labels, self._source, others)
            except ModelcanaryError as exc:
                self._recorder.restore(taken)
                log.exception("could not relay %d labels to other gateways", len(others))
                why = "the store is unreachable, so no label was taken; send them again"
                raise RequestError(why, field="labels", status=503) from exc
            except BaseException:  # cancelled (a shutdown): unanswered, so a retry must find its own again
                self._recorder.restore(taken)
                raise
            self._counts["sent"].inc(len(others))
        self._recorder.apply(taken)
        return {"accepted": len(mine) + len(others), "relayed": len(others)}

    async def take_relayed(self) -> None:
        """Adopt what stopped gateways handed off, join the labels other gateways received for
        this one's predictions (and the adopted ones), and now and then drop those whose gateway
        is gone. A failed read leaves them in the store for the next.

        The take runs in a task of its own, shielded: a flush cancelled at shutdown while the
        store's ``DELETE ... RETURNING`` is under way would otherwise drop what it returned; the
        next call (the last flush) waits for that take to join its labels first."""
        if self._store is None:
            return
        if self._taking is None or self._taking.done():
            self._taking = asyncio.get_running_loop().create_task(self._take(self._store))
        await asyncio.shield(self._taking)

    async def hand_off(self) -> bool:
        """Hand what a label may still join to over to the store, for the next gateway to flush
        (this one is stopping): after the last flush, so that no label taken before is lost.
        Whether the store took it (or there was nothing to take)."""
        rows = self._recorder.hand_off() if self._store is not None else []
        if not rows:
            return True
        assert self._store is not None
        try:
            # keyed by this recorder's issuer (new at each start): a retry whose first write landed
            # (its answer lost) stores no second copy, which another flush would adopt too
            await asyncio.to_thread(self._store.hand_off, self._source, rows, self._recorder.issuer)
        except ModelcanaryError:
            log.exception("could not hand %d predictions and waiting labels to the store", len(rows))
            return False
        log.info("handed %d predictions and waiting labels to the store for another gateway", len(rows))
        return True

    async def _adopt(self, handed: Sequence[Sequence[Any]]) -> None:
        """Adopt a hand-off, letting requests run between its parts (``Recorder.adopting``: in one
        part, 200,000 rows held the loop 0.5 s). Their labels are joined here once all is
        adopted; until then a label for one of them is relayed, and taken right after."""
        for _part in self._recorder.adopting(handed, self._sink_of):
            await asyncio.sleep(0)
        log.info("adopted %d predictions and waiting labels of stopped gateways", len(handed))

    async def _take(self, store: TelemetryStore) -> None:
        recorder = self._recorder
        try:
            handed = await asyncio.to_thread(store.adopt_handoffs)
            if handed:
                await self._adopt(handed)
            taken = await asyncio.to_thread(store.take_labels, *sorted(recorder.issuers))
            if taken:
                joined, unmatched = recorder.label_relayed(taken)
                self._counts["joined"].inc(joined)
                self._counts["unmatched"].inc(unmatched)
            now = time.time()
            if now >= self._next_expiry:
                self._next_expiry = now + RELAYED_LABELS_KEEP_S / 10
                expired = await asyncio.to_thread(store.expire_labels, now - RELAYED_LABELS_KEEP_S)
                self._counts["expired"].inc(expired)
        except ModelcanaryError:
            log.exception("could not take relayed labels; will retry")


def partition(
    items: Sequence[tuple[str, int]], issuers: Collection[str], *, relay: bool
) -> tuple[list[tuple[str, int]], list[tuple[str, str, int]], list[int]]:
    """Labels for the predictions of ``issuers`` (this replica, and those it adopted), those for another replica's as
    (its issuer, prediction id, label), and where each of the first stood in ``items``. Refused,
    naming the item: an id no replica could have issued, an id twice in one batch, and another
    replica's id where there is nothing to ``relay`` it through (no store).

    >>> partition([("abcdefabcd-1f", 0), ("0123456789-a", 1)], {"0123456789"}, relay=True)
    ([('0123456789-a', 1)], [('abcdefabcd', 'abcdefabcd-1f', 0)], [1])
    >>> partition([("0123456789-a", 1), ("mine", 0)], {"0123456789"}, relay=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    modelcanary.domain.errors.UnknownPrediction: labels[1].prediction_id: ...: not an id a gateway issued
    """
    mine, others, positions, seen = [], [], [], set()
    for index, (prediction_id, label) in enumerate(items):
        prefix, dash, counter = prediction_id.partition("-")
        why = None
        if prediction_id in seen:
            why = "it is labelled twice in this batch"
        elif prefix in issuers:
            mine.append((prediction_id, label))
            positions.append(index)
        elif not (dash and _ISSUER.fullmatch(prefix) and _COUNTER.fullmatch(counter)):
            why = "not an id a gateway issued"
        elif not relay:
            why = "another gateway issued it, and this one has no store to pass the label on through"
        else:
            others.append((prefix, prediction_id, label))
        if why is not None:
            raise UnknownPrediction(
                f"unknown prediction id {prediction_id!r}: {why}", field=f"labels[{index}].prediction_id"
            )
        seen.add(prediction_id)
    return mine, others, positions


def parse_labels(body: Any) -> list[tuple[str, int]]:
    """``{"prediction_id", "label"}``, ``{"labels": [...]}`` or a bare list of those objects."""
    items = body.get("labels") if isinstance(body, dict) and "labels" in body else body
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise RequestError('send {"prediction_id": ..., "label": 0 or 1} or {"labels": [...]}', field="body")
    parsed = []
    for index, item in enumerate(items):
        where = f"labels[{index}]"
        if not isinstance(item, dict):
            raise RequestError("must be an object with prediction_id and label", field=where)
        prediction_id, label = item.get("prediction_id"), item.get("label")
        if not isinstance(prediction_id, str):
            raise RequestError("must be the prediction_id string the gateway returned", field=f"{where}.prediction_id")
        if label not in (0, 1):  # true and false compare equal to 1 and 0
            raise RequestError(f"must be 0 or 1 (or true/false), got {label!r}", field=f"{where}.label")
        parsed.append((prediction_id, int(label)))
    return parsed
