"""Policy gates in Rego, evaluated in-process by regopy (rego-cpp): no OPA server to run.

A policy is one Rego module in any package, with a ``deny`` rule: a set of messages, each a reason
to refuse. No ``deny`` (undefined) or an empty one allows. It reads the gate's document as
``input`` (see ``engine.gates.gate_input``) and its parameters as ``input.params``. Built-in
policies are the ``.rego`` files beside this module, named by their stem (``data-freshness``).

>>> engine = RegoPolicyEngine()
>>> from modelcanary.ports import Policy
>>> policy = Policy("small", "package t\\nimport rego.v1\\ndeny contains `too big` if input.x > input.params.limit",
...                 {"limit": 3})
>>> engine.evaluate(Gate.START, [policy], {"x": 5}).summary()
'start gate: small: too big'
>>> engine.evaluate(Gate.START, [policy], {"x": 1}).allowed
True
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelcanary.domain.gates import Denial, Gate, GateDecision
from modelcanary.ports import Policy

LIBRARY = Path(__file__).parent / "library"
_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_][\w.]*)", re.MULTILINE)
# rego-cpp's structured error: (error NAME|OFFSET|LENGTH (errormsg N:MESSAGE) ...)
_ERROR = re.compile(r"\(error \d+:[^|]*\|(\d+)\|\d+\s*\(errormsg \d+:([^)]*)\)")


def builtin_policies() -> list[str]:
    return sorted(path.stem for path in LIBRARY.glob("*.rego"))


class RegoPolicyEngine:
    """Implements PolicyEngine. Each policy gets an interpreter of its own, so two policies in the
    same package cannot merge their rules."""

    def source(self, ref: str, *, relative_to: str | None) -> str:
        path = Path(ref)
        if path.suffix == ".rego":
            if not path.is_absolute() and relative_to is not None:
                path = Path(relative_to) / path
            try:
                text = path.read_text()
            except OSError as exc:
                raise ValueError(f"cannot read policy file {path}: {exc.strerror}") from exc
        elif (LIBRARY / f"{ref}.rego").is_file():
            text = (LIBRARY / f"{ref}.rego").read_text()
        else:
            known = ", ".join(builtin_policies())
            raise ValueError(f"{ref!r} is neither a .rego file nor a built-in policy (built-in: {known})")
        problem = self._compile_problem(text)
        if problem:
            raise ValueError(f"policy {ref} does not compile: {problem}")
        return text

    def evaluate(self, gate: Gate, policies: Sequence[Policy], document: dict[str, Any]) -> GateDecision:
        denials: list[Denial] = []
        for policy in policies:
            denials.extend(Denial(policy=policy.name, message=m) for m in self._deny(policy, document))
        return GateDecision(gate=gate, policies=tuple(policy.name for policy in policies), denials=tuple(denials))

    def _deny(self, policy: Policy, document: dict[str, Any]) -> list[str]:
        package = _PACKAGE.search(policy.source)
        if package is None:
            return ["the policy has no package line"]
        ok, answer = _query(policy.source, f"data.{package.group(1)}.deny", {**document, "params": policy.params})
        if not ok:  # fail closed: a policy that cannot answer does not allow
            return [f"the policy failed to evaluate: {answer}"]
        if answer == "undefined":  # no deny rule matched
            return []
        result = json.loads(answer)
        messages = (result[0] if isinstance(result, list) else result).get("expressions", [None])[0]
        if not isinstance(messages, list):
            return [f"deny must be a set of messages, got {json.dumps(messages)}"]
        return sorted(message if isinstance(message, str) else json.dumps(message) for message in messages)

    def _compile_problem(self, text: str) -> str | None:
        package = _PACKAGE.search(text)
        if package is None:
            return "no package line"
        ok, answer = _query(text, f"data.{package.group(1)}", None)
        return None if ok else answer


def _query(source: str, query: str, document: dict[str, Any] | None) -> tuple[bool, str]:
    """Run one query on one module in a fresh interpreter: whether it ran, and its JSON answer
    (or ``undefined``), or the error with its line. Only strings leave: regopy frees an output
    through its interpreter, so an output outliving its interpreter crashes the process."""
    from regopy import RegoError

    rego = _interpreter()
    try:
        rego.add_module("policy", source)
        if document is not None:
            rego.set_input_term(json.dumps(document))
        output = rego.query(query)
        ok, text = output.ok(), str(output)
        del output  # before the interpreter, see above
    except RegoError as exc:
        return False, _rego_error(str(exc), source)
    finally:
        del rego
    return ok, text if ok else _error(text)


def _interpreter() -> Any:
    from regopy import Interpreter, LogLevel

    rego = Interpreter()
    rego.log_level = LogLevel.NONE  # rego-cpp prints its errors to stdout otherwise; they are returned
    return rego


def _rego_error(text: str, source: str) -> str:
    """The first of rego-cpp's errors with its line in the policy.

    >>> error = "(rego-errorseq (error 5:small|30|8 (errormsg 17:Invalid rule head)))"
    >>> _rego_error(error, "package t\\nimport x\\ndeny")
    'Invalid rule head (line 3)'
    """
    match = _ERROR.search(text)
    if match is None:
        return _first_line(text)
    line = source[: int(match.group(1))].count("\n") + 1
    return f"{match.group(2)} (line {line})"


def _error(text: str) -> str:
    """rego-cpp's error report, on one line: ``message at policy:LINE:COL``."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Errors:")]
    where = next((line.removeprefix("-- ") for line in lines if line.startswith("-- ")), "")
    message = lines[0] if lines else text
    return f"{message} at {where}" if where else message


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
