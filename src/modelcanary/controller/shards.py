"""Judging across cores: a controller's tick shared with worker processes.

A tick is pure Python from the read of the telemetry to the save of the decisions (the judge
alone, 0.2 ms a rollout), so one process judges a thousand rollouts on one core whatever the
machine has. With ``processes`` greater than 1 the active rollouts are split by a hash of their
id; the controller decides and saves its own share, and each worker process (spawned, with its own
store connection) decides and saves another, at the same moment and under the controller's lease:
every save a worker makes carries the controller's fencing token, so a controller that lost its
lease has its workers' writes refused as well as its own. Each worker keeps the states it saved,
the specs it read and its rollouts' metric-source reads (and their errors), as the controller does
for its own share, so a tick re-reads only what changed.

A worker runs no side effects: the controller runs every pending action after its tick, whoever
saved it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import zlib
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from modelcanary.domain.state import RolloutState
from modelcanary.ports import Fence, Registry

if TYPE_CHECKING:
    from modelcanary.controller.loop import Controller


def shard_of(rollout_id: str, count: int) -> int:
    """Which of ``count`` shards a rollout is in: the same in every process and every tick."""
    return zlib.crc32(rollout_id.encode()) % count


@dataclass(frozen=True)
class ShardTick:
    """What a worker's share of a tick came to: the states whose phase or step changed, and the
    ids of every rollout it saved (each with its judge's memory)."""

    changed: list[RolloutState]
    saved: list[str]


@dataclass
class Shards:
    """``processes - 1`` worker processes beside the controller, each owning one shard for good."""

    store_url: str
    processes: int
    _workers: list[ProcessPoolExecutor] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError(f"processes must be at least 1, not {self.processes}")
        self._workers = [self._worker(shard) for shard in range(1, self.processes)]

    def _worker(self, shard: int) -> ProcessPoolExecutor:
        spawn = multiprocessing.get_context("spawn")  # never fork a process that may run threads
        return ProcessPoolExecutor(
            1, mp_context=spawn, initializer=_start, initargs=(self.store_url, shard, self.processes)
        )

    def restart(self, shard: int) -> None:
        """A new process for a worker that died or failed (it reads its states and specs afresh)."""
        self._workers[shard - 1].shutdown(wait=False, cancel_futures=True)
        self._workers[shard - 1] = self._worker(shard)

    def mine(self, rollout_id: str) -> bool:
        """Whether a rollout is the controller's own to decide."""
        return shard_of(rollout_id, self.processes) == 0

    def submit(self, now: float, fence: Fence | None) -> list[Future[ShardTick]]:
        """Every worker's share of the tick at ``now``, started; a worker found dead since the last
        tick is started again first."""
        started = []
        for shard, worker in enumerate(self._workers, start=1):
            try:
                started.append(worker.submit(_tick, now, fence))
            except BrokenProcessPool:
                self.restart(shard)
                started.append(self._workers[shard - 1].submit(_tick, now, fence))
        return started

    def close(self) -> None:
        for worker in self._workers:
            worker.shutdown(wait=True, cancel_futures=True)
        self._workers = []


_controller: Controller | None = None
_shard: tuple[int, int] = (0, 1)


def _start(store_url: str, index: int, count: int) -> None:
    global _controller, _shard
    _exit_with_parent()
    from modelcanary.adapters.store.sql import SqlStore
    from modelcanary.controller.loop import Controller

    # a worker moves no alias and sends no webhook (the controller runs every action), so it has no registry
    _controller = Controller(store=SqlStore(store_url), registry=cast(Registry, None))
    _shard = (index, count)


def _exit_with_parent() -> None:
    """End this worker when the controller's process ends, however it ended: a controller killed
    with SIGKILL cannot shut its workers down, and they must not outlive it."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _tick(now: float, fence: Fence | None) -> ShardTick:
    from modelcanary.controller.loop import collector_paused

    controller = _controller
    assert controller is not None, "the worker did not start"
    index, count = _shard
    controller.clock = lambda: now
    controller.fence = fence
    with collector_paused():
        changed, saved = controller.decide_shard(lambda rollout_id: shard_of(rollout_id, count) == index)
    return ShardTick(changed=changed, saved=saved)
