"""What the benchmarks' smoke tests share."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture
def wrk_installed() -> None:
    """The gateway benchmarks' load generator: without it their smoke tests skip and say why,
    unless ``MODELCANARY_REQUIRE_WRK`` is set (``.ci/run`` sets it): then they fail, so CI cannot
    pass by skipping."""
    if shutil.which("wrk") is None:
        if os.environ.get("MODELCANARY_REQUIRE_WRK"):
            pytest.fail("MODELCANARY_REQUIRE_WRK is set but wrk is not on PATH (apt-get install wrk)")
        pytest.skip("wrk is not installed (apt-get install wrk); set MODELCANARY_REQUIRE_WRK to make this fail")
