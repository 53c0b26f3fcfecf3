"""Run every judge and the oracle over blocks of repetitions, in worker processes.

Repetitions come in blocks of ``BLOCK``; block ``b`` draws from ``SeedSequence([seed, b])`` whatever
the scenario, the number of repetitions or of processes, so a seed fixes every row (a partial last
block draws a whole block and keeps its first repetitions). Within a block every judge and the
oracle see the same streams: common random numbers. Each judge is folded over the looks of each
repetition, its memory starting at ``{}``, until its first look with a FAIL (a rollback). In a
scenario with a shadow lane every look says so (``Look.shadow``), from the first one.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from numpy.typing import NDArray

from bench.judge import oracle
from bench.judge.scenarios import Scenario
from bench.judge.simulate import Streams, simulate
from modelcanary.domain.judgement import Look, Memory, Verdict
from modelcanary.domain.metrics import Analysis
from modelcanary.judges import JUDGES, Judge

BLOCK = 4
ORACLE = "oracle-sprt"
Ints = NDArray[np.int64]


@dataclass
class Outcome:
    """One judge's results on some repetitions of one scenario; per repetition: the look of its first
    rollback (-1 none, -2 the judge raised), candidate requests and bad outcomes served up to it
    (or to the end of the run)."""

    look: Ints
    requests: Ints
    bad: Ints
    calls: int = 0
    seconds: float = 0.0
    messages: list[str] = field(default_factory=list)  # the judge's exceptions, first few
    failing: Counter[str] = field(default_factory=Counter)  # metrics named at the rollbacks

    @classmethod
    def concat(cls, parts: Sequence[Outcome]) -> Outcome:
        messages = [m for p in parts for m in p.messages]
        return cls(
            look=np.concatenate([p.look for p in parts]),
            requests=np.concatenate([p.requests for p in parts]),
            bad=np.concatenate([p.bad for p in parts]),
            calls=sum(p.calls for p in parts),
            seconds=sum(p.seconds for p in parts),
            messages=list(dict.fromkeys(messages))[:3],
            failing=sum((p.failing for p in parts), Counter()),
        )


@dataclass(frozen=True)
class Task:
    scenario: Scenario
    block: int
    keep: int  # repetitions of the block to run
    seed: int
    judges: tuple[str, ...]


def run(
    scenarios: Sequence[Scenario],
    judges: Sequence[str],
    *,
    reps: int,
    seed: int,
    jobs: int,
    progress: Callable[[], None] | None = None,
) -> dict[str, dict[str, Outcome]]:
    """``{scenario: {judge or ORACLE: Outcome}}`` over ``reps`` repetitions each."""
    tasks = [
        Task(scenario=s, block=b, keep=min(BLOCK, reps - b * BLOCK), seed=seed, judges=tuple(judges))
        for s in scenarios
        for b in range(-(-reps // BLOCK))
    ]
    parts: dict[str, list[tuple[int, dict[str, Outcome]]]] = {s.name: [] for s in scenarios}
    for task, result in zip(tasks, _map(tasks, jobs), strict=True):
        parts[task.scenario.name].append((task.block, result))
        if progress:
            progress()
    return {
        name: {key: Outcome.concat([r[key] for _, r in sorted(blocks, key=lambda x: x[0])]) for key in blocks[0][1]}
        for name, blocks in parts.items()
    }


def _map(tasks: list[Task], jobs: int) -> Iterator[dict[str, Outcome]]:
    if jobs <= 1 or len(tasks) <= 1:
        yield from map(run_block, tasks)
        return
    # spawn: the same behaviour on every platform, and no fork of a process holding threads
    with multiprocessing.get_context("spawn").Pool(min(jobs, len(tasks))) as pool:
        yield from pool.imap(run_block, tasks)


def run_block(task: Task) -> dict[str, Outcome]:
    rng = np.random.default_rng(np.random.SeedSequence([task.seed, task.block]))
    streams = _keep(simulate(task.scenario, rng, BLOCK), task.keep)
    analysis = _analysis(task.scenario)
    shadow = task.scenario.shadow is not None
    results = {name: _fold(JUDGES[name], analysis, streams, shadow=shadow) for name in task.judges}
    results[ORACLE] = _oracle(task.scenario, streams, analysis.alpha)
    return results


def _analysis(scenario: Scenario) -> Analysis:
    return _validated(json.dumps(scenario.analysis, sort_keys=True))


@cache
def _validated(analysis: str) -> Analysis:  # validated once per process and analysis
    return Analysis.model_validate(json.loads(analysis))


def _keep(streams: Streams, keep: int) -> Streams:
    # every per-repetition array has two axes or more; look_at and weight have one
    fields = {k: v[:keep] if isinstance(v, np.ndarray) and v.ndim >= 2 else v for k, v in vars(streams).items()}
    return Streams(**fields)


def _fold(judge: Judge, analysis: Analysis, streams: Streams, *, shadow: bool) -> Outcome:
    looks = streams.look_at.shape[0]
    result = _empty(streams.reps)
    for rep in range(streams.reps):
        memory: Memory = {}
        for k in range(looks):
            look = Look(
                at=float(streams.look_at[k]),
                weight=float(streams.weight[k]),
                telemetry=streams.telemetry(rep, k),
                shadow=shadow,
            )
            start = time.perf_counter()
            try:
                judgement, memory = judge(analysis, look, memory)
            except Exception as exc:  # a judge's bug is this row's data, not the end of the run
                result.look[rep] = -2
                result.messages.append(f"{type(exc).__name__}: {exc}")
                break
            finally:
                result.seconds += time.perf_counter() - start
                result.calls += 1
            if judgement.verdict is Verdict.FAIL:
                result.look[rep] = k
                result.failing.update(metric.name for metric in judgement.failing())
                break
    return _exposure(result, streams)


def _oracle(scenario: Scenario, streams: Streams, alpha: float) -> Outcome:
    result = _empty(streams.reps)
    if scenario.is_aa:
        return result  # nothing to detect; the report shows the oracle's row as not applicable
    start = time.perf_counter()
    result.look = oracle.detect(scenario, streams, alpha)
    result.seconds = time.perf_counter() - start
    result.calls = int(np.where(result.look >= 0, result.look + 1, streams.look_at.shape[0]).sum())
    return _exposure(result, streams)


def _empty(reps: int) -> Outcome:
    return Outcome(
        look=np.full(reps, -1, dtype=np.int64), requests=np.zeros(reps, np.int64), bad=np.zeros(reps, np.int64)
    )


def _exposure(result: Outcome, streams: Streams) -> Outcome:
    """Candidate requests and bad outcomes served up to each rollback, or to the end of the run."""
    last = np.where(result.look >= 0, result.look, streams.look_at.shape[0] - 1)
    reps = np.arange(streams.reps)
    result.requests = streams.requests[reps, 1, last]
    result.bad = streams.bad_outcomes()[reps, last]
    return result
