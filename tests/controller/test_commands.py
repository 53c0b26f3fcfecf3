"""The ``controller``, ``serve`` and ``watch`` commands' loops through click's runner: a wait that is
not positive, or a lease no longer than a tick, is refused before anything starts (exit 2, naming
the option), and the controller's loop goes on past a tick that raised what is not modelcanary's."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelcanary.cli.main import cli
from modelcanary.controller.loop import Controller
from modelcanary.domain.state import RolloutState


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["controller", "--tick", "0"], "--tick"),
        (["controller", "--tick", "-1"], "--tick"),
        (["controller", "--lease-ttl", "0"], "--lease-ttl"),
        (["controller", "--lease-ttl", "1", "--tick", "1"], "--lease-ttl"),
        (["serve", "--tick", "0"], "--tick"),
        (["watch", "--template", "{template}", "--interval", "-1"], "--interval"),
        (["watch", "--template", "{template}", "--interval", "0"], "--interval"),
    ],
)
def test_a_wait_that_is_not_positive_is_refused_naming_its_option(tmp_path: Path, args: list[str], option: str) -> None:
    template = tmp_path / "template.yaml"
    template.write_text("not read: the options are checked first")
    argv = [arg.format(template=template) for arg in args]
    result = CliRunner().invoke(cli, [*argv, "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.stderr
    assert not (tmp_path / "work").exists()  # refused before anything was opened


def test_the_controller_command_goes_on_after_a_tick_that_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ticks: list[int] = []

    def tick(self: Controller) -> list[RolloutState]:
        ticks.append(len(ticks))
        if len(ticks) == 1:
            raise AttributeError("'list' object has no attribute 'get'")
        os.kill(os.getpid(), signal.SIGTERM)  # the command's own handler: a clean stop
        return []

    monkeypatch.setattr(Controller, "decide", tick)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    args = ["controller", "--tick", "0.01", "--workdir", str(tmp_path), "--registry", f"sqlite:///{tmp_path}/r.db"]
    try:
        with caplog.at_level(logging.ERROR, logger="modelcanary.controller"):
            result = CliRunner().invoke(cli, args)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert result.exit_code == 0, result.output
    assert ticks == [0, 1]
    (logged,) = caplog.records
    assert logged.exc_info is not None and "AttributeError" in caplog.text
