"""A real Prometheus server for the tests: Debian's ``prometheus`` binary, started on loopback with a
temp config and storage, scraping the targets a test names every ``SCRAPE``. Shared by
tests/adapters/test_prometheus_source.py (Prometheus as a metric source) and
tests/gateway/test_metrics.py (the Grafana dashboard's queries, evaluated on a live gateway's series).

Without the binary the tests that use it skip, unless ``MODELCANARY_REQUIRE_PROMETHEUS`` is set (CI
sets it): then they fail."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

SCRAPE = "200ms"
WAIT_S = 60.0  # for Prometheus to start or to scrape what a test drove; never reached when it works


def prometheus_binary() -> str:
    """The ``prometheus`` on PATH; skips the test without one, or fails it if CI requires one."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("MODELCANARY_REQUIRE_PROMETHEUS"):
            pytest.fail("MODELCANARY_REQUIRE_PROMETHEUS is set but no prometheus binary is on PATH")
        pytest.skip("no prometheus binary on PATH (apt-get install prometheus); set MODELCANARY_REQUIRE_PROMETHEUS")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api(url: str, path: str, **params: str | list[str]) -> dict[str, Any]:
    """GET ``path`` of Prometheus' HTTP API: its JSON answer, a refusal's too (Prometheus answers a bad
    query with 400 or 422 and a JSON body naming the error)."""
    address = f"{url}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    try:
        with urllib.request.urlopen(address, timeout=10) as response:
            return json.load(response)  # type: ignore[no-any-return]
    except urllib.error.HTTPError as error:
        with error:
            return json.load(error)  # type: ignore[no-any-return]


def value(url: str, query: str) -> float:
    """The value of an instant query answering one series, 0 when it answers none."""
    answer = api(url, "/api/v1/query", query=query)
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def wait_for_value(url: str, query: str, expected: float, what: str) -> None:
    """Poll ``query`` until it answers ``expected``; fail naming ``what`` after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while value(url, query) != expected:
        assert time.monotonic() < deadline, f"Prometheus never {what}: {query} is {value(url, query)}, not {expected}"
        time.sleep(0.05)


@contextmanager
def prometheus_server(root: Path, targets: Mapping[str, str]) -> Iterator[str]:
    """Prometheus scraping each job's ``host:port`` in ``targets`` (its /metrics), with its config,
    storage and log under ``root``: its base URL once it has scraped every target once. Stopped on exit."""
    binary = prometheus_binary()
    jobs = "".join(
        f"- job_name: {job}\n  static_configs: [{{targets: ['{target}']}}]\n" for job, target in targets.items()
    )
    (root / "prometheus.yml").write_text(
        f"global: {{scrape_interval: {SCRAPE}, scrape_timeout: {SCRAPE}}}\nscrape_configs:\n{jobs}"
    )
    port = free_port()
    log = root / "prometheus.log"
    with log.open("w") as stderr:
        server = subprocess.Popen(
            [
                binary,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + WAIT_S
        while True:
            assert server.poll() is None, log.read_text()[-2000:]
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "Prometheus did not get ready"
                time.sleep(0.1)
        for job in targets:  # its first scrape of each target
            wait_for_value(url, f'up{{job="{job}"}}', 1, f"scraped the {job} target")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
