"""``python -m bench.judge``: every registered judge and the oracle SPRT on the scenarios of a YAML file.

    python -m bench.judge --scenarios bench/judge/scenarios.yaml --reps 2000 --jobs 2 \\
        --json bench/results/judge-latest.json --markdown bench/results/judge-latest.md --plots docs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bench.judge.report import markdown, print_table, write_json, write_results
from bench.judge.run import BLOCK, run
from bench.judge.scenarios import load_scenarios
from bench.judge.summary import rows as make_rows
from modelcanary.judges import JUDGES

HERE = Path(__file__).resolve().parent
DEFAULT_SCENARIOS = HERE / "scenarios.yaml"
DEFAULT_RESULTS = HERE.parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.judge", description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=Path, default=DEFAULT_SCENARIOS, help="scenario YAML file")
    parser.add_argument("--reps", type=int, default=200, help="repetitions per scenario (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="fixes every row, whatever --jobs (default 1)")
    parser.add_argument("--json", type=Path, help="also write the rows here, as a JSON list")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--judges", help="comma-separated judges (default: every registered one)")
    parser.add_argument("--only", help="comma-separated scenario names to run")
    parser.add_argument("--markdown", type=Path, help="also write the rows here, as a Markdown table")
    parser.add_argument("--plots", type=Path, help="write PNG figures into this directory")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, help="where the run's record goes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.jobs < 1:
        parser.error("--reps and --jobs must be at least 1")
    known = sorted(JUDGES)
    args.judges = known if args.judges is None else [j.strip() for j in args.judges.split(",") if j.strip()]
    unknown = [j for j in args.judges if j not in JUDGES]
    if unknown:
        parser.error(f"unknown judge(s) {', '.join(unknown)}; registered: {', '.join(known)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    scenarios = load_scenarios(args.scenarios)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        missing = sorted(set(wanted) - {s.name for s in scenarios})
        if missing:
            raise SystemExit(f"no scenario named {', '.join(missing)} in {args.scenarios}")
        scenarios = [s for s in scenarios if s.name in wanted]
    started = time.perf_counter()
    tasks = len(scenarios) * -(-args.reps // BLOCK)
    console = Console(stderr=True)
    with Progress(
        TextColumn("simulating and judging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console, disable=args.quiet or not console.is_terminal, transient=True,
    ) as progress:  # fmt: skip
        bar = progress.add_task("blocks", total=tasks)
        outcomes = run(
            scenarios,
            args.judges,
            reps=args.reps,
            seed=args.seed,
            jobs=args.jobs,
            progress=lambda: progress.advance(bar),
        )
    elapsed = time.perf_counter() - started
    rows = make_rows(scenarios, outcomes)
    title = f"judge benchmark: {args.reps} repetitions, seed {args.seed}, {elapsed:.0f} s on {args.jobs} process(es)"
    print_table(rows, title=title)
    if args.json:
        write_json(args.json, rows)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(rows))
    record = write_results(
        args.results_dir,
        rows,
        argv=[sys.executable, "-m", "bench.judge", *(sys.argv[1:] if argv is None else argv)],
        seed=args.seed,
        extra={
            "reps": args.reps,
            "jobs": args.jobs,
            "judges": args.judges,
            "scenarios_file": str(args.scenarios),
            "scenarios": [s.name for s in scenarios],
            "elapsed_s": elapsed,
        },
    )
    also = [str(path) for path in (args.json, args.markdown) if path]
    Console().print(f"rows written to {record}" + "".join(f" and {path}" for path in also))
    if args.plots:
        from bench.judge.plots import plot

        alpha = min(s.analysis_model().alpha for s in scenarios)
        for path in plot(rows, args.plots, alpha=alpha):
            Console().print(f"figure written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
