"""``python -m bench.gateway``: the gateway against a bare model server, MLServer and Ray Serve, one run."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

STICKY_HEADER = "x-user-id"  # the rollout's sticky key; here so that the load generators import nothing heavy


def run_header(module: str, argv: list[str] | None, started: float) -> dict[str, Any]:
    """What every record of ``python -m MODULE`` starts with: the command as run, when it started,
    how long it took, and the machine's CPUs."""
    return {
        "command": " ".join([f"python -m {module}", *(argv if argv is not None else sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "cpus": os.cpu_count(),
    }


def write_record(
    results_dir: Path,
    name: str,
    record: dict[str, Any],
    also: Path | None = None,
    *,
    table: str | None = None,
    table_also: Path | None = None,
) -> Path:
    """``record`` as JSON in ``results_dir/NAME-<UTC stamp>.json``, and at ``also`` when given; its
    ``table`` (Markdown) beside it as ``.md``, and at ``table_also``. The first path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamped = results_dir / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    for path in [stamped, *([also] if also else [])]:
        path.write_text(json.dumps(record, indent=2) + "\n")
    if table is not None:
        for path in [stamped.with_suffix(".md"), *([table_also] if table_also else [])]:
            path.write_text(table + "\n")
    return stamped
