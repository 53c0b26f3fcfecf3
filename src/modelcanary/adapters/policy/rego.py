"""Policy gates in Rego, evaluated in-process by regopy (rego-cpp): no OPA server to run.

A policy is one Rego module in any package, with a ``deny`` rule: a set of messages, each a reason
to refuse. No ``deny`` (undefined) or an empty one allows. It reads the gate's document as
``input`` (see ``engine.gates.gate_input``) and its parameters as ``input.params``. Built-in
policies are the ``.rego`` files beside this module, named by their stem (``data-freshness``).

A package is a dotted name whose parts may be quoted (``package rules["fraud-team"]``); its
``deny`` is queried under the whole of it. A NaN or an infinity anywhere in the input reaches a
policy as null: missing data, never a number. A policy that cannot answer (an unknown function,
recursion, a built-in's error) denies, saying why; it never raises.

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
import math
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelcanary.domain.gates import Denial, Gate, GateDecision
from modelcanary.ports import Policy

LIBRARY = Path(__file__).parent / "library"
_PACKAGE = re.compile(r"^[ \t]*package\b[ \t]*(.*?)[ \t]*(?:#.*)?$", re.MULTILINE)
# a package's ref: a name, then .names and ["quoted"] or [`raw`] parts (what Rego allows there)
_REF = re.compile(r'[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[[ \t]*(?:"(?:[^"\\]|\\.)*"|`[^`]*`)[ \t]*\])*')
# rego-cpp's structured error: (error NAME|OFFSET|LENGTH (errormsg N:MESSAGE) ...)
_ERROR = re.compile(r"\(error \d+:[^|]*\|(\d+)\|\d+\s*\(errormsg \d+:([^)]*)\)")
# ... or, for some errors found only when a query runs, one with no place: (error (errormsg N:MESSAGE) ...)
_BARE_ERROR = re.compile(r"\(errormsg \d+:([^)\n]*)\)")


def builtin_policies() -> list[str]:
    return sorted(path.stem for path in LIBRARY.glob("*.rego"))


class RegoPolicyEngine:
    """Implements PolicyEngine. Each policy gets an interpreter of its own, so two policies in the
    same package cannot merge their rules."""

    def __init__(self) -> None:
        self._bundles: dict[str, tuple[Any, Any]] = {}  # source -> (its builder, its compiled bundle)
        self._lock = threading.Lock()

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
        package, problem = _package(policy.source)
        if package is None:
            return [f"the policy cannot be queried: {problem}"]
        ok, answer = self._run(policy.source, package, {**document, "params": policy.params})
        if not ok:  # fail closed: a policy that cannot answer does not allow
            return [f"the policy failed to evaluate: {answer}"]
        if answer == "undefined":  # no deny rule at all
            return []
        result = json.loads(answer)
        messages = (result[0] if isinstance(result, list) else result).get("bindings", {}).get("deny")
        if not isinstance(messages, list):
            return [f"deny must be a set of messages, got {json.dumps(messages)}"]
        return sorted(message if isinstance(message, str) else json.dumps(message) for message in messages)

    def _run(self, source: str, package: str, document: dict[str, Any]) -> tuple[bool, str]:
        """Query a policy's ``deny`` through a bundle compiled once per source: compiling takes
        ~10x as long as evaluating (20 ms against 2 ms), and a held rollout asks every tick."""
        from regopy import RegoError

        with self._lock:
            try:
                if source not in self._bundles:
                    builder = _interpreter()
                    builder.add_module("policy", source)
                    bundle = builder.build(f"deny = data.{package}.deny")
                    if not bundle.ok():
                        return False, "the policy does not compile"
                    self._bundles[source] = (builder, bundle)  # the bundle stays with its builder
                _, bundle = self._bundles[source]
                runner = _interpreter()
                runner.set_input_term(_json(document))
                output = runner.query_bundle(bundle)
                ok, text = output.ok(), str(output)
                del output  # before its interpreter: see _query
                del runner
            except RegoError as exc:
                return False, _rego_error(str(exc), source)
            except ValueError as exc:  # see _unparsed
                return False, _unparsed(exc, source)
        return ok, text if ok else _error(text)

    def _compile_problem(self, text: str) -> str | None:
        package, problem = _package(text)
        if package is None:
            return problem
        ok, answer = _query(text, f"data.{package}", None)
        return None if ok else answer


def _package(source: str) -> tuple[str | None, str]:
    """The policy's package ref, as a query names it, or why there is none.

    >>> _package('package rules["fraud-team"] # ours\\nimport rego.v1')
    ('rules["fraud-team"]', '')
    >>> _package("import rego.v1\\npackage rules[x]")
    (None, 'package rules[x] (line 2): write the package as a dotted name, each part a name or a quoted string')
    """
    match = _PACKAGE.search(source)
    if match is None:
        return None, "no package line"
    ref = match.group(1)
    if _REF.fullmatch(ref) is None:
        line = source[: match.start()].count("\n") + 1
        message = "write the package as a dotted name, each part a name or a quoted string"
        return None, f"package {ref} (line {line}): {message}"
    return ref, ""


def _json(document: dict[str, Any]) -> str:
    """The input as JSON, every NaN and infinity made null (see ``_finite``)."""
    return json.dumps(_finite(document), allow_nan=False)


def _finite(value: Any) -> Any:
    """``value`` with each NaN and infinity in it, however deep, made null. rego-cpp reads them as
    error terms that compare unlike any number (``auc == null`` is false, ``auc > 0.9`` true) and
    that its answer cannot carry; as null they are what they are, missing data, which a policy
    checks with ``== null`` or ``is_number`` and denies.

    >>> _finite({"metrics": {"auc": float("nan")}, "xs": [1.5, float("-inf")]})
    {'metrics': {'auc': None}, 'xs': [1.5, None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _query(source: str, query: str, document: dict[str, Any] | None) -> tuple[bool, str]:
    """Run one query on one module in a fresh interpreter: whether it ran, and its JSON answer
    (or ``undefined``), or the error with its line. Only strings leave: regopy frees an output
    through its interpreter, so an output outliving its interpreter crashes the process."""
    from regopy import RegoError

    rego = _interpreter()
    try:
        rego.add_module("policy", source)
        if document is not None:
            rego.set_input_term(_json(document))
        output = rego.query(query)
        ok, text = output.ok(), str(output)
        del output  # before the interpreter, see above
    except RegoError as exc:
        return False, _rego_error(str(exc), source)
    except ValueError as exc:  # see _unparsed
        return False, _unparsed(exc, source)
    finally:
        del rego
    return ok, text if ok else _error(text)


def _interpreter() -> Any:
    from regopy import Interpreter, LogLevel

    rego = Interpreter()
    rego.log_level = LogLevel.NONE  # rego-cpp prints its errors to stdout otherwise; they are returned
    rego.strict_built_in_errors = (
        True  # a built-in's error fails the policy (which then denies), as in OPA's strict mode
    )
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


def _unparsed(exc: ValueError, source: str) -> str:
    """rego-cpp's error where regopy expected an answer. Some errors (an unknown function, a
    recursive rule) come out of a query as an answer whose text is rego-cpp's error report, and
    regopy, parsing it as JSON, raises ``JSONDecodeError``; that error holds the text.

    >>> text = "(error\\n  (errormsg 32:Function not found: undefined_fn)\\n  (errorast))"
    >>> _unparsed(json.JSONDecodeError("Expecting value", text, 0), "package t")
    'Function not found: undefined_fn'
    """
    text = exc.doc if isinstance(exc, json.JSONDecodeError) else str(exc)
    if _ERROR.search(text) is None and (bare := _BARE_ERROR.search(text)) is not None:
        return bare.group(1).strip()
    return _rego_error(text, source)


def _error(text: str) -> str:
    """rego-cpp's error report, on one line: ``message at policy:LINE:COL``."""
    if text.strip() == "<error>":  # what regopy 1.5 reports of a run-time error, with no more detail
        return "a run-time error in the policy (a built-in function failed on its input)"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Errors:")]
    where = next((line.removeprefix("-- ") for line in lines if line.startswith("-- ")), "")
    message = lines[0] if lines else text
    return f"{message} at {where}" if where else message


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
