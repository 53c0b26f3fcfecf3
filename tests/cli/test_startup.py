"""What every CLI command pays before it starts: the imports of ``modelcanary.cli.main``."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_starts_without_numpy() -> None:
    """numpy is a large share of the CLI's start-up: only the judges' numerics need it, and they
    import it when they run."""
    check = "import modelcanary.cli.main, sys; assert 'numpy' not in sys.modules, 'numpy was imported'"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
