"""What every orchestrator integration shares (``integrations/rollouts.py``): a spec given as a path
or as its text."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcanary.domain.errors import SpecError
from modelcanary.integrations.rollouts import spec_text, start


@pytest.mark.parametrize("name", ["rollout.yaml", "specs/rollout.yml", "rollout-spec"])
def test_a_spec_path_that_does_not_exist_is_no_such_file(tmp_path: Path, name: str) -> None:
    missing = str(tmp_path / name)
    store = tmp_path / "modelcanary.db"
    for given in (missing, Path(missing)):
        with pytest.raises(SpecError) as caught:
            start(given, store=f"sqlite:///{store}", registry=f"sqlite:///{tmp_path / 'mlflow.db'}", actor="test")
        assert caught.value.problems == [("file", f"no such spec file: {missing}")]
    assert not store.exists()  # refused before the store was opened


def test_a_spec_is_read_from_its_file_or_taken_as_its_text(tmp_path: Path) -> None:
    path = tmp_path / "rollout.yaml"
    path.write_text("apiVersion: modelcanary/v1\n")
    assert spec_text(str(path)) == spec_text(path) == ("apiVersion: modelcanary/v1\n", str(path))
    one_line = "{apiVersion: modelcanary/v1, kind: Rollout}"
    assert spec_text(one_line) == (one_line, "<spec>")
    long_line = "{apiVersion: modelcanary/v1, kind: Rollout, metadata: {name: " + "x" * 5000 + "}}"
    assert spec_text(long_line) == (long_line, "<spec>")  # too long a name for a file: no OSError
    with pytest.raises(SpecError) as caught:
        spec_text(str(tmp_path))
    assert caught.value.problems == [("file", f"cannot read the spec file {tmp_path}: Is a directory")]
