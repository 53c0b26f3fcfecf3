"""Policy gates in Rego, evaluated in-process by regopy (rego-cpp): no OPA server to run.

A policy is one Rego module in any package, with a ``deny`` rule: a set of messages, each a reason
to refuse. No ``deny`` (undefined) or an empty one allows. It reads the gate's document as
``input`` (see ``engine.gates.gate_input``) and its parameters as ``input.params``. Built-in
policies are the ``.rego`` files beside this module, named by their stem (``data-freshness``).

A package is a dotted name whose parts may be quoted (``package rules["fraud-team"]``); its
``deny`` is queried under the whole of it. A NaN or an infinity anywhere in the input reaches a
policy as null: missing data, never a number. A policy that cannot answer (an unknown function,
recursion, a built-in's error, a rule that ran out of rego-cpp's evaluation budget) denies, saying
why; it never raises.

A policy judges its input and nothing else: one that names a built-in reading the outside world
(``opa.runtime``, ``time.now_ns``, randomness, the network; see ``FORBIDDEN``) is refused when
loaded, naming the built-in and its line, and one saved with a rollout before denies.

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

import functools
import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
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

# Built-ins a policy may not name (call, or replace with `with`), and why: a decision must replay
# from the store alone, and a denial message is saved and shown, so nothing secret may reach one.
FORBIDDEN = {
    "opa.runtime": "reads the controller's environment (a secret could end up in a denial message)",
    "time.now_ns": "reads the wall clock; compare with input.now, the decision's clock, so a decision replays",
    "rand.intn": "is random, so a decision would not replay",
    "uuid.rfc4122": "is random, so a decision would not replay",
    "http.send": "reaches the network",
    "net.lookup_ip_addr": "reaches the network",
}
# rego-cpp stops a query after this many statements (VirtualMachine's stmt_limit; regopy 1.5 cannot
# change it) and reports only "<error>", as it does a built-in's error. The budget takes seconds to
# use up (5 s on a 2-core machine), a built-in fails in milliseconds: a failure that took longer than
# this is reported as the budget.
STATEMENT_BUDGET = 10_000_000
_BUDGET_HINT_S = 1.0
_REFUSED = "is refused:"
# Rego's tokens, as far as finding refs needs: a name, a string (its escapes), a raw string, a comment
_TOKEN = re.compile(
    r'(?P<comment>#[^\n]*)|(?P<string>"(?:[^"\\\n]|\\.)*")|(?P<raw>`[^`]*`)|(?P<name>[A-Za-z_]\w*)'
    r"|(?P<dot>\.)|(?P<open>\[)|(?P<close>\])|(?P<space>\s+)|(?P<other>.)",
    re.DOTALL,
)


# compiles a policy (stdin) and queries its deny once, as a rollout's gate would
_TRIAL = """
import sys
from modelcanary.adapters.policy.rego import RegoPolicyEngine, _package
text = sys.stdin.read()
engine = RegoPolicyEngine()
engine._compile_problem(text)
package, _ = _package(text)
if package is not None:
    engine._run(text, package, {"params": {}})
"""


@functools.lru_cache(maxsize=256)
def _crashes(text: str) -> str | None:
    """Why loading ``text`` would take its process down, or None: rego-cpp crashes on some
    policies (a built-in kept in a variable and called, ``f := count; f([1])``, is a segmentation
    fault while it compiles), so a policy is first compiled and queried once in a process of its
    own, and one that kills it is refused rather than loaded into the API's or controller's."""
    trial = subprocess.run(
        [sys.executable, "-c", _TRIAL], input=text, capture_output=True, text=True, timeout=120, check=False
    )
    if trial.returncode >= 0:
        return None
    try:
        signal_name = signal.Signals(-trial.returncode).name
    except ValueError:
        signal_name = f"signal {-trial.returncode}"
    return f"{_REFUSED} it crashes the Rego engine (rego-cpp, {signal_name}) when it is compiled or queried"


def builtin_policies() -> list[str]:
    return sorted(path.stem for path in LIBRARY.glob("*.rego"))


class RegoPolicyEngine:
    """Implements PolicyEngine. Each policy gets an interpreter of its own, so two policies in the
    same package cannot merge their rules."""

    def __init__(self) -> None:
        # source -> (its builder, its compiled bundle), or why it cannot run
        self._bundles: dict[str, tuple[Any, Any] | str] = {}
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
        refusal = _forbidden(text)  # first: compiling would run it (its top-level rules)
        if refusal:
            raise ValueError(f"policy {ref} {refusal}")
        crash = _crashes(text)  # before this process compiles it
        if crash:
            raise ValueError(f"policy {ref} {crash}")
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
        if not ok and answer.startswith(_REFUSED):
            return [f"the policy {answer}"]
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

        # One lock for every policy: rego-cpp does not document that its interpreters may run on
        # several threads at once (regopy's calls release the GIL), so a slow policy delays the
        # others, for at most the evaluation budget (see STATEMENT_BUDGET).
        with self._lock:
            try:
                compiled = self._compiled(source, package)
                if isinstance(compiled, str):
                    return False, compiled if compiled.startswith(_REFUSED) else f"the policy {compiled}"
                runner = _interpreter()
                runner.set_input_term(_json(document))
                started = time.monotonic()
                output = runner.query_bundle(compiled[1])
                took = time.monotonic() - started
                ok, text = output.ok(), str(output)
                del output  # before its interpreter: see _query
                del runner
            except RegoError as exc:
                return False, _rego_error(str(exc), source)
            except ValueError as exc:  # see _unparsed
                return False, _unparsed(exc, source)
        return ok, text if ok else _error(text, took)

    def _compiled(self, source: str, package: str) -> tuple[Any, Any] | str:
        """The policy's builder and bundle, or why it cannot run (``does not compile``, ``is
        refused: ...``), cached per source. The caller holds the lock; rego-cpp's errors raise."""
        cached = self._bundles.get(source) or _forbidden(source)
        if cached is None:
            builder = _interpreter()
            builder.add_module("policy", source)
            bundle = builder.build(f"deny = data.{package}.deny")
            cached = (builder, bundle) if bundle.ok() else "does not compile"  # a bundle is freed through its builder
        self._bundles[source] = cached
        return cached

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


def _forbidden(source: str) -> str | None:
    """Why a policy is refused, if it names a ``FORBIDDEN`` built-in (called, or replaced with
    ``with``), however the name is spelled: rego-cpp takes ``opa . runtime()``, ``opa["runtime"]()``
    and ``time.(newline)now_ns()`` too. Read from the text, since regopy shows no compiled policy's
    calls (saving a bundle, which lists them, crashes the process once numpy is loaded).

    >>> _forbidden('package p\\n# time.now_ns() in a comment\\nx := "opa.runtime()"\\ny := input.time.now_ns')
    >>> _forbidden('package p\\ndeny contains m if {\\n  m := opa [ `runtime` ] ( ).env.TOKEN\\n}')[:40]
    'is refused: it uses opa.runtime (line 3)'
    """
    tokens = [match for match in _TOKEN.finditer(source) if match.lastgroup not in ("space", "comment")]
    index = 0
    while index < len(tokens):
        start = index
        parts: list[str] = []
        # a name after a dot is a field (of a call's answer: f(x).time.now_ns), not a ref's start
        while index < len(tokens) and not (start and tokens[start - 1].lastgroup == "dot"):
            part = _ref_part(tokens, index, first=not parts)
            if part is None:
                break
            parts.append(part[0])
            index = part[1]
            name = ".".join(parts)
            if name in FORBIDDEN:
                line = source[: tokens[start].start()].count("\n") + 1
                return f"{_REFUSED} it uses {name} (line {line}), which {FORBIDDEN[name]}"
        index = max(index, start + 1)
    return None


def _ref_part(tokens: list[re.Match[str]], index: int, *, first: bool) -> tuple[str, int] | None:
    """The next part of a ref at ``tokens[index]``, and where the one after it starts: a name
    (first), ``.name`` or ``["string"]`` (after the first)."""
    kinds = [token.lastgroup for token in tokens[index : index + 3]]
    if first:
        return (tokens[index].group(), index + 1) if kinds[:1] == ["name"] else None
    if kinds[:2] == ["dot", "name"]:
        return tokens[index + 1].group(), index + 2
    if kinds == ["open", "string", "close"]:
        try:
            return str(json.loads(tokens[index + 1].group())), index + 3
        except ValueError:  # an escape JSON lacks: rego-cpp will say what is wrong with it
            return None
    if kinds == ["open", "raw", "close"]:
        return tokens[index + 1].group()[1:-1], index + 3
    return None


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
        started = time.monotonic()
        output = rego.query(query)
        took = time.monotonic() - started
        ok, text = output.ok(), str(output)
        del output  # before the interpreter, see above
    except RegoError as exc:
        return False, _rego_error(str(exc), source)
    except ValueError as exc:  # see _unparsed
        return False, _unparsed(exc, source)
    finally:
        del rego
    return ok, text if ok else _error(text, took)


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


def _error(text: str, took: float = 0.0) -> str:
    """rego-cpp's error report, on one line: ``message at policy:LINE:COL``. A bare ``<error>``
    is all regopy 1.5 reports of a built-in's error and of a query stopped at the evaluation
    budget; the time it took tells them apart (see ``STATEMENT_BUDGET``).

    >>> _error("<error>", took=0.002)
    'a run-time error in the policy (a built-in function failed on its input)'
    >>> _error("<error>", took=5.3)  # doctest: +NORMALIZE_WHITESPACE
    'it took too long: rego-cpp stopped it after 5.3 s, at its evaluation budget of 10,000,000
    statements; make it do less work'
    """
    if text.strip() == "<error>":
        if took >= _BUDGET_HINT_S:
            return (
                f"it took too long: rego-cpp stopped it after {took:.1f} s, at its evaluation budget of"
                f" {STATEMENT_BUDGET:,} statements; make it do less work"
            )
        return "a run-time error in the policy (a built-in function failed on its input)"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Errors:")]
    where = next((line.removeprefix("-- ") for line in lines if line.startswith("-- ")), "")
    message = lines[0] if lines else text
    return f"{message} at {where}" if where else message


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
