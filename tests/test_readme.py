"""The README tells the truth: its example spec loads, and its two commands are the Makefile's."""

from __future__ import annotations

import re
from pathlib import Path

from modelcanary import load_spec
from modelcanary.domain.traffic import Step

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_example_spec_is_valid() -> None:
    block = re.search(r"```yaml\n(.*?)```", README, re.S)
    assert block is not None
    spec = load_spec(block.group(1), source="README.md")
    steps = [step for step in spec.spec.traffic.steps if isinstance(step, Step)]
    assert steps == spec.spec.traffic.steps  # weight steps only
    assert [step.weight for step in steps] == [5, 50]


def test_readme_has_exactly_the_two_setup_commands() -> None:
    setup = README.split("## Set up", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in setup.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile
